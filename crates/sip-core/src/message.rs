//! The SIP message: parsing from received bytes, typed access, building, serializing.
//!
//! A parsed [`SipMessage`] holds the received [`Bytes`] and, per header field, the offsets of
//! its name and value inside them: parsing allocates one `Vec` and copies no text (folded
//! values, rare in practice, are the exception: they are unfolded into a new buffer).

use crate::error::ParseError;
use crate::headers::{
    parse_delta_seconds, validate_date, AuthValue, CSeq, Contact, MediaType, TokenParams, Via,
    ViaIdx, Warning,
};
use crate::index::Sp;
use crate::limits::Limits;
use crate::method::Method;
use crate::name::HeaderName;
use crate::name_addr::{NameAddr, NameAddrIdx};
use crate::scan::{
    find, find_byte, find_control, find_lf, forbidden_in_value, is_call_id, is_token, is_ws,
    parse_u64, quoted_end, quoted_pair_at, rfind, trim, CommaSplit,
};
use crate::uri::Uri;
use bytes::{Bytes, BytesMut};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// Where the bytes of some text live: a range of the received buffer, one of the message's
/// owned pieces (what was built or changed), or the canonical spelling of the field's name.
/// Twelve bytes, so that a field is 28 and a parsed message's field table is one small
/// allocation (one that glibc serves from its per-thread cache).
#[derive(Debug, Clone, Copy)]
enum Text {
    Span(u32, u32),
    Owned(u32),
    Canonical,
}

/// The bytes of `t` in a message with received buffer `buf` and owned pieces `owned`.
#[inline]
fn text_of<'a>(buf: &'a Bytes, owned: &'a [Bytes], t: Text) -> &'a [u8] {
    match t {
        Text::Span(a, b) => buf.get(a as usize..b as usize).unwrap_or_default(),
        Text::Owned(i) => owned.get(i as usize).map_or(&[][..], |b| &b[..]),
        Text::Canonical => &[],
    }
}

#[derive(Debug, Clone, Copy)]
struct Field {
    name: HeaderName,
    raw_name: Text,
    value: Text,
}

#[derive(Debug, Clone)]
enum StartLine {
    Request {
        method: Method,
        uri: Text,
    },
    /// `reason: None` is the standard phrase of `status` (`crate::reason_phrase`), held
    /// nowhere: most responses a UAS builds use it.
    Response {
        status: u16,
        reason: Option<Text>,
    },
}

/// One header field as it appears in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRef<'a> {
    /// The field's name (compact forms already mapped to the long name).
    pub name: HeaderName,
    /// The name exactly as written (`v`, `ViA`, `X-Custom`).
    pub raw_name: &'a [u8],
    /// The value, trimmed, folding replaced by single spaces.
    pub value: &'a [u8],
}

/// How the bytes given to the parser were delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// One UDP datagram: Content-Length optional, bytes past it ignored (RFC 3261 §18.3).
    Datagram,
    /// Exactly one message from the stream framer: Content-Length mandatory and exact.
    Framed,
    /// Start line and headers only; the body is not looked at.
    Head,
}

/// A SIP request or response.
#[derive(Clone)]
pub struct SipMessage {
    buf: Bytes,
    start: StartLine,
    fields: Vec<Field>,
    /// Text not in `buf`: built or changed values, unfolded values, custom names.
    owned: Vec<Bytes>,
    body: Bytes,
    /// True while the message is exactly the received bytes in `buf`.
    pristine: bool,
    /// Where validation found the core views (behind an `Arc`: most of a message's moves
    /// do not need it inline, and a clone shares it); cleared by any change.
    core: Option<Arc<Core>>,
}

/// What validation learnt about the headers every layer reads, so the typed accessors
/// rebuild those views by slicing instead of parsing again (see `crate::index`).
#[derive(Debug, Clone, Default)]
struct Core {
    top_via: Option<(usize, ViaIdx)>,
    from: Option<(usize, NameAddrIdx)>,
    to: Option<(usize, NameAddrIdx)>,
    cseq: Option<(usize, u32, Sp)>,
    call_id: Option<usize>,
}

/// Where the first field of each header validation reads is: noted by the parser as it
/// goes, or found by one walk over a built message's fields.
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(test, derive(PartialEq))]
struct Seen {
    from: Option<usize>,
    to: Option<usize>,
    call_id: Option<usize>,
    cseq: Option<usize>,
    max_forwards: Option<usize>,
    via: Option<usize>,
    content_length: Option<usize>,
    /// More than one Content-Length field (then they must all agree).
    several_lengths: bool,
    /// The first header that must appear once and appeared again.
    repeated: Option<HeaderName>,
}

impl Seen {
    fn of(fields: &[Field]) -> Seen {
        let mut seen = Seen::default();
        for (i, f) in fields.iter().enumerate() {
            seen.note(f.name, i);
        }
        seen
    }

    /// Notes that field `i` is named `name`.
    #[inline]
    fn note(&mut self, name: HeaderName, i: usize) {
        let slot = match name {
            HeaderName::Via => {
                self.via.get_or_insert(i);
                return;
            }
            HeaderName::ContentLength => {
                self.several_lengths |= self.content_length.is_some();
                self.content_length.get_or_insert(i);
                return;
            }
            HeaderName::From => &mut self.from,
            HeaderName::To => &mut self.to,
            HeaderName::CallId => &mut self.call_id,
            HeaderName::CSeq => &mut self.cseq,
            HeaderName::MaxForwards => &mut self.max_forwards,
            _ => return,
        };
        if slot.is_some() {
            self.repeated.get_or_insert(name);
        } else {
            *slot = Some(i);
        }
    }
}

impl fmt::Debug for SipMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SipMessage")
            .field("start", &String::from_utf8_lossy(&self.start_line_bytes()))
            .field("headers", &self.fields.len())
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl PartialEq for SipMessage {
    /// Messages are equal when they serialize to the same bytes.
    fn eq(&self, other: &Self) -> bool {
        self.to_bytes() == other.to_bytes()
    }
}

impl SipMessage {
    /// Parses one UDP datagram (RFC 3261 §18.3): Content-Length is optional (without it the
    /// body is the rest of the datagram) and bytes past it are ignored. The message is
    /// validated (see [`validate`](Self::validate)).
    pub fn parse_datagram(buf: Bytes, limits: &Limits) -> Result<SipMessage, ParseError> {
        parse(buf, limits, Framing::Datagram)
    }

    /// Parses one message delimited by a stream framer: Content-Length is mandatory and must
    /// equal the body length. The message is validated.
    pub fn parse_framed(buf: Bytes, limits: &Limits) -> Result<SipMessage, ParseError> {
        parse(buf, limits, Framing::Framed)
    }

    /// Parses the start line and header lines only, ignoring Content-Length and the body,
    /// and does **not** [validate](Self::validate): enough to answer a request that is
    /// refused (513 for oversize, 400 for a failed validation) with the Via, From, To,
    /// Call-ID and CSeq it carried. Call `validate` before trusting anything else.
    ///
    /// The header count and line length limits are not applied, so that the head of a
    /// request refused for them can still be answered 513; the work stays linear in the
    /// bytes given (the framer's head, or one datagram).
    pub fn parse_head(buf: Bytes, limits: &Limits) -> Result<SipMessage, ParseError> {
        parse(buf, limits, Framing::Head)
    }

    /// Starts building a request.
    pub fn request(method: Method, uri: impl Into<Bytes>) -> MessageBuilder {
        MessageBuilder {
            msg: SipMessage {
                buf: Bytes::new(),
                start: StartLine::Request {
                    method,
                    uri: Text::Owned(0),
                },
                fields: Vec::with_capacity(12),
                // An in-dialog request holds about a dozen pieces (URI, its headers, the
                // branch the transaction layer adds): no regrowth on the way.
                owned: owned_with(uri.into(), 12),
                body: Bytes::new(),
                pristine: false,
                core: None,
            },
            error: None,
        }
    }

    /// Starts building a response with the given status and reason phrase.
    pub fn response(status: u16, reason: impl Into<Bytes>) -> MessageBuilder {
        let reason = reason.into();
        // The reason phrase ends the status line: no CR, LF or other control bytes.
        let error = if !(100..=699).contains(&status) {
            Some(ParseError::StatusCode)
        } else if reason.iter().any(|&c| c < 0x20 && c != b'\t' || c == 0x7f) {
            Some(ParseError::StartLine("control character in reason phrase"))
        } else {
            None
        };
        // The standard phrase is named, not stored: no piece to allocate for it.
        let (reason, owned) = if reason == crate::reason_phrase(status).as_bytes() {
            (None, Vec::new())
        } else {
            (Some(Text::Owned(0)), owned_with(reason, 6))
        };
        MessageBuilder {
            msg: SipMessage {
                buf: Bytes::new(),
                start: StartLine::Response { status, reason },
                fields: Vec::with_capacity(12),
                owned,
                body: Bytes::new(),
                pristine: false,
                core: None,
            },
            error,
        }
    }

    /// Builds a response to `request` copying Via (all, in order), From, To, Call-ID and
    /// CSeq, as RFC 3261 §8.2.6.2 requires. When `request` was validated (parsed, or built
    /// with [`MessageBuilder::build`]) the copies are not validated again. Add a To tag with
    /// [`set_to_tag`](Self::set_to_tag) when the response creates a dialog.
    pub fn response_to(
        request: &SipMessage,
        status: u16,
        reason: &str,
    ) -> Result<SipMessage, ParseError> {
        if !request.is_request() {
            return Err(ParseError::StartLine("response_to needs a request"));
        }
        // The standard phrase is not copied (nor stored: see `StartLine::Response`).
        let reason = match crate::reason_phrase(status) {
            standard if standard == reason => Bytes::from_static(standard.as_bytes()),
            _ => Bytes::copy_from_slice(reason.as_bytes()),
        };
        let b = SipMessage::response(status, reason);
        if let Some(e) = b.error {
            return Err(e);
        }
        let copied = |f: &Field| {
            matches!(
                f.name,
                HeaderName::Via
                    | HeaderName::From
                    | HeaderName::To
                    | HeaderName::CallId
                    | HeaderName::CSeq
            )
        };
        // The response shares the request's buffer and owned pieces: the copied fields
        // keep naming the same text, and only their small entries are copied.
        let mut msg = b.msg;
        msg.buf = request.buf.clone();
        if !request.owned.is_empty() {
            // The request's pieces first, so that its fields' indexes stay right; a reason
            // phrase of its own, the only piece the response holds yet, goes behind them.
            let own = std::mem::replace(&mut msg.owned, request.owned.clone());
            if let StartLine::Response {
                reason: Some(reason),
                ..
            } = &mut msg.start
            {
                *reason = Text::Owned(msg.owned.len() as u32);
            }
            msg.owned.extend(own);
        }
        msg.fields
            .extend(request.fields.iter().filter(|f| copied(f)).copied());
        msg.core = match &request.core {
            // Everything copied was checked with the request: move its index over.
            Some(core) => {
                let moved = |i: usize| request.fields[..i].iter().filter(|f| copied(f)).count();
                Some(Arc::new(Core {
                    top_via: core.top_via.map(|(i, idx)| (moved(i), idx)),
                    from: core.from.map(|(i, idx)| (moved(i), idx)),
                    to: core.to.map(|(i, idx)| (moved(i), idx)),
                    cseq: core.cseq.map(|(i, seq, m)| (moved(i), seq, m)),
                    call_id: core.call_id.map(moved),
                }))
            }
            None => Some(msg.validate_indexed(&Seen::of(&msg.fields))?),
        };
        Ok(msg)
    }

