//! # collaboration-platform
//!
//! What an application starts first: [`CollaborationPlatform`] with its settings
//! ([`ServerPlatformSettings`] for a trusted application over mutual TLS,
//! [`ClientPlatformSettings`] for user-authenticated clients), the tokio runtime that drives
//! `sip-core`'s sans-IO transaction machines over `transport-tls`, the raw request API
//! ([`CollaborationPlatform::send_request`], UCMA's `SendMessage`), and dispatch of incoming
//! requests to endpoints ([`CollaborationPlatform::register_endpoint`], [`IncomingRequest`]).
//!
//! ## Runtime design
//!
//! One driver task owns the transaction layer, the dialogs and the dispatcher. It is fed by
//! the transport's event channel, a bounded command channel (callers wait when it is full:
//! backpressure) and the clock (it sleeps until the layer's next deadline). It handles what
//! is queued in batches, then writes: one lane task per destination sends the bytes, so a
//! connection attempt or a full socket never stalls it. No lock is taken on the message
//! path and no task is spawned per transaction. Every request leaves through the outbound
//! proxy (the front end); requests for federated parties leave without home-trust headers.
//!
//! ## Cancel safety
//!
//! Every public `async fn` documents its own. In short: what waits for room in the command
//! queue is cancel safe (nothing happened); once a command is queued it is carried out
//! whether or not the caller still waits.
//!
//! ## Also here
//!
//! The deployment's [`Topology`] and the federation types. A middle-tier
//! application may do for a user of its home deployment what it may not do for a federated
//! user; [`Address<OnPremises>`] and [`Address<Federated>`] carry that difference in the
//! type, so the layers above can refuse at compile time what the deployment forbids.
//! [`federation::strip_home_trust`] keeps home-trust headers from crossing federation.
//! [`Dispatcher`] decides, per RFC 3261 §8.2, whether the platform answers an incoming request
//! itself (in §8.2's order: 403, 405, 501, 416, 481, 404, 482 for a copy of a request an
//! endpoint is already processing, merged by a forking proxy, 420, 415, 200 to OPTIONS) or
//! which endpoint gets it.
//!
//! ```text
//! application-endpoint, conversation
//!        │
//! collaboration-platform   ◀── this crate: platform runtime, settings, Topology, dispatch
//!        │
//!  transport-tls ─ sip-core
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod auth;
mod diagnostics;
mod dialog_end;
pub mod dispatch;
mod error;
mod failover;
pub mod federation;
mod held_acks;
mod incoming;
mod invite;
mod invite_expiry;
mod local_targets;
pub mod locate;
#[cfg(feature = "loopback")]
pub mod loopback;
mod merged;
mod observe;
mod platform;
mod recent_invites;
mod request;
mod runtime;
mod settings;
pub mod topology;

pub use auth::ClientAuth;
pub use diagnostics::peer_diagnostics;
pub use dialog_end::{DialogEndReason, DialogEnded};
pub use error::{PlatformError, ProxyAttempt, RequestError, RespondError};
pub use incoming::IncomingRequest;
pub use invite::{InviteCanceller, InviteProgress, OutgoingInvite};
pub use locate::{LocateError, LocatedServer, ServerLocator};
pub use observe::{MessageObserver, WireDirection, WireLog, WireRecord, DEFAULT_WIRE_LOG_CAPACITY};
pub use platform::CollaborationPlatform;
pub use request::OutgoingRequest;
pub use runtime::ShutdownReport;
pub use settings::{
    ClientPlatformSettings, Listener, ListenerKind, OutboundProxy, PlatformSettings,
    ServerPlatformSettings,
};
pub use sip_core::DialogId;
pub use transport_tls::{Identity, TrustRoots};

pub use dispatch::{Capabilities, Dispatcher, Disposition, EndpointId, Refusal};
pub use topology::{
    Address, Federated, FederationPolicy, Homed, Homing, HomingDirectory, OnPremises,
    StaticDirectory, Topology, TopologyError,
};
