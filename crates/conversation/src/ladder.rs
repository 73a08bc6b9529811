//! SIP ladder diagrams (text and SVG) recorded from the platform's wire tap.
//!
//! A [`LadderRecorder`] is a [`MessageObserver`]: hand a clone of it to the platform
//! settings (`.observer(recorder.as_observer())`) and it keeps one short record per SIP
//! message the platform sends or receives (when, which way, which remote address, a label
//! such as `INVITE` or `200 OK (INVITE)`, and the Call-ID). Later, [`LadderRecorder::snapshot`]
//! turns the records into a [`Ladder`], which [`Ladder::for_call`] narrows to one dialog and
//! [`Ladder::render_text`] / [`Ladder::render_svg`] draw.
//!
//! The recorder runs on the platform's driver task, so it does as little as it can: it reads
//! the start line and scans the header lines for `CSeq` and `Call-ID` (no full parse, no
//! body), copies a few short strings and holds its lock only to push one record. Memory is
//! bounded: at most `capacity` records are kept, the oldest are dropped first and counted
//! ([`Ladder::dropped`]).
//!
//! Bytes that are not a SIP message (no SIP request or status line) are **recorded** with the
//! label `?` and an empty Call-ID, so that a ladder shows that something odd crossed the
//! wire; a message made only of CR/LF (a keep-alive) is ignored.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use collaboration_platform::{MessageObserver, WireDirection};

/// Records kept by [`LadderRecorder::new`] before the oldest are dropped.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Parties [`Ladder::from_arrows`] fills with placeholders at most.
pub const MAX_PLACEHOLDER_PARTIES: usize = 1024;

/// Columns [`Ladder::render_text`] draws at most: parties past the first
/// `MAX_TEXT_COLUMNS - 1` share the last column, so that the text grows with the number of
/// messages, not with messages × parties (a recorder sees one party per ephemeral port).
pub const MAX_TEXT_COLUMNS: usize = 16;

/// Label of bytes that are not a SIP message.
pub const UNKNOWN_LABEL: &str = "?";

/// Longest reason phrase kept in a label (characters); longer ones are cut with `…`.
const MAX_REASON_CHARS: usize = 64;
/// Longest Call-ID kept (characters); longer ones are cut (bounded memory per record).
const MAX_CALL_ID_CHARS: usize = 256;
/// Longest method kept in a label (characters; a method is any token, as long as the
/// message); longer ones are cut with `…`.
const MAX_METHOD_CHARS: usize = 32;
/// Narrowest text column (characters between two lifelines, lifeline included).
const MIN_COLUMN: usize = 20;
/// Widest text column.
const MAX_COLUMN: usize = 40;
/// Characters of a text column that are not label: the lifeline, `- ` before, ` ->` after.
const COLUMN_DECORATION: usize = 6;

/// One message seen on the wire, as kept by the recorder.
#[derive(Debug, Clone)]
struct Record {
    at: Duration,
    direction: WireDirection,
    remote: SocketAddr,
    label: String,
    call_id: String,
}

#[derive(Debug)]
struct State {
    local: String,
    names: HashMap<SocketAddr, String>,
    ip_names: HashMap<std::net::IpAddr, String>,
    records: VecDeque<Record>,
    capacity: usize,
    dropped: u64,
}

/// Records every SIP message a platform sends or receives, for ladder diagrams.
///
/// A cheap, cloneable handle: clones share the same records, so an application keeps one
/// clone to take [`snapshot`](Self::snapshot)s and gives another to the platform as its
/// [`MessageObserver`].
#[derive(Clone)]
pub struct LadderRecorder {
    started: Instant,
    state: Arc<Mutex<State>>,
}

impl fmt::Debug for LadderRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.lock();
        f.debug_struct("LadderRecorder")
            .field("local", &st.local)
            .field("records", &st.records.len())
            .field("capacity", &st.capacity)
            .field("dropped", &st.dropped)
            .finish()
    }
}

impl LadderRecorder {
    /// A recorder whose own column (the observing platform) is named `local_name`, keeping
    /// at most [`DEFAULT_CAPACITY`] records. Timestamps count from now.
    pub fn new(local_name: impl Into<String>) -> Self {
        Self::with_capacity(local_name, DEFAULT_CAPACITY)
    }

