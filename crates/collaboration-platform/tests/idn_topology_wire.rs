//! A federation partner configured by its internationalised name (`bücher.example`) is the
//! partner whose requests arrive written in ASCII (`xn--bcher-kva.example`, the only form
//! a SIP URI's host takes): blocked or allowed the same either way.

#[path = "support/raw_tcp.rs"]
mod raw_tcp;

use std::net::SocketAddr;

use collaboration_platform::loopback::LoopbackPki;
use collaboration_platform::{
    Address, CollaborationPlatform, FederationPolicy, Listener, ListenerKind, OutboundProxy,
    ServerPlatformSettings, Topology,
};

/// `app.contoso.test`, open to anyone over plain TCP, with `topology`; `bob@contoso.test`
/// answers 200 to whatever reaches him.
async fn platform(topology: Topology) -> CollaborationPlatform {
    let pki = LoopbackPki::new().expect("CA");
    let settings = ServerPlatformSettings::new(
        "ucma-rs IDN topology test",
        "app.contoso.test",
        pki.identity("app.contoso.test").unwrap(),
        pki.roots(),
        OutboundProxy::tcp("127.0.0.1:9".parse().unwrap()),
    )
    .topology(topology)
    .listen(Listener::tcp("127.0.0.1:0".parse().unwrap()).allow_untrusted_peers());
    let p = CollaborationPlatform::start(settings).await.unwrap();
    let owner = Address::assume_on_premises("sip:bob@contoso.test").unwrap();
    let (_, mut bob) = p.register_endpoint(owner, None, false).await.unwrap();
    tokio::spawn(async move {
        while let Some(mut r) = bob.recv().await {
            let _ = r.respond(200, "OK", &[], None).await;
        }
    });
    p
}

/// Sends a MESSAGE from `from` to bob over TCP and returns the status line of the answer.
async fn message_from(p: &CollaborationPlatform, from: &str) -> String {
    let to: SocketAddr = p.listen_addr(ListenerKind::Tcp).unwrap();
    raw_tcp::tcp_status_line(to, |local| {
        format!(
            "MESSAGE sip:bob@contoso.test SIP/2.0\r\n\
         Via: SIP/2.0/TCP {local};branch=z9hG4bK-idn-1\r\n\
         Max-Forwards: 70\r\n\
         From: <{from}>;tag=e1\r\n\
         To: <sip:bob@contoso.test>\r\n\
         Call-ID: idn-1@{local}\r\n\
         CSeq: 1 MESSAGE\r\n\
         Content-Type: text/plain\r\n\
         Content-Length: 2\r\n\r\nhi"
        )
    })
    .await
}

/// Blocked as `bücher.example`: a caller of `xn--bcher-kva.example` gets 403 and bob hears
/// nothing of it. Before, the block list missed the ASCII form and bob got the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_blocked_by_its_unicode_name_is_blocked_on_the_wire() {
    let p = platform(Topology::new(["contoso.test"]).block("Bücher.example")).await;
    let status = message_from(&p, "sip:eve@xn--bcher-kva.example").await;
    assert!(status.starts_with("SIP/2.0 403"), "{status:?}");
    // Another partner still gets through.
    let status = message_from(&p, "sip:erin@tailspin.test").await;
    assert!(status.starts_with("SIP/2.0 200"), "{status:?}");
    p.shutdown().await;
}

/// Allowed as `bücher.example` (federation with listed partners only): its callers are
/// taken. Before, they were refused 403 as partners not allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_allowed_by_its_unicode_name_is_allowed_on_the_wire() {
    let allowed = FederationPolicy::AllowList(["bücher.example".to_string()].into_iter().collect());
    let p = platform(Topology::new(["contoso.test"]).with_policy(allowed)).await;
    let status = message_from(&p, "sip:eve@xn--bcher-kva.example").await;
    assert!(status.starts_with("SIP/2.0 200"), "{status:?}");
    let status = message_from(&p, "sip:erin@tailspin.test").await;
    assert!(status.starts_with("SIP/2.0 403"), "{status:?}");
    p.shutdown().await;
}
