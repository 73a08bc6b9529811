//! RFC 3264 offer/answer: table-driven tests of answers (codecs, payload types, fmtp,
//! transport protocols, rejection, directions, old-style hold, IM accept-types), the
//! OfferAnswer session (hold/resume and their rollback, versions, re-offers, rejected slots,
//! changed capabilities, glare, bad answers), a Lync audio offer and a hostile offer.

use sip_core::sdp::offer_answer::{
    answer_direction, build_answer, build_offer, check_answer, hold_direction,
    intersect_accept_types, Codec, LocalCapabilities, MediaCapability, NegotiationState,
    OfferAnswer, OfferAnswerError,
};
use sip_core::sdp::{Connection, Direction, Origin, SessionDescription};

use Direction::{Inactive, RecvOnly, SendOnly, SendRecv};

fn sdp(text: &str) -> SessionDescription {
    let crlf = text.replace('\n', "\r\n");
    SessionDescription::parse_slice(crlf.as_bytes()).unwrap()
}

/// An offer with one audio line: `formats` on m=, then `extra` lines (rtpmap, direction…).
fn audio_offer(formats: &str, extra: &[&str]) -> SessionDescription {
    let mut s = format!(
        "v=0\no=alice 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 49170 RTP/AVP {formats}\n"
    );
    for l in extra {
        s.push_str(l);
        s.push('\n');
    }
    sdp(&s)
}

fn origin() -> Origin {
    Origin::new("-", "2002", 0, "192.0.2.2")
}

fn local(media: MediaCapability) -> LocalCapabilities {
    LocalCapabilities::new("192.0.2.2").with_media(media)
}

fn formats(answer: &SessionDescription, i: usize) -> String {
    answer.media()[i].formats().join(" ")
}

// ---- codecs -------------------------------------------------------------------------------

#[test]
fn codec_intersection_keeps_offer_order_and_payload_types() {
    struct Case {
        name: &'static str,
        offer_formats: &'static str,
        offer_lines: &'static [&'static str],
        local: Vec<Codec>,
        /// Expected answer formats; `None` = rejected.
        expected: Option<&'static str>,
    }
    let cases = [
        Case {
            name: "offer order wins over local preference",
            offer_formats: "0 8 96",
            offer_lines: &["a=rtpmap:96 opus/48000/2"],
            local: vec![Codec::pcma(), Codec::pcmu()],
            expected: Some("0 8"),
        },
        Case {
            name: "dynamic payload type for a static codec is kept",
            offer_formats: "101 0",
            offer_lines: &["a=rtpmap:101 PCMU/8000"],
            local: vec![Codec::pcmu()],
            expected: Some("101 0"),
        },
        Case {
            name: "stereo opus matches by channels",
            offer_formats: "111 0",
            offer_lines: &["a=rtpmap:111 opus/48000/2"],
            local: vec![Codec::new("opus", 48000).with_channels(2)],
            expected: Some("111"),
        },
        Case {
            name: "encoding names compare case-insensitively",
            offer_formats: "97",
            offer_lines: &["a=rtpmap:97 TELEPHONE-EVENT/8000", "a=fmtp:97 0-15"],
            local: vec![Codec::telephone_event()],
            expected: Some("97"),
        },
        Case {
            name: "static payload types without rtpmap match by number",
            offer_formats: "0 18 3",
            offer_lines: &[],
            local: vec![Codec::new("G729", 8000), Codec::pcmu()],
            expected: Some("0 18"),
        },
        Case {
            name: "a local codec declaring a static number matches it",
            offer_formats: "4",
            offer_lines: &[],
            local: vec![Codec::new("x-custom", 8000).with_payload_type(4)],
            expected: Some("4"),
        },
        Case {
            name: "channel count differs",
            offer_formats: "117",
            offer_lines: &["a=rtpmap:117 G722/8000/2"],
            local: vec![Codec::g722()],
            expected: None,
        },
        Case {
            name: "clock rate differs",
            offer_formats: "104",
            offer_lines: &["a=rtpmap:104 SILK/16000"],
            local: vec![Codec::new("SILK", 8000)],
            expected: None,
        },
        Case {
            name: "dynamic payload type without rtpmap is unknown",
            offer_formats: "120",
            offer_lines: &[],
            local: vec![Codec::pcmu()],
            expected: None,
        },
    ];
    for case in cases {
        let offer = audio_offer(case.offer_formats, case.offer_lines);
        let caps = local(MediaCapability::audio(50000, case.local));
        let answer = build_answer(&offer, &caps, origin()).unwrap();
        let m = &answer.media()[0];
        match case.expected {
            Some(f) => {
                assert_eq!(formats(&answer, 0), f, "{}", case.name);
                assert_eq!(m.port(), 50000, "{}", case.name);
                for pt in m.formats() {
                    let pt: u8 = pt.parse().unwrap();
                    assert!(m.rtpmap(pt).is_some(), "{}: rtpmap for {pt}", case.name);
                }
                check_answer(&offer, &answer).unwrap();
            }
            None => {
                assert!(m.is_rejected(), "{}", case.name);
                let first = case.offer_formats.split(' ').next().unwrap();
                assert_eq!(formats(&answer, 0), first, "{}", case.name);
            }
        }
    }
}

