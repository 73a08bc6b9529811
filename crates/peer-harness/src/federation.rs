//! Two front ends joined by federation: the fixture most tests start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use crate::error::{HarnessError, Result};
use crate::kamailio::{FrontEnd, FrontEndConfig, Launch, Ports};
use crate::pki::TestPki;
use crate::process::{check_binary, find_binary, free_tcp_ports};
use crate::sipp::Sipp;
use crate::Deployment;

/// Users every fixture knows unless told otherwise: (deployment, user, password).
pub const DEFAULT_USERS: [(Deployment, &str, &str); 5] = [
    (Deployment::Contoso, "alice", "alice-secret"),
    (Deployment::Contoso, "carol", "carol-secret"),
    // Registering for less than 60 s gets 423 Interval Too Brief (Min-Expires: 60).
    (Deployment::Contoso, "brief", "brief-secret"),
    (Deployment::Fabrikam, "bob", "bob-secret"),
    (Deployment::Fabrikam, "dave", "dave-secret"),
];

/// How to start a [`Federation`]. Defaults: the [`DEFAULT_USERS`], each front end trusting
/// its own application certificate ([`TestPki::application`]), user TLS listeners on,
/// 64 MB shared and 8 MB private memory per instance, 20 s to become ready, Kamailio from
/// `$PEER_HARNESS_KAMAILIO` or the usual paths.
#[derive(Debug, Clone)]
pub struct FederationBuilder {
    users: Vec<(Deployment, String, String)>,
    extra_trusted: Vec<(Deployment, String)>,
    user_tls: bool,
    shm_mb: u32,
    pkg_mb: u32,
    ready_timeout: Duration,
    kamailio: Option<PathBuf>,
    debug: i32,
    keep_dir: bool,
    challenge_user_requests: bool,
    challenge_in_dialog_requests: bool,
    proxy_passwords: Vec<(Deployment, String, String)>,
}

impl Default for FederationBuilder {
    fn default() -> Self {
        FederationBuilder {
            users: DEFAULT_USERS
                .iter()
                .map(|(d, u, p)| (*d, u.to_string(), p.to_string()))
                .collect(),
            extra_trusted: Vec::new(),
            user_tls: true,
            shm_mb: 64,
            pkg_mb: 8,
            ready_timeout: Duration::from_secs(20),
            kamailio: None,
            debug: 1,
            keep_dir: std::env::var_os("PEER_HARNESS_KEEP").is_some(),
            challenge_user_requests: false,
            challenge_in_dialog_requests: false,
            proxy_passwords: Vec::new(),
        }
    }
}

impl FederationBuilder {
    /// Adds a user who can register at `deployment` with `password` (digest).
    pub fn user(mut self, deployment: Deployment, user: &str, password: &str) -> Self {
        self.users
            .push((deployment, user.to_owned(), password.to_owned()));
        self
    }

    /// Trusts one more certificate name (CN or DNS SAN) as an application at
    /// `deployment`'s mutual-TLS listener. Names are fixed when the configuration is
    /// written, so choose the name here and issue its certificate after start with
    /// [`TestPki::issue`].
    pub fn trust_application(mut self, deployment: Deployment, name: &str) -> Self {
        self.extra_trusted.push((deployment, name.to_owned()));
        self
    }

    /// Whether the front ends challenge users' out-of-dialog requests other than REGISTER
    /// (INVITE, MESSAGE, SUBSCRIBE, PUBLISH, OPTIONS …) with `407 Proxy Authentication
    /// Required` for their domain's realm (`proxy_challenge`, `pv_proxy_authenticate`),
    /// checked against the users' passwords, as a proxy that authenticates every request
    /// does (default off: only REGISTER is challenged). Trusted applications and
    /// federation partners (mutual TLS) are not challenged; requests in a dialog neither.
    /// Each answer the proxy accepts is logged as `proxy auth ok for USER (METHOD cseq N)`,
    /// each it refuses as `failed proxy digest for USER (METHOD)`.
    pub fn challenge_user_requests(mut self, on: bool) -> Self {
        self.challenge_user_requests = on;
        self
    }

