//! Conversions between [`SipMessage`] and [`rsip::SipMessage`] (rsip 0.4).
//!
//! Use [`to_rsip`] / [`from_rsip`] or the equivalent `TryFrom` impls. Both directions go
//! through the wire form, the one representation both crates agree on: a message is written
//! by one crate and parsed by the other.
//!
//! # What is lost or refused, and where
//!
//! Going **to rsip**, this crate writes the message in canonical form with every value of a
//! list header on its own line, because rsip keeps only the first value of a comma-separated
//! Via. What rsip still cannot represent:
//!
//! - **Refused** ([`RsipError::Rsip`]): what rsip's grammar does not take, e.g. extension
//!   methods with token punctuation (RFC 4475 `intmeth`), display names with raw control
//!   bytes, some absolute URIs of unknown schemes.
//! - **Lost**: the spelling of header names (rsip has its own names for the ones it knows),
//!   whitespace and folding, and the reason phrase of a known status code, which rsip
//!   replaces with its own text (a response whose phrase is `Go Away` comes back `OK`).
//! - **Body**: kept byte for byte (rsip holds a `Vec<u8>`); rsip does not check it against
//!   Content-Length.
//!
//! Going **from rsip**, the rsip message is written by rsip and parsed by this crate as one
//! datagram, so anything rsip accepted that RFC 3261 refuses (rsip accepts 14 of the 23
//! invalid RFC 4475 messages) is refused here with a [`ParseError`] in [`RsipError::Parse`].

use crate::{HeaderName, Limits, ParseError, SipMessage};
use bytes::{Bytes, BytesMut};
use std::convert::TryFrom;

/// A conversion failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RsipError {
    /// rsip refused the message this crate wrote (rsip's error text).
    #[error("rsip cannot represent the message: {0}")]
    Rsip(String),
    /// This crate refused the message rsip wrote.
    #[error("rsip produced an invalid SIP message: {0}")]
    Parse(#[from] ParseError),
}

/// Converts a message to rsip (see the module doc for what is lost).
pub fn to_rsip(msg: &SipMessage) -> Result<rsip::SipMessage, RsipError> {
    rsip::SipMessage::try_from(one_value_per_line(msg)).map_err(|e| RsipError::Rsip(e.to_string()))
}

/// Converts an rsip message, validating it as this crate validates received datagrams.
pub fn from_rsip(msg: &rsip::SipMessage) -> Result<SipMessage, RsipError> {
    let wire: Bytes = msg.clone().into();
    Ok(SipMessage::parse_datagram(wire, &Limits::DEFAULT)?)
}

/// The canonical form with comma lists of list headers written as repeated fields.
fn one_value_per_line(msg: &SipMessage) -> Bytes {
    let mut split = msg.clone();
    let fields: Vec<(HeaderName, Bytes, Bytes)> = msg
        .headers()
        .map(|h| {
            (
                h.name,
                Bytes::copy_from_slice(h.raw_name),
                Bytes::copy_from_slice(h.value),
            )
        })
        .collect();
    let mut rebuilt = Vec::with_capacity(fields.len());
    for (name, raw, value) in &fields {
        if name.is_list() {
            for v in crate::scan::CommaSplit::new(value).filter(|v| !v.is_empty()) {
                rebuilt.push((*name, raw.clone(), value.slice_ref(v)));
            }
        } else {
            rebuilt.push((*name, raw.clone(), value.clone()));
        }
    }
    for (name, raw, _) in &fields {
        let key = raw_key(*name, raw);
        split.remove_header(key.as_str());
    }
    for (name, raw, value) in rebuilt {
        let key = raw_key(name, &raw);
        // Values and names came from a valid message: pushing them back cannot fail.
        let _ = split.push_header(key.as_str(), value);
    }
    let mut out = BytesMut::new();
    split.write_to(&mut out);
    out.freeze()
}

fn raw_key(name: HeaderName, raw: &[u8]) -> String {
    match name {
        HeaderName::Other => String::from_utf8_lossy(raw).into_owned(),
        known => known.as_str().to_string(),
    }
}

impl TryFrom<&SipMessage> for rsip::SipMessage {
    type Error = RsipError;
    fn try_from(msg: &SipMessage) -> Result<Self, RsipError> {
        to_rsip(msg)
    }
}

impl TryFrom<&rsip::SipMessage> for SipMessage {
    type Error = RsipError;
    fn try_from(msg: &rsip::SipMessage) -> Result<Self, RsipError> {
        from_rsip(msg)
    }
}
