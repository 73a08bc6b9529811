//! INVITE expiry (RFC 3261 §13.2.1, §13.3.1): an INVITE may limit in Expires how long its
//! invitation stands. When that time passes without a final response, the UAC core cancels
//! it and the UAS core answers 487 (Request Terminated). No transaction timer does this: a
//! client INVITE with a provisional response, and a server INVITE, wait for their TU as
//! long as it takes. One heap of deadlines serves both sides.
//!
//! Entries are not removed when their INVITE is answered (that happens in many places);
//! the runtime ignores the stale ones when they fall due, and once the heap holds more than
//! twice the INVITEs still waiting (plus some slack) it drops those already answered, so it
//! stays bounded whatever Expires values peers send.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use sip_core::transaction::TransactionId;
use sip_core::SipMessage;

/// Entries beyond twice the waiting INVITEs before stale ones are dropped.
const SLACK: usize = 1024;

/// Whose INVITE it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Side {
    /// Ours: cancel it.
    Client,
    /// A peer's, delivered to an endpoint: answer it 487.
    Server,
}

/// The expiry times of the INVITEs that carry an Expires.
#[derive(Debug, Default)]
pub(crate) struct InviteExpiry {
    due: BinaryHeap<Reverse<(Instant, TransactionId, Side)>>,
}

impl InviteExpiry {
    /// Notes when `invite` (transaction `id` of `side`) expires, if it says so. An Expires
    /// that does not parse is ignored, as a header this side does not understand.
    /// `waiting` says whether an INVITE is still unanswered: used to drop stale entries
    /// when they pile up, `live` being how many are.
    pub(crate) fn arm(
        &mut self,
        now: Instant,
        id: TransactionId,
        side: Side,
        invite: &SipMessage,
        live: usize,
        waiting: impl Fn(TransactionId, Side) -> bool,
    ) {
        let Some(Ok(secs)) = invite.expires() else {
            return;
        };
        let Some(at) = now.checked_add(Duration::from_secs(secs.into())) else {
            return;
        };
        if self.due.len() > 2 * live + SLACK {
            self.due
                .retain(|Reverse((_, id, side))| waiting(*id, *side));
        }
        self.due.push(Reverse((at, id, side)));
    }

    /// When the next one is due.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.due.peek().map(|Reverse((at, ..))| *at)
    }

    /// The INVITEs whose time is up at `now` (some may be answered already).
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(TransactionId, Side)> {
        let mut out = Vec::new();
        while let Some(Reverse((at, id, side))) = self.due.peek().copied() {
            if at > now {
                break;
            }
            self.due.pop();
            out.push((id, side));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_core::transaction::{Peer, TransactionConfig, TransactionLayer, TransportKind};
    use sip_core::{HeaderName, Method};

    fn invite(expires: Option<&str>) -> SipMessage {
        let mut b = SipMessage::request(Method::Invite, "sip:bob@contoso.test")
            .header(HeaderName::Via, "SIP/2.0/TLS h")
            .header(HeaderName::From, "<sip:a@contoso.test>;tag=1")
            .header(HeaderName::To, "<sip:bob@contoso.test>")
            .header(HeaderName::CallId, "c")
            .header(HeaderName::CSeq, "1 INVITE");
        if let Some(e) = expires {
            b = b.header(HeaderName::Expires, e.to_owned());
        }
        b.build().unwrap()
    }

    /// Distinct transaction ids, from a layer that sends INVITEs.
    fn ids(n: usize) -> Vec<TransactionId> {
        let mut layer = TransactionLayer::new(TransactionConfig::default());
        let peer = Peer::new(([192, 0, 2, 1], 5061).into(), TransportKind::Tls);
        (0..n)
            .map(|_| {
                layer
                    .send_request(Instant::now(), invite(None), peer)
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn due_in_order_of_their_expires_and_only_with_a_valid_one() {
        let t0 = Instant::now();
        let id = ids(4);
        let mut e = InviteExpiry::default();
        e.arm(t0, id[0], Side::Server, &invite(Some("30")), 0, |_, _| true);
        e.arm(t0, id[1], Side::Client, &invite(Some("5")), 0, |_, _| true);
        e.arm(t0, id[2], Side::Server, &invite(None), 0, |_, _| true);
        e.arm(t0, id[3], Side::Server, &invite(Some("soon")), 0, |_, _| {
            true
        });
        assert_eq!(e.next_deadline(), Some(t0 + Duration::from_secs(5)));
        assert!(e.expire(t0 + Duration::from_secs(4)).is_empty());
        assert_eq!(
            e.expire(t0 + Duration::from_secs(5)),
            [(id[1], Side::Client)]
        );
        assert_eq!(e.next_deadline(), Some(t0 + Duration::from_secs(30)));
        assert_eq!(
            e.expire(t0 + Duration::from_secs(99)),
            [(id[0], Side::Server)]
        );
        assert_eq!(e.next_deadline(), None);
    }

    #[test]
    fn answered_invites_do_not_pile_up() {
        let t0 = Instant::now();
        let id = ids(1);
        let mut e = InviteExpiry::default();
        // A peer sends INVITEs with the largest Expires, each answered at once: none is
        // waiting, so the heap stays near the slack however many come.
        for _ in 0..10 * SLACK {
            e.arm(
                t0,
                id[0],
                Side::Server,
                &invite(Some("4294967295")),
                0,
                |_, _| false,
            );
        }
        assert!(e.due.len() <= SLACK + 1, "{}", e.due.len());
    }
}
