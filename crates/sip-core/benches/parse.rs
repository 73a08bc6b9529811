//! `cargo bench -p sip-core --bench parse`: parsing cost of three typical messages.
//!
//! - `ucma/NAME`: `SipMessage::parse_datagram` (parse + validate) plus typed access to the
//!   top Via, From, To, Call-ID and CSeq.
//! - `rsip/NAME`: `rsip::SipMessage::try_from` plus the same typed accesses through rsip.
//! - `scan/NAME`: a memchr scan for every CRLF of the same bytes: the floor any parser
//!   pays to look at each line once.
//!
//! Report ratios (rsip / ucma, ucma / scan) from one run; absolute times vary by machine.
//!
//! - `httparse` (interleaved summary only): hyper's header parser on the same bytes with an
//!   HTTP/1.1 start line: a vectorised split into (name, value) lines that validates no SIP
//!   and reads no header. Not a target; it shows how much of the scan ratio splitting alone
//!   costs in a well-tuned parser.
//!
//! - `minimal` (interleaved summary only): a recogniser of nothing but these three messages'
//!   shapes that makes the same checks and gives the same values, with no allocation (see
//!   `support/minimal.rs`). Not a parser and not a target: `ucma/minimal` is what
//!   generality and a message that can be kept, changed and sent on cost over it, and
//!   `minimal/scan` how close to the scan such a check can get at all.
//!
//! - `stamped/NAME`: `ucma/NAME` with the top Via stamped on the way, as a server transport
//!   stamps every request it receives (`SipMessage::record_source_in_via` from a source
//!   that is not the sent-by: `received`, and `rport` where the Via asks for it). The
//!   interleaved summary gives it as a ratio to `ucma/NAME`.
//!
//! After criterion's groups, the same three are timed interleaved: rounds of a few
//! milliseconds, each timing ucma, scan and rsip back to back (in alternating order), and
//! the ratios of each round are summarised (median and quartiles). On a shared VM whose speed
//! drifts between criterion's benchmarks (seconds apart), these are the ratios to quote.
//! Under `cargo test` (no `--bench`) the interleaved part is a short smoke run.

#[path = "support/minimal.rs"]
mod minimal;

use bytes::Bytes;
use criterion::{criterion_group, Criterion, Throughput};
use rsip::prelude::{HeadersExt, ToTypedHeader};
use sip_core::{Limits, SipMessage};
use std::hint::black_box;
use std::time::Instant;

const MESSAGES: [(&str, &[u8]); 3] = [
    ("invite_sdp", include_bytes!("messages/invite_sdp.sip")),
    ("message", include_bytes!("messages/message.sip")),
    ("ok_routes", include_bytes!("messages/ok_routes.sip")),
];

fn ucma(bytes: &Bytes) -> usize {
    let m = SipMessage::parse_datagram(bytes.clone(), &Limits::DEFAULT).expect("valid");
    let via = m.top_via().expect("via");
    let from = m.from().expect("from");
    let to = m.to().expect("to");
    let call_id = m.call_id().expect("call-id");
    let cseq = m.cseq().expect("cseq");
    via.branch().map_or(0, str::len)
        + from.tag().map_or(0, <[u8]>::len)
        + to.uri().as_bytes().len()
        + call_id.len()
        + cseq.seq() as usize
}

fn stamped(bytes: &Bytes) -> usize {
    let mut m = SipMessage::parse_datagram(bytes.clone(), &Limits::DEFAULT).expect("valid");
    let source = std::net::SocketAddr::from(([198, 51, 100, 7], 40_000));
    let changed = m.record_source_in_via(source).expect("stamped");
    let via = m.top_via().expect("via");
    let from = m.from().expect("from");
    let to = m.to().expect("to");
    let call_id = m.call_id().expect("call-id");
    let cseq = m.cseq().expect("cseq");
    usize::from(changed)
        + via.branch().map_or(0, str::len)
        + from.tag().map_or(0, <[u8]>::len)
        + to.uri().as_bytes().len()
        + call_id.len()
        + cseq.seq() as usize
}

fn rsip(bytes: &[u8]) -> usize {
    let m = rsip::SipMessage::try_from(bytes).expect("valid");
    let via = m.via_header().expect("via").typed().expect("via");
    let from = m.from_header().expect("from").typed().expect("from");
    let to = m.to_header().expect("to").typed().expect("to");
    let call_id = m.call_id_header().expect("call-id");
    let cseq = m.cseq_header().expect("cseq").typed().expect("cseq");
    via.branch().map_or(0, |b| b.to_string().len())
        + from.tag().map_or(0, |t| t.to_string().len())
        + to.uri.to_string().len()
        + call_id.to_string().len()
        + cseq.seq as usize
}

fn scan(bytes: &[u8]) -> usize {
    memchr::memmem::find_iter(bytes, b"\r\n").count()
}

