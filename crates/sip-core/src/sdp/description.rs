//! The session description model: session-level lines, media sections, typed access and the
//! mutation API offer/answer uses.

use std::fmt;

use bytes::Bytes;

use super::line::{check_text, check_token, Line};
use super::types::{
    attribute_value, Attribute, Connection, Direction, Fmtp, Media, Origin, Rtpmap, Timing,
};
use super::{SdpError, SdpLimits};

/// A parsed or built SDP session description (RFC 8866).
///
/// Every line is kept in order, unknown line types and unknown attributes included. A
/// description that was parsed and not changed serializes ([`to_bytes`](Self::to_bytes)) to
/// exactly the bytes received, whatever their line ends; once changed through a `&mut`
/// method, it serializes canonically: each line as received or as set, ended by CRLF.
///
/// Equality compares lines (letters and values), not line ends: a body with LF line ends
/// equals the same body with CRLF.
#[derive(Debug, Clone)]
pub struct SessionDescription {
    /// The received body while the description is unchanged.
    source: Option<Bytes>,
    /// Session-level lines; `[0]` is `v=`, `[1]` is `o=`, `[2]` is `s=`.
    session: Vec<Line>,
    /// Typed copy of `session[1]`.
    origin: Origin,
    media: Vec<MediaDescription>,
}

impl PartialEq for SessionDescription {
    fn eq(&self, other: &Self) -> bool {
        self.session == other.session && self.media == other.media
    }
}

impl Eq for SessionDescription {}

/// One media section: its `m=` line and the lines after it up to the next `m=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// Typed copy of `m_line`.
    media: Media,
    m_line: Line,
    lines: Vec<Line>,
}

/// RFC 8866 §5 order of session-level lines, for inserting new ones in the right place.
/// `t` and `r` share a rank so that a new line joins the end of the time descriptions; `z`
/// follows all of them (a `t=` after `z=` is out of order).
fn session_rank(letter: u8) -> u8 {
    match letter {
        b'v' => 0,
        b'o' => 1,
        b's' => 2,
        b'i' => 3,
        b'u' => 4,
        b'e' => 5,
        b'p' => 6,
        b'c' => 7,
        b'b' => 8,
        b't' | b'r' => 9,
        b'z' => 10,
        b'k' => 11,
        b'a' => 12,
        _ => 13,
    }
}

/// RFC 8866 §5 order of media-level lines.
fn media_rank(letter: u8) -> u8 {
    match letter {
        b'i' => 0,
        b'c' => 1,
        b'b' => 2,
        b'k' => 3,
        b'a' => 4,
        _ => 5,
    }
}

fn insert_ordered(lines: &mut Vec<Line>, line: Line, rank: fn(u8) -> u8) -> usize {
    let r = rank(line.letter_byte());
    let pos = lines
        .iter()
        .position(|l| rank(l.letter_byte()) > r)
        .unwrap_or(lines.len());
    lines.insert(pos, line);
    pos
}

fn attributes_of(lines: &[Line]) -> impl Iterator<Item = Attribute<'_>> {
    lines.iter().filter_map(Line::attribute)
}

fn direction_of(lines: &[Line]) -> Option<Direction> {
    attributes_of(lines)
        .filter(|a| a.value.is_none())
        .find_map(|a| Direction::from_name(a.name))
}

fn accept_types_of(lines: &[Line]) -> Vec<&str> {
    attributes_of(lines)
        .filter(|a| a.name == "accept-types")
        .filter_map(|a| a.value)
        .flat_map(|v| v.split_ascii_whitespace())
        .collect()
}

fn is_direction_line(l: &Line) -> bool {
    l.attribute()
        .is_some_and(|a| a.value.is_none() && Direction::from_name(a.name).is_some())
}

fn set_direction_in(lines: &mut Vec<Line>, direction: Option<Direction>, rank: fn(u8) -> u8) {
    let first = lines.iter().position(is_direction_line);
    lines.retain(|l| !is_direction_line(l));
    if let Some(d) = direction {
        let line = Line::from_string(b'a', d.as_str().to_owned());
        match first {
            Some(i) => lines.insert(i.min(lines.len()), line),
            None => {
                insert_ordered(lines, line, rank);
            }
        }
    }
}

