//! Differential test against rsip 0.4: on every conformance message both parsers accept,
//! the method, Request-URI / status, the core header values and the body must agree, except
//! where this file lists rsip as wrong, with the reason. A difference not listed, or a
//! listed one that no longer happens, fails the test.

use bytes::Bytes;
use rsip::message::HasHeaders;
use rsip::prelude::{HeadersExt, ToTypedHeader, UntypedHeader};
use sip_core::{HeaderName, Limits, SipMessage};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// (message, field, why rsip is wrong)
const RSIP_WRONG: &[(&str, &str, &str)] = &[
    (
        "rfc4475/valid/dblreq",
        "body",
        "ignores Content-Length: 0 and takes the trailing INVITE as the body (RFC 3261 §18.3)",
    ),
    (
        "rfc4475/valid/dblreq",
        "call-id",
        "does not know the compact form `i:`, so reports Call-ID missing",
    ),
    (
        "rfc5118/valid/ipv4-mapped-ipv6",
        "body",
        "ignores Content-Length (236) and keeps all 245 bytes of the datagram",
    ),
    (
        "bench/invite_sdp",
        "uri",
        "rewrites the Request-URI parameter transport=tls as transport=TLS",
    ),
];

fn files() -> Vec<(String, Bytes)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut out = Vec::new();
    for suite in ["rfc4475", "rfc5118"] {
        for verdict in ["valid", "invalid"] {
            let dir = root.join(suite).join(verdict);
            let mut names: Vec<_> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            names.sort();
            for p in names {
                let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
                out.push((
                    format!("{suite}/{verdict}/{stem}"),
                    Bytes::from(std::fs::read(&p).unwrap()),
                ));
            }
        }
    }
    for name in ["invite_sdp", "message", "ok_routes"] {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("benches/messages")
            .join(format!("{name}.sip"));
        out.push((
            format!("bench/{name}"),
            Bytes::from(std::fs::read(&p).unwrap()),
        ));
    }
    out
}

fn differences(ours: &SipMessage, theirs: &rsip::SipMessage) -> Vec<&'static str> {
    let mut d = Vec::new();
    match theirs {
        rsip::SipMessage::Request(r) => {
            if ours.method().map(|m| m.to_string()) != Some(r.method.to_string()) {
                d.push("method");
            }
            if ours
                .request_uri_bytes()
                .map(|u| String::from_utf8_lossy(u).into_owned())
                != Some(r.uri.to_string())
            {
                d.push("uri");
            }
        }
        rsip::SipMessage::Response(r) => {
            if ours.status() != Some(u16::from(r.status_code.clone())) {
                d.push("status");
            }
        }
    }
    if ours.body()[..] != theirs.body()[..] {
        d.push("body");
    }
    match theirs.call_id_header() {
        Ok(c) if ours.call_id().ok() == Some(c.value().trim().as_bytes()) => {}
        _ => d.push("call-id"),
    }
    match theirs.cseq_header().map(|c| c.typed()) {
        Ok(Ok(c)) if ours.cseq().map(|o| o.seq()).ok() == Some(c.seq) => {}
        _ => d.push("cseq"),
    }
    let their_vias = theirs
        .headers()
        .iter()
        .filter(|h| matches!(h, rsip::Header::Via(_)))
        .count();
    if their_vias != ours.header_values(HeaderName::Via).count() {
        d.push("via-count");
    }
    match theirs.from_header().map(|f| f.typed()) {
        Ok(Ok(f))
            if ours.from().ok().and_then(|o| o.tag().map(|t| t.to_vec()))
                == f.tag().map(|t| t.to_string().into_bytes()) => {}
        _ => d.push("from-tag"),
    }
    d
}

#[test]
fn rsip_agrees_except_where_listed() {
    let mut observed = BTreeSet::new();
    let mut both = 0;
    let mut report = String::new();
    for (name, bytes) in files() {
        let ours = SipMessage::parse_datagram(bytes.clone(), &Limits::DEFAULT);
        let theirs = rsip::SipMessage::try_from(&bytes[..]);
        let (Ok(ours), Ok(theirs)) = (ours, theirs) else {
            continue;
        };
        both += 1;
        for field in differences(&ours, &theirs) {
            report.push_str(&format!("{name}\t{field}\n"));
            observed.insert((name.clone(), field));
        }
    }
    let listed: BTreeSet<(String, &str)> = RSIP_WRONG
        .iter()
        .map(|(n, f, _)| (n.to_string(), *f))
        .collect();
    assert!(both > 20, "both accepted only {both}");
    assert_eq!(observed, listed, "differences:\n{report}");
}

#[test]
fn conversion_round_trip_keeps_the_core_values() {
    use sip_core::interop::rsip::{from_rsip, to_rsip};
    for (name, bytes) in files().into_iter().filter(|(n, _)| n.starts_with("bench/")) {
        let ours = SipMessage::parse_datagram(bytes, &Limits::DEFAULT).unwrap();
        let theirs = to_rsip(&ours).unwrap_or_else(|e| panic!("{name}: {e}"));
        let back = from_rsip(&theirs).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back.call_id().unwrap(), ours.call_id().unwrap(), "{name}");
        assert_eq!(back.cseq().unwrap(), ours.cseq().unwrap(), "{name}");
        assert_eq!(
            back.header_values(HeaderName::Via).count(),
            ours.header_values(HeaderName::Via).count(),
            "{name}"
        );
        assert_eq!(back.body(), ours.body(), "{name}");
    }
    // Three Via values on one line survive (rsip alone would keep only the first).
    let wsinv = files()
        .into_iter()
        .find(|(n, _)| n.ends_with("/wsinv"))
        .unwrap()
        .1;
    let ours = SipMessage::parse_datagram(wsinv, &Limits::DEFAULT).unwrap();
    if let Ok(theirs) = to_rsip(&ours) {
        let back = from_rsip(&theirs).unwrap();
        assert_eq!(back.header_values(HeaderName::Via).count(), 3);
    }
}
