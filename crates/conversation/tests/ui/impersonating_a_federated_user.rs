// An application never acts as a federated user: impersonation takes a home user's
// address, and a federated party's does not compile.
use application_endpoint::ApplicationEndpoint;
use collaboration_platform::{Address, Federated, OnPremises};
use conversation::Conversation;

fn impersonate(bot: &ApplicationEndpoint, alice: Address<OnPremises>, bob: &Address<Federated>) {
    let conv = Conversation::new(bot, alice);
    let _ = conv.impersonate(bob, "Bob of Fabrikam");
}

fn main() {}
