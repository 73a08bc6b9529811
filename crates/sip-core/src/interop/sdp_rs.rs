//! Conversions between this crate's [`SessionDescription`] and
//! [`sdp_rs::SessionDescription`] (sdp-rs 0.2), for applications that already use sdp-rs.
//!
//! Enabled by the `interop` cargo feature (on by default). Use [`to_sdp_rs`] /
//! [`from_sdp_rs`] or the equivalent `TryFrom` impls.
//!
//! # What is lost or refused, and where
//!
//! sdp-rs has one typed field per line type in RFC 8866 order, so a conversion to it cannot
//! keep everything this crate keeps. Going **to sdp-rs**:
//!
//! - **Refused** ([`SdpRsError::NotRepresentable`]): an FQDN (or any non-IP text) in `o=` or
//!   `c=` (sdp-rs holds an `IpAddr`: RFC 5118 `mult-ip-in-sdp` cannot convert); a line type
//!   sdp-rs does not know; a second session-level `i=`, `u=` or `k=`, or a second
//!   media-level `i=` or `k=` (sdp-rs holds one); `r=`/`z=` before any `t=`; a port count
//!   above 255 (`u8` in sdp-rs); `r=`/`z=` times so large that sdp-rs's `chrono` arithmetic
//!   would panic (`r=99999999999999999 1h 0`, beyond about ±10^15 seconds).
//! - **Refused** ([`SdpRsError::Rejected`]): values sdp-rs's own typing refuses: a
//!   non-numeric `b=` bandwidth or one above `u32`, a malformed `a=rtpmap` (RFC 4475's
//!   `a=rtpmap:31 LPC`), a non-numeric `a=ptime`, `a=maxptime`, `a=framerate`,
//!   `a=quality`, an unknown `a=orient` or `a=type`, times that are not sdp-rs typed times.
//! - **Lost silently**: the line order across types (sdp-rs writes its fixed RFC order, e.g.
//!   a session `a=` written before `t=` moves after it); the line ends (sdp-rs writes CRLF);
//!   number spelling (leading zeros in `t=`, `b=`, ports; `r=7d` stays typed but `r=0604800`
//!   loses its zeros, `a=quality:05` becomes `5`); IP address spelling in `o=`/`c=` (sdp-rs
//!   holds an `IpAddr`, so `2001:DB8:0:0:0:0:0:1` comes back as `2001:db8::1`); an
//!   attribute with an empty value (`a=foo:`) becomes `a=foo`; floats of
//!   `a=ptime`/`a=framerate` are re-printed by Rust's `f32` formatting.
//! - **Typed differently**: the address count of an IPv6 multicast `c=` (`ff15::1/3`) lands
//!   in sdp-rs's `ttl` field, as sdp-rs's own parser puts it (the text is the same).
//! - **Rewritten by sdp-rs afterwards** (not by this conversion): sdp-rs's `Display` writes
//!   an `a=rtpmap` with encoding parameters as `111 opus/48000 2` (space instead of `/`),
//!   which is no longer valid SDP, and it does not recognise `a=inactive` (typo `inacive` in
//!   its source), which stays `Attribute::Other("inactive", None)`.
//!
//! Going **from sdp-rs**, nothing of the sdp-rs value is lost: it is written in sdp-rs's
//! field order (with `a=rtpmap` written correctly, `opus/48000/2`) and parsed by this crate,
//! which refuses ([`SdpRsError::Sdp`]) values that would not make a valid body, such as text
//! holding CR or LF (no line injection) or an empty format list.

use std::convert::TryFrom;
use std::net::IpAddr;

use crate::sdp::{MediaDescription, SdpError, SessionDescription};

/// Why a conversion to or from sdp-rs failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpRsError {
    /// The description holds something sdp-rs has no place for (`line` is 1-based in the
    /// canonical serialization).
    #[error("line {line}: sdp-rs cannot represent {what}")]
    NotRepresentable {
        /// The offending line.
        line: usize,
        /// What cannot be represented.
        what: &'static str,
    },
    /// sdp-rs refused to type a value (`line` is 1-based in the canonical serialization).
    #[error("line {line}: sdp-rs refused the value: {message}")]
    Rejected {
        /// The offending line.
        line: usize,
        /// sdp-rs's error text.
        message: String,
    },
    /// The sdp-rs description does not make an SDP body this crate accepts.
    #[error(transparent)]
    Sdp(#[from] SdpError),
}

