//! IM conversations between two platforms on loopback over mutual TLS (no server): the
//! call and flow end to end — establish, messages both ways with their outcomes, typing,
//! first message in the INVITE, decline, cancel while ringing, BYE racing messages, a
//! dialog lost to a MESSAGE answered 481 or 408 or not at all, an INVITE without an offer
//! answered in the ACK, calls whose every handle was dropped, an offered call terminated
//! before `accept`.

use std::time::Duration;

use application_endpoint::{ApplicationEndpoint, ApplicationEndpointSettings, Endpoint, Modality};
use collaboration_platform::loopback::{pair, LoopbackPki};
use collaboration_platform::{
    Address, CollaborationPlatform, Federated, OnPremises, OutgoingRequest, RequestError,
    ServerPlatformSettings, Topology,
};
use conversation::{
    incoming_im_calls, CallError, Conversation, ConversationState, IncomingImCall, IncomingImCalls,
    InstantMessagingCall, InstantMessagingFlow, MessageError, TerminationReason, ACCEPT_TYPES,
};
use sip_core::sdp::{LocalCapabilities, MediaCapability, OfferAnswer, SessionDescription};
use sip_core::transaction::TransactionConfig;
use sip_core::{HeaderName, Method};

const WAIT: Duration = Duration::from_secs(10);

struct Pair {
    _a: CollaborationPlatform,
    _b: CollaborationPlatform,
    bot: ApplicationEndpoint,
    alice: ApplicationEndpoint,
}

async fn setup() -> Pair {
    setup_with(transport_tls::TransportSettings::new()).await
}

/// Both platforms with these transport settings.
async fn setup_with(transport: transport_tls::TransportSettings) -> Pair {
    setup_configured(|_, s| s.transport(transport.clone())).await
}

/// The bot on `app.contoso.test`, alice on `alice.contoso.test`, each platform's settings
/// passed through `configure` (with its FQDN) before it starts.
async fn setup_configured(
    configure: impl Fn(&str, ServerPlatformSettings) -> ServerPlatformSettings,
) -> Pair {
    let pki = LoopbackPki::new().unwrap();
    let (a, b) = pair(&pki, "app.contoso.test", "alice.contoso.test", |me, s| {
        configure(me, s.topology(Topology::new(["contoso.test"])))
    })
    .await
    .unwrap();
    let bot = ApplicationEndpoint::new(
        &a,
        ApplicationEndpointSettings::new(on_prem("sip:bot@contoso.test")).display_name("Bot"),
    );
    let alice = ApplicationEndpoint::new(
        &b,
        ApplicationEndpointSettings::new(on_prem("sip:alice@contoso.test")),
    );
    bot.establish().await.unwrap();
    alice.establish().await.unwrap();
    Pair {
        _a: a,
        _b: b,
        bot,
        alice,
    }
}

fn on_prem(uri: &str) -> Address<OnPremises> {
    Address::assume_on_premises(uri).unwrap()
}

async fn next_call(calls: &mut IncomingImCalls) -> IncomingImCall {
    tokio::time::timeout(WAIT, calls.next())
        .await
        .expect("an incoming call within the wait")
        .expect("stream open")
}

