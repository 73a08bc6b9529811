//! The server side: issuing challenges and verifying credentials, for an application that
//! acts as a UAS (or a registrar) and wants Digest.
//!
//! ## Nonces: signed, not stored
//!
//! A nonce is `hex(issued-seconds ‖ instance ‖ counter) ‖ hex(HMAC-SHA-256(key, that ‖
//! realm)[..16])`. The verifier checks a nonce by recomputing its MAC, so issuing a
//! challenge stores nothing: a flood of unauthenticated requests cannot grow memory. State
//! is created only for a request whose response value was right (the sender knows the
//! password): the highest nonce count seen per nonce, so a replayed request is refused.
//! That table is bounded; when it is full, expired nonces go first, then the oldest, and
//! every nonce issued up to the oldest evicted one's second is treated as stale from then
//! on (a genuine client just gets a fresh nonce; a replay never slips through).
//!
//! `instance` is a random number drawn when the verifier is made, and only nonces carrying
//! the verifier's own are accepted. The replay table lives in one verifier's memory, so a
//! nonce from before a restart, or from another instance of a cluster sharing the key, would
//! otherwise be accepted again there (RFC 7616 §5.5 asks that a nonce cannot be replayed).
//! A genuine client that meets another instance is answered `stale=true` and retries.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use super::challenge::Challenge;
use super::digest::{constant_time_eq, hex, hmac_sha256, ResponseInput};
use super::{Algorithm, Qop, VerifyError};
use crate::transaction::{IdGenerator, RandomIds};
use crate::{AuthValue, HeaderName, SipMessage};

/// What the application knows about a user, returned by the lookup given to
/// [`DigestVerifier::verify`].
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// The clear-text password.
    Password(String),
    /// `H(username:realm:password)` in hex for the algorithm asked (see
    /// [`Algorithm::ha1`]): what a user store keeps instead of passwords.
    Ha1(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Password(_) => f.write_str("Password(<redacted>)"),
            Secret::Ha1(_) => f.write_str("Ha1(<redacted>)"),
        }
    }
}

/// A request whose credentials were verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The authenticated username.
    pub username: String,
    /// The algorithm the client used.
    pub algorithm: Algorithm,
    /// The qop the client used (`None` for the RFC 2069 form).
    pub qop: Option<Qop>,
}

/// Issues Digest challenges and verifies credentials for one realm (RFC 3261 §22.4,
/// RFC 7616 §3.3–3.4). Sans-IO: every call takes `now`.
///
/// Defaults: SHA-256 and MD5 offered (strongest first, one challenge each, as RFC 8760
/// asks), `qop="auth"`, nonces valid 300 s, at most 65 536 nonces tracked for replay.
/// Credentials must use a qop offered (RFC 7616 §3.4): a client leaving it out would
/// downgrade to the RFC 2069 form without the client nonce. To serve RFC 2069 clients,
/// offer no qop ([`with_qop`](Self::with_qop)`(&[])`); each nonce then serves once.
pub struct DigestVerifier {
    realm: String,
    key: [u8; 32],
    algorithms: Vec<Algorithm>,
    qop: Vec<Qop>,
    opaque: Option<String>,
    lifetime: Duration,
    epoch: Instant,
    /// Random per verifier: only nonces with this value are accepted (see the module doc).
    instance: u64,
    counter: u64,
    /// nonce → (issued second, highest nonce count accepted).
    seen: HashMap<String, (u64, u32)>,
    max_tracked: usize,
    /// Nonces issued at or before this second are stale (after evictions).
    stale_up_to: Option<u64>,
}

impl fmt::Debug for DigestVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DigestVerifier")
            .field("realm", &self.realm)
            .field("algorithms", &self.algorithms)
            .field("qop", &self.qop)
            .field("lifetime", &self.lifetime)
            .field("tracked", &self.seen.len())
            .finish_non_exhaustive()
    }
}

const NONCE_PAYLOAD: usize = 24;
const NONCE_MAC: usize = 16;

