//! # conversation
//!
//! Conversations with other parties: `Conversation`, instant-messaging calls and flows,
//! audio/video call signaling, back-to-back calls, and impersonation typed by the homing of
//! the remote party (toward a federated party an impersonated identity carries a SIP URI but
//! no display name).
//!
//! Not built yet (issue 7).
