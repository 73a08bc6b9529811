//! Transaction keys: how a message finds its transaction (RFC 3261 §17.1.3, §17.2.3).
//!
//! A key is one compact byte string plus a method and a role, kept once, by its
//! transaction; the [`KeyIndex`] holds ids and hashes a key's borrowed parts ([`KeyRef`]),
//! once per lookup.
//! Server keys use the top Via's branch and sent-by when the branch has the magic cookie, and
//! the RFC 2543 fields (Request-URI, From tag, Call-ID, CSeq number, top Via) otherwise. ACK
//! is keyed as INVITE, so an ACK for a non-2xx response finds its INVITE transaction; a CANCEL
//! is keyed as CANCEL (its own transaction) and [`Key::as_invite`] finds the INVITE it cancels;
//! [`Key::with_method`] finds a non-INVITE it cancels (§9.2).

use super::ids::MAGIC_COOKIE;
use super::TransactionId;
use crate::{HeaderName, Method, ParseError, SipMessage};
use std::hash::BuildHasher;

/// Which side of the transaction the key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Role {
    Client,
    Server,
}

/// A key's bytes: `1branch\0sent-by` (RFC 3261), `0uri\0from-tag\0call-id\0cseq\0via`
/// (RFC 2543), or the branch alone for client keys. Inline up to 56 bytes, which holds a
/// magic-cookie branch of ours or a usual peer's with its sent-by: a transaction's key
/// then costs no allocation of its own.
type Text = smallvec::SmallVec<[u8; 56]>;

/// A transaction's key, kept by the transaction itself (once: the index holds only ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key {
    role: Role,
    method: Method,
    text: Text,
}

/// A key's parts, borrowed from a [`Key`], a received response or another key: what the
/// index hashes and compares, so that a lookup builds nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct KeyRef<'a> {
    role: Role,
    method: &'a Method,
    text: &'a [u8],
}

/// The live transactions by key (§17.1.3, §17.2.3): a hash table of ids alone, each key
/// (and its hash) read from its transaction. Keeping the key once saves a copy of it per
/// transaction, and a lookup by a borrowed [`KeyRef`] copies nothing (a received response
/// is looked up by slices of its own buffer).
///
/// foldhash, seeded per table: several times faster than SipHash on these short keys,
/// and still keyed, so a peer cannot aim branches at one bucket.
#[derive(Default)]
pub(crate) struct KeyIndex {
    table: hashbrown::HashTable<TransactionId>,
    hasher: foldhash::fast::RandomState,
}

impl KeyIndex {
    /// The hash of `key` under this index's seed. A transaction keeps its key's hash, so
    /// that inserting and removing it hash nothing again.
    pub(crate) fn hash(&self, key: KeyRef<'_>) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The transaction with key `key`, whose hash is `hash`.
    pub(crate) fn find<'k>(
        &self,
        hash: u64,
        key: KeyRef<'_>,
        key_of: impl Fn(TransactionId) -> Option<&'k Key>,
    ) -> Option<TransactionId> {
        self.table
            .find(hash, |&id| key_of(id).is_some_and(|k| k.as_ref() == key))
            .copied()
    }

    /// Adds `id`, whose key hashes to `hash` (and is not in the index yet: see
    /// [`find`](Self::find)). `hash_of` gives the kept hash of any id already in, for a
    /// resize.
    pub(crate) fn insert(
        &mut self,
        hash: u64,
        id: TransactionId,
        hash_of: impl Fn(TransactionId) -> u64,
    ) {
        self.table.insert_unique(hash, id, |id| hash_of(*id));
    }

