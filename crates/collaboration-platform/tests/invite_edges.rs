//! Edges of INVITE dialogs where a request or a 2xx used to be left without an outcome:
//! a request held for an ACK that the peer's BYE overtakes, a 2xx that comes after our
//! INVITE failed (lost connection, unanswered CANCEL), an INVITE ringing at shutdown.
//! Against raw UDP callers and a scripted TCP proxy, with T1 = 10 ms (100 ms where the
//! peer's BYE must come before 64·T1 without an ACK ends the call).
use std::time::Duration;

use collaboration_platform::loopback::{pair, LoopbackPki};
use collaboration_platform::{
    CollaborationPlatform, EndpointId, IncomingRequest, InviteProgress, OutgoingRequest, Topology,
};
use sip_core::Method;
use tokio::sync::mpsc;

mod support;
use support::scripted_proxy::{response, ScriptedProxy};
use support::{endpoint, header, next, WAIT};

/// Bob's platform (T1 = 100 ms) listening on UDP; a raw UDP caller.
async fn udp_bob() -> (
    CollaborationPlatform,
    CollaborationPlatform,
    mpsc::Receiver<IncomingRequest>,
    EndpointId,
    tokio::net::UdpSocket,
    std::net::SocketAddr,
) {
    let pki = LoopbackPki::new().expect("CA");
    // 64·T1 = 6.4 s without an ACK ends the call: the test's BYE must come first however
    // slow the test runs (the timer is not what is tested).
    let timers = sip_core::transaction::TransactionConfig {
        t1: Duration::from_millis(100),
        t2: Duration::from_millis(400),
        ..Default::default()
    };
    let (a, b) = pair(&pki, "app.contoso.test", "bob.contoso.test", |me, s| {
        let s = s
            .topology(Topology::new(["contoso.test"]))
            .transaction_timers(timers);
        if me == "bob.contoso.test" {
            s.listen(
                collaboration_platform::Listener::udp("127.0.0.1:0".parse().unwrap())
                    .allow_untrusted_peers(),
            )
        } else {
            s
        }
    })
    .await
    .expect("platforms");
    let b_udp = b
        .listen_addr(collaboration_platform::ListenerKind::Udp)
        .unwrap();
    let (bob, bob_rx) = endpoint(&b, "bob").await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    (a, b, bob_rx, bob, socket, b_udp)
}

async fn final_response(socket: &tokio::net::UdpSocket) -> String {
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
            .await
            .expect("a response")
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.starts_with("SIP/2.0 1") {
            return text;
        }
    }
}

