//! Compile-time proofs of the federation types: what must not compile does not (compiler
//! messages checked in under tests/ui), and the on-premises counterpart does.

#[test]
fn federation_rules_are_type_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/address_struct_literal.rs");
    t.compile_fail("tests/ui/homing_is_sealed.rs");
    t.compile_fail("tests/ui/federated_is_not_on_premises.rs");
    t.pass("tests/ui/classify_pass.rs");
}
