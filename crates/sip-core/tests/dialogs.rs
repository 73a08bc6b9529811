//! Dialog tests (RFC 3261 §12, §13): forking with early dialogs, route sets, strict routing,
//! target refresh, CSeq rules, 481 and 500.

use bytes::Bytes;
use sip_core::dialog::{DialogError, DialogRole, DialogState, DialogUpdate, Dialogs};
use sip_core::transaction::SequentialIds;
use sip_core::{HeaderName, Limits, Method, SipMessage};

fn parse(s: &str) -> SipMessage {
    SipMessage::parse_datagram(Bytes::from(s.replace('\n', "\r\n")), &Limits::DEFAULT).unwrap()
}
fn dialogs() -> Dialogs {
    Dialogs::with_ids(Box::new(SequentialIds::default()))
}

const INVITE: &str = "INVITE sip:bob@b.example SIP/2.0
Via: SIP/2.0/TLS a.example:5061;branch=z9hG4bK1
Max-Forwards: 70
From: \"Alice\" <sip:alice@a.example>;tag=a1
To: <sip:bob@b.example>
Call-ID: c1@a.example
CSeq: 10 INVITE
Contact: <sip:alice@192.0.2.9;transport=tls>
Content-Length: 0

";

/// A response to INVITE from a fork with To tag `tag`, Contact and Record-Route.
fn resp(status: u16, tag: &str, contact: &str, rr: &[&str]) -> SipMessage {
    let mut s = format!(
        "SIP/2.0 {status} X\nVia: SIP/2.0/TLS a.example:5061;branch=z9hG4bK1\n\
         From: \"Alice\" <sip:alice@a.example>;tag=a1\nTo: <sip:bob@b.example>;tag={tag}\n\
         Call-ID: c1@a.example\nCSeq: 10 INVITE\nContact: <{contact}>\n"
    );
    for r in rr {
        s.push_str(&format!("Record-Route: {r}\n"));
    }
    s.push_str("Content-Length: 0\n\n");
    parse(&s)
}

fn early(u: DialogUpdate) -> sip_core::DialogId {
    match u {
        DialogUpdate::Early(id) => id,
        u => panic!("{u:?}"),
    }
}
fn confirmed(u: DialogUpdate) -> sip_core::DialogId {
    match u {
        DialogUpdate::Confirmed(id) => id,
        u => panic!("{u:?}"),
    }
}

#[test]
fn forked_invite_makes_two_early_dialogs_and_2xx_confirms_one() {
    let mut d = dialogs();
    let inv = parse(INVITE);
    let rr = ["<sip:p1.example;lr>", "<sip:p2.example;lr>"];
    // 100 Trying (no tag) makes nothing.
    let trying = parse(&INVITE.replace("INVITE sip:bob@b.example SIP/2.0", "SIP/2.0 100 Trying"));
    assert_eq!(
        d.handle_uac_response(&inv, &trying),
        Ok(DialogUpdate::Unchanged)
    );
    let a = early(
        d.handle_uac_response(&inv, &resp(180, "b1", "sip:bob@192.0.2.1", &rr))
            .unwrap(),
    );
    let b = early(
        d.handle_uac_response(&inv, &resp(183, "b2", "sip:bob@192.0.2.2", &rr))
            .unwrap(),
    );
    assert_eq!(d.len(), 2);
    assert_ne!(a, b);
    assert_eq!(a.call_id(), b"c1@a.example");
    assert_eq!(a.local_tag(), b"a1");
    assert_eq!(a.remote_tag(), b"b1");
    assert_eq!(d.get(&b).unwrap().state(), DialogState::Early);
    // The 2xx from the first fork confirms its dialog, recomputing target and route set.
    let ok = resp(
        200,
        "b1",
        "sip:bob@192.0.2.11",
        &["<sip:p1.example;lr>", "<sip:p3.example;lr>"],
    );
    assert_eq!(confirmed(d.handle_uac_response(&inv, &ok).unwrap()), a);
    let da = d.get(&a).unwrap();
    assert_eq!(da.state(), DialogState::Confirmed);
    assert_eq!(da.role(), DialogRole::Uac);
    assert_eq!(da.remote_target(), b"sip:bob@192.0.2.11");
    // UAC route set is the Record-Route reversed.
    let routes: Vec<&[u8]> = da.route_set().collect();
    assert_eq!(
        routes,
        [&b"<sip:p3.example;lr>"[..], b"<sip:p1.example;lr>"]
    );
    assert_eq!(da.local_seq(), Some(10));
    assert_eq!(da.remote_seq(), None);
    assert_eq!(da.next_hop(), b"sip:p3.example;lr");
    // A 2xx retransmission repeats Confirmed without a new dialog.
    assert_eq!(confirmed(d.handle_uac_response(&inv, &ok).unwrap()), a);
    // When the INVITE transaction ends, the fork still early is dropped.
    assert_eq!(d.terminate_early(b"c1@a.example", b"a1"), vec![b]);
    assert_eq!(d.len(), 1);
}

