//! The caller's side of an INVITE on the wire: SIPp plays the outbound proxy and the
//! callee over TCP, answering the platform's INVITE as a scenario says, and checks the ACK,
//! CANCEL and BYE the platform sends; the test checks what the caller was told.

use std::net::SocketAddr;
use std::time::Duration;

use collaboration_platform::loopback::LoopbackPki;
use collaboration_platform::{
    Address, CollaborationPlatform, DialogEndReason, DialogId, EndpointId, InviteProgress,
    Listener, OutboundProxy, OutgoingInvite, OutgoingRequest, RequestError, ServerPlatformSettings,
    Topology, WireDirection, WireLog,
};
use peer_harness::{unique_token, Sipp, SippOutcome, SippProcess, SippTransport};
use sip_core::transaction::TransactionConfig;
use sip_core::Method;

const WAIT: Duration = Duration::from_secs(10);

/// SIPp listening over TCP, running `body` (the scenario's steps) once as the callee.
fn callee(name: &'static str, body: &str) -> (SippProcess, std::path::PathBuf) {
    let xml = format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="{name}">
{body}
</scenario>
"#
    );
    let dir = std::env::temp_dir().join(format!("ucma-uac-{}", unique_token()));
    let sipp = Sipp::new(&dir, name, &xml)
        .transport(SippTransport::Tcp)
        .calls(1)
        .timeout(Duration::from_secs(15))
        .trace_messages(true)
        .spawn_listening(WAIT)
        .expect("SIPp listening");
    (sipp, dir)
}

/// Waits for SIPp's run to end; panics with its report unless it succeeded.
async fn assert_succeeded(sipp: SippProcess, dir: std::path::PathBuf) -> SippOutcome {
    let outcome = tokio::task::spawn_blocking(move || {
        let out = sipp.wait();
        let _ = std::fs::remove_dir_all(&dir);
        out.expect("SIPp ran")
    })
    .await
    .unwrap();
    assert!(
        outcome.succeeded(),
        "{}\n--- messages ---\n{}",
        outcome.report(),
        outcome.messages
    );
    outcome
}

/// A platform whose outbound proxy is SIPp at `proxy`, with the endpoint `app`.
async fn platform(proxy: SocketAddr) -> (CollaborationPlatform, EndpointId) {
    platform_with(proxy, TransactionConfig::default()).await
}

/// [`platform`] with these transaction timers.
async fn platform_with(
    proxy: SocketAddr,
    timers: TransactionConfig,
) -> (CollaborationPlatform, EndpointId) {
    let (p, id, _requests) = platform_with_requests(proxy, timers).await;
    (p, id)
}

/// [`platform_with`], also giving the requests that reach the endpoint.
async fn platform_with_requests(
    proxy: SocketAddr,
    timers: TransactionConfig,
) -> (
    CollaborationPlatform,
    EndpointId,
    tokio::sync::mpsc::Receiver<collaboration_platform::IncomingRequest>,
) {
    start_platform(proxy, timers, None).await
}

/// [`platform`], with what it sends and receives recorded.
async fn platform_watched(proxy: SocketAddr) -> (CollaborationPlatform, EndpointId, Wire) {
    let wire = Wire::default();
    let (p, id, _requests) =
        start_platform(proxy, TransactionConfig::default(), Some(wire.clone())).await;
    (p, id, wire)
}

/// What a platform sent and received, with the queries these tests make.
#[derive(Default, Clone)]
struct Wire(WireLog);

impl Wire {
    /// How many messages starting with `start` (and containing `with`) the platform sent
    /// (`sent`) or received.
    fn count(&self, sent: bool, start: &str, with: &str) -> usize {
        let direction = if sent {
            WireDirection::Sent
        } else {
            WireDirection::Received
        };
        self.0
            .matching(|r| {
                let text = r.text();
                r.direction == direction && text.starts_with(start) && text.contains(with)
            })
            .len()
    }

