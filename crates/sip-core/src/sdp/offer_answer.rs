//! SDP offer/answer (RFC 3264) over the [`SessionDescription`] model: answers built from a
//! local capability set, and [`OfferAnswer`], the per-dialog negotiation state with hold and
//! resume (RFC 3264 §8.4, RFC 6337) and session versions.
//!
//! ## Answering (RFC 3264 §6)
//!
//! One `m=` line per offered line, same order. Each offered line is matched to the first
//! unused [`MediaCapability`] of the same media type whose protocols accept the offered one
//! (see [`MediaCapability::protos`]: without a list, only the plain default protocol,
//! `RTP/AVP` or `sip` for `message`; secure and MSRP profiles only when listed). Then:
//!
//! - RTP (`proto` contains `RTP`): the codecs in both, in the offer's order and with the
//!   offer's payload types (each listed once); a codec matches by encoding name
//!   (case-insensitive), clock rate and channel count (absent = 1); an offered static
//!   payload type (0–95) without `a=rtpmap` matches by number (RFC 3551's table, or a local
//!   codec declaring that number). Each answered payload type keeps the offer's `a=fmtp`
//!   (RFC 3264 §6.1: a payload type names one format, its parameters included, so H.264 at
//!   97 with `packetization-mode=1` and at 98 with `packetization-mode=0` stay distinct);
//!   [`Codec::fmtp`] is only written in offers.
//! - `message` (MSRP, and Lync/Skype for Business IM: `m=message 5060 sip null`): the
//!   `a=accept-types` both sides accept, in the offer's order; formats echoed. Each offered
//!   type meets each local one: `*` covers everything, `type/*` covers `type/*` and every
//!   subtype of `type`, a concrete type covers itself (case-insensitive); when one covers the
//!   other the narrower is kept (`*` ∩ `text/*` = `text/*`, `text/*` ∩ `text/plain` =
//!   `text/plain`), else nothing.
//! - anything else: the formats in both, compared as text.
//!
//! A line with nothing in common, or offered with port 0, or with no capability left, is
//! answered with port 0 and the offer's first format. Directions: the answer sends only if
//! the offer receives and the local side wants to send, and receives only if the offer sends
//! and the local side wants to receive, so `sendonly` → `recvonly`, `recvonly` → `sendonly`,
//! `inactive` → `inactive`, `sendrecv` → what the local side wants. An offered line whose
//! connection address is `0.0.0.0` (the RFC 2543 hold, RFC 3264 §8.4: send nothing to the
//! peer) counts as not receiving, so `sendrecv` there is answered like `sendonly`. Every
//! accepted line carries its direction attribute explicitly.
//!
//! ## Changing capabilities
//!
//! [`OfferAnswer::capabilities_mut`] may change, reorder, add or remove capabilities between
//! exchanges. A negotiated line stays with the capability at the same position while that
//! one still has the line's media type and accepts its protocol; otherwise it is matched
//! again like a new line (first unused suitable capability). A line left without a
//! capability is rejected (port 0) in the next answer and removed (port 0, RFC 3264 §8.2)
//! in the next re-offer. Re-offers keep the negotiated formats; only the directions and
//! which lines stay enabled follow the capabilities.
//!
//! ## Versions
//!
//! [`OfferAnswer`] keeps the last description it sent: a new one whose content (apart from
//! the version) is the same is sent with the same `o=` version; any change bumps it by one.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use super::{
    Connection, Direction, Media, MediaDescription, Origin, Rtpmap, SdpError, SessionDescription,
};

/// Why an offer or answer was refused; [`status_code`](Self::status_code) says which SIP
/// response fits (488 Not Acceptable Here for unusable SDP, 491 Request Pending for glare).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OfferAnswerError {
    /// Every offered stream had to be rejected: answer 488.
    #[error("no acceptable media in the offer (488)")]
    NoAcceptableMedia,
    /// The answer's `m=` line count differs from the offer's (RFC 3264 §6): 488.
    #[error("answer has {answered} m= lines for {offered} offered (488)")]
    MediaCountMismatch {
        /// m= lines in the offer.
        offered: usize,
        /// m= lines in the answer.
        answered: usize,
    },
    /// An answer line's media type differs from the offered line's: 488.
    #[error("m= line {index}: media type changed in the answer (488)")]
    MediaTypeMismatch {
        /// 0-based m= line index.
        index: usize,
    },
    /// An accepted answer line lists none of the offered formats: 488. (RFC 3264 §6.1 lets
    /// an answer add formats the offer did not list, but an accepted stream needs at least
    /// one that was offered.)
    #[error("m= line {index}: none of the answered formats ({format} …) was offered (488)")]
    FormatNotOffered {
        /// 0-based m= line index.
        index: usize,
        /// The first answered format.
        format: String,
    },
    /// An answer line's direction is not allowed by the offered one (e.g. `sendrecv` to
    /// `sendonly`): 488.
    #[error("m= line {index}: answered {answered} to {offered} (488)")]
    DirectionMismatch {
        /// 0-based m= line index.
        index: usize,
        /// The offered direction.
        offered: Direction,
        /// The answered direction.
        answered: Direction,
    },
    /// A stream offered with port 0 was answered with a port (RFC 3264 §6 forbids it): 488.
    #[error("m= line {index}: offered with port 0 but answered enabled (488)")]
    EnabledRejectedStream {
        /// 0-based m= line index.
        index: usize,
    },
    /// A re-offer has fewer m= lines than the session, or changed the media type of an
    /// active line (RFC 3264 §8): 488.
    #[error("re-offer removes or retypes m= line {index} (488)")]
    ReofferMismatch {
        /// 0-based m= line index.
        index: usize,
    },
    /// An offer arrived while ours is unanswered (glare): 491.
    #[error("an offer is already pending (491)")]
    OfferPending,
    /// An answer arrived but no offer is pending: ignore it (500 if it came in a request).
    #[error("no offer is pending")]
    NoOfferPending,
    /// The SDP (or a local capability) could not be written.
    #[error("SDP: {0}")]
    Sdp(#[from] SdpError),
}

