//! Random requests on the wire (proptest): a peer on one TCP connection sends the platform
//! generated requests — every common method and an extension one, to an endpoint or to no
//! one, inside a dialog that does not exist or outside any, with or without an unknown
//! `Require`, any Max-Forwards, odd bodies — and reads what comes back. Whatever the mix,
//! the platform must answer each request (ACK aside) with exactly one final response that
//! matches it (Call-ID, CSeq, top Via), keep the connection open, hand the endpoint only
//! what it may take, and give back the endpoint's answer for those.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use collaboration_platform::loopback::LoopbackPki;
use collaboration_platform::{
    Address, CollaborationPlatform, Listener, ListenerKind, OutboundProxy, ServerPlatformSettings,
    Topology,
};
use interop_support::{bounded, loopback0, runtime};
use peer_harness::{unique_token, SipTcpClient};
use proptest::prelude::*;
use sip_core::{HeaderName, Method, SipMessage};

/// How long one request may wait for its final response.
const WAIT: Duration = Duration::from_secs(10);
/// How long to listen for a stray message after the last request.
const QUIET: Duration = Duration::from_millis(300);

const METHODS: [&str; 14] = [
    "OPTIONS",
    "MESSAGE",
    "INFO",
    "INVITE",
    "BYE",
    "CANCEL",
    "ACK",
    "SUBSCRIBE",
    "NOTIFY",
    "UPDATE",
    "REFER",
    "PUBLISH",
    "PRACK",
    "FOO",
];
/// What the endpoint answers, chosen per request (`X-Answer`).
const ANSWERS: [u16; 6] = [200, 202, 403, 480, 486, 603];

/// The answer `r` asks of the endpoint: no 2xx to an INVITE, whose ACK this peer does not
/// send (the platform would retransmit the 2xx and then end the call).
fn asked(r: &Req) -> u16 {
    match ANSWERS[r.answer] {
        s if s < 300 && METHODS[r.method] == "INVITE" => 486,
        s => s,
    }
}

#[derive(Debug, Clone)]
struct Req {
    method: usize,
    /// To `sip:bot@` (an endpoint) or `sip:nobody@`.
    to_bot: bool,
    /// A To tag: inside a dialog (which does not exist).
    to_tag: bool,
    require_unknown: bool,
    max_forwards: u8,
    body: usize,
    answer: usize,
}

fn req() -> impl Strategy<Value = Req> {
    (
        0..METHODS.len(),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.15),
        prop_oneof![8 => Just(70u8), 1 => Just(0u8), 1 => Just(1u8)],
        0..4usize,
        0..ANSWERS.len(),
    )
        .prop_map(
            |(method, to_bot, to_tag, require_unknown, max_forwards, body, answer)| Req {
                method,
                to_bot,
                to_tag,
                require_unknown,
                max_forwards,
                body,
                answer,
            },
        )
}

/// The bodies a request may carry: none, text, unreadable SDP, an unknown type.
const BODIES: [Option<(&str, &str)>; 4] = [
    None,
    Some(("text/plain", "hello")),
    Some(("application/sdp", "v=0\r\nnot sdp\r\n")),
    Some(("application/x-unknown", "\u{1}\u{2}")),
];

/// The platform, and the Call-IDs of the requests its endpoint was handed.
struct Platform {
    platform: CollaborationPlatform,
    target: SocketAddr,
    reached: Arc<Mutex<HashSet<String>>>,
}

async fn start() -> Platform {
    let pki = LoopbackPki::new().expect("CA");
    let settings = ServerPlatformSettings::new(
        "ucma-rs random requests test",
        "app.contoso.test",
        pki.identity("app.contoso.test").unwrap(),
        pki.roots(),
        OutboundProxy::tcp("127.0.0.1:9".parse().unwrap()),
    )
    .listen(Listener::tcp(loopback0()).allow_untrusted_peers())
    .topology(Topology::new(["contoso.test"]));
    let platform = CollaborationPlatform::start(settings).await.unwrap();
    let target = platform
        .listen_addrs()
        .into_iter()
        .find(|(k, _)| *k == ListenerKind::Tcp)
        .expect("the TCP listener")
        .1;
    let owner = Address::assume_on_premises("sip:bot@contoso.test").unwrap();
    let (_, mut rx) = platform
        .register_endpoint(owner, None, false)
        .await
        .unwrap();
    let reached = Arc::new(Mutex::new(HashSet::new()));
    let seen = reached.clone();
    tokio::spawn(async move {
        while let Some(mut r) = rx.recv().await {
            let m = r.request();
            seen.lock()
                .unwrap()
                .insert(String::from_utf8_lossy(m.call_id().unwrap()).into_owned());
            if m.method() == Some(&Method::Ack) {
                continue;
            }
            let status = m
                .header_by_name("X-Answer")
                .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                .unwrap_or(500);
            let _ = r.respond(status, "As Asked", &[], None).await;
        }
    });
    Platform {
        platform,
        target,
        reached,
    }
}