    // ----- start line -----

    /// Is this a request?
    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The request method (`None` for a response).
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI as written (`None` for a response).
    pub fn request_uri_bytes(&self) -> Option<&[u8]> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(self.text(*uri)),
            StartLine::Response { .. } => None,
        }
    }

    /// The parsed Request-URI (`None` for a response).
    pub fn request_uri(&self) -> Option<Result<Uri<'_>, ParseError>> {
        self.request_uri_bytes().map(Uri::parse)
    }

    /// The status code (`None` for a request).
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { status, .. } => Some(*status),
            StartLine::Request { .. } => None,
        }
    }

    /// The reason phrase byte for byte (may be empty or UTF-8; `None` for a request).
    pub fn reason(&self) -> Option<&[u8]> {
        match &self.start {
            StartLine::Response { status, reason } => Some(self.reason_text(*status, *reason)),
            StartLine::Request { .. } => None,
        }
    }

    fn start_line_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(64);
        self.start_line_pieces(&mut itoa::Buffer::new(), |p| v.extend_from_slice(p));
        v
    }

    /// Hands the start line (without its CR LF) to `put` piece by piece; `digits` holds a
    /// status code's text.
    #[inline]
    fn start_line_pieces<'a>(&'a self, digits: &'a mut itoa::Buffer, mut put: impl FnMut(&[u8])) {
        match &self.start {
            StartLine::Request { method, uri } => {
                put(method.as_str().as_bytes());
                put(b" ");
                put(self.text(*uri));
                put(b" SIP/2.0");
            }
            StartLine::Response { status, reason } => {
                put(b"SIP/2.0 ");
                put(digits.format(*status).as_bytes());
                put(b" ");
                put(self.reason_text(*status, *reason));
            }
        }
    }

    /// A response's reason phrase (see `StartLine::Response`).
    fn reason_text(&self, status: u16, reason: Option<Text>) -> &[u8] {
        match reason {
            Some(t) => self.text(t),
            None => crate::reason_phrase(status).as_bytes(),
        }
    }

    /// The bytes of `t`.
    #[inline]
    fn text(&self, t: Text) -> &[u8] {
        text_of(&self.buf, &self.owned, t)
    }

    /// The field's name as written (the canonical spelling for built known names).
    #[inline]
    fn raw_name_of(&self, f: &Field) -> &[u8] {
        match f.raw_name {
            Text::Canonical => f.name.as_str().as_bytes(),
            t => self.text(t),
        }
    }

    // ----- raw headers -----

    /// Every header field, in order.
    pub fn headers(&self) -> impl Iterator<Item = HeaderRef<'_>> + '_ {
        self.fields.iter().map(move |f| HeaderRef {
            name: f.name,
            raw_name: self.raw_name_of(f),
            value: self.text(f.value),
        })
    }

    /// The number of header fields (lines).
    pub fn header_count(&self) -> usize {
        self.fields.len()
    }

    /// The value of the first field with this name.
    pub fn header(&self, name: HeaderName) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| self.text(f.value))
    }

    /// The value of the first field with this name, for any name (case-insensitive; a
    /// compact form finds the long one).
    pub fn header_by_name(&self, name: &str) -> Option<&[u8]> {
        let known = HeaderName::from_bytes(name.as_bytes());
        self.headers()
            .find(|h| {
                if known == HeaderName::Other {
                    h.name == HeaderName::Other && h.raw_name.eq_ignore_ascii_case(name.as_bytes())
                } else {
                    h.name == known
                }
            })
            .map(|h| h.value)
    }

    /// Every value of a header: for list headers ([`HeaderName::is_list`]) each field is
    /// split at top-level commas, so `Via: a, b` and two `Via` lines give the same list.
    pub fn header_values(&self, name: HeaderName) -> impl Iterator<Item = &[u8]> + '_ {
        let list = name.is_list();
        self.fields
            .iter()
            .filter(move |f| f.name == name)
            .flat_map(move |f| {
                let v = self.text(f.value);
                let mut split = CommaSplit::new(v);
                let mut single = Some(v);
                std::iter::from_fn(move || if list { split.next() } else { single.take() })
            })
    }

    /// The value of the only field named `name` when it holds a single value (no
    /// top-level comma); `None` when there are several values or none. A value without any
    /// comma is taken at once, without splitting it.
    pub(crate) fn only_value(&self, name: HeaderName) -> Option<&[u8]> {
        let mut fields = self.fields.iter().filter(|f| f.name == name);
        let (Some(f), None) = (fields.next(), fields.next()) else {
            return None;
        };
        let v = self.text(f.value);
        if crate::scan::find(v, b',').is_none() {
            return Some(v);
        }
        let mut split = CommaSplit::new(v);
        match (split.next(), split.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
    }

    /// The body, as bytes (never text: binary bodies survive).
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    // ----- typed views -----

    fn single(&self, name: HeaderName) -> Result<&[u8], ParseError> {
        self.header(name).ok_or(ParseError::Missing(name.as_str()))
    }

    /// Every Via value, top first.
    pub fn vias(&self) -> impl Iterator<Item = Result<Via<'_>, ParseError>> + '_ {
        self.header_values(HeaderName::Via).map(Via::parse)
    }

    /// The value of field `i` (a cached index; always in range while the cache lives).
    #[inline]
    fn field_value(&self, i: usize) -> &[u8] {
        self.fields.get(i).map_or(&[][..], |f| self.text(f.value))
    }

    // The five accessors every transaction and dialog reads are inlined down to the
    // index lookup, so the view is built in the caller's registers: returned through
    // memory, it was stored in pieces and read back whole (a store-forwarding stall per
    // call). A message without an index (built, or changed) takes the cold path.

    /// The topmost Via.
    #[inline]
    pub fn top_via(&self) -> Result<Via<'_>, ParseError> {
        match self.core.as_ref().and_then(|c| c.top_via.as_ref()) {
            Some((i, idx)) => Ok(Via::from_index(self.field_value(*i), idx)),
            None => self.top_via_unindexed(),
        }
    }

    #[cold]
    fn top_via_unindexed(&self) -> Result<Via<'_>, ParseError> {
        self.vias()
            .next()
            .unwrap_or(Err(ParseError::Missing("Via")))
    }

    /// The From header.
    #[inline]
    pub fn from(&self) -> Result<NameAddr<'_>, ParseError> {
        match self.core.as_ref().and_then(|c| c.from.as_ref()) {
            Some((i, idx)) => Ok(NameAddr::from_index(self.field_value(*i), idx)),
            None => self.name_addr_unindexed(HeaderName::From),
        }
    }

    /// The To header.
    #[inline]
    pub fn to(&self) -> Result<NameAddr<'_>, ParseError> {
        match self.core.as_ref().and_then(|c| c.to.as_ref()) {
            Some((i, idx)) => Ok(NameAddr::from_index(self.field_value(*i), idx)),
            None => self.name_addr_unindexed(HeaderName::To),
        }
    }

    #[cold]
    fn name_addr_unindexed(&self, name: HeaderName) -> Result<NameAddr<'_>, ParseError> {
        NameAddr::parse(self.single(name)?, name.as_str())
    }

    /// The Call-ID.
    #[inline]
    pub fn call_id(&self) -> Result<&[u8], ParseError> {
        match self.core.as_ref().and_then(|c| c.call_id) {
            Some(i) => Ok(self.field_value(i)),
            None => self.call_id_unindexed(),
        }
    }

    #[cold]
    fn call_id_unindexed(&self) -> Result<&[u8], ParseError> {
        let v = self.single(HeaderName::CallId)?;
        is_call_id(v)
            .then_some(v)
            .ok_or(ParseError::header("Call-ID", "not word[@word]"))
    }

    /// The CSeq.
    #[inline]
    pub fn cseq(&self) -> Result<CSeq<'_>, ParseError> {
        match self.core.as_ref().and_then(|c| c.cseq) {
            Some((i, seq, method)) => Ok(CSeq::from_parts(seq, method.get(self.field_value(i)))),
            None => self.cseq_unindexed(),
        }
    }

    #[cold]
    fn cseq_unindexed(&self) -> Result<CSeq<'_>, ParseError> {
        CSeq::parse(self.single(HeaderName::CSeq)?)
    }

    /// Max-Forwards (0–255), `None` when absent.
    pub fn max_forwards(&self) -> Result<Option<u8>, ParseError> {
        self.header(HeaderName::MaxForwards)
            .map(|v| {
                parse_u64(trim(v))
                    .and_then(|n| u8::try_from(n).ok())
                    .ok_or(ParseError::header("Max-Forwards", "not 0-255"))
            })
            .transpose()
    }

    /// Every Contact value.
    pub fn contacts(&self) -> impl Iterator<Item = Result<Contact<'_>, ParseError>> + '_ {
        self.header_values(HeaderName::Contact).map(Contact::parse)
    }

    /// Every value of a header whose values are name-addrs (Route, Record-Route, Path,
    /// P-Asserted-Identity, Refer-To, Referred-By, Reply-To …).
    pub fn name_addrs(
        &self,
        name: HeaderName,
    ) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> + '_ {
        let label = name.as_str();
        self.header_values(name)
            .map(move |v| NameAddr::parse(v, label))
    }

    /// The Content-Length value, when present.
    pub fn content_length(&self) -> Result<Option<usize>, ParseError> {
        self.header(HeaderName::ContentLength)
            .map(|v| {
                parse_u64(trim(v))
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or(ParseError::ContentLength("not a number"))
            })
            .transpose()
    }

    /// The Content-Type, when present.
    pub fn content_type(&self) -> Option<Result<MediaType<'_>, ParseError>> {
        self.header(HeaderName::ContentType).map(MediaType::parse)
    }

    /// The Expires header in seconds (saturating), when present.
    pub fn expires(&self) -> Option<Result<u32, ParseError>> {
        self.header(HeaderName::Expires)
            .map(|v| parse_delta_seconds(v, "Expires"))
    }

    /// A header of the `token;params` shape: Event, Subscription-State, Content-Disposition,
    /// Reason …
    pub fn token_params(&self, name: HeaderName) -> Option<Result<TokenParams<'_>, ParseError>> {
        self.header(name)
            .map(|v| TokenParams::parse(v, name.as_str()))
    }

    /// The option tags or tokens of a token-list header (Supported, Require,
    /// Proxy-Require, Unsupported, Allow, Allow-Events).
    pub fn tokens(&self, name: HeaderName) -> impl Iterator<Item = Result<&str, ParseError>> + '_ {
        self.header_values(name)
            .filter(|v| !v.is_empty())
            .map(move |v| {
                if is_token(v) {
                    Ok(std::str::from_utf8(v).unwrap_or(""))
                } else {
                    Err(ParseError::header(name.as_str(), "not a token"))
                }
            })
    }

    /// The methods of the Allow header.
    pub fn allow(&self) -> impl Iterator<Item = Result<Method, ParseError>> + '_ {
        self.tokens(HeaderName::Allow)
            .map(|t| t.map(|t| Method::from_token(t.as_bytes())))
    }

    /// Challenges (WWW-/Proxy-Authenticate) or credentials (Authorization /
    /// Proxy-Authorization); one per field, as their values contain commas.
    pub fn auth(
        &self,
        name: HeaderName,
    ) -> impl Iterator<Item = Result<AuthValue<'_>, ParseError>> + '_ {
        self.fields
            .iter()
            .filter(move |f| f.name == name)
            .map(move |f| AuthValue::parse(self.text(f.value), name.as_str()))
    }

    /// Every Warning value.
    pub fn warnings(&self) -> impl Iterator<Item = Result<Warning<'_>, ParseError>> + '_ {
        self.header_values(HeaderName::Warning).map(Warning::parse)
    }

    // ----- validation -----

    /// Checks what RFC 3261 requires of every message above the grammar of each line, as
    /// the parsers do on every message: mandatory headers (§8.1.1: Via, From, To, Call-ID,
    /// CSeq) present, single-valued headers given once, CSeq method equal to the request
    /// method, and well-formed values for what a transaction layer reads (the top Via, From,
    /// To, Call-ID, CSeq, Max-Forwards) and the Request-URI (no escaped headers in it).
    ///
    /// Max-Forwards is not required: RFC 2543 peers omit it (RFC 4475 §3.4.1). Other
    /// headers are checked when first read through their typed view, or all at once by
    /// [`validate_all`](Self::validate_all).
    pub fn validate(&self) -> Result<(), ParseError> {
        self.validate_into(&Seen::of(&self.fields), &mut Core::default())
    }

    /// [`validate`](Self::validate), returning where the core views are. The index is
    /// written in place in its shared allocation: it is a few hundred bytes, and moving it
    /// through a `Result` and into an `Arc` cost two copies.
    fn validate_indexed(&self, seen: &Seen) -> Result<Arc<Core>, ParseError> {
        let mut core = Arc::new(Core::default());
        // The Arc is new, so this borrows it without cloning.
        self.validate_into(seen, Arc::make_mut(&mut core))?;
        Ok(core)
    }

    /// [`validate`](Self::validate), given where the headers it reads are; notes in `core`
    /// where the core views are.
    ///
    /// The recognisers it calls, and the `from_index` rebuilds of the views, are inlined:
    /// returned through memory, their packed offsets were stored in pieces and read back
    /// whole by the caller, and each such read waited for the stores (a failed store
    /// forward, about 10 % of a parse in all).
    fn validate_into(&self, seen: &Seen, core: &mut Core) -> Result<(), ParseError> {
        if let Some(name) = seen.repeated {
            return Err(ParseError::Repeated(name.as_str()));
        }
        if let Some(fi) = seen.via {
            // The top Via is what a transaction layer reads; the ones below it are only
            // copied into responses, and checked when read (`vias`) or by `validate_all`.
            let value = self.field_value(fi);
            core.top_via = Via::parse_first_index(value)?.map(|idx| (fi, idx));
        }
        let missing =
            |at: Option<usize>, name: HeaderName| at.ok_or(ParseError::Missing(name.as_str()));
        let from_i = missing(seen.from, HeaderName::From)?;
        let to_i = missing(seen.to, HeaderName::To)?;
        let call_id_i = missing(seen.call_id, HeaderName::CallId)?;
        let cseq_i = missing(seen.cseq, HeaderName::CSeq)?;
        missing(seen.via, HeaderName::Via)?;
        let mf_i = seen.max_forwards;
        let from_v = self.field_value(from_i);
        core.from = NameAddr::parse_index(from_v, "From")?.map(|idx| (from_i, idx));
        let to_v = self.field_value(to_i);
        core.to = NameAddr::parse_index(to_v, "To")?.map(|idx| (to_i, idx));
        let call_id = self.field_value(call_id_i);
        if !is_call_id(call_id) {
            return Err(ParseError::header("Call-ID", "not word[@word]"));
        }
        core.call_id = Some(call_id_i);
        let cseq_v = self.field_value(cseq_i);
        let cseq = CSeq::parse(cseq_v)?;
        core.cseq = Sp::of(cseq_v, cseq.method_bytes()).map(|m| (cseq_i, cseq.seq(), m));
        if let Some(m) = self.method() {
            if cseq.method_bytes() != m.as_str().as_bytes() {
                return Err(ParseError::CSeqMethod);
            }
            let uri = self.request_uri_bytes().unwrap_or_default();
            if let Uri::Sip(s) = Uri::parse(uri)? {
                if s.headers_raw().is_some() {
                    return Err(ParseError::Uri("headers are not allowed in a Request-URI"));
                }
            }
        }
        if let Some(i) = mf_i {
            parse_u64(trim(self.field_value(i)))
                .and_then(|n| u8::try_from(n).ok())
                .ok_or(ParseError::header("Max-Forwards", "not 0-255"))?;
        }
        Ok(())
    }

    /// [`validate`](Self::validate) plus the grammar of the other headers that have a typed
    /// view here: every Via, Contact, Route, Record-Route, Content-Type, Expires, Date. RFC 4475 lets a
    /// lenient element accept the messages this refuses beyond `validate` (e.g. §3.1.2.12
    /// `baddate`, §3.1.2.13 `regbadct`); a registrar or a UA that reads them calls this.
    pub fn validate_all(&self) -> Result<(), ParseError> {
        self.validate()?;
        for v in self.vias() {
            v?;
        }
        for c in self.contacts() {
            c?;
        }
        for name in [HeaderName::Route, HeaderName::RecordRoute] {
            for r in self.name_addrs(name) {
                r?;
            }
        }
        let mut single = [0u8; 2];
        for f in &self.fields {
            match f.name {
                HeaderName::ContentType => single[0] = single[0].saturating_add(1),
                HeaderName::Expires => single[1] = single[1].saturating_add(1),
                _ => {}
            }
        }
        if single[0] > 1 {
            return Err(ParseError::Repeated("Content-Type"));
        }
        if single[1] > 1 {
            return Err(ParseError::Repeated("Expires"));
        }
        if let Some(ct) = self.content_type() {
            ct?;
        }
        if let Some(e) = self.expires() {
            e?;
        }
        if let Some(d) = self.header(HeaderName::Date) {
            validate_date(d)?;
        }
        Ok(())
    }

    // ----- changing -----

    fn touch(&mut self) {
        self.pristine = false;
        self.core = None;
    }

    /// Appends a header field. Refuses names that are not tokens and values holding CR or
    /// LF (header injection).
    ///
    /// A field appended below the others moves none of them: unless it is one of the
    /// headers validation reads (which may now be repeated), the index of the core views
    /// stays, and a UAS adding Contact and Record-Route to its 2xx does not make every
    /// later read of Via, From, To, Call-ID and CSeq parse again.
    pub fn push_header(
        &mut self,
        name: impl IntoHeaderName,
        value: impl Into<Bytes>,
    ) -> Result<&mut Self, ParseError> {
        let field = self.make_field(name, value.into())?;
        if read_by_validation(field.name) {
            self.touch();
        } else {
            self.pristine = false;
        }
        self.fields.push(field);
        Ok(self)
    }

    /// Inserts a header field before all others of the same name (or at the end if there is
    /// none): how a proxy adds its Via or a Record-Route.
    pub fn prepend_header(
        &mut self,
        name: impl IntoHeaderName,
        value: impl Into<Bytes>,
    ) -> Result<&mut Self, ParseError> {
        let field = self.make_field(name, value.into())?;
        self.touch();
        let at = self
            .fields
            .iter()
            .position(|f| self.same_name(f, &field))
            .unwrap_or(self.fields.len());
        self.fields.insert(at, field);
        Ok(self)
    }

    /// Replaces every field of this name with one holding `value`, at the position of the
    /// first (or at the end).
    pub fn set_header(
        &mut self,
        name: impl IntoHeaderName,
        value: impl Into<Bytes>,
    ) -> Result<&mut Self, ParseError> {
        let field = self.make_field(name, value.into())?;
        self.touch();
        let first = self.fields.iter().position(|f| self.same_name(f, &field));
        match first {
            Some(i) => {
                let (buf, owned) = (&self.buf, &self.owned);
                let mut idx = 0;
                self.fields.retain(|f| {
                    let keep = idx <= i || !same_name_in(buf, owned, f, &field);
                    idx += 1;
                    keep
                });
                self.fields[i] = field;
            }
            None => self.fields.push(field),
        }
        Ok(self)
    }

    /// Gives the first field named `name` the value `value`, which the caller built from
    /// that field's own (checked) value and plain ASCII: no second check, no search for
    /// other fields of the name. For the transaction layer, which adds a branch to the only
    /// Via of a request. `false` if there is no such field.
    pub(crate) fn replace_first_value(&mut self, name: HeaderName, value: Bytes) -> bool {
        let Some(i) = self.fields.iter().position(|f| f.name == name) else {
            return false;
        };
        self.set_field_value(i, value);
        self.touch();
        true
    }

    /// Removes every field of this name; returns how many were removed.
    pub fn remove_header(&mut self, name: impl IntoHeaderName) -> usize {
        let Ok(probe) = self.make_field(name, Bytes::new()) else {
            return 0;
        };
        let before = self.fields.len();
        let (buf, owned) = (&self.buf, &self.owned);
        self.fields.retain(|f| !same_name_in(buf, owned, f, &probe));
        let removed = before - self.fields.len();
        if removed > 0 {
            self.touch();
        }
        removed
    }

    /// Replaces the body; Content-Length follows it when serialized.
    pub fn set_body(&mut self, body: impl Into<Bytes>) {
        self.touch();
        self.body = body.into();
    }

    /// Adds `;tag=` to the To header if it has none (a UAS tags responses that create a
    /// dialog, RFC 3261 §8.2.6.2); a To that has a tag is left as it is. The tag must be a
    /// token.
    pub fn set_to_tag(&mut self, tag: &str) -> Result<&mut Self, ParseError> {
        let to = self.to()?;
        if to.tag().is_some() {
            return Ok(self);
        }
        // `tag-param = "tag" EQUAL token` (§25): anything else would not parse back, or
        // would smuggle in another parameter.
        if !is_token(tag.as_bytes()) {
            return Err(ParseError::header("To", "tag is not a token"));
        }
        let Some(i) = self.fields.iter().position(|f| f.name == HeaderName::To) else {
            return Err(ParseError::Missing("To"));
        };
        let old = self.field_value(i);
        let mut v = Vec::with_capacity(old.len() + tag.len() + 5);
        v.extend_from_slice(old);
        v.extend_from_slice(b";tag=");
        v.extend_from_slice(tag.as_bytes());
        let v = Bytes::from(v);
        // The To read above is the only one (validation refuses a repeated To, and an
        // unvalidated message is indexed by nothing): its value changes in place, and
        // only its own view is indexed again.
        let to = match &self.core {
            Some(_) => NameAddr::parse_index(&v, "To")?,
            None => None,
        };
        self.set_field_value(i, v);
        self.pristine = false;
        if let Some(core) = self.core.as_mut() {
            Arc::make_mut(core).to = to.map(|idx| (i, idx));
        }
        Ok(self)
    }

    /// Sets parameter `name` of the top Via to `value` (`None` for a flag such as `;rport`):
    /// the first parameter of that name gets the new value, or one is appended. Only those
    /// bytes change; a received message keeps every other byte as it came (the transport
    /// stamps `received`/`rport` on what it received, and an observer should still see
    /// the peer's bytes). `value` must be a token, a host (IPv6 without brackets included)
    /// or a quoted string. Returns whether the message changed.
    pub fn set_top_via_param(
        &mut self,
        name: &str,
        value: Option<&str>,
    ) -> Result<bool, ParseError> {
        self.set_top_via_params(&[(name, value)])
    }

    /// [`set_top_via_param`](Self::set_top_via_param) for several parameters at once, in one
    /// edit of the message (one copy of its buffer).
    fn set_top_via_params(&mut self, edits: &[(&str, Option<&str>)]) -> Result<bool, ParseError> {
        let err = |why| ParseError::header("Via", why);
        for (name, value) in edits {
            if !is_token(name.as_bytes()) {
                return Err(err("parameter name is not a token"));
            }
            if value.is_some_and(|v| !is_param_value(v.as_bytes())) {
                return Err(err("parameter value is not a token, host or quoted string"));
            }
        }
        let (fi, base, via) = self.top_via_params()?;
        let params = via.params().raw();
        let mut planned: Vec<ViaEdit<'_>> = edits
            .iter()
            .map(|(name, value)| {
                let value = value.map(str::as_bytes);
                match crate::params::locate(params, name.as_bytes()) {
                    Some(l) => ViaEdit::set(base + l.name_end, base + l.end, value),
                    None => ViaEdit::append(base + params.len(), name.as_bytes(), value),
                }
            })
            .collect();
        self.edit_top_via(fi, &mut planned)
    }

    /// The first Via field, where the top Via's parameters start in its value, and the
    /// top Via (validated: parsed).
    fn top_via_params(&self) -> Result<(usize, usize, Via<'_>), ParseError> {
        let fi = self
            .fields
            .iter()
            .position(|f| f.name == HeaderName::Via)
            .ok_or(ParseError::Missing("Via"))?;
        let current = self.field_value(fi);
        let via = self.top_via()?;
        let params = via.params().raw();
        // The top Via is the start of the first Via field's value: its parameters lie
        // inside that value.
        let base = (params.as_ptr() as usize)
            .checked_sub(current.as_ptr() as usize)
            .filter(|b| b + params.len() <= current.len())
            .ok_or(ParseError::header("Via", "top Via outside its field"))?;
        Ok((fi, base, via))
    }

    /// Records in the top Via of a received request where it came from, as the server
    /// transport must (RFC 3261 §18.2.1, RFC 3581 §4): `received=<source IP>` when the
    /// sent-by host is a domain name or another address, and, when the Via asks with a
    /// valueless `rport`, `rport=<source port>` and `received` both. Responses copy the Via
    /// (§8.2.6.2), so the peer behind a NAT and the response routing (§18.2.2,
    /// [`Via::response_address`]) both see the address the request really came from.
    /// Returns whether the Via changed; a response is left as it is.
    ///
    /// Every request received is stamped (and every request this library sends asks for
    /// `rport`), so this costs about a fifth of a parse: one walk over the Via's
    /// parameters, one copy of the buffer with the new text written straight into it, and
    /// the Via's index moved rather than parsed again.
    pub fn record_source_in_via(&mut self, source: SocketAddr) -> Result<bool, ParseError> {
        if !self.is_request() {
            return Ok(false);
        }
        let ip = source.ip().to_canonical();
        let (fi, base, via) = self.top_via_params()?;
        let params = via.params().raw();
        let [rport, received] = crate::params::locate_each(params, [b"rport", b"received"]);
        let rport_asked = rport.is_some_and(|l| l.value.is_none());
        let sent_by_differs = via.host().ip().map(|h| h.to_canonical()) != Some(ip);
        let received_ip = received
            .and_then(|l| l.value)
            .and_then(crate::headers::ip_param)
            .map(|r| r.to_canonical());
        // A `received` the peer wrote itself is corrected too: responses are routed by it.
        let wants_received = sent_by_differs || rport_asked || received.is_some();
        let mut port = itoa::Buffer::new();
        let address = AddressText::new(ip);
        let mut edits = [ViaEdit::set(0, 0, None); 2];
        let mut n = 0;
        if let Some(l) = rport.filter(|_| rport_asked) {
            let port = port.format(source.port()).as_bytes();
            edits[n] = ViaEdit::set(base + l.name_end, base + l.end, Some(port));
            n += 1;
        }
        if wants_received && received_ip != Some(ip) {
            let address = Some(address.as_bytes());
            edits[n] = match received {
                Some(l) => ViaEdit::set(base + l.name_end, base + l.end, address),
                None => ViaEdit::append(base + params.len(), b"received", address),
            };
            n += 1;
        }
        self.edit_top_via(fi, &mut edits[..n])
    }

    /// Applies `edits` (offsets in the value of field `fi`, the first Via field) in one
    /// copy: a value in the received buffer is edited there, so the rest of the message
    /// keeps its bytes (and a pristine message stays pristine); any other is replaced
    /// whole. The names and values were checked, so the Via stays valid, and its index is
    /// moved instead of parsed again (debug builds check it against a parse).
    fn edit_top_via(&mut self, fi: usize, edits: &mut [ViaEdit<'_>]) -> Result<bool, ParseError> {
        let current = self.field_value(fi);
        let mut kept = 0;
        for i in 0..edits.len() {
            if !edits[i].is_noop(current) {
                edits[kept] = edits[i];
                kept += 1;
            }
        }
        let edits = &mut edits[..kept];
        // In value order; appended parameters keep the order they were given in.
        edits.sort_by_key(|e| e.at);
        let (Some(lo), Some(hi)) = (
            edits.first().map(|e| e.at),
            edits.iter().map(|e| e.end).max(),
        ) else {
            return Ok(false);
        };
        if edits.windows(2).any(|w| w[1].at < w[0].end) {
            return Err(ParseError::header("Via", "overlapping parameter edits"));
        }
        // The new text of `lo..hi`: each edit's text, and the bytes between edits.
        let middle_len = edits.iter().map(ViaEdit::len).sum::<usize>()
            + edits.windows(2).map(|w| w[1].at - w[0].end).sum::<usize>();
        let write_middle = |value: &[u8], out: &mut Vec<u8>| {
            for (i, e) in edits.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(&value[edits[i - 1].end..e.at]);
                }
                e.write(out);
            }
        };
        let deltas = edits
            .iter()
            .map(|e| (e.at, e.end, e.len() as isize - (e.end - e.at) as isize));
        let moved = match self.core.as_ref().map(|c| c.top_via) {
            Some(Some((_, idx))) => idx.with_params_edited(deltas),
            _ => None,
        };
        let span = match self.fields.get(fi).map(|f| f.value) {
            Some(Text::Span(vs, _)) => Some(vs as usize),
            _ => None,
        };
        let grown = self.buf.len() - (hi - lo) + middle_len;
        match span.filter(|_| u32::try_from(grown).is_ok()) {
            Some(vs) => {
                let (a, b) = (vs + lo, vs + hi);
                let mut buf = Vec::with_capacity(grown);
                buf.extend_from_slice(&self.buf[..a]);
                write_middle(&self.buf[vs..], &mut buf);
                buf.extend_from_slice(&self.buf[b..]);
                // Exactly sized: `Bytes` takes the vector over without another allocation.
                debug_assert_eq!(buf.len(), buf.capacity());
                self.rebase(fi, a, b, middle_len, Bytes::from(buf));
            }
            None => {
                let mut value = Vec::with_capacity(current.len() - (hi - lo) + middle_len);
                value.extend_from_slice(&current[..lo]);
                write_middle(current, &mut value);
                value.extend_from_slice(&current[hi..]);
                self.set_field_value(fi, Bytes::from(value));
                self.pristine = false;
            }
        }
        if self.core.is_some() {
            let value = self.field_value(fi);
            let idx = match moved {
                Some(idx) => {
                    debug_assert_eq!(Via::parse_first_index(value), Ok(Some(idx)));
                    Some(idx)
                }
                // The edit touched the branch, or the value outgrew an index.
                None => Via::parse_first_index(value).ok().flatten(),
            };
            if let Some(core) = self.core.as_mut() {
                // Only the top Via moved: the other views index their own fields' values.
                Arc::make_mut(core).top_via = idx.map(|i| (fi, i));
            }
        }
        Ok(true)
    }

    /// Makes `buf`, in which `a..b` of the current buffer became `len` new bytes (inside
    /// the value of field `fi`), the message's buffer, and moves every span past the edit.
    fn rebase(&mut self, fi: usize, a: usize, b: usize, len: usize, buf: Bytes) {
        let moved = |x: u32| (x as usize + a + len - b) as u32;
        // The edited value ends later or sooner; all text past it moves (text before `a`
        // stays, and no other text lies inside the edited value).
        let shift = |t: &mut Text| {
            if let Text::Span(s, e) = t {
                if *s as usize >= b {
                    (*s, *e) = (moved(*s), moved(*e));
                }
            }
        };
        for (i, f) in self.fields.iter_mut().enumerate() {
            shift(&mut f.raw_name);
            match &mut f.value {
                Text::Span(_, e) if i == fi => *e = moved(*e),
                value => shift(value),
            }
        }
        match &mut self.start {
            StartLine::Request { uri, .. } => shift(uri),
            StartLine::Response {
                reason: Some(reason),
                ..
            } => shift(reason),
            StartLine::Response { reason: None, .. } => {}
        }
        if let Some(off) = crate::index::shared_slice(&self.buf, &self.body)
            .filter(|body| !body.is_empty())
            .map(|body| body.as_ptr() as usize - self.buf.as_ptr() as usize)
            .filter(|off| *off >= b)
        {
            let from = off + a + len - b;
            self.body = buf.slice(from..from + self.body.len());
        }
        self.buf = buf;
    }

    // ----- serializing -----

    /// Serializes the message. An unchanged parsed message gives back exactly the bytes it
    /// was parsed from (no copy); anything else is written in canonical form: long header
    /// names, one field per line, and a Content-Length equal to the body length.
    pub fn to_bytes(&self) -> Bytes {
        if self.pristine {
            return self.buf.clone();
        }
        let mut out = Vec::with_capacity(self.encoded_len_hint());
        self.canonical_pieces(|p| out.extend_from_slice(p));
        Bytes::from(out)
    }

    /// Appends the serialized message to `out` (see [`to_bytes`](Self::to_bytes)).
    pub fn write_to(&self, out: &mut BytesMut) {
        if self.pristine {
            out.extend_from_slice(&self.buf);
        } else {
            self.canonical_pieces(|p| out.extend_from_slice(p));
        }
    }

    /// A little more than the canonical form's length: one walk writes it without growing
    /// the buffer. (Measuring it exactly took a second walk, which cost more than the
    /// spare bytes and the shared header `Bytes` then allocates for them.)
    fn encoded_len_hint(&self) -> usize {
        64 + self.body.len()
            + self
                .fields
                .iter()
                .map(|f| 24 + self.text(f.value).len())
                .sum::<usize>()
    }

    /// Hands the canonical form to `put` piece by piece, in order.
    #[inline]
    fn canonical_pieces(&self, mut put: impl FnMut(&[u8])) {
        self.start_line_pieces(&mut itoa::Buffer::new(), &mut put);
        put(b"\r\n");
        let mut digits = itoa::Buffer::new();
        let content_length = digits.format(self.body.len()).as_bytes();
        let mut wrote_cl = false;
        for f in &self.fields {
            if f.name == HeaderName::ContentLength {
                if !wrote_cl {
                    put_content_length(&mut put, content_length);
                    wrote_cl = true;
                }
                continue;
            }
            put(match f.name {
                HeaderName::Other => self.raw_name_of(f),
                n => n.as_str().as_bytes(),
            });
            put(b": ");
            put(self.text(f.value));
            put(b"\r\n");
        }
        if !wrote_cl {
            put_content_length(&mut put, content_length);
        }
        put(b"\r\n");
        put(&self.body);
    }
}

