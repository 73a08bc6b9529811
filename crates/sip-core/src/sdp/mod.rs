//! SDP (RFC 8866) session descriptions: model, parser, serializer.
//!
//! [`SessionDescription::parse`] takes the body of a SIP message as [`bytes::Bytes`] and
//! keeps every line, in order, as a zero-copy slice of it: unknown line types and unknown
//! attributes (`a=x-ms-...`, `a=candidate`, `a=crypto`, …) included. An unchanged description
//! serializes to exactly the received bytes; a changed one serializes canonically with CRLF.
//!
//! Typed views cover what offer/answer (RFC 3264) interprets: [`Origin`] (`o=`),
//! [`Connection`] (`c=`), [`Timing`] (`t=`), [`Media`] (`m=`), [`Rtpmap`], [`Fmtp`],
//! [`Direction`] with the session default and media override, and `a=accept-types` for
//! instant messaging sessions. Everything else stays text, reachable as [`Line`]s and
//! [`Attribute`]s.
//!
//! ## Strict and lenient
//!
//! Strict on structure: `v=0` first, then `o=` and `s=`; each line `x=value` with `x` one ASCII
//! letter; at least one `t=`; at most one session-level `c=`; no session-only line
//! (`v o s u e p t r z`) after the first `m=`; `o=`, `c=`, `m=`, `t=` follow their grammar and
//! their numbers fit (a 30-digit version is [`SdpError::NumberOutOfRange`], never a wrapped
//! number). Lenient on values it does not interpret: empty or single-space `s=`, FQDNs in
//! `o=`/`c=`, `r=`/`z=`/`b=`/`k=` and attribute values are kept as text (so
//! `r=99999999999999999 1h 0` is harmless), repeated spaces between fields, LF or CRLF line
//! ends, a last line without line end, empty lines at the very end. Unknown line types are
//! kept (RFC 8866 §5 lets a parser refuse them; this one leaves that decision to the caller).
//! The order of lines after `s=` is not checked (new lines are inserted in RFC 8866 §5 order).
//! A media section with no `c=` of its own and none at session level is accepted (RFC 8866
//! §5.7 requires one; refusing would turn an omission that only matters to that stream, e.g.
//! a rejected one, into a refused body): [`SessionDescription::effective_connection`] is then
//! `None`. Text must be UTF-8, so a non-UTF-8 `s=`/`i=` declared by `a=charset` (RFC 8866
//! §6.10) is refused ([`SdpError::NotUtf8`]).
//!
//! [`SdpLimits`] bounds the body size, the line count and length and the number of media
//! sections; exceeding one is a typed error.
//!
//! ```
//! use sip_core::sdp::{Direction, SessionDescription};
//!
//! let body = bytes::Bytes::from_static(
//!     b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
//!       m=audio 49170 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=sendonly\r\n",
//! );
//! let mut sdp = SessionDescription::parse(body.clone())?;
//! assert_eq!(sdp.to_bytes(), body);
//! let audio = &sdp.media()[0];
//! assert_eq!(audio.rtpmap(111).and_then(|r| r.channels()), Some(2));
//! assert_eq!(sdp.effective_direction(audio), Direction::SendOnly);
//!
//! sdp.media_mut()[0].set_port(0);
//! sdp.bump_version();
//! assert!(sdp.to_string().contains("m=audio 0 RTP/AVP 111\r\n"));
//! # Ok::<(), sip_core::sdp::SdpError>(())
//! ```

mod description;
mod error;
mod limits;
mod line;
pub mod offer_answer;
mod parse;
mod types;

pub use description::{MediaDescription, SessionDescription, SessionDescriptionBuilder};
pub use error::SdpError;
pub use limits::SdpLimits;
pub use line::Line;
pub use offer_answer::{
    Codec, LocalCapabilities, MediaCapability, NegotiationState, OfferAnswer, OfferAnswerError,
};
pub use types::{Attribute, Connection, Direction, Fmtp, Media, Origin, Rtpmap, Timing};