#[test]
fn answer_keeps_each_offered_payload_types_fmtp() {
    let offer = audio_offer(
        "96 97",
        &[
            "a=rtpmap:96 opus/48000/2",
            "a=fmtp:96 useinbandfec=1",
            "a=rtpmap:97 telephone-event/8000",
            "a=fmtp:97 0-15",
        ],
    );
    let caps = local(MediaCapability::audio(
        50000,
        [
            Codec::new("opus", 48000).with_channels(2),
            Codec::telephone_event(),
        ],
    ));
    let answer = build_answer(&offer, &caps, origin()).unwrap();
    let m = &answer.media()[0];
    assert_eq!(m.fmtp("96").unwrap().parameters, "useinbandfec=1");
    // The local codec's "0-16" is for offers; payload type 97 is the offered format.
    assert_eq!(m.fmtp("97").unwrap().parameters, "0-15");
    assert_eq!(m.rtpmap(96).unwrap().to_string(), "96 opus/48000/2");

    // H.264 in two packetization modes: two formats, each answered as offered.
    let offer = sdp(
        "v=0\no=a 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n\
         m=video 49172 RTP/AVP 97 98 99\n\
         a=rtpmap:97 H264/90000\na=fmtp:97 profile-level-id=42e01f;packetization-mode=1\n\
         a=rtpmap:98 H264/90000\na=fmtp:98 profile-level-id=42e01f;packetization-mode=0\n\
         a=rtpmap:99 H264/90000\n",
    );
    let caps = local(MediaCapability::video(
        50002,
        [Codec::new("H264", 90000).with_fmtp("packetization-mode=1")],
    ));
    let answer = build_answer(&offer, &caps, origin()).unwrap();
    let m = &answer.media()[0];
    assert_eq!(formats(&answer, 0), "97 98 99");
    // (payload type, expected a=fmtp parameters; None = no a=fmtp)
    let table = [
        ("97", Some("profile-level-id=42e01f;packetization-mode=1")),
        ("98", Some("profile-level-id=42e01f;packetization-mode=0")),
        ("99", None),
    ];
    for (pt, expected) in table {
        assert_eq!(
            m.fmtp(pt).map(|f| f.parameters),
            expected.map(String::from),
            "payload type {pt}"
        );
    }
    check_answer(&offer, &answer).unwrap();
}

// ---- rejection ----------------------------------------------------------------------------

#[test]
fn rejected_lines_get_port_zero_and_the_first_offered_format() {
    let offer = sdp(
        "v=0\no=a 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n\
         m=audio 49170 RTP/AVP 0\n\
         m=video 49172 RTP/AVP 31 34\n\
         m=audio 0 RTP/AVP 8\n\
         m=application 5000 UDP/BFCP *\n\
         m=audio 49174 RTP/SAVP 0\n",
    );
    let caps = LocalCapabilities::new("192.0.2.2")
        .with_media(
            MediaCapability::audio(50000, [Codec::pcmu(), Codec::pcma()]).with_protos(["RTP/AVP"]),
        )
        .with_media(MediaCapability::audio(50002, [Codec::pcmu()]).with_protos(["RTP/AVP"]));
    let answer = build_answer(&offer, &caps, origin()).unwrap();
    let lines: Vec<String> = answer
        .media()
        .iter()
        .map(|m| m.media_line().value().to_owned())
        .collect();
    assert_eq!(
        lines,
        [
            "audio 50000 RTP/AVP 0",
            "video 0 RTP/AVP 31",       // no video capability
            "audio 0 RTP/AVP 8",        // offered with port 0
            "application 0 UDP/BFCP *", // unknown media
            "audio 0 RTP/SAVP 0",       // protocol not accepted
        ]
    );
    // A rejected line carries no attributes.
    assert!(answer.media()[1].lines().is_empty());
    check_answer(&offer, &answer).unwrap();
}

#[test]
fn an_offer_with_nothing_acceptable_is_488() {
    let offer = audio_offer("96", &["a=rtpmap:96 opus/48000/2"]);
    let mut session = OfferAnswer::new(local(MediaCapability::audio(5000, [Codec::pcmu()])), "9");
    let err = session.receive_offer(&offer).unwrap_err();
    assert_eq!(err, OfferAnswerError::NoAcceptableMedia);
    assert_eq!(err.status_code(), 488);
    assert_eq!(session.state(), NegotiationState::Initial);
}

// ---- directions ---------------------------------------------------------------------------

#[test]
fn every_direction_pair() {
    // (offered, local wants, answered)
    let table = [
        (SendRecv, SendRecv, SendRecv),
        (SendRecv, SendOnly, SendOnly),
        (SendRecv, RecvOnly, RecvOnly),
        (SendRecv, Inactive, Inactive),
        (SendOnly, SendRecv, RecvOnly),
        (SendOnly, SendOnly, Inactive),
        (SendOnly, RecvOnly, RecvOnly),
        (SendOnly, Inactive, Inactive),
        (RecvOnly, SendRecv, SendOnly),
        (RecvOnly, SendOnly, SendOnly),
        (RecvOnly, RecvOnly, Inactive),
        (RecvOnly, Inactive, Inactive),
        (Inactive, SendRecv, Inactive),
        (Inactive, SendOnly, Inactive),
        (Inactive, RecvOnly, Inactive),
        (Inactive, Inactive, Inactive),
    ];
    for (offered, wants, expected) in table {
        assert_eq!(
            answer_direction(offered, wants),
            expected,
            "{offered} {wants}"
        );
        let direction_line = format!("a={offered}");
        let offer = audio_offer("0", &[&direction_line]);
        let caps = local(MediaCapability::audio(5000, [Codec::pcmu()]).with_direction(wants));
        let answer = build_answer(&offer, &caps, origin()).unwrap();
        assert_eq!(
            answer.media()[0].direction(),
            Some(expected),
            "{offered} {wants}"
        );
        check_answer(&offer, &answer).unwrap();
    }
    // A session-level direction counts as the offered one.
    let offer = sdp(
        "v=0\no=a 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\na=sendonly\n\
                     m=audio 49170 RTP/AVP 0\n",
    );
    let answer = build_answer(
        &offer,
        &local(MediaCapability::audio(5000, [Codec::pcmu()])),
        origin(),
    )
    .unwrap();
    assert_eq!(answer.media()[0].direction(), Some(RecvOnly));
    // Hold directions (RFC 3264 §8.4).
    let holds = [
        (SendRecv, SendOnly),
        (RecvOnly, Inactive),
        (SendOnly, SendOnly),
        (Inactive, Inactive),
    ];
    for (now, held) in holds {
        assert_eq!(hold_direction(now), held);
    }
}