/// The Content-Length line of the canonical form, its value given as digits.
#[inline]
fn put_content_length(put: &mut impl FnMut(&[u8]), digits: &[u8]) {
    put(b"Content-Length: ");
    put(digits);
    put(b"\r\n");
}

impl fmt::Display for SipMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

/// Do `f` and `probe` have the same name (custom names compared case-insensitively)?
fn same_name_in(buf: &Bytes, owned: &[Bytes], f: &Field, probe: &Field) -> bool {
    f.name == probe.name
        && (f.name != HeaderName::Other
            || text_of(buf, owned, f.raw_name).eq_ignore_ascii_case(text_of(
                buf,
                owned,
                probe.raw_name,
            )))
}

/// Is `name` one of the headers `SipMessage::validate` reads (and the index covers)?
fn read_by_validation(name: HeaderName) -> bool {
    matches!(
        name,
        HeaderName::Via
            | HeaderName::From
            | HeaderName::To
            | HeaderName::CallId
            | HeaderName::CSeq
            | HeaderName::MaxForwards
            | HeaderName::ContentLength
    )
}

/// A vector of owned pieces holding `first` at index 0.
fn owned_with(first: Bytes, capacity: usize) -> Vec<Bytes> {
    let mut v = Vec::with_capacity(capacity);
    v.push(first);
    v
}

