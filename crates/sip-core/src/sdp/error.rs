//! Why an SDP body or a value handed to the SDP API was refused.

/// An SDP body could not be accepted, or a value given to the mutation API would not make a
/// well-formed line. `line` fields are 1-based line numbers in the parsed body (0 when the
/// error comes from the mutation or builder API rather than from parsing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdpError {
    /// The body is empty (or holds only line ends).
    #[error("empty SDP body")]
    Empty,
    /// The body is larger than [`SdpLimits::max_body_size`](crate::sdp::SdpLimits).
    #[error("SDP body of {size} bytes exceeds the limit of {limit}")]
    BodyTooLarge {
        /// Size of the body in bytes.
        size: usize,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The body has more lines than [`SdpLimits::max_lines`](crate::sdp::SdpLimits).
    #[error("SDP body has more than {limit} lines")]
    TooManyLines {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The body has more `m=` sections than [`SdpLimits::max_media`](crate::sdp::SdpLimits).
    #[error("line {line}: more than {limit} media sections")]
    TooManyMedia {
        /// Line of the first `m=` over the limit.
        line: usize,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// A line is longer than [`SdpLimits::max_line_length`](crate::sdp::SdpLimits).
    #[error("line {line}: longer than {limit} bytes")]
    LineTooLong {
        /// The offending line.
        line: usize,
        /// The limit that was exceeded.
        limit: usize,
    },
    /// A line is not valid UTF-8 (this model keeps SDP text as UTF-8, RFC 8866's default).
    #[error("line {line}: not valid UTF-8")]
    NotUtf8 {
        /// The offending line.
        line: usize,
    },
    /// A line (or a value for one) holds NUL, a bare CR or another forbidden control byte.
    #[error("line {line}: forbidden control character")]
    ControlCharacter {
        /// The offending line.
        line: usize,
    },
    /// A line is not of the form `x=value` with `x` a single ASCII letter.
    #[error("line {line}: not of the form <letter>=<value>")]
    MalformedLine {
        /// The offending line.
        line: usize,
    },
    /// An empty line before the end of the body.
    #[error("line {line}: empty line inside the body")]
    EmptyLine {
        /// The offending line.
        line: usize,
    },
    /// The body does not start with `v=`.
    #[error("line 1: the first line must be v=")]
    VersionNotFirst,
    /// `v=` has a value other than `0`.
    #[error("line {line}: unsupported SDP version")]
    UnsupportedVersion {
        /// The offending line.
        line: usize,
    },
    /// A required line (`o=`, `s=` or `t=`) is missing from the session section.
    #[error("missing {letter}= line")]
    Missing {
        /// Letter of the missing line.
        letter: char,
    },
    /// `o=` is not the second line or `s=` not the third (RFC 8866 §5 order).
    #[error("line {line}: {letter}= out of order")]
    OutOfOrder {
        /// The offending line.
        line: usize,
        /// Its letter.
        letter: char,
    },
    /// A line that may appear once (`v=`, `o=`, `s=`, a session-level `c=`) appears again.
    #[error("line {line}: {letter}= repeated")]
    Repeated {
        /// The offending line.
        line: usize,
        /// Its letter.
        letter: char,
    },
    /// A session-level line type (`v o s u e p t r z`) appears after the first `m=`.
    #[error("line {line}: {letter}= is not allowed in a media section")]
    NotAllowedInMedia {
        /// The offending line.
        line: usize,
        /// Its letter.
        letter: char,
    },
    /// `o=`, `c=`, `m=` or `t=` does not follow its grammar.
    #[error("line {line}: malformed {letter}= line: {why}")]
    InvalidField {
        /// The offending line.
        line: usize,
        /// Its letter.
        letter: char,
        /// What was wrong.
        why: &'static str,
    },
    /// A number does not fit its type (e.g. a port above 65535, a 30-digit version).
    #[error("line {line}: {field} out of range")]
    NumberOutOfRange {
        /// The offending line.
        line: usize,
        /// Which field.
        field: &'static str,
    },
    /// An `a=` line whose attribute name is empty or not a token.
    #[error("line {line}: malformed attribute name")]
    InvalidAttribute {
        /// The offending line.
        line: usize,
    },
    /// A value given to the builder or mutation API would not make a valid line.
    #[error("invalid value for {what}: {why}")]
    InvalidValue {
        /// Which value.
        what: &'static str,
        /// What was wrong.
        why: &'static str,
    },
}
