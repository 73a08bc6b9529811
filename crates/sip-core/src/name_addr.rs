//! `name-addr` / `addr-spec` values (From, To, Contact, Route, Record-Route, Refer-To,
//! Referred-By, P-Asserted-Identity …): an optional display name, a URI and header parameters.

use crate::index::Sp;
use crate::params::Params;
use crate::scan::{find, find_byte, is_token_char, is_ws, quoted_end, skip_ws, trim, unquote};
use crate::uri::Uri;
use crate::uri::{SipUriAt, UriIdx};
use crate::ParseError;
use std::borrow::Cow;

/// A display name as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisplayName<'a> {
    /// A quoted-string; the slice is what is between the quotes, quoted-pairs still escaped.
    /// It may hold any byte the grammar allows (UTF-8, and NUL/BEL/DEL as quoted-pairs).
    Quoted(&'a [u8]),
    /// One or more tokens separated by whitespace (`Alice Smith <sip:…>`).
    Tokens(&'a [u8]),
}

impl<'a> DisplayName<'a> {
    /// The name with quoting undone (`\"` becomes `"`); `%` is never an escape here.
    pub fn decoded(&self) -> Cow<'a, [u8]> {
        match *self {
            DisplayName::Quoted(s) => unquote(s),
            DisplayName::Tokens(s) => Cow::Borrowed(s),
        }
    }
}

/// A parsed name-addr or addr-spec with its header parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    display: Option<DisplayName<'a>>,
    uri: Uri<'a>,
    params: Params<'a>,
    bracketed: bool,
    /// The `tag` value, found while the parameters were validated.
    tag: Option<&'a [u8]>,
}

