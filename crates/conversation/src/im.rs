//! Instant messaging: [`InstantMessagingCall`] (the INVITE dialog with an IM session,
//! `m=message … sip null`, as Lync / Skype for Business peers offer it) and
//! [`InstantMessagingFlow`] (messages inside it: MESSAGE requests with their delivery
//! outcome, received messages as a stream, typing indication per RFC 3994).
//!
//! One task per established call reads the dialog's requests (MESSAGE, BYE, re-INVITE,
//! INFO) and keeps the remote typing state; sending does not go through it.

use crate::composing::{ComposingState, IsComposing, ACTIVE_TIMEOUT_WITHOUT_REFRESH};
use crate::conversation::{Conversation, ConversationLink, ConversationState, TerminationReason};
use crate::error::{CallError, MessageError};
use crate::text_format;
use application_endpoint::{DialogGuard, DialogHandler};
use bytes::Bytes;
use collaboration_platform::{
    DialogEndReason, DialogId, Homing, IncomingRequest, InviteCanceller, InviteProgress,
    OutgoingRequest, RequestError,
};
use sip_core::sdp::offer_answer::intersect_accept_types;
use sip_core::sdp::{LocalCapabilities, MediaCapability, OfferAnswer, SessionDescription};
use sip_core::{HeaderName, Method};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use tracing::{debug, trace};

/// Content types this side takes in an IM session.
pub const ACCEPT_TYPES: [&str; 5] = [
    "text/plain",
    "text/html",
    "text/rtf",
    MULTIPART_ALTERNATIVE,
    crate::composing::CONTENT_TYPE,
];

/// Several forms of one message (RFC 2046 §5.1.4), as Lync / Skype for Business list it
/// in their accept-types: the richest form this side takes is delivered.
const MULTIPART_ALTERNATIVE: &str = "multipart/alternative";

/// The types of [`ACCEPT_TYPES`] delivered as messages.
const MESSAGE_TYPES: [&str; 3] = ["text/plain", "text/html", "text/rtf"];

/// The methods an IM call takes (`Allow`).
const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, MESSAGE, INFO, OPTIONS, UPDATE";

/// The extensions an IM call understands (`Supported`): the first message carried in the
/// INVITE (`Ms-Text-Format`, see [`text_format`](crate::text_format)).
const SUPPORTED: &str = "ms-text-format";

/// How long an accepted call without an offer waits for the ACK with the answer: beyond
/// the platform's own limit (64*T1, 32 s by default), after which it ends the dialog for a
/// missing ACK; this only bounds the wait should that news be lost.
const ANSWER_WAIT: Duration = Duration::from_secs(40);

/// Received messages queued per call before the peer is answered 503 (backpressure).
const RECEIVE_CAPACITY: usize = 1024;

/// Body bytes queued per call before the peer is answered 503: without it, a flow nobody
/// reads held 1024 bodies of up to 64 KiB each (64 MiB per call).
const RECEIVE_BYTES: usize = 1024 * 1024;

/// A message received in a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// Its Content-Type (`text/plain` for an empty body sent without one); of a
    /// `multipart/alternative` message, that of the form delivered.
    pub content_type: String,
    /// The body, as sent (of a `multipart/alternative` message, the form delivered,
    /// base64 decoded).
    pub body: Bytes,
}

impl ReceivedMessage {
    /// The message a body of `content_type` is, if its type is one delivered (a form of
    /// a `multipart/alternative` one, RFC 2046 §5.1.4): what else [`ACCEPT_TYPES`] has is
    /// not a message.
    pub(crate) fn taken(content_type: String, body: &Bytes) -> Option<ReceivedMessage> {
        let taken = |t: &str| MESSAGE_TYPES.iter().any(|m| m.eq_ignore_ascii_case(t));
        let base = content_type.split(';').next().unwrap_or("").trim();
        if base.eq_ignore_ascii_case(MULTIPART_ALTERNATIVE) {
            text_format::pick_alternative(&content_type, body, taken)
                .map(|(content_type, body)| ReceivedMessage { content_type, body })
        } else {
            taken(base).then(|| ReceivedMessage {
                content_type,
                body: body.clone(),
            })
        }
    }

    /// The body as text, read in the Content-Type's `charset` (UTF-8 when none is given;
    /// see [`text_format::decode_text`] for the charsets read and what is done with bytes
    /// that are not valid).
    pub fn text(&self) -> String {
        text_format::decode_text(&self.content_type, &self.body)
    }
}

/// What the call shares between its handle, its flow and its dialog handler: one lock
/// over all of it, so an idle call is one small allocation (the budget is 4 KiB per
/// idle conversation, both sides together).
#[derive(Debug)]
pub(crate) struct CallShared {
    /// The conversation, without its homing type: the call is also the dialog's route
    /// handler and the flow's sender, one allocation for the three.
    conversation: Arc<dyn ConversationLink>,
    inner: Mutex<CallInner>,
}

#[derive(Debug)]
struct CallInner {
    state: ConversationState,
    remote_typing: bool,
    /// This side's composing state as last told to the peer (RFC 3994 §3).
    local_active: bool,
    /// No more received messages are queued.
    inbox_closed: bool,
    /// Bumped whenever the remote typing deadline changes: a pending timer that sees
    /// another value does nothing.
    typing_generation: u32,
    /// Bumped on each local typing change: the pending idle timer checks it.
    local_generation: u32,
    leg: Leg,
    /// The dialog's route while the call is up; dropped when it ends.
    route: Option<DialogGuard>,
    /// The flow's reader waiting for a message (one reader: the flow's `recv` takes
    /// `&mut`).
    reader: Option<Waker>,
    /// What an idle call does not use, allocated when first needed.
    rare: Option<Box<Rare>>,
    /// The application's handles on the call ([`InstantMessagingCall`] and the
    /// [`MessageSender`] of its flow, clones included; see [`CallHandle`]): when the last
    /// one goes, nobody can read or end the call any more, so it ends.
    users: u32,
    /// This side's `o=` line over the call (RFC 3264 §5, §8).
    origin: SdpOrigin,
}

/// This side's `o=` session id and version over a call, and what the last SDP sent was:
/// RFC 3264 §8 has every SDP a party sends in a session carry the same session id, with
/// the version bumped when it differs from the previous one and kept when it does not.
/// A negotiator per exchange keeps the call small (an idle call holds no SDP); this
/// carries what must last across exchanges.
#[derive(Debug)]
struct SdpOrigin {
    /// The `o=` sess-id: random (RFC 8866 §5.2 wants it unique), below 2^63 for peers that
    /// read it as a signed 64-bit number.
    session_id: u64,
    /// A digest of the last SDP sent (made at version 0); 0 before the first (a digest of
    /// 0 is taken as 1).
    last: u64,
    /// The `o=` sess-version of the last SDP sent: 32 bits keep the call small, and 4
    /// billion changes of one call's SDP are not to be met (the version then stays).
    version: u32,
}

impl SdpOrigin {
    fn new() -> SdpOrigin {
        SdpOrigin {
            session_id: application_endpoint::ids::random() >> 1,
            last: 0,
            version: 0,
        }
    }

    /// Gives `sdp` (made by [`negotiator`] with this session id, so at version 0) the
    /// version it goes out with: the last one if it says the same as the last SDP sent,
    /// the next one if it does not.
    fn stamp(&mut self, mut sdp: SessionDescription) -> SessionDescription {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        sdp.to_bytes().hash(&mut hasher);
        let digest = hasher.finish().max(1);
        if self.last != 0 && self.last != digest {
            self.version = self.version.saturating_add(1);
        }
        self.last = digest;
        let mut origin = sdp.origin().clone();
        origin.session_version = u64::from(self.version);
        // Only fails for an origin that is not valid, which this one (the negotiator's
        // with another number) is: the SDP then keeps its own.
        let _ = sdp.set_origin(origin);
        sdp
    }
}

/// The INVITE's canceller while it rings, then the dialog: never both. Inline, not boxed:
/// a short-lived allocation per call amid long-lived ones costs more resident memory than
/// its size (allocator fragmentation).
#[derive(Debug, Clone)]
enum Leg {
    None,
    Ringing(InviteCanceller),
    Up(DialogId),
}

/// Received messages, watch channels and local typing.
#[derive(Debug, Default)]
struct Rare {
    /// Received messages until the flow reads them.
    /// Unboxed: a message costs no allocation of its own on the way in.
    inbox: VecDeque<ReceivedMessage>,
    /// Body bytes in `inbox`.
    inbox_bytes: usize,
    state: Option<watch::Sender<ConversationState>>,
    remote_typing: Option<watch::Sender<bool>>,
    last_active_sent: Option<std::time::Instant>,
    /// Why the call ended, once it has.
    ended_by: Option<TerminationReason>,
    /// The pending remote typing timer: aborted when the deadline changes, so a peer's
    /// stream of `active` documents (with refresh intervals of up to 136 years) leaves
    /// one sleeping task per call, not one per document.
    typing_timer: Option<tokio::task::AbortHandle>,
    /// Our offer in the 2xx to an INVITE or re-INVITE without one, until the ACK brings
    /// the answer.
    awaited_answer: Option<AwaitedAnswer>,
    /// The endpoint ended while `accept`'s 200 (with our offer) was going out: the BYE
    /// `endpoint_terminated` could not ask for yet is owed, and `accept` sends it once the
    /// 200 is out.
    bye_after_200: bool,
}

/// Our offer went in a 2xx (the INVITE or re-INVITE had none): the answer is owed in the
/// ACK (RFC 3261 §13.2.1, §14.2), and until it comes no new offer is taken.
#[derive(Debug)]
struct AwaitedAnswer {
    negotiator: OfferAnswer,
    /// The dialog of the 2xx: the ACK may be taken before `accept` gets to set it.
    dialog: DialogId,
    /// What `accept` returns; `None` for a re-INVITE of a call already up.
    done: Option<oneshot::Sender<Result<(), CallError>>>,
    /// `accept`'s 200 is out (set once `respond` returned): a BYE may be asked for now,
    /// the platform holding it until the ACK (RFC 3261 §15). Before, a BYE could reach
    /// the platform ahead of the 200 and find no dialog.
    sent: bool,
}