    /// Whether the front ends also challenge users' requests inside dialogs (MESSAGE, BYE,
    /// re-INVITE, SUBSCRIBE refreshes …; not ACK) with 407, as
    /// [`challenge_user_requests`](Self::challenge_user_requests) does out of dialog
    /// (default off). A request with no `Proxy-Authorization` is always challenged.
    pub fn challenge_in_dialog_requests(mut self, on: bool) -> Self {
        self.challenge_in_dialog_requests = on;
        self
    }

    /// With [`challenge_user_requests`](Self::challenge_user_requests): the password the
    /// proxy checks for `user` of `deployment` instead of the registrar's, so a test can
    /// register and then meet a proxy that refuses the credentials.
    pub fn proxy_password(mut self, deployment: Deployment, user: &str, password: &str) -> Self {
        self.proxy_passwords
            .push((deployment, user.to_owned(), password.to_owned()));
        self
    }

    /// Whether each front end also listens for users on TLS without client certificates.
    pub fn user_tls(mut self, on: bool) -> Self {
        self.user_tls = on;
        self
    }

    /// Shared memory (`-m`) and private memory (`-M`) per instance, in MB. Size shared
    /// memory for the load: finished transactions live about 5 s (see `PEERS.md`).
    pub fn memory_mb(mut self, shm: u32, pkg: u32) -> Self {
        self.shm_mb = shm;
        self.pkg_mb = pkg;
        self
    }

