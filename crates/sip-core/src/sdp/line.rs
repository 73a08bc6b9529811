//! One `x=value` line, kept as a slice of the received body.

use bytes::Bytes;

use super::SdpError;

/// One line of a session description: its type letter and its value (what follows `x=`,
/// without the line end).
///
/// A parsed line's value is a zero-copy slice of the received body. Lines are kept in their
/// received order, unknown types and unknown attributes included, so nothing is lost on
/// re-serialization.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Line {
    letter: u8,
    /// Always valid UTF-8 without NUL, CR or LF (checked by every constructor).
    value: Bytes,
}

impl Line {
    /// Makes a line from a type letter (an ASCII letter) and a value without NUL, CR or LF.
    pub fn new(letter: char, value: &str) -> Result<Line, SdpError> {
        if !letter.is_ascii_alphabetic() {
            return Err(SdpError::InvalidValue {
                what: "line type",
                why: "not an ASCII letter",
            });
        }
        check_text(value, "line value")?;
        Ok(Line {
            letter: letter as u8,
            value: Bytes::copy_from_slice(value.as_bytes()),
        })
    }

    /// Makes a line from parts already checked by the parser or a typed value's `Display`.
    pub(crate) fn from_parts(letter: u8, value: Bytes) -> Line {
        Line { letter, value }
    }

    /// Makes a line from a string produced by this crate (typed values' `Display`).
    pub(crate) fn from_string(letter: u8, value: String) -> Line {
        Line {
            letter,
            value: Bytes::from(value),
        }
    }

    /// The type letter (`'v'`, `'o'`, `'a'`, …).
    pub fn letter(&self) -> char {
        char::from(self.letter)
    }

    /// The value: everything after `x=`, without the line end, exactly as received.
    pub fn value(&self) -> &str {
        // Every constructor checked UTF-8, so the fallback is never taken.
        std::str::from_utf8(&self.value).unwrap_or_default()
    }

    /// The value as the underlying bytes (a slice of the received body when parsed).
    pub fn value_bytes(&self) -> &Bytes {
        &self.value
    }

    /// For an `a=` line, the attribute name and optional value; `None` for other lines.
    pub fn attribute(&self) -> Option<super::Attribute<'_>> {
        (self.letter == b'a').then(|| super::Attribute::from_value(self.value()))
    }

    pub(crate) fn letter_byte(&self) -> u8 {
        self.letter
    }

    pub(crate) fn write_to(&self, out: &mut Vec<u8>) {
        out.push(self.letter);
        out.push(b'=');
        out.extend_from_slice(&self.value);
        out.extend_from_slice(b"\r\n");
    }
}

/// Refuses text that cannot sit inside one SDP line (NUL, CR, LF).
pub(crate) fn check_text(value: &str, what: &'static str) -> Result<(), SdpError> {
    if value.bytes().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
        return Err(SdpError::InvalidValue {
            what,
            why: "contains NUL, CR or LF",
        });
    }
    Ok(())
}

/// A non-empty run of visible characters (no space, no control byte): the shape of every
/// field of `o=`, `c=`, `m=` and of attribute names.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b > 0x20 && b != 0x7f)
}

/// Refuses a value that must be a single field.
pub(crate) fn check_token(value: &str, what: &'static str) -> Result<(), SdpError> {
    if !is_token(value) {
        return Err(SdpError::InvalidValue {
            what,
            why: "empty or contains a space or control character",
        });
    }
    Ok(())
}

/// Decimal digits only (no sign), without overflow: `None` when not a number, `Some(None)`
/// when the number does not fit.
pub(crate) fn parse_decimal<T: std::str::FromStr>(s: &str) -> Option<Option<T>> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse::<T>().ok())
}

/// Splits a value into fields separated by one or more spaces (lenient about repeated and
/// trailing spaces).
pub(crate) fn fields(s: &str) -> impl Iterator<Item = &str> {
    s.split(' ').filter(|f| !f.is_empty())
}
