//! Interop of the TLS layer with an independent TLS implementation: Debian's `openssl
//! s_server` and `openssl s_client` (OpenSSL 3), run as child processes, with and without
//! client certificates. The children are killed at the end of each test (and on drop).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use transport_tls::{
    ClientAuth, CloseReason, Confirmation, Direction, SipTransport, Target, TlsClientSettings,
    TlsRefusal, TlsServerSettings, TransportError, TransportEvent, TransportSettings,
};

const OPENSSL: &str = "openssl";
const FE: &str = "fe.contoso.test";

struct Files {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// Writes the CA and an OpenSSL-side certificate (names: `name`) to a temporary folder.
fn files(ca: &Ca, name: &str) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let leaf = ca.leaf(&[name]);
    let w = |file: &str, text: &str| {
        let p = dir.path().join(file);
        std::fs::write(&p, text).unwrap();
        p
    };
    Files {
        ca: w("ca.pem", &ca.pem()),
        cert: w("cert.pem", &leaf.cert_pem),
        key: w("key.pem", &leaf.key_pem),
        _dir: dir,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Starts `openssl s_server` and waits for its `ACCEPT` line.
async fn s_server(f: &Files, require_client_cert: bool) -> (Child, u16) {
    let port = free_port();
    let mut cmd = Command::new(OPENSSL);
    cmd.args(["s_server", "-accept", &format!("127.0.0.1:{port}")])
        .args([
            "-cert",
            p(&f.cert),
            "-key",
            p(&f.key),
            "-CAfile",
            p(&f.ca),
            "-naccept",
            "1",
        ]);
    if require_client_cert {
        cmd.args(["-Verify", "2", "-verify_return_error"]);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl on PATH (Debian package openssl)");
    let stdout = child.stdout.as_mut().unwrap();
    let mut lines = BufReader::new(stdout);
    within(WAIT, async {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                lines.read_line(&mut line).await.unwrap() > 0,
                "s_server exited"
            );
            if line.starts_with("ACCEPT") {
                break;
            }
        }
    })
    .await;
    (child, port)
}

/// Reads the child's stdout until `needle` appears or it closes; returns what was read.
async fn stdout_until(child: &mut Child, needle: &str) -> String {
    let out = child.stdout.as_mut().unwrap();
    let mut text = Vec::new();
    let _ = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        loop {
            match out.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => text.extend_from_slice(&buf[..n]),
            }
            if String::from_utf8_lossy(&text).contains(needle) {
                break;
            }
        }
    })
    .await;
    String::from_utf8_lossy(&text).into_owned()
}

#[tokio::test]
async fn our_client_with_certificate_to_openssl_s_server_requiring_one() {
    let ca = Ca::new("Root");
    let f = files(&ca, FE);
    let (mut server, port) = s_server(&f, true).await;
    let app = ca.leaf(&["app.contoso.test"]);
    let (cli, mut rx) = SipTransport::new(
        TransportSettings::new()
            .tls_client(TlsClientSettings::new(ca.roots()).identity(app.identity)),
    )
    .unwrap();
    let target = Target::tls(format!("127.0.0.1:{port}").parse().unwrap(), FE);
    let req = message_request(1, 500, "TLS 127.0.0.1:5061");
    cli.send(&target, &parsed(&req)).await.unwrap();
    let seen = stdout_until(&mut server, "xxxx").await;
    assert!(
        seen.contains("MESSAGE sip:app@contoso.test SIP/2.0"),
        "{seen}"
    );
    assert!(seen.contains("Call-ID: c1@contoso.test"), "{seen}");

    // What s_server sends (its stdin) is framed and parsed on our side.
    let resp = sip_core::SipMessage::response_to(&parsed(&req), 200, "OK")
        .unwrap()
        .to_bytes();
    let stdin = server.stdin.as_mut().unwrap();
    stdin.write_all(&resp).await.unwrap();
    stdin.flush().await.unwrap();
    let got = next_event(&mut rx, |e| match e {
        TransportEvent::Message(m) => Some(m),
        _ => None,
    })
    .await;
    assert_eq!(got.message.status(), Some(200));
    assert_eq!(got.peer().unwrap().common_name.as_deref(), Some(FE));
    server.kill().await.unwrap();
}

#[tokio::test]
async fn our_client_without_certificate_is_refused_by_openssl_s_server() {
    let ca = Ca::new("Root");
    let f = files(&ca, FE);
    let (mut server, port) = s_server(&f, true).await;
    let (cli, mut rx) =
        SipTransport::new(TransportSettings::new().tls_client(TlsClientSettings::new(ca.roots())))
            .unwrap();
    let target = Target::tls(format!("127.0.0.1:{port}").parse().unwrap(), FE);
    let result = within(
        WAIT,
        cli.send(&target, &parsed(&message_request(1, 300, "TLS h"))),
    )
    .await;
    match result {
        Err(e) => assert!(matches!(e, TransportError::Tls { .. }), "{e:?}"),
        // TLS 1.3: our handshake completes first; OpenSSL's alert closes the connection.
        Ok(()) => {
            let reason = next_event(&mut rx, |e| match e {
                TransportEvent::Closed { reason, .. } => Some(reason),
                _ => None,
            })
            .await;
            assert!(
                matches!(&reason, CloseReason::Tls(TlsRefusal::PeerAlert(a)) if a.contains("CertificateRequired")),
                "{reason:?}"
            );
        }
    }
    server.kill().await.unwrap();
}

