//! `cargo bench -p sip-core --bench parse`: parsing cost of three typical messages.
//!
//! - `ucma/NAME`: `SipMessage::parse_datagram` (parse + validate) plus typed access to the
//!   top Via, From, To, Call-ID and CSeq.
//! - `rsip/NAME`: `rsip::SipMessage::try_from` plus the same typed accesses through rsip.
//! - `scan/NAME`: a memchr scan for every CRLF of the same bytes: the floor any parser
//!   pays to look at each line once.
//!
//! Report ratios (rsip / ucma, ucma / scan) from one run; absolute times vary by machine.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rsip::prelude::{HeadersExt, ToTypedHeader};
use sip_core::{Limits, SipMessage};
use std::hint::black_box;

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
    }
    g.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
