//! Model test of the transaction layer (proptest): a client layer and a server layer talk
//! through a network that, over UDP, loses, duplicates and reorders messages, while their
//! TUs send requests, answer, cancel, report transport errors and let virtual time pass
//! in random order. The unit tests in `transactions.rs` pin each RFC 3261 transition; this
//! one looks for what no single transition shows:
//!
//! - no panic, whatever the interleaving;
//! - after `handle_timeout(now)` no timer is left due at or before `now`;
//! - a transaction ends once (`Terminated`), is unknown afterwards, and reports nothing
//!   more;
//! - every client transaction tells its TU how it ended (a final response, a timeout or a
//!   transport error) before it ends: nothing a TU waits for is dropped silently;
//! - once the TUs have answered what they hold and the network is drained, every
//!   transaction ends within the RFC's longest timer: nothing leaks.

use bytes::Bytes;
#[path = "support/cases.rs"]
mod support_cases;
use proptest::prelude::*;
use sip_core::transaction::{
    Event, Peer, SequentialIds, TransactionConfig, TransactionId, TransactionKind,
    TransactionLayer, TransportKind,
};
use sip_core::{Limits, Method, SipMessage};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use support_cases::cases;

/// What one step of the test does.
#[derive(Debug, Clone)]
enum Op {
    /// The client TU starts a request (index into [`METHODS`]).
    Send(usize),
    /// A message in flight arrives; over UDP a copy may stay in flight (a duplicate).
    Deliver {
        to_server: bool,
        pick: usize,
        duplicate: bool,
    },
    /// Over UDP, a message in flight is lost.
    Lose { to_server: bool, pick: usize },
    /// The server TU answers one of the requests it holds (index into [`STATUSES`]).
    Respond { pick: usize, status: usize },
    /// The client TU cancels one of its INVITEs.
    Cancel(usize),
    /// The transport fails to send for a transaction of one side.
    TransportError { client: bool, pick: usize },
    /// Virtual time passes (milliseconds); both layers run their timers.
    Advance(u64),
}

const METHODS: [&str; 4] = ["INVITE", "OPTIONS", "MESSAGE", "BYE"];
const STATUSES: [u16; 10] = [100, 180, 183, 200, 202, 404, 486, 500, 603, 699];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..METHODS.len()).prop_map(Op::Send),
        6 => (any::<bool>(), any::<usize>(), prop::bool::weighted(0.2)).prop_map(
            |(to_server, pick, duplicate)| Op::Deliver { to_server, pick, duplicate }
        ),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(to_server, pick)| Op::Lose { to_server, pick }),
        3 => (any::<usize>(), 0..STATUSES.len()).prop_map(|(pick, status)| Op::Respond { pick, status }),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => (any::<bool>(), any::<usize>()).prop_map(|(client, pick)| Op::TransportError { client, pick }),
        2 => prop_oneof![0u64..600, 0u64..40_000].prop_map(Op::Advance),
    ]
}

/// What the test knows of one layer's transactions, from its events.
#[derive(Default)]
struct Seen {
    /// Transactions started (client) or reported by `Event::Request` (server).
    started: HashSet<TransactionId>,
    /// Client transactions whose TU learnt how they ended.
    told: HashSet<TransactionId>,
    ended: HashSet<TransactionId>,
}

struct World {
    now: Instant,
    reliable: bool,
    peer: Peer,
    client: TransactionLayer,
    server: TransactionLayer,
    to_server: Vec<Bytes>,
    to_client: Vec<Bytes>,
    /// Requests the server TU holds without a final answer, with their transaction.
    held: Vec<(TransactionId, SipMessage)>,
    /// The server TU's To tag per transaction, so all its responses carry the same.
    tags: HashMap<TransactionId, String>,
    invites: Vec<TransactionId>,
    calls: u32,
    client_seen: Seen,
    server_seen: Seen,
    /// Live server transactions by (branch, method): a retransmission must find its
    /// transaction, not make a second one.
    server_keys: HashMap<(String, String), TransactionId>,
}

fn parse(b: &Bytes) -> SipMessage {
    SipMessage::parse_datagram(b.clone(), &Limits::DEFAULT).expect("a layer sent a valid message")
}

impl World {
    fn new(reliable: bool) -> World {
        let transport = if reliable {
            TransportKind::Tcp
        } else {
            TransportKind::Udp
        };
        let layer = |start| {
            TransactionLayer::with_ids(
                TransactionConfig::default(),
                Box::new(SequentialIds::starting_at(start)),
            )
        };
        World {
            now: Instant::now(),
            reliable,
            peer: Peer::new("192.0.2.1:5060".parse().unwrap(), transport),
            client: layer(0),
            server: layer(1 << 40),
            to_server: Vec::new(),
            to_client: Vec::new(),
            held: Vec::new(),
            tags: HashMap::new(),
            invites: Vec::new(),
            calls: 0,
            client_seen: Seen::default(),
            server_seen: Seen::default(),
            server_keys: HashMap::new(),
        }
    }