/// Why a received message was not queued.
enum PushError {
    /// The queue holds its capacity: the reader is behind.
    Full,
    /// The call ended.
    Closed,
}

impl CallInner {
    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }

    fn dialog(&self) -> Option<DialogId> {
        match &self.leg {
            Leg::Up(d) => Some(d.clone()),
            _ => None,
        }
    }

    fn set_remote_typing(&mut self, value: bool) {
        self.remote_typing = value;
        if let Some(tx) = self.rare.as_ref().and_then(|r| r.remote_typing.as_ref()) {
            tx.send_if_modified(|v| std::mem::replace(v, value) != value);
        }
    }
}

/// Whether a call may go from `from` to `to`: forward only, and nothing after
/// `Terminated`. Steps that race (the peer's BYE and the end of `accept`, a `terminate`
/// and the end of `establish`) then cannot take an ended call back to `Established`.
fn may_move(from: ConversationState, to: ConversationState) -> bool {
    fn rank(s: ConversationState) -> u8 {
        match s {
            ConversationState::Idle | ConversationState::Incoming => 0,
            ConversationState::Establishing => 1,
            ConversationState::Established => 2,
            ConversationState::Terminating => 3,
            ConversationState::Terminated => 4,
        }
    }
    from != ConversationState::Terminated && rank(to) >= rank(from)
}

fn send_watch<T: PartialEq>(tx: Option<&watch::Sender<T>>, value: T) {
    if let Some(tx) = tx {
        tx.send_if_modified(|v| {
            let changed = *v != value;
            *v = value;
            changed
        });
    }
}

impl CallShared {
    fn new(state: ConversationState, conversation: Arc<dyn ConversationLink>) -> Arc<CallShared> {
        Arc::new(CallShared {
            conversation,
            inner: Mutex::new(CallInner {
                state,
                remote_typing: false,
                local_active: false,
                inbox_closed: false,
                typing_generation: 0,
                local_generation: 0,
                leg: Leg::None,
                route: None,
                reader: None,
                rare: None,
                users: 0,
                origin: SdpOrigin::new(),
            }),
        })
    }

    /// An IM negotiator for this call's `o=` session id (see [`SdpOrigin`]).
    fn negotiator(&self) -> OfferAnswer {
        let session_id = self.lock().origin.session_id;
        negotiator(&sdp_host(self.conversation.endpoint()), session_id)
    }