fn rejected(line: usize, e: impl std::fmt::Display) -> SdpRsError {
    SdpRsError::Rejected {
        line,
        message: e.to_string(),
    }
}

fn not_representable(line: usize, what: &'static str) -> SdpRsError {
    SdpRsError::NotRepresentable { line, what }
}

/// Converts to an sdp-rs description (see the module documentation for what is refused and
/// lost).
pub fn to_sdp_rs(sdp: &SessionDescription) -> Result<sdp_rs::SessionDescription, SdpRsError> {
    use sdp_rs::lines;

    let origin = sdp.origin();
    let unicast_address: IpAddr = origin
        .address
        .parse()
        .map_err(|_| not_representable(2, "a non-IP o= address"))?;
    // sdp-rs keeps sess-version as text: pass it as written (`007` stays `007`).
    let sess_version = sdp
        .lines()
        .get(1)
        .and_then(|o| o.value().split(' ').filter(|f| !f.is_empty()).nth(2))
        .map_or_else(|| origin.session_version.to_string(), String::from);
    let origin = lines::Origin {
        username: origin.username.clone(),
        sess_id: origin.session_id.clone(),
        sess_version,
        nettype: origin.net_type.as_str().into(),
        addrtype: origin.addr_type.as_str().into(),
        unicast_address,
    };

    let mut session_info = None;
    let mut uri = None;
    let mut emails = Vec::new();
    let mut phones = Vec::new();
    let mut connection = None;
    let mut bandwidths = Vec::new();
    let mut times: Vec<sdp_rs::Time> = Vec::new();
    let mut key = None;
    let mut attributes = Vec::new();

    let mut n = 0;
    for line in sdp.lines() {
        n += 1;
        let v = line.value();
        match line.letter() {
            'v' | 'o' => {}
            's' => {}
            'i' => set_once(
                &mut session_info,
                lines::SessionInformation::new(v.into()),
                n,
            )?,
            'u' => set_once(&mut uri, lines::Uri::new(v.into()), n)?,
            'e' => emails.push(lines::Email::new(v.into())),
            'p' => phones.push(lines::Phone::new(v.into())),
            'c' => set_once(&mut connection, convert_connection(v, n)?, n)?,
            'b' => bandwidths.push(convert_bandwidth(v, n)?),
            't' => {
                let t = crate::sdp::Timing::parse(v, n)?;
                times.push(sdp_rs::Time {
                    active: lines::Active {
                        start: t.start,
                        stop: t.stop,
                    },
                    repeat: Vec::new(),
                    zone: None,
                });
            }
            'r' => {
                let time = times
                    .last_mut()
                    .ok_or_else(|| not_representable(n, "r= before t="))?;
                time.repeat.push(convert_repeat(v, n)?);
            }
            'z' => {
                let time = times
                    .last_mut()
                    .ok_or_else(|| not_representable(n, "z= before t="))?;
                if time.zone.is_some() {
                    return Err(not_representable(n, "a second z= for one t="));
                }
                time.zone = Some(convert_zone(v, n)?);
            }
            'k' => set_once(&mut key, convert_key(v), n)?,
            'a' => attributes.push(convert_attribute(v, n)?),
            _ => return Err(not_representable(n, "a line type unknown to sdp-rs")),
        }
    }

    let mut media_descriptions = Vec::new();
    for m in sdp.media() {
        n += 1;
        media_descriptions.push(convert_media(m, &mut n)?);
    }

    Ok(sdp_rs::SessionDescription {
        version: lines::Version::V0,
        origin,
        session_name: lines::SessionName::new(sdp.session_name().into()),
        session_info,
        uri,
        emails,
        phones,
        connection,
        bandwidths,
        times: times
            .try_into()
            .map_err(|_| SdpRsError::Sdp(SdpError::Missing { letter: 't' }))?,
        key,
        attributes,
        media_descriptions,
    })
}

