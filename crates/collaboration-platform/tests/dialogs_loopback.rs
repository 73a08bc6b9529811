//! Dialogs through the platform, between two platforms on loopback over mutual TLS
//! (`loopback::pair`): INVITE/200/ACK, MESSAGE both ways inside the dialog, BYE, 481 for a
//! dialog the far side forgot, a dialog lost to 408 or to no answer (ended with BYE),
//! CANCEL while ringing, BYE during a graceful shutdown. A raw UDP caller checks the
//! callee's 2xx retransmission and BYE without ACK; a forking proxy played over TCP checks
//! the caller's handling of several forks.

use std::time::Duration;

use collaboration_platform::loopback::{pair, LoopbackPki};
use collaboration_platform::{
    CollaborationPlatform, DialogEndReason, DialogId, EndpointId, IncomingRequest, InviteProgress,
    OutgoingRequest, RequestError, Topology, WireDirection, WireLog,
};
use sip_core::transaction::TransactionConfig;
use sip_core::{HeaderName, Method};
use tokio::sync::mpsc;

mod support;
use support::scripted_proxy::ScriptedProxy;
use support::{endpoint, header, next, WAIT};

async fn platforms() -> (CollaborationPlatform, CollaborationPlatform) {
    platforms_with(TransactionConfig::default()).await
}

/// With these transaction timers on the app's platform (bob's keeps RFC 3261's).
async fn platforms_with(app: TransactionConfig) -> (CollaborationPlatform, CollaborationPlatform) {
    let pki = LoopbackPki::new().expect("CA");
    pair(&pki, "app.contoso.test", "bob.contoso.test", |fqdn, s| {
        let s = s.topology(Topology::new(["contoso.test"]));
        if fqdn == "app.contoso.test" {
            s.transaction_timers(app)
        } else {
            s
        }
    })
    .await
    .expect("platforms")
}

