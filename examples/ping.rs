//! `cargo run --example ping -- [flags] TARGET-URI`: sends OPTIONS through the front end,
//! prints the status line and the round-trip time; exits 0 on 2xx, 1 otherwise (with the
//! reason), 2 on a usage error. Flags (also `UCMA_*` variables): see `examples/common`.
//!
//! ```text
//! cargo run --example ping -- --proxy fe.contoso.com:5061 --cert app.pem --key app.key \
//!     --ca ca.pem --uri sip:bot@contoso.com --home-domain contoso.com sip:alice@contoso.com
//! ```

#[path = "common/mod.rs"]
mod common;

use std::process::ExitCode;
use std::time::{Duration, Instant};
use ucma::prelude::*;

fn main() -> ExitCode {
    let (flags, positional) = match common::Flags::parse(std::env::args().skip(1)) {
        Ok(p) => p,
        Err(e) => return usage(&e),
    };
    let [target] = positional.as_slice() else {
        return usage("exactly one TARGET-URI is required");
    };
    let settings = match flags.platform_settings("ucma-rs ping") {
        Ok(s) => s,
        Err(e) => return usage(&e),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ping: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let platform = match CollaborationPlatform::start(settings).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("ping: cannot start: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut request = OutgoingRequest::options(target.clone());
        if let Some(uri) = &flags.uri {
            request = request.from(format!("<{uri}>"));
        }
        let t0 = Instant::now();
        let outcome = platform.send_request(request).await;
        let rtt = t0.elapsed();
        let code = match outcome {
            Ok(r) => {
                println!(
                    "SIP/2.0 {} {} ({:.1} ms)",
                    r.status().unwrap_or(0),
                    String::from_utf8_lossy(r.reason().unwrap_or_default()),
                    rtt.as_secs_f64() * 1e3
                );
                ExitCode::SUCCESS
            }
            Err(RequestError::Status { code, reason, .. }) => {
                println!(
                    "SIP/2.0 {code} {reason} ({:.1} ms)",
                    rtt.as_secs_f64() * 1e3
                );
                eprintln!("ping: {target} answered {code} {reason}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!(
                    "ping: {target}: {e} (after {:.1} ms)",
                    rtt.as_secs_f64() * 1e3
                );
                ExitCode::FAILURE
            }
        };
        platform.shutdown_within(Duration::from_millis(200)).await;
        code
    })
}

fn usage(error: &str) -> ExitCode {
    eprintln!(
        "ping: {error}\nusage: cargo run --example ping -- [flags] TARGET-URI\n{}",
        common::USAGE
    );
    ExitCode::from(2)
}
