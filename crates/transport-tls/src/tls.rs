//! TLS settings: identities, trust roots, mutual authentication, peer identity, key log.
//!
//! ## Crypto provider
//!
//! rustls is used with its `ring` provider, chosen deliberately over `aws-lc-rs`: `ring`
//! builds with a C compiler alone (no cmake, clang, Go or NASM), which keeps CI and developer
//! machines on stock Debian packages and keeps build times low on 2 cores, and its ECDSA /
//! RSA / AES-GCM / ChaCha20 speed is on par for the signalling volumes SIP carries. FIPS
//! mode, the main reason to choose aws-lc-rs, is not a requirement here. The provider is
//! passed explicitly to every config builder, so the process-wide default provider is never
//! installed or relied upon.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::TlsConfigError;

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|e| TlsConfigError::Read {
        path: path.display().to_string(),
        error: e.to_string(),
    })
}

fn pem_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsConfigError::Pem(format!("private key: {e}")))
}

fn pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsConfigError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsConfigError::Pem("no CERTIFICATE found".into()));
    }
    Ok(certs)
}

/// A certificate chain and its private key: who this side is.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// From DER: the end-entity certificate first, then intermediates; the key in PKCS#8,
    /// PKCS#1 or SEC1 form.
    pub fn from_der(chain: Vec<Vec<u8>>, key: PrivateKeyDer<'static>) -> Self {
        Identity {
            chain: chain.into_iter().map(CertificateDer::from).collect(),
            key,
        }
    }

    /// From PEM text: one or more `CERTIFICATE` blocks (end entity first) and a private key
    /// block (`PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`).
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsConfigError> {
        Ok(Identity {
            chain: pem_certs(chain_pem)?,
            key: pem_key(key_pem)?,
        })
    }

    /// From PEM files (see [`from_pem`](Self::from_pem)); chain and key may be one file.
    /// An error names the file it is about.
    pub fn from_pem_files(
        chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsConfigError> {
        let (chain, key) = (chain.as_ref(), key.as_ref());
        Ok(Identity {
            chain: pem_certs(&read_file(chain)?).map_err(|e| e.in_file(chain))?,
            key: pem_key(&read_file(key)?).map_err(|e| e.in_file(key))?,
        })
    }
}

/// Certificates of the CAs trusted to issue the peer's certificate.
#[derive(Debug, Clone)]
pub struct TrustRoots {
    store: RootCertStore,
}

impl Default for TrustRoots {
    fn default() -> Self {
        TrustRoots::new()
    }
}

impl TrustRoots {
    /// No roots yet.
    pub fn new() -> Self {
        TrustRoots {
            store: RootCertStore::empty(),
        }
    }

    /// Adds one DER certificate.
    pub fn add_der(&mut self, der: impl Into<Vec<u8>>) -> Result<&mut Self, TlsConfigError> {
        self.store
            .add(CertificateDer::from(der.into()))
            .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
        Ok(self)
    }

    /// Adds every `CERTIFICATE` block of PEM text.
    pub fn add_pem(&mut self, pem: &[u8]) -> Result<&mut Self, TlsConfigError> {
        for c in pem_certs(pem)? {
            self.store
                .add(c)
                .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
        }
        Ok(self)
    }

    /// Roots from PEM text.
    pub fn from_pem(pem: &[u8]) -> Result<Self, TlsConfigError> {
        let mut r = TrustRoots::new();
        r.add_pem(pem)?;
        Ok(r)
    }

    /// Roots from a PEM file. An error names the file.
    pub fn from_pem_file(path: impl AsRef<Path>) -> Result<Self, TlsConfigError> {
        let path = path.as_ref();
        TrustRoots::from_pem(&read_file(path)?).map_err(|e| e.in_file(path))
    }

    /// How many roots.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }
}

/// Which TLS versions to offer or accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TlsVersions {
    /// TLS 1.2 and TLS 1.3 (default).
    #[default]
    Tls12And13,
    /// TLS 1.3 only.
    Tls13Only,
    /// TLS 1.2 only (for old peers).
    Tls12Only,
}

