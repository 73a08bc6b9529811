//! RFC 3263 server location: which socket addresses, transports and TLS names serve a SIP
//! target.
//!
//! Static overrides come first (tests, and deployments without DNS name their front end
//! here). Then [`ServerLocator::resolve`] follows RFC 3263 §4 with DNS:
//!
//! 1. A numeric IP host is used as is (port: the URI's, else 5061 for TLS, 5060 otherwise).
//! 2. A host with an explicit port is looked up with A/AAAA only.
//! 3. A `transport=` parameter without a port skips NAPTR: SRV for that transport, then
//!    A/AAAA with the default port.
//! 4. Otherwise NAPTR (`SIPS+D2T`, `SIP+D2T`, `SIP+D2U`, kept only when the locator supports
//!    the transport, and only `SIPS+D2T` for a `sips:` target), ordered by order then
//!    preference (ties: TLS, TCP, UDP); each record's replacement is an SRV name.
//! 5. Without usable NAPTR records: SRV `_sips._tcp`, `_sip._tcp`, `_sip._udp` (supported ones,
//!    in that order; only `_sips._tcp` for `sips:`).
//! 6. Without SRV records: A/AAAA of the host with the default port (TLS for `sips:`; for
//!    `sip:` UDP, else TCP, else TLS, whichever is supported first, per RFC 3263 §4.1).
//!
//! SRV records are ordered by priority (ascending) and, within one priority, by RFC 2782's
//! weighted random selection (see [`order_srv`]): a target of weight 90 beside one of weight
//! 10 comes first about 90% of the time, so load spreads over front ends as the zone asks;
//! a weight-0 target has a small chance of coming first. A target of `.` (service not
//! offered) is skipped. Duplicate candidates are dropped.
//!
//! The TLS name of every candidate is the target's host (RFC 5922 §4: the domain of the URI,
//! not the SRV or NAPTR target).
//!
//! DNS is behind the small [`DnsLookup`] trait; the default, [`HickoryDns`], uses
//! hickory-resolver with the system configuration, or a configuration without name servers
//! (every lookup fails with [`LocateError::Dns`]) when the system's cannot be read.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use transport_tls::TransportKind;

/// The port of SIP over TLS when none is given (RFC 3261 §19.1.2).
pub const DEFAULT_TLS_PORT: u16 = 5061;
/// The port of SIP over UDP and TCP when none is given (RFC 3261 §19.1.2).
pub const DEFAULT_PORT: u16 = 5060;

/// One server for a target: where to connect, how, and the name its certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedServer {
    /// The socket address.
    pub addr: SocketAddr,
    /// The TLS name to verify (RFC 5922: the target's domain; an IP literal for a numeric
    /// host).
    pub server_name: String,
    /// The transport to use (overrides are TLS).
    pub transport: TransportKind,
}

/// Why a target could not be located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LocateError {
    /// No override and no DNS answer for the domain (a request there fails with 503).
    #[error("no server found for {0}")]
    NotFound(String),
    /// DNS failed (no name servers, timeout, server failure) and nothing else was found.
    #[error("DNS lookup failed: {0}")]
    Dns(String),
    /// The target is not a `sip:`/`sips:` URI or domain this locator can read.
    #[error("invalid target: {0}")]
    InvalidTarget(String),
    /// The target asks for a transport the locator does not support (or `sips:` over UDP).
    #[error("unsupported transport for {0}")]
    UnsupportedTransport(String),
}

/// A `sip:`/`sips:` target to locate: host, optional port, scheme and `transport=` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocateTarget {
    host: String,
    port: Option<u16>,
    secure: bool,
    transport: Option<TransportKind>,
}

impl LocateTarget {
    /// The domain `host` as a `sips:` target (TLS only): what a TLS outbound proxy needs.
    pub fn sips_domain(host: &str) -> Self {
        LocateTarget {
            host: host.trim_end_matches('.').to_ascii_lowercase(),
            port: None,
            secure: true,
            transport: None,
        }
    }

    /// The domain `host` as a `sip:` target (any supported transport).
    pub fn sip_domain(host: &str) -> Self {
        LocateTarget {
            secure: false,
            ..Self::sips_domain(host)
        }
    }

