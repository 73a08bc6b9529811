//! A call the platform ends on its own account reaches the conversation layer: when a
//! caller (a raw UDP peer) never ACKs the bot's 2xx, the platform sends BYE after 64·T1
//! (tested in collaboration-platform's `dialogs_loopback`), and the accepted call ends with
//! [`TerminationReason::EndedByPlatform`] instead of looking established for ever.

use std::time::Duration;

use application_endpoint::{ApplicationEndpoint, ApplicationEndpointSettings};
use collaboration_platform::loopback::{pair, LoopbackPki};
use collaboration_platform::OnPremises;
use collaboration_platform::WireLog;
use collaboration_platform::{Address, DialogEndReason, Listener, ListenerKind, Topology};
use conversation::{
    incoming_im_calls, CallError, ConversationState, IncomingCall, IncomingImCall, IncomingImCalls,
    InstantMessagingCall, TerminationReason,
};
use sip_core::transaction::TransactionConfig;

const WAIT: Duration = Duration::from_secs(10);

/// The bot on a platform with 64·T1 = 640 ms and a UDP listener that takes anyone (for a
/// raw caller), taking IM calls; the platforms (kept alive), the bot, the UDP address.
async fn bot_on_udp() -> (
    (
        collaboration_platform::CollaborationPlatform,
        collaboration_platform::CollaborationPlatform,
    ),
    ApplicationEndpoint,
    IncomingImCalls,
    std::net::SocketAddr,
) {
    bot_on_udp_observed(WireLog::new(), Duration::from_millis(10)).await
}

/// Whether the platform `wire` watches has sent a BYE.
fn sent_a_bye(wire: &WireLog) -> bool {
    !wire.sent_requests("BYE").is_empty()
}

/// The first BYE the platform `wire` watches sent (waiting for it).
async fn first_bye(wire: &WireLog) -> String {
    let bye = tokio::time::timeout(WAIT, wire.wait_for(|r| r.is_sent_request("BYE")))
        .await
        .expect("a BYE was sent");
    bye.text().into_owned()
}

