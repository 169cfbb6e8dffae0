//! Several vmr processes working one PostgreSQL checkpoint together.
//!
//! Each `submit`, `poll` or `run` on a PostgreSQL state is a *worker*, registered in `workers`:
//!
//! - It claims the VINs it calls for (`FOR UPDATE SKIP LOCKED`, so two workers never take the
//!   same VIN) with a lease longer than a call can take (`--timeout` plus [`margin`]), and
//!   releases each VIN when its task ends.
//! - A thread of its own renews its heartbeat and its claims every [`beat`]. No call leaves
//!   unless the last renewal leaves the lease enough time to outlast the call.
//! - A worker that dies stops renewing: its claims lapse. Whoever sees a lapsed claim first (any
//!   worker's heartbeat, or the next vmr to open the checkpoint) turns a lapsed `submitting`
//!   VIN into `uncertain` (the vendor may have billed its generate) and frees the rest.
//! - Every write of a worker is fenced by its claim (`apply_update`): once the claim has lapsed,
//!   a late answer is kept in the call log, body and all, and the VIN is not changed.
//!
//! The workers of one vendor account share one token bucket (the lowest `--rate` among them
//! wins), and those started with the same `--run-id` one `--max-billed` budget.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::db::{Conn, blocking};
use super::pg::PgLocation;
use super::reaping::{host_name, local_key, reap_dead_here, sweep};
use super::{CheckpointError, WorkerSpec, p};

/// The database's clock, in ms since the epoch, as SQL: every lease is measured on it, so the
/// workers' own clocks never matter.
pub(crate) const DB_NOW: &str =
    "CAST(floor(extract(epoch FROM clock_timestamp()) * 1000) AS BIGINT)";

/// What a lease adds to `--timeout` by default: the time a worker has to renew its claims before one of
/// them could lapse under a call in flight.
const MARGIN: Duration = Duration::from_secs(10);

/// How often a worker renews its heartbeat and claims, and sweeps lapsed claims, by default.
const BEAT: Duration = Duration::from_secs(2);

