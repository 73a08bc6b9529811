//! Property tests: generated messages survive serialize → parse unchanged; arbitrary bytes
//! never panic any parser.

use bytes::Bytes;
#[path = "support/cases.rs"]
mod support_cases;
use proptest::prelude::*;
use sip_core::{HeaderName, Limits, Method, SipMessage};
use support_cases::cases;

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9.!%*_+`'~-]{1,12}"
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::Invite),
        Just(Method::Message),
        Just(Method::Options),
        Just(Method::Register),
        Just(Method::Subscribe),
        Just(Method::Benotify),
        "[A-Z][A-Z0-9%!-]{0,10}".prop_map(|t| Method::from_token(t.as_bytes())),
    ]
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9]{0,8}){0,3}",
        any::<[u8; 4]>().prop_map(|a| format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])),
        any::<[u16; 8]>().prop_map(|a| format!("[{}]", std::net::Ipv6Addr::from(a))),
    ]
}

fn uri() -> impl Strategy<Value = String> {
    (
        prop::option::of("[a-zA-Z0-9_.!~*'()&=+$,;?/-]{1,12}|[a-z]{1,4}%[0-9A-F]{2}"),
        host(),
        prop::option::of(1u16..),
        prop::collection::vec("[a-z]{1,6}(=[a-z0-9]{1,6})?", 0..3),
    )
        .prop_map(|(user, host, port, params)| {
            let mut s = String::from("sip:");
            if let Some(u) = user {
                s.push_str(&u);
                s.push('@');
            }
            s.push_str(&host);
            if let Some(p) = port {
                s.push_str(&format!(":{p}"));
            }
            for p in params {
                s.push(';');
                s.push_str(&p);
            }
            s
        })
}

fn display_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[A-Za-z]{1,8}( [A-Za-z]{1,8})?".prop_map(|t| format!("{t} ")),
        "[ -~\u{e9}\u{4e2d}]{0,12}".prop_map(|t| {
            let escaped: String = t
                .chars()
                .flat_map(|c| match c {
                    '"' | '\\' => vec!['\\', c],
                    c => vec![c],
                })
                .collect();
            format!("\"{escaped}\" ")
        }),
    ]
}

prop_compose! {
    fn message()(
        method in method(),
        ruri in uri(),
        from_name in display_name(),
        from_uri in uri(),
        to_uri in uri(),
        tag in token(),
        call_id in "[A-Za-z0-9.!%*_+`'~()<>:\\\\/\\[\\]?{}-]{1,20}(@[a-z0-9.]{1,10})?",
        seq in any::<u32>(),
        vias in prop::collection::vec((host(), token()), 1..4),
        extra in prop::collection::vec(("X-[A-Za-z0-9-]{1,10}", "[!-~]([ -~]{0,30}[!-~])?"), 0..5),
        body in prop::collection::vec(any::<u8>(), 0..200),
    ) -> SipMessage {
        let mut b = SipMessage::request(method.clone(), ruri);
        for (h, branch) in vias {
            b = b.header(HeaderName::Via, format!("SIP/2.0/TLS {h};branch=z9hG4bK{branch}"));
        }
        b = b
            .header(HeaderName::From, format!("{from_name}<{from_uri}>;tag={tag}"))
            .header(HeaderName::To, format!("<{to_uri}>"))
            .header(HeaderName::CallId, call_id)
            .header(HeaderName::CSeq, format!("{seq} {method}"))
            .header(HeaderName::MaxForwards, "70");
        for (name, value) in extra {
            b = b.header(name.as_str(), value);
        }
        if !body.is_empty() {
            b = b.body("application/octet-stream", body);
        }
        b.build().expect("generated messages are valid")
    }
}

