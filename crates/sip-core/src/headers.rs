//! Typed views of header values, decoded on demand from the raw bytes a message keeps.
//!
//! Each view borrows from the message and keeps whatever it does not interpret (unknown
//! parameters, unknown transports, unknown auth schemes) reachable through [`Params`] or a raw
//! slice, so nothing is lost by looking at a header through a view.

use crate::index::Sp;
use crate::method::Method;
use crate::name_addr::NameAddr;
use crate::params::Params;
use crate::scan::{
    is_token, is_token_char, is_ws, parse_u32_saturating, parse_u64, quoted_end, skip_ws, trim,
    unquote, CommaSplit,
};
use crate::uri::{hostport_prefix, parse_hostport, parse_port, Host, HostKind};
use crate::ParseError;
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

fn ascii(s: &[u8]) -> &str {
    // Callers pass only validated token bytes, which are ASCII.
    std::str::from_utf8(s).unwrap_or("")
}

/// Splits a leading token off `s` (after optional whitespace); returns it and the rest.
fn take_token(s: &[u8]) -> (&[u8], &[u8]) {
    let i = skip_ws(s, 0);
    let mut j = i;
    while j < s.len() && is_token_char(s[j]) {
        j += 1;
    }
    (&s[i..j], &s[j..])
}

/// The transport of a Via sent-protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport<'a> {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// SCTP.
    Sctp,
    /// TLS over SCTP.
    TlsSctp,
    /// WebSocket (RFC 7118).
    Ws,
    /// Secure WebSocket (RFC 7118).
    Wss,
    /// Any other transport token, as written (RFC 3261 `other-transport`).
    Other(&'a str),
}

impl<'a> Transport<'a> {
    /// Maps a transport token, case-insensitively.
    pub fn from_token(t: &'a str) -> Transport<'a> {
        known_transport_of(t.as_bytes()).unwrap_or(Transport::Other(t))
    }

    /// Maps a transport token given as bytes (validated token characters), without
    /// converting the known ones to text first.
    pub(crate) fn from_bytes(t: &'a [u8]) -> Transport<'a> {
        known_transport_of(t).unwrap_or_else(|| Transport::Other(ascii(t)))
    }

    /// The canonical token.
    pub fn as_str(&self) -> &'a str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Sctp => "SCTP",
            Transport::TlsSctp => "TLS-SCTP",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
            Transport::Other(t) => t,
        }
    }

