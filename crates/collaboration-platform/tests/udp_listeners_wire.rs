//! A platform with several UDP listeners answers a request from the listener it arrived
//! at (RFC 3261 §18.2.2, RFC 3581 §4: symmetric response routing): a NAT, or a peer that
//! matches responses by where it sent its request, drops a response from another port.
//! Before, every datagram left from the first UDP listener bound. Raw UDP sockets as the
//! peers; the second listener is the one talked to, so the first one cannot pass for it.
use std::net::SocketAddr;
use std::time::Duration;

use collaboration_platform::loopback::{pair, LoopbackPki};
use collaboration_platform::{
    CollaborationPlatform, Listener, ListenerKind, OutboundProxy, ServerPlatformSettings, Topology,
};
use tokio::net::UdpSocket;

// Not its scripted proxy: part of what the test files share is unused in each.
#[allow(dead_code)]
mod support;
use support::{endpoint, header, next, WAIT};

/// The bound addresses of `p`'s UDP listeners, in the order they were given.
fn udp_listeners(p: &CollaborationPlatform) -> Vec<SocketAddr> {
    p.listen_addrs()
        .into_iter()
        .filter(|(k, _)| *k == ListenerKind::Udp)
        .map(|(_, a)| a)
        .collect()
}

/// Two UDP listeners on 127.0.0.1 that take requests from anyone.
fn two_udp_listeners() -> [Listener; 2] {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    [
        Listener::udp(loopback).allow_untrusted_peers(),
        Listener::udp(loopback).allow_untrusted_peers(),
    ]
}

