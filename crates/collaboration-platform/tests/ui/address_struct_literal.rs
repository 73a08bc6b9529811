// An Address cannot be made by hand: its fields are private, so only Topology::classify and
// the assume_* escape hatches make one.
use collaboration_platform::{Address, OnPremises};

fn main() {
    let _a: Address<OnPremises> = Address {
        buf: "sip:alice@contoso.testalicecontoso.test".into(),
        user_at: 22,
        domain_at: 27,
        has_user: true,
        _homing: std::marker::PhantomData,
    };
}
