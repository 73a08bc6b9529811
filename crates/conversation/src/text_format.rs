//! The first message of a Lync / Skype for Business IM call, carried in the INVITE's
//! `Ms-Text-Format` header (`text/plain; charset=UTF-8; ms-body=<base64>`) so the callee
//! sees it before accepting; how a text body is read in its `charset` ([`decode_text`]);
//! and which form of a `multipart/alternative` message is delivered
//! ([`pick_alternative`]).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;

/// Name of the header.
pub const HEADER: &str = "Ms-Text-Format";

/// Largest first message accepted from the header (decoded bytes).
pub const MAX_FIRST_MESSAGE: usize = 64 * 1024;

/// The header value carrying `body` of `content_type`.
pub fn encode(content_type: &str, body: &[u8]) -> String {
    format!(
        "{content_type}; charset=UTF-8; ms-body={}",
        STANDARD.encode(body)
    )
}

/// The (content type, body) of a header value, if it carries an `ms-body` that decodes and
/// fits [`MAX_FIRST_MESSAGE`]. The content type keeps the header's `charset` (the body is
/// in it), not its other parameters; a parameter without a value is skipped.
pub fn decode(value: &[u8]) -> Option<(String, Bytes)> {
    let value = std::str::from_utf8(value).ok()?;
    let mut parts = value.split(';');
    let mut content_type = parts.next()?.trim().to_string();
    let mut body = None;
    for p in parts {
        let Some((name, v)) = p.trim().split_once('=') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("ms-body") && body.is_none() {
            let v = v.trim().trim_matches('"');
            if v.len() > MAX_FIRST_MESSAGE * 4 / 3 + 4 {
                return None;
            }
            body = Some(Bytes::from(STANDARD.decode(v).ok()?));
        } else if name.eq_ignore_ascii_case("charset") {
            content_type.push_str("; charset=");
            content_type.push_str(v.trim());
        }
    }
    body.map(|b| (content_type, b))
}

/// The `charset` parameter of a Content-Type value (unquoted), if any.
pub fn charset(content_type: &str) -> Option<&str> {
    parameter(content_type, "charset")
}

/// The parameter `name` of a Content-Type value (unquoted), if any.
fn parameter<'a>(content_type: &'a str, name: &str) -> Option<&'a str> {
    content_type.split(';').skip(1).find_map(|p| {
        let (n, v) = p.split_once('=')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"'))
    })
}

/// Most parts [`pick_alternative`] reads (bounds the work a hostile body causes).
pub const MAX_PARTS: usize = 16;

/// The part of a `multipart/alternative` body (RFC 2046 §5.1.4) to deliver, as its
/// (content type, body): the last one whose media type `accept` takes, the parts going
/// from the plainest to the richest. A part without Content-Type is `text/plain`
/// (§5.1); a base64 part is decoded; quoted-printable parts and parts after the first
/// [`MAX_PARTS`] are not read. `None` when `content_type` has no usable `boundary` or no
/// part is taken. Written here rather than taken from a crate: the multipart readers of
/// the ecosystem serve HTTP form data (streams, `Content-Disposition`), not a bounded
/// in-memory body with a choice among alternatives.
pub fn pick_alternative(
    content_type: &str,
    body: &Bytes,
    accept: impl Fn(&str) -> bool,
) -> Option<(String, Bytes)> {
    let boundary = parameter(content_type, "boundary")?;
    // §5.1.1: 1 to 70 characters.
    if boundary.is_empty() || boundary.len() > 70 {
        return None;
    }
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut best = None;
    let mut at = find_delimiter(body, 0, delimiter)?;
    for _ in 0..MAX_PARTS {
        let after = at + delimiter.len();
        if body[after..].starts_with(b"--") {
            break; // the close delimiter
        }
        // The rest of the delimiter line (transport padding) and its line end.
        let Some(start) = body[after..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| after + i + 1)
        else {
            break;
        };
        let next = find_delimiter(body, start, delimiter);
        // The line end before the next delimiter belongs to it, not to the part.
        let end = match next {
            Some(n) if n > start => {
                let n = n - 1; // the LF
                if n > start && body[n - 1] == b'\r' {
                    n - 1
                } else {
                    n
                }
            }
            Some(n) => n,
            None => body.len(),
        };
        if let Some(part) = read_part(&body.slice(start..end.max(start))) {
            let base = part.0.split(';').next().unwrap_or("").trim();
            if accept(base) {
                best = Some(part);
            }
        }
        match next {
            Some(n) => at = n,
            None => break,
        }
    }
    best
}

/// Where the next delimiter line begins, from `from`: `delimiter` at the start of the
/// body or of a line.
fn find_delimiter(body: &[u8], from: usize, delimiter: &[u8]) -> Option<usize> {
    let mut i = from;
    while i + delimiter.len() <= body.len() {
        if (i == 0 || body[i - 1] == b'\n') && body[i..].starts_with(delimiter) {
            return Some(i);
        }
        i += match body[i..].iter().position(|&b| b == b'\n') {
            Some(p) => p + 1,
            None => return None,
        };
    }
    None
}

