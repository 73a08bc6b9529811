//! RFC 3264 offer/answer: table-driven tests of answers (codecs, payload types, rejection,
//! directions, IM accept-types), the OfferAnswer session (hold/resume, versions, re-offers,
//! glare, bad answers) and a Lync audio offer.

use sip_core::sdp::offer_answer::{
    answer_direction, build_answer, build_offer, check_answer, hold_direction,
    intersect_accept_types, Codec, LocalCapabilities, MediaCapability, NegotiationState,
    OfferAnswer, OfferAnswerError,
};
use sip_core::sdp::{Direction, Origin, SessionDescription};

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
fn fmtp_is_local_when_given_else_echoed() {
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
    assert_eq!(m.fmtp("97").unwrap().parameters, "0-16");
    assert_eq!(m.rtpmap(96).unwrap().to_string(), "96 opus/48000/2");
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
            "format not offered",
            format!("{good}m=audio 5000 RTP/AVP 0 18\n"),
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
        // The hold can be offered again; same content, same version as the failed one.
        let again = alice.create_offer().unwrap();
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
    let table: [(&[&str], &[&str], &[&str]); 9] = [
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
fn lync_audio_offer_answered_with_g711_only() {
    let body = std::fs::read("tests/data/sdp/lync-audio-offer.sdp").unwrap();
    let offer = SessionDescription::parse_slice(&body).unwrap();
    let caps = local(MediaCapability::audio(
        50000,
        [Codec::pcma(), Codec::pcmu()],
    ));
    let answer = build_answer(&offer, &caps, origin()).unwrap();
    assert_eq!(
        answer.to_string(),
        "v=0\r\no=- 2002 0 IN IP4 192.0.2.2\r\ns=-\r\nc=IN IP4 192.0.2.2\r\nt=0 0\r\n\
         m=audio 50000 RTP/SAVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
         a=sendrecv\r\n"
    );
    check_answer(&offer, &answer).unwrap();
    // With DTMF too: telephone-event keeps Lync's payload type 101 and its fmtp.
    let caps = local(MediaCapability::audio(
        50000,
        [Codec::pcmu(), Codec::pcma(), Codec::telephone_event()],
    ));
    let answer = build_answer(&offer, &caps, origin()).unwrap();
    assert_eq!(formats(&answer, 0), "0 8 101");
    assert_eq!(answer.media()[0].fmtp("101").unwrap().parameters, "0-16");
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