    /// Reads a `sip:` or `sips:` URI (`sip:user@host:port;transport=tcp`, IPv6 in brackets).
    /// Only the scheme, host, port and `transport` parameter matter here. The URI is read by
    /// sip-core's parser, so a user part holding `;` or `?` (a telephone number with
    /// `phone-context`, RFC 3261 §19.1.6) is not taken for parameters.
    pub fn parse_uri(uri: &str) -> Result<Self, LocateError> {
        let bad = || LocateError::InvalidTarget(uri.to_string());
        let parsed = sip_core::Uri::parse(uri.trim().as_bytes()).map_err(|_| bad())?;
        let sip = parsed.as_sip().ok_or_else(bad)?;
        let secure = sip.is_secure();
        let transport = match sip.transport() {
            None => None,
            Some(t) => Some(match t.to_ascii_lowercase().as_slice() {
                b"tls" => TransportKind::Tls,
                b"tcp" if secure => TransportKind::Tls,
                b"tcp" => TransportKind::Tcp,
                b"udp" => TransportKind::Udp,
                _ => return Err(LocateError::UnsupportedTransport(uri.to_string())),
            }),
        };
        // An IPv6 reference is kept without its brackets, as an address.
        let host = match sip.host().ip() {
            Some(ip) => ip.to_string(),
            None => String::from_utf8_lossy(sip.host_raw()).into_owned(),
        };
        let port = sip.port();
        if port == Some(0) {
            return Err(bad());
        }
        Ok(LocateTarget {
            host: host.trim_end_matches('.').to_ascii_lowercase(),
            port,
            secure,
            transport,
        })
    }

    /// The same target with an explicit port.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The same target with an explicit transport (`transport=` parameter).
    pub fn with_transport(mut self, transport: TransportKind) -> Self {
        self.transport = Some(transport);
        self
    }

    /// The host (lower case, no trailing dot).
    pub fn host(&self) -> &str {
        &self.host
    }
}

/// A NAPTR record as the locator needs it (RFC 3403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NaptrRecord {
    /// Lower orders are used first.
    pub order: u16,
    /// Within one order, lower preferences are used first.
    pub preference: u16,
    /// The flags (`s` for an SRV replacement).
    pub flags: String,
    /// The service (`SIPS+D2T`, `SIP+D2T`, `SIP+D2U`, ...).
    pub service: String,
    /// The replacement name (an SRV owner name).
    pub replacement: String,
}

/// An SRV record (RFC 2782).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    /// Lower priorities are used first.
    pub priority: u16,
    /// Within one priority, the relative chance of being used first (RFC 2782 weighted
    /// random selection, see [`order_srv`]).
    pub weight: u16,
    /// The port.
    pub port: u16,
    /// The target host (`.` when the service is not offered).
    pub target: String,
}

/// A boxed future returned by [`DnsLookup`] methods.
pub type DnsFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, LocateError>> + Send + 'a>>;

/// The DNS queries RFC 3263 needs. A name without records (NXDOMAIN, no data) is an empty
/// answer, not an error; errors are [`LocateError::Dns`].
pub trait DnsLookup: fmt::Debug + Send + Sync {
    /// NAPTR records of `name`.
    fn naptr<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<NaptrRecord>>;
    /// SRV records of `name` (for example `_sips._tcp.contoso.test`).
    fn srv<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<SrvRecord>>;
    /// A and AAAA addresses of `host`.
    fn ip<'a>(&'a self, host: &'a str) -> DnsFuture<'a, Vec<IpAddr>>;
}

/// [`DnsLookup`] over hickory-resolver, built on first use from the system configuration
/// (`/etc/resolv.conf`), or, when that cannot be read, from a configuration without name
/// servers whose lookups all fail with [`LocateError::Dns`].
#[derive(Default)]
pub struct HickoryDns {
    resolver: OnceLock<hickory_resolver::TokioResolver>,
}

impl fmt::Debug for HickoryDns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HickoryDns")
            .field("built", &self.resolver.get().is_some())
            .finish()
    }
}

impl HickoryDns {
    /// A resolver built lazily from the system configuration.
    pub fn new() -> Self {
        Self::default()
    }

    fn resolver(&self) -> &hickory_resolver::TokioResolver {
        self.resolver.get_or_init(|| {
            use hickory_resolver::config::ResolverConfig;
            use hickory_resolver::name_server::TokioConnectionProvider;
            use hickory_resolver::Resolver;
            match Resolver::builder_tokio() {
                Ok(b) => b.build(),
                Err(e) => {
                    tracing::warn!(error = %e, "no usable DNS configuration; DNS lookups will fail");
                    Resolver::builder_with_config(
                        ResolverConfig::new(),
                        TokioConnectionProvider::default(),
                    )
                    .build()
                }
            }
        })
    }

    async fn records(
        &self,
        name: &str,
        kind: hickory_resolver::proto::rr::RecordType,
    ) -> Result<Vec<hickory_resolver::proto::rr::RData>, LocateError> {
        let fqdn = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        match self.resolver().lookup(fqdn.as_str(), kind).await {
            Ok(l) => Ok(l.iter().cloned().collect()),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
            Err(e) => Err(LocateError::Dns(format!("{kind} {name}: {e}"))),
        }
    }
}

