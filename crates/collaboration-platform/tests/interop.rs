//! The platform against real peers (peer-harness): Kamailio 5.6 as the contoso front end
//! (mutual TLS, registrar) and the fabrikam federated deployment, SIPp as users.
//!
//! Every wait is bounded. Without kamailio or sipp these tests fail with the install hint.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use collaboration_platform::{
    Address, CollaborationPlatform, Homed, IncomingRequest, Listener, OutboundProxy,
    OutgoingRequest, RequestError, ServerPlatformSettings, Topology,
};
use interop_support::{bounded, federation, identity, loopback0, roots, runtime, WAIT};
use peer_harness::{scenarios, status_line, CertFiles, Deployment, Federation, SipTcpClient};
use sip_core::{HeaderName, Method, SipMessage};
use tokio::sync::mpsc;
use transport_tls::{
    SipTransport, Target, TlsClientSettings, TlsRefusal, TransportError, TransportEvent,
    TransportSettings,
};

/// The trusted application `app.contoso.test`, its front end contoso over mutual TLS.
fn settings(fed: &Federation) -> ServerPlatformSettings {
    let contoso = fed.contoso();
    ServerPlatformSettings::new(
        "ucma-rs interop",
        Deployment::Contoso.application(),
        identity(fed.pki().application(Deployment::Contoso)),
        roots(fed),
        OutboundProxy::tls(contoso.mtls_addr(), contoso.fqdn()),
    )
    .listen(Listener::mutual_tls(loopback0()))
    .topology(Topology::new([Deployment::Contoso.domain()]))
}

/// Registers an endpoint for `sip:USER@contoso.test` and registers its contact at contoso
/// (trusted applications are not challenged).
async fn endpoint(platform: &CollaborationPlatform, user: &str) -> mpsc::Receiver<IncomingRequest> {
    let aor = format!("sip:{user}@contoso.test");
    let contact = platform.contact_uri(user).expect("a TLS listener");
    let owner = Address::assume_on_premises(&aor).unwrap();
    let (_id, rx) = platform
        .register_endpoint(owner, Some(contact.clone()), false)
        .await
        .expect("endpoint registered");
    let register = OutgoingRequest::new(Method::Register, "sip:contoso.test")
        .from(format!("<{aor}>"))
        .to(format!("<{aor}>"))
        .header("Contact", format!("<{contact}>"))
        .header("Expires", "300");
    let r = bounded("REGISTER", platform.send_request(register))
        .await
        .unwrap_or_else(|e| panic!("REGISTER at contoso: {e}"));
    assert_eq!(r.status(), Some(200));
    rx
}

/// Answers every request delivered to the endpoint with 200; reports each caller.
fn answer_all(
    mut rx: mpsc::Receiver<IncomingRequest>,
) -> mpsc::UnboundedReceiver<(Homed, SipMessage)> {
    let (tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(mut req) = rx.recv().await {
            let _ = tx.send((req.caller().clone(), req.request().clone()));
            req.respond(200, "OK", &[], None).await.expect("respond");
        }
    });
    seen
}

#[test]
fn options_both_ways_over_mutual_tls() {
    let fed = federation();
    runtime().block_on(async {
        let platform = CollaborationPlatform::start(settings(&fed)).await.unwrap();
        // Platform -> front end.
        let t0 = Instant::now();
        let r = bounded(
            "OPTIONS to contoso",
            platform.send_request(OutgoingRequest::options("sip:fe.contoso.test")),
        )
        .await
        .unwrap_or_else(|e| panic!("OPTIONS to the front end: {e}\n{}", fed.log_tails(30)));
        assert_eq!(r.status(), Some(200), "{}", status_line(&r));
        eprintln!(
            "OPTIONS to contoso: {} in {:?}",
            status_line(&r),
            t0.elapsed()
        );

        // A user at contoso -> front end -> platform (the application's registered URI).
        let _rx = endpoint(&platform, "bot").await;
        let tcp = fed.contoso().tcp_addr();
        let answer = tokio::task::spawn_blocking(move || {
            let mut c = SipTcpClient::connect(tcp, WAIT).expect("connect to contoso");
            let req = c
                .request(
                    Method::Options,
                    "sip:bot@contoso.test",
                    "sip:alice@contoso.test",
                    "sip:bot@contoso.test",
                )
                .build()
                .unwrap();
            c.transaction(&req, WAIT)
        })
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("OPTIONS through contoso: {e}"));
        assert_eq!(answer.status(), Some(200), "{}", status_line(&answer));
        let allow = answer.header(HeaderName::Allow).expect("Allow");
        assert!(String::from_utf8_lossy(allow).contains("MESSAGE"));
        assert!(answer.header(HeaderName::Accept).is_some());
        assert!(answer.header(HeaderName::Supported).is_some());
        let server = String::from_utf8_lossy(answer.header(HeaderName::Server).unwrap_or_default())
            .into_owned();
        assert_eq!(server, "ucma-rs interop");
        let report = platform.shutdown().await;
        assert_eq!(report.cancelled, 0);
    });
}

