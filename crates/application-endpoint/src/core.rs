//! What both endpoint kinds share: the platform registration, the router that hands each
//! incoming request to whoever handles it, and the state.
//!
//! ## Routing
//!
//! The platform delivers every request for the endpoint's owner (and every request inside
//! a dialog the endpoint owns) to one queue. A router task reads it:
//!
//! * a request inside a dialog (To tag) goes to the route registered for its
//!   (Call-ID, local tag) with [`EndpointCore::route_dialog`] — a call, a subscription —
//!   or is answered 481 when nothing is registered;
//! * an INVITE outside a dialog goes to the handler stream of its modality (read from the
//!   SDP `m=` line; [`EndpointCore::incoming`]; one without a body, a delayed offer, to
//!   the instant-messaging stream), or is answered 488 when no handler is registered, or
//!   503 with Retry-After while draining;
//! * an ACK that carries an answer (to an offer this side made in a 2xx) goes to its
//!   dialog's route ([`DialogHandler::ack`]); other ACKs never come up from the platform;
//! * a MESSAGE outside a dialog (page mode, RFC 3428) goes to [`EndpointCore::pages`], or
//!   is answered 405;
//! * anything else is answered 405.
//!
//! The router also listens to the dialogs the platform ends on its own account
//! ([`CollaborationPlatform::dialog_endings`]: a 2xx never ACKed) and
//! tells the handler of such a dialog ([`DialogHandler::ended_by_platform`]), so that a
//! call does not look established for ever.
//!
//! Handlers are streams (`mpsc::Receiver`), not callback traits: an application reads
//! them in its own tasks, and backpressure is the stream's bound (a full stream answers
//! 503 Retry-After 1).
//!
//! Routes are keyed by (Call-ID, local tag), which are known before a request is sent, so
//! a request that arrives before the caller saw its own 2xx is never lost.

use crate::state::{EndpointState, StateCell, StateChange};
use crate::EndpointError;
use collaboration_platform::{
    Address, ClientAuth, CollaborationPlatform, DialogEndReason, DialogEnded, DialogId, EndpointId,
    IncomingRequest, OnPremises, OutgoingInvite, OutgoingRequest, RequestError,
};
use sip_core::sdp::SessionDescription;
use sip_core::{HeaderName, Method, SipMessage};
// foldhash (seeded per map) instead of SipHash: these maps are looked up for every message.
use foldhash::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::{broadcast, mpsc, watch};
use tracing::debug;

/// Queue size of each handler stream and dialog route.
const STREAM_CAPACITY: usize = 256;

/// The kind of session an incoming INVITE offers, from its SDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Modality {
    /// `m=message … sip null`: an instant-messaging session (MSRP-less, as Lync/Skype for
    /// Business offer it).
    InstantMessaging,
    /// `m=audio`.
    Audio,
    /// `m=video` (usually with audio).
    Video,
}

impl Modality {
    /// The modality an INVITE's body offers, if it is SDP with a known media line (video
    /// wins over audio; message stands alone).
    pub fn of_offer(body: &[u8]) -> Option<Modality> {
        let sdp = SessionDescription::parse_slice(body).ok()?;
        let mut found = None;
        for m in sdp.media() {
            let this = match m.media_type() {
                "message" => Modality::InstantMessaging,
                "video" => Modality::Video,
                "audio" => Modality::Audio,
                _ => continue,
            };
            found = match (found, this) {
                (Some(Modality::Video), _) => Some(Modality::Video),
                _ => Some(this),
            };
        }
        found
    }
}

/// `"CALL-ID TAG"`: neither a Call-ID nor a tag contains a space (RFC 3261 §25.1), and one
/// shared string is one allocation for the map and the guard together.
type RouteKey = Arc<str>;

fn route_key(call_id: &str, local_tag: &str) -> String {
    let mut k = String::with_capacity(call_id.len() + 1 + local_tag.len());
    k.push_str(call_id);
    k.push(' ');
    k.push_str(local_tag);
    k
}

/// [`route_key`] written into `buf`, when it fits and both parts are UTF-8 (they are
/// tokens, so they always are in practice); `None` otherwise.
fn stack_route_key<'b>(buf: &'b mut [u8], call_id: &[u8], tag: &[u8]) -> Option<&'b str> {
    let n = call_id.len() + 1 + tag.len();
    let key = buf.get_mut(..n)?;
    key[..call_id.len()].copy_from_slice(call_id);
    key[call_id.len()] = b' ';
    key[call_id.len() + 1..].copy_from_slice(tag);
    std::str::from_utf8(key).ok()
}