#[test]
fn a_late_provisional_response_does_not_move_a_confirmed_dialogs_target() {
    let mut d = dialogs();
    let inv = parse(INVITE);
    early(
        d.handle_uac_response(&inv, &resp(180, "b1", "sip:early@192.0.2.1", &[]))
            .unwrap(),
    );
    let id = confirmed(
        d.handle_uac_response(&inv, &resp(200, "b1", "sip:bob@192.0.2.11", &[]))
            .unwrap(),
    );
    // A 183 delayed in the network arrives after the 2xx (§12.2.1.2: only target
    // refreshes change the target of a confirmed dialog).
    assert_eq!(
        d.handle_uac_response(&inv, &resp(183, "b1", "sip:early@192.0.2.1", &[])),
        Ok(DialogUpdate::Unchanged)
    );
    assert_eq!(d.get(&id).unwrap().remote_target(), b"sip:bob@192.0.2.11");
    // A retransmitted 2xx with another Contact does not move it either.
    assert_eq!(
        confirmed(
            d.handle_uac_response(&inv, &resp(200, "b1", "sip:other@192.0.2.12", &[]))
                .unwrap()
        ),
        id
    );
    assert_eq!(d.get(&id).unwrap().remote_target(), b"sip:bob@192.0.2.11");
}

#[test]
fn a_response_without_contact_keeps_the_early_dialogs_target() {
    let mut d = dialogs();
    let inv = parse(INVITE);
    let no_contact = |status, rr: &[&str]| {
        let r = resp(status, "b1", "sip:gone@192.0.2.99", rr).to_bytes();
        parse(
            &String::from_utf8_lossy(&r)
                .replace("Contact: <sip:gone@192.0.2.99>\r\n", "")
                .replace("\r\n", "\n"),
        )
    };
    assert!(no_contact(183, &[]).header(HeaderName::Contact).is_none());
    let id = early(
        d.handle_uac_response(&inv, &resp(180, "b1", "sip:bob@192.0.2.1", &[]))
            .unwrap(),
    );
    assert_eq!(
        d.handle_uac_response(&inv, &no_contact(183, &[])),
        Ok(DialogUpdate::Updated(id.clone()))
    );
    assert_eq!(d.get(&id).unwrap().remote_target(), b"sip:bob@192.0.2.1");
    // The 2xx still recomputes the route set (§13.2.2.4), and keeps the target.
    assert_eq!(
        confirmed(
            d.handle_uac_response(&inv, &no_contact(200, &["<sip:p.example;lr>"]))
                .unwrap()
        ),
        id
    );
    let dialog = d.get(&id).unwrap();
    assert_eq!(dialog.remote_target(), b"sip:bob@192.0.2.1");
    assert_eq!(
        dialog.route_set().collect::<Vec<_>>(),
        [&b"<sip:p.example;lr>"[..]]
    );
    assert_eq!(dialog.remote_uri(), b"<sip:bob@b.example>;tag=b1");
}

#[test]
fn a_challenged_bye_keeps_the_dialog_for_the_retry_with_credentials() {
    let mut d = dialogs();
    let inv = parse(INVITE);
    let id = confirmed(
        d.handle_uac_response(&inv, &resp(200, "b1", "sip:bob@192.0.2.1", &[]))
            .unwrap(),
    );
    let bye = |d: &mut Dialogs, branch: &str| {
        d.request(
            &id,
            Method::Bye,
            &format!("SIP/2.0/TLS a.example:5061;branch={branch}"),
        )
        .unwrap()
        .build()
        .unwrap()
    };
    let first = bye(&mut d, "z9hG4bKbye1");
    for status in [401, 407] {
        let challenge = SipMessage::response_to(&first, status, "Unauthorized").unwrap();
        assert_eq!(
            d.handle_uac_response(&first, &challenge),
            Ok(DialogUpdate::Updated(id.clone()))
        );
    }
    // The BYE goes again, with the next CSeq, in the same dialog (§22.2); its 200 ends it.
    let again = bye(&mut d, "z9hG4bKbye2");
    assert_eq!(again.cseq().unwrap().seq(), first.cseq().unwrap().seq() + 1);
    let ok = SipMessage::response_to(&again, 200, "OK").unwrap();
    assert_eq!(
        d.handle_uac_response(&again, &ok),
        Ok(DialogUpdate::Terminated(vec![id.clone()]))
    );
    assert!(d.get(&id).is_none());
}

#[test]
fn final_failure_ends_every_early_dialog() {
    let mut d = dialogs();
    let inv = parse(INVITE);
    early(
        d.handle_uac_response(&inv, &resp(180, "b1", "sip:x@h", &[]))
            .unwrap(),
    );
    early(
        d.handle_uac_response(&inv, &resp(180, "b2", "sip:y@h", &[]))
            .unwrap(),
    );
    match d
        .handle_uac_response(&inv, &resp(486, "b1", "sip:x@h", &[]))
        .unwrap()
    {
        DialogUpdate::Terminated(ids) => assert_eq!(ids.len(), 2),
        u => panic!("{u:?}"),
    }
    assert!(d.is_empty());
}

