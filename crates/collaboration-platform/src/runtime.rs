//! The driver: one task owns the [`TransactionLayer`], the [`Dialogs`] and the
//! [`Dispatcher`], and is fed by the transport's event channel, a bounded command channel
//! (requests to send, responses to incoming requests, endpoint registrations) and the clock
//! (it sleeps until `poll_timeout`). Nothing on the message path takes a lock; there is no
//! task per transaction. Bytes leave through one *lane* task per destination (connection or
//! target), so a slow connection or a connection attempt never stalls the driver; lanes
//! report send failures back on a channel bounded by the lanes' own queues.

use crate::dispatch::{Capabilities, Dispatcher, Disposition, EndpointId};
use crate::error::RequestError;
use crate::incoming::IncomingRequest;
use crate::settings::ListenerKind;
use crate::topology::{Address, Homed, OnPremises, Topology, TopologyError};
use bytes::Bytes;
use sip_core::transaction::{
    Event, Peer, TransactionId, TransactionLayer, Transmit, TransportKind as Tk,
};
use sip_core::{DialogError, Dialogs, HeaderName, Limits, Method, SipMessage};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{debug, warn, Span};
use transport_tls::{
    CloseReason, ConnectionId, ConnectionInfo, Direction, SipTransport, Target, TransportError,
    TransportEvent, TransportKind,
};

/// What callers ask of the driver.
#[derive(Debug)]
pub(crate) enum Command {
    /// Start a client transaction to the outbound proxy.
    Send {
        request: SipMessage,
        reply: oneshot::Sender<Result<SipMessage, RequestError>>,
        span: Span,
    },
    /// An endpoint's response to server transaction `transaction`.
    Respond {
        transaction: TransactionId,
        response: SipMessage,
        is_final: bool,
    },
    /// Route requests to a new endpoint.
    Register {
        id: EndpointId,
        owner: Address<OnPremises>,
        gruu: Option<String>,
        default_routing: bool,
        sender: mpsc::Sender<IncomingRequest>,
    },
    /// Forget an endpoint.
    Unregister { id: EndpointId },
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
}

/// Bytes for a lane.
struct Outgoing {
    bytes: Bytes,
    transaction: Option<TransactionId>,
    destination: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LaneKey {
    Connection(u64),
    Target(Target),
    Udp,
}

struct Pending {
    reply: oneshot::Sender<Result<SipMessage, RequestError>>,
    span: Span,
}

/// A bound listener and its trust policy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BoundListener {
    pub kind: ListenerKind,
    pub addr: SocketAddr,
    pub allow_untrusted: bool,
}

/// What the driver is configured with.
pub(crate) struct DriverConfig {
    pub transport: SipTransport,
    pub proxy: Target,
    pub listeners: Vec<BoundListener>,
    pub trusted_peers: Vec<String>,
    pub topology: Topology,
    pub server: Arc<str>,
    pub transaction: sip_core::transaction::TransactionConfig,
    pub commands: mpsc::WeakSender<Command>,
    pub observer: Option<Arc<dyn crate::MessageObserver>>,
}

pub(crate) struct Driver {
    cfg: DriverConfig,
    proxy_peer: Peer,
    layer: TransactionLayer,
    dialogs: Dialogs,
    dispatcher: Dispatcher,
    endpoints: HashMap<EndpointId, mpsc::Sender<IncomingRequest>>,
    pending: HashMap<TransactionId, Pending>,
    serving: HashMap<TransactionId, (Span, SipMessage)>,
    conn_trust: HashMap<u64, bool>,
    transport_errors: HashMap<TransactionId, TransportError>,
    lanes: HashMap<LaneKey, mpsc::Sender<Outgoing>>,
    lane_tasks: JoinSet<()>,
    feedback_tx: mpsc::UnboundedSender<Feedback>,
    accepting: bool,
    shutdown: Option<Stopping>,
}

struct Stopping {
    deadline: Instant,
    done: Vec<oneshot::Sender<ShutdownReport>>,
    live_at_start: usize,
}

const LANE_CAPACITY: usize = 1024;
const BATCH: usize = 128;

fn tk(t: TransportKind) -> Tk {
    match t {
        TransportKind::Udp => Tk::Udp,
        TransportKind::Tls => Tk::Tls,
        _ => Tk::Tcp,
    }
}