    /// Waits (up to the wait) until the platform sent (`sent`) or received `n` messages
    /// starting with `start` and containing `with`.
    async fn until(&self, n: usize, sent: bool, start: &str, with: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.count(sent, start, with) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} {n} {start:?} with {with:?} within {WAIT:?}: {:#?}",
                if sent { "sent" } else { "received" },
                self.0.records()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A platform whose outbound proxy is `proxy`, with these timers and `observer`.
async fn start_platform(
    proxy: SocketAddr,
    timers: TransactionConfig,
    observer: Option<Wire>,
) -> (
    CollaborationPlatform,
    EndpointId,
    tokio::sync::mpsc::Receiver<collaboration_platform::IncomingRequest>,
) {
    let pki = LoopbackPki::new().expect("CA");
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let settings = ServerPlatformSettings::new(
        "ucma-rs uac test",
        "app.contoso.test",
        pki.identity("app.contoso.test").unwrap(),
        pki.roots(),
        OutboundProxy::tcp(proxy),
    )
    .listen(Listener::tcp(loopback).allow_untrusted_peers())
    .topology(Topology::new(["contoso.test"]))
    .transaction_timers(timers);
    let settings = match observer {
        Some(o) => settings.observer(o.0.as_observer()),
        None => settings,
    };
    let p = CollaborationPlatform::start(settings).await.unwrap();
    let owner = Address::assume_on_premises("sip:app@contoso.test").unwrap();
    let (id, rx) = p.register_endpoint(owner, None, false).await.unwrap();
    (p, id, rx)
}

async fn invite(p: &CollaborationPlatform, app: EndpointId) -> OutgoingInvite {
    p.invite(app, invite_request(p)).await.unwrap()
}

fn invite_request(p: &CollaborationPlatform) -> OutgoingRequest {
    OutgoingRequest::new(Method::Invite, "sip:bob@contoso.test")
        .from("<sip:app@contoso.test>")
        .header("Contact", format!("<{}>", p.contact_uri("app").unwrap()))
}

/// The INVITE's outcome, skipping provisional responses.
async fn outcome(call: &mut OutgoingInvite) -> InviteProgress {
    loop {
        match tokio::time::timeout(WAIT, call.next()).await {
            Ok(Some(InviteProgress::Provisional(_))) => {}
            Ok(Some(step)) => return step,
            Ok(None) => panic!("no outcome"),
            Err(_) => panic!("no outcome within {WAIT:?}: the caller hangs"),
        }
    }
}

/// The dialog of the INVITE's 2xx; panics on any other outcome.
async fn answered(call: &mut OutgoingInvite) -> DialogId {
    match outcome(call).await {
        InviteProgress::Answered { dialog, .. } => dialog,
        other => panic!("{other:?}"),
    }
}

/// Sends BYE in `dialog`: whether a 200 came within the wait. Checked after SIPp's
/// report, which says more when it did not.
async fn hang_up(p: &CollaborationPlatform, dialog: &DialogId) -> Result<(), String> {
    let bye = OutgoingRequest::new(Method::Bye, "");
    match tokio::time::timeout(WAIT, p.send_in_dialog(dialog, bye)).await {
        Ok(Ok(r)) if r.status() == Some(200) => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

/// An SDP answer accepting an IM session offer, with session version `version`.
fn im_answer(version: u32) -> String {
    format!(
        "v=0\r\no=- 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=message 5061 sip null\r\na=accept-types:text/plain\r\n"
    )
}

/// The callee's steps up to a re-INVITE: the INVITE answered 200 (tagged), its ACK, then
/// the re-INVITE received.
fn call_then_reinvite() -> String {
    [
        "  <recv request=\"INVITE\" crlf=\"true\"/>\n",
        &answer("200 OK", ";tag=bob-[pid]"),
        "  <recv request=\"ACK\"/>\n  <recv request=\"INVITE\" crlf=\"true\"/>\n",
    ]
    .concat()
}

/// A response `status` to the INVITE just received (its headers copied as received), with
/// `to_tag` appended to To (empty: none, as an RFC 2543 UAS answers).
fn answer(status: &str, to_tag: &str) -> String {
    format!(
        r#"  <send>
    <![CDATA[

      SIP/2.0 {status}
      [last_Via:]
      [last_From:]
      [last_To:]{to_tag}
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:bob@[local_ip]:[local_port];transport=tcp>
      Content-Length: 0

    ]]>
  </send>
"#
    )
}

/// The 200 to the request just received, its headers copied as received.
macro_rules! ok_to_last {
    () => {
        r#"  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
"#
    };
}

/// The 200 to the BYE just received.
const BYE_OK: &str = concat!("  <recv request=\"BYE\"/>\n", ok_to_last!());

/// The INVITE received, its Via, From, To and CSeq number kept (`$via`, `$from`, `$to`,
/// `$seq`) for [`retransmission`].
const RECV_INVITE_KEEPING_HEADERS: &str = r#"  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="Via:" assign_to="via"/>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="from"/>
      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="to"/>
      <ereg regexp="[0-9]+" search_in="hdr" header="CSeq:" assign_to="seq"/>
    </action>
  </recv>
"#;

/// A later copy of `response` (made by [`answer`]) to the INVITE, sent after other
/// messages: its headers from those [`RECV_INVITE_KEEPING_HEADERS`] kept, not from the
/// last message received (the Call-ID is the same in every message of the call).
fn retransmission(response: &str) -> String {
    response
        .replace("[last_Via:]", "Via: [$via]")
        .replace("[last_From:]", "From: [$from]")
        .replace("[last_To:]", "To: [$to]")
        .replace("[last_CSeq:]", "CSeq: [$seq] INVITE")
}

/// How many ACKs the callee received.
fn acks(outcome: &SippOutcome) -> usize {
    outcome
        .messages
        .lines()
        .filter(|l| l.starts_with("ACK "))
        .count()
}

/// RFC 3261 §13.2.2.4: every retransmission of a 2xx gets the ACK, also from an RFC 2543
/// callee whose 2xx has no To tag (a dialog with a null remote tag, §12.1.2). The
/// retransmission used to be dropped unACKed: the platform named the dialog only by a tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retransmitted_2xx_without_a_to_tag_is_acked_again() {
    let ok = answer("200 OK", "");
    let steps = [
        RECV_INVITE_KEEPING_HEADERS,
        &ok,
        // The retransmission, after the ACK (it went astray).
        "  <recv request=\"ACK\"/>\n",
        &retransmission(&ok),
        "  <recv request=\"ACK\" timeout=\"3000\"/>\n",
        BYE_OK,
    ]
    .concat();
    let (sipp, dir) = callee("rfc2543-2xx-retransmitted", &steps);
    let (p, app, wire) = platform_watched(sipp.local_addr()).await;
    let dialog = answered(&mut invite(&p, app).await).await;
    assert!(dialog.remote_tag().is_empty(), "{dialog:?}");
    // The retransmission arrives and is ACKed before the call ends.
    wire.until(2, true, "ACK ", "").await;
    let bye = hang_up(&p, &dialog).await;
    let outcome = assert_succeeded(sipp, dir).await;
    bye.unwrap();
    assert_eq!(acks(&outcome), 2, "{}", outcome.messages);
    p.shutdown().await;
}

/// RFC 3261 §9.1: a CANCEL waits for a provisional response. When the 2xx comes first the
/// call is up although the caller asked to cancel it: the platform ACKs the 2xx and ends
/// the call with BYE (§15), sends no CANCEL, and the caller's outcome is `Cancelled`. The
/// held CANCEL used to be dropped silently and the caller told the call was answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_that_beats_a_held_cancel_is_acked_and_ended_with_bye() {
    let steps = [
        r#"  <recv request="INVITE" crlf="true"/>
  <pause milliseconds="2500"/>
"#,
        &answer("200 OK", ";tag=bob-[pid]"),
        r#"  <recv request="ACK"/>
"#,
        BYE_OK,
    ]
    .concat();
    // SIPp answers 2.5 s after the INVITE: the caller's CANCEL comes first (held, no 1xx
    // came) however slow the test runs.
    let (sipp, dir) = callee("2xx-beats-held-cancel", &steps);
    let (p, app) = platform(sipp.local_addr()).await;
    let mut call = invite(&p, app).await;
    call.cancel().await;
    match outcome(&mut call).await {
        InviteProgress::Failed(RequestError::Cancelled) => {}
        other => panic!("{other:?}"),
    }
    let outcome = assert_succeeded(sipp, dir).await;
    assert!(
        !outcome.messages.contains("CANCEL sip:"),
        "{}",
        outcome.messages
    );
    p.shutdown().await;
}

/// As above when the CANCEL went out (a 1xx came) and the 2xx crossed it: ACK, BYE, and
/// `Cancelled` for the caller, not an answered call it asked to be rid of.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_that_crosses_a_sent_cancel_is_acked_and_ended_with_bye() {
    let steps = [
        r#"  <recv request="INVITE" crlf="true"/>
"#,
        &answer("180 Ringing", ";tag=bob-[pid]"),
        // The CANCEL carries the INVITE's Via, From, To and Call-ID (§9.1): its 200 goes
        // first (the platform sends nothing for it), then the 2xx to the INVITE, made from
        // the CANCEL's headers with the INVITE's CSeq method.
        r#"  <recv request="CANCEL">
    <action>
      <ereg regexp="[0-9]+" search_in="hdr" header="CSeq:" assign_to="seq"/>
    </action>
  </recv>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=bob-[pid]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=bob-[pid]
      [last_Call-ID:]
      CSeq: [$seq] INVITE
      Contact: <sip:bob@[local_ip]:[local_port];transport=tcp>
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK"/>
"#,
        BYE_OK,
    ]
    .concat();
    let (sipp, dir) = callee("2xx-crosses-cancel", &steps);
    let (p, app) = platform(sipp.local_addr()).await;
    let mut call = invite(&p, app).await;
    match tokio::time::timeout(WAIT, call.next()).await {
        Ok(Some(InviteProgress::Provisional(r))) => assert_eq!(r.status(), Some(180)),
        other => panic!("{other:?}"),
    }
    call.cancel().await;
    match outcome(&mut call).await {
        InviteProgress::Failed(RequestError::Cancelled) => {}
        other => panic!("{other:?}"),
    }
    assert_succeeded(sipp, dir).await;
    p.shutdown().await;
}

/// A non-2xx final that beats a held CANCEL ends the INVITE: the caller learns the
/// failure (486 here), and no CANCEL is sent after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_that_beats_a_held_cancel_is_the_outcome() {
    let steps = [
        r#"  <recv request="INVITE" crlf="true"/>
  <pause milliseconds="2500"/>
"#,
        &answer("486 Busy Here", ";tag=bob-[pid]"),
        r#"  <recv request="ACK"/>
  <pause milliseconds="500"/>
"#,
    ]
    .concat();
    // SIPp answers 2.5 s after the INVITE: the CANCEL comes first however slow the test.
    let (sipp, dir) = callee("failure-beats-held-cancel", &steps);
    let (p, app) = platform(sipp.local_addr()).await;
    let mut call = invite(&p, app).await;
    call.cancel().await;
    match outcome(&mut call).await {
        InviteProgress::Failed(e) => assert_eq!(e.status(), 486, "{e:?}"),
        other => panic!("{other:?}"),
    }
    let outcome = assert_succeeded(sipp, dir).await;
    assert!(
        !outcome.messages.contains("CANCEL sip:"),
        "{}",
        outcome.messages
    );
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_tells_the_caller_what_the_peers_warning_says() {
    let refusal = answer("488 Not Acceptable Here", ";tag=bob-[pid]").replace(
        "      Content-Length: 0",
        "      Warning: 304 bob.contoso.test \"Media type not available\"\n      Content-Length: 0",
    );
    let steps = [
        "  <recv request=\"INVITE\" crlf=\"true\"/>\n",
        &refusal,
        "  <recv request=\"ACK\"/>\n",
    ]
    .concat();
    let (sipp, dir) = callee("refusal-with-warning", &steps);
    let (p, app) = platform(sipp.local_addr()).await;
    let mut call = invite(&p, app).await;
    match outcome(&mut call).await {
        InviteProgress::Failed(e) => {
            assert_eq!(e.status(), 488, "{e:?}");
            assert_eq!(
                e.to_string(),
                "488 Not Acceptable Here (warning 304 bob.contoso.test: \"Media type not available\")"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_succeeded(sipp, dir).await;
    p.shutdown().await;
}

/// The 200 with an SDP offer (an IM session) to the INVITE just received, or (with
/// `from_kept`) a retransmission of it made from the Via and CSeq kept then; `to_tag` is
/// appended to To (empty for a re-INVITE, whose To has the tag).
fn offer_200(from_kept: bool, to_tag: &str) -> String {
    let (via, cseq) = if from_kept {
        ("Via: [$via]", "CSeq: [$seq] INVITE")
    } else {
        ("[last_Via:]", "[last_CSeq:]")
    };
    format!(
        r#"  <send>
    <![CDATA[

      SIP/2.0 200 OK
      {via}
      [last_From:]
      [last_To:]{to_tag}
      [last_Call-ID:]
      {cseq}
      Contact: <sip:bob@[local_ip]:[local_port];transport=tcp>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=- 7 1 IN IP4 [local_ip]
      s=-
      c=IN IP4 [local_ip]
      t=0 0
      m=message 5060 sip null
      a=accept-types:text/plain text/html

    ]]>
  </send>
"#
    )
}

/// Receives the INVITE, keeping its Via and CSeq for retransmissions of the 200.
const RECV_INVITE_KEPT: &str = r#"  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="Via:" assign_to="via"/>
      <ereg regexp="[0-9]+" search_in="hdr" header="CSeq:" assign_to="seq"/>
    </action>
  </recv>
"#;

/// The messages of a SIPp trace that start with `start_line_prefix`, each up to the
/// next trace separator.
fn traced<'t>(messages: &'t str, start_line_prefix: &str) -> Vec<&'t str> {
    messages
        .split("\n\n")
        .filter(|m| m.trim_start().starts_with(start_line_prefix))
        .collect()
}

/// RFC 3261 §13.2.1 and §13.2.2.4: an INVITE sent without an offer gets one in the 2xx,
/// and the ACK carries the application's answer. The platform holds the ACK until the
/// answer is given (a retransmission of the 2xx meanwhile gets nothing), then sends the
/// same ACK again for a later retransmission. It used to ACK at once without a body,
/// leaving the offer unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_without_an_offer_acks_the_2xx_with_the_applications_answer() {
    let steps = [
        RECV_INVITE_KEPT,
        &offer_200(false, ";tag=bob-[pid]"),
        r#"  <pause milliseconds="300"/>
"#,
        &offer_200(true, ";tag=bob-[pid]"),
        r#"  <recv request="ACK" timeout="5000"/>
"#,
        &offer_200(true, ";tag=bob-[pid]"),
        r#"  <recv request="ACK" timeout="3000"/>
"#,
        BYE_OK,
    ]
    .concat();
    let (sipp, dir) = callee("delayed-offer-answered", &steps);
    let (p, app, wire) = platform_watched(sipp.local_addr()).await;
    // An INVITE without an offer has no body.
    let with_body = invite_request(&p).body("application/sdp", "v=0\r\n");
    assert!(matches!(
        p.invite_without_offer(app, with_body).await,
        Err(RequestError::Invalid(_))
    ));
    let mut call = p
        .invite_without_offer(app, invite_request(&p))
        .await
        .unwrap();
    let (response, dialog) = match outcome(&mut call).await {
        InviteProgress::Answered { response, dialog } => (response, dialog),
        other => panic!("{other:?}"),
    };
    assert!(
        String::from_utf8_lossy(response.body()).contains("m=message 5060 sip null"),
        "{response}"
    );
    // The retransmission comes and goes while the application works out its answer.
    wire.until(2, false, "SIP/2.0 200", " INVITE\r\n").await;
    let answer = im_answer(1);
    p.send_ack_answer(&dialog, "application/sdp", answer.clone())
        .await
        .unwrap();
    // One answer per 2xx: the ACK is sent.
    assert!(matches!(
        p.send_ack_answer(&dialog, "application/sdp", answer).await,
        Err(RequestError::NoDialog)
    ));
    // The retransmission after the ACK arrives and is ACKed again.
    wire.until(2, true, "ACK ", "").await;
    let bye = hang_up(&p, &dialog).await;
    let outcome = assert_succeeded(sipp, dir).await;
    bye.unwrap();
    let invites = traced(&outcome.messages, "INVITE ");
    assert_eq!(invites.len(), 1, "{}", outcome.messages);
    assert!(!invites[0].contains("v=0"), "{}", invites[0]);
    let acks = traced(&outcome.messages, "ACK ");
    assert_eq!(acks.len(), 2, "{}", outcome.messages);
    for ack in &acks {
        assert!(ack.contains("m=message 5061 sip null"), "{ack}");
        assert!(ack.contains("Content-Type: application/sdp"), "{ack}");
    }
    // The same ACK both times (§17.1.1.3 asks nothing else of a 2xx's ACK, and the far
    // end may compare them).
    assert_eq!(acks[0], acks[1]);
    p.shutdown().await;
}

/// An answer that does not come within 64·T1 (T1 50 ms here): the platform ACKs with an
/// answer refusing the offered stream (port 0), ends the call with BYE and announces it
/// (`DialogEndReason::NoAnswer`); an answer given later finds no ACK waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_never_comes_is_refused_in_the_ack_and_the_call_ended() {
    let steps = [
        r#"  <recv request="INVITE" crlf="true"/>
"#,
        &offer_200(false, ";tag=bob-[pid]"),
        r#"  <recv request="ACK" timeout="10000"/>
"#,
        BYE_OK,
    ]
    .concat();
    let (sipp, dir) = callee("delayed-offer-unanswered", &steps);
    let timers = TransactionConfig {
        t1: Duration::from_millis(50),
        ..TransactionConfig::default()
    };
    let (p, app) = platform_with(sipp.local_addr(), timers).await;
    let mut endings = p.dialog_endings();
    let mut call = p
        .invite_without_offer(app, invite_request(&p))
        .await
        .unwrap();
    let dialog = match outcome(&mut call).await {
        InviteProgress::Answered { dialog, .. } => dialog,
        other => panic!("{other:?}"),
    };
    let ended = tokio::time::timeout(WAIT, endings.recv())
        .await
        .expect("an ending within the wait")
        .unwrap();
    assert_eq!(ended.dialog, dialog);
    assert_eq!(ended.reason, DialogEndReason::NoAnswer);
    assert_eq!(ended.endpoint, Some(app));
    assert!(matches!(
        p.send_ack_answer(&dialog, "application/sdp", "v=0\r\n")
            .await,
        Err(RequestError::NoDialog)
    ));
    let outcome = assert_succeeded(sipp, dir).await;
    let acks = traced(&outcome.messages, "ACK ");
    assert_eq!(acks.len(), 1, "{}", outcome.messages);
    assert!(acks[0].contains("m=message 0 sip null"), "{}", acks[0]);
    p.shutdown().await;
}

