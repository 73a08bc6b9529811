//! # `pager_load`: pager MESSAGE throughput, ucma-rs against SIPp
//!
//! Run with `cargo bench --bench pager_load`. One run measures four cases, each for the same
//! fixed time (`PAGER_LOAD_SECS`, default 5) with the same window of outstanding
//! transactions (`PAGER_LOAD_WINDOW`, default 200). A pager transaction is one `MESSAGE`
//! answered `200 OK`; everything runs on loopback:
//!
//! 1. `sipp->sipp tcp`: SIPp UAC to SIPp UAS over TCP, the reference (`-l WINDOW`);
//! 2. `ucma->sipp tcp`: the platform's UAC (`send_request`, WINDOW tasks each with one
//!    request outstanding) to a SIPp UAS;
//! 3. `ucma->ucma tcp`: the same UAC to a platform UAS (a default-routing endpoint that
//!    answers 200 to everything), the UAS being the UAC's outbound proxy;
//! 4. `ucma->ucma tls`: as 3 over mutual TLS (certificates from `peer_harness::TestPki`:
//!    the UAS presents `fe.contoso.test`, the UAC `app.contoso.test`).
//!
//! ## Reading the output
//!
//! Each case prints its transactions per second (successful transactions divided by the
//! time the case ran), the failed transactions (error or non-200 answer; must be 0) and the
//! ratio to case 1, measured again in the same run: compare ratios, not absolute figures,
//! between machines. SIPp's figures come from its own statistics file (`-trace_stat`); its
//! time is whole seconds, at least 1. Transactions still outstanding when a case's time is
//! up are not counted for SIPp; the platform's UAC lets its last requests finish and counts
//! that time. The targets are printed, not asserted: `ucma->ucma tcp` at least 2x the
//! reference, `ucma->ucma tls` at least 0.8x `ucma->ucma tcp`. The client and server share
//! the machine (and, for ucma->ucma, one tokio runtime), so other load on the machine lowers
//! every figure; the load average before and after is recorded. Results go to
//! `target/bench-results/pager_load.json` (`$CARGO_TARGET_DIR` when set).
//!
//! Under `cargo test` (no `--bench` argument) the same cases run as a short smoke test
//! (0.5 s per case, SIPp 1 s, window 10) that fails on any failed transaction and writes
//! `pager_load-smoke.json` instead. Every wait is bounded, and a watchdog ends the process
//! if the whole run overruns.

#[path = "common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use collaboration_platform::{
    Address, ClientPlatformSettings, CollaborationPlatform, Identity, Listener, OutboundProxy,
    OutgoingRequest, ServerPlatformSettings, Topology, TrustRoots,
};
use interop_support::{runtime, try_bounded};
use peer_harness::{CertFiles, Deployment, TestPki};

/// The request URI of every MESSAGE (a home-domain user, so nothing is federated).
const TARGET_URI: &str = "sip:bot@contoso.test";
/// The text of every MESSAGE.
const TEXT: &[u8] = b"Hello from the ucma-rs pager load benchmark.";

/// Bound of each setup step (starting a platform, registering the endpoint).
const STEP: Duration = Duration::from_secs(10);

/// How the run is sized.
#[derive(Debug, Clone, Copy)]
struct Config {
    /// Time of each ucma case.
    duration: Duration,
    /// Outstanding transactions.
    window: usize,
    /// `cargo test` smoke run rather than `cargo bench`.
    smoke: bool,
}

impl Config {
    fn from_env() -> Config {
        let smoke = !std::env::args().any(|a| a == "--bench");
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if smoke {
            return Config {
                duration: Duration::from_millis(500),
                window: 10,
                smoke,
            };
        }
        let secs = env("PAGER_LOAD_SECS")
            .map(|v| v.trim().parse::<f64>().expect("PAGER_LOAD_SECS: seconds"))
            .unwrap_or(5.0);
        assert!(secs > 0.0 && secs < 3600.0, "PAGER_LOAD_SECS out of range");
        let window = env("PAGER_LOAD_WINDOW")
            .map(|v| {
                v.trim()
                    .parse::<usize>()
                    .expect("PAGER_LOAD_WINDOW: a count")
            })
            .unwrap_or(200);
        assert!(window > 0, "PAGER_LOAD_WINDOW must be at least 1");
        Config {
            duration: Duration::from_secs_f64(secs),
            window,
            smoke,
        }
    }