/// Handles the requests of one dialog, called by the endpoint's router: what a call holds
/// instead of a task and a queue of its own (an idle call then costs a map entry).
/// `handle` runs on the router, so it must answer promptly; spawn for slow work.
#[async_trait::async_trait]
pub trait DialogHandler: Send + Sync + 'static {
    /// One request of the dialog (never an ACK: see [`ack`](Self::ack)). Takes the
    /// handler's `Arc`, so a handler can start timers that hold it weakly.
    async fn handle(self: Arc<Self>, request: IncomingRequest);

    /// The ACK of a 2xx this side sent with an offer, to an INVITE that had none: the
    /// peer's answer is its body, or it has none (RFC 3261 §13.2.1). Comes once per 2xx;
    /// nothing is to be answered. Other ACKs stay with the platform. The default ignores
    /// it, for handlers that never send an offer in a 2xx.
    async fn ack(self: Arc<Self>, ack: IncomingRequest) {
        let _ = ack;
    }

    /// The platform ended the dialog on its own account (a 2xx never ACKed;
    /// [`CollaborationPlatform::dialog_endings`]). Nothing more will come in it; the
    /// default does nothing.
    ///
    /// [`CollaborationPlatform::dialog_endings`]: collaboration_platform::CollaborationPlatform::dialog_endings
    async fn ended_by_platform(self: Arc<Self>, reason: DialogEndReason) {
        let _ = reason;
    }

    /// The endpoint ended: `terminate()`, a registration refused for good, or its
    /// platform shut down. Nothing more comes in the dialog, and the handler ends what it
    /// holds (a call sends BYE when it still can), or the peer is left in a dialog
    /// nobody answers. `terminate()` returns after every handler's has. The default does
    /// nothing.
    async fn endpoint_terminated(self: Arc<Self>) {}
}

#[derive(Clone)]
enum DialogTarget {
    Queue(mpsc::Sender<Box<IncomingRequest>>),
    Handler(Arc<dyn DialogHandler>),
}

/// Keeps a [`DialogHandler`] routed; dropping it removes the route (later requests in that
/// dialog are answered 481).
#[derive(Debug)]
pub struct DialogGuard {
    key: RouteKey,
    core: Weak<EndpointCore>,
}

impl Drop for DialogGuard {
    fn drop(&mut self) {
        if let Some(core) = self.core.upgrade() {
            let removed = core.lock_routes().dialogs.remove(&*self.key);
            // The handler may hold this guard's owner: drop it outside the lock.
            drop(removed);
        }
    }
}

#[derive(Default)]
struct Routes {
    /// Boxed: a channel allocates its first block of 32 slots at once, and an idle call
    /// should hold 32 pointers, not 32 requests.
    dialogs: HashMap<RouteKey, DialogTarget>,
    sessions: HashMap<Modality, mpsc::Sender<IncomingRequest>>,
    pages: Option<mpsc::Sender<IncomingRequest>>,
}

/// The shared part of [`ApplicationEndpoint`](crate::ApplicationEndpoint) and
/// [`UserEndpoint`](crate::UserEndpoint): identity, platform, routing, state. The
/// conversation layer builds on it.
pub struct EndpointCore {
    platform: CollaborationPlatform,
    owner: Address<OnPremises>,
    display_name: Option<String>,
    contact: String,
    id: Mutex<Option<EndpointId>>,
    routes: Mutex<Routes>,
    draining: AtomicBool,
    retry_after: u32,
    is_application: bool,
    /// A user endpoint's credentials for its out-of-dialog requests (see
    /// [`EndpointCore::outgoing`]); `None` for an application endpoint.
    auth: Option<ClientAuth>,
    state: StateCell,
    /// What a platform shutdown runs for the endpoint (see [`StopHook`]).
    stop_hook: std::sync::OnceLock<StopHook>,
    /// How many `establish()` calls are under way ([`EstablishGuard`]): a shutdown waits
    /// for them, so that a REGISTER granted meanwhile is removed before the platform stops.
    establishing: watch::Sender<usize>,
}

/// The endpoint's `terminate()` (presence removed, unregistered, calls ended), as a platform
/// shutdown runs it; `None` once the endpoint's owner struct is gone. Set by the endpoint
/// kinds, which own the presence and the registration; it holds them weakly, so it keeps
/// nothing alive.
pub(crate) type StopHook = Box<
    dyn Fn() -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>
        + Send
        + Sync,
>;

