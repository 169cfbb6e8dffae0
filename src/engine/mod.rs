//! The network engine: rate-limited, concurrent generate and get calls, checkpointed.
//!
//! This is the part that spends the user's money, so its rules are few and strict: a VIN is
//! marked `submitting` durably before its generate leaves; every call's outcome is recorded as it
//! lands; a report and the VIN's move to `done` are one transaction; `get` is only ever called for
//! a `pending` VIN; and once a stop is set (vendor refusal, budget, signal) no further call
//! leaves. `submit` and `poll` here are what the `submit`, `poll` and `run` commands drive.

pub mod limiter;
pub mod progress;
pub mod retry;
pub mod stop;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::api::{Client, Delivery, Endpoint, Exchange, Outcome, now_ms};
use crate::checkpoint::{
    self, CallLog, Checkpoint, CheckpointError, PollTodo, ReportRow, State, SubmitTodo, Update,
};
pub use limiter::Limiter;
use progress::Progress;
pub use retry::RetryPolicy;
pub use stop::{Stop, StopReason};

/// How long in-flight calls may take to land after a stop before they are abandoned.
pub const GRACE: Duration = Duration::from_secs(5);

/// Engine options, from the resolved settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub concurrency: usize,
    pub retry: RetryPolicy,
    pub poll_interval: Duration,
    pub poll_timeout: Duration,
    pub max_billed: Option<u64>,
    pub resubmit_uncertain: bool,
}

/// Counters of one run.
#[derive(Debug, Default)]
pub struct RunCounters {
    pub calls: AtomicU64,
    pub billed: AtomicU64,
    pub unknown: AtomicU64,
    /// Billable calls in flight, reserved against `--max-billed`.
    in_flight: AtomicU64,
}

/// Everything the tasks of one run share.
pub struct Engine {
    pub client: Client,
    pub ckpt: Checkpoint,
    pub limiter: Limiter,
    pub opts: EngineOptions,
    pub stop: Arc<Stop>,
    pub counters: RunCounters,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

fn call_log(ex: &Exchange, request_id: Option<&str>) -> CallLog {
    let (delivery, error) = match &ex.outcome {
        Outcome::Transient {
            delivery, detail, ..
        } => (
            match delivery {
                Delivery::NotSent => "not_sent",
                Delivery::Unknown => "unknown",
                Delivery::Answered => "answered",
            },
            Some(detail.clone()),
        ),
        _ => ("answered", None),
    };
    CallLog {
        endpoint: ex.endpoint.as_str(),
        request_id: request_id.map(str::to_owned),
        http_status: ex.http_status,
        code: ex.answer.code,
        msg: ex.answer.msg.clone(),
        task_no: ex.answer.task_no.clone(),
        billed: ex.billed(),
        delivery,
        started_at: ex.started_at_ms,
        ended_at: ex.ended_at_ms,
        error,
    }
}

/// The code and message to keep as the VIN's last: the vendor's when it answered, else the
/// transport detail (with no code).
fn last_code_message(ex: &Exchange) -> (Option<i64>, Option<String>) {
    match &ex.outcome {
        Outcome::Transient { detail, code, .. } => (*code, Some(detail.clone())),
        _ => (ex.answer.code, ex.answer.msg.clone()),
    }
}

impl Engine {
    /// Reserves one billable call against the budget; `false` when the budget is spent.
    fn reserve(&self) -> bool {
        let Some(max) = self.opts.max_billed else {
            return true;
        };
        let used = self.counters.in_flight.fetch_add(1, Ordering::SeqCst)
            + self.counters.billed.load(Ordering::SeqCst);
        if used >= max {
            self.counters.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.stop.set(StopReason::Budget {
                billed: self.counters.billed.load(Ordering::SeqCst),
            });
            false
        } else {
            true
        }
    }

    fn settle(&self, ex: &Exchange, vin: &str) {
        tracing::debug!(
            vin,
            endpoint = ex.endpoint.as_str(),
            http_status = ex.http_status,
            code = ex.answer.code,
            msg = ex.answer.msg.as_deref(),
            billed = ex.billed(),
            elapsed_ms = ex.ended_at_ms - ex.started_at_ms,
            "call"
        );
        if let Outcome::Transient { detail, .. } = &ex.outcome {
            tracing::debug!(
                vin,
                endpoint = ex.endpoint.as_str(),
                detail = detail.as_str(),
                "transient fault, will retry"
            );
        }
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        if ex.billed() {
            self.counters.billed.fetch_add(1, Ordering::SeqCst);
        }
        if matches!(
            ex.outcome,
            Outcome::Transient {
                delivery: Delivery::Unknown,
                ..
            }
        ) {
            self.counters.unknown.fetch_add(1, Ordering::Relaxed);
        }
        self.unreserve();
        if let Outcome::Stop { code, message } = &ex.outcome {
            tracing::error!(
                code,
                message = message.as_str(),
                "the vendor refused the call; stopping the run"
            );
            self.stop.set(StopReason::Vendor {
                code: *code,
                message: message.clone(),
            });
        }
    }

