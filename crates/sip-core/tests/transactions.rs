//! Virtual-time tests of the four transaction machines (RFC 3261 §17, RFC 6026): every
//! transition and timer, over UDP and TCP, CANCEL races, stray messages, transport errors.

use bytes::Bytes;
use sip_core::transaction::{
    Event, Peer, SequentialIds, Timer, TransactionConfig, TransactionError, TransactionId,
    TransactionKind, TransactionLayer, TransactionState, TransportKind,
};
use sip_core::{Limits, Method, SipMessage};
use std::time::{Duration, Instant};

fn peer(t: TransportKind) -> Peer {
    Peer::new("192.0.2.1:5060".parse().unwrap(), t)
}
fn udp() -> Peer {
    peer(TransportKind::Udp)
}
fn tcp() -> Peer {
    peer(TransportKind::Tcp)
}
fn layer() -> TransactionLayer {
    TransactionLayer::with_ids(
        TransactionConfig::default(),
        Box::new(SequentialIds::default()),
    )
}
fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
fn parse(b: &[u8]) -> SipMessage {
    SipMessage::parse_datagram(Bytes::copy_from_slice(b), &Limits::DEFAULT).expect("valid")
}

/// A request as a peer would send it.
fn request(method: &str, branch: &str, to_tag: Option<&str>) -> SipMessage {
    let to = match to_tag {
        Some(t) => format!("<sip:bob@b.example>;tag={t}"),
        None => "<sip:bob@b.example>".into(),
    };
    let branch = if branch.is_empty() {
        String::new()
    } else {
        format!(";branch={branch}")
    };
    parse(
        format!(
            "{method} sip:bob@b.example SIP/2.0\r\nVia: SIP/2.0/UDP a.example:5060{branch}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@a.example>;tag=a1\r\nTo: {to}\r\n\
             Call-ID: call-1@a.example\r\nCSeq: 1 {method}\r\nContact: <sip:alice@192.0.2.9>\r\n\
             Content-Length: 0\r\n\r\n"
        )
        .as_bytes(),
    )
}

/// An outgoing request without a branch (the layer adds it).
fn outgoing(method: &str) -> SipMessage {
    SipMessage::request(Method::from_token(method.as_bytes()), "sip:bob@b.example")
        .header("Via", "SIP/2.0/UDP a.example:5060")
        .header("Max-Forwards", "70")
        .header("From", "<sip:alice@a.example>;tag=a1")
        .header("To", "<sip:bob@b.example>")
        .header("Call-ID", "call-1@a.example")
        .header("CSeq", format!("1 {method}"))
        .header("Route", "<sip:proxy.example;lr>")
        .build()
        .unwrap()
}

/// The response a peer would send to what `layer` transmitted.
fn reply(sent: &Bytes, status: u16, tag: Option<&str>) -> SipMessage {
    let req = parse(sent);
    let mut r = SipMessage::response_to(&req, status, sip_core::reason_phrase(status)).unwrap();
    if let Some(t) = tag {
        r.set_to_tag(t).unwrap();
    }
    parse(&r.to_bytes())
}

fn transmits(l: &mut TransactionLayer) -> Vec<Bytes> {
    std::iter::from_fn(|| l.poll_transmit())
        .map(|t| t.contents)
        .collect()
}
fn events(l: &mut TransactionLayer) -> Vec<Event> {
    std::iter::from_fn(|| l.poll_event()).collect()
}

/// Runs timers until `end`; returns each transmission's offset from `t0` and the events.
fn run(l: &mut TransactionLayer, t0: Instant, end: Duration) -> (Vec<Duration>, Vec<Event>) {
    let mut sent = Vec::new();
    let mut evs = Vec::new();
    while let Some(at) = l.poll_timeout() {
        if at > t0 + end {
            break;
        }
        l.handle_timeout(at);
        for _ in transmits(l) {
            sent.push(at - t0);
        }
        evs.extend(events(l));
    }
    (sent, evs)
}

fn start_line(b: &Bytes) -> String {
    String::from_utf8_lossy(b)
        .lines()
        .next()
        .unwrap()
        .to_string()
}

fn has_timeout(evs: &[Event], timer: Timer) -> bool {
    evs.iter()
        .any(|e| matches!(e, Event::Timeout { timer: t, .. } if *t == timer))
}
fn has_terminated(evs: &[Event], id: TransactionId) -> bool {
    evs.iter()
        .any(|e| matches!(e, Event::Terminated { id: i } if *i == id))
}

fn start_client(l: &mut TransactionLayer, t0: Instant, m: &str, p: Peer) -> (TransactionId, Bytes) {
    let id = l.send_request(t0, outgoing(m), p).unwrap();
    let sent = transmits(l);
    assert_eq!(sent.len(), 1);
    (id, sent[0].clone())
}

// ----- client INVITE (figure 5) -----

#[test]
fn client_invite_udp_timer_a_doubles_without_cap_then_timer_b() {
    let mut l = layer();
    let t0 = Instant::now();
    let (id, first) = start_client(&mut l, t0, "INVITE", udp());
    assert!(parse(&first)
        .top_via()
        .unwrap()
        .branch()
        .unwrap()
        .starts_with("z9hG4bK"));
    assert_eq!(l.state(id), Some(TransactionState::Calling));
    let (sent, evs) = run(&mut l, t0, Duration::from_secs(40));
    // A: 0.5, 1, 2, 4, 8, 16 s intervals (no T2 cap for INVITE requests).
    assert_eq!(sent, [500, 1500, 3500, 7500, 15500, 31500].map(ms));
    assert!(has_timeout(&evs, Timer::B));
    assert!(has_terminated(&evs, id));
    assert_eq!(l.state(id), None);
    assert!(l.is_empty());
}

#[test]
fn client_invite_tcp_no_retransmissions_timer_b_at_64_t1() {
    let mut l = layer();
    let t0 = Instant::now();
    let (id, _) = start_client(&mut l, t0, "INVITE", tcp());
    assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(32)));
    let (sent, evs) = run(&mut l, t0, Duration::from_secs(40));
    assert!(sent.is_empty());
    assert!(has_timeout(&evs, Timer::B) && has_terminated(&evs, id));
}

