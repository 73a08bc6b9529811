// An Address cannot be made by hand: its fields are private, so only Topology::classify and
// the assume_* escape hatches make one.
use collaboration_platform::{Address, OnPremises};

fn main() {
    let _a: Address<OnPremises> = Address {
        uri: "sip:alice@contoso.test".to_string(),
        user: None,
        domain: "contoso.test".to_string(),
        _homing: std::marker::PhantomData,
    };
}