impl OfferAnswerError {
    /// The SIP status a UAS answers with when this error comes from a received offer.
    pub fn status_code(&self) -> u16 {
        match self {
            OfferAnswerError::OfferPending => 491,
            OfferAnswerError::NoOfferPending | OfferAnswerError::Sdp(_) => 500,
            _ => 488,
        }
    }
}

/// One codec the local side supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codec {
    /// Encoding name (`PCMU`, `opus`, `telephone-event`, …), compared case-insensitively.
    pub encoding_name: String,
    /// Clock rate in Hz.
    pub clock_rate: u32,
    /// Channel count (`None` = 1).
    pub channels: Option<u32>,
    /// `a=fmtp` parameters the local side writes in its offers (`0-16`, `useinbandfec=1`,
    /// …). Answers keep the offered payload type's own `a=fmtp` instead (see the module
    /// docs).
    pub fmtp: Option<String>,
    /// The payload type to use in offers (static codecs: their RFC 3551 number). Offers give
    /// dynamic numbers from 96 to codecs without one; answers always keep the offer's.
    pub payload_type: Option<u8>,
}

impl Codec {
    /// A codec by name and clock rate.
    pub fn new(encoding_name: impl Into<String>, clock_rate: u32) -> Codec {
        Codec {
            encoding_name: encoding_name.into(),
            clock_rate,
            channels: None,
            fmtp: None,
            payload_type: None,
        }
    }
    /// G.711 µ-law, static payload type 0.
    pub fn pcmu() -> Codec {
        Codec::new("PCMU", 8000).with_payload_type(0)
    }
    /// G.711 A-law, static payload type 8.
    pub fn pcma() -> Codec {
        Codec::new("PCMA", 8000).with_payload_type(8)
    }
    /// G.722, static payload type 9 (clock rate 8000 by RFC 3551's historical error).
    pub fn g722() -> Codec {
        Codec::new("G722", 8000).with_payload_type(9)
    }
    /// DTMF events (RFC 4733) with events 0–16.
    pub fn telephone_event() -> Codec {
        Codec::new("telephone-event", 8000).with_fmtp("0-16")
    }
    /// Sets the channel count.
    #[must_use]
    pub fn with_channels(mut self, channels: u32) -> Codec {
        self.channels = Some(channels);
        self
    }
    /// Sets the `a=fmtp` parameters.
    #[must_use]
    pub fn with_fmtp(mut self, fmtp: impl Into<String>) -> Codec {
        self.fmtp = Some(fmtp.into());
        self
    }
    /// Sets the payload type used in offers.
    #[must_use]
    pub fn with_payload_type(mut self, payload_type: u8) -> Codec {
        self.payload_type = Some(payload_type);
        self
    }

    fn matches(&self, name: &str, clock_rate: u32, channels: Option<u32>) -> bool {
        self.encoding_name.eq_ignore_ascii_case(name)
            && self.clock_rate == clock_rate
            && self.channels.unwrap_or(1) == channels.unwrap_or(1)
    }
}

/// RFC 3551 static payload types: (number, name, clock rate, channels).
const STATIC_PAYLOAD_TYPES: &[(u8, &str, u32, u32)] = &[
    (0, "PCMU", 8000, 1),
    (3, "GSM", 8000, 1),
    (4, "G723", 8000, 1),
    (5, "DVI4", 8000, 1),
    (6, "DVI4", 16000, 1),
    (7, "LPC", 8000, 1),
    (8, "PCMA", 8000, 1),
    (9, "G722", 8000, 1),
    (10, "L16", 44100, 2),
    (11, "L16", 44100, 1),
    (12, "QCELP", 8000, 1),
    (13, "CN", 8000, 1),
    (14, "MPA", 90000, 1),
    (15, "G728", 8000, 1),
    (16, "DVI4", 11025, 1),
    (17, "DVI4", 22050, 1),
    (18, "G729", 8000, 1),
    (25, "CelB", 90000, 1),
    (26, "JPEG", 90000, 1),
    (28, "nv", 90000, 1),
    (31, "H261", 90000, 1),
    (32, "MPV", 90000, 1),
    (33, "MP2T", 90000, 1),
    (34, "H263", 90000, 1),
];

/// What the local side can do for one media stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaCapability {
    /// Media type (`audio`, `video`, `message`, …).
    pub media_type: String,
    /// The local port for this stream.
    pub port: u16,
    /// Transport protocols accepted in answers (compared case-insensitively); the first is
    /// used in offers. Empty means only the plain default protocol, also used in offers:
    /// `RTP/AVP` for a capability with codecs, `sip` for `message` (the Lync / Skype for
    /// Business `m=message <port> sip null` IM shape), `TCP` otherwise. These are the
    /// protocols this module answers completely on its own.
    ///
    /// Every other profile is accepted only when listed here: `RTP/AVPF` (it commits the
    /// media stack to RFC 4585's feedback and RTCP timing rules), secure RTP (`RTP/SAVP`,
    /// `RTP/SAVPF`, `UDP/TLS/RTP/SAVPF`) and MSRP (`TCP/MSRP`, `TCP/TLS/MSRP`). The answer
    /// then copies the offered protocol, and the application is responsible for the
    /// attributes the profile needs that this module does not write: an `a=crypto` chosen
    /// from the offered ones for SDES-SRTP (RFC 4568 §7.1.2: an answerer that accepts no
    /// crypto attribute must reject the stream), `a=fingerprint`/`a=setup` for DTLS-SRTP,
    /// `a=path` for MSRP (RFC 4975 §8), through [`attributes`](Self::attributes) or by
    /// editing the description.
    pub protos: Vec<String>,
    /// RTP codecs, in order of preference for offers.
    pub codecs: Vec<Codec>,
    /// Formats of non-RTP streams (`null` for Lync IM, `*` for MSRP).
    pub formats: Vec<String>,
    /// For `message` streams: MIME types accepted (`text/plain`, `text/*`, `*`).
    pub accept_types: Vec<String>,
    /// The direction the local side wants (`sendrecv` normally).
    pub direction: Direction,
    /// Further attributes written on this stream's line (`crypto`, `ice-ufrag`, `label`, …).
    pub attributes: Vec<(String, Option<String>)>,
}

