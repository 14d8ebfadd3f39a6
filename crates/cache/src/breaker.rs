//! A circuit breaker for a remote cache backend. A backend that is down or hung costs every
//! request its lookup timeouts; after [`Breaker::FAILURES`] consecutive failed calls the circuit
//! opens and calls are not made at all (a lookup is a miss at once, a store is skipped), so
//! requests cost what a miss costs. While it is open, the backend's owner probes it in the
//! background once [`Breaker::probe_due`] says so (half-open): a probe that succeeds closes the
//! circuit, one that fails opens it again for twice as long, up to [`Breaker::MAX_OPEN`]: a
//! second, so that the cache is back within a second or so of Milvus answering again (the fault
//! suite, tests/e2e/test_faults.py, holds it to 2 s); a probe is one small query, or a connect
//! attempt, so one a second per replica costs a struggling Milvus nothing to speak of.
//! Requests never wait for a probe.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use vane_cache::breaker::{Breaker, Change};
//! let b = Breaker::default();
//! let t = Instant::now();
//! assert_eq!((b.record(false, t), b.record(false, t)), (None, None));
//! assert_eq!(b.record(false, t), Some(Change::Opened(Breaker::MIN_OPEN)));
//! assert!(!b.allows());
//! assert_eq!(b.probe_due(t + Breaker::MIN_OPEN), Some(Change::HalfOpen));
//! assert_eq!(b.probed(true, t + Breaker::MIN_OPEN), Change::Closed);
//! assert!(b.allows());
//! ```

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where the circuit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Calls are made; `failures` in a row so far.
    Closed { failures: u32 },
    /// No calls until `until`; then a probe.
    Open { until: Instant, open_for: Duration },
    /// A probe is out; calls still are not made.
    HalfOpen { open_for: Duration },
}

/// A change of state, to log and count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Opened for this long.
    Opened(Duration),
    HalfOpen,
    Closed,
}

impl Change {
    /// The `vane_cache_breaker_transitions_total{to}` label.
    pub fn label(self) -> &'static str {
        match self {
            Change::Opened(_) => "open",
            Change::HalfOpen => "half_open",
            Change::Closed => "closed",
        }
    }
}

#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker { state: Mutex::new(State::Closed { failures: 0 }) }
    }
}

impl Breaker {
    /// Consecutive failures that open the circuit: one request's two lookups and one more.
    pub const FAILURES: u32 = 3;
    /// How long the circuit first stays open before a probe.
    pub const MIN_OPEN: Duration = Duration::from_millis(500);
    /// The longest it stays open between probes.
    pub const MAX_OPEN: Duration = Duration::from_secs(1);

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call may be made now (the circuit is closed).
    pub fn allows(&self) -> bool {
        matches!(*self.state(), State::Closed { .. })
    }

    /// Whether the circuit is open or half-open.
    pub fn is_open(&self) -> bool {
        !self.allows()
    }

    /// The outcome of a call made while closed; `Some` when it opened the circuit. Outcomes of
    /// calls that finish after it opened change nothing: the probe decides.
    pub fn record(&self, ok: bool, now: Instant) -> Option<Change> {
        let mut state = self.state();
        let State::Closed { failures } = *state else { return None };
        if ok {
            *state = State::Closed { failures: 0 };
            return None;
        }
        let failures = failures + 1;
        if failures < Self::FAILURES {
            *state = State::Closed { failures };
            return None;
        }
        *state = State::Open { until: now + Self::MIN_OPEN, open_for: Self::MIN_OPEN };
        Some(Change::Opened(Self::MIN_OPEN))
    }

    /// `Some(HalfOpen)` when the circuit is open and its time is up: the caller probes now and
    /// reports with [`Breaker::probed`].
    pub fn probe_due(&self, now: Instant) -> Option<Change> {
        let mut state = self.state();
        match *state {
            State::Open { until, open_for } if now >= until => {
                *state = State::HalfOpen { open_for };
                Some(Change::HalfOpen)
            }
            _ => None,
        }
    }

    /// When the next probe is due (`None` unless open).
    pub fn open_until(&self) -> Option<Instant> {
        match *self.state() {
            State::Open { until, .. } => Some(until),
            _ => None,
        }
    }

    /// The probe's outcome: closed, or open again for twice as long (at most [`Self::MAX_OPEN`]).
    pub fn probed(&self, ok: bool, now: Instant) -> Change {
        let mut state = self.state();
        let open_for = match *state {
            State::HalfOpen { open_for } | State::Open { open_for, .. } => open_for,
            State::Closed { .. } => Self::MIN_OPEN,
        };
        if ok {
            *state = State::Closed { failures: 0 };
            return Change::Closed;
        }
        let open_for = (open_for * 2).min(Self::MAX_OPEN);
        *state = State::Open { until: now + open_for, open_for };
        Change::Opened(open_for)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_failures_open_it_and_a_success_between_them_does_not() {
        let b = Breaker::default();
        let t = Instant::now();
        for outcome in [false, false, true, false, false] {
            assert_eq!(b.record(outcome, t), None);
        }
        assert!(b.allows(), "a success resets the count");
        assert_eq!(b.record(false, t), Some(Change::Opened(Breaker::MIN_OPEN)));
        assert!(b.is_open());
        assert_eq!(b.record(true, t), None, "a call that was already out changes nothing");
        assert!(b.is_open());
        assert_eq!(b.open_until(), Some(t + Breaker::MIN_OPEN));
    }

    #[test]
    fn it_probes_when_its_time_is_up_and_backs_off_while_probes_fail() {
        let b = Breaker::default();
        let mut t = Instant::now();
        for _ in 0..Breaker::FAILURES {
            b.record(false, t);
        }
        assert_eq!(b.probe_due(t + Breaker::MIN_OPEN / 2), None, "not yet");
        let mut open_for = Breaker::MIN_OPEN;
        for want in [1000, 1000, 1000] {
            t += open_for;
            assert_eq!(b.probe_due(t), Some(Change::HalfOpen));
            assert!(!b.allows(), "half-open: requests still do not call");
            assert_eq!(b.probe_due(t), None, "one probe at a time");
            assert_eq!(b.probed(false, t), Change::Opened(Duration::from_millis(want)));
            open_for = Duration::from_millis(want);
        }
        t += open_for;
        assert_eq!(b.probe_due(t), Some(Change::HalfOpen));
        assert_eq!(b.probed(true, t), Change::Closed);
        assert!(b.allows());
        // Opened again later, it starts from the shortest wait.
        for _ in 0..Breaker::FAILURES {
            b.record(false, t);
        }
        assert_eq!(b.open_until(), Some(t + Breaker::MIN_OPEN));
    }
}
