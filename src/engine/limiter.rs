//! The rate limiter shared by generate and get.
//!
//! One governor GCRA limiter per run: `rate` calls per second with `burst` extra; under GCRA a
//! one-second window can admit up to rate + burst calls, which is the documented bound. A rate
//! of 0 means unlimited (for the sandbox). The workers of a PostgreSQL checkpoint share one
//! token bucket in the database instead, with the same bound over all of them.

use crate::checkpoint::Sharing;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;

pub(crate) struct Limiter {
    inner: Option<DefaultDirectRateLimiter>,
    /// Whose turn it is to wait for the next token: one task at a time, in arrival order
    /// (tokio's mutex is fair). The others wait their turn without waking, so a starved process
    /// does not spend the little CPU it gets on `--concurrency` tasks waking at every token and
    /// going back to sleep, and the one waiting wakes on tokio's own timer.
    turn: tokio::sync::Mutex<()>,
    /// The account's token bucket shared with the other workers, when this process is one.
    shared: Option<Sharing>,
}

impl Limiter {
    pub(crate) fn new(rate: u32, burst: u32) -> Limiter {
        let inner = NonZeroU32::new(rate).map(|r| {
            let burst = NonZeroU32::new(burst.max(1)).expect("burst is at least 1");
            RateLimiter::direct(Quota::per_second(r).allow_burst(burst))
        });
        Limiter {
            inner,
            turn: tokio::sync::Mutex::new(()),
            shared: None,
        }
    }

    /// The limiter of a process that shares the account as `sharing` says: a worker takes its
    /// tokens from the account's bucket in the database (a rate of 0 stays unlimited).
    pub(crate) fn for_sharing(rate: u32, burst: u32, sharing: &Sharing) -> Limiter {
        let mut l = Limiter::new(rate, burst);
        if sharing.shares_bucket() && l.inner.take().is_some() {
            l.shared = Some(sharing.clone());
        }
        l
    }

    /// Passes a wait the vendor asked for on to the account's other workers: the shared bucket
    /// goes into debt for `wait`, so no worker takes a token before it is over. (This process's
    /// own tasks wait on the engine's pause.)
    pub(crate) fn pause(&self, wait: std::time::Duration) {
        if let Some(s) = &self.shared
            && let Err(e) = s.pause_bucket(wait)
        {
            tracing::warn!(error = %e, "cannot pause the shared rate limit; the other workers learn of the wait from their own calls");
        }
    }

    /// Waits until one more call may leave.
    pub(crate) async fn acquire(&self) {
        if let Some(s) = &self.shared {
            loop {
                match s.take_token() {
                    Ok(None) => return,
                    Ok(Some(wait)) => tokio::time::sleep(wait).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot take a token from the shared rate limit; trying again");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
        }
        if let Some(l) = &self.inner {
            // GCRA credits a late wake-up within the burst: a task that wakes late passes at
            // once and so do the ones after it, until the rate is caught up (never above rate +
            // burst in any second).
            let _turn = self.turn.lock().await;
            while let Err(not_until) = l.check() {
                use governor::clock::Clock as _;
                tokio::time::sleep(not_until.wait_time_from(l.clock().now())).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn zero_rate_is_unlimited() {
        let l = Limiter::new(0, 1);
        let t = Instant::now();
        for _ in 0..10_000 {
            l.acquire().await;
        }
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn burst_then_steady_rate() {
        // 5 in the burst pass at once; the 6th waits about 1/rate.
        let l = Limiter::new(20, 5);
        let t = Instant::now();
        for _ in 0..5 {
            l.acquire().await;
        }
        let after_burst = t.elapsed();
        for _ in 0..4 {
            l.acquire().await;
        }
        assert!(after_burst < Duration::from_millis(40), "{after_burst:?}");
        assert!(
            t.elapsed() >= Duration::from_millis(150),
            "{:?}",
            t.elapsed()
        );
    }
}
