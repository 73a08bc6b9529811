//! The local target of each dialog (RFC 3261 §12.2.1.1): the Contact value of our request
//! or response that made the dialog, or of the last target refresh request we sent in it.
//! A target refresh request the application sends without a Contact gets this one (the
//! same URI as before, unless it must change). It is the Contact the application chose
//! for that dialog (a notifier may give each subscription its own), not a default of its
//! endpoint.
//!
//! Dialogs end in several places (a BYE received, a failure ending an early dialog, the
//! platform forgetting one); rather than follow each, entries whose dialog is gone are
//! swept out once the table holds more than twice the live dialogs (plus some slack),
//! which keeps it bounded at an amortized constant cost per entry.

use bytes::Bytes;
use sip_core::dialog::Dialogs;
use sip_core::{DialogId, HeaderName, SipMessage};
use std::collections::HashMap;

/// Entries beyond twice the live dialogs before a sweep.
const SLACK: usize = 1024;

#[derive(Debug, Default)]
pub(crate) struct LocalTargets {
    map: HashMap<DialogId, Bytes>,
}

impl LocalTargets {
    /// Notes the Contact of `message` (a request or response of ours in `dialog`), copied
    /// out so the message's buffer is not kept alive with it. No Contact: nothing changes.
    pub(crate) fn note(&mut self, dialog: &DialogId, message: &SipMessage, dialogs: &Dialogs) {
        let Some(contact) = message.header(HeaderName::Contact) else {
            return;
        };
        self.map
            .insert(dialog.clone(), Bytes::copy_from_slice(contact));
        if self.map.len() > 2 * dialogs.len() + SLACK {
            self.map.retain(|id, _| dialogs.get(id).is_some());
        }
    }

    /// The local target of `dialog`, if one was noted.
    pub(crate) fn get(&self, dialog: &DialogId) -> Option<&Bytes> {
        self.map.get(dialog)
    }

    /// `dialog` ended.
    pub(crate) fn forget(&mut self, dialog: &DialogId) {
        self.map.remove(dialog);
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
        assert_eq!(t.get(&id).map(|b| &b[..]), Some(&b"<sip:a@h2>"[..]));
        t.forget(&id);
        assert!(t.get(&id).is_none());
    }

    #[test]
    fn entries_of_ended_dialogs_are_swept_out() {
        let (mut t, dialogs) = (LocalTargets::default(), Dialogs::new());
        // No dialog is live here: every entry is one whose dialog ended unseen.
        for i in 0..10 * SLACK {
            let id = DialogId::new(format!("c{i}").as_bytes(), b"l", b"r");
            t.note(&id, &message("<sip:a@h>"), &dialogs);
            assert!(t.map.len() <= SLACK + 1);
        }
    }
}
