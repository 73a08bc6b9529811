//! 2,000 concurrent mutual-TLS connections accepted, served and closed cleanly, on loopback.
//! The clients are plain tokio-rustls connections (independent of the transport's client
//! side), all held open at once before they close.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Barrier, Semaphore};
use transport_tls::{
    CloseReason, SipTransport, TlsServerSettings, TransportEvent, TransportLimits,
    TransportSettings,
};

const N: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_concurrent_tls_connections() {
    // Both ends live in this process: 2 descriptors per connection, plus slack. Raise the
    // soft limit up to the hard limit if needed (root in CI may raise the hard one too).
    let needed = (2 * N + 256) as u64;
    let soft = rlimit::increase_nofile_limit(needed).unwrap_or(0);
    assert!(
        soft >= needed,
        "open-files limit {soft} < {needed}: raise `ulimit -n`"
    );
    let ca = Ca::new("Root");
    let fe = ca.leaf(&["fe.contoso.test"]);
    let app = ca.leaf(&["app.contoso.test"]);
    let limits = TransportLimits {
        max_connections: 2 * N,
        max_connections_per_ip: 2 * N,
        handshake_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let (srv, mut rx) =
        SipTransport::new(TransportSettings::new().limits(limits).event_capacity(4096)).unwrap();
    let addr = srv
        .listen_tls(
            localhost(),
            &TlsServerSettings::mutual(fe.identity, ca.roots()),
        )
        .await
        .unwrap();

    // The server application: answer every request 200 on its connection; count closes.
    let app_srv = srv.clone();
    let server_app = tokio::spawn(async move {
        let (mut opened, mut served, mut closed) = (0usize, 0usize, 0usize);
        while closed < N {
            match rx.recv().await {
                Some(TransportEvent::Opened(_)) => opened += 1,
                Some(TransportEvent::Message(m)) => {
                    assert_eq!(
                        m.peer().unwrap().common_name.as_deref(),
                        Some("app.contoso.test")
                    );
                    let ok = sip_core::SipMessage::response_to(&m.message, 200, "OK").unwrap();
                    app_srv.reply(&m, &ok).await.unwrap();
                    served += 1;
                }
                Some(TransportEvent::Closed { reason, .. }) => {
                    assert_eq!(reason, CloseReason::PeerClosed);
                    closed += 1;
                }
                Some(TransportEvent::Failed { error, .. }) => panic!("failed: {error}"),
                Some(_) => {}
                None => break,
            }
        }
        (opened, served, closed)
    });

    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates({
        let mut r = rustls::RootCertStore::empty();
        r.add(rustls_pki_types::CertificateDer::from(
            rustls_pki_types::pem::PemObject::from_pem_slice(ca.pem().as_bytes())
                .map(|c: rustls_pki_types::CertificateDer<'static>| c.to_vec())
                .unwrap(),
        ))
        .unwrap();
        r
    })
    .with_client_auth_cert(
        vec![rustls_pki_types::pem::PemObject::from_pem_slice(app.cert_pem.as_bytes()).unwrap()],
        rustls_pki_types::pem::PemObject::from_pem_slice(app.key_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    cfg.resumption = rustls::client::Resumption::disabled();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));

    let all_open = Arc::new(Barrier::new(N + 1));
    let release = Arc::new(Semaphore::new(0));
    let connecting = Arc::new(Semaphore::new(128)); // stay within the listen backlog
    let mut clients = Vec::with_capacity(N);
    for n in 0..N {
        let (connector, all_open, release, connecting) = (
            connector.clone(),
            all_open.clone(),
            release.clone(),
            connecting.clone(),
        );
        clients.push(tokio::spawn(async move {
            let permit = connecting.acquire_owned().await.unwrap();
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut tls = connector
                .connect(ServerName::try_from("fe.contoso.test").unwrap(), tcp)
                .await
                .unwrap();
            tls.write_all(&message_request(n as u32 + 1, 500, "TLS 127.0.0.1:5061"))
                .await
                .unwrap();
            let mut buf = vec![0u8; 4096];
            let k = tls.read(&mut buf).await.unwrap();
            assert!(buf[..k].starts_with(b"SIP/2.0 200 OK\r\n"));
            drop(permit);
            all_open.wait().await;
            let _ = release.acquire().await.unwrap();
            tls.shutdown().await.unwrap();
        }));
    }
    within(Duration::from_secs(240), all_open.wait()).await;
    assert_eq!(srv.connection_count(), N, "all connections open at once");
    release.add_permits(N);
    for c in clients {
        within(Duration::from_secs(60), c).await.unwrap();
    }
    let (opened, served, closed) = within(Duration::from_secs(60), server_app).await.unwrap();
    assert_eq!((opened, served, closed), (N, N, N));
    within(Duration::from_secs(10), async {
        while srv.connection_count() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}
