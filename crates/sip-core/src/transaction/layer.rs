//! [`TransactionLayer`]: every transaction of a user agent, the four machines, and matching.

use super::ids::{push_branch, BRANCH_LEN};
use super::key::{Key, KeyIndex, KeyRef};
use super::timers::{Slot, TimerHeap};
use super::{
    new_branch, new_tag, Event, IdGenerator, Peer, RandomIds, Timer, TransactionConfig,
    TransactionError, TransactionId, TransactionKind, TransactionState, Transmit,
};
use crate::{HeaderName, Method, SipMessage};
use bytes::Bytes;
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use TransactionKind::{ClientInvite, ClientNonInvite, ServerInvite, ServerNonInvite};
use TransactionState::{Accepted, Calling, Completed, Confirmed, Proceeding, Terminated, Trying};

/// One transaction's state. Client: `wire` is the request (then the ACK for a non-2xx);
/// server: `wire` is the last response sent, for retransmission.
#[derive(Debug)]
struct Tx {
    key: Key,
    /// `key`'s hash in the index, kept so that inserting and removing hash nothing again.
    key_hash: u64,
    kind: TransactionKind,
    state: TransactionState,
    peer: Peer,
    reliable: bool,
    cancel_pending: bool,
    wire: Bytes,
    /// Client INVITE: the request until a final response (ACK and CANCEL are built from it).
    /// Server INVITE: the request until a final response (100 Trying, 487). Boxed: only
    /// INVITE transactions keep it, and a transaction is moved whole into and out of the
    /// table.
    request: Option<Box<SipMessage>>,
    /// Server INVITE: the To tag of the first response the TU sent with one.
    local_tag: Option<Box<str>>,
    interval: Duration,
    retransmit_at: Option<Instant>,
    lifetime_at: Option<Instant>,
}

impl Tx {
    fn deadline(&self, slot: Slot) -> Option<Instant> {
        match slot {
            Slot::Retransmit => self.retransmit_at,
            Slot::Lifetime => self.lifetime_at,
        }
    }
}

#[derive(Debug)]
struct Entry {
    generation: u32,
    tx: Option<Tx>,
}

/// Everything a machine step may touch besides its own transaction.
struct Cx<'a> {
    now: Instant,
    id: TransactionId,
    cfg: &'a TransactionConfig,
    timers: &'a mut TimerHeap,
    transmits: &'a mut VecDeque<Transmit>,
    events: &'a mut VecDeque<Event>,
}

impl Cx<'_> {
    /// Sends `tx`'s kept message again (or for the first time).
    fn send(&mut self, tx: &Tx) {
        self.send_once(tx, tx.wire.clone());
    }

    /// Sends `contents` for `tx` without keeping them: what will not be retransmitted.
    fn send_once(&mut self, tx: &Tx, contents: Bytes) {
        self.transmits.push_back(Transmit {
            destination: tx.peer,
            contents,
            transaction: Some(self.id),
        });
    }

    /// Sends `contents` for `tx`, keeping them for retransmission only where there can be
    /// one (an unreliable transport). Over TLS and TCP a message is sent once and nothing
    /// else holds it: it is handed over without the shared handle a second owner needs.
    fn send_keeping_if_unreliable(&mut self, tx: &mut Tx, contents: Bytes) {
        if tx.reliable {
            tx.wire = Bytes::new();
            self.send_once(tx, contents);
        } else {
            tx.wire = contents;
            self.send(tx);
        }
    }

    /// Arms `slot` to fire `after` from now. A deadline past what `Instant` can hold (a
    /// setting of `Duration::MAX`) never comes: the slot is left unarmed, not a panic.
    fn arm(&mut self, tx: &mut Tx, slot: Slot, after: Duration) {
        let at = self.now.checked_add(after);
        match slot {
            Slot::Retransmit => tx.retransmit_at = at,
            Slot::Lifetime => tx.lifetime_at = at,
        }
        if let Some(at) = at {
            self.timers.push(at, self.id, slot);
        }
    }

    /// Arms the lifetime timer, or ends the transaction at once when it is zero (timers D,
    /// I, J, K on reliable transports).
    fn arm_lifetime(&mut self, tx: &mut Tx, after: Duration) {
        if after.is_zero() {
            tx.lifetime_at = None;
            tx.state = Terminated;
        } else {
            self.arm(tx, Slot::Lifetime, after);
        }
    }

    fn event(&mut self, e: Event) {
        self.events.push_back(e);
    }

    fn t64(&self) -> Duration {
        self.cfg.t1.saturating_mul(64)
    }
}

/// All client and server transactions of one user agent (RFC 3261 §17), sans-IO.
///
/// Inputs: [`send_request`](Self::send_request), [`respond`](Self::respond),
/// [`handle_message`](Self::handle_message), [`handle_transport_error`](Self::handle_transport_error),
/// [`handle_timeout`](Self::handle_timeout), each with `now`. Outputs:
/// [`poll_transmit`](Self::poll_transmit), [`poll_timeout`](Self::poll_timeout),
/// [`poll_event`](Self::poll_event). Lookup is one hash of (branch, sent-by, method).
pub struct TransactionLayer {
    config: TransactionConfig,
    ids: Box<dyn IdGenerator>,
    slots: Vec<Entry>,
    free: Vec<u32>,
    /// The live transactions by key; each key is kept by its transaction.
    index: KeyIndex,
    timers: TimerHeap,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Generation of slots created from now on: above every generation of slots given
    /// back by [`compact`](Self::compact), so an old id never names a new transaction.
    next_generation: u32,
    last_compact: Option<Instant>,
    /// When the next compaction is due (part of [`poll_timeout`](Self::poll_timeout), so an
    /// idle user agent still gives memory back).
    compact_due: Option<Instant>,
}