#[tokio::test]
async fn our_client_without_certificate_to_openssl_s_server_not_asking() {
    let ca = Ca::new("Root");
    let f = files(&ca, FE);
    let (mut server, port) = s_server(&f, false).await;
    let (cli, _rx) =
        SipTransport::new(TransportSettings::new().tls_client(TlsClientSettings::new(ca.roots())))
            .unwrap();
    let target = Target::tls(format!("127.0.0.1:{port}").parse().unwrap(), FE);
    cli.send(&target, &parsed(&message_request(1, 300, "TLS h")))
        .await
        .unwrap();
    let seen = stdout_until(&mut server, "xxxx").await;
    assert!(
        seen.contains("MESSAGE sip:app@contoso.test SIP/2.0"),
        "{seen}"
    );
    server.kill().await.unwrap();
}

async fn our_server(
    ca: &Ca,
    auth_required: bool,
) -> (
    SipTransport,
    tokio::sync::mpsc::Receiver<TransportEvent>,
    u16,
) {
    let fe = ca.leaf(&[FE]);
    let auth = if auth_required {
        ClientAuth::Required(ca.roots())
    } else {
        ClientAuth::Optional(ca.roots())
    };
    let (srv, rx) = SipTransport::new(TransportSettings::new()).unwrap();
    let addr = srv
        .listen_tls(localhost(), &TlsServerSettings::new(fe.identity, auth))
        .await
        .unwrap();
    (srv, rx, addr.port())
}

fn s_client(port: u16, f: Option<&Files>, ca: &Path, extra: &[&str]) -> Child {
    let mut cmd = Command::new(OPENSSL);
    cmd.args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-servername",
        FE,
    ])
    .args([
        "-CAfile",
        p(ca),
        "-verify_return_error",
        "-quiet",
        "-nocommands",
    ])
    .args(extra);
    if let Some(f) = f {
        cmd.args(["-cert", p(&f.cert), "-key", p(&f.key)]);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl on PATH (Debian package openssl)")
}

async fn s_client_exchange(version_flag: &[&str]) {
    let ca = Ca::new("Root");
    let f = files(&ca, "openssl.contoso.test");
    let (srv, mut rx, port) = our_server(&ca, true).await;
    let mut client = s_client(port, Some(&f), &f.ca, version_flag);
    let req = message_request(1, 500, "TLS 127.0.0.1:5061");
    client
        .stdin
        .as_mut()
        .unwrap()
        .write_all(&req)
        .await
        .unwrap();
    client.stdin.as_mut().unwrap().flush().await.unwrap();
    let got = next_event(&mut rx, |e| match e {
        TransportEvent::Message(m) => Some(m),
        _ => None,
    })
    .await;
    assert_eq!(&got.message.to_bytes()[..], &req[..]);
    assert_eq!(
        got.peer().unwrap().common_name.as_deref(),
        Some("openssl.contoso.test")
    );
    let ok = sip_core::SipMessage::response_to(&got.message, 200, "OK").unwrap();
    srv.reply(&got, &ok).await.unwrap();
    let seen = stdout_until(&mut client, "CSeq: 1 MESSAGE").await;
    assert!(seen.starts_with("SIP/2.0 200 OK\r\n"), "{seen}");
    client.kill().await.unwrap();
}

#[tokio::test]
async fn openssl_s_client_with_certificate_to_our_mutual_listener_tls13() {
    s_client_exchange(&["-tls1_3"]).await;
}

#[tokio::test]
async fn openssl_s_client_with_certificate_to_our_mutual_listener_tls12() {
    s_client_exchange(&["-tls1_2"]).await;
}

#[tokio::test]
async fn openssl_s_client_without_certificate_is_refused_by_our_listener() {
    let ca = Ca::new("Root");
    let f = files(&ca, "openssl.contoso.test");
    let (_srv, mut rx, port) = our_server(&ca, true).await;
    let mut client = s_client(port, None, &f.ca, &[]);
    client
        .stdin
        .as_mut()
        .unwrap()
        .write_all(&message_request(1, 300, "TLS h"))
        .await
        .unwrap();
    let err = next_event(&mut rx, |e| match e {
        TransportEvent::Failed {
            direction: Direction::Inbound,
            error,
            ..
        } => Some(error),
        TransportEvent::Message(_) => panic!("a message got through"),
        _ => None,
    })
    .await;
    assert!(
        matches!(
            err,
            TransportError::Tls {
                refusal: TlsRefusal::NoClientCertificate,
                ..
            }
        ),
        "{err:?}"
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), client.wait()).await;
    let _ = client.kill().await;
}

