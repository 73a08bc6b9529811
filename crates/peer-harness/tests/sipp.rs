//! SIPp against the front ends: the federation route carries a MESSAGE from a SIPp UAC at
//! contoso over mutual TLS to a SIPp UAS registered at fabrikam; SIPp registers with digest.

mod common;

use std::time::{Duration, Instant};

use common::{ok, WAIT};
use peer_harness::{
    scenarios, status_line, Deployment, Federation, HarnessError, SipTcpClient, Sipp,
};
use sip_core::{HeaderName, Method, SipMessage};

/// The UAS of the federation test: like `scenarios::UAS_MESSAGE`, and it fails unless the
/// MESSAGE carries a TLS Via (the federation hop) below the last front end's.
const UAS_MESSAGE_VIA_TLS: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="UAS MESSAGE that came over TLS">
  <recv request="MESSAGE" crlf="true">
    <action>
      <ereg regexp="Via: SIP/2\.0/TLS 127\.0\.0\.1:[0-9]+" search_in="msg" check_it="true" assign_to="1"/>
    </action>
  </recv>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]-uas-[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      X-Federation-Via: [$1]
      Content-Length: 0

    ]]>
  </send>
</scenario>
"#;

#[test]
fn message_from_sipp_crosses_the_federation_route_to_a_registered_sipp_uas() {
    let started = Instant::now();
    let fed = ok(Federation::start());

    // bob's phone at fabrikam: a SIPp UAS, registered (digest) with its TCP address.
    let uas = ok(fed
        .sipp("bob-uas", UAS_MESSAGE_VIA_TLS)
        .calls(1)
        .trace_messages(true)
        .timeout(Duration::from_secs(20))
        .spawn_listening(WAIT));
    let mut reg = ok(SipTcpClient::connect(fed.fabrikam().tcp_addr(), WAIT));
    let contact = format!("sip:bob@{};transport=tcp", uas.local_addr());
    let r = ok(reg.register("bob", "fabrikam.test", "bob-secret", &contact, 300, WAIT));
    assert_eq!(r.challenge.as_ref().and_then(SipMessage::status), Some(401));
    assert_eq!(
        r.response.status(),
        Some(200),
        "{}",
        status_line(&r.response)
    );

    // alice at contoso: a SIPp UAC over TCP to her front end.
    let uac = ok(fed
        .sipp("alice-uac", scenarios::UAC_MESSAGE)
        .remote(fed.contoso().tcp_addr())
        .key("to_user", "bob")
        .key("to_domain", Deployment::Fabrikam.domain())
        .key("from_user", "alice")
        .key("from_domain", Deployment::Contoso.domain())
        .calls(1)
        .trace_messages(true)
        .timeout(Duration::from_secs(15))
        .run());
    assert!(
        uac.succeeded(),
        "UAC: {}\n{}",
        uac.report(),
        fed.log_tails(20)
    );
    let uas = ok(uas.wait());
    assert!(
        uas.succeeded(),
        "UAS: {}\n{}",
        uas.report(),
        fed.log_tails(20)
    );

    // The hop between the front ends was contoso's mutual-TLS socket.
    let tls_via = format!("Via: SIP/2.0/TLS {}", fed.contoso().mtls_addr());
    assert!(
        uas.messages.contains(&tls_via),
        "{tls_via} in:\n{}",
        uas.messages
    );
    assert!(
        uac.messages.contains("X-Federation-Via: Via: SIP/2.0/TLS"),
        "{}",
        uac.messages
    );
    assert!(
        fed.contoso()
            .log_tail(100)
            .contains("federation: MESSAGE sip:bob@fabrikam.test"),
        "{}",
        fed.contoso().log_tail(30)
    );

    // And the route back: bob (fabrikam) to alice (contoso), raw clients on both sides.
    let mut alice = ok(SipTcpClient::connect(fed.contoso().tcp_addr(), WAIT));
    let alice_contact = alice.contact_uri("alice");
    let r = ok(alice.register(
        "alice",
        "contoso.test",
        "alice-secret",
        &alice_contact,
        300,
        WAIT,
    ));
    assert_eq!(r.response.status(), Some(200));
    let mut bob = ok(SipTcpClient::connect(fed.fabrikam().tcp_addr(), WAIT));
    let msg = bob
        .request(
            Method::Message,
            "sip:alice@contoso.test",
            "sip:bob@fabrikam.test",
            "sip:alice@contoso.test",
        )
        .body("text/plain", "hi alice, from fabrikam")
        .build()
        .expect("MESSAGE");
    ok(bob.send(&msg));
    let got = ok(alice.recv_request(WAIT));
    assert_eq!(got.method(), Some(&Method::Message));
    assert_eq!(&got.body()[..], b"hi alice, from fabrikam");
    let vias: Vec<String> = got
        .header_values(HeaderName::Via)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    assert!(
        vias.iter()
            .any(|v| v.contains(&format!("TLS {}", fed.fabrikam().mtls_addr()))),
        "came from fabrikam's TLS socket: {vias:?}"
    );
    let mut answer = SipMessage::response_to(&got, 200, "OK").expect("200");
    let _ = answer.set_to_tag("alice");
    ok(alice.send(&answer));
    let back = ok(bob.recv(WAIT));
    assert_eq!(back.status(), Some(200), "{}", status_line(&back));
    eprintln!("federation round trip test took {:?}", started.elapsed());
}

