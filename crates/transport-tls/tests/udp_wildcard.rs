//! UDP listeners bound to the unspecified address (0.0.0.0, `[::]`) on Linux: the local
//! address reported is the one a datagram was sent to, and the answers leave from it (RFC
//! 3581 §4). The peer is a *connected* UDP socket, which takes datagrams only from the
//! address it is connected to, as a NAT or a strict client does. Every 127.0.0.0/8 address
//! is local on Linux, so a request to 127.0.0.2 answered from the kernel's choice
//! (127.0.0.1) would never reach it. Real sockets.
#![cfg(target_os = "linux")]

mod common;

use std::net::SocketAddr;

use common::*;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::Receiver;
use transport_tls::{ReceivedMessage, SipTransport, TransportEvent, TransportSettings};

async fn next_message(rx: &mut Receiver<TransportEvent>) -> ReceivedMessage {
    next_event(rx, |e| match e {
        TransportEvent::Message(m) => Some(m),
        _ => None,
    })
    .await
}

fn options(via: &str) -> Vec<u8> {
    format!(
        "OPTIONS sip:app@contoso.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP {via};rport;branch=z9hG4bK-wild\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:fe@contoso.test>;tag=w1\r\n\
         To: <sip:app@contoso.test>\r\n\
         Call-ID: wild@contoso.test\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A UDP socket bound at `bind` and connected to `to`.
async fn connected(bind: &str, to: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind(bind).await.unwrap();
    s.connect(to).await.unwrap();
    s
}

/// The next datagram on a connected socket, or a panic after a bounded wait.
async fn answer(client: &UdpSocket) -> String {
    let mut buf = vec![0u8; 65_536];
    let n = tokio::time::timeout(WAIT, client.recv(&mut buf))
        .await
        .expect("no answer on the connected socket: sent from another address?")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Sends an OPTIONS from `client` and answers it twice: by `reply`, and by `send_udp_from`
/// with the local address reported (as the platform's transaction layer does). Both must
/// come back from `dest`, which is also the local address reported.
async fn options_answered_from(
    b: &SipTransport,
    rx: &mut Receiver<TransportEvent>,
    client: &UdpSocket,
    dest: SocketAddr,
) {
    let via = client.local_addr().unwrap().to_string();
    client.send(&options(&via)).await.unwrap();
    let got = next_message(rx).await;
    assert_eq!(
        got.local, dest,
        "the local address is where the request was sent"
    );
    let resp = sip_core::SipMessage::response_to(&got.message, 200, "OK").unwrap();
    b.reply(&got, &resp).await.unwrap();
    assert!(answer(client).await.starts_with("SIP/2.0 200 OK\r\n"));
    let to = transport_tls::udp_response_to(&resp, got.remote);
    b.send_udp_from(got.local, to, &resp).await.unwrap();
    assert!(answer(client).await.starts_with("SIP/2.0 200 OK\r\n"));
}

#[tokio::test]
async fn an_ipv4_wildcard_listener_answers_from_the_address_the_request_came_to() {
    let (b, mut rx) = SipTransport::new(TransportSettings::new()).unwrap();
    let any = b.bind_udp("0.0.0.0:0".parse().unwrap()).await.unwrap();
    assert!(any.ip().is_unspecified());
    let dest = SocketAddr::from(([127, 0, 0, 2], any.port()));
    let client = connected("127.0.0.1:0", dest).await;
    options_answered_from(&b, &mut rx, &client, dest).await;
}

/// The transport's own stateless answer to a request it refuses (here 400: the CSeq method
/// is not the request's) leaves from the request's destination too.
#[tokio::test]
async fn a_refusal_on_a_wildcard_listener_leaves_from_the_address_the_request_came_to() {
    let (b, _rx) = SipTransport::new(TransportSettings::new()).unwrap();
    let any = b.bind_udp("0.0.0.0:0".parse().unwrap()).await.unwrap();
    let dest = SocketAddr::from(([127, 0, 0, 2], any.port()));
    let client = connected("127.0.0.1:0", dest).await;
    let via = client.local_addr().unwrap().to_string();
    let bad =
        String::from_utf8(options(&via))
            .unwrap()
            .replacen("CSeq: 1 OPTIONS", "CSeq: 1 INVITE", 1);
    client.send(bad.as_bytes()).await.unwrap();
    let got = answer(&client).await;
    assert!(got.starts_with("SIP/2.0 400 "), "{got}");
    // The Warning names the address the request came to, not the wildcard.
    assert!(got.contains(&format!("399 {dest} ")), "{got}");
}

/// A dual-stack `[::]` listener and an IPv4 peer: the destination comes IPv4-mapped, and the
/// answer leaves from it.
#[tokio::test]
async fn a_dual_stack_wildcard_listener_answers_an_ipv4_peer_from_its_destination() {
    let (b, mut rx) = SipTransport::new(TransportSettings::new()).unwrap();
    let Ok(any) = b.bind_udp("[::]:0".parse().unwrap()).await else {
        eprintln!("skipped: cannot bind [::] (no IPv6 on this machine)");
        return;
    };
    let dest = SocketAddr::from(([127, 0, 0, 2], any.port()));
    let client = connected("127.0.0.1:0", dest).await;
    let mapped = SocketAddr::new(
        std::net::Ipv4Addr::new(127, 0, 0, 2)
            .to_ipv6_mapped()
            .into(),
        any.port(),
    );
    options_answered_from(&b, &mut rx, &client, mapped).await;
}

/// An IPv6 peer of a `[::]` listener: the local address reported is `[::1]`, and the
/// answers reach the connected client.
#[tokio::test]
async fn an_ipv6_wildcard_listener_reports_the_address_the_request_came_to() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: cannot bind [::1] (no IPv6 loopback on this machine)");
        return;
    }
    let (b, mut rx) = SipTransport::new(TransportSettings::new()).unwrap();
    let any = b.bind_udp("[::]:0".parse().unwrap()).await.unwrap();
    let dest: SocketAddr = format!("[::1]:{}", any.port()).parse().unwrap();
    let client = connected("[::1]:0", dest).await;
    options_answered_from(&b, &mut rx, &client, dest).await;
}
