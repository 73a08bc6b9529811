//! [`RemotePresenceView`]: subscriptions to other people's presence (RFC 6665
//! SUBSCRIBE/NOTIFY with the RFC 3856 `presence` event package, PIDF bodies). The
//! behaviour and design are documented on the type.
//!
//! This module holds the handle, which classifies targets and hands them to the view's
//! task; the rest is one concern a module:
//! - `notification`: what the application reads ([`PresenceNotification`] and the state,
//!   reason and error it carries);
//! - `table`: the targets' subscriptions, which the handle reads and the task keeps;
//! - `task`: the task that keeps them (NOTIFYs, SUBSCRIBEs and their answers, deadlines);
//! - `wire`: the SUBSCRIBEs it sends, and what it reads of NOTIFYs and answers;
//! - `retry`: whether and when an ended or failed subscription is made again.
//!
//! The one-shot [`query`](RemotePresenceView::query) is served by the handle itself,
//! without the task.

mod notification;
mod retry;
mod table;
mod task;
#[cfg(test)]
mod test_messages;
mod wire;

pub use notification::{PresenceError, PresenceNotification, SubscriptionState, TerminationReason};
pub(crate) use wire::retry_after_of;

use crate::core::EndpointCore;
use crate::pidf::Availability;
use crate::{Endpoint, EndpointError};
use collaboration_platform::{
    Federated, Homed, Homing, OutgoingRequest, RequestError, TopologyError,
};
use foldhash::{HashMap, HashMapExt};
use sip_core::Method;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use table::{Shared, Sub};
use task::{Command, ViewTask};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;
use wire::{next_notify, notify_status, read_body, refusal_of, refuse, subscribe_request, Phase};

/// Default lifetime asked for a subscription (seconds): an hour, as RFC 3856 §6.4 suggests.
pub const DEFAULT_SUBSCRIPTION_EXPIRES: u32 = 3600;

/// Default shortest wait before a retry.
pub const DEFAULT_RETRY_MIN: Duration = Duration::from_secs(1);

/// Default longest wait before a retry (the backoff's cap).
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(60);

/// Default bound of the notification stream.
pub const DEFAULT_NOTIFICATION_CAPACITY: usize = 1024;

/// How long a one-shot query waits for its NOTIFY after the 2xx, and how long an ended
/// subscription waits for its final NOTIFY.
const NOTIFY_WAIT: Duration = Duration::from_secs(10);

/// The homing named in notifications for a target that could not be classified at all
/// (a malformed URI).
const UNCLASSIFIED: &str = "unclassified";

/// Settings of a view.
#[derive(Debug, Clone, Copy)]
struct Config {
    expires: u32,
    retry_min: Duration,
    retry_max: Duration,
    notification_capacity: usize,
    notify_wait: Duration,
}

/// The task's handle, once started.
struct Running {
    commands: mpsc::Sender<Command>,
}