/// A part's (content type, decoded body); `None` for an encoding not read.
fn read_part(part: &Bytes) -> Option<(String, Bytes)> {
    // Headers up to the first empty line (none when the part starts with one); lines end
    // with CRLF or a bare LF.
    let blank = |at: usize| match &part[at..] {
        [b'\r', b'\n', ..] => Some(at + 2),
        [b'\n', ..] => Some(at + 1),
        _ => None,
    };
    let (headers, body_at) = match blank(0) {
        Some(b) => (&part[..0], b),
        None => part
            .iter()
            .enumerate()
            .filter(|&(_, &c)| c == b'\n')
            .find_map(|(i, _)| blank(i + 1).map(|b| (&part[..i], b)))
            .unwrap_or((&part[..], part.len())),
    };
    let headers = std::str::from_utf8(headers).ok()?;
    // RFC 5322 §2.2.3 (MIME part headers, RFC 2045 §3): a line starting with SP or HTAB
    // continues the previous header; unfold before splitting name from value.
    let mut unfolded: Vec<String> = Vec::new();
    for line in headers.lines() {
        match unfolded.last_mut() {
            Some(last) if line.starts_with([' ', '\t']) => last.push_str(line),
            _ => unfolded.push(line.to_owned()),
        }
    }
    let mut content_type = None;
    let mut encoding = None;
    for line in &unfolded {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-type") {
            content_type.get_or_insert(value.trim());
        } else if name.eq_ignore_ascii_case("content-transfer-encoding") {
            encoding.get_or_insert(value.trim());
        }
    }
    let content_type = content_type.unwrap_or("text/plain").to_string();
    let body = part.slice(body_at..);
    match encoding {
        None => Some((content_type, body)),
        Some(e)
            if ["7bit", "8bit", "binary"]
                .iter()
                .any(|k| e.eq_ignore_ascii_case(k)) =>
        {
            Some((content_type, body))
        }
        Some(e) if e.eq_ignore_ascii_case("base64") => {
            let text: Vec<u8> = body
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            let decoded = STANDARD.decode(text).ok()?;
            Some((content_type, Bytes::from(decoded)))
        }
        Some(_) => None,
    }
}

