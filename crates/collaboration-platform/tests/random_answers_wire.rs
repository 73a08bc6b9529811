//! Random answers on the wire (proptest): the platform's outbound proxy is a peer on a TCP
//! socket that answers each request the way the test scripted it (`X-Plan`): provisional
//! responses, a final one or none at all, a 2xx without a To tag, a response for no
//! transaction, a final repeated, or a second final that contradicts the first. Whatever
//! the answers, the application's call must end exactly once, with the first final
//! response (or a timeout when none came), never hang; every 2xx to an INVITE must be
//! ACKed, and a 2xx that comes after a failure must be ACKed and ended with BYE. An INVITE
//! left without a final answer is cancelled by the application, as a ring timeout does
//! (a client INVITE that had a provisional response has no timer of its own, RFC 3261
//! §17.1.1.2); the peer then answers as a UAS does (§9.2: 200, and 487 to the INVITE).
//! A call that is up may then be sent a re-INVITE, answered as scripted: its final
//! response is the outcome, it is ACKed whether 2xx or not, and the call stays up.
//! The peer's tagged responses to INVITEs carry a Contact of one of several valid forms
//! (URI headers, quoted display name with escapes, header parameters, an addr-spec
//! without brackets, an escaped user part) or none: the dialog's ACK, re-INVITE and BYE
//! must be built whatever the form (a Contact with URI headers once made every one of
//! them fail).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use collaboration_platform::loopback::LoopbackPki;
use collaboration_platform::{
    Address, CollaborationPlatform, EndpointId, Listener, OutboundProxy, OutgoingRequest,
    RequestError, ServerPlatformSettings, Topology,
};
use interop_support::{bounded, loopback0, runtime};
use proptest::prelude::*;
use sip_core::transaction::TransactionConfig;
use sip_core::{Frame, HeaderName, Limits, Method, SipMessage, StreamFramer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Timer T1 of the platform under test: short, so that a request nobody answers times out
/// (64·T1) within a test.
const T1: Duration = Duration::from_millis(20);
/// How long the peer's record may take to show an ACK or BYE the platform owes: a
/// generous deadline, waited for only when something owed is missing.
const SETTLE: Duration = Duration::from_secs(10);
/// How long, once what is owed came, a BYE owed to no one is given to show up.
const QUIET: Duration = Duration::from_millis(100);

/// One step of the peer's answer to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// A response with this status (and the peer's To tag above 100).
    Status(u16),
    /// A 200 without a To tag (an RFC 2543 UAS).
    UntaggedOk,
    /// A 200 whose branch names no transaction of the platform's.
    Stray,
}

impl Step {
    fn text(self) -> String {
        match self {
            Step::Status(s) => s.to_string(),
            Step::UntaggedOk => "untagged".into(),
            Step::Stray => "stray".into(),
        }
    }

    fn parse(t: &str) -> Step {
        match t {
            "untagged" => Step::UntaggedOk,
            "stray" => Step::Stray,
            s => Step::Status(s.parse().unwrap()),
        }
    }

    /// The final status this step gives the request it answers, if it is one.
    fn final_status(self) -> Option<u16> {
        match self {
            Step::Status(s) if s >= 200 => Some(s),
            Step::UntaggedOk => Some(200),
            _ => None,
        }
    }
}

/// The Contacts a tagged response to an INVITE may carry (`{peer}` is the peer's address;
/// every request goes to the outbound proxy, which the peer is, whatever the target).
const CONTACTS: [&str; 5] = [
    "<sip:peer@{peer};transport=tcp>",
    "<sip:peer@{peer};transport=tcp?Subject=scripted&Priority=urgent>",
    r#""Peer \"Q\"" <sip:peer@{peer};transport=tcp>;expires=60;+sip.instance="<urn:uuid:00000000-0000-0000-0000-000000000001>""#,
    "sip:peer@{peer};transport=tcp",
    "<sip:%70eer@{peer};transport=tcp>",
];

