//! Incoming IM calls for an endpoint, typed by the caller's homing.

use crate::conversation::{AnyConversation, Conversation, Priority};
use crate::error::CallError;
use crate::im::{InstantMessagingCall, InstantMessagingFlow, ReceivedMessage};
use crate::text_format;
use application_endpoint::{Endpoint, EndpointCore, Modality};
use collaboration_platform::{Federated, Homed, Homing, IncomingRequest, OnPremises};
use sip_core::HeaderName;
use std::sync::Arc;
use tokio::sync::mpsc;

/// The stream of IM calls offered to an endpoint. Made by [`incoming_im_calls`]; while it
/// exists the endpoint accepts IM INVITEs (without it they are declined 488).
#[derive(Debug)]
pub struct IncomingImCalls {
    core: Arc<EndpointCore>,
    invites: mpsc::Receiver<IncomingRequest>,
}

/// Starts receiving the IM calls offered to `endpoint` (replaces an earlier stream).
pub fn incoming_im_calls(endpoint: &impl Endpoint) -> IncomingImCalls {
    let core = endpoint.core().clone();
    let invites = core.incoming(Modality::InstantMessaging);
    IncomingImCalls { core, invites }
}

impl IncomingImCalls {
    /// The next offered call; `None` when the endpoint terminated.
    ///
    /// Cancel safety: cancel safe.
    pub async fn next(&mut self) -> Option<IncomingImCall> {
        let req = self.invites.recv().await?;
        Some(IncomingImCall::new(&self.core, req))
    }
}

/// A call being offered, with its conversation typed by the caller's homing.
#[derive(Debug)]
pub struct IncomingCall<H: Homing> {
    call: InstantMessagingCall<H>,
    request: IncomingRequest,
    first_message: Option<ReceivedMessage>,
}

impl<H: Homing> IncomingCall<H> {
    /// The conversation (its id is the caller's `Ms-Conversation-ID` when given).
    pub fn conversation(&self) -> &Conversation<H> {
        self.call.conversation()
    }

    /// The call.
    pub fn call(&self) -> &InstantMessagingCall<H> {
        &self.call
    }

    /// The INVITE as received.
    pub fn request(&self) -> &IncomingRequest {
        &self.request
    }

    /// The first message the caller put in the INVITE (`Ms-Text-Format`), if any and of
    /// a type a message may have (as in the call); it is also the first message the
    /// accepted flow yields.
    pub fn first_message(&self) -> Option<&ReceivedMessage> {
        self.first_message.as_ref()
    }

    /// Accepts: answers 200 with the IM session and returns the flow. To an INVITE
    /// without an offer the 200 carries ours and the flow comes once the ACK brought the
    /// answer; an ACK without one, or with one that drops the IM session, ends the call
    /// with BYE and this fails with [`CallError::NotAcceptable`]. A call ended before
    /// (`terminate` through [`call`](Self::call)) is declined 603 instead and this fails
    /// with [`CallError::Ended`]. A caller that hangs up as soon as it has the 200 still
    /// leaves an accepted call: the flow yields what the caller sent, then ends.
    ///
    /// Cancel safety: not cancel safe.
    pub async fn accept(self) -> Result<InstantMessagingFlow, CallError> {
        self.call
            .accept_incoming(self.request, self.first_message)
            .await
    }

    /// Declines with `status` (486 Busy Here, 480 Temporarily Unavailable, 603 Decline …;
    /// anything outside 300–699 becomes 603).
    ///
    /// The headers RFC 3261 requires of a status are added: 405 carries `Allow` (§21.4.6:
    /// the methods still taken, without INVITE: `ACK, BYE, CANCEL, OPTIONS, MESSAGE` — a
    /// caller following the fallback rule of
    /// [`Conversation::deliver_text`](crate::Conversation::deliver_text) sends a page
    /// next), 415 carries `Accept: application/sdp` (§21.4.13). A status whose mandatory
    /// headers this call cannot supply — 401 and 407 (a challenge), 420 (`Unsupported`),
    /// 423 (`Min-Expires`) — becomes 603 Decline.
    ///
    /// Cancel safety: cancel safe.
    pub async fn decline(mut self, status: u16) {
        let (status, headers) = decline_response(status);
        let _ = self
            .request
            .respond(status, sip_core::reason_phrase(status), headers, None)
            .await;
        self.call.declined();
    }
}

/// The Allow of a 405 declining an IM INVITE: what the endpoint still takes.
const DECLINE_ALLOW: &str = "ACK, BYE, CANCEL, OPTIONS, MESSAGE";

