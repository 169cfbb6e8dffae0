//! The stages in a row: ingest, submit, poll, export — what `submit`, `poll` and `run` drive.
//!
//! Each stage reads and writes only the checkpoint, so a plan is just which stages to run. This
//! is where the run's lifecycle lives: the checkpoint opened once, signals watched, the run
//! recorded in the checkpoint's run log, one summary printed, one exit code returned.

use anyhow::Result;
use std::path::PathBuf;
use std::time::Instant;

use crate::app::{self, exit};
use crate::checkpoint;
use crate::config::Settings;
use crate::engine::{self, progress::Progress};
use crate::export::ExportOptions;
use crate::ingest;
use crate::input::InputOptions;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollMode {
    /// No polling.
    Skip,
    /// One pass over what is due now.
    Once,
    /// Until nothing is pending or `--max-wait` has passed.
    UntilDone,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub command: &'static str,
    pub input: Option<PathBuf>,
    pub submit: bool,
    pub poll: PollMode,
    pub export: bool,
    pub resubmit_uncertain: bool,
    pub dry_run: bool,
}

impl Plan {
    /// The states whose VINs this plan sends to generate.
    fn send_states(&self) -> Vec<&'static str> {
        if self.resubmit_uncertain {
            vec!["queued", "uncertain"]
        } else {
            vec!["queued"]
        }
    }
}

pub fn input_options(s: &Settings) -> InputOptions {
    InputOptions {
        vin_column: s.vin_column.clone(),
        image_column: s.image_column.clone(),
        encoding: s.encoding.clone(),
    }
}

fn count_states(ckpt: &checkpoint::Checkpoint, states: &[&str]) -> Result<i64> {
    let counts = checkpoint::state_counts(&ckpt.reader()?)?;
    Ok(states
        .iter()
        .map(|s| counts.get(*s).copied().unwrap_or(0))
        .sum())
}

/// Runs `plan` and returns the exit code.
pub fn execute(settings: &Settings, plan: &Plan) -> Result<u8> {
    let started = Instant::now();
    let input = match &plan.input {
        Some(path) => Some((path, ingest::open_input(path, &input_options(settings))?)),
        None => None,
    };
    let (ckpt, _recovery) = app::open_checkpoint(settings)?;
    let run_id = ckpt.begin_run(plan.command)?;
    let result = stages(settings, plan, &ckpt, input, started);
    let (code, outcome) = match &result {
        Ok(exit::OK) => (exit::OK, "complete".to_owned()),
        Ok(exit::WORK_REMAINS) => (exit::WORK_REMAINS, "work remains".to_owned()),
        Ok(c) => (*c, format!("stopped (exit {c})")),
        Err(e) => (app::exit_code_of(e), format!("failed: {e:#}")),
    };
    ckpt.end_run(run_id, code as i32, &outcome)?;
    result
}

/// The stages of `plan` on an open checkpoint.
fn stages(
    settings: &Settings,
    plan: &Plan,
    ckpt: &checkpoint::Checkpoint,
    input: Option<(&PathBuf, crate::input::InputReader)>,
    started: Instant,
) -> Result<u8> {
    if let Some((path, reader)) = input {
        let summary = ingest::ingest(ckpt, path, reader)?;
        app::report(settings.log_format, &summary.render());
    }
    if plan.dry_run {
        let n = count_states(ckpt, &plan.send_states())?;
        let pending = count_states(ckpt, &["pending"])?;
        let secs = if settings.rate == 0 {
            0.0
        } else {
            n as f64 / settings.rate as f64
        };
        println!(
            "dry run: would call generate for {n} VINs (at most {n} billed generate calls, plus one billed get per report not returned inline), and get for {pending} pending VINs; at --rate {} that takes about {}",
            settings.rate,
            humantime::format_duration(std::time::Duration::from_secs(secs.ceil() as u64))
        );
        return Ok(exit::OK);
    }
    let rt = app::runtime()?;
    let code = rt.block_on(async {
        let (client, _sandbox) = app::connect(settings).await?;
        let engine = app::engine(settings, client, ckpt.clone(), plan.resubmit_uncertain);
        let watcher = {
            let stop = engine.stop.clone();
            tokio::spawn(async move { stop.watch_signals().await })
        };
        if plan.submit {
            let total = count_states(ckpt, &plan.send_states())?;
            let progress = Progress::new("submit", total as u64);
            engine::submit(engine.clone(), &progress).await?;
            progress.close();
        }
        if !engine.stop.is_set() && plan.poll != PollMode::Skip {
            let total = count_states(ckpt, &["pending"])?;
            let progress = Progress::new("poll", total as u64);
            match plan.poll {
                PollMode::Once => {
                    engine::poll_due(engine.clone(), &progress).await?;
                }
                PollMode::UntilDone => {
                    let deadline = tokio::time::Instant::now() + settings.max_wait;
                    engine::poll_until(engine.clone(), deadline, &progress).await?;
                }
                PollMode::Skip => {}
            }
            progress.close();
        }
        watcher.abort();
        let code = app::finish_code(&engine)?;
        let mut text = app::summary(&engine, started)?;
        if let Some(r) = engine.stop.reason() {
            text.push_str(&format!("\nvmr: {}", app::describe_stop(&r)));
        } else if code == exit::WORK_REMAINS {
            let uncertain = count_states(ckpt, &["uncertain"])?;
            let pending = count_states(ckpt, &["pending"])?;
            if pending > 0 {
                text.push_str(&format!("\nvmr: {pending} reports are not ready yet; run `vmr poll` (or `vmr run`) again later"));
            }
            if uncertain > 0 {
                text.push_str(&format!("\nvmr: {uncertain} VINs are uncertain (see `vmr status`); resubmit them with --resubmit-uncertain once reconciled"));
            }
        }
        app::report(settings.log_format, &text);
        anyhow::Ok(code)
    })?;
    // Export what the checkpoint holds (also after a vendor refusal), unless a signal asked to
    // stop: the tables can be redone from the checkpoint by `vmr export` at any time.
    if plan.export && !matches!(code, 130 | 143) {
        let summary =
            crate::export::export(&ckpt.reader()?, &ExportOptions::from_settings(settings))?;
        app::report(settings.log_format, &summary.render());
    }
    Ok(code)
}
