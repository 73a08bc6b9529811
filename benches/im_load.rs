//! # `im_load`: instant messaging throughput and memory, ucma-rs to ucma-rs over TLS
//!
//! Run with `cargo bench --bench im_load`. Two platforms in one process talk over mutual
//! TLS on loopback (`collaboration_platform::loopback`): the bot's application endpoint
//! places IM calls (INVITE with `m=message`, 200, ACK) to alice's endpoint, which accepts
//! every call and reads every message. Measured in one run:
//!
//! 1. `sipp->sipp pager tcp`: the reference, SIPp UAC to SIPp UAS (pager MESSAGE, window
//!    `IM_LOAD_WINDOW`), as in `pager_load`;
//! 2. `ucma im 1 conversation`: in-dialog MESSAGEs on one established call, `IM_LOAD_WINDOW`
//!    outstanding, for `IM_LOAD_SECS` (default 5);
//! 3. `ucma im N conversations`: the same spread over `IM_LOAD_CONVERSATIONS` (default
//!    1 000) established calls, summed;
//! 4. memory: `IM_LOAD_IDLE` (default 100 000) idle established IM conversations (both
//!    sides in this process, each accepted call with its flow and its reading task), bytes
//!    per conversation by the counting allocator and by RSS, measured after the set-up's
//!    INVITE transactions ended (`IM_LOAD_SETTLE_SECS`, default 33). They are made in two
//!    halves: the whole figure includes what the allocator keeps from the set-up burst;
//!    the second half's growth is the steady cost of one more idle conversation.
//!
//! A message counts when its 200 arrived (`flow.send_text` returned `Ok`); a failure must
//! not happen. The targets are printed, not asserted: case 2 and 3 at least 2x the
//! reference, memory at most 4 KiB per idle conversation. Compare ratios between machines,
//! not absolute figures. Results go to `target/bench-results/im_load.json`.
//!
//! Under `cargo test` (no `--bench`) a short smoke run (0.5 s, window 10, 20 conversations,
//! 500 idle) checks every case works; a watchdog bounds every run.

#[path = "common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use application_endpoint::{ApplicationEndpoint, ApplicationEndpointSettings};
use collaboration_platform::loopback::{pair, LoopbackPki};
use collaboration_platform::{Address, OnPremises, Topology};
use conversation::{incoming_im_calls, Conversation, InstantMessagingFlow, MessageSender};

#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

#[derive(Debug, Clone, Copy)]
struct Config {
    duration: Duration,
    window: usize,
    conversations: usize,
    idle: usize,
    settle: Duration,
    smoke: bool,
}

impl Config {
    fn from_env() -> Config {
        let smoke = !std::env::args().any(|a| a == "--bench");
        if smoke {
            return Config {
                duration: Duration::from_millis(500),
                window: 10,
                conversations: 20,
                idle: 500,
                settle: Duration::from_millis(500),
                smoke,
            };
        }
        let num = |name: &str, default: f64| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| {
                    v.trim()
                        .parse::<f64>()
                        .unwrap_or_else(|_| panic!("{name}: a number"))
                })
                .unwrap_or(default)
        };
        Config {
            duration: Duration::from_secs_f64(num("IM_LOAD_SECS", 5.0).clamp(0.1, 3600.0)),
            window: num("IM_LOAD_WINDOW", 200.0).max(1.0) as usize,
            conversations: num("IM_LOAD_CONVERSATIONS", 1000.0).max(1.0) as usize,
            idle: num("IM_LOAD_IDLE", 100_000.0).max(1.0) as usize,
            settle: Duration::from_secs_f64(num("IM_LOAD_SETTLE_SECS", 33.0).max(0.0)),
            smoke,
        }
    }
}

struct Throughput {
    ok: u64,
    failed: u64,
    elapsed: Duration,
}

