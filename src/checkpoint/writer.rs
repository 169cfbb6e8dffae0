//! The single writer: one thread owns the write connection and commits in groups.
//!
//! Callers hand it closures or updates; it runs every job waiting in its queue inside one
//! transaction (each under its own savepoint, so one failing job does not undo the others),
//! commits once with a full fsync, and only then answers each caller. So when a write returns,
//! it is on disk, and a thousand concurrent callers share a handful of fsyncs instead of paying
//! one each.
//!
//! With PostgreSQL the writer survives the database going away ([`Resilience`]): when the
//! connection is lost, every update in the group that carries a billed or possibly billed answer
//! is first written to the spill (`spill`), durably; then the writer reconnects with back-off
//! (taking new jobs off its queue and spilling theirs meanwhile), replays the spill, and runs
//! the rest of the group again. A group whose COMMIT was cut off may have landed: its updates
//! are run again only by their calls' ids (a call already logged is not written twice), and
//! what cannot be told apart (a closure, an update without a call) fails with
//! [`CheckpointError::Lost`]. When the database stays away past the window, spilled updates
//! answer [`CheckpointError::Spilled`] and the rest `Lost`: the engine stops sending, and the
//! next start replays the spill.

use super::spill::{Spill, worth_keeping};
use super::update::{Applied, Fence, Mode, apply_update};
use super::{CheckpointError, Conn, Update};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

type Reply = Box<dyn FnOnce(Option<CheckpointError>) + Send>;
/// A closure's job: run on the connection (or, given none, told the database was lost).
type OnceJob = Box<dyn FnOnce(Option<&Conn>) -> Reply + Send>;

/// One unit of work for the writer.
enum Job {
    /// A closure: run once, answered with the group's commit (given no connection, it answers
    /// that the database was lost).
    Once(OnceJob),
    /// An update: data, so it can be spilled, and run again after a lost connection.
    Update(Box<UpdateJob>),
}

struct UpdateJob {
    update: Update,
    fence: Option<Fence>,
    result: Option<Result<Applied, CheckpointError>>,
    /// The spill file holding it, once spilled.
    spilled: Option<PathBuf>,
    tx: tokio::sync::oneshot::Sender<Result<Applied, CheckpointError>>,
}

impl UpdateJob {
    fn uid(&self) -> Option<&str> {
        self.update.call.as_ref().and_then(|c| c.uid.as_deref())
    }

    fn answer(self, r: Result<Applied, CheckpointError>) {
        let _ = self.tx.send(r);
    }
}

/// Most jobs folded into one transaction; bounds commit latency under a flood.
const MAX_GROUP: usize = 4096;

/// How many times one group's transaction may be lost with its connection before the group
/// fails (its billed answers kept in the spill).
const MAX_LOSSES: u32 = 5;

/// How the writer outlives its database: how to connect again, where to keep billed answers
/// meanwhile, and for how long to keep trying before the run is told to stop.
pub(crate) struct Resilience {
    pub reconnect: Box<dyn Fn() -> Result<Conn, CheckpointError> + Send>,
    pub spill: Spill,
    /// How long a lost database is waited for (with back-off) before writes fail.
    pub window: Duration,
}

