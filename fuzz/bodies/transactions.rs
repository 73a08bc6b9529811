// Body of the `transactions` fuzz target, shared with sip-core's corpus smoke test.
//
// Drives a UAC and a UAS — each a transaction layer with its dialog set — from a script:
// the input is records separated by a line `%%`; each record is an operation letter and
// its argument (see `step`). What each side transmits waits on a wire until the script
// delivers it to the other side (`L`) or loses it (`Z`); what the script writes itself is
// delivered as if from the network (`S`, `R`). The TU answers, cancels, ACKs and sends
// in-dialog requests when told. The first byte picks UDP or TLS.
//
// Must never panic. Checks: a deadline polled after `handle_timeout(now)` is later than
// `now`; a transaction reported terminated is gone; every dialog made or refreshed takes
// a BYE, and a 2xx to an INVITE its ACK; and once the TU has answered everything and time has run on for longer than any
// timer, both layers are empty (no transaction outlives its timers).

use bytes::Bytes;
use sip_core::dialog::{DialogError, DialogId, DialogUpdate, Dialogs};
use sip_core::transaction::{Event, Peer, TransactionConfig, TransactionId, TransactionLayer};
use sip_core::transaction::{SequentialIds, TransportKind};
use sip_core::{HeaderName, Limits, Method, SipMessage};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The Via the dialog checks build with.
const VIA: &str = "SIP/2.0/TLS 192.0.2.1:5061";

/// The most records a run reads: enough for any call flow, small enough to stay fast.
const MAX_STEPS: usize = 64;

/// One side: its transaction layer, dialog set, and what its TU keeps.
struct Side {
    layer: TransactionLayer,
    dialogs: Dialogs,
    /// Where it is; the other side sends here.
    addr: SocketAddr,
    /// Requests received and not answered yet, oldest first.
    pending: Vec<(TransactionId, SipMessage, Option<TransactionId>)>,
    /// Requests it sent, by client transaction, for the dialog layer.
    sent: HashMap<TransactionId, SipMessage>,
    /// Dialogs it holds (made by 1xx/2xx), most recent last.
    dialogs_made: Vec<DialogId>,
    /// The client INVITEs it started, latest last (for CANCEL).
    invites: Vec<TransactionId>,
    /// The dialog and CSeq of a 2xx to ACK.
    to_ack: Option<(DialogId, u32)>,
    /// Transmissions not yet delivered.
    wire: Vec<Bytes>,
}

impl Side {
    /// A side at `port`. Its identifiers count from `port << 16`: branches, tags and
    /// Call-IDs the fuzzer can write (`z9hG4bK` and 16 hex digits), the same every run.
    fn new(port: u16) -> Side {
        let ids = |k: u64| Box::new(SequentialIds::starting_at(u64::from(port) << 16 | k));
        Side {
            layer: TransactionLayer::with_ids(TransactionConfig::default(), ids(0)),
            dialogs: Dialogs::with_ids(ids(0x8000)),
            addr: SocketAddr::from(([192, 0, 2, 1], port)),
            pending: Vec::new(),
            sent: HashMap::new(),
            dialogs_made: Vec::new(),
            invites: Vec::new(),
            to_ack: None,
            wire: Vec::new(),
        }
    }

    fn via(&self, kind: TransportKind) -> String {
        let t = if kind.is_reliable() { "TLS" } else { "UDP" };
        format!("SIP/2.0/{t} {}", self.addr)
    }