#[test]
fn pager_message_from_platform_to_sipp_uas_at_contoso() {
    let fed = federation();
    let uas = fed
        .sipp("alice-uas", scenarios::UAS_MESSAGE)
        .calls(1)
        .spawn_listening(WAIT)
        .expect("SIPp UAS listening");
    let mut c = SipTcpClient::connect(fed.contoso().tcp_addr(), WAIT).unwrap();
    let contact = format!("sip:alice@{};transport=tcp", uas.local_addr());
    let reg = c
        .register("alice", "contoso.test", "alice-secret", &contact, 300, WAIT)
        .unwrap();
    assert_eq!(reg.response.status(), Some(200));
    runtime().block_on(async {
        let platform = CollaborationPlatform::start(settings(&fed)).await.unwrap();
        let r = bounded(
            "MESSAGE to alice",
            platform.send_request(
                OutgoingRequest::message("sip:alice@contoso.test", "Hello from ucma-rs")
                    .header("X-Interop", "1"),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("MESSAGE: {e}\n{}", fed.log_tails(30)));
        assert_eq!(r.status(), Some(200));
        platform.shutdown().await;
    });
    let out = uas.wait().unwrap();
    assert!(out.succeeded(), "{}", out.report());
}

#[test]
fn pager_message_from_sipp_uac_through_contoso_to_platform() {
    let fed = federation();
    let rt = runtime();
    let (platform, mut seen) = rt.block_on(async {
        let platform = CollaborationPlatform::start(settings(&fed)).await.unwrap();
        let rx = endpoint(&platform, "bot").await;
        (platform.clone(), answer_all(rx))
    });
    let uac = fed
        .sipp("alice-uac", scenarios::UAC_MESSAGE)
        .remote(fed.contoso().tcp_addr())
        .key("to_user", "bot")
        .key("to_domain", "contoso.test")
        .key("from_user", "alice")
        .key("from_domain", "contoso.test")
        .calls(3)
        .run()
        .unwrap();
    assert!(uac.succeeded(), "{}\n{}", uac.report(), fed.log_tails(30));
    rt.block_on(async {
        let (caller, request) = bounded("delivery", seen.recv()).await.unwrap();
        assert!(matches!(caller, Homed::OnPremises(_)), "{caller:?}");
        assert_eq!(caller.uri(), "sip:alice@contoso.test");
        assert!(String::from_utf8_lossy(request.body()).contains("Hello from SIPp"));
        platform.shutdown().await;
    });
}

#[test]
fn federated_user_at_fabrikam_reaches_the_platform_through_federation() {
    let fed = federation();
    let rt = runtime();
    let (platform, mut seen) = rt.block_on(async {
        let platform = CollaborationPlatform::start(settings(&fed)).await.unwrap();
        let rx = endpoint(&platform, "bot").await;
        (platform.clone(), answer_all(rx))
    });
    let uac = fed
        .sipp("bob-uac", scenarios::UAC_MESSAGE)
        .remote(fed.fabrikam().tcp_addr())
        .key("to_user", "bot")
        .key("to_domain", "contoso.test")
        .key("from_user", "bob")
        .key("from_domain", "fabrikam.test")
        .calls(1)
        .run()
        .unwrap();
    assert!(uac.succeeded(), "{}\n{}", uac.report(), fed.log_tails(30));
    rt.block_on(async {
        let (caller, _) = bounded("delivery", seen.recv()).await.unwrap();
        let Homed::Federated(a) = &caller else {
            panic!("a fabrikam user must be marked federated: {caller:?}")
        };
        assert_eq!(a.domain(), "fabrikam.test");
        platform.shutdown().await;
    });
}

/// A SIPp UAS that fails unless the MESSAGE carries no home-trust header.
const UAS_NO_TRUST_HEADERS: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="UAS MESSAGE without home-trust headers">
  <recv request="MESSAGE" crlf="true">
    <action>
      <ereg regexp="P-Asserted-Identity|ms-asserted-verification-level" search_in="msg" check_it_inverse="true" assign_to="trust"/>
      <ereg regexp="X-Kept: yes" search_in="msg" check_it="true" assign_to="kept"/>
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
      Content-Length: 0

    ]]>
  </send>
  <Reference variables="trust,kept"/>