/// A handle on the writer thread; clones share the thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
    /// This process's worker id once it joins a shared checkpoint (-1 before): the fence its
    /// own spilled answers keep when replayed.
    worker: Arc<AtomicI64>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub fn start(conn: Conn) -> Writer {
        Writer::start_with(conn, None)
    }

    /// Starts the writer thread on `conn`, surviving the database as `resilience` says. The
    /// thread's first job is to replay the spill, before any other write.
    pub(crate) fn start_with(conn: Conn, resilience: Option<Resilience>) -> Writer {
        let (tx, rx) = mpsc::channel::<Job>();
        let worker = Arc::new(AtomicI64::new(-1));
        let me = worker.clone();
        thread::Builder::new()
            .name("checkpoint-writer".into())
            .spawn(move || {
                Thread {
                    conn: Some(conn),
                    rx,
                    resilience,
                    me,
                    down_since: None,
                }
                .run()
            })
            .expect("spawn the checkpoint writer thread");
        Writer { tx, worker }
    }

    /// Tells the writer which worker this process is (its own spilled answers keep its fence).
    pub(crate) fn set_worker(&self, id: i64) {
        self.worker.store(id, Ordering::SeqCst);
    }

    /// Queues `f` for the next group commit and returns at once; the receiver answers once the
    /// group is durable.
    pub(crate) fn submit<R, F>(
        &self,
        f: F,
    ) -> tokio::sync::oneshot::Receiver<Result<R, CheckpointError>>
    where
        R: Send + 'static,
        F: FnOnce(&Conn) -> Result<R, CheckpointError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = Job::Once(Box::new(move |conn: Option<&Conn>| -> Reply {
            let result = match conn {
                Some(conn) => in_savepoint(conn, f),
                None => Err(CheckpointError::Lost(
                    "the checkpoint's database is out of reach".into(),
                )),
            };
            Box::new(move |commit_error: Option<CheckpointError>| {
                let result = match commit_error {
                    Some(e) => Err(e),
                    None => result,
                };
                let _ = tx.send(result);
            })
        }));
        // If the writer thread is gone the receiver reports it below.
        let _ = self.tx.send(job);
        rx
    }

    /// Applies `update` (fenced by `fence`) in the next group commit.
    pub(crate) async fn apply(
        &self,
        update: Update,
        fence: Option<Fence>,
    ) -> Result<Applied, CheckpointError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let _ = self.tx.send(Job::Update(Box::new(UpdateJob {
            update,
            fence,
            result: None,
            spilled: None,
            tx,
        })));
        rx.await.map_err(|_| CheckpointError::WriterGone)?
    }

    /// Runs `f` in the next group commit and waits until it is durable.
    pub(crate) async fn write<R, F>(&self, f: F) -> Result<R, CheckpointError>
    where
        R: Send + 'static,
        F: FnOnce(&Conn) -> Result<R, CheckpointError> + Send + 'static,
    {
        self.submit(f)
            .await
            .map_err(|_| CheckpointError::WriterGone)?
    }

    /// The same as [`Writer::write`], for code outside the async runtime.
    pub(crate) fn write_blocking<R, F>(&self, f: F) -> Result<R, CheckpointError>
    where
        R: Send + 'static,
        F: FnOnce(&Conn) -> Result<R, CheckpointError> + Send + 'static,
    {
        self.submit(f)
            .blocking_recv()
            .map_err(|_| CheckpointError::WriterGone)?
    }
}

fn in_savepoint<R>(
    conn: &Conn,
    f: impl FnOnce(&Conn) -> Result<R, CheckpointError>,
) -> Result<R, CheckpointError> {
    conn.batch("SAVEPOINT job")?;
    match f(conn) {
        Ok(r) => {
            conn.batch("RELEASE job")?;
            Ok(r)
        }
        Err(e) => {
            conn.batch("ROLLBACK TO job; RELEASE job")?;
            Err(e)
        }
    }
}

/// How one try at committing a group ended.
enum Tried {
    Committed(Vec<Reply>),
    /// A statement or the commit failed for a reason of its own: answered as such.
    Failed(CheckpointError, Vec<Reply>),
    /// The connection is gone. `at_commit`: it went during COMMIT, which may have landed.
    Lost {
        error: CheckpointError,
        at_commit: bool,
    },
}

struct Thread {
    conn: Option<Conn>,
    rx: mpsc::Receiver<Job>,
    resilience: Option<Resilience>,
    me: Arc<AtomicI64>,
    /// When the database was last found out of reach (and not reached since).
    down_since: Option<Instant>,
}