/// A late fork's 2xx to an INVITE without an offer brings an offer too (§13.2.1): the
/// platform ends that fork (ACK, then BYE: the caller has its call already) and its ACK
/// must answer the offer (§13.2.2.4), here refusing the stream (port 0). That ACK used
/// to have no body, as after an INVITE with an offer. The first fork's call goes on with
/// the application's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_forks_offer_after_an_invite_without_one_is_refused_in_its_ack() {
    let steps = [
        r#"  <recv request="INVITE" crlf="true"/>
"#,
        &offer_200(false, ";tag=bob-[pid]"),
        &offer_200(false, ";tag=fork2-[pid]"),
        r#"  <recv request="ACK" timeout="5000"/>
"#,
        BYE_OK,
        r#"  <recv request="ACK" timeout="5000"/>
"#,
        BYE_OK,
    ]
    .concat();
    let (sipp, dir) = callee("delayed-offer-late-fork", &steps);
    let (p, app, wire) = platform_watched(sipp.local_addr()).await;
    let mut call = p
        .invite_without_offer(app, invite_request(&p))
        .await
        .unwrap();
    let dialog = answered(&mut call).await;
    // The second fork's 2xx is ACKed and ended while the application works out its answer.
    wire.until(1, true, "ACK ", ";tag=fork2-").await;
    wire.until(1, true, "BYE ", ";tag=fork2-").await;
    p.send_ack_answer(&dialog, "application/sdp", im_answer(1))
        .await
        .unwrap();
    let bye = hang_up(&p, &dialog).await;
    let outcome = assert_succeeded(sipp, dir).await;
    bye.unwrap();
    let acks = traced(&outcome.messages, "ACK ");
    assert_eq!(acks.len(), 2, "{}", outcome.messages);
    let (fork2, fork1) = (acks[0], acks[1]);
    assert!(fork2.contains(";tag=fork2-"), "{fork2}");
    assert!(fork2.contains("m=message 0 sip null"), "{fork2}");
    assert!(fork2.contains("Content-Type: application/sdp"), "{fork2}");
    assert!(fork1.contains(";tag=bob-"), "{fork1}");
    assert!(fork1.contains("m=message 5061 sip null"), "{fork1}");
    let byes = traced(&outcome.messages, "BYE ");
    assert_eq!(byes.len(), 2, "{}", outcome.messages);
    assert!(byes[0].contains(";tag=fork2-"), "{}", byes[0]);
    p.shutdown().await;
}

