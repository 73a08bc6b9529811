//! The presence subscription on the wire: the SUBSCRIBEs the view sends, and what it
//! reads of the NOTIFYs and answers it receives (RFC 6665, RFC 3856).

use super::{PresenceError, TerminationReason};
use crate::core::{DialogRoute, EndpointCore};
use crate::pidf::{self, PresenceDocument};
use collaboration_platform::{IncomingRequest, OutgoingRequest};
use sip_core::{HeaderName, Method, SipMessage, TokenParams};

/// The SUBSCRIBE that starts a subscription (or, with `expires` 0, fetches once).
pub(super) fn subscribe_request(
    core: &EndpointCore,
    target: &str,
    call_id: String,
    from_tag: &str,
    expires: u32,
) -> OutgoingRequest {
    let owner = core.owner().uri();
    OutgoingRequest::new(Method::Subscribe, target)
        .from(format!("<{owner}>;tag={from_tag}"))
        .call_id(call_id)
        .to(format!("<{target}>"))
        .header("Event", "presence")
        .header("Accept", pidf::CONTENT_TYPE)
        .header("Expires", expires.to_string())
        .header("Contact", format!("<{}>", core.contact()))
}

/// The SUBSCRIBE that refreshes (or, with `expires` 0, ends) a subscription in its
/// dialog.
pub(super) fn in_dialog_subscribe(core: &EndpointCore, expires: u32) -> OutgoingRequest {
    OutgoingRequest::new(Method::Subscribe, "")
        .header("Event", "presence")
        .header("Accept", pidf::CONTENT_TYPE)
        .header("Expires", expires.to_string())
        .header("Contact", format!("<{}>", core.contact()))
}

/// The next NOTIFY of the presence package in `route`; other requests are refused.
pub(super) async fn next_notify(route: &mut DialogRoute) -> Option<IncomingRequest> {
    loop {
        let mut r = route.recv().await?;
        match refusal_of(r.request()) {
            None => return Some(r),
            Some(refusal) => refuse(&mut r, refusal).await,
        }
    }
}

/// How a request in a subscription's dialog is refused: status, reason phrase, headers.
pub(super) type Refusal = (u16, &'static str, &'static [(&'static str, &'static str)]);

/// Sends `refusal`. A 481 here is for a usage the dialog does not have (the NOTIFY's Event
/// is not the subscription's): the dialog, and the subscription in it, stay.
pub(super) async fn refuse(request: &mut IncomingRequest, refusal: Refusal) {
    let (status, reason, headers) = refusal;
    let _ = if status == 481 {
        request.respond_no_such_usage().await
    } else {
        request.respond(status, reason, headers, None).await
    };
}

/// The event package of every subscription the view makes. Its SUBSCRIBEs carry no `id`
/// parameter, so neither may the NOTIFYs of their subscriptions.
const PACKAGE: &str = "presence";

/// How to refuse a request that arrived in a subscription's dialog, if it must be: the
/// status, its reason phrase and extra headers.
///
/// * 405 for anything but NOTIFY;
/// * 400 for a NOTIFY without a readable Event header (mandatory, RFC 6665 §8.1.2; 489 is
///   for a package not understood, and this one names none);
/// * 400 for one without a readable Subscription-State;
/// * 481 for one whose Event does not match the subscription's: the package compared byte
///   by byte, and an `id` present on one side only never matches (RFC 6665 §8.2.1). Such a
///   NOTIFY is for no subscription of the dialog (§4.1.3); the 481 ends that one alone at
///   its notifier, and the subscription kept is left as it is.
pub(super) fn refusal_of(request: &SipMessage) -> Option<Refusal> {
    if request.method() != Some(&Method::Notify) {
        return Some((405, sip_core::reason_phrase(405), &[("Allow", "NOTIFY")]));
    }
    let event = match request.token_params(HeaderName::Event) {
        Some(Ok(e)) => e,
        None => return Some((400, "Missing Event header", &[])),
        Some(Err(_)) => return Some((400, "Malformed Event header", &[])),
    };
    if event.token() != PACKAGE || event.params().contains("id") {
        return Some((481, sip_core::reason_phrase(481), &[]));
    }
    // Mandatory in every NOTIFY (RFC 6665 §4.1.3, §8.2.3): without it the notifier has not
    // said whether the subscription is active, pending or over, and guessing `active`
    // could keep a terminated one refreshed for ever.
    match request.header(HeaderName::SubscriptionState) {
        None => Some((400, "Missing Subscription-State header", &[])),
        Some(v) if parse_subscription_state(v).is_err() => {
            Some((400, "Malformed Subscription-State header", &[]))
        }
        Some(_) => None,
    }
}