fn set_once<T>(slot: &mut Option<T>, value: T, line: usize) -> Result<(), SdpRsError> {
    if slot.is_some() {
        return Err(not_representable(
            line,
            "a second line of a type sdp-rs holds once",
        ));
    }
    *slot = Some(value);
    Ok(())
}

fn convert_media(
    m: &MediaDescription,
    n: &mut usize,
) -> Result<sdp_rs::MediaDescription, SdpRsError> {
    use sdp_rs::lines;

    let media = m.media();
    let num_of_ports = media
        .port_count
        .map(u8::try_from)
        .transpose()
        .map_err(|_| not_representable(*n, "a port count above 255"))?;
    let mut out = sdp_rs::MediaDescription {
        media: lines::Media {
            media: media.media_type.as_str().into(),
            port: media.port,
            num_of_ports,
            proto: media.proto.as_str().into(),
            fmt: media.formats.join(" "),
        },
        info: None,
        connections: Vec::new(),
        bandwidths: Vec::new(),
        key: None,
        attributes: Vec::new(),
    };
    for line in m.lines() {
        *n += 1;
        let v = line.value();
        match line.letter() {
            'i' => set_once(&mut out.info, lines::SessionInformation::new(v.into()), *n)?,
            'c' => out.connections.push(convert_connection(v, *n)?),
            'b' => out.bandwidths.push(convert_bandwidth(v, *n)?),
            'k' => set_once(&mut out.key, convert_key(v), *n)?,
            'a' => out.attributes.push(convert_attribute(v, *n)?),
            _ => return Err(not_representable(*n, "a line type unknown to sdp-rs")),
        }
    }
    Ok(out)
}

fn convert_connection(value: &str, n: usize) -> Result<sdp_rs::lines::Connection, SdpRsError> {
    let c = crate::sdp::Connection::parse(value, n)?;
    let base: IpAddr = c
        .address
        .parse()
        .map_err(|_| not_representable(n, "a non-IP c= address"))?;
    // sdp-rs fills `ttl` first from the suffixes, whatever the address type.
    let (ttl, numaddr) = match (c.ttl, c.count) {
        (None, Some(count)) => (Some(count), None),
        other => other,
    };
    Ok(sdp_rs::lines::Connection {
        nettype: c.net_type.as_str().into(),
        addrtype: c.addr_type.as_str().into(),
        connection_address: sdp_rs::lines::connection::ConnectionAddress { base, ttl, numaddr },
    })
}

fn convert_bandwidth(value: &str, n: usize) -> Result<sdp_rs::lines::Bandwidth, SdpRsError> {
    let (bwtype, bandwidth) = value
        .split_once(':')
        .ok_or_else(|| rejected(n, "b= without ':'"))?;
    let bandwidth = bandwidth.parse::<u32>().map_err(|e| rejected(n, e))?;
    Ok(sdp_rs::lines::Bandwidth {
        bwtype: bwtype.into(),
        bandwidth,
    })
}

fn convert_key(value: &str) -> sdp_rs::lines::Key {
    let (method, key) = match value.split_once(':') {
        Some((m, k)) => (m, Some(k).filter(|k| !k.is_empty())),
        None => (value, None),
    };
    sdp_rs::lines::Key::from(sdp_rs::lines::key::Tokenizer::<'k'>::from((method, key)))
}

fn convert_attribute(value: &str, n: usize) -> Result<sdp_rs::lines::Attribute, SdpRsError> {
    let (name, v) = match value.split_once(':') {
        Some((name, v)) => (name, Some(v).filter(|v| !v.is_empty())),
        None => (value, None),
    };
    let tokens = sdp_rs::lines::attribute::Tokenizer::<'a'>::from((name, v));
    sdp_rs::lines::Attribute::try_from(tokens).map_err(|e| rejected(n, e))
}

