//! PIDF presence documents (RFC 3863) with the RPID activities (RFC 4480) they carry.
//!
//! A presence publication (`PUBLISH`) or notification (`NOTIFY` for the `presence`
//! event) carries an `application/pidf+xml` body. This module reads and writes the
//! part of that format an endpoint needs:
//!
//! - the `<presence entity="...">` root, its `<tuple>`s with `<status><basic>`,
//!   `<contact>` and `<note>`, and the document-level `<note>`s (RFC 3863);
//! - the `<activities>` of a data-model `<person>` (RFC 4479 / RFC 4480), which carry
//!   the "busy", "away", "on the phone" shades that `<basic>` cannot express.
//!
//! [`Availability`] is the coarse, UCMA-like view of a document, with a documented
//! mapping to and from PIDF + RPID.
//!
//! # Parsing
//!
//! [`PresenceDocument::parse`] ignores namespace prefixes, because presence servers and
//! clients disagree about them (Kamailio passes through whatever the publisher used, Lync
//! and others pick their own): PIDF's own elements are known by their local name in the
//! namespace of the root `<presence>` (normally [`PIDF_NS`]), whether a prefix or a
//! default namespace puts them there, so an extension's `<x:note>` is not a note. The
//! data-model `<person>` and RPID `<activities>` are known by their local names alone.
//! Unknown elements, extensions included, are skipped with everything inside them. Text is trimmed. Input is bounded by [`MAX_BODY`], [`MAX_TUPLES`] and
//! [`MAX_DEPTH`]; no input makes the parser panic. Only UTF-8 bodies are accepted
//! (what SIP presence servers send); a leading byte-order mark is skipped.
//!
//! # Writing
//!
//! [`PresenceDocument::to_xml`] builds the document as a string. Every attribute value
//! and text is XML-escaped; characters XML 1.0 cannot carry at all (most C0 controls)
//! are replaced by U+FFFD.

use std::borrow::Cow;

use quick_xml::encoding::Decoder;
use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use quick_xml::XmlVersion;

use crate::xml::escape_into;

/// The media type of a PIDF body, for the `Content-Type` header of `PUBLISH`/`NOTIFY`.
pub const CONTENT_TYPE: &str = "application/pidf+xml";

/// The PIDF namespace (RFC 3863), the default namespace of documents written here.
pub const PIDF_NS: &str = "urn:ietf:params:xml:ns:pidf";

/// The RPID namespace (RFC 4480), bound to the `rpid` prefix in documents written here.
pub const RPID_NS: &str = "urn:ietf:params:xml:ns:pidf:rpid";

/// The PIDF data-model namespace (RFC 4479), bound to the `dm` prefix in documents
/// written here (it holds `<person>`).
pub const DATA_MODEL_NS: &str = "urn:ietf:params:xml:ns:pidf:data-model";

/// Largest body [`PresenceDocument::parse`] accepts, in bytes (64 KiB).
///
/// Real presence documents are a few hundred bytes to a few KiB; the limit bounds the
/// work a hostile peer can cause.
pub const MAX_BODY: usize = 64 * 1024;

/// Most `<tuple>` elements a parsed document may hold.
pub const MAX_TUPLES: usize = 64;

/// Deepest element nesting a parsed document may have (the root counts as 1).
pub const MAX_DEPTH: usize = 32;

/// The tuple id [`PresenceDocument::from_availability`] uses, stable across
/// publications so a presence server sees the same tuple being updated.
pub const TUPLE_ID: &str = "ucma";

/// The id of the data-model `<person>` element [`PresenceDocument::to_xml`] writes.
const PERSON_ID: &str = "p1";

/// The `<basic>` status of a tuple (RFC 3863): whether the service is reachable at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Basic {
    /// The tuple's service can be reached (`open`).
    Open,
    /// The tuple's service cannot be reached (`closed`).
    Closed,
}

impl Basic {
    /// The token written in `<basic>`: `"open"` or `"closed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Basic::Open => "open",
            Basic::Closed => "closed",
        }
    }

    /// Reads a `<basic>` token; ASCII case is ignored for peers that capitalise it.
    fn from_token(token: &str) -> Option<Basic> {
        if token.eq_ignore_ascii_case("open") {
            Some(Basic::Open)
        } else if token.eq_ignore_ascii_case("closed") {
            Some(Basic::Closed)
        } else {
            None
        }
    }
}

/// RPID activities that read as [`Availability::Busy`].
const BUSY_ACTIVITIES: &[&str] = &[
    "busy",
    "on-the-phone",
    "meeting",
    "appointment",
    "performance",
];

/// RPID activities that read as [`Availability::DoNotDisturb`].
const DND_ACTIVITIES: &[&str] = &["presentation"];

/// RPID activities that read as [`Availability::Away`].
const AWAY_ACTIVITIES: &[&str] = &[
    "away",
    "permanent-absence",
    "vacation",
    "holiday",
    "sleeping",
    "meal",
    "breakfast",
    "lunch",
    "dinner",
];

