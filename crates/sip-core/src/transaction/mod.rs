//! SIP transactions (RFC 3261 §17 as amended by RFC 6026), sans-IO.
//!
//! One [`TransactionLayer`] owns every client and server transaction of a user agent. The
//! runtime feeds it parsed messages ([`TransactionLayer::handle_message`]), transport failures
//! and the clock ([`TransactionLayer::handle_timeout`]), each with an explicit `now`; it polls
//! what to do: [`poll_transmit`](TransactionLayer::poll_transmit) for bytes to send and where,
//! [`poll_timeout`](TransactionLayer::poll_timeout) for the next deadline (a heap, not a scan),
//! and [`poll_event`](TransactionLayer::poll_event) for the transaction user (TU). This is the
//! shape of quinn-proto's `Connection`.
//!
//! What it does:
//! - the four machines of figures 5–8 with RFC 6026's Accepted state, timers A B D E F G H I
//!   J K L M and the 100 Trying a slow INVITE server sends after 200 ms; retransmission timers
//!   are zero on reliable transports, as are D, I, J and K;
//! - matching (§17.1.3, §17.2.3): magic-cookie branch + sent-by + method, RFC 2543 fallback;
//!   messages matching nothing go to the TU (stray responses, ACK for 2xx);
//! - the ACK for a non-2xx final response (§17.1.1.3), CANCEL building (§9.1, held until a
//!   provisional response arrives) and CANCEL matching (§9.2).
//!
//! What it does not do: sockets, DNS (RFC 3263), the clock, or dialog logic (see
//! [`crate::dialog`]). Responses go back to the [`Peer`] the request came from; choosing
//! another address per §18.2.2 (maddr, received/rport on a new connection) is the runtime's.
//! A CANCEL for a non-INVITE request (which §9.1 says should not be sent) is answered 200
//! while that request's transaction lives, and changes nothing (§9.2).

mod ids;
mod key;
mod layer;
mod timers;

pub use ids::{
    new_branch, new_call_id, new_tag, IdGenerator, RandomIds, SequentialIds, MAGIC_COOKIE,
};
pub(crate) use ids::{push_branch, BRANCH_LEN};
pub use layer::TransactionLayer;

use crate::{ParseError, SipMessage};
use bytes::Bytes;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// The transport a message travels on; decides whether retransmission timers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// UDP: unreliable, so requests and responses are retransmitted.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// SCTP.
    Sctp,
    /// WebSocket (RFC 7118).
    Ws,
    /// Secure WebSocket (RFC 7118).
    Wss,
}

impl TransportKind {
    /// Reliable transports need no retransmissions (RFC 3261 §17.1.1.2 and others).
    pub fn is_reliable(self) -> bool {
        !matches!(self, TransportKind::Udp)
    }
}

/// The other end of a message: where a request came from, or where to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// The remote socket address (for a request sent, the resolved next hop).
    pub addr: SocketAddr,
    /// The transport.
    pub transport: TransportKind,
    /// The runtime's id of the connection, so responses reuse the one a request arrived on.
    pub connection: Option<u64>,
    /// Our address a received message arrived at, when the runtime reports it (`None` for a
    /// destination to send to). A datagram has no connection to tell which of several UDP
    /// sockets took it: this does, so a policy set per listener (which peers it accepts)
    /// can be applied to the request's server transaction, and its responses (a server
    /// transaction's transmits carry this peer) leave from the address the request arrived
    /// at (RFC 3261 §18.2.2, RFC 3581 §4).
    pub local: Option<SocketAddr>,
}

impl Peer {
    /// A peer without a connection id or local address.
    pub fn new(addr: SocketAddr, transport: TransportKind) -> Self {
        Peer {
            addr,
            transport,
            connection: None,
            local: None,
        }
    }
}

/// Which transaction; stays unique for the life of the layer (slot index and generation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionId {
    index: u32,
    generation: u32,
}

impl fmt::Display for TransactionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tx{}.{}", self.index, self.generation)
    }
}