// ---- sessions: hold, resume, versions -----------------------------------------------------

fn pair() -> (OfferAnswer, OfferAnswer) {
    let caps = |addr: &str, port| {
        LocalCapabilities::new(addr).with_media(MediaCapability::audio(
            port,
            [Codec::pcmu(), Codec::pcma(), Codec::telephone_event()],
        ))
    };
    (
        OfferAnswer::new(caps("192.0.2.1", 49170), "1001"),
        OfferAnswer::new(caps("192.0.2.2", 50000), "2002"),
    )
}

fn dir(s: &SessionDescription) -> Direction {
    s.effective_direction(&s.media()[0])
}

#[test]
fn hold_and_resume_sequence_with_versions() {
    let (mut alice, mut bob) = pair();
    assert_eq!(alice.state(), NegotiationState::Initial);
    // step: (alice's offer direction, bob's answer direction, alice version, bob version)
    let offer = alice.create_offer().unwrap();
    assert_eq!(offer.media()[0].formats(), ["0", "8", "96"]);
    assert_eq!(alice.state(), NegotiationState::OfferSent);
    let answer = bob.receive_offer(&offer).unwrap();
    alice.receive_answer(&answer).unwrap();
    assert_eq!(alice.state(), NegotiationState::Stable);
    let mut seen = vec![(
        dir(&offer),
        dir(&answer),
        offer.origin().session_version,
        answer.origin().session_version,
    )];

    type Step = fn(&mut OfferAnswer) -> Result<SessionDescription, OfferAnswerError>;
    let steps: [(&str, Step); 4] = [
        ("hold", OfferAnswer::hold),
        ("refresh while held", OfferAnswer::create_offer),
        ("resume", OfferAnswer::resume),
        ("refresh", OfferAnswer::create_offer),
    ];
    for (name, step) in steps {
        let offer = step(&mut alice).unwrap_or_else(|e| panic!("{name}: {e}"));
        let answer = bob.receive_offer(&offer).unwrap();
        alice.receive_answer(&answer).unwrap();
        seen.push((
            dir(&offer),
            dir(&answer),
            offer.origin().session_version,
            answer.origin().session_version,
        ));
    }
    assert_eq!(
        seen,
        [
            (SendRecv, SendRecv, 0, 0),
            (SendOnly, RecvOnly, 1, 1), // hold
            (SendOnly, RecvOnly, 1, 1), // unchanged: same versions
            (SendRecv, SendRecv, 2, 2), // resume
            (SendRecv, SendRecv, 2, 2),
        ]
    );
    assert!(!alice.is_holding());
    assert!(!bob.is_held_by_remote());
}

#[test]
fn holding_a_stream_the_peer_already_holds_makes_it_inactive() {
    let (mut alice, mut bob) = pair();
    let offer = alice.create_offer().unwrap();
    alice
        .receive_answer(&bob.receive_offer(&offer).unwrap())
        .unwrap();
    // Bob holds: alice answers recvonly.
    let hold = bob.hold().unwrap();
    let answer = alice.receive_offer(&hold).unwrap();
    assert_eq!(dir(&answer), RecvOnly);
    assert!(alice.is_held_by_remote());
    bob.receive_answer(&answer).unwrap();
    // Alice holds too: her last direction was recvonly, so inactive.
    let hold2 = alice.hold().unwrap();
    assert_eq!(dir(&hold2), Inactive);
    let answer = bob.receive_offer(&hold2).unwrap();
    assert_eq!(dir(&answer), Inactive);
    alice.receive_answer(&answer).unwrap();
    // Bob resumes: he offers sendrecv; alice, still holding, answers sendonly.
    let resume = bob.resume().unwrap();
    assert_eq!(dir(&resume), SendRecv);
    let answer = alice.receive_offer(&resume).unwrap();
    assert_eq!(dir(&answer), SendOnly);
    bob.receive_answer(&answer).unwrap();
    // Alice resumes: sendrecv both ways.
    let resume = alice.resume().unwrap();
    let answer = bob.receive_offer(&resume).unwrap();
    assert_eq!((dir(&resume), dir(&answer)), (SendRecv, SendRecv));
    alice.receive_answer(&answer).unwrap();
}

#[test]
fn answer_to_an_unchanged_reoffer_keeps_the_version() {
    let (mut alice, mut bob) = pair();
    let offer = alice.create_offer().unwrap();
    let first = bob.receive_offer(&offer).unwrap();
    alice.receive_answer(&first).unwrap();
    let again = alice.create_offer().unwrap();
    assert_eq!(
        again, offer,
        "unchanged re-offer is the same SDP, same version"
    );
    let second = bob.receive_offer(&again).unwrap();
    assert_eq!(second, first);
    alice.receive_answer(&second).unwrap();
    assert_eq!((alice.version(), bob.version()), (0, 0));
}

