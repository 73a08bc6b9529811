//! Merged requests (RFC 3261 §8.2.2.2): the same request outside a dialog reaching the
//! same UA twice, on two transactions (a forking proxy's branches met again, or two
//! proxies each forwarded it). The first is processed; the others get 482 (Loop Detected).
//!
//! "The same UA" is the endpoint the request is routed to, not the platform: a proxy that
//! forks one INVITE to two users both hosted here reaches two UAs, and each gets it.

use crate::dispatch::EndpointId;
use bytes::{BufMut, Bytes, BytesMut};
use foldhash::{HashMap, HashMapExt};
use sip_core::transaction::TransactionId;
use sip_core::{Method, SipMessage};

/// How many requests at most are remembered at once. Entries leave with their server
/// transaction, so this is reached only by a burst (INVITE transactions live 32 s after
/// their 2xx); past it new requests are not remembered, and a merged copy of one of those
/// is processed as a new request, as if this check did not exist.
pub(crate) const MERGE_LIMIT: usize = 32_768;

/// What a merged copy shares with the request: Call-ID and From tag (in one buffer, one
/// allocation per request), CSeq number and method, and the endpoint it is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct MergeKey {
    call_id_and_tag: Bytes,
    seq: u32,
    method: Method,
    endpoint: EndpointId,
}

impl MergeKey {
    /// The key of `request` routed to `endpoint`, for a request outside a dialog (no To
    /// tag) that gets a response: not ACK or CANCEL, whose transactions are the INVITE's
    /// (§17.2.3). `None` otherwise, or without a From tag (RFC 2543 peers: nothing to
    /// compare).
    pub(crate) fn of(request: &SipMessage, endpoint: EndpointId) -> Option<MergeKey> {
        let method = request.method()?;
        if matches!(method, Method::Ack | Method::Cancel) || request.to().ok()?.tag().is_some() {
            return None;
        }
        let from = request.from().ok()?;
        let tag = from.tag()?;
        let call_id = request.call_id().ok()?;
        let mut b = BytesMut::with_capacity(call_id.len() + tag.len() + 4);
        // Length-prefixed: no Call-ID/tag pair can be read as another.
        b.put_u32(u32::try_from(call_id.len()).ok()?);
        b.extend_from_slice(call_id);
        b.extend_from_slice(tag);
        Some(MergeKey {
            call_id_and_tag: b.freeze(),
            seq: request.cseq().ok()?.seq(),
            method: method.clone(),
            endpoint,
        })
    }
}

/// The requests outside dialogs being processed, by [`MergeKey`], and the other way round
/// to forget them when their transaction ends.
#[derive(Debug)]
pub(crate) struct MergedRequests {
    by_key: HashMap<MergeKey, TransactionId>,
    by_transaction: HashMap<TransactionId, MergeKey>,
    limit: usize,
}

impl Default for MergedRequests {
    fn default() -> Self {
        MergedRequests::with_limit(MERGE_LIMIT)
    }
}

impl MergedRequests {
    /// Remembers at most `limit` requests.
    pub(crate) fn with_limit(limit: usize) -> Self {
        MergedRequests {
            by_key: HashMap::new(),
            by_transaction: HashMap::new(),
            limit,
        }
    }

    /// Whether a request with `key` on transaction `id` is a merged copy of one being
    /// processed on another transaction.
    pub(crate) fn is_merged(&self, key: &MergeKey, id: TransactionId) -> bool {
        self.by_key.get(key).is_some_and(|t| *t != id)
    }

    /// Remembers the request with `key`, now processed on transaction `id` (nothing when
    /// [`MERGE_LIMIT`] are remembered already).
    pub(crate) fn track(&mut self, key: MergeKey, id: TransactionId) {
        if self.by_key.len() >= self.limit {
            return;
        }
        self.by_transaction.insert(id, key.clone());
        self.by_key.insert(key, id);
    }

    /// Transaction `id` ended: a copy arriving from now on is a new request (§8.2.2.2
    /// compares with requests in progress only).
    pub(crate) fn forget(&mut self, id: TransactionId) {
        if let Some(k) = self.by_transaction.remove(&id) {
            self.by_key.remove(&k);
            crate::runtime::shrink_if_sparse(&mut self.by_key);
            crate::runtime::shrink_if_sparse(&mut self.by_transaction);
        }
    }

    /// How many requests are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_core::transaction::{Event, Peer, TransactionConfig, TransactionLayer, TransportKind};
    use sip_core::Limits;

