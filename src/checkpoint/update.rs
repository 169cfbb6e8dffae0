//! One change to one VIN, applied in one transaction: the call log, the state machine, the
//! VIN's fields, its purchases and its reports, fenced by a worker's claim.

#[cfg(feature = "pg")]
use super::workers;
use super::{CheckpointError, Conn, IllegalTransition, State, p};
use crate::api::Delivery;

/// The call log's `delivery` column: whether an answer came at all.
fn delivery_column(class: Delivery) -> &'static str {
    match class {
        Delivery::Billed | Delivery::NotBilled => "answered",
        Delivery::NotSent => "not_sent",
        Delivery::Unknown => "unknown",
    }
}

/// One vendor call, as the call log records it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CallLog {
    /// The call's own id, unique across every process and run: a call written twice (a commit
    /// whose answer was lost with the connection, a spilled answer replayed) is recorded once.
    #[serde(default)]
    pub uid: Option<String>,
    /// Which endpoint was called.
    pub endpoint: crate::api::Endpoint,
    /// The requestId a get asked for; `None` for a generate.
    pub request_id: Option<String>,
    /// The HTTP status, if an answer came back.
    pub http_status: Option<u16>,
    /// The vendor's code, if the answer carried one.
    pub code: Option<i64>,
    /// The vendor's `msg`, if any.
    pub msg: Option<String>,
    /// The vendor's `taskNo`, if any.
    pub task_no: Option<String>,
    /// What it may have cost.
    pub class: Delivery,
    /// When the call started, in milliseconds since the Unix epoch.
    pub started_at: i64,
    /// When the call ended, in milliseconds since the Unix epoch.
    pub ended_at: i64,
    /// Why the call got no usable answer (a transport error, an unreadable body, a gateway's
    /// refusal); `None` otherwise.
    pub error: Option<String>,
    /// The raw body, kept for a billed answer that is not stored as a report.
    pub body: Option<Vec<u8>>,
}

/// A report bought, stored byte for byte.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ReportRow {
    /// The requestId the report was bought under, when the answer named one.
    pub request_id: Option<String>,
    /// The vendor's `taskNo` for the answer, if any.
    pub task_no: Option<String>,
    /// The endpoint that returned the report.
    pub endpoint: crate::api::Endpoint,
    /// When the report arrived, in milliseconds since the Unix epoch.
    pub fetched_at: i64,
    /// The answer body exactly as received.
    pub body: Vec<u8>,
}

/// One change to one VIN, applied in one transaction: an optional call-log row, an optional
/// state change (checked by the state machine), field updates, and an optional report.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Update {
    /// The checkpoint's id of the VIN to change.
    pub vin_id: i64,
    /// The state to move the VIN to, if any.
    pub to: Option<State>,
    /// The call to add to the call log, if any.
    pub call: Option<CallLog>,
    /// Sets the VIN's last code (with `message`) when `Some`.
    pub code: Option<Option<i64>>,
    /// The VIN's last message: written with `code` when that is set, else only when `Some`.
    pub message: Option<String>,
    /// Sets the VIN's requestId when `Some`.
    pub request_id: Option<String>,
    /// Sets the VIN's taskNo when `Some`.
    pub task_no: Option<String>,
    /// `Some(None)` clears the next poll time.
    pub next_poll_at: Option<Option<i64>>,
    /// Sets the interval, in milliseconds, between the VIN's polls when `Some`.
    pub poll_interval_ms: Option<i64>,
    /// When the billed generate that issued the VIN's requestId answered.
    pub accepted_at: Option<i64>,
    /// The report to store as the VIN's next report version, if any.
    pub report: Option<ReportRow>,
    /// Starts a new purchase of a VIN whose current one is `done`, `failed` or `expired`
    /// (a refresh or a retry): the current purchase is moved to `purchases` and the VIN starts
    /// again from `queued`, before `to` is checked. Its reports stay where they are.
    pub rebuy: bool,
    /// Undoes the VIN's current purchase, begun by `rebuy`, once it has ended without anything
    /// billed or possibly billed: the previous purchase is the VIN's current one again. Applied
    /// last, so a call this update logs stays in the call log.
    pub undo_rebuy: bool,
    /// The state the update was made for: when the VIN is in another one now (another worker
    /// moved it), nothing changes but the call log (a parked VIN is failed only while it is
    /// still `queued`).
    pub expect: Option<State>,
    /// Why the VIN fails, when `to` is `failed` (the vendor's refusal when not given).
    pub failure: Option<super::state::Failure>,
}

