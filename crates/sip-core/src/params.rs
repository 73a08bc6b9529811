//! Header parameters: `;name[=value]` lists after a header value (RFC 3261 `generic-param`),
//! with the optional whitespace the grammar allows around `;` and `=`.

use crate::index::Sp;
use crate::scan::{is_token, is_token_char, is_ws, quoted_end, skip_ws, unquote};
use std::borrow::Cow;

/// Where the value of a looked-up parameter is, as a range of the text parsed: `None` if
/// there is no such parameter, `Some(None)` for a flag.
pub(crate) type KeyAt = Option<Option<(usize, usize)>>;

/// One `name[=value]` parameter, borrowed from the header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    /// The name as written (compare case-insensitively).
    pub name: &'a str,
    /// The value as written: a quoted value keeps its quotes. `None` for a flag (`;lr`).
    pub value: Option<&'a [u8]>,
}

impl<'a> Param<'a> {
    /// The value with quotes and quoted-pairs removed.
    pub fn unquoted(&self) -> Option<Cow<'a, [u8]>> {
        self.value.map(|v| {
            if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
                unquote(&v[1..v.len() - 1])
            } else {
                Cow::Borrowed(v)
            }
        })
    }
}

/// A validated run of header parameters; iterate it or look one up by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Params<'a> {
    raw: &'a [u8],
}

impl<'a> Params<'a> {
    /// Parses parameters at the start of `s` (which must begin with `;` or be empty / start
    /// with whitespace then end). Returns the parameters, the unparsed rest, and the first
    /// parameter named `key` (ASCII, case-insensitive; empty for none) met on the way: the one every reader of the header asks for
    /// (`branch` of a Via, `tag` of From/To), found without a second walk.
    #[allow(clippy::type_complexity)]
    pub(crate) fn parse_finding(
        s: &'a [u8],
        key: &[u8],
    ) -> Result<(Params<'a>, &'a [u8], Option<Option<&'a [u8]>>), &'static str> {
        // One pass with inline loops: this runs for every Via, From and To received.
        let n = s.len();
        let mut i = skip_ws(s, 0);
        let mut end = 0;
        let mut found = None;
        while i < n && s[i] == b';' {
            i = skip_ws(s, i + 1);
            let name_start = i;
            while i < n && is_token_char(s[i]) {
                i += 1;
            }
            let name = &s[name_start..i];
            if name.is_empty() || (i < n && !matches!(s[i], b'=' | b';' | b',' | b' ' | b'\t')) {
                return Err("empty or invalid parameter name");
            }
            let after_name = i;
            let mut j = skip_ws(s, i);
            let value = if j < n && s[j] == b'=' {
                j = skip_ws(s, j + 1);
                let value_start = j;
                if j < n && s[j] == b'"' {
                    j = quoted_end(s, j).ok_or("unterminated quoted parameter value")?;
                } else {
                    while j < n && !matches!(s[j], b';' | b',' | b' ' | b'\t' | b'"') {
                        j += 1;
                    }
                }
                if j == value_start {
                    return Err("empty parameter value");
                }
                i = j;
                Some(&s[value_start..j])
            } else {
                i = after_name;
                None
            };
            if found.is_none() && name.len() == key.len() && name.eq_ignore_ascii_case(key) {
                found = Some(value);
            }
            end = i;
            i = skip_ws(s, i);
        }
        Ok((Params { raw: &s[..end] }, &s[end..], found))
    }

    /// The shape almost every received parameter list has, `;token[=token]` repeated with
    /// no whitespace, recognised in one pass: where the parameters end (the end of `s`, or
    /// a `,` that starts a list's next value) and where the value of the first parameter
    /// named `key` is (`Some(None)` for a flag), as offsets into `s`. `None` for anything
    /// else; [`parse_finding`](Self::parse_finding) then decides, and gives the same answer
    /// for what this accepts (debug builds check).
    // Inlined for store forwarding (see `SipMessage::validate_into`).
    #[inline(always)]
    pub(crate) fn parse_common(s: &[u8], key: &[u8]) -> Option<(usize, KeyAt)> {
        let token_end = |mut j: usize| {
            while j < s.len() && is_token_char(s[j]) {
                j += 1;
            }
            j
        };
        let mut i = 0;
        let mut found = None;
        while let Some(&c) = s.get(i) {
            match c {
                b';' => {}
                b',' => break,
                _ => return None,
            }
            let name_start = i + 1;
            let name_end = token_end(name_start);
            if name_end == name_start {
                return None;
            }
            let mut value = None;
            i = name_end;
            if s.get(i) == Some(&b'=') {
                let value_end = token_end(i + 1);
                if value_end == i + 1 {
                    return None;
                }
                value = Some((i + 1, value_end));
                i = value_end;
            }
            if found.is_none() && s[name_start..name_end].eq_ignore_ascii_case(key) {
                found = Some(value);
            }
        }
        Some((i, found))
    }

    /// Parses `s` as exactly a parameter list, nothing after it.
    pub(crate) fn parse_all(s: &'a [u8]) -> Result<Params<'a>, &'static str> {
        Params::parse_all_finding(s, b"").map(|(p, _)| p)
    }

    /// [`parse_all`](Self::parse_all) with [`parse_finding`](Self::parse_finding)'s lookup.
    #[allow(clippy::type_complexity)]
    pub(crate) fn parse_all_finding(
        s: &'a [u8],
        key: &[u8],
    ) -> Result<(Params<'a>, Option<Option<&'a [u8]>>), &'static str> {
        if let Some((end, found)) = Params::parse_common(s, key) {
            if end == s.len() {
                let found = found.map(|v| v.map(|(a, b)| &s[a..b]));
                let p = Params { raw: s };
                debug_assert_eq!(Ok((p, found)), Params::parse_all_general(s, key));
                return Ok((p, found));
            }
        }
        Params::parse_all_general(s, key)
    }

