//! Ladder diagrams from real SIP messages fed to the recorder as wire bytes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use collaboration_platform::{MessageObserver, WireDirection};
use conversation::ladder::{Arrow, Ladder, LadderRecorder, DEFAULT_CAPACITY, UNKNOWN_LABEL};
use quick_xml::events::Event;
use quick_xml::Reader;
use sip_core::{Limits, SipMessage};

const CALL: &str = "a84b4c76e66710@app.contoso.test";
const OTHER_CALL: &str = "77aa01@carol.fabrikam.test";

fn bob() -> SocketAddr {
    "10.0.0.2:5061".parse().unwrap()
}

fn carol() -> SocketAddr {
    "10.0.0.3:5061".parse().unwrap()
}

/// A whole SIP message: the start line, the dialog headers, Content-Length and the body.
fn wire(start: &str, cseq: &str, call_id: &str, body: &str) -> Bytes {
    let mut s = format!(
        "{start}\r\n\
         Via: SIP/2.0/TLS app.contoso.test:5061;branch=z9hG4bK{n}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:app@contoso.test>;tag=1928301774\r\n\
         To: <sip:bob@contoso.test>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: {cseq}\r\n",
        n = cseq.len() + start.len(),
    );
    if !body.is_empty() {
        s.push_str("Content-Type: text/plain\r\n");
    }
    s.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let bytes = Bytes::from(s);
    // The test messages are real SIP: the platform's own parser accepts them.
    SipMessage::parse_framed(bytes.clone(), &Limits::default())
        .unwrap_or_else(|e| panic!("test message does not parse: {e}\n{start}"));
    bytes
}

/// The messages of one IM call with bob, then one MESSAGE of another call from carol.
fn dialog() -> Vec<(WireDirection, SocketAddr, Bytes)> {
    use WireDirection::{Received, Sent};
    let inv = "INVITE sip:bob@contoso.test SIP/2.0";
    vec![
        (Sent, bob(), wire(inv, "1 INVITE", CALL, "")),
        (
            Received,
            bob(),
            wire("SIP/2.0 180 Ringing", "1 INVITE", CALL, ""),
        ),
        (
            Received,
            bob(),
            wire("SIP/2.0 200 OK", "1 INVITE", CALL, ""),
        ),
        (
            Sent,
            bob(),
            wire("ACK sip:bob@contoso.test SIP/2.0", "1 ACK", CALL, ""),
        ),
        (
            Sent,
            bob(),
            wire(
                "MESSAGE sip:bob@contoso.test SIP/2.0",
                "2 MESSAGE",
                CALL,
                "hello <bob> & co",
            ),
        ),
        (
            Received,
            bob(),
            wire("SIP/2.0 200 OK", "2 MESSAGE", CALL, ""),
        ),
        (
            Received,
            bob(),
            wire("BYE sip:app@contoso.test SIP/2.0", "1 BYE", CALL, ""),
        ),
        (Sent, bob(), wire("SIP/2.0 200 OK", "1 BYE", CALL, "")),
        (
            Received,
            carol(),
            wire(
                "MESSAGE sip:app@contoso.test SIP/2.0",
                "9 MESSAGE",
                OTHER_CALL,
                "hi",
            ),
        ),
    ]
}

const DIALOG_LABELS: [&str; 8] = [
    "INVITE",
    "180 Ringing (INVITE)",
    "200 OK (INVITE)",
    "ACK",
    "MESSAGE",
    "200 OK (MESSAGE)",
    "BYE",
    "200 OK (BYE)",
];

fn recorded() -> LadderRecorder {
    let rec = LadderRecorder::new("app@contoso");
    rec.name(bob(), "bob@contoso");
    let observer: Arc<dyn MessageObserver> = rec.as_observer();
    for (dir, remote, bytes) in dialog() {
        observer.observe(dir, remote, &bytes);
    }
    rec
}

