//! `cargo bench -p sip-core --bench transactions`: transaction and dialog cost in memory.
//!
//! - `non_invite_pair`: one OPTIONS client transaction and its server transaction over a
//!   reliable transport: serialize, parse, both machines, 200 back, parse, client machine.
//! - `invite_dialog`: INVITE / 200 (with To tag, Contact, Record-Route) / ACK for 2xx, both
//!   transactions and both dialogs (UAC and UAS) created, then removed.
//! - Both cases advance virtual time and run the layers' timers every 1 024 iterations, so
//!   finished transactions are reaped as in a running stack (over TLS Timers J and K are
//!   zero) and the tables stay at their working size.
//! - `pair_parses/ucma` and `pair_parses/minimal`: the two parses of a pair alone (the
//!   request and the 200 as the pair sends them), by `SipMessage::parse_datagram` and by
//!   the parse bench's `minimal` recogniser (`support/minimal.rs`, which knows nothing but
//!   such shapes): what the pair's budget holds for parsing at best.
//! - Memory (printed before the timings): heap bytes held per live non-INVITE client
//!   transaction and per confirmed idle dialog, counted by a global allocator that tracks
//!   live bytes (the `cap` crate, so this bench needs no unsafe code of its own) while
//!   100 000 of them are created. Hash tables' spare capacity is included.

#[path = "support/minimal.rs"]
mod minimal;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sip_core::dialog::{DialogUpdate, Dialogs};
use sip_core::transaction::{Event, Peer, TransactionConfig, TransactionLayer, TransportKind};
use sip_core::{HeaderName, Limits, Method, SipMessage};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// The other end: made without parsing text, which would be part of every timing.
fn peer() -> Peer {
    Peer::new(
        std::net::SocketAddr::from(([192, 0, 2, 1], 5061)),
        TransportKind::Tls,
    )
}

fn options() -> SipMessage {
    SipMessage::request(Method::Options, "sip:bob@fabrikam.test")
        .header(HeaderName::Via, "SIP/2.0/TLS 10.0.0.21:5061")
        .header(HeaderName::MaxForwards, "70")
        .header(HeaderName::From, "<sip:app@contoso.test>;tag=1928301774")
        .header(HeaderName::To, "<sip:bob@fabrikam.test>")
        .header(HeaderName::CallId, "a84b4c76e66710@app.contoso.test")
        .header(HeaderName::CSeq, "1 OPTIONS")
        .build()
        .unwrap()
}

fn invite(call_id: &str) -> SipMessage {
    SipMessage::request(Method::Invite, "sip:bob@fabrikam.test")
        .header(HeaderName::Via, "SIP/2.0/TLS 10.0.0.21:5061")
        .header(HeaderName::MaxForwards, "70")
        .header(
            HeaderName::From,
            "\"App\" <sip:app@contoso.test>;tag=1928301774",
        )
        .header(HeaderName::To, "<sip:bob@fabrikam.test>")
        .header(HeaderName::CallId, call_id.to_owned())
        .header(HeaderName::CSeq, "1 INVITE")
        .header(
            HeaderName::Contact,
            "<sip:app@10.0.0.21:5061;transport=tls>",
        )
        .build()
        .unwrap()
}

fn parse(b: Bytes) -> SipMessage {
    SipMessage::parse_datagram(b, &Limits::DEFAULT).unwrap()
}

fn pair(
    client: &mut TransactionLayer,
    server: &mut TransactionLayer,
    req: &SipMessage,
    now: Instant,
) {
    client.send_request(now, req.clone(), peer()).unwrap();
    let t = client.poll_transmit().unwrap();
    server.handle_message(now, parse(t.contents), peer());
    let Some(Event::Request { id, request, .. }) = server.poll_event() else {
        unreachable!()
    };
    let resp = SipMessage::response_to(&request, 200, "OK").unwrap();
    server.respond(now, id, resp).unwrap();
    while server.poll_event().is_some() {}
    let t = server.poll_transmit().unwrap();
    client.handle_message(now, parse(t.contents), peer());
    while let Some(e) = client.poll_event() {
        black_box(e);
    }
}

/// The request and the 200 of one pair as they went on the wire.
fn pair_wire(req: &SipMessage, now: Instant) -> (Bytes, Bytes) {
    let mut client = TransactionLayer::new(TransactionConfig::default());
    let mut server = TransactionLayer::new(TransactionConfig::default());
    client.send_request(now, req.clone(), peer()).unwrap();
    let request = client.poll_transmit().unwrap().contents;
    server.handle_message(now, parse(request.clone()), peer());
    let Some(Event::Request { id, request: r, .. }) = server.poll_event() else {
        unreachable!()
    };
    let resp = SipMessage::response_to(&r, 200, "OK").unwrap();
    server.respond(now, id, resp).unwrap();
    let response = server.poll_transmit().unwrap().contents;
    // The reference must take both, or its time would be that of a refusal.
    assert!(minimal::recognise(&request).is_some() && minimal::recognise(&response).is_some());
    (request, response)
}

