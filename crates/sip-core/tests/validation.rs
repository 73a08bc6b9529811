//! What parsing validates eagerly and what it leaves to `validate_all` or the typed views.

use bytes::Bytes;
use sip_core::{HeaderName, Limits, Method, ParseError, SipMessage};

fn response(second_via: &str) -> Bytes {
    Bytes::from(format!(
        "SIP/2.0 200 OK\r\n\
         Via: SIP/2.0/TLS 10.0.0.1:5061;branch=z9hG4bK1\r\n\
         Via: {second_via}\r\n\
         From: <sip:a@example.com>;tag=1\r\n\
         To: <sip:b@example.com>;tag=2\r\n\
         Call-ID: c1\r\n\
         CSeq: 1 MESSAGE\r\n\
         Content-Length: 0\r\n\r\n"
    ))
}

#[test]
fn a_bad_lower_via_is_found_when_read_not_when_parsed() {
    // Only the top Via is read by a transaction layer; the ones below are copied.
    let m = SipMessage::parse_datagram(response("SIP/2.0/TLS ;;"), &Limits::default())
        .expect("the top Via is fine");
    assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK1"));
    assert_eq!(m.header_values(HeaderName::Via).count(), 2);
    assert!(m.vias().nth(1).unwrap().is_err());
    assert!(matches!(
        m.validate_all(),
        Err(ParseError::Header { header: "Via", .. })
    ));
}

#[test]
fn a_bad_top_via_is_refused_by_the_parser() {
    let bad = Bytes::from_static(
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0 10.0.0.1\r\nFrom: <sip:a@x>;tag=1\r\n\
          To: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n",
    );
    let e = SipMessage::parse_datagram(bad, &Limits::default()).unwrap_err();
    assert!(
        matches!(e, ParseError::Header { header: "Via", .. }),
        "{e:?}"
    );
}

#[test]
fn built_and_changed_headers_keep_their_text() {
    let m = SipMessage::parse_datagram(
        response("SIP/2.0/TLS 10.0.0.2;branch=z9hG4bK2"),
        &Limits::default(),
    )
    .unwrap();
    let mut changed = m.clone();
    changed.push_header("X-Custom", "one").unwrap();
    changed.set_header("x-custom", "two").unwrap();
    changed.set_to_tag("ignored").unwrap();
    changed
        .prepend_header(HeaderName::Via, "SIP/2.0/TLS 10.0.0.9;branch=z9hG4bK9")
        .unwrap();
    assert_eq!(changed.header_by_name("X-CUSTOM"), Some(&b"two"[..]));
    assert_eq!(changed.header_values(HeaderName::Via).count(), 3);
    let again = SipMessage::parse_datagram(changed.to_bytes(), &Limits::default()).unwrap();
    assert_eq!(again.top_via().unwrap().branch(), Some("z9hG4bK9"));
    assert_eq!(again.to().unwrap().tag(), Some(&b"2"[..]));
    assert!(again
        .headers()
        .any(|h| h.raw_name == b"x-custom" && h.value == b"two"));
    // The original is untouched and still its received bytes.
    assert_eq!(
        m.to_bytes(),
        response("SIP/2.0/TLS 10.0.0.2;branch=z9hG4bK2")
    );
}

#[test]
fn raw_body_with_a_content_type_header_serializes_like_body() {
    let base = || {
        SipMessage::request(Method::Message, "sip:bob@fabrikam.test")
            .header(
                HeaderName::Via,
                "SIP/2.0/TLS 10.0.0.21:5061;branch=z9hG4bK1",
            )
            .header(HeaderName::MaxForwards, "70")
            .header(HeaderName::From, "<sip:app@contoso.test>;tag=1")
            .header(HeaderName::To, "<sip:bob@fabrikam.test>")
            .header(HeaderName::CallId, "c1@contoso.test")
            .header(HeaderName::CSeq, "1 MESSAGE")
    };
    let with_body = base().body("text/plain", "hello").build().unwrap();
    let with_raw = base()
        .header(HeaderName::ContentType, String::from("text/plain"))
        .raw_body("hello")
        .build()
        .unwrap();
    assert_eq!(with_raw.to_bytes(), with_body.to_bytes());
    let parsed = SipMessage::parse_datagram(with_raw.to_bytes(), &Limits::default()).unwrap();
    assert_eq!(&parsed.body()[..], b"hello");
    assert_eq!(
        parsed.header(HeaderName::ContentType),
        Some(&b"text/plain"[..])
    );
}

