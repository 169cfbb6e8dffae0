//! The network engine: rate-limited, concurrent generate and get calls, checkpointed.
//!
//! This is the part that spends the user's money, so its rules are few and strict: a VIN is
//! marked `submitting` durably before its generate leaves; every call's outcome is recorded as it
//! lands; a report and the VIN's move to `done` are one transaction; `get` is only ever called for
//! a `pending` VIN; and once a stop is set (vendor refusal, budget, signal) no further call
//! leaves. `submit` and `poll` here are what the `submit`, `poll` and `run` commands drive.

pub(crate) mod limiter;
pub(crate) mod pause;
pub(crate) mod progress;
pub(crate) mod retry;
pub(crate) mod stop;
pub(crate) mod streak;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::api::{Client, Delivery, Endpoint, Exchange, Outcome, now_ms};
use crate::checkpoint::state::{BILLED_UNUSABLE, Failure};
use crate::checkpoint::{
    self, CallLog, Checkpoint, CheckpointError, Lease, PollTodo, ReportRow, State, SubmitTodo,
    Update,
};
pub(crate) use limiter::Limiter;
use pause::{Asked, Pause};
use progress::Progress;
pub(crate) use retry::RetryPolicy;
pub(crate) use stop::{Stop, StopReason};
use streak::{Streaks, Verdict};

/// How long in-flight calls may take to land after a signal before they are abandoned.
pub(crate) const GRACE: Duration = Duration::from_secs(5);

/// Calls in a row without a usable answer after which the vendor is taken to be unavailable.
pub(crate) const UNAVAILABLE_AFTER: u32 = 20;

/// Engine options, from the resolved settings.
#[derive(Debug, Clone)]
pub(crate) struct EngineOptions {
    pub concurrency: usize,
    pub retry: RetryPolicy,
    pub poll_interval: Duration,
    pub poll_timeout: Duration,
    /// The most calls billed (or possibly billed) in the run: `--max-billed`, or the calls
    /// `--max-spend` pays for, whichever is smaller.
    pub max_billed: Option<u64>,
    /// How that budget is named in messages.
    pub budget_name: String,
    pub resubmit_uncertain: bool,
    /// 400s in a row that stop the run as a credentials problem.
    pub bad_request_streak: u32,
    /// The per-call timeout: how long a stop for budget or vendor reasons waits for calls in
    /// flight (their answers may be paid for).
    pub timeout: Duration,
    /// `--max-wait`: the longest the vendor may hold the account back with `Retry-After`.
    pub max_wait: Duration,
}

/// Counters of one run.
#[derive(Debug, Default)]
pub(crate) struct RunCounters {
    pub calls: AtomicU64,
    pub billed: AtomicU64,
    pub unknown: AtomicU64,
    /// Billable calls in flight, reserved against `--max-billed`.
    in_flight: AtomicU64,
    /// Pending VINs, each holding one get reserved against `--max-billed`.
    pending: AtomicI64,
    /// `--max-billed` admits no further generate (gets of pending VINs still go).
    pub generate_budget_spent: AtomicBool,
    /// Calls that could not leave because this worker's lease no longer outlasts a call.
    lease_refused: AtomicU64,
}

