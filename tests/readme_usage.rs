//! The usage example of README.md, kept compiling and true.

use bytes::Bytes;
use ucma::sip_core::{HeaderName, Limits, Method, ParseError, SipMessage};

#[test]
fn readme_usage() -> Result<(), ParseError> {
    let wire = Bytes::from_static(
        b"MESSAGE sip:bob@fabrikam.test SIP/2.0\r\n\
      v: SIP/2.0/TLS app.contoso.test;branch=z9hG4bK1\r\n\
      f: <sip:bot@contoso.test>;tag=1\r\nt: <sip:bob@fabrikam.test>\r\n\
      i: 42@app\r\nCSeq: 7 MESSAGE\r\nMax-Forwards: 70\r\nl: 2\r\n\r\nhi",
    );
    let msg = SipMessage::parse_datagram(wire.clone(), &Limits::default())?;
    assert_eq!(msg.method(), Some(&Method::Message));
    assert_eq!(msg.top_via()?.branch(), Some("z9hG4bK1"));
    assert_eq!(msg.cseq()?.seq(), 7);
    assert_eq!(msg.to_bytes(), wire);
    let mut ok = SipMessage::response_to(&msg, 200, "OK")?;
    ok.set_to_tag("b7")?;
    ok.push_header(HeaderName::Server, "ucma-rs")?;
    let again = SipMessage::parse_datagram(ok.to_bytes(), &Limits::default())?;
    assert_eq!(again.status(), Some(200));
    assert_eq!(again.to()?.tag(), Some(&b"b7"[..]));
    Ok(())
}

/// The platform example of README.md: compiled (not run: it needs a front end).
#[allow(dead_code)]
async fn readme_platform() -> Result<(), Box<dyn std::error::Error>> {
    use ucma::prelude::*;
    let settings = ServerPlatformSettings::from_pem_files(
        "contoso-bot/1.0",
        "app.contoso.com",
        "app.pem",
        "app.key",
        "ca.pem",
        OutboundProxy::tls("10.0.0.5:5061".parse()?, "fe.contoso.com"),
    )?
    .listen(Listener::mutual_tls("0.0.0.0:5061".parse()?))
    .topology(Topology::new(["contoso.com"]));
    let platform = CollaborationPlatform::start(settings).await?;
    let ok = platform
        .send_request(OutgoingRequest::message("sip:bob@fabrikam.com", "hello"))
        .await?;
    println!("{:?}", ok.status());
    platform.shutdown().await;
    Ok(())
}

/// The endpoints and conversations example of README.md: compiled (not run: it needs a
/// front end; `examples/quickstart.rs` and the crates' tests run the same calls).
#[allow(dead_code)]
async fn readme_endpoints(
    platform: ucma::prelude::CollaborationPlatform,
) -> Result<(), Box<dyn std::error::Error>> {
    use ucma::prelude::*;
    let bot = ApplicationEndpoint::new(
        &platform,
        ApplicationEndpointSettings::new(Address::assume_on_premises("sip:bot@contoso.com")?)
            .display_name("Contoso Bot")
            .use_registration(true),
    );
    let mut calls = incoming_im_calls(&bot);
    bot.establish().await?;
    match platform.topology().classify("sip:bob@fabrikam.com")? {
        Homed::Federated(bob) => {
            let conv = Conversation::new(&bot, bob);
            conv.impersonate("sip:helpdesk@contoso.com")?;
            let call = conv.instant_messaging_call();
            let flow = call.establish().await?;
            flow.send_text("Your ticket was updated").await?;
            call.terminate().await?;
        }
        Homed::OnPremises(alice) => {
            let conv = Conversation::new(&bot, alice);
            conv.impersonate("sip:helpdesk@contoso.com", "Help Desk")?;
        }
    }
    while let Some(call) = calls.next().await {
        let homing = call.homing();
        let mut flow = call.accept().await?;
        while let Some(m) = flow.recv().await {
            flow.send_text(&format!("[{homing}] {}", m.text())).await?;
        }
    }
    Ok(())
}
