//! INVITEs of this platform remembered for a while after their outcome, by what a late
//! 2xx shares with them (Call-ID and From tag). The runtime keeps two such records:
//!
//! - INVITEs that ended in failure: a 2xx that comes after the failure (a UAS that
//!   contradicts itself, or a fork a proxy forwarded late) answers one of them, and the far
//!   end then holds a call nobody here wants. Over TCP and TLS the INVITE's transaction is
//!   gone as soon as its failure is ACKed (Timer D is zero), so the transaction layer can
//!   only call such a 2xx stray; this record lets the runtime know it as its own, ACK it
//!   and end it with BYE (RFC 3261 §13.2.2.4).
//! - INVITEs sent without an offer: a late fork's 2xx to one of them carries an offer, so
//!   the ACK that ends that fork must carry an answer (§13.2.2.4), one refusing every
//!   stream; the 2xx alone does not say whether it holds an offer or an answer.

use bytes::Bytes;
use sip_core::SipMessage;
use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

/// Most INVITEs remembered at once; past it the oldest is forgotten (a late 2xx for it is
/// then treated as without this record).
const LIMIT: usize = 4096;

/// (Call-ID, From tag) of INVITEs, in the order they were remembered, each for `keep`.
#[derive(Debug)]
pub(crate) struct RecentInvites {
    keep: Duration,
    order: VecDeque<(Instant, (Bytes, Bytes))>,
    keys: HashSet<(Bytes, Bytes)>,
}

impl RecentInvites {
    /// Remembers each INVITE for `keep` (64·T1: as long as a UAS retransmits its 2xx).
    pub(crate) fn new(keep: Duration) -> Self {
        RecentInvites {
            keep,
            order: VecDeque::new(),
            keys: HashSet::new(),
        }
    }

    /// Remembers the INVITE `request` from `now`.
    pub(crate) fn remember(&mut self, request: &SipMessage, now: Instant) {
        self.expire(now);
        let Some(key) = call_key(request) else {
            return;
        };
        if self.order.len() >= LIMIT {
            if let Some((_, old)) = self.order.pop_front() {
                self.keys.remove(&old);
            }
        }
        if self.keys.insert(key.clone()) {
            self.order.push_back((now, key));
        }
    }

    /// Does `response` answer an INVITE remembered here?
    pub(crate) fn answers_one(&mut self, response: &SipMessage, now: Instant) -> bool {
        self.expire(now);
        call_key(response).is_some_and(|k| self.keys.contains(&k))
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.keep {
                break;
            }
            if let Some((_, key)) = self.order.pop_front() {
                self.keys.remove(&key);
            }
        }
    }
}

/// (Call-ID, From tag): what a request and every response to it share, and the dialog
/// the request makes.
pub(crate) fn call_key(m: &SipMessage) -> Option<(Bytes, Bytes)> {
    let cid = Bytes::copy_from_slice(m.call_id().ok()?);
    let tag = Bytes::copy_from_slice(m.from().ok()?.tag()?);
    Some((cid, tag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_core::Limits;

    fn message(call_id: &str) -> SipMessage {
        let raw = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP h:1;branch=z9hG4bK1\r\n\
             From: <sip:a@h>;tag=f1\r\nTo: <sip:b@h>;tag=t1\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        SipMessage::parse_datagram(Bytes::from(raw), &Limits::default()).unwrap()
    }

    #[test]
    fn an_invite_is_known_for_its_time_and_no_longer() {
        let t0 = Instant::now();
        let mut f = RecentInvites::new(Duration::from_secs(32));
        f.remember(&message("c1"), t0);
        assert!(f.answers_one(&message("c1"), t0 + Duration::from_secs(31)));
        assert!(!f.answers_one(&message("c2"), t0));
        assert!(!f.answers_one(&message("c1"), t0 + Duration::from_secs(32)));
        assert!(f.keys.is_empty() && f.order.is_empty());
    }

    #[test]
    fn the_record_is_bounded() {
        let t0 = Instant::now();
        let mut f = RecentInvites::new(Duration::from_secs(32));
        for i in 0..LIMIT + 10 {
            f.remember(&message(&format!("c{i}")), t0);
        }
        assert_eq!(f.order.len(), LIMIT);
        assert!(!f.answers_one(&message("c0"), t0), "the oldest went first");
        assert!(f.answers_one(&message(&format!("c{}", LIMIT + 9)), t0));
    }
}