/// One change to the top Via's parameters: `at..end` of the field value becomes
/// `;name` (for a new parameter, `at == end`), then `=value` if there is one.
#[derive(Debug, Clone, Copy)]
struct ViaEdit<'e> {
    at: usize,
    end: usize,
    new_name: Option<&'e [u8]>,
    value: Option<&'e [u8]>,
}

impl<'e> ViaEdit<'e> {
    /// Sets the value of the parameter whose name ends at `at` and which ends at `end`.
    fn set(at: usize, end: usize, value: Option<&'e [u8]>) -> Self {
        ViaEdit {
            at,
            end,
            new_name: None,
            value,
        }
    }

    /// Adds the parameter `name` at `at` (the end of the parameters).
    fn append(at: usize, name: &'e [u8], value: Option<&'e [u8]>) -> Self {
        ViaEdit {
            at,
            end: at,
            new_name: Some(name),
            value,
        }
    }

    /// The length of the new text.
    fn len(&self) -> usize {
        self.new_name.map_or(0, |n| n.len() + 1) + self.value.map_or(0, |v| v.len() + 1)
    }

    fn write(&self, out: &mut Vec<u8>) {
        if let Some(n) = self.new_name {
            out.push(b';');
            out.extend_from_slice(n);
        }
        if let Some(v) = self.value {
            out.push(b'=');
            out.extend_from_slice(v);
        }
    }