/// The coarse availability an application publishes or shows, in the spirit of UCMA's
/// presence states, and its mapping onto PIDF `<basic>` plus one RFC 4480 activity.
///
/// Publishing ([`Availability::basic`], [`Availability::activity`]):
///
/// | Availability   | `<basic>` | RPID activity  |
/// |----------------|-----------|----------------|
/// | `Online`       | open      | none           |
/// | `Busy`         | open      | `busy`         |
/// | `DoNotDisturb` | open      | `presentation` |
/// | `Away`         | open      | `away`         |
/// | `Offline`      | closed    | none           |
///
/// RFC 4480 has no "do not disturb" activity; `presentation` ("giving a presentation")
/// is the one that most plainly asks not to be interrupted, and it is what Lync shows
/// as its do-not-disturb state ("Presenting"), so that is the token used.
///
/// Reading ([`Availability::from_document`]), first matching row wins:
///
/// | Document                                                          | Availability   |
/// |-------------------------------------------------------------------|----------------|
/// | a tuple is `closed` and none is `open`                             | `Offline`      |
/// | activity `presentation`                                           | `DoNotDisturb` |
/// | activity `busy`, `on-the-phone`, `meeting`, `appointment`, `performance` | `Busy`  |
/// | activity `away`, `permanent-absence`, `vacation`, `holiday`, `sleeping`, `meal`, `breakfast`, `lunch`, `dinner` | `Away` |
/// | a tuple is `open`                                                 | `Online`       |
/// | nothing of the above (no `<basic>`, no known activity)            | `Offline`      |
///
/// Activities match ASCII case-insensitively; unknown ones (`other`, `unknown`, ...)
/// are ignored. So every availability survives a trip through
/// [`PresenceDocument::from_availability`] and back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Availability {
    /// Reachable and free.
    Online,
    /// Reachable but occupied (in a call, in a meeting, ...).
    Busy,
    /// Reachable but asks not to be interrupted.
    DoNotDisturb,
    /// Signed in but not at the device.
    Away,
    /// Not reachable.
    Offline,
}

impl Availability {
    /// The `<basic>` status to publish: `Closed` for `Offline`, `Open` otherwise.
    pub fn basic(self) -> Basic {
        match self {
            Availability::Offline => Basic::Closed,
            _ => Basic::Open,
        }
    }

    /// The RFC 4480 activity to publish alongside `<basic>`, if any (see the table on
    /// [`Availability`]).
    pub fn activity(self) -> Option<&'static str> {
        match self {
            Availability::Online | Availability::Offline => None,
            Availability::Busy => Some("busy"),
            Availability::DoNotDisturb => Some("presentation"),
            Availability::Away => Some("away"),
        }
    }

    /// Reads the availability a document expresses (see the table on [`Availability`]).
    pub fn from_document(doc: &PresenceDocument) -> Availability {
        let basic = doc.basic();
        if basic == Some(Basic::Closed) {
            return Availability::Offline;
        }
        let has = |set: &[&str]| {
            doc.activities
                .iter()
                .any(|a| set.iter().any(|s| a.eq_ignore_ascii_case(s)))
        };
        if has(DND_ACTIVITIES) {
            Availability::DoNotDisturb
        } else if has(BUSY_ACTIVITIES) {
            Availability::Busy
        } else if has(AWAY_ACTIVITIES) {
            Availability::Away
        } else if basic == Some(Basic::Open) {
            Availability::Online
        } else {
            Availability::Offline
        }
    }
}

/// One `<tuple>` of a presence document: a way to reach the presentity and its status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuple {
    /// The tuple's `id` attribute, unique within the document.
    pub id: String,
    /// The `<status><basic>` value, if present and recognised.
    pub basic: Option<Basic>,
    /// The `<contact>` address (a URI), if any; its `priority` is not kept.
    pub contact: Option<String>,
    /// The first non-empty `<note>` of the tuple, if any; further notes (other
    /// languages) are not kept.
    pub note: Option<String>,
}

impl Tuple {
    /// A tuple with the given id and nothing else, to fill in field by field.
    pub fn new(id: impl Into<String>) -> Self {
        Tuple {
            id: id.into(),
            basic: None,
            contact: None,
            note: None,
        }
    }
}

/// A PIDF presence document, reduced to what an endpoint acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceDocument {
    /// The presentity the document describes (the `entity` attribute, a `pres:` or
    /// `sip:` URI). Empty if a peer left it out.
    pub entity: String,
    /// The tuples, in document order.
    pub tuples: Vec<Tuple>,
    /// Notes that are not a tuple's: the document's own `<note>`s and those of the
    /// data-model `<person>`, in document order. Written back as document-level notes.
    pub notes: Vec<String>,
    /// The RPID activities, as local element names (`"away"`, `"on-the-phone"`,
    /// `"other"`), in document order. Read from `<activities>` in a data-model
    /// `<person>`, and also in a `<tuple>` or its `<status>`, where pre-data-model RPID
    /// publishers put them; written in a `<dm:person>`.
    pub activities: Vec<String>,
}

impl PresenceDocument {
    /// An empty document for `entity`: no tuples, notes or activities.
    pub fn new(entity: impl Into<String>) -> Self {
        PresenceDocument {
            entity: entity.into(),
            tuples: Vec::new(),
            notes: Vec::new(),
            activities: Vec::new(),
        }
    }

    /// The document an endpoint publishes for `availability`: one tuple with id
    /// [`TUPLE_ID`], its `<basic>` and `note`, and the activity given by the mapping
    /// on [`Availability`].
    pub fn from_availability(
        entity: impl Into<String>,
        availability: Availability,
        note: Option<&str>,
    ) -> Self {
        let mut doc = PresenceDocument::new(entity);
        doc.tuples.push(Tuple {
            id: TUPLE_ID.to_owned(),
            basic: Some(availability.basic()),
            contact: None,
            note: note.map(str::to_owned),
        });
        doc.activities
            .extend(availability.activity().map(str::to_owned));
        doc
    }