fn name_text(n: &hickory_resolver::Name) -> String {
    let s = n.to_utf8();
    if s == "." {
        s
    } else {
        s.trim_end_matches('.').to_ascii_lowercase()
    }
}

impl DnsLookup for HickoryDns {
    fn naptr<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<NaptrRecord>> {
        Box::pin(async move {
            use hickory_resolver::proto::rr::{RData, RecordType};
            let rs = self.records(name, RecordType::NAPTR).await?;
            Ok(rs
                .into_iter()
                .filter_map(|r| match r {
                    RData::NAPTR(n) => Some(NaptrRecord {
                        order: n.order(),
                        preference: n.preference(),
                        flags: String::from_utf8_lossy(n.flags()).into_owned(),
                        service: String::from_utf8_lossy(n.services()).into_owned(),
                        replacement: name_text(n.replacement()),
                    }),
                    _ => None,
                })
                .collect())
        })
    }

    fn srv<'a>(&'a self, name: &'a str) -> DnsFuture<'a, Vec<SrvRecord>> {
        Box::pin(async move {
            use hickory_resolver::proto::rr::{RData, RecordType};
            let rs = self.records(name, RecordType::SRV).await?;
            Ok(rs
                .into_iter()
                .filter_map(|r| match r {
                    RData::SRV(s) => Some(SrvRecord {
                        priority: s.priority(),
                        weight: s.weight(),
                        port: s.port(),
                        target: name_text(s.target()),
                    }),
                    _ => None,
                })
                .collect())
        })
    }

    fn ip<'a>(&'a self, host: &'a str) -> DnsFuture<'a, Vec<IpAddr>> {
        Box::pin(async move {
            let fqdn = format!("{}.", host.trim_end_matches('.'));
            match self.resolver().lookup_ip(fqdn.as_str()).await {
                Ok(l) => Ok(l.iter().collect()),
                Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
                Err(e) => Err(LocateError::Dns(format!("A/AAAA {host}: {e}"))),
            }
        })
    }
}

/// Finds the servers of a target: static overrides, then DNS (RFC 3263, see the module doc).
#[derive(Debug, Clone)]
pub struct ServerLocator {
    overrides: HashMap<String, Vec<LocatedServer>>,
    dns: Option<Arc<dyn DnsLookup>>,
    transports: Vec<TransportKind>,
}

impl Default for ServerLocator {
    fn default() -> Self {
        ServerLocator {
            overrides: HashMap::new(),
            dns: Some(Arc::new(HickoryDns::new())),
            transports: vec![TransportKind::Tls, TransportKind::Tcp, TransportKind::Udp],
        }
    }
}

impl ServerLocator {
    /// A locator with no overrides, DNS through [`HickoryDns`], and TLS, TCP and UDP
    /// supported.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `domain` (case-insensitive) from `addr` over TLS, verifying `server_name`.
    /// Several overrides for one domain are tried in the order given.
    pub fn with_override(
        mut self,
        domain: &str,
        addr: SocketAddr,
        server_name: impl Into<String>,
    ) -> Self {
        self.overrides
            .entry(domain.to_ascii_lowercase())
            .or_default()
            .push(LocatedServer {
                addr,
                server_name: server_name.into().to_ascii_lowercase(),
                transport: TransportKind::Tls,
            });
        self
    }

    /// Uses `dns` instead of hickory-resolver (tests, or a deployment's own resolver).
    pub fn with_dns(mut self, dns: impl DnsLookup + 'static) -> Self {
        self.dns = Some(Arc::new(dns));
        self
    }

    /// No DNS: only overrides and numeric hosts are located.
    pub fn without_dns(mut self) -> Self {
        self.dns = None;
        self
    }

    /// The transports candidates may use (NAPTR and SRV records of others are ignored).
    /// Default: TLS, TCP, UDP.
    pub fn with_transports(mut self, transports: &[TransportKind]) -> Self {
        self.transports = transports.to_vec();
        self
    }

