//! Tags and Call-IDs for requests the endpoints build themselves.

use sip_core::transaction::{new_call_id, new_tag, IdGenerator, RandomIds};
use std::cell::RefCell;

thread_local! {
    /// Per-thread generator: no lock shared between endpoints.
    static IDS: RefCell<RandomIds> = RefCell::new(RandomIds::new());
}

/// A fresh tag.
pub fn tag() -> String {
    IDS.with(|ids| new_tag(&mut *ids.borrow_mut()))
}

/// A fresh Call-ID.
pub fn call_id() -> String {
    IDS.with(|ids| new_call_id(&mut *ids.borrow_mut(), Some("ucma")))
}

/// A random 64-bit value (for spreading timers, not for security).
pub fn random() -> u64 {
    IDS.with(|ids| ids.borrow_mut().next_u64())
}