    /// How long each instance may take to answer its first OPTIONS.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// The Kamailio binary to run (default: `$PEER_HARNESS_KAMAILIO`, then `PATH` and
    /// `/usr/sbin`).
    pub fn kamailio_binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.kamailio = Some(path.into());
        self
    }

    /// Kamailio's `debug` level (default 1: notices, warnings, errors; 2 adds info, 3 debug).
    pub fn debug_level(mut self, level: i32) -> Self {
        self.debug = level;
        self
    }

    /// Keeps the temporary folder after drop (also when `PEER_HARNESS_KEEP` is set, and
    /// always when the thread is panicking, so a failed test leaves its logs).
    pub fn keep_dir(mut self, keep: bool) -> Self {
        self.keep_dir = keep;
        self
    }

    /// Makes the certificates, writes both configurations, starts both instances and waits
    /// until each answers OPTIONS. Blocking (a few hundred milliseconds); from async code
    /// call it before entering the runtime or in `spawn_blocking`.
    ///
    /// If a port chosen at run time was taken meanwhile, it retries with new ports (up to
    /// three attempts).
    pub fn start(self) -> Result<Federation> {
        let binary = match &self.kamailio {
            Some(p) => check_binary(p)?,
            None => find_binary("kamailio", "PEER_HARNESS_KAMAILIO")?,
        };
        let dir = tempfile::Builder::new()
            .prefix("peer-harness-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating a temporary folder", e))?;
        let pki = TestPki::generate(&dir.path().join("pki"))?;
        let launch = Launch {
            binary,
            shm_mb: self.shm_mb,
            pkg_mb: self.pkg_mb,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_start(dir.path(), &pki, &launch, attempt) {
                Ok(([contoso, fabrikam], configs)) => {
                    let mut dir = dir;
                    if self.keep_dir {
                        dir.disable_cleanup(true);
                    }
                    return Ok(Federation {
                        contoso,
                        fabrikam,
                        pki,
                        configs,
                        launch,
                        ready_timeout: self.ready_timeout,
                        replicas: std::sync::atomic::AtomicU32::new(0),
                        dir,
                    });
                }
                Err(HarnessError::PortInUse { .. }) if attempt < 3 => continue,
                Err(e) => {
                    // Leave the logs for whoever reads the error.
                    let mut dir = dir;
                    dir.disable_cleanup(true);
                    return Err(e);
                }
            }
        }
    }

    fn try_start(
        &self,
        root: &Path,
        pki: &TestPki,
        launch: &Launch,
        attempt: u32,
    ) -> Result<([FrontEnd; 2], [FrontEndConfig; 2])> {
        let per = if self.user_tls { 4 } else { 3 };
        let ports = free_tcp_ports(per * 2)?;
        let ports_of = |i: usize| {
            let p = &ports[i * per..(i + 1) * per];
            Ports {
                tcp: p[0],
                mtls: p[1],
                ctl: p[2],
                user_tls: self.user_tls.then(|| p[3]),
            }
        };
        let mut fes = Vec::with_capacity(2);
        let mut configs = Vec::with_capacity(2);
        for d in [Deployment::Contoso, Deployment::Fabrikam] {
            let mine = ports_of(d.index());
            let partner = ports_of(d.other().index());
            let mut trusted = vec![d.application().to_owned()];
            trusted.extend(
                self.extra_trusted
                    .iter()
                    .filter(|(dd, _)| *dd == d)
                    .map(|(_, n)| n.clone()),
            );
            let cert = pki.front_end(d);
            let config = FrontEndConfig {
                deployment: d,
                ports: mine,
                partner_mtls: partner.mtls,
                trusted_applications: trusted,
                partners: vec![d.other().fqdn().to_owned()],
                users: self
                    .users
                    .iter()
                    .filter(|(dd, _, _)| *dd == d)
                    .map(|(_, u, p)| (u.clone(), p.clone()))
                    .collect(),
                cert: cert.cert_path.clone(),
                key: cert.key_path.clone(),
                ca: pki.ca_path().to_path_buf(),
                debug: self.debug,
                challenge_user_requests: self.challenge_user_requests,
                challenge_in_dialog_requests: self.challenge_in_dialog_requests,
                proxy_passwords: self
                    .proxy_passwords
                    .iter()
                    .filter(|(dd, _, _)| *dd == d)
                    .map(|(_, u, p)| (u.clone(), p.clone()))
                    .collect(),
            };
            let dir = root.join(format!("{}-{attempt}", d.domain()));
            fes.push(FrontEnd::spawn(&config, &dir, launch)?);
            configs.push(config);
        }
        for fe in &mut fes {
            fe.wait_ready(self.ready_timeout)?;
        }
        let fabrikam = fes.pop();
        let contoso = fes.pop();
        let configs: [FrontEndConfig; 2] = match configs.try_into() {
            Ok(c) => c,
            Err(_) => unreachable!("two configurations were written"),
        };
        match (contoso, fabrikam) {
            (Some(c), Some(f)) => Ok(([c, f], configs)),
            _ => unreachable!("two front ends were spawned"),
        }
    }
}

/// Two Kamailio front ends joined by federation over mutual TLS, with their certificates,
/// in a temporary folder. Dropping it stops both (bounded) and removes the folder — unless
/// the thread is panicking: then both logs' tails are printed to stderr (shown by the test
/// runner for a failed test) and the folder is kept.
#[derive(Debug)]
pub struct Federation {
    // Field order is drop order: processes first, then the folder they write into.
    contoso: FrontEnd,
    fabrikam: FrontEnd,
    pki: TestPki,
    /// How each front end was configured (contoso, fabrikam), for replicas.
    configs: [FrontEndConfig; 2],
    launch: Launch,
    ready_timeout: Duration,
    replicas: std::sync::atomic::AtomicU32,
    dir: TempDir,
}

impl Federation {
    /// Starts with the defaults of [`FederationBuilder`].
    pub fn start() -> Result<Federation> {
        FederationBuilder::default().start()
    }

    /// A builder for other settings.
    pub fn builder() -> FederationBuilder {
        FederationBuilder::default()
    }

    /// The home deployment's front end (`fe.contoso.test`).
    pub fn contoso(&self) -> &FrontEnd {
        &self.contoso
    }

    /// The federated deployment's front end (`fe.fabrikam.test`).
    pub fn fabrikam(&self) -> &FrontEnd {
        &self.fabrikam
    }

