//! The retry policy for transient faults: exponential backoff with jitter, up to a limit.
//!
//! The delays come from backon's exponential builder (jitter included), so no call site computes
//! its own. A policy hands out one [`Attempts`] per call, which says whether another attempt is
//! allowed and how long to wait before it.

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl RetryPolicy {
    pub(crate) fn new(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts: max_attempts.max(1),
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(20),
        }
    }

    pub(crate) fn attempts(&self) -> Attempts {
        let delays = ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .build();
        Attempts { delays, made: 0 }
    }
}

/// The attempts of one call.
pub(crate) struct Attempts {
    delays: ExponentialBackoff,
    made: u32,
}

impl Attempts {
    /// Counts an attempt about to be made.
    pub(crate) fn start(&mut self) -> u32 {
        self.made += 1;
        self.made
    }

    /// The wait before the next attempt, or `None` when the attempts are used up.
    pub(crate) fn next_delay(&mut self) -> Option<Duration> {
        self.delays.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_max_attempts_minus_one_delays_within_bounds() {
        let p = RetryPolicy::new(5);
        let mut a = p.attempts();
        let delays: Vec<_> = std::iter::from_fn(|| a.next_delay()).collect();
        assert_eq!(delays.len(), 4);
        for d in &delays {
            assert!(*d >= p.min_delay && *d <= p.max_delay * 2, "{d:?}");
        }
        assert!(RetryPolicy::new(1).attempts().next_delay().is_none());
    }
}
