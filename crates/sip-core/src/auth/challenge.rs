//! A Digest challenge (WWW-Authenticate / Proxy-Authenticate) read from the existing
//! [`AuthValue`] parser, owned so the client can keep it for later requests.

use super::digest::{push_quoted, push_token};
use super::{Algorithm, DigestError, Qop};
use crate::AuthValue;

/// One Digest challenge with the parameters a client needs (RFC 7616 §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `realm`: which credentials to use.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `opaque`, echoed unchanged.
    pub opaque: Option<String>,
    /// `algorithm` (MD5 when absent).
    pub algorithm: Algorithm,
    /// `qop` options offered, in order; empty for the RFC 2069 form.
    pub qop: Vec<Qop>,
    /// `stale=true`: the previous nonce expired, the credentials were fine.
    pub stale: bool,
    /// `userhash=true`: send `H(username:realm)` as the username.
    pub userhash: bool,
}

/// What reading a challenge gave.
#[derive(Debug)]
pub(crate) enum Read {
    /// A Digest challenge this crate can answer.
    Supported(Challenge),
    /// Another scheme, an unknown algorithm, or only unknown qop values: skip it.
    Unsupported,
}

impl Challenge {
    /// Reads a Digest challenge; `Ok(None)` for another scheme, an algorithm this crate
    /// does not support, or a qop list with no known value.
    pub fn from_auth_value(value: &AuthValue<'_>) -> Result<Option<Challenge>, DigestError> {
        Ok(match Challenge::read(value)? {
            Read::Supported(c) => Some(c),
            Read::Unsupported => None,
        })
    }

    pub(crate) fn read(value: &AuthValue<'_>) -> Result<Read, DigestError> {
        if !value.scheme().eq_ignore_ascii_case("Digest") {
            return Ok(Read::Unsupported);
        }
        let text = |name: &'static str| -> Result<Option<String>, DigestError> {
            match value.param(name) {
                None => Ok(None),
                Some(v) => String::from_utf8(v.into_owned())
                    .map(Some)
                    .map_err(|_| DigestError::MalformedChallenge("parameter is not UTF-8")),
            }
        };
        let realm = text("realm")?.ok_or(DigestError::MalformedChallenge("missing realm"))?;
        let nonce = text("nonce")?.ok_or(DigestError::MalformedChallenge("missing nonce"))?;
        let algorithm = match text("algorithm")? {
            None => Algorithm::Md5,
            Some(a) => match Algorithm::parse(a.trim()) {
                Some(a) => a,
                None => return Ok(Read::Unsupported),
            },
        };
        let qop = match text("qop")? {
            None => Vec::new(),
            Some(list) => {
                let known: Vec<Qop> = list
                    .split(',')
                    .filter_map(|t| Qop::parse(t.trim()))
                    .collect();
                if known.is_empty() {
                    return Ok(Read::Unsupported);
                }
                known
            }
        };
        let flag =
            |name| text(name).map(|v| v.is_some_and(|v| v.trim().eq_ignore_ascii_case("true")));
        Ok(Read::Supported(Challenge {
            realm,
            nonce,
            opaque: text("opaque")?,
            algorithm,
            qop,
            stale: flag("stale")?,
            userhash: flag("userhash")?,
        }))
    }

    /// The header value (`Digest realm="…", nonce="…", …`), as a server sends it.
    pub fn to_header_value(&self) -> String {
        let mut s = String::from("Digest ");
        push_quoted(&mut s, "realm", &self.realm);
        push_quoted(&mut s, "nonce", &self.nonce);
        if let Some(o) = &self.opaque {
            push_quoted(&mut s, "opaque", o);
        }
        push_token(&mut s, "algorithm", self.algorithm.as_str());
        if !self.qop.is_empty() {
            let list: Vec<&str> = self.qop.iter().map(|q| q.as_str()).collect();
            push_quoted(&mut s, "qop", &list.join(","));
        }
        if self.stale {
            push_token(&mut s, "stale", "true");
        }
        if self.userhash {
            push_token(&mut s, "userhash", "true");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(v: &str) -> Option<Challenge> {
        let a = AuthValue::parse(v.as_bytes(), "WWW-Authenticate").unwrap();
        Challenge::from_auth_value(&a).unwrap()
    }

    #[test]
    fn reads_and_writes_back() {
        let c = read(
            r#"Digest realm="atlanta.com", nonce="84a4cc6f", qop="auth,auth-int", algorithm=sha-256, stale=TRUE, opaque="x""#,
        )
        .unwrap();
        assert_eq!(c.algorithm, Algorithm::Sha256);
        assert_eq!(c.qop, [Qop::Auth, Qop::AuthInt]);
        assert!(c.stale && !c.userhash);
        let again = read(&c.to_header_value()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn unsupported_and_malformed() {
        assert!(read(r#"NTLM realm="x", targetname="y""#).is_none());
        assert!(read(r#"Digest realm="x", nonce="n", algorithm=AKAv1-MD5"#).is_none());
        assert!(read(r#"Digest realm="x", nonce="n", qop="auth-conf""#).is_none());
        let a = AuthValue::parse(b"Digest nonce=\"n\"", "WWW-Authenticate").unwrap();
        assert_eq!(
            Challenge::from_auth_value(&a),
            Err(DigestError::MalformedChallenge("missing realm"))
        );
        let c = read(r#"Digest realm="r", nonce="n""#).unwrap();
        assert_eq!((c.algorithm, c.qop.len()), (Algorithm::Md5, 0));
    }
}