/// As [`bot_on_udp`], with `observer` watching the bot's platform, whose T1 is `t1`.
async fn bot_on_udp_observed(
    observer: WireLog,
    t1: Duration,
) -> (
    (
        collaboration_platform::CollaborationPlatform,
        collaboration_platform::CollaborationPlatform,
    ),
    ApplicationEndpoint,
    IncomingImCalls,
    std::net::SocketAddr,
) {
    let pki = LoopbackPki::new().unwrap();
    // 64·T1 = 640 ms with the T1 of 10 ms of `bot_on_udp`.
    let timers = TransactionConfig {
        t1,
        t2: t1 * 4,
        ..Default::default()
    };
    let (a, b) = pair(&pki, "app.contoso.test", "fe.contoso.test", |me, s| {
        let s = s.topology(Topology::new(["contoso.test"]));
        if me == "app.contoso.test" {
            s.transaction_timers(timers)
                .listen(Listener::udp("127.0.0.1:0".parse().unwrap()).allow_untrusted_peers())
                .observer(observer.as_observer())
        } else {
            s
        }
    })
    .await
    .unwrap();
    let udp = a.listen_addr(ListenerKind::Udp).unwrap();
    let bot = ApplicationEndpoint::new(
        &a,
        ApplicationEndpointSettings::new(
            Address::assume_on_premises("sip:bot@contoso.test").unwrap(),
        ),
    );
    bot.establish().await.unwrap();
    let calls = incoming_im_calls(&bot);
    ((a, b), bot, calls, udp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_call_whose_ack_never_comes_ends() {
    let (_platforms, _bot, mut calls, udp) = bot_on_udp().await;

    // Carol calls the bot over UDP with an IM session offer, and will never ACK.
    let carol = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = carol.local_addr().unwrap();
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
               m=message 5060 sip null\r\na=accept-types:text/plain\r\n";
    let invite = format!(
        "INVITE sip:bot@contoso.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bK-noack\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:carol@contoso.test>;tag=c1\r\n\
         To: <sip:bot@contoso.test>\r\n\
         Call-ID: noack@carol\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:carol@{me}>\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    carol.send_to(invite.as_bytes(), udp).await.unwrap();

    let incoming = tokio::time::timeout(WAIT, calls.next())
        .await
        .unwrap()
        .unwrap();
    let IncomingImCall::OnPremises(incoming) = incoming else {
        panic!("carol is on premises")
    };
    let mut state = incoming.call().watch_state();
    let mut flow = incoming.accept().await.unwrap();
    assert_eq!(*state.borrow_and_update(), ConversationState::Established);

    // No ACK: the platform retransmits the 2xx, then sends BYE and the call ends.
    tokio::time::timeout(
        WAIT,
        state.wait_for(|s| *s == ConversationState::Terminated),
    )
    .await
    .expect("the call ends")
    .unwrap();
    assert!(
        matches!(
            flow.termination_reason(),
            Some(TerminationReason::EndedByPlatform(DialogEndReason::NoAck))
        ),
        "{:?}",
        flow.termination_reason()
    );
    assert!(tokio::time::timeout(WAIT, flow.recv())
        .await
        .unwrap()
        .is_none());
}

/// RFC 3261 §13.2.1: to an INVITE without an offer the 200 carries ours and the answer is
/// owed in the ACK; when no ACK comes at all, the platform ends the dialog after 64·T1 and
/// `accept` fails (`Ended`, the reason being the platform's) instead of waiting for ever.
/// Such an INVITE used to be declined 488, so no call was ever offered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_call_without_an_offer_whose_ack_never_comes_fails_accept() {
    let (_platforms, _bot, mut calls, udp) = bot_on_udp().await;
    let carol = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = carol.local_addr().unwrap();
    let invite = format!(
        "INVITE sip:bot@contoso.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bK-noack-nooffer\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:carol@contoso.test>;tag=c2\r\n\
         To: <sip:bot@contoso.test>\r\n\
         Call-ID: noack-nooffer@carol\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:carol@{me}>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    carol.send_to(invite.as_bytes(), udp).await.unwrap();

    let incoming = tokio::time::timeout(WAIT, calls.next())
        .await
        .expect("the call is offered")
        .unwrap();
    let IncomingImCall::OnPremises(incoming) = incoming else {
        panic!("carol is on premises")
    };
    let call = incoming.call().clone();
    let accepted = tokio::time::timeout(WAIT, incoming.accept())
        .await
        .expect("accept ends without the ACK");
    assert!(matches!(accepted, Err(CallError::Ended)), "{accepted:?}");
    assert_eq!(call.state(), ConversationState::Terminated);
    assert!(
        matches!(
            call.termination_reason(),
            Some(TerminationReason::EndedByPlatform(DialogEndReason::NoAck))
        ),
        "{:?}",
        call.termination_reason()
    );
    // What carol got first (after any 100) is the 200 with our offer.
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, _) = tokio::time::timeout(WAIT, carol.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with("SIP/2.0 100") {
            continue;
        }
        assert!(text.starts_with("SIP/2.0 200"), "{text}");
        assert!(text.contains("application/sdp"), "{text}");
        assert!(text.contains("m=message 5060 sip null"), "{text}");
        break;
    }
}

/// `terminate` on an accepted call whose 200 carried the offer, before the ACK came: the
/// BYE may only follow the ACK (RFC 3261 §15), so the call waits `Terminating` and the ACK
/// (with its answer) draws the BYE; `accept` then fails `Ended` and the call ends `Local`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_terminated_before_the_ack_of_our_offer_is_ended_with_bye_once_it_comes() {
    let sent = WireLog::new();
    // T1 = 100 ms: the ACK must come before 64·T1 (6.4 s) without one ends the call, however
    // slow the test runs (that timer is not what is tested here).
    let (_platforms, _bot, mut calls, udp) =
        bot_on_udp_observed(sent.clone(), Duration::from_millis(100)).await;
    let carol = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = carol.local_addr().unwrap();
    let invite = format!(
        "INVITE sip:bot@contoso.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bK-late-bye\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:carol@contoso.test>;tag=c3\r\n\
         To: <sip:bot@contoso.test>\r\n\
         Call-ID: late-bye@carol\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:carol@{me}>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    carol.send_to(invite.as_bytes(), udp).await.unwrap();
    let incoming = tokio::time::timeout(WAIT, calls.next())
        .await
        .expect("the call is offered")
        .unwrap();
    let IncomingImCall::OnPremises(incoming) = incoming else {
        panic!("carol is on premises")
    };
    let call = incoming.call().clone();
    let accepting = tokio::spawn(incoming.accept());
    // The 200 with our offer: its To tag names the dialog.
    let mut buf = vec![0u8; 65536];
    let ok = loop {
        let (n, _) = tokio::time::timeout(WAIT, carol.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with("SIP/2.0 200") {
            break text;
        }
    };
    let to = ok
        .lines()
        .find(|l| l.starts_with("To:"))
        .expect("a To header")
        .to_string();
    call.terminate().await.unwrap();
    assert_eq!(call.state(), ConversationState::Terminating);
    assert!(!sent_a_bye(&sent), "no BYE before the ACK");
    let answer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                  m=message 5060 sip null\r\na=accept-types:text/plain\r\n";
    let ack = format!(
        "ACK sip:bot@contoso.test SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch=z9hG4bK-late-bye-ack\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:carol@contoso.test>;tag=c3\r\n\
         {to}\r\n\
         Call-ID: late-bye@carol\r\n\
         CSeq: 1 ACK\r\n\
         Content-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{answer}",
        answer.len()
    );
    carol.send_to(ack.as_bytes(), udp).await.unwrap();
    let accepted = tokio::time::timeout(WAIT, accepting)
        .await
        .expect("accept ends once the ACK came")
        .unwrap();
    assert!(matches!(accepted, Err(CallError::Ended)), "{accepted:?}");
    assert_eq!(call.state(), ConversationState::Terminated);
    assert!(
        matches!(call.termination_reason(), Some(TerminationReason::Local)),
        "{:?}",
        call.termination_reason()
    );
    let bye = first_bye(&sent).await;
    assert!(bye.contains("late-bye@carol"), "{bye}");
}

/// Carol, a raw UDP caller of the bot, who ACKs only when the test says so.
struct Carol {
    socket: tokio::net::UdpSocket,
    me: std::net::SocketAddr,
    bot: std::net::SocketAddr,
    call_id: &'static str,
    /// The To header of the bot's 200 (its tag names the dialog), once it came.
    to: Option<String>,
}

/// IM session SDP, as an offer in carol's INVITE or an answer in her ACK.
const CAROL_SDP: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                         m=message 5060 sip null\r\na=accept-types:text/plain\r\n";

impl Carol {
    /// Calls the bot at `bot` (UDP), with an offer or without one.
    async fn calls(bot: std::net::SocketAddr, call_id: &'static str, offer: bool) -> Carol {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let me = socket.local_addr().unwrap();
        let body = if offer {
            format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{CAROL_SDP}",
                CAROL_SDP.len()
            )
        } else {
            "Content-Length: 0\r\n\r\n".to_string()
        };
        let invite = format!(
            "INVITE sip:bot@contoso.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bK-{call_id}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:carol@contoso.test>;tag=carol\r\n\
             To: <sip:bot@contoso.test>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:carol@{me}>\r\n\
             {body}"
        );
        socket.send_to(invite.as_bytes(), bot).await.unwrap();
        Carol {
            socket,
            me,
            bot,
            call_id,
            to: None,
        }
    }

    /// The next message the bot sends her.
    async fn next(&self) -> String {
        let mut buf = vec![0u8; 65536];
        let (n, _) = tokio::time::timeout(WAIT, self.socket.recv_from(&mut buf))
            .await
            .expect("a message from the bot (none: did its platform stop?)")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Waits for the bot's 200 (skipping provisional responses) and keeps its To.
    async fn takes_the_200(&mut self) {
        loop {
            let text = self.next().await;
            if text.starts_with("SIP/2.0 1") {
                continue;
            }
            assert!(text.starts_with("SIP/2.0 200"), "{text}");
            self.to = Some(header(&text, "To"));
            return;
        }
    }

    /// Sends the ACK of the 200, with her answer when the 200 brought the offer.
    async fn acks(&self, answer: bool) {
        let to = self.to.as_deref().expect("the 200 came");
        let body = if answer {
            format!(
                "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{CAROL_SDP}",
                CAROL_SDP.len()
            )
        } else {
            "Content-Length: 0\r\n\r\n".to_string()
        };
        let ack = format!(
            "ACK sip:bot@contoso.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP {};branch=z9hG4bK-{}-ack\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:carol@contoso.test>;tag=carol\r\n\
             To: {to}\r\n\
             Call-ID: {}\r\n\
             CSeq: 1 ACK\r\n\
             {body}",
            self.me, self.call_id, self.call_id
        );
        self.socket.send_to(ack.as_bytes(), self.bot).await.unwrap();
    }

    /// Waits for the bot's platform to send a BYE (to its outbound proxy, where every
    /// request goes); the first.
    async fn sees_a_bye(&self, sent: &WireLog) -> String {
        first_bye(sent).await
    }

    /// Checks that `bye` ends her call: to her Contact, its Call-ID, the bot's tag in
    /// From, hers in To.
    fn is_her_bye(&self, bye: &str) {
        let target = format!("BYE sip:carol@{} SIP/2.0\r\n", self.me);
        assert!(bye.starts_with(&target), "{bye}");
        assert_eq!(header(bye, "Call-ID"), self.call_id, "{bye}");
        let to_200 = self.to.as_deref().unwrap();
        let bot_tag = tag(to_200).expect("the 200's To has a tag");
        assert_eq!(tag(&header(bye, "From")), Some(bot_tag), "{bye}");
        assert_eq!(tag(&header(bye, "To")), Some("carol"), "{bye}");
    }
}

fn is_header(line: &str, name: &str) -> bool {
    line.split_once(':')
        .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case(name))
}

/// The value of header `name` in `message` (the first).
fn header(message: &str, name: &str) -> String {
    let line = message
        .lines()
        .find(|l| is_header(l, name))
        .unwrap_or_else(|| panic!("no {name} in {message}"));
    line.split_once(':').unwrap().1.trim().to_string()
}

fn tag(value: &str) -> Option<&str> {
    value
        .split(';')
        .find_map(|p| p.trim().strip_prefix("tag="))
        .map(|t| t.trim())
}

/// The bot's platform retransmits the 200 to carol (no ACK yet) twice more: by then a BYE
/// asked before this was called had long reached the platform, and must not have gone.
async fn no_bye_while_the_200_is_unacked(carol: &Carol, sent: &WireLog) {
    for _ in 0..2 {
        let text = carol.next().await;
        assert!(text.starts_with("SIP/2.0 200"), "before the ACK: {text}");
    }
    assert!(!sent_a_bye(sent), "no BYE before the ACK");
}

/// The call carol's INVITE offers the bot.
async fn carols_call(calls: &mut IncomingImCalls) -> IncomingCall<OnPremises> {
    let offered = tokio::time::timeout(WAIT, calls.next())
        .await
        .expect("the call is offered")
        .unwrap();
    match offered {
        IncomingImCall::OnPremises(incoming) => incoming,
        IncomingImCall::Federated(_) => panic!("carol is on premises"),
    }
}

/// `call` ended with its endpoint.
fn ended_with_the_endpoint(call: &InstantMessagingCall<OnPremises>) {
    assert_eq!(call.state(), ConversationState::Terminated);
    assert!(
        matches!(
            call.termination_reason(),
            Some(TerminationReason::EndpointTerminated)
        ),
        "{:?}",
        call.termination_reason()
    );
}

/// RFC 3261 §15: an endpoint that terminates while the ACK of its 200 (which carried our
/// offer: the INVITE had none) is still owed ends the call at once (`accept` fails `Ended`,
/// the reason is `EndpointTerminated`), and the BYE, held until the ACK, goes when it
/// comes. The call used to end only here, the caller's staying up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_terminated_before_the_ack_of_our_offer_sends_bye_once_it_comes() {
    let sent = WireLog::new();
    // T1 = 100 ms: 64·T1 (6.4 s), after which the platform would send the BYE without the
    // ACK, is far from what the test waits for.
    let (_platforms, bot, mut calls, udp) =
        bot_on_udp_observed(sent.clone(), Duration::from_millis(100)).await;
    let mut carol = Carol::calls(udp, "ep-end-nooffer@carol", false).await;
    let incoming = carols_call(&mut calls).await;
    let call = incoming.call().clone();
    let accepting = tokio::spawn(incoming.accept());
    carol.takes_the_200().await;

    bot.terminate().await;
    let accepted = tokio::time::timeout(WAIT, accepting)
        .await
        .expect("accept ends with the endpoint")
        .unwrap();
    assert!(matches!(accepted, Err(CallError::Ended)), "{accepted:?}");
    ended_with_the_endpoint(&call);
    no_bye_while_the_200_is_unacked(&carol, &sent).await;

    carol.acks(true).await;
    let bye = carol.sees_a_bye(&sent).await;
    carol.is_her_bye(&bye);
}

/// As above with the offer in carol's INVITE: the call is up once the 200 is out, and its
/// BYE waits in the platform for the ACK all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_terminated_before_the_ack_of_our_answer_sends_bye_once_it_comes() {
    let sent = WireLog::new();
    let (_platforms, bot, mut calls, udp) =
        bot_on_udp_observed(sent.clone(), Duration::from_millis(100)).await;
    let mut carol = Carol::calls(udp, "ep-end-offer@carol", true).await;
    let incoming = carols_call(&mut calls).await;
    let call = incoming.call().clone();
    let _flow = incoming.accept().await.unwrap();
    carol.takes_the_200().await;

    bot.terminate().await;
    ended_with_the_endpoint(&call);
    no_bye_while_the_200_is_unacked(&carol, &sent).await;

    carol.acks(false).await;
    let bye = carol.sees_a_bye(&sent).await;
    carol.is_her_bye(&bye);
}

