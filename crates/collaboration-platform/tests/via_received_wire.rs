//! RFC 3261 §18.2.1 and RFC 3581 §4 on the wire: SIPp sends the platform an OPTIONS whose
//! top Via names an address it does not send from (as a client behind a NAT does), and the
//! response it gets back must say where the request really came from.

use std::net::SocketAddr;
use std::time::Duration;

use collaboration_platform::loopback::LoopbackPki;

use collaboration_platform::{
    CollaborationPlatform, Listener, ListenerKind, OutboundProxy, ServerPlatformSettings, Topology,
    WireDirection, WireLog,
};
use peer_harness::{free_tcp_ports, unique_token, HarnessError, Sipp, SippTransport};

/// A platform with TCP and UDP listeners that take requests from anyone (SIPp has no
/// certificate). Its outbound proxy is never used here.
async fn platform() -> CollaborationPlatform {
    platform_with(None).await
}

/// What the wire tap saw go `direction`, as text, with the address it gave.
fn seen(tap: &WireLog, direction: WireDirection) -> Vec<(SocketAddr, String)> {
    tap.records_of(direction)
        .iter()
        .map(|r| (r.remote, r.text().into_owned()))
        .collect()
}

async fn platform_with(tap: Option<WireLog>) -> CollaborationPlatform {
    let pki = LoopbackPki::new().expect("CA");
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let settings = ServerPlatformSettings::new(
        "ucma-rs via test",
        "app.contoso.test",
        pki.identity("app.contoso.test").unwrap(),
        pki.roots(),
        OutboundProxy::tcp("127.0.0.1:9".parse().unwrap()),
    )
    .listen(Listener::tcp(loopback).allow_untrusted_peers())
    .listen(Listener::udp(loopback).allow_untrusted_peers())
    .topology(Topology::new(["contoso.test"]));
    let settings = match tap {
        Some(tap) => settings.observer(tap.as_observer()),
        None => settings,
    };
    CollaborationPlatform::start(settings).await.unwrap()
}

/// One OPTIONS whose top Via is `SIP/2.0/<transport> <via>`; the run fails unless the 200
/// comes back with a top Via that matches `expect` (a regular expression).
fn scenario(via: &str, expect: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="OPTIONS from behind a NAT">
  <send retrans="500">
    <![CDATA[

      OPTIONS sip:app@contoso.test SIP/2.0
      Via: SIP/2.0/[transport] {via}
      Max-Forwards: 70
      From: <sip:nat@contoso.test>;tag=[pid]-[call_number]
      To: <sip:app@contoso.test>
      Call-ID: [call_id]
      CSeq: 1 OPTIONS
      Content-Length: 0

    ]]>
  </send>
  <recv response="200">
    <action>
      <ereg regexp="{expect}" search_in="hdr" header="Via:" check_it="true" assign_to="via"/>
    </action>
  </recv>
  <Reference variables="via"/>
</scenario>
"#
    )
}