impl TlsVersions {
    fn list(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static BOTH: [&rustls::SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        static V13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        static V12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
        match self {
            TlsVersions::Tls12And13 => &BOTH,
            TlsVersions::Tls13Only => &V13,
            TlsVersions::Tls12Only => &V12,
        }
    }
}

/// Where to write TLS secrets in the NSS key log format (`SSLKEYLOGFILE`), so that Wireshark
/// can decrypt a capture. Off unless the application opts in: anyone with the file can read
/// the traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyLog {
    /// The file named by the `SSLKEYLOGFILE` environment variable, if set.
    FromEnv,
    /// This file (appended to).
    File(std::path::PathBuf),
}

impl KeyLog {
    fn build(&self) -> Result<Arc<dyn rustls::KeyLog>, TlsConfigError> {
        Ok(match self {
            KeyLog::FromEnv => Arc::new(rustls::KeyLogFile::new()),
            KeyLog::File(p) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| TlsConfigError::Read {
                        path: p.display().to_string(),
                        error: e.to_string(),
                    })?;
                Arc::new(NssKeyLog(Mutex::new(f)))
            }
        })
    }
}

/// NSS key log lines: `LABEL <client_random hex> <secret hex>`.
struct NssKeyLog(Mutex<std::fs::File>);

impl fmt::Debug for NssKeyLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NssKeyLog")
    }
}

impl rustls::KeyLog for NssKeyLog {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let line = format!("{label} {} {}\n", hex(client_random), hex(secret));
        if let Ok(mut f) = self.0.lock() {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// How a TLS listener treats client certificates. Mutual TLS is the default of a
/// middle-tier application; accepting clients without a certificate is an explicit,
/// different choice.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientAuth {
    /// Mutual TLS: the client must present a certificate chaining to these roots.
    Required(TrustRoots),
    /// A client may present a certificate (verified against these roots when it does) or
    /// none; messages from the latter come with no peer identity.
    Optional(TrustRoots),
    /// Clients are not asked for a certificate.
    None,
}

/// Settings of a TLS listener: the server's identity and its client-certificate policy.
#[derive(Debug, Clone)]
pub struct TlsServerSettings {
    identity: Identity,
    client_auth: ClientAuth,
    versions: TlsVersions,
    key_log: Option<KeyLog>,
}

impl TlsServerSettings {
    /// Mutual TLS: present `identity`, require a client certificate from `client_roots`.
    pub fn mutual(identity: Identity, client_roots: TrustRoots) -> Self {
        TlsServerSettings::new(identity, ClientAuth::Required(client_roots))
    }

    /// Any client-certificate policy.
    pub fn new(identity: Identity, client_auth: ClientAuth) -> Self {
        TlsServerSettings {
            identity,
            client_auth,
            versions: TlsVersions::default(),
            key_log: None,
        }
    }

    /// Restricts the TLS versions.
    pub fn versions(mut self, versions: TlsVersions) -> Self {
        self.versions = versions;
        self
    }

    /// Opts in to writing TLS secrets (see [`KeyLog`]).
    pub fn key_log(mut self, key_log: KeyLog) -> Self {
        self.key_log = Some(key_log);
        self
    }

    pub(crate) fn build(&self) -> Result<Arc<ServerConfig>, TlsConfigError> {
        let p = provider();
        let builder = ServerConfig::builder_with_provider(p.clone())
            .with_protocol_versions(self.versions.list())
            .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
        let verifier = |roots: &TrustRoots| {
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots.store.clone()), p.clone())
        };
        let builder = match &self.client_auth {
            ClientAuth::Required(roots) => builder.with_client_cert_verifier(
                verifier(roots)
                    .build()
                    .map_err(|e| TlsConfigError::Rustls(e.to_string()))?,
            ),
            ClientAuth::Optional(roots) => builder.with_client_cert_verifier(
                verifier(roots)
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| TlsConfigError::Rustls(e.to_string()))?,
            ),
            ClientAuth::None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(self.identity.chain.clone(), self.identity.key.clone_key())
            .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
        if let Some(k) = &self.key_log {
            config.key_log = k.build()?;
        }
        Ok(Arc::new(config))
    }
}

