// Rule 4: a federated address does not become an on-premises one, neither by assignment
// nor by conversion. Only the greppable escape hatch Address::assume_on_premises makes one
// without a Topology.
use collaboration_platform::{Address, Federated, OnPremises};

fn main() {
    let bob: Address<Federated> = Address::assume_federated("sip:bob@fabrikam.test").unwrap();
    let _assigned: Address<OnPremises> = bob.clone();
    let _converted = Address::<OnPremises>::from(bob);
}