    /// The servers of `domain` from the overrides (or a `host:port` socket address), in the
    /// order to try them. No DNS: that is [`ServerLocator::resolve`], which is async.
    pub fn locate(&self, domain: &str) -> Result<Vec<LocatedServer>, LocateError> {
        if let Ok(addr) = domain.parse::<SocketAddr>() {
            return Ok(vec![LocatedServer {
                addr,
                server_name: addr.ip().to_string(),
                transport: TransportKind::Tls,
            }]);
        }
        self.overrides
            .get(&domain.to_ascii_lowercase())
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| LocateError::NotFound(domain.to_string()))
    }

    /// The candidates for `target` in the order to try them (fail over down the list):
    /// overrides of its host, else RFC 3263 as described in the module doc. Never empty on
    /// success.
    pub async fn resolve(&self, target: &LocateTarget) -> Result<Vec<LocatedServer>, LocateError> {
        if let Some(v) = self.overrides.get(&target.host).filter(|v| !v.is_empty()) {
            return Ok(v.clone());
        }
        let what = || target.host.clone();
        if let Some(t) = target.transport {
            if !self.transports.contains(&t) || (target.secure && t != TransportKind::Tls) {
                return Err(LocateError::UnsupportedTransport(what()));
            }
        }
        let default_transport = target.transport.or_else(|| self.default_transport(target));
        if let Ok(ip) = target.host.parse::<IpAddr>() {
            let t = default_transport.ok_or_else(|| LocateError::UnsupportedTransport(what()))?;
            return Ok(vec![LocatedServer {
                addr: SocketAddr::new(ip, target.port.unwrap_or(default_port(t))),
                server_name: target.host.clone(),
                transport: t,
            }]);
        }
        let dns = self
            .dns
            .as_deref()
            .ok_or_else(|| LocateError::NotFound(what()))?;
        let mut out = Candidates::new(target.host.clone());
        let mut last_err = None;
        if let Some(port) = target.port {
            let t = default_transport.ok_or_else(|| LocateError::UnsupportedTransport(what()))?;
            out.hosts(dns, &target.host, port, t, &mut last_err).await;
            return out.finish(last_err);
        }
        // NAPTR, unless the URI fixed the transport.
        if target.transport.is_none() {
            match dns.naptr(&target.host).await {
                Ok(records) => {
                    for (t, srv_name) in self.order_naptr(target, records) {
                        out.srv(dns, &srv_name, t, &mut last_err).await;
                    }
                }
                Err(e) => last_err = Some(e),
            }
            if !out.is_empty() {
                return out.finish(last_err);
            }
        }
        // SRV for each transport that may serve the target.
        let transports: Vec<TransportKind> = match target.transport {
            Some(t) => vec![t],
            None => [TransportKind::Tls, TransportKind::Tcp, TransportKind::Udp]
                .into_iter()
                .filter(|t| self.transports.contains(t))
                .filter(|t| !target.secure || *t == TransportKind::Tls)
                .collect(),
        };
        for t in transports {
            let name = format!("{}.{}", srv_prefix(t), target.host);
            out.srv(dns, &name, t, &mut last_err).await;
        }
        if !out.is_empty() {
            return out.finish(last_err);
        }
        // A/AAAA with the default port.
        let t = default_transport.ok_or_else(|| LocateError::UnsupportedTransport(what()))?;
        out.hosts(dns, &target.host, default_port(t), t, &mut last_err)
            .await;
        out.finish(last_err)
    }

    /// RFC 3263 §4.1 default when nothing else says: TLS for `sips:`; for `sip:` UDP, then
    /// TCP, then TLS, the first supported.
    fn default_transport(&self, target: &LocateTarget) -> Option<TransportKind> {
        let order: &[TransportKind] = if target.secure {
            &[TransportKind::Tls]
        } else {
            &[TransportKind::Udp, TransportKind::Tcp, TransportKind::Tls]
        };
        order.iter().copied().find(|t| self.transports.contains(t))
    }

    /// The usable NAPTR records as (transport, SRV name), in the order to use them.
    fn order_naptr(
        &self,
        target: &LocateTarget,
        records: Vec<NaptrRecord>,
    ) -> Vec<(TransportKind, String)> {
        let mut usable: Vec<(u16, u16, u8, TransportKind, String)> = records
            .into_iter()
            .filter(|r| r.flags.eq_ignore_ascii_case("s"))
            .filter_map(|r| {
                let t = naptr_transport(&r.service)?;
                if !self.transports.contains(&t) || (target.secure && t != TransportKind::Tls) {
                    return None;
                }
                let rank = transport_rank(t);
                Some((r.order, r.preference, rank, t, r.replacement))
            })
            .filter(|r| !r.4.is_empty() && r.4 != ".")
            .collect();
        usable.sort_by_key(|r| (r.0, r.1, r.2));
        usable.into_iter().map(|r| (r.3, r.4)).collect()
    }
}

/// Default port of a transport.
fn default_port(t: TransportKind) -> u16 {
    if t == TransportKind::Tls {
        DEFAULT_TLS_PORT
    } else {
        DEFAULT_PORT
    }
}

