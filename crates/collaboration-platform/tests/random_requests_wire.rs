//! Random requests on the wire (proptest): a peer on one TCP connection, or on UDP where it
//! also sends some requests twice (a retransmission) and ACKs failures to its INVITEs,
//! sends the platform generated requests — every common method and an extension one, to an endpoint or to no
//! one, inside a dialog that does not exist or outside any, with or without an unknown
//! `Require`, any Max-Forwards, odd bodies — and reads what comes back. Whatever the mix,
//! the platform must answer each request (ACK aside) with exactly one final response that
//! matches it (Call-ID, CSeq, top Via), keep the connection open, hand the endpoint only
//! what it may take (and a retransmission never), and give back the endpoint's answer for
//! those.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::net::UdpSocket;
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
use sip_core::{HeaderName, Limits, Method, SipMessage};

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
    /// Over UDP: send it twice, as a client whose timer fired.
    duplicate: bool,
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
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |(method, to_bot, to_tag, require_unknown, max_forwards, body, answer, duplicate)| {
                Req {
                    method,
                    to_bot,
                    to_tag,
                    require_unknown,
                    max_forwards,
                    body,
                    answer,
                    duplicate,
                }
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

/// The platform, its listeners, and how often its endpoint was handed each Call-ID.
struct Platform {
    platform: CollaborationPlatform,
    tcp: SocketAddr,
    udp: SocketAddr,
    reached: Arc<Mutex<HashMap<String, usize>>>,
}

impl Platform {
    fn reached(&self, call_id: &str) -> usize {
        self.reached
            .lock()
            .unwrap()
            .get(call_id)
            .copied()
            .unwrap_or(0)
    }
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
    .listen(Listener::udp(loopback0()).allow_untrusted_peers())
    .topology(Topology::new(["contoso.test"]));
    let platform = CollaborationPlatform::start(settings).await.unwrap();
    let listener = |kind| platform.listen_addr(kind).expect("the listener");
    let (tcp, udp) = (listener(ListenerKind::Tcp), listener(ListenerKind::Udp));
    let owner = Address::assume_on_premises("sip:bot@contoso.test").unwrap();
    let (_, mut rx) = platform
        .register_endpoint(owner, None, false)
        .await
        .unwrap();
    let reached = Arc::new(Mutex::new(HashMap::new()));
    let seen = reached.clone();
    tokio::spawn(async move {
        while let Some(mut r) = rx.recv().await {
            let m = r.request();
            if m.method() == Some(&Method::Ack) {
                continue;
            }
            *seen
                .lock()
                .unwrap()
                .entry(String::from_utf8_lossy(m.call_id().unwrap()).into_owned())
                .or_insert(0) += 1;
            let status = m
                .header_by_name("X-Answer")
                .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                .unwrap_or(500);
            let _ = r.respond(status, "As Asked", &[], None).await;
        }
    });
    Platform {
        platform,
        tcp,
        udp,
        reached,
    }
}

/// The peer's end: one TCP connection, or a UDP socket.
enum Wire {
    Tcp(Box<SipTcpClient>),
    Udp {
        socket: UdpSocket,
        platform: SocketAddr,
    },
}

impl Wire {
    fn tcp(p: &Platform) -> Wire {
        Wire::Tcp(Box::new(
            SipTcpClient::connect(p.tcp, WAIT).expect("connect"),
        ))
    }

    fn udp(p: &Platform) -> Wire {
        let socket = UdpSocket::bind(loopback0()).expect("a UDP socket");
        Wire::Udp {
            socket,
            platform: p.udp,
        }
    }

    fn is_udp(&self) -> bool {
        matches!(self, Wire::Udp { .. })
    }

    fn local(&self) -> SocketAddr {
        match self {
            Wire::Tcp(c) => c.local_addr(),
            Wire::Udp { socket, .. } => socket.local_addr().unwrap(),
        }
    }

    fn send(&mut self, m: &SipMessage) {
        match self {
            Wire::Tcp(c) => c.send(m).expect("the connection stays open"),
            Wire::Udp { socket, platform } => {
                socket.send_to(&m.to_bytes(), *platform).expect("sent");
            }
        }
    }

    /// The next message within `wait`; `None` when none came.
    fn recv(&mut self, wait: Duration) -> Option<SipMessage> {
        match self {
            Wire::Tcp(c) => match c.recv(wait) {
                Ok(m) => Some(m),
                Err(e) => {
                    assert!(
                        e.to_string().contains("a SIP message from"),
                        "the connection failed: {e}"
                    );
                    None
                }
            },
            Wire::Udp { socket, .. } => {
                socket.set_read_timeout(Some(wait)).unwrap();
                let mut buf = vec![0u8; 65_536];
                match socket.recv_from(&mut buf) {
                    Ok((n, _)) => {
                        buf.truncate(n);
                        Some(
                            SipMessage::parse_datagram(bytes::Bytes::from(buf), &Limits::DEFAULT)
                                .expect("the platform sent a valid message"),
                        )
                    }
                    Err(e) => {
                        assert!(
                            matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                            "{e}"
                        );
                        None
                    }
                }
            }
        }
    }
}

fn build(wire: &Wire, cseq: u32, r: &Req) -> SipMessage {
    let method = METHODS[r.method];
    let user = if r.to_bot { "bot" } else { "nobody" };
    let uri = format!("sip:{user}@contoso.test");
    let mut to = format!("<{uri}>");
    if r.to_tag {
        to.push_str(&format!(";tag=gone-{}", unique_token()));
    }
    let transport = if wire.is_udp() { "UDP" } else { "TCP" };
    let local = wire.local();
    let mut b = SipMessage::request(Method::from_token(method.as_bytes()), uri)
        .header(
            HeaderName::Via,
            format!(
                "SIP/2.0/{transport} {local};branch=z9hG4bK{}",
                unique_token()
            ),
        )
        .header(HeaderName::MaxForwards, r.max_forwards.to_string())
        .header(
            HeaderName::From,
            format!("<sip:carol@contoso.test>;tag={}", unique_token()),
        )
        .header(HeaderName::To, to)
        .header(HeaderName::CallId, format!("{}@carol", unique_token()))
        .header(HeaderName::CSeq, format!("{cseq} {method}"))
        .header(
            HeaderName::Contact,
            format!("<sip:carol@{local};transport={}>", transport.to_lowercase()),
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
    b.build().unwrap()
}

/// The ACK for a failure response to `invite` (RFC 3261 §17.1.1.3): its Via, Request-URI,
/// Call-ID, From and CSeq number, the response's To.
fn ack_for(invite: &SipMessage, failure: &SipMessage) -> SipMessage {
    let seq = invite.cseq().unwrap().seq();
    SipMessage::request(
        Method::Ack,
        bytes::Bytes::copy_from_slice(invite.request_uri_bytes().unwrap()),
    )
    .header(
        HeaderName::Via,
        bytes::Bytes::copy_from_slice(invite.header(HeaderName::Via).unwrap()),
    )
    .header(HeaderName::MaxForwards, "70")
    .header(
        HeaderName::From,
        bytes::Bytes::copy_from_slice(invite.header(HeaderName::From).unwrap()),
    )
    .header(
        HeaderName::To,
        bytes::Bytes::copy_from_slice(failure.header(HeaderName::To).unwrap()),
    )
    .header(
        HeaderName::CallId,
        bytes::Bytes::copy_from_slice(invite.call_id().unwrap()),
    )
    .header(HeaderName::CSeq, format!("{seq} ACK"))
    .build()
    .unwrap()
}

type Key = (Vec<u8>, Vec<u8>, String);

/// Key of a request or response: Call-ID, CSeq and top Via branch.
fn key(m: &SipMessage) -> Key {
    (
        m.call_id().unwrap().to_vec(),
        m.header(HeaderName::CSeq).unwrap().to_vec(),
        m.top_via().unwrap().branch().unwrap_or_default().to_owned(),
    )
}

/// The next final response to the request keyed `k`, skipping provisional ones and, over
/// UDP, retransmissions of finals already seen (the same status again).
fn final_for(wire: &mut Wire, k: &Key, finals: &HashMap<Key, u16>, what: &Req) -> SipMessage {
    loop {
        let got = wire
            .recv(WAIT)
            .unwrap_or_else(|| panic!("no final answer to {what:?}"));
        assert!(!got.is_request(), "the platform sent a request: {got:?}");
        let status = got.status().unwrap();
        let gk = key(&got);
        if gk == *k {
            if status >= 200 {
                return got;
            }
            continue;
        }
        match finals.get(&gk) {
            Some(&s) if s == status && wire.is_udp() => continue,
            Some(_) => panic!("a second response to an answered request: {got:?}"),
            None => panic!("a response to something never sent: {got:?}"),
        }
    }
}

/// Sends every request of `script` in turn over `wire` and checks the answers.
fn exchange(p: &Platform, mut wire: Wire, script: &[Req]) {
    let mut finals: HashMap<Key, u16> = HashMap::new();
    for (n, r) in script.iter().enumerate() {
        let m = build(&wire, n as u32 + 1, r);
        let k = key(&m);
        let again = r.duplicate && wire.is_udp();
        wire.send(&m);
        if again {
            // A retransmission before the answer: the same transaction, not a new request.
            wire.send(&m);
        }
        if m.method() == Some(&Method::Ack) {
            // Nothing answers an ACK; a stray answer shows up when the next request's is
            // read, or in the quiet period at the end.
            continue;
        }
        let answer = final_for(&mut wire, &k, &finals, r);
        let status = answer.status().unwrap();
        assert!((200..700).contains(&status), "{status}");
        if again {
            // A retransmission after it: the same final again (RFC 3261 §17.2).
            wire.send(&m);
            let repeat = final_for(&mut wire, &k, &finals, r);
            assert_eq!(
                repeat.status(),
                Some(status),
                "another answer to a retransmission"
            );
        }
        finals.insert(k.clone(), status);
        if m.method() == Some(&Method::Invite) {
            wire.send(&ack_for(&m, &answer));
        }
        let call_id = String::from_utf8_lossy(&k.0).into_owned();
        let reached = p.reached(&call_id);
        assert!(
            reached <= 1,
            "the endpoint was handed {r:?} {reached} times"
        );
        let reached = reached == 1;
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
    // Nothing more may come: no second final, no answer to an ACK (over UDP, a final the
    // platform sent again before our ACK reached it is the same final).
    while let Some(m) = wire.recv(QUIET) {
        let repeat = finals.get(&key(&m)) == m.status().as_ref() && wire.is_udp();
        assert!(repeat, "a stray message after the last answer: {m:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn every_request_gets_exactly_one_final_answer(
        script in prop::collection::vec(req(), 1..40),
        udp in any::<bool>(),
    ) {
        let rt = runtime();
        let p = rt.block_on(start());
        let wire = if udp { Wire::udp(&p) } else { Wire::tcp(&p) };
        exchange(&p, wire, &script);
        rt.block_on(bounded("platform stop", p.platform.shutdown_within(Duration::from_secs(1))));
    }
}
