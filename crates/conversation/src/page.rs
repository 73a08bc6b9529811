//! Page mode (RFC 3428: MESSAGE outside any dialog) and the fallback rule of
//! [`Conversation::deliver_text`].

use crate::conversation::{Conversation, Delivery};
use crate::error::{CallError, MessageError};
use bytes::Bytes;
use collaboration_platform::{Homing, OutgoingRequest};
use sip_core::Method;

/// Final statuses to an IM INVITE that mean "this peer does not take IM sessions": the
/// text goes as a page instead.
pub const NO_IM_SESSIONS: [u16; 5] = [405, 415, 488, 501, 606];

pub(crate) async fn send<H: Homing>(
    conversation: &Conversation<H>,
    content_type: &str,
    body: Bytes,
) -> Result<(), MessageError> {
    let core = conversation.endpoint();
    // As for calls: an endpoint not (or no longer) established sends nothing as its owner.
    core.established_id().map_err(MessageError::Endpoint)?;
    let tag = application_endpoint::ids::tag();
    let (from, pai) = conversation.identity_headers(&tag);
    let remote = conversation.remote().uri().to_string();
    let mut req = OutgoingRequest::new(Method::Message, remote.clone())
        .from(from)
        .to(format!("<{remote}>"))
        .body(content_type, body);
    for (n, v) in conversation.conversation_headers() {
        req = req.header(n, v);
    }
    if let Some(p) = pai {
        req = req.header("P-Asserted-Identity", p);
    }
    match core.send_request(req).await {
        Ok(_) => Ok(()),
        Err(e) => Err(MessageError::from_request(e)),
    }
}

pub(crate) async fn deliver_text<H: Homing>(
    conversation: &Conversation<H>,
    text: &str,
) -> Result<Delivery, CallError> {
    let call = conversation.instant_messaging_call();
    match call.establish().await {
        Ok(flow) => {
            // Sent as a MESSAGE in the call (not only as the INVITE's Ms-Text-Format,
            // which non-Lync peers ignore), so its 2xx is the proof of delivery.
            let sent = flow.send_text(text).await;
            let _ = call.terminate().await;
            match sent {
                Ok(()) => Ok(Delivery::InCall),
                Err(e) => Err(e.into()),
            }
        }
        Err(e @ CallError::NotAcceptable(_)) => page_instead(conversation, text, e).await,
        Err(e @ CallError::Declined { status, .. }) if NO_IM_SESSIONS.contains(&status) => {
            page_instead(conversation, text, e).await
        }
        Err(e) => Err(e),
    }
}

/// The page sent after the IM call was refused with `refused`; when it fails too, both are
/// reported ([`CallError::PageFailed`]).
async fn page_instead<H: Homing>(
    conversation: &Conversation<H>,
    text: &str,
    refused: CallError,
) -> Result<Delivery, CallError> {
    match send(
        conversation,
        "text/plain; charset=UTF-8",
        Bytes::copy_from_slice(text.as_bytes()),
    )
    .await
    {
        Ok(()) => Ok(Delivery::Page),
        Err(page) => Err(CallError::PageFailed {
            call: Box::new(refused),
            page,
        }),
    }
}