impl Update {
    /// The update with every NUL character in its text (a vendor's message, say) replaced by
    /// U+FFFD: PostgreSQL text cannot hold NUL, and the write (with the report it may carry)
    /// must not fail for it. Bodies are bytes and stay as they are.
    #[cfg(feature = "pg")]
    pub(super) fn without_nul(mut self) -> Update {
        fn fix(s: &mut Option<String>) {
            if let Some(t) = s
                && t.contains('\0')
            {
                *t = t.replace('\0', "\u{FFFD}");
            }
        }
        fix(&mut self.message);
        fix(&mut self.request_id);
        fix(&mut self.task_no);
        if let Some(c) = &mut self.call {
            fix(&mut c.request_id);
            fix(&mut c.msg);
            fix(&mut c.task_no);
            fix(&mut c.error);
        }
        if let Some(r) = &mut self.report {
            fix(&mut r.request_id);
            fix(&mut r.task_no);
        }
        self
    }
}

/// A worker's claim that its writes must still hold.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[cfg_attr(not(feature = "pg"), allow(dead_code))]
pub(crate) struct Fence {
    pub(super) worker: i64,
    pub(super) lease_ms: i64,
    /// The worker holds the VIN (its own task's): the claim must hold. Else no other live
    /// claim may hold it.
    pub(super) own: bool,
}

/// Whether an update changed its VIN.
pub(crate) enum Applied {
    Yes,
    /// The worker's claim had lapsed: only its call was logged.
    Fenced(String),
}

/// Checks a worker's claim on the VIN (locking the row) and renews it; `false` when it has
/// lapsed or another worker holds the VIN.
#[cfg(feature = "pg")]
fn claim_holds(conn: &Conn, vin_id: i64, fence: Fence) -> Result<bool, CheckpointError> {
    // The row first, then the clock: an expression evaluated in the statement that waits for
    // the lock would read the clock from before the wait.
    conn.query_opt(
        "SELECT id FROM vins WHERE id = ?1 FOR UPDATE",
        p![vin_id],
        |r| r.get::<i64>(0),
    )?
    .ok_or(CheckpointError::UnknownVin(vin_id))?;
    let now = workers::DB_NOW;
    if !fence.own {
        let free: i64 = conn.query_row(
            &format!(
                "SELECT count(*) FROM vins WHERE id = ?1
                   AND (claimed_by IS NULL OR claimed_by = ?2 OR claim_until < {now})"
            ),
            p![vin_id, fence.worker],
            |r| r.get(0),
        )?;
        return Ok(free == 1);
    }
    let renewed = conn.execute(
        &format!(
            "UPDATE vins SET claim_until = {now} + ?3
             WHERE id = ?1 AND claimed_by = ?2 AND claim_until >= {now}"
        ),
        p![vin_id, fence.worker, fence.lease_ms],
    )?;
    Ok(renewed == 1)
}

#[cfg(not(feature = "pg"))]
fn claim_holds(_: &Conn, _: i64, _: Fence) -> Result<bool, CheckpointError> {
    Ok(true)
}

/// How an update is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Written the first time, by the task that made the call.
    First,
    /// Written again after its transaction's fate was lost with the connection (its COMMIT may
    /// have landed): a call already in the call log under its id is not written twice.
    Again,
    /// An answer from the spill file, written by another process or after the writer lost the
    /// database: written once, and only to a VIN still where the call left it (see
    /// [`replay_fits`]).
    Replay,
}

/// Whether the call `u` carries is in the call log already (under its id).
pub(super) fn already_logged(conn: &Conn, u: &Update) -> Result<bool, CheckpointError> {
    let Some(uid) = u.call.as_ref().and_then(|c| c.uid.as_deref()) else {
        return Ok(false);
    };
    Ok(conn
        .query_opt("SELECT id FROM calls WHERE uid = ?1", p![uid], |r| {
            r.get::<i64>(0)
        })?
        .is_some())
}

