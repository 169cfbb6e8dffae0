//! The stages in a row: ingest, submit, poll, export — what `submit`, `poll` and `run` drive.
//!
//! Each stage reads and writes only the checkpoint, so a plan is just which stages to run. This
//! is where the run's lifecycle lives: the checkpoint opened once, signals watched, the run
//! recorded in the checkpoint's run log, one summary printed, one exit code returned.

use anyhow::Result;
use std::path::PathBuf;
use std::time::{Instant, SystemTime};

use crate::app::{self, exit};
use crate::checkpoint::{self, State};
use crate::config::Settings;
use crate::engine::{self, progress::Progress};
use crate::export::ExportOptions;
use crate::ingest;
use crate::input::InputOptions;
use crate::monitor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PollMode {
    /// No polling.
    Skip,
    /// One pass over what is due now.
    Once,
    /// Until nothing is pending or `--max-wait` has passed.
    UntilDone,
}

#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub command: &'static str,
    pub input: Option<PathBuf>,
    pub submit: bool,
    pub poll: PollMode,
    pub export: bool,
    pub resubmit_uncertain: bool,
    pub dry_run: bool,
    /// `--retry-failed`: `None` when not given, an empty list for every failure.
    pub retry_failed: Option<Vec<checkpoint::FailedKind>>,
    /// `--retry-expired`: a submit buys the expired VINs again; a poll without submit asks
    /// for their reports again by requestId.
    pub retry_expired: bool,
}

impl Plan {
    /// The states whose VINs this plan sends to generate.
    fn send_states(&self) -> &'static [State] {
        engine::send_states(self.resubmit_uncertain)
    }

    /// The VINs whose ended purchase this plan buys again; `batch` is the input's. Refreshes
    /// need an input (only its VINs are refreshed); retries without one take any VIN.
    fn rebuy(&self, settings: &Settings, batch: Option<String>) -> checkpoint::Rebuy {
        if !self.submit {
            return checkpoint::Rebuy::default();
        }
        let refresh_before = match (settings.refresh_older_than, &batch) {
            (Some(age), Some(_)) => {
                Some(crate::api::now_ms().saturating_sub(age.as_millis() as i64))
            }
            _ => None,
        };
        checkpoint::Rebuy {
            batch,
            refresh_before,
            retry_failed: self.retry_failed.clone(),
            retry_expired: self.retry_expired,
        }
    }

    /// Whether this plan asks for the expired VINs' reports again by requestId (a poll's
    /// `--retry-expired`; a submit's buys them again instead).
    fn repoll_expired(&self) -> bool {
        self.retry_expired && !self.submit && self.poll != PollMode::Skip
    }
}

pub(crate) fn input_options(s: &Settings) -> InputOptions {
    InputOptions {
        vin_column: s.vin_column.clone(),
        image_column: s.image_column.clone(),
        encoding: s.encoding.clone(),
        sheet: s.sheet.clone(),
        delimiter: s.delimiter,
        fetch: Some(crate::export::lake::fetch_input),
    }
}

fn count_states(ckpt: &checkpoint::Checkpoint, states: &[State]) -> Result<i64> {
    Ok(checkpoint::state_counts(&ckpt.reader()?)?.sum(states))
}

impl Plan {
    /// Whether this plan calls the vendor.
    fn calls_vendor(&self) -> bool {
        (self.submit || self.poll != PollMode::Skip) && !self.dry_run
    }
}

/// Runs `plan` and returns the exit code; around it, unless it is a dry run, the pings
/// (`--ping-url`) and the metrics file (`--metrics-file`), which never change the outcome.
pub(crate) fn execute(settings: &Settings, plan: &Plan) -> Result<u8> {
    if plan.dry_run {
        return execute_plan(settings, plan);
    }
    let started = SystemTime::now();
    if let Some(url) = &settings.ping_url {
        monitor::ping(url, Some("start"), format!("vmr {} started", plan.command));
    }
    let result = execute_plan(settings, plan);
    let code = match &result {
        Ok(c) => *c,
        Err(e) => app::exit_code_of(e),
    };
    let ended = SystemTime::now();
    if settings.metrics_file.is_none() && settings.ping_url.is_none() {
        return result;
    }
    // The checkpoint as `vmr status` reads it now that this run has let go of it; none when the
    // run ended before there was one.
    let snap = match monitor::snapshot(&settings.place, ended) {
        Ok(s) => Some(s),
        Err(e) => {
            if settings
                .place
                .dir()
                .is_none_or(|d| checkpoint::db_path(d).exists())
            {
                tracing::warn!(error = %format!("{e:#}"), "cannot read the checkpoint for the metrics and the ping");
            }
            None
        }
    };
    if let Some(path) = &settings.metrics_file {
        let end = monitor::RunEnd {
            started,
            ended,
            exit_code: code,
        };
        if let Err(e) = monitor::write_metrics(path, &end, snap.as_ref()) {
            tracing::warn!(error = %format!("{e:#}"), "the metrics file was not written; the run's outcome is unchanged");
        }
    }
    if let Some(url) = &settings.ping_url {
        let uncertain = snap.as_ref().map_or(0, |s| s.status.uncertain_total);
        let (suffix, body) = monitor::end_ping(code, uncertain);
        monitor::ping(url, suffix.as_deref(), body);
    }
    result
}

