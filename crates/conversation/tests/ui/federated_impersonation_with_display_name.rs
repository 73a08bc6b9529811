// Toward a federated party an impersonated identity is a URI only: the display name does
// not cross federation, so the API takes none.
use application_endpoint::ApplicationEndpoint;
use collaboration_platform::{Address, Federated, OnPremises};
use conversation::Conversation;

fn impersonate(bot: &ApplicationEndpoint, bob: Address<Federated>, ceo: &Address<OnPremises>) {
    let conv = Conversation::new(bot, bob);
    let _ = conv.impersonate(ceo, "The CEO");
}

fn main() {}