impl Driver {
    pub(crate) fn new(cfg: DriverConfig) -> (Driver, mpsc::UnboundedReceiver<Feedback>) {
        let (feedback_tx, feedback_rx) = mpsc::unbounded_channel();
        let proxy_peer = Peer::new(cfg.proxy.remote, tk(cfg.proxy.transport));
        let layer = TransactionLayer::new(cfg.transaction);
        (
            Driver {
                proxy_peer,
                layer,
                dialogs: Dialogs::new(),
                dispatcher: Dispatcher::new(Capabilities::default()),
                endpoints: HashMap::new(),
                pending: HashMap::new(),
                serving: HashMap::new(),
                conn_trust: HashMap::new(),
                transport_errors: HashMap::new(),
                lanes: HashMap::new(),
                lane_tasks: JoinSet::new(),
                feedback_tx,
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
        loop {
            let wake = match (self.layer.poll_timeout(), self.shutdown.as_ref()) {
                (Some(t), Some(s)) => Some(t.min(s.deadline)),
                (t, s) => t.or(s.map(|s| s.deadline)),
            };
            let wake = wake.map(tokio::time::Instant::from_std).unwrap_or_else(far);
            if sleep.deadline() != wake {
                sleep.as_mut().reset(wake);
            }
            tokio::select! {
                biased;
                Some(f) = feedback.recv() => self.on_feedback(f),
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
            self.layer.handle_timeout(Instant::now());
            self.pump().await;
            if self.shutdown_due() {
                self.finish().await;
                return;
            }
        }
    }

    fn live(&self) -> usize {
        self.pending.len() + self.serving.len()
    }

    fn begin_shutdown(&mut self, grace: Duration, done: Option<oneshot::Sender<ShutdownReport>>) {
        self.accepting = false;
        let deadline = Instant::now() + grace;
        let live = self.live();
        let s = self.shutdown.get_or_insert(Stopping {
            deadline,
            done: Vec::new(),
            live_at_start: live,
        });
        s.deadline = s.deadline.min(deadline);
        s.done.extend(done);
    }

    fn shutdown_due(&self) -> bool {
        match &self.shutdown {
            Some(s) => self.live() == 0 || Instant::now() >= s.deadline,
            None => false,
        }
    }

    /// Cancels what is left with a definite outcome, flushes the lanes, closes connections.
    async fn finish(mut self) {
        let now = Instant::now();
        let cancelled = self.live();
        for (_, p) in self.pending.drain() {
            let _ = p.reply.send(Err(RequestError::Shutdown));
        }
        let serving: Vec<(TransactionId, SipMessage)> =
            self.serving.drain().map(|(id, (_, r))| (id, r)).collect();
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
        let tasks = std::mem::take(&mut self.lane_tasks);
        let _ = tokio::time::timeout(Duration::from_secs(2), tasks.join_all()).await;
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
                if !self.accepting {
                    let _ = reply.send(Err(RequestError::Shutdown));
                    return;
                }
                let _g = span.enter();
                match self.layer.send_request(now, request, self.proxy_peer) {
                    Ok(id) => {
                        debug!(%id, "sent");
                        drop(_g);
                        self.pending.insert(id, Pending { reply, span });
                    }
                    Err(e) => {
                        let _ = reply.send(Err(RequestError::Invalid(e.to_string())));
                    }
                }
            }
            Command::Respond {
                transaction,
                response,
                is_final,
            } => {
                // A final response ends the serving entry; a provisional one only reads it.
                let removed = if is_final {
                    self.serving.remove(&transaction)
                } else {
                    None
                };
                let entry = removed.as_ref().or_else(|| self.serving.get(&transaction));
                let _g = entry.map(|(span, _)| span.enter());
                let mut response = response;
                if let Some((_, request)) = entry {
                    track_uas_dialog(&mut self.dialogs, request, &mut response);
                }
                if let Err(e) = self.layer.respond(now, transaction, response) {
                    debug!(%transaction, error = %e, "response not sent");
                }
            }
            Command::Register {
                id,
                owner,
                gruu,
                default_routing,
                sender,
            } => {
                self.dispatcher.add_owner(&owner, id);
                if let Some(g) = gruu {
                    self.dispatcher.add_gruu(&g, id);
                }
                if default_routing {
                    self.dispatcher.set_default(Some(id));
                }
                self.endpoints.insert(id, sender);
            }
            Command::Unregister { id } => {
                self.dispatcher.remove(id);
                self.endpoints.remove(&id);
            }
            Command::Shutdown { grace, done } => self.begin_shutdown(grace, Some(done)),
        }
    }

    fn on_feedback(&mut self, f: Feedback) {
        warn!(error = %f.error, "send failed");
        if let Some(id) = f.transaction {
            self.transport_errors.insert(id, f.error);
            self.layer.handle_transport_error(Instant::now(), id);
        }
    }

    fn trust_of(&self, info: &ConnectionInfo) -> bool {
        if info.direction == Direction::Inbound
            && self
                .cfg
                .listeners
                .iter()
                .any(|l| l.addr == info.local && l.allow_untrusted)
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
                    o.observe(
                        crate::WireDirection::Received,
                        rm.remote,
                        &rm.message.to_bytes(),
                    );
                }
                let connection = rm.connection.as_ref().map(|info| {
                    let id = info.id.0;
                    if !self.conn_trust.contains_key(&id) {
                        let t = self.trust_of(info);
                        self.conn_trust.insert(id, t);
                    }
                    id
                });
                let peer = Peer {
                    addr: rm.remote,
                    transport: tk(rm.transport),
                    connection,
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
                    LaneKey::Target(self.cfg.proxy.clone())
                } else if t == Tk::Tls {
                    LaneKey::Target(Target::tls(peer.addr, peer.addr.ip().to_string()))
                } else {
                    LaneKey::Target(Target::tcp(peer.addr))
                }
            }
        }
    }

    async fn transmit(&mut self, t: Transmit) {
        if let Some(o) = &self.cfg.observer {
            o.observe(crate::WireDirection::Sent, t.destination.addr, &t.contents);
        }
        let key = self.lane_key(&t.destination);
        let out = Outgoing {
            bytes: t.contents,
            transaction: t.transaction,
            destination: t.destination.addr,
        };
        let lane = match self.lanes.get(&key) {
            Some(l) if !l.is_closed() => l.clone(),
            _ => {
                let l = self.spawn_lane(key.clone());
                self.lanes.insert(key, l.clone());
                l
            }
        };
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
            });
        }
    }

    fn spawn_lane(&mut self, key: LaneKey) -> mpsc::Sender<Outgoing> {
        let (tx, mut rx) = mpsc::channel::<Outgoing>(LANE_CAPACITY);
        let transport = self.cfg.transport.clone();
        let feedback = self.feedback_tx.clone();
        self.lane_tasks.spawn(async move {
            while let Some(o) = rx.recv().await {
                let r = match &key {
                    LaneKey::Connection(c) => transport.send_raw(ConnectionId(*c), o.bytes).await,
                    LaneKey::Target(target) => match transport.connect(target).await {
                        Ok(c) => transport.send_raw(c, o.bytes).await,
                        Err(e) => Err(e),
                    },
                    LaneKey::Udp => match SipMessage::parse_datagram(o.bytes, &Limits::default()) {
                        Ok(m) => transport.send(&Target::udp(o.destination), &m).await,
                        Err(e) => Err(TransportError::Io(e.to_string())),
                    },
                };
                if let Err(error) = r {
                    let _ = feedback.send(Feedback {
                        transaction: o.transaction,
                        error,
                    });
                }
            }
        });
        tx
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
                    return;
                }
                if let Some(p) = self.pending.remove(&id) {
                    let _g = p.span.enter();
                    debug!(status, "final response");
                    let r = if (200..300).contains(&status) {
                        Ok(response)
                    } else {
                        let reason = String::from_utf8_lossy(response.reason().unwrap_or_default())
                            .into_owned();
                        Err(RequestError::Status {
                            code: status,
                            reason,
                            response: Box::new(response),
                        })
                    };
                    let _ = p.reply.send(r);
                }
            }
            Event::Timeout { id, timer } => {
                if let Some(p) = self.pending.remove(&id) {
                    let _g = p.span.enter();
                    debug!(?timer, "timed out");
                    let _ = p.reply.send(Err(RequestError::Timeout));
                }
                self.serving.remove(&id);
            }
            Event::TransportError { id } => {
                let e = self
                    .transport_errors
                    .remove(&id)
                    .unwrap_or(TransportError::ConnectionClosed(0));
                if let Some(p) = self.pending.remove(&id) {
                    let _ = p.reply.send(Err(RequestError::Transport(e)));
                }
                self.serving.remove(&id);
            }
            Event::Terminated { id } => {
                self.transport_errors.remove(&id);
                if let Some(p) = self.pending.remove(&id) {
                    let _ = p.reply.send(Err(RequestError::Timeout));
                }
                self.serving.remove(&id);
            }
            Event::Ack { .. } | Event::StrayResponse { .. } => {}
            _ => {}
        }
    }

    fn is_trusted(&self, source: &Peer) -> bool {
        match source.connection {
            Some(c) => self.conn_trust.get(&c).copied().unwrap_or(false),
            None => self
                .cfg
                .listeners
                .iter()
                .any(|l| l.kind == ListenerKind::Udp && l.allow_untrusted),
        }
    }

    /// The platform's own answer to server transaction `id`.
    fn answer(
        &mut self,
        now: Instant,
        id: TransactionId,
        request: &SipMessage,
        status: u16,
        headers: &[(HeaderName, String)],
    ) {
        let Ok(mut r) = SipMessage::response_to(request, status, sip_core::reason_phrase(status))
        else {
            return;
        };
        let _ = r.set_to_tag(&crate::request::tag());
        let _ = r.push_header(HeaderName::Server, self.cfg.server.to_string());
        for (n, v) in headers {
            let _ = r.push_header(*n, v.clone());
        }
        if let Err(e) = self.layer.respond(now, id, r) {
            debug!(%id, error = %e, "platform answer not sent");
        }
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
        let branch = request
            .top_via()
            .ok()
            .and_then(|v| v.branch().map(str::to_owned))
            .unwrap_or_default();
        let span = tracing::debug_span!(
            "sip_transaction",
            side = "server",
            method = method.as_ref().map(Method::as_str).unwrap_or(""),
            %branch
        );
        let _g = span.enter();
        if method == Some(Method::Cancel) {
            if let Err(e) = self.layer.answer_cancel(now, id, &request, cancels) {
                debug!(error = %e, "CANCEL not answered");
            }
            if let Some(inv) = cancels {
                self.serving.remove(&inv);
            }
            return;
        }
        if !self.accepting {
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
        let unmatched = match self.dialogs.handle_request(&request) {
            Ok(_) => false,
            Err(DialogError::NoDialog) => true,
            Err(DialogError::OutOfOrder { .. }) => {
                self.answer(now, id, &request, 500, &[]);
                return;
            }
            Err(_) => {
                self.answer(now, id, &request, 400, &[]);
                return;
            }
        };
        let endpoint = match self.dispatcher.dispatch(&request, trusted, unmatched) {
            Disposition::Respond(refusal) => {
                debug!(status = refusal.status, trusted, "answered by the platform");
                self.answer(now, id, &request, refusal.status, &refusal.headers);
                return;
            }
            Disposition::Deliver(e) => e,
        };
        let from = request
            .from()
            .ok()
            .map(|f| String::from_utf8_lossy(f.uri().as_bytes()).into_owned());
        let caller = match from.as_deref().map(|u| self.cfg.topology.classify(u)) {
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
        let kept = request.clone();
        let incoming = IncomingRequest::new(
            request,
            caller,
            endpoint,
            source.addr,
            id,
            commands,
            self.cfg.server.clone(),
            span.clone(),
        );
        match sender.try_send(incoming) {
            Ok(()) => {
                self.serving.insert(id, (span, kept));
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
                self.dispatcher.remove(endpoint);
                self.endpoints.remove(&endpoint);
                self.answer(now, id, &request, 480, &[]);
            }
        }
    }
}

/// An endpoint's 1xx-with-tag or 2xx to an INVITE creates (or confirms) the UAS dialog, so
/// the ACK, BYE and re-INVITEs that follow are matched to it instead of being refused 481.
/// The UAS copies Record-Route into such responses so the caller learns the route set
/// (RFC 3261 §12.1.1).
fn track_uas_dialog(dialogs: &mut Dialogs, request: &SipMessage, response: &mut SipMessage) {
    let creates = request.method() == Some(&Method::Invite)
        && response.status().is_some_and(|s| (101..300).contains(&s));
    if !creates {
        return;
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
    if let Err(e) = dialogs.handle_uas_response(request, response) {
        debug!(error = %e, "dialog not created");
    }
}
