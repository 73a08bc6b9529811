// A federated address cannot be passed where an on-premises one is required.
use collaboration_platform::{Address, Federated, OnPremises};

fn needs_home_user(_a: Address<OnPremises>) {}

fn main() {
    let bob: Address<Federated> = Address::assume_federated("sip:bob@fabrikam.test").unwrap();
    needs_home_user(bob);
}