fn uas_dialog(d: &mut Dialogs, rr: &[&str]) -> sip_core::DialogId {
    let mut s = INVITE.replace("Content-Length: 0\n", "");
    for r in rr {
        s = s.replace(
            "Max-Forwards: 70\n",
            &format!("Max-Forwards: 70\nRecord-Route: {r}\n"),
        );
    }
    s = s.replace("\n\n", "\nContent-Length: 0\n\n");
    let inv = parse(&s);
    let tag = d.new_tag();
    let mut ok = SipMessage::response_to(&inv, 200, "OK").unwrap();
    ok.set_to_tag(&tag).unwrap();
    confirmed(d.handle_uas_response(&inv, &ok).unwrap())
}

#[test]
fn uas_dialog_and_loose_routed_request() {
    let mut d = dialogs();
    let rr = ["<sip:p1.example;lr>", "<sip:p2.example;lr>"];
    let id = uas_dialog(&mut d, &rr);
    let dlg = d.get(&id).unwrap();
    assert_eq!(dlg.role(), DialogRole::Uas);
    assert_eq!(dlg.remote_seq(), Some(10));
    assert_eq!(dlg.local_seq(), None);
    assert_eq!(dlg.remote_target(), b"sip:alice@192.0.2.9;transport=tls");
    // Record-Route order is kept as written (the request listed p2 first here because each
    // replace inserted above the previous).
    let routes: Vec<&[u8]> = dlg.route_set().collect();
    assert_eq!(
        routes,
        [&b"<sip:p2.example;lr>"[..], b"<sip:p1.example;lr>"]
    );
    let bye = d
        .request(&id, Method::Bye, "SIP/2.0/TLS b.example:5061")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(
        bye.request_uri_bytes(),
        Some(&b"sip:alice@192.0.2.9;transport=tls"[..])
    );
    let r: Vec<&[u8]> = bye.header_values(HeaderName::Route).collect();
    assert_eq!(r, [&b"<sip:p2.example;lr>"[..], b"<sip:p1.example;lr>"]);
    assert_eq!(bye.from().unwrap().tag(), Some(&b"0000000000000001"[..]));
    assert_eq!(bye.to().unwrap().tag(), Some(&b"a1"[..]));
    assert_eq!(bye.cseq().unwrap().seq(), 1);
    assert_eq!(bye.call_id().unwrap(), b"c1@a.example");
    let next = d
        .request(&id, Method::Info, "SIP/2.0/TLS b.example:5061")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(next.cseq().unwrap().seq(), 2);
}

#[test]
fn strict_routing_peer_gets_the_route_in_the_request_uri() {
    let mut d = dialogs();
    let id = uas_dialog(&mut d, &["<sip:strict.example>"]);
    let info = d
        .request(&id, Method::Info, "SIP/2.0/TLS b.example")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(info.request_uri_bytes(), Some(&b"sip:strict.example"[..]));
    let r: Vec<&[u8]> = info.header_values(HeaderName::Route).collect();
    assert_eq!(r, [&b"<sip:alice@192.0.2.9;transport=tls>"[..]]);
    assert_eq!(d.get(&id).unwrap().next_hop(), b"sip:strict.example");
}

fn in_dialog(method: &str, seq: u32, to_tag: &str, contact: &str) -> SipMessage {
    parse(&format!(
        "{method} sip:bob@192.0.2.1 SIP/2.0\nVia: SIP/2.0/TLS a.example;branch=z9hG4bK{seq}{method}\n\
         From: <sip:alice@a.example>;tag=a1\nTo: <sip:bob@b.example>;tag={to_tag}\n\
         Call-ID: c1@a.example\nCSeq: {seq} {method}\nContact: <{contact}>\nContent-Length: 0\n\n"
    ))
}

#[test]
fn reinvite_refreshes_the_remote_target_and_cseq_rules_apply() {
    let mut d = dialogs();
    let id = uas_dialog(&mut d, &[]);
    let tag = String::from_utf8(id.local_tag().to_vec()).unwrap();
    let re = in_dialog("INVITE", 11, &tag, "sip:alice@198.51.100.7");
    assert_eq!(d.handle_request(&re), Ok(DialogUpdate::Updated(id.clone())));
    assert_eq!(
        d.get(&id).unwrap().remote_target(),
        b"sip:alice@198.51.100.7"
    );
    assert_eq!(d.get(&id).unwrap().remote_seq(), Some(11));
    // ACK for the re-INVITE carries the same CSeq and is fine.
    assert!(d
        .handle_request(&in_dialog("ACK", 11, &tag, "sip:x@h"))
        .is_ok());
    // An INFO with a CSeq not above the last one: 500.
    let old = in_dialog("INFO", 11, &tag, "sip:x@h");
    let err = d.handle_request(&old).unwrap_err();
    assert_eq!(err, DialogError::OutOfOrder { got: 11, last: 11 });
    assert_eq!(err.status(), 500);
    assert_eq!(err.response_to(&old).unwrap().status(), Some(500));
    // An INFO does not refresh the target.
    d.handle_request(&in_dialog("INFO", 12, &tag, "sip:other@h"))
        .unwrap();
    assert_eq!(
        d.get(&id).unwrap().remote_target(),
        b"sip:alice@198.51.100.7"
    );
    // BYE ends the dialog; a later request gets 481.
    assert_eq!(
        d.handle_request(&in_dialog("BYE", 13, &tag, "sip:x@h")),
        Ok(DialogUpdate::Terminated(vec![id]))
    );
    let late = in_dialog("INFO", 14, &tag, "sip:x@h");
    let err = d.handle_request(&late).unwrap_err();
    assert_eq!(err, DialogError::NoDialog);
    assert_eq!(err.response_to(&late).unwrap().status(), Some(481));
}

