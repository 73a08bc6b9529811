//! A minimal RFC 2617 / RFC 3261 §22 digest client (MD5, `qop=auth` or none), enough to
//! register test users at the front ends. It is test support, not the SDK's digest
//! implementation (that lives in sip-core).

use std::fmt::Write as _;

use md5::{Digest, Md5};
use sip_core::{HeaderName, SipMessage};

use crate::error::{HarnessError, Result};
use crate::process::unique_token;

/// A digest challenge read from a 401 (`WWW-Authenticate`) or 407 (`Proxy-Authenticate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestChallenge {
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `opaque`, if sent.
    pub opaque: Option<String>,
    /// `algorithm`, if sent (only MD5 is supported).
    pub algorithm: Option<String>,
    /// Whether `qop` offered `auth`.
    pub qop_auth: bool,
    /// Whether the challenge came in `Proxy-Authenticate` (answer in `Proxy-Authorization`).
    pub proxy: bool,
}

fn text(v: std::borrow::Cow<'_, [u8]>) -> String {
    String::from_utf8_lossy(&v).into_owned()
}

fn hex_md5(s: &str) -> String {
    let d = Md5::digest(s.as_bytes());
    let mut out = String::with_capacity(32);
    for b in d {
        let _ = write!(out, "{b:02x}");
    }
    out
}

impl DigestChallenge {
    /// The first Digest challenge of a 401 or 407 response.
    pub fn from_response(response: &SipMessage) -> Result<DigestChallenge> {
        let (name, proxy) = match response.status() {
            Some(401) => (HeaderName::WwwAuthenticate, false),
            Some(407) => (HeaderName::ProxyAuthenticate, true),
            other => {
                return Err(HarnessError::Unexpected(format!(
                    "expected 401 or 407, got {other:?}"
                )))
            }
        };
        for v in response.auth(name) {
            let v = v.map_err(|e| HarnessError::Sip(e.to_string()))?;
            if !v.scheme().eq_ignore_ascii_case("digest") {
                continue;
            }
            let realm = v.param("realm").map(text).unwrap_or_default();
            let nonce = v
                .param("nonce")
                .map(text)
                .ok_or_else(|| HarnessError::Unexpected("challenge without nonce".into()))?;
            let qop_auth = v
                .param("qop")
                .map(text)
                .is_some_and(|q| q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")));
            return Ok(DigestChallenge {
                realm,
                nonce,
                opaque: v.param("opaque").map(text),
                algorithm: v.param("algorithm").map(text),
                qop_auth,
                proxy,
            });
        }
        Err(HarnessError::Unexpected(
            "no Digest challenge in the response".into(),
        ))
    }

    /// The header to answer with: `Authorization` or `Proxy-Authorization`.
    pub fn answer_header(&self) -> HeaderName {
        if self.proxy {
            HeaderName::ProxyAuthorization
        } else {
            HeaderName::Authorization
        }
    }

    /// The credentials value for `method` on `uri` (the Request-URI) as `user`/`password`.
    /// `nc` is the nonce count (1 for the first use of a nonce).
    pub fn authorization(
        &self,
        method: &str,
        uri: &str,
        user: &str,
        password: &str,
        nc: u32,
    ) -> String {
        let ha1 = hex_md5(&format!("{user}:{}:{password}", self.realm));
        let ha2 = hex_md5(&format!("{method}:{uri}"));
        let mut v = format!(
            "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\"",
            self.realm, self.nonce
        );
        if self.qop_auth {
            let cnonce = unique_token();
            let nc = format!("{nc:08x}");
            let response = hex_md5(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce));
            let _ = write!(
                v,
                ", response=\"{response}\", qop=auth, nc={nc}, cnonce=\"{cnonce}\""
            );
        } else {
            let response = hex_md5(&format!("{ha1}:{}:{ha2}", self.nonce));
            let _ = write!(v, ", response=\"{response}\"");
        }
        v.push_str(", algorithm=MD5");
        if let Some(o) = &self.opaque {
            let _ = write!(v, ", opaque=\"{o}\"");
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2617_example_without_qop_shape() {
        // HA1/HA2 arithmetic checked against the RFC 2617 §3.5 example (qop=auth).
        let ha1 = hex_md5("Mufasa:testrealm@host.com:Circle Of Life");
        assert_eq!(ha1, "939e7578ed9e3c518a452acee763bce9");
        let ha2 = hex_md5("GET:/dir/index.html");
        let r = hex_md5(&format!(
            "{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:00000001:0a4f113b:auth:{ha2}"
        ));
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }
}
