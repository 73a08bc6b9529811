//! Deadlines: scheduling a target's next refresh, retry or end of a wait, and what
//! happens when one comes due.

use super::{Sent, ViewTask};
use crate::view::retry::{backoff, jitter};
use crate::view::table::Sub;
use crate::view::SubscriptionState;
use crate::EndpointError;
use collaboration_platform::RequestError;
use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::debug;

impl ViewTask {
    pub(super) fn next_random(&mut self) -> u64 {
        // xorshift64: jitter only, not security.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    pub(super) fn schedule(&mut self, sub: &mut Sub, target: &Arc<str>, at: Instant) {
        sub.deadline = Some(at);
        self.timers.push(Reverse((at, target.clone())));
    }

    /// Waits `wait` (the peer's Retry-After or retry-after) before the next attempt, but
    /// never less than the backoff: "Retry-After: 0" is no licence to loop (it made a
    /// SUBSCRIBE storm, hundreds per second per target), as for registrations.
    pub(super) fn wait_retry(&mut self, sub: &mut Sub, target: &Arc<str>, wait: Option<Duration>) {
        let (min, max) = (self.config.retry_min, self.config.retry_max);
        let b = backoff(min, max, u32::from(sub.attempts));
        let r = self.next_random();
        let backed_off = jitter(b, min, r);
        let delay = wait.map_or(backed_off, |w| w.max(backed_off));
        sub.attempts = sub.attempts.saturating_add(1);
        sub.state = SubscriptionState::WaitingForRetry;
        self.schedule(sub, target, Instant::now() + delay);
    }

    pub(super) fn on_timers(&mut self) {
        let now = Instant::now();
        let shared = self.shared.clone();
        let mut table = shared.table();
        while let Some(Reverse((at, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, target))) = self.timers.pop() else {
                break;
            };
            let Some(sub) = table.get_mut(&target) else {
                continue;
            };
            if sub.deadline != Some(at) {
                continue;
            }
            sub.deadline = None;
            if sub.closing {
                if !sub.busy {
                    self.finish(&mut table, &target);
                }
                continue;
            }
            if sub.busy {
                continue;
            }
            match sub.state {
                SubscriptionState::Subscribed | SubscriptionState::Subscribing if !sub.notified => {
                    // Accepted, but no NOTIFY came (Timer N): the subscription failed.
                    // Its dialog is forgotten; a NOTIFY still on its way gets 481, which
                    // ends it at the notifier.
                    debug!(target = %target, "no NOTIFY after the 2xx");
                    self.drop_dialog(sub);
                    self.wait_retry(sub, &target, None);
                    let error = EndpointError::Request(RequestError::Timeout);
                    let sub = &table[&target];
                    self.notify(&target, sub, Some(error.into()));
                }
                SubscriptionState::Subscribed | SubscriptionState::Subscribing => {
                    if !self.send_in_dialog(sub, &target, Sent::Refresh) {
                        if let Err(refused) = self.restart(sub, &target) {
                            let sub = &table[&target];
                            self.notify(&target, sub, Some(refused));
                        }
                    }
                }
                SubscriptionState::WaitingForRetry => {
                    let alive = sub.dialog.is_some()
                        && sub
                            .expires_at
                            .is_some_and(|e| e > now + Duration::from_secs(1));
                    if !(alive && self.send_in_dialog(sub, &target, Sent::Refresh)) {
                        let refused = self.restart(sub, &target).err();
                        let sub = &table[&target];
                        self.notify(&target, sub, refused);
                    }
                }
                SubscriptionState::Idle | SubscriptionState::Terminated => {}
            }
        }
    }
}
