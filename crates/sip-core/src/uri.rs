//! URIs: `sip:`/`sips:` (RFC 3261 §19.1) with every component, `tel:` (RFC 3966), and any
//! other absolute URI kept opaque (RFC 3986 scheme, RFC 4475 §3.3.2–3.3.4).
//!
//! A parsed [`Uri`] borrows from the header it came from. Components are kept escaped as
//! written; the accessors that say "decoded" undo `%HH` escapes exactly once, per component,
//! so `sip:%75se%72@host` has user `user` and a parameter `n%61me=v%61lue%25%34%31` is
//! `name=value%41` (RFC 4475 §3.1.1.3).

use crate::error::ParseError;
use crate::index::Sp;
use crate::scan::{class, escapes_valid, find, is_ws, percent_decode, run_of, run_table};
use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const fn uric_table() -> [bool; 256] {
    let mut t = [false; 256];
    let extra = b"-_.!~*'()%;/?:@&=+$,[]";
    let mut i = 0;
    while i < extra.len() {
        t[extra[i] as usize] = true;
        i += 1;
    }
    let mut c = 0u8;
    while c < 128 {
        if c.is_ascii_alphanumeric() {
            t[c as usize] = true;
        }
        c += 1;
    }
    t
}

/// Characters that may appear unescaped somewhere in a URI (reserved, unreserved, `%`, and
/// the brackets of an IPv6 reference).
static URIC: [bool; 256] = uric_table();

const PLAIN: u8 = 0;
const REFUSED: u8 = 1;
const ESCAPE: u8 = 2;
const AT: u8 = 3;
const DELIMITER: u8 = 4;

const fn sip_uri_class() -> [u8; 256] {
    let mut t = [REFUSED; 256];
    let mut c = 0;
    while c < 256 {
        if URIC[c] {
            t[c] = PLAIN;
        }
        c += 1;
    }
    t[b'%' as usize] = ESCAPE;
    t[b'@' as usize] = AT;
    t[b';' as usize] = DELIMITER;
    t[b'?' as usize] = DELIMITER;
    t
}

/// [`URIC`] with the bytes a SIP URI's first pass stops at singled out, so that the common
/// byte costs one load and one compare.
static SIP_URI_CLASS: [u8; 256] = sip_uri_class();

const fn plain_of(class: &[u8; 256]) -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = (class[c] == PLAIN) as u8;
        c += 1;
    }
    t
}

/// The [`PLAIN`] bytes of [`SIP_URI_CLASS`], for skipping runs of them.
static SIP_URI_PLAIN: [u8; 256] = plain_of(&SIP_URI_CLASS);

/// A URI as found in a Request-URI or a name-addr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uri<'a> {
    /// `sip:` or `sips:`.
    Sip(SipUri<'a>),
    /// `tel:` (RFC 3966).
    Tel(TelUri<'a>),
    /// Any other absolute URI (`http:`, `urn:`, `isbn:` …), kept opaque.
    Other(OtherUri<'a>),
}

impl<'a> Uri<'a> {
    /// Parses a whole URI (no surrounding `<>`, no whitespace).
    pub fn parse(s: &'a [u8]) -> Result<Uri<'a>, ParseError> {
        if let Some(u) = SipUri::parse_common(s) {
            debug_assert_eq!(Ok(Uri::Sip(u)), Uri::parse_general(s));
            return Ok(Uri::Sip(u));
        }
        Uri::parse_general(s)
    }

    /// [`parse`](Self::parse) for any input.
    fn parse_general(s: &'a [u8]) -> Result<Uri<'a>, ParseError> {
        let colon = find(s, b':').ok_or(ParseError::Uri("no scheme"))?;
        let scheme = &s[..colon];
        if scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips") {
            SipUri::parse(s, scheme.len() == 4).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case(b"tel") {
            TelUri::parse(s).map(Uri::Tel)
        } else {
            OtherUri::parse(s, colon).map(Uri::Other)
        }
    }

    /// The URI exactly as written.
    pub fn as_bytes(&self) -> &'a [u8] {
        match self {
            Uri::Sip(u) => u.raw,
            Uri::Tel(u) => u.raw,
            Uri::Other(u) => u.raw,
        }
    }

    /// The scheme as written (`sip`, `SIPS`, `tel`, `urn`, …).
    pub fn scheme(&self) -> &'a str {
        let raw = self.as_bytes();
        let colon = find(raw, b':').unwrap_or(0);
        std::str::from_utf8(&raw[..colon]).unwrap_or("")
    }

    /// The SIP URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri<'a>> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }
}

impl fmt::Display for Uri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

/// The host part of a SIP URI or Via sent-by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host<'a> {
    /// A domain name, as written (compare case-insensitively).
    Domain(&'a str),
    /// An IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv6 reference (written in `[...]`).
    Ipv6(Ipv6Addr),
}

impl<'a> Host<'a> {
    /// Parses a host: `[IPv6]`, dotted IPv4, or a domain name.
    pub fn parse(s: &'a [u8]) -> Result<Host<'a>, ParseError> {
        HostKind::parse(s).map(|kind| kind.host(s))
    }

    /// The address, if the host is an IP literal.
    pub fn ip(&self) -> Option<IpAddr> {
        match *self {
            Host::Ipv4(a) => Some(IpAddr::V4(a)),
            Host::Ipv6(a) => Some(IpAddr::V6(a)),
            Host::Domain(_) => None,
        }
    }
}

impl fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::Ipv4(a) => write!(f, "{a}"),
            Host::Ipv6(a) => write!(f, "[{a}]"),
        }
    }
}

/// What kind of host a validated host text is. The views keep this next to the text's
/// offsets instead of a [`Host`]: an IPv4 address is kept (most Vias carry one), a domain
/// becomes `&str` and an IPv6 reference an address only when asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostKind {
    Domain,
    Ipv4([u8; 4]),
    Ipv6,
}