fn remove_attributes_in(lines: &mut Vec<Line>, name: &str) -> usize {
    let before = lines.len();
    lines.retain(|l| l.attribute().is_none_or(|a| a.name != name));
    before - lines.len()
}

fn set_connection_in(
    lines: &mut Vec<Line>,
    connection: Option<&Connection>,
    rank: fn(u8) -> u8,
) -> Result<(), SdpError> {
    let new = match connection {
        Some(c) => {
            c.validate()?;
            Some(Line::from_string(b'c', c.to_string()))
        }
        None => None,
    };
    let first = lines.iter().position(|l| l.letter_byte() == b'c');
    lines.retain(|l| l.letter_byte() != b'c');
    if let Some(line) = new {
        match first {
            Some(i) => lines.insert(i.min(lines.len()), line),
            None => {
                insert_ordered(lines, line, rank);
            }
        }
    }
    Ok(())
}

fn push_attribute_in(
    lines: &mut Vec<Line>,
    name: &str,
    value: Option<&str>,
    rank: fn(u8) -> u8,
) -> Result<(), SdpError> {
    let line = Line::from_string(b'a', attribute_value(name, value)?);
    insert_ordered(lines, line, rank);
    Ok(())
}

impl SessionDescription {
    /// Parses an SDP body with the default [`SdpLimits`]: the entry point for bodies received
    /// in SIP messages (and for fuzzing, with [`to_bytes`](Self::to_bytes)).
    ///
    /// Accepts CRLF and bare LF line ends and a last line without a line end. Never panics:
    /// malformed or oversized input is an [`SdpError`]. Lines are zero-copy slices of `body`.
    pub fn parse(body: Bytes) -> Result<SessionDescription, SdpError> {
        Self::parse_with_limits(body, &SdpLimits::DEFAULT)
    }

    /// Parses an SDP body from a byte slice (copied once into a [`Bytes`]).
    pub fn parse_slice(body: &[u8]) -> Result<SessionDescription, SdpError> {
        // Check the size before copying anything.
        if body.len() > SdpLimits::DEFAULT.max_body_size {
            return Err(SdpError::BodyTooLarge {
                size: body.len(),
                limit: SdpLimits::DEFAULT.max_body_size,
            });
        }
        Self::parse(Bytes::copy_from_slice(body))
    }

    /// Parses an SDP body under explicit limits.
    pub fn parse_with_limits(
        body: Bytes,
        limits: &SdpLimits,
    ) -> Result<SessionDescription, SdpError> {
        super::parse::parse(body, limits)
    }

    pub(crate) fn from_parsed(
        body: Bytes,
        session: Vec<Line>,
        origin: Origin,
        media: Vec<MediaDescription>,
    ) -> SessionDescription {
        SessionDescription {
            source: Some(body),
            session,
            origin,
            media,
        }
    }

    /// Starts building a description from scratch; `s=` defaults to `-` and `t=` to `0 0`.
    pub fn builder(origin: Origin) -> SessionDescriptionBuilder {
        SessionDescriptionBuilder {
            origin,
            session_name: "-".into(),
            connection: None,
            timing: Timing::default(),
            attributes: Vec::new(),
            media: Vec::new(),
        }
    }

    /// The serialized body: the received bytes if unchanged since parsing, else the
    /// canonical form (every line ended by CRLF).
    pub fn to_bytes(&self) -> Bytes {
        if let Some(source) = &self.source {
            return source.clone();
        }
        let mut out = Vec::with_capacity(self.canonical_len());
        for line in &self.session {
            line.write_to(&mut out);
        }
        for m in &self.media {
            m.m_line.write_to(&mut out);
            for line in &m.lines {
                line.write_to(&mut out);
            }
        }
        Bytes::from(out)
    }

    fn canonical_len(&self) -> usize {
        let line_len = |l: &Line| l.value_bytes().len() + 4;
        self.session.iter().map(line_len).sum::<usize>()
            + self
                .media
                .iter()
                .map(|m| line_len(&m.m_line) + m.lines.iter().map(line_len).sum::<usize>())
                .sum::<usize>()
    }