/// The four machines of RFC 3261 §17.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionKind {
    /// Client INVITE (figure 5).
    ClientInvite,
    /// Client non-INVITE (figure 6).
    ClientNonInvite,
    /// Server INVITE (figure 7).
    ServerInvite,
    /// Server non-INVITE (figure 8).
    ServerNonInvite,
}

/// The states of figures 5–8 with RFC 6026's Accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionState {
    /// Client INVITE waiting for any response.
    Calling,
    /// Non-INVITE waiting for any response (client) or for the TU (server).
    Trying,
    /// A provisional response was received (client) or sent (server).
    Proceeding,
    /// A final response (non-2xx for INVITE) was received or sent.
    Completed,
    /// Server INVITE: the ACK for a non-2xx arrived.
    Confirmed,
    /// INVITE: a 2xx was received or sent (RFC 6026).
    Accepted,
    /// Finished; the transaction is gone.
    Terminated,
}

/// The timers of RFC 3261 §17 (table 4) and RFC 6026.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// INVITE request retransmission.
    A,
    /// INVITE transaction timeout.
    B,
    /// Wait time for response retransmissions (client INVITE Completed).
    D,
    /// Non-INVITE request retransmission.
    E,
    /// Non-INVITE transaction timeout.
    F,
    /// INVITE response retransmission.
    G,
    /// Wait time for ACK receipt.
    H,
    /// Wait time for ACK retransmissions.
    I,
    /// Wait time for non-INVITE request retransmissions.
    J,
    /// Wait time for non-INVITE response retransmissions.
    K,
    /// Server INVITE Accepted lifetime (RFC 6026).
    L,
    /// Client INVITE Accepted lifetime (RFC 6026).
    M,
    /// The 200 ms after which a server INVITE sends 100 Trying on its own (§17.2.1).
    Trying,
    /// The 64·T1 a client INVITE waits for a final response after its CANCEL went out;
    /// then it is destroyed (§9.1), so a callee that rang and vanished does not hold a
    /// transaction for ever.
    Cancel,
}

/// Timer values (RFC 3261 §17.1.1.1 and table 4). A value too long for an `Instant`
/// deadline (`Duration::MAX`) means that timer never fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionConfig {
    /// Round-trip estimate; default 500 ms. A layer raises a value under 1 ms to 1 ms: a
    /// zero retransmit interval would fire for ever at the same instant.
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses; default 4 s.
    /// A layer raises a value under T1 to T1.
    pub t2: Duration,
    /// Longest time a message stays in the network; default 5 s.
    pub t4: Duration,
    /// Timer D on unreliable transports; default 32 s (at least that, says the RFC).
    pub timer_d: Duration,
    /// When a server INVITE sends 100 Trying if the TU has not answered; default 200 ms,
    /// `None` never.
    pub trying_delay: Option<Duration>,
    /// Most live transactions, client and server together; default 100 000 (each holds
    /// about 1 KiB). At the limit, a request that would start a server transaction is
    /// answered 503 with `Retry-After: 1` without one, and
    /// [`TransactionLayer::send_request`] fails with [`TransactionError::Overloaded`]. On
    /// UDP a server transaction lives 32 s after its final response, so a request flood
    /// would otherwise grow memory without bound.
    pub max_transactions: usize,
}

impl Default for TransactionConfig {
    fn default() -> Self {
        TransactionConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_d: Duration::from_secs(32),
            trying_delay: Some(Duration::from_millis(200)),
            max_transactions: 100_000,
        }
    }
}

/// Bytes to send and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send (for responses: where the request came from).
    pub destination: Peer,
    /// The serialized message.
    pub contents: Bytes,
    /// The transaction that sent it; report send failures with
    /// [`TransactionLayer::handle_transport_error`]. `None` for stateless sends.
    pub transaction: Option<TransactionId>,
}