    /// The front end of `deployment`.
    pub fn front_end(&self, deployment: Deployment) -> &FrontEnd {
        match deployment {
            Deployment::Contoso => &self.contoso,
            Deployment::Fabrikam => &self.fabrikam,
        }
    }

    /// The front end of `deployment`, mutably (to stop it early).
    pub fn front_end_mut(&mut self, deployment: Deployment) -> &mut FrontEnd {
        match deployment {
            Deployment::Contoso => &mut self.contoso,
            Deployment::Fabrikam => &mut self.fabrikam,
        }
    }

    /// The certificates.
    pub fn pki(&self) -> &TestPki {
        &self.pki
    }

    /// The fixture's temporary folder (scenario files and SIPp logs can go here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A SIPp run whose files live in this fixture's folder.
    pub fn sipp(&self, name: &str, scenario_xml: &str) -> Sipp {
        Sipp::new(self.dir.path(), name, scenario_xml)
    }

    /// Starts one more front end for `deployment`, configured as its first one (same
    /// certificate and name, users, trusted applications, federation route) on new ports,
    /// and waits until it answers OPTIONS: a second server of the deployment's pool, for
    /// failover tests. It shares nothing with the first (registrations are per instance).
    /// Blocking, as [`FederationBuilder::start`]. Drop it before the federation (it lives in
    /// the federation's folder).
    pub fn spawn_replica(&self, deployment: Deployment) -> Result<FrontEnd> {
        self.replica(deployment, None)
    }

    /// As [`spawn_replica`](Self::spawn_replica), but its TLS profiles trust the CA(s) in
    /// `extra_ca_pem` besides the test CA: a pool where one server accepts a client
    /// certificate that the others refuse (failover tests of a refused certificate).
    pub fn spawn_replica_trusting(
        &self,
        deployment: Deployment,
        extra_ca_pem: &str,
    ) -> Result<FrontEnd> {
        self.replica(deployment, Some(extra_ca_pem))
    }

    fn replica(&self, deployment: Deployment, extra_ca_pem: Option<&str>) -> Result<FrontEnd> {
        let n = self
            .replicas
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let mut config = self.configs[deployment.index()].clone();
        if let Some(extra) = extra_ca_pem {
            // Kamailio's `ca_list` takes several certificates in one PEM file.
            let path = self
                .dir
                .path()
                .join(format!("{}-replica-{n}-ca.crt", deployment.domain()));
            let text = format!("{}\n{}\n", self.pki.ca_pem().trim_end(), extra.trim_end());
            std::fs::write(&path, text)
                .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))?;
            config.ca = path;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let ports = free_tcp_ports(4)?;
            config.ports = Ports {
                tcp: ports[0],
                mtls: ports[1],
                ctl: ports[2],
                user_tls: config.ports.user_tls.map(|_| ports[3]),
            };
            let dir = self
                .dir
                .path()
                .join(format!("{}-replica-{n}-{attempt}", deployment.domain()));
            let started = FrontEnd::spawn(&config, &dir, &self.launch)
                .and_then(|mut fe| fe.wait_ready(self.ready_timeout).map(|()| fe));
            match started {
                Err(HarnessError::PortInUse { .. }) if attempt < 3 => continue,
                r => return r,
            }
        }
    }

    /// Both logs' last `lines` lines, labelled.
    pub fn log_tails(&self, lines: usize) -> String {
        format!(
            "--- {} ({}) ---\n{}\n--- {} ({}) ---\n{}",
            self.contoso.fqdn(),
            self.contoso.log_path().display(),
            self.contoso.log_tail(lines),
            self.fabrikam.fqdn(),
            self.fabrikam.log_path().display(),
            self.fabrikam.log_tail(lines)
        )
    }
}

impl Drop for Federation {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "peer-harness: test failed; fixture kept in {}\n{}",
                self.dir.path().display(),
                self.log_tails(30)
            );
        }
        // Stop both at once, then wait for each (bounded).
        self.contoso.begin_stop();
        self.fabrikam.begin_stop();
        self.contoso.stop();
        self.fabrikam.stop();
    }
}