    /// Does the transport deliver reliably (no retransmission timers, RFC 3261 §17)?
    pub fn is_reliable(&self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// One Via value (RFC 3261 §20.42).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Via<'a> {
    protocol: &'a [u8],
    version: &'a [u8],
    transport: Transport<'a>,
    host_kind: HostKind,
    host_raw: &'a [u8],
    port: Option<u16>,
    params: Params<'a>,
    /// The `branch` value, found while the parameters were validated.
    branch: Option<&'a [u8]>,
}

impl<'a> Via<'a> {
    /// Parses one Via value, with the whitespace RFC 3261 allows around `/`, `;` and `=`.
    pub fn parse(value: &'a [u8]) -> Result<Via<'a>, ParseError> {
        match ViaIdx::parse_common(value) {
            Some((idx, end)) if end == value.len() => {
                let via = Via::from_index(value, &idx);
                debug_assert_eq!(Ok(via), Via::parse_general(value));
                Ok(via)
            }
            _ => Via::parse_general(value),
        }
    }

    /// Where the parts of the first value of a Via header field are (`value` may hold
    /// several, comma-separated); `None` when they cannot be kept (longer than 64 KiB).
    // Inlined for store forwarding (see `SipMessage::validate_into`).
    #[inline(always)]
    pub(crate) fn parse_first_index(value: &'a [u8]) -> Result<Option<ViaIdx>, ParseError> {
        if let Some((idx, end)) = ViaIdx::parse_common(value) {
            if end == value.len() || value[end] == b',' {
                debug_assert_eq!(
                    Ok(Via::from_index(value, &idx)),
                    Via::parse_general(&value[..end])
                );
                return Ok(Some(idx));
            }
        }
        let first = CommaSplit::new(value).next().unwrap_or_default();
        Via::parse_general(first).map(|via| via.index(value))
    }

    /// [`parse`](Self::parse) for any input.
    fn parse_general(value: &'a [u8]) -> Result<Via<'a>, ParseError> {
        let err = |why| ParseError::header("Via", why);
        let (protocol, rest) = take_token(value);
        let slash = |r: &'a [u8]| -> Result<&'a [u8], ParseError> {
            let i = skip_ws(r, 0);
            if r.get(i) != Some(&b'/') {
                return Err(err("sent-protocol needs name/version/transport"));
            }
            Ok(&r[i + 1..])
        };
        let rest = slash(rest)?;
        let (version, rest) = take_token(rest);
        let rest = slash(rest)?;
        let (transport, rest) = take_token(rest);
        if protocol.is_empty() || version.is_empty() || transport.is_empty() {
            return Err(err("empty sent-protocol part"));
        }
        if rest.first().is_none_or(|c| !is_ws(*c)) {
            return Err(err("missing sent-by"));
        }
        let rest = &rest[skip_ws(rest, 0)..];
        let sent_by_end = |from: usize| {
            rest[from..]
                .iter()
                .position(|&c| c == b';' || is_ws(c))
                .map_or(rest.len(), |i| from + i)
        };
        let mut end = sent_by_end(0);
        // What is wrong with the sent-by (`bad port`, `bad IPv4 address`, …), not only
        // that it is.
        let (host_kind, host_len, port) = match sws_colon(rest, end) {
            None => parse_hostport(&rest[..end]).map_err(|e| e.in_header("Via"))?,
            Some((host_end, port_start)) => {
                let (kind, len, written) =
                    parse_hostport(&rest[..host_end]).map_err(|e| e.in_header("Via"))?;
                end = sent_by_end(port_start);
                let port = parse_port(&rest[port_start..end])
                    .filter(|_| written.is_none())
                    .ok_or_else(|| ParseError::Uri("bad port").in_header("Via"))?;
                (kind, len, Some(port))
            }
        };
        let (params, branch) = Params::parse_all_finding(&rest[end..], b"branch").map_err(err)?;
        Ok(Via {
            protocol,
            version,
            transport: Transport::from_bytes(transport),
            host_kind,
            host_raw: &rest[..host_len],
            port,
            params,
            branch: branch.flatten(),
        })
    }

    /// Protocol name (`SIP`).
    pub fn protocol(&self) -> &'a str {
        ascii(self.protocol)
    }
    /// Protocol version (`2.0`).
    pub fn version(&self) -> &'a str {
        ascii(self.version)
    }
    /// The transport.
    pub fn transport(&self) -> Transport<'a> {
        self.transport
    }
    /// The sent-by host.
    pub fn host(&self) -> Host<'a> {
        self.host_kind.host(self.host_raw)
    }
    /// The sent-by host as written (an IPv6 reference with its brackets).
    pub fn host_raw(&self) -> &'a [u8] {
        self.host_raw
    }
    /// The sent-by port, if written.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
    /// All parameters, known and unknown.
    pub fn params(&self) -> Params<'a> {
        self.params
    }
    /// The `branch` (transaction id; RFC 3261 branches start with `z9hG4bK`).
    pub fn branch(&self) -> Option<&'a str> {
        self.branch.map(ascii_lossy)
    }
    /// The `branch` as bytes: what transaction keys are made of, without the UTF-8 check.
    pub(crate) fn branch_bytes(&self) -> Option<&'a [u8]> {
        self.branch
    }
    /// The `received` address; accepts the bracketed IPv6 form robust parsers must take
    /// (RFC 5118 §4.5).
    pub fn received(&self) -> Option<IpAddr> {
        ip_param(self.params.get("received").flatten()?)
    }
    /// `rport`: `None` if absent, `Some(None)` if present without a value (RFC 3581).
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params
            .get("rport")
            .map(|v| v.and_then(|p| parse_u64(p).and_then(|n| u16::try_from(n).ok())))
    }
    /// Where a response to the request this top Via came with goes over an unreliable
    /// transport (RFC 3261 §18.2.2, RFC 3581 §4): the `received` address, else the sent-by
    /// address; the `rport` port, else the sent-by port, else the transport's default.
    /// Once [`SipMessage::record_source_in_via`](crate::SipMessage::record_source_in_via)
    /// stamped the Via, that is the source address, with the source port when asked for.
    /// `None` for a sent-by domain name without `received` (resolving it is RFC 3263 §5);
    /// `maddr` (multicast) is not followed.
    pub fn response_address(&self) -> Option<SocketAddr> {
        let ip = self.received().or_else(|| self.host().ip())?;
        let default = match self.transport {
            Transport::Tls | Transport::TlsSctp | Transport::Wss => 5061,
            _ => 5060,
        };
        let port = self.rport().flatten().or(self.port).unwrap_or(default);
        Some(SocketAddr::new(ip, port))
    }
    /// The `maddr` parameter.
    pub fn maddr(&self) -> Option<&'a [u8]> {
        self.params.get("maddr").flatten()
    }
    /// The `ttl` parameter (0–255).
    pub fn ttl(&self) -> Option<u8> {
        self.params
            .get("ttl")
            .flatten()
            .and_then(|v| parse_u64(v).and_then(|n| u8::try_from(n).ok()))
    }
}

