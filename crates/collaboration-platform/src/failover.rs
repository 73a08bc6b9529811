//! Which server of the outbound proxy the platform uses (RFC 3263 §4.3: the located
//! servers are tried in order until one answers), and the search for another one when the
//! current server is lost.
//!
//! A server is "reachable" when a connection to it opens and the server keeps it: TCP
//! connect and, for TLS, the handshake, both within the transport's
//! `TransportLimits::handshake_timeout` (default 10 s); then, for TLS, a keep-alive ping
//! (`SipTransport::connect_confirmed`) answered by a pong, or no close within
//! [`CONFIRM_MAX`] (or the handshake timeout if shorter). The ping is needed because under
//! TLS 1.3 a front end that refuses the platform's certificate says so only after our side
//! of the handshake has ended: without it that server would look reachable, be chosen, and
//! drop the connection at once. A refused server is an attempt like any other (its error
//! names the refusal) and the next server is tried. Plain TCP is not confirmed: there is
//! no certificate to refuse, and a peer that never pongs (SIPp) would cost the whole bound.

use crate::error::ProxyAttempt;
use crate::locate::{LocateError, LocateTarget, ServerLocator};
use crate::settings::ProxyTransport;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use transport_tls::{SipTransport, Target, TransportKind};

/// The longest wait, after a TLS handshake, for the server to pong or refuse our
/// certificate. A refusal comes one round trip after the handshake, a pong too; 2 s is
/// many round trips even across continents, and it is also what a server that accepts us
/// and never pongs costs once per start or failover, so it stays short. Never longer than
/// the transport's handshake timeout, the bound the user chose for one server.
pub(crate) const CONFIRM_MAX: Duration = Duration::from_secs(2);

/// The first pause between two rounds of a search that found nothing; it doubles up to
/// [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(1);
/// The longest pause between two rounds of a search.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The servers of an outbound proxy given by domain, and how to find them again.
#[derive(Debug, Clone)]
pub(crate) struct ProxyPool {
    /// The proxy's domain (for the error and the logs).
    pub domain: String,
    /// What to locate again when every known server failed.
    pub locate: LocateTarget,
    pub locator: ServerLocator,
    /// The transport and, for TLS, the name every server's certificate must carry.
    pub transport: ProxyTransport,
    /// The servers in the order to try them, from the last resolution.
    pub servers: Vec<SocketAddr>,
    /// The index in `servers` of the one in use.
    pub current: usize,
}

impl ProxyPool {
    /// The connection target of the server at `addr`.
    pub fn target(&self, addr: SocketAddr) -> Target {
        self.transport.target(addr)
    }

    /// The servers of the domain, in the order to try them (RFC 3263).
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>, LocateError> {
        let found = self.locator.resolve(&self.locate).await?;
        let mut out: Vec<SocketAddr> = Vec::with_capacity(found.len());
        for s in found {
            if !out.contains(&s.addr) {
                out.push(s.addr);
            }
        }
        if out.is_empty() {
            return Err(LocateError::NotFound(self.domain.clone()));
        }
        Ok(out)
    }

    /// Connects to the servers listed in `order` (indices into `servers`) one after the
    /// other; the index of the first that opens (and, for TLS, keeps the connection after
    /// seeing our certificate: see the module doc), else what each attempt met.
    pub async fn first_reachable(
        &self,
        transport: &SipTransport,
        order: impl IntoIterator<Item = usize>,
    ) -> Result<usize, Vec<ProxyAttempt>> {
        let mut attempts = Vec::new();
        for i in order {
            let Some(&addr) = self.servers.get(i) else {
                continue;
            };
            let target = self.target(addr);
            let opened = match target.transport {
                TransportKind::Tls => {
                    let within = CONFIRM_MAX.min(transport.limits().handshake_timeout);
                    transport
                        .connect_confirmed(&target, within)
                        .await
                        .map(|(_, confirmation)| {
                            tracing::debug!(%addr, ?confirmation, "outbound proxy server kept the connection");
                        })
                }
                _ => transport.connect(&target).await.map(|_| ()),
            };
            match opened {
                Ok(()) => return Ok(i),
                Err(error) => {
                    tracing::debug!(%addr, %error, domain = %self.domain, "outbound proxy server unreachable");
                    attempts.push(ProxyAttempt { addr, error });
                }
            }
        }
        Err(attempts)
    }
}

/// The server a search settled on: the pool as it now stands, `current` the one to use.
#[derive(Debug)]
pub(crate) struct Found(pub ProxyPool);

/// Looks for a reachable server after the current one was lost: the current one again
/// (a connection that dropped may open again), then the next ones in order, wrapping
/// around; when all failed, the domain is located again and the new list tried from its
/// start, again and again with growing pauses, until one opens. The outcome goes to
/// `found`; the search ends early when nobody listens there any more (the platform
/// stopped). Every attempt is bounded (see the module doc), so is every pause.
pub(crate) async fn search(
    transport: SipTransport,
    mut pool: ProxyPool,
    found: mpsc::UnboundedSender<Found>,
) {
    let n = pool.servers.len();
    let order = (0..n).map(|k| (pool.current + k) % n);
    if let Ok(i) = pool.first_reachable(&transport, order).await {
        pool.current = i;
        let _ = found.send(Found(pool));
        return;
    }
    let mut pause = RETRY_MIN;
    loop {
        if found.is_closed() {
            return;
        }
        match pool.resolve().await {
            Ok(servers) => {
                pool.servers = servers;
                let n = pool.servers.len();
                if let Ok(i) = pool.first_reachable(&transport, 0..n).await {
                    pool.current = i;
                    let _ = found.send(Found(pool));
                    return;
                }
            }
            Err(error) => {
                tracing::debug!(%error, domain = %pool.domain, "outbound proxy not located again");
            }
        }
        tracing::warn!(domain = %pool.domain, retry_in = ?pause, "no server of the outbound proxy is reachable");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_MAX);
    }
}
