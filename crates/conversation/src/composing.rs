//! Message composition indication (RFC 3994, `application/im-iscomposing+xml`).
//!
//! While a user types (or records) a message, their client sends "is composing"
//! status messages in the same way as instant messages: an `active` document when
//! composition starts, refreshed while it goes on, and an `idle` document when it
//! stops without a message being sent. This module reads and writes those documents
//! ([`IsComposing`]) and names the RFC's timers; it holds no clocks itself.
//!
//! [`IsComposing::parse`] matches elements on their local name (any namespace prefix
//! is accepted), ignores unknown elements, trims text, accepts only UTF-8 and at most
//! [`MAX_BODY`] bytes, and never panics.

use std::borrow::Cow;
use std::time::Duration;

use quick_xml::events::{BytesRef, Event};
use quick_xml::Reader;

use application_endpoint::xml::escape_into;

/// The media type of an isComposing body, for the `Content-Type` of the `MESSAGE`.
pub const CONTENT_TYPE: &str = "application/im-iscomposing+xml";

/// The isComposing namespace (RFC 3994), the default namespace of documents written
/// here.
pub const NAMESPACE: &str = "urn:ietf:params:xml:ns:im-iscomposing";

/// Largest body [`IsComposing::parse`] accepts, in bytes (8 KiB). A status document
/// is a few hundred bytes; the limit bounds the work a hostile peer can cause.
pub const MAX_BODY: usize = 8 * 1024;

/// The refresh interval, 90 seconds, that [`IsComposing::active`] callers should
/// advertise and keep to: while composition goes on, the composer re-sends its
/// `active` state once per interval, and not more often, so the peer does not time
/// the state out. (RFC 3994's own `active` example advertises 90 seconds.)
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(90);

/// How long composition may pause before the composer reports `idle`: 15 seconds
/// without new content, RFC 3994's default idle timeout.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

/// Whether `active`, last sent `since_sent` ago, is to be sent again on the user's next
/// keystroke. While the user goes on typing, keystrokes come at most [`IDLE_TIMEOUT`]
/// apart (a longer pause sends `idle`, and the next keystroke `active` anew), so a
/// refresh due from `DEFAULT_REFRESH - IDLE_TIMEOUT - 5 s` on reaches the peer before
/// the advertised interval runs out. (Due only 5 s before it, as before, the refresh
/// could come up to 10 s after the peer had timed `active` out.)
pub(crate) fn active_refresh_due(since_sent: Duration) -> bool {
    since_sent + IDLE_TIMEOUT + Duration::from_secs(5) >= DEFAULT_REFRESH
}

/// How long a receiver keeps a peer's `active` state when the document carried no
/// `<refresh>`: 120 seconds, after which RFC 3994's receiver falls back to idle. When
/// `<refresh>` is present, that interval is used instead.
pub const ACTIVE_TIMEOUT_WITHOUT_REFRESH: Duration = Duration::from_secs(120);

/// Whether the peer is composing (RFC 3994 `<state>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ComposingState {
    /// A message is being composed.
    Active,
    /// No message is being composed.
    Idle,
}

impl ComposingState {
    /// The token written in `<state>`: `"active"` or `"idle"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ComposingState::Active => "active",
            ComposingState::Idle => "idle",
        }
    }
}

/// An RFC 3994 status document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsComposing {
    /// Composing or not.
    pub state: ComposingState,
    /// What kind of message is being composed (`<contenttype>`, a media type or a
    /// top-level type such as `audio`), if said.
    pub content_type: Option<String>,
    /// How often, in seconds, an `active` state will be refreshed (`<refresh>`); the
    /// receiver times the state out after that. Always positive when parsed; `None` or
    /// `Some(0)` is not written.
    pub refresh: Option<u32>,
    /// When the composer was last active (`<lastactive>`, an XML `dateTime`), kept as
    /// text.
    pub last_active: Option<String>,
}

impl IsComposing {
    /// An `active` document announcing refreshes every `refresh_secs` seconds
    /// (usually [`DEFAULT_REFRESH`]); `0` leaves `<refresh>` out.
    pub fn active(refresh_secs: u32) -> Self {
        IsComposing {
            state: ComposingState::Active,
            content_type: None,
            refresh: (refresh_secs > 0).then_some(refresh_secs),
            last_active: None,
        }
    }

    /// An `idle` document with no optional elements.
    pub fn idle() -> Self {
        IsComposing {
            state: ComposingState::Idle,
            content_type: None,
            refresh: None,
            last_active: None,
        }
    }