/// The status and headers [`IncomingCall::decline`] answers `status` with.
fn decline_response(status: u16) -> (u16, &'static [(&'static str, &'static str)]) {
    match status {
        405 => (405, &[("Allow", DECLINE_ALLOW)]),
        415 => (415, &[("Accept", "application/sdp")]),
        401 | 407 | 420 | 423 => (603, &[]),
        s if (300..=699).contains(&s) => (s, &[]),
        _ => (603, &[]),
    }
}

/// An offered call from a home user or a federated party.
#[derive(Debug)]
pub enum IncomingImCall {
    /// From a user of the home deployment.
    OnPremises(IncomingCall<OnPremises>),
    /// From a federated party.
    Federated(IncomingCall<Federated>),
}

impl IncomingImCall {
    fn new(core: &Arc<EndpointCore>, request: IncomingRequest) -> IncomingImCall {
        let r = request.request();
        let id = r
            .header_by_name("Ms-Conversation-ID")
            .map(|v| String::from_utf8_lossy(v).trim().to_string());
        let subject = r
            .header(HeaderName::Subject)
            .map(|v| String::from_utf8_lossy(v).trim().to_string());
        let priority = r
            .header(HeaderName::Priority)
            .map(Priority::parse)
            .unwrap_or_default();
        // Of a type a message may be, as in the call: an isComposing document or an
        // image in the header is not a message.
        let first_message = r
            .header_by_name(text_format::HEADER)
            .and_then(text_format::decode)
            .and_then(|(content_type, body)| ReceivedMessage::taken(content_type, &body));
        match request.caller().clone() {
            Homed::OnPremises(a) => IncomingImCall::OnPremises(IncomingCall {
                call: InstantMessagingCall::incoming(Conversation::with_core(
                    core.clone(),
                    a,
                    id,
                    subject,
                    priority,
                )),
                request,
                first_message,
            }),
            Homed::Federated(a) => IncomingImCall::Federated(IncomingCall {
                call: InstantMessagingCall::incoming(Conversation::with_core(
                    core.clone(),
                    a,
                    id,
                    subject,
                    priority,
                )),
                request,
                first_message,
            }),
        }
    }

    /// The caller's URI.
    pub fn caller_uri(&self) -> &str {
        self.request().caller().uri()
    }

    /// `on-premises` or `federated`.
    pub fn homing(&self) -> &'static str {
        match self {
            IncomingImCall::OnPremises(_) => OnPremises::NAME,
            IncomingImCall::Federated(_) => Federated::NAME,
        }
    }

    /// The INVITE as received.
    pub fn request(&self) -> &IncomingRequest {
        match self {
            IncomingImCall::OnPremises(c) => c.request(),
            IncomingImCall::Federated(c) => c.request(),
        }
    }

    /// The conversation, typed at run time.
    pub fn conversation(&self) -> AnyConversation {
        match self {
            IncomingImCall::OnPremises(c) => AnyConversation::OnPremises(c.conversation().clone()),
            IncomingImCall::Federated(c) => AnyConversation::Federated(c.conversation().clone()),
        }
    }

    /// The first message carried in the INVITE, if any.
    pub fn first_message(&self) -> Option<&ReceivedMessage> {
        match self {
            IncomingImCall::OnPremises(c) => c.first_message(),
            IncomingImCall::Federated(c) => c.first_message(),
        }
    }

    /// Accepts, whatever the homing.
    ///
    /// Cancel safety: not cancel safe.
    pub async fn accept(self) -> Result<InstantMessagingFlow, CallError> {
        match self {
            IncomingImCall::OnPremises(c) => c.accept().await,
            IncomingImCall::Federated(c) => c.accept().await,
        }
    }

    /// Declines with `status`, whatever the homing.
    ///
    /// Cancel safety: cancel safe.
    pub async fn decline(self, status: u16) {
        match self {
            IncomingImCall::OnPremises(c) => c.decline(status).await,
            IncomingImCall::Federated(c) => c.decline(status).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Statuses that need headers get them; those whose headers cannot be supplied
    /// become 603; anything outside 300–699 is 603.
    #[test]
    fn decline_statuses_carry_their_mandatory_headers() {
        assert_eq!(
            decline_response(405),
            (405, &[("Allow", DECLINE_ALLOW)][..])
        );
        assert_eq!(
            decline_response(415),
            (415, &[("Accept", "application/sdp")][..])
        );
        for s in [401, 407, 420, 423, 200, 100, 700] {
            assert_eq!(decline_response(s), (603, &[][..]), "{s}");
        }
        for s in [486, 480, 488, 603, 606] {
            assert_eq!(decline_response(s), (s, &[][..]), "{s}");
        }
    }
}
