//! SIP dialogs (RFC 3261 §12), sans-IO: creation, route sets, CSeq, in-dialog requests.
//!
//! [`Dialogs`] holds every dialog of a user agent, keyed by [`DialogId`] (Call-ID, local tag,
//! remote tag). The transaction user feeds it what the [transaction layer](crate::transaction)
//! reports and what it sends:
//! - [`Dialogs::handle_uac_response`]: a response to a request this UA sent. A 1xx with a To
//!   tag to an INVITE makes an early dialog (one per remote tag when the request forks), a 2xx
//!   makes or confirms one (without a To tag, from an RFC 2543 UAS: one whose remote tag is
//!   empty, §12.1.2), a non-2xx final ends the early ones; 481/408 to an in-dialog
//!   request (not a CANCEL's, nor a PRACK's 481: those name a transaction) and the final
//!   response to BYE end the dialog; a 2xx to re-INVITE, UPDATE, SUBSCRIBE or NOTIFY
//!   refreshes the remote target;
//! - [`Dialogs::handle_uas_response`]: a response this UA sends to an INVITE (1xx/2xx with
//!   the UA's To tag create the UAS dialog);
//! - [`Dialogs::handle_request`]: a received request with a To tag: 481 when no dialog
//!   matches, 500 when its CSeq is not above the last one, target refresh for re-INVITE,
//!   UPDATE, SUBSCRIBE and NOTIFY (RFC 6665), BYE ends the dialog;
//! - [`Dialogs::request`] and [`Dialogs::ack`] build in-dialog requests and the ACK for a 2xx,
//!   with the Route header for loose routing or, when the first route lacks `lr`, the strict
//!   routing rewrite of §12.2.1.1.
//!
//! What it does not do: send anything, run timers (the 2xx retransmission and ACK wait of
//! §13.3.1.4 are the UAS core's), or dialogs made by SUBSCRIBE/REFER (RFC 6665). Parameters
//! not allowed in a Request-URI are not stripped from a strict route. A 1xx or 2xx without
//! Contact (which RFC 3261 requires) keeps the remote target its early dialog has, and a
//! new dialog falls back to the peer's From/To URI.

mod set;

pub use set::Dialogs;

use crate::scratch::Scratch;
use crate::{ParseError, SipMessage};
use bytes::Bytes;
use std::fmt;
use std::sync::Arc;

/// A dialog's key: Call-ID, local tag, remote tag (§12), in one shared allocation: the
/// copies the layers above keep (one per call) cost no memory of their own.
///
/// The bytes are the Call-ID and the local tag each after its length (4 bytes,
/// little-endian), then the remote tag: unique for any three parts, so the key is those
/// bytes alone and a lookup can be made with bytes written on the stack (see
/// `dialog_key`) instead of a new `DialogId` per request.
#[derive(Clone)]
pub struct DialogId {
    buf: Arc<[u8]>,
    local_at: u32,
    remote_at: u32,
}

impl PartialEq for DialogId {
    fn eq(&self, other: &Self) -> bool {
        self.buf == other.buf
    }
}

impl Eq for DialogId {}

/// By the key bytes, as equality: an order so that dialog ids can key ordered collections
/// (a timer heap); it means nothing beyond that.
impl Ord for DialogId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.buf.cmp(&other.buf)
    }
}

impl PartialOrd for DialogId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::hash::Hash for DialogId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `[u8]` hashes: `Borrow<[u8]>` requires the same hash.
        self.buf[..].hash(state);
    }
}

impl std::borrow::Borrow<[u8]> for DialogId {
    fn borrow(&self) -> &[u8] {
        &self.buf
    }
}

/// The key bytes of a [`DialogId`] (see there), on the stack when short.
fn key_bytes(call_id: &[u8], local_tag: &[u8], remote_tag: &[u8]) -> Scratch {
    let mut key = Scratch::new();
    for part in [call_id, local_tag] {
        // Parts past 4 GiB cannot come from a parsed message (sip-core's limits).
        key.extend_from_slice(&(part.len() as u32).to_le_bytes());
        key.extend_from_slice(part);
    }
    key.extend_from_slice(remote_tag);
    key
}