#[test]
fn client_invite_configurable_t1() {
    let cfg = TransactionConfig {
        t1: ms(100),
        ..TransactionConfig::default()
    };
    let mut l = TransactionLayer::with_ids(cfg, Box::new(SequentialIds::default()));
    let t0 = Instant::now();
    start_client(&mut l, t0, "INVITE", udp());
    let (sent, evs) = run(&mut l, t0, Duration::from_secs(10));
    assert_eq!(sent, [100, 300, 700, 1500, 3100, 6300].map(ms));
    assert!(has_timeout(&evs, Timer::B)); // 6.4 s
}

#[test]
fn client_invite_provisional_then_non2xx_acks_and_timer_d() {
    let mut l = layer();
    let t0 = Instant::now();
    let (id, inv) = start_client(&mut l, t0, "INVITE", udp());
    l.handle_message(t0 + ms(100), reply(&inv, 180, Some("b1")), udp());
    assert_eq!(l.state(id), Some(TransactionState::Proceeding));
    assert!(
        matches!(&events(&mut l)[..], [Event::Response { response, .. }] if response.status() == Some(180))
    );
    // A and B stop in Proceeding.
    assert_eq!(l.poll_timeout(), None);
    l.handle_message(t0 + ms(200), reply(&inv, 486, Some("b1")), udp());
    let ack = transmits(&mut l);
    assert_eq!(ack.len(), 1);
    let ack = parse(&ack[0]);
    let invm = parse(&inv);
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.request_uri_bytes(), invm.request_uri_bytes());
    assert_eq!(
        ack.top_via().unwrap().branch(),
        invm.top_via().unwrap().branch()
    );
    assert_eq!(ack.to().unwrap().tag(), Some(&b"b1"[..]));
    assert_eq!(ack.from().unwrap(), invm.from().unwrap());
    assert_eq!(ack.call_id().unwrap(), invm.call_id().unwrap());
    assert_eq!(ack.vias().count(), 1, "only the top Via (§17.1.1.3)");
    assert_eq!(ack.cseq().unwrap().seq(), 1);
    assert_eq!(ack.cseq().unwrap().method(), Method::Ack);
    assert_eq!(
        ack.header(sip_core::HeaderName::Route),
        Some(&b"<sip:proxy.example;lr>"[..])
    );
    assert_eq!(l.state(id), Some(TransactionState::Completed));
    assert!(
        matches!(&events(&mut l)[..], [Event::Response { response, .. }] if response.status() == Some(486))
    );
    // A retransmitted 486 is answered with the ACK again and not passed up.
    l.handle_message(t0 + ms(300), reply(&inv, 486, Some("b1")), udp());
    assert_eq!(transmits(&mut l).len(), 1);
    assert!(events(&mut l).is_empty());
    // Timer D: 32 s after the final response.
    assert_eq!(
        l.poll_timeout(),
        Some(t0 + ms(200) + Duration::from_secs(32))
    );
    let (_, evs) = run(&mut l, t0, Duration::from_secs(40));
    assert!(has_terminated(&evs, id));
}

#[test]
fn client_invite_tcp_non2xx_timer_d_is_zero() {
    let mut l = layer();
    let t0 = Instant::now();
    let (id, inv) = start_client(&mut l, t0, "INVITE", tcp());
    l.handle_message(t0, reply(&inv, 404, Some("x")), tcp());
    assert_eq!(transmits(&mut l).len(), 1); // ACK
    assert_eq!(l.state(id), None);
    assert!(has_terminated(&events(&mut l), id));
}

#[test]
fn client_invite_2xx_accepted_passes_every_2xx_until_timer_m() {
    let mut l = layer();
    let t0 = Instant::now();
    let (id, inv) = start_client(&mut l, t0, "INVITE", udp());
    l.handle_message(t0 + ms(50), reply(&inv, 200, Some("b1")), udp());
    assert_eq!(l.state(id), Some(TransactionState::Accepted));
    assert!(
        transmits(&mut l).is_empty(),
        "no ACK for a 2xx from the transaction"
    );
    assert_eq!(events(&mut l).len(), 1);
    // Retransmission and a second fork's 2xx both reach the TU (it ACKs each).
    l.handle_message(t0 + ms(550), reply(&inv, 200, Some("b1")), udp());
    l.handle_message(t0 + ms(600), reply(&inv, 200, Some("b2")), udp());
    assert_eq!(events(&mut l).len(), 2);
    // A stopped: nothing is retransmitted; Timer M = 64*T1 ends it.
    let (sent, evs) = run(&mut l, t0, Duration::from_secs(40));
    assert!(sent.is_empty());
    assert!(has_terminated(&evs, id));
    // After Timer M a 2xx is stray.
    l.handle_message(
        t0 + Duration::from_secs(41),
        reply(&inv, 200, Some("b1")),
        udp(),
    );
    assert!(matches!(&events(&mut l)[..], [Event::StrayResponse { .. }]));
}

#[test]
fn client_invite_in_accepted_survives_a_late_transport_error() {
    let mut l = layer();
    let t0 = Instant::now();
    let (id, inv) = start_client(&mut l, t0, "INVITE", udp());
    l.handle_message(t0 + ms(50), reply(&inv, 200, Some("b1")), udp());
    events(&mut l);
    // The error of a send before the 2xx, reported after it (RFC 6026: Accepted stays).
    l.handle_transport_error(t0 + ms(60), id);
    assert!(matches!(&events(&mut l)[..], [Event::TransportError { id: i }] if *i == id));
    assert_eq!(l.state(id), Some(TransactionState::Accepted));
    l.handle_message(t0 + ms(550), reply(&inv, 200, Some("b1")), udp());
    assert!(
        matches!(&events(&mut l)[..], [Event::Response { id: i, .. }] if *i == id),
        "2xx retransmissions still reach the TU through the transaction"
    );
}

