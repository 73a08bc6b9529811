//! `cargo run --example echo_bot -- [flags] [--register]`: a bot on a real front end. It
//! accepts IM conversations from home and federated users and echoes each message back,
//! prefixed with the sender's homing (`[on-premises]` / `[federated]`). Logs with tracing
//! (`RUST_LOG=debug` for every transaction). Stops on Ctrl-C (or SIGTERM): hangs up the
//! conversations still going on, terminates its endpoint and shuts the platform down.
//! Exits 0 when stopped so, 1 when the endpoint ended by itself (e.g. its registration was
//! refused for good), so a service manager restarts it on failure.
//!
//! `--uri` is the bot's identity (an address of a home domain); `--register` registers its
//! contact with the front end's registrar so requests for that URI reach it (otherwise the
//! front end must route to the application by configuration). Shared flags (also `UCMA_*`
//! variables): see `examples/common`.
//!
//! ```text
//! cargo run --example echo_bot -- --proxy fe.contoso.com:5061 --cert app.pem --key app.key \
//!     --ca ca.pem --uri sip:bot@contoso.com --home-domain contoso.com \
//!     --listen 0.0.0.0:5061 --register
//! ```

#[path = "common/mod.rs"]
mod common;

use std::process::ExitCode;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};
use ucma::prelude::*;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let register = take_switch(&mut args, "--register");
    let (flags, positional) = match common::Flags::parse(args) {
        Ok(p) => p,
        Err(e) => return usage(&e),
    };
    if !positional.is_empty() {
        return usage("no positional arguments expected");
    }
    let settings = match flags.platform_settings("ucma-rs echo_bot") {
        Ok(s) => s,
        Err(e) => return usage(&e),
    };
    let Some(uri) = flags.uri.clone() else {
        return usage("--uri is required (the bot's address, e.g. sip:bot@contoso.com)");
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("echo_bot: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(settings, uri, register))
}

async fn run(settings: PlatformSettings, uri: String, register: bool) -> ExitCode {
    let platform = match CollaborationPlatform::start(settings).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("echo_bot: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The bot is hosted here, so its own address must be on-premises.
    let owner = match platform.topology().classify(&uri) {
        Ok(Homed::OnPremises(a)) => a,
        Ok(Homed::Federated(_)) => {
            eprintln!("echo_bot: {uri} is not in a home domain (--home-domain): an application cannot be hosted as a federated identity");
            platform.shutdown_within(Duration::from_millis(200)).await;
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("echo_bot: --uri {uri}: {e}");
            platform.shutdown_within(Duration::from_millis(200)).await;
            return ExitCode::from(2);
        }
    };
    let endpoint = ApplicationEndpoint::new(
        &platform,
        ApplicationEndpointSettings::new(owner)
            .display_name("Echo Bot")
            .use_registration(register),
    );
    let mut calls = incoming_im_calls(&endpoint);
    if let Err(e) = endpoint.establish().await {
        eprintln!("echo_bot: cannot establish {uri}: {e}");
        platform.shutdown_within(Duration::from_millis(200)).await;
        return ExitCode::FAILURE;
    }
    info!(%uri, register, "echo bot ready");

    // Each conversation runs in its own task; `stop` tells them to hang up.
    let (stop, stopped) = watch::channel(false);
    let mut conversations = JoinSet::new();
    let mut states = endpoint.watch_state();
    let signal = shutdown_signal();
    tokio::pin!(signal);
    // Asked to stop (a signal) is success; the endpoint ending by itself (a registration
    // refused for good, the front end gone) is a failure a service manager restarts on.
    let mut asked_to_stop = false;
    loop {
        tokio::select! {
            call = calls.next() => match call {
                Some(call) => { conversations.spawn(echo(call, stopped.clone())); }
                None => break,
            },
            changed = states.changed() => {
                if changed.is_err() { break; }
                let s = states.borrow().clone();
                info!(state = ?s.state, reason = %s.reason, "endpoint state");
                if s.state == EndpointState::Terminated { break; }
            }
            why = &mut signal => {
                info!("{why}: stopping");
                asked_to_stop = true;
                break;
            }
            // Reap finished conversations as they end.
            Some(_) = conversations.join_next(), if !conversations.is_empty() => {}
        }
    }
    // A second Ctrl-C leaves at once, should the clean stop below take too long.
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("echo_bot: second Ctrl-C: exiting without a clean stop");
            std::process::exit(130);
        }
    });
    // Hang up what is still going on (BYE), then unregister and stop the platform.
    drop(calls);
    let _ = stop.send(true);
    let live = conversations.len();
    if tokio::time::timeout(Duration::from_secs(5), conversations.join_all())
        .await
        .is_err()
    {
        warn!("conversations still ending after 5 s; stopping anyway");
    }
    endpoint.terminate().await;
    let report = platform.shutdown().await;
    info!(
        conversations_ended = live,
        transactions_cancelled = report.cancelled,
        "stopped"
    );
    if asked_to_stop {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Ctrl-C, or on Unix the SIGTERM a service manager sends. If the handlers cannot be
/// installed, the bot stops at once rather than run without a way to stop it cleanly.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM");
                return "no signal handler";
            }
        };
        tokio::select! {
            r = tokio::signal::ctrl_c() => match r {
                Ok(()) => "Ctrl-C",
                Err(e) => { warn!(error = %e, "cannot listen for Ctrl-C"); "no signal handler" }
            },
            _ = term.recv() => "SIGTERM",
        }
    }
    #[cfg(not(unix))]
    match tokio::signal::ctrl_c().await {
        Ok(()) => "Ctrl-C",
        Err(e) => {
            warn!(error = %e, "cannot listen for Ctrl-C");
            "no signal handler"
        }
    }
}