/// Everything the tasks of one run share.
pub(crate) struct Engine {
    pub client: Client,
    pub ckpt: Checkpoint,
    pub limiter: Limiter,
    pub opts: EngineOptions,
    pub stop: Arc<Stop>,
    pub counters: RunCounters,
    /// The account's pause (`Retry-After`), which every call waits for.
    pub pause: Pause,
    streaks: Streaks,
    /// The budget is shared with the other workers of the same `--run-id`.
    shared: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum EngineError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

fn call_log(ex: &Exchange, request_id: Option<&str>) -> CallLog {
    let error = match &ex.outcome {
        Outcome::Transient { detail, .. } if !ex.billed() => Some(detail.clone()),
        _ => None,
    };
    CallLog {
        uid: Some(checkpoint::new_call_uid()),
        endpoint: ex.endpoint,
        request_id: request_id.map(str::to_owned),
        http_status: ex.http_status,
        code: ex.answer.code,
        msg: ex.answer.msg.clone(),
        task_no: ex.answer.task_no.clone(),
        class: ex.delivery(),
        started_at: ex.started_at_ms,
        ended_at: ex.ended_at_ms,
        error,
        // Every billed answer is kept byte for byte: a report goes to the reports table, any
        // other (a requestId to poll, or nothing usable) here, and so does every 2xx answer
        // cut short, which may have been a billed report.
        body: ex.keeps_body().then(|| ex.body.clone()),
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

/// One debug line per call (never the sign or the secret, which stay in the request).
fn log_call(ex: &Exchange, vin: &str) {
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
            "no usable answer"
        );
    }
}

/// The checkpoint update every landed call starts from: the call log row, the VIN's last code
/// and message, and the taskNo of a billed answer.
fn call_update(vin_id: i64, ex: &Exchange, request_id: Option<&str>) -> Update {
    let (code, mut message) = last_code_message(ex);
    // A body read leniently says so in the VIN's message (the raw bytes stay as they came).
    if let Some(note) = &ex.answer.repaired {
        message = Some(match message {
            Some(m) if !m.is_empty() => format!("{m} ({note})"),
            _ => note.clone(),
        });
    }
    Update {
        vin_id,
        call: Some(call_log(ex, request_id)),
        code: Some(code),
        message,
        task_no: ex.billed().then(|| ex.answer.task_no.clone()).flatten(),
        ..Update::default()
    }
}

/// The report a billed answer carries, as the checkpoint stores it (byte for byte).
fn report_row(ex: &Exchange, request_id: Option<String>) -> ReportRow {
    ReportRow {
        request_id,
        task_no: ex.answer.task_no.clone(),
        endpoint: ex.endpoint,
        fetched_at: ex.ended_at_ms,
        body: ex.body.clone(),
    }
}

/// The wait before a retry: the backoff's, or longer when the server asked for it.
fn retry_wait(backoff: Duration, outcome: &Outcome) -> Duration {
    match outcome {
        Outcome::Transient {
            retry_after: Some(ra),
            ..
        } => backoff.max(*ra),
        _ => backoff,
    }
}

impl Engine {
    pub(crate) fn new(
        client: Client,
        ckpt: Checkpoint,
        limiter: Limiter,
        opts: EngineOptions,
    ) -> Result<Engine, CheckpointError> {
        let pending = checkpoint::state_counts(&ckpt.reader()?)?.get(State::Pending);
        let counters = RunCounters::default();
        counters.pending.store(pending, Ordering::SeqCst);
        let mut engine = Engine {
            client,
            ckpt,
            limiter,
            streaks: Streaks::new(opts.bad_request_streak, UNAVAILABLE_AFTER),
            pause: Pause::new(opts.max_wait),
            opts,
            stop: Arc::new(Stop::default()),
            counters,
            shared: false,
        };
        engine.shared = engine.shared_budget();
        Ok(engine)
    }

    /// How this process shares the checkpoint and the account.
    fn sharing(&self) -> &checkpoint::Sharing {
        self.ckpt.sharing()
    }

    /// What to add to this machine's clock to read the checkpoint's: deadlines and due times
    /// are kept on the database's clock when workers share it (docs/postgres.md).
    fn clock_offset(&self) -> i64 {
        self.sharing().clock_offset_ms()
    }

    /// Now, on the checkpoint's clock, in ms since the epoch.
    fn now(&self) -> i64 {
        now_ms() + self.clock_offset()
    }

    /// Whether the budget is shared with other workers (`--run-id`).
    fn shared_budget(&self) -> bool {
        self.opts.max_billed.is_some() && self.sharing().shares_budget()
    }

    /// Reserves one billable call against `--max-billed`; `false` when it is not admitted.
    ///
    /// Calls that may already be billed (billed, unknown outcome, in flight) all count, so the
    /// budget is never exceeded. A generate must also leave one get for every pending VIN, so
    /// the reports already paid for can always be fetched. Workers sharing a `--run-id` count
    /// all their calls in one row of the database.
    fn reserve(&self, endpoint: Endpoint) -> bool {
        let Some(max) = self.opts.max_billed else {
            return true;
        };
        let c = &self.counters;
        let in_flight = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let pending = c.pending.load(Ordering::SeqCst).max(0) as u64;
        let admitted = if self.shared {
            self.reserve_shared(endpoint, pending)
        } else {
            let mut used =
                c.billed.load(Ordering::SeqCst) + c.unknown.load(Ordering::SeqCst) + in_flight;
            if endpoint == Endpoint::Generate {
                used += pending;
            }
            Some(used <= max)
        };
        if admitted == Some(true) {
            return true;
        }
        c.in_flight.fetch_sub(1, Ordering::SeqCst);
        if admitted.is_none() {
            // The shared budget could not be read: not "the budget is reached".
            return false;
        }
        match endpoint {
            Endpoint::Generate => c.generate_budget_spent.store(true, Ordering::SeqCst),
            Endpoint::Get => self.stop.set(StopReason::Budget {
                billed: c.billed.load(Ordering::SeqCst),
            }),
        }
        false
    }

