//! When a target's subscription is made again: the decision after the notifier ended it
//! or a SUBSCRIBE failed, and the backoff with jitter between attempts.

use super::wire::retry_after_of;
use super::TerminationReason;
use crate::EndpointError;
use collaboration_platform::RequestError;
use std::time::Duration;

/// What to do after an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Subscribe again at once (a new dialog).
    Now,
    /// Wait (this long, or the backoff when `None`), then try again.
    Later(Option<Duration>),
    /// Give up: the target is `Terminated` with the error.
    Stop,
}

/// The retry decision for a notifier's `terminated` (RFC 6665 §4.1.3).
pub(super) fn after_termination(
    reason: Option<&TerminationReason>,
    retry_after: Option<u32>,
) -> Next {
    let wait = retry_after.map(|s| Duration::from_secs(u64::from(s)));
    match reason {
        Some(TerminationReason::Deactivated | TerminationReason::Timeout) => Next::Now,
        Some(TerminationReason::Probation | TerminationReason::Giveup) => Next::Later(wait),
        Some(
            TerminationReason::Rejected
            | TerminationReason::NoResource
            | TerminationReason::Invariant,
        ) => Next::Stop,
        None | Some(TerminationReason::Other(_)) => Next::Later(wait),
    }
}

/// The retry decision for a SUBSCRIBE that failed (`refresh`: sent in an existing
/// dialog).
pub(super) fn after_failure(error: &EndpointError, refresh: bool) -> Next {
    let EndpointError::Request(e) = error else {
        return Next::Stop;
    };
    match e {
        // Overloaded is this platform's own transaction table, full for now: the same
        // SUBSCRIBE may go through shortly (registration and PUBLISH retry it too).
        RequestError::Timeout | RequestError::Transport(_) | RequestError::Overloaded { .. } => {
            Next::Later(None)
        }
        RequestError::NoDialog if refresh => Next::Now,
        RequestError::Status { code, response, .. } => match code {
            481 if refresh => Next::Now,
            408 | 480 | 500 | 503 | 504 => {
                Next::Later(retry_after_of(response).map(|s| Duration::from_secs(u64::from(s))))
            }
            _ => Next::Stop,
        },
        _ => Next::Stop,
    }
}

/// The backoff before attempt `attempt` (0-based): `min` doubled per attempt, capped at
/// `max`.
pub(super) fn backoff(min: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
    min.checked_mul(factor).unwrap_or(max).min(max)
}

