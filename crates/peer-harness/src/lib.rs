//! # peer-harness
//!
//! Test support for ucma-rs: the **real SIP peers** the SDK's interop tests talk to, started
//! and stopped by the tests themselves (see `DESIGN.md`, "Real peers in tests", and
//! `PEERS.md`). Not published; add it as a dev-dependency:
//!
//! ```toml
//! [dev-dependencies]
//! peer-harness.workspace = true
//! ```
//!
//! ## What it gives a test
//!
//! - **Certificates made at run time** ([`TestPki`], rcgen): a test CA; front ends
//!   `fe.contoso.test` and `fe.fabrikam.test`; applications `app.contoso.test` (trusted by
//!   contoso) and `app.fabrikam.test` (trusted by fabrikam); an untrusted client from the
//!   same CA; a client from a foreign CA. PEM text and files.
//! - **Two Kamailio 5.6 front ends joined by federation** ([`Federation`]): `contoso.test`
//!   (the home deployment) and `fabrikam.test` (the federated one), each on free loopback
//!   ports chosen at run time, with
//!   - a **mutual-TLS listener** ([`FrontEnd::mtls_addr`]) that requires a certificate from
//!     the test CA and answers **403** to a verified certificate whose name (CN or DNS SAN)
//!     is neither a trusted application nor the federation partner;
//!   - a **TCP listener** ([`FrontEnd::tcp_addr`]) for users and SIPp;
//!   - a **TLS listener for users** ([`FrontEnd::user_tls_addr`]) without client
//!     certificates;
//!   - a **registrar** (in memory; REGISTER from users is digest-challenged with the
//!     passwords of [`DEFAULT_USERS`] or [`FederationBuilder::user`]; trusted applications
//!     are not challenged), **presence** (SUBSCRIBE/PUBLISH, every watcher authorised),
//!     record-routing, and `OPTIONS sip:FQDN` answered 200 by the front end itself;
//!   - a **federation route**: a request for the other deployment's domain is relayed to the
//!     other front end's mutual-TLS listener, both presenting their front-end certificates;
//!     the receiving side treats it as a partner (delivered to its own users, never relayed
//!     onwards);
//!   - a control socket ([`FrontEnd::ctl_addr`], `kamcmd -s tcp:127.0.0.1:PORT`).
//! - **SIPp** ([`Sipp`]): a scenario XML written to the fixture's folder, a bounded run,
//!   exit status and statistics ([`SippOutcome`]); example [`scenarios`].
//! - **A tiny SIP-over-TCP client** ([`SipTcpClient`]) built on `sip_core`; it registers
//!   users with `sip_core::auth::DigestClient`, so every registration also tests sip-core's
//!   digest client against a real registrar.
//!
//! ## Lifetimes, timeouts, failures
//!
//! Everything is bounded: readiness waits (default 20 s), every read of the client, SIPp
//! runs (`-timeout`, then killed). Each Kamailio runs in a process group of its own under a
//! supervisor that stops the group when the owning [`FrontEnd`] is dropped **or when the test
//! process dies** (even by `SIGKILL`): no peer outlives its test. When a test panics, the
//! [`Federation`]'s drop prints the tail of both Kamailio logs and keeps the temporary folder
//! (its path is printed); set `PEER_HARNESS_KEEP=1` to keep it always.
//!
//! A missing program is an error that says how to install it ([`HarnessError::MissingBinary`],
//! [`INSTALL_HINT`]), never a hang and never a silent pass. Programs are found through
//! `$PEER_HARNESS_KAMAILIO` / `$PEER_HARNESS_SIPP`, then `PATH` and `/usr/sbin`.
//!
//! Starting is blocking (a few hundred milliseconds): call it before entering a tokio
//! runtime, or in `spawn_blocking`.
//!
//! ## Example
//!
//! ```no_run
//! use std::time::Duration;
//! use peer_harness::{scenarios, Deployment, Federation, SipTcpClient};
//!
//! let fed = Federation::start()?;
//!
//! // A SIPp UAS at fabrikam, registered as bob (digest over TCP).
//! let uas = fed
//!     .sipp("bob-uas", scenarios::UAS_MESSAGE)
//!     .calls(1)
//!     .spawn_listening(Duration::from_secs(5))?;
//! let mut client = SipTcpClient::connect(fed.fabrikam().tcp_addr(), Duration::from_secs(5))?;
//! let contact = format!("sip:bob@{};transport=tcp", uas.local_addr());
//! let reg = client.register("bob", "fabrikam.test", "bob-secret", &contact, 300,
//!                           Duration::from_secs(5))?;
//! assert_eq!(reg.response.status(), Some(200));
//!
//! // alice at contoso sends bob a MESSAGE: contoso relays it over federation TLS.
//! let uac = fed
//!     .sipp("alice-uac", scenarios::UAC_MESSAGE)
//!     .remote(fed.contoso().tcp_addr())
//!     .key("to_user", "bob")
//!     .key("to_domain", Deployment::Fabrikam.domain())
//!     .key("from_user", "alice")
//!     .key("from_domain", Deployment::Contoso.domain())
//!     .calls(1)
//!     .run()?;
//! assert!(uac.succeeded(), "{}", uac.report());
//! assert!(uas.wait()?.succeeded());
//!
//! // For the SDK under test: mutual TLS to contoso as the trusted application.
//! let app = fed.pki().application(Deployment::Contoso);
//! let (_cert_pem, _key_pem, _ca_pem) = (&app.cert_pem, &app.key_pem, fed.pki().ca_pem());
//! let (_addr, _server_name) = (fed.contoso().mtls_addr(), fed.contoso().fqdn());
//! # Ok::<(), peer_harness::HarnessError>(())
//! ```
//!
//! ## What it does not do
//!
//! No TLS in SIPp (Debian's build has none: SIPp talks TCP/UDP to a front end, the front end
//! talks TLS), no DNS (everything is addressed by loopback socket address; TLS names are
//! checked against certificates only), no databases (registrations and presence are in
//! memory and vanish with the instance).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod error;
mod federation;
mod kamailio;
mod pki;
mod process;
mod sipp;