/// Runs `plan` and returns the exit code.
///
/// What can be checked without the vendor is checked before the checkpoint is touched: the
/// credentials, that `--out` is writable, the input file. Then the account is bound (or another
/// account's state refused) before any call.
fn execute_plan(settings: &Settings, plan: &Plan) -> Result<u8> {
    let started = Instant::now();
    if plan.calls_vendor() && !settings.sandbox {
        settings
            .credentials()
            .map_err(|e| app::Failure::new(exit::USAGE, format!("{e:#}")))?;
    }
    if plan.submit && !plan.dry_run {
        app::check_out_writable(&settings.out)?;
    }
    if plan.submit && plan.input.is_none() && settings.refresh_older_than.is_some() {
        return Err(app::Failure::new(
            exit::USAGE,
            "--refresh-older-than (refresh-older-than in vmr.toml) refreshes the VINs of an input: give it with --input FILE".to_owned(),
        )
        .into());
    }
    let input = match &plan.input {
        Some(path) => Some(ingest::open_input(path, &input_options(settings))?),
        None => None,
    };
    if let Some(input) = &input
        && input.tables() > 1
        && plan.submit
        && (settings.refresh_older_than.is_some()
            || plan.retry_failed.is_some()
            || plan.retry_expired)
    {
        return Err(app::Failure::new(
            exit::USAGE,
            format!(
                "{}: --sheet '*' reads {} sheets, and --refresh-older-than, --retry-failed and --retry-expired buy again the VINs of one input: give one sheet with --sheet NAME",
                input.name(),
                input.tables()
            ),
        )
        .into());
    }
    let (ckpt, _recovery) = app::open_checkpoint(settings)?;
    if plan.calls_vendor() {
        app::check_account(&ckpt, settings)?;
    }
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

fn dry_run(
    settings: &Settings,
    plan: &Plan,
    ckpt: &checkpoint::Checkpoint,
    rebuy: &checkpoint::Rebuy,
) -> Result<u8> {
    let reader = ckpt.reader()?;
    let counts = checkpoint::state_counts(&reader)?;
    let again = checkpoint::rebuy_counts(&reader, rebuy)?;
    let n = if plan.submit {
        counts.sum(plan.send_states()) + again.total()
    } else {
        0
    };
    let expired = if plan.repoll_expired() {
        counts.get(State::Expired)
    } else {
        0
    };
    let pending = counts.get(State::Pending) + expired;
    // Each generate is billed once; a report not returned inline costs one get more. Unknown
    // until bought, so the estimate assumes the worst: every report deferred.
    let calls = n * 2 + pending;
    let secs = if settings.rate == 0 {
        0.0
    } else {
        calls as f64 / settings.rate as f64
    };
    let mut text = format!(
        "dry run: would call generate for {n} VINs and get for {pending} pending reports: at most {calls} billed calls ({n} generates, up to {n} gets for reports not returned inline, {pending} gets for reports already bought); at --rate {} that takes about {}",
        settings.rate,
        humantime::format_duration(std::time::Duration::from_secs(secs.ceil() as u64))
    );
    if expired > 0 {
        text.push_str(&format!(
            "\nof those gets, {expired} ask again for the reports of expired VINs by the requestId already paid for (--retry-expired): nothing is bought again; a 701 costs nothing, a report costs one get"
        ));
    }
    if rebuy.any() {
        text.push_str(&format!(
            "\nof those {n} generates, {} buy a VIN again (each a new purchase, billed): {} refreshes (reports older than {}), {} failed VINs retried, {} expired VINs retried (`vmr poll --retry-expired` asks for an expired VIN's report again without buying it)",
            again.total(),
            again.refresh,
            settings
                .refresh_older_than
                .map_or("-".to_owned(), |d| humantime::format_duration(d).to_string()),
            again.retry_failed,
            again.retry_expired
        ));
    }
    if let Some(p) = &settings.price {
        text.push('\n');
        text.push_str(&money_estimate(p, settings.rate, n, pending, &reader)?);
    }
    if let Some(max) = settings.max_billed {
        text.push_str(&format!(
            "\n--max-billed {max}: this run would stop buying at {max} billed calls, keeping one get for every pending report"
        ));
    }
    if let (Some(p), Some(m)) = (&settings.price, settings.max_spend) {
        text.push_str(&format!(
            "\n--max-spend {}: this run would stop buying at {} billed calls ({}), keeping one get for every pending report",
            p.amount(m),
            crate::price::count(p.calls_for(m)),
            p.amount(p.cost(p.calls_for(m)))
        ));
    }
    app::print(&format!("{text}\n"))?;
    Ok(exit::OK)
}

/// Share of reports that come after a get, when the checkpoint holds none yet to tell (the
/// vendor's usual share: about 3 in 10 come inline).
const DEFERRED_SHARE: f64 = 0.7;

/// The dry run's estimate in money: `generates` reports bought, the gets the deferred ones will
/// need (at the share this checkpoint has seen, else [`DEFERRED_SHARE`]) and those `pending`
/// reports already owe, at `price`, and how long they take at `rate`.
fn money_estimate(
    price: &crate::price::Price,
    rate: u32,
    generates: i64,
    pending: i64,
    reader: &checkpoint::Conn,
) -> Result<String> {
    use crate::price::count;
    let (reports, by_get) = checkpoint::reports_stored(reader)?;
    let share = if reports > 0 {
        by_get as f64 / reports as f64
    } else {
        DEFERRED_SHARE
    };
    let mut gets = (generates as f64 * share).round() as u64 + pending.max(0) as u64;
    if gets >= 1000 {
        gets = (gets as f64 / 100.0).round() as u64 * 100;
    }
    let generates = generates.max(0) as u64;
    let calls = generates + gets;
    let time = if rate == 0 {
        "at an unlimited --rate".to_owned()
    } else {
        let secs = (calls as f64 / f64::from(rate)).ceil() as u64;
        let took = if secs >= 60 {
            format!("{} min", secs.div_ceil(60))
        } else {
            format!("{secs} s")
        };
        format!("{took} at --rate {rate}")
    };
    Ok(format!(
        "would buy {} reports: {} generates + about {} gets = {} at {} per call, {time}",
        count(generates),
        count(generates),
        count(gets),
        price.about(price.cost(calls)),
        price.per_call_text()
    ))
}

/// The stages of `plan` on an open checkpoint.
fn stages(
    settings: &Settings,
    plan: &Plan,
    ckpt: &checkpoint::Checkpoint,
    input: Option<crate::input::Input>,
    started: Instant,
) -> Result<u8> {
    let mut batch = None;
    if let Some(input) = input {
        for summary in ingest::ingest_input(ckpt, input)? {
            app::report(settings.log_format, &summary.render());
            // More than one table only without a refresh or retry (checked before ingest).
            batch = Some(summary.batch_id);
        }
    }
    let rebuy = plan.rebuy(settings, batch);
    if plan.dry_run {
        return dry_run(settings, plan, ckpt, &rebuy);
    }
    if plan.repoll_expired() {
        let n = ckpt.reopen_expired()?;
        tracing::info!(
            vins = n,
            "expired VINs asked again by their requestId (--retry-expired); nothing is bought again"
        );
    }
    // The runtime lives until the end, export included, and with it the signal watcher: a
    // signal at any point from here on ends the process with 130/143.
    let rt = app::runtime()?;
    let engine = rt.block_on(network(settings, plan, ckpt, &rebuy))?;
    // One read of the states serves the exit code, the summary and what remains.
    let counts = checkpoint::state_counts(&ckpt.reader()?)?;
    let mut code = app::finish_code(&engine, &counts);
    let mut text = app::summary(&engine, &counts, started, settings.price.as_ref());
    if let Some(r) = engine.stop.reason() {
        text.push_str(&format!("\nvmr: {}", app::describe_stop(&r)));
    }
    if code != exit::OK {
        text.push_str(&what_remains(&counts));
    }
    if rebuy.any() {
        let due = checkpoint::rebuy_counts(&ckpt.reader()?, &rebuy)?.total();
        if due > 0 {
            text.push_str(&format!("\nvmr: {due} VINs due to be bought again (refresh or retry) were not: run again with the same option to buy them"));
        }
    }
    app::report(settings.log_format, &text);
    // Export what the checkpoint holds (also after a vendor refusal), unless a signal asked to
    // stop: the tables can be redone from the checkpoint by `vmr export` at any time.
    let signalled = || engine.stop.reason().is_some_and(|r| r.is_signal());
    if plan.export && !signalled() {
        let summary =
            crate::export::export_at(ckpt.place(), &ExportOptions::from_settings(settings))?;
        app::report(settings.log_format, &summary.render());
    }
    // A signal during the export (or the summary) still ends the run as a signal.
    if signalled() {
        code = engine.stop.reason().map_or(code, |r| exit::of_stop(&r));
    }
    drop(rt);
    Ok(code)
}

/// The network stages: submit and poll as the plan says, with the signal watcher running.
/// Returns the engine: its counters and stop reason.
async fn network(
    settings: &Settings,
    plan: &Plan,
    ckpt: &checkpoint::Checkpoint,
    rebuy: &checkpoint::Rebuy,
) -> Result<std::sync::Arc<engine::Engine>> {
    let (client, sandbox) = app::connect(settings).await?;
    let engine = app::engine(
        settings,
        plan.command,
        client,
        ckpt.clone(),
        plan.resubmit_uncertain,
    )?;
    {
        let stop = engine.stop.clone();
        tokio::spawn(async move { stop.watch_signals().await });
    }
    // Whatever ends the work (an error included), every write already queued lands first and
    // then the worker lets go of its claims: retiring before the writes land could turn a VIN
    // whose answer is on its way to the checkpoint into `uncertain`.
    let worked: Result<(), anyhow::Error> = async {
        if plan.submit {
            let again = checkpoint::rebuy_counts(&ckpt.reader()?, rebuy)?.total();
            let total = count_states(ckpt, plan.send_states())? + again;
            if again > 0 {
                tracing::info!(vins = again, "buying VINs again (refreshes and retries)");
            }
            let progress = std::sync::Arc::new(Progress::new("submit", total as u64));
            let ticker = show_pauses(&engine, &progress);
            engine::submit(engine.clone(), rebuy, &progress).await?;
            ticker.abort();
            progress.close();
        }
        if !engine.stop.is_set() && plan.poll != PollMode::Skip {
            let total = count_states(ckpt, &[State::Pending])?;
            let progress = std::sync::Arc::new(Progress::new("poll", total as u64));
            let ticker = show_pauses(&engine, &progress);
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
            ticker.abort();
            progress.close();
        }
        Ok(())
    }
    .await;
    let retired = engine.retire().await;
    worked?;
    retired?;
    drop(sandbox);
    Ok(engine)
}

/// Keeps the progress bar saying when every call waits for the vendor (`Retry-After`), twice a
/// second, until aborted.
fn show_pauses(
    engine: &std::sync::Arc<engine::Engine>,
    progress: &std::sync::Arc<Progress>,
) -> tokio::task::JoinHandle<()> {
    let (engine, progress) = (engine.clone(), progress.clone());
    tokio::spawn(async move {
        loop {
            progress.pause(engine.pause.remaining(tokio::time::Instant::now()));
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    })
}

/// One line per kind of work left, saying what the operator does about it.
fn what_remains(counts: &checkpoint::StateCounts) -> String {
    let mut text = String::new();
    let pending = counts.get(State::Pending);
    if pending > 0 {
        text.push_str(&format!("\nvmr: {pending} reports are bought but not fetched yet; run `vmr poll` (or `vmr run`) again later"));
    }
    let queued = counts.get(State::Queued);
    if queued > 0 {
        text.push_str(&format!(
            "\nvmr: {queued} VINs are still queued; run again to send them"
        ));
    }
    let uncertain = counts.get(State::Uncertain);
    if uncertain > 0 {
        text.push_str(&format!("\nvmr: {uncertain} VINs are uncertain: the vendor may have billed them (see `vmr status`); check the vendor's statement, then `vmr resolve` them or send them again with --resubmit-uncertain"));
    }
    text
}