impl MediaCapability {
    /// An RTP audio stream.
    pub fn audio(port: u16, codecs: impl IntoIterator<Item = Codec>) -> MediaCapability {
        MediaCapability::rtp("audio", port, codecs)
    }
    /// An RTP video stream.
    pub fn video(port: u16, codecs: impl IntoIterator<Item = Codec>) -> MediaCapability {
        MediaCapability::rtp("video", port, codecs)
    }
    fn rtp(kind: &str, port: u16, codecs: impl IntoIterator<Item = Codec>) -> MediaCapability {
        MediaCapability {
            media_type: kind.into(),
            port,
            protos: Vec::new(),
            codecs: codecs.into_iter().collect(),
            formats: Vec::new(),
            accept_types: Vec::new(),
            direction: Direction::SendRecv,
            attributes: Vec::new(),
        }
    }
    /// An instant-messaging stream the Lync / Skype for Business way: `m=message <port> sip
    /// null` with these accept-types. Answers accept the `sip` protocol only; MSRP needs
    /// [`with_protos`](Self::with_protos) and an `a=path` from the application.
    pub fn message<S: Into<String>>(
        port: u16,
        accept_types: impl IntoIterator<Item = S>,
    ) -> MediaCapability {
        MediaCapability {
            media_type: "message".into(),
            port,
            protos: Vec::new(),
            codecs: Vec::new(),
            formats: vec!["null".into()],
            accept_types: accept_types.into_iter().map(Into::into).collect(),
            direction: Direction::SendRecv,
            attributes: Vec::new(),
        }
    }
    /// Sets the accepted protocols (the first is offered).
    #[must_use]
    pub fn with_protos<S: Into<String>>(mut self, protos: impl IntoIterator<Item = S>) -> Self {
        self.protos = protos.into_iter().map(Into::into).collect();
        self
    }
    /// Sets the wanted direction.
    #[must_use]
    pub fn with_direction(mut self, direction: Direction) -> Self {
        self.direction = direction;
        self
    }
    /// Adds an attribute written on this stream's line.
    #[must_use]
    pub fn with_attribute(mut self, name: impl Into<String>, value: Option<&str>) -> Self {
        self.attributes.push((name.into(), value.map(String::from)));
        self
    }

    fn is_message(&self) -> bool {
        self.media_type.eq_ignore_ascii_case("message")
    }

    fn accepts_proto(&self, proto: &str) -> bool {
        if self.protos.is_empty() {
            return self.offer_proto().eq_ignore_ascii_case(proto);
        }
        self.protos.iter().any(|p| p.eq_ignore_ascii_case(proto))
    }

    fn offer_proto(&self) -> &str {
        match self.protos.first() {
            Some(p) => p,
            None if self.is_message() => "sip",
            None if self.codecs.is_empty() => "TCP",
            None => "RTP/AVP",
        }
    }
}

/// The local side: its media address and streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCapabilities {
    /// Address for `o=` and the session-level `c=` (IP or FQDN).
    pub address: String,
    /// Streams, in the order offers list them.
    pub media: Vec<MediaCapability>,
}

impl LocalCapabilities {
    /// No streams yet.
    pub fn new(address: impl Into<String>) -> LocalCapabilities {
        LocalCapabilities {
            address: address.into(),
            media: Vec::new(),
        }
    }
    /// Adds a stream.
    #[must_use]
    pub fn with_media(mut self, media: MediaCapability) -> LocalCapabilities {
        self.media.push(media);
        self
    }
}

fn is_rtp(proto: &str) -> bool {
    proto.to_ascii_uppercase().contains("RTP")
}

fn has_recv(d: Direction) -> bool {
    matches!(d, Direction::SendRecv | Direction::RecvOnly)
}

fn has_send(d: Direction) -> bool {
    matches!(d, Direction::SendRecv | Direction::SendOnly)
}

fn direction_of(send: bool, recv: bool) -> Direction {
    match (send, recv) {
        (true, true) => Direction::SendRecv,
        (true, false) => Direction::SendOnly,
        (false, true) => Direction::RecvOnly,
        (false, false) => Direction::Inactive,
    }
}

/// The direction to answer with: send only if the offerer receives and the local side wants
/// to send; receive only if the offerer sends and the local side wants to receive.
pub fn answer_direction(offered: Direction, local: Direction) -> Direction {
    direction_of(
        has_recv(offered) && has_send(local),
        has_send(offered) && has_recv(local),
    )
}

/// The direction that puts a stream on hold (RFC 3264 §8.4): stop receiving, so
/// `sendrecv` → `sendonly` and `recvonly` → `inactive`.
pub fn hold_direction(current: Direction) -> Direction {
    direction_of(has_send(current), false)
}

/// Whether the accept-types pattern `wide` covers `narrow`: `*` covers everything,
/// `type/*` covers `type/*` and every `type/subtype`, a concrete type covers itself
/// (case-insensitive).
fn accept_type_covers(wide: &str, narrow: &str) -> bool {
    if wide == "*" || wide.eq_ignore_ascii_case(narrow) {
        return true;
    }
    match (wide.strip_suffix("/*"), narrow.split_once('/')) {
        (Some(major), Some((n_major, _))) => major.eq_ignore_ascii_case(n_major),
        _ => false,
    }
}

