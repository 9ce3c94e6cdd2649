//! Whether the shared limits may ask Redis, and the warnings when they
//! cannot: a small circuit breaker, one per Redis-backed limit.
//!
//! While Redis answers, every call goes to it. After a failure (an error or
//! a timeout) calls are served in-process, and one call a second is let
//! through to Redis as a probe, so a hung Redis costs one timeout a second
//! rather than one per request, and the limits are shared again as soon as
//! a probe is answered. The operator hears of it once when Redis fails, at
//! most once a minute while it stays down, and once when it is back: never
//! a line per request.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokengate::guard::RevocationError;

/// How often a probe is let through to a failing Redis.
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(1);

/// How often, at most, the warning is repeated while Redis stays down.
pub(super) const WARN_EVERY: Duration = Duration::from_secs(60);

/// The breaker of one Redis-backed limit.
pub(super) struct Health {
    /// Which limit, for the log lines ("login throttle", "request budget").
    what: &'static str,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Since when Redis has been failing; `None` while it answers.
    down_since: Option<Instant>,
    /// While down: when the next probe may go to Redis.
    next_probe: Option<Instant>,
    /// When the last warning was logged.
    warned_at: Option<Instant>,
    /// Calls served in-process since the last warning.
    served_locally: u64,
    /// Warnings logged so far (tests count them).
    warnings: u64,
}

impl Health {
    pub(super) fn new(what: &'static str) -> Self {
        Health {
            what,
            state: Mutex::new(State::default()),
        }
    }

    /// The state, even after a panic elsewhere while it was held: every
    /// update leaves it consistent, and the limits must go on.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this call may go to Redis. While Redis is down, only one
    /// call per [`PROBE_EVERY`] does; the others are counted as served
    /// in-process.
    pub(super) fn may_ask(&self) -> bool {
        self.may_ask_at(Instant::now())
    }

    pub(super) fn may_ask_at(&self, now: Instant) -> bool {
        let mut state = self.state();
        if state.down_since.is_none() {
            return true;
        }
        if state.next_probe.is_none_or(|at| now >= at) {
            // This call is the probe; the next one waits its turn.
            state.next_probe = Some(now + PROBE_EVERY);
            return true;
        }
        state.served_locally = state.served_locally.saturating_add(1);
        self.remind(&mut state, now);
        false
    }

    /// Redis answered.
    pub(super) fn answered(&self) {
        self.answered_at(Instant::now());
    }

    pub(super) fn answered_at(&self, now: Instant) {
        let mut state = self.state();
        let Some(since) = state.down_since.take() else {
            return;
        };
        tracing::warn!(
            limit = self.what,
            down_for_ms = now.saturating_duration_since(since).as_millis(),
            served_locally = state.served_locally,
            "Redis answers again: the {} is shared by every instance again",
            self.what
        );
        *state = State {
            warnings: state.warnings.saturating_add(1),
            ..State::default()
        };
    }

    /// Redis failed this call, which is then served in-process.
    pub(super) fn failed(&self, error: &RevocationError) {
        self.failed_at(Instant::now(), error);
    }

    pub(super) fn failed_at(&self, now: Instant, error: &RevocationError) {
        let mut state = self.state();
        state.served_locally = state.served_locally.saturating_add(1);
        if state.down_since.is_some() {
            self.remind(&mut state, now);
            return;
        }
        state.down_since = Some(now);
        state.next_probe = Some(now + PROBE_EVERY);
        state.warned_at = Some(now);
        state.warnings = state.warnings.saturating_add(1);
        // The error's text names the operation and the cause, never the
        // URL or its password.
        tracing::warn!(
            limit = self.what,
            %error,
            "Redis failed: the {} falls back to this instance's own limits \
             until Redis answers (each instance then counts alone)",
            self.what
        );
    }

    /// Repeats the warning while Redis stays down, at most once per
    /// [`WARN_EVERY`].
    fn remind(&self, state: &mut State, now: Instant) {
        if state
            .warned_at
            .is_some_and(|at| now.saturating_duration_since(at) < WARN_EVERY)
        {
            return;
        }
        let down_for = state
            .down_since
            .map(|since| now.saturating_duration_since(since).as_secs());
        tracing::warn!(
            limit = self.what,
            down_for_secs = down_for,
            served_locally = state.served_locally,
            "Redis still failing: the {} is still per instance",
            self.what
        );
        state.warned_at = Some(now);
        state.served_locally = 0;
        state.warnings = state.warnings.saturating_add(1);
    }

    /// Whether Redis is taken to be down.
    #[cfg(test)]
    pub(super) fn is_down(&self) -> bool {
        self.state().down_since.is_some()
    }

    /// Warning lines logged so far (failures, reminders, recoveries).
    #[cfg(test)]
    pub(super) fn warnings(&self) -> u64 {
        self.state().warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error() -> RevocationError {
        RevocationError("Redis login throttle: no answer within 500 ms".to_owned())
    }

    #[test]
    fn a_failing_redis_is_probed_once_a_second_and_warned_of_once_a_minute() {
        let health = Health::new("login throttle");
        let start = Instant::now();
        assert!(health.may_ask_at(start));
        health.failed_at(start, &error());
        assert!(health.is_down());
        assert_eq!(health.warnings(), 1, "one warning when it fails");

        // A flood for two minutes, 100 calls a second: one probe a second
        // goes to Redis (and fails), the rest are served in-process.
        let mut probes = 0;
        for tenth in 1..=1_200u64 {
            for _ in 0..10 {
                let now = start + Duration::from_millis(tenth * 100);
                if health.may_ask_at(now) {
                    probes += 1;
                    health.failed_at(now, &error());
                }
            }
        }
        assert_eq!(probes, 120, "one probe a second");
        assert_eq!(health.warnings(), 1 + 2, "a reminder a minute");

        // A probe answered: shared again, every call goes to Redis, and the
        // recovery is told once.
        let later = start + Duration::from_secs(121);
        assert!(health.may_ask_at(later));
        health.answered_at(later);
        assert!(!health.is_down());
        assert_eq!(health.warnings(), 4);
        for _ in 0..100 {
            assert!(health.may_ask_at(later));
            health.answered_at(later);
        }
        assert_eq!(health.warnings(), 4, "answers are not logged");
    }
}