    /// The refresh interval as a duration, when the document gave a positive one.
    pub fn refresh_interval(&self) -> Option<Duration> {
        self.refresh
            .filter(|&secs| secs > 0)
            .map(|secs| Duration::from_secs(u64::from(secs)))
    }

    /// Writes the document in the RFC 3994 format: `<state>`, then the optional
    /// `<lastactive>`, `<contenttype>` and `<refresh>` in schema order, text escaped.
    pub fn to_xml(&self) -> String {
        let mut out = String::with_capacity(256);
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<isComposing xmlns=\"");
        out.push_str(NAMESPACE);
        out.push_str("\">\n");
        push_element(&mut out, "state", self.state.as_str());
        if let Some(last_active) = &self.last_active {
            push_element(&mut out, "lastactive", last_active);
        }
        if let Some(content_type) = &self.content_type {
            push_element(&mut out, "contenttype", content_type);
        }
        if let Some(refresh) = self.refresh.filter(|&secs| secs > 0) {
            push_element(&mut out, "refresh", &refresh.to_string());
        }
        out.push_str("</isComposing>\n");
        out
    }

    /// Parses an isComposing body.
    ///
    /// Only direct children of the root count; when an element repeats, the first
    /// wins. `<state>` is matched ignoring ASCII case.
    ///
    /// # Errors
    ///
    /// [`ComposingError::TooLarge`] over [`MAX_BODY`]; [`ComposingError::Malformed`]
    /// for anything that is not well-formed UTF-8 XML;
    /// [`ComposingError::NotIsComposing`] when the root is not `isComposing`;
    /// [`ComposingError::MissingState`] / [`ComposingError::InvalidState`] /
    /// [`ComposingError::InvalidRefresh`] for a missing or bad value.
    pub fn parse(body: &[u8]) -> Result<IsComposing, ComposingError> {
        if body.len() > MAX_BODY {
            return Err(ComposingError::TooLarge {
                size: body.len(),
                limit: MAX_BODY,
            });
        }
        let text = std::str::from_utf8(body)
            .map_err(|e| ComposingError::Malformed(format!("body is not UTF-8: {e}")))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut reader = Reader::from_str(text);
        let mut parser = Parser::default();
        loop {
            let event = reader.read_event().map_err(|e| {
                ComposingError::Malformed(format!("{e} (near byte {})", reader.error_position()))
            })?;
            match event {
                Event::Start(start) => parser.open(start.local_name().as_ref(), false)?,
                Event::Empty(start) => parser.open(start.local_name().as_ref(), true)?,
                Event::End(_) => parser.close()?,
                Event::Text(text) => {
                    let text = text.xml10_content().map_err(malformed)?;
                    parser.text(&text)?;
                }
                Event::CData(data) => {
                    let text = data.xml10_content().map_err(malformed)?;
                    parser.text(&text)?;
                }
                Event::GeneralRef(reference) => {
                    let text = resolve_reference(&reference)?;
                    parser.text(&text)?;
                }
                Event::Eof => break,
                Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
            }
        }
        parser.finish()
    }
}

/// Why an isComposing body was rejected by [`IsComposing::parse`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComposingError {
    /// The body is larger than [`MAX_BODY`].
    #[error("isComposing body of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// The body's size in bytes.
        size: usize,
        /// The limit it exceeded.
        limit: usize,
    },
    /// The body is not well-formed UTF-8 XML; the text says where or why.
    #[error("malformed isComposing document: {0}")]
    Malformed(String),
    /// The body is XML but its root element is not `isComposing`.
    #[error("not an isComposing document: the root element is not <isComposing>")]
    NotIsComposing,
    /// The document has no `<state>`, which RFC 3994 requires.
    #[error("isComposing document has no <state>")]
    MissingState,
    /// `<state>` is neither `active` nor `idle`; holds the value found.
    #[error("isComposing <state> is {0:?}, not \"active\" or \"idle\"")]
    InvalidState(String),
    /// `<refresh>` is not a positive integer that fits in 32 bits; holds the value
    /// found.
    #[error("isComposing <refresh> is {0:?}, not a positive number of seconds")]
    InvalidRefresh(String),
}

fn malformed(error: impl std::fmt::Display) -> ComposingError {
    ComposingError::Malformed(error.to_string())
}

