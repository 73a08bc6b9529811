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
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Most INVITEs remembered at once; past it the oldest is forgotten (a late 2xx for it is
/// then treated as without this record).
const LIMIT: usize = 4096;

/// (Call-ID, From tag) of INVITEs, each for `keep` from the last time it was remembered.
#[derive(Debug)]
pub(crate) struct RecentInvites {
    keep: Duration,
    /// Every `remember`, oldest first: when, its number, and the key. An entry whose number
    /// is no longer the key's in `keys` is stale (the key was remembered again later) and
    /// is skipped; renewing so costs O(1), where moving the key in the queue would not.
    order: VecDeque<(Instant, u64, (Bytes, Bytes))>,
    /// The keys remembered, each with the number of its latest `remember`.
    keys: HashMap<(Bytes, Bytes), u64>,
    /// The number the next `remember` takes.
    next: u64,
}

impl RecentInvites {
    /// Remembers each INVITE for `keep` (64·T1: as long as a UAS retransmits its 2xx).
    pub(crate) fn new(keep: Duration) -> Self {
        RecentInvites {
            keep,
            order: VecDeque::new(),
            keys: HashMap::new(),
            next: 0,
        }
    }

    /// Remembers the INVITE `request` from `now`, also when it is remembered already: the
    /// retry of a challenged INVITE shares its Call-ID and From tag, and a 2xx late for
    /// the retry must be known for `keep` after the retry failed, not after the first.
    pub(crate) fn remember(&mut self, request: &SipMessage, now: Instant) {
        self.expire(now);
        let Some(key) = call_key(request) else {
            return;
        };
        // A key remembered already is renewed in place: only a new one may push the
        // oldest out.
        if !self.keys.contains_key(&key) && self.keys.len() >= LIMIT {
            self.forget_oldest();
        }
        let n = self.next;
        self.next += 1;
        self.keys.insert(key.clone(), n);
        self.order.push_back((now, n, key));
        // Stale entries would let the queue grow with renewals of the same keys: dropping
        // them when it reaches 2·LIMIT leaves at most LIMIT, so this O(LIMIT) pass comes
        // at most once per LIMIT calls (O(1) amortised) and the queue stays bounded.
        if self.order.len() >= 2 * LIMIT {
            let keys = &self.keys;
            self.order.retain(|(_, n, k)| keys.get(k) == Some(n));
        }
    }

    /// Does `response` answer an INVITE remembered here?
    pub(crate) fn answers_one(&mut self, response: &SipMessage, now: Instant) -> bool {
        self.expire(now);
        call_key(response).is_some_and(|k| self.keys.contains_key(&k))
    }

    /// Is the queue entry numbered `n` for `key` the key's latest `remember`?
    fn is_live(&self, n: u64, key: &(Bytes, Bytes)) -> bool {
        self.keys.get(key) == Some(&n)
    }

    /// Forgets the key remembered longest ago (stale entries before it go too).
    fn forget_oldest(&mut self) {
        while let Some((_, n, key)) = self.order.pop_front() {
            if self.is_live(n, &key) {
                self.keys.remove(&key);
                return;
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.keep {
                break;
            }
            if let Some((_, n, key)) = self.order.pop_front() {
                if self.is_live(n, &key) {
                    self.keys.remove(&key);
                }
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

    /// An INVITE remembered again (a challenged INVITE's retry) is kept for `keep` from
    /// the later time, not the first.
    #[test]
    fn remembered_again_is_kept_from_the_second_time() {
        let t0 = Instant::now();
        let mut f = RecentInvites::new(Duration::from_secs(32));
        // INVITE challenged 407 at t0; its retry (same Call-ID and From tag, CSeq 2) fails
        // at t0 + 20 s.
        f.remember(&message("c1"), t0);
        f.remember(&message("c1"), t0 + Duration::from_secs(20));
        // A 2xx 15 s after that second failure answers an INVITE remembered here.
        assert!(
            f.answers_one(&message("c1"), t0 + Duration::from_secs(35)),
            "forgotten 32 s after the first failure, 15 s after the second"
        );
    }

    /// Renewing a key when the record is full forgets no other key.
    #[test]
    fn renewing_a_key_when_full_forgets_no_other() {
        let t0 = Instant::now();
        let mut f = RecentInvites::new(Duration::from_secs(32));
        for i in 0..LIMIT {
            f.remember(&message(&format!("c{i}")), t0);
        }
        f.remember(&message("c5"), t0);
        assert!(f.answers_one(&message("c0"), t0), "the oldest is kept");
        assert_eq!(f.keys.len(), LIMIT);
        // A new key still pushes out the oldest.
        f.remember(&message("new"), t0);
        assert!(!f.answers_one(&message("c0"), t0));
        assert!(f.answers_one(&message("c5"), t0));
    }

    /// Renewing the same key over and over keeps the queue bounded.
    #[test]
    fn renewals_keep_the_queue_bounded() {
        let t0 = Instant::now();
        let mut f = RecentInvites::new(Duration::from_secs(32));
        for _ in 0..5 * LIMIT {
            f.remember(&message("c1"), t0);
        }
        assert!(f.order.len() < 2 * LIMIT);
        assert_eq!(f.keys.len(), 1);
        assert!(!f.answers_one(&message("c1"), t0 + Duration::from_secs(32)));
        assert!(f.keys.is_empty() && f.order.is_empty());
    }
}
