//! Test certificates made at run time (rcgen): a test CA, the two front ends, applications,
//! an untrusted client and one from a foreign CA. Written as PEM files into a folder.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::error::{HarnessError, Result};
use crate::Deployment;

/// A certificate and its private key, as PEM text and as files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The first name of the certificate (its subject CN and first DNS SAN).
    pub name: String,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key (PKCS#8), PEM.
    pub key_pem: String,
    /// File holding `cert_pem`.
    pub cert_path: PathBuf,
    /// File holding `key_pem`.
    pub key_path: PathBuf,
}

/// The test public key infrastructure of one fixture.
///
/// | certificate | names (CN = first) | issued by |
/// |---|---|---|
/// | front end of contoso | `fe.contoso.test`, `contoso.test`, `localhost`, `127.0.0.1` | test CA |
/// | front end of fabrikam | `fe.fabrikam.test`, `fabrikam.test`, `localhost`, `127.0.0.1` | test CA |
/// | application of contoso (trusted by contoso) | `app.contoso.test`, `localhost`, `127.0.0.1` | test CA |
/// | application of fabrikam (trusted by fabrikam) | `app.fabrikam.test`, `localhost`, `127.0.0.1` | test CA |
/// | untrusted client | `untrusted.contoso.test` | test CA |
/// | foreign client | `stranger.example.test` | another CA, trusted by nobody |
///
/// Every leaf is valid for both TLS server and client authentication.
pub struct TestPki {
    dir: PathBuf,
    ca: CertifiedIssuer<'static, KeyPair>,
    ca_pem: String,
    ca_path: PathBuf,
    front_ends: [CertFiles; 2],
    applications: [CertFiles; 2],
    untrusted: CertFiles,
    foreign: CertFiles,
    foreign_ca_pem: String,
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("dir", &self.dir)
            .field("ca_path", &self.ca_path)
            .finish_non_exhaustive()
    }
}

/// Name of the untrusted client certificate (issued by the test CA, trusted by nobody).
pub const UNTRUSTED_NAME: &str = "untrusted.contoso.test";
/// Name of the client certificate issued by a foreign CA.
pub const FOREIGN_NAME: &str = "stranger.example.test";

fn new_ca(cn: &str) -> Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "ucma-rs peer-harness");
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2099, 1, 1);
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text)
        .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))
}

fn leaf(
    dir: &Path,
    issuer: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
) -> Result<CertFiles> {
    let name = names.first().copied().unwrap_or("unnamed");
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "ucma-rs peer-harness");
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
    let cert = params.signed_by(&key, issuer)?;
    let files = CertFiles {
        name: name.into(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert_path: dir.join(format!("{name}.crt")),
        key_path: dir.join(format!("{name}.key")),
    };
    write(&files.cert_path, &files.cert_pem)?;
    write(&files.key_path, &files.key_pem)?;
    Ok(files)
}

impl TestPki {
    /// Makes the CA and every certificate of the table above, and writes them as PEM into
    /// `dir` (`ca.crt`, `NAME.crt`, `NAME.key`).
    pub fn generate(dir: &Path) -> Result<TestPki> {
        std::fs::create_dir_all(dir)
            .map_err(|e| HarnessError::io(format!("creating {}", dir.display()), e))?;
        let ca = new_ca("peer-harness test CA")?;
        let ca_pem = ca.pem();
        let ca_path = dir.join("ca.crt");
        write(&ca_path, &ca_pem)?;
        let fe = |d: Deployment| leaf(dir, &ca, &[d.fqdn(), d.domain(), "localhost", "127.0.0.1"]);
        let app = |d: Deployment| leaf(dir, &ca, &[d.application(), "localhost", "127.0.0.1"]);
        let front_ends = [fe(Deployment::Contoso)?, fe(Deployment::Fabrikam)?];
        let applications = [app(Deployment::Contoso)?, app(Deployment::Fabrikam)?];
        let untrusted = leaf(dir, &ca, &[UNTRUSTED_NAME, "localhost", "127.0.0.1"])?;
        let other_ca = new_ca("peer-harness foreign CA")?;
        let foreign_ca_pem = other_ca.pem();
        write(&dir.join("foreign-ca.crt"), &foreign_ca_pem)?;
        let foreign = leaf(dir, &other_ca, &[FOREIGN_NAME, "localhost", "127.0.0.1"])?;
        Ok(TestPki {
            dir: dir.to_path_buf(),
            ca,
            ca_pem,
            ca_path,
            front_ends,
            applications,
            untrusted,
            foreign,
            foreign_ca_pem,
        })
    }

    /// The test CA's certificate, PEM (the trust root of every peer).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// File holding [`ca_pem`](Self::ca_pem).
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// The folder holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The front end certificate of `deployment` (`fe.contoso.test`, `fe.fabrikam.test`).
    pub fn front_end(&self, deployment: Deployment) -> &CertFiles {
        &self.front_ends[deployment.index()]
    }

    /// The application certificate that `deployment`'s front end trusts
    /// (`app.contoso.test`, `app.fabrikam.test`).
    pub fn application(&self, deployment: Deployment) -> &CertFiles {
        &self.applications[deployment.index()]
    }

    /// A client certificate from the test CA whose name no front end trusts
    /// ([`UNTRUSTED_NAME`]): its handshake succeeds and its requests get 403.
    pub fn untrusted(&self) -> &CertFiles {
        &self.untrusted
    }

    /// A client certificate from another CA ([`FOREIGN_NAME`]): its handshake is refused.
    pub fn foreign(&self) -> &CertFiles {
        &self.foreign
    }

    /// The foreign CA's certificate, PEM (the issuer of [`foreign`](Self::foreign); trusted
    /// by no front end unless one is started with
    /// [`Federation::spawn_replica_trusting`](crate::Federation::spawn_replica_trusting)).
    pub fn foreign_ca_pem(&self) -> &str {
        &self.foreign_ca_pem
    }

    /// Issues one more certificate from the test CA for `names` (SANs; the first is also the
    /// CN; IP addresses become IP SANs), e.g. for a server under test. Files are named after
    /// the first name and overwrite earlier ones of the same name.
    pub fn issue(&self, names: &[&str]) -> Result<CertFiles> {
        leaf(&self.dir, &self.ca, names)
    }
}