    /// Would it leave `value` (the field value) as it is?
    fn is_noop(&self, value: &[u8]) -> bool {
        let old = value.get(self.at..self.end).unwrap_or_default();
        self.new_name.is_none()
            && match self.value {
                None => old.is_empty(),
                Some(v) => old.len() == v.len() + 1 && old[0] == b'=' && &old[1..] == v,
            }
    }
}

/// An IP address as written in a Via's `received` (RFC 3261 §25.1: no brackets around
/// IPv6), held on the stack: stamping writes one into every request received, and a
/// `String` for it was an allocation per request.
struct AddressText {
    buf: [u8; 45],
    len: usize,
}

impl AddressText {
    /// IPv4 digit by digit (through `Display` it cost a thousand instructions); IPv6
    /// (rare) through `Display`.
    fn new(ip: std::net::IpAddr) -> AddressText {
        let mut text = AddressText {
            buf: [0; 45],
            len: 0,
        };
        match ip {
            std::net::IpAddr::V4(v4) => {
                let mut digits = itoa::Buffer::new();
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b".");
                    }
                    text.push(digits.format(octet).as_bytes());
                }
            }
            std::net::IpAddr::V6(v6) => {
                use std::io::Write;
                let mut out = std::io::Cursor::new(&mut text.buf[..]);
                // 45 bytes hold the longest IPv6 text (IPv4-mapped, full form).
                if write!(out, "{v6}").is_ok() {
                    text.len = out.position() as usize;
                }
            }
        }
        text
    }

    fn push(&mut self, part: &[u8]) {
        self.buf[self.len..self.len + part.len()].copy_from_slice(part);
        self.len += part.len();
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// A parameter value [`SipMessage::set_top_via_param`] writes: a token, a host (IPv6
/// with or without brackets), or a quoted string; nothing that would end the parameter.
fn is_param_value(v: &[u8]) -> bool {
    let host_or_token = |c: u8| crate::scan::is_token_char(c) || matches!(c, b'[' | b']' | b':');
    match v.first() {
        None => false,
        Some(b'"') => quoted_end(v, 0) == Some(v.len()) && forbidden_in_value(v).is_none(),
        Some(_) => v.iter().all(|&c| host_or_token(c)),
    }
}

impl SipMessage {
    fn same_name(&self, f: &Field, probe: &Field) -> bool {
        same_name_in(&self.buf, &self.owned, f, probe)
    }

    /// Keeps `b` among the owned pieces.
    fn own(&mut self, b: Bytes) -> Text {
        self.owned.push(b);
        Text::Owned((self.owned.len() - 1) as u32)
    }

    /// Makes `value` the value of field `i`. A value already owned is replaced in its
    /// slot (each owned piece belongs to one field: `own` makes a new one every time), so
    /// that changing a value again and again, as a transaction layer stamps the Via of
    /// each request it sends, does not grow the owned pieces.
    fn set_field_value(&mut self, i: usize, value: Bytes) {
        let Some(current) = self.fields.get(i).map(|f| f.value) else {
            return;
        };
        match current {
            Text::Owned(k) if (k as usize) < self.owned.len() => self.owned[k as usize] = value,
            _ => {
                let text = self.own(value);
                if let Some(f) = self.fields.get_mut(i) {
                    f.value = text;
                }
            }
        }
    }

    /// A checked field for `name: value`, its text kept among the owned pieces.
    fn make_field(&mut self, name: impl IntoHeaderName, value: Bytes) -> Result<Field, ParseError> {
        let (name, raw_name) = name.into_header_name()?;
        match forbidden_in_value(&value) {
            None => {}
            Some(b'\r' | b'\n') => return Err(ParseError::HeaderLine("line break in a value")),
            Some(c) => return Err(ParseError::ControlCharacter(c)),
        }
        // Trim by slicing the caller's bytes: no copy.
        let value = match trim(&value) {
            t if t.len() == value.len() => value,
            t => value.slice_ref(t),
        };
        let raw_name = if name == HeaderName::Other {
            self.own(raw_name)
        } else {
            Text::Canonical
        };
        Ok(Field {
            name,
            raw_name,
            value: self.own(value),
        })
    }
}

/// Something that names a header: a [`HeaderName`] or a string (compact forms and any case
/// accepted; unknown names must be tokens).
pub trait IntoHeaderName {
    /// The known name (or `Other`) and the spelling to write.
    fn into_header_name(self) -> Result<(HeaderName, Bytes), ParseError>;
}

impl IntoHeaderName for HeaderName {
    fn into_header_name(self) -> Result<(HeaderName, Bytes), ParseError> {
        if self == HeaderName::Other {
            return Err(ParseError::HeaderLine("HeaderName::Other names no header"));
        }
        Ok((self, Bytes::from_static(self.as_str().as_bytes())))
    }
}

impl IntoHeaderName for &str {
    fn into_header_name(self) -> Result<(HeaderName, Bytes), ParseError> {
        if !is_token(self.as_bytes()) {
            return Err(ParseError::HeaderLine(NAME_NOT_A_TOKEN));
        }
        match HeaderName::from_bytes(self.as_bytes()) {
            HeaderName::Other => Ok((HeaderName::Other, Bytes::copy_from_slice(self.as_bytes()))),
            known => known.into_header_name(),
        }
    }
}

/// Builds a request or response; finish with [`build`](Self::build), which validates.
#[derive(Debug)]
#[must_use]
pub struct MessageBuilder {
    msg: SipMessage,
    error: Option<ParseError>,
}

impl MessageBuilder {
    /// Appends a header field.
    pub fn header(mut self, name: impl IntoHeaderName, value: impl Into<Bytes>) -> Self {
        if self.error.is_none() {
            if let Err(e) = self.msg.push_header(name, value) {
                self.error = Some(e);
            }
        }
        self
    }

    /// Sets the body and its Content-Type.
    pub fn body(self, content_type: &str, body: impl Into<Bytes>) -> Self {
        let mut b = self.header(
            HeaderName::ContentType,
            Bytes::copy_from_slice(content_type.as_bytes()),
        );
        b.msg.body = body.into();
        b
    }

    /// Sets the body alone; give its Content-Type with [`header`](Self::header) (which
    /// takes the value without copying it, unlike [`body`](Self::body)).
    pub fn raw_body(mut self, body: impl Into<Bytes>) -> Self {
        self.msg.body = body.into();
        self
    }

    /// Finishes the message and [validates](SipMessage::validate) it.
    pub fn build(self) -> Result<SipMessage, ParseError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut msg = self.msg;
        msg.core = Some(msg.validate_indexed(&Seen::of(&msg.fields))?);
        Ok(msg)
    }

    /// Finishes the message without validation (for tests that need a broken message, and
    /// for partial messages such as a stateless 400 to a request missing its Call-ID).
    pub fn build_unchecked(self) -> SipMessage {
        self.msg
    }
}