/// The accept-types intersection described in the module docs, in the offer's order (for an
/// offered wildcard, the local types it meets in the local order); each type once.
pub fn intersect_accept_types(offered: &[&str], local: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    // What `out` holds, lower-cased: an offer of thousands of types against a local `*`
    // (60 KiB of SDP is within the limits) cost ~0.1 s of CPU per answer when each type
    // was looked for in `out` by a scan.
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    for &o in offered {
        for l in local {
            let common = if o.eq_ignore_ascii_case(l) {
                o
            } else if accept_type_covers(o, l) {
                l.as_str()
            } else if accept_type_covers(l, o) {
                o
            } else {
                continue;
            };
            if seen.insert(common.to_ascii_lowercase()) {
                out.push(common.to_owned());
            }
        }
    }
    out
}

/// What one offered line resolved to.
enum LineAnswer {
    Rejected,
    Accepted {
        capability: usize,
        line: MediaDescription,
    },
}

fn rejected_line(offered: &MediaDescription) -> Result<MediaDescription, SdpError> {
    let mut m = offered.media().clone();
    m.port = 0;
    m.port_count = None;
    m.formats.truncate(1);
    MediaDescription::new(m)
}

/// The `a=rtpmap` and `a=fmtp` lines of one offered `m=` line, read once (the first one per
/// payload type or format wins, as [`MediaDescription::rtpmap`] and
/// [`MediaDescription::fmtp`] find them), so answering costs time linear in the line's size.
struct FormatIndex<'a> {
    rtpmaps: Vec<Option<Rtpmap>>,
    fmtps: HashMap<&'a str, &'a str>,
}

impl<'a> FormatIndex<'a> {
    fn of(offered: &'a MediaDescription) -> FormatIndex<'a> {
        let mut rtpmaps: Vec<Option<Rtpmap>> = vec![None; 128];
        let mut fmtps = HashMap::new();
        for a in offered.attributes() {
            let Some(value) = a.value else { continue };
            match a.name {
                "rtpmap" => {
                    if let Some(r) = Rtpmap::parse(value) {
                        let slot = &mut rtpmaps[usize::from(r.payload_type)];
                        if slot.is_none() {
                            *slot = Some(r);
                        }
                    }
                }
                "fmtp" => {
                    // As `Fmtp::parse`, borrowing: the format, then the parameters.
                    let value = value.trim_start_matches(' ');
                    let (format, parameters) = value.split_once(' ').unwrap_or((value, ""));
                    fmtps.entry(format).or_insert(parameters);
                }
                _ => {}
            }
        }
        FormatIndex { rtpmaps, fmtps }
    }

    fn rtpmap(&self, pt: u8) -> Option<&Rtpmap> {
        self.rtpmaps.get(usize::from(pt))?.as_ref()
    }

    /// (encoding name, clock rate, channels) of an offered payload type: its `a=rtpmap`, else
    /// RFC 3551's static table.
    fn codec(&self, pt: u8) -> Option<(String, u32, Option<u32>)> {
        if let Some(r) = self.rtpmap(pt) {
            return Some((r.encoding_name.clone(), r.clock_rate, r.channels()));
        }
        STATIC_PAYLOAD_TYPES
            .iter()
            .find(|s| s.0 == pt)
            .map(|s| (s.1.to_owned(), s.2, Some(s.3)))
    }
}

fn answer_rtp(
    offered: &MediaDescription,
    cap: &MediaCapability,
    line: &mut MediaDescription,
) -> Result<bool, SdpError> {
    let index = FormatIndex::of(offered);
    let mut listed = [false; 128];
    let mut formats = Vec::new();
    let mut maps = Vec::new();
    for f in offered.formats() {
        let Ok(pt) = f.parse::<u8>() else { continue };
        // Payload types are 0–127; each is answered once even when the offer repeats it.
        match listed.get_mut(usize::from(pt)) {
            Some(seen) if !*seen => *seen = true,
            _ => continue,
        }
        let offered_map = index.rtpmap(pt);
        let by_number = (offered_map.is_none() && pt <= 95)
            .then(|| cap.codecs.iter().find(|c| c.payload_type == Some(pt)))
            .flatten();
        let found = match (by_number, index.codec(pt)) {
            (Some(c), known) => Some((c, known)),
            (None, Some(k)) => cap
                .codecs
                .iter()
                .find(|c| c.matches(&k.0, k.1, k.2))
                .map(|c| (c, Some(k))),
            (None, None) => None,
        };
        let Some((codec, known)) = found else {
            continue;
        };
        formats.push(f.clone());
        let (name, rate, channels) = known.unwrap_or_else(|| {
            (
                codec.encoding_name.clone(),
                codec.clock_rate,
                codec.channels,
            )
        });
        let mut rtpmap = Rtpmap::new(pt, name, rate);
        rtpmap.encoding_parameters = match offered_map {
            Some(r) => r.encoding_parameters.clone(),
            None => channels.filter(|&c| c != 1).map(|c| c.to_string()),
        };
        // The offered payload type's own parameters: the same number is the same format.
        let fmtp = index
            .fmtps
            .get(f.as_str())
            .filter(|p| !p.is_empty())
            .map(|p| (*p).to_owned());
        maps.push((rtpmap, fmtp));
    }
    if formats.is_empty() {
        return Ok(false);
    }
    line.set_formats(formats)?;
    // All rtpmaps first: each fmtp then lands right after its own rtpmap.
    for (rtpmap, _) in &maps {
        line.set_rtpmap(rtpmap)?;
    }
    for (rtpmap, fmtp) in maps {
        if let Some(p) = fmtp {
            line.set_fmtp(&super::Fmtp::new(rtpmap.payload_type.to_string(), p))?;
        }
    }
    Ok(true)
}

/// Whether `media`'s connection address (media-level, else session-level) is `0.0.0.0`: the
/// RFC 2543 hold, meaning no RTP or RTCP is to be sent to that side (RFC 3264 §8.4).
fn is_zero_address(sdp: &SessionDescription, media: &MediaDescription) -> bool {
    sdp.effective_connection(media)
        .is_some_and(|c| c.ip() == Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))
}

