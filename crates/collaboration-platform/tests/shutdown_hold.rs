//! A shutdown held for an endpoint (`hold_shutdown_for`) waits only while the endpoint can
//! still let go of its route: one whose receiver is gone (the platform forgot it at its
//! next request, 480) holds nothing.

use std::net::SocketAddr;
use std::time::Duration;

use collaboration_platform::loopback::LoopbackPki;
use collaboration_platform::{
    Address, CollaborationPlatform, Listener, ListenerKind, OutboundProxy, ServerPlatformSettings,
    Topology,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

async fn platform(proxy: SocketAddr) -> CollaborationPlatform {
    let pki = LoopbackPki::new().expect("CA");
    let settings = ServerPlatformSettings::new(
        "ucma-rs shutdown test",
        "app.contoso.test",
        pki.identity("app.contoso.test").unwrap(),
        pki.roots(),
        OutboundProxy::tcp(proxy),
    )
    .listen(Listener::tcp("127.0.0.1:0".parse().unwrap()).allow_untrusted_peers())
    .topology(Topology::new(["contoso.test"]));
    CollaborationPlatform::start(settings).await.unwrap()
}

/// Sends a MESSAGE to `sip:bot@contoso.test` over TCP; returns the status line.
async fn message(p: &CollaborationPlatform) -> String {
    let addr = p.listen_addr(ListenerKind::Tcp).unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let local = s.local_addr().unwrap();
    let request = format!(
        "MESSAGE sip:bot@contoso.test SIP/2.0\r\n\
         Via: SIP/2.0/TCP {local};branch=z9hG4bK-hold-1\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:carol@contoso.test>;tag=carol\r\n\
         To: <sip:bot@contoso.test>\r\n\
         Call-ID: hold-1@test\r\n\
         CSeq: 1 MESSAGE\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: 2\r\n\r\nhi"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        let n = tokio::time::timeout(WAIT, s.read(&mut chunk))
            .await
            .expect("an answer within the wait")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            return String::from_utf8_lossy(&buf[..end]).into_owned();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_the_platform_forgot_does_not_hold_its_shutdown() {
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let p = platform(proxy.local_addr().unwrap()).await;
    let owner = Address::assume_on_premises("sip:bot@contoso.test").unwrap();
    let (id, rx) = p.register_endpoint(owner, None, false).await.unwrap();
    p.hold_shutdown_for(id).await;
    // The endpoint's receiver goes without an unregistration (a router that ended, a
    // raw-API user that dropped it): the platform forgets it at its next request.
    drop(rx);
    let status = message(&p).await;
    assert!(status.starts_with("SIP/2.0 480 "), "{status}");
    let report = tokio::time::timeout(WAIT, p.shutdown_within(Duration::from_secs(3600))).await;
    assert!(
        report.is_ok(),
        "the shutdown waited for an endpoint that can never unregister"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_whose_receiver_is_gone_does_not_hold_its_shutdown() {
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let p = platform(proxy.local_addr().unwrap()).await;
    let owner = Address::assume_on_premises("sip:bot@contoso.test").unwrap();
    let (id, rx) = p.register_endpoint(owner, None, false).await.unwrap();
    p.hold_shutdown_for(id).await;
    drop(rx);
    let report = tokio::time::timeout(WAIT, p.shutdown_within(Duration::MAX)).await;
    assert!(
        report.is_ok(),
        "the shutdown waited for an endpoint whose receiver is gone"
    );
}
