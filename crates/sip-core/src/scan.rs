//! Character classes and small scanners of the RFC 3261 grammar (§25.1), shared by the
//! parsers. Tables are computed at compile time so a class test is one load.

/// The set of `chars`, plus letters and digits when `alnum`, as a lookup table.
pub(crate) const fn class(chars: &[u8], alnum: bool) -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < chars.len() {
        t[chars[i] as usize] = true;
        i += 1;
    }
    if alnum {
        let mut c = b'0';
        while c <= b'9' {
            t[c as usize] = true;
            c += 1;
        }
        c = b'a';
        while c <= b'z' {
            t[c as usize] = true;
            t[(c - 32) as usize] = true;
            c += 1;
        }
    }
    t
}

/// `token` (RFC 3261 §25.1).
static TOKEN: [bool; 256] = class(b"-.!%*_+`'~", true);
/// `word` (Call-ID), a superset of token.
static WORD: [bool; 256] = class(b"-.!%*_+`'~()<>:\\\"/[]?{}", true);

/// Is `c` a token character?
#[inline]
pub(crate) fn is_token_char(c: u8) -> bool {
    TOKEN[c as usize]
}

/// Is `s` a non-empty token?
#[inline]
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&c| TOKEN[c as usize])
}

/// Index of the first `c` in `s`. The slices of one header value are short: a plain loop
/// beats memchr's dispatch there; long scans (lines, bodies) use memchr.
#[inline]
pub(crate) fn find(s: &[u8], c: u8) -> Option<usize> {
    s.iter().position(|&b| b == c)
}

/// Index of the last `c` in `s` (see [`find`]).
#[inline]
pub(crate) fn rfind(s: &[u8], c: u8) -> Option<usize> {
    s.iter().rposition(|&b| b == c)
}

/// Index of the first byte at or after `i` whose class in `table` is 0. Eight bytes per
/// step while they are all in the class (one AND of eight table loads and one branch), so
/// the runs the parsers skip (names, hosts, URI text) cost about half of a byte loop.
#[inline]
pub(crate) fn run_of(s: &[u8], mut i: usize, table: &[u8; 256]) -> usize {
    while let Some(chunk) = s.get(i..).and_then(|r| r.first_chunk::<8>()) {
        let all = chunk.iter().fold(0xff, |acc, &c| acc & table[c as usize]);
        if all == 0 {
            break;
        }
        i += 8;
    }
    while i < s.len() && table[s[i] as usize] != 0 {
        i += 1;
    }
    i
}

/// A [`class`] as a [`run_of`] table (1 for members).
pub(crate) const fn run_table(class: [bool; 256]) -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = class[c] as u8;
        c += 1;
    }
    t
}

/// The bytes a Call-ID holds (`word` characters and the `@`), as a [`run_of`] table.
static CALL_ID: [u8; 256] = {
    let mut t = run_table(WORD);
    t[b'@' as usize] = 1;
    t
};

/// Is `s` a Call-ID, `word [ "@" word ]` (RFC 3261 §25.1)? The bytes are checked eight at
/// a time ([`run_of`]), then the `@` is looked for sixteen at a time: a third of the
/// instructions of a loop that classifies and counts byte by byte.
#[inline]
pub(crate) fn is_call_id(s: &[u8]) -> bool {
    if s.is_empty() || run_of(s, 0, &CALL_ID) != s.len() {
        return false;
    }
    // At most one `@`, with a word on both sides.
    match find_byte::<b'@'>(s, 0) {
        None => true,
        Some(at) => at > 0 && at + 1 < s.len() && find_byte::<b'@'>(s, at + 1).is_none(),
    }
}

/// Eight bytes (`s` holds exactly eight) as one word, first byte lowest.
#[inline]
pub(crate) fn word_of(s: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(s);
    u64::from_le_bytes(w)
}

/// The high bit of each byte of `w` equal to `b` (SWAR). The lowest flag is always a true
/// match and the result is non-zero exactly when some byte matches; flags above the first
/// match may be false.
#[inline]
fn flags_of(w: u64, b: u8) -> u64 {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let x = w ^ (LO * u64::from(b));
    x.wrapping_sub(LO) & !x & HI
}