    /// `sdp`, made by [`negotiator`](Self::negotiator), as it goes out: with the
    /// call's `o=` version (see [`SdpOrigin::stamp`]).
    fn stamp(&self, sdp: SessionDescription) -> SessionDescription {
        self.lock().origin.stamp(sdp)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CallInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dialog(&self) -> Option<DialogId> {
        self.lock().dialog()
    }

    /// Whether our 200 carried the offer and its ACK has not come yet.
    fn awaits_ack(&self) -> bool {
        self.lock()
            .rare
            .as_ref()
            .is_some_and(|r| r.awaited_answer.is_some())
    }

    fn set_dialog(&self, dialog: DialogId) {
        self.lock().leg = Leg::Up(dialog);
    }

    fn state(&self) -> ConversationState {
        self.lock().state
    }

    /// The call's and its conversation's state; at the end, the call lets go of its route
    /// and its messages' stream. A call only moves forward (see [`may_move`]): false, and
    /// nothing changed, when `s` would be a step back, e.g. `Established` after the
    /// peer's BYE already ended the call.
    fn set_state(&self, s: ConversationState) -> bool {
        self.transition(s, None)
    }

    /// Ends the established call in `dialog` with BYE (RFC 3261 §15.1.1); a dialog the
    /// peer no longer knows (481) is ended all the same.
    async fn hang_up(&self, dialog: &DialogId) -> Result<(), CallError> {
        self.set_state(ConversationState::Terminating);
        let r = self
            .conversation
            .endpoint()
            .platform()
            .send_in_dialog(dialog, OutgoingRequest::new(Method::Bye, ""))
            .await;
        self.end(TerminationReason::Local);
        self.set_remote_typing(false);
        match r {
            Ok(_) | Err(RequestError::NoDialog) => Ok(()),
            Err(RequestError::Status { code: 481, .. }) => Ok(()),
            Err(e) => Err(CallError::Request(e)),
        }
    }

    /// Ends the call for `reason` (kept only by the first end).
    fn end(&self, reason: TerminationReason) -> bool {
        self.transition(ConversationState::Terminated, Some(reason))
    }

    fn transition(&self, s: ConversationState, reason: Option<TerminationReason>) -> bool {
        self.transition_with(s, reason, |_| true)
    }

    /// As [`transition`](Self::transition), when `step` (run under the call's lock once
    /// the move is allowed, before it is made) agrees: what it checks or sets is one step
    /// with the move, no other handle sees the call in between.
    fn transition_with(
        &self,
        s: ConversationState,
        reason: Option<TerminationReason>,
        step: impl FnOnce(&mut CallInner) -> bool,
    ) -> bool {
        {
            let mut g = self.lock();
            if !may_move(g.state, s) || !step(&mut g) {
                return false;
            }
            g.state = s;
            if let Some(r) = reason {
                // Before the watch says Terminated, so a watcher finds the reason.
                g.rare().ended_by = Some(r);
            }
            send_watch(g.rare.as_ref().and_then(|r| r.state.as_ref()), s);
            // Under the call's lock: the conversation sees the call's steps in the order
            // they were taken.
            self.conversation.set_state(s);
        }
        if s == ConversationState::Terminated {
            // A call ended before its ACK came (BYE, no ACK at all): `accept` stops
            // waiting for the answer.
            let awaited = self
                .lock()
                .rare
                .as_mut()
                .and_then(|r| r.awaited_answer.take());
            drop(awaited);
            self.close_inbox();
            self.end_route();
            self.cancel_typing_deadline();
            self.set_remote_typing(false);
        }
        true
    }

    fn termination_reason(&self) -> Option<TerminationReason> {
        self.lock().rare.as_ref().and_then(|r| r.ended_by.clone())
    }

    fn subscribe_state(&self) -> watch::Receiver<ConversationState> {
        let mut g = self.lock();
        let value = g.state;
        g.rare()
            .state
            .get_or_insert_with(|| watch::Sender::new(value))
            .subscribe()
    }

    fn remote_typing(&self) -> bool {
        self.lock().remote_typing
    }

    fn set_remote_typing(&self, value: bool) {
        self.lock().set_remote_typing(value);
    }

    fn subscribe_remote_typing(&self) -> watch::Receiver<bool> {
        let mut g = self.lock();
        let value = g.remote_typing;
        g.rare()
            .remote_typing
            .get_or_insert_with(|| watch::Sender::new(value))
            .subscribe()
    }

    fn set_canceller(&self, c: Option<InviteCanceller>) {
        let mut g = self.lock();
        match c {
            Some(c) => g.leg = Leg::Ringing(c),
            None => {
                if matches!(g.leg, Leg::Ringing(_)) {
                    g.leg = Leg::None;
                }
            }
        }
    }

    fn canceller(&self) -> Option<InviteCanceller> {
        match &self.lock().leg {
            Leg::Ringing(c) => Some(c.clone()),
            _ => None,
        }
    }

    /// Queues a received message for the flow and wakes its reader.
    fn push(&self, item: ReceivedMessage) -> Result<(), PushError> {
        let reader = {
            let mut g = self.lock();
            if g.inbox_closed {
                return Err(PushError::Closed);
            }
            let rare = g.rare();
            let size = item.body.len();
            // One message is taken whatever its size: the limit bounds the backlog.
            if rare.inbox.len() >= RECEIVE_CAPACITY
                || (!rare.inbox.is_empty() && rare.inbox_bytes + size > RECEIVE_BYTES)
            {
                return Err(PushError::Full);
            }
            rare.inbox_bytes += size;
            rare.inbox.push_back(item);
            g.reader.take()
        };
        if let Some(w) = reader {
            w.wake();
        }
        Ok(())
    }

    /// No more messages after those queued.
    fn close_inbox(&self) {
        let reader = {
            let mut g = self.lock();
            g.inbox_closed = true;
            g.reader.take()
        };
        if let Some(w) = reader {
            w.wake();
        }
    }

    /// The next received message; `None` once closed and empty. Cancel safe: nothing is
    /// taken until it is returned.
    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<ReceivedMessage>> {
        let mut g = self.lock();
        if let Some(rare) = g.rare.as_mut() {
            if let Some(item) = rare.inbox.pop_front() {
                rare.inbox_bytes -= item.body.len();
                if rare.inbox.is_empty() && rare.inbox.capacity() > 64 {
                    rare.inbox.shrink_to(8);
                }
                return Poll::Ready(Some(item));
            }
        }
        if g.inbox_closed {
            return Poll::Ready(None);
        }
        match &mut g.reader {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Stops routing the dialog's requests here (later ones get 481) and, with the
    /// handler gone, ends the flow's stream.
    fn end_route(&self) {
        let guard = self.lock().route.take();
        drop(guard);
    }

    /// The peer's composing state goes idle at `until` unless refreshed (RFC 3994 §4);
    /// `None` cancels.
    fn typing_deadline(self: &Arc<Self>, until: Option<tokio::time::Instant>) {
        let generation = self.cancel_typing_deadline();
        let Some(until) = until else { return };
        let weak = Arc::downgrade(self);
        let timer = tokio::spawn(async move {
            tokio::time::sleep_until(until).await;
            if let Some(s) = weak.upgrade() {
                let mut g = s.lock();
                if g.typing_generation == generation {
                    g.set_remote_typing(false);
                }
            }
        })
        .abort_handle();
        let mut g = self.lock();
        if g.typing_generation == generation {
            g.rare().typing_timer = Some(timer);
        } else {
            // A later deadline (or the end of the call) got in first.
            timer.abort();
        }
    }

    /// Takes a MESSAGE: delivers it (or reads its typing state) and says how to answer,
    /// with the remote typing deadline that follows. Synchronous, so that the common case
    /// is answered without an `.await` (see `DialogHandler::handle` below).
    fn on_message(&self, req: &IncomingRequest) -> (Answer, Option<tokio::time::Instant>) {
        self.take_message(req.request().header(HeaderName::ContentType), req.body())
    }

    /// [`on_message`](Self::on_message) for a MESSAGE's Content-Type and body.
    fn take_message(
        &self,
        content_type: Option<&[u8]>,
        body: &Bytes,
    ) -> (Answer, Option<tokio::time::Instant>) {
        let content_type = match content_type {
            Some(v) => String::from_utf8_lossy(v).trim().to_string(),
            // RFC 3261 §20.15 (and RFC 3428 §4): a body says its type; an untyped one
            // cannot be taken for text.
            None if !body.is_empty() => {
                return (Answer::new(400, "Missing Content-Type header field"), None)
            }
            None => "text/plain".into(),
        };
        let base = content_type.split(';').next().unwrap_or("").trim();
        if base.eq_ignore_ascii_case(crate::composing::CONTENT_TYPE) {
            return match IsComposing::parse(body) {
                Ok(c) => {
                    let active = c.state == ComposingState::Active;
                    let typing_until = active.then(|| {
                        tokio::time::Instant::now()
                            + c.refresh_interval()
                                .map(|r| r + Duration::from_secs(5))
                                .unwrap_or(ACTIVE_TIMEOUT_WITHOUT_REFRESH)
                    });
                    self.set_remote_typing(active);
                    (Answer::OK, typing_until)
                }
                // A reason of our own: the error quotes the peer's bytes (CR/LF
                // included), which a status line cannot carry.
                Err(e) => {
                    debug!(error = %e, "malformed isComposing document");
                    (
                        Answer::new(400, "Bad Request (malformed isComposing)"),
                        None,
                    )
                }
            };
        }
        let Some(m) = ReceivedMessage::taken(content_type, body) else {
            let accept = Answer::new(415, "Unsupported Media Type")
                .with_header("Accept", ACCEPT_TYPES.join(", "));
            return (accept, None);
        };
        match self.push(m) {
            Ok(()) => {
                // A message ends the sender's composing state (RFC 3994 §3).
                self.set_remote_typing(false);
                (Answer::OK, None)
            }
            Err(PushError::Full) => (
                Answer::new(503, "Service Unavailable (message queue full)")
                    .with_header("Retry-After", "1"),
                None,
            ),
            Err(PushError::Closed) => (Answer::new(480, "Temporarily Unavailable"), None),
        }
    }

    /// One request of the dialog other than MESSAGE (which `DialogHandler::handle` takes
    /// through `on_message`); returns the end, or goes on. The dialog's requests come one
    /// at a time and a re-INVITE gets its final answer here before the next is read, so
    /// the 500 that RFC 3261 §14.2 owes an INVITE overlapping an unanswered one has no
    /// case to meet; only the ACK still owed after our 2xx can overlap (491 below).
    async fn handle_request(&self, mut req: IncomingRequest) -> Step {
        match req.request().method().cloned() {
            Some(Method::Bye) => {
                self.end(TerminationReason::Remote {
                    diagnostics: collaboration_platform::peer_diagnostics(req.request()),
                });
                self.set_remote_typing(false);
                let _ = req.respond(200, "OK", &[], None).await;
                return Step::End;
            }
            Some(method @ (Method::Invite | Method::Update)) => {
                let offer = !req.body().is_empty();
                if self.awaits_ack() && (offer || method == Method::Invite) {
                    // Our offer in a 2xx is not answered yet (its ACK has not come): no new
                    // offer may start before it is (RFC 3264 §4), and one that does is
                    // refused 491 Request Pending, as RFC 3311 §5.2 says for UPDATE; an
                    // offerless re-INVITE would need a second offer of ours, refused alike.
                    // The peer retries after a random delay (RFC 3261 §14.1).
                    let _ = req.respond(491, "Request Pending", &[], None).await;
                    return Step::Typing(None);
                }
                // A re-INVITE or UPDATE (session refresh or re-offer): answer with our
                // session. Both are target refresh requests: the 2xx carries our Contact.
                // A negotiator of the call's session: the answer or offer goes out with the
                // call's `o=` line, its version bumped if it differs from the last SDP sent.
                let mut negotiator = self.negotiator();
                let sdp = if offer {
                    // RFC 3311 §5.2 as RFC 3264: an offer in an UPDATE is answered in
                    // its 2xx too.
                    SessionDescription::parse_slice(req.body())
                        .ok()
                        .and_then(|o| negotiator.receive_offer(&o).ok())
                        .map(Some)
                        .ok_or(())
                } else if method == Method::Invite {
                    // RFC 3261 §14.2: without an offer (a session refresh from a B2BUA or
                    // session timer), the 2xx carries ours; the answer comes in the ACK.
                    negotiator.create_offer().map(Some).map_err(|_| ())
                } else {
                    // An UPDATE without an offer only refreshes.
                    Ok(None)
                };
                let contact = format!("<{}>", self.conversation.endpoint().contact());
                match sdp {
                    Ok(sdp) => {
                        let body = sdp.map(|s| ("application/sdp", self.stamp(s).to_bytes()));
                        // Our offer in the 2xx to an offerless re-INVITE: its ACK brings the
                        // answer (`DialogHandler::ack`). Set before the 2xx goes out.
                        let awaits = method == Method::Invite && !offer && body.is_some();
                        if let (true, Some(dialog)) = (awaits, req.dialog()) {
                            self.lock().rare().awaited_answer = Some(AwaitedAnswer {
                                negotiator,
                                dialog,
                                done: None,
                                sent: false,
                            });
                        }
                        let sent = req.respond(200, "OK", &[("Contact", &contact)], body).await;
                        if sent.is_err() && awaits {
                            // No 2xx went out (cancelled, shutting down): no ACK will come.
                            self.lock().rare().awaited_answer = None;
                        }
                    }
                    Err(()) => {
                        let _ = req.respond(488, "Not Acceptable Here", &[], None).await;
                    }
                }
            }
            Some(Method::Options) => {
                // RFC 3261 §11.2: what the call takes.
                let accept = ACCEPT_TYPES.join(", ");
                let h = [("Allow", ALLOW), ("Accept", accept.as_str())];
                let _ = req.respond(200, "OK", &h, None).await;
            }
            Some(Method::Info | Method::Notify) => {
                let _ = req.respond(200, "OK", &[], None).await;
            }
            _ => {
                let _ = req
                    .respond(405, "Method Not Allowed", &[("Allow", ALLOW)], None)
                    .await;
            }
        }
        Step::Typing(None)
    }

    /// Sends BYE in `dialog` from a task of its own: the dialog's handler must not wait
    /// for the BYE's answer (it runs on the endpoint's router), nor an `accept` that
    /// gave up on the ACK, nor the drop of the call's last handle. Outside a Tokio runtime
    /// (a handle dropped there) nothing is sent: the call still ends here, and the peer's
    /// next request in the dialog gets 481.
    fn bye_later(&self, dialog: DialogId) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            debug!("no runtime to send the BYE from: the call ends here only");
            return;
        };
        let platform = self.conversation.endpoint().platform().clone();
        runtime.spawn(async move {
            let bye = OutgoingRequest::new(Method::Bye, "");
            let _ = platform.send_in_dialog(&dialog, bye).await;
        });
    }

    /// Asks for BYE in `dialog` and returns once the platform has taken it (held there for
    /// the ACK of our 200 if one is owed), without waiting for the peer's answer: what an
    /// end of the endpoint, or `establish`/`accept` finding their call ended, sends, so that a platform shutdown asked once `terminate()`
    /// returned finds the BYE and lets it go within its grace period (sent from a task,
    /// it could come after the shutdown, and be refused).
    async fn bye_queued(&self, dialog: DialogId) {
        let platform = self.conversation.endpoint().platform();
        let bye = OutgoingRequest::new(Method::Bye, "");
        // The outcome is not awaited: a BYE nobody answers ends by its own Timer F.
        if let Err(e) = platform.queue_in_dialog(&dialog, bye).await {
            debug!(error = %e, "BYE not sent");
        }
    }

    /// The application let go of the call's last handle: nobody can read its messages or
    /// end it any more, while its route (which holds the call) would keep it answering the
    /// peer's MESSAGEs 200 for ever. Ends it as [`InstantMessagingCall::terminate`] would,
    /// without waiting: BYE for an established call, CANCEL for a ringing one (both from a
    /// task, when there is a runtime), and the route goes.
    fn abandoned(&self) {
        let (state, leg, awaits_ack) = {
            let g = self.lock();
            let awaits_ack = g.rare.as_ref().is_some_and(|r| r.awaited_answer.is_some());
            (g.state, g.leg.clone(), awaits_ack)
        };
        match state {
            // Nothing was sent: nothing to end (and the conversation keeps its state).
            ConversationState::Idle | ConversationState::Terminated => return,
            // An accept whose 200 carried our offer (its future dropped): the ACK's handler
            // sends the BYE, as after `terminate` (or the platform ends the dialog when no
            // ACK comes).
            ConversationState::Establishing | ConversationState::Terminating
                if awaits_ack && matches!(leg, Leg::None) =>
            {
                self.set_state(ConversationState::Terminating);
                return;
            }
            _ => {}
        }
        debug!("every handle of the call was dropped: ending it");
        match leg {
            Leg::Up(dialog) => {
                if self.end(TerminationReason::Local) {
                    self.bye_later(dialog);
                }
            }
            Leg::Ringing(canceller) => {
                // An `establish` dropped while the INVITE rings: the callee stops ringing.
                // A 2xx that comes once the CANCEL was asked is ACKed and ended with BYE
                // by the platform.
                cancel_later(canceller);
                self.end(TerminationReason::Local);
            }
            // Offered and neither accepted nor declined (the INVITE, dropped with it, is
            // answered by the platform), or dropped before its INVITE or 200 went out.
            Leg::None => {
                self.end(TerminationReason::Local);
            }
        }
    }

    /// Stops a pending remote typing timer; returns the new generation.
    fn cancel_typing_deadline(&self) -> u32 {
        let mut g = self.lock();
        g.typing_generation = g.typing_generation.wrapping_add(1);
        if let Some(timer) = g.rare.as_mut().and_then(|r| r.typing_timer.take()) {
            timer.abort();
        }
        g.typing_generation
    }

    /// Ends the call when the platform forgot its dialog (a 481 or 408 to a request in
    /// it, or no answer at all, RFC 3261 §12.2.1.2; after a 408 or no answer the platform
    /// also sent BYE): the peer's BYE, should it still come, is answered 481 by the
    /// platform and never reaches the call.
    fn dialog_gone(&self, status: u16, reason: impl Into<String>) {
        self.end(TerminationReason::DialogLost {
            status,
            reason: reason.into(),
        });
    }

    /// `ends_composing`: a message ends composing (RFC 3994 §3): no idle needs to follow.
    async fn send_raw(
        &self,
        content_type: &str,
        body: Bytes,
        ends_composing: bool,
    ) -> Result<(), MessageError> {
        let dialog = {
            let mut g = self.lock();
            if ends_composing {
                g.local_active = false;
                g.local_generation = g.local_generation.wrapping_add(1);
            }
            if matches!(
                g.state,
                ConversationState::Terminating | ConversationState::Terminated
            ) {
                return Err(MessageError::CallEnded);
            }
            g.dialog()
        };
        let Some(dialog) = dialog else {
            return Err(MessageError::CallEnded);
        };
        let req = OutgoingRequest::new(Method::Message, "").body(content_type, body);
        let platform = self.conversation.endpoint().platform();
        match platform.send_in_dialog(&dialog, req).await {
            Ok(_) => Ok(()),
            // Our own BYE, under way, may have removed the dialog: that is no lost dialog.
            Err(RequestError::NoDialog) if self.ended() => Err(MessageError::CallEnded),
            Err(RequestError::NoDialog) => {
                self.dialog_gone(481, "(the dialog was already gone here)");
                Err(MessageError::CallEnded)
            }
            Err(RequestError::Status { code: 481, .. }) if self.ended() => {
                Err(MessageError::CallEnded)
            }
            Err(e @ RequestError::Status { .. }) => {
                if let RequestError::Status {
                    code: code @ (481 | 408),
                    reason,
                    ..
                } = &e
                {
                    self.dialog_gone(*code, reason.clone());
                }
                Err(MessageError::from_request(e))
            }
            Err(RequestError::Timeout) if self.ended() => Err(MessageError::CallEnded),
            Err(RequestError::Timeout) => {
                self.dialog_gone(408, "(no answer: the transaction timed out)");
                Err(MessageError::Request(RequestError::Timeout))
            }
            Err(RequestError::Shutdown) if self.ended() => Err(MessageError::CallEnded),
            Err(e) => Err(MessageError::Request(e)),
        }
    }

    fn ended(&self) -> bool {
        matches!(
            self.state(),
            ConversationState::Terminating | ConversationState::Terminated
        )
    }
}

/// One of the application's handles on a call: [`InstantMessagingCall`] and
/// [`MessageSender`] (so [`InstantMessagingFlow`]) hold one each. The call's route holds
/// the call (the endpoint's router owns an `Arc<CallShared>`) and the call holds its
/// route, so without a count of its own a call whose handles were all dropped stayed
/// routed for ever, answering the peer's messages 200 into a queue nobody reads. When the
/// last handle goes the call ends ([`CallShared::abandoned`]). What the crate holds for
/// itself (the route, timers) is a plain `Arc` or `Weak`, not one of these.
struct CallHandle(Arc<CallShared>);

impl CallHandle {
    fn new(shared: Arc<CallShared>) -> CallHandle {
        {
            let mut g = shared.lock();
            g.users = g.users.saturating_add(1);
        }
        CallHandle(shared)
    }
}

impl Clone for CallHandle {
    fn clone(&self) -> Self {
        CallHandle::new(self.0.clone())
    }
}

impl Drop for CallHandle {
    fn drop(&mut self) {
        let last = {
            let mut g = self.0.lock();
            g.users = g.users.saturating_sub(1);
            g.users == 0
        };
        if last {
            self.0.abandoned();
        }
    }
}

impl std::ops::Deref for CallHandle {
    type Target = Arc<CallShared>;