#[tokio::test]
async fn openssl_s_client_without_certificate_to_our_optional_listener() {
    let ca = Ca::new("Root");
    let f = files(&ca, "openssl.contoso.test");
    let (_srv, mut rx, port) = our_server(&ca, false).await;
    let mut client = s_client(port, None, &f.ca, &[]);
    let req = message_request(1, 300, "TLS h");
    client
        .stdin
        .as_mut()
        .unwrap()
        .write_all(&req)
        .await
        .unwrap();
    let got = next_event(&mut rx, |e| match e {
        TransportEvent::Message(m) => Some(m),
        _ => None,
    })
    .await;
    assert!(got.peer().is_none());
    client.kill().await.unwrap();
}

// `confirm`: does the peer keep the connection after the handshake? A peer that pongs
// (our own listener answers CRLFCRLF with CRLF; Kamailio's answer is checked in
// collaboration-platform's proxy_failover tests), one that never pongs (`openssl s_server`
// prints what it gets and answers nothing), and a TLS 1.3 server that refuses our
// certificate after our side of the handshake has ended.

#[tokio::test]
async fn confirm_gets_the_pong_of_a_peer_that_pongs() {
    let ca = Ca::new("Root");
    let (_srv, _srx, port) = our_server(&ca, true).await;
    let app = ca.leaf(&["app.contoso.test"]);
    let (cli, _rx) = SipTransport::new(
        TransportSettings::new()
            .tls_client(TlsClientSettings::new(ca.roots()).identity(app.identity)),
    )
    .unwrap();
    let target = Target::tls(format!("127.0.0.1:{port}").parse().unwrap(), FE);
    let id = within(WAIT, cli.connect(&target)).await.unwrap();
    let got = within(WAIT, cli.confirm(id, Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(got, Confirmation::Ponged);
    // Again on the same connection: each call pings anew.
    let got = within(WAIT, cli.confirm(id, Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(got, Confirmation::Ponged);
    assert_eq!(cli.established(&target), Some(id));
}

#[tokio::test]
async fn confirm_is_silent_for_openssl_s_server_which_never_pongs() {
    let ca = Ca::new("Root");
    let f = files(&ca, FE);
    let (mut server, port) = s_server(&f, true).await;
    let app = ca.leaf(&["app.contoso.test"]);
    let (cli, _rx) = SipTransport::new(
        TransportSettings::new()
            .tls_client(TlsClientSettings::new(ca.roots()).identity(app.identity)),
    )
    .unwrap();
    let target = Target::tls(format!("127.0.0.1:{port}").parse().unwrap(), FE);
    let (id, got) = within(
        WAIT,
        cli.connect_confirmed(&target, Duration::from_millis(500)),
    )
    .await
    .unwrap();
    assert_eq!(got, Confirmation::Silent);
    // Not a failure: the connection is kept and carries SIP.
    assert_eq!(cli.established(&target), Some(id));
    cli.send(&target, &parsed(&message_request(1, 300, "TLS h")))
        .await
        .unwrap();
    let seen = stdout_until(&mut server, "xxxx").await;
    assert!(
        seen.contains("MESSAGE sip:app@contoso.test SIP/2.0"),
        "{seen}"
    );
    server.kill().await.unwrap();
}

#[tokio::test]
async fn confirm_reports_a_tls13_refusal_of_our_certificate() {
    let ca = Ca::new("Root");
    let f = files(&ca, FE);
    let (mut server, port) = s_server(&f, true).await;
    // No certificate of ours: s_server requires one and says so by alert.
    let (cli, mut rx) =
        SipTransport::new(TransportSettings::new().tls_client(TlsClientSettings::new(ca.roots())))
            .unwrap();
    let target = Target::tls(format!("127.0.0.1:{port}").parse().unwrap(), FE);
    let err = within(WAIT, cli.connect_confirmed(&target, Duration::from_secs(5)))
        .await
        .unwrap_err();
    match &err {
        TransportError::Tls {
            refusal: TlsRefusal::PeerAlert(a),
            ..
        } => assert_eq!(a, "CertificateRequired"),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("refused our certificate"), "{err}");
    // Under TLS 1.3 the handshake itself succeeded: the connection opened, then closed.
    let first = within(WAIT, rx.recv()).await.unwrap();
    assert!(matches!(first, TransportEvent::Opened(_)), "{first:?}");
    assert_eq!(cli.established(&target), None);
    server.kill().await.unwrap();
}

#[tokio::test]
async fn confirm_of_a_connection_already_gone_says_it_is_closed() {
    let ca = Ca::new("Root");
    let (_srv, _srx, port) = our_server(&ca, true).await;
    let app = ca.leaf(&["app.contoso.test"]);
    let (cli, _rx) = SipTransport::new(
        TransportSettings::new()
            .tls_client(TlsClientSettings::new(ca.roots()).identity(app.identity)),
    )
    .unwrap();
    let target = Target::tls(format!("127.0.0.1:{port}").parse().unwrap(), FE);
    let id = within(WAIT, cli.connect(&target)).await.unwrap();
    cli.close(id);
    // Closed before it was announced, so no event: wait until it left the tables.
    within(WAIT, async {
        while cli.connection(id).is_some() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let err = cli.confirm(id, Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(err, TransportError::ConnectionClosed(id.0));
}
