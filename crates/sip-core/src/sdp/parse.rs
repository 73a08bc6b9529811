//! The parser: splits a body into lines, checks limits and structure, builds the model.

use bytes::Bytes;

use super::description::{MediaDescription, SessionDescription};
use super::line::Line;
use super::types::{Attribute, Connection, Media, Origin, Timing};
use super::{SdpError, SdpLimits};

/// Line types that belong to the session section only (RFC 8866 §5).
const SESSION_ONLY: &[u8] = b"vosueptrz";

pub(crate) fn parse(body: Bytes, limits: &SdpLimits) -> Result<SessionDescription, SdpError> {
    if body.len() > limits.max_body_size {
        return Err(SdpError::BodyTooLarge {
            size: body.len(),
            limit: limits.max_body_size,
        });
    }
    let raw = split_lines(&body, limits)?;
    let mut lines = Vec::with_capacity(raw.len());
    for (index, range) in raw.into_iter().enumerate() {
        lines.push(check_line(&body, index + 1, range)?);
    }
    build(body, lines, limits)
}

/// Byte ranges of the lines (line ends excluded), trailing empty lines dropped.
fn split_lines(body: &[u8], limits: &SdpLimits) -> Result<Vec<std::ops::Range<usize>>, SdpError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let end = memchr::memchr(b'\n', &body[pos..]).map_or(body.len(), |i| pos + i);
        let mut content_end = end;
        if content_end > pos && body[content_end - 1] == b'\r' {
            content_end -= 1;
        }
        if out.len() == limits.max_lines {
            return Err(SdpError::TooManyLines {
                limit: limits.max_lines,
            });
        }
        if content_end - pos > limits.max_line_length {
            return Err(SdpError::LineTooLong {
                line: out.len() + 1,
                limit: limits.max_line_length,
            });
        }
        out.push(pos..content_end);
        pos = end + 1;
    }
    while out.last().is_some_and(|r| r.is_empty()) {
        out.pop();
    }
    if out.is_empty() {
        return Err(SdpError::Empty);
    }
    if let Some(i) = out.iter().position(|r| r.is_empty()) {
        return Err(SdpError::EmptyLine { line: i + 1 });
    }
    Ok(out)
}

/// Checks the `x=` shape and the value's bytes of one line.
fn check_line(
    body: &Bytes,
    line: usize,
    range: std::ops::Range<usize>,
) -> Result<(usize, Line), SdpError> {
    let bytes = &body[range.clone()];
    if bytes.len() < 2 || !bytes[0].is_ascii_alphabetic() || bytes[1] != b'=' {
        return Err(SdpError::MalformedLine { line });
    }
    let value = &bytes[2..];
    if value.iter().any(|&b| b == 0 || b == b'\r') {
        return Err(SdpError::ControlCharacter { line });
    }
    if std::str::from_utf8(value).is_err() {
        return Err(SdpError::NotUtf8 { line });
    }
    Ok((
        line,
        Line::from_parts(bytes[0], body.slice(range.start + 2..range.end)),
    ))
}

