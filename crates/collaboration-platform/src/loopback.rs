//! Two platforms talking to each other on loopback over mutual TLS, with a CA made in
//! memory: what the quick-start example, tests and benchmarks run without any server.
//! Each platform's outbound proxy is the other one, so every request one sends reaches
//! the other directly (peer to peer, as two trusted applications federating).
//!
//! Enabled by the `loopback` feature (it adds `rcgen`). Not for production: the CA's key
//! lives only in memory and every certificate is valid until 2099.

use crate::{
    CollaborationPlatform, Identity, Listener, OutboundProxy, PlatformError,
    ServerPlatformSettings, TrustRoots,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use std::net::SocketAddr;

/// Why the loopback certificates or platforms could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoopbackError {
    /// Generating a key or certificate failed.
    #[error("certificate generation: {0}")]
    Certificate(String),
    /// No free loopback port could be reserved.
    #[error("reserving a loopback port: {0}")]
    Port(String),
    /// A platform did not start.
    #[error(transparent)]
    Platform(#[from] PlatformError),
}

impl From<rcgen::Error> for LoopbackError {
    fn from(e: rcgen::Error) -> Self {
        LoopbackError::Certificate(e.to_string())
    }
}

/// A certificate authority made in memory, issuing identities for loopback peers.
pub struct LoopbackPki {
    ca: CertifiedIssuer<'static, KeyPair>,
    roots: TrustRoots,
}

impl std::fmt::Debug for LoopbackPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopbackPki").finish_non_exhaustive()
    }
}

impl LoopbackPki {
    /// Makes a fresh CA (ECDSA P-256).
    pub fn new() -> Result<LoopbackPki, LoopbackError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "ucma-rs loopback CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2099, 1, 1);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let roots = TrustRoots::from_pem(ca.pem().as_bytes())
            .map_err(|e| LoopbackError::Certificate(e.to_string()))?;
        Ok(LoopbackPki { ca, roots })
    }

    /// The CA as a trust root.
    pub fn roots(&self) -> TrustRoots {
        self.roots.clone()
    }

    /// A client-and-server identity for `fqdn` (also valid for `localhost` and 127.0.0.1).
    pub fn identity(&self, fqdn: &str) -> Result<Identity, LoopbackError> {
        let names = vec![fqdn.to_string(), "localhost".into(), "127.0.0.1".into()];
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name.push(DnType::CommonName, fqdn);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2099, 1, 1);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca)?;
        Identity::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
            .map_err(|e| LoopbackError::Certificate(e.to_string()))
    }
}

/// Reserves two distinct free loopback TCP ports (both bound at once, read, released).
/// Another process or test may take one before the platform binds it: [`pair`] then tries
/// again with fresh ports.
fn free_ports() -> Result<(SocketAddr, SocketAddr), LoopbackError> {
    let bind = || {
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| LoopbackError::Port(e.to_string()))
    };
    let (a, b) = (bind()?, bind()?);
    let addr = |l: &std::net::TcpListener| {
        l.local_addr()
            .map_err(|e| LoopbackError::Port(e.to_string()))
    };
    Ok((addr(&a)?, addr(&b)?))
}

/// How many times [`pair`] takes fresh ports when one was taken in the meantime.
const PORT_ATTEMPTS: usize = 5;

/// Starts two trusted platforms, `a_fqdn` and `b_fqdn`, each listening for mutual TLS on a
/// loopback port and using the other as its outbound proxy. `configure` adjusts each
/// one's settings (topology, observer, timers) before it starts; it gets the FQDN.
pub async fn pair(
    pki: &LoopbackPki,
    a_fqdn: &str,
    b_fqdn: &str,
    configure: impl Fn(&str, ServerPlatformSettings) -> ServerPlatformSettings,
) -> Result<(CollaborationPlatform, CollaborationPlatform), LoopbackError> {
    let settings = |me: &str, my_addr: SocketAddr, peer: &str, peer_addr: SocketAddr| {
        let s = ServerPlatformSettings::new(
            "ucma-rs loopback",
            me,
            pki.identity(me)?,
            pki.roots(),
            OutboundProxy::tls(peer_addr, peer),
        )
        .listen(Listener::mutual_tls(my_addr));
        Ok::<_, LoopbackError>(configure(me, s))
    };
    let mut last = None;
    for _ in 0..PORT_ATTEMPTS {
        let (a_addr, b_addr) = free_ports()?;
        let a = match CollaborationPlatform::start(settings(a_fqdn, a_addr, b_fqdn, b_addr)?).await
        {
            Ok(a) => a,
            // A port taken between reserving and binding: try fresh ones.
            Err(e @ PlatformError::Transport(_)) => {
                last = Some(e);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        match CollaborationPlatform::start(settings(b_fqdn, b_addr, a_fqdn, a_addr)?).await {
            Ok(b) => return Ok((a, b)),
            Err(e @ PlatformError::Transport(_)) => {
                a.shutdown().await;
                last = Some(e);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.map_or_else(|| LoopbackError::Port("no free ports".into()), Into::into))
}
