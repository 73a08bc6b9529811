//! A call the platform ends on its own account reaches the conversation layer: when a
//! caller (a raw UDP peer) never ACKs the bot's 2xx, the platform sends BYE after 64·T1
//! (tested in collaboration-platform's `dialogs_loopback`), and the accepted call ends with
//! [`TerminationReason::EndedByPlatform`] instead of looking established for ever.

use std::time::Duration;

use application_endpoint::{ApplicationEndpoint, ApplicationEndpointSettings};
use collaboration_platform::loopback::{pair, LoopbackPki};
use collaboration_platform::{Address, DialogEndReason, Listener, ListenerKind, Topology};
use conversation::{incoming_im_calls, ConversationState, IncomingImCall, TerminationReason};
use sip_core::transaction::TransactionConfig;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_call_whose_ack_never_comes_ends() {
    let pki = LoopbackPki::new().unwrap();
    // 64·T1 = 640 ms.
    let timers = TransactionConfig {
        t1: Duration::from_millis(10),
        t2: Duration::from_millis(40),
        ..Default::default()
    };
    let (a, _b) = pair(&pki, "app.contoso.test", "fe.contoso.test", |me, s| {
        let s = s.topology(Topology::new(["contoso.test"]));
        if me == "app.contoso.test" {
            s.transaction_timers(timers)
                .listen(Listener::udp("127.0.0.1:0".parse().unwrap()).allow_untrusted_peers())
        } else {
            s
        }
    })
    .await
    .unwrap();
    let udp = a
        .listen_addrs()
        .into_iter()
        .find(|(k, _)| *k == ListenerKind::Udp)
        .unwrap()
        .1;
    let bot = ApplicationEndpoint::new(
        &a,
        ApplicationEndpointSettings::new(
            Address::assume_on_premises("sip:bot@contoso.test").unwrap(),
        ),
    );
    bot.establish().await.unwrap();
    let mut calls = incoming_im_calls(&bot);

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