/// Bob answers carol's INVITE 200; before carol's ACK arrives (it was lost), bob's
/// application sends a MESSAGE in the dialog (held for the ACK); then carol hangs up with
/// BYE. The held MESSAGE gets its outcome (NoDialog); before, its future never resolved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_held_for_ack_resolves_when_the_peer_byes_first() {
    let (_a, b, mut bob_rx, _bob, socket, b_udp) = udp_bob().await;
    let me = socket.local_addr().unwrap();
    let call_id = "held-then-bye@test";
    socket
        .send_to(
            format!(
                "INVITE sip:bob@contoso.test SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {me};branch=z9hG4bK-inv1\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:carol@contoso.test>;tag=c1\r\n\
                 To: <sip:bob@contoso.test>\r\n\
                 Call-ID: {call_id}\r\n\
                 CSeq: 1 INVITE\r\n\
                 Contact: <sip:carol@{me}>\r\n\
                 Content-Length: 0\r\n\r\n"
            )
            .as_bytes(),
            b_udp,
        )
        .await
        .unwrap();
    let mut inv = next(&mut bob_rx).await;
    let dialog = inv.dialog().unwrap();
    let contact = format!("<{}>", b.contact_uri("bob").unwrap());
    inv.respond(200, "OK", &[("Contact", &contact)], None)
        .await
        .unwrap();
    let ok = final_response(&socket).await;
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    // Bob's application sends a MESSAGE: held until the ACK.
    let b2 = b.clone();
    let d = dialog.clone();
    let message = tokio::spawn(async move {
        b2.send_in_dialog(
            &d,
            OutgoingRequest::new(Method::Message, "").body("text/plain", "hi"),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Carol's ACK was lost; she hangs up.
    let to = header(&ok, "To").to_string();
    socket
        .send_to(
            format!(
                "BYE sip:bob@127.0.0.1 SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {me};branch=z9hG4bK-bye1\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:carol@contoso.test>;tag=c1\r\n\
                 To: {to}\r\n\
                 Call-ID: {call_id}\r\n\
                 CSeq: 2 BYE\r\n\
                 Content-Length: 0\r\n\r\n"
            )
            .as_bytes(),
            b_udp,
        )
        .await
        .unwrap();
    let mut bye = next(&mut bob_rx).await;
    assert_eq!(bye.request().method(), Some(&Method::Bye));
    bye.respond(200, "OK", &[], None).await.unwrap();
    let bye_ok = final_response(&socket).await;
    assert!(bye_ok.starts_with("SIP/2.0 200"), "{bye_ok}");
    // The BYE ended the dialog: the held MESSAGE has its outcome well within 3 s, before
    // 64*T1 (6.4 s) without an ACK could have given it one.
    let r = tokio::time::timeout(Duration::from_secs(3), message)
        .await
        .expect("send_in_dialog resolves once the peer's BYE ended the dialog")
        .unwrap();
    assert!(
        matches!(r, Err(collaboration_platform::RequestError::NoDialog)),
        "{r:?}"
    );
}

/// Shutting down while an INVITE of ours is ringing: the INVITE should be CANCELled
/// (the callee otherwise rings on, and a later 2xx is never ACKed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_a_ringing_invite() {
    let pki = LoopbackPki::new().expect("CA");
    let wire = collaboration_platform::WireLog::new();
    let tap = wire.as_observer();
    let (a, b) = pair(&pki, "app.contoso.test", "bob.contoso.test", |me, s| {
        let s = s.topology(Topology::new(["contoso.test"]));
        if me == "app.contoso.test" {
            s.observer(tap.clone())
                .shutdown_grace(Duration::from_millis(200))
        } else {
            s
        }
    })
    .await
    .expect("platforms");
    let (app, _app_rx) = endpoint(&a, "app").await;
    let (_bob, mut bob_rx) = endpoint(&b, "bob").await;
    let req = OutgoingRequest::new(Method::Invite, "sip:bob@contoso.test")
        .from("<sip:app@contoso.test>")
        .header("Contact", format!("<{}>", a.contact_uri("app").unwrap()));
    let mut call = a.invite(app, req).await.unwrap();
    let mut inv = next(&mut bob_rx).await;
    inv.respond(180, "Ringing", &[], None).await.unwrap();
    match tokio::time::timeout(WAIT, call.next()).await.unwrap() {
        Some(InviteProgress::Provisional(p)) => assert_eq!(p.status(), Some(180)),
        other => panic!("{other:?}"),
    }
    let report = a.shutdown().await;
    assert_eq!(report.cancelled, 1, "{report:?}");
    let sent: Vec<String> = wire
        .records_of(collaboration_platform::WireDirection::Sent)
        .iter()
        .map(|r| r.text().lines().next().unwrap_or("").to_string())
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !wire.sent_requests("CANCEL").is_empty() || inv.is_cancelled(),
        "the ringing INVITE was abandoned without CANCEL; a sent: {sent:?}; bob's INVITE cancelled: {}",
        inv.is_cancelled()
    );
}

async fn scripted_platform() -> (CollaborationPlatform, tokio::net::TcpListener) {
    use collaboration_platform::{Listener, OutboundProxy, ServerPlatformSettings};
    let pki = LoopbackPki::new().expect("CA");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let settings = ServerPlatformSettings::new(
        "ucma-rs test",
        "app.contoso.test",
        pki.identity("app.contoso.test").unwrap(),
        pki.roots(),
        OutboundProxy::tcp(listener.local_addr().unwrap()),
    )
    .listen(Listener::tcp("127.0.0.1:0".parse().unwrap()).allow_untrusted_peers())
    .topology(Topology::new(["contoso.test"]))
    .transaction_timers(sip_core::transaction::TransactionConfig {
        t1: Duration::from_millis(10),
        ..Default::default()
    });
    (
        CollaborationPlatform::start(settings).await.unwrap(),
        listener,
    )
}

