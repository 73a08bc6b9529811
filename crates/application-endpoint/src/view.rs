//! [`RemotePresenceView`]: subscriptions to other people's presence (RFC 6665, RFC 3856).

/// Subscriptions to the presence of many presentities.
#[derive(Debug)]
pub struct RemotePresenceView {}
