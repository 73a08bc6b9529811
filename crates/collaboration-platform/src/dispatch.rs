//! What happens to an incoming request before any endpoint sees it, and which endpoint
//! gets it (RFC 3261 §8.2, in its order).
//!
//! [`Dispatcher::dispatch`] is pure: given the request, whether its connection's peer is
//! trusted, whether it matched a dialog and whether it is a merged copy, it returns either
//! the endpoint to deliver to or the response the platform sends itself (in the order it
//! checks: 403, 405, 501, 416, 481, 404, 482, 400 for a dialog-making request no usable
//! dialog can come from, 420, 415, 200 to OPTIONS).
//! The runtime calls it for every request that no transaction or dialog absorbed.

use crate::topology::{Address, OnPremises};
use sip_core::uri::{Host, SipUri, Uri};
use sip_core::{Contact, HeaderName, Method, SipMessage};
// foldhash (seeded per map) instead of SipHash: these maps are looked up for every message.
use foldhash::HashMap;

/// Identifies an endpoint registered with the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointId(pub u64);

/// Where an incoming request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Deliver to this endpoint.
    Deliver(EndpointId),
    /// The platform answers itself.
    Respond(Refusal),
}

/// A response the platform sends without involving an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status code.
    pub status: u16,
    /// The reason phrase when the standard one (RFC 3261 §21) would not tell the peer what
    /// to fix, e.g. `Missing Contact` for a 400.
    pub reason: Option<&'static str>,
    /// Extra header fields the response must carry (Unsupported for 420, Allow for 405/501,
    /// Allow/Accept/Supported for OPTIONS).
    pub headers: Vec<(HeaderName, String)>,
}

impl Refusal {
    fn status(status: u16) -> Refusal {
        Refusal {
            status,
            reason: None,
            headers: Vec::new(),
        }
    }

    fn bad_request(why: &'static str) -> Refusal {
        Refusal {
            reason: Some(why),
            ..Refusal::status(400)
        }
    }

    /// The reason phrase: [`reason`](Self::reason), or the standard one of the status.
    pub fn reason_phrase(&self) -> &'static str {
        self.reason
            .unwrap_or_else(|| sip_core::reason_phrase(self.status))
    }

    /// Builds the response to `request`.
    pub fn to_response(&self, request: &SipMessage) -> Result<SipMessage, sip_core::ParseError> {
        let mut r = SipMessage::response_to(request, self.status, self.reason_phrase())?;
        for (name, value) in &self.headers {
            r.push_header(*name, value.clone())?;
        }
        Ok(r)
    }
}

/// What the platform supports, announced in OPTIONS answers and checked against Require.
#[derive(Debug, Clone)]
pub struct Capabilities {
    /// Methods endpoints can receive (Allow).
    pub allow: Vec<Method>,
    /// Body types endpoints accept (Accept).
    pub accept: Vec<String>,
    /// Option tags understood (Supported); a Require outside this list gets 420.
    pub supported: Vec<String>,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            allow: vec![
                Method::Invite,
                Method::Ack,
                Method::Cancel,
                Method::Bye,
                Method::Options,
                Method::Message,
                Method::Info,
                Method::Notify,
                Method::Subscribe,
                Method::Benotify,
                Method::Refer,
                Method::Update,
            ],
            accept: vec![
                "application/sdp".into(),
                "text/plain".into(),
                "text/html".into(),
                "application/im-iscomposing+xml".into(),
                "multipart/alternative".into(),
            ],
            // Only what the platform implements: a peer that requires reliable
            // provisionals (100rel) or session timers (timer) gets 420, not a session
            // that silently lacks them.
            supported: vec!["gruu".into()],
        }
    }
}

/// Routes requests to endpoints by Request-URI: owner URI, then GRUU, then the default
/// routing endpoint.
#[derive(Debug, Clone, Default)]
pub struct Dispatcher {
    capabilities: Capabilities,
    owners: HashMap<String, EndpointId>,
    gruus: HashMap<String, EndpointId>,
    default: Option<EndpointId>,
}

impl Dispatcher {
    /// A dispatcher announcing `capabilities`.
    pub fn new(capabilities: Capabilities) -> Self {
        Dispatcher {
            capabilities,
            ..Default::default()
        }
    }

    /// Routes requests for `owner` (user and domain; parameters ignored) to `endpoint`.
    /// Endpoints act only for on-premises addresses.
    pub fn add_owner(&mut self, owner: &Address<OnPremises>, endpoint: EndpointId) {
        if let Ok(Uri::Sip(s)) = Uri::parse(owner.uri().as_bytes()) {
            self.owners.insert(owner_key(&s), endpoint);
        }
    }

