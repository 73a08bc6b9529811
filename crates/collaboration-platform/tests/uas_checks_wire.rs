//! RFC 3261 §8.2 (and §12.2.2 inside dialogs) on the wire: SIPp sends the platform
//! requests its UAS checks must refuse (or must not refuse), and the scenario checks the
//! status code and headers that come back; the test checks what reached the endpoints.

use std::net::SocketAddr;
use std::time::Duration;

use collaboration_platform::loopback::LoopbackPki;
use collaboration_platform::{
    Address, CollaborationPlatform, IncomingRequest, Listener, ListenerKind, OutboundProxy,
    RespondError, ServerPlatformSettings, Topology,
};
use peer_harness::{unique_token, Sipp, SippOutcome, SippTransport};
use sip_core::Method;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

/// A platform with a TCP listener that takes requests from anyone (SIPp has no
/// certificate). Its outbound proxy is never used here.
async fn platform() -> CollaborationPlatform {
    let pki = LoopbackPki::new().expect("CA");
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let settings = ServerPlatformSettings::new(
        "ucma-rs uas test",
        "app.contoso.test",
        pki.identity("app.contoso.test").unwrap(),
        pki.roots(),
        OutboundProxy::tcp("127.0.0.1:9".parse().unwrap()),
    )
    .listen(Listener::tcp(loopback).allow_untrusted_peers())
    .topology(Topology::new(["contoso.test"]));
    CollaborationPlatform::start(settings).await.unwrap()
}

async fn endpoint(p: &CollaborationPlatform, user: &str) -> mpsc::Receiver<IncomingRequest> {
    let owner = Address::assume_on_premises(&format!("sip:{user}@contoso.test")).unwrap();
    p.register_endpoint(owner, None, false).await.unwrap().1
}

async fn next(rx: &mut mpsc::Receiver<IncomingRequest>) -> IncomingRequest {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a request within the wait")
        .expect("endpoint open")
}

/// Answers the INVITE that reaches `bob` 200, with bob's Contact.
async fn accept_call(p: &CollaborationPlatform, bob: &mut mpsc::Receiver<IncomingRequest>) {
    let mut invite = next(bob).await;
    let contact = format!("<{}>", p.contact_uri("bob").unwrap());
    invite
        .respond(200, "OK", &[("Contact", &contact)], None)
        .await
        .unwrap();
}

/// Answers the next `n` requests that reach `bob` 200: their methods and CSeq numbers.
async fn answer_next(
    bob: &mut mpsc::Receiver<IncomingRequest>,
    n: usize,
) -> Vec<(Option<Method>, u32)> {
    let mut seen = Vec::new();
    for _ in 0..n {
        let mut r = next(bob).await;
        seen.push((
            r.request().method().cloned(),
            r.request().cseq().unwrap().seq(),
        ));
        r.respond(200, "OK", &[], None).await.unwrap();
    }
    seen
}

/// Starts SIPp running `body` (the scenario's steps) once over TCP against `p`; the
/// outcome comes when it ends.
fn sipp(
    p: &CollaborationPlatform,
    name: &'static str,
    body: &str,
) -> tokio::task::JoinHandle<SippOutcome> {
    let target = p.listen_addr(ListenerKind::Tcp).expect("the TCP listener");
    let xml = format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="{name}">
{body}
</scenario>
"#
    );
    let dir = std::env::temp_dir().join(format!("ucma-uas-{}", unique_token()));
    tokio::task::spawn_blocking(move || {
        let out = Sipp::new(&dir, name, &xml)
            .transport(SippTransport::Tcp)
            .remote(target)
            .calls(1)
            .timeout(Duration::from_secs(15))
            .trace_messages(true)
            .run();
        let _ = std::fs::remove_dir_all(&dir);
        out.expect("SIPp ran")
    })
}

async fn assert_succeeded(run: tokio::task::JoinHandle<SippOutcome>) -> SippOutcome {
    let outcome = run.await.unwrap();
    assert!(
        outcome.succeeded(),
        "{}\n--- messages ---\n{}",
        outcome.report(),
        outcome.messages
    );
    outcome
}

