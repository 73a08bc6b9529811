//! Settings of the transport, with documented defaults.

use std::time::Duration;

use crate::tls::TlsClientSettings;

/// Limits that protect the process from peers. Every one is configurable; the defaults suit
/// a middle-tier application server facing a SIP front-end pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportLimits {
    /// Most open TCP/TLS connections, inbound and outbound together (those still in their
    /// handshake included). Default 10 000.
    pub max_connections: usize,
    /// Most connections with one remote IPv4 address, or with one IPv6 /64 prefix (a host
    /// or subscriber is given a whole /64, so each of its addresses is not a new peer); an
    /// IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, an IPv4 peer of a dual-stack listener)
    /// counts as its IPv4 address. Default 2 000 (a front-end server holds one flow per
    /// application endpoint it proxies for).
    pub max_connections_per_ip: usize,
    /// TCP connect plus TLS handshake must finish within this (what timed out is reported:
    /// [`TransportError::ConnectTimeout`](crate::TransportError::ConnectTimeout) or
    /// [`TransportError::HandshakeTimeout`](crate::TransportError::HandshakeTimeout)). An inbound plain TCP
    /// connection, which has no handshake, must send its first bytes within this, or it is
    /// closed ([`CloseReason::IdleTimeout`](crate::CloseReason::IdleTimeout)): otherwise a
    /// silent peer would hold a connection slot for the whole idle timeout. Default 10 s.
    pub handshake_timeout: Duration,
    /// A connection on which nothing was received for this long is closed
    /// ([`CloseReason::IdleTimeout`](crate::CloseReason::IdleTimeout)). Only what the peer
    /// sends counts: what we send, keep-alive pings included, does not (a peer that never
    /// answers is not kept open by our own traffic), and neither does time the reader spent
    /// waiting for room in the event channel (a slow application: the clock restarts once
    /// what was received has been handed up). Default 300 s (keep-alive pings, default every
    /// 120 s, keep a live flow open through the peer's pongs).
    pub idle_timeout: Duration,
    /// A message whose first byte arrived must be complete within this, or the sender is
    /// cut off as a slow sender. The clock restarts with each message completed: it
    /// measures how long the current unfinished message has been pending. Default 30 s.
    pub partial_message_timeout: Duration,
    /// One write to the peer (a batch of queued messages) must finish within this, or the
    /// connection is closed ([`CloseReason::WriteTimeout`](crate::CloseReason::WriteTimeout)):
    /// a peer that stops reading would otherwise hold its connection, its send queue and
    /// every sender waiting on that queue for good. Default 30 s.
    pub write_timeout: Duration,
    /// Message size, header count and line length ([`sip_core::Limits`], default 64 KiB,
    /// 256 headers, 16 KiB lines). An oversize request whose head could be read is answered
    /// 513, then the connection closes.
    pub message: sip_core::Limits,
}

impl TransportLimits {
    /// The documented defaults.
    pub const DEFAULT: TransportLimits = TransportLimits {
        max_connections: 10_000,
        max_connections_per_ip: 2_000,
        handshake_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(300),
        partial_message_timeout: Duration::from_secs(30),
        write_timeout: Duration::from_secs(30),
        message: sip_core::Limits::DEFAULT,
    };
}

impl Default for TransportLimits {
    fn default() -> Self {
        TransportLimits::DEFAULT
    }
}

/// RFC 5626 §4.4.1 keep-alive of outbound flows: a CRLF CRLF ping every `interval` (with
/// 80–100 % jitter), and a flow whose pong does not come within `pong_timeout` is dead
/// ([`CloseReason::DeadFlow`](crate::CloseReason::DeadFlow)).
///
/// Only a peer that supports outbound promises pongs; many others read the ping and say
/// nothing. So a missing pong counts only on a connection that has had a pong before: until
/// then the peer is taken as one that does not answer, its flow is not checked, and pings go
/// on (they still keep NAT bindings open). Such a flow is still closed by
/// [`TransportLimits::idle_timeout`] when nothing at all comes from the peer for that long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepAlive {
    /// Time between pings. Default 120 s.
    pub interval: Duration,
    /// Time to wait for the pong. Default 10 s (RFC 5626 §4.4.1).
    pub pong_timeout: Duration,
}

impl Default for KeepAlive {
    fn default() -> Self {
        KeepAlive {
            interval: Duration::from_secs(120),
            pong_timeout: Duration::from_secs(10),
        }
    }
}

/// Settings of a [`SipTransport`](crate::SipTransport).
#[derive(Debug, Clone)]
pub struct TransportSettings {
    pub(crate) limits: TransportLimits,
    pub(crate) keep_alive: Option<KeepAlive>,
    pub(crate) tls_client: Option<TlsClientSettings>,
    pub(crate) event_capacity: usize,
    pub(crate) send_queue: usize,
    pub(crate) path_mtu: Option<usize>,
}

impl Default for TransportSettings {
    fn default() -> Self {
        TransportSettings::new()
    }
}

impl TransportSettings {
    /// Defaults: [`TransportLimits::DEFAULT`], keep-alive on outbound flows with
    /// [`KeepAlive::default`], no TLS client (outbound TLS needs
    /// [`tls_client`](Self::tls_client)), 1 024 queued events, 256 queued messages per
    /// connection, path MTU unknown (UDP requests up to 1 300 bytes).
    pub fn new() -> Self {
        TransportSettings {
            limits: TransportLimits::DEFAULT,
            keep_alive: Some(KeepAlive::default()),
            tls_client: None,
            event_capacity: 1024,
            send_queue: 256,
            path_mtu: None,
        }
    }

    /// Replaces the limits.
    pub fn limits(mut self, limits: TransportLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Keep-alive of outbound flows; `None` turns pings off (pings received are still
    /// answered).
    pub fn keep_alive(mut self, keep_alive: Option<KeepAlive>) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// The TLS client side: roots that verify servers, and this side's certificate.
    pub fn tls_client(mut self, tls: TlsClientSettings) -> Self {
        self.tls_client = Some(tls);
        self
    }

    /// Capacity of the event channel. When the layer above does not keep up, connections
    /// stop reading (backpressure reaches the peers through TCP flow control).
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.event_capacity = n.max(1);
        self
    }

    /// Messages queued per connection before senders wait.
    pub fn send_queue(mut self, n: usize) -> Self {
        self.send_queue = n.max(1);
        self
    }

    /// The path MTU, when known: UDP requests larger than MTU − 200 bytes are refused with
    /// [`TransportError::TooLargeForUdp`](crate::TransportError::TooLargeForUdp) (RFC 3261
    /// §18.1.1). Unknown (the default) means 1 300 bytes.
    pub fn path_mtu(mut self, mtu: usize) -> Self {
        self.path_mtu = Some(mtu);
        self
    }

    pub(crate) fn udp_request_limit(&self) -> usize {
        self.path_mtu.map_or(1300, |m| m.saturating_sub(200))
    }
}
