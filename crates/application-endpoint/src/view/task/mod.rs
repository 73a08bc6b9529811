//! The task that serves one view: its loop over the handle's commands, the events of its
//! subscriptions, the endpoint's state and its timers; the ending of subscriptions. What
//! it does with a NOTIFY is in `notify`, with SUBSCRIBEs and their answers in `subscribe`,
//! with deadlines in `timers`.

mod notify;
mod subscribe;
mod timers;

use super::table::{Shared, Sub, Table};
use super::wire::in_dialog_subscribe;
use super::{homing_of, Config, PresenceError, PresenceNotification, SubscriptionState};
use crate::core::EndpointCore;
use crate::EndpointError;
use collaboration_platform::{DialogId, IncomingRequest};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Asked of the task by the handle.
pub(super) enum Command {
    /// Start (or restart) these targets; they are in the table already.
    Subscribe(Vec<Arc<str>>),
    /// End one target's subscription; answered once it has ended.
    Unsubscribe(Arc<str>, oneshot::Sender<()>),
    /// End them all; answered once they have ended.
    Terminate(oneshot::Sender<()>),
}

/// Which request an answer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Initial,
    Refresh,
    Unsubscribe,
}

/// What the task hears from its helpers.
enum Event {
    /// A request in one of the dialogs (normally a NOTIFY), not yet answered.
    Request {
        target: Arc<str>,
        generation: u32,
        request: Box<IncomingRequest>,
    },
    /// A SUBSCRIBE's outcome: the granted lifetime and dialog, or why it failed.
    Answered {
        target: Arc<str>,
        generation: u32,
        sent: Sent,
        outcome: Result<(u32, Option<DialogId>), EndpointError>,
    },
}

/// The task that serves one view.
pub(super) struct ViewTask {
    core: Arc<EndpointCore>,
    config: Config,
    shared: Arc<Shared>,
    events_tx: mpsc::UnboundedSender<Event>,
    timers: BinaryHeap<Reverse<(Instant, Arc<str>)>>,
    /// Answered when their target (or, for `None`, every target) is gone.
    waiters: Vec<(Option<Arc<str>>, oneshot::Sender<()>)>,
    /// Dialogs to forget, after the table's lock is released.
    ends: Vec<DialogId>,
    /// Notifications to emit, after the table's lock is released.
    out: Vec<PresenceNotification>,
    rng: u64,
    /// The last attempt number given out.
    generation: u32,
    /// SUBSCRIBEs in flight at most (a view of 10,000 targets does not put 10,000
    /// transactions on the wire at once).
    window: Arc<tokio::sync::Semaphore>,
}

/// How many SUBSCRIBEs one view has outstanding at most.
const SUBSCRIBE_WINDOW: usize = 64;

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