    fn deref(&self) -> &Arc<CallShared> {
        &self.0
    }
}

/// An instant-messaging call in a [`Conversation`]. Dropping its last handle (this, its
/// clones, and the flow with its senders) ends the call as
/// [`terminate`](Self::terminate) would, without waiting: BYE, or CANCEL while it rings.
pub struct InstantMessagingCall<H: Homing> {
    conversation: Conversation<H>,
    shared: CallHandle,
}

impl<H: Homing> Clone for InstantMessagingCall<H> {
    fn clone(&self) -> Self {
        InstantMessagingCall {
            conversation: self.conversation.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<H: Homing> std::fmt::Debug for InstantMessagingCall<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstantMessagingCall")
            .field("conversation", &self.conversation.id())
            .field("state", &self.shared.state())
            .finish_non_exhaustive()
    }
}

/// Cancels a ringing INVITE from a task of its own, as [`CallShared::bye_later`] sends
/// BYE (nothing is sent outside a Tokio runtime).
fn cancel_later(canceller: InviteCanceller) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move { canceller.cancel().await });
    }
}

/// The IM session offer: `m=message 5060 sip null` with our accept-types, in the
/// session `session_id` (`o=`, see [`SdpOrigin`]).
fn negotiator(host: &str, session_id: u64) -> OfferAnswer {
    OfferAnswer::new(
        LocalCapabilities::new(host.to_string())
            .with_media(MediaCapability::message(5060, ACCEPT_TYPES)),
        session_id.to_string(),
    )
}

/// Takes `body` as the answer to the IM offer pending in `negotiator` (RFC 3264 §6–7): it
/// must keep an IM session (an `m=message` line not rejected) whose accept-types meet ours
/// (none listed: any). The reason when it does not.
fn take_im_answer(negotiator: &mut OfferAnswer, body: &[u8]) -> Result<(), String> {
    if body.is_empty() {
        return Err("no answer came to our offer".into());
    }
    let answer = SessionDescription::parse_slice(body)
        .map_err(|e| format!("the answer is not valid SDP: {e}"))?;
    negotiator
        .receive_answer(&answer)
        .map_err(|e| format!("the answer does not fit the offer: {e}"))?;
    let ours: Vec<String> = ACCEPT_TYPES.iter().map(|t| t.to_string()).collect();
    let usable = answer.media().iter().any(|m| {
        let mut types = m.accept_types();
        if types.is_empty() {
            types = answer.accept_types();
        }
        m.media_type().eq_ignore_ascii_case("message")
            && !m.is_rejected()
            && (types.is_empty() || !intersect_accept_types(&types, &ours).is_empty())
    });
    if usable {
        Ok(())
    } else {
        Err("the answer has no IM session".into())
    }
}

fn sdp_host(core: &application_endpoint::EndpointCore) -> String {
    core.platform()
        .own_uri()
        .trim_start_matches("sip:")
        .to_string()
}

impl<H: Homing> InstantMessagingCall<H> {
    pub(crate) fn outgoing(conversation: Conversation<H>) -> Self {
        InstantMessagingCall {
            shared: CallHandle::new(CallShared::new(
                ConversationState::Idle,
                conversation.link(),
            )),
            conversation,
        }
    }

    /// The conversation the call belongs to.
    pub fn conversation(&self) -> &Conversation<H> {
        &self.conversation
    }

    /// The call's state.
    pub fn state(&self) -> ConversationState {
        self.shared.state()
    }

    /// Watches the call's state.
    pub fn watch_state(&self) -> watch::Receiver<ConversationState> {
        self.shared.subscribe_state()
    }

    fn set_state(&self, s: ConversationState) -> bool {
        self.shared.set_state(s)
    }

    /// Ends the call, never established, with `e`; returns `e`.
    fn fail(&self, e: CallError) -> CallError {
        self.shared
            .end(TerminationReason::NotEstablished(e.clone()));
        e
    }

    /// Why the call ended; `None` while it is not over. When several things end it at
    /// once (the peer's BYE crossing this side's), the first one to be processed is kept.
    pub fn termination_reason(&self) -> Option<TerminationReason> {
        self.shared.termination_reason()
    }

    /// Whether the peer's BYE ended the call.
    fn ended_by_peer(&self) -> bool {
        matches!(
            self.termination_reason(),
            Some(TerminationReason::Remote { .. })
        )
    }

    /// The dialog, once established.
    pub fn dialog(&self) -> Option<DialogId> {
        self.shared.dialog()
    }

    /// Places the call: INVITE with an IM session offer. Resolves when it is answered
    /// (the flow is ready), declined, cancelled ([`cancel`](Self::cancel)) or times out.
    /// A callee that hangs up right after answering still gives the flow: it yields the
    /// messages the callee sent, then ends ([`termination_reason`](Self::termination_reason)
    /// says why).
    ///
    /// Cancel safety: not cancel safe: dropping the future leaves the INVITE running; use
    /// [`cancel`](Self::cancel).
    pub async fn establish(&self) -> Result<InstantMessagingFlow, CallError> {
        self.establish_inner(None, None).await
    }

    /// As [`establish`](Self::establish), giving up when nobody answers within
    /// `ring_timeout`: the INVITE is cancelled (RFC 3261 §9; the CANCEL goes out once the
    /// callee has sent a provisional response) and the call fails with
    /// [`CallError::NoAnswer`]. An answer that races the CANCEL is ended with BYE. Without
    /// this, an INVITE nobody answers lasts until Timer B (64·T1, 32 s) if no provisional
    /// response came, and until a final response otherwise: RFC 3261 gives a ringing client
    /// INVITE no timer of its own, and only a proxy's (Timer C, over 3 minutes) ends it.
    ///
    /// Cancel safety: as [`establish`](Self::establish).
    pub async fn establish_within(
        &self,
        ring_timeout: std::time::Duration,
    ) -> Result<InstantMessagingFlow, CallError> {
        self.establish_inner(None, Some(ring_timeout)).await
    }

    /// As [`establish`](Self::establish), carrying `text` as the first message in the
    /// INVITE (`Ms-Text-Format`), the way Lync / Skype for Business clients open an IM
    /// conversation; the callee sees it before accepting.
    ///
    /// Cancel safety: as [`establish`](Self::establish).
    pub async fn establish_with_message(
        &self,
        text: &str,
    ) -> Result<InstantMessagingFlow, CallError> {
        self.establish_inner(Some(text), None).await
    }

