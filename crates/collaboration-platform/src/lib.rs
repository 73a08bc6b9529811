//! # collaboration-platform
//!
//! What an application starts first. This crate will hold `CollaborationPlatform` with its
//! settings, the tokio runtime that drives `sip-core`'s sans-IO transaction and dialog
//! machines over `transport-tls`, and dispatch of incoming requests to endpoints (issue 5).
//!
//! Built so far: the deployment's [`Topology`] and the federation types. A middle-tier
//! application may do for a user of its home deployment what it may not do for a federated
//! user; [`Address<OnPremises>`] and [`Address<Federated>`] carry that difference in the
//! type, so the layers above can refuse at compile time what the deployment forbids.
//! [`federation::strip_home_trust`] keeps home-trust headers from crossing federation.
//! [`Dispatcher`] decides, per RFC 3261 §8.2, whether the platform answers an incoming request
//! itself (403, 501, 416, 481, 420, 200 to OPTIONS, 404) or which endpoint gets it.
//!
//! ```text
//! application-endpoint, conversation
//!        │
//! collaboration-platform   ◀── this crate: Topology, federation types (runtime to come)
//!        │
//!  transport-tls ─ sip-core
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod dispatch;
pub mod federation;
pub mod topology;

pub use dispatch::{Capabilities, Dispatcher, Disposition, EndpointId, Refusal};
pub use topology::{
    Address, Federated, FederationPolicy, Homed, Homing, HomingDirectory, OnPremises,
    StaticDirectory, Topology, TopologyError,
};
