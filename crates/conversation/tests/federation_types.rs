//! Compile-time proof of the impersonation rules: toward a federated party a display name
//! cannot be passed, and a federated party's address cannot be impersonated (compiler
//! messages checked in under tests/ui); the counterparts compile.

#[test]
fn impersonation_takes_a_home_user_and_no_display_name_toward_federated_parties() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/federated_impersonation_with_display_name.rs");
    t.compile_fail("tests/ui/impersonating_a_federated_user.rs");
    t.pass("tests/ui/impersonation_pass.rs");
}