    /// SIPp's `-timeout` is whole seconds.
    fn sipp_duration(&self) -> Duration {
        Duration::from_secs(self.duration.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// Bound of a single transaction of the platform's UAC.
    fn per_request(&self) -> Duration {
        if self.smoke {
            Duration::from_secs(3)
        } else {
            Duration::from_secs(10)
        }
    }

    /// Bound of the whole run, enforced by the watchdog.
    fn whole_run(&self) -> Duration {
        let per_case = self.sipp_duration() + self.per_request() + Duration::from_secs(10);
        per_case * 4 + Duration::from_secs(if self.smoke { 10 } else { 30 })
    }
}

/// What one case measured.
#[derive(Debug, Clone)]
struct CaseResult {
    name: &'static str,
    transport: &'static str,
    ok: u64,
    failed: u64,
    elapsed: Duration,
    /// Why the case could not run, if it could not.
    error: Option<String>,
}

impl CaseResult {
    fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.ok as f64 / s
        } else {
            0.0
        }
    }

    fn broken(name: &'static str, transport: &'static str, error: String) -> CaseResult {
        CaseResult {
            name,
            transport,
            ok: 0,
            failed: 0,
            elapsed: Duration::ZERO,
            error: Some(error),
        }
    }
}

fn main() {
    let cfg = Config::from_env();
    let limit = cfg.whole_run();
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("pager_load: the run did not finish within {limit:?}; giving up");
        std::process::exit(2);
    });
    let load_before = common::load_average();
    println!(
        "pager_load ({}): {:?} per case, window {}",
        if cfg.smoke { "smoke test" } else { "benchmark" },
        cfg.duration,
        cfg.window
    );

    let dir = tempfile::Builder::new()
        .prefix("pager-load-")
        .tempdir()
        .expect("a temporary folder");
    let pki = TestPki::generate(&dir.path().join("pki")).expect("test certificates");
    let rt = runtime();

    let results = vec![
        sipp_to_sipp(&cfg, dir.path()),
        ucma_to_sipp(&cfg, dir.path(), &rt, &pki),
        ucma_to_ucma(&cfg, &rt, &pki, false),
        ucma_to_ucma(&cfg, &rt, &pki, true),
    ];
    drop(rt);
    let load_after = common::load_average();

    let reference = results[0].rate();
    let ratio = |r: &CaseResult| {
        if reference > 0.0 {
            r.rate() / reference
        } else {
            0.0
        }
    };
    println!(
        "{:<16} {:>12} {:>10} {:>8} {:>9} {:>11}",
        "case", "transactions", "failed", "secs", "tx/s", "x sipp"
    );
    for r in &results {
        println!(
            "{:<16} {:>12} {:>10} {:>8.2} {:>9.0} {:>10.2}x{}",
            r.name,
            r.ok,
            r.failed,
            r.elapsed.as_secs_f64(),
            r.rate(),
            ratio(r),
            r.error
                .as_deref()
                .map(|e| format!("  ERROR: {e}"))
                .unwrap_or_default()
        );
    }
    let tcp_vs_sipp = ratio(&results[2]);
    let tls_vs_tcp = if results[2].rate() > 0.0 {
        results[3].rate() / results[2].rate()
    } else {
        0.0
    };
    let met = |v: f64, t: f64| if v >= t { "met" } else { "NOT met" };
    println!(
        "target ucma->ucma tcp >= 2.0x sipp->sipp: {tcp_vs_sipp:.2}x ({})",
        met(tcp_vs_sipp, 2.0)
    );
    println!(
        "target ucma->ucma tls >= 0.8x ucma->ucma tcp: {tls_vs_tcp:.2}x ({})",
        met(tls_vs_tcp, 0.8)
    );
    println!(
        "load average before {load_before}, after {load_after} (2 cores shared by both sides)"
    );

    let json = to_json(
        &cfg,
        &results,
        reference,
        tcp_vs_sipp,
        tls_vs_tcp,
        &load_before,
        &load_after,
    );
    let out_dir = target_dir().join("bench-results");
    let file = out_dir.join(if cfg.smoke {
        "pager_load-smoke.json"
    } else {
        "pager_load.json"
    });
    match std::fs::create_dir_all(&out_dir).and_then(|()| std::fs::write(&file, json)) {
        Ok(()) => println!("results written to {}", file.display()),
        Err(e) => eprintln!("could not write {}: {e}", file.display()),
    }

    let broken: Vec<String> = results
        .iter()
        .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.name)))
        .collect();
    let failed: u64 = results.iter().map(|r| r.failed).sum();
    assert!(broken.is_empty(), "cases that could not run: {broken:?}");
    assert_eq!(failed, 0, "failed pager transactions");
    assert!(
        results.iter().all(|r| r.ok > 0),
        "a case completed no transaction"
    );
}