fn same(a: &SipMessage, b: &SipMessage) {
    assert_eq!(a.method(), b.method());
    assert_eq!(a.request_uri_bytes(), b.request_uri_bytes());
    let ha: Vec<_> = a
        .headers()
        .filter(|h| h.name != HeaderName::ContentLength)
        .map(|h| (h.name, h.value))
        .collect();
    let hb: Vec<_> = b
        .headers()
        .filter(|h| h.name != HeaderName::ContentLength)
        .map(|h| (h.name, h.value))
        .collect();
    assert_eq!(ha, hb);
    assert_eq!(a.body(), b.body());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(512)))]

    #[test]
    fn parse_of_serialize_is_identity(m in message()) {
        let wire = m.to_bytes();
        for parsed in [
            SipMessage::parse_datagram(wire.clone(), &Limits::DEFAULT).unwrap(),
            SipMessage::parse_framed(wire.clone(), &Limits::DEFAULT).unwrap(),
        ] {
            same(&m, &parsed);
            // An unchanged parsed message writes back exactly what was received.
            prop_assert_eq!(parsed.to_bytes(), wire.clone());
            // Views rebuilt from what validation cached equal views parsed afresh.
            prop_assert_eq!(
                parsed.from().unwrap(),
                sip_core::NameAddr::parse(parsed.header(HeaderName::From).unwrap(), "From").unwrap()
            );
            prop_assert_eq!(
                parsed.to().unwrap(),
                sip_core::NameAddr::parse(parsed.header(HeaderName::To).unwrap(), "To").unwrap()
            );
            prop_assert_eq!(parsed.top_via().unwrap(), parsed.vias().next().unwrap().unwrap());
            prop_assert_eq!(
                parsed.cseq().unwrap(),
                sip_core::CSeq::parse(parsed.header(HeaderName::CSeq).unwrap()).unwrap()
            );
            // Typed views read what was written.
            prop_assert_eq!(parsed.cseq().unwrap().seq(), m.cseq().unwrap().seq());
            prop_assert_eq!(parsed.vias().count(), m.vias().count());
            prop_assert_eq!(
                parsed.from().unwrap().display_name().map(|d| d.decoded().into_owned()),
                m.from().unwrap().display_name().map(|d| d.decoded().into_owned())
            );
        }
    }

    #[test]
    fn responses_copy_the_transaction_headers(
        m in message(),
        code in 100u16..700,
        standard in any::<bool>(),
    ) {
        // The standard phrase is not stored in the response; any other is.
        let reason = if standard { sip_core::reason_phrase(code) } else { "Reason" };
        let mut r = SipMessage::response_to(&m, code, reason).unwrap();
        r.set_to_tag("t1").unwrap();
        r.push_header("Subject", "after the tag").unwrap();
        prop_assert_eq!(r.reason(), Some(reason.as_bytes()));
        let parsed = SipMessage::parse_datagram(r.to_bytes(), &Limits::DEFAULT).unwrap();
        prop_assert_eq!(parsed.status(), Some(code));
        prop_assert_eq!(parsed.reason(), Some(reason.as_bytes()));
        prop_assert_eq!(parsed.call_id().unwrap(), m.call_id().unwrap());
        prop_assert_eq!(parsed.vias().count(), m.vias().count());
        prop_assert_eq!(parsed.cseq().unwrap(), m.cseq().unwrap());
        prop_assert_eq!(parsed.to().unwrap().tag(), Some(&b"t1"[..]));
        prop_assert_eq!(parsed.header(HeaderName::Subject), Some(&b"after the tag"[..]));
        // The changed response's views (its index kept through the tag and the new field)
        // read what a fresh parse of its bytes reads.
        prop_assert_eq!(r.to().unwrap(), parsed.to().unwrap());
        prop_assert_eq!(r.from().unwrap(), parsed.from().unwrap());
        prop_assert_eq!(r.top_via().unwrap(), parsed.top_via().unwrap());
        prop_assert_eq!(r.cseq().unwrap(), parsed.cseq().unwrap());
        prop_assert_eq!(r.call_id().unwrap(), parsed.call_id().unwrap());
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..600)) {
        let b = Bytes::from(data);
        for m in [
            SipMessage::parse_datagram(b.clone(), &Limits::DEFAULT),
            SipMessage::parse_framed(b.clone(), &Limits::DEFAULT),
            SipMessage::parse_head(b, &Limits::DEFAULT),
        ]
        .into_iter()
        .flatten()
        {
            let _ = m.validate_all();
            let _ = m.to_bytes();
        }
    }

    #[test]
    fn mutated_valid_messages_never_panic(m in message(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut wire = m.to_bytes().to_vec();
        let i = at.index(wire.len());
        wire[i] = byte;
        if let Ok(p) = SipMessage::parse_datagram(Bytes::from(wire), &Limits::DEFAULT) {
            let _ = p.validate_all();
            let _ = (p.from(), p.to(), p.top_via(), p.request_uri());
        }
    }
}