pub use client::{status_line, Registration, SipTcpClient};
pub use error::{HarnessError, Result, INSTALL_HINT};
pub use federation::{Federation, FederationBuilder, DEFAULT_USERS};
pub use kamailio::FrontEnd;
pub use pki::{CertFiles, TestPki, FOREIGN_NAME, UNTRUSTED_NAME};
pub use process::{
    find_binary, free_tcp_ports, is_listening, listens_on, processes_in_group, unique_token,
};
pub use sipp::{scenarios, Sipp, SippOutcome, SippProcess, SippStats, SippTransport};

/// The two deployments of the fixture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Deployment {
    /// The home deployment: domain `contoso.test`, front end `fe.contoso.test`.
    Contoso,
    /// The federated deployment: domain `fabrikam.test`, front end `fe.fabrikam.test`.
    Fabrikam,
}

impl Deployment {
    /// The SIP domain.
    pub fn domain(self) -> &'static str {
        match self {
            Deployment::Contoso => "contoso.test",
            Deployment::Fabrikam => "fabrikam.test",
        }
    }

    /// The front end's name (and its certificate's CN and first DNS SAN).
    pub fn fqdn(self) -> &'static str {
        match self {
            Deployment::Contoso => "fe.contoso.test",
            Deployment::Fabrikam => "fe.fabrikam.test",
        }
    }

    /// The name of the application certificate this deployment's front end trusts.
    pub fn application(self) -> &'static str {
        match self {
            Deployment::Contoso => "app.contoso.test",
            Deployment::Fabrikam => "app.fabrikam.test",
        }
    }

    /// The other deployment (the federation partner).
    pub fn other(self) -> Deployment {
        match self {
            Deployment::Contoso => Deployment::Fabrikam,
            Deployment::Fabrikam => Deployment::Contoso,
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Deployment::Contoso => 0,
            Deployment::Fabrikam => 1,
        }
    }
}