    /// The overall `<basic>` status: `Open` if any tuple is open, else `Closed` if any
    /// tuple is closed, else `None`.
    pub fn basic(&self) -> Option<Basic> {
        let mut basic = None;
        for tuple in &self.tuples {
            match tuple.basic {
                Some(Basic::Open) => return Some(Basic::Open),
                Some(Basic::Closed) => basic = Some(Basic::Closed),
                None => {}
            }
        }
        basic
    }

    /// The first note anywhere: the tuples' notes in tuple order, then the
    /// document's (and person's) notes.
    pub fn note(&self) -> Option<&str> {
        self.tuples
            .iter()
            .find_map(|t| t.note.as_deref())
            .or_else(|| self.notes.first().map(String::as_str))
    }

    /// Writes the document as PIDF XML, declaring the RPID and data-model namespaces;
    /// activities go in a `<dm:person>` when there are any.
    ///
    /// An activity that is not a plain token (letters, digits, `-`, `_`, `.`, not
    /// starting with a digit, `-` or `.`; or the reserved `note`) is written as
    /// `<rpid:other>` with the text as content, so the output stays well-formed.
    pub fn to_xml(&self) -> String {
        let mut out = String::with_capacity(512);
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str("<presence xmlns=\"");
        out.push_str(PIDF_NS);
        out.push_str("\" xmlns:dm=\"");
        out.push_str(DATA_MODEL_NS);
        out.push_str("\" xmlns:rpid=\"");
        out.push_str(RPID_NS);
        out.push_str("\" entity=\"");
        escape_into(&mut out, &self.entity);
        out.push_str("\">\n");
        for tuple in &self.tuples {
            out.push_str("  <tuple id=\"");
            escape_into(&mut out, &tuple.id);
            out.push_str("\">\n");
            match tuple.basic {
                Some(basic) => {
                    out.push_str("    <status><basic>");
                    out.push_str(basic.as_str());
                    out.push_str("</basic></status>\n");
                }
                None => out.push_str("    <status/>\n"),
            }
            if let Some(contact) = &tuple.contact {
                push_element(&mut out, "    ", "contact", contact);
            }
            if let Some(note) = &tuple.note {
                push_element(&mut out, "    ", "note", note);
            }
            out.push_str("  </tuple>\n");
        }
        for note in &self.notes {
            push_element(&mut out, "  ", "note", note);
        }
        if !self.activities.is_empty() {
            out.push_str("  <dm:person id=\"");
            out.push_str(PERSON_ID);
            out.push_str("\">\n    <rpid:activities>");
            for activity in &self.activities {
                if is_activity_token(activity) {
                    out.push_str("<rpid:");
                    out.push_str(activity);
                    out.push_str("/>");
                } else {
                    out.push_str("<rpid:other>");
                    escape_into(&mut out, activity);
                    out.push_str("</rpid:other>");
                }
            }
            out.push_str("</rpid:activities>\n  </dm:person>\n");
        }
        out.push_str("</presence>\n");
        out
    }

    /// Parses a PIDF body (see the module documentation for what is kept and what is
    /// tolerated).
    ///
    /// # Errors
    ///
    /// [`PidfError::TooLarge`], [`PidfError::TooManyTuples`], [`PidfError::TooDeep`]
    /// when a limit is exceeded; [`PidfError::NotPidf`] when the root element is not
    /// `presence`; [`PidfError::Malformed`] for anything that is not well-formed UTF-8
    /// XML.
    pub fn parse(body: &[u8]) -> Result<PresenceDocument, PidfError> {
        if body.len() > MAX_BODY {
            return Err(PidfError::TooLarge {
                size: body.len(),
                limit: MAX_BODY,
            });
        }
        let text = std::str::from_utf8(body)
            .map_err(|e| PidfError::Malformed(format!("body is not UTF-8: {e}")))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut reader = NsReader::from_str(text);
        let mut parser = Parser::default();
        loop {
            let (ns, event) = reader
                .read_resolved_event()
                .map(|(ns, event)| (Ns::of(&ns), event))
                .map_err(|e| {
                    PidfError::Malformed(format!("{e} (near byte {})", reader.error_position()))
                })?;
            match event {
                Event::Start(start) => parser.open(&start, ns, reader.decoder(), false)?,
                Event::Empty(start) => parser.open(&start, ns, reader.decoder(), true)?,
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

/// Why a PIDF body was rejected by [`PresenceDocument::parse`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PidfError {
    /// The body is larger than [`MAX_BODY`].
    #[error("PIDF body of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge {
        /// The body's size in bytes.
        size: usize,
        /// The limit it exceeded.
        limit: usize,
    },
    /// The document has more than [`MAX_TUPLES`] tuples.
    #[error("PIDF document has more than {limit} tuples")]
    TooManyTuples {
        /// The limit it exceeded.
        limit: usize,
    },
    /// The document nests elements deeper than [`MAX_DEPTH`].
    #[error("PIDF document nests elements deeper than {limit} levels")]
    TooDeep {
        /// The limit it exceeded.
        limit: usize,
    },
    /// The body is not well-formed UTF-8 XML; the text says where or why.
    #[error("malformed PIDF document: {0}")]
    Malformed(String),
    /// The body is XML but its root element is not `presence`.
    #[error("not a PIDF document: the root element is not <presence>")]
    NotPidf,
}

fn malformed(error: impl std::fmt::Display) -> PidfError {
    PidfError::Malformed(error.to_string())
}

/// Where a `<note>` belongs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoteOwner {
    /// Directly under `<presence>`.
    Presence,
    /// Under the current `<tuple>`.
    Tuple,
    /// Under a data-model `<person>`.
    Person,
}

/// What an open element means to the parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Presence,
    Tuple,
    Status,
    Basic,
    Contact,
    Note(NoteOwner),
    Person,
    Activities,
    /// Anything else, including an activity element (its name is taken on open) and
    /// every unknown extension; its content is skipped.
    Ignored,
}

