//! User endpoints behind a proxy that challenges every request of its users, against the
//! real peers (peer-harness): Kamailio 5.6 as the contoso front end with
//! `challenge_user_requests(true)`, so a user's REGISTER gets 401 (`www_challenge`) and
//! every other out-of-dialog request of a user — INVITE, MESSAGE, SUBSCRIBE, PUBLISH —
//! gets `407 Proxy Authentication Required` (`proxy_challenge`, checked by
//! `pv_proxy_authenticate` against the same passwords). The users are [`UserEndpoint`]s on
//! client platforms (TLS without a client certificate); the other party of each request
//! is another user endpoint, or Kamailio's presence server.
//!
//! What the SDK must do (RFC 3261 §22.2, §22.3, §8.1.3.5): answer each 407 with the
//! endpoint's credentials in a request with the same Call-ID and From tag and the next
//! CSeq, then carry them from the start in later requests; and when the proxy refuses
//! them, fail with a clear error after one answer, not loop.
//!
//! Every wait is bounded ([`WAIT`] per step).

use std::time::Duration;

use application_endpoint::pidf::Availability;
use application_endpoint::{
    Credentials, Endpoint, EndpointError, RemotePresenceView, UserEndpoint, UserEndpointSettings,
};
use collaboration_platform::{
    Address, CollaborationPlatform, Federated, IncomingRequest, Listener, OnPremises,
    OutboundProxy, RequestError, ServerPlatformSettings, Topology, WireDirection, WireLog,
};
use conversation::{incoming_im_calls, CallError, Conversation, MessageError};
use interop_support::{bounded, identity, loopback0, roots, runtime, WAIT};
use peer_harness::{scenarios, Deployment, Federation, SipTcpClient, DEFAULT_USERS};
use tokio::sync::mpsc;

/// The users of these tests (contoso), besides the defaults. carol (a default user)
/// registers with her password, but the proxy checks another one for her requests.
const USERS: [(&str, &str); 3] = [
    ("dora", "dora-secret"),
    ("erin", "erin-secret"),
    ("frank", "frank-secret"),
];

fn fixture() -> Federation {
    fixture_with(|b| b)
}

/// [`fixture`] with more of the front ends' settings.
fn fixture_with(
    more: impl FnOnce(peer_harness::FederationBuilder) -> peer_harness::FederationBuilder,
) -> Federation {
    let mut b = Federation::builder()
        .challenge_user_requests(true)
        .proxy_password(Deployment::Contoso, "carol", "the-proxy-wants-another");
    for (u, p) in USERS {
        b = b.user(Deployment::Contoso, u, p);
    }
    more(b)
        .start()
        .unwrap_or_else(|e| panic!("starting the real peers failed: {e}"))
}

fn home(user: &str) -> Address<OnPremises> {
    Address::assume_on_premises(&format!("sip:{user}@contoso.test")).expect("a SIP URI")
}

/// A platform whose requests reach contoso on its TLS listener for users (no client
/// certificate asked, so contoso treats what arrives there as users' requests and
/// challenges them), with a mutual-TLS listener of its own, where contoso delivers the
/// requests for its endpoints (INVITE, MESSAGE, NOTIFY) to the contact they registered.
async fn user_platform(fed: &Federation, wire: &Wire) -> CollaborationPlatform {
    let contoso = fed.contoso();
    let addr = contoso
        .user_tls_addr()
        .expect("the fixture has a user TLS listener");
    let settings = ServerPlatformSettings::new(
        "ucma-rs proxy auth interop",
        Deployment::Contoso.application(),
        identity(fed.pki().application(Deployment::Contoso)),
        roots(fed),
        OutboundProxy::tls(addr, contoso.fqdn()),
    )
    .listen(Listener::mutual_tls(loopback0()))
    .topology(Topology::new([Deployment::Contoso.domain()]))
    .observer(wire.0.as_observer());
    CollaborationPlatform::start(settings)
        .await
        .expect("platform")
}