fn invite_dialog(
    client: &mut TransactionLayer,
    server: &mut TransactionLayer,
    uac: &mut Dialogs,
    uas: &mut Dialogs,
    inv: &SipMessage,
    now: Instant,
) {
    client.send_request(now, inv.clone(), peer()).unwrap();
    let t = client.poll_transmit().unwrap();
    let sent = parse(t.contents);
    server.handle_message(now, sent.clone(), peer());
    let Some(Event::Request { id, request, .. }) = server.poll_event() else {
        unreachable!("server event")
    };
    let mut ok = SipMessage::response_to(&request, 200, "OK").unwrap();
    let tag = uas.new_tag();
    ok.set_to_tag(&tag).unwrap();
    ok.push_header(
        HeaderName::Contact,
        "<sip:bob@10.0.0.99:5061;transport=tls>",
    )
    .unwrap();
    ok.push_header(HeaderName::RecordRoute, "<sip:edge.fabrikam.test;lr>")
        .unwrap();
    let DialogUpdate::Confirmed(sid) = uas.handle_uas_response(&request, &ok).unwrap() else {
        unreachable!("uas dialog")
    };
    server.respond(now, id, ok).unwrap();
    let t = server.poll_transmit().unwrap();
    let resp = parse(t.contents);
    client.handle_message(now, resp.clone(), peer());
    while client.poll_event().is_some() {}
    let DialogUpdate::Confirmed(cid) = uac.handle_uac_response(&sent, &resp).unwrap() else {
        unreachable!("uac dialog")
    };
    let ack = uac.ack(&cid, 1, "SIP/2.0/TLS 10.0.0.21:5061").unwrap();
    client.send_stateless(&ack, peer());
    let t = client.poll_transmit().unwrap();
    server.handle_message(now, parse(t.contents), peer());
    let Some(Event::Ack { request, .. }) = server.poll_event() else {
        unreachable!("ack event")
    };
    black_box(uas.handle_request(&request).unwrap());
    uac.remove(&cid);
    uas.remove(&sid);
}

#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

/// Heap bytes currently allocated by this process.
fn heap_bytes() -> Option<usize> {
    Some(ALLOCATOR.allocated())
}

fn memory() {
    const N: usize = 100_000;
    let now = Instant::now();
    // Live non-INVITE client transactions over UDP (Trying, timers E and F armed).
    let mut client = TransactionLayer::new(TransactionConfig::default());
    let req = options();
    let before = heap_bytes();
    for _ in 0..N {
        client
            .send_request(
                now,
                req.clone(),
                Peer::new(
                    std::net::SocketAddr::from(([192, 0, 2, 1], 5060)),
                    TransportKind::Udp,
                ),
            )
            .unwrap();
        black_box(client.poll_transmit());
    }
    let _ = client.poll_timeout();
    if let (Some(a), Some(b)) = (before, heap_bytes()) {
        println!(
            "memory: {} heap bytes per live non-INVITE client transaction (UDP, {N})",
            (b.saturating_sub(a)) / N
        );
    }
    // Confirmed idle UAC dialogs, each with one Record-Route.
    let mut dialogs = Dialogs::new();
    let before = heap_bytes();
    for i in 0..N {
        let inv = invite(&format!("{i:016x}a84b4c76e66710@app.contoso.test"));
        let mut ok = SipMessage::response_to(&inv, 200, "OK").unwrap();
        ok.set_to_tag(&format!("{i:016x}")).unwrap();
        ok.push_header(
            HeaderName::Contact,
            "<sip:bob@10.0.0.99:5061;transport=tls>",
        )
        .unwrap();
        ok.push_header(HeaderName::RecordRoute, "<sip:edge.fabrikam.test;lr>")
            .unwrap();
        black_box(dialogs.handle_uac_response(&inv, &ok).unwrap());
    }
    if let (Some(a), Some(b)) = (before, heap_bytes()) {
        println!(
            "memory: {} heap bytes per confirmed idle dialog ({N})",
            (b.saturating_sub(a)) / N
        );
    }
    drop(client);
    drop(dialogs);
}

/// Virtual time that jumps past every timer each 1 024 iterations.
struct Clock {
    now: Instant,
    n: u32,
}

impl Clock {
    fn tick(&mut self, client: &mut TransactionLayer, server: &mut TransactionLayer) -> Instant {
        self.n = self.n.wrapping_add(1);
        if self.n % 1024 == 0 {
            self.now += Duration::from_secs(64);
            for layer in [client, server] {
                layer.handle_timeout(self.now);
                // What the timers reported (transactions ended) is the TU's business.
                while layer.poll_event().is_some() {}
                while layer.poll_transmit().is_some() {}
            }
        }
        self.now
    }
}

fn bench(c: &mut Criterion) {
    memory();
    let now = Instant::now();
    let mut g = c.benchmark_group("transactions");
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(1));
    let req = options();
    let mut client = TransactionLayer::new(TransactionConfig::default());
    let mut server = TransactionLayer::new(TransactionConfig::default());
    let mut clock = Clock { now, n: 0 };
    g.bench_function("non_invite_pair", |b| {
        b.iter(|| {
            let now = clock.tick(&mut client, &mut server);
            pair(&mut client, &mut server, &req, now)
        })
    });
    let (request, response) = pair_wire(&req, now);
    g.bench_function("pair_parses/ucma", |b| {
        b.iter(|| {
            let a = parse(black_box(&request).clone());
            let z = parse(black_box(&response).clone());
            a.cseq().map_or(0, |c| c.seq()) + z.cseq().map_or(0, |c| c.seq())
        })
    });
    g.bench_function("pair_parses/minimal", |b| {
        b.iter(|| {
            minimal::recognise(black_box(&request)).unwrap_or(0)
                + minimal::recognise(black_box(&response)).unwrap_or(0)
        })
    });
    let inv = invite("a84b4c76e66710@app.contoso.test");
    let (mut uac, mut uas) = (Dialogs::new(), Dialogs::new());
    g.bench_function("invite_dialog", |b| {
        b.iter(|| {
            let now = clock.tick(&mut client, &mut server);
            invite_dialog(&mut client, &mut server, &mut uac, &mut uas, &inv, now)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