/// A request the callee sends in the dialog before the INVITE's 2xx reaches the caller
/// (on another connection it can overtake the 2xx) names a dialog the caller does not
/// know yet. The platform parks it until the INVITE's final response, then hands it to
/// the endpoint in the dialog that 2xx made. It used to answer 481. One SIPp is the
/// callee, answering after 1.5 s; a second one, on a connection of its own to the
/// platform's listener, sends the callee's MESSAGE before that (SIPp maps responses to
/// its calls by its own Call-IDs, so it cannot take the 200 to this one: the endpoint
/// receiving the MESSAGE in the dialog is what is checked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callees_request_that_overtakes_its_2xx_is_taken_in_the_dialog() {
    let call_id = format!("overtaken-{}@test", unique_token());
    let steps = [
        r#"  <recv request="INVITE" crlf="true"/>
  <pause milliseconds="1500"/>
"#,
        &answer("200 OK", ";tag=bob-early"),
        r#"  <recv request="ACK" timeout="5000"/>
"#,
        BYE_OK,
    ]
    .concat();
    let (sipp, dir) = callee("overtaken-2xx", &steps);
    let (p, app, mut requests) =
        platform_with_requests(sipp.local_addr(), TransactionConfig::default()).await;
    let request = invite_request(&p)
        .from("<sip:app@contoso.test>;tag=app-early")
        .call_id(call_id.clone());
    let mut call = p.invite(app, request).await.unwrap();
    // The callee's MESSAGE, from another SIPp on its own connection (inbound, to the
    // listener), while the INVITE waits for its 200.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listener = p
        .listen_addr(collaboration_platform::ListenerKind::Tcp)
        .expect("the TCP listener");
    let early = format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="overtaking-message">
  <send>
    <![CDATA[

      MESSAGE sip:app@{listener};transport=tcp SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: <sip:bob@contoso.test>;tag=bob-early
      To: <sip:app@contoso.test>;tag=app-early
      Call-ID: {call_id}
      CSeq: 1 MESSAGE
      Content-Type: text/plain
      Content-Length: [len]

      before the 200
    ]]>
  </send>
  <pause milliseconds="2500"/>