/// Calls `f` with the key bytes of the dialog id of these parts, written on the stack when
/// they fit: a map keyed by [`DialogId`] is then searched without allocating.
pub(crate) fn dialog_key<R>(
    call_id: &[u8],
    local_tag: &[u8],
    remote_tag: &[u8],
    f: impl FnOnce(&[u8]) -> R,
) -> R {
    f(key_bytes(call_id, local_tag, remote_tag).as_slice())
}

impl DialogId {
    /// The id of a dialog from its three parts.
    pub fn new(call_id: &[u8], local_tag: &[u8], remote_tag: &[u8]) -> Self {
        let buf: Arc<[u8]> = Arc::from(key_bytes(call_id, local_tag, remote_tag).as_slice());
        let local_at = u32::try_from(8 + call_id.len()).unwrap_or(u32::MAX);
        let remote_at = u32::try_from(8 + call_id.len() + local_tag.len()).unwrap_or(u32::MAX);
        DialogId {
            buf,
            local_at,
            remote_at,
        }
    }

    /// The Call-ID.
    pub fn call_id(&self) -> &[u8] {
        self.buf
            .get(4..self.local_at as usize - 4)
            .unwrap_or_default()
    }

    /// This UA's tag.
    pub fn local_tag(&self) -> &[u8] {
        self.buf
            .get(self.local_at as usize..self.remote_at as usize)
            .unwrap_or_default()
    }

    /// The peer's tag.
    pub fn remote_tag(&self) -> &[u8] {
        self.buf.get(self.remote_at as usize..).unwrap_or_default()
    }
}

impl fmt::Debug for DialogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DialogId({}, {}, {})",
            String::from_utf8_lossy(self.call_id()),
            String::from_utf8_lossy(self.local_tag()),
            String::from_utf8_lossy(self.remote_tag())
        )
    }
}

/// Which side created the dialog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogRole {
    /// This UA sent the request that created it.
    Uac,
    /// This UA answered it.
    Uas,
}

/// A dialog's state (terminated dialogs are removed from [`Dialogs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogState {
    /// Made by a provisional response with a To tag.
    Early,
    /// Made or confirmed by a 2xx.
    Confirmed,
}

/// The state of one dialog (§12.1). Its [`DialogId`] is the key it is stored under.
#[derive(Clone, PartialEq, Eq)]
pub struct Dialog {
    pub(crate) role: DialogRole,
    pub(crate) state: DialogState,
    pub(crate) secure: bool,
    pub(crate) local_seq: Option<u32>,
    pub(crate) remote_seq: Option<u32>,
    /// The local From/To value (tag included), the remote one, the remote target and the
    /// route set (each route after its length, 4 bytes little-endian), back to back: one
    /// allocation per dialog, as a server holds many idle ones. `Bytes`, so that the
    /// dialog's requests share these parts instead of copying them.
    buf: Bytes,
    remote_uri_at: u32,
    target_at: u32,
    routes_at: u32,
    /// An opaque number the layer above attaches (the endpoint that owns the dialog), so it
    /// needs no map of its own beside this one. 0 when none.
    pub(crate) owner: u64,
}

/// Where [`Dialog`]'s parts are copied from.
pub(crate) struct DialogParts<'a, R> {
    pub role: DialogRole,
    pub state: DialogState,
    pub secure: bool,
    pub local_seq: Option<u32>,
    pub remote_seq: Option<u32>,
    pub local_uri: &'a [u8],
    pub remote_uri: &'a [u8],
    pub remote_target: &'a [u8],
    pub routes: R,
}