    /// Whether [`to_bytes`](Self::to_bytes) returns the received bytes unchanged.
    pub fn is_unchanged(&self) -> bool {
        self.source.is_some()
    }

    /// The `o=` line.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The `s=` value, as written (may be empty or a single space in real traffic).
    pub fn session_name(&self) -> &str {
        self.session.get(2).map(Line::value).unwrap_or_default()
    }

    /// The session-level `c=` line (the default for media sections without their own).
    pub fn connection(&self) -> Option<Connection> {
        let line = self.session.iter().find(|l| l.letter_byte() == b'c')?;
        Connection::parse(line.value(), 0).ok()
    }

    /// The first `t=` line.
    pub fn timing(&self) -> Option<Timing> {
        let line = self.session.iter().find(|l| l.letter_byte() == b't')?;
        Timing::parse(line.value(), 0).ok()
    }

    /// The session-level lines in order, from `v=` up to the first `m=`.
    pub fn lines(&self) -> &[Line] {
        &self.session
    }

    /// Session-level attributes in order.
    pub fn attributes(&self) -> impl Iterator<Item = Attribute<'_>> {
        attributes_of(&self.session)
    }

    /// The first session-level attribute with this name.
    pub fn attribute(&self, name: &str) -> Option<Attribute<'_>> {
        self.attributes().find(|a| a.name == name)
    }

    /// The value of the first session-level attribute with this name (`None` when absent or
    /// without value).
    pub fn attribute_value(&self, name: &str) -> Option<&str> {
        self.attribute(name)?.value
    }

    /// Whether a session-level attribute with this name is present.
    pub fn has_attribute(&self, name: &str) -> bool {
        self.attribute(name).is_some()
    }

    /// The session-level direction attribute, the default for media sections.
    pub fn direction(&self) -> Option<Direction> {
        direction_of(&self.session)
    }

    /// The session-level `a=accept-types:` list.
    pub fn accept_types(&self) -> Vec<&str> {
        accept_types_of(&self.session)
    }

    /// The media sections in order.
    pub fn media(&self) -> &[MediaDescription] {
        &self.media
    }

    /// A media section's direction: its own attribute, else the session's, else `sendrecv`.
    pub fn effective_direction(&self, media: &MediaDescription) -> Direction {
        media.direction().or(self.direction()).unwrap_or_default()
    }

    /// The connection a media section uses: its own first `c=`, else the session's.
    pub fn effective_connection(&self, media: &MediaDescription) -> Option<Connection> {
        media.connection().or_else(|| self.connection())
    }

    // ---- mutation -------------------------------------------------------------------------

    fn changed(&mut self) -> &mut Self {
        self.source = None;
        self
    }

    /// The media sections, for changing them (the description then serializes canonically).
    pub fn media_mut(&mut self) -> &mut [MediaDescription] {
        &mut self.changed().media
    }

    /// Appends a media section.
    pub fn push_media(&mut self, media: MediaDescription) {
        self.changed().media.push(media);
    }

    /// Replaces the `o=` line.
    pub fn set_origin(&mut self, origin: Origin) -> Result<(), SdpError> {
        origin.validate()?;
        let line = Line::from_string(b'o', origin.to_string());
        let this = self.changed();
        if let Some(slot) = this.session.get_mut(1) {
            *slot = line;
        }
        this.origin = origin;
        Ok(())
    }

    /// Increments the `o=` session version (RFC 3264 §8: each new offer in a dialog does);
    /// saturates at `u64::MAX` rather than wrapping. Returns the new version.
    pub fn bump_version(&mut self) -> u64 {
        let mut origin = self.origin.clone();
        origin.session_version = origin.session_version.saturating_add(1);
        let version = origin.session_version;
        let line = Line::from_string(b'o', origin.to_string());
        let this = self.changed();
        if let Some(slot) = this.session.get_mut(1) {
            *slot = line;
        }
        this.origin = origin;
        version
    }

    /// Replaces the `s=` value (empty is allowed, as in real traffic).
    pub fn set_session_name(&mut self, name: &str) -> Result<(), SdpError> {
        check_text(name, "s= session name")?;
        let line = Line::from_string(b's', name.to_owned());
        if let Some(slot) = self.changed().session.get_mut(2) {
            *slot = line;
        }
        Ok(())
    }

    /// Sets (replacing all) or, with `None`, removes the session-level `c=` line.
    pub fn set_connection(&mut self, connection: Option<&Connection>) -> Result<(), SdpError> {
        if let Some(c) = connection {
            c.validate()?;
        }
        set_connection_in(&mut self.changed().session, connection, session_rank)
    }

    /// Sets (replacing any) or, with `None`, removes the session-level direction attribute.
    pub fn set_direction(&mut self, direction: Option<Direction>) {
        set_direction_in(&mut self.changed().session, direction, session_rank);
    }

    /// Adds a session-level attribute after the existing ones.
    pub fn push_attribute(&mut self, name: &str, value: Option<&str>) -> Result<(), SdpError> {
        let line = Line::from_string(b'a', attribute_value(name, value)?);
        insert_ordered(&mut self.changed().session, line, session_rank);
        Ok(())
    }

    /// Removes every session-level attribute with this name; returns how many.
    pub fn remove_attributes(&mut self, name: &str) -> usize {
        remove_attributes_in(&mut self.changed().session, name)
    }

    /// Inserts a session-level line where RFC 8866 §5 orders it (after existing lines of the
    /// same type). `v=`, `o=`, `s=` (use the setters), `m=` (use
    /// [`push_media`](Self::push_media)) and a second `c=` (use
    /// [`set_connection`](Self::set_connection)) are refused.
    pub fn insert_line(&mut self, line: Line) -> Result<(), SdpError> {
        let letter = line.letter_byte();
        if matches!(letter, b'v' | b'o' | b's' | b'm') {
            return Err(SdpError::InvalidValue {
                what: "session line",
                why: "v=, o=, s= and m= have their own setters",
            });
        }
        if letter == b'c' && self.session.iter().any(|l| l.letter_byte() == b'c') {
            return Err(SdpError::InvalidValue {
                what: "session line",
                why: "one session-level c= only; set_connection replaces it",
            });
        }
        check_typed(&line)?;
        insert_ordered(&mut self.changed().session, line, session_rank);
        Ok(())
    }

    /// Removes the session-level lines of one type other than `v=`, `o=`, `s=`; returns how
    /// many. (Removing every `t=` makes the body invalid for other parsers.)
    pub fn remove_lines(&mut self, letter: char) -> usize {
        if matches!(letter, 'v' | 'o' | 's') {
            return 0;
        }
        let session = &mut self.changed().session;
        let before = session.len();
        let mut index = 0;
        session.retain(|l| {
            index += 1;
            index <= 3 || l.letter() != letter
        });
        before - session.len()
    }
}