</scenario>
"#
    );
    let early_dir = std::env::temp_dir().join(format!("ucma-uac-{}", unique_token()));
    let messenger = tokio::task::spawn_blocking(move || {
        let out = Sipp::new(&early_dir, "overtaking-message", &early)
            .transport(SippTransport::Tcp)
            .remote(listener)
            .calls(1)
            .timeout(Duration::from_secs(15))
            .trace_messages(true)
            .run();
        let _ = std::fs::remove_dir_all(&early_dir);
        out.expect("SIPp ran")
    });
    let dialog = answered(&mut call).await;
    let mut message = tokio::time::timeout(WAIT, requests.recv())
        .await
        .expect("the MESSAGE reaches the endpoint")
        .unwrap();
    assert_eq!(message.request().method(), Some(&Method::Message));
    assert_eq!(message.dialog(), Some(dialog.clone()));
    assert_eq!(&message.body()[..], b"before the 200\r\n");
    message.respond(200, "OK", &[], None).await.unwrap();
    let sent = messenger.await.unwrap();
    assert!(
        sent.succeeded(),
        "{}\n--- messages ---\n{}",
        sent.report(),
        sent.messages
    );
    let bye = hang_up(&p, &dialog).await;
    assert_succeeded(sipp, dir).await;
    bye.unwrap();
    p.shutdown().await;
}

