//! What crosses federation on the wire, between two platforms on loopback over mutual TLS
//! (`loopback::pair`): contoso's application speaks for a home user toward fabrikam.

use std::time::Duration;

use collaboration_platform::loopback::{pair, LoopbackPki};
use collaboration_platform::{
    Address, CollaborationPlatform, IncomingRequest, OutgoingRequest, RequestError, Topology,
    TopologyError,
};
use sip_core::{HeaderName, Method};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

/// contoso's application (home domain contoso.test) and fabrikam's (fabrikam.test).
async fn contoso_and_fabrikam() -> (CollaborationPlatform, CollaborationPlatform) {
    let pki = LoopbackPki::new().expect("CA");
    pair(&pki, "app.contoso.test", "app.fabrikam.test", |me, s| {
        let home = if me == "app.contoso.test" {
            "contoso.test"
        } else {
            "fabrikam.test"
        };
        s.topology(Topology::new([home]))
    })
    .await
    .expect("platforms")
}

async fn next(rx: &mut mpsc::Receiver<IncomingRequest>) -> IncomingRequest {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a request within the wait")
        .expect("endpoint open")
}

async fn bob_at_fabrikam(p: &CollaborationPlatform) -> mpsc::Receiver<IncomingRequest> {
    let owner = Address::assume_on_premises("sip:bob@fabrikam.test").unwrap();
    p.register_endpoint(owner, None, false).await.unwrap().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonation_carries_the_uri_but_no_name_and_no_home_trust() {
    let (contoso, fabrikam) = contoso_and_fabrikam().await;
    let mut bob = bob_at_fabrikam(&fabrikam).await;
    let request = OutgoingRequest::message("sip:bob@fabrikam.test", "hello")
        .from("\"Alice Example\" <sip:alice@contoso.test>")
        .header(
            "P-Asserted-Identity",
            "\"Alice Example\" <sip:alice@contoso.test>",
        )
        .header("Referred-By", "\"Alice Example\" <sip:alice@contoso.test>")
        .header(
            "ms-asserted-verification-level",
            "ms-source-verified-user=verified",
        );
    let send = tokio::spawn(async move { contoso.send_request(request).await });
    let mut got = tokio::time::timeout(WAIT, bob.recv())
        .await
        .expect("in time")
        .expect("delivered");
    let m = got.request().clone();
    got.respond(200, "OK", &[], None).await.unwrap();
    assert_eq!(send.await.unwrap().unwrap().status(), Some(200));
    let from = m.from().unwrap();
    assert_eq!(from.uri().as_bytes(), b"sip:alice@contoso.test");
    assert!(from.display_name().is_none(), "{m}");
    assert!(from.tag().is_some());
    assert_eq!(
        m.header(HeaderName::ReferredBy),
        Some(&b"<sip:alice@contoso.test>"[..])
    );
    assert_eq!(m.header(HeaderName::PAssertedIdentity), None);
    assert_eq!(m.header_by_name("ms-asserted-verification-level"), None);
    assert!(!String::from_utf8_lossy(&m.to_bytes()).contains("Alice Example"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_acting_as_a_federated_user_are_not_sent() {
    let (contoso, _fabrikam) = contoso_and_fabrikam().await;
    let not_ours = |r: Result<_, RequestError>| {
        matches!(
            r,
            Err(RequestError::Refused(TopologyError::NotOnPremises(ref u))) if u == "sip:bob@fabrikam.test"
        )
    };
    // Registering as a federated user, given as text rather than through the typed API.
    let register = OutgoingRequest::new(Method::Register, "sip:contoso.test")
        .from("<sip:bob@fabrikam.test>")
        .to("<sip:bob@fabrikam.test>")
        .header("Contact", "<sip:app.contoso.test;transport=tls>");
    assert!(not_ours(contoso.send_request(register).await));
    // Publishing a federated user's presence.
    let publish = OutgoingRequest::new(Method::Publish, "sip:bob@fabrikam.test")
        .from("<sip:bob@fabrikam.test>")
        .to("<sip:bob@fabrikam.test>")
        .header("Event", "presence")
        .body("application/pidf+xml", "<presence/>");
    assert!(not_ours(contoso.send_request(publish).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inside_a_dialog_and_in_answers_nothing_of_the_home_trust_crosses() {
    let (contoso, fabrikam) = contoso_and_fabrikam().await;
    let alice = Address::assume_on_premises("sip:alice@contoso.test").unwrap();
    let (alice_id, _alice_rx) = contoso.register_endpoint(alice, None, false).await.unwrap();
    let mut bob = bob_at_fabrikam(&fabrikam).await;
    let invite = OutgoingRequest::new(Method::Invite, "sip:bob@fabrikam.test")
        .from("<sip:alice@contoso.test>")
        .header(
            "Contact",
            format!("<{}>", contoso.contact_uri("alice").unwrap()),
        );
    let mut call = contoso.invite(alice_id, invite).await.unwrap();
    let mut inv = next(&mut bob).await;
    // Bob's side answers a federated caller: what it adds of its own trust is removed.
    let contact = format!("<{}>", fabrikam.contact_uri("bob").unwrap());
    inv.respond(
        200,
        "OK",
        &[
            ("Contact", &contact),
            (
                "P-Asserted-Identity",
                "\"Bob Example\" <sip:bob@fabrikam.test>",
            ),
        ],
        None,
    )
    .await
    .unwrap();
    let dialog = loop {
        match tokio::time::timeout(WAIT, call.next()).await.unwrap() {
            Some(collaboration_platform::InviteProgress::Answered { response, dialog }) => {
                assert_eq!(response.header(HeaderName::PAssertedIdentity), None);
                break dialog;
            }
            Some(collaboration_platform::InviteProgress::Provisional(_)) => {}
            other => panic!("{other:?}"),
        }
    };
    // In the dialog, contoso's side adds home trust and a home user's name: removed.
    let send = {
        let contoso = contoso.clone();
        let dialog = dialog.clone();
        tokio::spawn(async move {
            contoso
                .send_in_dialog(
                    &dialog,
                    OutgoingRequest::new(Method::Message, "")
                        .header(
                            "P-Asserted-Identity",
                            "\"Alice Example\" <sip:alice@contoso.test>",
                        )
                        .header("Referred-By", "\"Carol Example\" <sip:carol@contoso.test>")
                        .header(
                            "ms-endpoint-location-data",
                            "NetworkScope;ms-media-location-type=Intranet",
                        )
                        .body("text/plain", "hi"),
                )
                .await
        })
    };
    let mut m = next(&mut bob).await;
    let got = m.request().clone();
    m.respond(200, "OK", &[], None).await.unwrap();
    assert_eq!(send.await.unwrap().unwrap().status(), Some(200));
    assert_eq!(got.header(HeaderName::PAssertedIdentity), None);
    assert_eq!(got.header_by_name("ms-endpoint-location-data"), None);
    assert_eq!(
        got.header(HeaderName::ReferredBy),
        Some(&b"<sip:carol@contoso.test>"[..])
    );
    assert_eq!(&got.body()[..], b"hi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_endpoint_receives_nothing_for_a_federated_user() {
    let (contoso, fabrikam) = contoso_and_fabrikam().await;
    // fabrikam's application routes by default: what no endpoint owns comes to it.
    let owner = Address::assume_on_premises("sip:router@fabrikam.test").unwrap();
    let (_id, mut router) = fabrikam.register_endpoint(owner, None, true).await.unwrap();
    // A fabrikam user with no endpoint of their own: delivered to the default endpoint.
    let home = {
        let contoso = contoso.clone();
        tokio::spawn(async move {
            contoso
                .send_request(OutgoingRequest::message("sip:dave@fabrikam.test", "hi"))
                .await
        })
    };
    let mut got = next(&mut router).await;
    assert_eq!(
        got.request().request_uri_bytes(),
        Some(&b"sip:dave@fabrikam.test"[..])
    );
    got.respond(200, "OK", &[], None).await.unwrap();
    assert_eq!(home.await.unwrap().unwrap().status(), Some(200));
    // A user of another deployment: fabrikam's application cannot receive for them.
    let r = contoso
        .send_request(OutgoingRequest::message("sip:erin@tailspin.test", "hi"))
        .await;
    assert!(
        matches!(r, Err(RequestError::Status { code: 404, .. })),
        "{r:?}"
    );
    assert!(router.try_recv().is_err());
}
