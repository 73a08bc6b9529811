//! The driver: one task owns the [`TransactionLayer`], the [`Dialogs`] and the
//! [`Dispatcher`], and is fed by the transport's event channel, a bounded command channel
//! (requests to send, responses to incoming requests, endpoint registrations) and the clock
//! (it sleeps until `poll_timeout`). Nothing on the message path takes a lock; there is no
//! task per transaction. Bytes leave through one *lane* task per destination (connection or
//! target), so a slow connection or a connection attempt never stalls the driver; lanes
//! report send failures back on a channel bounded by the lanes' own queues.

use crate::auth::{ClientAuth, Resend};
use crate::dispatch::{Capabilities, Dispatcher, Disposition, EndpointId, Refusal};
use crate::error::RequestError;
use crate::federation::{strip_home_trust, strip_impersonated_names};
use crate::held_acks::{refusing_answer, HeldAcks, On2xx};
use crate::incoming::IncomingRequest;
use crate::invite_expiry::{InviteExpiry, Side};
use crate::local_targets::LocalTargets;
use crate::merged::{MergeKey, MergedRequests};
use crate::recent_invites::{call_key, RecentInvites};
use crate::request::InDialogParts;
use crate::settings::ListenerKind;
use crate::topology::{Address, Homed, OnPremises, Topology, TopologyError};
use crate::{DialogEndReason, DialogEnded};
use bytes::Bytes;
use sip_core::transaction::{
    Event, Peer, TransactionError, TransactionId, TransactionLayer, Transmit, TransportKind as Tk,
};
use sip_core::{
    DialogError, DialogId, DialogUpdate, Dialogs, HeaderName, Limits, Method, SipMessage,
};
// foldhash (seeded per map) instead of SipHash: these maps are looked up for every message.
use foldhash::{HashMap, HashMapExt};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{debug, warn, Instrument, Span};
use transport_tls::{
    CloseReason, ConnectionId, ConnectionInfo, Direction, SipTransport, Target, TransportError,
    TransportEvent, TransportKind,
};

/// The outcome of a dialog-creating request: its 2xx with the dialog it made.
pub(crate) type DialogReply = Result<(SipMessage, Option<DialogId>), RequestError>;

/// What callers ask of the driver.
#[derive(Debug)]
pub(crate) enum Command {
    /// Start a client transaction to the outbound proxy.
    Send {
        request: SipMessage,
        reply: oneshot::Sender<Result<SipMessage, RequestError>>,
        span: Span,
    },
    /// Start a client transaction whose outcome shapes a dialog: an INVITE (early and
    /// confirmed dialogs, ACK for the 2xx) or a SUBSCRIBE/REFER (subscription dialog), on
    /// behalf of `endpoint`, which then receives the dialog's requests.
    SendDialogCreating {
        request: SipMessage,
        endpoint: EndpointId,
        provisional: Option<mpsc::Sender<SipMessage>>,
        /// An INVITE without an offer: the ACK of its 2xx waits for the application's
        /// answer ([`Command::AckAnswer`]).
        hold_ack: bool,
        reply: oneshot::Sender<DialogReply>,
        span: Span,
    },
    /// The answer to the offer in the 2xx of an INVITE sent with `hold_ack`: its ACK goes
    /// out with this body.
    AckAnswer {
        dialog: DialogId,
        content_type: String,
        body: Bytes,
        reply: oneshot::Sender<Result<(), RequestError>>,
    },
    /// Send a request inside `dialog`.
    SendInDialog {
        dialog: DialogId,
        parts: InDialogParts,
        reply: oneshot::Sender<Result<SipMessage, RequestError>>,
        span: Span,
    },
    /// Cancel the INVITE sent with this branch (RFC 3261 §9.1).
    Cancel { branch: String },
    /// Forget a dialog (a subscription ended; the application is done with it).
    EndDialog { dialog: DialogId },
    /// An endpoint's response to server transaction `transaction`.
    Respond {
        transaction: TransactionId,
        response: SipMessage,
        is_final: bool,
        /// A 481 for a usage the dialog does not have (RFC 5057 §5.1): the dialog stays.
        keep_dialog: bool,
    },
    /// Route requests to a new endpoint.
    Register {
        id: EndpointId,
        owner: Address<OnPremises>,
        gruu: Option<String>,
        default_routing: bool,
        sender: mpsc::Sender<IncomingRequest>,
        /// The endpoint's default Contact value (`<uri>`): the local target of its
        /// dialogs unless one says otherwise.
        contact: Option<Bytes>,
    },
    /// Forget an endpoint.
    Unregister { id: EndpointId },
    /// A shutdown waits for this endpoint to unregister (it ends its calls first).
    HoldShutdown { id: EndpointId },
    /// The requests this endpoint sends inside its dialogs answer a proxy's 407 with
    /// `auth` (see [`crate::CollaborationPlatform::authenticate_dialogs`]).
    AuthenticateDialogs { id: EndpointId, auth: ClientAuth },
    /// Stop: let live transactions finish within `grace`, then cancel the rest.
    Shutdown {
        grace: Duration,
        done: oneshot::Sender<ShutdownReport>,
    },
}

/// How a shutdown went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Live transactions (requests awaiting a final response, incoming requests not yet
    /// answered) that finished within the grace period.
    pub finished: usize,
    /// Those still live at the end of the grace period: requests sent failed with
    /// [`RequestError::Shutdown`], incoming requests were answered 503.
    pub cancelled: usize,
}

/// A send failure reported by a lane.
pub(crate) struct Feedback {
    transaction: Option<TransactionId>,
    error: TransportError,
    /// The proxy server the failed lane sent to, when it was the proxy's lane: a failure
    /// there may mean that server is gone.
    proxy: Option<SocketAddr>,
}

/// Bytes for a lane.
struct Outgoing {
    bytes: Bytes,
    transaction: Option<TransactionId>,
    destination: SocketAddr,
    /// For the UDP lane: the message, parsed once by the driver (which needs it to find
    /// where a response goes, [`udp_destination`]), so the lane sends it without parsing
    /// the bytes again.
    datagram: Option<SipMessage>,
    /// For the UDP lane: our address the request being answered arrived at (the server
    /// transaction's `Peer::local`), which the datagram must leave from (RFC 3261 §18.2.2,
    /// RFC 3581 §4: symmetric response routing; a NAT, or a peer that matches responses
    /// by where it sent the request, drops one from another of our ports). `None` for what
    /// we originate: the transport picks the socket by address family.
    from: Option<SocketAddr>,
}

/// A lane: the queue of messages for one destination and the task that writes them in
/// order, waiting for connections and room as needed.
#[derive(Clone)]
struct Lane {
    tx: mpsc::Sender<Outgoing>,
    /// Messages given to the lane and not yet through it (the driver may bypass the lane
    /// only when this is 0).
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

impl Lane {
    fn is_idle(&self) -> bool {
        self.queued.load(std::sync::atomic::Ordering::Acquire) == 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LaneKey {
    Connection(u64),
    /// The configured proxy: its own variant, so that finding its lane copies nothing.
    Proxy,
    Target(Target),
    Udp,
}

struct Pending {
    reply: Reply,
    span: Span,
    kind: PendingKind,
}

/// Where a client transaction's outcome goes.
enum Reply {
    Plain(oneshot::Sender<Result<SipMessage, RequestError>>),
    /// With the dialog the 2xx made: the dialog set's own key, so the caller's copy shares
    /// its allocation.
    Dialog(oneshot::Sender<DialogReply>),
}

impl Reply {
    fn send(self, r: Result<SipMessage, RequestError>, dialog: Option<DialogId>) {
        match self {
            Reply::Plain(tx) => {
                let _ = tx.send(r);
            }
            Reply::Dialog(tx) => {
                let _ = tx.send(r.map(|m| (m, dialog)));
            }
        }
    }

    fn fail(self, e: RequestError) {
        self.send(Err(e), None);
    }
}

/// What a client transaction means for dialogs.
enum PendingKind {
    /// Out of any dialog, creating none.
    Plain,
    /// Inside this dialog: a 481 or 408, or no answer at all, ends it (RFC 3261
    /// §12.2.1.2). `invite_usage`: the request belongs to the INVITE usage (not a
    /// subscription's, not the BYE), which a 408 or no answer also ends with a BYE.
    InDialog {
        dialog: DialogId,
        invite_usage: bool,
        /// The request, kept when it refreshes the target (re-INVITE, UPDATE, SUBSCRIBE,
        /// NOTIFY): its 2xx moves the dialog's remote target (§12.2.1.2), and a
        /// re-INVITE's 2xx is ACKed (§13.2.2.4).
        refresh: Option<Box<SipMessage>>,
        /// For a dialog whose owner gave credentials: what a 407 is answered with.
        challenged: Option<Box<InDialogResend>>,
    },
    /// Creates dialogs for `endpoint`.
    Creating(Box<Creating>),
}

/// What sends an in-dialog request again when a proxy challenges it (407): the parts it
/// was built from (the retry takes the dialog's next CSeq, RFC 3261 §22.2, §12.2.1.1), the
/// request as sent (what the credentials answer) and the count of sends.
struct InDialogResend {
    parts: InDialogParts,
    sent: SipMessage,
    resend: Resend,
}

struct Creating {
    request: SipMessage,
    endpoint: EndpointId,
    provisional: Option<mpsc::Sender<SipMessage>>,
    branch: String,
    /// The caller asked to cancel this INVITE: a 2xx that comes anyway (it beat a CANCEL
    /// held for a 1xx, or crossed one) is ACKed and ended with BYE (RFC 3261 §15), and
    /// the caller told `Cancelled`, as it asked not to have the call.
    cancel_asked: bool,
    /// Sent without an offer: the ACK of the 2xx carries the application's answer.
    hold_ack: bool,
    /// A SUBSCRIBE's (or REFER's) dialogs that NOTIFYs made before its final response
    /// (RFC 6665 §4.1.2.4): a failure response then means no subscription exists
    /// (§4.1.2.1), and they are forgotten with it.
    notify_dialogs: Vec<DialogId>,
}

/// A bound listener and its trust policy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BoundListener {
    pub kind: ListenerKind,
    /// The address it is bound to (the port the system chose for port 0; the unspecified
    /// address, 0.0.0.0 or `[::]`, stays as it was given).
    pub addr: SocketAddr,
    pub allow_untrusted: bool,
}

impl BoundListener {
    /// Whether a listener bound to an unspecified address (0.0.0.0, `[::]`) takes what
    /// arrives at `local`: the same port and address family. An accepted connection's
    /// local address is the interface's, never the wildcard the listener was bound to, and
    /// so is a datagram's on Linux (transport-tls reads where it was sent to).
    fn takes_as_wildcard(&self, local: SocketAddr) -> bool {
        self.addr.ip().is_unspecified()
            && self.addr.port() == local.port()
            && self.addr.is_ipv4() == local.is_ipv4()
    }
}

/// The listener of `kind` that took a message arriving at `local`: the one bound to that
/// very address, else one bound to the unspecified address of its family on that port.
fn listener_at(
    listeners: &[BoundListener],
    kind: ListenerKind,
    local: SocketAddr,
) -> Option<&BoundListener> {
    let of_kind = || listeners.iter().filter(move |l| l.kind == kind);
    of_kind()
        .find(|l| l.addr.ip() == local.ip() && l.addr.port() == local.port())
        .or_else(|| of_kind().find(|l| l.takes_as_wildcard(local)))
}

/// What the driver is configured with.
pub(crate) struct DriverConfig {
    pub transport: SipTransport,
    pub proxy: Target,
    pub listeners: Vec<BoundListener>,
    pub trusted_peers: Vec<String>,
    pub topology: Topology,
    /// The Server header value, made once: responses share it instead of copying it.
    pub server: Bytes,
    pub transaction: sip_core::transaction::TransactionConfig,
    pub commands: mpsc::WeakSender<Command>,
    pub observer: Option<Arc<dyn crate::MessageObserver>>,
    /// The Via value without branch for requests built here (in-dialog requests, ACK).
    pub via: String,
    /// The identities the application speaks as itself (see `federation::OwnIdentities`).
    pub identities: Arc<crate::federation::OwnIdentities>,
    /// The User-Agent header value, made once and shared by every request.
    pub user_agent: Bytes,
    /// Counts losses of the outbound proxy's connection, for endpoints that must
    /// re-register when it drops (a front-end restart).
    pub proxy_losses: tokio::sync::watch::Sender<u64>,
    /// Where the dialogs the platform ends itself are announced.
    pub dialog_endings: tokio::sync::broadcast::Sender<crate::DialogEnded>,
    /// Set once a shutdown begins: endpoints end their calls while BYEs can still go.
    pub stopping: tokio::sync::watch::Sender<bool>,
    /// The servers of a proxy given by domain, to fail over between (`None`: a proxy
    /// given by address, which is only ever reconnected to).
    pub proxy_pool: Option<crate::failover::ProxyPool>,
    /// The proxy's server in use, for the platform's handles.
    pub proxy_now: tokio::sync::watch::Sender<Target>,
}

pub(crate) struct Driver {
    cfg: DriverConfig,
    proxy_peer: Peer,
    layer: TransactionLayer,
    dialogs: Dialogs,
    dispatcher: Dispatcher,
    endpoints: HashMap<EndpointId, mpsc::Sender<IncomingRequest>>,
    /// Endpoints a shutdown waits for (`Command::HoldShutdown`) until they unregister:
    /// each ends its calls first (BYE, CANCEL), so the platform waits for them, within the
    /// grace period, before it can know that no more BYEs are coming.
    holding_shutdown: BTreeSet<EndpointId>,
    /// The credentials of endpoints whose in-dialog requests answer challenges
    /// (`Command::AuthenticateDialogs`), in their in-dialog form.
    dialog_credentials: HashMap<EndpointId, ClientAuth>,
    /// The credentials of the INVITE (or re-INVITE) whose 2xx a dialog's ACK answers: the
    /// ACK carries the same (RFC 3261 §13.2.2.4). Only for dialogs whose INVITE had some.
    ack_credentials: HashMap<DialogId, Vec<(HeaderName, Bytes)>>,
    /// The local target of each dialog, for target refresh requests sent without one.
    local_targets: LocalTargets,
    pending: HashMap<TransactionId, Pending>,
    serving: HashMap<TransactionId, Serving>,
    /// INVITEs that may still be cancelled, by branch.
    invites: HashMap<String, TransactionId>,
    /// Our INVITEs awaiting their final response, by (Call-ID, our tag), with the
    /// requests the callee sent in the dialog before that response reached us (they can
    /// overtake it on another connection): handled once it is in, instead of 481.
    inviting: HashMap<(Bytes, Bytes), Vec<Parked>>,
    /// SUBSCRIBE/REFER awaiting a final response, by (Call-ID, From tag): a NOTIFY may
    /// overtake the 2xx (RFC 6665 §4.1.2.4).
    subscribing: HashMap<(Bytes, Bytes), TransactionId>,
    conn_trust: HashMap<u64, bool>,
    transport_errors: HashMap<TransactionId, TransportError>,
    /// 2xx answers to INVITEs waiting for their ACK, by dialog and CSeq number (§13.3.1.4).
    /// Ordered, so that whether a dialog has one is a range lookup: every request sent in a
    /// dialog asks, and a burst of call set-ups can have many in flight.
    unacked: BTreeMap<(DialogId, u32), Unacked>,
    /// When each of `unacked` is due, earliest first; an entry whose time is no longer its
    /// `next` (ACKed, re-armed) is skipped when it comes up.
    ack_due: BinaryHeap<Reverse<(Instant, DialogId, u32)>>,
    /// Requests outside a dialog whose server transaction lives, by what a merged copy of
    /// them shares (§8.2.2.2).
    merged: MergedRequests,
    /// Our INVITEs that failed lately, so a 2xx that comes after the failure is known as
    /// ours (then ACKed and ended with BYE) after their transaction is gone.
    failed_invites: RecentInvites,
    /// Our INVITEs sent without an offer lately, so a late fork's 2xx (which then brings
    /// an offer) is ACKed with an answer refusing it before its BYE.
    offerless_invites: RecentInvites,
    /// ACKs that carry the application's answer to an offer in a 2xx.
    held_acks: HeldAcks,
    /// Requests sent in a dialog whose 2xx (ours) has no ACK yet, in order: they wait for
    /// it. The caller knows the dialog only from that 2xx, and a request can overtake it
    /// on another connection: a BYE then finds no dialog and leaves the caller's call up
    /// (RFC 3261 §15 forbids a BYE before the ACK), a MESSAGE gets 481 and ends the call
    /// on our side.
    held_for_ack: HashMap<DialogId, Vec<HeldRequest>>,
    /// When INVITEs that carry an Expires stop standing (ours cancelled, theirs 487).
    invite_expiry: InviteExpiry,
    lanes: HashMap<LaneKey, Lane>,
    lane_tasks: JoinSet<()>,
    feedback_tx: mpsc::UnboundedSender<Feedback>,
    /// Where a search for another proxy server reports (see `failover::search`).
    found_tx: mpsc::UnboundedSender<crate::failover::Found>,
    found_rx: Option<mpsc::UnboundedReceiver<crate::failover::Found>>,
    /// The search under way, if any: one at a time. It counts as under way until
    /// `on_proxy_found` has read its result, not only while its task runs: a search that
    /// has ended may have a server waiting in `found_rx`, and one started meanwhile would
    /// look again from the pool that result replaces (a loss of the server already left
    /// would move back to it). The search always reports unless aborted or the driver is
    /// gone, so the slot is always freed.
    search: Option<tokio::task::AbortHandle>,
    accepting: bool,
    shutdown: Option<Stopping>,
}

/// The request a server transaction serves, kept for the platform's own answer at shutdown
/// and for the dialog an answer makes. Only requests that can make a dialog (INVITE,
/// SUBSCRIBE, REFER) are kept parsed, a clone; the others keep their received bytes
/// (shared, not copied) and are parsed again only if the platform must answer them itself.
enum Served {
    Parsed(SipMessage),
    Wire(Bytes),
}

impl Served {
    fn of(request: &SipMessage) -> Served {
        match request.method() {
            Some(Method::Invite | Method::Subscribe | Method::Refer) => {
                Served::Parsed(request.clone())
            }
            _ => Served::Wire(request.to_bytes()),
        }
    }

