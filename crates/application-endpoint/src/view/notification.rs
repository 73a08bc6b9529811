//! What the application hears of each target: [`PresenceNotification`], and the
//! subscription state, termination reason and error it carries.

use crate::pidf::{Availability, PidfError, PresenceDocument};
use crate::EndpointError;
use collaboration_platform::{Federated, Homing, TopologyError};

/// Where one target's subscription is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionState {
    /// Accepted by [`subscribe`](crate::RemotePresenceView::subscribe), nothing sent yet.
    Idle,
    /// A SUBSCRIBE is on its way, or the notifier accepted it but holds it `pending`
    /// (waiting for the presentity's authorisation).
    Subscribing,
    /// Active: NOTIFYs arrive and the subscription is refreshed before it expires.
    Subscribed,
    /// The last attempt failed (or the notifier ended the subscription) in a way worth
    /// retrying; a new attempt is scheduled.
    WaitingForRetry,
    /// Ended for good: unsubscribed, refused by the topology, or given up with an error
    /// (see the target's last [`PresenceNotification::error`]).
    Terminated,
}

impl SubscriptionState {
    /// The state's name (`"Subscribed"` …), for logs and for code that cannot name the
    /// type.
    pub fn name(self) -> &'static str {
        match self {
            SubscriptionState::Idle => "Idle",
            SubscriptionState::Subscribing => "Subscribing",
            SubscriptionState::Subscribed => "Subscribed",
            SubscriptionState::WaitingForRetry => "WaitingForRetry",
            SubscriptionState::Terminated => "Terminated",
        }
    }

    /// Whether the subscription is active.
    pub fn is_subscribed(self) -> bool {
        self == SubscriptionState::Subscribed
    }

    /// Whether the subscription ended for good.
    pub fn is_terminated(self) -> bool {
        self == SubscriptionState::Terminated
    }
}

/// Why a notifier ended a subscription: the `reason` of `Subscription-State: terminated`
/// (RFC 6665 §4.1.3). It decides whether and when the view subscribes again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TerminationReason {
    /// The notifier moved the subscription: subscribe again at once.
    Deactivated,
    /// The notifier lost it for a while: subscribe again after `retry-after`.
    Probation,
    /// Not authorised: not retried.
    Rejected,
    /// It expired: subscribe again at once.
    Timeout,
    /// The notifier could not get authorisation in time: retry after `retry-after`.
    Giveup,
    /// The presentity does not exist (any more): not retried.
    NoResource,
    /// The presentity cannot be subscribed to: not retried.
    Invariant,
    /// A reason RFC 6665 does not define: treated as no reason.
    Other(String),
}

impl TerminationReason {
    /// Reads a reason token (ASCII case is ignored).
    pub fn from_token(token: &str) -> TerminationReason {
        match token.to_ascii_lowercase().as_str() {
            "deactivated" => TerminationReason::Deactivated,
            "probation" => TerminationReason::Probation,
            "rejected" => TerminationReason::Rejected,
            "timeout" => TerminationReason::Timeout,
            "giveup" => TerminationReason::Giveup,
            "noresource" => TerminationReason::NoResource,
            "invariant" => TerminationReason::Invariant,
            _ => TerminationReason::Other(token.to_string()),
        }
    }

    /// The reason's token.
    pub fn as_str(&self) -> &str {
        match self {
            TerminationReason::Deactivated => "deactivated",
            TerminationReason::Probation => "probation",
            TerminationReason::Rejected => "rejected",
            TerminationReason::Timeout => "timeout",
            TerminationReason::Giveup => "giveup",
            TerminationReason::NoResource => "noresource",
            TerminationReason::Invariant => "invariant",
            TerminationReason::Other(s) => s,
        }
    }
}

