//! What an IM call answers on the wire to a peer that is not this crate: the bot calls
//! alice, who answers the INVITE herself (no conversation layer on her side) and then
//! sends requests in the dialog as any SIP peer could, hostile ones included.

use std::time::Duration;

use application_endpoint::{ApplicationEndpoint, ApplicationEndpointSettings, Endpoint, Modality};
use collaboration_platform::loopback::{pair, LoopbackPki};
use collaboration_platform::{
    Address, CollaborationPlatform, DialogId, OnPremises, OutgoingRequest, RequestError, Topology,
};
use conversation::composing::{IsComposing, CONTENT_TYPE};
use conversation::{
    incoming_im_calls, text_format, Conversation, InstantMessagingCall, InstantMessagingFlow,
    ReceivedMessage, ACCEPT_TYPES,
};
use sip_core::sdp::{LocalCapabilities, MediaCapability, OfferAnswer, SessionDescription};
use sip_core::{HeaderName, Method, SipMessage};

const WAIT: Duration = Duration::from_secs(10);

fn on_prem(uri: &str) -> Address<OnPremises> {
    Address::assume_on_premises(uri).unwrap()
}

/// An established call from the bot (this crate) to alice (raw requests).
struct RawPeer {
    _bot_platform: CollaborationPlatform,
    alice_platform: CollaborationPlatform,
    _bot: ApplicationEndpoint,
    _alice: ApplicationEndpoint,
    /// Alice's side of the dialog.
    dialog: DialogId,
    /// Requests the bot sends to alice in the dialog.
    _route: application_endpoint::DialogRoute,
    call: InstantMessagingCall<OnPremises>,
    flow: InstantMessagingFlow,
    /// The bot's offer in its INVITE.
    bot_offer: SessionDescription,
}

/// The bot's platform and alice's, with their endpoints established.
async fn setup() -> (
    CollaborationPlatform,
    CollaborationPlatform,
    ApplicationEndpoint,
    ApplicationEndpoint,
) {
    let pki = LoopbackPki::new().unwrap();
    let (a, b) = pair(&pki, "app.contoso.test", "alice.contoso.test", |_, s| {
        s.topology(Topology::new(["contoso.test"]))
    })
    .await
    .unwrap();
    let bot = ApplicationEndpoint::new(
        &a,
        ApplicationEndpointSettings::new(on_prem("sip:bot@contoso.test")),
    );
    let alice = ApplicationEndpoint::new(
        &b,
        ApplicationEndpointSettings::new(on_prem("sip:alice@contoso.test")),
    );
    bot.establish().await.unwrap();
    alice.establish().await.unwrap();
    (a, b, bot, alice)
}

/// Alice's IM session capabilities.
fn alice_sdp(session_id: &str) -> OfferAnswer {
    OfferAnswer::new(
        LocalCapabilities::new("alice.contoso.test")
            .with_media(MediaCapability::message(5060, ACCEPT_TYPES)),
        session_id,
    )
}

impl RawPeer {
    async fn new() -> RawPeer {
        let (a, b, bot, alice) = setup().await;
        let core = alice.core().clone();
        let mut invites = core.incoming(Modality::InstantMessaging);
        let alice_side = tokio::spawn(async move {
            let mut inv = tokio::time::timeout(WAIT, invites.recv())
                .await
                .unwrap()
                .unwrap();
            let dialog = inv.dialog().unwrap();
            let call_id = String::from_utf8_lossy(dialog.call_id()).into_owned();
            let route = core.route_dialog(&call_id, inv.local_tag());
            let offer = SessionDescription::parse_slice(inv.body()).unwrap();
            let sdp = alice_sdp("0").receive_offer(&offer).unwrap();
            let contact = format!("<{}>", core.contact());
            inv.respond(
                200,
                "OK",
                &[("Contact", &contact)],
                Some(("application/sdp", sdp.to_bytes())),
            )
            .await
            .unwrap();
            (dialog, route, offer)
        });
        let call =
            Conversation::new(&bot, on_prem("sip:alice@contoso.test")).instant_messaging_call();
        let flow = call.establish().await.unwrap();
        let (dialog, route, bot_offer) = tokio::time::timeout(WAIT, alice_side)
            .await
            .unwrap()
            .unwrap();
        RawPeer {
            _bot_platform: a,
            alice_platform: b,
            _bot: bot,
            _alice: alice,
            dialog,
            _route: route,
            call,
            flow,
            bot_offer,
        }
    }

