//! Dialogs the platform ends on its own account, announced to whoever listens
//! ([`CollaborationPlatform::dialog_endings`](crate::CollaborationPlatform::dialog_endings)).
//!
//! An endpoint learns that a dialog ended from the BYE it receives or sends, or from the
//! error of a request it sent in it. A few endings come from neither: the platform gives up
//! on a 2xx never ACKed and sends BYE itself (RFC 3261 §13.3.1.4). Without an announcement
//! a call would look established for ever; with one, the endpoint that owns the dialog can
//! end its call.

use crate::EndpointId;
use sip_core::DialogId;

/// Why the platform ended a dialog itself. (Endings an endpoint learns otherwise are not
/// announced: the error of a request it sent in the dialog, a BYE, its own 481.)
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DialogEndReason {
    /// The 2xx to an INVITE got no ACK within 64·T1; the platform sent BYE (§13.3.1.4).
    NoAck,
    /// The 2xx to an INVITE sent without an offer brought one, and the application gave
    /// no answer within 64·T1
    /// ([`CollaborationPlatform::send_ack_answer`](crate::CollaborationPlatform::send_ack_answer)):
    /// the platform refused every stream in the ACK and sent BYE (§13.2.2.4).
    NoAnswer,
}

impl std::fmt::Display for DialogEndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DialogEndReason::NoAck => f.write_str("no ACK came for the 2xx; BYE sent"),
            DialogEndReason::NoAnswer => {
                f.write_str("no answer was given for the offer in the 2xx; BYE sent")
            }
        }
    }
}

/// A dialog the platform ended itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogEnded {
    /// The dialog, as the platform names it (the owner's view).
    pub dialog: DialogId,
    /// The endpoint that owned it, if one did.
    pub endpoint: Option<EndpointId>,
    /// Why it ended.
    pub reason: DialogEndReason,
}

/// How many announcements a slow listener may fall behind before it misses some
/// (`broadcast` lag): endings are rare, a burst of this many is not.
pub(crate) const CAPACITY: usize = 256;