/// How often, at most, a layer looks for memory a burst of transactions left behind.
const COMPACT_EVERY: Duration = Duration::from_secs(1);
/// Below this many heap entries, a new transaction leaves ended timers to come due.
const STALE_TIMERS_MIN: usize = 1024;
/// Past this many heap entries, mostly ended, firing timers drops the ended ones first.
const STALE_BEFORE_FIRING: usize = 64;
/// Below this many slots compaction is not worth it.
const COMPACT_MIN_SLOTS: usize = 1024;

impl fmt::Debug for TransactionLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionLayer")
            .field("config", &self.config)
            .field("transactions", &self.index.len())
            .field("timers", &self.timers.len())
            .finish()
    }
}

impl Default for TransactionLayer {
    fn default() -> Self {
        Self::new(TransactionConfig::default())
    }
}

impl TransactionLayer {
    /// A layer with random branches ([`RandomIds`]).
    pub fn new(config: TransactionConfig) -> Self {
        Self::with_ids(config, Box::new(RandomIds::new()))
    }

    /// A layer taking its branches and tags from `ids` (deterministic in tests).
    pub fn with_ids(mut config: TransactionConfig, ids: Box<dyn IdGenerator>) -> Self {
        // A zero interval would re-arm Timer A, E or G at the instant it fired.
        config.t1 = config.t1.max(Duration::from_millis(1));
        config.t2 = config.t2.max(config.t1);
        TransactionLayer {
            config,
            ids,
            slots: Vec::new(),
            free: Vec::new(),
            index: KeyIndex::default(),
            timers: TimerHeap::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_generation: 0,
            last_compact: None,
            compact_due: None,
        }
    }

    /// The timer configuration.
    pub fn config(&self) -> &TransactionConfig {
        &self.config
    }

    /// A fresh magic-cookie branch from the layer's generator.
    pub fn new_branch(&mut self) -> String {
        new_branch(&mut *self.ids)
    }

    /// The layer's identifier generator (for tags and Call-IDs the TU needs).
    pub fn ids(&mut self) -> &mut dyn IdGenerator {
        &mut *self.ids
    }

    /// How many transactions are alive.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no transaction is alive.
    pub fn is_empty(&self) -> bool {
        self.index.len() == 0
    }

    /// The state of a live transaction (`None` once it has ended).
    pub fn state(&self, id: TransactionId) -> Option<TransactionState> {
        self.tx(id).map(|t| t.state)
    }

    /// The kind of a live transaction.
    pub fn kind(&self, id: TransactionId) -> Option<TransactionKind> {
        self.tx(id).map(|t| t.kind)
    }

