//! SUBSCRIBEs: starting an attempt, sending in its dialog, and what their answers do to
//! the target's subscription.

use super::notify::SubscriptionRoute;
use super::{secs, Event, Sent, ViewTask};
use crate::registration::refresh_after;
use crate::view::retry::{after_failure, Next};
use crate::view::table::{Sub, Table};
use crate::view::wire::{granted, in_dialog_subscribe, subscribe_request};
use crate::view::{homing_of, refused_homing, PresenceError, SubscriptionState};
use crate::EndpointError;
use collaboration_platform::{DialogId, RequestError};
use std::sync::Arc;
use tokio::time::Instant;
use tracing::debug;

impl ViewTask {
    /// A new attempt: fresh Call-ID and tag, route first, then the SUBSCRIBE. The target
    /// is classified afresh, since the topology may have moved it since the last attempt
    /// (a hybrid user homed in the cloud now): its homing decides how the application
    /// reads a refusal. A target the topology now refuses is not sent anything: it is
    /// stopped, and the error is returned for the caller's notification.
    pub(super) fn restart(
        &mut self,
        sub: &mut Sub,
        target: &Arc<str>,
    ) -> Result<(), PresenceError> {
        self.drop_dialog(sub);
        match self.core.platform().topology().classify(target) {
            Ok(homed) => sub.homing = homing_of(&homed),
            Err(e) => {
                debug!(target = %target, error = %e, "presence target now refused by the topology");
                sub.homing = refused_homing(&e);
                self.stop(sub);
                return Err(PresenceError::Endpoint(EndpointError::Topology(e)));
            }
        }
        sub.state = SubscriptionState::Subscribing;
        sub.pending = false;
        sub.notified = false;
        sub.busy = true;
        sub.deadline = None;
        sub.expires_at = None;
        sub.started = Some(Instant::now());
        let call_id = crate::ids::call_id();
        let tag = crate::ids::tag();
        let route = self.core.route_dialog_to(
            &call_id,
            &tag,
            Arc::new(SubscriptionRoute {
                target: target.clone(),
                generation: sub.generation,
                events: self.events_tx.clone(),
            }),
        );
        sub.route = Some(route);
        let asked = self.config.expires.max(sub.min_expires);
        let request = subscribe_request(&self.core, target, call_id, &tag, asked);
        let (core, events, target, generation) = (
            self.core.clone(),
            self.events_tx.clone(),
            target.clone(),
            sub.generation,
        );
        let window = self.window.clone();
        tokio::spawn(async move {
            let _turn = window.acquire_owned().await;
            let outcome = match core.established_id() {
                Ok(id) => core
                    .subscribe(id, request)
                    .await
                    .map(|(ok, dialog)| (granted(&ok, asked), Some(dialog)))
                    .map_err(EndpointError::from),
                Err(e) => Err(e),
            };
            let _ = events.send(Event::Answered {
                target,
                generation,
                sent: Sent::Initial,
                outcome,
            });
        });
        Ok(())
    }

    /// A SUBSCRIBE in the current dialog (refresh, or `Expires: 0` to end it); false
    /// when there is no dialog.
    pub(super) fn send_in_dialog(&mut self, sub: &mut Sub, target: &Arc<str>, sent: Sent) -> bool {
        let Some(dialog) = sub.dialog.clone() else {
            return false;
        };
        sub.busy = true;
        let expires = if sent == Sent::Unsubscribe {
            0
        } else {
            self.config.expires.max(sub.min_expires)
        };
        let (core, events, target, generation) = (
            self.core.clone(),
            self.events_tx.clone(),
            target.clone(),
            sub.generation,
        );
        let window = self.window.clone();
        tokio::spawn(async move {
            let _turn = window.acquire_owned().await;
            let request = in_dialog_subscribe(&core, expires);
            let outcome = core
                .platform()
                .send_in_dialog(&dialog, request)
                .await
                .map(|ok| (granted(&ok, expires), None))
                .map_err(EndpointError::from);
            let _ = events.send(Event::Answered {
                target,
                generation,
                sent,
                outcome,
            });
        });
        true
    }