/// Case 1: SIPp UAC to SIPp UAS over TCP.
fn sipp_to_sipp(cfg: &Config, dir: &Path) -> CaseResult {
    const NAME: &str = "sipp->sipp tcp";
    match common::sipp_pager_reference(dir, cfg.sipp_duration().as_secs(), cfg.window) {
        Ok(r) => CaseResult {
            name: NAME,
            transport: "tcp",
            ok: r.ok,
            failed: r.failed,
            elapsed: r.elapsed,
            error: None,
        },
        Err(e) => CaseResult::broken(NAME, "tcp", e),
    }
}

/// Case 2: the platform's UAC to a SIPp UAS over TCP.
fn ucma_to_sipp(
    cfg: &Config,
    dir: &Path,
    rt: &tokio::runtime::Runtime,
    pki: &TestPki,
) -> CaseResult {
    const NAME: &str = "ucma->sipp tcp";
    let uas = match start_sipp_uas(cfg, dir, "ucma-uas") {
        Ok(u) => u,
        Err(e) => return CaseResult::broken(NAME, "tcp", e),
    };
    let proxy = OutboundProxy::tcp(uas.local_addr());
    let result = rt.block_on(async {
        let uac = client_platform(pki, proxy, false).await?;
        let r = drive(cfg, &uac).await;
        common::stop(&uac).await;
        r
    });
    drop(uas);
    finish(NAME, "tcp", result)
}

/// Cases 3 and 4: the platform's UAC to a platform UAS, over TCP or mutual TLS.
fn ucma_to_ucma(
    cfg: &Config,
    rt: &tokio::runtime::Runtime,
    pki: &TestPki,
    tls: bool,
) -> CaseResult {
    let (name, transport) = if tls {
        ("ucma->ucma tls", "tls")
    } else {
        ("ucma->ucma tcp", "tcp")
    };
    let result = rt.block_on(async {
        let (uas, addr) = server_platform(pki, tls).await?;
        let proxy = if tls {
            OutboundProxy::tls(addr, Deployment::Contoso.fqdn())
        } else {
            OutboundProxy::tcp(addr)
        };
        let r = match client_platform(pki, proxy, tls).await {
            Ok(uac) => {
                let r = drive(cfg, &uac).await;
                common::stop(&uac).await;
                r
            }
            Err(e) => Err(e),
        };
        common::stop(&uas).await;
        r
    });
    finish(name, transport, result)
}

/// What the platform's UAC counted: successes, failures, time.
type Drive = Result<(u64, u64, Duration), String>;

fn finish(name: &'static str, transport: &'static str, r: Drive) -> CaseResult {
    match r {
        Ok((ok, failed, elapsed)) => CaseResult {
            name,
            transport,
            ok,
            failed,
            elapsed,
            error: None,
        },
        Err(e) => CaseResult::broken(name, transport, e),
    }
}

/// A SIPp UAS answering 200 to every MESSAGE until it is dropped (or its timeout).
fn start_sipp_uas(
    cfg: &Config,
    dir: &Path,
    name: &str,
) -> Result<peer_harness::SippProcess, String> {
    common::start_sipp_uas(
        dir,
        name,
        cfg.sipp_duration() + cfg.per_request() + Duration::from_secs(15),
    )
}