    async fn establish_inner(
        &self,
        first: Option<&str>,
        ring_timeout: Option<std::time::Duration>,
    ) -> Result<InstantMessagingFlow, CallError> {
        if self.state() != ConversationState::Idle {
            return Err(CallError::InvalidState(self.state()));
        }
        let core = self.conversation.endpoint().clone();
        let endpoint = core.established_id()?;
        self.set_state(ConversationState::Establishing);
        let call_id = application_endpoint::ids::call_id();
        let tag = application_endpoint::ids::tag();
        if !self.route(&call_id, &tag) {
            // `terminate` came first: no INVITE goes out.
            return Err(CallError::Ended);
        }
        let (from, pai) = self.conversation.identity_headers(&tag);
        let remote = self.conversation.remote().uri().to_string();
        let mut negotiator = self.shared.negotiator();
        let offer = match negotiator.create_offer() {
            Ok(o) => self.shared.stamp(o),
            Err(e) => return Err(self.fail(CallError::NotAcceptable(e.to_string()))),
        };
        let mut req = OutgoingRequest::new(Method::Invite, remote.clone())
            .from(from)
            .to(format!("<{remote}>"))
            .call_id(call_id)
            .header("Contact", format!("<{}>", core.contact()))
            // What can be sent in the call (RFC 3261 §13.2.1: SHOULD be in an INVITE).
            .header("Allow", ALLOW)
            .header("Supported", SUPPORTED)
            .body("application/sdp", offer.to_bytes());
        for (n, v) in self.conversation.conversation_headers() {
            req = req.header(n, v);
        }
        if let Some(p) = pai {
            req = req.header("P-Asserted-Identity", p);
        }
        if let Some(t) = first {
            req = req.header(
                text_format::HEADER,
                text_format::encode("text/plain", t.as_bytes()),
            );
        }
        let mut invite = match core.invite(endpoint, req).await {
            Ok(i) => i,
            Err(e) => return Err(self.fail(e.into())),
        };
        self.shared.set_canceller(Some(invite.canceller()));
        if self.state() == ConversationState::Terminated {
            // `terminate` came while the INVITE was being sent, with nothing to cancel
            // yet: the callee stops ringing all the same.
            invite.canceller().cancel().await;
        }
        let deadline = ring_timeout.map(|d| tokio::time::Instant::now() + d);
        let mut unanswered = false;
        // What the call ends with when it was cancelled: by the application, or by the
        // ring timeout.
        let cancelled = |unanswered: bool| {
            if unanswered {
                CallError::NoAnswer
            } else {
                CallError::Cancelled
            }
        };
        let outcome = loop {
            let next = match deadline {
                Some(at) if !unanswered => match tokio::time::timeout_at(at, invite.next()).await {
                    Ok(next) => next,
                    Err(_) => {
                        debug!("IM call not answered in time: cancelling");
                        unanswered = true;
                        self.set_state(ConversationState::Terminating);
                        invite.canceller().cancel().await;
                        continue;
                    }
                },
                _ => invite.next().await,
            };
            match next {
                Some(InviteProgress::Provisional(p)) => {
                    debug!(status = p.status(), "IM call progress");
                }
                Some(InviteProgress::Answered { response, dialog }) => {
                    break Ok((response, dialog));
                }
                Some(InviteProgress::Failed(e)) => break Err(e),
                None => break Err(RequestError::Shutdown),
            }
        };
        self.shared.set_canceller(None);
        let (response, dialog) = match outcome {
            Ok(x) => x,
            Err(RequestError::Cancelled) => return Err(self.fail(cancelled(unanswered))),
            Err(e) => return Err(self.fail(e.into())),
        };
        self.shared.set_dialog(dialog.clone());
        trace!("IM call answered");
        match self.state() {
            // The peer's BYE came right after its 2xx (and its messages) and was taken
            // first: the 2xx confirmed the dialog (RFC 3261 §12.1.2), so a usable answer
            // makes the call established, and ended since; the flow yields what the peer
            // sent, then ends with its reason.
            ConversationState::Terminated if self.ended_by_peer() => {
                return match take_im_answer(&mut negotiator, response.body()) {
                    Ok(()) => Ok(self.flow()),
                    Err(_) => Err(CallError::Ended),
                };
            }
            // A `terminate` ended the call before the INVITE was out (it had nothing to
            // cancel), and the call the 2xx made is ended here.
            ConversationState::Terminated => {
                if matches!(self.termination_reason(), Some(TerminationReason::Local)) {
                    self.shared.bye_queued(dialog).await;
                }
                return Err(CallError::Ended);
            }
            // A cancel that came after the platform took the 2xx: the call is up, so end it.
            // (One the platform had before the 2xx ends with BYE there: `Cancelled` above.)
            ConversationState::Terminating => {
                let _ = core
                    .platform()
                    .send_in_dialog(&dialog, OutgoingRequest::new(Method::Bye, ""))
                    .await;
                return Err(self.fail(cancelled(unanswered)));
            }
            _ => {}
        }
        if let Err(reason) = take_im_answer(&mut negotiator, response.body()) {
            // RFC 3261 §13.2.2.4: an unacceptable answer is ended with BYE.
            let _ = core
                .platform()
                .send_in_dialog(&dialog, OutgoingRequest::new(Method::Bye, ""))
                .await;
            return Err(self.fail(CallError::NotAcceptable(reason)));
        }
        // Refused when the peer's BYE or a `terminate` got in first: the call stays over.
        // After the peer's BYE the call was established all the same (above).
        if !self.set_state(ConversationState::Established) && !self.ended_by_peer() {
            return Err(CallError::Ended);
        }
        Ok(self.flow())
    }

    /// Routes the dialog's requests to this call (before the INVITE or its answer goes
    /// out, so nothing that follows is missed). False, and no route, when the call ended
    /// meanwhile (`terminate`): a route set on an ended call would hold it for ever.
    #[must_use]
    fn route(&self, call_id: &str, local_tag: &str) -> bool {
        let guard =
            self.conversation
                .endpoint()
                .route_dialog_to(call_id, local_tag, self.shared.0.clone());
        let mut g = self.shared.lock();
        if g.state == ConversationState::Terminated {
            drop(g);
            // Outside the call's lock: dropping the route drops the router's hold on
            // the call.
            drop(guard);
            return false;
        }
        g.route = Some(guard);
        true
    }

    fn flow(&self) -> InstantMessagingFlow {
        InstantMessagingFlow {
            sender: MessageSender {
                call: self.shared.clone(),
            },
        }
    }

    /// Cancels the call while it rings (RFC 3261 §9). If the answer wins the race the
    /// call is ended with BYE; [`establish`](Self::establish) then fails with
    /// [`CallError::Cancelled`] either way.
    ///
    /// Cancel safety: cancel safe.
    pub async fn cancel(&self) {
        let canceller = self.shared.canceller();
        if let Some(c) = canceller {
            self.set_state(ConversationState::Terminating);
            c.cancel().await;
        }
    }

    /// Ends the call: with BYE once established (messages in flight then get their
    /// outcome: delivered, or [`MessageError::CallEnded`]); while an outgoing call still
    /// rings, with CANCEL as [`cancel`](Self::cancel) does (RFC 3261 §9.1), so the callee
    /// stops ringing. An accepted call whose offer went in the 200 and whose ACK has not
    /// come yet is left `Terminating`: the BYE follows the ACK (RFC 3261 §15), or the
    /// platform ends the dialog when no ACK comes. An offered call not accepted yet ends
    /// here: its INVITE, held by the [`IncomingCall`](crate::IncomingCall), is declined
    /// 603 by a later `accept` (which fails with [`CallError::Ended`]) or by `decline`;
    /// one being accepted is ended with BYE once the 200 is out.
    ///
    /// Cancel safety: not cancel safe (the BYE may be sent with its answer lost; the call
    /// is over either way).
    pub async fn terminate(&self) -> Result<(), CallError> {
        if self.shared.ended() {
            return Ok(());
        }
        let Some(dialog) = self.dialog() else {
            if self.shared.canceller().is_some() {
                self.cancel().await;
                return Ok(());
            }
            if self.shared.awaits_ack() {
                self.set_state(ConversationState::Terminating);
                return Ok(());
            }
            self.shared.end(TerminationReason::Local);
            return Ok(());
        };
        self.shared.hang_up(&dialog).await
    }