    /// Routes requests whose Request-URI is this GRUU (RFC 5627) or contact to `endpoint`:
    /// same user (case-sensitive) and host (case-insensitive), and the same `gr` parameter
    /// (or, for a Lync-style GRUU without one, the same `opaque`; a contact has neither);
    /// other parameters may differ. A URI that is not a SIP URI routes nothing.
    pub fn add_gruu(&mut self, gruu: &str, endpoint: EndpointId) {
        if let Ok(Uri::Sip(s)) = Uri::parse(gruu.as_bytes()) {
            self.gruus.insert(gruu_key(&s, &owner_key(&s)), endpoint);
        }
    }

    /// Makes `endpoint` the default routing endpoint: it gets requests no owner matches.
    pub fn set_default(&mut self, endpoint: Option<EndpointId>) {
        self.default = endpoint;
    }

    /// Forgets every route to `endpoint` (it terminated).
    pub fn remove(&mut self, endpoint: EndpointId) {
        self.owners.retain(|_, e| *e != endpoint);
        self.gruus.retain(|_, e| *e != endpoint);
        if self.default == Some(endpoint) {
            self.default = None;
        }
    }

    /// Decides what happens to `request`. `trusted` is whether the connection it came on
    /// belongs to a trusted peer (or the listener allows untrusted peers); `in_dialog_unmatched`
    /// is true when it carries a To tag but matched no dialog.
    ///
    /// `for_home(uri)` says whether a Request-URI no owner or GRUU matched may go to the
    /// default endpoint: the application receives nothing on behalf of a federated user,
    /// so a request for one is answered 404 instead. `merged(endpoint)` says whether the
    /// request is a merged copy (§8.2.2.2) of one `endpoint` is processing (482).
    ///
    /// The checks run in the order of §8.2, each answer the first that applies:
    /// 400 (no method), 403 (untrusted peer: authentication comes first, §8.2 opening),
    /// 405/501 (§8.2.1), 416 and then 481 or 404 (§8.2.2.1: the Request-URI's scheme, the
    /// To tag — a BYE without one matches no dialog either, §15.1.2 — who the request is
    /// for), 482 (§8.2.2.2), 400 with the reason in the phrase (an INVITE, SUBSCRIBE or
    /// REFER without a single SIP or SIPS Contact, or with a Record-Route that is not a
    /// list of name-addrs: no usable dialog could be made from its answer, §8.1.1.8,
    /// §12.1.1), 420 (§8.2.2.3), 415 (§8.2.3).
    /// A peer learns the most relevant reason: a request for nobody here is 404 whatever
    /// it requires, as there is no one whose extensions or body types would matter.
    ///
    /// 481 comes before 420 and 415: §12.2.2 applies the §8.2 rules only to a request
    /// that matched a dialog, and a To tag that matches none is judged on the tag alone
    /// (recreate the dialog or answer 481). This side never recreates one, so it is not
    /// "the proper element to process the request" that §8.2.2.3 assumes before looking
    /// at Require; fixing the Require or the body would not make such a request succeed,
    /// and a 420 or 415 would invite a retry that can only get 481.
    ///
    /// OPTIONS is answered by the platform for any Request-URI it takes (no 404, and no
    /// 482: it never reaches an endpoint), after the 420 and 415 checks like any request.
    pub fn dispatch(
        &self,
        request: &SipMessage,
        trusted: bool,
        in_dialog_unmatched: bool,
        for_home: impl FnOnce(&[u8]) -> bool,
        merged: impl FnOnce(EndpointId) -> bool,
    ) -> Disposition {
        let Some(method) = request.method() else {
            return Disposition::Respond(Refusal::status(400));
        };
        if !trusted {
            return Disposition::Respond(Refusal::status(403));
        }
        if let Some(r) = self.not_allowed(method) {
            return Disposition::Respond(r);
        }
        let uri = request.request_uri_bytes().unwrap_or_default();
        let Ok(Uri::Sip(sip)) = Uri::parse(uri) else {
            return Disposition::Respond(Refusal::status(416));
        };
        // §15.1.2: a BYE that matches no dialog gets 481; one without a To tag never can
        // (it would otherwise reach an endpoint as if it ended a call there).
        let bye_outside =
            *method == Method::Bye && request.to().ok().is_none_or(|to| to.tag().is_none());
        if in_dialog_unmatched || bye_outside {
            return Disposition::Respond(Refusal::status(481));
        }
        let target = if *method == Method::Options {
            None
        } else {
            let owner = owner_key(&sip);
            let target = self
                .gruus
                .get(&gruu_key(&sip, &owner))
                .or_else(|| self.owners.get(&owner))
                .copied()
                .or_else(|| self.default.filter(|_| for_home(uri)));
            let Some(target) = target else {
                return Disposition::Respond(Refusal::status(404));
            };
            if merged(target) {
                return Disposition::Respond(Refusal::status(482));
            }
            if matches!(method, Method::Invite | Method::Subscribe | Method::Refer) {
                if let Some(why) = unusable_dialog_parts(request) {
                    return Disposition::Respond(Refusal::bad_request(why));
                }
            }
            Some(target)
        };
        if let Some(r) = self
            .unsupported(request, method)
            .or_else(|| undecodable(request, method))
        {
            return Disposition::Respond(r);
        }
        match target {
            Some(e) => Disposition::Deliver(e),
            None => Disposition::Respond(self.options_answer()),
        }
    }