/// The direction `sdp` declares for `media` as far as sending to its author goes: its
/// direction attribute, without receiving when its connection address is `0.0.0.0`.
fn declared_direction(sdp: &SessionDescription, media: &MediaDescription) -> Direction {
    let d = sdp.effective_direction(media);
    if is_zero_address(sdp, media) {
        hold_direction(d)
    } else {
        d
    }
}

fn answer_line(
    offer: &SessionDescription,
    offered: &MediaDescription,
    cap: &MediaCapability,
    local_direction: Direction,
) -> Result<Option<MediaDescription>, SdpError> {
    let mut media = Media::new(
        offered.media_type(),
        cap.port,
        offered.proto(),
        offered.formats().iter().take(1).cloned(),
    );
    media.port_count = offered.media().port_count;
    let mut line = MediaDescription::new(media)?;
    if is_rtp(offered.proto()) {
        if !answer_rtp(offered, cap, &mut line)? {
            return Ok(None);
        }
    } else if offered.media_type().eq_ignore_ascii_case("message") {
        let mut types = offered.accept_types();
        if types.is_empty() {
            types = offer.accept_types();
        }
        let common = intersect_accept_types(&types, &cap.accept_types);
        if common.is_empty() {
            return Ok(None);
        }
        line.set_formats(offered.formats().iter().cloned())?;
        line.push_attribute("accept-types", Some(&common.join(" ")))?;
    } else {
        let common: Vec<String> = offered
            .formats()
            .iter()
            .filter(|f| cap.formats.contains(f))
            .cloned()
            .collect();
        if common.is_empty() {
            return Ok(None);
        }
        line.set_formats(common)?;
    }
    for (name, value) in &cap.attributes {
        line.push_attribute(name, value.as_deref())?;
    }
    let offered_direction = declared_direction(offer, offered);
    line.set_direction(Some(answer_direction(offered_direction, local_direction)));
    Ok(Some(line))
}

/// Picks a capability for each offered line: the one used before for that line when still
/// suitable, else the first unused one of the same media type accepting the protocol.
fn assign(
    offer: &SessionDescription,
    local: &LocalCapabilities,
    previous: &[Option<usize>],
) -> Vec<Option<usize>> {
    let mut used = vec![false; local.media.len()];
    let mut out = Vec::with_capacity(offer.media().len());
    let suits = |c: &MediaCapability, m: &MediaDescription| {
        c.media_type.eq_ignore_ascii_case(m.media_type()) && c.accepts_proto(m.proto())
    };
    for (i, m) in offer.media().iter().enumerate() {
        if m.is_rejected() {
            out.push(None);
            continue;
        }
        let prev = previous.get(i).copied().flatten().filter(|&c| {
            local
                .media
                .get(c)
                .is_some_and(|cap| !used[c] && suits(cap, m))
        });
        let pick = prev
            .or_else(|| {
                (0..local.media.len()).find(|&c| {
                    !used[c] && !previous.contains(&Some(c)) && suits(&local.media[c], m)
                })
            })
            .or_else(|| (0..local.media.len()).find(|&c| !used[c] && suits(&local.media[c], m)));
        if let Some(c) = pick {
            used[c] = true;
        }
        out.push(pick);
    }
    out
}

fn build_answer_inner(
    offer: &SessionDescription,
    local: &LocalCapabilities,
    origin: Origin,
    previous: &[Option<usize>],
    local_direction: impl Fn(usize, &MediaCapability) -> Direction,
) -> Result<(SessionDescription, Vec<Option<usize>>), OfferAnswerError> {
    let assigned = assign(offer, local, previous);
    let mut builder = SessionDescription::builder(origin)
        .connection(Connection::new(local.address.clone()))
        .timing(offer.timing().unwrap_or_default());
    let mut mapping = Vec::with_capacity(assigned.len());
    for (i, (offered, cap)) in offer.media().iter().zip(&assigned).enumerate() {
        let answered = match cap {
            Some(c) => {
                let cap = &local.media[*c];
                match answer_line(offer, offered, cap, local_direction(i, cap))? {
                    Some(line) => LineAnswer::Accepted {
                        capability: *c,
                        line,
                    },
                    None => LineAnswer::Rejected,
                }
            }
            None => LineAnswer::Rejected,
        };
        match answered {
            LineAnswer::Accepted { capability, line } => {
                mapping.push(Some(capability));
                builder = builder.media(line);
            }
            LineAnswer::Rejected => {
                mapping.push(None);
                builder = builder.media(rejected_line(offered)?);
            }
        }
    }
    Ok((builder.build()?, mapping))
}

/// Builds the answer to `offer` from the local capabilities (RFC 3264 §6; rules in the
/// module docs), with `origin` as its `o=` line. Streams that cannot be accepted are
/// answered with port 0; the result may reject every stream (check
/// [`MediaDescription::is_rejected`], or use [`OfferAnswer`], which refuses such an offer
/// with 488).
pub fn build_answer(
    offer: &SessionDescription,
    local: &LocalCapabilities,
    origin: Origin,
) -> Result<SessionDescription, OfferAnswerError> {
    build_answer_inner(offer, local, origin, &[], |_, c| c.direction).map(|(sdp, _)| sdp)
}

