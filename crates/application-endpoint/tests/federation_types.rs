//! Federation rules of the endpoints in the types: what an application may only do for a
//! user of its home deployment (act as them, publish their presence, receive their calls)
//! does not compile for an `Address<Federated>` (compiler messages checked in under
//! `tests/ui`), the on-premises counterparts do, and a URI that arrives at run time is
//! refused with `EndpointError::FederationRestricted` before anything is sent.

use std::sync::Arc;

use application_endpoint::{Credentials, EndpointError, UserEndpointSettings};
use collaboration_platform::{StaticDirectory, Topology};

#[test]
fn federation_rules_are_type_errors() {
    let t = trybuild::TestCases::new();
    // 1. A UserEndpoint acts as a home user: its settings take no federated address.
    t.compile_fail("tests/ui/user_endpoint_settings_federated.rs");
    // 2. Publishing presence for a federated user: neither through a UserEndpoint ...
    t.compile_fail("tests/ui/presence_for_federated_user.rs");
    // 2., 3. ... nor as an ApplicationEndpoint owning the federated address (whose presence
    // it would publish and whose calls it would receive).
    t.compile_fail("tests/ui/application_endpoint_for_federated.rs");
    // 3. Routing incoming requests on behalf of a federated user at the platform.
    t.compile_fail("tests/ui/register_endpoint_federated.rs");
    // 4. No conversion from federated to on-premises other than the escape hatch.
    t.compile_fail("tests/ui/federated_into_on_premises.rs");
    // The on-premises counterparts compile.
    t.pass("tests/ui/on_premises_pass.rs");
}

fn credentials() -> Credentials {
    Credentials::new("u", "p")
}

#[test]
fn a_user_endpoint_for_a_federated_uri_is_refused_at_run_time() {
    let topology = Topology::new(["contoso.test"]);
    let e = UserEndpointSettings::from_uri(&topology, "sip:bob@fabrikam.test", credentials())
        .unwrap_err();
    match &e {
        EndpointError::FederationRestricted { operation, uri } => {
            assert_eq!(*operation, "UserEndpoint");
            assert_eq!(uri, "sip:bob@fabrikam.test");
        }
        other => panic!("expected FederationRestricted, got {other:?}"),
    }
    assert!(e.to_string().contains("sip:bob@fabrikam.test"), "{e}");

    // A user of the home domain is fine.
    let alice =
        UserEndpointSettings::from_uri(&topology, "sip:alice@contoso.test", credentials()).unwrap();
    assert_eq!(alice.owner().uri(), "sip:alice@contoso.test");
    assert_eq!(alice.owner().homing(), "on-premises");
}

/// A `tel:` URI is on-premises but has no registrar: `from_uri` refuses it as not registrable.
#[test]
fn a_user_endpoint_for_a_tel_uri_is_refused_as_not_registrable() {
    let topology = Topology::new(["contoso.test"]);
    let e =
        UserEndpointSettings::from_uri(&topology, "tel:+14255550100", credentials()).unwrap_err();
    match &e {
        EndpointError::NotRegistrable { uri } => assert_eq!(uri, "tel:+14255550100"),
        other => panic!("expected NotRegistrable, got {other:?}"),
    }
    assert!(e.to_string().contains("cannot be registered"), "{e}");

    // The same number as a SIP URI of a home domain is fine.
    let number = "sip:+14255550100@contoso.test;user=phone";
    let s = UserEndpointSettings::from_uri(&topology, number, credentials()).unwrap();
    assert_eq!(s.owner().uri(), number);
}

#[test]
fn a_user_endpoint_for_a_cloud_homed_user_of_the_home_domain_is_refused(
) -> Result<(), Box<dyn std::error::Error>> {
    // Hybrid: one SIP domain, carol homed in the cloud (the directory says so), alice here.
    let directory = StaticDirectory::new().with_user("sip:carol@contoso.test")?;
    let topology = Topology::new(["contoso.test"]).with_directory(Arc::new(directory));
    let e = UserEndpointSettings::from_uri(&topology, "sip:carol@contoso.test", credentials())
        .unwrap_err();
    assert!(
        matches!(
            &e,
            EndpointError::FederationRestricted { operation: "UserEndpoint", uri }
                if uri == "sip:carol@contoso.test"
        ),
        "{e:?}"
    );
    let alice = UserEndpointSettings::from_uri(&topology, "sip:alice@contoso.test", credentials())?;
    assert_eq!(alice.owner().uri(), "sip:alice@contoso.test");
    Ok(())
}

#[test]
fn blocked_partners_are_a_topology_error_not_a_federation_restriction() {
    let topology = Topology::new(["contoso.test"]).block("fabrikam.test");
    let e = UserEndpointSettings::from_uri(&topology, "sip:bob@fabrikam.test", credentials())
        .unwrap_err();
    assert!(matches!(e, EndpointError::Topology(_)), "{e:?}");
}
