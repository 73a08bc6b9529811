//! Shared test helpers: a CA made at run time, SIP messages, event waiting, tracing capture.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use sip_core::{Limits, SipMessage};
use tokio::sync::mpsc;
use transport_tls::{Identity, TransportEvent, TrustRoots};

/// Every wait in the tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Runs `f` or panics after `d`.
pub async fn within<T>(d: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(d, f).await.expect("timed out")
}

/// A test certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate with its PEM forms.
pub struct Leaf {
    pub identity: Identity,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn roots(&self) -> TrustRoots {
        let mut r = TrustRoots::new();
        r.add_der(self.issuer.der().to_vec()).unwrap();
        r
    }

    /// A certificate for `names` (SANs; the first is also the CN), valid now.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_valid(names, 2020, 2099)
    }

    /// An expired certificate.
    pub fn expired_leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_valid(names, 2010, 2011)
    }

    fn leaf_valid(&self, names: &[&str], from_year: i32, to_year: i32) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = rcgen::date_time_ymd(from_year, 1, 1);
        params.not_after = rcgen::date_time_ymd(to_year, 1, 1);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let identity = Identity::from_der(
            vec![cert.der().to_vec()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        );
        Leaf {
            identity,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A valid MESSAGE request of about `size` bytes (at least the head).
pub fn message_request(n: u32, size: usize, via: &str) -> Vec<u8> {
    let head_without_cl = format!(
        "MESSAGE sip:app@contoso.test SIP/2.0\r\n\
         Via: SIP/2.0/{via};branch=z9hG4bK-{n}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:fe@contoso.test>;tag=a{n}\r\n\
         To: <sip:app@contoso.test>\r\n\
         Call-ID: c{n}@contoso.test\r\n\
         CSeq: {n} MESSAGE\r\n\
         Content-Type: text/plain\r\n"
    );
    let fixed = head_without_cl.len() + "Content-Length: 000\r\n\r\n".len();
    let body = "x".repeat(size.saturating_sub(fixed));
    format!(
        "{head_without_cl}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub fn parsed(bytes: &[u8]) -> SipMessage {
    SipMessage::parse_datagram(bytes.to_vec().into(), &Limits::default()).unwrap()
}

/// The next event that `pick` accepts, skipping others; panics after [`WAIT`].
pub async fn next_event<T>(
    rx: &mut mpsc::Receiver<TransportEvent>,
    mut pick: impl FnMut(TransportEvent) -> Option<T>,
) -> T {
    within(WAIT, async {
        loop {
            let e = rx.recv().await.expect("event channel closed");
            if let Some(t) = pick(e) {
                return t;
            }
        }
    })
    .await
}

/// Records tracing events as text lines (for asserting that refusals are logged).
#[derive(Clone, Default)]
pub struct Capture(pub Arc<Mutex<Vec<String>>>);

impl Capture {
    /// Installs the capture for the current thread (use a current-thread runtime).
    pub fn install() -> (Capture, tracing::subscriber::DefaultGuard) {
        let c = Capture::default();
        let guard = tracing::subscriber::set_default(c.clone());
        (c, guard)
    }

    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn contains(&self, needle: &str) -> bool {
        self.lines().iter().any(|l| l.contains(needle))
    }
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut f = Fields(format!("{} ", event.metadata().level()));
        event.record(&mut f);
        self.0.lock().unwrap().push(f.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