fn at(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Packs the parts into one buffer; returns it with the remote URI, target and routes
/// offsets.
fn pack<'r>(
    local_uri: &[u8],
    remote_uri: &[u8],
    remote_target: &[u8],
    routes: impl Iterator<Item = &'r [u8]> + Clone,
) -> (Bytes, u32, u32, u32) {
    let routes_len: usize = routes.clone().map(|r| 4 + r.len()).sum();
    let mut v =
        Vec::with_capacity(local_uri.len() + remote_uri.len() + remote_target.len() + routes_len);
    v.extend_from_slice(local_uri);
    let remote_uri_at = at(v.len());
    v.extend_from_slice(remote_uri);
    let target_at = at(v.len());
    v.extend_from_slice(remote_target);
    let routes_at = at(v.len());
    for r in routes {
        v.extend_from_slice(&at(r.len()).to_le_bytes());
        v.extend_from_slice(r);
    }
    // Capacity is exact, so the conversion keeps the one allocation.
    (Bytes::from(v), remote_uri_at, target_at, routes_at)
}

/// The routes of a packed buffer.
#[derive(Clone)]
struct Routes<'a>(&'a [u8]);

impl<'a> Iterator for Routes<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.0.split_first_chunk::<4>()?;
        let len = (u32::from_le_bytes(*len) as usize).min(rest.len());
        let (route, rest) = rest.split_at(len);
        self.0 = rest;
        Some(route)
    }
}

impl Dialog {
    pub(crate) fn new<'r>(p: DialogParts<'_, impl Iterator<Item = &'r [u8]> + Clone>) -> Dialog {
        let (buf, remote_uri_at, target_at, routes_at) =
            pack(p.local_uri, p.remote_uri, p.remote_target, p.routes);
        Dialog {
            role: p.role,
            state: p.state,
            secure: p.secure,
            local_seq: p.local_seq,
            remote_seq: p.remote_seq,
            buf,
            remote_uri_at,
            target_at,
            routes_at,
            owner: 0,
        }
    }

    /// `part` (a slice of this dialog's buffer, as its accessors return) as shared bytes.
    pub(crate) fn share(&self, part: &[u8]) -> Bytes {
        // Not from this buffer (never the case for the accessors' slices): a copy.
        crate::index::shared_slice(&self.buf, part).unwrap_or_else(|| Bytes::copy_from_slice(part))
    }

    fn part(&self, from: u32, to: u32) -> &[u8] {
        self.buf.get(from as usize..to as usize).unwrap_or_default()
    }

    fn routes(&self) -> Routes<'_> {
        Routes(self.buf.get(self.routes_at as usize..).unwrap_or_default())
    }

    /// Replaces the remote target and, when given, the route set (rare: target refreshes
    /// and the 2xx that confirms an early dialog).
    pub(crate) fn update<'r>(
        &mut self,
        remote_target: &[u8],
        routes: Option<impl Iterator<Item = &'r [u8]> + Clone>,
    ) {
        if routes.is_none() && remote_target == self.remote_target() {
            return;
        }
        let (buf, remote_uri_at, target_at, routes_at) = match routes {
            Some(r) => pack(self.local_uri(), self.remote_uri(), remote_target, r),
            None => pack(
                self.local_uri(),
                self.remote_uri(),
                remote_target,
                self.routes(),
            ),
        };
        self.buf = buf;
        self.remote_uri_at = remote_uri_at;
        self.target_at = target_at;
        self.routes_at = routes_at;
    }

    /// The route set as stored (first hop first).
    pub(crate) fn first_route(&self) -> Option<&[u8]> {
        self.routes().next()
    }

    /// The number attached with [`Dialogs::set_owner`] (0 when none).
    pub fn owner(&self) -> u64 {
        self.owner
    }

    /// UAC or UAS.
    pub fn role(&self) -> DialogRole {
        self.role
    }
    /// Early or confirmed.
    pub fn state(&self) -> DialogState {
        self.state
    }
    /// Whether the dialog was made over `sips:` (§12.1.1).
    pub fn is_secure(&self) -> bool {
        self.secure
    }
    /// The CSeq number of the last request this UA sent in the dialog (`None`: none yet).
    pub fn local_seq(&self) -> Option<u32> {
        self.local_seq
    }
    /// The CSeq number of the last request received in the dialog.
    pub fn remote_seq(&self) -> Option<u32> {
        self.remote_seq
    }
    /// This UA's From (UAC) or To (UAS) value with its tag.
    pub fn local_uri(&self) -> &[u8] {
        self.part(0, self.remote_uri_at)
    }
    /// The peer's To (UAC) or From (UAS) value with its tag.
    pub fn remote_uri(&self) -> &[u8] {
        self.part(self.remote_uri_at, self.target_at)
    }
    /// The peer's Contact URI: where in-dialog requests go (§12.2.1.1).
    pub fn remote_target(&self) -> &[u8] {
        self.part(self.target_at, self.routes_at)
    }
    /// The route set, first hop first; each a name-addr as it appeared in Record-Route.
    pub fn route_set(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.routes()
    }
    /// Where the next in-dialog request goes: the first route's URI, else the remote target.
    pub fn next_hop(&self) -> &[u8] {
        self.first_route()
            .and_then(route_uri)
            .unwrap_or(self.remote_target())
    }
}