/// A request outside any dialog from carol, on its own `branch`, with `extra` header lines.
fn request(method: &str, user: &str, branch: &str, extra: &str, body: &str) -> String {
    let contact = "      Contact: <sip:carol@[local_ip]:[local_port];transport=tcp>\n";
    request_with_contact(method, user, branch, contact, extra, body)
}

/// [`request`] with `contact` (header lines, possibly none) for carol's Contact.
fn request_with_contact(
    method: &str,
    user: &str,
    branch: &str,
    contact: &str,
    extra: &str,
    body: &str,
) -> String {
    format!(
        r#"  <send>
    <![CDATA[

      {method} sip:{user}@contoso.test SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-{branch}-[pid]
      Max-Forwards: 70
      From: <sip:carol@contoso.test>;tag=carol-[pid]
      To: <sip:{user}@contoso.test>
      Call-ID: [call_id]
      CSeq: 1 {method}
{contact}{extra}      Content-Length: [len]

{body}]]>
  </send>
"#
    )
}

/// A final response `status` to the request sent on `branch`; its To header field is
/// kept for the ACK (variable `to_<branch>`).
fn expect(status: u16, branch: &str, checks: &str) -> String {
    format!(
        r#"  <recv response="100" optional="true"/>
  <recv response="{status}">
    <action>
      <ereg regexp="branch=z9hG4bK-{branch}-" search_in="hdr" header="Via:" check_it="true" assign_to="via_{branch}"/>
      <ereg regexp="&lt;.*" search_in="hdr" header="To:" check_it="true" assign_to="to_{branch}"/>
{checks}    </action>
  </recv>
  <Reference variables="via_{branch},to_{branch}"/>
"#
    )
}

/// The ACK to a non-2xx final answer to the INVITE sent on `branch` (same branch, §17.1.1.3).
fn ack(user: &str, branch: &str) -> String {
    format!(
        r#"  <send>
    <![CDATA[

      ACK sip:{user}@contoso.test SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=z9hG4bK-{branch}-[pid]
      Max-Forwards: 70
      From: <sip:carol@contoso.test>;tag=carol-[pid]
      To: [$to_{branch}]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Content-Length: 0

    ]]>
  </send>
"#
    )
}

/// §8.2.2.2 is about one UA: a forking proxy that sends one INVITE to two users both hosted
/// by this platform reaches two endpoints (two UAs, each with its own contact), and each
/// must get it. The second is not a merged copy of the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_forked_invite_reaches_two_endpoints_of_the_platform() {
    let p = platform().await;
    let mut alice = endpoint(&p, "alice").await;
    let mut bob = endpoint(&p, "bob").await;
    let steps = [
        request("INVITE", "alice", "fork_a", "", ""),
        request("INVITE", "bob", "fork_b", "", ""),
        expect(486, "fork_b", ""),
        expect(486, "fork_a", ""),
        ack("bob", "fork_b"),
        ack("alice", "fork_a"),
    ]
    .concat();
    let run = sipp(&p, "forked-invite", &steps);
    // Both are in progress at once; bob answers first. The two 486s may reach SIPp in one
    // read: it expects them one after the other with no send between, so either way is
    // fine (its ACKs go only after both).
    let mut to_alice = next(&mut alice).await;
    let mut to_bob = next(&mut bob).await;
    assert_eq!(to_bob.request().method(), Some(&Method::Invite));
    to_bob.respond(486, "Busy Here", &[], None).await.unwrap();
    to_alice.respond(486, "Busy Here", &[], None).await.unwrap();
    assert_succeeded(run).await;
    p.shutdown().await;
}

