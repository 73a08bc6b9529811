//! TCP, UDP and connection management on loopback: pipelining, keep-alive, limits, RFC 5923
//! alias reuse. Real sockets; raw tokio sockets play the misbehaving peers.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc::Receiver;
use transport_tls::{
    CloseReason, ConnectionId, KeepAlive, SipTransport, Target, TlsClientSettings,
    TlsServerSettings, TransportError, TransportEvent, TransportKind, TransportLimits,
    TransportSettings,
};

async fn tcp_server(
    settings: TransportSettings,
) -> (SipTransport, Receiver<TransportEvent>, std::net::SocketAddr) {
    let (t, rx) = SipTransport::new(settings).unwrap();
    let addr = t.listen_tcp(localhost()).await.unwrap();
    (t, rx, addr)
}

async fn next_message(rx: &mut Receiver<TransportEvent>) -> transport_tls::ReceivedMessage {
    next_event(rx, |e| match e {
        TransportEvent::Message(m) => Some(m),
        _ => None,
    })
    .await
}

async fn next_close(rx: &mut Receiver<TransportEvent>) -> CloseReason {
    next_event(rx, |e| match e {
        TransportEvent::Closed { reason, .. } => Some(reason),
        _ => None,
    })
    .await
}

/// Reads until EOF (or error), bounded.
async fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = within(WAIT, s.read_to_end(&mut out)).await;
    out
}

#[tokio::test]
async fn pipelined_messages_and_ping_in_one_write() {
    let (_srv, mut rx, addr) = tcp_server(TransportSettings::new()).await;
    // Here and below, requests compared byte for byte name their real source in their Via,
    // so the transport adds no `received` (RFC 3261 §18.2.1).
    let msgs: Vec<Vec<u8>> = (1..=3)
        .map(|n| message_request(n, 200 + n as usize * 50, "TCP 127.0.0.1"))
        .collect();
    let mut raw = TcpStream::connect(addr).await.unwrap();
    let mut all = msgs.concat();
    all.extend_from_slice(b"\r\n\r\n");
    raw.write_all(&all).await.unwrap();
    for m in &msgs {
        let got = next_message(&mut rx).await;
        assert_eq!(&got.message.to_bytes()[..], &m[..]);
        assert_eq!(got.transport, TransportKind::Tcp);
        assert!(got.peer().is_none());
    }
    // The ping is answered with a single CRLF (RFC 5626 pong).
    let mut pong = [0u8; 2];
    within(WAIT, raw.read_exact(&mut pong)).await.unwrap();
    assert_eq!(&pong, b"\r\n");
}

#[tokio::test]
async fn messages_dribbled_in_small_writes() {
    let (_srv, mut rx, addr) = tcp_server(TransportSettings::new()).await;
    let m = message_request(7, 600, "TCP 127.0.0.1");
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.set_nodelay(true).unwrap();
    for chunk in m.chunks(37) {
        raw.write_all(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(&next_message(&mut rx).await.message.to_bytes()[..], &m[..]);
}

/// Short keep-alive for the tests: a ping every 80–100 ms, 200 ms for its pong.
const QUICK_KEEP_ALIVE: KeepAlive = KeepAlive {
    interval: Duration::from_millis(100),
    pong_timeout: Duration::from_millis(200),
};

#[tokio::test]
async fn peer_that_never_pongs_keeps_its_flow_and_gets_pings() {
    // A peer that reads but never answers pings (RFC 5626 promises pongs only from peers
    // that support outbound): its connection is healthy and must not be closed as dead.
    let silent = TcpListener::bind(localhost()).await.unwrap();
    let addr = silent.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let (mut s, _) = silent.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    });
    let (cli, mut rx) =
        SipTransport::new(TransportSettings::new().keep_alive(Some(QUICK_KEEP_ALIVE))).unwrap();
    let id = cli.connect(&Target::tcp(addr)).await.unwrap();
    // Several intervals and pong timeouts: still open.
    let closed = tokio::time::timeout(Duration::from_millis(1500), next_close(&mut rx)).await;
    assert!(closed.is_err(), "closed: {closed:?}");
    assert!(cli.connection(id).is_some());
    cli.shutdown();
    // Pings went on all along (they keep NAT bindings open).
    let seen = within(WAIT, peer).await.unwrap();
    assert!(seen.len() >= 3 * 4, "{} pings", seen.len() / 4);
    assert!(seen.chunks(4).all(|p| p == b"\r\n\r\n"), "{seen:?}");
}

#[tokio::test]
async fn dead_flow_is_detected_when_pongs_stop() {
    // A peer that answers the first ping, then goes silent: a missing pong now means the
    // flow is dead.
    let listener = TcpListener::bind(localhost()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut ping = [0u8; 4];
        s.read_exact(&mut ping).await.unwrap();
        assert_eq!(&ping, b"\r\n\r\n");
        s.write_all(b"\r\n").await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    });
    let (cli, mut rx) =
        SipTransport::new(TransportSettings::new().keep_alive(Some(QUICK_KEEP_ALIVE))).unwrap();
    cli.connect(&Target::tcp(addr)).await.unwrap();
    assert_eq!(next_close(&mut rx).await, CloseReason::DeadFlow);
    let seen = within(WAIT, peer).await.unwrap();
    assert_eq!(&seen[..], b"\r\n\r\n", "the peer got a second ping");
}

#[tokio::test]
async fn live_flow_is_kept_by_pongs() {
    let (_srv, _srx, addr) = tcp_server(TransportSettings::new()).await;
    let keep_alive = KeepAlive {
        interval: Duration::from_millis(50),
        pong_timeout: Duration::from_millis(300),
    };
    let limits = TransportLimits {
        idle_timeout: Duration::from_millis(400),
        ..Default::default()
    };
    let (cli, mut rx) = SipTransport::new(
        TransportSettings::new()
            .keep_alive(Some(keep_alive))
            .limits(limits),
    )
    .unwrap();
    let id = cli.connect(&Target::tcp(addr)).await.unwrap();
    // Ten intervals and more than two idle timeouts: pongs keep it open.
    let closed = tokio::time::timeout(Duration::from_millis(1000), next_close(&mut rx)).await;
    assert!(closed.is_err(), "closed: {closed:?}");
    assert!(cli.connection(id).is_some());
}

