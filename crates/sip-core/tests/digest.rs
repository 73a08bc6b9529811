//! Digest authentication: RFC vectors through the client, client behaviour on challenges
//! (stale, several challenges, nonce counts, wrong password), the verifier, and round trips
//! client ↔ verifier for every algorithm.

use std::time::{Duration, Instant};

use sip_core::auth::{
    Algorithm, AuthorizationHeader, Credentials, DigestClient, DigestError, DigestVerifier, Qop,
    Secret, VerifyError,
};
use sip_core::{AuthValue, HeaderName, Method, SipMessage};

const KEY: [u8; 32] = [7; 32];
const REALM: &str = "contoso.test";

fn register(cseq: u32, auth: &[AuthorizationHeader]) -> SipMessage {
    let mut b = SipMessage::request(Method::Register, "sip:contoso.test")
        .header(
            HeaderName::Via,
            format!("SIP/2.0/TLS app.contoso.test;branch=z9hG4bK{cseq}"),
        )
        .header(HeaderName::From, "<sip:app@contoso.test>;tag=a1")
        .header(HeaderName::To, "<sip:app@contoso.test>")
        .header(HeaderName::CallId, "reg-1")
        .header(HeaderName::CSeq, format!("{cseq} REGISTER"));
    for h in auth {
        b = b.header(h.name, h.value.clone());
    }
    b.build().unwrap()
}

fn challenge(request: &SipMessage, status: u16, values: &[&str]) -> SipMessage {
    let mut r = SipMessage::response_to(request, status, "Unauthorized").unwrap();
    let name = if status == 407 {
        HeaderName::ProxyAuthenticate
    } else {
        HeaderName::WwwAuthenticate
    };
    for v in values {
        r.push_header(name, v.to_string()).unwrap();
    }
    r
}

fn fixed_cnonce(value: &'static str) -> Box<dyn FnMut() -> String + Send> {
    Box::new(move || value.to_owned())
}

fn counting_cnonce() -> Box<dyn FnMut() -> String + Send> {
    let mut n = 0;
    Box::new(move || {
        n += 1;
        format!("cn{n}")
    })
}

fn param(h: &AuthorizationHeader, name: &str) -> Option<String> {
    let v = AuthValue::parse(h.value.as_bytes(), "Authorization").unwrap();
    v.param(name)
        .map(|p| String::from_utf8(p.into_owned()).unwrap())
}

// ---- RFC vectors through the client -------------------------------------------------------

const RFC7616_NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
const RFC7616_CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
const RFC7616_OPAQUE: &str = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS";

/// The RFC's HTTP request as a SIP message (unchecked: `/dir/index.html` is no SIP URI).
fn http_get() -> SipMessage {
    SipMessage::request(Method::from_token(b"GET"), "/dir/index.html")
        .header(HeaderName::Via, "SIP/2.0/TCP h;branch=z9hG4bKx")
        .header(HeaderName::CallId, "x")
        .header(HeaderName::CSeq, "1 GET")
        .build_unchecked()
}