/// Where the host ends and the port starts when the sent-by `rest[..end]` (cut at the
/// first whitespace) has whitespace around its port colon: `sent-by = host [ COLON port ]`
/// with `COLON = SWS ":" SWS` (RFC 3261 §25.1), so `host : 5060`, `host :5060` and
/// `host: 5060` are all `host:5060`. `None` when there is no such colon.
fn sws_colon(rest: &[u8], end: usize) -> Option<(usize, usize)> {
    if !rest.get(end).is_some_and(|&c| is_ws(c)) {
        return None;
    }
    if end > 0 && rest[end - 1] == b':' {
        return Some((end - 1, skip_ws(rest, end)));
    }
    let colon = skip_ws(rest, end);
    (rest.get(colon) == Some(&b':')).then(|| (end, skip_ws(rest, colon + 1)))
}

fn ascii_lossy(s: &[u8]) -> &str {
    std::str::from_utf8(s).unwrap_or("")
}

/// The CSeq header: sequence number and method (RFC 3261 §20.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    seq: u32,
    method: &'a [u8],
}

impl<'a> CSeq<'a> {
    /// Parses `number LWS method`; the number must fit 32 bits.
    pub fn parse(value: &'a [u8]) -> Result<CSeq<'a>, ParseError> {
        let err = |why| ParseError::header("CSeq", why);
        let v = trim(value);
        let mut seq: u64 = 0;
        let mut digits = 0;
        while let Some(d) = v
            .get(digits)
            .map(|c| c.wrapping_sub(b'0'))
            .filter(|d| *d <= 9)
        {
            seq = seq * 10 + u64::from(d);
            if seq > u64::from(u32::MAX) {
                return Err(err("sequence number exceeds 2^32-1"));
            }
            digits += 1;
        }
        if digits == 0 {
            return Err(err("missing sequence number"));
        }
        let seq = seq as u32;
        let rest = &v[digits..];
        if rest.first().is_none_or(|c| !is_ws(*c)) {
            return Err(err("missing method"));
        }
        let method = trim(rest);
        if !is_token(method) {
            return Err(err("method is not a token"));
        }
        Ok(CSeq { seq, method })
    }
    pub(crate) fn from_parts(seq: u32, method: &'a [u8]) -> CSeq<'a> {
        CSeq { seq, method }
    }

    /// The sequence number.
    pub fn seq(&self) -> u32 {
        self.seq
    }
    /// The method token as written.
    pub fn method_bytes(&self) -> &'a [u8] {
        self.method
    }
    /// The method.
    pub fn method(&self) -> Method {
        Method::from_token(self.method)
    }
}

/// One Contact value: `*` (remove all bindings) or an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contact<'a> {
    /// `Contact: *` (REGISTER only).
    Star,
    /// A contact address with its parameters.
    Addr(NameAddr<'a>),
}

impl<'a> Contact<'a> {
    /// Parses one Contact value.
    pub fn parse(value: &'a [u8]) -> Result<Contact<'a>, ParseError> {
        if trim(value) == b"*" {
            return Ok(Contact::Star);
        }
        let na = NameAddr::parse(value, "Contact")?;
        if let Some(e) = na.params().get("expires") {
            if e.is_none_or(|e| parse_u32_saturating(e).is_none()) {
                return Err(ParseError::header(
                    "Contact",
                    "expires is not delta-seconds",
                ));
            }
        }
        Ok(Contact::Addr(na))
    }
    /// The address, unless this is `*`.
    pub fn addr(&self) -> Option<&NameAddr<'a>> {
        match self {
            Contact::Star => None,
            Contact::Addr(a) => Some(a),
        }
    }
    /// The `expires` parameter in seconds (values past 2^32-1 saturate).
    pub fn expires(&self) -> Option<u32> {
        self.addr()?
            .params()
            .get("expires")
            .flatten()
            .and_then(parse_u32_saturating)
    }
    /// The `q` preference in thousandths (`q=0.33` is 330), 0–1000.
    pub fn q_millis(&self) -> Option<u16> {
        let v = self.addr()?.params().get("q").flatten()?;
        let s = std::str::from_utf8(v).ok()?;
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        if frac.len() > 3 || !frac.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let int: u16 = int.parse().ok()?;
        let frac_v: u16 = format!("{frac:0<3}").parse().ok()?;
        let q = int.checked_mul(1000)?.checked_add(frac_v)?;
        (q <= 1000).then_some(q)
    }
    /// The `+sip.instance` value without quotes (RFC 5626), e.g. `<urn:uuid:…>`.
    pub fn instance(&self) -> Option<Cow<'a, [u8]>> {
        self.addr()?.params().get_unquoted("+sip.instance")
    }
    /// The `pub-gruu` a registrar granted (RFC 5627).
    pub fn pub_gruu(&self) -> Option<Cow<'a, [u8]>> {
        self.addr()?.params().get_unquoted("pub-gruu")
    }
    /// Is the contact URI a GRUU (its URI has the `gr` parameter, RFC 5627)?
    pub fn is_gruu(&self) -> bool {
        self.addr()
            .and_then(|a| a.uri().as_sip().map(|u| u.param("gr").is_some()))
            .unwrap_or(false)
    }
}

/// A media type (`Content-Type`, `Accept` items): type, subtype and parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaType<'a> {
    kind: &'a str,
    subtype: &'a str,
    params: Params<'a>,
}