/// Index of the first `B` in `s` at or after `from`: sixteen bytes per step (SWAR, safe
/// code). Header lines are a few dozen bytes; for them this costs a fraction of a call into
/// memchr's vector routine, whose set-up dominates at that length.
#[inline]
pub(crate) fn find_byte<const B: u8>(s: &[u8], from: usize) -> Option<usize> {
    find_flagged(s, from, |w| flags_of(w, B), |c| c == B)
}

/// Index of the first C0 control byte (below 0x20) in `s` at or after `from`, sixteen
/// bytes per step as [`find_byte`]. The head parser uses it to find a line's end and to
/// refuse, on the way, what RFC 3261 allows in no header value (a bare CR, NUL; §25: only
/// HTAB, which the caller steps over). DEL is not looked for: it confuses no framing, and
/// the second test per word cost 1.5–2.5 % of a parse.
#[inline]
pub(crate) fn find_control(s: &[u8], from: usize) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    // A byte below 0x20 borrows in `w - 0x20…` with its high bit clear. As in `flags_of`,
    // the lowest flag is exact.
    let below_space = |w: u64| w.wrapping_sub(LO * 0x20) & !w & HI;
    find_flagged(s, from, below_space, |c| c < 0x20)
}

/// The first byte at or after `from` that `scalar` accepts, sixteen bytes per step with
/// `flags` (high bit set per matching byte of a word; the lowest flag exact). Header lines
/// are a few dozen bytes; for them this costs a fraction of a call into memchr's vector
/// routine, whose set-up dominates at that length.
#[inline(always)]
fn find_flagged(
    s: &[u8],
    from: usize,
    flags: impl Fn(u64) -> u64,
    scalar: impl Fn(u8) -> bool,
) -> Option<usize> {
    let rest = s.get(from..)?;
    // Sixteen bytes per step: a header name and most values end within one or two steps,
    // so the loop's exit is mispredicted less often than with eight (2 % faster parses).
    let mut chunks = rest.chunks_exact(16);
    let mut at = from;
    for chunk in &mut chunks {
        let (lo, hi) = (flags(word_of(&chunk[..8])), flags(word_of(&chunk[8..])));
        if lo | hi != 0 {
            let k = if lo != 0 {
                lo.trailing_zeros() / 8
            } else {
                8 + hi.trailing_zeros() / 8
            };
            return Some(at + k as usize);
        }
        at += 16;
    }
    chunks
        .remainder()
        .iter()
        .position(|&c| scalar(c))
        .map(|k| at + k)
}

/// The first byte of a header value given to a builder that no header value may hold, as
/// the head parser reads them: a CR or LF (header injection), or another C0 control byte
/// (RFC 3261 §25) that is not escaped as a quoted-pair. HTAB is whitespace. Sixteen bytes
/// per step ([`find_control`]): every value a message is built with is checked.
#[inline]
pub(crate) fn forbidden_in_value(s: &[u8]) -> Option<u8> {
    let mut from = 0;
    while let Some(i) = find_control(s, from) {
        match s[i] {
            b'\t' => {}
            c @ (b'\r' | b'\n') => return Some(c),
            _ if quoted_pair_at(s, i) => {}
            c => return Some(c),
        }
        from = i + 1;
    }
    None
}

/// Is byte `i` of `s` escaped by a backslash (an odd run of them just before it)?
#[cold]
pub(crate) fn quoted_pair_at(s: &[u8], i: usize) -> bool {
    let run = s[..i].iter().rev().take_while(|&&c| c == b'\\').count();
    run % 2 == 1
}

/// Index of the first line feed in `s` at or after `from` (see [`find_byte`]).
#[inline]
pub(crate) fn find_lf(s: &[u8], from: usize) -> Option<usize> {
    find_byte::<b'\n'>(s, from)
}

/// Space or horizontal tab.
#[inline]
pub(crate) fn is_ws(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// Index of the first byte at or after `i` that is not SP/HTAB.
#[inline]
pub(crate) fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_ws(s[i]) {
        i += 1;
    }
    i
}

/// `s` without leading and trailing SP/HTAB.
#[inline]
pub(crate) fn trim(s: &[u8]) -> &[u8] {
    let mut a = 0;
    let mut b = s.len();
    while a < b && is_ws(s[a]) {
        a += 1;
    }
    while b > a && is_ws(s[b - 1]) {
        b -= 1;
    }
    &s[a..b]
}

