//! Stream framing for TCP and TLS: cut a byte stream into whole SIP messages and RFC 5626
//! keep-alives, without I/O.
//!
//! On a stream the only delimiter of a message is its head's empty line followed by exactly
//! `Content-Length` bytes of body, so Content-Length is mandatory (RFC 3261 §18.3). The
//! [`StreamFramer`] accepts bytes as they arrive, at any boundary, and yields [`Frame`]s:
//! the frames are the same whatever the read boundaries are.
//!
//! ```
//! use sip_core::framer::{Frame, StreamFramer};
//! use sip_core::Limits;
//!
//! let mut framer = StreamFramer::new(Limits::default());
//! framer.push(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 0\r\n\r\n\r\n\r\nOPT");
//! assert!(matches!(framer.next_frame(), Ok(Some(Frame::Message(_)))));
//! assert_eq!(framer.next_frame(), Ok(Some(Frame::KeepAlivePing)));
//! assert_eq!(framer.next_frame(), Ok(None)); // "OPT" is the start of the next message
//! assert!(framer.has_partial());
//! ```
//!
//! ## What it checks, and what it does not
//!
//! The framer finds the end of the head (an empty line; CRLF, or a bare LF tolerated) with
//! `memchr`, walks the head's lines once, counts header fields, measures each (unfolded) field
//! against [`Limits::max_line_length`], and reads `Content-Length` (long name or compact `l`,
//! any case, whitespace before the colon, folded values). It does not parse the start line or
//! any other header: [`Frame::Message`] is handed to the codec
//! (`SipMessage::parse_framed`), which does.
//!
//! Every [`FrameError`] is fatal for the connection: after one the stream has lost its
//! framing, and the framer refuses further work with [`FrameError::Failed`]. Errors found once
//! the whole head is in carry the head, so the transport can answer a request (513 for size
//! limits, 400 for a bad Content-Length) before it closes. Content-Length errors are reported
//! when the empty line arrives, so they always carry the head.
//!
//! ## Keep-alives (RFC 5626 §3.5.1)
//!
//! Between messages, CRLF CRLF is a ping ([`Frame::KeepAlivePing`], answer it with a single
//! CRLF) and a lone CRLF is a pong ([`Frame::KeepAlivePong`]). A lone CRLF could be the first
//! half of a ping, so the framer waits for the next byte before calling it a pong — unless the
//! owner said it is waiting for a pong ([`StreamFramer::expect_pong`], after sending a ping),
//! in which case the first CRLF is the pong at once. Stray bare LFs between messages are
//! skipped.
//!
//! ## Memory
//!
//! The framer never holds more than one message's worth of bytes plus what the last
//! [`push`](StreamFramer::push) added: a pending message larger than
//! [`Limits::max_message_size`] is refused as soon as that is known (from Content-Length, or
//! from the head alone growing past the limit).

use bytes::{Bytes, BytesMut};

use crate::{Limits, ParseError};

/// One unit cut from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Exactly one message: head, empty line and `Content-Length` bytes of body. Not yet
    /// parsed beyond framing.
    Message(Bytes),
    /// RFC 5626 ping (CRLF CRLF between messages): answer with a single CRLF.
    KeepAlivePing,
    /// RFC 5626 pong (a single CRLF between messages).
    KeepAlivePong,
}

/// Why a stream cannot be framed. Every variant is fatal for the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The head has no Content-Length, which streams require (RFC 3261 §18.3).
    #[error("no Content-Length header (mandatory on streams, RFC 3261 §18.3)")]
    MissingContentLength {
        /// The head (start line, headers and empty line).
        head: Bytes,
    },
    /// Two Content-Length headers with different values.
    #[error("Content-Length headers disagree")]
    ConflictingContentLength {
        /// The head (start line, headers and empty line).
        head: Bytes,
    },
    /// A Content-Length value that is not a non-negative decimal number.
    #[error("Content-Length is not a non-negative decimal number")]
    InvalidContentLength {
        /// The head (start line, headers and empty line).
        head: Bytes,
    },
    /// The message is larger than [`Limits::max_message_size`].
    #[error("message exceeds {limit} bytes")]
    TooLarge {
        /// The limit that was exceeded.
        limit: usize,
        /// The head, when all of it had been received.
        head: Option<Bytes>,
    },
    /// More header fields than [`Limits::max_headers`].
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The limit that was exceeded.
        limit: usize,
        /// The head, when all of it had been received.
        head: Option<Bytes>,
    },
    /// A line (after unfolding) longer than [`Limits::max_line_length`].
    #[error("line longer than {limit} bytes")]
    LineTooLong {
        /// The limit that was exceeded.
        limit: usize,
        /// The head, when all of it had been received.
        head: Option<Bytes>,
    },
    /// An earlier error already made the stream unusable.
    #[error("the stream lost its framing after an earlier error")]
    Failed,
}

