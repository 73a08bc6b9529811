//! # conversation
//!
//! Conversations with other parties, on an
//! [`ApplicationEndpoint`](application_endpoint::ApplicationEndpoint) or a
//! [`UserEndpoint`](application_endpoint::UserEndpoint):
//!
//! * [`Conversation`] — typed by the remote party's homing (`Conversation<OnPremises>`,
//!   `Conversation<Federated>`; [`AnyConversation`] when it is known only at run time),
//!   with subject, priority and a conversation id carried as `Ms-Conversation-ID`.
//!   Impersonation toward a federated party takes a URI only: the display name of an
//!   impersonated identity does not cross federation, so it cannot be passed.
//! * [`InstantMessagingCall`] and [`InstantMessagingFlow`] — IM sessions as Lync / Skype
//!   for Business hold them (INVITE with `m=message … sip null`, MESSAGE inside the
//!   dialog), with a definite outcome for every message sent, received messages as a
//!   stream and typing indication ([`composing`], RFC 3994).
//! * [`incoming_im_calls`] — the IM calls offered to an endpoint, typed by the caller's
//!   homing.
//! * Page mode (RFC 3428) with [`Conversation::send_page`], and
//!   [`Conversation::deliver_text`] with its fallback rule (IM call first; page mode when
//!   the peer does not take IM sessions: 405, 415, 488, 501, 606).
//! * [`ladder`] — SIP ladder diagrams (text and SVG) recorded from the platform's wire tap.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod composing;
mod conversation;
mod error;
mod im;
mod incoming;
pub mod ladder;
mod page;
pub mod text_format;

pub use conversation::{
    AnyConversation, Conversation, ConversationState, Delivery, Priority, TerminationReason,
};
pub use error::{CallError, MessageError};
pub use im::{
    InstantMessagingCall, InstantMessagingFlow, MessageSender, ReceivedMessage, ACCEPT_TYPES,
};
pub use incoming::{incoming_im_calls, IncomingCall, IncomingImCall, IncomingImCalls};
pub use page::NO_IM_SESSIONS;
