//! [`RemotePresenceView`]: subscriptions to other people's presence (RFC 6665
//! SUBSCRIBE/NOTIFY with the RFC 3856 `presence` event package, PIDF bodies). The
//! behaviour and design are documented on the type.

use crate::core::{DialogGuard, DialogHandler, DialogRoute, EndpointCore};
use crate::pidf::{self, Availability, PidfError, PresenceDocument};
use crate::registration::{refresh_after, spread_refresh_after};
use crate::{Endpoint, EndpointError};
use collaboration_platform::{
    DialogId, Federated, Homed, Homing, IncomingRequest, OutgoingRequest, RequestError,
    TopologyError,
};
use foldhash::{HashMap, HashMapExt};
use sip_core::{HeaderName, Method, SipMessage, TokenParams};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, warn};

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

/// Where one target's subscription is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionState {
    /// Accepted by [`subscribe`](RemotePresenceView::subscribe), nothing sent yet.
    Idle,
    /// A SUBSCRIBE is on its way, or the notifier accepted it but holds it `pending`
    /// (waiting for the presentity's authorisation).
    Subscribing,
    /// Active: NOTIFYs arrive and the subscription is refreshed before it expires.
    Subscribed,
    /// The last attempt failed (or the notifier ended the subscription) in a way worth
    /// retrying; a new attempt is scheduled.
    WaitingForRetry,
    /// Ended for good: unsubscribed, refused by the topology, or given up with an error
    /// (see the target's last [`PresenceNotification::error`]).
    Terminated,
}

impl SubscriptionState {
    /// The state's name (`"Subscribed"` …), for logs and for code that cannot name the
    /// type.
    pub fn name(self) -> &'static str {
        match self {
            SubscriptionState::Idle => "Idle",
            SubscriptionState::Subscribing => "Subscribing",
            SubscriptionState::Subscribed => "Subscribed",
            SubscriptionState::WaitingForRetry => "WaitingForRetry",
            SubscriptionState::Terminated => "Terminated",
        }
    }

    /// Whether the subscription is active.
    pub fn is_subscribed(self) -> bool {
        self == SubscriptionState::Subscribed
    }

    /// Whether the subscription ended for good.
    pub fn is_terminated(self) -> bool {
        self == SubscriptionState::Terminated
    }
}

/// Why a notifier ended a subscription: the `reason` of `Subscription-State: terminated`
/// (RFC 6665 §4.1.3). It decides whether and when the view subscribes again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TerminationReason {
    /// The notifier moved the subscription: subscribe again at once.
    Deactivated,
    /// The notifier lost it for a while: subscribe again after `retry-after`.
    Probation,
    /// Not authorised: not retried.
    Rejected,
    /// It expired: subscribe again at once.
    Timeout,
    /// The notifier could not get authorisation in time: retry after `retry-after`.
    Giveup,
    /// The presentity does not exist (any more): not retried.
    NoResource,
    /// The presentity cannot be subscribed to: not retried.
    Invariant,
    /// A reason RFC 6665 does not define: treated as no reason.
    Other(String),
}

impl TerminationReason {
    /// Reads a reason token (ASCII case is ignored).
    pub fn from_token(token: &str) -> TerminationReason {
        match token.to_ascii_lowercase().as_str() {
            "deactivated" => TerminationReason::Deactivated,
            "probation" => TerminationReason::Probation,
            "rejected" => TerminationReason::Rejected,
            "timeout" => TerminationReason::Timeout,
            "giveup" => TerminationReason::Giveup,
            "noresource" => TerminationReason::NoResource,
            "invariant" => TerminationReason::Invariant,
            _ => TerminationReason::Other(token.to_string()),
        }
    }

    /// The reason's token.
    pub fn as_str(&self) -> &str {
        match self {
            TerminationReason::Deactivated => "deactivated",
            TerminationReason::Probation => "probation",
            TerminationReason::Rejected => "rejected",
            TerminationReason::Timeout => "timeout",
            TerminationReason::Giveup => "giveup",
            TerminationReason::NoResource => "noresource",
            TerminationReason::Invariant => "invariant",
            TerminationReason::Other(s) => s,
        }
    }
}

/// What went wrong for one target. Errors are per target: one target's failure never
/// fails the view.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PresenceError {
    /// The target was refused before anything was sent (blocked or not allowed by the
    /// topology, malformed URI), or a SUBSCRIBE failed (a final status, timeout,
    /// transport). A 403 for a federated target is the far side refusing federation.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The notifier ended the subscription (`Subscription-State: terminated`).
    #[error("the notifier ended the subscription (reason: {})", reason.as_ref().map_or("none", |r| r.as_str()))]
    Ended {
        /// The `reason` parameter, if any.
        reason: Option<TerminationReason>,
        /// The `retry-after` parameter (seconds), if any.
        retry_after: Option<u32>,
    },
    /// The NOTIFY's PIDF body could not be read (it was answered 200 all the same; the
    /// subscription goes on).
    #[error("unreadable presence document: {0}")]
    Document(#[from] PidfError),
    /// The NOTIFY's body is not `application/pidf+xml`.
    #[error("the NOTIFY body is {content_type}, not application/pidf+xml")]
    UnsupportedBody {
        /// The Content-Type received.
        content_type: String,
    },
}

impl PresenceError {
    /// The endpoint error inside, if that is what it is.
    pub fn endpoint_error(&self) -> Option<&EndpointError> {
        match self {
            PresenceError::Endpoint(e) => Some(e),
            _ => None,
        }
    }

    /// The SIP status of a failed request (the received one for a final response), if
    /// the error is a request's failure.
    pub fn status(&self) -> Option<u16> {
        match self {
            PresenceError::Endpoint(EndpointError::Request(e)) => Some(e.status()),
            _ => None,
        }
    }
}

/// A change in one target's presence or subscription.
#[derive(Debug, Clone)]
pub struct PresenceNotification {
    /// The presentity, as given to [`subscribe`](RemotePresenceView::subscribe).
    pub target: String,
    /// Where the topology homes it: `"on-premises"`, `"federated"` (blocked and not
    /// allowed domains included), or `"unclassified"` for a URI it could not read.
    pub homing: &'static str,
    /// The presence document of the NOTIFY, if it carried a readable one. `None` for a
    /// state change, and for a NOTIFY without body (the notifier has no presence
    /// information: nothing published).
    pub document: Option<PresenceDocument>,
    /// The document's availability (see [`Availability::from_document`]).
    pub availability: Option<Availability>,
    /// The target's subscription state after this notification.
    pub state: SubscriptionState,
    /// What went wrong, if anything (with `Terminated` or `WaitingForRetry`: why).
    pub error: Option<PresenceError>,
}