/// An OPTIONS request with `subject` as its Subject value and `to` as its To value.
fn options_with(subject: &[u8], to: &[u8]) -> Bytes {
    let mut m = b"OPTIONS sip:b@example.com SIP/2.0\r\n\
        Via: SIP/2.0/TLS 10.0.0.1:5061;branch=z9hG4bK1\r\n\
        From: <sip:a@example.com>;tag=1\r\nTo: "
        .to_vec();
    m.extend_from_slice(to);
    m.extend_from_slice(b"\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nSubject: ");
    m.extend_from_slice(subject);
    m.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    Bytes::from(m)
}

#[test]
fn control_bytes_in_header_values_are_refused_unless_escaped() {
    let to = b"<sip:b@example.com>";
    let parse = |m: Bytes| SipMessage::parse_datagram(m, &Limits::default());
    // A bare CR (some peers end lines at it), NUL, other C0 bytes: 400.
    for c in [b'\r', 0, 1, 0x1b, 0x1f] {
        let e = parse(options_with(&[b'a', c, b'b'], to)).unwrap_err();
        assert_eq!(
            (e.clone(), e.status()),
            (ParseError::ControlCharacter(c), 400)
        );
        // Where it sits in the line does not matter (the scan takes sixteen bytes a step).
        let long: Vec<u8> = std::iter::repeat_n(b'x', 37).chain([c, b'y']).collect();
        assert_eq!(
            parse(options_with(&long, to)).unwrap_err(),
            ParseError::ControlCharacter(c)
        );
    }
    // HTAB is whitespace; bytes above 0x7f are UTF-8 text.
    let m = parse(options_with("a\tb caf\u{e9}".as_bytes(), to)).unwrap();
    assert_eq!(
        m.header(HeaderName::Subject),
        Some("a\tb caf\u{e9}".as_bytes())
    );
    // Inside a quoted string a quoted-pair may escape any byte but CR and LF (RFC 4475
    // `intmeth`); an escaped backslash does not escape the byte after it.
    let quoted = b"\"BEL:\\\x07 NUL:\\\x00\" <sip:b@example.com>";
    assert!(parse(options_with(b"s", quoted)).is_ok());
    let unescaped = b"\"two\\\\\x00\" <sip:b@example.com>";
    assert_eq!(
        parse(options_with(b"s", unescaped)).unwrap_err(),
        ParseError::ControlCharacter(0)
    );
}

#[test]
fn a_to_tag_must_be_a_token() {
    let m = SipMessage::parse_datagram(
        options_with(b"s", b"<sip:b@example.com>"),
        &Limits::default(),
    )
    .unwrap();
    for bad in ["", "a b", "a,b", "\"q", "x;tag=y"] {
        let mut r = SipMessage::response_to(&m, 200, "OK").unwrap();
        assert!(r.set_to_tag(bad).is_err(), "{bad:?}");
        assert_eq!(r.to().unwrap().tag(), None);
    }
    let mut r = SipMessage::response_to(&m, 200, "OK").unwrap();
    r.set_to_tag("a-1.b!c").unwrap();
    let back = SipMessage::parse_datagram(r.to_bytes(), &Limits::default()).unwrap();
    assert_eq!(back.to().unwrap().tag(), Some(&b"a-1.b!c"[..]));
}