/// The next datagram on `socket` within [`WAIT`], and where it came from.
async fn datagram(socket: &UdpSocket) -> (String, SocketAddr) {
    let mut buf = vec![0u8; 65_536];
    let (n, from) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
        .await
        .expect("a datagram within the wait")
        .unwrap();
    (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
}

/// An OPTIONS from `socket` to `to`; the status line of the answer and where it came from.
async fn options(socket: &UdpSocket, to: SocketAddr, n: u32) -> (String, SocketAddr) {
    let me = socket.local_addr().unwrap();
    let request = format!(
        "OPTIONS sip:app@{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};rport;branch=z9hG4bK-opt-{n}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@contoso.test>;tag=a1\r\n\
         To: <sip:app@{to}>\r\n\
         Call-ID: opt-{n}@{me}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    socket.send_to(request.as_bytes(), to).await.unwrap();
    let (text, from) = datagram(socket).await;
    (text.lines().next().unwrap_or_default().to_string(), from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_by_udp_leaves_from_the_listener_the_request_arrived_at() {
    let pki = LoopbackPki::new().expect("CA");
    let mut settings = ServerPlatformSettings::new(
        "ucma-rs UDP listeners test",
        "app.contoso.test",
        pki.identity("app.contoso.test").unwrap(),
        pki.roots(),
        OutboundProxy::tcp("127.0.0.1:9".parse().unwrap()),
    )
    .topology(Topology::new(["contoso.test"]));
    for l in two_udp_listeners() {
        settings = settings.listen(l);
    }
    let p = CollaborationPlatform::start(settings).await.unwrap();
    let [first, second] = udp_listeners(&p)[..] else {
        panic!("two UDP listeners: {:?}", p.listen_addrs());
    };
    let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (status, from) = options(&peer, second, 1).await;
    assert!(status.starts_with("SIP/2.0 200"), "{status:?}");
    assert_eq!(from, second, "answered from {from}, asked at {second}");
    // And the first listener still answers from itself.
    let (status, from) = options(&peer, first, 2).await;
    assert!(status.starts_with("SIP/2.0 200"), "{status:?}");
    assert_eq!(from, first);
    p.shutdown().await;
}

/// The final responses to an INVITE by UDP, and their retransmissions, leave from the
/// listener the INVITE arrived at: a non-2xx retransmitted by the server transaction
/// (Timer G, RFC 3261 §17.2.1), a 2xx retransmitted by the UAS core (§13.3.1.4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invites_final_responses_and_their_retransmissions_leave_from_its_listener() {
    let pki = LoopbackPki::new().expect("CA");
    // T1 = 50 ms: retransmissions come soon, and 64·T1 (3.2 s) leaves the test time to
    // read them before the platform gives up on the ACK.
    let timers = sip_core::transaction::TransactionConfig {
        t1: Duration::from_millis(50),
        t2: Duration::from_millis(200),
        ..Default::default()
    };
    let (_a, b) = pair(&pki, "app.contoso.test", "bob.contoso.test", |me, s| {
        let s = s
            .topology(Topology::new(["contoso.test"]))
            .transaction_timers(timers);
        if me == "bob.contoso.test" {
            let [l1, l2] = two_udp_listeners();
            s.listen(l1).listen(l2)
        } else {
            s
        }
    })
    .await
    .expect("platforms");
    let [_, second] = udp_listeners(&b)[..] else {
        panic!("two UDP listeners: {:?}", b.listen_addrs());
    };
    let (_bob, mut bob_rx) = endpoint(&b, "bob").await;
    let carol = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = carol.local_addr().unwrap();
    let contact = format!("<{}>", b.contact_uri("bob").unwrap());

    for (call_id, status) in [("busy@test", 486), ("ok@test", 200)] {
        let invite = format!(
            "INVITE sip:bob@contoso.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bK-{call_id}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:carol@contoso.test>;tag=c1\r\n\
             To: <sip:bob@contoso.test>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:carol@{me}>\r\n\
             Content-Length: 0\r\n\r\n"
        );
        carol.send_to(invite.as_bytes(), second).await.unwrap();
        let mut inv = next(&mut bob_rx).await;
        inv.respond(status, "Answer", &[("Contact", &contact)], None)
            .await
            .unwrap();
        // Everything for this call (100 Trying, the final response, then that again with
        // no ACK) comes from the listener the INVITE arrived at.
        let mut finals = Vec::new();
        while finals.len() < 2 {
            let (text, from) = datagram(&carol).await;
            if header(&text, "Call-ID") != call_id {
                continue; // the previous call's last retransmission
            }
            assert_eq!(from, second, "{text}");
            if text.starts_with(&format!("SIP/2.0 {status} ")) {
                finals.push(text);
            }
        }
        assert_eq!(finals[0], finals[1], "a retransmission");
        // The ACK ends the retransmissions: a non-2xx's is in its INVITE's transaction
        // (same branch, RFC 3261 §17.1.1.3), a 2xx's is a transaction of its own.
        let branch = if status == 200 {
            format!("{call_id}-ack")
        } else {
            call_id.to_string()
        };
        let to = header(&finals[0], "To");
        let ack = format!(
            "ACK sip:bob@contoso.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bK-{branch}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:carol@contoso.test>;tag=c1\r\n\
             To: {to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 ACK\r\n\
             Content-Length: 0\r\n\r\n"
        );
        carol.send_to(ack.as_bytes(), second).await.unwrap();
    }
    b.shutdown().await;
}

/// A platform whose one UDP listener, bound at `any` (an unspecified address), takes
/// requests from anyone.
async fn wildcard_platform(any: &str) -> CollaborationPlatform {
    let pki = LoopbackPki::new().expect("CA");
    let settings = ServerPlatformSettings::new(
        "ucma-rs wildcard UDP listener test",
        "app.contoso.test",
        pki.identity("app.contoso.test").unwrap(),
        pki.roots(),
        OutboundProxy::tcp("127.0.0.1:9".parse().unwrap()),
    )
    .topology(Topology::new(["contoso.test"]))
    .listen(Listener::udp(any.parse().unwrap()).allow_untrusted_peers());
    CollaborationPlatform::start(settings).await.unwrap()
}

/// An OPTIONS to 127.0.0.2 on `p`'s wildcard UDP listener from a socket *connected* there,
/// which takes datagrams from 127.0.0.2 only: the 200 must leave from the address the
/// request was sent to (RFC 3581 §4), not the one the kernel's routing picks (127.0.0.1).
async fn options_to_127_0_0_2(p: &CollaborationPlatform) {
    let [any] = udp_listeners(p)[..] else {
        panic!("one UDP listener: {:?}", p.listen_addrs());
    };
    assert!(any.ip().is_unspecified(), "{any}");
    let dest = SocketAddr::from(([127, 0, 0, 2], any.port()));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.connect(dest).await.unwrap();
    let (status, from) = options(&client, dest, 7).await;
    assert!(status.starts_with("SIP/2.0 200"), "{status:?}");
    assert_eq!(from, dest);
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_udp_listener_answers_from_the_address_the_request_came_to() {
    let p = wildcard_platform("0.0.0.0:0").await;
    options_to_127_0_0_2(&p).await;
    p.shutdown().await;
}

/// The same on a dual-stack `[::]` listener, whose IPv4 peers arrive IPv4-mapped.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_wildcard_udp_listener_answers_from_the_address_the_request_came_to() {
    if std::net::UdpSocket::bind("[::]:0").is_err() {
        eprintln!("skipped: cannot bind [::] (no IPv6 on this machine)");
        return;
    }
    let p = wildcard_platform("[::]:0").await;
    options_to_127_0_0_2(&p).await;
    p.shutdown().await;
}