impl std::fmt::Debug for EndpointCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointCore")
            .field("owner", &self.owner.uri())
            .field("state", &self.state.get())
            .finish_non_exhaustive()
    }
}

/// A registered dialog route; dropping it removes the route (requests that still arrive
/// in that dialog are answered 481).
#[derive(Debug)]
pub struct DialogRoute {
    key: RouteKey,
    core: Weak<EndpointCore>,
    requests: mpsc::Receiver<Box<IncomingRequest>>,
}

impl DialogRoute {
    /// The next request in the dialog; `None` once the endpoint is gone.
    ///
    /// Cancel safety: cancel safe.
    pub async fn recv(&mut self) -> Option<IncomingRequest> {
        self.requests.recv().await.map(|b| *b)
    }

    /// The (Call-ID, local tag) this route matches.
    pub fn key(&self) -> (&str, &str) {
        self.key.split_once(' ').unwrap_or((&self.key, ""))
    }
}

impl Drop for DialogRoute {
    fn drop(&mut self) {
        if let Some(core) = self.core.upgrade() {
            let removed = core.lock_routes().dialogs.remove(&*self.key);
            drop(removed);
        }
    }
}

impl EndpointCore {
    pub(crate) fn new(
        platform: &CollaborationPlatform,
        owner: Address<OnPremises>,
        display_name: Option<String>,
        retry_after: u32,
        is_application: bool,
        auth: Option<ClientAuth>,
    ) -> Arc<EndpointCore> {
        // User and domain, not the user alone: one application may host alice of two home
        // domains, and requests sent to a contact must reach one endpoint.
        let user = CollaborationPlatform::contact_user(&owner);
        let contact = platform
            .contact_uri(&user)
            .unwrap_or_else(|| format!("sip:{user}@ucma.invalid;transport=tls"));
        Arc::new(EndpointCore {
            platform: platform.clone(),
            owner,
            display_name,
            contact,
            id: Mutex::new(None),
            routes: Mutex::new(Routes::default()),
            draining: AtomicBool::new(false),
            retry_after,
            is_application,
            auth,
            state: StateCell::new(),
            stop_hook: std::sync::OnceLock::new(),
            establishing: watch::Sender::new(0),
        })
    }

    /// Sets what a platform shutdown runs for the endpoint (once).
    pub(crate) fn set_stop_hook(&self, hook: StopHook) {
        let _ = self.stop_hook.set(hook);
    }

    fn lock_routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        // A panic while holding the lock leaves maps that are still consistent.
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The platform the endpoint lives on.
    pub fn platform(&self) -> &CollaborationPlatform {
        &self.platform
    }

    /// The owner: the on-premises address the endpoint acts as.
    pub fn owner(&self) -> &Address<OnPremises> {
        &self.owner
    }

    /// Whether this is an [`ApplicationEndpoint`](crate::ApplicationEndpoint) (trusted
    /// identity; may impersonate) rather than a [`UserEndpoint`](crate::UserEndpoint).
    pub fn is_application(&self) -> bool {
        self.is_application
    }

    /// A user endpoint's credentials for its out-of-dialog requests.
    pub(crate) fn client_auth(&self) -> Option<&ClientAuth> {
        self.auth.as_ref()
    }

    /// `request`, an out-of-dialog request of this endpoint, as it is to go out: a user
    /// endpoint's carries the user's credentials ([`OutgoingRequest::authenticate`]), so
    /// that a front end that challenges it (a proxy's 407 to the user's INVITE, MESSAGE,
    /// SUBSCRIBE or PUBLISH, or a 401) gets it again with them, and later requests carry
    /// them from the start; refused credentials are
    /// [`RequestError::Authentication`], not a loop. An application endpoint's is
    /// unchanged: its front end trusts it over mutual TLS and does not challenge it.
    ///
    /// The endpoint's own [`send_request`](Self::send_request),
    /// [`invite`](Self::invite) and [`subscribe`](Self::subscribe) apply it; a request
    /// sent with the platform directly goes without credentials.
    pub fn outgoing(&self, request: OutgoingRequest) -> OutgoingRequest {
        match &self.auth {
            Some(auth) => request.authenticate(auth.clone()),
            None => request,
        }
    }

    /// Sends an out-of-dialog request of this endpoint
    /// ([`CollaborationPlatform::send_request`] with [`outgoing`](Self::outgoing)). Its
    /// From is the request's own: the platform's URI unless set
    /// ([`OutgoingRequest::from`]), so a user's request names the user there.
    ///
    /// Cancel safety: as the platform's; cancelled while a challenged request is sent
    /// again, the second request may or may not have gone.
    pub async fn send_request(&self, request: OutgoingRequest) -> Result<SipMessage, RequestError> {
        self.platform.send_request(self.outgoing(request)).await
    }

