//! IM calls against real peers (peer-harness): Kamailio 5.6 front ends for contoso (the
//! home deployment; the application is a trusted platform there over mutual TLS) and
//! fabrikam (federated with contoso), SIPp processes as the users. Nothing is mocked: every
//! request crosses at least one real front end, federated ones two.
//!
//! The application is `sip:bot@contoso.test`, an [`ApplicationEndpoint`] that registers its
//! contact at contoso (`use_registration(true)`), so contoso's location lookup routes the
//! users' INVITEs for the bot to it. Users are SIPp processes whose contact is registered
//! with digest at their own front end (alice at contoso, bob at fabrikam).
//!
//! Every wait is bounded ([`WAIT`] per step; SIPp runs by their own `-timeout`). What SIPp
//! saw is read back from its message trace and compared with what the application did.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use application_endpoint::{
    ApplicationEndpoint, ApplicationEndpointSettings, Credentials, UserEndpoint,
    UserEndpointSettings,
};
use collaboration_platform::{
    Address, CollaborationPlatform, Federated, Homing, Listener, OnPremises, OutboundProxy,
    ServerPlatformSettings, Topology, WireDirection, WireLog,
};
use conversation::{
    incoming_im_calls, CallError, Conversation, ConversationState, IncomingImCall,
    InstantMessagingFlow, MessageError, TerminationReason,
};
use interop_support::{bounded, federation, identity, loopback0, roots, runtime, WAIT};
use peer_harness::{
    scenarios, Deployment, Federation, SipTcpClient, Sipp, SippOutcome, SippProcess, DEFAULT_USERS,
};
use tokio::sync::watch;

/// Global limit of each SIPp run (`-timeout`; a run that needs longer fails).
const SIPP_LIMIT: Duration = Duration::from_secs(20);

/// MESSAGEs per session in the message tests.
const MESSAGES: usize = 5;

// ---------------------------------------------------------------------------------------
// Fixture: front ends, the application, SIPp users.
// ---------------------------------------------------------------------------------------

/// The trusted application `app.contoso.test`, its front end contoso over mutual TLS.
fn settings(fed: &Federation) -> ServerPlatformSettings {
    let contoso = fed.contoso();
    ServerPlatformSettings::new(
        "ucma-rs im interop",
        Deployment::Contoso.application(),
        identity(fed.pki().application(Deployment::Contoso)),
        roots(fed),
        OutboundProxy::tls(contoso.mtls_addr(), contoso.fqdn()),
    )
    .listen(Listener::mutual_tls(loopback0()))
    .topology(Topology::new([Deployment::Contoso.domain()]))
}

/// The application: its platform and the bot's endpoint, established and registered.
struct App {
    platform: CollaborationPlatform,
    bot: ApplicationEndpoint,
}

const BOT: &str = "sip:bot@contoso.test";

/// alice, a user of contoso (the home deployment).
fn alice() -> Address<OnPremises> {
    Address::assume_on_premises("sip:alice@contoso.test").unwrap()
}

/// bob, a user of fabrikam (federated with contoso).
fn bob() -> Address<Federated> {
    Address::assume_federated("sip:bob@fabrikam.test").unwrap()
}

async fn start_app(fed: &Federation) -> App {
    start_app_with(fed, settings(fed)).await
}

async fn start_app_with(fed: &Federation, settings: ServerPlatformSettings) -> App {
    let platform = bounded(
        "starting the platform",
        CollaborationPlatform::start(settings),
    )
    .await
    .unwrap_or_else(|e| panic!("starting the platform: {e}"));
    let bot = ApplicationEndpoint::new(
        &platform,
        ApplicationEndpointSettings::new(Address::assume_on_premises(BOT).unwrap())
            .display_name("Bot")
            .use_registration(true),
    );
    bounded("establishing the bot", bot.establish())
        .await
        .unwrap_or_else(|e| panic!("establishing the bot: {e}\n{}", fed.log_tails(30)));
    App { platform, bot }
}

impl App {
    async fn stop(self) {
        bounded("terminating the bot", self.bot.terminate()).await;
        bounded("shutting the platform down", self.platform.shutdown()).await;
    }
}

/// Every message a platform sent or received, with the query these tests make.
#[derive(Default)]
struct Wire(WireLog);

impl Wire {
    /// The BYEs, their answers and the 481 answers the platform sent or received, in
    /// order: how a call ended, for failure messages.
    fn endings(&self) -> String {
        let lines: Vec<String> = self
            .0
            .records()
            .iter()
            .filter_map(|r| {
                let (d, text) = (r.direction, r.text());
                let first = text.lines().next().unwrap_or_default().trim_end();
                let cseq = text
                    .lines()
                    .find_map(|l| l.strip_prefix("CSeq:"))
                    .unwrap_or_default()
                    .trim();
                let interesting = cseq.ends_with("BYE") || first.starts_with("SIP/2.0 481");
                let arrow = match d {
                    WireDirection::Sent => "sent",
                    WireDirection::Received => "received",
                };
                interesting.then(|| format!("{arrow}: {first} ({cseq})"))
            })
            .collect();
        lines.join("\n")
    }
}

/// Registers `user`'s contact (a SIPp at `at`) at `at`'s front end, with digest.
fn register(fed: &Federation, at: Deployment, user: &str, sipp: SocketAddr) {
    let password = DEFAULT_USERS
        .iter()
        .find(|(d, u, _)| *d == at && *u == user)
        .map(|(_, _, p)| *p)
        .unwrap_or_else(|| panic!("{user} is not a default user of {}", at.domain()));
    let mut c = SipTcpClient::connect(fed.front_end(at).tcp_addr(), WAIT)
        .unwrap_or_else(|e| panic!("connecting to {}: {e}", at.fqdn()));
    let contact = format!("sip:{user}@{sipp};transport=tcp");
    let reg = c
        .register(user, at.domain(), password, &contact, 300, WAIT)
        .unwrap_or_else(|e| panic!("registering {user} at {}: {e}", at.domain()));
    assert_eq!(reg.response.status(), Some(200), "REGISTER of {user}");
}