#[test]
fn client_invite_2xx_after_a_non2xx_final_goes_to_the_tu_as_answered_after_failure() {
    let mut l = layer();
    let t0 = Instant::now();
    let (id, inv) = start_client(&mut l, t0, "INVITE", udp());
    l.handle_message(t0 + ms(50), reply(&inv, 486, Some("b1")), udp());
    assert_eq!(transmits(&mut l).len(), 1, "the ACK for the 486");
    events(&mut l);
    // Another fork answers 200 later (a proxy forwards it, §16.7 step 5).
    l.handle_message(t0 + ms(80), reply(&inv, 200, Some("b2")), udp());
    let evs = events(&mut l);
    assert!(
        matches!(&evs[..], [Event::AnsweredAfterFailure { id: i, response }]
            if *i == id && response.status() == Some(200)
                && response.to().unwrap().tag() == Some(&b"b2"[..])),
        "{evs:?}"
    );
    assert!(
        transmits(&mut l).is_empty(),
        "the transaction does not ACK a 2xx"
    );
    assert_eq!(l.state(id), Some(TransactionState::Completed));
}

#[test]
fn timer_settings_under_a_millisecond_are_raised_and_end() {
    let cfg = TransactionConfig {
        t1: Duration::ZERO,
        t2: Duration::ZERO,
        ..TransactionConfig::default()
    };
    let mut l = TransactionLayer::with_ids(cfg, Box::new(SequentialIds::default()));
    assert_eq!((l.config().t1, l.config().t2), (ms(1), ms(1)));
    let t0 = Instant::now();
    let (inv, _) = start_client(&mut l, t0, "INVITE", udp());
    let (opt, _) = start_client(&mut l, t0, "OPTIONS", udp());
    // Each timer re-arms later than it fired, so this returns: B and F at 64 ms.
    let (sent, evs) = run(&mut l, t0, Duration::from_secs(1));
    assert!(has_terminated(&evs, inv) && has_terminated(&evs, opt));
    assert!(has_timeout(&evs, Timer::B) && has_timeout(&evs, Timer::F));
    // A at 1, 3, 7, 15, 31, 63 ms; E every 1 ms (T2), the last at 64 ms beside Timer F.
    assert_eq!(sent.len(), 6 + 64, "{sent:?}");
    assert_eq!(sent.last(), Some(&ms(64)));
    assert!(l.is_empty());
}

#[test]
fn client_invite_transport_error() {
    let mut l = layer();
    let t0 = Instant::now();
    let (id, _) = start_client(&mut l, t0, "INVITE", tcp());
    l.handle_transport_error(t0, id);
    let evs = events(&mut l);
    assert!(matches!(evs[0], Event::TransportError { id: i } if i == id));
    assert!(has_terminated(&evs, id));
    assert!(l.is_empty());
}

// ----- client non-INVITE (figure 6) -----

#[test]
fn client_non_invite_udp_timer_e_caps_at_t2_then_timer_f() {
    let mut l = layer();
    let t0 = Instant::now();
    let (id, _) = start_client(&mut l, t0, "OPTIONS", udp());
    let (sent, evs) = run(&mut l, t0, Duration::from_secs(40));
    let mut want = vec![500, 1500, 3500, 7500];
    let mut t = 7500;
    while t + 4000 < 32000 {
        t += 4000;
        want.push(t);
    }
    assert_eq!(sent, want.into_iter().map(ms).collect::<Vec<_>>());
    assert!(has_timeout(&evs, Timer::F) && has_terminated(&evs, id));
}

#[test]
fn client_non_invite_proceeding_retransmits_at_t2() {
    let mut l = layer();
    let t0 = Instant::now();
    let (id, req) = start_client(&mut l, t0, "MESSAGE", udp());
    l.handle_message(t0 + ms(100), reply(&req, 100, None), udp());
    assert_eq!(l.state(id), Some(TransactionState::Proceeding));
    let (sent, _) = run(&mut l, t0, ms(9000));
    // E was armed for 500 ms in Trying; after that it fires every T2.
    assert_eq!(sent, [500, 4500, 8500].map(ms));
}

#[test]
fn client_non_invite_timer_k_is_t4_on_udp_and_zero_on_tcp() {
    let mut l = layer();
    let t0 = Instant::now();
    let (id, req) = start_client(&mut l, t0, "BYE", udp());
    l.handle_message(t0 + ms(10), reply(&req, 200, None), udp());
    assert_eq!(l.state(id), Some(TransactionState::Completed));
    assert!(matches!(&events(&mut l)[..], [Event::Response { .. }]));
    // Retransmitted final absorbed.
    l.handle_message(t0 + ms(20), reply(&req, 200, None), udp());
    assert!(events(&mut l).is_empty());
    assert_eq!(l.poll_timeout(), Some(t0 + ms(10) + Duration::from_secs(5)));
    let (sent, evs) = run(&mut l, t0, Duration::from_secs(10));
    assert!(sent.is_empty() && has_terminated(&evs, id));

    let (id, req) = start_client(&mut l, t0, "BYE", tcp());
    l.handle_message(t0, reply(&req, 200, None), tcp());
    assert_eq!(l.state(id), None);
}

#[test]
fn timer_settings_too_long_for_an_instant_never_fire_instead_of_panicking() {
    let cfg = TransactionConfig {
        t1: Duration::MAX,
        t4: Duration::MAX,
        timer_d: Duration::MAX,
        trying_delay: Some(Duration::MAX),
        ..TransactionConfig::default()
    };
    let mut l = TransactionLayer::with_ids(cfg, Box::new(SequentialIds::default()));
    let t0 = Instant::now();
    // Timers A and B, E and F, the 100 Trying delay: none can be armed.
    let (inv, sent) = start_client(&mut l, t0, "INVITE", udp());
    let (opt, opt_sent) = start_client(&mut l, t0, "OPTIONS", udp());
    let srv = server(&mut l, t0, request("INVITE", "z9hG4bKs", None), udp());
    assert_eq!(l.poll_timeout(), None);
    // Timer D (non-2xx to INVITE) and K (final response to OPTIONS).
    l.handle_message(t0, reply(&sent, 486, Some("b")), udp());
    l.handle_message(t0, reply(&opt_sent, 200, Some("b")), udp());
    assert_eq!(l.state(inv), Some(TransactionState::Completed));
    assert_eq!(l.state(opt), Some(TransactionState::Completed));
    assert_eq!(l.state(srv), Some(TransactionState::Proceeding));
    assert_eq!(l.poll_timeout(), None);
    l.handle_timeout(t0 + Duration::from_secs(3600));
    assert_eq!(l.len(), 3);
}