#[test]
fn request_with_unknown_to_tag_gets_481_and_untagged_is_outside_dialogs() {
    let mut d = dialogs();
    assert_eq!(
        d.handle_request(&in_dialog("BYE", 2, "nope", "sip:x@h"))
            .unwrap_err()
            .status(),
        481
    );
    assert_eq!(
        d.handle_request(&parse(INVITE)),
        Ok(DialogUpdate::Unchanged)
    );
}

#[test]
fn uac_target_refresh_response_ack_and_in_dialog_failures() {
    let mut d = dialogs();
    let inv = parse(INVITE);
    let id = confirmed(
        d.handle_uac_response(
            &inv,
            &resp(200, "b1", "sip:bob@192.0.2.1", &["<sip:p.example;lr>"]),
        )
        .unwrap(),
    );
    let ack = d.ack(&id, 10, "SIP/2.0/TLS a.example:5061").unwrap();
    assert_eq!(ack.method(), Some(&Method::Ack));
    assert_eq!(ack.cseq().unwrap().seq(), 10);
    assert!(ack
        .top_via()
        .unwrap()
        .branch()
        .unwrap()
        .starts_with("z9hG4bK"));
    assert_eq!(ack.request_uri_bytes(), Some(&b"sip:bob@192.0.2.1"[..]));
    assert_eq!(
        ack.header(HeaderName::Route),
        Some(&b"<sip:p.example;lr>"[..])
    );
    // re-INVITE; its 2xx carries a new Contact.
    let reinv = d
        .request(
            &id,
            Method::Invite,
            "SIP/2.0/TLS a.example:5061;branch=z9hG4bKre",
        )
        .unwrap()
        .header("Contact", "<sip:alice@192.0.2.9>")
        .build()
        .unwrap();
    assert_eq!(reinv.cseq().unwrap().seq(), 11);
    let ok = parse(
        &String::from_utf8_lossy(&resp(200, "b1", "sip:bob@203.0.113.5", &[]).to_bytes())
            .replace("CSeq: 10 INVITE", "CSeq: 11 INVITE")
            .replace("\r\n", "\n"),
    );
    let reinv = parse(&String::from_utf8_lossy(&reinv.to_bytes()).replace("\r\n", "\n"));
    assert_eq!(
        d.handle_uac_response(&reinv, &ok),
        Ok(DialogUpdate::Updated(id.clone()))
    );
    assert_eq!(d.get(&id).unwrap().remote_target(), b"sip:bob@203.0.113.5");
    // A 481 to an in-dialog request ends the dialog.
    let info = d
        .request(
            &id,
            Method::Info,
            "SIP/2.0/TLS a.example:5061;branch=z9hG4bKi",
        )
        .unwrap()
        .build()
        .unwrap();
    let r481 = SipMessage::response_to(&info, 481, "Call/Transaction Does Not Exist").unwrap();
    assert_eq!(
        d.handle_uac_response(&info, &r481),
        Ok(DialogUpdate::Terminated(vec![id.clone()]))
    );
    assert_eq!(d.ack(&id, 10, "x").unwrap_err(), DialogError::UnknownDialog);
}

