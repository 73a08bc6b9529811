//! TCP, UDP and connection management on loopback: pipelining, keep-alive, limits, RFC 5923
//! alias reuse. Real sockets; raw tokio sockets play the misbehaving peers.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::Receiver;
use transport_tls::{
    CloseReason, KeepAlive, SipTransport, Target, TlsClientSettings, TlsServerSettings,
    TransportError, TransportEvent, TransportKind, TransportLimits, TransportSettings,
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
    let msgs: Vec<Vec<u8>> = (1..=3)
        .map(|n| message_request(n, 200 + n as usize * 50, "TCP h"))
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
    let m = message_request(7, 600, "TCP h");
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.set_nodelay(true).unwrap();
    for chunk in m.chunks(37) {
        raw.write_all(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(&next_message(&mut rx).await.message.to_bytes()[..], &m[..]);
}

#[tokio::test]
async fn dead_flow_is_detected_when_no_pong_comes() {
    // A peer that reads but never answers pings.
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
    let keep_alive = KeepAlive {
        interval: Duration::from_millis(100),
        pong_timeout: Duration::from_millis(200),
    };
    let (cli, mut rx) =
        SipTransport::new(TransportSettings::new().keep_alive(Some(keep_alive))).unwrap();
    cli.send(
        &Target::tcp(addr),
        &parsed(&message_request(1, 300, "TCP h")),
    )
    .await
    .unwrap();
    assert_eq!(next_close(&mut rx).await, CloseReason::DeadFlow);
    let seen = within(WAIT, peer).await.unwrap();
    assert!(seen.ends_with(b"\r\n\r\n"), "the peer got a ping");
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
    // The connection stays usable.
    let good = message_request(2, 300, "TCP h");
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
    let small = message_request(1, 800, "UDP h");
    a.send(&Target::udp(b_addr), &parsed(&small)).await.unwrap();
    let got = next_message(&mut brx).await;
    assert_eq!(got.transport, TransportKind::Udp);
    assert_eq!(got.connection_id(), None);
    let resp = sip_core::SipMessage::response_to(&got.message, 200, "OK").unwrap();
    b.reply(&got, &resp).await.unwrap();
    assert_eq!(next_message(&mut arx).await.message.status(), Some(200));

    // RFC 3261 §18.1.1: over 1300 bytes (MTU unknown) a request must use TCP/TLS.
    let big = parsed(&message_request(2, 1400, "UDP h"));
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
    assert!(TcpStream::connect(addr).await.is_err() || srv.connection_count() == 0);
}

#[tokio::test]
async fn rfc5923_alias_lets_the_server_reuse_the_inbound_connection() {
    let ca = Ca::new("Root");
    let fe = ca.leaf(&["fe.contoso.test"]);
    let app = ca.leaf(&["app.contoso.test"]);
    // The front end: listens for TLS, and can also connect out.
    let (front, mut frx) = SipTransport::new(
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
    // The application connects to the front end and advertises alias in its Via.
    let (appt, mut arx) = SipTransport::new(
        TransportSettings::new()
            .tls_client(TlsClientSettings::new(ca.roots()).identity(app.identity)),
    )
    .unwrap();
    let app_conn = appt
        .connect(&Target::tls(fe_addr, "fe.contoso.test"))
        .await
        .unwrap();
    let advertised: std::net::SocketAddr = "127.0.0.1:45061".parse().unwrap();
    let req = String::from_utf8(message_request(1, 300, &format!("TLS {advertised}")))
        .unwrap()
        .replacen(";branch=z9hG4bK-1", ";branch=z9hG4bK-1;alias", 1);
    appt.send(
        &Target::tls(fe_addr, "fe.contoso.test"),
        &parsed(req.as_bytes()),
    )
    .await
    .unwrap();
    next_message(&mut frx).await;
    // Now the front end sends a request to the application's advertised address: no new
    // connection, it arrives on the application's own outbound connection.
    let to_app = parsed(&message_request(2, 300, "TLS fe.contoso.test"));
    within(
        WAIT,
        front.send(&Target::tls(advertised, "app.contoso.test"), &to_app),
    )
    .await
    .unwrap();
    let got = next_message(&mut arx).await;
    assert_eq!(got.connection_id(), Some(app_conn));
    assert_eq!(front.connection_count(), 1);

    // Without alias, or for a name the certificate does not carry, no reuse.
    let err = within(
        WAIT,
        front.send(&Target::tls(advertised, "other.contoso.test"), &to_app),
    )
    .await;
    assert!(err.is_err());
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