#[test]
fn limits_are_enforced_with_513() {
    let limits = Limits {
        max_message_size: 300,
        max_headers: 8,
        max_line_length: 100,
    };
    let long_line = format!(
        "OPTIONS sip:a@b SIP/2.0\r\nX-Long: {}\r\n\r\n",
        "a".repeat(200)
    );
    let many = format!("OPTIONS sip:a@b SIP/2.0\r\n{}\r\n", "X-A: 1\r\n".repeat(9));
    for refused in [long_line, many] {
        let e = SipMessage::parse_datagram(Bytes::from(refused.clone()), &limits).unwrap_err();
        assert_eq!(e.status(), 513);
        // The head still parses, so the request can be answered 513 (§21.5.9).
        let head = SipMessage::parse_head(Bytes::from(refused), &limits).unwrap();
        assert_eq!(head.method(), Some(&sip_core::Method::Options));
    }
    let big = Bytes::from(vec![b'a'; 301]);
    let e = SipMessage::parse_datagram(big, &limits).unwrap_err();
    assert_eq!(e.status(), 513);
}

/// An OPTIONS to `uri` with the mandatory headers, to add one under test to.
fn options_to(uri: &'static str) -> sip_core::MessageBuilder {
    SipMessage::request(Method::Options, uri)
        .header(HeaderName::Via, "SIP/2.0/UDP h;branch=z9hG4bK1")
        .header(HeaderName::From, "<sip:x@y>;tag=1")
        .header(HeaderName::To, "<sip:a@b>")
        .header(HeaderName::CallId, "c1")
        .header(HeaderName::CSeq, "1 OPTIONS")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(1024)))]

    /// What the builder accepts as a header value, the head parser reads back as it was
    /// given (less surrounding whitespace): a message we build is never one we refuse.
    #[test]
    fn accepted_header_values_parse_back(value in prop::collection::vec(
        prop_oneof![
            4 => 0x20u8..0x7f,
            1 => any::<u8>(),
            1 => Just(b'\\'),
            1 => prop::sample::select(vec![0u8, 1, 9, 10, 13, 0x1f, 0x7f]),
        ],
        0..40,
    )) {
        let built = options_to("sip:a@b")
            .header("X-Value", Bytes::from(value.clone()))
            .build();
        if let Ok(m) = built {
            let back = SipMessage::parse_datagram(m.to_bytes(), &Limits::DEFAULT)
                .map_err(|e| TestCaseError::fail(format!("{e}: {value:?}")))?;
            let trimmed = String::from_utf8_lossy(&value).trim_matches([' ', '\t']).to_string();
            prop_assert_eq!(
                String::from_utf8_lossy(back.header_by_name("X-Value").unwrap_or_default()),
                trimmed
            );
        }
    }
}