#[test]
fn a_481_to_a_cancel_or_prack_in_a_dialog_leaves_the_dialog() {
    let mut d = dialogs();
    let inv = parse(INVITE);
    let id = confirmed(
        d.handle_uac_response(&inv, &resp(200, "b1", "sip:bob@192.0.2.1", &[]))
            .unwrap(),
    );
    let via = "SIP/2.0/TLS a.example:5061;branch=z9hG4bKre";
    let reinv = d
        .request(&id, Method::Invite, via)
        .unwrap()
        .build()
        .unwrap();
    // The CANCEL of the re-INVITE crosses its final response: the UAS finds no
    // transaction (§9.2). The dialog, and the session, are still there.
    let cancel = parse(
        &String::from_utf8_lossy(&reinv.to_bytes())
            .replacen("INVITE", "CANCEL", 1)
            .replace("11 INVITE", "11 CANCEL")
            .replace("\r\n", "\n"),
    );
    assert_eq!(cancel.to().unwrap().tag(), Some(&b"b1"[..]));
    for status in [481, 408] {
        let r = SipMessage::response_to(&cancel, status, "X").unwrap();
        assert_eq!(
            d.handle_uac_response(&cancel, &r),
            Ok(DialogUpdate::Updated(id.clone())),
            "{status} to CANCEL"
        );
    }
    // A PRACK that matched no unacknowledged reliable 1xx (RFC 3262 §3).
    let prack = d
        .request(
            &id,
            Method::Prack,
            "SIP/2.0/TLS a.example:5061;branch=z9hG4bKp",
        )
        .unwrap()
        .header("RAck", "1 11 INVITE")
        .build()
        .unwrap();
    let r481 = SipMessage::response_to(&prack, 481, "Call/Transaction Does Not Exist").unwrap();
    assert_eq!(
        d.handle_uac_response(&prack, &r481),
        Ok(DialogUpdate::Updated(id.clone()))
    );
    assert!(d.get(&id).is_some());
    // A 481 to a request of the dialog's own still ends it.
    let options = d
        .request(
            &id,
            Method::Options,
            "SIP/2.0/TLS a.example:5061;branch=z9hG4bKo",
        )
        .unwrap()
        .build()
        .unwrap();
    let r481 = SipMessage::response_to(&options, 481, "Call/Transaction Does Not Exist").unwrap();
    assert_eq!(
        d.handle_uac_response(&options, &r481),
        Ok(DialogUpdate::Terminated(vec![id.clone()]))
    );
}

#[test]
fn uas_early_dialog_confirmed_or_ended() {
    let mut d = dialogs();
    let inv = parse(INVITE);
    let mut ringing = SipMessage::response_to(&inv, 180, "Ringing").unwrap();
    ringing.set_to_tag("u1").unwrap();
    let id = early(d.handle_uas_response(&inv, &ringing).unwrap());
    assert_eq!(d.get(&id).unwrap().state(), DialogState::Early);
    let mut busy = SipMessage::response_to(&inv, 486, "Busy Here").unwrap();
    busy.set_to_tag("u1").unwrap();
    assert_eq!(
        d.handle_uas_response(&inv, &busy),
        Ok(DialogUpdate::Terminated(vec![id]))
    );
    assert!(d.is_empty());
}

const SUBSCRIBE: &str = "SUBSCRIBE sip:bob@b.example SIP/2.0
Via: SIP/2.0/TLS a.example:5061;branch=z9hG4bKs1
Max-Forwards: 70
From: <sip:alice@a.example>;tag=s1
To: <sip:bob@b.example>
Call-ID: sub1@a.example
CSeq: 1 SUBSCRIBE
Event: presence
Expires: 600
Contact: <sip:alice@192.0.2.9;transport=tls>
Content-Length: 0

";

fn notify(from_tag: &str, to_tag: &str, call_id: &str, seq: u32) -> SipMessage {
    parse(&format!(
        "NOTIFY sip:alice@192.0.2.9;transport=tls SIP/2.0\n\
         Via: SIP/2.0/TLS b.example:5061;branch=z9hG4bKn{seq}\nMax-Forwards: 70\n\
         From: <sip:bob@b.example>;tag={from_tag}\nTo: <sip:alice@a.example>;tag={to_tag}\n\
         Call-ID: {call_id}\nCSeq: {seq} NOTIFY\nContact: <sip:bob@192.0.2.1>\n\
         Record-Route: <sip:p1.example;lr>\nRecord-Route: <sip:p2.example;lr>\n\
         Event: presence\nSubscription-State: active;expires=600\nContent-Length: 0\n\n"
    ))
}

#[test]
fn notify_overtaking_the_2xx_creates_the_subscription_dialog() {
    let mut d = dialogs();
    let sub = parse(SUBSCRIBE);
    let id = confirmed(
        d.handle_notify(&sub, &notify("n1", "s1", "sub1@a.example", 1))
            .unwrap(),
    );
    assert_eq!(id.remote_tag(), b"n1");
    let dialog = d.get(&id).unwrap();
    assert_eq!(dialog.role(), DialogRole::Uac);
    assert_eq!(dialog.remote_target(), b"sip:bob@192.0.2.1");
    // The subscriber is the NOTIFY's UAS: route set in Record-Route order.
    let routes: Vec<&[u8]> = dialog.route_set().collect();
    assert_eq!(
        routes,
        [&b"<sip:p1.example;lr>"[..], b"<sip:p2.example;lr>"]
    );
    // The 2xx arriving later finds the same dialog.
    let ok = parse(
        &SUBSCRIBE
            .replace("SUBSCRIBE sip:bob@b.example SIP/2.0", "SIP/2.0 200 OK")
            .replace("To: <sip:bob@b.example>", "To: <sip:bob@b.example>;tag=n1"),
    );
    assert_eq!(
        d.handle_uac_response(&sub, &ok),
        Ok(DialogUpdate::Confirmed(id.clone()))
    );
    assert_eq!(d.len(), 1);
    // The next NOTIFY is an in-dialog request with a higher CSeq; a replayed one is refused.
    assert!(matches!(
        d.handle_request(&notify("n1", "s1", "sub1@a.example", 2)),
        Ok(DialogUpdate::Updated(_))
    ));
    assert!(matches!(
        d.handle_request(&notify("n1", "s1", "sub1@a.example", 2)),
        Err(DialogError::OutOfOrder { .. })
    ));
    // A refresh SUBSCRIBE is built in the dialog with the next local CSeq.
    let refresh = d
        .request(&id, Method::Subscribe, "SIP/2.0/TLS a.example:5061")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(refresh.cseq().unwrap().seq(), 2);
    assert_eq!(refresh.request_uri_bytes(), Some(&b"sip:bob@192.0.2.1"[..]));
}