impl HostKind {
    /// Validates a host: `[IPv6]`, dotted IPv4, or a domain name.
    pub(crate) fn parse(s: &[u8]) -> Result<HostKind, ParseError> {
        match host_prefix_checked(s)? {
            (kind, len) if len == s.len() => Ok(kind),
            _ => Err(ParseError::Uri("bad domain name")),
        }
    }

    /// The public view of the host `text` this kind was found for.
    #[inline]
    pub(crate) fn host(self, text: &[u8]) -> Host<'_> {
        match self {
            // Only ASCII passes `parse`, and an IPv6 reference that passed parses again.
            HostKind::Domain => Host::Domain(std::str::from_utf8(text).unwrap_or("")),
            HostKind::Ipv4(a) => Host::Ipv4(Ipv4Addr::from(a)),
            HostKind::Ipv6 => Host::Ipv6(ipv6_of(text).unwrap_or(Ipv6Addr::UNSPECIFIED)),
        }
    }
}

/// The address of an IPv6 reference, `[...]` included.
fn ipv6_of(s: &[u8]) -> Option<Ipv6Addr> {
    let inner = s.strip_prefix(b"[")?.strip_suffix(b"]")?;
    std::str::from_utf8(inner).ok()?.parse().ok()
}

/// The bytes of a host name or IPv4 address, as a [`run_of`] table.
static HOST_BYTES: [u8; 256] = run_table(class(b"-._", true));
/// The bytes of a dotted IPv4 address.
static IPV4_BYTES: [u8; 256] = run_table(class(b".0123456789", false));

/// Dotted-quad IPv4 as RFC 3261 writes it (`1*3DIGIT` per octet, each at most 255). Ours
/// rather than std's parser: it is the hot path of every Via, and the grammar allows the
/// leading zeros std refuses.
fn parse_ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut n = 0;
    let mut value: u32 = 0;
    let mut digits = 0;
    for &c in s {
        if c == b'.' {
            if digits == 0 || n == 3 {
                return None;
            }
            octets[n] = value as u8;
            n += 1;
            value = 0;
            digits = 0;
        } else if c.is_ascii_digit() {
            digits += 1;
            value = value * 10 + u32::from(c - b'0');
            if digits > 3 || value > 255 {
                return None;
            }
        } else {
            return None;
        }
    }
    if digits == 0 || n != 3 {
        return None;
    }
    octets[3] = value as u8;
    Some(Ipv4Addr::from(octets))
}

/// The host at the start of `s` (an `[IPv6]` reference, or the run of host characters)
/// validated: its kind and its length. `None` if it is not a valid host; see
/// [`host_prefix_checked`] for why. (An `Option` of 16 bytes comes back in registers; a
/// `Result` with a `ParseError` went through memory, and the caller's read of it stalled.)
#[inline]
fn host_prefix(s: &[u8]) -> Option<(HostKind, usize)> {
    if s.first() == Some(&b'[') {
        let close = find(s, b']')?;
        return ipv6_of(&s[..=close]).map(|_| (HostKind::Ipv6, close + 1));
    }
    let (len, numeric) = host_run(s);
    let host = &s[..len];
    match host.first() {
        None => None,
        Some(_) if numeric => parse_ipv4(host).map(|a| (HostKind::Ipv4(a.octets()), len)),
        Some(b'.' | b'-') => None,
        Some(_) => Some((HostKind::Domain, len)),
    }
}

/// The run of host characters at the start of `s`: its length, and whether it could be a
/// dotted IPv4 address (digits and dots only). The run is found eight bytes per step
/// ([`run_of`]); only a run starting with a digit is looked at again for the second answer.
#[inline]
fn host_run(s: &[u8]) -> (usize, bool) {
    let len = run_of(s, 0, &HOST_BYTES);
    let numeric =
        s.first().is_some_and(u8::is_ascii_digit) && run_of(&s[..len], 0, &IPV4_BYTES) == len;
    (len, numeric)
}

/// [`host_prefix`], saying why a host is refused.
fn host_prefix_checked(s: &[u8]) -> Result<(HostKind, usize), ParseError> {
    host_prefix(s).ok_or_else(|| {
        ParseError::Uri(if s.first() == Some(&b'[') {
            if find(s, b']').is_some() {
                "bad IPv6 reference"
            } else {
                "unterminated IPv6 reference"
            }
        } else if unbracketed_ipv6(s) {
            UNBRACKETED_IPV6
        } else {
            match host_run(s) {
                (0, _) => "empty host",
                (_, true) => "bad IPv4 address",
                _ => "bad domain name",
            }
        })
    })
}

/// Why an IPv6 address written bare as a host is refused (RFC 3261 §25.1: `IPv6reference`
/// is bracketed; RFC 5118 §4.2). Said as such, not as the bad IPv4 address or port its
/// first colon makes of it, so the peer learns what to fix.
const UNBRACKETED_IPV6: &str = "IPv6 address without [ ]";

/// Does `s` start with an IPv6 address written without its brackets (at least two colons,
/// so `host:port` never is one)? Only on the way to an error.
fn unbracketed_ipv6(s: &[u8]) -> bool {
    let run = s
        .iter()
        .take_while(|c| c.is_ascii_hexdigit() || matches!(c, b':' | b'.'))
        .count();
    let text = &s[..run];
    text.iter().filter(|&&c| c == b':').count() >= 2
        && std::str::from_utf8(text).is_ok_and(|t| t.parse::<Ipv6Addr>().is_ok())
}

/// Validates `host[:port]` (with `[v6]` references) in one pass: the host's kind, the
/// length of the host as written (without the port), and the port.
pub(crate) fn parse_hostport(s: &[u8]) -> Result<(HostKind, usize, Option<u16>), ParseError> {
    let (kind, len) = host_prefix_checked(s)?;
    let port = match &s[len..] {
        [] => None,
        [b':', p @ ..] => Some(parse_port(p).ok_or_else(|| {
            ParseError::Uri(if unbracketed_ipv6(s) {
                UNBRACKETED_IPV6
            } else {
                "bad port"
            })
        })?),
        _ if kind == HostKind::Ipv6 => return Err(ParseError::Uri("junk after IPv6 reference")),
        _ => return Err(ParseError::Uri("bad domain name")),
    };
    Ok((kind, len, port))
}