impl FrameError {
    /// The status code to answer a request refused for this reason with: 513 for size
    /// limits, 400 for Content-Length errors, 500 for [`FrameError::Failed`] (never sent: the
    /// connection is gone by then).
    pub fn status(&self) -> u16 {
        match self {
            FrameError::TooLarge { .. }
            | FrameError::TooManyHeaders { .. }
            | FrameError::LineTooLong { .. } => 513,
            FrameError::Failed => 500,
            _ => 400,
        }
    }

    /// The reason phrase that goes with [`status`](Self::status).
    pub fn reason(&self) -> &'static str {
        match self.status() {
            513 => "Message Too Large",
            400 => "Bad Request",
            _ => "Server Internal Error",
        }
    }

    /// The complete head of the refused message, when it had been received: parse it with
    /// `SipMessage::parse_head` to answer a request before closing.
    pub fn head(&self) -> Option<&Bytes> {
        match self {
            FrameError::MissingContentLength { head }
            | FrameError::ConflictingContentLength { head }
            | FrameError::InvalidContentLength { head } => Some(head),
            FrameError::TooLarge { head, .. }
            | FrameError::TooManyHeaders { head, .. }
            | FrameError::LineTooLong { head, .. } => head.as_ref(),
            FrameError::Failed => None,
        }
    }

    /// The codec's name for the same refusal.
    pub fn to_parse_error(&self) -> ParseError {
        match self {
            FrameError::MissingContentLength { .. } => {
                ParseError::ContentLength("missing on a stream")
            }
            FrameError::ConflictingContentLength { .. } => {
                ParseError::ContentLength("conflicting values")
            }
            FrameError::InvalidContentLength { .. } | FrameError::Failed => {
                ParseError::ContentLength("not a non-negative number")
            }
            FrameError::TooLarge { limit, .. } => ParseError::TooLarge { limit: *limit },
            FrameError::TooManyHeaders { limit, .. } => {
                ParseError::TooManyHeaders { limit: *limit }
            }
            FrameError::LineTooLong { limit, .. } => ParseError::LineTooLong { limit: *limit },
        }
    }
}

/// Where the framer is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between messages: keep-alives or the first byte of a message expected.
    Idle,
    /// Reading the head of a message that starts at offset 0 of the buffer.
    Head(HeadScan),
    /// The head is `head_len` bytes; waiting for `total` bytes in all.
    Body { total: usize },
    /// A fatal error happened.
    Failed,
}

/// Progress of the walk over a head's lines; all offsets are from the message start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HeadScan {
    /// Start of the line not yet terminated.
    line_start: usize,
    /// Start of the logical field (start line or header) being read, if any.
    field_start: Option<usize>,
    /// Whether the start line was seen (fields after it are headers).
    seen_start_line: bool,
    /// Header fields completed so far.
    headers: usize,
    /// Content-Length found so far.
    content_length: Option<usize>,
    /// A Content-Length too large for `usize` was seen.
    content_length_huge: bool,
    /// A bad Content-Length, reported once the head is complete (so the error carries it).
    problem: Option<ClProblem>,
}

/// A Content-Length problem found before the end of the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClProblem {
    Conflict,
    Invalid,
}

impl HeadScan {
    const NEW: HeadScan = HeadScan {
        line_start: 0,
        field_start: None,
        seen_start_line: false,
        headers: 0,
        content_length: None,
        content_length_huge: false,
        problem: None,
    };
}

