//! Requests delivered to an endpoint, and how the endpoint answers them.

use crate::dispatch::EndpointId;
use crate::error::RespondError;
use crate::runtime::Command;
use crate::topology::Homed;
use bytes::Bytes;
use sip_core::transaction::TransactionId;
use sip_core::{DialogId, HeaderName, Method, SipMessage};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc;

/// A request the platform routed to an endpoint. Answer it with
/// [`respond`](Self::respond); dropped without a final response, the platform answers
/// `500` for it (every request gets a definite answer).
///
/// An ACK is routed too when it owes an answer: the ACK of a 2xx that carried the offer,
/// the INVITE having none (RFC 3261 §13.2.1: the answer is in that ACK), once per 2xx.
/// It has nothing to answer: [`respond`](Self::respond) refuses with
/// [`RespondError::AlreadyAnswered`]. Other ACKs stay with the platform.
#[derive(Debug)]
pub struct IncomingRequest {
    request: SipMessage,
    caller: Homed,
    endpoint: EndpointId,
    source: SocketAddr,
    transaction: TransactionId,
    to_tag: String,
    dialog: Option<DialogId>,
    cancelled: Option<Arc<Cancellation>>,
    answered: bool,
    commands: mpsc::Sender<Command>,
    server: Bytes,
    span: tracing::Span,
}

/// That an INVITE being served was cancelled, and what its CANCEL said: shared by the
/// platform, which sets it, and the endpoint's [`IncomingRequest`]. Set once: being set
/// is being cancelled.
#[derive(Debug, Default)]
pub(crate) struct Cancellation(OnceLock<String>);

impl Cancellation {
    /// Marks the INVITE cancelled with what the CANCEL said (the first call counts).
    pub(crate) fn cancel(&self, said: String) {
        let _ = self.0.set(said);
    }

    fn said(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

impl IncomingRequest {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        request: SipMessage,
        caller: Homed,
        endpoint: EndpointId,
        source: SocketAddr,
        transaction: TransactionId,
        commands: mpsc::Sender<Command>,
        server: Bytes,
        span: tracing::Span,
    ) -> Self {
        let to_tag = if request.to().ok().is_some_and(|t| t.tag().is_none()) {
            crate::request::tag()
        } else {
            String::new()
        };
        IncomingRequest {
            request,
            caller,
            endpoint,
            source,
            transaction,
            // Only a request outside a dialog needs a tag of ours in its answers; one inside a
            // dialog keeps the To tag it carries.
            to_tag,
            dialog: None,
            cancelled: None,
            answered: false,
            commands,
            server,
            span,
        }
    }

    pub(crate) fn set_dialog(&mut self, dialog: Option<DialogId>) {
        self.dialog = dialog;
    }

    pub(crate) fn set_cancellation(&mut self, c: Option<Arc<Cancellation>>) {
        self.cancelled = c;
    }

    /// Whether the caller cancelled this INVITE (RFC 3261 §9.2): the platform answered
    /// 487 for it, and a later answer is refused with [`RespondError::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        self.cancel_diagnostics().is_some()
    }

    /// Once the INVITE was cancelled: what the CANCEL said about why, as
    /// [`peer_diagnostics`](crate::peer_diagnostics) gives it, e.g. ` (reason SIP 200:
    /// "Call completed elsewhere")` when a forking proxy cancels the branches another
    /// device answered (RFC 3326) — such a call was answered, not missed. Empty when the
    /// CANCEL said nothing or the INVITE's Expires ran out; `None` while not cancelled.
    pub fn cancel_diagnostics(&self) -> Option<&str> {
        self.cancelled.as_ref().and_then(|c| c.said())
    }