/// One conversation, typed by the caller's homing.
async fn echo(call: IncomingImCall, stop: watch::Receiver<bool>) {
    match call {
        IncomingImCall::OnPremises(call) => echo_typed(call, stop).await,
        IncomingImCall::Federated(call) => echo_typed(call, stop).await,
    }
}

/// Accept, echo every message with the caller's homing until the caller hangs up, or hang
/// up when the bot stops.
async fn echo_typed<H: Homing>(incoming: IncomingCall<H>, mut stop: watch::Receiver<bool>) {
    let caller = incoming.conversation().remote().uri().to_string();
    let conversation = incoming.conversation().id().to_string();
    let homing = H::NAME;
    info!(%caller, homing, %conversation, "IM call offered");
    let mut flow = match incoming.accept().await {
        Ok(f) => f,
        Err(e) => {
            warn!(%caller, error = %e, "could not accept");
            return;
        }
    };
    loop {
        tokio::select! {
            m = flow.recv() => {
                let Some(m) = m else { break };
                let text = m.text();
                let echo = format!("[{homing}] {text}");
                info!(%caller, %text, %echo, "message");
                if let Err(e) = flow.send_text(&echo).await {
                    warn!(%caller, error = %e, "echo not delivered");
                }
            }
            // (The guard `wait_for` returns is dropped at once: it must not live across
            // the hang-up's await.)
            _ = async { drop(stop.wait_for(|stop| *stop).await) } => {
                match flow.terminate().await {
                    Ok(()) => info!(%caller, "hung up: the bot is stopping"),
                    Err(e) => warn!(%caller, error = %e, "hang-up failed"),
                }
                return;
            }
        }
    }
    info!(%caller, "conversation ended");
}

fn take_switch(args: &mut Vec<String>, name: &str) -> bool {
    let before = args.len();
    args.retain(|a| a != name);
    args.len() != before
}

fn usage(why: &str) -> ExitCode {
    eprintln!(
        "echo_bot: {why}\nusage: cargo run --example echo_bot -- [flags] [--register]\n{}",
        common::USAGE
    );
    ExitCode::from(2)
}
