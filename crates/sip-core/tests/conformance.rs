//! RFC 4475 and RFC 5118 torture messages (tests/data, copied byte-exact from the RFCs'
//! code components; source and licence in tests/data/README.md): every valid message is
//! accepted with the right values, every invalid one refused with the right class.

use bytes::Bytes;
use sip_core::{HeaderName, Host, Limits, Method, ParseError, SipMessage, Transport, Uri};
use std::path::PathBuf;

fn data(rel: &str) -> Bytes {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel);
    Bytes::from(std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
}

fn valid(suite: &str, name: &str) -> SipMessage {
    let rel = format!("{suite}/valid/{name}.sip");
    SipMessage::parse_datagram(data(&rel), &Limits::default())
        .unwrap_or_else(|e| panic!("{rel} refused: {e}"))
}

/// RFC 4475 invalid messages the RFC lets a lenient element accept ("liberal" in the
/// MANIFEST) that the parsers accept, because the fault is in a header a transaction layer
/// does not read; `validate_all` refuses them (the flag).
const LIBERAL_ACCEPTED: &[&str] = &["baddate", "regbadct"];

/// The refusal of an invalid message: by the parser, or for the liberal ones by
/// `validate_all`.
fn invalid(suite: &str, name: &str) -> ParseError {
    let rel = format!("{suite}/invalid/{name}.sip");
    match SipMessage::parse_datagram(data(&rel), &Limits::default()) {
        Ok(m) if LIBERAL_ACCEPTED.contains(&name) => m
            .validate_all()
            .expect_err("validate_all must flag a liberally accepted message"),
        Ok(m) => panic!("{rel} accepted: {m:?}"),
        Err(e) => {
            assert!(!LIBERAL_ACCEPTED.contains(&name), "{rel} refused: {e}");
            e
        }
    }
}

/// Reads an expectations.tsv: (name, verdict).
fn expectations(suite: &str) -> Vec<(String, String)> {
    let text = String::from_utf8(data(&format!("{suite}/expectations.tsv")).to_vec()).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols[0].to_string(), cols[2].to_string())
        })
        .collect()
}

/// RFC 5118 messages whose printed Content-Length is larger than their body (an erratum of
/// the RFC, see tests/data/rfc5118/MANIFEST.md): a datagram parser must refuse them like
/// RFC 4475 `clerr`; their IPv6 syntax is checked through `parse_head` instead.
const CL_LARGER_THAN_BODY: &[&str] = &["ipv6-in-sdp"];

#[test]
fn every_verdict_of_both_manifests_holds() {
    let mut counts = [0usize; 4];
    for suite in ["rfc4475", "rfc5118"] {
        for (name, verdict) in expectations(suite) {
            let rel = format!("{suite}/{verdict}/{name}.sip");
            let r = SipMessage::parse_datagram(data(&rel), &Limits::default());
            match verdict.as_str() {
                "valid" if CL_LARGER_THAN_BODY.contains(&name.as_str()) => {
                    assert!(
                        matches!(r, Err(ParseError::ContentLength(_))),
                        "{rel}: {r:?}"
                    );
                    SipMessage::parse_head(data(&rel), &Limits::default())
                        .unwrap_or_else(|e| panic!("{rel} head refused: {e}"));
                    counts[0] += 1;
                }
                "valid" => {
                    let m = r.unwrap_or_else(|e| panic!("{rel} refused: {e}"));
                    m.validate_all().unwrap_or_else(|e| panic!("{rel}: {e}"));
                    // Unchanged messages serialize to the bytes received.
                    let original = data(&rel);
                    assert_eq!(&m.to_bytes()[..], &original[..m.to_bytes().len()], "{rel}");
                    counts[0] += 1;
                }
                "invalid" => {
                    invalid(suite, &name);
                    counts[2] += 1;
                }
                other => panic!("unknown verdict {other}"),
            }
        }
    }
    // 27 + 10 valid, 23 + 2 invalid.
    assert_eq!(counts[0], 37);
    assert_eq!(counts[2], 25);
}

