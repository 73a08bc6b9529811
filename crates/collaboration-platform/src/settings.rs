//! What a platform needs to start: who it is, where it listens, whom it trusts, and its
//! front end. Two kinds, as in UCMA: [`ServerPlatformSettings`] for a trusted application
//! (listens, presents its certificate, trusts named peers) and [`ClientPlatformSettings`]
//! for endpoints that authenticate as users (no listener).

use crate::locate::ServerLocator;
use crate::topology::Topology;
use std::net::SocketAddr;
use std::time::Duration;
use transport_tls::{Identity, Target, TlsConfigError, TransportSettings, TrustRoots};

/// Where every request goes: the front end (RFC 3261 §8.1.2 outbound proxy). The SDK never
/// routes around it, not even to a federated party: the front end hands that to its edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundProxy {
    pub(crate) host: ProxyHost,
    pub(crate) transport: ProxyTransport,
}

/// The proxy's address: a socket address, or a domain to locate (RFC 3263).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProxyHost {
    Addr(SocketAddr),
    Domain(String),
}

/// How the platform reaches its proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProxyTransport {
    /// TLS, verifying the proxy's certificate for this name.
    Tls { server_name: String },
    /// Plain TCP (laboratories; no peer identity, so nothing is trusted by certificate).
    Tcp,
}

impl ProxyTransport {
    /// The connection target of the proxy's server at `addr`.
    pub(crate) fn target(&self, addr: SocketAddr) -> Target {
        match self {
            ProxyTransport::Tls { server_name } => Target::tls(addr, server_name.clone()),
            ProxyTransport::Tcp => Target::tcp(addr),
        }
    }
}

impl OutboundProxy {
    /// The front end at `addr` over TLS; its certificate must be valid for `server_name`
    /// (the front end's FQDN). Its connections are trusted: `server_name` is a trusted peer.
    pub fn tls(addr: SocketAddr, server_name: impl Into<String>) -> Self {
        OutboundProxy {
            host: ProxyHost::Addr(addr),
            transport: ProxyTransport::Tls {
                server_name: server_name.into().to_ascii_lowercase(),
            },
        }
    }

    /// The front end named `fqdn` over TLS, located at start by the settings'
    /// [`ServerLocator`] (static overrides, then DNS when enabled); its certificate must
    /// be valid for `fqdn`.
    pub fn tls_domain(fqdn: impl Into<String>) -> Self {
        let fqdn = fqdn.into().to_ascii_lowercase();
        OutboundProxy {
            host: ProxyHost::Domain(fqdn.clone()),
            transport: ProxyTransport::Tls { server_name: fqdn },
        }
    }

    /// The front end at `addr` over plain TCP: no certificates, for laboratories only.
    pub fn tcp(addr: SocketAddr) -> Self {
        OutboundProxy {
            host: ProxyHost::Addr(addr),
            transport: ProxyTransport::Tcp,
        }
    }

    /// The TLS name the proxy's certificate must carry (`None` over TCP).
    pub fn server_name(&self) -> Option<&str> {
        match &self.transport {
            ProxyTransport::Tls { server_name } => Some(server_name),
            ProxyTransport::Tcp => None,
        }
    }
}

/// The transport of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ListenerKind {
    /// Mutual TLS: a client certificate from the trust roots is required.
    MutualTls,
    /// Plain TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// One listening socket and its trust policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub(crate) kind: ListenerKind,
    pub(crate) addr: SocketAddr,
    pub(crate) allow_untrusted: bool,
}

impl Listener {
    /// Mutual TLS on `addr` (port 0 picks one): only peers with a certificate from the trust
    /// roots connect, and only [trusted peers](ServerPlatformSettings::trusted_peer) get past
    /// the platform's 403.
    pub fn mutual_tls(addr: SocketAddr) -> Self {
        Listener {
            kind: ListenerKind::MutualTls,
            addr,
            allow_untrusted: false,
        }
    }

    /// Plain TCP on `addr`. Without certificates nobody is a trusted peer: requests get 403
    /// unless [`allow_untrusted_peers`](Self::allow_untrusted_peers) is set.
    pub fn tcp(addr: SocketAddr) -> Self {
        Listener {
            kind: ListenerKind::Tcp,
            addr,
            allow_untrusted: false,
        }
    }