</scenario>
"#;

#[test]
fn requests_to_federated_parties_leave_without_home_trust_headers() {
    let fed = federation();
    let uas = fed
        .sipp("bob-uas", UAS_NO_TRUST_HEADERS)
        .calls(1)
        .spawn_listening(WAIT)
        .expect("SIPp UAS listening");
    let mut c = SipTcpClient::connect(fed.fabrikam().tcp_addr(), WAIT).unwrap();
    let contact = format!("sip:bob@{};transport=tcp", uas.local_addr());
    let reg = c
        .register("bob", "fabrikam.test", "bob-secret", &contact, 300, WAIT)
        .unwrap();
    assert_eq!(reg.response.status(), Some(200));
    runtime().block_on(async {
        let platform = CollaborationPlatform::start(settings(&fed)).await.unwrap();
        let r = bounded(
            "MESSAGE to bob",
            platform.send_request(
                OutgoingRequest::message("sip:bob@fabrikam.test", "Hello across federation")
                    .header("P-Asserted-Identity", "\"Alice\" <sip:alice@contoso.test>")
                    .header(
                        "ms-asserted-verification-level",
                        "ms-source-verified-user=verified",
                    )
                    .header("X-Kept", "yes"),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("MESSAGE to fabrikam: {e}\n{}", fed.log_tails(30)));
        assert_eq!(r.status(), Some(200));
        // A blocked partner is refused before anything is sent.
        let blocked = CollaborationPlatform::start(
            settings(&fed).topology(Topology::new(["contoso.test"]).block("fabrikam.test")),
        )
        .await
        .unwrap();
        let e = blocked
            .send_request(OutgoingRequest::message("sip:bob@fabrikam.test", "no"))
            .await
            .unwrap_err();
        assert!(matches!(e, RequestError::Refused(_)), "{e:?}");
        assert_eq!(e.status(), 403);
        blocked.shutdown().await;
        platform.shutdown().await;
    });
    let out = uas.wait().unwrap();
    assert!(out.succeeded(), "{}", out.report());
}

/// Sends one OPTIONS to `addr` over TLS presenting `who`; the final status, or the error.
async fn options_as(fed: &Federation, who: &CertFiles, addr: SocketAddr) -> Result<u16, String> {
    let tls = TlsClientSettings::new(roots(fed)).identity(identity(who));
    let (t, mut events) =
        SipTransport::new(TransportSettings::new().tls_client(tls).keep_alive(None)).unwrap();
    let req = SipMessage::request(Method::Options, "sip:bot@contoso.test")
        .header(
            HeaderName::Via,
            "SIP/2.0/TLS 127.0.0.1:1;branch=z9hG4bKuntrusted1",
        )
        .header(HeaderName::MaxForwards, "70")
        .header(HeaderName::From, format!("<sip:x@{}>;tag=1", who.name))
        .header(HeaderName::To, "<sip:bot@contoso.test>")
        .header(HeaderName::CallId, "untrusted-1")
        .header(HeaderName::CSeq, "1 OPTIONS")
        .build()
        .unwrap();
    t.send(&Target::tls(addr, "app.contoso.test"), &req)
        .await
        .map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(TransportEvent::Message(m))) if m.message.status().is_some() => {
                return Ok(m.message.status().unwrap())
            }
            Ok(Some(TransportEvent::Closed { reason, .. })) => return Err(reason.to_string()),
            Ok(Some(_)) => {}
            Ok(None) => return Err("transport gone".into()),
            Err(_) => return Err("no answer".into()),
        }
    }
}