#[derive(Debug, Clone)]
struct Case {
    invite: bool,
    plan: Vec<Step>,
    /// Which of [`CONTACTS`] the peer's tagged responses carry, if any.
    contact: Option<usize>,
    /// The final status of a re-INVITE sent once the call is up (with a tagged 2xx).
    reinvite: Option<u16>,
}

fn case() -> impl Strategy<Value = Case> {
    let provisional = prop_oneof![Just(Step::Status(100)), Just(Step::Status(180))];
    let last = prop_oneof![
        3 => prop::sample::select(vec![200u16, 202, 404, 486, 487, 500, 603]).prop_map(Step::Status),
        1 => Just(Step::UntaggedOk),
    ];
    (
        any::<bool>(),
        prop::collection::vec(provisional, 0..3),
        prop::bool::weighted(0.2),
        prop::option::weighted(0.9, last.clone()),
        prop::option::weighted(0.3, last),
        prop::option::weighted(0.5, prop::sample::select(vec![200u16, 200, 488, 491, 500])),
        prop::option::weighted(0.7, 0..CONTACTS.len()),
    )
        .prop_map(
            |(invite, mut plan, stray, first, second, reinvite, contact)| {
                if stray {
                    plan.push(Step::Stray);
                }
                plan.extend(first);
                if first.is_some() {
                    plan.extend(second);
                }
                Case {
                    invite,
                    plan,
                    contact,
                    reinvite,
                }
            },
        )
}

/// What the peer received, per Call-ID.
#[derive(Default)]
struct Seen {
    acks: HashMap<String, usize>,
    byes: HashMap<String, usize>,
    /// Each INVITE, for the 487 a CANCEL of it gets.
    invites: HashMap<String, SipMessage>,
}