/// `raw` with `SIP/2.0` in its start line replaced by `HTTP/1.1`, for httparse.
fn as_http(raw: &[u8]) -> Vec<u8> {
    let eol = memchr::memmem::find(raw, b"\r\n").expect("a start line");
    let line = &raw[..eol];
    let mut out = if let Some(rest) = line.strip_prefix(b"SIP/2.0 ") {
        [&b"HTTP/1.1 "[..], rest].concat()
    } else {
        let rest = line.strip_suffix(b" SIP/2.0").expect("a request line");
        [rest, &b" HTTP/1.1"[..]].concat()
    };
    out.extend_from_slice(&raw[eol..]);
    out
}

/// httparse's split of `bytes` (see the crate doc): the head's length plus the field count.
fn httparse(bytes: &[u8]) -> usize {
    let mut fields = [httparse::EMPTY_HEADER; 32];
    let done = if bytes.starts_with(b"HTTP/") {
        httparse::Response::new(&mut fields).parse(bytes)
    } else {
        httparse::Request::new(&mut fields).parse(bytes)
    };
    match done.expect("valid") {
        httparse::Status::Complete(n) => n + fields.iter().filter(|f| !f.name.is_empty()).count(),
        httparse::Status::Partial => unreachable!("a whole message"),
    }
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    for (name, raw) in MESSAGES {
        let bytes = Bytes::from_static(raw);
        g.throughput(Throughput::Bytes(raw.len() as u64));
        g.bench_function(format!("ucma/{name}"), |b| {
            b.iter(|| ucma(black_box(&bytes)))
        });
        g.bench_function(format!("rsip/{name}"), |b| b.iter(|| rsip(black_box(raw))));
        g.bench_function(format!("scan/{name}"), |b| b.iter(|| scan(black_box(raw))));
        g.bench_function(format!("stamped/{name}"), |b| {
            b.iter(|| stamped(black_box(&bytes)))
        });
    }
    g.finish();
}

/// Nanoseconds per call of `f` over `iters` calls.
fn per_call(iters: u32, mut f: impl FnMut() -> usize) -> f64 {
    let t = Instant::now();
    for _ in 0..iters {
        black_box(f());
    }
    t.elapsed().as_nanos() as f64 / f64::from(iters)
}

/// The quartiles of `v` (sorted in place).
fn quartiles(v: &mut [f64]) -> [f64; 3] {
    v.sort_by(f64::total_cmp);
    let at = |q: usize| v[(v.len() - 1) * q / 4];
    [at(1), at(2), at(3)]
}

/// ucma / scan and rsip / ucma per round, rounds interleaved in time (see the crate doc).
fn interleaved(rounds: usize, iters: u32) {
    println!("interleaved ratios ({rounds} rounds of {iters} calls; median [quartiles]):");
    for (name, raw) in MESSAGES {
        let bytes = Bytes::from_static(raw);
        let http = as_http(raw);
        let (mut over_scan, mut rsip_over, mut split_over) = (Vec::new(), Vec::new(), Vec::new());
        let (mut stamp_over, mut minimal_over, mut over_minimal) =
            (Vec::new(), Vec::new(), Vec::new());
        assert_eq!(
            minimal::recognise(raw),
            Some(ucma(&bytes)),
            "{name}: same values"
        );
        for round in 0..rounds {
            let (ucma_ns, scan_ns) = if round % 2 == 0 {
                let u = per_call(iters, || ucma(black_box(&bytes)));
                (u, per_call(iters, || scan(black_box(raw))))
            } else {
                let s = per_call(iters, || scan(black_box(raw)));
                (per_call(iters, || ucma(black_box(&bytes))), s)
            };
            let rsip_ns = per_call(iters.div_ceil(10), || rsip(black_box(raw)));
            let split_ns = per_call(iters, || httparse(black_box(&http)));
            let stamped_ns = per_call(iters, || stamped(black_box(&bytes)));
            let minimal_ns = per_call(iters, || minimal::recognise(black_box(raw)).unwrap_or(0));
            minimal_over.push(minimal_ns / scan_ns);
            over_minimal.push(ucma_ns / minimal_ns);
            over_scan.push(ucma_ns / scan_ns);
            rsip_over.push(rsip_ns / ucma_ns);
            split_over.push(split_ns / scan_ns);
            stamp_over.push(stamped_ns / ucma_ns);
        }
        let [a, m, b] = quartiles(&mut over_scan);
        let [c, n, d] = quartiles(&mut rsip_over);
        let [e, o, f] = quartiles(&mut split_over);
        let [g, p, h] = quartiles(&mut stamp_over);
        let [i, q, j] = quartiles(&mut minimal_over);
        let [k, r, l] = quartiles(&mut over_minimal);
        println!(
            "  {name:<11} ucma/scan {m:.2} [{a:.2}, {b:.2}]   rsip/ucma {n:.1} [{c:.1}, {d:.1}]   \
             httparse/scan {o:.2} [{e:.2}, {f:.2}]   stamped/ucma {p:.2} [{g:.2}, {h:.2}]   \
             minimal/scan {q:.2} [{i:.2}, {j:.2}]   ucma/minimal {r:.2} [{k:.2}, {l:.2}]"
        );
    }
}

criterion_group!(benches, parse);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    if std::env::args().any(|a| a == "--bench") {
        interleaved(300, 2_000);
    } else {
        println!("smoke run of the interleaved ratios (test profile: not a measurement)");
        interleaved(3, 20);
    }
}
