//! Compile-time proof of the impersonation rule: toward a federated party a display name
//! cannot be passed (compiler message checked in under tests/ui); the counterparts compile.

#[test]
fn impersonation_toward_federated_parties_takes_no_display_name() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/federated_impersonation_with_display_name.rs");
    t.pass("tests/ui/impersonation_pass.rs");
}