#[tokio::test]
async fn oversize_request_is_answered_513_then_closed() {
    let limits = TransportLimits {
        message: sip_core::Limits {
            max_message_size: 2000,
            ..Default::default()
        },
        ..Default::default()
    };
    let (_srv, mut rx, addr) = tcp_server(TransportSettings::new().limits(limits)).await;
    let big = message_request(1, 5000, "TCP 127.0.0.1:5999");
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(&big).await.unwrap();
    let answer = read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("SIP/2.0 513 Message Too Large\r\n"),
        "{text}"
    );
    assert!(text.contains("Call-ID: c1@contoso.test"), "{text}");
    // The peer is told why, with this side's address as the warn-agent (RFC 3261 §20.43).
    let why = format!("\r\nWarning: 399 {addr} \"message exceeds 2000 bytes\"\r\n");
    assert!(text.contains(&why), "{text}");
    assert!(matches!(next_close(&mut rx).await, CloseReason::Framing(e) if e.status() == 513));
}

#[tokio::test]
async fn request_with_too_many_headers_is_answered_513_then_closed() {
    let limits = TransportLimits {
        message: sip_core::Limits {
            max_headers: 12,
            ..Default::default()
        },
        ..Default::default()
    };
    let (_srv, mut rx, addr) = tcp_server(TransportSettings::new().limits(limits)).await;
    let m = String::from_utf8(message_request(1, 10, "TCP 127.0.0.1:5999")).unwrap();
    let (start, rest) = m.split_once("\r\n").unwrap();
    let crowded = format!("{start}\r\n{}{rest}", "X-Filler: 1\r\n".repeat(20));
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(crowded.as_bytes()).await.unwrap();
    let answer = read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("SIP/2.0 513 Message Too Large\r\n"),
        "{text}"
    );
    assert!(text.contains("Call-ID: c1@contoso.test"), "{text}");
    assert!(matches!(next_close(&mut rx).await, CloseReason::Framing(e) if e.status() == 513));
}

