//! `Listener::allow_untrusted_peers` opens the listener it is set on, and no other: a UDP
//! listener that takes requests from anyone does not open a TCP listener sharing its port,
//! nor another UDP listener; a listener bound to the unspecified address is opened for
//! what arrives at any address of its family on its port. A trusted peer is known by its
//! certificate's name compared as DNS compares names (case, trailing dot).

#[path = "support/raw_tcp.rs"]
mod raw_tcp;

use std::net::SocketAddr;
use std::time::Duration;

use collaboration_platform::loopback::LoopbackPki;
use collaboration_platform::{
    CollaborationPlatform, Identity, Listener, ListenerKind, OutboundProxy, ServerPlatformSettings,
    Topology,
};
use sip_core::{HeaderName, Method, SipMessage};
use transport_tls::{SipTransport, Target, TlsClientSettings, TransportEvent, TransportSettings};

/// A loopback port free for both TCP and UDP.
fn shared_port() -> SocketAddr {
    for _ in 0..50 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = tcp.local_addr().unwrap();
        if std::net::UdpSocket::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no loopback port free for both TCP and UDP");
}

async fn platform(listeners: Vec<Listener>) -> CollaborationPlatform {
    let pki = LoopbackPki::new().expect("CA");
    start(&pki, listeners, |s| s).await
}

/// The platform `app.contoso.test` with `listeners`, its settings adjusted by `configure`.
async fn start(
    pki: &LoopbackPki,
    listeners: Vec<Listener>,
    configure: impl FnOnce(ServerPlatformSettings) -> ServerPlatformSettings,
) -> CollaborationPlatform {
    let mut settings = ServerPlatformSettings::new(
        "ucma-rs listener trust test",
        "app.contoso.test",
        pki.identity("app.contoso.test").unwrap(),
        pki.roots(),
        OutboundProxy::tcp("127.0.0.1:9".parse().unwrap()),
    )
    .topology(Topology::new(["contoso.test"]));
    for l in listeners {
        settings = settings.listen(l);
    }
    CollaborationPlatform::start(configure(settings))
        .await
        .unwrap()
}

/// Sends an OPTIONS over plain TCP to `to` and returns the status line of the answer.
async fn options_over_tcp(to: SocketAddr) -> String {
    raw_tcp::tcp_status_line(to, |local| {
        format!(
            "OPTIONS sip:app@{to} SIP/2.0\r\n\
         Via: SIP/2.0/TCP {local};branch=z9hG4bK-scope-1\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@contoso.test>;tag=a1\r\n\
         To: <sip:app@{to}>\r\n\
         Call-ID: scope-1@{local}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
        )
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_udp_listener_does_not_open_the_tcp_listener_on_its_port() {
    let addr = shared_port();
    let p = platform(vec![
        Listener::tcp(addr),
        Listener::udp(addr).allow_untrusted_peers(),
    ])
    .await;
    assert_eq!(p.listen_addr(ListenerKind::Tcp), Some(addr));
    let status = options_over_tcp(addr).await;
    assert!(
        status.starts_with("SIP/2.0 403"),
        "a stranger over the closed TCP listener got {status:?}"
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_tcp_listener_takes_requests_from_anyone() {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let p = platform(vec![Listener::tcp(loopback).allow_untrusted_peers()]).await;
    let status = options_over_tcp(p.listen_addr(ListenerKind::Tcp).unwrap()).await;
    assert!(status.starts_with("SIP/2.0 200"), "{status:?}");
    p.shutdown().await;
}

/// Sends an OPTIONS by UDP to `to` and returns the status line of the answer.
async fn options_over_udp(to: SocketAddr) -> String {
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let local = udp.local_addr().unwrap();
    let request = format!(
        "OPTIONS sip:app@{to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};rport;branch=z9hG4bK-udp-{port}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@contoso.test>;tag=a1\r\n\
         To: <sip:app@{to}>\r\n\
         Call-ID: udp-{port}@{local}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
        port = to.port()
    );
    udp.send_to(request.as_bytes(), to).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), udp.recv_from(&mut buf))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines().next().unwrap_or_default().to_string()
}

/// The bound addresses of `p`'s listeners of `kind`, in the order they were given.
fn addrs(p: &CollaborationPlatform, kind: ListenerKind) -> Vec<SocketAddr> {
    p.listen_addrs()
        .into_iter()
        .filter(|(k, _)| *k == kind)
        .map(|(_, a)| a)
        .collect()
}

/// A datagram has no connection to say which listener took it: the socket it arrived at
/// does. Before, one open UDP listener opened every UDP listener of the platform.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_udp_listener_does_not_open_another_udp_listener() {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let p = platform(vec![
        Listener::udp(loopback).allow_untrusted_peers(),
        Listener::udp(loopback),
    ])
    .await;
    let [open, closed] = addrs(&p, ListenerKind::Udp)[..] else {
        panic!("two UDP listeners: {:?}", p.listen_addrs());
    };
    let status = options_over_udp(closed).await;
    assert!(
        status.starts_with("SIP/2.0 403"),
        "a stranger over the closed UDP listener got {status:?}"
    );
    let status = options_over_udp(open).await;
    assert!(status.starts_with("SIP/2.0 200"), "{status:?}");
    p.shutdown().await;
}