/// `host[:port]` at the start of `s`, for the one-pass recognisers: the host's kind and
/// length, the port, and where the two end. `None` if the host is not valid or a `:` is
/// not followed by a valid port.
// Inlined for store forwarding (see `SipMessage::validate_into`).
#[inline(always)]
pub(crate) fn hostport_prefix(s: &[u8]) -> Option<(HostKind, usize, Option<u16>, usize)> {
    let (kind, host_len) = host_prefix(s)?;
    if s.get(host_len) != Some(&b':') {
        return Some((kind, host_len, None, host_len));
    }
    let digits = s[host_len + 1..]
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    let end = host_len + 1 + digits;
    let port = parse_port(&s[host_len + 1..end])?;
    Some((kind, host_len, Some(port), end))
}

/// A port: one to five digits, at most 65 535.
#[inline]
pub(crate) fn parse_port(p: &[u8]) -> Option<u16> {
    if p.is_empty() || p.len() > 5 {
        return None;
    }
    let mut v: u32 = 0;
    for &c in p {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + u32::from(d);
    }
    u16::try_from(v).ok()
}

/// A `sip:` or `sips:` URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipUri<'a> {
    raw: &'a [u8],
    at: SipUriAt,
}

/// Where the parts of a SIP URI are, as offsets into its text: all a parse finds, and all
/// a message keeps to give the view again without parsing (see [`crate::index`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SipUriAt {
    secure: bool,
    user: Option<Sp>,
    password: Option<Sp>,
    host: Sp,
    host_kind: HostKind,
    port: Option<u16>,
    params: Sp,
    headers: Option<Sp>,
}

/// The longest URI the parser takes: its parts are kept as 16-bit offsets. Far above any
/// line a SIP element sends (the default line limit is 16 KiB).
const MAX_URI: usize = u16::MAX as usize;

/// The user characters of [`SipUri::parse_common`]: unreserved and user-unreserved
/// (RFC 3261 §25.1) but for `;` and `?`, which would need the general parser's care.
static COMMON_USER: [u8; 256] = run_table(class(b"-_.!~*'()&=+$,/", true));
/// The URI parameter characters of [`SipUri::parse_common`]: unreserved and
/// param-unreserved, no escapes.
static COMMON_PARAM: [u8; 256] = run_table(class(b"-_.!~*'()[]/:&+$", true));