// ----- the parser -----

fn parse(buf: Bytes, limits: &Limits, framing: Framing) -> Result<SipMessage, ParseError> {
    if buf.len() > limits.max_message_size && framing != Framing::Head {
        return Err(ParseError::TooLarge {
            limit: limits.max_message_size,
        });
    }
    let Head {
        start,
        fields,
        owned,
        body_at: head_end,
        seen,
    } = parse_head(&buf, limits, framing != Framing::Head)?;
    let mut msg = SipMessage {
        buf: Bytes::new(),
        start,
        fields,
        owned,
        body: Bytes::new(),
        pristine: true,
        core: None,
    };
    let cl = match framing {
        Framing::Head => None,
        _ => content_length_of(&msg.fields, &buf, &msg.owned, &seen)?,
    };
    let end = match framing {
        Framing::Head => head_end,
        Framing::Framed => {
            let cl = cl.ok_or(ParseError::ContentLength("required on a stream"))?;
            if head_end.checked_add(cl) != Some(buf.len()) {
                return Err(ParseError::ContentLength("does not match the body"));
            }
            buf.len()
        }
        Framing::Datagram => match cl {
            Some(cl) => {
                if cl > limits.max_message_size {
                    return Err(ParseError::TooLarge {
                        limit: limits.max_message_size,
                    });
                }
                if head_end + cl > buf.len() {
                    return Err(ParseError::ContentLength("larger than the datagram"));
                }
                head_end + cl
            }
            None => buf.len(),
        },
    };
    msg.body = buf.slice(head_end..end);
    msg.buf = if end == buf.len() {
        buf
    } else {
        buf.slice(..end)
    };
    if framing == Framing::Head {
        // The body was not read: serializing must not claim to reproduce it.
        msg.pristine = false;
        return Ok(msg);
    }
    msg.core = Some(msg.validate_indexed(&seen)?);
    Ok(msg)
}

/// The single Content-Length of the header fields, refusing non-numbers and conflicts.
fn content_length_of(
    fields: &[Field],
    buf: &Bytes,
    owned: &[Bytes],
    seen: &Seen,
) -> Result<Option<usize>, ParseError> {
    let mut found: Option<usize> = None;
    let first = match seen.content_length {
        None => return Ok(None),
        Some(i) if !seen.several_lengths => fields.get(i..=i).unwrap_or_default(),
        Some(i) => fields.get(i..).unwrap_or_default(),
    };
    for f in first.iter().filter(|f| f.name == HeaderName::ContentLength) {
        let v = parse_u64(trim(text_of(buf, owned, f.value)))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or(ParseError::ContentLength("not a non-negative number"))?;
        if found.is_some_and(|x| x != v) {
            return Err(ParseError::ContentLength("several different values"));
        }
        found = Some(v);
    }
    Ok(found)
}

/// What the head parser hands back: the start line, the fields, their owned pieces (unfolded
/// values), where the body starts, and where the headers validation needs are.
struct Head {
    start: StartLine,
    fields: Vec<Field>,
    owned: Vec<Bytes>,
    body_at: usize,
    seen: Seen,
}

/// Parses the start line and header fields; returns them and the offset of the body.
///
/// Per line: one search for the colon and one for the line feed, sixteen bytes per step; the
/// name is looked up exactly (only an unknown name is then checked for being a token), and
/// the fields validation reads are noted on the way, so nothing walks the field table
/// again.
///
/// `strict`: apply the line length and header count limits (not for `SipMessage::parse_head`).
fn parse_head(buf: &Bytes, limits: &Limits, strict: bool) -> Result<Head, ParseError> {
    let lax;
    let limits = if strict {
        limits
    } else {
        lax = Limits {
            max_headers: usize::MAX,
            max_line_length: usize::MAX,
            ..*limits
        };
        &lax
    };
    let s: &[u8] = buf;
    let n = s.len();
    // The end of a line's content (before CR LF or a bare LF) given its line feed.
    let content_end = |from: usize, nl: usize| {
        if nl > from && s[nl - 1] == b'\r' {
            nl - 1
        } else {
            nl
        }
    };
    let first = find_lf(s, 0).ok_or(ParseError::Incomplete)?;
    let sl_end = content_end(0, first);
    if sl_end > limits.max_line_length {
        return Err(ParseError::LineTooLong {
            limit: limits.max_line_length,
        });
    }
    let start = parse_start_line(buf, sl_end)?;
    let mut fields = Vec::with_capacity(16);
    let mut owned = Vec::new();
    let mut seen = Seen::default();
    let mut pos = first + 1;
    loop {
        // A header line starts with its name; the empty line ends the head.
        if matches!(s.get(pos), Some(b'\r' | b'\n')) {
            let body_at = match s.get(pos..(pos + 2).min(n)) {
                Some(b"\r\n") => Some(pos + 2),
                Some([b'\n', ..]) => Some(pos + 1),
                _ => None,
            };
            if let Some(body_at) = body_at {
                return Ok(Head {
                    start,
                    fields,
                    owned,
                    body_at,
                    seen,
                });
            }
        }
        // The name is what precedes the colon, less trailing whitespace. A known name is
        // matched exactly (so it holds no line break, and the colon is on this line); any
        // other must be a token. Whatever else the line holds is refused in `bad_line`.
        let Some(colon) = find_byte::<b':'>(s, pos) else {
            return Err(bad_line(s, pos, limits, fields.len()));
        };
        let mut name_end = colon;
        while name_end > pos && is_ws(s[name_end - 1]) {
            name_end -= 1;
        }
        let name_bytes = &s[pos..name_end];
        let name = HeaderName::from_bytes(name_bytes);
        if name == HeaderName::Other && !is_token(name_bytes) {
            return Err(bad_line(s, pos, limits, fields.len()));
        }
        // The value: from the colon to the line feed, whitespace trimmed; a line that
        // continues on the next (folding, RFC 3261 §7.3.1) is unfolded into a new buffer.
        let nl = value_line_end(s, colon)?;
        let mut next = nl + 1;
        let continued = |next: usize| next < n && is_ws(s[next]);
        let (value, end) = if continued(next) {
            let mut end;
            loop {
                let nl = value_line_end(s, next)?;
                end = content_end(next, nl);
                next = nl + 1;
                if !continued(next) {
                    break;
                }
            }
            let (vs, ve) = trim_lws(s, colon + 1, end);
            owned.push(unfold(&s[vs..ve]));
            (Text::Owned((owned.len() - 1) as u32), end)
        } else {
            let end = content_end(pos, nl);
            let (vs, ve) = trim_lws(s, colon + 1, end);
            (Text::Span(vs as u32, ve as u32), end)
        };
        if end - pos > limits.max_line_length {
            return Err(ParseError::LineTooLong {
                limit: limits.max_line_length,
            });
        }
        if fields.len() >= limits.max_headers {
            return Err(ParseError::TooManyHeaders {
                limit: limits.max_headers,
            });
        }
        seen.note(name, fields.len());
        fields.push(Field {
            name,
            raw_name: Text::Span(pos as u32, name_end as u32),
            value,
        });
        pos = next;
    }
}

/// The line feed that ends the header line whose value starts at `from`. On the way,
/// refuses the control bytes no header value may hold (RFC 3261 §25): a bare CR (which some
/// peers take for a line end, so what they read would differ from what we read), NUL and
/// the other C0 bytes, unless escaped as a quoted-pair (`"\" %x00-09 / %x0B-0C / %x0E-7F`,
/// RFC 4475 `intmeth`); HTAB is whitespace. The usual line, ended by CR LF with no control
/// byte before, takes one scan and one compare.
#[inline(always)]
fn value_line_end(s: &[u8], from: usize) -> Result<usize, ParseError> {
    match find_control(s, from) {
        Some(i) if s.get(i..i + 2) == Some(b"\r\n") => Ok(i + 1),
        found => value_line_end_slow(s, found),
    }
}