/// Runs the scenario `xml_for(port)` once from SIPp on a free local `port` to the
/// platform's listener of `kind`; panics with SIPp's report unless it succeeded. The port
/// is in the scenario's expectations, so it is chosen here, and chosen again (three tries)
/// when another process takes it before SIPp binds it.
async fn run(p: &CollaborationPlatform, kind: ListenerKind, xml_for: impl Fn(u16) -> String) {
    let (transport, name) = match kind {
        ListenerKind::Udp => (SippTransport::Udp, "nat-udp"),
        _ => (SippTransport::Tcp, "nat-tcp"),
    };
    let target = p.listen_addr(kind).expect("the listener");
    let mut tries = 0;
    let outcome = loop {
        tries += 1;
        let port = free_tcp_ports(1).unwrap()[0];
        let xml = xml_for(port);
        let dir = std::env::temp_dir().join(format!("ucma-via-{}", unique_token()));
        let out = tokio::task::spawn_blocking(move || {
            let out = Sipp::new(&dir, name, &xml)
                .transport(transport)
                .remote(target)
                .local_port(port)
                .calls(1)
                .timeout(Duration::from_secs(10))
                .trace_messages(true)
                .run();
            let _ = std::fs::remove_dir_all(&dir);
            out
        })
        .await
        .unwrap();
        match out {
            Err(HarnessError::PortInUse { .. }) if tries < 3 => continue,
            out => break out.expect("SIPp ran"),
        }
    };
    assert!(
        outcome.succeeded(),
        "{}\n--- messages ---\n{}",
        outcome.report(),
        outcome.messages
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_request_whose_sent_by_is_not_its_source_is_answered_with_received() {
    let p = platform().await;
    // The Via names another host and port; the response still comes on the connection,
    // and says where the request came from (no rport: none was asked for).
    run(&p, ListenerKind::Tcp, |_| {
        scenario(
            "192.0.2.1:5999;branch=[branch]",
            r"^ *SIP/2\.0/TCP 192\.0\.2\.1:5999;branch=z9hG4bK[^;,]*;received=127\.0\.0\.1 *$",
        )
    })
    .await;
    p.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_request_asking_for_rport_is_answered_to_its_source_port_with_rport_and_received() {
    let tap = WireLog::new();
    let p = platform_with(Some(tap.clone())).await;
    // The Via's sent-by is an address SIPp does not have; RFC 3581: the response goes to
    // the source address and port, and carries both.
    run(&p, ListenerKind::Udp, |port| {
        scenario(
            "192.0.2.1:5999;rport;branch=[branch]",
            &format!(
                r"^ *SIP/2\.0/UDP 192\.0\.2\.1:5999;rport={port};branch=z9hG4bK[^;,]*;received=127\.0\.0\.1 *$"
            ),
        )
    })
    .await;
    p.shutdown().await;
    // The wire tap shows the request as SIPp sent it, not with the Via the transport
    // stamped for the response.
    let options = seen(&tap, WireDirection::Received)
        .into_iter()
        .map(|(_, m)| m)
        .find(|m| m.starts_with("OPTIONS "))
        .expect("the tap saw the OPTIONS");
    assert!(
        options.contains("Via: SIP/2.0/UDP 192.0.2.1:5999;rport;branch="),
        "{options}"
    );
    assert!(!options.contains("received="), "{options}");
}

/// A UDP client that sends from one socket and listens on another, the port its Via's
/// sent-by names (SIPp sends and listens on one port, so these are the test's own).
struct SplitClient {
    sender: tokio::net::UdpSocket,
    listener: tokio::net::UdpSocket,
}

impl SplitClient {
    async fn new() -> Self {
        SplitClient {
            sender: tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            listener: tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    /// Sends `p`'s UDP listener an OPTIONS without `rport` and returns the response that
    /// came to the listening socket.
    async fn options(&self, p: &CollaborationPlatform) -> String {
        let target = p.listen_addr(ListenerKind::Udp).expect("the UDP listener");
        let listen_port = self.listener.local_addr().unwrap().port();
        let request = format!(
            "OPTIONS sip:app@contoso.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP 127.0.0.1:{listen_port};branch=z9hG4bK-sent-by-{}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:split@contoso.test>;tag=1\r\n\
             To: <sip:app@contoso.test>\r\n\
             Call-ID: sent-by-{}\r\n\
             CSeq: 1 OPTIONS\r\n\
             Content-Length: 0\r\n\r\n",
            unique_token(),
            unique_token()
        );
        self.sender
            .send_to(request.as_bytes(), target)
            .await
            .unwrap();
        let mut buf = vec![0u8; 65_536];
        let (n, _) =
            tokio::time::timeout(Duration::from_secs(5), self.listener.recv_from(&mut buf))
                .await
                .expect("the response comes to the sent-by port")
                .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// RFC 3261 §18.2.2 without `rport`: a client that sends from one port and listens on
/// another (its Via's sent-by) gets the response on the port it listens on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_response_goes_to_the_sent_by_port_when_rport_was_not_asked_for() {
    let p = platform().await;
    let client = SplitClient::new().await;
    let response = client.options(&p).await;
    assert!(response.starts_with("SIP/2.0 200 "), "{response}");
    assert!(response.contains("Call-ID: sent-by-"), "{response}");
    // Nothing went to the port the request was sent from.
    let mut other = vec![0u8; 65_536];
    assert!(
        tokio::time::timeout(
            Duration::from_millis(300),
            client.sender.recv_from(&mut other)
        )
        .await
        .is_err(),
        "a response went to the source port too"
    );
    p.shutdown().await;
}

/// The wire tap names the address a UDP response was sent to (the Via's sent-by here), not
/// the address its request came from: a ladder or audit log shows where it really went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wire_tap_records_a_udp_response_as_sent_where_it_went() {
    let tap = WireLog::new();
    let p = platform_with(Some(tap.clone())).await;
    let client = SplitClient::new().await;
    let response = client.options(&p).await;
    assert!(response.starts_with("SIP/2.0 200 "), "{response}");
    p.shutdown().await;
    let source = client.sender.local_addr().unwrap();
    let listening = client.listener.local_addr().unwrap();
    let received = seen(&tap, WireDirection::Received);
    let (from, _) = received
        .iter()
        .find(|(_, m)| m.starts_with("OPTIONS "))
        .expect("the tap saw the OPTIONS");
    assert_eq!(*from, source, "a request is recorded from its source");
    let sent = seen(&tap, WireDirection::Sent);
    let (to, ok) = sent
        .iter()
        .find(|(_, m)| m.starts_with("SIP/2.0 200 "))
        .expect("the tap saw the 200");
    assert_eq!(
        *to, listening,
        "recorded as sent to {to}; it went to {listening}\n{ok}"
    );
}