/// Given `s[start] == b'"'`, the index just past the closing quote of the quoted-string,
/// honouring `\` quoted-pairs; `None` if it is not terminated.
pub(crate) fn quoted_end(s: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            b'\r' | b'\n' => return None,
            _ => i += 1,
        }
    }
    None
}

/// The contents of a quoted-string (without its quotes) with quoted-pairs resolved.
pub(crate) fn unquote(inner: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !inner.contains(&b'\\') {
        return std::borrow::Cow::Borrowed(inner);
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        if inner[i] == b'\\' && i + 1 < inner.len() {
            i += 1;
        }
        out.push(inner[i]);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

/// Splits a header value at top-level commas: commas inside quoted strings, `<...>` and
/// (for auth values) nowhere else are separators. Yields trimmed, non-empty items; an empty
/// item (`a,,b`) is reported as an empty slice so callers can refuse it.
pub(crate) struct CommaSplit<'a> {
    s: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> CommaSplit<'a> {
    pub(crate) fn new(s: &'a [u8]) -> Self {
        CommaSplit {
            s,
            pos: 0,
            done: false,
        }
    }
}

impl<'a> Iterator for CommaSplit<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.done {
            return None;
        }
        let s = self.s;
        let start = self.pos;
        let mut i = start;
        // Jump between the only bytes that matter: `,` and the openers of `"..."` / `<...>`.
        while let Some(k) = memchr::memchr3(b',', b'"', b'<', &s[i..]) {
            let at = i + k;
            match s[at] {
                b',' => {
                    self.pos = at + 1;
                    return Some(trim(&s[start..at]));
                }
                b'"' => match quoted_end(s, at) {
                    Some(e) => i = e,
                    None => break,
                },
                _ => match memchr::memchr(b'>', &s[at..]) {
                    Some(g) => i = at + g + 1,
                    None => break,
                },
            }
        }
        self.done = true;
        Some(trim(&s[start..]))
    }
}

/// Parses a run of ASCII digits as a `u64`, refusing empty input, non-digits and overflow.
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

/// Like [`parse_u64`] but saturating at `u32::MAX` instead of refusing overflow (RFC 3261
/// delta-seconds: a value too large means "as long as possible").
pub(crate) fn parse_u32_saturating(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(parse_u64(s).map_or(u32::MAX, |v| u32::try_from(v).unwrap_or(u32::MAX)))
}