impl Frame {
    /// Whether text directly inside this element is collected.
    fn collects_text(self) -> bool {
        matches!(self, Frame::Basic | Frame::Contact | Frame::Note(_))
    }
}

/// The namespace an element's name is in.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ns {
    /// No prefix, and no default namespace declared.
    None,
    /// This namespace name.
    Bound(Vec<u8>),
    /// A prefix that was never declared (tolerated): the same prefix only.
    Undeclared(Vec<u8>),
}

impl Ns {
    fn of(resolved: &ResolveResult<'_>) -> Ns {
        match resolved {
            ResolveResult::Unbound => Ns::None,
            ResolveResult::Bound(n) => Ns::Bound(n.as_ref().to_vec()),
            ResolveResult::Unknown(prefix) => Ns::Undeclared(prefix.clone()),
        }
    }
}

/// The state of [`PresenceDocument::parse`] between reader events.
#[derive(Debug, Default)]
struct Parser {
    /// The open elements, root first.
    stack: Vec<Frame>,
    /// The namespace of the root `<presence>`: PIDF's own elements are those in it
    /// (normally [`PIDF_NS`]; a peer that got it wrong everywhere is still read).
    pidf: Option<Ns>,
    /// The document, once the root has been opened.
    doc: Option<PresenceDocument>,
    /// The tuple being read.
    tuple: Option<Tuple>,
    /// Text collected for the innermost element, if it collects text.
    text: String,
    /// Whether the root element has been closed.
    root_closed: bool,
}

