//! # application-endpoint
//!
//! The identities an application acts as: `ApplicationEndpoint` (the application's own
//! trusted identity) and `UserEndpoint` (a user of the home deployment, registered with
//! digest credentials), with presence publication, remote presence subscriptions and routing
//! of incoming calls.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod pidf;