    /// Waits for the limiter and the budget; `false` when the run is stopping.
    /// Reserves the call against the budget, then waits for the limiter; `false` (with nothing
    /// reserved) when the run is stopping. Called right before a request leaves, so the limiter
    /// paces the wire itself, not some earlier step.
    async fn may_send(&self) -> bool {
        if self.stop.is_set() || !self.reserve() {
            return false;
        }
        tokio::select! {
            _ = self.limiter.acquire() => {},
            _ = self.stop.wait() => {},
        }
        if self.stop.is_set() {
            self.unreserve();
            return false;
        }
        true
    }

    /// Waits `delay` before a retry, or less if the run is stopped meanwhile.
    async fn back_off(&self, delay: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {},
            _ = self.stop.wait() => {},
        }
    }

    fn unreserve(&self) {
        if self.opts.max_billed.is_some() {
            self.counters.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Generate for one VIN, with retries, recording every call. Returns the final state.
    async fn submit_one(&self, todo: SubmitTodo) -> Result<State, CheckpointError> {
        if self.stop.is_set() {
            return Ok(todo.state);
        }
        // Durable before the request leaves: a crash from here on leaves the VIN `submitting`,
        // which the next start turns into `uncertain`.
        self.ckpt
            .apply(Update {
                vin_id: todo.vin_id,
                to: Some(State::Submitting),
                ..Update::default()
            })
            .await?;
        let mut attempts = self.opts.retry.attempts();
        // A VIN resubmitted from `uncertain` may already have been billed by its lost call.
        let mut maybe_billed = todo.state == State::Uncertain;
        loop {
            if !self.may_send().await {
                // Stopped before this attempt left: back to the queue, or uncertain if an
                // earlier attempt may have been billed.
                let to = if maybe_billed {
                    State::Uncertain
                } else {
                    State::Queued
                };
                self.ckpt
                    .apply(Update {
                        vin_id: todo.vin_id,
                        to: Some(to),
                        ..Update::default()
                    })
                    .await?;
                return Ok(to);
            }
            attempts.start();
            let ex = self.client.generate(&todo.vin, &todo.license_img_url).await;
            self.settle(&ex, &todo.vin);
            let log = call_log(&ex, None);
            let (code, message) = last_code_message(&ex);
            let mut u = Update {
                vin_id: todo.vin_id,
                call: Some(log),
                code: Some(code),
                message,
                task_no: ex.billed().then(|| ex.answer.task_no.clone()).flatten(),
                ..Update::default()
            };
            let state = match &ex.outcome {
                Outcome::Report { request_id } => {
                    u.request_id = request_id.clone();
                    u.report = Some(ReportRow {
                        request_id: request_id.clone(),
                        task_no: ex.answer.task_no.clone(),
                        endpoint: Endpoint::Generate.as_str(),
                        fetched_at: ex.ended_at_ms,
                        body: ex.body.clone(),
                    });
                    State::Done
                }
                Outcome::Accepted { request_id } => {
                    u.request_id = Some(request_id.clone());
                    let iv = self.opts.poll_interval.as_millis() as i64;
                    u.next_poll_at = Some(Some(ex.ended_at_ms + iv));
                    u.poll_interval_ms = Some(iv);
                    State::Pending
                }
                Outcome::BilledUnusable { message } => {
                    u.message = Some(message.clone());
                    State::Failed
                }
                Outcome::Fail { .. } => State::Failed,
                Outcome::Stop { .. } if maybe_billed => State::Uncertain,
                Outcome::Stop { .. } => State::Queued,
                // A 701 without a requestId and transport faults are retried.
                Outcome::NotReady { .. } | Outcome::Transient { .. } => {
                    if matches!(
                        ex.outcome,
                        Outcome::Transient {
                            delivery: Delivery::Unknown,
                            ..
                        }
                    ) {
                        maybe_billed = true;
                    }
                    match attempts.next_delay() {
                        Some(delay) => {
                            self.ckpt.apply(u).await?;
                            self.back_off(delay).await;
                            continue;
                        }
                        None => State::Failed,
                    }
                }
            };
            u.to = Some(state);
            self.ckpt.apply(u).await?;
            return Ok(state);
        }
    }

    /// Get for one pending VIN, with retries, recording every call.
    async fn poll_one(&self, todo: PollTodo) -> Result<State, CheckpointError> {
        let now = now_ms();
        if now - todo.submitted_at > self.opts.poll_timeout.as_millis() as i64 {
            self.ckpt
                .apply(Update {
                    vin_id: todo.vin_id,
                    to: Some(State::Expired),
                    message: Some(format!(
                        "the report was not ready within the poll timeout ({})",
                        humantime::format_duration(self.opts.poll_timeout)
                    )),
                    next_poll_at: Some(None),
                    ..Update::default()
                })
                .await?;
            return Ok(State::Expired);
        }
        let base = self.opts.poll_interval.as_millis() as i64;
        let cap = base.saturating_mul(16);
        let mut attempts = self.opts.retry.attempts();
        loop {
            if !self.may_send().await {
                return Ok(State::Pending);
            }
            attempts.start();
            let ex = self.client.get(&todo.request_id).await;
            self.settle(&ex, &todo.vin);
            let (code, message) = last_code_message(&ex);
            let mut u = Update {
                vin_id: todo.vin_id,
                call: Some(call_log(&ex, Some(&todo.request_id))),
                code: Some(code),
                message,
                task_no: ex.billed().then(|| ex.answer.task_no.clone()).flatten(),
                ..Update::default()
            };
            let next_interval = todo
                .poll_interval_ms
                .unwrap_or(base)
                .saturating_mul(2)
                .clamp(base.max(1), cap.max(1));
            let state = match &ex.outcome {
                Outcome::Report { .. }
                | Outcome::Accepted { .. }
                | Outcome::BilledUnusable { .. } => {
                    // Every 200 from get carries the report (`data`); store the body whatever its
                    // shape, since it was paid for. Export reports a body it cannot read.
                    u.report = Some(ReportRow {
                        request_id: Some(todo.request_id.clone()),
                        task_no: ex.answer.task_no.clone(),
                        endpoint: Endpoint::Get.as_str(),
                        fetched_at: ex.ended_at_ms,
                        body: ex.body.clone(),
                    });
                    u.next_poll_at = Some(None);
                    State::Done
                }
                Outcome::NotReady { .. } => {
                    u.next_poll_at = Some(Some(ex.ended_at_ms + next_interval));
                    u.poll_interval_ms = Some(next_interval);
                    State::Pending
                }
                Outcome::Fail { .. } => {
                    u.next_poll_at = Some(None);
                    State::Failed
                }
                Outcome::Stop { .. } => State::Pending,
                Outcome::Transient { .. } => match attempts.next_delay() {
                    Some(delay) => {
                        self.ckpt.apply(u).await?;
                        self.back_off(delay).await;
                        continue;
                    }
                    None => {
                        // The report is paid for (generate was billed): keep it pending and try
                        // again at the next poll rather than lose it; the poll timeout still
                        // bounds how long.
                        u.next_poll_at = Some(Some(now_ms() + next_interval));
                        u.poll_interval_ms = Some(next_interval);
                        State::Pending
                    }
                },
            };
            if state != State::Pending {
                u.to = Some(state);
            }
            self.ckpt.apply(u).await?;
            return Ok(state);
        }
    }
}

/// What one submit or poll pass did.
#[derive(Debug, Default, Clone)]
pub struct PassReport {
    pub attempted: u64,
    pub by_state: std::collections::BTreeMap<State, u64>,
}

impl PassReport {
    fn count(&mut self, s: State) {
        self.attempted += 1;
        *self.by_state.entry(s).or_default() += 1;
    }
}

/// Waits for the running tasks; after a stop, gives them [`GRACE`] to land, then abandons the
/// rest (a generate abandoned in flight stays `submitting` and becomes `uncertain` on restart).
async fn drain(
    set: &mut JoinSet<Result<State, CheckpointError>>,
    stop: &Stop,
    report: &mut PassReport,
    progress: &Progress,
) -> Result<(), CheckpointError> {
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        if deadline.is_none() && stop.is_set() {
            deadline = Some(tokio::time::Instant::now() + GRACE);
        }
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, set.join_next()).await {
                Ok(n) => n,
                Err(_) => {
                    set.abort_all();
                    while set.join_next().await.is_some() {}
                    return Ok(());
                }
            },
            None => {
                tokio::select! {
                    n = set.join_next() => n,
                    _ = stop.wait() => continue,
                }
            }
        };
        match next {
            None => return Ok(()),
            Some(Ok(Ok(state))) => {
                report.count(state);
                progress.finished(state);
            }
            Some(Ok(Err(e))) => return Err(e),
            Some(Err(e)) if e.is_cancelled() => {}
            Some(Err(e)) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// Takes finished tasks off the set without waiting.
fn reap(
    set: &mut JoinSet<Result<State, CheckpointError>>,
    report: &mut PassReport,
    progress: &Progress,
) -> Result<(), CheckpointError> {
    while let Some(r) = set.try_join_next() {
        match r {
            Ok(Ok(state)) => {
                report.count(state);
                progress.finished(state);
            }
            Ok(Err(e)) => return Err(e),
            Err(e) if e.is_cancelled() => {}
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    Ok(())
}

const PAGE: usize = 1000;

/// One unit of network work for one VIN.
enum Task {
    Submit(SubmitTodo),
    Poll(PollTodo),
}

impl Task {
    fn vin_id(&self) -> i64 {
        match self {
            Task::Submit(t) => t.vin_id,
            Task::Poll(t) => t.vin_id,
        }
    }

    async fn run(self, engine: Arc<Engine>) -> Result<State, CheckpointError> {
        match self {
            Task::Submit(t) => engine.submit_one(t).await,
            Task::Poll(t) => engine.poll_one(t).await,
        }
    }
}

/// Runs the tasks that `page(after_id)` hands out, page by page in id order, `concurrency` at a
/// time, until the pages run out or the run is stopped; then lets the running ones land.
async fn run_paged(
    engine: &Arc<Engine>,
    progress: &Progress,
    mut page: impl FnMut(i64) -> Result<Vec<Task>, CheckpointError>,
) -> Result<PassReport, EngineError> {
    let sem = Arc::new(Semaphore::new(engine.opts.concurrency));
    let mut set = JoinSet::new();
    let mut report = PassReport::default();
    let mut after = 0i64;
    'pages: loop {
        let tasks = page(after)?;
        let Some(last) = tasks.last() else { break };
        after = last.vin_id();
        for task in tasks {
            let permit = tokio::select! {
                p = sem.clone().acquire_owned() => p.expect("semaphore never closed"),
                _ = engine.stop.wait() => break 'pages,
            };
            if engine.stop.is_set() {
                break 'pages;
            }
            let e = engine.clone();
            set.spawn(async move {
                let _permit = permit;
                task.run(e).await
            });
            reap(&mut set, &mut report, progress)?;
        }
    }
    drain(&mut set, &engine.stop, &mut report, progress).await?;
    Ok(report)
}

/// Calls generate for every queued VIN (and uncertain ones when asked), `concurrency` at a time.
pub async fn submit(engine: Arc<Engine>, progress: &Progress) -> Result<PassReport, EngineError> {
    let reader = engine.ckpt.reader()?;
    let mut states = vec![State::Queued];
    if engine.opts.resubmit_uncertain {
        states.push(State::Uncertain);
    }
    run_paged(&engine, progress, |after| {
        Ok(checkpoint::submit_page(&reader, &states, after, PAGE)?
            .into_iter()
            .map(Task::Submit)
            .collect())
    })
    .await
}

/// One pass over the pending VINs that are due now.
pub async fn poll_due(engine: Arc<Engine>, progress: &Progress) -> Result<PassReport, EngineError> {
    let reader = engine.ckpt.reader()?;
    let now = now_ms();
    run_paged(&engine, progress, |after| {
        Ok(checkpoint::due_polls(&reader, now, after, PAGE)?
            .into_iter()
            .map(Task::Poll)
            .collect())
    })
    .await
}

/// Polls until nothing is pending, the deadline passes, or the run is stopped.
pub async fn poll_until(
    engine: Arc<Engine>,
    deadline: tokio::time::Instant,
    progress: &Progress,
) -> Result<PassReport, EngineError> {
    let mut total = PassReport::default();
    loop {
        let pass = poll_due(engine.clone(), progress).await?;
        total.attempted += pass.attempted;
        for (s, n) in pass.by_state {
            *total.by_state.entry(s).or_default() += n;
        }
        if engine.stop.is_set() {
            break;
        }
        let reader = engine.ckpt.reader()?;
        let Some(next) = checkpoint::next_poll_due(&reader)? else {
            break;
        };
        let wait = Duration::from_millis((next - now_ms()).max(0) as u64);
        let wake = tokio::time::Instant::now() + wait;
        if wake > deadline {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {},
            _ = engine.stop.wait() => break,
        }
    }
    Ok(total)
}
