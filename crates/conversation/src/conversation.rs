//! [`Conversation`]: a conversation with one remote party, typed by that party's homing.
//!
//! `Conversation<OnPremises>` and `Conversation<Federated>` differ where the deployment's
//! rules differ. Impersonation (an application endpoint speaking as someone else) takes a
//! URI and a display name toward a home user, and only a URI toward a federated party:
//! the federation edge does not carry display names of impersonated identities, so the
//! API does not accept one (passing one does not compile). On the wire, toward a federated
//! party, From carries the impersonated URI with no display name and no
//! P-Asserted-Identity is sent; toward a home user both are.

use crate::error::CallError;
use crate::im::InstantMessagingCall;
use crate::page;
use crate::MessageError;
use application_endpoint::{Endpoint, EndpointCore, EndpointError};
use bytes::Bytes;
use collaboration_platform::{Address, Federated, Homed, Homing, OnPremises};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Where a conversation (or its call) is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConversationState {
    /// Created; nothing sent.
    Idle,
    /// An incoming call waits to be accepted or declined.
    Incoming,
    /// The INVITE is out (or the answer is being sent).
    Establishing,
    /// The call is up.
    Established,
    /// BYE sent, waiting for its answer.
    Terminating,
    /// Over (either side ended it, or it never got established).
    Terminated,
}

/// Why a call ended, as [`InstantMessagingCall::termination_reason`] tells it: the state
/// says that the call is over, this says why, in words a user can read (`Display`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TerminationReason {
    /// This side ended it: `terminate`, `cancel`, or declining an incoming call.
    Local,
    /// The remote party ended it with BYE.
    Remote {
        /// What the BYE said about why (its Reason, `ms-diagnostics` and Warning values,
        /// as [`collaboration_platform::peer_diagnostics`] gives them; empty when none).
        diagnostics: String,
    },
    /// It never got established; the error is the one `establish` or `accept` returned.
    NotEstablished(CallError),
    /// It was established, and a renegotiation left it no IM session: the ACK of an
    /// offerless re-INVITE, which owes the answer to the offer our 2xx carried, had none
    /// or rejected the session (`NotAcceptable`). This side sent BYE.
    Renegotiation(CallError),
    /// A request in the dialog was answered 481 or 408, or not at all (then `status` is
    /// 408 and `reason` says so): the dialog is gone (RFC 3261 §12.2.1.2).
    DialogLost {
        /// The status received, or 408 for no answer.
        status: u16,
        /// Its reason phrase, or what happened instead.
        reason: String,
    },
    /// The platform ended the dialog on its own account, e.g. the caller never ACKed our
    /// 2xx and the platform sent BYE (RFC 3261 §13.3.1.4).
    EndedByPlatform(collaboration_platform::DialogEndReason),
    /// Its endpoint ended (`terminate()`, a registration refused for good, the platform
    /// shut down). This side sent BYE, or CANCEL while it rang, when it still could.
    EndpointTerminated,
}

impl std::fmt::Display for TerminationReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TerminationReason::Local => f.write_str("ended by this side"),
            TerminationReason::Remote { diagnostics } => {
                write!(f, "ended by the remote party (BYE){diagnostics}")
            }
            TerminationReason::NotEstablished(e) => write!(f, "not established: {e}"),
            TerminationReason::Renegotiation(e) => write!(f, "renegotiation failed: {e}"),
            TerminationReason::DialogLost { status, reason } => write!(
                f,
                "the dialog is gone: a request in it got {status} {reason}"
            ),
            TerminationReason::EndedByPlatform(r) => write!(f, "ended by the platform: {r}"),
            TerminationReason::EndpointTerminated => f.write_str("its endpoint ended"),
        }
    }
}

/// The `Priority` header of the conversation's calls (RFC 3261 §20.26).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Priority {
    /// No header (normal).
    #[default]
    Normal,
    /// `urgent`.
    Urgent,
    /// `non-urgent`.
    NonUrgent,
    /// `emergency`.
    Emergency,
}