/// Checks that a caller-made line of a type this model interprets follows its grammar.
fn check_typed(line: &Line) -> Result<(), SdpError> {
    match line.letter_byte() {
        b'c' => Connection::parse(line.value(), 0).map(drop),
        b't' => Timing::parse(line.value(), 0).map(drop),
        b'a' => {
            let name = Attribute::from_value(line.value()).name;
            check_token(name, "attribute name")
        }
        _ => Ok(()),
    }
}

impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

impl std::str::FromStr for SessionDescription {
    type Err = SdpError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SessionDescription::parse_slice(s.as_bytes())
    }
}

/// Attribute names whose value starts with the format they describe (RFC 4585 `rtcp-fb`
/// included); removed with their format.
const FORMAT_ATTRIBUTES: &[&str] = &["rtpmap", "fmtp", "rtcp-fb"];

fn format_of_attribute<'a>(a: &Attribute<'a>) -> Option<&'a str> {
    if !FORMAT_ATTRIBUTES.contains(&a.name) {
        return None;
    }
    a.value?.split(' ').find(|s| !s.is_empty())
}

impl MediaDescription {
    /// A media section with only its `m=` line.
    pub fn new(media: Media) -> Result<MediaDescription, SdpError> {
        media.validate()?;
        Ok(MediaDescription {
            m_line: Line::from_string(b'm', media.to_string()),
            media,
            lines: Vec::new(),
        })
    }

