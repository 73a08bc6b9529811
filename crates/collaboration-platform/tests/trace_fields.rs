//! What the platform's logs say about a request: every event of a transaction is inside
//! its `sip_transaction` span, which names the Call-ID, so one call's lines (its INVITE,
//! the requests inside its dialog, its BYE) can be picked out of a busy platform's log.
//! SIPp plays the outbound proxy and the callee over TCP (client side), and a caller
//! (server side).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use collaboration_platform::loopback::LoopbackPki;
use collaboration_platform::{
    Address, CollaborationPlatform, InviteProgress, Listener, ListenerKind, OutboundProxy,
    OutgoingRequest, ServerPlatformSettings, Topology,
};
use peer_harness::{unique_token, Sipp, SippTransport};
use sip_core::Method;

const WAIT: Duration = Duration::from_secs(10);

/// The log, written by the test's subscriber.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// The 200 to the INVITE just received, with a To tag and a Contact.
const INVITE_OK: &str = r#"  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:];tag=bob-[pid]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:bob@[local_ip]:[local_port];transport=tcp>
      Content-Length: 0

    ]]>
  </send>
"#;

/// The callee's side of one call: INVITE answered, ACK, INFO and BYE answered.
fn sipp_scenario() -> String {
    let in_dialog = r#"  <send>
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
    [
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="trace-fields">
  <recv request="INVITE" crlf="true"/>
"#,
        INVITE_OK,
        "  <recv request=\"ACK\"/>\n  <recv request=\"INFO\"/>\n",
        in_dialog,
        "  <recv request=\"BYE\"/>\n",
        in_dialog,
        "</scenario>\n",
    ]
    .concat()
}

/// A DEBUG subscriber writing to a [`Log`], set for this thread while the guard lives.
fn capture() -> (Log, tracing::subscriber::DefaultGuard) {
    let log = Log::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // The runtimes are current-thread: the platform's tasks run on this thread, under it.
    (log, tracing::subscriber::set_default(subscriber))
}

