//! Stream framer: pipelining, arbitrary read boundaries, keep-alives, limits, Content-Length
//! errors, binary bodies.

use bytes::Bytes;
use proptest::prelude::*;
use sip_core::framer::{Frame, FrameError, StreamFramer};
use sip_core::Limits;

const RFC4475: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc4475/valid/");

fn msg(body: &str) -> Vec<u8> {
    format!(
        "MESSAGE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n\
         Call-ID: c\r\nCSeq: 1 MESSAGE\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        body
    )
    .into_bytes()
}

/// Pushes `chunks` one by one, draining frames after each; stops at the first error.
fn run(limits: Limits, chunks: &[&[u8]]) -> (Vec<Frame>, Option<FrameError>) {
    let mut f = StreamFramer::new(limits);
    let mut out = Vec::new();
    for c in chunks {
        f.push(c);
        loop {
            match f.next_frame() {
                Ok(Some(fr)) => out.push(fr),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fn whole(data: &[u8]) -> (Vec<Frame>, Option<FrameError>) {
    run(Limits::default(), &[data])
}

fn message(b: &[u8]) -> Frame {
    Frame::Message(Bytes::copy_from_slice(b))
}

#[test]
fn pipelined_messages_in_one_read() {
    let (a, b, c) = (msg("hello"), msg(""), msg("third one"));
    let stream = [a.clone(), b.clone(), c.clone()].concat();
    let (frames, err) = whole(&stream);
    assert_eq!(err, None);
    assert_eq!(frames, vec![message(&a), message(&b), message(&c)]);
}

#[test]
fn every_byte_boundary_gives_the_same_frames() {
    let stream = [
        msg("hello"),
        b"\r\n\r\n".to_vec(),
        msg("x"),
        b"\r\n".to_vec(),
        msg(""),
    ]
    .concat();
    let (expected, err) = whole(&stream);
    assert_eq!(err, None);
    assert_eq!(expected.len(), 5);
    for i in 0..=stream.len() {
        assert_eq!(
            run(Limits::default(), &[&stream[..i], &stream[i..]]),
            (expected.clone(), None),
            "split at {i}"
        );
    }
    // One byte at a time.
    let singles: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(run(Limits::default(), &singles), (expected, None));
}

#[test]
fn keep_alive_ping_and_pong() {
    let m = msg("a");
    let stream = [b"\r\n\r\n".to_vec(), m.clone(), b"\r\n".to_vec(), m.clone()].concat();
    let (frames, err) = whole(&stream);
    assert_eq!(err, None);
    assert_eq!(
        frames,
        vec![
            Frame::KeepAlivePing,
            message(&m),
            Frame::KeepAlivePong,
            message(&m)
        ]
    );
}

#[test]
fn lone_crlf_waits_unless_a_pong_is_expected() {
    let mut f = StreamFramer::new(Limits::default());
    f.push(b"\r\n");
    assert_eq!(f.next_frame(), Ok(None));
    assert!(!f.has_partial(), "a pending CRLF is not a partial message");
    f.push(b"\r\n");
    assert_eq!(f.next_frame(), Ok(Some(Frame::KeepAlivePing)));

    let mut f = StreamFramer::new(Limits::default());
    f.expect_pong();
    f.push(b"\r\n");
    assert_eq!(f.next_frame(), Ok(Some(Frame::KeepAlivePong)));
    assert_eq!(f.next_frame(), Ok(None));

    // A pong given up on: the peer's own ping later is a ping, not a pong and a half.
    let mut f = StreamFramer::new(Limits::default());
    f.expect_pong();
    f.forget_pong();
    f.push(b"\r\n\r\n");
    assert_eq!(f.next_frame(), Ok(Some(Frame::KeepAlivePing)));
    assert_eq!(f.next_frame(), Ok(None));
}

#[test]
fn stray_lf_between_messages_is_skipped() {
    let m = msg("a");
    let stream = [b"\n\n".to_vec(), m.clone()].concat();
    assert_eq!(whole(&stream), (vec![message(&m)], None));
}

#[test]
fn has_partial_tracks_an_unfinished_message() {
    let m = msg("body");
    let mut f = StreamFramer::new(Limits::default());
    assert!(!f.has_partial());
    f.push(&m[..10]);
    assert_eq!(f.next_frame(), Ok(None));
    assert!(f.has_partial());
    f.push(&m[10..m.len() - 1]);
    assert_eq!(f.next_frame(), Ok(None));
    assert!(f.has_partial());
    f.push(&m[m.len() - 1..]);
    assert_eq!(f.next_frame(), Ok(Some(message(&m))));
    assert!(!f.has_partial());
    assert_eq!(f.buffered(), 0);
}

#[test]
fn content_length_names_and_forms() {
    for head in [
        "content-length: 3",
        "CONTENT-LENGTH:3",
        "Content-Length \t : 3 ",
        "l: 3",
        "L :3",
        "Content-Length:\r\n 3",
        "Content-Length: 3\r\nContent-Length: 3",
    ] {
        let m = format!("MESSAGE sip:a@b SIP/2.0\r\nVia: x\r\n{head}\r\n\r\nabc");
        assert_eq!(
            whole(m.as_bytes()),
            (vec![message(m.as_bytes())], None),
            "{head:?}"
        );
    }
}

#[test]
fn a_header_that_merely_contains_l_is_not_content_length() {
    let m = "MESSAGE sip:a@b SIP/2.0\r\nlx: 7\r\nX-L: 9\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(whole(m.as_bytes()), (vec![message(m.as_bytes())], None));
}

#[test]
fn missing_content_length_is_fatal_and_carries_the_head() {
    let head = b"MESSAGE sip:a@b SIP/2.0\r\nVia: x\r\n\r\n";
    let (frames, err) = whole(&[head.as_slice(), b"abc"].concat());
    assert!(frames.is_empty());
    let err = err.unwrap();
    assert_eq!(
        err,
        FrameError::MissingContentLength {
            head: Bytes::from_static(head)
        }
    );
    assert_eq!(err.status(), 400);
}

#[test]
fn bad_content_length_values_are_fatal() {
    for (value, conflicting) in [
        ("-1", false),
        ("abc", false),
        ("", false),
        ("1 2", false),
        ("0x10", false),
        ("3\r\nContent-Length: 4", true),
        ("3\r\nl: 30", true),
    ] {
        let m = format!("MESSAGE sip:a@b SIP/2.0\r\nContent-Length: {value}\r\n\r\nabc");
        let (_, err) = whole(m.as_bytes());
        let err = err.unwrap_or_else(|| panic!("{value:?} accepted"));
        match (&err, conflicting) {
            (FrameError::ConflictingContentLength { head }, true)
            | (FrameError::InvalidContentLength { head }, false) => {
                assert!(head.ends_with(b"\r\n\r\n"));
            }
            _ => panic!("{value:?}: {err:?}"),
        }
    }
}

#[test]
fn after_an_error_the_framer_stays_failed() {
    let mut f = StreamFramer::new(Limits::default());
    f.push(b"MESSAGE sip:a@b SIP/2.0\r\n\r\n");
    assert!(f.next_frame().is_err());
    f.push(&msg(""));
    assert_eq!(f.next_frame(), Err(FrameError::Failed));
    assert_eq!(f.buffered(), 0);
}

#[test]
fn oversize_body_is_refused_with_the_head_before_the_body_arrives() {
    let limits = Limits {
        max_message_size: 1000,
        ..Limits::default()
    };
    let big = msg(&"x".repeat(2000));
    let head_len = memchr::memmem::find(&big, b"\r\n\r\n").unwrap() + 4;
    // Only the head has been received.
    let (frames, err) = run(limits, &[&big[..head_len]]);
    assert!(frames.is_empty());
    let err = err.unwrap();
    assert_eq!(err.status(), 513);
    assert_eq!(err.head().map(|h| &h[..]), Some(&big[..head_len]));
}

#[test]
fn huge_content_length_is_too_large() {
    let m = b"MESSAGE sip:a@b SIP/2.0\r\nContent-Length: 99999999999999999999999999999\r\n\r\n";
    let (_, err) = whole(m);
    assert!(
        matches!(err, Some(FrameError::TooLarge { head: Some(_), .. })),
        "{err:?}"
    );
}

#[test]
fn endless_head_is_refused_without_buffering_past_the_limit() {
    let limits = Limits {
        max_message_size: 4096,
        max_headers: 10_000,
        max_line_length: 1000,
    };
    let mut f = StreamFramer::new(limits);
    f.push(b"MESSAGE sip:a@b SIP/2.0\r\n");
    let line = b"X-Filler: 0123456789012345678901234567890123456789\r\n";
    let mut result = Ok(None);
    for _ in 0..1000 {
        f.push(line);
        result = f.next_frame();
        if result.is_err() {
            break;
        }
        assert!(f.buffered() <= limits.max_message_size + line.len());
    }
    assert_eq!(
        result,
        Err(FrameError::TooLarge {
            limit: 4096,
            head: None
        })
    );
}

#[test]
fn too_many_headers() {
    let limits = Limits {
        max_headers: 5,
        ..Limits::default()
    };
    let mut m = b"MESSAGE sip:a@b SIP/2.0\r\n".to_vec();
    for i in 0..10 {
        m.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    m.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    let (_, err) = run(limits, &[&m]);
    let err = err.unwrap();
    assert_eq!(err.status(), 513);
    // The whole head was in the buffer: it comes with the error.
    assert!(
        matches!(
            err,
            FrameError::TooManyHeaders {
                limit: 5,
                head: Some(_)
            }
        ),
        "{err:?}"
    );
    // Received a byte at a time, the head is not there yet when the limit trips.
    let singles: Vec<&[u8]> = m.chunks(1).collect();
    let (_, err) = run(limits, &singles);
    assert_eq!(
        err,
        Some(FrameError::TooManyHeaders {
            limit: 5,
            head: None
        })
    );
}

#[test]
fn line_too_long_in_a_complete_and_in_a_partial_line() {
    let limits = Limits {
        max_line_length: 100,
        ..Limits::default()
    };
    let long = format!("X-Long: {}", "y".repeat(200));
    let m = format!("MESSAGE sip:a@b SIP/2.0\r\n{long}\r\nContent-Length: 0\r\n\r\n");
    let (_, err) = run(limits, &[m.as_bytes()]);
    assert!(
        matches!(
            err,
            Some(FrameError::LineTooLong {
                limit: 100,
                head: Some(_)
            })
        ),
        "{err:?}"
    );
    // Partial line: refused before its end arrives.
    let (_, err) = run(limits, &[&m.as_bytes()[..150]]);
    assert_eq!(
        err,
        Some(FrameError::LineTooLong {
            limit: 100,
            head: None
        })
    );
    // Folded lines count unfolded.
    let folded = format!(
        "MESSAGE sip:a@b SIP/2.0\r\nX-F: {}\r\n {}\r\nContent-Length: 0\r\n\r\n",
        "a".repeat(60),
        "b".repeat(60)
    );
    let (_, err) = run(limits, &[folded.as_bytes()]);
    assert!(
        matches!(err, Some(FrameError::LineTooLong { .. })),
        "{err:?}"
    );
}

#[test]
fn long_lines_near_the_limit_frame_the_same_at_any_read_boundary() {
    // Two fields each near the line limit (Kerberos and NTLM headers run to several KB), and
    // one exactly at it: how the reads split them must not matter.
    let limits = Limits::default();
    let max = limits.max_line_length;
    let at_limit = format!("X-C: {}", "c".repeat(max - 5));
    let m = format!(
        "MESSAGE sip:a@b SIP/2.0\r\nX-A: {}\r\nX-B: {}\r\n{at_limit}\r\nContent-Length: 0\r\n\r\n",
        "a".repeat(max - 100),
        "b".repeat(max - 100),
    );
    let m = m.as_bytes();
    let (expected, err) = whole(m);
    assert_eq!((expected.len(), err), (1, None));
    let x_b = m.windows(4).position(|w| w == b"X-B:").unwrap();
    let x_c = m.windows(4).position(|w| w == b"X-C:").unwrap();
    let c_end = x_c + at_limit.len();
    for split in [
        x_b + 1,
        x_b + 8000,
        x_c - 1,
        x_c + 1,
        x_c + 8000,
        c_end,
        c_end + 1,
    ] {
        assert_eq!(
            run(limits, &[&m[..split], &m[split..]]),
            (expected.clone(), None),
            "split at {split}"
        );
    }
    // One byte over the limit is still refused, whole or split before its CR LF.
    let over = String::from_utf8(m.to_vec())
        .unwrap()
        .replace(&at_limit, &format!("{at_limit}c"));
    let over = over.as_bytes();
    for split in [over.len(), c_end + 1] {
        let (_, err) = run(limits, &[&over[..split], &over[split..]]);
        assert!(
            matches!(err, Some(FrameError::LineTooLong { .. })),
            "{split}: {err:?}"
        );
    }
}

#[test]
fn binary_body_with_bare_lf_and_nul_bytes() {
    let body: Vec<u8> =
        b"\n\n\0\r\n\r\nMESSAGE x SIP/2.0\r\nContent-Length: 999\r\n\r\n\0\xff".to_vec();
    let mut m = format!(
        "MESSAGE sip:a@b SIP/2.0\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    m.extend_from_slice(&body);
    let stream = [m.clone(), m.clone()].concat();
    let (frames, err) = whole(&stream);
    assert_eq!(err, None);
    assert_eq!(frames, vec![message(&m), message(&m)]);
}

#[test]
fn rfc4475_mpart01_multipart_binary_body() {
    let data = std::fs::read(format!("{RFC4475}mpart01.sip")).unwrap();
    assert!(
        data.contains(&0) || data.iter().any(|&b| b >= 0x80),
        "binary body expected"
    );
    let stream = [data.clone(), data.clone()].concat();
    let (frames, err) = whole(&stream);
    assert_eq!(err, None);
    assert_eq!(frames, vec![message(&data), message(&data)]);
    // And split at every byte.
    for i in 0..=stream.len() {
        assert_eq!(
            run(Limits::default(), &[&stream[..i], &stream[i..]])
                .0
                .len(),
            2,
            "split at {i}"
        );
    }
}

#[test]
fn rfc4475_whitespace_before_colon() {
    let data = std::fs::read(format!("{RFC4475}wsinv.sip")).unwrap();
    let (frames, err) = whole(&data);
    assert_eq!(err, None);
    match &frames[..] {
        [Frame::Message(m)] => assert!(data.starts_with(m)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn read_straight_into_the_buffer() {
    let m = msg("direct");
    let mut f = StreamFramer::new(Limits::default());
    f.buffer_mut().extend_from_slice(&m);
    assert_eq!(f.next_frame(), Ok(Some(message(&m))));
}

/// A stream of messages and keep-alives, for the property tests.
fn stream_strategy() -> impl Strategy<Value = Vec<u8>> {
    let item = prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(|body| {
            let mut m = format!(
                "INFO sip:a@b SIP/2.0\r\nVia: SIP/2.0/TLS h\r\nl: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            m.extend_from_slice(&body);
            m
        }),
        1 => Just(b"\r\n\r\n".to_vec()),
        1 => Just(b"\r\n".to_vec()),
    ];
    proptest::collection::vec(item, 0..8).prop_map(|items| items.concat())
}

proptest! {
    #[test]
    fn arbitrary_splits_give_identical_frames(
        stream in stream_strategy(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let expected = whole(&stream);
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for p in points {
            chunks.push(&stream[last..p]);
            last = p;
        }
        chunks.push(&stream[last..]);
        prop_assert_eq!(run(Limits::default(), &chunks), expected);
    }

    #[test]
    fn never_panics_and_stays_bounded(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..20),
    ) {
        let limits = Limits { max_message_size: 512, max_headers: 8, max_line_length: 128 };
        let mut f = StreamFramer::new(limits);
        for c in &chunks {
            f.push(c);
            while let Ok(Some(_)) = f.next_frame() {}
            prop_assert!(f.buffered() <= limits.max_message_size + c.len());
        }
    }
}