#[test]
fn records_parties_labels_and_directions() {
    let ladder = recorded().snapshot();
    assert_eq!(
        ladder.parties(),
        ["app@contoso", "bob@contoso", "10.0.0.3:5061"]
    );
    assert_eq!(ladder.dropped(), 0);
    let arrows = ladder.arrows();
    assert_eq!(arrows.len(), 9);
    let labels: Vec<&str> = arrows.iter().map(|a| a.label.as_str()).collect();
    assert_eq!(labels[..8], DIALOG_LABELS);
    assert_eq!(labels[8], "MESSAGE");
    let dirs: Vec<(usize, usize)> = arrows.iter().map(|a| (a.from, a.to)).collect();
    assert_eq!(
        dirs,
        [
            (0, 1),
            (1, 0),
            (1, 0),
            (0, 1),
            (0, 1),
            (1, 0),
            (1, 0),
            (0, 1),
            (2, 0)
        ]
    );
    assert!(arrows[..8].iter().all(|a| a.call_id == CALL));
    assert_eq!(arrows[8].call_id, OTHER_CALL);
    assert!(
        arrows.windows(2).all(|w| w[0].at <= w[1].at),
        "times never go back"
    );
}

#[test]
fn for_call_keeps_one_dialog_and_its_parties() {
    let ladder = recorded().snapshot();
    let call = ladder.for_call(CALL);
    assert_eq!(call.parties(), ["app@contoso", "bob@contoso"]);
    assert_eq!(call.arrows().len(), 8);
    let labels: Vec<&str> = call.arrows().iter().map(|a| a.label.as_str()).collect();
    assert_eq!(labels, DIALOG_LABELS);

    let other = ladder.for_call(OTHER_CALL);
    assert_eq!(other.parties(), ["app@contoso", "10.0.0.3:5061"]);
    assert_eq!(other.arrows().len(), 1);
    assert_eq!((other.arrows()[0].from, other.arrows()[0].to), (1, 0));

    let none = ladder.for_call("no-such-call");
    assert!(none.arrows().is_empty() && none.parties().is_empty());
}

#[test]
fn names_apply_late_and_shared_names_share_a_column() {
    let rec = LadderRecorder::new("app");
    let b = wire("OPTIONS sip:x@y SIP/2.0", "1 OPTIONS", "c1", "");
    rec.observe(WireDirection::Sent, bob(), &b);
    rec.observe(WireDirection::Sent, carol(), &b);
    assert_eq!(
        rec.snapshot().parties(),
        ["app", "10.0.0.2:5061", "10.0.0.3:5061"]
    );
    rec.name(bob(), "front end");
    rec.name(carol(), "front end");
    let ladder = rec.snapshot();
    assert_eq!(ladder.parties(), ["app", "front end"]);
    assert!(ladder.arrows().iter().all(|a| (a.from, a.to) == (0, 1)));
}

#[test]
fn capacity_drops_the_oldest_and_counts_them() {
    let rec = LadderRecorder::with_capacity("app", 3);
    for (dir, remote, bytes) in dialog().into_iter().take(5) {
        rec.observe(dir, remote, &bytes);
    }
    let ladder = rec.snapshot();
    assert_eq!(ladder.dropped(), 2);
    let labels: Vec<&str> = ladder.arrows().iter().map(|a| a.label.as_str()).collect();
    assert_eq!(labels, ["200 OK (INVITE)", "ACK", "MESSAGE"]);
    assert!(ladder
        .render_text()
        .starts_with("(2 earlier messages dropped)\n"));
    assert_eq!(ladder.for_call(CALL).dropped(), 2);

    rec.clear();
    assert_eq!(rec.snapshot().arrows().len(), 0);
    assert_eq!(rec.snapshot().dropped(), 0);

    let nothing = LadderRecorder::with_capacity("app", 0);
    for (dir, remote, bytes) in dialog() {
        nothing.observe(dir, remote, &bytes);
    }
    assert!(nothing.snapshot().arrows().is_empty());
    assert_eq!(nothing.snapshot().dropped(), 9);
    assert_eq!(DEFAULT_CAPACITY, 10_000);
}