    /// The dialog of the request: the one it arrived in (a NOTIFY of a subscription this
    /// endpoint made, a MESSAGE or BYE inside a call), or, for an INVITE, SUBSCRIBE or
    /// REFER outside any dialog, the one this endpoint's answer creates (1xx or 2xx to an
    /// INVITE, 2xx to the others). `None` for other requests outside dialogs.
    pub fn dialog(&self) -> Option<DialogId> {
        if self.dialog.is_some() {
            return self.dialog.clone();
        }
        if !matches!(
            self.request.method(),
            Some(Method::Invite | Method::Subscribe | Method::Refer)
        ) {
            return None;
        }
        let from = self.request.from().ok()?;
        let to = self.request.to().ok()?;
        if to.tag().is_some() {
            return None;
        }
        let call_id = self.request.call_id().ok()?;
        Some(DialogId::new(
            call_id,
            self.to_tag.as_bytes(),
            from.tag().unwrap_or_default(),
        ))
    }

    /// The To tag this endpoint's answers carry (the local tag of the dialog an INVITE's
    /// answer creates).
    pub fn local_tag(&self) -> &str {
        if !self.to_tag.is_empty() {
            return &self.to_tag;
        }
        self.request
            .to()
            .ok()
            .and_then(|t| t.tag())
            .and_then(|t| std::str::from_utf8(t).ok())
            .unwrap_or("")
    }

    /// The request as received.
    pub fn request(&self) -> &SipMessage {
        &self.request
    }

    /// Who sent it, classified by the platform's [`Topology`](crate::Topology) from the From
    /// URI: layers above treat a [`Homed::Federated`] caller by federation rules.
    pub fn caller(&self) -> &Homed {
        &self.caller
    }

    /// Whether the caller is federated (another deployment, or cloud-homed).
    pub fn is_from_federated(&self) -> bool {
        self.caller.is_federated()
    }

    /// The endpoint it was routed to.
    pub fn endpoint(&self) -> EndpointId {
        self.endpoint
    }

    /// The address of the hop it came from (normally the front end).
    pub fn source(&self) -> SocketAddr {
        self.source
    }

    /// The body.
    pub fn body(&self) -> &Bytes {
        self.request.body()
    }