#[test]
fn reoffers_add_lines_but_may_not_remove_them() {
    let (mut alice, mut bob) = pair();
    let offer = alice.create_offer().unwrap();
    alice
        .receive_answer(&bob.receive_offer(&offer).unwrap())
        .unwrap();
    // A re-offer from a third-party SDP adding video: video rejected, audio kept.
    let mut reoffer = offer.clone();
    reoffer.bump_version();
    let video = sdp("v=0\no=a 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\nm=video 49172 RTP/AVP 31\n");
    reoffer.push_media(video.media()[0].clone());
    let answer = bob.receive_offer(&reoffer).unwrap();
    assert_eq!(answer.media().len(), 2);
    assert!(!answer.media()[0].is_rejected() && answer.media()[1].is_rejected());
    assert_eq!(answer.origin().session_version, 1);
    // Dropping a line is refused with 488 and changes nothing.
    let mut short = sdp("v=0\no=a 1 3 IN IP4 192.0.2.1\ns=-\nt=0 0\nm=audio 49170 RTP/AVP 0\n");
    let err = bob.receive_offer(&short).unwrap_err();
    assert_eq!(err, OfferAnswerError::ReofferMismatch { index: 1 });
    assert_eq!(err.status_code(), 488);
    // Retyping an active line too.
    short.push_media(
        sdp("v=0\no=a 1 1 IN IP4 h\ns=-\nt=0 0\nm=audio 1 RTP/AVP 0\n").media()[0].clone(),
    );
    short.media_mut()[0] = video.media()[0].clone();
    assert_eq!(
        bob.receive_offer(&short),
        Err(OfferAnswerError::ReofferMismatch { index: 0 })
    );
    assert_eq!(bob.version(), 1);
}

#[test]
fn glare_and_answers_without_offers() {
    let (mut alice, mut bob) = pair();
    let a = alice.create_offer().unwrap();
    let b = bob.create_offer().unwrap();
    let err = alice.receive_offer(&b).unwrap_err();
    assert_eq!(
        (err.clone(), err.status_code()),
        (OfferAnswerError::OfferPending, 491)
    );
    assert_eq!(alice.create_offer(), Err(OfferAnswerError::OfferPending));
    assert_eq!(alice.hold(), Err(OfferAnswerError::OfferPending));
    // After the 491 both roll back; bob answers alice's offer.
    alice.rollback();
    bob.rollback();
    let a2 = alice.create_offer().unwrap();
    assert_eq!(a2, a, "the same offer again: same version");
    alice
        .receive_answer(&bob.receive_offer(&a2).unwrap())
        .unwrap();
    assert_eq!(
        alice.receive_answer(&a2),
        Err(OfferAnswerError::NoOfferPending)
    );
}

// ---- bad answers --------------------------------------------------------------------------

#[test]
fn bad_answers_are_488_and_roll_back() {
    let good = "v=0\no=b 2 0 IN IP4 192.0.2.2\ns=-\nc=IN IP4 192.0.2.2\nt=0 0\n";
    let cases: [(&str, String, OfferAnswerError); 5] = [
        (
            "missing line",
            good.to_string(),
            OfferAnswerError::MediaCountMismatch {
                offered: 1,
                answered: 0,
            },
        ),
        (
            "extra line",
            format!("{good}m=audio 5000 RTP/AVP 0\nm=audio 5002 RTP/AVP 0\n"),
            OfferAnswerError::MediaCountMismatch {
                offered: 1,
                answered: 2,
            },
        ),
        (
            "media type changed",
            format!("{good}m=video 5000 RTP/AVP 0\n"),
            OfferAnswerError::MediaTypeMismatch { index: 0 },
        ),
        (
            "no offered format",
            format!("{good}m=audio 5000 RTP/AVP 18 4\na=recvonly\n"),
            OfferAnswerError::FormatNotOffered {
                index: 0,
                format: "18".into(),
            },
        ),
        (
            "sendrecv to a sendonly offer",
            format!("{good}m=audio 5000 RTP/AVP 0\na=sendrecv\n"),
            OfferAnswerError::DirectionMismatch {
                index: 0,
                offered: SendOnly,
                answered: SendRecv,
            },
        ),
    ];
    for (name, answer, expected) in cases {
        let (mut alice, mut bob) = pair();
        let offer = alice.create_offer().unwrap();
        alice
            .receive_answer(&bob.receive_offer(&offer).unwrap())
            .unwrap();
        let hold = alice.hold().unwrap();
        let err = alice.receive_answer(&sdp(&answer)).unwrap_err();
        assert_eq!(err, expected, "{name}");
        assert_eq!(err.status_code(), 488, "{name}");
        assert_eq!(
            alice.state(),
            NegotiationState::Stable,
            "{name}: rolled back"
        );
        assert_eq!(dir(alice.local_description().unwrap()), SendRecv, "{name}");
        assert!(!alice.is_holding(), "{name}: the failed hold is undone");
        // The hold can be offered again; same content, same version as the failed one.
        let again = alice.hold().unwrap();
        assert_eq!(again, hold, "{name}");
    }
    // A stream offered with port 0 must not be enabled by the answer.
    let offer = sdp("v=0\no=a 1 1 IN IP4 h\ns=-\nt=0 0\nm=audio 0 RTP/AVP 0\n");
    let answer = sdp("v=0\no=b 1 1 IN IP4 h\ns=-\nt=0 0\nm=audio 5000 RTP/AVP 0\n");
    assert_eq!(
        check_answer(&offer, &answer),
        Err(OfferAnswerError::EnabledRejectedStream { index: 0 })
    );
}

// ---- instant messaging --------------------------------------------------------------------