#[test]
fn wsinv_folding_whitespace_and_three_vias() {
    let m = valid("rfc4475", "wsinv");
    let vias: Vec<_> = m.vias().map(Result::unwrap).collect();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[0].transport(), Transport::Udp);
    assert_eq!(vias[0].branch(), Some("390skdjuw"));
    assert_eq!(m.max_forwards().unwrap(), Some(68));
    let cseq = m.cseq().unwrap();
    assert_eq!((cseq.seq(), cseq.method()), (9, Method::Invite));
    let to = m.to().unwrap();
    assert_eq!(to.tag(), Some(&b"1918181833n"[..]));
    let from = m.from().unwrap();
    assert_eq!(
        &*from.display_name().unwrap().decoded(),
        b"J Rosenberg \\\""
    );
    assert_eq!(from.tag(), Some(&b"98asjd8"[..]));
    assert_eq!(m.header(HeaderName::Subject), Some(&b""[..]));
    assert_eq!(
        m.header_by_name("UnknownHeaderWithUnusualValue"),
        Some(&b";;,,;;,;"[..])
    );
    let contact = m.contacts().next().unwrap().unwrap();
    let addr = contact.addr().unwrap();
    assert_eq!(
        &*addr.display_name().unwrap().decoded(),
        b"Quoted string \"\""
    );
    assert_eq!(addr.params().get("newparam"), Some(Some(&b"newvalue"[..])));
    assert_eq!(contact.q_millis(), Some(330));
    assert_eq!(
        m.header_by_name("NewFangledHeader"),
        Some(&b"newfangled value continued newfangled value"[..])
    );
    assert_eq!(m.body().len(), 150);
    let uri = m.request_uri().unwrap().unwrap();
    let sip = uri.as_sip().unwrap();
    assert!(sip.param("unknownparam").is_some());
}