fn invite(a: &CollaborationPlatform) -> OutgoingRequest {
    OutgoingRequest::new(Method::Invite, "sip:bob@contoso.test")
        .from("<sip:app@contoso.test>")
        .header("Contact", format!("<{}>", a.contact_uri("app").unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invite_ack_messages_both_ways_and_bye() {
    let (a, b) = platforms().await;
    let (app, mut app_rx) = endpoint(&a, "app").await;
    let (_bob, mut bob_rx) = endpoint(&b, "bob").await;
    let b2 = b.clone();
    let bob_side = tokio::spawn(async move {
        let mut inv = next(&mut bob_rx).await;
        assert_eq!(inv.request().method(), Some(&Method::Invite));
        let dialog = inv.dialog().expect("an INVITE's answer makes a dialog");
        let contact = format!("<{}>", b2.contact_uri("bob").unwrap());
        inv.respond(180, "Ringing", &[], None).await.unwrap();
        inv.respond(200, "OK", &[("Contact", &contact)], None)
            .await
            .unwrap();
        // A MESSAGE from the caller arrives in the dialog.
        let mut m = next(&mut bob_rx).await;
        assert_eq!(m.request().method(), Some(&Method::Message));
        assert_eq!(m.dialog(), Some(dialog.clone()));
        assert_eq!(&m.body()[..], b"hello bob");
        m.respond(200, "OK", &[], None).await.unwrap();
        // One back, then BYE.
        let r = b2
            .send_in_dialog(
                &dialog,
                OutgoingRequest::new(Method::Message, "").body("text/plain", "hello app"),
            )
            .await
            .expect("MESSAGE in the dialog");
        assert_eq!(r.status(), Some(200));
        let bye = b2
            .send_in_dialog(&dialog, OutgoingRequest::new(Method::Bye, ""))
            .await
            .expect("BYE");
        assert_eq!(bye.status(), Some(200));
        // The dialog is gone on this side.
        assert_dialog_gone(&b2, &dialog).await;
    });

    let mut call = a.invite(app, invite(&a)).await.unwrap();
    let mut saw_ringing = false;
    let dialog = loop {
        match tokio::time::timeout(WAIT, call.next()).await.unwrap() {
            Some(InviteProgress::Provisional(p)) => saw_ringing |= p.status() == Some(180),
            Some(InviteProgress::Answered { response, dialog }) => {
                assert_eq!(response.status(), Some(200));
                break dialog;
            }
            other => panic!("{other:?}"),
        }
    };
    assert!(saw_ringing);
    let r = a
        .send_in_dialog(
            &dialog,
            OutgoingRequest::new(Method::Message, "").body("text/plain", "hello bob"),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), Some(200));
    let mut m = next(&mut app_rx).await;
    assert_eq!(m.dialog(), Some(dialog.clone()));
    assert_eq!(&m.body()[..], b"hello app");
    m.respond(200, "OK", &[], None).await.unwrap();
    let mut bye = next(&mut app_rx).await;
    assert_eq!(bye.request().method(), Some(&Method::Bye));
    bye.respond(200, "OK", &[], None).await.unwrap();
    tokio::time::timeout(WAIT, bob_side).await.unwrap().unwrap();
    // The BYE ended the dialog here too.
    assert_dialog_gone(&a, &dialog).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialog_the_far_side_forgot_gets_481_and_ends_here() {
    let (a, b) = platforms().await;
    let (app, _app_rx) = endpoint(&a, "app").await;
    let (_bob, mut bob_rx) = endpoint(&b, "bob").await;
    let b2 = b.clone();
    tokio::spawn(async move {
        let mut inv = next(&mut bob_rx).await;
        let dialog = inv.dialog().unwrap();
        let contact = format!("<{}>", b2.contact_uri("bob").unwrap());
        inv.respond(200, "OK", &[("Contact", &contact)], None)
            .await
            .unwrap();
        b2.end_dialog(&dialog).await;
    });
    let (_, dialog) = a
        .invite(app, invite(&a))
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    // Give the far side time to forget.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = a
        .send_in_dialog(
            &dialog,
            OutgoingRequest::new(Method::Message, "").body("text/plain", "anyone?"),
        )
        .await;
    assert_eq!(r.as_ref().map_err(RequestError::status).err(), Some(481));
    assert_dialog_gone(&a, &dialog).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_ringing() {
    let (a, b) = platforms().await;
    let (app, _app_rx) = endpoint(&a, "app").await;
    let (_bob, mut bob_rx) = endpoint(&b, "bob").await;
    let (held_tx, mut held_rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut inv = next(&mut bob_rx).await;
        inv.respond(180, "Ringing", &[], None).await.unwrap();
        // Keep the request unanswered until the test ends.
        let _ = held_tx.send(inv).await;
    });
    let mut call = a.invite(app, invite(&a)).await.unwrap();
    match tokio::time::timeout(WAIT, call.next()).await.unwrap() {
        Some(InviteProgress::Provisional(p)) => assert_eq!(p.status(), Some(180)),
        other => panic!("{other:?}"),
    }
    call.cancel().await;
    match tokio::time::timeout(WAIT, call.next()).await.unwrap() {
        Some(InviteProgress::Failed(RequestError::Cancelled)) => {}
        other => panic!("{other:?}"),
    }
    let held = held_rx.recv().await.unwrap();
    assert!(held.request().header(HeaderName::CallId).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_dialog_on_both_sides_with_notify_in_it() {
    let (a, b) = platforms().await;
    let (app, mut app_rx) = endpoint(&a, "app").await;
    let (_bob, mut bob_rx) = endpoint(&b, "bob").await;
    let b2 = b.clone();
    let notifier = tokio::spawn(async move {
        let mut sub = next(&mut bob_rx).await;
        assert_eq!(sub.request().method(), Some(&Method::Subscribe));
        let dialog = sub.dialog().expect("the 2xx makes the notifier's dialog");
        let contact = format!("<{}>", b2.contact_uri("bob").unwrap());
        sub.respond(
            200,
            "OK",
            &[("Contact", &contact), ("Expires", "600")],
            None,
        )
        .await
        .unwrap();
        b2.send_in_dialog(
            &dialog,
            OutgoingRequest::new(Method::Notify, "")
                .header("Event", "presence")
                .header("Subscription-State", "active;expires=600")
                .header("Contact", contact.clone()),
        )
        .await
        .expect("NOTIFY in the subscription's dialog")
    });
    let subscribe = OutgoingRequest::new(Method::Subscribe, "sip:bob@contoso.test")
        .from("<sip:app@contoso.test>")
        .header("Event", "presence")
        .header("Expires", "600")
        .header("Contact", format!("<{}>", a.contact_uri("app").unwrap()));
    let (ok, dialog) = a.subscribe(app, subscribe).await.unwrap();
    assert_eq!(ok.status(), Some(200));
    let mut n = next(&mut app_rx).await;
    assert_eq!(n.request().method(), Some(&Method::Notify));
    assert_eq!(n.dialog(), Some(dialog));
    n.respond(200, "OK", &[], None).await.unwrap();
    let r = tokio::time::timeout(WAIT, notifier).await.unwrap().unwrap();
    assert_eq!(r.status(), Some(200));
}

/// The app's presence SUBSCRIBE to bob.
fn subscribe(a: &CollaborationPlatform) -> OutgoingRequest {
    OutgoingRequest::new(Method::Subscribe, "sip:bob@contoso.test")
        .from("<sip:app@contoso.test>")
        .header("Event", "presence")
        .header("Expires", "600")
        .header("Contact", format!("<{}>", a.contact_uri("app").unwrap()))
}

/// Bob's NOTIFYs in the dialog of the SUBSCRIBE `sub` before answering it (they overtake
/// the 2xx, RFC 6665 §4.1.2.4): `notify(cseq)` builds one.
fn early_notifies(
    b: &CollaborationPlatform,
    sub: &IncomingRequest,
) -> impl Fn(u32) -> OutgoingRequest {
    let r = sub.request();
    let call_id = String::from_utf8_lossy(r.call_id().unwrap()).into_owned();
    let to = String::from_utf8_lossy(r.header(HeaderName::From).unwrap()).into_owned();
    let contact = format!("<{}>", b.contact_uri("bob").unwrap());
    let from = format!("<sip:bob@contoso.test>;tag={}", sub.local_tag());
    move |cseq| {
        OutgoingRequest::new(Method::Notify, "sip:app@contoso.test")
            .from(from.clone())
            .to(to.clone())
            .call_id(call_id.clone())
            .cseq(cseq)
            .header("Event", "presence")
            .header("Subscription-State", "active;expires=600")
            .header("Contact", contact.clone())
    }
}

/// The status a request's outcome carries.
fn status_of(r: Result<sip_core::SipMessage, RequestError>) -> u16 {
    match r {
        Ok(m) => m.status().unwrap_or(0),
        Err(e) => e.status(),
    }
}

/// RFC 6665 §4.1.2.4 with RFC 3261 §8.2: a NOTIFY that would make the subscription's
/// dialog (it overtook the SUBSCRIBE's 2xx) is screened first, and one refused (420 here)
/// makes no dialog, so its CSeq number stays unused: the same NOTIFY without the Require
/// then makes the dialog and reaches the subscriber. The refused NOTIFY used to leave the
/// dialog behind, and the second got 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_refused_before_the_2xx_makes_no_subscription_dialog() {
    let (a, b) = platforms().await;
    let (app, mut app_rx) = endpoint(&a, "app").await;
    let (_bob, mut bob_rx) = endpoint(&b, "bob").await;
    let b2 = b.clone();
    let notifier = tokio::spawn(async move {
        let mut sub = next(&mut bob_rx).await;
        let contact = format!("<{}>", b2.contact_uri("bob").unwrap());
        // The notifier's NOTIFY before its 2xx, CSeq 1, once refused and once taken.
        let notify = early_notifies(&b2, &sub);
        let refused = b2
            .send_request(notify(1).header("Require", "nothingSupportsThis"))
            .await;
        // No usable dialog can come from a Record-Route that is not a name-addr list: 400
        // (it used to make none and get 481, as if the subscription were unknown).
        let bad_route = b2
            .send_request(notify(1).header("Record-Route", "<sip:edge.contoso.test;lr"))
            .await;
        let taken = b2.send_request(notify(1)).await;
        sub.respond(
            200,
            "OK",
            &[("Contact", &contact), ("Expires", "600")],
            None,
        )
        .await
        .unwrap();
        (status_of(refused), status_of(bad_route), status_of(taken))
    });
    // The app takes every NOTIFY that reaches it.
    let taker = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(mut n) = app_rx.recv().await {
            seen.push((n.request().method().cloned(), n.dialog()));
            n.respond(200, "OK", &[], None).await.unwrap();
        }
        seen
    });
    let subscribed = tokio::time::timeout(WAIT, a.subscribe(app, subscribe(&a))).await;
    let statuses = tokio::time::timeout(WAIT, notifier).await.unwrap().unwrap();
    assert_eq!(statuses, (420, 400, 200), "a refused NOTIFY used up CSeq 1");
    let (ok, dialog) = subscribed.unwrap().unwrap();
    assert_eq!(ok.status(), Some(200));
    a.shutdown().await;
    let seen = taker.await.unwrap();
    assert_eq!(seen, [(Some(Method::Notify), Some(dialog))]);
}

/// A NOTIFY that overtakes its SUBSCRIBE's final response makes the subscription's dialog
/// (RFC 6665 §4.1.2.4); when that final response is then a failure, no subscription exists
/// (§4.1.2.1) and the dialog goes with it: the notifier's next NOTIFY in it gets 481. The
/// dialog used to stay for the platform's life, taking NOTIFYs for a subscription its
/// subscriber was told had failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscribe_refused_after_its_notify_leaves_no_dialog() {
    let (a, b) = platforms().await;
    let (app, mut app_rx) = endpoint(&a, "app").await;
    let (_bob, mut bob_rx) = endpoint(&b, "bob").await;
    let b2 = b.clone();
    // The second NOTIFY waits until the subscriber has the 403: it would go on another
    // connection than the 403 and could overtake it.
    let (refused_tx, refused_rx) = tokio::sync::oneshot::channel::<()>();
    let notifier = tokio::spawn(async move {
        let mut sub = next(&mut bob_rx).await;
        let notify = early_notifies(&b2, &sub);
        let before = b2.send_request(notify(1)).await;
        sub.respond(403, "Forbidden", &[], None).await.unwrap();
        refused_rx.await.unwrap();
        let after = b2.send_request(notify(2)).await;
        (status_of(before), status_of(after))
    });
    let taker = tokio::spawn(async move {
        while let Some(mut n) = app_rx.recv().await {
            n.respond(200, "OK", &[], None).await.unwrap();
        }
    });
    let subscribed = tokio::time::timeout(WAIT, a.subscribe(app, subscribe(&a)))
        .await
        .unwrap();
    assert_eq!(subscribed.err().map(|e| e.status()), Some(403));
    refused_tx.send(()).unwrap();
    let statuses = tokio::time::timeout(WAIT, notifier).await.unwrap().unwrap();
    assert_eq!(
        statuses,
        (200, 481),
        "the refused subscription's dialog stayed"
    );
    a.shutdown().await;
    taker.await.unwrap();
}

/// The app calls bob (bob answers 200); returns the dialog as each side names it, and
/// bob's requests.
async fn call_bob(
    a: &CollaborationPlatform,
    b: &CollaborationPlatform,
) -> (DialogId, DialogId, mpsc::Receiver<IncomingRequest>) {
    let contact = format!("<{}>", b.contact_uri("bob").unwrap());
    let (dialog, bobs, _app_rx, bob_rx) = call_bob_answering(a, b, contact).await;
    (dialog, bobs, bob_rx)
}

/// [`call_bob`], bob's 200 carrying `contact`; also gives the app endpoint's requests.
async fn call_bob_answering(
    a: &CollaborationPlatform,
    b: &CollaborationPlatform,
    contact: String,
) -> (
    DialogId,
    DialogId,
    mpsc::Receiver<IncomingRequest>,
    mpsc::Receiver<IncomingRequest>,
) {
    let (app, app_rx) = endpoint(a, "app").await;
    let (_bob, mut bob_rx) = endpoint(b, "bob").await;
    let answering = tokio::spawn(async move {
        let mut inv = next(&mut bob_rx).await;
        let dialog = inv.dialog().unwrap();
        inv.respond(200, "OK", &[("Contact", &contact)], None)
            .await
            .unwrap();
        (dialog, bob_rx)
    });
    let (_, dialog) = a
        .invite(app, invite(a))
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    let (bobs, bob_rx) = tokio::time::timeout(WAIT, answering)
        .await
        .unwrap()
        .unwrap();
    (dialog, bobs, app_rx, bob_rx)
}

/// The callee's re-INVITE sent without a Contact carries the Contact of the callee's own
/// 2xx: the local target its application chose for the dialog (RFC 3261 §12.2.1.1), not
/// a default of its endpoint. It used to carry none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callees_re_invite_without_a_contact_carries_that_of_its_2xx() {
    let (a, b) = platforms().await;
    let contact = format!("<{};agent=7>", b.contact_uri("bob").unwrap());
    let (dialog, bobs, mut app_rx, _bob_rx) = call_bob_answering(&a, &b, contact.clone()).await;
    let b2 = b.clone();
    let reinvite = tokio::spawn(async move {
        b2.send_in_dialog(&bobs, OutgoingRequest::new(Method::Invite, ""))
            .await
    });
    let mut r = next(&mut app_rx).await;
    assert_eq!(r.request().method(), Some(&Method::Invite));
    assert_eq!(r.dialog(), Some(dialog));
    assert_eq!(
        r.request().header(HeaderName::Contact),
        Some(contact.as_bytes()),
        "{}",
        r.request()
    );
    let ours = format!("<{}>", a.contact_uri("app").unwrap());
    r.respond(200, "OK", &[("Contact", &ours)], None)
        .await
        .unwrap();
    let ok = tokio::time::timeout(WAIT, reinvite)
        .await
        .unwrap()
        .unwrap()
        .expect("the re-INVITE's 2xx");
    assert_eq!(ok.status(), Some(200));
}

