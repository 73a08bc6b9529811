//! Transaction keys: how a message finds its transaction (RFC 3261 §17.1.3, §17.2.3).
//!
//! A key is one compact byte string plus a method and a role, hashed once per lookup.
//! Server keys use the top Via's branch and sent-by when the branch has the magic cookie, and
//! the RFC 2543 fields (Request-URI, From tag, Call-ID, CSeq number, top Via) otherwise. ACK
//! is keyed as INVITE, so an ACK for a non-2xx response finds its INVITE transaction; a CANCEL
//! is keyed as CANCEL (its own transaction) and [`Key::as_invite`] finds the INVITE it cancels;
//! [`Key::with_method`] finds a non-INVITE it cancels (§9.2).

use super::ids::MAGIC_COOKIE;
use crate::scratch::Scratch;
use crate::{HeaderName, Method, ParseError, SipMessage};
use bytes::Bytes;
use std::sync::Arc;

/// Which side of the transaction the key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Role {
    Client,
    Server,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    role: Role,
    method: Method,
    /// `1branch\0sent-by` (RFC 3261), `0uri\0from-tag\0call-id\0cseq\0via` (RFC 2543), or
    /// the branch alone for client keys.
    text: Text,
}

/// A key's bytes: owned and shared by the map and the transaction (`Arc`: cloning is
/// free), or, for a response looking its transaction up, a slice of the response's own
/// buffer (no copy at all). Compared and hashed by content.
#[derive(Debug, Clone)]
enum Text {
    Owned(Arc<[u8]>),
    Received(Bytes),
}

impl Text {
    fn bytes(&self) -> &[u8] {
        match self {
            Text::Owned(a) => a,
            Text::Received(b) => b,
        }
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for Text {}

impl std::hash::Hash for Text {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bytes().hash(state);
    }
}

/// ACK shares the INVITE's transaction.
fn class(m: &Method) -> Method {
    match m {
        Method::Ack => Method::Invite,
        other => other.clone(),
    }
}

impl Key {
    /// The key of a client transaction: branch and CSeq method (§17.1.3).
    pub(crate) fn client(branch: &[u8], method: &Method) -> Key {
        Key {
            role: Role::Client,
            method: method.clone(),
            text: Text::Owned(branch.into()),
        }
    }

    /// The key a response looks up: its branch is not copied, the key shares the
    /// response's buffer.
    pub(crate) fn for_response(msg: &SipMessage) -> Result<Key, ParseError> {
        let via = msg.top_via()?;
        let branch = via.branch_bytes().unwrap_or_default();
        let cseq = msg.cseq()?;
        let method = match cseq.method_bytes() {
            b"INVITE" => Method::Invite,
            b"CANCEL" => Method::Cancel,
            other => Method::from_token(other),
        };
        Ok(Key {
            role: Role::Client,
            method,
            text: Text::Received(msg.share(branch)),
        })
    }

    /// The key a request looks up (server side, §17.2.3).
    pub(crate) fn for_request(msg: &SipMessage) -> Result<Key, ParseError> {
        let method = class(msg.method().ok_or(ParseError::StartLine("not a request"))?);
        let via = msg.top_via()?;
        let mut text = Scratch::new();
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
            text: Text::Owned(Arc::from(text.as_slice())),
        })
    }

    /// Was the key built from the RFC 2543 fields (the top Via has no magic cookie)?
    pub(crate) fn is_rfc2543(&self) -> bool {
        self.role == Role::Server && self.text.bytes().first() == Some(&b'0')
    }

    /// The key of the INVITE transaction a CANCEL with this key cancels (§9.2).
    pub(crate) fn as_invite(&self) -> Key {
        Key {
            role: self.role,
            method: Method::Invite,
            text: self.text.clone(),
        }
    }

    /// This key with another method: the key of the request a CANCEL with this key may
    /// cancel, when that request is not an INVITE (§9.2).
    pub(crate) fn with_method(&self, method: Method) -> Key {
        Key {
            role: self.role,
            method,
            text: self.text.clone(),
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
        assert_eq!(ck.as_invite(), inv);
        // sent-by host is case-insensitive
        let lower = parse(&INV.replace("H.example", "h.EXAMPLE"));
        assert_eq!(Key::for_request(&lower).unwrap(), inv);
    }

    #[test]
    fn rfc2543_fallback() {
        let old = INV.replace(";branch=z9hG4bKa", "");
        let k = Key::for_request(&parse(&old)).unwrap();
        assert_eq!(k.text.bytes()[0], b'0');
        let ack = old
            .replace("INVITE sip", "ACK sip")
            .replace("1 INVITE", "1 ACK")
            .replace("<sip:b@x>", "<sip:b@x>;tag=9");
        assert_eq!(Key::for_request(&parse(&ack)).unwrap(), k);
        let other = old.replace("Call-ID: c", "Call-ID: d");
        assert_ne!(Key::for_request(&parse(&other)).unwrap(), k);
    }
}