/// Our INVITE rings; the connection to the proxy drops (the caller is told Transport);
/// the callee answers and the proxy delivers the 2xx on a new connection (RFC 3261
/// §18.2.2). Every 2xx must be ACKed (§13.2.2.4) and, the caller no longer wanting the
/// call, ended with BYE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_after_the_invite_failed_on_a_transport_error_is_acked() {
    let (a, listener) = scripted_platform().await;
    let (app, _app_rx) = endpoint(&a, "app").await;
    let req =
        OutgoingRequest::new(Method::Invite, "sip:bob@contoso.test").from("<sip:app@contoso.test>");
    let mut call = a.invite(app, req).await.unwrap();
    let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut proxy = ScriptedProxy::new(stream);
    let inv = proxy.read().await;
    assert!(inv.starts_with("INVITE "), "{inv}");
    proxy.answer(&inv, "180 Ringing", "b1").await;
    match tokio::time::timeout(WAIT, call.next()).await.unwrap() {
        Some(InviteProgress::Provisional(_)) => {}
        other => panic!("{other:?}"),
    }
    // The connection to the proxy is lost.
    drop(proxy);
    let outcome = tokio::time::timeout(WAIT, call.next()).await.unwrap();
    assert!(
        matches!(outcome, Some(InviteProgress::Failed(_))),
        "{outcome:?}"
    );
    // The callee answers; the proxy sends the 2xx to the platform's listener.
    let ok = response(&inv, "200 OK", "b1");
    let a_tcp = a
        .listen_addr(collaboration_platform::ListenerKind::Tcp)
        .unwrap();
    let mut back = tokio::net::TcpStream::connect(a_tcp).await.unwrap();
    use tokio::io::AsyncWriteExt;
    back.write_all(ok.as_bytes()).await.unwrap();
    // The ACK goes to the outbound proxy, on a new connection.
    let got = tokio::time::timeout(Duration::from_secs(3), listener.accept()).await;
    let Ok(Ok((stream, _))) = got else {
        panic!("the 2xx that came after the transport failure was never ACKed (no connection to the proxy)");
    };
    let mut proxy = ScriptedProxy::new(stream);
    let m = tokio::time::timeout(Duration::from_secs(3), proxy.read()).await;
    match m {
        Ok(m) => assert!(m.starts_with("ACK "), "{m}"),
        Err(_) => panic!("the 2xx that came after the transport failure was never ACKed"),
    }
    // The caller gave up on the call: it is ended.
    let bye = proxy.read().await;
    assert!(bye.starts_with("BYE "), "{bye}");
    drop(back);
}

/// Our INVITE rings; we cancel; the CANCEL gets no answer and no final response comes within
/// 64·T1 (the INVITE ends with Timer::Cancel); then the 2xx comes. It must be ACKed and
/// ended with BYE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_after_the_cancel_timed_out_is_acked() {
    let (a, listener) = scripted_platform().await;
    let (app, _app_rx) = endpoint(&a, "app").await;
    let req =
        OutgoingRequest::new(Method::Invite, "sip:bob@contoso.test").from("<sip:app@contoso.test>");
    let mut call = a.invite(app, req).await.unwrap();
    let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut proxy = ScriptedProxy::new(stream);
    let inv = proxy.read().await;
    proxy.answer(&inv, "180 Ringing", "b1").await;
    match tokio::time::timeout(WAIT, call.next()).await.unwrap() {
        Some(InviteProgress::Provisional(_)) => {}
        other => panic!("{other:?}"),
    }
    call.cancel().await;
    let cancel = proxy.read().await;
    assert!(cancel.starts_with("CANCEL "), "{cancel}");
    // No answer to anything for 64*T1 = 640 ms.
    let outcome = tokio::time::timeout(WAIT, call.next()).await.unwrap();
    assert!(
        matches!(outcome, Some(InviteProgress::Failed(_))),
        "{outcome:?}"
    );
    proxy.answer(&inv, "200 OK", "b1").await;
    let m = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            let m = proxy.read().await;
            if !m.starts_with("CANCEL ") {
                return m;
            }
        }
    })
    .await;
    match m {
        Ok(m) => assert!(m.starts_with("ACK "), "{m}"),
        Err(_) => panic!("the 2xx after the CANCEL timed out was never ACKed"),
    }
    let bye = proxy.read().await;
    assert!(bye.starts_with("BYE "), "{bye}");
}

