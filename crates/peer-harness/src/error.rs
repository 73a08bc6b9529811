//! What can go wrong while setting up or driving the real peers.

use std::path::PathBuf;
use std::time::Duration;

/// The Debian packages the harness needs, as one `apt-get install` line.
pub const INSTALL_HINT: &str =
    "apt-get install -y kamailio kamailio-tls-modules kamailio-presence-modules sip-tester";

/// An error of the harness. Every variant that involves a peer process carries enough of its
/// log to see why without opening files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// A program the harness runs is not installed.
    #[error("`{program}` was not found (looked in {searched}); install it as root with: {hint}")]
    MissingBinary {
        /// The program's name.
        program: String,
        /// Where it was looked for.
        searched: String,
        /// How to install it.
        hint: String,
    },
    /// Kamailio could not load a module: its package is missing.
    #[error("{name}: Kamailio could not load a module (is a package missing? install with: {hint})\n--- log {log_path} (tail) ---\n{log_tail}")]
    MissingModule {
        /// The instance.
        name: String,
        /// How to install the modules.
        hint: String,
        /// The instance's log file.
        log_path: PathBuf,
        /// The end of the instance's log.
        log_tail: String,
    },
    /// A file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Making a certificate failed.
    #[error("certificate generation failed: {0}")]
    Certificate(#[from] rcgen::Error),
    /// A peer did not become ready within the allowed time.
    #[error("{name} did not answer within {waited:?} ({last_error})\n--- log {log_path} (tail) ---\n{log_tail}")]
    NotReady {
        /// The instance.
        name: String,
        /// How long the harness waited.
        waited: Duration,
        /// The last failure seen while probing.
        last_error: String,
        /// The instance's log file.
        log_path: PathBuf,
        /// The end of the log.
        log_tail: String,
    },
    /// A peer process exited while it was expected to run.
    #[error("{name} exited early ({status})\n--- log {log_path} (tail) ---\n{log_tail}")]
    Exited {
        /// The instance.
        name: String,
        /// Its exit status, as text.
        status: String,
        /// The instance's log file.
        log_path: PathBuf,
        /// The end of the log.
        log_tail: String,
    },
    /// A port chosen at run time was taken by someone else before the peer could bind it.
    #[error("{name}: a port chosen at run time was taken before the peer bound it")]
    PortInUse {
        /// The instance.
        name: String,
    },
    /// Waiting for a message or a process timed out.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        waited: Duration,
    },
    /// A SIP message could not be built or parsed, or a stream could not be framed.
    #[error("SIP: {0}")]
    Sip(String),
    /// A SIP exchange gave an unexpected answer.
    #[error("unexpected SIP answer: {0}")]
    Unexpected(String),
}

impl HarnessError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        HarnessError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The harness's result type.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
