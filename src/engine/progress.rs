//! Progress for people and for logs.
//!
//! On a terminal, an indicatif bar per phase (done/total, rate, ETA, failures). Elsewhere (cron,
//! CI, a log shipper) no bar: a plain progress line through tracing every few seconds, so the
//! log shows the run moving without drowning in one line per VIN.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::checkpoint::State;

pub(crate) struct Progress {
    phase: &'static str,
    bar: Option<ProgressBar>,
    total: u64,
    done: AtomicU64,
    failed: AtomicU64,
    last_log: Mutex<Instant>,
    started: Instant,
}

const LOG_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    /// A progress display for `phase` over `total` VINs; a bar only when stderr is a terminal.
    pub(crate) fn new(phase: &'static str, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix:>7} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}",
                )
                .expect("valid progress template")
                .progress_chars("=> "),
            );
            b.set_prefix(phase);
            b
        });
        Progress {
            phase,
            bar,
            total,
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_log: Mutex::new(Instant::now()),
            started: Instant::now(),
        }
    }

    pub(crate) fn finished(&self, state: State) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if state == State::Failed {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let failed = self.failed.load(Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_position(done);
            if failed > 0 {
                b.set_message(format!("{failed} failed"));
            }
            return;
        }
        if self.phase.is_empty() {
            return;
        }
        let mut last = self.last_log.lock().expect("progress mutex poisoned");
        if last.elapsed() >= LOG_EVERY {
            *last = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(0.001);
            tracing::info!(
                phase = self.phase,
                done,
                total = self.total,
                failed,
                per_sec = format!("{:.1}", done as f64 / secs),
                "progress"
            );
        }
    }

    pub(crate) fn close(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