    /// Moves transmissions to the wire and lets the TU see every event.
    fn drain(&mut self) {
        while let Some(t) = self.layer.poll_transmit() {
            self.wire.push(t.contents);
        }
        while let Some(event) = self.layer.poll_event() {
            match event {
                Event::Request {
                    id,
                    request,
                    cancels,
                    ..
                } => {
                    if request.to().is_ok_and(|t| t.tag().is_some()) {
                        if let Ok(DialogUpdate::Updated(d)) = self.dialogs.handle_request(&request)
                        {
                            self.check_usable(&d);
                        }
                    }
                    self.pending.push((id, request, cancels));
                }
                Event::Response { id, response } => {
                    let Some(request) = self.sent.get(&id) else {
                        continue;
                    };
                    let update = self.dialogs.handle_uac_response(request, &response);
                    if let Ok(DialogUpdate::Confirmed(d) | DialogUpdate::Early(d)) = update {
                        if response.status().is_some_and(|s| (200..300).contains(&s))
                            && request.method() == Some(&Method::Invite)
                        {
                            let seq = response.cseq().map_or(1, |c| c.seq());
                            if let Err(e) = self.dialogs.ack(&d, seq, VIA) {
                                panic!("the ACK for a 2xx does not build: {e}");
                            }
                            self.to_ack = Some((d.clone(), seq));
                        }
                        self.check_usable(&d);
                        self.dialogs_made.push(d);
                    } else if let Ok(DialogUpdate::Updated(d)) = update {
                        self.check_usable(&d);
                    } else if update.is_err() {
                        // A 2xx that makes no usable dialog is still ACKed (and ended).
                        if let Ok(d) = self.dialogs.confirm_to_end(request, &response) {
                            let seq = response.cseq().map_or(1, |c| c.seq());
                            if let Err(e) = self.dialogs.ack(&d, seq, VIA) {
                                panic!("the ACK for a 2xx to end does not build: {e}");
                            }
                            self.check_usable(&d);
                        }
                    }
                }
                Event::Ack { request, .. } => {
                    if let Ok(DialogUpdate::Updated(d)) = self.dialogs.handle_request(&request) {
                        self.check_usable(&d);
                    }
                }
                Event::Terminated { id } => {
                    assert!(
                        self.layer.state(id).is_none(),
                        "a terminated transaction lives"
                    );
                    self.sent.remove(&id);
                    self.pending.retain(|p| p.0 != id);
                }
                _ => {}
            }
        }
    }

    /// The TU's answer to its oldest (or newest) pending request, with `status` (a CANCEL
    /// is answered as a CANCEL is) and, in a 1xx/2xx that makes a dialog, `contact` (or
    /// its own). A request answered provisionally stays pending.
    fn answer(&mut self, now: Instant, status: u16, contact: &[u8], newest: bool) {
        let Some(at) = (if newest {
            self.pending.len().checked_sub(1)
        } else {
            (!self.pending.is_empty()).then_some(0)
        }) else {
            return;
        };
        let (id, request, cancels) = self.pending.remove(at);
        if status < 200 && request.method() != Some(&Method::Cancel) {
            self.pending.insert(at, (id, request.clone(), cancels));
        }
        if request.method() == Some(&Method::Cancel) {
            let _ = self.layer.answer_cancel(now, id, &request, cancels);
            return;
        }
        let Ok(mut response) = SipMessage::response_to(&request, status, "Fuzz") else {
            return;
        };
        if status > 100 && status < 300 && request.to().is_ok_and(|t| t.tag().is_none()) {
            let tag = self
                .layer
                .sent_to_tag(id)
                .map_or_else(|| self.dialogs.new_tag(), String::from);
            let _ = response.set_to_tag(&tag);
            let contact = match contact {
                [] => Bytes::from(format!("<sip:uas@{}>", self.addr)),
                c => Bytes::copy_from_slice(c),
            };
            let _ = response.push_header(HeaderName::Contact, contact);
        }
        if let Ok(DialogUpdate::Confirmed(d) | DialogUpdate::Early(d)) =
            self.dialogs.handle_uas_response(&request, &response)
        {
            self.check_usable(&d);
            self.dialogs_made.push(d);
        }
        let _ = self.layer.respond(now, id, response);
    }

    /// A dialog this UA holds takes in-dialog requests, whatever the peer sent to make or
    /// refresh it: a BYE builds (unless the local CSeq ran out). It takes a CSeq number.
    fn check_usable(&mut self, d: &DialogId) {
        match self.dialogs.request(d, Method::Bye, VIA) {
            Ok(bye) => {
                if let Err(e) = bye.build() {
                    panic!("a BYE in a dialog does not build: {e}");
                }
            }
            Err(DialogError::CSeqExhausted | DialogError::UnknownDialog) => {}
            Err(e) => panic!("no BYE in a dialog: {e}"),
        }
    }