impl DigestVerifier {
    /// A verifier for `realm`. `key` signs nonces: take it from the operating system's
    /// random source. `now` starts the verifier's clock. The verifier accepts only the
    /// nonces it issued itself (see the module doc).
    pub fn new(realm: impl Into<String>, key: [u8; 32], now: Instant) -> DigestVerifier {
        DigestVerifier {
            realm: realm.into(),
            key,
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            qop: vec![Qop::Auth],
            opaque: None,
            lifetime: Duration::from_secs(300),
            epoch: now,
            instance: RandomIds::new().next_u64(),
            counter: 0,
            seen: HashMap::new(),
            max_tracked: 65_536,
            stale_up_to: None,
        }
    }

    /// The algorithms offered, one challenge each, in this order (put the strongest first).
    /// An empty list keeps the current one.
    #[must_use]
    pub fn with_algorithms(mut self, algorithms: &[Algorithm]) -> DigestVerifier {
        if !algorithms.is_empty() {
            self.algorithms = algorithms.to_vec();
        }
        self
    }

    /// The qop values offered; empty offers none (the RFC 2069 form only).
    #[must_use]
    pub fn with_qop(mut self, qop: &[Qop]) -> DigestVerifier {
        self.qop = qop.to_vec();
        self
    }

    /// An `opaque` value sent in challenges (clients echo it; it is not checked).
    #[must_use]
    pub fn with_opaque(mut self, opaque: impl Into<String>) -> DigestVerifier {
        self.opaque = Some(opaque.into());
        self
    }

    /// How long a nonce stays valid (default 300 s).
    #[must_use]
    pub fn with_nonce_lifetime(mut self, lifetime: Duration) -> DigestVerifier {
        self.lifetime = lifetime;
        self
    }

    /// How many used nonces are remembered for replay detection (default 65 536; at
    /// least 1).
    #[must_use]
    pub fn with_max_tracked_nonces(mut self, max: usize) -> DigestVerifier {
        self.max_tracked = max.max(1);
        self
    }

