//! [`OutgoingInvite`]: an INVITE in progress, as the caller sees it.

use crate::error::RequestError;
use crate::runtime::Command;
use sip_core::{DialogId, SipMessage};
use tokio::sync::{mpsc, oneshot};

/// What happened next to an INVITE in progress.
#[derive(Debug)]
pub enum InviteProgress {
    /// A provisional response (180 Ringing, 183 …); with a To tag it made an early dialog.
    Provisional(SipMessage),
    /// The 2xx: the platform sent the ACK (for an INVITE sent with
    /// [`invite_without_offer`](crate::CollaborationPlatform::invite_without_offer), the
    /// ACK waits for [`send_ack_answer`](crate::CollaborationPlatform::send_ack_answer));
    /// the dialog is confirmed.
    Answered {
        /// The 2xx.
        response: SipMessage,
        /// The confirmed dialog.
        dialog: DialogId,
    },
    /// No 2xx, or none wanted: the final failure, timeout, transport failure or
    /// cancellation ([`RequestError::Cancelled`] after [`OutgoingInvite::cancel`], see
    /// there).
    Failed(RequestError),
}

/// An INVITE sent with [`CollaborationPlatform::invite`](crate::CollaborationPlatform::invite).
/// Dropping it does not cancel the INVITE (call [`cancel`](Self::cancel)).
#[derive(Debug)]
pub struct OutgoingInvite {
    branch: String,
    provisional: mpsc::Receiver<SipMessage>,
    /// The 2xx with the dialog it made (`None` when the platform made none).
    outcome: Option<oneshot::Receiver<crate::runtime::DialogReply>>,
    commands: mpsc::Sender<Command>,
}

impl OutgoingInvite {
    pub(crate) fn new(
        branch: String,
        provisional: mpsc::Receiver<SipMessage>,
        outcome: oneshot::Receiver<crate::runtime::DialogReply>,
        commands: mpsc::Sender<Command>,
    ) -> Self {
        OutgoingInvite {
            branch,
            provisional,
            outcome: Some(outcome),
            commands,
        }
    }

    /// The branch of the INVITE's top Via (its transaction).
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// Waits for the next step: provisional responses first, then the outcome once.
    /// After the outcome it returns `None`.
    ///
    /// Cancel safety: cancel safe (nothing is lost if the future is dropped).
    pub async fn next(&mut self) -> Option<InviteProgress> {
        let outcome = self.outcome.as_mut()?;
        tokio::select! {
            biased;
            Some(p) = self.provisional.recv() => Some(InviteProgress::Provisional(p)),
            r = outcome => {
                self.outcome = None;
                Some(match r.unwrap_or(Err(RequestError::Shutdown)) {
                    Ok((response, made)) => match made
                        .or_else(|| crate::runtime::uac_dialog_id(&response))
                    {
                        Some(dialog) => InviteProgress::Answered { response, dialog },
                        None => InviteProgress::Failed(RequestError::Invalid(
                            "2xx naming no dialog".into(),
                        )),
                    },
                    Err(e) => InviteProgress::Failed(e),
                })
            }
        }
    }

    /// Skips the provisional responses and waits for the outcome.
    ///
    /// Cancel safety: not cancel safe once the outcome has arrived (it is consumed).
    pub async fn outcome(mut self) -> Result<(SipMessage, DialogId), RequestError> {
        while let Some(step) = self.next().await {
            match step {
                InviteProgress::Provisional(_) => {}
                InviteProgress::Answered { response, dialog } => return Ok((response, dialog)),
                InviteProgress::Failed(e) => return Err(e),
            }
        }
        Err(RequestError::Shutdown)
    }

    /// A handle that cancels this INVITE from elsewhere (another task) while this one
    /// waits in [`next`](Self::next).
    pub fn canceller(&self) -> InviteCanceller {
        InviteCanceller {
            branch: self.branch.clone(),
            commands: self.commands.clone(),
        }
    }

    /// Asks to cancel the INVITE (RFC 3261 §9.1): sent once a provisional response arrived,
    /// held until then. The outcome is then [`RequestError::Cancelled`], also when a 2xx
    /// comes anyway (it beat or crossed the CANCEL): the platform ACKs it and ends the call
    /// with BYE (§15). A non-2xx final that comes first is the outcome as it is. Asked
    /// after the platform took the 2xx, it changes nothing: the call is answered, and
    /// ending it is the caller's.
    ///
    /// Cancel safety: cancel safe.
    pub async fn cancel(&self) {
        let _ = self
            .commands
            .send(Command::Cancel {
                branch: self.branch.clone(),
            })
            .await;
    }
}

/// Cancels one INVITE; cheap to clone. See [`OutgoingInvite::cancel`].
#[derive(Debug, Clone)]
pub struct InviteCanceller {
    branch: String,
    commands: mpsc::Sender<Command>,
}

impl InviteCanceller {
    /// As [`OutgoingInvite::cancel`].
    ///
    /// Cancel safety: cancel safe.
    pub async fn cancel(&self) {
        let _ = self
            .commands
            .send(Command::Cancel {
                branch: self.branch.clone(),
            })
            .await;
    }
}