    /// The request parsed, when it can make a dialog.
    fn dialog_maker(&self) -> Option<&SipMessage> {
        match self {
            Served::Parsed(m) => Some(m),
            Served::Wire(_) => None,
        }
    }

    /// The dialog the request was sent in, if any (reading the bytes again if need be).
    fn dialog(&self) -> Option<DialogId> {
        match self {
            Served::Parsed(m) => request_dialog(m),
            Served::Wire(b) => {
                request_dialog(&SipMessage::parse_datagram(b.clone(), &Limits::default()).ok()?)
            }
        }
    }

    fn into_message(self) -> Option<SipMessage> {
        match self {
            Served::Parsed(m) => Some(m),
            Served::Wire(b) => SipMessage::parse_datagram(b, &Limits::default()).ok(),
        }
    }
}

/// An incoming request an endpoint has not answered finally yet.
struct Serving {
    span: Span,
    request: Served,
    endpoint: EndpointId,
    /// The dialog an answer makes (INVITE, SUBSCRIBE, REFER): the endpoint holds copies of
    /// it, and the dialog set keys the dialog by it (one allocation for all).
    creates: Option<DialogId>,
    /// Set when a CANCEL (or its Expires) ended this INVITE (the endpoint's late answer is
    /// refused).
    cancelled: Option<Arc<crate::incoming::Cancellation>>,
    /// Where the request came from: where a 2xx to an INVITE is retransmitted.
    source: Peer,
}

/// A request parked until an INVITE's final response: its server transaction, itself,
/// where it came from.
type Parked = (TransactionId, SipMessage, Peer);

/// Most requests parked for one INVITE; past it they get 481 at once.
const PARKED_PER_INVITE: usize = 16;

/// A request sent in a dialog, waiting for the ACK of our 2xx: what `send_in_dialog` takes.
type HeldRequest = (
    InDialogParts,
    oneshot::Sender<Result<SipMessage, RequestError>>,
    Span,
);

/// A 2xx to an INVITE that the UAS core retransmits until its ACK arrives; without one
/// for 64*T1 the session is ended with BYE (RFC 3261 §13.3.1.4, RFC 6026 §8.1: the server
/// transaction no longer does this).
struct Unacked {
    response: SipMessage,
    peer: Peer,
    next: Instant,
    interval: Duration,
    give_up: Instant,
    /// The INVITE's server transaction (what the ACK handed to the endpoint names).
    transaction: TransactionId,
    /// The 2xx carries the offer (the INVITE had none): the answer comes in the ACK
    /// (RFC 3261 §13.2.1), so the ACK goes to the endpoint.
    answer_in_ack: bool,
}

struct Stopping {
    /// `None` for a grace too long to be a point in time (`Duration::MAX`: wait for all).
    deadline: Option<Instant>,
    done: Vec<oneshot::Sender<ShutdownReport>>,
    live_at_start: usize,
}

const LANE_CAPACITY: usize = 1024;
const BATCH: usize = 128;

/// Whether `request` only removes what an endpoint left at a server (a REGISTER, PUBLISH
/// or SUBSCRIBE with `Expires: 0`): sent during a shutdown, so that endpoints ending with
/// their platform unregister and withdraw their presence as `terminate()` does.
fn removes_state(request: &SipMessage) -> bool {
    request
        .method()
        .is_some_and(|m| expires_zero(m, request.header_values(HeaderName::Expires)))
}

/// A REGISTER, PUBLISH or SUBSCRIBE whose one `Expires` value is 0.
fn expires_zero<'a>(method: &Method, mut expires: impl Iterator<Item = &'a [u8]>) -> bool {
    matches!(
        method,
        Method::Register | Method::Publish | Method::Subscribe
    ) && expires.next().is_some_and(|v| v.trim_ascii() == b"0")
        && expires.next().is_none()
}

fn tk(t: TransportKind) -> Tk {
    match t {
        TransportKind::Udp => Tk::Udp,
        TransportKind::Tls => Tk::Tls,
        _ => Tk::Tcp,
    }
}

/// The homing of `request`'s From URI; `None` without a readable From.
fn caller_of(topology: &Topology, request: &SipMessage) -> Option<Result<Homed, TopologyError>> {
    let from = request.from().ok()?;
    Some(topology.classify(&String::from_utf8_lossy(from.uri().as_bytes())))
}

/// May a request for `uri` (matching no owner or GRUU) go to the default routing endpoint?
/// Yes for a home user or number, and for a URI naming a host by address (the platform's
/// own contact); no for a federated user, on whose behalf the application receives
/// nothing, and for a URI the topology refuses.
fn for_home(topology: &Topology, uri: &[u8]) -> bool {
    match topology.classify(&String::from_utf8_lossy(uri)) {
        Ok(Homed::OnPremises(_)) => true,
        Ok(Homed::Federated(a)) => {
            let host = a.domain().trim_start_matches('[').trim_end_matches(']');
            host.parse::<std::net::IpAddr>().is_ok()
        }
        Err(_) => false,
    }
}

impl Driver {
    pub(crate) fn new(cfg: DriverConfig) -> (Driver, mpsc::UnboundedReceiver<Feedback>) {
        let (feedback_tx, feedback_rx) = mpsc::unbounded_channel();
        let (found_tx, found_rx) = mpsc::unbounded_channel();
        let proxy_peer = Peer::new(cfg.proxy.remote, tk(cfg.proxy.transport));
        let layer = TransactionLayer::new(cfg.transaction);
        (
            Driver {
                proxy_peer,
                layer,
                dialogs: Dialogs::new(),
                dispatcher: Dispatcher::new(Capabilities::default()),
                endpoints: HashMap::new(),
                holding_shutdown: BTreeSet::new(),
                dialog_credentials: HashMap::new(),
                ack_credentials: HashMap::new(),
                local_targets: LocalTargets::default(),
                pending: HashMap::new(),
                serving: HashMap::new(),
                invites: HashMap::new(),
                inviting: HashMap::new(),
                subscribing: HashMap::new(),
                conn_trust: HashMap::new(),
                transport_errors: HashMap::new(),
                unacked: BTreeMap::new(),
                ack_due: BinaryHeap::new(),
                merged: MergedRequests::default(),
                failed_invites: RecentInvites::new(cfg.transaction.t1.saturating_mul(64)),
                offerless_invites: RecentInvites::new(cfg.transaction.t1.saturating_mul(64)),
                held_acks: HeldAcks::new(cfg.transaction.t1.saturating_mul(64)),
                held_for_ack: HashMap::new(),
                invite_expiry: InviteExpiry::default(),
                lanes: HashMap::new(),
                lane_tasks: JoinSet::new(),
                feedback_tx,
                found_tx,
                found_rx: Some(found_rx),
                search: None,
                accepting: true,
                shutdown: None,
                cfg,
            },
            feedback_rx,
        )
    }

    /// Runs until shutdown (asked for, or every handle dropped).
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<TransportEvent>,
        mut feedback: mpsc::UnboundedReceiver<Feedback>,
    ) {
        let far = || tokio::time::Instant::now() + Duration::from_secs(3600);
        let sleep = tokio::time::sleep_until(far());
        tokio::pin!(sleep);
        let mut commands_open = true;
        // The field only carries the receiver from `new`; it is always there on this call.
        let mut found = self
            .found_rx
            .take()
            .unwrap_or_else(|| mpsc::unbounded_channel().1);
        loop {
            let wake = match (
                self.layer.poll_timeout(),
                self.shutdown.as_ref().and_then(|s| s.deadline),
            ) {
                (Some(t), Some(d)) => Some(t.min(d)),
                (t, d) => t.or(d),
            };
            let wake = [self.next_ack_timer(), self.invite_expiry.next_deadline()]
                .into_iter()
                .fold(wake, |w, t| match (w, t) {
                    (Some(w), Some(t)) => Some(w.min(t)),
                    (w, t) => w.or(t),
                });
            let wake = wake.map(tokio::time::Instant::from_std).unwrap_or_else(far);
            if sleep.deadline() != wake {
                sleep.as_mut().reset(wake);
            }
            tokio::select! {
                biased;
                Some(f) = feedback.recv() => self.on_feedback(f),
                Some(f) = found.recv() => self.on_proxy_found(f),
                Some(ev) = events.recv() => self.on_transport(ev),
                cmd = commands.recv(), if commands_open => match cmd {
                    Some(c) => self.on_command(c),
                    None => {
                        commands_open = false;
                        self.begin_shutdown(Duration::ZERO, None);
                    }
                },
                () = &mut sleep => {}
            }
            // Batch what is already queued: one pump per batch, not per message.
            for _ in 0..BATCH {
                match events.try_recv() {
                    Ok(ev) => self.on_transport(ev),
                    Err(_) => break,
                }
            }
            for _ in 0..BATCH {
                match commands.try_recv() {
                    Ok(c) => self.on_command(c),
                    Err(_) => break,
                }
            }
            while let Ok(f) = feedback.try_recv() {
                self.on_feedback(f);
            }
            let now = Instant::now();
            self.layer.handle_timeout(now);
            self.on_ack_timers(now);
            self.on_invite_expiry(now);
            self.pump().await;
            if self.shutdown_due() {
                self.finish().await;
                return;
            }
        }
    }

    /// Requests awaiting their final response (those held for the ACK of our 2xx
    /// included: a shutdown waits for that ACK, or for the 64·T1 after which a held BYE
    /// goes all the same, within its grace period) and incoming requests not yet answered.
    fn live(&self) -> usize {
        self.pending.len()
            + self.serving.len()
            + self.held_for_ack.values().map(Vec::len).sum::<usize>()
    }

