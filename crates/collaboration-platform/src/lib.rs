//! # collaboration-platform
//!
//! What an application starts first: `CollaborationPlatform` with its settings, the
//! deployment's `Topology` (which users are homed on premises, in the cloud, or in a federated
//! deployment), the tokio runtime that drives `sip-core`'s sans-IO transaction and dialog
//! machines over `transport-tls`, and dispatch of incoming requests to endpoints.
//!
//! Not built yet (issue 5). The federation types (`Address<OnPremises>`,
//! `Address<Federated>`) will live here, so that what a middle-tier application may not do
//! for a federated user does not compile.