/// What went wrong for one target. Errors are per target: one target's failure never
/// fails the view.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PresenceError {
    /// The target was refused before anything was sent (blocked or not allowed by the
    /// topology, malformed URI), or a SUBSCRIBE failed (a final status, timeout,
    /// transport). A 403 for a federated target is the far side refusing federation.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// The notifier ended the subscription (`Subscription-State: terminated`).
    #[error("the notifier ended the subscription (reason: {})", reason.as_ref().map_or("none", |r| r.as_str()))]
    Ended {
        /// The `reason` parameter, if any.
        reason: Option<TerminationReason>,
        /// The `retry-after` parameter (seconds), if any.
        retry_after: Option<u32>,
    },
    /// The NOTIFY's PIDF body could not be read (it was answered 200 all the same; the
    /// subscription goes on).
    #[error("unreadable presence document: {0}")]
    Document(#[from] PidfError),
    /// The NOTIFY's body is not `application/pidf+xml`.
    #[error("the NOTIFY body is {content_type}, not application/pidf+xml")]
    UnsupportedBody {
        /// The Content-Type received.
        content_type: String,
    },
}

impl PresenceError {
    /// The endpoint error inside, if that is what it is.
    pub fn endpoint_error(&self) -> Option<&EndpointError> {
        match self {
            PresenceError::Endpoint(e) => Some(e),
            _ => None,
        }
    }

    /// The SIP status of a failed request (the received one for a final response), if
    /// the error is a request's failure.
    pub fn status(&self) -> Option<u16> {
        match self {
            PresenceError::Endpoint(EndpointError::Request(e)) => Some(e.status()),
            _ => None,
        }
    }
}

/// A change in one target's presence or subscription.
#[derive(Debug, Clone)]
pub struct PresenceNotification {
    /// The presentity, as given to [`subscribe`](crate::RemotePresenceView::subscribe).
    pub target: String,
    /// Where the topology homes it: `"on-premises"`, `"federated"` (blocked and not
    /// allowed domains included), or `"unclassified"` for a URI it could not read.
    pub homing: &'static str,
    /// The presence document of the NOTIFY, if it carried a readable one. `None` for a
    /// state change, and for a NOTIFY without body (the notifier has no presence
    /// information: nothing published).
    pub document: Option<PresenceDocument>,
    /// The document's availability (see [`Availability::from_document`]).
    pub availability: Option<Availability>,
    /// The target's subscription state after this notification.
    pub state: SubscriptionState,
    /// What went wrong, if anything (with `Terminated` or `WaitingForRetry`: why).
    pub error: Option<PresenceError>,
}

impl PresenceNotification {
    /// Whether the far side of federation refused the subscription: a federated target
    /// answered 403, or the topology refuses the domain.
    pub fn is_federation_refusal(&self) -> bool {
        match &self.error {
            Some(PresenceError::Endpoint(EndpointError::Topology(
                TopologyError::Blocked(_) | TopologyError::NotAllowed(_),
            ))) => true,
            Some(e) => self.homing == Federated::NAME && e.status() == Some(403),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::test_messages::status;

    #[test]
    fn federation_refusals_are_recognised() {
        let n = |homing, error| PresenceNotification {
            target: "sip:bob@fabrikam.test".into(),
            homing,
            document: None,
            availability: None,
            state: SubscriptionState::Terminated,
            error,
        };
        let forbidden = Some(PresenceError::Endpoint(status(403, "")));
        assert!(n(Federated::NAME, forbidden.clone()).is_federation_refusal());
        assert!(!n("on-premises", forbidden).is_federation_refusal());
        assert!(!n(
            Federated::NAME,
            Some(PresenceError::Endpoint(status(404, "")))
        )
        .is_federation_refusal());
        let blocked = Some(PresenceError::Endpoint(EndpointError::Topology(
            TopologyError::Blocked("blocked.test".into()),
        )));
        assert!(n(Federated::NAME, blocked).is_federation_refusal());
        assert!(!n(Federated::NAME, None).is_federation_refusal());
    }

    #[test]
    fn termination_reason_tokens_round_trip() {
        use TerminationReason as R;
        for r in [
            R::Deactivated,
            R::Probation,
            R::Rejected,
            R::Timeout,
            R::Giveup,
            R::NoResource,
            R::Invariant,
        ] {
            assert_eq!(TerminationReason::from_token(r.as_str()), r);
        }
    }
}