    fn apply(&mut self, op: &Op) {
        let now = self.now;
        match *op {
            Op::Send(m) => {
                self.calls += 1;
                let method = METHODS[m];
                let transport = if self.reliable { "TCP" } else { "UDP" };
                let request =
                    SipMessage::request(Method::from_token(method.as_bytes()), "sip:bob@b.example")
                        .header("Via", format!("SIP/2.0/{transport} a.example:5060"))
                        .header("Max-Forwards", "70")
                        .header("From", "<sip:alice@a.example>;tag=a1")
                        .header("To", "<sip:bob@b.example>")
                        .header("Call-ID", format!("call-{}@a.example", self.calls))
                        .header("CSeq", format!("1 {method}"))
                        .build()
                        .unwrap();
                let id = self
                    .client
                    .send_request(now, request, self.peer)
                    .expect("below the transaction limit");
                self.client_seen.started.insert(id);
                if method == "INVITE" {
                    self.invites.push(id);
                }
            }
            Op::Deliver {
                to_server,
                pick,
                duplicate,
            } => {
                let reliable = self.reliable;
                let queue = if to_server {
                    &mut self.to_server
                } else {
                    &mut self.to_client
                };
                if queue.is_empty() {
                    return;
                }
                // A stream keeps order and does not duplicate.
                let i = if reliable { 0 } else { pick % queue.len() };
                let bytes = if duplicate && !reliable {
                    queue[i].clone()
                } else {
                    queue.remove(i)
                };
                let layer = if to_server {
                    &mut self.server
                } else {
                    &mut self.client
                };
                layer.handle_message(now, parse(&bytes), self.peer);
            }
            Op::Lose { to_server, pick } => {
                let queue = if to_server {
                    &mut self.to_server
                } else {
                    &mut self.to_client
                };
                if !self.reliable && !queue.is_empty() {
                    let i = pick % queue.len();
                    queue.remove(i);
                }
            }
            Op::Respond { pick, status } => {
                if self.held.is_empty() {
                    return;
                }
                let i = pick % self.held.len();
                self.answer(i, STATUSES[status]);
            }
            Op::Cancel(pick) => {
                if self.invites.is_empty() {
                    return;
                }
                self.cancel(self.invites[pick % self.invites.len()]);
            }
            Op::TransportError { client, pick } => {
                let seen = if client {
                    &self.client_seen
                } else {
                    &self.server_seen
                };
                let mut live: Vec<_> = seen.started.difference(&seen.ended).copied().collect();
                if live.is_empty() {
                    return;
                }
                live.sort();
                let id = live[pick % live.len()];
                if client {
                    self.client.handle_transport_error(now, id);
                } else {
                    self.server.handle_transport_error(now, id);
                }
            }
            Op::Advance(ms) => {
                self.now += Duration::from_millis(ms);
                self.client.handle_timeout(self.now);
                self.server.handle_timeout(self.now);
            }
        }
        self.drain();
        for layer in [&mut self.client, &mut self.server] {
            if let Some(at) = layer.poll_timeout() {
                // Only timers the layer has run are behind it (the clock moves by Advance).
                assert!(
                    at > self.now || !matches!(op, Op::Advance(_)),
                    "a timer due at or before now was left after handle_timeout"
                );
            }
        }
    }

    /// The client TU cancels INVITE `id`.
    fn cancel(&mut self, id: TransactionId) {
        // Refused once the INVITE has a final response or ended: both are fine.
        if let Ok(Some(cancel)) = self.client.cancel(self.now, id) {
            self.client_seen.started.insert(cancel);
        }
    }

    /// The server TU answers held request `i` with `status`.
    fn answer(&mut self, i: usize, status: u16) {
        let (id, request) = &self.held[i];
        let id = *id;
        // 1xx to a non-INVITE is allowed but rare; a 2xx to INVITE needs a To tag, and all
        // responses of one transaction carry the same one (§8.2.6.2).
        let mut response =
            SipMessage::response_to(request, status, sip_core::reason_phrase(status)).unwrap();
        if status > 100 {
            let tag = self
                .tags
                .entry(id)
                .or_insert_with(|| format!("t{id}"))
                .clone();
            response.set_to_tag(&tag).unwrap();
        }
        let result = self.server.respond(self.now, id, response);
        if status >= 200 || result.is_err() {
            self.held.remove(i);
        }
    }

