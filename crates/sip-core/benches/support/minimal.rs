//! A reference for the parse bench, not a parser: the least work the `ucma/` path does,
//! written for nothing but the shapes of the three bench messages.
//!
//! It makes the same checks on them (a request or status line, every header line a token
//! name and a value free of control bytes, Content-Length against the body, the single
//! headers given once, the top Via's sent-protocol, sent-by and parameters, From and To as
//! `["display"] <sip-uri>;params`, the Call-ID as `word[@word]`, the CSeq number and its
//! method against the request's, Max-Forwards 0-255, the Request-URI a SIP URI) and gives
//! the same typed values, but it knows no folding, compact names, comma lists, escapes,
//! IPv6, quoted parameter values or other URI schemes, builds no message and keeps its
//! fields on the stack. Anything else is `None`. How far `ucma/` is above it is what
//! generality and a message that can be kept, changed and sent on cost.

/// A 256-entry membership table from a predicate over bytes.
macro_rules! table {
    (|$c:ident| $e:expr) => {{
        let mut t = [false; 256];
        let mut i = 0;
        while i < 256 {
            let $c = i as u8;
            t[i] = $e;
            i += 1;
        }
        t
    }};
}

/// Is `c` in `set`? (For the tables, built at compile time.)
const fn among(set: &[u8], c: u8) -> bool {
    let mut i = 0;
    while i < set.len() {
        if set[i] == c {
            return true;
        }
        i += 1;
    }
    false
}

// RFC 3261 §25.1 classes (the parts these messages use).
static TOKEN: [bool; 256] = table!(|c| c.is_ascii_alphanumeric() || among(b"-.!%*_+`'~", c));
static WORD: [bool; 256] =
    table!(|c| c.is_ascii_alphanumeric() || among(b"-.!%*_+`'~()<>:\\\"/[]?{}", c));