#[test]
fn client_non_invite_transport_error() {
    let mut l = layer();
    let t0 = Instant::now();
    let (id, _) = start_client(&mut l, t0, "OPTIONS", udp());
    l.handle_transport_error(t0 + ms(1), id);
    assert!(matches!(events(&mut l)[0], Event::TransportError { .. }));
    assert_eq!(l.poll_timeout(), None);
}

// ----- server INVITE (figure 7) -----

fn server(l: &mut TransactionLayer, t0: Instant, m: SipMessage, p: Peer) -> TransactionId {
    l.handle_message(t0, m, p);
    match events(l).remove(0) {
        Event::Request { id, .. } => id,
        e => panic!("{e:?}"),
    }
}

fn response(req: &SipMessage, status: u16) -> SipMessage {
    let mut r = SipMessage::response_to(req, status, sip_core::reason_phrase(status)).unwrap();
    r.set_to_tag("srv").unwrap();
    r
}

#[test]
fn server_invite_sends_100_trying_after_200ms_when_tu_is_slow() {
    let mut l = layer();
    let t0 = Instant::now();
    let inv = request("INVITE", "z9hG4bKs1", None);
    let id = server(&mut l, t0, inv.clone(), udp());
    assert_eq!(l.state(id), Some(TransactionState::Proceeding));
    assert_eq!(l.poll_timeout(), Some(t0 + ms(200)));
    l.handle_timeout(t0 + ms(200));
    let sent = transmits(&mut l);
    assert_eq!(start_line(&sent[0]), "SIP/2.0 100 Trying");
    // A retransmitted INVITE gets the 100 again.
    l.handle_message(t0 + ms(500), inv.clone(), udp());
    assert_eq!(transmits(&mut l).len(), 1);

    // A TU that answers in time suppresses it.
    let inv2 = request("INVITE", "z9hG4bKs2", None);
    let id2 = server(&mut l, t0, inv2.clone(), udp());
    l.respond(t0 + ms(50), id2, response(&inv2, 180)).unwrap();
    assert_eq!(start_line(&transmits(&mut l)[0]), "SIP/2.0 180 Ringing");
    l.handle_timeout(t0 + ms(300));
    assert!(transmits(&mut l).is_empty());
    let _ = id;
}

#[test]
fn server_invite_non2xx_timer_g_caps_at_t2_and_timer_h() {
    let mut l = layer();
    let t0 = Instant::now();
    let inv = request("INVITE", "z9hG4bKg", None);
    let id = server(&mut l, t0, inv.clone(), udp());
    l.respond(t0, id, response(&inv, 486)).unwrap();
    assert_eq!(transmits(&mut l).len(), 1);
    assert_eq!(l.state(id), Some(TransactionState::Completed));
    // INVITE retransmission: final again.
    l.handle_message(t0 + ms(10), inv.clone(), udp());
    assert_eq!(start_line(&transmits(&mut l)[0]), "SIP/2.0 486 Busy Here");
    let (sent, evs) = run(&mut l, t0, Duration::from_secs(40));
    let mut want = vec![500, 1500, 3500, 7500];
    let mut t = 7500;
    while t + 4000 < 32000 {
        t += 4000;
        want.push(t);
    }
    assert_eq!(sent, want.into_iter().map(ms).collect::<Vec<_>>());
    assert!(has_timeout(&evs, Timer::H) && has_terminated(&evs, id));
    // A second final response is refused once the transaction is gone.
    assert_eq!(
        l.respond(t0, id, response(&inv, 500)),
        Err(TransactionError::UnknownTransaction)
    );
}

#[test]
fn server_invite_ack_confirms_then_timer_i() {
    for (p, i) in [(udp(), Some(Duration::from_secs(5))), (tcp(), None)] {
        let mut l = layer();
        let t0 = Instant::now();
        let inv = request("INVITE", "z9hG4bKi", None);
        let id = server(&mut l, t0, inv.clone(), p);
        l.respond(t0, id, response(&inv, 603)).unwrap();
        assert!(l
            .respond(t0, id, response(&inv, 200))
            .is_err_and(|e| matches!(e, TransactionError::InvalidState { .. })));
        transmits(&mut l);
        let ack = request("ACK", "z9hG4bKi", Some("srv"));
        l.handle_message(t0 + ms(700), ack.clone(), p);
        match i {
            Some(i) => {
                assert_eq!(l.state(id), Some(TransactionState::Confirmed));
                // G stops; ACK retransmissions absorbed; I = T4.
                l.handle_message(t0 + ms(800), ack, p);
                assert!(events(&mut l).is_empty());
                assert_eq!(l.poll_timeout(), Some(t0 + ms(700) + i));
                let (sent, evs) = run(&mut l, t0, Duration::from_secs(60));
                assert!(sent.is_empty() && has_terminated(&evs, id));
                assert!(!has_timeout(&evs, Timer::H));
            }
            None => assert_eq!(l.state(id), None),
        }
    }
}

