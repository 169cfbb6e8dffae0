//! Progress for people and for logs.
//!
//! On a terminal, an indicatif bar per phase (settled/total, rate, ETA, failures). Elsewhere
//! (cron, CI, a log shipper) no bar: a plain progress line through tracing every few seconds, so
//! the log shows the run moving without drowning in one line per VIN.
//!
//! Both count VINs settled, not calls: a VIN counts once it has left the state its phase works
//! on (`pending` for poll; `queued`, or `uncertain` when resubmitted, for submit), against the
//! VINs there were to settle when the phase began. A poll pass that leaves a VIN pending, or a
//! submit that sends a VIN back to the queue, does not advance the count.

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
                    "{prefix:>7} [{bar:30}] {pos}/{len} {rate} eta {eta} {msg}",
                )
                .expect("valid progress template")
                .with_key(
                    "rate",
                    |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = w.write_str(&rate(s.per_sec()));
                    },
                )
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

    /// One VIN's task ended: it was in `from` and is now in `to`. It counts as settled only
    /// when it left `from`.
    pub(crate) fn finished(&self, from: State, to: State) {
        if from == to {
            return;
        }
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        if to == State::Failed {
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
                rate = rate(done as f64 / secs),
                "progress"
            );
        }
    }

    /// VINs settled so far.
    #[cfg(test)]
    fn settled(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Shows on the bar that every call waits for the vendor (`left` of a `Retry-After`), or
    /// that it no longer does. The log says so already (engine::pause), so without a bar this
    /// does nothing.
    pub(crate) fn pause(&self, left: Option<Duration>) {
        let Some(b) = &self.bar else { return };
        let failed = self.failed.load(Ordering::Relaxed);
        let failed = (failed > 0).then(|| format!("{failed} failed"));
        match left {
            Some(d) => b.set_message(format!(
                "paused {}s: the vendor asked to wait{}",
                d.as_secs_f64().ceil() as u64,
                failed.map(|f| format!(", {f}")).unwrap_or_default()
            )),
            None => b.set_message(failed.unwrap_or_default()),
        }
    }

    pub(crate) fn close(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// A rate for people: `1,245/s` (whole, with thousands separators) from 100 a second up,
/// `12.3/s` (one decimal) below.
pub(crate) fn rate(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec < 0.0 {
        return "0.0/s".to_owned();
    }
    if per_sec < 99.95 {
        return format!("{per_sec:.1}/s");
    }
    let digits = format!("{:.0}", per_sec.round());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out.push_str("/s");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_rounded_for_people() {
        for (r, shown) in [
            (0.0, "0.0/s"),
            (0.04, "0.0/s"),
            (3.1234, "3.1/s"),
            (99.94, "99.9/s"),
            (99.96, "100/s"),
            (999.4, "999/s"),
            (1245.4321, "1,245/s"),
            (27571.9, "27,572/s"),
            (1234567.0, "1,234,567/s"),
            (f64::NAN, "0.0/s"),
            (f64::INFINITY, "0.0/s"),
        ] {
            assert_eq!(rate(r), shown, "{r}");
        }
    }

    #[test]
    fn only_vins_that_left_their_state_count() {
        // A poll over 3 pending VINs, in several passes: a get that leaves a VIN pending (701)
        // does not advance the count, however many passes ask again.
        let p = Progress::new("", 3);
        for _ in 0..5 {
            p.finished(State::Pending, State::Pending);
        }
        assert_eq!(p.settled(), 0);
        p.finished(State::Pending, State::Done);
        p.finished(State::Pending, State::Pending);
        p.finished(State::Pending, State::Failed);
        p.finished(State::Pending, State::Expired);
        assert_eq!(p.settled(), 3);
        assert_eq!(p.failed.load(Ordering::Relaxed), 1);

        // Submit: back to the queue (retries used up, a stop) is not settled; uncertain, pending,
        // done and failed are. A resubmitted uncertain VIN that stays uncertain is not.
        let s = Progress::new("", 6);
        s.finished(State::Queued, State::Queued);
        s.finished(State::Uncertain, State::Uncertain);
        assert_eq!(s.settled(), 0);
        for to in [State::Pending, State::Done, State::Failed, State::Uncertain] {
            s.finished(State::Queued, to);
        }
        s.finished(State::Uncertain, State::Pending);
        assert_eq!(s.settled(), 5);
    }
}