    /// Like [`new`](Self::new) but keeping at most `capacity` records (the oldest are dropped
    /// and counted). A capacity of 0 keeps nothing and counts every message as dropped.
    pub fn with_capacity(local_name: impl Into<String>, capacity: usize) -> Self {
        LadderRecorder {
            started: Instant::now(),
            state: Arc::new(Mutex::new(State {
                local: local_name.into(),
                names: HashMap::new(),
                ip_names: HashMap::new(),
                records: VecDeque::with_capacity(capacity.min(1024)),
                capacity,
                dropped: 0,
            })),
        }
    }

    /// Names the column of the remote party at `addr` (unnamed addresses are shown as
    /// `ip:port`). Applies to every later snapshot, including messages already recorded.
    /// Addresses given the same name share one column.
    pub fn name(&self, addr: SocketAddr, name: impl Into<String>) {
        self.lock().names.insert(addr, name.into());
    }

    /// Names the column of every address of host `ip` not named by [`name`](Self::name):
    /// a peer reached on its listening port also connects from ephemeral ports, and those
    /// belong in the same column.
    pub fn name_host(&self, ip: std::net::IpAddr, name: impl Into<String>) {
        self.lock().ip_names.insert(ip, name.into());
    }

    /// This recorder as the platform's observer (`settings.observer(recorder.as_observer())`).
    pub fn as_observer(&self) -> Arc<dyn MessageObserver> {
        Arc::new(self.clone())
    }

    /// Forgets every record and resets the dropped count (names are kept).
    pub fn clear(&self) {
        let mut st = self.lock();
        st.records.clear();
        st.dropped = 0;
    }

    /// Every record kept so far, as a ladder: the local party first, then the remote parties
    /// in the order they first appear among the kept records.
    pub fn snapshot(&self) -> Ladder {
        let st = self.lock();
        let mut parties = vec![st.local.clone()];
        let mut index: HashMap<String, usize> = HashMap::new();
        index.insert(st.local.clone(), 0);
        let mut arrows = Vec::with_capacity(st.records.len());
        for r in &st.records {
            let name = st
                .names
                .get(&r.remote)
                .or_else(|| st.ip_names.get(&r.remote.ip()))
                .cloned()
                .unwrap_or_else(|| r.remote.to_string());
            let remote = *index.entry(name).or_insert_with_key(|name| {
                parties.push(name.clone());
                parties.len() - 1
            });
            let (from, to) = match r.direction {
                WireDirection::Sent => (0, remote),
                WireDirection::Received => (remote, 0),
            };
            arrows.push(Arrow {
                at: r.at,
                from,
                to,
                label: r.label.clone(),
                call_id: r.call_id.clone(),
            });
        }
        Ladder {
            parties,
            arrows,
            dropped: st.dropped,
        }
    }

    /// The state, even if a panicking thread poisoned the lock (records stay consistent:
    /// every critical section is a single push or read).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MessageObserver for LadderRecorder {
    fn observe(&self, direction: WireDirection, remote: SocketAddr, wire: &Bytes) {
        let at = self.started.elapsed();
        let Some((label, call_id)) = summarize(wire) else {
            return;
        };
        let record = Record {
            at,
            direction,
            remote,
            label,
            call_id,
        };
        let mut st = self.lock();
        if st.capacity == 0 {
            st.dropped += 1;
            return;
        }
        while st.records.len() >= st.capacity {
            st.records.pop_front();
            st.dropped += 1;
        }
        st.records.push_back(record);
    }
}

/// One message of a ladder: an arrow from one party's lifeline to another's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrow {
    /// When the message was seen, counted from the recorder's creation.
    pub at: Duration,
    /// Index into [`Ladder::parties`] of the sender.
    pub from: usize,
    /// Index into [`Ladder::parties`] of the receiver.
    pub to: usize,
    /// What the message was: the method of a request, `status reason (CSeq method)` of a
    /// response, [`UNKNOWN_LABEL`] for bytes that are not SIP.
    pub label: String,
    /// The message's Call-ID (empty when it had none).
    pub call_id: String,
}

/// A ladder diagram: parties (one lifeline each) and the messages between them, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ladder {
    parties: Vec<String>,
    arrows: Vec<Arrow>,
    dropped: u64,
}