/// [`value_line_end`] once the first control byte is not a CR LF.
#[cold]
fn value_line_end_slow(s: &[u8], mut found: Option<usize>) -> Result<usize, ParseError> {
    loop {
        let i = found.ok_or(ParseError::Incomplete)?;
        match (s[i], s.get(i + 1)) {
            (b'\n', _) => return Ok(i),
            (b'\r', Some(b'\n')) => return Ok(i + 1),
            (b'\r', None) => return Err(ParseError::Incomplete),
            (b'\r', _) => return Err(ParseError::ControlCharacter(b'\r')),
            (b'\t', _) => {}
            (c, _) if !quoted_pair_at(s, i) => return Err(ParseError::ControlCharacter(c)),
            _ => {}
        }
        found = find_control(s, i + 1);
    }
}

/// The error for a header line at `pos` that is not `token [ws] ":" ...`: incomplete if the
/// line has no end yet, else the limits first (as for any line), else a malformed line.
#[cold]
fn bad_line(s: &[u8], pos: usize, limits: &Limits, fields: usize) -> ParseError {
    let Some(mut nl) = find_lf(s, pos) else {
        return ParseError::Incomplete;
    };
    while s.get(nl + 1).is_some_and(|&c| is_ws(c)) {
        match find_lf(s, nl + 1) {
            Some(next) => nl = next,
            None => return ParseError::Incomplete,
        }
    }
    if nl - pos > limits.max_line_length {
        ParseError::LineTooLong {
            limit: limits.max_line_length,
        }
    } else if fields >= limits.max_headers {
        ParseError::TooManyHeaders {
            limit: limits.max_headers,
        }
    } else {
        ParseError::HeaderLine(bad_line_why(&s[pos..nl]))
    }
}

const NAME_NOT_A_TOKEN: &str = "header name is not a token";

/// What is wrong with a header line (`line`, folded continuations included) that has no
/// known name before a colon, said so that the peer can find it.
fn bad_line_why(line: &[u8]) -> &'static str {
    if line.first().is_some_and(|&c| is_ws(c)) {
        return "a continuation line with no header line before it";
    }
    let Some(colon) = find(line, b':') else {
        return "no colon";
    };
    let name = &line[..colon];
    if name.contains(&b'\n') {
        "no colon"
    } else if name.iter().all(|&c| is_ws(c)) {
        "empty header name"
    } else {
        NAME_NOT_A_TOKEN
    }
}

/// `start..end` of `s` less leading and trailing whitespace, line breaks included (a
/// folded value may start or end with one).
#[inline]
fn trim_lws(s: &[u8], mut start: usize, mut end: usize) -> (usize, usize) {
    while start < end && is_lws(s[start]) {
        start += 1;
    }
    while end > start && is_lws(s[end - 1]) {
        end -= 1;
    }
    (start, end)
}

/// Whitespace or a line-break byte: what is trimmed around a header value.
#[inline]
fn is_lws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n')
}

/// Replaces each line break and the whitespace around it with one space (RFC 3261 §7.3.1).
fn unfold(v: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'\r' || v[i] == b'\n' {
            while out.last().is_some_and(|c| *c == b' ' || *c == b'\t') {
                out.pop();
            }
            while i < v.len() && matches!(v[i], b'\r' | b'\n' | b' ' | b'\t') {
                i += 1;
            }
            out.push(b' ');
        } else {
            out.push(v[i]);
            i += 1;
        }
    }
    Bytes::from(out)
}

