//! SDP model tests: byte-exact round trips on real-world-looking bodies and the RFC 4475 /
//! RFC 5118 SDP bodies, the three sdp-rs failure cases, errors and limits, the mutation API,
//! property tests, and differential tests against sdp-rs.

use std::path::PathBuf;

use bytes::Bytes;
#[path = "support/cases.rs"]
mod support_cases;
use proptest::prelude::*;
use sip_core::sdp::{
    Connection, Direction, Fmtp, Line, Media, MediaDescription, Origin, Rtpmap, SdpError,
    SdpLimits, SessionDescription, Timing,
};
use support_cases::cases;

// ---- helpers --------------------------------------------------------------------------------

fn data(path: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The SDP body of a SIP message file: everything after the first blank line (the RFC 5118
/// messages' Content-Length values are known errata, so they are not used).
fn sip_body(path: &str) -> Vec<u8> {
    let msg = data(path);
    let at = msg
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("blank line");
    msg[at + 4..].to_vec()
}

const FILES: &[&str] = &[
    "sdp/lync-audio-offer.sdp",
    "sdp/webrtc-offer.sdp",
    "sdp/lync-im-offer.sdp",
];

const RFC_BODIES: &[&str] = &[
    "rfc4475/valid/wsinv.sip",
    "rfc4475/valid/sdp01.sip",
    "rfc5118/valid/ipv6-in-sdp.sip",
    "rfc5118/valid/mult-ip-in-sdp.sip",
    "rfc5118/valid/ipv4-mapped-ipv6.sip",
];

fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = FILES.iter().map(|f| (f.to_string(), data(f))).collect();
    out.extend(RFC_BODIES.iter().map(|f| (f.to_string(), sip_body(f))));
    out
}

fn parse(body: &[u8]) -> SessionDescription {
    SessionDescription::parse(Bytes::copy_from_slice(body))
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

fn to_lf(body: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(body)
        .replace("\r\n", "\n")
        .into_bytes()
}

fn without_final_eol(body: &[u8]) -> Vec<u8> {
    let mut b = body.to_vec();
    while matches!(b.last(), Some(b'\n' | b'\r')) {
        b.pop();
    }
    b
}

const BASE: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n";

fn err(body: &str) -> SdpError {
    SessionDescription::parse(Bytes::copy_from_slice(body.as_bytes()))
        .expect_err("body must be refused")
}

// ---- round trips ----------------------------------------------------------------------------

#[test]
fn round_trip_is_byte_exact_on_every_corpus_body_and_its_variants() {
    for (name, body) in corpus() {
        let crlf = parse(&body);
        assert_eq!(crlf.to_bytes(), body, "{name}");
        assert!(crlf.is_unchanged());

        let lf = to_lf(&body);
        let parsed_lf = parse(&lf);
        assert_eq!(parsed_lf.to_bytes(), lf, "{name} (LF)");
        assert_eq!(
            parsed_lf, crlf,
            "{name}: LF and CRLF bodies are the same description"
        );

        let bare = without_final_eol(&body);
        let parsed_bare = parse(&bare);
        assert_eq!(parsed_bare.to_bytes(), bare, "{name} (no final CRLF)");
        assert_eq!(parsed_bare, crlf, "{name}: the last line is kept");

        // The canonical form of a CRLF body is the body itself.
        let mut changed = parsed_lf.clone();
        let _ = changed.media_mut();
        assert!(!changed.is_unchanged());
        assert_eq!(changed.to_bytes(), body, "{name}: canonical form is CRLF");
    }
}

#[test]
fn zero_copy_lines_are_slices_of_the_body() {
    let body = Bytes::from(data("sdp/webrtc-offer.sdp"));
    let sdp = SessionDescription::parse(body.clone()).unwrap();
    let range = body.as_ptr() as usize..body.as_ptr() as usize + body.len();
    let line = &sdp.media()[0].lines()[0];
    assert!(range.contains(&(line.value_bytes().as_ptr() as usize)));
}

// ---- typed access on real-world bodies ------------------------------------------------------

#[test]
fn lync_audio_offer() {
    let sdp = parse(&data("sdp/lync-audio-offer.sdp"));
    assert_eq!(sdp.origin(), &Origin::new("-", "0", 0, "10.0.0.21"));
    assert_eq!(sdp.session_name(), "session");
    assert_eq!(sdp.connection(), Some(Connection::new("10.0.0.21")));
    assert_eq!(sdp.timing(), Some(Timing { start: 0, stop: 0 }));
    assert!(sdp
        .lines()
        .iter()
        .any(|l| l.letter() == 'b' && l.value() == "CT:99980"));
    let audio = &sdp.media()[0];
    assert_eq!(audio.media_type(), "audio");
    assert_eq!(audio.port(), 19512);
    assert_eq!(audio.proto(), "RTP/SAVP");
    assert_eq!(audio.formats().len(), 15);
    let g722 = audio.rtpmap(117).unwrap();
    assert_eq!(g722.encoding_parameters.as_deref(), Some("2"));
    assert_eq!(g722.to_string(), "117 G722/8000/2");
    assert_eq!(audio.rtpmaps().count(), 15);
    let silk = audio.fmtp("104").unwrap();
    assert_eq!(
        silk.params().collect::<Vec<_>>(),
        vec![("useinbandfec", Some("1")), ("usedtx", Some("0"))]
    );
    assert_eq!(
        audio.attribute_value("x-ssrc-range"),
        Some("1163640064-1163640064")
    );
    assert_eq!(audio.attributes_named("candidate").count(), 4);
    assert_eq!(audio.attributes_named("crypto").count(), 2);
    assert!(audio
        .attribute_value("candidate")
        .unwrap()
        .ends_with("typ host "));
    assert_eq!(
        audio.attribute_value("rtcp-fb"),
        Some("* x-message app send:dsh recv:dsh")
    );
    assert_eq!(audio.direction(), None);
    assert_eq!(sdp.effective_direction(audio), Direction::SendRecv);
}

#[test]
fn webrtc_offer() {
    let sdp = parse(&data("sdp/webrtc-offer.sdp"));
    assert_eq!(sdp.origin().session_id, "4611731400430051336");
    assert_eq!(sdp.origin().session_version, 2);
    assert_eq!(sdp.attribute_value("group"), Some("BUNDLE 0 1"));
    assert!(sdp.has_attribute("extmap-allow-mixed"));
    assert_eq!(sdp.connection(), None);
    let [audio, video] = sdp.media() else {
        panic!("two media sections")
    };
    assert_eq!(audio.proto(), "UDP/TLS/RTP/SAVPF");
    let opus = audio.rtpmap(111).unwrap();
    assert_eq!(opus, Rtpmap::new(111, "opus", 48000).with_parameters("2"));
    assert_eq!(opus.channels(), Some(2));
    assert_eq!(opus.to_string(), "111 opus/48000/2");
    assert_eq!(
        audio.fmtp("111").unwrap().parameters,
        "minptime=10;useinbandfec=1"
    );
    assert_eq!(
        sdp.effective_connection(audio),
        Some(Connection::new("0.0.0.0"))
    );
    assert_eq!(sdp.effective_direction(audio), Direction::SendRecv);
    assert_eq!(sdp.effective_direction(video), Direction::RecvOnly);
    assert_eq!(video.attributes_named("rtcp-fb").count(), 3);
}

#[test]
fn lync_im_offer() {
    let sdp = parse(&data("sdp/lync-im-offer.sdp"));
    assert_eq!(sdp.origin().address, "lyncfe01.contoso.test");
    assert_eq!(sdp.origin().ip(), None);
    let c = sdp.connection().unwrap();
    assert_eq!(c.address, "lyncfe01.contoso.test");
    assert_eq!(c.ip(), None);
    let im = &sdp.media()[0];
    assert_eq!(im.media(), &Media::new("message", 5060, "sip", ["null"]));
    assert_eq!(
        im.accept_types(),
        vec!["text/plain", "text/html", "multipart/alternative"]
    );
    assert_eq!(im.rtpmaps().count(), 0);
}

#[test]
fn trailing_whitespace_on_attribute_lines_is_tolerated_and_kept() {
    let body = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                m=audio 5004 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000 \r\na=sendonly \t\r\n";
    let sdp = parse(body.as_bytes());
    let audio = &sdp.media()[0];
    assert_eq!(audio.direction(), Some(Direction::SendOnly));
    assert_eq!(audio.rtpmap(0).map(|r| r.clock_rate), Some(8000));
    assert_eq!(sdp.to_string(), body, "the lines are kept as written");
}

#[test]
fn rfc4475_bodies() {
    for file in ["rfc4475/valid/wsinv.sip", "rfc4475/valid/sdp01.sip"] {
        let sdp = parse(&sip_body(file));
        assert_eq!(sdp.origin().username, "mhandley");
        assert_eq!(sdp.origin().session_version, 7_272_939);
        assert_eq!(sdp.media().len(), 2);
        let video = &sdp.media()[1];
        // `a=rtpmap:31 LPC` has no clock rate: not a typed rtpmap, still kept.
        assert_eq!(video.rtpmap(31), None);
        assert_eq!(video.attribute_value("rtpmap"), Some("31 LPC"));
        assert_eq!(sdp.media()[0].formats(), ["0", "12"]);
    }
}

#[test]
fn rfc5118_bodies() {
    let sdp = parse(&sip_body("rfc5118/valid/ipv6-in-sdp.sip"));
    assert_eq!(sdp.origin().addr_type, "IP6");
    assert_eq!(sdp.origin().ip(), Some("2001:db8::20".parse().unwrap()));
    assert_eq!(sdp.origin().session_id, "971731711378798081");
    assert_eq!(
        sdp.connection().unwrap().ip(),
        Some("2001:db8::20".parse().unwrap())
    );
    assert_eq!(sdp.session_name(), "Live video feed for today's meeting");

    let sdp = parse(&sip_body("rfc5118/valid/mult-ip-in-sdp.sip"));
    assert_eq!(sdp.session_name(), "");
    assert_eq!(sdp.origin().address, "host.example.com");
    assert_eq!(sdp.connection(), None);
    let audio = &sdp.media()[0];
    let video = &sdp.media()[1];
    assert_eq!(
        sdp.effective_connection(audio),
        Some(Connection::new("192.0.2.1"))
    );
    assert_eq!(
        sdp.effective_connection(video),
        Some(Connection::new("2001:db8::1"))
    );

    let sdp = parse(&sip_body("rfc5118/valid/ipv4-mapped-ipv6.sip"));
    assert_eq!(sdp.origin().address, "::ffff:192.0.2.2");
}

#[test]
fn lenient_values() {
    let sdp =
        parse(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns= \r\nt=0 0\r\nm=audio  49170  RTP/AVP 0 \r\n");
    assert_eq!(sdp.session_name(), " ");
    assert_eq!(sdp.media()[0].port(), 49170);
    assert_eq!(sdp.media()[0].formats(), ["0"]);
    // Multicast suffixes.
    let sdp = parse(format!("{BASE}m=audio 1 RTP/AVP 0\r\nc=IN IP4 233.252.0.1/127/3\r\nc=IN IP6 ff00::db8:0:101/3\r\n").as_bytes());
    let c: Vec<_> = sdp.media()[0].connections().collect();
    assert_eq!((c[0].ttl, c[0].count), (Some(127), Some(3)));
    assert_eq!((c[1].ttl, c[1].count), (None, Some(3)));
    assert_eq!(c[1].to_string(), "IN IP6 ff00::db8:0:101/3");
    // Unknown line types and trailing empty lines are kept / tolerated.
    let body = format!("{BASE}x=unknown\r\nm=audio 1 RTP/AVP 0\r\ny=other\r\n\r\n");
    let sdp = parse(body.as_bytes());
    assert_eq!(sdp.to_bytes(), body.as_bytes());
    assert!(sdp.lines().iter().any(|l| l.letter() == 'x'));
    assert_eq!(sdp.media()[0].lines()[0], Line::new('y', "other").unwrap());
}

// ---- the three sdp-rs failure cases ---------------------------------------------------------

#[test]
fn huge_repeat_time_is_kept_as_text() {
    let body = format!("{BASE}r=99999999999999999 1h 0\r\nm=audio 1 RTP/AVP 0\r\n");
    let sdp = parse(body.as_bytes());
    assert_eq!(sdp.to_bytes(), body.as_bytes());
    assert!(sdp
        .lines()
        .iter()
        .any(|l| l.value() == "99999999999999999 1h 0"));
}

#[test]
fn body_without_final_crlf_keeps_the_last_media_section() {
    let body = format!("{BASE}m=audio 1 RTP/AVP 0\r\nm=video 2 RTP/AVP 31\r\na=sendonly");
    let sdp = parse(body.as_bytes());
    assert_eq!(sdp.media().len(), 2);
    assert_eq!(sdp.media()[1].direction(), Some(Direction::SendOnly));
    assert_eq!(sdp.to_bytes(), body.as_bytes());
}

#[test]
fn rtpmap_channels_are_kept_as_written() {
    let body = format!("{BASE}m=audio 1 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n");
    let mut sdp = parse(body.as_bytes());
    sdp.bump_version();
    let out = sdp.to_string();
    assert!(out.contains("a=rtpmap:111 opus/48000/2\r\n"), "{out}");
}

// ---- errors and limits ----------------------------------------------------------------------

#[test]
fn structural_errors_name_the_line() {
    assert_eq!(err(""), SdpError::Empty);
    assert_eq!(err("\r\n\r\n"), SdpError::Empty);
    assert_eq!(err("o=- 1 1 IN IP4 a\r\n"), SdpError::VersionNotFirst);
    assert_eq!(err("v=1\r\n"), SdpError::UnsupportedVersion { line: 1 });
    assert_eq!(err("v=0\r\n"), SdpError::Missing { letter: 'o' });
    assert_eq!(
        err("v=0\r\ns=-\r\n"),
        SdpError::OutOfOrder {
            line: 2,
            letter: 's'
        }
    );
    assert_eq!(
        err("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\ns=-\r\nt=0 0\r\n"),
        SdpError::Repeated {
            line: 4,
            letter: 's'
        }
    );
    assert_eq!(
        err("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nm=audio 1 RTP/AVP 0\r\n"),
        SdpError::Missing { letter: 't' }
    );
    assert_eq!(
        err(&format!("{BASE}m=audio 1 RTP/AVP 0\r\nt=0 0\r\n")),
        SdpError::NotAllowedInMedia {
            line: 7,
            letter: 't'
        }
    );
    assert_eq!(
        err(&format!("{BASE}hello\r\n")),
        SdpError::MalformedLine { line: 6 }
    );
    assert_eq!(
        err(&format!("{BASE}ab=c\r\n")),
        SdpError::MalformedLine { line: 6 }
    );
    assert_eq!(
        err(&format!("{BASE}\r\na=x\r\n")),
        SdpError::EmptyLine { line: 6 }
    );
    assert_eq!(
        err(&format!("{BASE}a=\r\n")),
        SdpError::InvalidAttribute { line: 6 }
    );
    assert_eq!(
        err(&format!("{BASE}a=x\0y\r\n")),
        SdpError::ControlCharacter { line: 6 }
    );
    assert_eq!(
        err(&format!("{BASE}a=x\ry\r\n")),
        SdpError::ControlCharacter { line: 6 }
    );
    let mut bad_utf8 = BASE.as_bytes().to_vec();
    bad_utf8.extend_from_slice(b"s=\xff\r\n");
    assert_eq!(
        SessionDescription::parse_slice(&bad_utf8).unwrap_err(),
        SdpError::NotUtf8 { line: 6 }
    );
    assert!(matches!(
        err(&format!("{BASE}m=audio 1 RTP/AVP\r\n")),
        SdpError::InvalidField {
            line: 6,
            letter: 'm',
            ..
        }
    ));
    assert!(matches!(
        err(&format!("{BASE}c=IN IP4\r\n")),
        SdpError::InvalidField {
            line: 6,
            letter: 'c',
            ..
        }
    ));
    assert!(matches!(
        err("v=0\r\no=- 1 x IN IP4 a\r\ns=-\r\nt=0 0\r\n"),
        SdpError::InvalidField {
            line: 2,
            letter: 'o',
            ..
        }
    ));
}

/// RFC 8866 §9: at most one session-level `c=` (media sections may hold several, for
/// layered multicast). With two, `connection()` silently picked the first.
#[test]
fn a_second_session_level_connection_is_refused() {
    assert_eq!(
        err(&format!(
            "{BASE}c=IN IP4 192.0.2.9\r\nm=audio 1 RTP/AVP 0\r\n"
        )),
        SdpError::Repeated {
            line: 6,
            letter: 'c'
        }
    );
    let mut sdp = parse(
        format!(
            "{BASE}m=audio 1 RTP/AVP 0\r\nc=IN IP4 233.252.0.1/127\r\nc=IN IP4 233.252.0.2/127\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(sdp.media()[0].connections().count(), 2);
    assert!(sdp
        .insert_line(Line::new('c', "IN IP4 192.0.2.9").unwrap())
        .is_err());
    assert_eq!(sdp.connection(), Some(Connection::new("192.0.2.1")));
    sdp.remove_lines('c');
    sdp.insert_line(Line::new('c', "IN IP4 192.0.2.9").unwrap())
        .unwrap();
    assert_eq!(sdp.connection(), Some(Connection::new("192.0.2.9")));
}

#[test]
fn numbers_that_overflow_are_errors_not_wrapped() {
    assert_eq!(
        err("v=0\r\no=- 1 99999999999999999999999 IN IP4 a\r\ns=-\r\nt=0 0\r\n"),
        SdpError::NumberOutOfRange {
            line: 2,
            field: "sess-version"
        }
    );
    assert_eq!(
        err(&format!("{BASE}m=audio 65536 RTP/AVP 0\r\n")),
        SdpError::NumberOutOfRange {
            line: 6,
            field: "port"
        }
    );
    assert_eq!(
        err("v=0\r\no=- 1 1 IN IP4 a\r\ns=-\r\nt=99999999999999999999 0\r\n"),
        SdpError::NumberOutOfRange {
            line: 4,
            field: "start-time"
        }
    );
    assert_eq!(
        err(&format!("{BASE}c=IN IP4 233.252.0.1/4294967296\r\n")),
        SdpError::NumberOutOfRange {
            line: 6,
            field: "ttl"
        }
    );
    // The largest u64 is fine; a rtpmap clock rate that overflows is just not typed.
    let mut sdp = parse(
        b"v=0\r\no=- 1 18446744073709551615 IN IP4 a\r\ns=-\r\nt=0 0\r\n\
          m=audio 1 RTP/AVP 0\r\na=rtpmap:0 PCMU/99999999999\r\n",
    );
    assert_eq!(sdp.origin().session_version, u64::MAX);
    assert_eq!(sdp.media()[0].rtpmap(0), None);
    assert_eq!(sdp.bump_version(), u64::MAX, "saturates, never wraps");
}

#[test]
fn limits_are_typed_errors() {
    let limits = SdpLimits::default();
    assert_eq!(limits.max_body_size, 65_536);
    assert_eq!(limits.max_lines, 1024);
    assert_eq!(limits.max_media, 64);
    assert_eq!(limits.max_line_length, 4096);

    let huge = vec![b'a'; 70_000];
    assert_eq!(
        SessionDescription::parse_slice(&huge).unwrap_err(),
        SdpError::BodyTooLarge {
            size: 70_000,
            limit: 65_536
        }
    );
    let many_lines = format!("{BASE}{}", "a=x\r\n".repeat(1100));
    assert_eq!(err(&many_lines), SdpError::TooManyLines { limit: 1024 });
    let long_line = format!("{BASE}a=x:{}\r\n", "y".repeat(5000));
    assert_eq!(
        err(&long_line),
        SdpError::LineTooLong {
            line: 6,
            limit: 4096
        }
    );
    let many_media = format!("{BASE}{}", "m=audio 1 RTP/AVP 0\r\n".repeat(65));
    assert_eq!(
        err(&many_media),
        SdpError::TooManyMedia {
            line: 70,
            limit: 64
        }
    );

    let tight = SdpLimits {
        max_media: 1,
        ..SdpLimits::DEFAULT
    };
    let two = format!("{BASE}m=audio 1 RTP/AVP 0\r\nm=video 1 RTP/AVP 31\r\n");
    assert_eq!(
        SessionDescription::parse_with_limits(Bytes::from(two), &tight).unwrap_err(),
        SdpError::TooManyMedia { line: 7, limit: 1 }
    );
}

// ---- mutation API ---------------------------------------------------------------------------

#[test]
fn reject_stream_and_bump_version_serialize_canonically() {
    let lf = to_lf(&data("sdp/lync-im-offer.sdp"));
    let mut sdp = parse(&lf);
    sdp.media_mut()[0].set_port(0);
    assert_eq!(sdp.bump_version(), 1);
    assert_eq!(
        sdp.to_string(),
        "v=0\r\no=- 0 1 IN IP4 lyncfe01.contoso.test\r\ns=session\r\n\
         c=IN IP4 lyncfe01.contoso.test\r\nt=0 0\r\nm=message 0 sip null\r\n\
         a=accept-types:text/plain text/html multipart/alternative\r\n"
    );
    assert!(sdp.media()[0].is_rejected());
}

#[test]
fn direction_session_default_and_media_override() {
    let body = format!(
        "{BASE}a=sendonly\r\nm=audio 1 RTP/AVP 0\r\nm=video 2 RTP/AVP 31\r\na=inactive\r\n"
    );
    let mut sdp = parse(body.as_bytes());
    assert_eq!(sdp.direction(), Some(Direction::SendOnly));
    assert_eq!(
        sdp.effective_direction(&sdp.media()[0]),
        Direction::SendOnly
    );
    assert_eq!(
        sdp.effective_direction(&sdp.media()[1]),
        Direction::Inactive
    );
    assert_eq!(Direction::SendOnly.reversed(), Direction::RecvOnly);

    sdp.set_direction(None);
    sdp.media_mut()[1].set_direction(Some(Direction::RecvOnly));
    sdp.media_mut()[0].set_direction(Some(Direction::SendRecv));
    assert_eq!(
        sdp.to_string(),
        format!(
            "{BASE}m=audio 1 RTP/AVP 0\r\na=sendrecv\r\nm=video 2 RTP/AVP 31\r\na=recvonly\r\n"
        )
    );
}

#[test]
fn retain_formats_drops_their_rtpmap_fmtp_and_rtcp_fb() {
    let mut sdp = parse(&data("sdp/webrtc-offer.sdp"));
    let audio = &mut sdp.media_mut()[0];
    audio.retain_formats(|f| f == "111" || f == "126").unwrap();
    assert_eq!(audio.formats(), ["111", "126"]);
    let names: Vec<String> = audio
        .lines()
        .iter()
        .filter_map(|l| l.attribute())
        .filter(|a| ["rtpmap", "fmtp", "rtcp-fb"].contains(&a.name))
        .map(|a| format!("{}:{}", a.name, a.value.unwrap_or_default()))
        .collect();
    assert_eq!(
        names,
        [
            "rtpmap:111 opus/48000/2",
            "rtcp-fb:111 transport-cc",
            "fmtp:111 minptime=10;useinbandfec=1",
            "rtpmap:126 telephone-event/8000"
        ]
    );
    assert!(audio.has_attribute("ssrc"), "other attributes stay");
    assert_eq!(
        audio.retain_formats(|_| false),
        Err(SdpError::InvalidValue {
            what: "m= fmt list",
            why: "at least one format is required"
        })
    );
    assert_eq!(
        audio.formats(),
        ["111", "126"],
        "refused change changes nothing"
    );
    let text = sdp.to_string();
    assert!(text.contains("m=audio 9 UDP/TLS/RTP/SAVPF 111 126\r\n"));
    // The rtcp-fb wildcard survives any format change.
    let mut lync = parse(&data("sdp/lync-audio-offer.sdp"));
    lync.media_mut()[0].set_formats(["0", "101"]).unwrap();
    let audio = &lync.media()[0];
    assert_eq!(audio.rtpmaps().count(), 2);
    assert_eq!(audio.fmtps().count(), 1);
    assert!(audio.has_attribute("rtcp-fb"));
}

#[test]
fn set_rtpmap_and_fmtp_replace_or_insert() {
    let mut md = MediaDescription::new(Media::new("audio", 5004, "RTP/AVP", ["0", "101"])).unwrap();
    md.set_rtpmap(&Rtpmap::new(0, "PCMU", 8000)).unwrap();
    md.push_attribute("ptime", Some("20")).unwrap();
    md.set_rtpmap(&Rtpmap::new(101, "telephone-event", 8000))
        .unwrap();
    md.set_fmtp(&Fmtp::new("101", "0-15")).unwrap();
    md.set_fmtp(&Fmtp::new("101", "0-16")).unwrap();
    md.set_rtpmap(&Rtpmap::new(0, "PCMU", 8000).with_parameters("1"))
        .unwrap();
    md.set_connection(Some(&Connection::new("192.0.2.9")))
        .unwrap();
    let lines: Vec<String> = md
        .lines()
        .iter()
        .map(|l| format!("{}={}", l.letter(), l.value()))
        .collect();
    assert_eq!(
        lines,
        [
            "c=IN IP4 192.0.2.9",
            "a=rtpmap:0 PCMU/8000/1",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16",
            "a=ptime:20"
        ]
    );
    assert!(md.remove_fmtp("101"));
    assert!(!md.remove_fmtp("101"));
    assert_eq!(md.remove_attributes("ptime"), 1);
    assert!(md.insert_line(Line::new('t', "0 0").unwrap()).is_err());
    assert!(md.set_rtpmap(&Rtpmap::new(200, "X", 1)).is_err());
}

/// RFC 8866 §6.6: `<encoding name>/<clock rate>[/<encoding parameters>]` has at most three
/// fields, so a `/` in the parameters would write a line that no longer reads back.
#[test]
fn set_rtpmap_refuses_a_slash_in_the_encoding_parameters() {
    let mut md = MediaDescription::new(Media::new("audio", 5004, "RTP/AVP", ["96"])).unwrap();
    assert!(matches!(
        md.set_rtpmap(&Rtpmap::new(96, "L16", 8000).with_parameters("2/3")),
        Err(SdpError::InvalidValue { .. })
    ));
    assert!(md.lines().is_empty(), "nothing written");
    md.set_rtpmap(&Rtpmap::new(96, "L16", 8000).with_parameters("2"))
        .unwrap();
    assert_eq!(md.rtpmap(96).and_then(|r| r.channels()), Some(2));
}

#[test]
fn builder_makes_a_canonical_description_that_parses_back() {
    let mut audio =
        MediaDescription::new(Media::new("audio", 49170, "RTP/AVP", ["0", "8"])).unwrap();
    audio.set_rtpmap(&Rtpmap::new(0, "PCMU", 8000)).unwrap();
    audio.set_rtpmap(&Rtpmap::new(8, "PCMA", 8000)).unwrap();
    audio.set_direction(Some(Direction::SendRecv));
    let im = MediaDescription::new(Media::new("message", 5060, "sip", ["null"]))
        .and_then(|mut m| {
            m.push_attribute("accept-types", Some("text/plain"))?;
            Ok(m)
        })
        .unwrap();
    let sdp = SessionDescription::builder(Origin::new("-", "42", 1, "app.contoso.test"))
        .session_name("session")
        .connection(Connection::new("2001:db8::5"))
        .attribute("x-mediabw", Some("main-audio send=64;recv=64"))
        .media(audio)
        .media(im)
        .build()
        .unwrap();
    let text = "v=0\r\no=- 42 1 IN IP4 app.contoso.test\r\ns=session\r\nc=IN IP6 2001:db8::5\r\n\
                t=0 0\r\na=x-mediabw:main-audio send=64;recv=64\r\n\
                m=audio 49170 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n\
                m=message 5060 sip null\r\na=accept-types:text/plain\r\n";
    assert_eq!(sdp.to_string(), text);
    assert_eq!(parse(text.as_bytes()), sdp);

    let bad = SessionDescription::builder(Origin::new("a b", "1", 1, "h")).build();
    assert!(matches!(bad, Err(SdpError::InvalidValue { .. })));
    let bad = SessionDescription::builder(Origin::new("-", "1", 1, "h"))
        .session_name("x\r\nm=audio 1 RTP/AVP 0")
        .build();
    assert!(
        matches!(bad, Err(SdpError::InvalidValue { .. })),
        "no line injection"
    );
}

#[test]
fn session_level_edits_go_where_rfc_8866_orders_them() {
    let mut sdp = parse(
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\na=tool:x\r\nm=audio 1 RTP/AVP 0\r\n",
    );
    sdp.set_connection(Some(&Connection::new("192.0.2.7")))
        .unwrap();
    sdp.insert_line(Line::new('b', "AS:64").unwrap()).unwrap();
    sdp.push_attribute("x-ms-foo", None).unwrap();
    sdp.set_session_name("call").unwrap();
    sdp.set_origin(Origin::new("alice", "1", 5, "192.0.2.7"))
        .unwrap();
    assert_eq!(
        sdp.to_string(),
        "v=0\r\no=alice 1 5 IN IP4 192.0.2.7\r\ns=call\r\nc=IN IP4 192.0.2.7\r\nb=AS:64\r\n\
         t=0 0\r\na=tool:x\r\na=x-ms-foo\r\nm=audio 1 RTP/AVP 0\r\n"
    );
    assert_eq!(sdp.remove_attributes("tool"), 1);
    assert_eq!(sdp.remove_lines('b'), 1);
    assert_eq!(sdp.remove_lines('o'), 0);
    sdp.set_connection(None).unwrap();
    assert_eq!(sdp.connection(), None);
    assert!(sdp
        .insert_line(Line::new('m', "audio 1 RTP/AVP 0").unwrap())
        .is_err());
    assert!(sdp.insert_line(Line::new('c', "IN").unwrap()).is_err());
    assert!(Line::new('1', "x").is_err());
    assert!(Line::new('a', "x\ny").is_err());
    let mut extra = MediaDescription::new(Media::new("video", 0, "RTP/AVP", ["31"])).unwrap();
    extra.retain_lines(|_| true);
    sdp.push_media(extra);
    assert_eq!(sdp.media().len(), 2);
}

/// RFC 8866 §5: `z=` comes after every time description (`t=` and its `r=` lines).
#[test]
fn inserted_time_lines_stay_before_the_zone_adjustments() {
    let mut sdp = parse(format!("{BASE}r=7d 1h 0\r\nz=2882844526 -1h\r\nk=prompt\r\n").as_bytes());
    sdp.insert_line(Line::new('t', "3034423619 3042462419").unwrap())
        .unwrap();
    sdp.insert_line(Line::new('r', "1d 1h 0").unwrap()).unwrap();
    assert_eq!(
        sdp.to_string(),
        format!(
            "{BASE}r=7d 1h 0\r\nt=3034423619 3042462419\r\nr=1d 1h 0\r\n\
             z=2882844526 -1h\r\nk=prompt\r\n"
        )
    );
    assert_eq!(parse(sdp.to_string().as_bytes()), sdp);
}

// ---- property tests -------------------------------------------------------------------------

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9.+_-]{0,11}"
}

fn ip() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| std::net::Ipv4Addr::from(o).to_string()),
        any::<[u16; 8]>().prop_map(|o| std::net::Ipv6Addr::from(o).to_string()),
    ]
}