/// The same MESSAGE twice to one endpoint, on two branches (a forking proxy's branches met
/// again): the copy gets 482 while the first is in progress, and the endpoint sees one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_message_gets_482_and_reaches_the_endpoint_once() {
    let p = platform().await;
    let mut bob = endpoint(&p, "bob").await;
    let body = "hello\n";
    let text = "      Content-Type: text/plain\n";
    let steps = [
        request("MESSAGE", "bob", "first", text, body),
        request("MESSAGE", "bob", "again", text, body),
        expect(482, "again", ""),
        expect(200, "first", ""),
    ]
    .concat();
    let run = sipp(&p, "merged-message", &steps);
    let mut first = next(&mut bob).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), bob.recv())
            .await
            .is_err(),
        "the merged copy reached the endpoint"
    );
    first.respond(200, "OK", &[], None).await.unwrap();
    assert_succeeded(run).await;
    p.shutdown().await;
}

/// Answers every request `rx` gets with 200, as an endpoint that takes anything would.
fn answer_all(mut rx: mpsc::Receiver<IncomingRequest>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut n = 0;
        while let Some(mut r) = rx.recv().await {
            n += 1;
            let _ = r.respond(200, "OK", &[], None).await;
        }
        n
    })
}

/// §8.2.3: a body in a content coding nobody here decodes (none is announced) is refused
/// 415 with Accept-Encoding, before any endpoint sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_in_an_unknown_content_coding_gets_415_with_accept_encoding() {
    let p = platform().await;
    let bob = answer_all(endpoint(&p, "bob").await);
    let headers = "      Content-Type: text/plain\n      Content-Encoding: gzip\n";
    let steps = [
        request("MESSAGE", "bob", "gzip", headers, "not really gzip\n"),
        expect(
            415,
            "gzip",
            r#"      <ereg regexp="^ *identity *$" search_in="hdr" header="Accept-Encoding:" check_it="true" assign_to="accept_encoding"/>
"#,
        ),
        r#"  <Reference variables="accept_encoding"/>
"#
        .to_string(),
        // The identity coding is no coding: that body is the endpoint's.
        request(
            "MESSAGE",
            "bob",
            "identity",
            "      Content-Type: text/plain\n      Content-Encoding: identity\n",
            "plain\n",
        ),
        expect(200, "identity", ""),
    ]
    .concat();
    assert_succeeded(sipp(&p, "content-coding", &steps)).await;
    p.shutdown().await;
    assert_eq!(bob.await.unwrap(), 1, "only the plain MESSAGE reached bob");
}

/// §8.2.6.2: every response to a request carries the same To tag. The platform's own 503
/// to an INVITE it could not let finish at shutdown carries the tag of the endpoint's 180.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_503_of_a_shutdown_keeps_the_to_tag_of_the_ringing() {
    let p = platform().await;
    let mut bob = endpoint(&p, "bob").await;
    let steps = [
        request("INVITE", "bob", "ring", "", ""),
        r#"  <recv response="100" optional="true"/>
  <recv response="180"/>
"#
        .to_string(),
        expect(503, "ring", ""),
    ]
    .concat();
    let run = sipp(&p, "shutdown-while-ringing", &steps);
    let mut invite = next(&mut bob).await;
    invite.respond(180, "Ringing", &[], None).await.unwrap();
    let tag = invite.local_tag().to_string();
    // Let the 180 go before the platform stops.
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.shutdown_within(Duration::ZERO).await;
    let outcome = assert_succeeded(run).await;
    let to_tags: Vec<&str> = outcome
        .messages
        .lines()
        .filter(|l| l.starts_with("To:") && l.contains("tag="))
        .map(|l| l.rsplit("tag=").next().unwrap_or("").trim())
        .collect();
    assert_eq!(
        to_tags,
        [tag.as_str(), tag.as_str()],
        "{}",
        outcome.messages
    );
    drop(invite);
}

/// §8.2.5 / §16.6: a request addressed to this UAS with Max-Forwards 0 is this UAS's to
/// answer (483 is for requests it would forward, and it forwards none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_with_max_forwards_0_is_answered_200() {
    let p = platform().await;
    let steps = request("OPTIONS", "app", "mf0", "", "")
        .replace("Max-Forwards: 70", "Max-Forwards: 0")
        + &expect(200, "mf0", "");
    assert_succeeded(sipp(&p, "max-forwards-0", &steps)).await;
    p.shutdown().await;
}