impl<'a> SipUri<'a> {
    /// The shape almost every SIP URI has, recognised in one pass: lower-case `sip:` or
    /// `sips:`, an optional user without escapes, a host, an optional port, and
    /// `;name[=value]` parameters without escapes; no password, no headers. `None` for
    /// anything else: the general parser then decides, and gives the same answer for what
    /// this accepts (debug builds check).
    #[inline]
    fn parse_common(raw: &'a [u8]) -> Option<SipUri<'a>> {
        SipUriAt::parse_common(raw).map(|at| SipUri { raw, at })
    }
}

impl SipUriAt {
    /// [`SipUri::parse_common`], giving the offsets only.
    // Inlined for store forwarding (see `SipMessage::validate_into`).
    #[inline(always)]
    pub(crate) fn parse_common(raw: &[u8]) -> Option<SipUriAt> {
        let (secure, base) = match raw.get(..5)? {
            [b's', b'i', b'p', b':', _] => (false, 4),
            b"sips:" => (true, 5),
            _ => return None,
        };
        if raw.len() > MAX_URI {
            return None;
        }
        let rest = &raw[base..];
        let user_end = run_of(rest, 0, &COMMON_USER);
        let (user, host_start) = match rest.get(user_end) {
            Some(b'@') if user_end > 0 => (Some(Sp::new(base, base + user_end)), user_end + 1),
            _ => (None, 0),
        };
        let (host_kind, host_len, port, hostport_len) = hostport_prefix(&rest[host_start..])?;
        let mut i = host_start + hostport_len;
        let params_start = i;
        while i < rest.len() {
            if rest[i] != b';' {
                return None;
            }
            let name_end = run_of(rest, i + 1, &COMMON_PARAM);
            if name_end == i + 1 {
                return None;
            }
            i = name_end;
            if rest.get(i) == Some(&b'=') {
                let value_end = run_of(rest, i + 1, &COMMON_PARAM);
                if value_end == i + 1 {
                    return None;
                }
                i = value_end;
            }
        }
        let host_start = base + host_start;
        Some(SipUriAt {
            secure,
            user,
            password: None,
            host: Sp::new(host_start, host_start + host_len),
            host_kind,
            port,
            params: Sp::new(base + params_start, raw.len()),
            headers: None,
        })
    }
}

impl<'a> SipUri<'a> {
    fn parse(raw: &'a [u8], secure: bool) -> Result<SipUri<'a>, ParseError> {
        if raw.len() > MAX_URI {
            return Err(ParseError::Uri("longer than 65 535 bytes"));
        }
        let base = if secure { 5 } else { 4 };
        let rest = &raw[base..];
        // One pass: character class, `%HH` escapes, where the userinfo ends, and the first
        // `;` or `?` after it (where host[:port] ends, unless inside an IPv6 reference).
        let mut at = None;
        let mut delimiter = None;
        let mut i = 0;
        loop {
            i = run_of(rest, i, &SIP_URI_PLAIN);
            let Some(&c) = rest.get(i) else { break };
            match SIP_URI_CLASS[c as usize] {
                ESCAPE => {
                    if !escape_at(rest, i) {
                        return Err(ParseError::Uri("bad % escape"));
                    }
                    i += 2;
                }
                AT if at.is_none() => {
                    at = Some(i);
                    delimiter = None;
                }
                DELIMITER if delimiter.is_none() => delimiter = Some(i),
                REFUSED => return Err(ParseError::Uri("character not allowed in a SIP URI")),
                _ => {}
            }
            i += 1;
        }
        // Offsets below are into `raw`; every one fits 16 bits (checked above).
        let (user, password, host_start) = match at {
            Some(at) => {
                let userinfo = &rest[..at];
                let (user_end, password) = match find(userinfo, b':') {
                    Some(c) => (c, Some(Sp::new(base + c + 1, base + at))),
                    None => (at, None),
                };
                if user_end == 0 {
                    return Err(ParseError::Uri("empty user"));
                }
                (Some(Sp::new(base, base + user_end)), password, at + 1)
            }
            None => (None, None, 0),
        };
        let hp_end = match delimiter {
            Some(d) if d >= host_start => d,
            _ => rest.len(),
        };
        let (host_kind, host_len, port) = parse_hostport(&rest[host_start..hp_end])?;
        let after = &rest[hp_end..];
        // Parameters up to `?`, in one pass: no empty name or value, no `@`. A lone `;`
        // at the end of the parameters is tolerated.
        let mut q = None;
        let mut in_value = false;
        for (k, &c) in after.iter().enumerate() {
            let next = after.get(k + 1).copied();
            match c {
                b'?' => {
                    q = Some(k);
                    break;
                }
                b'@' => return Err(ParseError::Uri("@ in URI parameters")),
                b';' => {
                    in_value = false;
                    if matches!(next, Some(b';' | b'=')) {
                        return Err(ParseError::Uri("empty URI parameter"));
                    }
                }
                b'=' if !in_value => {
                    in_value = true;
                    if matches!(next, None | Some(b';' | b'?')) {
                        return Err(ParseError::Uri("empty URI parameter value"));
                    }
                }
                _ => {}
            }
        }
        let params_start = base + hp_end;
        let (params, headers) = match q {
            Some(q) => {
                let h = &after[q + 1..];
                if h.is_empty() || h.split(|&c| c == b'&').any(|kv| !kv.contains(&b'=')) {
                    return Err(ParseError::Uri("malformed URI headers"));
                }
                (
                    Sp::new(params_start, params_start + q),
                    Some(Sp::new(params_start + q + 1, raw.len())),
                )
            }
            None => (Sp::new(params_start, raw.len()), None),
        };
        let host_start = base + host_start;
        Ok(SipUri {
            raw,
            at: SipUriAt {
                secure,
                user,
                password,
                host: Sp::new(host_start, host_start + host_len),
                host_kind,
                port,
                params,
                headers,
            },
        })
    }

    /// The URI exactly as written.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }
    /// `sips:`?
    pub fn is_secure(&self) -> bool {
        self.at.secure
    }
    /// The user part, decoded (`%40` becomes `@`).
    pub fn user(&self) -> Option<Cow<'a, [u8]>> {
        self.user_raw().map(percent_decode)
    }
    /// The user part as written.
    pub fn user_raw(&self) -> Option<&'a [u8]> {
        self.at.user.map(|sp| sp.get(self.raw))
    }
    /// The password, decoded.
    pub fn password(&self) -> Option<Cow<'a, [u8]>> {
        self.at.password.map(|sp| percent_decode(sp.get(self.raw)))
    }
    /// The host.
    pub fn host(&self) -> Host<'a> {
        self.at.host_kind.host(self.host_raw())
    }
    /// The host as written (IPv6 with brackets, no port).
    pub fn host_raw(&self) -> &'a [u8] {
        self.at.host.get(self.raw)
    }
    /// The explicit port, if any.
    pub fn port(&self) -> Option<u16> {
        self.at.port
    }
    /// URI parameters (`;transport=tls;lr`), each name and value decoded once.
    pub fn params(&self) -> impl Iterator<Item = (Cow<'a, [u8]>, Option<Cow<'a, [u8]>>)> + 'a {
        UriParamIter::new(self.at.params.get(self.raw))
            .map(|(n, v)| (percent_decode(n), v.map(percent_decode)))
    }
    /// The decoded value of the parameter `name` (case-insensitive); `Some(None)` for a flag.
    pub fn param(&self, name: &str) -> Option<Option<Cow<'a, [u8]>>> {
        self.params()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }
    /// The `transport` parameter.
    pub fn transport(&self) -> Option<Cow<'a, [u8]>> {
        self.param("transport").flatten()
    }
    /// Has the loose-routing `lr` flag (RFC 3261 §16.12)?
    pub fn is_loose_route(&self) -> bool {
        self.param("lr").is_some()
    }
    /// The `user` parameter (`user=phone` makes the user part a telephone number).
    pub fn user_param(&self) -> Option<Cow<'a, [u8]>> {
        self.param("user").flatten()
    }
    /// The URI as written less its headers component (`?name=value…`): what a
    /// Request-URI may hold (RFC 3261 §19.1.1, Table 1), e.g. when a Contact with headers
    /// becomes a dialog's remote target.
    pub fn without_headers(&self) -> &'a [u8] {
        match self.at.headers {
            Some(_) => &self.raw[..self.at.params.bounds().1],
            None => self.raw,
        }
    }
    /// The raw header part after `?`, if any (`name=value&…`, still escaped).
    pub fn headers_raw(&self) -> Option<&'a [u8]> {
        self.at.headers.map(|sp| sp.get(self.raw))
    }
    /// URI headers, each name and value decoded once.
    pub fn headers(&self) -> impl Iterator<Item = (Cow<'a, [u8]>, Cow<'a, [u8]>)> + 'a {
        self.headers_escaped()
            .map(|(n, v)| (percent_decode(n), percent_decode(v)))
    }
    /// URI headers as written (still escaped), each split into name and value.
    fn headers_escaped(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        self.headers_raw()
            .unwrap_or_default()
            .split(|&c| c == b'&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let eq = find(kv, b'=').unwrap_or(kv.len());
                (&kv[..eq], kv.get(eq + 1..).unwrap_or_default())
            })
    }
}

