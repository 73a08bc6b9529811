//! Helpers shared by the harness's own tests: a TLS client (transport-tls) for one request.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use peer_harness::{unique_token, CertFiles, HarnessError, TestPki};
use sip_core::{HeaderName, Method, SipMessage};
use transport_tls::{
    Identity, SipTransport, Target, TlsClientSettings, TransportEvent, TransportSettings,
    TrustRoots,
};

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

/// Runs `f` on a fresh current-thread runtime (the harness itself is blocking).
pub fn block_on<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// What became of a request sent over TLS.
#[derive(Debug)]
pub enum TlsOutcome {
    /// A final response with this status.
    Answered(u16, SipMessage),
    /// The handshake or the connection was refused (with the reason).
    Refused(String),
}

impl TlsOutcome {
    pub fn status(&self) -> Option<u16> {
        match self {
            TlsOutcome::Answered(s, _) => Some(*s),
            TlsOutcome::Refused(_) => None,
        }
    }
}

/// A TLS client transport trusting the test CA, presenting `identity` if given.
pub fn tls_transport(
    pki: &TestPki,
    identity: Option<&CertFiles>,
) -> (SipTransport, tokio::sync::mpsc::Receiver<TransportEvent>) {
    let roots = TrustRoots::from_pem(pki.ca_pem().as_bytes()).expect("CA PEM");
    let mut tls = TlsClientSettings::new(roots);
    if let Some(id) = identity {
        tls = tls.identity(
            Identity::from_pem(id.cert_pem.as_bytes(), id.key_pem.as_bytes()).expect("identity"),
        );
    }
    SipTransport::new(TransportSettings::new().tls_client(tls).keep_alive(None)).expect("transport")
}

/// Builds an out-of-dialog request whose Via names `local` over TLS.
pub fn request(
    method: Method,
    uri: &str,
    from: &str,
    to: &str,
    local: SocketAddr,
    extra: &[(HeaderName, String)],
) -> SipMessage {
    let mut b = SipMessage::request(method.clone(), uri.to_owned())
        .header(
            HeaderName::Via,
            format!("SIP/2.0/TLS {local};rport;branch=z9hG4bK{}", unique_token()),
        )
        .header(HeaderName::MaxForwards, "70")
        .header(HeaderName::From, format!("<{from}>;tag={}", unique_token()))
        .header(HeaderName::To, format!("<{to}>"))
        .header(HeaderName::CallId, format!("{}@tls-test", unique_token()))
        .header(HeaderName::CSeq, format!("1 {}", method.as_str()));
    for (n, v) in extra {
        b = b.header(*n, v.clone());
    }
    if method == Method::Message {
        b = b.body("text/plain", "hello over TLS");
    }
    b.build().expect("valid request")
}

/// Opens a TLS connection to `addr` (server verified as `server_name`), sends the request
/// made by `make(local_addr)` and returns the final response, or the refusal.
pub async fn tls_request(
    transport: &SipTransport,
    events: &mut tokio::sync::mpsc::Receiver<TransportEvent>,
    addr: SocketAddr,
    server_name: &str,
    make: impl FnOnce(SocketAddr) -> SipMessage,
) -> TlsOutcome {
    let target = Target::tls(addr, server_name);
    let conn = match tokio::time::timeout(WAIT, transport.connect(&target)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return TlsOutcome::Refused(e.to_string()),
        Err(_) => panic!("TLS connect to {addr} timed out"),
    };
    let Some(info) = transport.connection(conn) else {
        return TlsOutcome::Refused("connection closed right after the handshake".into());
    };
    let req = make(info.local);
    if let Err(e) = transport.send_on(conn, &req).await {
        return TlsOutcome::Refused(e.to_string());
    }
    let wait = async {
        loop {
            match events.recv().await {
                Some(TransportEvent::Message(m)) if !m.message.is_request() => {
                    if m.message.status().is_some_and(|s| s >= 200) {
                        let s = m.message.status().unwrap_or_default();
                        return TlsOutcome::Answered(s, m.message);
                    }
                }
                Some(TransportEvent::Closed { connection, reason }) if connection.id == conn => {
                    return TlsOutcome::Refused(format!("closed: {reason}"));
                }
                Some(TransportEvent::Failed { error, .. }) => {
                    return TlsOutcome::Refused(format!("failed: {error}"));
                }
                Some(_) => {}
                None => return TlsOutcome::Refused("transport gone".into()),
            }
        }
    };
    tokio::time::timeout(WAIT, wait)
        .await
        .unwrap_or_else(|_| panic!("no answer from {addr} within {WAIT:?}"))
}

/// Unwraps a harness result, printing the error in full (it carries the peers' logs).
pub fn ok<T>(r: Result<T, HarnessError>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}