fn build(
    body: Bytes,
    lines: Vec<(usize, Line)>,
    limits: &SdpLimits,
) -> Result<SessionDescription, SdpError> {
    let mut iter = lines.into_iter();
    // v=0 first.
    let (n, v) = iter.next().ok_or(SdpError::Empty)?;
    if v.letter_byte() != b'v' {
        return Err(SdpError::VersionNotFirst);
    }
    if v.value() != "0" {
        return Err(SdpError::UnsupportedVersion { line: n });
    }
    // o= second.
    let (n, o) = iter.next().ok_or(SdpError::Missing { letter: 'o' })?;
    if o.letter_byte() != b'o' {
        return Err(SdpError::OutOfOrder {
            line: n,
            letter: o.letter(),
        });
    }
    let origin = Origin::parse(o.value(), n)?;
    // s= third.
    let (n, s) = iter.next().ok_or(SdpError::Missing { letter: 's' })?;
    if s.letter_byte() != b's' {
        return Err(SdpError::OutOfOrder {
            line: n,
            letter: s.letter(),
        });
    }
    let mut session = vec![v, o, s];
    let mut media: Vec<MediaDescription> = Vec::new();
    let mut saw_timing = false;
    let mut saw_connection = false;
    for (n, line) in iter {
        let letter = line.letter_byte();
        if letter == b'm' {
            if media.len() == limits.max_media {
                return Err(SdpError::TooManyMedia {
                    line: n,
                    limit: limits.max_media,
                });
            }
            let m = Media::parse(line.value(), n)?;
            media.push(MediaDescription::from_parsed(m, line));
            continue;
        }
        match letter {
            b'c' => {
                Connection::parse(line.value(), n)?;
            }
            b'a' => {
                let name = Attribute::from_value(line.value()).name;
                if !super::line::is_token(name) {
                    return Err(SdpError::InvalidAttribute { line: n });
                }
            }
            _ => {}
        }
        match media.last_mut() {
            None => {
                match letter {
                    b'v' | b'o' | b's' => {
                        return Err(SdpError::Repeated {
                            line: n,
                            letter: line.letter(),
                        })
                    }
                    b't' => {
                        Timing::parse(line.value(), n)?;
                        saw_timing = true;
                    }
                    // RFC 8866 §9 allows one session-level `c=`; with two, which address
                    // media goes to is a guess.
                    b'c' if saw_connection => {
                        return Err(SdpError::Repeated {
                            line: n,
                            letter: 'c',
                        })
                    }
                    b'c' => saw_connection = true,
                    _ => {}
                }
                session.push(line);
            }
            Some(m) => {
                if SESSION_ONLY.contains(&letter) {
                    return Err(SdpError::NotAllowedInMedia {
                        line: n,
                        letter: line.letter(),
                    });
                }
                m.push_parsed(line);
            }
        }
    }
    if !saw_timing {
        return Err(SdpError::Missing { letter: 't' });
    }
    Ok(SessionDescription::from_parsed(
        body, session, origin, media,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(body: &[u8]) -> Result<Vec<&[u8]>, SdpError> {
        let ranges = split_lines(body, &SdpLimits::DEFAULT)?;
        Ok(ranges.into_iter().map(|r| &body[r]).collect())
    }

    #[test]
    fn line_ends() {
        let expected: Vec<&[u8]> = vec![b"v=0", b"s=x"];
        assert_eq!(lines(b"v=0\r\ns=x\r\n").unwrap(), expected);
        assert_eq!(lines(b"v=0\ns=x\n").unwrap(), expected);
        assert_eq!(lines(b"v=0\r\ns=x").unwrap(), expected);
        assert_eq!(lines(b"v=0\ns=x\r\n\r\n\n").unwrap(), expected);
        // A CR that does not end a line stays in it (and is refused by `check_line`).
        assert_eq!(lines(b"v=0\rs=x").unwrap(), vec![&b"v=0\rs=x"[..]]);
        assert_eq!(lines(b"\r\n"), Err(SdpError::Empty));
        assert_eq!(lines(b"v=0\n\ns=x"), Err(SdpError::EmptyLine { line: 2 }));
    }

    #[test]
    fn check_line_shape() {
        let body = Bytes::from_static(b"a=\xc3\xa9t\xc3\xa9");
        let (_, line) = check_line(&body, 1, 0..body.len()).unwrap();
        assert_eq!(line.value(), "été");
        for bad in [&b"="[..], b"a", b"1=x", b"ab=x", b" a=x"] {
            let body = Bytes::copy_from_slice(bad);
            assert_eq!(
                check_line(&body, 3, 0..body.len()).map(drop),
                Err(SdpError::MalformedLine { line: 3 })
            );
        }
    }
}