    /// Accepts an incoming INVITE `req` for this call (UAS side). An INVITE without an
    /// offer gets ours in the 200 (RFC 3261 §13.3.1.4), and the call is up once the ACK
    /// brings an answer that keeps the IM session.
    ///
    /// Only an offered call is accepted: one ended meanwhile (`terminate` through
    /// [`IncomingCall::call`](crate::IncomingCall::call)) has its INVITE declined 603 and
    /// fails with [`CallError::Ended`]; a 200 would give the caller a call nobody holds.
    /// A `terminate` that races the 200 is followed by BYE.
    pub(crate) async fn accept_incoming(
        &self,
        mut req: IncomingRequest,
        first: Option<ReceivedMessage>,
    ) -> Result<InstantMessagingFlow, CallError> {
        let core = self.conversation.endpoint().clone();
        let Some(dialog) = req.dialog() else {
            return Err(CallError::InvalidState(self.state()));
        };
        if self.state() != ConversationState::Incoming {
            return Err(self.refuse_ended(&mut req).await);
        }
        let mut negotiator = self.shared.negotiator();
        let delayed_offer = req.body().is_empty();
        let sdp = if delayed_offer {
            negotiator.create_offer().ok()
        } else {
            SessionDescription::parse_slice(req.body())
                .ok()
                .and_then(|o| negotiator.receive_offer(&o).ok())
        };
        let Some(answer) = sdp.map(|s| self.shared.stamp(s)) else {
            let _ = req.respond(488, "Not Acceptable Here", &[], None).await;
            return Err(self.fail(CallError::NotAcceptable(
                "the offer has no IM session in common".into(),
            )));
        };
        // From offered to being accepted in one step: a `terminate` is either before it
        // (refused here) or after it (seen below).
        let offered = |g: &mut CallInner| g.state == ConversationState::Incoming;
        if !self
            .shared
            .transition_with(ConversationState::Establishing, None, offered)
        {
            return Err(self.refuse_ended(&mut req).await);
        }
        let call_id = String::from_utf8_lossy(dialog.call_id()).into_owned();
        if let Some(m) = first {
            let _ = self.shared.push(m);
        }
        if !self.route(&call_id, req.local_tag()) {
            return Err(self.refuse_ended(&mut req).await);
        }
        // Before the 200 goes out: its ACK may be taken before `respond` returns. Not on a
        // call a `terminate` ended meanwhile (no ACK would reach it).
        let answered = if delayed_offer {
            let (done, answered) = oneshot::channel();
            let awaited = AwaitedAnswer {
                negotiator,
                dialog: dialog.clone(),
                done: Some(done),
                sent: false,
            };
            let set = {
                let mut g = self.shared.lock();
                let set = g.state == ConversationState::Establishing;
                if set {
                    g.rare().awaited_answer = Some(awaited);
                }
                set
            };
            if !set {
                return Err(self.refuse_ended(&mut req).await);
            }
            Some(answered)
        } else if self.state() != ConversationState::Establishing {
            return Err(self.refuse_ended(&mut req).await);
        } else {
            None
        };
        let contact = format!("<{}>", core.contact());
        // Allow and Supported SHOULD be in the 2xx too (RFC 3261 §13.3.1.4).
        let mut headers: Vec<(&str, String)> = vec![
            ("Contact", contact),
            ("Allow", ALLOW.into()),
            ("Supported", SUPPORTED.into()),
        ];
        headers.extend(self.conversation.conversation_headers());
        let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        if let Err(e) = req
            .respond(200, "OK", &h, Some(("application/sdp", answer.to_bytes())))
            .await
        {
            return Err(self.fail(match e {
                collaboration_platform::RespondError::Cancelled => CallError::Cancelled,
                collaboration_platform::RespondError::Shutdown => {
                    CallError::Request(RequestError::Shutdown)
                }
                e => CallError::Request(RequestError::Invalid(e.to_string())),
            }));
        }
        trace!(%call_id, "IM call accepted: the 200 is out");
        if let Some(answered) = answered {
            // The 200 is out: from now on an end of the endpoint asks for the BYE itself
            // (held by the platform until the ACK). One that came while the 200 was going
            // out left the BYE to be sent here.
            let owed = {
                let mut g = self.shared.lock();
                let rare = g.rare();
                match rare.awaited_answer.as_mut() {
                    Some(awaited) => {
                        awaited.sent = true;
                        false
                    }
                    None => std::mem::take(&mut rare.bye_after_200),
                }
            };
            if owed {
                self.shared.bye_queued(dialog).await;
                return Err(CallError::Ended);
            }
            return self.established_by_ack(answered, dialog).await;
        }
        // The dialog is known to the call with the step to Established, so a `terminate`
        // sees either an established call (and sends BYE) or one not up yet (and ends it
        // here only: the BYE is then sent below).
        let up = self
            .shared
            .transition_with(ConversationState::Established, None, |g| {
                g.leg = Leg::Up(dialog.clone());
                true
            });
        if !up {
            return match self.termination_reason() {
                // The caller may send BYE (after its messages) as soon as it has the 200,
                // and the dialog's handler may take it before this step. The call was
                // accepted all the same (RFC 3261 §12.1.1: the 2xx confirmed the dialog),
                // and what the caller sent was answered 200: the flow yields it, then
                // ends with the caller's reason.
                Some(TerminationReason::Remote { .. }) => Ok(self.flow()),
                // A `terminate` that came while the 200 was going out ended the call here
                // only: the caller, who has the 200, is told with BYE (sent once the ACK
                // came, by the platform); so after an end of the endpoint in that window,
                // which found no dialog to end.
                Some(TerminationReason::Local | TerminationReason::EndpointTerminated) => {
                    self.shared.bye_queued(dialog).await;
                    Err(CallError::Ended)
                }
                _ => Err(CallError::Ended),
            };
        }
        Ok(self.flow())
    }

    /// Answers the INVITE of an offered call that ended before it was accepted (a
    /// `terminate` through [`IncomingCall::call`](crate::IncomingCall::call)): 603 Decline,
    /// unless it was answered already (the caller cancelled). Returns the error `accept`
    /// fails with.
    async fn refuse_ended(&self, req: &mut IncomingRequest) -> CallError {
        let _ = req.respond(603, "Decline", &[], None).await;
        CallError::Ended
    }

    /// The end of accepting a call whose offer went in the 200: the dialog's handler takes
    /// the ACK (`DialogHandler::ack`) and settles the call; this waits for that.
    async fn established_by_ack(
        &self,
        answered: oneshot::Receiver<Result<(), CallError>>,
        dialog: DialogId,
    ) -> Result<InstantMessagingFlow, CallError> {
        match tokio::time::timeout(ANSWER_WAIT, answered).await {
            Ok(Ok(Ok(()))) => Ok(self.flow()),
            Ok(Ok(Err(e))) => Err(e),
            // Ended before the ACK: the peer's BYE, or the platform found no ACK.
            Ok(Err(_)) => Err(CallError::Ended),
            Err(_) => {
                let e = self.fail(CallError::Request(RequestError::Timeout));
                self.shared.bye_queued(dialog).await;
                Err(e)
            }
        }
    }

    pub(crate) fn incoming(conversation: Conversation<H>) -> Self {
        conversation.set_state(ConversationState::Incoming);
        InstantMessagingCall {
            shared: CallHandle::new(CallShared::new(
                ConversationState::Incoming,
                conversation.link(),
            )),
            conversation,
        }
    }

    pub(crate) fn declined(&self) {
        self.shared.end(TerminationReason::Local);
    }
}

#[async_trait::async_trait]
impl DialogHandler for CallShared {
    async fn handle(self: Arc<Self>, mut request: IncomingRequest) {
        // The common case, a MESSAGE answered while the platform's queue has room, runs
        // without an `.await`: this future (allocated per request) then holds little more
        // than the request, and the rest runs in a separately boxed future.
        let step = match request.request().method() {
            Some(Method::Message) => {
                let (answer, typing) = self.on_message(&request);
                if !answer.send_now(&mut request) {
                    Box::pin(answer.send(&mut request)).await;
                }
                Step::Typing(typing)
            }
            _ => Box::pin(self.handle_request(request)).await,
        };
        match step {
            Step::Typing(t) => {
                if t.is_some() || !self.remote_typing() {
                    self.typing_deadline(t);
                }
            }
            Step::End => self.end_route(),
        }
    }

    /// The ACK of our 2xx that carried the offer (to an INVITE or re-INVITE without one):
    /// its answer settles the session. Without an answer, or with one that drops the IM
    /// session, there is no session (RFC 3261 §13.3.1.4 put our offer in the 2xx, §13.2.1
    /// owes the answer in its ACK, for a re-INVITE too, §14.2; in RFC 3264 §6 a port of 0
    /// rejects the stream, here the only one): the call ends, with BYE (RFC 3261 §15, sent
    /// once the ACK came) rather than staying up with nothing negotiated, as §13.2.2.4 has
    /// a UAC do with an offer it cannot take.
    async fn ack(self: Arc<Self>, ack: IncomingRequest) {
        let awaited = self
            .lock()
            .rare
            .as_mut()
            .and_then(|r| r.awaited_answer.take());
        let Some(mut awaited) = awaited else { return };
        let taken = take_im_answer(&mut awaited.negotiator, ack.body());
        let Some(done) = awaited.done else {
            // A re-INVITE's: the call stays up with a usable answer. A `terminate` under
            // way sends its own BYE.
            if let Err(reason) = taken {
                if self.ended() {
                    return;
                }
                debug!(%reason, "no usable answer in the re-INVITE's ACK: ending the call with BYE");
                let e = CallError::NotAcceptable(reason);
                if self.end(TerminationReason::Renegotiation(e)) {
                    self.bye_later(awaited.dialog);
                }
            }
            return;
        };
        // `terminate` came while the ACK was awaited: the BYE it held back goes now.
        let hang_up = self.state() == ConversationState::Terminating;
        match taken {
            Ok(()) if hang_up => {
                self.end(TerminationReason::Local);
                let _ = done.send(Err(CallError::Ended));
                self.bye_later(awaited.dialog);
            }
            Ok(()) => {
                // The dialog is known to the call with the step to Established, so an end
                // sees either a call that is up (and sends BYE) or one that is not.
                let up = self.transition_with(ConversationState::Established, None, |g| {
                    g.leg = Leg::Up(awaited.dialog.clone());
                    true
                });
                // Refused when the peer's BYE or an end of ours got in first. Ours found
                // neither a dialog nor the ACK awaited (taken here), so sent nothing: the
                // BYE goes from here.
                if !up
                    && matches!(
                        self.termination_reason(),
                        Some(TerminationReason::Local | TerminationReason::EndpointTerminated)
                    )
                {
                    self.bye_later(awaited.dialog);
                }
                let _ = done.send(if up { Ok(()) } else { Err(CallError::Ended) });
            }
            Err(reason) => {
                debug!(%reason, "no usable answer in the ACK: ending the call with BYE");
                let e = CallError::NotAcceptable(reason);
                self.end(TerminationReason::NotEstablished(e.clone()));
                let _ = done.send(Err(e));
                self.bye_later(awaited.dialog);
            }
        }
    }

    /// The platform ended the call's dialog itself (no ACK for our 2xx, ...): the call
    /// ends, or it would look established for ever.
    async fn ended_by_platform(self: Arc<Self>, reason: DialogEndReason) {
        self.end(TerminationReason::EndedByPlatform(reason));
        self.end_route();
    }