impl<'a> NameAddr<'a> {
    /// Parses one value (one item of a comma list).
    ///
    /// Without `<>`, parameters after the URI belong to the header, not to the URI (RFC 3261
    /// §20.10), and a URI holding `,` `?` or `;` is refused: it must be bracketed.
    pub fn parse(value: &'a [u8], header: &'static str) -> Result<NameAddr<'a>, ParseError> {
        if let Some(idx) = NameAddrIdx::parse_common(value) {
            let n = NameAddr::from_index(value, &idx);
            debug_assert_eq!(Ok(n), NameAddr::parse_general(value, header));
            return Ok(n);
        }
        NameAddr::parse_general(value, header)
    }

    /// [`parse`](Self::parse), keeping only where the parts are (`None` when they cannot
    /// be kept: a value longer than 64 KiB). The common shape goes straight to offsets.
    // Inlined for store forwarding (see `SipMessage::validate_into`).
    #[inline(always)]
    pub(crate) fn parse_index(
        value: &'a [u8],
        header: &'static str,
    ) -> Result<Option<NameAddrIdx>, ParseError> {
        if let Some(idx) = NameAddrIdx::parse_common(value) {
            debug_assert_eq!(
                Ok(NameAddr::from_index(value, &idx)),
                NameAddr::parse_general(value, header)
            );
            return Ok(Some(idx));
        }
        NameAddr::parse_general(value, header).map(|n| n.index(value))
    }

    /// [`parse`](Self::parse) for any input.
    fn parse_general(value: &'a [u8], header: &'static str) -> Result<NameAddr<'a>, ParseError> {
        let s = trim(value);
        let err = |why| ParseError::header(header, why);
        let (display, lt) = if s.first() == Some(&b'"') {
            let q = quoted_end(s, 0).ok_or_else(|| err("unterminated quoted display name"))?;
            let lt = skip_ws(s, q);
            if s.get(lt) != Some(&b'<') {
                return Err(err("quoted display name without <URI>"));
            }
            (Some(DisplayName::Quoted(&s[1..q - 1])), Some(lt))
        } else {
            // An unquoted value is a name-addr when its `<` comes before any `;` or `"`:
            // a display name is tokens (no `;`, no `"`), while an addr-spec's header
            // parameters may hold a `<` in a quoted value (RFC 3261 §25.1: gen-value =
            // quoted-string; RFC 5626 `+sip.instance="<urn:…>"`), which opens no address.
            match s.iter().position(|&c| matches!(c, b'<' | b';' | b'"')) {
                Some(lt) if s[lt] == b'<' => {
                    let name = trim(&s[..lt]);
                    if !name.iter().all(|&c| is_token_char(c) || is_ws(c)) {
                        return Err(err("display name must be tokens or quoted"));
                    }
                    let d = (!name.is_empty()).then_some(DisplayName::Tokens(name));
                    (d, Some(lt))
                }
                _ => (None, None),
            }
        };
        match lt {
            Some(lt) => {
                let gt = find(&s[lt..], b'>')
                    .map(|g| g + lt)
                    .ok_or_else(|| err("missing >"))?;
                let uri = Uri::parse(&s[lt + 1..gt]).map_err(|e| e.in_header(header))?;
                let (params, tag) = Params::parse_all_finding(&s[gt + 1..], b"tag").map_err(err)?;
                Ok(NameAddr {
                    display,
                    uri,
                    params,
                    bracketed: true,
                    tag: tag.flatten(),
                })
            }
            None => {
                let end = find(s, b';').unwrap_or(s.len());
                let uri_text = trim(&s[..end]);
                if uri_text.contains(&b'?') || uri_text.contains(&b',') {
                    return Err(err("URI with ? or , must be enclosed in <>"));
                }
                let uri = Uri::parse(uri_text).map_err(|e| e.in_header(header))?;
                let (params, tag) = Params::parse_all_finding(&s[end..], b"tag").map_err(err)?;
                Ok(NameAddr {
                    display: None,
                    uri,
                    params,
                    bracketed: false,
                    tag: tag.flatten(),
                })
            }
        }
    }

    /// The display name, if any.
    pub fn display_name(&self) -> Option<DisplayName<'a>> {
        self.display
    }
    /// The URI.
    pub fn uri(&self) -> &Uri<'a> {
        &self.uri
    }
    /// Header parameters after the address (`;tag=…`, `;expires=…`).
    pub fn params(&self) -> Params<'a> {
        self.params
    }
    /// The `tag` parameter (From/To).
    pub fn tag(&self) -> Option<&'a [u8]> {
        self.tag
    }
    /// Was the URI written inside `<>`?
    pub fn is_bracketed(&self) -> bool {
        self.bracketed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let n = NameAddr::parse(b"\"J \\\"R\\\" R\" <sip:j@x>;tag=1", "To").unwrap();
        assert_eq!(&*n.display_name().unwrap().decoded(), b"J \"R\" R");
        assert_eq!(n.tag(), Some(&b"1"[..]));
        let n = NameAddr::parse(b"caller<sip:caller@example.com>;tag=323", "From").unwrap();
        assert_eq!(n.display_name(), Some(DisplayName::Tokens(b"caller")));
        let n =
            NameAddr::parse(b"sip:+19725552222@gw1.example.net;unknownparam", "Contact").unwrap();
        assert!(n.params().contains("unknownparam"));
        assert_eq!(n.uri().as_sip().unwrap().params().count(), 0);
        let n = NameAddr::parse(
            b"<sip:+19725552222@gw1.example.net;unknownparam>",
            "Contact",
        )
        .unwrap();
        assert!(n.params().is_empty());
        assert_eq!(n.uri().as_sip().unwrap().params().count(), 1);
    }

    /// RFC 3261 §25.1: an addr-spec's header parameter may be a quoted-string holding `<`
    /// (`generic-param`, `gen-value = quoted-string`); only a `<` before any `;` or `"`
    /// opens a name-addr.
    #[test]
    fn a_quoted_lt_in_an_addr_spec_param_opens_no_address() {
        let n = NameAddr::parse(b"sip:a@example.com;tag=1;x-note=\"<hi>\"", "From").unwrap();
        assert!(!n.is_bracketed());
        assert_eq!(n.display_name(), None);
        assert_eq!(n.uri().as_bytes(), b"sip:a@example.com");
        assert_eq!(n.tag(), Some(&b"1"[..]));
        assert_eq!(n.params().get("x-note"), Some(Some(&b"\"<hi>\""[..])));
        // A display name still takes tokens only.
        assert!(NameAddr::parse(b"Al;ice <sip:a@example.com>", "From").is_err());
        assert!(NameAddr::parse(b"Al\"ice\" <sip:a@example.com>", "From").is_err());
    }

    #[test]
    fn refusals() {
        for bad in [
            &b"\"Mr. J. User <sip:j.user@example.com>"[..],
            b"Bell, Alexander <sip:a.g.bell@example.com>",
            b"\"Watson, Thomas\" < sip:t.watson@example.org >",
            b"sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            b"\"Joe\" <sip:joe@example.org>;;;;",
        ] {
            assert!(
                NameAddr::parse(bad, "To").is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}

/// Where the parts of a [`NameAddr`] are (see [`crate::index`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NameAddrIdx {
    display: Option<(bool, Sp)>,
    uri: UriIdx,
    params: Sp,
    bracketed: bool,
    tag: Option<Sp>,
}

impl NameAddrIdx {
    /// The shape almost every From, To and route value has, recognised in one pass and
    /// straight into offsets: an optional quoted display name without escapes, `<`, a URI
    /// of the common shape (see `SipUriAt::parse_common`), `>`, and a parameter list of the
    /// common shape. `None` for anything else: the general parser then decides, and gives
    /// the same answer for what this accepts (debug builds check).
    // Inlined for store forwarding (see `SipMessage::validate_into`).
    #[inline(always)]
    fn parse_common(s: &[u8]) -> Option<NameAddrIdx> {
        if s.len() > usize::from(u16::MAX) {
            return None;
        }
        let (display, lt) = match *s.first()? {
            b'<' => (None, 0),
            b'"' => {
                let close = 1 + find(&s[1..], b'"')?;
                if s[1..close]
                    .iter()
                    .any(|&c| matches!(c, b'\\' | b'\r' | b'\n'))
                {
                    return None;
                }
                let lt = skip_ws(s, close + 1);
                (s.get(lt) == Some(&b'<')).then_some(())?;
                (Some((true, Sp::new(1, close))), lt)
            }
            _ => return None,
        };
        let gt = find_byte::<b'>'>(s, lt)?;
        let at = SipUriAt::parse_common(&s[lt + 1..gt])?;
        let (end, tag) = Params::parse_common(&s[gt + 1..], b"tag")?;
        let params_end = gt + 1 + end;
        (params_end == s.len()).then_some(())?;
        Some(NameAddrIdx {
            display,
            uri: UriIdx::Sip {
                raw: Sp::new(lt + 1, gt),
                at,
            },
            params: Sp::new(gt + 1, params_end),
            bracketed: true,
            tag: tag.flatten().map(|(a, b)| Sp::new(gt + 1 + a, gt + 1 + b)),
        })
    }
}

impl<'a> NameAddr<'a> {
    pub(crate) fn index(&self, base: &[u8]) -> Option<NameAddrIdx> {
        let display = match self.display {
            None => None,
            Some(DisplayName::Quoted(s)) => Some((true, Sp::of(base, s)?)),
            Some(DisplayName::Tokens(s)) => Some((false, Sp::of(base, s)?)),
        };
        Some(NameAddrIdx {
            display,
            uri: self.uri.index(base)?,
            params: self.params.index(base)?,
            bracketed: self.bracketed,
            tag: crate::index::opt(base, self.tag)?,
        })
    }
    // Inlined for store forwarding (see `SipMessage::validate_into`).
    #[inline(always)]
    pub(crate) fn from_index(base: &'a [u8], idx: &NameAddrIdx) -> NameAddr<'a> {
        NameAddr {
            display: idx.display.map(|(quoted, sp)| {
                if quoted {
                    DisplayName::Quoted(sp.get(base))
                } else {
                    DisplayName::Tokens(sp.get(base))
                }
            }),
            uri: Uri::from_index(base, &idx.uri),
            params: Params::from_index(base, idx.params),
            bracketed: idx.bracketed,
            tag: idx.tag.map(|sp| sp.get(base)),
        }
    }
}