#[test]
fn subscription_2xx_creates_a_dialog_and_notify_of_another_subscription_is_refused() {
    let mut d = dialogs();
    let sub = parse(SUBSCRIBE);
    let ok = parse(
        &SUBSCRIBE
            .replace(
                "SUBSCRIBE sip:bob@b.example SIP/2.0",
                "SIP/2.0 202 Accepted",
            )
            .replace("To: <sip:bob@b.example>", "To: <sip:bob@b.example>;tag=n7"),
    );
    let id = confirmed(d.handle_uac_response(&sub, &ok).unwrap());
    assert_eq!(id.remote_tag(), b"n7");
    // A failure creates nothing.
    let mut d2 = dialogs();
    let busy = parse(&SUBSCRIBE.replace(
        "SUBSCRIBE sip:bob@b.example SIP/2.0",
        "SIP/2.0 489 Bad Event",
    ));
    assert_eq!(
        d2.handle_uac_response(&sub, &busy),
        Ok(DialogUpdate::Unchanged)
    );
    assert!(d2.is_empty());
    // A NOTIFY with another Call-ID or To tag does not belong to this SUBSCRIBE.
    assert_eq!(
        d2.handle_notify(&sub, &notify("n1", "other", "sub1@a.example", 1)),
        Err(DialogError::NoDialog)
    );
    assert_eq!(
        d2.handle_notify(&sub, &notify("n1", "s1", "other@a.example", 1)),
        Err(DialogError::NoDialog)
    );
}

#[test]
fn the_notifier_gets_its_dialog_from_the_2xx_it_sends() {
    let mut d = dialogs();
    let sub = parse(SUBSCRIBE);
    let mut ok = parse(&SUBSCRIBE.replace("SUBSCRIBE sip:bob@b.example SIP/2.0", "SIP/2.0 200 OK"));
    ok.set_to_tag("n9").unwrap();
    let id = confirmed(d.handle_uas_response(&sub, &ok).unwrap());
    assert_eq!(id.local_tag(), b"n9");
    assert_eq!(id.remote_tag(), b"s1");
    assert_eq!(d.get(&id).unwrap().role(), DialogRole::Uas);
    // The NOTIFY goes to the subscriber's Contact with the next local CSeq.
    let notify = d
        .request(&id, Method::Notify, "SIP/2.0/TLS b.example:5061")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(
        notify.request_uri_bytes(),
        Some(&b"sip:alice@192.0.2.9;transport=tls"[..])
    );
    assert_eq!(notify.cseq().unwrap().seq(), 1);
    // A failure makes none.
    let mut d2 = dialogs();
    let mut no = parse(&SUBSCRIBE.replace(
        "SUBSCRIBE sip:bob@b.example SIP/2.0",
        "SIP/2.0 403 Forbidden",
    ));
    no.set_to_tag("n9").unwrap();
    assert_eq!(
        d2.handle_uas_response(&sub, &no),
        Ok(DialogUpdate::Unchanged)
    );
}

/// A response to INVITE without a To tag (an RFC 2543 UAS).
fn untagged(status: u16) -> SipMessage {
    let r = resp(status, "gone", "sip:bob@192.0.2.1", &[]).to_bytes();
    parse(
        &String::from_utf8_lossy(&r)
            .replace(";tag=gone", "")
            .replace("\r\n", "\n"),
    )
}