    /// Alice sends `req` in the dialog; the bot's answer (a failure status as `Err`).
    async fn send(&self, req: OutgoingRequest) -> Result<SipMessage, RequestError> {
        tokio::time::timeout(WAIT, self.alice_platform.send_in_dialog(&self.dialog, req))
            .await
            .expect("the bot answers within the wait")
    }

    /// Alice sends a MESSAGE of `content_type` carrying `body`.
    async fn message(&self, content_type: &str, body: &[u8]) -> Result<SipMessage, RequestError> {
        let req =
            OutgoingRequest::new(Method::Message, "").body(content_type.to_string(), body.to_vec());
        self.send(req).await
    }

    /// The next message the bot's flow yields.
    async fn received(&mut self) -> ReceivedMessage {
        tokio::time::timeout(WAIT, self.flow.recv())
            .await
            .expect("a message within the wait")
            .expect("the flow is open")
    }
}

/// A malformed isComposing document is answered 400 (RFC 3994 §4 has the receiver drop
/// it) with a reason phrase of our own: the parser's error quotes the peer's bytes, CR/LF
/// included, and a status line cannot carry them, so the 400 used to be refused and the
/// peer got 500 Server Internal Error instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_is_composing_is_answered_400_whatever_it_holds() {
    let mut peer = RawPeer::new().await;
    for body in [
        &b"<isComposing><state>active</sta\r\nte></isComposing>"[..],
        b"<isComposing><state>&a\r\nb;</state></isComposing>",
        b"<isComposing><state>typing\r\n</state></isComposing>",
    ] {
        match peer.message(CONTENT_TYPE, body).await {
            Err(RequestError::Status {
                code: 400, reason, ..
            }) => {
                assert!(!reason.contains(['\r', '\n']), "{reason:?}")
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(body)),
        }
    }
    // The call is still up.
    peer.message("text/plain", b"still here").await.unwrap();
    assert_eq!(peer.received().await.text(), "still here");
    assert_eq!(
        peer.call.state(),
        conversation::ConversationState::Established
    );
}

/// RFC 2046 §4.1.2: a message in ISO-8859-1 reads right (it used to be read as UTF-8:
/// `caf\u{fffd}`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_read_in_its_charset() {
    let mut peer = RawPeer::new().await;
    peer.message("text/plain; charset=ISO-8859-1", b"caf\xe9")
        .await
        .unwrap();
    let m = peer.received().await;
    assert_eq!(m.content_type, "text/plain; charset=ISO-8859-1");
    assert_eq!(m.text(), "caf\u{e9}");
}

/// RFC 3261 §14.2: a re-INVITE with an offer is answered in its 200, and one without an
/// offer (a session refresh, as B2BUAs and session timers send it) gets our offer in its
/// 200 (it used to be answered 488 Not Acceptable Here). The answer to that offer is owed
/// in the ACK (§13.2.1): alice's platform holds the ACK until she gives it
/// (`send_ack_answer`), and the call goes on with messages both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_invite_without_an_offer_gets_one_in_the_200() {
    let mut peer = RawPeer::new().await;
    let mut alice = alice_sdp("1");
    let offer = alice.create_offer().unwrap();
    let ok = peer
        .send(OutgoingRequest::new(Method::Invite, "").body("application/sdp", offer.to_bytes()))
        .await
        .unwrap();
    assert_eq!(ok.status(), Some(200));
    let answer = SessionDescription::parse_slice(ok.body()).unwrap();
    alice.receive_answer(&answer).unwrap();
    peer.message("text/plain", b"still here").await.unwrap();
    assert_eq!(peer.received().await.text(), "still here");

    let ok = peer
        .send(OutgoingRequest::new(Method::Invite, ""))
        .await
        .unwrap();
    assert_eq!(ok.status(), Some(200));
    assert_eq!(
        ok.header(HeaderName::ContentType),
        Some(&b"application/sdp"[..])
    );
    assert!(ok.header(HeaderName::Contact).is_some());
    let offer = SessionDescription::parse_slice(ok.body()).unwrap();
    let answer = alice_sdp("0").receive_offer(&offer);
    let answer = answer.expect("an IM session is offered");
    peer.alice_platform
        .send_ack_answer(&peer.dialog, "application/sdp", answer.to_bytes())
        .await
        .unwrap();
    peer.message("text/plain", b"after the refresh")
        .await
        .unwrap();
    assert_eq!(peer.received().await.text(), "after the refresh");
    assert_eq!(
        peer.call.state(),
        conversation::ConversationState::Established
    );
}

