//! `Listener::allow_untrusted_peers` opens the listener it is set on, and no other: a UDP
//! listener that takes requests from anyone does not open a TCP listener sharing its port.

use std::net::SocketAddr;
use std::time::Duration;

use collaboration_platform::loopback::LoopbackPki;
use collaboration_platform::{
    CollaborationPlatform, Listener, ListenerKind, OutboundProxy, ServerPlatformSettings, Topology,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    CollaborationPlatform::start(settings).await.unwrap()
}

/// Sends an OPTIONS over plain TCP to `to` and returns the status line of the answer.
async fn options_over_tcp(to: SocketAddr) -> String {
    let mut tcp = tokio::net::TcpStream::connect(to).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let request = format!(
        "OPTIONS sip:app@{to} SIP/2.0\r\n\
         Via: SIP/2.0/TCP {local};branch=z9hG4bK-scope-1\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:alice@contoso.test>;tag=a1\r\n\
         To: <sip:app@{to}>\r\n\
         Call-ID: scope-1@{local}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed without an answer");
            got.extend_from_slice(&buf[..n]);
            if got.windows(4).any(|w| w == b"\r\n\r\n") {
                return;
            }
        }
    })
    .await
    .expect("an answer within 10 s");
    let text = String::from_utf8_lossy(&got).into_owned();
    text.lines().next().unwrap_or_default().to_string()
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