/// Deepest nesting the parser follows; deeper documents are rejected as malformed.
const MAX_DEPTH: usize = 16;

/// A child of the root the parser reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    State,
    LastActive,
    ContentType,
    Refresh,
}

/// The state of [`IsComposing::parse`] between reader events.
#[derive(Debug, Default)]
struct Parser {
    /// Open elements, the root included.
    depth: usize,
    /// Whether the root has been opened.
    seen_root: bool,
    /// Whether the root has been closed.
    root_closed: bool,
    /// The known field being read (the depth-2 element), if any.
    field: Option<Field>,
    /// Text of that field so far.
    text: String,
    state: Option<String>,
    last_active: Option<String>,
    content_type: Option<String>,
    refresh: Option<String>,
}

impl Parser {
    fn open(&mut self, name: &[u8], empty: bool) -> Result<(), ComposingError> {
        if self.depth >= MAX_DEPTH {
            return Err(ComposingError::Malformed(format!(
                "elements nest deeper than {MAX_DEPTH} levels"
            )));
        }
        match self.depth {
            0 => {
                if self.root_closed {
                    return Err(ComposingError::Malformed(
                        "element after the root element".to_owned(),
                    ));
                }
                if name != b"isComposing" {
                    return Err(ComposingError::NotIsComposing);
                }
                self.seen_root = true;
            }
            1 => {
                self.field = match name {
                    b"state" => Some(Field::State),
                    b"lastactive" => Some(Field::LastActive),
                    b"contenttype" => Some(Field::ContentType),
                    b"refresh" => Some(Field::Refresh),
                    _ => None,
                };
                self.text.clear();
            }
            _ => {}
        }
        self.depth += 1;
        if empty {
            self.close()?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), ComposingError> {
        if self.depth == 0 {
            return Err(ComposingError::Malformed(
                "closing tag without an open element".to_owned(),
            ));
        }
        self.depth -= 1;
        match self.depth {
            0 => self.root_closed = true,
            1 => {
                let text = std::mem::take(&mut self.text).trim().to_owned();
                let slot = match self.field.take() {
                    Some(Field::State) => &mut self.state,
                    Some(Field::LastActive) => &mut self.last_active,
                    Some(Field::ContentType) => &mut self.content_type,
                    Some(Field::Refresh) => &mut self.refresh,
                    None => return Ok(()),
                };
                if slot.is_none() {
                    *slot = Some(text);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn text(&mut self, text: &str) -> Result<(), ComposingError> {
        match self.depth {
            0 if !text.trim().is_empty() => Err(ComposingError::Malformed(
                "text outside the root element".to_owned(),
            )),
            2 if self.field.is_some() => {
                self.text.push_str(text);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn finish(self) -> Result<IsComposing, ComposingError> {
        if self.depth != 0 {
            return Err(ComposingError::Malformed(
                "document ends inside an element".to_owned(),
            ));
        }
        if !self.seen_root {
            return Err(ComposingError::Malformed("no root element".to_owned()));
        }
        let state = match self.state {
            None => return Err(ComposingError::MissingState),
            Some(s) if s.eq_ignore_ascii_case("active") => ComposingState::Active,
            Some(s) if s.eq_ignore_ascii_case("idle") => ComposingState::Idle,
            Some(s) => return Err(ComposingError::InvalidState(s)),
        };
        let refresh = match self.refresh {
            None => None,
            Some(s) => match s.parse::<u32>() {
                Ok(secs) if secs > 0 => Some(secs),
                _ => return Err(ComposingError::InvalidRefresh(s)),
            },
        };
        Ok(IsComposing {
            state,
            content_type: self.content_type.filter(|s| !s.is_empty()),
            refresh,
            last_active: self.last_active.filter(|s| !s.is_empty()),
        })
    }
}

/// The text a `&...;` reference in content stands for: a character reference or one
/// of the five predefined entities. Anything else is an error (no DTD is read).
fn resolve_reference(reference: &BytesRef<'_>) -> Result<Cow<'static, str>, ComposingError> {
    if let Some(ch) = reference.resolve_char_ref().map_err(malformed)? {
        return Ok(Cow::Owned(ch.to_string()));
    }
    let name = reference.decode().map_err(malformed)?;
    quick_xml::escape::resolve_predefined_entity(&name)
        .map(Cow::Borrowed)
        .ok_or_else(|| ComposingError::Malformed(format!("unknown entity &{name};")))
}

/// Writes `  <name>text</name>` on its own line.
fn push_element(out: &mut String, name: &str, text: &str) {
    out.push_str("  <");
    out.push_str(name);
    out.push('>');
    escape_into(out, text);
    out.push_str("</");
    out.push_str(name);
    out.push_str(">\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3994 §5 (Examples): the `active` document.
    const RFC3994_ACTIVE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="urn:ietf:params:xml:ns:im-composing
  iscomposing.xsd">
  <state>active</state>
  <contenttype>text/plain</contenttype>
  <refresh>90</refresh>
</isComposing>
"#;

    /// RFC 3994 §5 (Examples): the `idle` document, after an audio message.
    const RFC3994_IDLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<isComposing xmlns="urn:ietf:params:xml:ns:im-iscomposing"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="urn:ietf:params:xml:ns:im-composing
  iscomposing.xsd">
  <state>idle</state>
  <lastactive>2003-01-27T10:43:00Z</lastactive>
  <contenttype>audio</contenttype>
</isComposing>
"#;

    #[test]
    fn rfc3994_examples_parse() {
        let active = IsComposing::parse(RFC3994_ACTIVE.as_bytes()).unwrap();
        assert_eq!(
            active,
            IsComposing {
                state: ComposingState::Active,
                content_type: Some("text/plain".to_owned()),
                refresh: Some(90),
                last_active: None,
            }
        );
        assert_eq!(active.refresh_interval(), Some(DEFAULT_REFRESH));

        let idle = IsComposing::parse(RFC3994_IDLE.as_bytes()).unwrap();
        assert_eq!(
            idle,
            IsComposing {
                state: ComposingState::Idle,
                content_type: Some("audio".to_owned()),
                refresh: None,
                last_active: Some("2003-01-27T10:43:00Z".to_owned()),
            }
        );
        assert_eq!(idle.refresh_interval(), None);
    }

    #[test]
    fn round_trip() {
        let documents = [
            IsComposing::active(90),
            IsComposing::idle(),
            IsComposing {
                state: ComposingState::Active,
                content_type: Some("text/html; charset=\"utf-8\" & <more>".to_owned()),
                refresh: Some(60),
                last_active: Some("2024-05-01T12:00:00Z".to_owned()),
            },
            IsComposing {
                last_active: Some("2003-01-27T10:43:00Z".to_owned()),
                ..IsComposing::idle()
            },
        ];
        for doc in documents {
            let xml = doc.to_xml();
            assert_eq!(IsComposing::parse(xml.as_bytes()).unwrap(), doc, "{xml}");
        }
    }

    #[test]
    fn to_xml_follows_the_rfc_format() {
        let xml = IsComposing {
            content_type: Some("text/plain".to_owned()),
            ..IsComposing::active(90)
        }
        .to_xml();
        assert_eq!(
            xml,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <isComposing xmlns=\"urn:ietf:params:xml:ns:im-iscomposing\">\n  \
             <state>active</state>\n  \
             <contenttype>text/plain</contenttype>\n  \
             <refresh>90</refresh>\n\
             </isComposing>\n"
        );
        assert!(!IsComposing::active(0).to_xml().contains("refresh"));
        assert_eq!(IsComposing::active(0).refresh, None);
    }

    #[test]
    fn prefixes_and_unknown_elements_are_tolerated() {
        let body = r#"<ic:isComposing xmlns:ic="urn:ietf:params:xml:ns:im-iscomposing"
            xmlns:x="urn:example:ext">
            <x:extra><ic:state>idle</ic:state></x:extra>
            <ic:state> Active </ic:state>
            <ic:state>idle</ic:state>
            <x:vendor a="1"/>
            <ic:refresh>+030</ic:refresh>
            <ic:contenttype>text/<x:i>ignored</x:i>plain</ic:contenttype>
            </ic:isComposing>"#;
        let doc = IsComposing::parse(body.as_bytes()).unwrap();
        assert_eq!(doc.state, ComposingState::Active);
        assert_eq!(doc.refresh, Some(30));
        assert_eq!(doc.content_type.as_deref(), Some("text/plain"));
    }

    #[test]
    fn missing_or_bad_values_are_errors() {
        let wrap = |inner: &str| {
            format!("<isComposing xmlns=\"urn:ietf:params:xml:ns:im-iscomposing\">{inner}</isComposing>")
        };
        assert_eq!(
            IsComposing::parse(wrap("<refresh>90</refresh>").as_bytes()),
            Err(ComposingError::MissingState)
        );
        assert_eq!(
            IsComposing::parse(wrap("<state>typing</state>").as_bytes()),
            Err(ComposingError::InvalidState("typing".to_owned()))
        );
        assert_eq!(
            IsComposing::parse(wrap("<state/>").as_bytes()),
            Err(ComposingError::InvalidState(String::new()))
        );
        for refresh in ["0", "-5", "1.5", "ninety", "", "4294967296"] {
            let body = wrap(&format!(
                "<state>active</state><refresh>{refresh}</refresh>"
            ));
            assert_eq!(
                IsComposing::parse(body.as_bytes()),
                Err(ComposingError::InvalidRefresh(refresh.to_owned())),
                "{refresh}"
            );
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let too_large = vec![b' '; MAX_BODY + 1];
        assert!(matches!(
            IsComposing::parse(&too_large),
            Err(ComposingError::TooLarge { .. })
        ));
        assert_eq!(
            IsComposing::parse(b"<presence/>"),
            Err(ComposingError::NotIsComposing)
        );
        let deep = format!(
            "<isComposing>{}{}</isComposing>",
            "<x>".repeat(MAX_DEPTH),
            "</x>".repeat(MAX_DEPTH)
        );
        for garbage in [
            &b""[..],
            b"junk",
            b"<isComposing",
            b"<isComposing><state>active</isComposing>",
            b"<isComposing><state>active</state>",
            b"<isComposing/><isComposing/>",
            b"<isComposing><state>&bogus;</state></isComposing>",
            b"\xc3\x28",
            deep.as_bytes(),
        ] {
            assert!(
                matches!(
                    IsComposing::parse(garbage),
                    Err(ComposingError::Malformed(_))
                ),
                "{:?} -> {:?}",
                String::from_utf8_lossy(garbage),
                IsComposing::parse(garbage)
            );
        }
    }

    #[test]
    fn every_truncation_returns_without_panicking() {
        for source in [RFC3994_ACTIVE, RFC3994_IDLE] {
            let bytes = source.as_bytes();
            let mut complete = 0;
            for end in 0..=bytes.len() {
                // Ok or Err are both acceptable; reaching the next line means no panic.
                if IsComposing::parse(&bytes[..end]).is_ok() {
                    complete += 1;
                }
            }
            let root_end = source.rfind("</isComposing>").unwrap() + "</isComposing>".len();
            assert_eq!(complete, bytes.len() - root_end + 1);
        }
    }

    /// A user typing with pauses of up to the idle timeout: every refresh of `active`
    /// goes out before the interval it advertised runs out.
    #[test]
    fn active_is_refreshed_within_its_interval_whatever_the_typing_rhythm() {
        for gap_ms in (1..=IDLE_TIMEOUT.as_millis() as u64).step_by(250) {
            let gap = Duration::from_millis(gap_ms);
            let (mut now, mut sent) = (Duration::ZERO, Duration::ZERO);
            while now < Duration::from_secs(600) {
                now += gap;
                if active_refresh_due(now - sent) {
                    assert!(
                        now - sent < DEFAULT_REFRESH,
                        "gap {gap:?}: {:?}",
                        now - sent
                    );
                    sent = now;
                }
            }
            assert!(now - sent < DEFAULT_REFRESH);
        }
    }

    #[test]
    fn timers_match_rfc_3994() {
        assert_eq!(DEFAULT_REFRESH, Duration::from_secs(90));
        assert_eq!(IDLE_TIMEOUT, Duration::from_secs(15));
        assert_eq!(ACTIVE_TIMEOUT_WITHOUT_REFRESH, Duration::from_secs(120));
        assert_eq!(
            ComposingError::MissingState.to_string(),
            "isComposing document has no <state>"
        );
    }

    #[test]
    fn mutated_documents_return_without_panicking() {
        // Bytes that matter to XML, plus one that breaks UTF-8.
        const PICKS: &[u8] = b"<>/&;\"'=:! x\xff";
        // A fixed linear congruential generator: the same mutations on every run.
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize
        };
        for source in [RFC3994_ACTIVE, RFC3994_IDLE] {
            for _ in 0..2000 {
                let mut bytes = source.as_bytes().to_vec();
                for _ in 0..=next() % 4 {
                    let at = next() % bytes.len();
                    bytes[at] = PICKS[next() % PICKS.len()];
                }
                let _ = IsComposing::parse(&bytes);
            }
        }
    }
}