/// RFC 3311 §5.2: an UPDATE is a target refresh request, so its 2xx carries a Contact,
/// and an offer in it is answered in the 2xx (RFC 3264). It used to get a bare 200: the
/// offer went unanswered, leaving the peer's offer/answer exchange open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_offer_is_answered_in_its_200() {
    let mut peer = RawPeer::new().await;
    let mut alice = alice_sdp("1");
    let offer = alice.create_offer().unwrap();
    let ok = peer
        .send(OutgoingRequest::new(Method::Update, "").body("application/sdp", offer.to_bytes()))
        .await
        .unwrap();
    assert_eq!(ok.status(), Some(200));
    assert!(ok.header(HeaderName::Contact).is_some());
    let answer = SessionDescription::parse_slice(ok.body()).unwrap();
    alice.receive_answer(&answer).unwrap();
    // Without an offer: a plain refresh, still with a Contact.
    let ok = peer
        .send(OutgoingRequest::new(Method::Update, ""))
        .await
        .unwrap();
    assert_eq!(ok.status(), Some(200));
    assert!(ok.header(HeaderName::Contact).is_some());
    assert!(ok.body().is_empty());
    peer.message("text/plain", b"still here").await.unwrap();
    assert_eq!(peer.received().await.text(), "still here");
}

/// RFC 2046 §5.1.4: a `multipart/alternative` message (which Lync / Skype for Business
/// list in their accept-types, and so do we now) delivers its richest form this side
/// takes; one with no such form is refused 415 with Accept. It used to be refused 415
/// whatever it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multipart_alternative_message_delivers_its_richest_form() {
    let mut peer = RawPeer::new().await;
    let body = b"--xyz\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nhi\r\n\
                 --xyz\r\nContent-Type: text/html; charset=UTF-8\r\n\r\n<b>hi</b>\r\n\
                 --xyz\r\nContent-Type: image/gif\r\n\r\nGIF89a\r\n--xyz--\r\n";
    peer.message("multipart/alternative; boundary=xyz", body)
        .await
        .unwrap();
    let m = peer.received().await;
    assert_eq!(m.content_type, "text/html; charset=UTF-8");
    assert_eq!(m.text(), "<b>hi</b>");
    let only_gif = b"--xyz\r\nContent-Type: image/gif\r\n\r\nGIF89a\r\n--xyz--\r\n";
    match peer
        .message("multipart/alternative; boundary=xyz", only_gif)
        .await
    {
        Err(RequestError::Status {
            code: 415,
            response,
            ..
        }) => {
            let accept = response.header_by_name("Accept").unwrap();
            assert!(String::from_utf8_lossy(accept).contains("text/plain"));
        }
        other => panic!("{other:?}"),
    }
}

/// The first message of an INVITE (`Ms-Text-Format`) is delivered only when its type is
/// one a message may have, as a MESSAGE's is; an isComposing document or an image there
/// used to come out of the flow as the call's first message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_message_is_delivered_only_when_a_message_may_have_its_type() {
    let (_a, b, bot, alice) = setup().await;
    let mut calls = incoming_im_calls(&bot);
    let typing = IsComposing::active(90).to_xml();
    for (header, expected) in [
        (text_format::encode("text/plain", b"hi"), Some("hi")),
        (text_format::encode(CONTENT_TYPE, typing.as_bytes()), None),
        (text_format::encode("image/gif", b"GIF89a"), None),
    ] {
        let offer = alice_sdp("1").create_offer().unwrap();
        let req = OutgoingRequest::new(Method::Invite, "sip:bot@contoso.test")
            .from("<sip:alice@contoso.test>")
            .to("<sip:bot@contoso.test>")
            .header("Contact", format!("<{}>", alice.core().contact()))
            .header(text_format::HEADER, header.clone())
            .body("application/sdp", offer.to_bytes());
        let _invite = b
            .invite(alice.core().established_id().unwrap(), req)
            .await
            .unwrap();
        let call = tokio::time::timeout(WAIT, calls.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            call.first_message().map(|m| m.text()).as_deref(),
            expected,
            "{header}"
        );
        call.decline(486).await;
    }
}

