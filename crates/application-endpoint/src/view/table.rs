//! The view's table of targets, which the handle reads and the task keeps, and the
//! notification stream both feed.

use super::{PresenceNotification, SubscriptionState};
use crate::core::DialogGuard;
use crate::pidf::Availability;
use collaboration_platform::DialogId;
use foldhash::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::warn;

/// One target's subscription, as the view's task keeps it.
#[derive(Debug)]
pub(super) struct Sub {
    pub(super) homing: &'static str,
    pub(super) state: SubscriptionState,
    /// Which attempt (Call-ID) is current, unique in the view; events of other attempts
    /// are ignored.
    pub(super) generation: u32,
    /// Consecutive failed attempts (the backoff's exponent).
    pub(super) attempts: u8,
    /// The notifier's Min-Expires after a 423 (0: none): asked for from then on.
    pub(super) min_expires: u32,
    /// `unsubscribe`/`terminate` asked for it to end; it is removed once it has.
    pub(super) closing: bool,
    /// A request of the current attempt is in flight.
    pub(super) busy: bool,
    /// The notifier said `pending`.
    pub(super) pending: bool,
    /// A NOTIFY of the current attempt arrived.
    pub(super) notified: bool,
    pub(super) availability: Option<Availability>,
    pub(super) dialog: Option<DialogId>,
    /// Routes the current dialog's requests to the task.
    pub(super) route: Option<DialogGuard>,
    /// When the timer should fire for it (refresh, retry, end of a grace period).
    pub(super) deadline: Option<Instant>,
    /// When the notifier forgets the subscription unless refreshed.
    pub(super) expires_at: Option<Instant>,
    /// When the current attempt started (a subscription ended at once is not retried
    /// at once).
    pub(super) started: Option<Instant>,
}

impl Sub {
    pub(super) fn new(homing: &'static str, state: SubscriptionState) -> Sub {
        Sub {
            homing,
            state,
            generation: 0,
            attempts: 0,
            min_expires: 0,
            closing: false,
            busy: false,
            pending: false,
            notified: false,
            availability: None,
            dialog: None,
            route: None,
            deadline: None,
            expires_at: None,
            started: None,
        }
    }

    pub(super) fn visible_state(&self) -> SubscriptionState {
        if self.closing {
            SubscriptionState::Terminated
        } else {
            self.state
        }
    }
}

/// The targets the view knows, by URI.
pub(super) type Table = HashMap<Arc<str>, Sub>;

/// What the handle and the task share.
pub(super) struct Shared {
    pub(super) table: Mutex<Table>,
    pub(super) notifications: Mutex<Option<mpsc::Sender<PresenceNotification>>>,
    pub(super) dropped: AtomicU64,
}

impl Shared {
    pub(super) fn table(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock leaves a map that is still consistent.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn emit(&self, n: PresenceNotification) {
        let mut tx = self.notifications.lock().unwrap_or_else(|p| p.into_inner());
        let Some(sender) = tx.as_ref() else { return };
        match sender.try_send(n) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(n)) => {
                let before = self.dropped.fetch_add(1, Ordering::Relaxed);
                if before == 0 {
                    warn!(target = %n.target, "presence notification stream full; dropping");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => *tx = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cmp::Reverse;

    #[test]
    fn per_target_state_is_small() {
        // The view's own share of a subscription: the map entry, the target's URI,
        // and a timer entry. (The dialog route and the platform's dialog come on top.)
        let entry = std::mem::size_of::<(Arc<str>, Sub)>();
        let timer = std::mem::size_of::<Reverse<(Instant, Arc<str>)>>();
        eprintln!("map entry {entry} bytes, timer entry {timer} bytes");
        assert!(entry <= 160, "{entry} bytes per map entry");
        assert!(timer <= 48, "{timer} bytes per timer entry");
    }
}