impl PresenceNotification {
    /// Whether the far side of federation refused the subscription: a federated target
    /// answered 403, or the topology refuses the domain.
    pub fn is_federation_refusal(&self) -> bool {
        match &self.error {
            Some(PresenceError::Endpoint(EndpointError::Topology(
                TopologyError::Blocked(_) | TopologyError::NotAllowed(_),
            ))) => true,
            Some(e) => self.homing == Federated::NAME && e.status() == Some(403),
            None => false,
        }
    }
}

/// Settings of a view.
#[derive(Debug, Clone, Copy)]
struct Config {
    expires: u32,
    retry_min: Duration,
    retry_max: Duration,
    notification_capacity: usize,
    notify_wait: Duration,
}

/// One target's subscription, as the view's task keeps it.
#[derive(Debug)]
struct Sub {
    homing: &'static str,
    state: SubscriptionState,
    /// Which attempt (Call-ID) is current, unique in the view; events of other attempts
    /// are ignored.
    generation: u32,
    /// Consecutive failed attempts (the backoff's exponent).
    attempts: u8,
    /// The notifier's Min-Expires after a 423 (0: none): asked for from then on.
    min_expires: u32,
    /// `unsubscribe`/`terminate` asked for it to end; it is removed once it has.
    closing: bool,
    /// A request of the current attempt is in flight.
    busy: bool,
    /// The notifier said `pending`.
    pending: bool,
    /// A NOTIFY of the current attempt arrived.
    notified: bool,
    availability: Option<Availability>,
    dialog: Option<DialogId>,
    /// Routes the current dialog's requests to the task.
    route: Option<DialogGuard>,
    /// When the timer should fire for it (refresh, retry, end of a grace period).
    deadline: Option<Instant>,
    /// When the notifier forgets the subscription unless refreshed.
    expires_at: Option<Instant>,
    /// When the current attempt started (a subscription ended at once is not retried
    /// at once).
    started: Option<Instant>,
}