impl Thread {
    fn run(mut self) {
        if let (Some(r), Some(c)) = (&self.resilience, &self.conn)
            && let Err(e) = r.spill.replay(c, self.worker(), |_, _| {})
        {
            tracing::error!(error = %e, "the spilled answers could not be replayed yet");
            if e.is_outage() {
                self.conn = None;
            }
        }
        while let Ok(first) = self.rx.recv() {
            let mut jobs = vec![first];
            while jobs.len() < MAX_GROUP {
                match self.rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            self.commit_group(jobs);
        }
    }

    fn worker(&self) -> Option<i64> {
        Some(self.me.load(Ordering::SeqCst)).filter(|id| *id >= 0)
    }

    /// Commits `jobs` as one group, coming back from a lost database when it can.
    fn commit_group(&mut self, mut jobs: Vec<Job>) {
        let mut mode = Mode::First;
        let mut losses = 0;
        loop {
            if self.conn.is_none() {
                if let Err(e) = self.come_back(&mut jobs) {
                    fail(jobs, &e);
                    return;
                }
                if jobs.is_empty() {
                    return;
                }
            }
            let conn = self.conn.as_ref().expect("connected");
            match attempt(conn, &mut jobs, mode) {
                Tried::Committed(replies) => {
                    self.down_since = None;
                    answer(jobs, replies, None);
                    return;
                }
                Tried::Failed(e, replies) => {
                    answer(jobs, replies, Some(e));
                    return;
                }
                Tried::Lost { error, at_commit } => {
                    self.conn = None;
                    losses += 1;
                    if self.resilience.is_none() {
                        fail(jobs, &error);
                        return;
                    }
                    if losses > MAX_LOSSES {
                        // A database that takes connections but loses every transaction (a
                        // statement timeout each time): the group is not tried for ever.
                        self.spill_jobs(&mut jobs);
                        tracing::error!(error = %error, losses, "the checkpoint's database keeps losing this group's transaction; giving up on it");
                        fail(jobs, &error);
                        return;
                    }
                    tracing::warn!(error = %error, at_commit, "the checkpoint's database connection was lost; reconnecting");
                    // A closure cannot run again, nor (when the commit may have landed) an
                    // update whose call id cannot tell whether it did.
                    let (keep, drop): (Vec<Job>, Vec<Job>) =
                        jobs.into_iter().partition(|j| match j {
                            Job::Once(_) => false,
                            Job::Update(u) => !at_commit || u.uid().is_some(),
                        });
                    jobs = keep;
                    // Their answers: lost, unless spilled (then the replay answers them).
                    self.spill_jobs(&mut jobs);
                    fail(drop, &error);
                    if at_commit {
                        mode = Mode::Again;
                    }
                }
            }
        }
    }

    /// Spills every update in `jobs` that carries something paid for and is not spilled yet.
    fn spill_jobs(&self, jobs: &mut [Job]) {
        let Some(r) = &self.resilience else { return };
        for job in jobs.iter_mut() {
            if let Job::Update(u) = job
                && u.spilled.is_none()
                && worth_keeping(&u.update)
            {
                match r.spill.keep(&mut u.update, u.fence) {
                    Ok(path) => u.spilled = Some(path),
                    Err(e) => tracing::error!(
                        dir = %r.spill.dir().display(),
                        error = %e,
                        "a billed answer could not be written to the spill directory; it is held in memory until the database is back"
                    ),
                }
            }
        }
    }

    /// Reconnects with back-off, taking new jobs off the queue (and spilling theirs) while it
    /// waits; then replays the spill, answering the jobs of `jobs` it holds. A database already
    /// found out of reach gets one try only, so late answers are spilled without waiting.
    fn come_back(&mut self, jobs: &mut Vec<Job>) -> Result<(), CheckpointError> {
        let Some(r) = &self.resilience else {
            return Err(CheckpointError::Lost(
                "the checkpoint's database connection is gone".into(),
            ));
        };
        self.spill_jobs(jobs);
        let since = *self.down_since.get_or_insert_with(Instant::now);
        let deadline = if since.elapsed() > r.window {
            Instant::now()
        } else {
            since + r.window
        };
        let mut delays = super::reconnect_delays();
        let mut last;
        loop {
            match (r.reconnect)() {
                Ok(conn) => {
                    let mut answers = Vec::new();
                    let replayed = r.spill.replay(&conn, self.worker(), |uid, res| {
                        answers.push((uid.to_owned(), res))
                    });
                    // The spilled jobs replayed are answered (the rest stay spilled).
                    for (uid, res) in answers {
                        if let Some(i) = jobs.iter().position(|j| {
                            matches!(j, Job::Update(u) if u.spilled.is_some() && u.uid() == Some(uid.as_str()))
                        }) && let Job::Update(u) = jobs.swap_remove(i)
                        {
                            u.answer(res);
                        }
                    }
                    match replayed {
                        Ok(_) => {
                            tracing::info!("the checkpoint's database is reachable again");
                            self.conn = Some(conn);
                            self.down_since = None;
                            return Ok(());
                        }
                        Err(e) => last = e,
                    }
                }
                Err(e) => last = e,
            }
            let now = Instant::now();
            if now >= deadline {
                tracing::error!(error = %last, "the checkpoint's database is out of reach");
                return Err(last);
            }
            let wait = delays
                .next()
                .unwrap_or(Duration::from_secs(5))
                .min(deadline - now);
            // Jobs that arrive meanwhile join the group, their billed answers spilled at once.
            let until = now + wait;
            while let Some(left) = until.checked_duration_since(Instant::now()) {
                match self.rx.recv_timeout(left) {
                    Ok(job) => {
                        jobs.push(job);
                        self.spill_jobs(jobs);
                    }
                    Err(_) => break,
                }
            }
        }
    }
}

/// Runs every job in one transaction and commits.
fn attempt(conn: &Conn, jobs: &mut Vec<Job>, mode: Mode) -> Tried {
    if let Err(e) = conn.batch("BEGIN IMMEDIATE") {
        if e.is_outage() {
            return Tried::Lost {
                error: e,
                at_commit: false,
            };
        }
        tracing::error!("checkpoint: cannot begin a transaction: {e}");
        return Tried::Failed(e, Vec::new());
    }
    // A closure runs once: keep its reply, and take it out of the group.
    let mut replies = Vec::new();
    let mut lost = None;
    let mut kept = Vec::with_capacity(jobs.len());
    for job in jobs.drain(..) {
        match job {
            Job::Once(f) => replies.push(f(Some(conn))),
            Job::Update(mut u) => {
                let r = match in_savepoint(conn, |c| apply_update(c, &u.update, u.fence, mode)) {
                    // Its call was written meanwhile by a replay of the spill: it is done.
                    Err(e) if e.is_duplicate_call() => Ok(Applied::Yes),
                    r => r,
                };
                if let Err(e) = &r
                    && e.is_outage()
                {
                    lost.get_or_insert_with(|| CheckpointError::Lost(e.to_string()));
                }
                u.result = Some(r);
                kept.push(Job::Update(u));
            }
        }
    }
    *jobs = kept;
    if let Some(error) = lost {
        let _ = conn.batch("ROLLBACK");
        for reply in replies {
            reply(Some(CheckpointError::Lost(error.to_string())));
        }
        return Tried::Lost {
            error,
            at_commit: false,
        };
    }
    match conn.batch("COMMIT") {
        Ok(()) => Tried::Committed(replies),
        Err(e) if e.is_outage() => {
            for reply in replies {
                reply(Some(CheckpointError::Lost(e.to_string())));
            }
            Tried::Lost {
                error: e,
                at_commit: true,
            }
        }
        Err(e) => {
            let _ = conn.batch("ROLLBACK");
            Tried::Failed(CheckpointError::Commit(e.to_string()), replies)
        }
    }
}

/// Answers a group that ended: every closure and update, with the commit's error if any.
fn answer(jobs: Vec<Job>, replies: Vec<Reply>, commit_error: Option<CheckpointError>) {
    let text = commit_error.as_ref().map(|e| e.to_string());
    for reply in replies {
        reply(text.clone().map(CheckpointError::Commit));
    }
    for job in jobs {
        match job {
            // Not run (the group could not begin): answered with why.
            Job::Once(f) => f(None)(text.clone().map(CheckpointError::Commit)),
            Job::Update(mut u) => {
                let r = match &text {
                    Some(t) => Err(CheckpointError::Commit(t.clone())),
                    None => u.result.take().unwrap_or(Err(CheckpointError::WriterGone)),
                };
                u.answer(r);
            }
        }
    }
}

/// Answers every job of a group that cannot be written now: a spilled update with `Spilled`
/// (its answer is safe on disk), the rest with `Lost`.
fn fail(jobs: Vec<Job>, error: &CheckpointError) {
    for job in jobs {
        match job {
            Job::Once(f) => f(None)(Some(CheckpointError::Lost(error.to_string()))),
            Job::Update(u) => {
                let r = match &u.spilled {
                    Some(path) => Err(CheckpointError::Spilled {
                        vin_id: u.update.vin_id,
                        file: path.clone(),
                    }),
                    None => Err(CheckpointError::Lost(error.to_string())),
                };
                u.answer(r);
            }
        }
    }
}