    /// Starts a client transaction for `request`.
    fn send(&mut self, now: Instant, request: SipMessage, to: Peer) {
        let invite = request.method() == Some(&Method::Invite);
        if let Ok(id) = self.layer.send_request(now, request.clone(), to) {
            if invite {
                self.invites.push(id);
            }
            self.sent.insert(id, request);
        }
    }
}

/// `data` parsed as one datagram or framed message, as the transport would hand it over.
fn parse(data: Bytes, kind: TransportKind) -> Option<SipMessage> {
    if kind.is_reliable() {
        SipMessage::parse_framed(data, &Limits::DEFAULT).ok()
    } else {
        SipMessage::parse_datagram(data, &Limits::DEFAULT).ok()
    }
}

/// Delivers everything on `from`'s wire to `to`.
fn deliver(now: Instant, from: &mut Side, to: &mut Side, kind: TransportKind) {
    let source = Peer::new(from.addr, kind);
    for bytes in std::mem::take(&mut from.wire) {
        if let Some(m) = parse(bytes, kind) {
            to.layer.handle_message(now, m, source);
        }
    }
}

/// Runs `handle_timeout(now)` and checks the next deadline is in the future.
fn tick(side: &mut Side, now: Instant) {
    side.layer.handle_timeout(now);
    if let Some(next) = side.layer.poll_timeout() {
        assert!(
            next > now,
            "a deadline at or before now after handle_timeout"
        );
    }
    side.drain();
}

/// The number `arg` starts with (at most four digits), or `default`; and the rest of
/// `arg`, less the space after the number.
fn number(arg: &[u8], default: u16) -> (u16, &[u8]) {
    let n = arg
        .iter()
        .take(4)
        .take_while(|c| c.is_ascii_digit())
        .count();
    let value = arg[..n]
        .iter()
        .fold(None, |v: Option<u16>, &c| {
            Some(v.unwrap_or(0) * 10 + u16::from(c - b'0'))
        })
        .unwrap_or(default);
    let rest = &arg[n..];
    (value, rest.strip_prefix(b" ").unwrap_or(rest))
}