/// A SIPp UAS run named `name` as `user` (its Contact), traced and time-limited.
fn uas_run(fed: &Federation, name: &str, scenario: &str, user: &str) -> Sipp {
    fed.sipp(name, scenario)
        .key("user", user)
        .trace_messages(true)
        .timeout(SIPP_LIMIT)
        .calls(1)
}

/// Starts `run` as `user`'s device at `at`: waits until it listens, registers its contact.
fn start_uas(fed: &Federation, run: Sipp, at: Deployment, user: &str) -> SippProcess {
    let uas = run.spawn_listening(WAIT).expect("SIPp UAS listening");
    register(fed, at, user, uas.local_addr());
    uas
}

/// Waits for a SIPp run and fails with its report (and the front ends' logs) unless it
/// succeeded.
fn succeeded(fed: &Federation, what: &str, uas: SippProcess) -> SippOutcome {
    let out = uas.wait().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.succeeded(),
        "{what}: {}\n--- messages ---\n{}\n{}",
        out.report(),
        out.messages,
        fed.log_tails(30)
    );
    out
}

// ---------------------------------------------------------------------------------------
// SIPp's message trace (`-trace_msg`), read back.
// ---------------------------------------------------------------------------------------

/// One message SIPp sent or received.
#[derive(Debug, Clone)]
struct Traced {
    sent: bool,
    lines: Vec<String>,
    body: String,
}

impl Traced {
    fn first_line(&self) -> &str {
        self.lines.first().map(String::as_str).unwrap_or("")
    }

    /// The values of header `name` (case-insensitive), in order.
    fn headers(&self, name: &str) -> Vec<&str> {
        self.lines
            .iter()
            .skip(1)
            .filter_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
            })
            .collect()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers(name).first().copied()
    }

    fn is_request(&self, method: &str) -> bool {
        self.first_line().starts_with(&format!("{method} "))
    }

    /// A response with `status` to a request with `method` (by CSeq).
    fn is_response(&self, status: u16, method: &str) -> bool {
        self.first_line().starts_with(&format!("SIP/2.0 {status} "))
            && self
                .header("CSeq")
                .is_some_and(|c| c.split_whitespace().nth(1) == Some(method))
    }
}

/// Parses SIPp's message log: blocks that start with a dashed line, then
/// `… message sent (N bytes):` or `… message received [N] bytes :`, a blank line and the
/// message.
fn trace(log: &str) -> Vec<Traced> {
    let mut out = Vec::new();
    let mut lines = log.lines().map(|l| l.trim_end_matches('\r')).peekable();
    while let Some(l) = lines.next() {
        if !l.starts_with("-----------------------------------------------") {
            continue;
        }
        let Some(kind) = lines.next() else { break };
        let sent = if kind.contains("message sent") {
            true
        } else if kind.contains("message received") {
            false
        } else {
            continue;
        };
        // Skip blank lines before the start line.
        while lines.peek().is_some_and(|l| l.is_empty()) {
            lines.next();
        }
        let mut head = Vec::new();
        let mut body = Vec::new();
        let mut in_body = false;
        while let Some(l) = lines.peek() {
            if l.starts_with("-----------------------------------------------") {
                break;
            }
            let l = lines.next().unwrap_or_default();
            if in_body {
                body.push(l);
            } else if l.is_empty() {
                in_body = true;
            } else {
                head.push(l.to_string());
            }
        }
        out.push(Traced {
            sent,
            lines: head,
            body: body.join("\n").trim_end().to_string(),
        });
    }
    out
}

fn count(t: &[Traced], f: impl Fn(&Traced) -> bool) -> usize {
    t.iter().filter(|m| f(m)).count()
}

/// The path of the message log of the SIPp run `name` (written while it runs).
fn messages_log(fed: &Federation, name: &str) -> PathBuf {
    fed.dir().join(format!("{name}.messages.log"))
}

// ---------------------------------------------------------------------------------------
// 1 and 3: the application calls a user and sends messages.
// ---------------------------------------------------------------------------------------

fn app_calls_a_user_and_sends_messages<H: Homing>(at: Deployment, user: &str, remote: Address<H>) {
    let fed = federation();
    let name = format!("{user}-im-uas");
    let uas = start_uas(
        &fed,
        uas_run(&fed, &name, scenarios::UAS_IM_SESSION, user),
        at,
        user,
    );
    let texts: Vec<String> = (1..=MESSAGES)
        .map(|i| format!("hello {user}, message {i} of {MESSAGES}"))
        .collect();
    let rt = runtime();
    let (app, conversation_id) = rt.block_on(async {
        let app = start_app(&fed).await;
        let conv = Conversation::new(&app.bot, remote);
        let call = conv.instant_messaging_call();
        let flow = bounded("establishing the IM call", call.establish())
            .await
            .unwrap_or_else(|e| panic!("establish: {e:?}\n{}", fed.log_tails(30)));
        assert_eq!(call.state(), ConversationState::Established);
        assert_eq!(conv.state(), ConversationState::Established);
        for t in &texts {
            bounded("a MESSAGE's outcome", flow.send_text(t))
                .await
                .unwrap_or_else(|e| panic!("MESSAGE {t:?}: {e:?}\n{}", fed.log_tails(30)));
        }
        bounded("BYE", call.terminate())
            .await
            .unwrap_or_else(|e| panic!("BYE: {e:?}"));
        assert_eq!(call.state(), ConversationState::Terminated);
        assert_eq!(conv.state(), ConversationState::Terminated);
        assert!(matches!(
            flow.send_text("after the end").await,
            Err(MessageError::CallEnded)
        ));
        let id = conv.id().to_string();
        (app, id)
    });
    // The application stays up until SIPp is done.
    let out = succeeded(&fed, &name, uas);
    rt.block_on(app.stop());
    let t = trace(&out.messages);
    let invite = t
        .iter()
        .find(|m| !m.sent && m.is_request("INVITE"))
        .expect("SIPp received the INVITE");
    assert!(
        invite
            .header("From")
            .is_some_and(|f| f.starts_with("\"Bot\" <sip:bot@contoso.test>;tag=")),
        "{invite:?}"
    );
    assert_eq!(
        invite.header("Ms-Conversation-ID"),
        Some(conversation_id.as_str()),
        "the conversation id crossed"
    );
    let received: Vec<&str> = t
        .iter()
        .filter(|m| !m.sent && m.is_request("MESSAGE"))
        .map(|m| m.body.as_str())
        .collect();
    assert_eq!(received, texts, "SIPp received every message, in order");
    assert_eq!(
        count(&t, |m| m.sent && m.is_response(200, "MESSAGE")),
        MESSAGES
    );
    assert_eq!(count(&t, |m| !m.sent && m.is_request("BYE")), 1);
    assert_eq!(count(&t, |m| m.sent && m.is_response(200, "BYE")), 1);
}

