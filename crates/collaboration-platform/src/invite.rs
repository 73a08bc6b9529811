//! [`OutgoingInvite`]: an INVITE in progress, as the caller sees it.

use crate::auth::Resend;
use crate::dispatch::EndpointId;
use crate::error::RequestError;
use crate::runtime::Command;
use sip_core::{DialogId, SipMessage};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};

/// What an INVITE with credentials needs to be sent again after a 401/407.
pub(crate) struct InviteResend {
    pub(crate) resend: Resend,
    /// The INVITE as last sent.
    pub(crate) sent: SipMessage,
    pub(crate) endpoint: EndpointId,
    pub(crate) hold_ack: bool,
    /// The platform's Via (without branch).
    pub(crate) via: String,
}

impl std::fmt::Debug for InviteResend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InviteResend")
            .field("auth", &self.resend.auth)
            .finish_non_exhaustive()
    }
}

/// Which transaction a cancel is for, and whether one was asked. Behind an async mutex
/// that a resend and a cancel both hold while they queue their command: a CANCEL asked
/// while the INVITE is resent goes for the new transaction, or the resend is not sent.
#[derive(Debug)]
struct CancelTarget {
    branch: String,
    asked: bool,
}

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
    cancel: Arc<Mutex<CancelTarget>>,
    /// For an INVITE sent with credentials: how to answer a challenge.
    resend: Option<InviteResend>,
    /// The INVITE to send with credentials, built but not queued yet (kept here so that
    /// a [`next`](Self::next) dropped meanwhile loses nothing).
    pending: Option<SipMessage>,
}

impl OutgoingInvite {
    pub(crate) fn new(
        branch: String,
        provisional: mpsc::Receiver<SipMessage>,
        outcome: oneshot::Receiver<crate::runtime::DialogReply>,
        commands: mpsc::Sender<Command>,
        resend: Option<InviteResend>,
    ) -> Self {
        OutgoingInvite {
            cancel: Arc::new(Mutex::new(CancelTarget {
                branch: branch.clone(),
                asked: false,
            })),
            branch,
            provisional,
            outcome: Some(outcome),
            commands,
            resend,
            pending: None,
        }
    }

    /// The branch of the INVITE's top Via (its transaction): after a challenge answered
    /// with credentials, the branch of the INVITE sent with them.
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// Waits for the next step: provisional responses first, then the outcome once.
    /// After the outcome it returns `None`.
    ///
    /// For an INVITE sent with credentials
    /// ([`OutgoingRequest::authenticate`](crate::OutgoingRequest::authenticate)), a 401 or
    /// 407 is not an outcome: the INVITE is sent again with credentials (same Call-ID and
    /// From tag, next CSeq, new transaction), and its steps follow; one refused, or a
    /// cancel asked before it went, is the outcome
    /// ([`RequestError::Authentication`], [`RequestError::Cancelled`]).
    ///
    /// Cancel safety: cancel safe (nothing is lost if the future is dropped).
    pub async fn next(&mut self) -> Option<InviteProgress> {
        loop {
            if self.pending.is_some() {
                if let Err(e) = self.send_pending().await {
                    return Some(InviteProgress::Failed(e));
                }
            }
            let outcome = self.outcome.as_mut()?;
            let r = tokio::select! {
                biased;
                Some(p) = self.provisional.recv() => return Some(InviteProgress::Provisional(p)),
                r = outcome => r,
            };
            self.outcome = None;
            return Some(match r.unwrap_or(Err(RequestError::Shutdown)) {
                Ok((response, made)) => {
                    match made.or_else(|| crate::runtime::uac_dialog_id(&response)) {
                        Some(dialog) => InviteProgress::Answered { response, dialog },
                        None => InviteProgress::Failed(RequestError::Invalid(
                            "2xx naming no dialog".into(),
                        )),
                    }
                }
                Err(e) => match self.resend.as_mut() {
                    Some(r) => match r.resend.retry(&r.sent, e, &r.via) {
                        Ok(retry) => {
                            self.pending = Some(retry);
                            continue;
                        }
                        Err(e) => InviteProgress::Failed(e),
                    },
                    None => InviteProgress::Failed(e),
                },
            });
        }
    }

    /// Queues the INVITE in `pending` as a new transaction, unless a cancel was asked
    /// (then the outcome is [`RequestError::Cancelled`]).
    async fn send_pending(&mut self) -> Result<(), RequestError> {
        let cancel = self.cancel.clone();
        let mut target = cancel.lock().await;
        if target.asked {
            self.pending = None;
            return Err(RequestError::Cancelled);
        }
        let Ok(permit) = self.commands.reserve().await else {
            self.pending = None;
            return Err(RequestError::Shutdown);
        };
        // Nothing awaits from here on: either all of this happens or none of it.
        let (Some(message), Some(r)) = (self.pending.take(), self.resend.as_mut()) else {
            return Ok(());
        };
        let branch = message
            .top_via()
            .ok()
            .and_then(|v| v.branch().map(str::to_owned))
            .unwrap_or_default();
        let span = crate::platform::transaction_span(&message, &branch);
        r.sent = message.clone();
        let (ptx, prx) = mpsc::channel(8);
        let (reply, rx) = oneshot::channel();
        permit.send(Command::SendDialogCreating {
            request: message,
            endpoint: r.endpoint,
            provisional: Some(ptx),
            hold_ack: r.hold_ack,
            reply,
            span,
        });
        target.branch = branch.clone();
        self.branch = branch;
        self.provisional = prx;
        self.outcome = Some(rx);
        Ok(())
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
            target: self.cancel.clone(),
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
        cancel(&self.cancel, &self.commands).await;
    }
}

/// Asks the platform to cancel the INVITE's current transaction, and keeps one challenged
/// meanwhile from being sent again.
async fn cancel(target: &Mutex<CancelTarget>, commands: &mpsc::Sender<Command>) {
    let mut target = target.lock().await;
    target.asked = true;
    let _ = commands
        .send(Command::Cancel {
            branch: target.branch.clone(),
        })
        .await;
}

/// Cancels one INVITE; cheap to clone. See [`OutgoingInvite::cancel`].
#[derive(Debug, Clone)]
pub struct InviteCanceller {
    target: Arc<Mutex<CancelTarget>>,
    commands: mpsc::Sender<Command>,
}

impl InviteCanceller {
    /// As [`OutgoingInvite::cancel`] (also after the INVITE was sent again with
    /// credentials: the CANCEL goes for the transaction in progress).
    ///
    /// Cancel safety: cancel safe.
    pub async fn cancel(&self) {
        cancel(&self.target, &self.commands).await;
    }
}