fn media() -> impl Strategy<Value = MediaDescription> {
    (
        prop::sample::select(vec!["audio", "video", "message", "application"]),
        any::<u16>(),
        prop::sample::select(vec!["RTP/AVP", "RTP/SAVP", "UDP/TLS/RTP/SAVPF", "sip"]),
        prop::collection::btree_set(0u8..128, 1..6),
        prop::option::of(prop::sample::select(vec![
            Direction::SendRecv,
            Direction::SendOnly,
            Direction::RecvOnly,
            Direction::Inactive,
        ])),
        // sdp-rs reads `a=x:` as `a=x` (a documented loss), so values are never empty here.
        prop::collection::vec((token(), prop::option::of("[ -~]{1,30}")), 0..4),
        prop::option::of(ip()),
    )
        .prop_map(|(kind, port, proto, pts, dir, attrs, conn)| {
            let pts: Vec<String> = pts.iter().map(u8::to_string).collect();
            let mut md = MediaDescription::new(Media::new(kind, port, proto, pts.clone())).unwrap();
            if let Some(ip) = conn {
                md.set_connection(Some(&Connection::new(ip))).unwrap();
            }
            for (i, pt) in pts.iter().enumerate() {
                let mut map = Rtpmap::new(pt.parse().unwrap(), format!("codec{i}"), 8000);
                if i % 2 == 1 {
                    map = map.with_parameters("2");
                }
                md.set_rtpmap(&map).unwrap();
                if i == 0 {
                    md.set_fmtp(&Fmtp::new(pt.clone(), "a=1;b=2")).unwrap();
                }
            }
            for (name, value) in attrs {
                md.push_attribute(&format!("x-{name}"), value.as_deref())
                    .unwrap();
            }
            md.set_direction(dir);
            md
        })
}