/// Iterates `;name[=value]` URI parameters (no whitespace allowed inside URIs).
struct UriParamIter<'a> {
    s: &'a [u8],
}

impl<'a> UriParamIter<'a> {
    fn new(s: &'a [u8]) -> Self {
        UriParamIter {
            s: s.strip_prefix(b";").unwrap_or(s),
        }
    }
}

impl<'a> Iterator for UriParamIter<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);
    fn next(&mut self) -> Option<Self::Item> {
        if self.s.is_empty() {
            return None;
        }
        let end = find(self.s, b';').unwrap_or(self.s.len());
        let p = &self.s[..end];
        self.s = self.s.get(end + 1..).unwrap_or_default();
        Some(match find(p, b'=') {
            Some(eq) => (&p[..eq], Some(&p[eq + 1..])),
            None => (p, None),
        })
    }
}

/// Is there a valid `%HH` escape at `s[i]`?
#[inline]
fn escape_at(s: &[u8], i: usize) -> bool {
    i + 2 < s.len() && s[i + 1].is_ascii_hexdigit() && s[i + 2].is_ascii_hexdigit()
}

/// A `tel:` URI (RFC 3966): a number and parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelUri<'a> {
    raw: &'a [u8],
    number: &'a str,
    params: &'a [u8],
}

impl<'a> TelUri<'a> {
    fn parse(raw: &'a [u8]) -> Result<TelUri<'a>, ParseError> {
        if !raw.iter().all(|&c| URIC[c as usize]) || !escapes_valid(raw) {
            return Err(ParseError::Uri("character not allowed in a tel URI"));
        }
        let rest = &raw[4..];
        let end = find(rest, b';').unwrap_or(rest.len());
        let number = &rest[..end];
        let ok = !number.is_empty()
            && number
                .iter()
                .all(|c| c.is_ascii_hexdigit() || b"+-.()*#pPwW".contains(c));
        if !ok {
            return Err(ParseError::Uri("bad telephone number"));
        }
        Ok(TelUri {
            raw,
            // Checked ASCII above.
            number: std::str::from_utf8(number).map_err(|_| ParseError::Uri("bad number"))?,
            params: &rest[end..],
        })
    }
    /// The URI exactly as written.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }
    /// The number as written (`+1-201-555-0123`), visual separators included.
    pub fn number(&self) -> &'a str {
        self.number
    }
    /// Is it a global number (starts with `+`)?
    pub fn is_global(&self) -> bool {
        self.number.starts_with('+')
    }
    /// The decoded value of parameter `name` (e.g. `phone-context`).
    pub fn param(&self, name: &str) -> Option<Option<Cow<'a, [u8]>>> {
        UriParamIter::new(self.params)
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.map(percent_decode))
    }
}

/// An absolute URI of a scheme this crate does not interpret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtherUri<'a> {
    raw: &'a [u8],
}

impl<'a> OtherUri<'a> {
    fn parse(raw: &'a [u8], colon: usize) -> Result<OtherUri<'a>, ParseError> {
        let scheme = &raw[..colon];
        let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
            && scheme
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(c));
        if !scheme_ok {
            // Say what the usual mistakes are (RFC 4475 §3.1.2.11 `ltgtruri`, §3.1.2.14
            // `badaspec`), not only that the scheme is not one.
            return Err(ParseError::Uri(match raw.first() {
                Some(b'<') => "URI enclosed in < > where a bare URI belongs",
                Some(c) if is_ws(*c) => "whitespace before the URI",
                _ => "bad scheme",
            }));
        }
        let rest = &raw[colon + 1..];
        if rest.is_empty() || !rest.iter().all(|&c| URIC[c as usize] || c == b'#') {
            return Err(ParseError::Uri("bad absolute URI"));
        }
        Ok(OtherUri { raw })
    }
    /// The URI exactly as written.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }
}

/// URI equivalence (RFC 3261 §19.1.4): a registrar or a peer may write back a URI we sent
/// with another case, other escapes or its parameters in another order, and it is still ours.
impl Uri<'_> {
    /// Whether `self` and `other` name the same resource by RFC 3261 §19.1.4: for `sip:` and
    /// `sips:` see [`SipUri::is_equivalent`]; a SIP URI never equals a URI of another scheme;
    /// other schemes (`tel:`, opaque ones) compare the scheme case-insensitively and the
    /// rest as written.
    pub fn is_equivalent(&self, other: &Uri<'_>) -> bool {
        match (self, other) {
            (Uri::Sip(a), Uri::Sip(b)) => a.is_equivalent(b),
            (Uri::Sip(_), _) | (_, Uri::Sip(_)) => false,
            _ => {
                let (a, b) = (self.as_bytes(), other.as_bytes());
                let (sa, sb) = (self.scheme().len(), other.scheme().len());
                a[..sa].eq_ignore_ascii_case(&b[..sb]) && a[sa..] == b[sb..]
            }
        }
    }
}

/// The URI parameters that make two URIs differ when only one of them has it (RFC 3261
/// §19.1.4; `transport` too, as the section's examples show: it changes where a request
/// goes). Any other parameter is compared only when both URIs have it.
const SIGNIFICANT_PARAMS: [&str; 5] = ["transport", "user", "ttl", "method", "maddr"];