    /// UDP on `addr` (same trust rule as TCP). On the unspecified address (0.0.0.0,
    /// `[::]`), on Linux, a request's responses leave from the address it was sent to (RFC
    /// 3581 §4); elsewhere from the one the system's routing picks.
    pub fn udp(addr: SocketAddr) -> Self {
        Listener {
            kind: ListenerKind::Udp,
            addr,
            allow_untrusted: false,
        }
    }

    /// Accepts requests from peers that are not trusted peers on this listener (the
    /// explicit opt-out of the front end's own check, e.g. for laboratories over TCP).
    ///
    /// Nobody vouches for what arrives here: a request's caller is classified from its
    /// From header alone, so any peer that reaches the listener can pass for a home user.
    /// Never use it where the network is not yours.
    pub fn allow_untrusted_peers(mut self) -> Self {
        self.allow_untrusted = true;
        self
    }
}

/// Knobs shared by both kinds of settings.
#[derive(Debug, Clone)]
pub(crate) struct Common {
    pub user_agent: String,
    pub proxy: OutboundProxy,
    pub roots: TrustRoots,
    pub topology: Topology,
    pub locator: ServerLocator,
    pub transport: TransportSettings,
    pub command_capacity: usize,
    pub endpoint_capacity: usize,
    pub shutdown_grace: Duration,
    pub transaction: sip_core::transaction::TransactionConfig,
    pub observer: Option<std::sync::Arc<dyn crate::MessageObserver>>,
}

impl std::fmt::Debug for dyn crate::MessageObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MessageObserver")
    }
}

impl Common {
    fn new(user_agent: String, proxy: OutboundProxy, roots: TrustRoots) -> Self {
        Common {
            user_agent,
            proxy,
            roots,
            topology: Topology::new(Vec::<String>::new()),
            locator: ServerLocator::new(),
            transport: TransportSettings::new(),
            command_capacity: 4096,
            endpoint_capacity: 1024,
            shutdown_grace: Duration::from_secs(5),
            transaction: Default::default(),
            observer: None,
        }
    }
}

macro_rules! common_setters {
    () => {
        /// The deployment's topology: who is homed where, which partners are allowed.
        /// Default: no home domain (every party is federated).
        pub fn topology(mut self, topology: Topology) -> Self {
            self.common.topology = topology;
            self
        }

        /// Static RFC 3263 overrides and DNS use for locating servers by domain.
        pub fn locator(mut self, locator: ServerLocator) -> Self {
            self.common.locator = locator;
            self
        }

        /// Transport limits, keep-alive and queue sizes (the TLS client part is set by the
        /// platform from these settings).
        pub fn transport(mut self, transport: TransportSettings) -> Self {
            self.common.transport = transport;
            self
        }

        /// Capacity of the command queue into the runtime (requests to send, responses);
        /// callers wait when it is full (backpressure). Default 4 096.
        pub fn command_capacity(mut self, n: usize) -> Self {
            self.common.command_capacity = n.max(1);
            self
        }

        /// Requests queued per endpoint before the platform answers 503 for it. Default
        /// 1 024.
        pub fn endpoint_capacity(mut self, n: usize) -> Self {
            self.common.endpoint_capacity = n.max(1);
            self
        }

        /// How long [`shutdown`](crate::CollaborationPlatform::shutdown) lets live
        /// transactions finish before cancelling them. Default 5 s.
        pub fn shutdown_grace(mut self, grace: Duration) -> Self {
            self.common.shutdown_grace = grace;
            self
        }

        /// A tap that sees every SIP message sent and received (ladder diagrams, audit).
        pub fn observer(mut self, observer: std::sync::Arc<dyn crate::MessageObserver>) -> Self {
            self.common.observer = Some(observer);
            self
        }

        /// Transaction timers (T1, T2, T4 …); the defaults are RFC 3261's.
        pub fn transaction_timers(
            mut self,
            config: sip_core::transaction::TransactionConfig,
        ) -> Self {
            self.common.transaction = config;
            self
        }
    };
}

