//! Why a connection could not be made, was refused, or was closed.

use std::net::{IpAddr, SocketAddr};

use sip_core::framer::FrameError;

/// Why a TLS handshake was refused, by us or by the peer.
///
/// Each refusal is also logged as a `tracing` event at WARN level, with the remote address
/// and this value, by the side that detected it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsRefusal {
    /// The client presented no certificate, and this listener requires one.
    #[error("the client presented no certificate")]
    NoClientCertificate,
    /// The peer's certificate does not chain to the configured trust roots.
    #[error("the peer's certificate is not issued by a trusted CA")]
    UnknownIssuer,
    /// The peer's certificate is expired or not yet valid.
    #[error("the peer's certificate is expired or not yet valid")]
    Expired,
    /// The server's certificate is not valid for the name the client asked for (SAN).
    #[error("the server's certificate does not match the target name")]
    NameMismatch,
    /// The peer's certificate was refused for another reason.
    #[error("the peer's certificate was refused: {0}")]
    BadCertificate(String),
    /// The peer sent a TLS alert (it refused us): the alert's name.
    #[error("{}", alert_text(.0))]
    PeerAlert(String),
    /// Another TLS protocol failure.
    #[error("TLS protocol error: {0}")]
    Protocol(String),
}

/// What a peer's alert says: alerts about a certificate say that ours was refused, which
/// is what a reader of a failover or start error needs to see.
fn alert_text(alert: &str) -> String {
    if alert.contains("Certificate") || alert == "UnknownCA" {
        format!("the peer refused our certificate (alert {alert})")
    } else {
        format!("the peer refused the handshake with alert {alert}")
    }
}

impl TlsRefusal {
    /// Classifies a rustls error.
    pub(crate) fn from_rustls(e: &rustls::Error) -> TlsRefusal {
        use rustls::CertificateError as C;
        match e {
            rustls::Error::NoCertificatesPresented => TlsRefusal::NoClientCertificate,
            rustls::Error::InvalidCertificate(c) => match c {
                C::UnknownIssuer => TlsRefusal::UnknownIssuer,
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. } => TlsRefusal::Expired,
                C::NotValidForName | C::NotValidForNameContext { .. } => TlsRefusal::NameMismatch,
                other => TlsRefusal::BadCertificate(format!("{other:?}")),
            },
            rustls::Error::AlertReceived(a) => TlsRefusal::PeerAlert(format!("{a:?}")),
            other => TlsRefusal::Protocol(other.to_string()),
        }
    }

    /// Finds a rustls error inside an I/O error (tokio-rustls wraps them).
    pub(crate) fn from_io(e: &std::io::Error) -> Option<TlsRefusal> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map(TlsRefusal::from_rustls)
    }
}

/// A TLS configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// A file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error, as text.
        error: String,
    },
    /// PEM text without the expected item, or malformed.
    #[error("bad PEM: {0}")]
    Pem(String),
    /// rustls refused the certificate, key or roots.
    #[error("rejected by rustls: {0}")]
    Rustls(String),
    /// What was wrong with the contents of a file read by `Identity::from_pem_files` or
    /// `TrustRoots::from_pem_file`, naming the file (a chain and a key may be two).
    #[error("{path}: {error}")]
    InFile {
        /// The file.
        path: String,
        /// What was wrong with its contents ([`Pem`](Self::Pem) or [`Rustls`](Self::Rustls)).
        error: Box<TlsConfigError>,
    },
}

impl TlsConfigError {
    /// This error, said of the contents of `path`.
    pub(crate) fn in_file(self, path: &std::path::Path) -> TlsConfigError {
        TlsConfigError::InFile {
            path: path.display().to_string(),
            error: Box::new(self),
        }
    }
}

