//! Mutual TLS on loopback with a CA made at run time: success, and each refusal as a typed
//! error and a tracing event.

mod common;

use std::time::Duration;

use common::*;
use transport_tls::{
    ClientAuth, CloseReason, Direction, Identity, KeyLog, SipTransport, Target, TlsClientSettings,
    TlsRefusal, TlsServerSettings, TlsVersions, TransportError, TransportEvent, TransportSettings,
    TrustRoots,
};

const FE: &str = "fe.contoso.test";
const APP: &str = "app.contoso.test";

struct Pki {
    ca: Ca,
    server: Leaf,
    client: Leaf,
}

fn pki() -> Pki {
    let ca = Ca::new("Contoso Test Root");
    let server = ca.leaf(&[FE, "pool.contoso.test"]);
    let client = ca.leaf(&[APP]);
    Pki { ca, server, client }
}

async fn server(
    settings: TlsServerSettings,
) -> (
    SipTransport,
    tokio::sync::mpsc::Receiver<TransportEvent>,
    std::net::SocketAddr,
) {
    let (t, rx) = SipTransport::new(TransportSettings::new()).unwrap();
    let addr = t.listen_tls(localhost(), &settings).await.unwrap();
    (t, rx, addr)
}

fn client(tls: TlsClientSettings) -> (SipTransport, tokio::sync::mpsc::Receiver<TransportEvent>) {
    SipTransport::new(TransportSettings::new().tls_client(tls)).unwrap()
}