/// Bob answers 481 to a request in the dialog (he no longer knows it): his platform ends
/// the dialog too, instead of keeping it for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_answers_481_in_a_dialog_ends_it_on_its_platform() {
    let (a, b) = platforms().await;
    let (dialog, bobs, mut bob_rx) = call_bob(&a, &b).await;
    let (sent, ()) = tokio::join!(
        a.send_in_dialog(
            &dialog,
            OutgoingRequest::new(Method::Message, "").body("text/plain", "still there?"),
        ),
        async {
            let mut m = next(&mut bob_rx).await;
            assert_eq!(m.request().method(), Some(&Method::Message));
            m.respond(481, "Call/Transaction Does Not Exist", &[], None)
                .await
                .unwrap();
        }
    );
    assert_eq!(sent.as_ref().map_err(RequestError::status).err(), Some(481));
    assert_dialog_gone(&a, &dialog).await;
    assert_dialog_gone(&b, &bobs).await;
}

/// The next request bob gets is a BYE in `dialog` (bob's name of it); bob answers it.
async fn bob_gets_bye(bob_rx: &mut mpsc::Receiver<IncomingRequest>, dialog: &DialogId) {
    let mut bye = next(bob_rx).await;
    assert_eq!(bye.request().method(), Some(&Method::Bye));
    assert_eq!(bye.dialog().as_ref(), Some(dialog));
    bye.respond(200, "OK", &[], None).await.unwrap();
}

/// A MESSAGE in the dialog that bob never answers: Timer F (64·T1, T1 = 50 ms here) ends
/// the transaction, and with it the dialog (RFC 3261 §12.2.1.2): the app's platform sends
/// bob a BYE and refuses further requests in the dialog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_a_dialog_nobody_answers_ends_it_with_a_bye() {
    let timers = TransactionConfig {
        t1: Duration::from_millis(50),
        ..TransactionConfig::default()
    };
    let (a, b) = platforms_with(timers).await;
    let (dialog, bobs, mut bob_rx) = call_bob(&a, &b).await;
    let (sent, held) = tokio::join!(
        a.send_in_dialog(
            &dialog,
            OutgoingRequest::new(Method::Message, "").body("text/plain", "anyone?"),
        ),
        async {
            // Bob holds the MESSAGE unanswered until the BYE has come.
            let held = next(&mut bob_rx).await;
            assert_eq!(held.request().method(), Some(&Method::Message));
            bob_gets_bye(&mut bob_rx, &bobs).await;
            held
        }
    );
    assert!(matches!(sent, Err(RequestError::Timeout)), "{sent:?}");
    drop(held);
    assert_dialog_gone(&a, &dialog).await;
}

/// A 408 to a request in the dialog ends it as no answer does: BYE, then 481 here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_408_in_a_dialog_ends_it_with_a_bye() {
    let (a, b) = platforms().await;
    let (dialog, bobs, mut bob_rx) = call_bob(&a, &b).await;
    let (sent, ()) = tokio::join!(
        a.send_in_dialog(
            &dialog,
            OutgoingRequest::new(Method::Message, "").body("text/plain", "anyone?"),
        ),
        async {
            let mut m = next(&mut bob_rx).await;
            assert_eq!(m.request().method(), Some(&Method::Message));
            m.respond(408, "Request Timeout", &[], None).await.unwrap();
            bob_gets_bye(&mut bob_rx, &bobs).await;
        }
    );
    assert_eq!(sent.as_ref().map_err(RequestError::status).err(), Some(408));
    assert_dialog_gone(&a, &dialog).await;
}

/// `dialog` is gone at `platform`: a request in it fails without being sent.
async fn assert_dialog_gone(platform: &CollaborationPlatform, dialog: &DialogId) {
    let r = platform
        .send_in_dialog(dialog, OutgoingRequest::new(Method::Message, ""))
        .await;
    assert!(matches!(r, Err(RequestError::NoDialog)), "{r:?}");
}

/// A call from `app` on `a` to `bob` on `b`: the dialog on each side.
async fn call(
    a: &CollaborationPlatform,
    app: EndpointId,
    b: &CollaborationPlatform,
    bob_rx: &mut mpsc::Receiver<IncomingRequest>,
) -> (sip_core::DialogId, sip_core::DialogId) {
    let mut outgoing = a.invite(app, invite(a)).await.unwrap();
    let mut inv = next(bob_rx).await;
    let bob_dialog = inv.dialog().unwrap();
    let contact = format!("<{}>", b.contact_uri("bob").unwrap());
    inv.respond(200, "OK", &[("Contact", &contact)], None)
        .await
        .unwrap();
    let app_dialog = loop {
        match tokio::time::timeout(WAIT, outgoing.next()).await.unwrap() {
            Some(InviteProgress::Provisional(_)) => {}
            Some(InviteProgress::Answered { dialog, .. }) => break dialog,
            other => panic!("{other:?}"),
        }
    };
    (app_dialog, bob_dialog)
}