impl<'a> MediaType<'a> {
    /// Parses `type/subtype *(;param)`.
    pub fn parse(value: &'a [u8]) -> Result<MediaType<'a>, ParseError> {
        let err = |why| ParseError::header("Content-Type", why);
        let (kind, rest) = take_token(value);
        let i = skip_ws(rest, 0);
        if rest.get(i) != Some(&b'/') {
            return Err(err("missing /"));
        }
        let (subtype, rest) = take_token(&rest[i + 1..]);
        if kind.is_empty() || subtype.is_empty() {
            return Err(err("empty type or subtype"));
        }
        let params = Params::parse_all(rest).map_err(err)?;
        Ok(MediaType {
            kind: ascii(kind),
            subtype: ascii(subtype),
            params,
        })
    }
    /// The top-level type (`application`).
    pub fn kind(&self) -> &'a str {
        self.kind
    }
    /// The subtype (`sdp`).
    pub fn subtype(&self) -> &'a str {
        self.subtype
    }
    /// Parameters (`charset`, `boundary` …).
    pub fn params(&self) -> Params<'a> {
        self.params
    }
    /// Case-insensitive comparison with `type/subtype`.
    pub fn is(&self, kind: &str, subtype: &str) -> bool {
        self.kind.eq_ignore_ascii_case(kind) && self.subtype.eq_ignore_ascii_case(subtype)
    }
}

/// A token with parameters: Event (RFC 6665 §8.2.1), Subscription-State (§8.2.3), Reason,
/// Content-Disposition, option tags with parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenParams<'a> {
    token: &'a str,
    params: Params<'a>,
}

impl<'a> TokenParams<'a> {
    /// Parses `token *(;param)` for the header named `header`.
    pub fn parse(value: &'a [u8], header: &'static str) -> Result<TokenParams<'a>, ParseError> {
        let (token, rest) = take_token(value);
        if token.is_empty() {
            return Err(ParseError::header(header, "missing token"));
        }
        let params = Params::parse_all(rest).map_err(|w| ParseError::header(header, w))?;
        Ok(TokenParams {
            token: ascii(token),
            params,
        })
    }
    /// The token (`presence`, `active`, `terminated`, `session` …).
    pub fn token(&self) -> &'a str {
        self.token
    }
    /// Its parameters (`id`, `expires`, `reason`, `retry-after` …).
    pub fn params(&self) -> Params<'a> {
        self.params
    }
    /// A parameter parsed as delta-seconds (e.g. Subscription-State `expires`).
    pub fn seconds(&self, name: &str) -> Option<u32> {
        self.params
            .get(name)
            .flatten()
            .and_then(parse_u32_saturating)
    }
}

/// A WWW-Authenticate / Proxy-Authenticate challenge or an Authorization /
/// Proxy-Authorization credential, of any scheme (Digest, NTLM, Kerberos, TLS-DSK, or one
/// nobody knows: RFC 3261 `other-challenge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthValue<'a> {
    scheme: &'a str,
    rest: &'a [u8],
}

impl<'a> AuthValue<'a> {
    /// Parses `scheme LWS auth-params` (comma-separated `name=value`, or an opaque token68).
    pub fn parse(value: &'a [u8], header: &'static str) -> Result<AuthValue<'a>, ParseError> {
        let (scheme, rest) = take_token(value);
        if scheme.is_empty() {
            return Err(ParseError::header(header, "missing auth scheme"));
        }
        let rest = trim(rest);
        for item in CommaSplit::new(rest) {
            if rest.is_empty() {
                break;
            }
            let eq = item.iter().position(|&c| c == b'=');
            let quoted_ok = match eq {
                Some(e) => {
                    let v = trim(&item[e + 1..]);
                    v.first() != Some(&b'"') || quoted_end(v, 0) == Some(v.len())
                }
                None => true,
            };
            if item.is_empty() || !quoted_ok {
                return Err(ParseError::header(header, "malformed auth-param"));
            }
        }
        Ok(AuthValue {
            scheme: ascii(scheme),
            rest,
        })
    }
    /// The scheme as written (`Digest`, `NTLM`, `Kerberos`, `TLS-DSK` …).
    pub fn scheme(&self) -> &'a str {
        self.scheme
    }
    /// Everything after the scheme, as written.
    pub fn raw_params(&self) -> &'a [u8] {
        self.rest
    }
    /// The `name=value` auth-params, values as written (quoted ones keep their quotes).
    pub fn params(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        CommaSplit::new(self.rest).filter_map(|item| {
            let e = item.iter().position(|&c| c == b'=')?;
            Some((ascii_lossy(trim(&item[..e])), trim(&item[e + 1..])))
        })
    }
    /// The value of auth-param `name` (case-insensitive), unquoted.
    pub fn param(&self, name: &str) -> Option<Cow<'a, [u8]>> {
        self.params()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| {
                if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
                    unquote(&v[1..v.len() - 1])
                } else {
                    Cow::Borrowed(v)
                }
            })
    }
}