impl Sub {
    fn new(homing: &'static str, state: SubscriptionState) -> Sub {
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

    fn visible_state(&self) -> SubscriptionState {
        if self.closing {
            SubscriptionState::Terminated
        } else {
            self.state
        }
    }
}

type Table = HashMap<Arc<str>, Sub>;

/// What the handle and the task share.
struct Shared {
    table: Mutex<Table>,
    notifications: Mutex<Option<mpsc::Sender<PresenceNotification>>>,
    dropped: AtomicU64,
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock leaves a map that is still consistent.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, n: PresenceNotification) {
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

/// Asked of the task by the handle.
enum Command {
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
///   [`Topology`](collaboration_platform::Topology); a target it refuses (a blocked
///   domain, a malformed URI) gets a typed error and the state
///   `SubscriptionState::Terminated`: the other targets go on.
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
    /// subscriptions do not retry in step. A `Retry-After` (header or parameter) wins.
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
                            if s.closing || s.state == SubscriptionState::Terminated {
                                // The task ends what is left of the old one and starts
                                // again (its attempt counter goes on, so no answer to
                                // an old attempt is taken for the new one's).
                                start.push(key.clone());
                            }
                            continue;
                        }
                        let key: Arc<str> = Arc::from(t);
                        table.insert(key.clone(), Sub::new(homing, SubscriptionState::Idle));
                        start.push(key);
                    }
                    Err(e) => {
                        let homing = match e {
                            TopologyError::Blocked(_) | TopologyError::NotAllowed(_) => {
                                Federated::NAME
                            }
                            _ => UNCLASSIFIED,
                        };
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
    /// not be read.
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
        let (_, dialog) = platform.subscribe(id, request).await?;
        let wait = self.config.notify_wait;
        let notify = tokio::time::timeout(wait, next_notify(&mut route)).await;
        let Ok(Some(mut notify)) = notify else {
            platform.end_dialog(&dialog).await;
            return Err(EndpointError::Request(RequestError::Timeout));
        };
        let _ = notify.respond(200, "OK", &[], None).await;
        let status = notify_status(notify.request());
        if let Some(d) = notify.dialog() {
            if d != dialog {
                platform.end_dialog(&d).await;
            }
        }
        if status.phase != Phase::Terminated {
            // The notifier kept it alive regardless: end it.
            let end = OutgoingRequest::new(Method::Subscribe, "")
                .header("Event", "presence")
                .header("Expires", "0")
                .header("Contact", format!("<{}>", self.core.contact()));
            let _ = platform.send_in_dialog(&dialog, end).await;
        }
        // NOTIFYs queued meanwhile: the final one of the fetch's own dialogs is answered
        // 200; those of other forks of the SUBSCRIBE 481, which ends them at their
        // notifiers (RFC 6665 §4.5.2), and the platform forgets the dialogs they made (left
        // queued, they would be answered 500 and kept).
        let first = notify.dialog();
        while let Ok(Some(mut other)) = tokio::time::timeout(Duration::ZERO, route.recv()).await {
            let d = other.dialog();
            let own = d
                .as_ref()
                .is_none_or(|d| *d == dialog || Some(d) == first.as_ref());
            if let Some(refusal) = refusal_of(other.request()) {
                refuse(&mut other, refusal).await;
            } else {
                let status = if own { 200 } else { 481 };
                let reason = sip_core::reason_phrase(status);
                let _ = other.respond(status, reason, &[], None).await;
            }
            if let (false, Some(d)) = (own, d) {
                platform.end_dialog(&d).await;
            }
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

fn homing_of(homed: &Homed) -> &'static str {
    match homed {
        Homed::OnPremises(a) => a.homing(),
        Homed::Federated(a) => a.homing(),
    }
}

/// The SUBSCRIBE that starts a subscription (or, with `expires` 0, fetches once).
fn subscribe_request(
    core: &EndpointCore,
    target: &str,
    call_id: String,
    from_tag: &str,
    expires: u32,
) -> OutgoingRequest {
    let owner = core.owner().uri();
    OutgoingRequest::new(Method::Subscribe, target)
        .from(format!("<{owner}>;tag={from_tag}"))
        .call_id(call_id)
        .to(format!("<{target}>"))
        .header("Event", "presence")
        .header("Accept", pidf::CONTENT_TYPE)
        .header("Expires", expires.to_string())
        .header("Contact", format!("<{}>", core.contact()))
}

/// The SUBSCRIBE that refreshes (or, with `expires` 0, ends) a subscription in its
/// dialog.
fn in_dialog_subscribe(core: &EndpointCore, expires: u32) -> OutgoingRequest {
    OutgoingRequest::new(Method::Subscribe, "")
        .header("Event", "presence")
        .header("Accept", pidf::CONTENT_TYPE)
        .header("Expires", expires.to_string())
        .header("Contact", format!("<{}>", core.contact()))
}

/// The next NOTIFY of the presence package in `route`; other requests are refused.
async fn next_notify(route: &mut DialogRoute) -> Option<IncomingRequest> {
    loop {
        let mut r = route.recv().await?;
        match refusal_of(r.request()) {
            None => return Some(r),
            Some(refusal) => refuse(&mut r, refusal).await,
        }
    }
}

/// How a request in a subscription's dialog is refused: status, reason phrase, headers.
type Refusal = (u16, &'static str, &'static [(&'static str, &'static str)]);

/// Sends `refusal`. A 481 here is for a usage the dialog does not have (the NOTIFY's Event
/// is not the subscription's): the dialog, and the subscription in it, stay.
async fn refuse(request: &mut IncomingRequest, refusal: Refusal) {
    let (status, reason, headers) = refusal;
    let _ = if status == 481 {
        request.respond_no_such_usage().await
    } else {
        request.respond(status, reason, headers, None).await
    };
}

/// The event package of every subscription the view makes. Its SUBSCRIBEs carry no `id`
/// parameter, so neither may the NOTIFYs of their subscriptions.
const PACKAGE: &str = "presence";

/// How to refuse a request that arrived in a subscription's dialog, if it must be: the
/// status, its reason phrase and extra headers.
///
/// * 405 for anything but NOTIFY;
/// * 400 for a NOTIFY without a readable Event header (mandatory, RFC 6665 §8.1.2; 489 is
///   for a package not understood, and this one names none);
/// * 400 for one without a readable Subscription-State;
/// * 481 for one whose Event does not match the subscription's: the package compared byte
///   by byte, and an `id` present on one side only never matches (RFC 6665 §8.2.1). Such a
///   NOTIFY is for no subscription of the dialog (§4.1.3); the 481 ends that one alone at
///   its notifier, and the subscription kept is left as it is.
fn refusal_of(request: &SipMessage) -> Option<Refusal> {
    if request.method() != Some(&Method::Notify) {
        return Some((405, sip_core::reason_phrase(405), &[("Allow", "NOTIFY")]));
    }
    let event = match request.token_params(HeaderName::Event) {
        Some(Ok(e)) => e,
        None => return Some((400, "Missing Event header", &[])),
        Some(Err(_)) => return Some((400, "Malformed Event header", &[])),
    };
    if event.token() != PACKAGE || event.params().contains("id") {
        return Some((481, sip_core::reason_phrase(481), &[]));
    }
    // Mandatory in every NOTIFY (RFC 6665 §4.1.3, §8.2.3): without it the notifier has not
    // said whether the subscription is active, pending or over, and guessing `active`
    // could keep a terminated one refreshed for ever.
    match request.header(HeaderName::SubscriptionState) {
        None => Some((400, "Missing Subscription-State header", &[])),
        Some(v) if parse_subscription_state(v).is_err() => {
            Some((400, "Malformed Subscription-State header", &[]))
        }
        Some(_) => None,
    }
}

/// The phase of a `Subscription-State` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Active,
    Pending,
    Terminated,
}

/// A parsed `Subscription-State` header (RFC 6665 §8.2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
struct NotifierState {
    phase: Phase,
    expires: Option<u32>,
    reason: Option<TerminationReason>,
    retry_after: Option<u32>,
}

/// Parses a `Subscription-State` value. A phase this code does not know (an extension) is
/// read as `active`: the subscription is kept, and refreshed as usual.
fn parse_subscription_state(value: &[u8]) -> Result<NotifierState, sip_core::ParseError> {
    let tp = TokenParams::parse(value, "Subscription-State")?;
    let phase = if tp.token().eq_ignore_ascii_case("terminated") {
        Phase::Terminated
    } else if tp.token().eq_ignore_ascii_case("pending") {
        Phase::Pending
    } else {
        Phase::Active
    };
    let reason = tp
        .params()
        .get_unquoted("reason")
        .map(|r| TerminationReason::from_token(&String::from_utf8_lossy(&r)));
    Ok(NotifierState {
        phase,
        expires: tp.seconds("expires"),
        reason,
        retry_after: tp.seconds("retry-after"),
    })
}

/// The NOTIFY's subscription state. [`refusal_of`] has refused a NOTIFY without a
/// readable one; should one come here all the same it reads as `active`.
fn notify_status(request: &SipMessage) -> NotifierState {
    request
        .header(HeaderName::SubscriptionState)
        .and_then(|v| parse_subscription_state(v).ok())
        .unwrap_or(NotifierState {
            phase: Phase::Active,
            expires: None,
            reason: None,
            retry_after: None,
        })
}

/// The NOTIFY's document, or why it has none that can be read.
fn read_body(request: &SipMessage) -> (Option<PresenceDocument>, Option<PresenceError>) {
    let body = request.body();
    if body.iter().all(u8::is_ascii_whitespace) {
        return (None, None);
    }
    let is_pidf = match request.content_type() {
        Some(Ok(ct)) => ct.is("application", "pidf+xml"),
        // No Content-Type: the package's default is PIDF (RFC 3856 §6.6).
        None => true,
        Some(Err(_)) => false,
    };
    if !is_pidf {
        let ct = request.header(HeaderName::ContentType).unwrap_or_default();
        return (
            None,
            Some(PresenceError::UnsupportedBody {
                content_type: String::from_utf8_lossy(ct).into_owned(),
            }),
        );
    }
    match PresenceDocument::parse(body) {
        Ok(doc) => (Some(doc), None),
        Err(e) => (None, Some(PresenceError::Document(e))),
    }
}

/// `Retry-After` of a response, in seconds (the leading delta-seconds; comment and
/// parameters ignored; more than fits is the most that fits).
pub(crate) fn retry_after_of(response: &SipMessage) -> Option<u32> {
    let v = response.header(HeaderName::RetryAfter)?;
    let v = String::from_utf8_lossy(v);
    let digits: &str = {
        let t = v.trim_start();
        let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        &t[..end]
    };
    if digits.is_empty() {
        return None;
    }
    Some(digits.parse::<u32>().unwrap_or(u32::MAX))
}

/// What to do after an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Subscribe again at once (a new dialog).
    Now,
    /// Wait (this long, or the backoff when `None`), then try again.
    Later(Option<Duration>),
    /// Give up: the target is `Terminated` with the error.
    Stop,
}