#[test]
fn app_calls_a_home_user_and_sends_messages() {
    app_calls_a_user_and_sends_messages(Deployment::Contoso, "alice", alice());
}

#[test]
fn app_calls_a_federated_user_and_sends_messages() {
    app_calls_a_user_and_sends_messages(Deployment::Fabrikam, "bob", bob());
}

// ---------------------------------------------------------------------------------------
// 2 and 3: a user calls the application and sends messages.
// ---------------------------------------------------------------------------------------

/// What the application saw of an incoming call.
struct Seen {
    homing: &'static str,
    typed_federated: bool,
    caller: String,
    texts: Vec<String>,
    state: ConversationState,
}

fn user_calls_the_app_and_sends_messages(at: Deployment, user: &str, expect_homing: &str) {
    let fed = federation();
    let rt = runtime();
    let app = rt.block_on(start_app(&fed));
    let mut calls = incoming_im_calls(&app.bot);
    let handler = rt.spawn(async move {
        let incoming = bounded("the incoming call", calls.next())
            .await
            .expect("the stream is open");
        let homing = incoming.homing();
        let caller = incoming.caller_uri().to_string();
        let typed_federated = matches!(incoming, IncomingImCall::Federated(_));
        let state = match &incoming {
            IncomingImCall::OnPremises(c) => c.call().watch_state(),
            IncomingImCall::Federated(c) => c.call().watch_state(),
        };
        let mut flow = bounded("accepting", incoming.accept())
            .await
            .unwrap_or_else(|e| panic!("accept: {e:?}"));
        let mut texts = Vec::new();
        while let Some(m) = bounded("the next message or the end", flow.recv()).await {
            assert!(m.content_type.starts_with("text/plain"), "{m:?}");
            // SIPp's bodies end with the line break of its scenario line.
            assert!(m.text().ends_with("\r\n"), "{m:?}");
            texts.push(m.text().trim_end().to_string());
        }
        let state = *state.borrow();
        Seen {
            homing,
            typed_federated,
            caller,
            texts,
            state,
        }
    });
    let name = format!("{user}-im-uac");
    let uac = fed
        .sipp(&name, scenarios::UAC_IM_SESSION)
        .remote(fed.front_end(at).tcp_addr())
        .key("to_user", "bot")
        .key("to_domain", "contoso.test")
        .key("from_user", user)
        .key("from_domain", at.domain())
        .arg("-set")
        .arg("messages")
        .arg(&MESSAGES.to_string())
        .trace_messages(true)
        .timeout(SIPP_LIMIT)
        .calls(1)
        .run()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        uac.succeeded(),
        "{name}: {}\n--- messages ---\n{}\n{}",
        uac.report(),
        uac.messages,
        fed.log_tails(30)
    );
    let seen = rt
        .block_on(bounded("the application's side", handler))
        .expect("the handler did not panic");
    rt.block_on(app.stop());
    assert_eq!(seen.homing, expect_homing);
    assert_eq!(seen.typed_federated, expect_homing == "federated");
    assert_eq!(seen.caller, format!("sip:{user}@{}", at.domain()));
    let t = trace(&uac.messages);
    let sent: Vec<&str> = t
        .iter()
        .filter(|m| m.sent && m.is_request("MESSAGE"))
        .map(|m| m.body.as_str())
        .collect();
    assert_eq!(sent.len(), MESSAGES);
    assert_eq!(seen.texts, sent, "the flow yielded every message, in order");
    assert_eq!(
        count(&t, |m| !m.sent && m.is_response(200, "MESSAGE")),
        MESSAGES
    );
    assert_eq!(
        seen.state,
        ConversationState::Terminated,
        "the caller's BYE ended the call"
    );
}

#[test]
fn home_user_calls_the_app_and_sends_messages() {
    user_calls_the_app_and_sends_messages(Deployment::Contoso, "alice", "on-premises");
}

#[test]
fn federated_user_calls_the_app_through_federation_and_sends_messages() {
    user_calls_the_app_and_sends_messages(Deployment::Fabrikam, "bob", "federated");
}

// ---------------------------------------------------------------------------------------
// Delayed offer: a user calls the application with an INVITE without SDP.
// ---------------------------------------------------------------------------------------

/// What the application saw of a call without an offer.
struct DelayedSeen {
    accepted: Result<Vec<String>, CallError>,
    state: ConversationState,
    reason: Option<TerminationReason>,
}

/// Takes the next call to the bot: accepts it and, once accepted, sends `reply` and reads
/// messages until the call ends.
fn take_delayed_offer_call(
    rt: &tokio::runtime::Runtime,
    app: &App,
    reply: &'static str,
) -> tokio::task::JoinHandle<DelayedSeen> {
    let mut calls = incoming_im_calls(&app.bot);
    rt.spawn(async move {
        let incoming = bounded("the incoming call", calls.next())
            .await
            .expect("the stream is open");
        let IncomingImCall::OnPremises(c) = incoming else {
            panic!("alice is a home user");
        };
        let call = c.call().clone();
        let accepted = match bounded("accepting", c.accept()).await {
            Ok(mut flow) => {
                // The bot speaks first (the scenario expects one message in flight at a
                // time).
                bounded("the greeting", flow.send_text(reply))
                    .await
                    .unwrap_or_else(|e| panic!("greeting: {e:?}"));
                let mut texts = Vec::new();
                while let Some(m) = bounded("the next message or the end", flow.recv()).await {
                    texts.push(m.text().trim_end().to_string());
                }
                Ok(texts)
            }
            Err(e) => Err(e),
        };
        bounded(
            "the call to end",
            call.watch_state()
                .wait_for(|s| *s == ConversationState::Terminated),
        )
        .await
        .expect("the call's state is watched");
        DelayedSeen {
            accepted,
            state: call.state(),
            reason: call.termination_reason(),
        }
    })
}