impl ViewTask {
    /// Starts the task; returns its command sender (the task ends when it is dropped).
    pub(super) fn spawn(
        core: Arc<EndpointCore>,
        config: Config,
        shared: Arc<Shared>,
    ) -> mpsc::Sender<Command> {
        let (commands, commands_rx) = mpsc::channel(64);
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let seed = {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(crate::ids::tag())
        };
        let task = ViewTask {
            core,
            config,
            shared,
            events_tx,
            timers: BinaryHeap::new(),
            waiters: Vec::new(),
            ends: Vec::new(),
            out: Vec::new(),
            rng: seed | 1,
            generation: 0,
            window: Arc::new(tokio::sync::Semaphore::new(SUBSCRIBE_WINDOW)),
        };
        tokio::spawn(task.run(commands_rx, events_rx));
        commands
    }

    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) {
        let mut endpoint = self.core.watch_state();
        let mut endpoint_open = true;
        loop {
            let next = self.timers.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                biased;
                Some(event) = events.recv() => self.on_event(event).await,
                command = commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => {
                        self.abandon();
                        self.flush().await;
                        return;
                    }
                },
                () = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                    self.on_timers();
                }
                changed = endpoint.changed(), if endpoint_open => {
                    endpoint_open = changed.is_ok();
                    let state = endpoint.borrow_and_update().state;
                    if state == crate::EndpointState::Terminated {
                        self.on_endpoint_gone(state);
                    }
                }
            }
            self.flush().await;
        }
    }

    /// Forgets ended dialogs, emits notifications, answers waiters whose targets are gone.
    async fn flush(&mut self) {
        for d in std::mem::take(&mut self.ends) {
            self.core.platform().end_dialog(&d).await;
        }
        for n in self.out.drain(..) {
            self.shared.emit(n);
        }
        if self.timers.len() > 64 {
            // Deadlines replaced or abandoned stay in the heap until they come up; when
            // they are the majority, drop them (they keep their targets' names alive).
            let mut table = self.shared.table();
            if table.is_empty() {
                // Everything ended: give back what a large view had.
                table.shrink_to_fit();
            }
            if self.timers.len() > 2 * table.len() + 64 {
                self.timers.retain(|Reverse((at, t))| {
                    table.get(t).is_some_and(|s| s.deadline == Some(*at))
                });
            }
        }
        if !self.waiters.is_empty() {
            let table = self.shared.table();
            let mut i = 0;
            while i < self.waiters.len() {
                let done = match &self.waiters[i].0 {
                    Some(t) => !table.get(t).is_some_and(|s| s.closing),
                    None => !table.values().any(|s| s.closing),
                };
                if done {
                    let (_, w) = self.waiters.swap_remove(i);
                    let _ = w.send(());
                } else {
                    i += 1;
                }
            }
        }
    }

    /// Ends the current attempt: forgets its dialog and route; answers still in flight
    /// for it are ignored from now on (a dialog one of them brings is forgotten too).
    fn drop_dialog(&mut self, sub: &mut Sub) {
        if let Some(d) = sub.dialog.take() {
            self.ends.push(d);
        }
        sub.route = None;
        // Unique in the view, not only per target: a target forgotten and subscribed
        // again must not take an answer meant for its former self.
        self.generation = self.generation.wrapping_add(1);
        sub.generation = self.generation;
        sub.busy = false;
    }

    fn notify(&mut self, target: &str, sub: &Sub, error: Option<PresenceError>) {
        self.out.push(PresenceNotification {
            target: target.to_string(),
            homing: sub.homing,
            document: None,
            availability: None,
            state: sub.visible_state(),
            error,
        });
    }

    fn stop(&mut self, sub: &mut Sub) {
        self.drop_dialog(sub);
        sub.state = SubscriptionState::Terminated;
        sub.deadline = None;
    }

    /// Removes a closing target: its subscription has ended.
    fn finish(&mut self, table: &mut Table, target: &Arc<str>) {
        if let Some(mut sub) = table.remove(target) {
            self.drop_dialog(&mut sub);
            sub.closing = false;
            sub.state = SubscriptionState::Terminated;
            self.notify(target, &sub, None);
        }
    }

    /// Starts ending `target`'s subscription.
    fn begin_close(&mut self, table: &mut Table, target: &Arc<str>) {
        let Some(sub) = table.get_mut(target) else {
            return;
        };
        if sub.closing {
            return;
        }
        sub.closing = true;
        sub.deadline = None;
        if sub.busy {
            // The answer in flight continues the closing.
            return;
        }
        if !self.send_in_dialog(sub, target, Sent::Unsubscribe) {
            self.finish(table, target);
        }
    }

    fn on_command(&mut self, command: Command) {
        let shared = self.shared.clone();
        let mut table = shared.table();
        match command {
            Command::Subscribe(targets) => {
                for t in targets {
                    if !table.contains_key(&t) {
                        // Ended and forgotten meanwhile: classify it again.
                        match self.core.platform().topology().classify(&t) {
                            Ok(h) => {
                                table.insert(
                                    t.clone(),
                                    Sub::new(homing_of(&h), SubscriptionState::Idle),
                                );
                            }
                            Err(_) => continue,
                        }
                    }
                    let Some(sub) = table.get_mut(&t) else {
                        continue;
                    };
                    if sub.closing {
                        // Subscribed again while ending: the unsubscribe is superseded.
                        sub.closing = false;
                        for (w, tx) in std::mem::take(&mut self.waiters) {
                            if w.as_ref() == Some(&t) {
                                let _ = tx.send(());
                            } else {
                                self.waiters.push((w, tx));
                            }
                        }
                    } else if !matches!(
                        sub.state,
                        SubscriptionState::Idle | SubscriptionState::Terminated
                    ) {
                        continue;
                    }
                    let was = sub.state;
                    sub.attempts = 0;
                    let refused = self.restart(sub, &t).err();
                    if was != SubscriptionState::Idle || refused.is_some() {
                        let sub = &table[&t];
                        self.notify(&t, sub, refused);
                    }
                }
            }
            Command::Unsubscribe(t, waiter) => {
                self.waiters.push((Some(t.clone()), waiter));
                self.begin_close(&mut table, &t);
            }
            Command::Terminate(waiter) => {
                self.waiters.push((None, waiter));
                let all: Vec<Arc<str>> = table.keys().cloned().collect();
                for t in all {
                    self.begin_close(&mut table, &t);
                }
            }
        }
    }

    /// Sends `Expires: 0` in `dialog` and forgets it, without waiting for anything.
    fn end_without_waiting(&self, dialog: DialogId) {
        let core = self.core.clone();
        tokio::spawn(async move {
            let end = in_dialog_subscribe(&core, 0);
            let _ = core.platform().send_in_dialog(&dialog, end).await;
            core.platform().end_dialog(&dialog).await;
        });
    }

    /// The endpoint terminated: its routes are gone, so is every subscription.
    fn on_endpoint_gone(&mut self, state: crate::EndpointState) {
        let shared = self.shared.clone();
        let mut table = shared.table();
        let targets: Vec<Arc<str>> = table.keys().cloned().collect();
        for t in targets {
            let Some(sub) = table.get_mut(&t) else {
                continue;
            };
            if sub.closing {
                self.finish(&mut table, &t);
                continue;
            }
            if sub.state == SubscriptionState::Terminated {
                continue;
            }
            // The platform can still end it at the notifier.
            if let Some(d) = sub.dialog.take() {
                self.end_without_waiting(d);
            }
            self.stop(sub);
            let sub = &table[&t];
            self.notify(&t, sub, Some(EndpointError::NotEstablished(state).into()));
        }
    }

    /// The view was dropped: end what can be ended without waiting, forget the rest.
    fn abandon(&mut self) {
        let shared = self.shared.clone();
        let mut table = shared.table();
        for (_, mut sub) in table.drain() {
            sub.route = None;
            if let Some(d) = sub.dialog.take() {
                self.end_without_waiting(d);
            }
        }
        self.timers.clear();
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Request {
                target,
                generation,
                request,
            } => self.on_request(target, generation, request).await,
            Event::Answered {
                target,
                generation,
                sent,
                outcome,
            } => {
                let shared = self.shared.clone();
                let mut table = shared.table();
                self.on_answered(&mut table, &target, generation, sent, outcome);
            }
        }
    }
}