/// One Warning value (RFC 3261 §20.43): code, agent, text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Warning<'a> {
    code: u16,
    agent: &'a [u8],
    text: &'a [u8],
}

impl<'a> Warning<'a> {
    /// A Warning value: `code`, `agent` (this side's `host[:port]`, or a pseudonym token) and
    /// `text` as a quoted string, with `"` and `\` escaped and any control character
    /// (which a quoted string cannot hold) written as a space. Code 399 ("miscellaneous
    /// warning") carries text meant for a person or a log, such as why a request was
    /// refused.
    pub fn format(code: u16, agent: &str, text: &str) -> String {
        let mut v = format!("{code} {agent} \"");
        for c in text.chars() {
            match c {
                '"' | '\\' => {
                    v.push('\\');
                    v.push(c);
                }
                c if c.is_control() => v.push(' '),
                c => v.push(c),
            }
        }
        v.push('"');
        v
    }

    /// Parses `3DIGIT SP warn-agent SP quoted-string`.
    pub fn parse(value: &'a [u8]) -> Result<Warning<'a>, ParseError> {
        let err = |why| ParseError::header("Warning", why);
        let v = trim(value);
        let sp = v
            .iter()
            .position(|&c| c == b' ')
            .ok_or_else(|| err("missing agent"))?;
        let code = &v[..sp];
        if code.len() != 3 {
            return Err(err("warn-code is not three digits"));
        }
        let code = parse_u64(code).ok_or_else(|| err("warn-code is not three digits"))? as u16;
        let rest = trim(&v[sp..]);
        let sp = rest
            .iter()
            .position(|&c| c == b' ')
            .ok_or_else(|| err("missing text"))?;
        let agent = &rest[..sp];
        let text = trim(&rest[sp..]);
        if quoted_end(text, 0) != Some(text.len()) || text.first() != Some(&b'"') {
            return Err(err("warn-text must be a quoted string"));
        }
        Ok(Warning {
            code,
            agent,
            text: &text[1..text.len() - 1],
        })
    }
    /// The warn-code (300–399).
    pub fn code(&self) -> u16 {
        self.code
    }
    /// The warn-agent (`host[:port]` or a pseudonym).
    pub fn agent(&self) -> &'a [u8] {
        self.agent
    }
    /// The text, unquoted.
    pub fn text(&self) -> Cow<'a, [u8]> {
        unquote(self.text)
    }
}

/// Checks a Date value is an RFC 1123 date in GMT (RFC 3261 §20.17), e.g.
/// `Sat, 13 Nov 2010 23:29:00 GMT`.
pub fn validate_date(value: &[u8]) -> Result<(), ParseError> {
    let err = ParseError::header("Date", "not an RFC 1123 date in GMT");
    let v = trim(value);
    let parts: Vec<&[u8]> = v.split(|&c| c == b' ').collect();
    let [wkday, day, month, year, time, zone] = parts.as_slice() else {
        return Err(err);
    };
    const DAYS: [&[u8]; 7] = [
        b"Mon,", b"Tue,", b"Wed,", b"Thu,", b"Fri,", b"Sat,", b"Sun,",
    ];
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let digits = |s: &[u8], n: usize| s.len() == n && s.iter().all(u8::is_ascii_digit);
    let time_ok = time.len() == 8
        && digits(&time[0..2], 2)
        && time[2] == b':'
        && digits(&time[3..5], 2)
        && time[5] == b':'
        && digits(&time[6..8], 2);
    if DAYS.contains(wkday)
        && digits(day, 2)
        && MONTHS.contains(month)
        && digits(year, 4)
        && time_ok
        && *zone == b"GMT"
    {
        Ok(())
    } else {
        Err(err)
    }
}