/// A 2xx the platform ended with BYE (here: it beat a held CANCEL) that the callee sends
/// again after the BYE's 200 (§13.3.1.4: it retransmits until it sees an ACK; ours
/// crossed) gets the same ACK again and no second BYE: the call is over on both sides. A
/// retransmission used to make the dialog anew and end it with another BYE (answered 481).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_retransmitted_after_the_platforms_bye_gets_the_ack_and_no_second_bye() {
    let steps = [
        RECV_INVITE_KEPT,
        r#"  <pause milliseconds="2500"/>
"#,
        &offer_200(false, ";tag=bob-[pid]"),
        r#"  <recv request="ACK"/>
"#,
        BYE_OK,
        &offer_200(true, ";tag=bob-[pid]"),
        r#"  <recv request="ACK" timeout="3000"/>
  <pause milliseconds="1000"/>
"#,
    ]
    .concat();
    // SIPp answers 2.5 s after the INVITE: the CANCEL comes first however slow the test.
    let (sipp, dir) = callee("2xx-again-after-bye", &steps);
    let (p, app) = platform(sipp.local_addr()).await;
    let mut call = invite(&p, app).await;
    call.cancel().await;
    match outcome(&mut call).await {
        InviteProgress::Failed(RequestError::Cancelled) => {}
        other => panic!("{other:?}"),
    }
    let outcome = assert_succeeded(sipp, dir).await;
    assert_eq!(
        traced(&outcome.messages, "BYE ").len(),
        1,
        "{}",
        outcome.messages
    );
    let acks = traced(&outcome.messages, "ACK ");
    assert_eq!(acks.len(), 2, "{}", outcome.messages);
    p.shutdown().await;
}

/// A re-INVITE the application sends in a dialog (`send_in_dialog`) has its 2xx ACKed
/// by the platform at once (§13.2.2.4), as the dialog's first INVITE has: the caller
/// gets the 2xx and cannot send the ACK itself (`send_in_dialog` refuses ACK). The 2xx's
/// Contact is the dialog's new remote target (§12.2.1.2): the ACK and the BYE go there.
/// Neither was done: the call went on unACKed (the callee ends such a call after
/// 64·T1) and requests kept going to the old target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_invite_sent_in_a_dialog_has_its_2xx_acked() {
    let steps = [
        &call_then_reinvite(),
        r#"  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:bob-moved@[local_ip]:[local_port];transport=tcp>
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK" timeout="3000"/>
"#,
        BYE_OK,
    ]
    .concat();
    let (sipp, dir) = callee("re-invite-acked", &steps);
    let (p, app) = platform(sipp.local_addr()).await;
    let dialog = answered(&mut invite(&p, app).await).await;
    let reinvite = tokio::time::timeout(
        WAIT,
        p.send_in_dialog(&dialog, OutgoingRequest::new(Method::Invite, "")),
    )
    .await;
    assert!(
        matches!(reinvite, Ok(Ok(ref r)) if r.status() == Some(200)),
        "{reinvite:?}"
    );
    let bye = hang_up(&p, &dialog).await;
    let outcome = assert_succeeded(sipp, dir).await;
    bye.unwrap();
    let acks = traced(&outcome.messages, "ACK ");
    assert_eq!(acks.len(), 2, "{}", outcome.messages);
    assert!(acks[1].contains("CSeq: 2 ACK"), "{}", acks[1]);
    assert!(acks[1].starts_with("ACK sip:bob-moved@"), "{}", acks[1]);
    let byes = traced(&outcome.messages, "BYE ");
    assert_eq!(byes.len(), 1, "{}", outcome.messages);
    assert!(byes[0].starts_with("BYE sip:bob-moved@"), "{}", byes[0]);
    p.shutdown().await;
}

/// A target refresh request (re-INVITE, UPDATE) carries the local target in Contact
/// (RFC 3261 §12.2.1.1; §20 makes it mandatory in an INVITE). `send_in_dialog` gives one
/// that has none the dialog's local target (the Contact of the INVITE that made it, or of
/// the last refresh sent with one), and keeps one the caller gave. The re-INVITE used to
/// leave without a Contact, which a strict callee refuses with 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_refresh_request_without_a_contact_gets_the_dialogs_local_target() {
    let steps = [
        &call_then_reinvite(),
        &answer("200 OK", ""),
        r#"  <recv request="ACK" timeout="3000"/>
  <recv request="UPDATE" timeout="3000"/>
"#,
        &answer("200 OK", ""),
        r#"  <recv request="INVITE" crlf="true" timeout="3000"/>
"#,
        &answer("200 OK", ""),
        r#"  <recv request="ACK" timeout="3000"/>
"#,
        BYE_OK,
    ]
    .concat();
    let (sipp, dir) = callee("refresh-contact", &steps);
    let (p, app) = platform(sipp.local_addr()).await;
    let dialog = answered(&mut invite(&p, app).await).await;
    // The INVITE's Contact (`invite_request`), and the one the UPDATE moves to.
    let first = format!("<{}>", p.contact_uri("app").unwrap());
    let moved = "<sip:elsewhere@192.0.2.9>";
    for request in [
        OutgoingRequest::new(Method::Invite, ""),
        OutgoingRequest::new(Method::Update, "").header("Contact", moved),
        OutgoingRequest::new(Method::Invite, ""),
    ] {
        let sent = tokio::time::timeout(WAIT, p.send_in_dialog(&dialog, request)).await;
        assert!(
            matches!(sent, Ok(Ok(ref r)) if r.status() == Some(200)),
            "{sent:?}"
        );
    }
    let bye = hang_up(&p, &dialog).await;
    let outcome = assert_succeeded(sipp, dir).await;
    bye.unwrap();
    let contacts = |m: &str| -> Vec<String> {
        m.lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("contact:"))
            .map(|l| l["contact:".len()..].trim().to_owned())
            .collect()
    };
    let invites = traced(&outcome.messages, "INVITE ");
    assert_eq!(invites.len(), 3, "{}", outcome.messages);
    assert_eq!(
        contacts(invites[0]),
        std::slice::from_ref(&first),
        "{}",
        invites[0]
    );
    assert_eq!(contacts(invites[1]), [first], "{}", invites[1]);
    let updates = traced(&outcome.messages, "UPDATE ");
    assert_eq!(updates.len(), 1, "{}", outcome.messages);
    assert_eq!(contacts(updates[0]), [moved], "{}", updates[0]);
    // The UPDATE moved the local target: the next re-INVITE carries the new one.
    assert_eq!(contacts(invites[2]), [moved], "{}", invites[2]);
    // A BYE is no target refresh: no Contact added.
    let byes = traced(&outcome.messages, "BYE ");
    assert!(contacts(byes[0]).is_empty(), "{}", byes[0]);
    p.shutdown().await;
}

