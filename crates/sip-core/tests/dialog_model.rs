//! Model test of the dialog layer (proptest): alice's INVITE forks to up to three UASs,
//! each of which answers with provisional, 2xx or failure responses, and then both sides
//! send in-dialog requests (re-INVITE-free: INFO, MESSAGE, UPDATE with a new Contact,
//! BYE) through a network that loses, duplicates and reorders them. `dialogs.rs` pins each
//! RFC 3261 §12 rule; this looks for what the rules together must keep:
//!
//! - no panic;
//! - the two ends of a dialog find each other: alice's (Call-ID, a, b) is the fork's
//!   (Call-ID, b, a), for every fork;
//! - a request reaches the dialog it was sent in and is taken exactly when its CSeq is
//!   above the last taken (else 500), or refused 481 when that dialog is gone; the last
//!   remote CSeq never goes down;
//! - a confirmed dialog is ended only by BYE, never by another fork's failure response;
//! - an UPDATE's Contact becomes the remote target where it is taken;
//! - a BYE taken ends the dialog there.

use bytes::Bytes;
#[path = "support/cases.rs"]
mod support_cases;
use proptest::prelude::*;
use sip_core::dialog::{DialogError, DialogState, DialogUpdate, Dialogs};
use sip_core::transaction::SequentialIds;
use sip_core::{DialogId, HeaderName, Limits, Method, SipMessage};
use support_cases::cases;

const FORKS: usize = 3;
const CALL_ID: &str = "model-call@a.example";

#[derive(Debug, Clone)]
enum Op {
    /// Fork `k` answers the INVITE: 180, 200 or 486 (index into [`ANSWERS`]).
    Answer { fork: usize, status: usize },
    /// A side sends a request in its dialog with fork `k` (index into [`METHODS`]).
    Request {
        from_alice: bool,
        fork: usize,
        method: usize,
    },
    /// A message in flight arrives; a copy may stay in flight.
    Deliver { pick: usize, duplicate: bool },
    /// A message in flight is lost.
    Lose(usize),
}

const ANSWERS: [u16; 3] = [180, 200, 486];
const METHODS: [Method; 4] = [Method::Info, Method::Message, Method::Update, Method::Bye];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..FORKS, 0..ANSWERS.len()).prop_map(|(fork, status)| Op::Answer { fork, status }),
        3 => (any::<bool>(), 0..FORKS, 0..METHODS.len())
            .prop_map(|(from_alice, fork, method)| Op::Request { from_alice, fork, method }),
        4 => (any::<usize>(), prop::bool::weighted(0.2))
            .prop_map(|(pick, duplicate)| Op::Deliver { pick, duplicate }),
        1 => any::<usize>().prop_map(Op::Lose),
    ]
}

/// A message in flight: a response to the INVITE for alice, or an in-dialog request for
/// alice (`to_alice`) or for fork `fork`.
#[derive(Debug, Clone)]
enum Flight {
    Response(Bytes),
    Request {
        to_alice: bool,
        fork: usize,
        bytes: Bytes,
    },
}

fn parse(b: &Bytes) -> SipMessage {
    SipMessage::parse_datagram(b.clone(), &Limits::DEFAULT).expect("valid")
}

struct World {
    alice: Dialogs,
    forks: Vec<Dialogs>,
    invite: SipMessage,
    /// Each fork's To tag and whether it sent a final response.
    tags: Vec<String>,
    answered: Vec<bool>,
    network: Vec<Flight>,
    /// Contacts sent in UPDATEs, numbered so each is new.
    contacts: u32,
}