#[test]
fn accept_types_intersection() {
    let lync = ["text/plain", "text/html", "multipart/alternative"];
    // (offered, local, expected answer; empty = rejected)
    let table: [(&[&str], &[&str], &[&str]); 16] = [
        (&lync, &["text/plain"], &["text/plain"]),
        (
            &lync,
            &["TEXT/HTML", "text/plain"],
            &["text/plain", "text/html"],
        ),
        (&lync, &["text/*"], &["text/plain", "text/html"]),
        (&lync, &["*"], &lync),
        (
            &["*"],
            &["text/plain", "message/cpim"],
            &["text/plain", "message/cpim"],
        ),
        (&["text/*"], &["text/plain", "image/png"], &["text/plain"]),
        (&["text/*"], &["text/*"], &["text/*"]),
        // Wildcards against wildcards: the narrower one.
        (&["text/*"], &["*"], &["text/*"]),
        (&["*"], &["text/*"], &["text/*"]),
        (&["*"], &["*"], &["*"]),
        (&["TEXT/*"], &["text/plain"], &["text/plain"]),
        (&["text/*"], &["image/*"], &[]),
        (
            &["message/cpim", "text/*"],
            &["*"],
            &["message/cpim", "text/*"],
        ),
        (&["*"], &["text/*", "text/plain"], &["text/*", "text/plain"]),
        (&["image/png"], &["text/plain"], &[]),
        (
            &["text/plain", "text/plain"],
            &["text/plain"],
            &["text/plain"],
        ),
    ];
    for (offered, local_types, expected) in table {
        let local_types: Vec<String> = local_types.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            intersect_accept_types(offered, &local_types),
            expected,
            "{offered:?} ∩ {local_types:?}"
        );
        let offer = sdp(&format!(
            "v=0\no=- 0 0 IN IP4 lyncfe01.contoso.test\ns=session\nc=IN IP4 lyncfe01.contoso.test\nt=0 0\n\
             m=message 5060 sip null\na=accept-types:{}\n",
            offered.join(" ")
        ));
        let caps = local(MediaCapability::message(5061, local_types.clone()));
        let answer = build_answer(&offer, &caps, origin()).unwrap();
        let m = &answer.media()[0];
        if expected.is_empty() {
            assert!(m.is_rejected());
        } else {
            assert_eq!(m.media_line().value(), "message 5061 sip null");
            assert_eq!(m.accept_types(), expected);
            check_answer(&offer, &answer).unwrap();
        }
    }
}

#[test]
fn lync_im_offer_round_trip() {
    let body = std::fs::read("tests/data/sdp/lync-im-offer.sdp").unwrap();
    let offer = SessionDescription::parse_slice(&body).unwrap();
    let mut app = OfferAnswer::new(
        LocalCapabilities::new("app.contoso.test").with_media(MediaCapability::message(
            5061,
            ["text/plain", "message/cpim"],
        )),
        "3003",
    );
    let answer = app.receive_offer(&offer).unwrap();
    assert_eq!(
        answer.to_string(),
        "v=0\r\no=- 3003 0 IN IP4 app.contoso.test\r\ns=-\r\nc=IN IP4 app.contoso.test\r\n\
         t=0 0\r\nm=message 5061 sip null\r\na=accept-types:text/plain\r\na=sendrecv\r\n"
    );
    // Our own IM offer, answered by a peer that only takes text/html: rejected line → 488.
    let mut peer = OfferAnswer::new(
        LocalCapabilities::new("192.0.2.9")
            .with_media(MediaCapability::message(5060, ["text/html"])),
        "4",
    );
    let mut me = OfferAnswer::new(
        LocalCapabilities::new("192.0.2.1")
            .with_media(MediaCapability::message(5060, ["text/plain"])),
        "5",
    );
    let offer = me.create_offer().unwrap();
    assert_eq!(
        offer.media()[0].media_line().value(),
        "message 5060 sip null"
    );
    assert_eq!(
        peer.receive_offer(&offer),
        Err(OfferAnswerError::NoAcceptableMedia)
    );
}

// ---- Lync audio ---------------------------------------------------------------------------

#[test]
fn lync_srtp_audio_offer_needs_an_srtp_capability() {
    // Lync offers a single RTP/SAVP line with a=crypto (and a=encryption:optional).
    let body = std::fs::read("tests/data/sdp/lync-audio-offer.sdp").unwrap();
    let offer = SessionDescription::parse_slice(&body).unwrap();
    assert_eq!(offer.media().len(), 1);
    assert_eq!(offer.media()[0].proto(), "RTP/SAVP");
    assert!(offer.media()[0].has_attribute("crypto"));
    // Default capabilities cannot answer SRTP (no a=crypto): the line is rejected, and a
    // session refuses the offer with 488.
    let caps = local(MediaCapability::audio(
        50000,
        [Codec::pcma(), Codec::pcmu()],
    ));
    let answer = build_answer(&offer, &caps, origin()).unwrap();
    assert_eq!(
        answer.to_string(),
        "v=0\r\no=- 2002 0 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\n\
         m=audio 0 RTP/SAVP 117\r\n"
    );
    check_answer(&offer, &answer).unwrap();
    let mut session = OfferAnswer::new(caps, "2002");
    assert_eq!(
        session.receive_offer(&offer),
        Err(OfferAnswerError::NoAcceptableMedia)
    );
    // An application doing SRTP lists the profile and supplies its a=crypto.
    let crypto = "2 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
    let caps = local(
        MediaCapability::audio(
            50000,
            [Codec::pcmu(), Codec::pcma(), Codec::telephone_event()],
        )
        .with_protos(["RTP/SAVP"])
        .with_attribute("crypto", Some(crypto)),
    );
    let answer = build_answer(&offer, &caps, origin()).unwrap();
    assert_eq!(
        answer.to_string(),
        format!(
            "v=0\r\no=- 2002 0 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\n\
             m=audio 50000 RTP/SAVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=crypto:{crypto}\r\n\
             a=sendrecv\r\n"
        )
    );
    check_answer(&offer, &answer).unwrap();

    // The same offer with a plain RTP/AVP alternative line after the SAVP one: default
    // capabilities answer the AVP line and reject the SAVP one.
    let mut both = offer.clone();
    let mut plain = offer.media()[0].clone();
    let mut m = plain.media().clone();
    m.proto = "RTP/AVP".into();
    m.port = 19514;
    plain.set_media(m).unwrap();
    plain.remove_attributes("crypto");
    plain.remove_attributes("cryptoscale");
    both.push_media(plain);
    let caps = local(MediaCapability::audio(
        50000,
        [Codec::pcmu(), Codec::pcma()],
    ));
    let answer = build_answer(&both, &caps, origin()).unwrap();
    let lines: Vec<&str> = answer
        .media()
        .iter()
        .map(|m| m.media_line().value())
        .collect();
    assert_eq!(lines, ["audio 0 RTP/SAVP 117", "audio 50000 RTP/AVP 0 8"]);
    check_answer(&both, &answer).unwrap();
}