/// Subscriptions to the presence of many presentities (UCMA's `RemotePresenceView`),
/// on behalf of one endpoint (an [`ApplicationEndpoint`](crate::ApplicationEndpoint) or
/// a [`UserEndpoint`](crate::UserEndpoint)).
///
/// ## What it does
///
/// * [`subscribe`](Self::subscribe) makes a persistent subscription to each
///   target, home or federated (the front end routes federated ones through its edge).
///   Each target is classified by the platform's
///   [`Topology`](collaboration_platform::Topology) at every attempt (a subscribe
///   again, a retry), so a user the topology has moved since is homed where it is now;
///   a target it refuses (a blocked domain, a malformed URI) gets a typed error and the
///   state `SubscriptionState::Terminated`: the other targets go on.
/// * Subscriptions are refreshed in their dialog before they expire, made again when the
///   notifier ends them (`deactivated`, `timeout`: at once; `probation`, `giveup` or no
///   reason: after `retry-after` or a backoff), and given up with a typed error when the
///   notifier or the request's answer says retrying is pointless (`rejected`,
///   `noresource`, `invariant`; 403, 404, 489 …). A 403 from the far side of federation
///   is such an error on that target alone.
/// * A SUBSCRIBE that forks keeps one subscription: the dialog of the first fork to answer
///   or notify. NOTIFYs of the other forks, and of attempts given up, are answered 481,
///   which ends them at their notifiers (RFC 6665 §4.1.3, §4.5.2).
/// * [`query`](Self::query) is a one-shot fetch (`Expires: 0`, RFC 6665
///   §4.1.2.3) of a home user's presence. Federated targets are persistent only: a
///   one-shot query for one is [`EndpointError::FederationRestricted`] and nothing is sent.
///
/// ## Notifications
///
/// The application reads one stream, [`notifications`](Self::notifications):
/// one `PresenceNotification` per NOTIFY received and one per change of a target's
/// state (except the first `Idle` → `Subscribing`). A stream rather than a `watch` per
/// target, because a `watch` per target costs memory per subscription whether anyone
/// looks or not, while a stream costs only what is queued. The stream is bounded
/// ([`notification_capacity`](Self::notification_capacity)); when the
/// application does not keep up, notifications are dropped (counted by
/// [`dropped_notifications`](Self::dropped_notifications)) rather than
/// stalling the answers to NOTIFYs, and [`state`](Self::state) and
/// [`availability`](Self::availability) still give the latest of each
/// target.
///
/// ## Design
///
/// One task serves the whole view: a `tokio::select!` over its command channel, the
/// events of its subscriptions (NOTIFYs, answers to the SUBSCRIBEs it sent), the
/// endpoint's state, and a timer (the earliest refresh or retry deadline, from a binary
/// heap). Requests are sent from short-lived tasks that report their outcome back as
/// events, so a slow answer never holds up the others. Each subscription's dialog is
/// routed with [`EndpointCore::route_dialog_to`] to a small handler that passes its
/// requests to the task: no task and no queue per subscription. The route is registered
/// before the SUBSCRIBE is sent (the NOTIFY can overtake the 2xx). The per-target state is
/// a small struct in one map; with 10,000 subscriptions against Kamailio, a subscription
/// costs about 0.6–0.7 KiB of heap in all (view, endpoint route and the platform's
/// dialog), measured with a counting allocator.
///
/// When the endpoint terminates, every subscription ends with
/// [`EndpointError::NotEstablished`].
///
/// Dropping the view ends its subscriptions on a best-effort basis (un-SUBSCRIBEs are
/// sent, nobody waits for them); [`terminate`](Self::terminate) ends them and waits.
pub struct RemotePresenceView {
    core: Arc<EndpointCore>,
    config: Config,
    shared: Arc<Shared>,
    running: Mutex<Option<Running>>,
}

impl std::fmt::Debug for RemotePresenceView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemotePresenceView")
            .field("subscriber", &self.core.owner().uri())
            .field("targets", &self.shared.table().len())
            .finish_non_exhaustive()
    }
}

impl RemotePresenceView {
    /// A view for `endpoint` (either kind), with the default settings; nothing is sent
    /// until [`subscribe`](Self::subscribe) or [`query`](Self::query).
    pub fn new(endpoint: &impl Endpoint) -> RemotePresenceView {
        RemotePresenceView {
            core: endpoint.core().clone(),
            config: Config {
                expires: DEFAULT_SUBSCRIPTION_EXPIRES,
                retry_min: DEFAULT_RETRY_MIN,
                retry_max: DEFAULT_RETRY_MAX,
                notification_capacity: DEFAULT_NOTIFICATION_CAPACITY,
                notify_wait: NOTIFY_WAIT,
            },
            shared: Arc::new(Shared {
                table: Mutex::new(HashMap::new()),
                notifications: Mutex::new(None),
                dropped: AtomicU64::new(0),
            }),
            running: Mutex::new(None),
        }
    }

    /// The subscription lifetime asked for, in seconds (default
    /// `DEFAULT_SUBSCRIPTION_EXPIRES`, 3600; at least 1). The notifier may grant less; the
    /// view refreshes before what was granted runs out. A notifier that finds it too brief
    /// (423 with `Min-Expires`) is asked again at once with its minimum, kept for that
    /// target's refreshes.
    pub fn expires(mut self, secs: u32) -> Self {
        self.config.expires = secs.max(1);
        self
    }