impl fmt::Debug for Dialog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        f.debug_struct("Dialog")
            .field("role", &self.role)
            .field("state", &self.state)
            .field("secure", &self.secure)
            .field("local_seq", &self.local_seq)
            .field("remote_seq", &self.remote_seq)
            .field("local_uri", &text(self.local_uri()))
            .field("remote_uri", &text(self.remote_uri()))
            .field("remote_target", &text(self.remote_target()))
            .field("route_set", &self.route_set().map(text).collect::<Vec<_>>())
            .field("owner", &self.owner)
            .finish()
    }
}

/// The URI inside a route name-addr, if it parses, as a Request-URI (strict routing).
pub(crate) fn route_uri(route: &[u8]) -> Option<&[u8]> {
    crate::NameAddr::parse(route, "Route")
        .ok()
        .map(|n| request_uri_of(n.uri()))
}

/// `uri` as a Request-URI: a SIP URI less its headers component, which a Request-URI
/// may not hold (RFC 3261 §19.1.1). The headers are dropped, not applied: a peer's
/// Contact does not get to write header fields into this UA's requests.
pub(crate) fn request_uri_of<'a>(uri: &crate::Uri<'a>) -> &'a [u8] {
    uri.as_sip()
        .map_or_else(|| uri.as_bytes(), |s| s.without_headers())
}

/// What a message did to the dialogs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DialogUpdate {
    /// No dialog was made, changed or ended (100 Trying, a response without To tag, a
    /// request outside any dialog).
    Unchanged,
    /// A new early dialog (a 1xx with a new To tag; a forked INVITE makes several).
    Early(DialogId),
    /// A dialog was made or confirmed by a 2xx (repeated for 2xx retransmissions).
    Confirmed(DialogId),
    /// An existing dialog matched (its CSeq or remote target may have changed).
    Updated(DialogId),
    /// These dialogs ended (BYE, a non-2xx to the INVITE, 481/408 in the dialog).
    Terminated(Vec<DialogId>),
}

/// Why a dialog operation or an in-dialog request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialogError {
    /// A request carries a To tag but matches no dialog; answer 481 (§12.2.2).
    #[error("no dialog matches the request (481)")]
    NoDialog,
    /// A request's CSeq is not above the dialog's remote sequence number; answer 500.
    #[error("CSeq {got} is not above {last} (500)")]
    OutOfOrder {
        /// The request's CSeq number.
        got: u32,
        /// The dialog's remote sequence number.
        last: u32,
    },
    /// The message lacks what a dialog needs (tags, Call-ID, CSeq …); 400.
    #[error("unusable message: {0}")]
    Message(#[from] ParseError),
    /// A local call named a dialog that does not exist (or has ended).
    #[error("unknown dialog")]
    UnknownDialog,
    /// The local CSeq would pass 2^31 - 1 … 2^32 - 1 (§8.1.1.5 wants it below 2^31 to start).
    #[error("local CSeq exhausted")]
    CSeqExhausted,
}

impl DialogError {
    /// The status a UAS answers a request refused for this reason with.
    pub fn status(&self) -> u16 {
        match self {
            DialogError::NoDialog | DialogError::UnknownDialog => 481,
            DialogError::Message(e) => e.status(),
            _ => 500,
        }
    }

