//! The connection manager: listeners, outbound flows, per-connection reader and writer
//! tasks, keep-alive and limits.

// foldhash (seeded per map) instead of SipHash: these maps are looked up for every message.
use foldhash::{HashMap, HashMapExt};
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sip_core::framer::{Frame, FrameError, StreamFramer};
use sip_core::{Host, SipMessage};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::futures::Notified;
use tokio::sync::{mpsc, watch, Notify, OnceCell};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};
use tracing::Instrument;

use crate::config::{KeepAlive, TransportLimits, TransportSettings};
use crate::error::{CloseReason, TlsRefusal, TransportError};
use crate::pktinfo::UdpEndpoint;
use crate::tls::{PeerIdentity, TlsServerSettings};

/// Room reserved in a quiet connection's receive buffer before a read: every idle
/// connection holds this much while it waits.
const READ_CHUNK_MIN: usize = 2 * 1024;
/// Most room reserved before a read, reached by doubling while reads fill the room.
const READ_CHUNK_MAX: usize = 16 * 1024;
/// A connection from which nothing came for this long gives back a receive buffer that
/// grew past [`READ_CHUNK_MIN`].
const READ_QUIET: Duration = Duration::from_secs(2);
/// Most bytes the writer gathers from queued messages into one write.
const WRITE_BATCH: usize = 64 * 1024;
/// After an error that closes a connection, how long received bytes are drained so that the
/// last response (a 513) is not destroyed by a TCP reset.
const LINGER: Duration = Duration::from_millis(500);
/// Shards of the connection and flow tables.
const SHARDS: usize = 16;

/// `t + d`, or a time that never comes when that overflows: a limit of `Duration::MAX`
/// means no limit, and must not panic the connection's task (`Instant + Duration` does).
fn later(t: Instant, d: Duration) -> Instant {
    t.checked_add(d)
        .unwrap_or_else(|| t + Duration::from_secs(30 * 365 * 86_400))
}