/// RFC 3261 §11.2: an OPTIONS in the call is answered with what the call takes (Allow,
/// Accept); the 200 used to say nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_in_the_call_say_what_it_takes() {
    let peer = RawPeer::new().await;
    let ok = peer
        .send(OutgoingRequest::new(Method::Options, ""))
        .await
        .unwrap();
    let header =
        |name| String::from_utf8_lossy(ok.header_by_name(name).unwrap_or_default()).into_owned();
    assert!(header("Allow").contains("MESSAGE"), "{ok:?}");
    for t in ACCEPT_TYPES {
        assert!(header("Accept").contains(t), "{t}");
    }
}

/// RFC 3264 §6: an answer that rejects the IM line (port 0) leaves no IM session, so the
/// call ends with BYE (RFC 3261 §13.2.2.4) and `establish` fails `NotAcceptable`, as it
/// does for an answer without SDP. It used to count as established, with nothing to carry
/// messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_rejects_the_im_session_ends_the_call_with_bye() {
    let (_a, _b, bot, alice) = setup().await;
    let core = alice.core().clone();
    let mut invites = core.incoming(Modality::InstantMessaging);
    let alice_side = tokio::spawn(async move {
        let mut inv = tokio::time::timeout(WAIT, invites.recv())
            .await
            .unwrap()
            .unwrap();
        let dialog = inv.dialog().unwrap();
        let call_id = String::from_utf8_lossy(dialog.call_id()).into_owned();
        let mut route = core.route_dialog(&call_id, inv.local_tag());
        let offer = SessionDescription::parse_slice(inv.body()).unwrap();
        let mut answer = alice_sdp("0").receive_offer(&offer).unwrap();
        answer.media_mut()[0].set_port(0);
        let contact = format!("<{}>", core.contact());
        inv.respond(
            200,
            "OK",
            &[("Contact", &contact)],
            Some(("application/sdp", answer.to_bytes())),
        )
        .await
        .unwrap();
        let mut next = tokio::time::timeout(WAIT, route.recv())
            .await
            .expect("a request after the 200")
            .expect("the route is open");
        let method = next.request().method().cloned();
        let _ = next.respond(200, "OK", &[], None).await;
        method
    });
    let call = Conversation::new(&bot, on_prem("sip:alice@contoso.test")).instant_messaging_call();
    let r = tokio::time::timeout(WAIT, call.establish()).await.unwrap();
    assert!(
        matches!(r, Err(conversation::CallError::NotAcceptable(_))),
        "{r:?}"
    );
    let method = tokio::time::timeout(WAIT, alice_side)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(method, Some(Method::Bye));
    assert_eq!(call.state(), conversation::ConversationState::Terminated);
}

/// RFC 3264 §8: every SDP the call sends carries one `o=` session id (not 0), and its
/// version goes up when the SDP changes and stays when it does not; each used to go out
/// as `o=- 0 0`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_to_re_offers_keep_the_session_id_and_bump_the_version_only_on_change() {
    let p = RawPeer::new().await;
    let answer_to = |types: &'static [&'static str]| {
        let p = &p;
        async move {
            let offer = OfferAnswer::new(
                LocalCapabilities::new("alice.contoso.test")
                    .with_media(MediaCapability::message(5060, types.iter().copied())),
                "1",
            )
            .create_offer()
            .unwrap();
            let req =
                OutgoingRequest::new(Method::Invite, "").body("application/sdp", offer.to_bytes());
            let ok = p.send(req).await.unwrap();
            SessionDescription::parse_slice(ok.body()).unwrap()
        }
    };
    let first = answer_to(&ACCEPT_TYPES).await;
    let again = answer_to(&ACCEPT_TYPES).await;
    let changed = answer_to(&["text/plain"]).await;
    let offer = p.bot_offer.origin();
    assert_ne!(offer.session_id, "0", "a session id of its own");
    for sdp in [&first, &again, &changed] {
        assert_eq!(sdp.origin().session_id, offer.session_id);
    }
    assert!(first.origin().session_version >= offer.session_version);
    assert_eq!(first.to_bytes(), again.to_bytes(), "the same answer");
    assert_eq!(
        again.origin().session_version,
        first.origin().session_version,
        "an unchanged SDP keeps its version"
    );
    assert_ne!(
        changed.media()[0].accept_types(),
        again.media()[0].accept_types()
    );
    assert_eq!(
        changed.origin().session_version,
        again.origin().session_version + 1,
        "a changed SDP bumps its version"
    );
}