#[test]
fn garbage_is_recorded_as_unknown_and_keepalives_are_ignored() {
    let rec = LadderRecorder::new("app");
    rec.observe(
        WireDirection::Received,
        bob(),
        &Bytes::from_static(b"\r\n\r\n"),
    );
    rec.observe(WireDirection::Received, bob(), &Bytes::new());
    for junk in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"SIP/2.0 2OO OK\r\n\r\n",
        b"INVITE\r\n",
    ] {
        rec.observe(
            WireDirection::Received,
            bob(),
            &Bytes::copy_from_slice(junk),
        );
    }
    let ladder = rec.snapshot();
    assert_eq!(ladder.arrows().len(), 4);
    for a in ladder.arrows() {
        assert_eq!(a.label, UNKNOWN_LABEL);
        assert_eq!(a.call_id, "");
        assert_eq!((a.from, a.to), (1, 0));
    }
    // Still renders.
    assert_eq!(ladder.render_text().matches(" ? ").count(), 4);
    well_formed_lines(&ladder.render_svg());
}

#[test]
fn concurrent_observers_lose_nothing_below_capacity() {
    let rec = LadderRecorder::new("app");
    let msg = wire("MESSAGE sip:x@y SIP/2.0", "1 MESSAGE", "c", "x");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let obs = rec.as_observer();
            let msg = msg.clone();
            std::thread::spawn(move || {
                for _ in 0..500 {
                    obs.observe(WireDirection::Sent, bob(), &msg);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(rec.snapshot().arrows().len(), 2000);
}

/// The label's row of the text rendering, checking the label appears exactly once on it.
fn row_of<'a>(text: &'a str, time_and_label: (&str, &str)) -> &'a str {
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with(time_and_label.0))
        .collect();
    assert_eq!(rows.len(), 1, "one row at {}:\n{text}", time_and_label.0);
    let row = rows[0];
    assert_eq!(row.matches(time_and_label.1).count(), 1, "{row}");
    row
}

#[test]
fn text_rendering_of_a_recorded_dialog() {
    let ladder = recorded().snapshot();
    let call = ladder.for_call(CALL);
    let text = call.render_text();
    let lines: Vec<&str> = text.lines().collect();
    // Header, lifelines, one row per message, closing lifelines.
    assert_eq!(lines.len(), 2 + 8 + 1, "{text}");
    assert!(lines[0].contains("app@contoso") && lines[0].contains("bob@contoso"));
    let bars: Vec<usize> = lines[1].match_indices('|').map(|(i, _)| i).collect();
    assert_eq!(bars.len(), 2);
    for (arrow, line) in call.arrows().iter().zip(&lines[2..10]) {
        assert_eq!(line.matches(arrow.label.as_str()).count(), 1, "{line}");
        assert!(line.trim_start().split(' ').next().unwrap().contains('.'));
        assert!(line.contains(" ms "), "{line}");
        // Lifelines stay at their columns.
        for &b in &bars {
            assert_eq!(line.as_bytes()[b], b'|', "{line}");
        }
        let between = &line[bars[0] + 1..bars[1]];
        if arrow.from < arrow.to {
            assert!(between.ends_with("->"), "{line}");
            assert!(!between.contains('<'), "{line}");
        } else {
            assert!(between.starts_with("<-"), "{line}");
            assert!(!between.contains('>'), "{line}");
        }
    }
}

fn at(ms: u64, micros: u64) -> Duration {
    Duration::from_micros(ms * 1000 + micros)
}

fn arrow(t: Duration, from: usize, to: usize, label: &str) -> Arrow {
    Arrow {
        at: t,
        from,
        to,
        label: label.into(),
        call_id: "c".into(),
    }
}

#[test]
fn text_rendering_exact_shape() {
    let ladder = Ladder::from_arrows(
        vec!["app@contoso".into(), "bob@contoso".into()],
        vec![
            arrow(at(0, 0), 0, 1, "INVITE"),
            arrow(at(3, 120), 1, 0, "200 OK (INVITE)"),
            arrow(at(12, 345), 0, 1, "ACK"),
        ],
    );
    let expected = [
        "                app@contoso          bob@contoso",
        "                     |                    |",
        " 0.000 ms            |------ INVITE ----->|",
        " 3.120 ms            |<- 200 OK (INVITE) -|",
        "12.345 ms            |------- ACK ------->|",
        "                     |                    |",
        "",
    ]
    .join("\n");
    let text = ladder.render_text();
    println!("{text}");
    assert_eq!(text, expected);
}