    pub(crate) fn from_parsed(media: Media, m_line: Line) -> MediaDescription {
        MediaDescription {
            media,
            m_line,
            lines: Vec::new(),
        }
    }

    pub(crate) fn push_parsed(&mut self, line: Line) {
        self.lines.push(line);
    }

    /// The `m=` line, typed.
    pub fn media(&self) -> &Media {
        &self.media
    }

    /// The `m=` line as received (or as last set).
    pub fn media_line(&self) -> &Line {
        &self.m_line
    }

    /// The media type (`audio`, `video`, `message`, …).
    pub fn media_type(&self) -> &str {
        &self.media.media_type
    }

    /// The transport port; 0 when the stream is rejected or disabled.
    pub fn port(&self) -> u16 {
        self.media.port
    }

    /// The transport protocol (`RTP/AVP`, `RTP/SAVP`, `sip`, …).
    pub fn proto(&self) -> &str {
        &self.media.proto
    }

    /// The format list as written.
    pub fn formats(&self) -> &[String] {
        &self.media.formats
    }

    /// Whether the port is 0 (stream rejected or disabled, RFC 3264 §6).
    pub fn is_rejected(&self) -> bool {
        self.media.port == 0
    }

    /// The lines after `m=`, in order.
    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// The first media-level `c=` line.
    pub fn connection(&self) -> Option<Connection> {
        self.connections().next()
    }