/// A platform for contoso.test with outbound proxy `proxy` and a TCP listener that takes
/// requests from anyone (SIPp has no certificate).
async fn platform(proxy: SocketAddr) -> CollaborationPlatform {
    let pki = LoopbackPki::new().expect("CA");
    let settings = ServerPlatformSettings::new(
        "ucma-rs trace test",
        "app.contoso.test",
        pki.identity("app.contoso.test").unwrap(),
        pki.roots(),
        OutboundProxy::tcp(proxy),
    )
    .listen(Listener::tcp("127.0.0.1:0".parse().unwrap()).allow_untrusted_peers())
    .topology(Topology::new(["contoso.test"]));
    CollaborationPlatform::start(settings).await.unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn each_transactions_log_lines_name_its_call_id() {
    let (log, _guard) = capture();

    let dir = std::env::temp_dir().join(format!("ucma-trace-{}", unique_token()));
    let sipp = Sipp::new(&dir, "trace-fields", &sipp_scenario())
        .transport(SippTransport::Tcp)
        .calls(1)
        .timeout(Duration::from_secs(15))
        .spawn_listening(WAIT)
        .expect("SIPp listening");
    let proxy: SocketAddr = sipp.local_addr();

    let p = platform(proxy).await;
    let owner = Address::assume_on_premises("sip:app@contoso.test").unwrap();
    let (app, _rx) = p.register_endpoint(owner, None, false).await.unwrap();

    let invite = OutgoingRequest::new(Method::Invite, "sip:bob@contoso.test")
        .from("<sip:app@contoso.test>")
        .header("Contact", format!("<{}>", p.contact_uri("app").unwrap()));
    let mut call = p.invite(app, invite).await.unwrap();
    let (response, dialog) = loop {
        match tokio::time::timeout(WAIT, call.next())
            .await
            .expect("an outcome")
        {
            Some(InviteProgress::Answered { response, dialog }) => break (response, dialog),
            Some(InviteProgress::Provisional(_)) => {}
            other => panic!("{other:?}"),
        }
    };
    let call_id = String::from_utf8_lossy(response.call_id().unwrap()).into_owned();
    for method in [Method::Info, Method::Bye] {
        let r = tokio::time::timeout(
            WAIT,
            p.send_in_dialog(&dialog, OutgoingRequest::new(method, "")),
        )
        .await
        .expect("a response within the wait")
        .expect("a 2xx");
        assert_eq!(r.status(), Some(200));
    }
    let outcome = tokio::task::spawn_blocking(move || sipp.wait())
        .await
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(outcome.succeeded(), "{}", outcome.report());
    p.shutdown().await;

    // Each request's final response is logged in its transaction's span, Call-ID named.
    let lines = log.lines();
    for method in ["INVITE", "INFO", "BYE"] {
        let found = lines.iter().any(|l| {
            l.contains("sip_transaction{")
                && l.contains(&format!("method={method}"))
                && l.contains(&format!("call_id={call_id}"))
                && l.contains("final response")
        });
        assert!(
            found,
            "no {method} line naming call_id={call_id}:\n{}",
            lines.join("\n")
        );
    }
}

/// The caller's side: a MESSAGE to bob, answered 200.
const CALLER_SCENARIO: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="trace-fields-server">
  <send>
    <![CDATA[

      MESSAGE sip:bob@contoso.test SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: <sip:carol@contoso.test>;tag=carol-[pid]
      To: <sip:bob@contoso.test>
      Call-ID: [call_id]
      CSeq: 1 MESSAGE
      Content-Type: text/plain
      Content-Length: [len]

hello
]]>
  </send>
  <recv response="200"/>
</scenario>
"#;

/// A request the platform serves is logged in its server transaction's span too, Call-ID
/// named, with the status its endpoint answered.
#[tokio::test(flavor = "current_thread")]
async fn a_served_requests_log_lines_name_its_call_id() {
    let (log, _guard) = capture();
    // Its outbound proxy is never used here.
    let p = platform("127.0.0.1:9".parse().unwrap()).await;
    let owner = Address::assume_on_premises("sip:bob@contoso.test").unwrap();
    let (_bob, mut requests) = p.register_endpoint(owner, None, false).await.unwrap();
    // Only a TCP listener was asked for.
    assert_eq!(p.listen_addr(ListenerKind::Udp), None);
    let target = p.listen_addr(ListenerKind::Tcp).expect("the TCP listener");

    let dir = std::env::temp_dir().join(format!("ucma-trace-{}", unique_token()));
    let run_dir = dir.clone();
    let caller = tokio::task::spawn_blocking(move || {
        Sipp::new(&run_dir, "trace-fields-server", CALLER_SCENARIO)
            .transport(SippTransport::Tcp)
            .remote(target)
            .calls(1)
            .timeout(Duration::from_secs(15))
            .run()
    });
    let mut message = tokio::time::timeout(WAIT, requests.recv())
        .await
        .expect("the MESSAGE within the wait")
        .expect("endpoint open");
    let call_id = String::from_utf8_lossy(message.request().call_id().unwrap()).into_owned();
    message.respond(200, "OK", &[], None).await.unwrap();
    let outcome = caller.await.unwrap().expect("SIPp ran");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(outcome.succeeded(), "{}", outcome.report());
    p.shutdown().await;

    let lines = log.lines();
    let found = lines.iter().any(|l| {
        l.contains("sip_transaction{")
            && l.contains("side=\"server\"")
            && l.contains("MESSAGE")
            && l.contains(&format!("call_id={call_id}"))
            && l.contains("final response")
            && l.contains("status=200")
    });
    assert!(
        found,
        "no server MESSAGE line naming call_id={call_id}:\n{}",
        lines.join("\n")
    );
}