fn build(client: &mut SipTcpClient, r: &Req) -> SipMessage {
    let method = METHODS[r.method];
    let user = if r.to_bot { "bot" } else { "nobody" };
    let uri = format!("sip:{user}@contoso.test");
    let mut to = format!("<{uri}>");
    if r.to_tag {
        to.push_str(&format!(";tag=gone-{}", unique_token()));
    }
    let mut b = client
        .request(
            Method::from_token(method.as_bytes()),
            &uri,
            "sip:carol@contoso.test",
            &uri,
        )
        .header(
            HeaderName::Contact,
            format!("<{}>", client.contact_uri("carol")),
        )
        .header("X-Answer", asked(r).to_string());
    if method == "SUBSCRIBE" || method == "NOTIFY" || method == "PUBLISH" {
        b = b.header(HeaderName::Event, "presence");
    }
    if method == "NOTIFY" {
        b = b.header(HeaderName::SubscriptionState, "active;expires=60");
    }
    if method == "REFER" {
        b = b.header(HeaderName::ReferTo, "<sip:dave@contoso.test>");
    }
    if method == "PRACK" {
        b = b.header("RAck", "1 1 INVITE");
    }
    if r.require_unknown {
        b = b.header(HeaderName::Require, "x-no-such-extension");
    }
    if let Some((kind, text)) = BODIES[r.body] {
        b = b.body(kind, bytes::Bytes::from_static(text.as_bytes()));
    }
    // `request` filled To (without a tag) and Max-Forwards 70: replace them.
    let mut m = b.build().unwrap();
    m.set_header(HeaderName::To, to).unwrap();
    m.set_header(HeaderName::MaxForwards, r.max_forwards.to_string())
        .unwrap();
    m
}

/// Key of a request or response: Call-ID, CSeq and top Via branch.
fn key(m: &SipMessage) -> (Vec<u8>, Vec<u8>, String) {
    (
        m.call_id().unwrap().to_vec(),
        m.header(HeaderName::CSeq).unwrap().to_vec(),
        m.top_via().unwrap().branch().unwrap_or_default().to_owned(),
    )
}

/// Sends every request of `script` in turn over one connection and checks the answers.
fn exchange(p: &Platform, script: &[Req]) {
    let mut client = SipTcpClient::connect(p.target, WAIT).expect("connect");
    let mut finals: HashMap<(Vec<u8>, Vec<u8>, String), u16> = HashMap::new();
    for r in script {
        let m = build(&mut client, r);
        let k = key(&m);
        client.send(&m).expect("the connection stays open");
        if m.method() == Some(&Method::Ack) {
            // Nothing answers an ACK; a stray answer shows up when the next request's is
            // read, or in the quiet period at the end.
            continue;
        }
        let status = loop {
            let got = client
                .recv(WAIT)
                .unwrap_or_else(|e| panic!("no final answer to {r:?}: {e}"));
            assert!(!got.is_request(), "the platform sent a request: {got:?}");
            let status = got.status().unwrap();
            let gk = key(&got);
            assert!(
                gk == k || finals.contains_key(&gk),
                "a response to something never sent: {got:?}"
            );
            if gk != k {
                panic!("a second response to an answered request: {got:?}");
            }
            if status >= 200 {
                break status;
            }
        };
        assert!((200..700).contains(&status), "{status}");
        finals.insert(k.clone(), status);
        let call_id = String::from_utf8_lossy(&k.0).into_owned();
        let reached = p.reached.lock().unwrap().contains(&call_id);
        if !r.to_bot || r.require_unknown {
            assert!(!reached, "the endpoint was handed {r:?}");
        }
        if r.require_unknown && r.to_bot && !r.to_tag && !matches!(METHODS[r.method], "CANCEL") {
            // RFC 3261 §8.2.2.3, unless an earlier check of §8.2 answered first.
            assert!(
                matches!(status, 420 | 405 | 501 | 481),
                "{r:?} answered {status}"
            );
        }
        if METHODS[r.method] == "BYE" {
            // RFC 3261 §15.1.2: no dialog here, so none for a BYE to end.
            assert_eq!(status, 481, "{r:?}");
            assert!(!reached, "an out-of-dialog BYE reached the endpoint");
        }
        if reached {
            assert_eq!(status, asked(r), "the endpoint's answer for {r:?}");
        }
    }
    // Nothing more may come: no second final, no answer to an ACK.
    match client.recv(QUIET) {
        Ok(m) => panic!("a stray message after the last answer: {m:?}"),
        Err(e) => assert!(
            e.to_string().contains("a SIP message from"),
            "the connection failed: {e}"
        ),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn every_request_gets_exactly_one_final_answer(script in prop::collection::vec(req(), 1..40)) {
        let rt = runtime();
        let p = rt.block_on(start());
        exchange(&p, &script);
        rt.block_on(bounded("platform stop", p.platform.shutdown_within(Duration::from_secs(1))));
    }
}