/// A request in the dialog of the last 200 (To with its tag), with this CSeq.
fn in_dialog(method: &str, seq: u32) -> String {
    format!(
        r#"  <send>
    <![CDATA[

      {method} sip:bob@contoso.test SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: <sip:carol@contoso.test>;tag=carol-[pid]
      To: [$to_call]
      Call-ID: [call_id]
      CSeq: {seq} {method}
      Content-Length: 0

    ]]>
  </send>
"#
    )
}

/// §12.2.2: a request in a dialog whose CSeq is below the last one received in it is
/// refused 500 by the platform, and its endpoint never sees it; the dialog goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_a_dialog_with_a_lower_cseq_gets_500() {
    let p = platform().await;
    let mut bob = endpoint(&p, "bob").await;
    let steps = [
        request("INVITE", "bob", "call", "", ""),
        expect(200, "call", ""),
        in_dialog("ACK", 1),
        in_dialog("INFO", 3),
        r#"  <recv response="200"/>
"#
        .to_string(),
        in_dialog("INFO", 2),
        r#"  <recv response="500"/>
"#
        .to_string(),
        in_dialog("BYE", 4),
        r#"  <recv response="200"/>
"#
        .to_string(),
    ]
    .concat();
    let run = sipp(&p, "cseq-out-of-order", &steps);
    accept_call(&p, &mut bob).await;
    let seen = answer_next(&mut bob, 2).await;
    assert_eq!(
        seen,
        [(Some(Method::Info), 3), (Some(Method::Bye), 4)],
        "the INFO with CSeq 2 reached the endpoint"
    );
    assert_succeeded(run).await;
    p.shutdown().await;
}

/// §8.2.2.1 before §8.2.2.3 and §8.2.3: a request for no one here gets 404 whatever it
/// requires and however its body is coded (the platform used to answer 420 here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_no_one_gets_404_before_require_and_coding_are_looked_at() {
    let p = platform().await;
    let bob = answer_all(endpoint(&p, "bob").await);
    let headers = "      Require: nothingSupportsThis\n      Content-Type: text/plain\n      Content-Encoding: gzip\n";
    let steps = [
        request("MESSAGE", "nobody", "nobody", headers, "x\n"),
        expect(404, "nobody", ""),
        // The same request to bob: 420 (§8.2.2.3 before §8.2.3), with Unsupported.
        request("MESSAGE", "bob", "bob", headers, "x\n"),
        expect(
            420,
            "bob",
            r#"      <ereg regexp="^ *nothingSupportsThis *$" search_in="hdr" header="Unsupported:" check_it="true" assign_to="unsupported"/>
"#,
        ),
        r#"  <Reference variables="unsupported"/>
"#
        .to_string(),
    ]
    .concat();
    assert_succeeded(sipp(&p, "404-before-420", &steps)).await;
    p.shutdown().await;
    assert_eq!(bob.await.unwrap(), 0, "a refused MESSAGE reached bob");
}

/// §8.2.2.2 before §8.2.2.3: a merged copy is refused 482 even when it also requires an
/// extension this side lacks (the platform used to answer it 420).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_copy_gets_482_before_its_require_is_looked_at() {
    let p = platform().await;
    let mut bob = endpoint(&p, "bob").await;
    let text = "      Content-Type: text/plain\n";
    let steps = [
        request("MESSAGE", "bob", "first", text, "hello\n"),
        request(
            "MESSAGE",
            "bob",
            "again",
            "      Content-Type: text/plain\n      Require: nothingSupportsThis\n",
            "hello\n",
        ),
        expect(482, "again", ""),
        expect(200, "first", ""),
    ]
    .concat();
    let run = sipp(&p, "482-before-420", &steps);
    let mut first = next(&mut bob).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), bob.recv())
            .await
            .is_err(),
        "the merged copy reached the endpoint"
    );
    first.respond(200, "OK", &[], None).await.unwrap();
    assert_succeeded(run).await;
    p.shutdown().await;
}