/// A re-INVITE without an offer (a session refresh that asks the callee for a new offer,
/// RFC 3261 §14.2 with §13.2.1): its 2xx brings the offer, and the ACK carries the
/// application's answer (`send_ack_answer`), as after `invite_without_offer`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offerless_re_invite_is_acked_with_the_applications_answer() {
    let steps = [
        &call_then_reinvite(),
        &offer_200(false, ""),
        r#"  <recv request="ACK" timeout="5000"/>
"#,
        BYE_OK,
    ]
    .concat();
    let (sipp, dir) = callee("offerless-re-invite", &steps);
    let (p, app) = platform(sipp.local_addr()).await;
    let dialog = answered(&mut invite(&p, app).await).await;
    let ok = tokio::time::timeout(
        WAIT,
        p.send_in_dialog(&dialog, OutgoingRequest::new(Method::Invite, "")),
    )
    .await
    .expect("the re-INVITE's outcome within the wait")
    .expect("a 2xx");
    assert!(
        String::from_utf8_lossy(ok.body()).contains("m=message 5060 sip null"),
        "{ok}"
    );
    let answer = im_answer(2);
    p.send_ack_answer(&dialog, "application/sdp", answer)
        .await
        .unwrap();
    let bye = hang_up(&p, &dialog).await;
    let outcome = assert_succeeded(sipp, dir).await;
    bye.unwrap();
    let acks = traced(&outcome.messages, "ACK ");
    assert_eq!(acks.len(), 2, "{}", outcome.messages);
    assert!(!acks[0].contains("v=0"), "{}", acks[0]);
    assert!(acks[1].contains("CSeq: 2 ACK"), "{}", acks[1]);
    assert!(acks[1].contains("m=message 5061 sip null"), "{}", acks[1]);
    p.shutdown().await;
}

/// A callee whose Contact carries URI headers (allowed in a Contact, not in a
/// Request-URI, RFC 3261 §19.1.1) gets its ACK and the BYE at that Contact less the
/// headers. Both used to fail to build ("headers are not allowed in a Request-URI"):
/// the callee went unACKed and the call could not be hung up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callee_contact_with_uri_headers_gets_the_ack_and_the_bye() {
    let steps = [
        "  <recv request=\"INVITE\" crlf=\"true\"/>\n",
        &answer("200 OK", ";tag=bob-[pid]").replace(
            ";transport=tcp>",
            ";transport=tcp?Subject=hello&amp;Priority=urgent>",
        ),
        r#"  <recv request="ACK">
    <action>
      <ereg regexp="^ACK sip:bob@[^ ?]*;transport=tcp SIP/2.0" search_in="msg" check_it="true" assign_to="ack_line"/>
    </action>
  </recv>
  <recv request="BYE">
    <action>
      <ereg regexp="^BYE sip:bob@[^ ?]*;transport=tcp SIP/2.0" search_in="msg" check_it="true" assign_to="bye_line"/>
    </action>
  </recv>
  <Reference variables="ack_line,bye_line"/>
"#,
        ok_to_last!(),
    ]
    .concat();
    let (sipp, dir) = callee("contact-uri-headers", &steps);
    let (p, app) = platform(sipp.local_addr()).await;
    let mut call = invite(&p, app).await;
    let dialog = answered(&mut call).await;
    let bye = hang_up(&p, &dialog).await;
    let outcome = assert_succeeded(sipp, dir).await;
    bye.unwrap();
    assert!(
        !outcome.messages.contains("Subject: hello"),
        "the URI headers must not become header fields:\n{}",
        outcome.messages
    );
    p.shutdown().await;
}