#[test]
fn the_sip_version_is_case_insensitive() {
    // RFC 3261 §7.1: case-insensitive on receipt, upper case when sent.
    let lower = String::from_utf8(options_with(b"s", b"<sip:b@example.com>").to_vec())
        .unwrap()
        .replacen("SIP/2.0\r\n", "sip/2.0\r\n", 1);
    let m = SipMessage::parse_datagram(Bytes::from(lower), &Limits::default()).unwrap();
    assert_eq!(m.method(), Some(&Method::Options));
    let status = b"sip/2.0 200 OK\r\nVia: SIP/2.0/TLS h;branch=z9hG4bK1\r\n\
        From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\
        Content-Length: 0\r\n\r\n";
    let r = SipMessage::parse_datagram(Bytes::from_static(status), &Limits::default()).unwrap();
    assert_eq!(r.status(), Some(200));
    let e = SipMessage::parse_datagram(
        Bytes::from_static(b"OPTIONS sip:b@x SIP/3.0\r\n\r\n"),
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(e.status(), 505);
}

#[test]
fn a_pushed_second_from_is_refused_by_validation_and_response_to() {
    let mut m =
        SipMessage::parse_datagram(options_with(b"s", b"<sip:b@x>"), &Limits::DEFAULT).unwrap();
    m.push_header("Subject", "kept index").unwrap();
    assert!(m.validate().is_ok());
    m.push_header(HeaderName::From, "<sip:c@x>;tag=2").unwrap();
    assert!(m.validate().is_err());
    assert!(SipMessage::response_to(&m, 200, "OK").is_err());
}

#[test]
fn a_bad_header_line_says_what_is_wrong_with_it() {
    let head = |lines: &str| {
        Bytes::from(format!(
            "OPTIONS sip:b@example.com SIP/2.0\r\n{lines}\
             Via: SIP/2.0/TLS 10.0.0.1:5061;branch=z9hG4bK1\r\n\
             From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\n\
             Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ))
    };
    let why = |lines: &str| match SipMessage::parse_datagram(head(lines), &Limits::default()) {
        Err(ParseError::HeaderLine(why)) => why,
        other => panic!("{lines:?}: {other:?}"),
    };
    assert_eq!(why("X-Thing no colon here\r\n"), "no colon");
    assert_eq!(why(": no name\r\n"), "empty header name");
    assert_eq!(why("X Thing: two words\r\n"), "header name is not a token");
    assert_eq!(why("X<Thing>: brackets\r\n"), "header name is not a token");
    assert_eq!(
        why(" X-Thing: folded onto the start line\r\n"),
        "a continuation line with no header line before it"
    );
    // The status and the text a peer is told.
    let e = SipMessage::parse_datagram(head("X-Thing no colon here\r\n"), &Limits::default())
        .unwrap_err();
    assert_eq!(e.status(), 400);
    assert_eq!(e.to_string(), "malformed header line: no colon");
    // Built messages: the same refusals.
    let mut m = SipMessage::parse_datagram(head(""), &Limits::default()).unwrap();
    assert_eq!(
        m.push_header("X Thing", "v"),
        Err(ParseError::HeaderLine("header name is not a token"))
    );
    assert_eq!(
        m.push_header("X-Thing", "a\r\nB: injected"),
        Err(ParseError::HeaderLine("line break in a value"))
    );
}

#[test]
fn a_bad_start_line_says_what_is_wrong_with_it() {
    let why = |line: &str| {
        let raw = format!(
            "{line}\r\nVia: SIP/2.0/TLS 10.0.0.1:5061;branch=z9hG4bK1\r\n\
             From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\n\
             Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        match SipMessage::parse_datagram(Bytes::from(raw), &Limits::default()) {
            Err(ParseError::StartLine(why)) => why,
            other => panic!("{line:?}: {other:?}"),
        }
    };
    let parts = "request line needs method, URI and version";
    assert_eq!(why("OPTIONS"), parts);
    assert_eq!(why("OPTIONS sip:b@example.com"), parts);
    assert_eq!(why("OPTIONS  SIP/2.0"), parts);
    assert_eq!(
        why("SIP/2.0"),
        "status line needs version, status code and reason"
    );
    assert_eq!(
        why("OPTIONS sip:b@example.com SIP/2.0 "),
        "whitespace after the SIP-Version"
    );
    assert_eq!(
        why("OPTIONS sip:b@example.com  SIP/2.0"),
        "more than one space between the request line's parts"
    );
    assert_eq!(
        why("OPTIONS sip:b@example.com ;lr SIP/2.0"),
        "whitespace inside the Request-URI"
    );
}

#[test]
fn a_bad_via_sent_by_says_what_is_wrong_with_it() {
    let why = |via: &str| match SipMessage::parse_datagram(response(via), &Limits::default())
        .unwrap()
        .vias()
        .nth(1)
    {
        Some(Err(ParseError::Header { header: "Via", why })) => why,
        other => panic!("{via:?}: {other:?}"),
    };
    assert_eq!(
        why("SIP/2.0/TLS 10.0.0.2:99999;branch=z9hG4bK2"),
        "bad port"
    );
    assert_eq!(
        why("SIP/2.0/TLS 10.0.0.256;branch=z9hG4bK2"),
        "bad IPv4 address"
    );
    assert_eq!(
        why("SIP/2.0/TLS -edge.test;branch=z9hG4bK2"),
        "bad domain name"
    );
    assert_eq!(
        why("SIP/2.0/TLS 2001:db8::2;branch=z9hG4bK2"),
        "IPv6 address without [ ]"
    );
    assert_eq!(
        why("SIP/2.0/TLS [2001:db8::2;branch=z9hG4bK2"),
        "unterminated IPv6 reference"
    );
}

fn register_with(extra: &str) -> Bytes {
    Bytes::from(format!(
        "REGISTER sip:example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n\
         From: <sip:a@example.com>;tag=1\r\n\
         To: <sip:a@example.com>\r\n\
         Call-ID: c1\r\n\
         CSeq: 1 REGISTER\r\n\
         {extra}\
         Content-Length: 0\r\n\r\n"
    ))
}

/// RFC 5626 §4.1 / RFC 3261 §25.1: an addr-spec Contact whose `+sip.instance` quotes a `<`
/// is valid.
#[test]
fn an_addr_spec_contact_with_a_quoted_lt_in_a_param_validates() {
    let m = SipMessage::parse_datagram(
        register_with("Contact: sip:alice@192.0.2.2;+sip.instance=\"<urn:uuid:1>\";reg-id=1\r\n"),
        &Limits::default(),
    )
    .unwrap();
    m.validate_all().unwrap();
    let c = m.contacts().next().unwrap().unwrap();
    assert_eq!(&*c.instance().unwrap(), b"<urn:uuid:1>");
}

/// RFC 3261 §25.1: an addr-spec From may carry a quoted-string parameter holding `<`
/// (`gen-value = quoted-string`); the request is no 400.
#[test]
fn an_addr_spec_from_with_a_quoted_lt_in_a_param_is_parsed() {
    let m = SipMessage::parse_datagram(
        Bytes::from_static(
            b"MESSAGE sip:b@example.com SIP/2.0\r\n\
              Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n\
              From: sip:a@example.com;tag=1;x-note=\"<hi>\"\r\n\
              To: <sip:b@example.com>\r\n\
              Call-ID: c1\r\n\
              CSeq: 1 MESSAGE\r\n\
              Content-Length: 0\r\n\r\n",
        ),
        &Limits::default(),
    )
    .unwrap();
    let from = m.from().unwrap();
    assert_eq!(from.tag(), Some(&b"1"[..]));
    assert_eq!(from.uri().as_bytes(), b"sip:a@example.com");
}

/// RFC 3261 §25.1: `sent-by = host [ COLON port ]`, `COLON = SWS ":" SWS`: a top Via with
/// whitespace around its port colon is parsed.
#[test]
fn a_top_via_with_whitespace_around_the_port_colon_is_parsed() {
    let text = String::from_utf8(register_with("").to_vec())
        .unwrap()
        .replace("192.0.2.1:5060;", "192.0.2.1 : 5060;");
    let m = SipMessage::parse_datagram(Bytes::from(text), &Limits::default()).unwrap();
    let via = m.top_via().unwrap();
    assert_eq!(
        (via.host_raw(), via.port()),
        (&b"192.0.2.1"[..], Some(5060))
    );
    assert_eq!(via.branch(), Some("z9hG4bK1"));
}

/// RFC 3261 §20.10's example: two contacts, with whitespace before and after `;`.
#[test]
fn the_rfc3261_contact_example_parses() {
    let m = SipMessage::parse_datagram(
        register_with(
            "Contact: \"Mr. Watson\" <sip:watson@worcester.bell-telephone.com>;q=0.7; \
             expires=3600, \"Mr. Watson\" <mailto:watson@bell-telephone.com> ;q=0.1\r\n",
        ),
        &Limits::default(),
    )
    .unwrap();
    let cs: Vec<_> = m.contacts().collect::<Result<_, _>>().unwrap();
    assert_eq!(cs.len(), 2);
    assert_eq!((cs[0].q_millis(), cs[0].expires()), (Some(700), Some(3600)));
    assert_eq!(cs[1].q_millis(), Some(100));
}

/// RFC 3261 §20.14 / §18.3: Content-Length is `1*DIGIT` (leading zeros allowed), and a
/// datagram's bytes past it are not body.
#[test]
fn a_content_length_with_leading_zeros_cuts_the_datagram_body() {
    let m = SipMessage::parse_datagram(
        Bytes::from_static(
            b"MESSAGE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
              From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 MESSAGE\r\n\
              l: 0002\r\n\r\nhiXX",
        ),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(&m.body()[..], b"hi");
}
