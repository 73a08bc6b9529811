//! Why a challenge could not be answered, or why credentials were refused.

/// The client could not answer a 401/407 (or must not try again).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DigestError {
    /// The message given as the challenge is not a 401 or 407 response.
    #[error("not a 401/407 response")]
    NotAChallenge,
    /// The request to retry is not a request (or its Request-URI is missing).
    #[error("the request to retry is not a request")]
    NotARequest,
    /// No Digest challenge with an algorithm and qop this client supports.
    #[error("no supported Digest challenge (schemes or algorithms unsupported)")]
    NoSupportedChallenge,
    /// A Digest challenge lacks `realm` or `nonce`, or its parameters are malformed.
    #[error("malformed Digest challenge: {0}")]
    MalformedChallenge(&'static str),
    /// No credentials configured for the realm that challenged.
    #[error("no credentials for realm {realm:?}")]
    NoCredentials {
        /// The realm that challenged.
        realm: String,
    },
    /// The server refused the credentials already sent for this realm (challenged again
    /// without `stale=true`): the password is wrong or the user unknown. Retrying would
    /// loop; the caller should report the failure (the final status is the 401/407).
    #[error("credentials rejected for realm {realm:?} (status {status})")]
    Rejected {
        /// The realm that refused.
        realm: String,
        /// 401 or 407.
        status: u16,
    },
    /// The server kept answering `stale=true` to fresh nonces: give up rather than loop.
    #[error("realm {realm:?} keeps reporting stale nonces")]
    StaleLoop {
        /// The realm.
        realm: String,
    },
}

/// Why a [`DigestVerifier`](super::DigestVerifier) refused a request. Each variant says
/// whether to challenge again (401/407, possibly with `stale=true`) or to refuse (400/403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// No Digest credentials for this realm: send a challenge.
    #[error("no credentials for this realm")]
    Missing,
    /// The credentials are malformed (missing or ill-formed parameters): 400.
    #[error("malformed credentials: {0}")]
    Malformed(&'static str),
    /// The algorithm or qop is not one this verifier offers: challenge again.
    #[error("unsupported algorithm or qop")]
    Unsupported,
    /// The `uri` parameter differs from the Request-URI (RFC 7616 §3.4.6): 400.
    #[error("digest-uri does not match the Request-URI")]
    UriMismatch,
    /// The user is unknown: challenge again (or 403), without revealing which.
    #[error("unknown user")]
    UnknownUser,
    /// The response value is wrong (wrong password): challenge again (or 403).
    #[error("wrong response (bad password)")]
    WrongResponse,
    /// The response is right but the nonce expired or was not issued by this verifier:
    /// challenge again with `stale=true`.
    #[error("stale nonce")]
    Stale,
    /// The nonce count did not increase (a replayed or reordered request): challenge again
    /// with `stale=true` so a genuine client gets a fresh nonce.
    #[error("nonce count replayed")]
    Replay,
}

impl VerifyError {
    /// Whether the new challenge should carry `stale=true` (the client knows the password;
    /// only the nonce must change).
    pub fn is_stale(&self) -> bool {
        matches!(self, VerifyError::Stale | VerifyError::Replay)
    }

    /// The status to answer with: 400 for malformed credentials, else `challenge_status`
    /// (401 for WWW-Authenticate, 407 for Proxy-Authenticate).
    pub fn status(&self, challenge_status: u16) -> u16 {
        match self {
            VerifyError::Malformed(_) | VerifyError::UriMismatch => 400,
            _ => challenge_status,
        }
    }
}
