//! Why a call or a message failed.

use crate::ConversationState;
use application_endpoint::EndpointError;
use collaboration_platform::RequestError;

/// Why an instant-messaging call was not established or could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The remote party declined (486 Busy Here, 480, 603 Decline …) or the call failed
    /// with this final status.
    #[error("declined: {status} {reason}{diagnostics}")]
    Declined {
        /// The final status.
        status: u16,
        /// Its reason phrase.
        reason: String,
        /// What the peer's Warning and `ms-diagnostics` headers said, as
        /// [`RequestError::peer_diagnostics`] gives it (empty when none).
        diagnostics: String,
    },
    /// Nobody answered: the INVITE timed out (408, Timer B) or rang past the timeout given
    /// to `InstantMessagingCall::establish_within`.
    #[error("no answer")]
    NoAnswer,
    /// The call was cancelled before it was answered.
    #[error("cancelled")]
    Cancelled,
    /// The offer or answer had no IM session in common (488).
    #[error("no acceptable IM session: {0}")]
    NotAcceptable(String),
    /// The request failed below the call (transport, platform shut down, bad request).
    #[error(transparent)]
    Request(RequestError),
    /// The endpoint is not established.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The call ended (this side's `terminate`, or the remote party's BYE before its
    /// answer) while it was being established: it never became established. (A BYE
    /// right after the answer ends an established call: the flow is still given.)
    #[error("the call ended while it was being established")]
    Ended,
    /// The call is not in a state that allows this.
    #[error("not possible while the call is {0:?}")]
    InvalidState(ConversationState),
    /// Impersonation is for application endpoints only (UCMA's rule): a user endpoint
    /// speaks as its user.
    #[error("only an application endpoint may impersonate")]
    ImpersonationNotAllowed,
    /// [`Conversation::deliver_text`](crate::Conversation::deliver_text): the peer did not
    /// take the IM call (`call`, the INVITE's refusal), and the page-mode MESSAGE sent
    /// instead failed too (`page`).
    #[error("the IM call was refused ({call}) and the page sent instead failed: {page}")]
    PageFailed {
        /// Why the IM call was not established.
        call: Box<CallError>,
        /// Why the page failed.
        #[source]
        page: MessageError,
    },
}

impl From<RequestError> for CallError {
    fn from(e: RequestError) -> Self {
        let diagnostics = e.peer_diagnostics();
        match e {
            RequestError::Timeout => CallError::NoAnswer,
            RequestError::Cancelled => CallError::Cancelled,
            RequestError::Status { code: 408, .. } => CallError::NoAnswer,
            RequestError::Status {
                code: 488 | 606,
                reason,
                ..
            } => CallError::NotAcceptable(reason + &diagnostics),
            RequestError::Status { code, reason, .. } => CallError::Declined {
                status: code,
                reason,
                diagnostics,
            },
            e => CallError::Request(e),
        }
    }
}

impl From<MessageError> for CallError {
    /// A message's failure as the call's: a failure status is the call declined.
    fn from(e: MessageError) -> Self {
        match e {
            MessageError::Failed {
                status,
                reason,
                diagnostics,
            } => CallError::Declined {
                status,
                reason,
                diagnostics,
            },
            MessageError::Request(e) => CallError::Request(e),
            MessageError::CallEnded => CallError::Cancelled,
            MessageError::Endpoint(e) => CallError::Endpoint(e),
        }
    }
}

/// Why a message got no 2xx. Every message sent gets exactly one outcome: `Ok` (delivered)
/// or one of these.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The remote party answered with a failure status.
    #[error("failed: {status} {reason}{diagnostics}")]
    Failed {
        /// The final status.
        status: u16,
        /// Its reason phrase.
        reason: String,
        /// What the peer's Warning and `ms-diagnostics` headers said, as
        /// [`RequestError::peer_diagnostics`] gives it (empty when none).
        diagnostics: String,
    },
    /// The call ended (either side's BYE) before the message was delivered.
    #[error("the call ended before the message was delivered")]
    CallEnded,
    /// No answer (timeout; the call then ends with its dialog, RFC 3261 §12.2.1.2) or a
    /// transport failure.
    #[error(transparent)]
    Request(RequestError),
    /// The endpoint is not established (not yet, or terminated): nothing was sent. Only
    /// page-mode MESSAGEs ([`Conversation::send_page`](crate::Conversation::send_page))
    /// fail so; a message in a call fails with the call.
    #[error(transparent)]
    Endpoint(EndpointError),
}

impl MessageError {
    /// A MESSAGE's failure: a failure status with what the peer said about it, or the
    /// error below.
    pub(crate) fn from_request(e: RequestError) -> MessageError {
        let diagnostics = e.peer_diagnostics();
        match e {
            RequestError::Status { code, reason, .. } => MessageError::Failed {
                status: code,
                reason,
                diagnostics,
            },
            e => MessageError::Request(e),
        }
    }
}