/// §12.2.2: a request of a dialog refused by the §8.2 checks changes nothing in it. A BYE
/// that requires an unknown extension gets 420 and the call stays up, and its CSeq number
/// is not used up (the platform used to end the dialog first, so the INFO got 481).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bye_refused_420_leaves_the_dialog_and_its_cseq_as_they_were() {
    let p = platform().await;
    let mut bob = endpoint(&p, "bob").await;
    let steps = [
        request("INVITE", "bob", "call", "", ""),
        expect(200, "call", ""),
        in_dialog("ACK", 1),
        in_dialog("BYE", 2).replace(
            "      Content-Length: 0",
            "      Require: nothingSupportsThis\n      Content-Length: 0",
        ),
        r#"  <recv response="420"/>
"#
        .to_string(),
        in_dialog("INFO", 2),
        r#"  <recv response="200"/>
"#
        .to_string(),
        in_dialog("BYE", 3),
        r#"  <recv response="200"/>
"#
        .to_string(),
    ]
    .concat();
    let run = sipp(&p, "bye-420-atomic", &steps);
    accept_call(&p, &mut bob).await;
    let seen = answer_next(&mut bob, 2).await;
    assert_eq!(seen, [(Some(Method::Info), 2), (Some(Method::Bye), 3)]);
    assert_succeeded(run).await;
    p.shutdown().await;
}

/// §12.2.2 in a dialog whose endpoint is gone (unregistered): its requests are routed by
/// Request-URI as any other (to the default endpoint here), and one the §8.2 checks refuse
/// changes nothing. A BYE refused 420 leaves the dialog up and its CSeq number unused (the
/// platform used to end such a dialog before routing the BYE, so the INFO got 481).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bye_refused_420_in_a_dialog_without_an_endpoint_leaves_it_as_it_was() {
    let p = platform().await;
    let owner = Address::assume_on_premises("sip:bob@contoso.test").unwrap();
    let (bob_id, mut bob) = p.register_endpoint(owner, None, false).await.unwrap();
    let owner = Address::assume_on_premises("sip:app@contoso.test").unwrap();
    let (_, mut app) = p.register_endpoint(owner, None, true).await.unwrap();
    let steps = [
        request("INVITE", "bob", "call", "", ""),
        expect(200, "call", ""),
        in_dialog("ACK", 1),
        // Bob's endpoint goes away meanwhile.
        r#"  <pause milliseconds="500"/>
"#
        .to_string(),
        in_dialog("BYE", 2).replace(
            "      Content-Length: 0",
            "      Require: nothingSupportsThis\n      Content-Length: 0",
        ),
        r#"  <recv response="420"/>
"#
        .to_string(),
        in_dialog("INFO", 2),
        r#"  <recv response="200"/>
"#
        .to_string(),
        in_dialog("BYE", 3),
        r#"  <recv response="200"/>
"#
        .to_string(),
    ]
    .concat();
    let run = sipp(&p, "ownerless-bye-420-atomic", &steps);
    accept_call(&p, &mut bob).await;
    p.unregister_endpoint(bob_id).await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let Ok(Some(mut r)) = tokio::time::timeout(WAIT, app.recv()).await else {
            break;
        };
        seen.push((
            r.request().method().cloned(),
            r.request().cseq().unwrap().seq(),
        ));
        r.respond(200, "OK", &[], None).await.unwrap();
    }
    assert_succeeded(run).await;
    assert_eq!(seen, [(Some(Method::Info), 2), (Some(Method::Bye), 3)]);
    p.shutdown().await;
}

/// An INVITE whose Record-Route is not a list of name-addrs would make a dialog no request
/// could follow (its route set cannot be built, §12.1.1): the platform refuses it with 400
/// before the endpoint sees it. Before, the endpoint could answer 200 and the call had no
/// dialog: its ACK and BYE were not taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_with_a_malformed_record_route_gets_400_and_reaches_no_endpoint() {
    let p = platform().await;
    let bob = answer_all(endpoint(&p, "bob").await);
    let steps = [
        request(
            "INVITE",
            "bob",
            "badrr",
            "      Record-Route: <sip:edge.contoso.test;lr\n",
            "",
        ),
        expect(400, "badrr", ""),
        ack("bob", "badrr"),
    ]
    .concat();
    assert_succeeded(sipp(&p, "bad-record-route", &steps)).await;
    p.shutdown().await;
    assert_eq!(bob.await.unwrap(), 0, "the INVITE reached bob");
}