#[test]
fn text_rendering_across_three_parties_and_truncation() {
    let long = "488 Not Acceptable Here Because Of Something Very Long (INVITE)";
    let ladder = Ladder::from_arrows(
        vec!["a".into(), "b".into(), "c".into()],
        vec![
            arrow(at(1, 0), 0, 2, "INVITE"),
            arrow(at(2, 0), 2, 0, long),
            arrow(at(3, 0), 1, 2, "NOTIFY"),
        ],
    );
    let text = ladder.render_text();
    println!("{text}");
    let lines: Vec<&str> = text.lines().collect();
    let bars: Vec<usize> = lines[1].match_indices('|').map(|(i, _)| i).collect();
    assert_eq!(bars.len(), 3);
    assert_eq!(bars[1] - bars[0], 40, "the widest column for a long label");
    let invite = row_of(&text, ("1.000 ms", "INVITE"));
    let cols: Vec<char> = invite.chars().collect();
    assert_eq!(cols[bars[0]], '|');
    assert_eq!(cols[bars[2]], '|');
    assert_eq!(cols[bars[2] - 1], '>');
    assert_ne!(cols[bars[1]], '|', "the arrow passes over b's lifeline");
    let long_row = row_of(&text, ("2.000 ms", "…"));
    assert!(!long_row.contains(long));
    let cols: Vec<char> = long_row.chars().collect();
    assert_eq!(cols[bars[0] + 1], '<');
    let notify = row_of(&text, ("3.000 ms", "NOTIFY"));
    let cols: Vec<char> = notify.chars().collect();
    assert_eq!(cols[bars[0]], '|');
    assert_eq!(cols[bars[1]], '|');
    assert_eq!(cols[bars[2] - 1], '>');
}

#[test]
fn from_arrows_fills_missing_parties() {
    let ladder = Ladder::from_arrows(vec!["x".into()], vec![arrow(at(0, 0), 0, 2, "INFO")]);
    assert_eq!(ladder.parties(), ["x", "#1", "#2"]);
    assert_eq!(ladder.dropped(), 0);
    assert_eq!(ladder.clone().with_dropped(7).dropped(), 7);
    // A self-arrow renders without panicking.
    let selfie = Ladder::from_arrows(vec!["x".into()], vec![arrow(at(0, 0), 0, 0, "OPTIONS")]);
    assert_eq!(selfie.render_text().matches("OPTIONS").count(), 1);
    assert_eq!(count_lines(&selfie.render_svg()), 1);
    // An empty ladder renders too.
    assert_eq!(Ladder::default().render_text(), "\n\n");
    assert_eq!(count_lines(&Ladder::default().render_svg()), 0);
}

/// Arrows with indices no ladder can have are left out: `usize::MAX` overflowed (a panic)
/// and `1 << 40` asked for a trillion placeholder parties.
#[test]
fn from_arrows_leaves_out_arrows_past_any_party() {
    let ladder = Ladder::from_arrows(
        vec!["x".into()],
        vec![
            arrow(at(0, 0), usize::MAX, 0, "BYE"),
            arrow(at(1, 0), 0, 1 << 40, "BYE"),
            arrow(at(2, 0), 0, 1, "INFO"),
        ],
    );
    assert_eq!(ladder.parties(), ["x", "#1"]);
    assert_eq!(ladder.arrows().len(), 1);
    assert_eq!(ladder.for_call("c").arrows().len(), 1);
    assert_eq!(count_lines(&ladder.render_svg()), 1);
    assert!(ladder.render_text().contains("INFO"));
}

/// Parses `svg` as XML (panicking if it is not well-formed) and counts `<line>` elements.
fn count_lines(svg: &str) -> usize {
    let mut reader = Reader::from_str(svg);
    let mut lines = 0;
    let mut depth = 0usize;
    let mut root = None;
    loop {
        match reader.read_event() {
            Ok(Event::Eof) => break,
            Ok(Event::Start(e)) => {
                if depth == 0 {
                    root = Some(String::from_utf8_lossy(e.name().as_ref()).into_owned());
                }
                depth += 1;
                if e.name().as_ref() == b"line" {
                    lines += 1;
                }
            }
            Ok(Event::End(_)) => depth -= 1,
            Ok(Event::Empty(e)) => {
                if e.name().as_ref() == b"line" {
                    lines += 1;
                }
            }
            Ok(_) => {}
            Err(e) => panic!(
                "not well-formed at {}: {e}\n{svg}",
                reader.buffer_position()
            ),
        }
    }
    assert_eq!(depth, 0);
    assert_eq!(root.as_deref(), Some("svg"));
    lines
}