    fn begin_shutdown(&mut self, grace: Duration, done: Option<oneshot::Sender<ShutdownReport>>) {
        self.accepting = false;
        let deadline = Instant::now().checked_add(grace);
        let live = self.live();
        if self.shutdown.is_none() {
            // Endpoints watch this and end their calls, then unregister (see
            // `holding_shutdown`).
            self.cfg.stopping.send_replace(true);
        }
        let s = self.shutdown.get_or_insert_with(|| Stopping {
            deadline,
            done: Vec::new(),
            live_at_start: live,
        });
        s.deadline = match (s.deadline, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        s.done.extend(done);
    }

    /// Whether endpoint `id` still holds a shutdown: it is routed and its receiver is
    /// there to end its calls and unregister. One forgotten at a request its receiver
    /// could not take (480), or whose receiver went without unregistering (a router that
    /// ended, a dropped receiver), never will; waiting for it would last the whole grace
    /// period, or for ever with an unbounded one.
    fn holds(&self, id: EndpointId) -> bool {
        self.endpoints.get(&id).is_some_and(|tx| !tx.is_closed())
    }

    fn shutdown_due(&self) -> bool {
        match &self.shutdown {
            Some(s) => {
                (self.live() == 0 && !self.holding_shutdown.iter().any(|id| self.holds(*id)))
                    || s.deadline.is_some_and(|d| Instant::now() >= d)
            }
            None => false,
        }
    }

    /// Cancels what is left with a definite outcome, flushes the lanes, closes connections.
    async fn finish(mut self) {
        if let Some(search) = self.search.take() {
            search.abort();
        }
        let now = Instant::now();
        let cancelled = self.live();
        // INVITEs still ringing are cancelled (RFC 3261 §9.1), not abandoned: the callee
        // would ring on, and answer a caller who is gone.
        let ringing: Vec<TransactionId> = self.invites.values().copied().collect();
        for id in ringing {
            let _ = self.layer.cancel(now, id);
        }
        for (_, p) in self.pending.drain() {
            p.reply.fail(RequestError::Shutdown);
        }
        // Still waiting for the ACK of our 2xx at the end of the grace period: not sent
        // (RFC 3261 §15: no BYE before that ACK, nor before 64·T1 without it).
        for (_, reply, _) in self.held_for_ack.drain().flat_map(|(_, held)| held) {
            let _ = reply.send(Err(RequestError::Shutdown));
        }
        let serving: Vec<(TransactionId, SipMessage)> = self
            .serving
            .drain()
            .filter_map(|(id, s)| Some((id, s.request.into_message()?)))
            .chain(
                // Requests parked for an INVITE's final response, which will not come now.
                self.inviting
                    .drain()
                    .flat_map(|(_, parked)| parked)
                    .map(|(id, request, _)| (id, request)),
            )
            .collect();
        for (id, request) in serving {
            self.answer(
                now,
                id,
                &request,
                503,
                &[(HeaderName::RetryAfter, "30".into())],
            );
        }
        self.pump().await;
        self.lanes.clear();
        let mut tasks = std::mem::take(&mut self.lane_tasks);
        // Not `join_all`, which panics when a task was cancelled (as all are when the
        // tokio runtime itself shuts down under a stopping platform): the platform's
        // own stop must not panic. Lanes left after the bound are aborted with the set.
        let drained = async { while tasks.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_secs(2), drained).await;
        self.cfg.transport.shutdown();
        if let Some(s) = self.shutdown.take() {
            let report = ShutdownReport {
                finished: s.live_at_start.saturating_sub(cancelled),
                cancelled,
            };
            for d in s.done {
                let _ = d.send(report);
            }
        }
        debug!(cancelled, "platform stopped");
    }

    fn on_command(&mut self, c: Command) {
        let now = Instant::now();
        match c {
            Command::Send {
                request,
                reply,
                span,
            } => {
                if !self.accepting && !removes_state(&request) {
                    let _ = reply.send(Err(RequestError::Shutdown));
                    return;
                }
                self.start_client(now, request, Reply::Plain(reply), span, PendingKind::Plain);
            }
            Command::SendDialogCreating {
                request,
                endpoint,
                provisional,
                hold_ack,
                reply,
                span,
            } => {
                if !self.accepting {
                    let _ = reply.send(Err(RequestError::Shutdown));
                    return;
                }
                let mut request = request;
                // A request that makes a dialog carries its local target (RFC 3261
                // §8.1.1.8): the endpoint's default Contact when the caller gave none.
                if request.header(HeaderName::Contact).is_none() {
                    if let Some(c) = self.local_targets.default_of(endpoint.0) {
                        let _ = request.push_header(HeaderName::Contact, c.clone());
                    }
                }
                let branch = request
                    .top_via()
                    .ok()
                    .and_then(|v| v.branch().map(str::to_owned))
                    .unwrap_or_default();
                let creating = Creating {
                    request: request.clone(),
                    endpoint,
                    provisional,
                    branch,
                    cancel_asked: false,
                    hold_ack,
                    notify_dialogs: Vec::new(),
                };
                self.start_client(
                    now,
                    request,
                    Reply::Dialog(reply),
                    span,
                    PendingKind::Creating(Box::new(creating)),
                );
            }
            Command::SendInDialog {
                dialog,
                parts,
                reply,
                span,
            } => {
                // While stopping, calls can still end: a BYE is the way out, not new work;
                // so is an unsubscription.
                let ends = parts.method == Method::Bye
                    || expires_zero(
                        &parts.method,
                        parts
                            .headers
                            .iter()
                            .filter(|(n, _)| n.eq_ignore_ascii_case("expires"))
                            .map(|(_, v)| v.as_ref()),
                    );
                if !self.accepting && !ends {
                    let _ = reply.send(Err(RequestError::Shutdown));
                    return;
                }
                self.send_in_dialog(now, &dialog, parts, reply, span);
            }
            Command::Cancel { branch } => {
                if let Some(&id) = self.invites.get(&branch) {
                    // Kept even if no CANCEL can go (a full layer): the call is not wanted.
                    if let Some(Pending {
                        kind: PendingKind::Creating(c),
                        ..
                    }) = self.pending.get_mut(&id)
                    {
                        c.cancel_asked = true;
                    }
                    if let Err(e) = self.layer.cancel(now, id) {
                        debug!(%id, error = %e, "CANCEL not sent");
                    }
                }
            }
            Command::EndDialog { dialog } => self.forget_dialog(&dialog),
            Command::AckAnswer {
                dialog,
                content_type,
                body,
                reply,
            } => {
                let _ = reply.send(self.ack_with_answer(&dialog, &content_type, body));
            }
            Command::Respond {
                transaction,
                response,
                is_final,
                keep_dialog,
            } => {
                let disowned = self.respond(now, transaction, response, is_final);
                if let (Some(dialog), false) = (disowned, keep_dialog) {
                    self.forget_dialog(&dialog);
                }
            }
            Command::Register {
                id,
                owner,
                gruu,
                default_routing,
                sender,
                contact,
            } => {
                self.dispatcher.add_owner(&owner, id);
                if let Some(c) = contact {
                    self.local_targets.set_default(id.0, c);
                }
                if let Some(g) = gruu {
                    self.dispatcher.add_gruu(&g, id);
                }
                if default_routing {
                    self.dispatcher.set_default(Some(id));
                }
                self.endpoints.insert(id, sender);
            }
            Command::HoldShutdown { id } => {
                if self.endpoints.contains_key(&id) {
                    self.holding_shutdown.insert(id);
                }
            }
            Command::AuthenticateDialogs { id, auth } => {
                if self.endpoints.contains_key(&id) {
                    self.dialog_credentials.insert(id, auth.in_dialog());
                }
            }
            Command::Unregister { id } => {
                self.forget_endpoint(id);
                self.local_targets.remove_default(id.0);
                self.dialogs.clear_owner(id.0);
            }
            Command::Shutdown { grace, done } => self.begin_shutdown(grace, Some(done)),
        }
    }

    /// Stops routing to endpoint `id` (unregistered, or its receiver gone): it no longer
    /// holds a shutdown, and its credentials are dropped.
    fn forget_endpoint(&mut self, id: EndpointId) {
        self.dispatcher.remove(id);
        self.endpoints.remove(&id);
        self.holding_shutdown.remove(&id);
        self.dialog_credentials.remove(&id);
    }

    fn start_client(
        &mut self,
        now: Instant,
        request: SipMessage,
        reply: Reply,
        span: Span,
        kind: PendingKind,
    ) {
        let _g = span.enter();
        match self.layer.send_request(now, request, self.proxy_peer) {
            Ok(id) => {
                debug!(%id, "sent");
                drop(_g);
                if let PendingKind::InDialog {
                    refresh: Some(r), ..
                } = &kind
                {
                    if r.method() == Some(&Method::Invite) {
                        self.arm_expiry(now, id, Side::Client, r);
                    }
                }
                if let PendingKind::Creating(c) = &kind {
                    if c.request.method() == Some(&Method::Invite) {
                        self.arm_expiry(now, id, Side::Client, &c.request);
                        self.invites.insert(c.branch.clone(), id);
                        if let Some(key) = call_key(&c.request) {
                            self.inviting.insert(key, Vec::new());
                        }
                    } else if let Some(key) = subscription_key(&c.request) {
                        self.subscribing.insert(key, id);
                    }
                }
                self.pending.insert(id, Pending { reply, span, kind });
            }
            Err(TransactionError::Overloaded { limit }) => {
                reply.fail(RequestError::Overloaded { limit })
            }
            Err(e) => reply.fail(RequestError::Invalid(e.to_string())),
        }
    }

    /// A request inside `dialog` (§12.2.1.1): the dialog gives Request-URI, Route, From,
    /// To, Call-ID and CSeq; the caller the rest.
    fn build_in_dialog(
        &mut self,
        dialog: &DialogId,
        parts: InDialogParts,
    ) -> Result<SipMessage, RequestError> {
        let invalid = |e: sip_core::ParseError| RequestError::Invalid(e.to_string());
        if parts.method == Method::Ack || parts.method == Method::Cancel {
            return Err(RequestError::Invalid(
                "ACK and CANCEL are sent by the platform".into(),
            ));
        }
        // A target refresh request carries the local target (§12.2.1.1).
        let refresh = parts.method.is_target_refresh();
        let mut b = self
            .dialogs
            .request(dialog, parts.method, &self.cfg.via)
            .map_err(|e| match e {
                DialogError::UnknownDialog => RequestError::NoDialog,
                e => RequestError::Invalid(e.to_string()),
            })?;
        b = b.header(HeaderName::UserAgent, self.cfg.user_agent.clone());
        let mut has_contact = false;
        for (n, v) in parts.headers {
            has_contact |= HeaderName::from_bytes(n.as_bytes()) == HeaderName::Contact;
            b = b.header(n.as_str(), v);
        }
        // The dialog's local target, unless the caller gives a new one.
        if refresh && !has_contact {
            if let Some(contact) = self.local_targets.get(dialog, &self.dialogs) {
                b = b.header(HeaderName::Contact, contact.clone());
            }
        }
        if let Some((ct, body)) = parts.body {
            // The caller's Content-Type string becomes the header value as it is.
            b = b.header(HeaderName::ContentType, ct).raw_body(body);
        }
        let mut request = b.build().map_err(invalid)?;
        if refresh && has_contact {
            self.local_targets.note(dialog, &request, &self.dialogs);
        }
        if !self.remote_is_on_premises(dialog) {
            // Inside a dialog with a federated party, as outside one: no home trust, no
            // names of the home users the application speaks for.
            strip_home_trust(&mut request);
            strip_impersonated_names(&mut request, &self.cfg.identities);
        }
        Ok(request)
    }

    /// Is the far party of `dialog` homed on-premises? Anything the topology cannot place
    /// (an unparsable or blocked URI) counts as not, so nothing of the home trust leaks.
    fn remote_is_on_premises(&self, dialog: &DialogId) -> bool {
        let Some(d) = self.dialogs.get(dialog) else {
            return false;
        };
        let Ok(remote) = sip_core::NameAddr::parse(d.remote_uri(), "To") else {
            return false;
        };
        let uri = String::from_utf8_lossy(remote.uri().as_bytes());
        matches!(self.cfg.topology.classify(&uri), Ok(Homed::OnPremises(_)))
    }

    fn forget_dialog(&mut self, dialog: &DialogId) {
        self.dialogs.remove(dialog);
        self.ack_credentials.remove(dialog);
        self.local_targets.forget(dialog);
        self.held_acks.forget(dialog);
        // Ended otherwise (the peer's BYE) while these waited for the ACK.
        for (_, reply, _) in self.held_for_ack.remove(dialog).unwrap_or_default() {
            let _ = reply.send(Err(RequestError::NoDialog));
        }
    }

    /// Tells listeners ([`CollaborationPlatform::dialog_endings`]) that the platform ends
    /// `dialog` itself; called before it is forgotten, to name its owner.
    ///
    /// [`CollaborationPlatform::dialog_endings`]: crate::CollaborationPlatform::dialog_endings
    fn announce_end(&self, dialog: &DialogId, reason: DialogEndReason) {
        if self.cfg.dialog_endings.receiver_count() == 0 {
            return;
        }
        // A dialog already gone (a 408 after its BYE) ends nothing.
        let Some(d) = self.dialogs.get(dialog) else {
            return;
        };
        let endpoint = Some(d.owner()).filter(|o| *o != 0).map(EndpointId);
        let _ = self.cfg.dialog_endings.send(DialogEnded {
            dialog: dialog.clone(),
            endpoint,
            reason,
        });
    }

    /// A request in `dialog` got 408 or no answer: the dialog is over (RFC 3261
    /// §12.2.1.2). The far side may still hold it, so a request of the INVITE usage also
    /// ends that usage with a BYE (RFC 5057 §5.1), sent without anyone waiting for its
    /// outcome: the caller has its answer now, and a BYE nobody answers ends by its own
    /// Timer F. A subscription's dialog is only forgotten.
    fn lose_dialog(&mut self, dialog: &DialogId, invite_usage: bool) {
        if invite_usage && self.accepting {
            self.bye(Instant::now(), dialog);
        } else {
            self.forget_dialog(dialog);
        }
    }

    /// ACKs a 2xx to an INVITE of a confirmed dialog (the first 2xx and every
    /// retransmission of it, §13.2.2.4).
    /// An ACK whose answer the application gives ([`HeldAcks`]) is not built here: it is
    /// absorbed while the answer is awaited, then the one sent is sent again.
    fn ack_2xx(&mut self, id: &DialogId, response: &SipMessage) {
        let Ok(seq) = response.cseq().map(|c| c.seq()) else {
            return;
        };
        match self.held_acks.on_2xx(id, seq) {
            On2xx::Absorb => return,
            On2xx::Resend(ack) => return self.layer.send_stateless(&ack, self.proxy_peer),
            On2xx::NotHeld => {}
        }
        match self.build_ack(id, seq) {
            Ok(ack) => self.layer.send_stateless(&ack, self.proxy_peer),
            Err(e) => debug!(error = %e, "ACK not built"),
        }
    }

    /// The ACK of the 2xx to INVITE `seq` in `dialog`, with the credentials that INVITE
    /// carried (RFC 3261 §13.2.2.4).
    fn build_ack(&mut self, dialog: &DialogId, seq: u32) -> Result<SipMessage, DialogError> {
        let mut ack = self.dialogs.ack(dialog, seq, &self.cfg.via)?;
        for (name, value) in self.ack_credentials.get(dialog).into_iter().flatten() {
            let _ = ack.push_header(*name, value.clone());
        }
        Ok(ack)
    }

    /// Keeps what the ACK of `invite`'s 2xx in `dialog` must carry: its credentials.
    fn note_ack_credentials(&mut self, dialog: &DialogId, invite: &SipMessage) {
        let credentials: Vec<(HeaderName, Bytes)> = invite
            .headers()
            .filter(|h| {
                matches!(
                    h.name,
                    HeaderName::Authorization | HeaderName::ProxyAuthorization
                )
            })
            .map(|h| (h.name, Bytes::copy_from_slice(h.value)))
            .collect();
        if credentials.is_empty() {
            self.ack_credentials.remove(dialog);
        } else {
            self.ack_credentials.insert(dialog.clone(), credentials);
        }
    }

    /// Sends the held ACK of `dialog` with the application's answer in it.
    fn ack_with_answer(
        &mut self,
        dialog: &DialogId,
        content_type: &str,
        body: Bytes,
    ) -> Result<(), RequestError> {
        let seq = self
            .held_acks
            .waiting(dialog)
            .ok_or(RequestError::NoDialog)?;
        let mut ack = self
            .build_ack(dialog, seq)
            .map_err(|_| RequestError::NoDialog)?;
        ack.set_header(HeaderName::ContentType, content_type.to_owned())
            .map_err(|e| RequestError::Invalid(format!("Content-Type: {e}")))?;
        ack.set_body(body);
        self.layer.send_stateless(&ack, self.proxy_peer);
        self.held_acks.sent(dialog, ack);
        Ok(())
    }

    /// Ends a call answered by a 2xx (INVITE `seq`) that nobody here wants: ACK, then BYE
    /// (§13.2.2.4, §15). With `offer` (the 2xx brought one, the INVITE had none) the ACK
    /// carries an answer refusing every stream, as §13.2.2.4 asks of a UAC that does not
    /// accept the offer. The ACK is kept for retransmissions of the 2xx that cross it:
    /// they get it again, not a new dialog and a second BYE.
    fn end_answered(&mut self, dialog: &DialogId, seq: u32, offer: Option<&[u8]>) {
        let now = Instant::now();
        let Ok(mut ack) = self.build_ack(dialog, seq) else {
            return;
        };
        if let Some(answer) = offer.and_then(refusing_answer) {
            let _ = ack.set_header(HeaderName::ContentType, "application/sdp");
            ack.set_body(answer);
        }
        self.layer.send_stateless(&ack, self.proxy_peer);
        self.bye(now, dialog);
        self.held_acks.keep_sent(dialog.clone(), seq, ack, now);
    }

    /// A 2xx to an INVITE that no pending request waits for: a retransmission (ACK again).
    /// With `ours`, the 2xx matched a client INVITE of this platform whose caller has its
    /// outcome already (another fork's 2xx, or a failure the 2xx came after): its dialog is
    /// made, ACKed and ended with BYE (§13.2.2.4).
    fn on_late_2xx(&mut self, response: &SipMessage, ours: bool) {
        let is_invite_2xx = response.status().is_some_and(|s| (200..300).contains(&s))
            && response.cseq().is_ok_and(|c| c.method() == Method::Invite);
        if !is_invite_2xx {
            return;
        }
        let (Some(id), Ok(seq)) = (uac_dialog_id(response), response.cseq().map(|c| c.seq()))
        else {
            return;
        };
        // A call this platform ended already (its ACK is kept): the ACK again, no more.
        if let On2xx::Resend(ack) = self.held_acks.on_2xx(&id, seq) {
            return self.layer.send_stateless(&ack, self.proxy_peer);
        }
        let confirmed = self
            .dialogs
            .get(&id)
            .map(|d| d.state() != sip_core::dialog::DialogState::Early);
        match confirmed {
            Some(true) => self.ack_2xx(&id, response),
            _ if ours => {
                let made = invite_answered_by(response).and_then(|invite| {
                    match self.dialogs.handle_uac_response(&invite, response) {
                        Ok(made) => Some(made),
                        // One that makes no usable dialog is ended all the same.
                        Err(_) => self
                            .dialogs
                            .confirm_to_end(&invite, response)
                            .ok()
                            .map(DialogUpdate::Confirmed),
                    }
                });
                // After an INVITE without an offer the 2xx brings one, which the ACK
                // refuses; else the 2xx holds the answer and the ACK has no body.
                let offerless = self.offerless_invites.answers_one(response, Instant::now());
                if let Some(DialogUpdate::Confirmed(id)) = made {
                    self.end_answered(&id, seq, offerless.then(|| response.body().as_ref()));
                }
            }
            _ => {}
        }
    }

    /// A proxy's 407 to a request sent inside a dialog whose owner gave credentials: the
    /// request goes again with them, built afresh from the dialog (its next CSeq, a new
    /// branch; RFC 3261 §22.2), or, for a BYE (whose dialog is forgotten when it is sent),
    /// as the BYE sent with CSeq + 1. The same caller waits for the outcome. Refused
    /// credentials or a 401 from the other party end it with
    /// [`RequestError::Authentication`]. Anything else is handed back.
    fn answer_in_dialog_challenge(
        &mut self,
        pending: Pending,
        response: SipMessage,
        status: u16,
    ) -> Option<(Pending, SipMessage)> {
        let Pending { reply, span, kind } = pending;
        let (dialog, invite_usage, refresh, mut challenged) = match kind {
            PendingKind::InDialog {
                dialog,
                invite_usage,
                refresh,
                challenged: Some(challenged),
            } if matches!(status, 401 | 407) => (dialog, invite_usage, refresh, challenged),
            kind => return Some((Pending { reply, span, kind }, response)),
        };
        let reason = String::from_utf8_lossy(response.reason().unwrap_or_default()).into_owned();
        let err = RequestError::Status {
            code: status,
            reason,
            response: Box::new(response),
        };
        let InDialogResend {
            parts,
            sent,
            resend,
        } = &mut *challenged;
        let retry = if parts.method == Method::Bye {
            resend.retry(sent, err, &self.cfg.via)
        } else {
            resend.answers(sent, err).and_then(|answers| {
                let mut parts = parts.clone();
                parts.headers.retain(|(name, _)| {
                    !matches!(
                        HeaderName::from_bytes(name.as_bytes()),
                        HeaderName::Authorization | HeaderName::ProxyAuthorization
                    )
                });
                parts.headers.extend(
                    answers
                        .into_iter()
                        .map(|a| (a.name.as_str().to_owned(), Bytes::from(a.value))),
                );
                self.build_in_dialog(&dialog, parts)
            })
        };
        match retry {
            Ok(request) => {
                let span = crate::platform::resent_span(&request);
                challenged.sent = request.clone();
                let refresh = refresh.map(|_| Box::new(request.clone()));
                self.start_client(
                    Instant::now(),
                    request,
                    reply,
                    span,
                    PendingKind::InDialog {
                        dialog,
                        invite_usage,
                        refresh,
                        challenged: Some(challenged),
                    },
                );
            }
            Err(e) => {
                span.in_scope(|| debug!(error = %e, "challenge inside a dialog not answered"));
                reply.send(Err(e), None);
            }
        }
        None
    }

    fn on_client_final(&mut self, pending: Pending, response: SipMessage, status: u16) {
        let Some((pending, response)) = self.answer_in_dialog_challenge(pending, response, status)
        else {
            return;
        };
        let _g = pending.span.enter();
        debug!(status, "final response");
        let mut made = None;
        let mut unwanted = false;
        // A 2xx that could make no dialog: why the caller is told the call failed.
        let mut unusable = None;
        let mut parked = Vec::new();
        match pending.kind {
            PendingKind::Plain => {}
            PendingKind::InDialog {
                dialog,
                invite_usage,
                refresh,
                ..
            } => match status {
                // The far side no longer knows the dialog: nothing to send it.
                481 => self.forget_dialog(&dialog),
                408 => self.lose_dialog(&dialog, invite_usage),
                200..=299 => {
                    if let Some(request) = refresh {
                        // The new target first: the ACK goes there.
                        if let Err(e) = self.dialogs.handle_uac_response(&request, &response) {
                            debug!(error = %e, "target refresh not applied");
                        }
                        if request.method() == Some(&Method::Invite) {
                            self.note_ack_credentials(&dialog, &request);
                            let offer = response.body();
                            if request.body().is_empty() && !offer.is_empty() {
                                // An offerless re-INVITE: the 2xx's offer is answered in
                                // the ACK, which waits for the application's answer.
                                let seq = response.cseq().map(|c| c.seq()).unwrap_or_default();
                                let now = Instant::now();
                                self.held_acks.hold(dialog.clone(), seq, offer.clone(), now);
                            } else {
                                self.ack_2xx(&dialog, &response);
                            }
                        }
                    }
                }
                _ => {}
            },
            PendingKind::Creating(c) => {
                self.invites.remove(&c.branch);
                if let Some(key) = subscription_key(&c.request) {
                    self.subscribing.remove(&key);
                }
                if c.request.method() == Some(&Method::Invite) {
                    if let Some(key) = call_key(&c.request) {
                        parked = self.inviting.remove(&key).unwrap_or_default();
                    }
                }
                if status >= 300 && c.request.method() == Some(&Method::Invite) {
                    self.failed_invites.remember(&c.request, Instant::now());
                }
                if c.hold_ack {
                    // Other forks may answer yet, with offers (see `on_late_2xx`).
                    self.offerless_invites.remember(&c.request, Instant::now());
                }
                if status >= 300 {
                    for d in &c.notify_dialogs {
                        debug!(dialog = ?d, "subscription refused: the dialog its NOTIFY made ends");
                        self.forget_dialog(d);
                    }
                }
                match self.dialogs.handle_uac_response(&c.request, &response) {
                    Ok(DialogUpdate::Confirmed(id)) => {
                        self.dialogs.set_owner(&id, c.endpoint.0);
                        self.local_targets.note(&id, &c.request, &self.dialogs);
                        if c.request.method() == Some(&Method::Invite) {
                            self.note_ack_credentials(&id, &c.request);
                            let seq = response.cseq().map(|c| c.seq()).unwrap_or_default();
                            // The caller gets this one call: the early dialogs of other
                            // forks end here (a later 2xx of theirs is ACKed and ended
                            // with BYE, see `on_late_2xx`).
                            self.dialogs.terminate_early(id.call_id(), id.local_tag());
                            if c.cancel_asked {
                                debug!("a 2xx came although the INVITE was cancelled: BYE");
                                let offer = c.hold_ack.then(|| response.body().as_ref());
                                self.end_answered(&id, seq, offer);
                                unwanted = true;
                            } else if c.hold_ack {
                                let offer = response.body().clone();
                                self.held_acks.hold(id.clone(), seq, offer, Instant::now());
                            } else {
                                self.ack_2xx(&id, &response);
                            }
                        }
                        made = Some(id).filter(|_| !unwanted);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        debug!(error = %e, "dialog not created");
                        if c.request.method() == Some(&Method::Invite) && status < 300 {
                            // Every 2xx is ACKed (§13.2.2.4): the call is made only to be
                            // ended, and the caller told why.
                            if let Ok(id) = self.dialogs.confirm_to_end(&c.request, &response) {
                                let seq = response.cseq().map(|c| c.seq()).unwrap_or_default();
                                self.dialogs.terminate_early(id.call_id(), id.local_tag());
                                let offer = c.hold_ack.then(|| response.body().as_ref());
                                self.end_answered(&id, seq, offer);
                            }
                            unusable = Some(format!("2xx that makes no usable dialog: {e}"));
                        }
                    }
                }
            }
        }
        let r = if let Some(why) = unusable {
            Err(RequestError::Invalid(why))
        } else if unwanted {
            Err(RequestError::Cancelled)
        } else if (200..300).contains(&status) {
            Ok(response)
        } else if status == 487 {
            Err(RequestError::Cancelled)
        } else {
            let reason =
                String::from_utf8_lossy(response.reason().unwrap_or_default()).into_owned();
            Err(RequestError::Status {
                code: status,
                reason,
                response: Box::new(response),
            })
        };
        pending.reply.send(r, made);
        drop(_g);
        // Requests of the callee that overtook this response: the dialog is made (or
        // not, and they get 481).
        for (id, request, source) in parked {
            self.on_request(Instant::now(), id, request, source, None);
        }
    }

    fn on_client_provisional(&mut self, id: TransactionId, response: SipMessage) {
        let Some(p) = self.pending.get(&id) else {
            return;
        };
        let PendingKind::Creating(c) = &p.kind else {
            return;
        };
        if c.request.method() == Some(&Method::Invite) {
            if let Ok(DialogUpdate::Early(d)) =
                self.dialogs.handle_uac_response(&c.request, &response)
            {
                self.dialogs.set_owner(&d, c.endpoint.0);
            }
        }
        if let Some(tx) = &c.provisional {
            // A full queue drops provisional responses only: they are informative.
            let _ = tx.try_send(response);
        }
    }

    /// A client transaction ended without a final response: early dialogs and waiting
    /// subscriptions go with it; a request inside a dialog that got no response at all ends
    /// the dialog as a 408 does (§12.2.1.2). A transport failure (a 503, §8.1.3.1) ends
    /// only the transaction (RFC 5057 §5.1).
    fn on_client_failed(&mut self, pending: &Pending, timed_out: bool) {
        if let PendingKind::InDialog {
            dialog,
            invite_usage,
            ..
        } = &pending.kind
        {
            if timed_out {
                self.lose_dialog(dialog, *invite_usage);
            }
        }
        if let PendingKind::Creating(c) = &pending.kind {
            self.invites.remove(&c.branch);
            // A 2xx may still come (the proxy keeps its transaction after a lost
            // connection or an unanswered CANCEL): remembered, it is ACKed and ended with
            // BYE (RFC 3261 §13.2.2.4) instead of taken for a stray.
            if c.request.method() == Some(&Method::Invite) {
                self.failed_invites.remember(&c.request, Instant::now());
            }
            // No dialog comes of it: what the callee sent meanwhile gets 481.
            let parked = call_key(&c.request)
                .filter(|_| c.request.method() == Some(&Method::Invite))
                .and_then(|key| self.inviting.remove(&key))
                .unwrap_or_default();
            for (id, request, source) in parked {
                self.on_request(Instant::now(), id, request, source, None);
            }
            if let Some(key) = subscription_key(&c.request) {
                self.subscribing.remove(&key);
            }
            if let (Ok(cid), Ok(from)) = (c.request.call_id(), c.request.from()) {
                if let Some(tag) = from.tag() {
                    self.dialogs.terminate_early(cid, tag);
                }
            }
        }
    }

    /// An incoming request whose transaction ended without the endpoint's final answer
    /// (CANCEL answered 487, timeout, transport failure): the early dialog a 1xx of the
    /// endpoint made ends with it (§12.3), else it would stay for ever.
    fn end_unanswered(&mut self, s: Serving) {
        let Some(id) = s.creates else {
            return;
        };
        if self
            .dialogs
            .get(&id)
            .is_some_and(|d| d.state() == sip_core::dialog::DialogState::Early)
        {
            self.forget_dialog(&id);
        }
    }

    /// When the next 2xx waiting for its ACK is due again (possibly one already ACKed:
    /// waking for it costs one look).
    fn next_ack_timer(&self) -> Option<Instant> {
        let unacked = self.ack_due.peek().map(|Reverse((at, _, _))| *at);
        match (unacked, self.held_acks.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Notes when `invite` (transaction `id`) expires, if it carries an Expires.
    fn arm_expiry(&mut self, now: Instant, id: TransactionId, side: Side, invite: &SipMessage) {
        let (pending, serving) = (&self.pending, &self.serving);
        let waiting = |id, side| match side {
            Side::Client => pending.contains_key(&id),
            Side::Server => serving.contains_key(&id),
        };
        let live = pending.len() + serving.len();
        self.invite_expiry.arm(now, id, side, invite, live, waiting);
    }

    /// INVITEs whose Expires passed without a final response (RFC 3261 §13.2.1,
    /// §13.3.1): ours are cancelled as if the caller asked (the outcome is
    /// [`RequestError::Cancelled`]; a re-INVITE's is its 487, and the dialog stays); a
    /// peer's is answered 487 and its endpoint told, as a
    /// CANCEL does (a late answer is refused). Those answered meanwhile are skipped.
    fn on_invite_expiry(&mut self, now: Instant) {
        for (id, side) in self.invite_expiry.expire(now) {
            match side {
                Side::Client => {
                    let Some(Pending { kind, span, .. }) = self.pending.get_mut(&id) else {
                        continue;
                    };
                    let _g = span.enter();
                    debug!("the INVITE's Expires passed unanswered: cancelled");
                    // A re-INVITE's outcome is then its 487; the dialog stays.
                    if let PendingKind::Creating(c) = kind {
                        c.cancel_asked = true;
                    }
                    if let Err(e) = self.layer.cancel(now, id) {
                        debug!(%id, error = %e, "CANCEL not sent");
                    }
                }
                Side::Server => {
                    let Some(s) = self.serving.remove(&id) else {
                        continue;
                    };
                    if let Some(c) = &s.cancelled {
                        c.cancel(String::new());
                    }
                    // Armed only for INVITEs kept parsed, so there is one to answer.
                    if let Some(invite) = s.request.dialog_maker() {
                        let _g = s.span.enter();
                        debug!("the INVITE's Expires passed unanswered: 487");
                        self.answer(now, id, invite, 487, &[]);
                    }
                    self.end_unanswered(s);
                }
            }
        }
    }

    /// Retransmits the 2xx answers still without ACK that are due (T1 doubling up to T2)
    /// and ends with BYE the sessions whose ACK did not come within 64*T1 (§13.3.1.4).
    fn on_ack_timers(&mut self, now: Instant) {
        for (dialog, seq, offer) in self.held_acks.expire(now) {
            warn!("no answer for the offer in a 2xx within 64*T1: refused in the ACK, BYE");
            self.announce_end(&dialog, DialogEndReason::NoAnswer);
            self.end_answered(&dialog, seq, Some(&offer));
        }
        let t2 = self.layer.config().t2;
        while let Some(Reverse((at, ..))) = self.ack_due.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, dialog, seq))) = self.ack_due.pop() else {
                break;
            };
            let key = (dialog, seq);
            // ACKed, or re-armed for a later time: not due now.
            if self.unacked.get(&key).is_none_or(|u| u.next != at) {
                continue;
            }
            if self.dialogs.get(&key.0).is_none() {
                // Ended meanwhile (BYE either way): nothing left to confirm.
                self.unacked.remove(&key);
                continue;
            }
            let Some(u) = self.unacked.get_mut(&key) else {
                continue;
            };
            if now < u.give_up {
                self.layer.send_stateless(&u.response, u.peer);
                u.interval = (u.interval * 2).min(t2).max(u.interval);
                u.next = (now + u.interval).min(u.give_up);
                self.ack_due.push(Reverse((u.next, key.0, key.1)));
                continue;
            }
            self.unacked.remove(&key);
            warn!("no ACK for a 2xx within 64*T1: ending the session with BYE");
            self.announce_end(&key.0, DialogEndReason::NoAck);
            // The call ends: of what was held for the ACK, only a BYE goes (the
            // application's, else the platform's); the rest fail as the dialog does.
            let mut bye = None;
            for (parts, reply, span) in self.held_for_ack.remove(&key.0).unwrap_or_default() {
                if parts.method == Method::Bye && bye.is_none() {
                    bye = Some((parts, reply, span));
                } else {
                    let _ = reply.send(Err(RequestError::NoDialog));
                }
            }
            match bye {
                Some((parts, reply, span)) => self.send_in_dialog(now, &key.0, parts, reply, span),
                None => self.bye(now, &key.0),
            }
        }
        if sparse(self.ack_due.capacity(), self.ack_due.len()) {
            self.ack_due.shrink_to(self.ack_due.len() * 2);
        }
    }

    /// An endpoint's response to server transaction `transaction`: the dialog it makes is
    /// tracked, a 2xx to INVITE awaits its ACK. Returns the dialog a 481 disowned.
    fn respond(
        &mut self,
        now: Instant,
        transaction: TransactionId,
        response: SipMessage,
        is_final: bool,
    ) -> Option<DialogId> {
        // A final response ends the serving entry; a provisional one only reads it.
        let removed = if is_final {
            self.serving.remove(&transaction)
        } else {
            None
        };
        let entry = removed.as_ref().or_else(|| self.serving.get(&transaction));
        let _g = entry.map(|e| e.span.enter());
        if is_final {
            // As on the client side: the request's outcome, in its transaction's span.
            debug!(
                status = response.status().unwrap_or_default(),
                "final response"
            );
        }
        let mut response = response;
        let mut awaits_ack = None;
        // An endpoint that answers 481 inside a dialog no longer knows it: the
        // dialog ends here too (a subscription's, RFC 6665 §4.1.3, or a call's), or
        // it would stay for ever. Rare, so the request is parsed again only then.
        let disowned = match entry {
            Some(e) if response.status() == Some(481) => e.request.dialog(),
            _ => None,
        };
        if let Some(e) = entry {
            if let Some(request) = e.request.dialog_maker() {
                // What a response that makes or refreshes the dialog carries when the
                // endpoint gave no Contact: the dialog's local target, or for a new dialog
                // the endpoint's default (RFC 3261 §12.1.1 requires one).
                let may_make = response.status().is_some_and(|s| (101..300).contains(&s));
                let contact = match response.header(HeaderName::Contact) {
                    Some(_) => None,
                    None if !may_make => None,
                    None => match request_dialog(request) {
                        Some(d) => self.local_targets.get(&d, &self.dialogs),
                        None => self.local_targets.default_of(e.endpoint.0),
                    },
                };
                let made = track_uas_dialog(
                    &mut self.dialogs,
                    request,
                    &mut response,
                    e.creates.as_ref(),
                    contact.cloned(),
                );
                if let Some(id) = &made {
                    self.dialogs.set_owner(id, e.endpoint.0);
                    // Our Contact in the response that made or refreshed the dialog.
                    self.local_targets.note(id, &response, &self.dialogs);
                }
                let invite_2xx = request.method() == Some(&Method::Invite)
                    && response.status().is_some_and(|s| (200..300).contains(&s));
                if invite_2xx {
                    // A first INVITE's dialog is the one its 2xx made; a re-INVITE's
                    // the one it arrived in.
                    let dialog = made.or_else(|| request_dialog(request));
                    let seq = request.cseq().ok().map(|c| c.seq());
                    let answer_in_ack = request.body().is_empty() && !response.body().is_empty();
                    if let (Some(d), Some(seq)) = (dialog, seq) {
                        awaits_ack = Some(((d, seq), response.clone(), e.source, answer_in_ack));
                    }
                }
            }
        }
        match self.layer.respond(now, transaction, response) {
            Ok(()) => {
                if let Some((key, response, peer, answer_in_ack)) = awaits_ack {
                    let interval = self.layer.config().t1;
                    self.ack_due
                        .push(Reverse((now + interval, key.0.clone(), key.1)));
                    self.unacked.insert(
                        key,
                        Unacked {
                            response,
                            peer,
                            next: now + interval,
                            interval,
                            give_up: now + 64 * interval,
                            transaction,
                            answer_in_ack,
                        },
                    );
                }
            }
            Err(e) => debug!(%transaction, error = %e, "response not sent"),
        }
        disowned
    }

    /// Sends `parts` in `dialog`; the outcome goes to `reply`. After a BYE the dialog is
    /// over (§15.1.1): requests that cross it get 481.
    fn send_in_dialog(
        &mut self,
        now: Instant,
        dialog: &DialogId,
        parts: InDialogParts,
        reply: oneshot::Sender<Result<SipMessage, RequestError>>,
        span: Span,
    ) {
        let awaiting_ack = !self.unacked.is_empty()
            && self
                .unacked
                .range((dialog.clone(), 0)..=(dialog.clone(), u32::MAX))
                .next()
                .is_some();
        if awaiting_ack {
            // Not before the ACK of our 2xx.
            debug!(method = %parts.method.as_str(), "held until the ACK of our 2xx comes");
            self.held_for_ack
                .entry(dialog.clone())
                .or_default()
                .push((parts, reply, span));
            return;
        }
        // Only toward a home party: in a dialog with a federated one, a 407 may come from
        // its side as well as from the home proxy, and nothing tells them apart.
        let credentials = self
            .dialogs
            .get(dialog)
            .and_then(|d| self.dialog_credentials.get(&EndpointId(d.owner())))
            .filter(|_| self.remote_is_on_premises(dialog))
            .cloned();
        let kept = credentials.as_ref().map(|_| parts.clone());
        match self.build_in_dialog(dialog, parts) {
            Ok(request) => {
                let challenged = kept.zip(credentials).map(|(parts, auth)| {
                    Box::new(InDialogResend {
                        parts,
                        sent: request.clone(),
                        resend: Resend::new(auth),
                    })
                });
                let ends = request.method() == Some(&Method::Bye);
                let invite_usage = !ends
                    && !matches!(
                        request.method(),
                        Some(Method::Subscribe | Method::Notify | Method::Refer)
                    );
                let refresh = request
                    .method()
                    .is_some_and(Method::is_target_refresh)
                    .then(|| Box::new(request.clone()));
                self.start_client(
                    now,
                    request,
                    Reply::Plain(reply),
                    span,
                    PendingKind::InDialog {
                        dialog: dialog.clone(),
                        invite_usage,
                        refresh,
                        challenged,
                    },
                );
                if ends {
                    self.forget_dialog(dialog);
                }
            }
            Err(e) => {
                debug!(error = %e, "in-dialog request not built");
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Sends BYE in `dialog` on the platform's own account and forgets the dialog. Nobody
    /// waits for its outcome (the receiver is dropped): a BYE nobody answers ends by its
    /// own Timer F.
    fn bye(&mut self, now: Instant, dialog: &DialogId) {
        let parts = InDialogParts {
            method: Method::Bye,
            headers: Vec::new(),
            body: None,
        };
        let (reply, _) = oneshot::channel();
        let span = tracing::debug_span!(
            "sip_transaction",
            side = "client",
            method = "BYE",
            call_id = %String::from_utf8_lossy(dialog.call_id()),
        );
        self.send_in_dialog(now, dialog, parts, reply, span);
        // A BYE held for the ACK of our 2xx keeps the dialog it is to be sent in
        // (forgetting it would drop the BYE); one sent has forgotten it already.
        if !self.held_for_ack.contains_key(dialog) {
            self.forget_dialog(dialog);
        }
    }

    fn on_feedback(&mut self, f: Feedback) {
        warn!(error = %f.error, "send failed");
        if f.proxy == Some(self.cfg.proxy.remote) {
            self.look_for_proxy();
        }
        // Only for a live transaction: the failure is taken back by its TransportError
        // event. One already ended (a response whose write failed after Timer J) makes no
        // event, and the entry would stay for ever.
        if let Some(id) = f.transaction.filter(|id| self.layer.state(*id).is_some()) {
            self.transport_errors.insert(id, f.error);
            self.layer.handle_transport_error(Instant::now(), id);
        }
    }

    /// Starts a search for a reachable server of the proxy (the one in use first), unless
    /// one is under way (its result unread counts: see `search`), the proxy was given by
    /// address, or the platform is stopping.
    fn look_for_proxy(&mut self) {
        let Some(pool) = &self.cfg.proxy_pool else {
            return;
        };
        if !self.accepting || self.search.is_some() {
            return;
        }
        let search = crate::failover::search(
            self.cfg.transport.clone(),
            pool.clone(),
            self.found_tx.clone(),
        );
        self.search = Some(tokio::spawn(search.in_current_span()).abort_handle());
    }

    /// A search settled on a server: if it is not the one in use, requests go there from
    /// now on (those already sent stay where they went), and endpoints hear of the move
    /// through `proxy_losses`, so they register at the new server. The search is over
    /// only now (see `search`): a loss from here on starts a new one.
    fn on_proxy_found(&mut self, found: crate::failover::Found) {
        self.search = None;
        let pool = found.0;
        let Some(&addr) = pool.servers.get(pool.current) else {
            return;
        };
        let target = pool.target(addr);
        if target != self.cfg.proxy {
            tracing::info!(
                domain = %pool.domain,
                from = %self.cfg.proxy.remote,
                to = %target.remote,
                "outbound proxy: moved to another server"
            );
            self.proxy_peer = Peer::new(target.remote, tk(target.transport));
            self.lanes.remove(&LaneKey::Proxy);
            self.cfg.proxy = target.clone();
            self.cfg.proxy_now.send_replace(target);
            self.cfg.proxy_losses.send_modify(|n| *n += 1);
        }
        self.cfg.proxy_pool = Some(pool);
    }

    fn trust_of(&self, info: &ConnectionInfo) -> bool {
        // The listener the connection came in on: same address (or a wildcard one on its
        // port) and same transport (a UDP listener may share its port with a TCP or TLS
        // one, and opens only itself).
        let kind = match info.transport {
            TransportKind::Tls => Some(ListenerKind::MutualTls),
            TransportKind::Tcp => Some(ListenerKind::Tcp),
            _ => None,
        };
        if info.direction == Direction::Inbound
            && kind.is_some_and(|k| self.listener_opens(k, info.local))
        {
            return true;
        }
        info.peer
            .as_ref()
            .is_some_and(|p| self.cfg.trusted_peers.iter().any(|n| p.matches(n)))
    }

    fn on_transport(&mut self, ev: TransportEvent) {
        match ev {
            TransportEvent::Message(rm) => {
                if let Some(o) = &self.cfg.observer {
                    // The peer's bytes, not the message with its Via stamped.
                    o.observe(crate::WireDirection::Received, rm.remote, rm.wire_bytes());
                }
                let connection = rm.connection.as_ref().map(|info| {
                    let id = info.id.0;
                    if !self.conn_trust.contains_key(&id) {
                        let t = self.trust_of(info);
                        self.conn_trust.insert(id, t);
                    }
                    id
                });
                // RFC 3261 §8.1.3.3: a response to this UA carries only the Via it sent; one
                // with more was misrouted (or corrupted) and is dropped before any
                // transaction takes it for an answer.
                if !rm.message.is_request()
                    && rm.message.header_values(HeaderName::Via).nth(1).is_some()
                {
                    debug!(remote = %rm.remote, "response with more than one Via dropped");
                    return;
                }
                let peer = Peer {
                    addr: rm.remote,
                    transport: tk(rm.transport),
                    connection,
                    // Which listener took it: for a datagram, the only way to know.
                    local: Some(rm.local),
                };
                self.layer.handle_message(Instant::now(), rm.message, peer);
            }
            TransportEvent::Opened(info) => {
                let t = self.trust_of(&info);
                self.conn_trust.insert(info.id.0, t);
            }
            TransportEvent::Closed { connection, reason } => {
                self.conn_trust.remove(&connection.id.0);
                self.lanes.remove(&LaneKey::Connection(connection.id.0));
                let lost_proxy = connection.direction == Direction::Outbound
                    && connection.remote == self.cfg.proxy.remote
                    && !matches!(reason, CloseReason::Local | CloseReason::Shutdown);
                if lost_proxy {
                    self.cfg.proxy_losses.send_modify(|n| *n += 1);
                    self.look_for_proxy();
                }
                if lost_proxy && !self.pending.is_empty() {
                    // Requests in flight on the lost flow get a definite outcome now rather
                    // than at Timer F.
                    warn!(%reason, pending = self.pending.len(), "lost the outbound proxy");
                    let now = Instant::now();
                    let ids: Vec<TransactionId> = self.pending.keys().copied().collect();
                    for id in ids {
                        self.transport_errors
                            .insert(id, TransportError::ConnectionClosed(connection.id.0));
                        self.layer.handle_transport_error(now, id);
                    }
                }
            }
            TransportEvent::Failed { error, remote, .. } => {
                debug!(%remote, %error, "connection failed");
            }
            _ => {}
        }
    }

    async fn pump(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(ev) = self.layer.poll_event() {
                progressed = true;
                self.on_layer_event(ev);
            }
            while let Some(t) = self.layer.poll_transmit() {
                progressed = true;
                self.transmit(t).await;
            }
            if !progressed {
                return;
            }
        }
    }

    fn lane_key(&self, peer: &Peer) -> LaneKey {
        match (peer.connection, peer.transport) {
            (Some(c), _) => LaneKey::Connection(c),
            (None, Tk::Udp) => LaneKey::Udp,
            (None, t) => {
                if peer.addr == self.cfg.proxy.remote && tk(self.cfg.proxy.transport) == t {
                    LaneKey::Proxy
                } else if t == Tk::Tls {
                    LaneKey::Target(Target::tls(peer.addr, peer.addr.ip().to_string()))
                } else {
                    LaneKey::Target(Target::tcp(peer.addr))
                }
            }
        }
    }

    async fn transmit(&mut self, t: Transmit) {
        if let Some(c) = t.destination.connection {
            if !self.conn_trust.contains_key(&c) {
                // The connection closed (its Closed event came): a lane made for it now
                // would never be removed. The send fails as a lane's would.
                let _ = self.feedback_tx.send(Feedback {
                    transaction: t.transaction,
                    error: TransportError::ConnectionClosed(c),
                    proxy: None,
                });
                return;
            }
        }
        let key = self.lane_key(&t.destination);
        // Over UDP the message is read once, here: a response goes where its Via says, not
        // where its request came from, and both the tap and the lane need that address.
        let mut destination = t.destination.addr;
        let mut datagram = None;
        if key == LaneKey::Udp {
            match SipMessage::parse_datagram(t.contents.clone(), &Limits::default()) {
                Ok(m) => {
                    destination = udp_destination(&m, destination);
                    datagram = Some(m);
                }
                Err(e) => {
                    let _ = self.feedback_tx.send(Feedback {
                        transaction: t.transaction,
                        error: TransportError::Io(e.to_string()),
                        proxy: None,
                    });
                    return;
                }
            }
        }
        if let Some(o) = &self.cfg.observer {
            o.observe(crate::WireDirection::Sent, destination, &t.contents);
        }
        let mut bytes = t.contents;
        // Straight to the connection's writer when this lane has nothing queued or in
        // flight (so nothing of it can be overtaken): one task hop less per message. A full
        // writer queue or a closed connection takes the lane, which waits or reports.
        let idle = self.lanes.get(&key).is_none_or(Lane::is_idle);
        if idle {
            let connection = match &key {
                LaneKey::Connection(c) => Some(ConnectionId(*c)),
                LaneKey::Proxy => self.cfg.transport.established(&self.cfg.proxy),
                LaneKey::Target(_) | LaneKey::Udp => None,
            };
            if let Some(c) = connection {
                match self.cfg.transport.try_send_raw(c, bytes) {
                    Ok(()) => return,
                    Err(b) => bytes = b,
                }
            }
        }
        let out = Outgoing {
            bytes,
            transaction: t.transaction,
            destination,
            datagram,
            from: t.destination.local,
        };
        let lane = match self.lanes.get(&key) {
            Some(l) if !l.tx.is_closed() => l.clone(),
            _ => {
                let l = self.spawn_lane(key.clone());
                self.lanes.insert(key, l.clone());
                l
            }
        };
        lane.queued
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let lane = lane.tx;
        let out = match lane.try_send(out) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(o)) => o,
            Err(mpsc::error::TrySendError::Closed(o)) => o,
        };
        // Full: wait (backpressure reaches the callers through the command queue).
        if let Err(mpsc::error::SendError(o)) = lane.send(out).await {
            let _ = self.feedback_tx.send(Feedback {
                transaction: o.transaction,
                error: TransportError::ConnectionClosed(0),
                proxy: None,
            });
        }
    }

    fn spawn_lane(&mut self, key: LaneKey) -> Lane {
        let (tx, mut rx) = mpsc::channel::<Outgoing>(LANE_CAPACITY);
        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let done = queued.clone();
        let transport = self.cfg.transport.clone();
        let feedback = self.feedback_tx.clone();
        let proxy = self.cfg.proxy.clone();
        let proxy_lane = matches!(key, LaneKey::Proxy).then_some(proxy.remote);
        self.lane_tasks.spawn(async move {
            while let Some(o) = rx.recv().await {
                let r = match &key {
                    LaneKey::Connection(c) => transport.send_raw(ConnectionId(*c), o.bytes).await,
                    LaneKey::Proxy => send_to(&transport, &proxy, o.bytes).await,
                    LaneKey::Target(target) => send_to(&transport, target, o.bytes).await,
                    LaneKey::Udp => match (&o.datagram, o.from) {
                        (Some(m), Some(local)) => {
                            transport.send_udp_from(local, o.destination, m).await
                        }
                        (Some(m), None) => transport.send(&Target::udp(o.destination), m).await,
                        (None, _) => Err(TransportError::Io("no datagram to send".into())),
                    },
                };
                if let Err(error) = r {
                    let _ = feedback.send(Feedback {
                        transaction: o.transaction,
                        error,
                        proxy: proxy_lane,
                    });
                }
                done.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            }
        });
        Lane { tx, queued }
    }

    fn on_layer_event(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Request {
                id,
                request,
                source,
                cancels,
            } => self.on_request(now, id, request, source, cancels),
            Event::Response { id, response } => {
                let Some(status) = response.status() else {
                    return;
                };
                if status < 200 {
                    self.on_client_provisional(id, response);
                    return;
                }
                match self.pending.remove(&id) {
                    Some(p) => self.on_client_final(p, response, status),
                    None => self.on_late_2xx(&response, true),
                }
            }
            Event::StrayResponse { response, .. } => {
                let ours = self.failed_invites.answers_one(&response, now);
                self.on_late_2xx(&response, ours)
            }
            // Our INVITE failed and then was answered: ACK that call and end it.
            Event::AnsweredAfterFailure { response, .. } => self.on_late_2xx(&response, true),
            Event::Timeout { id, timer } => {
                if let Some(p) = self.pending.remove(&id) {
                    let _g = p.span.enter();
                    debug!(?timer, "timed out");
                    self.on_client_failed(&p, true);
                    p.reply.fail(RequestError::Timeout);
                }
                if let Some(s) = self.serving.remove(&id) {
                    self.end_unanswered(s);
                }
            }
            Event::TransportError { id } => {
                let e = self
                    .transport_errors
                    .remove(&id)
                    .unwrap_or(TransportError::ConnectionClosed(0));
                if let Some(p) = self.pending.remove(&id) {
                    self.on_client_failed(&p, false);
                    p.reply.fail(RequestError::Transport(e));
                }
                if let Some(s) = self.serving.remove(&id) {
                    self.end_unanswered(s);
                }
            }
            Event::Terminated { id } => {
                self.transport_errors.remove(&id);
                self.merged.forget(id);
                if let Some(p) = self.pending.remove(&id) {
                    self.on_client_failed(&p, true);
                    p.reply.fail(RequestError::Timeout);
                    shrink_if_sparse(&mut self.pending);
                }
                if let Some(s) = self.serving.remove(&id) {
                    self.end_unanswered(s);
                    shrink_if_sparse(&mut self.serving);
                }
            }
            Event::HeldCancel {
                invite,
                cancel: Err(e),
            } => debug!(%invite, error = %e, "held CANCEL not sent"),
            Event::Ack {
                request, source, ..
            } => {
                let seq = request.cseq().ok().map(|c| c.seq());
                if let (Some(d), Some(seq)) = (request_dialog(&request), seq) {
                    let key = (d, seq);
                    if let Some(u) = self.unacked.remove(&key) {
                        // Only the first ACK of a 2xx goes up (later ones answer its
                        // retransmissions), and only one that owes an answer.
                        if u.answer_in_ack && !self.deliver_ack(request, source, &key.0, &u) {
                            // The endpoint's queue is full: the 2xx stays unACKed, and the
                            // ACK its next retransmission draws is offered again.
                            self.unacked.insert(key, u);
                        } else {
                            // What was held for this ACK goes now, in order.
                            for (parts, reply, span) in
                                self.held_for_ack.remove(&key.0).unwrap_or_default()
                            {
                                self.send_in_dialog(now, &key.0, parts, reply, span);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Whether the listener of `kind` that took a message arriving at `local` lets peers
    /// that are not trusted in.
    fn listener_opens(&self, kind: ListenerKind, local: SocketAddr) -> bool {
        listener_at(&self.cfg.listeners, kind, local).is_some_and(|l| l.allow_untrusted)
    }

    fn is_trusted(&self, source: &Peer) -> bool {
        match source.connection {
            Some(c) => self.conn_trust.get(&c).copied().unwrap_or(false),
            // A datagram: the UDP listener it arrived at decides, not any other one (an
            // open UDP listener beside closed ones opens only itself). Without a local
            // address nothing says which listener took it: not trusted.
            None => source
                .local
                .is_some_and(|local| self.listener_opens(ListenerKind::Udp, local)),
        }
    }

    /// The platform's own answer to server transaction `id`, with the To tag of the
    /// endpoint's provisional answer if it sent one (§8.2.6.2: at shutdown the platform
    /// answers requests an endpoint had only begun to answer).
    fn answer(
        &mut self,
        now: Instant,
        id: TransactionId,
        request: &SipMessage,
        status: u16,
        headers: &[(HeaderName, String)],
    ) {
        self.answer_with(
            now,
            id,
            request,
            status,
            sip_core::reason_phrase(status),
            headers,
        );
    }

    /// Sends the platform's own `refusal` of `request`.
    fn refuse(
        &mut self,
        now: Instant,
        id: TransactionId,
        request: &SipMessage,
        refusal: &Refusal,
        trusted: bool,
    ) {
        let reason = refusal.reason_phrase();
        debug!(
            status = refusal.status,
            reason, trusted, "answered by the platform"
        );
        self.answer_with(now, id, request, refusal.status, reason, &refusal.headers);
    }

    fn answer_with(
        &mut self,
        now: Instant,
        id: TransactionId,
        request: &SipMessage,
        status: u16,
        reason: &str,
        headers: &[(HeaderName, String)],
    ) {
        let Ok(mut r) = SipMessage::response_to(request, status, reason) else {
            return;
        };
        let tag = self.layer.sent_to_tag(id);
        let _ = match tag {
            Some(t) => r.set_to_tag(&t),
            None => r.set_to_tag(&crate::request::tag()),
        };
        let _ = r.push_header(HeaderName::Server, self.cfg.server.clone());
        for (n, v) in headers {
            let _ = r.push_header(*n, v.clone());
        }
        if let Err(e) = self.layer.respond(now, id, r) {
            debug!(%id, error = %e, "platform answer not sent");
        }
    }

    /// Where to park `request`, which names no dialog, if the callee of our INVITE sent it
    /// in the dialog before that INVITE's final response reached us (and there is room).
    fn overtaking(&mut self, request: &SipMessage) -> Option<&mut Vec<Parked>> {
        if self.inviting.is_empty()
            || matches!(request.method(), Some(Method::Ack | Method::Cancel) | None)
        {
            return None;
        }
        call_key_as_caller(request)
            .and_then(|k| self.inviting.get_mut(&k))
            .filter(|parked| parked.len() < PARKED_PER_INVITE)
    }

    fn on_request(
        &mut self,
        now: Instant,
        id: TransactionId,
        request: SipMessage,
        source: Peer,
        cancels: Option<TransactionId>,
    ) {
        let method = request.method().cloned();
        // The branch is read only when the span is enabled: no copy per request otherwise.
        let span = if tracing::enabled!(tracing::Level::DEBUG) {
            let via = request.top_via().ok();
            let branch = via.as_ref().and_then(|v| v.branch()).unwrap_or("");
            let call_id = String::from_utf8_lossy(request.call_id().unwrap_or_default());
            tracing::debug_span!(
                "sip_transaction",
                side = "server",
                method = method.as_ref().map(Method::as_str).unwrap_or(""),
                %branch,
                %call_id
            )
        } else {
            Span::none()
        };
        let _g = span.enter();
        if method == Some(Method::Cancel) {
            if let Err(e) = self.layer.answer_cancel(now, id, &request, cancels) {
                debug!(error = %e, "CANCEL not answered");
            }
            if let Some(inv) = cancels {
                if let Some(s) = self.serving.remove(&inv) {
                    if let Some(c) = &s.cancelled {
                        c.cancel(crate::diagnostics::peer_diagnostics(&request));
                    }
                    self.end_unanswered(s);
                }
            }
            return;
        }
        // While stopping, a BYE is still taken: refusing it would leave the call up on
        // both sides (the endpoint would never learn that it ended).
        if !self.accepting && method != Some(Method::Bye) {
            self.answer(
                now,
                id,
                &request,
                503,
                &[(HeaderName::RetryAfter, "30".into())],
            );
            return;
        }
        let trusted = self.is_trusted(&source);
        // §12.2.2: a request of a known dialog goes through the §8.2 checks first, and one
        // they refuse changes nothing (atomicity): a BYE refused 420 must not end the
        // dialog, nor a refused request use up its CSeq number. A dialog whose endpoint is
        // gone (unregistered) has its requests routed by Request-URI, so all of §8.2 runs.
        let mut merge_key = None;
        let known = request_dialog(&request)
            .and_then(|d| self.dialogs.get(&d))
            .map(|d| EndpointId(d.owner()));
        let mut checked = match known {
            None => None,
            Some(EndpointId(0)) => Some(self.route(&request, trusted, false, id, &mut merge_key)),
            Some(owner) => Some(match self.dispatcher.screen_in_dialog(&request, trusted) {
                None => Disposition::Deliver(owner),
                Some(refusal) => Disposition::Respond(refusal),
            }),
        };
        if let Some(Disposition::Respond(refusal)) = checked {
            self.refuse(now, id, &request, &refusal, trusted);
            return;
        }
        let mut dialog = None;
        let unmatched = match self.dialogs.handle_request(&request) {
            Ok(DialogUpdate::Updated(d)) => {
                dialog = Some(d);
                false
            }
            Ok(DialogUpdate::Terminated(mut ids)) => {
                // What waited for the ACK of our 2xx (the peer's BYE came first) fails
                // with the dialog, or its future never resolved.
                for d in &ids {
                    for (_, reply, _) in self.held_for_ack.remove(d).unwrap_or_default() {
                        let _ = reply.send(Err(RequestError::NoDialog));
                    }
                }
                dialog = ids.pop();
                false
            }
            Ok(_) => false,
            Err(DialogError::NoDialog) if method == Some(Method::Notify) => {
                match self.subscription_of(&request) {
                    Some((subscribe, endpoint)) => {
                        // Screened before it makes the dialog: a refused NOTIFY makes none.
                        if let Some(refusal) =
                            self.dispatcher.screen_dialog_maker(&request, trusted)
                        {
                            self.refuse(now, id, &request, &refusal, trusted);
                            return;
                        }
                        dialog = self.notify_for_subscription(subscribe, endpoint, &request);
                        checked = dialog.as_ref().map(|_| Disposition::Deliver(endpoint));
                        dialog.is_none()
                    }
                    None => true,
                }
            }
            Err(DialogError::NoDialog) => match self.overtaking(&request) {
                Some(parked) => {
                    debug!("the callee's request overtook our INVITE's final response: parked");
                    parked.push((id, request, source));
                    return;
                }
                None => true,
            },
            Err(DialogError::OutOfOrder { .. }) => {
                self.answer(now, id, &request, 500, &[]);
                return;
            }
            Err(_) => {
                self.answer(now, id, &request, 400, &[]);
                return;
            }
        };
        // In-dialog requests go to the endpoint that owns the dialog, whatever their
        // Request-URI (our Contact) says; the others are routed by it.
        let disposition = match checked {
            Some(d) => d,
            None => self.route(&request, trusted, unmatched, id, &mut merge_key),
        };
        let endpoint = match disposition {
            Disposition::Deliver(e) => e,
            Disposition::Respond(refusal) => {
                self.refuse(now, id, &request, &refusal, trusted);
                return;
            }
        };
        let caller = match caller_of(&self.cfg.topology, &request) {
            Some(Ok(h)) => h,
            Some(Err(TopologyError::Blocked(_) | TopologyError::NotAllowed(_))) => {
                self.answer(now, id, &request, 403, &[]);
                return;
            }
            _ => {
                self.answer(now, id, &request, 400, &[]);
                return;
            }
        };
        let Some(sender) = self.endpoints.get(&endpoint).cloned() else {
            self.answer(now, id, &request, 404, &[]);
            return;
        };
        let Some(commands) = self.cfg.commands.upgrade() else {
            self.answer(now, id, &request, 503, &[]);
            return;
        };
        if let Homed::Federated(_) = &caller {
            debug!(caller = caller.uri(), "request from a federated party");
        }
        drop(_g);
        let kept = Served::of(&request);
        let mut incoming = IncomingRequest::new(
            request,
            caller,
            endpoint,
            source.addr,
            id,
            commands,
            self.cfg.server.clone(),
            span.clone(),
        );
        let creates = if dialog.is_none() {
            incoming.dialog()
        } else {
            None
        };
        incoming.set_dialog(dialog.or_else(|| creates.clone()));
        let cancelled = (method == Some(Method::Invite))
            .then(|| Arc::new(crate::incoming::Cancellation::default()));
        incoming.set_cancellation(cancelled.clone());
        match sender.try_send(incoming) {
            Ok(()) => {
                if let Some(k) = merge_key {
                    self.merged.track(k, id);
                }
                if let (Served::Parsed(invite), Some(Method::Invite)) = (&kept, &method) {
                    self.arm_expiry(now, id, Side::Server, invite);
                }
                self.serving.insert(
                    id,
                    Serving {
                        span,
                        request: kept,
                        endpoint,
                        creates,
                        cancelled,
                        source,
                    },
                );
            }
            Err(mpsc::error::TrySendError::Full(inc)) => {
                let request = inc.request().clone();
                inc.defuse();
                self.answer(
                    now,
                    id,
                    &request,
                    503,
                    &[(HeaderName::RetryAfter, "1".into())],
                );
            }
            Err(mpsc::error::TrySendError::Closed(inc)) => {
                let request = inc.request().clone();
                inc.defuse();
                self.forget_endpoint(endpoint);
                self.answer(now, id, &request, 480, &[]);
            }
        }
    }
}

impl Driver {
    /// Hands the ACK of `unacked` (a 2xx that carried an offer) to the endpoint owning
    /// `dialog`, already answered (an ACK has no response). False only when the
    /// endpoint's queue is full: the caller keeps the 2xx unACKed, so it is offered again.
    fn deliver_ack(
        &mut self,
        ack: SipMessage,
        source: Peer,
        dialog: &DialogId,
        unacked: &Unacked,
    ) -> bool {
        let Some(owner) = self
            .dialogs
            .get(dialog)
            .map(|d| d.owner())
            .filter(|o| *o != 0)
            .map(EndpointId)
        else {
            return true;
        };
        let (Some(sender), Some(commands)) = (
            self.endpoints.get(&owner).cloned(),
            self.cfg.commands.upgrade(),
        ) else {
            return true;
        };
        let Some(Ok(caller)) = caller_of(&self.cfg.topology, &ack) else {
            debug!("ACK from an unclassified caller not delivered");
            return true;
        };
        let mut incoming = IncomingRequest::new(
            ack,
            caller,
            owner,
            source.addr,
            unacked.transaction,
            commands,
            self.cfg.server.clone(),
            Span::none(),
        );
        incoming.set_dialog(Some(dialog.clone()));
        incoming.set_unanswerable();
        !matches!(
            sender.try_send(incoming),
            Err(mpsc::error::TrySendError::Full(_))
        )
    }

    /// Where `request` goes when no dialog's endpoint decides it: the §8.2 checks and the
    /// routing by Request-URI of [`Dispatcher::dispatch`].
    ///
    /// §8.2.2.2: the same request outside a dialog on a second transaction to the same
    /// endpoint (a forking proxy's branches met again here) is refused 482, else it would
    /// make a second call or show an IM twice. The dispatcher asks once it knows the
    /// endpoint, so that 482 comes after 404 and before 420 and 415; `merge_key` is what
    /// to track the request by once delivered.
    fn route(
        &self,
        request: &SipMessage,
        trusted: bool,
        unmatched: bool,
        id: TransactionId,
        merge_key: &mut Option<MergeKey>,
    ) -> Disposition {
        let topology = &self.cfg.topology;
        let merged = &self.merged;
        self.dispatcher.dispatch(
            request,
            trusted,
            unmatched,
            |uri| for_home(topology, uri),
            |endpoint| {
                *merge_key = MergeKey::of(request, endpoint);
                merge_key.as_ref().is_some_and(|k| merged.is_merged(k, id))
            },
        )
    }

    /// The SUBSCRIBE or REFER still waiting for its final response that `notify` (which
    /// matched no dialog) belongs to, and the endpoint that sent it (RFC 6665 §4.1.2.4).
    fn subscription_of(&self, notify: &SipMessage) -> Option<(TransactionId, EndpointId)> {
        let cid = Bytes::copy_from_slice(notify.call_id().ok()?);
        let tag = Bytes::copy_from_slice(notify.to().ok()?.tag()?);
        let tx = *self.subscribing.get(&(cid, tag))?;
        match &self.pending.get(&tx)?.kind {
            PendingKind::Creating(c) => Some((tx, c.endpoint)),
            _ => None,
        }
    }

    /// Makes the dialog of subscription `subscribe` (see [`subscription_of`]) for its
    /// `notify`, owned by `endpoint`: the NOTIFY overtook the 2xx (RFC 6665 §4.1.2.4).
    ///
    /// [`subscription_of`]: Self::subscription_of
    fn notify_for_subscription(
        &mut self,
        subscribe: TransactionId,
        endpoint: EndpointId,
        notify: &SipMessage,
    ) -> Option<DialogId> {
        let PendingKind::Creating(c) = &mut self.pending.get_mut(&subscribe)?.kind else {
            return None;
        };
        match self.dialogs.handle_notify(&c.request, notify) {
            Ok(DialogUpdate::Confirmed(d)) | Ok(DialogUpdate::Updated(d)) => {
                self.dialogs.set_owner(&d, endpoint.0);
                self.local_targets.note(&d, &c.request, &self.dialogs);
                if !c.notify_dialogs.contains(&d) {
                    c.notify_dialogs.push(d.clone());
                }
                Some(d)
            }
            _ => None,
        }
    }
}

/// The dialog a received request names: (Call-ID, To tag, From tag).
fn request_dialog(request: &SipMessage) -> Option<DialogId> {
    let to = request.to().ok()?;
    let from = request.from().ok()?;
    Some(DialogId::new(
        request.call_id().ok()?,
        to.tag()?,
        from.tag().unwrap_or_default(),
    ))
}

/// The INVITE a 2xx answers, as far as making its dialog needs it (From with our tag,
/// Call-ID, CSeq; no To tag): for a fork's 2xx that arrives after the INVITE's request was
/// let go. Its Request-URI is a placeholder, never sent.
fn invite_answered_by(response: &SipMessage) -> Option<SipMessage> {
    let copy = |n: HeaderName| response.header(n).map(Bytes::copy_from_slice);
    SipMessage::request(Method::Invite, Bytes::from_static(b"sip:fork.invalid"))
        .header(HeaderName::Via, copy(HeaderName::Via)?)
        .header(HeaderName::MaxForwards, Bytes::from_static(b"70"))
        .header(HeaderName::From, copy(HeaderName::From)?)
        .header(HeaderName::To, Bytes::from_static(b"<sip:fork.invalid>"))
        .header(HeaderName::CallId, copy(HeaderName::CallId)?)
        .header(HeaderName::CSeq, copy(HeaderName::CSeq)?)
        .build()
        .ok()
}

/// (Call-ID, From tag) of a SUBSCRIBE or REFER: what its NOTIFYs carry.
fn subscription_key(request: &SipMessage) -> Option<(Bytes, Bytes)> {
    if !matches!(request.method(), Some(Method::Subscribe | Method::Refer)) {
        return None;
    }
    call_key(request)
}

/// (Call-ID, To tag) of a request the far end sends in a dialog we started: the
/// [`call_key`] of our request that started it.
fn call_key_as_caller(request: &SipMessage) -> Option<(Bytes, Bytes)> {
    let cid = Bytes::copy_from_slice(request.call_id().ok()?);
    let tag = Bytes::copy_from_slice(request.to().ok()?.tag()?);
    Some((cid, tag))
}

/// Gives a table's memory back once it is mostly empty: hash tables never shrink by
/// themselves, and one burst (100 000 calls set up at once, each INVITE transaction kept
/// 32 s in Accepted) would otherwise pin its peak for the platform's life. Shrinking at a
/// quarter full to half full keeps the cost amortised O(1) per removal.
pub(crate) fn shrink_if_sparse<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    if sparse(map.capacity(), map.len()) {
        map.shrink_to(map.len() * 2);
    }
}

/// A table of `capacity` holding `len` is worth shrinking (to twice `len`): large, and
/// under a quarter full (after a burst).
fn sparse(capacity: usize, len: usize) -> bool {
    capacity > 1024 && len * 4 < capacity
}

/// The UAC dialog a response belongs to: (Call-ID, From tag, To tag). A response without
/// a To tag (from an RFC 2543 UAS) names the dialog whose remote tag is null, as sip-core's
/// dialogs key the one its 2xx makes (RFC 3261 §12.1.2), so each retransmission of that
/// 2xx is found and ACKed (§13.2.2.4).
pub(crate) fn uac_dialog_id(response: &SipMessage) -> Option<DialogId> {
    let cid = response.call_id().ok()?;
    let local = response.from().ok()?.tag()?.to_vec();
    let remote = response.to().ok()?.tag().unwrap_or_default().to_vec();
    Some(DialogId::new(cid, &local, &remote))
}

/// Where a message the transaction layer addressed to `recorded` goes by UDP: a request
/// there; a response where its top Via says (RFC 3261 §18.2.2), since a server
/// transaction knows only where its request came from. The UDP lane sends by it and the
/// wire tap records it, so the two cannot disagree. No request takes this path today:
/// every request goes to the outbound proxy over TLS or TCP, so RFC 3261 §18.1.1's move
/// of a large request to TCP has nothing to do here (the transport refuses one with
/// `TooLargeForUdp` should that change).
fn udp_destination(message: &SipMessage, recorded: SocketAddr) -> SocketAddr {
    if message.is_request() {
        recorded
    } else {
        transport_tls::udp_response_to(message, recorded)
    }
}

/// Sends `bytes` on the connection to `target`, connecting first if there is none.
async fn send_to(
    transport: &SipTransport,
    target: &Target,
    bytes: Bytes,
) -> Result<(), TransportError> {
    let connection = transport.connect(target).await?;
    transport.send_raw(connection, bytes).await
}

/// An endpoint's 1xx-with-tag or 2xx to an INVITE creates (or confirms) the UAS dialog, so
/// the ACK, BYE and re-INVITEs that follow are matched to it instead of being refused 481;
/// a 2xx to a SUBSCRIBE or REFER creates the notifier's dialog for its NOTIFYs.
/// The UAS copies Record-Route into such responses so the caller learns the route set
/// (RFC 3261 §12.1.1).
fn track_uas_dialog(
    dialogs: &mut Dialogs,
    request: &SipMessage,
    response: &mut SipMessage,
    id: Option<&DialogId>,
    contact: Option<Bytes>,
) -> Option<DialogId> {
    let creates = match request.method() {
        Some(Method::Invite) => response.status().is_some_and(|s| (101..300).contains(&s)),
        Some(Method::Subscribe | Method::Refer) => {
            response.status().is_some_and(|s| (200..300).contains(&s))
        }
        _ => false,
    };
    if !creates {
        if request.method() == Some(&Method::Invite) && response.status().is_some_and(|s| s >= 300)
        {
            // A failure ends the early dialog a 1xx made.
            let _ = dialogs.handle_uas_response(request, response);
        }
        return None;
    }
    if let Some(c) = contact {
        let _ = response.push_header(HeaderName::Contact, c);
    }
    if response.header(HeaderName::RecordRoute).is_none() {
        for rr in request
            .headers()
            .filter(|h| h.name == HeaderName::RecordRoute)
        {
            let _ = response.push_header(
                HeaderName::RecordRoute,
                bytes::Bytes::copy_from_slice(rr.value),
            );
        }
    }
    match dialogs.handle_uas_response_as(request, response, id) {
        Ok(DialogUpdate::Early(id) | DialogUpdate::Confirmed(id) | DialogUpdate::Updated(id)) => {
            Some(id)
        }
        Ok(_) => None,
        Err(e) => {
            debug!(error = %e, "dialog not created");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_that_emptied_gives_its_memory_back() {
        let mut m: HashMap<u64, [u8; 64]> = HashMap::new();
        for i in 0..100_000 {
            m.insert(i, [0; 64]);
        }
        let peak = m.capacity();
        for i in 0..99_990 {
            m.remove(&i);
            shrink_if_sparse(&mut m);
        }
        assert_eq!(m.len(), 10);
        assert!(m.capacity() <= 2048, "{} of {peak}", m.capacity());
        assert!((99_990..100_000).all(|i| m.contains_key(&i)));
    }
    use sip_core::transaction::TransportKind as Tk;

    /// The id the runtime reads off a 2xx is the one sip-core's dialogs gave the dialog it
    /// made, with a To tag and without one (RFC 2543 UAS: null remote tag, §12.1.2).
    #[test]
    fn the_uac_dialog_id_of_a_2xx_is_the_dialog_layers() {
        let parse =
            |raw: String| SipMessage::parse_datagram(Bytes::from(raw), &Limits::default()).unwrap();
        let invite = parse(
            "INVITE sip:bob@contoso.test SIP/2.0\r\n\
             Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-1\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:app@contoso.test>;tag=a1\r\n\
             To: <sip:bob@contoso.test>\r\n\
             Call-ID: c1@contoso.test\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:app@127.0.0.1:9>\r\n\
             Content-Length: 0\r\n\r\n"
                .into(),
        );
        for to_tag in [";tag=b1", ""] {
            let ok = parse(format!(
                "SIP/2.0 200 OK\r\n\
                 Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-1\r\n\
                 From: <sip:app@contoso.test>;tag=a1\r\n\
                 To: <sip:bob@contoso.test>{to_tag}\r\n\
                 Call-ID: c1@contoso.test\r\n\
                 CSeq: 1 INVITE\r\n\
                 Contact: <sip:bob@127.0.0.1:10>\r\n\
                 Content-Length: 0\r\n\r\n"
            ));
            let mut dialogs = Dialogs::new();
            let Ok(DialogUpdate::Confirmed(made)) = dialogs.handle_uac_response(&invite, &ok)
            else {
                panic!("no dialog for {to_tag:?}");
            };
            assert_eq!(uac_dialog_id(&ok), Some(made), "{to_tag:?}");
        }
    }

    /// A driver that is never run: its handlers are called directly.
    fn driver() -> Driver {
        let (transport, _events) =
            SipTransport::new(transport_tls::TransportSettings::default()).unwrap();
        let (commands, _rx) = mpsc::channel(1);
        let proxy = Target::tcp("127.0.0.1:9".parse().unwrap());
        Driver::new(DriverConfig {
            transport,
            proxy: proxy.clone(),
            listeners: Vec::new(),
            trusted_peers: Vec::new(),
            topology: Topology::new(["contoso.test"]),
            server: Bytes::from_static(b"ucma-rs test"),
            transaction: Default::default(),
            commands: commands.downgrade(),
            observer: None,
            via: "SIP/2.0/TCP 127.0.0.1:9;rport".into(),
            identities: Default::default(),
            user_agent: Bytes::from_static(b"ucma-rs test"),
            proxy_losses: tokio::sync::watch::Sender::new(0),
            dialog_endings: tokio::sync::broadcast::Sender::new(4),
            stopping: tokio::sync::watch::Sender::new(false),
            proxy_pool: None,
            proxy_now: tokio::sync::watch::Sender::new(proxy),
        })
        .0
    }

    #[tokio::test]
    async fn a_send_failure_reported_after_its_transaction_ended_is_not_kept() {
        let mut d = driver();
        let raw = "MESSAGE sip:bot@contoso.test SIP/2.0\r\n\
                   Via: SIP/2.0/TCP 192.0.2.1:5060;branch=z9hG4bK-1\r\n\
                   Max-Forwards: 70\r\n\
                   From: <sip:alice@contoso.test>;tag=a1\r\n\
                   To: <sip:bot@contoso.test>\r\n\
                   Call-ID: c1@contoso.test\r\n\
                   CSeq: 1 MESSAGE\r\n\
                   Content-Length: 0\r\n\r\n";
        let request = SipMessage::parse_datagram(Bytes::from(raw), &Limits::default()).unwrap();
        let peer = Peer {
            addr: "192.0.2.1:5060".parse().unwrap(),
            transport: Tk::Tcp,
            connection: Some(7),
            local: None,
        };
        let now = Instant::now();
        d.layer.handle_message(now, request, peer);
        let Some(Event::Request { id, request, .. }) = d.layer.poll_event() else {
            panic!("a request");
        };
        // Answered on a reliable transport: the transaction ends at once (Timer J is 0).
        let ok = SipMessage::response_to(&request, 200, "OK").unwrap();
        d.layer.respond(now, id, ok).unwrap();
        d.layer.handle_timeout(now);
        while d.layer.poll_event().is_some() {}
        assert!(d.layer.state(id).is_none());
        // The lane's write of that 200 fails afterwards (the connection closed).
        d.on_feedback(Feedback {
            transaction: Some(id),
            error: TransportError::ConnectionClosed(7),
            proxy: None,
        });
        while let Some(ev) = d.layer.poll_event() {
            d.on_layer_event(ev);
        }
        assert!(d.transport_errors.is_empty(), "kept for a transaction gone");
    }

    #[tokio::test]
    async fn a_message_for_a_connection_that_closed_starts_no_lane() {
        let mut d = driver();
        // Connection 7 brought a request and closed before the answer was sent: its Closed
        // event took it out of the connections the driver knows (none here).
        d.transmit(Transmit {
            destination: Peer {
                addr: "192.0.2.1:5060".parse().unwrap(),
                transport: Tk::Tcp,
                connection: Some(7),
                local: None,
            },
            contents: Bytes::from_static(b"SIP/2.0 200 OK\r\n\r\n"),
            transaction: None,
        })
        .await;
        // A lane made now would wait for ever for a connection that is gone.
        assert!(d.lanes.is_empty());
    }

    /// A search whose result the driver has not read yet still counts, so a failure
    /// reported meanwhile on the lost server makes one move (A to B), not A to B to A.
    #[tokio::test]
    async fn a_finished_search_whose_result_is_unread_starts_no_second_one() {
        let a = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let b_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = b_listener.local_addr().unwrap();
        let mut d = driver();
        d.cfg.proxy = Target::tcp(a);
        d.proxy_peer = Peer::new(a, Tk::Tcp);
        d.cfg.proxy_pool = Some(crate::failover::ProxyPool {
            domain: "fe.contoso.test".into(),
            locate: crate::locate::LocateTarget::sip_domain("fe.contoso.test"),
            locator: crate::locate::ServerLocator::new().without_dns(),
            transport: crate::settings::ProxyTransport::Tcp,
            servers: vec![a, b],
            current: 0,
        });
        let mut found = d.found_rx.take().unwrap();
        let mut losses = d.cfg.proxy_losses.subscribe();
        // A is lost: the search finds B.
        d.look_for_proxy();
        let first = tokio::time::timeout(Duration::from_secs(5), found.recv())
            .await
            .expect("first search ends")
            .expect("found");
        while !d.search.as_ref().is_some_and(|s| s.is_finished()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A restarts (it was only restarting), and a request sent to A during the search
        // reports its failure before the driver takes the search's result.
        let _a_back = std::net::TcpListener::bind(a).unwrap();
        d.on_feedback(Feedback {
            transaction: None,
            error: TransportError::ConnectionClosed(0),
            proxy: Some(a),
        });
        d.on_proxy_found(first);
        // A second search would report too.
        if let Ok(Some(second)) = tokio::time::timeout(Duration::from_secs(3), found.recv()).await {
            d.on_proxy_found(second);
        }
        losses.mark_changed();
        let moves = *losses.borrow_and_update();
        assert_eq!(
            moves, 1,
            "one loss must make one move, not A->B->A (A {a}, B {b}, now at {})",
            d.cfg.proxy.remote
        );
        assert_eq!(d.cfg.proxy.remote, b);
        // Once the result is read, a later loss does start a search.
        d.look_for_proxy();
        assert!(
            d.search.is_some(),
            "a loss after the result is read searches again"
        );
    }
}