    /// The shortest and longest wait between attempts (defaults 1 s and 60 s): the wait
    /// doubles from `min` with each failure up to `max`, with jitter so that many
    /// subscriptions do not retry in step. A longer `Retry-After` (header or parameter) wins;
    /// a shorter one does not cut the backoff.
    pub fn retry(mut self, min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        self.config.retry_min = min;
        self.config.retry_max = max.max(min);
        self
    }

    /// The bound of the notification streams made afterwards (default
    /// `DEFAULT_NOTIFICATION_CAPACITY`, 1024).
    pub fn notification_capacity(mut self, capacity: usize) -> Self {
        self.config.notification_capacity = capacity.max(1);
        self
    }

    /// How long a one-shot [`query`](Self::query) waits for its NOTIFY once the SUBSCRIBE
    /// was accepted, a new subscription for its first NOTIFY (RFC 6665 Timer N: without
    /// one it failed, and is made again after the backoff), and an ended subscription for
    /// its final NOTIFY (default 10 s).
    pub fn notify_wait(mut self, wait: Duration) -> Self {
        self.config.notify_wait = wait;
        self
    }

    /// The stream of `PresenceNotification`s. Replaces the stream of an earlier call;
    /// call it before [`subscribe`](Self::subscribe) so that nothing is missed
    /// (notifications without a stream are not kept).
    pub fn notifications(&self) -> mpsc::Receiver<PresenceNotification> {
        let (tx, rx) = mpsc::channel(self.config.notification_capacity);
        *self
            .shared
            .notifications
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(tx);
        rx
    }