    /// [`parse_all_finding`](Self::parse_all_finding) for any input.
    #[allow(clippy::type_complexity)]
    fn parse_all_general(
        s: &'a [u8],
        key: &[u8],
    ) -> Result<(Params<'a>, Option<Option<&'a [u8]>>), &'static str> {
        let (p, rest, found) = Params::parse_finding(s, key)?;
        if !crate::scan::trim(rest).is_empty() {
            return Err("unexpected characters after parameters");
        }
        Ok((p, found))
    }

    pub(crate) fn index(&self, base: &[u8]) -> Option<Sp> {
        Sp::of(base, self.raw)
    }

    pub(crate) fn from_index(base: &'a [u8], sp: Sp) -> Params<'a> {
        Params { raw: sp.get(base) }
    }

    /// The parameters exactly as written, starting with `;`.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Every parameter in order.
    pub fn iter(&self) -> ParamIter<'a> {
        ParamIter { s: self.raw, i: 0 }
    }

    /// The first parameter named `name` (case-insensitive): `Some(None)` for a flag.
    pub fn get(&self, name: &str) -> Option<Option<&'a [u8]>> {
        let s = self.raw;
        let mut i = skip_ws(s, 0);
        while i < s.len() && s[i] == b';' {
            let (n, v, next) = step_raw(s, i).ok()?;
            if n.eq_ignore_ascii_case(name.as_bytes()) {
                return Some(v);
            }
            i = skip_ws(s, next);
        }
        None
    }

    /// The unquoted value of the first parameter named `name`.
    pub fn get_unquoted(&self, name: &str) -> Option<Cow<'a, [u8]>> {
        self.iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .and_then(|p| p.unquoted())
    }

    /// Whether a parameter named `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// Iterator over [`Params`].
#[derive(Debug, Clone)]
pub struct ParamIter<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = Param<'a>;
    fn next(&mut self) -> Option<Param<'a>> {
        let i = skip_ws(self.s, self.i);
        if i >= self.s.len() || self.s[i] != b';' {
            return None;
        }
        let (p, next) = step(self.s, i).ok()?;
        self.i = next;
        Some(p)
    }
}

/// Parses the parameter whose `;` is at `s[i]`; returns it and the index after it.
fn step(s: &[u8], i: usize) -> Result<(Param<'_>, usize), &'static str> {
    let (name, value, next) = step_raw(s, i)?;
    // Token characters are ASCII, so this cannot fail.
    let name = std::str::from_utf8(name).map_err(|_| "invalid parameter name")?;
    Ok((Param { name, value }, next))
}

/// [`step`] without turning the name into `&str`: name, value, index after.
#[allow(clippy::type_complexity)]
fn step_raw(s: &[u8], i: usize) -> Result<(&[u8], Option<&[u8]>, usize), &'static str> {
    let mut j = skip_ws(s, i + 1);
    let name_start = j;
    while j < s.len() && !matches!(s[j], b'=' | b';' | b',' | b' ' | b'\t') {
        j += 1;
    }
    let name = &s[name_start..j];
    if !is_token(name) {
        return Err("empty or invalid parameter name");
    }
    let after_name = j;
    j = skip_ws(s, j);
    if j < s.len() && s[j] == b'=' {
        j = skip_ws(s, j + 1);
        let vstart = j;
        if j < s.len() && s[j] == b'"' {
            j = quoted_end(s, j).ok_or("unterminated quoted parameter value")?;
        } else {
            while j < s.len() && !matches!(s[j], b';' | b',' | b' ' | b'\t' | b'"') {
                j += 1;
            }
        }
        let value = &s[vstart..j];
        if value.is_empty() {
            return Err("empty parameter value");
        }
        Ok((name, Some(value), j))
    } else {
        Ok((name, None, after_name))
    }
}

