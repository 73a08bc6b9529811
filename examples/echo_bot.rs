//! `cargo run --example echo_bot -- [flags] [--register]`: a bot on a real front end. It
//! accepts IM conversations from home and federated users and echoes each message back,
//! prefixed with the sender's homing (`[on-premises]` / `[federated]`). Logs with tracing
//! (`RUST_LOG=debug` for every transaction). Stops on Ctrl-C, terminating its endpoint.
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
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("echo_bot: --uri {uri}: {e}");
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
        return ExitCode::FAILURE;
    }
    info!(%uri, register, "echo bot ready");
    let mut states = endpoint.watch_state();
    loop {
        tokio::select! {
            call = calls.next() => match call {
                Some(call) => { tokio::spawn(echo(call)); }
                None => break,
            },
            changed = states.changed() => {
                if changed.is_err() { break; }
                let s = states.borrow().clone();
                info!(state = ?s.state, reason = %s.reason, "endpoint state");
                if s.state == EndpointState::Terminated { break; }
            }
            _ = tokio::signal::ctrl_c() => {
                info!("stopping");
                break;
            }
        }
    }
    endpoint.terminate().await;
    platform.shutdown().await;
    ExitCode::SUCCESS
}

/// One conversation: accept, echo every message with the caller's homing, until BYE.
async fn echo(call: IncomingImCall) {
    let caller = call.caller_uri().to_string();
    let homing = call.homing();
    let conversation = call.conversation().id().to_string();
    info!(%caller, homing, %conversation, "IM call offered");
    let mut flow = match call.accept().await {
        Ok(f) => f,
        Err(e) => {
            warn!(%caller, error = %e, "could not accept");
            return;
        }
    };
    while let Some(m) = flow.recv().await {
        let text = m.text();
        let echo = format!("[{homing}] {text}");
        info!(%caller, %text, %echo, "message");
        if let Err(e) = flow.send_text(&echo).await {
            warn!(%caller, error = %e, "echo not delivered");
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
