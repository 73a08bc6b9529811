//! # application-endpoint
//!
//! The identities an application acts as: `ApplicationEndpoint` (the application's own
//! trusted identity) and `UserEndpoint` (a user of the home deployment, registered with
//! digest credentials), with presence publication, remote presence subscriptions and routing
//! of incoming calls.
//!
//! Not built yet (issue 6). A `UserEndpoint` will only be constructible from an on-premises
//! address, so user-only operations cannot compile against a federated user.
