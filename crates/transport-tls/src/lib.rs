//! # transport-tls
//!
//! The layer of ucma-rs that owns sockets: mutual TLS (rustls 0.23), TCP and UDP transports
//! for SIP, the connection manager, RFC 5626 keep-alive, and the limits that protect a
//! server from its peers. Every message received is handed up already framed and parsed by
//! `sip-core`, with the connection it came on and the verified identity of the peer's
//! certificate.
//!
//! ```text
//! ucma (facade) ─ conversation ─ application-endpoint ─ collaboration-platform
//!                                                               │
//!                                  this crate ──▶  transport-tls   sockets, TLS, flows, limits
//!                                                               │
//!                                                           sip-core   framer, codec (no I/O)
//! ```
//!
//! ## What it does
//!
//! - **TLS, both ways.** [`TlsServerSettings::mutual`] requires a client certificate that
//!   chains to the configured [`TrustRoots`]; accepting clients without one is the explicit,
//!   different [`ClientAuth::Optional`] (or [`ClientAuth::None`]). The client side
//!   ([`TlsClientSettings`]) presents an [`Identity`] and verifies the server's certificate
//!   for the [`Target`]'s name (SAN). Roots and identities load from PEM files, PEM text or
//!   DER; TLS 1.2 and 1.3 ([`TlsVersions`]). Opt-in NSS key log ([`KeyLog`],
//!   `SSLKEYLOGFILE`) for Wireshark.
//! - **Peer identity.** The DNS SANs and subject CN of the peer's verified certificate
//!   ([`PeerIdentity`]) come with every [`ReceivedMessage`], so the platform can tell its
//!   front end, its edge and strangers apart.
//! - **TCP and UDP.** TCP uses the same framing as TLS (`sip_core::framer`: Content-Length
//!   mandatory). UDP parses datagrams and enforces RFC 3261 §18.1.1: a request larger than
//!   the path MTU − 200 bytes (1 300 when the MTU is unknown) is refused with
//!   [`TransportError::TooLargeForUdp`], so the caller resends it over TCP or TLS. UDP
//!   responses go to the request's source IP and its Via's sent-by port, or its source port
//!   when the Via asks for `rport` (RFC 3261 §18.2.2, RFC 3581), from the socket the request
//!   arrived at ([`SipTransport::reply`], [`SipTransport::send_udp_from`]; RFC 3581 §4).
//!   A socket bound to the unspecified address (0.0.0.0, `[::]`) learns on Linux which of
//!   the host's addresses each datagram was sent to (`IP_PKTINFO`, `IPV6_PKTINFO`),
//!   reports it as [`ReceivedMessage::local`], and answers from it; elsewhere it reports
//!   the wildcard and the system picks the source.
//! - **Via stamping.** Every request received, on any transport, has its top Via stamped
//!   with `received` (sent-by not the source address) and `rport` (asked for without a
//!   value) before it is handed up (RFC 3261 §18.2.1, RFC 3581 §4), so responses built from
//!   it tell a peer behind a NAT where its request came from; only those bytes change.
//! - **Connection manager** ([`SipTransport`]). One connection per (remote address,
//!   transport, TLS server name), reused by every send to that [`Target`]; concurrent first
//!   sends share one connection attempt. Responses go back on the connection the request
//!   came on ([`SipTransport::reply`], RFC 3261 §18.2.2). RFC 5923: an inbound TLS request
//!   whose top Via carries `alias` lets later requests to that Via's address reuse the
//!   inbound connection, for the names the peer's verified certificate carries (TLS only:
//!   over plain TCP an alias would let anyone capture another host's traffic), one address
//!   per connection (a new sent-by moves the alias). [`SipTransport::shutdown`], or
//!   dropping the last clone of the transport, stops its listeners and closes its
//!   connections.
//! - **Keep-alive (RFC 5626).** Outbound flows send CRLF CRLF pings every
//!   [`KeepAlive::interval`] (80–100 % jitter) and report a dead flow
//!   ([`CloseReason::DeadFlow`]) when the pong does not come within
//!   [`KeepAlive::pong_timeout`] on a connection whose peer has ponged before: a peer that
//!   never answers pings (pongs are promised only by peers that support outbound) keeps its
//!   flow, and still gets the pings. Pings received on any connection are answered with a
//!   single CRLF. [`SipTransport::confirm`] sends one ping on demand and waits for its
//!   pong or the close: under TLS 1.3 a server refuses a client certificate only after our
//!   handshake has ended, so this is how a caller learns that it kept the connection.
//! - **Limits** ([`TransportLimits`], documented defaults): connections in all and per
//!   remote IP, TLS handshake timeout (for inbound plain TCP: the first bytes must come
//!   within it), idle timeout, message size / header count / line length (an oversize
//!   request whose head could be read is answered 513, then the connection closes), a
//!   deadline to finish a message once started (slow senders are cut off), and a write
//!   timeout (a peer that stops reading is cut off, [`CloseReason::WriteTimeout`]).
//! - **Events** ([`TransportEvent`]) on one bounded channel: connection opened, message
//!   received (connection id, transport, local and remote address, peer identity),
//!   connection closed with a [`CloseReason`], connection failed with a typed
//!   [`TransportError`] (TLS refusals as [`TlsRefusal`]). Refusals and abnormal closes are
//!   also `tracing` events at WARN level.
//!
//! ## What it does not do
//!
//! No DNS (RFC 3263 resolution belongs to the layer above: targets are socket addresses plus
//! the TLS name), no transactions or retransmissions (sip-core's state machines), no STUN
//! keep-alive on UDP, no WebSocket or SCTP, no certificate revocation checks (CRL/OCSP), and
//! no routing decisions: who is trusted is decided above, from the [`PeerIdentity`].
//!
//! ## Throughput design (2 cores)
//!
//! Each connection has two tasks, a reader and a writer, and nothing else: not one task per
//! message. The reader reads into the framer's buffer (no copy beyond the kernel's and
//! TLS's), frames, parses and sends events. The room it reserves before a read starts at
//! 2 KiB and doubles while reads fill it, up to 16 KiB, back to 2 KiB after 2 s without
//! traffic: a busy connection reads in large chunks, an idle one (which waits in a read
//! with that room reserved) holds little. The writer gathers whatever is queued into one
//! write (one TLS record run, one syscall). There is no global lock on the message path:
//! replies go through the handle carried by the received message; the tables of connections
//! and flows are sharded and touched once per send by target; each connection has one timer,
//! re-armed only when a deadline moves earlier. Every queue is bounded, so a slow consumer
//! slows the readers, and TCP flow control slows the peers (backpressure, not memory).
//!
//! ## Crypto provider
//!
//! rustls runs with `ring`, passed explicitly to every config builder (the process-wide
//! default provider is neither installed nor needed). ring builds with a C compiler alone,
//! while aws-lc-rs needs cmake and clang (and Go/NASM in some configurations): ring keeps CI
//! on stock Debian packages and the 2-core build short, and its AES-GCM, ChaCha20, ECDSA and
//! RSA are fast enough for signalling. aws-lc-rs would matter for FIPS, which is not a goal.
//!
//! ## Cancel safety
//!
//! Every public `async fn` documents its cancel safety. In short: binding and connecting are
//! cancel safe; sends are cancel safe while they wait for room in a queue (the message was
//! not queued), and a message once queued is sent even if the caller goes away.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod config;
mod error;
mod pktinfo;
mod tls;
mod transport;

pub use config::{KeepAlive, TransportLimits, TransportSettings};
pub use error::{CloseReason, TlsConfigError, TlsRefusal, TransportError};
pub use tls::{
    ClientAuth, Identity, KeyLog, PeerIdentity, TlsClientSettings, TlsServerSettings, TlsVersions,
    TrustRoots,
};
pub use transport::{
    udp_response_to, Confirmation, ConnectionId, ConnectionInfo, Direction, ReceivedMessage,
    SipTransport, Target, TransportEvent, TransportKind,
};