/// The retry decision for a notifier's `terminated` (RFC 6665 §4.1.3).
fn after_termination(reason: Option<&TerminationReason>, retry_after: Option<u32>) -> Next {
    let wait = retry_after.map(|s| Duration::from_secs(u64::from(s)));
    match reason {
        Some(TerminationReason::Deactivated | TerminationReason::Timeout) => Next::Now,
        Some(TerminationReason::Probation | TerminationReason::Giveup) => Next::Later(wait),
        Some(
            TerminationReason::Rejected
            | TerminationReason::NoResource
            | TerminationReason::Invariant,
        ) => Next::Stop,
        None | Some(TerminationReason::Other(_)) => Next::Later(wait),
    }
}

/// The retry decision for a SUBSCRIBE that failed (`refresh`: sent in an existing
/// dialog).
fn after_failure(error: &EndpointError, refresh: bool) -> Next {
    let EndpointError::Request(e) = error else {
        return Next::Stop;
    };
    match e {
        RequestError::Timeout | RequestError::Transport(_) => Next::Later(None),
        RequestError::NoDialog if refresh => Next::Now,
        RequestError::Status { code, response, .. } => match code {
            481 if refresh => Next::Now,
            408 | 480 | 500 | 503 | 504 => {
                Next::Later(retry_after_of(response).map(|s| Duration::from_secs(u64::from(s))))
            }
            _ => Next::Stop,
        },
        _ => Next::Stop,
    }
}

/// The backoff before attempt `attempt` (0-based): `min` doubled per attempt, capped at
/// `max`.
fn backoff(min: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
    min.checked_mul(factor).unwrap_or(max).min(max)
}

/// `d` shortened by up to half, by `r` (any 64-bit value), but not below `floor`.
fn jitter(d: Duration, floor: Duration, r: u64) -> Duration {
    let frac = (r >> 11) as f64 / (1u64 << 53) as f64;
    d.mul_f64(1.0 - 0.5 * frac).max(floor.min(d))
}