/// Builds an initial offer listing every local stream (RFC 3264 §5): RTP codecs with their
/// payload types (dynamic ones numbered from 96), `a=rtpmap`/`a=fmtp`, accept-types for
/// `message` streams, the capability's attributes and direction.
pub fn build_offer(
    local: &LocalCapabilities,
    origin: Origin,
) -> Result<SessionDescription, OfferAnswerError> {
    build_offer_inner(local, origin, |_, c| c.direction)
}

fn build_offer_inner(
    local: &LocalCapabilities,
    origin: Origin,
    direction: impl Fn(usize, &MediaCapability) -> Direction,
) -> Result<SessionDescription, OfferAnswerError> {
    let mut builder =
        SessionDescription::builder(origin).connection(Connection::new(local.address.clone()));
    for (i, cap) in local.media.iter().enumerate() {
        let proto = cap.offer_proto().to_owned();
        let line = if is_rtp(&proto) {
            let mut taken: Vec<u8> = cap.codecs.iter().filter_map(|c| c.payload_type).collect();
            let mut next = 96u8;
            let mut pts = Vec::with_capacity(cap.codecs.len());
            for c in &cap.codecs {
                let pt = match c.payload_type {
                    Some(pt) => pt,
                    None => {
                        while taken.contains(&next) && next < 127 {
                            next += 1;
                        }
                        taken.push(next);
                        next
                    }
                };
                pts.push(pt);
            }
            let formats: Vec<String> = pts.iter().map(u8::to_string).collect();
            let mut line = MediaDescription::new(Media::new(
                cap.media_type.clone(),
                cap.port,
                proto,
                formats,
            ))?;
            for (c, pt) in cap.codecs.iter().zip(&pts) {
                let mut r = Rtpmap::new(*pt, c.encoding_name.clone(), c.clock_rate);
                r.encoding_parameters = c.channels.filter(|&n| n != 1).map(|n| n.to_string());
                line.set_rtpmap(&r)?;
            }
            for (c, pt) in cap.codecs.iter().zip(&pts) {
                if let Some(p) = &c.fmtp {
                    line.set_fmtp(&super::Fmtp::new(pt.to_string(), p.clone()))?;
                }
            }
            line
        } else {
            let formats = if cap.formats.is_empty() {
                vec!["*".to_owned()]
            } else {
                cap.formats.clone()
            };
            let mut line = MediaDescription::new(Media::new(
                cap.media_type.clone(),
                cap.port,
                proto,
                formats,
            ))?;
            if cap.is_message() && !cap.accept_types.is_empty() {
                line.push_attribute("accept-types", Some(&cap.accept_types.join(" ")))?;
            }
            line
        };
        let mut line = line;
        for (name, value) in &cap.attributes {
            line.push_attribute(name, value.as_deref())?;
        }
        line.set_direction(Some(direction(i, cap)));
        builder = builder.media(line);
    }
    Ok(builder.build()?)
}

/// Where the negotiation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NegotiationState {
    /// No offer/answer exchange completed yet, none pending.
    Initial,
    /// An offer was sent and waits for its answer.
    OfferSent,
    /// The last exchange completed.
    Stable,
}

/// The offer/answer state of one session (one dialog): creates offers and re-offers,
/// answers offers, checks answers, puts streams on hold and resumes them, and keeps the
/// `o=` version (+1 on every change, the same when an unchanged description is re-sent).
///
/// ```
/// use sip_core::sdp::offer_answer::{Codec, LocalCapabilities, MediaCapability, OfferAnswer};
/// use sip_core::sdp::Direction;
///
/// let caps = |addr: &str, port| {
///     LocalCapabilities::new(addr)
///         .with_media(MediaCapability::audio(port, [Codec::pcmu(), Codec::pcma()]))
/// };
/// let mut alice = OfferAnswer::new(caps("192.0.2.1", 49170), "1001");
/// let mut bob = OfferAnswer::new(caps("192.0.2.2", 50000), "2002");
///
/// let offer = alice.create_offer()?;
/// let answer = bob.receive_offer(&offer)?;
/// alice.receive_answer(&answer)?;
///
/// let hold = alice.hold()?;
/// assert_eq!(hold.origin().session_version, 1);
/// let answer = bob.receive_offer(&hold)?;
/// assert_eq!(answer.effective_direction(&answer.media()[0]), Direction::RecvOnly);
/// alice.receive_answer(&answer)?;
/// # Ok::<(), sip_core::sdp::offer_answer::OfferAnswerError>(())
/// ```
#[derive(Debug, Clone)]
pub struct OfferAnswer {
    local: LocalCapabilities,
    session_id: String,
    version: u64,
    last_sent: Option<SessionDescription>,
    local_sdp: Option<SessionDescription>,
    remote_sdp: Option<SessionDescription>,
    pending: Option<PendingOffer>,
    mapping: Vec<Option<usize>>,
    held: bool,
}

/// The offer sent and not yet answered.
#[derive(Debug, Clone)]
struct PendingOffer {
    offer: SessionDescription,
    /// The capability of each of its lines.
    mapping: Vec<Option<usize>>,
    /// The hold state before this offer, restored when it fails.
    held_before: bool,
}

impl OfferAnswer {
    /// A session with these capabilities; `session_id` is the `o=` sess-id (a number
    /// unique to this session, RFC 8866 §5.2). The first version is 0.
    pub fn new(local: LocalCapabilities, session_id: impl Into<String>) -> OfferAnswer {
        OfferAnswer {
            local,
            session_id: session_id.into(),
            version: 0,
            last_sent: None,
            local_sdp: None,
            remote_sdp: None,
            pending: None,
            mapping: Vec::new(),
            held: false,
        }
    }