/// Parses a delta-seconds value (Expires, Min-Expires), saturating past 2^32-1.
pub fn parse_delta_seconds(value: &[u8], header: &'static str) -> Result<u32, ParseError> {
    parse_u32_saturating(trim(value)).ok_or(ParseError::header(header, "not delta-seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_transports_in_any_case() {
        for (i, known) in KNOWN_TRANSPORTS.iter().enumerate() {
            let name = known.as_str();
            let mixed: String = name
                .chars()
                .enumerate()
                .map(|(k, c)| {
                    if k % 2 == 0 {
                        c.to_ascii_lowercase()
                    } else {
                        c
                    }
                })
                .collect();
            for t in [name.to_string(), name.to_ascii_lowercase(), mixed] {
                assert_eq!(known_transport(t.as_bytes()), Some(i as u8), "{t}");
            }
        }
        for other in ["", "TL", "TLSX", "SCTP-TLS", "TLS-SCTPX", "W"] {
            assert_eq!(known_transport(other.as_bytes()), None, "{other}");
        }
    }

    #[test]
    fn via_with_whitespace_and_unknown_transport() {
        let v = Via::parse(b"SIP  /   2.0 /UDP 192.0.2.2;branch=390skdjuw ; rport").unwrap();
        assert_eq!(v.transport(), Transport::Udp);
        assert_eq!(v.branch(), Some("390skdjuw"));
        assert_eq!(v.rport(), Some(None));
        let v =
            Via::parse(b"SIP/2.0/UNKNOWN [2001:db8::9:1]:6050;received=[2001:db8::9:255]").unwrap();
        assert_eq!(v.transport(), Transport::Other("UNKNOWN"));
        assert_eq!(v.port(), Some(6050));
        assert_eq!(v.received(), Some("2001:db8::9:255".parse().unwrap()));
        assert!(Via::parse(b"SIP/2.0/UDP 192.0.2.15;;,;,,").is_err());
    }

    #[test]
    fn transports_are_matched_in_any_case() {
        for (token, want) in [
            ("udp", Transport::Udp),
            ("Tcp", Transport::Tcp),
            ("TLS", Transport::Tls),
            ("sctp", Transport::Sctp),
            ("tls-SCTP", Transport::TlsSctp),
            ("WS", Transport::Ws),
            ("wss", Transport::Wss),
            ("TLS-SCTP-X", Transport::Other("TLS-SCTP-X")),
            ("tl", Transport::Other("tl")),
            ("LONGTRANSPORTNAME", Transport::Other("LONGTRANSPORTNAME")),
        ] {
            let value = format!("SIP/2.0/{token} h;branch=z9hG4bK1");
            assert_eq!(Via::parse(value.as_bytes()).unwrap().transport(), want);
            assert_eq!(Transport::from_token(token), want);
        }
    }

    #[test]
    fn cseq_limits() {
        assert_eq!(CSeq::parse(b"0009\r INVITE".as_slice()).ok(), None);
        let c = CSeq::parse(b"0009 INVITE").unwrap();
        assert_eq!((c.seq(), c.method()), (9, Method::Invite));
        assert!(CSeq::parse(b"36893488147419103232 INVITE").is_err());
        assert!(CSeq::parse(b"4294967295 INVITE").is_ok());
    }

    #[test]
    fn auth_values_of_any_scheme() {
        let a = AuthValue::parse(
            b"Digest realm=\"atlanta.com\", nonce=\"84a4cc6f\", qop=\"auth,auth-int\", algorithm=MD5",
            "WWW-Authenticate",
        )
        .unwrap();
        assert_eq!(a.scheme(), "Digest");
        assert_eq!(&*a.param("qop").unwrap(), b"auth,auth-int");
        assert_eq!(&*a.param("ALGORITHM").unwrap(), b"MD5");
        let a =
            AuthValue::parse(b"NoOneKnowsThisScheme opaque-data=here", "Authorization").unwrap();
        assert_eq!(&*a.param("opaque-data").unwrap(), b"here");
        let a = AuthValue::parse(
            b"NTLM qop=\"auth\", realm=\"SIP Communications Service\", targetname=\"fe.contoso.test\", version=4",
            "WWW-Authenticate",
        )
        .unwrap();
        assert_eq!(&*a.param("realm").unwrap(), b"SIP Communications Service");
    }

    #[test]
    fn contact_params() {
        let c = Contact::parse(
            b"<sip:a@b;gr=urn:uuid:1>;expires=280297596632815;q=0.33;+sip.instance=\"<urn:uuid:1>\"",
        )
        .unwrap();
        assert_eq!(c.expires(), Some(u32::MAX));
        assert_eq!(c.q_millis(), Some(330));
        assert_eq!(&*c.instance().unwrap(), b"<urn:uuid:1>");
        assert!(c.is_gruu());
        assert_eq!(Contact::parse(b" * ").unwrap(), Contact::Star);
    }

    /// RFC 3261 §25.1 / RFC 5626 §4.1: an addr-spec Contact's `+sip.instance` is a
    /// quoted-string that may hold `<`; it opens no `<URI>`.
    #[test]
    fn an_addr_spec_contact_may_quote_a_lt_in_a_param() {
        let c = Contact::parse(
            b"sip:alice@192.0.2.2;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\"",
        )
        .unwrap();
        assert_eq!(
            &*c.instance().unwrap(),
            b"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"
        );
        let Contact::Addr(na) = c else {
            panic!("not an address")
        };
        assert!(!na.is_bracketed());
        assert_eq!(na.uri().as_bytes(), b"sip:alice@192.0.2.2");
    }

    /// RFC 3261 §25.1: `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`.
    #[test]
    fn contact_q_values_follow_the_qvalue_grammar() {
        for (q, want) in [
            ("1.0", Some(1000)),
            ("0.000", Some(0)),
            ("1", Some(1000)),
            ("0.5", Some(500)),
            ("1.000", Some(1000)),
            ("1.5", None),
            ("1.001", None),
        ] {
            let text = format!("<sip:a@b>;q={q}");
            let c = Contact::parse(text.as_bytes()).unwrap();
            assert_eq!(c.q_millis(), want, "q={q}");
        }
    }

    /// RFC 3261 §25.1: `Contact = ( STAR / (contact-param *(COMMA contact-param)))`: `*`
    /// takes no parameters.
    #[test]
    fn a_star_contact_takes_no_parameters() {
        assert!(Contact::parse(b"*;expires=0").is_err());
    }

    /// RFC 3261 §25.1: `sent-by = host [ COLON port ]`, `COLON = SWS ":" SWS`.
    #[test]
    fn via_sent_by_allows_whitespace_around_the_port_colon() {
        for sent_by in [
            "host.example.com : 5070",
            "host.example.com :5070",
            "host.example.com: 5070",
            "host.example.com \t:\t 5070",
        ] {
            let text = format!("SIP/2.0/UDP {sent_by} ;branch=z9hG4bK1");
            let v = Via::parse(text.as_bytes()).unwrap();
            assert_eq!(v.host_raw(), b"host.example.com", "{sent_by:?}");
            assert_eq!(v.port(), Some(5070), "{sent_by:?}");
            assert_eq!(v.branch(), Some("z9hG4bK1"), "{sent_by:?}");
        }
        let v = Via::parse(b"SIP/2.0/TCP [2001:db8::1] : 5070").unwrap();
        assert_eq!(
            (v.host_raw(), v.port()),
            (&b"[2001:db8::1]"[..], Some(5070))
        );
        for bad in [
            "SIP/2.0/UDP host.example.com : ;branch=z9hG4bK1",
            "SIP/2.0/UDP host.example.com: ;branch=z9hG4bK1",
            "SIP/2.0/UDP host.example.com:5060 : 5070;branch=z9hG4bK1",
            "SIP/2.0/UDP host.example.com : 99999",
        ] {
            assert!(Via::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn warnings_and_dates() {
        let w = Warning::parse(b"399 atlanta.com \"Alice's \\\"phone\\\"\"").unwrap();
        assert_eq!(w.code(), 399);
        assert_eq!(&*w.text(), b"Alice's \"phone\"");
        assert!(Warning::parse(b"1812 overture \"In Progress\"").is_err());
        // What `format` writes parses back to the text, escapes and all.
        let v = Warning::format(399, "10.0.0.1:5061", "bad \"x\" \\ y\r\nVia: z");
        assert_eq!(v, "399 10.0.0.1:5061 \"bad \\\"x\\\" \\\\ y  Via: z\"");
        let w = Warning::parse(v.as_bytes()).unwrap();
        assert_eq!((w.code(), w.agent()), (399, &b"10.0.0.1:5061"[..]));
        assert_eq!(&*w.text(), b"bad \"x\" \\ y  Via: z");
        assert!(validate_date(b"Sat, 13 Nov 2010 23:29:00 GMT").is_ok());
        assert!(validate_date(b"Fri, 01 Jan 2010 16:00:00 EST").is_err());
    }
}

/// The position in [`KNOWN_TRANSPORTS`] of the transport token `t` (any case): the length
/// picks the candidates, then one case-insensitive comparison each. (A lower-cased copy
/// into a stack buffer cost 15 % of a Via's parse: a variable-length copy, then a wider
/// read of the bytes just stored, which waits for the stores.)
fn known_transport(t: &[u8]) -> Option<u8> {
    let is = |k: &[u8]| t.eq_ignore_ascii_case(k);
    match t.len() {
        3 if is(b"tls") => Some(2),
        3 if is(b"tcp") => Some(1),
        3 if is(b"udp") => Some(0),
        4 if is(b"sctp") => Some(3),
        8 if is(b"tls-sctp") => Some(4),
        2 if is(b"ws") => Some(5),
        3 if is(b"wss") => Some(6),
        _ => None,
    }
}

/// The known transport the token `t` names (any case).
fn known_transport_of(t: &[u8]) -> Option<Transport<'static>> {
    known_transport(t).and_then(|i| KNOWN_TRANSPORTS.get(usize::from(i)).copied())
}

/// The transports with a variant of their own, in a fixed order for [`ViaIdx`].
const KNOWN_TRANSPORTS: [Transport<'static>; 7] = [
    Transport::Udp,
    Transport::Tcp,
    Transport::Tls,
    Transport::Sctp,
    Transport::TlsSctp,
    Transport::Ws,
    Transport::Wss,
];

/// The address in a `received` value: IPv4, or IPv6 with or without brackets.
pub(crate) fn ip_param(v: &[u8]) -> Option<IpAddr> {
    let v = v
        .strip_prefix(b"[")
        .and_then(|x| x.strip_suffix(b"]"))
        .unwrap_or(v);
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Where the parts of a [`Via`] are (see [`crate::index`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ViaIdx {
    protocol: Sp,
    version: Sp,
    /// A known transport by its position in [`KNOWN_TRANSPORTS`]; `Other` as a range.
    transport: Result<u8, Sp>,
    host_kind: HostKind,
    host_raw: Sp,
    port: Option<u16>,
    params: Sp,
    branch: Option<Sp>,
}

impl ViaIdx {
    /// This index once the Via's parameters were edited in place: each edit `(at, end,
    /// delta)` replaced `at..end` (in the parameters, or at their end) with text `delta`
    /// bytes longer. What precedes the parameters did not move; their end takes every
    /// edit in. `None` when an edit touched the branch or an offset no longer fits an
    /// index: the caller parses instead.
    pub(crate) fn with_params_edited(
        &self,
        edits: impl Iterator<Item = (usize, usize, isize)> + Clone,
    ) -> Option<ViaIdx> {
        let fits = |end: usize| end <= usize::from(u16::MAX);
        let (start, end) = self.params.bounds();
        let end = end.checked_add_signed(edits.clone().map(|e| e.2).sum())?;
        let params = fits(end).then(|| Sp::new(start, end))?;
        let branch = match self.branch.map(Sp::bounds) {
            None => None,
            Some((a, b)) => {
                // `branch=` precedes the value: an edit that ends before it is before it.
                if edits.clone().any(|(at, end, _)| end >= a && at < b) {
                    return None;
                }
                let before = edits.filter(|e| e.1 < a).map(|e| e.2).sum();
                let (a, b) = (a.checked_add_signed(before)?, b.checked_add_signed(before)?);
                Some(fits(b).then(|| Sp::new(a, b))?)
            }
        };
        Some(ViaIdx {
            params,
            branch,
            ..*self
        })
    }

    /// The shape almost every Via value has, recognised in one pass and straight into
    /// offsets: `SIP/2.0/`, a transport token, one space, `host[:port]`, and a parameter
    /// list of the common shape. Returns where the value ends (the end of `value` or a `,`
    /// before the next one). `None` for anything else: the general parser then decides,
    /// and gives the same answer for what this accepts (debug builds check).
    // Inlined for store forwarding (see `SipMessage::validate_into`).
    #[inline(always)]
    fn parse_common(value: &[u8]) -> Option<(ViaIdx, usize)> {
        const PREFIX: usize = b"SIP/2.0/".len();
        if value.get(..PREFIX)? != b"SIP/2.0/" || value.len() > usize::from(u16::MAX) {
            return None;
        }
        let transport_end = PREFIX
            + value[PREFIX..]
                .iter()
                .take_while(|&&c| is_token_char(c))
                .count();
        if transport_end == PREFIX || value.get(transport_end) != Some(&b' ') {
            return None;
        }
        let transport = &value[PREFIX..transport_end];
        let sent_by = transport_end + 1;
        let (host_kind, host_len, port, sent_by_len) = hostport_prefix(&value[sent_by..])?;
        let end = sent_by + sent_by_len;
        let (params_len, branch) = Params::parse_common(&value[end..], b"branch")?;
        let params_end = end + params_len;
        let transport = known_transport(transport).ok_or(Sp::new(PREFIX, transport_end));
        Some((
            ViaIdx {
                protocol: Sp::new(0, 3),
                version: Sp::new(4, 7),
                transport,
                host_kind,
                host_raw: Sp::new(sent_by, sent_by + host_len),
                port,
                params: Sp::new(end, params_end),
                branch: branch.flatten().map(|(a, b)| Sp::new(end + a, end + b)),
            },
            params_end,
        ))
    }
}

impl<'a> Via<'a> {
    pub(crate) fn index(&self, base: &[u8]) -> Option<ViaIdx> {
        let transport = match self.transport {
            Transport::Other(t) => Err(Sp::of(base, t.as_bytes())?),
            known => Ok(KNOWN_TRANSPORTS.iter().position(|k| *k == known)? as u8),
        };
        Some(ViaIdx {
            protocol: Sp::of(base, self.protocol)?,
            version: Sp::of(base, self.version)?,
            transport,
            host_kind: self.host_kind,
            host_raw: Sp::of(base, self.host_raw)?,
            port: self.port,
            params: self.params.index(base)?,
            branch: crate::index::opt(base, self.branch)?,
        })
    }
    // Inlined for store forwarding (see `SipMessage::validate_into`).
    #[inline(always)]
    pub(crate) fn from_index(base: &'a [u8], idx: &ViaIdx) -> Via<'a> {
        Via {
            protocol: idx.protocol.get(base),
            version: idx.version.get(base),
            transport: match idx.transport {
                Ok(i) => KNOWN_TRANSPORTS
                    .get(usize::from(i))
                    .copied()
                    .unwrap_or(Transport::Udp),
                Err(sp) => Transport::Other(sp.str(base)),
            },
            host_kind: idx.host_kind,
            host_raw: idx.host_raw.get(base),
            port: idx.port,
            params: Params::from_index(base, idx.params),
            branch: idx.branch.map(|sp| sp.get(base)),
        }
    }
}