/// The task that serves one view.
struct ViewTask {
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

/// Hands the requests of one subscription's dialog to the view's task: what the endpoint's
/// router calls for them (no task and no queue per subscription).
struct SubscriptionRoute {
    target: Arc<str>,
    generation: u32,
    events: mpsc::UnboundedSender<Event>,
}

#[async_trait::async_trait]
impl DialogHandler for SubscriptionRoute {
    async fn handle(self: Arc<Self>, request: IncomingRequest) {
        let event = Event::Request {
            target: self.target.clone(),
            generation: self.generation,
            request: Box::new(request),
        };
        if let Err(mpsc::error::SendError(Event::Request { mut request, .. })) =
            self.events.send(event)
        {
            // The view is gone.
            let _ = request
                .respond(481, sip_core::reason_phrase(481), &[], None)
                .await;
        }
    }
}

/// The lifetime a 2xx to SUBSCRIBE grants (its Expires), or what was asked.
fn granted(ok: &SipMessage, asked: u32) -> u32 {
    ok.expires().and_then(Result::ok).unwrap_or(asked)
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

impl ViewTask {
    /// Starts the task; returns its command sender (the task ends when it is dropped).
    fn spawn(
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

    fn next_random(&mut self) -> u64 {
        // xorshift64: jitter only, not security.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    fn schedule(&mut self, sub: &mut Sub, target: &Arc<str>, at: Instant) {
        sub.deadline = Some(at);
        self.timers.push(Reverse((at, target.clone())));
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

    /// A new attempt: fresh Call-ID and tag, route first, then the SUBSCRIBE.
    fn restart(&mut self, sub: &mut Sub, target: &Arc<str>) {
        self.drop_dialog(sub);
        sub.state = SubscriptionState::Subscribing;
        sub.pending = false;
        sub.notified = false;
        sub.busy = true;
        sub.deadline = None;
        sub.expires_at = None;
        sub.started = Some(Instant::now());
        let call_id = crate::ids::call_id();
        let tag = crate::ids::tag();
        let route = self.core.route_dialog_to(
            &call_id,
            &tag,
            Arc::new(SubscriptionRoute {
                target: target.clone(),
                generation: sub.generation,
                events: self.events_tx.clone(),
            }),
        );
        sub.route = Some(route);
        let asked = self.config.expires.max(sub.min_expires);
        let request = subscribe_request(&self.core, target, call_id, &tag, asked);
        let (core, events, target, generation) = (
            self.core.clone(),
            self.events_tx.clone(),
            target.clone(),
            sub.generation,
        );
        let window = self.window.clone();
        tokio::spawn(async move {
            let _turn = window.acquire_owned().await;
            let outcome = match core.established_id() {
                Ok(id) => core
                    .platform()
                    .subscribe(id, request)
                    .await
                    .map(|(ok, dialog)| (granted(&ok, asked), Some(dialog)))
                    .map_err(EndpointError::from),
                Err(e) => Err(e),
            };
            let _ = events.send(Event::Answered {
                target,
                generation,
                sent: Sent::Initial,
                outcome,
            });
        });
    }

    /// A SUBSCRIBE in the current dialog (refresh, or `Expires: 0` to end it); false
    /// when there is no dialog.
    fn send_in_dialog(&mut self, sub: &mut Sub, target: &Arc<str>, sent: Sent) -> bool {
        let Some(dialog) = sub.dialog.clone() else {
            return false;
        };
        sub.busy = true;
        let expires = if sent == Sent::Unsubscribe {
            0
        } else {
            self.config.expires.max(sub.min_expires)
        };
        let (core, events, target, generation) = (
            self.core.clone(),
            self.events_tx.clone(),
            target.clone(),
            sub.generation,
        );
        let window = self.window.clone();
        tokio::spawn(async move {
            let _turn = window.acquire_owned().await;
            let request = in_dialog_subscribe(&core, expires);
            let outcome = core
                .platform()
                .send_in_dialog(&dialog, request)
                .await
                .map(|ok| (granted(&ok, expires), None))
                .map_err(EndpointError::from);
            let _ = events.send(Event::Answered {
                target,
                generation,
                sent,
                outcome,
            });
        });
        true
    }

    /// Waits `wait` (or the backoff) before the next attempt.
    fn wait_retry(&mut self, sub: &mut Sub, target: &Arc<str>, wait: Option<Duration>) {
        let (min, max) = (self.config.retry_min, self.config.retry_max);
        let delay = match wait {
            Some(w) => w,
            None => {
                let b = backoff(min, max, u32::from(sub.attempts));
                let r = self.next_random();
                jitter(b, min, r)
            }
        };
        sub.attempts = sub.attempts.saturating_add(1);
        sub.state = SubscriptionState::WaitingForRetry;
        self.schedule(sub, target, Instant::now() + delay);
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
                    self.restart(sub, &t);
                    if was != SubscriptionState::Idle {
                        let sub = &table[&t];
                        self.notify(&t, sub, None);
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
                mut request,
            } => {
                if let Some(refusal) = refusal_of(request.request()) {
                    // Nothing changes: not the subscription's state, nor its dialog.
                    refuse(&mut request, refusal).await;
                    return;
                }
                let dialog = request.dialog();
                if !self.is_current(&target, generation, dialog.as_ref()) {
                    // No subscription of ours (an attempt given up, a target forgotten) or
                    // another fork of the SUBSCRIBE than the dialog kept: 481 ends it at
                    // its notifier (RFC 6665 §4.1.3, §4.5.2), and the platform forgets
                    // the dialog the NOTIFY made.
                    let _ = request
                        .respond(481, sip_core::reason_phrase(481), &[], None)
                        .await;
                    self.ends.extend(dialog);
                    return;
                }
                // Answered first, whatever the body: the notifier must not retransmit.
                let _ = request.respond(200, "OK", &[], None).await;
                let status = notify_status(request.request());
                let (document, error) = read_body(request.request());
                let shared = self.shared.clone();
                let mut table = shared.table();
                self.on_notify(
                    &mut table, &target, generation, status, document, error, dialog,
                );
            }
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

    /// Whether a NOTIFY in `dialog` belongs to `target`'s current attempt: its generation,
    /// and the dialog kept (the first of the SUBSCRIBE's forks to answer or notify).
    fn is_current(&self, target: &Arc<str>, generation: u32, dialog: Option<&DialogId>) -> bool {
        self.shared.table().get(target).is_some_and(|s| {
            s.generation == generation
                && match (&s.dialog, dialog) {
                    (Some(kept), Some(d)) => kept == d,
                    _ => true,
                }
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn on_notify(
        &mut self,
        table: &mut Table,
        target: &Arc<str>,
        generation: u32,
        status: NotifierState,
        document: Option<PresenceDocument>,
        error: Option<PresenceError>,
        dialog: Option<DialogId>,
    ) {
        let Some(sub) = table.get_mut(target) else {
            return;
        };
        if sub.generation != generation {
            return;
        }
        if sub.dialog.is_none() {
            // The NOTIFY overtook the 2xx.
            sub.dialog = dialog;
        }
        let first = !std::mem::replace(&mut sub.notified, true);
        let availability = document.as_ref().map(Availability::from_document);
        if availability.is_some() {
            sub.availability = availability;
        } else if error.is_none() && status.phase != Phase::Terminated {
            // A NOTIFY carries the whole state: one of a live subscription without a body
            // says the notifier knows nothing of the presentity (any more).
            sub.availability = None;
        }
        let now = Instant::now();
        let mut error = error;
        match status.phase {
            Phase::Active | Phase::Pending => {
                if sub.closing {
                    return;
                }
                sub.pending = status.phase == Phase::Pending;
                if sub.pending {
                    sub.state = SubscriptionState::Subscribing;
                } else {
                    sub.state = SubscriptionState::Subscribed;
                    sub.attempts = 0;
                }
                if let Some(e) = status.expires {
                    let at = now + secs(e);
                    if sub.expires_at.is_none_or(|x| at < x) {
                        sub.expires_at = Some(at);
                        let refresh = now + spread_refresh_after(e, self.next_random());
                        if !sub.busy && sub.deadline.is_none_or(|d| refresh < d) {
                            self.schedule(sub, target, refresh);
                        }
                    }
                }
                if first && !sub.busy {
                    // The wait for this first NOTIFY is over: next comes the refresh.
                    if let Some(x) = sub.expires_at {
                        // Whole seconds rounded up: the window of the grant the 2xx gave, not earlier.
                        let left = x.saturating_duration_since(now).as_secs_f64().ceil();
                        let left = left.min(f64::from(u32::MAX)) as u32;
                        let refresh = spread_refresh_after(left, self.next_random());
                        self.schedule(sub, target, now + refresh);
                    }
                }
            }
            Phase::Terminated => {
                self.drop_dialog(sub);
                if sub.closing {
                    self.finish(table, target);
                    return;
                }
                let mut next = after_termination(status.reason.as_ref(), status.retry_after);
                let young = sub
                    .started
                    .is_some_and(|s| now.duration_since(s) < self.config.retry_min);
                if next == Next::Now && young {
                    // Ended as soon as it was made: do not spin.
                    next = Next::Later(None);
                }
                if next != Next::Now {
                    error = error.or(Some(PresenceError::Ended {
                        reason: status.reason.clone(),
                        retry_after: status.retry_after,
                    }));
                }
                match next {
                    Next::Now => self.restart(sub, target),
                    Next::Later(wait) => self.wait_retry(sub, target, wait),
                    Next::Stop => self.stop(sub),
                }
            }
        }
        let sub = &table[target];
        self.out.push(PresenceNotification {
            target: target.to_string(),
            homing: sub.homing,
            document,
            availability,
            state: sub.visible_state(),
            error,
        });
    }

    fn on_answered(
        &mut self,
        table: &mut Table,
        target: &Arc<str>,
        generation: u32,
        sent: Sent,
        outcome: Result<(u32, Option<DialogId>), EndpointError>,
    ) {
        let current = table
            .get(target)
            .is_some_and(|s| s.generation == generation);
        if !current {
            // An answer for an attempt given up meanwhile: forget its dialog.
            if let Ok((_, Some(d))) = outcome {
                self.ends.push(d);
            }
            return;
        }
        let Some(sub) = table.get_mut(target) else {
            return;
        };
        sub.busy = false;
        let now = Instant::now();
        match (sent, outcome) {
            (Sent::Unsubscribe, Ok(_)) => {
                // Wait a little for the final NOTIFY.
                let at = now + self.config.notify_wait;
                self.schedule(sub, target, at);
            }
            (Sent::Unsubscribe, Err(_)) => self.finish(table, target),
            (_, Ok((granted, dialog))) => {
                match (&sub.dialog, dialog) {
                    (None, d) => sub.dialog = d,
                    (Some(have), Some(d)) if *have != d => self.ends.push(d),
                    _ => {}
                }
                if sub.closing {
                    if !self.send_in_dialog(sub, target, Sent::Unsubscribe) {
                        self.finish(table, target);
                    }
                    return;
                }
                if granted == 0 {
                    // Accepted as a fetch: nothing to refresh. Try again later.
                    self.drop_dialog(sub);
                    self.wait_retry(sub, target, None);
                    let sub = &table[target];
                    self.notify(target, sub, None);
                    return;
                }
                let mut expires_at = now + secs(granted);
                if sent == Sent::Initial {
                    if let Some(x) = sub.expires_at {
                        expires_at = expires_at.min(x);
                    }
                }
                sub.expires_at = Some(expires_at);
                let left = expires_at.saturating_duration_since(now).as_secs();
                let left = u32::try_from(left).unwrap_or(u32::MAX);
                let mut at = now + refresh_after(left);
                if sent == Sent::Initial && !sub.notified {
                    // Timer N (RFC 6665 §4.1.2.4): the NOTIFY follows the 2xx, or the
                    // subscription failed.
                    at = at.min(now + self.config.notify_wait);
                }
                self.schedule(sub, target, at);
                let before = sub.state;
                if !sub.pending
                    && matches!(
                        sub.state,
                        SubscriptionState::Subscribing | SubscriptionState::WaitingForRetry
                    )
                {
                    sub.state = SubscriptionState::Subscribed;
                }
                if sub.state != before {
                    let sub = &table[target];
                    self.notify(target, sub, None);
                }
            }
            (sent, Err(e)) => {
                if sub.closing {
                    self.finish(table, target);
                    return;
                }
                let refresh = sent == Sent::Refresh;
                let asked = self.config.expires.max(sub.min_expires);
                if let Some(min) = e.longer_expires(asked) {
                    // Too brief for the notifier: ask again at once with its minimum, in
                    // the dialog for a refresh, in a new one for a first SUBSCRIBE.
                    debug!(target = %target, asked, min, "SUBSCRIBE too brief (423)");
                    sub.min_expires = min;
                    if !(refresh && self.send_in_dialog(sub, target, Sent::Refresh)) {
                        self.restart(sub, target);
                    }
                    return;
                }
                let next = after_failure(&e, refresh);
                debug!(target = %target, error = %e, ?next, "SUBSCRIBE failed");
                let dialog_gone = !refresh
                    || matches!(
                        &e,
                        EndpointError::Request(
                            RequestError::Timeout
                                | RequestError::NoDialog
                                | RequestError::Status {
                                    code: 408 | 481,
                                    ..
                                }
                        )
                    );
                match next {
                    Next::Now => {
                        self.restart(sub, target);
                        let sub = &table[target];
                        self.notify(target, sub, None);
                    }
                    Next::Later(wait) => {
                        if dialog_gone {
                            self.drop_dialog(sub);
                        }
                        self.wait_retry(sub, target, wait);
                        let sub = &table[target];
                        self.notify(target, sub, Some(e.into()));
                    }
                    Next::Stop => {
                        self.stop(sub);
                        let sub = &table[target];
                        self.notify(target, sub, Some(e.into()));
                    }
                }
            }
        }
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        let shared = self.shared.clone();
        let mut table = shared.table();
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, target))) = self.timers.pop() else {
                break;
            };
            let Some(sub) = table.get_mut(&target) else {
                continue;
            };
            if sub.deadline != Some(at) {
                continue;
            }
            sub.deadline = None;
            if sub.closing {
                if !sub.busy {
                    self.finish(&mut table, &target);
                }
                continue;
            }
            if sub.busy {
                continue;
            }
            match sub.state {
                SubscriptionState::Subscribed | SubscriptionState::Subscribing if !sub.notified => {
                    // Accepted, but no NOTIFY came (Timer N): the subscription failed.
                    // Its dialog is forgotten; a NOTIFY still on its way gets 481, which
                    // ends it at the notifier.
                    debug!(target = %target, "no NOTIFY after the 2xx");
                    self.drop_dialog(sub);
                    self.wait_retry(sub, &target, None);
                    let error = EndpointError::Request(RequestError::Timeout);
                    let sub = &table[&target];
                    self.notify(&target, sub, Some(error.into()));
                }
                SubscriptionState::Subscribed | SubscriptionState::Subscribing => {
                    if !self.send_in_dialog(sub, &target, Sent::Refresh) {
                        self.restart(sub, &target);
                    }
                }
                SubscriptionState::WaitingForRetry => {
                    let alive = sub.dialog.is_some()
                        && sub
                            .expires_at
                            .is_some_and(|e| e > now + Duration::from_secs(1));
                    if !(alive && self.send_in_dialog(sub, &target, Sent::Refresh)) {
                        self.restart(sub, &target);
                        let sub = &table[&target];
                        self.notify(&target, sub, None);
                    }
                }
                SubscriptionState::Idle | SubscriptionState::Terminated => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn message(text: &str) -> SipMessage {
        SipMessage::parse_datagram(Bytes::from(text.to_string()), &sip_core::Limits::DEFAULT)
            .expect("test message")
    }

    fn response(status: u16, extra: &str) -> SipMessage {
        message(&format!(
            "SIP/2.0 {status} {}\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\n\
             From: <sip:w@contoso.test>;tag=1\r\nTo: <sip:b@contoso.test>;tag=2\r\n\
             Call-ID: c\r\nCSeq: 1 SUBSCRIBE\r\n{extra}Content-Length: 0\r\n\r\n",
            sip_core::reason_phrase(status)
        ))
    }

    fn status(code: u16, extra: &str) -> EndpointError {
        EndpointError::Request(RequestError::Status {
            code,
            reason: sip_core::reason_phrase(code).to_string(),
            response: Box::new(response(code, extra)),
        })
    }

    fn notify(headers: &str, body: &str) -> SipMessage {
        message(&format!(
            "NOTIFY sip:w@127.0.0.1:5061;transport=tls SIP/2.0\r\n\
             Via: SIP/2.0/TLS fe;branch=z9hG4bK2\r\nMax-Forwards: 70\r\n\
             From: <sip:b@contoso.test>;tag=2\r\nTo: <sip:w@contoso.test>;tag=1\r\n\
             Call-ID: c\r\nCSeq: 2 NOTIFY\r\n{headers}Content-Length: {}\r\n\r\n{body}",
            body.len()
        ))
    }

    #[test]
    fn subscription_state_is_parsed() {
        let s = parse_subscription_state(b"active;expires=3600").unwrap();
        assert_eq!(s.phase, Phase::Active);
        assert_eq!(s.expires, Some(3600));
        assert_eq!(s.reason, None);

        let s = parse_subscription_state(b"pending ; expires=60").unwrap();
        assert_eq!(s.phase, Phase::Pending);
        assert_eq!(s.expires, Some(60));

        let s = parse_subscription_state(b"terminated;reason=timeout").unwrap();
        assert_eq!(s.phase, Phase::Terminated);
        assert_eq!(s.reason, Some(TerminationReason::Timeout));
        assert_eq!(s.retry_after, None);

        let s = parse_subscription_state(b"terminated;reason=probation;retry-after=30").unwrap();
        assert_eq!(s.reason, Some(TerminationReason::Probation));
        assert_eq!(s.retry_after, Some(30));

        let s = parse_subscription_state(b"Terminated;Reason=NoResource").unwrap();
        assert_eq!(s.phase, Phase::Terminated);
        assert_eq!(s.reason, Some(TerminationReason::NoResource));

        let s = parse_subscription_state(b"terminated").unwrap();
        assert_eq!((s.phase, s.reason), (Phase::Terminated, None));

        let s = parse_subscription_state(b"terminated;reason=\"moved\"").unwrap();
        assert_eq!(s.reason, Some(TerminationReason::Other("moved".into())));

        // An extension state keeps the subscription.
        let s = parse_subscription_state(b"frozen;expires=10").unwrap();
        assert_eq!(s.phase, Phase::Active);

        assert!(parse_subscription_state(b"").is_err());
        assert!(parse_subscription_state(b";expires=1").is_err());

        let n = notify(
            "Event: presence\r\nSubscription-State: terminated;reason=rejected\r\n",
            "",
        );
        assert_eq!(notify_status(&n).reason, Some(TerminationReason::Rejected));
    }

    #[test]
    fn termination_reasons_decide_the_retry() {
        use TerminationReason as R;
        let d = |s| Some(Duration::from_secs(s));
        let table: &[(Option<R>, Option<u32>, Next)] = &[
            (Some(R::Deactivated), None, Next::Now),
            (Some(R::Timeout), Some(30), Next::Now),
            (Some(R::Probation), Some(30), Next::Later(d(30))),
            (Some(R::Probation), None, Next::Later(None)),
            (Some(R::Giveup), Some(5), Next::Later(d(5))),
            (Some(R::Giveup), None, Next::Later(None)),
            (Some(R::Rejected), Some(5), Next::Stop),
            (Some(R::NoResource), None, Next::Stop),
            (Some(R::Invariant), None, Next::Stop),
            (None, None, Next::Later(None)),
            (None, Some(9), Next::Later(d(9))),
            (Some(R::Other("moved".into())), None, Next::Later(None)),
        ];
        for (reason, retry_after, want) in table {
            assert_eq!(
                after_termination(reason.as_ref(), *retry_after),
                *want,
                "{reason:?} retry-after {retry_after:?}"
            );
        }
        for r in [
            R::Deactivated,
            R::Probation,
            R::Rejected,
            R::Timeout,
            R::Giveup,
            R::NoResource,
            R::Invariant,
        ] {
            assert_eq!(TerminationReason::from_token(r.as_str()), r);
        }
    }

    #[test]
    fn failures_decide_the_retry() {
        let later = |s: u64| Next::Later(Some(Duration::from_secs(s)));
        let table: Vec<(EndpointError, bool, Next)> = vec![
            // The far side refuses (a 403 from the edge is the federation refusal).
            (status(403, ""), false, Next::Stop),
            (status(404, ""), false, Next::Stop),
            (status(489, ""), false, Next::Stop),
            (status(403, ""), true, Next::Stop),
            // Worth another try, after Retry-After when given.
            (status(480, ""), false, Next::Later(None)),
            (status(503, "Retry-After: 7\r\n"), false, later(7)),
            (
                status(503, "Retry-After: 120 (maintenance);duration=60\r\n"),
                true,
                later(120),
            ),
            (status(408, ""), false, Next::Later(None)),
            (status(500, ""), true, Next::Later(None)),
            (
                EndpointError::Request(RequestError::Timeout),
                false,
                Next::Later(None),
            ),
            (
                EndpointError::Request(RequestError::Timeout),
                true,
                Next::Later(None),
            ),
            // A refresh of a dialog the notifier forgot: a new subscription at once.
            (status(481, ""), true, Next::Now),
            (
                EndpointError::Request(RequestError::NoDialog),
                true,
                Next::Now,
            ),
            (status(481, ""), false, Next::Stop),
            // Nothing to retry.
            (
                EndpointError::Request(RequestError::Refused(TopologyError::Blocked(
                    "blocked.test".into(),
                ))),
                false,
                Next::Stop,
            ),
            (
                EndpointError::Request(RequestError::Shutdown),
                true,
                Next::Stop,
            ),
            (
                EndpointError::NotEstablished(crate::EndpointState::Terminated),
                false,
                Next::Stop,
            ),
        ];
        for (error, refresh, want) in table {
            assert_eq!(
                after_failure(&error, refresh),
                want,
                "{error} (refresh: {refresh})"
            );
        }
    }

    #[test]
    fn a_423_gives_the_lifetime_to_ask_for() {
        let too_brief = status(423, "Min-Expires: 120\r\n");
        assert_eq!(too_brief.longer_expires(60), Some(120));
        // Nothing longer to ask for: retrying would loop.
        assert_eq!(too_brief.longer_expires(120), None);
        assert_eq!(status(423, "").longer_expires(60), None);
        assert_eq!(
            status(423, "Min-Expires: soon\r\n").longer_expires(60),
            None
        );
        assert_eq!(status(400, "Min-Expires: 120\r\n").longer_expires(60), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let got: Vec<u64> = (0..9).map(|a| backoff(min, max, a).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        // No overflow however many attempts.
        assert_eq!(backoff(min, max, 31), max);
        assert_eq!(backoff(min, max, 32), max);
        assert_eq!(backoff(min, max, u32::MAX), max);
        let ms = Duration::from_millis;
        assert_eq!(backoff(ms(250), ms(2000), 0), ms(250));
        assert_eq!(backoff(ms(250), ms(2000), 2), ms(1000));
        assert_eq!(backoff(ms(250), ms(2000), 4), ms(2000));
    }

    #[test]
    fn jitter_shortens_by_at_most_half_and_respects_the_floor() {
        let floor = Duration::from_secs(1);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut lowest = Duration::MAX;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let d = Duration::from_secs(8);
            let j = jitter(d, floor, x);
            assert!(j <= d && j >= d / 2, "{j:?}");
            lowest = lowest.min(j);
            // Never below the floor, unless the delay itself is.
            assert!(jitter(Duration::from_millis(1500), floor, x) >= floor);
            let short = Duration::from_millis(500);
            assert_eq!(jitter(short, floor, x), short);
        }
        assert!(
            lowest < Duration::from_secs(5),
            "jitter never shortened: {lowest:?}"
        );
        assert_eq!(
            jitter(Duration::from_secs(8), floor, 0),
            Duration::from_secs(8)
        );
        assert_eq!(
            jitter(Duration::from_secs(8), floor, u64::MAX).as_millis() / 100,
            40
        );
    }

    #[test]
    fn retry_after_header_is_read() {
        assert_eq!(
            retry_after_of(&response(503, "Retry-After: 30\r\n")),
            Some(30)
        );
        assert_eq!(
            retry_after_of(&response(503, "Retry-After: 18000;duration=3600\r\n")),
            Some(18000)
        );
        assert_eq!(retry_after_of(&response(503, "")), None);
        assert_eq!(
            retry_after_of(&response(503, "Retry-After: soon\r\n")),
            None
        );
    }

    #[test]
    fn notify_bodies_are_read_or_reported() {
        let n = notify("Event: presence\r\n", "");
        let (doc, err) = read_body(&n);
        assert!(doc.is_none() && err.is_none());

        let xml = PresenceDocument::from_availability(
            "sip:b@contoso.test",
            Availability::Away,
            Some("out"),
        )
        .to_xml();
        let n = notify(
            "Event: presence\r\nContent-Type: application/pidf+xml\r\n",
            &xml,
        );
        let (doc, err) = read_body(&n);
        let doc = doc.expect("document");
        assert!(err.is_none());
        assert_eq!(Availability::from_document(&doc), Availability::Away);
        assert_eq!(doc.note(), Some("out"));

        let n = notify(
            "Event: presence\r\nContent-Type: application/pidf+xml\r\n",
            "<presence><tuple",
        );
        let (doc, err) = read_body(&n);
        assert!(doc.is_none());
        assert!(matches!(err, Some(PresenceError::Document(_))), "{err:?}");

        let n = notify("Event: presence\r\nContent-Type: text/plain\r\n", "busy");
        let (doc, err) = read_body(&n);
        assert!(doc.is_none());
        match err {
            Some(PresenceError::UnsupportedBody { content_type }) => {
                assert_eq!(content_type, "text/plain")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_presence_notifies_are_accepted_in_a_subscription_dialog() {
        let status = |headers: &str| {
            let headers = format!("{headers}Subscription-State: active\r\n");
            refusal_of(&notify(&headers, "")).map(|r| r.0)
        };
        assert_eq!(status("Event: presence\r\n"), None);
        assert_eq!(status("o: presence;extension=1\r\n"), None);
        // Not the subscription's Event (RFC 6665 §8.2.1): no subscription of the dialog.
        assert_eq!(status("Event: presence;id=7\r\n"), Some(481));
        assert_eq!(status("Event: Presence\r\n"), Some(481));
        assert_eq!(status("Event: dialog\r\n"), Some(481));
        // The mandatory Event header missing or unreadable.
        assert_eq!(status(""), Some(400));
        assert_eq!(status("Event: ;id=1\r\n"), Some(400));
        let bye = message(
            "BYE sip:w@h SIP/2.0\r\nVia: SIP/2.0/TLS fe;branch=z9hG4bK3\r\n\
             From: <sip:b@contoso.test>;tag=2\r\nTo: <sip:w@contoso.test>;tag=1\r\n\
             Call-ID: c\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(refusal_of(&bye).map(|r| r.0), Some(405));
    }

    #[test]
    fn a_notify_without_a_readable_subscription_state_is_refused() {
        let status = |headers: &str| refusal_of(&notify(headers, "")).map(|r| (r.0, r.1));
        let event = "Event: presence\r\n";
        assert_eq!(
            status(event),
            Some((400, "Missing Subscription-State header"))
        );
        assert_eq!(
            status(&format!("{event}Subscription-State: ;expires=60\r\n")),
            Some((400, "Malformed Subscription-State header"))
        );
        assert_eq!(
            status(&format!("{event}Subscription-State: pending\r\n")),
            None
        );
    }

    #[test]
    fn federation_refusals_are_recognised() {
        let n = |homing, error| PresenceNotification {
            target: "sip:bob@fabrikam.test".into(),
            homing,
            document: None,
            availability: None,
            state: SubscriptionState::Terminated,
            error,
        };
        let forbidden = Some(PresenceError::Endpoint(status(403, "")));
        assert!(n(Federated::NAME, forbidden.clone()).is_federation_refusal());
        assert!(!n("on-premises", forbidden).is_federation_refusal());
        assert!(!n(
            Federated::NAME,
            Some(PresenceError::Endpoint(status(404, "")))
        )
        .is_federation_refusal());
        let blocked = Some(PresenceError::Endpoint(EndpointError::Topology(
            TopologyError::Blocked("blocked.test".into()),
        )));
        assert!(n(Federated::NAME, blocked).is_federation_refusal());
        assert!(!n(Federated::NAME, None).is_federation_refusal());
    }

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