#[test]
fn peers_with_untrusted_certificates_are_refused() {
    let fed = federation();
    runtime().block_on(async {
        let platform = CollaborationPlatform::start(settings(&fed)).await.unwrap();
        let _rx = endpoint(&platform, "bot").await;
        let addr = platform.listen_addrs()[0].1;
        // Same CA, but not a trusted peer: the platform answers 403 (mirror of the front end).
        let untrusted = options_as(&fed, fed.pki().untrusted(), addr).await;
        assert_eq!(untrusted, Ok(403));
        // Another CA: the handshake itself is refused; nothing is answered.
        let foreign = options_as(&fed, fed.pki().foreign(), addr).await;
        assert!(foreign.is_err(), "{foreign:?}");
        // The front end itself is trusted on the same listener.
        let fe = options_as(&fed, fed.pki().front_end(Deployment::Contoso), addr).await;
        assert_eq!(fe, Ok(200));
        platform.shutdown().await;
    });
}

#[test]
fn a_front_end_whose_certificate_does_not_match_is_refused() {
    let fed = federation();
    runtime().block_on(async {
        // contoso's name, but fabrikam's socket: fabrikam presents fe.fabrikam.test.
        let s = ServerPlatformSettings::new(
            "ucma-rs interop",
            "app.contoso.test",
            identity(fed.pki().application(Deployment::Contoso)),
            roots(&fed),
            OutboundProxy::tls(fed.fabrikam().mtls_addr(), "fe.contoso.test"),
        );
        let platform = CollaborationPlatform::start(s).await.unwrap();
        let e = bounded(
            "OPTIONS to an impostor",
            platform.send_request(OutgoingRequest::options("sip:fe.contoso.test")),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                &e,
                RequestError::Transport(TransportError::Tls {
                    refusal: TlsRefusal::NameMismatch,
                    ..
                })
            ),
            "{e:?}"
        );
        assert_eq!(e.status(), 503);
        platform.shutdown().await;
    });
}

#[test]
fn shutdown_answers_what_is_left_and_refuses_new_work() {
    let fed = federation();
    runtime().block_on(async {
        let platform = CollaborationPlatform::start(settings(&fed)).await.unwrap();
        let mut rx = endpoint(&platform, "bot").await;
        // An incoming request the endpoint never answers, in flight at shutdown.
        let tcp = fed.contoso().tcp_addr();
        let user = tokio::task::spawn_blocking(move || {
            let mut c = SipTcpClient::connect(tcp, WAIT).expect("connect");
            let req = c
                .request(
                    Method::Message,
                    "sip:bot@contoso.test",
                    "sip:alice@contoso.test",
                    "sip:bot@contoso.test",
                )
                .body("text/plain", "are you there?")
                .build()
                .unwrap();
            c.transaction(&req, WAIT)
        });
        let held = bounded("delivery", rx.recv()).await.expect("delivered");
        let report = platform.shutdown_within(Duration::from_millis(300)).await;
        assert_eq!(report.cancelled, 1, "{report:?}");
        let answer = user.await.unwrap().expect("answered");
        // The platform answered 503; a proxy turns a 503 into 500 (RFC 3261 §16.7 step 6),
        // Kamailio keeping the reason phrase.
        assert_eq!(
            status_line(&answer),
            "500 Service Unavailable",
            "{}",
            status_line(&answer)
        );
        drop(held);
        let e = platform
            .send_request(OutgoingRequest::options("sip:fe.contoso.test"))
            .await
            .unwrap_err();
        assert!(matches!(e, RequestError::Shutdown), "{e:?}");
    });
}

