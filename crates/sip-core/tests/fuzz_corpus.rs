//! Runs the body of every fuzz target (fuzz/bodies) over its seed corpus (fuzz/corpus), so
//! CI exercises the fuzz targets without a fuzzer.

use std::path::PathBuf;

mod parse_message {
    include!("../../../fuzz/bodies/parse_message.rs");
}
mod stream_framer {
    include!("../../../fuzz/bodies/stream_framer.rs");
}
mod sdp {
    include!("../../../fuzz/bodies/sdp.rs");
}
mod transactions {
    include!("../../../fuzz/bodies/transactions.rs");
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let seeds: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(!seeds.is_empty(), "empty corpus {target}");
    seeds
}

#[test]
fn parse_message_corpus() {
    for seed in corpus("parse_message") {
        parse_message::body(&seed);
        // Every prefix too: truncated messages are the commonest hostile input.
        for cut in (0..seed.len()).step_by(7) {
            parse_message::body(&seed[..cut]);
        }
    }
}

#[test]
fn stream_framer_corpus() {
    for seed in corpus("stream_framer") {
        stream_framer::body(&seed);
    }
}

#[test]
fn sdp_corpus() {
    for seed in corpus("sdp") {
        sdp::body(&seed);
    }
}

#[test]
fn transactions_corpus() {
    for seed in corpus("transactions") {
        transactions::body(&seed);
        // Over the other transport too (the first byte picks it).
        let mut other = seed.clone();
        other[0] ^= 1;
        transactions::body(&other);
    }
}