    /// All media-level `c=` lines (several for layered multicast).
    pub fn connections(&self) -> impl Iterator<Item = Connection> + '_ {
        self.lines
            .iter()
            .filter(|l| l.letter_byte() == b'c')
            .filter_map(|l| Connection::parse(l.value(), 0).ok())
    }

    /// Media-level attributes in order.
    pub fn attributes(&self) -> impl Iterator<Item = Attribute<'_>> {
        attributes_of(&self.lines)
    }

    /// The first media-level attribute with this name.
    pub fn attribute(&self, name: &str) -> Option<Attribute<'_>> {
        self.attributes().find(|a| a.name == name)
    }

    /// All media-level attributes with this name (e.g. every `candidate`).
    pub fn attributes_named<'s>(
        &'s self,
        name: &'s str,
    ) -> impl Iterator<Item = Attribute<'s>> + 's {
        self.attributes().filter(move |a| a.name == name)
    }

    /// The value of the first media-level attribute with this name.
    pub fn attribute_value(&self, name: &str) -> Option<&str> {
        self.attribute(name)?.value
    }

    /// Whether a media-level attribute with this name is present.
    pub fn has_attribute(&self, name: &str) -> bool {
        self.attribute(name).is_some()
    }

    /// The well-formed `a=rtpmap` lines in order (malformed ones such as RFC 4475's
    /// `a=rtpmap:31 LPC` stay generic attributes).
    pub fn rtpmaps(&self) -> impl Iterator<Item = Rtpmap> + '_ {
        self.attributes_named("rtpmap")
            .filter_map(|a| Rtpmap::parse(a.value?))
    }

    /// The `a=rtpmap` of one payload type.
    pub fn rtpmap(&self, payload_type: u8) -> Option<Rtpmap> {
        self.rtpmaps().find(|r| r.payload_type == payload_type)
    }

    /// The `a=fmtp` lines in order.
    pub fn fmtps(&self) -> impl Iterator<Item = Fmtp> + '_ {
        self.attributes_named("fmtp")
            .filter_map(|a| Fmtp::parse(a.value?))
    }

    /// The `a=fmtp` of one format.
    pub fn fmtp(&self, format: &str) -> Option<Fmtp> {
        self.fmtps().find(|f| f.format == format)
    }

    /// The media-level direction attribute, if any (see
    /// [`SessionDescription::effective_direction`]).
    pub fn direction(&self) -> Option<Direction> {
        direction_of(&self.lines)
    }

    /// The `a=accept-types:` MIME types (IM sessions: `text/plain`, `text/html`, …).
    pub fn accept_types(&self) -> Vec<&str> {
        accept_types_of(&self.lines)
    }

    // ---- mutation -------------------------------------------------------------------------

    fn set_media_unchecked(&mut self, media: Media) {
        self.m_line = Line::from_string(b'm', media.to_string());
        self.media = media;
    }

    /// Replaces the whole `m=` line.
    pub fn set_media(&mut self, media: Media) -> Result<(), SdpError> {
        media.validate()?;
        self.set_media_unchecked(media);
        Ok(())
    }

    /// Sets the port; 0 rejects the stream in an answer (RFC 3264 §6).
    pub fn set_port(&mut self, port: u16) {
        let mut media = self.media.clone();
        media.port = port;
        self.set_media_unchecked(media);
    }

    /// Sets (replacing any) or, with `None`, removes the media-level direction attribute.
    pub fn set_direction(&mut self, direction: Option<Direction>) {
        set_direction_in(&mut self.lines, direction, media_rank);
    }

    /// Sets (replacing all) or, with `None`, removes the media-level `c=` lines.
    pub fn set_connection(&mut self, connection: Option<&Connection>) -> Result<(), SdpError> {
        set_connection_in(&mut self.lines, connection, media_rank)
    }

    /// Keeps the formats for which `keep` is true, dropping the others from `m=` together
    /// with their `a=rtpmap`, `a=fmtp` and `a=rtcp-fb` lines. Refused (nothing changes) when
    /// no format would remain: `m=` needs one; reject with `set_port(0)` instead.
    pub fn retain_formats(&mut self, mut keep: impl FnMut(&str) -> bool) -> Result<(), SdpError> {
        let kept: Vec<String> = self
            .media
            .formats
            .iter()
            .filter(|f| keep(f))
            .cloned()
            .collect();
        self.set_formats(kept)
    }

    /// Replaces the format list (in the given order), dropping the `a=rtpmap`, `a=fmtp` and
    /// `a=rtcp-fb` lines of formats no longer listed.
    pub fn set_formats(
        &mut self,
        formats: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<(), SdpError> {
        let mut media = self.media.clone();
        media.formats = formats.into_iter().map(Into::into).collect();
        media.validate()?;
        let listed = |f: &str| media.formats.iter().any(|x| x == f) || f == "*";
        self.lines.retain(|l| {
            l.attribute()
                .and_then(|a| format_of_attribute(&a))
                .is_none_or(listed)
        });
        self.set_media_unchecked(media);
        Ok(())
    }

    /// Sets the `a=rtpmap` of a payload type: replaces an existing one in place, else adds
    /// it after the last `a=rtpmap` (or after the other attributes).
    pub fn set_rtpmap(&mut self, rtpmap: &Rtpmap) -> Result<(), SdpError> {
        rtpmap.validate()?;
        let line = Line::from_string(b'a', format!("rtpmap:{rtpmap}"));
        let pt = rtpmap.payload_type.to_string();
        self.put_format_attribute("rtpmap", &pt, line, &["rtpmap"]);
        Ok(())
    }

    /// Sets the `a=fmtp` of a format: replaces an existing one in place, else adds it after
    /// that format's `a=rtpmap` (or after the last `a=rtpmap`/`a=fmtp`).
    pub fn set_fmtp(&mut self, fmtp: &Fmtp) -> Result<(), SdpError> {
        fmtp.validate()?;
        let line = Line::from_string(b'a', format!("fmtp:{fmtp}"));
        self.put_format_attribute("fmtp", &fmtp.format, line, &["rtpmap", "fmtp"]);
        Ok(())
    }

    fn put_format_attribute(&mut self, name: &str, format: &str, line: Line, after: &[&str]) {
        let is = |l: &Line, n: &str| {
            l.attribute()
                .is_some_and(|a| a.name == n && format_of_attribute(&a) == Some(format))
        };
        if let Some(i) = self.lines.iter().position(|l| is(l, name)) {
            self.lines[i] = line;
            return;
        }
        if name == "fmtp" {
            if let Some(i) = self.lines.iter().position(|l| is(l, "rtpmap")) {
                self.lines.insert(i + 1, line);
                return;
            }
        }
        let last = self
            .lines
            .iter()
            .rposition(|l| l.attribute().is_some_and(|a| after.contains(&a.name)));
        match last {
            Some(i) => self.lines.insert(i + 1, line),
            None => {
                insert_ordered(&mut self.lines, line, media_rank);
            }
        }
    }

    /// Removes the `a=fmtp` of a format; returns whether there was one.
    pub fn remove_fmtp(&mut self, format: &str) -> bool {
        let before = self.lines.len();
        self.lines.retain(|l| {
            l.attribute()
                .is_none_or(|a| a.name != "fmtp" || format_of_attribute(&a) != Some(format))
        });
        before != self.lines.len()
    }

    /// Adds a media-level attribute after the existing ones.
    pub fn push_attribute(&mut self, name: &str, value: Option<&str>) -> Result<(), SdpError> {
        push_attribute_in(&mut self.lines, name, value, media_rank)
    }

    /// Removes every media-level attribute with this name; returns how many.
    pub fn remove_attributes(&mut self, name: &str) -> usize {
        remove_attributes_in(&mut self.lines, name)
    }

    /// Inserts a media-level line where RFC 8866 §5 orders it. Session-only types
    /// (`v o s u e p t r z`) and `m=` are refused.
    pub fn insert_line(&mut self, line: Line) -> Result<(), SdpError> {
        if b"vosueptrzm".contains(&line.letter_byte()) {
            return Err(SdpError::InvalidValue {
                what: "media line",
                why: "this line type is not allowed in a media section",
            });
        }
        check_typed(&line)?;
        insert_ordered(&mut self.lines, line, media_rank);
        Ok(())
    }

    /// Keeps the lines after `m=` for which `keep` is true.
    pub fn retain_lines(&mut self, keep: impl FnMut(&Line) -> bool) {
        self.lines.retain(keep);
    }
}