    /// The checks for a request inside a dialog whose endpoint is known (§8.2 as far as it
    /// applies: the Request-URI is a Contact this side gave, so no routing by it, and a
    /// request with a To tag is never a merged copy): the response the platform sends
    /// itself (400, 403 untrusted, 405, 501, 400 for a target refresh whose Contact is not
    /// one SIP or SIPS URI, 420, 415, in that order), or `None` to deliver
    /// it to the dialog's endpoint. §12.2.2 runs these before the dialog's own checks (the
    /// CSeq order) and a refused request changes no dialog state, so call this before
    /// updating the dialog with the request.
    pub fn screen_in_dialog(&self, request: &SipMessage, trusted: bool) -> Option<Refusal> {
        let Some(method) = request.method() else {
            return Some(Refusal::status(400));
        };
        if !trusted {
            return Some(Refusal::status(403));
        }
        if let Some(r) = self.not_allowed(method) {
            return Some(r);
        }
        // A target refresh (re-INVITE, UPDATE, SUBSCRIBE, NOTIFY) replaces the remote target
        // with its Contact: one that could not be taken is refused rather than ignored, so
        // the peer does not believe its new target took. Without one the target stays.
        if method.is_target_refresh() {
            if let ContactCheck::Unusable(why) = check_contact(request) {
                return Some(Refusal::bad_request(why));
            }
        }
        self.unsupported(request, method)
            .or_else(|| undecodable(request, method))
    }

    /// [`screen_in_dialog`](Self::screen_in_dialog) for a NOTIFY that makes the dialog of a
    /// subscription this side asked for (RFC 6665 §4.1.2.4), and then 400 when no usable
    /// dialog can be made from it (no single SIP Contact, a Record-Route that is not a
    /// list of name-addrs).
    pub fn screen_dialog_maker(&self, request: &SipMessage, trusted: bool) -> Option<Refusal> {
        self.screen_in_dialog(request, trusted)
            .or_else(|| unusable_dialog_parts(request).map(Refusal::bad_request))
    }

    /// A method endpoints do not take: 405 with Allow when it is one SIP defines (the
    /// method is known but not supported here), 501 with Allow when it is an extension
    /// this side does not recognise (RFC 3261 §8.2.1, §21.5.2).
    fn not_allowed(&self, method: &Method) -> Option<Refusal> {
        if self.capabilities.allow.contains(method) || *method == Method::Options {
            return None;
        }
        let status = match method {
            Method::Extension(_) => 501,
            _ => 405,
        };
        let mut r = Refusal::status(status);
        r.headers.push((HeaderName::Allow, self.allow_value()));
        Some(r)
    }

    /// 420 with Unsupported when the request requires an option tag not supported here.
    fn unsupported(&self, request: &SipMessage, method: &Method) -> Option<Refusal> {
        // Most requests carry no Require: nothing to collect then.
        request.header(HeaderName::Require)?;
        let unsupported: Vec<String> = request
            .tokens(HeaderName::Require)
            .filter_map(Result::ok)
            .filter(|t| {
                !self
                    .capabilities
                    .supported
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(t))
            })
            .map(str::to_string)
            .collect();
        if !unsupported.is_empty() && *method != Method::Cancel && *method != Method::Ack {
            let mut r = Refusal::status(420);
            r.headers
                .push((HeaderName::Unsupported, unsupported.join(", ")));
            return Some(r);
        }
        None
    }

    fn allow_value(&self) -> String {
        let mut v: Vec<&str> = self.capabilities.allow.iter().map(Method::as_str).collect();
        if !v.contains(&"OPTIONS") {
            v.push("OPTIONS");
        }
        v.join(", ")
    }

    fn options_answer(&self) -> Refusal {
        Refusal {
            status: 200,
            reason: None,
            headers: vec![
                (HeaderName::Allow, self.allow_value()),
                (HeaderName::Accept, self.capabilities.accept.join(", ")),
                (HeaderName::AcceptEncoding, ACCEPT_ENCODING.into()),
                (
                    HeaderName::Supported,
                    self.capabilities.supported.join(", "),
                ),
            ],
        }
    }
}