    /// Where the negotiation stands.
    pub fn state(&self) -> NegotiationState {
        if self.pending.is_some() {
            NegotiationState::OfferSent
        } else if self.local_sdp.is_some() {
            NegotiationState::Stable
        } else {
            NegotiationState::Initial
        }
    }

    /// The local description of the last completed exchange.
    pub fn local_description(&self) -> Option<&SessionDescription> {
        self.local_sdp.as_ref()
    }

    /// The remote description of the last completed exchange.
    pub fn remote_description(&self) -> Option<&SessionDescription> {
        self.remote_sdp.as_ref()
    }

    /// The `o=` version of the last description sent.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Whether the local side holds the session: set by [`hold`](Self::hold), cleared by
    /// [`resume`](Self::resume); a hold or resume whose offer fails
    /// ([`rollback`](Self::rollback), a refused answer) is undone.
    pub fn is_holding(&self) -> bool {
        self.held
    }

    /// Whether the remote side holds us: on every accepted line its last description does
    /// not receive (`sendonly` or `inactive`, or a `0.0.0.0` connection address, the
    /// RFC 2543 hold that RFC 3264 §8.4 requires agents to understand).
    pub fn is_held_by_remote(&self) -> bool {
        let Some(remote) = &self.remote_sdp else {
            return false;
        };
        let mut active = remote
            .media()
            .iter()
            .filter(|m| !m.is_rejected())
            .peekable();
        active.peek().is_some() && active.all(|m| !has_recv(declared_direction(remote, m)))
    }

    /// The capabilities, for changing them before the next offer or answer. Any change is
    /// allowed, removing or reordering capabilities included; the module docs
    /// ("Changing capabilities") say how negotiated lines follow.
    pub fn capabilities_mut(&mut self) -> &mut LocalCapabilities {
        &mut self.local
    }

    fn origin(&self) -> Origin {
        Origin::new(
            "-",
            self.session_id.clone(),
            self.version,
            self.local.address.clone(),
        )
    }

    /// Gives `sdp` the current version if it equals the last one sent, else the next.
    fn stamp(&mut self, mut sdp: SessionDescription) -> SessionDescription {
        if let Some(last) = &self.last_sent {
            if *last != sdp {
                self.version = sdp.bump_version();
            }
        }
        self.last_sent = Some(sdp.clone());
        sdp
    }

    /// The direction the local side answers with: what the capability wants, without
    /// receiving while holding.
    fn answer_wanted(&self, cap: &MediaCapability) -> Direction {
        if self.held {
            hold_direction(cap.direction)
        } else {
            cap.direction
        }
    }

    /// The direction the local side offers on line `index`: what the capability wants, or
    /// while holding the hold form of the line's current direction (RFC 3264 §8.4).
    fn wanted(&self, index: usize, cap: &MediaCapability) -> Direction {
        if !self.held {
            return cap.direction;
        }
        let current = self
            .local_sdp
            .as_ref()
            .and_then(|s| s.media().get(index).map(|m| s.effective_direction(m)))
            .unwrap_or(cap.direction);
        hold_direction(current)
    }

    /// An offer: the initial one from the capabilities, or a re-offer of the current
    /// session (same m= lines in the same order, the negotiated formats, directions per
    /// the hold state; lines rejected by either side, or whose capability is gone, with
    /// port 0). Refused while an offer is pending.
    pub fn create_offer(&mut self) -> Result<SessionDescription, OfferAnswerError> {
        self.offer_holding(self.held)
    }

    /// Puts the session on hold and returns the re-offer (RFC 3264 §8.4: `sendrecv` →
    /// `sendonly`, `recvonly` → `inactive`).
    pub fn hold(&mut self) -> Result<SessionDescription, OfferAnswerError> {
        self.offer_holding(true)
    }

    /// Takes the session off hold and returns the re-offer (each stream back to the
    /// direction its capability wants, `sendrecv` normally).
    pub fn resume(&mut self) -> Result<SessionDescription, OfferAnswerError> {
        self.offer_holding(false)
    }

    /// Builds and records an offer made with hold state `held`; the previous hold state
    /// comes back if the offer fails.
    fn offer_holding(&mut self, held: bool) -> Result<SessionDescription, OfferAnswerError> {
        if self.pending.is_some() {
            return Err(OfferAnswerError::OfferPending);
        }
        let held_before = self.held;
        self.held = held;
        let (sdp, mapping) = match self.offer_now() {
            Ok(built) => built,
            Err(e) => {
                self.held = held_before;
                return Err(e);
            }
        };
        let sdp = self.stamp(sdp);
        self.pending = Some(PendingOffer {
            offer: sdp.clone(),
            mapping,
            held_before,
        });
        Ok(sdp)
    }

    /// The offer for the current state and the capability of each of its lines.
    fn offer_now(&self) -> Result<(SessionDescription, Vec<Option<usize>>), OfferAnswerError> {
        let Some(mut current) = self.local_sdp.clone() else {
            let held = self.held;
            let sdp = build_offer_inner(&self.local, self.origin(), |_, c| {
                if held {
                    hold_direction(c.direction)
                } else {
                    c.direction
                }
            })?;
            return Ok((sdp, (0..self.local.media.len()).map(Some).collect()));
        };
        // The capabilities may have changed since the last exchange: match the lines again.
        let mapping = assign(&current, &self.local, &self.mapping);
        current.set_origin(self.origin())?;
        for (i, (m, cap)) in current.media_mut().iter_mut().zip(&mapping).enumerate() {
            if m.is_rejected() {
                continue;
            }
            match cap.and_then(|c| self.local.media.get(c)) {
                Some(cap) => m.set_direction(Some(self.wanted(i, cap))),
                // Its capability is gone: the stream is removed (RFC 3264 §8.2).
                None => *m = rejected_line(m)?,
            }
        }
        Ok((current, mapping))
    }

