//! A call the platform ends on its own account reaches the conversation layer: when a
//! caller (a raw UDP peer) never ACKs the bot's 2xx, the platform sends BYE after 64·T1
//! (tested in collaboration-platform's `dialogs_loopback`), and the accepted call ends with
//! [`TerminationReason::EndedByPlatform`] instead of looking established for ever.

use std::time::Duration;

use application_endpoint::{ApplicationEndpoint, ApplicationEndpointSettings};
use bytes::Bytes;
use collaboration_platform::loopback::{pair, LoopbackPki};
use collaboration_platform::{Address, DialogEndReason, Listener, ListenerKind, Topology};
use collaboration_platform::{MessageObserver, WireDirection};
use conversation::{
    incoming_im_calls, CallError, ConversationState, IncomingImCall, IncomingImCalls,
    TerminationReason,
};
use sip_core::transaction::TransactionConfig;
use std::sync::Arc;

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
    bot_on_udp_observed(Arc::new(Sent::default()), Duration::from_millis(10)).await
}

/// The requests a platform sent, by method, as they go out.
#[derive(Default)]
struct Sent {
    byes: std::sync::Mutex<Vec<String>>,
}

impl MessageObserver for Sent {
    fn observe(&self, direction: WireDirection, _: std::net::SocketAddr, wire: &Bytes) {
        if direction == WireDirection::Sent && wire.starts_with(b"BYE ") {
            let text = String::from_utf8_lossy(wire).into_owned();
            self.byes.lock().unwrap().push(text);
        }
    }
}

/// As [`bot_on_udp`], with `observer` watching the bot's platform, whose T1 is `t1`.
async fn bot_on_udp_observed(
    observer: Arc<Sent>,
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
                .observer(observer.clone())
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
    let sent = Arc::new(Sent::default());
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
    assert!(
        sent.byes.lock().unwrap().is_empty(),
        "no BYE before the ACK"
    );
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
    let deadline = tokio::time::Instant::now() + WAIT;
    while sent.byes.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no BYE was sent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let bye = sent.byes.lock().unwrap()[0].clone();
    assert!(bye.contains("late-bye@carol"), "{bye}");
}
