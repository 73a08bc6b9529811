//! ACKs that wait for the application's answer. An INVITE sent without an offer (delayed
//! offer, RFC 3261 §13.2.1) gets the offer in its 2xx, and the answer must go in the ACK
//! (§13.2.2.4): the platform cannot write it, so it holds the ACK until the application
//! gives the answer ([`CollaborationPlatform::send_ack_answer`]), absorbing the 2xx's
//! retransmissions meanwhile, then sends that same ACK again for every retransmission.
//! An answer that does not come within 64·T1 (as long as the UAS waits for an ACK,
//! §13.3.1.4) is given up on: the runtime ACKs with an answer refusing every stream and
//! ends the call with BYE, as §13.2.2.4 says for an offer the UAC does not accept.
//!
//! The ACK of a call the platform ends as soon as it is answered (cancelled, a late fork)
//! is kept the same way, so that a retransmission of its 2xx after the BYE gets the ACK
//! again instead of making the dialog anew.
//!
//! [`CollaborationPlatform::send_ack_answer`]: crate::CollaborationPlatform::send_ack_answer

use bytes::Bytes;
use sip_core::{DialogId, SipMessage};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Most entries at once (answers awaited and ACKs kept). Past it an INVITE without an offer
/// is still held (the application must answer it), but no ACK of a call ended at once is
/// kept.
const LIMIT: usize = 4096;

/// The ACK of one dialog's INVITE, by the INVITE's CSeq number.
#[derive(Debug)]
enum Held {
    /// The 2xx came; the application has not answered yet. `offer`: the 2xx's body, to
    /// refuse if the answer does not come.
    Waiting {
        seq: u32,
        since: Instant,
        offer: Bytes,
    },
    /// The ACK that went out, sent again for each retransmission of the 2xx.
    Sent { seq: u32, ack: Box<SipMessage> },
}

/// What to do with a 2xx to an INVITE (first or retransmitted).
#[derive(Debug)]
pub(crate) enum On2xx {
    /// Not held: the platform ACKs it as usual.
    NotHeld,
    /// The answer is awaited: nothing to send yet.
    Absorb,
    /// The ACK already sent: send it again.
    Resend(SipMessage),
}

/// Held ACKs by dialog (one INVITE at a time per dialog), with their deadlines.
#[derive(Debug)]
pub(crate) struct HeldAcks {
    /// How long an answer is waited for, and a sent ACK kept for retransmissions: 64·T1.
    keep: Duration,
    entries: HashMap<DialogId, Held>,
    /// (when it was held or sent, dialog, CSeq number) in time order: `keep` is the same
    /// for all, so the front is the earliest to expire. Entries that changed since are
    /// skipped when they come up.
    order: VecDeque<(Instant, DialogId, u32)>,
}

