//! The checkpoint: one SQLite file per state directory (or one PostgreSQL schema), the only
//! source of truth for a batch, and the only part of vmr that speaks SQL.
//!
//! It holds every VIN's state, every vendor call's outcome and the raw body of every report
//! bought, byte for byte, so any stage can be killed at any instant and started again, and export
//! can always be redone offline. Writes go through one writer thread with group commit
//! (`writer`); every state change goes through the state machine (`state`). One process at a
//! time holds a state directory, by an advisory lock on `<state>/lock`.
//!
//! A file per job: `schema` (version and migrations), `files` (the directory's lock, modes and
//! backups), `open` (places, opening and recovery), `update` (one VIN's change, purchases and
//! claims), `queue` (what to send next, and what to buy again), `counts`, `snapshot` (the
//! whole checkpoint as of one instant, as export reads it); `pg`, `workers` and `copy` for
//! PostgreSQL.

#[cfg(feature = "pg")]
mod columns;
#[cfg(feature = "pg")]
pub mod copy;
mod counts;
pub mod db;
mod files;
mod ingest;
mod open;
mod overview;
#[cfg(feature = "pg")]
pub mod pg;
mod queue;
#[cfg(feature = "pg")]
mod reaping;
mod resolutions;
mod schema;
mod sharing;
mod snapshot;
mod spill;
pub mod state;
#[cfg(feature = "pg")]
mod tls;
mod update;
#[cfg(feature = "pg")]
pub mod workers;
mod writer;

pub use db::{Conn, p};
pub use state::{IllegalTransition, State};
pub use writer::Writer;

pub(crate) use counts::{
    CallCounts, StateCounts, WorkerRow, account, call_counts, has_calls, state_counts,
};
#[cfg(feature = "pg")]
pub(crate) use files::db_files;
pub use files::{Backup, backup, db_path};
pub(crate) use files::{DirLock, create_locked};
pub(crate) use ingest::{BatchTotals, RowsRecorded};
use open::recover;
pub(crate) use open::writer_running_at;
pub use open::{Place, Recovery, describe, open_reader, open_reader_at};
pub(crate) use overview::{
    RejectedRow, batch_freshness, batches, billed_unusable_vins, input_totals, last_run,
    live_workers, oldest_pending, rejected_rows, reports_stored, uncertain_vins,
};
pub(crate) use queue::{
    Claim, FailedKind, PollTodo, Rebuy, SubmitTodo, due_polls, next_claimable_poll, next_poll_due,
    rebuy_counts, submit_page,
};
pub(crate) use resolutions::{Settled, Settlement};
pub(crate) use schema::SCHEMA_VERSION;
pub(crate) use sharing::{Lease, Sharing, WorkerSpec};
pub use snapshot::Snapshot;
pub(crate) use snapshot::{CallRow, Reports, RequestPages, RequestRow, StoredReport};
pub use spill::new_call_uid;
use std::path::{Path, PathBuf};
use update::Applied;
pub(crate) use update::unusable_gets;
pub use update::{CallLog, ReportRow, Update};

/// Why the checkpoint could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The SQLite checkpoint file could not be opened.
    #[error("checkpoint {path}: {source}")]
    Open {
        /// The checkpoint file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// Another vmr holds the state directory's lock.
    #[error(
        "state directory {dir} is in use by another vmr (pid {pid}); wait for it to finish or use another --state"
    )]
    Locked {
        /// The state directory.
        dir: PathBuf,
        /// The holder's process id as its lock file records it, or `unknown`.
        pid: String,
    },
    /// A file in the state directory could not be created, read or written.
    #[error("state directory {dir}: {source}")]
    Io {
        /// The state directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The checkpoint was written by a newer vmr (its schema version is above this one's); it
    /// is left unchanged.
    #[error(
        "checkpoint {path} has schema version {found}, newer than this vmr understands ({SCHEMA_VERSION}); upgrade vmr (the checkpoint was not changed)"
    )]
    TooNew {
        /// The checkpoint file.
        path: PathBuf,
        /// The schema version it holds.
        found: i64,
    },
    /// No checkpoint file exists at this path to read.
    #[error("no checkpoint at {0}; run `vmr ingest` or `vmr run` first")]
    Missing(PathBuf),
    /// A SQLite error.
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    /// A VIN state change the state machine does not allow.
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    /// An update named a VIN id the checkpoint does not hold.
    #[error("VIN id {0} is not in the checkpoint")]
    UnknownVin(i64),
    /// A write the checkpoint refused or could not finish, or a stored value it could not read;
    /// the text says why.
    #[error("checkpoint commit failed: {0}")]
    Commit(String),
    /// The writer thread has stopped, so no write can be made.
    #[error("the checkpoint writer stopped")]
    WriterGone,
    /// A backup's destination already exists.
    #[error("{0} already exists; a backup never overwrites a file: choose a new path")]
    BackupExists(PathBuf),
    /// A PostgreSQL error, with the server's code and message.
    #[error("PostgreSQL: {0}")]
    Db(String),
    /// A worker's write for a VIN whose claim had lapsed (another worker may hold it now): the
    /// call it carried is in the call log, the VIN was not changed.
    #[error(
        "VIN {0}: this worker's claim on it lapsed, or another worker moved it; the late answer was kept in the call log and the VIN left as it was"
    )]
    Fenced(String),
    /// The connection to the checkpoint's database was lost, or cannot be made: the write was
    /// not made (or may have been, when the connection went during its commit).
    #[error("the checkpoint's database is out of reach: {0}")]
    Lost(String),
    /// The checkpoint's database could not be reached in time: the update, which carries an
    /// answer that may have been billed, is kept in the spill file and written to the
    /// checkpoint by the next run (or this one, once the database is back).
    #[error(
        "the checkpoint's database is out of reach; the answer for VIN id {vin_id} is kept on disk in {} and will be replayed into it",
        file.display()
    )]
    Spilled {
        /// The checkpoint's id of the VIN.
        vin_id: i64,
        /// The spill file.
        file: PathBuf,
    },
    /// A PostgreSQL checkpoint could not be reached, opened or migrated.
    #[error(transparent)]
    #[cfg(feature = "pg")]
    Pg(#[from] pg::PgError),
}