/// Waits until `p` has begun to shut down: a new request is refused. Each try is a real
/// round trip (answered by the far platform itself), not a sleep.
async fn until_stopping(p: &CollaborationPlatform) {
    loop {
        match p
            .send_request(OutgoingRequest::options("sip:bob@contoso.test"))
            .await
        {
            Err(RequestError::Shutdown) => return,
            Ok(_) => tokio::task::yield_now().await,
            Err(e) => panic!("{e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_can_end_with_bye_both_ways_during_a_graceful_shutdown() {
    let (a, b) = platforms().await;
    let (app, mut app_rx) = endpoint(&a, "app").await;
    let (_bob, mut bob_rx) = endpoint(&b, "bob").await;
    let (app_d1, _) = call(&a, app, &b, &mut bob_rx).await;
    let (_, bob_d2) = call(&a, app, &b, &mut bob_rx).await;
    // A request bob holds unanswered keeps `a` in its grace period.
    let a2 = a.clone();
    let held = tokio::spawn(async move {
        a2.send_request(OutgoingRequest::message("sip:bob@contoso.test", "wait"))
            .await
    });
    let mut held_msg = next(&mut bob_rx).await;
    let a3 = a.clone();
    let stopping = tokio::spawn(async move { a3.shutdown_within(WAIT).await });
    until_stopping(&a).await;

    // The stopping side ends its call.
    let b_side = tokio::spawn(async move {
        let mut bye = next(&mut bob_rx).await;
        assert_eq!(bye.request().method(), Some(&Method::Bye));
        bye.respond(200, "OK", &[], None).await.unwrap();
        bob_rx
    });
    let r = a
        .send_in_dialog(&app_d1, OutgoingRequest::new(Method::Bye, ""))
        .await
        .expect("BYE sent while stopping");
    assert_eq!(r.status(), Some(200));
    // Kept open: bob's endpoint stays registered until the end.
    let bob_rx = tokio::time::timeout(WAIT, b_side).await.unwrap().unwrap();

    // The far side ends the other call: the BYE reaches the endpoint, not a 503.
    let b2 = b.clone();
    let far_bye = tokio::spawn(async move {
        b2.send_in_dialog(&bob_d2, OutgoingRequest::new(Method::Bye, ""))
            .await
    });
    let mut bye = next(&mut app_rx).await;
    assert_eq!(bye.request().method(), Some(&Method::Bye));
    bye.respond(200, "OK", &[], None).await.unwrap();
    let r = tokio::time::timeout(WAIT, far_bye).await.unwrap().unwrap();
    assert_eq!(r.map(|m| m.status()).ok(), Some(Some(200)));

    // New work is still refused, and the shutdown ends once the held request is answered.
    let r = a
        .send_in_dialog(&app_d1, OutgoingRequest::new(Method::Message, ""))
        .await;
    assert!(
        matches!(r, Err(RequestError::Shutdown) | Err(RequestError::NoDialog)),
        "{r:?}"
    );
    held_msg.respond(200, "OK", &[], None).await.unwrap();
    let held = tokio::time::timeout(WAIT, held).await.unwrap().unwrap();
    assert_eq!(held.map(|m| m.status()).ok(), Some(Some(200)));
    let report = tokio::time::timeout(WAIT, stopping).await.unwrap().unwrap();
    assert_eq!(report.cancelled, 0);
    drop(bob_rx);
}

/// Transaction timers with this T1 (T2 = 4·T1): Timer F and B, and the wait for the ACK
/// of a 2xx, are 64·T1.
fn timers_with_t1(t1: Duration) -> TransactionConfig {
    TransactionConfig {
        t1,
        t2: t1 * 4,
        ..Default::default()
    }
}

/// Two platforms, app's with T1 = `app_t1` and bob's with T1 = `bob_t1`. A short T1 makes
/// a timer the test waits for fire soon; a longer one keeps a timer the test does not wait
/// for (bob's wait for an ACK) from firing should the test be slowed down.
async fn quick_platforms(
    app_t1: Duration,
    bob_t1: Duration,
) -> (CollaborationPlatform, CollaborationPlatform) {
    let pki = LoopbackPki::new().expect("CA");
    pair(&pki, "app.contoso.test", "bob.contoso.test", |me, s| {
        let t1 = if me == "app.contoso.test" {
            app_t1
        } else {
            bob_t1
        };
        s.topology(Topology::new(["contoso.test"]))
            .transaction_timers(timers_with_t1(t1))
    })
    .await
    .expect("platforms")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_a_dialog_that_gets_no_response_ends_the_dialog() {
    // App's Timer F (64·T1 = 640 ms) is what is waited for; bob's wait for the call's ACK
    // (64·T1 = 3.2 s) must not end the call first, however slow the test runs.
    let (a, b) = quick_platforms(Duration::from_millis(10), Duration::from_millis(50)).await;
    let (app, _app_rx) = endpoint(&a, "app").await;
    let (_bob, mut bob_rx) = endpoint(&b, "bob").await;
    let (dialog, _) = call(&a, app, &b, &mut bob_rx).await;
    // Bob's side takes the request and never answers it (held until the test ends).
    let held = tokio::spawn(async move {
        let m = next(&mut bob_rx).await;
        (m, bob_rx)
    });
    let r = a
        .send_in_dialog(&dialog, OutgoingRequest::new(Method::Info, ""))
        .await;
    assert!(matches!(r, Err(RequestError::Timeout)), "{r:?}");
    // RFC 3261 §12.2.1.2: no response at all ends the dialog, as a 408 does.
    let r = a
        .send_in_dialog(&dialog, OutgoingRequest::new(Method::Info, ""))
        .await;
    assert!(matches!(r, Err(RequestError::NoDialog)), "{r:?}");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_invite_ends_the_early_dialog_its_ringing_made() {
    let (a, b) = platforms().await;
    let (app, _app_rx) = endpoint(&a, "app").await;
    let (_bob, mut bob_rx) = endpoint(&b, "bob").await;
    let (early_tx, mut early_rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut inv = next(&mut bob_rx).await;
        // 180 with bob's tag: an early dialog on both sides.
        inv.respond(180, "Ringing", &[], None).await.unwrap();
        let _ = early_tx.send((inv.dialog().unwrap(), inv)).await;
    });
    let mut call = a.invite(app, invite(&a)).await.unwrap();
    // A 100 may come first: bob's platform sends one when its endpoint is slow to answer
    // (RFC 3261 §17.2.1), as in a slowed-down run.
    loop {
        match tokio::time::timeout(WAIT, call.next()).await.unwrap() {
            Some(InviteProgress::Provisional(p)) if p.status() == Some(100) => {}
            Some(InviteProgress::Provisional(p)) => {
                assert_eq!(p.status(), Some(180));
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    let (early, inv) = early_rx.recv().await.unwrap();
    call.cancel().await;
    match tokio::time::timeout(WAIT, call.next()).await.unwrap() {
        Some(InviteProgress::Failed(RequestError::Cancelled)) => {}
        other => panic!("{other:?}"),
    }
    assert!(inv.is_cancelled());
    // The 487 ended bob's early dialog (RFC 3261 §12.3): nothing can be sent in it.
    let r = b
        .send_in_dialog(&early, OutgoingRequest::new(Method::Info, ""))
        .await;
    assert!(matches!(r, Err(RequestError::NoDialog)), "{r:?}");
}

/// `bob` on a platform with T1 = 10 ms (or as given) that also listens on UDP for anyone,
/// a raw UDP caller, and what bob's platform sent and received (`wire`).
struct UdpCallee {
    _a: CollaborationPlatform,
    b: CollaborationPlatform,
    bob_rx: mpsc::Receiver<IncomingRequest>,
    _bob: EndpointId,
    wire: WireLog,
    socket: tokio::net::UdpSocket,
    b_udp: std::net::SocketAddr,
}

async fn udp_callee() -> UdpCallee {
    udp_callee_with_t1(Duration::from_millis(10)).await
}

/// [`udp_callee`] with bob's T1 = `t1` (T2 = 4·T1): a test that does not wait for the
/// 64·T1 of an ACK takes a longer one, so that a slow run does not see it fire.
async fn udp_callee_with_t1(t1: Duration) -> UdpCallee {
    let pki = LoopbackPki::new().expect("CA");
    let wire = WireLog::new();
    let tap = wire.as_observer();
    let timers = timers_with_t1(t1);
    let (a, b) = pair(&pki, "app.contoso.test", "bob.contoso.test", |me, s| {
        let s = s
            .topology(Topology::new(["contoso.test"]))
            .transaction_timers(timers);
        if me == "bob.contoso.test" {
            s.listen(
                collaboration_platform::Listener::udp("127.0.0.1:0".parse().unwrap())
                    .allow_untrusted_peers(),
            )
            .observer(tap.clone())
        } else {
            s
        }
    })
    .await
    .expect("platforms");
    let b_udp = b
        .listen_addr(collaboration_platform::ListenerKind::Udp)
        .expect("a UDP listener");
    let (bob, bob_rx) = endpoint(&b, "bob").await;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    UdpCallee {
        _a: a,
        b,
        bob_rx,
        _bob: bob,
        wire,
        socket,
        b_udp,
    }
}

impl UdpCallee {
    /// The first `method` request bob's platform sent whose text contains `with`
    /// (waiting for it).
    async fn sent_request(&self, method: &str, with: &str) -> String {
        let found = self
            .wire
            .wait_for(|r| r.is_sent_request(method) && r.text().contains(with));
        let r = tokio::time::timeout(WAIT, found)
            .await
            .unwrap_or_else(|_| panic!("no {method} with {with:?} sent within the wait"));
        r.text().into_owned()
    }

    /// Whether bob's platform sent a `method` request whose text contains `with`.
    fn sent_any(&self, method: &str, with: &str) -> bool {
        !self
            .wire
            .matching(|r| r.is_sent_request(method) && r.text().contains(with))
            .is_empty()
    }

    async fn send(&self, text: String) {
        self.socket
            .send_to(text.as_bytes(), self.b_udp)
            .await
            .unwrap();
    }

    /// The next final response to arrive on the socket.
    async fn final_response(&self) -> String {
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, _) = tokio::time::timeout(WAIT, self.socket.recv_from(&mut buf))
                .await
                .expect("a response within the wait")
                .unwrap();
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !text.starts_with("SIP/2.0 1") {
                return text;
            }
        }
    }

    /// Sends an INVITE for bob with this Call-ID and branch.
    async fn send_invite(&self, call_id: &str, branch: &str) {
        let me = self.socket.local_addr().unwrap();
        self.send(format!(
            "INVITE sip:bob@contoso.test SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bK-{branch}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:carol@contoso.test>;tag=c1\r\n\
             To: <sip:bob@contoso.test>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 INVITE\r\n\
             Contact: <sip:carol@{me}>\r\n\
             Content-Length: 0\r\n\r\n"
        ))
        .await;
    }

    /// ACKs `ok`, the 200 to the INVITE with this Call-ID.
    async fn ack(&self, ok: &str, call_id: &str) {
        let me = self.socket.local_addr().unwrap();
        let to = header(ok, "To").to_string();
        self.send(format!(
            "ACK sip:bob@127.0.0.1 SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch=z9hG4bK-{call_id}-ack\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:carol@contoso.test>;tag=c1\r\n\
             To: {to}\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 ACK\r\n\
             Content-Length: 0\r\n\r\n"
        ))
        .await;
    }

    /// Sends an INVITE, lets bob answer 200, and returns the 200 and bob's dialog.
    async fn answered_invite(&mut self, call_id: &str) -> (String, sip_core::DialogId) {
        self.send_invite(call_id, call_id).await;
        let mut inv = next(&mut self.bob_rx).await;
        let dialog = inv.dialog().unwrap();
        let contact = format!("<{}>", self.b.contact_uri("bob").unwrap());
        inv.respond(200, "OK", &[("Contact", &contact)], None)
            .await
            .unwrap();
        let ok = self.final_response().await;
        assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
        (ok, dialog)
    }
}

/// The value of header `name` in `message`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_is_retransmitted_until_acked_and_the_call_ends_with_bye_when_no_ack_comes() {
    let mut c = udp_callee().await;
    let mut endings = c.b.dialog_endings();
    let (ok, dialog) = c.answered_invite("noack-1@test").await;
    // RFC 3261 §13.3.1.4: the 2xx again (from T1, doubling to T2) while no ACK comes.
    let again = c.final_response().await;
    assert_eq!(again, ok);
    // After 64*T1 without an ACK the callee ends the session with BYE.
    let bye = c.sent_request("BYE", "").await;
    assert_eq!(header(&bye, "Call-ID"), "noack-1@test");
    assert_dialog_gone(&c.b, &dialog).await;
    // The endpoint that owned the dialog is told, so that its call does not look
    // established for ever.
    let ended = tokio::time::timeout(WAIT, endings.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.dialog, dialog);
    assert_eq!(ended.reason, DialogEndReason::NoAck);
    assert!(ended.endpoint.is_some());
}

/// A request the callee sends in the dialog before the ACK of its 2xx waits for that ACK:
/// the caller knows the dialog only from the 2xx, which the request could overtake on
/// another connection and get 481 (a MESSAGE echoed at once by a bot did, now and then,
/// and the quickstart example hung). The request goes once the ACK is in; without an
/// ACK within 64·T1 it fails `NoDialog` and the platform's BYE ends the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callees_request_before_the_ack_waits_for_it() {
    let mut c = udp_callee().await;
    let (ok, dialog) = c.answered_invite("early-message@test").await;
    let b = c.b.clone();
    let d = dialog.clone();
    let message = tokio::spawn(async move {
        let m = OutgoingRequest::new(Method::Message, "").body("text/plain", "hi");
        b.send_in_dialog(&d, m).await
    });
    // T1 is 10 ms here: 150 ms is plenty for the MESSAGE to go if it were not held.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        !c.sent_any("MESSAGE", ""),
        "a MESSAGE went before the ACK: {:?}",
        c.wire.records()
    );
    c.ack(&ok, "early-message@test").await;
    let sent_message = c.sent_request("MESSAGE", "").await;
    assert!(
        sent_message.contains("early-message@test"),
        "{sent_message}"
    );
    // It went to the outbound proxy (app's platform), which knows no such dialog: 481.
    let r = tokio::time::timeout(WAIT, message).await.unwrap().unwrap();
    assert_eq!(r.map_err(|e| e.status()).err(), Some(481));

    // No ACK at all: the request fails with the dialog, and the platform's BYE goes.
    let (_, dialog) = c.answered_invite("never-acked@test").await;
    let b = c.b.clone();
    let m = OutgoingRequest::new(Method::Message, "").body("text/plain", "hi");
    let r = tokio::time::timeout(WAIT, b.send_in_dialog(&dialog, m))
        .await
        .expect("an outcome once 64*T1 is over");
    assert!(matches!(r, Err(RequestError::NoDialog)), "{r:?}");
    c.sent_request("BYE", "never-acked@test").await;
    assert!(
        !c.sent_any("MESSAGE", "never-acked@test"),
        "a MESSAGE in the dialog never ACKed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_stops_the_2xx_retransmissions_and_keeps_the_call() {
    // T1 = 50 ms: the ACK has 64·T1 = 3.2 s to arrive however slow the test runs, and the
    // 2xx is retransmitted every 200 ms at most meanwhile.
    let t1 = Duration::from_millis(50);
    let mut c = udp_callee_with_t1(t1).await;
    let (ok, dialog) = c.answered_invite("acked-1@test").await;
    c.ack(&ok, "acked-1@test").await;
    // Past 64*T1 nothing more comes: no BYE, and no 2xx beyond one that crossed the ACK.
    // Waiting out a timer is the point here, so this waits for time; the 2xx counted are
    // those bob's platform sent after it had received the ACK (its own record, in the
    // order it handled them), not those the test happens to read late.
    let quiet_until = tokio::time::Instant::now() + t1 * 64 + Duration::from_millis(500);
    tokio::time::sleep_until(quiet_until).await;
    let (acked, late) = {
        let log: Vec<(bool, String)> = c
            .wire
            .records()
            .iter()
            .map(|r| (r.direction == WireDirection::Sent, r.text().into_owned()))
            .collect();
        let ack = log.iter().position(|(sent, m)| {
            !sent && m.starts_with("ACK ") && header(m, "Call-ID") == "acked-1@test"
        });
        let late = ack.map_or(0, |at| {
            log[at..]
                .iter()
                .filter(|(sent, m)| {
                    *sent && m.starts_with("SIP/2.0 200") && header(m, "Call-ID") == "acked-1@test"
                })
                .count()
        });
        (ack.is_some(), late)
    };
    assert!(acked, "bob's platform received the ACK");
    // One 2xx may have been due as the ACK came in (sent before it was matched).
    assert!(late <= 1, "2xx retransmitted {late} times after the ACK");
    assert!(!c.sent_any("BYE", ""), "a BYE for an ACKed call");
    // The dialog is still there: bob can send in it (the far end here is app's platform,
    // which knows nothing of it, hence 481; NoDialog would mean bob had forgotten it).
    let r =
        c.b.send_in_dialog(&dialog, OutgoingRequest::new(Method::Info, ""))
            .await;
    assert_eq!(r.map_err(|e| e.status()).err(), Some(481));
}

/// No request leaves by UDP: in a dialog whose far end came by UDP, a request larger than
/// UDP's 1 300 bytes (RFC 3261 §18.1.1) goes, as every request does, to the outbound proxy
/// over its connection, and arrives whole. Should requests ever go to a UDP target, this
/// test stops holding, and §18.1.1's switch to TCP for large ones is due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_request_in_a_dialog_that_came_by_udp_goes_whole_to_the_proxy() {
    // 64·T1 = 3.2 s for the ACK: its timer is not what is tested.
    let mut c = udp_callee_with_t1(Duration::from_millis(50)).await;
    let (ok, dialog) = c.answered_invite("large-1@test").await;
    // Sent after the ACK: before it, the MESSAGE would wait for it.
    c.ack(&ok, "large-1@test").await;
    let text = "x".repeat(4000);
    let r =
        c.b.send_in_dialog(
            &dialog,
            OutgoingRequest::new(Method::Message, "").body("text/plain", text.clone()),
        )
        .await;
    // The proxy (app's platform, which knows nothing of the dialog) read it and answered.
    assert_eq!(r.map_err(|e| e.status()).err(), Some(481));
    let message = c.sent_request("MESSAGE", "").await;
    assert!(
        header(&message, "Via").starts_with("SIP/2.0/TLS "),
        "{message}"
    );
    assert!(message.ends_with(&text));
    // The UDP caller never got the MESSAGE.
    let mut buf = vec![0u8; 65536];
    while let Ok(r) =
        tokio::time::timeout(Duration::from_millis(300), c.socket.recv_from(&mut buf)).await
    {
        let (n, _) = r.unwrap();
        assert!(
            !buf[..n].starts_with(b"MESSAGE "),
            "the MESSAGE went by UDP"
        );
    }
}

/// The tag parameter of a From or To value.
fn tag_of(value: &str) -> &str {
    value
        .split(";tag=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_invite_keeps_one_dialog_and_acks_then_ends_the_other_forks_answers() {
    use collaboration_platform::{Listener, OutboundProxy, ServerPlatformSettings};
    let pki = LoopbackPki::new().expect("CA");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let settings = ServerPlatformSettings::new(
        "ucma-rs test",
        "app.contoso.test",
        pki.identity("app.contoso.test").unwrap(),
        pki.roots(),
        OutboundProxy::tcp(listener.local_addr().unwrap()),
    )
    .listen(Listener::tcp("127.0.0.1:0".parse().unwrap()))
    .topology(Topology::new(["contoso.test"]))
    // A request sent where it should not be times out in 640 ms.
    .transaction_timers(sip_core::transaction::TransactionConfig {
        t1: Duration::from_millis(10),
        ..Default::default()
    });
    let a = CollaborationPlatform::start(settings).await.unwrap();
    let (app, _app_rx) = endpoint(&a, "app").await;
    let mut call = a.invite(app, invite(&a)).await.unwrap();
    let (stream, _) = tokio::time::timeout(WAIT, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut proxy = ScriptedProxy::new(stream);
    let inv = proxy.request("INVITE").await;
    let call_id = header(&inv, "Call-ID").to_string();
    let local = tag_of(header(&inv, "From")).to_string();
    // Two forks ring, the first answers.
    proxy.answer(&inv, "180 Ringing", "fork1").await;
    proxy.answer(&inv, "180 Ringing", "fork2").await;
    proxy.answer(&inv, "200 OK", "fork1").await;
    let dialog = loop {
        match tokio::time::timeout(WAIT, call.next()).await.unwrap() {
            Some(InviteProgress::Provisional(_)) => {}
            Some(InviteProgress::Answered { dialog, .. }) => break dialog,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(dialog.remote_tag(), b"fork1");
    let ack = proxy.request("ACK").await;
    assert_eq!(tag_of(header(&ack, "To")), "fork1");
    // The other fork's early dialog ended with the 2xx (RFC 3261 §13.2.2.4).
    let fork2 = sip_core::DialogId::new(call_id.as_bytes(), local.as_bytes(), b"fork2");
    let r = a
        .send_in_dialog(&fork2, OutgoingRequest::new(Method::Info, ""))
        .await;
    assert!(matches!(r, Err(RequestError::NoDialog)), "{r:?}");
    // The second fork answers too, and a third that never rang: each 2xx is ACKed and
    // its dialog ended with BYE (the caller has its call already).
    for fork in ["fork2", "fork3"] {
        proxy.answer(&inv, "200 OK", fork).await;
        let ack = proxy.request("ACK").await;
        assert_eq!(tag_of(header(&ack, "To")), fork);
        let bye = proxy.request("BYE").await;
        assert_eq!(tag_of(header(&bye, "To")), fork);
        assert_eq!(header(&bye, "Call-ID"), call_id);
        proxy.answer(&bye, "200 OK", "").await;
    }
    // The call that was answered first is untouched.
    let info = tokio::spawn({
        let a = a.clone();
        let dialog = dialog.clone();
        async move {
            a.send_in_dialog(&dialog, OutgoingRequest::new(Method::Info, ""))
                .await
        }
    });
    let m = proxy.request("INFO").await;
    assert_eq!(tag_of(header(&m, "To")), "fork1");
    proxy.answer(&m, "200 OK", "").await;
    let r = tokio::time::timeout(WAIT, info).await.unwrap().unwrap();
    assert_eq!(r.map(|m| m.status()).ok(), Some(Some(200)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_invite_gets_482_and_does_not_reach_the_endpoint() {
    let mut c = udp_callee().await;
    c.send_invite("merged-1@test", "first").await;
    let mut inv = next(&mut c.bob_rx).await;
    // The same INVITE (From tag, Call-ID, CSeq) by another path: another branch, as a
    // forking proxy sends it when two of its branches reach the same UA (§8.2.2.2).
    c.send_invite("merged-1@test", "second").await;
    let r = c.final_response().await;
    assert!(r.starts_with("SIP/2.0 482"), "{r}");
    assert!(header(&r, "Via").contains("branch=z9hG4bK-second"), "{r}");
    // Still merged once the first is answered (its transaction lives on to absorb
    // retransmissions), and the endpoint saw only one INVITE.
    let contact = format!("<{}>", c.b.contact_uri("bob").unwrap());
    inv.respond(200, "OK", &[("Contact", &contact)], None)
        .await
        .unwrap();
    let ok = c.final_response().await;
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    c.send_invite("merged-1@test", "third").await;
    let r = loop {
        let r = c.final_response().await;
        if !r.starts_with("SIP/2.0 200") {
            break r;
        }
    };
    assert!(r.starts_with("SIP/2.0 482"), "{r}");
    assert!(c.bob_rx.try_recv().is_err());
}

/// Reads what comes on the caller's socket: `n` more retransmissions of `ok` (the 2xx
/// still unACKed); then nothing bob's platform sent in between may be a BYE.
async fn no_bye_while_unacked(c: &mut UdpCallee, ok: &str, n: usize) {
    for _ in 0..n {
        assert_eq!(c.final_response().await, ok, "the 2xx again");
    }
    assert!(!c.sent_any("BYE", ""), "a BYE before the ACK");
}

/// A BYE the callee's application asked for before the ACK of its 2xx waits in the platform
/// for that ACK (RFC 3261 §15); a shutdown asked meanwhile waits for it too (within its
/// grace period): the ACK comes, the BYE goes and is answered, then the platform stops.
/// The shutdown used to stop at once and drop the held BYE, leaving the caller's call up.
/// `queue_in_dialog` returns once the platform has the BYE, so the shutdown asked after it
/// finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_waits_for_the_ack_a_held_bye_needs() {
    // T1 = 100 ms: the platform's own BYE after 64·T1 (6.4 s) is not what is tested.
    let mut c = udp_callee_with_t1(Duration::from_millis(100)).await;
    let (ok, dialog) = c.answered_invite("held-bye-shutdown@test").await;
    let outcome =
        c.b.queue_in_dialog(&dialog, OutgoingRequest::new(Method::Bye, ""))
            .await
            .expect("taken");
    let b = c.b.clone();
    let stopping = tokio::spawn(async move { b.shutdown_within(WAIT * 3).await });
    no_bye_while_unacked(&mut c, &ok, 2).await;
    assert!(!stopping.is_finished(), "stopped before the ACK");

    c.ack(&ok, "held-bye-shutdown@test").await;
    let bye = c.sent_request("BYE", "").await;
    assert_eq!(header(&bye, "Call-ID"), "held-bye-shutdown@test");
    // Answered by the outbound proxy (app's platform), which knows no such dialog: 481.
    let r = tokio::time::timeout(WAIT, outcome).await.unwrap();
    assert_eq!(r.map_err(|e| e.status()).err(), Some(481));
    let report = tokio::time::timeout(WAIT, stopping).await.unwrap().unwrap();
    assert!(report.finished >= 1, "{report:?}");
    assert_eq!(report.cancelled, 0, "{report:?}");
}

/// A shutdown does not wait for an ACK past its grace period: the BYE still held then is
/// not sent (no BYE before the ACK, §15) and fails `Shutdown`, counted as cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_waits_for_a_held_bye_only_within_its_grace() {
    // 64·T1 = 32 s: only the grace period can end the wait.
    let mut c = udp_callee_with_t1(Duration::from_millis(500)).await;
    let (_ok, dialog) = c.answered_invite("held-bye-grace@test").await;
    let outcome =
        c.b.queue_in_dialog(&dialog, OutgoingRequest::new(Method::Bye, ""))
            .await
            .expect("taken");
    let report = tokio::time::timeout(WAIT, c.b.shutdown_within(Duration::from_millis(200)))
        .await
        .expect("the grace period bounds the shutdown");
    assert!(report.cancelled >= 1, "{report:?}");
    let r = tokio::time::timeout(WAIT, outcome).await.unwrap();
    assert!(matches!(r, Err(RequestError::Shutdown)), "{r:?}");
    assert!(!c.sent_any("BYE", ""), "a BYE without the ACK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_with_an_unbounded_grace_waits_for_the_live_requests() {
    let (a, b) = platforms().await;
    let (_bob, mut bob_rx) = endpoint(&b, "bob").await;
    let a2 = a.clone();
    let held = tokio::spawn(async move {
        a2.send_request(OutgoingRequest::message("sip:bob@contoso.test", "wait"))
            .await
    });
    let mut m = next(&mut bob_rx).await;
    let a3 = a.clone();
    // "Wait as long as it takes": no deadline can be computed from it.
    let stopping = tokio::spawn(async move { a3.shutdown_within(Duration::MAX).await });
    until_stopping(&a).await;
    m.respond(200, "OK", &[], None).await.unwrap();
    let r = tokio::time::timeout(WAIT, held).await.unwrap().unwrap();
    assert_eq!(r.map(|m| m.status()).ok(), Some(Some(200)));
    let report = tokio::time::timeout(WAIT, stopping).await.unwrap().unwrap();
    // The held MESSAGE finished (an OPTIONS of `until_stopping` may have been live too).
    assert!(report.finished >= 1, "{report:?}");
    assert_eq!(report.cancelled, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_between_platforms_is_acked_and_stays_up_past_64_t1() {
    // Bob's T1 is 50 ms: the ACK has 64·T1 = 3.2 s to come, however slow the test runs.
    let bob_t1 = Duration::from_millis(50);
    let (a, b) = quick_platforms(Duration::from_millis(10), bob_t1).await;
    let (app, mut app_rx) = endpoint(&a, "app").await;
    let (_bob, mut bob_rx) = endpoint(&b, "bob").await;
    let (dialog, _) = call(&a, app, &b, &mut bob_rx).await;
    // Past the callee's 64*T1 for the ACK (it started before the 2xx reached app): that
    // the timer did not end the call is what is waited for here.
    tokio::time::sleep(bob_t1 * 64 + Duration::from_millis(500)).await;
    // No BYE came for the call, and it still carries requests both ways.
    assert!(app_rx.try_recv().is_err());
    let info = tokio::spawn({
        let a = a.clone();
        async move {
            a.send_in_dialog(&dialog, OutgoingRequest::new(Method::Info, ""))
                .await
        }
    });
    let mut m = next(&mut bob_rx).await;
    assert_eq!(m.request().method(), Some(&Method::Info));
    m.respond(200, "OK", &[], None).await.unwrap();
    let r = tokio::time::timeout(WAIT, info).await.unwrap().unwrap();
    assert_eq!(r.map(|m| m.status()).ok(), Some(Some(200)));
}

/// RFC 3261 §13.2.1: to an INVITE without an offer, the 2xx carries ours and the answer
/// comes in the ACK, so that ACK goes to the endpoint (once, answered already: there is
/// nothing to respond). The ACK of a 2xx without an offer stays with the platform. ACKs
/// used to be absorbed by the platform, and an offer made in a 2xx could never be answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ack_owing_an_answer_reaches_the_endpoint_and_no_other() {
    let (a, b) = platforms().await;
    let (app, _app_rx) = endpoint(&a, "app").await;
    let (_bob, mut bob_rx) = endpoint(&b, "bob").await;
    let offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                 m=message 5060 sip null\r\na=accept-types:text/plain\r\n";
    for offer_in_2xx in [true, false] {
        let b2 = b.clone();
        let call = a.invite(app, invite(&a)).await.unwrap();
        let mut inv = next(&mut bob_rx).await;
        assert!(inv.body().is_empty(), "an INVITE without an offer");
        let dialog = inv.dialog().unwrap();
        let contact = format!("<{}>", b2.contact_uri("bob").unwrap());
        let body = offer_in_2xx.then(|| ("application/sdp", offer.into()));
        inv.respond(200, "OK", &[("Contact", &contact)], body)
            .await
            .unwrap();
        let (_, a_dialog) = tokio::time::timeout(WAIT, call.outcome())
            .await
            .unwrap()
            .unwrap();
        if offer_in_2xx {
            let mut ack = next(&mut bob_rx).await;
            assert_eq!(ack.request().method(), Some(&Method::Ack));
            assert_eq!(ack.dialog(), Some(dialog.clone()));
            assert_eq!(
                ack.respond(200, "OK", &[], None).await,
                Err(collaboration_platform::RespondError::AlreadyAnswered),
                "an ACK has nothing to answer"
            );
        }
        // The next request the endpoint gets is the BYE: no ACK (again) before it.
        let a2 = a.clone();
        let hang_up = tokio::spawn(async move {
            a2.send_in_dialog(&a_dialog, OutgoingRequest::new(Method::Bye, ""))
                .await
        });
        let mut bye = next(&mut bob_rx).await;
        assert_eq!(bye.request().method(), Some(&Method::Bye), "{offer_in_2xx}");
        bye.respond(200, "OK", &[], None).await.unwrap();
        hang_up.await.unwrap().unwrap();
    }
}

/// The CSeq number of `m`.
fn seq_of(m: &sip_core::SipMessage) -> u32 {
    m.cseq().expect("a CSeq").seq()
}

/// The app (with credentials for its dialogs, `authenticate_dialogs`) calls bob; returns
/// the platforms, the dialog and bob's requests.
async fn authenticated_call(
    bob_uri: &str,
) -> (
    CollaborationPlatform,
    CollaborationPlatform,
    DialogId,
    mpsc::Receiver<IncomingRequest>,
) {
    // Bob's platform serves fabrikam.test too; for the app, only contoso.test is home.
    let pki = LoopbackPki::new().expect("CA");
    let (a, b) = pair(&pki, "app.contoso.test", "bob.contoso.test", |fqdn, s| {
        if fqdn == "app.contoso.test" {
            s.topology(Topology::new(["contoso.test"]))
        } else {
            s.topology(Topology::new(["contoso.test", "fabrikam.test"]))
        }
    })
    .await
    .expect("platforms");
    let (app, _app_rx) = endpoint(&a, "app").await;
    let auth =
        collaboration_platform::ClientAuth::new(sip_core::auth::Credentials::new("app", "secret"));
    a.authenticate_dialogs(app, auth).await;
    // Bob's endpoint takes the call whatever its Request-URI (default routing).
    let owner =
        collaboration_platform::Address::assume_on_premises("sip:bob@contoso.test").unwrap();
    let (_bob, mut bob_rx) = b.register_endpoint(owner, None, true).await.unwrap();
    let contact = format!("<{}>", b.contact_uri("bob").unwrap());
    let answering = tokio::spawn(async move {
        let mut inv = next(&mut bob_rx).await;
        inv.respond(200, "OK", &[("Contact", &contact)], None)
            .await
            .unwrap();
        bob_rx
    });
    let request = OutgoingRequest::new(Method::Invite, bob_uri)
        .from("<sip:app@contoso.test>")
        .header("Contact", format!("<{}>", a.contact_uri("app").unwrap()));
    let (_, dialog) = a
        .invite(app, request)
        .await
        .unwrap()
        .outcome()
        .await
        .unwrap();
    let bob_rx = tokio::time::timeout(WAIT, answering)
        .await
        .unwrap()
        .unwrap();
    (a, b, dialog, bob_rx)
}

const PROXY_CHALLENGE: (&str, &str) = (
    "Proxy-Authenticate",
    "Digest realm=\"contoso.test\", nonce=\"n1\", qop=\"auth\"",
);

/// Answers `m` 407 with [`PROXY_CHALLENGE`].
async fn challenge(m: &mut IncomingRequest) {
    m.respond(
        407,
        "Proxy Authentication Required",
        &[PROXY_CHALLENGE],
        None,
    )
    .await
    .unwrap();
}

/// The app hangs up: bob's next request must be the BYE (nothing else was sent since).
async fn hang_up(
    a: &CollaborationPlatform,
    dialog: &DialogId,
    bob_rx: &mut mpsc::Receiver<IncomingRequest>,
) {
    let (_, ()) = tokio::join!(
        a.send_in_dialog(dialog, OutgoingRequest::new(Method::Bye, "")),
        async {
            let mut bye = next(bob_rx).await;
            assert_eq!(bye.request().method(), Some(&Method::Bye));
            bye.respond(200, "OK", &[], None).await.unwrap();
        }
    );
}

/// A 407 to a request in a dialog of an endpoint with credentials is answered: the
/// request again with the dialog's next CSeq and a `Proxy-Authorization` for the
/// challenge, and the caller gets that one's outcome; a later request takes the CSeq
/// after it. A 401 from the other party is not answered (`RequestError::Authentication`,
/// nothing sent again), nor a 407 refused twice. Before, the first 407 was the outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_407_in_an_authenticated_dialog_is_answered_with_the_next_cseq() {
    let (a, _b, dialog, mut bob_rx) = authenticated_call("sip:bob@contoso.test").await;
    let message = || OutgoingRequest::new(Method::Message, "").body("text/plain", "hi");
    let (sent, last) = tokio::join!(a.send_in_dialog(&dialog, message()), async {
        let mut m = next(&mut bob_rx).await;
        assert!(m.request().header(HeaderName::ProxyAuthorization).is_none());
        let first = seq_of(m.request());
        challenge(&mut m).await;
        let mut again = next(&mut bob_rx).await;
        assert_eq!(again.request().method(), Some(&Method::Message));
        assert_eq!(seq_of(again.request()), first + 1, "the dialog's next CSeq");
        let creds = again
            .request()
            .header(HeaderName::ProxyAuthorization)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .expect("credentials");
        assert!(creds.contains("nonce=\"n1\""), "{creds}");
        again.respond(200, "OK", &[], None).await.unwrap();
        first + 1
    });
    assert_eq!(sent.expect("the MESSAGE answered").status(), Some(200));

    // The other party's 401 is not answered; the next request takes the next CSeq.
    let (sent, ()) = tokio::join!(a.send_in_dialog(&dialog, message()), async {
        let mut m = next(&mut bob_rx).await;
        assert_eq!(seq_of(m.request()), last + 1);
        let www = (
            "WWW-Authenticate",
            "Digest realm=\"contoso.test\", nonce=\"u1\"",
        );
        m.respond(401, "Unauthorized", &[www], None).await.unwrap();
    });
    assert!(
        matches!(sent, Err(RequestError::Authentication { code: 401, .. })),
        "{sent:?}"
    );

    // Credentials refused (a second challenge for the realm): no third send.
    let (sent, ()) = tokio::join!(a.send_in_dialog(&dialog, message()), async {
        for _ in 0..2 {
            let mut m = next(&mut bob_rx).await;
            assert_eq!(m.request().method(), Some(&Method::Message));
            challenge(&mut m).await;
        }
    });
    assert!(
        matches!(sent, Err(RequestError::Authentication { code: 407, .. })),
        "{sent:?}"
    );
    // Nothing was sent again: bob's next request is the BYE.
    hang_up(&a, &dialog, &mut bob_rx).await;
}

/// In a dialog with a federated party, a 407 is not answered: it may come from that
/// party's side as well as from the home proxy (trust is not transitive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_407_in_a_dialog_with_a_federated_party_is_not_answered() {
    let (a, _b, dialog, mut bob_rx) = authenticated_call("sip:bob@fabrikam.test").await;
    let (sent, ()) = tokio::join!(
        a.send_in_dialog(
            &dialog,
            OutgoingRequest::new(Method::Message, "").body("text/plain", "hi"),
        ),
        async {
            let mut m = next(&mut bob_rx).await;
            challenge(&mut m).await;
        }
    );
    assert_eq!(sent.as_ref().map_err(RequestError::status).err(), Some(407));
    // Not sent again: bob's next request is the BYE.
    hang_up(&a, &dialog, &mut bob_rx).await;
}