fn identity(c: &CertFiles) -> Result<Identity, String> {
    Identity::from_pem(c.cert_pem.as_bytes(), c.key_pem.as_bytes()).map_err(|e| e.to_string())
}

fn roots(pki: &TestPki) -> Result<TrustRoots, String> {
    TrustRoots::from_pem(pki.ca_pem().as_bytes()).map_err(|e| e.to_string())
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The UAC: a client platform whose outbound proxy is the UAS (presenting the
/// application certificate over TLS).
async fn client_platform(
    pki: &TestPki,
    proxy: OutboundProxy,
    tls: bool,
) -> Result<CollaborationPlatform, String> {
    let mut settings = ClientPlatformSettings::new("ucma-rs pager_load uac", roots(pki)?, proxy)
        .topology(Topology::new([Deployment::Contoso.domain()]));
    if tls {
        settings = settings.identity(identity(pki.application(Deployment::Contoso))?);
    }
    try_bounded(
        STEP,
        "starting the UAC platform",
        CollaborationPlatform::start(settings),
    )
    .await?
    .map_err(|e| format!("starting the UAC platform: {e}"))
}

/// The UAS: a server platform listening on TCP (untrusted peers allowed) or mutual TLS
/// (the UAC's certificate name trusted), with one default-routing endpoint answering 200.
async fn server_platform(
    pki: &TestPki,
    tls: bool,
) -> Result<(CollaborationPlatform, SocketAddr), String> {
    let fe = Deployment::Contoso;
    let listener = if tls {
        Listener::mutual_tls(loopback())
    } else {
        Listener::tcp(loopback()).allow_untrusted_peers()
    };
    // Never used: the UAS only answers.
    let unused_proxy = OutboundProxy::tcp(SocketAddr::from(([127, 0, 0, 1], 9)));
    let settings = ServerPlatformSettings::new(
        "ucma-rs pager_load uas",
        fe.fqdn(),
        identity(pki.front_end(fe))?,
        roots(pki)?,
        unused_proxy,
    )
    .listen(listener)
    .trusted_peer(fe.application())
    .topology(Topology::new([fe.domain()]));
    let uas = try_bounded(
        STEP,
        "starting the UAS platform",
        CollaborationPlatform::start(settings),
    )
    .await?
    .map_err(|e| format!("starting the UAS platform: {e}"))?;
    let addr = uas
        .listen_addrs()
        .first()
        .map(|(_, a)| *a)
        .ok_or("the UAS has no listener")?;
    let owner = Address::assume_on_premises(TARGET_URI).map_err(|e| e.to_string())?;
    let (_id, mut rx) = try_bounded(
        STEP,
        "registering the endpoint",
        uas.register_endpoint(owner, None, true),
    )
    .await?
    .map_err(|e| format!("registering the endpoint: {e}"))?;
    tokio::spawn(async move {
        while let Some(mut request) = rx.recv().await {
            let _ = request.respond(200, "OK", &[], None).await;
        }
    });
    Ok((uas, addr))
}

/// Keeps `window` MESSAGE transactions outstanding until the case's time is up, then
/// lets the last ones finish.
async fn drive(cfg: &Config, uac: &CollaborationPlatform) -> Drive {
    let per_request = cfg.per_request();
    // One transaction first: opens the connection (and the TLS handshake) outside the
    // measured time, and tells at once whether the peers talk at all.
    let warm = tokio::time::timeout(per_request, uac.send_request(message()))
        .await
        .map_err(|_| "the first MESSAGE got no answer in time".to_string())?;
    match warm {
        Ok(r) if r.status() == Some(200) => {}
        Ok(r) => return Err(format!("the first MESSAGE got {:?}", r.status())),
        Err(e) => return Err(format!("the first MESSAGE failed: {e}")),
    }
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + cfg.duration);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..cfg.window {
        let (uac, ok, failed, first_error) =
            (uac.clone(), ok.clone(), failed.clone(), first_error.clone());
        tasks.spawn(async move {
            while tokio::time::Instant::now() < deadline {
                let outcome =
                    match tokio::time::timeout(per_request, uac.send_request(message())).await {
                        Ok(Ok(r)) if r.status() == Some(200) => Ok(()),
                        Ok(Ok(r)) => Err(format!("answered {:?}", r.status())),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err(format!("no answer within {per_request:?}")),
                    };
                match outcome {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                    }
                }
            }
        });
    }
    let all_done = per_request + cfg.duration + Duration::from_secs(5);
    let joined = tokio::time::timeout(all_done, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    let elapsed = start.elapsed();
    if joined.is_err() {
        tasks.abort_all();
        return Err(format!("the UAC tasks did not finish within {all_done:?}"));
    }
    if let Some(e) = first_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        eprintln!("first failed transaction: {e}");
    }
    Ok((
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        elapsed,
    ))
}