    /// The endpoint ended under the call: it ends too, and the peer is told (BYE for a
    /// call that is up, CANCEL for one still ringing), or the call looked established for
    /// ever on both sides. The BYE is handed to the platform before this returns (so a
    /// platform shutdown asked after `terminate()` lets it go) and the CANCEL from a task,
    /// neither waited for: the endpoint's end does not wait for the peer. A callee whose
    /// 200 carried the offer and is still owed its ACK ends here at once, and its BYE is
    /// asked for all the same: the platform holds it until the ACK comes (RFC 3261 §15),
    /// or sends it when it gives up on the ACK after 64·T1. (The endpoint's route, and
    /// with it the ACK, no longer reaches the call.)
    async fn endpoint_terminated(self: Arc<Self>) {
        let mut leg = Leg::None;
        let mut awaited = None;
        let ended = self.transition_with(
            ConversationState::Terminated,
            Some(TerminationReason::EndpointTerminated),
            |g| {
                leg = g.leg.clone();
                // `accept`'s ACK, not a re-INVITE's (a call that is up has its dialog).
                let rare = g.rare();
                match rare.awaited_answer.take_if(|a| a.done.is_some()) {
                    Some(a) if a.sent => awaited = Some(a),
                    // The 200 is still going out: `accept` sends the BYE once it is.
                    Some(_) => rare.bye_after_200 = true,
                    None => {}
                }
                true
            },
        );
        if !ended {
            return;
        }
        match leg {
            Leg::Up(dialog) => self.bye_queued(dialog).await,
            Leg::Ringing(canceller) => cancel_later(canceller),
            Leg::None => {
                if let Some(AwaitedAnswer { dialog, done, .. }) = awaited {
                    debug!("endpoint ended before the ACK of our 200: BYE once it comes");
                    if let Some(done) = done {
                        let _ = done.send(Err(CallError::Ended));
                    }
                    self.bye_queued(dialog).await;
                }
            }
        }
    }
}

/// How to answer a request.
struct Answer {
    status: u16,
    reason: Cow<'static, str>,
    header: Option<(&'static str, Cow<'static, str>)>,
}

impl Answer {
    const OK: Answer = Answer {
        status: 200,
        reason: Cow::Borrowed("OK"),
        header: None,
    };

    fn new(status: u16, reason: impl Into<Cow<'static, str>>) -> Answer {
        Answer {
            status,
            reason: reason.into(),
            header: None,
        }
    }

    fn with_header(mut self, name: &'static str, value: impl Into<Cow<'static, str>>) -> Answer {
        self.header = Some((name, value.into()));
        self
    }

    /// Sends it without waiting when it can (no header, room in the platform's queue);
    /// false when it must wait ([`send`](Self::send)). An answer refused (the request
    /// was cancelled, the platform stopped) counts as done: there is nothing to wait for.
    fn send_now(&self, req: &mut IncomingRequest) -> bool {
        self.header.is_none() && !matches!(req.try_respond(self.status, &self.reason), Ok(false))
    }

    /// Sends it, waiting for room in the platform's queue.
    async fn send(&self, req: &mut IncomingRequest) {
        let header = self.header.as_ref().map(|(n, v)| (*n, &**v));
        let _ = req
            .respond(self.status, &self.reason, header.as_slice(), None)
            .await;
    }
}

/// What handling a request leads to.
enum Step {
    /// Go on, with this remote typing deadline.
    Typing(Option<tokio::time::Instant>),
    /// The call ended.
    End,
}

/// Sends messages in an established call; cheap to clone, usable from many tasks. A
/// handle on the call: the call ends when its last handle is dropped (see
/// [`InstantMessagingCall`]).
#[derive(Clone)]
pub struct MessageSender {
    call: CallHandle,
}

impl std::fmt::Debug for MessageSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageSender")
            .field("dialog", &self.shared().dialog())
            .finish_non_exhaustive()
    }
}

impl MessageSender {
    fn shared(&self) -> &CallShared {
        &self.call
    }

    /// Sends `body` of `content_type` (`text/plain`, `text/html`, or any type) as an
    /// in-dialog MESSAGE. Exactly one outcome: `Ok` when the peer answered 2xx, or why not
    /// ([`MessageError::CallEnded`] when either side ended the call first). A 481 or 408
    /// answer, or none (a timeout), means the dialog is gone (RFC 3261 §12.2.1.2): the call
    /// ends with it ([`TerminationReason::DialogLost`]) and the error is still returned.
    ///
    /// Cancel safety: if cancelled after the MESSAGE was queued, it is still sent and only
    /// its outcome is lost.
    pub async fn send(
        &self,
        content_type: &str,
        body: impl Into<Bytes>,
    ) -> Result<(), MessageError> {
        self.call.send_raw(content_type, body.into(), true).await
    }

    /// Sends `text` as `text/plain; charset=UTF-8`.
    ///
    /// Cancel safety: as [`send`](Self::send).
    pub async fn send_text(&self, text: &str) -> Result<(), MessageError> {
        self.send(
            "text/plain; charset=UTF-8",
            Bytes::copy_from_slice(text.as_bytes()),
        )
        .await
    }

    /// Tells the peer whether this side is composing, following RFC 3994 §3: `true` means
    /// "the user is typing now" — `active` is sent (with a refresh interval of
    /// [`DEFAULT_REFRESH`](crate::composing::DEFAULT_REFRESH)) unless it was sent recently
    /// enough that a later keystroke can still refresh it in time, and `idle` is sent by
    /// itself after [`IDLE_TIMEOUT`](crate::composing::IDLE_TIMEOUT) without another
    /// `true`. `false`
    /// sends `idle` if `active` was the last state sent. Sending a message ends composing
    /// without an `idle` (the peer goes idle when the message arrives).
    ///
    /// Cancel safety: as [`send`](Self::send).
    pub async fn set_typing(&self, typing: bool) -> Result<(), MessageError> {
        let now = std::time::Instant::now();
        let (send, generation) = {
            let mut t = self.shared().lock();
            t.local_generation = t.local_generation.wrapping_add(1);
            let send = if typing {
                let was_active = std::mem::replace(&mut t.local_active, true);
                let rare = t.rare();
                let stale = rare
                    .last_active_sent
                    .is_none_or(|at| crate::composing::active_refresh_due(now.duration_since(at)));
                let send = !was_active || stale;
                if send {
                    rare.last_active_sent = Some(now);
                }
                send
            } else {
                let was = t.local_active;
                t.local_active = false;
                was
            };
            (send, t.local_generation)
        };
        if typing {
            // Idle by itself unless the user types again within the idle timeout. The timer
            // is no handle on the call: a call whose handles are all gone is over.
            let call = Arc::downgrade(&self.call.0);
            tokio::spawn(async move {
                tokio::time::sleep(crate::composing::IDLE_TIMEOUT).await;
                let Some(call) = call.upgrade() else { return };
                let still = {
                    let mut t = call.lock();
                    let still = t.local_generation == generation && t.local_active;
                    if still {
                        t.local_active = false;
                    }
                    still
                };
                if still && !call.ended() {
                    let doc = IsComposing::idle();
                    let _ = call
                        .send_raw(crate::composing::CONTENT_TYPE, doc.to_xml().into(), false)
                        .await;
                }
            });
        }
        if !send {
            return Ok(());
        }
        let doc = if typing {
            IsComposing::active(crate::composing::DEFAULT_REFRESH.as_secs() as u32)
        } else {
            IsComposing::idle()
        };
        self.send_composing(doc).await
    }

    async fn send_composing(&self, doc: IsComposing) -> Result<(), MessageError> {
        self.call
            .send_raw(crate::composing::CONTENT_TYPE, doc.to_xml().into(), false)
            .await
    }
}

/// The messages of an established call: send through [`sender`](Self::sender) (or the
/// shortcuts here), receive with [`recv`](Self::recv), watch the peer's typing.
#[derive(Debug)]
pub struct InstantMessagingFlow {
    sender: MessageSender,
}

impl InstantMessagingFlow {
    /// A clonable sender for this flow.
    pub fn sender(&self) -> MessageSender {
        self.sender.clone()
    }

    /// Why the call ended, once it has (as [`InstantMessagingCall::termination_reason`]):
    /// for an accepted incoming call, the flow is what the application holds.
    pub fn termination_reason(&self) -> Option<TerminationReason> {
        self.sender.call.termination_reason()
    }

    /// Hangs up (BYE), as [`InstantMessagingCall::terminate`] does for an established
    /// call: for an accepted incoming call, the flow is what the application holds. Ok if
    /// the call had already ended.
    ///
    /// Cancel safety: as [`InstantMessagingCall::terminate`].
    pub async fn terminate(&self) -> Result<(), CallError> {
        let call = &self.sender.call;
        match call.dialog() {
            Some(dialog) if !call.ended() => call.hang_up(&dialog).await,
            _ => Ok(()),
        }
    }

    /// As [`MessageSender::send`].
    ///
    /// Cancel safety: as [`MessageSender::send`].
    pub async fn send(
        &self,
        content_type: &str,
        body: impl Into<Bytes>,
    ) -> Result<(), MessageError> {
        self.sender.send(content_type, body).await
    }

    /// As [`MessageSender::send_text`].
    ///
    /// Cancel safety: as [`MessageSender::send`].
    pub async fn send_text(&self, text: &str) -> Result<(), MessageError> {
        self.sender.send_text(text).await
    }

    /// As [`MessageSender::set_typing`].
    ///
    /// Cancel safety: as [`MessageSender::send`].
    pub async fn set_typing(&self, typing: bool) -> Result<(), MessageError> {
        self.sender.set_typing(typing).await
    }

    /// The next message received; `None` once the call ended and every message was read.
    ///
    /// Cancel safety: cancel safe.
    pub async fn recv(&mut self) -> Option<ReceivedMessage> {
        let shared = self.sender.shared();
        std::future::poll_fn(|cx| shared.poll_recv(cx)).await
    }

