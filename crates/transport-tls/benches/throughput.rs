//! Load driver: framed 500-byte SIP messages per second over loopback, TCP and TLS (mutual,
//! rustls with ring), on one connection and on 64, and TLS handshakes per second, all in the
//! same run; prints absolute numbers and TLS/TCP ratios.
//!
//! `cargo bench -p transport-tls` (about 30 s). `BENCH_SECS=N` changes the measuring window
//! of each case (default 3 s).
//!
//! Both ends run in this process on a 2-worker tokio runtime: the sender writes through the
//! transport's send queue and writer task; the receiver frames, parses (`parse_framed`) and
//! delivers each message as an event, which a consumer task counts.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{message_request, Ca, Leaf};
use transport_tls::{
    SipTransport, Target, TlsClientSettings, TlsServerSettings, TransportEvent, TransportLimits,
    TransportSettings,
};

const FE: &str = "fe.contoso.test";

fn secs() -> Duration {
    Duration::from_secs_f64(
        std::env::var("BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3.0),
    )
}

fn limits() -> TransportLimits {
    TransportLimits {
        max_connections: 100_000,
        max_connections_per_ip: 100_000,
        ..Default::default()
    }
}

struct Server {
    tcp: SocketAddr,
    tls: SocketAddr,
    received: Arc<AtomicU64>,
    _t: SipTransport,
}

async fn server(ca: &Ca, fe: Leaf) -> Server {
    let (t, mut rx) = SipTransport::new(
        TransportSettings::new()
            .limits(limits())
            .event_capacity(8192),
    )
    .unwrap();
    let tcp = t.listen_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let tls = t
        .listen_tls(
            "127.0.0.1:0".parse().unwrap(),
            &TlsServerSettings::mutual(fe.identity, ca.roots()),
        )
        .await
        .unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let r = received.clone();
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            if let TransportEvent::Message(m) = e {
                std::hint::black_box(&m);
                r.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    Server {
        tcp,
        tls,
        received,
        _t: t,
    }
}

fn client(ca: &Ca, app: &Leaf, resumption: bool) -> SipTransport {
    let tls = TlsClientSettings::new(ca.roots())
        .identity(app.identity.clone())
        .resumption(resumption);
    let (t, mut rx) =
        SipTransport::new(TransportSettings::new().limits(limits()).tls_client(tls)).unwrap();
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    t
}

/// Messages per second received over `conns` connections to `target`.
async fn throughput(s: &Server, ca: &Ca, app: &Leaf, target: Target, conns: usize) -> f64 {
    let msg = Bytes::from(message_request(1, 500, "TLS 127.0.0.1:5061"));
    assert_eq!(msg.len(), 500);
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..conns {
        let c = client(ca, app, true);
        let id = c.connect(&target).await.unwrap();
        let (c2, msg, stop) = (c.clone(), msg.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    if c2.send_raw(id, msg.clone()).await.is_err() {
                        return;
                    }
                }
            }
        }));
        clients.push(c);
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // warm up
    let (n0, t0) = (s.received.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(secs()).await;
    let (n1, t1) = (s.received.load(Ordering::Relaxed), Instant::now());
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    for c in clients {
        c.shutdown();
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // let the queues drain
    (n1 - n0) as f64 / (t1 - t0).as_secs_f64()
}

/// Full mutual-TLS handshakes (TCP connect included, no resumption) per second, 8 at a time.
async fn handshakes(s: &Server, ca: &Ca, app: &Leaf) -> f64 {
    let target = Target::tls(s.tls, FE);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + secs();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = client(ca, app, false);
        let (done, target) = (done.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let id = c.connect(&target).await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
                c.close(id);
            }
        }));
    }
    let t0 = Instant::now();
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and we do a
    // quick smoke run.
    let quick = !std::env::args().any(|a| a == "--bench");
    if quick {
        std::env::set_var("BENCH_SECS", "0.2");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ca = Ca::new("Bench Root");
        let fe = ca.leaf(&[FE]);
        let app = ca.leaf(&["app.contoso.test"]);
        let s = server(&ca, fe).await;
        let tcp1 = throughput(&s, &ca, &app, Target::tcp(s.tcp), 1).await;
        let tls1 = throughput(&s, &ca, &app, Target::tls(s.tls, FE), 1).await;
        let tcp64 = throughput(&s, &ca, &app, Target::tcp(s.tcp), 64).await;
        let tls64 = throughput(&s, &ca, &app, Target::tls(s.tls, FE), 64).await;
        let hs = handshakes(&s, &ca, &app).await;
        println!("transport-tls load driver: 500-byte SIP MESSAGE, framed + parsed, loopback, 2 workers, {:?} per case", secs());
        println!("| case | messages/s | TLS/TCP |");
        println!("|---|---:|---:|");
        println!("| TCP, 1 connection | {tcp1:.0} | |");
        println!("| TLS, 1 connection | {tls1:.0} | {:.2} |", tls1 / tcp1);
        println!("| TCP, 64 connections | {tcp64:.0} | |");
        println!("| TLS, 64 connections | {tls64:.0} | {:.2} |", tls64 / tcp64);
        println!("| mutual-TLS handshakes/s (full, TCP connect included, 8 in parallel) | {hs:.0} | |");
    });
}