    fn message(method: &str, to_tag: &str, call_id: &str, from_tag: &str) -> SipMessage {
        let raw = format!(
            "{method} sip:bot@contoso.test SIP/2.0\r\n\
             Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK-1\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:alice@contoso.test>;tag={from_tag}\r\n\
             To: <sip:bot@contoso.test>{to_tag}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 {method}\r\n\
             Content-Length: 0\r\n\r\n"
        );
        SipMessage::parse_datagram(Bytes::from(raw), &Limits::default()).unwrap()
    }

    /// Server transaction ids of `n` distinct transactions.
    fn transactions(n: usize) -> Vec<TransactionId> {
        let mut layer = TransactionLayer::new(TransactionConfig::default());
        let peer = Peer::new("192.0.2.1:5061".parse().unwrap(), TransportKind::Tls);
        (0..n)
            .map(|i| {
                let raw = format!(
                    "MESSAGE sip:bot@contoso.test SIP/2.0\r\n\
                     Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK-t{i}\r\n\
                     Max-Forwards: 70\r\n\
                     From: <sip:alice@contoso.test>;tag=a\r\n\
                     To: <sip:bot@contoso.test>\r\n\
                     Call-ID: t{i}\r\n\
                     CSeq: 1 MESSAGE\r\n\
                     Content-Length: 0\r\n\r\n"
                );
                let m = SipMessage::parse_datagram(Bytes::from(raw), &Limits::default()).unwrap();
                layer.handle_message(std::time::Instant::now(), m, peer);
                match layer.poll_event() {
                    Some(Event::Request { id, .. }) => id,
                    other => panic!("a request, not {other:?}"),
                }
            })
            .collect()
    }

    #[test]
    fn keys_say_what_a_merged_copy_shares() {
        let e = EndpointId(1);
        let k = MergeKey::of(&message("MESSAGE", "", "c1", "f1"), e).unwrap();
        assert_eq!(
            MergeKey::of(&message("MESSAGE", "", "c1", "f1"), e),
            Some(k.clone())
        );
        // Another endpoint, Call-ID, From tag or method: another request.
        assert_ne!(
            MergeKey::of(&message("MESSAGE", "", "c1", "f1"), EndpointId(2)),
            Some(k.clone())
        );
        assert_ne!(
            MergeKey::of(&message("MESSAGE", "", "c2", "f1"), e),
            Some(k.clone())
        );
        assert_ne!(
            MergeKey::of(&message("MESSAGE", "", "c1", "f2"), e),
            Some(k.clone())
        );
        assert_ne!(
            MergeKey::of(&message("INFO", "", "c1", "f1"), e),
            Some(k.clone())
        );
        // The boundary between Call-ID and tag counts.
        assert_ne!(
            MergeKey::of(&message("MESSAGE", "", "c1f", "1"), e),
            Some(k)
        );
        // Inside a dialog, ACK and CANCEL: nothing to merge.
        assert_eq!(
            MergeKey::of(&message("MESSAGE", ";tag=t", "c1", "f1"), e),
            None
        );
        assert_eq!(MergeKey::of(&message("ACK", "", "c1", "f1"), e), None);
        assert_eq!(MergeKey::of(&message("CANCEL", "", "c1", "f1"), e), None);
    }

    #[test]
    fn a_copy_on_another_transaction_is_merged_until_the_first_ends() {
        let t = transactions(2);
        let mut merged = MergedRequests::default();
        let k = MergeKey::of(&message("INVITE", "", "c1", "f1"), EndpointId(1)).unwrap();
        assert!(!merged.is_merged(&k, t[0]));
        merged.track(k.clone(), t[0]);
        assert!(!merged.is_merged(&k, t[0]), "its own transaction");
        assert!(merged.is_merged(&k, t[1]));
        merged.forget(t[0]);
        assert!(!merged.is_merged(&k, t[1]));
        assert_eq!(merged.len(), 0);
    }

    #[test]
    fn no_more_than_the_limit_is_remembered() {
        let t = transactions(3);
        let mut merged = MergedRequests::with_limit(2);
        let keys: Vec<_> = ["c1", "c2", "c3"]
            .iter()
            .map(|c| MergeKey::of(&message("MESSAGE", "", c, "f"), EndpointId(1)).unwrap())
            .collect();
        for (k, id) in keys.iter().zip(&t) {
            merged.track(k.clone(), *id);
        }
        assert_eq!(merged.len(), 2);
        // The third was not remembered: a copy of it goes through.
        assert!(!merged.is_merged(&keys[2], t[0]));
        merged.forget(t[0]);
        merged.track(keys[2].clone(), t[2]);
        assert!(merged.is_merged(&keys[2], t[0]));
    }
}