#[test]
fn header_injection_is_refused() {
    let r = SipMessage::request(Method::Options, "sip:a@b")
        .header("X-Evil", "a\r\nVia: SIP/2.0/UDP evil")
        .build();
    assert!(r.is_err());
    let r = SipMessage::request(Method::Options, "sip:a@b")
        .header("Bad Name", "x")
        .build();
    assert!(r.is_err());
    // Other control bytes are refused as the parser refuses them (unless quoted-pairs).
    let with = |value: &'static str| options_to("sip:a@b").header("X-Value", value).build();
    assert!(matches!(
        with("a\0b"),
        Err(sip_core::ParseError::ControlCharacter(0))
    ));
    assert!(with("\"a\\\x01b\"").is_ok());
    // The Request-URI too: it is checked by `build`'s validation.
    for uri in [
        "sip:a@b;x=\x01",
        "sip:a@b\r\nX-Evil: 1",
        "sip:a\0@b",
        "sip:a@b?h=\x7f",
    ] {
        assert!(options_to(uri).build().is_err(), "{uri:?}");
    }
}

#[test]
fn changed_messages_serialize_canonically() {
    let raw = Bytes::from_static(
        b"MESSAGE sip:bob@example.com SIP/2.0\r\nv: SIP/2.0/TCP a.example.com;branch=z9hG4bK1\r\n\
f: <sip:a@example.com>;tag=1\r\nt: <sip:bob@example.com>\r\ni: x@y\r\nCSeq: 1 MESSAGE\r\n\
Max-Forwards: 70\r\nl: 2\r\n\r\nhi",
    );
    let mut m = SipMessage::parse_framed(raw.clone(), &Limits::DEFAULT).unwrap();
    assert_eq!(m.to_bytes(), raw);
    m.set_body(Bytes::from_static(b"hello"));
    m.push_header("Subject", "greeting").unwrap();
    let out = String::from_utf8(m.to_bytes().to_vec()).unwrap();
    assert!(out.contains("\r\nVia: SIP/2.0/TCP a.example.com;branch=z9hG4bK1\r\n"));
    assert!(out.contains("\r\nContent-Length: 5\r\n"));
    assert!(out.ends_with("Subject: greeting\r\n\r\nhello"));
    assert_eq!(m.remove_header(HeaderName::Subject), 1);
    m.set_to_tag("abc").unwrap();
    assert_eq!(m.to().unwrap().tag(), Some(&b"abc"[..]));
}

#[test]
fn reason_phrases_cannot_inject_lines() {
    let r = SipMessage::response(200, "OK\r\nVia: SIP/2.0/UDP evil").build();
    assert!(r.is_err());
    let req = SipMessage::parse_datagram(
        Bytes::from_static(
            b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: 1\r\nCSeq: 1 OPTIONS\r\n\r\n",
        ),
        &Limits::DEFAULT,
    )
    .unwrap();
    assert!(SipMessage::response_to(&req, 200, "OK\r\nX: y").is_err());
    let ok = SipMessage::response_to(&req, 200, "OK").unwrap();
    let again = SipMessage::parse_datagram(ok.to_bytes(), &Limits::DEFAULT).unwrap();
    assert_eq!(again.status(), Some(200));
    assert_eq!(again.cseq().unwrap(), req.cseq().unwrap());
}