/// Settings of the TLS client side: the roots that verify servers, and the identity this
/// side presents (a middle-tier application always presents one to its front end).
#[derive(Debug, Clone)]
pub struct TlsClientSettings {
    roots: TrustRoots,
    identity: Option<Identity>,
    versions: TlsVersions,
    key_log: Option<KeyLog>,
    resumption: bool,
}

impl TlsClientSettings {
    /// Verify servers against `server_roots`; present no certificate (add one with
    /// [`identity`](Self::identity)).
    pub fn new(server_roots: TrustRoots) -> Self {
        TlsClientSettings {
            roots: server_roots,
            identity: None,
            versions: TlsVersions::default(),
            key_log: None,
            resumption: true,
        }
    }

    /// Mutual TLS: present this certificate chain to servers that ask for one.
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Restricts the TLS versions.
    pub fn versions(mut self, versions: TlsVersions) -> Self {
        self.versions = versions;
        self
    }

    /// Opts in to writing TLS secrets (see [`KeyLog`]).
    pub fn key_log(mut self, key_log: KeyLog) -> Self {
        self.key_log = Some(key_log);
        self
    }

    /// Whether to resume sessions (default true); off makes every handshake a full one.
    pub fn resumption(mut self, on: bool) -> Self {
        self.resumption = on;
        self
    }

    pub(crate) fn build(&self) -> Result<Arc<ClientConfig>, TlsConfigError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(self.versions.list())
            .map_err(|e| TlsConfigError::Rustls(e.to_string()))?
            .with_root_certificates(self.roots.store.clone());
        let mut config = match &self.identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .map_err(|e| TlsConfigError::Rustls(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        if let Some(k) = &self.key_log {
            config.key_log = k.build()?;
        }
        if !self.resumption {
            config.resumption = rustls::client::Resumption::disabled();
        }
        Ok(Arc::new(config))
    }
}

/// The verified identity of a TLS peer, from its end-entity certificate: handed up with
/// every message received on the connection so the platform can tell its front end, its
/// edge, and strangers apart.
///
/// It exists only for certificates that were verified against the configured roots
/// (server certificates always; client certificates on listeners that ask for them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// DNS names of the subjectAltName extension, in certificate order.
    pub dns_names: Vec<String>,
    /// The subject's common name (CN), if any.
    pub common_name: Option<String>,
    /// The end-entity certificate, DER.
    pub certificate: CertificateDer<'static>,
}

impl PeerIdentity {
    /// Whether the certificate names `name` the way RFC 5922 §7 compares SIP identities:
    /// one of the DNS SANs, or the CN only when there is no DNS SAN; ASCII case-insensitive;
    /// no wildcard matches anything (`*.contoso.com` names no pool), since a certificate
    /// trusted for one host must not make every host of a domain a trusted SIP peer.
    pub fn matches(&self, name: &str) -> bool {
        let eq = |n: &str| !n.contains('*') && n.eq_ignore_ascii_case(name);
        if self.dns_names.is_empty() {
            self.common_name.as_deref().is_some_and(eq)
        } else {
            self.dns_names.iter().any(|n| eq(n))
        }
    }

