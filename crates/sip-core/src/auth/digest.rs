//! The Digest computation itself (RFC 7616 §3.4, RFC 3261 §22.4): algorithms, HA1, HA2 and
//! the response, shared by the client and the verifier.

use std::fmt;

use md5::Md5;
use sha2::{Digest, Sha256, Sha512_256};

/// A Digest algorithm (RFC 7616 §6.1 registry; RFC 8760 brings SHA-256 and SHA-512-256 to
/// SIP). The `-sess` variants fold the nonce and cnonce into HA1.
///
/// Ordered by strength: when a response carries several challenges, the client picks the
/// strongest it supports (SHA-512-256 > SHA-256 > MD5, as RFC 8760 §2.4 asks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// `MD5`: the RFC 2617/3261 default, still what most SIP servers offer.
    Md5,
    /// `MD5-sess`.
    Md5Sess,
    /// `SHA-256`.
    Sha256,
    /// `SHA-256-sess`.
    Sha256Sess,
    /// `SHA-512-256` (SHA-512 truncated to 256 bits, FIPS 180-4).
    Sha512_256,
    /// `SHA-512-256-sess`.
    Sha512_256Sess,
}

impl Algorithm {
    /// Every supported algorithm, strongest first.
    pub const ALL: [Algorithm; 6] = [
        Algorithm::Sha512_256,
        Algorithm::Sha512_256Sess,
        Algorithm::Sha256,
        Algorithm::Sha256Sess,
        Algorithm::Md5,
        Algorithm::Md5Sess,
    ];

    /// Parses an `algorithm=` value (case-insensitive); `None` for algorithms this crate
    /// does not support (e.g. `AKAv1-MD5`).
    pub fn parse(name: &str) -> Option<Algorithm> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(name))
    }

    /// The name as RFC 7616 writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Sha256Sess => "SHA-256-sess",
            Algorithm::Sha512_256 => "SHA-512-256",
            Algorithm::Sha512_256Sess => "SHA-512-256-sess",
        }
    }

    /// Whether this is a `-sess` variant (HA1 depends on the nonce and cnonce).
    pub fn is_session(self) -> bool {
        matches!(
            self,
            Algorithm::Md5Sess | Algorithm::Sha256Sess | Algorithm::Sha512_256Sess
        )
    }

    /// The same hash without `-sess`: the algorithm a stored HA1 was computed with.
    pub fn base(self) -> Algorithm {
        match self {
            Algorithm::Md5Sess => Algorithm::Md5,
            Algorithm::Sha256Sess => Algorithm::Sha256,
            Algorithm::Sha512_256Sess => Algorithm::Sha512_256,
            a => a,
        }
    }

    /// Relative strength of the hash (higher is stronger); `-sess` and plain rank alike.
    pub fn strength(self) -> u8 {
        match self.base() {
            Algorithm::Sha512_256 => 3,
            Algorithm::Sha256 => 2,
            _ => 1,
        }
    }

    /// Lower-case hex of the hash of `parts` joined by `:`; the building block of every
    /// Digest value (`H(a:b:c)`).
    pub fn hash_hex(self, parts: &[&[u8]]) -> String {
        fn run<D: Digest>(parts: &[&[u8]]) -> String {
            let mut d = D::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    d.update(b":");
                }
                d.update(p);
            }
            hex(&d.finalize())
        }
        match self.base() {
            Algorithm::Sha256 => run::<Sha256>(parts),
            Algorithm::Sha512_256 => run::<Sha512_256>(parts),
            _ => run::<Md5>(parts),
        }
    }

    /// `H(username:realm:password)`: the HA1 of the plain algorithm, which is also what a
    /// server stores instead of the password.
    pub fn ha1(self, username: &str, realm: &str, password: &str) -> String {
        self.hash_hex(&[username.as_bytes(), realm.as_bytes(), password.as_bytes()])
    }

    /// `H(username:realm)`: the hashed username sent when a challenge says `userhash=true`
    /// (RFC 7616 §3.4.4).
    pub fn userhash(self, username: &str, realm: &str) -> String {
        self.hash_hex(&[username.as_bytes(), realm.as_bytes()])
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Quality of protection (RFC 7616 §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Qop {
    /// `auth`: authenticates the method and URI.
    Auth,
    /// `auth-int`: also authenticates the body (HA2 includes `H(body)`).
    AuthInt,
}

impl Qop {
    /// Parses one qop token (case-insensitive).
    pub fn parse(token: &str) -> Option<Qop> {
        if token.eq_ignore_ascii_case("auth") {
            Some(Qop::Auth)
        } else if token.eq_ignore_ascii_case("auth-int") {
            Some(Qop::AuthInt)
        } else {
            None
        }
    }

    /// The token.
    pub fn as_str(self) -> &'static str {
        match self {
            Qop::Auth => "auth",
            Qop::AuthInt => "auth-int",
        }
    }
}

impl fmt::Display for Qop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the `response` value depends on (RFC 7616 §3.4.1–3.4.3).
///
/// `ha1` is `H(username:realm:password)` of the plain algorithm (see [`Algorithm::ha1`]);
/// for `-sess` algorithms [`compute`](Self::compute) folds in the nonce and cnonce itself.
/// Without `qop` (RFC 2069 compatibility, still seen in SIP) `cnonce` and `nc` are unused.
#[derive(Debug, Clone, Copy)]
pub struct ResponseInput<'a> {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// `H(username:realm:password)` as lower-case hex.
    pub ha1: &'a str,
    /// The server's nonce.
    pub nonce: &'a str,
    /// The client's nonce (required with a qop and with `-sess` algorithms).
    pub cnonce: &'a str,
    /// The nonce count.
    pub nc: u32,
    /// The quality of protection, `None` for the RFC 2069 form.
    pub qop: Option<Qop>,
    /// The request method (`REGISTER`, `INVITE`, …).
    pub method: &'a str,
    /// The digest-uri: the Request-URI for SIP.
    pub uri: &'a str,
    /// The message body (only read for `auth-int`).
    pub body: &'a [u8],
}