impl Priority {
    fn header(self) -> Option<&'static str> {
        match self {
            Priority::Normal => None,
            Priority::Urgent => Some("urgent"),
            Priority::NonUrgent => Some("non-urgent"),
            Priority::Emergency => Some("emergency"),
        }
    }

    /// Reads a `Priority` header value.
    pub fn parse(value: &[u8]) -> Priority {
        match value.trim_ascii() {
            v if v.eq_ignore_ascii_case(b"urgent") => Priority::Urgent,
            v if v.eq_ignore_ascii_case(b"non-urgent") => Priority::NonUrgent,
            v if v.eq_ignore_ascii_case(b"emergency") => Priority::Emergency,
            _ => Priority::Normal,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Impersonation {
    uri: String,
    display_name: Option<String>,
}

pub(crate) struct Shared<H: Homing> {
    /// Here, not in each handle: handles are cloned into calls and handlers.
    remote: Address<H>,
    pub(crate) core: Arc<EndpointCore>,
    pub(crate) id: Box<str>,
    pub(crate) subject: Option<Box<str>>,
    pub(crate) priority: Priority,
    /// One lock, rare parts boxed: a conversation is held per idle call.
    inner: Mutex<Inner>,
}

/// A copy for [`Conversation::edit`] on a shared conversation: the same remote, endpoint,
/// headers, state and impersonation; the state's watchers stay with the original.
impl<H: Homing> Clone for Shared<H> {
    fn clone(&self) -> Self {
        let (state, impersonation) = {
            let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let imp = g.rare.as_ref().and_then(|r| r.impersonation.clone());
            (g.state, imp)
        };
        Shared {
            remote: self.remote.clone(),
            core: self.core.clone(),
            id: self.id.clone(),
            subject: self.subject.clone(),
            priority: self.priority,
            inner: Mutex::new(Inner {
                state,
                rare: impersonation.map(|i| {
                    Box::new(Rare {
                        watch: None,
                        impersonation: Some(i),
                    })
                }),
            }),
        }
    }
}

struct Inner {
    state: ConversationState,
    /// What most conversations never use, allocated when first needed.
    rare: Option<Box<Rare>>,
}

#[derive(Default)]
struct Rare {
    /// Made when somebody watches the state.
    watch: Option<watch::Sender<ConversationState>>,
    impersonation: Option<Impersonation>,
}

/// What a call needs of its conversation, without the homing type (calls keep one
/// pointer to it).
pub(crate) trait ConversationLink: Send + Sync + 'static {
    fn set_state(&self, s: ConversationState);
    fn endpoint(&self) -> &Arc<EndpointCore>;
}

impl<H: Homing> ConversationLink for Shared<H> {
    fn set_state(&self, s: ConversationState) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.state = s;
        if let Some(tx) = g.rare.as_ref().and_then(|r| r.watch.as_ref()) {
            tx.send_if_modified(|v| std::mem::replace(v, s) != s);
        }
    }

    fn endpoint(&self) -> &Arc<EndpointCore> {
        &self.core
    }
}

impl std::fmt::Debug for dyn ConversationLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Conversation")
    }
}

/// A conversation with `remote`, on an application or user endpoint.
pub struct Conversation<H: Homing> {
    pub(crate) shared: Arc<Shared<H>>,
}

impl<H: Homing> Clone for Conversation<H> {
    fn clone(&self) -> Self {
        Conversation {
            shared: self.shared.clone(),
        }
    }
}

impl<H: Homing> std::fmt::Debug for Conversation<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conversation")
            .field("id", &self.shared.id)
            .field("remote", &self.shared.remote)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// A conversation whose remote party's homing is known only at run time (from
/// [`Topology::classify`](collaboration_platform::Topology::classify) or an incoming call).
#[derive(Debug, Clone)]
pub enum AnyConversation {
    /// With a user of the home deployment.
    OnPremises(Conversation<OnPremises>),
    /// With a federated party.
    Federated(Conversation<Federated>),
}

impl AnyConversation {
    /// A conversation with `remote`, typed by its homing.
    pub fn new(endpoint: &impl Endpoint, remote: Homed) -> AnyConversation {
        match remote {
            Homed::OnPremises(a) => AnyConversation::OnPremises(Conversation::new(endpoint, a)),
            Homed::Federated(a) => AnyConversation::Federated(Conversation::new(endpoint, a)),
        }
    }

    /// The remote party's URI.
    pub fn remote_uri(&self) -> &str {
        match self {
            AnyConversation::OnPremises(c) => c.remote().uri(),
            AnyConversation::Federated(c) => c.remote().uri(),
        }
    }

    /// `on-premises` or `federated`.
    pub fn homing(&self) -> &'static str {
        match self {
            AnyConversation::OnPremises(_) => OnPremises::NAME,
            AnyConversation::Federated(_) => Federated::NAME,
        }
    }

    /// The conversation id.
    pub fn id(&self) -> &str {
        match self {
            AnyConversation::OnPremises(c) => c.id(),
            AnyConversation::Federated(c) => c.id(),
        }
    }
}