    pub(super) fn on_answered(
        &mut self,
        table: &mut Table,
        target: &Arc<str>,
        generation: u32,
        sent: Sent,
        outcome: Result<(u32, Option<DialogId>), EndpointError>,
    ) {
        let current = table
            .get(target)
            .is_some_and(|s| s.generation == generation);
        if !current {
            // An answer for an attempt given up meanwhile: forget its dialog.
            if let Ok((_, Some(d))) = outcome {
                self.ends.push(d);
            }
            return;
        }
        let Some(sub) = table.get_mut(target) else {
            return;
        };
        sub.busy = false;
        let now = Instant::now();
        match (sent, outcome) {
            (Sent::Unsubscribe, Ok(_)) => {
                // Wait a little for the final NOTIFY.
                let at = now + self.config.notify_wait;
                self.schedule(sub, target, at);
            }
            (Sent::Unsubscribe, Err(_)) => self.finish(table, target),
            (_, Ok((granted, dialog))) => {
                match (&sub.dialog, dialog) {
                    (None, d) => sub.dialog = d,
                    (Some(have), Some(d)) if *have != d => self.ends.push(d),
                    _ => {}
                }
                if sub.closing {
                    if !self.send_in_dialog(sub, target, Sent::Unsubscribe) {
                        self.finish(table, target);
                    }
                    return;
                }
                if granted == 0 {
                    // Accepted as a fetch: nothing to refresh. Try again later.
                    self.drop_dialog(sub);
                    self.wait_retry(sub, target, None);
                    let sub = &table[target];
                    self.notify(target, sub, None);
                    return;
                }
                let mut expires_at = now + secs(granted);
                if sent == Sent::Initial {
                    if let Some(x) = sub.expires_at {
                        expires_at = expires_at.min(x);
                    }
                }
                sub.expires_at = Some(expires_at);
                let left = expires_at.saturating_duration_since(now).as_secs();
                let left = u32::try_from(left).unwrap_or(u32::MAX);
                let mut at = now + refresh_after(left);
                if sent == Sent::Initial && !sub.notified {
                    // Timer N (RFC 6665 §4.1.2.4): the NOTIFY follows the 2xx, or the
                    // subscription failed.
                    at = at.min(now + self.config.notify_wait);
                }
                self.schedule(sub, target, at);
                let before = sub.state;
                if !sub.pending
                    && matches!(
                        sub.state,
                        SubscriptionState::Subscribing | SubscriptionState::WaitingForRetry
                    )
                {
                    sub.state = SubscriptionState::Subscribed;
                }
                if sub.state != before {
                    let sub = &table[target];
                    self.notify(target, sub, None);
                }
            }
            (sent, Err(e)) => {
                if sub.closing {
                    self.finish(table, target);
                    return;
                }
                let refresh = sent == Sent::Refresh;
                let asked = self.config.expires.max(sub.min_expires);
                if let Some(min) = e.longer_expires(asked) {
                    // Too brief for the notifier: ask again at once with its minimum, in
                    // the dialog for a refresh, in a new one for a first SUBSCRIBE.
                    debug!(target = %target, asked, min, "SUBSCRIBE too brief (423)");
                    sub.min_expires = min;
                    if !(refresh && self.send_in_dialog(sub, target, Sent::Refresh)) {
                        if let Err(refused) = self.restart(sub, target) {
                            let sub = &table[target];
                            self.notify(target, sub, Some(refused));
                        }
                    }
                    return;
                }
                let next = after_failure(&e, refresh);
                debug!(target = %target, error = %e, ?next, "SUBSCRIBE failed");
                let dialog_gone = !refresh
                    || matches!(
                        &e,
                        EndpointError::Request(
                            RequestError::Timeout
                                | RequestError::NoDialog
                                | RequestError::Status {
                                    code: 408 | 481,
                                    ..
                                }
                        )
                    );
                match next {
                    Next::Now => {
                        let refused = self.restart(sub, target).err();
                        let sub = &table[target];
                        self.notify(target, sub, refused);
                    }
                    Next::Later(wait) => {
                        if dialog_gone {
                            self.drop_dialog(sub);
                        }
                        self.wait_retry(sub, target, wait);
                        let sub = &table[target];
                        self.notify(target, sub, Some(e.into()));
                    }
                    Next::Stop => {
                        self.stop(sub);
                        let sub = &table[target];
                        self.notify(target, sub, Some(e.into()));
                    }
                }
            }
        }
    }
}