/// The phase of a `Subscription-State` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Active,
    Pending,
    Terminated,
}

/// A parsed `Subscription-State` header (RFC 6665 §8.2.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NotifierState {
    pub(super) phase: Phase,
    pub(super) expires: Option<u32>,
    pub(super) reason: Option<TerminationReason>,
    pub(super) retry_after: Option<u32>,
}

/// Parses a `Subscription-State` value. A phase this code does not know (an extension) is
/// read as `active`: the subscription is kept, and refreshed as usual.
pub(super) fn parse_subscription_state(
    value: &[u8],
) -> Result<NotifierState, sip_core::ParseError> {
    let tp = TokenParams::parse(value, "Subscription-State")?;
    let phase = if tp.token().eq_ignore_ascii_case("terminated") {
        Phase::Terminated
    } else if tp.token().eq_ignore_ascii_case("pending") {
        Phase::Pending
    } else {
        Phase::Active
    };
    let reason = tp
        .params()
        .get_unquoted("reason")
        .map(|r| TerminationReason::from_token(&String::from_utf8_lossy(&r)));
    Ok(NotifierState {
        phase,
        expires: tp.seconds("expires"),
        reason,
        retry_after: tp.seconds("retry-after"),
    })
}

/// The NOTIFY's subscription state. [`refusal_of`] has refused a NOTIFY without a
/// readable one; should one come here all the same it reads as `active`.
pub(super) fn notify_status(request: &SipMessage) -> NotifierState {
    request
        .header(HeaderName::SubscriptionState)
        .and_then(|v| parse_subscription_state(v).ok())
        .unwrap_or(NotifierState {
            phase: Phase::Active,
            expires: None,
            reason: None,
            retry_after: None,
        })
}

/// The NOTIFY's document, or why it has none that can be read.
pub(super) fn read_body(request: &SipMessage) -> (Option<PresenceDocument>, Option<PresenceError>) {
    let body = request.body();
    if body.iter().all(u8::is_ascii_whitespace) {
        return (None, None);
    }
    let is_pidf = match request.content_type() {
        Some(Ok(ct)) => ct.is("application", "pidf+xml"),
        // No Content-Type: the package's default is PIDF (RFC 3856 §6.6).
        None => true,
        Some(Err(_)) => false,
    };
    if !is_pidf {
        let ct = request.header(HeaderName::ContentType).unwrap_or_default();
        return (
            None,
            Some(PresenceError::UnsupportedBody {
                content_type: String::from_utf8_lossy(ct).into_owned(),
            }),
        );
    }
    match PresenceDocument::parse(body) {
        Ok(doc) => (Some(doc), None),
        Err(e) => (None, Some(PresenceError::Document(e))),
    }
}

/// `Retry-After` of a response, in seconds (the leading delta-seconds; comment and
/// parameters ignored; more than fits is the most that fits).
pub(crate) fn retry_after_of(response: &SipMessage) -> Option<u32> {
    let v = response.header(HeaderName::RetryAfter)?;
    let v = String::from_utf8_lossy(v);
    let digits: &str = {
        let t = v.trim_start();
        let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        &t[..end]
    };
    if digits.is_empty() {
        return None;
    }
    Some(digits.parse::<u32>().unwrap_or(u32::MAX))
}