pub(super) fn apply_update(
    conn: &Conn,
    u: &Update,
    fence: Option<Fence>,
    mode: Mode,
) -> Result<Applied, CheckpointError> {
    if mode != Mode::First && already_logged(conn, u)? {
        return Ok(Applied::Yes);
    }
    if let Some(f) = fence
        && !claim_holds(conn, u.vin_id, f)?
    {
        return fenced(
            conn,
            u,
            "this worker's claim on the VIN lapsed; its answer is kept in the call log and the VIN left as it is",
        );
    }
    if mode == Mode::Replay && !replay_fits(conn, u)? {
        return fenced(
            conn,
            u,
            "a replayed answer found its VIN moved on; the answer is kept in the call log and the VIN left as it is",
        );
    }
    // The world the update was made for: the state it expects, and (for a worker, whose VIN
    // another worker may have moved meanwhile) a legal move from the state the VIN is in now.
    if u.expect.is_some() || fence.is_some() {
        let (current, changed) = world_changed(conn, u, mode)?;
        if u.expect.is_some_and(|e| e != current) || (fence.is_some() && changed) {
            return fenced(
                conn,
                u,
                "the VIN changed since this answer was asked for; the answer is kept in the call log and the VIN left as it is",
            );
        }
    }
    apply_owned(conn, u, mode)?;
    Ok(Applied::Yes)
}