    /// The tracing span of its transaction.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Answers with `status` and `reason`, extra `headers` and an optional body
    /// `(content_type, bytes)`. Via, From, To (tagged), Call-ID, CSeq and Server are filled
    /// in; so is Contact in a response that makes or refreshes a dialog (the dialog's local
    /// target, or the endpoint's for a new one) when `headers` give none. A provisional
    /// status (1xx) may be followed by others; after a final one the
    /// request is answered and further calls fail with [`RespondError::AlreadyAnswered`].
    ///
    /// Cancel safety: cancel safe while it waits for room in the platform's command queue
    /// (nothing was sent and the request is still unanswered); once queued, the response is
    /// sent.
    pub async fn respond(
        &mut self,
        status: u16,
        reason: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Bytes)>,
    ) -> Result<(), RespondError> {
        let r = self.response(status, reason, headers, body)?;
        self.respond_with(r).await
    }

    /// Answers like [`respond`](Self::respond) (no extra headers, no body) without waiting:
    /// `Ok(true)` when the answer is on its way, `Ok(false)` when the platform's command
    /// queue is full and nothing was sent (call `respond` to wait for room). A handler that
    /// answers its common case this way needs no `.await` there, so its future stays small.
    pub fn try_respond(&mut self, status: u16, reason: &str) -> Result<bool, RespondError> {
        let response = self.response(status, reason, &[], None)?;
        let (cmd, is_final) = self.command(response, false)?;
        match self.commands.try_send(cmd) {
            Ok(()) => {
                if is_final {
                    self.answered = true;
                }
                Ok(true)
            }
            Err(mpsc::error::TrySendError::Full(_)) => Ok(false),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(RespondError::Shutdown),
        }
    }

    /// The response `respond` sends.
    fn response(
        &self,
        status: u16,
        reason: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Bytes)>,
    ) -> Result<SipMessage, RespondError> {
        let invalid = |e: sip_core::ParseError| RespondError::Invalid(e.to_string());
        if self.answered {
            return Err(RespondError::AlreadyAnswered);
        }
        if !(100..=699).contains(&status) {
            return Err(RespondError::Invalid(format!("status {status}")));
        }
        let mut r = SipMessage::response_to(&self.request, status, reason).map_err(invalid)?;
        if status != 100 {
            r.set_to_tag(&self.to_tag).map_err(invalid)?;
        }
        r.push_header(HeaderName::Server, self.server.clone())
            .map_err(invalid)?;
        for (n, v) in headers {
            r.push_header(*n, v.to_string()).map_err(invalid)?;
        }
        if let Some((ct, b)) = body {
            r.push_header(HeaderName::ContentType, ct.to_string())
                .map_err(invalid)?;
            r.set_body(b);
        }
        if self.caller.is_federated() {
            // An answer to a federated caller carries no home trust either.
            crate::federation::strip_home_trust(&mut r);
        }
        Ok(r)
    }

    /// Answers with a response the caller built (e.g. with `SipMessage::response_to`).
    /// One without a To tag gets this request's (see [`local_tag`](Self::local_tag)), as
    /// every response but a 100 to a request outside a dialog must carry the same tag
    /// (RFC 3261 §8.2.6.2); a tag the caller set is kept.
    ///
    /// Cancel safety: as [`respond`](Self::respond).
    pub async fn respond_with(&mut self, mut response: SipMessage) -> Result<(), RespondError> {
        if response.status() != Some(100) && !self.to_tag.is_empty() {
            response
                .set_to_tag(&self.to_tag)
                .map_err(|e| RespondError::Invalid(e.to_string()))?;
        }
        if self.caller.is_federated() {
            crate::federation::strip_home_trust(&mut response);
        }
        let (cmd, is_final) = self.command(response, false)?;
        self.send(cmd, is_final).await
    }

    /// Queues `cmd` for the platform, waiting for room; a final answer marks the request
    /// answered.
    async fn send(&mut self, cmd: Command, is_final: bool) -> Result<(), RespondError> {
        self.commands
            .send(cmd)
            .await
            .map_err(|_| RespondError::Shutdown)?;
        if is_final {
            self.answered = true;
        }
        Ok(())
    }

    /// The command that sends `response`, once the checks every answer passes are done;
    /// whether it is final. `keep_dialog`: see [`respond_no_such_usage`](Self::respond_no_such_usage).
    fn command(
        &mut self,
        response: SipMessage,
        keep_dialog: bool,
    ) -> Result<(Command, bool), RespondError> {
        if self.answered {
            return Err(RespondError::AlreadyAnswered);
        }
        if self.is_cancelled() {
            self.answered = true;
            return Err(RespondError::Cancelled);
        }
        let Some(status) = response.status() else {
            return Err(RespondError::Invalid("a request is not a response".into()));
        };
        let is_final = status >= 200;
        let cmd = Command::Respond {
            transaction: self.transaction,
            response,
            is_final,
            keep_dialog,
        };
        Ok((cmd, is_final))
    }

    /// Answers 481 to a request for a usage its dialog does not have (a NOTIFY whose
    /// Event matches none of the dialog's subscriptions, RFC 6665 §4.1.3). Unlike
    /// `respond(481, …)`, which says the whole dialog is unknown and makes the platform
    /// forget it, this leaves the dialog and its other usages alone (RFC 5057 §5.1).
    ///
    /// Cancel safety: as [`respond`](Self::respond).
    pub async fn respond_no_such_usage(&mut self) -> Result<(), RespondError> {
        let response = self.response(481, sip_core::reason_phrase(481), &[], None)?;
        let (cmd, is_final) = self.command(response, true)?;
        self.send(cmd, is_final).await
    }

    /// An ACK: there is nothing to answer (and nothing is sent when it is dropped).
    pub(crate) fn set_unanswerable(&mut self) {
        self.answered = true;
    }

    /// Marks the request answered without sending (the platform answered it itself).
    pub(crate) fn defuse(mut self) {
        self.answered = true;
    }
}