    /// The realm.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    fn seconds(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    fn mac(&self, payload: &[u8]) -> [u8; 32] {
        let mut msg = Vec::with_capacity(payload.len() + self.realm.len());
        msg.extend_from_slice(payload);
        msg.extend_from_slice(self.realm.as_bytes());
        hmac_sha256(&self.key, &msg)
    }

    fn new_nonce(&mut self, now: Instant) -> String {
        self.counter = self.counter.wrapping_add(1);
        let mut payload = [0u8; NONCE_PAYLOAD];
        payload[..8].copy_from_slice(&self.seconds(now).to_be_bytes());
        payload[8..16].copy_from_slice(&self.instance.to_be_bytes());
        payload[16..].copy_from_slice(&self.counter.to_be_bytes());
        let mac = self.mac(&payload);
        let mut nonce = hex(&payload);
        nonce.push_str(&hex(&mac[..NONCE_MAC]));
        nonce
    }

    /// The issue second of a nonce this verifier made, `None` when it did not make it
    /// (another key, another instance, or not a nonce of this form).
    fn nonce_issued(&self, nonce: &str) -> Option<u64> {
        let bytes = nonce.as_bytes();
        if bytes.len() != 2 * (NONCE_PAYLOAD + NONCE_MAC) {
            return None;
        }
        let raw = unhex(bytes)?;
        let (payload, mac) = raw.split_at(NONCE_PAYLOAD);
        if !constant_time_eq(&self.mac(payload)[..NONCE_MAC], mac) {
            return None;
        }
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&payload[at..at + 8]);
            u64::from_be_bytes(w)
        };
        (word(8) == self.instance).then(|| word(0))
    }

    fn nonce_fresh(&self, issued: u64, now: Instant) -> bool {
        let now = self.seconds(now);
        issued <= now
            && now - issued <= self.lifetime.as_secs()
            && self.stale_up_to.is_none_or(|s| issued > s)
    }

    /// Challenges with a fresh nonce, one per algorithm offered, strongest first. Put each
    /// in a `WWW-Authenticate` (401) or `Proxy-Authenticate` (407) field. `stale` is set
    /// after a [`VerifyError::is_stale`] refusal.
    pub fn challenges(&mut self, now: Instant, stale: bool) -> Vec<Challenge> {
        let nonce = self.new_nonce(now);
        self.algorithms
            .iter()
            .map(|&algorithm| Challenge {
                realm: self.realm.clone(),
                nonce: nonce.clone(),
                opaque: self.opaque.clone(),
                algorithm,
                qop: self.qop.clone(),
                stale,
                userhash: false,
            })
            .collect()
    }

    /// Adds the challenges to a 401 (`WWW-Authenticate`) or 407 (`Proxy-Authenticate`)
    /// response; any other status gets `WWW-Authenticate`.
    pub fn challenge_response(
        &mut self,
        response: &mut SipMessage,
        now: Instant,
        stale: bool,
    ) -> Result<(), crate::ParseError> {
        let name = if response.status() == Some(407) {
            HeaderName::ProxyAuthenticate
        } else {
            HeaderName::WwwAuthenticate
        };
        for c in self.challenges(now, stale) {
            response.push_header(name, c.to_header_value())?;
        }
        Ok(())
    }

    /// Verifies the credentials `request` carries in `header` (`Authorization` or
    /// `Proxy-Authorization`) for this realm. `lookup(username, algorithm)` returns the
    /// user's password or HA1 for that algorithm (without `-sess`), `None` if unknown.
    pub fn verify(
        &mut self,
        request: &SipMessage,
        header: HeaderName,
        now: Instant,
        lookup: impl FnOnce(&str, Algorithm) -> Option<Secret>,
    ) -> Result<Verified, VerifyError> {
        let method = request
            .method()
            .ok_or(VerifyError::Malformed("not a request"))?
            .as_str();
        let uri = request
            .request_uri_bytes()
            .ok_or(VerifyError::Malformed("not a request"))?;
        let mut unparsable = false;
        let mut found = None;
        for value in request.auth(header) {
            match value {
                Ok(v) if v.scheme().eq_ignore_ascii_case("Digest") => {
                    if v.param("realm").as_deref() == Some(self.realm.as_bytes()) {
                        found = Some(v);
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => unparsable = true,
            }
        }
        match found {
            Some(v) => self.verify_value(&v, method, uri, request.body(), now, lookup),
            None if unparsable => Err(VerifyError::Malformed("unparsable credentials")),
            None => Err(VerifyError::Missing),
        }
    }

    /// Verifies one Digest credential value for a request with this method, Request-URI and
    /// body (the parts [`verify`](Self::verify) takes from a message).
    pub fn verify_value(
        &mut self,
        credentials: &AuthValue<'_>,
        method: &str,
        request_uri: &[u8],
        body: &[u8],
        now: Instant,
        lookup: impl FnOnce(&str, Algorithm) -> Option<Secret>,
    ) -> Result<Verified, VerifyError> {
        if !credentials.scheme().eq_ignore_ascii_case("Digest") {
            return Err(VerifyError::Missing);
        }
        let text = |name: &'static str| -> Result<Option<String>, VerifyError> {
            credentials
                .param(name)
                .map(|v| String::from_utf8(v.into_owned()))
                .transpose()
                .map_err(|_| VerifyError::Malformed("parameter is not UTF-8"))
        };
        let required = |name: &'static str, why| text(name)?.ok_or(VerifyError::Malformed(why));
        let username = required("username", "missing username")?;
        let nonce = required("nonce", "missing nonce")?;
        let uri = required("uri", "missing uri")?;
        let response = required("response", "missing response")?;
        let algorithm = match text("algorithm")? {
            None => Algorithm::Md5,
            Some(a) => Algorithm::parse(a.trim()).ok_or(VerifyError::Unsupported)?,
        };
        if !self.algorithms.contains(&algorithm) {
            return Err(VerifyError::Unsupported);
        }
        if text("userhash")?.is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            // Never offered by this verifier: it looks users up by name.
            return Err(VerifyError::Unsupported);
        }
        let qop = match text("qop")? {
            None if !self.qop.is_empty() => {
                return Err(VerifyError::Malformed(
                    "qop missing though the challenge offered it",
                ))
            }
            None => None,
            Some(q) => {
                let q = Qop::parse(q.trim()).ok_or(VerifyError::Unsupported)?;
                if !self.qop.contains(&q) {
                    return Err(VerifyError::Unsupported);
                }
                Some(q)
            }
        };
        let cnonce = text("cnonce")?;
        if (qop.is_some() || algorithm.is_session()) && cnonce.is_none() {
            return Err(VerifyError::Malformed("missing cnonce"));
        }
        let nc = match (qop, text("nc")?) {
            (None, _) => 1,
            (Some(_), None) => return Err(VerifyError::Malformed("missing nc")),
            (Some(_), Some(n)) => {
                if n.len() != 8 {
                    return Err(VerifyError::Malformed("nc is not 8 hex digits"));
                }
                u32::from_str_radix(&n, 16)
                    .map_err(|_| VerifyError::Malformed("nc is not 8 hex digits"))?
            }
        };
        if uri.as_bytes() != request_uri {
            return Err(VerifyError::UriMismatch);
        }
        let ha1 = match lookup(&username, algorithm.base()).ok_or(VerifyError::UnknownUser)? {
            Secret::Password(p) => algorithm.base().ha1(&username, &self.realm, &p),
            Secret::Ha1(h) => h.to_ascii_lowercase(),
        };
        let expected = ResponseInput {
            algorithm,
            ha1: &ha1,
            nonce: &nonce,
            cnonce: cnonce.as_deref().unwrap_or_default(),
            nc,
            qop,
            method,
            uri: &uri,
            body,
        }
        .compute();
        if !constant_time_eq(
            expected.as_bytes(),
            response.to_ascii_lowercase().as_bytes(),
        ) {
            return Err(VerifyError::WrongResponse);
        }
        let issued = self.nonce_issued(&nonce).ok_or(VerifyError::Stale)?;
        if !self.nonce_fresh(issued, now) {
            return Err(VerifyError::Stale);
        }
        match self.seen.get_mut(&nonce) {
            Some((_, highest)) if nc <= *highest => return Err(VerifyError::Replay),
            Some((_, highest)) => *highest = nc,
            None => {
                self.make_room(now);
                if !self.nonce_fresh(issued, now) {
                    // Evicting made this nonce's second stale.
                    return Err(VerifyError::Stale);
                }
                self.seen.insert(nonce, (issued, nc));
            }
        }
        Ok(Verified {
            username,
            algorithm,
            qop,
        })
    }

    fn make_room(&mut self, now: Instant) {
        if self.seen.len() < self.max_tracked {
            return;
        }
        let now_s = self.seconds(now);
        let lifetime = self.lifetime.as_secs();
        self.seen
            .retain(|_, (issued, _)| now_s.saturating_sub(*issued) <= lifetime);
        while self.seen.len() >= self.max_tracked {
            let Some((oldest, issued)) = self
                .seen
                .iter()
                .min_by_key(|(_, (issued, _))| *issued)
                .map(|(k, (issued, _))| (k.clone(), *issued))
            else {
                break;
            };
            self.seen.remove(&oldest);
            self.stale_up_to = Some(self.stale_up_to.map_or(issued, |s| s.max(issued)));
        }
    }

    /// How many used nonces are tracked for replay detection.
    pub fn tracked_nonces(&self) -> usize {
        self.seen.len()
    }
}

fn unhex(s: &[u8]) -> Option<Vec<u8>> {
    fn digit(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    s.chunks_exact(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}