impl Ladder {
    /// A ladder from parts, for tests and for applications merging recordings. An arrow whose
    /// `from` or `to` is past the end of `parties` gets placeholder parties (`#3` for index 3)
    /// rather than a panic, up to [`MAX_PLACEHOLDER_PARTIES`] parties in all; an arrow past
    /// that is left out (an index such as `usize::MAX` overflowed, or made billions of
    /// placeholders).
    pub fn from_arrows(mut parties: Vec<String>, mut arrows: Vec<Arrow>) -> Ladder {
        let limit = parties.len().max(MAX_PLACEHOLDER_PARTIES);
        arrows.retain(|a| a.from < limit && a.to < limit);
        let needed = arrows
            .iter()
            .map(|a| a.from.max(a.to) + 1)
            .max()
            .unwrap_or(0);
        while parties.len() < needed {
            parties.push(format!("#{}", parties.len()));
        }
        Ladder {
            parties,
            arrows,
            dropped: 0,
        }
    }

    /// The same ladder saying that `dropped` earlier messages are missing (when merging
    /// recordings, carry over their [`dropped`](Self::dropped) counts).
    pub fn with_dropped(mut self, dropped: u64) -> Ladder {
        self.dropped = dropped;
        self
    }

    /// The column names: for a recorder's snapshot, the local party first, then the remote
    /// parties in first-seen order.
    pub fn parties(&self) -> &[String] {
        &self.parties
    }

    /// The messages, in the order they were seen.
    pub fn arrows(&self) -> &[Arrow] {
        &self.arrows
    }

    /// How many older messages the recorder dropped to stay within its capacity. The count
    /// is the recorder's total: [`for_call`](Self::for_call) cannot tell which call the
    /// dropped messages belonged to, so it keeps the total as an upper bound.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The messages of one dialog (Call-ID compared exactly), with only the parties they
    /// involve, in their original order.
    pub fn for_call(&self, call_id: &str) -> Ladder {
        let kept: Vec<&Arrow> = self
            .arrows
            .iter()
            .filter(|a| a.call_id == call_id)
            .collect();
        let mut used = vec![false; self.parties.len()];
        for a in &kept {
            used[a.from] = true;
            used[a.to] = true;
        }
        let mut remap = vec![usize::MAX; self.parties.len()];
        let mut parties = Vec::new();
        for (i, name) in self.parties.iter().enumerate() {
            if used[i] {
                remap[i] = parties.len();
                parties.push(name.clone());
            }
        }
        let arrows = kept
            .into_iter()
            .map(|a| Arrow {
                from: remap[a.from],
                to: remap[a.to],
                ..a.clone()
            })
            .collect();
        Ladder {
            parties,
            arrows,
            dropped: self.dropped,
        }
    }

    /// The ladder as monospaced text: a header line with the party names, a lifeline `|` per
    /// party on every row, and one row per message with its time in milliseconds
    /// (`12.345 ms`) and an arrow (`---->` or `<----`) carrying its label.
    ///
    /// Columns are as wide as the longest label needs (20 to 40 characters); longer labels
    /// and names are cut with `…`. Every character counts as one column. At most
    /// [`MAX_TEXT_COLUMNS`] columns are drawn: when there are more parties, the last column
    /// stands for all the others (`(N others)`), and the labels of its arrows end with the
    /// party's name in brackets.
    pub fn render_text(&self) -> String {
        let others = MAX_TEXT_COLUMNS - 1;
        let folded = self.parties.len() > MAX_TEXT_COLUMNS;
        let column = |i: usize| if folded { i.min(others) } else { i };
        let columns = self.parties.len().min(MAX_TEXT_COLUMNS);
        let labels: Vec<String> = self
            .arrows
            .iter()
            .map(|a| {
                let label = clean(&a.label);
                match [a.from, a.to].into_iter().find(|&i| column(i) == others) {
                    Some(i) if folded => {
                        let name = self.parties.get(i).map(String::as_str).unwrap_or("");
                        format!("{label} [{}]", clean(name))
                    }
                    _ => label,
                }
            })
            .collect();
        let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
        let col = (longest + COLUMN_DECORATION).clamp(MIN_COLUMN, MAX_COLUMN);
        let label_room = col - COLUMN_DECORATION;
        let times: Vec<String> = self.arrows.iter().map(|a| millis(a.at)).collect();
        let time_width = times.iter().map(String::len).max().unwrap_or(0);
        let origin = time_width + 2;
        let bar = |i: usize| origin + i * col + col / 2;

        let mut out = String::new();
        if self.dropped > 0 {
            out.push_str(&format!("({} earlier messages dropped)\n", self.dropped));
        }
        let mut header = Row::default();
        for (i, name) in self.parties.iter().enumerate().take(columns) {
            let name = if folded && i == others {
                format!("({} others)", self.parties.len() - others)
            } else {
                clean(name)
            };
            let name = truncate(&name, col - 1);
            let len = name.chars().count();
            header.put(bar(i) - len / 2, &name);
        }
        out.push_str(&header.finish());
        let mut lifelines = Row::default();
        for i in 0..columns {
            lifelines.put(bar(i), "|");
        }
        let lifelines = lifelines.finish();
        out.push_str(&lifelines);

        for ((a, time), label) in self.arrows.iter().zip(&times).zip(&labels) {
            let mut row = Row::default();
            row.put(time_width - time.len(), time);
            for i in 0..columns {
                row.put(bar(i), "|");
            }
            let label = truncate(label, label_room);
            let (from, to) = (column(a.from), column(a.to));
            if from == to {
                row.put(bar(from) + 1, &format!("<-' {label}"));
                out.push_str(&row.finish());
                continue;
            }
            let (lo, hi) = (bar(from.min(to)), bar(from.max(to)));
            let inner = hi - lo - 1;
            row.put(lo + 1, &"-".repeat(inner));
            let text = format!(" {label} ");
            let slack = inner - text.chars().count();
            // The arrowhead side needs a dash and the head: give it the larger share.
            let left = if to < from {
                slack - slack / 2
            } else {
                slack / 2
            };
            row.put(lo + 1 + left, &text);
            if to > from {
                row.put(hi - 1, ">");
            } else {
                row.put(lo + 1, "<");
            }
            out.push_str(&row.finish());
        }
        if !self.arrows.is_empty() {
            out.push_str(&lifelines);
        }
        out
    }

