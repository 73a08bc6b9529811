//! [`Dialogs`]: the container and the §12 rules.

use super::{
    dialog_key, request_uri_of, route_uri, Dialog, DialogError, DialogId, DialogParts, DialogRole,
    DialogState, DialogUpdate,
};
use crate::transaction::{new_call_id, new_tag, push_branch, IdGenerator, RandomIds, BRANCH_LEN};
use crate::{Contact, HeaderName, MessageBuilder, Method, NameAddr, SipMessage, Uri};
use bytes::Bytes;
// foldhash (seeded per map) instead of SipHash: these maps are looked up for every message.
use foldhash::{HashMap, HashMapExt};
use std::fmt;

/// Every dialog of a user agent, keyed by (Call-ID, local tag, remote tag); O(1) lookup.
pub struct Dialogs {
    map: HashMap<DialogId, Dialog>,
    /// Early UAC dialogs per (Call-ID, local tag): a forked INVITE's failure ends them all.
    early: HashMap<DialogId, Vec<DialogId>>,
    ids: Box<dyn IdGenerator>,
}

impl fmt::Debug for Dialogs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dialogs")
            .field("dialogs", &self.map.len())
            .finish()
    }
}

impl Default for Dialogs {
    fn default() -> Self {
        Self::new()
    }
}

fn tag_of<'a>(na: &NameAddr<'a>) -> Option<&'a [u8]> {
    na.tag().filter(|t| !t.is_empty())
}

/// The Contact URI of a message (the remote target), or `fallback`'s, as a Request-URI
/// (see [`request_uri_of`]).
fn contact_uri<'m>(msg: &'m SipMessage, fallback: &NameAddr<'m>) -> &'m [u8] {
    match msg.contacts().next() {
        Some(Ok(Contact::Addr(a))) => request_uri_of(a.uri()),
        _ => request_uri_of(fallback.uri()),
    }
}

/// Record-Route values in order, each checked to be a name-addr.
fn record_route(msg: &SipMessage, reverse: bool) -> Result<Vec<&[u8]>, DialogError> {
    let mut v = Vec::new();
    for r in msg.header_values(HeaderName::RecordRoute) {
        NameAddr::parse(r, "Record-Route")?;
        v.push(r);
    }
    if reverse {
        v.reverse();
    }
    Ok(v)
}

/// Where a UAC dialog's route set comes from.
#[derive(Clone, Copy)]
enum RouteSet {
    /// The response's Record-Route, reversed (§12.1.2).
    FromRecordRoute,
    /// None: the dialog is made only to be ended (see `Dialogs::confirm_to_end`).
    None,
}

fn is_sips(request: &SipMessage) -> bool {
    matches!(request.request_uri(), Some(Ok(Uri::Sip(s))) if s.is_secure())
}

impl Dialogs {
    /// An empty set with random tags ([`RandomIds`]).
    pub fn new() -> Self {
        Self::with_ids(Box::new(RandomIds::new()))
    }

    /// An empty set taking tags, branches and Call-IDs from `ids` (deterministic tests).
    pub fn with_ids(ids: Box<dyn IdGenerator>) -> Self {
        Dialogs {
            map: HashMap::new(),
            early: HashMap::new(),
            ids,
        }
    }

    /// A fresh tag for a From header or a dialog-creating response's To.
    pub fn new_tag(&mut self) -> String {
        new_tag(&mut *self.ids)
    }

    /// A fresh Call-ID (`hex@host` when a host is given).
    pub fn new_call_id(&mut self, host: Option<&str>) -> String {
        new_call_id(&mut *self.ids, host)
    }

    /// The dialog with this id.
    pub fn get(&self, id: &DialogId) -> Option<&Dialog> {
        self.map.get(id)
    }

    /// How many dialogs exist.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Attaches `owner` (an opaque number, e.g. which endpoint owns the dialog) to a dialog;
    /// false when there is no such dialog.
    pub fn set_owner(&mut self, id: &DialogId, owner: u64) -> bool {
        match self.map.get_mut(id) {
            Some(d) => {
                d.owner = owner;
                true
            }
            None => false,
        }
    }

    /// Detaches `owner` from every dialog it owns (the endpoint went away).
    pub fn clear_owner(&mut self, owner: u64) {
        for d in self.map.values_mut() {
            if d.owner == owner {
                d.owner = 0;
            }
        }
    }

