//! The usage examples of README.md, kept compiling and true.
//!
//! Every Rust block of README.md is also a doc test of the `ucma` crate (`src/lib.rs`
//! includes the README under `cfg(doctest)`), so it compiles verbatim; this file checks
//! what a doc test cannot: that a block imports only through `ucma` (a doc test sees every
//! dependency of this package; a user who followed "one dependency" sees only `ucma`).

use ucma::bytes::Bytes;
use ucma::sip_core::{HeaderName, Limits, Method, ParseError, SipMessage};

const README: &str = include_str!("../README.md");

/// The fenced blocks of README.md: (line of the opening fence, info string, body).
fn blocks(markdown: &str) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        match (&mut open, trimmed.strip_prefix("```")) {
            (None, Some(info)) => open = Some((i + 1, info.trim().to_string(), String::new())),
            (Some(_), Some(rest)) if rest.trim().is_empty() => out.extend(open.take()),
            (Some((_, _, body)), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "README.md has an unclosed code block");
    out
}

/// Whether rustdoc treats a block with this info string as Rust (bare fences are Rust).
fn is_rust(info: &str) -> bool {
    let first = info.split([',', ' ']).next().unwrap_or("");
    first.is_empty() || first == "rust"
}

#[test]
fn readme_rust_blocks_are_doc_tests() {
    let lib = include_str!("../src/lib.rs");
    assert!(
        lib.contains("#[doc = include_str!(\"../README.md\")]"),
        "src/lib.rs no longer runs README.md's code blocks as doc tests"
    );
    let rust: Vec<_> = blocks(README)
        .into_iter()
        .filter(|(_, info, _)| is_rust(info))
        .collect();
    assert!(rust.len() >= 3, "the README's usage blocks: {rust:?}");
    for (line, info, _) in &rust {
        assert!(
            info.starts_with("rust"),
            "README.md:{line}: a bare ``` fence is a Rust doc test; say ```text (or ```sh)"
        );
    }
}

#[test]
fn readme_rust_blocks_use_only_the_ucma_facade() {
    for (line, info, body) in blocks(README) {
        if !is_rust(&info) {
            continue;
        }
        for (n, code) in body.lines().enumerate() {
            let code = code.trim_start().trim_start_matches("# ");
            let paths = code
                .strip_prefix("use ")
                .into_iter()
                .chain(code.split("Ok::<(), ").skip(1));
            for path in paths {
                let krate = path.split("::").next().unwrap_or("").trim();
                assert!(
                    ["ucma", "std", "core", "alloc", "crate", "self", "super"].contains(&krate),
                    "README.md:{}: `{code}` names the crate `{krate}`, which a user with the one \
                     dependency `ucma` does not have; write `ucma::{krate}::…`",
                    line + 1 + n
                );
            }
        }
    }
}

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
    let helpdesk = Address::assume_on_premises("sip:helpdesk@contoso.com")?;
    match platform.topology().classify("sip:bob@fabrikam.com")? {
        Homed::Federated(bob) => {
            let conv = Conversation::new(&bot, bob);
            conv.impersonate(&helpdesk)?;
            let call = conv.instant_messaging_call();
            let flow = call.establish().await?;
            flow.send_text("Your ticket was updated").await?;
            call.terminate().await?;
        }
        Homed::OnPremises(alice) => {
            let conv = Conversation::new(&bot, alice);
            conv.impersonate(&helpdesk, "Help Desk")?;
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