#[tokio::test]
async fn missing_content_length_is_answered_400_then_closed() {
    let (_srv, mut rx, addr) = tcp_server(TransportSettings::new()).await;
    let m = String::from_utf8(message_request(1, 300, "TCP h")).unwrap();
    let no_cl: String = m
        .lines()
        .filter(|l| !l.starts_with("Content-Length"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(no_cl.as_bytes()).await.unwrap();
    let answer = read_to_end(&mut raw).await;
    assert!(
        answer.starts_with(b"SIP/2.0 400 "),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert!(matches!(next_close(&mut rx).await, CloseReason::Framing(_)));
}

#[tokio::test]
async fn invalid_request_is_answered_400_and_the_connection_stays() {
    let (_srv, mut rx, addr) = tcp_server(TransportSettings::new()).await;
    let bad = "MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: 1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(bad.as_bytes()).await.unwrap();
    // Not delivered, but answered 400 (CSeq method mismatch) with its Via and Call-ID.
    let mut answer = Vec::new();
    within(WAIT, async {
        let mut buf = [0u8; 1024];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = raw.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the 400");
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("SIP/2.0 400 "), "{answer}");
    assert!(
        answer.contains("Via: SIP/2.0/TCP h;branch=z9hG4bK1"),
        "{answer}"
    );
    let why =
        format!("\r\nWarning: 399 {addr} \"CSeq method does not match the request method\"\r\n");
    assert!(answer.contains(&why), "{answer}");
    // The connection stays usable.
    let good = message_request(2, 300, "TCP 127.0.0.1");
    raw.write_all(&good).await.unwrap();
    assert_eq!(
        &next_message(&mut rx).await.message.to_bytes()[..],
        &good[..]
    );
}

#[tokio::test]
async fn slow_sender_is_cut_off() {
    let limits = TransportLimits {
        partial_message_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let (_srv, mut rx, addr) = tcp_server(TransportSettings::new().limits(limits)).await;
    let m = message_request(1, 400, "TCP h");
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(&m[..100]).await.unwrap();
    let started = std::time::Instant::now();
    let _ = read_to_end(&mut raw).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(next_close(&mut rx).await, CloseReason::SlowSender);
}

#[tokio::test]
async fn limits_of_duration_max_mean_never_and_do_not_panic() {
    // `Duration::MAX` is how a user says "no idle timeout" or "no keep-alive in practice";
    // `Instant + Duration::MAX` panics, which killed every connection's reader task.
    let never = Duration::MAX;
    let limits = TransportLimits {
        handshake_timeout: never,
        idle_timeout: never,
        partial_message_timeout: never,
        write_timeout: never,
        ..TransportLimits::DEFAULT
    };
    let keep_alive = Some(KeepAlive {
        interval: never,
        pong_timeout: never,
    });
    let settings = TransportSettings::new()
        .limits(limits)
        .keep_alive(keep_alive);
    let (srv, mut srx, addr) = tcp_server(settings.clone()).await;
    let (cli, mut crx) = SipTransport::new(settings).unwrap();
    let target = Target::tcp(addr);
    cli.send(&target, &parsed(&message_request(1, 300, "TCP h")))
        .await
        .unwrap();
    let got = next_message(&mut srx).await;
    let resp = sip_core::SipMessage::response_to(&got.message, 200, "OK").unwrap();
    srv.reply(&got, &resp).await.unwrap();
    assert_eq!(next_message(&mut crx).await.message.status(), Some(200));
}

#[tokio::test]
async fn idle_connection_is_closed() {
    let limits = TransportLimits {
        idle_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let (_srv, mut rx, addr) = tcp_server(TransportSettings::new().limits(limits)).await;
    let mut raw = TcpStream::connect(addr).await.unwrap();
    let _ = read_to_end(&mut raw).await;
    assert_eq!(next_close(&mut rx).await, CloseReason::IdleTimeout);
}

#[tokio::test]
async fn connection_limits_per_ip_and_total() {
    let limits = TransportLimits {
        max_connections_per_ip: 2,
        ..Default::default()
    };
    let (srv, mut rx, addr) = tcp_server(TransportSettings::new().limits(limits)).await;
    let _a = TcpStream::connect(addr).await.unwrap();
    let _b = TcpStream::connect(addr).await.unwrap();
    let mut c = TcpStream::connect(addr).await.unwrap();
    let err = next_event(&mut rx, |e| match e {
        TransportEvent::Failed { error, .. } => Some(error),
        _ => None,
    })
    .await;
    assert!(
        matches!(
            err,
            TransportError::TooManyConnectionsFromIp { limit: 2, .. }
        ),
        "{err:?}"
    );
    assert!(
        read_to_end(&mut c).await.is_empty(),
        "refused connection is closed"
    );
    assert_eq!(srv.connection_count(), 2);

    // The client's own total limit: one connection, a second target is refused.
    let limits = TransportLimits {
        max_connections: 1,
        ..Default::default()
    };
    let (cli, _crx) = SipTransport::new(TransportSettings::new().limits(limits)).unwrap();
    cli.connect(&Target::tcp(addr)).await.unwrap();
    let second = "127.0.0.2:1".parse().unwrap();
    let err = cli.connect(&Target::tcp(second)).await.unwrap_err();
    assert_eq!(err, TransportError::TooManyConnections { limit: 1 });
}

#[tokio::test]
async fn udp_datagrams_replies_and_the_size_rule() {
    let (a, mut arx) = SipTransport::new(TransportSettings::new()).unwrap();
    let (b, mut brx) = SipTransport::new(TransportSettings::new()).unwrap();
    a.bind_udp(localhost()).await.unwrap();
    let b_addr = b.bind_udp(localhost()).await.unwrap();
    let small = message_request(1, 800, "UDP h;rport");
    a.send(&Target::udp(b_addr), &parsed(&small)).await.unwrap();
    let got = next_message(&mut brx).await;
    assert_eq!(got.transport, TransportKind::Udp);
    assert_eq!(got.connection_id(), None);
    let resp = sip_core::SipMessage::response_to(&got.message, 200, "OK").unwrap();
    b.reply(&got, &resp).await.unwrap();
    assert_eq!(next_message(&mut arx).await.message.status(), Some(200));

    // RFC 3261 §18.1.1: over 1300 bytes (MTU unknown) a request must use TCP/TLS.
    let big = parsed(&message_request(2, 1400, "UDP 127.0.0.1"));
    let err = a.send(&Target::udp(b_addr), &big).await.unwrap_err();
    assert!(
        matches!(err, TransportError::TooLargeForUdp { limit: 1300, .. }),
        "{err:?}"
    );
    // With a known path MTU of 9000 it fits.
    let (c, _crx) = SipTransport::new(TransportSettings::new().path_mtu(9000)).unwrap();
    c.bind_udp(localhost()).await.unwrap();
    c.send(&Target::udp(b_addr), &big).await.unwrap();
    assert_eq!(
        next_message(&mut brx).await.message.to_bytes(),
        big.to_bytes()
    );
}

#[tokio::test]
async fn udp_sends_use_a_socket_of_the_targets_address_family() {
    // Bound on IPv4 first, then on IPv6: an IPv6 target is sent to from the IPv6 socket.
    let (a, _arx) = SipTransport::new(TransportSettings::new()).unwrap();
    a.bind_udp(localhost()).await.unwrap();
    let a6 = a.bind_udp("[::1]:0".parse().unwrap()).await.unwrap();
    let (b, mut brx) = SipTransport::new(TransportSettings::new()).unwrap();
    let b6 = b.bind_udp("[::1]:0".parse().unwrap()).await.unwrap();
    let b4 = b.bind_udp(localhost()).await.unwrap();
    a.send(&Target::udp(b6), &parsed(&message_request(1, 300, "UDP h")))
        .await
        .unwrap();
    let got = next_message(&mut brx).await;
    assert_eq!(got.remote, a6);
    assert_eq!(got.local, b6);
    // And IPv4 targets still go from the IPv4 socket.
    a.send(&Target::udp(b4), &parsed(&message_request(2, 300, "UDP h")))
        .await
        .unwrap();
    assert_eq!(next_message(&mut brx).await.local, b4);
}

/// RFC 3261 §18.2.2, RFC 3581 §4: a response leaves from the address and port its request
/// arrived at. `send` picks the first socket of the family, so a layer that keeps only a
/// request's addresses answers with `send_udp_from` and the address it arrived at.
#[tokio::test]
async fn send_udp_from_sends_from_the_socket_bound_at_that_address() {
    let (b, mut brx) = SipTransport::new(TransportSettings::new()).unwrap();
    let first = b.bind_udp(localhost()).await.unwrap();
    let second = b.bind_udp(localhost()).await.unwrap();
    let peer = tokio::net::UdpSocket::bind(localhost()).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    peer.send_to(&message_request(1, 300, "UDP h;rport"), second)
        .await
        .unwrap();
    let got = next_message(&mut brx).await;
    assert_eq!(got.local, second);
    let resp = sip_core::SipMessage::response_to(&got.message, 200, "OK").unwrap();
    let to = transport_tls::udp_response_to(&resp, got.remote);
    b.send_udp_from(got.local, to, &resp).await.unwrap();
    let (_, from) = tokio::time::timeout(WAIT, peer.recv_from(&mut buf))
        .await
        .expect("the response")
        .unwrap();
    assert_eq!(from, second);
    // `send` still sends from the first socket of the family.
    b.send(&Target::udp(to), &resp).await.unwrap();
    let (_, from) = tokio::time::timeout(WAIT, peer.recv_from(&mut buf))
        .await
        .expect("the response")
        .unwrap();
    assert_eq!(from, first);
    // No socket bound there: nothing to send from.
    let unbound = "127.0.0.1:1".parse().unwrap();
    let err = b.send_udp_from(unbound, to, &resp).await.unwrap_err();
    assert_eq!(err, TransportError::NoUdpSocket);
}

/// A dual-stack IPv6 socket answers an IPv4 peer: the IPv4 destination is given in the
/// IPv4-mapped form the socket needs.
#[tokio::test]
async fn send_udp_from_an_ipv6_socket_reaches_an_ipv4_peer() {
    let (b, mut brx) = SipTransport::new(TransportSettings::new()).unwrap();
    let any6 = b.bind_udp("[::]:0".parse().unwrap()).await.unwrap();
    let peer = tokio::net::UdpSocket::bind(localhost()).await.unwrap();
    let to_b = SocketAddr::from(([127, 0, 0, 1], any6.port()));
    peer.send_to(&message_request(1, 300, "UDP h;rport"), to_b)
        .await
        .unwrap();
    let got = next_message(&mut brx).await;
    let resp = sip_core::SipMessage::response_to(&got.message, 200, "OK").unwrap();
    let v4 = SocketAddr::from(([127, 0, 0, 1], peer.local_addr().unwrap().port()));
    b.send_udp_from(any6, v4, &resp).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    let (n, from) = tokio::time::timeout(WAIT, peer.recv_from(&mut buf))
        .await
        .expect("the response")
        .unwrap();
    assert_eq!(from, to_b);
    assert!(buf[..n].starts_with(b"SIP/2.0 200 OK\r\n"));
}

#[tokio::test]
async fn a_refused_udp_request_is_answered_and_an_ack_is_not() {
    let (b, _brx) = SipTransport::new(TransportSettings::new()).unwrap();
    let b_addr = b.bind_udp(localhost()).await.unwrap();
    let peer = tokio::net::UdpSocket::bind(localhost()).await.unwrap();
    // CSeq method differs from the request method: 400, with the request's Call-ID.
    let bad = "MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;rport;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: udp-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    peer.send_to(bad.as_bytes(), b_addr).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    let (n, from) = tokio::time::timeout(WAIT, peer.recv_from(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(from, b_addr);
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(
        answer.starts_with("SIP/2.0 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(answer.contains("Call-ID: udp-1\r\n"), "{answer}");
    let why =
        format!("\r\nWarning: 399 {b_addr} \"CSeq method does not match the request method\"\r\n");
    assert!(answer.contains(&why), "{answer}");
    // The same refusal for an ACK goes unanswered (an ACK has no response).
    let ack = bad
        .replace("MESSAGE sip", "ACK sip")
        .replace("Call-ID: udp-1", "Call-ID: udp-2");
    peer.send_to(ack.as_bytes(), b_addr).await.unwrap();
    let silent = tokio::time::timeout(Duration::from_millis(300), peer.recv_from(&mut buf)).await;
    assert!(silent.is_err(), "an ACK was answered");
}

/// Receives one datagram on `sock`, or `None` within a short wait.
async fn datagram(sock: &tokio::net::UdpSocket, d: Duration) -> Option<String> {
    let mut buf = vec![0u8; 65_536];
    let (n, _) = tokio::time::timeout(d, sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test]
async fn udp_responses_go_to_the_via_port_unless_rport_asks_for_the_source_port() {
    // RFC 3261 §18.2.2: without rport, a UDP response goes to the source IP and the port of
    // the Via's sent-by; RFC 3581: with rport, to the source port.
    let (b, mut brx) = SipTransport::new(TransportSettings::new()).unwrap();
    let b_addr = b.bind_udp(localhost()).await.unwrap();
    let sender = tokio::net::UdpSocket::bind(localhost()).await.unwrap();
    let listener = tokio::net::UdpSocket::bind(localhost()).await.unwrap();
    let via_port = listener.local_addr().unwrap().port();

    let req = message_request(1, 300, &format!("UDP 127.0.0.1:{via_port}"));
    sender.send_to(&req, b_addr).await.unwrap();
    let got = next_message(&mut brx).await;
    let resp = sip_core::SipMessage::response_to(&got.message, 200, "OK").unwrap();
    b.reply(&got, &resp).await.unwrap();
    let at_via = datagram(&listener, WAIT)
        .await
        .expect("the response at the Via port");
    assert!(at_via.starts_with("SIP/2.0 200 OK\r\n"), "{at_via}");

    let req = message_request(2, 300, &format!("UDP 127.0.0.1:{via_port};rport"));
    sender.send_to(&req, b_addr).await.unwrap();
    let got = next_message(&mut brx).await;
    let resp = sip_core::SipMessage::response_to(&got.message, 200, "OK").unwrap();
    b.reply(&got, &resp).await.unwrap();
    let at_source = datagram(&sender, WAIT)
        .await
        .expect("the response at the source");
    assert!(at_source.contains("CSeq: 2 MESSAGE\r\n"), "{at_source}");

    // The transport's own refusals follow the same rule.
    let bad = format!("MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{via_port};branch=z9hG4bK3\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: udp-3\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
    sender.send_to(bad.as_bytes(), b_addr).await.unwrap();
    let refusal = datagram(&listener, WAIT)
        .await
        .expect("the 400 at the Via port");
    assert!(refusal.starts_with("SIP/2.0 400 "), "{refusal}");
    assert_eq!(datagram(&sender, Duration::from_millis(100)).await, None);
}

#[tokio::test]
async fn received_and_rport_are_stamped_on_requests_by_udp() {
    // RFC 3261 §18.2.1: a sent-by that is not the source gets `received`; RFC 3581 §4: a
    // valueless `rport` gets the source port (and `received`, even if equal).
    let (b, mut brx) = SipTransport::new(TransportSettings::new()).unwrap();
    let b_addr = b.bind_udp(localhost()).await.unwrap();
    let sender = tokio::net::UdpSocket::bind(localhost()).await.unwrap();
    let port = sender.local_addr().unwrap().port();

    let req = message_request(1, 300, "UDP 192.0.2.1:5060;rport");
    sender.send_to(&req, b_addr).await.unwrap();
    let got = next_message(&mut brx).await;
    let via = got.message.top_via().unwrap();
    assert_eq!(via.received(), Some("127.0.0.1".parse().unwrap()));
    assert_eq!(via.rport(), Some(Some(port)));
    // Nothing else of the request changed.
    let text = String::from_utf8(req).unwrap();
    let stamped = text.replacen(
        "192.0.2.1:5060;rport;branch=z9hG4bK-1",
        &format!("192.0.2.1:5060;rport={port};branch=z9hG4bK-1;received=127.0.0.1"),
        1,
    );
    assert_eq!(got.message.to_bytes(), stamped.as_bytes());
    // The response copies the stamped Via and goes to the source port.
    let resp = sip_core::SipMessage::response_to(&got.message, 200, "OK").unwrap();
    b.reply(&got, &resp).await.unwrap();
    let answer = datagram(&sender, WAIT)
        .await
        .expect("the response at the source");
    assert!(
        answer.contains(&format!(
            "Via: SIP/2.0/UDP 192.0.2.1:5060;rport={port};branch=z9hG4bK-1;received=127.0.0.1\r\n"
        )),
        "{answer}"
    );

    // The sent-by address itself gets nothing.
    let req = message_request(2, 300, &format!("UDP 127.0.0.1:{port}"));
    sender.send_to(&req, b_addr).await.unwrap();
    assert_eq!(next_message(&mut brx).await.message.to_bytes(), req);

    // The transport's own refusals carry the stamp too.
    let bad = "MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP nat.example.test;rport;branch=z9hG4bK3\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: udp-3\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    sender.send_to(bad.as_bytes(), b_addr).await.unwrap();
    let refusal = datagram(&sender, WAIT)
        .await
        .expect("the 400 at the source");
    assert!(refusal.starts_with("SIP/2.0 400 "), "{refusal}");
    assert!(
        refusal.contains(&format!(
            "nat.example.test;rport={port};branch=z9hG4bK3;received=127.0.0.1\r\n"
        )),
        "{refusal}"
    );
}

#[tokio::test]
async fn received_is_stamped_on_requests_by_tcp() {
    let (srv, mut srx, addr) = tcp_server(TransportSettings::new()).await;
    let mut peer = TcpStream::connect(addr).await.unwrap();
    let req = message_request(1, 300, "TCP pc.nat.example.test:5099");
    peer.write_all(&req).await.unwrap();
    let got = next_message(&mut srx).await;
    let via = got.message.top_via().unwrap();
    assert_eq!(via.received(), Some("127.0.0.1".parse().unwrap()));
    assert_eq!(via.rport(), None);
    let resp = sip_core::SipMessage::response_to(&got.message, 200, "OK").unwrap();
    srv.reply(&got, &resp).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = within(WAIT, peer.read(&mut buf)).await.unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(
        answer.contains(
            "Via: SIP/2.0/TCP pc.nat.example.test:5099;branch=z9hG4bK-1;received=127.0.0.1\r\n"
        ),
        "{answer}"
    );
}

#[tokio::test]
async fn local_close_and_shutdown() {
    let (srv, mut srx, addr) = tcp_server(TransportSettings::new()).await;
    let (cli, mut crx) = SipTransport::new(TransportSettings::new()).unwrap();
    let id = cli.connect(&Target::tcp(addr)).await.unwrap();
    cli.send_on(id, &parsed(&message_request(1, 300, "TCP h")))
        .await
        .unwrap();
    next_message(&mut srx).await;
    cli.close(id);
    assert_eq!(next_close(&mut crx).await, CloseReason::Local);
    assert_eq!(next_close(&mut srx).await, CloseReason::PeerClosed);
    assert!(cli
        .send_on(id, &parsed(&message_request(2, 300, "TCP h")))
        .await
        .is_err());

    let id2 = cli.connect(&Target::tcp(addr)).await.unwrap();
    assert_ne!(id, id2);
    // Wait until the server has accepted it, then shut the server down.
    next_event(&mut srx, |e| {
        matches!(e, TransportEvent::Opened(_)).then_some(())
    })
    .await;
    srv.shutdown();
    assert_eq!(next_close(&mut srx).await, CloseReason::Shutdown);
    assert_eq!(next_close(&mut crx).await, CloseReason::PeerClosed);
    // The slot is released before `Closed` is reported.
    assert_eq!(srv.connection_count(), 0);
    // No new outbound connection after shutdown...
    assert_eq!(
        srv.connect(&Target::tcp(addr)).await,
        Err(TransportError::Shutdown)
    );
    // ...and the listener goes away (its task ends asynchronously: retry until refused).
    within(WAIT, async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Dropping every clone without `shutdown()` closes the connections and frees the port.
#[tokio::test]
async fn dropping_every_handle_shuts_the_transport_down() {
    let (srv, mut rx, addr) = tcp_server(TransportSettings::new()).await;
    let clone = srv.clone();
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(&message_request(1, 300, "TCP 127.0.0.1"))
        .await
        .unwrap();
    next_message(&mut rx).await;
    // A clone left: the same transport, still running.
    drop(srv);
    raw.write_all(&message_request(2, 300, "TCP 127.0.0.1"))
        .await
        .unwrap();
    next_message(&mut rx).await;
    drop(clone);
    // The event receiver outlives the handles: the close is reported.
    assert_eq!(next_close(&mut rx).await, CloseReason::Shutdown);
    let mut buf = [0u8; 64];
    assert_eq!(within(WAIT, raw.read(&mut buf)).await.unwrap(), 0);
    // The listener's task ends asynchronously: retry until the port can be bound again.
    within(WAIT, async {
        while TcpListener::bind(addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A client dropped without `shutdown()` closes its flows, which pings would keep open.
#[tokio::test]
async fn dropped_client_closes_its_keep_alive_flows() {
    let (_srv, mut srx, addr) = tcp_server(TransportSettings::new()).await;
    let keep_alive = KeepAlive {
        interval: Duration::from_millis(100),
        pong_timeout: Duration::from_millis(300),
    };
    let (cli, crx) =
        SipTransport::new(TransportSettings::new().keep_alive(Some(keep_alive))).unwrap();
    cli.connect(&Target::tcp(addr)).await.unwrap();
    opened(&mut srx).await;
    drop(cli);
    drop(crx);
    assert_eq!(next_close(&mut srx).await, CloseReason::PeerClosed);
}

/// `shutdown()` with no listener still refuses new connections; a later drop is harmless.
#[tokio::test]
async fn shutdown_without_listeners_refuses_new_connections() {
    let (_srv, _srx, addr) = tcp_server(TransportSettings::new()).await;
    let (cli, _crx) = SipTransport::new(TransportSettings::new()).unwrap();
    let clone = cli.clone();
    cli.shutdown();
    assert_eq!(
        clone.connect(&Target::tcp(addr)).await,
        Err(TransportError::Shutdown)
    );
    drop(cli);
    drop(clone);
}

/// A front end (TLS listener and client, certificate `fe.contoso.test`) and an application
/// connected to it (certificate `app.contoso.test`); the id is the application's connection.
async fn front_and_app() -> (
    SipTransport,
    Receiver<TransportEvent>,
    SipTransport,
    Receiver<TransportEvent>,
    ConnectionId,
) {
    let ca = Ca::new("Root");
    let fe = ca.leaf(&["fe.contoso.test"]);
    let app = ca.leaf(&["app.contoso.test"]);
    // The front end: listens for TLS, and can also connect out.
    let (front, frx) = SipTransport::new(
        TransportSettings::new()
            .tls_client(TlsClientSettings::new(ca.roots()).identity(fe.identity.clone())),
    )
    .unwrap();
    let fe_addr = front
        .listen_tls(
            localhost(),
            &TlsServerSettings::mutual(fe.identity, ca.roots()),
        )
        .await
        .unwrap();
    let (appt, arx) = SipTransport::new(
        TransportSettings::new()
            .tls_client(TlsClientSettings::new(ca.roots()).identity(app.identity)),
    )
    .unwrap();
    let app_conn = appt
        .connect(&Target::tls(fe_addr, "fe.contoso.test"))
        .await
        .unwrap();
    (front, frx, appt, arx, app_conn)
}

/// A request from the application whose top Via has `sent_by`, with `;alias` if asked.
fn request_via(n: u32, sent_by: SocketAddr, alias: bool) -> sip_core::SipMessage {
    let req = String::from_utf8(message_request(n, 300, &format!("TLS {sent_by}"))).unwrap();
    let branch = format!(";branch=z9hG4bK-{n}");
    let req = if alias {
        req.replacen(&branch, &format!("{branch};alias"), 1)
    } else {
        req
    };
    parsed(req.as_bytes())
}

/// A TCP listener that counts the connections it accepts and drops each at once, so that a
/// TLS send to it fails fast and the count shows that a new connection was tried.
async fn sentinel() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind(localhost()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    (addr, n)
}

#[tokio::test]
async fn rfc5923_alias_lets_the_server_reuse_the_inbound_connection() {
    let (front, mut frx, appt, mut arx, app_conn) = front_and_app().await;
    let fe_target = Target::tls(appt.connection(app_conn).unwrap().remote, "fe.contoso.test");
    // The address the application advertises: a listener of ours, so that a send which does
    // not reuse the application's connection connects there (and fails) instead of elsewhere.
    let (advertised, tried) = sentinel().await;
    let to_app = parsed(&message_request(9, 300, "TLS fe.contoso.test"));

    // Without alias: no reuse; a send to the advertised address opens a new connection.
    appt.send(&fe_target, &request_via(1, advertised, false))
        .await
        .unwrap();
    next_message(&mut frx).await;
    let app_name = Target::tls(advertised, "app.contoso.test");
    assert_eq!(front.established(&app_name), None);
    assert!(within(WAIT, front.send(&app_name, &to_app)).await.is_err());
    assert_eq!(
        tried.load(Ordering::SeqCst),
        1,
        "a new connection was tried"
    );

    // With alias: the front end's request to the application's advertised address needs no
    // new connection, it arrives on the application's own outbound connection.
    appt.send(&fe_target, &request_via(2, advertised, true))
        .await
        .unwrap();
    next_message(&mut frx).await;
    within(WAIT, front.send(&app_name, &to_app)).await.unwrap();
    let got = next_message(&mut arx).await;
    assert_eq!(got.connection_id(), Some(app_conn));
    assert_eq!(front.connection_count(), 1);
    assert_eq!(tried.load(Ordering::SeqCst), 1);

    // For a name the certificate does not carry: no reuse either.
    let other_name = Target::tls(advertised, "other.contoso.test");
    assert_eq!(front.established(&other_name), None);
    assert!(within(WAIT, front.send(&other_name, &to_app))
        .await
        .is_err());
    assert_eq!(
        tried.load(Ordering::SeqCst),
        2,
        "a new connection was tried"
    );
    assert_eq!(front.connection_count(), 1);
}

#[tokio::test]
async fn ipv4_peers_of_a_dual_stack_listener_are_known_by_their_ipv4_address() {
    // A listener on [::] (dual stack) sees IPv4 peers as ::ffff:a.b.c.d. The peer's address
    // must be its IPv4 one, or an alias by name is filed under an address no target has.
    let ca = Ca::new("Root");
    let fe = ca.leaf(&["fe.contoso.test"]);
    let app = ca.leaf(&["app.contoso.test"]);
    let (front, mut frx) = SipTransport::new(
        TransportSettings::new()
            .tls_client(TlsClientSettings::new(ca.roots()).identity(fe.identity.clone())),
    )
    .unwrap();
    let any6: SocketAddr = "[::]:0".parse().unwrap();
    let fe_port = front
        .listen_tls(any6, &TlsServerSettings::mutual(fe.identity, ca.roots()))
        .await
        .unwrap()
        .port();
    let (appt, mut arx) = SipTransport::new(
        TransportSettings::new()
            .tls_client(TlsClientSettings::new(ca.roots()).identity(app.identity)),
    )
    .unwrap();
    let fe_target = Target::tls(
        SocketAddr::from(([127, 0, 0, 1], fe_port)),
        "fe.contoso.test",
    );
    let app_conn = appt.connect(&fe_target).await.unwrap();
    let (advertised, tried) = sentinel().await;
    let req = message_request(
        1,
        300,
        &format!("TLS app.contoso.test:{};alias", advertised.port()),
    );
    appt.send(&fe_target, &parsed(&req)).await.unwrap();
    let got = next_message(&mut frx).await;

    let app_name = Target::tls(advertised, "app.contoso.test");
    let to_app = parsed(&message_request(9, 300, "TLS fe.contoso.test"));
    within(WAIT, front.send(&app_name, &to_app)).await.unwrap();
    assert_eq!(next_message(&mut arx).await.connection_id(), Some(app_conn));
    assert_eq!(
        tried.load(Ordering::SeqCst),
        0,
        "a new connection was tried"
    );
    assert_eq!(got.remote.ip(), advertised.ip());
}

#[tokio::test]
async fn rfc5923_alias_for_another_ip_than_the_connections_is_refused() {
    let (front, mut frx, appt, _arx, app_conn) = front_and_app().await;
    let info = appt.connection(app_conn).unwrap();
    let fe_target = Target::tls(info.remote, "fe.contoso.test");
    assert_eq!(
        info.local.ip(),
        "127.0.0.1".parse::<std::net::IpAddr>().unwrap()
    );
    // The application's certificate is trusted, but it may not claim flows to another host.
    let elsewhere: SocketAddr = "127.0.0.2:5061".parse().unwrap();
    appt.send(&fe_target, &request_via(1, elsewhere, true))
        .await
        .unwrap();
    next_message(&mut frx).await;
    assert_eq!(
        front.established(&Target::tls(elsewhere, "app.contoso.test")),
        None
    );
    // Its own address: accepted on the same connection, so the refusal above is the IP
    // check's doing.
    let own = SocketAddr::new(info.local.ip(), 5061);
    appt.send(&fe_target, &request_via(2, own, true))
        .await
        .unwrap();
    next_message(&mut frx).await;
    assert!(front
        .established(&Target::tls(own, "app.contoso.test"))
        .is_some());
}

/// A new alias sent-by replaces the connection's previous alias: entries do not pile up.
#[tokio::test]
async fn rfc5923_alias_moves_with_the_sent_by_and_does_not_accumulate() {
    let (front, mut frx, appt, _arx, app_conn) = front_and_app().await;
    let info = appt.connection(app_conn).unwrap();
    let fe_target = Target::tls(info.remote, "fe.contoso.test");
    let sent_by = |port: u16| SocketAddr::new(info.local.ip(), port);
    let aliased = |port: u16| front.established(&Target::tls(sent_by(port), "app.contoso.test"));
    let ports: Vec<u16> = (0..20).map(|i| 10_000 + i).collect();
    for (n, &port) in ports.iter().enumerate() {
        appt.send(&fe_target, &request_via(n as u32, sent_by(port), true))
            .await
            .unwrap();
        next_message(&mut frx).await;
        assert!(aliased(port).is_some(), "the latest sent-by is an alias");
    }
    let held: Vec<u16> = ports
        .iter()
        .copied()
        .filter(|&p| aliased(p).is_some())
        .collect();
    assert_eq!(held, [10_019], "one connection holds aliases for {held:?}");
    // A request without `alias` leaves the alias where it is.
    appt.send(&fe_target, &request_via(99, sent_by(10_500), false))
        .await
        .unwrap();
    next_message(&mut frx).await;
    assert!(aliased(10_019).is_some());
    assert!(aliased(10_500).is_none());
}

#[tokio::test]
async fn try_send_raw_queues_on_an_established_connection_and_gives_bytes_back_otherwise() {
    let (_srv, mut rx, addr) = tcp_server(TransportSettings::new()).await;
    let (cli, _crx) = SipTransport::new(TransportSettings::new()).unwrap();
    let target = Target::tcp(addr);
    assert_eq!(cli.established(&target), None, "nothing connected yet");
    let id = cli.connect(&target).await.unwrap();
    assert_eq!(cli.established(&target), Some(id));
    let bytes = bytes::Bytes::from(message_request(7, 0, "TCP 127.0.0.1:5060"));
    assert_eq!(cli.try_send_raw(id, bytes.clone()), Ok(()));
    let m = within(WAIT, next_message(&mut rx)).await;
    assert_eq!(m.message.cseq().unwrap().seq(), 7);
    // An unknown or closed connection takes nothing: the caller still has its bytes.
    let unknown = transport_tls::ConnectionId(id.0 + 1000);
    assert_eq!(cli.try_send_raw(unknown, bytes.clone()), Err(bytes.clone()));
    cli.close(id);
    within(WAIT, async {
        while cli.established(&target).is_some() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(cli.try_send_raw(id, bytes.clone()), Err(bytes));
}

/// A raw client with a small receive buffer that never reads: what the server writes to it
/// backs up after a few kilobytes.
async fn non_reading_client(addr: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(addr).await.unwrap()
}

/// Queues junk on `id` until its send queue stays full: the peer does not read, so the
/// socket buffers fill up and the writer blocks.
async fn fill_send_queue(t: &SipTransport, id: ConnectionId) {
    let chunk = Bytes::from(vec![b'x'; 1 << 20]);
    let (mut refused, mut queued) = (0, 0);
    while refused < 5 {
        match t.try_send_raw(id, chunk.clone()) {
            Ok(()) => {
                refused = 0;
                queued += 1;
                assert!(queued < 64, "the peer reads after all");
            }
            Err(_) => {
                refused += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn opened(rx: &mut Receiver<TransportEvent>) -> ConnectionId {
    next_event(rx, |e| match e {
        TransportEvent::Opened(info) => Some(info.id),
        _ => None,
    })
    .await
}

/// Waits (bounded by `d`) until the transport holds no connection.
async fn no_connections_within(t: &SipTransport, d: Duration) {
    within(d, async {
        while t.connection_count() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn peer_that_pings_and_does_not_read_is_still_closed_at_idle_timeout() {
    let limits = TransportLimits {
        idle_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let (srv, mut rx, addr) =
        tcp_server(TransportSettings::new().limits(limits).send_queue(1)).await;
    let mut raw = non_reading_client(addr).await;
    let id = opened(&mut rx).await;
    fill_send_queue(&srv, id).await;
    // Pings, whose pongs do not fit in the full queue: the reader must not wait for room.
    raw.write_all(&b"\r\n\r\n".repeat(16)).await.unwrap();
    // Closed at the idle timeout (1 s), then the writer, stuck on the peer, gets at most
    // 2 s to finish.
    no_connections_within(&srv, Duration::from_millis(4500)).await;
    assert_eq!(next_close(&mut rx).await, CloseReason::IdleTimeout);
}

#[tokio::test]
async fn peer_that_does_not_read_its_answers_is_closed_by_shutdown() {
    let limits = TransportLimits {
        idle_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let (srv, mut rx, addr) =
        tcp_server(TransportSettings::new().limits(limits).send_queue(1)).await;
    let mut raw = non_reading_client(addr).await;
    let id = opened(&mut rx).await;
    fill_send_queue(&srv, id).await;
    // Answered 400 (CSeq method mismatch), but the answer does not fit in the queue.
    let bad = "MESSAGE sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: 1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
    raw.write_all(bad.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    srv.shutdown();
    // The writer, stuck on the peer, gets at most 2 s to finish.
    no_connections_within(&srv, Duration::from_secs(4)).await;
    assert_eq!(next_close(&mut rx).await, CloseReason::Shutdown);
}

#[tokio::test]
async fn shutdown_closes_connections_the_layer_above_was_not_told_of() {
    // The layer above takes no events: the first connection's `Opened` fills the channel,
    // the second waits to be announced.
    let (srv, _rx, addr) = tcp_server(TransportSettings::new().event_capacity(1)).await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    within(WAIT, async {
        while srv.connection_count() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    srv.shutdown();
    no_connections_within(&srv, Duration::from_secs(4)).await;
    // Both peers see their connection closed (end of stream, nothing sent).
    let mut buf = [0u8; 16];
    assert_eq!(within(WAIT, first.read(&mut buf)).await.unwrap(), 0);
    assert_eq!(within(WAIT, second.read(&mut buf)).await.unwrap(), 0);
}

#[tokio::test]
async fn write_timeout_closes_a_peer_that_does_not_read() {
    let limits = TransportLimits {
        write_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let (srv, mut rx, addr) =
        tcp_server(TransportSettings::new().limits(limits).send_queue(1)).await;
    let _raw = non_reading_client(addr).await;
    let id = opened(&mut rx).await;
    let started = std::time::Instant::now();
    fill_send_queue(&srv, id).await;
    // A sender waiting for room is released with an error, not held forever.
    let waiting = {
        let srv = srv.clone();
        tokio::spawn(async move { srv.send_raw(id, Bytes::from_static(b"more")).await })
    };
    // The writer gave up: nothing to wait for, the slot is released at once.
    no_connections_within(&srv, Duration::from_secs(3)).await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(next_close(&mut rx).await, CloseReason::WriteTimeout);
    assert_eq!(
        within(WAIT, waiting).await.unwrap(),
        Err(TransportError::ConnectionClosed(id.0))
    );
}

#[tokio::test]
async fn busy_sender_whose_reads_end_mid_message_is_not_cut_off() {
    let limits = TransportLimits {
        partial_message_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let (srv, mut rx, addr) = tcp_server(TransportSettings::new().limits(limits)).await;
    // 437-byte messages in 450-byte writes: every write completes a message and ends in the
    // middle of the next one (437 and 450 align only after 437 writes).
    let msgs: Vec<Vec<u8>> = (1..=70)
        .map(|n| message_request(n, 437, "TCP 127.0.0.1"))
        .collect();
    assert!(msgs.iter().all(|m| m.len() == 437));
    let stream = msgs.concat();
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.set_nodelay(true).unwrap();
    let started = std::time::Instant::now();
    for chunk in stream.chunks(450) {
        raw.write_all(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // More than twice the partial-message timeout with a message always pending.
    assert!(started.elapsed() > Duration::from_secs(1));
    for m in &msgs {
        let got = next_event(&mut rx, |e| match e {
            TransportEvent::Message(m) => Some(m),
            TransportEvent::Closed { reason, .. } => panic!("closed: {reason:?}"),
            _ => None,
        })
        .await;
        assert_eq!(&got.message.to_bytes()[..], &m[..]);
    }
    assert_eq!(srv.connection_count(), 1);
}

/// Our wait for room in the event channel does not count against a peer's partial deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_backpressure_does_not_make_a_fast_peer_a_slow_sender() {
    let partial = Duration::from_millis(400);
    let limits = TransportLimits {
        partial_message_timeout: partial,
        ..Default::default()
    };
    // Room for one event: `Opened` fills it until the application looks.
    let settings = TransportSettings::new().limits(limits).event_capacity(1);
    let (_srv, mut rx, addr) = tcp_server(settings).await;
    let first = message_request(1, 300, "TCP 127.0.0.1");
    let second = message_request(2, 2000, "TCP 127.0.0.1");
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.set_nodelay(true).unwrap();
    // One write: the read that completes the first message ends inside the second, whose
    // clock starts while the reader waits for the application to take the first.
    raw.write_all(&[&first[..], &second[..1000]].concat())
        .await
        .unwrap();
    // The application is busy for longer than the partial-message timeout.
    tokio::time::sleep(partial * 2).await;
    let got = next_message(&mut rx).await;
    assert_eq!(got.message.cseq().unwrap().seq(), 1);
    // The rest comes soon after the application is back, as a flow-controlled peer's would.
    tokio::time::sleep(partial / 4).await;
    raw.write_all(&second[1000..]).await.unwrap();
    let got = next_event(&mut rx, |e| match e {
        TransportEvent::Message(m) => Some(m),
        TransportEvent::Closed { reason, .. } => panic!("closed: {reason:?}"),
        _ => None,
    })
    .await;
    assert_eq!(got.message.cseq().unwrap().seq(), 2);
}

#[tokio::test]
async fn concurrent_first_sends_share_one_failed_attempt() {
    // Accepts TCP and never answers the TLS handshake.
    let mute = TcpListener::bind(localhost()).await.unwrap();
    let addr = mute.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = mute.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    let handshake_timeout = Duration::from_millis(400);
    let limits = TransportLimits {
        handshake_timeout,
        ..Default::default()
    };
    let ca = Ca::new("Root");
    let (cli, mut rx) = SipTransport::new(
        TransportSettings::new()
            .limits(limits)
            .tls_client(TlsClientSettings::new(ca.roots())),
    )
    .unwrap();
    let target = Target::tls(addr, "fe.contoso.test");
    let msg = parsed(&message_request(1, 300, "TLS h"));
    let started = std::time::Instant::now();
    let sends: Vec<_> = (0..5)
        .map(|_| {
            let (cli, target, msg) = (cli.clone(), target.clone(), msg.clone());
            tokio::spawn(async move { cli.send(&target, &msg).await })
        })
        .collect();
    for s in sends {
        let r = within(WAIT, s).await.unwrap();
        assert_eq!(r, Err(TransportError::HandshakeTimeout(addr)));
    }
    // One attempt for all: about one timeout, not five in turn.
    let elapsed = started.elapsed();
    assert!(elapsed < handshake_timeout * 4, "{elapsed:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    let mut failed = 0;
    while let Ok(e) = rx.try_recv() {
        failed += matches!(e, TransportEvent::Failed { .. }) as usize;
    }
    assert_eq!(failed, 1);
    // A later send tries again.
    assert!(cli.send(&target, &msg).await.is_err());
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// A TCP connect that times out is `ConnectTimeout`, not a TLS `HandshakeTimeout`.
#[tokio::test]
async fn tcp_connect_timeout_is_reported_as_connect_timeout() {
    // A listener whose accept queue is full: further SYNs are dropped, connects hang.
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(localhost()).unwrap();
    let listener = sock.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fill = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await
        {
            fill.push(s);
        }
    }
    let limits = TransportLimits {
        handshake_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let (cli, _rx) = SipTransport::new(TransportSettings::new().limits(limits)).unwrap();
    assert_eq!(
        within(WAIT, cli.connect(&Target::tcp(addr))).await,
        Err(TransportError::ConnectTimeout(addr))
    );
    drop(listener);
}

#[tokio::test]
async fn skipped_keep_alive_ping_does_not_declare_the_flow_dead() {
    // A peer that does not read for a while (its buffers fill), then reads everything.
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.bind(localhost()).unwrap();
    let listener = sock.listen(8).unwrap();
    let addr = listener.local_addr().unwrap();
    let (go_read, read) = tokio::sync::oneshot::channel::<()>();
    let peer = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let _ = read.await;
        // Reads until a ping ends what was received: keep-alive resumed.
        let mut tail = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while !tail.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before a ping");
            tail.extend_from_slice(&buf[..n]);
            let keep = tail.len().saturating_sub(4);
            tail.drain(..keep);
        }
    });
    let keep_alive = KeepAlive {
        interval: Duration::from_millis(400),
        pong_timeout: Duration::from_millis(200),
    };
    let (cli, mut rx) = SipTransport::new(
        TransportSettings::new()
            .keep_alive(Some(keep_alive))
            .send_queue(1),
    )
    .unwrap();
    let id = cli.connect(&Target::tcp(addr)).await.unwrap();
    fill_send_queue(&cli, id).await;
    // Several intervals with the queue full: pings are skipped, and no pong is awaited.
    let closed = tokio::time::timeout(Duration::from_millis(1500), next_close(&mut rx)).await;
    assert!(closed.is_err(), "closed: {closed:?}");
    assert!(cli.connection(id).is_some());
    let _ = go_read.send(());
    within(Duration::from_secs(3), peer).await.unwrap();
}

#[tokio::test]
async fn silent_tcp_client_is_closed_after_the_handshake_timeout() {
    let limits = TransportLimits {
        handshake_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let (srv, mut rx, addr) = tcp_server(TransportSettings::new().limits(limits)).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut talker = TcpStream::connect(addr).await.unwrap();
    talker
        .write_all(&message_request(1, 300, "TCP h"))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let (remote, reason) = within(
        Duration::from_secs(3),
        next_event(&mut rx, |e| match e {
            TransportEvent::Closed { connection, reason } => Some((connection.remote, reason)),
            _ => None,
        }),
    )
    .await;
    assert_eq!(remote, silent.local_addr().unwrap());
    assert_eq!(reason, CloseReason::IdleTimeout);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(read_to_end(&mut silent).await.is_empty());
    // The one that sent something stays past the deadline (idle timeout 300 s).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(srv.connection_count(), 1);
}