impl<H: Homing> Conversation<H> {
    /// A new conversation on `endpoint` with `remote`, with a fresh conversation id.
    pub fn new(endpoint: &impl Endpoint, remote: Address<H>) -> Self {
        Self::with_core(
            endpoint.core().clone(),
            remote,
            None,
            None,
            Priority::Normal,
        )
    }

    pub(crate) fn with_core(
        core: Arc<EndpointCore>,
        remote: Address<H>,
        id: Option<String>,
        subject: Option<String>,
        priority: Priority,
    ) -> Self {
        Conversation {
            shared: Arc::new(Shared {
                remote,
                core,
                id: id.unwrap_or_else(new_conversation_id).into(),
                subject: subject.map(Into::into),
                priority,
                inner: Mutex::new(Inner {
                    state: ConversationState::Idle,
                    rare: None,
                }),
            }),
        }
    }

    /// Sets the subject (the `Subject` header of its calls). Before any call.
    ///
    /// Takes effect on the returned conversation whether or not this one was cloned: when
    /// other handles exist, the returned conversation is a copy of it (same state and
    /// impersonation, its own state from then on) and the other handles keep the old
    /// value. The same holds for [`with_priority`](Self::with_priority) and
    /// [`with_id`](Self::with_id).
    pub fn with_subject(self, subject: impl Into<String>) -> Self {
        let subject = Some(subject.into().into());
        self.edit(|s| s.subject = subject)
    }

    /// Sets the priority. Before any call. Takes effect whatever the clones, as
    /// [`with_subject`](Self::with_subject) says.
    pub fn with_priority(self, priority: Priority) -> Self {
        self.edit(|s| s.priority = priority)
    }

    /// Uses `id` as the conversation id (to continue a conversation another call began).
    /// Before any call. Takes effect whatever the clones, as
    /// [`with_subject`](Self::with_subject) says.
    pub fn with_id(self, id: impl Into<String>) -> Self {
        let id = id.into().into();
        self.edit(|s| s.id = id)
    }

    /// `change` applied to the shared part, in place when this is the only handle, else to
    /// a copy that this handle then owns alone (`Arc::get_mut` alone silently did nothing
    /// when the conversation had been cloned).
    fn edit(mut self, change: impl FnOnce(&mut Shared<H>)) -> Self {
        change(Arc::make_mut(&mut self.shared));
        self
    }

    /// The conversation id, carried on the wire as `Ms-Conversation-ID` and used to
    /// correlate the calls of one conversation.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The subject, if any.
    pub fn subject(&self) -> Option<&str> {
        self.shared.subject.as_deref()
    }

    /// The priority.
    pub fn priority(&self) -> Priority {
        self.shared.priority
    }

    /// The remote party.
    pub fn remote(&self) -> &Address<H> {
        &self.shared.remote
    }

    /// The endpoint the conversation is on.
    pub fn endpoint(&self) -> &Arc<EndpointCore> {
        &self.shared.core
    }

    /// The current state.
    pub fn state(&self) -> ConversationState {
        self.lock().state
    }

    /// Watches the state.
    pub fn watch_state(&self) -> watch::Receiver<ConversationState> {
        let mut g = self.lock();
        let value = g.state;
        g.rare
            .get_or_insert_with(Box::default)
            .watch
            .get_or_insert_with(|| watch::Sender::new(value))
            .subscribe()
    }

    pub(crate) fn set_state(&self, s: ConversationState) {
        ConversationLink::set_state(&*self.shared, s);
    }