/// `user` registered with `password` (the registrar's 401 answered).
async fn user(
    fed: &Federation,
    platform: &CollaborationPlatform,
    user: &str,
    password: &str,
) -> UserEndpoint {
    let e = UserEndpoint::new(
        platform,
        UserEndpointSettings::new(home(user), Credentials::new(user, password)),
    );
    bounded(&format!("{user} registers"), e.establish())
        .await
        .unwrap_or_else(|e| panic!("{user} registers: {e}\n{}", fed.log_tails(30)));
    e
}

/// Every message a platform sent or received, with the queries these tests make.
#[derive(Default)]
struct Wire(WireLog);

fn header_of<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// One request `user` sent: its CSeq, Call-ID, From tag and whether it had credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    cseq: String,
    call_id: String,
    from_tag: String,
    credentials: bool,
}

impl Wire {
    /// The `method` requests `user` (From) sent, in order.
    fn requests(&self, user: &str, method: &str) -> Vec<Sent> {
        let aor = format!("sip:{user}@contoso.test");
        self.0
            .sent_requests(method)
            .iter()
            .map(|r| r.text())
            .filter(|t| header_of(t, "From").is_some_and(|f| f.contains(&aor)))
            .map(|t| Sent {
                cseq: header_of(&t, "CSeq").unwrap_or_default().to_string(),
                call_id: header_of(&t, "Call-ID").unwrap_or_default().to_string(),
                from_tag: header_of(&t, "From")
                    .and_then(|f| f.split(";tag=").nth(1))
                    .unwrap_or_default()
                    .to_string(),
                credentials: header_of(&t, "Proxy-Authorization").is_some(),
            })
            .collect()
    }

    /// The final responses with `status` to `method` requests from `user`.
    fn responses(&self, user: &str, status: u16, method: &str) -> usize {
        let aor = format!("sip:{user}@contoso.test");
        self.0
            .records_of(WireDirection::Received)
            .iter()
            .map(|r| r.text())
            .filter(|t| {
                t.starts_with(&format!("SIP/2.0 {status} "))
                    && header_of(t, "CSeq").is_some_and(|c| c.ends_with(method))
                    && header_of(t, "From").is_some_and(|f| f.contains(&aor))
            })
            .count()
    }

    /// Asserts that `user`'s `method` was challenged with 407 once and answered: the first
    /// without credentials (CSeq 1), the second with them, the same Call-ID and From tag
    /// and CSeq 2 (RFC 3261 §22.2, §8.1.3.5).
    fn challenged_once_and_answered(&self, fed: &Federation, user: &str, method: &str) {
        let sent = self.requests(user, method);
        assert!(
            sent.len() >= 2,
            "{user}'s {method}s: {sent:?}\n{}",
            fed.log_tails(30)
        );
        let (first, retry) = (&sent[0], &sent[1]);
        assert!(!first.credentials, "{first:?}");
        assert_eq!(first.cseq, format!("1 {method}"));
        assert!(
            retry.credentials,
            "the retry carries credentials: {retry:?}"
        );
        assert_eq!(retry.cseq, format!("2 {method}"), "the next CSeq");
        assert_eq!(retry.call_id, first.call_id, "the same Call-ID");
        assert_eq!(retry.from_tag, first.from_tag, "the same From tag");
        assert_eq!(
            self.responses(user, 407, method),
            1,
            "{user}'s {method} was challenged once"
        );
    }
}

/// Answers every page-mode MESSAGE with 200 and reports its body.
fn answer_pages(mut pages: mpsc::Receiver<IncomingRequest>) -> mpsc::UnboundedReceiver<String> {
    let (tx, seen) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(mut req) = pages.recv().await {
            let _ = tx.send(String::from_utf8_lossy(req.body()).into_owned());
            req.respond(200, "OK", &[], None).await.expect("respond");
        }
    });
    seen
}