    /// Sends an INVITE as this endpoint, its dialog routed to it as `endpoint`
    /// ([`CollaborationPlatform::invite`] with [`outgoing`](Self::outgoing)).
    ///
    /// Cancel safety: as the platform's.
    pub async fn invite(
        &self,
        endpoint: EndpointId,
        request: OutgoingRequest,
    ) -> Result<OutgoingInvite, RequestError> {
        self.platform.invite(endpoint, self.outgoing(request)).await
    }

    /// Sends a SUBSCRIBE (or REFER) as this endpoint, its dialog routed to it as
    /// `endpoint` ([`CollaborationPlatform::subscribe`] with [`outgoing`](Self::outgoing)).
    ///
    /// Cancel safety: as [`send_request`](Self::send_request).
    pub async fn subscribe(
        &self,
        endpoint: EndpointId,
        request: OutgoingRequest,
    ) -> Result<(SipMessage, DialogId), RequestError> {
        self.platform
            .subscribe(endpoint, self.outgoing(request))
            .await
    }

    /// The owner's display name, if configured.
    pub fn display_name(&self) -> Option<&str> {
        self.display_name.as_deref()
    }

    /// The Contact URI of the endpoint (where the front end reaches it).
    pub fn contact(&self) -> &str {
        &self.contact
    }