/// A duration from the environment variable `name` (`5s`, `500ms`), else `default`. For the
/// lease margin and the heartbeat, which tests (and operators with unusual networks) tune.
fn tuned(name: &str, default: Duration) -> Duration {
    std::env::var(name)
        .ok()
        .and_then(|v| humantime::parse_duration(v.trim()).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(default)
}

/// What a lease adds to `--timeout`: [`MARGIN`], or `VMR_LEASE_MARGIN`.
pub(crate) fn margin() -> Duration {
    tuned("VMR_LEASE_MARGIN", MARGIN)
}

/// How often the heartbeat beats: [`BEAT`], or `VMR_HEARTBEAT` (at most a third of the
/// margin, so a claim is renewed several times before it could lapse).
pub(crate) fn beat() -> Duration {
    tuned("VMR_HEARTBEAT", BEAT).min(margin() / 3)
}

/// Kept free between the end of the longest call and the end of the lease.
const SLACK: Duration = Duration::from_secs(1);

/// The message of a VIN whose worker's claim lapsed while its generate was in flight.
pub(crate) const LAPSED: &str = "the worker that sent its generate stopped renewing its claim (it died or lost the database) while the call was in flight; the vendor may have billed it";

/// What the heartbeat thread and the worker share.
struct Beat {
    /// When the last renewal that found the worker alive was sent.
    renewed: Mutex<Instant>,
    /// The worker's row is gone (another worker took it for dead): no more calls.
    lost: AtomicBool,
    quit: Mutex<bool>,
    wake: Condvar,
    /// VINs pending in the whole checkpoint, as of the last beat (for the shared budget).
    pending: AtomicI64,
    /// The database's clock minus this machine's, in ms, as the last renewal measured it:
    /// deadlines and due times are kept on the database's clock, so workers on machines whose
    /// clocks disagree agree on them.
    clock_offset_ms: AtomicI64,
    /// The VINs this worker believes it holds, with when it claimed each. A renewal that does
    /// not find one still claimed by this worker (it lapsed while the worker was paused, and
    /// another worker's sweep took it) drops it at once: no call leaves for it any more.
    held: Mutex<std::collections::HashMap<i64, Instant>>,
}

/// This process as a worker of a PostgreSQL checkpoint.
pub struct Worker {
    pub(crate) id: i64,
    lease: Duration,
    timeout: Duration,
    spec: WorkerSpec,
    /// Claims, tokens, budget and releases: short autocommit statements.
    conn: Mutex<Link>,
    beat: Arc<Beat>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    retired: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Worker {
    /// Registers this process as a worker of the checkpoint at `loc` (which must exist: the
    /// writer has opened it) and starts its heartbeat.
    pub(crate) fn start(
        loc: &PgLocation,
        spec: WorkerSpec,
    ) -> Result<Arc<Worker>, CheckpointError> {
        let lease = spec.timeout + margin();
        let lease_ms = lease.as_millis() as i64;
        let mut link = Link::new(loc)?;
        let conn = link.conn.take().expect("connected");
        let id: i64 = conn.query_row(
            &format!(
                "INSERT INTO workers (host, local_key, pid, command, run_id, rate, lease_ms, started_at, heartbeat_at)
                 VALUES (?1, ?7, ?2, ?3, ?4, ?5, ?6, {DB_NOW}, {DB_NOW}) RETURNING id"
            ),
            p![
                host_name(),
                i64::from(std::process::id()),
                spec.command,
                spec.budget.as_ref().map(|b| b.0.clone()),
                i64::from(spec.rate),
                lease_ms,
                local_key()
            ],
            |r| r.get(0),
        )?;
        if spec.rate > 0 {
            conn.execute(
                &format!(
                    "INSERT INTO rate_buckets (account, tokens_milli, updated_at, rate, burst, rate_seen_at)
                     VALUES (?1, CAST(?3 AS BIGINT) * 1000, {DB_NOW}, ?2, ?3, {DB_NOW}) ON CONFLICT (account) DO NOTHING"
                ),
                p![spec.account, i64::from(spec.rate), i64::from(spec.burst.max(1))],
            )?;
        }
        if let Some((run_id, max)) = &spec.budget {
            // Workers of one run that disagree on the budget keep the smallest.
            conn.execute(
                &format!(
                    "INSERT INTO budgets (run_id, max_billed, used, created_at) VALUES (?1, ?2, 0, {DB_NOW})
                     ON CONFLICT (run_id) DO UPDATE SET max_billed = LEAST(budgets.max_billed, excluded.max_billed)"
                ),
                p![run_id, *max as i64],
            )?;
        }
        let beat = Arc::new(Beat {
            renewed: Mutex::new(Instant::now()),
            lost: AtomicBool::new(false),
            quit: Mutex::new(false),
            wake: Condvar::new(),
            pending: AtomicI64::new(0),
            clock_offset_ms: AtomicI64::new(0),
            held: Mutex::new(std::collections::HashMap::new()),
        });
        let mut beat_link = Link::new(loc)?;
        beat.clock_offset_ms
            .store(beat_link.with(clock_offset)?, Ordering::SeqCst);
        if spec.budget.is_some() {
            beat.pending
                .store(beat_link.with(pending)?, Ordering::SeqCst);
        }
        link.conn = Some(conn);
        let thread = {
            let beat = beat.clone();
            let count_pending = spec.budget.is_some();
            std::thread::Builder::new()
                .name("worker-heartbeat".into())
                .spawn(move || heartbeat(beat_link, id, lease_ms, count_pending, &beat))
                .expect("spawn the worker heartbeat thread")
        };
        tracing::info!(
            worker = id,
            lease_s = lease.as_secs(),
            "working the PostgreSQL checkpoint as worker {id}"
        );
        Ok(Arc::new(Worker {
            id,
            lease,
            timeout: spec.timeout,
            spec,
            conn: Mutex::new(link),
            beat,
            thread: Mutex::new(Some(thread)),
            retired: AtomicBool::new(false),
        }))
    }

    pub(crate) fn lease_ms(&self) -> i64 {
        self.lease.as_millis() as i64
    }

    /// Whether a call may leave now: the worker is alive and its claims, as last renewed,
    /// outlast a call of `--timeout`.
    pub(crate) fn lease_holds(&self) -> bool {
        !self.beat.lost.load(Ordering::SeqCst)
            && lock(&self.beat.renewed).elapsed() + self.timeout + SLACK < self.lease
    }

    /// Whether this worker still holds `vin_id`: the last renewal found it claimed by this
    /// worker, or it was claimed since. Checked from memory, with [`Worker::lease_holds`], just
    /// before a request leaves.
    pub(crate) fn holds(&self, vin_id: i64) -> bool {
        lock(&self.beat.held).contains_key(&vin_id)
    }

    /// Records VINs this worker has just claimed.
    pub(crate) fn hold(&self, vin_ids: impl IntoIterator<Item = i64>) {
        let now = Instant::now();
        lock(&self.beat.held).extend(vin_ids.into_iter().map(|id| (id, now)));
    }

    /// Runs `f` on the worker's own connection.
    pub(crate) fn with_conn<R>(
        &self,
        f: impl FnOnce(&Conn) -> Result<R, CheckpointError>,
    ) -> Result<R, CheckpointError> {
        let mut link = lock(&self.conn);
        blocking(|| link.with(f))
    }

    /// Lets go of a VIN whose task has ended (a `submitting` one stays claimed: only a lapse
    /// or this worker's retirement settles it).
    ///
    /// One round trip, and the commit does not wait for the WAL to reach the disk: a release
    /// lost to a server crash only leaves a claim to lapse with its lease, whereas waiting for
    /// the flush here would bound the whole worker to one disk flush per VIN. (Both ids are
    /// integers, written into the statement.)
    pub(crate) fn release(&self, vin_id: i64) -> Result<(), CheckpointError> {
        lock(&self.beat.held).remove(&vin_id);
        self.with_conn(|c| {
            let done = c.batch(&format!(
                "BEGIN; SET LOCAL synchronous_commit TO OFF;
                 UPDATE vins SET claimed_by = NULL, claim_until = NULL
                 WHERE id = {vin_id} AND claimed_by = {} AND state <> 'submitting'; COMMIT",
                self.id
            ));
            if done.is_err() {
                // A failed statement leaves the transaction open and aborted: close it, so the
                // connection serves the next call.
                let _ = c.batch("ROLLBACK");
            }
            done
        })
    }

    /// Takes one token from the account's bucket: `None` when granted, else how long to wait
    /// before asking again. The bucket holds up to `burst` tokens and gains `rate` a second (the
    /// lowest rate among the workers taking tokens, unless that worker has not taken one for a
    /// while), so in any second at most rate + burst calls leave, whatever the workers.
    pub(crate) fn take_token(&self) -> Result<Option<Duration>, CheckpointError> {
        let stale_ms = 3 * self.lease_ms();
        let (have, rate, now): (i64, i64, i64) = self.with_conn(|c| {
            c.query_row(
                &format!(
                    "WITH b AS (
                        SELECT account, tokens_milli, updated_at, {DB_NOW} AS now,
                            (?2 <= rate OR rate_seen_at < {DB_NOW} - ?4) AS mine, rate, burst
                        FROM rate_buckets WHERE account = ?1 FOR UPDATE),
                     f AS (
                        SELECT account, now, mine,
                            CASE WHEN mine THEN CAST(?2 AS BIGINT) ELSE rate END AS r,
                            CASE WHEN mine THEN CAST(?3 AS BIGINT) ELSE burst END AS bu,
                            tokens_milli, updated_at FROM b),
                     g AS (
                        SELECT account, now, mine, r, bu,
                            LEAST(bu * 1000, tokens_milli + GREATEST(now - updated_at, 0) * r) AS have
                        FROM f)
                     UPDATE rate_buckets t SET
                        tokens_milli = CASE WHEN g.have >= 1000 THEN g.have - 1000 ELSE g.have END,
                        updated_at = g.now, rate = g.r, burst = g.bu,
                        rate_seen_at = CASE WHEN g.mine THEN g.now ELSE t.rate_seen_at END
                     FROM g WHERE t.account = g.account
                     RETURNING g.have, g.r, g.now"
                ),
                p![
                    self.spec.account,
                    i64::from(self.spec.rate),
                    i64::from(self.spec.burst.max(1)),
                    stale_ms
                ],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
        })?;
        if have >= 1000 {
            // Where the shared rate is measured: one line per token, on the database's clock.
            tracing::trace!(target: "vmr::rate", granted_at_ms = now, worker = self.id, "rate token granted");
            return Ok(None);
        }
        let wait_ms = ((1000 - have) as u64).div_ceil(rate.max(1) as u64);
        Ok(Some(Duration::from_millis(wait_ms.max(1))))
    }

    /// Puts the account's token bucket `wait` into debt: at this account's rate it refills only
    /// after `wait`, so every worker pauses as the vendor asked (`Retry-After`). A bucket
    /// already deeper in debt is left as it is.
    pub(crate) fn pause_bucket(&self, wait: Duration) -> Result<(), CheckpointError> {
        let wait_ms = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 1_000_000);
        self.with_conn(|c| {
            c.execute(
                &format!(
                    "UPDATE rate_buckets SET
                        tokens_milli = LEAST(
                            LEAST(burst * 1000, tokens_milli + GREATEST({DB_NOW} - updated_at, 0) * rate),
                            -(?2 * rate)),
                        updated_at = {DB_NOW}
                     WHERE account = ?1"
                ),
                p![self.spec.account, wait_ms],
            )
        })?;
        Ok(())
    }

    /// Whether the shared budget admits one more call that may be billed, keeping `extra`
    /// calls aside (a get for every pending report, for a generate).
    pub(crate) fn reserve(&self, extra: i64) -> Result<bool, CheckpointError> {
        let Some((run_id, _)) = &self.spec.budget else {
            return Ok(true);
        };
        let n = self.with_conn(|c| {
            c.execute(
                "UPDATE budgets SET used = used + 1 WHERE run_id = ?1 AND used + 1 + ?2 <= max_billed",
                p![run_id, extra],
            )
        })?;
        Ok(n == 1)
    }

    /// Gives back a reservation whose call was not billed (and may not have been).
    pub(crate) fn unreserve(&self) -> Result<(), CheckpointError> {
        if let Some((run_id, _)) = &self.spec.budget {
            self.with_conn(|c| {
                c.execute(
                    "UPDATE budgets SET used = used - 1 WHERE run_id = ?1",
                    p![run_id],
                )
            })?;
        }
        Ok(())
    }

    /// Whether this worker shares a budget (`--run-id`).
    pub(crate) fn shares_budget(&self) -> bool {
        self.spec.budget.is_some()
    }

    /// The database's clock minus this machine's, in ms, as last measured.
    pub(crate) fn clock_offset_ms(&self) -> i64 {
        self.beat.clock_offset_ms.load(Ordering::SeqCst)
    }

    /// VINs pending in the whole checkpoint, as of the last heartbeat.
    pub(crate) fn pending(&self) -> i64 {
        self.beat.pending.load(Ordering::SeqCst)
    }

    /// Ends the worker: stops its heartbeat, turns the VINs it still holds in `submitting`
    /// (calls abandoned in flight) into `uncertain`, frees its other claims and removes its row.
    /// Call it once nothing more is written for the worker.
    pub(crate) fn retire(&self) -> Result<(), CheckpointError> {
        if self.retired.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        *lock(&self.beat.quit) = true;
        self.beat.wake.notify_all();
        if let Some(t) = lock(&self.thread).take() {
            let _ = blocking(|| t.join());
        }
        let uncertain: Vec<String> = self.with_conn(|c| {
            let vins = c.query_map(
                "UPDATE vins SET state = 'uncertain', message = ?2, claimed_by = NULL, claim_until = NULL
                 WHERE claimed_by = ?1 AND state = 'submitting' RETURNING vin",
                p![self.id, "the process stopped while generate was in flight; the vendor may have billed it"],
                |r| r.get(0),
            )?;
            c.execute(
                "UPDATE vins SET claimed_by = NULL, claim_until = NULL WHERE claimed_by = ?1",
                p![self.id],
            )?;
            c.execute("DELETE FROM workers WHERE id = ?1", p![self.id])?;
            Ok(vins)
        })?;
        if !uncertain.is_empty() {
            tracing::warn!(
                count = uncertain.len(),
                "generates abandoned in flight: those VINs are now uncertain (the vendor may have billed them)"
            );
        }
        Ok(())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Err(e) = self.retire() {
            tracing::warn!(error = %e, "the worker could not let go of its claims; they lapse with its lease");
        }
    }
}

/// The database's clock minus this machine's, in ms: the database's reading against the middle
/// of the round trip that fetched it.
fn clock_offset(c: &Conn) -> Result<i64, CheckpointError> {
    let before = crate::api::now_ms();
    let db: i64 = c.query_row(&format!("SELECT {DB_NOW}"), p![], |r| r.get(0))?;
    Ok(offset_since(before, db))
}

/// The database's clock reading `db`, taken by a round trip sent at `before` (this machine's
/// clock, ms) and ending now, minus this machine's clock at the round trip's middle.
fn offset_since(before: i64, db: i64) -> i64 {
    db - (before + crate::api::now_ms()) / 2
}

/// VINs pending in the checkpoint.
fn pending(c: &Conn) -> Result<i64, CheckpointError> {
    c.query_row(
        "SELECT count(*) FROM vins WHERE state = 'pending'",
        p![],
        |r| r.get(0),
    )
}

/// A connection of the worker's own, made again once the database is back when it was lost
/// (a restart, a failover, a terminated session).
struct Link {
    loc: PgLocation,
    conn: Option<Conn>,
}

impl Link {
    fn new(loc: &PgLocation) -> Result<Link, CheckpointError> {
        Ok(Link {
            loc: loc.clone(),
            conn: Some(super::pg::reopen(loc)?),
        })
    }

    /// Runs `f` on the connection, connecting first if it was lost; a lost connection is
    /// dropped, to be made again by the next call.
    fn with<R>(
        &mut self,
        f: impl FnOnce(&Conn) -> Result<R, CheckpointError>,
    ) -> Result<R, CheckpointError> {
        if self.conn.is_none() {
            self.conn = Some(super::pg::reopen(&self.loc)?);
            tracing::info!("a worker connection to the checkpoint's database was made again");
        }
        let r = f(self.conn.as_ref().expect("connected"));
        if let Err(e) = &r
            && e.is_outage()
        {
            self.conn = None;
        }
        r
    }
}

/// The heartbeat thread: renews the worker's row and claims every [`beat`], sweeps lapsed
/// claims, and forgets workers long dead, until told to quit.
fn heartbeat(mut link: Link, id: i64, lease_ms: i64, count_pending: bool, beat: &Beat) {
    let every = self::beat();
    let mut quit = lock(&beat.quit);
    loop {
        quit = beat
            .wake
            .wait_timeout(quit, every)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        if *quit {
            return;
        }
        drop(quit);
        let sent = Instant::now();
        match link.with(|c| renew(c, id, lease_ms)) {
            Ok(Some(renewal)) => {
                *lock(&beat.renewed) = sent;
                beat.clock_offset_ms
                    .store(renewal.clock_offset_ms, Ordering::SeqCst);
                forget_lost(beat, &renewal.mine, sent, id);
            }
            Ok(None) => {
                tracing::error!(
                    worker = id,
                    "this worker was taken for dead (no heartbeat within its lease); it sends nothing more"
                );
                beat.lost.store(true, Ordering::SeqCst);
                lock(&beat.held).clear();
            }
            Err(e) => tracing::warn!(worker = id, error = %e, "cannot renew the worker's claims"),
        }
        if let Err(e) = link.with(|c| reap_dead_here(c).and_then(|_| sweep(c))) {
            tracing::warn!(error = %e, "cannot sweep lapsed claims");
        }
        if count_pending && let Ok(n) = link.with(pending) {
            beat.pending.store(n, Ordering::SeqCst);
        }
        quit = lock(&beat.quit);
    }
}

/// Drops from `beat.held` every VIN claimed before the renewal that began at `sent` that the
/// renewal did not find still claimed by this worker (`mine`): its claim lapsed, and another
/// worker may hold it now.
fn forget_lost(beat: &Beat, mine: &std::collections::HashSet<i64>, sent: Instant, id: i64) {
    let mut held = lock(&beat.held);
    let before = held.len();
    held.retain(|vin_id, claimed| *claimed >= sent || mine.contains(vin_id));
    let lost = before - held.len();
    if lost > 0 {
        tracing::warn!(
            worker = id,
            lost,
            "claims of this worker lapsed (it was paused, or lost the database); no call leaves for those VINs"
        );
    }
}

/// Renews the worker's heartbeat and its claims that have not lapsed. Returns the VINs still
/// claimed by this worker (renewed, or held by its own writer at this instant), or `None` when
/// its row is gone.
fn renew(c: &Conn, id: i64, lease_ms: i64) -> Result<Option<Renewal>, CheckpointError> {
    // The heartbeat's own clock reading gives the clock offset too, against the middle of its
    // round trip.
    let before = crate::api::now_ms();
    let db_now: Option<i64> = c.query_opt(
        &format!("UPDATE workers SET heartbeat_at = {DB_NOW} WHERE id = ?1 RETURNING heartbeat_at"),
        p![id],
        |r| r.get(0),
    )?;
    let clock_offset_ms = db_now.map(|db| offset_since(before, db));
    let mut mine = std::collections::HashSet::new();
    if db_now.is_some() {
        // Read without locks, so rows the worker's own writer holds right now count as its.
        mine = c
            .query_map(
                &format!("SELECT id FROM vins WHERE claimed_by = ?1 AND claim_until >= {DB_NOW}"),
                p![id],
                |r| r.get::<i64>(0),
            )?
            .into_iter()
            .collect();
        // Rows the worker's own writer holds are skipped: its write renews them.
        c.execute(
            &format!(
                "UPDATE vins SET claim_until = {DB_NOW} + ?2 WHERE id IN (
                    SELECT id FROM vins WHERE claimed_by = ?1 AND claim_until >= {DB_NOW}
                    FOR UPDATE SKIP LOCKED)"
            ),
            p![id, lease_ms],
        )?;
    }
    c.execute(
        &format!("DELETE FROM workers WHERE heartbeat_at < {DB_NOW} - 3 * lease_ms"),
        p![],
    )?;
    Ok(clock_offset_ms.map(|clock_offset_ms| Renewal {
        mine,
        clock_offset_ms,
    }))
}

/// What a renewal found: the VINs still this worker's, and the database's clock against ours.
struct Renewal {
    mine: std::collections::HashSet<i64>,
    clock_offset_ms: i64,
}