/// `body` as text, read in the `charset` of `content_type` (RFC 2046 §4.1.2) by
/// encoding_rs: UTF-8 when none is given (what IM clients send), else any charset the
/// WHATWG Encoding Standard names (ISO-8859-1 and US-ASCII read as windows-1252, its
/// superset), a byte order mark winning over the label. Bytes not valid in it become
/// U+FFFD; a charset nobody knows is read as UTF-8, and so is one the standard maps to
/// its "replacement" encoding (ISO-2022-KR, ISO-2022-CN, HZ-GB-2312 …), which would
/// otherwise turn the whole message into one U+FFFD.
pub fn decode_text(content_type: &str, body: &[u8]) -> String {
    let encoding = charset(content_type)
        .and_then(|c| encoding_rs::Encoding::for_label_no_replacement(c.as_bytes()))
        .unwrap_or(encoding_rs::UTF_8);
    encoding.decode(body).0.into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let v = encode("text/plain", "héllo".as_bytes());
        assert!(v.starts_with("text/plain; charset=UTF-8; ms-body="));
        let (ct, body) = decode(v.as_bytes()).unwrap();
        assert_eq!(ct, "text/plain; charset=UTF-8");
        assert_eq!(&body[..], "héllo".as_bytes());
        assert_eq!(decode(b"text/plain; charset=UTF-8"), None);
        assert_eq!(decode(b"text/plain; ms-body=!!!"), None);
        assert_eq!(decode(b"\xff\xfe"), None);
    }

    /// A first message in another charset keeps it, so that it reads right; Lync's
    /// parameters without a value no longer lose the message.
    #[test]
    fn the_first_message_keeps_its_charset() {
        let (ct, body) =
            decode(b"text/plain; charset=ISO-8859-1; msgr=WAA=; ms-body=Y2Fm6Q==").unwrap();
        assert_eq!(ct, "text/plain; charset=ISO-8859-1");
        assert_eq!(decode_text(&ct, &body), "caf\u{e9}");
        let (ct, body) = decode(b"text/html; x-flag; ms-body=aGk=").unwrap();
        assert_eq!((ct.as_str(), &body[..]), ("text/html", &b"hi"[..]));
    }

    /// RFC 2046 §5.1.4: the last alternative taken wins; what is not taken, or not
    /// readable, is passed over; hostile bodies return without panicking.
    #[test]
    fn alternatives() {
        let text = |ct: &str, body: &str| {
            pick_alternative(ct, &Bytes::copy_from_slice(body.as_bytes()), |t| {
                t == "text/plain" || t == "text/html"
            })
            .map(|(ct, b)| (ct, String::from_utf8_lossy(&b).into_owned()))
        };
        let ct = "multipart/alternative; boundary=\"b1\"";
        let body =
            "preamble\r\n--b1\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nhi *there*\r\n\
                    --b1  \r\nContent-Type: text/html\r\n\r\n<p>hi <b>there</b></p>\r\n\
                    --b1\r\nContent-Type: application/x-ms-ink\r\n\r\nINK\r\n--b1--\r\nepilogue";
        assert_eq!(
            text(ct, body),
            Some(("text/html".into(), "<p>hi <b>there</b></p>".into()))
        );
        // Bare LF, a part without headers, base64, quoted-printable passed over.
        let body = "--b1\n\nplain\n--b1\nContent-Transfer-Encoding: base64\n\
                    Content-Type: text/plain\n\naGVs\nbG8=\n--b1\n\
                    Content-Type: text/html\nContent-Transfer-Encoding: quoted-printable\n\n=3Cp=3E\n--b1--";
        assert_eq!(text(ct, body), Some(("text/plain".into(), "hello".into())));
        let body = "--b1\r\n\r\nfirst\r\n--b1--";
        assert_eq!(text(ct, body), Some(("text/plain".into(), "first".into())));
        assert_eq!(
            text("multipart/alternative", "--b1\r\n\r\nx\r\n--b1--"),
            None
        );
        assert_eq!(text(ct, "no delimiter at all"), None);
        assert_eq!(text(ct, "--b1--"), None);
        let many = "--b1\r\n\r\nx\r\n".repeat(MAX_PARTS + 5);
        assert_eq!(text(ct, &many).map(|p| p.1), Some("x".into()));
        for junk in [
            "--b1",
            "--b1\r",
            "--b1\r\n",
            "--b1\r\n--b1",
            "\n--b1\n\r\n--b1\n",
            "--b1\r\nContent-Type",
        ] {
            let _ = text(ct, junk);
        }
    }

    /// A charset mapped to the WHATWG "replacement" encoding is read as UTF-8, not as one
    /// U+FFFD for the whole message.
    #[test]
    fn replacement_charsets_are_read_as_utf8() {
        for cs in ["ISO-2022-KR", "iso-2022-cn", "HZ-GB-2312", "csiso2022kr"] {
            let ct = format!("text/plain; charset={cs}");
            assert_eq!(
                decode_text(&ct, b"Hello, plain ASCII"),
                "Hello, plain ASCII",
                "{cs}"
            );
        }
    }

    /// A folded Content-Type in a part (RFC 5322 §2.2.3) keeps its continuation: the
    /// charset on the folded line is read.
    #[test]
    fn folded_part_headers_are_unfolded() {
        let body = Bytes::from_static(
            b"--b1\r\nContent-Type: text/plain;\r\n\tcharset=ISO-8859-1\r\n\r\ncaf\xe9\r\n--b1--\r\n",
        );
        let (ct, b) = pick_alternative("multipart/alternative; boundary=b1", &body, |t| {
            t == "text/plain"
        })
        .unwrap();
        assert_eq!(
            decode_text(&ct, &b),
            "caf\u{e9}",
            "content type read: {ct:?}"
        );
        let body = Bytes::from_static(
            b"--b1\nContent-Type:\n text/html\nContent-Transfer-Encoding:\n  base64\n\naGk=\n--b1--",
        );
        let got = pick_alternative("multipart/alternative; boundary=b1", &body, |t| {
            t == "text/html"
        });
        assert_eq!(got.map(|p| p.1), Some(Bytes::from_static(b"hi")));
    }

    /// RFC 2046 §4.1.2: the charset says how the bytes are read; it used to be ignored
    /// and every body read as UTF-8 (`caf\xe9` in ISO-8859-1 came out as `caf\u{fffd}`).
    #[test]
    fn bodies_are_read_in_their_charset() {
        let cases: [(&str, &[u8], &str); 11] = [
            ("text/plain", "h\u{e9}".as_bytes(), "h\u{e9}"),
            ("text/plain; charset=UTF-8", b"ok\xff", "ok\u{fffd}"),
            (
                "text/plain; charset=\"iso-8859-1\"",
                b"caf\xe9",
                "caf\u{e9}",
            ),
            ("text/plain;charset=Latin1", b"\xe0", "\u{e0}"),
            (
                "text/plain; charset=windows-1252",
                b"\x80 \x93q\x94",
                "\u{20ac} \u{201c}q\u{201d}",
            ),
            ("text/plain; charset=us-ascii", b"a\xe9", "a\u{e9}"),
            (
                "text/plain; charset=utf-16",
                b"\xff\xfeh\x00\xe9\x00",
                "h\u{e9}",
            ),
            (
                "text/plain; charset=UTF-16BE",
                b"\x00h\xd8\x00",
                "h\u{fffd}",
            ),
            ("text/plain; charset=utf-16le", b"h\x00x", "h\u{fffd}"),
            ("text/plain; charset=koi8-r", b"ok \xc1", "ok \u{430}"),
            ("text/plain; charset=x-unknown", b"ok\xff", "ok\u{fffd}"),
        ];
        for (ct, body, text) in cases {
            assert_eq!(decode_text(ct, body), text, "{ct}");
        }
        assert_eq!(
            charset("text/plain; format=flowed; CHARSET=\"utf-8\""),
            Some("utf-8")
        );
        assert_eq!(charset("text/plain"), None);
    }
}