    /// Removes `id`, whose key hashes to `hash`.
    pub(crate) fn remove(&mut self, hash: u64, id: TransactionId) {
        if let Ok(entry) = self.table.find_entry(hash, |&x| x == id) {
            entry.remove();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// Gives back capacity down to `min` entries.
    pub(crate) fn shrink_to(&mut self, min: usize, hash_of: impl Fn(TransactionId) -> u64) {
        self.table.shrink_to(min, |id| hash_of(*id));
    }
}

/// ACK shares the INVITE's transaction.
fn class(m: &Method) -> Method {
    match m {
        Method::Ack => Method::Invite,
        other => other.clone(),
    }
}

/// The method a response's CSeq names: the standard ones without building anything.
fn cseq_method(token: &[u8]) -> Method {
    match token {
        b"INVITE" => Method::Invite,
        b"CANCEL" => Method::Cancel,
        other => Method::from_token(other),
    }
}

impl Key {
    /// The key of a client transaction: branch and CSeq method (§17.1.3).
    pub(crate) fn client(branch: &[u8], method: &Method) -> Key {
        Key {
            role: Role::Client,
            method: method.clone(),
            text: Text::from_slice(branch),
        }
    }

    /// Looks up the client transaction of a response: its branch and CSeq method, read in
    /// place, given to `f` as a borrowed key.
    pub(crate) fn with_response_key<R>(
        msg: &SipMessage,
        f: impl FnOnce(KeyRef<'_>) -> R,
    ) -> Result<R, ParseError> {
        let via = msg.top_via()?;
        let branch = via.branch_bytes().unwrap_or_default();
        let method = cseq_method(msg.cseq()?.method_bytes());
        Ok(f(KeyRef {
            role: Role::Client,
            method: &method,
            text: branch,
        }))
    }

    /// The key a request looks up (server side, §17.2.3).
    pub(crate) fn for_request(msg: &SipMessage) -> Result<Key, ParseError> {
        let method = class(msg.method().ok_or(ParseError::StartLine("not a request"))?);
        let via = msg.top_via()?;
        let mut text = Text::new();
        match via.branch_bytes() {
            Some(b) if b.starts_with(MAGIC_COOKIE.as_bytes()) => {
                text.push(b'1');
                text.extend_from_slice(b);
                text.push(0);
                // sent-by: host compared case-insensitively, port as written.
                let host = text.len();
                text.extend_from_slice(via.host_raw());
                text[host..].make_ascii_lowercase();
                if let Some(p) = via.port() {
                    text.push(b':');
                    text.extend_from_slice(itoa::Buffer::new().format(p).as_bytes());
                }
            }
            _ => {
                text.push(b'0');
                text.extend_from_slice(msg.request_uri_bytes().unwrap_or_default());
                text.push(0);
                text.extend_from_slice(msg.from()?.tag().unwrap_or_default());
                text.push(0);
                text.extend_from_slice(msg.call_id()?);
                text.push(0);
                text.extend_from_slice(itoa::Buffer::new().format(msg.cseq()?.seq()).as_bytes());
                text.push(0);
                text.extend_from_slice(
                    msg.header_values(HeaderName::Via)
                        .next()
                        .unwrap_or_default(),
                );
            }
        }
        Ok(Key {
            role: Role::Server,
            method,
            text,
        })
    }

    /// The key's parts, as the index hashes them.
    pub(crate) fn as_ref(&self) -> KeyRef<'_> {
        KeyRef {
            role: self.role,
            method: &self.method,
            text: &self.text,
        }
    }

    /// Was the key built from the RFC 2543 fields (the top Via has no magic cookie)?
    pub(crate) fn is_rfc2543(&self) -> bool {
        self.role == Role::Server && self.text.first() == Some(&b'0')
    }

    /// The key of the INVITE transaction a CANCEL with this key cancels (§9.2).
    pub(crate) fn as_invite(&self) -> KeyRef<'_> {
        self.with_method(&Method::Invite)
    }

    /// This key with another method: the key of the request a CANCEL with this key may
    /// cancel, when that request is not an INVITE (§9.2).
    pub(crate) fn with_method<'a>(&'a self, method: &'a Method) -> KeyRef<'a> {
        KeyRef {
            role: self.role,
            method,
            text: &self.text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;
    use bytes::Bytes;

    fn parse(s: &str) -> SipMessage {
        SipMessage::parse_datagram(Bytes::from(s.replace('\n', "\r\n")), &Limits::DEFAULT).unwrap()
    }

    const INV: &str = "INVITE sip:b@x SIP/2.0\nVia: SIP/2.0/UDP H.example:5060;branch=z9hG4bKa\nFrom: <sip:a@x>;tag=1\nTo: <sip:b@x>\nCall-ID: c\nCSeq: 1 INVITE\nContent-Length: 0\n\n";

    #[test]
    fn ack_and_cancel_map_to_invite() {
        let inv = Key::for_request(&parse(INV)).unwrap();
        let ack = parse(
            &INV.replace("INVITE sip", "ACK sip")
                .replace("1 INVITE", "1 ACK"),
        );
        assert_eq!(Key::for_request(&ack).unwrap(), inv);
        let cancel = parse(
            &INV.replace("INVITE sip", "CANCEL sip")
                .replace("1 INVITE", "1 CANCEL"),
        );
        let ck = Key::for_request(&cancel).unwrap();
        assert_ne!(ck, inv);
        assert_eq!(ck.as_invite(), inv.as_ref());
        // sent-by host is case-insensitive
        let lower = parse(&INV.replace("H.example", "h.EXAMPLE"));
        assert_eq!(Key::for_request(&lower).unwrap(), inv);
    }

    #[test]
    fn rfc2543_fallback() {
        let old = INV.replace(";branch=z9hG4bKa", "");
        let k = Key::for_request(&parse(&old)).unwrap();
        assert_eq!(k.text[0], b'0');
        let ack = old
            .replace("INVITE sip", "ACK sip")
            .replace("1 INVITE", "1 ACK")
            .replace("<sip:b@x>", "<sip:b@x>;tag=9");
        assert_eq!(Key::for_request(&parse(&ack)).unwrap(), k);
        let other = old.replace("Call-ID: c", "Call-ID: d");
        assert_ne!(Key::for_request(&parse(&other)).unwrap(), k);
    }
}