#[test]
fn sipp_registers_with_digest_authentication() {
    let fed = ok(Federation::start());
    let fe = fed.fabrikam();
    let out = ok(fed
        .sipp("dave-register", scenarios::UAC_REGISTER_AUTH)
        .remote(fe.tcp_addr())
        .key("user", "dave")
        .key("domain", fe.domain())
        .key("contact", "sip:dave@127.0.0.1:5070;transport=tcp")
        .key("expires", "60")
        .auth("dave", "dave-secret")
        .arg("-auth_uri")
        .arg("sip:fabrikam.test")
        .calls(1)
        .timeout(Duration::from_secs(15))
        .run());
    assert!(out.succeeded(), "{}\n{}", out.report(), fe.log_tail(20));
    assert_eq!(out.stats.successful_calls, 1);

    // With the wrong password, the scenario fails (a second 401 where 200 was expected).
    let bad = ok(fed
        .sipp("dave-register-bad", scenarios::UAC_REGISTER_AUTH)
        .remote(fe.tcp_addr())
        .key("user", "dave")
        .key("domain", fe.domain())
        .key("contact", "sip:dave@127.0.0.1:5070;transport=tcp")
        .key("expires", "60")
        .auth("dave", "not-the-password")
        .arg("-auth_uri")
        .arg("sip:fabrikam.test")
        .calls(1)
        .timeout(Duration::from_secs(10))
        .run());
    assert!(!bad.succeeded(), "{}", bad.report());
}

#[test]
fn a_missing_sipp_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let err = Sipp::new(dir.path(), "nothing", scenarios::UAS_MESSAGE)
        .binary("/nonexistent/sipp")
        .run()
        .expect_err("no such binary");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(matches!(err, HarnessError::MissingBinary { .. }), "{err:?}");
    assert!(err.to_string().contains("sip-tester"), "{err}");
}

/// A port taken by another listener is not taken for SIPp's: `spawn_listening` and `run`
/// report `PortInUse` (a bare "something listens there" check said SIPp was ready, and a
/// test then talked to whatever held the port; with a port chosen at run time, both try
/// another).
#[test]
fn a_port_another_process_listens_on_is_not_taken_for_sipps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = squatter.local_addr().unwrap().port();
    let err = Sipp::new(dir.path(), "squatted", scenarios::UAS_MESSAGE)
        .local_port(port)
        .calls(1)
        .spawn_listening(WAIT)
        .expect_err("the port is someone else's");
    assert!(matches!(err, HarnessError::PortInUse { .. }), "{err:?}");
    let err = Sipp::new(dir.path(), "squatted-run", scenarios::UAS_MESSAGE)
        .local_port(port)
        .calls(1)
        .run()
        .expect_err("the port is someone else's");
    assert!(matches!(err, HarnessError::PortInUse { .. }), "{err:?}");
}

/// Without a port set, a run that listens is SIPp's own: found among SIPp's open files.
#[test]
fn spawn_listening_waits_for_sipp_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    // SIPp must still run when the checks below look at it (it is killed when dropped).
    let uas = ok(Sipp::new(dir.path(), "listening", scenarios::UAS_MESSAGE)
        .calls(1)
        .timeout(Duration::from_secs(10))
        .spawn_listening(WAIT));
    assert!(peer_harness::listens_on(uas.pid(), uas.local_addr().port()));
    assert!(!peer_harness::listens_on(
        std::process::id(),
        uas.local_addr().port()
    ));
}