#[test]
fn intmeth_extension_method_and_raw_bytes_in_display_name() {
    let m = valid("rfc4475", "intmeth");
    let method = m.method().unwrap();
    assert_eq!(
        method.as_str(),
        "!interesting-Method0123456789_*+`.%indeed'~"
    );
    assert!(matches!(method, Method::Extension(_)));
    let to = m.to().unwrap();
    let name = to.display_name().unwrap().decoded();
    assert!(name.contains(&0x00) && name.contains(&0x07) && name.contains(&0x7f));
    let uri = m.request_uri().unwrap().unwrap();
    let sip = uri.as_sip().unwrap();
    assert_eq!(
        &*sip.user().unwrap(),
        b"1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    );
    assert_eq!(
        &*sip.password().unwrap(),
        b"&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    );
    assert!(m.call_id().unwrap().starts_with(b"intmeth.word%ZK-!.*_+'@"));
}

#[test]
fn esc01_unescapes_each_component_once() {
    let m = valid("rfc4475", "esc01");
    let uri = m.request_uri().unwrap().unwrap();
    assert_eq!(
        &*uri.as_sip().unwrap().user().unwrap(),
        b"sips:user@example.com"
    );
    let from = m.from().unwrap();
    assert_eq!(
        &*from.uri().as_sip().unwrap().user().unwrap(),
        b"I have spaces"
    );
    let contact = m.contacts().next().unwrap().unwrap();
    let curi = *contact.addr().unwrap().uri().as_sip().unwrap();
    assert_eq!(&*curi.user().unwrap(), b"caller");
    assert!(curi.is_loose_route());
    assert_eq!(&*curi.param("name").unwrap().unwrap(), b"value%41");
}

#[test]
fn escnull_keeps_nul_bytes() {
    let m = valid("rfc4475", "escnull");
    let to = m.to().unwrap();
    assert_eq!(
        &*to.uri().as_sip().unwrap().user().unwrap(),
        b"null-\0-null"
    );
    let contacts: Vec<_> = m.contacts().map(Result::unwrap).collect();
    assert_eq!(contacts.len(), 2);
    let users: Vec<_> = contacts
        .iter()
        .map(|c| {
            c.addr()
                .unwrap()
                .uri()
                .as_sip()
                .unwrap()
                .user()
                .unwrap()
                .into_owned()
        })
        .collect();
    assert_eq!(users[0], b"\0");
    assert_eq!(users[1], b"\0\0");
}

#[test]
fn esc02_percent_is_not_an_escape_in_methods_or_names() {
    let m = valid("rfc4475", "esc02");
    assert_eq!(m.method().unwrap().as_str(), "RE%47IST%45R");
    assert_eq!(m.contacts().count(), 2);
    assert!(m.header_by_name("C%6Fntact").is_some());
    let from = m.from().unwrap();
    assert_eq!(&*from.display_name().unwrap().decoded(), b"%Z%45");
}

#[test]
fn lwsdisp_and_longreq() {
    let m = valid("rfc4475", "lwsdisp");
    assert_eq!(
        &*m.from().unwrap().display_name().unwrap().decoded(),
        b"caller"
    );
    let m = valid("rfc4475", "longreq");
    assert_eq!(m.vias().count(), 34);
    assert!(m.vias().all(|v| v.is_ok()));
}

#[test]
fn dblreq_ignores_trailing_bytes() {
    let m = valid("rfc4475", "dblreq");
    assert_eq!(m.method(), Some(&Method::Register));
    assert!(m.body().is_empty());
    assert!(m.to_bytes().len() < data("rfc4475/valid/dblreq.sip").len());
}

#[test]
fn semiuri_user_holds_semicolon() {
    let m = valid("rfc4475", "semiuri");
    let uri = m.request_uri().unwrap().unwrap();
    let sip = uri.as_sip().unwrap();
    assert_eq!(&*sip.user().unwrap(), b"user;par=u@example.net");
    assert_eq!(sip.host(), Host::Domain("example.com"));
    assert_eq!(sip.params().count(), 0);
    assert_eq!(m.header_values(HeaderName::Accept).count(), 6);
}

#[test]
fn transports_include_unknown() {
    let m = valid("rfc4475", "transports");
    let t: Vec<_> = m.vias().map(|v| v.unwrap().transport()).collect();
    assert_eq!(
        t,
        [
            Transport::Udp,
            Transport::Sctp,
            Transport::Tls,
            Transport::Other("UNKNOWN"),
            Transport::Tcp
        ]
    );
}

#[test]
fn mpart01_binary_body_is_553_bytes() {
    let m = valid("rfc4475", "mpart01");
    assert_eq!(m.body().len(), 553);
    assert!(m.body().contains(&0));
    let ct = m.content_type().unwrap().unwrap();
    assert!(ct.is("multipart", "mixed"));
}

#[test]
fn reason_phrases_byte_for_byte() {
    let m = valid("rfc4475", "unreason");
    assert_eq!(m.status(), Some(200));
    let reason = std::str::from_utf8(m.reason().unwrap()).unwrap();
    assert!(reason.starts_with("= 2**3 * 5**2 "));
    assert!(reason.contains("сто"));
    let m = valid("rfc4475", "noreason");
    assert_eq!((m.status(), m.reason()), (Some(100), Some(&b""[..])));
}

#[test]
fn semantic_layer_messages_parse() {
    let m = valid("rfc4475", "unkscm");
    assert!(matches!(m.request_uri().unwrap().unwrap(), Uri::Other(_)));
    let m = valid("rfc4475", "novelsc");
    assert_eq!(m.request_uri().unwrap().unwrap().scheme(), "soap.beep");
    let m = valid("rfc4475", "unksm2");
    assert_eq!(m.to().unwrap().uri().scheme(), "isbn");
    let m = valid("rfc4475", "bext01");
    let req: Vec<_> = m.tokens(HeaderName::Require).map(Result::unwrap).collect();
    assert_eq!(req, ["nothingSupportsThis", "nothingSupportsThisEither"]);
    let m = valid("rfc4475", "regaut01");
    let a = m.auth(HeaderName::Authorization).next().unwrap().unwrap();
    assert_eq!(a.scheme(), "NoOneKnowsThisScheme");
    let m = valid("rfc4475", "zeromf");
    assert_eq!(m.max_forwards().unwrap(), Some(0));
    let m = valid("rfc4475", "badbranch");
    assert_eq!(m.top_via().unwrap().branch(), Some("z9hG4bK"));
    let m = valid("rfc4475", "bcast");
    let v: Vec<_> = m.vias().map(Result::unwrap).collect();
    assert_eq!(v[1].host(), Host::Ipv4("255.255.255.255".parse().unwrap()));
}

#[test]
fn contact_params_vs_uri_params() {
    let m = valid("rfc4475", "cparam01");
    let c = m.contacts().next().unwrap().unwrap();
    assert!(c.addr().unwrap().params().contains("unknownparam"));
    let m = valid("rfc4475", "cparam02");
    let c = m.contacts().next().unwrap().unwrap();
    assert!(!c.addr().unwrap().params().contains("unknownparam"));
    assert!(c
        .addr()
        .unwrap()
        .uri()
        .as_sip()
        .unwrap()
        .param("unknownparam")
        .is_some());
    let m = valid("rfc4475", "regescrt");
    let c = m.contacts().next().unwrap().unwrap();
    let uri = *c.addr().unwrap().uri().as_sip().unwrap();
    let h: Vec<_> = uri.headers().collect();
    assert_eq!(&*h[0].0, b"Route");
    assert_eq!(&*h[0].1, b"<sip:sip.example.com>");
}

#[test]
fn inv2543_without_content_length_takes_the_rest() {
    let m = valid("rfc4475", "inv2543");
    assert_eq!(m.body().len(), 105);
    assert_eq!(m.max_forwards().unwrap(), None);
    assert_eq!(m.top_via().unwrap().branch(), None);
}

#[test]
fn invalid_messages_get_the_right_refusal() {
    use ParseError as E;
    type Check = fn(&ParseError) -> bool;
    let cases: &[(&str, Check)] = &[
        ("badinv01", |e| matches!(e, E::Header { header: "Via", .. })),
        ("clerr", |e| matches!(e, E::ContentLength(_))),
        ("ncl", |e| matches!(e, E::ContentLength(_))),
        ("scalar02", |e| {
            matches!(e, E::Header { header: "CSeq", .. })
        }),
        ("scalarlg", |e| {
            matches!(e, E::Header { header: "CSeq", .. })
        }),
        ("quotbal", |e| matches!(e, E::Header { header: "To", .. })),
        // The reason says which mistake it is (the peer gets it in the 400).
        ("ltgtruri", |e| {
            *e == E::Uri("URI enclosed in < > where a bare URI belongs")
        }),
        ("lwsruri", |e| {
            *e == E::StartLine("whitespace inside the Request-URI")
        }),
        ("lwsstart", |e| {
            *e == E::StartLine("more than one space between the request line's parts")
        }),
        ("trws", |e| {
            *e == E::StartLine("whitespace after the SIP-Version")
        }),
        ("escruri", |e| matches!(e, E::Uri(_))),
        ("baddate", |e| matches!(e, E::Header { header: "Date", .. })),
        ("regbadct", |e| {
            matches!(
                e,
                E::Header {
                    header: "Contact",
                    ..
                }
            )
        }),
        ("badaspec", |e| {
            *e == E::Header {
                header: "To",
                why: "whitespace before the URI",
            }
        }),
        ("baddn", |e| matches!(e, E::Header { header: "From", .. })),
        ("badvers", |e| matches!(e, E::Version)),
        ("mismatch01", |e| matches!(e, E::CSeqMethod)),
        ("mismatch02", |e| matches!(e, E::CSeqMethod)),
        ("bigcode", |e| matches!(e, E::StatusCode)),
        ("insuf", |e| matches!(e, E::Missing(_))),
        ("multi01", |e| matches!(e, E::Repeated(_))),
        ("mcl01", |e| matches!(e, E::ContentLength(_))),
        ("test", |e| matches!(e, E::StartLine(_))),
    ];
    for (name, check) in cases {
        let e = invalid("rfc4475", name);
        assert!(check(&e), "{name}: {e:?}");
        let expected = if *name == "badvers" { 505 } else { 400 };
        assert_eq!(e.status(), expected, "{name}");
    }
    // The reason says what is wrong, not what `2001:` looks like to a host parser.
    assert_eq!(
        invalid("rfc5118", "ipv6-bad"),
        E::Uri("IPv6 address without [ ]")
    );
    // Its To is checked before its Request-URI, and the refusal names the header.
    assert_eq!(
        invalid("rfc5118", "ipv6-bug-abnf-3-colons"),
        E::Header {
            header: "To",
            why: "bad IPv6 reference"
        }
    );
}

#[test]
fn ipv6_references() {
    let m = valid("rfc5118", "ipv6-good");
    let uri = m.request_uri().unwrap().unwrap();
    assert_eq!(
        uri.as_sip().unwrap().host(),
        Host::Ipv6("2001:db8::10".parse().unwrap())
    );
    let m = valid("rfc5118", "port-ambiguous");
    let uri = m.request_uri().unwrap().unwrap();
    assert_eq!(uri.as_sip().unwrap().port(), None);
    let m = valid("rfc5118", "port-unambiguous");
    let uri = m.request_uri().unwrap().unwrap();
    assert_eq!(uri.as_sip().unwrap().port(), Some(5070));
    for name in [
        "via-received-param-with-delim",
        "via-received-param-no-delim",
    ] {
        let m = valid("rfc5118", name);
        assert_eq!(
            m.top_via().unwrap().received(),
            Some("2001:db8::9:255".parse().unwrap()),
            "{name}"
        );
    }
    let m = valid("rfc5118", "mult-ip-in-header");
    assert_eq!(m.vias().count(), 3);
    let m = valid("rfc5118", "ipv6-correct-abnf-2-colons");
    let uri = m.request_uri().unwrap().unwrap();
    assert_eq!(
        uri.as_sip().unwrap().host(),
        Host::Ipv6("2001:db8::192.0.2.1".parse().unwrap())
    );
    let head =
        SipMessage::parse_head(data("rfc5118/valid/ipv6-in-sdp.sip"), &Limits::default()).unwrap();
    head.validate().unwrap();
    assert!(matches!(head.top_via().unwrap().host(), Host::Ipv6(_)));
}

#[test]
fn rfc5118_content_length_smaller_than_body_truncates() {
    // Documented framing: the body is Content-Length bytes; what follows is ignored.
    let m = valid("rfc5118", "mult-ip-in-sdp");
    assert_eq!(m.body().len(), 181);
    let m = valid("rfc5118", "ipv4-mapped-ipv6");
    assert_eq!(m.body().len(), 236);
    assert_eq!(
        m.top_via().unwrap().host(),
        Host::Ipv6("::ffff:192.0.2.10".parse().unwrap())
    );
}
