//! Explicit size limits applied while parsing, so hostile input costs bounded memory and time.

/// Bounds the parser and the stream framer enforce. Exceeding one is a
/// [`ParseError`](crate::ParseError) whose status is 513 (Message Too Large).
///
/// The defaults suit a server facing a SIP front end: Lync/Skype for Business messages with
/// multipart SDP bodies and long `ms-*` headers stay well inside them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest whole message (head and body), in bytes. Default 65 535, the largest UDP
    /// payload.
    pub max_message_size: usize,
    /// Most header fields (lines, after unfolding) in one message. Default 256.
    pub max_headers: usize,
    /// Longest single line of the head (start line or one header field after unfolding), in
    /// bytes. Default 16 384.
    pub max_line_length: usize,
}

impl Limits {
    /// The documented defaults.
    pub const DEFAULT: Limits = Limits {
        max_message_size: 65_535,
        max_headers: 256,
        max_line_length: 16_384,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}