#[test]
fn initial_offer_numbers_dynamic_payload_types() {
    let caps = LocalCapabilities::new("192.0.2.1")
        .with_media(
            MediaCapability::audio(
                4000,
                [
                    Codec::new("opus", 48000)
                        .with_channels(2)
                        .with_fmtp("useinbandfec=1"),
                    Codec::pcmu(),
                    Codec::new("x-custom", 8000).with_payload_type(96),
                    Codec::telephone_event(),
                ],
            )
            .with_attribute("ptime", Some("20")),
        )
        .with_media(MediaCapability::message(5060, ["text/plain"]));
    let offer = build_offer(&caps, Origin::new("-", "1", 0, "192.0.2.1")).unwrap();
    assert_eq!(
        offer.to_string(),
        "v=0\r\no=- 1 0 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
         m=audio 4000 RTP/AVP 97 0 96 98\r\na=rtpmap:97 opus/48000/2\r\n\
         a=fmtp:97 useinbandfec=1\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:96 x-custom/8000\r\n\
         a=rtpmap:98 telephone-event/8000\r\na=fmtp:98 0-16\r\na=ptime:20\r\na=sendrecv\r\n\
         m=message 5060 sip null\r\na=accept-types:text/plain\r\na=sendrecv\r\n"
    );
}

// ---- review fixes -------------------------------------------------------------------------

#[test]
fn answers_may_add_formats_but_need_an_offered_one() {
    let offer = audio_offer("0 8", &[]);
    let head = "v=0\no=b 2 0 IN IP4 192.0.2.2\ns=-\nc=IN IP4 192.0.2.2\nt=0 0\n";
    // (name, answer m= line and attributes, expected)
    let table: [(&str, &str, Result<(), OfferAnswerError>); 5] = [
        ("only offered formats", "m=audio 5000 RTP/AVP 8 0", Ok(())),
        (
            "an extra format after an offered one (RFC 3264 §6.1)",
            "m=audio 5000 RTP/AVP 0 18\na=rtpmap:18 G729/8000",
            Ok(()),
        ),
        (
            "an extra format first",
            "m=audio 5000 RTP/AVP 18 8\na=rtpmap:18 G729/8000",
            Ok(()),
        ),
        (
            "accepted with no offered format",
            "m=audio 5000 RTP/AVP 18 4",
            Err(OfferAnswerError::FormatNotOffered {
                index: 0,
                format: "18".into(),
            }),
        ),
        (
            "rejected: formats do not matter",
            "m=audio 0 RTP/AVP 18",
            Ok(()),
        ),
    ];
    for (name, lines, expected) in table {
        let answer = sdp(&format!("{head}{lines}\n"));
        assert_eq!(check_answer(&offer, &answer), expected, "{name}");
    }
    // A session takes an answer with an extra format.
    let (mut alice, _) = pair();
    alice.create_offer().unwrap();
    let answer = sdp(&format!(
        "{head}m=audio 5000 RTP/AVP 0 18\na=rtpmap:18 G729/8000\n"
    ));
    alice.receive_answer(&answer).unwrap();
    assert_eq!(alice.state(), NegotiationState::Stable);
}

#[test]
fn default_capabilities_accept_only_plain_protocols() {
    let audio = || MediaCapability::audio(5000, [Codec::pcmu()]);
    let im = || MediaCapability::message(5060, ["text/plain"]);
    // (name, capability, offered m= line, accepted)
    let table: [(&str, MediaCapability, &str, bool); 12] = [
        ("audio RTP/AVP", audio(), "audio 4000 RTP/AVP 0", true),
        ("audio rtp/avp", audio(), "audio 4000 rtp/avp 0", true),
        ("audio RTP/SAVP", audio(), "audio 4000 RTP/SAVP 0", false),
        ("audio RTP/AVPF", audio(), "audio 4000 RTP/AVPF 0", false),
        ("audio RTP/SAVPF", audio(), "audio 4000 RTP/SAVPF 0", false),
        (
            "audio DTLS-SRTP",
            audio(),
            "audio 4000 UDP/TLS/RTP/SAVPF 0",
            false,
        ),
        (
            "audio RTP/SAVP listed",
            audio().with_protos(["RTP/AVP", "RTP/SAVP"]),
            "audio 4000 RTP/SAVP 0",
            true,
        ),
        ("message sip", im(), "message 5060 sip null", true),
        ("message MSRP", im(), "message 2855 TCP/MSRP *", false),
        (
            "message MSRP/TLS",
            im(),
            "message 2855 TCP/TLS/MSRP *",
            false,
        ),
        (
            "message MSRP listed",
            im().with_protos(["TCP/MSRP"])
                .with_attribute("path", Some("msrp://192.0.2.2:2855/s1;tcp")),
            "message 2855 TCP/MSRP *",
            true,
        ),
        (
            "video RTP/SAVP",
            MediaCapability::video(5002, [Codec::new("H264", 90000)]),
            "video 4002 RTP/SAVP 96\na=rtpmap:96 H264/90000",
            false,
        ),
    ];
    for (name, cap, m_line, accepted) in table {
        let offer = sdp(&format!(
            "v=0\no=a 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n\
             m={m_line}\na=accept-types:text/plain\na=crypto:1 AES_CM_128_HMAC_SHA1_80 \
             inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\n"
        ));
        let answer = build_answer(&offer, &local(cap), origin()).unwrap();
        let m = &answer.media()[0];
        assert_eq!(!m.is_rejected(), accepted, "{name}");
        if accepted {
            assert_eq!(m.proto(), offer.media()[0].proto(), "{name}");
        } else {
            assert!(m.lines().is_empty(), "{name}");
        }
        check_answer(&offer, &answer).unwrap();
    }
    // The initial offers of default capabilities use exactly those protocols.
    let offer = build_offer(
        &LocalCapabilities::new("192.0.2.1")
            .with_media(audio())
            .with_media(im()),
        origin(),
    )
    .unwrap();
    let protos: Vec<&str> = offer.media().iter().map(|m| m.proto()).collect();
    assert_eq!(protos, ["RTP/AVP", "sip"]);
}