    /// The ladder as a self-contained SVG 1.1 document: a named lifeline per party, one
    /// horizontal `<line>` with an arrowhead marker per message (lifelines are `<path>`s, so
    /// the document holds exactly one `<line>` element per message), the label above each
    /// arrow and its time at the left. All text is XML-escaped.
    pub fn render_svg(&self) -> String {
        const CHAR_W: usize = 7;
        const TIME_W: usize = 100;
        const TOP: usize = 50;
        const ROW_H: usize = 32;
        const SVG_LABEL_CHARS: usize = 60;
        let longest = self
            .arrows
            .iter()
            .map(|a| a.label.chars().count().min(SVG_LABEL_CHARS))
            .chain(
                self.parties
                    .iter()
                    .map(|p| p.chars().count().min(SVG_LABEL_CHARS)),
            )
            .max()
            .unwrap_or(0);
        let col = (longest * CHAR_W + 40).clamp(140, SVG_LABEL_CHARS * CHAR_W + 40);
        let x = |i: usize| TIME_W + col / 2 + i * col;
        let width = TIME_W + col * self.parties.len().max(1) + 20;
        let bottom = TOP + 20 + ROW_H * self.arrows.len();
        let height = bottom + 30;

        let mut s = String::new();
        s.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        s.push_str(&format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{width}\" \
             height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"monospace\" \
             font-size=\"12\">\n"
        ));
        s.push_str(
            "<defs><marker id=\"head\" markerWidth=\"10\" markerHeight=\"8\" refX=\"10\" \
             refY=\"4\" orient=\"auto\" markerUnits=\"userSpaceOnUse\">\
             <path d=\"M0,0 L10,4 L0,8 z\" fill=\"black\"/></marker></defs>\n",
        );
        s.push_str(&format!(
            "<rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" fill=\"white\"/>\n"
        ));
        if self.dropped > 0 {
            s.push_str(&format!(
                "<text x=\"10\" y=\"14\" fill=\"gray\">({} earlier messages dropped)</text>\n",
                self.dropped
            ));
        }
        for (i, name) in self.parties.iter().enumerate() {
            let name = xml_escape(&truncate(name, SVG_LABEL_CHARS));
            s.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-weight=\"bold\">{name}</text>\n",
                x(i),
                TOP - 14
            ));
            s.push_str(&format!(
                "<path d=\"M{} {} V{bottom}\" stroke=\"gray\" stroke-dasharray=\"4,3\" fill=\"none\"/>\n",
                x(i),
                TOP - 8
            ));
        }
        for (n, a) in self.arrows.iter().enumerate() {
            let y = TOP + 20 + ROW_H * n + ROW_H / 2;
            let (x1, x2) = if a.from == a.to {
                (x(a.from) + 40, x(a.from) + 2)
            } else if a.to > a.from {
                (x(a.from), x(a.to) - 2)
            } else {
                (x(a.from), x(a.to) + 2)
            };
            s.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"gray\">{}</text>\n",
                TIME_W - 10,
                y + 4,
                xml_escape(&millis(a.at))
            ));
            s.push_str(&format!(
                "<line x1=\"{x1}\" y1=\"{y}\" x2=\"{x2}\" y2=\"{y}\" stroke=\"black\" \
                 marker-end=\"url(#head)\"/>\n"
            ));
            s.push_str(&format!(
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                (x1 + x2) / 2,
                y - 5,
                xml_escape(&truncate(&a.label, SVG_LABEL_CHARS))
            ));
        }
        s.push_str("</svg>\n");
        s
    }
}