/// The refusal reported by the server side.
async fn server_refusal(rx: &mut tokio::sync::mpsc::Receiver<TransportEvent>) -> TlsRefusal {
    next_event(rx, |e| match e {
        TransportEvent::Failed {
            direction: Direction::Inbound,
            error: TransportError::Tls { refusal, .. },
            ..
        } => Some(refusal),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn mutual_tls_succeeds_and_hands_up_both_identities() {
    let p = pki();
    let (srv, mut srx, addr) = server(TlsServerSettings::mutual(
        p.server.identity.clone(),
        p.ca.roots(),
    ))
    .await;
    let (cli, mut crx) = client(TlsClientSettings::new(p.ca.roots()).identity(p.client.identity));
    let target = Target::tls(addr, FE);
    let conn = within(WAIT, cli.connect(&target)).await.unwrap();
    let info = cli.connection(conn).unwrap();
    let server_peer = info.peer.as_ref().expect("server identity");
    assert_eq!(
        server_peer.dns_names,
        vec![FE.to_string(), "pool.contoso.test".into()]
    );
    assert_eq!(server_peer.common_name.as_deref(), Some(FE));

    let req = message_request(1, 500, "TLS 127.0.0.1:5061");
    cli.send(&target, &parsed(&req)).await.unwrap();
    let got = next_event(&mut srx, |e| match e {
        TransportEvent::Message(m) => Some(m),
        _ => None,
    })
    .await;
    assert_eq!(&got.message.to_bytes()[..], &req[..]);
    let peer = got.peer().expect("client identity with the message");
    assert_eq!(peer.dns_names, vec![APP.to_string()]);
    assert!(peer.matches("APP.contoso.test"));

    // The response goes back on the same connection.
    let resp = sip_core::SipMessage::response_to(&got.message, 200, "OK").unwrap();
    srv.reply(&got, &resp).await.unwrap();
    let back = next_event(&mut crx, |e| match e {
        TransportEvent::Message(m) => Some(m),
        _ => None,
    })
    .await;
    assert_eq!(back.message.status(), Some(200));
    assert_eq!(back.connection_id(), Some(conn));

    // A second send reuses the connection.
    cli.send(&target, &parsed(&message_request(2, 300, "TLS h")))
        .await
        .unwrap();
    assert_eq!(cli.connect(&target).await.unwrap(), conn);
    assert_eq!(cli.connection_count(), 1);
}

#[tokio::test]
async fn refused_without_client_certificate() {
    let (capture, _g) = Capture::install();
    let p = pki();
    let (_srv, mut srx, addr) =
        server(TlsServerSettings::mutual(p.server.identity, p.ca.roots())).await;
    let (cli, _crx) = client(TlsClientSettings::new(p.ca.roots()));
    let target = Target::tls(addr, FE);
    // TLS 1.3: the client finishes first; the refusal reaches it as an alert afterwards.
    let _ = within(WAIT, cli.connect(&target)).await;
    assert_eq!(
        server_refusal(&mut srx).await,
        TlsRefusal::NoClientCertificate
    );
    assert!(
        capture.contains("NoClientCertificate"),
        "{:?}",
        capture.lines()
    );
}

#[tokio::test]
async fn refused_client_certificate_from_another_ca() {
    let (capture, _g) = Capture::install();
    let p = pki();
    let other = Ca::new("Fabrikam Root");
    let (_srv, mut srx, addr) =
        server(TlsServerSettings::mutual(p.server.identity, p.ca.roots())).await;
    let (cli, _crx) =
        client(TlsClientSettings::new(p.ca.roots()).identity(other.leaf(&[APP]).identity));
    let _ = within(WAIT, cli.connect(&Target::tls(addr, FE))).await;
    assert_eq!(server_refusal(&mut srx).await, TlsRefusal::UnknownIssuer);
    assert!(capture.contains("UnknownIssuer"), "{:?}", capture.lines());
}

#[tokio::test]
async fn refused_expired_client_certificate() {
    let (capture, _g) = Capture::install();
    let p = pki();
    let (_srv, mut srx, addr) =
        server(TlsServerSettings::mutual(p.server.identity, p.ca.roots())).await;
    let (cli, _crx) =
        client(TlsClientSettings::new(p.ca.roots()).identity(p.ca.expired_leaf(&[APP]).identity));
    let _ = within(WAIT, cli.connect(&Target::tls(addr, FE))).await;
    assert_eq!(server_refusal(&mut srx).await, TlsRefusal::Expired);
    assert!(capture.contains("Expired"), "{:?}", capture.lines());
}

#[tokio::test]
async fn refused_expired_server_certificate() {
    let p = pki();
    let (_srv, _srx, addr) = server(TlsServerSettings::mutual(
        p.ca.expired_leaf(&[FE]).identity,
        p.ca.roots(),
    ))
    .await;
    let (cli, _crx) = client(TlsClientSettings::new(p.ca.roots()).identity(p.client.identity));
    let err = within(WAIT, cli.connect(&Target::tls(addr, FE)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Tls {
                refusal: TlsRefusal::Expired,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn refused_server_whose_san_does_not_match_the_target() {
    let (capture, _g) = Capture::install();
    let p = pki();
    let (_srv, _srx, addr) =
        server(TlsServerSettings::mutual(p.server.identity, p.ca.roots())).await;
    let (cli, mut crx) = client(TlsClientSettings::new(p.ca.roots()).identity(p.client.identity));
    let err = within(WAIT, cli.connect(&Target::tls(addr, "edge.fabrikam.test")))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Tls {
                refusal: TlsRefusal::NameMismatch,
                ..
            }
        ),
        "{err:?}"
    );
    let failed = next_event(&mut crx, |e| match e {
        TransportEvent::Failed {
            direction: Direction::Outbound,
            error,
            ..
        } => Some(error),
        _ => None,
    })
    .await;
    assert_eq!(failed, err);
    assert!(capture.contains("NameMismatch"), "{:?}", capture.lines());
    assert_eq!(cli.connection_count(), 0);
}

#[tokio::test]
async fn client_refused_by_an_untrusted_server_ca() {
    let p = pki();
    let other = Ca::new("Other Root");
    let (_srv, _srx, addr) = server(TlsServerSettings::mutual(
        other.leaf(&[FE]).identity,
        p.ca.roots(),
    ))
    .await;
    let (cli, _crx) = client(TlsClientSettings::new(p.ca.roots()).identity(p.client.identity));
    let err = within(WAIT, cli.connect(&Target::tls(addr, FE)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Tls {
                refusal: TlsRefusal::UnknownIssuer,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn optional_client_auth_accepts_a_client_without_certificate() {
    let p = pki();
    let (_srv, mut srx, addr) = server(TlsServerSettings::new(
        p.server.identity,
        ClientAuth::Optional(p.ca.roots()),
    ))
    .await;
    let (cli, _crx) = client(TlsClientSettings::new(p.ca.roots()));
    let target = Target::tls(addr, FE);
    cli.send(&target, &parsed(&message_request(1, 400, "TLS h")))
        .await
        .unwrap();
    let got = next_event(&mut srx, |e| match e {
        TransportEvent::Message(m) => Some(m),
        _ => None,
    })
    .await;
    assert!(got.peer().is_none(), "no certificate, no identity");
}

#[tokio::test]
async fn tls12_only_and_pem_files() {
    let p = pki();
    let dir = tempfile::tempdir().unwrap();
    let w = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca = w("ca.pem", &p.ca.pem());
    let scert = w("server.pem", &p.server.cert_pem);
    let skey = w("server.key", &p.server.key_pem);
    let ccert = w("client.pem", &p.client.cert_pem);
    let ckey = w("client.key", &p.client.key_pem);
    let server_settings = TlsServerSettings::mutual(
        Identity::from_pem_files(&scert, &skey).unwrap(),
        TrustRoots::from_pem_file(&ca).unwrap(),
    )
    .versions(TlsVersions::Tls12Only);
    let (_srv, mut srx, addr) = server(server_settings).await;
    let (cli, _crx) = client(
        TlsClientSettings::new(TrustRoots::from_pem_file(&ca).unwrap())
            .identity(Identity::from_pem_files(&ccert, &ckey).unwrap()),
    );
    cli.send(
        &Target::tls(addr, FE),
        &parsed(&message_request(1, 400, "TLS h")),
    )
    .await
    .unwrap();
    let got = next_event(&mut srx, |e| match e {
        TransportEvent::Message(m) => Some(m),
        _ => None,
    })
    .await;
    assert_eq!(got.peer().unwrap().common_name.as_deref(), Some(APP));
    assert!(TrustRoots::from_pem(b"not pem").is_err());
    assert!(Identity::from_pem(p.server.cert_pem.as_bytes(), b"").is_err());
}

#[tokio::test]
async fn key_log_file_is_written_on_opt_in() {
    let p = pki();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("keys.log");
    let (_srv, mut srx, addr) =
        server(TlsServerSettings::mutual(p.server.identity, p.ca.roots())).await;
    let (cli, _crx) = client(
        TlsClientSettings::new(p.ca.roots())
            .identity(p.client.identity)
            .key_log(KeyLog::File(log.clone())),
    );
    cli.send(
        &Target::tls(addr, FE),
        &parsed(&message_request(1, 400, "TLS h")),
    )
    .await
    .unwrap();
    next_event(&mut srx, |e| {
        matches!(e, TransportEvent::Message(_)).then_some(())
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("CLIENT_HANDSHAKE_TRAFFIC_SECRET "), "{text}");
    assert!(text.lines().all(|l| l.split(' ').count() == 3));
}

#[tokio::test]
async fn handshake_timeout_cuts_a_silent_client() {
    let p = pki();
    let limits = transport_tls::TransportLimits {
        handshake_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let (srv, mut srx) = SipTransport::new(TransportSettings::new().limits(limits)).unwrap();
    let addr = srv
        .listen_tls(
            localhost(),
            &TlsServerSettings::mutual(p.server.identity, p.ca.roots()),
        )
        .await
        .unwrap();
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let err = next_event(&mut srx, |e| match e {
        TransportEvent::Failed { error, .. } => Some(error),
        _ => None,
    })
    .await;
    assert_eq!(err, TransportError::HandshakeTimeout(err_addr(&err)));
    assert_eq!(srv.connection_count(), 0);
}

fn err_addr(e: &TransportError) -> std::net::SocketAddr {
    match e {
        TransportError::HandshakeTimeout(a) => *a,
        _ => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn client_sees_the_refusal_of_its_certificate_as_a_closed_connection() {
    let p = pki();
    let other = Ca::new("Other");
    let (_srv, _srx, addr) =
        server(TlsServerSettings::mutual(p.server.identity, p.ca.roots())).await;
    let (cli, mut crx) =
        client(TlsClientSettings::new(p.ca.roots()).identity(other.leaf(&[APP]).identity));
    match within(WAIT, cli.connect(&Target::tls(addr, FE))).await {
        // TLS 1.3: the handshake completes on the client, then the server's alert closes it.
        Ok(_) => {
            let reason = next_event(&mut crx, |e| match e {
                TransportEvent::Closed { reason, .. } => Some(reason),
                _ => None,
            })
            .await;
            assert!(
                matches!(reason, CloseReason::Tls(TlsRefusal::PeerAlert(_))),
                "{reason:?}"
            );
        }
        Err(e) => assert!(matches!(e, TransportError::Tls { .. }), "{e:?}"),
    }
}

#[tokio::test]
async fn ipv6_server_name_as_a_sip_uri_writes_it_in_brackets() {
    // `sips:[::1]:5061` names its server `[::1]`: the certificate's IP SAN is `::1`.
    let pki = pki();
    let v6 = pki.ca.leaf(&["::1"]);
    let (t, _rx) = SipTransport::new(TransportSettings::new()).unwrap();
    let addr = t
        .listen_tls(
            "[::1]:0".parse().unwrap(),
            &TlsServerSettings::mutual(v6.identity, pki.ca.roots()),
        )
        .await
        .unwrap();
    let (cli, _crx) = client(TlsClientSettings::new(pki.ca.roots()).identity(pki.client.identity));
    let target = Target::tls(addr, "[::1]");
    within(WAIT, cli.connect(&target)).await.unwrap();
    assert_eq!(target.server_name.as_deref(), Some("::1"));
}