/// RFC 3261 §8.1.1.8: an INVITE carries exactly one SIP or SIPS URI in its Contact, the
/// dialog's remote target. Without one the platform answers 400 with the reason in the
/// phrase, and no endpoint sees the INVITE; before, the dialog fell back to the From URI
/// (or the first of several Contacts), so the BYE went where the caller never said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_without_one_sip_contact_gets_400_saying_so_and_reaches_no_endpoint() {
    let p = platform().await;
    let bob = answer_all(endpoint(&p, "bob").await);
    let cases = [
        ("none", "", "Missing Contact"),
        ("tel", "      Contact: <tel:+14255550100>\n", "Contact Not a SIP URI"),
        ("star", "      Contact: *\n", "Contact \\* Not Allowed"),
        (
            "two",
            "      Contact: <sip:carol@[local_ip]:[local_port];transport=tcp>, <sip:carol@pc2.contoso.test>\n",
            "More Than One Contact",
        ),
        ("broken", "      Contact: <sip:carol@[local_ip]\n", "Malformed Contact"),
    ];
    let mut steps = String::new();
    for (branch, contact, reason) in cases {
        steps += &request_with_contact("INVITE", "bob", branch, contact, "", "");
        let check = format!(
            "      <ereg regexp=\"^SIP/2.0 400 {reason}\\r\" search_in=\"msg\" check_it=\"true\" assign_to=\"line_{branch}\"/>\n"
        );
        steps += &expect(400, branch, &check);
        steps += &format!("  <Reference variables=\"line_{branch}\"/>\n");
        steps += &ack("bob", branch);
    }
    assert_succeeded(sipp(&p, "invite-contacts", &steps)).await;
    p.shutdown().await;
    assert_eq!(bob.await.unwrap(), 0, "an INVITE reached bob");
}

/// §12.2.2 with §8.1.1.8: a target refresh in a dialog (UPDATE here) whose Contact is not a
/// SIP or SIPS URI is refused 400 saying so, before the endpoint sees it, so the peer does
/// not take its new target for accepted; the dialog goes on with the target it had. Before,
/// the request was delivered and the Contact silently ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_refresh_whose_contact_is_not_a_sip_uri_gets_400_saying_so() {
    let p = platform().await;
    let mut bob = endpoint(&p, "bob").await;
    let update = in_dialog("UPDATE", 2).replace(
        "      Content-Length: 0",
        "      Contact: <tel:+14255550100>\n      Content-Length: 0",
    );
    let steps = [
        request("INVITE", "bob", "call", "", ""),
        expect(200, "call", ""),
        in_dialog("ACK", 1),
        update,
        r#"  <recv response="400">
    <action>
      <ereg regexp="^SIP/2.0 400 Contact Not a SIP URI\r" search_in="msg" check_it="true" assign_to="line"/>
    </action>
  </recv>
  <Reference variables="line"/>
"#
        .to_string(),
        in_dialog("INFO", 3),
        "  <recv response=\"200\"/>\n".to_string(),
        in_dialog("BYE", 4),
        "  <recv response=\"200\"/>\n".to_string(),
    ]
    .concat();
    let run = sipp(&p, "refresh-tel-contact", &steps);
    accept_call(&p, &mut bob).await;
    let seen: Vec<_> = answer_next(&mut bob, 2)
        .await
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    assert_eq!(
        seen,
        [Some(Method::Info), Some(Method::Bye)],
        "the UPDATE reached the endpoint"
    );
    assert_succeeded(run).await;
    p.shutdown().await;
}