    /// The response refusing `request` for this reason (481, 500 or 400).
    pub fn response_to(&self, request: &SipMessage) -> Result<SipMessage, ParseError> {
        let status = self.status();
        SipMessage::response_to(request, status, crate::reason_phrase(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_parts_read_back_and_survive_a_target_refresh() {
        let routes: [&[u8]; 2] = [b"<sip:p1.example.com;lr>", b"<sip:p2.example.com;lr>"];
        let mut d = Dialog::new(DialogParts {
            role: DialogRole::Uac,
            state: DialogState::Confirmed,
            secure: false,
            local_seq: Some(1),
            remote_seq: None,
            local_uri: b"<sip:a@example.com>;tag=1",
            remote_uri: b"<sip:b@example.com>;tag=2",
            remote_target: b"sip:b@192.0.2.1",
            routes: routes.iter().copied(),
        });
        assert_eq!(d.local_uri(), b"<sip:a@example.com>;tag=1");
        assert_eq!(d.remote_uri(), b"<sip:b@example.com>;tag=2");
        assert_eq!(d.remote_target(), b"sip:b@192.0.2.1");
        assert_eq!(d.route_set().collect::<Vec<_>>(), routes);
        assert_eq!(d.next_hop(), b"sip:p1.example.com;lr");
        d.update(b"sip:b@192.0.2.99:5061", None::<std::iter::Empty<&[u8]>>);
        assert_eq!(d.remote_target(), b"sip:b@192.0.2.99:5061");
        assert_eq!(d.route_set().collect::<Vec<_>>(), routes);
        assert_eq!(d.remote_uri(), b"<sip:b@example.com>;tag=2");
        d.update(b"sip:b@192.0.2.2", Some(std::iter::empty()));
        assert_eq!(d.route_set().count(), 0);
        assert_eq!(d.next_hop(), b"sip:b@192.0.2.2");
    }

    #[test]
    fn dialog_id_parts_and_shared_clones() {
        let id = DialogId::new(b"abc@host", b"lt", b"rt");
        assert_eq!(id.call_id(), b"abc@host");
        assert_eq!(id.local_tag(), b"lt");
        assert_eq!(id.remote_tag(), b"rt");
        assert_eq!(id.clone(), id);
        assert_ne!(DialogId::new(b"abc@hos", b"tlt", b"rt"), id);
    }
}

#[cfg(test)]
mod id_tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn parts_round_trip_and_boundaries_matter() {
        let id = DialogId::new(b"a84b4c76e66710@pc33", b"1928301774", b"a6c85cf");
        assert_eq!(id.call_id(), b"a84b4c76e66710@pc33");
        assert_eq!(id.local_tag(), b"1928301774");
        assert_eq!(id.remote_tag(), b"a6c85cf");
        // The same bytes split differently are different dialogs.
        assert_ne!(
            DialogId::new(b"ab", b"c", b"d"),
            DialogId::new(b"a", b"bc", b"d")
        );
        assert_ne!(
            DialogId::new(b"a", b"bc", b""),
            DialogId::new(b"a", b"b", b"c")
        );
        let empty = DialogId::new(b"", b"", b"");
        assert_eq!(
            (empty.call_id(), empty.local_tag(), empty.remote_tag()),
            (&b""[..], &b""[..], &b""[..])
        );
    }

    #[test]
    fn a_stack_key_finds_the_stored_id() {
        let mut map = HashMap::new();
        map.insert(DialogId::new(b"c@h", b"l", b"r"), 1);
        assert_eq!(
            dialog_key(b"c@h", b"l", b"r", |k| map.get(k).copied()),
            Some(1)
        );
        assert_eq!(
            dialog_key(b"c@h", b"l", b"x", |k| map.get(k).copied()),
            None
        );
        // Keys longer than the stack buffer take the heap path and still match.
        let long = vec![b'x'; 600];
        map.insert(DialogId::new(&long, b"l", b"r"), 2);
        assert_eq!(
            dialog_key(&long, b"l", b"r", |k| map.get(k).copied()),
            Some(2)
        );
    }
}