fn description() -> impl Strategy<Value = SessionDescription> {
    (
        token(),
        1u64..u64::MAX,
        any::<u64>(),
        ip(),
        "[ -~]{0,20}",
        prop::option::of(ip()),
        (any::<u32>(), any::<u32>()),
        prop::collection::vec(media(), 0..4),
    )
        .prop_map(
            |(user, id, version, addr, name, conn, (start, stop), media)| {
                let mut b =
                    SessionDescription::builder(Origin::new(user, id.to_string(), version, addr))
                        .session_name(name)
                        .timing(Timing {
                            start: start.into(),
                            stop: stop.into(),
                        });
                if let Some(c) = conn {
                    b = b.connection(Connection::new(c));
                }
                for m in media {
                    b = b.media(m);
                }
                b.build().unwrap()
            },
        )
}

/// Byte soup shaped like SDP, to reach deep parser paths more often than uniform bytes do.
fn sdp_like() -> impl Strategy<Value = Vec<u8>> {
    let line = (
        prop::sample::select(b"vosiuepcbtrzkamxV=".to_vec()),
        prop_oneof![
            "[ -~]{0,30}",
            Just("0".to_string()),
            Just("- 1 1 IN IP4 192.0.2.1".to_string()),
            Just("0 0".to_string()),
            Just("audio 9 RTP/AVP 0 111".to_string()),
            Just("IN IP6 ::1/3".to_string()),
            Just("rtpmap:111 opus/48000/2".to_string()),
            Just("99999999999999999999 1h 0".to_string()),
        ],
        prop::sample::select(vec!["\r\n", "\n", "\r", ""]),
    )
        .prop_map(|(letter, value, eol)| {
            let mut l = vec![letter, b'='];
            l.extend_from_slice(value.as_bytes());
            l.extend_from_slice(eol.as_bytes());
            l
        });
    prop::collection::vec(line, 0..24).prop_map(|lines| {
        let mut out = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\n".to_vec();
        for l in lines {
            out.extend_from_slice(&l);
        }
        out
    })
}