/// A line of text being drawn on a grid of characters.
#[derive(Default)]
struct Row(Vec<char>);

impl Row {
    /// Writes `text` from column `at`, over whatever was there.
    fn put(&mut self, at: usize, text: &str) {
        for (i, c) in text.chars().enumerate() {
            let at = at + i;
            if self.0.len() <= at {
                self.0.resize(at + 1, ' ');
            }
            self.0[at] = c;
        }
    }

    /// The line without trailing blanks, with its newline.
    fn finish(self) -> String {
        let mut s: String = self.0.into_iter().collect();
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    }
}

/// `12.345 ms`, exact to the microsecond.
fn millis(at: Duration) -> String {
    let micros = at.as_micros();
    format!("{}.{:03} ms", micros / 1000, micros % 1000)
}

/// `s` cut to `max` characters, the last one replaced by `…` when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `s` with the characters that would break a row or reorder it on display shown as
/// `�`: control characters, the line and paragraph separators (U+2028, U+2029) and the
/// bidirectional formatting characters (U+200E, U+200F, U+202A–U+202E, U+2066–U+2069).
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            let breaks = c.is_control()
                || matches!(
                    c,
                    '\u{2028}'
                        | '\u{2029}'
                        | '\u{200E}'
                        | '\u{200F}'
                        | '\u{202A}'..='\u{202E}'
                        | '\u{2066}'..='\u{2069}'
                );
            if breaks {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

/// `s` escaped for XML text and attribute values; characters XML 1.0 forbids become `�`.
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// The label and Call-ID of one wire message; `None` for a keep-alive (only CR/LF).
///
/// Reads the start line and the header lines up to the blank line, nothing else.
fn summarize(wire: &[u8]) -> Option<(String, String)> {
    let start = wire.iter().position(|&b| b != b'\r' && b != b'\n')?;
    let mut lines = wire[start..]
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next().unwrap_or_default();
    let unknown = || Some((UNKNOWN_LABEL.to_owned(), String::new()));

    enum Start<'a> {
        Request(&'a [u8]),
        Response(u16, &'a [u8]),
    }
    let start = if let Some(rest) = strip_prefix_ci(first, b"SIP/2.0 ") {
        match rest {
            [a, b, c, tail @ ..]
                if a.is_ascii_digit()
                    && b.is_ascii_digit()
                    && c.is_ascii_digit()
                    && tail.first().is_none_or(|&t| t == b' ') =>
            {
                let code =
                    u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
                Start::Response(code, tail.get(1..).unwrap_or_default())
            }
            _ => return unknown(),
        }
    } else {
        let mut parts = first.splitn(3, |&b| b == b' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(method), Some(uri), Some(version))
                if !method.is_empty()
                    && method.iter().all(|&b| is_token_char(b))
                    && !uri.is_empty()
                    && version.eq_ignore_ascii_case(b"SIP/2.0") =>
            {
                Start::Request(method)
            }
            _ => return unknown(),
        }
    };

    let mut call_id: Option<&[u8]> = None;
    let mut cseq_method: Option<&[u8]> = None;
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            continue; // folded continuation of the previous header
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        let value = line[colon + 1..].trim_ascii();
        if name.eq_ignore_ascii_case(b"call-id") || name.eq_ignore_ascii_case(b"i") {
            call_id.get_or_insert(value);
        } else if name.eq_ignore_ascii_case(b"cseq") {
            let after_seq = value.trim_ascii_start();
            let digits = after_seq.iter().take_while(|b| b.is_ascii_digit()).count();
            let method = after_seq[digits..].trim_ascii();
            if digits > 0 && !method.is_empty() && method.iter().all(|&b| is_token_char(b)) {
                cseq_method.get_or_insert(method);
            }
        }
        if call_id.is_some() && cseq_method.is_some() {
            break;
        }
    }

    let method = |m: &[u8]| truncate(&String::from_utf8_lossy(m), MAX_METHOD_CHARS);
    let label = match start {
        Start::Request(m) => method(m),
        Start::Response(code, reason) => {
            let reason = truncate(&clean(&String::from_utf8_lossy(reason)), MAX_REASON_CHARS);
            let mut label = code.to_string();
            if !reason.is_empty() {
                label.push(' ');
                label.push_str(&reason);
            }
            if let Some(m) = cseq_method {
                label.push_str(" (");
                label.push_str(&method(m));
                label.push(')');
            }
            label
        }
    };
    let call_id = call_id
        .map(|c| truncate(&clean(&String::from_utf8_lossy(c)), MAX_CALL_ID_CHARS))
        .unwrap_or_default();
    Some((label, call_id))
}

/// `line` without its leading `prefix` (ASCII case-insensitive).
fn strip_prefix_ci<'a>(line: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &line[prefix.len()..])
}

