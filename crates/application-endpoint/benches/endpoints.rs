//! # `endpoints`: registrations per second and presence NOTIFY handling
//!
//! Run with `cargo bench -p application-endpoint --bench endpoints`. One run measures:
//!
//! 1. `sipp register tcp` (the reference): SIPp registering with digest at the contoso
//!    Kamailio front end (peer-harness) over TCP (`UAC_REGISTER_AUTH`: REGISTER, 401,
//!    REGISTER with credentials, 200), `ENDPOINTS_WINDOW` (default 100) calls outstanding,
//!    for `ENDPOINTS_SECS` (default 5, whole seconds for SIPp). SIPp registers one user,
//!    `u000`, again and again: Debian's SIPp 3.6.1 does not expand `[field0]` inside
//!    `[authentication username=... password=...]`, so it cannot take each user's password
//!    from an injection file;
//! 2. `ucma register tls`: `ENDPOINTS_USERS` (default 100) [`UserEndpoint`]s, users `u000`,
//!    `u001`, ... (password `uNNN-secret`), on one client platform over the front end's user
//!    TLS listener (one TLS connection), established `ENDPOINTS_WINDOW` at a time
//!    (registrations per second, each the same digest-challenged REGISTER pair as SIPp's, and
//!    the ratio to 1), then terminated the window at a time (unregistrations per second);
//!    cycles of that, new endpoints each time, until `ENDPOINTS_SECS` have passed. The rates
//!    count the windows' time only, not making the endpoints;
//! 3. `ucma register tcp`: as 2 over the front end's TCP listener, SIPp's transport
//!    (Debian's SIPp has no TLS), to tell the cost of TLS from the rest;
//! 4. presence: a [`RemotePresenceView`] on an [`ApplicationEndpoint`] subscribes to
//!    `ENDPOINTS_PRESENTITIES` (default 10 000) presentities served by a notifier in this
//!    process (time until every one is `Subscribed`, and until every initial NOTIFY is
//!    delivered); the notifier then sends `ENDPOINTS_ROUNDS` (default 3) rounds of
//!    availability changes to all of them, `ENDPOINTS_WINDOW` NOTIFYs awaiting their 200
//!    (NOTIFYs per second); finally the view is terminated (un-SUBSCRIBE and final NOTIFY
//!    for each). Twice, with two notifiers (below);
//! 5. memory: heap bytes per subscription by the counting allocator, and two runs of the
//!    same subscriptions made by the subscriber platform alone (`CollaborationPlatform::
//!    subscribe` from a raw endpoint that answers NOTIFYs 200: no view), `ENDPOINTS_WINDOW`
//!    SUBSCRIBEs at a time and all at once (as the view sends them), to tell the
//!    platform's share from the view's.
//!
//! Kamailio checks a password with one `if ($au == ...)` per configured user, every one of
//! them for every authenticated REGISTER, so the front end's rate falls as users are added
//! (SIPp, one user registering, with 12, 102, 502 and 1002 users configured: about 8800,
//! 2800, 700 and 360 per second on a loaded 2-core machine); with many users both SIPp
//! and ucma measure that list. Hence the moderate default; `ENDPOINTS_USERS` changes it.
//!
//! ## The notifiers
//!
//! * `platform notifier`: the second platform of a `collaboration_platform::loopback::pair`
//!   (the subscriber's outbound proxy), a raw default-routing endpoint on it answering each
//!   SUBSCRIBE 200 (To tag, Expires, Contact; the platform makes the notifier's dialog)
//!   and sending NOTIFYs with `send_in_dialog` from `ENDPOINTS_WINDOW` workers. Both sides
//!   are ucma-rs.
//! * `transport notifier`: written here on `transport_tls::SipTransport` (a mutual-TLS
//!   listener; certificates from `LoopbackPki`): answers each SUBSCRIBE 200 itself and
//!   writes its NOTIFYs by hand in the subscription's dialog (Call-ID, tags, increasing
//!   CSeq), at most `ENDPOINTS_WINDOW` awaiting their answer. Much cheaper than a platform,
//!   so its rates are nearer the subscriber's own, and its heap per subscription is known
//!   exactly (the strings of its table; the table and its queue are allocated at start).
//!   The subscriber platform is started as `loopback::pair` starts one, with this notifier
//!   as its outbound proxy.
//!
//! ## Reading the output
//!
//! * registrations per second: successful registrations divided by the time of the
//!   windows; SIPp's time is its own (whole seconds), its calls outstanding when the time
//!   is up are not counted. The messages per registration (REGISTERs sent, 401s received)
//!   are counted on the wire by an observer. The CPU this process used per registration
//!   (`/proc/self/stat`, 10 ms ticks) is the SDK's own cost, whatever the front end does.
//! * NOTIFYs per second: the rounds' NOTIFYs divided by the time from the notifier being
//!   told to send them to the last one both answered 200 and delivered to the application
//!   (a notification with a document). A notification must not be lost: every NOTIFY
//!   answered 200, one notification with a document per NOTIFY, none dropped by the stream
//!   (sized for a whole phase), every presentity's availability the last round's at the
//!   end, no notification with an error, no request refused by the notifier, nothing left
//!   subscribed after `terminate`. CPU per NOTIFY is this process's: both sides.
//! * bytes per subscription: the heap (bytes requested from the allocator, not its own
//!   overhead) once every subscription is established and its initial NOTIFY handled,
//!   minus before, divided by the presentities. Both sides live in this process, so
//!   `both sides` includes the view (its table, timers, dialog routes on the endpoint),
//!   the subscriber platform (its dialogs and their owners), the notifier's subscriptions
//!   and whatever the runtime and the transports kept from the burst (queues and buffers
//!   grown, not per subscription). `subscriber side` (transport notifier) is that minus the
//!   notifier's table; the target (at most 1 KiB per subscription) is judged on it. The
//!   platform notifier's share is the platform run's `both sides` minus that. The
//!   platform-alone runs split `subscriber side` into the platform's part (all at once, as
//!   the view subscribes) and the view's; the paced one shows what the burst leaves
//!   behind (maps grown to the burst keep their capacity).
//!   RSS growth is printed too (the allocator's, for both sides; RSS is not returned).
//!
//! Targets are printed, not asserted. Compare ratios between machines, not absolute
//! figures: everything (Kamailio, SIPp, both platforms) shares the machine, and other load
//! lowers every figure; the load average before and after is recorded. Results go to
//! `target/bench-results/endpoints.json` (`$CARGO_TARGET_DIR` when set).
//!
//! Under `cargo test` (no `--bench` argument) the same cases run as a smoke test (10
//! users, 200 presentities, 2 rounds, window 10, 0.5 s of registration cycles, SIPp 1 s)
//! that fails on any failed registration or unregistration or any lost notification, and
//! writes `endpoints-smoke.json`. Every wait is bounded, and a watchdog ends the process if
//! the whole run overruns.

#[path = "../../../benches/common/mod.rs"]
mod common;

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use application_endpoint::pidf::{Availability, PresenceDocument, CONTENT_TYPE};
use application_endpoint::{
    ApplicationEndpoint, ApplicationEndpointSettings, Credentials, EndpointState,
    RemotePresenceView, UserEndpoint, UserEndpointSettings,
};
use bytes::Bytes;
use collaboration_platform::loopback::{pair, LoopbackPki};
use collaboration_platform::{
    Address, ClientPlatformSettings, CollaborationPlatform, DialogId, IncomingRequest, Listener,
    MessageObserver, OnPremises, OutboundProxy, OutgoingRequest, ServerPlatformSettings, Topology,
    TrustRoots, WireDirection,
};
use interop_support::{runtime, try_bounded};
use peer_harness::{scenarios, Deployment, Federation};
use sip_core::{HeaderName, Method, SipMessage};
use tokio::sync::{mpsc, oneshot};
use transport_tls::{
    ConnectionId, ReceivedMessage, SipTransport, TlsServerSettings, TransportEvent,
    TransportSettings,
};

#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

/// The home domain of every user and presentity.
const DOMAIN: &str = "contoso.test";
/// The subscriber platform's certificate name.
const SUBSCRIBER_FQDN: &str = "app.contoso.test";
/// The notifier's certificate name (the subscriber's outbound proxy).
const NOTIFIER_FQDN: &str = "presence.contoso.test";
/// The availabilities the notifier cycles through: the initial NOTIFY has the first,
/// round `r` the one at `r % len` (consecutive rounds always differ).
const AVAILABILITIES: [Availability; 5] = [
    Availability::Online,
    Availability::Away,
    Availability::Busy,
    Availability::DoNotDisturb,
    Availability::Offline,
];
/// Subscription lifetime the notifier grants at most.
const GRANTED_EXPIRES: u32 = 3600;
/// Bound of one registration or unregistration, and of each set-up step.
const STEP: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy)]
struct Config {
    window: usize,
    secs: f64,
    users: usize,
    presentities: usize,
    rounds: usize,
    settle: Duration,
    smoke: bool,
}

impl Config {
    fn from_env() -> Config {
        let smoke = !std::env::args().any(|a| a == "--bench");
        if smoke {
            return Config {
                window: 10,
                secs: 0.5,
                users: 10,
                presentities: 200,
                rounds: 2,
                settle: Duration::from_millis(100),
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
            window: num("ENDPOINTS_WINDOW", 100.0).clamp(1.0, 100_000.0) as usize,
            secs: num("ENDPOINTS_SECS", 5.0).clamp(0.1, 3600.0),
            users: num("ENDPOINTS_USERS", 100.0).clamp(1.0, 100_000.0) as usize,
            presentities: num("ENDPOINTS_PRESENTITIES", 10_000.0).clamp(1.0, 1_000_000.0) as usize,
            rounds: num("ENDPOINTS_ROUNDS", 3.0).clamp(1.0, 1000.0) as usize,
            settle: Duration::from_millis(
                num("ENDPOINTS_SETTLE_MS", 500.0).clamp(0.0, 60_000.0) as u64
            ),
            smoke,
        }
    }

    /// SIPp's `-timeout` is whole seconds.
    fn sipp_secs(&self) -> u64 {
        self.secs.ceil().max(1.0) as u64
    }

    /// Bound of a phase that handles `n` items.
    fn phase_limit(&self, n: usize) -> Duration {
        Duration::from_secs(30) + Duration::from_millis(5 * n as u64)
    }

    /// Bound of the whole run, enforced by the watchdog.
    fn whole_run(&self) -> Duration {
        // SIPp, then two ucma cases of cycles for `secs` plus their last cycle; two
        // presence runs and two platform-alone runs.
        let registrations =
            Duration::from_secs_f64(3.0 * self.secs + 60.0) + self.phase_limit(self.users * 2) * 2;
        let p = self.presentities * (self.rounds + 3);
        registrations + self.phase_limit(p) * 4
    }
}

/// Successes, failures and the time they took.
#[derive(Debug, Clone, Copy, Default)]
struct Rate {
    ok: u64,
    failed: u64,
    elapsed: Duration,
}

impl Rate {
    fn add(&mut self, other: Rate) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.elapsed += other.elapsed;
    }

