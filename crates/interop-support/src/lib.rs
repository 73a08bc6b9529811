//! # interop-support
//!
//! The scaffolding that the tests and benchmarks against real peers ([`peer_harness`]) share:
//! starting the peers, the tokio runtime they run on, bounded waits, and the test PKI read as
//! [`transport_tls`] identities and trust roots. Not published; add it as a dev-dependency:
//!
//! ```toml
//! [dev-dependencies]
//! interop-support.workspace = true
//! ```
//!
//! It sits apart from peer-harness so that peer-harness stays a process manager (Kamailio,
//! SIPp, openssl) without tokio. It depends on nothing above transport-tls: the crates whose
//! tests use it (collaboration-platform, application-endpoint, conversation) take it as a
//! dev-dependency, and a dependency back on them would give their tests a second copy of
//! their own types. Builders of platform settings therefore stay in the tests.
//!
//! ```no_run
//! use interop_support::{bounded, federation, identity, roots, runtime};
//! use peer_harness::Deployment;
//!
//! let fed = federation();
//! let _identity = identity(fed.pki().application(Deployment::Contoso));
//! let _roots = roots(&fed);
//! runtime().block_on(async {
//!     bounded("a step", async {}).await;
//! });
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use peer_harness::{CertFiles, Federation};
use transport_tls::{Identity, TrustRoots};

/// Bound of every single wait of an interop test ([`bounded`]): long enough for a real front
/// end on a busy machine, short enough that a lost message fails the test rather than hangs it.
pub const WAIT: Duration = Duration::from_secs(15);

/// Starts the two real front ends joined by federation ([`Federation::start`]); panics with
/// the harness's message (which names a missing kamailio and how to install it).
pub fn federation() -> Federation {
    Federation::start().unwrap_or_else(|e| panic!("starting the real peers failed: {e}"))
}

/// The runtime the tests and benchmarks against real peers drive the SDK on: multi-threaded
/// with two workers (the machines they run on have two cores), I/O and time enabled.
///
/// Each test builds its own so that the peers (started outside it) outlive it.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `f` within [`WAIT`]; panics naming `what` when it has no outcome by then, so that no test
/// waits forever on a peer.
pub async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    bounded_by(WAIT, what, f).await
}

/// `f` within `limit` (a step that is meant to take longer, or shorter, than [`WAIT`]);
/// panics naming `what` when it has no outcome by then.
pub async fn bounded_by<T>(limit: Duration, what: &str, f: impl Future<Output = T>) -> T {
    try_bounded(limit, what, f)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `f` within `limit`, or the message `"{what}: no outcome within {limit:?}"`: for the
/// benchmarks, which report a failed step instead of panicking.
pub async fn try_bounded<T>(
    limit: Duration,
    what: &str,
    f: impl Future<Output = T>,
) -> Result<T, String> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| format!("{what}: no outcome within {limit:?}"))
}

/// A certificate and key of the test PKI (`fed.pki().application(..)` and the like) as the
/// identity a platform presents over TLS.
pub fn identity(c: &CertFiles) -> Identity {
    Identity::from_pem(c.cert_pem.as_bytes(), c.key_pem.as_bytes()).expect("identity PEM")
}

/// The test CA of `fed` as the trust roots a platform verifies the front ends with.
pub fn roots(fed: &Federation) -> TrustRoots {
    TrustRoots::from_pem(fed.pki().ca_pem().as_bytes()).expect("CA PEM")
}

/// `127.0.0.1:0`: a listener on loopback at a port the system chooses, so that tests running
/// side by side never collide.
pub fn loopback0() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}
