// The counterparts that compile: a URI and a display name toward a home user, a URI alone
// toward a federated party.
use application_endpoint::ApplicationEndpoint;
use collaboration_platform::{Address, Federated, OnPremises};
use conversation::Conversation;

fn home(bot: &ApplicationEndpoint, alice: Address<OnPremises>) {
    let conv = Conversation::new(bot, alice);
    let _ = conv.impersonate("sip:ceo@contoso.test", "The CEO");
}

fn federated(bot: &ApplicationEndpoint, bob: Address<Federated>) {
    let conv = Conversation::new(bot, bob);
    let _ = conv.impersonate("sip:ceo@contoso.test");
}

fn main() {}
