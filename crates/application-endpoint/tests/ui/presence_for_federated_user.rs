// Rule 2: publishing presence for a federated user. The only publication there is, a
// LocalOwnerPresence, belongs to an endpoint acting as its owner, and a UserEndpoint cannot
// be made for a federated user. Never called: no platform needs to run.
use application_endpoint::pidf::Availability;
use application_endpoint::{Credentials, UserEndpoint, UserEndpointSettings};
use collaboration_platform::{Address, CollaborationPlatform, Federated};

#[allow(dead_code)]
async fn publish_for(platform: &CollaborationPlatform, bob: Address<Federated>) {
    let endpoint = UserEndpoint::new(
        platform,
        UserEndpointSettings::new(bob, Credentials::new("u", "p")),
    );
    let _ = endpoint
        .local_owner_presence()
        .publish_availability(Availability::Online, None)
        .await;
}

fn main() {}
