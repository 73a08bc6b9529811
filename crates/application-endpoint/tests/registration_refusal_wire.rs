//! A registrar's refusal as the application sees it: SIPp plays a Lync / Skype for
//! Business style registrar over TCP that refuses the endpoint's REGISTER with 403 and an
//! `ms-diagnostics` header saying why, and the endpoint's error carries that reason.

use std::net::SocketAddr;
use std::time::Duration;

use application_endpoint::{
    ApplicationEndpoint, ApplicationEndpointSettings, EndpointError, EndpointState,
};
use collaboration_platform::loopback::LoopbackPki;
use collaboration_platform::{
    Address, CollaborationPlatform, Listener, OutboundProxy, ServerPlatformSettings, Topology,
};
use peer_harness::{unique_token, Sipp, SippTransport};

const WAIT: Duration = Duration::from_secs(10);

/// A registrar that refuses one REGISTER with 403 and says why in `ms-diagnostics` (the
/// code is arbitrary; the reason is one Lync servers give).
const REFUSING_REGISTRAR: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="registrar refusing with ms-diagnostics">
  <recv request="REGISTER" crlf="true"/>
  <send>
    <![CDATA[

      SIP/2.0 403 Forbidden
      [last_Via:]
      [last_From:]
      [last_To:];tag=registrar-[pid]
      [last_Call-ID:]
      [last_CSeq:]
      ms-diagnostics: 4005;reason="Destination URI either not enabled for SIP or does not exist";source="registrar.contoso.test"
      Content-Length: 0

    ]]>
  </send>
</scenario>
"#;

async fn platform(proxy: SocketAddr) -> CollaborationPlatform {
    let pki = LoopbackPki::new().expect("CA");
    let settings = ServerPlatformSettings::new(
        "ucma-rs registration refusal test",
        "app.contoso.test",
        pki.identity("app.contoso.test").unwrap(),
        pki.roots(),
        OutboundProxy::tcp(proxy),
    )
    .listen(Listener::tcp("127.0.0.1:0".parse().unwrap()))
    .topology(Topology::new(["contoso.test"]));
    CollaborationPlatform::start(settings).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_registration_says_what_the_registrar_said() {
    let dir = std::env::temp_dir().join(format!("ucma-register-403-{}", unique_token()));
    let sipp = Sipp::new(&dir, "registrar-403", REFUSING_REGISTRAR)
        .transport(SippTransport::Tcp)
        .calls(1)
        .timeout(Duration::from_secs(15))
        .spawn_listening(WAIT)
        .expect("SIPp listening");
    let p = platform(sipp.local_addr()).await;
    let bot = ApplicationEndpoint::new(
        &p,
        ApplicationEndpointSettings::new(
            Address::assume_on_premises("sip:bot@contoso.test").unwrap(),
        )
        .use_registration(true),
    );
    let result = tokio::time::timeout(WAIT, bot.establish())
        .await
        .expect("refused within the wait");
    match result {
        Err(EndpointError::Authentication { status, reason }) => {
            assert_eq!(status, 403);
            assert_eq!(
                reason,
                "Forbidden (ms-diagnostics 4005: \"Destination URI either not enabled for SIP \
                 or does not exist\")"
            );
        }
        other => panic!("expected a 403 authentication error, got {other:?}"),
    }
    assert_eq!(bot.state(), EndpointState::Idle);
    let outcome = tokio::task::spawn_blocking(move || sipp.wait())
        .await
        .unwrap()
        .expect("SIPp ran");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(outcome.succeeded(), "{}", outcome.report());
    p.shutdown().await;
}