#[test]
fn front_end_restart_ends_requests_in_flight_and_the_platform_reconnects() {
    let mut fed = federation();
    let rt = runtime();
    let platform = rt
        .block_on(CollaborationPlatform::start(settings(&fed)))
        .unwrap();
    let options = || OutgoingRequest::options("sip:fe.contoso.test");
    let before = rt
        .block_on(bounded("OPTIONS before", platform.send_request(options())))
        .unwrap_or_else(|e| panic!("OPTIONS before the restart: {e}"));
    assert_eq!(before.status(), Some(200));

    // Traffic in flight while the front end dies.
    let in_flight: Vec<_> = (0..20)
        .map(|i| {
            let p = platform.clone();
            rt.spawn(async move {
                tokio::time::sleep(Duration::from_millis(10 * i)).await;
                p.send_request(OutgoingRequest::options("sip:fe.contoso.test"))
                    .await
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    fed.front_end_mut(Deployment::Contoso).stop();

    // Every request ends with a definite outcome: answered, or a typed failure — well
    // before Timer F would have fired on a transaction nobody looked after.
    let started = Instant::now();
    let outcomes: Vec<Result<SipMessage, RequestError>> = rt.block_on(async {
        let mut v = Vec::new();
        for h in in_flight {
            v.push(bounded("request in flight", h).await.expect("task"));
        }
        v
    });
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "outcomes took {:?}",
        started.elapsed()
    );
    for o in &outcomes {
        match o {
            Ok(r) => assert_eq!(r.status(), Some(200)),
            Err(RequestError::Transport(_) | RequestError::Timeout) => {}
            Err(other) => panic!("unexpected outcome {other:?}"),
        }
    }
    let failed = outcomes.iter().filter(|o| o.is_err()).count();
    eprintln!(
        "in flight: {} answered, {failed} failed",
        outcomes.len() - failed
    );

    // The front end comes back on the same ports; the platform reconnects by itself.
    fed.front_end_mut(Deployment::Contoso)
        .restart(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("restarting contoso: {e}"));
    let back = Instant::now();
    let after = rt.block_on(async {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), platform.send_request(options()))
                .await
            {
                Ok(Ok(r)) => break r,
                _ if back.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                other => panic!("no answer after the restart: {other:?}"),
            }
        }
    });
    assert_eq!(after.status(), Some(200));
    eprintln!(
        "answered again {:?} after the front end's return",
        back.elapsed()
    );
    assert!(back.elapsed() < Duration::from_secs(5));
    rt.block_on(platform.shutdown());
}

/// A SIPp caller at contoso: INVITE, ACK for the 200, then BYE in the dialog.
const UAC_INVITE_BYE: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="interop UAC INVITE, ACK, BYE">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[to_user]@[to_domain] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: <sip:[from_user]@[from_domain]>;tag=[pid]-inv-[call_number]
      To: <sip:[to_user]@[to_domain]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:[from_user]@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
  <recv response="100" optional="true"></recv>
  <recv response="200" rrs="true" rtd="true"></recv>
  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      Max-Forwards: 70
      From: <sip:[from_user]@[from_domain]>;tag=[pid]-inv-[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Content-Length: 0

    ]]>
  </send>
  <!-- Nothing but a copy of the 200 may come now (a request during a pause is unexpected);
       a copy matches the 200 above, whose next command is the ACK, which SIPp sends again. -->
  <pause milliseconds="100"/>
  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      Max-Forwards: 70
      From: <sip:[from_user]@[from_domain]>;tag=[pid]-inv-[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"></recv>
</scenario>
"#;

#[test]
fn an_invite_answered_by_an_endpoint_makes_a_dialog_its_bye_reaches() {
    let fed = federation();
    let rt = runtime();
    let (platform, mut seen) = rt.block_on(async {
        let platform = CollaborationPlatform::start(settings(&fed)).await.unwrap();
        let contact = platform.contact_uri("bot").expect("a TLS listener");
        let mut rx = endpoint(&platform, "bot").await;
        let (tx, seen) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(mut req) = rx.recv().await {
                let method = req.request().method().cloned();
                let _ = tx.send(method.clone());
                let value = format!("<{contact}>");
                let headers = [("Contact", value.as_str())];
                let extra: &[(&str, &str)] = if method == Some(Method::Invite) {
                    &headers
                } else {
                    &[]
                };
                req.respond(200, "OK", extra, None).await.expect("respond");
            }
        });
        (platform, seen)
    });
    let uac = fed
        .sipp("alice-invite", UAC_INVITE_BYE)
        .remote(fed.contoso().tcp_addr())
        .key("to_user", "bot")
        .key("to_domain", "contoso.test")
        .key("from_user", "alice")
        .key("from_domain", "contoso.test")
        .calls(1)
        .run()
        .unwrap();
    assert!(uac.succeeded(), "{}\n{}", uac.report(), fed.log_tails(30));
    rt.block_on(async {
        let first = bounded("INVITE delivered", seen.recv()).await.unwrap();
        assert_eq!(first, Some(Method::Invite));
        let second = bounded("BYE delivered", seen.recv()).await.unwrap();
        assert_eq!(second, Some(Method::Bye), "the BYE matched the dialog");
        platform.shutdown().await;
    });
}
