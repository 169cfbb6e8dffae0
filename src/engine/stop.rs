//! Why a run stops early, shared by every task of the run.
//!
//! Three things stop a run before its work is done: the vendor refusing the account or address
//! (601–604, 404), the `--max-billed` budget, and SIGINT/SIGTERM. Whichever comes first is kept;
//! tasks check [`Stop::is_set`] before every call, so once set, no further call leaves.

use std::sync::Mutex;
use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq)]
pub enum StopReason {
    /// The vendor refused the account or the address.
    Vendor { code: i64, message: String },
    /// `--max-billed` was reached.
    Budget { billed: u64 },
    /// A signal asked us to stop (2 = SIGINT, 15 = SIGTERM).
    Signal(i32),
}

impl StopReason {
    /// The process exit code for this reason (design.md, exit codes).
    pub fn exit_code(&self) -> u8 {
        match self {
            StopReason::Vendor { .. } => 3,
            StopReason::Budget { .. } => 75,
            StopReason::Signal(sig) => (128 + sig) as u8,
        }
    }
}

pub struct Stop {
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
    /// Records `reason` unless a reason is already set.
    pub fn set(&self, reason: StopReason) {
        let mut r = self.reason.lock().expect("stop mutex poisoned");
        if r.is_none() {
            *r = Some(reason);
        }
        self.tx.send_replace(true);
    }

    pub fn is_set(&self) -> bool {
        *self.tx.borrow()
    }

    pub fn reason(&self) -> Option<StopReason> {
        self.reason.lock().expect("stop mutex poisoned").clone()
    }

    /// Resolves once a stop is set.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }

    /// Sets a `Signal` stop on the first SIGINT or SIGTERM. Runs until then.
    pub async fn watch_signals(&self) {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        let sig = tokio::select! {
            _ = int.recv() => 2,
            _ = term.recv() => 15,
        };
        self.set(StopReason::Signal(sig));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins() {
        let s = Stop::default();
        assert!(!s.is_set());
        s.set(StopReason::Vendor {
            code: 603,
            message: "余额不足".into(),
        });
        s.set(StopReason::Signal(15));
        assert!(s.is_set());
        assert_eq!(s.reason().map(|r| r.exit_code()), Some(3));
        assert_eq!(StopReason::Signal(15).exit_code(), 143);
        assert_eq!(StopReason::Signal(2).exit_code(), 130);
    }
}