/// An operation of the transport failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The TLS handshake was refused.
    #[error("TLS handshake with {remote} refused: {refusal}")]
    Tls {
        /// The peer.
        remote: SocketAddr,
        /// Why.
        refusal: TlsRefusal,
    },
    /// The TLS handshake did not finish within the configured timeout (for an outbound
    /// connection: within what the TCP connect left of it).
    #[error("TLS handshake with {0} timed out")]
    HandshakeTimeout(SocketAddr),
    /// The TCP connection could not be made within the handshake timeout.
    #[error("connecting to {0} timed out")]
    ConnectTimeout(SocketAddr),
    /// A socket operation failed (the error's text).
    #[error("I/O error: {0}")]
    Io(String),
    /// The limit on connections is reached.
    #[error("too many connections (limit {limit})")]
    TooManyConnections {
        /// The configured limit.
        limit: usize,
    },
    /// The limit on connections from one address (IPv4 address, or IPv6 /64) is reached.
    #[error("too many connections from {ip} (limit {limit})")]
    TooManyConnectionsFromIp {
        /// The remote address.
        ip: IpAddr,
        /// The configured limit.
        limit: usize,
    },
    /// A request too large for UDP (RFC 3261 §18.1.1): send it over TCP or TLS instead.
    #[error("request of {size} bytes is larger than {limit} bytes: use a congestion-controlled transport (RFC 3261 §18.1.1)")]
    TooLargeForUdp {
        /// The size of the serialized request.
        size: usize,
        /// Path MTU minus 200 bytes.
        limit: usize,
    },
    /// A TLS target needs a TLS client configuration, which the transport has not got.
    #[error("no TLS client settings configured")]
    NoTlsClient,
    /// A UDP target, and no UDP socket is bound (for
    /// [`SipTransport::send_udp_from`](crate::SipTransport::send_udp_from): none at the
    /// local address given).
    #[error("no UDP socket bound")]
    NoUdpSocket,
    /// The TLS server name is not a valid DNS name or IP address.
    #[error("invalid TLS server name {0:?}")]
    InvalidServerName(String),
    /// The connection does not exist (any more).
    #[error("connection {0} is closed")]
    ConnectionClosed(u64),
    /// The connection closed while it was being confirmed
    /// ([`SipTransport::confirm`](crate::SipTransport::confirm)), for this reason.
    #[error("connection {connection} closed: {reason}")]
    Closed {
        /// The connection's id.
        connection: u64,
        /// Why it closed.
        reason: CloseReason,
    },
    /// The TLS settings could not be used.
    #[error(transparent)]
    Config(#[from] TlsConfigError),
    /// The transport was shut down.
    #[error("the transport is shut down")]
    Shutdown,
}

impl TransportError {
    pub(crate) fn io(e: &std::io::Error) -> Self {
        TransportError::Io(e.to_string())
    }
}

/// Why a connection closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed its side.
    #[error("closed by the peer")]
    PeerClosed,
    /// Closed on request of the layer above ([`SipTransport::close`](crate::SipTransport::close)).
    #[error("closed locally")]
    Local,
    /// The transport is shutting down.
    #[error("transport shut down")]
    Shutdown,
    /// Nothing received from the peer for
    /// [`TransportLimits::idle_timeout`](crate::TransportLimits::idle_timeout) (what we send
    /// does not count), or, on an inbound plain TCP connection, no first bytes within
    /// [`TransportLimits::handshake_timeout`](crate::TransportLimits::handshake_timeout).
    #[error("idle timeout")]
    IdleTimeout,
    /// RFC 5626: a keep-alive ping got no pong in time; the flow is dead.
    #[error("dead flow: no keep-alive pong")]
    DeadFlow,
    /// A write to the peer did not finish within
    /// [`TransportLimits::write_timeout`](crate::TransportLimits::write_timeout): the peer
    /// does not read what is sent to it.
    #[error("write timeout: the peer does not read")]
    WriteTimeout,
    /// A message was started and not finished within the partial-message deadline.
    #[error("slow sender: message not completed in time")]
    SlowSender,
    /// The stream could not be framed (oversize, bad Content-Length): answered when
    /// possible (513, 400), then closed.
    #[error("framing error: {0}")]
    Framing(FrameError),
    /// TLS failure after the handshake (an alert from the peer, for example a client
    /// certificate refused by a TLS 1.3 server).
    #[error("TLS: {0}")]
    Tls(TlsRefusal),
    /// A socket error (the error's text).
    #[error("I/O error: {0}")]
    Io(String),
}