    /// The shared budget's verdict on one more call (a generate keeps a get aside for every
    /// pending VIN, as this worker or the last heartbeat counted them); `None` when the database
    /// could not be asked (the call is not sent either).
    fn reserve_shared(&self, endpoint: Endpoint, pending: u64) -> Option<bool> {
        match self
            .sharing()
            .reserve(endpoint == Endpoint::Generate, pending)
        {
            Ok(admitted) => Some(admitted),
            Err(e) => {
                // Not "the budget is reached": the call is not sent, and the VIN waits for a
                // run that can reach the database.
                tracing::error!(error = %e, "cannot reach the shared budget in the database; the call is not sent");
                None
            }
        }
    }

    /// Gives back a reservation. `charged`: the call was billed or may have been, so it stays
    /// counted (the local count moves to `billed` or `unknown`; the shared one keeps it).
    fn unreserve(&self, charged: bool) {
        if self.opts.max_billed.is_some() {
            self.counters.in_flight.fetch_sub(1, Ordering::SeqCst);
            if self.shared
                && !charged
                && let Err(e) = self.sharing().unreserve()
            {
                tracing::warn!(error = %e, "cannot give back a reservation of the shared budget");
            }
        }
    }

    /// Whether no further generate may be sent in this run.
    fn submit_halted(&self) -> bool {
        self.stop.is_set() || self.counters.generate_budget_spent.load(Ordering::SeqCst)
    }

    /// Counts one landed call, feeds the streaks and sets any stop it calls for. Returns the
    /// parked VINs a real answer has just shown to be failed by their own 400.
    fn settle(&self, ex: &Exchange, vin: &str) -> Vec<i64> {
        log_call(ex, vin);
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        if ex.billed() {
            self.counters.billed.fetch_add(1, Ordering::SeqCst);
        }
        if ex.outcome.is_unknown() {
            self.counters.unknown.fetch_add(1, Ordering::SeqCst);
        }
        self.unreserve(ex.billed() || ex.outcome.is_unknown());
        if self.obey_pause(&ex.outcome) {
            // A wait the vendor asked for is not an outage: no streak counts it.
            return Vec::new();
        }
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
        self.act_on(self.streaks.observe(&ex.outcome, ex.answer.code), ex)
    }

    /// Takes what an answer says about the account's pace: a wait asked with `Retry-After`
    /// pauses every call (and stops the run when longer than `--max-wait`), a gateway's refusal
    /// without it pauses briefly, a usable answer ends the count. `true` when the answer was a
    /// wait that fits, which the streaks do not count.
    fn obey_pause(&self, outcome: &Outcome) -> bool {
        let now = tokio::time::Instant::now();
        if let Some(wait) = outcome.asked_wait() {
            match self.pause.asked(wait, now) {
                Asked::Paused => {
                    self.limiter.pause(wait);
                    return true;
                }
                Asked::TooLong(wait) => {
                    tracing::error!(
                        wait = %humantime::format_duration(wait),
                        max_wait = %humantime::format_duration(self.opts.max_wait),
                        "the vendor asked to wait longer than --max-wait; stopping the run"
                    );
                    self.stop.set(StopReason::Throttled {
                        wait,
                        max_wait: self.opts.max_wait,
                    });
                }
            }
        } else if outcome.refused_unasked() {
            self.pause.unasked(now);
        } else if !outcome.is_transient() {
            self.pause.answered();
        }
        false
    }

    /// Carries out what the streaks concluded from a call: a stop, or VINs to fail.
    fn act_on(&self, verdict: Verdict, ex: &Exchange) -> Vec<i64> {
        match verdict {
            Verdict::Carry => Vec::new(),
            Verdict::FailParked(vins) => vins,
            Verdict::BadCredentials { streak } => {
                let message = ex.answer.msg.clone().unwrap_or_default();
                tracing::error!(
                    streak,
                    message = message.as_str(),
                    "a run of 400s: the sign, the app secret or the clock is wrong; stopping the run"
                );
                self.stop
                    .set(StopReason::BadCredentials { streak, message });
                Vec::new()
            }
            Verdict::Unavailable { streak } => {
                let last = match &ex.outcome {
                    Outcome::Transient { detail, .. } => detail.clone(),
                    _ => String::new(),
                };
                tracing::error!(
                    streak,
                    last = last.as_str(),
                    "the vendor is unavailable; stopping the run"
                );
                self.stop.set(StopReason::Unavailable { streak, last });
                Vec::new()
            }
        }
    }