/// Whether a replayed answer still fits its VIN: a generate's VIN is still `submitting`, or
/// `uncertain` (a sweep found its worker gone meanwhile); a get's VIN is still `pending` on the
/// same requestId. Else the answer only joins the call log.
fn replay_fits(conn: &Conn, u: &Update) -> Result<bool, CheckpointError> {
    let Some(call) = &u.call else {
        return Ok(false);
    };
    let (state, request_id): (String, Option<String>) = conn
        .query_opt(
            "SELECT state, request_id FROM vins WHERE id = ?1",
            p![u.vin_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
        .ok_or(CheckpointError::UnknownVin(u.vin_id))?;
    let state: State = state.parse().map_err(CheckpointError::Commit)?;
    Ok(match call.endpoint {
        crate::api::Endpoint::Generate => matches!(state, State::Submitting | State::Uncertain),
        crate::api::Endpoint::Get => state == State::Pending && request_id == call.request_id,
    })
}

/// The VIN's state now, and whether `u`'s move is no longer legal from it.
fn world_changed(conn: &Conn, u: &Update, mode: Mode) -> Result<(State, bool), CheckpointError> {
    let current: String = conn
        .query_opt("SELECT state FROM vins WHERE id = ?1", p![u.vin_id], |r| {
            r.get(0)
        })?
        .ok_or(CheckpointError::UnknownVin(u.vin_id))?;
    let current: State = current.parse().map_err(CheckpointError::Commit)?;
    let from = if u.rebuy { State::Queued } else { current };
    let illegal =
        (u.rebuy && !current.can_rebuy()) || u.to.is_some_and(|to| !legal(from, to, mode));
    Ok((current, illegal))
}

/// Whether `from -> to` may be written in `mode`: the state machine's moves, and for a replayed
/// billed answer also its settling of a VIN a sweep made `uncertain` meanwhile (to `pending`,
/// `done` or `failed`, where the answer would have taken it from `submitting`).
fn legal(from: State, to: State, mode: Mode) -> bool {
    from.can_go(to)
        || (mode == Mode::Replay
            && from == State::Uncertain
            && State::Submitting.can_go(to)
            && to != State::Queued)
}

/// Leaves the VIN as it is and keeps what `u` carried: nothing paid is lost. The call is
/// logged, and a report it carried is kept as the call's body.
fn fenced(conn: &Conn, u: &Update, why: &str) -> Result<Applied, CheckpointError> {
    let vin: String = conn.query_row("SELECT vin FROM vins WHERE id = ?1", p![u.vin_id], |r| {
        r.get(0)
    })?;
    if let Some(call) = &u.call {
        let mut call = call.clone();
        if call.body.is_none() {
            call.body = u.report.as_ref().map(|r| r.body.clone());
        }
        log_call(conn, u.vin_id, &call)?;
    }
    tracing::warn!(vin = vin.as_str(), "{why}");
    Ok(Applied::Fenced(vin))
}

fn apply_owned(conn: &Conn, u: &Update, mode: Mode) -> Result<(), CheckpointError> {
    let (vin, current): (String, String) = conn
        .query_opt(
            "SELECT vin, state FROM vins WHERE id = ?1",
            p![u.vin_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
        .ok_or(CheckpointError::UnknownVin(u.vin_id))?;
    let mut current: State = current
        .parse()
        .map_err(|e: String| CheckpointError::Commit(e))?;
    if u.rebuy {
        if !current.can_rebuy() {
            return Err(IllegalTransition {
                vin,
                from: current,
                to: State::Queued,
            }
            .into());
        }
        start_purchase(conn, u.vin_id)?;
        current = State::Queued;
    }
    if let Some(to) = u.to {
        // The state machine first: an illegal move is refused before anything is written.
        if !legal(current, to, mode) {
            current.check(to, &vin)?;
        }
        let failure = (to == State::Failed).then(|| u.failure.unwrap_or_default().as_str());
        conn.execute(
            "UPDATE vins SET state = ?2,
                submitted_at = CASE WHEN ?2 = 'submitting' THEN coalesce(submitted_at, ?3) ELSE submitted_at END,
                completed_at = CASE WHEN ?4 THEN ?3 ELSE completed_at END,
                failure = ?5
             WHERE id = ?1",
            p![u.vin_id, to.as_str(), crate::api::now_ms(), to.is_final(), failure],
        )?;
    }
    if let Some(call) = &u.call {
        log_call(conn, u.vin_id, call)?;
    }
    set_fields(conn, u)?;
    if u.undo_rebuy {
        undo_purchase(conn, u.vin_id, &vin)?;
    }
    if let Some(r) = &u.report {
        // The next version of the VIN's report, bought by its current purchase.
        conn.execute(
            "INSERT INTO reports (vin_id, version, purchase, vin, request_id, task_no, endpoint, fetched_at, body)
             VALUES (?1,
                (SELECT coalesce(max(version), 0) + 1 FROM reports WHERE vin_id = ?1),
                (SELECT purchase FROM vins WHERE id = ?1),
                ?2, ?3, ?4, ?5, ?6, ?7)",
            p![
                u.vin_id,
                vin,
                r.request_id,
                r.task_no,
                r.endpoint.as_str(),
                r.fetched_at,
                r.body
            ],
        )?;
    }
    Ok(())
}

/// Moves the VIN's current purchase (final) into `purchases` and starts the next one at
/// `queued`. The call counters stay: they count over every purchase of the VIN.
fn start_purchase(conn: &Conn, vin_id: i64) -> Result<(), CheckpointError> {
    conn.execute(
        "INSERT INTO purchases (vin_id, purchase, state, code, message, request_id, task_no,
            submitted_at, accepted_at, completed_at, report_version, failure)
         SELECT v.id, v.purchase, v.state, v.code, v.message, v.request_id, v.task_no,
            v.submitted_at, v.accepted_at, v.completed_at,
            (SELECT max(version) FROM reports r WHERE r.vin_id = v.id AND r.purchase = v.purchase),
            v.failure
         FROM vins v WHERE v.id = ?1",
        p![vin_id],
    )?;
    conn.execute(
        "UPDATE vins SET purchase = purchase + 1, state = 'queued', code = NULL, message = NULL,
            request_id = NULL, task_no = NULL, next_poll_at = NULL, poll_interval_ms = NULL,
            submitted_at = NULL, accepted_at = NULL, completed_at = NULL, failure = NULL
         WHERE id = ?1",
        p![vin_id],
    )?;
    Ok(())
}

/// Puts back the purchase [`start_purchase`] moved to `purchases`, when the one started since
/// is `submitting` and has nothing billed or possibly billed; else refuses, changing nothing.
fn undo_purchase(conn: &Conn, vin_id: i64, vin: &str) -> Result<(), CheckpointError> {
    let (state, purchase, charged): (String, i64, i64) = conn.query_row(
        "SELECT v.state, v.purchase,
            (SELECT count(*) FROM calls c WHERE c.vin_id = v.id AND c.purchase = v.purchase
               AND (c.billed = 1 OR c.delivery = 'unknown'))
         FROM vins v WHERE v.id = ?1",
        p![vin_id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let previous: Option<String> = conn.query_opt(
        "SELECT state FROM purchases WHERE vin_id = ?1 AND purchase = ?2",
        p![vin_id, purchase - 1],
        |r| r.get(0),
    )?;
    let current: State = state.parse().map_err(CheckpointError::Commit)?;
    let Some(previous) = previous.filter(|_| current == State::Submitting && charged == 0) else {
        return Err(CheckpointError::Commit(format!(
            "VIN {vin}: purchase {purchase} ({state}) cannot be undone: only a purchase bought again, still submitting, with nothing billed"
        )));
    };
    let previous: State = previous.parse().map_err(CheckpointError::Commit)?;
    conn.execute(
        "UPDATE vins SET (state, code, message, request_id, task_no, submitted_at, accepted_at,
                completed_at, purchase, failure) =
            (SELECT p.state, p.code, p.message, p.request_id, p.task_no, p.submitted_at,
                p.accepted_at, p.completed_at, p.purchase, p.failure
             FROM purchases p WHERE p.vin_id = vins.id AND p.purchase = vins.purchase - 1),
            next_poll_at = NULL, poll_interval_ms = NULL
         WHERE id = ?1",
        p![vin_id],
    )?;
    conn.execute(
        "DELETE FROM purchases WHERE vin_id = ?1 AND purchase = ?2",
        p![vin_id, purchase - 1],
    )?;
    debug_assert!(previous.can_rebuy());
    Ok(())
}

/// One call into the call log, and the VIN's call counters.
fn log_call(conn: &Conn, vin_id: i64, call: &CallLog) -> Result<(), CheckpointError> {
    conn.execute(
        "INSERT INTO calls (vin_id, endpoint, request_id, http_status, code, msg, task_no, billed, delivery, started_at, ended_at, error, body, purchase, uid)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,
            (SELECT purchase FROM vins WHERE id = ?1), ?14)",
        p![
            vin_id,
            call.endpoint.as_str(),
            call.request_id,
            call.http_status.map(i64::from),
            call.code,
            call.msg,
            call.task_no,
            (call.class == Delivery::Billed) as i64,
            delivery_column(call.class),
            call.started_at,
            call.ended_at,
            call.error,
            call.body,
            call.uid
        ],
    )?;
    let sent = call.class != Delivery::NotSent;
    let is_generate = call.endpoint == crate::api::Endpoint::Generate;
    conn.execute(
        "UPDATE vins SET
            submit_attempts = submit_attempts + ?2,
            poll_attempts = poll_attempts + ?3,
            billed_calls = billed_calls + ?4,
            unknown_calls = unknown_calls + ?5
         WHERE id = ?1",
        p![
            vin_id,
            (sent && is_generate) as i64,
            (sent && !is_generate) as i64,
            (call.class == Delivery::Billed) as i64,
            (call.class == Delivery::Unknown) as i64
        ],
    )?;
    Ok(())
}

/// The VIN's fields an update sets: last code and message, ids, poll schedule.
fn set_fields(conn: &Conn, u: &Update) -> Result<(), CheckpointError> {
    if let Some(code) = u.code {
        conn.execute(
            "UPDATE vins SET code = ?2, message = ?3 WHERE id = ?1",
            p![u.vin_id, code, u.message],
        )?;
    } else if let Some(m) = &u.message {
        conn.execute(
            "UPDATE vins SET message = ?2 WHERE id = ?1",
            p![u.vin_id, m],
        )?;
    }
    if let Some(rid) = &u.request_id {
        conn.execute(
            "UPDATE vins SET request_id = ?2 WHERE id = ?1",
            p![u.vin_id, rid],
        )?;
    }
    if let Some(t) = &u.task_no {
        conn.execute(
            "UPDATE vins SET task_no = ?2 WHERE id = ?1",
            p![u.vin_id, t],
        )?;
    }
    if let Some(next) = u.next_poll_at {
        conn.execute(
            "UPDATE vins SET next_poll_at = ?2 WHERE id = ?1",
            p![u.vin_id, next],
        )?;
    }
    if let Some(at) = u.accepted_at {
        conn.execute(
            "UPDATE vins SET accepted_at = ?2 WHERE id = ?1",
            p![u.vin_id, at],
        )?;
    }
    if let Some(iv) = u.poll_interval_ms {
        conn.execute(
            "UPDATE vins SET poll_interval_ms = ?2 WHERE id = ?1",
            p![u.vin_id, iv],
        )?;
    }
    Ok(())
}

/// Get answers for `request_id` that were billed, or may have been, without a usable report:
/// their bodies are in the call log (a billed answer stored as a report keeps none there).
pub(crate) fn unusable_gets(
    conn: &Conn,
    vin_id: i64,
    request_id: &str,
) -> Result<i64, CheckpointError> {
    conn.query_row(
        "SELECT count(*) FROM calls WHERE vin_id = ?1 AND endpoint = 'get' AND request_id = ?2
            AND body IS NOT NULL AND (billed = 1 OR delivery = 'unknown')",
        p![vin_id, request_id],
        |r| r.get(0),
    )
}
