//! # ucma
//!
//! A UCMA-style middle-tier SIP SDK: server applications, trusted by a SIP front end over
//! mutual TLS, host endpoints and hold conversations with users at home and, by federation,
//! in other deployments. This package is the facade: it re-exports the workspace crates so an
//! application adds one dependency and writes `use ucma::prelude::*;`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use application_endpoint;
/// The `bytes` crate, whose [`Bytes`](bytes::Bytes) the SIP codec parses from and writes to
/// (`SipMessage::parse_datagram`, `SipMessage::to_bytes`): no second dependency to add.
pub use bytes;
pub use collaboration_platform;
pub use conversation;
pub use sip_core;
pub use transport_tls;

/// The names most applications need, in one import.
pub mod prelude {
    pub use application_endpoint::{
        ApplicationEndpoint, ApplicationEndpointSettings, Credentials, Endpoint, EndpointError,
        EndpointState, LocalOwnerPresence, Modality, PresenceError, RemotePresenceView,
        StateChange, UserEndpoint, UserEndpointSettings,
    };
    pub use collaboration_platform::{
        Address, ClientPlatformSettings, CollaborationPlatform, EndpointId, Federated,
        FederationPolicy, Homed, Homing, Identity, IncomingRequest, Listener, OnPremises,
        OutboundProxy, OutgoingRequest, PlatformError, PlatformSettings, RequestError,
        RespondError, ServerLocator, ServerPlatformSettings, ShutdownReport, StaticDirectory,
        Topology, TopologyError, TrustRoots,
    };
    pub use conversation::ladder::LadderRecorder;
    pub use conversation::{
        incoming_im_calls, AnyConversation, CallError, Conversation, ConversationState, Delivery,
        IncomingCall, IncomingImCall, IncomingImCalls, InstantMessagingCall, InstantMessagingFlow,
        MessageError, Priority, ReceivedMessage, TerminationReason,
    };
    pub use sip_core::sdp;
    pub use sip_core::{HeaderName, Method, SipMessage};
}

// Every Rust block of README.md compiles (`no_run` ones included) and, unless `no_run`, runs:
// `cargo test --doc -p ucma`. tests/readme_usage.rs checks they import through `ucma` only.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