#[test]
fn server_invite_accepted_absorbs_retransmissions_and_passes_ack() {
    let mut l = layer();
    let t0 = Instant::now();
    let inv = request("INVITE", "z9hG4bKacc", None);
    let id = server(&mut l, t0, inv.clone(), udp());
    l.respond(t0, id, response(&inv, 200)).unwrap();
    assert_eq!(l.state(id), Some(TransactionState::Accepted));
    assert_eq!(transmits(&mut l).len(), 1);
    // INVITE retransmissions are absorbed: not to the TU, no response resent.
    l.handle_message(t0 + ms(500), inv.clone(), udp());
    assert!(transmits(&mut l).is_empty() && events(&mut l).is_empty());
    // The TU's 2xx retransmissions go through the transaction.
    l.respond(t0 + ms(500), id, response(&inv, 200)).unwrap();
    assert_eq!(transmits(&mut l).len(), 1);
    // A non-2xx is refused in Accepted.
    assert!(l.respond(t0, id, response(&inv, 500)).is_err());
    // The ACK (RFC 2543 peer reusing the branch) matches and goes to the TU.
    l.handle_message(
        t0 + ms(600),
        request("ACK", "z9hG4bKacc", Some("srv")),
        udp(),
    );
    assert!(matches!(&events(&mut l)[..], [Event::Ack { id: Some(i), .. }] if *i == id));
    // Timer L = 64*T1.
    assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(32)));
    let (_, evs) = run(&mut l, t0, Duration::from_secs(33));
    assert!(has_terminated(&evs, id));
}

#[test]
fn server_invite_transport_error() {
    let mut l = layer();
    let t0 = Instant::now();
    let inv = request("INVITE", "z9hG4bKte", None);
    let id = server(&mut l, t0, inv.clone(), tcp());
    l.respond(t0, id, response(&inv, 180)).unwrap();
    l.handle_transport_error(t0, id);
    let evs = events(&mut l);
    assert!(matches!(evs[0], Event::TransportError { .. }) && has_terminated(&evs, id));
    // In Accepted the TU is informed and the transaction stays (RFC 6026).
    let inv = request("INVITE", "z9hG4bKte2", None);
    let id = server(&mut l, t0, inv.clone(), tcp());
    l.respond(t0, id, response(&inv, 200)).unwrap();
    l.handle_transport_error(t0, id);
    assert_eq!(l.state(id), Some(TransactionState::Accepted));
}

// ----- server non-INVITE (figure 8) -----

#[test]
fn server_non_invite_all_states_and_timer_j() {
    let mut l = layer();
    let t0 = Instant::now();
    let req = request("OPTIONS", "z9hG4bKn", None);
    let id = server(&mut l, t0, req.clone(), udp());
    assert_eq!(l.state(id), Some(TransactionState::Trying));
    assert_eq!(l.poll_timeout(), None, "no 100 Trying timer for non-INVITE");
    // Trying: retransmission absorbed.
    l.handle_message(t0, req.clone(), udp());
    assert!(transmits(&mut l).is_empty() && events(&mut l).is_empty());
    l.respond(t0, id, response(&req, 183)).unwrap();
    assert_eq!(l.state(id), Some(TransactionState::Proceeding));
    transmits(&mut l);
    l.handle_message(t0, req.clone(), udp());
    assert_eq!(
        start_line(&transmits(&mut l)[0]),
        "SIP/2.0 183 Session Progress"
    );
    l.respond(t0 + ms(10), id, response(&req, 200)).unwrap();
    assert_eq!(l.state(id), Some(TransactionState::Completed));
    transmits(&mut l);
    l.handle_message(t0, req.clone(), udp());
    assert_eq!(start_line(&transmits(&mut l)[0]), "SIP/2.0 200 OK");
    assert!(l.respond(t0, id, response(&req, 500)).is_err());
    assert_eq!(
        l.poll_timeout(),
        Some(t0 + ms(10) + Duration::from_secs(32))
    );
    let (_, evs) = run(&mut l, t0, Duration::from_secs(40));
    assert!(has_terminated(&evs, id));
    // Over TCP J is zero.
    let req = request("OPTIONS", "z9hG4bKn2", None);
    let id = server(&mut l, t0, req.clone(), tcp());
    l.respond(t0, id, response(&req, 200)).unwrap();
    assert_eq!(l.state(id), None);
}

#[test]
fn server_non_invite_transport_error() {
    let mut l = layer();
    let t0 = Instant::now();
    let id = server(&mut l, t0, request("INFO", "z9hG4bKx", Some("t")), tcp());
    l.handle_transport_error(t0, id);
    assert!(matches!(events(&mut l)[0], Event::TransportError { .. }));
    assert!(l.is_empty());
}

// ----- matching -----

#[test]
fn rfc2543_requests_match_without_magic_cookie() {
    let mut l = layer();
    let t0 = Instant::now();
    let inv = request("INVITE", "", None);
    let id = server(&mut l, t0, inv.clone(), udp());
    l.respond(t0, id, response(&inv, 404)).unwrap();
    transmits(&mut l);
    l.handle_message(t0, inv.clone(), udp());
    assert_eq!(transmits(&mut l).len(), 1, "retransmission matched");
    assert!(events(&mut l).is_empty());
    // The ACK matches only with the To tag of the response (§17.2.3): another tag's ACK
    // is not this transaction's and goes to the TU.
    l.handle_message(t0, request("ACK", "", Some("other")), udp());
    assert_eq!(l.state(id), Some(TransactionState::Completed));
    assert!(matches!(&events(&mut l)[..], [Event::Ack { id: None, .. }]));
    l.handle_message(t0, request("ACK", "", Some("srv")), udp());
    assert_eq!(l.state(id), Some(TransactionState::Confirmed));
    // An old-style branch without the cookie is also the RFC 2543 case: two requests with
    // the same such branch are told apart by Call-ID (§17.2.3), and a retransmission of
    // either matches its own transaction.
    let first = request("OPTIONS", "1234", None);
    let other_call = String::from_utf8(first.to_bytes().to_vec())
        .unwrap()
        .replace("call-1@a.example", "call-2@a.example");
    let second = parse(other_call.as_bytes());
    let a = server(&mut l, t0, first.clone(), udp());
    let b = server(&mut l, t0, second, udp());
    assert_ne!(a, b);
    l.respond(t0, a, response(&first, 200)).unwrap();
    transmits(&mut l);
    l.handle_message(t0 + ms(10), first, udp());
    assert!(
        events(&mut l).is_empty(),
        "a retransmission, not a new request"
    );
    assert_eq!(
        start_line(&transmits(&mut l)[0]),
        "SIP/2.0 200 OK",
        "answered from transaction a"
    );
    assert_eq!(l.state(b), Some(TransactionState::Trying));
}