fn kamailio_log(fed: &Federation) -> String {
    std::fs::read_to_string(fed.contoso().log_path()).unwrap_or_default()
}

/// Waits (bounded) until the Kamailio log has `needle`.
async fn log_shows(fed: &Federation, needle: &str) {
    bounded(&format!("Kamailio logs {needle:?}"), async {
        while !kamailio_log(fed).contains(needle) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[test]
fn a_user_endpoints_requests_challenged_by_the_proxy_are_answered_with_its_credentials() {
    let fed = fixture();
    runtime().block_on(async {
        let callers_wire = Wire::default();
        let callee_wire = Wire::default();
        let callers = user_platform(&fed, &callers_wire).await;
        let callee = user_platform(&fed, &callee_wire).await;

        // erin, the other party: her first request is a PUBLISH, challenged.
        let erin = user(&fed, &callee, "erin", "erin-secret").await;
        let mut pages = answer_pages(erin.core().pages());
        let mut calls = incoming_im_calls(&erin);
        bounded(
            "erin publishes",
            erin.local_owner_presence()
                .publish_availability(Availability::Busy, Some("challenged")),
        )
        .await
        .unwrap_or_else(|e| panic!("erin's PUBLISH: {e}\n{}", fed.log_tails(30)));
        callee_wire.challenged_once_and_answered(&fed, "erin", "PUBLISH");

        // dora starts an IM call to erin: the INVITE is challenged, answered, and rings.
        let dora = user(&fed, &callers, "dora", "dora-secret").await;
        let taken = tokio::spawn(async move {
            let call = calls.next().await.expect("a call for erin");
            let caller = call.caller_uri().to_string();
            let mut flow = call.accept().await.expect("erin accepts");
            let first = flow.recv().await.expect("a message in the call");
            (caller, first.text())
        });
        let to_erin = Conversation::new(&dora, home("erin"));
        let call = to_erin.instant_messaging_call();
        let flow = bounded("dora's IM call", call.establish())
            .await
            .unwrap_or_else(|e| panic!("dora's IM call: {e}\n{}", fed.log_tails(30)));
        callers_wire.challenged_once_and_answered(&fed, "dora", "INVITE");
        // The ACK of the 2xx carries the INVITE's credentials (RFC 3261 §13.2.2.4).
        let invite_call = callers_wire.requests("dora", "INVITE")[0].call_id.clone();
        let ack = bounded(
            "dora's ACK",
            callers_wire.0.wait_for(|r| {
                let t = r.text();
                r.is_sent_request("ACK")
                    && header_of(&t, "Call-ID") == Some(invite_call.as_str())
                    && header_of(&t, "CSeq") == Some("2 ACK")
            }),
        )
        .await;
        assert!(
            header_of(&ack.text(), "Proxy-Authorization").is_some(),
            "{}",
            ack.text()
        );
        bounded("a message in the call", flow.send_text("hello erin"))
            .await
            .expect("MESSAGE in the call");
        let (caller, text) = bounded("erin's side", taken).await.expect("erin's task");
        assert_eq!(caller, "sip:dora@contoso.test");
        assert_eq!(text, "hello erin");
        log_shows(&fed, "proxy auth ok for dora (INVITE cseq 2)").await;

        // dora's page goes with the credentials learnt: not challenged again (RFC 3261
        // §22.3), and delivered.
        bounded(
            "dora's page",
            to_erin.send_page("text/plain", "a page from dora"),
        )
        .await
        .unwrap_or_else(|e| panic!("dora's page: {e}\n{}", fed.log_tails(30)));
        let page = bounded("erin's page", pages.recv())
            .await
            .expect("a page for erin");
        assert_eq!(page, "a page from dora");
        let dora_pages = callers_wire.requests("dora", "MESSAGE");
        let out_of_dialog: Vec<&Sent> = dora_pages
            .iter()
            .filter(|s| s.call_id != callers_wire.requests("dora", "INVITE")[0].call_id)
            .collect();
        assert_eq!(out_of_dialog.len(), 1, "{dora_pages:?}");
        assert!(out_of_dialog[0].credentials, "{dora_pages:?}");
        let _ = bounded("dora hangs up", call.terminate()).await;

        // alice's first request is a page: challenged, answered, delivered.
        let alice = user(&fed, &callers, "alice", "alice-secret").await;
        bounded(
            "alice's page",
            Conversation::new(&alice, home("erin")).send_page("text/plain", "from alice"),
        )
        .await
        .unwrap_or_else(|e| panic!("alice's page: {e}\n{}", fed.log_tails(30)));
        callers_wire.challenged_once_and_answered(&fed, "alice", "MESSAGE");
        let page = bounded("erin's second page", pages.recv())
            .await
            .expect("a page for erin");
        assert_eq!(page, "from alice");

        // frank's first request is a presence SUBSCRIBE: challenged, answered, and the
        // NOTIFY brings what erin published.
        let frank = user(&fed, &callers, "frank", "frank-secret").await;
        let view = RemotePresenceView::new(&frank);
        let mut notes = view.notifications();
        bounded(
            "frank subscribes",
            view.subscribe(["sip:erin@contoso.test".to_string()]),
        )
        .await
        .expect("subscribe");
        bounded("erin's presence", async {
            loop {
                let n = notes.recv().await.expect("notifications");
                assert!(n.error.is_none(), "{n:?}\n{}", fed.log_tails(30));
                if n.availability == Some(Availability::Busy) {
                    break;
                }
            }
        })
        .await;
        callers_wire.challenged_once_and_answered(&fed, "frank", "SUBSCRIBE");

        bounded("frank's view ends", view.terminate()).await;
        for e in [&alice, &dora, &frank] {
            bounded("terminate", e.terminate()).await;
        }
        bounded("terminate erin", erin.terminate()).await;
        callers.shutdown().await;
        callee.shutdown().await;
    });
}

#[test]
fn credentials_the_proxy_refuses_fail_with_an_authentication_error_after_one_answer() {
    let fed = fixture();
    runtime().block_on(async {
        let wire = Wire::default();
        let platform = user_platform(&fed, &wire).await;
        let erin = user(&fed, &platform, "erin", "erin-secret").await;
        let _pages = erin.core().pages();
        let _calls = incoming_im_calls(&erin);
        // The registrar takes carol's password; the proxy wants another.
        let carol = user(&fed, &platform, "carol", "carol-secret").await;
        let to_erin = Conversation::new(&carol, home("erin"));

        // A page: 407, one answer, 407 again: refused, with what happened.
        let page = bounded("carol's page", to_erin.send_page("text/plain", "hi")).await;
        match &page {
            Err(MessageError::Request(RequestError::Authentication { code, detail, .. })) => {
                assert_eq!(*code, 407);
                assert!(detail.contains("rejected"), "{detail}");
            }
            other => panic!("expected an authentication error, got {other:?}"),
        }
        let text = page.unwrap_err().to_string();
        assert!(text.contains("authentication failed: 407"), "{text}");
        let sent = wire.requests("carol", "MESSAGE");
        assert_eq!(
            sent.len(),
            2,
            "one MESSAGE without credentials, one with: {sent:?}"
        );
        assert_eq!(wire.responses("carol", 407, "MESSAGE"), 2);

        // An IM call: the INVITE goes with the credentials learnt and is challenged again:
        // with the nonce it used (refused at once), or a fresh one (answered once more, as
        // a proxy may have lost its nonces, then refused): over either way.
        let call = to_erin.instant_messaging_call();
        let outcome = bounded("carol's IM call", call.establish()).await;
        match &outcome {
            Err(CallError::Request(RequestError::Authentication { code, .. })) => {
                assert_eq!(*code, 407);
            }
            other => panic!("expected an authentication error, got {other:?}"),
        }
        let invites = wire.requests("carol", "INVITE");
        assert!((1..=2).contains(&invites.len()), "{invites:?}");
        assert!(invites.iter().all(|s| s.credentials), "{invites:?}");

        // A presence publication fails the same way.
        let published = bounded(
            "carol publishes",
            carol
                .local_owner_presence()
                .publish_availability(Availability::Online, None),
        )
        .await;
        assert!(
            matches!(
                published,
                Err(EndpointError::Request(RequestError::Authentication {
                    code: 407,
                    ..
                }))
            ),
            "{published:?}"
        );

        // Nothing more goes out afterwards: no loop.
        let failed = |log: &str| {
            log.lines()
                .filter(|l| l.contains("failed proxy digest for carol"))
                .count()
        };
        log_shows(&fed, "failed proxy digest for carol (PUBLISH)").await;
        let before = (
            wire.requests("carol", "MESSAGE").len(),
            wire.requests("carol", "INVITE").len(),
            wire.requests("carol", "PUBLISH").len(),
        );
        let refusals = failed(&kamailio_log(&fed));
        // Each request was answered with credentials at most twice (the page once, the
        // INVITE and the PUBLISH with the learnt nonce, then once afresh).
        assert!(refusals <= 5, "{refusals} refusals\n{}", kamailio_log(&fed));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            before,
            (
                wire.requests("carol", "MESSAGE").len(),
                wire.requests("carol", "INVITE").len(),
                wire.requests("carol", "PUBLISH").len(),
            ),
            "no request was sent again"
        );
        assert!(wire.requests("carol", "PUBLISH").len() <= 2);

        bounded("terminate carol", carol.terminate()).await;
        bounded("terminate erin", erin.terminate()).await;
        platform.shutdown().await;
    });
}

/// A federated party's end that answers a user's page `401 Unauthorized` naming the
/// user's home realm (contoso.test): the 401 comes from fabrikam, not from a home server,
/// so the user's password is not answered (RFC 3261 §22.2: a 401 is the end's; trust is
/// not transitive). Real peers all the way: dora's page is challenged by contoso's proxy
/// (407, answered), crosses the federation to fabrikam, and bob there is a SIPp process
/// that challenges it and fails its run if a second MESSAGE of the call comes within 3 s.
/// Before, the realm alone decided and the 401 got a digest response.
#[test]
fn a_federated_ends_401_naming_the_home_realm_is_not_answered() {
    let fed = fixture();
    let name = "bob-401-home-realm";
    let uas = fed
        .sipp(name, scenarios::UAS_MESSAGE_401_HOME_REALM)
        .trace_messages(true)
        .timeout(Duration::from_secs(20))
        .calls(1)
        .spawn_listening(WAIT)
        .expect("SIPp UAS listening");
    // bob's device at fabrikam is the SIPp process.
    let at = Deployment::Fabrikam;
    let password = DEFAULT_USERS
        .iter()
        .find(|(d, u, _)| *d == at && *u == "bob")
        .map(|(_, _, p)| *p)
        .expect("bob is a default user of fabrikam");
    let mut client = SipTcpClient::connect(fed.front_end(at).tcp_addr(), WAIT)
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", at.fqdn()));
    let contact = format!("sip:bob@{};transport=tcp", uas.local_addr());
    let reg = client
        .register("bob", at.domain(), password, &contact, 300, WAIT)
        .expect("registering bob's SIPp");
    assert_eq!(reg.response.status(), Some(200));

    runtime().block_on(async {
        let wire = Wire::default();
        let platform = user_platform(&fed, &wire).await;
        let dora = user(&fed, &platform, "dora", "dora-secret").await;
        let bob = Address::<Federated>::assume_federated("sip:bob@fabrikam.test").unwrap();
        let page = bounded(
            "dora's page to bob",
            Conversation::new(&dora, bob).send_page("text/plain", "hello bob"),
        )
        .await;
        match &page {
            Err(MessageError::Request(RequestError::Authentication { code, detail, .. })) => {
                assert_eq!(*code, 401, "{detail}");
                assert!(detail.contains("federated"), "{detail}");
            }
            other => panic!(
                "expected the 401 refused, got {other:?}\n{}",
                fed.log_tails(30)
            ),
        }
        // contoso's 407 was answered (the home proxy), fabrikam's 401 was not.
        wire.challenged_once_and_answered(&fed, "dora", "MESSAGE");
        assert_eq!(wire.responses("dora", 401, "MESSAGE"), 1);
        let sent = wire.requests("dora", "MESSAGE");
        assert_eq!(sent.len(), 2, "no MESSAGE after the 401: {sent:?}");
        bounded("terminate dora", dora.terminate()).await;
        platform.shutdown().await;
    });
    let out = uas.wait().expect("SIPp ends");
    assert!(
        out.succeeded(),
        "{}\n--- messages ---\n{}\n{}",
        out.report(),
        out.messages,
        fed.log_tails(30)
    );
}

/// The requests one user sent in the call with Call-ID `call_id`: (CSeq, credentials).
fn in_call(wire: &Wire, user: &str, method: &str, call_id: &str) -> Vec<(String, bool)> {
    wire.requests(user, method)
        .into_iter()
        .filter(|s| s.call_id == call_id)
        .map(|s| (s.cseq, s.credentials))
        .collect()
}

/// Asserts that `sent` (a user's `method`s in one call) is one request challenged and sent
/// again with credentials and the next CSeq.
fn answered_once(sent: &[(String, bool)], method: &str) {
    assert_eq!(sent.len(), 2, "{method}: {sent:?}");
    let seq = |c: &str| {
        c.split(' ')
            .next()
            .and_then(|n| n.parse::<u32>().ok())
            .expect("a CSeq number")
    };
    assert!(
        !sent[0].1,
        "the first {method} had no credentials: {sent:?}"
    );
    assert!(sent[1].1, "the second {method} answered the 407: {sent:?}");
    assert_eq!(
        seq(&sent[1].0),
        seq(&sent[0].0) + 1,
        "the next CSeq: {sent:?}"
    );
    assert!(sent[1].0.ends_with(method), "{sent:?}");
}

/// A proxy that challenges requests inside dialogs too (Kamailio with
/// `challenge_in_dialog_requests`): a user's MESSAGE in an IM call, the callee's as well as
/// the caller's, the BYE, and the SUBSCRIBE that ends a presence subscription are answered
/// with the user's credentials in a request with the dialog's next CSeq, and delivered.
/// Before, in-dialog requests answered no challenge: the messages failed with 407, the BYE
/// never reached the other party and the subscription stayed at the server.
#[test]
fn requests_inside_a_call_challenged_by_the_proxy_are_answered() {
    let fed = fixture_with(|b| b.challenge_in_dialog_requests(true));
    runtime().block_on(async {
        let callers_wire = Wire::default();
        let callee_wire = Wire::default();
        let callers = user_platform(&fed, &callers_wire).await;
        let callee = user_platform(&fed, &callee_wire).await;
        let erin = user(&fed, &callee, "erin", "erin-secret").await;
        let mut calls = incoming_im_calls(&erin);
        let dora = user(&fed, &callers, "dora", "dora-secret").await;

        let call = Conversation::new(&dora, home("erin")).instant_messaging_call();
        let (flow, accepted) = tokio::join!(bounded("dora's IM call", call.establish()), async {
            let call = bounded("a call for erin", calls.next())
                .await
                .expect("a call for erin");
            bounded("erin accepts", call.accept()).await
        });
        let mut flow = flow.unwrap_or_else(|e| panic!("dora's call: {e}\n{}", fed.log_tails(30)));
        let mut erins = accepted.unwrap_or_else(|e| panic!("erin accepts: {e}"));
        let call_id = callers_wire.requests("dora", "INVITE")[0].call_id.clone();

        // dora's MESSAGE in the call: challenged, answered, delivered.
        bounded("dora's message", flow.send_text("hello erin"))
            .await
            .unwrap_or_else(|e| panic!("dora's MESSAGE: {e}\n{}", fed.log_tails(30)));
        let got = bounded("erin reads", erins.recv())
            .await
            .expect("a message");
        assert_eq!(got.text(), "hello erin");
        answered_once(
            &in_call(&callers_wire, "dora", "MESSAGE", &call_id),
            "MESSAGE",
        );

        // erin's, in the dialog she answered: the same.
        bounded("erin's message", erins.send_text("hello dora"))
            .await
            .unwrap_or_else(|e| panic!("erin's MESSAGE: {e}\n{}", fed.log_tails(30)));
        let got = bounded("dora reads", flow.recv()).await.expect("a message");
        assert_eq!(got.text(), "hello dora");
        answered_once(
            &in_call(&callee_wire, "erin", "MESSAGE", &call_id),
            "MESSAGE",
        );

        // dora hangs up: the BYE is challenged, answered, and ends erin's side.
        bounded("dora hangs up", call.terminate())
            .await
            .unwrap_or_else(|e| panic!("BYE: {e}\n{}", fed.log_tails(30)));
        assert!(
            bounded("erin's flow ends", erins.recv()).await.is_none(),
            "no more messages"
        );
        answered_once(&in_call(&callers_wire, "dora", "BYE", &call_id), "BYE");
        log_shows(&fed, "proxy auth ok for dora (BYE").await;

        // A subscription's dialog: dora subscribes to erin's presence (out of dialog,
        // challenged as before), then ends it with a SUBSCRIBE in the dialog (Expires: 0),
        // which is challenged, answered and granted.
        let view = RemotePresenceView::new(&dora);
        let mut notes = view.notifications();
        let erin_uri = "sip:erin@contoso.test".to_string();
        bounded("dora subscribes", view.subscribe([erin_uri.clone()]))
            .await
            .unwrap_or_else(|e| panic!("SUBSCRIBE: {e}\n{}", fed.log_tails(30)));
        bounded("a NOTIFY", notes.recv())
            .await
            .expect("a notification");
        let sub_call = callers_wire.requests("dora", "SUBSCRIBE")[0]
            .call_id
            .clone();
        let before = in_call(&callers_wire, "dora", "SUBSCRIBE", &sub_call);
        let last_seq: u32 = before
            .last()
            .and_then(|(c, _)| c.split(' ').next()?.parse().ok())
            .expect("a CSeq");
        bounded("dora unsubscribes", view.unsubscribe(&erin_uri)).await;
        // The unsubscription goes twice (challenged, then answered) and is granted.
        let answered = format!("{} SUBSCRIBE", last_seq + 2);
        let granted = |r: &collaboration_platform::WireRecord| {
            let t = r.text();
            r.direction == WireDirection::Received
                && t.starts_with("SIP/2.0 200 ")
                && header_of(&t, "Call-ID") == Some(sub_call.as_str())
                && header_of(&t, "CSeq") == Some(answered.as_str())
        };
        bounded(
            "the unsubscription granted",
            callers_wire.0.wait_for(granted),
        )
        .await;
        let sent = in_call(&callers_wire, "dora", "SUBSCRIBE", &sub_call);
        assert_eq!(sent.len(), before.len() + 2, "{sent:?}");
        answered_once(&sent[before.len()..], "SUBSCRIBE");
        bounded("dora's view ends", view.terminate()).await;

        bounded("terminate dora", dora.terminate()).await;
        bounded("terminate erin", erin.terminate()).await;
        callers.shutdown().await;
        callee.shutdown().await;
    });
}
