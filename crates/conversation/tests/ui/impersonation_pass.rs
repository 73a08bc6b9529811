// The counterparts that compile: a home user's address and a display name toward a home
// user, a home user's address alone toward a federated party.
use application_endpoint::ApplicationEndpoint;
use collaboration_platform::{Address, Federated, OnPremises};
use conversation::Conversation;

fn home(bot: &ApplicationEndpoint, alice: Address<OnPremises>, ceo: &Address<OnPremises>) {
    let conv = Conversation::new(bot, alice);
    let _ = conv.impersonate(ceo, "The CEO");
}

fn federated(bot: &ApplicationEndpoint, bob: Address<Federated>, ceo: &Address<OnPremises>) {
    let conv = Conversation::new(bot, bob);
    let _ = conv.impersonate(ceo);
}

fn main() {}