#[test]
fn a_2xx_without_to_tag_makes_a_dialog_with_a_null_remote_tag() {
    // §12.1.2: "A UAC MUST be prepared to receive a response without a tag in the To
    // field, in which case the tag is considered to have a value of null" (RFC 2543 peers).
    let mut d = dialogs();
    let inv = parse(INVITE);
    // A provisional response without a tag makes no early dialog (§12.1).
    assert_eq!(
        d.handle_uac_response(&inv, &untagged(180)),
        Ok(DialogUpdate::Unchanged)
    );
    let id = confirmed(d.handle_uac_response(&inv, &untagged(200)).unwrap());
    assert_eq!(id.remote_tag(), b"");
    assert_eq!(d.get(&id).unwrap().remote_target(), b"sip:bob@192.0.2.1");
    // Its retransmission confirms the same dialog (the UAC ACKs each).
    assert_eq!(
        confirmed(d.handle_uac_response(&inv, &untagged(200)).unwrap()),
        id
    );
    let ack = d.ack(&id, 10, "SIP/2.0/TLS a.example:5061").unwrap();
    assert_eq!(ack.to().unwrap().tag(), None);
    // The peer's requests (From without tag) find it.
    let info = parse(
        "INFO sip:alice@192.0.2.9 SIP/2.0\nVia: SIP/2.0/TLS b.example;branch=z9hG4bKp1\n\
         From: <sip:bob@b.example>\nTo: <sip:alice@a.example>;tag=a1\nCall-ID: c1@a.example\n\
         CSeq: 1 INFO\nContent-Length: 0\n\n",
    );
    assert_eq!(
        d.handle_request(&info),
        Ok(DialogUpdate::Updated(id.clone()))
    );
    // Our requests in it carry no To tag, and their responses still speak of the dialog:
    // the final response to BYE ends it.
    let bye = d
        .request(
            &id,
            Method::Bye,
            "SIP/2.0/TLS a.example:5061;branch=z9hG4bKb",
        )
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(bye.to().unwrap().tag(), None);
    let ok = SipMessage::response_to(&bye, 200, "OK").unwrap();
    assert_eq!(
        d.handle_uac_response(&bye, &ok),
        Ok(DialogUpdate::Terminated(vec![id.clone()]))
    );
    assert!(d.is_empty());
}

#[test]
fn the_secure_flag_follows_a_sips_request_uri_on_both_sides() {
    // §12.1.1 and §12.1.2: secure when the Request-URI is sips (which needs TLS on the way).
    let sips = INVITE.replace("INVITE sip:bob@b.example", "INVITE sips:bob@b.example");
    for (request, secure) in [(parse(&sips), true), (parse(INVITE), false)] {
        let mut d = dialogs();
        let uac = confirmed(
            d.handle_uac_response(&request, &resp(200, "b1", "sips:bob@192.0.2.1", &[]))
                .unwrap(),
        );
        assert_eq!(d.get(&uac).unwrap().is_secure(), secure);
        let mut ok = SipMessage::response_to(&request, 200, "OK").unwrap();
        ok.set_to_tag("uas").unwrap();
        let uas = confirmed(d.handle_uas_response(&request, &ok).unwrap());
        assert_eq!(d.get(&uas).unwrap().is_secure(), secure);
    }
}

#[test]
fn an_empty_remote_cseq_takes_the_first_request_of_the_peer() {
    // §12.2.2: the UAC's dialog has no remote sequence number; the peer's first request
    // sets it, whatever its value (its CSeq space is its own), and the next must be above.
    let mut d = dialogs();
    let inv = parse(INVITE);
    let id = confirmed(
        d.handle_uac_response(&inv, &resp(200, "b1", "sip:bob@192.0.2.1", &[]))
            .unwrap(),
    );
    assert_eq!(d.get(&id).unwrap().remote_seq(), None);
    let from_peer = |method: &str, seq: u32| {
        parse(&format!(
            "{method} sip:alice@192.0.2.9 SIP/2.0\nVia: SIP/2.0/TLS b.example;branch=z9hG4bKp{seq}\n\
             From: <sip:bob@b.example>;tag=b1\nTo: <sip:alice@a.example>;tag=a1\n\
             Call-ID: c1@a.example\nCSeq: {seq} {method}\nContent-Length: 0\n\n"
        ))
    };
    assert_eq!(
        d.handle_request(&from_peer("INFO", 3)),
        Ok(DialogUpdate::Updated(id.clone()))
    );
    assert_eq!(d.get(&id).unwrap().remote_seq(), Some(3));
    assert_eq!(
        d.handle_request(&from_peer("INFO", 2)),
        Err(DialogError::OutOfOrder { got: 2, last: 3 })
    );
    assert_eq!(d.get(&id).unwrap().local_seq(), Some(10), "ours is apart");
}