/// Whether `s` is a typed time at all (`[-]digits[s|m|h|d]`, RFC 8866 §5.10), whatever its
/// size: a malformed one is refused as such, not as out of range.
fn is_typed_time(s: &str) -> bool {
    let number = s.strip_suffix(['s', 'm', 'h', 'd']).unwrap_or(s);
    let digits = number.strip_prefix('-').unwrap_or(number);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Whether sdp-rs can turn a typed time (`[-]digits[s|m|h|d]`) into a `chrono::Duration`
/// without panicking: chrono panics beyond `i64::MAX / 1000` seconds, so stay under 10^15.
fn typed_time_is_safe(s: &str) -> bool {
    let (number, unit) = match s.as_bytes().last() {
        Some(b's') => (&s[..s.len() - 1], 1i64),
        Some(b'm') => (&s[..s.len() - 1], 60),
        Some(b'h') => (&s[..s.len() - 1], 3_600),
        Some(b'd') => (&s[..s.len() - 1], 86_400),
        _ => (s, 1),
    };
    let digits = number.strip_prefix('-').unwrap_or(number);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    number
        .parse::<i64>()
        .ok()
        .and_then(|v| v.checked_mul(unit))
        .is_some_and(|secs| secs.unsigned_abs() < 1_000_000_000_000_000)
}

fn convert_repeat(value: &str, n: usize) -> Result<sdp_rs::lines::Repeat, SdpRsError> {
    let parts: Vec<&str> = value.split(' ').filter(|s| !s.is_empty()).collect();
    if parts.len() < 2 {
        return Err(rejected(n, "r= needs an interval and a duration"));
    }
    if !parts.iter().all(|p| is_typed_time(p)) {
        return Err(rejected(n, "r= holds a value that is not a typed time"));
    }
    if !parts.iter().all(|p| typed_time_is_safe(p)) {
        return Err(not_representable(n, "an r= time out of sdp-rs's range"));
    }
    let tokens = sdp_rs::lines::repeat::Tokenizer::from((parts[0], parts[1], parts[2..].to_vec()));
    sdp_rs::lines::Repeat::try_from(tokens).map_err(|e| rejected(n, e))
}

fn convert_zone(value: &str, n: usize) -> Result<sdp_rs::lines::Zone, SdpRsError> {
    let parts: Vec<&str> = value.split(' ').filter(|s| !s.is_empty()).collect();
    if parts.is_empty() || parts.len() % 2 != 0 {
        return Err(rejected(n, "z= needs adjustment/offset pairs"));
    }
    if !parts.chunks(2).all(|p| is_typed_time(p[1])) {
        return Err(rejected(n, "z= holds an offset that is not a typed time"));
    }
    if !parts.chunks(2).all(|p| typed_time_is_safe(p[1])) {
        return Err(not_representable(n, "a z= offset out of sdp-rs's range"));
    }
    let pairs: Vec<(&str, &str)> = parts.chunks(2).map(|p| (p[0], p[1])).collect();
    let tokens = sdp_rs::lines::zone::Tokenizer::from(pairs);
    sdp_rs::lines::Zone::try_from(tokens).map_err(|e| rejected(n, e))
}

/// Converts from an sdp-rs description: writes it as SDP (in sdp-rs's field order, with
/// `a=rtpmap` encoding parameters after a `/` as RFC 8866 says) and parses that with this
/// crate, so the result is checked like any received body.
pub fn from_sdp_rs(sdp: &sdp_rs::SessionDescription) -> Result<SessionDescription, SdpRsError> {
    let mut lines: Vec<String> = Vec::new();
    lines.push(sdp.version.to_string());
    lines.push(sdp.origin.to_string());
    lines.push(sdp.session_name.to_string());
    lines.extend(sdp.session_info.iter().map(ToString::to_string));
    lines.extend(sdp.uri.iter().map(ToString::to_string));
    lines.extend(sdp.emails.iter().map(ToString::to_string));
    lines.extend(sdp.phones.iter().map(ToString::to_string));
    lines.extend(sdp.connection.iter().map(ToString::to_string));
    lines.extend(sdp.bandwidths.iter().map(ToString::to_string));
    for time in sdp.times.iter() {
        lines.push(time.active.to_string());
        lines.extend(time.repeat.iter().map(ToString::to_string));
        lines.extend(time.zone.iter().map(ToString::to_string));
    }
    lines.extend(sdp.key.iter().map(ToString::to_string));
    lines.extend(sdp.attributes.iter().map(attribute_line));
    for m in &sdp.media_descriptions {
        lines.push(format!("m={}", m.media));
        lines.extend(m.info.iter().map(ToString::to_string));
        lines.extend(m.connections.iter().map(ToString::to_string));
        lines.extend(m.bandwidths.iter().map(ToString::to_string));
        lines.extend(m.key.iter().map(ToString::to_string));
        lines.extend(m.attributes.iter().map(attribute_line));
    }
    let mut body = String::new();
    for (i, line) in lines.iter().enumerate() {
        // A value holding a line end would smuggle extra lines into the body.
        if line.contains(['\r', '\n']) {
            return Err(SdpError::ControlCharacter { line: i + 1 }.into());
        }
        body.push_str(line);
        body.push_str("\r\n");
    }
    Ok(SessionDescription::parse(bytes::Bytes::from(body))?)
}

/// An sdp-rs attribute as a line; `a=rtpmap` written with `/` before the encoding
/// parameters (sdp-rs's own `Display` writes a space there).
fn attribute_line(a: &sdp_rs::lines::Attribute) -> String {
    match a {
        sdp_rs::lines::Attribute::Rtpmap(r) => {
            let mut s = format!(
                "a=rtpmap:{} {}/{}",
                r.payload_type, r.encoding_name, r.clock_rate
            );
            if let Some(p) = r.encoding_params {
                s.push_str(&format!("/{p}"));
            }
            s
        }
        other => other.to_string(),
    }
}

impl TryFrom<&SessionDescription> for sdp_rs::SessionDescription {
    type Error = SdpRsError;

    fn try_from(sdp: &SessionDescription) -> Result<Self, Self::Error> {
        to_sdp_rs(sdp)
    }
}

impl TryFrom<SessionDescription> for sdp_rs::SessionDescription {
    type Error = SdpRsError;

    fn try_from(sdp: SessionDescription) -> Result<Self, Self::Error> {
        to_sdp_rs(&sdp)
    }
}

impl TryFrom<&sdp_rs::SessionDescription> for SessionDescription {
    type Error = SdpRsError;

    fn try_from(sdp: &sdp_rs::SessionDescription) -> Result<Self, Self::Error> {
        from_sdp_rs(sdp)
    }
}

impl TryFrom<sdp_rs::SessionDescription> for SessionDescription {
    type Error = SdpRsError;

    fn try_from(sdp: sdp_rs::SessionDescription) -> Result<Self, Self::Error> {
        from_sdp_rs(&sdp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn data(path: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(path);
        std::fs::read(p).expect("test data")
    }

    fn sip_body(path: &str) -> Vec<u8> {
        let msg = data(path);
        let at = msg.windows(4).position(|w| w == b"\r\n\r\n").expect("body");
        msg[at + 4..].to_vec()
    }

    fn parse(body: &[u8]) -> SessionDescription {
        SessionDescription::parse(Bytes::copy_from_slice(body)).expect("valid body")
    }

    const BASE: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n";

    #[test]
    fn conversion_equals_sdp_rs_parse_and_comes_back_unchanged() {
        let bodies = [
            data("sdp/lync-audio-offer.sdp"),
            data("sdp/webrtc-offer.sdp"),
            sip_body("rfc5118/valid/ipv6-in-sdp.sip"),
            sip_body("rfc5118/valid/ipv4-mapped-ipv6.sip"),
        ];
        for body in bodies {
            let ours = parse(&body);
            let theirs = to_sdp_rs(&ours).expect("representable");
            let direct =
                sdp_rs::SessionDescription::try_from(std::str::from_utf8(&body).unwrap()).unwrap();
            assert_eq!(theirs, direct);
            let back = SessionDescription::try_from(&theirs).unwrap();
            assert_eq!(back, ours);
            assert_eq!(
                back.to_bytes(),
                body,
                "RFC-ordered CRLF bodies survive byte for byte"
            );
        }
    }

    #[test]
    fn rtpmap_channels_survive_the_trip_through_sdp_rs() {
        let body = format!("{BASE}m=audio 1 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n");
        let theirs = sdp_rs::SessionDescription::try_from(&parse(body.as_bytes())).unwrap();
        assert!(
            theirs.to_string().contains("opus/48000 2"),
            "sdp-rs's own rewrite"
        );
        let back = from_sdp_rs(&theirs).unwrap();
        assert_eq!(back.to_bytes(), body.as_bytes());
    }

    #[test]
    fn refused_with_a_reason() {
        let cases: Vec<(Vec<u8>, SdpRsError)> = vec![
            (
                sip_body("rfc5118/valid/mult-ip-in-sdp.sip"),
                not_representable(2, "a non-IP o= address"),
            ),
            (
                format!("{BASE}r=99999999999999999 1h 0\r\n").into_bytes(),
                not_representable(6, "an r= time out of sdp-rs's range"),
            ),
            (
                format!("{BASE}x=1\r\n").into_bytes(),
                not_representable(6, "a line type unknown to sdp-rs"),
            ),
            (
                format!("{BASE}i=a\r\ni=b\r\n").into_bytes(),
                not_representable(7, "a second line of a type sdp-rs holds once"),
            ),
            (
                format!("{BASE}m=audio 1/300 RTP/AVP 0\r\n").into_bytes(),
                not_representable(6, "a port count above 255"),
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(to_sdp_rs(&parse(&body)).unwrap_err(), expected);
        }
        let lpc = parse(&sip_body("rfc4475/valid/sdp01.sip"));
        assert!(matches!(
            to_sdp_rs(&lpc),
            Err(SdpRsError::Rejected { line: 8, .. })
        ));
        let bad_bw = parse(format!("{BASE}b=AS:lots\r\n").as_bytes());
        assert!(matches!(
            to_sdp_rs(&bad_bw),
            Err(SdpRsError::Rejected { line: 6, .. })
        ));
    }

    #[test]
    fn session_version_keeps_its_spelling() {
        let body = "v=0\r\no=- 1 007 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n";
        let theirs = to_sdp_rs(&parse(body.as_bytes())).unwrap();
        assert_eq!(theirs.origin.sess_version, "007");
        assert_eq!(from_sdp_rs(&theirs).unwrap().to_bytes(), body.as_bytes());
    }

    #[test]
    fn malformed_typed_times_are_rejected_not_out_of_range() {
        for (line, n) in [("r=1.5h 1h 0", 6), ("z=2882844526 1x", 6)] {
            let body = format!("{BASE}{line}\r\n");
            assert!(
                matches!(to_sdp_rs(&parse(body.as_bytes())), Err(SdpRsError::Rejected { line, .. }) if line == n),
                "{line}"
            );
        }
        let body = format!("{BASE}z=2882844526 -99999999999999999h\r\n");
        assert_eq!(
            to_sdp_rs(&parse(body.as_bytes())).unwrap_err(),
            not_representable(6, "a z= offset out of sdp-rs's range")
        );
    }

    #[test]
    fn repeat_and_zone_in_range_convert() {
        let body = format!("{BASE}r=7d 1h 0 25h\r\nz=2882844526 -1h 2898848070 0\r\n");
        let theirs = to_sdp_rs(&parse(body.as_bytes())).unwrap();
        assert_eq!(theirs.times.first().repeat.len(), 1);
        assert!(theirs.times.first().zone.is_some());
        assert_eq!(from_sdp_rs(&theirs).unwrap().to_bytes(), body.as_bytes());
        assert!(typed_time_is_safe("-25h"));
        assert!(!typed_time_is_safe("99999999999999999"));
        assert!(!typed_time_is_safe("9999999999999d"));
        assert!(!typed_time_is_safe("1x"));
        assert!(!typed_time_is_safe("-"));
    }

    #[test]
    fn values_holding_line_ends_cannot_smuggle_lines() {
        let mut theirs =
            to_sdp_rs(&parse(format!("{BASE}m=audio 1 RTP/AVP 0\r\n").as_bytes())).unwrap();
        theirs.session_name = sdp_rs::lines::SessionName::new("x\r\nm=video 1 RTP/AVP 0".into());
        assert_eq!(
            from_sdp_rs(&theirs),
            Err(SdpRsError::Sdp(SdpError::ControlCharacter { line: 3 }))
        );
        theirs.session_name = sdp_rs::lines::SessionName::new("-".into());
        theirs.media_descriptions[0].media.fmt = String::new();
        assert!(matches!(
            from_sdp_rs(&theirs),
            Err(SdpRsError::Sdp(SdpError::InvalidField { letter: 'm', .. }))
        ));
    }
}