pub fn body(data: &[u8]) {
    let kind = match data.first() {
        Some(b) if b & 1 == 1 => TransportKind::Udp,
        _ => TransportKind::Tls,
    };
    let start = Instant::now();
    let mut now = start;
    let (mut uac, mut uas) = (Side::new(5061), Side::new(5062));
    let records = data.get(1..).unwrap_or_default();
    let mut rest = records;
    for _ in 0..MAX_STEPS {
        if rest.is_empty() {
            break;
        }
        let (record, next) = match rest.windows(4).position(|w| w == b"\n%%\n") {
            Some(i) => (&rest[..i], &rest[i + 4..]),
            None => (rest, &[][..]),
        };
        rest = next;
        let Some((&op, arg)) = record.split_first() else {
            continue;
        };
        let to_uas = Peer::new(uas.addr, kind);
        match op {
            // The UAC sends the message (a request) in a new client transaction.
            b'C' => {
                if let Some(m) = parse(Bytes::copy_from_slice(arg), kind) {
                    uac.send(now, m, to_uas);
                }
            }
            // The message arrives at the UAS / the UAC from the network.
            b'S' | b'R' => {
                if let Some(m) = parse(Bytes::copy_from_slice(arg), kind) {
                    let (side, from) = if op == b'S' {
                        (&mut uas, uac.addr)
                    } else {
                        (&mut uac, uas.addr)
                    };
                    side.layer.handle_message(now, m, Peer::new(from, kind));
                }
            }
            // Deliver both wires / lose them.
            b'L' => {
                deliver(now, &mut uac, &mut uas, kind);
                deliver(now, &mut uas, &mut uac, kind);
            }
            b'Z' => {
                uac.wire.clear();
                uas.wire.clear();
            }
            // Time runs on by the argument in 100 ms steps (default 500 ms).
            b'T' => {
                now += Duration::from_millis(100 * u64::from(number(arg, 5).0));
                tick(&mut uac, now);
                tick(&mut uas, now);
            }
            // The UAS answers its oldest (A) or newest (N) pending request; the UAC its
            // oldest (a). The argument: the status, then the Contact a dialog's 1xx/2xx
            // carries (optional).
            b'A' | b'N' | b'a' => {
                let (status, contact) = number(arg, 200);
                let side = if op == b'a' { &mut uac } else { &mut uas };
                side.answer(now, status.clamp(100, 699), contact, op == b'N');
            }
            // The UAC cancels its latest INVITE.
            b'X' => {
                if let Some(&id) = uac.invites.last() {
                    let _ = uac.layer.cancel(now, id);
                }
            }
            // A transport error for the UAC's latest INVITE / the UAS's oldest pending.
            b'E' => {
                if let Some(&id) = uac.invites.last() {
                    uac.layer.handle_transport_error(now, id);
                }
                if let Some(&(id, ..)) = uas.pending.first() {
                    uas.layer.handle_transport_error(now, id);
                }
            }
            // The UAC ACKs the latest 2xx to its INVITE.
            b'K' => {
                if let Some((d, seq)) = uac.to_ack.take() {
                    let via = uac.via(kind);
                    if let Ok(ack) = uac.dialogs.ack(&d, seq, &via) {
                        uac.layer.send_stateless(&ack, to_uas);
                    }
                }
            }
            // The UAC (D) or the UAS (d) sends a request with the argument as method in its
            // latest dialog.
            b'D' | b'd' => {
                let method = Method::from_token(arg);
                let (side, to) = if op == b'D' {
                    (&mut uac, to_uas)
                } else {
                    (&mut uas, Peer::new(uac.addr, kind))
                };
                let Some(d) = side.dialogs_made.last().cloned() else {
                    continue;
                };
                let via = side.via(kind);
                let built = side
                    .dialogs
                    .request(&d, method, &via)
                    .ok()
                    .map(|b| b.header(HeaderName::Contact, "<sip:x@192.0.2.1>").build());
                if let Some(Ok(request)) = built {
                    side.send(now, request, to);
                }
            }
            _ => {}
        }
        uac.drain();
        uas.drain();
    }
    // The TUs answer whatever is left, and time runs on past every timer.
    for _ in 0..8 {
        while !uas.pending.is_empty() {
            uas.answer(now, 500, &[], false);
        }
        while !uac.pending.is_empty() {
            uac.answer(now, 500, &[], false);
        }
        uac.drain();
        uas.drain();
        deliver(now, &mut uac, &mut uas, kind);
        deliver(now, &mut uas, &mut uac, kind);
        now += Duration::from_secs(1);
        tick(&mut uac, now);
        tick(&mut uas, now);
    }
    // Nothing more is delivered: every transaction must end by its own timers, once the
    // TUs answered what they hold and cancelled the INVITEs still unanswered (a client
    // INVITE with a provisional response has no timer of its own: RFC 3261 leaves ending
    // it to the TU, as `conversation`'s ring timeout does).
    for side in [&mut uac, &mut uas] {
        while !side.pending.is_empty() {
            side.answer(now, 500, &[], false);
        }
        for &id in &side.invites {
            let _ = side.layer.cancel(now, id);
        }
        side.drain();
    }
    let end = now + Duration::from_secs(200);
    for _ in 0..10_000 {
        let next = [uac.layer.poll_timeout(), uas.layer.poll_timeout()]
            .into_iter()
            .flatten()
            .min();
        match next {
            Some(at) if at <= end => {
                now = at.max(now);
                tick(&mut uac, now);
                tick(&mut uas, now);
                uac.wire.clear();
                uas.wire.clear();
            }
            _ => break,
        }
    }
    assert!(
        uac.layer.is_empty(),
        "UAC transactions outlived their timers"
    );
    assert!(
        uas.layer.is_empty(),
        "UAS transactions outlived their timers"
    );
}
