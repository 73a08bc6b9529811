//! Heap held per idle connection, TCP and mutual TLS, on each side.
//!
//! `cargo bench -p transport-tls --bench idle_memory` (a few seconds). `IDLE_CONNECTIONS=N`
//! changes the number of connections (default 200).
//!
//! The server side (inbound connections) runs in this process, the client side (outbound
//! flows) in a child process (this binary again), so that each side's heap is counted
//! alone: a global allocator that tracks live bytes (the `cap` crate, so no unsafe code
//! here) is read before and after the connections open and settle. One warm-up connection
//! per transport is opened before the first reading, so one-time costs (TLS configuration,
//! tables) are not counted. The server listens on one port per connection, so that one
//! client transport holds them all as separate flows. Keep-alive is off and TLS session
//! resumption is off: what is counted is the connection itself.
//!
//! Last, the client sends one 8 KiB message on every connection and the server's heap is
//! read again once the connections have been quiet for a few seconds: what a burst of
//! traffic leaves behind per connection.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{message_request, Ca};
use transport_tls::{
    Identity, SipTransport, Target, TlsClientSettings, TlsServerSettings, TransportEvent,
    TransportLimits, TransportSettings, TrustRoots,
};

#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

const FE: &str = "fe.contoso.test";
/// How long connections are left alone before the heap is read.
const SETTLE: Duration = Duration::from_millis(1000);
/// How long the connections are left alone after the burst before the heap is read.
const AFTER_BURST: Duration = Duration::from_secs(3);

fn connections() -> usize {
    let quick = !std::env::args().any(|a| a == "--bench");
    let default = if quick { 10 } else { 200 };
    std::env::var("IDLE_CONNECTIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn settings() -> TransportSettings {
    TransportSettings::new()
        .limits(TransportLimits {
            max_connections: 100_000,
            max_connections_per_ip: 100_000,
            ..Default::default()
        })
        .keep_alive(None)
}

fn heap() -> usize {
    ALLOCATOR.allocated()
}

fn per_connection(before: usize, after: usize, n: usize) -> isize {
    (after as isize - before as isize) / n as isize
}

fn ports(list: &[SocketAddr]) -> String {
    list.iter()
        .map(|a| a.port().to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if std::env::var_os("IDLE_MEMORY_CLIENT").is_some() {
        rt.block_on(client());
    } else {
        rt.block_on(server());
    }
}

/// The parent: listens, starts the client, reads its own heap when the client says.
async fn server() {
    let n = connections();
    let ca = Ca::new("Bench Root");
    let fe = ca.leaf(&[FE]);
    let app = ca.leaf(&["app.contoso.test"]);
    let (t, mut rx) = SipTransport::new(settings().event_capacity(8192)).unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    tokio::spawn(async move {
        while let Some(e) = rx.recv().await {
            match e {
                TransportEvent::Failed { error, .. } => panic!("connection failed: {error}"),
                TransportEvent::Message(_) => {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
    });
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let tls_settings = TlsServerSettings::mutual(fe.identity, ca.roots());
    // One more port of each kind than connections: the first is for the warm-up.
    let (mut tcp, mut tls) = (Vec::new(), Vec::new());
    for _ in 0..=n {
        tcp.push(t.listen_tcp(local).await.unwrap());
        tls.push(t.listen_tls(local, &tls_settings).await.unwrap());
    }
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .env("IDLE_MEMORY_CLIENT", "1")
        .env("IDLE_CONNECTIONS", n.to_string())
        .env("CA_PEM", ca.pem())
        .env("APP_CERT_PEM", &app.cert_pem)
        .env("APP_KEY_PEM", &app.key_pem)
        .env("TCP_PORTS", ports(&tcp))
        .env("TLS_PORTS", ports(&tls))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut to_child = child.stdin.take().unwrap();
    let mut from_child = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut rows = Vec::new();
    for kind in ["TCP", "TLS"] {
        // The child has made its warm-up connection of this kind and waits.
        let line = from_child.next().unwrap().unwrap();
        assert_eq!(line, format!("warm {kind}"));
        let open = t.connection_count();
        tokio::time::sleep(SETTLE).await;
        let before = heap();
        writeln!(to_child, "go").unwrap();
        let line = from_child.next().unwrap().unwrap();
        let client: isize = line
            .strip_prefix(&format!("{kind} "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("child said {line:?}"));
        while t.connection_count() < open + n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(SETTLE).await;
        let server = per_connection(before, heap(), n);
        rows.push((kind, server, client));
    }
    let before = heap();
    writeln!(to_child, "send").unwrap();
    while received.load(Ordering::Relaxed) < 2 * n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let just_after = per_connection(before, heap(), 2 * n);
    tokio::time::sleep(AFTER_BURST).await;
    let after_burst = per_connection(before, heap(), 2 * n);
    writeln!(to_child, "done").unwrap();
    child.wait().unwrap();
    println!("transport-tls idle connections: heap bytes per connection, {n} connections, loopback, settled {SETTLE:?}");
    println!("| transport | inbound (server side) | outbound (client side) |");
    println!("|---|---:|---:|");
    for (kind, server, client) in rows {
        println!("| {kind} | {server} | {client} |");
    }
    println!("one 8 KiB message on each connection: {just_after:+} bytes per inbound connection 200 ms after, {after_burst:+} after {AFTER_BURST:?} without traffic");
}

/// The child: opens the connections and reports its own heap per connection.
async fn client() {
    let n = connections();
    let var = |k: &str| std::env::var(k).unwrap();
    let roots = TrustRoots::from_pem(var("CA_PEM").as_bytes()).unwrap();
    let identity = Identity::from_pem(
        var("APP_CERT_PEM").as_bytes(),
        var("APP_KEY_PEM").as_bytes(),
    )
    .unwrap();
    let tls = TlsClientSettings::new(roots)
        .identity(identity)
        .resumption(false);
    let (t, mut rx) = SipTransport::new(settings().tls_client(tls)).unwrap();
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let addrs = |k: &str| -> Vec<SocketAddr> {
        var(k)
            .split(',')
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p.parse().unwrap())))
            .collect()
    };
    let mut stdin = std::io::stdin().lock().lines();
    let mut out = std::io::stdout().lock();
    let mut ids = Vec::new();
    for (kind, ports) in [("TCP", addrs("TCP_PORTS")), ("TLS", addrs("TLS_PORTS"))] {
        let target = |a: SocketAddr| match kind {
            "TCP" => Target::tcp(a),
            _ => Target::tls(a, FE),
        };
        t.connect(&target(ports[0])).await.unwrap();
        tokio::time::sleep(SETTLE).await;
        writeln!(out, "warm {kind}").unwrap();
        out.flush().unwrap();
        assert_eq!(stdin.next().unwrap().unwrap(), "go");
        let before = heap();
        for &a in &ports[1..] {
            ids.push(t.connect(&target(a)).await.unwrap());
        }
        tokio::time::sleep(SETTLE).await;
        writeln!(out, "{kind} {}", per_connection(before, heap(), n)).unwrap();
        out.flush().unwrap();
    }
    assert_eq!(stdin.next().unwrap().unwrap(), "send");
    let burst = Bytes::from(message_request(1, 8 * 1024, "TCP 127.0.0.1"));
    for id in ids {
        t.send_raw(id, burst.clone()).await.unwrap();
    }
    assert_eq!(stdin.next().unwrap().unwrap(), "done");
}