/// Where a parameter is in a validated [`Params::raw`]: the end of its name, the end of
/// the parameter (past its value, if any), and its value; an editor rewrites
/// `name_end..end` (the `=value` part) alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Located<'a> {
    pub name_end: usize,
    pub end: usize,
    pub value: Option<&'a [u8]>,
}

/// Where the first parameter named `name` (case-insensitive) is in `raw`, a validated
/// [`Params::raw`]; `None` if there is none.
pub(crate) fn locate<'a>(raw: &'a [u8], name: &[u8]) -> Option<Located<'a>> {
    let [found] = locate_each(raw, [name]);
    found
}

/// [`locate`] for several names in one walk over the parameters (the transport stamps
/// `rport` and `received` on every request it receives).
pub(crate) fn locate_each<'a, const N: usize>(
    raw: &'a [u8],
    names: [&[u8]; N],
) -> [Option<Located<'a>>; N] {
    let mut found = [None; N];
    let mut i = skip_ws(raw, 0);
    while i < raw.len() && raw[i] == b';' {
        let Ok((n, value, next)) = step_raw(raw, i) else {
            break;
        };
        for (slot, name) in found.iter_mut().zip(names) {
            if slot.is_none() && n.eq_ignore_ascii_case(name) {
                // `n` is a slice of `raw`: its end, as an offset.
                let name_end = (n.as_ptr() as usize) - (raw.as_ptr() as usize) + n.len();
                *slot = Some(Located {
                    name_end,
                    end: next,
                    value,
                });
            }
        }
        i = skip_ws(raw, next);
    }
    found
}

/// Whether `s` holds only whitespace.
#[allow(dead_code)]
pub(crate) fn only_ws(s: &[u8]) -> bool {
    s.iter().all(|&c| is_ws(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_around_separators() {
        let p = Params::parse_all(b" ; branch = z9hG4bK1 ;lr; q=\"a;b\"").unwrap();
        let v: Vec<_> = p.iter().collect();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].name, "branch");
        assert_eq!(v[0].value, Some(&b"z9hG4bK1"[..]));
        assert_eq!(v[1].value, None);
        assert_eq!(&*v[2].unquoted().unwrap(), b"a;b");
        assert_eq!(p.get("BRANCH"), Some(Some(&b"z9hG4bK1"[..])));
    }

    #[test]
    fn empty_parameters_are_refused() {
        assert!(Params::parse_all(b";;").is_err());
        assert!(Params::parse_all(b";a=").is_err());
        assert!(Params::parse_all(b";a=\"x").is_err());
        assert!(Params::parse_all(b";a x").is_err());
    }

    #[test]
    fn locate_finds_the_name_and_the_end_of_a_parameter() {
        let raw = b" ;branch=z9hG4bK1 ; RPORT ;received = 192.0.2.1;lr";
        let at = |name: &[u8]| locate(raw, name).map(|l| (l.name_end, l.end));
        assert_eq!(at(b"rport"), Some((25, 25)));
        let received = locate(raw, b"received").unwrap();
        assert_eq!(&raw[received.name_end..received.end], b" = 192.0.2.1");
        assert_eq!(received.value, Some(&b"192.0.2.1"[..]));
        assert_eq!(at(b"lr"), Some((raw.len(), raw.len())));
        assert_eq!(at(b"maddr"), None);
        assert_eq!(locate(b"", b"rport"), None);
        // One walk finds each name's first parameter.
        let [rport, received, maddr] = locate_each(raw, [b"rport", b"received", b"maddr"]);
        assert_eq!(rport.map(|l| (l.name_end, l.value)), Some((25, None)));
        assert_eq!(received, locate(raw, b"received"));
        assert_eq!(maddr, None);
    }
}