#[test]
fn rfc7616_section_3_9_1_md5_and_sha256_through_the_client() {
    let cases = [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        (
            "SHA-256",
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        ),
    ];
    for (algorithm, expected) in cases {
        let request = http_get();
        let www = format!(
            r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, nonce="{RFC7616_NONCE}", opaque="{RFC7616_OPAQUE}""#
        );
        let response = SipMessage::response(401, "Unauthorized")
            .header(HeaderName::WwwAuthenticate, www)
            .build_unchecked();
        let mut client = DigestClient::new(Credentials::new("Mufasa", "Circle of Life"))
            .with_cnonce_source(fixed_cnonce(RFC7616_CNONCE));
        let headers = client.handle_challenge(&response, &request).unwrap();
        assert_eq!(headers.len(), 1);
        let h = &headers[0];
        assert_eq!(h.name, HeaderName::Authorization);
        assert_eq!(param(h, "response").unwrap(), expected, "{algorithm}");
        assert_eq!(param(h, "opaque").unwrap(), RFC7616_OPAQUE);
        assert_eq!(param(h, "uri").unwrap(), "/dir/index.html");
        assert!(h.value.contains(&format!("algorithm={algorithm},")));
        assert!(h.value.contains("qop=auth, nc=00000001"), "{}", h.value);
        assert!(h.value.contains(&format!(r#"cnonce="{RFC7616_CNONCE}""#)));
        assert!(h
            .value
            .starts_with(r#"Digest username="Mufasa", realm="http-auth@example.org""#));
    }
}

#[test]
fn rfc2069_form_without_qop_through_the_client() {
    let request = http_get();
    let response = SipMessage::response(401, "Unauthorized")
        .header(
            HeaderName::WwwAuthenticate,
            r#"Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093""#,
        )
        .build_unchecked();
    let mut client = DigestClient::new(Credentials::new("Mufasa", "CircleOfLife"));
    let h = &client.handle_challenge(&response, &request).unwrap()[0];
    // Recomputed value (the one printed in RFC 2069 is a known erratum); python3 agrees.
    assert_eq!(
        param(h, "response").unwrap(),
        "1949323746fe6a43ef61f9606e7febea"
    );
    assert_eq!(param(h, "nc"), None);
    assert_eq!(param(h, "cnonce"), None);
    assert_eq!(param(h, "qop"), None);
}

#[test]
fn rfc2617_md5_with_qop_auth() {
    let request = http_get();
    let response = SipMessage::response(401, "Unauthorized")
        .header(
            HeaderName::WwwAuthenticate,
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .build_unchecked();
    let mut client = DigestClient::new(Credentials::new("Mufasa", "Circle Of Life"))
        .with_cnonce_source(fixed_cnonce("0a4f113b"));
    let h = &client.handle_challenge(&response, &request).unwrap()[0];
    assert_eq!(
        param(h, "response").unwrap(),
        "6629fae49393a05397450978507c4ef1"
    );
}

#[test]
fn userhash_sends_the_hashed_username() {
    let request = http_get();
    let response = SipMessage::response(401, "Unauthorized")
        .header(
            HeaderName::WwwAuthenticate,
            r#"Digest realm="api@example.org", qop="auth", algorithm=SHA-512-256, nonce="5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK", userhash=true"#,
        )
        .build_unchecked();
    let mut client = DigestClient::new(Credentials::new("J\u{e4}s\u{f8}n Doe", "Secret, or not?"));
    let h = &client.handle_challenge(&response, &request).unwrap()[0];
    // SHA-512/256("Jäsøn Doe:api@example.org") from python3 hashlib.
    assert_eq!(
        param(h, "username").unwrap(),
        "793263caabb707a56211940d90411ea4a575adeccb7e360aeb624ed06ece9b0b"
    );
    assert!(h.value.ends_with("userhash=true"));
}

// ---- client behaviour ---------------------------------------------------------------------

#[test]
fn several_challenges_pick_the_strongest_supported() {
    let req = register(1, &[]);
    let resp = challenge(
        &req,
        401,
        &[
            r#"NTLM realm="SIP Communications Service", targetname="fe.contoso.test", version=4"#,
            r#"Digest realm="contoso.test", nonce="n1", qop="auth", algorithm=MD5"#,
            r#"Digest realm="contoso.test", nonce="n1", qop="auth", algorithm=SHA-512-256"#,
            r#"Digest realm="contoso.test", nonce="n1", qop="auth", algorithm=AKAv1-MD5"#,
            r#"Digest realm="contoso.test", nonce="n1", qop="auth", algorithm=SHA-256"#,
        ],
    );
    let mut client = DigestClient::new(Credentials::new("app", "pw"));
    let headers = client.handle_challenge(&resp, &req).unwrap();
    assert_eq!(headers.len(), 1);
    assert!(headers[0].value.contains("algorithm=SHA-512-256,"));

    // SHA-256 beats MD5 whatever the order.
    let resp = challenge(
        &req,
        401,
        &[
            r#"Digest realm="contoso.test", nonce="n1", algorithm=SHA-256"#,
            r#"Digest realm="contoso.test", nonce="n1""#,
        ],
    );
    let headers = client.handle_challenge(&resp, &req).unwrap();
    assert_eq!(param(&headers[0], "algorithm").unwrap(), "SHA-256");
}

#[test]
fn only_unsupported_challenges_is_a_typed_error() {
    let req = register(1, &[]);
    let resp = challenge(
        &req,
        401,
        &[
            r#"NTLM realm="x", targetname="y", version=4"#,
            r#"Digest realm="r", nonce="n", algorithm=AKAv1-MD5"#,
        ],
    );
    let mut client = DigestClient::new(Credentials::new("app", "pw"));
    assert_eq!(
        client.handle_challenge(&resp, &req),
        Err(DigestError::NoSupportedChallenge)
    );
    let ok = SipMessage::response_to(&req, 200, "OK").unwrap();
    assert_eq!(
        client.handle_challenge(&ok, &req),
        Err(DigestError::NotAChallenge)
    );
}

#[test]
fn nonce_count_increments_and_cnonce_stays_per_nonce() {
    let req = register(1, &[]);
    let resp = challenge(
        &req,
        401,
        &[r#"Digest realm="contoso.test", nonce="n1", qop="auth""#],
    );
    let mut client =
        DigestClient::new(Credentials::new("app", "pw")).with_cnonce_source(counting_cnonce());
    let first = client.handle_challenge(&resp, &req).unwrap();
    assert_eq!(param(&first[0], "nc").unwrap(), "00000001");
    for (i, expected) in ["00000002", "00000003"].into_iter().enumerate() {
        let next = client.authorize(&register(3 + i as u32, &[])).unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(param(&next[0], "nc").unwrap(), expected);
        assert_eq!(param(&next[0], "cnonce").unwrap(), "cn1");
        assert_eq!(param(&next[0], "nonce").unwrap(), "n1");
    }
    assert_eq!(client.nonce_count("contoso.test"), Some(3));
    // A new nonce restarts the count with a new cnonce.
    let req = register(5, &next_auth(&mut client));
    let resp = challenge(
        &req,
        401,
        &[r#"Digest realm="contoso.test", nonce="n2", qop="auth", stale=true"#],
    );
    let h = client.handle_challenge(&resp, &req).unwrap();
    assert_eq!(param(&h[0], "nc").unwrap(), "00000001");
    assert_eq!(param(&h[0], "cnonce").unwrap(), "cn2");
    client.clear();
    assert!(client.authorize(&req).unwrap().is_empty());
}

fn next_auth(client: &mut DigestClient) -> Vec<AuthorizationHeader> {
    client.authorize(&register(99, &[])).unwrap()
}

#[test]
fn stale_true_retries_with_the_new_nonce() {
    let req = register(1, &[]);
    let mut client = DigestClient::new(Credentials::new("app", "pw"));
    let resp = challenge(
        &req,
        401,
        &[r#"Digest realm="contoso.test", nonce="old", qop="auth""#],
    );
    let auth = client.handle_challenge(&resp, &req).unwrap();
    let retried = register(2, &auth);
    let resp = challenge(
        &retried,
        401,
        &[r#"Digest realm="contoso.test", nonce="new", qop="auth", stale=true"#],
    );
    let auth = client.handle_challenge(&resp, &retried).unwrap();
    assert_eq!(param(&auth[0], "nonce").unwrap(), "new");

    // Stale but the same nonce again: the server refuses what was sent.
    let retried = register(3, &auth);
    let resp = challenge(
        &retried,
        401,
        &[r#"Digest realm="contoso.test", nonce="new", qop="auth", stale=true"#],
    );
    assert!(matches!(
        client.handle_challenge(&resp, &retried),
        Err(DigestError::Rejected { .. })
    ));
}

#[test]
fn endless_stale_challenges_end_in_an_error() {
    let mut client = DigestClient::new(Credentials::new("app", "pw"));
    let mut req = register(1, &[]);
    let mut result = Ok(Vec::new());
    for i in 0..5 {
        let stale = if i == 0 { "" } else { ", stale=true" };
        let v = format!(r#"Digest realm="contoso.test", nonce="n{i}", qop="auth"{stale}"#);
        let resp = challenge(&req, 401, &[&v]);
        result = client.handle_challenge(&resp, &req);
        match &result {
            Ok(auth) => req = register(2 + i, auth),
            Err(_) => break,
        }
    }
    assert_eq!(
        result,
        Err(DigestError::StaleLoop {
            realm: "contoso.test".into()
        })
    );
}

#[test]
fn wrong_password_is_a_typed_error_not_a_loop() {
    let mut client = DigestClient::new(Credentials::new("app", "wrong"));
    let req = register(1, &[]);
    let v = r#"Digest realm="contoso.test", nonce="n1", qop="auth""#;
    let auth = client
        .handle_challenge(&challenge(&req, 401, &[v]), &req)
        .unwrap();
    let retried = register(2, &auth);
    // Same nonce, no stale.
    assert_eq!(
        client.handle_challenge(&challenge(&retried, 401, &[v]), &retried),
        Err(DigestError::Rejected {
            realm: "contoso.test".into(),
            status: 401
        })
    );
    // A fresh nonce without stale after fresh credentials (nc=1): also rejected.
    let v2 = r#"Digest realm="contoso.test", nonce="n2", qop="auth""#;
    assert!(matches!(
        client.handle_challenge(&challenge(&retried, 401, &[v2]), &retried),
        Err(DigestError::Rejected { .. })
    ));
}

#[test]
fn reused_credentials_with_an_expired_nonce_get_one_retry() {
    // Credentials reused up front (nc > 1) meet a server that issues a new nonce without
    // stale=true: retry once; if the retry is refused too, stop.
    let mut client = DigestClient::new(Credentials::new("app", "pw"));
    let req = register(1, &[]);
    let v = r#"Digest realm="contoso.test", nonce="n1", qop="auth""#;
    client
        .handle_challenge(&challenge(&req, 401, &[v]), &req)
        .unwrap();
    let reused = register(2, &next_auth(&mut client));
    let v2 = r#"Digest realm="contoso.test", nonce="n2", qop="auth""#;
    let auth = client
        .handle_challenge(&challenge(&reused, 401, &[v2]), &reused)
        .unwrap();
    let retried = register(3, &auth);
    let v3 = r#"Digest realm="contoso.test", nonce="n3", qop="auth""#;
    assert!(matches!(
        client.handle_challenge(&challenge(&retried, 401, &[v3]), &retried),
        Err(DigestError::Rejected { .. })
    ));
}

#[test]
fn proxy_challenges_from_two_realms() {
    let req = register(1, &[]);
    let resp = challenge(
        &req,
        407,
        &[
            r#"Digest realm="edge.contoso.test", nonce="e1", qop="auth", algorithm=SHA-256"#,
            r#"Digest realm="contoso.test", nonce="c1", qop="auth""#,
        ],
    );
    let mut client = DigestClient::new(Credentials::new("app", "pw"))
        .with_credentials(Credentials::new("edge-user", "edge-pw").for_realm("edge.contoso.test"));
    let headers = client.handle_challenge(&resp, &req).unwrap();
    assert_eq!(headers.len(), 2);
    assert!(headers
        .iter()
        .all(|h| h.name == HeaderName::ProxyAuthorization));
    assert_eq!(param(&headers[0], "username").unwrap(), "edge-user");
    assert_eq!(param(&headers[1], "username").unwrap(), "app");

    let mut only_edge =
        DigestClient::new(Credentials::new("edge-user", "pw").for_realm("edge.contoso.test"));
    let resp = challenge(&req, 407, &[r#"Digest realm="contoso.test", nonce="c1""#]);
    assert_eq!(
        only_edge.handle_challenge(&resp, &req),
        Err(DigestError::NoCredentials {
            realm: "contoso.test".into()
        })
    );
}

/// A proxy (407) and then a registrar (401) challenge: the retry after the 401 carries the
/// registrar's credentials and the proxy's again (RFC 3261 §22.3), with the proxy's nonce
/// count moved on. Before, it carried the registrar's alone, the proxy challenged again,
/// and the two took turns for ever.
#[test]
fn a_proxy_and_a_registrar_challenging_in_turn_are_both_answered() {
    let mut client = DigestClient::new(Credentials::new("app", "pw"));
    let r1 = register(1, &[]);
    let proxy = r#"Digest realm="edge.contoso.test", nonce="p1", qop="auth""#;
    let h1 = client
        .handle_challenge(&challenge(&r1, 407, &[proxy]), &r1)
        .unwrap();
    let r2 = register(2, &h1);
    let registrar = r#"Digest realm="contoso.test", nonce="g1", qop="auth""#;
    let h2 = client
        .handle_challenge(&challenge(&r2, 401, &[registrar]), &r2)
        .unwrap();
    let answered: Vec<_> = h2
        .iter()
        .map(|h| (h.name, h.realm.as_str(), param(h, "nc").unwrap()))
        .collect();
    assert_eq!(
        answered,
        [
            (HeaderName::Authorization, "contoso.test", "00000001".into()),
            (
                HeaderName::ProxyAuthorization,
                "edge.contoso.test",
                "00000002".into()
            ),
        ]
    );
    // A request that did not carry the proxy's credentials does not get them unasked.
    let r3 = register(3, &[]);
    let h3 = client
        .handle_challenge(
            &challenge(
                &r3,
                401,
                &[r#"Digest realm="contoso.test", nonce="g2", qop="auth""#],
            ),
            &r3,
        )
        .unwrap();
    assert_eq!(h3.len(), 1);
}

/// A challenge that repeats a nonce already used (a request sent without credentials, a
/// stateless server) continues its count: `nc` counts the requests sent with the nonce
/// (RFC 7616 §3.4), and a verifier that tracks it takes a second `nc=1` for a replay.
#[test]
fn a_rechallenge_with_a_used_nonce_continues_its_count() {
    let t0 = Instant::now();
    let mut server = DigestVerifier::new(REALM, KEY, t0);
    let mut client = DigestClient::new(Credentials::new("app", "pw"));
    let r1 = register(1, &[]);
    let first = www(&mut server, &r1, t0, false);
    let h1 = client.handle_challenge(&first, &r1).unwrap();
    assert!(server
        .verify(&register(2, &h1), HeaderName::Authorization, t0, lookup)
        .is_ok());
    let h2 = client.authorize(&register(3, &[])).unwrap();
    assert!(server
        .verify(&register(3, &h2), HeaderName::Authorization, t0, lookup)
        .is_ok());
    // The same challenge again, to a request sent without credentials.
    let r4 = register(4, &[]);
    let again = {
        let mut r = SipMessage::response_to(&r4, 401, "Unauthorized").unwrap();
        let value = first.header(HeaderName::WwwAuthenticate).unwrap().to_vec();
        r.push_header(
            HeaderName::WwwAuthenticate,
            String::from_utf8(value).unwrap(),
        )
        .unwrap();
        r
    };
    let h4 = client.handle_challenge(&again, &r4).unwrap();
    assert_eq!(param(&h4[0], "nc").unwrap(), "00000003");
    assert!(
        server
            .verify(&register(5, &h4), HeaderName::Authorization, t0, lookup)
            .is_ok(),
        "the verifier took the retry for a replay"
    );
}

// ---- verifier -----------------------------------------------------------------------------

fn lookup(user: &str, _: Algorithm) -> Option<Secret> {
    (user == "app").then(|| Secret::Password("pw".into()))
}

fn www(verifier: &mut DigestVerifier, req: &SipMessage, now: Instant, stale: bool) -> SipMessage {
    let mut resp = SipMessage::response_to(req, 401, "Unauthorized").unwrap();
    verifier.challenge_response(&mut resp, now, stale).unwrap();
    resp
}

#[test]
fn verifier_accepts_rejects_stale_and_replay() {
    let t0 = Instant::now();
    let mut server = DigestVerifier::new(REALM, KEY, t0);
    let req = register(1, &[]);
    assert_eq!(
        server.verify(&req, HeaderName::Authorization, t0, lookup),
        Err(VerifyError::Missing)
    );
    let resp = www(&mut server, &req, t0, false);
    assert_eq!(resp.auth(HeaderName::WwwAuthenticate).count(), 2);

    let mut client = DigestClient::new(Credentials::new("app", "pw"));
    let auth = client.handle_challenge(&resp, &req).unwrap();
    assert!(auth[0].value.contains("algorithm=SHA-256"));
    let ok = register(2, &auth);
    let v = server
        .verify(&ok, HeaderName::Authorization, t0, lookup)
        .unwrap();
    assert_eq!(
        (v.username.as_str(), v.algorithm, v.qop),
        ("app", Algorithm::Sha256, Some(Qop::Auth))
    );

    // The same request again: replay.
    let err = server
        .verify(&ok, HeaderName::Authorization, t0, lookup)
        .unwrap_err();
    assert_eq!(err, VerifyError::Replay);
    assert!(err.is_stale());

    // nc=2 within the lifetime: accepted; after it: stale.
    let next = register(3, &next_auth(&mut client));
    assert!(server
        .verify(
            &next,
            HeaderName::Authorization,
            t0 + Duration::from_secs(10),
            lookup
        )
        .is_ok());
    let late = register(4, &next_auth(&mut client));
    let err = server
        .verify(
            &late,
            HeaderName::Authorization,
            t0 + Duration::from_secs(301),
            lookup,
        )
        .unwrap_err();
    assert_eq!(err, VerifyError::Stale);
    assert_eq!(err.status(401), 401);

    // Wrong password, unknown user, HA1 lookup.
    let mut wrong = DigestClient::new(Credentials::new("app", "nope"));
    let resp = www(&mut server, &req, t0, false);
    let bad = register(5, &wrong.handle_challenge(&resp, &req).unwrap());
    assert_eq!(
        server.verify(&bad, HeaderName::Authorization, t0, lookup),
        Err(VerifyError::WrongResponse)
    );
    let mut stranger = DigestClient::new(Credentials::new("eve", "pw"));
    let who = register(6, &stranger.handle_challenge(&resp, &req).unwrap());
    assert_eq!(
        server.verify(&who, HeaderName::Authorization, t0, lookup),
        Err(VerifyError::UnknownUser)
    );
    let mut good = DigestClient::new(Credentials::new("app", "pw"));
    let fine = register(7, &good.handle_challenge(&resp, &req).unwrap());
    let ha1 = Algorithm::Sha256.ha1("app", REALM, "pw");
    assert!(server
        .verify(&fine, HeaderName::Authorization, t0, |_, a| {
            assert_eq!(a, Algorithm::Sha256);
            Some(Secret::Ha1(ha1.to_uppercase()))
        })
        .is_ok());
}

#[test]
fn verifier_refuses_forged_nonces_and_mismatched_uris() {
    let t0 = Instant::now();
    let mut server = DigestVerifier::new(REALM, KEY, t0);
    let mut other = DigestVerifier::new(REALM, [9; 32], t0);
    let req = register(1, &[]);
    // A nonce signed with another key: right password, so stale (the client retries).
    let resp = www(&mut other, &req, t0, false);
    let mut client = DigestClient::new(Credentials::new("app", "pw"));
    let forged = register(2, &client.handle_challenge(&resp, &req).unwrap());
    assert_eq!(
        server.verify(&forged, HeaderName::Authorization, t0, lookup),
        Err(VerifyError::Stale)
    );
    // Credentials computed for another Request-URI.
    let resp = www(&mut server, &req, t0, false);
    let auth = client.handle_challenge(&resp, &req).unwrap();
    let mut moved = SipMessage::request(Method::Register, "sip:elsewhere.test")
        .header(HeaderName::Via, "SIP/2.0/TLS h;branch=z9hG4bK9")
        .header(HeaderName::From, "<sip:app@contoso.test>;tag=a1")
        .header(HeaderName::To, "<sip:app@contoso.test>")
        .header(HeaderName::CallId, "reg-1")
        .header(HeaderName::CSeq, "9 REGISTER")
        .build()
        .unwrap();
    moved
        .push_header(auth[0].name, auth[0].value.clone())
        .unwrap();
    let err = server
        .verify(&moved, HeaderName::Authorization, t0, lookup)
        .unwrap_err();
    assert_eq!(
        (err.clone(), err.status(401)),
        (VerifyError::UriMismatch, 400)
    );
    // An algorithm the verifier does not offer.
    let md5_only = DigestVerifier::new(REALM, KEY, t0).with_algorithms(&[Algorithm::Md5]);
    let mut md5_only = md5_only;
    let ok = register(3, &auth);
    assert_eq!(
        md5_only.verify(&ok, HeaderName::Authorization, t0, lookup),
        Err(VerifyError::Unsupported)
    );
    // Malformed credentials.
    let mut b = register(4, &[]);
    b.push_header(
        HeaderName::Authorization,
        r#"Digest realm="contoso.test", nonce="x""#,
    )
    .unwrap();
    assert!(matches!(
        server.verify(&b, HeaderName::Authorization, t0, lookup),
        Err(VerifyError::Malformed(_))
    ));
}

#[test]
fn a_nonce_is_accepted_only_by_the_verifier_that_issued_it() {
    let t0 = Instant::now();
    // Two instances of a cluster sharing the key, or one instance before and after a
    // restart: each has its own replay table.
    let mut first = DigestVerifier::new(REALM, KEY, t0);
    let mut second = DigestVerifier::new(REALM, KEY, t0);
    let req = register(1, &[]);
    let mut client = DigestClient::new(Credentials::new("app", "pw"));
    let auth = client
        .handle_challenge(&www(&mut first, &req, t0, false), &req)
        .unwrap();
    let ok = register(2, &auth);
    assert!(first
        .verify(&ok, HeaderName::Authorization, t0, lookup)
        .is_ok());
    // The same request replayed to the other instance is not accepted: stale, so a genuine
    // client retries with that instance's nonce.
    let later = t0 + Duration::from_secs(5);
    let err = second
        .verify(&ok, HeaderName::Authorization, later, lookup)
        .unwrap_err();
    assert_eq!(err, VerifyError::Stale);
    let auth = client
        .handle_challenge(&www(&mut second, &ok, later, true), &ok)
        .unwrap();
    assert!(second
        .verify(
            &register(3, &auth),
            HeaderName::Authorization,
            later,
            lookup
        )
        .is_ok());
}

#[test]
fn credentials_without_the_offered_qop_are_refused() {
    let t0 = Instant::now();
    let mut server = DigestVerifier::new(REALM, KEY, t0);
    let req = register(1, &[]);
    // Someone on the path strips `qop` from the challenge: the client answers in the
    // RFC 2069 form, without a client nonce.
    let resp = www(&mut server, &req, t0, false);
    let stripped: Vec<String> = resp
        .auth(HeaderName::WwwAuthenticate)
        .map(|c| {
            let c = c.unwrap();
            let nonce = String::from_utf8(c.param("nonce").unwrap().into_owned()).unwrap();
            let algorithm = String::from_utf8(c.param("algorithm").unwrap().into_owned()).unwrap();
            format!(r#"Digest realm="{REALM}", nonce="{nonce}", algorithm={algorithm}"#)
        })
        .collect();
    let values: Vec<&str> = stripped.iter().map(String::as_str).collect();
    let mut client = DigestClient::new(Credentials::new("app", "pw"));
    let auth = client
        .handle_challenge(&challenge(&req, 401, &values), &req)
        .unwrap();
    assert_eq!(param(&auth[0], "qop"), None);
    assert!(matches!(
        server.verify(&register(2, &auth), HeaderName::Authorization, t0, lookup),
        Err(VerifyError::Malformed(_))
    ));
}

#[test]
fn verifier_replay_table_is_bounded() {
    let t0 = Instant::now();
    let mut server = DigestVerifier::new(REALM, KEY, t0).with_max_tracked_nonces(2);
    let req = register(1, &[]);
    let mut used = Vec::new();
    for i in 0..3u64 {
        let now = t0 + Duration::from_secs(i);
        let resp = www(&mut server, &req, now, false);
        let mut client = DigestClient::new(Credentials::new("app", "pw"));
        let ok = register(2, &client.handle_challenge(&resp, &req).unwrap());
        assert!(server
            .verify(&ok, HeaderName::Authorization, now, lookup)
            .is_ok());
        used.push(ok);
    }
    assert!(server.tracked_nonces() <= 2);
    // The evicted (oldest) nonce cannot be replayed: it is stale now.
    assert_eq!(
        server.verify(
            &used[0],
            HeaderName::Authorization,
            t0 + Duration::from_secs(3),
            lookup
        ),
        Err(VerifyError::Stale)
    );
}

// ---- round trips --------------------------------------------------------------------------

fn with_body(mut m: SipMessage) -> SipMessage {
    m.set_body(&b"v=0 (a body auth-int covers)"[..]);
    m
}

#[test]
fn round_trip_every_algorithm_and_qop() {
    let t0 = Instant::now();
    for algorithm in Algorithm::ALL {
        for qop in [vec![Qop::Auth], vec![Qop::AuthInt], vec![]] {
            let mut server = DigestVerifier::new(REALM, KEY, t0)
                .with_algorithms(&[algorithm])
                .with_qop(&qop)
                .with_opaque("op4que");
            let mut client = DigestClient::new(Credentials::new("app", "pw"));
            let req = with_body(register(1, &[]));
            let resp = www(&mut server, &req, t0, false);
            let auth = client.handle_challenge(&resp, &req).unwrap();
            assert_eq!(param(&auth[0], "opaque").as_deref(), Some("op4que"));
            let retried = with_body(register(2, &auth));
            let v = server
                .verify(&retried, HeaderName::Authorization, t0, lookup)
                .unwrap_or_else(|e| panic!("{algorithm} {qop:?}: {e}"));
            assert_eq!((v.algorithm, v.qop), (algorithm, qop.first().copied()));
            // The replayed request is refused; the next nonce count is accepted (with qop:
            // without it each nonce serves once).
            assert_eq!(
                server.verify(&retried, HeaderName::Authorization, t0, lookup),
                Err(VerifyError::Replay),
                "{algorithm} {qop:?}"
            );
            let next = with_body(register(3, &[]));
            let next = with_body(register(3, &client.authorize(&next).unwrap()));
            let result = server.verify(&next, HeaderName::Authorization, t0, lookup);
            if qop.is_empty() {
                assert_eq!(result, Err(VerifyError::Replay));
            } else {
                assert!(result.is_ok(), "{algorithm} {qop:?}: {result:?}");
            }
        }
    }
    // auth-int detects a changed body.
    let mut server = DigestVerifier::new(REALM, KEY, t0).with_qop(&[Qop::AuthInt]);
    let mut client = DigestClient::new(Credentials::new("app", "pw"));
    let req = with_body(register(1, &[]));
    let auth = client
        .handle_challenge(&www(&mut server, &req, t0, false), &req)
        .unwrap();
    let mut tampered = register(2, &auth);
    tampered.set_body(&b"v=0 (another body)"[..]);
    assert_eq!(
        server.verify(&tampered, HeaderName::Authorization, t0, lookup),
        Err(VerifyError::WrongResponse)
    );
}

#[test]
fn wrong_password_end_to_end_stops() {
    let t0 = Instant::now();
    let mut server = DigestVerifier::new(REALM, KEY, t0);
    let mut client = DigestClient::new(Credentials::new("app", "bad"));
    let mut req = register(1, &[]);
    let mut attempts = 0;
    let outcome = loop {
        attempts += 1;
        assert!(attempts < 5, "looped");
        match server.verify(&req, HeaderName::Authorization, t0, lookup) {
            Ok(_) => break Ok(()),
            Err(e) => {
                let resp = www(&mut server, &req, t0, e.is_stale());
                match client.handle_challenge(&resp, &req) {
                    Ok(auth) => req = register(1 + attempts, &auth),
                    Err(e) => break Err(e),
                }
            }
        }
    };
    assert!(matches!(
        outcome,
        Err(DigestError::Rejected { status: 401, .. })
    ));
    assert_eq!(attempts, 2);
}

#[test]
fn stale_end_to_end_recovers_without_new_credentials() {
    let t0 = Instant::now();
    let mut server = DigestVerifier::new(REALM, KEY, t0);
    let mut client = DigestClient::new(Credentials::new("app", "pw"));
    let req = register(1, &[]);
    let auth = client
        .handle_challenge(&www(&mut server, &req, t0, false), &req)
        .unwrap();
    let first = register(2, &auth);
    server
        .verify(&first, HeaderName::Authorization, t0, lookup)
        .unwrap();
    let later = t0 + Duration::from_secs(3600);
    let reused = register(3, &next_auth(&mut client));
    let err = server
        .verify(&reused, HeaderName::Authorization, later, lookup)
        .unwrap_err();
    assert!(err.is_stale());
    let resp = www(&mut server, &reused, later, true);
    assert!(resp
        .auth(HeaderName::WwwAuthenticate)
        .all(|c| c.unwrap().param("stale").as_deref() == Some(&b"true"[..])));
    let auth = client.handle_challenge(&resp, &reused).unwrap();
    let retried = register(4, &auth);
    server
        .verify(&retried, HeaderName::Authorization, later, lookup)
        .unwrap();
}

#[test]
fn proxy_authorization_round_trip() {
    let t0 = Instant::now();
    let mut server = DigestVerifier::new(REALM, KEY, t0);
    let req = register(1, &[]);
    let mut resp = SipMessage::response_to(&req, 407, "Proxy Authentication Required").unwrap();
    server.challenge_response(&mut resp, t0, false).unwrap();
    assert_eq!(resp.auth(HeaderName::ProxyAuthenticate).count(), 2);
    let mut client = DigestClient::new(Credentials::new("app", "pw"));
    let auth = client.handle_challenge(&resp, &req).unwrap();
    let retried = register(2, &auth);
    assert!(server
        .verify(&retried, HeaderName::ProxyAuthorization, t0, lookup)
        .is_ok());
    assert_eq!(
        server.verify(&retried, HeaderName::Authorization, t0, lookup),
        Err(VerifyError::Missing)
    );
}

// ---- cached credentials meeting fresh challenges (a front end that lost its nonces) ------

/// `c`'s answer to a 401 to `request` with one Digest challenge of `nonce` (no qop).
fn answer(
    c: &mut DigestClient,
    request: &SipMessage,
    nonce: &str,
) -> Result<Vec<AuthorizationHeader>, DigestError> {
    let value = format!(r#"Digest realm="contoso.test", nonce="{nonce}""#);
    c.handle_challenge(&challenge(request, 401, &[&value]), request)
}

fn alice() -> DigestClient {
    DigestClient::new(Credentials::new("alice", "pw")).with_cnonce_source(fixed_cnonce("cn"))
}

fn rejected() -> Result<Vec<AuthorizationHeader>, DigestError> {
    Err(DigestError::Rejected {
        realm: REALM.into(),
        status: 401,
    })
}

#[test]
fn cached_credentials_without_qop_meeting_a_fresh_challenge_are_answered() {
    // RFC 2069 style: no qop, so no nc in what is sent.
    let mut c = alice();
    let first = register(1, &[]);
    let auth = answer(&mut c, &first, "n1").unwrap();
    assert!(!auth[0].value.contains("nc="));
    // 200 to register(2, &auth); the refresh carries the cached credentials.
    let refresh = register(3, &c.authorize(&register(3, &[])).unwrap());
    // The front end failed over and does not know n1: a fresh nonce, no stale=true.
    let auth = answer(&mut c, &refresh, "n2")
        .expect("cached credentials meeting a fresh challenge are answered");
    assert!(auth[0].value.contains(r#"nonce="n2""#));
    // That answer is the first use of n2: refused again, the password is wrong.
    let retried = register(4, &auth);
    assert_eq!(answer(&mut c, &retried, "n3"), rejected());
}

#[test]
fn a_fresh_answer_without_qop_refused_again_is_a_wrong_password() {
    let mut c = alice();
    let first = register(1, &[]);
    let auth = answer(&mut c, &first, "n1").unwrap();
    let retried = register(2, &auth);
    for again in [
        r#"Digest realm="contoso.test", nonce="n2""#,
        r#"Digest realm="contoso.test", nonce="n1""#,
    ] {
        assert_eq!(
            c.handle_challenge(&challenge(&retried, 401, &[again]), &retried),
            rejected(),
            "{again}"
        );
    }
    // Cached and used again, the same nonce refused is still a wrong password.
    let refresh = register(3, &c.authorize(&register(3, &[])).unwrap());
    assert_eq!(answer(&mut c, &refresh, "n1"), rejected());
}

#[test]
fn with_qop_the_count_the_request_carried_decides() {
    let qop = |n: &str| format!(r#"Digest realm="contoso.test", nonce="{n}", qop="auth""#);
    let mut c = alice();
    let first = register(1, &[]);
    let auth = c
        .handle_challenge(&challenge(&first, 401, &[&qop("n1")]), &first)
        .unwrap();
    let answer = register(2, &auth);
    // Another request reuses n1 (nc=2) before the answer's fate is known: the answer
    // itself was still the first use, so a fresh challenge to it is a wrong password.
    let reused = register(3, &c.authorize(&register(3, &[])).unwrap());
    assert_eq!(
        c.handle_challenge(&challenge(&answer, 401, &[&qop("n2")]), &answer),
        rejected()
    );
    // The reuse meeting a fresh challenge is answered.
    let auth = c
        .handle_challenge(&challenge(&reused, 401, &[&qop("n2")]), &reused)
        .expect("nc=2 meeting a fresh challenge is answered");
    assert!(auth[0].value.contains("nc=00000001"));
}
