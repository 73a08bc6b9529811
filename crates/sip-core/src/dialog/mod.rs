//! SIP dialogs (RFC 3261 §12), sans-IO: creation, route sets, CSeq, in-dialog requests.
//!
//! [`Dialogs`] holds every dialog of a user agent, keyed by [`DialogId`] (Call-ID, local tag,
//! remote tag). The transaction user feeds it what the [transaction layer](crate::transaction)
//! reports and what it sends:
//! - [`Dialogs::handle_uac_response`]: a response to a request this UA sent. A 1xx with a To
//!   tag to an INVITE makes an early dialog (one per remote tag when the request forks), a 2xx
//!   makes or confirms one, a non-2xx final ends the early ones; 481/408 to an in-dialog
//!   request and the final response to BYE end the dialog; a 2xx to re-INVITE/UPDATE
//!   refreshes the remote target;
//! - [`Dialogs::handle_uas_response`]: a response this UA sends to an INVITE (1xx/2xx with
//!   the UA's To tag create the UAS dialog);
//! - [`Dialogs::handle_request`]: a received request with a To tag: 481 when no dialog
//!   matches, 500 when its CSeq is not above the last one, target refresh for re-INVITE and
//!   UPDATE, BYE ends the dialog;
//! - [`Dialogs::request`] and [`Dialogs::ack`] build in-dialog requests and the ACK for a 2xx,
//!   with the Route header for loose routing or, when the first route lacks `lr`, the strict
//!   routing rewrite of §12.2.1.1.
//!
//! What it does not do: send anything, run timers (the 2xx retransmission and ACK wait of
//! §13.3.1.4 are the UAS core's), or dialogs made by SUBSCRIBE/REFER (RFC 6665). Parameters
//! not allowed in a Request-URI are not stripped from a strict route. A 1xx or 2xx without
//! Contact (which RFC 3261 requires) falls back to the peer's From/To URI as remote target.

mod set;

pub use set::Dialogs;

use crate::{ParseError, SipMessage};
use std::fmt;

/// A dialog's key: Call-ID, local tag, remote tag (§12), in one allocation.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    buf: Box<[u8]>,
    local_at: u32,
    remote_at: u32,
}

impl DialogId {
    /// The id of a dialog from its three parts.
    pub fn new(call_id: &[u8], local_tag: &[u8], remote_tag: &[u8]) -> Self {
        let mut v = Vec::with_capacity(call_id.len() + local_tag.len() + remote_tag.len());
        v.extend_from_slice(call_id);
        v.extend_from_slice(local_tag);
        v.extend_from_slice(remote_tag);
        let local_at = u32::try_from(call_id.len()).unwrap_or(u32::MAX);
        let remote_at = u32::try_from(call_id.len() + local_tag.len()).unwrap_or(u32::MAX);
        DialogId {
            buf: v.into(),
            local_at,
            remote_at,
        }
    }

    /// The Call-ID.
    pub fn call_id(&self) -> &[u8] {
        self.buf.get(..self.local_at as usize).unwrap_or_default()
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    pub(crate) role: DialogRole,
    pub(crate) state: DialogState,
    pub(crate) secure: bool,
    pub(crate) local_seq: Option<u32>,
    pub(crate) remote_seq: Option<u32>,
    /// The local From/To value, tag included.
    pub(crate) local_uri: Box<[u8]>,
    /// The remote From/To value, tag included.
    pub(crate) remote_uri: Box<[u8]>,
    pub(crate) remote_target: Box<[u8]>,
    pub(crate) route_set: Box<[Box<[u8]>]>,
    /// An opaque number the layer above attaches (the endpoint that owns the dialog), so it
    /// needs no map of its own beside this one. 0 when none.
    pub(crate) owner: u64,
}

impl Dialog {
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
        &self.local_uri
    }
    /// The peer's To (UAC) or From (UAS) value with its tag.
    pub fn remote_uri(&self) -> &[u8] {
        &self.remote_uri
    }
    /// The peer's Contact URI: where in-dialog requests go (§12.2.1.1).
    pub fn remote_target(&self) -> &[u8] {
        &self.remote_target
    }
    /// The route set, first hop first; each a name-addr as it appeared in Record-Route.
    pub fn route_set(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.route_set.iter().map(|r| &**r)
    }
    /// Where the next in-dialog request goes: the first route's URI, else the remote target.
    pub fn next_hop(&self) -> &[u8] {
        self.route_set
            .first()
            .and_then(|r| route_uri(r))
            .unwrap_or(&self.remote_target)
    }
}

/// The URI inside a route name-addr, if it parses.
pub(crate) fn route_uri(route: &[u8]) -> Option<&[u8]> {
    crate::NameAddr::parse(route, "Route")
        .ok()
        .map(|n| n.uri().as_bytes())
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