    fn per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.ok as f64 / s
        } else {
            0.0
        }
    }
}

/// One ucma registration case.
#[derive(Debug, Clone)]
struct RegCase {
    name: &'static str,
    transport: &'static str,
    /// Rounds of N endpoints established and terminated.
    cycles: u64,
    /// Summed over the cycles: the time is that of the windows, not of making endpoints.
    register: Rate,
    unregister: Rate,
    /// REGISTERs sent and challenges received while registering.
    register_wire: WireCounts,
    /// The same while unregistering.
    unregister_wire: WireCounts,
    /// CPU this process used while registering and while unregistering.
    register_cpu: Duration,
    unregister_cpu: Duration,
    first_error: Option<String>,
}

/// What the registration part measured.
struct Registrations {
    federation_start: Duration,
    reference: Rate,
    cases: Vec<RegCase>,
}

/// What one presence run measured.
#[derive(Debug, Clone, Default)]
struct Presence {
    notifier: NotifierKind,
    presentities: usize,
    /// From `subscribe()` to every presentity `Subscribed`, and to every initial NOTIFY
    /// delivered.
    subscribed: Duration,
    initial_delivered: Duration,
    rounds: usize,
    /// The rounds' NOTIFYs answered 200, and delivered to the application.
    notifies: u64,
    delivered: u64,
    notify_elapsed: Duration,
    /// CPU this process used (subscriber and notifier) to subscribe (until every initial
    /// NOTIFY was delivered) and during the rounds.
    subscribe_cpu: Duration,
    notify_cpu: Duration,
    unsubscribed: u64,
    unsubscribe_elapsed: Duration,
    /// NOTIFYs not answered 200.
    failed_notifies: u64,
    /// Notifications with a document missing on the stream.
    lost: u64,
    /// Notifications the stream dropped.
    dropped: u64,
    /// Presentities whose availability is not the last round's at the end.
    wrong_availability: u64,
    /// Notifications carrying an error.
    errors: u64,
    /// Requests the notifier refused (481 for an unknown dialog, 400, 404, 405).
    refused: u64,
    /// Subscriptions the notifier still had after the view terminated.
    still_active: u64,
    heap_both: i64,
    /// The notifier's heap for its subscriptions, when known exactly.
    notifier_table: Option<u64>,
    rss_both: i64,
    first_error: Option<String>,
}

impl Presence {
    fn per_subscription(&self, bytes: i64) -> f64 {
        bytes as f64 / self.presentities.max(1) as f64
    }

    /// Both sides minus the notifier's table, when that is known.
    fn subscriber_bytes(&self) -> Option<i64> {
        self.notifier_table.map(|t| self.heap_both - t as i64)
    }

    fn failures(&self) -> u64 {
        self.failed_notifies
            + self.lost
            + self.dropped
            + self.wrong_availability
            + self.errors
            + self.refused
            + self.still_active
    }
}