    /// Whether the peer is composing (RFC 3994), as a watch: it goes back to `false` when
    /// a message arrives, when the peer says idle, or when an active state is not
    /// refreshed in time.
    pub fn remote_typing(&self) -> watch::Receiver<bool> {
        self.sender.shared().subscribe_remote_typing()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(text: &str) -> ReceivedMessage {
        ReceivedMessage {
            content_type: "text/plain".into(),
            body: Bytes::copy_from_slice(text.as_bytes()),
        }
    }

    async fn recv(shared: &CallShared) -> Option<String> {
        std::future::poll_fn(|cx| shared.poll_recv(cx))
            .await
            .map(|m| m.text())
    }

    /// A conversation these tests never ask for its endpoint.
    struct NoConversation;

    impl ConversationLink for NoConversation {
        fn set_state(&self, _: ConversationState) {}
        fn endpoint(&self) -> &Arc<application_endpoint::EndpointCore> {
            unreachable!("these tests never ask for the endpoint")
        }
    }

    fn call(state: ConversationState) -> Arc<CallShared> {
        CallShared::new(state, Arc::new(NoConversation))
    }

    #[tokio::test]
    async fn inbox_delivers_in_order_refuses_when_full_and_ends_when_closed() {
        let shared = call(ConversationState::Established);
        for i in 0..RECEIVE_CAPACITY {
            assert!(shared.push(msg(&i.to_string())).is_ok());
        }
        assert!(matches!(shared.push(msg("x")), Err(PushError::Full)));
        for i in 0..RECEIVE_CAPACITY - 1 {
            assert_eq!(recv(&shared).await, Some(i.to_string()));
        }
        let reader = {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(x) = recv(&shared).await {
                    got.push(x);
                }
                got
            })
        };
        tokio::task::yield_now().await;
        assert!(shared.push(msg("late")).is_ok());
        shared.close_inbox();
        assert!(matches!(shared.push(msg("closed")), Err(PushError::Closed)));
        let last = (RECEIVE_CAPACITY - 1).to_string();
        assert_eq!(reader.await.unwrap(), vec![last, "late".to_string()]);
        assert_eq!(recv(&shared).await, None);
    }

    /// A flow nobody reads holds at most [`RECEIVE_BYTES`] of bodies (and one message
    /// whatever its size); reading makes room again.
    #[tokio::test]
    async fn inbox_bytes_are_bounded() {
        let shared = call(ConversationState::Established);
        let big = |n: usize| ReceivedMessage {
            content_type: "text/plain".into(),
            body: Bytes::from(vec![b'x'; n]),
        };
        assert!(
            shared.push(big(2 * RECEIVE_BYTES)).is_ok(),
            "one, whatever its size"
        );
        assert!(matches!(shared.push(big(1)), Err(PushError::Full)));
        assert_eq!(
            recv(&shared).await.map(|t| t.len()),
            Some(2 * RECEIVE_BYTES)
        );
        let mut queued = 0;
        while shared.push(big(64 * 1024)).is_ok() {
            queued += 1;
        }
        assert_eq!(queued * 64 * 1024, RECEIVE_BYTES);
        recv(&shared).await.unwrap();
        assert!(shared.push(big(64 * 1024)).is_ok(), "room again once read");
    }

    /// RFC 3261 §20.15: a MESSAGE body without Content-Type is refused 400; it used to
    /// be delivered as `text/plain` (binary or not). An empty one is still taken.
    #[tokio::test]
    async fn an_untyped_message_body_is_refused() {
        let shared = call(ConversationState::Established);
        let (answer, _) = shared.take_message(None, &Bytes::from_static(b"\x89PNG"));
        assert_eq!(answer.status, 400);
        assert!(shared
            .lock()
            .rare
            .as_ref()
            .is_none_or(|r| r.inbox.is_empty()));
        let (answer, _) = shared.take_message(None, &Bytes::new());
        assert_eq!(answer.status, 200);
        let (answer, _) = shared.take_message(Some(b"text/plain"), &Bytes::from_static(b"hi"));
        assert_eq!(answer.status, 200);
        assert_eq!(recv(&shared).await.as_deref(), Some(""));
        assert_eq!(recv(&shared).await.as_deref(), Some("hi"));
    }

    /// Accept's last step (`Established`) taken after the peer's BYE, which the dialog's
    /// handler may process as soon as the 200 is out, already ended the call: the call
    /// stays over instead of looking established for ever.
    #[test]
    fn a_late_established_does_not_revive_an_ended_call() {
        let shared = call(ConversationState::Establishing);
        shared.set_state(ConversationState::Terminated);
        shared.set_state(ConversationState::Established);
        assert_eq!(shared.state(), ConversationState::Terminated);
    }

    #[test]
    fn a_call_moves_forward_only_and_keeps_the_first_reason_it_ended_for() {
        use ConversationState::*;
        let shared = call(Incoming);
        let mut rx = shared.subscribe_state();
        assert!(shared.set_state(Establishing));
        assert!(shared.set_state(Terminating));
        assert!(!shared.set_state(Established), "terminate() is under way");
        assert_eq!(shared.state(), Terminating);
        assert!(shared.end(TerminationReason::Remote {
            diagnostics: String::new()
        }));
        assert!(!shared.end(TerminationReason::Local), "already over");
        assert!(!shared.set_state(Established));
        assert!(!shared.set_state(Idle));
        assert_eq!(*rx.borrow_and_update(), Terminated);
        assert!(matches!(
            shared.termination_reason(),
            Some(TerminationReason::Remote { .. })
        ));
        assert!(may_move(Idle, Establishing) && may_move(Establishing, Terminated));
        assert!(!may_move(Established, Establishing) && !may_move(Terminated, Terminated));
    }

    /// Live tasks once the runtime has dropped the aborted ones (at its next turns), or
    /// after 100 turns.
    async fn alive_tasks_settled_at(most: usize) -> usize {
        let metrics = tokio::runtime::Handle::current().metrics();
        for _ in 0..100 {
            if metrics.num_alive_tasks() <= most {
                break;
            }
            tokio::task::yield_now().await;
        }
        metrics.num_alive_tasks()
    }

    /// RFC 3994 §4: each `active` sets the deadline anew. A timer per document, left to
    /// sleep until its own deadline, made a peer's stream of `active` documents with long
    /// refresh intervals pile up sleeping tasks without bound, even after the call ended.
    #[tokio::test]
    async fn a_stream_of_active_states_keeps_one_typing_timer() {
        let before = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        let shared = call(ConversationState::Established);
        let far = tokio::time::Instant::now() + Duration::from_secs(u64::from(u32::MAX));
        for _ in 0..1000 {
            shared.typing_deadline(Some(far));
        }
        assert_eq!(alive_tasks_settled_at(before + 1).await, before + 1);
        shared.end(TerminationReason::Remote {
            diagnostics: String::new(),
        });
        assert_eq!(alive_tasks_settled_at(before).await, before);
    }

    /// What settles an IM offer: an answer keeping an `m=message` line with an
    /// accept-type in common (or none listed); not a missing, malformed, rejecting or
    /// disjoint one.
    #[test]
    fn an_answer_must_keep_an_im_session_with_a_type_in_common() {
        let answer = |media: &str, types: Option<&str>| {
            let mut sdp = format!(
                "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                 m={media}\r\n"
            );
            if let Some(t) = types {
                sdp.push_str(&format!("a=accept-types:{t}\r\n"));
            }
            sdp
        };
        let settle = |body: &str| {
            let mut n = negotiator("bot.contoso.test", 1);
            n.create_offer().unwrap();
            take_im_answer(&mut n, body.as_bytes())
        };
        assert_eq!(
            settle(&answer("message 5060 sip null", Some("text/plain"))),
            Ok(())
        );
        assert_eq!(settle(&answer("message 5060 sip null", None)), Ok(()));
        assert_eq!(
            settle(&answer("message 5060 sip null", Some("text/*"))),
            Ok(())
        );
        for bad in [
            String::new(),
            "not sdp".to_string(),
            answer("message 0 sip null", Some("text/plain")),
            answer("message 5060 sip null", Some("image/png")),
            answer("audio 4000 RTP/AVP 0", None),
        ] {
            assert!(settle(&bad).is_err(), "{bad:?}");
        }
    }

    /// The last of the application's handles ends the call, even dropped outside a Tokio
    /// runtime (it then ends here only, no BYE); the crate's own `Arc`s are no handles.
    #[test]
    fn the_last_handle_dropped_outside_a_runtime_ends_the_call() {
        let shared = call(ConversationState::Established);
        shared.set_dialog(DialogId::new(b"c1", b"l1", b"r1"));
        let handle = CallHandle::new(shared.clone());
        let clone = handle.clone();
        drop(handle);
        assert_eq!(shared.state(), ConversationState::Established);
        drop(clone);
        assert_eq!(shared.state(), ConversationState::Terminated);
        assert!(matches!(
            shared.termination_reason(),
            Some(TerminationReason::Local)
        ));
    }

    /// An accept whose 200 carried our offer, dropped before the ACK: the call waits
    /// `Terminating` for the ACK's handler to send the BYE (RFC 3261 §15).
    #[test]
    fn a_call_dropped_while_its_ack_is_owed_waits_for_it_terminating() {
        let shared = call(ConversationState::Establishing);
        let (done, _answered) = oneshot::channel();
        shared.lock().rare().awaited_answer = Some(AwaitedAnswer {
            negotiator: negotiator("bot.contoso.test", 1),
            dialog: DialogId::new(b"c1", b"l1", b"r1"),
            done: Some(done),
            sent: true,
        });
        drop(CallHandle::new(shared.clone()));
        assert_eq!(shared.state(), ConversationState::Terminating);
        assert!(shared.awaits_ack());
    }

    /// RFC 3264 §8: one session id, the version bumped by a changed SDP only.
    #[test]
    fn the_sdp_version_goes_up_only_when_the_sdp_changes() {
        let mut origin = SdpOrigin::new();
        let mut made = |types: &[&str]| {
            let mut n = OfferAnswer::new(
                LocalCapabilities::new("bot.contoso.test")
                    .with_media(MediaCapability::message(5060, types.iter().copied())),
                origin.session_id.to_string(),
            );
            let sdp = origin.stamp(n.create_offer().unwrap());
            (
                sdp.origin().session_id.clone(),
                sdp.origin().session_version,
            )
        };
        let (id, first) = made(&["text/plain"]);
        assert_eq!(made(&["text/plain"]), (id.clone(), first));
        assert_eq!(made(&["text/html"]), (id.clone(), first + 1));
        assert_eq!(made(&["text/html"]), (id, first + 1));
    }

    #[tokio::test]
    async fn watches_are_made_on_subscribe_and_see_changes_only_once() {
        let shared = call(ConversationState::Idle);
        shared.set_state(ConversationState::Establishing);
        assert!(shared.lock().rare.is_none());
        let mut rx = shared.subscribe_state();
        assert_eq!(*rx.borrow_and_update(), ConversationState::Establishing);
        shared.set_state(ConversationState::Establishing);
        assert!(!rx.has_changed().unwrap());
        shared.set_state(ConversationState::Established);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), ConversationState::Established);
        let mut typing = shared.subscribe_remote_typing();
        shared.set_remote_typing(true);
        assert!(*typing.borrow_and_update());
        assert!(shared.remote_typing());
    }
}