/// What the transaction user (dialog layer, application) must learn.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A new request created a server transaction; answer with
    /// [`TransactionLayer::respond`].
    Request {
        /// The new server transaction.
        id: TransactionId,
        /// The request.
        request: SipMessage,
        /// Where it came from.
        source: Peer,
        /// For a CANCEL: the INVITE server transaction it matches (§9.2), if any.
        cancels: Option<TransactionId>,
    },
    /// A response the client transaction passes up (provisional, final, and in Accepted
    /// every 2xx, retransmissions included, so the TU can ACK again).
    Response {
        /// The client transaction.
        id: TransactionId,
        /// The response.
        response: SipMessage,
    },
    /// An ACK for the TU: one matching no transaction (the ACK for a 2xx), or one matching a
    /// server INVITE in Accepted (RFC 6026).
    Ack {
        /// The server INVITE transaction it matched, if any.
        id: Option<TransactionId>,
        /// The ACK.
        request: SipMessage,
        /// Where it came from.
        source: Peer,
    },
    /// A response matching no client transaction (e.g. a 2xx retransmission after Timer M,
    /// or from a fork after the transaction ended).
    StrayResponse {
        /// The response.
        response: SipMessage,
        /// Where it came from.
        source: Peer,
    },
    /// A 2xx for client INVITE `id` after its non-2xx final response (another fork
    /// answered, §16.7 step 5 forwards it; or a UAS that contradicts itself): the call the
    /// TU was told failed exists at the far end, so the TU must ACK this 2xx and should end
    /// it with BYE (§13.2.2.4). Unlike a [`StrayResponse`](Self::StrayResponse), it is
    /// known to answer this layer's INVITE.
    AnsweredAfterFailure {
        /// The client INVITE transaction (in Completed).
        id: TransactionId,
        /// The 2xx.
        response: SipMessage,
    },
    /// Timer B, F or H fired: no (final) response, or no ACK; or [`Timer::Cancel`]: a
    /// cancelled INVITE got no final response.
    Timeout {
        /// The transaction.
        id: TransactionId,
        /// Which timer.
        timer: Timer,
    },
    /// The transport failed to send for this transaction (§17.1.4, §17.2.4).
    TransportError {
        /// The transaction.
        id: TransactionId,
    },
    /// A CANCEL that [`TransactionLayer::cancel`] held (its INVITE had no provisional
    /// response yet) was sent when one arrived, as client transaction `Ok(id)`; or could
    /// not be sent (`Err`, e.g. [`TransactionError::Overloaded`]), and the INVITE goes on.
    HeldCancel {
        /// The client INVITE transaction being cancelled.
        invite: TransactionId,
        /// The CANCEL's client transaction, or why it was not sent.
        cancel: Result<TransactionId, TransactionError>,
    },
    /// The transaction ended and was destroyed.
    Terminated {
        /// The transaction.
        id: TransactionId,
    },
}

/// Why the transaction layer refused a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransactionError {
    /// The message lacks something a transaction needs (Via, CSeq …); status 400.
    #[error("unusable message: {0}")]
    Message(#[from] ParseError),
    /// A request was expected and a response given, or the other way round.
    #[error("wrong kind of message: {0}")]
    WrongMessage(&'static str),
    /// ACK is never a transaction of its own: send it with `send_stateless`.
    #[error("ACK is not sent in a transaction")]
    Ack,
    /// The request's branch is already used by a live transaction.
    #[error("a transaction with this branch and method already exists")]
    DuplicateBranch,
    /// [`TransactionConfig::max_transactions`] transactions are live; status 503.
    #[error("too many live transactions (limit {limit})")]
    Overloaded {
        /// The configured limit.
        limit: usize,
    },
    /// No live transaction has this id.
    #[error("no such transaction")]
    UnknownTransaction,
    /// The call does not fit the transaction's kind or state (e.g. a second final response).
    #[error("not allowed in state {state:?}")]
    InvalidState {
        /// The state the transaction is in.
        state: TransactionState,
    },
}

impl TransactionError {
    /// The status a server would answer a request refused for this reason with.
    pub fn status(&self) -> u16 {
        match self {
            TransactionError::Message(e) => e.status(),
            TransactionError::DuplicateBranch => 482,
            TransactionError::UnknownTransaction => 481,
            TransactionError::Overloaded { .. } => 503,
            _ => 500,
        }
    }
}