    /// Forgets the pending offer (its request failed: 488, 491, timeout); the session
    /// stays as negotiated before, the hold state included.
    pub fn rollback(&mut self) {
        if let Some(p) = self.pending.take() {
            self.held = p.held_before;
        }
    }

    /// Checks the answer to the pending offer and completes the exchange. A bad answer
    /// (m= line count, media types, no offered format on an accepted line, impossible
    /// directions, a port given to a stream offered with port 0) is an error and rolls the
    /// offer back (as [`rollback`](Self::rollback)).
    ///
    /// Lines the answer rejects (port 0) stay rejected: the session keeps them with port 0,
    /// so later re-offers do not re-open them and the peer may reuse their slots for other
    /// media (RFC 3264 §8.1).
    pub fn receive_answer(&mut self, answer: &SessionDescription) -> Result<(), OfferAnswerError> {
        let pending = self
            .pending
            .take()
            .ok_or(OfferAnswerError::NoOfferPending)?;
        let settled = check_answer(&pending.offer, answer).and_then(|()| {
            let mut session = pending.offer.clone();
            for (m, a) in session.media_mut().iter_mut().zip(answer.media()) {
                if a.is_rejected() && !m.is_rejected() {
                    *m = rejected_line(m)?;
                }
            }
            Ok(session)
        });
        let session = match settled {
            Ok(session) => session,
            Err(e) => {
                self.held = pending.held_before;
                return Err(e);
            }
        };
        let mut mapping = pending.mapping;
        mapping.resize(session.media().len(), None);
        for (slot, m) in mapping.iter_mut().zip(session.media()) {
            if m.is_rejected() {
                *slot = None;
            }
        }
        self.mapping = mapping;
        self.local_sdp = Some(session);
        self.remote_sdp = Some(answer.clone());
        Ok(())
    }

    /// Answers an offer (initial or re-offer). The answer keeps the local hold state.
    /// Refused with [`OfferAnswerError::OfferPending`] (491) during glare,
    /// [`OfferAnswerError::ReofferMismatch`] when a re-offer drops or retypes a line, and
    /// [`OfferAnswerError::NoAcceptableMedia`] (488) when every enabled stream is rejected;
    /// the session is unchanged after an error.
    pub fn receive_offer(
        &mut self,
        offer: &SessionDescription,
    ) -> Result<SessionDescription, OfferAnswerError> {
        if self.pending.is_some() {
            return Err(OfferAnswerError::OfferPending);
        }
        if let Some(current) = &self.local_sdp {
            let now = current.media();
            if offer.media().len() < now.len() {
                return Err(OfferAnswerError::ReofferMismatch {
                    index: offer.media().len(),
                });
            }
            for (i, (old, new)) in now.iter().zip(offer.media()).enumerate() {
                if !old.is_rejected()
                    && !new.is_rejected()
                    && !old.media_type().eq_ignore_ascii_case(new.media_type())
                {
                    return Err(OfferAnswerError::ReofferMismatch { index: i });
                }
            }
        }
        let previous = self.mapping.clone();
        let (answer, mapping) =
            build_answer_inner(offer, &self.local, self.origin(), &previous, |_, c| {
                self.answer_wanted(c)
            })?;
        let offered_enabled = offer.media().iter().any(|m| !m.is_rejected());
        let accepted = answer.media().iter().any(|m| !m.is_rejected());
        if offered_enabled && !accepted {
            return Err(OfferAnswerError::NoAcceptableMedia);
        }
        let answer = self.stamp(answer);
        self.mapping = mapping;
        self.local_sdp = Some(answer.clone());
        self.remote_sdp = Some(offer.clone());
        Ok(answer)
    }
}

/// Checks an answer against the offer it answers (RFC 3264 §6–7): same line count and
/// media types, no port on a line offered with port 0, on every accepted line at least one
/// offered format (additional formats are allowed, RFC 3264 §6.1) and a direction the
/// offered one allows.
pub fn check_answer(
    offer: &SessionDescription,
    answer: &SessionDescription,
) -> Result<(), OfferAnswerError> {
    let (o, a) = (offer.media(), answer.media());
    if o.len() != a.len() {
        return Err(OfferAnswerError::MediaCountMismatch {
            offered: o.len(),
            answered: a.len(),
        });
    }
    for (index, (om, am)) in o.iter().zip(a).enumerate() {
        if !om.media_type().eq_ignore_ascii_case(am.media_type()) {
            return Err(OfferAnswerError::MediaTypeMismatch { index });
        }
        if am.is_rejected() {
            continue;
        }
        if om.is_rejected() {
            return Err(OfferAnswerError::EnabledRejectedStream { index });
        }
        // RFC 3264 §6.1: the answer may list formats the offer did not, but an accepted
        // stream needs at least one offered format. (A set: both lists may be long.)
        let offered_formats: HashSet<&str> = om.formats().iter().map(String::as_str).collect();
        if !am
            .formats()
            .iter()
            .any(|f| offered_formats.contains(f.as_str()))
        {
            return Err(OfferAnswerError::FormatNotOffered {
                index,
                format: am.formats().first().cloned().unwrap_or_default(),
            });
        }
        let offered = offer.effective_direction(om);
        let answered = answer.effective_direction(am);
        let ok = (!has_send(answered) || has_recv(offered))
            && (!has_recv(answered) || has_send(offered));
        if !ok {
            return Err(OfferAnswerError::DirectionMismatch {
                index,
                offered,
                answered,
            });
        }
    }
    Ok(())
}

impl fmt::Display for NegotiationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NegotiationState::Initial => "initial",
            NegotiationState::OfferSent => "offer sent",
            NegotiationState::Stable => "stable",
        })
    }
}
