//! # transport-tls
//!
//! The layer that owns sockets: mutual TLS (rustls), TCP and UDP transports for SIP, the
//! connection manager (one flow per remote address, transport and TLS server name; RFC 5923
//! reuse), RFC 5626 keep-alive, and the limits that protect a server (connections, message
//! size, slow senders).
//!
//! Not built yet (issue 4). It will sit on `sip-core`'s stream framer and hand each received
//! message up with the verified identity of the peer's certificate.
//!
//! ```text
//! collaboration-platform
//!        │
//!  transport-tls   ◀── this crate: sockets, TLS, flows, limits
//!        │
//!     sip-core
//! ```
