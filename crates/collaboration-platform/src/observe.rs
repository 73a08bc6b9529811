//! A tap on the wire: every SIP message the platform sends or receives, as bytes, for
//! recorders such as the conversation crate's ladder diagrams or an application's audit log.
//!
//! The observer runs on the platform's driver task, so it must be quick (copy what it needs
//! and return); the bytes are shared, not copied, when handed over.

use bytes::Bytes;
use std::net::SocketAddr;

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireDirection {
    /// The platform sent it to `remote`.
    Sent,
    /// The platform received it from `remote`.
    Received,
}

/// Sees every SIP message the platform sends or receives (keep-alives excluded).
pub trait MessageObserver: Send + Sync + 'static {
    /// Called once per message on the driver task: do not block.
    fn observe(&self, direction: WireDirection, remote: SocketAddr, wire: &Bytes);
}