/// A trusted application: it listens (mutual TLS), presents its certificate to its front
/// end and to every peer, and accepts requests only from trusted peers.
///
/// Mutual TLS is not optional here: the identity is required by [`new`](Self::new).
#[derive(Debug, Clone)]
pub struct ServerPlatformSettings {
    pub(crate) common: Common,
    pub(crate) fqdn: String,
    pub(crate) identity: Identity,
    pub(crate) listeners: Vec<Listener>,
    pub(crate) trusted_peers: Vec<String>,
}

impl ServerPlatformSettings {
    /// A trusted application named `fqdn` (its certificate's name), presenting `identity`,
    /// verifying peers with `roots`, sending everything to `proxy`. The proxy's TLS name is
    /// a trusted peer; add listeners and more trusted peers with the builder methods.
    pub fn new(
        user_agent: impl Into<String>,
        fqdn: impl Into<String>,
        identity: Identity,
        roots: TrustRoots,
        proxy: OutboundProxy,
    ) -> Self {
        let mut trusted_peers = Vec::new();
        if let Some(n) = proxy.server_name() {
            trusted_peers.push(n.to_string());
        }
        ServerPlatformSettings {
            common: Common::new(user_agent.into(), proxy, roots),
            fqdn: fqdn.into().to_ascii_lowercase(),
            identity,
            listeners: Vec::new(),
            trusted_peers,
        }
    }

    /// As [`new`](Self::new), reading the certificate chain, key and roots from PEM files.
    pub fn from_pem_files(
        user_agent: impl Into<String>,
        fqdn: impl Into<String>,
        cert: impl AsRef<std::path::Path>,
        key: impl AsRef<std::path::Path>,
        ca: impl AsRef<std::path::Path>,
        proxy: OutboundProxy,
    ) -> Result<Self, TlsConfigError> {
        let identity = Identity::from_pem_files(cert, key)?;
        let roots = TrustRoots::from_pem_file(ca)?;
        Ok(Self::new(user_agent, fqdn, identity, roots, proxy))
    }

    /// Adds a listener.
    pub fn listen(mut self, listener: Listener) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Trusts connections whose verified certificate carries `fqdn` (a DNS SAN, or the CN of
    /// a certificate without DNS SANs; wildcards match nothing, RFC 5922 §7): a
    /// front end or edge of the home deployment. Compared as DNS names are, without case or
    /// the trailing dot of an absolute name, an internationalised name in either form (as
    /// [`Topology`](crate::Topology) compares domains): `FE.contoso.test.` trusts
    /// `fe.contoso.test`.
    ///
    /// The caller of a request from a trusted peer is classified from its From header, so
    /// trust only peers that vouch for the From of what they forward. A front end does; an
    /// edge that relays another deployment's traffic for a domain it shares with the home
    /// one (hybrid) cannot tell a cloud user's From from a home user's.
    pub fn trusted_peer(mut self, fqdn: impl Into<String>) -> Self {
        // Normalised (case, trailing dot, IDN) with the others when the platform starts.
        self.trusted_peers.push(fqdn.into());
        self
    }

    common_setters!();
}

/// An endpoint that authenticates as a user (digest): no listener; requests to it come back
/// over its connection to the front end, which is its only trusted peer.
#[derive(Debug, Clone)]
pub struct ClientPlatformSettings {
    pub(crate) common: Common,
    pub(crate) identity: Option<Identity>,
}

impl ClientPlatformSettings {
    /// A client platform sending everything to `proxy`, verifying it with `roots`.
    pub fn new(user_agent: impl Into<String>, roots: TrustRoots, proxy: OutboundProxy) -> Self {
        ClientPlatformSettings {
            common: Common::new(user_agent.into(), proxy, roots),
            identity: None,
        }
    }

    /// Presents a client certificate to the proxy (mutual TLS as a client).
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    common_setters!();
}

/// Either kind of settings; [`CollaborationPlatform::start`](crate::CollaborationPlatform::start)
/// takes both.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum PlatformSettings {
    /// A trusted application.
    Server(ServerPlatformSettings),
    /// A user-authenticated client.
    Client(ClientPlatformSettings),
}

impl From<ServerPlatformSettings> for PlatformSettings {
    fn from(s: ServerPlatformSettings) -> Self {
        PlatformSettings::Server(s)
    }
}

impl From<ClientPlatformSettings> for PlatformSettings {
    fn from(s: ClientPlatformSettings) -> Self {
        PlatformSettings::Client(s)
    }
}