    // ----- outputs -----

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event for the TU.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest armed deadline: call [`handle_timeout`](Self::handle_timeout) then.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some((at, id, slot)) = self.timers.peek() {
            if self.is_armed(at, id, slot) {
                return Some(at);
            }
            self.timers.pop();
        }
        self.compact_due
    }

    // ----- inputs -----

    /// Starts a client transaction for `request` and sends it to `destination`.
    ///
    /// The request needs a top Via; if it has no branch, one is added (the Via must then be
    /// the only one). ACK is refused: the ACK for a 2xx is sent with
    /// [`send_stateless`](Self::send_stateless).
    pub fn send_request(
        &mut self,
        now: Instant,
        mut request: SipMessage,
        destination: Peer,
    ) -> Result<TransactionId, TransactionError> {
        let method = request
            .method()
            .ok_or(TransactionError::WrongMessage("expected a request"))?
            .clone();
        if method == Method::Ack {
            return Err(TransactionError::Ack);
        }
        let key = request
            .top_via()?
            .branch_bytes()
            .map(|b| Key::client(b, &method));
        let key = match key {
            Some(key) => key,
            None => {
                let Some(top) = request.only_value(HeaderName::Via) else {
                    return Err(TransactionError::WrongMessage(
                        "a request without a branch must have exactly one Via",
                    ));
                };
                let mut v = Vec::with_capacity(top.len() + 8 + BRANCH_LEN);
                v.extend_from_slice(top);
                v.extend_from_slice(b";branch=");
                let at = v.len();
                push_branch(&mut v, &mut *self.ids);
                let key = Key::client(&v[at..], &method);
                request.replace_first_value(HeaderName::Via, Bytes::from(v));
                key
            }
        };
        let key_hash = self.index.hash(key.as_ref());
        if self.find_hashed(key_hash, key.as_ref()).is_some() {
            return Err(TransactionError::DuplicateBranch);
        }
        if self.index.len() >= self.config.max_transactions {
            return Err(TransactionError::Overloaded {
                limit: self.config.max_transactions,
            });
        }
        let invite = method == Method::Invite;
        let reliable = destination.transport.is_reliable();
        let tx = Tx {
            key,
            key_hash,
            kind: if invite {
                ClientInvite
            } else {
                ClientNonInvite
            },
            state: if invite { Calling } else { Trying },
            peer: destination,
            reliable,
            cancel_pending: false,
            wire: Bytes::new(),
            request: None,
            local_tag: None,
            interval: self.config.t1,
            retransmit_at: None,
            lifetime_at: None,
        };
        let wire = request.to_bytes();
        let id = self.insert(tx);
        self.step(id, now, |tx, cx| {
            // The request is retransmitted only over an unreliable transport (Timers A, E).
            cx.send_keeping_if_unreliable(tx, wire);
            if invite {
                tx.request = Some(Box::new(request));
            }
            if !tx.reliable {
                // Timer A (INVITE) or E (non-INVITE).
                cx.arm(tx, Slot::Retransmit, cx.cfg.t1);
            }
            // Timer B or F.
            let t = cx.t64();
            cx.arm(tx, Slot::Lifetime, t);
        });
        Ok(id)
    }

    /// Sends a message outside any transaction: the ACK for a 2xx (§13.2.2.4), a 2xx
    /// retransmission by a UAS core, or a stateless response.
    pub fn send_stateless(&mut self, message: &SipMessage, destination: Peer) {
        self.transmits.push_back(Transmit {
            destination,
            contents: message.to_bytes(),
            transaction: None,
        });
    }

    /// The TU's response for server transaction `id` (provisional, 2xx or non-2xx final).
    pub fn respond(
        &mut self,
        now: Instant,
        id: TransactionId,
        response: SipMessage,
    ) -> Result<(), TransactionError> {
        let status = response
            .status()
            .ok_or(TransactionError::WrongMessage("expected a response"))?;
        self.step(id, now, |tx, cx| server_respond(tx, cx, status, &response))
            .unwrap_or(Err(TransactionError::UnknownTransaction))
    }

    /// The To tag server transaction `id` has answered with so far, if any: a later
    /// response of the transaction must carry the same (RFC 3261 §8.2.6.2).
    pub fn sent_to_tag(&self, id: TransactionId) -> Option<Box<str>> {
        self.tx(id).and_then(sent_tag)
    }

    /// Cancels client INVITE `invite` (§9.1). Before any provisional response the CANCEL is
    /// held and sent when one arrives (`Ok(None)`; [`Event::HeldCancel`] then tells how it
    /// went); otherwise its client transaction is returned. Refused once a final response
    /// arrived. If no final response comes within 64·T1 of the CANCEL, the INVITE ends with
    /// [`Event::Timeout`] for [`Timer::Cancel`](super::Timer::Cancel).
    pub fn cancel(
        &mut self,
        now: Instant,
        invite: TransactionId,
    ) -> Result<Option<TransactionId>, TransactionError> {
        let tx = self
            .tx_mut(invite)
            .ok_or(TransactionError::UnknownTransaction)?;
        if tx.kind != ClientInvite {
            return Err(TransactionError::WrongMessage(
                "only a client INVITE is cancelled",
            ));
        }
        match tx.state {
            Calling => {
                tx.cancel_pending = true;
                Ok(None)
            }
            Proceeding => self.send_cancel(now, invite).map(Some),
            state => Err(TransactionError::InvalidState { state }),
        }
    }

    /// Answers a received CANCEL (§9.2): 200 to the CANCEL and 487 to the INVITE it cancels
    /// when that INVITE has no final response yet (returns `true`); 200 alone when it has,
    /// or when the CANCEL matches a live non-INVITE server transaction (which it does not
    /// affect); 481 when it matches nothing. `invite` is the `cancels` of the CANCEL's
    /// [`Event::Request`].
    pub fn answer_cancel(
        &mut self,
        now: Instant,
        cancel: TransactionId,
        cancel_request: &SipMessage,
        invite: Option<TransactionId>,
    ) -> Result<bool, TransactionError> {
        let target = invite.and_then(|i| self.tx(i).map(|t| (i, t.kind, t.state)));
        let target = target.or_else(|| self.cancelled_non_invite(cancel));
        let Some((inv, kind, state)) = target else {
            let r =
                SipMessage::response_to(cancel_request, 481, "Call/Transaction Does Not Exist")?;
            self.respond(now, cancel, r)?;
            return Ok(false);
        };
        let (request, tag) = match self.tx(inv) {
            Some(t) => (t.request.clone(), sent_tag(t)),
            None => (None, None),
        };
        let tag = match tag {
            Some(t) => t,
            None => new_tag(&mut *self.ids).into(),
        };
        let mut ok = SipMessage::response_to(cancel_request, 200, "OK")?;
        ok.set_to_tag(&tag)?;
        self.respond(now, cancel, ok)?;
        match (kind, state, request) {
            (ServerInvite, Proceeding, Some(req)) => {
                let mut r = SipMessage::response_to(&req, 487, "Request Terminated")?;
                r.set_to_tag(&tag)?;
                self.respond(now, inv, r)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The live server non-INVITE transaction CANCEL `cancel` matches (§9.2: as if the
    /// CANCEL's method were the request's). Keys hold the method, so each method a CANCEL
    /// can be for is looked up in turn: a CANCEL of a non-INVITE is rare (§9.1: it SHOULD
    /// NOT be sent), and a second index of every non-INVITE cost the common path about 4 %
    /// of a transaction pair. An extension method is not looked for (481).
    fn cancelled_non_invite(
        &self,
        cancel: TransactionId,
    ) -> Option<(TransactionId, TransactionKind, TransactionState)> {
        const CANCELLABLE: [Method; 11] = [
            Method::Message,
            Method::Options,
            Method::Info,
            Method::Notify,
            Method::Subscribe,
            Method::Refer,
            Method::Bye,
            Method::Publish,
            Method::Register,
            Method::Update,
            Method::Prack,
        ];
        let key = &self.tx(cancel)?.key;
        CANCELLABLE.into_iter().find_map(|m| {
            let id = self.find(key.with_method(&m))?;
            self.tx(id)
                .filter(|t| t.kind == ServerNonInvite)
                .map(|t| (id, t.kind, t.state))
        })
    }

    /// A received message (already parsed and validated by the codec) from `source`.
    /// Responses go to their client transaction; requests to their server transaction or a
    /// new one; what matches nothing becomes [`Event::StrayResponse`] or [`Event::Ack`].
    /// Messages without the headers a transaction needs are dropped (§18.1.2).
    pub fn handle_message(&mut self, now: Instant, message: SipMessage, source: Peer) {
        if message.is_request() {
            self.incoming_request(now, message, source);
        } else {
            self.incoming_response(now, message, source);
        }
    }

    /// The runtime failed to send a message of transaction `id` (§17.1.4, §17.2.4).
    pub fn handle_transport_error(&mut self, now: Instant, id: TransactionId) {
        self.step(id, now, |tx, cx| {
            cx.event(Event::TransportError { id: cx.id });
            // RFC 6026: an INVITE in Accepted informs the TU and stays, to absorb (server)
            // or pass up (client) the 2xx retransmissions until Timer L or M. A client's
            // error comes from a send before the 2xx, reported late.
            if tx.state != Accepted {
                tx.state = Terminated;
            }
        });
    }

    /// Fires every timer due at or before `now`. Timers re-arm from their own deadline, so a
    /// late call replays the exact RFC schedule.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.drop_ended_timers(STALE_BEFORE_FIRING);
        while let Some((at, id, slot)) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if !self.is_armed(at, id, slot) {
                continue;
            }
            self.step(id, at, |tx, cx| {
                match slot {
                    Slot::Retransmit => tx.retransmit_at = None,
                    Slot::Lifetime => tx.lifetime_at = None,
                }
                fire(tx, cx, slot);
            });
        }
        let needed =
            |l: &Self| l.slots.len() >= COMPACT_MIN_SLOTS && l.index.len() * 4 < l.slots.len();
        self.compact_due = None;
        if needed(self) {
            let due = self
                .last_compact
                .is_none_or(|t| now.saturating_duration_since(t) >= COMPACT_EVERY);
            if due {
                self.last_compact = Some(now);
                self.compact();
            }
            if needed(self) {
                self.compact_due = self.last_compact.map(|t| t + COMPACT_EVERY);
            }
        }
    }

    /// Gives back what a burst of transactions left behind once most of them are gone:
    /// vacant slots at the end of the slab, and spare capacity of the slab, the free list,
    /// the lookup map and the timer heap. New transactions then take the lowest free slots,
    /// so the next compaction can cut further.
    fn compact(&mut self) {
        while self.slots.last().is_some_and(|e| e.tx.is_none()) {
            if let Some(e) = self.slots.pop() {
                self.next_generation = self.next_generation.max(e.generation.wrapping_add(1));
            }
        }
        let len = self.slots.len();
        self.free.retain(|&i| (i as usize) < len);
        // `insert` pops from the end: lowest index last.
        self.free.sort_unstable_by(|a, b| b.cmp(a));
        let spare = |cap: usize, used: usize| cap > 2 * used + 64;
        if spare(self.slots.capacity(), len) {
            self.slots.shrink_to(len + len / 2);
        }
        if spare(self.free.capacity(), self.free.len()) {
            self.free.shrink_to(self.free.len() + self.free.len() / 2);
        }
        if spare(self.index.capacity(), self.index.len()) {
            let slots = &self.slots;
            let min = self.index.len() * 2;
            self.index
                .shrink_to(min, |id| tx_in(slots, id).map_or(0, |t| t.key_hash));
        }
        self.timers.shrink();
        self.transmits.shrink_to(64);
        self.events.shrink_to(64);
    }

    // ----- internals -----

    fn is_armed(&self, at: Instant, id: TransactionId, slot: Slot) -> bool {
        armed_in(&self.slots, at, id, slot)
    }

    fn tx(&self, id: TransactionId) -> Option<&Tx> {
        tx_in(&self.slots, id)
    }

    fn tx_mut(&mut self, id: TransactionId) -> Option<&mut Tx> {
        self.slots
            .get_mut(id.index as usize)
            .filter(|e| e.generation == id.generation)
            .and_then(|e| e.tx.as_mut())
    }

    fn insert(&mut self, tx: Tx) -> TransactionId {
        self.drop_ended_timers(STALE_TIMERS_MIN);
        let id = match self.free.pop() {
            Some(index) => {
                let e = &mut self.slots[index as usize];
                e.tx = Some(tx);
                TransactionId {
                    index,
                    generation: e.generation,
                }
            }
            None => {
                let index = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                let generation = self.next_generation;
                self.slots.push(Entry {
                    generation,
                    tx: Some(tx),
                });
                TransactionId { index, generation }
            }
        };
        let slots = &self.slots;
        if let Some(tx) = tx_in(slots, id) {
            self.index.insert(tx.key_hash, id, |id| {
                tx_in(slots, id).map_or(0, |t| t.key_hash)
            });
        }
        id
    }

    /// The live transaction with key `key`.
    fn find(&self, key: KeyRef<'_>) -> Option<TransactionId> {
        self.find_hashed(self.index.hash(key), key)
    }

    /// [`find`](Self::find), given the key's hash.
    fn find_hashed(&self, hash: u64, key: KeyRef<'_>) -> Option<TransactionId> {
        let slots = &self.slots;
        self.index
            .find(hash, key, |id| tx_in(slots, id).map(|t| &t.key))
    }

    /// Drops the heap entries of ended or re-armed timers once they are most of it.
    ///
    /// Each live transaction has at most two armed timers; past this size, at least half
    /// the heap is such entries (lazy deletion: on a reliable transport a finished
    /// transaction leaves its 64·T1 timer for 32 s). Called per new transaction (with
    /// `floor` [`STALE_TIMERS_MIN`]), the purge costs O(n) per n/2 insertions and keeps
    /// the heap proportional to the live ones. Called before firing timers (with
    /// [`STALE_BEFORE_FIRING`]), one pass over the heap replaces popping each ended entry
    /// that came due, O(log n) apiece.
    fn drop_ended_timers(&mut self, floor: usize) {
        if self.timers.len() > floor + 4 * self.index.len() {
            let slots = &self.slots;
            self.timers
                .retain(|at, id, slot| armed_in(slots, at, id, slot));
        }
    }

    /// Runs `f` on transaction `id`, then destroys it if `f` terminated it.
    fn step<R>(
        &mut self,
        id: TransactionId,
        now: Instant,
        f: impl FnOnce(&mut Tx, &mut Cx<'_>) -> R,
    ) -> Option<R> {
        let Self {
            slots,
            config,
            timers,
            transmits,
            events,
            index,
            free,
            ..
        } = self;
        let entry = slots
            .get_mut(id.index as usize)
            .filter(|e| e.generation == id.generation)?;
        let tx = entry.tx.as_mut()?;
        let mut cx = Cx {
            now,
            id,
            cfg: config,
            timers,
            transmits,
            events,
        };
        let r = f(tx, &mut cx);
        if tx.state == Terminated {
            if let Some(tx) = entry.tx.take() {
                index.remove(tx.key_hash, id);
            }
            entry.generation = entry.generation.wrapping_add(1);
            free.push(id.index);
            events.push_back(Event::Terminated { id });
        }
        Some(r)
    }

    fn send_cancel(
        &mut self,
        now: Instant,
        invite: TransactionId,
    ) -> Result<TransactionId, TransactionError> {
        let tx = self
            .tx_mut(invite)
            .ok_or(TransactionError::UnknownTransaction)?;
        tx.cancel_pending = false;
        let peer = tx.peer;
        let req = tx
            .request
            .as_ref()
            .ok_or(TransactionError::InvalidState { state: tx.state })?;
        let cancel = build_from_invite(req, Method::Cancel, None)?;
        let cancel_id = self.send_request(now, cancel, peer)?;
        // §9.1: without a final response 64·T1 after the CANCEL, the INVITE is destroyed.
        self.step(invite, now, |tx, cx| {
            let t = cx.t64();
            cx.arm(tx, Slot::Lifetime, t);
        });
        Ok(cancel_id)
    }

    fn incoming_response(&mut self, now: Instant, message: SipMessage, source: Peer) {
        let Some(status) = message.status() else {
            return;
        };
        let Ok(found) = Key::with_response_key(&message, |key| self.find(key)) else {
            return;
        };
        match found {
            Some(id) => {
                let send_cancel = self
                    .step(id, now, |tx, cx| client_response(tx, cx, status, message))
                    .unwrap_or(false);
                if send_cancel {
                    let cancel = self.send_cancel(now, id);
                    self.events
                        .push_back(Event::HeldCancel { invite: id, cancel });
                }
            }
            None => self.events.push_back(Event::StrayResponse {
                response: message,
                source,
            }),
        }
    }

    /// Does `ack` carry the To tag server transaction `id` put in its response (or is
    /// there none to compare)?
    fn ack_tag_matches(&self, id: TransactionId, ack: &SipMessage) -> bool {
        let sent = self.tx(id).and_then(|t| t.local_tag.as_deref());
        sent.is_none_or(|tag| ack.to().ok().and_then(|t| t.tag()) == Some(tag.as_bytes()))
    }

    fn incoming_request(&mut self, now: Instant, message: SipMessage, source: Peer) {
        let Ok(key) = Key::for_request(&message) else {
            return;
        };
        let Some(method) = message.method().cloned() else {
            return;
        };
        let key_hash = self.index.hash(key.as_ref());
        let matched = self.find_hashed(key_hash, key.as_ref()).filter(|&id| {
            // §17.2.3: an RFC 2543 ACK matches only with the To tag of our response (with
            // a branch, the branch alone tells transactions apart).
            method != Method::Ack || !key.is_rfc2543() || self.ack_tag_matches(id, &message)
        });
        if let Some(id) = matched {
            self.step(id, now, |tx, cx| {
                server_request(tx, cx, method, message, source)
            });
            return;
        }
        if method == Method::Ack {
            self.events.push_back(Event::Ack {
                id: None,
                request: message,
                source,
            });
            return;
        }
        if self.index.len() >= self.config.max_transactions {
            // At the limit: answered without a transaction (RFC 3261 §21.5.4), so a flood
            // costs no memory; retransmissions get the same answer.
            if let Ok(mut busy) = SipMessage::response_to(&message, 503, "Service Unavailable") {
                if busy.push_header(HeaderName::RetryAfter, "1").is_ok() {
                    self.send_stateless(&busy, source);
                }
            }
            return;
        }
        let cancels = if method == Method::Cancel {
            self.find(key.as_invite())
        } else {
            None
        };
        let invite = method == Method::Invite;
        let tx = Tx {
            key,
            key_hash,
            kind: if invite {
                ServerInvite
            } else {
                ServerNonInvite
            },
            state: if invite { Proceeding } else { Trying },
            peer: source,
            reliable: source.transport.is_reliable(),
            cancel_pending: false,
            wire: Bytes::new(),
            request: invite.then(|| Box::new(message.clone())),
            local_tag: None,
            interval: self.config.t1,
            retransmit_at: None,
            lifetime_at: None,
        };
        let id = self.insert(tx);
        if let (true, Some(d)) = (invite, self.config.trying_delay) {
            self.step(id, now, |tx, cx| cx.arm(tx, Slot::Retransmit, d));
        }
        self.events.push_back(Event::Request {
            id,
            request: message,
            source,
            cancels,
        });
    }
}

/// Builds the ACK for a non-2xx (§17.1.1.3) or a CANCEL (§9.1) from the INVITE: same
/// Request-URI, top Via, From, Call-ID, CSeq number and Route; To from `to` (the response)
/// or the INVITE.
fn build_from_invite(
    invite: &SipMessage,
    method: Method,
    to: Option<&[u8]>,
) -> Result<SipMessage, TransactionError> {
    let missing = |h| TransactionError::Message(crate::ParseError::Missing(h));
    let uri = invite.request_uri_bytes().unwrap_or_default();
    let via = invite
        .header_values(HeaderName::Via)
        .next()
        .ok_or(missing("Via"))?;
    let from = invite.header(HeaderName::From).ok_or(missing("From"))?;
    let to = match to {
        Some(t) => t,
        None => invite.header(HeaderName::To).ok_or(missing("To"))?,
    };
    let call_id = invite
        .header(HeaderName::CallId)
        .ok_or(missing("Call-ID"))?;
    let seq = invite.cseq()?.seq();
    let mut b = SipMessage::request(method.clone(), Bytes::copy_from_slice(uri))
        .header(HeaderName::Via, Bytes::copy_from_slice(via))
        .header(HeaderName::MaxForwards, Bytes::from_static(b"70"))
        .header(HeaderName::From, Bytes::copy_from_slice(from))
        .header(HeaderName::To, Bytes::copy_from_slice(to))
        .header(HeaderName::CallId, Bytes::copy_from_slice(call_id))
        .header(HeaderName::CSeq, format!("{seq} {method}"));
    for r in invite.headers().filter(|h| h.name == HeaderName::Route) {
        b = b.header(HeaderName::Route, Bytes::copy_from_slice(r.value));
    }
    Ok(b.build()?)
}

/// A response reached client transaction `tx`. Returns whether a held CANCEL must go now.
fn client_response(tx: &mut Tx, cx: &mut Cx<'_>, status: u16, response: SipMessage) -> bool {
    let id = cx.id;
    match tx.kind {
        ClientInvite => match (tx.state, status) {
            (Calling | Proceeding, 100..=199) => {
                let first = tx.state == Calling;
                tx.state = Proceeding;
                tx.retransmit_at = None;
                if first {
                    // Timer B stops; in Proceeding the lifetime slot is the CANCEL's wait.
                    tx.lifetime_at = None;
                }
                cx.event(Event::Response { id, response });
                first && tx.cancel_pending
            }
            (Calling | Proceeding, 200..=299) => {
                tx.state = Accepted;
                tx.retransmit_at = None;
                tx.request = None;
                tx.wire = Bytes::new();
                let m = cx.t64();
                cx.arm(tx, Slot::Lifetime, m);
                cx.event(Event::Response { id, response });
                false
            }
            (Calling | Proceeding, _) => {
                tx.retransmit_at = None;
                let to = response.header(HeaderName::To);
                if let Some(Ok(ack)) = tx
                    .request
                    .as_ref()
                    .map(|r| build_from_invite(r, Method::Ack, to))
                {
                    // Resent for each retransmitted final response, which only an
                    // unreliable transport brings (Timer D is zero otherwise).
                    cx.send_keeping_if_unreliable(tx, ack.to_bytes());
                }
                tx.request = None;
                tx.state = Completed;
                let d = if tx.reliable {
                    Duration::ZERO
                } else {
                    cx.cfg.timer_d
                };
                cx.event(Event::Response { id, response });
                cx.arm_lifetime(tx, d);
                false
            }
            (Completed, 300..=699) => {
                if !tx.wire.is_empty() {
                    cx.send(tx);
                }
                false
            }
            (Accepted, 200..=299) => {
                cx.event(Event::Response { id, response });
                false
            }
            (Completed, 200..=299) => {
                // Another fork accepted after a non-2xx ended this INVITE (§16.7 step 5
                // forwards it): the TU must still ACK that dialog, and may BYE it.
                cx.event(Event::AnsweredAfterFailure { id, response });
                false
            }
            _ => false,
        },
        _ => {
            match (tx.state, status) {
                (Trying | Proceeding, 100..=199) => {
                    tx.state = Proceeding;
                    cx.event(Event::Response { id, response });
                }
                (Trying | Proceeding, _) => {
                    tx.state = Completed;
                    tx.retransmit_at = None;
                    tx.wire = Bytes::new();
                    let k = if tx.reliable {
                        Duration::ZERO
                    } else {
                        cx.cfg.t4
                    };
                    cx.event(Event::Response { id, response });
                    cx.arm_lifetime(tx, k);
                }
                _ => {}
            }
            false
        }
    }
}

/// A request matched server transaction `tx`: a retransmission, or an ACK.
fn server_request(tx: &mut Tx, cx: &mut Cx<'_>, method: Method, request: SipMessage, source: Peer) {
    let ack = method == Method::Ack;
    match (tx.kind, tx.state, ack) {
        (ServerInvite, Completed, true) => {
            tx.state = Confirmed;
            tx.retransmit_at = None;
            let i = if tx.reliable {
                Duration::ZERO
            } else {
                cx.cfg.t4
            };
            cx.arm_lifetime(tx, i);
        }
        (ServerInvite, Accepted, true) => cx.event(Event::Ack {
            id: Some(cx.id),
            request,
            source,
        }),
        (ServerInvite, Proceeding | Completed, false)
        | (ServerNonInvite, Proceeding | Completed, false)
            if !tx.wire.is_empty() =>
        {
            cx.send(tx);
        }
        // Trying (non-INVITE), Confirmed, Accepted: retransmissions are absorbed.
        _ => {}
    }
}

/// The TU's response for server transaction `tx`.
fn server_respond(
    tx: &mut Tx,
    cx: &mut Cx<'_>,
    status: u16,
    response: &SipMessage,
) -> Result<(), TransactionError> {
    let state = tx.state;
    match (tx.kind, state, status) {
        (ServerInvite, Proceeding, 100..=199) => {
            if status > 100 {
                remember_tag(tx, response);
            }
            tx.retransmit_at = None; // no 100 Trying of our own any more
            tx.wire = response.to_bytes();
            cx.send(tx);
        }
        (ServerInvite, Proceeding, 200..=299) => {
            remember_tag(tx, response);
            tx.state = Accepted;
            tx.retransmit_at = None;
            tx.request = None;
            // Accepted absorbs retransmitted INVITEs and sends only what the TU passes
            // (RFC 6026 §8.5): the 2xx need not be kept for the 32 s the state lasts.
            tx.wire = Bytes::new();
            cx.send_once(tx, response.to_bytes());
            let l = cx.t64();
            cx.arm(tx, Slot::Lifetime, l);
        }
        (ServerInvite, Proceeding, _) => {
            remember_tag(tx, response);
            tx.state = Completed;
            tx.request = None;
            tx.wire = response.to_bytes();
            cx.send(tx);
            if tx.reliable {
                tx.retransmit_at = None;
            } else {
                tx.interval = cx.cfg.t1;
                cx.arm(tx, Slot::Retransmit, cx.cfg.t1); // Timer G
            }
            let h = cx.t64();
            cx.arm(tx, Slot::Lifetime, h);
        }
        (ServerInvite, Accepted, 200..=299) => cx.send_once(tx, response.to_bytes()),
        (ServerNonInvite, Trying | Proceeding, 100..=199) => {
            tx.state = Proceeding;
            tx.wire = response.to_bytes();
            cx.send(tx);
        }
        (ServerNonInvite, Trying | Proceeding, _) => {
            tx.state = Completed;
            // Over a reliable transport Timer J is zero: the transaction ends now, and
            // nothing will ask for the response again.
            cx.send_keeping_if_unreliable(tx, response.to_bytes());
            let j = if tx.reliable {
                Duration::ZERO
            } else {
                cx.t64()
            };
            cx.arm_lifetime(tx, j);
        }
        _ => return Err(TransactionError::InvalidState { state }),
    }
    Ok(())
}

/// The To tag server transaction `tx` answered with, for the 200 to a CANCEL (§9.2): a
/// non-INVITE does not keep it, so it is read back from its last response.
fn sent_tag(tx: &Tx) -> Option<Box<str>> {
    if tx.local_tag.is_some() || tx.kind != ServerNonInvite || tx.wire.is_empty() {
        return tx.local_tag.clone();
    }
    let sent = SipMessage::parse_datagram(tx.wire.clone(), &crate::Limits::DEFAULT).ok()?;
    let to = sent.to().ok()?;
    to.tag().map(|t| String::from_utf8_lossy(t).into())
}

/// Keeps the To tag of the first response of server INVITE `tx` that has one: the 200 to a
/// CANCEL and the 487 carry it (§9.2 asks for the same tag).
fn remember_tag(tx: &mut Tx, response: &SipMessage) {
    if tx.local_tag.is_none() {
        tx.local_tag = response
            .to()
            .ok()
            .and_then(|t| t.tag())
            .map(|t| String::from_utf8_lossy(t).into());
    }
}

/// Timer `slot` of `tx` fired (its deadline is `cx.now`).
fn fire(tx: &mut Tx, cx: &mut Cx<'_>, slot: Slot) {
    let id = cx.id;
    match (tx.kind, tx.state, slot) {
        (ClientInvite, Calling, Slot::Retransmit) => {
            // Timer A: doubles each time, no T2 cap (§17.1.1.2).
            cx.send(tx);
            tx.interval = tx.interval.saturating_mul(2);
            let i = tx.interval;
            cx.arm(tx, Slot::Retransmit, i);
        }
        (ClientInvite, Calling, Slot::Lifetime) => {
            cx.event(Event::Timeout {
                id,
                timer: Timer::B,
            });
            tx.state = Terminated;
        }
        (ClientInvite, Proceeding, Slot::Lifetime) => {
            // Armed only when a CANCEL went out (§9.1).
            cx.event(Event::Timeout {
                id,
                timer: Timer::Cancel,
            });
            tx.state = Terminated;
        }
        (ClientNonInvite, Trying | Proceeding, Slot::Retransmit) => {
            // Timer E: doubles up to T2 in Trying, T2 in Proceeding (§17.1.2.2).
            cx.send(tx);
            tx.interval = if tx.state == Trying {
                tx.interval.saturating_mul(2).min(cx.cfg.t2)
            } else {
                cx.cfg.t2
            };
            let i = tx.interval;
            cx.arm(tx, Slot::Retransmit, i);
        }
        (ClientNonInvite, Trying | Proceeding, Slot::Lifetime) => {
            cx.event(Event::Timeout {
                id,
                timer: Timer::F,
            });
            tx.state = Terminated;
        }
        (ServerInvite, Proceeding, Slot::Retransmit) => {
            // The TU is slow: 100 Trying (§17.2.1), with the request's Timestamp (§8.2.6.1).
            if let Some(req) = tx.request.as_ref().filter(|_| tx.wire.is_empty()) {
                if let Ok(mut r) = SipMessage::response_to(req, 100, "Trying") {
                    if let Some(ts) = req.header(HeaderName::Timestamp) {
                        let _ = r.push_header(HeaderName::Timestamp, Bytes::copy_from_slice(ts));
                    }
                    tx.wire = r.to_bytes();
                    cx.send(tx);
                }
            }
        }
        (ServerInvite, Completed, Slot::Retransmit) => {
            // Timer G: doubles up to T2.
            cx.send(tx);
            tx.interval = tx.interval.saturating_mul(2).min(cx.cfg.t2);
            let i = tx.interval;
            cx.arm(tx, Slot::Retransmit, i);
        }
        (ServerInvite, Completed, Slot::Lifetime) => {
            cx.event(Event::Timeout {
                id,
                timer: Timer::H,
            });
            tx.state = Terminated;
        }
        // D, M (client INVITE), K (client non-INVITE), I, L (server INVITE), J.
        (_, Completed | Accepted | Confirmed, Slot::Lifetime) => tx.state = Terminated,
        _ => {}
    }
}

/// Transaction `id` in `slots`, if it still exists.
fn tx_in(slots: &[Entry], id: TransactionId) -> Option<&Tx> {
    slots
        .get(id.index as usize)
        .filter(|e| e.generation == id.generation)
        .and_then(|e| e.tx.as_ref())
}

/// Is the heap entry `(at, id, slot)` the timer transaction `id` has armed now?
fn armed_in(slots: &[Entry], at: Instant, id: TransactionId, slot: Slot) -> bool {
    tx_in(slots, id).is_some_and(|t| t.deadline(slot) == Some(at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transaction::{SequentialIds, TransportKind};

    fn options() -> SipMessage {
        SipMessage::request(Method::Options, "sip:bob@b.example")
            .header("Via", "SIP/2.0/UDP a.example:5060")
            .header("Max-Forwards", "70")
            .header("From", "<sip:alice@a.example>;tag=a1")
            .header("To", "<sip:bob@b.example>")
            .header("Call-ID", "c@a.example")
            .header("CSeq", "1 OPTIONS")
            .build()
            .unwrap()
    }

    /// A layer with sequential ids, and the peer its requests go to.
    fn layer_and_peer(addr: &str, transport: TransportKind) -> (TransactionLayer, Peer) {
        let layer = TransactionLayer::with_ids(
            TransactionConfig::default(),
            Box::new(SequentialIds::default()),
        );
        (layer, Peer::new(addr.parse().unwrap(), transport))
    }

    #[test]
    fn memory_of_a_burst_is_given_back_and_old_ids_stay_dead() {
        let (mut layer, peer) = layer_and_peer("192.0.2.1:5060", TransportKind::Udp);
        let t0 = Instant::now();
        let ids: Vec<TransactionId> = (0..3000)
            .map(|_| layer.send_request(t0, options(), peer).unwrap())
            .collect();
        assert_eq!(layer.slots.len(), 3000);
        // Every one times out (Timer F, 64*T1) and is destroyed.
        layer.handle_timeout(t0 + Duration::from_secs(40));
        assert!(layer.is_empty());
        assert_eq!(layer.poll_timeout(), None, "nothing left to do");
        assert!(layer.slots.len() < 3000, "vacant slots at the end are cut");
        assert!(layer.slots.capacity() < 3000);
        assert!(layer.index.capacity() < 3000);
        // A new transaction gets a slot that no old id names.
        let fresh = layer
            .send_request(t0 + Duration::from_secs(41), options(), peer)
            .unwrap();
        assert!(ids.iter().all(|old| layer.state(*old).is_none()));
        assert!(layer.state(fresh).is_some());
        assert!(!ids.contains(&fresh));
    }

    #[test]
    fn a_compaction_not_yet_due_is_a_deadline_of_poll_timeout() {
        let (mut layer, peer) = layer_and_peer("192.0.2.1:5060", TransportKind::Tcp);
        let t0 = Instant::now();
        for _ in 0..3000 {
            layer.send_request(t0, options(), peer).unwrap();
        }
        let half = t0 + Duration::from_millis(500);
        for _ in 0..500 {
            layer.send_request(half, options(), peer).unwrap();
        }
        // The first burst times out; the second still holds the last slots.
        let f = Duration::from_secs(32);
        layer.handle_timeout(t0 + f);
        assert_eq!(layer.len(), 500);
        assert_eq!(layer.poll_timeout(), Some(half + f));
        // The second times out half a second later: too soon for another compaction, so
        // the layer asks to be woken for it.
        layer.handle_timeout(half + f);
        assert!(layer.is_empty());
        assert_eq!(layer.slots.len(), 3500);
        assert_eq!(layer.poll_timeout(), Some(t0 + f + COMPACT_EVERY));
        layer.handle_timeout(t0 + f + COMPACT_EVERY);
        assert!(layer.slots.is_empty());
        assert_eq!(layer.poll_timeout(), None);
    }

    /// Sends an OPTIONS to `peer` at `now` and answers it 200 at once. Over a reliable
    /// transport Timer K is zero, so the 200 ends the transaction and leaves its Timer F
    /// entry behind in the heap.
    fn answered_at_once(layer: &mut TransactionLayer, now: Instant, peer: Peer) {
        layer.send_request(now, options(), peer).unwrap();
        let sent = layer.poll_transmit().unwrap().contents;
        let request = SipMessage::parse_datagram(sent, &crate::Limits::DEFAULT).unwrap();
        let ok = SipMessage::response_to(&request, 200, "OK").unwrap();
        layer.handle_message(now, ok, peer);
        while layer.poll_event().is_some() {}
    }

    #[test]
    fn ended_transactions_do_not_pile_up_in_the_timer_heap() {
        let (mut layer, peer) = layer_and_peer("192.0.2.1:5061", TransportKind::Tls);
        let t0 = Instant::now();
        // A live one first, whose Timer F must survive every purge.
        let live = layer.send_request(t0, options(), peer).unwrap();
        while layer.poll_transmit().is_some() {}
        let mut most = 0;
        for i in 0..10_000u64 {
            answered_at_once(&mut layer, t0 + Duration::from_millis(i), peer);
            most = most.max(layer.timers.len());
        }
        assert_eq!(layer.len(), 1);
        assert!(
            most <= STALE_TIMERS_MIN + 8,
            "the heap grew to {most} entries for one live transaction"
        );
        let f = Duration::from_secs(32);
        assert_eq!(layer.poll_timeout(), Some(t0 + f), "the live one's Timer F");
        layer.handle_timeout(t0 + f);
        assert!(layer.state(live).is_none());
        assert!(layer.is_empty());
    }

    #[test]
    fn firing_timers_drops_the_ended_ones_first() {
        let (mut layer, peer) = layer_and_peer("192.0.2.1:5061", TransportKind::Tls);
        let t0 = Instant::now();
        let live = layer.send_request(t0, options(), peer).unwrap();
        while layer.poll_transmit().is_some() {}
        // Fewer ended transactions than a new one would purge for.
        for _ in 0..200 {
            answered_at_once(&mut layer, t0, peer);
        }
        assert_eq!(layer.timers.len(), 201);
        // Nothing is due yet, but the ended entries go, and the live Timer F stays.
        layer.handle_timeout(t0 + Duration::from_secs(1));
        assert_eq!(layer.timers.len(), 1);
        assert_eq!(layer.poll_timeout(), Some(t0 + Duration::from_secs(32)));
        assert!(layer.state(live).is_some());
    }
}