    /// How many notifications were dropped because the stream was full.
    pub fn dropped_notifications(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// The state of `target`'s subscription; `None` if the view does not know it (never
    /// subscribed, or unsubscribed and forgotten).
    pub fn state(&self, target: &str) -> Option<SubscriptionState> {
        self.shared.table().get(target).map(Sub::visible_state)
    }

    /// The last availability a NOTIFY gave for `target`, if any: `None` again after a
    /// NOTIFY without presence information (nothing published any more).
    pub fn availability(&self, target: &str) -> Option<Availability> {
        self.shared.table().get(target)?.availability
    }

    /// Every target the view knows, with its state.
    pub fn targets(&self) -> Vec<(String, SubscriptionState)> {
        self.shared
            .table()
            .iter()
            .map(|(t, s)| (t.to_string(), s.visible_state()))
            .collect()
    }

    /// Subscribes persistently to the presence of each target (`sip:` URIs), home or
    /// federated. Returns once the subscriptions are under way; their progress and the
    /// presence they report arrive as [`notifications`](Self::notifications). A target
    /// the view already subscribes to is left as it is; one that ended is subscribed
    /// again. A target the topology refuses is `Terminated` with its error at once (a
    /// notification says so); the others are not affected.
    ///
    /// # Errors
    ///
    /// [`EndpointError::NotEstablished`] when the endpoint is not established (nothing
    /// is sent).
    ///
    /// Cancel safety: cancel safe while it waits for room in the view's command queue
    /// (the targets stay `Idle` until the next call).
    pub async fn subscribe(
        &self,
        targets: impl IntoIterator<Item = String>,
    ) -> Result<(), EndpointError> {
        self.core.established_id()?;
        let topology = self.core.platform().topology();
        let mut start = Vec::new();
        let mut refused = Vec::new();
        {
            let mut table = self.shared.table();
            for t in targets {
                let t = t.trim();
                match topology.classify(t) {
                    Ok(homed) => {
                        let homing = homing_of(&homed);
                        if let Some((key, s)) = table.get_key_value(t) {
                            let key = key.clone();
                            if s.closing || s.state == SubscriptionState::Terminated {
                                // The task ends what is left of the old one and starts
                                // again (its attempt counter goes on, so no answer to
                                // an old attempt is taken for the new one's). Homed as
                                // the topology says now: the user may have moved since.
                                if let Some(s) = table.get_mut(&key) {
                                    s.homing = homing;
                                }
                                start.push(key);
                            }
                            continue;
                        }
                        let key: Arc<str> = Arc::from(t);
                        table.insert(key.clone(), Sub::new(homing, SubscriptionState::Idle));
                        start.push(key);
                    }
                    Err(e) => {
                        let homing = refused_homing(&e);
                        if table.get(t).is_some_and(|s| s.closing) {
                            // Let the task finish it; it stays refused afterwards.
                            continue;
                        }
                        table.insert(
                            Arc::from(t),
                            Sub::new(homing, SubscriptionState::Terminated),
                        );
                        refused.push(PresenceNotification {
                            target: t.to_string(),
                            homing,
                            document: None,
                            availability: None,
                            state: SubscriptionState::Terminated,
                            error: Some(PresenceError::Endpoint(EndpointError::Topology(e))),
                        });
                    }
                }
            }
        }
        for n in refused {
            debug!(target = %n.target, "presence target refused by the topology");
            self.shared.emit(n);
        }
        if !start.is_empty() {
            self.command(Command::Subscribe(start)).await;
        }
        Ok(())
    }

    /// Ends the subscription to `target` (a SUBSCRIBE with `Expires: 0` in its dialog)
    /// and forgets it. Returns once the notifier answered and sent its final NOTIFY, or
    /// gave up waiting for them (bounded by the transaction timer and
    /// [`notify_wait`](Self::notify_wait)). Nothing happens for an unknown target.
    ///
    /// Cancel safety: cancel safe; once the request is queued the subscription ends
    /// whether or not the caller waits.
    pub async fn unsubscribe(&self, target: &str) {
        let target = target.trim();
        if !self.shared.table().contains_key(target) {
            return;
        }
        let (tx, rx) = oneshot::channel();
        if self
            .command(Command::Unsubscribe(Arc::from(target), tx))
            .await
        {
            let _ = rx.await;
        }
    }

    /// Ends every subscription as [`unsubscribe`](Self::unsubscribe) does and forgets
    /// every target. The view can subscribe again afterwards.
    ///
    /// Cancel safety: as [`unsubscribe`](Self::unsubscribe).
    pub async fn terminate(&self) {
        let (tx, rx) = oneshot::channel();
        let running = self.sender();
        match running {
            Some(commands) => {
                if commands.send(Command::Terminate(tx)).await.is_ok() {
                    let _ = rx.await;
                }
            }
            None => self.shared.table().clear(),
        }
    }

    /// Fetches `target`'s presence once: a SUBSCRIBE with `Expires: 0` (RFC 6665
    /// §4.1.2.3), whose NOTIFY (`Subscription-State: terminated`) carries the current
    /// state. The result's `state` is `Terminated`; its `document` is `None` when the
    /// notifier has no presence information, and its `error` says when the body could
    /// not be read. A notifier whose NOTIFY says the subscription is still alive is sent
    /// `Expires: 0` in that NOTIFY's dialog, which may be another fork's than the 2xx's;
    /// later NOTIFYs of other forks are answered 481: no subscription outlives the query.
    ///
    /// # Errors
    ///
    /// [`EndpointError::FederationRestricted`] for a federated target (persistent
    /// subscriptions only; nothing is sent); [`EndpointError::Topology`] for a refused
    /// URI; [`EndpointError::NotEstablished`]; [`EndpointError::Request`] when the
    /// SUBSCRIBE fails, or with [`RequestError::Timeout`] when no NOTIFY follows it
    /// within [`notify_wait`](Self::notify_wait).
    ///
    /// Cancel safety: not cancel safe (the SUBSCRIBE may be sent and its answer lost;
    /// the dialog is then answered 481 when its NOTIFY arrives).
    pub async fn query(&self, target: &str) -> Result<PresenceNotification, EndpointError> {
        let target = target.trim();
        let homed = self.core.platform().topology().classify(target)?;
        if let Homed::Federated(a) = &homed {
            return Err(EndpointError::FederationRestricted {
                operation: "one-shot presence query",
                uri: a.uri().to_string(),
            });
        }
        let id = self.core.established_id()?;
        let call_id = crate::ids::call_id();
        let tag = crate::ids::tag();
        let mut route = self.core.route_dialog(&call_id, &tag);
        let request = subscribe_request(&self.core, target, call_id, &tag, 0);
        let platform = self.core.platform();
        let (_, dialog) = self.core.subscribe(id, request).await?;
        let wait = self.config.notify_wait;
        let notify = tokio::time::timeout(wait, next_notify(&mut route)).await;
        let Ok(Some(mut notify)) = notify else {
            platform.end_dialog(&dialog).await;
            return Err(EndpointError::Request(RequestError::Timeout));
        };
        let _ = notify.respond(200, "OK", &[], None).await;
        let status = notify_status(notify.request());
        // The dialog the NOTIFY came in: the 2xx's, or another fork's (RFC 6665 §4.1.2.4).
        // Each fork is a subscription of its own.
        let notified = notify.dialog().unwrap_or_else(|| dialog.clone());
        if status.phase != Phase::Terminated {
            // The notifier kept it alive regardless: end it in its own dialog (RFC 6665
            // §4.1.2.3), not in the 2xx's, or a fork's notifier would keep it until its
            // next NOTIFY met a 481.
            let end = OutgoingRequest::new(Method::Subscribe, "")
                .header("Event", "presence")
                .header("Expires", "0")
                .header("Contact", format!("<{}>", self.core.contact()));
            let _ = platform.send_in_dialog(&notified, end).await;
        }
        // NOTIFYs queued meanwhile: those of the dialog already read (its final NOTIFY)
        // are answered 200, and so is a final one of the 2xx's dialog; any other, of the
        // 2xx's dialog alive or of another fork, 481, which ends it at its notifier
        // (RFC 6665 §4.1.3, §4.5.2). The platform forgets the forks' dialogs (left queued,
        // their NOTIFYs would be answered 500 and kept).
        while let Ok(Some(mut other)) = tokio::time::timeout(Duration::ZERO, route.recv()).await {
            let d = other.dialog();
            if let Some(refusal) = refusal_of(other.request()) {
                refuse(&mut other, refusal).await;
            } else {
                let ended = notify_status(other.request()).phase == Phase::Terminated;
                let own = d
                    .as_ref()
                    .is_none_or(|d| *d == notified || (*d == dialog && ended));
                let status = if own { 200 } else { 481 };
                let reason = sip_core::reason_phrase(status);
                let _ = other.respond(status, reason, &[], None).await;
            }
            if let Some(d) = d.filter(|d| *d != dialog && *d != notified) {
                platform.end_dialog(&d).await;
            }
        }
        if notified != dialog {
            platform.end_dialog(&notified).await;
        }
        // From here on the endpoint's router answers 481 itself.
        drop(route);
        platform.end_dialog(&dialog).await;
        let (document, error) = read_body(notify.request());
        Ok(PresenceNotification {
            target: target.to_string(),
            homing: homing_of(&homed),
            availability: document.as_ref().map(Availability::from_document),
            document,
            state: SubscriptionState::Terminated,
            error,
        })
    }

    /// The task's command sender, starting the task if needed.
    fn sender(&self) -> Option<mpsc::Sender<Command>> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running.as_ref().map(|r| r.commands.clone())
    }

    /// Sends a command to the task (started on first use); false if the task is gone.
    async fn command(&self, command: Command) -> bool {
        let commands = {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            match running.as_ref() {
                Some(r) if !r.commands.is_closed() => r.commands.clone(),
                _ => {
                    let tx = ViewTask::spawn(self.core.clone(), self.config, self.shared.clone());
                    *running = Some(Running {
                        commands: tx.clone(),
                    });
                    tx
                }
            }
        };
        commands.send(command).await.is_ok()
    }
}

/// The homing named in notifications for a target the topology refuses.
fn refused_homing(error: &TopologyError) -> &'static str {
    match error {
        TopologyError::Blocked(_) | TopologyError::NotAllowed(_) => Federated::NAME,
        _ => UNCLASSIFIED,
    }
}

fn homing_of(homed: &Homed) -> &'static str {
    match homed {
        Homed::OnPremises(a) => a.homing(),
        Homed::Federated(a) => a.homing(),
    }
}
