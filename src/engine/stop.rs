//! Why a run stops early, shared by every task of the run.
//!
//! A run stops before its work is done when the vendor refuses the account or address (601–604,
//! 404), when a run of 400s points at the credentials or clock, when the vendor is unavailable,
//! when the `--max-billed` budget is spent, or on SIGINT/SIGTERM. Tasks check [`Stop::is_set`]
//! before every call, so once set, no further call leaves. When several apply, the reason kept
//! is the one whose exit code ranks first (signals, then refusals, then "run again later").

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum StopReason {
    /// The vendor refused the account or the address.
    Vendor { code: i64, message: String },
    /// A run of 400s with no real answer between them: the sign, secret or clock is wrong.
    BadCredentials { streak: u32, message: String },
    /// Many calls in a row without a usable answer: a maintenance window or an outage.
    Unavailable { streak: u32, last: String },
    /// `--max-billed` was reached.
    Budget { billed: u64 },
    /// The vendor asked to wait (`Retry-After`) longer than `--max-wait` allows: `wait` is
    /// what it asked for.
    Throttled { wait: Duration, max_wait: Duration },
    /// The checkpoint's database went out of reach and stayed so: what may have been billed
    /// is kept in the spill (replayed by the next run), nothing more is sent.
    CheckpointLost { detail: String },
    /// A signal asked us to stop (2 = SIGINT, 15 = SIGTERM).
    Signal(i32),
}

impl StopReason {
    /// Which reason wins when several apply: 130/143 > 3 > 75.
    fn rank(&self) -> u8 {
        match self {
            StopReason::Signal(_) => 3,
            StopReason::Vendor { .. } | StopReason::BadCredentials { .. } => 2,
            StopReason::Unavailable { .. }
            | StopReason::Budget { .. }
            | StopReason::Throttled { .. }
            | StopReason::CheckpointLost { .. } => 1,
        }
    }

    /// Whether only the short grace applies to calls in flight (a person asked to stop now).
    pub(crate) fn is_signal(&self) -> bool {
        matches!(self, StopReason::Signal(_))
    }
}

pub(crate) struct Stop {
    reason: Mutex<Option<StopReason>>,
    tx: watch::Sender<bool>,
}

impl Default for Stop {
    fn default() -> Self {
        Stop {
            reason: Mutex::new(None),
            tx: watch::channel(false).0,
        }
    }
}

impl Stop {
    /// Records `reason`, unless a reason that ranks at least as high is already set.
    pub(crate) fn set(&self, reason: StopReason) {
        let mut r = self.reason.lock().unwrap_or_else(|e| e.into_inner());
        if r.as_ref().is_none_or(|old| reason.rank() > old.rank()) {
            *r = Some(reason);
        }
        self.tx.send_replace(true);
    }

    pub(crate) fn is_set(&self) -> bool {
        *self.tx.borrow()
    }

    pub(crate) fn reason(&self) -> Option<StopReason> {
        self.reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Resolves once a stop is set.
    pub(crate) async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Sets a `Signal` stop on the first SIGINT or SIGTERM; a second one ends the process at
    /// once (every checkpoint write is a transaction, so the checkpoint stays consistent, and a
    /// generate cut off in flight is found `submitting` and made `uncertain` next time). Runs
    /// for as long as the process may be stopped, so no signal is ever swallowed.
    pub(crate) async fn watch_signals(&self) {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        let mut seen = false;
        loop {
            let sig = tokio::select! {
                _ = int.recv() => 2,
                _ = term.recv() => 15,
            };
            if seen {
                eprintln!("vmr: second signal, stopping at once; run again to continue");
                std::process::exit(128 + sig);
            }
            seen = true;
            self.set(StopReason::Signal(sig));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_ranking_reason_wins() {
        let s = Stop::default();
        assert!(!s.is_set());
        s.set(StopReason::Vendor {
            code: 603,
            message: "余额不足".into(),
        });
        s.set(StopReason::Budget { billed: 1 });
        assert!(s.is_set());
        assert!(matches!(
            s.reason(),
            Some(StopReason::Vendor { code: 603, .. })
        ));
        // A signal outranks a refusal: 130/143 > 3 > 75.
        s.set(StopReason::Signal(15));
        assert_eq!(s.reason(), Some(StopReason::Signal(15)));
        let s = Stop::default();
        s.set(StopReason::Unavailable {
            streak: 20,
            last: String::new(),
        });
        s.set(StopReason::BadCredentials {
            streak: 5,
            message: String::new(),
        });
        assert!(matches!(
            s.reason(),
            Some(StopReason::BadCredentials { streak: 5, .. })
        ));
    }
}