/// RFC 3261 §13.2.1 / §13.3.1.4, RFC 3264 §4: an INVITE without an offer is accepted
/// with our offer in the 200 (an IM session with our accept-types), the caller's answer
/// comes in the ACK, and messages then flow both ways. Such an INVITE used to be declined
/// 488 by the endpoint's router (no `m=` line to route it by), and `accept` had no offer
/// to answer.
#[test]
fn a_call_without_an_offer_gets_ours_in_the_200_and_the_answer_in_the_ack() {
    let fed = federation();
    let rt = runtime();
    let app = rt.block_on(start_app(&fed));
    let handler = take_delayed_offer_call(&rt, &app, "hello alice");
    let name = "alice-delayed-offer";
    let uac = fed
        .sipp(name, scenarios::UAC_IM_DELAYED_OFFER)
        .remote(fed.contoso().tcp_addr())
        .key("to_user", "bot")
        .key("to_domain", "contoso.test")
        .key("from_user", "alice")
        .key("from_domain", "contoso.test")
        .trace_messages(true)
        .timeout(SIPP_LIMIT)
        .calls(1)
        .run()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        uac.succeeded(),
        "{name}: {}\n--- messages ---\n{}\n{}",
        uac.report(),
        uac.messages,
        fed.log_tails(30)
    );
    let seen = rt
        .block_on(bounded("the application's side", handler))
        .expect("the handler did not panic");
    rt.block_on(app.stop());
    let t = trace(&uac.messages);
    let ok = t
        .iter()
        .find(|m| !m.sent && m.is_response(200, "INVITE"))
        .expect("the 200 reached alice");
    assert_eq!(ok.header("Content-Type"), Some("application/sdp"));
    for line in ["m=message 5060 sip null", "text/plain", "text/html"] {
        assert!(ok.body.contains(line), "{line} in our offer:\n{}", ok.body);
    }
    let reply = t
        .iter()
        .find(|m| !m.sent && m.is_request("MESSAGE"))
        .expect("our MESSAGE reached alice");
    assert_eq!(reply.body, "hello alice");
    assert_eq!(
        seen.accepted.expect("accepted"),
        vec!["hello from alice".to_string()]
    );
    assert_eq!(seen.state, ConversationState::Terminated);
    assert!(
        matches!(seen.reason, Some(TerminationReason::Remote { .. })),
        "{:?}",
        seen.reason
    );
}

/// RFC 3261 §13.2.1 owes the answer to an offer made in a 2xx in the ACK: an ACK without
/// one (`rejecting` 0), or whose answer rejects the IM session (1), leaves no session, so
/// the call ends with our BYE and `accept` fails with `NotAcceptable`, the reason kept as
/// the call's termination reason. Such an INVITE used to be declined 488 up front.
#[test]
fn an_ack_without_a_usable_answer_ends_the_call_with_bye() {
    let fed = federation();
    let rt = runtime();
    let app = rt.block_on(start_app(&fed));
    for rejecting in ["0", "1"] {
        let handler = take_delayed_offer_call(&rt, &app, "unused");
        let name = format!("alice-bad-ack-{rejecting}");
        let uac = fed
            .sipp(&name, scenarios::UAC_IM_DELAYED_OFFER_BAD_ACK)
            .remote(fed.contoso().tcp_addr())
            .key("to_user", "bot")
            .key("to_domain", "contoso.test")
            .key("from_user", "alice")
            .key("from_domain", "contoso.test")
            .arg("-set")
            .arg("rejecting")
            .arg(rejecting)
            .trace_messages(true)
            .timeout(SIPP_LIMIT)
            .calls(1)
            .run()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            uac.succeeded(),
            "{name}: {}\n--- messages ---\n{}\n{}",
            uac.report(),
            uac.messages,
            fed.log_tails(30)
        );
        let seen = rt
            .block_on(bounded("the application's side", handler))
            .expect("the handler did not panic");
        assert!(
            matches!(seen.accepted, Err(CallError::NotAcceptable(_))),
            "{name}: {:?}",
            seen.accepted
        );
        assert_eq!(seen.state, ConversationState::Terminated);
        assert!(
            matches!(
                seen.reason,
                Some(TerminationReason::NotEstablished(CallError::NotAcceptable(
                    _
                )))
            ),
            "{name}: {:?}",
            seen.reason
        );
        let t = trace(&uac.messages);
        assert_eq!(count(&t, |m| !m.sent && m.is_request("BYE")), 1, "{name}");
    }
    rt.block_on(app.stop());
}

// ---------------------------------------------------------------------------------------
// re-INVITE without an offer: ours goes in the 200, the answer comes in the ACK.
// ---------------------------------------------------------------------------------------

/// What the application saw of a call it accepted: the messages read until it ended, and
/// how it ended.
struct CallSeen {
    texts: Vec<String>,
    state: ConversationState,
    reason: Option<TerminationReason>,
}

/// Takes the next call to the bot (alice's, with an offer): accepts it and reads messages
/// until the call ends.
fn take_call_reading_messages(
    rt: &tokio::runtime::Runtime,
    app: &App,
) -> tokio::task::JoinHandle<CallSeen> {
    let mut calls = incoming_im_calls(&app.bot);
    rt.spawn(async move {
        let incoming = bounded("the incoming call", calls.next())
            .await
            .expect("the stream is open");
        let IncomingImCall::OnPremises(c) = incoming else {
            panic!("alice is a home user");
        };
        let call = c.call().clone();
        let mut flow = bounded("accepting", c.accept())
            .await
            .unwrap_or_else(|e| panic!("accept: {e:?}"));
        let mut texts = Vec::new();
        while let Some(m) = bounded("the next message or the end", flow.recv()).await {
            texts.push(m.text().trim_end().to_string());
        }
        bounded(
            "the call to end",
            call.watch_state()
                .wait_for(|s| *s == ConversationState::Terminated),
        )
        .await
        .expect("the call's state is watched");
        CallSeen {
            texts,
            state: call.state(),
            reason: call.termination_reason(),
        }
    })
}