/// Which transport a message or connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// UDP datagrams.
    Udp,
    /// Plain TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl TransportKind {
    /// The Via transport token (`UDP`, `TCP`, `TLS`).
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Udp => "UDP",
            TransportKind::Tcp => "TCP",
            TransportKind::Tls => "TLS",
        }
    }

    /// The default port (5060, or 5061 for TLS).
    pub fn default_port(self) -> u16 {
        match self {
            TransportKind::Tls => 5061,
            _ => 5060,
        }
    }
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one TCP or TLS connection for the life of a [`SipTransport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// Who opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The peer connected to one of our listeners.
    Inbound,
    /// We connected to the peer.
    Outbound,
}

/// Where to send: remote address, transport, and for TLS the name the server's certificate
/// must carry (its SAN). Outbound connections are reused per target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// The remote address.
    pub remote: SocketAddr,
    /// The transport.
    pub transport: TransportKind,
    /// For TLS, the server name to verify (lower case); `None` otherwise.
    pub server_name: Option<String>,
}

impl Target {
    /// A UDP destination.
    pub fn udp(remote: SocketAddr) -> Self {
        Target {
            remote,
            transport: TransportKind::Udp,
            server_name: None,
        }
    }

    /// A TCP destination.
    pub fn tcp(remote: SocketAddr) -> Self {
        Target {
            remote,
            transport: TransportKind::Tcp,
            server_name: None,
        }
    }

    /// A TLS destination whose certificate must be valid for `server_name` (a DNS name or
    /// an IP address; an IPv6 reference may keep the brackets a SIP URI writes it with).
    pub fn tls(remote: SocketAddr, server_name: impl Into<String>) -> Self {
        let name = server_name.into();
        // `[::1]` as in `sips:[::1]`: the name to verify is the address, `::1`.
        let name = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
            Some(inner) => inner.to_owned(),
            None => name,
        };
        Target {
            remote,
            transport: TransportKind::Tls,
            server_name: Some(name.to_ascii_lowercase()),
        }
    }
}

/// What is known about a connection; shared by every event about it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// Its id.
    pub id: ConnectionId,
    /// TCP or TLS.
    pub transport: TransportKind,
    /// Our address.
    pub local: SocketAddr,
    /// The peer's address (an IPv4 peer of a dual-stack listener by its IPv4 address).
    pub remote: SocketAddr,
    /// Who opened it.
    pub direction: Direction,
    /// For outbound TLS, the server name that was verified.
    pub server_name: Option<String>,
    /// The verified identity of the peer's certificate (TLS only, and only when the peer
    /// presented one that was verified).
    pub peer: Option<PeerIdentity>,
}

/// A message received and parsed, with where it came from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReceivedMessage {
    /// The message (validated by `SipMessage::parse_framed` / `parse_datagram`).
    pub message: SipMessage,
    /// The transport it came on.
    pub transport: TransportKind,
    /// Our address it arrived at. For a datagram on a UDP socket bound to the unspecified
    /// address (0.0.0.0, `[::]`), on Linux, the address it was sent to with the socket's
    /// port (IPv4-mapped on a dual-stack socket), which `reply` and `send_udp_from` send
    /// the response from (RFC 3581 §4); elsewhere that wildcard address.
    pub local: SocketAddr,
    /// The address it came from.
    pub remote: SocketAddr,
    /// The connection it came on (`None` for UDP); holds the peer identity.
    pub connection: Option<Arc<ConnectionInfo>>,
    via: Via,
    /// The bytes as they came, before the top Via was stamped.
    wire: Bytes,
}

/// How to answer a received message without a table look-up.
#[derive(Debug, Clone)]
enum Via {
    Conn(ConnHandle),
    Udp(Arc<UdpEndpoint>),
}

impl ReceivedMessage {
    /// The verified identity of the peer (TLS with a verified certificate only).
    pub fn peer(&self) -> Option<&PeerIdentity> {
        self.connection.as_ref().and_then(|c| c.peer.as_ref())
    }

    /// The connection id (`None` for UDP).
    pub fn connection_id(&self) -> Option<ConnectionId> {
        self.connection.as_ref().map(|c| c.id)
    }

    /// The bytes the peer sent: the message's as they came off the connection, or the
    /// whole datagram. [`message`](Self::message) is what was parsed from them with its top
    /// Via stamped (`received`, `rport`: RFC 3261 §18.2.1, RFC 3581), which a wire trace
    /// should not show as the peer's. No copy: the buffer is shared.
    pub fn wire_bytes(&self) -> &Bytes {
        &self.wire
    }
}

/// What the transport tells the layer above, in order per connection: `Opened`, then
/// `Message`s, then `Closed`. A connection closed while its `Opened` waited for room in the
/// event channel (`close()`, `shutdown()`) is reported by neither.
#[derive(Debug, Clone)]
#[non_exhaustive]
// `Message` is nearly every event: boxing it to shrink the rare ones would cost an
// allocation per message received.
#[allow(clippy::large_enum_variant)]
pub enum TransportEvent {
    /// A connection is up (after its TLS handshake, for TLS).
    Opened(Arc<ConnectionInfo>),
    /// A message arrived.
    Message(ReceivedMessage),
    /// A connection that was `Opened` closed.
    Closed {
        /// The connection.
        connection: Arc<ConnectionInfo>,
        /// Why.
        reason: CloseReason,
    },
    /// A connection could not be opened or accepted (TLS refusal, timeout, limits). Dropped
    /// when the event channel is full (it is also logged).
    Failed {
        /// The transport.
        transport: TransportKind,
        /// Who opened it.
        direction: Direction,
        /// The peer's address.
        remote: SocketAddr,
        /// Why.
        error: TransportError,
    },
}

enum Out {
    Data(Bytes),
    Close,
}

/// Per-connection control shared by its tasks and handles.
struct ConnCtl {
    stop: Notify,
    reason: Mutex<Option<CloseReason>>,
    closed: AtomicBool,
    /// The flow-table keys that lead to this connection, removed with it: its target
    /// (outbound), or the RFC 5923 alias keys of the one address it is aliased for
    /// (inbound TLS).
    keys: Mutex<Vec<FlowKey>>,
    /// Asks the reader for a keep-alive ping now ([`SipTransport::confirm`]): a permit
    /// stored by `notify_one` is not lost if the reader is busy.
    ping: Notify,
    /// Pongs received to our pings.
    pongs: AtomicU64,
    /// Why the connection ended, set once by its reader before it leaves the tables.
    end: OnceLock<CloseReason>,
    /// Woken (all waiters) when `pongs` or `end` changes.
    probed: Notify,
}

impl ConnCtl {
    fn fail(&self, reason: CloseReason) {
        // Doomed from now on: flows stop handing it out.
        self.closed.store(true, Ordering::Release);
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert(reason);
        }
        self.stop.notify_one();
    }
}

#[derive(Clone)]
struct ConnHandle {
    info: Arc<ConnectionInfo>,
    tx: mpsc::Sender<Out>,
    ctl: Arc<ConnCtl>,
}

impl fmt::Debug for ConnHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ConnHandle").field(&self.info.id).finish()
    }
}

impl ConnHandle {
    fn is_closed(&self) -> bool {
        self.ctl.closed.load(Ordering::Acquire) || self.tx.is_closed()
    }

    async fn send(&self, data: Bytes) -> Result<(), TransportError> {
        if self.is_closed() {
            return Err(TransportError::ConnectionClosed(self.info.id.0));
        }
        self.tx
            .send(Out::Data(data))
            .await
            .map_err(|_| TransportError::ConnectionClosed(self.info.id.0))
    }
}

type FlowKey = Target;
/// One connection attempt to a target and its outcome, shared by every send that waits on
/// it: a failure reaches all of them at once (they do not retry in turn, one handshake
/// timeout each). A failed cell leaves the table at once, so later sends try again.
type FlowCell = Arc<OnceCell<Result<ConnHandle, TransportError>>>;

/// The connection of a flow cell, if its attempt succeeded.
fn flow_conn(cell: &FlowCell) -> Option<&ConnHandle> {
    cell.get().and_then(|r| r.as_ref().ok())
}

/// A map split in shards, so that no single lock is shared by every message.
struct Sharded<K, V> {
    shards: Vec<Mutex<HashMap<K, V>>>,
    /// Picks the shard (foldhash: this runs for every message sent).
    pick: foldhash::fast::RandomState,
}

impl<K: Hash + Eq, V: Clone> Sharded<K, V> {
    fn new() -> Self {
        Sharded {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            pick: foldhash::fast::RandomState::default(),
        }
    }

    fn shard(&self, k: &K) -> std::sync::MutexGuard<'_, HashMap<K, V>> {
        let i = (self.pick.hash_one(k) as usize) % SHARDS;
        match self.shards[i].lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn get(&self, k: &K) -> Option<V> {
        self.shard(k).get(k).cloned()
    }

    fn values(&self) -> Vec<V> {
        let mut out = Vec::new();
        for s in &self.shards {
            let g = match s.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            out.extend(g.values().cloned());
        }
        out
    }
}

struct Shared {
    settings: TransportSettings,
    events: mpsc::Sender<TransportEvent>,
    conns: Sharded<ConnectionId, ConnHandle>,
    flows: Sharded<FlowKey, FlowCell>,
    total: AtomicUsize,
    /// Connections per remote IPv4 address or IPv6 /64 ([`per_ip_key`]).
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    next_id: AtomicU64,
    connector: Option<tokio_rustls::TlsConnector>,
    /// The sockets [`SipTransport::send`] sends UDP from: the first bound of each family.
    udp4: OnceLock<Arc<UdpEndpoint>>,
    udp6: OnceLock<Arc<UdpEndpoint>>,
    /// Every UDP socket by its bound address, for [`SipTransport::send_udp_from`].
    udp: Sharded<SocketAddr, Arc<UdpEndpoint>>,
    shutdown: watch::Sender<bool>,
}

/// A slot in the connection limits, released when dropped.
struct Admission {
    shared: Arc<Shared>,
    /// What the per-IP limit counted the peer as ([`per_ip_key`]).
    key: IpAddr,
}

/// Who the per-IP connection limit counts a remote address as: an IPv6 address by its /64
/// prefix (one subscriber, or attacker, holds the whole /64: counted per address, it could
/// open the limit 2^64 times), an IPv4-mapped address (`::ffff:a.b.c.d`, how a dual-stack
/// listener sees IPv4 peers) as its IPv4 address.
fn per_ip_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((v6.to_bits() & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.shared.total.fetch_sub(1, Ordering::AcqRel);
        let mut m = match self.shared.per_ip.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some(c) = m.get_mut(&self.key) {
            *c -= 1;
            if *c == 0 {
                m.remove(&self.key);
            }
        }
    }
}

impl Shared {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admission, TransportError> {
        let limits = &self.settings.limits;
        if self.total.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(TransportError::TooManyConnections {
                limit: limits.max_connections,
            });
        }
        let mut m = match self.per_ip.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let key = per_ip_key(ip);
        let c = m.entry(key).or_insert(0);
        if *c >= limits.max_connections_per_ip {
            drop(m);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(TransportError::TooManyConnectionsFromIp {
                ip,
                limit: limits.max_connections_per_ip,
            });
        }
        *c += 1;
        Ok(Admission {
            shared: self.clone(),
            key,
        })
    }

    /// The socket to send UDP to `to` from, and `to` as that socket writes it: an IPv6
    /// socket cannot send to an IPv4 address, only to its IPv4-mapped form.
    fn udp_for(&self, to: SocketAddr) -> Result<(&Arc<UdpEndpoint>, SocketAddr), TransportError> {
        let sock = match to {
            SocketAddr::V4(_) => match self.udp4.get() {
                Some(s) => Some((s, to)),
                None => self.udp6.get().map(|s| (s, in_family_of(to, IPV6))),
            },
            SocketAddr::V6(_) => self.udp6.get().or(self.udp4.get()).map(|s| (s, to)),
        };
        sock.ok_or(TransportError::NoUdpSocket)
    }

    /// The UDP socket that took what arrived at `local`: the one bound there, else the one
    /// bound to the unspecified address of its family on that port (a wildcard socket
    /// reports the concrete address a datagram came to).
    fn udp_at(&self, local: SocketAddr) -> Option<Arc<UdpEndpoint>> {
        self.udp.get(&local).or_else(|| {
            let any = match local {
                SocketAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                SocketAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
            };
            self.udp.get(&SocketAddr::new(any, local.port()))
        })
    }

    fn failed(
        &self,
        transport: TransportKind,
        direction: Direction,
        remote: SocketAddr,
        error: TransportError,
    ) {
        match &error {
            TransportError::Tls { refusal, .. } => {
                tracing::warn!(%remote, ?direction, %refusal, ?refusal, "TLS handshake refused")
            }
            e => tracing::warn!(%remote, ?direction, %transport, error = %e, "connection failed"),
        }
        let _ = self.events.try_send(TransportEvent::Failed {
            transport,
            direction,
            remote,
            error,
        });
    }

    /// Starts the reader and writer tasks of a connection and registers it.
    fn start<R, W>(
        self: &Arc<Self>,
        reader: R,
        writer: W,
        info: ConnectionInfo,
        admission: Admission,
        key: Option<FlowKey>,
    ) -> ConnHandle
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(self.settings.send_queue);
        let ctl = Arc::new(ConnCtl {
            stop: Notify::new(),
            reason: Mutex::new(None),
            closed: AtomicBool::new(false),
            keys: Mutex::new(key.into_iter().collect()),
            ping: Notify::new(),
            pongs: AtomicU64::new(0),
            end: OnceLock::new(),
            probed: Notify::new(),
        });
        let handle = ConnHandle {
            info: Arc::new(info),
            tx,
            ctl: ctl.clone(),
        };
        self.conns
            .shard(&handle.info.id)
            .insert(handle.info.id, handle.clone());
        if *self.shutdown.borrow() {
            // Shut down while this one was being accepted or connected.
            ctl.fail(CloseReason::Shutdown);
        }
        let span = tracing::debug_span!(
            "sip_connection",
            id = handle.info.id.0,
            transport = %handle.info.transport,
            remote = %handle.info.remote,
        );
        let write_timeout = self.settings.limits.write_timeout;
        let writer_task =
            tokio::spawn(writer_loop(writer, rx, ctl, write_timeout).instrument(span.clone()));
        let keep_alive = match handle.info.direction {
            Direction::Outbound => self.settings.keep_alive,
            Direction::Inbound => None,
        };
        let conn = Connection {
            shared: self.clone(),
            handle: handle.clone(),
            keep_alive,
        };
        tokio::spawn(conn.run(reader, writer_task, admission).instrument(span));
        handle
    }

    fn next_id(&self) -> ConnectionId {
        ConnectionId(self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Stops the listeners and UDP receivers and closes every connection; again is harmless.
    fn shut_down(&self) {
        // `send_replace`, not `send`: the flag must be set even when no listener task is
        // subscribed (a client-only transport), or later connects would not see it.
        self.shutdown.send_replace(true);
        for h in self.conns.values() {
            h.ctl.fail(CloseReason::Shutdown);
        }
    }

    /// Removes a closed connection from the tables.
    fn forget(&self, handle: &ConnHandle) {
        let id = handle.info.id;
        self.conns.shard(&id).remove(&id);
        let keys = match handle.ctl.keys.lock() {
            Ok(mut k) => std::mem::take(&mut *k),
            Err(_) => Vec::new(),
        };
        for key in keys {
            self.unlink(&key, id);
        }
    }

    /// Removes `key` from the flow table if it leads to connection `id` (another connection
    /// may have taken it over since).
    fn unlink(&self, key: &FlowKey, id: ConnectionId) {
        let mut shard = self.flows.shard(key);
        if shard
            .get(key)
            .and_then(flow_conn)
            .is_some_and(|h| h.info.id == id)
        {
            shard.remove(key);
        }
    }

    /// RFC 5923: an inbound TLS request whose top Via carries `alias` lets us reuse this
    /// connection for requests to the address in its sent-by (its port, and its IP only when
    /// that is the connection's remote IP), for the names its verified certificate carries.
    /// A connection is an alias for one address at a time: the latest accepted sent-by.
    fn register_alias(&self, handle: &ConnHandle, msg: &SipMessage) {
        let info = &handle.info;
        // Only inbound connections are aliased: their keys are alias keys alone (below).
        if info.direction != Direction::Inbound {
            return;
        }
        let Some(peer) = &info.peer else { return };
        let Ok(via) = msg.top_via() else { return };
        if !via.params().contains("alias") {
            return;
        }
        let ip = match via.host() {
            Host::Ipv4(a) => IpAddr::V4(a),
            Host::Ipv6(a) => IpAddr::V6(a),
            Host::Domain(d) => {
                if !peer.matches(d) {
                    tracing::debug!(domain = d, "alias refused: sent-by not in the certificate");
                    return;
                }
                info.remote.ip()
            }
        };
        // An IP-literal sent-by must be the connection's own remote address: a certificate
        // does not vouch for addresses, so a peer could otherwise claim another host's flows.
        if ip.to_canonical() != info.remote.ip().to_canonical() {
            tracing::debug!(%ip, "alias refused: sent-by is not the connection's address");
            return;
        }
        let remote = SocketAddr::new(ip, via.port().unwrap_or(info.transport.default_port()));
        // One alias address per connection: a new sent-by moves the alias, and the keys of
        // the previous address leave the table. Otherwise each request with another port
        // would add entries for the life of the connection (a peer could fill the table).
        let previous: Vec<FlowKey> = match handle.ctl.keys.lock() {
            Ok(mut k) => {
                let (previous, kept) = std::mem::take(&mut *k)
                    .into_iter()
                    .partition(|key| key.remote != remote);
                *k = kept;
                previous
            }
            Err(_) => return,
        };
        for key in previous {
            self.unlink(&key, info.id);
        }
        // The names the certificate is trusted for, as `PeerIdentity::matches` reads them.
        let certified = if peer.dns_names.is_empty() {
            peer.common_name.as_slice()
        } else {
            peer.dns_names.as_slice()
        };
        let names = certified
            .iter()
            .filter(|n| !n.contains('*'))
            .take(8)
            .map(|n| n.to_ascii_lowercase());
        let mut registered = Vec::new();
        for name in names {
            let key = Target {
                remote,
                transport: TransportKind::Tls,
                server_name: Some(name),
            };
            let mut shard = self.flows.shard(&key);
            let live = shard
                .get(&key)
                .and_then(flow_conn)
                .is_some_and(|h| !h.is_closed());
            if !live {
                shard.insert(
                    key.clone(),
                    Arc::new(OnceCell::new_with(Some(Ok(handle.clone())))),
                );
                registered.push(key);
            }
        }
        if !registered.is_empty() {
            tracing::debug!(%remote, n = registered.len(), "RFC 5923 alias registered");
            if let Ok(mut k) = handle.ctl.keys.lock() {
                k.extend(registered);
            }
        }
    }
}

/// How much room the reader reserves in the framer's buffer before each read. An idle
/// connection waits in a read with that room reserved, so it starts small
/// ([`READ_CHUNK_MIN`]), doubles while reads fill it (up to [`READ_CHUNK_MAX`]: a busy
/// connection reads in large chunks), and is small again once the connection has been quiet
/// for [`READ_QUIET`].
struct ReadSizing {
    chunk: usize,
}

impl ReadSizing {
    fn new() -> Self {
        ReadSizing {
            chunk: READ_CHUNK_MIN,
        }
    }

    /// Makes room in `buf` for the next read; returns the room.
    fn prepare(&self, buf: &mut BytesMut) -> usize {
        if buf.capacity() - buf.len() < self.chunk / 4 {
            buf.reserve(self.chunk);
        }
        buf.capacity() - buf.len()
    }

    /// After a read of `n` bytes into `room`: one that filled the room left more waiting.
    fn read(&mut self, n: usize, room: usize) {
        if n >= room {
            self.chunk = (self.chunk * 2).min(READ_CHUNK_MAX);
        }
    }

    /// Whether going quiet would give memory back (`buf` holds no pending bytes and is
    /// larger than a quiet connection needs, or the next reservation would be).
    fn can_shrink(&self, buf: &BytesMut) -> bool {
        buf.is_empty() && (buf.capacity() > READ_CHUNK_MIN || self.chunk > READ_CHUNK_MIN)
    }

    /// The connection went quiet: back to small reads, and an empty buffer that grew is
    /// dropped (bytes the framer still holds are kept).
    fn quiet(&mut self, buf: &mut BytesMut) {
        self.chunk = READ_CHUNK_MIN;
        if buf.is_empty() && buf.capacity() > READ_CHUNK_MIN {
            *buf = BytesMut::new();
        }
    }
}

/// The reader side of one connection, which owns its life.
struct Connection {
    shared: Arc<Shared>,
    handle: ConnHandle,
    keep_alive: Option<KeepAlive>,
}

/// Writes queued messages, gathering what is queued into one write (one TLS record run, one
/// syscall). A message alone in the queue is written as is, without a copy. A write that
/// takes longer than `write_timeout` (the peer does not read) fails the connection.
async fn writer_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::Receiver<Out>,
    ctl: Arc<ConnCtl>,
    write_timeout: Duration,
) {
    // Grown on first use only: idle connections hold no write buffer.
    let mut buf = BytesMut::new();
    while let Some(first) = rx.recv().await {
        let mut closing = false;
        let mut single = None;
        match first {
            Out::Data(b) => match rx.try_recv() {
                Ok(next) => {
                    buf.extend_from_slice(&b);
                    match next {
                        Out::Data(b) => buf.extend_from_slice(&b),
                        Out::Close => closing = true,
                    }
                }
                Err(_) => single = Some(b),
            },
            Out::Close => closing = true,
        }
        while !closing && single.is_none() && buf.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(Out::Data(b)) => buf.extend_from_slice(&b),
                Ok(Out::Close) => closing = true,
                Err(_) => break,
            }
        }
        let data: &[u8] = match &single {
            Some(b) => b,
            None => &buf,
        };
        if !data.is_empty() {
            let r = timeout(write_timeout, async {
                w.write_all(data).await?;
                w.flush().await
            })
            .await;
            buf.clear();
            if buf.capacity() > 4 * WRITE_BATCH {
                buf = BytesMut::new();
            }
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    ctl.fail(
                        TlsRefusal::from_io(&e)
                            .map_or_else(|| CloseReason::Io(e.to_string()), CloseReason::Tls),
                    );
                    return;
                }
                Err(_) => {
                    ctl.fail(CloseReason::WriteTimeout);
                    return;
                }
            }
        }
        if closing {
            let _ = timeout(Duration::from_secs(1), w.shutdown()).await;
            return;
        }
    }
}

impl Connection {
    async fn run<R: AsyncRead + Unpin>(
        self,
        mut reader: R,
        writer: JoinHandle<()>,
        admission: Admission,
    ) {
        let info = self.handle.info.clone();
        tracing::debug!(peer = ?info.peer.as_ref().map(|p| &p.dns_names), "connection opened");
        // Announcing the connection waits for room in the event channel, but not past a
        // `close()` or `shutdown()`: a layer above that stopped taking events must not keep
        // connections open. A connection never announced is not reported closed either.
        let announced = {
            let stop = self.handle.ctl.stop.notified();
            tokio::pin!(stop);
            let opened = self
                .shared
                .events
                .send(TransportEvent::Opened(info.clone()));
            tokio::select! {
                biased;
                _ = stop => Err(self.stop_reason()),
                sent = opened => Ok(sent.is_ok()),
            }
        };
        let (reason, announced) = match announced {
            Ok(announced) => (self.read_loop(&mut reader).await, announced),
            Err(reason) => (reason, false),
        };
        // Before the connection leaves the tables: a `confirm` that holds it sees why.
        let _ = self.handle.ctl.end.set(reason.clone());
        self.handle.ctl.probed.notify_waiters();
        self.handle.ctl.closed.store(true, Ordering::Release);
        self.shared.forget(&self.handle);
        // One budget for queueing the close and for the writer to finish: a writer stuck on a
        // peer that does not read must not hold the connection slot twice as long.
        let give_up = Instant::now() + Duration::from_secs(2);
        let _ = tokio::time::timeout_at(give_up, self.handle.tx.send(Out::Close)).await;
        let abort = writer.abort_handle();
        let linger = matches!(reason, CloseReason::Framing(_) | CloseReason::SlowSender);
        if linger {
            // Drain what the peer still sends while the writer flushes our last answer, so
            // that closing with unread data (a TCP reset) does not destroy that answer.
            let drain = async {
                let mut scratch = vec![0u8; 8192];
                let mut budget = 1usize << 20;
                while budget > 0 {
                    match reader.read(&mut scratch).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => budget = budget.saturating_sub(n),
                    }
                }
            };
            let _ = timeout(LINGER, async { tokio::join!(drain, writer) }).await;
        } else {
            let _ = tokio::time::timeout_at(give_up, writer).await;
        }
        abort.abort();
        drop(reader);
        drop(admission);
        match &reason {
            CloseReason::PeerClosed | CloseReason::Local | CloseReason::Shutdown => {
                tracing::debug!(%reason, "connection closed")
            }
            _ => tracing::warn!(%reason, ?reason, "connection closed"),
        }
        if announced {
            let _ = self
                .shared
                .events
                .send(TransportEvent::Closed {
                    connection: info,
                    reason,
                })
                .await;
        }
    }

    async fn read_loop<R: AsyncRead + Unpin>(&self, reader: &mut R) -> CloseReason {
        let limits = self.shared.settings.limits;
        let ctl = self.handle.ctl.clone();
        let mut framer = StreamFramer::new(limits.message);
        let mut sizing = ReadSizing::new();
        // Whether the buffer was made small since the last read (once per quiet spell).
        let mut shrunk = false;
        let start = Instant::now();
        // The idle clock: when the reader last received, or finished handing up what it
        // received (see below).
        let mut last_rx = start;
        let mut partial_since: Option<Instant> = None;
        // An inbound plain TCP connection has no handshake that would time out: its first
        // bytes must come within the handshake timeout instead of the (long) idle timeout.
        let info = &self.handle.info;
        let mut first_bytes_due = (info.direction == Direction::Inbound
            && info.transport == TransportKind::Tcp)
            .then(|| later(start, limits.handshake_timeout));
        let mut pings = 0u64;
        let mut ping_due = self
            .keep_alive
            .map(|k| later(start, self.jitter(k.interval, pings)));
        let mut pong_deadline: Option<Instant> = None;
        // RFC 5626 §4.4.1 promises pongs only from a peer that supports outbound; many just
        // swallow the ping. Until this one has answered once, a missing pong is not a dead
        // flow (pings go on: they still keep NAT bindings open).
        let mut peer_pongs = false;
        let mut silence_logged = false;

        let stop = ctl.stop.notified();
        tokio::pin!(stop);
        let ping_asked = ctl.ping.notified();
        tokio::pin!(ping_asked);
        // One timer for the connection, moved only when a deadline comes earlier than the
        // armed one, or when it fires: not once per read.
        let mut armed = later(start, limits.idle_timeout);
        let sleep = tokio::time::sleep_until(armed);
        tokio::pin!(sleep);

        loop {
            let mut next = later(last_rx, limits.idle_timeout);
            if let Some(d) = first_bytes_due {
                next = next.min(d);
            }
            if let Some(p) = partial_since {
                next = next.min(later(p, limits.partial_message_timeout));
            }
            if let Some(d) = ping_due {
                next = next.min(d);
            }
            if let Some(d) = pong_deadline {
                next = next.min(d);
            }
            if !shrunk && sizing.can_shrink(framer.buffer_mut()) {
                next = next.min(later(last_rx, READ_QUIET));
            }
            if next < armed {
                armed = next;
                sleep.as_mut().reset(armed);
            }
            let room = sizing.prepare(framer.buffer_mut());
            tokio::select! {
                biased;
                _ = &mut stop => return self.stop_reason(),
                r = reader.read_buf(framer.buffer_mut()) => {
                    match r {
                        Ok(0) => return CloseReason::PeerClosed,
                        Ok(n) => {
                            sizing.read(n, room);
                            shrunk = false;
                        }
                        Err(e) => {
                            return TlsRefusal::from_io(&e)
                                .map_or_else(|| CloseReason::Io(e.to_string()), CloseReason::Tls)
                        }
                    }
                    let now = Instant::now();
                    first_bytes_due = None;
                    // Answers to the peer wait for room in the send queue at most until the
                    // idle deadline (the writer's write timeout ends a peer that never reads).
                    let answer_by = later(now, limits.idle_timeout);
                    let mut completed = false;
                    loop {
                        let frame = framer.next_frame();
                        completed |= matches!(frame, Ok(Some(_)));
                        match frame {
                            Ok(None) => break,
                            Ok(Some(Frame::Message(bytes))) => {
                                if let Err(reason) = self.on_message(bytes, &mut stop, answer_by).await {
                                    return reason;
                                }
                            }
                            Ok(Some(Frame::KeepAlivePing)) => {
                                // Never wait for room: a peer that pings and does not read
                                // would hold the reader. A pong that does not fit is skipped.
                                if self.handle.tx.try_send(Out::Data(Bytes::from_static(b"\r\n"))).is_err() {
                                    tracing::debug!("send queue full: pong skipped");
                                }
                            }
                            Ok(Some(Frame::KeepAlivePong)) => {
                                // Only the answer to a ping of ours shows that the peer
                                // pongs (a lone CRLF is also some peers' own keep-alive).
                                if pong_deadline.take().is_some() {
                                    peer_pongs = true;
                                    ctl.pongs.fetch_add(1, Ordering::AcqRel);
                                    ctl.probed.notify_waiters();
                                    if let Some(k) = self.keep_alive {
                                        ping_due = Some(later(now, self.jitter(k.interval, pings)));
                                    }
                                }
                            }
                            Err(e) => {
                                self.answer_framing_error(&e, &mut stop, answer_by).await;
                                return CloseReason::Framing(e);
                            }
                        }
                    }
                    // Handing the completed messages up may have waited for room in the
                    // event channel. Nothing was read meanwhile, so that wait, our own
                    // backpressure, is not the peer's: the clocks below restart after it,
                    // not at the read.
                    let handed_up = Instant::now();
                    // The idle timeout measures the peer's silence: a peer waiting for the
                    // answer to a message a slow application took long to accept is not
                    // idle (nor was it while we did not read).
                    last_rx = handed_up;
                    // The partial-message clock measures how long the current unfinished
                    // message has been pending: it restarts when a frame completes (the rest
                    // of the buffer arrived in this read), so a peer that sends at full
                    // speed is not made a slow sender by our backpressure.
                    partial_since = match (framer.has_partial(), completed) {
                        (false, _) => None,
                        (true, true) => Some(handed_up),
                        (true, false) => partial_since.or(Some(now)),
                    };
                }
                _ = &mut ping_asked => {
                    ping_asked.set(ctl.ping.notified());
                    // A ping already out: its pong answers this request too.
                    if pong_deadline.is_none() {
                        let now = Instant::now();
                        // Sent as a keep-alive ping (the framer must read the next CRLF
                        // as its pong); the pong wait is the keep-alive's, or its default.
                        if self.handle.tx.try_send(Out::Data(Bytes::from_static(b"\r\n\r\n"))).is_ok() {
                            tracing::trace!("ping asked for");
                            ping_due = None;
                            pings += 1;
                            framer.expect_pong();
                            let wait = self.keep_alive.unwrap_or_default().pong_timeout;
                            pong_deadline = Some(later(now, wait));
                        } else {
                            tracing::debug!("send queue full: asked-for ping skipped");
                        }
                    }
                }
                _ = &mut sleep => {
                    let now = Instant::now();
                    armed = later(now, limits.idle_timeout);
                    sleep.as_mut().reset(armed);
                    if pong_deadline.is_some_and(|d| now >= d) {
                        if peer_pongs {
                            return CloseReason::DeadFlow;
                        }
                        if !silence_logged {
                            tracing::debug!("no pong to a keep-alive ping: peer does not answer pings, flow not checked");
                            silence_logged = true;
                        }
                        pong_deadline = None;
                        framer.forget_pong();
                        if let Some(k) = self.keep_alive {
                            ping_due = Some(later(now, self.jitter(k.interval, pings)));
                        }
                    }
                    if partial_since.is_some_and(|p| now >= later(p, limits.partial_message_timeout)) {
                        return CloseReason::SlowSender;
                    }
                    if first_bytes_due.is_some_and(|d| now >= d) {
                        tracing::debug!("nothing received within the handshake timeout");
                        return CloseReason::IdleTimeout;
                    }
                    if now >= later(last_rx, limits.idle_timeout) {
                        return CloseReason::IdleTimeout;
                    }
                    if let (Some(d), Some(k)) = (ping_due, self.keep_alive) {
                        if now >= d {
                            if self.handle.tx.try_send(Out::Data(Bytes::from_static(b"\r\n\r\n"))).is_ok() {
                                tracing::trace!("keep-alive ping");
                                ping_due = None;
                                pings += 1;
                                framer.expect_pong();
                                pong_deadline = Some(later(now, k.pong_timeout));
                            } else {
                                // No ping sent, so no pong to wait for (a dead flow now would
                                // be spurious; the write timeout covers a peer that stopped
                                // reading). Try again an interval later.
                                tracing::debug!("send queue full: ping skipped");
                                ping_due = Some(later(now, self.jitter(k.interval, pings)));
                            }
                        }
                    }
                    if !shrunk && now >= later(last_rx, READ_QUIET) && sizing.can_shrink(framer.buffer_mut()) {
                        sizing.quiet(framer.buffer_mut());
                        shrunk = true;
                    }
                }
            }
        }
    }

    /// 80–100 % of `interval` (RFC 5626 §4.4.1), varied per connection and ping.
    fn jitter(&self, interval: Duration, n: u64) -> Duration {
        let x = self
            .handle
            .info
            .id
            .0
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(n.wrapping_mul(0xBF58_476D_1CE4_E5B9));
        let permille = 800 + (x >> 32) % 201;
        // Not `mul_f64`, which panics when the product overflows (an interval near
        // `Duration::MAX`, meaning "never").
        Duration::try_from_secs_f64(interval.as_secs_f64() * permille as f64 / 1000.0)
            .unwrap_or(interval)
    }

    /// Why the connection was told to stop (by `close`, `shutdown` or a writer failure).
    fn stop_reason(&self) -> CloseReason {
        let reason = self
            .handle
            .ctl
            .reason
            .lock()
            .ok()
            .and_then(|mut r| r.take());
        reason.unwrap_or(CloseReason::Local)
    }

    /// Waits for `fut` unless the connection is told to stop first (`Err`, with the reason)
    /// or `deadline` passes (`Ok(None)`). The reader waits for queues only this way, so that
    /// a peer that does not read, or a layer above that does not take events, cannot keep
    /// it from `close()`, `shutdown()` and the writer's failure.
    async fn until_stopped<T>(
        &self,
        stop: &mut Pin<&mut Notified<'_>>,
        deadline: Option<Instant>,
        fut: impl Future<Output = T>,
    ) -> Result<Option<T>, CloseReason> {
        let expired = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = stop.as_mut() => Err(self.stop_reason()),
            t = fut => Ok(Some(t)),
            _ = expired => Ok(None),
        }
    }

    /// Hands a message up, or answers it (400, 505, 513) when it cannot be parsed. Waits
    /// for room in the event channel (backpressure) until the connection is stopped, and
    /// for room in the send queue until `answer_by` at most.
    async fn on_message(
        &self,
        bytes: Bytes,
        stop: &mut Pin<&mut Notified<'_>>,
        answer_by: Instant,
    ) -> Result<(), CloseReason> {
        let info = &self.handle.info;
        let limits = &self.shared.settings.limits.message;
        match SipMessage::parse_framed(bytes.clone(), limits) {
            Ok(mut message) => {
                stamp_source(&mut message, info.remote);
                if info.transport == TransportKind::Tls
                    && info.direction == Direction::Inbound
                    && message.is_request()
                {
                    self.shared.register_alias(&self.handle, &message);
                }
                let event = TransportEvent::Message(ReceivedMessage {
                    message,
                    transport: info.transport,
                    local: info.local,
                    remote: info.remote,
                    connection: Some(info.clone()),
                    via: Via::Conn(self.handle.clone()),
                    wire: bytes,
                });
                match self
                    .until_stopped(stop, None, self.shared.events.send(event))
                    .await?
                {
                    Some(sent) => sent.map_err(|_| CloseReason::Shutdown),
                    None => Ok(()),
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "unparsable message");
                // A request whose head parses is answered (400, 505, 513); others dropped.
                if let Ok(mut req) = SipMessage::parse_head(bytes, limits) {
                    stamp_source(&mut req, info.remote);
                    // Never answer an ACK (RFC 3261 §17.2.3: it has no response).
                    if req.is_request() && req.method() != Some(&sip_core::Method::Ack) {
                        if let Some(resp) =
                            refusal_response(&req, e.status(), e.reason(), &e, info.local)
                        {
                            let send = self.handle.send(resp.to_bytes());
                            if self
                                .until_stopped(stop, Some(answer_by), send)
                                .await?
                                .is_none()
                            {
                                tracing::debug!("send queue full: answer dropped");
                            }
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// 513 (or 400) to a request whose head was received, before closing. Waits for room in
    /// the send queue until `answer_by` at most, and not once the connection is stopped.
    async fn answer_framing_error(
        &self,
        e: &FrameError,
        stop: &mut Pin<&mut Notified<'_>>,
        answer_by: Instant,
    ) {
        tracing::warn!(error = %e, "stream framing error");
        let Some(head) = e.head() else { return };
        let Ok(mut req) =
            SipMessage::parse_head(head.clone(), &self.shared.settings.limits.message)
        else {
            return;
        };
        stamp_source(&mut req, self.handle.info.remote);
        if !req.is_request() || req.method() == Some(&sip_core::Method::Ack) {
            return;
        }
        let local = self.handle.info.local;
        if let Some(resp) = refusal_response(&req, e.status(), e.reason(), e, local) {
            let send = self.handle.send(resp.to_bytes());
            let _ = self.until_stopped(stop, Some(answer_by), send).await;
        }
    }
}

/// The transport layer: TCP and TLS listeners, a UDP socket, outbound flows reused per
/// [`Target`], and the events of all of them on one channel.
///
/// Cheap to clone (an `Arc`); all clones are the same transport. Must be used inside a
/// tokio runtime (listeners and connections are tasks). Dropping the last clone shuts the
/// transport down as [`shutdown`](Self::shutdown) does: nothing could use its listeners and
/// connections any more, so they must not hold their ports and peers for ever.
#[derive(Clone)]
pub struct SipTransport {
    shared: Arc<Shared>,
    /// Shared by the clones only, never by the transport's own tasks (they hold `shared`):
    /// it drops with the last clone, and its drop shuts the transport down.
    _owner: Arc<Owner>,
}

/// Shuts its transport down when dropped (with the last [`SipTransport`] clone).
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.shut_down();
    }
}

impl fmt::Debug for SipTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SipTransport")
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}

impl SipTransport {
    /// A transport with `settings`, and the receiver of its events. Builds the TLS client
    /// configuration now, so a bad one is reported here.
    pub fn new(
        settings: TransportSettings,
    ) -> Result<(SipTransport, mpsc::Receiver<TransportEvent>), TransportError> {
        let connector = match &settings.tls_client {
            Some(t) => Some(tokio_rustls::TlsConnector::from(t.build()?)),
            None => None,
        };
        let (events, rx) = mpsc::channel(settings.event_capacity);
        let shared = Arc::new(Shared {
            settings,
            events,
            conns: Sharded::new(),
            flows: Sharded::new(),
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            connector,
            udp4: OnceLock::new(),
            udp6: OnceLock::new(),
            udp: Sharded::new(),
            shutdown: watch::channel(false).0,
        });
        let owner = Arc::new(Owner(shared.clone()));
        Ok((
            SipTransport {
                shared,
                _owner: owner,
            },
            rx,
        ))
    }

    /// Listens for plain TCP on `addr` (port 0 picks one); returns the bound address.
    ///
    /// Cancel safety: cancel safe (if cancelled, nothing is listening).
    pub async fn listen_tcp(&self, addr: SocketAddr) -> Result<SocketAddr, TransportError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| TransportError::io(&e))?;
        let local = listener.local_addr().map_err(|e| TransportError::io(&e))?;
        tokio::spawn(accept_loop(self.shared.clone(), listener, None));
        Ok(local)
    }

    /// Listens for TLS on `addr` with `settings` (mutual or not); returns the bound address.
    ///
    /// Cancel safety: cancel safe (if cancelled, nothing is listening).
    pub async fn listen_tls(
        &self,
        addr: SocketAddr,
        settings: &TlsServerSettings,
    ) -> Result<SocketAddr, TransportError> {
        let acceptor = tokio_rustls::TlsAcceptor::from(settings.build()?);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| TransportError::io(&e))?;
        let local = listener.local_addr().map_err(|e| TransportError::io(&e))?;
        tokio::spawn(accept_loop(self.shared.clone(), listener, Some(acceptor)));
        Ok(local)
    }

    /// Binds a UDP socket on `addr`, receives datagrams on it, and sends UDP from the first
    /// one bound of each address family (an IPv4 target from an IPv6 socket only when no
    /// IPv4 one is bound), except for what is sent from a given socket
    /// ([`reply`](Self::reply), [`send_udp_from`](Self::send_udp_from)). Returns the bound
    /// address.
    ///
    /// On the unspecified address (0.0.0.0, `[::]`) the socket takes datagrams for every
    /// address of the host; on Linux it learns which one each came to (`IP_PKTINFO`,
    /// `IPV6_RECVPKTINFO`), reports it as [`ReceivedMessage::local`], and answers from it
    /// (RFC 3581 §4). Elsewhere it reports the wildcard and the kernel picks the source.
    ///
    /// Cancel safety: cancel safe (if cancelled, nothing is bound).
    pub async fn bind_udp(&self, addr: SocketAddr) -> Result<SocketAddr, TransportError> {
        let sock = Arc::new(
            UdpEndpoint::bind(addr)
                .await
                .map_err(|e| TransportError::io(&e))?,
        );
        let local = sock.bound;
        let _ = match local {
            SocketAddr::V4(_) => self.shared.udp4.set(sock.clone()),
            SocketAddr::V6(_) => self.shared.udp6.set(sock.clone()),
        };
        self.shared.udp.shard(&local).insert(local, sock.clone());
        tokio::spawn(udp_loop(self.shared.clone(), sock));
        Ok(local)
    }

    /// The connection to `target`, reusing a live one (ours, or one the peer offered by RFC
    /// 5923 alias) or opening it: TCP connect, then for TLS the handshake verifying the
    /// server's certificate for `target.server_name`. Concurrent callers for the same target
    /// share one attempt and its outcome: a failure is returned to each of them and reported
    /// once as [`TransportEvent::Failed`]; the next call tries again.
    ///
    /// Cancel safety: cancel safe. If cancelled while connecting, another caller waiting
    /// on the same target takes the attempt over, or the next call starts a new one.
    pub async fn connect(&self, target: &Target) -> Result<ConnectionId, TransportError> {
        self.flow(target).await.map(|h| h.info.id)
    }

    /// Whether the peer kept connection `connection` (TLS: after it saw our certificate): a
    /// CRLFCRLF ping (RFC 5626 §4.4.1) goes out on it, then this waits `within` at most.
    /// A pong gives [`Confirmation::Ponged`]; still open and no pong gives
    /// [`Confirmation::Silent`] (many peers never pong: not a failure). A close gives its
    /// reason as the error: a TLS alert as [`TransportError::Tls`] (under TLS 1.3 a server
    /// refuses a client certificate only after our handshake has completed, so `connect`
    /// alone cannot tell), anything else as [`TransportError::Closed`]. A connection
    /// already gone from the tables gives [`TransportError::ConnectionClosed`]
    /// ([`connect_confirmed`](Self::connect_confirmed) keeps the reason in that case).
    ///
    /// Cancel safety: cancel safe (the ping may have been sent).
    pub async fn confirm(
        &self,
        connection: ConnectionId,
        within: Duration,
    ) -> Result<Confirmation, TransportError> {
        let h = self
            .shared
            .conns
            .get(&connection)
            .ok_or(TransportError::ConnectionClosed(connection.0))?;
        confirm(&h, within).await
    }

    /// [`connect`](Self::connect), then [`confirm`](Self::confirm) on that connection
    /// without letting it go in between, so a close right after the handshake is reported
    /// with its reason.
    ///
    /// Cancel safety: as `connect` and `confirm`.
    pub async fn connect_confirmed(
        &self,
        target: &Target,
        within: Duration,
    ) -> Result<(ConnectionId, Confirmation), TransportError> {
        let h = self.flow(target).await?;
        confirm(&h, within).await.map(|c| (h.info.id, c))
    }

    /// The limits this transport enforces (e.g. its handshake timeout, which callers use
    /// to bound their own waits).
    pub fn limits(&self) -> TransportLimits {
        self.shared.settings.limits
    }

    async fn flow(&self, target: &Target) -> Result<ConnHandle, TransportError> {
        if target.transport == TransportKind::Udp {
            return Err(TransportError::Io("UDP has no connections".into()));
        }
        for _ in 0..2 {
            let cell = {
                let mut shard = self.shared.flows.shard(target);
                // Found without copying the target (the common case: every message).
                match shard.get(target) {
                    Some(c) => c.clone(),
                    None => shard
                        .entry(target.clone())
                        .or_insert_with(|| Arc::new(OnceCell::new()))
                        .clone(),
                }
            };
            // Every caller that found this cell gets the outcome of its one attempt.
            let r = cell
                .get_or_init(|| async {
                    let r = open(&self.shared, target).await;
                    if r.is_err() {
                        // Before the outcome is published: a send that comes later finds no
                        // failed cell and tries again.
                        self.remove_cell(target, &cell);
                    }
                    r
                })
                .await;
            match r {
                Ok(h) if !h.is_closed() => return Ok(h.clone()),
                Ok(_) => self.remove_cell(target, &cell),
                Err(e) => return Err(e.clone()),
            }
        }
        Err(TransportError::ConnectionClosed(0))
    }

    fn remove_cell(&self, target: &Target, cell: &FlowCell) {
        let mut shard = self.shared.flows.shard(target);
        if shard.get(target).is_some_and(|c| Arc::ptr_eq(c, cell)) {
            shard.remove(target);
        }
    }

    /// Sends `message` to `target`: over the reused or a new connection for TCP/TLS, as a
    /// datagram for UDP (from the first socket bound of the target's address family: a
    /// response goes by [`reply`](Self::reply) or [`send_udp_from`](Self::send_udp_from)).
    /// A UDP request larger than the RFC 3261 §18.1.1 limit is refused with
    /// [`TransportError::TooLargeForUdp`]: resend it over TCP or TLS.
    ///
    /// Waits while the connection's send queue is full (backpressure).
    ///
    /// Cancel safety: not cancel safe once connected: if cancelled while waiting for room
    /// in the queue, the message was not sent; cancelled later, it may have been.
    pub async fn send(&self, target: &Target, message: &SipMessage) -> Result<(), TransportError> {
        if target.transport == TransportKind::Udp {
            let (sock, to) = self.shared.udp_for(target.remote)?;
            // A request: the kernel picks the source address.
            return self.send_datagram(sock, to, sock.bound, message).await;
        }
        self.flow(target).await?.send(message.to_bytes()).await
    }

    /// Sends `message` by UDP to `to` from our socket bound at `local` (as a
    /// [`ReceivedMessage::local`] names it). A response must leave from the address and
    /// port its request arrived at (RFC 3261 §18.2.2, RFC 3581 §4: symmetric response
    /// routing), which [`send`](Self::send) does not know: with several UDP sockets it
    /// picks the first of the address family, and a NAT, or a peer that matches responses
    /// by where it sent the request, drops a response from another port. For a layer that
    /// keeps only the addresses of a request (a transaction layer) and not the
    /// `ReceivedMessage` that [`reply`](Self::reply) takes. The size rule is `send`'s.
    ///
    /// `local` may also be a concrete address that a socket bound to the unspecified
    /// address on its port reported (Linux): that socket sends, from that address.
    ///
    /// Fails with [`TransportError::NoUdpSocket`] when no UDP socket is bound at `local`
    /// (nor at the unspecified address of its family on its port).
    ///
    /// Cancel safety: cancel safe (if cancelled, the datagram was not sent).
    pub async fn send_udp_from(
        &self,
        local: SocketAddr,
        to: SocketAddr,
        message: &SipMessage,
    ) -> Result<(), TransportError> {
        let sock = self
            .shared
            .udp_at(local)
            .ok_or(TransportError::NoUdpSocket)?;
        let to = in_family_of(to, local);
        self.send_datagram(&sock, to, local, message).await
    }

    /// Sends `message` as one datagram from `sock` to `to`, leaving from `from` (see
    /// [`UdpEndpoint::send_from`]), refusing a request too large for UDP (RFC 3261
    /// §18.1.1).
    async fn send_datagram(
        &self,
        sock: &UdpEndpoint,
        to: SocketAddr,
        from: SocketAddr,
        message: &SipMessage,
    ) -> Result<(), TransportError> {
        let bytes = message.to_bytes();
        let limit = self.shared.settings.udp_request_limit();
        if message.is_request() && bytes.len() > limit {
            return Err(TransportError::TooLargeForUdp {
                size: bytes.len(),
                limit,
            });
        }
        sock.send_from(&bytes, to, from)
            .await
            .map_err(|e| TransportError::io(&e))
    }

    /// Sends `message` on an existing connection (e.g. a response on the connection the
    /// request came on, RFC 3261 §18.2.2).
    ///
    /// Cancel safety: if cancelled while waiting for room in the queue the message was not
    /// sent.
    pub async fn send_on(
        &self,
        connection: ConnectionId,
        message: &SipMessage,
    ) -> Result<(), TransportError> {
        let h = self
            .shared
            .conns
            .get(&connection)
            .ok_or(TransportError::ConnectionClosed(connection.0))?;
        h.send(message.to_bytes()).await
    }

    /// Answers `to` where it came from: on its connection (no table look-up), or by UDP to
    /// its source IP and the port RFC 3261 §18.2.2 names (the Via's sent-by port, or the
    /// source port when the Via asks for `rport`, RFC 3581; both read from the Via the
    /// transport stamped on receipt). If the connection has closed meanwhile this fails with
    /// [`TransportError::ConnectionClosed`]; RFC 3261 §18.2.2 then says to open a new
    /// connection to the Via's sent-by, which is the caller's decision ([`send`](Self::send)).
    ///
    /// Cancel safety: if cancelled while waiting for room in the queue the message was not
    /// sent.
    pub async fn reply(
        &self,
        to: &ReceivedMessage,
        message: &SipMessage,
    ) -> Result<(), TransportError> {
        match &to.via {
            Via::Conn(h) => h.send(message.to_bytes()).await,
            Via::Udp(sock) => {
                let dest = udp_response_to(&to.message, to.remote);
                self.send_datagram(sock, dest, to.local, message).await
            }
        }
    }

    /// Sends raw bytes on a connection (already serialized messages; keep-alives are
    /// handled by the transport). For load drivers and relays.
    ///
    /// Cancel safety: as [`send_on`](Self::send_on).
    pub async fn send_raw(
        &self,
        connection: ConnectionId,
        bytes: Bytes,
    ) -> Result<(), TransportError> {
        let h = self
            .shared
            .conns
            .get(&connection)
            .ok_or(TransportError::ConnectionClosed(connection.0))?;
        h.send(bytes).await
    }

    /// Queues `bytes` on an open connection without waiting. Gives the bytes back when
    /// they were not queued (the write queue is full, or the connection is closed or
    /// unknown): the caller then waits with [`send_raw`](Self::send_raw), which also
    /// reports the error. For callers that keep their own order of messages.
    pub fn try_send_raw(&self, connection: ConnectionId, bytes: Bytes) -> Result<(), Bytes> {
        let Some(h) = self.shared.conns.get(&connection) else {
            return Err(bytes);
        };
        if h.is_closed() {
            return Err(bytes);
        }
        h.tx.try_send(Out::Data(bytes))
            .map_err(|e| match e.into_inner() {
                Out::Data(b) => b,
                Out::Close => Bytes::new(),
            })
    }

    /// The open connection for `target`, if one is established (no connecting, no
    /// waiting): what [`connect`](Self::connect) would return at once.
    pub fn established(&self, target: &Target) -> Option<ConnectionId> {
        if target.transport == TransportKind::Udp {
            return None;
        }
        let cell = self.shared.flows.get(target)?;
        let h = flow_conn(&cell)?;
        (!h.is_closed()).then(|| h.info.id)
    }

    /// Closes a connection (queued messages are written first); a
    /// [`TransportEvent::Closed`] with [`CloseReason::Local`] follows.
    pub fn close(&self, connection: ConnectionId) {
        if let Some(h) = self.shared.conns.get(&connection) {
            h.ctl.fail(CloseReason::Local);
        }
    }

    /// Information about an open connection.
    pub fn connection(&self, connection: ConnectionId) -> Option<Arc<ConnectionInfo>> {
        self.shared.conns.get(&connection).map(|h| h.info)
    }

    /// Open TCP/TLS connections, including those in their handshake.
    pub fn connection_count(&self) -> usize {
        self.shared.total.load(Ordering::Acquire)
    }

    /// Stops the listeners and closes every connection ([`CloseReason::Shutdown`]).
    /// Dropping the last clone of the transport does the same.
    pub fn shutdown(&self) {
        self.shared.shut_down();
    }
}

/// What [`SipTransport::confirm`] saw while the connection stayed open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Confirmation {
    /// The peer answered the ping: it reads what we send, so it accepted us.
    Ponged,
    /// No pong and no close within the bound: the peer does not pong, or is slow.
    Silent,
}

/// The error a connection's close reason is reported as by `confirm`.
fn close_error(info: &ConnectionInfo, reason: &CloseReason) -> TransportError {
    match reason {
        CloseReason::Tls(refusal) => TransportError::Tls {
            remote: info.remote,
            refusal: refusal.clone(),
        },
        reason => TransportError::Closed {
            connection: info.id.0,
            reason: reason.clone(),
        },
    }
}

/// Asks `h`'s reader for a ping and waits for its pong, the close, or `within`.
async fn confirm(h: &ConnHandle, within: Duration) -> Result<Confirmation, TransportError> {
    let ctl = &h.ctl;
    let before = ctl.pongs.load(Ordering::Acquire);
    ctl.ping.notify_one();
    let outcome = async {
        loop {
            // Registered before the state is read, so a change in between is not missed.
            let changed = ctl.probed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(reason) = ctl.end.get() {
                return Err(close_error(&h.info, reason));
            }
            if ctl.pongs.load(Ordering::Acquire) > before {
                return Ok(Confirmation::Ponged);
            }
            changed.await;
        }
    };
    timeout(within, outcome)
        .await
        .unwrap_or(Ok(Confirmation::Silent))
}

/// Opens an outbound connection.
async fn open(shared: &Arc<Shared>, target: &Target) -> Result<ConnHandle, TransportError> {
    let remote = target.remote;
    let result = async {
        if *shared.shutdown.borrow() {
            return Err(TransportError::Shutdown);
        }
        let admission = shared.admit(remote.ip())?;
        // One budget for both steps: the TCP connect, then the TLS handshake with what is
        // left, each reported as what timed out.
        let deadline = later(Instant::now(), shared.settings.limits.handshake_timeout);
        let attempt = async {
            let tcp = tokio::time::timeout_at(deadline, TcpStream::connect(remote))
                .await
                .map_err(|_| TransportError::ConnectTimeout(remote))?
                .map_err(|e| TransportError::io(&e))?;
            let _ = tcp.set_nodelay(true);
            let local = tcp.local_addr().map_err(|e| TransportError::io(&e))?;
            let mut info = ConnectionInfo {
                id: shared.next_id(),
                transport: target.transport,
                local,
                remote,
                direction: Direction::Outbound,
                server_name: target.server_name.clone(),
                peer: None,
            };
            match target.transport {
                TransportKind::Tls => {
                    let connector = shared
                        .connector
                        .as_ref()
                        .ok_or(TransportError::NoTlsClient)?;
                    let name = target
                        .server_name
                        .clone()
                        .unwrap_or_else(|| remote.ip().to_string());
                    let server_name = rustls_pki_types::ServerName::try_from(name.clone())
                        .map_err(|_| TransportError::InvalidServerName(name))?;
                    let tls =
                        tokio::time::timeout_at(deadline, connector.connect(server_name, tcp))
                            .await
                            .map_err(|_| TransportError::HandshakeTimeout(remote))?
                            .map_err(|e| match TlsRefusal::from_io(&e) {
                                Some(refusal) => TransportError::Tls { remote, refusal },
                                None => TransportError::io(&e),
                            })?;
                    info.peer = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(PeerIdentity::from_der);
                    let (r, w) = tokio::io::split(tls);
                    Ok::<_, TransportError>((Box::new(r) as BoxRead, Box::new(w) as BoxWrite, info))
                }
                _ => {
                    let (r, w) = tcp.into_split();
                    Ok((Box::new(r) as BoxRead, Box::new(w) as BoxWrite, info))
                }
            }
        };
        let (r, w, info) = attempt.await?;
        Ok(shared.start(r, w, info, admission, Some(target.clone())))
    }
    .await;
    if let Err(e) = &result {
        shared.failed(target.transport, Direction::Outbound, remote, e.clone());
    }
    result
}

type BoxRead = Box<dyn AsyncRead + Unpin + Send>;
type BoxWrite = Box<dyn AsyncWrite + Unpin + Send>;

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let kind = if acceptor.is_some() {
        TransportKind::Tls
    } else {
        TransportKind::Tcp
    };
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            r = listener.accept() => r,
        };
        let (tcp, remote) = match accepted {
            // A dual-stack listener sees an IPv4 peer as ::ffff:a.b.c.d: known by its IPv4
            // address, it counts against the same per-IP limit as our connections to it, and
            // its RFC 5923 alias is filed under the address targets use.
            Ok((tcp, r)) => (tcp, SocketAddr::new(r.ip().to_canonical(), r.port())),
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admission = match shared.admit(remote.ip()) {
            Ok(a) => a,
            Err(e) => {
                shared.failed(kind, Direction::Inbound, remote, e);
                continue;
            }
        };
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            let Ok(local) = tcp.local_addr() else { return };
            let mut info = ConnectionInfo {
                id: ConnectionId(0),
                transport: kind,
                local,
                remote,
                direction: Direction::Inbound,
                server_name: None,
                peer: None,
            };
            match acceptor {
                None => {
                    info.id = shared.next_id();
                    let (r, w) = tcp.into_split();
                    shared.start(r, w, info, admission, None);
                }
                Some(acceptor) => {
                    let handshake = timeout(
                        shared.settings.limits.handshake_timeout,
                        acceptor.accept(tcp),
                    )
                    .await;
                    match handshake {
                        Err(_) => shared.failed(
                            kind,
                            Direction::Inbound,
                            remote,
                            TransportError::HandshakeTimeout(remote),
                        ),
                        Ok(Err(e)) => {
                            let error = match TlsRefusal::from_io(&e) {
                                Some(refusal) => TransportError::Tls { remote, refusal },
                                None => TransportError::io(&e),
                            };
                            shared.failed(kind, Direction::Inbound, remote, error);
                        }
                        Ok(Ok(tls)) => {
                            info.id = shared.next_id();
                            info.peer = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|c| c.first())
                                .and_then(PeerIdentity::from_der);
                            let (r, w) = tokio::io::split(tls);
                            shared.start(r, w, info, admission, None);
                        }
                    }
                }
            }
        });
    }
}

async fn udp_loop(shared: Arc<Shared>, sock: Arc<UdpEndpoint>) {
    let mut shutdown = shared.shutdown.subscribe();
    let mut buf = vec![0u8; 65_536];
    let mut control = sock.control_buffer();
    let limits = shared.settings.limits.message;
    loop {
        // `local`: the address the datagram came to (the bound one, or on a wildcard
        // socket the concrete one, which answers leave from).
        let (n, remote, local) = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            r = sock.recv(&mut buf, &mut control) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "UDP receive error");
                    continue;
                }
            },
        };
        let data = &buf[..n];
        if data.iter().all(|&b| b == b'\r' || b == b'\n') {
            continue; // keep-alive datagram
        }
        let wire = Bytes::copy_from_slice(data);
        match SipMessage::parse_datagram(wire.clone(), &limits) {
            Ok(mut message) => {
                stamp_source(&mut message, remote);
                let event = TransportEvent::Message(ReceivedMessage {
                    message,
                    transport: TransportKind::Udp,
                    local,
                    remote,
                    connection: None,
                    via: Via::Udp(sock.clone()),
                    wire,
                });
                if shared.events.send(event).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(%remote, error = %e, "unparsable datagram");
                // As on streams: a request whose head parses is answered (400, 505, 513),
                // so the sender stops retransmitting; anything else is dropped. Never
                // waits: the answer is no larger than what came in.
                if let Some((answer, to)) = refusal(data, &e, &limits, local, remote) {
                    let _ = sock.try_send_from(&answer, to, local);
                }
            }
        }
    }
}

/// The response to a received request that `e` refused, and where it goes, when its head
/// can be read and it is not an ACK (which has no response, RFC 3261 §17.2.3).
fn refusal(
    data: &[u8],
    e: &sip_core::ParseError,
    limits: &sip_core::Limits,
    local: SocketAddr,
    source: SocketAddr,
) -> Option<(Bytes, SocketAddr)> {
    let mut req = SipMessage::parse_head(Bytes::copy_from_slice(data), limits).ok()?;
    stamp_source(&mut req, source);
    if !req.is_request() || req.method() == Some(&sip_core::Method::Ack) {
        return None;
    }
    let resp = refusal_response(&req, e.status(), e.reason(), e, local)?;
    Some((resp.to_bytes(), udp_response_to(&req, source)))
}

/// The answer to a request the codec refused: `status` and `reason`, and a Warning (code
/// 399, this side's address `local` as the agent, RFC 3261 §20.43) whose text is `why`,
/// so the peer (or whoever reads its log) learns what to fix, not only "Bad Request".
fn refusal_response(
    req: &SipMessage,
    status: u16,
    reason: &str,
    why: &dyn std::fmt::Display,
    local: SocketAddr,
) -> Option<SipMessage> {
    let mut resp = SipMessage::response_to(req, status, reason).ok()?;
    let warning = sip_core::Warning::format(399, &local.to_string(), &why.to_string());
    resp.push_header(sip_core::HeaderName::Warning, warning)
        .ok()?;
    Some(resp)
}

/// Notes in a received request's top Via where it came from (RFC 3261 §18.2.1, RFC 3581
/// §4), so that responses built from it carry `received`/`rport` and are routed by them.
/// A Via that cannot take them (unparsable) is left as it is: the request is refused or
/// answered from what it has.
fn stamp_source(message: &mut SipMessage, source: SocketAddr) {
    if let Err(e) = message.record_source_in_via(source) {
        tracing::debug!(%source, error = %e, "top Via not stamped");
    }
}

/// Any IPv6 address: the family of an IPv6 socket, for [`in_family_of`].
const IPV6: SocketAddr = SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), 0);

/// `to` as a socket of the address family of `like` sends to it: an IPv4 address from an
/// IPv6 (dual-stack) socket in its IPv4-mapped form (`::ffff:a.b.c.d`), as that socket
/// cannot send to an IPv4 address; anything else as it is.
fn in_family_of(to: SocketAddr, like: SocketAddr) -> SocketAddr {
    match (to, like) {
        (SocketAddr::V4(v4), SocketAddr::V6(_)) => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        _ => to,
    }
}

/// Where a response to a request received by UDP from `source` goes (RFC 3261 §18.2.2),
/// given the request or the response to it (both carry the top Via the transport stamped
/// on receipt): the address that Via names ([`sip_core::Via::response_address`]: the
/// source IP, with the sent-by port, or the source port when the Via asked for `rport`),
/// or the source itself when the Via names none. The sent-by port is where a client that
/// sends from another port than it listens on waits. An IPv4 address is given in the
/// form of `source` (IPv4-mapped when a dual-stack socket received it).
///
/// [`SipTransport::reply`] applies this itself; a layer that keeps only the source of a
/// request (a transaction layer) calls it when it sends the response by UDP.
pub fn udp_response_to(message: &SipMessage, source: SocketAddr) -> SocketAddr {
    let to = match message.top_via() {
        Ok(via) => via.response_address().unwrap_or(source),
        _ => source,
    };
    in_family_of(to, source)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A read that fills the room `sizing` made, then the framer taking every byte.
    fn full_read(sizing: &mut ReadSizing, buf: &mut BytesMut) -> usize {
        let room = sizing.prepare(buf);
        buf.resize(buf.len() + room, b'x');
        sizing.read(room, room);
        drop(buf.split());
        room
    }

    #[test]
    fn read_room_starts_small_and_doubles_while_reads_fill_it() {
        let mut sizing = ReadSizing::new();
        let mut buf = BytesMut::new();
        let rooms: Vec<usize> = (0..6).map(|_| full_read(&mut sizing, &mut buf)).collect();
        assert_eq!(rooms[0], READ_CHUNK_MIN);
        for (got, want) in rooms.iter().zip([2, 4, 8, 16, 16, 16]) {
            assert!(*got >= want * 1024, "{rooms:?}");
        }
        assert_eq!(sizing.chunk, READ_CHUNK_MAX);
        // A read that leaves room does not grow it.
        let mut sizing = ReadSizing::new();
        let room = sizing.prepare(&mut buf);
        sizing.read(room / 2, room);
        assert_eq!(sizing.chunk, READ_CHUNK_MIN);
    }

    #[test]
    fn quiet_connection_gives_back_a_grown_buffer() {
        let mut sizing = ReadSizing::new();
        let mut buf = BytesMut::new();
        sizing.prepare(&mut buf);
        // Never grown: nothing to give back.
        assert!(!sizing.can_shrink(&buf));
        for _ in 0..4 {
            full_read(&mut sizing, &mut buf);
        }
        sizing.prepare(&mut buf);
        assert!(buf.capacity() >= READ_CHUNK_MAX);
        assert!(sizing.can_shrink(&buf));
        sizing.quiet(&mut buf);
        assert_eq!(buf.capacity(), 0);
        assert_eq!(sizing.prepare(&mut buf), READ_CHUNK_MIN);
        assert!(!sizing.can_shrink(&buf));

        // Pending bytes (part of a message) are never dropped.
        for _ in 0..4 {
            full_read(&mut sizing, &mut buf);
        }
        sizing.prepare(&mut buf);
        buf.extend_from_slice(b"INVITE ");
        assert!(!sizing.can_shrink(&buf));
        sizing.quiet(&mut buf);
        assert_eq!(&buf[..], b"INVITE ");
        assert_eq!(sizing.chunk, READ_CHUNK_MIN);
    }

    /// A request as a front end would send it.
    fn request(cseq: u32) -> Vec<u8> {
        format!(
            "MESSAGE sip:app@contoso.test SIP/2.0\r\n\
             Via: SIP/2.0/TLS 192.0.2.9:5061;branch=z9hG4bK{cseq}\r\n\
             From: <sip:fe@contoso.test>;tag=1\r\n\
             To: <sip:app@contoso.test>\r\n\
             Call-ID: idle-test\r\n\
             CSeq: {cseq} MESSAGE\r\n\
             Max-Forwards: 70\r\n\
             Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    /// The next event, which must be a message; its CSeq number.
    async fn next_cseq(rx: &mut mpsc::Receiver<TransportEvent>) -> u32 {
        match rx.recv().await {
            Some(TransportEvent::Message(m)) => m.message.cseq().unwrap().seq(),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Our wait for room in the event channel does not count as the peer's silence: a peer
    /// waiting for the answer to a request that a slow application took long to accept is not
    /// closed as idle. In-memory streams and paused time: the clocks are exact.
    #[tokio::test(start_paused = true)]
    async fn application_backpressure_does_not_count_toward_the_idle_timeout() {
        let idle = Duration::from_secs(10);
        let limits = crate::TransportLimits {
            idle_timeout: idle,
            ..Default::default()
        };
        // Room for one event: `Opened` fills it until the application looks.
        let settings = TransportSettings::new().limits(limits).event_capacity(1);
        let (t, mut rx) = SipTransport::new(settings).unwrap();
        let shared = &t.shared;
        let (ours, mut peer) = tokio::io::duplex(64 * 1024);
        let (r, w) = tokio::io::split(ours);
        let remote: SocketAddr = "192.0.2.9:5061".parse().unwrap();
        let info = ConnectionInfo {
            id: shared.next_id(),
            transport: TransportKind::Tls,
            local: "192.0.2.1:5061".parse().unwrap(),
            remote,
            direction: Direction::Inbound,
            server_name: None,
            peer: None,
        };
        let admission = shared.admit(remote.ip()).unwrap();
        shared.start(r, w, info, admission, None);

        // The peer sends a request and waits for its answer; the application is busy for
        // three idle timeouts, so the reader waits that long to hand the request up.
        peer.write_all(&request(1)).await.unwrap();
        tokio::time::sleep(idle * 3).await;
        assert!(matches!(rx.recv().await, Some(TransportEvent::Opened(_))));
        assert_eq!(next_cseq(&mut rx).await, 1);
        // The peer's next request comes half an idle timeout after the application took the
        // first: the connection is still open (on the old code it was closed as idle as
        // soon as the request was handed up).
        tokio::time::sleep(idle / 2).await;
        let _ = peer.write_all(&request(2)).await;
        assert_eq!(next_cseq(&mut rx).await, 2);
        // Then silence: closed a whole idle timeout after that request, not before.
        let received = Instant::now();
        match rx.recv().await {
            Some(TransportEvent::Closed { reason, .. }) => {
                assert_eq!(reason, CloseReason::IdleTimeout)
            }
            other => panic!("expected the close, got {other:?}"),
        }
        let silent = received.elapsed();
        assert!(
            silent >= idle && silent < idle * 2,
            "closed after {silent:?}"
        );
    }

    #[test]
    fn per_ip_key_is_the_ipv4_address_or_the_ipv6_slash_64() {
        assert_eq!(per_ip_key(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(per_ip_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(
            per_ip_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            per_ip_key(ip("2001:db8:1:2::1")),
            per_ip_key(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        );
        assert_ne!(
            per_ip_key(ip("2001:db8:1:2::1")),
            per_ip_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(per_ip_key(ip("::1")), ip("::"));
    }

    #[test]
    fn addresses_of_one_slash_64_share_the_per_ip_limit() {
        let limits = crate::TransportLimits {
            max_connections_per_ip: 2,
            ..Default::default()
        };
        let (t, _rx) = SipTransport::new(TransportSettings::new().limits(limits)).unwrap();
        let shared = &t.shared;
        let a = shared.admit(ip("2001:db8:1:2::a")).unwrap();
        let b = shared.admit(ip("2001:db8:1:2::b")).unwrap();
        match shared.admit(ip("2001:db8:1:2::c")) {
            Err(TransportError::TooManyConnectionsFromIp { ip: refused, limit }) => {
                // The error names the address that was refused, not its prefix.
                assert_eq!((refused, limit), (ip("2001:db8:1:2::c"), 2));
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        // Another /64 has its own count.
        let _c = shared.admit(ip("2001:db8:1:3::a")).unwrap();
        // A slot released by one address of the /64 is free for another.
        drop(a);
        let _d = shared.admit(ip("2001:db8:1:2::d")).unwrap();
        drop(b);

        // An IPv4 peer counts once, whether seen as IPv4 or IPv4-mapped.
        let _e = shared.admit(ip("192.0.2.7")).unwrap();
        let _f = shared.admit(ip("::ffff:192.0.2.7")).unwrap();
        assert!(shared.admit(ip("192.0.2.7")).is_err());
        assert_eq!(t.connection_count(), 4);
    }
}