/// Cuts a TCP/TLS byte stream into SIP messages and keep-alives. No I/O: feed it with
/// [`push`](Self::push) (or read straight into [`buffer_mut`](Self::buffer_mut)) and drain it
/// with [`next_frame`](Self::next_frame) until that returns `Ok(None)`.
#[derive(Debug)]
pub struct StreamFramer {
    buf: BytesMut,
    limits: Limits,
    state: State,
    expect_pong: bool,
}

impl StreamFramer {
    /// A framer enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        StreamFramer {
            buf: BytesMut::new(),
            limits,
            state: State::Idle,
            expect_pong: false,
        }
    }

    /// The limits this framer enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Appends received bytes (the one copy the framer makes). Ignored after a fatal error.
    pub fn push(&mut self, data: &[u8]) {
        if self.state != State::Failed {
            self.buf.extend_from_slice(data);
        }
    }

    /// The receive buffer, for reading from a socket straight into it (e.g. tokio's
    /// `read_buf`) without the copy [`push`](Self::push) makes. Only append to it; the
    /// framer owns what is already there. Reserve before reading so each read is bounded.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Bytes held and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether part of a message has been received but not all of it: the transport gives a
    /// slow sender a deadline while this is true. Pending CR/LF bytes between messages (a
    /// keep-alive not yet complete) do not count.
    pub fn has_partial(&self) -> bool {
        match self.state {
            State::Idle => self.buf.iter().any(|&b| b != b'\r' && b != b'\n'),
            State::Head(_) | State::Body { .. } => true,
            State::Failed => false,
        }
    }

    /// Says a ping was sent, so the next CRLF between messages is a pong and is reported at
    /// once (without waiting to see whether a second CRLF follows). Cleared when the pong
    /// arrives.
    pub fn expect_pong(&mut self) {
        self.expect_pong = true;
    }

    /// Says the pong [`expect_pong`](Self::expect_pong) announced will not be waited for
    /// any more (a peer that does not answer pings): a CRLF is again read as a pong only if
    /// no second CRLF follows, so a ping the peer sends later is still seen as a ping.
    pub fn forget_pong(&mut self) {
        self.expect_pong = false;
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed, or a fatal error.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        loop {
            match self.state {
                State::Failed => return Err(FrameError::Failed),
                State::Idle => match self.idle()? {
                    Step::Frame(f) => return Ok(Some(f)),
                    Step::NeedMore => return Ok(None),
                    Step::Continue => {}
                },
                State::Head(scan) => match self.scan_head(scan) {
                    Ok(Step::Continue) => {}
                    Ok(Step::NeedMore) => return Ok(None),
                    Ok(Step::Frame(f)) => return Ok(Some(f)),
                    Err(e) => return Err(self.fail(e)),
                },
                State::Body { total } => {
                    if self.buf.len() < total {
                        return Ok(None);
                    }
                    self.state = State::Idle;
                    return Ok(Some(Frame::Message(self.buf.split_to(total).freeze())));
                }
            }
        }
    }

    fn fail(&mut self, e: FrameError) -> FrameError {
        self.state = State::Failed;
        self.buf = BytesMut::new();
        e
    }

    /// Between messages: keep-alives, stray LFs, or the start of a message.
    fn idle(&mut self) -> Result<Step, FrameError> {
        let at = |i: usize| self.buf.get(i).copied();
        let (b0, b1, b2, b3) = (at(0), at(1), at(2), at(3));
        let (consume, step) = match (b0, b1) {
            (None, _) | (Some(b'\r'), None) => (0, Step::NeedMore),
            (Some(b'\n'), _) => (1, Step::Continue),
            (Some(b'\r'), Some(b'\n')) if self.expect_pong => {
                self.expect_pong = false;
                (2, Step::Frame(Frame::KeepAlivePong))
            }
            (Some(b'\r'), Some(b'\n')) => match (b2, b3) {
                (None, _) | (Some(b'\r'), None) => (0, Step::NeedMore),
                (Some(b'\r'), Some(b'\n')) => (4, Step::Frame(Frame::KeepAlivePing)),
                _ => (2, Step::Frame(Frame::KeepAlivePong)),
            },
            // Anything else (a CR not followed by LF included) starts a message; the codec
            // refuses it if it is malformed.
            _ => {
                self.state = State::Head(HeadScan::NEW);
                (0, Step::Continue)
            }
        };
        let _ = self.buf.split_to(consume);
        Ok(step)
    }

    /// Walks the lines of the head received so far.
    fn scan_head(&mut self, mut scan: HeadScan) -> Result<Step, FrameError> {
        let limits = self.limits;
        loop {
            let Some(rel) = memchr::memchr(b'\n', &self.buf[scan.line_start..]) else {
                // No complete line: check what is pending against the limits. A line that
                // starts with whitespace continues the open field; any other starts a new one
                // (the open field ended where it begins). A CR at the very end may be the
                // line's own, its LF still to come.
                let len = self.buf.len();
                let continues = matches!(self.buf.get(scan.line_start), Some(b' ' | b'\t'));
                let field_start = match scan.field_start {
                    Some(open) if continues => open,
                    _ => scan.line_start,
                };
                let pending_cr = usize::from(self.buf.last() == Some(&b'\r'));
                let line_len = len - field_start - pending_cr;
                self.state = State::Head(scan);
                if line_len > limits.max_line_length {
                    return Err(FrameError::LineTooLong {
                        limit: limits.max_line_length,
                        head: None,
                    });
                }
                if len > limits.max_message_size {
                    return Err(FrameError::TooLarge {
                        limit: limits.max_message_size,
                        head: None,
                    });
                }
                return Ok(Step::NeedMore);
            };
            let lf = scan.line_start + rel;
            let line = &self.buf[scan.line_start..lf];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let empty = line.is_empty();
            let continuation =
                !empty && matches!(line[0], b' ' | b'\t') && scan.field_start.is_some();
            if !continuation {
                // The previous field (if any) is complete.
                if let Some(start) = scan.field_start.take() {
                    let field_end = scan.line_start;
                    self.finish_field(&mut scan, start, field_end)?;
                }
                if !empty {
                    scan.field_start = Some(scan.line_start);
                }
            }
            // Unfolded length of the current field, CRLF excluded.
            if let Some(start) = scan.field_start {
                if lf + 1 - start > limits.max_line_length + 2 {
                    return Err(self.limit_error(FrameError::LineTooLong {
                        limit: limits.max_line_length,
                        head: None,
                    }));
                }
            }
            scan.line_start = lf + 1;
            if scan.line_start > limits.max_message_size {
                return Err(self.limit_error(FrameError::TooLarge {
                    limit: limits.max_message_size,
                    head: None,
                }));
            }
            if empty {
                return self.head_done(scan);
            }
        }
    }

    /// A field `[start, end)` (CRLF included, folded lines included) is complete.
    fn finish_field(
        &mut self,
        scan: &mut HeadScan,
        start: usize,
        end: usize,
    ) -> Result<(), FrameError> {
        if !scan.seen_start_line {
            scan.seen_start_line = true;
            return Ok(());
        }
        scan.headers += 1;
        if scan.headers > self.limits.max_headers {
            return Err(self.limit_error(FrameError::TooManyHeaders {
                limit: self.limits.max_headers,
                head: None,
            }));
        }
        let field = &self.buf[start..end];
        let Some(value) = content_length_value(field) else {
            return Ok(());
        };
        match parse_decimal(value) {
            Decimal::Value(n) => match scan.content_length {
                Some(prev) if prev != n => scan.problem = Some(ClProblem::Conflict),
                _ => scan.content_length = Some(n),
            },
            Decimal::Huge => match scan.content_length {
                Some(_) => scan.problem = Some(ClProblem::Conflict),
                None => scan.content_length_huge = true,
            },
            Decimal::Invalid => scan.problem = Some(ClProblem::Invalid),
        }
        Ok(())
    }

    /// Completes a limit error with the head, when the whole head is already buffered.
    fn limit_error(&self, e: FrameError) -> FrameError {
        let head = self.find_head();
        match e {
            FrameError::TooLarge { limit, .. } => FrameError::TooLarge { limit, head },
            FrameError::TooManyHeaders { limit, .. } => FrameError::TooManyHeaders { limit, head },
            FrameError::LineTooLong { limit, .. } => FrameError::LineTooLong { limit, head },
            other => other,
        }
    }

    /// The head of the message at the start of the buffer, if its empty line was received.
    fn find_head(&self) -> Option<Bytes> {
        let end = memchr::memmem::find(&self.buf, b"\r\n\r\n").map(|i| i + 4)?;
        Some(Bytes::copy_from_slice(&self.buf[..end]))
    }

    /// The empty line was read: decide the message length.
    fn head_done(&mut self, scan: HeadScan) -> Result<Step, FrameError> {
        let head_len = scan.line_start;
        let head = || Bytes::copy_from_slice(&self.buf[..head_len]);
        let limit = self.limits.max_message_size;
        match scan.problem {
            Some(ClProblem::Conflict) => {
                return Err(FrameError::ConflictingContentLength { head: head() })
            }
            Some(ClProblem::Invalid) => {
                return Err(FrameError::InvalidContentLength { head: head() })
            }
            None => {}
        }
        if scan.content_length_huge {
            return Err(FrameError::TooLarge {
                limit,
                head: Some(head()),
            });
        }
        let Some(cl) = scan.content_length else {
            return Err(FrameError::MissingContentLength { head: head() });
        };
        let total = head_len.saturating_add(cl);
        if total > limit {
            return Err(FrameError::TooLarge {
                limit,
                head: Some(head()),
            });
        }
        self.state = State::Body { total };
        Ok(Step::Continue)
    }
}