/// Decodes `%HH` escapes once; `%` not followed by two hex digits is kept as is.
pub(crate) fn percent_decode(s: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !s.contains(&b'%') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Does every `%` in `s` start a valid `%HH` escape?
pub(crate) fn escapes_valid(s: &[u8]) -> bool {
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            if i + 2 >= s.len() {
                return false;
            }
            if hex(s[i + 1]).is_none() || hex(s[i + 2]).is_none() {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

#[cfg(test)]
mod newline_tests {
    use super::find_lf;

    fn all(s: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut from = 0;
        while let Some(at) = find_lf(s, from) {
            out.push(at);
            from = at + 1;
        }
        out
    }

    #[test]
    fn finds_every_line_feed_at_every_alignment() {
        for len in 0..40 {
            for mask in [0u64, 1, 0x5555_5555_5555, 0x8421_0842_1084, u64::MAX] {
                let s: Vec<u8> = (0..len)
                    .map(|i| {
                        if mask >> (i % 64) & 1 == 1 {
                            b'\n'
                        } else {
                            b'a' + (i % 7) as u8
                        }
                    })
                    .collect();
                let want: Vec<usize> = (0..len).filter(|&i| s[i] == b'\n').collect();
                assert_eq!(all(&s), want, "{len} {mask:x}");
            }
        }
        // Bytes that differ from a line feed by one bit, next to one.
        let s = b"\x0b\x0a\x08\x8a\x0a\xff\x0a\x00\x0a\x0a\x0e";
        let want: Vec<usize> = (0..s.len()).filter(|&i| s[i] == b'\n').collect();
        assert_eq!(all(s), want);
        assert_eq!(find_lf(b"ab", 3), None);
        assert_eq!(find_lf(b"ab", 2), None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_happens_once() {
        assert_eq!(&*percent_decode(b"value%25%34%31"), b"value%41");
        assert_eq!(&*percent_decode(b"%75se%72"), b"user");
        assert_eq!(&*percent_decode(b"a%2"), b"a%2");
        assert_eq!(&*percent_decode(b"%"), b"%");
        assert!(escapes_valid(b"a%20b"));
        assert!(!escapes_valid(b"a%2"));
        assert!(!escapes_valid(b"a%zz"));
    }

    #[test]
    fn runs_stop_at_the_first_byte_outside_the_class() {
        let mut letters = [0u8; 256];
        letters[usize::from(b'a')] = 1;
        for len in 0..30 {
            for stop in 0..=len {
                let mut v = vec![b'a'; len];
                if stop < len {
                    v[stop] = b':';
                }
                for from in 0..=stop {
                    assert_eq!(run_of(&v, from, &letters), stop, "{len} {stop} {from}");
                }
            }
        }
        assert_eq!(run_of(b"ab", 5, &letters), 5);
    }

    #[test]
    fn control_bytes_in_values_are_found_at_every_position() {
        for len in 0..20 {
            let clean = vec![b'a'; len];
            assert_eq!(forbidden_in_value(&clean), None);
            for at in 0..len {
                for c in [b'\r', b'\n', 0, 0x1f] {
                    let mut v = clean.clone();
                    v[at] = c;
                    assert_eq!(forbidden_in_value(&v), Some(c), "{len} {at}");
                }
            }
        }
        // HTAB, DEL and bytes one bit away from CR or LF above the C0 range are allowed.
        assert_eq!(forbidden_in_value(b"a\tb\x7f\x8a\x8d\x2a\x2d"), None);
        // A quoted-pair escapes a control byte other than CR and LF (as RFC 4475 intmeth).
        assert_eq!(forbidden_in_value(b"\"a\\\x01b\""), None);
        assert_eq!(forbidden_in_value(b"\"a\\\\\x01b\""), Some(1));
        assert_eq!(forbidden_in_value(b"\"a\\\r\""), Some(b'\r'));
    }

    #[test]
    fn call_ids_are_word_at_word() {
        for ok in [
            &b"a84b4c76e66710@pc33.atlanta.com"[..],
            b"abc",
            b"a@b",
            b"()<>:\\\"/[]?{}",
        ] {
            assert!(is_call_id(ok), "{}", String::from_utf8_lossy(ok));
        }
        for bad in [
            &b""[..],
            b"@b",
            b"a@",
            b"@",
            b"a@b@c",
            b"a b",
            b"a;b",
            b"\xc3\xa9",
        ] {
            assert!(!is_call_id(bad), "{}", String::from_utf8_lossy(bad));
        }
        // Every length and position, so each step of the eight- and sixteen-byte scans
        // and their tails sees the `@` and the bad byte.
        for len in 1..40 {
            let word = vec![b'x'; len];
            assert!(is_call_id(&word));
            for at in 0..len {
                let mut one = word.clone();
                one[at] = b'@';
                assert_eq!(is_call_id(&one), at > 0 && at + 1 < len, "{len} @{at}");
                for second in at + 1..len {
                    let mut two = one.clone();
                    two[second] = b'@';
                    assert!(!is_call_id(&two), "{len} @{at} @{second}");
                }
                for bad in [b' ', b';', b'\x80', 0] {
                    let mut v = word.clone();
                    v[at] = bad;
                    assert!(!is_call_id(&v), "{len} {bad:#x} at {at}");
                }
            }
        }
    }

    #[test]
    fn comma_split_respects_quotes_and_brackets() {
        let v: Vec<&[u8]> = CommaSplit::new(b"\"a, b\" <sip:x@y;p=1,2>, sip:z@w , ").collect();
        assert_eq!(v, vec![&b"\"a, b\" <sip:x@y;p=1,2>"[..], b"sip:z@w", b""]);
    }

    #[test]
    fn numbers_refuse_overflow() {
        assert_eq!(parse_u64(b"0009"), Some(9));
        assert_eq!(parse_u64(b"36893488147419103232"), None);
        assert_eq!(parse_u32_saturating(b"280297596632815"), Some(u32::MAX));
        assert_eq!(parse_u64(b"-1"), None);
    }
}