impl Parser {
    fn open(
        &mut self,
        start: &BytesStart<'_>,
        ns: Ns,
        decoder: Decoder,
        empty: bool,
    ) -> Result<(), PidfError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(PidfError::TooDeep { limit: MAX_DEPTH });
        }
        let local = start.local_name();
        // Elements of PIDF are known by namespace, not prefix: an extension's `<x:note>`
        // or `<basic>` in another default namespace is not PIDF's (RFC 3863 §4). The
        // data-model and RPID elements are known by their local names alone.
        let pidf = self.pidf.as_ref().is_none_or(|p| *p == ns);
        let name = local.as_ref();
        let frame = match self.stack.last().copied() {
            None => {
                if self.root_closed {
                    return Err(PidfError::Malformed(
                        "element after the root element".to_owned(),
                    ));
                }
                if name != b"presence" {
                    return Err(PidfError::NotPidf);
                }
                let entity = attribute(start, decoder, b"entity")?.unwrap_or_default();
                self.doc = Some(PresenceDocument::new(entity));
                self.pidf = Some(ns);
                Frame::Presence
            }
            Some(Frame::Presence) => match name {
                b"tuple" if pidf => {
                    let count = self.doc.as_ref().map_or(0, |d| d.tuples.len());
                    if count >= MAX_TUPLES {
                        return Err(PidfError::TooManyTuples { limit: MAX_TUPLES });
                    }
                    let id = attribute(start, decoder, b"id")?.unwrap_or_default();
                    self.tuple = Some(Tuple::new(id));
                    Frame::Tuple
                }
                b"note" if pidf => Frame::Note(NoteOwner::Presence),
                b"person" => Frame::Person,
                _ => Frame::Ignored,
            },
            Some(Frame::Tuple) => match name {
                b"status" if pidf => Frame::Status,
                b"contact" if pidf => Frame::Contact,
                b"note" if pidf => Frame::Note(NoteOwner::Tuple),
                // Pre-data-model RPID put activities straight in the tuple.
                b"activities" => Frame::Activities,
                _ => Frame::Ignored,
            },
            Some(Frame::Status) => match name {
                b"basic" if pidf => Frame::Basic,
                b"activities" => Frame::Activities,
                _ => Frame::Ignored,
            },
            Some(Frame::Person) => match name {
                b"note" => Frame::Note(NoteOwner::Person),
                b"activities" => Frame::Activities,
                _ => Frame::Ignored,
            },
            Some(Frame::Activities) => {
                // RFC 4480 lets <activities> carry its own <note>s; they are not
                // activities. Every other child names one.
                if name != b"note" {
                    if let Some(doc) = self.doc.as_mut() {
                        doc.activities
                            .push(String::from_utf8_lossy(name).into_owned());
                    }
                }
                Frame::Ignored
            }
            Some(Frame::Basic | Frame::Contact | Frame::Note(_) | Frame::Ignored) => Frame::Ignored,
        };
        if frame.collects_text() {
            self.text.clear();
        }
        self.stack.push(frame);
        if empty {
            self.close()?;
        }
        Ok(())
    }

    fn close(&mut self) -> Result<(), PidfError> {
        let Some(frame) = self.stack.pop() else {
            return Err(PidfError::Malformed(
                "closing tag without an open element".to_owned(),
            ));
        };
        // Elements that collect text have only ignored children, so the buffer is
        // theirs alone.
        let text = if frame.collects_text() {
            std::mem::take(&mut self.text)
        } else {
            String::new()
        };
        let text = text.trim();
        match frame {
            Frame::Presence => self.root_closed = true,
            Frame::Tuple => {
                if let (Some(tuple), Some(doc)) = (self.tuple.take(), self.doc.as_mut()) {
                    doc.tuples.push(tuple);
                }
            }
            Frame::Basic => {
                if let Some(tuple) = self.tuple.as_mut() {
                    if tuple.basic.is_none() {
                        tuple.basic = Basic::from_token(text);
                    }
                }
            }
            Frame::Contact => {
                if let Some(tuple) = self.tuple.as_mut() {
                    if tuple.contact.is_none() && !text.is_empty() {
                        tuple.contact = Some(text.to_owned());
                    }
                }
            }
            Frame::Note(NoteOwner::Tuple) => {
                if let Some(tuple) = self.tuple.as_mut() {
                    if tuple.note.is_none() && !text.is_empty() {
                        tuple.note = Some(text.to_owned());
                    }
                }
            }
            Frame::Note(NoteOwner::Presence | NoteOwner::Person) => {
                if let Some(doc) = self.doc.as_mut() {
                    if !text.is_empty() {
                        doc.notes.push(text.to_owned());
                    }
                }
            }
            Frame::Status | Frame::Person | Frame::Activities | Frame::Ignored => {}
        }
        Ok(())
    }

    fn text(&mut self, text: &str) -> Result<(), PidfError> {
        match self.stack.last() {
            Some(frame) if frame.collects_text() => self.text.push_str(text),
            Some(_) => {}
            None => {
                if !text.trim().is_empty() {
                    return Err(PidfError::Malformed(
                        "text outside the root element".to_owned(),
                    ));
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<PresenceDocument, PidfError> {
        if !self.stack.is_empty() {
            return Err(PidfError::Malformed(
                "document ends inside an element".to_owned(),
            ));
        }
        self.doc
            .ok_or_else(|| PidfError::Malformed("no root element".to_owned()))
    }
}

/// The unescaped, trimmed value of the unprefixed attribute `key`, if present. All
/// attributes are checked, so a duplicate or broken one is an error.
fn attribute(
    start: &BytesStart<'_>,
    decoder: Decoder,
    key: &[u8],
) -> Result<Option<String>, PidfError> {
    let mut found = None;
    for attr in start.attributes() {
        let attr = attr.map_err(malformed)?;
        if found.is_none() && attr.key.as_ref() == key {
            let value = attr
                .decoded_and_normalized_value(XmlVersion::Implicit1_0, decoder)
                .map_err(malformed)?;
            found = Some(value.trim().to_owned());
        }
    }
    Ok(found)
}

/// The text a `&...;` reference in content stands for: a character reference or one
/// of the five predefined entities. Anything else is an error (no DTD is read).
fn resolve_reference(reference: &BytesRef<'_>) -> Result<Cow<'static, str>, PidfError> {
    if let Some(ch) = reference.resolve_char_ref().map_err(malformed)? {
        return Ok(Cow::Owned(ch.to_string()));
    }
    let name = reference.decode().map_err(malformed)?;
    quick_xml::escape::resolve_predefined_entity(&name)
        .map(Cow::Borrowed)
        .ok_or_else(|| PidfError::Malformed(format!("unknown entity &{name};")))
}

/// Whether `activity` can be written as an element name `<rpid:activity/>` and read
/// back as the same activity.
fn is_activity_token(activity: &str) -> bool {
    let mut chars = activity.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    activity != "note"
        && (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Writes `<name>text</name>` on its own line.
fn push_element(out: &mut String, indent: &str, name: &str, text: &str) {
    out.push_str(indent);
    out.push('<');
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

    /// The example presence document of RFC 3863 (cited as §3.4): two tuples, a
    /// status extension, notes in two languages, a timestamp and a document note.
    const RFC3863_EXAMPLE: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
    xmlns:im="urn:ietf:params:xml:ns:pidf:im"
    xmlns:myex="http://id.example.com/presence/"
    entity="pres:someone@example.com">
  <tuple id="bs35r9">
    <status>
      <basic>open</basic>
      <im:im>busy</im:im>
      <myex:location>home</myex:location>
    </status>
    <contact priority="0.8">im:someone@mobilecarrier.net</contact>
    <note xml:lang="en">Don't Disturb Please!</note>
    <note xml:lang="fr">Ne derangez pas, s'il vous plait</note>
    <timestamp>2001-10-27T16:49:29Z</timestamp>
  </tuple>
  <tuple id="eg92n8">
    <status>
      <basic>open</basic>
    </status>
    <contact priority="1.0">mailto:someone@example.com</contact>
  </tuple>
  <note>I'll be in Tokyo next week</note>
</presence>
"#;

    /// What a Kamailio presence server relays for a SIP client that set itself away:
    /// other prefixes, the person in the data-model namespace.
    const KAMAILIO_AWAY: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<presence xmlns="urn:ietf:params:xml:ns:pidf"
 xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model"
 xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid"
 xmlns:c="urn:ietf:params:xml:ns:pidf:cipid"
 entity="sip:bob@example.org">
<tuple id="t54bb0569">
<status><basic>open</basic></status>
</tuple>
<dm:person id="p65f3307a">
<rpid:activities><rpid:away/></rpid:activities>
<dm:note>Back at 3</dm:note>
</dm:person>
</presence>"#;

    #[test]
    fn rfc3863_example_parses() {
        let doc = PresenceDocument::parse(RFC3863_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(doc.entity, "pres:someone@example.com");
        assert_eq!(doc.tuples.len(), 2);
        let first = &doc.tuples[0];
        assert_eq!(first.id, "bs35r9");
        assert_eq!(first.basic, Some(Basic::Open));
        assert_eq!(
            first.contact.as_deref(),
            Some("im:someone@mobilecarrier.net")
        );
        assert_eq!(first.note.as_deref(), Some("Don't Disturb Please!"));
        let second = &doc.tuples[1];
        assert_eq!(second.id, "eg92n8");
        assert_eq!(second.basic, Some(Basic::Open));
        assert_eq!(
            second.contact.as_deref(),
            Some("mailto:someone@example.com")
        );
        assert_eq!(second.note, None);
        assert_eq!(doc.notes, vec!["I'll be in Tokyo next week".to_owned()]);
        assert!(doc.activities.is_empty());
        assert_eq!(doc.basic(), Some(Basic::Open));
        assert_eq!(doc.note(), Some("Don't Disturb Please!"));
        assert_eq!(Availability::from_document(&doc), Availability::Online);
    }

    #[test]
    fn round_trip_gives_an_equal_document() {
        let mut doc = PresenceDocument::new("sip:alice@example.com");
        doc.tuples.push(Tuple {
            id: "a1".to_owned(),
            basic: Some(Basic::Open),
            contact: Some("sip:alice@192.0.2.1;transport=tls".to_owned()),
            note: Some("At my desk".to_owned()),
        });
        doc.tuples.push(Tuple {
            id: "a2".to_owned(),
            basic: Some(Basic::Closed),
            contact: None,
            note: None,
        });
        doc.tuples.push(Tuple::new("a3"));
        doc.notes.push("Working from home".to_owned());
        doc.activities.push("on-the-phone".to_owned());
        doc.activities.push("meeting".to_owned());
        let xml = doc.to_xml();
        assert_eq!(PresenceDocument::parse(xml.as_bytes()).unwrap(), doc);
    }

    #[test]
    fn every_availability_round_trips() {
        for availability in [
            Availability::Online,
            Availability::Busy,
            Availability::DoNotDisturb,
            Availability::Away,
            Availability::Offline,
        ] {
            let doc = PresenceDocument::from_availability(
                "sip:app@example.com",
                availability,
                Some("note"),
            );
            assert_eq!(doc.tuples[0].id, TUPLE_ID);
            assert_eq!(doc.basic(), Some(availability.basic()));
            let parsed = PresenceDocument::parse(doc.to_xml().as_bytes()).unwrap();
            assert_eq!(parsed, doc);
            assert_eq!(Availability::from_document(&parsed), availability);
            assert_eq!(parsed.note(), Some("note"));
        }
    }

    #[test]
    fn to_xml_writes_the_person_with_activities() {
        let doc =
            PresenceDocument::from_availability("sip:a@example.com", Availability::Busy, None);
        let xml = doc.to_xml();
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"));
        assert!(xml.contains("<presence xmlns=\"urn:ietf:params:xml:ns:pidf\""));
        assert!(xml.contains("xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\""));
        assert!(xml.contains("xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\""));
        assert!(xml.contains(
            "<dm:person id=\"p1\">\n    <rpid:activities><rpid:busy/></rpid:activities>"
        ));
        let online =
            PresenceDocument::from_availability("sip:a@example.com", Availability::Online, None);
        assert!(!online.to_xml().contains("dm:person"));
    }

    #[test]
    fn kamailio_style_person_gives_away() {
        let doc = PresenceDocument::parse(KAMAILIO_AWAY.as_bytes()).unwrap();
        assert_eq!(doc.entity, "sip:bob@example.org");
        assert_eq!(doc.activities, vec!["away".to_owned()]);
        assert_eq!(doc.notes, vec!["Back at 3".to_owned()]);
        assert_eq!(doc.note(), Some("Back at 3"));
        assert_eq!(Availability::from_document(&doc), Availability::Away);
    }

    #[test]
    fn prefixes_are_ignored() {
        let body = r#"<p:presence xmlns:p="urn:ietf:params:xml:ns:pidf" entity="sip:c@example.com">
            <p:tuple id="x"><p:status><p:basic> closed </p:basic></p:status>
            <p:note>  gone  </p:note></p:tuple></p:presence>"#;
        let doc = PresenceDocument::parse(body.as_bytes()).unwrap();
        assert_eq!(doc.tuples[0].basic, Some(Basic::Closed));
        assert_eq!(doc.tuples[0].note.as_deref(), Some("gone"));
        assert_eq!(Availability::from_document(&doc), Availability::Offline);
    }

    #[test]
    fn lookalikes_of_other_namespaces_are_not_pidf() {
        // An extension may use PIDF's local names: what counts is the namespace (RFC 3863
        // §4), whichever prefix, or default namespace, either side uses.
        let prefixed_pidf = r#"<p:presence xmlns:p="urn:ietf:params:xml:ns:pidf"
            xmlns="urn:example:ext" entity="sip:j@example.com">
            <p:tuple id="t1">
              <p:status><basic>closed</basic><p:basic>open</p:basic></p:status>
              <note>an extension's note</note><p:note>in</p:note>
            </p:tuple>
            <tuple id="ext"><status><basic>closed</basic></status></tuple>
            <note>an extension's document note</note>
            </p:presence>"#;
        let default_pidf = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf"
            xmlns:x="urn:example:ext" entity="sip:j@example.com">
            <tuple id="t1">
              <status><x:basic>closed</x:basic><basic>open</basic></status>
              <x:note>an extension's note</x:note><note>in</note>
            </tuple>
            <x:tuple id="ext"><x:status><x:basic>closed</x:basic></x:status></x:tuple>
            <x:note>an extension's document note</x:note>
            </presence>"#;
        for body in [prefixed_pidf, default_pidf] {
            let doc = PresenceDocument::parse(body.as_bytes()).unwrap();
            assert_eq!(doc.tuples.len(), 1, "{body}");
            assert_eq!(doc.tuples[0].id, "t1");
            assert_eq!(doc.tuples[0].basic, Some(Basic::Open), "{body}");
            assert_eq!(doc.tuples[0].note.as_deref(), Some("in"), "{body}");
            assert!(doc.notes.is_empty(), "{body}: {:?}", doc.notes);
            assert_eq!(Availability::from_document(&doc), Availability::Online);
        }
    }

    #[test]
    fn activities_take_their_local_names() {
        let body = r#"<presence xmlns="urn:ietf:params:xml:ns:pidf"
            xmlns:r="urn:ietf:params:xml:ns:pidf:rpid"
            xmlns:pdm="urn:ietf:params:xml:ns:pidf:data-model" entity="sip:d@example.com">
            <tuple id="t"><status><basic>open</basic></status></tuple>
            <pdm:person id="p"><r:activities><r:note>lunch talk</r:note>
            <r:other>juggling</r:other><r:on-the-phone/></r:activities></pdm:person>
            </presence>"#;
        let doc = PresenceDocument::parse(body.as_bytes()).unwrap();
        assert_eq!(
            doc.activities,
            vec!["other".to_owned(), "on-the-phone".to_owned()]
        );
        assert_eq!(Availability::from_document(&doc), Availability::Busy);
    }

    #[test]
    fn availability_precedence_and_defaults() {
        let mut doc = PresenceDocument::new("sip:e@example.com");
        assert_eq!(Availability::from_document(&doc), Availability::Offline);
        doc.activities.push("away".to_owned());
        assert_eq!(Availability::from_document(&doc), Availability::Away);
        doc.activities.push("Meeting".to_owned());
        assert_eq!(Availability::from_document(&doc), Availability::Busy);
        doc.activities.push("presentation".to_owned());
        assert_eq!(
            Availability::from_document(&doc),
            Availability::DoNotDisturb
        );
        doc.tuples.push(Tuple {
            basic: Some(Basic::Closed),
            ..Tuple::new("c")
        });
        assert_eq!(Availability::from_document(&doc), Availability::Offline);
        doc.tuples.push(Tuple {
            basic: Some(Basic::Open),
            ..Tuple::new("o")
        });
        assert_eq!(doc.basic(), Some(Basic::Open));
        assert_eq!(
            Availability::from_document(&doc),
            Availability::DoNotDisturb
        );
    }

    #[test]
    fn special_characters_round_trip() {
        let note = "<b>Tom & \"Jerry\"</b> isn't\there\r\nnow";
        let mut doc = PresenceDocument::from_availability(
            "sip:o'brien&co@example.com",
            Availability::Away,
            Some(note),
        );
        doc.tuples[0].id = "id\"<&>".to_owned();
        doc.notes.push("a < b && c > d".to_owned());
        doc.activities.push("not a token <&>".to_owned());
        let xml = doc.to_xml();
        assert!(xml.contains("&lt;b&gt;Tom &amp; &quot;Jerry&quot;&lt;/b&gt;"));
        let parsed = PresenceDocument::parse(xml.as_bytes()).unwrap();
        assert_eq!(parsed.entity, doc.entity);
        assert_eq!(parsed.tuples, doc.tuples);
        assert_eq!(parsed.notes, doc.notes);
        // The non-token activity comes back as `other`.
        assert_eq!(
            parsed.activities,
            vec!["away".to_owned(), "other".to_owned()]
        );
    }

    #[test]
    fn control_characters_do_not_break_the_document() {
        let doc = PresenceDocument::from_availability(
            "sip:f@example.com",
            Availability::Online,
            Some("bell\u{7}here"),
        );
        let parsed = PresenceDocument::parse(doc.to_xml().as_bytes()).unwrap();
        assert_eq!(parsed.note(), Some("bell\u{fffd}here"));
    }

    #[test]
    fn unknown_extensions_are_ignored() {
        let body = r#"<?xml version="1.0"?>
<!-- leading comment -->
<presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:x="urn:example:ext"
    xmlns:c="urn:ietf:params:xml:ns:pidf:caps" entity="sip:g@example.com">
  <x:header><x:note>not a presence note</x:note><basic>closed</basic></x:header>
  <tuple id="t1">
    <status><basic>open</basic><x:mood>happy</x:mood></status>
    <c:servcaps><c:audio>true</c:audio></c:servcaps>
    <x:deep><x:deeper><tuple id="fake"/><note>hidden</note></x:deeper></x:deep>
    <note>real<x:b>ignored</x:b> note</note>
    <timestamp>2005-01-01T00:00:00Z</timestamp>
  </tuple>
  <x:trailer mustUnderstand="false"/>
  <?some-pi data?>
</presence>"#;
        let doc = PresenceDocument::parse(body.as_bytes()).unwrap();
        assert_eq!(doc.tuples.len(), 1);
        assert_eq!(doc.tuples[0].basic, Some(Basic::Open));
        assert_eq!(doc.tuples[0].note.as_deref(), Some("real note"));
        assert!(doc.notes.is_empty());
        assert!(doc.activities.is_empty());
    }

    #[test]
    fn entities_cdata_and_bom_are_read() {
        let body = "\u{feff}<presence entity=\"sip:h@example.com\"><tuple id=\"t\">\
            <note>caf&#233; &amp; <![CDATA[<tea>]]> &#x263A;</note></tuple></presence>";
        let doc = PresenceDocument::parse(body.as_bytes()).unwrap();
        assert_eq!(doc.tuples[0].note.as_deref(), Some("café & <tea> ☺"));
        assert_eq!(doc.tuples[0].basic, None);
        assert_eq!(doc.basic(), None);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let too_large = vec![b' '; MAX_BODY + 1];
        assert!(matches!(
            PresenceDocument::parse(&too_large),
            Err(PidfError::TooLarge { .. })
        ));
        assert!(matches!(
            PresenceDocument::parse(b"<isComposing/>"),
            Err(PidfError::NotPidf)
        ));
        for garbage in [
            &b""[..],
            b"garbage",
            b"   ",
            b"<presence",
            b"<presence></tuple>",
            b"<presence><tuple></presence>",
            b"<presence/><presence/>",
            b"<presence/>trailing",
            b"<presence entity='a' entity='b'/>",
            b"<presence><note>&nosuch;</note></presence>",
            b"<presence><note>&#0;</note></presence>",
            b"\xff\xfe<\x00p\x00",
            b"<presence entity=\"\xc3\x28\"/>",
        ] {
            assert!(
                matches!(
                    PresenceDocument::parse(garbage),
                    Err(PidfError::Malformed(_))
                ),
                "{:?} -> {:?}",
                String::from_utf8_lossy(garbage),
                PresenceDocument::parse(garbage)
            );
        }
    }

    #[test]
    fn tuple_and_depth_limits() {
        let mut body = String::from("<presence entity=\"sip:i@example.com\">");
        for i in 0..MAX_TUPLES {
            body.push_str(&format!("<tuple id=\"t{i}\"/>"));
        }
        let at_limit = format!("{body}</presence>");
        assert_eq!(
            PresenceDocument::parse(at_limit.as_bytes())
                .unwrap()
                .tuples
                .len(),
            MAX_TUPLES
        );
        let over = format!("{body}<tuple id=\"one-more\"/></presence>");
        assert_eq!(
            PresenceDocument::parse(over.as_bytes()),
            Err(PidfError::TooManyTuples { limit: MAX_TUPLES })
        );

        let nested = |depth: usize| {
            let mut s = String::from("<presence>");
            for _ in 1..depth {
                s.push_str("<x>");
            }
            for _ in 1..depth {
                s.push_str("</x>");
            }
            s.push_str("</presence>");
            s
        };
        assert!(PresenceDocument::parse(nested(MAX_DEPTH).as_bytes()).is_ok());
        assert_eq!(
            PresenceDocument::parse(nested(MAX_DEPTH + 1).as_bytes()),
            Err(PidfError::TooDeep { limit: MAX_DEPTH })
        );
    }

    #[test]
    fn every_truncation_returns_without_panicking() {
        for source in [RFC3863_EXAMPLE, KAMAILIO_AWAY] {
            let bytes = source.as_bytes();
            let mut complete = 0;
            for end in 0..=bytes.len() {
                // Ok or Err are both acceptable; reaching the next line means no panic.
                if PresenceDocument::parse(&bytes[..end]).is_ok() {
                    complete += 1;
                }
            }
            // Only prefixes that contain the whole root element parse.
            let root_end = source.rfind("</presence>").unwrap() + "</presence>".len();
            assert_eq!(complete, bytes.len() - root_end + 1);
        }
    }

    #[test]
    fn errors_have_readable_messages() {
        assert_eq!(
            PidfError::TooLarge {
                size: 70000,
                limit: MAX_BODY
            }
            .to_string(),
            "PIDF body of 70000 bytes exceeds the 65536-byte limit"
        );
        assert_eq!(
            PidfError::NotPidf.to_string(),
            "not a PIDF document: the root element is not <presence>"
        );
        let err = PresenceDocument::parse(b"<presence><tuple></presence>").unwrap_err();
        assert!(
            err.to_string().starts_with("malformed PIDF document: "),
            "{err}"
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
        for source in [RFC3863_EXAMPLE, KAMAILIO_AWAY] {
            for _ in 0..2000 {
                let mut bytes = source.as_bytes().to_vec();
                for _ in 0..=next() % 4 {
                    let at = next() % bytes.len();
                    bytes[at] = PICKS[next() % PICKS.len()];
                }
                let _ = PresenceDocument::parse(&bytes);
            }
        }
    }
}
