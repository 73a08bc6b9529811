//! Explicit bounds on SDP input, so a hostile body costs bounded memory and time.

/// Bounds [`SessionDescription::parse_with_limits`](crate::sdp::SessionDescription::parse_with_limits)
/// enforces. Exceeding one is a typed [`SdpError`](crate::sdp::SdpError), never a panic.
///
/// The defaults are far above real offers (a Lync/Skype for Business audio/video offer with
/// ICE candidates and `x-ms-*` attributes is about 4 KiB and 100 lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdpLimits {
    /// Largest body, in bytes. Default 65 536 (64 KiB).
    pub max_body_size: usize,
    /// Most lines in one body. Default 1024.
    pub max_lines: usize,
    /// Most `m=` sections in one body. Default 64.
    pub max_media: usize,
    /// Longest line, in bytes, without its line end. Default 4096 (4 KiB).
    pub max_line_length: usize,
}

impl SdpLimits {
    /// The documented defaults.
    pub const DEFAULT: SdpLimits = SdpLimits {
        max_body_size: 64 * 1024,
        max_lines: 1024,
        max_media: 64,
        max_line_length: 4096,
    };
}

impl Default for SdpLimits {
    fn default() -> Self {
        SdpLimits::DEFAULT
    }
}