impl HeldAcks {
    pub(crate) fn new(keep: Duration) -> Self {
        HeldAcks {
            keep,
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The 2xx of INVITE `seq` in `dialog`, sent without an offer, came at `now` with
    /// body `offer`: its ACK waits for the answer.
    pub(crate) fn hold(&mut self, dialog: DialogId, seq: u32, offer: Bytes, now: Instant) {
        self.order.push_back((now, dialog.clone(), seq));
        let held = Held::Waiting {
            seq,
            since: now,
            offer,
        };
        self.entries.insert(dialog, held);
    }

    /// A 2xx of INVITE `seq` in `dialog` came (again).
    pub(crate) fn on_2xx(&self, dialog: &DialogId, seq: u32) -> On2xx {
        match self.entries.get(dialog) {
            Some(Held::Waiting { seq: s, .. }) if *s == seq => On2xx::Absorb,
            Some(Held::Sent { seq: s, ack }) if *s == seq => On2xx::Resend((**ack).clone()),
            _ => On2xx::NotHeld,
        }
    }

    /// The CSeq number of the INVITE whose ACK waits in `dialog` for an answer.
    pub(crate) fn waiting(&self, dialog: &DialogId) -> Option<u32> {
        match self.entries.get(dialog) {
            Some(Held::Waiting { seq, .. }) => Some(*seq),
            _ => None,
        }
    }

    /// `ack` (the answer in it) went out for the INVITE waiting in `dialog`: kept for
    /// the 2xx's retransmissions until `keep` after the 2xx.
    pub(crate) fn sent(&mut self, dialog: &DialogId, ack: SipMessage) {
        if let Some(e) = self.entries.get_mut(dialog) {
            if let Held::Waiting { seq, .. } = *e {
                *e = Held::Sent {
                    seq,
                    ack: Box::new(ack),
                };
            }
        }
    }

    /// The dialog is gone: an answer awaited in it is not any more. A sent ACK stays
    /// until it expires: the 2xx may still be retransmitted after the dialog ended.
    pub(crate) fn forget(&mut self, dialog: &DialogId) {
        if let Some(Held::Waiting { .. }) = self.entries.get(dialog) {
            self.entries.remove(dialog);
        }
    }

    /// `ack` went out at `now` for the 2xx of INVITE `seq` in `dialog`, a call the
    /// platform ended at once: kept for the 2xx's retransmissions as [`sent`](Self::sent)
    /// keeps one (none past [`LIMIT`] entries: a retransmission then makes the dialog anew).
    pub(crate) fn keep_sent(&mut self, dialog: DialogId, seq: u32, ack: SipMessage, now: Instant) {
        if self.entries.len() >= LIMIT {
            return;
        }
        self.order.push_back((now, dialog.clone(), seq));
        let held = Held::Sent {
            seq,
            ack: Box::new(ack),
        };
        self.entries.insert(dialog, held);
    }

    /// When the earliest entry expires.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.order.front().map(|(at, ..)| *at + self.keep)
    }

    /// Drops what expired by `now` and returns the (dialog, CSeq number, offer) of the
    /// ACKs that were still waiting for an answer: the caller ends those calls.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(DialogId, u32, Bytes)> {
        let mut given_up = Vec::new();
        while let Some((at, ..)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.keep {
                break;
            }
            let Some((at, dialog, seq)) = self.order.pop_front() else {
                break;
            };
            let current = match self.entries.get(&dialog) {
                Some(Held::Waiting { seq: s, since, .. }) => *s == seq && *since == at,
                // A sent ACK is kept from its 2xx's time: the same entry in `order`.
                Some(Held::Sent { seq: s, .. }) => *s == seq,
                None => false,
            };
            if !current {
                continue;
            }
            if let Some(Held::Waiting { offer, .. }) = self.entries.remove(&dialog) {
                given_up.push((dialog, seq, offer));
            }
        }
        if self.entries.capacity() > 64 && self.entries.capacity() > 4 * self.entries.len() {
            self.entries.shrink_to(self.entries.len() * 2);
        }
        given_up
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// An SDP answer to `offer` that refuses every stream (port 0, RFC 3264 §6); `None` if
/// `offer` is not SDP this crate can read (the ACK then goes without a body).
pub(crate) fn refusing_answer(offer: &[u8]) -> Option<Bytes> {
    use sip_core::sdp::offer_answer::build_answer;
    use sip_core::sdp::{LocalCapabilities, Origin, SessionDescription};
    let offer = SessionDescription::parse_slice(offer).ok()?;
    let origin = Origin::new("-", "0", 0, "0.0.0.0");
    build_answer(&offer, &LocalCapabilities::new("0.0.0.0"), origin)
        .ok()
        .map(|a| a.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialog(n: u8) -> DialogId {
        DialogId::new(format!("call-{n}").as_bytes(), b"local", b"remote")
    }

    fn ack() -> SipMessage {
        let text =
            "ACK sip:bob@192.0.2.4 SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.1;branch=z9hG4bK1\r\n\
                    Max-Forwards: 70\r\nFrom: <sip:app@contoso.test>;tag=local\r\n\
                    To: <sip:bob@fabrikam.test>;tag=remote\r\nCall-ID: call-1\r\n\
                    CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n";
        SipMessage::parse_datagram(Bytes::from(text), &sip_core::Limits::DEFAULT).unwrap()
    }

    #[test]
    fn a_held_ack_absorbs_the_2xx_then_is_sent_again_for_each_retransmission() {
        let t = Instant::now();
        let mut h = HeldAcks::new(Duration::from_secs(32));
        h.hold(dialog(1), 1, Bytes::new(), t);
        assert!(matches!(h.on_2xx(&dialog(1), 1), On2xx::Absorb));
        assert!(matches!(h.on_2xx(&dialog(1), 2), On2xx::NotHeld));
        assert!(matches!(h.on_2xx(&dialog(2), 1), On2xx::NotHeld));
        assert_eq!(h.waiting(&dialog(1)), Some(1));
        h.sent(&dialog(1), ack());
        assert_eq!(h.waiting(&dialog(1)), None);
        assert!(matches!(h.on_2xx(&dialog(1), 1), On2xx::Resend(_)));
        // Kept for 64·T1 from the 2xx, then forgotten without being given up on.
        assert!(h.expire(t + Duration::from_secs(31)).is_empty());
        assert!(h.expire(t + Duration::from_secs(32)).is_empty());
        assert_eq!(h.len(), 0);
        assert!(matches!(h.on_2xx(&dialog(1), 1), On2xx::NotHeld));
    }

    #[test]
    fn an_answer_that_does_not_come_is_given_up_on_once() {
        let t = Instant::now();
        let mut h = HeldAcks::new(Duration::from_secs(32));
        h.hold(dialog(1), 1, Bytes::new(), t);
        h.hold(dialog(2), 1, Bytes::new(), t + Duration::from_secs(1));
        assert_eq!(h.next_deadline(), Some(t + Duration::from_secs(32)));
        assert_eq!(
            h.expire(t + Duration::from_secs(32)),
            vec![(dialog(1), 1, Bytes::new())]
        );
        assert_eq!(h.next_deadline(), Some(t + Duration::from_secs(33)));
        h.forget(&dialog(2));
        assert!(h.expire(t + Duration::from_secs(40)).is_empty());
        // A kept ACK outlives its dialog until it expires.
        h.keep_sent(dialog(3), 1, ack(), t + Duration::from_secs(40));
        h.forget(&dialog(3));
        assert!(matches!(h.on_2xx(&dialog(3), 1), On2xx::Resend(_)));
        assert!(h.expire(t + Duration::from_secs(72)).is_empty());
        assert!(matches!(h.on_2xx(&dialog(3), 1), On2xx::NotHeld));
        assert_eq!(h.next_deadline(), None);
    }

    #[test]
    fn a_re_invite_held_again_replaces_the_earlier_entry() {
        let t = Instant::now();
        let mut h = HeldAcks::new(Duration::from_secs(32));
        h.hold(dialog(1), 1, Bytes::new(), t);
        h.sent(&dialog(1), ack());
        h.hold(dialog(1), 2, Bytes::new(), t + Duration::from_secs(10));
        // The first entry's expiry passes without touching the second.
        assert!(h.expire(t + Duration::from_secs(32)).is_empty());
        assert_eq!(h.waiting(&dialog(1)), Some(2));
        assert_eq!(
            h.expire(t + Duration::from_secs(42)),
            vec![(dialog(1), 2, Bytes::new())]
        );
    }

    #[test]
    fn the_refusing_answer_keeps_every_offered_stream_at_port_zero() {
        let offer = "v=0\r\no=- 7 1 IN IP4 192.0.2.4\r\ns=-\r\nc=IN IP4 192.0.2.4\r\nt=0 0\r\n\
                     m=audio 49170 RTP/AVP 0\r\nm=message 5060 sip null\r\n\
                     a=accept-types:text/plain\r\n";
        let answer = refusing_answer(offer.as_bytes()).unwrap();
        let answer = std::str::from_utf8(&answer).unwrap();
        assert!(answer.contains("m=audio 0 RTP/AVP 0\r\n"), "{answer}");
        assert!(answer.contains("m=message 0 sip null\r\n"), "{answer}");
        assert_eq!(refusing_answer(b"not sdp"), None);
    }
}
