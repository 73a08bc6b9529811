//! What the load benchmarks share: the SIPp→SIPp pager reference measured in the same run,
//! and the machine's load average.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use collaboration_platform::CollaborationPlatform;
use peer_harness::{scenarios, Sipp, SippStats};

/// SIPp's rate cap: far above what one machine reaches, so the window is the limit.
pub const SIPP_RATE: f64 = 200_000.0;

/// One SIPp run's outcome: successful and failed transactions, and the time SIPp counted.
#[derive(Debug, Clone, Copy)]
pub struct SippRun {
    pub ok: u64,
    pub failed: u64,
    pub elapsed: Duration,
}

impl SippRun {
    /// Successful transactions per second.
    pub fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.ok as f64 / s
        } else {
            0.0
        }
    }
}

/// A SIPp UAS answering 200 to every MESSAGE until it is dropped (or `lifetime` ends).
pub fn start_sipp_uas(
    dir: &Path,
    name: &str,
    lifetime: Duration,
) -> Result<peer_harness::SippProcess, String> {
    let mut uas = Sipp::new(dir, name, scenarios::UAS_MESSAGE)
        .timeout(lifetime)
        .spawn()
        .map_err(|e| format!("SIPp UAS: {e}"))?;
    uas.wait_listening(Duration::from_secs(10))
        .map_err(|e| format!("SIPp UAS not listening: {e}"))?;
    Ok(uas)
}

/// The reference: a SIPp UAC sending pager MESSAGEs to a SIPp UAS over TCP on loopback,
/// `window` outstanding, for `secs` whole seconds (SIPp's `-timeout` granularity).
pub fn sipp_pager_reference(dir: &Path, secs: u64, window: usize) -> Result<SippRun, String> {
    let secs = secs.max(1);
    let uas = start_sipp_uas(dir, "ref-uas", Duration::from_secs(secs + 25))?;
    let outcome = Sipp::new(dir, "ref-uac", scenarios::UAC_MESSAGE)
        .remote(uas.local_addr())
        .key("to_user", "bot")
        .key("to_domain", "contoso.test")
        .key("from_user", "sipp")
        .key("from_domain", "contoso.test")
        .rate(SIPP_RATE)
        .limit(window as u64)
        .timeout(Duration::from_secs(secs))
        .run()
        .map_err(|e| format!("SIPp UAC: {e}"))?;
    drop(uas);
    if outcome.stats.successful_calls == 0 {
        return Err(format!("SIPp UAC completed nothing:\n{}", outcome.report()));
    }
    Ok(SippRun {
        ok: outcome.stats.successful_calls,
        failed: outcome.stats.failed_calls,
        elapsed: sipp_elapsed(&outcome.stats).unwrap_or(Duration::from_secs(secs)),
    })
}

/// The run time in SIPp's statistics: `CurrentTime` minus `StartTime`, each ending with the
/// epoch seconds.
pub fn sipp_elapsed(stats: &SippStats) -> Option<Duration> {
    let epoch =
        |k: &str| -> Option<f64> { stats.fields.get(k)?.split_whitespace().last()?.parse().ok() };
    let d = epoch("CurrentTime")? - epoch("StartTime")?;
    (d > 0.0).then(|| Duration::from_secs_f64(d))
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

/// Resident set size of this process, in bytes (Linux `/proc/self/statm`).
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Where results are written: `$CARGO_TARGET_DIR/bench-results` or `target/bench-results`.
pub fn results_dir() -> std::path::PathBuf {
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    base.join("bench-results")
}

/// Stops a platform at the end of a case without letting a stuck shutdown stall the run:
/// half a second of grace, three seconds in all, the outcome ignored (the case is measured).
pub async fn stop(platform: &CollaborationPlatform) {
    let _ = tokio::time::timeout(
        Duration::from_secs(3),
        platform.shutdown_within(Duration::from_millis(500)),
    )
    .await;
}