/// How long the writer waits (with back-off) for a PostgreSQL database that went away before
/// the run stops sending: 60 s, or `VMR_PG_RECONNECT_WINDOW` (a duration such as `5s`).
fn reconnect_window() -> std::time::Duration {
    std::env::var("VMR_PG_RECONNECT_WINDOW")
        .ok()
        .and_then(|v| humantime::parse_duration(v.trim()).ok())
        .unwrap_or(std::time::Duration::from_secs(60))
}

/// The waits between tries at reaching a database that went away: from 100 ms, doubling with
/// jitter, at most 5 s each (the writer's and the readers' alike).
fn reconnect_delays() -> impl Iterator<Item = std::time::Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(100))
        .with_max_delay(std::time::Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

impl CheckpointError {
    /// Whether the write failed only because its call is in the call log already (under the
    /// same id, written meanwhile by another process replaying the same spill): it is done.
    pub(crate) fn is_duplicate_call(&self) -> bool {
        let text = self.to_string();
        text.contains("calls_uid") || text.contains("calls.uid")
    }

    /// Whether the database went away (or cannot be reached), rather than refusing a write:
    /// the run stops sending and ends with "work remains", and nothing paid for is lost.
    pub fn is_outage(&self) -> bool {
        match self {
            CheckpointError::Lost(_) | CheckpointError::Spilled { .. } => true,
            #[cfg(feature = "pg")]
            CheckpointError::Pg(e) => e.is_unreachable(),
            _ => false,
        }
    }
}

/// A read connection that outlives its database's restarts: a read that finds the connection
/// lost is tried again on a new one, connecting with back-off for as long as the writer waits
/// for its own ([`reconnect_window`]); only then is the loss the caller's.
pub(crate) struct ReadLink {
    place: Place,
    conn: Option<Conn>,
}

impl ReadLink {
    /// Runs the read `f`, on a new connection when the last one was lost.
    pub(crate) fn with<R>(
        &mut self,
        f: impl Fn(&Conn) -> Result<R, CheckpointError>,
    ) -> Result<R, CheckpointError> {
        let started = std::time::Instant::now();
        let mut delays = reconnect_delays();
        loop {
            let r = match &self.conn {
                Some(c) => f(c),
                None => open_reader_at(&self.place).and_then(|c| {
                    let r = f(&c);
                    self.conn = Some(c);
                    r
                }),
            };
            match r {
                Err(e) if e.is_outage() => {
                    self.conn = None;
                    let wait = delays.next().unwrap_or(std::time::Duration::from_secs(5));
                    if started.elapsed() + wait > reconnect_window() {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, "a read of the checkpoint lost its connection; trying again");
                    db::blocking(|| std::thread::sleep(wait));
                }
                r => return r,
            }
        }
    }
}

/// A checkpoint opened for writing: holds the lock and the writer thread. In PostgreSQL the
/// lock is held by the writer's own connection.
#[derive(Clone)]
pub struct Checkpoint {
    place: Place,
    writer: Writer,
    _lock: Option<std::sync::Arc<DirLock>>,
    /// How this process shares the checkpoint: a worker's writes are fenced by its claims.
    sharing: Sharing,
}

impl Checkpoint {
    /// Opens (creating if needed) the checkpoint in `state_dir`, takes the lock, migrates the
    /// schema, and turns every `submitting` VIN into `uncertain`.
    pub fn open(state_dir: &Path) -> Result<(Checkpoint, Recovery), CheckpointError> {
        Checkpoint::open_at(&Place::Dir(state_dir.to_owned()))
    }

    /// [`Checkpoint::open`] for a state directory or a PostgreSQL schema.
    pub fn open_at(place: &Place) -> Result<(Checkpoint, Recovery), CheckpointError> {
        let writer = match place {
            Place::Dir(dir) => {
                let (lock, conn) = create_locked(dir)?;
                (
                    Some(std::sync::Arc::new(lock)),
                    Writer::start(Conn::Lite(conn)),
                )
            }
            // The writer outlives the database (a restart, a failover): it reconnects, keeping
            // billed answers in the spill meanwhile, and replays the spill before anything else.
            #[cfg(feature = "pg")]
            Place::Pg(loc) => {
                let conn = pg::open(loc)?;
                let again = loc.as_ref().clone();
                let resilience = writer::Resilience {
                    reconnect: Box::new(move || pg::reopen(&again)),
                    spill: loc.spill(),
                    window: reconnect_window(),
                };
                (None, Writer::start_with(conn, Some(resilience)))
            }
        };
        let (lock, writer) = writer;
        // In the writer's first transaction, before anything else is written.
        let uncertain = writer.write_blocking(recover)?;
        Ok((
            Checkpoint {
                place: place.clone(),
                writer,
                _lock: lock,
                sharing: Sharing::Alone,
            },
            Recovery { uncertain },
        ))
    }

    pub(crate) fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Makes this checkpoint's writes those of `sharing` (a worker's are fenced by its
    /// claims).
    pub(crate) fn set_sharing(&mut self, sharing: Sharing) {
        if let Some(id) = sharing.worker_id() {
            self.writer.set_worker(id);
        }
        self.sharing = sharing;
    }

    /// How this process shares the checkpoint.
    pub(crate) fn sharing(&self) -> &Sharing {
        &self.sharing
    }

    /// Waits until every write queued so far is durable.
    pub(crate) async fn flush(&self) -> Result<(), CheckpointError> {
        self.writer.write(|_| Ok(())).await
    }

    /// Where the checkpoint lives: a state directory or a PostgreSQL schema.
    pub fn place(&self) -> &Place {
        &self.place
    }

    /// A new read connection (WAL readers do not block the writer).
    pub(crate) fn reader(&self) -> Result<Conn, CheckpointError> {
        open_reader_at(&self.place)
    }

    /// A read connection that is made again when the database drops it (see [`ReadLink`]).
    pub(crate) fn read_link(&self) -> Result<ReadLink, CheckpointError> {
        Ok(ReadLink {
            place: self.place.clone(),
            conn: Some(self.reader()?),
        })
    }

    /// Applies one update durably (group-committed).
    pub async fn apply(&self, update: Update) -> Result<(), CheckpointError> {
        self.apply_fenced(update, true).await
    }

    /// Applies an update to a VIN this worker does not hold (failing a VIN parked earlier):
    /// `Fenced` when another worker holds it now, which then decides it.
    pub(crate) async fn apply_unheld(&self, update: Update) -> Result<(), CheckpointError> {
        self.apply_fenced(update, false).await
    }

    async fn apply_fenced(&self, update: Update, own: bool) -> Result<(), CheckpointError> {
        #[cfg(feature = "pg")]
        let update = if matches!(self.place, Place::Pg(_)) {
            update.without_nul()
        } else {
            update
        };
        let fence = self.sharing.fence(own);
        match self.writer.apply(update, fence).await? {
            Applied::Yes => Ok(()),
            Applied::Fenced(vin) => Err(CheckpointError::Fenced(vin)),
        }
    }

    /// `vmr poll --retry-expired`: every `expired` VIN goes back to `pending` with its stored
    /// requestId, due now, so its report (already paid for) is asked for again instead of
    /// bought again. Its poll deadline stays where it was, so a get still answered 701 expires
    /// it again at no cost. Returns how many were reopened.
    pub(crate) fn reopen_expired(&self) -> Result<u64, CheckpointError> {
        debug_assert!(State::Expired.can_go(State::Pending));
        self.writer.write_blocking(move |c| {
            c.execute(
                "UPDATE vins SET state = 'pending', next_poll_at = ?1, poll_interval_ms = NULL,
                    completed_at = NULL,
                    message = 'expired, asked again by its requestId (--retry-expired)'
                 WHERE state = 'expired' AND request_id IS NOT NULL",
                p![crate::api::now_ms()],
            )
        })
    }

    /// Records the start of a run and returns its id.
    pub(crate) fn begin_run(&self, command: &str) -> Result<i64, CheckpointError> {
        let command = command.to_owned();
        self.writer.write_blocking(move |c| {
            c.query_row(
                "INSERT INTO runs (command, started_at) VALUES (?1, ?2) RETURNING id",
                p![command, crate::api::now_ms()],
                |r| r.get(0),
            )
        })
    }

    /// Records how a run ended.
    pub(crate) fn end_run(
        &self,
        id: i64,
        exit_code: i32,
        outcome: &str,
    ) -> Result<(), CheckpointError> {
        let outcome = outcome.to_owned();
        self.writer.write_blocking(move |c| {
            c.execute(
                "UPDATE runs SET ended_at = ?1, exit_code = ?2, outcome = ?3 WHERE id = ?4",
                p![crate::api::now_ms(), i64::from(exit_code), outcome, id],
            )?;
            Ok(())
        })
    }
}