impl Throughput {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

struct Memory {
    conversations: usize,
    heap_per: f64,
    rss_per: f64,
    heap_marginal: f64,
    rss_marginal: f64,
    setup: Duration,
}

fn main() {
    let cfg = Config::from_env();
    let limit = Duration::from_secs(if cfg.smoke { 120 } else { 1800 });
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("im_load: the run did not finish within {limit:?}; giving up");
        std::process::exit(2);
    });
    let load_before = common::load_average();
    let dir = tempfile::tempdir().expect("temp dir");
    let secs = cfg.duration.as_secs_f64().ceil().max(1.0) as u64;
    let reference = common::sipp_pager_reference(dir.path(), secs, cfg.window)
        .unwrap_or_else(|e| panic!("the SIPp reference failed: {e}"));
    let rt = interop_support::runtime();
    let (one, many, memory) = rt.block_on(run(cfg));
    let load_after = common::load_average();

    let r = reference.rate();
    println!(
        "\nim_load ({} s per case, window {}):",
        cfg.duration.as_secs_f64(),
        cfg.window
    );
    println!(
        "{:<32} {:>10} {:>7} {:>8} {:>11} {:>8}",
        "case", "messages", "failed", "secs", "msg/s", "x sipp"
    );
    let row = |name: &str, ok: u64, failed: u64, el: Duration, rate: f64| {
        println!(
            "{name:<32} {ok:>10} {failed:>7} {:>8.2} {rate:>11.0} {:>8.2}",
            el.as_secs_f64(),
            rate / r
        );
    };
    row(
        "sipp->sipp pager tcp",
        reference.ok,
        reference.failed,
        reference.elapsed,
        r,
    );
    row(
        "ucma im 1 conversation tls",
        one.ok,
        one.failed,
        one.elapsed,
        one.rate(),
    );
    row(
        &format!("ucma im {} conversations tls", cfg.conversations),
        many.ok,
        many.failed,
        many.elapsed,
        many.rate(),
    );
    println!(
        "memory: {} idle IM conversations (both sides): {:.0} B/conversation heap, {:.0} B/conversation RSS; the second half alone: {:.0} B heap, {:.0} B RSS each (set up in {:.1} s)",
        memory.conversations,
        memory.heap_per,
        memory.rss_per,
        memory.heap_marginal,
        memory.rss_marginal,
        memory.setup.as_secs_f64()
    );
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "target 1 conversation >= 2x sipp: {:.2}x ({}); {} conversations >= 2x sipp: {:.2}x ({}); <= 4096 B RSS per idle conversation: {:.0} B overall ({}), {:.0} B for the second half ({})",
        one.rate() / r,
        met(one.rate() / r >= 2.0),
        cfg.conversations,
        many.rate() / r,
        met(many.rate() / r >= 2.0),
        memory.rss_per,
        met(memory.rss_per <= 4096.0),
        memory.rss_marginal,
        met(memory.rss_marginal <= 4096.0)
    );
    println!("load average before {load_before}, after {load_after}");

    let out = common::results_dir();
    let _ = std::fs::create_dir_all(&out);
    let file = out.join(if cfg.smoke {
        "im_load-smoke.json"
    } else {
        "im_load.json"
    });
    let json = format!(
        "{{\"secs\":{},\"window\":{},\"reference_msg_per_s\":{:.1},\"one_conversation_msg_per_s\":{:.1},\"conversations\":{},\"many_conversations_msg_per_s\":{:.1},\"idle_conversations\":{},\"heap_bytes_per_idle_conversation\":{:.1},\"rss_bytes_per_idle_conversation\":{:.1},\"heap_bytes_per_idle_conversation_second_half\":{:.1},\"rss_bytes_per_idle_conversation_second_half\":{:.1},\"failed\":{},\"load_before\":\"{}\",\"load_after\":\"{}\"}}\n",
        cfg.duration.as_secs_f64(),
        cfg.window,
        r,
        one.rate(),
        cfg.conversations,
        many.rate(),
        memory.conversations,
        memory.heap_per,
        memory.rss_per,
        memory.heap_marginal,
        memory.rss_marginal,
        one.failed + many.failed,
        load_before,
        load_after
    );
    let _ = std::fs::write(&file, json);
    println!("results: {}", file.display());
    assert_eq!(one.failed + many.failed, 0, "failed messages");
    assert!(one.ok > 0 && many.ok > 0, "a case delivered nothing");
}

