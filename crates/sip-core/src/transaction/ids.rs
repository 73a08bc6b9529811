//! Identifiers a user agent invents: Via branches, From/To tags and Call-IDs.
//!
//! The state machines take an injected [`IdGenerator`] so that tests are deterministic
//! ([`SequentialIds`], or any `FnMut() -> u64` closure). The default, [`RandomIds`], needs no
//! new dependency: it hashes a counter with a [`RandomState`], whose SipHash keys std draws
//! from the operating system's random source once per process (and varies per generator).
//! Under secret keys the hash of a counter is unpredictable to a peer and distinct across
//! processes (RFC 3261 §19.3 asks tags and Call-IDs to be globally unique and hard to guess)
//! without pulling `rand` into a sans-IO crate, and without a clock read per identifier.
//! The values are not meant as cryptographic secrets.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

/// The RFC 3261 magic cookie every branch this crate generates starts with (§8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// A source of 64-bit identifiers for branches, tags and Call-IDs.
pub trait IdGenerator: Send {
    /// The next identifier; successive values should differ.
    fn next_u64(&mut self) -> u64;
}

impl<F: FnMut() -> u64 + Send> IdGenerator for F {
    fn next_u64(&mut self) -> u64 {
        self()
    }
}

/// The default generator: SipHash (keyed from the OS by std) of a counter.
#[derive(Debug, Clone)]
pub struct RandomIds {
    state: RandomState,
    counter: u64,
}

impl RandomIds {
    /// A generator with fresh random keys.
    pub fn new() -> Self {
        RandomIds {
            state: RandomState::new(),
            counter: 0,
        }
    }
}

impl Default for RandomIds {
    fn default() -> Self {
        Self::new()
    }
}

impl IdGenerator for RandomIds {
    fn next_u64(&mut self) -> u64 {
        self.counter = self.counter.wrapping_add(1);
        let mut h = self.state.build_hasher();
        h.write_u64(self.counter);
        h.finish()
    }
}

/// A deterministic generator for tests: 1, 2, 3 …
#[derive(Debug, Clone, Default)]
pub struct SequentialIds {
    next: u64,
}

impl SequentialIds {
    /// Starts after `start` (the first value is `start + 1`).
    pub fn starting_at(start: u64) -> Self {
        SequentialIds { next: start }
    }
}

impl IdGenerator for SequentialIds {
    fn next_u64(&mut self) -> u64 {
        self.next = self.next.wrapping_add(1);
        self.next
    }
}

/// `v` as sixteen lowercase hex digits.
fn hex16(v: u64) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0; 16];
    for (i, c) in out.iter_mut().enumerate() {
        *c = HEX[((v >> ((15 - i) * 4)) & 0xf) as usize];
    }
    out
}

fn push_hex(out: &mut String, v: u64) {
    out.extend(hex16(v).map(char::from));
}

/// A new Via branch: the magic cookie and 64 bits in hex.
pub fn new_branch(ids: &mut dyn IdGenerator) -> String {
    let mut s = String::with_capacity(BRANCH_LEN);
    s.push_str(MAGIC_COOKIE);
    push_hex(&mut s, ids.next_u64());
    s
}

/// The length of a branch from [`new_branch`].
pub(crate) const BRANCH_LEN: usize = MAGIC_COOKIE.len() + 16;

/// Appends a new branch (as [`new_branch`] makes) to a Via value being built, without a
/// string of its own.
pub(crate) fn push_branch(out: &mut Vec<u8>, ids: &mut dyn IdGenerator) {
    out.extend_from_slice(MAGIC_COOKIE.as_bytes());
    out.extend_from_slice(&hex16(ids.next_u64()));
}

/// A new From/To tag: 64 bits in hex (RFC 3261 §19.3 asks for at least 32 random bits).
pub fn new_tag(ids: &mut dyn IdGenerator) -> String {
    let mut s = String::with_capacity(16);
    push_hex(&mut s, ids.next_u64());
    s
}

/// A new Call-ID: 128 bits in hex, then `@host` when a host is given.
pub fn new_call_id(ids: &mut dyn IdGenerator, host: Option<&str>) -> String {
    let mut s = String::with_capacity(33 + host.map_or(0, str::len));
    push_hex(&mut s, ids.next_u64());
    push_hex(&mut s, ids.next_u64());
    if let Some(h) = host {
        s.push('@');
        s.push_str(h);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let mut ids = SequentialIds::default();
        assert_eq!(new_branch(&mut ids), "z9hG4bK0000000000000001");
        assert_eq!(new_tag(&mut ids), "0000000000000002");
        assert_eq!(
            new_call_id(&mut ids, Some("h")),
            "00000000000000030000000000000004@h"
        );
        let mut r = RandomIds::new();
        assert_ne!(r.next_u64(), r.next_u64());
        // Two generators (two layers, or two processes) do not repeat each other.
        let mut other = RandomIds::new();
        let mine: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert!((0..4).all(|_| !mine.contains(&other.next_u64())));
        let mut c = || 7u64;
        assert_eq!(new_tag(&mut c), "0000000000000007");
    }
}
