//! # sip-core
//!
//! The sans-IO heart of ucma-rs: a zero-copy SIP and SDP codec, a stream framer for TCP/TLS,
//! and the explicit limits that keep a server safe from hostile input. No sockets, no tokio,
//! no clocks: the layers above own I/O and time.
//!
//! ```text
//! ucma (facade) ─ conversation ─ application-endpoint ─ collaboration-platform ─ transport-tls
//!                                                                                    │
//!                                                          sip-core  ◀── this crate ─┘
//! ```
//!
//! ## Why a codec of our own
//!
//! rsip and sdp-rs, measured on the RFC 4475/5118 torture messages, accept malformed
//! messages, ignore Content-Length and can panic on hostile SDP (see `DESIGN.md`). This crate
//! parses SIP strictly where RFC 3261/4475 call a message invalid, leniently where they allow
//! it, and without copying: a parsed [`SipMessage`] keeps the received [`bytes::Bytes`] and
//! records header names and values as offsets into it. Typed views (Via, CSeq, From/To, …)
//! are decoded on demand from those slices and borrow from the message.
//!
//! A message that was parsed and not changed serializes to exactly the bytes received; a
//! changed message serializes to canonical form (long header names, unfolded values, a
//! Content-Length computed from the body).
//!
//! ## What it does not do
//!
//! No I/O, no DNS, no timers of its own: the protocol state ([`auth`] digest client and
//! verifier, [`sdp::offer_answer`], transactions and dialogs) is sans-IO, fed with an
//! explicit `now` where time matters, and tells the caller what to send.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod auth;
pub mod dialog;
mod error;
pub mod framer;
pub mod headers;
mod index;
#[cfg(feature = "interop")]
pub mod interop;
mod limits;
mod message;
mod method;
mod name;
pub mod name_addr;
pub mod params;
mod scan;
mod scratch;
pub mod sdp;
pub mod transaction;
pub mod uri;

pub use dialog::{Dialog, DialogError, DialogId, DialogUpdate, Dialogs};
pub use error::ParseError;
pub use framer::{Frame, FrameError, StreamFramer};
pub use headers::{AuthValue, CSeq, Contact, MediaType, TokenParams, Transport, Via, Warning};
pub use limits::Limits;
pub use message::{HeaderRef, IntoHeaderName, MessageBuilder, SipMessage};
pub use method::{reason_phrase, Method};
pub use name::HeaderName;
pub use name_addr::{DisplayName, NameAddr};
pub use params::{Param, Params};
pub use transaction::{
    Event, Peer, TransactionConfig, TransactionError, TransactionId, TransactionLayer,
    TransportKind,
};
pub use uri::{Host, Uri};