impl World {
    fn new() -> World {
        let mut alice = Dialogs::with_ids(Box::new(SequentialIds::default()));
        let tag = alice.new_tag();
        let invite = SipMessage::request(Method::Invite, "sip:bob@b.example")
            .header(
                HeaderName::Via,
                "SIP/2.0/TLS a.example:5061;branch=z9hG4bKinv",
            )
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, format!("<sip:alice@a.example>;tag={tag}"))
            .header(HeaderName::To, "<sip:bob@b.example>")
            .header(HeaderName::CallId, CALL_ID)
            .header(HeaderName::CSeq, "1 INVITE")
            .header(HeaderName::Contact, "<sip:alice@192.0.2.9;transport=tls>")
            .build()
            .unwrap();
        let forks = (0..FORKS)
            .map(|k| Dialogs::with_ids(Box::new(SequentialIds::starting_at(1000 * (k as u64 + 1)))))
            .collect();
        World {
            alice,
            forks,
            invite: parse(&invite.to_bytes()),
            tags: (0..FORKS).map(|k| format!("fork{k}")).collect(),
            answered: vec![false; FORKS],
            network: Vec::new(),
            contacts: 0,
        }
    }

    fn alice_tag(&self) -> Vec<u8> {
        self.invite.from().unwrap().tag().unwrap().to_vec()
    }

    /// Alice's dialog with fork `k`, and the fork's with alice.
    fn ids(&self, k: usize) -> (DialogId, DialogId) {
        let a = self.alice_tag();
        let b = self.tags[k].as_bytes();
        (
            DialogId::new(CALL_ID.as_bytes(), &a, b),
            DialogId::new(CALL_ID.as_bytes(), b, &a),
        )
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Answer { fork, status } => self.answer(fork, ANSWERS[status]),
            Op::Request {
                from_alice,
                fork,
                method,
            } => self.request(from_alice, fork, METHODS[method].clone()),
            Op::Deliver { pick, duplicate } => {
                if self.network.is_empty() {
                    return;
                }
                let i = pick % self.network.len();
                let f = if duplicate {
                    self.network[i].clone()
                } else {
                    self.network.remove(i)
                };
                self.deliver(f);
            }
            Op::Lose(pick) => {
                if !self.network.is_empty() {
                    let i = pick % self.network.len();
                    self.network.remove(i);
                }
            }
        }
    }

    fn answer(&mut self, k: usize, status: u16) {
        if self.answered[k] {
            return;
        }
        let mut r = SipMessage::response_to(&self.invite, status, "X").unwrap();
        r.set_to_tag(&self.tags[k]).unwrap();
        if status < 300 {
            r.push_header(
                HeaderName::Contact,
                format!("<sip:bob@192.0.2.{}:5061;transport=tls>", 10 + k),
            )
            .unwrap();
            r.push_header(HeaderName::RecordRoute, "<sip:edge.b.example;lr>")
                .unwrap();
        }
        let (_, fork_id) = self.ids(k);
        let before = self.forks[k].get(&fork_id).map(|d| d.state());
        let update = self.forks[k]
            .handle_uas_response(&self.invite, &r)
            .expect("the fork's own response");
        match status {
            180 if before.is_some() => assert_eq!(update, DialogUpdate::Updated(fork_id.clone())),
            180 => assert_eq!(update, DialogUpdate::Early(fork_id.clone())),
            200 => assert_eq!(update, DialogUpdate::Confirmed(fork_id.clone())),
            _ => {
                if before.is_some() {
                    assert_eq!(update, DialogUpdate::Terminated(vec![fork_id.clone()]));
                }
                assert!(self.forks[k].get(&fork_id).is_none());
            }
        }
        self.answered[k] = status >= 200;
        self.network.push(Flight::Response(r.to_bytes()));
    }

    fn request(&mut self, from_alice: bool, k: usize, method: Method) {
        let (alice_id, fork_id) = self.ids(k);
        let (dialogs, id) = if from_alice {
            (&mut self.alice, &alice_id)
        } else {
            (&mut self.forks[k], &fork_id)
        };
        let Some(d) = dialogs.get(id) else {
            return;
        };
        // In an early dialog only the UAC side (alice) sends here (§12.1.1: a UAS may too,
        // but these methods wait for confirmation in practice).
        if d.state() != DialogState::Confirmed {
            return;
        }
        let before = d.local_seq();
        let mut b = dialogs
            .request(
                id,
                method.clone(),
                "SIP/2.0/TLS h.example:5061;branch=z9hG4bKr",
            )
            .unwrap();
        if method == Method::Update {
            self.contacts += 1;
            b = b.header(
                HeaderName::Contact,
                format!(
                    "<sip:moved{}@192.0.2.200:5061;transport=tls>",
                    self.contacts
                ),
            );
        }
        let m = b.build().unwrap();
        let seq = m.cseq().unwrap().seq();
        assert!(before.is_none_or(|b| seq > b), "local CSeq goes up");
        assert_eq!(dialogs.get(id).unwrap().local_seq(), Some(seq));
        self.network.push(Flight::Request {
            to_alice: !from_alice,
            fork: k,
            bytes: m.to_bytes(),
        });
    }

    fn deliver(&mut self, f: Flight) {
        match f {
            Flight::Response(bytes) => {
                let r = parse(&bytes);
                let tag = r.to().unwrap().tag().unwrap().to_vec();
                let k = self.tags.iter().position(|t| t.as_bytes() == tag).unwrap();
                let (alice_id, _) = self.ids(k);
                let confirmed: Vec<DialogId> = self
                    .alice
                    .iter()
                    .filter(|(_, d)| d.state() == DialogState::Confirmed)
                    .map(|(id, _)| id.clone())
                    .collect();
                let status = r.status().unwrap();
                let before = self.alice.get(&alice_id).map(|d| d.state());
                let update = self.alice.handle_uac_response(&self.invite, &r).unwrap();
                match status {
                    180 if before == Some(DialogState::Confirmed) => {}
                    180 => {
                        assert!(matches!(
                            update,
                            DialogUpdate::Early(_) | DialogUpdate::Updated(_)
                        ));
                        assert_eq!(
                            self.alice.get(&alice_id).unwrap().state(),
                            DialogState::Early
                        );
                    }
                    200 => {
                        assert_eq!(update, DialogUpdate::Confirmed(alice_id.clone()));
                        let d = self.alice.get(&alice_id).unwrap();
                        assert_eq!(d.state(), DialogState::Confirmed);
                    }
                    _ => {}
                }
                // No response ends a confirmed dialog.
                for id in confirmed {
                    assert!(
                        self.alice.get(&id).is_some(),
                        "a {status} ended a confirmed dialog"
                    );
                }
            }
            Flight::Request {
                to_alice,
                fork,
                bytes,
            } => {
                let m = parse(&bytes);
                let (alice_id, fork_id) = self.ids(fork);
                let (dialogs, id) = if to_alice {
                    (&mut self.alice, &alice_id)
                } else {
                    (&mut self.forks[fork], &fork_id)
                };
                let seq = m.cseq().unwrap().seq();
                let last = dialogs.get(id).map(|d| d.remote_seq());
                let result = dialogs.handle_request(&m);
                match last {
                    None => assert_eq!(result, Err(DialogError::NoDialog)),
                    Some(Some(last)) if seq <= last => {
                        assert_eq!(result, Err(DialogError::OutOfOrder { got: seq, last }));
                        assert_eq!(dialogs.get(id).unwrap().remote_seq(), Some(last));
                    }
                    Some(_) => {
                        let method = m.method().unwrap().clone();
                        if method == Method::Bye {
                            assert_eq!(result, Ok(DialogUpdate::Terminated(vec![id.clone()])));
                            assert!(dialogs.get(id).is_none(), "BYE ends the dialog");
                        } else {
                            assert_eq!(result, Ok(DialogUpdate::Updated(id.clone())));
                            let d = dialogs.get(id).unwrap();
                            assert_eq!(d.remote_seq(), Some(seq));
                            if method == Method::Update {
                                let contact = m.contacts().next().unwrap().unwrap();
                                let sip_core::Contact::Addr(a) = contact else {
                                    unreachable!()
                                };
                                assert_eq!(d.remote_target(), a.uri().as_bytes());
                            }
                        }
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(256)))]

    #[test]
    fn forked_dialogs_over_a_lossy_network(ops in prop::collection::vec(op(), 1..60)) {
        let mut w = World::new();
        for op in &ops {
            w.apply(op);
        }
        // Everything still in flight arrives in the end.
        while let Some(f) = w.network.pop() {
            w.deliver(f);
        }
    }
}