static HOST: [bool; 256] = table!(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.');
static USER: [bool; 256] = table!(|c| c.is_ascii_alphanumeric() || among(b"-_.!~*'()%&=+$,;?/", c));
static PARAM: [bool; 256] = table!(|c| c.is_ascii_alphanumeric() || among(b"-_.!~*'()%[]/:&+$", c));
static DIGIT: [bool; 256] = table!(|c| c.is_ascii_digit());
static WS: [bool; 256] = table!(|c| c == b' ' || c == b'\t');

/// The end of the run of `class` bytes from `i`.
#[inline(always)]
fn run(s: &[u8], mut i: usize, class: &[bool; 256]) -> usize {
    while i < s.len() && class[usize::from(s[i])] {
        i += 1;
    }
    i
}

/// The value of a run of digits.
fn number(digits: &[u8]) -> u64 {
    digits.iter().fold(0, |n, &c| n * 10 + u64::from(c - b'0'))
}

/// The first byte below 0x20 from `from`, eight bytes per step.
#[inline(always)]
fn find_control(s: &[u8], from: usize) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while let Some(word) = s.get(i..).and_then(|r| r.first_chunk::<8>()) {
        let w = u64::from_le_bytes(*word);
        let below = w.wrapping_sub(LO * 0x20) & !w & HI;
        if below != 0 {
            return Some(i + (below.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    (i..s.len()).find(|&k| s[k] < 0x20)
}

/// A part of a value, as offsets.
type Range = (usize, usize);

/// The headers this reads, as indices into its table of first occurrences.
#[derive(Clone, Copy, PartialEq)]
enum Name {
    Via,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    ContentLength,
    Other,
}

#[inline(always)]
fn name_of(n: &[u8]) -> Name {
    let is = |k: &[u8]| n.eq_ignore_ascii_case(k);
    match (n.len(), n[0] | 0x20) {
        (3, b'v') if is(b"via") => Name::Via,
        (4, b'f') if is(b"from") => Name::From,
        (2, b't') if is(b"to") => Name::To,
        (7, b'c') if is(b"call-id") => Name::CallId,
        (4, b'c') if is(b"cseq") => Name::CSeq,
        (12, b'm') if is(b"max-forwards") => Name::MaxForwards,
        (14, b'c') if is(b"content-length") => Name::ContentLength,
        _ => Name::Other,
    }
}

/// `;name[=token]` parameters from `i`: where they end, and the value of `key`.
#[inline(always)]
fn params(s: &[u8], mut i: usize, key: &[u8]) -> Option<(usize, Option<Range>)> {
    let mut found = None;
    while s.get(i) == Some(&b';') {
        let (name, name_end) = (i + 1, run(s, i + 1, &TOKEN));
        if name_end == name {
            return None;
        }
        i = name_end;
        let mut value = None;
        if s.get(i) == Some(&b'=') {
            let end = run(s, i + 1, &TOKEN);
            if end == i + 1 {
                return None;
            }
            value = Some((i + 1, end));
            i = end;
        }
        if found.is_none() && s[name..name_end].eq_ignore_ascii_case(key) {
            found = value;
        }
    }
    Some((i, found))
}

/// `host[:port]` from `i`: where it ends.
#[inline(always)]
fn host_port(s: &[u8], i: usize) -> Option<usize> {
    let host_end = run(s, i, &HOST);
    if host_end == i {
        return None;
    }
    if s.get(host_end) != Some(&b':') {
        return Some(host_end);
    }
    let end = run(s, host_end + 1, &DIGIT);
    let digits = &s[host_end + 1..end];
    (!digits.is_empty() && digits.len() <= 5 && number(digits) <= 65_535).then_some(end)
}

/// `sip[s]:[user@]host[:port][;params]` from `i`: where it ends.
#[inline(always)]
fn sip_uri(s: &[u8], i: usize) -> Option<usize> {
    let rest = &s[i..];
    let mut j = if rest.len() > 4 && rest[..4].eq_ignore_ascii_case(b"sip:") {
        i + 4
    } else if rest.len() > 5 && rest[..5].eq_ignore_ascii_case(b"sips:") {
        i + 5
    } else {
        return None;
    };
    let user_end = run(s, j, &USER);
    if s.get(user_end) == Some(&b'@') {
        j = user_end + 1;
    }
    j = host_port(s, j)?;
    while s.get(j) == Some(&b';') {
        let end = run(s, j + 1, &PARAM);
        if end == j + 1 {
            return None;
        }
        j = end;
        if s.get(j) == Some(&b'=') {
            j = run(s, j + 1, &PARAM);
        }
    }
    Some(j)
}

/// `["display"] <sip-uri>;params`: the URI's range and the tag's.
#[inline(always)]
fn name_addr(s: &[u8]) -> Option<(Range, Option<Range>)> {
    let mut i = 0;
    if s.first() == Some(&b'"') {
        i = 1 + memchr::memchr(b'"', &s[1..])? + 1;
        i = run(s, i, &WS);
    }
    if s.get(i) != Some(&b'<') {
        return None;
    }
    let uri_end = sip_uri(s, i + 1)?;
    if s.get(uri_end) != Some(&b'>') {
        return None;
    }
    let (end, tag) = params(s, uri_end + 1, b"tag")?;
    (end == s.len()).then_some(((i + 1, uri_end), tag))
}

/// The bench's `ucma` sum (branch, From tag, To URI, Call-ID lengths and CSeq number) for
/// one of the bench messages, or `None` for anything it does not take (see the module doc).
pub fn recognise(b: &[u8]) -> Option<usize> {
    let lf = memchr::memchr(b'\n', b)?;
    let line = b[..lf].strip_suffix(b"\r")?;
    let method = if let Some(status) = line.strip_prefix(b"SIP/2.0 ") {
        let ok =
            status.len() > 3 && status[..3].iter().all(u8::is_ascii_digit) && status[3] == b' ';
        if !ok || status[4..].iter().any(|&c| c < 0x20 && c != b'\t') {
            return None;
        }
        None
    } else {
        let method_end = run(line, 0, &TOKEN);
        let uri = line.get(method_end + 1..)?.strip_suffix(b" SIP/2.0")?;
        if method_end == 0 || line[method_end] != b' ' || sip_uri(uri, 0)? != uri.len() {
            return None;
        }
        Some(&line[..method_end])
    };
    // Header lines: (name, value start, value end), and where each read header first is.
    let mut fields = [(Name::Other, 0usize, 0usize); 32];
    let mut count = 0;
    let mut first = [usize::MAX; 7];
    let mut pos = lf + 1;
    let body_at = loop {
        if b.get(pos) == Some(&b'\r') {
            (b.get(pos + 1) == Some(&b'\n')).then_some(())?;
            break pos + 2;
        }
        let name_end = run(b, pos, &TOKEN);
        let colon = run(b, name_end, &WS);
        if name_end == pos || b.get(colon) != Some(&b':') {
            return None;
        }
        let name = name_of(&b[pos..name_end]);
        let start = run(b, colon + 1, &WS);
        let cr = find_control(b, start)?;
        // Only CR LF ends a line here, and a line that continues (folding) is refused.
        if b[cr] != b'\r'
            || b.get(cr + 1) != Some(&b'\n')
            || matches!(b.get(cr + 2), Some(b' ' | b'\t'))
        {
            return None;
        }
        let mut end = cr;
        while end > start && matches!(b[end - 1], b' ' | b'\t') {
            end -= 1;
        }
        if count == fields.len() {
            return None;
        }
        if name != Name::Other {
            let slot = &mut first[name as usize];
            if *slot == usize::MAX {
                *slot = count;
            } else if name != Name::Via {
                return None;
            }
        }
        fields[count] = (name, start, end);
        count += 1;
        pos = cr + 2;
    };
    let value = |name: Name| -> Option<&[u8]> {
        let (_, start, end) = fields.get(first[name as usize])?;
        Some(&b[*start..*end])
    };
    if let Some(length) = value(Name::ContentLength) {
        if length.is_empty() || length.len() > 9 || run(length, 0, &DIGIT) != length.len() {
            return None;
        }
        if body_at + number(length) as usize > b.len() {
            return None;
        }
    }
    // The top Via: SIP/2.0/transport SP host[:port];params.
    let via = value(Name::Via)?;
    if via.len() < 9 || !via[..8].eq_ignore_ascii_case(b"SIP/2.0/") {
        return None;
    }
    let transport_end = run(via, 8, &TOKEN);
    if transport_end == 8 || via.get(transport_end) != Some(&b' ') {
        return None;
    }
    let sent_by_end = host_port(via, transport_end + 1)?;
    let (params_end, branch) = params(via, sent_by_end, b"branch")?;
    if params_end != via.len() && via[params_end] != b',' {
        return None;
    }
    let (_, from_tag) = name_addr(value(Name::From)?)?;
    let ((to_uri, to_uri_end), _) = name_addr(value(Name::To)?)?;
    let call_id = value(Name::CallId)?;
    let word_end = run(call_id, 0, &WORD);
    let end = match call_id.get(word_end) {
        Some(b'@') => run(call_id, word_end + 1, &WORD),
        _ => word_end,
    };
    if word_end == 0 || end != call_id.len() {
        return None;
    }
    let cseq = value(Name::CSeq)?;
    let digits = run(cseq, 0, &DIGIT);
    let method_at = run(cseq, digits, &WS);
    let cseq_method = &cseq[method_at..];
    if digits == 0 || digits > 10 || method_at == digits || cseq_method.is_empty() {
        return None;
    }
    let seq = number(&cseq[..digits]);
    if seq > u64::from(u32::MAX) || run(cseq_method, 0, &TOKEN) != cseq_method.len() {
        return None;
    }
    if method.is_some_and(|m| m != cseq_method) {
        return None;
    }
    if let Some(hops) = value(Name::MaxForwards) {
        if hops.is_empty()
            || hops.len() > 3
            || run(hops, 0, &DIGIT) != hops.len()
            || number(hops) > 255
        {
            return None;
        }
    }
    let len = |range: Option<Range>| range.map_or(0, |(a, b)| b - a);
    Some(len(branch) + len(from_tag) + (to_uri_end - to_uri) + call_id.len() + seq as usize)
}
