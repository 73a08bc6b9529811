//! The caller's side of an INVITE on the wire: SIPp plays the outbound proxy and the
//! callee over TCP, answering the platform's INVITE as a scenario says, and checks the ACK,
//! CANCEL and BYE the platform sends; the test checks what the caller was told.

use std::net::SocketAddr;
use std::time::Duration;

use collaboration_platform::loopback::LoopbackPki;
use collaboration_platform::{
    Address, CollaborationPlatform, EndpointId, InviteProgress, Listener, OutboundProxy,
    OutgoingInvite, OutgoingRequest, RequestError, ServerPlatformSettings, Topology,
};
use peer_harness::{unique_token, Sipp, SippOutcome, SippProcess, SippTransport};
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
    let mut sipp = Sipp::new(&dir, name, &xml)
        .transport(SippTransport::Tcp)
        .calls(1)
        .timeout(Duration::from_secs(15))
        .trace_messages(true)
        .spawn()
        .expect("SIPp started");
    sipp.wait_listening(WAIT).expect("SIPp listening");
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
    .topology(Topology::new(["contoso.test"]));
    let p = CollaborationPlatform::start(settings).await.unwrap();
    let owner = Address::assume_on_premises("sip:app@contoso.test").unwrap();
    let (id, _rx) = p.register_endpoint(owner, None, false).await.unwrap();
    (p, id)
}

async fn invite(p: &CollaborationPlatform, app: EndpointId) -> OutgoingInvite {
    let req = OutgoingRequest::new(Method::Invite, "sip:bob@contoso.test")
        .from("<sip:app@contoso.test>")
        .header("Contact", format!("<{}>", p.contact_uri("app").unwrap()));
    p.invite(app, req).await.unwrap()
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

/// The 200 to the BYE just received.
const BYE_OK: &str = r#"  <recv request="BYE"/>
  <send>
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
"#;

/// RFC 3261 §13.2.2.4: every retransmission of a 2xx gets the ACK, also from an RFC 2543
/// callee whose 2xx has no To tag (a dialog with a null remote tag, §12.1.2). The
/// retransmission used to be dropped unACKed: the platform named the dialog only by a tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retransmitted_2xx_without_a_to_tag_is_acked_again() {
    let steps = [
        r#"  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="Via:" assign_to="via"/>
      <ereg regexp="[0-9]+" search_in="hdr" header="CSeq:" assign_to="seq"/>
    </action>
  </recv>
"#,
        &answer("200 OK", ""),
        // The retransmission, after the ACK (it went astray): made from the INVITE's Via
        // and CSeq, kept above.
        r#"  <recv request="ACK"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      Via: [$via]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      CSeq: [$seq] INVITE
      Contact: <sip:bob@[local_ip]:[local_port];transport=tcp>
      Content-Length: 0

    ]]>
  </send>
  <recv request="ACK" timeout="3000"/>
"#,
        BYE_OK,
    ]
    .concat();
    let (sipp, dir) = callee("rfc2543-2xx-retransmitted", &steps);
    let (p, app) = platform(sipp.local_addr()).await;
    let mut call = invite(&p, app).await;
    let dialog = match outcome(&mut call).await {
        InviteProgress::Answered { dialog, .. } => dialog,
        other => panic!("{other:?}"),
    };
    assert!(dialog.remote_tag().is_empty(), "{dialog:?}");
    // Let the retransmission arrive and be ACKed before the call ends.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bye = tokio::time::timeout(
        WAIT,
        p.send_in_dialog(&dialog, OutgoingRequest::new(Method::Bye, "")),
    )
    .await;
    let outcome = assert_succeeded(sipp, dir).await;
    assert!(
        matches!(bye, Ok(Ok(ref r)) if r.status() == Some(200)),
        "{bye:?}"
    );
    let acks = outcome
        .messages
        .lines()
        .filter(|l| l.starts_with("ACK "))
        .count();
    assert_eq!(acks, 2, "{}", outcome.messages);
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
  <pause milliseconds="500"/>
"#,
        &answer("200 OK", ";tag=bob-[pid]"),
        r#"  <recv request="ACK"/>
"#,
        BYE_OK,
    ]
    .concat();
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
  <pause milliseconds="500"/>
"#,
        &answer("486 Busy Here", ";tag=bob-[pid]"),
        r#"  <recv request="ACK"/>
  <pause milliseconds="500"/>
"#,
    ]
    .concat();
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