/// Builds a [`SessionDescription`] from scratch (see [`SessionDescription::builder`]).
#[derive(Debug, Clone)]
#[must_use]
pub struct SessionDescriptionBuilder {
    origin: Origin,
    session_name: String,
    connection: Option<Connection>,
    timing: Timing,
    attributes: Vec<(String, Option<String>)>,
    media: Vec<MediaDescription>,
}

impl SessionDescriptionBuilder {
    /// Sets `s=` (default `-`).
    pub fn session_name(mut self, name: impl Into<String>) -> Self {
        self.session_name = name.into();
        self
    }

    /// Sets the session-level `c=`.
    pub fn connection(mut self, connection: Connection) -> Self {
        self.connection = Some(connection);
        self
    }

    /// Sets `t=` (default `0 0`).
    pub fn timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// Adds a session-level attribute.
    pub fn attribute(mut self, name: impl Into<String>, value: Option<&str>) -> Self {
        self.attributes.push((name.into(), value.map(String::from)));
        self
    }

    /// Adds a session-level direction attribute.
    pub fn direction(self, direction: Direction) -> Self {
        self.attribute(direction.as_str(), None)
    }

    /// Appends a media section.
    pub fn media(mut self, media: MediaDescription) -> Self {
        self.media.push(media);
        self
    }

    /// Checks every value and makes the description (serialized canonically, CRLF).
    pub fn build(self) -> Result<SessionDescription, SdpError> {
        self.origin.validate()?;
        check_text(&self.session_name, "s= session name")?;
        let mut session = vec![
            Line::from_string(b'v', "0".into()),
            Line::from_string(b'o', self.origin.to_string()),
            Line::from_string(b's', self.session_name),
        ];
        if let Some(c) = &self.connection {
            c.validate()?;
            session.push(Line::from_string(b'c', c.to_string()));
        }
        session.push(Line::from_string(b't', self.timing.to_string()));
        for (name, value) in &self.attributes {
            session.push(Line::from_string(
                b'a',
                attribute_value(name, value.as_deref())?,
            ));
        }
        Ok(SessionDescription {
            source: None,
            session,
            origin: self.origin,
            media: self.media,
        })
    }
}