impl ResponseInput<'_> {
    /// The `response` value: lower-case hex.
    pub fn compute(&self) -> String {
        let a = self.algorithm;
        let ha1 = if a.is_session() {
            a.hash_hex(&[
                self.ha1.as_bytes(),
                self.nonce.as_bytes(),
                self.cnonce.as_bytes(),
            ])
        } else {
            self.ha1.to_owned()
        };
        let ha2 = match self.qop {
            Some(Qop::AuthInt) => {
                let body = a.hash_hex(&[self.body]);
                a.hash_hex(&[self.method.as_bytes(), self.uri.as_bytes(), body.as_bytes()])
            }
            _ => a.hash_hex(&[self.method.as_bytes(), self.uri.as_bytes()]),
        };
        match self.qop {
            Some(qop) => {
                let nc = format_nc(self.nc);
                a.hash_hex(&[
                    ha1.as_bytes(),
                    self.nonce.as_bytes(),
                    nc.as_bytes(),
                    self.cnonce.as_bytes(),
                    qop.as_str().as_bytes(),
                    ha2.as_bytes(),
                ])
            }
            None => a.hash_hex(&[ha1.as_bytes(), self.nonce.as_bytes(), ha2.as_bytes()]),
        }
    }
}

/// `nc` as RFC 7616 writes it: 8 lower-case hex digits.
pub(crate) fn format_nc(nc: u32) -> String {
    format!("{nc:08x}")
}

/// Lower-case hex. Ten lines of our own rather than a dependency for them.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Compares two strings in time independent of where they differ (response values are
/// secrets-derived; a short-circuit compare leaks how many leading digits were right).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Writes `name="value"` with `"` and `\` escaped (RFC 7616 quoted-string).
pub(crate) fn push_quoted(out: &mut String, name: &str, value: &str) {
    push_sep(out);
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Writes `name=token` (values RFC 7616 says must not be quoted: algorithm, qop, nc …).
pub(crate) fn push_token(out: &mut String, name: &str, value: &str) {
    push_sep(out);
    out.push_str(name);
    out.push('=');
    out.push_str(value);
}

fn push_sep(out: &mut String) {
    if !out.ends_with(' ') {
        out.push_str(", ");
    }
}

/// HMAC-SHA-256 (RFC 2104), used to sign server nonces. Written here because it is a dozen
/// lines over `sha2`; checked against RFC 4231's test vectors.
pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    fn rfc7616(algorithm: Algorithm) -> String {
        let ha1 = algorithm.ha1("Mufasa", "http-auth@example.org", "Circle of Life");
        ResponseInput {
            algorithm,
            ha1: &ha1,
            nonce: NONCE,
            cnonce: CNONCE,
            nc: 1,
            qop: Some(Qop::Auth),
            method: "GET",
            uri: "/dir/index.html",
            body: b"",
        }
        .compute()
    }

    #[test]
    fn rfc7616_section_3_9_1_vectors() {
        assert_eq!(rfc7616(Algorithm::Md5), "8ca523f5e9506fed4657c9700eebdbec");
        assert_eq!(
            rfc7616(Algorithm::Sha256),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn rfc2617_and_rfc2069_md5_vectors() {
        // RFC 2617 §3.5: qop=auth.
        let ha1 = Algorithm::Md5.ha1("Mufasa", "testrealm@host.com", "Circle Of Life");
        let mut input = ResponseInput {
            algorithm: Algorithm::Md5,
            ha1: &ha1,
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            cnonce: "0a4f113b",
            nc: 1,
            qop: Some(Qop::Auth),
            method: "GET",
            uri: "/dir/index.html",
            body: b"",
        };
        assert_eq!(input.compute(), "6629fae49393a05397450978507c4ef1");
        // RFC 2069 form (no qop), password "CircleOfLife"; the value printed in RFC 2069 is
        // a known erratum, this one is recomputed (python3 hashlib agrees).
        let ha1 = Algorithm::Md5.ha1("Mufasa", "testrealm@host.com", "CircleOfLife");
        input.ha1 = &ha1;
        input.qop = None;
        assert_eq!(input.compute(), "1949323746fe6a43ef61f9606e7febea");
    }

    #[test]
    fn algorithm_names_and_order() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::parse(a.as_str()), Some(a));
            assert_eq!(Algorithm::parse(&a.as_str().to_lowercase()), Some(a));
        }
        assert_eq!(Algorithm::parse("AKAv1-MD5"), None);
        assert!(Algorithm::Sha512_256.strength() > Algorithm::Sha256.strength());
        assert!(Algorithm::Sha256Sess.strength() > Algorithm::Md5.strength());
        // SHA-512/256 of "abc" (FIPS 180-4 example).
        assert_eq!(
            Algorithm::Sha512_256.hash_hex(&[b"abc"]),
            "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"
        );
    }

    #[test]
    fn hmac_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let long_key = [0xaau8; 131];
        let mac = hmac_sha256(
            &long_key,
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex(&mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn quoting_escapes() {
        let mut s = String::from("Digest ");
        push_quoted(&mut s, "username", r#"a"b\c"#);
        push_token(&mut s, "nc", "00000001");
        assert_eq!(s, r#"Digest username="a\"b\\c", nc=00000001"#);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