/// Runs `scenario` as alice calling the bot through contoso, with `-set NAME VALUE` for
/// each of `globals`; fails unless SIPp succeeded.
fn alice_calls_the_bot(
    fed: &Federation,
    name: &str,
    scenario: &str,
    globals: &[(&str, &str)],
) -> SippOutcome {
    let mut run = fed
        .sipp(name, scenario)
        .remote(fed.contoso().tcp_addr())
        .key("to_user", "bot")
        .key("to_domain", "contoso.test")
        .key("from_user", "alice")
        .key("from_domain", "contoso.test")
        .trace_messages(true)
        .timeout(SIPP_LIMIT)
        .calls(1);
    for (n, v) in globals {
        run = run.arg("-set").arg(n).arg(v);
    }
    let out = run.run().unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        out.succeeded(),
        "{name}: {}\n--- messages ---\n{}\n{}",
        out.report(),
        out.messages,
        fed.log_tails(30)
    );
    out
}

/// RFC 3261 §14.2: a re-INVITE without an offer gets ours in the 200 and the answer in
/// the ACK; a usable answer leaves the call up: a MESSAGE sent after it is delivered, and
/// the caller's BYE ends the call.
#[test]
fn an_offerless_reinvite_answered_in_the_ack_keeps_the_call_up() {
    let fed = federation();
    let rt = runtime();
    let app = rt.block_on(start_app(&fed));
    let handler = take_call_reading_messages(&rt, &app);
    let name = "alice-reinvite-answered";
    let uac = alice_calls_the_bot(&fed, name, scenarios::UAC_IM_REINVITE, &[("answer", "0")]);
    let seen = rt
        .block_on(bounded("the application's side", handler))
        .expect("the handler did not panic");
    rt.block_on(app.stop());
    let t = trace(&uac.messages);
    let offers: Vec<&Traced> = t
        .iter()
        .filter(|m| !m.sent && m.is_response(200, "INVITE"))
        .collect();
    assert_eq!(offers.len(), 2, "the INVITE's 200 and the re-INVITE's");
    assert!(
        offers[1].body.contains("m=message 5060 sip null"),
        "our offer in the re-INVITE's 200:\n{}",
        offers[1].body
    );
    assert_eq!(count(&t, |m| !m.sent && m.is_request("BYE")), 0);
    assert_eq!(seen.texts, vec!["after the re-INVITE".to_string()]);
    assert_eq!(seen.state, ConversationState::Terminated);
    assert!(
        matches!(seen.reason, Some(TerminationReason::Remote { .. })),
        "{:?}",
        seen.reason
    );
}

/// RFC 3261 §14.2 owes the answer to our offer in a re-INVITE's 200 in the ACK: an ACK
/// without one (`answer` 1), with one that rejects the IM session (2) or with a body that
/// is not SDP (3) leaves no session, so the call ends with our BYE, its termination
/// reason `Renegotiation(NotAcceptable)`. Such an ACK used to be ignored: the call stayed
/// up with nothing negotiated.
#[test]
fn an_offerless_reinvite_without_a_usable_answer_in_the_ack_ends_the_call_with_bye() {
    let fed = federation();
    let rt = runtime();
    let app = rt.block_on(start_app(&fed));
    for answer in ["1", "2", "3"] {
        let handler = take_call_reading_messages(&rt, &app);
        let name = format!("alice-reinvite-bad-ack-{answer}");
        let uac = alice_calls_the_bot(
            &fed,
            &name,
            scenarios::UAC_IM_REINVITE,
            &[("answer", answer)],
        );
        let seen = rt
            .block_on(bounded("the application's side", handler))
            .expect("the handler did not panic");
        assert!(seen.texts.is_empty(), "{name}: {:?}", seen.texts);
        assert_eq!(seen.state, ConversationState::Terminated, "{name}");
        assert!(
            matches!(
                seen.reason,
                Some(TerminationReason::Renegotiation(CallError::NotAcceptable(
                    _
                )))
            ),
            "{name}: {:?}",
            seen.reason
        );
        let t = trace(&uac.messages);
        assert_eq!(count(&t, |m| !m.sent && m.is_request("BYE")), 1, "{name}");
    }
    rt.block_on(app.stop());
}

/// While our offer in a re-INVITE's 200 waits for its answer (the ACK), a new offer cannot
/// be taken (RFC 3264 §4): a re-INVITE with one and an UPDATE with one (RFC 3311 §5.2) are
/// refused 491 Request Pending, and once the ACK brings the answer the call goes on. Both
/// used to be answered 200, our offer left unanswered beside a second negotiation.
#[test]
fn offers_while_the_answer_to_ours_is_owed_get_491() {
    let fed = federation();
    let rt = runtime();
    let app = rt.block_on(start_app(&fed));
    let handler = take_call_reading_messages(&rt, &app);
    let name = "alice-reinvite-overlap";
    let uac = alice_calls_the_bot(&fed, name, scenarios::UAC_IM_REINVITE_OVERLAP, &[]);
    let seen = rt
        .block_on(bounded("the application's side", handler))
        .expect("the handler did not panic");
    rt.block_on(app.stop());
    let t = trace(&uac.messages);
    assert_eq!(count(&t, |m| !m.sent && m.is_response(491, "INVITE")), 1);
    assert_eq!(count(&t, |m| !m.sent && m.is_response(491, "UPDATE")), 1);
    assert_eq!(seen.texts, vec!["after the refused offers".to_string()]);
    assert!(
        matches!(seen.reason, Some(TerminationReason::Remote { .. })),
        "{:?}",
        seen.reason
    );
}

// ---------------------------------------------------------------------------------------
// 4: impersonation, as the far side sees it.
// ---------------------------------------------------------------------------------------

