//! Endpoint states, observable with the reason of each change.

use tokio::sync::watch;

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

/// Holds the state and tells watchers.
#[derive(Debug)]
pub(crate) struct StateCell {
    tx: watch::Sender<StateChange>,
}

impl StateCell {
    pub(crate) fn new() -> Self {
        StateCell {
            tx: watch::Sender::new(StateChange {
                state: EndpointState::Idle,
                reason: "created".into(),
            }),
        }
    }

    pub(crate) fn get(&self) -> EndpointState {
        self.tx.borrow().state
    }

    pub(crate) fn set(&self, state: EndpointState, reason: impl Into<String>) {
        let reason = reason.into();
        tracing::debug!(?state, %reason, "endpoint state");
        self.tx.send_replace(StateChange { state, reason });
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
            tracing::debug!(?state, %reason, "endpoint state");
            *c = StateChange { state, reason };
            true
        });
        found
    }

    pub(crate) fn watch(&self) -> watch::Receiver<StateChange> {
        self.tx.subscribe()
    }
}
