//! `cargo run --example quickstart`: needs no server.
//!
//! Two platforms in one process talk over mutual TLS on loopback, with a certificate
//! authority made at start (`collaboration_platform::loopback`). On the first, the
//! application endpoint `sip:bot@contoso.test` opens an IM conversation with
//! `sip:alice@contoso.test`, an endpoint on the second that echoes what it gets. They
//! exchange a few messages, then the bot hangs up. The run prints the SIP ladder diagram
//! as the bot's platform saw it, writes it as SVG, prints the timings and exits 0.

use std::time::{Duration, Instant};

use collaboration_platform::loopback::{pair, LoopbackPki};
use ucma::prelude::*;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let mut timings: Vec<(String, Duration)> = Vec::new();
    let mut lap = {
        let mut last = Instant::now();
        move |what: &str, timings: &mut Vec<(String, Duration)>| {
            let now = Instant::now();
            timings.push((what.to_string(), now - last));
            last = now;
        }
    };

    // Two trusted applications, each the other's outbound proxy, with a fresh CA.
    let pki = LoopbackPki::new()?;
    let ladder = LadderRecorder::new("bot@contoso");
    let observer = ladder.as_observer();
    let (bot_platform, alice_platform) =
        pair(&pki, "app.contoso.test", "alice.contoso.test", |me, s| {
            let s = s.topology(Topology::new(["contoso.test"]));
            if me == "app.contoso.test" {
                s.observer(observer.clone())
            } else {
                s
            }
        })
        .await?;
    for (_, addr) in alice_platform.listen_addrs() {
        ladder.name_host(addr.ip(), "alice@contoso");
    }
    lap(
        "two platforms started (CA, certificates, listeners)",
        &mut timings,
    );

    let bot = ApplicationEndpoint::new(
        &bot_platform,
        ApplicationEndpointSettings::new(Address::assume_on_premises("sip:bot@contoso.test")?)
            .display_name("Contoso Bot"),
    );
    let alice = ApplicationEndpoint::new(
        &alice_platform,
        ApplicationEndpointSettings::new(Address::assume_on_premises("sip:alice@contoso.test")?),
    );
    bot.establish().await?;
    alice.establish().await?;
    lap("endpoints established", &mut timings);

    // Alice accepts IM calls and echoes every message, prefixed with the caller's homing.
    let mut calls = incoming_im_calls(&alice);
    let echo = tokio::spawn(async move {
        let call = calls.next().await.ok_or("alice's endpoint stopped")?;
        let homing = call.homing();
        let mut flow = call
            .accept()
            .await
            .map_err(|e| format!("alice could not accept: {e}"))?;
        let mut echoed = 0;
        while let Some(m) = flow.recv().await {
            flow.send_text(&format!("[{homing}] {}", m.text()))
                .await
                .map_err(|e| format!("alice's echo of {:?} failed: {e}", m.text()))?;
            echoed += 1;
        }
        Ok::<_, String>(echoed)
    });

    // Who alice is comes from the topology (`contoso.test` is a home domain): an
    // `Address<OnPremises>`, so the conversation is typed as one with a home user.
    let Homed::OnPremises(alice_address) =
        bot_platform.topology().classify("sip:alice@contoso.test")?
    else {
        return Err("alice should be homed on premises".into());
    };
    // The bot opens the conversation (its first message rides in the INVITE) and talks.
    let conversation = Conversation::new(&bot, alice_address).with_subject("quick start");
    let call = conversation.instant_messaging_call();
    let mut flow = call.establish_with_message("Hello Alice").await?;
    lap("IM call established (INVITE, 200, ACK)", &mut timings);
    let reply = flow.recv().await.ok_or("no echo of the first message")?;
    println!("bot got: {}", reply.text());
    for text in ["How are you?", "Bye for now"] {
        let sent = Instant::now();
        flow.send_text(text).await?;
        let reply = flow.recv().await.ok_or("no echo")?;
        println!(
            "bot got: {}  ({:.2} ms round trip)",
            reply.text(),
            ms(sent.elapsed())
        );
    }
    lap("three messages echoed", &mut timings);
    call.terminate().await?;
    let echoed = echo.await??;
    println!("alice echoed {echoed} messages");
    lap("call ended (BYE, 200)", &mut timings);

    let picture = ladder.snapshot();
    println!("\nSIP ladder (as the bot's platform saw the wire):\n");
    println!("{}", picture.render_text());
    let svg = std::env::temp_dir().join("ucma-quickstart-ladder.svg");
    std::fs::write(&svg, picture.render_svg())?;
    println!("SVG ladder written to {}\n", svg.display());
    println!("Timings:");
    for (what, d) in &timings {
        println!("  {:>8.2} ms  {what}", ms(*d));
    }
    println!("  {:>8.2} ms  total", ms(t0.elapsed()));
    bot.terminate().await;
    alice.terminate().await;
    bot_platform.shutdown().await;
    alice_platform.shutdown().await;
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