impl Drop for IncomingRequest {
    fn drop(&mut self) {
        if self.answered || self.is_cancelled() {
            return;
        }
        let Ok(mut r) = SipMessage::response_to(&self.request, 500, "Server Internal Error") else {
            return;
        };
        let _ = r.set_to_tag(&self.to_tag);
        let cmd = Command::Respond {
            transaction: self.transaction,
            response: r,
            is_final: true,
            keep_dialog: false,
        };
        match self.commands.try_send(cmd) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(cmd)) => {
                let commands = self.commands.clone();
                if let Ok(h) = tokio::runtime::Handle::try_current() {
                    h.spawn(async move {
                        let _ = commands.send(cmd).await;
                    });
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Address;
    use sip_core::transaction::{Event, Peer, TransactionConfig, TransactionLayer, TransportKind};
    use sip_core::Limits;

    /// A MESSAGE as the platform hands it to an endpoint, with its server transaction id.
    fn incoming(commands: mpsc::Sender<Command>) -> IncomingRequest {
        incoming_with_to(commands, "<sip:bot@contoso.test>;tag=b1")
    }

    /// As [`incoming`], with this To header field value.
    fn incoming_with_to(commands: mpsc::Sender<Command>, to: &str) -> IncomingRequest {
        let raw = format!(
            "MESSAGE sip:bot@contoso.test SIP/2.0\r\n\
             Via: SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bK-1\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:alice@contoso.test>;tag=a1\r\n\
             To: {to}\r\n\
             Call-ID: c1@contoso.test\r\n\
             CSeq: 2 MESSAGE\r\n\
             Content-Length: 0\r\n\r\n"
        );
        let request = SipMessage::parse_datagram(Bytes::from(raw), &Limits::default()).unwrap();
        let peer = Peer::new("192.0.2.1:5061".parse().unwrap(), TransportKind::Tls);
        let mut layer = TransactionLayer::new(TransactionConfig::default());
        layer.handle_message(std::time::Instant::now(), request, peer);
        let Some(Event::Request { id, request, .. }) = layer.poll_event() else {
            panic!("the layer delivers the request");
        };
        let caller =
            Homed::OnPremises(Address::assume_on_premises("sip:alice@contoso.test").unwrap());
        IncomingRequest::new(
            request,
            caller,
            EndpointId(1),
            peer.addr,
            id,
            commands,
            Bytes::from_static(b"ucma-rs test"),
            tracing::Span::none(),
        )
    }

    #[tokio::test]
    async fn try_respond_queues_the_answer_when_there_is_room() {
        let (tx, mut rx) = mpsc::channel(4);
        let mut req = incoming(tx);
        assert_eq!(req.try_respond(200, "OK"), Ok(true));
        let Some(Command::Respond {
            response, is_final, ..
        }) = rx.recv().await
        else {
            panic!("a Respond command");
        };
        assert!(is_final);
        assert_eq!(response.status(), Some(200));
        assert_eq!(
            response.header(HeaderName::Server),
            Some(&b"ucma-rs test"[..])
        );
        // Answered: a second answer is refused, and dropping it sends nothing more.
        assert_eq!(
            req.try_respond(200, "OK"),
            Err(RespondError::AlreadyAnswered)
        );
        drop(req);
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_481_for_a_missing_usage_keeps_the_dialog() {
        let (tx, mut rx) = mpsc::channel(4);
        let mut plain = incoming(tx.clone());
        plain.respond(481, "Gone", &[], None).await.unwrap();
        let Some(Command::Respond { keep_dialog, .. }) = rx.recv().await else {
            panic!("a Respond command");
        };
        assert!(!keep_dialog, "a plain 481 says the dialog is unknown");

        let mut usage = incoming(tx);
        usage.respond_no_such_usage().await.unwrap();
        let Some(Command::Respond {
            response,
            is_final,
            keep_dialog,
            ..
        }) = rx.recv().await
        else {
            panic!("a Respond command");
        };
        assert_eq!(
            (response.status(), is_final, keep_dialog),
            (Some(481), true, true)
        );
        assert_eq!(
            usage.respond(200, "OK", &[], None).await,
            Err(RespondError::AlreadyAnswered)
        );
    }

    /// A response the caller built without a To tag gets the request's, the one its other
    /// responses carry (§8.2.6.2); a 100 Trying goes as built.
    #[tokio::test]
    async fn a_response_built_by_the_caller_gets_the_to_tag_of_the_others() {
        let (tx, mut rx) = mpsc::channel(4);
        let mut req = incoming_with_to(tx, "<sip:bot@contoso.test>");
        let tag = req.local_tag().to_string();
        assert!(!tag.is_empty());
        let to_tag = |r: &SipMessage| {
            r.to()
                .ok()
                .and_then(|t| t.tag().map(|t| String::from_utf8_lossy(t).into_owned()))
        };
        for status in [100, 180, 486] {
            let built = SipMessage::response_to(req.request(), status, "Built").unwrap();
            req.respond_with(built).await.unwrap();
            let Some(Command::Respond { response, .. }) = rx.recv().await else {
                panic!("a Respond command");
            };
            let expected = (status != 100).then(|| tag.clone());
            assert_eq!(to_tag(&response), expected, "{status}");
        }
    }

    /// An answer to a federated caller carries no home trust, whichever way the endpoint
    /// builds it (`respond` or `respond_with`).
    #[tokio::test]
    async fn respond_with_strips_home_trust_toward_a_federated_caller() {
        let (tx, mut rx) = mpsc::channel(4);
        let mut req = incoming(tx.clone());
        req.caller = Homed::Federated(
            crate::topology::Address::assume_federated("sip:carol@fabrikam.test").unwrap(),
        );
        // Through `respond`: stripped.
        let mut req2 = incoming(tx);
        req2.caller = req.caller.clone();
        req2.respond(
            200,
            "OK",
            &[
                ("P-Asserted-Identity", "<sip:ceo@contoso.test>"),
                (
                    "ms-asserted-verification-level",
                    "ms-source-verified-user=verified",
                ),
            ],
            None,
        )
        .await
        .unwrap();
        let Some(Command::Respond { response, .. }) = rx.recv().await else {
            panic!()
        };
        assert!(
            response.header(HeaderName::PAssertedIdentity).is_none(),
            "respond"
        );
        // Through `respond_with`: the same response built by the caller.
        let mut built = SipMessage::response_to(req.request(), 200, "OK").unwrap();
        built
            .push_header(HeaderName::PAssertedIdentity, "<sip:ceo@contoso.test>")
            .unwrap();
        built
            .push_header(
                "ms-asserted-verification-level",
                "ms-source-verified-user=verified",
            )
            .unwrap();
        req.respond_with(built).await.unwrap();
        let Some(Command::Respond { response, .. }) = rx.recv().await else {
            panic!()
        };
        let wire = String::from_utf8_lossy(&response.to_bytes()).into_owned();
        assert!(
            response.header(HeaderName::PAssertedIdentity).is_none()
                && !wire
                    .to_ascii_lowercase()
                    .contains("ms-asserted-verification-level"),
            "home trust sent to a federated caller:\n{wire}"
        );
    }

    #[tokio::test]
    async fn try_respond_gives_way_when_the_queue_is_full() {
        let (tx, mut rx) = mpsc::channel(1);
        tx.try_send(Command::EndDialog {
            dialog: DialogId::new(b"filler", b"", b""),
        })
        .unwrap();
        let mut req = incoming(tx);
        // Nothing sent, still unanswered: the caller can wait with `respond`.
        assert_eq!(req.try_respond(200, "OK"), Ok(false));
        let _ = rx.recv().await;
        req.respond(200, "OK", &[], None).await.unwrap();
        let Some(Command::Respond { response, .. }) = rx.recv().await else {
            panic!("the waited answer");
        };
        assert_eq!(response.status(), Some(200));
    }
}