/// An INVITE given to `send_request` (a plain request, no dialog): its 2xx must still be
/// ACKed (RFC 3261 §13.2.2.4), which only `invite` does. It used to go out as a plain
/// request: the caller got the 2xx, no ACK was sent, and the callee's call hung until
/// its 64·T1 ran out. Refused now ([`RequestError::Invalid`]), before anything is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_request_refuses_an_invite_whose_2xx_it_would_never_ack() {
    let (a, listener) = scripted_platform().await;
    let req =
        OutgoingRequest::new(Method::Invite, "sip:bob@contoso.test").from("<sip:app@contoso.test>");
    let sent = tokio::spawn(async move {
        let r = a.send_request(req).await;
        (a, r)
    });
    if let Ok(Ok((stream, _))) =
        tokio::time::timeout(Duration::from_millis(500), listener.accept()).await
    {
        let mut proxy = ScriptedProxy::new(stream);
        let inv = proxy.read().await;
        assert!(inv.starts_with("INVITE "), "{inv}");
        proxy.answer(&inv, "200 OK", "b1").await;
        let (_a, r) = tokio::time::timeout(WAIT, sent).await.unwrap().unwrap();
        let ack = tokio::time::timeout(Duration::from_secs(2), proxy.read()).await;
        panic!(
            "send_request sent the INVITE (outcome {:?}); the next message: {:?}",
            r.map(|m| m.status()),
            ack.map_err(|_| "none within 2 s (the 2xx was never ACKed)")
        );
    }
    let (_a, r) = tokio::time::timeout(WAIT, sent).await.unwrap().unwrap();
    assert!(
        matches!(r, Err(collaboration_platform::RequestError::Invalid(_))),
        "{r:?}"
    );
}

/// An INVITE built whole by the caller whose Via has no branch: the transaction layer
/// gives it one, and the handle must name that branch (it is what `cancel` finds the
/// INVITE by). It named "" instead: two such INVITEs shared the key, and cancelling one
/// cancelled the other (or nothing, once the other had ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_built_without_a_branch_is_named_by_the_branch_it_goes_with() {
    let (a, listener) = scripted_platform().await;
    let (app, _app_rx) = endpoint(&a, "app").await;
    let whole = |call_id: &str| {
        let raw = format!(
            "INVITE sip:bob@contoso.test SIP/2.0\r\n\
             Via: SIP/2.0/TCP 127.0.0.1:5060\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:app@contoso.test>;tag=a1\r\n\
             To: <sip:bob@contoso.test>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:app@127.0.0.1:5060;transport=tcp>\r\n\
             Content-Length: 0\r\n\r\n"
        );
        sip_core::SipMessage::parse_datagram(raw.into(), &sip_core::Limits::default()).unwrap()
    };
    let first = a.invite(app, whole("c1@contoso.test")).await.unwrap();
    let second = a.invite(app, whole("c2@contoso.test")).await.unwrap();
    let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut proxy = ScriptedProxy::new(stream);
    let inv1 = proxy.read().await;
    let inv2 = proxy.read().await;
    let branch_of = |m: &str| {
        header(m, "Via")
            .split(';')
            .find_map(|p| p.trim().strip_prefix("branch="))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        (first.branch(), second.branch()),
        (branch_of(&inv1).as_str(), branch_of(&inv2).as_str())
    );
    // Both ring; cancelling the first cancels the first.
    proxy.answer(&inv1, "180 Ringing", "b1").await;
    proxy.answer(&inv2, "180 Ringing", "b2").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    first.cancel().await;
    let cancel = proxy.request("CANCEL").await;
    assert_eq!(header(&cancel, "Call-ID"), "c1@contoso.test", "{cancel}");
}
