// The on-premises counterpart compiles: classification hands out typed addresses.
use collaboration_platform::{Address, Homed, OnPremises, Topology};

fn needs_home_user(_a: Address<OnPremises>) {}

fn main() {
    let topology = Topology::new(["contoso.test"]);
    match topology.classify("sip:alice@contoso.test").unwrap() {
        Homed::OnPremises(alice) => needs_home_user(alice),
        Homed::Federated(_) => unreachable!(),
    }
}