    /// Every dialog with its id.
    pub fn iter(&self) -> impl Iterator<Item = (&DialogId, &Dialog)> + '_ {
        self.map.iter()
    }

    /// Ends a dialog (the TU decided so, e.g. after sending BYE or on a session timer).
    pub fn remove(&mut self, id: &DialogId) -> Option<Dialog> {
        self.forget_early(id);
        self.map.remove(id)
    }

    /// Ends the early dialogs of the INVITE with this Call-ID and local tag still waiting
    /// (e.g. when its client transaction ends after one fork answered 2xx).
    pub fn terminate_early(&mut self, call_id: &[u8], local_tag: &[u8]) -> Vec<DialogId> {
        let ids = self
            .early
            .remove(&DialogId::new(call_id, local_tag, b""))
            .unwrap_or_default();
        let mut ended = Vec::with_capacity(ids.len());
        for id in ids {
            if self
                .map
                .get(&id)
                .is_some_and(|d| d.state == DialogState::Early)
            {
                self.map.remove(&id);
                ended.push(id);
            }
        }
        ended
    }

    fn forget_early(&mut self, id: &DialogId) {
        // Most dialogs are confirmed by the first response with a tag: nothing to forget,
        // and no group key to build.
        if self.early.is_empty() {
            return;
        }
        let group = DialogId::new(id.call_id(), id.local_tag(), b"");
        if let Some(v) = self.early.get_mut(&group) {
            v.retain(|x| x != id);
            if v.is_empty() {
                self.early.remove(&group);
            }
        }
    }

    /// A response to `request`, which this UA sent (§12.1.2, §12.2.1.2, §13.2.2).
    pub fn handle_uac_response(
        &mut self,
        request: &SipMessage,
        response: &SipMessage,
    ) -> Result<DialogUpdate, DialogError> {
        self.uac_response(request, response, RouteSet::FromRecordRoute)
    }

    /// The dialog of a 2xx to INVITE `request` that
    /// [`handle_uac_response`](Self::handle_uac_response) refused because a Record-Route
    /// value is not a name-addr: made without a route set (its requests go to the 2xx's
    /// Contact), only so that the UAC can ACK the 2xx and end the call with BYE, as RFC 3261
    /// §13.2.2.4 asks for every 2xx. Errors as `handle_uac_response` does for anything else
    /// wrong, and with [`DialogError::NoDialog`] for a response that is not a 2xx to an
    /// INVITE.
    pub fn confirm_to_end(
        &mut self,
        request: &SipMessage,
        response: &SipMessage,
    ) -> Result<DialogId, DialogError> {
        let invite_2xx = request.method() == Some(&Method::Invite)
            && response.status().is_some_and(|s| (200..300).contains(&s));
        if !invite_2xx {
            return Err(DialogError::NoDialog);
        }
        match self.uac_response(request, response, RouteSet::None)? {
            DialogUpdate::Confirmed(id) => Ok(id),
            _ => Err(DialogError::NoDialog),
        }
    }

    fn uac_response(
        &mut self,
        request: &SipMessage,
        response: &SipMessage,
        route_set: RouteSet,
    ) -> Result<DialogUpdate, DialogError> {
        let routes_of = |response| match route_set {
            RouteSet::FromRecordRoute => record_route(response, true),
            RouteSet::None => Ok(Vec::new()),
        };
        let status = response
            .status()
            .ok_or(crate::ParseError::StartLine("expected a response"))?;
        let method = request
            .method()
            .ok_or(crate::ParseError::StartLine("expected a request"))?;
        let call_id = request.call_id()?;
        let from = request.from()?;
        let local_tag = from.tag().ok_or(crate::ParseError::Missing("From tag"))?;
        let to_tag = match request.to()?.tag() {
            Some(t) => Some(t),
            // A dialog made by a 2xx without a To tag has a null remote tag (§12.1.2), so
            // the requests sent in it carry none: one of those is known by the dialog.
            // INVITE, CANCEL and ACK without a tag stay the initial INVITE's.
            None if !matches!(method, Method::Invite | Method::Cancel | Method::Ack)
                && dialog_key(call_id, local_tag, b"", |k| self.map.contains_key(k)) =>
            {
                Some(&b""[..])
            }
            None => None,
        };
        if let Some(rtag) = to_tag {
            // In-dialog request.
            let id = DialogId::new(call_id, local_tag, rtag);
            let Some(d) = self.map.get_mut(&id) else {
                return Err(DialogError::NoDialog);
            };
            // A BYE's final response ends the dialog, except a challenge: the BYE is sent
            // again with credentials in the same dialog (§22.2).
            let bye_done = *method == Method::Bye && status >= 200 && !matches!(status, 401 | 407);
            // §12.2.1.2's 481/408 speak of the dialog, except that a CANCEL's 481 says no
            // transaction matched it (§9.2; a CANCEL is hop by hop, its 408 a proxy's), and
            // a PRACK's that no reliable provisional response awaits it (RFC 3262 §3).
            let about_transaction =
                *method == Method::Cancel || (*method == Method::Prack && status == 481);
            if (matches!(status, 408 | 481) && !about_transaction) || bye_done {
                self.remove(&id);
                return Ok(DialogUpdate::Terminated(vec![id]));
            }
            if (200..300).contains(&status) && method.is_target_refresh() {
                if let Some(Ok(Contact::Addr(a))) = response.contacts().next() {
                    d.update(request_uri_of(a.uri()), None::<std::iter::Empty<&[u8]>>);
                }
            }
            return Ok(DialogUpdate::Updated(id));
        }
        if matches!(method, Method::Subscribe | Method::Refer) {
            return self.subscription_response(request, response, status);
        }
        if *method != Method::Invite {
            return Ok(DialogUpdate::Unchanged);
        }
        if status >= 300 {
            let ended = self.terminate_early(call_id, local_tag);
            return Ok(if ended.is_empty() {
                DialogUpdate::Unchanged
            } else {
                DialogUpdate::Terminated(ended)
            });
        }
        let to = response.to()?;
        let confirm = status >= 200;
        let remote_tag = match tag_of(&to) {
            Some(t) => t,
            // An RFC 2543 UAS answers without a To tag: "the tag is considered to have a
            // value of null" (§12.1.2), and the 2xx must still make a dialog to ACK. A 1xx
            // without a tag makes no early dialog (§12.1).
            None if confirm => &[],
            None => return Ok(DialogUpdate::Unchanged),
        };
        if status == 100 {
            return Ok(DialogUpdate::Unchanged);
        }
        let id = DialogId::new(call_id, local_tag, remote_tag);
        if let Some(d) = self.map.get_mut(&id) {
            // A later 1xx or the 2xx of an early dialog: refresh target, and on 2xx recompute
            // the route set (§13.2.2.4) and confirm. Once confirmed, only target refresh
            // requests change the target (§12.2.1.2): a late 1xx or a retransmitted 2xx
            // changes nothing.
            if d.state != DialogState::Early {
                return Ok(if confirm {
                    DialogUpdate::Confirmed(id)
                } else {
                    DialogUpdate::Unchanged
                });
            }
            // Without a Contact (which §12.1.1 requires) the target the early dialog learnt
            // stays: the To URI is a worse guess than a device that already answered.
            let kept = d.share(d.remote_target());
            let target = match response.contacts().next() {
                Some(Ok(Contact::Addr(a))) => request_uri_of(a.uri()),
                _ => &kept[..],
            };
            if confirm {
                let routes = routes_of(response)?;
                d.update(target, Some(routes.iter().copied()));
                d.state = DialogState::Confirmed;
                self.forget_early(&id);
            } else {
                d.update(target, None::<std::iter::Empty<&[u8]>>);
            }
            return Ok(if confirm {
                DialogUpdate::Confirmed(id)
            } else {
                DialogUpdate::Updated(id)
            });
        }
        let dialog = Dialog::new(DialogParts {
            role: DialogRole::Uac,
            state: if confirm {
                DialogState::Confirmed
            } else {
                DialogState::Early
            },
            secure: is_sips(request),
            local_seq: Some(request.cseq()?.seq()),
            remote_seq: None,
            local_uri: request.header(HeaderName::From).unwrap_or_default(),
            remote_uri: response.header(HeaderName::To).unwrap_or_default(),
            remote_target: contact_uri(response, &to),
            routes: routes_of(response)?.iter().copied(),
        });
        self.map.insert(id.clone(), dialog);
        if confirm {
            Ok(DialogUpdate::Confirmed(id))
        } else {
            self.early
                .entry(DialogId::new(call_id, local_tag, b""))
                .or_default()
                .push(id.clone());
            Ok(DialogUpdate::Early(id))
        }
    }

    /// A 2xx to an initial SUBSCRIBE or REFER creates the subscription's dialog, or finds
    /// the one a NOTIFY already created (RFC 6665 §4.1.2.4); other statuses change nothing
    /// (a subscription has no early dialog).
    fn subscription_response(
        &mut self,
        request: &SipMessage,
        response: &SipMessage,
        status: u16,
    ) -> Result<DialogUpdate, DialogError> {
        if !(200..300).contains(&status) {
            return Ok(DialogUpdate::Unchanged);
        }
        let to = response.to()?;
        let Some(remote_tag) = tag_of(&to) else {
            return Ok(DialogUpdate::Unchanged);
        };
        let from = request.from()?;
        let local_tag = from.tag().ok_or(crate::ParseError::Missing("From tag"))?;
        let id = DialogId::new(request.call_id()?, local_tag, remote_tag);
        if self.map.contains_key(&id) {
            return Ok(DialogUpdate::Confirmed(id));
        }
        let dialog = Dialog::new(DialogParts {
            role: DialogRole::Uac,
            state: DialogState::Confirmed,
            secure: is_sips(request),
            local_seq: Some(request.cseq()?.seq()),
            remote_seq: None,
            local_uri: request.header(HeaderName::From).unwrap_or_default(),
            remote_uri: response.header(HeaderName::To).unwrap_or_default(),
            remote_target: contact_uri(response, &to),
            routes: record_route(response, true)?.iter().copied(),
        });
        self.map.insert(id.clone(), dialog);
        Ok(DialogUpdate::Confirmed(id))
    }

    /// A NOTIFY for `subscribe`, a SUBSCRIBE or REFER this UA sent, that matched no dialog:
    /// it creates the subscription's dialog (RFC 6665 §4.1.2.4: the NOTIFY may overtake the
    /// 2xx). The subscriber is the UAS of the NOTIFY, so the route set is the NOTIFY's
    /// Record-Route in order and the remote target its Contact. Errors when the NOTIFY does
    /// not belong to `subscribe` (Call-ID or tag differ: answer 481).
    pub fn handle_notify(
        &mut self,
        subscribe: &SipMessage,
        notify: &SipMessage,
    ) -> Result<DialogUpdate, DialogError> {
        let call_id = subscribe.call_id()?;
        let local_tag = subscribe
            .from()?
            .tag()
            .ok_or(crate::ParseError::Missing("From tag"))?
            .to_owned();
        if notify.call_id()? != call_id || notify.to()?.tag() != Some(local_tag.as_slice()) {
            return Err(DialogError::NoDialog);
        }
        let from = notify.from()?;
        let Some(remote_tag) = tag_of(&from) else {
            return Err(DialogError::NoDialog);
        };
        let id = DialogId::new(call_id, &local_tag, remote_tag);
        if self.map.contains_key(&id) {
            return self.handle_request(notify);
        }
        let dialog = Dialog::new(DialogParts {
            role: DialogRole::Uac,
            state: DialogState::Confirmed,
            secure: is_sips(subscribe),
            local_seq: Some(subscribe.cseq()?.seq()),
            remote_seq: Some(notify.cseq()?.seq()),
            local_uri: subscribe.header(HeaderName::From).unwrap_or_default(),
            remote_uri: notify.header(HeaderName::From).unwrap_or_default(),
            remote_target: contact_uri(notify, &from),
            routes: record_route(notify, false)?.iter().copied(),
        });
        self.map.insert(id.clone(), dialog);
        Ok(DialogUpdate::Confirmed(id))
    }

    /// A response this UA sends to `request` (§12.1.1): a 1xx (not 100) or 2xx with a To
    /// tag to an INVITE outside a dialog makes the UAS dialog or confirms it; a non-2xx
    /// final ends the early one. A 2xx to a SUBSCRIBE or REFER makes the notifier's dialog
    /// (RFC 6665 §4.2.1), in which it then sends NOTIFYs.
    pub fn handle_uas_response(
        &mut self,
        request: &SipMessage,
        response: &SipMessage,
    ) -> Result<DialogUpdate, DialogError> {
        self.handle_uas_response_as(request, response, None)
    }

    /// As [`handle_uas_response`](Self::handle_uas_response); a dialog it makes is stored
    /// under `id` when that is its id, so copies of `id` the layers above hold share the
    /// dialog set's key instead of each holding its own.
    pub fn handle_uas_response_as(
        &mut self,
        request: &SipMessage,
        response: &SipMessage,
        id: Option<&DialogId>,
    ) -> Result<DialogUpdate, DialogError> {
        let hint = id;
        let status = response
            .status()
            .ok_or(crate::ParseError::StartLine("expected a response"))?;
        let subscription = matches!(request.method(), Some(Method::Subscribe | Method::Refer));
        if !(request.method() == Some(&Method::Invite) || subscription)
            || request.to()?.tag().is_some()
        {
            return Ok(DialogUpdate::Unchanged);
        }
        // A subscription's dialog comes from its 2xx only (RFC 6665 §4.2.1: no early one).
        if subscription && !(200..300).contains(&status) {
            return Ok(DialogUpdate::Unchanged);
        }
        let Some(local_tag) = tag_of(&response.to()?) else {
            return Ok(DialogUpdate::Unchanged);
        };
        let from = request.from()?;
        let remote_tag = from.tag().unwrap_or_default();
        let call_id = request.call_id()?;
        let id = match hint {
            Some(h)
                if h.call_id() == call_id
                    && h.local_tag() == local_tag
                    && h.remote_tag() == remote_tag =>
            {
                h.clone()
            }
            _ => DialogId::new(call_id, local_tag, remote_tag),
        };
        if status >= 300 {
            return Ok(match self.map.get(&id) {
                Some(d) if d.state == DialogState::Early => {
                    self.map.remove(&id);
                    DialogUpdate::Terminated(vec![id])
                }
                _ => DialogUpdate::Unchanged,
            });
        }
        if status == 100 {
            return Ok(DialogUpdate::Unchanged);
        }
        let confirm = status >= 200;
        if let Some(d) = self.map.get_mut(&id) {
            if confirm {
                d.state = DialogState::Confirmed;
                return Ok(DialogUpdate::Confirmed(id));
            }
            return Ok(DialogUpdate::Updated(id));
        }
        let dialog = Dialog::new(DialogParts {
            role: DialogRole::Uas,
            state: if confirm {
                DialogState::Confirmed
            } else {
                DialogState::Early
            },
            secure: is_sips(request),
            local_seq: None,
            remote_seq: Some(request.cseq()?.seq()),
            local_uri: response.header(HeaderName::To).unwrap_or_default(),
            remote_uri: request.header(HeaderName::From).unwrap_or_default(),
            remote_target: contact_uri(request, &from),
            routes: record_route(request, false)?.iter().copied(),
        });
        self.map.insert(id.clone(), dialog);
        Ok(if confirm {
            DialogUpdate::Confirmed(id)
        } else {
            DialogUpdate::Early(id)
        })
    }

    /// A received request (§12.2.2). Without a To tag it belongs to no dialog
    /// ([`DialogUpdate::Unchanged`]). With one it must match a dialog (else
    /// [`DialogError::NoDialog`], answer 481) and, unless ACK or CANCEL, carry a CSeq above
    /// the last (else [`DialogError::OutOfOrder`], answer 500). re-INVITE and UPDATE with a
    /// Contact refresh the remote target; BYE ends the dialog. Never answer an ACK.
    pub fn handle_request(&mut self, request: &SipMessage) -> Result<DialogUpdate, DialogError> {
        let method = request
            .method()
            .ok_or(crate::ParseError::StartLine("expected a request"))?;
        let to = request.to()?;
        let Some(local_tag) = to.tag() else {
            return Ok(DialogUpdate::Unchanged);
        };
        if *method == Method::Cancel {
            return Ok(DialogUpdate::Unchanged);
        }
        let from = request.from()?;
        // Looked up with the key written on the stack; the map's own id is handed out.
        let found = dialog_key(
            request.call_id()?,
            local_tag,
            from.tag().unwrap_or_default(),
            |key| self.map.get_key_value(key).map(|(id, _)| id.clone()),
        );
        let Some(id) = found else {
            return Err(DialogError::NoDialog);
        };
        let Some(d) = self.map.get_mut(&id) else {
            return Err(DialogError::NoDialog);
        };
        let seq = request.cseq()?.seq();
        if *method != Method::Ack {
            if let Some(last) = d.remote_seq {
                if seq <= last {
                    return Err(DialogError::OutOfOrder { got: seq, last });
                }
            }
            d.remote_seq = Some(seq);
        }
        match method {
            Method::Bye => {
                self.remove(&id);
                return Ok(DialogUpdate::Terminated(vec![id]));
            }
            m if m.is_target_refresh() => {
                if let Some(Ok(Contact::Addr(a))) = request.contacts().next() {
                    d.update(request_uri_of(a.uri()), None::<std::iter::Empty<&[u8]>>);
                }
            }
            _ => {}
        }
        Ok(DialogUpdate::Updated(id))
    }

    /// Starts an in-dialog request (§12.2.1.1): Request-URI and Route from the remote target
    /// and route set (strict-routing rewrite when the first route lacks `lr`), From, To,
    /// Call-ID, the next local CSeq, Max-Forwards 70, and `via` (a Via value; the
    /// transaction layer adds the branch). Add Contact (required for re-INVITE and UPDATE)
    /// and a body, then `build()`. For ACK use [`ack`](Self::ack); CANCEL belongs to the
    /// transaction layer.
    pub fn request(
        &mut self,
        id: &DialogId,
        method: Method,
        via: &str,
    ) -> Result<MessageBuilder, DialogError> {
        let d = self.map.get_mut(id).ok_or(DialogError::UnknownDialog)?;
        let seq = match d.local_seq {
            Some(s) => s.checked_add(1).ok_or(DialogError::CSeqExhausted)?,
            None => 1,
        };
        d.local_seq = Some(seq);
        let d = &*d;
        Ok(build(id, d, method, seq, via.as_bytes()))
    }

    /// The ACK for a 2xx to the INVITE with CSeq number `invite_seq` (§13.2.2.4): built like
    /// an in-dialog request, with that CSeq number and a new branch added to `via`. Send it
    /// with [`TransactionLayer::send_stateless`](crate::TransactionLayer::send_stateless).
    pub fn ack(
        &mut self,
        id: &DialogId,
        invite_seq: u32,
        via: &str,
    ) -> Result<SipMessage, DialogError> {
        let d = self.map.get(id).ok_or(DialogError::UnknownDialog)?;
        let mut v = Vec::with_capacity(via.len() + 8 + BRANCH_LEN);
        v.extend_from_slice(via.as_bytes());
        v.extend_from_slice(b";branch=");
        push_branch(&mut v, &mut *self.ids);
        Ok(build(id, d, Method::Ack, invite_seq, &v).build()?)
    }
}