fn parse_start_line(buf: &Bytes, end: usize) -> Result<StartLine, ParseError> {
    let line = &buf[..end];
    // The SIP-Version is case-insensitive on receipt (RFC 3261 §7.1).
    let starts = |p: &[u8]| {
        line.get(..p.len())
            .is_some_and(|l| l.eq_ignore_ascii_case(p))
    };
    if starts(b"SIP/") {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        if !starts(b"SIP/2.0 ") {
            return Err(if line.contains(&b' ') {
                ParseError::Version
            } else {
                ParseError::StartLine("status line needs version, status code and reason")
            });
        }
        let rest = &line[8..];
        if rest.len() < 4 || rest[3] != b' ' {
            return Err(ParseError::StatusCode);
        }
        let code = parse_u64(&rest[..3]).ok_or(ParseError::StatusCode)?;
        if !(100..=699).contains(&code) {
            return Err(ParseError::StatusCode);
        }
        let reason = &rest[4..];
        if reason.iter().any(|&c| c < 0x20 && c != b'\t') {
            return Err(ParseError::StartLine("control character in reason phrase"));
        }
        return Ok(StartLine::Response {
            status: code as u16,
            reason: Some(Text::Span(12, end as u32)),
        });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version. Every refusal is worked out
    // again by `request_line_error`, out of line: the reasons' tests kept here cost a
    // well-formed line about 50 instructions.
    let (Some(sp1), Some(sp2)) = (find(line, b' '), rfind(line, b' ')) else {
        return Err(request_line_error(line));
    };
    if sp2 <= sp1 + 1 {
        return Err(request_line_error(line));
    }
    let method = &line[..sp1];
    let uri = &line[sp1 + 1..sp2];
    if !is_token(method)
        || uri.iter().any(|&c| is_ws(c))
        || !line[sp2 + 1..].eq_ignore_ascii_case(b"SIP/2.0")
    {
        return Err(request_line_error(line));
    }
    let method = Method::from_token(method);
    Ok(StartLine::Request {
        method,
        uri: Text::Span((sp1 + 1) as u32, sp2 as u32),
    })
}

/// Why `line` is not a Request-Line (RFC 3261 §25.1: `Method SP Request-URI SP
/// SIP-Version`), naming the usual mistakes (RFC 4475 §3.1.2.15 `lwsstart`, §3.1.2.16
/// `trws`, §3.1.2.9 `lwsruri`).
#[cold]
#[inline(never)]
fn request_line_error(line: &[u8]) -> ParseError {
    let why = ParseError::StartLine;
    if line.last().is_some_and(|&c| is_ws(c)) {
        return why("whitespace after the SIP-Version");
    }
    let parts = why("request line needs method, URI and version");
    let (Some(sp1), Some(sp2)) = (find(line, b' '), rfind(line, b' ')) else {
        return parts;
    };
    if sp2 <= sp1 + 1 {
        return parts;
    }
    if !is_token(&line[..sp1]) {
        return why("method is not a token");
    }
    let uri = &line[sp1 + 1..sp2];
    if uri.iter().any(|&c| is_ws(c)) {
        let at_an_end = |c: Option<&u8>| c.is_some_and(|&c| is_ws(c));
        return why(if at_an_end(uri.first()) || at_an_end(uri.last()) {
            "more than one space between the request line's parts"
        } else {
            "whitespace inside the Request-URI"
        });
    }
    let version = &line[sp2 + 1..];
    let looks_like_version = version.len() > 4
        && version[..4].eq_ignore_ascii_case(b"SIP/")
        && version[4..]
            .iter()
            .all(|c| c.is_ascii_digit() || *c == b'.');
    if looks_like_version {
        ParseError::Version
    } else {
        why("missing or malformed SIP-Version")
    }
}

#[cfg(test)]
mod via_source_tests {
    use super::*;

    fn parse(text: &str) -> SipMessage {
        SipMessage::parse_framed(Bytes::copy_from_slice(text.as_bytes()), &Limits::DEFAULT).unwrap()
    }

    /// A MESSAGE whose top Via is `via`, with compact names, odd spacing and a body, so
    /// that any byte rewritten besides the Via shows.
    fn request(via: &str) -> String {
        let body = "hello";
        format!(
            "MESSAGE sip:bot@contoso.test SIP/2.0\r\n\
             v:  {via}\r\n\
             Via: SIP/2.0/TCP 10.1.1.1:5070;branch=z9hG4bKproxy\r\n\
             f:<sip:alice@contoso.test>;tag=a1\r\n\
             t: <sip:bot@contoso.test>\r\n\
             i: stamp-1@test\r\n\
             CSeq:   7 MESSAGE\r\n\
             c: text/plain\r\n\
             l: {}\r\n\r\n{body}",
            body.len()
        )
    }

    fn src(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Stamps `via` as received from `source`; checks that only the Via changed, and
    /// returns the new top Via value.
    fn stamped(via: &str, source: &str) -> (bool, String) {
        let text = request(via);
        let mut m = parse(&text);
        let changed = m.record_source_in_via(src(source)).unwrap();
        let out = String::from_utf8(m.to_bytes().to_vec()).unwrap();
        let new_via = m.header(HeaderName::Via).unwrap();
        let new_via = String::from_utf8(new_via.to_vec()).unwrap();
        assert_eq!(out, text.replacen(via, &new_via, 1), "only the Via changes");
        assert_eq!(changed, new_via != via);
        // The index still matches the message: every view agrees with a fresh parse.
        let fresh = parse(&out);
        assert_eq!(m.top_via().unwrap(), fresh.top_via().unwrap());
        assert_eq!(m.from().unwrap(), fresh.from().unwrap());
        assert_eq!(m.to().unwrap(), fresh.to().unwrap());
        assert_eq!(m.call_id().unwrap(), fresh.call_id().unwrap());
        assert_eq!(m.cseq().unwrap(), fresh.cseq().unwrap());
        assert_eq!(m.body(), fresh.body());
        m.validate_all().unwrap();
        (changed, new_via)
    }

    #[test]
    fn another_ipv4_source_is_recorded_as_received() {
        let (changed, via) = stamped(
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1",
            "198.51.100.7:40000",
        );
        assert!(changed);
        assert_eq!(
            via,
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1;received=198.51.100.7"
        );
    }

    #[test]
    fn the_sent_by_address_itself_is_left_alone() {
        let via = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1";
        assert_eq!(stamped(via, "192.0.2.1:40000"), (false, via.to_string()));
        // An IPv4 peer seen by a dual-stack socket is the same address.
        assert_eq!(
            stamped(via, "[::ffff:192.0.2.1]:40000"),
            (false, via.to_string())
        );
    }

    #[test]
    fn a_domain_name_sent_by_gets_received() {
        let (_, via) = stamped(
            "SIP/2.0/TLS pc33.contoso.test;branch=z9hG4bK1",
            "127.0.0.1:5999",
        );
        assert_eq!(
            via,
            "SIP/2.0/TLS pc33.contoso.test;branch=z9hG4bK1;received=127.0.0.1"
        );
    }

    #[test]
    fn ipv6_sent_by_is_compared_as_an_address_and_received_is_written_bare() {
        let via = "SIP/2.0/UDP [::1]:5060;branch=z9hG4bK1";
        assert_eq!(stamped(via, "[::1]:6000"), (false, via.to_string()));
        let (_, via6) = stamped(
            "SIP/2.0/UDP [0::1];branch=z9hG4bK1",
            "[2001:db8::9:255]:6000",
        );
        // RFC 3261: via-received = "received" EQUAL (IPv4address / IPv6address).
        assert_eq!(
            via6,
            "SIP/2.0/UDP [0::1];branch=z9hG4bK1;received=2001:db8::9:255"
        );
        let (_, via4) = stamped(via, "192.0.2.9:6000");
        assert!(via4.ends_with(";received=192.0.2.9"), "{via4}");
    }

    #[test]
    fn an_existing_received_is_replaced_in_place() {
        let (_, via) = stamped(
            "SIP/2.0/UDP pc.contoso.test;received=10.0.0.1;branch=z9hG4bK1",
            "192.0.2.4:5060",
        );
        assert_eq!(
            via,
            "SIP/2.0/UDP pc.contoso.test;received=192.0.2.4;branch=z9hG4bK1"
        );
        // A received the sender wrote is corrected even when its sent-by is the source.
        let (_, via) = stamped(
            "SIP/2.0/UDP 192.0.2.4;received = 10.0.0.1 ;branch=z9hG4bK1",
            "192.0.2.4:5060",
        );
        assert_eq!(
            via,
            "SIP/2.0/UDP 192.0.2.4;received=192.0.2.4 ;branch=z9hG4bK1"
        );
    }

    #[test]
    fn rport_without_value_gets_the_source_port_and_received() {
        let (_, via) = stamped(
            "SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bK1",
            "192.0.2.1:40000",
        );
        // RFC 3581 §4: received even though it equals the sent-by address.
        assert_eq!(
            via,
            "SIP/2.0/UDP 192.0.2.1:5060;rport=40000;branch=z9hG4bK1;received=192.0.2.1"
        );
        let m = parse(&request(&via));
        assert_eq!(m.top_via().unwrap().rport(), Some(Some(40000)));
    }

    #[test]
    fn rport_with_a_value_is_kept() {
        let (_, via) = stamped(
            "SIP/2.0/UDP 192.0.2.1:5060;rport=5070;branch=z9hG4bK1",
            "198.51.100.7:40000",
        );
        assert_eq!(
            via,
            "SIP/2.0/UDP 192.0.2.1:5060;rport=5070;branch=z9hG4bK1;received=198.51.100.7"
        );
    }

    #[test]
    fn only_the_first_of_several_via_values_in_one_field_changes() {
        let (_, via) = stamped(
            "SIP/2.0/UDP a.example;rport;branch=z9hG4bK1 , SIP/2.0/UDP b.example;branch=z9hG4bK2",
            "192.0.2.1:1234",
        );
        assert_eq!(
            via,
            "SIP/2.0/UDP a.example;rport=1234;branch=z9hG4bK1;received=192.0.2.1 , \
             SIP/2.0/UDP b.example;branch=z9hG4bK2"
        );
    }

    #[test]
    fn responses_to_a_stamped_request_carry_its_via() {
        let mut m = parse(&request("SIP/2.0/UDP 192.0.2.1:5060;rport;branch=z9hG4bK1"));
        m.record_source_in_via(src("198.51.100.7:40000")).unwrap();
        let r = SipMessage::response_to(&m, 200, "OK").unwrap();
        let via = r.top_via().unwrap();
        assert_eq!(via.received(), Some("198.51.100.7".parse().unwrap()));
        assert_eq!(via.rport(), Some(Some(40000)));
        assert_eq!(via.response_address(), Some(src("198.51.100.7:40000")));
        // A response is not stamped.
        let mut r = r;
        assert_eq!(r.record_source_in_via(src("203.0.113.1:1")), Ok(false));
    }

    #[test]
    fn a_folded_or_built_via_is_stamped_too() {
        let text = request("SIP/2.0/UDP\r\n 192.0.2.1;branch=z9hG4bK1");
        let mut m = parse(&text);
        assert!(m.record_source_in_via(src("192.0.2.2:5060")).unwrap());
        assert_eq!(
            m.header(HeaderName::Via).unwrap(),
            b"SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;received=192.0.2.2"
        );
        let again = parse(std::str::from_utf8(&m.to_bytes()).unwrap());
        assert_eq!(
            again.top_via().unwrap().received(),
            m.top_via().unwrap().received()
        );

        let mut built = SipMessage::request(Method::Options, "sip:contoso.test")
            .header(
                HeaderName::Via,
                "SIP/2.0/TCP pc.contoso.test;branch=z9hG4bK9",
            )
            .header(HeaderName::From, "<sip:a@contoso.test>;tag=1")
            .header(HeaderName::To, "<sip:contoso.test>")
            .header(HeaderName::CallId, "c1")
            .header(HeaderName::CSeq, "1 OPTIONS")
            .build()
            .unwrap();
        assert!(built.record_source_in_via(src("192.0.2.3:1")).unwrap());
        assert_eq!(
            built.top_via().unwrap().received(),
            Some("192.0.2.3".parse().unwrap())
        );
    }

    #[test]
    fn a_via_without_parameters_gets_them_after_its_sent_by() {
        for via in [
            "SIP/2.0/UDP h.example",
            "SIP/2.0/UDP 192.0.2.1:5060 , SIP/2.0/UDP b",
        ] {
            let mut m = parse(&request(via));
            assert_eq!(m.record_source_in_via(src("10.0.0.1:7")), Ok(true), "{via}");
            let value = m.header(HeaderName::Via).unwrap().to_vec();
            let (sent_by, rest) = via.split_at(via.find(" ,").unwrap_or(via.len()));
            assert_eq!(
                value,
                format!("{sent_by};received=10.0.0.1{rest}").as_bytes()
            );
            let fresh = SipMessage::parse_datagram(m.to_bytes(), &Limits::DEFAULT).unwrap();
            assert_eq!(m.top_via().unwrap(), fresh.top_via().unwrap());
        }
    }

    #[test]
    fn edits_before_in_and_after_the_branch_keep_the_via_view_right() {
        let mut m = parse(&request(
            "SIP/2.0/UDP 192.0.2.1;received=203.0.113.200;branch=z9hG4bK1;rport",
        ));
        // An edit of the branch itself: the view is parsed again.
        assert_eq!(
            m.set_top_via_param("branch", Some("z9hG4bKlonger-branch")),
            Ok(true)
        );
        assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bKlonger-branch"));
        // A shorter `received` before the branch, `rport` after it: the view is moved.
        assert_eq!(m.record_source_in_via(src("10.0.0.1:7")), Ok(true));
        assert_eq!(
            m.header(HeaderName::Via).unwrap(),
            b"SIP/2.0/UDP 192.0.2.1;received=10.0.0.1;branch=z9hG4bKlonger-branch;rport=7"
        );
        let fresh = SipMessage::parse_datagram(m.to_bytes(), &Limits::DEFAULT).unwrap();
        let (via, again) = (m.top_via().unwrap(), fresh.top_via().unwrap());
        assert_eq!(via, again);
        assert_eq!(via.branch(), Some("z9hG4bKlonger-branch"));
        assert_eq!(via.params().raw(), again.params().raw());
        assert_eq!(m.call_id().unwrap(), fresh.call_id().unwrap());
    }

    #[test]
    fn set_top_via_param_sets_flags_and_refuses_what_would_break_the_header() {
        let text = request("SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;rport=9");
        let mut m = parse(&text);
        assert_eq!(m.set_top_via_param("rport", None), Ok(true));
        assert_eq!(m.set_top_via_param("RPORT", None), Ok(false));
        assert_eq!(m.set_top_via_param("alias", None), Ok(true));
        assert_eq!(m.set_top_via_param("x", Some("\"a;b\"")), Ok(true));
        assert_eq!(
            m.header(HeaderName::Via).unwrap(),
            b"SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1;rport;alias;x=\"a;b\""
        );
        let before = m.to_bytes();
        for (name, value) in [
            ("bad name", None),
            ("", None),
            ("x", Some("a;b")),
            ("x", Some("a b")),
            ("x", Some("")),
            ("x", Some("a,b")),
            ("x", Some("\"open")),
            ("x", Some("a\r\nInjected: 1")),
        ] {
            assert!(
                m.set_top_via_param(name, value).is_err(),
                "{name:?} {value:?}"
            );
        }
        assert_eq!(
            m.to_bytes(),
            before,
            "a refused change leaves the message as it was"
        );
        let mut no_via = parse(&text);
        no_via.remove_header(HeaderName::Via);
        assert_eq!(
            no_via.set_top_via_param("rport", None),
            Err(ParseError::Missing("Via"))
        );
    }

    #[test]
    fn response_address_follows_received_rport_and_sent_by() {
        let addr = |v: &str| Via::parse(v.as_bytes()).unwrap().response_address();
        assert_eq!(
            addr("SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1"),
            Some(src("192.0.2.1:5070"))
        );
        assert_eq!(
            addr("SIP/2.0/UDP h.example:5070;received=192.0.2.9;branch=z9hG4bK1"),
            Some(src("192.0.2.9:5070"))
        );
        assert_eq!(
            addr("SIP/2.0/UDP h.example;received=192.0.2.9;rport=4000"),
            Some(src("192.0.2.9:4000"))
        );
        assert_eq!(
            addr("SIP/2.0/UDP h.example;received=[2001:db8::1]"),
            Some(src("[2001:db8::1]:5060"))
        );
        assert_eq!(addr("SIP/2.0/TLS [::1]"), Some(src("[::1]:5061")));
        assert_eq!(addr("SIP/2.0/UDP h.example:5070;rport"), None);
    }
}

#[cfg(test)]
mod index_tests {
    use super::*;

    /// `read_by_validation` (which headers a push must drop the core index for) and
    /// `Seen::note` (which headers validation looks for) list the same names.
    #[test]
    fn the_headers_validation_reads_are_the_ones_a_push_re_indexes() {
        for name in crate::name::LONG_NAMES {
            let mut seen = Seen::default();
            seen.note(name, 0);
            let noted = seen != Seen::default();
            assert_eq!(noted, read_by_validation(name), "{name:?}");
        }
    }
}
