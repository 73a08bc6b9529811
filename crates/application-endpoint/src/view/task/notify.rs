//! NOTIFYs: how the requests of each subscription's dialog reach the task, and what a
//! NOTIFY does to its target's subscription.

use super::{secs, Event, ViewTask};
use crate::core::DialogHandler;
use crate::pidf::{Availability, PresenceDocument};
use crate::registration::spread_refresh_after;
use crate::view::retry::{after_termination, Next};
use crate::view::table::Table;
use crate::view::wire::{notify_status, read_body, refusal_of, refuse, NotifierState, Phase};
use crate::view::{PresenceError, PresenceNotification, SubscriptionState};
use collaboration_platform::{DialogId, IncomingRequest};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Hands the requests of one subscription's dialog to the view's task: what the endpoint's
/// router calls for them (no task and no queue per subscription).
pub(super) struct SubscriptionRoute {
    pub(super) target: Arc<str>,
    pub(super) generation: u32,
    pub(super) events: mpsc::UnboundedSender<Event>,
}

#[async_trait::async_trait]
impl DialogHandler for SubscriptionRoute {
    async fn handle(self: Arc<Self>, request: IncomingRequest) {
        let event = Event::Request {
            target: self.target.clone(),
            generation: self.generation,
            request: Box::new(request),
        };
        if let Err(mpsc::error::SendError(Event::Request { mut request, .. })) =
            self.events.send(event)
        {
            // The view is gone.
            let _ = request
                .respond(481, sip_core::reason_phrase(481), &[], None)
                .await;
        }
    }
}

impl ViewTask {
    /// A request in one of the subscriptions' dialogs: refused, answered 481 when it is for
    /// no current subscription, or answered 200 and taken as the subscription's NOTIFY.
    pub(super) async fn on_request(
        &mut self,
        target: Arc<str>,
        generation: u32,
        mut request: Box<IncomingRequest>,
    ) {
        if let Some(refusal) = refusal_of(request.request()) {
            // Nothing changes: not the subscription's state, nor its dialog.
            refuse(&mut request, refusal).await;
            return;
        }
        let dialog = request.dialog();
        if !self.is_current(&target, generation, dialog.as_ref()) {
            // No subscription of ours (an attempt given up, a target forgotten) or
            // another fork of the SUBSCRIBE than the dialog kept: 481 ends it at
            // its notifier (RFC 6665 §4.1.3, §4.5.2), and the platform forgets
            // the dialog the NOTIFY made.
            let _ = request
                .respond(481, sip_core::reason_phrase(481), &[], None)
                .await;
            self.ends.extend(dialog);
            return;
        }
        // Answered first, whatever the body: the notifier must not retransmit.
        let _ = request.respond(200, "OK", &[], None).await;
        let status = notify_status(request.request());
        let (document, error) = read_body(request.request());
        let shared = self.shared.clone();
        let mut table = shared.table();
        self.on_notify(
            &mut table, &target, generation, status, document, error, dialog,
        );
    }

    /// Whether a NOTIFY in `dialog` belongs to `target`'s current attempt: its generation,
    /// and the dialog kept (the first of the SUBSCRIBE's forks to answer or notify).
    fn is_current(&self, target: &Arc<str>, generation: u32, dialog: Option<&DialogId>) -> bool {
        self.shared.table().get(target).is_some_and(|s| {
            s.generation == generation
                && match (&s.dialog, dialog) {
                    (Some(kept), Some(d)) => kept == d,
                    _ => true,
                }
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn on_notify(
        &mut self,
        table: &mut Table,
        target: &Arc<str>,
        generation: u32,
        status: NotifierState,
        document: Option<PresenceDocument>,
        error: Option<PresenceError>,
        dialog: Option<DialogId>,
    ) {
        let Some(sub) = table.get_mut(target) else {
            return;
        };
        if sub.generation != generation {
            return;
        }
        if sub.dialog.is_none() {
            // The NOTIFY overtook the 2xx.
            sub.dialog = dialog;
        }
        let first = !std::mem::replace(&mut sub.notified, true);
        let availability = document.as_ref().map(Availability::from_document);
        if availability.is_some() {
            sub.availability = availability;
        } else if error.is_none() && status.phase != Phase::Terminated {
            // A NOTIFY carries the whole state: one of a live subscription without a body
            // says the notifier knows nothing of the presentity (any more).
            sub.availability = None;
        }
        let now = Instant::now();
        let mut error = error;
        match status.phase {
            Phase::Active | Phase::Pending => {
                if sub.closing {
                    return;
                }
                sub.pending = status.phase == Phase::Pending;
                if sub.pending {
                    sub.state = SubscriptionState::Subscribing;
                } else {
                    sub.state = SubscriptionState::Subscribed;
                    sub.attempts = 0;
                }
                if let Some(e) = status.expires {
                    let at = now + secs(e);
                    if sub.expires_at.is_none_or(|x| at < x) {
                        sub.expires_at = Some(at);
                        let refresh = now + spread_refresh_after(e, self.next_random());
                        if !sub.busy && sub.deadline.is_none_or(|d| refresh < d) {
                            self.schedule(sub, target, refresh);
                        }
                    }
                }
                if first && !sub.busy {
                    // The wait for this first NOTIFY is over: next comes the refresh.
                    if let Some(x) = sub.expires_at {
                        // Whole seconds rounded up: the window of the grant the 2xx gave, not earlier.
                        let left = x.saturating_duration_since(now).as_secs_f64().ceil();
                        let left = left.min(f64::from(u32::MAX)) as u32;
                        let refresh = spread_refresh_after(left, self.next_random());
                        self.schedule(sub, target, now + refresh);
                    }
                }
            }
            Phase::Terminated => {
                self.drop_dialog(sub);
                if sub.closing {
                    self.finish(table, target);
                    return;
                }
                let mut next = after_termination(status.reason.as_ref(), status.retry_after);
                let young = sub
                    .started
                    .is_some_and(|s| now.duration_since(s) < self.config.retry_min);
                if next == Next::Now && young {
                    // Ended as soon as it was made: do not spin.
                    next = Next::Later(None);
                }
                if next != Next::Now {
                    error = error.or(Some(PresenceError::Ended {
                        reason: status.reason.clone(),
                        retry_after: status.retry_after,
                    }));
                }
                match next {
                    Next::Now => {
                        if let Err(refused) = self.restart(sub, target) {
                            error = Some(refused);
                        }
                    }
                    Next::Later(wait) => self.wait_retry(sub, target, wait),
                    Next::Stop => self.stop(sub),
                }
            }
        }
        let sub = &table[target];
        self.out.push(PresenceNotification {
            target: target.to_string(),
            homing: sub.homing,
            document,
            availability,
            state: sub.visible_state(),
            error,
        });
    }
}