    /// The platform's id for the endpoint once established.
    pub fn id(&self) -> Option<EndpointId> {
        *self.id.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The id, or why there is none.
    pub fn established_id(&self) -> Result<EndpointId, EndpointError> {
        match (self.id(), self.state.get()) {
            (
                Some(id),
                EndpointState::Established
                | EndpointState::Reestablishing
                | EndpointState::Draining,
            ) => Ok(id),
            (_, s) => Err(EndpointError::NotEstablished(s)),
        }
    }

    /// The current state.
    pub fn state(&self) -> EndpointState {
        self.state.get()
    }

    /// Watches the state and the reason of each change.
    pub fn watch_state(&self) -> watch::Receiver<StateChange> {
        self.state.watch()
    }

    /// Every state change from now on, in order (see [`ApplicationEndpoint::state_changes`](crate::ApplicationEndpoint::state_changes)).
    pub fn state_changes(&self) -> broadcast::Receiver<StateChange> {
        self.state.changes()
    }

    pub(crate) fn set_state(&self, state: EndpointState, reason: impl Into<String>) {
        self.state.set(state, reason);
    }

    /// [`set_state`](Self::set_state) only from one of `from`; `Err` holds the state found.
    pub(crate) fn transition(
        &self,
        from: &[EndpointState],
        state: EndpointState,
        reason: impl Into<String>,
    ) -> Result<(), EndpointState> {
        self.state.transition(from, state, reason)
    }

    /// Whether new conversations are declined.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Receives the requests of the dialog with this Call-ID and local tag (our From tag
    /// for a request we send, our To tag for one we answer). Register it before sending
    /// the request or the answer that makes the dialog.
    pub fn route_dialog(self: &Arc<Self>, call_id: &str, local_tag: &str) -> DialogRoute {
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        let key: RouteKey = Arc::from(route_key(call_id, local_tag));
        let old = self
            .lock_routes()
            .dialogs
            .insert(key.clone(), DialogTarget::Queue(tx));
        // A replaced handler may hold its own guard: dropped outside the lock.
        drop(old);
        DialogRoute {
            key,
            core: Arc::downgrade(self),
            requests: rx,
        }
    }

    /// Hands the requests of the dialog with this Call-ID and local tag to `handler` (see
    /// [`route_dialog`](Self::route_dialog) for when to register). The route lasts as long
    /// as the returned guard.
    pub fn route_dialog_to(
        self: &Arc<Self>,
        call_id: &str,
        local_tag: &str,
        handler: Arc<dyn DialogHandler>,
    ) -> DialogGuard {
        let key: RouteKey = Arc::from(route_key(call_id, local_tag));
        let old = self
            .lock_routes()
            .dialogs
            .insert(key.clone(), DialogTarget::Handler(handler));
        drop(old);
        DialogGuard {
            key,
            core: Arc::downgrade(self),
        }
    }

    /// The stream of incoming INVITEs offering `modality` (replaces an earlier stream for
    /// it); INVITEs without an offer come on the instant-messaging one. Without one, such
    /// INVITEs are declined 488.
    pub fn incoming(&self, modality: Modality) -> mpsc::Receiver<IncomingRequest> {
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        self.lock_routes().sessions.insert(modality, tx);
        rx
    }

    /// The stream of page-mode MESSAGEs (RFC 3428, outside any dialog). Without one they
    /// are answered 405.
    pub fn pages(&self) -> mpsc::Receiver<IncomingRequest> {
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        self.lock_routes().pages = Some(tx);
        rx
    }

    /// Registers with the platform and starts the router.
    pub(crate) async fn attach(
        self: &Arc<Self>,
        gruu: Option<String>,
        default_routing: bool,
    ) -> Result<EndpointId, EndpointError> {
        if let Some(id) = self.id() {
            return Ok(id);
        }
        if self.is_application {
            // Its display name is the application's own to show, federated parties included.
            self.platform.declare_application_identity(&self.owner);
        }
        let (id, rx) = self
            .platform
            .register_endpoint(self.owner.clone(), gruu, default_routing)
            .await?;
        // Kept before the await below: an `establish()` dropped there is unrouted by its
        // guard, which finds the id.
        *self.id.lock().unwrap_or_else(|p| p.into_inner()) = Some(id);
        // A platform shutdown waits for the router to end the endpoint's calls (BYE while
        // the platform still sends them) and unroute it.
        self.platform.hold_shutdown_for(id).await;
        // A user's requests inside its dialogs answer a proxy's challenge as its others do.
        if let Some(auth) = &self.auth {
            self.platform.authenticate_dialogs(id, auth.clone()).await;
        }
        let endings = self.platform.dialog_endings();
        let gone = Gone {
            state: self.watch_state(),
            platform: self.platform.clone(),
        };
        tokio::spawn(route(Arc::downgrade(self), rx, id, endings, gone));
        // A terminate() while the platform was taking the route found no id to unroute:
        // the endpoint is unrouted here instead. Read after the id is stored, and
        // terminate() leaves Establishing before it takes the id, so one of the two sees
        // the other. (Before, the terminated endpoint stayed routed, answering 503.)
        let now = self.state.get();
        if now != EndpointState::Establishing {
            self.detach().await;
            return Err(EndpointError::NotEstablished(now));
        }
        Ok(id)
    }

    /// The end of `establish()`: Established, unless a `terminate()` came meanwhile (it
    /// may have unrouted before routing was set up: unrouted again here).
    pub(crate) async fn finish_establishing(&self, reason: String) -> Result<(), EndpointError> {
        match self.transition(
            &[EndpointState::Establishing],
            EndpointState::Established,
            reason,
        ) {
            Ok(()) => Ok(()),
            Err(s) => {
                self.detach().await;
                Err(EndpointError::NotEstablished(s))
            }
        }
    }

    /// Stops the platform routing to the endpoint, keeping its handler streams: what a
    /// failed `establish()` undoes, so that the next one receives on the same streams.
    pub(crate) async fn unroute(&self) {
        let id = self.id.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(id) = id {
            self.platform.unregister_endpoint(id).await;
        }
    }

    /// Closes the endpoint's handler streams and dialog routes, then stops routing to it.
    /// In that order: the calls' BYEs are with the platform before it hears the endpoint is
    /// gone, which a shutdown waiting for the endpoint takes as the end of its BYEs.
    pub(crate) async fn detach(&self) {
        self.detach_then(None).await;
    }

    /// [`detach`](Self::detach) for an endpoint that ends: Terminated with `reason` once its
    /// handlers are told, before the platform hears it is gone. A shutdown waiting for the
    /// endpoint returns when it is unrouted; Terminated after that, `shutdown().await`
    /// could return with the endpoint still Terminating.
    pub(crate) async fn detach_terminated(&self, reason: impl Into<String>) {
        self.detach_then(Some(reason.into())).await;
    }

    async fn detach_then(&self, terminated: Option<String>) {
        for handler in self.close_routes() {
            handler.endpoint_terminated().await;
        }
        if let Some(reason) = terminated {
            // From Terminating only: a cancelled terminate() finishing this must not
            // replace the reason of one that got as far.
            let _ = self.transition(
                &[EndpointState::Terminating],
                EndpointState::Terminated,
                reason,
            );
        }
        self.unroute().await;
    }

    /// Ends the handler streams and dialog routes; returns the dialog handlers, to be told
    /// the endpoint ended.
    fn close_routes(&self) -> Vec<Arc<dyn DialogHandler>> {
        let routes = std::mem::take(&mut *self.lock_routes());
        // Dropped outside the lock: a handler may hold its own route's guard (a call
        // does), whose drop takes the lock again; dropped inside, that deadlocked.
        routes
            .dialogs
            .into_values()
            .filter_map(|t| match t {
                DialogTarget::Handler(h) => Some(h),
                DialogTarget::Queue(_) => None,
            })
            .collect()
    }

    /// The platform shut down: a live endpoint is Terminated (nothing reaches it, nothing
    /// it sends leaves), as UCMA's endpoints end with their platform.
    pub(crate) fn platform_gone(&self) {
        let handlers = self.end_with_platform();
        if !handlers.is_empty() {
            tokio::spawn(async move {
                for handler in handlers {
                    handler.endpoint_terminated().await;
                }
            });
        }
    }

    /// The platform began to shut down, and still sends what ends things: the endpoint
    /// ends as `terminate()` ends it (presence removed, unregistered, calls ended with BYE
    /// or CANCEL), before it lets go of its route (the shutdown waits for that). Without an
    /// owner struct to do so, the calls are ended as [`platform_gone`](Self::platform_gone)
    /// ends them, their handlers told here and now. A `terminate()` under way is waited for.
    pub(crate) async fn platform_stopping(&self) {
        match self.stop_hook.get().and_then(|hook| hook()) {
            Some(terminate) => terminate.await,
            None => {
                for handler in self.end_with_platform() {
                    handler.endpoint_terminated().await;
                }
            }
        }
        let mut state = self.watch_state();
        let _ = state
            .wait_for(|c| c.state != EndpointState::Terminating)
            .await;
    }

    /// Returns once no `establish()` is under way. One that is ends on its own once the
    /// endpoint is Terminating (its REGISTER refused, or granted and at once removed).
    pub(crate) async fn establish_ended(&self) {
        let mut establishing = self.establishing.subscribe();
        let _ = establishing.wait_for(|n| *n == 0).await;
    }

    /// Moves a live endpoint to Terminated "the platform shut down" and ends its handler
    /// streams and dialog routes, as after terminate() (readers of `incoming()` and dialog
    /// routes see the end instead of waiting for ever); returns the dialog handlers to
    /// tell, none if the endpoint was not live.
    fn end_with_platform(&self) -> Vec<Arc<dyn DialogHandler>> {
        let live = [
            EndpointState::Established,
            EndpointState::Reestablishing,
            EndpointState::Draining,
        ];
        if self
            .transition(&live, EndpointState::Terminated, "the platform shut down")
            .is_err()
        {
            return Vec::new();
        }
        self.begin_drain();
        self.close_routes()
    }

    pub(crate) fn begin_drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// How many dialog routes are live (calls and subscriptions).
    pub fn live_dialogs(&self) -> usize {
        self.lock_routes().dialogs.len()
    }

    fn target_of(&self, req: &IncomingRequest) -> Target {
        let r = req.request();
        let method = r.method().cloned();
        let to = r.to().ok();
        let to_tag = to.as_ref().and_then(|t| t.tag());
        let routes = self.lock_routes();
        if let Some(tag) = to_tag {
            let Ok(call_id) = r.call_id() else {
                return Target::Refuse(400, &[]);
            };
            // The key is built on the stack when it fits: this runs for every in-dialog
            // request.
            let mut stack = [0u8; 256];
            let target = match stack_route_key(&mut stack, call_id, tag) {
                Some(key) => routes.dialogs.get(key),
                None => routes.dialogs.get(
                    route_key(
                        &String::from_utf8_lossy(call_id),
                        &String::from_utf8_lossy(tag),
                    )
                    .as_str(),
                ),
            };
            return match target {
                Some(DialogTarget::Queue(tx)) => Target::Dialog(tx.clone()),
                Some(DialogTarget::Handler(h)) => Target::Handler(h.clone()),
                None => Target::Refuse(481, &[]),
            };
        }
        match method {
            Some(Method::Invite) => {
                if self.is_draining() {
                    return Target::Refuse(503, &[]);
                }
                // Without a body (delayed offer, RFC 3261 §13.2.1) the session is ours to
                // offer in the 2xx: instant messaging, the one kind this SDK offers.
                let modality = if req.body().is_empty() {
                    Some(Modality::InstantMessaging)
                } else {
                    Modality::of_offer(req.body())
                };
                match modality.and_then(|m| routes.sessions.get(&m)) {
                    Some(tx) => Target::Stream(tx.clone()),
                    None => Target::Refuse(488, &[]),
                }
            }
            Some(Method::Message) => match &routes.pages {
                Some(tx) => Target::Stream(tx.clone()),
                None => Target::Refuse(405, &[("Allow", ALLOW_WITHOUT_PAGES)]),
            },
            _ if routes.pages.is_some() => Target::Refuse(405, &[("Allow", ALLOW_WITH_PAGES)]),
            _ => Target::Refuse(405, &[("Allow", ALLOW_WITHOUT_PAGES)]),
        }
    }
}

/// The Allow of an endpoint's 405 (RFC 3261 §8.2.1): calls (an INVITE without a session
/// handler is answered 488, not 405), OPTIONS (the platform answers it for every
/// endpoint), and MESSAGE outside a call only when pages are taken.
const ALLOW_WITH_PAGES: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE";
/// [`ALLOW_WITH_PAGES`] for an endpoint that takes no pages.
const ALLOW_WITHOUT_PAGES: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS";

enum Target {
    Dialog(mpsc::Sender<Box<IncomingRequest>>),
    Handler(Arc<dyn DialogHandler>),
    Stream(mpsc::Sender<IncomingRequest>),
    Refuse(u16, &'static [(&'static str, &'static str)]),
}

/// Puts an endpoint whose `establish()` future was dropped half way back to Idle and
/// unroutes it, so that it can be established again: it stayed Establishing, and every
/// later `establish()` was refused. On every other way out of `establish()` the state has
/// left Establishing already, and this does nothing.
/// It also counts the `establish()` calls under way (see `EndpointCore::establishing`).
pub(crate) struct EstablishGuard<'a>(&'a EndpointCore);

impl<'a> EstablishGuard<'a> {
    pub(crate) fn new(core: &'a EndpointCore) -> Self {
        core.establishing.send_modify(|n| *n += 1);
        EstablishGuard(core)
    }
}

impl Drop for EstablishGuard<'_> {
    fn drop(&mut self) {
        let core = self.0;
        // Counted out whichever way this returns.
        let _done = Uncount(core);
        let cancelled = "establish() was cancelled";
        if core
            .transition(
                &[EndpointState::Establishing],
                EndpointState::Idle,
                cancelled,
            )
            .is_err()
        {
            return;
        }
        if let Some(id) = core.id.lock().unwrap_or_else(|p| p.into_inner()).take() {
            unregister_later(&core.platform, id);
        }
    }
}