impl SipUri<'_> {
    /// Whether `self` and `other` are equivalent by RFC 3261 §19.1.4:
    /// - `sip:` never equals `sips:`; the scheme's case does not matter;
    /// - user and password are compared case-sensitively, the host (a domain
    ///   case-insensitively, an address by value), the port exactly (no port is not 5060);
    /// - a `%HH` escape of a character outside the reserved set equals the character;
    /// - parameter order does not matter and names compare case-insensitively; a parameter
    ///   in both must have the same value: exactly (`method` too), but `transport` and
    ///   `user` case-insensitively and `maddr` as a host; `transport`, `user`, `ttl`,
    ///   `method` and `maddr` in only one make them differ, any other parameter in only one
    ///   is ignored;
    /// - headers must be the same set in both, in any order: names case-insensitively,
    ///   values exactly.
    pub fn is_equivalent(&self, other: &SipUri<'_>) -> bool {
        let hosts = match (self.host(), other.host()) {
            (Host::Domain(a), Host::Domain(b)) => a.eq_ignore_ascii_case(b),
            (a, b) => a == b,
        };
        self.is_secure() == other.is_secure()
            && hosts
            && self.port() == other.port()
            && self.user_raw().map(canonical_escapes) == other.user_raw().map(canonical_escapes)
            && self
                .at
                .password
                .map(|sp| canonical_escapes(sp.get(self.raw)))
                == other
                    .at
                    .password
                    .map(|sp| canonical_escapes(sp.get(other.raw)))
            && params_equivalent(self.at.params.get(self.raw), other.at.params.get(other.raw))
            && canonical_headers(self) == canonical_headers(other)
    }
}

/// `s` with every escape of an unreserved (or non-ASCII) byte decoded and the others kept,
/// their hex digits upper-cased: two spellings of one component give the same bytes. Only
/// `%` and the RFC 3261 reserved set stay escaped, so the result is unambiguous.
fn canonical_escapes(s: &[u8]) -> Cow<'_, [u8]> {
    if !s.contains(&b'%') {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && escape_at(s, i) {
            let hex = std::str::from_utf8(&s[i + 1..i + 3]).unwrap_or("00");
            let byte = u8::from_str_radix(hex, 16).unwrap_or(0);
            if byte == b'%' || b";/?:@&=+$,".contains(&byte) {
                out.push(b'%');
                out.extend(s[i + 1..i + 3].iter().map(u8::to_ascii_uppercase));
            } else {
                out.push(byte);
            }
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Cow::Owned(out)
}

/// A component in the form that compares case-insensitively: canonical escapes, ASCII
/// lower-cased.
fn canonical_lower(s: &[u8]) -> Vec<u8> {
    let mut v = canonical_escapes(s).into_owned();
    v.make_ascii_lowercase();
    v
}

/// The parameter rules of [`SipUri::is_equivalent`], on the raw `;name[=value]` parts.
/// Names compare case-insensitively, values by [`param_values_equal`].
fn params_equivalent(a: &[u8], b: &[u8]) -> bool {
    /// (lower-cased name, value with canonical escapes) pairs.
    type Canonical<'s> = Vec<(Vec<u8>, Option<Cow<'s, [u8]>>)>;
    fn read(s: &[u8]) -> Canonical<'_> {
        UriParamIter::new(s)
            .map(|(n, v)| (canonical_lower(n), v.map(canonical_escapes)))
            .collect()
    }
    let (a, b) = (read(a), read(b));
    let one_way = |x: &Canonical<'_>, y: &Canonical<'_>| {
        x.iter()
            .all(|(name, value)| match y.iter().find(|(n, _)| n == name) {
                Some((_, other)) => param_values_equal(name, value.as_deref(), other.as_deref()),
                None => !SIGNIFICANT_PARAMS
                    .iter()
                    .any(|p| p.as_bytes() == name.as_slice()),
            })
    };
    one_way(&a, &b) && one_way(&b, &a)
}

/// Whether two values (escapes made canonical) of the URI parameter `name` (lower-cased)
/// match. RFC 3261 §19.1.4: "all other comparisons are case-sensitive unless defined
/// otherwise for the specific parameter", so a value compares exactly (`method`: its ABNF
/// is case-sensitive, §25.1 `INVITEm = %x49.4E.56.49.54.45 ; INVITE in caps`), except:
/// - `transport` and `user`, whose values are ABNF literals (`"udp"`, `"phone"`, …, §25.1),
///   which are case-insensitive (RFC 2234 §2.3), as §19.1.4's example
///   `;transport=TCP` = `;Transport=tcp` shows;
/// - `maddr`, a host (§25.1 `maddr-param = "maddr=" host`): compared as a host, a domain
///   name case-insensitively (§19.1.4), an address by value.
fn param_values_equal(name: &[u8], a: Option<&[u8]>, b: Option<&[u8]>) -> bool {
    let (Some(a), Some(b)) = (a, b) else {
        return a == b;
    };
    match name {
        b"transport" | b"user" => a.eq_ignore_ascii_case(b),
        b"maddr" => match (Host::parse(a), Host::parse(b)) {
            (Ok(Host::Domain(x)), Ok(Host::Domain(y))) => x.eq_ignore_ascii_case(y),
            (Ok(x), Ok(y)) => x == y,
            _ => a.eq_ignore_ascii_case(b),
        },
        _ => a == b,
    }
}