    /// Moves what both layers sent onto the network and follows their events.
    fn drain(&mut self) {
        while let Some(t) = self.client.poll_transmit() {
            self.to_server.push(t.contents);
        }
        while let Some(t) = self.server.poll_transmit() {
            self.to_client.push(t.contents);
        }
        while let Some(e) = self.client.poll_event() {
            match e {
                Event::Response { id, response } => {
                    assert!(
                        !self.client_seen.ended.contains(&id),
                        "response after the end"
                    );
                    if response.status().is_some_and(|s| s >= 200) {
                        self.client_seen.told.insert(id);
                    }
                }
                Event::Timeout { id, .. } | Event::TransportError { id } => {
                    assert!(!self.client_seen.ended.contains(&id), "event after the end");
                    self.client_seen.told.insert(id);
                }
                Event::AnsweredAfterFailure { id, .. } => {
                    assert!(!self.client_seen.ended.contains(&id), "event after the end");
                    assert!(
                        self.client_seen.told.contains(&id),
                        "a 2xx after no failure"
                    );
                }
                Event::HeldCancel { cancel: Ok(c), .. } => {
                    self.client_seen.started.insert(c);
                }
                Event::Terminated { id } => {
                    assert!(
                        self.client_seen.ended.insert(id),
                        "a transaction ended twice"
                    );
                    assert!(
                        self.client.state(id).is_none(),
                        "an ended transaction is still known"
                    );
                    assert!(
                        self.client_seen.told.contains(&id),
                        "client transaction {id:?} ended without telling its TU how"
                    );
                    self.invites.retain(|i| *i != id);
                }
                _ => {}
            }
        }
        while let Some(e) = self.server.poll_event() {
            match e {
                Event::Request {
                    id,
                    request,
                    cancels,
                    ..
                } => {
                    assert!(
                        self.server_seen.started.insert(id),
                        "one request, one transaction"
                    );
                    let key = (
                        request
                            .top_via()
                            .unwrap()
                            .branch()
                            .unwrap_or_default()
                            .to_owned(),
                        request.method().unwrap().as_str().to_owned(),
                    );
                    if let Some(live) = self.server_keys.insert(key, id) {
                        assert!(
                            self.server_seen.ended.contains(&live),
                            "a retransmission made a second server transaction"
                        );
                    }
                    if request.method() == Some(&Method::Cancel) {
                        // What a TU does with a CANCEL: the layer answers it (§9.2).
                        let _ = self.server.answer_cancel(self.now, id, &request, cancels);
                        if let Some(inv) = cancels {
                            self.held.retain(|(i, _)| *i != inv);
                        }
                    } else {
                        self.held.push((id, request));
                    }
                }
                Event::Terminated { id } => {
                    assert!(
                        self.server_seen.ended.insert(id),
                        "a transaction ended twice"
                    );
                    assert!(
                        self.server.state(id).is_none(),
                        "an ended transaction is still known"
                    );
                    self.held.retain(|(i, _)| *i != id);
                }
                Event::Timeout { id, .. } | Event::TransportError { id } => {
                    assert!(!self.server_seen.ended.contains(&id), "event after the end");
                }
                _ => {}
            }
        }
        // The layers may have sent more while their events were followed (CANCEL answers).
        while let Some(t) = self.server.poll_transmit() {
            self.to_client.push(t.contents);
        }
    }

    /// The TUs answer what they hold, the network delivers everything, and time runs on:
    /// every transaction must end.
    fn settle(&mut self) {
        // Longer than any timer of the RFC (64·T1 = 32 s, Timer D 32 s, Timer L/M 32 s).
        let end = self.now + Duration::from_secs(300);
        // An INVITE with a provisional response has no timer of its own (Timer B runs in
        // Calling only): its TU ends the wait by cancelling (§9.1), after which Timer::Cancel
        // bounds it.
        for id in self.invites.clone() {
            self.cancel(id);
        }
        self.drain();
        while self.now < end {
            while !self.held.is_empty() {
                self.answer(0, 500);
                self.drain();
            }
            while !self.to_server.is_empty() || !self.to_client.is_empty() {
                for to_server in [true, false] {
                    self.apply(&Op::Deliver {
                        to_server,
                        pick: 0,
                        duplicate: false,
                    });
                }
            }
            self.apply(&Op::Advance(1_000));
        }
        assert!(self.held.is_empty());
        assert_eq!(
            self.client.len(),
            0,
            "client transactions left after every timer"
        );
        assert_eq!(
            self.server.len(),
            0,
            "server transactions left after every timer"
        );
        let untold: Vec<_> = self
            .client_seen
            .started
            .difference(&self.client_seen.told)
            .collect();
        assert!(
            untold.is_empty(),
            "client transactions never reported: {untold:?}"
        );
        for (seen, what) in [(&self.client_seen, "client"), (&self.server_seen, "server")] {
            assert_eq!(
                seen.started, seen.ended,
                "{what} transactions without Terminated"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(192)))]

    #[test]
    fn layers_over_a_lossy_datagram_network(ops in prop::collection::vec(op(), 1..80)) {
        let mut w = World::new(false);
        for op in &ops {
            w.apply(op);
        }
        w.settle();
    }

    #[test]
    fn layers_over_a_stream(ops in prop::collection::vec(op(), 1..80)) {
        let mut w = World::new(true);
        for op in &ops {
            w.apply(op);
        }
        w.settle();
    }
}

/// The kinds a request method makes (what the model relies on when it cancels INVITEs).
#[test]
fn an_invite_is_a_client_invite_transaction() {
    let mut w = World::new(false);
    w.apply(&Op::Send(0));
    let id = w.invites[0];
    assert_eq!(w.client.kind(id), Some(TransactionKind::ClientInvite));
}
