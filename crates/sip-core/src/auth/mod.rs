//! Digest authentication for SIP (RFC 3261 §22, RFC 7616, RFC 8760), sans-IO.
//!
//! - [`DigestClient`] answers 401/407 challenges: MD5, SHA-256, SHA-512-256 and their
//!   `-sess` variants, `qop=auth` (preferred) and `auth-int`, the RFC 2069 form without
//!   qop, nonce counts per nonce, injected cnonce source, `stale=true` retries, several
//!   challenges in one response (strongest algorithm per realm), `opaque` echoed,
//!   `userhash`. A wrong password ends as [`DigestError::Rejected`], never a loop.
//! - [`DigestVerifier`] is for an application acting as UAS or registrar: it issues
//!   challenges with signed nonces (no state per challenge), verifies credentials against a
//!   password or a stored HA1, reports stale nonces and refuses replayed nonce counts.
//!
//! Challenge and credential syntax is read with [`AuthValue`](crate::AuthValue); this
//! module writes header values itself, quoting what RFC 7616 quotes (username, realm,
//! nonce, uri, response, cnonce, opaque, qop list in challenges) and leaving algorithm, qop
//! and nc as tokens.
//!
//! No clock of its own: the verifier takes `now: Instant`, the client needs none.

mod challenge;
mod client;
mod digest;
mod error;
mod server;

pub use challenge::Challenge;
pub use client::{AuthorizationHeader, CnonceSource, Credentials, DigestClient};
pub use digest::{Algorithm, Qop, ResponseInput};
pub use error::{DigestError, VerifyError};
pub use server::{DigestVerifier, Secret, Verified};
