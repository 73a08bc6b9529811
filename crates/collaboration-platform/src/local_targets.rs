//! The local target of each dialog (RFC 3261 §12.2.1.1): the Contact value of our request
//! or response that made the dialog, or of the last target refresh request we sent in it.
//! A target refresh request the application sends without a Contact gets this one (the
//! same URI as before, unless it must change). It is the Contact the application chose
//! for that dialog (a notifier may give each subscription its own), not necessarily the
//! default of its endpoint.
//!
//! Most dialogs use their endpoint's default contact, so only the others are stored
//! per dialog: a dialog costs nothing here unless its Contact is unusual (a subscription
//! on the subscriber side stays within its 1 KiB budget).
//!
//! Dialogs end in several places (a BYE received, a failure ending an early dialog, the
//! platform forgetting one); rather than follow each, stored entries whose dialog is gone
//! are swept out once there are more than twice the live dialogs (plus some slack), which
//! keeps the table bounded at an amortized constant cost per entry.

use bytes::Bytes;
use sip_core::dialog::Dialogs;
use sip_core::{DialogId, HeaderName, SipMessage};
use std::collections::HashMap;

/// Stored entries beyond twice the live dialogs before a sweep.
const SLACK: usize = 1024;

#[derive(Debug, Default)]
pub(crate) struct LocalTargets {
    /// Each endpoint's default Contact value, by the owner number its dialogs carry.
    defaults: HashMap<u64, Bytes>,
    /// Dialogs whose local target is not their endpoint's default.
    others: HashMap<DialogId, Bytes>,
}

impl LocalTargets {
    /// Endpoint `owner`'s dialogs use `contact` unless noted otherwise.
    pub(crate) fn set_default(&mut self, owner: u64, contact: Bytes) {
        self.defaults.insert(owner, contact);
    }

    /// Endpoint `owner`'s default Contact value.
    pub(crate) fn default_of(&self, owner: u64) -> Option<&Bytes> {
        self.defaults.get(&owner)
    }

    /// Endpoint `owner` is gone.
    pub(crate) fn remove_default(&mut self, owner: u64) {
        self.defaults.remove(&owner);
    }

    /// Notes the Contact of `message` (a request or response of ours in `dialog`, whose
    /// owner is set) as the dialog's local target. No Contact: nothing changes.
    pub(crate) fn note(&mut self, dialog: &DialogId, message: &SipMessage, dialogs: &Dialogs) {
        let Some(contact) = message.header(HeaderName::Contact) else {
            return;
        };
        let default = dialogs
            .get(dialog)
            .and_then(|d| self.defaults.get(&d.owner()));
        if default.is_some_and(|d| d[..] == *contact) {
            self.others.remove(dialog);
            return;
        }
        // Copied out: the message's buffer is not kept alive with it.
        self.others
            .insert(dialog.clone(), Bytes::copy_from_slice(contact));
        if self.others.len() > 2 * dialogs.len() + SLACK {
            self.others.retain(|id, _| dialogs.get(id).is_some());
        }
    }

    /// The local target of `dialog`: the one noted, else its endpoint's default.
    pub(crate) fn get(&self, dialog: &DialogId, dialogs: &Dialogs) -> Option<&Bytes> {
        self.others.get(dialog).or_else(|| {
            let owner = dialogs.get(dialog)?.owner();
            self.defaults.get(&owner)
        })
    }

    /// `dialog` ended.
    pub(crate) fn forget(&mut self, dialog: &DialogId) {
        self.others.remove(dialog);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_core::Limits;

    fn message(contact: &str) -> SipMessage {
        let raw = format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP h:1;branch=z9hG4bK1\r\n\
             From: <sip:a@h>;tag=f1\r\nTo: <sip:b@h>;tag=t1\r\nCall-ID: c\r\n\
             CSeq: 1 INVITE\r\nContact: {contact}\r\nContent-Length: 0\r\n\r\n"
        );
        SipMessage::parse_datagram(Bytes::from(raw), &Limits::default()).unwrap()
    }

    #[test]
    fn the_latest_contact_is_the_local_target() {
        let (mut t, dialogs) = (LocalTargets::default(), Dialogs::new());
        let id = DialogId::new(b"c", b"t1", b"f1");
        t.note(&id, &message("<sip:a@h1>"), &dialogs);
        t.note(&id, &message("<sip:a@h2>"), &dialogs);
        assert_eq!(
            t.get(&id, &dialogs).map(|b| &b[..]),
            Some(&b"<sip:a@h2>"[..])
        );
        t.forget(&id);
        assert!(t.get(&id, &dialogs).is_none());
    }

    #[test]
    fn entries_of_ended_dialogs_are_swept_out() {
        let (mut t, dialogs) = (LocalTargets::default(), Dialogs::new());
        // No dialog is live here: every entry is one whose dialog ended unseen.
        for i in 0..10 * SLACK {
            let id = DialogId::new(format!("c{i}").as_bytes(), b"l", b"r");
            t.note(&id, &message("<sip:a@h>"), &dialogs);
            assert!(t.others.len() <= SLACK + 1);
        }
    }
}