fn well_formed_lines(svg: &str) -> usize {
    assert!(svg.starts_with("<?xml version=\"1.0\""));
    assert!(svg.contains("xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(svg.contains("version=\"1.1\""));
    count_lines(svg)
}

#[test]
fn svg_is_well_formed_with_one_line_per_message() {
    let rec = recorded();
    rec.name(carol(), "<carol & \"co\">");
    let ladder = rec.snapshot();
    let svg = ladder.render_svg();
    assert_eq!(well_formed_lines(&svg), 9);
    assert_eq!(svg.matches("<line").count(), 9);
    assert!(svg.contains("&lt;carol &amp; &quot;co&quot;&gt;"));
    assert!(svg.contains("200 OK (INVITE)"));
    assert_eq!(svg.matches(" ms</text>").count(), 9, "one time per message");
    assert_eq!(well_formed_lines(&ladder.for_call(CALL).render_svg()), 8);

    let nasty = Ladder::from_arrows(
        vec!["a]]>".into(), "b\u{1}".into()],
        vec![arrow(at(0, 1), 0, 1, "<&>\u{0}'\"")],
    );
    assert_eq!(well_formed_lines(&nasty.render_svg()), 1);
}

/// A peer's reason phrase cannot put a line separator or a bidi override into the text
/// rendering (they are shown as U+FFFD like control characters).
#[test]
fn text_rendering_replaces_line_separators_and_bidi_overrides() {
    let rec = LadderRecorder::new("app");
    let w = Bytes::from(
        "SIP/2.0 200 OK\u{2028}FAKE ROW\u{202e}kO\u{2066}\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n",
    );
    rec.observe(WireDirection::Received, bob(), &w);
    let text = rec.snapshot().render_text();
    assert!(
        !text.contains(['\u{2028}', '\u{202e}', '\u{2066}']),
        "{text:?}"
    );
    assert!(text.contains("200 OK\u{FFFD}FAKE ROW\u{FFFD}kO"), "{text}");
}

/// One message from each of many remote addresses (ephemeral ports) renders in text that
/// grows with the messages, not with messages × parties: the parties past
/// `MAX_TEXT_COLUMNS - 1` share one column.
#[test]
fn text_rendering_of_many_parties_stays_linear() {
    use conversation::ladder::MAX_TEXT_COLUMNS;
    let rec = LadderRecorder::new("app");
    let n = 2000usize;
    let mut input = 0usize;
    for i in 0..n {
        let addr: SocketAddr = format!("10.0.{}.{}:{}", i / 250, i % 250, 40000 + i)
            .parse()
            .unwrap();
        let w = Bytes::from(format!(
            "OPTIONS sip:app@contoso.test SIP/2.0\r\nCall-ID: c{i}\r\nCSeq: 1 OPTIONS\r\n\r\n"
        ));
        input += w.len();
        rec.observe(WireDirection::Received, addr, &w);
    }
    let ladder = rec.snapshot();
    assert_eq!(ladder.parties().len(), n + 1);
    let text = ladder.render_text();
    // At most MAX_TEXT_COLUMNS columns of at most 40 characters, plus the time, per row.
    let widest = text.lines().map(|l| l.chars().count()).max().unwrap();
    assert!(
        widest <= 20 + MAX_TEXT_COLUMNS * 40,
        "row of {widest} chars"
    );
    assert!(text.len() < 10 * input, "render_text {} bytes", text.len());
    let header = text.lines().next().unwrap();
    assert!(
        header.contains(&format!("({} others)", n + 1 - (MAX_TEXT_COLUMNS - 1))),
        "{header}"
    );
    // An arrow from a folded party names it.
    assert!(
        text.contains("OPTIONS [10.0.7.249:41999]"),
        "{}",
        text.lines().last().unwrap()
    );
}