/// The lifetime a 2xx to SUBSCRIBE grants (its Expires), or what was asked.
pub(super) fn granted(ok: &SipMessage, asked: u32) -> u32 {
    ok.expires().and_then(Result::ok).unwrap_or(asked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pidf::Availability;
    use crate::view::test_messages::{message, notify, response};

    #[test]
    fn subscription_state_is_parsed() {
        let s = parse_subscription_state(b"active;expires=3600").unwrap();
        assert_eq!(s.phase, Phase::Active);
        assert_eq!(s.expires, Some(3600));
        assert_eq!(s.reason, None);

        let s = parse_subscription_state(b"pending ; expires=60").unwrap();
        assert_eq!(s.phase, Phase::Pending);
        assert_eq!(s.expires, Some(60));

        let s = parse_subscription_state(b"terminated;reason=timeout").unwrap();
        assert_eq!(s.phase, Phase::Terminated);
        assert_eq!(s.reason, Some(TerminationReason::Timeout));
        assert_eq!(s.retry_after, None);

        let s = parse_subscription_state(b"terminated;reason=probation;retry-after=30").unwrap();
        assert_eq!(s.reason, Some(TerminationReason::Probation));
        assert_eq!(s.retry_after, Some(30));

        let s = parse_subscription_state(b"Terminated;Reason=NoResource").unwrap();
        assert_eq!(s.phase, Phase::Terminated);
        assert_eq!(s.reason, Some(TerminationReason::NoResource));

        let s = parse_subscription_state(b"terminated").unwrap();
        assert_eq!((s.phase, s.reason), (Phase::Terminated, None));

        let s = parse_subscription_state(b"terminated;reason=\"moved\"").unwrap();
        assert_eq!(s.reason, Some(TerminationReason::Other("moved".into())));

        // An extension state keeps the subscription.
        let s = parse_subscription_state(b"frozen;expires=10").unwrap();
        assert_eq!(s.phase, Phase::Active);

        assert!(parse_subscription_state(b"").is_err());
        assert!(parse_subscription_state(b";expires=1").is_err());

        let n = notify(
            "Event: presence\r\nSubscription-State: terminated;reason=rejected\r\n",
            "",
        );
        assert_eq!(notify_status(&n).reason, Some(TerminationReason::Rejected));
    }

    #[test]
    fn retry_after_header_is_read() {
        assert_eq!(
            retry_after_of(&response(503, "Retry-After: 30\r\n")),
            Some(30)
        );
        assert_eq!(
            retry_after_of(&response(503, "Retry-After: 18000;duration=3600\r\n")),
            Some(18000)
        );
        assert_eq!(retry_after_of(&response(503, "")), None);
        assert_eq!(
            retry_after_of(&response(503, "Retry-After: soon\r\n")),
            None
        );
    }

    #[test]
    fn notify_bodies_are_read_or_reported() {
        let n = notify("Event: presence\r\n", "");
        let (doc, err) = read_body(&n);
        assert!(doc.is_none() && err.is_none());

        let xml = PresenceDocument::from_availability(
            "sip:b@contoso.test",
            Availability::Away,
            Some("out"),
        )
        .to_xml();
        let n = notify(
            "Event: presence\r\nContent-Type: application/pidf+xml\r\n",
            &xml,
        );
        let (doc, err) = read_body(&n);
        let doc = doc.expect("document");
        assert!(err.is_none());
        assert_eq!(Availability::from_document(&doc), Availability::Away);
        assert_eq!(doc.note(), Some("out"));

        let n = notify(
            "Event: presence\r\nContent-Type: application/pidf+xml\r\n",
            "<presence><tuple",
        );
        let (doc, err) = read_body(&n);
        assert!(doc.is_none());
        assert!(matches!(err, Some(PresenceError::Document(_))), "{err:?}");

        let n = notify("Event: presence\r\nContent-Type: text/plain\r\n", "busy");
        let (doc, err) = read_body(&n);
        assert!(doc.is_none());
        match err {
            Some(PresenceError::UnsupportedBody { content_type }) => {
                assert_eq!(content_type, "text/plain")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_presence_notifies_are_accepted_in_a_subscription_dialog() {
        let status = |headers: &str| {
            let headers = format!("{headers}Subscription-State: active\r\n");
            refusal_of(&notify(&headers, "")).map(|r| r.0)
        };
        assert_eq!(status("Event: presence\r\n"), None);
        assert_eq!(status("o: presence;extension=1\r\n"), None);
        // Not the subscription's Event (RFC 6665 §8.2.1): no subscription of the dialog.
        assert_eq!(status("Event: presence;id=7\r\n"), Some(481));
        assert_eq!(status("Event: Presence\r\n"), Some(481));
        assert_eq!(status("Event: dialog\r\n"), Some(481));
        // The mandatory Event header missing or unreadable.
        assert_eq!(status(""), Some(400));
        assert_eq!(status("Event: ;id=1\r\n"), Some(400));
        let bye = message(
            "BYE sip:w@h SIP/2.0\r\nVia: SIP/2.0/TLS fe;branch=z9hG4bK3\r\n\
             From: <sip:b@contoso.test>;tag=2\r\nTo: <sip:w@contoso.test>;tag=1\r\n\
             Call-ID: c\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(refusal_of(&bye).map(|r| r.0), Some(405));
    }

    #[test]
    fn a_notify_without_a_readable_subscription_state_is_refused() {
        let status = |headers: &str| refusal_of(&notify(headers, "")).map(|r| (r.0, r.1));
        let event = "Event: presence\r\n";
        assert_eq!(
            status(event),
            Some((400, "Missing Subscription-State header"))
        );
        assert_eq!(
            status(&format!("{event}Subscription-State: ;expires=60\r\n")),
            Some((400, "Malformed Subscription-State header"))
        );
        assert_eq!(
            status(&format!("{event}Subscription-State: pending\r\n")),
            None
        );
    }
}