/// The bot calls alice, who lets it ring: the call, its `establish` running in a task, and
/// the call as alice holds it, unanswered.
async fn ringing_call(
    p: &Pair,
) -> (
    InstantMessagingCall<OnPremises>,
    tokio::task::JoinHandle<Result<InstantMessagingFlow, CallError>>,
    IncomingImCall,
) {
    let mut calls = incoming_im_calls(&p.alice);
    let call =
        Conversation::new(&p.bot, on_prem("sip:alice@contoso.test")).instant_messaging_call();
    let c2 = call.clone();
    let establishing = tokio::spawn(async move { c2.establish().await });
    let held = next_call(&mut calls).await;
    (call, establishing, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_with_messages_both_ways_typing_and_bye() {
    let p = setup().await;
    let mut calls = incoming_im_calls(&p.alice);
    let conv =
        Conversation::new(&p.bot, on_prem("sip:alice@contoso.test")).with_subject("status report");
    let call = conv.instant_messaging_call();
    let callee = tokio::spawn(async move {
        let incoming = next_call(&mut calls).await;
        assert_eq!(incoming.homing(), "on-premises");
        assert_eq!(incoming.caller_uri(), "sip:bot@contoso.test");
        let IncomingImCall::OnPremises(c) = incoming else {
            panic!("typed by homing")
        };
        let conv_id = c.conversation().id().to_string();
        assert_eq!(c.conversation().subject(), Some("status report"));
        let first = c
            .first_message()
            .cloned()
            .expect("first message in the INVITE");
        assert_eq!(first.text(), "hi alice");
        let mut flow = c.accept().await.unwrap();
        // The first message comes out of the flow first.
        assert_eq!(flow.recv().await.unwrap().text(), "hi alice");
        let mut typing = flow.remote_typing();
        let m = flow.recv().await.unwrap();
        assert_eq!(m.text(), "how are you?");
        assert!(m.content_type.starts_with("text/plain"));
        let html = flow.recv().await.unwrap();
        assert_eq!(html.content_type, "text/html");
        // The bot types: the watch goes true, then false when its message arrives.
        tokio::time::timeout(WAIT, typing.wait_for(|t| *t))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(flow.recv().await.unwrap().text(), "done typing");
        assert!(!*typing.borrow());
        flow.send_text("fine, thanks").await.unwrap();
        // The bot hangs up: the stream ends.
        assert!(tokio::time::timeout(WAIT, flow.recv())
            .await
            .unwrap()
            .is_none());
        conv_id
    });
    let mut flow = call.establish_with_message("hi alice").await.unwrap();
    assert_eq!(call.state(), ConversationState::Established);
    assert_eq!(conv.state(), ConversationState::Established);
    flow.send_text("how are you?").await.unwrap();
    flow.send("text/html", "<b>bold</b>").await.unwrap();
    flow.set_typing(true).await.unwrap();
    flow.send_text("done typing").await.unwrap();
    let reply = tokio::time::timeout(WAIT, flow.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.text(), "fine, thanks");
    call.terminate().await.unwrap();
    assert_eq!(call.state(), ConversationState::Terminated);
    // The callee saw the same conversation id.
    let conv_id = tokio::time::timeout(WAIT, callee).await.unwrap().unwrap();
    assert_eq!(conv_id, conv.id());
    // After the call ended a message has a definite outcome without being sent.
    assert!(matches!(
        flow.send_text("too late").await,
        Err(MessageError::CallEnded)
    ));
}

/// The callee hangs up through the flow, all an accepted incoming call leaves it: the
/// caller gets the BYE, both ends are Terminated, and a second hang-up is a no-op.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_call_is_hung_up_through_its_flow() {
    let p = setup().await;
    let mut calls = incoming_im_calls(&p.alice);
    let call =
        Conversation::new(&p.bot, on_prem("sip:alice@contoso.test")).instant_messaging_call();
    let callee = tokio::spawn(async move {
        let flow = next_call(&mut calls).await.accept().await.unwrap();
        flow.terminate().await.unwrap();
        assert!(matches!(
            flow.termination_reason(),
            Some(TerminationReason::Local)
        ));
        flow.terminate().await.unwrap();
    });
    // The callee's BYE waits for our ACK (RFC 3261 §15), but may still be taken before
    // `establish` returns: then it says the call `Ended`.
    match call.establish().await {
        Ok(mut flow) => assert!(tokio::time::timeout(WAIT, flow.recv())
            .await
            .expect("the callee's BYE ends the flow")
            .is_none()),
        Err(CallError::Ended) => {}
        Err(e) => panic!("{e:?}"),
    }
    tokio::time::timeout(WAIT, callee).await.unwrap().unwrap();
    assert_eq!(call.state(), ConversationState::Terminated);
    assert!(matches!(
        call.termination_reason(),
        Some(TerminationReason::Remote { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decline_with_a_chosen_status() {
    let p = setup().await;
    let mut calls = incoming_im_calls(&p.alice);
    tokio::spawn(async move {
        next_call(&mut calls).await.decline(486).await;
    });
    let call =
        Conversation::new(&p.bot, on_prem("sip:alice@contoso.test")).instant_messaging_call();
    match call.establish().await {
        Err(CallError::Declined { status: 486, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(call.state(), ConversationState::Terminated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_handler_means_488_and_cancel_while_ringing() {
    let p = setup().await;
    // Alice takes no IM calls: 488 from her endpoint's router.
    let call =
        Conversation::new(&p.bot, on_prem("sip:alice@contoso.test")).instant_messaging_call();
    assert!(matches!(
        call.establish().await,
        Err(CallError::NotAcceptable(_))
    ));
    // Now she has a handler that never answers: the caller cancels.
    // Ringing: the INVITE is at alice (her platform answered 100 Trying).
    let (call, establishing, held) = ringing_call(&p).await;
    call.cancel().await;
    let r = tokio::time::timeout(WAIT, establishing)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(r, Err(CallError::Cancelled)), "{r:?}");
    // Alice's late accept is refused: the caller cancelled, her platform answered 487.
    assert!(held.request().is_cancelled());
    let late = held.accept().await;
    assert!(matches!(late, Err(CallError::Cancelled)), "{late:?}");
}

/// Terminating an endpoint ends its calls: the call says why, its flow's stream ends,
/// and the peer gets BYE. (Before, the call stayed Established on both sides for ever.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminating_an_endpoint_ends_its_calls_with_a_bye() {
    let p = setup().await;
    let mut calls = incoming_im_calls(&p.alice);
    let callee = tokio::spawn(async move {
        let mut flow = next_call(&mut calls).await.accept().await.unwrap();
        tokio::time::timeout(WAIT, async { while flow.recv().await.is_some() {} })
            .await
            .expect("the bot's BYE ends alice's flow");
        flow.termination_reason()
    });
    let call =
        Conversation::new(&p.bot, on_prem("sip:alice@contoso.test")).instant_messaging_call();
    let mut flow = call.establish().await.unwrap();
    p.bot.terminate().await;
    assert_eq!(call.state(), ConversationState::Terminated);
    assert!(matches!(
        call.termination_reason(),
        Some(TerminationReason::EndpointTerminated)
    ));
    let ended = tokio::time::timeout(WAIT, flow.recv()).await;
    assert!(matches!(ended, Ok(None)), "the bot's flow still open");
    let there = tokio::time::timeout(WAIT, callee).await.unwrap().unwrap();
    assert!(
        matches!(there, Some(TerminationReason::Remote { .. })),
        "{there:?}"
    );
}

/// Runs `fut` on a thread of its own, whose tracing events are watched: at the event
/// with the message `pause_at` that thread stops until `resume` is told (or the wait
/// runs out). The platforms run on the test's runtime meanwhile, so a race the
/// scheduler decides rarely (the peer's BYE overtaking a step of `accept` or
/// `establish`) is decided the same way every run.
fn run_paused_at<F>(
    pause_at: &'static str,
    resume: std::sync::mpsc::Receiver<()>,
    fut: F,
) -> tokio::sync::oneshot::Receiver<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    use tracing_subscriber::layer::SubscriberExt;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let pause = PauseAt {
            message: pause_at,
            resume: std::sync::Mutex::new(resume),
        };
        let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(pause));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _ = tx.send(rt.block_on(fut));
    });
    rx
}

/// The tracing layer of [`run_paused_at`].
struct PauseAt {
    message: &'static str,
    resume: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PauseAt {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if f.name() == "message" {
                    self.0 = format!("{v:?}");
                }
            }
        }
        let mut m = Message(String::new());
        event.record(&mut m);
        if m.0 == self.message {
            let _ = self.resume.lock().unwrap().recv_timeout(WAIT);
        }
    }
}

/// The texts `flow` yields until it ends (or a wait passes with nothing).
async fn texts_until_the_end(flow: &mut InstantMessagingFlow) -> Vec<String> {
    let mut texts = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(WAIT, flow.recv()).await {
        texts.push(m.text().to_string());
    }
    texts
}

/// A caller that sends a message and hangs up the moment the call is up, its BYE taken
/// before `accept` has returned: the call was accepted all the same (our 200 went out,
/// the message was answered 200), so `accept` gives the flow, which yields the message
/// and then ends with the caller's reason. (Before, `accept` failed with `Ended` and a
/// message the caller was told had been delivered was lost: CI saw it once, under load.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_hanging_up_before_accept_returns_leaves_the_flow_and_its_messages() {
    let p = setup().await;
    let mut calls = incoming_im_calls(&p.alice);
    let (resume, resumed) = std::sync::mpsc::channel();
    let callee = tokio::spawn(async move {
        let next = next_call(&mut calls).await;
        run_paused_at("IM call accepted: the 200 is out", resumed, async move {
            let mut flow = next.accept().await?;
            let texts = texts_until_the_end(&mut flow).await;
            Ok::<_, CallError>((texts, flow.termination_reason()))
        })
        .await
        .unwrap()
    });
    let call =
        Conversation::new(&p.bot, on_prem("sip:alice@contoso.test")).instant_messaging_call();
    let flow = call.establish().await.unwrap();
    flow.send_text("one thing, then bye").await.unwrap();
    call.terminate().await.unwrap();
    resume.send(()).unwrap();
    let (texts, reason) = tokio::time::timeout(WAIT, callee)
        .await
        .unwrap()
        .unwrap()
        .expect("accepted, and ended since");
    assert_eq!(texts, ["one thing, then bye"]);
    assert!(
        matches!(reason, Some(TerminationReason::Remote { .. })),
        "{reason:?}"
    );
}

/// The same on the caller's side: a callee that answers, sends a message and hangs up,
/// its BYE taken before `establish` has seen the 200. The 200 confirmed the call, so
/// `establish` gives the flow, with the message, ended by the callee.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_hanging_up_before_establish_returns_leaves_the_flow_and_its_messages() {
    let p = setup().await;
    let mut calls = incoming_im_calls(&p.alice);
    let (resume, resumed) = std::sync::mpsc::channel();
    let call =
        Conversation::new(&p.bot, on_prem("sip:alice@contoso.test")).instant_messaging_call();
    let caller = {
        let call = call.clone();
        run_paused_at("IM call answered", resumed, async move {
            let mut flow = call.establish().await?;
            let texts = texts_until_the_end(&mut flow).await;
            Ok::<_, CallError>(texts)
        })
    };
    let flow = next_call(&mut calls).await.accept().await.unwrap();
    flow.send_text("answered, said this, gone").await.unwrap();
    flow.terminate().await.unwrap();
    resume.send(()).unwrap();
    let texts = tokio::time::timeout(WAIT, caller)
        .await
        .unwrap()
        .unwrap()
        .expect("established, and ended since");
    assert_eq!(texts, ["answered, said this, gone"]);
    assert!(
        matches!(
            call.termination_reason(),
            Some(TerminationReason::Remote { .. })
        ),
        "{:?}",
        call.termination_reason()
    );
}

/// A call still ringing when its endpoint terminates is cancelled: the callee stops
/// ringing instead of being able to answer a caller who is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ringing_call_is_cancelled_when_its_endpoint_terminates() {
    let p = setup().await;
    let (call, establishing, held) = ringing_call(&p).await;
    p.bot.terminate().await;
    let r = tokio::time::timeout(WAIT, establishing)
        .await
        .unwrap()
        .unwrap();
    assert!(r.is_err(), "established after its endpoint ended");
    assert!(matches!(
        call.termination_reason(),
        Some(TerminationReason::EndpointTerminated)
    ));
    tokio::time::timeout(WAIT, async {
        while !held.request().is_cancelled() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the callee got the CANCEL");
}

/// A platform shut down under a call ends it on both sides: its flow's stream ends instead
/// of waiting for ever on an endpoint that is Terminated, and the BYE reaches the peer
/// before the platform stops (the shutdown waits for its endpoints to end their calls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_shut_down_under_a_call_ends_it_on_both_sides() {
    let p = setup().await;
    let mut calls = incoming_im_calls(&p.alice);
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
    let callee = tokio::spawn(async move {
        let c = next_call(&mut calls).await;
        let call = match &c {
            IncomingImCall::OnPremises(c) => c.call().clone(),
            IncomingImCall::Federated(_) => unreachable!(),
        };
        let mut flow = c.accept().await.unwrap();
        let end = flow.recv().await;
        let _ = ended_tx.send((end.is_none(), call.termination_reason()));
    });
    let call =
        Conversation::new(&p.bot, on_prem("sip:alice@contoso.test")).instant_messaging_call();
    let mut flow = call.establish().await.unwrap();
    let report = p._a.shutdown().await;
    assert_eq!(report.cancelled, 0, "the BYE was cut short: {report:?}");
    let ended = tokio::time::timeout(WAIT, flow.recv()).await;
    assert!(matches!(ended, Ok(None)), "the flow still open");
    assert_eq!(call.state(), ConversationState::Terminated);
    assert!(matches!(
        call.termination_reason(),
        Some(TerminationReason::EndpointTerminated)
    ));
    let (closed, reason) = tokio::time::timeout(WAIT, ended_rx)
        .await
        .expect("the callee's call did not end: no BYE reached it")
        .unwrap();
    assert!(closed, "the callee's flow gave a message, not its end");
    assert!(
        matches!(reason, Some(TerminationReason::Remote { .. })),
        "{reason:?}"
    );
    callee.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_while_ringing_cancels_the_invite() {
    let p = setup().await;
    let (call, establishing, held) = ringing_call(&p).await;
    // Not `cancel`: an application ending the call it started, still ringing.
    call.terminate().await.unwrap();
    let r = tokio::time::timeout(WAIT, establishing)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(r, Err(CallError::Cancelled)), "{r:?}");
    // The callee's side got the CANCEL: it stops ringing, and a late accept is refused.
    assert!(held.request().is_cancelled());
    assert!(matches!(held.accept().await, Err(CallError::Cancelled)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bye_racing_messages_gives_each_message_exactly_one_outcome() {
    let p = setup().await;
    let mut calls = incoming_im_calls(&p.alice);
    let (count_tx, count_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let c = next_call(&mut calls).await;
        let call = match &c {
            IncomingImCall::OnPremises(c) => c.call().clone(),
            IncomingImCall::Federated(_) => unreachable!(),
        };
        let mut flow = c.accept().await.unwrap();
        // Read a few, then hang up while the caller is still sending.
        let mut received = 0usize;
        while received < 5 {
            flow.recv().await.unwrap();
            received += 1;
        }
        call.terminate().await.unwrap();
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), flow.recv()).await
        {
            received += 1;
        }
        let _ = count_tx.send(received);
    });
    let call =
        Conversation::new(&p.bot, on_prem("sip:alice@contoso.test")).instant_messaging_call();
    let flow = call.establish().await.unwrap();
    let sender = flow.sender();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..200 {
        let s = sender.clone();
        sends.spawn(async move { s.send_text(&format!("message {i}")).await });
        if i % 10 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let (mut delivered, mut ended, mut failed) = (0usize, 0usize, 0usize);
    while let Some(r) = tokio::time::timeout(WAIT, sends.join_next()).await.unwrap() {
        match r.unwrap() {
            Ok(()) => delivered += 1,
            Err(MessageError::CallEnded) => ended += 1,
            Err(MessageError::Failed { status, .. }) => {
                // Crossing the BYE: the peer already forgot the dialog.
                assert_eq!(status, 481);
                failed += 1
            }
            Err(e) => panic!("unexpected outcome {e:?}"),
        }
    }
    assert_eq!(delivered + ended + failed, 200, "one outcome per message");
    assert!(ended + failed > 0, "the BYE raced some messages");
    let received = tokio::time::timeout(WAIT, count_rx).await.unwrap().unwrap();
    assert_eq!(
        received, delivered,
        "every delivered message was received, no other"
    );
    assert_eq!(call.state(), ConversationState::Terminated);
}

/// Alice at fabrikam: the bot's platform (home contoso.test) sees her as federated, hers
/// (home fabrikam.test) sees the bot as federated.
async fn setup_federated() -> Pair {
    let pki = LoopbackPki::new().unwrap();
    let (a, b) = pair(&pki, "app.contoso.test", "alice.fabrikam.test", |me, s| {
        if me.ends_with("contoso.test") {
            s.topology(Topology::new(["contoso.test"]))
        } else {
            s.topology(Topology::new(["fabrikam.test"]))
        }
    })
    .await
    .unwrap();
    let bot = ApplicationEndpoint::new(
        &a,
        ApplicationEndpointSettings::new(on_prem("sip:bot@contoso.test")).display_name("Bot"),
    );
    let alice = ApplicationEndpoint::new(
        &b,
        ApplicationEndpointSettings::new(on_prem("sip:alice@fabrikam.test")),
    );
    bot.establish().await.unwrap();
    alice.establish().await.unwrap();
    Pair {
        _a: a,
        _b: b,
        bot,
        alice,
    }
}

/// The From and P-Asserted-Identity of the INVITE alice receives, and the caller's homing.
async fn impersonated_invite(
    p: &Pair,
    place: impl std::future::Future<Output = Result<conversation::InstantMessagingFlow, CallError>>,
) -> (String, Option<String>, &'static str) {
    let mut calls = incoming_im_calls(&p.alice);
    let seen = tokio::spawn(async move {
        let c = next_call(&mut calls).await;
        let r = c.request().request();
        let from = String::from_utf8_lossy(r.header(HeaderName::From).unwrap()).into_owned();
        let pai = r
            .header(HeaderName::PAssertedIdentity)
            .map(|v| String::from_utf8_lossy(v).into_owned());
        let homing = c.homing();
        c.decline(603).await;
        (from, pai, homing)
    });
    assert!(matches!(
        place.await,
        Err(CallError::Declined { status: 603, .. })
    ));
    tokio::time::timeout(WAIT, seen).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonation_toward_a_home_user_carries_display_name_and_pai() {
    let p = setup().await;
    let conv = Conversation::new(&p.bot, on_prem("sip:alice@contoso.test"));
    conv.impersonate(&on_prem("sip:ceo@contoso.test"), "The CEO")
        .unwrap();
    let call = conv.instant_messaging_call();
    let (from, pai, homing) = impersonated_invite(&p, call.establish()).await;
    assert!(
        from.starts_with("\"The CEO\" <sip:ceo@contoso.test>;tag="),
        "{from}"
    );
    assert_eq!(pai.as_deref(), Some("\"The CEO\" <sip:ceo@contoso.test>"));
    assert_eq!(homing, "on-premises");
}

/// An address assumed on-premises that the directory knows as cloud-homed (hybrid), or in
/// no home domain, cannot be impersonated: the application would act as a federated user.
/// Nothing is sent; the call keeps its own identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonating_a_cloud_homed_or_foreign_user_is_refused() {
    let p = setup_configured(|_, s| {
        let directory = collaboration_platform::StaticDirectory::new()
            .with_user("sip:carol@contoso.test")
            .unwrap();
        s.topology(Topology::new(["contoso.test"]).with_directory(std::sync::Arc::new(directory)))
    })
    .await;
    let conv = Conversation::new(&p.bot, on_prem("sip:alice@contoso.test"));
    for who in ["sip:carol@contoso.test", "sip:bob@fabrikam.test"] {
        let r = conv.impersonate(&on_prem(who), "Someone else");
        assert!(
            matches!(
                &r,
                Err(CallError::Endpoint(
                    application_endpoint::EndpointError::FederationRestricted { uri, .. }
                )) if uri == who
            ),
            "{who}: {r:?}"
        );
    }
    conv.impersonate(&on_prem("sip:ceo@contoso.test"), "The CEO")
        .expect("a home user may be impersonated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonation_toward_a_federated_party_carries_the_uri_only() {
    let p = setup_federated().await;
    let alice = Address::<Federated>::assume_federated("sip:alice@fabrikam.test").unwrap();
    let conv = Conversation::new(&p.bot, alice);
    conv.impersonate(&on_prem("sip:ceo@contoso.test")).unwrap();
    let call = conv.instant_messaging_call();
    let (from, pai, homing) = impersonated_invite(&p, call.establish()).await;
    assert!(from.starts_with("<sip:ceo@contoso.test>;tag="), "{from}");
    assert_eq!(pai, None);
    assert_eq!(homing, "federated");
}

/// How many isComposing documents with `<state>{state}</state>` the platform `wire`
/// watches sent.
fn composing_sent(wire: &collaboration_platform::WireLog, state: &str) -> usize {
    let needle = format!("<state>{state}</state>");
    wire.matching(|r| {
        r.direction == collaboration_platform::WireDirection::Sent && r.text().contains(&needle)
    })
    .len()
}

/// Waits until the peer's typing state seen by alice is `want`.
async fn wait_typing(rx: &mut tokio::sync::mpsc::UnboundedReceiver<bool>, want: bool) {
    loop {
        let v = tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("typing state within the wait")
            .expect("watch open");
        if v == want {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_is_sent_once_per_refresh_and_idle_only_when_needed() {
    let pki = LoopbackPki::new().unwrap();
    let wire = collaboration_platform::WireLog::new();
    let observer = wire.as_observer();
    let (a, b) = pair(&pki, "app.contoso.test", "alice.contoso.test", |me, s| {
        let s = s.topology(Topology::new(["contoso.test"]));
        if me == "app.contoso.test" {
            s.observer(observer.clone())
        } else {
            s
        }
    })
    .await
    .unwrap();
    let bot = ApplicationEndpoint::new(
        &a,
        ApplicationEndpointSettings::new(on_prem("sip:bot@contoso.test")),
    );
    let alice = ApplicationEndpoint::new(
        &b,
        ApplicationEndpointSettings::new(on_prem("sip:alice@contoso.test")),
    );
    bot.establish().await.unwrap();
    alice.establish().await.unwrap();
    let mut calls = incoming_im_calls(&alice);
    let (typing_tx, mut typing_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let c = next_call(&mut calls).await;
        let mut flow = c.accept().await.unwrap();
        let mut typing = flow.remote_typing();
        tokio::spawn(async move {
            // The current value first: the peer's `active` may have arrived already.
            let _ = typing_tx.send(*typing.borrow_and_update());
            while typing.changed().await.is_ok() {
                let _ = typing_tx.send(*typing.borrow_and_update());
            }
        });
        while flow.recv().await.is_some() {}
    });
    let call = Conversation::new(&bot, on_prem("sip:alice@contoso.test")).instant_messaging_call();
    let flow = call.establish().await.unwrap();
    // Typing keystrokes: one `active`, not one per keystroke.
    for _ in 0..5 {
        flow.set_typing(true).await.unwrap();
    }
    wait_typing(&mut typing_rx, true).await;
    assert_eq!(composing_sent(&wire, "active"), 1);
    // Stopped typing: one `idle`.
    flow.set_typing(false).await.unwrap();
    wait_typing(&mut typing_rx, false).await;
    assert_eq!(composing_sent(&wire, "idle"), 1);
    flow.set_typing(false).await.unwrap();
    assert_eq!(composing_sent(&wire, "idle"), 1, "idle is not repeated");
    // Typing then sending: the message ends composing, no idle is sent.
    flow.set_typing(true).await.unwrap();
    flow.send_text("hi").await.unwrap();
    assert_eq!(composing_sent(&wire, "active"), 2);
    assert_eq!(composing_sent(&wire, "idle"), 1);
    call.terminate().await.unwrap();
}

/// Messages of one call keep their order on the wire when the connection's write queue is
/// full: the platform then queues them on its lane and sends none past it. (Out of order,
/// the callee's dialog would refuse the lower CSeq with 500 and a send would fail.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_keep_their_order_when_the_write_queue_is_full() {
    let p = setup_with(transport_tls::TransportSettings::new().send_queue(1)).await;
    let (bot, alice) = (&p.bot, &p.alice);
    let mut calls = incoming_im_calls(alice);
    let (got_tx, got_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut flow = next_call(&mut calls).await.accept().await.unwrap();
        let mut bodies = Vec::new();
        while bodies.len() < 300 {
            let m = tokio::time::timeout(WAIT, flow.recv())
                .await
                .unwrap()
                .unwrap();
            bodies.push(m.text());
        }
        let _ = got_tx.send(bodies);
    });
    let flow = Conversation::new(bot, on_prem("sip:alice@contoso.test"))
        .instant_messaging_call()
        .establish()
        .await
        .unwrap();
    let sender = flow.sender();
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..300 {
        let s = sender.clone();
        sends.spawn(async move { s.send_text(&format!("message {i}")).await });
    }
    while let Some(r) = tokio::time::timeout(WAIT, sends.join_next()).await.unwrap() {
        r.unwrap()
            .expect("every message delivered (none refused as out of order)");
    }
    let bodies = tokio::time::timeout(WAIT, got_rx).await.unwrap().unwrap();
    assert_eq!(bodies.len(), 300);
}

/// What alice does with the bot's MESSAGE in [`lost_dialog`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Holds it unanswered.
    Never,
    /// Answers it with this status.
    Status(u16),
}

/// The bot calls alice, who answers the INVITE herself (no conversation layer on her side,
/// so she can mistreat what follows), and sends one MESSAGE that alice treats as `answer`
/// says. The bot's transactions use T1 = 50 ms, so no answer means Timer F after 3.2 s.
/// Returns the send's outcome, the call's reason for ending, and whether a BYE reached
/// alice after the MESSAGE.
async fn lost_dialog(
    answer: Answer,
) -> (Result<(), MessageError>, Option<TerminationReason>, bool) {
    let p = setup_configured(|me, s| {
        if me == "app.contoso.test" {
            s.transaction_timers(TransactionConfig {
                t1: Duration::from_millis(50),
                ..TransactionConfig::default()
            })
        } else {
            s
        }
    })
    .await;
    let core = p.alice.core().clone();
    let mut invites = core.incoming(Modality::InstantMessaging);
    let mut pages = core.pages();
    let alice_side = tokio::spawn(async move {
        let mut inv = tokio::time::timeout(WAIT, invites.recv())
            .await
            .unwrap()
            .unwrap();
        let call_id = String::from_utf8_lossy(inv.dialog().unwrap().call_id()).into_owned();
        let mut route = core.route_dialog(&call_id, inv.local_tag());
        let offer = SessionDescription::parse_slice(inv.body()).unwrap();
        let sdp = OfferAnswer::new(
            LocalCapabilities::new("alice.contoso.test")
                .with_media(MediaCapability::message(5060, ACCEPT_TYPES)),
            "0",
        )
        .receive_offer(&offer)
        .unwrap();
        let contact = format!("<{}>", core.contact());
        inv.respond(
            200,
            "OK",
            &[("Contact", &contact)],
            Some(("application/sdp", sdp.to_bytes())),
        )
        .await
        .unwrap();
        let mut m = tokio::time::timeout(WAIT, route.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.request().method(), Some(&Method::Message));
        if let Answer::Status(code) = answer {
            m.respond(code, sip_core::reason_phrase(code), &[], None)
                .await
                .unwrap();
        }
        if answer == Answer::Status(481) {
            // No BYE is expected: the bot sends a page after its send failed, and a BYE
            // sent before it would have reached the route first (one connection, one
            // router, in order).
            let mut page = tokio::time::timeout(WAIT, pages.recv())
                .await
                .unwrap()
                .unwrap();
            page.respond(200, "OK", &[], None).await.unwrap();
            let early = tokio::time::timeout(Duration::ZERO, route.recv()).await;
            return early
                .ok()
                .flatten()
                .and_then(|r| r.request().method().cloned());
        }
        let mut bye = tokio::time::timeout(WAIT, route.recv())
            .await
            .unwrap()
            .unwrap();
        bye.respond(200, "OK", &[], None).await.unwrap();
        drop(m);
        bye.request().method().cloned()
    });
    let conv = Conversation::new(&p.bot, on_prem("sip:alice@contoso.test"));
    let call = conv.instant_messaging_call();
    let flow = call.establish().await.unwrap();
    let dialog = call.dialog().unwrap();
    let sent = tokio::time::timeout(WAIT, flow.send_text("anyone?"))
        .await
        .unwrap();
    // The call ended with the send's failure, not later.
    assert_eq!(call.state(), ConversationState::Terminated);
    assert_eq!(conv.state(), ConversationState::Terminated);
    // Its platform forgot the dialog.
    let again =
        p._a.send_in_dialog(&dialog, OutgoingRequest::new(Method::Message, ""))
            .await;
    assert!(matches!(again, Err(RequestError::NoDialog)), "{again:?}");
    assert!(matches!(
        flow.send_text("still there?").await,
        Err(MessageError::CallEnded)
    ));
    if answer == Answer::Status(481) {
        conv.send_page("text/plain", "after the 481").await.unwrap();
    }
    let after = tokio::time::timeout(WAIT, alice_side)
        .await
        .unwrap()
        .unwrap();
    (sent, call.termination_reason(), after == Some(Method::Bye))
}

/// RFC 3261 §12.2.1.2: a request in the dialog with no answer at all ends the dialog. The
/// send fails with the timeout, the call is over with a reason, its platform forgot the
/// dialog and ended it at alice with BYE (RFC 5057 §5.1: the INVITE usage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_nobody_answers_ends_the_call_with_a_bye() {
    let (sent, reason, bye) = lost_dialog(Answer::Never).await;
    assert!(
        matches!(sent, Err(MessageError::Request(RequestError::Timeout))),
        "{sent:?}"
    );
    match reason {
        Some(r @ TerminationReason::DialogLost { status: 408, .. }) => {
            assert!(r.to_string().contains("timed out"), "{r}")
        }
        other => panic!("{other:?}"),
    }
    assert!(bye, "alice got a BYE");
}

/// A 408 to a MESSAGE in the dialog: as no answer, the call ends and alice gets a BYE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_408_to_a_message_ends_the_call_with_a_bye() {
    let (sent, reason, bye) = lost_dialog(Answer::Status(408)).await;
    assert!(
        matches!(sent, Err(MessageError::Failed { status: 408, .. })),
        "{sent:?}"
    );
    assert!(
        matches!(
            reason,
            Some(TerminationReason::DialogLost { status: 408, .. })
        ),
        "{reason:?}"
    );
    assert!(bye, "alice got a BYE");
}