/// Values near the common shapes the one-pass recognisers take (URI, name-addr, Via,
/// parameter lists): a template with one or two bytes replaced by bytes the grammar
/// treats specially.
fn near_common() -> impl Strategy<Value = Vec<u8>> {
    let templates = prop_oneof![
        Just(&b"sip:bob@fabrikam.test"[..]),
        Just(&b"sips:alice@10.0.0.1:5061;transport=tls;lr"[..]),
        Just(&b"<sip:bot@contoso.test>;tag=8a7b6c5d"[..]),
        Just(&b"\"Contoso Bot\" <sip:fe1.contoso.test:5061;lr>;tag=x;expires=60"[..]),
        Just(&b"SIP/2.0/TLS 10.0.0.21:5061;branch=z9hG4bK55a3c2e1;rport"[..]),
        Just(&b"SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK1;received=10.0.0.1"[..]),
    ];
    let special = prop::sample::select(&b" \t;:=,@<>\"\\%?&[]/.-_!~*'()+$#A\x00\xff\r\n"[..]);
    (
        templates,
        prop::collection::vec((any::<prop::sample::Index>(), special, any::<bool>()), 1..3),
    )
        .prop_map(|(t, edits)| {
            let mut v = t.to_vec();
            for (at, byte, insert) in edits {
                let i = at.index(v.len() + 1);
                if insert || i == v.len() {
                    v.insert(i, byte);
                } else {
                    v[i] = byte;
                }
            }
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(2048)))]

    /// The one-pass recognisers of the common shapes must answer exactly as the general
    /// parsers do. Each parse entry point checks that with a debug assertion (the general
    /// parser runs too and the results are compared), so this test only has to feed them
    /// values on both sides of the common shapes' edges; it refuses to run without debug
    /// assertions, where it would check nothing.
    #[test]
    fn common_shape_recognisers_agree_with_the_general_parsers(v in near_common()) {
        prop_assert!(cfg!(debug_assertions), "needs debug assertions");
        let _ = sip_core::Uri::parse(&v);
        let _ = sip_core::NameAddr::parse(&v, "To");
        let _ = sip_core::Via::parse(&v);
        let msg = [
            &b"OPTIONS sip:x@y SIP/2.0\r\nVia: "[..],
            &v,
            b"\r\nFrom: ",
            &v,
            b"\r\nTo: <sip:x@y>\r\nCall-ID: a@b\r\nCSeq: 1 OPTIONS\r\n\r\n",
        ]
        .concat();
        if let Ok(m) = SipMessage::parse_datagram(Bytes::from(msg), &Limits::DEFAULT) {
            let _ = (m.from(), m.top_via());
        }
    }
}

fn source() -> impl Strategy<Value = std::net::SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(a, p)| (a, p).into()),
        (any::<[u16; 8]>(), any::<u16>()).prop_map(|(a, p)| (a, p).into()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(512)))]

    /// Stamping the top Via of a received request (RFC 3261 §18.2.1) edits that Via alone,
    /// whether the message was parsed (edited in its buffer) or built: everything else reads
    /// as before, the views agree with a fresh parse, and the result parses back the same.
    #[test]
    fn stamping_the_source_changes_the_top_via_alone(
        m in message(),
        from in source(),
        rport in any::<bool>(),
    ) {
        let wire = m.to_bytes();
        let parsed = SipMessage::parse_datagram(wire, &Limits::DEFAULT).unwrap();
        for mut stamped in [parsed, m.clone()] {
            if rport {
                stamped.set_top_via_param("rport", None).unwrap();
            }
            stamped.record_source_in_via(from).unwrap();
            let via = stamped.top_via().unwrap();
            prop_assert_eq!(via.received(), Some(from.ip().to_canonical()));
            if rport {
                prop_assert_eq!(via.rport(), Some(Some(from.port())));
            }
            prop_assert_eq!(via.branch(), m.top_via().unwrap().branch());
            let others = |x: &SipMessage| -> Vec<(HeaderName, Vec<u8>)> {
                x.headers()
                    .skip(1)
                    .filter(|h| h.name != HeaderName::ContentLength)
                    .map(|h| (h.name, h.value.to_vec()))
                    .collect()
            };
            prop_assert_eq!(others(&stamped), others(&m));
            prop_assert_eq!(stamped.body(), m.body());
            let again = SipMessage::parse_datagram(stamped.to_bytes(), &Limits::DEFAULT).unwrap();
            same(&stamped, &again);
            prop_assert_eq!(stamped.top_via().unwrap(), again.top_via().unwrap());
            prop_assert_eq!(stamped.from().unwrap(), again.from().unwrap());
            prop_assert_eq!(stamped.to().unwrap(), again.to().unwrap());
            prop_assert_eq!(stamped.call_id().unwrap(), again.call_id().unwrap());
            prop_assert_eq!(stamped.cseq().unwrap(), again.cseq().unwrap());
        }
    }
}