/// The content codings endpoints can read (RFC 3261 §20.3): none but the identity, so a
/// peer that honours Accept-Encoding sends bodies as they are.
const ACCEPT_ENCODING: &str = "identity";

/// Why a request that makes a dialog (an INVITE, SUBSCRIBE or REFER outside any; a NOTIFY
/// that makes its subscription's) cannot make a usable one, as the reason phrase of a 400:
/// the dialog's remote target is the one SIP or SIPS URI of its Contact, which RFC 3261
/// §8.1.1.8 requires, and its route set the Record-Route, which must be a list of
/// name-addrs (§12.1.1). Refused before any endpoint answers, rather than made into a
/// dialog whose requests could not be built or would go where the peer did not say.
fn unusable_dialog_parts(request: &SipMessage) -> Option<&'static str> {
    let bad_record_route = request.header(HeaderName::RecordRoute).is_some()
        && request
            .name_addrs(HeaderName::RecordRoute)
            .any(|r| r.is_err());
    if bad_record_route {
        return Some("Malformed Record-Route");
    }
    match check_contact(request) {
        ContactCheck::Usable => None,
        ContactCheck::Absent => Some("Missing Contact"),
        ContactCheck::Unusable(why) => Some(why),
    }
}

/// The Contact of a request, which becomes a dialog's remote target.
enum ContactCheck {
    /// There is none.
    Absent,
    /// One SIP or SIPS URI.
    Usable,
    /// Something else, and why, as a reason phrase.
    Unusable(&'static str),
}

fn check_contact(request: &SipMessage) -> ContactCheck {
    let mut contacts = request.contacts();
    let Some(first) = contacts.next() else {
        return ContactCheck::Absent;
    };
    ContactCheck::Unusable(match (first, contacts.next()) {
        (Ok(Contact::Addr(a)), None) if a.uri().as_sip().is_some() => return ContactCheck::Usable,
        (Ok(Contact::Addr(_)), None) => "Contact Not a SIP URI",
        (Ok(Contact::Star), _) => "Contact * Not Allowed",
        (Err(_), _) => "Malformed Contact",
        (Ok(_), Some(_)) => "More Than One Contact",
    })
}

/// 415 with Accept-Encoding for a body in a content coding endpoints cannot read (RFC 3261
/// §8.2.3): nothing here decodes gzip or any other coding, and handing an endpoint bytes it
/// would take for plain text is worse than refusing them. Not for ACK, which gets no
/// response (the body types an endpoint takes are its own to check: it answers 415 with
/// Accept itself).
fn undecodable(request: &SipMessage, method: &Method) -> Option<Refusal> {
    // Most requests carry no Content-Encoding: nothing to read then.
    request.header(HeaderName::ContentEncoding)?;
    if *method == Method::Ack {
        return None;
    }
    let mut codings = request.tokens(HeaderName::ContentEncoding);
    let all_identity = codings.all(|c| c.is_ok_and(|c| c.eq_ignore_ascii_case(ACCEPT_ENCODING)));
    if all_identity {
        return None;
    }
    let mut r = Refusal::status(415);
    r.headers
        .push((HeaderName::AcceptEncoding, ACCEPT_ENCODING.into()));
    Some(r)
}

/// `user@domain` of a SIP URI, domain lower-cased, user decoded.
fn owner_key(s: &SipUri<'_>) -> String {
    let host = match s.host() {
        Host::Domain(d) => d.to_ascii_lowercase(),
        other => other.to_string(),
    };
    let user = s
        .user()
        .map(|u| String::from_utf8_lossy(&u).into_owned())
        .unwrap_or_default();
    format!("{user}@{host}")
}

/// `owner`, the URI's [`owner_key`], and what tells one instance's GRUU from the AOR: the
/// `gr` value (RFC 5627 §3.1; a URN, compared case-insensitively), else the `opaque` value
/// of a Lync-style GRUU, else nothing (an endpoint's contact, whose user part is its own).
/// RFC 3261 §19.1.4 equivalence would not do: it ignores a parameter only one URI has, so
/// it takes the AOR for its GRUU (RFC 5627 §4.1 warns of this).
fn gruu_key(s: &SipUri<'_>, owner: &str) -> String {
    let instance = s
        .param("gr")
        .or_else(|| s.param("opaque"))
        .flatten()
        .map(|v| String::from_utf8_lossy(&v).to_ascii_lowercase())
        .unwrap_or_default();
    format!("{owner};{instance}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, uri: &str, extra: &[(&str, &str)]) -> SipMessage {
        let mut b = SipMessage::request(Method::from_token(method.as_bytes()), uri.to_string())
            .header(
                HeaderName::Via,
                "SIP/2.0/TLS fe.contoso.test;branch=z9hG4bK1",
            )
            .header(HeaderName::From, "<sip:alice@contoso.test>;tag=1")
            .header(HeaderName::To, format!("<{uri}>"))
            .header(HeaderName::CallId, "c1")
            .header(HeaderName::CSeq, format!("1 {method}"));
        for (n, v) in extra {
            b = b.header(*n, v.to_string());
        }
        b.build().unwrap()
    }

    /// §8.1.1.8, §12.1.1: a request that makes a dialog needs one SIP or SIPS Contact and a
    /// Record-Route of name-addrs; without them it gets 400 saying what is wrong, before any
    /// endpoint sees it. Requests that make no dialog need neither.
    #[test]
    fn dialog_makers_without_a_usable_contact_or_route_set_get_400_with_the_reason() {
        let d = dispatcher();
        let uri = "sip:bot@contoso.test";
        let ok = ("Contact", "<sip:alice@pc.contoso.test;transport=tls>");
        // The request's extra header fields, and the reason of its 400 (none: delivered).
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
        let cases: &[Case] = &[
            (&[ok], None),
            (&[("Contact", "sips:alice@pc.contoso.test")], None),
            (&[("Contact", "\"A \\\"q\\\"\" <sip:a@h>;expires=5")], None),
            (&[], Some("Missing Contact")),
            (
                &[("Contact", "<tel:+14255550100>")],
                Some("Contact Not a SIP URI"),
            ),
            (&[("Contact", "*")], Some("Contact * Not Allowed")),
            (&[("Contact", "<sip:alice@pc")], Some("Malformed Contact")),
            (
                &[("Contact", "<sip:a@h1>, <sip:a@h2>")],
                Some("More Than One Contact"),
            ),
            (
                &[ok, ("Contact", "<sip:a@h2>")],
                Some("More Than One Contact"),
            ),
            (
                &[ok, ("Record-Route", "<sip:p1;lr>, <sip:p2;lr")],
                Some("Malformed Record-Route"),
            ),
            (&[ok, ("Record-Route", "<sip:p1;lr>, <sip:p2;lr>")], None),
        ];
        for method in ["INVITE", "SUBSCRIBE", "REFER"] {
            for (extra, why) in cases {
                let r = request(method, uri, extra);
                let got = d.dispatch(&r, true, false, |_| true, |_| false);
                match why {
                    None => assert_eq!(got, Disposition::Deliver(EndpointId(1)), "{r}"),
                    Some(why) => {
                        let Disposition::Respond(x) = got else {
                            panic!("{method} {extra:?}: {got:?}")
                        };
                        assert_eq!((x.status, x.reason_phrase()), (400, *why), "{r}");
                        let wire = x.to_response(&r).unwrap().to_bytes();
                        let line = format!("SIP/2.0 400 {why}\r\n");
                        assert!(wire.starts_with(line.as_bytes()));
                    }
                }
            }
        }
        // MESSAGE makes no dialog: no Contact needed.
        let r = request("MESSAGE", uri, &[("Record-Route", "<sip:p2;lr")]);
        assert_eq!(
            d.dispatch(&r, true, false, |_| true, |_| false),
            Disposition::Deliver(EndpointId(1))
        );
        // A NOTIFY making a subscription's dialog: the same checks after the in-dialog ones.
        let r = request("NOTIFY", uri, &[]);
        assert_eq!(
            d.screen_dialog_maker(&r, true).and_then(|x| x.reason),
            Some("Missing Contact")
        );
        assert_eq!(
            d.screen_dialog_maker(&r, false).map(|x| x.status),
            Some(403)
        );
        assert_eq!(
            d.screen_dialog_maker(&request("NOTIFY", uri, &[ok]), true),
            None
        );
        // In a dialog, a target refresh may leave its Contact out (the target stays), but
        // one it gives must be usable; other requests' Contacts are not looked at.
        let tel = ("Contact", "<tel:+14255550100>");
        for method in ["INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY"] {
            let r = request(method, uri, &[tel]);
            let x = d.screen_in_dialog(&r, true).expect("refused");
            assert_eq!((x.status, x.reason), (400, Some("Contact Not a SIP URI")));
            assert_eq!(d.screen_in_dialog(&request(method, uri, &[]), true), None);
        }
        assert_eq!(
            d.screen_in_dialog(&request("INFO", uri, &[tel]), true),
            None
        );
    }

    fn dispatcher() -> Dispatcher {
        let mut d = Dispatcher::new(Capabilities::default());
        let bot = Address::assume_on_premises("sip:bot@contoso.test").unwrap();
        d.add_owner(&bot, EndpointId(1));
        d.add_gruu("sip:bot@contoso.test;gr=urn:uuid:0001", EndpointId(2));
        d
    }

    #[test]
    fn delivers_by_owner_then_gruu_then_default() {
        let mut d = dispatcher();
        let r = request("MESSAGE", "sip:bot@CONTOSO.test;transport=tls", &[]);
        assert_eq!(
            d.dispatch(&r, true, false, |_| true, |_| false),
            Disposition::Deliver(EndpointId(1))
        );
        let r = request("MESSAGE", "sip:bot@contoso.test;gr=urn:uuid:0001", &[]);
        assert_eq!(
            d.dispatch(&r, true, false, |_| true, |_| false),
            Disposition::Deliver(EndpointId(2))
        );
        let r = request("MESSAGE", "sip:nobody@contoso.test", &[]);
        assert_eq!(
            d.dispatch(&r, true, false, |_| true, |_| false),
            Disposition::Respond(Refusal::status(404))
        );
        d.set_default(Some(EndpointId(3)));
        assert_eq!(
            d.dispatch(&r, true, false, |_| true, |_| false),
            Disposition::Deliver(EndpointId(3))
        );
        // The GRUU as a peer may write it back: host case, parameter order, a parameter
        // added, the URN's case. A user part in another case is another user.
        for written in [
            "sip:bot@Contoso.Test;transport=tls;gr=urn:uuid:0001",
            "sip:bot@contoso.test;gr=URN:UUID:0001;ob",
        ] {
            let r = request("MESSAGE", written, &[]);
            assert_eq!(
                d.dispatch(&r, true, false, |_| true, |_| false),
                Disposition::Deliver(EndpointId(2)),
                "{written}"
            );
        }
        // A contact route (no gr): matched by user and host, whatever its parameters.
        d.add_gruu(
            "sip:bot%40contoso.test@app.contoso.test;transport=tls",
            EndpointId(4),
        );
        let to_contact = request(
            "MESSAGE",
            "sip:bot%40contoso.test@APP.contoso.test:5061",
            &[],
        );
        assert_eq!(
            d.dispatch(&to_contact, true, false, |_| true, |_| false),
            Disposition::Deliver(EndpointId(4))
        );
        // Another instance's GRUU of the same AOR is the owner's; another user's is not.
        for (other, to) in [
            ("sip:bot@contoso.test;gr=urn:uuid:0002", 1),
            ("sip:BOT@contoso.test;gr=urn:uuid:0001", 3),
        ] {
            let r = request("MESSAGE", other, &[]);
            assert_eq!(
                d.dispatch(&r, true, false, |_| true, |_| false),
                Disposition::Deliver(EndpointId(to)),
                "{other}"
            );
        }
        // Not for a federated user's Request-URI, even with a default endpoint.
        let fed = request("MESSAGE", "sip:bob@fabrikam.test", &[]);
        assert_eq!(
            d.dispatch(
                &fed,
                true,
                false,
                |u| u != b"sip:bob@fabrikam.test",
                |_| false
            ),
            Disposition::Respond(Refusal::status(404))
        );
        // An owner's own requests are not asked about.
        let mine = request("MESSAGE", "sip:bot@contoso.test", &[]);
        assert_eq!(
            d.dispatch(&mine, true, false, |_| false, |_| false),
            Disposition::Deliver(EndpointId(1))
        );
        d.remove(EndpointId(3));
        assert!(matches!(
            d.dispatch(&r, true, false, |_| true, |_| false),
            Disposition::Respond(_)
        ));
    }

    #[test]
    fn platform_answers() {
        let d = dispatcher();
        let r = request("MESSAGE", "sip:bot@contoso.test", &[]);
        assert_eq!(
            d.dispatch(&r, false, false, |_| true, |_| false),
            Disposition::Respond(Refusal::status(403))
        );
        assert_eq!(
            d.dispatch(&r, true, true, |_| true, |_| false),
            Disposition::Respond(Refusal::status(481))
        );
        let r = request("FROBNICATE", "sip:bot@contoso.test", &[]);
        let Disposition::Respond(x) = d.dispatch(&r, true, false, |_| true, |_| false) else {
            panic!()
        };
        assert_eq!(x.status, 501);
        assert!(x
            .headers
            .iter()
            .any(|(n, v)| *n == HeaderName::Allow && v.contains("MESSAGE")));
        let r = request(
            "MESSAGE",
            "sip:bot@contoso.test",
            &[("Require", "gruu, 100rel, nothingSupportsThis")],
        );
        let Disposition::Respond(x) = d.dispatch(&r, true, false, |_| true, |_| false) else {
            panic!()
        };
        assert_eq!(x.status, 420);
        assert_eq!(
            x.headers,
            vec![(
                HeaderName::Unsupported,
                "100rel, nothingSupportsThis".into()
            )]
        );
        let resp = x.to_response(&r).unwrap();
        let wire = String::from_utf8(resp.to_bytes().to_vec()).unwrap();
        assert!(wire.starts_with("SIP/2.0 420 Bad Extension\r\n"));
        assert!(wire.contains("\r\nUnsupported: 100rel, nothingSupportsThis\r\n"));
        // Session timers are not implemented either.
        let r = request(
            "INVITE",
            "sip:bot@contoso.test",
            &[
                ("Require", "timer"),
                ("Contact", "<sip:alice@pc.contoso.test>"),
            ],
        );
        let Disposition::Respond(x) = d.dispatch(&r, true, false, |_| true, |_| false) else {
            panic!()
        };
        assert_eq!(x.status, 420);
        // A method SIP defines that endpoints do not take: 405 with Allow.
        let r = request("REGISTER", "sip:bot@contoso.test", &[]);
        let Disposition::Respond(x) = d.dispatch(&r, true, false, |_| true, |_| false) else {
            panic!()
        };
        assert_eq!(x.status, 405);
        assert!(x.headers.iter().any(|(n, _)| *n == HeaderName::Allow));
        let r = request("OPTIONS", "sip:contoso.test", &[]);
        let Disposition::Respond(x) = d.dispatch(&r, true, false, |_| true, |_| false) else {
            panic!()
        };
        assert_eq!(x.status, 200);
        let names: Vec<_> = x.headers.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                HeaderName::Allow,
                HeaderName::Accept,
                HeaderName::AcceptEncoding,
                HeaderName::Supported
            ]
        );
        let r = request("MESSAGE", "tel:+14255550100", &[]);
        assert_eq!(
            d.dispatch(&r, true, false, |_| true, |_| false),
            Disposition::Respond(Refusal::status(416))
        );
    }

    /// The status of what `d` answers, or 0 when it delivers.
    fn status(got: Disposition) -> u16 {
        match got {
            Disposition::Respond(r) => r.status,
            Disposition::Deliver(_) => 0,
        }
    }

    /// §8.2's order: each request below fails two or more checks and must get the answer
    /// of the one §8.2 makes first (the platform used to check Require and the content
    /// coding before who the request is for, and the merged copies after both).
    #[test]
    fn checks_run_in_the_order_of_rfc_3261_section_8_2() {
        let d = dispatcher();
        let require = ("Require", "nothingSupportsThis");
        let gzip = ("Content-Encoding", "gzip");
        // Method, Request-URI, extra header fields, To tag of no dialog, merged, answer.
        type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], bool, bool, u16);
        let cases: [Case; 14] = [
            // §8.2.1 before everything in §8.2.2.
            ("REGISTER", "tel:+1", &[require, gzip], false, true, 405),
            (
                "FROBNICATE",
                "sip:nobody@contoso.test",
                &[require],
                true,
                false,
                501,
            ),
            // §8.2.2.1: the scheme, then the To tag, then who the request is for.
            ("MESSAGE", "tel:+1", &[require, gzip], true, true, 416),
            (
                "INFO",
                "sip:nobody@contoso.test",
                &[require, gzip],
                true,
                true,
                481,
            ),
            (
                "MESSAGE",
                "sip:nobody@contoso.test",
                &[require],
                false,
                false,
                404,
            ),
            (
                "MESSAGE",
                "sip:nobody@contoso.test",
                &[gzip],
                false,
                false,
                404,
            ),
            (
                "INVITE",
                "sip:nobody@contoso.test",
                &[require, gzip],
                false,
                true,
                404,
            ),
            // §8.2.2.2 before §8.2.2.3 and §8.2.3.
            (
                "MESSAGE",
                "sip:bot@contoso.test",
                &[require, gzip],
                false,
                true,
                482,
            ),
            ("INVITE", "sip:bot@contoso.test", &[gzip], false, true, 482),
            // §8.2.2.3 before §8.2.3.
            (
                "MESSAGE",
                "sip:bot@contoso.test",
                &[require, gzip],
                false,
                false,
                420,
            ),
            (
                "MESSAGE",
                "sip:bot@contoso.test",
                &[gzip],
                false,
                false,
                415,
            ),
            // §15.1.2: a BYE outside any dialog matches none, whoever it is for.
            ("BYE", "sip:bot@contoso.test", &[], false, false, 481),
            (
                "BYE",
                "sip:nobody@contoso.test",
                &[require],
                false,
                false,
                481,
            ),
            // OPTIONS is the platform's to answer for anyone, after Require.
            (
                "OPTIONS",
                "sip:nobody@contoso.test",
                &[require],
                false,
                false,
                420,
            ),
        ];
        for (method, uri, extra, unmatched, merged, want) in cases {
            let r = request(method, uri, extra);
            let got = d.dispatch(&r, true, unmatched, |_| true, |_| merged);
            assert_eq!(status(got), want, "{method} {uri} {extra:?}");
        }
    }

    /// The merged check is asked about the endpoint the request is routed to, and only
    /// once there is one: nothing is merged into a request for no one.
    #[test]
    fn merged_copies_are_looked_up_for_the_routed_endpoint() {
        let mut d = dispatcher();
        let mut asked = Vec::new();
        for uri in [
            "sip:bot@contoso.test",
            "sip:bot@contoso.test;gr=urn:uuid:0001",
            "sip:nobody@contoso.test",
        ] {
            let r = request("MESSAGE", uri, &[]);
            let got = d.dispatch(
                &r,
                true,
                false,
                |_| true,
                |e| {
                    asked.push(e);
                    false
                },
            );
            assert_ne!(status(got), 482, "{uri}");
        }
        assert_eq!(asked, [EndpointId(1), EndpointId(2)]);
        // The default endpoint's merged copies too; OPTIONS never reaches an endpoint.
        d.set_default(Some(EndpointId(3)));
        let r = request("MESSAGE", "sip:nobody@contoso.test", &[]);
        assert_eq!(
            d.dispatch(&r, true, false, |_| true, |e| e == EndpointId(3)),
            Disposition::Respond(Refusal::status(482))
        );
        let r = request("OPTIONS", "sip:bot@contoso.test", &[]);
        assert_eq!(status(d.dispatch(&r, true, false, |_| true, |_| true)), 200);
    }

    #[test]
    fn in_dialog_requests_of_a_known_dialog_are_screened_not_routed() {
        let d = dispatcher();
        // Whatever the Request-URI (our Contact), a request of a known dialog passes.
        let m = request("MESSAGE", "sip:bot@127.0.0.1:5061;transport=tls", &[]);
        assert_eq!(d.screen_in_dialog(&m, true), None);
        assert_eq!(d.screen_in_dialog(&m, false).map(|r| r.status), Some(403));
        let m = request(
            "MESSAGE",
            "sip:bot@127.0.0.1:5061",
            &[("Require", "foo, gruu")],
        );
        let r = d.screen_in_dialog(&m, true).unwrap();
        assert_eq!(r.status, 420);
        assert_eq!(
            r.headers,
            vec![(HeaderName::Unsupported, "foo".to_string())]
        );
        let m = request("PUBLISH", "sip:bot@127.0.0.1:5061", &[]);
        assert_eq!(d.screen_in_dialog(&m, true).map(|r| r.status), Some(405));
        let m = request("FROBNICATE", "sip:bot@127.0.0.1:5061", &[]);
        assert_eq!(d.screen_in_dialog(&m, true).map(|r| r.status), Some(501));
        // §8.2.3: a body in a coding nobody here decodes, inside a dialog too.
        let m = request(
            "INFO",
            "sip:bot@127.0.0.1:5061",
            &[("Content-Encoding", "gzip")],
        );
        let r = d.screen_in_dialog(&m, true).unwrap();
        assert_eq!(r.status, 415);
        assert_eq!(
            r.headers,
            vec![(HeaderName::AcceptEncoding, "identity".to_string())]
        );
    }

    #[test]
    fn content_codings_other_than_identity_get_415_with_accept_encoding() {
        let d = dispatcher();
        for (coding, refused) in [
            ("gzip", true),
            ("identity, deflate", true),
            ("x-unknown", true),
            ("identity", false),
            ("IDENTITY", false),
        ] {
            let r = request(
                "MESSAGE",
                "sip:bot@contoso.test",
                &[("Content-Type", "text/plain"), ("Content-Encoding", coding)],
            );
            let got = d.dispatch(&r, true, false, |_| true, |_| false);
            if refused {
                let Disposition::Respond(x) = got else {
                    panic!("{coding}: {got:?}")
                };
                assert_eq!(x.status, 415, "{coding}");
                assert_eq!(
                    x.headers,
                    vec![(HeaderName::AcceptEncoding, "identity".to_string())]
                );
            } else {
                assert_eq!(got, Disposition::Deliver(EndpointId(1)), "{coding}");
            }
        }
        // The compact form is the same header field (RFC 3261 §7.3.3).
        let r = request("MESSAGE", "sip:bot@contoso.test", &[("e", "gzip")]);
        assert!(matches!(
            d.dispatch(&r, true, false, |_| true, |_| false),
            Disposition::Respond(Refusal { status: 415, .. })
        ));
    }
}