async fn run(cfg: Config) -> (Throughput, Throughput, Memory) {
    let pki = LoopbackPki::new().expect("CA");
    let (a, b) = pair(&pki, "app.contoso.test", "alice.contoso.test", |_, s| {
        s.topology(Topology::new(["contoso.test"]))
            .endpoint_capacity(8192)
    })
    .await
    .expect("platforms");
    let bot = ApplicationEndpoint::new(
        &a,
        ApplicationEndpointSettings::new(addr("sip:bot@contoso.test")),
    );
    let alice = ApplicationEndpoint::new(
        &b,
        ApplicationEndpointSettings::new(addr("sip:alice@contoso.test")),
    );
    bot.establish().await.expect("bot");
    alice.establish().await.expect("alice");
    // Alice accepts every call; a task per call reads its messages (what an application
    // holding the conversation does), and keeps the flow alive until the call ends.
    let mut calls = incoming_im_calls(&alice);
    let received = Arc::new(AtomicU64::new(0));
    let r2 = received.clone();
    tokio::spawn(async move {
        while let Some(call) = calls.next().await {
            let received = r2.clone();
            // Accept on its own task, then read on a small one: a task is as large as its
            // largest state, and an idle call should not carry the accept's.
            tokio::spawn(async move {
                if let Ok(mut flow) = call.accept().await {
                    tokio::spawn(async move {
                        while flow.recv().await.is_some() {
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
            });
        }
    });

    let one = establish(&bot, 1, cfg.window).await;
    let t_one = drive(&one.iter().map(|f| f.sender()).collect::<Vec<_>>(), cfg).await;
    let many = establish(&bot, cfg.conversations, cfg.window).await;
    let t_many = drive(&many.iter().map(|f| f.sender()).collect::<Vec<_>>(), cfg).await;
    drop((one, many));

    // Memory of idle established conversations: both platforms, both endpoints, every
    // call's state, flow and reading task.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let heap0 = ALLOCATOR.allocated();
    let rss0 = common::rss_bytes().unwrap_or(0);
    let t0 = Instant::now();
    // Two halves: the whole figure counts what the allocator keeps from the set-up burst;
    // the second half's growth, made after the first half's transients were freed, is the
    // steady cost of one more idle conversation.
    let first = cfg.idle / 2;
    let mut idle = establish(&bot, first, cfg.window).await;
    let setup_first = t0.elapsed();
    // Idle means idle: the INVITE transactions of the set-up linger in RFC 6026's
    // Accepted state for 64*T1 (32 s) after the 2xx; measure after they are gone.
    tokio::time::sleep(cfg.settle).await;
    let heap1 = ALLOCATOR.allocated();
    let rss1 = common::rss_bytes().unwrap_or(0);
    let t1 = Instant::now();
    idle.extend(establish(&bot, cfg.idle - first, cfg.window).await);
    let setup = setup_first + t1.elapsed();
    tokio::time::sleep(cfg.settle).await;
    let heap2 = ALLOCATOR.allocated();
    let rss2 = common::rss_bytes().unwrap_or(0);
    let n = idle.len().max(1) as f64;
    let second = (cfg.idle - first).max(1) as f64;
    let memory = Memory {
        conversations: idle.len(),
        heap_per: heap2.saturating_sub(heap0) as f64 / n,
        rss_per: rss2.saturating_sub(rss0) as f64 / n,
        heap_marginal: heap2.saturating_sub(heap1) as f64 / second,
        rss_marginal: rss2.saturating_sub(rss1) as f64 / second,
        setup,
    };
    assert_eq!(idle.len(), cfg.idle, "every idle conversation established");
    drop(idle);
    (t_one, t_many, memory)
}

fn addr(uri: &str) -> Address<OnPremises> {
    Address::assume_on_premises(uri).expect("address")
}

/// Establishes `n` IM calls from the bot to alice, `window` at a time.
async fn establish(
    bot: &ApplicationEndpoint,
    n: usize,
    window: usize,
) -> Vec<InstantMessagingFlow> {
    let bot = Arc::new(bot_core(bot));
    let mut flows = Vec::with_capacity(n);
    let mut set = tokio::task::JoinSet::new();
    let mut started = 0;
    while flows.len() < n {
        while started < n && set.len() < window {
            let conv = bot.clone();
            set.spawn(async move {
                let call = Conversation::new(&*conv, addr("sip:alice@contoso.test"))
                    .instant_messaging_call();
                call.establish().await.expect("IM call established")
            });
            started += 1;
        }
        if let Some(r) = set.join_next().await {
            flows.push(r.expect("establishing task"));
        }
    }
    flows
}

/// The bot's endpoint as something tasks can share.
struct BotCore(Arc<application_endpoint::EndpointCore>);
impl application_endpoint::Endpoint for BotCore {
    fn core(&self) -> &Arc<application_endpoint::EndpointCore> {
        &self.0
    }
}
fn bot_core(bot: &ApplicationEndpoint) -> BotCore {
    use application_endpoint::Endpoint;
    BotCore(bot.core().clone())
}

/// `window` tasks, each with one message outstanding, taking turns over all `senders`,
/// for the configured time.
async fn drive(senders: &[MessageSender], cfg: Config) -> Throughput {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + cfg.duration;
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..cfg.window {
        // Task i takes conversations i, i + window, i + 2 window … in turn, so that every
        // conversation carries messages (with fewer conversations than tasks, several
        // tasks share one).
        let mine: Vec<MessageSender> = if senders.len() > cfg.window {
            senders
                .iter()
                .skip(i)
                .step_by(cfg.window)
                .cloned()
                .collect()
        } else {
            vec![senders[i % senders.len()].clone()]
        };
        let (ok, failed) = (ok.clone(), failed.clone());
        set.spawn(async move {
            let mut turn = 0;
            while Instant::now() < deadline {
                let s = &mine[turn % mine.len()];
                turn += 1;
                match s
                    .send_text("Hello from the ucma-rs im_load benchmark.")
                    .await
                {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("im_load: message failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        });
    }
    while set.join_next().await.is_some() {}
    Throughput {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        elapsed: t0.elapsed(),
    }
}