/// The headers of `u` as a sorted list of (name, value) pairs: names case-insensitive
/// (RFC 3261 §19.1.4), values exact once their escapes are canonical.
fn canonical_headers<'a>(u: &SipUri<'a>) -> Vec<(Vec<u8>, Cow<'a, [u8]>)> {
    let mut h: Vec<_> = u
        .headers_escaped()
        .map(|(n, v)| (canonical_lower(n), canonical_escapes(v)))
        .collect();
    h.sort();
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_host_says_why() {
        let why = |uri: &str| match Uri::parse(uri.as_bytes()) {
            Err(ParseError::Uri(why)) => why,
            other => panic!("{uri}: {other:?}"),
        };
        assert_eq!(why("sip:alice@[2001:db8::1"), "unterminated IPv6 reference");
        assert_eq!(why("sip:alice@[2001:db8::g]"), "bad IPv6 reference");
        assert_eq!(why("sip:alice@"), "empty host");
        assert_eq!(why("sip:alice@10.0.0.256"), "bad IPv4 address");
        assert_eq!(why("sip:alice@1.2.3"), "bad IPv4 address");
        assert_eq!(why("sip:alice@-contoso.test"), "bad domain name");
        assert_eq!(why("sip:alice@contoso.test:65536"), "bad port");
        assert_eq!(why("sip:alice@contoso.test:"), "bad port");
        // RFC 5118 §4.2: a bare IPv6 address, whose first colon would otherwise make it a
        // bad IPv4 address (`2001`) or a host with a bad port (`fe80`).
        assert_eq!(why("sip:2001:db8::10"), "IPv6 address without [ ]");
        assert_eq!(
            why("sip:alice@fe80::1;transport=tls"),
            "IPv6 address without [ ]"
        );
        assert_eq!(why("sip:alice@::ffff:10.0.0.1"), "IPv6 address without [ ]");
        assert!(Uri::parse(b"sip:alice@[2001:db8::10]:5061").is_ok());
        assert_eq!(why("sip:alice@.contoso.test"), "bad domain name");
        assert_eq!(
            HostKind::parse(b"contoso.test:5061"),
            Err(ParseError::Uri("bad domain name"))
        );
        assert_eq!(
            HostKind::parse(b"10.0.0.21"),
            Ok(HostKind::Ipv4([10, 0, 0, 21]))
        );
    }

    fn sip(s: &str) -> SipUri<'_> {
        match Uri::parse(s.as_bytes()).unwrap() {
            Uri::Sip(u) => u,
            other => panic!("not sip: {other:?}"),
        }
    }

    #[test]
    fn user_with_semicolon_and_escapes() {
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(&*u.user().unwrap(), b"user;par=u@example.net");
        assert_eq!(u.host(), Host::Domain("example.com"));
        assert_eq!(u.params().count(), 0);
    }

    #[test]
    fn params_unescape_once() {
        let u = sip("sip:host;%6C%72;n%61me=v%61lue%25%34%31");
        assert!(u.is_loose_route());
        assert_eq!(&*u.param("name").unwrap().unwrap(), b"value%41");
    }

    #[test]
    fn ipv6_references_and_ports() {
        let u = sip("sip:[2001:db8::10]:5070");
        assert_eq!(u.host(), Host::Ipv6("2001:db8::10".parse().unwrap()));
        assert_eq!(u.port(), Some(5070));
        let u = sip("sip:[2001:db8::10:5070]");
        assert_eq!(u.port(), None);
        assert!(Uri::parse(b"sip:2001:db8::10").is_err());
        assert!(Uri::parse(b"sip:[2001:db8:::192.0.2.1]").is_err());
        let u = sip("sips:alice:secret@[2001:db8::192.0.2.1];transport=tls?subject=hi");
        assert!(u.is_secure());
        assert_eq!(&*u.password().unwrap(), b"secret");
        assert_eq!(&*u.transport().unwrap(), b"tls");
        assert_eq!(u.headers().count(), 1);
        assert_eq!(
            u.without_headers(),
            b"sips:alice:secret@[2001:db8::192.0.2.1];transport=tls"
        );
        // A `?` in the user part is not a headers component.
        let u = sip("sip:a?b@host;lr");
        assert_eq!(u.without_headers(), b"sip:a?b@host;lr");
    }

    #[test]
    fn other_schemes_are_opaque() {
        assert!(matches!(
            Uri::parse(b"nobodyKnowsThisScheme:totallyopaquecontent"),
            Ok(Uri::Other(_))
        ));
        assert!(matches!(
            Uri::parse(b"soap.beep://192.0.2.103:3002"),
            Ok(Uri::Other(_))
        ));
        let t = match Uri::parse(b"tel:+1-201-555-0123;phone-context=example.com").unwrap() {
            Uri::Tel(t) => t,
            _ => panic!(),
        };
        assert!(t.is_global());
        assert_eq!(&*t.param("phone-context").unwrap().unwrap(), b"example.com");
    }

    #[test]
    fn ipv4_literals() {
        assert_eq!(parse_ipv4(b"192.0.2.1"), Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(parse_ipv4(b"010.0.0.1"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        for bad in [
            &b"256.0.0.1"[..],
            b"1.2.3",
            b"1.2.3.4.5",
            b"1..2.3",
            b"1.2.3.4444",
            b"",
        ] {
            assert_eq!(parse_ipv4(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        assert!(Uri::parse(b"sip:1.2.3").is_err());
    }

    #[test]
    fn rfc3261_19_1_4_equivalent_uris() {
        for (a, b) in [
            (
                "sip:%61lice@atlanta.com;transport=TCP",
                "sip:alice@AtLanTa.CoM;Transport=tcp",
            ),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
            (
                "sip:carol@chicago.com;newparam=5",
                "sip:carol@chicago.com;security=on",
            ),
            (
                "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
                "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
            ),
            (
                "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
                "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
            ),
            // What a registrar may echo of a contact: case of scheme and host, parameters
            // reordered or added, escapes of reserved characters in either hex case.
            (
                "sip:a%40contoso.test@127.0.0.1:5061;transport=tls;ob",
                "SIP:a%40contoso.test@127.0.0.1:5061;ob;transport=TLS;x=1",
            ),
            ("sip:a%3bb@h", "sip:a%3Bb@h"),
            ("sips:[2001:db8::1]:5061", "sips:[2001:DB8:0::1]:5061"),
            ("tel:+1-201-555-0123", "TEL:+1-201-555-0123"),
        ] {
            assert!(equivalent_both_ways(a, b), "{a} ~ {b}");
        }
    }

    #[test]
    fn rfc3261_19_1_4_different_uris() {
        for (a, b) in [
            (
                "SIP:ALICE@AtLanTa.CoM;Transport=udp",
                "sip:alice@AtLanTa.CoM;Transport=UDP",
            ),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
            (
                "sip:bob@biloxi.com",
                "sip:bob@biloxi.com:6000;transport=tcp",
            ),
            (
                "sip:carol@chicago.com",
                "sip:carol@chicago.com?Subject=next%20meeting",
            ),
            ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
            (
                "sip:alice@atlanta.com;transport=tcp",
                "sip:alice@atlanta.com;transport=udp",
            ),
            ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
            ("sip:alice@atlanta.com", "sip:atlanta.com"),
            ("sip:alice@atlanta.com", "sip:alice:pw@atlanta.com"),
            ("sip:alice@atlanta.com;user=phone", "sip:alice@atlanta.com"),
            (
                "sip:alice@atlanta.com;maddr=1.2.3.4",
                "sip:alice@atlanta.com",
            ),
            ("sip:alice@atlanta.com;ttl=1", "sip:alice@atlanta.com"),
            (
                "sip:alice@atlanta.com;method=INVITE",
                "sip:alice@atlanta.com",
            ),
            ("sip:alice@atlanta.com;lr", "sip:alice@atlanta.com;lr=on"),
            // `%3B` is a reserved `;`: not the same user as one written with `;`.
            ("sip:a%3Bb@h", "sip:a;b@h"),
            ("sip:alice@atlanta.com", "tel:+1-201-555-0123"),
        ] {
            assert!(!equivalent_both_ways(a, b), "{a} !~ {b}");
        }
    }

    /// RFC 3261 §19.1.4: "all other comparisons are case-sensitive unless defined otherwise
    /// for the specific parameter": parameter names and `transport`/`user`/`maddr` values
    /// compare case-insensitively, `method` and other values and header values exactly.
    #[test]
    fn uri_param_values_compare_exactly_unless_defined_otherwise() {
        for (a, b) in [
            (
                "sip:alice@atlanta.com;method=INVITE",
                "sip:alice@atlanta.com;method=invite",
            ),
            (
                "sip:alice@atlanta.com;x-id=AbC",
                "sip:alice@atlanta.com;x-id=abc",
            ),
            (
                "sip:alice@atlanta.com;ttl=1",
                "sip:alice@atlanta.com;ttl=01",
            ),
            (
                "sip:carol@chicago.com?Subject=Next",
                "sip:carol@chicago.com?Subject=next",
            ),
        ] {
            assert!(!equivalent_both_ways(a, b), "{a} !~ {b}");
        }
        for (a, b) in [
            (
                "sip:alice@atlanta.com;METHOD=INVITE",
                "sip:alice@atlanta.com;method=INVITE",
            ),
            (
                "sip:alice@atlanta.com;x-id=%41bC",
                "sip:alice@atlanta.com;X-ID=AbC",
            ),
            (
                "sip:alice@atlanta.com;transport=TCP",
                "sip:alice@atlanta.com;Transport=tcp",
            ),
            (
                "sip:+1555@atlanta.com;user=Phone",
                "sip:+1555@atlanta.com;user=phone",
            ),
            (
                "sip:alice@atlanta.com;maddr=MCast.Example.NET",
                "sip:alice@atlanta.com;maddr=mcast.example.net",
            ),
            (
                "sip:alice@atlanta.com;maddr=[2001:DB8::0:1]",
                "sip:alice@atlanta.com;maddr=[2001:db8::1]",
            ),
            (
                "sip:carol@chicago.com?SUBJECT=next",
                "sip:carol@chicago.com?subject=next",
            ),
        ] {
            assert!(equivalent_both_ways(a, b), "{a} ~ {b}");
        }
    }

    /// Whether `a` and `b` are equivalent, checking the answer is the same both ways.
    fn equivalent_both_ways(a: &str, b: &str) -> bool {
        let (ua, ub) = (
            Uri::parse(a.as_bytes()).unwrap(),
            Uri::parse(b.as_bytes()).unwrap(),
        );
        let there = ua.is_equivalent(&ub);
        assert_eq!(there, ub.is_equivalent(&ua), "{a} vs {b}: not symmetric");
        there
    }

    #[test]
    fn refusals() {
        for bad in [
            "sip:user@example.com; lr",
            "sip:",
            "sip:@host",
            "sip:host:99999",
            "sip:host;;lr",
            "<sip:host>",
            "sip:ho st",
            "sip:host:",
        ] {
            assert!(Uri::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}

/// Where the parts of a [`Uri`] are, relative to the value it was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UriIdx {
    Sip { raw: Sp, at: SipUriAt },
    Tel { raw: Sp, number: Sp, params: Sp },
    Other { raw: Sp },
}

impl<'a> Uri<'a> {
    pub(crate) fn index(&self, base: &[u8]) -> Option<UriIdx> {
        Some(match self {
            Uri::Sip(u) => UriIdx::Sip {
                raw: Sp::of(base, u.raw)?,
                at: u.at,
            },
            Uri::Tel(t) => UriIdx::Tel {
                raw: Sp::of(base, t.raw)?,
                number: Sp::of(base, t.number.as_bytes())?,
                params: Sp::of(base, t.params)?,
            },
            Uri::Other(o) => UriIdx::Other {
                raw: Sp::of(base, o.raw)?,
            },
        })
    }
    // Inlined for store forwarding (see `SipMessage::validate_into`).
    #[inline(always)]
    pub(crate) fn from_index(base: &'a [u8], idx: &UriIdx) -> Uri<'a> {
        match *idx {
            UriIdx::Sip { raw, at } => Uri::Sip(SipUri {
                raw: raw.get(base),
                at,
            }),
            UriIdx::Tel {
                raw,
                number,
                params,
            } => Uri::Tel(TelUri {
                raw: raw.get(base),
                number: number.str(base),
                params: params.get(base),
            }),
            UriIdx::Other { raw } => Uri::Other(OtherUri { raw: raw.get(base) }),
        }
    }
}