/// A 481 to a MESSAGE: alice no longer knows the dialog, so the call ends without a BYE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_481_to_a_message_ends_the_call_without_a_bye() {
    let (sent, reason, bye) = lost_dialog(Answer::Status(481)).await;
    assert!(
        matches!(sent, Err(MessageError::Failed { status: 481, .. })),
        "{sent:?}"
    );
    assert!(
        matches!(
            reason,
            Some(TerminationReason::DialogLost { status: 481, .. })
        ),
        "{reason:?}"
    );
    assert!(!bye, "no BYE after a 481");
}

/// The platform's INVITE without an offer (RFC 3261 §13.2.1) toward this SDK's own
/// callee: alice's `accept()` puts an IM offer in the 200 and waits for the answer in the
/// ACK; the bot, on the raw platform API, answers it with `send_ack_answer`. Alice's flow
/// comes only with that answer (an ACK without one fails her `accept`); the bot's BYE
/// ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_without_an_offer_is_answered_in_the_ack_end_to_end() {
    let p = setup().await;
    let mut calls = incoming_im_calls(&p.alice);
    let callee = tokio::spawn(async move {
        let IncomingImCall::OnPremises(c) = next_call(&mut calls).await else {
            panic!("typed by homing")
        };
        let mut flow = tokio::time::timeout(WAIT, c.accept())
            .await
            .expect("accepted within the wait")
            .expect("the ACK brought an answer");
        // The bot's BYE ends the stream.
        assert!(tokio::time::timeout(WAIT, flow.recv())
            .await
            .unwrap()
            .is_none());
    });
    let core = p.bot.core();
    let platform = core.platform();
    let req = OutgoingRequest::new(Method::Invite, "sip:alice@contoso.test")
        .from("<sip:bot@contoso.test>")
        .header("Contact", format!("<{}>", core.contact()));
    let call = platform
        .invite_without_offer(core.established_id().unwrap(), req)
        .await
        .unwrap();
    let (response, dialog) = tokio::time::timeout(WAIT, call.outcome())
        .await
        .unwrap()
        .unwrap();
    let offer = SessionDescription::parse_slice(response.body()).unwrap();
    let answer = OfferAnswer::new(
        LocalCapabilities::new("app.contoso.test")
            .with_media(MediaCapability::message(5060, ACCEPT_TYPES)),
        "0",
    )
    .receive_offer(&offer)
    .unwrap();
    platform
        .send_ack_answer(&dialog, "application/sdp", answer.to_bytes())
        .await
        .unwrap();
    let bye = tokio::time::timeout(
        WAIT,
        platform.send_in_dialog(&dialog, OutgoingRequest::new(Method::Bye, "")),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(bye.status(), Some(200));
    tokio::time::timeout(WAIT, callee).await.unwrap().unwrap();
}

