// Body of the `parse_message` fuzz target, shared with sip-core's corpus smoke test.
// Parses the bytes as a datagram, a framed message and a head; on success touches every
// typed view and re-serializes. Must never panic.
pub fn body(data: &[u8]) {
    use sip_core::{HeaderName, Limits, SipMessage};
    type Parser = fn(bytes::Bytes, &Limits) -> Result<SipMessage, sip_core::ParseError>;
    let bytes = bytes::Bytes::copy_from_slice(data);
    // With whether the parser reads the body (parse_head does not).
    let parsers: [(Parser, bool); 3] = [
        (SipMessage::parse_datagram, true),
        (SipMessage::parse_framed, true),
        (SipMessage::parse_head, false),
    ];
    for (parse, whole) in parsers {
        let Ok(m) = parse(bytes.clone(), &Limits::DEFAULT) else {
            continue;
        };
        let _ = m.validate_all();
        let _ = m.request_uri();
        let _ = m.vias().count();
        let _ = (m.from(), m.to(), m.call_id(), m.cseq(), m.max_forwards());
        for c in m.contacts().flatten() {
            let _ = (c.expires(), c.q_millis(), c.instance(), c.is_gruu());
        }
        for name in [
            HeaderName::Route,
            HeaderName::RecordRoute,
            HeaderName::PAssertedIdentity,
        ] {
            let _ = m.name_addrs(name).count();
        }
        for name in [HeaderName::WwwAuthenticate, HeaderName::Authorization] {
            for a in m.auth(name).flatten() {
                let _ = a.param("realm");
            }
        }
        // Digest (RFC 3261 §22, RFC 7616) with a peer writing both sides: its challenges go
        // to our client, its credentials to our verifier. Refused or not, never a panic.
        if matches!(m.status(), Some(401 | 407)) {
            let asked = SipMessage::request(sip_core::Method::Register, "sip:contoso.test")
                .header(
                    HeaderName::Via,
                    "SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKf",
                )
                .header(HeaderName::From, "<sip:alice@contoso.test>;tag=1")
                .header(HeaderName::To, "<sip:alice@contoso.test>")
                .header(HeaderName::CallId, "fuzz")
                .header(HeaderName::CSeq, "1 REGISTER")
                .build()
                .expect("a fixed request");
            let mut client = sip_core::auth::DigestClient::new(sip_core::auth::Credentials::new(
                "alice", "secret",
            ));
            if client.handle_challenge(&m, &asked).is_ok() {
                let _ = client.authorize(&asked);
            }
        }
        if m.is_request() {
            let now = std::time::Instant::now();
            for name in [HeaderName::Authorization, HeaderName::ProxyAuthorization] {
                // The realm the credentials name, so the verifier reads them to the end.
                let realm = m
                    .auth(name)
                    .flatten()
                    .find_map(|a| {
                        a.param("realm")
                            .map(|r| String::from_utf8_lossy(&r).into_owned())
                    })
                    .unwrap_or_else(|| "contoso.test".into());
                let mut verifier = sip_core::auth::DigestVerifier::new(realm, [7; 32], now);
                let _ = verifier.verify(&m, name, now, |_, _| {
                    Some(sip_core::auth::Secret::Password("secret".into()))
                });
            }
        }
        let _ = m.warnings().count();
        let _ = m.tokens(HeaderName::Supported).count();
        let _ = m.token_params(HeaderName::Event);
        // A UAS answers any request that validated: the response (Via, From, To, Call-ID
        // and CSeq copied, a To tag added) must parse back with the same dialog fields.
        if m.is_request() && m.validate().is_ok() {
            if let Ok(mut r) = SipMessage::response_to(&m, 200, "OK") {
                let _ = r.set_to_tag("f1");
                let wire = r.to_bytes();
                if wire.len() <= Limits::DEFAULT.max_message_size {
                    let back = SipMessage::parse_datagram(wire, &Limits::DEFAULT)
                        .expect("a response to a valid request parses");
                    assert_eq!(back.call_id().ok(), m.call_id().ok());
                    assert_eq!(back.cseq().ok(), m.cseq().ok());
                    assert_eq!(back.top_via().ok(), m.top_via().ok());
                }
            }
        }
        // The server transport stamps the source on every request (RFC 3261 §18.2.1): on
        // any message that validated, that edits the top Via alone and parses back.
        if whole && m.is_request() && m.validate().is_ok() {
            let mut stamped = m.clone();
            let source: std::net::SocketAddr = ([192, 0, 2, 77], 40_000).into();
            if stamped.record_source_in_via(source) == Ok(true) {
                assert!(stamped.validate().is_ok(), "stamped message invalid");
                let via = stamped.top_via().expect("stamped top Via reads");
                assert_eq!(via.received(), Some(source.ip()));
                // Every field but the first Via (which holds the top Via).
                let rest = |x: &SipMessage| -> Vec<(HeaderName, Vec<u8>)> {
                    let top = x.headers().position(|h| h.name == HeaderName::Via);
                    x.headers()
                        .enumerate()
                        .filter(|(i, _)| Some(*i) != top)
                        .map(|(_, h)| (h.name, h.value.to_vec()))
                        .collect()
                };
                assert_eq!(rest(&stamped), rest(&m));
                assert_eq!(stamped.body(), m.body());
                let wire = stamped.to_bytes();
                if wire.len() <= Limits::DEFAULT.max_message_size {
                    let back = SipMessage::parse_datagram(wire, &Limits::DEFAULT)
                        .expect("a stamped valid request parses");
                    assert_eq!(back.top_via().ok(), stamped.top_via().ok());
                    assert_eq!(back.cseq().ok(), m.cseq().ok());
                    assert_eq!(back.from().ok(), m.from().ok());
                }
            }
        }
        let again = m.to_bytes();
        // A validated message we wrote must parse again (parse_head does not validate).
        if m.header(HeaderName::ContentLength).is_some() && m.validate().is_ok() {
            assert!(
                SipMessage::parse_datagram(again, &Limits::DEFAULT).is_ok() || data.len() > 60000
            );
        }
    }
}