#[test]
fn stray_responses_and_acks_for_2xx_go_to_the_tu() {
    let mut l = layer();
    let t0 = Instant::now();
    let r = reply(
        &request("INVITE", "z9hG4bKnone", None).to_bytes(),
        200,
        Some("x"),
    );
    l.handle_message(t0, r, udp());
    l.handle_message(t0, request("ACK", "z9hG4bKnew", Some("x")), udp());
    let evs = events(&mut l);
    assert!(matches!(evs[0], Event::StrayResponse { .. }));
    assert!(matches!(evs[1], Event::Ack { id: None, .. }));
    assert!(l.is_empty());
}

#[test]
fn response_matching_needs_branch_and_cseq_method() {
    let mut l = layer();
    let t0 = Instant::now();
    let (id, inv) = start_client(&mut l, t0, "INVITE", udp());
    // Same branch, CSeq method CANCEL: belongs to the CANCEL, not the INVITE.
    let text =
        String::from_utf8_lossy(&reply(&inv, 200, None).to_bytes()).replace("1 INVITE", "1 CANCEL");
    l.handle_message(t0, parse(text.as_bytes()), udp());
    assert!(matches!(&events(&mut l)[..], [Event::StrayResponse { .. }]));
    assert_eq!(l.state(id), Some(TransactionState::Calling));
}

#[test]
fn send_request_refuses_ack_and_duplicate_branches() {
    let mut l = layer();
    let t0 = Instant::now();
    assert_eq!(
        l.send_request(t0, request("ACK", "z9hG4bKa", Some("t")), udp()),
        Err(TransactionError::Ack)
    );
    l.send_request(t0, request("OPTIONS", "z9hG4bKd", None), udp())
        .unwrap();
    assert_eq!(
        l.send_request(t0, request("OPTIONS", "z9hG4bKd", None), udp()),
        Err(TransactionError::DuplicateBranch)
    );
    assert_eq!(TransactionError::DuplicateBranch.status(), 482);
    let resp = reply(&request("OPTIONS", "z9hG4bKd", None).to_bytes(), 200, None);
    assert!(l.send_request(t0, resp, udp()).is_err());
}

#[test]
fn poll_timeout_is_the_earliest_deadline_of_many() {
    let mut l = layer();
    let t0 = Instant::now();
    for i in 0..100u64 {
        l.send_request(t0 + ms(i), outgoing("OPTIONS"), udp())
            .unwrap();
    }
    assert_eq!(l.poll_timeout(), Some(t0 + ms(500)));
    l.handle_timeout(t0 + ms(510));
    // 100 first sends, then Timer E of the 11 started at 0..=10 ms.
    assert_eq!(transmits(&mut l).len(), 111);
    assert_eq!(l.poll_timeout(), Some(t0 + ms(511)));
}

// ----- CANCEL (§9) -----

#[test]
fn server_cancel_matches_invite_and_answers_487() {
    let mut l = layer();
    let t0 = Instant::now();
    let inv = request("INVITE", "z9hG4bKc", None);
    let inv_id = server(&mut l, t0, inv.clone(), udp());
    l.respond(t0, inv_id, response(&inv, 180)).unwrap();
    transmits(&mut l);
    let cancel = request("CANCEL", "z9hG4bKc", None);
    l.handle_message(t0 + ms(5), cancel.clone(), udp());
    let (cid, cancels) = match events(&mut l).remove(0) {
        Event::Request { id, cancels, .. } => (id, cancels),
        e => panic!("{e:?}"),
    };
    assert_eq!(cancels, Some(inv_id));
    assert!(l.answer_cancel(t0 + ms(5), cid, &cancel, cancels).unwrap());
    let sent = transmits(&mut l);
    assert_eq!(start_line(&sent[0]), "SIP/2.0 200 OK");
    assert_eq!(start_line(&sent[1]), "SIP/2.0 487 Request Terminated");
    let r487 = parse(&sent[1]);
    assert_eq!(
        r487.to().unwrap().tag(),
        Some(&b"srv"[..]),
        "same tag as the 180"
    );
    assert_eq!(l.state(inv_id), Some(TransactionState::Completed));
    l.handle_message(t0 + ms(9), request("ACK", "z9hG4bKc", Some("srv")), udp());
    assert_eq!(l.state(inv_id), Some(TransactionState::Confirmed));
}

#[test]
fn server_cancel_race_after_2xx_and_without_invite() {
    let mut l = layer();
    let t0 = Instant::now();
    let inv = request("INVITE", "z9hG4bKr", None);
    let inv_id = server(&mut l, t0, inv.clone(), udp());
    l.respond(t0, inv_id, response(&inv, 200)).unwrap();
    transmits(&mut l);
    let cancel = request("CANCEL", "z9hG4bKr", None);
    l.handle_message(t0, cancel.clone(), udp());
    let Event::Request { id, cancels, .. } = events(&mut l).remove(0) else {
        panic!()
    };
    assert!(!l.answer_cancel(t0, id, &cancel, cancels).unwrap());
    let sent = transmits(&mut l);
    assert_eq!(sent.len(), 1);
    assert_eq!(start_line(&sent[0]), "SIP/2.0 200 OK");
    assert_eq!(
        parse(&sent[0]).to().unwrap().tag(),
        Some(&b"srv"[..]),
        "the tag of the INVITE's final response (§9.2)"
    );
    assert_eq!(l.state(inv_id), Some(TransactionState::Accepted));

    let lone = request("CANCEL", "z9hG4bKlone", None);
    l.handle_message(t0, lone.clone(), udp());
    let Event::Request { id, cancels, .. } = events(&mut l).remove(0) else {
        panic!()
    };
    assert_eq!(cancels, None);
    l.answer_cancel(t0, id, &lone, cancels).unwrap();
    assert_eq!(
        start_line(&transmits(&mut l)[0]),
        "SIP/2.0 481 Call/Transaction Does Not Exist"
    );
}