/// `d` shortened by up to half, by `r` (any 64-bit value), but not below `floor`.
pub(super) fn jitter(d: Duration, floor: Duration, r: u64) -> Duration {
    let frac = (r >> 11) as f64 / (1u64 << 53) as f64;
    d.mul_f64(1.0 - 0.5 * frac).max(floor.min(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::test_messages::status;
    use collaboration_platform::TopologyError;

    #[test]
    fn termination_reasons_decide_the_retry() {
        use TerminationReason as R;
        let d = |s| Some(Duration::from_secs(s));
        let table: &[(Option<R>, Option<u32>, Next)] = &[
            (Some(R::Deactivated), None, Next::Now),
            (Some(R::Timeout), Some(30), Next::Now),
            (Some(R::Probation), Some(30), Next::Later(d(30))),
            (Some(R::Probation), None, Next::Later(None)),
            (Some(R::Giveup), Some(5), Next::Later(d(5))),
            (Some(R::Giveup), None, Next::Later(None)),
            (Some(R::Rejected), Some(5), Next::Stop),
            (Some(R::NoResource), None, Next::Stop),
            (Some(R::Invariant), None, Next::Stop),
            (None, None, Next::Later(None)),
            (None, Some(9), Next::Later(d(9))),
            (Some(R::Other("moved".into())), None, Next::Later(None)),
        ];
        for (reason, retry_after, want) in table {
            assert_eq!(
                after_termination(reason.as_ref(), *retry_after),
                *want,
                "{reason:?} retry-after {retry_after:?}"
            );
        }
    }

    #[test]
    fn failures_decide_the_retry() {
        let later = |s: u64| Next::Later(Some(Duration::from_secs(s)));
        let table: Vec<(EndpointError, bool, Next)> = vec![
            // The far side refuses (a 403 from the edge is the federation refusal).
            (status(403, ""), false, Next::Stop),
            (status(404, ""), false, Next::Stop),
            (status(489, ""), false, Next::Stop),
            (status(403, ""), true, Next::Stop),
            // Worth another try, after Retry-After when given.
            (status(480, ""), false, Next::Later(None)),
            (status(503, "Retry-After: 7\r\n"), false, later(7)),
            (
                status(503, "Retry-After: 120 (maintenance);duration=60\r\n"),
                true,
                later(120),
            ),
            (status(408, ""), false, Next::Later(None)),
            (status(500, ""), true, Next::Later(None)),
            (
                EndpointError::Request(RequestError::Timeout),
                false,
                Next::Later(None),
            ),
            (
                EndpointError::Request(RequestError::Timeout),
                true,
                Next::Later(None),
            ),
            // This platform's own transaction table, full for now.
            (
                EndpointError::Request(RequestError::Overloaded { limit: 1 }),
                false,
                Next::Later(None),
            ),
            // A refresh of a dialog the notifier forgot: a new subscription at once.
            (status(481, ""), true, Next::Now),
            (
                EndpointError::Request(RequestError::NoDialog),
                true,
                Next::Now,
            ),
            (status(481, ""), false, Next::Stop),
            // Nothing to retry.
            (
                EndpointError::Request(RequestError::Refused(TopologyError::Blocked(
                    "blocked.test".into(),
                ))),
                false,
                Next::Stop,
            ),
            (
                EndpointError::Request(RequestError::Shutdown),
                true,
                Next::Stop,
            ),
            (
                EndpointError::NotEstablished(crate::EndpointState::Terminated),
                false,
                Next::Stop,
            ),
        ];
        for (error, refresh, want) in table {
            assert_eq!(
                after_failure(&error, refresh),
                want,
                "{error} (refresh: {refresh})"
            );
        }
    }

    #[test]
    fn a_423_gives_the_lifetime_to_ask_for() {
        let too_brief = status(423, "Min-Expires: 120\r\n");
        assert_eq!(too_brief.longer_expires(60), Some(120));
        // Nothing longer to ask for: retrying would loop.
        assert_eq!(too_brief.longer_expires(120), None);
        assert_eq!(status(423, "").longer_expires(60), None);
        assert_eq!(
            status(423, "Min-Expires: soon\r\n").longer_expires(60),
            None
        );
        assert_eq!(status(400, "Min-Expires: 120\r\n").longer_expires(60), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(60));
        let got: Vec<u64> = (0..9).map(|a| backoff(min, max, a).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        // No overflow however many attempts.
        assert_eq!(backoff(min, max, 31), max);
        assert_eq!(backoff(min, max, 32), max);
        assert_eq!(backoff(min, max, u32::MAX), max);
        let ms = Duration::from_millis;
        assert_eq!(backoff(ms(250), ms(2000), 0), ms(250));
        assert_eq!(backoff(ms(250), ms(2000), 2), ms(1000));
        assert_eq!(backoff(ms(250), ms(2000), 4), ms(2000));
    }

    #[test]
    fn jitter_shortens_by_at_most_half_and_respects_the_floor() {
        let floor = Duration::from_secs(1);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut lowest = Duration::MAX;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let d = Duration::from_secs(8);
            let j = jitter(d, floor, x);
            assert!(j <= d && j >= d / 2, "{j:?}");
            lowest = lowest.min(j);
            // Never below the floor, unless the delay itself is.
            assert!(jitter(Duration::from_millis(1500), floor, x) >= floor);
            let short = Duration::from_millis(500);
            assert_eq!(jitter(short, floor, x), short);
        }
        assert!(
            lowest < Duration::from_secs(5),
            "jitter never shortened: {lowest:?}"
        );
        assert_eq!(
            jitter(Duration::from_secs(8), floor, 0),
            Duration::from_secs(8)
        );
        assert_eq!(
            jitter(Duration::from_secs(8), floor, u64::MAX).as_millis() / 100,
            40
        );
    }
}