/// RFC 3261 `token` characters (a method name is a token).
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarize_request_and_response() {
        let (l, c) =
            summarize(b"INVITE sip:bob@x SIP/2.0\r\nCall-ID: abc@h\r\nCSeq: 1 INVITE\r\n\r\n")
                .unwrap();
        assert_eq!((l.as_str(), c.as_str()), ("INVITE", "abc@h"));
        let (l, c) =
            summarize(b"SIP/2.0 180 Ringing\r\ni: k\r\nCSeq:  7  INVITE \r\n\r\n").unwrap();
        assert_eq!((l.as_str(), c.as_str()), ("180 Ringing (INVITE)", "k"));
        let (l, _) = summarize(b"SIP/2.0 200\r\n\r\n").unwrap();
        assert_eq!(l, "200");
    }

    /// A method is any token, so a hostile peer's could be as long as its message: each
    /// record kept all of it (10 000 records of 64 KiB methods are 640 MB).
    #[test]
    fn labels_stay_short_whatever_the_method() {
        let method = "X".repeat(60_000);
        let request = format!("{method} sip:bob@x SIP/2.0\r\nCall-ID: a\r\n\r\n");
        let (l, _) = summarize(request.as_bytes()).unwrap();
        assert_eq!(l.chars().count(), MAX_METHOD_CHARS);
        assert!(l.ends_with('…'));
        let response = format!("SIP/2.0 200 OK\r\nCSeq: 1 {method}\r\n\r\n");
        let (l, _) = summarize(response.as_bytes()).unwrap();
        assert!(
            l.chars().count() <= "200 OK ()".len() + MAX_METHOD_CHARS,
            "{l}"
        );
    }

    #[test]
    fn summarize_garbage_and_keepalive() {
        assert_eq!(summarize(b"\r\n\r\n"), None);
        assert_eq!(summarize(b""), None);
        for junk in [
            &b"hello world"[..],
            b"\x00\xff\xfe",
            b"SIP/2.0 abc OK\r\n",
            b"GET / HTTP/1.1\r\n",
        ] {
            let (l, c) = summarize(junk).unwrap();
            assert_eq!((l.as_str(), c.as_str()), ("?", ""));
        }
    }

    /// Line separators and bidi formatting characters (from a peer's reason phrase) are
    /// replaced like control characters.
    #[test]
    fn clean_replaces_separators_and_bidi_controls() {
        for c in [
            '\u{2028}', '\u{2029}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202E}', '\u{2066}',
            '\u{2069}', '\u{7}',
        ] {
            assert_eq!(clean(&format!("a{c}b")), "a\u{FFFD}b", "{:04X}", c as u32);
        }
        assert_eq!(clean("caf\u{e9} \u{2030}"), "caf\u{e9} \u{2030}");
    }

    #[test]
    fn truncate_and_escape() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abcd", 4), "abcd");
        assert_eq!(
            xml_escape("<a&'\"b>\u{1}"),
            "&lt;a&amp;&apos;&quot;b&gt;\u{FFFD}"
        );
        assert_eq!(millis(Duration::from_micros(12_345)), "12.345 ms");
    }
}
