//! # application-endpoint
//!
//! The identities an application acts as, on a
//! [`CollaborationPlatform`](collaboration_platform::CollaborationPlatform):
//!
//! * [`ApplicationEndpoint`] — the application's own trusted identity. It receives
//!   conversations from anyone (federated users included, typed by the caller's homing),
//!   may register, and publishes its own presence.
//! * [`UserEndpoint`] — one user of the home deployment: registers with the user's digest
//!   credentials (refreshed, re-established after a front-end restart), publishes the
//!   user's presence ([`LocalOwnerPresence`]) and receives the user's calls and IMs.
//! * [`RemotePresenceView`] — subscriptions to other people's presence, home or federated.
//!
//! ## Federation rules in the types
//!
//! An application cannot act as a federated user. Everything only a user endpoint can do
//! takes an [`Address<OnPremises>`](collaboration_platform::Address): building
//! [`UserEndpointSettings`] or an [`ApplicationEndpointSettings`] from an
//! `Address<Federated>` does not compile, and so neither does publishing presence or
//! receiving calls on behalf of a federated user. URIs that arrive as strings go through
//! [`Topology::classify`](collaboration_platform::Topology::classify), and a user-only
//! operation asked for a federated or cloud-homed user is
//! [`EndpointError::FederationRestricted`] before anything is sent.
//!
//! ## Incoming requests
//!
//! See [`EndpointCore`]: handlers are streams per modality
//! ([`EndpointCore::incoming`]), page-mode messages ([`EndpointCore::pages`]) and dialog
//! routes ([`EndpointCore::route_dialog`]) that the conversation layer uses.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod application;
mod core;
mod error;
pub mod ids;
pub mod pidf;
mod presence;
mod registration;
mod state;
mod user;
mod view;
pub mod xml;

pub use crate::core::{DialogGuard, DialogHandler, DialogRoute, EndpointCore, Modality};
pub use application::{ApplicationEndpoint, ApplicationEndpointSettings};
pub use error::EndpointError;
pub use presence::{LocalOwnerPresence, DEFAULT_PUBLICATION_EXPIRES};
pub use registration::Granted;
pub use sip_core::auth::Credentials;
pub use state::{EndpointState, StateChange};
pub use user::{UserEndpoint, UserEndpointSettings};
pub use view::{
    PresenceError, PresenceNotification, RemotePresenceView, SubscriptionState, TerminationReason,
    DEFAULT_NOTIFICATION_CAPACITY, DEFAULT_RETRY_MAX, DEFAULT_RETRY_MIN,
    DEFAULT_SUBSCRIPTION_EXPIRES,
};

/// What both endpoint kinds are to the layers above: their shared core.
pub trait Endpoint: Send + Sync {
    /// The endpoint's identity, platform and routing.
    fn core(&self) -> &std::sync::Arc<EndpointCore>;
}