/// RFC 3261 §12.1.1: the response that makes a dialog carries the UAS's Contact. An
/// endpoint's 200 to an INVITE without one gets the endpoint's, so the caller's ACK and
/// BYE reach it; it used to leave without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_answered_without_a_contact_carries_the_endpoints() {
    let p = platform().await;
    let mut bob = endpoint(&p, "bob").await;
    let check = "      <ereg regexp=\"^ *&lt;sip:bob%40contoso.test@127.0.0.1:[0-9]+;transport=tcp>$\" search_in=\"hdr\" header=\"Contact:\" check_it=\"true\" assign_to=\"contact\"/>\n";
    let steps = [
        request("INVITE", "bob", "call", "", ""),
        expect(200, "call", check),
        "  <Reference variables=\"contact\"/>\n".to_string(),
        in_dialog("ACK", 1),
        in_dialog("BYE", 2),
        "  <recv response=\"200\"/>\n".to_string(),
    ]
    .concat();
    let run = sipp(&p, "answer-default-contact", &steps);
    let mut invite = next(&mut bob).await;
    invite.respond(200, "OK", &[], None).await.unwrap();
    let mut bye = next(&mut bob).await;
    assert_eq!(bye.request().method(), Some(&Method::Bye));
    bye.respond(200, "OK", &[], None).await.unwrap();
    assert_succeeded(run).await;
    p.shutdown().await;
}

/// RFC 3261 §13.3.1: an INVITE whose Expires passes before the endpoint answers it finally
/// is answered 487 by the platform, and the endpoint finds it cancelled (its late 200 is
/// refused), as after a CANCEL. Before, the INVITE stood until the endpoint answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_whose_expires_passes_unanswered_gets_487() {
    let p = platform().await;
    let mut bob = endpoint(&p, "bob").await;
    let steps = [
        request("INVITE", "bob", "exp", "      Expires: 1\n", ""),
        "  <recv response=\"180\"/>\n".to_string(),
        expect(487, "exp", ""),
        ack("bob", "exp"),
    ]
    .concat();
    // Before SIPp starts, so before the INVITE can arrive: at least a second passes.
    let started = std::time::Instant::now();
    let run = sipp(&p, "invite-expires", &steps);
    let mut invite = next(&mut bob).await;
    invite.respond(180, "Ringing", &[], None).await.unwrap();
    while !invite.is_cancelled() {
        assert!(started.elapsed() < WAIT, "the INVITE never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(started.elapsed() >= Duration::from_secs(1));
    let late = invite.respond(200, "OK", &[], None).await;
    assert_eq!(late, Err(RespondError::Cancelled));
    assert_succeeded(run).await;
    p.shutdown().await;
}

/// RFC 3326: a forking proxy cancels the branches of a call another device answered with
/// `Reason: SIP;cause=200;text="Call completed elsewhere"`. The endpoint finds its INVITE
/// cancelled and what the CANCEL said, so it need not count the call as missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_invite_says_what_its_cancel_said() {
    let p = platform().await;
    let mut bob = endpoint(&p, "bob").await;
    let reason = "      Reason: SIP;cause=200;text=\"Call completed elsewhere\"\n";
    let steps = [
        request("INVITE", "bob", "elsewhere", "", ""),
        "  <recv response=\"180\"/>\n".to_string(),
        request_with_contact("CANCEL", "bob", "elsewhere", "", reason, ""),
        "  <recv response=\"200\"/>\n".to_string(),
        expect(487, "elsewhere", ""),
        ack("bob", "elsewhere"),
    ]
    .concat();
    let run = sipp(&p, "cancel-with-reason", &steps);
    let mut invite = next(&mut bob).await;
    assert_eq!(invite.cancel_diagnostics(), None, "not cancelled yet");
    invite.respond(180, "Ringing", &[], None).await.unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while !invite.is_cancelled() {
        assert!(
            std::time::Instant::now() < deadline,
            "the CANCEL never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        invite.cancel_diagnostics(),
        Some(" (reason SIP 200: \"Call completed elsewhere\")")
    );
    assert_eq!(
        invite.respond(200, "OK", &[], None).await,
        Err(RespondError::Cancelled)
    );
    assert_succeeded(run).await;
    p.shutdown().await;
}
