//! The first message of a Lync / Skype for Business IM call, carried in the INVITE's
//! `Ms-Text-Format` header (`text/plain; charset=UTF-8; ms-body=<base64>`) so the callee
//! sees it before accepting.

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
/// fits [`MAX_FIRST_MESSAGE`].
pub fn decode(value: &[u8]) -> Option<(String, Bytes)> {
    let value = std::str::from_utf8(value).ok()?;
    let mut parts = value.split(';');
    let content_type = parts.next()?.trim().to_string();
    for p in parts {
        let (name, v) = p.trim().split_once('=')?;
        if name.trim().eq_ignore_ascii_case("ms-body") {
            let v = v.trim().trim_matches('"');
            if v.len() > MAX_FIRST_MESSAGE * 4 / 3 + 4 {
                return None;
            }
            let body = STANDARD.decode(v).ok()?;
            return Some((content_type, Bytes::from(body)));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let v = encode("text/plain", "héllo".as_bytes());
        assert!(v.starts_with("text/plain; charset=UTF-8; ms-body="));
        let (ct, body) = decode(v.as_bytes()).unwrap();
        assert_eq!(ct, "text/plain");
        assert_eq!(&body[..], "héllo".as_bytes());
        assert_eq!(decode(b"text/plain; charset=UTF-8"), None);
        assert_eq!(decode(b"text/plain; ms-body=!!!"), None);
        assert_eq!(decode(b"\xff\xfe"), None);
    }
}