fn check_no_panic_and_round_trip(data: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(sdp) = SessionDescription::parse_slice(data) {
        prop_assert_eq!(&sdp.to_bytes()[..], data);
        let mut canonical = sdp.clone();
        let _ = canonical.media_mut();
        let again = SessionDescription::parse(canonical.to_bytes()).unwrap();
        prop_assert_eq!(&again, &sdp);
        prop_assert_eq!(again.to_bytes(), canonical.to_bytes());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(512)))]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..1024)) {
        check_no_panic_and_round_trip(&data)?;
    }

    #[test]
    fn sdp_like_bytes_never_panic_and_round_trip(data in sdp_like()) {
        check_no_panic_and_round_trip(&data)?;
    }

    #[test]
    fn parse_of_serialize_is_identity(sdp in description()) {
        let bytes = sdp.to_bytes();
        let parsed = SessionDescription::parse(bytes.clone()).unwrap();
        prop_assert_eq!(&parsed, &sdp);
        prop_assert_eq!(parsed.to_bytes(), bytes);
    }

}

// ---- differential tests against sdp-rs ------------------------------------------------------

/// sdp-rs is the oracle: on every body both accept, the session and media lines must agree.
/// `SDP_RS_REFUSES` and `where_sdp_rs_is_wrong` list where sdp-rs is wrong, and why.
#[cfg(feature = "interop")]
mod differential {
    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(super::cases(256)))]

        #[test]
        fn sdp_rs_agrees_on_generated_descriptions(sdp in description()) {
            let text = sdp.to_string();
            let theirs = sdp_rs::SessionDescription::try_from(text.as_str())
                .map_err(|e| TestCaseError::fail(format!("sdp-rs refused: {e}\n{text}")))?;
            let disagreements = differences(&sdp, &theirs);
            prop_assert!(disagreements.is_empty(), "{:?}\n{}", disagreements, text);
        }
    }

    /// Where our typed and raw view of a body disagrees with sdp-rs's parse of it. sdp-rs's
    /// known display rewrite of `a=rtpmap` with encoding parameters is compared on fields.
    fn differences(ours: &SessionDescription, theirs: &sdp_rs::SessionDescription) -> Vec<String> {
        let mut d = Vec::new();
        let mut check = |what: &str, a: String, b: String| {
            if a != b {
                d.push(format!("{what}: ours {a:?} sdp-rs {b:?}"));
            }
        };
        let o = ours.origin();
        let t = &theirs.origin;
        check("o= username", o.username.clone(), t.username.clone());
        check("o= sess-id", o.session_id.clone(), t.sess_id.clone());
        check(
            "o= sess-version",
            o.session_version.to_string(),
            t.sess_version.clone(),
        );
        check("o= nettype", o.net_type.clone(), t.nettype.to_string());
        check("o= addrtype", o.addr_type.clone(), t.addrtype.to_string());
        check(
            "o= address",
            format!("{:?}", o.ip()),
            format!("{:?}", Some(t.unicast_address)),
        );
        check(
            "s=",
            ours.session_name().into(),
            theirs.session_name.value().into(),
        );
        check(
            "session c=",
            format!("{:?}", ours.connection().map(|c| connection_text(&c))),
            format!(
                "{:?}",
                theirs
                    .connection
                    .as_ref()
                    .map(|c| c.to_string()[2..].to_string())
            ),
        );
        let our_times: Vec<String> = ours
            .lines()
            .iter()
            .filter(|l| l.letter() == 't')
            .filter_map(|l| Timing::parse(l.value(), 0).ok())
            .map(|t| t.to_string())
            .collect();
        let their_times: Vec<String> = theirs
            .times
            .iter()
            .map(|t| format!("{} {}", t.active.start, t.active.stop))
            .collect();
        check("t=", format!("{our_times:?}"), format!("{their_times:?}"));
        check(
            "session a=",
            format!("{:?}", attribute_texts(ours.lines())),
            format!("{:?}", their_attribute_texts(&theirs.attributes)),
        );
        check(
            "media count",
            ours.media().len().to_string(),
            theirs.media_descriptions.len().to_string(),
        );
        for (i, (m, tm)) in ours
            .media()
            .iter()
            .zip(&theirs.media_descriptions)
            .enumerate()
        {
            let media = m.media();
            check(
                &format!("m[{i}] type"),
                media.media_type.clone(),
                tm.media.media.to_string(),
            );
            check(
                &format!("m[{i}] port"),
                media.port.to_string(),
                tm.media.port.to_string(),
            );
            check(
                &format!("m[{i}] port count"),
                format!("{:?}", media.port_count),
                format!("{:?}", tm.media.num_of_ports),
            );
            check(
                &format!("m[{i}] proto"),
                media.proto.clone(),
                tm.media.proto.to_string(),
            );
            check(
                &format!("m[{i}] fmt"),
                media.formats.join(" "),
                tm.media.fmt.clone(),
            );
            check(
                &format!("m[{i}] c="),
                format!(
                    "{:?}",
                    m.connections()
                        .map(|c| connection_text(&c))
                        .collect::<Vec<_>>()
                ),
                format!(
                    "{:?}",
                    tm.connections
                        .iter()
                        .map(|c| c.to_string()[2..].to_string())
                        .collect::<Vec<_>>()
                ),
            );
            check(
                &format!("m[{i}] a="),
                format!("{:?}", attribute_texts(m.lines())),
                format!("{:?}", their_attribute_texts(&tm.attributes)),
            );
        }
        d
    }

    fn connection_text(c: &Connection) -> String {
        // sdp-rs prints its `IpAddr`, so compare on the IP's canonical text.
        let mut c = c.clone();
        if let Some(ip) = c.ip() {
            c.address = ip.to_string();
        }
        c.to_string()
    }

    /// Our attributes as `name[:value]`, with a well-formed rtpmap in canonical typed form.
    fn attribute_texts(lines: &[Line]) -> Vec<String> {
        lines
            .iter()
            .filter_map(Line::attribute)
            .map(|a| match (a.name, a.value) {
                ("rtpmap", Some(v)) => match Rtpmap::parse(v) {
                    Some(r) => format!("rtpmap:{r}"),
                    None => format!("rtpmap:{v}"),
                },
                (n, Some(v)) if !v.is_empty() => format!("{n}:{v}"),
                (n, _) => n.to_string(),
            })
            .collect()
    }

    fn their_attribute_texts(attrs: &[sdp_rs::lines::Attribute]) -> Vec<String> {
        attrs
            .iter()
            .map(|a| match a {
                // sdp-rs's Display writes `111 opus/48000 2`; compare the fields instead.
                sdp_rs::lines::Attribute::Rtpmap(r) => {
                    let mut s = format!(
                        "rtpmap:{} {}/{}",
                        r.payload_type, r.encoding_name, r.clock_rate
                    );
                    if let Some(p) = r.encoding_params {
                        s.push_str(&format!("/{p}"));
                    }
                    s
                }
                other => other.to_string()[2..].to_string(),
            })
            .collect()
    }

    fn sdp_rs_parse(body: &[u8]) -> Option<Result<sdp_rs::SessionDescription, sdp_rs::Error>> {
        let text = std::str::from_utf8(body).ok()?;
        std::panic::catch_unwind(|| sdp_rs::SessionDescription::try_from(text)).ok()
    }

    #[test]
    fn differential_on_the_corpus() {
        let mut both = 0;
        for (name, body) in corpus() {
            for (variant, body) in [("CRLF", body.clone()), ("LF", to_lf(&body))] {
                let ours = parse(&body);
                match sdp_rs_parse(&body).expect("no panic on the corpus") {
                    Ok(theirs) => {
                        both += 1;
                        let d = differences(&ours, &theirs);
                        assert!(d.is_empty(), "{name} ({variant}): {d:#?}");
                    }
                    Err(_) => assert!(
                        SDP_RS_REFUSES.iter().any(|(f, _)| *f == name),
                        "sdp-rs refused {name} ({variant}) unexpectedly"
                    ),
                }
            }
        }
        assert_eq!(both, 2 * (corpus().len() - SDP_RS_REFUSES.len()));
    }

    /// Valid bodies of the corpus that sdp-rs refuses, and why sdp-rs is wrong.
    const SDP_RS_REFUSES: &[(&str, &str)] = &[
        (
            "rfc4475/valid/wsinv.sip",
            "`a=rtpmap:31 LPC` has no clock rate; sdp-rs fails the whole body instead of \
             keeping an attribute it cannot type (RFC 4475 says the message is valid)",
        ),
        ("rfc4475/valid/sdp01.sip", "same `a=rtpmap:31 LPC`"),
        (
            "rfc5118/valid/mult-ip-in-sdp.sip",
            "FQDN `host.example.com` in o=: sdp-rs requires an IP address (RFC 8866 allows an FQDN)",
        ),
        ("sdp/lync-im-offer.sdp", "FQDN in o= and c=, as Lync writes it"),
    ];

    /// The cases where sdp-rs 0.2.1 is wrong, each shown against our parser.
    #[test]
    fn where_sdp_rs_is_wrong() {
        // 1. A remote peer can crash the process: `r=` with a huge number panics in chrono.
        let body = format!("{BASE}r=99999999999999999 1h 0\r\nm=audio 1 RTP/AVP 0\r\n");
        assert!(sdp_rs_parse(body.as_bytes()).is_none(), "sdp-rs panics");
        assert_eq!(parse(body.as_bytes()).media().len(), 1);

        // 2. Without a final CRLF the last m= section is dropped silently…
        let body = format!("{BASE}m=audio 1 RTP/AVP 0\r\nm=video 2 RTP/AVP 31\r\na=sendonly");
        let theirs = sdp_rs_parse(body.as_bytes()).unwrap().unwrap();
        assert_eq!(theirs.media_descriptions.len(), 1, "sdp-rs drops m=video");
        assert_eq!(parse(body.as_bytes()).media().len(), 2);
        // …or, with one section, the body is refused.
        let body = format!("{BASE}m=audio 1 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000");
        assert!(sdp_rs_parse(body.as_bytes()).unwrap().is_err());

        // 3. `a=rtpmap:111 opus/48000/2` is written back as `111 opus/48000 2` (invalid SDP).
        let body = format!("{BASE}m=audio 1 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\n");
        let theirs = sdp_rs_parse(body.as_bytes()).unwrap().unwrap();
        assert!(theirs.to_string().contains("a=rtpmap:111 opus/48000 2\r\n"));
        assert_eq!(parse(body.as_bytes()).to_bytes(), body.as_bytes());

        // 4. An unknown line type silently ends the parse: every later line is dropped.
        let body = format!("{BASE}x=unknown\r\nm=audio 1 RTP/AVP 0\r\n");
        let theirs = sdp_rs_parse(body.as_bytes()).unwrap().unwrap();
        assert_eq!(theirs.media_descriptions.len(), 0, "sdp-rs drops m=audio");
        assert_eq!(parse(body.as_bytes()).media().len(), 1);

        // 5. A malformed trailing line is ignored instead of refused.
        let body = format!("{BASE}m=audio 1 RTP/AVP 0\r\nhello\r\n");
        assert!(sdp_rs_parse(body.as_bytes()).unwrap().is_ok());
        assert_eq!(err(&body), SdpError::MalformedLine { line: 7 });

        // 6. `a=inactive` is not recognised (typo `inacive` in sdp-rs).
        let body = format!("{BASE}m=audio 1 RTP/AVP 0\r\na=inactive\r\n");
        let theirs = sdp_rs_parse(body.as_bytes()).unwrap().unwrap();
        assert_eq!(
            theirs.media_descriptions[0].attributes[0],
            sdp_rs::lines::Attribute::Other("inactive".into(), None)
        );
        let ours = parse(body.as_bytes());
        assert_eq!(ours.media()[0].direction(), Some(Direction::Inactive));

        // 7. Valid RFC 4475 / RFC 5118 bodies refused: see SDP_RS_REFUSES.
        for (file, _why) in SDP_RS_REFUSES {
            let body = if file.ends_with(".sip") {
                sip_body(file)
            } else {
                data(file)
            };
            assert!(sdp_rs_parse(&body).unwrap().is_err(), "{file}");
            parse(&body);
        }
    }
}