/// A 2xx whose Record-Route does not parse cannot make a dialog (no route set can be
/// built from it), but the callee still gets its ACK (RFC 3261 §13.2.2.4: every 2xx is
/// ACKed) and a BYE, and the caller a failure naming the malformed header, not a call
/// that no request can be sent in. A retransmission of that 2xx (its ACK went astray),
/// even after the BYE, gets the ACK again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_with_a_malformed_record_route_is_acked_ended_and_reported() {
    let ok = answer("200 OK", ";tag=bob-[pid]").replace(
        "      Content-Length: 0",
        "      Record-Route: <sip:edge.contoso.test;lr\n      Content-Length: 0",
    );
    let steps = [
        RECV_INVITE_KEEPING_HEADERS,
        &ok,
        "  <recv request=\"ACK\" timeout=\"5000\"/>\n",
        BYE_OK,
        &retransmission(&ok),
        "  <recv request=\"ACK\" timeout=\"3000\"/>\n",
    ]
    .concat();
    let (sipp, dir) = callee("malformed-record-route", &steps);
    let (p, app) = platform(sipp.local_addr()).await;
    let mut call = invite(&p, app).await;
    let got = outcome(&mut call).await;
    let outcome = assert_succeeded(sipp, dir).await;
    assert_eq!(acks(&outcome), 2, "{}", outcome.messages);
    match got {
        InviteProgress::Failed(RequestError::Invalid(why)) => {
            assert!(why.contains("Record-Route"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    p.shutdown().await;
}

/// RFC 3261 §8.1.1.8: an INVITE carries a Contact. One the application sends without any
/// gets its endpoint's (the local target of the dialog), so the callee can send in the
/// dialog; it used to leave without one, which the callee could only refuse or guess
/// around.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_sent_without_a_contact_carries_its_endpoints() {
    let steps = [
        r#"  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="^ *&lt;sip:app%40contoso.test@127.0.0.1:[0-9]+;transport=tcp>$" search_in="hdr" header="Contact:" check_it="true" assign_to="contact"/>
    </action>
  </recv>
  <Reference variables="contact"/>
"#,
        &answer("200 OK", ";tag=bob-[pid]"),
        "  <recv request=\"ACK\"/>\n",
        BYE_OK,
    ]
    .concat();
    let (sipp, dir) = callee("invite-default-contact", &steps);
    let (p, app) = platform(sipp.local_addr()).await;
    let request =
        OutgoingRequest::new(Method::Invite, "sip:bob@contoso.test").from("<sip:app@contoso.test>");
    let dialog = answered(&mut p.invite(app, request).await.unwrap()).await;
    let bye = hang_up(&p, &dialog).await;
    assert_succeeded(sipp, dir).await;
    bye.unwrap();
    p.shutdown().await;
}

/// RFC 3261 §13.2.1: when the time an INVITE's Expires gives passes with no final
/// response, the UAC cancels it. The platform sends the CANCEL (after the 180, §9.1), the
/// callee answers 487, and the caller's outcome is `Cancelled`. Before, the INVITE rang on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_whose_expires_passes_unanswered_is_cancelled() {
    let steps = [
        RECV_INVITE_KEEPING_HEADERS,
        &answer("180 Ringing", ";tag=bob-[pid]"),
        "  <recv request=\"CANCEL\" timeout=\"5000\"/>\n",
        ok_to_last!(),
        &retransmission(&answer("487 Request Terminated", ";tag=bob-[pid]")),
        "  <recv request=\"ACK\"/>\n",
    ]
    .concat();
    let (sipp, dir) = callee("invite-expires", &steps);
    let (p, app) = platform(sipp.local_addr()).await;
    let started = std::time::Instant::now();
    let mut call = p
        .invite(app, invite_request(&p).header("Expires", "1"))
        .await
        .unwrap();
    match outcome(&mut call).await {
        InviteProgress::Failed(RequestError::Cancelled) => {}
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_succeeded(sipp, dir).await;
    p.shutdown().await;
}

/// RFC 3261 §8.1.3.3: a response to this UA carries only the Via it sent; one with more
/// is discarded (misrouted or corrupted), here one whose second Via is not ours though its
/// top one matches the MESSAGE. The outcome is the proper 200 that follows, not that one
/// (which used to be taken). One with a foreign Via on top matched nothing already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_with_a_second_via_is_discarded() {
    let reply = |which: &str, extra_via: &str| {
        format!(
            r#"  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
{extra_via}      [last_From:]
      [last_To:];tag=bob-[pid]
      [last_Call-ID:]
      [last_CSeq:]
      X-Which: {which}
      Content-Length: 0

    ]]>
  </send>
"#
        )
    };
    let steps = [
        "  <recv request=\"MESSAGE\" crlf=\"true\"/>\n".to_string(),
        reply(
            "misrouted",
            "      Via: SIP/2.0/TCP 192.0.2.9:5060;branch=z9hG4bK-elsewhere\n",
        ),
        "  <pause milliseconds=\"200\"/>\n".to_string(),
        reply("proper", ""),
    ]
    .concat();
    let (sipp, dir) = callee("second-via", &steps);
    let (p, _app) = platform(sipp.local_addr()).await;
    let message = OutgoingRequest::new(Method::Message, "sip:bob@contoso.test")
        .from("<sip:app@contoso.test>")
        .body("text/plain", "hello");
    let ok = tokio::time::timeout(WAIT, p.send_request(message))
        .await
        .expect("an outcome")
        .unwrap();
    assert_eq!(ok.header_by_name("X-Which"), Some(&b"proper"[..]), "{ok}");
    assert_succeeded(sipp, dir).await;
    p.shutdown().await;
}

/// As above for a re-INVITE (§13.2.1 speaks of any INVITE): unanswered when its Expires
/// passes, it is cancelled after the callee's 180; its outcome is the 487, and the call
/// goes on (the BYE that follows is answered in it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_invite_whose_expires_passes_unanswered_is_cancelled_and_the_call_stays() {
    let steps = [
        "  <recv request=\"INVITE\" crlf=\"true\"/>\n",
        &answer("200 OK", ";tag=bob-[pid]"),
        r#"  <recv request="ACK"/>
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp="[0-9]+" search_in="hdr" header="CSeq:" assign_to="seq"/>
    </action>
  </recv>
"#,
        &answer("180 Ringing", ""),
        "  <recv request=\"CANCEL\" timeout=\"5000\"/>\n",
        ok_to_last!(),
        &answer("487 Request Terminated", "").replace("[last_CSeq:]", "CSeq: [$seq] INVITE"),
        "  <recv request=\"ACK\"/>\n",
        BYE_OK,
    ]
    .concat();
    let (sipp, dir) = callee("re-invite-expires", &steps);
    let (p, app) = platform(sipp.local_addr()).await;
    let dialog = answered(&mut invite(&p, app).await).await;
    let reinvite = OutgoingRequest::new(Method::Invite, "").header("Expires", "1");
    let outcome = tokio::time::timeout(WAIT, p.send_in_dialog(&dialog, reinvite)).await;
    assert!(
        matches!(outcome, Ok(Err(ref e)) if e.status() == 487),
        "{outcome:?}"
    );
    let bye = hang_up(&p, &dialog).await;
    assert_succeeded(sipp, dir).await;
    bye.unwrap();
    p.shutdown().await;
}