fn build(id: &DialogId, d: &Dialog, method: Method, seq: u32, via: &[u8]) -> MessageBuilder {
    let first = d.first_route();
    let loose = first.is_none_or(|r| {
        crate::NameAddr::parse(r, "Route")
            .ok()
            .and_then(|n| n.uri().as_sip().map(|s| s.is_loose_route()))
            .unwrap_or(true)
    });
    let (uri, skip) = if loose {
        (d.remote_target(), 0)
    } else {
        // Strict routing (§12.2.1.1): the first route becomes the Request-URI and the remote
        // target goes last in Route.
        (first.and_then(route_uri).unwrap_or_default(), 1)
    };
    // The dialog's parts are shared, not copied (the strict-routing Request-URI is a
    // slice of a route, so of the same buffer).
    let mut b = SipMessage::request(method.clone(), d.share(uri))
        .header(HeaderName::Via, Bytes::copy_from_slice(via))
        .header(HeaderName::MaxForwards, Bytes::from_static(b"70"))
        .header(HeaderName::From, d.share(d.local_uri()))
        .header(HeaderName::To, d.share(d.remote_uri()))
        .header(HeaderName::CallId, Bytes::copy_from_slice(id.call_id()))
        .header(HeaderName::CSeq, cseq_value(seq, &method));
    for r in d.route_set().skip(skip) {
        b = b.header(HeaderName::Route, d.share(r));
    }
    if !loose {
        let target = d.remote_target();
        let mut t = Vec::with_capacity(target.len() + 2);
        t.push(b'<');
        t.extend_from_slice(target);
        t.push(b'>');
        b = b.header(HeaderName::Route, t);
    }
    b
}

/// `seq method` in a buffer of exactly its length, so that it becomes `Bytes` without a
/// second allocation.
fn cseq_value(seq: u32, method: &Method) -> Vec<u8> {
    let mut n = itoa::Buffer::new();
    let n = n.format(seq).as_bytes();
    let m = method.as_str().as_bytes();
    let mut v = Vec::with_capacity(n.len() + 1 + m.len());
    v.extend_from_slice(n);
    v.push(b' ');
    v.extend_from_slice(m);
    v
}
