//! Endpoint states, observable with the reason of each change.

use tokio::sync::{broadcast, watch};

/// State changes a [`StateCell::changes`] receiver may fall behind by before it loses the
/// oldest (it is then told how many it missed). An endpoint changes state a handful of
/// times in its life; a burst of reconnections makes a few more.
const CHANGES_KEPT: usize = 32;

/// Where an endpoint is in its life (UCMA's `LocalEndpointState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointState {
    /// Created, not yet established.
    Idle,
    /// `establish()` runs (routing set up, registering when asked).
    Establishing,
    /// Ready: receives and sends.
    Established,
    /// Lost its registration (front end restarted, connection dropped) and is registering
    /// again; current conversations continue.
    Reestablishing,
    /// Declines new conversations; current ones finish.
    Draining,
    /// `terminate()` runs (unregistering, removing presence).
    Terminating,
    /// Gone: nothing is routed to it any more.
    Terminated,
}

/// A state change and why it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// The new state.
    pub state: EndpointState,
    /// Why (human readable: "registered for 600 s", "connection to the front end lost" …).
    pub reason: String,
}

/// Holds the state and tells watchers: the latest state (`watch`), and every change in
/// order (`changes`), since a watcher that looks only at the latest misses a state held
/// briefly (Reestablishing between two registrations, Draining before Terminating).
#[derive(Debug)]
pub(crate) struct StateCell {
    tx: watch::Sender<StateChange>,
    changes: broadcast::Sender<StateChange>,
}

impl StateCell {
    pub(crate) fn new() -> Self {
        StateCell {
            tx: watch::Sender::new(StateChange {
                state: EndpointState::Idle,
                reason: "created".into(),
            }),
            changes: broadcast::Sender::new(CHANGES_KEPT),
        }
    }

    pub(crate) fn get(&self) -> EndpointState {
        self.tx.borrow().state
    }

    pub(crate) fn set(&self, state: EndpointState, reason: impl Into<String>) {
        let reason = reason.into();
        self.tx.send_modify(|c| self.replace(c, state, reason));
    }

    /// Moves to `state` only from one of `from`, atomically (a check then a `set` races
    /// with another task's change); `Err` holds the state found instead.
    pub(crate) fn transition(
        &self,
        from: &[EndpointState],
        state: EndpointState,
        reason: impl Into<String>,
    ) -> Result<(), EndpointState> {
        let mut found = Ok(());
        let reason = reason.into();
        self.tx.send_if_modified(|c| {
            if !from.contains(&c.state) {
                found = Err(c.state);
                return false;
            }
            self.replace(c, state, reason);
            true
        });
        found
    }

    /// Makes `current` (the watch's value, under its lock) the new state and publishes the
    /// change: under the lock, so that every receiver sees the changes in the order the
    /// state took them.
    fn replace(&self, current: &mut StateChange, state: EndpointState, reason: String) {
        tracing::debug!(?state, %reason, "endpoint state");
        *current = StateChange { state, reason };
        // No receiver is not an error: nobody asked for the changes.
        let _ = self.changes.send(current.clone());
    }

    pub(crate) fn watch(&self) -> watch::Receiver<StateChange> {
        self.tx.subscribe()
    }

    pub(crate) fn changes(&self) -> broadcast::Receiver<StateChange> {
        self.changes.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_keep_a_state_the_watch_has_already_replaced() {
        let cell = StateCell::new();
        let latest = cell.watch();
        let mut changes = cell.changes();
        cell.set(EndpointState::Established, "registered");
        cell.set(EndpointState::Reestablishing, "connection lost");
        assert_eq!(
            cell.transition(
                &[EndpointState::Reestablishing],
                EndpointState::Established,
                "registered again"
            ),
            Ok(())
        );
        // Refused: not in the changes.
        assert_eq!(
            cell.transition(&[EndpointState::Idle], EndpointState::Terminated, "no"),
            Err(EndpointState::Established)
        );
        assert_eq!(latest.borrow().state, EndpointState::Established);
        let mut seen = Vec::new();
        while let Ok(c) = changes.try_recv() {
            seen.push((c.state, c.reason));
        }
        assert_eq!(
            seen,
            [
                (EndpointState::Established, "registered".to_string()),
                (EndpointState::Reestablishing, "connection lost".to_string()),
                (EndpointState::Established, "registered again".to_string()),
            ]
        );
    }
}