fn message() -> OutgoingRequest {
    OutgoingRequest::message(TARGET_URI, Bytes::from_static(TEXT))
}

/// `$CARGO_TARGET_DIR` (relative to the workspace root) or the workspace's `target`.
fn target_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => root.join(d),
        _ => root.join("target"),
    }
}

/// The first three fields of `/proc/loadavg` ("?" elsewhere).
/// The results as JSON, by hand (every string here is a fixed identifier or escaped).
fn to_json(
    cfg: &Config,
    results: &[CaseResult],
    reference: f64,
    tcp_vs_sipp: f64,
    tls_vs_tcp: f64,
    load_before: &str,
    load_after: &str,
) -> String {
    let mut j = String::new();
    let _ = writeln!(j, "{{");
    let _ = writeln!(j, "  \"bench\": \"pager_load\",");
    let _ = writeln!(
        j,
        "  \"mode\": \"{}\",",
        if cfg.smoke { "smoke" } else { "bench" }
    );
    let _ = writeln!(j, "  \"seconds_per_case\": {},", cfg.duration.as_secs_f64());
    let _ = writeln!(
        j,
        "  \"sipp_seconds_per_case\": {},",
        cfg.sipp_duration().as_secs()
    );
    let _ = writeln!(j, "  \"window\": {},", cfg.window);
    let _ = writeln!(
        j,
        "  \"load_average_before\": \"{}\",",
        json_escape(load_before)
    );
    let _ = writeln!(
        j,
        "  \"load_average_after\": \"{}\",",
        json_escape(load_after)
    );
    let _ = writeln!(j, "  \"reference_tps\": {reference:.1},");
    let _ = writeln!(j, "  \"cases\": [");
    for (i, r) in results.iter().enumerate() {
        let ratio = if reference > 0.0 {
            r.rate() / reference
        } else {
            0.0
        };
        let error = match &r.error {
            Some(e) => format!("\"{}\"", json_escape(e)),
            None => "null".into(),
        };
        let _ = writeln!(
            j,
            "    {{\"name\": \"{}\", \"transport\": \"{}\", \"transactions\": {}, \"failed\": {}, \
             \"elapsed_s\": {:.3}, \"tps\": {:.1}, \"ratio_to_sipp\": {:.3}, \"error\": {}}}{}",
            r.name,
            r.transport,
            r.ok,
            r.failed,
            r.elapsed.as_secs_f64(),
            r.rate(),
            ratio,
            error,
            if i + 1 < results.len() { "," } else { "" }
        );
    }
    let _ = writeln!(j, "  ],");
    let _ = writeln!(j, "  \"targets\": {{");
    let _ = writeln!(
        j,
        "    \"ucma_tcp_vs_sipp\": {{\"value\": {tcp_vs_sipp:.3}, \"target\": 2.0, \"met\": {}}},",
        tcp_vs_sipp >= 2.0
    );
    let _ = writeln!(
        j,
        "    \"ucma_tls_vs_ucma_tcp\": {{\"value\": {tls_vs_tcp:.3}, \"target\": 0.8, \"met\": {}}}",
        tls_vs_tcp >= 0.8
    );
    let _ = writeln!(j, "  }}");
    let _ = writeln!(j, "}}");
    j
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}