/// The same, the closed listener given first (the one UDP is sent from).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_udp_listener_stays_closed_beside_an_open_one_given_after_it() {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let p = platform(vec![
        Listener::udp(loopback),
        Listener::udp(loopback).allow_untrusted_peers(),
    ])
    .await;
    let [closed, open] = addrs(&p, ListenerKind::Udp)[..] else {
        panic!("two UDP listeners: {:?}", p.listen_addrs());
    };
    let status = options_over_udp(closed).await;
    assert!(status.starts_with("SIP/2.0 403"), "{status:?}");
    let status = options_over_udp(open).await;
    assert!(status.starts_with("SIP/2.0 200"), "{status:?}");
    p.shutdown().await;
}

/// A listener bound to 0.0.0.0 (port 0: the system picks it) is open for a connection
/// made to 127.0.0.1 on its port: the connection's local address is the interface's, not
/// the wildcard. Before, such a listener answered everyone 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_tcp_listener_on_the_unspecified_address_takes_requests_from_anyone() {
    let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let p = platform(vec![Listener::tcp(any).allow_untrusted_peers()]).await;
    let bound = p.listen_addr(ListenerKind::Tcp).unwrap();
    assert!(bound.ip().is_unspecified() && bound.port() != 0, "{bound}");
    let to = SocketAddr::from(([127, 0, 0, 1], bound.port()));
    let status = options_over_tcp(to).await;
    assert!(status.starts_with("SIP/2.0 200"), "{status:?}");
    p.shutdown().await;
}

/// The wildcard listener opens only its own port and transport: a closed TCP listener on
/// another port stays closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_wildcard_listener_does_not_open_another_port() {
    let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let p = platform(vec![
        Listener::tcp(any).allow_untrusted_peers(),
        Listener::tcp(loopback),
        Listener::udp(any).allow_untrusted_peers(),
        Listener::udp(loopback),
    ])
    .await;
    let [_, closed] = addrs(&p, ListenerKind::Tcp)[..] else {
        panic!("two TCP listeners: {:?}", p.listen_addrs());
    };
    let status = options_over_tcp(closed).await;
    assert!(status.starts_with("SIP/2.0 403"), "{status:?}");
    let [open_udp, closed_udp] = addrs(&p, ListenerKind::Udp)[..] else {
        panic!("two UDP listeners: {:?}", p.listen_addrs());
    };
    let status = options_over_udp(closed_udp).await;
    assert!(status.starts_with("SIP/2.0 403"), "{status:?}");
    let to = SocketAddr::from(([127, 0, 0, 1], open_udp.port()));
    let status = options_over_udp(to).await;
    assert!(status.starts_with("SIP/2.0 200"), "{status:?}");
    p.shutdown().await;
}

/// Sends an OPTIONS over mutual TLS to `to`, presenting `identity`; the final status.
async fn options_over_tls(pki: &LoopbackPki, identity: Identity, to: SocketAddr) -> u16 {
    let tls = TlsClientSettings::new(pki.roots()).identity(identity);
    let (t, mut events) =
        SipTransport::new(TransportSettings::new().tls_client(tls).keep_alive(None)).unwrap();
    let request = SipMessage::request(Method::Options, "sip:app@contoso.test")
        .header(
            HeaderName::Via,
            "SIP/2.0/TLS 127.0.0.1:1;branch=z9hG4bK-fe-1",
        )
        .header(HeaderName::MaxForwards, "70")
        .header(HeaderName::From, "<sip:alice@contoso.test>;tag=a1")
        .header(HeaderName::To, "<sip:app@contoso.test>")
        .header(HeaderName::CallId, "fe-1")
        .header(HeaderName::CSeq, "1 OPTIONS")
        .build()
        .unwrap();
    t.send(&Target::tls(to, "app.contoso.test"), &request)
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await.expect("transport open") {
                TransportEvent::Message(m) if m.message.status().is_some() => {
                    return m.message.status().unwrap();
                }
                TransportEvent::Closed { reason, .. } => panic!("closed: {reason}"),
                _ => {}
            }
        }
    })
    .await
    .expect("an answer within 10 s");
    t.shutdown();
    status
}

/// A trusted peer named as an absolute name (trailing dot) or in another case is the
/// certificate's name all the same (DNS names know neither). Before, the front end
/// `fe.contoso.test` configured as `FE.Contoso.Test.` got 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_peer_named_with_a_trailing_dot_is_trusted() {
    let pki = LoopbackPki::new().expect("CA");
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let p = start(&pki, vec![Listener::mutual_tls(loopback)], |s| {
        s.trusted_peer("FE.Contoso.Test.")
    })
    .await;
    let to = p.listen_addr(ListenerKind::MutualTls).unwrap();
    let fe = options_over_tls(&pki, pki.identity("fe.contoso.test").unwrap(), to).await;
    assert_eq!(fe, 200, "the trusted front end");
    // Someone else with a certificate from the same CA is still refused.
    let other = options_over_tls(&pki, pki.identity("other.contoso.test").unwrap(), to).await;
    assert_eq!(other, 403, "a peer that is not trusted");
    p.shutdown().await;
}
