//! Why a message was refused, and which SIP response tells the peer.
//!
//! Every refusal of the codec is a [`ParseError`]. A server that cannot parse a request
//! answers with [`ParseError::status`] and [`ParseError::reason`] (RFC 3261 §21.4), and may
//! put the `Display` text in a Warning header ([`Warning::format`](crate::Warning::format),
//! code 399) so the peer learns why; `transport-tls` does.

/// A SIP message (or one of its parts) could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The bytes end before the message does (stream framing: wait for more).
    #[error("incomplete message")]
    Incomplete,
    /// The first line is neither a Request-Line nor a Status-Line.
    #[error("malformed start line: {0}")]
    StartLine(&'static str),
    /// The message names a SIP version other than SIP/2.0.
    #[error("SIP version not supported")]
    Version,
    /// A status code outside 100–699 or not exactly three digits.
    #[error("status code is not three digits in 100-699")]
    StatusCode,
    /// A header line without a colon or with a name that is not a token; what is wrong.
    #[error("malformed header line: {0}")]
    HeaderLine(&'static str),
    /// A header value that does not follow its grammar.
    #[error("malformed {header} header: {why}")]
    Header {
        /// The header's canonical name.
        header: &'static str,
        /// What was wrong.
        why: &'static str,
    },
    /// A URI that does not follow RFC 3261 §25 / RFC 3966.
    #[error("malformed URI: {0}")]
    Uri(&'static str),
    /// A header RFC 3261 §8.1.1 requires is missing.
    #[error("missing mandatory header {0}")]
    Missing(&'static str),
    /// A header that may appear once appears more than once.
    #[error("header {0} appears more than once")]
    Repeated(&'static str),
    /// The CSeq method differs from the request method.
    #[error("CSeq method does not match the request method")]
    CSeqMethod,
    /// Content-Length is missing on a stream, or disagrees with the bytes received.
    #[error("bad Content-Length: {0}")]
    ContentLength(&'static str),
    /// The message is larger than [`Limits::max_message_size`](crate::Limits).
    #[error("message exceeds {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// More header fields than [`Limits::max_headers`](crate::Limits).
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// A header value holds a C0 control character (NUL, a CR not followed by LF …), which
    /// RFC 3261 §25 allows in none outside a quoted-pair; only HTAB is whitespace.
    #[error("control character 0x{0:02x} in a header value")]
    ControlCharacter(u8),
    /// A line longer than [`Limits::max_line_length`](crate::Limits).
    #[error("line longer than {limit} bytes")]
    LineTooLong {
        /// The limit that was exceeded.
        limit: usize,
    },
}

impl ParseError {
    /// The status code a server answers a request refused for this reason with.
    ///
    /// 505 for an unknown version, 513 for size limits, 400 for everything else. Responses
    /// that fail to parse are dropped, never answered (RFC 3261 §18.1.2).
    pub fn status(&self) -> u16 {
        match self {
            ParseError::Version => 505,
            ParseError::TooLarge { .. }
            | ParseError::TooManyHeaders { .. }
            | ParseError::LineTooLong { .. } => 513,
            _ => 400,
        }
    }

    /// The reason phrase that goes with [`status`](Self::status).
    pub fn reason(&self) -> &'static str {
        match self.status() {
            505 => "Version Not Supported",
            513 => "Message Too Large",
            _ => "Bad Request",
        }
    }

    pub(crate) fn header(header: &'static str, why: &'static str) -> Self {
        ParseError::Header { header, why }
    }

    /// A URI's refusal as one of the header it was read from, so the peer is told where
    /// the bad URI is ("malformed From header: bad IPv4 address"); other errors unchanged.
    pub(crate) fn in_header(self, header: &'static str) -> Self {
        match self {
            ParseError::Uri(why) => ParseError::Header { header, why },
            other => other,
        }
    }
}