/// An endpoint terminated before the ACK of its 200, then its platform shut down: the
/// shutdown waits (within its grace period) for the ACK, so the BYE it draws still goes
/// out and is answered before the platform stops. It used to stop at once, the BYE lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_shut_down_after_its_endpoint_waits_for_the_ack_to_send_bye() {
    let sent = WireLog::new();
    let (platforms, bot, mut calls, udp) =
        bot_on_udp_observed(sent.clone(), Duration::from_millis(100)).await;
    let mut carol = Carol::calls(udp, "shutdown-noack@carol", false).await;
    let incoming = carols_call(&mut calls).await;
    let accepting = tokio::spawn(incoming.accept());
    carol.takes_the_200().await;

    bot.terminate().await;
    let app = platforms.0.clone();
    // Grace well past the test's wait: the ACK, not the deadline, is what ends the wait.
    let stopping = tokio::spawn(async move { app.shutdown_within(WAIT * 3).await });
    no_bye_while_the_200_is_unacked(&carol, &sent).await;
    assert!(
        !stopping.is_finished(),
        "the platform stopped before the ACK"
    );

    carol.acks(true).await;
    let bye = carol.sees_a_bye(&sent).await;
    carol.is_her_bye(&bye);
    let report = tokio::time::timeout(WAIT, stopping)
        .await
        .expect("the platform stops once the BYE is answered")
        .unwrap();
    assert_eq!(report.cancelled, 0, "{report:?}");
    let accepted = tokio::time::timeout(WAIT, accepting)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(accepted, Err(CallError::Ended)), "{accepted:?}");
}
