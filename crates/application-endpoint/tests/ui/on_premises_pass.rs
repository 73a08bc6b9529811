// The on-premises counterparts compile: a UserEndpoint and an ApplicationEndpoint for home
// addresses, presence published by them, the platform routing for a home owner, and a URI
// classified by the Topology. The async functions are never called: no platform runs.
use application_endpoint::pidf::Availability;
use application_endpoint::{
    ApplicationEndpoint, ApplicationEndpointSettings, Credentials, Endpoint, Modality,
    UserEndpoint, UserEndpointSettings,
};
use collaboration_platform::{Address, CollaborationPlatform, Homed, OnPremises, Topology};

#[allow(dead_code)]
async fn act_for(platform: &CollaborationPlatform, alice: Address<OnPremises>) {
    let user = UserEndpoint::new(
        platform,
        UserEndpointSettings::new(alice, Credentials::new("alice", "alice-secret")),
    );
    let _ = user
        .local_owner_presence()
        .publish_availability(Availability::Online, None)
        .await;

    let bot = Address::assume_on_premises("sip:bot@contoso.test").unwrap();
    let app = ApplicationEndpoint::new(platform, ApplicationEndpointSettings::new(bot.clone()));
    let _calls = app.core().incoming(Modality::InstantMessaging);
    let _ = app
        .local_owner_presence()
        .publish_availability(Availability::Busy, Some("in a meeting"))
        .await;

    let _ = platform.register_endpoint(bot, None, false).await;
}

fn main() {
    let topology = Topology::new(["contoso.test"]);
    match topology.classify("sip:alice@contoso.test").unwrap() {
        Homed::OnPremises(alice) => {
            let settings = UserEndpointSettings::new(alice, Credentials::new("alice", "x"));
            assert_eq!(settings.owner().uri(), "sip:alice@contoso.test");
        }
        Homed::Federated(_) => unreachable!("alice is homed at contoso"),
    }
}