/// Places an IM call as `impersonate` (applied to the conversation), ends it, and returns
/// SIPp's trace.
fn impersonated_call<H: Homing>(
    at: Deployment,
    user: &str,
    remote: Address<H>,
    scenario: &str,
    impersonate: impl FnOnce(&Conversation<H>) -> Result<(), CallError>,
) -> Vec<Traced> {
    let fed = federation();
    let name = format!("{user}-impersonated");
    let uas = start_uas(&fed, uas_run(&fed, &name, scenario, user), at, user);
    let rt = runtime();
    let app = rt.block_on(async {
        let app = start_app(&fed).await;
        let conv = Conversation::new(&app.bot, remote);
        impersonate(&conv).expect("an application endpoint may impersonate");
        let call = conv.instant_messaging_call();
        let _flow = bounded("establishing the IM call", call.establish())
            .await
            .unwrap_or_else(|e| panic!("establish: {e:?}\n{}", fed.log_tails(30)));
        bounded("BYE", call.terminate())
            .await
            .unwrap_or_else(|e| panic!("BYE: {e:?}"));
        app
    });
    let out = succeeded(&fed, &name, uas);
    rt.block_on(app.stop());
    trace(&out.messages)
}

/// The home user the application speaks as.
fn ceo() -> Address<OnPremises> {
    Address::assume_on_premises("sip:ceo@contoso.test").unwrap()
}

#[test]
fn impersonation_toward_a_federated_user_arrives_as_the_uri_only() {
    // The scenario itself fails unless From is <sip:ceo@contoso.test> without a display
    // name and no P-Asserted-Identity arrived at fabrikam.
    let t = impersonated_call(
        Deployment::Fabrikam,
        "bob",
        bob(),
        scenarios::UAS_IM_FROM_CEO_URI_ONLY,
        |c| c.impersonate(&ceo()),
    );
    let invite = t
        .iter()
        .find(|m| !m.sent && m.is_request("INVITE"))
        .expect("the INVITE reached bob");
    let from = invite.header("From").unwrap_or_default();
    assert!(from.starts_with("<sip:ceo@contoso.test>;tag="), "{from}");
    assert!(
        invite.headers("P-Asserted-Identity").is_empty(),
        "{invite:?}"
    );
}

#[test]
fn impersonation_toward_a_home_user_arrives_with_display_name_and_pai() {
    // The scenario fails unless From and P-Asserted-Identity both carry "The CEO".
    let t = impersonated_call(
        Deployment::Contoso,
        "alice",
        alice(),
        scenarios::UAS_IM_FROM_CEO_WITH_PAI,
        |c| c.impersonate(&ceo(), "The CEO"),
    );
    let invite = t
        .iter()
        .find(|m| !m.sent && m.is_request("INVITE"))
        .expect("the INVITE reached alice");
    let from = invite.header("From").unwrap_or_default();
    assert!(
        from.starts_with("\"The CEO\" <sip:ceo@contoso.test>;tag="),
        "{from}"
    );
    assert_eq!(
        invite.headers("P-Asserted-Identity"),
        vec!["\"The CEO\" <sip:ceo@contoso.test>"]
    );
}

// ---------------------------------------------------------------------------------------
// 5: failures.
// ---------------------------------------------------------------------------------------

#[test]
fn a_busy_user_declines_with_486() {
    let fed = federation();
    let name = "alice-busy";
    let uas = start_uas(
        &fed,
        uas_run(&fed, name, scenarios::UAS_IM_BUSY, "alice"),
        Deployment::Contoso,
        "alice",
    );
    let rt = runtime();
    let app = rt.block_on(async {
        let app = start_app(&fed).await;
        let call = Conversation::new(&app.bot, alice()).instant_messaging_call();
        match bounded("establishing the IM call", call.establish()).await {
            // What the callee said about why came through Kamailio to the caller.
            Err(e @ CallError::Declined { status: 486, .. }) => assert_eq!(
                e.to_string(),
                "declined: 486 Busy Here (ms-diagnostics 9999: \"Busy in another call\")"
            ),
            other => panic!("expected Declined 486, got {other:?}"),
        }
        assert_eq!(call.state(), ConversationState::Terminated);
        app
    });
    let out = succeeded(&fed, name, uas);
    rt.block_on(app.stop());
    let t = trace(&out.messages);
    assert_eq!(count(&t, |m| m.sent && m.is_response(486, "INVITE")), 1);
    assert_eq!(count(&t, |m| !m.sent && m.is_request("ACK")), 1);
}

