// Rules 2 and 3: an ApplicationEndpoint owning a federated address would publish that
// user's presence and receive that user's calls. Its settings take an Address<OnPremises>.
// Never called: no platform needs to run.
use application_endpoint::pidf::Availability;
use application_endpoint::{ApplicationEndpoint, ApplicationEndpointSettings, Endpoint, Modality};
use collaboration_platform::{Address, CollaborationPlatform, Federated};

#[allow(dead_code)]
async fn act_as(platform: &CollaborationPlatform, bob: Address<Federated>) {
    let endpoint = ApplicationEndpoint::new(platform, ApplicationEndpointSettings::new(bob));
    let _calls = endpoint.core().incoming(Modality::Audio);
    let _ = endpoint
        .local_owner_presence()
        .publish_availability(Availability::Online, None)
        .await;
}

fn main() {}