    /// Reads the names of a DER certificate; `None` if it cannot be parsed.
    ///
    /// x509-parser (Rusticata, fuzzed, widely used) reads the names: rustls-webpki checks
    /// names against a target but does not list them, and the CN is outside its scope.
    pub fn from_der(der: &CertificateDer<'_>) -> Option<PeerIdentity> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut dns_names = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                if let GeneralName::DNSName(d) = n {
                    dns_names.push((*d).to_owned());
                }
            }
        }
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        Some(PeerIdentity {
            dns_names,
            common_name,
            certificate: der.clone().into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(names: &[&str], cn: Option<&str>) -> PeerIdentity {
        PeerIdentity {
            dns_names: names.iter().map(|s| s.to_string()).collect(),
            common_name: cn.map(str::to_owned),
            certificate: CertificateDer::from(Vec::new()),
        }
    }

    #[test]
    fn pem_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["app.contoso.test".into()]).unwrap();
        let (chain, key, junk) = (
            dir.path().join("chain.pem"),
            dir.path().join("key.pem"),
            dir.path().join("junk.pem"),
        );
        std::fs::write(&chain, cert.cert.pem()).unwrap();
        std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
        std::fs::write(&junk, "not PEM at all\n").unwrap();
        assert!(Identity::from_pem_files(&chain, &key).is_ok());
        let named = |e: TlsConfigError, path: &Path| match e {
            TlsConfigError::InFile { path: p, error } => {
                assert_eq!(p, path.display().to_string());
                assert!(matches!(*error, TlsConfigError::Pem(_)), "{error}");
            }
            other => panic!("{other:?} does not name {}", path.display()),
        };
        named(Identity::from_pem_files(&chain, &junk).unwrap_err(), &junk);
        named(Identity::from_pem_files(&junk, &key).unwrap_err(), &junk);
        named(TrustRoots::from_pem_file(&junk).unwrap_err(), &junk);
        // The message says which file, then what is wrong with it.
        let text = TrustRoots::from_pem_file(&junk).unwrap_err().to_string();
        assert!(text.starts_with(&junk.display().to_string()), "{text}");
        assert!(text.contains("no CERTIFICATE"), "{text}");
    }

    #[test]
    fn names_match_as_rfc_5922_compares_them() {
        let p = id(
            &["fe.contoso.test", "*.pool.contoso.test"],
            Some("edge.contoso.test"),
        );
        assert!(p.matches("FE.contoso.test"));
        // No wildcard matching (§7.2), whatever the label count.
        assert!(!p.matches("a.pool.contoso.test"));
        assert!(!p.matches("a.b.pool.contoso.test"));
        assert!(!p.matches("pool.contoso.test"));
        assert!(!p.matches("*.pool.contoso.test"));
        // With DNS SANs the CN is not looked at (§7.1).
        assert!(!p.matches("edge.contoso.test"));
        // Without them, the CN is the identity.
        let cn_only = id(&[], Some("Edge.Contoso.Test"));
        assert!(cn_only.matches("edge.contoso.test"));
        assert!(!id(&[], Some("*.contoso.test")).matches("edge.contoso.test"));
        assert!(!id(&[], None).matches("edge.contoso.test"));
    }

    #[test]
    fn unparsable_certificate_has_no_identity() {
        assert_eq!(
            PeerIdentity::from_der(&CertificateDer::from(vec![1, 2, 3])),
            None
        );
    }

    #[test]
    fn refusals_are_classified() {
        use rustls::{CertificateError, Error};
        assert_eq!(
            TlsRefusalProbe::of(Error::NoCertificatesPresented),
            crate::TlsRefusal::NoClientCertificate
        );
        assert_eq!(
            TlsRefusalProbe::of(Error::InvalidCertificate(CertificateError::UnknownIssuer)),
            crate::TlsRefusal::UnknownIssuer
        );
        assert_eq!(
            TlsRefusalProbe::of(Error::InvalidCertificate(CertificateError::Expired)),
            crate::TlsRefusal::Expired
        );
        assert_eq!(
            TlsRefusalProbe::of(Error::InvalidCertificate(CertificateError::NotValidForName)),
            crate::TlsRefusal::NameMismatch
        );
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            Error::NoCertificatesPresented,
        );
        assert_eq!(
            crate::TlsRefusal::from_io(&io),
            Some(crate::TlsRefusal::NoClientCertificate)
        );
    }

    struct TlsRefusalProbe;
    impl TlsRefusalProbe {
        fn of(e: rustls::Error) -> crate::TlsRefusal {
            crate::TlsRefusal::from_rustls(&e)
        }
    }
}