#[test]
fn subscribe_and_notify_refresh_the_remote_target() {
    // RFC 6665: both are target refresh requests, as requests and by their 2xx.
    let mut d = dialogs();
    let sub = parse(SUBSCRIBE);
    let id = confirmed(
        d.handle_notify(&sub, &notify("n1", "s1", "sub1@a.example", 1))
            .unwrap(),
    );
    assert_eq!(d.get(&id).unwrap().remote_target(), b"sip:bob@192.0.2.1");
    // A NOTIFY from a notifier that moved.
    let moved = parse(
        &String::from_utf8_lossy(&notify("n1", "s1", "sub1@a.example", 2).to_bytes())
            .replace(
                "Contact: <sip:bob@192.0.2.1>",
                "Contact: <sip:bob@198.51.100.20>",
            )
            .replace("\r\n", "\n"),
    );
    assert!(matches!(
        d.handle_request(&moved),
        Ok(DialogUpdate::Updated(_))
    ));
    assert_eq!(
        d.get(&id).unwrap().remote_target(),
        b"sip:bob@198.51.100.20"
    );
    // A refresh SUBSCRIBE goes there, and its 2xx moves the target again.
    let refresh = d
        .request(
            &id,
            Method::Subscribe,
            "SIP/2.0/TLS a.example:5061;branch=z9hG4bKr1",
        )
        .unwrap()
        .header("Contact", "<sip:alice@192.0.2.9>")
        .build()
        .unwrap();
    assert_eq!(
        refresh.request_uri_bytes(),
        Some(&b"sip:bob@198.51.100.20"[..])
    );
    let mut ok = SipMessage::response_to(&refresh, 200, "OK").unwrap();
    ok.push_header("Contact", "<sip:bob@203.0.113.30>").unwrap();
    let ok = parse(&String::from_utf8_lossy(&ok.to_bytes()).replace("\r\n", "\n"));
    let refresh = parse(&String::from_utf8_lossy(&refresh.to_bytes()).replace("\r\n", "\n"));
    assert_eq!(
        d.handle_uac_response(&refresh, &ok),
        Ok(DialogUpdate::Updated(id.clone()))
    );
    assert_eq!(d.get(&id).unwrap().remote_target(), b"sip:bob@203.0.113.30");
    // An INFO does not move it.
    let info = parse(
        &String::from_utf8_lossy(&notify("n1", "s1", "sub1@a.example", 3).to_bytes())
            .replace("NOTIFY", "INFO")
            .replace(
                "Contact: <sip:bob@192.0.2.1>",
                "Contact: <sip:bob@192.0.2.99>",
            )
            .replace("\r\n", "\n"),
    );
    d.handle_request(&info).unwrap();
    assert_eq!(d.get(&id).unwrap().remote_target(), b"sip:bob@203.0.113.30");
}

#[test]
fn a_remote_target_with_uri_headers_still_takes_in_dialog_requests() {
    // A Contact may carry URI headers (RFC 3261 §19.1.1); a Request-URI may not. The peer
    // that sent one must still get our BYE, its Request-URI the target less the headers.
    let mut d = dialogs();
    let inv = parse(INVITE);
    let ok = resp(
        200,
        "b1",
        "sip:bob@192.0.2.1;transport=tls?Subject=hi&Priority=urgent",
        &[],
    );
    let id = confirmed(d.handle_uac_response(&inv, &ok).unwrap());
    let bye = d
        .request(&id, Method::Bye, "SIP/2.0/TLS a.example:5061")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(
        bye.request_uri_bytes(),
        Some(&b"sip:bob@192.0.2.1;transport=tls"[..])
    );
    // The headers are not applied either: a peer does not get to write our requests.
    assert_eq!(bye.header(HeaderName::Subject), None);
    assert_eq!(bye.header(HeaderName::Priority), None);
    let ack = d.ack(&id, 10, "SIP/2.0/TLS a.example:5061").unwrap();
    assert_eq!(
        ack.request_uri_bytes(),
        Some(&b"sip:bob@192.0.2.1;transport=tls"[..])
    );
}

#[test]
fn a_target_refresh_to_a_contact_with_uri_headers_keeps_the_headers_out() {
    let mut d = dialogs();
    let id = uas_dialog(&mut d, &[]);
    let tag = String::from_utf8(id.local_tag().to_vec()).unwrap();
    let re = in_dialog(
        "INVITE",
        11,
        &tag,
        "sip:alice@198.51.100.7?Route=%3Csip:evil.example%3E",
    );
    assert_eq!(d.handle_request(&re), Ok(DialogUpdate::Updated(id.clone())));
    assert_eq!(
        d.get(&id).unwrap().remote_target(),
        b"sip:alice@198.51.100.7"
    );
    let bye = d
        .request(&id, Method::Bye, "SIP/2.0/TLS b.example:5061")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(
        bye.request_uri_bytes(),
        Some(&b"sip:alice@198.51.100.7"[..])
    );
    assert_eq!(bye.header(HeaderName::Route), None);
}

#[test]
fn a_2xx_with_a_malformed_record_route_makes_a_dialog_only_to_end() {
    let mut d = dialogs();
    let inv = parse(INVITE);
    let ok = resp(200, "b1", "sip:bob@192.0.2.1", &["<sip:p1.example;lr"]);
    assert!(matches!(
        d.handle_uac_response(&inv, &ok),
        Err(DialogError::Message(_))
    ));
    assert!(d.is_empty());
    // Not for anything but a 2xx to an INVITE.
    let ringing = resp(180, "b1", "sip:bob@192.0.2.1", &["<sip:p1.example;lr"]);
    assert_eq!(d.confirm_to_end(&inv, &ringing), Err(DialogError::NoDialog));
    let id = d.confirm_to_end(&inv, &ok).unwrap();
    assert_eq!(d.get(&id).unwrap().state(), DialogState::Confirmed);
    assert_eq!(d.get(&id).unwrap().route_set().count(), 0);
    let ack = d.ack(&id, 10, "SIP/2.0/TLS a.example:5061").unwrap();
    assert_eq!(ack.request_uri_bytes(), Some(&b"sip:bob@192.0.2.1"[..]));
    assert_eq!(ack.header(HeaderName::Route), None);
    let bye = d
        .request(&id, Method::Bye, "SIP/2.0/TLS a.example:5061")
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(bye.cseq().unwrap().seq(), 11);
}
