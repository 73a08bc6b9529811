//! Errors of the platform: starting it, and sending requests through it.

use crate::locate::LocateError;
use crate::topology::TopologyError;
use sip_core::SipMessage;
use std::net::SocketAddr;
use transport_tls::{TlsConfigError, TransportError};

/// One server of the outbound proxy that start tried and could not use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyAttempt {
    /// Where it was tried.
    pub addr: SocketAddr,
    /// Why it failed: TCP connect, or for TLS the mutual-TLS handshake (a refusal, or no
    /// answer within the transport's `handshake_timeout`), or the connection closed right
    /// after it (`TransportError::Tls` when the server refused our certificate by an alert
    /// after a TLS 1.3 handshake).
    pub error: TransportError,
}

impl std::fmt::Display for ProxyAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.addr, self.error)
    }
}

/// `a (why); b (why)`, for the error's message.
fn attempts_text(attempts: &[ProxyAttempt]) -> String {
    let parts: Vec<String> = attempts.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

/// Why the platform did not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlatformError {
    /// The TLS identity or roots are unusable.
    #[error("TLS configuration: {0}")]
    Tls(#[from] TlsConfigError),
    /// A listener could not be opened (address in use, permission).
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// The outbound proxy's domain could not be located.
    #[error("outbound proxy: {0}")]
    Locate(#[from] LocateError),
    /// Every server the outbound proxy's domain resolved to was tried, in order, and none
    /// could be connected to (TLS: handshake completed and the connection kept).
    #[error("no server of the outbound proxy {proxy} could be reached: {}", attempts_text(.attempts))]
    ProxyUnreachable {
        /// The proxy's domain.
        proxy: String,
        /// Each server tried, in the order tried, and why it failed.
        attempts: Vec<ProxyAttempt>,
    },
    /// The platform is shut down.
    #[error("the platform is shut down")]
    Shutdown,
    /// Must be called inside a tokio runtime.
    #[error("CollaborationPlatform::start must run inside a tokio runtime")]
    NoRuntime,
}

/// Why a request got no 2xx. Each variant says which status a caller would map it to.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No final response before the transaction timer (Timer F or B) fired: 408.
    #[error("request timed out (no final response)")]
    Timeout,
    /// The request could not be sent or the connection failed (TLS refusal included): 503.
    #[error("transport failure: {0}")]
    Transport(TransportError),
    /// A non-2xx final response arrived: its status and reason. Its text adds what the
    /// peer's Warning and `ms-diagnostics` headers say, which often is why.
    #[error("{code} {reason}{}", crate::diagnostics::peer_diagnostics(response))]
    Status {
        /// The status code (300–699).
        code: u16,
        /// The reason phrase.
        reason: String,
        /// The whole response.
        response: Box<SipMessage>,
    },
    /// The request carried credentials ([`ClientAuth`](crate::ClientAuth)) and was
    /// challenged (401/407) in a way they cannot answer: the credentials were refused (the
    /// realm challenged again without `stale=true`: wrong password or unknown user), the
    /// challenge has no algorithm or realm the credentials fit, or it was still challenged
    /// after four sends. Not sent again; `code` is the last challenge's status.
    #[error("authentication failed: {code} {reason} ({detail})")]
    Authentication {
        /// 401 or 407.
        code: u16,
        /// The challenge's reason phrase.
        reason: String,
        /// Why it was not answered (again).
        detail: String,
        /// The last challenge.
        response: Box<SipMessage>,
    },
    /// The destination is a federated domain the topology blocks or does not allow: 403.
    #[error("refused by federation policy: {0}")]
    Refused(TopologyError),
    /// The request is unusable (bad URI, header or missing part): 400.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The dialog is gone (ended by either side, or never existed): 481.
    #[error("no such dialog")]
    NoDialog,
    /// The INVITE was cancelled before it was answered (487), or answered despite its
    /// CANCEL and ended by the platform with BYE. The CANCEL came from
    /// [`OutgoingInvite::cancel`](crate::OutgoingInvite::cancel), or from the platform when
    /// the time the INVITE's Expires gave passed (RFC 3261 §13.2.1).
    #[error("request cancelled")]
    Cancelled,
    /// The platform is shutting down or stopped: 503.
    #[error("the platform is shut down")]
    Shutdown,
    /// As many transactions as the platform allows are in progress
    /// (`TransactionConfig::max_transactions`): 503, try again shortly.
    #[error("too many transactions in progress (limit {limit})")]
    Overloaded {
        /// The configured limit.
        limit: usize,
    },
}

impl RequestError {
    /// The SIP status that describes this failure (the received one for `Status`).
    pub fn status(&self) -> u16 {
        match self {
            RequestError::Timeout => 408,
            RequestError::Transport(_)
            | RequestError::Shutdown
            | RequestError::Overloaded { .. } => 503,
            RequestError::Status { code, .. } | RequestError::Authentication { code, .. } => *code,
            RequestError::Refused(_) => 403,
            RequestError::Invalid(_) => 400,
            RequestError::NoDialog => 481,
            RequestError::Cancelled => 487,
        }
    }
}

impl RequestError {
    /// For [`Status`](Self::Status): what the peer's Warning and `ms-diagnostics` headers
    /// say, as the error's text shows it (` (ms-diagnostics 1003: "User does not exist")`);
    /// empty otherwise. For layers that keep the status but not the response.
    pub fn peer_diagnostics(&self) -> String {
        match self {
            RequestError::Status { response, .. } => crate::diagnostics::peer_diagnostics(response),
            _ => String::new(),
        }
    }
}

/// Why a response to an incoming request could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RespondError {
    /// The response is unusable (status outside 100–699, bad header): 500 was sent instead
    /// if it was final.
    #[error("invalid response: {0}")]
    Invalid(String),
    /// A final response was already sent for this request.
    #[error("a final response was already sent")]
    AlreadyAnswered,
    /// The caller cancelled the INVITE, or the time its Expires gave passed (RFC 3261
    /// §13.3.1); the platform answered 487.
    #[error("the caller cancelled the request")]
    Cancelled,
    /// The platform is shut down; the transaction is gone (503 was sent).
    #[error("the platform is shut down")]
    Shutdown,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(extra: &str) -> RequestError {
        let raw = format!(
            "SIP/2.0 488 Not Acceptable Here\r\nVia: SIP/2.0/TLS 10.0.0.21:5061;branch=z9hG4bK1\r\n\
             From: <sip:app@contoso.test>;tag=1\r\nTo: <sip:bob@fabrikam.test>;tag=2\r\n\
             Call-ID: c1\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        let response =
            SipMessage::parse_datagram(raw.into(), &sip_core::Limits::default()).unwrap();
        RequestError::Status {
            code: 488,
            reason: "Not Acceptable Here".into(),
            response: Box::new(response),
        }
    }

    #[test]
    fn a_refusal_says_what_the_peers_warnings_say() {
        assert_eq!(refusal("").to_string(), "488 Not Acceptable Here");
        assert_eq!(
            refusal("Warning: 304 fe.fabrikam.test \"Media type not available\"\r\n").to_string(),
            "488 Not Acceptable Here (warning 304 fe.fabrikam.test: \"Media type not available\")"
        );
        // Several, in order; an unparsable one is left out; escapes are undone and
        // control characters shown as spaces.
        assert_eq!(
            refusal(
                "Warning: 399 a.test \"one \\\"two\\\"\", bad, 301 b.test \"x\\\ty\"\r\n"
            )
            .to_string(),
            "488 Not Acceptable Here (warning 399 a.test: \"one \"two\"\"; warning 301 b.test: \"x y\")"
        );
    }

    #[test]
    fn a_refusal_says_what_lync_diagnostics_say() {
        // What a Lync / Skype for Business server puts in a refusal instead of Warning; one
        // without a numeric code is left out.
        let e = refusal(
            "ms-diagnostics: 1003;reason=\"User does not exist\";source=\"fe.contoso.test\"\r\n\
             ms-diagnostics-public: 4001;reason=\"Federation is not allowed\"\r\n\
             ms-diagnostics: no-code-here\r\n",
        );
        assert_eq!(
            e.to_string(),
            "488 Not Acceptable Here (ms-diagnostics 1003: \"User does not exist\"; \
             ms-diagnostics 4001: \"Federation is not allowed\")"
        );
        // At most three are shown.
        let many = refusal(&"Warning: 399 a.test \"w\"\r\n".repeat(5));
        assert_eq!(many.to_string().matches("warning 399").count(), 3);
    }
}