/// Waits until `core` routes no dialog any more; false if one is still routed after
/// [`WAIT`].
async fn no_dialog_routed(core: &application_endpoint::EndpointCore) -> bool {
    tokio::time::timeout(WAIT, async {
        while core.live_dialogs() != 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .is_ok()
}

/// A callee that drops every handle of its accepted call ends it with BYE and unroutes it,
/// instead of answering the caller's messages 200 into a queue nobody reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_handle_of_an_accepted_call_ends_it_with_bye() {
    let p = setup().await;
    let mut calls = incoming_im_calls(&p.alice);
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let callee = tokio::spawn(async move {
        let flow = next_call(&mut calls).await.accept().await.unwrap();
        let _ = go_rx.await;
        drop(flow);
    });
    let call =
        Conversation::new(&p.bot, on_prem("sip:alice@contoso.test")).instant_messaging_call();
    let mut flow = call.establish().await.unwrap();
    go_tx.send(()).unwrap();
    tokio::time::timeout(WAIT, callee).await.unwrap().unwrap();
    let end = tokio::time::timeout(WAIT, flow.recv()).await;
    assert!(
        matches!(end, Ok(None)),
        "no BYE ended the caller's flow: {end:?}"
    );
    assert!(matches!(
        call.termination_reason(),
        Some(TerminationReason::Remote { .. })
    ));
    assert!(matches!(
        flow.send_text("anyone?").await,
        Err(MessageError::CallEnded)
    ));
    assert!(
        no_dialog_routed(p.alice.core()).await,
        "the dropped call is still routed"
    );
}

/// A caller that drops its ringing call (the `establish` future with every handle)
/// cancels the INVITE: the callee stops ringing and nothing stays routed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_ringing_call_cancels_its_invite() {
    let p = setup().await;
    let (call, establishing, held) = ringing_call(&p).await;
    // The task's future holds the only other handle.
    drop(call);
    establishing.abort();
    assert!(establishing.await.unwrap_err().is_cancelled());
    tokio::time::timeout(WAIT, async {
        while !held.request().is_cancelled() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the INVITE of the dropped call was cancelled");
    assert!(matches!(held.accept().await, Err(CallError::Cancelled)));
    assert!(
        no_dialog_routed(p.bot.core()).await,
        "the dropped call is still routed"
    );
}

/// An offered call terminated before it is accepted stays over: `accept` declines the
/// INVITE (603) and fails, instead of answering 200 to a call nobody holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepting_a_call_terminated_while_offered_declines_it() {
    let p = setup().await;
    let mut calls = incoming_im_calls(&p.alice);
    let callee = tokio::spawn(async move {
        let IncomingImCall::OnPremises(c) = next_call(&mut calls).await else {
            panic!("typed by homing")
        };
        c.call().terminate().await.unwrap();
        assert_eq!(c.call().state(), ConversationState::Terminated);
        c.accept().await
    });
    let call =
        Conversation::new(&p.bot, on_prem("sip:alice@contoso.test")).instant_messaging_call();
    let r = tokio::time::timeout(WAIT, call.establish()).await.unwrap();
    assert!(
        matches!(r, Err(CallError::Declined { status: 603, .. })),
        "{r:?}"
    );
    let accepted = tokio::time::timeout(WAIT, callee).await.unwrap().unwrap();
    assert!(matches!(accepted, Err(CallError::Ended)), "{accepted:?}");
    assert_eq!(call.state(), ConversationState::Terminated);
    assert!(
        no_dialog_routed(p.alice.core()).await,
        "a route is left behind"
    );
}

/// Hanging up while messages are in flight ends the call as `Local`, not as a dialog lost
/// to the sends that raced the BYE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_up_with_messages_in_flight_ends_the_call_locally() {
    let p = setup().await;
    let (bot, alice) = (&p.bot, &p.alice);
    let mut calls = incoming_im_calls(alice);
    tokio::spawn(async move {
        while let Some(c) = calls.next().await {
            tokio::spawn(async move {
                let mut flow = c.accept().await.unwrap();
                while flow.recv().await.is_some() {}
            });
        }
    });
    let mut wrong = Vec::new();
    for round in 0..20 {
        let call =
            Conversation::new(bot, on_prem("sip:alice@contoso.test")).instant_messaging_call();
        let flow = call.establish().await.unwrap();
        let sender = flow.sender();
        let mut sends = Vec::new();
        for i in 0..8 {
            let s = sender.clone();
            sends.push(tokio::spawn(async move {
                let mut n = 0;
                while s.send_text(&format!("m{i} {n}")).await.is_ok() {
                    n += 1;
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        call.terminate().await.unwrap();
        for s in sends {
            s.await.unwrap();
        }
        let reason = call.termination_reason();
        if !matches!(reason, Some(TerminationReason::Local)) {
            wrong.push((round, format!("{reason:?}")));
        }
    }
    assert!(
        wrong.is_empty(),
        "terminate() ended calls for another reason: {wrong:?}"
    );
}

/// A terminated endpoint sends no page: `send_page` fails with `MessageError::Endpoint`,
/// as placing a call fails with `CallError::Endpoint`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_endpoint_sends_no_page() {
    let p = setup().await;
    let mut pages = p.alice.core().pages();
    let conv = Conversation::new(&p.bot, on_prem("sip:alice@contoso.test"));
    p.bot.terminate().await;
    let call = conv.instant_messaging_call().establish().await;
    assert!(matches!(call, Err(CallError::Endpoint(_))), "{call:?}");
    let sent = conv
        .send_page("text/plain", "from a terminated endpoint")
        .await;
    assert!(matches!(sent, Err(MessageError::Endpoint(_))), "{sent:?}");
    let got = tokio::time::timeout(Duration::from_millis(500), pages.recv()).await;
    assert!(got.is_err(), "alice received a page: {got:?}");
}

/// `with_subject`, `with_priority` and `with_id` take effect even when the conversation
/// has clones (they were silently ignored).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_settings_apply_to_a_cloned_conversation() {
    use conversation::Priority;
    let p = setup().await;
    let conv = Conversation::new(&p.bot, on_prem("sip:alice@contoso.test"));
    let kept = conv.clone(); // e.g. stored in a map of conversations
    let conv = conv
        .with_subject("Quarterly report")
        .with_priority(Priority::Urgent)
        .with_id("0123456789abcdef");
    assert_eq!(conv.subject(), Some("Quarterly report"));
    assert_eq!(conv.priority(), Priority::Urgent);
    assert_eq!(conv.id(), "0123456789abcdef");
    assert_eq!(kept.subject(), None);
    // The settings reach the wire.
    let mut calls = incoming_im_calls(&p.alice);
    let callee = tokio::spawn(async move {
        let c = next_call(&mut calls).await;
        let r = c.request().request();
        let subject = r.header(HeaderName::Subject).map(|v| v.to_vec());
        let id = r.header_by_name("Ms-Conversation-ID").map(|v| v.to_vec());
        c.decline(603).await;
        (subject, id)
    });
    let _ = conv.instant_messaging_call().establish().await;
    let (subject, id) = callee.await.unwrap();
    assert_eq!(subject.as_deref(), Some(&b"Quarterly report"[..]));
    assert_eq!(id.as_deref(), Some(&b"0123456789abcdef"[..]));
}

/// Declining with 405 sends `Allow` (RFC 3261 §21.4.6), with 415 `Accept` (§21.4.13);
/// 401 (whose challenge cannot be supplied) becomes 603.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decline_adds_the_headers_its_status_requires() {
    let wire = collaboration_platform::WireLog::new();
    let observer = wire.as_observer();
    let p = setup_configured(move |me, s| {
        if me.starts_with("app.") {
            s.observer(observer.clone())
        } else {
            s
        }
    })
    .await;
    let mut calls = incoming_im_calls(&p.alice);
    for (asked, sent, header) in [
        (405, 405, Some("allow: ack, bye, cancel, options, message")),
        (415, 415, Some("accept: application/sdp")),
        (401, 603, None),
    ] {
        let callee = async { next_call(&mut calls).await.decline(asked).await };
        let call =
            Conversation::new(&p.bot, on_prem("sip:alice@contoso.test")).instant_messaging_call();
        let (r, ()) = tokio::join!(call.establish(), callee);
        let got = match r {
            Err(CallError::Declined { status, .. }) => status,
            Err(CallError::NotAcceptable(_)) => 606,
            other => panic!("{other:?}"),
        };
        assert_eq!(got, sent, "decline({asked})");
        let start = format!("SIP/2.0 {sent}");
        let resp = wire
            .matching(|r| {
                r.direction == collaboration_platform::WireDirection::Received
                    && r.text().starts_with(&start)
            })
            .first()
            .expect("the response seen")
            .text()
            .into_owned();
        if let Some(h) = header {
            assert!(
                resp.lines().any(|l| l.to_ascii_lowercase() == h),
                "decline({asked}) without `{h}`:\n{resp}"
            );
        }
    }
}

/// When the peer takes neither IM calls (488) nor pages (405), `deliver_text` reports
/// both: the INVITE's refusal and the page's failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_text_reports_the_refused_call_and_the_failed_page() {
    let p = setup().await;
    let conv = Conversation::new(&p.bot, on_prem("sip:alice@contoso.test"));
    let r = conv.deliver_text("hi").await;
    match r {
        Err(CallError::PageFailed { call, page }) => {
            assert!(matches!(*call, CallError::NotAcceptable(_)), "{call:?}");
            assert!(
                matches!(page, MessageError::Failed { status: 405, .. }),
                "{page:?}"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// `deliver_text` to a peer without IM calls (488) sends the text once as a UTF-8 page
/// carrying the conversation id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_text_falls_back_to_one_page() {
    let p = setup().await;
    let mut pages = p.alice.core().pages();
    let alice = tokio::spawn(async move {
        let mut pg = tokio::time::timeout(WAIT, pages.recv())
            .await
            .unwrap()
            .unwrap();
        let r = pg.request();
        let ct = String::from_utf8_lossy(r.header(HeaderName::ContentType).unwrap()).into_owned();
        let body = String::from_utf8_lossy(pg.body()).into_owned();
        let cid = r.header_by_name("Ms-Conversation-ID").is_some();
        pg.respond(200, "OK", &[], None).await.unwrap();
        let again = tokio::time::timeout(Duration::from_millis(500), pages.recv()).await;
        (ct, body, cid, again.is_err())
    });
    let conv = Conversation::new(&p.bot, on_prem("sip:alice@contoso.test"));
    let r = conv.deliver_text("héllo").await;
    assert!(matches!(r, Ok(conversation::Delivery::Page)), "{r:?}");
    let (ct, body, cid, once) = alice.await.unwrap();
    assert_eq!(ct, "text/plain; charset=UTF-8");
    assert_eq!(body, "héllo");
    assert!(cid && once);
}
