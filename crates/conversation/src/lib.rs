//! # conversation
//!
//! Conversations with other parties: `Conversation`, instant-messaging calls and flows,
//! and impersonation typed by the homing of the remote party (toward a federated party an
//! impersonated identity carries a SIP URI but no display name).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod composing;
pub mod ladder;