fn av_caps(addr: &str, port: u16) -> LocalCapabilities {
    LocalCapabilities::new(addr)
        .with_media(MediaCapability::audio(port, [Codec::pcmu()]))
        .with_media(MediaCapability::video(
            port + 2,
            [Codec::new("H264", 90000)],
        ))
}

#[test]
fn a_slot_the_answer_rejected_stays_rejected_and_may_be_reused() {
    // Alice offers audio and video; Bob only does audio and rejects the video line.
    let mut alice = OfferAnswer::new(av_caps("192.0.2.1", 4000), "1");
    let mut bob = OfferAnswer::new(local(MediaCapability::audio(5000, [Codec::pcmu()])), "2");
    let offer = alice.create_offer().unwrap();
    let answer = bob.receive_offer(&offer).unwrap();
    assert!(answer.media()[1].is_rejected());
    alice.receive_answer(&answer).unwrap();
    assert!(alice.local_description().unwrap().media()[1].is_rejected());

    // Bob reuses the rejected slot for instant messaging (RFC 3264 §8.1).
    let mut reoffer = answer.clone();
    reoffer.bump_version();
    reoffer.media_mut()[1] = sdp(
        "v=0\no=b 1 1 IN IP4 h\ns=-\nt=0 0\nm=message 5062 sip null\na=accept-types:text/plain\n",
    )
    .media()[0]
        .clone();
    alice
        .capabilities_mut()
        .media
        .push(MediaCapability::message(5060, ["text/plain"]));
    let reanswer = alice.receive_offer(&reoffer).unwrap();
    let lines: Vec<&str> = reanswer
        .media()
        .iter()
        .map(|m| m.media_line().value())
        .collect();
    assert_eq!(lines, ["audio 4000 RTP/AVP 0", "message 5060 sip null"]);

    // Alice's own refresh re-offer does not re-open the rejected line: it is sent with
    // port 0, which is a change, so the version goes up once, then stays.
    let mut alice = OfferAnswer::new(av_caps("192.0.2.1", 4000), "1");
    let mut bob = OfferAnswer::new(local(MediaCapability::audio(5000, [Codec::pcmu()])), "2");
    let offer = alice.create_offer().unwrap();
    alice
        .receive_answer(&bob.receive_offer(&offer).unwrap())
        .unwrap();
    for version in [1, 1] {
        let refresh = alice.create_offer().unwrap();
        assert_eq!(refresh.origin().session_version, version);
        assert_eq!(
            refresh.media()[1].media_line().value(),
            "video 0 RTP/AVP 96"
        );
        assert!(!refresh.media()[0].is_rejected());
        let answer = bob.receive_offer(&refresh).unwrap();
        assert!(answer.media()[1].is_rejected());
        alice.receive_answer(&answer).unwrap();
    }
}

#[test]
fn a_failed_hold_or_resume_is_undone() {
    let (mut alice, mut bob) = pair();
    let offer = alice.create_offer().unwrap();
    alice
        .receive_answer(&bob.receive_offer(&offer).unwrap())
        .unwrap();

    // The hold fails (488 or 491): Alice is not holding, she answers Bob sendrecv.
    alice.hold().unwrap();
    assert!(alice.is_holding());
    alice.rollback();
    assert!(!alice.is_holding());
    let reoffer = bob.create_offer().unwrap();
    let answer = alice.receive_offer(&reoffer).unwrap();
    assert_eq!(dir(&answer), SendRecv);
    bob.receive_answer(&answer).unwrap();

    // The hold succeeds; then the resume fails: Alice still holds, she answers sendonly.
    let hold = alice.hold().unwrap();
    alice
        .receive_answer(&bob.receive_offer(&hold).unwrap())
        .unwrap();
    alice.resume().unwrap();
    assert!(!alice.is_holding());
    alice.rollback();
    assert!(alice.is_holding());
    let reoffer = bob.create_offer().unwrap();
    let answer = alice.receive_offer(&reoffer).unwrap();
    assert_eq!(dir(&answer), SendOnly);
    bob.receive_answer(&answer).unwrap();

    // A plain re-offer that fails leaves the hold state alone.
    alice.create_offer().unwrap();
    alice.rollback();
    assert!(alice.is_holding());
}