/// The outbound proxy: answers each request on any connection by its `X-Plan`.
async fn peer(listener: TcpListener, seen: Arc<Mutex<Seen>>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut framer = StreamFramer::new(Limits::default());
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                framer.push(&buf[..n]);
                while let Ok(Some(frame)) = framer.next_frame() {
                    let Frame::Message(bytes) = frame else {
                        continue;
                    };
                    let request = SipMessage::parse_framed(bytes, &Limits::default())
                        .expect("the platform sends valid messages");
                    let me = stream.local_addr().expect("the peer's address");
                    for answer in answers(&request, me, &seen) {
                        if stream.write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// The peer's responses to `request`, as bytes, in order; `me` is the peer's address.
fn answers(request: &SipMessage, me: SocketAddr, seen: &Mutex<Seen>) -> Vec<Bytes> {
    let call_id = String::from_utf8_lossy(request.call_id().unwrap()).into_owned();
    let contact = request
        .header_by_name("X-Contact")
        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<usize>().ok())
        .map(|i| CONTACTS[i].replace("{peer}", &me.to_string()));
    let invite = request.method() == Some(&Method::Invite);
    let respond = |status: u16, tag: bool| {
        let mut r = SipMessage::response_to(request, status, "Scripted").unwrap();
        if tag && status > 100 {
            r.set_to_tag("peer").unwrap();
            if let (true, Some(c)) = (invite, &contact) {
                r.push_header(HeaderName::Contact, c.clone()).unwrap();
            }
        }
        r
    };
    match request.method() {
        Some(Method::Ack) => {
            *seen.lock().unwrap().acks.entry(call_id).or_default() += 1;
            return Vec::new();
        }
        Some(Method::Bye) => {
            *seen.lock().unwrap().byes.entry(call_id).or_default() += 1;
            return vec![respond(200, true).to_bytes()];
        }
        Some(Method::Cancel) => {
            let mut out = vec![respond(200, true).to_bytes()];
            if let Some(invite) = seen.lock().unwrap().invites.get(&call_id) {
                let mut terminated = SipMessage::response_to(invite, 487, "Cancelled").unwrap();
                terminated.set_to_tag("peer").unwrap();
                out.push(terminated.to_bytes());
            }
            return out;
        }
        Some(Method::Invite) => {
            seen.lock()
                .unwrap()
                .invites
                .insert(call_id.clone(), request.clone());
        }
        _ => {}
    }
    let plan = request
        .header_by_name("X-Plan")
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .unwrap_or_default();
    plan.split(',')
        .filter(|t| !t.is_empty())
        .map(|t| match Step::parse(t) {
            Step::Status(s) => respond(s, true).to_bytes(),
            Step::UntaggedOk => respond(200, false).to_bytes(),
            Step::Stray => {
                let mut r = respond(200, true);
                let via = String::from_utf8_lossy(r.header(HeaderName::Via).unwrap())
                    .replace("branch=", "branch=z9hG4bKstray");
                r.set_header(HeaderName::Via, via).unwrap();
                r.to_bytes()
            }
        })
        .collect()
}

struct Setup {
    platform: CollaborationPlatform,
    endpoint: EndpointId,
    seen: Arc<Mutex<Seen>>,
}

async fn start() -> Setup {
    let listener = TcpListener::bind(loopback0()).await.unwrap();
    let proxy: SocketAddr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    tokio::spawn(peer(listener, seen.clone()));
    let pki = LoopbackPki::new().expect("CA");
    let timers = TransactionConfig {
        t1: T1,
        t2: T1 * 8,
        t4: T1 * 10,
        timer_d: T1 * 64,
        ..TransactionConfig::default()
    };
    let settings = ServerPlatformSettings::new(
        "ucma-rs random answers test",
        "app.contoso.test",
        pki.identity("app.contoso.test").unwrap(),
        pki.roots(),
        OutboundProxy::tcp(proxy),
    )
    .listen(Listener::tcp(loopback0()).allow_untrusted_peers())
    .topology(Topology::new(["contoso.test"]))
    .transaction_timers(timers);
    let platform = CollaborationPlatform::start(settings).await.unwrap();
    let owner = Address::assume_on_premises("sip:app@contoso.test").unwrap();
    let (endpoint, rx) = platform
        .register_endpoint(owner, None, false)
        .await
        .unwrap();
    // Nothing comes to the endpoint here; its queue is kept open.
    std::mem::forget(rx);
    Setup {
        platform,
        endpoint,
        seen,
    }
}

/// Sends case `n` and checks its outcome against its plan.
async fn run(s: &Setup, n: usize, c: &Case) {
    let plan: Vec<String> = c.plan.iter().map(|p| p.text()).collect();
    let contact = format!("<{}>", s.platform.contact_uri("app").unwrap());
    let call_id = format!("case-{n}-{}@app", peer_harness::unique_token());
    let method = if c.invite {
        Method::Invite
    } else {
        Method::Message
    };
    let request = OutgoingRequest::new(method, "sip:bob@contoso.test")
        .from("<sip:app@contoso.test>")
        .call_id(call_id.clone())
        .header("Contact", contact)
        .header("X-Plan", plan.join(","));
    let request = match c.contact {
        Some(i) => request.header("X-Contact", i.to_string()),
        None => request,
    };
    let request = if c.invite {
        request
    } else {
        request.body("text/plain", "hello")
    };
    let first = c.plan.iter().find_map(|p| p.final_status());
    let mut dialog = None;
    let outcome: Result<u16, RequestError> = if c.invite {
        let invite = s.platform.invite(s.endpoint, request).await.unwrap();
        if first.is_none() {
            // The application's ring timeout.
            let canceller = invite.canceller();
            tokio::spawn(async move {
                tokio::time::sleep(T1 * 10).await;
                canceller.cancel().await;
            });
        }
        bounded("the INVITE's outcome", invite.outcome())
            .await
            .map(|(r, d)| {
                dialog = Some(d);
                r.status().unwrap()
            })
    } else {
        bounded("the MESSAGE's outcome", s.platform.send_request(request))
            .await
            .map(|r| r.status().unwrap())
    };
    let provisional = c
        .plan
        .iter()
        .any(|p| matches!(p, Step::Status(s) if *s < 200));
    match (first, &outcome) {
        (None, Err(RequestError::Cancelled)) if c.invite && provisional => {}
        (None, Err(RequestError::Timeout)) if !(c.invite && provisional) => {}
        (Some(f), Ok(got)) if f < 300 => assert_eq!(*got, f, "{c:?}"),
        (Some(487), Err(RequestError::Cancelled)) => {}
        (Some(f), Err(RequestError::Status { code, .. })) if f >= 300 => {
            assert_eq!(*code, f, "{c:?}")
        }
        _ => panic!("{c:?} ended {outcome:?}"),
    }
    if !c.invite {
        return;
    }
    // What the platform owes the peer for the INVITE's finals (RFC 3261 §13.2.2.4,
    // §17.1.1.3): an ACK for the first final, a 2xx or not; for a 2xx after a failure, an
    // ACK and a BYE (no call was wanted any more).
    let finals: Vec<Step> = c
        .plan
        .iter()
        .copied()
        .filter(|p| p.final_status().is_some())
        .collect();
    let cancelled = finals.is_empty() && provisional;
    // The dialog a 2xx makes: the To tag it carries (none for the untagged one).
    let tag = |p: Step| p != Step::UntaggedOk;
    let ok = |p: Step| p.final_status().is_some_and(|s| s < 300);
    // A second 2xx that is not a retransmission of the first (it follows a failure, or
    // names another dialog): a call the caller was not given, ACKed and ended with BYE.
    let unwanted =
        finals.len() == 2 && ok(finals[1]) && (!ok(finals[0]) || tag(finals[0]) != tag(finals[1]));
    // A non-2xx after a 2xx is absorbed (RFC 6026): no ACK for it.
    let mut owed = usize::from(!finals.is_empty() || cancelled)
        + usize::from(finals.len() == 2 && ok(finals[1]));
    // A call up with a tagged 2xx: the re-INVITE, its outcome, and its ACK (2xx or not).
    let up = finals.first().is_some_and(|f| ok(*f) && tag(*f)) && !unwanted;
    if let (true, Some(status), Some(dialog)) = (up, c.reinvite, &dialog) {
        let reinvite =
            OutgoingRequest::new(Method::Invite, "").header("X-Plan", status.to_string());
        let reinvite = match c.contact {
            Some(i) => reinvite.header("X-Contact", i.to_string()),
            None => reinvite,
        };
        let got = bounded(
            "the re-INVITE's outcome",
            s.platform.send_in_dialog(dialog, reinvite),
        )
        .await;
        match (status, &got) {
            (200, Ok(r)) => assert_eq!(r.status(), Some(200), "{c:?}"),
            (s, Err(RequestError::Status { code, .. })) if s >= 300 => {
                assert_eq!(*code, s, "{c:?}")
            }
            _ => panic!("{c:?}: re-INVITE ended {got:?}"),
        }
        owed += 1;
    }
    let counts = || {
        let seen = s.seen.lock().unwrap();
        (
            seen.acks.get(&call_id).copied().unwrap_or(0),
            seen.byes.get(&call_id).copied().unwrap_or(0),
        )
    };
    let deadline = tokio::time::Instant::now() + SETTLE;
    loop {
        let (acks, byes) = counts();
        if (acks >= owed && byes >= usize::from(unwanted))
            || tokio::time::Instant::now() >= deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(QUIET).await;
    let (acks, byes) = counts();
    assert!(acks >= owed, "{c:?}: {acks} ACKs, {owed} owed");
    if unwanted {
        assert_eq!(byes, 1, "{c:?}: the unwanted call was not ended");
    } else {
        assert_eq!(
            byes, 0,
            "{c:?}: a BYE for a call that was answered or never made"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn each_request_ends_once_with_its_first_final_answer(
        cases in prop::collection::vec(case(), 1..16),
    ) {
        let rt = runtime();
        rt.block_on(async {
            let s = start().await;
            for (n, c) in cases.iter().enumerate() {
                run(&s, n, c).await;
            }
            bounded("platform stop", s.platform.shutdown_within(Duration::from_secs(1))).await;
        });
    }
}
