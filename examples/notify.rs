//! `cargo run --example notify -- [flags] [--register] --message TEXT URI...`: sends one
//! IM to each URI (home or federated) and prints one line per URI with its outcome:
//! delivered in an IM call, delivered as a page-mode MESSAGE (the peer takes no IM
//! sessions), or failed and why. Exits 0 when every message was delivered, 1 otherwise,
//! 2 on a usage error. Shared flags (also `UCMA_*` variables): see `examples/common`.
//!
//! ```text
//! cargo run --example notify -- --proxy fe.contoso.com:5061 --cert app.pem --key app.key \
//!     --ca ca.pem --uri sip:notify@contoso.com --home-domain contoso.com --listen 0.0.0.0:5061 \
//!     --message "The build is green" sip:alice@contoso.com sip:bob@fabrikam.com
//! ```

#[path = "common/mod.rs"]
mod common;

use std::process::ExitCode;
use std::time::{Duration, Instant};
use ucma::prelude::*;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // The message first: its text may be anything, `--register` included.
    let message = match take_value(&mut args, "--message") {
        Ok(Some(m)) => m,
        Ok(None) => return usage("--message TEXT is required"),
        Err(e) => return usage(&e),
    };
    let register = args.iter().any(|a| a == "--register");
    args.retain(|a| a != "--register");
    let (flags, targets) = match common::Flags::parse(args) {
        Ok(p) => p,
        Err(e) => return usage(&e),
    };
    if targets.is_empty() {
        return usage("at least one URI is required");
    }
    let settings = match flags.platform_settings("ucma-rs notify") {
        Ok(s) => s,
        Err(e) => return usage(&e),
    };
    let Some(uri) = flags.uri.clone() else {
        return usage("--uri is required (the sender's address, e.g. sip:notify@contoso.com)");
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("notify: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(run(settings, uri, register, message, targets))
}

async fn run(
    settings: PlatformSettings,
    uri: String,
    register: bool,
    message: String,
    targets: Vec<String>,
) -> ExitCode {
    let platform = match CollaborationPlatform::start(settings).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("notify: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let owner = match platform.topology().classify(&uri) {
        Ok(Homed::OnPremises(a)) => a,
        Ok(Homed::Federated(_)) => {
            eprintln!("notify: {uri} is not in a home domain (--home-domain)");
            platform.shutdown_within(Duration::from_millis(200)).await;
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("notify: --uri {uri}: {e}");
            platform.shutdown_within(Duration::from_millis(200)).await;
            return ExitCode::from(2);
        }
    };
    let endpoint = ApplicationEndpoint::new(
        &platform,
        ApplicationEndpointSettings::new(owner).use_registration(register),
    );
    if let Err(e) = endpoint.establish().await {
        eprintln!("notify: cannot establish {uri}: {e}");
        platform.shutdown_within(Duration::from_millis(200)).await;
        return ExitCode::FAILURE;
    }
    // All targets at once; one line each, in the order given.
    let endpoint = std::sync::Arc::new(endpoint);
    let mut sends = tokio::task::JoinSet::new();
    for (i, target) in targets.iter().cloned().enumerate() {
        let endpoint = endpoint.clone();
        let message = message.clone();
        sends.spawn(async move {
            let t0 = Instant::now();
            let outcome = match endpoint.core().platform().topology().classify(&target) {
                Ok(homed) => {
                    let homing = if homed.is_federated() {
                        "federated"
                    } else {
                        "on-premises"
                    };
                    let r = match AnyConversation::new(&*endpoint, homed) {
                        AnyConversation::OnPremises(c) => c.deliver_text(&message).await,
                        AnyConversation::Federated(c) => c.deliver_text(&message).await,
                    };
                    (homing, r.map_err(|e| e.to_string()))
                }
                Err(e) => ("refused", Err(e.to_string())),
            };
            (i, target, outcome, t0.elapsed())
        });
    }
    let mut results = sends.join_all().await;
    results.sort_by_key(|r| r.0);
    let mut all_ok = true;
    for (_, target, (homing, outcome), took) in results {
        let ms = took.as_secs_f64() * 1e3;
        match outcome {
            Ok(d) => println!("{target}\t{homing}\tdelivered ({d:?})\t{ms:.1} ms"),
            Err(e) => {
                all_ok = false;
                println!("{target}\t{homing}\tfailed: {e}\t{ms:.1} ms");
            }
        }
    }
    endpoint.terminate().await;
    platform.shutdown_within(Duration::from_millis(500)).await;
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn take_value(args: &mut Vec<String>, name: &str) -> Result<Option<String>, String> {
    let prefix = format!("{name}=");
    if let Some(i) = args.iter().position(|a| a.starts_with(&prefix)) {
        let v = args.remove(i);
        return Ok(Some(v[prefix.len()..].to_string()));
    }
    match args.iter().position(|a| a == name) {
        Some(i) if i + 1 < args.len() => {
            let v = args.remove(i + 1);
            args.remove(i);
            Ok(Some(v))
        }
        Some(_) => Err(format!("{name} needs a value")),
        None => Ok(None),
    }
}

fn usage(why: &str) -> ExitCode {
    eprintln!(
        "notify: {why}\nusage: cargo run --example notify -- [flags] [--register] --message TEXT URI...\n{}",
        common::USAGE
    );
    ExitCode::from(2)
}