#[test]
fn removed_or_reordered_capabilities_never_panic() {
    let setup = || {
        let mut alice = OfferAnswer::new(av_caps("192.0.2.1", 4000), "1");
        let mut bob = OfferAnswer::new(av_caps("192.0.2.2", 5000), "2");
        let offer = alice.create_offer().unwrap();
        alice
            .receive_answer(&bob.receive_offer(&offer).unwrap())
            .unwrap();
        (alice, bob)
    };

    // The offerer drops its video capability: its re-offer removes the video line.
    let (mut alice, mut bob) = setup();
    alice.capabilities_mut().media.truncate(1);
    let reoffer = alice.create_offer().unwrap();
    assert!(!reoffer.media()[0].is_rejected());
    assert!(reoffer.media()[1].is_rejected());
    let answer = bob.receive_offer(&reoffer).unwrap();
    assert!(answer.media()[1].is_rejected());
    alice.receive_answer(&answer).unwrap();
    // And a re-offer from Bob re-enabling video is answered with video rejected.
    let mut video_back = bob.create_offer().unwrap();
    video_back.media_mut()[1] = reoffer_line("m=video 5002 RTP/AVP 96\na=rtpmap:96 H264/90000");
    let answer = alice.receive_offer(&video_back).unwrap();
    assert!(!answer.media()[0].is_rejected() && answer.media()[1].is_rejected());

    // The answerer drops every capability: offers get 488, its re-offer disables all.
    let (mut alice, mut bob) = setup();
    bob.capabilities_mut().media.clear();
    let reoffer = alice.create_offer().unwrap();
    assert_eq!(
        bob.receive_offer(&reoffer),
        Err(OfferAnswerError::NoAcceptableMedia)
    );
    alice.rollback();
    let own = bob.create_offer().unwrap();
    assert!(own.media().iter().all(|m| m.is_rejected()));
    bob.rollback();

    // Reordered capabilities: each line keeps following its own media type's capability.
    let (mut alice, _) = setup();
    let caps = alice.capabilities_mut();
    caps.media.swap(0, 1);
    caps.media[1].direction = RecvOnly; // the audio capability, now second
    let reoffer = alice.create_offer().unwrap();
    let directions: Vec<Direction> = reoffer
        .media()
        .iter()
        .map(|m| reoffer.effective_direction(m))
        .collect();
    assert_eq!(directions, [RecvOnly, SendRecv]);
}

fn reoffer_line(lines: &str) -> sip_core::sdp::MediaDescription {
    sdp(&format!("v=0\no=x 1 1 IN IP4 h\ns=-\nt=0 0\n{lines}\n")).media()[0].clone()
}

#[test]
fn a_huge_offer_is_answered_once_per_payload_type() {
    // One m= line with 1 960 formats (single-digit payload types, repeated) and 1 000
    // a=rtpmap lines, within the default limits: answered from one pass over the line.
    let mut text = String::from(
        "v=0\no=a 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\nm=audio 49170 RTP/AVP",
    );
    for i in 0..1960 {
        text.push_str(&format!(" {}", i % 10));
    }
    text.push('\n');
    for i in 0..1000 {
        text.push_str(&format!("a=rtpmap:{} x-codec{i}/8000\n", 96 + i % 32));
    }
    text.push_str("a=fmtp:9 x=1\n");
    let offer = sdp(&text);
    assert_eq!(offer.media()[0].formats().len(), 1960);
    let caps = local(MediaCapability::audio(
        5000,
        [Codec::pcmu(), Codec::pcma(), Codec::g722()],
    ));
    let answer = build_answer(&offer, &caps, origin()).unwrap();
    let m = &answer.media()[0];
    assert_eq!(formats(&answer, 0), "0 8 9");
    assert_eq!(m.rtpmap(9).unwrap().to_string(), "9 G722/8000");
    assert_eq!(m.fmtp("9").unwrap().parameters, "x=1");
    assert_eq!(m.lines().len(), 5, "3 rtpmaps, 1 fmtp, the direction");
    check_answer(&offer, &answer).unwrap();
    let mut session = OfferAnswer::new(caps, "2002");
    assert_eq!(session.receive_offer(&offer).unwrap(), answer);
}

#[test]
fn a_zero_connection_address_is_a_hold() {
    // (name, session c= address, media-level lines, expected answer direction)
    let table = [
        ("session 0.0.0.0", "0.0.0.0", "", RecvOnly),
        (
            "session 0.0.0.0, sendrecv",
            "0.0.0.0",
            "a=sendrecv\n",
            RecvOnly,
        ),
        (
            "session 0.0.0.0, recvonly",
            "0.0.0.0",
            "a=recvonly\n",
            Inactive,
        ),
        (
            "session 0.0.0.0, sendonly",
            "0.0.0.0",
            "a=sendonly\n",
            RecvOnly,
        ),
        ("media 0.0.0.0", "192.0.2.1", "c=IN IP4 0.0.0.0\n", RecvOnly),
        (
            "media address overrides",
            "0.0.0.0",
            "c=IN IP4 192.0.2.1\n",
            SendRecv,
        ),
        ("a real address", "192.0.2.1", "", SendRecv),
    ];
    for (name, address, lines, expected) in table {
        let offer = sdp(&format!(
            "v=0\no=a 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 {address}\nt=0 0\n\
             m=audio 49170 RTP/AVP 0\n{lines}"
        ));
        let caps = local(MediaCapability::audio(5000, [Codec::pcmu()]));
        let answer = build_answer(&offer, &caps, origin()).unwrap();
        assert_eq!(dir(&answer), expected, "{name}");
        check_answer(&offer, &answer).unwrap();
        let mut session = OfferAnswer::new(caps, "2");
        session.receive_offer(&offer).unwrap();
        assert_eq!(
            session.is_held_by_remote(),
            !matches!(expected, SendRecv | SendOnly),
            "{name}"
        );
    }

    // Bob holds; then Alice holds the RFC 2543 way: Bob answers inactive.
    let (mut alice, mut bob) = pair();
    let offer = alice.create_offer().unwrap();
    alice
        .receive_answer(&bob.receive_offer(&offer).unwrap())
        .unwrap();
    let hold = bob.hold().unwrap();
    bob.receive_answer(&alice.receive_offer(&hold).unwrap())
        .unwrap();
    let mut old_style = alice.create_offer().unwrap();
    assert_eq!(dir(&old_style), SendRecv);
    old_style
        .set_connection(Some(&Connection::new("0.0.0.0")))
        .unwrap();
    let answer = bob.receive_offer(&old_style).unwrap();
    assert_eq!(dir(&answer), Inactive);
    assert!(bob.is_held_by_remote());
}