/// What one step of the state machine produced.
enum Step {
    Frame(Frame),
    NeedMore,
    Continue,
}

/// The value of a `Content-Length` / `l` field (name matched in any case, whitespace allowed
/// before the colon), or `None` for any other field.
fn content_length_value(field: &[u8]) -> Option<&[u8]> {
    let colon = memchr::memchr(b':', field)?;
    let name = trim_lws(&field[..colon]);
    if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"l") {
        Some(&field[colon + 1..])
    } else {
        None
    }
}

fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn trim_lws(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_lws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_lws(b)).map_or(start, |i| i + 1);
    &s[start..end]
}

enum Decimal {
    Value(usize),
    Huge,
    Invalid,
}

/// A Content-Length value: `1*DIGIT` surrounded by linear white space (folds included).
fn parse_decimal(value: &[u8]) -> Decimal {
    let digits = trim_lws(value);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Decimal::Invalid;
    }
    let mut n: usize = 0;
    for &d in digits {
        match n
            .checked_mul(10)
            .and_then(|n| n.checked_add(usize::from(d - b'0')))
        {
            Some(v) => n = v,
            None => return Decimal::Huge,
        }
    }
    Decimal::Value(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(data: &[u8]) -> Vec<Result<Frame, FrameError>> {
        let mut f = StreamFramer::new(Limits::default());
        f.push(data);
        let mut out = Vec::new();
        loop {
            match f.next_frame() {
                Ok(Some(fr)) => out.push(Ok(fr)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Err(e));
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn one_message() {
        let m = b"MESSAGE sip:a@b SIP/2.0\r\nl : 3\r\n\r\nabc";
        assert_eq!(frames(m), vec![Ok(Frame::Message(Bytes::from_static(m)))]);
    }

    #[test]
    fn folded_content_length() {
        let m = b"MESSAGE sip:a@b SIP/2.0\r\nCONTENT-LENGTH\t:\r\n  3\r\n\r\nabc";
        assert_eq!(frames(m), vec![Ok(Frame::Message(Bytes::from_static(m)))]);
    }

    #[test]
    fn decimal() {
        assert!(matches!(parse_decimal(b" 12 "), Decimal::Value(12)));
        assert!(matches!(parse_decimal(b"-1"), Decimal::Invalid));
        assert!(matches!(parse_decimal(b""), Decimal::Invalid));
        assert!(matches!(
            parse_decimal(b"99999999999999999999999999"),
            Decimal::Huge
        ));
    }
}
