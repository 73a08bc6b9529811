// Rule 3: routing incoming requests on behalf of a federated user. The platform routes only
// for on-premises owners. Never called: no platform needs to run.
use collaboration_platform::{Address, CollaborationPlatform, Federated};

#[allow(dead_code)]
async fn receive_for(platform: &CollaborationPlatform, bob: Address<Federated>) {
    let _ = platform.register_endpoint(bob, None, false).await;
}

fn main() {}