/// The CANCEL's own server transaction and its `cancels`.
fn receive_cancel(l: &mut TransactionLayer, t: Instant, cancel: &SipMessage) -> TransactionId {
    l.handle_message(t, cancel.clone(), udp());
    match events(l).remove(0) {
        Event::Request { id, cancels, .. } => {
            assert_eq!(cancels, None, "a CANCEL reports only an INVITE it cancels");
            id
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn a_cancel_matching_a_non_invite_is_answered_200_and_changes_nothing() {
    // §9.2: matched "assuming the method is anything but CANCEL or ACK", answered 200
    // "regardless of the method of the original request", with no effect on it.
    let mut l = layer();
    let t0 = Instant::now();
    let msg = request("MESSAGE", "z9hG4bKm", None);
    let msg_id = server(&mut l, t0, msg.clone(), udp());
    let cancel = request("CANCEL", "z9hG4bKm", None);
    let cid = receive_cancel(&mut l, t0, &cancel);
    assert!(!l.answer_cancel(t0, cid, &cancel, None).unwrap());
    let sent = transmits(&mut l);
    assert_eq!(sent.len(), 1, "no response to the MESSAGE");
    assert_eq!(start_line(&sent[0]), "SIP/2.0 200 OK");
    assert_eq!(parse(&sent[0]).cseq().unwrap().method(), Method::Cancel);
    assert_eq!(l.state(msg_id), Some(TransactionState::Trying));
    // The TU still answers the MESSAGE as it likes.
    l.respond(t0, msg_id, response(&msg, 202)).unwrap();
    assert_eq!(start_line(&transmits(&mut l)[0]), "SIP/2.0 202 Accepted");

    // A CANCEL after the final response: 200 with that response's To tag.
    let info = request("INFO", "z9hG4bKi", None);
    let info_id = server(&mut l, t0, info.clone(), udp());
    l.respond(t0, info_id, response(&info, 200)).unwrap();
    transmits(&mut l);
    let cancel = request("CANCEL", "z9hG4bKi", None);
    let cid = receive_cancel(&mut l, t0, &cancel);
    assert!(!l.answer_cancel(t0, cid, &cancel, None).unwrap());
    let sent = transmits(&mut l);
    assert_eq!(sent.len(), 1);
    assert_eq!(start_line(&sent[0]), "SIP/2.0 200 OK");
    assert_eq!(parse(&sent[0]).to().unwrap().tag(), Some(&b"srv"[..]));
    assert_eq!(l.state(info_id), Some(TransactionState::Completed));

    // Another sent-by is another transaction: nothing matches, 481.
    let stranger = parse(
        &String::from_utf8(request("CANCEL", "z9hG4bKm", None).to_bytes().to_vec())
            .unwrap()
            .replace("a.example:5060", "c.example:5060")
            .into_bytes(),
    );
    let sid = receive_cancel(&mut l, t0, &stranger);
    l.answer_cancel(t0, sid, &stranger, None).unwrap();
    assert_eq!(
        start_line(&transmits(&mut l)[0]),
        "SIP/2.0 481 Call/Transaction Does Not Exist"
    );

    // Once the MESSAGE's transaction is gone, a CANCEL for it finds nothing.
    let (_, evs) = run(&mut l, t0, Duration::from_secs(40));
    assert!(has_terminated(&evs, msg_id));
    let late = request("CANCEL", "z9hG4bKm", None);
    let lid = receive_cancel(&mut l, t0 + Duration::from_secs(40), &late);
    l.answer_cancel(t0 + Duration::from_secs(40), lid, &late, None)
        .unwrap();
    assert_eq!(
        start_line(&transmits(&mut l)[0]),
        "SIP/2.0 481 Call/Transaction Does Not Exist"
    );
}

#[test]
fn client_cancel_waits_for_a_provisional_response() {
    let mut l = layer();
    let t0 = Instant::now();
    let (inv_id, inv) = start_client(&mut l, t0, "INVITE", udp());
    assert_eq!(l.cancel(t0, inv_id), Ok(None));
    assert!(transmits(&mut l).is_empty());
    l.handle_message(t0 + ms(100), reply(&inv, 180, Some("b")), udp());
    let sent = transmits(&mut l);
    assert_eq!(sent.len(), 1);
    // The TU learns the held CANCEL's transaction.
    let evs = events(&mut l);
    let cancel_id = match &evs[..] {
        [Event::Response { .. }, Event::HeldCancel {
            invite,
            cancel: Ok(c),
        }] if *invite == inv_id => *c,
        e => panic!("{e:?}"),
    };
    assert_eq!(l.kind(cancel_id), Some(TransactionKind::ClientNonInvite));
    let cancel = parse(&sent[0]);
    let invm = parse(&inv);
    assert_eq!(cancel.method(), Some(&Method::Cancel));
    assert_eq!(
        cancel.top_via().unwrap().branch(),
        invm.top_via().unwrap().branch()
    );
    assert_eq!(cancel.to().unwrap().tag(), None);
    assert_eq!(cancel.cseq().unwrap().method(), Method::Cancel);
    // 200 to CANCEL, then 487 to the INVITE, which is ACKed.
    l.handle_message(t0 + ms(150), reply(&sent[0], 200, Some("b")), udp());
    l.handle_message(t0 + ms(160), reply(&inv, 487, Some("b")), udp());
    let sent = transmits(&mut l);
    assert_eq!(start_line(&sent[0]).split(' ').next(), Some("ACK"));
    assert_eq!(l.state(inv_id), Some(TransactionState::Completed));
    // Cancelling after the final response is refused.
    assert!(l.cancel(t0, inv_id).is_err());
}

#[test]
fn a_cancelled_invite_without_final_response_ends_64_t1_after_the_cancel() {
    let mut l = layer();
    let t0 = Instant::now();
    let (inv_id, inv) = start_client(&mut l, t0, "INVITE", udp());
    l.handle_message(t0 + ms(10), reply(&inv, 180, Some("b")), udp());
    let t_cancel = t0 + ms(20);
    let cancel_id = l.cancel(t_cancel, inv_id).unwrap().unwrap();
    let cancel = transmits(&mut l).remove(0);
    l.handle_message(t0 + ms(30), reply(&cancel, 200, Some("b")), udp());
    // A late provisional response does not stop the wait.
    l.handle_message(t0 + ms(40), reply(&inv, 183, Some("b")), udp());
    events(&mut l);
    let (_, evs) = run(&mut l, t0, ms(20) + Duration::from_secs(31));
    assert!(!has_terminated(&evs, inv_id), "{evs:?}");
    assert_eq!(l.state(inv_id), Some(TransactionState::Proceeding));
    // The callee never sends 487: 64·T1 after the CANCEL the INVITE is gone (§9.1).
    assert_eq!(l.poll_timeout(), Some(t_cancel + Duration::from_secs(32)));
    let (_, evs) = run(&mut l, t0, Duration::from_secs(40));
    assert!(
        evs.iter()
            .any(|e| matches!(e, Event::Timeout { id, timer: Timer::Cancel } if *id == inv_id)),
        "{evs:?}"
    );
    assert!(has_terminated(&evs, inv_id));
    assert_eq!(l.state(cancel_id), None);
    assert!(l.is_empty());
}

#[test]
fn client_cancel_race_with_2xx() {
    let mut l = layer();
    let t0 = Instant::now();
    let (inv_id, inv) = start_client(&mut l, t0, "INVITE", udp());
    l.handle_message(t0, reply(&inv, 183, Some("b")), udp());
    let cancel_id = l.cancel(t0 + ms(1), inv_id).unwrap().unwrap();
    let cancel = transmits(&mut l).remove(0);
    // The 200 to the INVITE crosses the CANCEL: the INVITE is Accepted, the TU sees the 2xx.
    l.handle_message(t0 + ms(2), reply(&inv, 200, Some("b")), udp());
    l.handle_message(t0 + ms(3), reply(&cancel, 200, Some("b")), udp());
    assert_eq!(l.state(inv_id), Some(TransactionState::Accepted));
    let evs = events(&mut l);
    assert!(evs.iter().any(|e| matches!(e, Event::Response { id, response } if *id == inv_id && response.status() == Some(200))));
    assert!(evs
        .iter()
        .any(|e| matches!(e, Event::Response { id, .. } if *id == cancel_id)));
}

#[test]
fn at_the_transaction_limit_requests_get_a_stateless_503() {
    let cfg = TransactionConfig {
        max_transactions: 2,
        ..TransactionConfig::default()
    };
    let mut l = TransactionLayer::with_ids(cfg, Box::new(SequentialIds::default()));
    let t0 = Instant::now();
    l.handle_message(t0, request("OPTIONS", "z9hG4bKone", None), udp());
    l.handle_message(t0, request("OPTIONS", "z9hG4bKtwo", None), udp());
    let mut ids = Vec::new();
    while let Some(e) = l.poll_event() {
        if let Event::Request { id, .. } = e {
            ids.push(id);
        }
    }
    assert_eq!((ids.len(), l.len()), (2, 2));
    // A third new request: answered 503 with Retry-After, no transaction, no event.
    l.handle_message(t0, request("OPTIONS", "z9hG4bKthree", None), udp());
    assert!(l.poll_event().is_none());
    assert_eq!(l.len(), 2);
    let busy = parse(&l.poll_transmit().expect("a 503").contents);
    assert_eq!(busy.status(), Some(503));
    assert_eq!(
        busy.header(sip_core::HeaderName::RetryAfter),
        Some(&b"1"[..])
    );
    assert_eq!(busy.top_via().unwrap().branch(), Some("z9hG4bKthree"));
    // A retransmission of a live transaction's request still reaches it.
    l.handle_message(t0, request("OPTIONS", "z9hG4bKone", None), udp());
    assert!(l.poll_transmit().is_none(), "absorbed in Trying");
    // The application's own requests are refused too.
    assert_eq!(
        l.send_request(t0, outgoing("OPTIONS"), udp()),
        Err(TransactionError::Overloaded { limit: 2 })
    );
    assert_eq!(TransactionError::Overloaded { limit: 2 }.status(), 503);
    // Once one ends (answered, then Timer J), new requests are served again.
    let first = request("OPTIONS", "z9hG4bKone", None);
    l.respond(
        t0,
        ids[0],
        SipMessage::response_to(&first, 200, "OK").unwrap(),
    )
    .unwrap();
    l.handle_timeout(t0 + Duration::from_secs(33));
    assert_eq!(l.len(), 1);
    while l.poll_event().is_some() {}
    while l.poll_transmit().is_some() {}
    l.handle_message(
        t0 + Duration::from_secs(33),
        request("OPTIONS", "z9hG4bKfour", None),
        udp(),
    );
    assert!(matches!(l.poll_event(), Some(Event::Request { .. })));
}

/// A request without a branch gets one only when it has exactly one Via value: with a
/// second (in the same field after a comma, or in a field of its own) the layer cannot know
/// which is ours and refuses it; a comma inside a quoted parameter is not a second value.
#[test]
fn a_branch_is_added_only_to_a_single_via() {
    let t0 = Instant::now();
    let with_vias = |vias: &[&str]| {
        let mut m = outgoing("OPTIONS");
        m.remove_header("Via");
        for v in vias {
            m.push_header("Via", v.to_string()).unwrap();
        }
        m
    };
    for vias in [
        &["SIP/2.0/UDP a.example:5060, SIP/2.0/UDP b.example:5060"][..],
        &["SIP/2.0/UDP a.example:5060", "SIP/2.0/UDP b.example:5060"][..],
    ] {
        let mut l = layer();
        let r = l.send_request(t0, with_vias(vias), udp());
        assert!(
            matches!(r, Err(TransactionError::WrongMessage(_))),
            "{vias:?}: {r:?}"
        );
    }
    let mut l = layer();
    let quoted = with_vias(&["SIP/2.0/UDP a.example:5060;x=\"1,2\""]);
    l.send_request(t0, quoted, udp()).unwrap();
    let sent = parse(&transmits(&mut l)[0]);
    let via = sent.top_via().unwrap();
    assert!(via.branch().unwrap().starts_with("z9hG4bK"));
    assert_eq!(sent.vias().count(), 1);
}