/// A call nobody answers. Kamailio's fr_inv_timer (30 s) and Timer B (32 s) are longer
/// than a step may wait here, so the application cancels after the ringing: the INVITE
/// ends `Cancelled`, and SIPp received the CANCEL and answered it and the INVITE (487).
#[test]
fn a_ringing_call_is_cancelled_and_the_user_answers_487() {
    let fed = federation();
    let name = "alice-ringing";
    let uas = start_uas(
        &fed,
        uas_run(&fed, name, scenarios::UAS_IM_RINGING_CANCEL, "alice"),
        Deployment::Contoso,
        "alice",
    );
    let log = messages_log(&fed, name);
    let rt = runtime();
    let app = rt.block_on(async {
        let app = start_app(&fed).await;
        let call = Conversation::new(&app.bot, alice()).instant_messaging_call();
        let c = call.clone();
        let establishing = tokio::spawn(async move { c.establish().await });
        // Ringing: SIPp has sent its 180 (its trace is written as it goes).
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("SIP/2.0 180 Ringing") {
                break;
            }
            assert!(
                started.elapsed() < WAIT,
                "SIPp did not ring within {WAIT:?}\n{}",
                fed.log_tails(30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The 180 is on its way back through contoso; give it a moment to arrive.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(call.state(), ConversationState::Establishing);
        bounded("cancelling", call.cancel()).await;
        let r = bounded("the INVITE's outcome", establishing)
            .await
            .expect("establish did not panic");
        assert!(matches!(r, Err(CallError::Cancelled)), "{r:?}");
        assert_eq!(call.state(), ConversationState::Terminated);
        app
    });
    let out = succeeded(&fed, name, uas);
    rt.block_on(app.stop());
    let t = trace(&out.messages);
    assert_eq!(count(&t, |m| !m.sent && m.is_request("CANCEL")), 1);
    assert_eq!(count(&t, |m| m.sent && m.is_response(200, "CANCEL")), 1);
    assert_eq!(count(&t, |m| m.sent && m.is_response(487, "INVITE")), 1);
    assert_eq!(count(&t, |m| !m.sent && m.is_request("ACK")), 1);
}

/// A call nobody answers, with a ring timeout: after one second of ringing the INVITE is
/// cancelled by the call itself and `establish_within` fails with `NoAnswer`; SIPp received
/// the CANCEL and answered it and the INVITE (487).
#[test]
fn an_unanswered_call_times_out_with_no_answer() {
    let fed = federation();
    let name = "alice-no-answer";
    let uas = start_uas(
        &fed,
        uas_run(&fed, name, scenarios::UAS_IM_RINGING_CANCEL, "alice"),
        Deployment::Contoso,
        "alice",
    );
    let rt = runtime();
    let app = rt.block_on(async {
        let app = start_app(&fed).await;
        let call = Conversation::new(&app.bot, alice()).instant_messaging_call();
        let started = Instant::now();
        let r = bounded(
            "the unanswered call",
            call.establish_within(Duration::from_secs(1)),
        )
        .await;
        assert!(matches!(r, Err(CallError::NoAnswer)), "{r:?}");
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "gave up too early"
        );
        assert_eq!(call.state(), ConversationState::Terminated);
        app
    });
    let out = succeeded(&fed, name, uas);
    rt.block_on(app.stop());
    let t = trace(&out.messages);
    assert_eq!(count(&t, |m| !m.sent && m.is_request("CANCEL")), 1);
    assert_eq!(count(&t, |m| m.sent && m.is_response(487, "INVITE")), 1);
    assert_eq!(count(&t, |m| !m.sent && m.is_request("ACK")), 1);
}

/// Waits until the call watched by `state` is over.
async fn terminated(state: &mut watch::Receiver<ConversationState>) {
    bounded(
        "the call to end",
        state.wait_for(|s| *s == ConversationState::Terminated),
    )
    .await
    .expect("the call's state is watched");
}

#[test]
fn after_the_users_bye_messages_end_and_the_dialog_is_gone() {
    let fed = federation();
    let name = "alice-hangs-up";
    let uas = start_uas(
        &fed,
        uas_run(&fed, name, scenarios::UAS_IM_PEER_BYE, "alice"),
        Deployment::Contoso,
        "alice",
    );
    let rt = runtime();
    let app = rt.block_on(async {
        let app = start_app(&fed).await;
        let call = Conversation::new(&app.bot, alice()).instant_messaging_call();
        let mut flow: InstantMessagingFlow = bounded("establishing the IM call", call.establish())
            .await
            .unwrap_or_else(|e| panic!("establish: {e:?}\n{}", fed.log_tails(30)));
        terminated(&mut call.watch_state()).await;
        // Why the user hung up (the BYE's Reason) came through Kamailio to the caller.
        assert_eq!(
            call.termination_reason().map(|r| r.to_string()),
            Some(
                "ended by the remote party (BYE) (reason Q.850 16: \"Normal call clearing\")"
                    .into()
            )
        );
        // The dialog is already gone here: a definite outcome without sending.
        assert!(matches!(
            bounded("a MESSAGE after the BYE", flow.send_text("too late")).await,
            Err(MessageError::CallEnded)
        ));
        assert!(bounded("the end of the flow", flow.recv()).await.is_none());
        // Ending an ended call is fine and sends nothing.
        bounded("terminate", call.terminate()).await.unwrap();
        app
    });
    // The scenario fails unless its MESSAGE after its own BYE got 481 from the application.
    let out = succeeded(&fed, name, uas);
    rt.block_on(app.stop());
    let t = trace(&out.messages);
    assert_eq!(count(&t, |m| m.sent && m.is_request("BYE")), 1);
    assert_eq!(count(&t, |m| !m.sent && m.is_response(200, "BYE")), 1);
    assert_eq!(count(&t, |m| m.sent && m.is_request("MESSAGE")), 1);
    assert_eq!(count(&t, |m| !m.sent && m.is_response(481, "MESSAGE")), 1);
    assert_eq!(
        count(&t, |m| !m.sent && m.is_request("MESSAGE")),
        0,
        "nothing was sent after the BYE"
    );
}

/// The user hangs up while a MESSAGE is in flight: SIPp answers five MESSAGEs, holds the
/// sixth, sends BYE and, once the BYE is answered, answers the held MESSAGE 481. The
/// application sends one MESSAGE at a time (SIPp takes one message of a call at a time;
/// see [`bye_racing_many_concurrent_messages_gives_each_exactly_one_outcome`] for the
/// concurrent race): each send has exactly one outcome, the one in flight ends
/// `CallEnded` (the BYE came first), and SIPp's 200s are exactly the application's `Ok`s.
#[test]
fn a_message_in_flight_when_the_user_hangs_up_ends_call_ended_and_the_counts_agree() {
    const BEFORE_BYE: usize = 5;
    let fed = federation();
    let name = "alice-bye-in-flight";
    let uas = start_uas(
        &fed,
        uas_run(&fed, name, scenarios::UAS_IM_BYE_AMID_MESSAGES, "alice")
            .arg("-set")
            .arg("before_bye")
            .arg(&BEFORE_BYE.to_string()),
        Deployment::Contoso,
        "alice",
    );
    let rt = runtime();
    let (app, outcomes) = rt.block_on(async {
        let app = start_app(&fed).await;
        let call = Conversation::new(&app.bot, alice()).instant_messaging_call();
        let mut flow = bounded("establishing the IM call", call.establish())
            .await
            .unwrap_or_else(|e| panic!("establish: {e:?}\n{}", fed.log_tails(30)));
        let mut outcomes = Vec::new();
        for i in 0.. {
            assert!(i <= BEFORE_BYE, "the BYE did not stop the messages");
            let r = bounded(
                "a MESSAGE's outcome",
                flow.send_text(&format!("message {i}")),
            )
            .await;
            let last = r.is_err();
            outcomes.push(r);
            if last {
                break;
            }
        }
        terminated(&mut call.watch_state()).await;
        assert!(matches!(
            flow.send_text("after the end").await,
            Err(MessageError::CallEnded)
        ));
        assert!(bounded("the end of the flow", flow.recv()).await.is_none());
        (app, outcomes)
    });
    let out = succeeded(&fed, name, uas);
    rt.block_on(app.stop());
    let delivered = outcomes.iter().filter(|r| r.is_ok()).count();
    assert_eq!(delivered, BEFORE_BYE, "{outcomes:?}");
    assert!(
        matches!(outcomes.last(), Some(Err(MessageError::CallEnded))),
        "the MESSAGE in flight ends with the call: {outcomes:?}"
    );
    let t = trace(&out.messages);
    let got = count(&t, |m| !m.sent && m.is_request("MESSAGE"));
    let ok = count(&t, |m| m.sent && m.is_response(200, "MESSAGE"));
    let gone = count(&t, |m| m.sent && m.is_response(481, "MESSAGE"));
    assert_eq!(ok, delivered, "an Ok for each 200 from SIPp, and no other");
    assert_eq!(gone, 1, "the MESSAGE in flight was answered 481");
    assert_eq!(got, ok + gone, "nothing was sent after the call ended");
    assert_eq!(count(&t, |m| m.sent && m.is_request("BYE")), 1);
    assert_eq!(count(&t, |m| !m.sent && m.is_response(200, "BYE")), 1);
}

/// The concurrent race, against a peer that takes pipelined requests: alice is a
/// [`UserEndpoint`] on a second platform, registered at contoso with digest; every request
/// between the bot and her crosses the contoso front end (SIPp cannot be this peer: it
/// aborts a call when a request arrives before it answered the previous one). The bot
/// fires many MESSAGEs at once; alice reads a few and hangs up. Every send gets exactly one
/// outcome, and what alice received is exactly what the bot was told was delivered.
#[test]
fn bye_racing_many_concurrent_messages_gives_each_exactly_one_outcome() {
    const SENDS: usize = 200;
    const BEFORE_BYE: usize = 5;
    let fed = federation();
    let rt = runtime();
    let wire = Wire::default();
    rt.block_on(async {
        let app = start_app_with(&fed, settings(&fed).observer(wire.0.as_observer())).await;
        let peer = bounded(
            "starting alice's platform",
            CollaborationPlatform::start(settings(&fed)),
        )
        .await
        .unwrap_or_else(|e| panic!("alice's platform: {e}"));
        let alice_endpoint = UserEndpoint::new(
            &peer,
            UserEndpointSettings::new(alice(), Credentials::new("alice", "alice-secret")),
        );
        bounded("alice registers", alice_endpoint.establish())
            .await
            .unwrap_or_else(|e| panic!("alice: {e}\n{}", fed.log_tails(30)));
        let mut calls = incoming_im_calls(&alice_endpoint);
        let alice_side = tokio::spawn(async move {
            let incoming = bounded("alice's incoming call", calls.next())
                .await
                .expect("the stream is open");
            assert_eq!(incoming.caller_uri(), BOT);
            let IncomingImCall::OnPremises(c) = incoming else {
                panic!("the bot is a home identity")
            };
            let call = c.call().clone();
            let mut flow = bounded("alice accepts", c.accept())
                .await
                .unwrap_or_else(|e| panic!("accept: {e:?}"));
            let mut received = 0usize;
            while received < BEFORE_BYE {
                bounded("a message at alice", flow.recv())
                    .await
                    .expect("the call is up");
                received += 1;
            }
            bounded("alice hangs up", call.terminate())
                .await
                .unwrap_or_else(|e| panic!("alice's BYE: {e:?}"));
            // What was queued before the BYE is still read; then the stream ends.
            while let Some(_m) = bounded("the rest at alice", flow.recv()).await {
                received += 1;
            }
            received
        });
        let call = Conversation::new(&app.bot, alice()).instant_messaging_call();
        let flow = bounded("establishing the IM call", call.establish())
            .await
            .unwrap_or_else(|e| panic!("establish: {e:?}\n{}", fed.log_tails(30)));
        let sender = flow.sender();
        let mut sends = tokio::task::JoinSet::new();
        for i in 0..SENDS {
            let s = sender.clone();
            sends.spawn(async move { s.send_text(&format!("message {i}")).await });
        }
        let (mut delivered, mut ended, mut failed) = (0usize, 0usize, 0usize);
        while let Some(r) = bounded("a MESSAGE's outcome", sends.join_next()).await {
            match r.expect("the send did not panic") {
                Ok(()) => delivered += 1,
                Err(MessageError::CallEnded) => ended += 1,
                // Crossing the BYE before the bot read it: alice forgot the dialog already.
                Err(MessageError::Failed { status: 481, .. }) => failed += 1,
                Err(e) => panic!("unexpected outcome {e:?}\n{}", fed.log_tails(30)),
            }
        }
        let received = bounded("alice's side", alice_side)
            .await
            .expect("alice's side did not panic");
        eprintln!(
            "{SENDS} sends: {delivered} delivered, {ended} call ended, {failed} 481; \
             alice received {received}"
        );
        assert_eq!(delivered + ended + failed, SENDS, "one outcome per message");
        assert!(ended + failed > 0, "the BYE raced some messages");
        assert_eq!(
            received, delivered,
            "every delivered message was received, and no other"
        );
        let mut state = call.watch_state();
        let ended = tokio::time::timeout(
            WAIT,
            state.wait_for(|s| *s == ConversationState::Terminated),
        )
        .await;
        assert!(
            matches!(ended, Ok(Ok(_))),
            "the bot's call is still {:?} {WAIT:?} after alice's BYE; the bot's platform:\n{}",
            call.state(),
            wire.endings()
        );
        bounded("alice unregisters", alice_endpoint.terminate()).await;
        bounded("alice's platform stops", peer.shutdown()).await;
        app.stop().await;
    });
}