fn main() {
    let cfg = Config::from_env();
    let limit = cfg.whole_run();
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("endpoints: the run did not finish within {limit:?}; giving up");
        std::process::exit(2);
    });
    let load_before = common::load_average();
    println!(
        "endpoints ({}): window {}, SIPp {} s, {} users, {} presentities, {} rounds",
        if cfg.smoke { "smoke test" } else { "benchmark" },
        cfg.window,
        cfg.sipp_secs(),
        cfg.users,
        cfg.presentities,
        cfg.rounds
    );
    let rt = runtime();

    let registrations = registrations(&cfg, &rt);
    let presence: Vec<Result<Presence, String>> = [NotifierKind::Platform, NotifierKind::Transport]
        .into_iter()
        .map(|kind| rt.block_on(presence(cfg, kind)))
        .collect();
    // Paced (the window), and all at once as the view sends them.
    let dialogs_only: Vec<Result<PlatformOnly, String>> = [cfg.window, cfg.presentities]
        .into_iter()
        .map(|window| rt.block_on(platform_only(cfg, window)))
        .collect();
    drop(rt);
    let load_after = common::load_average();

    report(
        &cfg,
        &registrations,
        &presence,
        &dialogs_only,
        &load_before,
        &load_after,
    );

    let regs = registrations.unwrap_or_else(|e| panic!("registrations could not run: {e}"));
    let presence: Vec<Presence> = presence
        .into_iter()
        .map(|p| p.unwrap_or_else(|e| panic!("presence could not run: {e}")))
        .collect();
    for c in &regs.cases {
        assert_eq!(
            c.register.failed, 0,
            "{}: failed registrations ({:?})",
            c.name, c.first_error
        );
        assert_eq!(
            c.unregister.failed, 0,
            "{}: failed unregistrations ({:?})",
            c.name, c.first_error
        );
        assert_eq!(
            c.register.ok,
            c.cycles * cfg.users as u64,
            "{}: registrations",
            c.name
        );
    }
    assert!(regs.reference.ok > 0, "SIPp registered nobody");
    assert_eq!(regs.reference.failed, 0, "SIPp's registrations failed");
    for d in dialogs_only {
        let d = d.unwrap_or_else(|e| panic!("the platform-only run could not run: {e}"));
        assert_eq!(d.failed, 0, "the platform-only run failed: {d:?}");
    }
    for p in &presence {
        assert_eq!(p.failures(), 0, "lost or failed notifications: {p:?}");
        assert_eq!(
            p.unsubscribed, cfg.presentities as u64,
            "every subscription ended: {p:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Registrations
// ---------------------------------------------------------------------------------------

fn user_name(i: usize) -> String {
    format!("u{i:03}")
}

fn password(user: &str) -> String {
    format!("{user}-secret")
}

fn home(uri: &str) -> Address<OnPremises> {
    Address::assume_on_premises(uri).expect("a SIP URI")
}

fn registrations(cfg: &Config, rt: &tokio::runtime::Runtime) -> Result<Registrations, String> {
    let mut builder = Federation::builder().memory_mb(128, 16);
    for i in 0..cfg.users {
        let u = user_name(i);
        builder = builder.user(Deployment::Contoso, &u, &password(&u));
    }
    let t0 = Instant::now();
    let fed = builder
        .start()
        .map_err(|e| format!("starting the front ends: {e}"))?;
    let federation_start = t0.elapsed();
    let reference = sipp_reference(cfg, &fed)?;
    let mut cases = Vec::new();
    for tls in [true, false] {
        let case = rt
            .block_on(ucma_registrations(cfg, &fed, tls))
            .map_err(|e| format!("{e}\n{}", fed.log_tails(20)))?;
        cases.push(case);
    }
    Ok(Registrations {
        federation_start,
        reference,
        cases,
    })
}

/// SIPp registering one user (`u000`) again and again over TCP, `window` at a time, for
/// the configured time.
fn sipp_reference(cfg: &Config, fed: &Federation) -> Result<Rate, String> {
    let user = user_name(0);
    let secs = cfg.sipp_secs();
    let outcome = fed
        .sipp("ref-register", scenarios::UAC_REGISTER_AUTH)
        .remote(fed.contoso().tcp_addr())
        .key("user", &user)
        .key("domain", DOMAIN)
        .key("contact", &format!("sip:{user}@127.0.0.1;transport=tcp"))
        .key("expires", "600")
        .auth(&user, &password(&user))
        .rate(common::SIPP_RATE)
        .limit(cfg.window as u64)
        .timeout(Duration::from_secs(secs))
        .run()
        .map_err(|e| format!("SIPp: {e}"))?;
    if outcome.stats.successful_calls == 0 {
        return Err(format!("SIPp registered nobody:\n{}", outcome.report()));
    }
    Ok(Rate {
        ok: outcome.stats.successful_calls,
        failed: outcome.stats.failed_calls,
        elapsed: common::sipp_elapsed(&outcome.stats).unwrap_or(Duration::from_secs(secs)),
    })
}

/// REGISTER traffic of a platform, counted on the wire.
#[derive(Default)]
struct RegisterWire {
    sent: AtomicU64,
    challenged: AtomicU64,
    granted: AtomicU64,
    other: AtomicU64,
}

#[derive(Debug, Clone, Copy, Default)]
struct WireCounts {
    sent: u64,
    challenged: u64,
    granted: u64,
    other: u64,
}

impl WireCounts {
    fn add(&mut self, other: WireCounts) {
        self.sent += other.sent;
        self.challenged += other.challenged;
        self.granted += other.granted;
        self.other += other.other;
    }

    fn since(self, before: WireCounts) -> WireCounts {
        WireCounts {
            sent: self.sent - before.sent,
            challenged: self.challenged - before.challenged,
            granted: self.granted - before.granted,
            other: self.other - before.other,
        }
    }
}

impl RegisterWire {
    fn snapshot(&self) -> WireCounts {
        WireCounts {
            sent: self.sent.load(Ordering::Relaxed),
            challenged: self.challenged.load(Ordering::Relaxed),
            granted: self.granted.load(Ordering::Relaxed),
            other: self.other.load(Ordering::Relaxed),
        }
    }
}

/// Whether a response's head has `CSeq: N REGISTER`.
fn is_register_response(wire: &[u8]) -> bool {
    let head_end = wire
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(wire.len());
    wire[..head_end]
        .split(|b| *b == b'\n')
        .filter(|l| l.len() > 5 && l[..5].eq_ignore_ascii_case(b"cseq:"))
        .any(|l| l.trim_ascii_end().ends_with(b" REGISTER"))
}

impl MessageObserver for RegisterWire {
    fn observe(&self, direction: WireDirection, _remote: SocketAddr, wire: &Bytes) {
        match direction {
            WireDirection::Sent => {
                if wire.starts_with(b"REGISTER ") {
                    self.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
            WireDirection::Received => {
                if wire.len() < 12 || !wire.starts_with(b"SIP/2.0 ") || !is_register_response(wire)
                {
                    return;
                }
                let counter = match &wire[8..11] {
                    b"200" => &self.granted,
                    b"401" | b"407" => &self.challenged,
                    _ => &self.other,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Runs `op` on every item, at most `window` at a time, each bounded by [`STEP`]; returns
/// the successes, failures, the time and the first failure.
async fn windowed<T, F, Fut>(items: &[Arc<T>], window: usize, op: F) -> (Rate, Option<String>)
where
    T: Send + Sync + 'static,
    F: Fn(Arc<T>) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let mut rate = Rate::default();
    let mut first_error = None;
    let mut set = tokio::task::JoinSet::new();
    let mut next = 0;
    let t0 = Instant::now();
    while next < items.len() || !set.is_empty() {
        while next < items.len() && set.len() < window {
            let f = op(items[next].clone());
            set.spawn(async move {
                match tokio::time::timeout(STEP, f).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no outcome within {STEP:?}")),
                }
            });
            next += 1;
        }
        match set.join_next().await {
            Some(Ok(Ok(()))) => rate.ok += 1,
            Some(Ok(Err(e))) => {
                rate.failed += 1;
                first_error.get_or_insert(e);
            }
            Some(Err(e)) => {
                rate.failed += 1;
                first_error.get_or_insert(format!("task: {e}"));
            }
            None => break,
        }
    }
    rate.elapsed = t0.elapsed();
    (rate, first_error)
}

/// N user endpoints on one client platform: established, then terminated, `window` at a
/// time, over the front end's user TLS listener or its TCP listener.
async fn ucma_registrations(cfg: &Config, fed: &Federation, tls: bool) -> Result<RegCase, String> {
    let (name, transport) = if tls {
        ("ucma register tls", "tls")
    } else {
        ("ucma register tcp", "tcp")
    };
    let contoso = fed.contoso();
    let proxy = if tls {
        let addr = contoso
            .user_tls_addr()
            .ok_or("the front end has no user TLS listener")?;
        OutboundProxy::tls(addr, contoso.fqdn())
    } else {
        OutboundProxy::tcp(contoso.tcp_addr())
    };
    let roots = TrustRoots::from_pem(fed.pki().ca_pem().as_bytes()).map_err(|e| e.to_string())?;
    let wire = Arc::new(RegisterWire::default());
    let settings = ClientPlatformSettings::new("ucma-rs endpoints bench", roots, proxy)
        .topology(Topology::new([DOMAIN]))
        .observer(wire.clone());
    let platform = try_bounded(
        STEP,
        "starting the client platform",
        CollaborationPlatform::start(settings),
    )
    .await?
    .map_err(|e| format!("starting the client platform: {e}"))?;
    // Opens the connection (and the TLS handshake) outside the measured time.
    let warm = try_bounded(
        STEP,
        "OPTIONS to the front end",
        platform.send_request(OutgoingRequest::options(format!("sip:{DOMAIN}"))),
    )
    .await?;
    if let Err(e) = warm {
        common::stop(&platform).await;
        return Err(format!("OPTIONS to the front end: {e}"));
    }
    // Cycles of N endpoints (established, then terminated) until the configured time is
    // up: N at once is what one process holds, the cycles give the rate time to settle.
    let deadline = Instant::now() + Duration::from_secs_f64(cfg.secs);
    let mut register = Rate::default();
    let mut unregister = Rate::default();
    let mut register_wire = WireCounts::default();
    let mut unregister_wire = WireCounts::default();
    let mut first_error = None;
    let mut cycles = 0;
    let mut register_cpu = Duration::ZERO;
    let mut unregister_cpu = Duration::ZERO;
    loop {
        let endpoints: Vec<Arc<UserEndpoint>> = (0..cfg.users)
            .map(|i| {
                let u = user_name(i);
                let settings = UserEndpointSettings::new(
                    home(&format!("sip:{u}@{DOMAIN}")),
                    Credentials::new(&u, password(&u)),
                );
                Arc::new(UserEndpoint::new(&platform, settings))
            })
            .collect();
        let w0 = wire.snapshot();
        let c0 = cpu_time();
        let (r, e1) = windowed(&endpoints, cfg.window, |ep| async move {
            ep.establish().await.map(|_| ()).map_err(|e| e.to_string())
        })
        .await;
        let w1 = wire.snapshot();
        let c1 = cpu_time();
        let (mut u, e2) = windowed(&endpoints, cfg.window, |ep| async move {
            ep.terminate().await;
            match ep.state() {
                EndpointState::Terminated => Ok(()),
                s => Err(format!("state {s:?} after terminate")),
            }
        })
        .await;
        let w2 = wire.snapshot();
        register_cpu += c1.saturating_sub(c0);
        unregister_cpu += cpu_time().saturating_sub(c1);
        // `terminate` does not say whether the registrar removed the binding: a binding
        // counts as removed when its REGISTER got a 200.
        let removed = w2.since(w1).granted.min(r.ok);
        u.failed += r.ok - removed;
        u.ok = u.ok.min(removed);
        first_error = first_error.or(e1).or(e2);
        if removed < r.ok && first_error.is_none() {
            first_error = Some(format!(
                "{} of {} unregistrations got no 200",
                r.ok - removed,
                r.ok
            ));
        }
        register.add(r);
        unregister.add(u);
        register_wire.add(w1.since(w0));
        unregister_wire.add(w2.since(w1));
        cycles += 1;
        drop(endpoints);
        if Instant::now() >= deadline || register.failed + unregister.failed > 0 {
            break;
        }
    }
    common::stop(&platform).await;
    Ok(RegCase {
        name,
        transport,
        cycles,
        register,
        unregister,
        register_wire,
        unregister_wire,
        register_cpu,
        unregister_cpu,
        first_error,
    })
}

// ---------------------------------------------------------------------------------------
// The notifiers
// ---------------------------------------------------------------------------------------

/// `sip:pN@contoso.test`: presentity `N`.
fn target_uri(i: usize) -> String {
    format!("sip:p{i}@{DOMAIN}")
}

/// `N` of a URI whose user part is `pN`.
fn target_index(uri: &[u8]) -> Option<usize> {
    let uri = std::str::from_utf8(uri).ok()?;
    let rest = uri.strip_prefix("sip:p")?;
    let digits = &rest[..rest.find('@')?];
    digits.parse().ok()
}

/// What a notifier counted.
#[derive(Default)]
struct NotifierStats {
    subscribes: AtomicU64,
    refreshes: AtomicU64,
    unsubscribes: AtomicU64,
    refused: AtomicU64,
    active: AtomicU64,
    notifies_ok: AtomicU64,
    notifies_failed: AtomicU64,
    first_failure: Mutex<Option<String>>,
}

impl NotifierStats {
    fn fail(&self, what: String) {
        self.first_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(what);
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Acquire)
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::AcqRel);
    }

    /// NOTIFYs answered (200 or not) or failed to send.
    fn answered(&self) -> u64 {
        Self::get(&self.notifies_ok) + Self::get(&self.notifies_failed)
    }
}

/// A NOTIFY to send.
#[derive(Clone, Copy)]
enum Pending {
    /// `active`, with the PIDF of `AVAILABILITIES[i % len]`.
    Active(usize),
    /// The last one: `terminated;reason=timeout`, no body.
    Terminated,
}

/// The PIDF bodies, made once per availability with a placeholder entity.
struct Bodies(Vec<(String, String)>);

/// Stands for the presentity in [`Bodies`].
const ENTITY: &str = "sip:entity-placeholder@contoso.test";

impl Bodies {
    fn new() -> Bodies {
        Bodies(
            AVAILABILITIES
                .iter()
                .map(|a| {
                    let xml = PresenceDocument::from_availability(ENTITY, *a, None).to_xml();
                    match xml.split_once(ENTITY) {
                        Some((p, s)) => (p.to_string(), s.to_string()),
                        None => (xml, String::new()),
                    }
                })
                .collect(),
        )
    }

    /// `(before, after)` the entity for availability `a`.
    fn parts(&self, a: usize) -> (&str, &str) {
        let (b, e) = &self.0[a % self.0.len()];
        (b, e)
    }

    fn body(&self, a: usize, idx: usize) -> String {
        let (before, after) = self.parts(a);
        let entity = target_uri(idx);
        let mut s = String::with_capacity(before.len() + entity.len() + after.len());
        s.push_str(before);
        s.push_str(&entity);
        s.push_str(after);
        s
    }
}

/// The SUBSCRIBE's `Expires`, at most what the notifier grants.
fn asked_expires(req: &SipMessage) -> u32 {
    req.expires()
        .and_then(Result::ok)
        .unwrap_or(GRANTED_EXPIRES)
        .min(GRANTED_EXPIRES)
}

/// Which notifier serves the presentities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum NotifierKind {
    /// The second platform of a `loopback::pair`.
    #[default]
    Platform,
    /// A bare transport (`transport_tls::SipTransport`).
    Transport,
}

impl NotifierKind {
    fn name(self) -> &'static str {
        match self {
            NotifierKind::Platform => "platform notifier",
            NotifierKind::Transport => "transport notifier",
        }
    }
}

/// Either notifier, as the measurement drives it.
enum Notifier {
    Platform(PlatformNotifier),
    Transport(TransportNotifier),
}

impl Notifier {
    fn stats(&self) -> &Arc<NotifierStats> {
        match self {
            Notifier::Platform(n) => &n.stats,
            Notifier::Transport(n) => &n.stats,
        }
    }

    /// Queues a NOTIFY with `AVAILABILITIES[a % len]` for every active subscription.
    async fn round(&self, a: usize) -> Result<(), String> {
        match self {
            Notifier::Platform(n) => {
                n.round(a);
                Ok(())
            }
            Notifier::Transport(n) => n.command(TransportCommand::Round(a)).await,
        }
    }

    /// The heap the notifier holds for its subscriptions, when it can be told exactly.
    async fn table_bytes(&self) -> Result<Option<u64>, String> {
        match self {
            Notifier::Platform(_) => Ok(None),
            Notifier::Transport(n) => n.table_bytes().await.map(Some),
        }
    }

    fn failure(&self) -> Option<String> {
        self.stats()
            .first_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

// --- the platform notifier ---

/// A raw endpoint (default routing) of a platform: answers each SUBSCRIBE 200 (the
/// platform makes the notifier's dialog) and sends NOTIFYs with `send_in_dialog`, from
/// `window` workers (so at most `window` await their answer).
struct PlatformNotifier {
    stats: Arc<NotifierStats>,
    dialogs: Arc<Mutex<Vec<Option<DialogId>>>>,
    jobs: mpsc::UnboundedSender<(u32, Pending)>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for PlatformNotifier {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl PlatformNotifier {
    async fn start(
        platform: CollaborationPlatform,
        presentities: usize,
        window: usize,
    ) -> Result<PlatformNotifier, String> {
        let owner = home(&format!("sip:presence@{DOMAIN}"));
        let (_, incoming) = try_bounded(
            STEP,
            "registering the notifier endpoint",
            platform.register_endpoint(owner, None, true),
        )
        .await?
        .map_err(|e| format!("registering the notifier endpoint: {e}"))?;
        let stats = Arc::new(NotifierStats::default());
        let mut slots = Vec::with_capacity(presentities);
        slots.resize_with(presentities, || None);
        let dialogs = Arc::new(Mutex::new(slots));
        let (jobs, jobs_rx) = mpsc::unbounded_channel();
        let jobs_rx = Arc::new(tokio::sync::Mutex::new(jobs_rx));
        let bodies = Arc::new(Bodies::new());
        let mut tasks = vec![tokio::spawn(serve_subscribes(
            platform.clone(),
            incoming,
            dialogs.clone(),
            jobs.clone(),
            stats.clone(),
        ))];
        for _ in 0..window {
            tasks.push(tokio::spawn(send_notifies(
                platform.clone(),
                jobs_rx.clone(),
                dialogs.clone(),
                bodies.clone(),
                stats.clone(),
            )));
        }
        Ok(PlatformNotifier {
            stats,
            dialogs,
            jobs,
            tasks,
        })
    }

    fn round(&self, a: usize) {
        let dialogs = self.dialogs.lock().unwrap_or_else(|p| p.into_inner());
        for (i, d) in dialogs.iter().enumerate() {
            if d.is_some() {
                let _ = self.jobs.send((i as u32, Pending::Active(a)));
            }
        }
    }
}

/// Answers the SUBSCRIBEs that reach the notifier endpoint.
async fn serve_subscribes(
    platform: CollaborationPlatform,
    mut incoming: mpsc::Receiver<IncomingRequest>,
    dialogs: Arc<Mutex<Vec<Option<DialogId>>>>,
    jobs: mpsc::UnboundedSender<(u32, Pending)>,
    stats: Arc<NotifierStats>,
) {
    let refuse = |stats: &NotifierStats| NotifierStats::bump(&stats.refused);
    while let Some(mut req) = incoming.recv().await {
        if req.request().method() != Some(&Method::Subscribe) {
            refuse(&stats);
            let _ = req
                .respond(405, "Method Not Allowed", &[("Allow", "SUBSCRIBE")], None)
                .await;
            continue;
        }
        let slots = dialogs.lock().unwrap_or_else(|p| p.into_inner()).len();
        let idx = req
            .request()
            .request_uri_bytes()
            .and_then(target_index)
            .filter(|i| *i < slots);
        let (Some(idx), Some(dialog)) = (idx, req.dialog()) else {
            refuse(&stats);
            let _ = req.respond(404, "Not Found", &[], None).await;
            continue;
        };
        let expires = asked_expires(req.request());
        let in_dialog = req.request().to().ok().is_some_and(|t| t.tag().is_some());
        let e = expires.to_string();
        if in_dialog {
            let ours =
                dialogs.lock().unwrap_or_else(|p| p.into_inner())[idx].as_ref() == Some(&dialog);
            if !ours {
                refuse(&stats);
                let _ = req
                    .respond(481, sip_core::reason_phrase(481), &[], None)
                    .await;
                continue;
            }
            if let Err(err) = req.respond(200, "OK", &[("Expires", &e)], None).await {
                stats.fail(format!("answering a SUBSCRIBE: {err}"));
                continue;
            }
            if expires == 0 {
                NotifierStats::bump(&stats.unsubscribes);
                let _ = jobs.send((idx as u32, Pending::Terminated));
            } else {
                NotifierStats::bump(&stats.refreshes);
            }
            continue;
        }
        let contact = platform
            .contact_uri(&format!("p{idx}"))
            .map(|c| format!("<{c}>"))
            .unwrap_or_default();
        let answered = req
            .respond(200, "OK", &[("Expires", &e), ("Contact", &contact)], None)
            .await;
        if let Err(err) = answered {
            stats.fail(format!("answering a SUBSCRIBE: {err}"));
            continue;
        }
        let old = dialogs.lock().unwrap_or_else(|p| p.into_inner())[idx].replace(dialog);
        match old {
            Some(old) => platform.end_dialog(&old).await,
            None => NotifierStats::bump(&stats.active),
        }
        NotifierStats::bump(&stats.subscribes);
        let _ = jobs.send((idx as u32, Pending::Active(0)));
        if expires == 0 {
            let _ = jobs.send((idx as u32, Pending::Terminated));
        }
    }
}

/// One of the `window` workers sending NOTIFYs in their subscription's dialog.
async fn send_notifies(
    platform: CollaborationPlatform,
    jobs: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<(u32, Pending)>>>,
    dialogs: Arc<Mutex<Vec<Option<DialogId>>>>,
    bodies: Arc<Bodies>,
    stats: Arc<NotifierStats>,
) {
    loop {
        let job = jobs.lock().await.recv().await;
        let Some((idx, what)) = job else {
            return;
        };
        let idx = idx as usize;
        let dialog = dialogs.lock().unwrap_or_else(|p| p.into_inner())[idx].clone();
        let Some(dialog) = dialog else {
            continue;
        };
        let notify = OutgoingRequest::new(Method::Notify, "").header("Event", "presence");
        let notify = match what {
            Pending::Active(a) => notify
                .header(
                    "Subscription-State",
                    format!("active;expires={GRANTED_EXPIRES}"),
                )
                .body(CONTENT_TYPE, bodies.body(a, idx)),
            Pending::Terminated => notify.header("Subscription-State", "terminated;reason=timeout"),
        };
        match tokio::time::timeout(STEP, platform.send_in_dialog(&dialog, notify)).await {
            Ok(Ok(_)) => NotifierStats::bump(&stats.notifies_ok),
            Ok(Err(e)) => {
                NotifierStats::bump(&stats.notifies_failed);
                stats.fail(format!("NOTIFY: {e}"));
            }
            Err(_) => {
                NotifierStats::bump(&stats.notifies_failed);
                stats.fail(format!("NOTIFY: no answer within {STEP:?}"));
            }
        }
        if let Pending::Terminated = what {
            let removed = {
                let mut d = dialogs.lock().unwrap_or_else(|p| p.into_inner());
                let ours = d[idx].as_ref() == Some(&dialog);
                ours.then(|| d[idx].take()).flatten()
            };
            if removed.is_some() {
                stats.active.fetch_sub(1, Ordering::AcqRel);
            }
            platform.end_dialog(&dialog).await;
        }
    }
}

// --- the transport notifier ---

enum TransportCommand {
    /// A NOTIFY with `AVAILABILITIES[i % len]` to every active subscription.
    Round(usize),
    /// The heap the subscription table holds beyond what was allocated at start.
    TableBytes(oneshot::Sender<u64>),
}

/// One subscription, as the transport notifier keeps it.
struct TransportSub {
    call_id: Box<str>,
    /// The SUBSCRIBE's From (with the subscriber's tag): the NOTIFYs' To.
    subscriber: Box<str>,
    /// The SUBSCRIBE's Contact URI: the NOTIFYs' Request-URI.
    contact: Box<str>,
    cseq: u32,
    connection: ConnectionId,
}

/// A notifier on a bare transport: a mutual-TLS listener, the subscriptions in a table
/// allocated at start, NOTIFYs written by hand in each subscription's dialog (Call-ID,
/// tags, increasing CSeq), at most `window` awaiting their answer. Its heap per
/// subscription is known exactly, which the platform notifier's is not.
struct TransportNotifier {
    commands: mpsc::Sender<TransportCommand>,
    stats: Arc<NotifierStats>,
    transport: SipTransport,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TransportNotifier {
    fn drop(&mut self) {
        self.task.abort();
        self.transport.shutdown();
    }
}

impl TransportNotifier {
    async fn start(
        pki: &LoopbackPki,
        presentities: usize,
        window: usize,
    ) -> Result<TransportNotifier, String> {
        let identity = pki.identity(NOTIFIER_FQDN).map_err(|e| e.to_string())?;
        let (transport, events) =
            SipTransport::new(TransportSettings::new()).map_err(|e| e.to_string())?;
        let addr = transport
            .listen_tls(
                SocketAddr::from(([127, 0, 0, 1], 0)),
                &TlsServerSettings::mutual(identity, pki.roots()),
            )
            .await
            .map_err(|e| format!("notifier listener: {e}"))?;
        let stats = Arc::new(NotifierStats::default());
        let (commands, commands_rx) = mpsc::channel(64);
        let queue_capacity = presentities + 1024;
        let mut subs = Vec::with_capacity(presentities);
        subs.resize_with(presentities, || None);
        let task = TransportTask {
            transport: transport.clone(),
            host: addr.to_string(),
            window,
            subs,
            queue: VecDeque::with_capacity(queue_capacity),
            queue_capacity,
            outstanding: 0,
            bodies: Bodies::new(),
            stats: stats.clone(),
            branch: 0,
        };
        let task = tokio::spawn(task.run(events, commands_rx));
        Ok(TransportNotifier {
            commands,
            stats,
            transport,
            addr,
            task,
        })
    }

    async fn command(&self, c: TransportCommand) -> Result<(), String> {
        try_bounded(STEP, "notifier command", self.commands.send(c))
            .await?
            .map_err(|_| "the notifier stopped".to_string())
    }

    async fn table_bytes(&self) -> Result<u64, String> {
        let (tx, rx) = oneshot::channel();
        self.command(TransportCommand::TableBytes(tx)).await?;
        try_bounded(STEP, "notifier table size", rx)
            .await?
            .map_err(|_| "the notifier stopped".to_string())
    }
}

struct TransportTask {
    transport: SipTransport,
    /// `127.0.0.1:PORT`, for Via and Contact.
    host: String,
    window: usize,
    subs: Vec<Option<TransportSub>>,
    queue: VecDeque<(u32, Pending)>,
    queue_capacity: usize,
    outstanding: usize,
    bodies: Bodies,
    stats: Arc<NotifierStats>,
    branch: u64,
}

impl TransportTask {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<TransportEvent>,
        mut commands: mpsc::Receiver<TransportCommand>,
    ) {
        loop {
            tokio::select! {
                biased;
                ev = events.recv() => match ev {
                    Some(TransportEvent::Message(rm)) => {
                        if rm.message.is_request() {
                            self.on_request(rm).await;
                        } else {
                            self.on_response(&rm.message);
                        }
                    }
                    Some(_) => {}
                    None => return,
                },
                c = commands.recv() => match c {
                    Some(TransportCommand::Round(a)) => {
                        for (i, s) in self.subs.iter().enumerate() {
                            if s.is_some() {
                                self.queue.push_back((i as u32, Pending::Active(a)));
                            }
                        }
                    }
                    Some(TransportCommand::TableBytes(reply)) => {
                        let _ = reply.send(self.table_bytes());
                    }
                    None => return,
                },
            }
            self.pump().await;
        }
    }

    /// The strings of the table, and the queue's growth beyond its first capacity.
    fn table_bytes(&self) -> u64 {
        let strings: usize = self
            .subs
            .iter()
            .flatten()
            .map(|s| s.call_id.len() + s.subscriber.len() + s.contact.len())
            .sum();
        let grown = self.queue.capacity().saturating_sub(self.queue_capacity)
            * std::mem::size_of::<(u32, Pending)>();
        (strings + grown) as u64
    }

    async fn reply(
        &self,
        rm: &ReceivedMessage,
        status: u16,
        to_tag: Option<&str>,
        headers: &[(&str, String)],
    ) {
        let mut r =
            match SipMessage::response_to(&rm.message, status, sip_core::reason_phrase(status)) {
                Ok(r) => r,
                Err(e) => {
                    self.stats.fail(format!("building a {status}: {e}"));
                    return;
                }
            };
        if let Some(t) = to_tag {
            let _ = r.set_to_tag(t);
        }
        for (n, v) in headers {
            let _ = r.push_header(*n, v.clone());
        }
        if status >= 300 {
            NotifierStats::bump(&self.stats.refused);
        }
        if let Err(e) = self.transport.reply(rm, &r).await {
            self.stats.fail(format!("sending a {status}: {e}"));
        }
    }

    async fn on_request(&mut self, rm: ReceivedMessage) {
        match rm.message.method() {
            Some(Method::Subscribe) => self.on_subscribe(&rm).await,
            Some(Method::Options) => self.reply(&rm, 200, None, &[]).await,
            _ => {
                self.reply(&rm, 405, None, &[("Allow", "SUBSCRIBE, OPTIONS".into())])
                    .await
            }
        }
    }

    async fn on_subscribe(&mut self, rm: &ReceivedMessage) {
        let req = &rm.message;
        let idx = req
            .request_uri_bytes()
            .and_then(target_index)
            .filter(|i| *i < self.subs.len());
        let Some(idx) = idx else {
            self.reply(rm, 404, None, &[]).await;
            return;
        };
        let expires = asked_expires(req);
        let call_id = String::from_utf8_lossy(req.call_id().unwrap_or_default()).into_owned();
        let in_dialog = req.to().ok().is_some_and(|t| t.tag().is_some());
        if in_dialog {
            let ours = self.subs[idx]
                .as_ref()
                .is_some_and(|s| *s.call_id == *call_id);
            if !ours {
                self.reply(rm, 481, None, &[]).await;
                return;
            }
            self.reply(rm, 200, None, &[("Expires", expires.to_string())])
                .await;
            if expires == 0 {
                NotifierStats::bump(&self.stats.unsubscribes);
                self.queue.push_back((idx as u32, Pending::Terminated));
            } else {
                NotifierStats::bump(&self.stats.refreshes);
            }
            return;
        }
        let from = req
            .header(HeaderName::From)
            .map(|v| String::from_utf8_lossy(v));
        let contact = req.header(HeaderName::Contact).map(|v| {
            let v = String::from_utf8_lossy(v);
            let v = v.trim();
            let inner = match (v.find('<'), v.find('>')) {
                (Some(a), Some(b)) if a < b => &v[a + 1..b],
                _ => v,
            };
            inner.to_string()
        });
        let (Some(from), Some(contact), Some(connection)) = (from, contact, rm.connection_id())
        else {
            self.reply(rm, 400, None, &[]).await;
            return;
        };
        let tag = format!("n{idx}");
        let headers = [
            ("Expires", expires.to_string()),
            (
                "Contact",
                format!("<sip:p{idx}@{};transport=tls>", self.host),
            ),
        ];
        self.reply(rm, 200, Some(&tag), &headers).await;
        let sub = TransportSub {
            call_id: call_id.into_boxed_str(),
            subscriber: from.into_owned().into_boxed_str(),
            contact: contact.into_boxed_str(),
            cseq: 0,
            connection,
        };
        if self.subs[idx].replace(sub).is_none() {
            NotifierStats::bump(&self.stats.active);
        }
        NotifierStats::bump(&self.stats.subscribes);
        self.queue.push_back((idx as u32, Pending::Active(0)));
        if expires == 0 {
            // A fetch: the state, then the end.
            self.queue.push_back((idx as u32, Pending::Terminated));
        }
    }

    fn on_response(&mut self, m: &SipMessage) {
        let is_notify = m.cseq().is_ok_and(|c| c.method() == Method::Notify);
        let Some(status) = m.status().filter(|s| *s >= 200 && is_notify) else {
            return;
        };
        self.outstanding = self.outstanding.saturating_sub(1);
        if (200..300).contains(&status) {
            NotifierStats::bump(&self.stats.notifies_ok);
        } else {
            NotifierStats::bump(&self.stats.notifies_failed);
            self.stats.fail(format!("a NOTIFY was answered {status}"));
        }
    }

    /// Sends queued NOTIFYs while fewer than `window` await their answer.
    async fn pump(&mut self) {
        while self.outstanding < self.window {
            let Some((idx, what)) = self.queue.pop_front() else {
                return;
            };
            let Some((connection, bytes)) = self.notify(idx as usize, what) else {
                continue;
            };
            match self.transport.send_raw(connection, bytes).await {
                Ok(()) => self.outstanding += 1,
                Err(e) => {
                    NotifierStats::bump(&self.stats.notifies_failed);
                    self.stats.fail(format!("sending a NOTIFY: {e}"));
                }
            }
        }
    }

    /// The NOTIFY of subscription `idx` (the last one, which ends it, for `Terminated`).
    fn notify(&mut self, idx: usize, what: Pending) -> Option<(ConnectionId, Bytes)> {
        let host = &self.host;
        self.branch += 1;
        let branch = self.branch;
        let slot = self.subs.get_mut(idx)?;
        let sub = slot.as_mut()?;
        sub.cseq += 1;
        let mut m = String::with_capacity(1024);
        let _ = write!(
            m,
            "NOTIFY {contact} SIP/2.0\r\n\
             Via: SIP/2.0/TLS {host};branch=z9hG4bKntf{branch}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:p{idx}@{DOMAIN}>;tag=n{idx}\r\n\
             To: {to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} NOTIFY\r\n\
             Contact: <sip:p{idx}@{host};transport=tls>\r\n\
             Event: presence\r\n",
            contact = sub.contact,
            to = sub.subscriber,
            call_id = sub.call_id,
            cseq = sub.cseq,
        );
        let connection = sub.connection;
        match what {
            Pending::Active(a) => {
                let (before, after) = self.bodies.parts(a);
                let entity = target_uri(idx);
                let len = before.len() + entity.len() + after.len();
                let _ = write!(
                    m,
                    "Subscription-State: active;expires={GRANTED_EXPIRES}\r\n\
                     Content-Type: {CONTENT_TYPE}\r\n\
                     Content-Length: {len}\r\n\r\n{before}{entity}{after}"
                );
            }
            Pending::Terminated => {
                m.push_str(
                    "Subscription-State: terminated;reason=timeout\r\nContent-Length: 0\r\n\r\n",
                );
                *slot = None;
                self.stats.active.fetch_sub(1, Ordering::AcqRel);
            }
        }
        Some((connection, Bytes::from(m)))
    }
}

// ---------------------------------------------------------------------------------------
// Presence
// ---------------------------------------------------------------------------------------

/// What the application saw on the view's notification stream.
#[derive(Default)]
struct Seen {
    documents: AtomicU64,
    /// Presentities reported `Subscribed` at least once.
    subscribed: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Seen {
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Acquire)
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::AcqRel);
    }
}

/// Polls `done` every millisecond until it holds or `limit` passes.
async fn wait_until(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> Result<(), String> {
    let t0 = Instant::now();
    loop {
        if done() {
            return Ok(());
        }
        if t0.elapsed() >= limit {
            return Err(format!("{what}: not within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn heap() -> i64 {
    ALLOCATOR.allocated() as i64
}

/// CPU time (user and system, every thread) this process has used: Linux
/// `/proc/self/stat`, in 10 ms ticks. Zero where it cannot be read.
fn cpu_time() -> Duration {
    let read = || -> Option<Duration> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // After the command name: field 3 (state) first, so utime (14) and stime (15)
        // are the 12th and 13th.
        let rest = stat.get(stat.rfind(')')? + 1..)?;
        let mut f = rest.split_whitespace().skip(11);
        let utime: u64 = f.next()?.parse().ok()?;
        let stime: u64 = f.next()?.parse().ok()?;
        Some(Duration::from_millis((utime + stime) * 10))
    };
    read().unwrap_or_default()
}

/// Microseconds of CPU per item.
fn cpu_per(cpu: Duration, items: u64) -> f64 {
    cpu.as_secs_f64() * 1e6 / items.max(1) as f64
}

/// The subscriber (a platform with an application endpoint `bot` and its view) against
/// the notifier of `kind`.
async fn presence(cfg: Config, kind: NotifierKind) -> Result<Presence, String> {
    let p = cfg.presentities;
    let pki = LoopbackPki::new().map_err(|e| e.to_string())?;
    let subscriber_capacity = (2 * cfg.window).max(1024);
    let (subscriber, notifier, notifier_platform) = match kind {
        NotifierKind::Platform => {
            // The notifier's endpoint queue takes a whole burst of SUBSCRIBEs.
            let (a, b) = try_bounded(
                STEP,
                "starting the platform pair",
                pair(&pki, SUBSCRIBER_FQDN, NOTIFIER_FQDN, |fqdn, s| {
                    let capacity = if fqdn == NOTIFIER_FQDN {
                        p + 1024
                    } else {
                        subscriber_capacity
                    };
                    s.topology(Topology::new([DOMAIN]))
                        .endpoint_capacity(capacity)
                }),
            )
            .await?
            .map_err(|e| format!("starting the platform pair: {e}"))?;
            let n = PlatformNotifier::start(b.clone(), p, cfg.window).await?;
            (a, Notifier::Platform(n), Some(b))
        }
        NotifierKind::Transport => {
            let n = TransportNotifier::start(&pki, p, cfg.window).await?;
            let identity = pki.identity(SUBSCRIBER_FQDN).map_err(|e| e.to_string())?;
            // As `loopback::pair` makes a platform, with the notifier as outbound proxy.
            let settings = ServerPlatformSettings::new(
                "ucma-rs endpoints bench",
                SUBSCRIBER_FQDN,
                identity,
                pki.roots(),
                OutboundProxy::tls(n.addr, NOTIFIER_FQDN),
            )
            .listen(Listener::mutual_tls(SocketAddr::from(([127, 0, 0, 1], 0))))
            .topology(Topology::new([DOMAIN]))
            .endpoint_capacity(subscriber_capacity);
            let a = try_bounded(
                STEP,
                "starting the subscriber platform",
                CollaborationPlatform::start(settings),
            )
            .await?
            .map_err(|e| format!("starting the subscriber platform: {e}"))?;
            (a, Notifier::Transport(n), None)
        }
    };
    let result = watch_presence(&cfg, kind, &subscriber, &notifier).await;
    common::stop(&subscriber).await;
    drop(notifier);
    if let Some(b) = notifier_platform {
        common::stop(&b).await;
    }
    result
}

async fn watch_presence(
    cfg: &Config,
    kind: NotifierKind,
    platform: &CollaborationPlatform,
    notifier: &Notifier,
) -> Result<Presence, String> {
    let p = cfg.presentities;
    let stats = notifier.stats();
    let bot = ApplicationEndpoint::new(
        platform,
        ApplicationEndpointSettings::new(home(&format!("sip:bot@{DOMAIN}"))),
    );
    try_bounded(STEP, "establishing the bot", bot.establish())
        .await?
        .map_err(|e| format!("establishing the bot: {e}"))?;
    // Opens the TLS connection to the notifier outside the measured time.
    try_bounded(
        STEP,
        "OPTIONS to the notifier",
        platform.send_request(OutgoingRequest::options(format!("sip:{DOMAIN}"))),
    )
    .await?
    .map_err(|e| format!("OPTIONS to the notifier: {e}"))?;

    let targets: Vec<String> = (0..p).map(target_uri).collect();
    // Room for every notification of a phase: the application reads them all, and the
    // stream must not drop any.
    let view = RemotePresenceView::new(&bot).notification_capacity(2 * p + 1024);
    let mut rx = view.notifications();
    let seen = Arc::new(Seen::default());
    let reader = {
        let seen = seen.clone();
        let mut subscribed = vec![false; p];
        tokio::spawn(async move {
            while let Some(n) = rx.recv().await {
                if n.document.is_some() {
                    Seen::bump(&seen.documents);
                }
                if let Some(e) = &n.error {
                    Seen::bump(&seen.errors);
                    seen.first_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert_with(|| format!("{}: {e}", n.target));
                }
                if n.state.is_subscribed() {
                    let i = target_index(n.target.as_bytes());
                    if let Some(s) = i.and_then(|i| subscribed.get_mut(i)).filter(|s| !**s) {
                        *s = true;
                        Seen::bump(&seen.subscribed);
                    }
                }
            }
        })
    };
    tokio::time::sleep(cfg.settle).await;

    let mut out = Presence {
        notifier: kind,
        presentities: p,
        rounds: cfg.rounds,
        ..Presence::default()
    };
    let heap0 = heap();
    let rss0 = common::rss_bytes().unwrap_or(0) as i64;
    let limit = cfg.phase_limit(p);
    let t0 = Instant::now();
    let c0 = cpu_time();
    try_bounded(limit, "subscribe", view.subscribe(targets.iter().cloned()))
        .await?
        .map_err(|e| format!("subscribe: {e}"))?;
    let phase = wait_until("every presentity Subscribed", limit, || {
        Seen::get(&seen.subscribed) >= p as u64 || Seen::get(&seen.errors) > 0
    })
    .await
    .and_then(|()| {
        if Seen::get(&seen.subscribed) >= p as u64 {
            Ok(())
        } else {
            Err("a subscription failed".to_string())
        }
    });
    out.subscribed = t0.elapsed();
    let initial = p as u64;
    let phase = match phase {
        Ok(()) => {
            wait_until("every initial NOTIFY delivered", limit, || {
                Seen::get(&seen.documents) >= initial && stats.answered() >= initial
            })
            .await
        }
        e => e,
    };
    out.initial_delivered = t0.elapsed();
    out.subscribe_cpu = cpu_time().saturating_sub(c0);
    if let Err(e) = phase {
        return Err(format!(
            "{e} (subscribed {}, documents {}; notifier: {} SUBSCRIBEs accepted, {} refused, \
             {} NOTIFYs answered 200, {} failed; first error {:?}; notifier's {:?})",
            Seen::get(&seen.subscribed),
            Seen::get(&seen.documents),
            NotifierStats::get(&stats.subscribes),
            NotifierStats::get(&stats.refused),
            NotifierStats::get(&stats.notifies_ok),
            NotifierStats::get(&stats.notifies_failed),
            seen.first_error.lock().unwrap_or_else(|p| p.into_inner()),
            notifier.failure(),
        ));
    }
    // Idle subscriptions: answers delivered, helper tasks done.
    tokio::time::sleep(cfg.settle).await;
    out.heap_both = heap() - heap0;
    out.rss_both = common::rss_bytes().unwrap_or(0) as i64 - rss0;
    out.notifier_table = notifier.table_bytes().await?;

    // Rounds of state changes.
    let docs0 = Seen::get(&seen.documents);
    let answered0 = stats.answered();
    let want = (cfg.rounds * p) as u64;
    let limit = cfg.phase_limit(cfg.rounds * p);
    let t1 = Instant::now();
    let c1 = cpu_time();
    for r in 1..=cfg.rounds {
        notifier.round(r).await?;
    }
    let rounds = wait_until("every round's NOTIFYs delivered", limit, || {
        Seen::get(&seen.documents) - docs0 >= want && stats.answered() - answered0 >= want
    })
    .await;
    out.notify_elapsed = t1.elapsed();
    out.notify_cpu = cpu_time().saturating_sub(c1);
    out.notifies = NotifierStats::get(&stats.notifies_ok).saturating_sub(initial);
    out.delivered = Seen::get(&seen.documents) - docs0;
    if let Err(e) = rounds {
        eprintln!("endpoints ({}): {e}", kind.name());
    }
    let last = AVAILABILITIES[cfg.rounds % AVAILABILITIES.len()];
    out.wrong_availability = targets
        .iter()
        .filter(|t| view.availability(t) != Some(last))
        .count() as u64;

    // Unsubscribing everything.
    let unsubscribes0 = NotifierStats::get(&stats.unsubscribes);
    let t2 = Instant::now();
    let ended = try_bounded(cfg.phase_limit(p), "terminating the view", view.terminate()).await;
    out.unsubscribe_elapsed = t2.elapsed();
    out.unsubscribed = NotifierStats::get(&stats.unsubscribes) - unsubscribes0;
    if let Err(e) = ended {
        eprintln!("endpoints ({}): {e}", kind.name());
    }
    // The notifier forgets a subscription once its final NOTIFY is answered, which may
    // be just after the view is done with it.
    let _ = wait_until("the notifier forgetting every subscription", STEP, || {
        NotifierStats::get(&stats.active) == 0
    })
    .await;
    out.still_active = NotifierStats::get(&stats.active);

    out.dropped = view.dropped_notifications();
    // The stream ends with the view: the reader has seen everything once it returns.
    drop(view);
    if try_bounded(STEP, "the last notifications", reader)
        .await
        .is_err()
    {
        eprintln!(
            "endpoints ({}): the notification stream did not end",
            kind.name()
        );
    }
    out.failed_notifies = NotifierStats::get(&stats.notifies_failed);
    out.refused = NotifierStats::get(&stats.refused);
    out.lost = (initial + want).saturating_sub(Seen::get(&seen.documents));
    out.errors = Seen::get(&seen.errors);
    out.first_error = seen
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .or_else(|| notifier.failure());
    try_bounded(STEP, "terminating the bot", bot.terminate()).await?;
    Ok(out)
}

/// The subscriber platform's own share: the same subscriptions to the transport notifier
/// made with `CollaborationPlatform::subscribe` from a raw endpoint that answers every
/// NOTIFY 200, no view, no endpoint core.
#[derive(Debug, Clone, Default)]
struct PlatformOnly {
    presentities: usize,
    /// SUBSCRIBEs outstanding at most.
    window: usize,
    /// From the first SUBSCRIBE to every one answered (`window` outstanding).
    subscribed: Duration,
    failed: u64,
    heap_both: i64,
    notifier_table: u64,
}

impl PlatformOnly {
    fn per_subscription(&self) -> f64 {
        (self.heap_both - self.notifier_table as i64) as f64 / self.presentities.max(1) as f64
    }
}

async fn platform_only(cfg: Config, window: usize) -> Result<PlatformOnly, String> {
    let p = cfg.presentities;
    let pki = LoopbackPki::new().map_err(|e| e.to_string())?;
    let notifier = TransportNotifier::start(&pki, p, cfg.window).await?;
    let identity = pki.identity(SUBSCRIBER_FQDN).map_err(|e| e.to_string())?;
    let settings = ServerPlatformSettings::new(
        "ucma-rs endpoints bench",
        SUBSCRIBER_FQDN,
        identity,
        pki.roots(),
        OutboundProxy::tls(notifier.addr, NOTIFIER_FQDN),
    )
    .listen(Listener::mutual_tls(SocketAddr::from(([127, 0, 0, 1], 0))))
    .topology(Topology::new([DOMAIN]))
    .endpoint_capacity((2 * cfg.window).max(1024));
    let platform = try_bounded(
        STEP,
        "starting the subscriber platform",
        CollaborationPlatform::start(settings),
    )
    .await?
    .map_err(|e| format!("starting the subscriber platform: {e}"))?;
    let result = subscribe_raw(&cfg, window, &platform, &notifier).await;
    common::stop(&platform).await;
    drop(notifier);
    result
}

async fn subscribe_raw(
    cfg: &Config,
    window: usize,
    platform: &CollaborationPlatform,
    notifier: &TransportNotifier,
) -> Result<PlatformOnly, String> {
    let p = cfg.presentities;
    let owner = format!("sip:bot@{DOMAIN}");
    let (id, mut incoming) = try_bounded(
        STEP,
        "registering the raw endpoint",
        platform.register_endpoint(home(&owner), None, false),
    )
    .await?
    .map_err(|e| format!("registering the raw endpoint: {e}"))?;
    let answering = tokio::spawn(async move {
        while let Some(mut r) = incoming.recv().await {
            let _ = r.respond(200, "OK", &[], None).await;
        }
    });
    try_bounded(
        STEP,
        "OPTIONS to the notifier",
        platform.send_request(OutgoingRequest::options(format!("sip:{DOMAIN}"))),
    )
    .await?
    .map_err(|e| format!("OPTIONS to the notifier: {e}"))?;
    let contact = format!("<{}>", platform.contact_uri("bot").unwrap_or_default());
    let requests: Vec<Arc<OutgoingRequest>> = (0..p)
        .map(|i| {
            Arc::new(
                OutgoingRequest::new(Method::Subscribe, target_uri(i))
                    .from(format!("<{owner}>"))
                    .header("Event", "presence")
                    .header("Accept", CONTENT_TYPE)
                    .header("Expires", GRANTED_EXPIRES.to_string())
                    .header("Contact", contact.clone()),
            )
        })
        .collect();
    tokio::time::sleep(cfg.settle).await;
    let stats = &notifier.stats;
    let heap0 = heap();
    let (rate, first_error) = windowed(&requests, window, |r| {
        let platform = platform.clone();
        async move {
            // The dialog id is dropped: only the platform keeps the subscription.
            platform
                .subscribe(id, (*r).clone())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await;
    let initial = p as u64;
    let delivered = wait_until("every initial NOTIFY answered", cfg.phase_limit(p), || {
        stats.answered() >= initial
    })
    .await;
    tokio::time::sleep(cfg.settle).await;
    let heap_both = heap() - heap0;
    let notifier_table = notifier.table_bytes().await?;
    answering.abort();
    if let Some(e) = first_error {
        return Err(format!("raw SUBSCRIBE: {e}"));
    }
    delivered?;
    drop(requests);
    Ok(PlatformOnly {
        presentities: p,
        window,
        subscribed: rate.elapsed,
        failed: rate.failed + NotifierStats::get(&stats.notifies_failed),
        heap_both,
        notifier_table,
    })
}

// ---------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

fn report(
    cfg: &Config,
    regs: &Result<Registrations, String>,
    presence: &[Result<Presence, String>],
    dialogs_only: &[Result<PlatformOnly, String>],
    load_before: &str,
    load_after: &str,
) {
    let mut j = String::new();
    let _ = writeln!(j, "{{");
    let _ = writeln!(j, "  \"bench\": \"endpoints\",");
    let _ = writeln!(
        j,
        "  \"mode\": \"{}\",",
        if cfg.smoke { "smoke" } else { "bench" }
    );
    let _ = writeln!(
        j,
        "  \"window\": {}, \"sipp_seconds\": {}, \"users\": {}, \"presentities\": {}, \"rounds\": {},",
        cfg.window,
        cfg.sipp_secs(),
        cfg.users,
        cfg.presentities,
        cfg.rounds
    );
    let _ = writeln!(
        j,
        "  \"load_average_before\": \"{}\", \"load_average_after\": \"{}\",",
        json_escape(load_before),
        json_escape(load_after)
    );

    println!();
    match regs {
        Ok(r) => {
            let reference = r.reference.per_sec();
            println!(
                "registrations at the contoso Kamailio ({} users configured; front ends started in {:.2} s)",
                cfg.users
                    + peer_harness::DEFAULT_USERS
                        .iter()
                        .filter(|(d, _, _)| *d == Deployment::Contoso)
                        .count(),
                r.federation_start.as_secs_f64()
            );
            println!(
                "{:<20} {:>9} {:>7} {:>7} {:>9} {:>7} {:>10} {:>7} {:>7} {:>9}",
                "case",
                "registers",
                "failed",
                "secs",
                "reg/s",
                "x sipp",
                "REG+401",
                "unreg",
                "failed",
                "unreg/s"
            );
            println!(
                "{:<20} {:>9} {:>7} {:>7.2} {:>9.0} {:>7.2} {:>10} {:>7} {:>7} {:>9}",
                "sipp register tcp",
                r.reference.ok,
                r.reference.failed,
                r.reference.elapsed.as_secs_f64(),
                reference,
                1.0,
                "2+1",
                "-",
                "-",
                "-"
            );
            let _ = writeln!(
                j,
                "  \"front_ends_start_s\": {:.3},",
                r.federation_start.as_secs_f64()
            );
            let _ = writeln!(
                j,
                "  \"sipp_register_tcp\": {{\"registrations\": {}, \"failed\": {}, \"elapsed_s\": {:.3}, \"per_s\": {:.1}}},",
                r.reference.ok,
                r.reference.failed,
                r.reference.elapsed.as_secs_f64(),
                reference
            );
            let _ = writeln!(j, "  \"ucma\": [");
            for (i, c) in r.cases.iter().enumerate() {
                let n = c.register.ok.max(1) as f64;
                let u = c.unregister.ok.max(1) as f64;
                let ratio = if reference > 0.0 {
                    c.register.per_sec() / reference
                } else {
                    0.0
                };
                let messages = format!(
                    "{:.1}+{:.1}",
                    c.register_wire.sent as f64 / n,
                    c.register_wire.challenged as f64 / n
                );
                println!(
                    "{:<20} {:>9} {:>7} {:>7.2} {:>9.0} {:>7.2} {:>10} {:>7} {:>7} {:>9.0}{}",
                    c.name,
                    c.register.ok,
                    c.register.failed,
                    c.register.elapsed.as_secs_f64(),
                    c.register.per_sec(),
                    ratio,
                    messages,
                    c.unregister.ok,
                    c.unregister.failed,
                    c.unregister.per_sec(),
                    c.first_error
                        .as_deref()
                        .map(|e| format!("  first error: {e}"))
                        .unwrap_or_default()
                );
                println!(
                    "{:<20} {} cycles of {} endpoints; CPU of this process {:.0} us per registration, {:.0} us per unregistration ({:.1} REGISTER + {:.1} 401 each)",
                    "",
                    c.cycles,
                    cfg.users,
                    cpu_per(c.register_cpu, c.register.ok),
                    cpu_per(c.unregister_cpu, c.unregister.ok),
                    c.unregister_wire.sent as f64 / u,
                    c.unregister_wire.challenged as f64 / u,
                );
                let _ = writeln!(
                    j,
                    "    {{\"name\": \"{}\", \"transport\": \"{}\", \"cycles\": {}, \"registrations\": {}, \"failed\": {}, \
                     \"elapsed_s\": {:.3}, \"per_s\": {:.1}, \"ratio_to_sipp\": {:.3}, \
                     \"register_sent\": {}, \"challenges\": {}, \"unregistrations\": {}, \
                     \"unregister_failed\": {}, \"unregister_elapsed_s\": {:.3}, \"unregister_per_s\": {:.1}, \
                     \"unregister_sent\": {}, \"unregister_challenges\": {}, \"cpu_us_per_registration\": {:.1}, \
                     \"cpu_us_per_unregistration\": {:.1}, \"first_error\": {}}}{}",
                    c.name,
                    c.transport,
                    c.cycles,
                    c.register.ok,
                    c.register.failed,
                    c.register.elapsed.as_secs_f64(),
                    c.register.per_sec(),
                    ratio,
                    c.register_wire.sent,
                    c.register_wire.challenged,
                    c.unregister.ok,
                    c.unregister.failed,
                    c.unregister.elapsed.as_secs_f64(),
                    c.unregister.per_sec(),
                    c.unregister_wire.sent,
                    c.unregister_wire.challenged,
                    cpu_per(c.register_cpu, c.register.ok),
                    cpu_per(c.unregister_cpu, c.unregister.ok),
                    json_opt(c.first_error.as_deref()),
                    if i + 1 < r.cases.len() { "," } else { "" }
                );
            }
            let _ = writeln!(j, "  ],");
        }
        Err(e) => {
            println!("registrations: ERROR {e}");
            let _ = writeln!(j, "  \"registrations_error\": \"{}\",", json_escape(e));
        }
    }

    println!();
    let _ = writeln!(j, "  \"presence\": [");
    for (i, run) in presence.iter().enumerate() {
        let comma = if i + 1 < presence.len() { "," } else { "" };
        match run {
            Ok(p) => report_presence(p, &mut j, comma),
            Err(e) => {
                println!("presence: ERROR {e}");
                let _ = writeln!(j, "    {{\"error\": \"{}\"}}{comma}", json_escape(e));
            }
        }
    }
    let _ = writeln!(j, "  ],");
    // The subscriber's share is exact with the transport notifier; the platform notifier's
    // share follows by difference.
    let exact = presence
        .iter()
        .flatten()
        .find_map(|p| p.subscriber_bytes().map(|b| p.per_subscription(b)));
    let platform_both = presence
        .iter()
        .flatten()
        .find(|p| p.notifier == NotifierKind::Platform)
        .map(|p| p.per_subscription(p.heap_both));
    if let (Some(sub), Some(both)) = (exact, platform_both) {
        println!(
            "notifier platform's share (platform run's both sides minus the subscriber side): {:.0} B per subscription",
            both - sub
        );
        let _ = writeln!(
            j,
            "  \"notifier_platform_bytes_per_subscription\": {:.1},",
            both - sub
        );
    }
    let _ = writeln!(j, "  \"subscriber_platform_only\": [");
    for (i, d) in dialogs_only.iter().enumerate() {
        let comma = if i + 1 < dialogs_only.len() { "," } else { "" };
        match d {
            Ok(d) => {
                println!(
                    "subscriber platform alone (raw subscribe, no view), {} SUBSCRIBEs {} at a time in {:.2} s: {:.0} B per subscription",
                    d.presentities,
                    d.window,
                    d.subscribed.as_secs_f64(),
                    d.per_subscription()
                );
                let _ = writeln!(
                    j,
                    "    {{\"presentities\": {}, \"window\": {}, \"subscribe_elapsed_s\": {:.3}, \
                     \"failed\": {}, \"heap_bytes_both_sides\": {}, \"notifier_table_bytes\": {}, \
                     \"heap_bytes_per_subscription\": {:.1}}}{comma}",
                    d.presentities,
                    d.window,
                    d.subscribed.as_secs_f64(),
                    d.failed,
                    d.heap_both,
                    d.notifier_table,
                    d.per_subscription(),
                );
            }
            Err(e) => {
                println!("subscriber platform alone: ERROR {e}");
                let _ = writeln!(j, "    {{\"error\": \"{}\"}}{comma}", json_escape(e));
            }
        }
    }
    let _ = writeln!(j, "  ],");
    // The view sends every SUBSCRIBE at once: compare with the platform doing the same.
    let burst = dialogs_only
        .iter()
        .flatten()
        .find(|d| d.window >= d.presentities)
        .map(PlatformOnly::per_subscription);
    if let (Some(platform), Some(sub)) = (burst, exact) {
        println!(
            "so the view, its dialog routes and its helper tasks' leftovers: {:.0} B per subscription",
            sub - platform
        );
        let _ = writeln!(
            j,
            "  \"view_bytes_per_subscription\": {:.1},",
            sub - platform
        );
    }
    match exact {
        Some(sub) => {
            println!(
                "target <= 1024 B per subscription (subscriber side): {sub:.0} B ({})",
                met(sub <= 1024.0)
            );
            let _ = writeln!(
                j,
                "  \"target_bytes_per_subscription\": {{\"value\": {sub:.1}, \"target\": 1024, \"met\": {}}},",
                sub <= 1024.0
            );
        }
        None => println!("target <= 1024 B per subscription: not measured"),
    }
    println!(
        "load average before {load_before}, after {load_after} (2 cores shared by everything)"
    );
    let _ = writeln!(j, "  \"complete\": true");
    let _ = writeln!(j, "}}");

    let dir = results_dir();
    let file = dir.join(if cfg.smoke {
        "endpoints-smoke.json"
    } else {
        "endpoints.json"
    });
    match std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, j)) {
        Ok(()) => println!("results written to {}", file.display()),
        Err(e) => eprintln!("could not write {}: {e}", file.display()),
    }
}

/// Prints one presence run and appends it to the JSON array.
fn report_presence(p: &Presence, j: &mut String, comma: &str) {
    let n = p.presentities as f64;
    let per = |d: Duration, k: f64| k / d.as_secs_f64().max(1e-9);
    println!("presence, {}:", p.notifier.name());
    println!(
        "  subscribe {}: all Subscribed in {:.2} s ({:.0}/s), all initial NOTIFYs delivered in {:.2} s",
        p.presentities,
        p.subscribed.as_secs_f64(),
        per(p.subscribed, n),
        p.initial_delivered.as_secs_f64()
    );
    println!(
        "  NOTIFY rounds {} x {}: {} answered 200, {} delivered to the application in {:.2} s: {:.0} NOTIFY/s",
        p.rounds,
        p.presentities,
        p.notifies,
        p.delivered,
        p.notify_elapsed.as_secs_f64(),
        per(p.notify_elapsed, p.delivered as f64)
    );
    println!(
        "  CPU of this process (both sides): {:.0} us per subscription (with its initial NOTIFY), {:.0} us per NOTIFY",
        cpu_per(p.subscribe_cpu, p.presentities as u64),
        cpu_per(p.notify_cpu, p.delivered)
    );
    println!(
        "  unsubscribe (terminate): {} in {:.2} s ({:.0}/s)",
        p.unsubscribed,
        p.unsubscribe_elapsed.as_secs_f64(),
        per(p.unsubscribe_elapsed, p.unsubscribed as f64)
    );
    println!(
        "  failures: {} NOTIFYs not answered 200, {} notifications lost, {} dropped, {} wrong availability, {} with an error, {} refused, {} still subscribed{}",
        p.failed_notifies,
        p.lost,
        p.dropped,
        p.wrong_availability,
        p.errors,
        p.refused,
        p.still_active,
        p.first_error
            .as_deref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    let mut memory = format!(
        "  memory per subscription: both sides {:.0} B heap, {:.0} B RSS",
        p.per_subscription(p.heap_both),
        p.per_subscription(p.rss_both)
    );
    if let (Some(t), Some(sub)) = (p.notifier_table, p.subscriber_bytes()) {
        let _ = write!(
            memory,
            "; notifier's table {:.0} B; subscriber side {:.0} B heap",
            p.per_subscription(t as i64),
            p.per_subscription(sub)
        );
    }
    println!("{memory}");
    let opt = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.1}"));
    let _ = writeln!(
        j,
        "    {{\"notifier\": \"{}\", \"presentities\": {}, \"subscribed_s\": {:.3}, \
         \"subscribe_per_s\": {:.1}, \"initial_notifies_delivered_s\": {:.3}, \"rounds\": {}, \
         \"notifies_answered\": {}, \"notifications_delivered\": {}, \"notify_elapsed_s\": {:.3}, \
         \"notify_per_s\": {:.1}, \"cpu_us_per_subscription\": {:.1}, \"cpu_us_per_notify\": {:.1}, \
         \"unsubscribed\": {}, \"unsubscribe_elapsed_s\": {:.3}, \
         \"unsubscribe_per_s\": {:.1}, \"failed_notifies\": {}, \"lost\": {}, \"dropped\": {}, \
         \"wrong_availability\": {}, \"errors\": {}, \"refused\": {}, \"still_subscribed\": {}, \
         \"first_error\": {}, \"heap_bytes_both_sides\": {}, \"rss_bytes_both_sides\": {}, \
         \"notifier_table_bytes\": {}, \"heap_bytes_per_subscription_both_sides\": {:.1}, \
         \"heap_bytes_per_subscription_subscriber\": {}}}{comma}",
        p.notifier.name(),
        p.presentities,
        p.subscribed.as_secs_f64(),
        per(p.subscribed, n),
        p.initial_delivered.as_secs_f64(),
        p.rounds,
        p.notifies,
        p.delivered,
        p.notify_elapsed.as_secs_f64(),
        per(p.notify_elapsed, p.delivered as f64),
        cpu_per(p.subscribe_cpu, p.presentities as u64),
        cpu_per(p.notify_cpu, p.delivered),
        p.unsubscribed,
        p.unsubscribe_elapsed.as_secs_f64(),
        per(p.unsubscribe_elapsed, p.unsubscribed as f64),
        p.failed_notifies,
        p.lost,
        p.dropped,
        p.wrong_availability,
        p.errors,
        p.refused,
        p.still_active,
        json_opt(p.first_error.as_deref()),
        p.heap_both,
        p.rss_both,
        p.notifier_table
            .map_or("null".to_string(), |t| t.to_string()),
        p.per_subscription(p.heap_both),
        opt(p.subscriber_bytes().map(|b| p.per_subscription(b))),
    );
}

/// `$CARGO_TARGET_DIR/bench-results` (a relative one taken from the workspace root), or
/// the workspace's `target/bench-results`.
fn results_dir() -> PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => root.join(d),
        _ => root.join("target"),
    };
    target.join("bench-results")
}

fn json_opt(s: Option<&str>) -> String {
    match s {
        Some(s) => format!("\"{}\"", json_escape(s)),
        None => "null".into(),
    }
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
