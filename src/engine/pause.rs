//! The account's pause: when the vendor (or the gateway in front of it) says "wait", every call
//! of the account waits, not just the one that was told.
//!
//! An answer that is not billed and carries `Retry-After` (an account quota's 429, a 503 during
//! a deploy) pauses every task of the run until the time given; with a PostgreSQL checkpoint the
//! pause also goes into the account's shared token bucket, so every worker waits. A non-2xx
//! answer without the header pauses the account briefly, longer for each one in a row. While
//! the vendor keeps asking for waits that fit in `--max-wait`, those answers are not an outage
//! (they never count toward the "vendor unavailable" streak, nor use up a call's attempts); a
//! single wait longer than `--max-wait`, or being held back for longer than that in all, ends
//! the run with 75 (docs/design.md, "Money rules").

use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The first back-off after a non-2xx answer without `Retry-After`; it doubles for each such
/// answer in a row, up to [`UNASKED_MAX`].
const UNASKED_MIN: Duration = Duration::from_millis(200);
const UNASKED_MAX: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Inner {
    /// No call leaves before this instant.
    until: Option<Instant>,
    /// When the vendor first asked to wait since its last usable answer.
    asked_since: Option<Instant>,
    /// Non-2xx answers without `Retry-After` since the last usable answer.
    unasked: u32,
    /// Pauses the vendor asked for in this run, and the longest.
    asked: u64,
    longest: Duration,
}

/// What the vendor's wait means for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asked {
    /// Every call waits until then; the run goes on.
    Paused,
    /// Longer than `--max-wait` (this wait, or all of them since the last usable answer): the
    /// run stops with 75. The duration is how long the vendor asked to wait.
    TooLong(Duration),
}

/// The account's pause, shared by every task of the run.
pub(crate) struct Pause {
    max_wait: Duration,
    inner: Mutex<Inner>,
}

impl Pause {
    pub(crate) fn new(max_wait: Duration) -> Pause {
        Pause {
            max_wait,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The vendor answered "wait `wait`" (`Retry-After`) at `now`.
    pub(crate) fn asked(&self, wait: Duration, now: Instant) -> Asked {
        let mut s = self.inner();
        let since = *s.asked_since.get_or_insert(now);
        let held = now.saturating_duration_since(since) + wait;
        if wait > self.max_wait || held > self.max_wait {
            return Asked::TooLong(wait);
        }
        let until = now + wait;
        let new = s.until.is_none_or(|u| u <= now);
        if s.until.is_none_or(|u| u < until) {
            s.until = Some(until);
        }
        s.longest = s.longest.max(wait);
        if new {
            s.asked += 1;
            tracing::warn!(
                wait = %humantime::format_duration(wait),
                "the vendor asked to wait (Retry-After): every call of the account pauses"
            );
        }
        Asked::Paused
    }

    /// A non-2xx answer without `Retry-After` at `now`: a short pause for the whole account,
    /// doubling for each such answer in a row. Returns the pause.
    pub(crate) fn unasked(&self, now: Instant) -> Duration {
        let mut s = self.inner();
        let wait = UNASKED_MIN
            .saturating_mul(1u32 << s.unasked.min(16))
            .min(UNASKED_MAX);
        s.unasked = s.unasked.saturating_add(1);
        let until = now + wait;
        if s.until.is_none_or(|u| u < until) {
            s.until = Some(until);
        }
        wait
    }

    /// A usable answer: the vendor is serving again.
    pub(crate) fn answered(&self) {
        let mut s = self.inner();
        s.asked_since = None;
        s.unasked = 0;
    }

    /// How long calls must still wait at `now`, if at all.
    pub(crate) fn remaining(&self, now: Instant) -> Option<Duration> {
        self.inner()
            .until
            .and_then(|u| u.checked_duration_since(now))
            .filter(|d| !d.is_zero())
    }

    /// Waits until the pause (as it stands, or as it is extended meanwhile) is over.
    pub(crate) async fn wait(&self) {
        while let Some(d) = self.remaining(Instant::now()) {
            tokio::time::sleep(d).await;
        }
    }

    /// Pauses the vendor asked for in this run, and the longest.
    pub(crate) fn asked_count(&self) -> (u64, Duration) {
        let s = self.inner();
        (s.asked, s.longest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_pauses_every_call_until_its_end() {
        let p = Pause::new(Duration::from_secs(60));
        let t = Instant::now();
        assert_eq!(p.remaining(t), None);
        assert_eq!(p.asked(Duration::from_secs(4), t), Asked::Paused);
        assert_eq!(p.remaining(t), Some(Duration::from_secs(4)));
        // A shorter wait asked later never shortens the pause; a longer one extends it.
        assert_eq!(p.asked(Duration::from_secs(1), t), Asked::Paused);
        assert_eq!(p.remaining(t), Some(Duration::from_secs(4)));
        assert_eq!(
            p.asked(Duration::from_secs(5), t + Duration::from_secs(1)),
            Asked::Paused
        );
        assert_eq!(p.remaining(t), Some(Duration::from_secs(6)));
        assert_eq!(p.remaining(t + Duration::from_secs(7)), None);
        assert_eq!(p.asked_count(), (1, Duration::from_secs(5)));
    }

    #[test]
    fn a_wait_longer_than_max_wait_stops_the_run() {
        let p = Pause::new(Duration::from_secs(10));
        let t = Instant::now();
        assert_eq!(
            p.asked(Duration::from_secs(11), t),
            Asked::TooLong(Duration::from_secs(11))
        );
        assert_eq!(p.remaining(t), None);
    }

    #[test]
    fn being_held_back_longer_than_max_wait_in_all_stops_the_run() {
        let p = Pause::new(Duration::from_secs(10));
        let t = Instant::now();
        for i in 0..3 {
            assert_eq!(
                p.asked(Duration::from_secs(3), t + Duration::from_secs(3 * i)),
                Asked::Paused
            );
        }
        assert_eq!(
            p.asked(Duration::from_secs(3), t + Duration::from_secs(9)),
            Asked::TooLong(Duration::from_secs(3))
        );
        // A usable answer in between starts the count again.
        p.answered();
        assert_eq!(
            p.asked(Duration::from_secs(3), t + Duration::from_secs(9)),
            Asked::Paused
        );
    }

    #[test]
    fn answers_without_the_header_back_off_briefly_and_longer_in_a_row() {
        let p = Pause::new(Duration::from_secs(60));
        let t = Instant::now();
        assert_eq!(p.unasked(t), UNASKED_MIN);
        assert_eq!(p.unasked(t), UNASKED_MIN * 2);
        assert_eq!(p.remaining(t), Some(UNASKED_MIN * 2));
        for _ in 0..40 {
            p.unasked(t);
        }
        assert_eq!(p.remaining(t), Some(UNASKED_MAX));
        p.answered();
        assert_eq!(p.unasked(t), UNASKED_MIN);
    }
}
