// Rule 1: a UserEndpoint acts as a user of the home deployment. Its settings take an
// Address<OnPremises>; a federated user's address does not fit.
use application_endpoint::{Credentials, UserEndpointSettings};
use collaboration_platform::{Address, Federated};

fn main() {
    let bob: Address<Federated> = Address::assume_federated("sip:bob@fabrikam.test").unwrap();
    let _settings = UserEndpointSettings::new(bob, Credentials::new("u", "p"));
}