    /// Takes a landed call into the run's counters and streaks (see [`Engine::settle`]), and
    /// fails the VINs whose lone 400 it has just shown to be their own.
    async fn land(&self, ex: &Exchange, vin: &str) -> Result<(), CheckpointError> {
        for vin_id in self.settle(ex, vin) {
            // A parked VIN is held by no task of this worker; another worker may hold it now.
            match self
                .ckpt
                .apply_unheld(Update {
                    vin_id,
                    to: Some(State::Failed),
                    // Another worker may have bought it meanwhile: fail it only if still queued.
                    expect: Some(State::Queued),
                    ..Update::default()
                })
                .await
            {
                Ok(()) | Err(CheckpointError::Fenced(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reserves the call against the budget, then waits for the limiter; `false` (with nothing
    /// reserved) when the call may not go. Called right before a request leaves, so the limiter
    /// paces the wire itself, not some earlier step.
    async fn may_send(&self, endpoint: Endpoint, vin_id: i64) -> bool {
        let halted = match endpoint {
            Endpoint::Generate => self.submit_halted(),
            Endpoint::Get => self.stop.is_set(),
        };
        if halted || !self.lease_holds(vin_id) || !self.reserve(endpoint) {
            return false;
        }
        // The account's pause first (a wait the vendor asked for), then a token, then the pause
        // again in case it began while this call waited for its token.
        tokio::select! {
            _ = async {
                self.pause.wait().await;
                self.limiter.acquire().await;
                self.pause.wait().await;
            } => {},
            _ = self.stop.wait() => {},
        }
        if self.stop.is_set() || !self.lease_holds(vin_id) {
            self.unreserve(false);
            return false;
        }
        true
    }

    /// Whether this worker's claim on `vin_id` holds and outlasts a call sent now (always,
    /// outside PostgreSQL).
    fn lease_holds(&self, vin_id: i64) -> bool {
        match self.sharing().lease(vin_id) {
            Lease::Holds => true,
            Lease::WorkerLost => {
                if self.counters.lease_refused.fetch_add(1, Ordering::SeqCst) == 0 {
                    tracing::error!(
                        "this worker cannot renew its claims in time (the database is out of reach, or it was taken for dead): it sends nothing more"
                    );
                }
                false
            }
            // Its claim on this VIN lapsed (the worker was paused): another may hold it now.
            Lease::VinLost => false,
        }
    }

    /// Records the VINs a page has just claimed for this worker (workers only).
    fn hold(&self, vin_ids: impl IntoIterator<Item = i64>) {
        self.sharing().hold(vin_ids);
    }

    /// This worker's claim for the pages it takes, if it is one.
    fn claim(&self) -> Option<checkpoint::Claim> {
        self.sharing().claim()
    }

    /// VINs taken per page: a worker sharing the checkpoint claims only what it can start soon,
    /// so the others find work too.
    fn page_size(&self) -> usize {
        match self.claim() {
            Some(_) => self.opts.concurrency.max(1),
            None => PAGE,
        }
    }

    /// Lets go of a VIN whose task has ended (workers only).
    fn release(&self, vin_id: i64) {
        if let Err(e) = self.sharing().release(vin_id) {
            tracing::warn!(error = %e, "cannot release a claim; it lapses with the lease");
        }
    }

    /// Ends this process's work on the checkpoint: every write durable, then (a worker) its
    /// claims settled and its row removed.
    pub(crate) async fn retire(&self) -> Result<(), CheckpointError> {
        self.ckpt.flush().await?;
        let sharing = self.sharing().clone();
        tokio::task::spawn_blocking(move || sharing.retire())
            .await
            .map_err(|e| CheckpointError::Commit(e.to_string()))?
    }

    /// Records a call that will be retried, then waits before the retry: the backoff, or the
    /// server's `Retry-After` when longer.
    async fn record_and_wait(
        &self,
        u: Update,
        backoff: Duration,
        outcome: &Outcome,
    ) -> Result<(), CheckpointError> {
        self.ckpt.apply(u).await?;
        self.back_off(retry_wait(backoff, outcome)).await;
        Ok(())
    }

    /// Whether this answer was a wait the vendor asked for that the run is obeying (not one
    /// that stopped it).
    fn asked_to_wait(&self, ex: &Exchange) -> bool {
        ex.outcome.asked_wait().is_some() && !self.stop.is_set()
    }

    /// Waits `delay` before a retry, or less if the run is stopped meanwhile.
    async fn back_off(&self, delay: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {},
            _ = self.stop.wait() => {},
        }
    }

    /// Where a generate's answer takes its VIN (filling in `u`), or `None` when it is to be
    /// retried. `unsold` is where a VIN goes when nothing was bought.
    fn after_generate(&self, ex: &Exchange, u: &mut Update, unsold: State) -> Option<State> {
        Some(match &ex.outcome {
            Outcome::Report { request_id } => {
                u.request_id = request_id.clone();
                u.report = Some(report_row(ex, request_id.clone()));
                State::Done
            }
            Outcome::Accepted { request_id } => {
                u.request_id = Some(request_id.clone());
                let accepted = ex.ended_at_ms + self.clock_offset();
                u.accepted_at = Some(accepted);
                let iv = self.opts.poll_interval.as_millis() as i64;
                u.next_poll_at = Some(Some(accepted + iv));
                u.poll_interval_ms = Some(iv);
                self.counters.pending.fetch_add(1, Ordering::SeqCst);
                State::Pending
            }
            Outcome::BilledUnusable { message } => {
                u.message = Some(format!("{BILLED_UNUSABLE}: {message}"));
                u.failure = Some(Failure::BilledUnusable);
                State::Failed
            }
            Outcome::Fail { .. } => State::Failed,
            Outcome::Transient {
                delivery: Delivery::Unknown,
                detail,
                ..
            } => {
                u.message = Some(format!(
                    "no answer to a generate the vendor may have billed ({detail}); not sent again unless you say so (--resubmit-uncertain or `vmr resolve`)"
                ));
                State::Uncertain
            }
            Outcome::BadRequest { .. } | Outcome::Stop { .. } => unsold,
            Outcome::NotReady { .. } | Outcome::Transient { .. } => return None,
        })
    }

    /// Generate for one VIN, recording every call. Returns the VIN's state after it.
    ///
    /// The money rules (docs/design.md, "Money rules"): an answer that is not sent or
    /// not billed is retried; retries used up send the VIN back to the queue. An unknown answer
    /// is never resent: the VIN becomes `uncertain` at once. A billed answer is kept whatever
    /// its shape.
    async fn submit_one(&self, todo: SubmitTodo) -> Result<(State, State), CheckpointError> {
        if self.submit_halted() {
            return Ok((todo.state, todo.state));
        }
        // A VIN bought again (refresh, retry) starts a new purchase at `queued`.
        let rebuy = todo.state.can_rebuy();
        let from = if rebuy { State::Queued } else { todo.state };
        // Where the VIN goes when this attempt ends without a purchase: a VIN resubmitted from
        // `uncertain` may still have been billed by its lost call, so it stays uncertain.
        let unsold = if todo.state == State::Uncertain {
            State::Uncertain
        } else {
            State::Queued
        };
        // Durable before the request leaves: a crash from here on leaves the VIN `submitting`,
        // which the next start turns into `uncertain`. For a VIN bought again, the new purchase
        // starts in the same transaction (the ended one is kept with its reports).
        self.ckpt
            .apply(Update {
                vin_id: todo.vin_id,
                to: Some(State::Submitting),
                rebuy,
                ..Update::default()
            })
            .await?;
        // A purchase bought again that ends without anything billed (nothing sent, a stop, the
        // budget, retries used up, a 400) is undone: the VIN is back at its previous purchase,
        // and only an option given again buys it (docs/design.md, "Purchases and versions").
        let undo = |mut u: Update| {
            u.to = None;
            u.undo_rebuy = true;
            u
        };
        let mut attempts = self.opts.retry.attempts();
        loop {
            if !self.may_send(Endpoint::Generate, todo.vin_id).await {
                let u = Update {
                    vin_id: todo.vin_id,
                    to: Some(unsold),
                    ..Update::default()
                };
                if rebuy {
                    self.ckpt.apply(undo(u)).await?;
                    return Ok((todo.state, todo.state));
                }
                self.ckpt.apply(u).await?;
                return Ok((from, unsold));
            }
            attempts.start();
            let ex = self.client.generate(&todo.vin, &todo.license_img_url).await;
            self.land(&ex, &todo.vin).await?;
            let mut u = call_update(todo.vin_id, &ex, None);
            let state = match self.after_generate(&ex, &mut u, unsold) {
                Some(state) => state,
                // A wait the vendor asked for: sent again once the account's pause is over,
                // without using up an attempt.
                None if self.asked_to_wait(&ex) => {
                    self.ckpt.apply(u).await?;
                    continue;
                }
                // Not sent, not billed, or a 701 without a requestId: retried.
                None => match attempts.next_delay() {
                    Some(delay) => {
                        self.record_and_wait(u, delay, &ex.outcome).await?;
                        continue;
                    }
                    None => unsold,
                },
            };
            if rebuy && state == unsold {
                self.ckpt.apply(undo(u)).await?;
                return Ok((todo.state, todo.state));
            }
            u.to = Some(state);
            self.ckpt.apply(u).await?;
            if matches!(ex.outcome, Outcome::BadRequest { .. }) && unsold == State::Queued {
                self.streaks.park(todo.vin_id);
            }
            return Ok((from, state));
        }
    }

    /// Where a get's answer takes its pending VIN (filling in `u`), or `None` when it is to be
    /// retried. `deadline` is when the poll timeout runs out for this VIN.
    fn after_get(
        &self,
        ex: &Exchange,
        u: &mut Update,
        todo: &PollTodo,
        deadline: i64,
    ) -> Option<State> {
        let state = match &ex.outcome {
            Outcome::Report { .. } | Outcome::Accepted { .. } => {
                u.report = Some(report_row(ex, Some(todo.request_id.clone())));
                State::Done
            }
            // Billed without a report: asked once more (the second unusable answer for the
            // requestId fails the VIN, see `poll_one`).
            Outcome::BilledUnusable { .. } => return None,
            Outcome::NotReady { .. } if ex.started_at_ms + self.clock_offset() > deadline => {
                u.message = Some(format!(
                    "the report was still not ready {} after it was bought (--poll-timeout)",
                    humantime::format_duration(self.opts.poll_timeout)
                ));
                State::Expired
            }
            Outcome::Fail { code: 702, .. } => State::Failed,
            // 701 before the deadline, 400, 999, any other code, a refusal: the report is paid
            // for, so the VIN stays pending and is asked again later.
            Outcome::NotReady { .. }
            | Outcome::Fail { .. }
            | Outcome::BadRequest { .. }
            | Outcome::Stop { .. } => State::Pending,
            Outcome::Transient { .. } => return None,
        };
        if state != State::Pending {
            u.next_poll_at = Some(None);
        }
        Some(state)
    }

    /// For a get answer that was billed (or may have been) without a usable report, when an
    /// earlier one for the same requestId is already in the call log (this run or any before):
    /// the `billed_unusable` message that fails the VIN. `None` for any other answer, and for
    /// the first such one, which is asked again.
    async fn second_unusable(
        &self,
        ex: &Exchange,
        todo: &PollTodo,
    ) -> Result<Option<String>, CheckpointError> {
        let what = match &ex.outcome {
            Outcome::BilledUnusable { message } => message.clone(),
            Outcome::Transient { detail, .. } if ex.cut_short => detail.clone(),
            _ => return Ok(None),
        };
        let earlier =
            checkpoint::unusable_gets(&self.ckpt.reader()?, todo.vin_id, &todo.request_id)?;
        if earlier == 0 {
            tracing::warn!(
                vin = todo.vin.as_str(),
                detail = what.as_str(),
                "a get answer that may be billed held no usable report; asking once more"
            );
            return Ok(None);
        }
        Ok(Some(format!(
            "{BILLED_UNUSABLE}: {what} (the second answer for requestId {} without a usable report: not bought a third time)",
            todo.request_id
        )))
    }

    /// Get for one pending VIN, recording every call. The report is paid for, so nothing but the
    /// vendor's 702 (or a billed answer without a report) ends it badly; a VIN expires only when
    /// a get sent after its deadline still answers 701.
    async fn poll_one(&self, todo: PollTodo) -> Result<State, CheckpointError> {
        let base = self.opts.poll_interval.as_millis() as i64;
        let cap = base.saturating_mul(16);
        let deadline = todo
            .accepted_at
            .saturating_add(self.opts.poll_timeout.as_millis() as i64);
        let next_interval = todo
            .poll_interval_ms
            .unwrap_or(base)
            .saturating_mul(2)
            .clamp(base.max(1), cap.max(1));
        let mut attempts = self.opts.retry.attempts();
        loop {
            if !self.may_send(Endpoint::Get, todo.vin_id).await {
                return Ok(State::Pending);
            }
            attempts.start();
            let ex = self.client.get(&todo.request_id).await;
            self.land(&ex, &todo.vin).await?;
            let mut u = call_update(todo.vin_id, &ex, Some(&todo.request_id));
            if let Some(why) = self.second_unusable(&ex, &todo).await? {
                // Never a third charge for a report that does not come (docs/design.md, "Money
                // rules").
                u.message = Some(why);
                u.failure = Some(Failure::BilledUnusable);
                u.next_poll_at = Some(None);
                u.to = Some(State::Failed);
                self.counters.pending.fetch_sub(1, Ordering::SeqCst);
                self.ckpt.apply(u).await?;
                return Ok(State::Failed);
            }
            let later = |u: &mut Update| {
                u.next_poll_at = Some(Some(self.now() + next_interval));
                u.poll_interval_ms = Some(next_interval);
                State::Pending
            };
            let state = match self.after_get(&ex, &mut u, &todo, deadline) {
                Some(State::Pending) => later(&mut u),
                Some(state) => state,
                None if self.asked_to_wait(&ex) => {
                    self.ckpt.apply(u).await?;
                    continue;
                }
                // No usable answer (an unknown one costs at most one more get): retried, then
                // asked again at a later poll.
                None => match attempts.next_delay() {
                    Some(delay) => {
                        self.record_and_wait(u, delay, &ex.outcome).await?;
                        continue;
                    }
                    None => later(&mut u),
                },
            };
            if state != State::Pending {
                u.to = Some(state);
                self.counters.pending.fetch_sub(1, Ordering::SeqCst);
            }
            self.ckpt.apply(u).await?;
            return Ok(state);
        }
    }
}

/// What one submit or poll pass did.
#[derive(Debug, Default, Clone)]
pub(crate) struct PassReport {
    pub attempted: u64,
    pub by_state: std::collections::BTreeMap<State, u64>,
}

impl PassReport {
    fn count(&mut self, s: State) {
        self.attempted += 1;
        *self.by_state.entry(s).or_default() += 1;
    }
}

/// Waits for the running tasks. After a stop for budget or vendor reasons, calls in flight get
/// the whole call timeout to land (their answers may be paid for); after a signal only
/// [`GRACE`]. Then the rest are abandoned (a generate abandoned in flight stays `submitting` and
/// becomes `uncertain` on restart).
async fn drain(
    set: &mut JoinSet<Result<(State, State), CheckpointError>>,
    stop: &Stop,
    timeout: Duration,
    report: &mut PassReport,
    progress: &Progress,
) -> Result<(), CheckpointError> {
    let mut stopped_at: Option<tokio::time::Instant> = None;
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        if let Some(reason) = stop.reason() {
            let at = *stopped_at.get_or_insert_with(tokio::time::Instant::now);
            let grace = if reason.is_signal() {
                GRACE
            } else {
                timeout + GRACE
            };
            deadline = Some(at + grace);
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
            Some(Ok(Ok((from, state)))) => {
                report.count(state);
                progress.finished(from, state);
            }
            // Another worker holds the VIN now: the answer is in the call log.
            Some(Ok(Err(CheckpointError::Fenced(_)))) => {}
            Some(Ok(Err(e))) if e.is_outage() => lost_database(stop, &e),
            Some(Ok(Err(e))) => return Err(e),
            Some(Err(e)) if e.is_cancelled() => {}
            Some(Err(e)) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// A task found the checkpoint's database out of reach (its answer, if it may have been billed,
/// is in the spill): the run stops sending and lets the calls in flight land.
fn lost_database(stop: &Stop, e: &CheckpointError) {
    if !stop.is_set() {
        tracing::error!(error = %e, "the checkpoint's database is out of reach; stopping the run");
    }
    stop.set(StopReason::CheckpointLost {
        detail: e.to_string(),
    });
}

/// Takes finished tasks off the set without waiting.
fn reap(
    set: &mut JoinSet<Result<(State, State), CheckpointError>>,
    stop: &Stop,
    report: &mut PassReport,
    progress: &Progress,
) -> Result<(), CheckpointError> {
    while let Some(r) = set.try_join_next() {
        match r {
            Ok(Ok((from, state))) => {
                report.count(state);
                progress.finished(from, state);
            }
            Ok(Err(CheckpointError::Fenced(_))) => {}
            Ok(Err(e)) if e.is_outage() => lost_database(stop, &e),
            Ok(Err(e)) => return Err(e),
            Err(e) if e.is_cancelled() => {}
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    Ok(())
}

const PAGE: usize = 1000;

/// The least a poll loop waits after a pass that found nothing it could take.
const IDLE_WAIT: Duration = Duration::from_millis(500);

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

    /// Runs the task; returns the VIN's state before it and after it. A worker then lets go of
    /// the VIN.
    async fn run(self, engine: Arc<Engine>) -> Result<(State, State), CheckpointError> {
        let vin_id = self.vin_id();
        let r = match self {
            Task::Submit(t) => engine.submit_one(t).await,
            Task::Poll(t) => engine.poll_one(t).await.map(|s| (State::Pending, s)),
        };
        engine.release(vin_id);
        r
    }
}

/// Runs the tasks that `page(after_id)` hands out, page by page in id order, `concurrency` at a
/// time, until the pages run out or `halted()`; then lets the running ones land.
async fn run_paged(
    engine: &Arc<Engine>,
    progress: &Progress,
    halted: impl Fn() -> bool,
    mut page: impl FnMut(i64) -> Result<Vec<Task>, CheckpointError>,
) -> Result<PassReport, EngineError> {
    let sem = Arc::new(Semaphore::new(engine.opts.concurrency));
    let mut set = JoinSet::new();
    let mut report = PassReport::default();
    let mut after = 0i64;
    'pages: loop {
        let tasks = match page(after) {
            Ok(tasks) => tasks,
            // The calls in flight still land (their answers go to the spill if need be).
            Err(e) if e.is_outage() => {
                lost_database(&engine.stop, &e);
                break;
            }
            Err(e) => return Err(e.into()),
        };
        let Some(last) = tasks.last() else { break };
        after = last.vin_id();
        for task in tasks {
            let permit = tokio::select! {
                p = sem.clone().acquire_owned() => p.expect("semaphore never closed"),
                _ = engine.stop.wait() => break 'pages,
            };
            if halted() {
                break 'pages;
            }
            let e = engine.clone();
            set.spawn(async move {
                let _permit = permit;
                task.run(e).await
            });
            reap(&mut set, &engine.stop, &mut report, progress)?;
        }
    }
    drain(
        &mut set,
        &engine.stop,
        engine.opts.timeout,
        &mut report,
        progress,
    )
    .await?;
    Ok(report)
}

/// The states whose VINs a submit sends to generate: the queue, and the uncertain VINs only when
/// the user says so (they may have been billed already).
pub(crate) fn send_states(resubmit_uncertain: bool) -> &'static [State] {
    if resubmit_uncertain {
        &[State::Queued, State::Uncertain]
    } else {
        &[State::Queued]
    }
}

/// Calls generate for every VIN in [`send_states`], and for those `rebuy` buys again,
/// `concurrency` at a time.
pub(crate) async fn submit(
    engine: Arc<Engine>,
    rebuy: &checkpoint::Rebuy,
    progress: &Progress,
) -> Result<PassReport, EngineError> {
    let mut reader = engine.ckpt.read_link()?;
    let states = send_states(engine.opts.resubmit_uncertain);
    let (claim, page) = (engine.claim(), engine.page_size());
    run_paged(
        &engine,
        progress,
        || engine.submit_halted(),
        |after| {
            let todos =
                reader.with(|c| checkpoint::submit_page(c, states, rebuy, after, page, claim))?;
            engine.hold(todos.iter().map(|t| t.vin_id));
            Ok(todos.into_iter().map(Task::Submit).collect())
        },
    )
    .await
}

/// One pass over the pending VINs that are due now.
pub(crate) async fn poll_due(
    engine: Arc<Engine>,
    progress: &Progress,
) -> Result<PassReport, EngineError> {
    let mut reader = engine.ckpt.read_link()?;
    poll_due_on(engine, &mut reader, progress).await
}

/// [`poll_due`] reading the checkpoint through `reader`.
async fn poll_due_on(
    engine: Arc<Engine>,
    reader: &mut checkpoint::ReadLink,
    progress: &Progress,
) -> Result<PassReport, EngineError> {
    let now = engine.now();
    let (claim, page) = (engine.claim(), engine.page_size());
    run_paged(
        &engine,
        progress,
        || engine.stop.is_set(),
        |after| {
            let todos = reader.with(|c| checkpoint::due_polls(c, now, after, page, claim))?;
            engine.hold(todos.iter().map(|t| t.vin_id));
            Ok(todos.into_iter().map(Task::Poll).collect())
        },
    )
    .await
}

/// Polls until nothing is pending, the deadline passes, or the run is stopped.
pub(crate) async fn poll_until(
    engine: Arc<Engine>,
    deadline: tokio::time::Instant,
    progress: &Progress,
) -> Result<PassReport, EngineError> {
    let mut total = PassReport::default();
    let (started, statements) = (std::time::Instant::now(), checkpoint::db::pg_statements());
    // One connection for every pass and wait of the loop.
    let mut reader = engine.ckpt.read_link()?;
    loop {
        let pass = poll_due_on(engine.clone(), &mut reader, progress).await?;
        let idle = pass.attempted == 0;
        total.attempted += pass.attempted;
        for (s, n) in pass.by_state {
            *total.by_state.entry(s).or_default() += n;
        }
        if engine.stop.is_set() {
            break;
        }
        // The next VIN this process could take: for a worker, one another worker holds is due
        // when its claim ends. A pass that found nothing to do waits a little in any case, so
        // the loop never spins.
        let next = match reader.with(|c| checkpoint::next_claimable_poll(c, engine.claim())) {
            Ok(next) => next,
            Err(e) if e.is_outage() => {
                lost_database(&engine.stop, &e);
                break;
            }
            Err(e) => return Err(e.into()),
        };
        let Some(next) = next else {
            break;
        };
        let floor = if idle { IDLE_WAIT } else { Duration::ZERO };
        let wait = Duration::from_millis((next - engine.now()).max(0) as u64).max(floor);
        let wake = tokio::time::Instant::now() + wait;
        if wake > deadline {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {},
            _ = engine.stop.wait() => break,
        }
    }
    tracing::info!(
        vins = total.attempted,
        secs = started.elapsed().as_secs_f64(),
        statements = checkpoint::db::pg_statements() - statements,
        "poll loop ended"
    );
    Ok(total)
}