    pub(crate) fn link(&self) -> Arc<dyn ConversationLink> {
        self.shared.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An instant-messaging call in this conversation, not yet established.
    pub fn instant_messaging_call(&self) -> InstantMessagingCall<H> {
        InstantMessagingCall::outgoing(self.clone())
    }

    /// Sends one page-mode MESSAGE (RFC 3428, outside any dialog) to the remote party.
    /// Fails with [`MessageError::Endpoint`], sending nothing, when the endpoint is not
    /// established (as a call does).
    ///
    /// Cancel safety: as the platform's `send_request`.
    pub async fn send_page(
        &self,
        content_type: &str,
        body: impl Into<Bytes>,
    ) -> Result<(), MessageError> {
        page::send(self, content_type, body.into()).await
    }

    /// Delivers `text` the way the peer takes it (the fallback rule): an IM call is
    /// established and the text is sent in it as a MESSAGE; if the peer does not take IM
    /// sessions — the INVITE is answered
    /// 405, 415, 488, 501 or 606 — the text goes as one page-mode MESSAGE instead. Other
    /// failures (busy, declined, no answer) are reported, not retried. The call is ended
    /// afterwards. When the page fails too, the error is [`CallError::PageFailed`], with
    /// the INVITE's refusal and the page's failure.
    ///
    /// Cancel safety: not cancel safe (the call, dropped with the future, ends with BYE
    /// or CANCEL; the text may or may not have been delivered).
    pub async fn deliver_text(&self, text: &str) -> Result<Delivery, CallError> {
        page::deliver_text(self, text).await
    }

    /// Only an application endpoint impersonates, and only a home user: an address
    /// assumed on-premises that the directory knows as cloud-homed, or in no home domain,
    /// is refused (the application would act as a federated user).
    fn impersonation_allowed(&self, who: &Address<OnPremises>) -> Result<(), CallError> {
        let core = &self.shared.core;
        if !core.is_application() {
            return Err(CallError::ImpersonationNotAllowed);
        }
        match core.platform().topology().classify(who.uri()) {
            Ok(Homed::OnPremises(_)) => Ok(()),
            _ => Err(CallError::Endpoint(EndpointError::FederationRestricted {
                operation: "impersonate",
                uri: who.uri().to_string(),
            })),
        }
    }

    fn set_impersonation(&self, i: Impersonation) {
        self.lock()
            .rare
            .get_or_insert_with(Box::default)
            .impersonation = Some(i);
    }

    /// The From value and the P-Asserted-Identity (home users only) of requests this
    /// conversation sends, with `tag`.
    pub(crate) fn identity_headers(&self, tag: &str) -> (String, Option<String>) {
        let imp = self
            .lock()
            .rare
            .as_ref()
            .and_then(|r| r.impersonation.clone());
        let federated = H::NAME == Federated::NAME;
        match imp {
            Some(i) => {
                let na = match (&i.display_name, federated) {
                    (Some(d), false) => format!("{} <{}>", quote(d), i.uri),
                    _ => format!("<{}>", i.uri),
                };
                let pai = (!federated).then(|| na.clone());
                (format!("{na};tag={tag}"), pai)
            }
            None => {
                let core = &self.shared.core;
                let na = match core.display_name() {
                    Some(d) => format!("{} <{}>", quote(d), core.owner().uri()),
                    None => format!("<{}>", core.owner().uri()),
                };
                (format!("{na};tag={tag}"), None)
            }
        }
    }

    /// Headers every call of the conversation carries.
    pub(crate) fn conversation_headers(&self) -> Vec<(&'static str, String)> {
        let mut h = vec![("Ms-Conversation-ID", self.shared.id.to_string())];
        if let Some(s) = &self.shared.subject {
            h.push(("Subject", s.to_string()));
        }
        if let Some(p) = self.shared.priority.header() {
            h.push(("Priority", p.to_string()));
        }
        h
    }
}

impl Conversation<OnPremises> {
    /// Speaks as `who`, a home user, with `display_name` toward this home user: From
    /// carries both and a P-Asserted-Identity is sent. Application endpoints only.
    ///
    /// `who` is typed: a federated party's address does not compile, as an application
    /// never acts as a federated user. One the platform's directory knows as cloud-homed
    /// (hybrid) is refused at run time with `EndpointError::FederationRestricted`.
    pub fn impersonate(
        &self,
        who: &Address<OnPremises>,
        display_name: impl Into<String>,
    ) -> Result<(), CallError> {
        self.impersonation_allowed(who)?;
        self.set_impersonation(Impersonation {
            uri: who.uri().to_string(),
            display_name: Some(display_name.into()),
        });
        Ok(())
    }
}

impl Conversation<Federated> {
    /// Speaks as `who`, a home user, toward this federated party: From carries the URI
    /// only (a display name cannot cross federation for an impersonated identity) and no
    /// P-Asserted-Identity is sent. Application endpoints only; `who` is checked as in
    /// [`Conversation::<OnPremises>::impersonate`].
    pub fn impersonate(&self, who: &Address<OnPremises>) -> Result<(), CallError> {
        self.impersonation_allowed(who)?;
        self.set_impersonation(Impersonation {
            uri: who.uri().to_string(),
            display_name: None,
        });
        Ok(())
    }
}

/// How [`Conversation::deliver_text`] delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// In an IM call (as its first message, or sent in it).
    InCall,
    /// As a page-mode MESSAGE, after the peer refused the IM call.
    Page,
}

/// A quoted-string display name (RFC 3261 §25.1: `"` and `\` escaped).
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        if c != '\r' && c != '\n' {
            q.push(c);
        }
    }
    q.push('"');
    q
}

/// A fresh conversation id (32 hex digits).
fn new_conversation_id() -> String {
    let mut s = application_endpoint::ids::call_id();
    s.truncate(32);
    s
}