/// Unroutes endpoint `id` from a task of its own (from a `Drop`, which cannot wait);
/// nothing outside a Tokio runtime.
fn unregister_later(platform: &CollaborationPlatform, id: EndpointId) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let platform = platform.clone();
        rt.spawn(async move { platform.unregister_endpoint(id).await });
    }
}

/// Takes one `establish()` off the count when dropped.
struct Uncount<'a>(&'a EndpointCore);

impl Drop for Uncount<'_> {
    fn drop(&mut self) {
        self.0
            .establishing
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// How the router learns that its endpoint was dropped without `terminate()`: the
/// state's sender lives in the core. It then ends, and its [`Unroute`] unroutes the
/// endpoint, or the task and the platform's route would stay until a request came for it.
struct Gone {
    state: watch::Receiver<StateChange>,
    platform: CollaborationPlatform,
}

/// Unroutes endpoint `id` when the router ends (again, when it did so itself: harmless).
struct Unroute {
    platform: CollaborationPlatform,
    id: EndpointId,
}

impl Drop for Unroute {
    fn drop(&mut self) {
        unregister_later(&self.platform, self.id);
    }
}

/// The router task: runs until the endpoint is dropped or detached.
/// Also hands the endings the platform announces for this endpoint's dialogs to their
/// handlers ([`DialogHandler::ended_by_platform`]).
async fn route(
    core: Weak<EndpointCore>,
    mut rx: mpsc::Receiver<IncomingRequest>,
    id: EndpointId,
    endings: broadcast::Receiver<DialogEnded>,
    mut gone: Gone,
) {
    let mut endings = Some(endings);
    // However the router ends (the endpoint found gone while delivering, a handler that
    // panicked), the platform lets go of the route: a shutdown waits for that.
    let _unroute = Unroute {
        platform: gone.platform.clone(),
        id,
    };
    // Made once, not per request: it holds a receiver of the platform's stopping watch.
    let platform = gone.platform.clone();
    let stopping = platform.stopping();
    tokio::pin!(stopping);
    loop {
        let next_ending = async {
            match endings.as_mut() {
                Some(e) => e.recv().await,
                None => std::future::pending().await,
            }
        };
        let req = tokio::select! {
            req = rx.recv() => match req {
                Some(req) => req,
                None => {
                    // The platform let go of the endpoint: unrouted by terminate() or a
                    // failed establish() (the state has moved on then), or shut down.
                    // A router left from an earlier establish() has nothing to say about
                    // the endpoint's current life.
                    if let Some(c) = core.upgrade().filter(|c| c.id().is_none_or(|now| now == id)) {
                        c.platform_gone();
                    }
                    return;
                }
            },
            ended = next_ending => {
                match ended {
                    Ok(e) if e.endpoint == Some(id) => on_ended(&core, e).await,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    // The platform is gone: requests end the loop, not endings.
                    Err(broadcast::error::RecvError::Closed) => endings = None,
                }
                continue;
            }
            () = &mut stopping => {
                // A shutdown began: the endpoint ends its calls while their BYEs can still
                // go, then lets go of its route (`_unroute`), which the shutdown waits for.
                if let Some(c) = core.upgrade().filter(|c| c.id().is_none_or(|now| now == id)) {
                    c.platform_stopping().await;
                }
                return;
            }
            changed = gone.state.changed() => {
                if changed.is_err() {
                    // The endpoint was dropped: `_unroute` lets go of its route.
                    return;
                }
                continue;
            }
        };
        if !deliver(&core, req).await {
            return;
        }
    }
}

/// The platform ended one of the endpoint's dialogs: its handler, if one is routed, is told.
async fn on_ended(core: &Weak<EndpointCore>, e: DialogEnded) {
    let Some(c) = core.upgrade() else { return };
    let key = route_key(
        &String::from_utf8_lossy(e.dialog.call_id()),
        &String::from_utf8_lossy(e.dialog.local_tag()),
    );
    let handler = match c.lock_routes().dialogs.get(key.as_str()) {
        Some(DialogTarget::Handler(h)) => Some(h.clone()),
        _ => None,
    };
    drop(c);
    if let Some(h) = handler {
        h.ended_by_platform(e.reason).await;
    }
}

/// Hands one request to whoever handles it; `false` once the endpoint is gone.
async fn deliver(core: &Weak<EndpointCore>, mut req: IncomingRequest) -> bool {
    {
        let Some(c) = core.upgrade() else {
            let _ = req.respond(480, "Temporarily Unavailable", &[], None).await;
            return false;
        };
        let target = c.target_of(&req);
        if req.request().method() == Some(&Method::Ack) {
            // An ACK the platform hands up carries an answer (or owes one): only the
            // dialog's own handler or route can use it; nothing answers it.
            drop(c);
            match target {
                Target::Handler(h) => h.ack(req).await,
                Target::Dialog(tx) => {
                    let _ = tx.try_send(Box::new(req));
                }
                Target::Stream(_) | Target::Refuse(..) => {}
            }
            return true;
        }
        let retry_after = c.retry_after;
        // Not kept across the await: the endpoint may go while a handler runs.
        drop(c);
        match target {
            Target::Handler(h) => h.handle(req).await,
            Target::Dialog(tx) => match tx.try_send(Box::new(req)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(mut req)) => {
                    let _ = req
                        .respond(
                            503,
                            "Service Unavailable (dialog queue full)",
                            &[("Retry-After", "1")],
                            None,
                        )
                        .await;
                }
                Err(mpsc::error::TrySendError::Closed(mut req)) => {
                    let _ = req
                        .respond(481, sip_core::reason_phrase(481), &[], None)
                        .await;
                }
            },
            Target::Stream(tx) => match tx.try_send(req) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(mut req)) => {
                    let _ = req
                        .respond(
                            503,
                            "Service Unavailable (dialog queue full)",
                            &[("Retry-After", "1")],
                            None,
                        )
                        .await;
                }
                Err(mpsc::error::TrySendError::Closed(mut req)) => {
                    let status = if req.request().to().ok().and_then(|t| t.tag()).is_some() {
                        481
                    } else {
                        480
                    };
                    let _ = req
                        .respond(status, sip_core::reason_phrase(status), &[], None)
                        .await;
                }
            },
            Target::Refuse(status, headers) => {
                debug!(status, "refused by the endpoint's router");
                let retry = retry_after.to_string();
                let mut h: Vec<(&str, &str)> = headers.to_vec();
                if status == 503 {
                    h.push((HeaderName::RetryAfter.as_str(), &retry));
                }
                let _ = req
                    .respond(status, sip_core::reason_phrase(status), &h, None)
                    .await;
            }
        }
    }
    true
}