/// TLS first, then TCP, then UDP.
fn transport_rank(t: TransportKind) -> u8 {
    match t {
        TransportKind::Tls => 0,
        TransportKind::Tcp => 1,
        _ => 2,
    }
}

fn srv_prefix(t: TransportKind) -> &'static str {
    match t {
        TransportKind::Tls => "_sips._tcp",
        TransportKind::Tcp => "_sip._tcp",
        _ => "_sip._udp",
    }
}

fn naptr_transport(service: &str) -> Option<TransportKind> {
    match service.to_ascii_uppercase().as_str() {
        "SIPS+D2T" => Some(TransportKind::Tls),
        "SIP+D2T" => Some(TransportKind::Tcp),
        "SIP+D2U" => Some(TransportKind::Udp),
        _ => None,
    }
}

/// SRV records in the order to use them (RFC 2782): priority ascending and, within one
/// priority, repeated weighted random picks (see [`order_srv_with`]); `.` targets dropped.
/// The random numbers come from the thread's random number generator.
pub fn order_srv(records: Vec<SrvRecord>) -> Vec<SrvRecord> {
    use rand::Rng;
    let mut rng = rand::rng();
    order_srv_with(records, &mut |total| rng.random_range(0..=total))
}

/// [`order_srv`] with the random numbers from `random`, which is given the sum of the
/// weights still to order, `total`, and returns a number in `0..=total` (uniformly, for
/// RFC 2782's distribution; a larger one is read as `total`).
///
/// RFC 2782's selection, for each priority from the lowest: the records not yet ordered
/// are listed weight-0 records first, then the others, each group in answer order; a number
/// `r` is drawn in `0..=total` and the first record whose running sum of weights is at
/// least `r` is taken next. A record is thus taken with a chance of `(weight + 1) / (total
/// + 1)` when it is first in the list and `weight / (total + 1)` otherwise, so a weight-0
/// record is rarely first. `random` is not called when one record is left.
pub fn order_srv_with(
    mut records: Vec<SrvRecord>,
    random: &mut impl FnMut(u64) -> u64,
) -> Vec<SrvRecord> {
    records.retain(|r| !r.target.is_empty() && r.target != ".");
    // A stable sort: answer order within (priority, weight-0 first).
    records.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut out = Vec::with_capacity(records.len());
    let mut rest = records.into_iter().peekable();
    while let Some(first) = rest.next() {
        let priority = first.priority;
        let mut group = vec![first];
        while let Some(r) = rest.next_if(|r| r.priority == priority) {
            group.push(r);
        }
        while group.len() > 1 {
            let total = group.iter().map(|r| u64::from(r.weight)).sum::<u64>();
            let pick = random(total).min(total);
            let mut running = 0u64;
            let i = group
                .iter()
                .position(|r| {
                    running += u64::from(r.weight);
                    running >= pick
                })
                .unwrap_or(group.len() - 1);
            out.push(group.remove(i));
        }
        out.extend(group);
    }
    out
}

/// The candidate list being built, without duplicates.
struct Candidates {
    server_name: String,
    list: Vec<LocatedServer>,
}

impl Candidates {
    fn new(server_name: String) -> Self {
        Candidates {
            server_name,
            list: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    async fn hosts(
        &mut self,
        dns: &dyn DnsLookup,
        host: &str,
        port: u16,
        transport: TransportKind,
        last_err: &mut Option<LocateError>,
    ) {
        let ips = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => match dns.ip(host).await {
                Ok(ips) => ips,
                Err(e) => {
                    *last_err = Some(e);
                    return;
                }
            },
        };
        for ip in ips {
            let c = LocatedServer {
                addr: SocketAddr::new(ip, port),
                server_name: self.server_name.clone(),
                transport,
            };
            if !self.list.contains(&c) {
                self.list.push(c);
            }
        }
    }

    async fn srv(
        &mut self,
        dns: &dyn DnsLookup,
        name: &str,
        transport: TransportKind,
        last_err: &mut Option<LocateError>,
    ) {
        let records = match dns.srv(name).await {
            Ok(r) => r,
            Err(e) => {
                *last_err = Some(e);
                return;
            }
        };
        for r in order_srv(records) {
            self.hosts(dns, &r.target, r.port, transport, last_err)
                .await;
        }
    }

    fn finish(self, last_err: Option<LocateError>) -> Result<Vec<LocatedServer>, LocateError> {
        if !self.list.is_empty() {
            return Ok(self.list);
        }
        Err(last_err.unwrap_or(LocateError::NotFound(self.server_name)))
    }
}

#[cfg(test)]
mod tests;
