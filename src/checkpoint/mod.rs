//! The checkpoint: one SQLite file per state directory, the only source of truth for a batch.
//!
//! It holds every VIN's state, every vendor call's outcome and the raw body of every report
//! bought, byte for byte, so any stage can be killed at any instant and started again, and export
//! can always be redone offline. Writes go through one writer thread with group commit
//! (`writer`); every state change goes through the state machine (`state`). One process at a
//! time holds a state directory, by an advisory lock on `<state>/lock`.

#[cfg(feature = "pg")]
pub mod copy;
pub mod db;
#[cfg(feature = "pg")]
pub mod pg;
pub mod state;
#[cfg(feature = "pg")]
pub mod workers;
mod writer;

pub use db::{Conn, p};

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub use state::{IllegalTransition, State};
pub use writer::Writer;

/// The schema this build writes. Bump it with a new entry in `MIGRATIONS`.
pub(crate) const SCHEMA_VERSION: i64 = 3;

/// Forward migrations: entry `i` takes a checkpoint from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE batches (
    id TEXT PRIMARY KEY,
    input_file TEXT NOT NULL,
    first_seen_at INTEGER NOT NULL,
    rows_read INTEGER NOT NULL DEFAULT 0,
    accepted INTEGER NOT NULL DEFAULT 0,
    duplicates INTEGER NOT NULL DEFAULT 0,
    rejected INTEGER NOT NULL DEFAULT 0,
    check_digit_warnings INTEGER NOT NULL DEFAULT 0,
    complete INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE vins (
    id INTEGER PRIMARY KEY,
    vin TEXT NOT NULL,
    license_img_url TEXT,
    state TEXT NOT NULL,
    code INTEGER,
    message TEXT,
    request_id TEXT,
    task_no TEXT,
    submit_attempts INTEGER NOT NULL DEFAULT 0,
    poll_attempts INTEGER NOT NULL DEFAULT 0,
    billed_calls INTEGER NOT NULL DEFAULT 0,
    unknown_calls INTEGER NOT NULL DEFAULT 0,
    next_poll_at INTEGER,
    poll_interval_ms INTEGER,
    first_seen_at INTEGER NOT NULL,
    submitted_at INTEGER,
    completed_at INTEGER,
    input_file TEXT,
    input_line INTEGER,
    batch_id TEXT,
    check_digit_ok INTEGER
);
CREATE UNIQUE INDEX vins_vin ON vins (vin) WHERE state <> 'rejected';
CREATE UNIQUE INDEX vins_rejected_row ON vins (batch_id, input_line) WHERE state = 'rejected';
CREATE INDEX vins_state ON vins (state, next_poll_at);
CREATE TABLE calls (
    id INTEGER PRIMARY KEY,
    vin_id INTEGER NOT NULL,
    endpoint TEXT NOT NULL,
    request_id TEXT,
    http_status INTEGER,
    code INTEGER,
    msg TEXT,
    task_no TEXT,
    billed INTEGER NOT NULL,
    delivery TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER NOT NULL,
    error TEXT
);
CREATE INDEX calls_vin ON calls (vin_id);
CREATE TABLE reports (
    vin_id INTEGER PRIMARY KEY,
    vin TEXT NOT NULL,
    request_id TEXT,
    task_no TEXT,
    endpoint TEXT NOT NULL,
    fetched_at INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    command TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    exit_code INTEGER,
    outcome TEXT
);
"#,
    r#"
-- When the billed generate that issued the requestId answered: the poll timeout counts from it.
ALTER TABLE vins ADD COLUMN accepted_at INTEGER;
UPDATE vins SET accepted_at = (
    SELECT max(c.ended_at) FROM calls c
    WHERE c.vin_id = vins.id AND c.endpoint = 'generate' AND (c.billed = 1 OR c.code = 701)
) WHERE request_id IS NOT NULL;
-- The raw body of a billed answer that is not stored as a report (a requestId to poll, or
-- nothing usable).
ALTER TABLE calls ADD COLUMN body BLOB;
-- Every settlement of an uncertain VIN by a person (`vmr resolve`).
CREATE TABLE resolutions (
    id INTEGER PRIMARY KEY,
    vin_id INTEGER NOT NULL,
    at INTEGER NOT NULL,
    action TEXT NOT NULL,
    request_id TEXT,
    note TEXT,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL
);
"#,
    r#"
-- Re-audits: a VIN may be bought more than once (docs/design.md, "Purchases and versions").
-- `vins` holds the VIN's current purchase; `purchase` numbers it (1 for the first).
ALTER TABLE vins ADD COLUMN purchase INTEGER NOT NULL DEFAULT 1;
-- The purchase each call belonged to.
ALTER TABLE calls ADD COLUMN purchase INTEGER NOT NULL DEFAULT 1;
-- Every report version of a VIN, kept byte for byte: version 1 is its first report.
CREATE TABLE reports_v3 (
    vin_id INTEGER NOT NULL,
    version INTEGER NOT NULL,
    purchase INTEGER NOT NULL,
    vin TEXT NOT NULL,
    request_id TEXT,
    task_no TEXT,
    endpoint TEXT NOT NULL,
    fetched_at INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (vin_id, version)
);
INSERT INTO reports_v3 (vin_id, version, purchase, vin, request_id, task_no, endpoint, fetched_at, body)
    SELECT vin_id, 1, 1, vin, request_id, task_no, endpoint, fetched_at, body FROM reports;
DROP TABLE reports;
ALTER TABLE reports_v3 RENAME TO reports;
-- The earlier purchases of a VIN, each as it ended, moved here when the next one starts.
CREATE TABLE purchases (
    vin_id INTEGER NOT NULL,
    purchase INTEGER NOT NULL,
    state TEXT NOT NULL,
    code INTEGER,
    message TEXT,
    request_id TEXT,
    task_no TEXT,
    submitted_at INTEGER,
    accepted_at INTEGER,
    completed_at INTEGER,
    report_version INTEGER,
    PRIMARY KEY (vin_id, purchase)
);
-- Which VINs each input file holds (a VIN first seen in an older file is in the newer one too).
CREATE TABLE batch_vins (
    batch_id TEXT NOT NULL,
    vin_id INTEGER NOT NULL,
    PRIMARY KEY (batch_id, vin_id)
) WITHOUT ROWID;
INSERT OR IGNORE INTO batch_vins (batch_id, vin_id)
    SELECT batch_id, id FROM vins WHERE state <> 'rejected' AND batch_id IS NOT NULL;
"#,
];

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "state directory {dir} is in use by another vmr (pid {pid}); wait for it to finish or use another --state"
    )]
    Locked { dir: PathBuf, pid: String },
    #[error("state directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "checkpoint {path} has schema version {found}, newer than this vmr understands ({SCHEMA_VERSION}); upgrade vmr (the checkpoint was not changed)"
    )]
    TooNew { path: PathBuf, found: i64 },
    #[error("no checkpoint at {0}; run `vmr ingest` or `vmr run` first")]
    Missing(PathBuf),
    #[error(transparent)]
    Sql(#[from] rusqlite::Error),
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    #[error("VIN id {0} is not in the checkpoint")]
    UnknownVin(i64),
    #[error("checkpoint commit failed: {0}")]
    Commit(String),
    #[error("the checkpoint writer stopped")]
    WriterGone,
    #[error("{0} already exists; a backup never overwrites a file: choose a new path")]
    BackupExists(PathBuf),
    #[error("PostgreSQL: {0}")]
    Db(String),
    /// A worker's write for a VIN whose claim had lapsed (another worker may hold it now): the
    /// call it carried is in the call log, the VIN was not changed.
    #[error(
        "VIN {0}: this worker's claim on it lapsed, or another worker moved it; the late answer was kept in the call log and the VIN left as it was"
    )]
    Fenced(String),
    #[error(transparent)]
    #[cfg(feature = "pg")]
    Pg(#[from] pg::PgError),
}

/// The path of the database inside a state directory.
pub fn db_path(state_dir: &Path) -> PathBuf {
    state_dir.join("checkpoint.sqlite")
}

/// The held lock on a state directory; released when dropped (and by the kernel if the process
/// dies, so a dead holder never blocks).
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, CheckpointError> {
        let io = |source| CheckpointError::Io {
            dir: dir.to_owned(),
            source,
        };
        create_private_dir(dir).map_err(io)?;
        let lock_path = dir.join("lock");
        let mut file = private_file_options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io)?;
        set_private(&lock_path).map_err(io)?;
        // A reader (`vmr status`) holds a shared lock for an instant to see whether a vmr runs;
        // a writer starting at that instant waits it out instead of failing.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let locked = loop {
            match file.try_lock() {
                Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other,
            }
        };
        match locked {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(CheckpointError::Locked {
                    dir: dir.to_owned(),
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid.into()
                    },
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(DirLock { _file: file })
    }
}

/// Mode of the state directory: only its owner may list or enter it.
#[cfg(unix)]
const DIR_MODE: u32 = 0o700;
/// Mode of every checkpoint file (database, `-wal`, `-shm`, lock) and of a backup: the reports
/// bought are personal data (VINs, maintenance history), readable by their owner only.
#[cfg(unix)]
const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and its missing parents) with the state directory's mode, whatever the umask;
/// an existing directory is left as it is (it may be a mount point that is not ours to change).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, DIR_MODE);
    match builder.create(dir) {
        Ok(()) => {}
        // Another vmr created it between the check and here.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(e),
    }
    // The umask can only narrow the mode given at creation; set it explicitly all the same.
    #[cfg(unix)]
    fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(DIR_MODE))?;
    Ok(())
}

/// Options that create a file with the checkpoint files' mode (the umask may narrow it).
pub(crate) fn private_file_options() -> OpenOptions {
    #[allow(unused_mut)]
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, FILE_MODE);
    o
}

/// Sets `path` to the checkpoint files' mode (owner read and write only).
pub(crate) fn set_private(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    fs::set_permissions(
        path,
        std::os::unix::fs::PermissionsExt::from_mode(FILE_MODE),
    )?;
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// The database with its `-wal` and `-shm` companions.
fn db_files(db: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut s = db.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    [db.to_owned(), with("-wal"), with("-shm")]
}

/// Sets the database and its `-wal` and `-shm` (those present) to owner-only, so a state
/// directory written by an older vmr, or under a loose umask, is tightened when opened for
/// writing.
fn tighten_db_files(db: &Path) -> std::io::Result<()> {
    for f in db_files(db) {
        match set_private(&f) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other?,
        }
    }
    Ok(())
}

/// Whether a vmr process holds the state directory now. Checked with a shared lock taken and
/// released at once, so a reader never blocks a writer for longer than that instant.
pub(crate) fn writer_running(dir: &Path) -> bool {
    let Ok(file) = File::open(dir.join("lock")) else {
        return false;
    };
    match file.try_lock_shared() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(_) => true,
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // A 32 MiB page cache keeps the VIN index in memory while a large batch is ingested, and a
    // larger WAL between checkpoints means fewer, larger copies back into the database file.
    conn.pragma_update(None, "cache_size", -32768)?;
    conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), CheckpointError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(CheckpointError::TooNew {
            path: path.to_owned(),
            found: version,
        });
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    // Every step in one transaction: a checkpoint is never left between two schemas, and a new
    // one costs one commit, not one per step.
    let tx = conn.transaction()?;
    for sql in MIGRATIONS.iter().skip(version as usize) {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Locks `state_dir` (creating it), and opens its checkpoint for writing (creating it), migrated
/// to [`SCHEMA_VERSION`], every file owner-only.
pub(crate) fn create_locked(state_dir: &Path) -> Result<(DirLock, Connection), CheckpointError> {
    let lock = DirLock::acquire(state_dir)?;
    let path = db_path(state_dir);
    let open_err = |source| CheckpointError::Open {
        path: path.clone(),
        source,
    };
    let io = |source| CheckpointError::Io {
        dir: state_dir.to_owned(),
        source,
    };
    // Created empty with the private mode before SQLite opens it (an empty file is an empty
    // database): SQLite gives the `-wal` and `-shm` it creates the database file's mode.
    private_file_options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    let mut conn = Connection::open(&path).map_err(open_err)?;
    configure(&conn).map_err(open_err)?;
    migrate(&mut conn, &path)?;
    tighten_db_files(&path).map_err(io)?;
    Ok((lock, conn))
}

/// Where a checkpoint lives: a state directory (SQLite), or a schema in PostgreSQL.
#[derive(Debug, Clone)]
pub enum Place {
    Dir(PathBuf),
    #[cfg(feature = "pg")]
    Pg(Box<pg::PgLocation>),
}

impl Place {
    /// A `postgres://` URL or a state directory. `from_args`: given on the command line (a URL
    /// there may not hold a password).
    pub fn parse(s: &str, from_args: bool) -> Result<Place, String> {
        #[cfg(feature = "pg")]
        if pg::is_pg_url(s) {
            return pg::PgLocation::parse(s, from_args)
                .map(|p| Place::Pg(Box::new(p)))
                .map_err(|e| e.to_string());
        }
        let _ = from_args;
        if s.contains("://") {
            // Not echoed: a URL may hold a password.
            return Err("a state is a directory or a postgres:// URL".into());
        }
        Ok(Place::Dir(PathBuf::from(s)))
    }

    /// The state directory, for what only a directory has.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            Place::Dir(d) => Some(d),
            #[cfg(feature = "pg")]
            Place::Pg(_) => None,
        }
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Dir(d) => write!(f, "{}", d.display()),
            #[cfg(feature = "pg")]
            Place::Pg(p) => write!(f, "{p}"),
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
    /// This process as a worker of a PostgreSQL checkpoint: its writes are fenced by its claims.
    #[cfg(feature = "pg")]
    worker: Option<std::sync::Arc<workers::Worker>>,
}

/// What opening found and repaired.
#[derive(Debug, Default, Clone)]
pub struct Recovery {
    /// VINs that were `submitting` when the last process died, now `uncertain`.
    pub uncertain: Vec<String>,
}

/// Turns every `submitting` VIN into `uncertain` (the process that sent its generate is gone)
/// and lists them. In PostgreSQL only those whose claim has lapsed (or that no worker claims):
/// a live worker may have its call in flight.
fn recover(conn: &Conn) -> Result<Vec<String>, CheckpointError> {
    #[cfg(feature = "pg")]
    if matches!(conn, Conn::Pg(_)) {
        workers::reap_dead_here(conn)?;
        let mut vins: Vec<String> = conn.query_map(
            &format!(
                "UPDATE vins SET state = 'uncertain', message = 'the process stopped while generate was in flight; the vendor may have billed it',
                    claimed_by = NULL, claim_until = NULL
                 WHERE state = 'submitting' AND (claimed_by IS NULL OR claim_until IS NULL OR claim_until < {})
                 RETURNING vin",
                workers::DB_NOW
            ),
            p![],
            |r| r.get(0),
        )?;
        vins.sort();
        return Ok(vins);
    }
    let vins: Vec<String> = conn.query_map(
        "SELECT vin FROM vins WHERE state = 'submitting' ORDER BY id",
        p![],
        |r| r.get(0),
    )?;
    conn.execute(
        "UPDATE vins SET state = 'uncertain', message = 'the process stopped while generate was in flight; the vendor may have billed it' WHERE state = 'submitting'",
        p![],
    )?;
    Ok(vins)
}

impl Checkpoint {
    /// Opens (creating if needed) the checkpoint in `state_dir`, takes the lock, migrates the
    /// schema, and turns every `submitting` VIN into `uncertain`.
    pub fn open(state_dir: &Path) -> Result<(Checkpoint, Recovery), CheckpointError> {
        Checkpoint::open_at(&Place::Dir(state_dir.to_owned()))
    }

    /// [`Checkpoint::open`] for a state directory or a PostgreSQL schema.
    pub fn open_at(place: &Place) -> Result<(Checkpoint, Recovery), CheckpointError> {
        let (lock, conn) = match place {
            Place::Dir(dir) => {
                let (lock, conn) = create_locked(dir)?;
                (Some(std::sync::Arc::new(lock)), Conn::Lite(conn))
            }
            #[cfg(feature = "pg")]
            Place::Pg(loc) => (None, pg::open(loc)?),
        };
        let writer = Writer::start(conn);
        // In the writer's first transaction, before anything else is written.
        let uncertain = writer.write_blocking(recover)?;
        Ok((
            Checkpoint {
                place: place.clone(),
                writer,
                _lock: lock,
                #[cfg(feature = "pg")]
                worker: None,
            },
            Recovery { uncertain },
        ))
    }

    pub(crate) fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Makes this checkpoint's writes those of `worker`: fenced by its claims.
    #[cfg(feature = "pg")]
    pub(crate) fn set_worker(&mut self, worker: std::sync::Arc<workers::Worker>) {
        self.worker = Some(worker);
    }

    /// This process as a worker of a PostgreSQL checkpoint, if it is one.
    #[cfg(feature = "pg")]
    pub(crate) fn worker(&self) -> Option<&std::sync::Arc<workers::Worker>> {
        self.worker.as_ref()
    }

    /// Waits until every write queued so far is durable.
    pub(crate) async fn flush(&self) -> Result<(), CheckpointError> {
        self.writer.write(|_| Ok(())).await
    }

    pub fn place(&self) -> &Place {
        &self.place
    }

    /// A new read connection (WAL readers do not block the writer).
    pub(crate) fn reader(&self) -> Result<Conn, CheckpointError> {
        open_reader_at(&self.place)
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
        #[cfg(feature = "pg")]
        let fence = self.worker.as_ref().map(|w| Fence {
            worker: w.id,
            lease_ms: w.lease_ms(),
            own,
        });
        #[cfg(not(feature = "pg"))]
        let fence = {
            let _ = own;
            None
        };
        match self
            .writer
            .write(move |conn| apply_update(conn, update, fence))
            .await?
        {
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

/// The checkpoint as messages and `status` name it: its file, or its PostgreSQL location.
pub fn describe(place: &Place) -> String {
    match place {
        Place::Dir(dir) => db_path(dir).display().to_string(),
        #[cfg(feature = "pg")]
        Place::Pg(loc) => loc.to_string(),
    }
}

/// Opens a read connection to an existing checkpoint, in a directory or in PostgreSQL.
pub fn open_reader_at(place: &Place) -> Result<Conn, CheckpointError> {
    match place {
        Place::Dir(dir) => Ok(Conn::Lite(open_reader(&db_path(dir))?)),
        #[cfg(feature = "pg")]
        Place::Pg(loc) => pg::open_reader(loc),
    }
}

/// Whether a vmr holds the checkpoint for writing now.
pub(crate) fn writer_running_at(place: &Place) -> bool {
    match place {
        Place::Dir(dir) => writer_running(dir),
        #[cfg(feature = "pg")]
        Place::Pg(loc) => pg::held(loc),
    }
}

/// Opens a read-only connection to an existing checkpoint.
pub fn open_reader(path: &Path) -> Result<Connection, CheckpointError> {
    if !path.exists() {
        return Err(CheckpointError::Missing(path.to_owned()));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| CheckpointError::Open {
        path: path.to_owned(),
        source,
    })?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(CheckpointError::TooNew {
            path: path.to_owned(),
            found: version,
        });
    }
    if version < SCHEMA_VERSION {
        // A checkpoint from an older vmr that no writer has opened since: readers (status,
        // export, backup) read this schema only, so it is migrated first, under the lock.
        drop(conn);
        upgrade(path)?;
        return open_reader(path);
    }
    Ok(conn)
}

/// Migrates the checkpoint at `path` to [`SCHEMA_VERSION`], holding the state directory's lock
/// for the moment it takes (a vmr writing it now has migrated it already).
fn upgrade(path: &Path) -> Result<(), CheckpointError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let _lock = DirLock::acquire(dir)?;
    let open_err = |source| CheckpointError::Open {
        path: path.to_owned(),
        source,
    };
    let mut conn = Connection::open(path).map_err(open_err)?;
    configure(&conn).map_err(open_err)?;
    migrate(&mut conn, path)?;
    tighten_db_files(path).map_err(|source| CheckpointError::Io {
        dir: dir.to_owned(),
        source,
    })?;
    Ok(())
}

/// What [`backup`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub bytes: u64,
    pub vins: i64,
    pub reports: i64,
}

/// Writes a consistent copy of the checkpoint in `state_dir` to `dest` with SQLite's
/// `VACUUM INTO`, from a read connection: it takes no lock on the state directory, so it runs
/// while another vmr writes, and the copy is the checkpoint as of one instant (a WAL read
/// snapshot), compacted. `dest` must not exist; the copy is created owner-only (`0600`) and
/// fsynced. On failure nothing is left at `dest`.
pub fn backup(state_dir: &Path, dest: &Path) -> Result<Backup, CheckpointError> {
    let conn = open_reader(&db_path(state_dir))?;
    let io = |source| CheckpointError::Io {
        dir: dest.to_owned(),
        source,
    };
    let Some(dest_str) = dest.to_str() else {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the backup path is not valid UTF-8",
        )));
    };
    // Created empty (VACUUM INTO accepts an empty file) and owner-only before a byte is written;
    // `create_new` refuses an existing path without a window for a race.
    match private_file_options()
        .write(true)
        .create_new(true)
        .open(dest)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(CheckpointError::BackupExists(dest.to_owned()));
        }
        Err(e) => return Err(io(e)),
    }
    let written = (|| {
        set_private(dest).map_err(io)?;
        conn.execute("VACUUM INTO ?1", [dest_str])?;
        File::open(dest).and_then(|f| f.sync_all()).map_err(io)?;
        let parent = dest.parent().filter(|p| !p.as_os_str().is_empty());
        let parent = parent.unwrap_or(Path::new("."));
        if let Ok(d) = File::open(parent) {
            // Makes the new directory entry durable; not every filesystem allows it.
            let _ = d.sync_all();
        }
        let copy = open_reader(dest)?;
        let (vins, reports) = copy.query_row(
            "SELECT (SELECT count(*) FROM vins), (SELECT count(*) FROM reports)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let bytes = fs::metadata(dest).map_err(io)?.len();
        Ok(Backup {
            bytes,
            vins,
            reports,
        })
    })();
    if written.is_err() {
        let _ = fs::remove_file(dest);
    }
    written
}

/// One vendor call, as the call log records it.
/// What a call may have cost: the money rules' classes (docs/design.md, "Money rules").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallClass {
    /// Code 200 in a 2xx answer.
    Billed,
    /// An answer that is never billed: another vendor code, or a non-2xx HTTP status.
    NotBilled,
    /// The request never left.
    NotSent,
    /// Sent, but no readable answer came back: the vendor may have billed it.
    Unknown,
}

impl CallClass {
    /// The call log's `delivery` column: whether an answer came at all.
    fn delivery(self) -> &'static str {
        match self {
            CallClass::Billed | CallClass::NotBilled => "answered",
            CallClass::NotSent => "not_sent",
            CallClass::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CallLog {
    pub endpoint: crate::api::Endpoint,
    pub request_id: Option<String>,
    pub http_status: Option<u16>,
    pub code: Option<i64>,
    pub msg: Option<String>,
    pub task_no: Option<String>,
    pub class: CallClass,
    pub started_at: i64,
    pub ended_at: i64,
    pub error: Option<String>,
    /// The raw body, kept for a billed answer that is not stored as a report.
    pub body: Option<Vec<u8>>,
}

/// A report bought, stored byte for byte.
#[derive(Debug, Clone)]
pub struct ReportRow {
    pub request_id: Option<String>,
    pub task_no: Option<String>,
    pub endpoint: &'static str,
    pub fetched_at: i64,
    pub body: Vec<u8>,
}

/// One change to one VIN, applied in one transaction: an optional call-log row, an optional
/// state change (checked by the state machine), field updates, and an optional report.
#[derive(Debug, Clone, Default)]
pub struct Update {
    pub vin_id: i64,
    pub to: Option<State>,
    pub call: Option<CallLog>,
    /// Sets the VIN's last code (with `message`) when `Some`.
    pub code: Option<Option<i64>>,
    pub message: Option<String>,
    pub request_id: Option<String>,
    pub task_no: Option<String>,
    /// `Some(None)` clears the next poll time.
    pub next_poll_at: Option<Option<i64>>,
    pub poll_interval_ms: Option<i64>,
    /// When the billed generate that issued the VIN's requestId answered.
    pub accepted_at: Option<i64>,
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
}

impl Update {
    /// The update with every NUL character in its text (a vendor's message, say) replaced by
    /// U+FFFD: PostgreSQL text cannot hold NUL, and the write (with the report it may carry)
    /// must not fail for it. Bodies are bytes and stay as they are.
    #[cfg(feature = "pg")]
    fn without_nul(mut self) -> Update {
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
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "pg"), allow(dead_code))]
struct Fence {
    worker: i64,
    lease_ms: i64,
    /// The worker holds the VIN (its own task's): the claim must hold. Else no other live
    /// claim may hold it.
    own: bool,
}

/// Whether an update changed its VIN.
enum Applied {
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

fn apply_update(conn: &Conn, u: Update, fence: Option<Fence>) -> Result<Applied, CheckpointError> {
    if let Some(f) = fence
        && !claim_holds(conn, u.vin_id, f)?
    {
        return fenced(
            conn,
            u,
            "this worker's claim on the VIN lapsed; its answer is kept in the call log and the VIN left as it is",
        );
    }
    // The world the update was made for: the state it expects, and (for a worker, whose VIN
    // another worker may have moved meanwhile) a legal move from the state the VIN is in now.
    if u.expect.is_some() || fence.is_some() {
        let (current, changed) = world_changed(conn, &u)?;
        if u.expect.is_some_and(|e| e != current) || (fence.is_some() && changed) {
            return fenced(
                conn,
                u,
                "the VIN changed since this answer was asked for; the answer is kept in the call log and the VIN left as it is",
            );
        }
    }
    apply_owned(conn, &u)?;
    Ok(Applied::Yes)
}

/// The VIN's state now, and whether `u`'s move is no longer legal from it.
fn world_changed(conn: &Conn, u: &Update) -> Result<(State, bool), CheckpointError> {
    let current: String = conn
        .query_opt("SELECT state FROM vins WHERE id = ?1", p![u.vin_id], |r| {
            r.get(0)
        })?
        .ok_or(CheckpointError::UnknownVin(u.vin_id))?;
    let current: State = current.parse().map_err(CheckpointError::Commit)?;
    let from = if u.rebuy { State::Queued } else { current };
    let illegal = (u.rebuy && !current.can_rebuy()) || u.to.is_some_and(|to| !from.can_go(to));
    Ok((current, illegal))
}

/// Leaves the VIN as it is and keeps what `u` carried: nothing paid is lost. The call is
/// logged, and a report it carried is kept as the call's body.
fn fenced(conn: &Conn, mut u: Update, why: &str) -> Result<Applied, CheckpointError> {
    let vin: String = conn.query_row("SELECT vin FROM vins WHERE id = ?1", p![u.vin_id], |r| {
        r.get(0)
    })?;
    if let Some(mut call) = u.call.take() {
        if call.body.is_none() {
            call.body = u.report.take().map(|r| r.body);
        }
        log_call(conn, u.vin_id, &call)?;
    }
    tracing::warn!(vin = vin.as_str(), "{why}");
    Ok(Applied::Fenced(vin))
}

fn apply_owned(conn: &Conn, u: &Update) -> Result<(), CheckpointError> {
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
        current.check(to, &vin)?;
        conn.execute(
            "UPDATE vins SET state = ?2,
                submitted_at = CASE WHEN ?2 = 'submitting' THEN coalesce(submitted_at, ?3) ELSE submitted_at END,
                completed_at = CASE WHEN ?4 THEN ?3 ELSE completed_at END
             WHERE id = ?1",
            p![u.vin_id, to.as_str(), crate::api::now_ms(), to.is_final()],
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
                r.endpoint,
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
            submitted_at, accepted_at, completed_at, report_version)
         SELECT v.id, v.purchase, v.state, v.code, v.message, v.request_id, v.task_no,
            v.submitted_at, v.accepted_at, v.completed_at,
            (SELECT max(version) FROM reports r WHERE r.vin_id = v.id AND r.purchase = v.purchase)
         FROM vins v WHERE v.id = ?1",
        p![vin_id],
    )?;
    conn.execute(
        "UPDATE vins SET purchase = purchase + 1, state = 'queued', code = NULL, message = NULL,
            request_id = NULL, task_no = NULL, next_poll_at = NULL, poll_interval_ms = NULL,
            submitted_at = NULL, accepted_at = NULL, completed_at = NULL
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
                completed_at, purchase) =
            (SELECT p.state, p.code, p.message, p.request_id, p.task_no, p.submitted_at,
                p.accepted_at, p.completed_at, p.purchase
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
        "INSERT INTO calls (vin_id, endpoint, request_id, http_status, code, msg, task_no, billed, delivery, started_at, ended_at, error, body, purchase)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,
            (SELECT purchase FROM vins WHERE id = ?1))",
        p![
            vin_id,
            call.endpoint.as_str(),
            call.request_id,
            call.http_status.map(i64::from),
            call.code,
            call.msg,
            call.task_no,
            (call.class == CallClass::Billed) as i64,
            call.class.delivery(),
            call.started_at,
            call.ended_at,
            call.error,
            call.body
        ],
    )?;
    let sent = call.class != CallClass::NotSent;
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
            (call.class == CallClass::Billed) as i64,
            (call.class == CallClass::Unknown) as i64
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

/// A VIN to send to generate.
#[derive(Debug, Clone)]
pub(crate) struct SubmitTodo {
    pub vin_id: i64,
    pub vin: String,
    pub license_img_url: String,
    pub state: State,
}

/// A VIN to poll with get.
#[derive(Debug, Clone)]
pub(crate) struct PollTodo {
    pub vin_id: i64,
    pub vin: String,
    pub request_id: String,
    /// When the billed generate that issued the requestId answered (the poll timeout's start).
    pub accepted_at: i64,
    pub poll_interval_ms: Option<i64>,
}

/// Which VINs whose purchase has ended a submit buys again (docs/design.md, "Purchases and
/// versions"). The default buys nothing again.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Rebuy {
    /// Only VINs of this input (batch id); `None`: any VIN of the checkpoint.
    pub batch: Option<String>,
    /// `done` VINs whose latest report was fetched before this instant (ms since the epoch).
    pub refresh_before: Option<i64>,
    /// `failed` VINs to send again: `None` none, an empty list all of them, else those whose
    /// last code or kind is listed.
    pub retry_failed: Option<Vec<FailedKind>>,
    /// `expired` VINs to send again.
    pub retry_expired: bool,
}

/// A kind of failure `--retry-failed` names: a vendor code, or `billed_unusable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailedKind {
    Code(i64),
    BilledUnusable,
}

impl std::str::FromStr for FailedKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "billed_unusable" {
            return Ok(FailedKind::BilledUnusable);
        }
        s.parse::<i64>()
            .map(FailedKind::Code)
            .map_err(|_| format!("{s:?} is not a vendor code (like 702) or billed_unusable"))
    }
}

/// How many VINs a [`Rebuy`] would send again, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct RebuyCounts {
    pub refresh: i64,
    pub retry_failed: i64,
    pub retry_expired: i64,
}

impl RebuyCounts {
    pub(crate) fn total(&self) -> i64 {
        self.refresh + self.retry_failed + self.retry_expired
    }
}

impl Rebuy {
    /// Whether it buys anything again.
    pub(crate) fn any(&self) -> bool {
        self.refresh_before.is_some() || self.retry_failed.is_some() || self.retry_expired
    }

    /// The SQL condition on `vins v` for each reason, in the order refresh, failed, expired;
    /// `?1` is bound to the batch, `?2` to `refresh_before`. Only literals are built in.
    fn conditions(&self) -> [String; 3] {
        use state::BILLED_UNUSABLE;
        let failed = match &self.retry_failed {
            None => "FALSE".to_owned(),
            Some(kinds) if kinds.is_empty() => "TRUE".to_owned(),
            Some(kinds) => {
                let mut any: Vec<String> = kinds
                    .iter()
                    .map(|k| match k {
                        FailedKind::Code(c) => {
                            format!("(v.code = {c} AND coalesce(v.message, '') NOT LIKE '{BILLED_UNUSABLE}%')")
                        }
                        FailedKind::BilledUnusable => {
                            format!("coalesce(v.message, '') LIKE '{BILLED_UNUSABLE}%'")
                        }
                    })
                    .collect();
                any.dedup();
                format!("({})", any.join(" OR "))
            }
        };
        let in_batch = "(CAST(?1 AS TEXT) IS NULL OR EXISTS (SELECT 1 FROM batch_vins b WHERE b.batch_id = CAST(?1 AS TEXT) AND b.vin_id = v.id))";
        [
            format!(
                "(v.state = 'done' AND CAST(?2 AS BIGINT) IS NOT NULL AND {in_batch}
                  AND (SELECT max(fetched_at) FROM reports r WHERE r.vin_id = v.id) < CAST(?2 AS BIGINT))"
            ),
            format!("(v.state = 'failed' AND {failed} AND {in_batch})"),
            format!(
                "(v.state = 'expired' AND {} AND {in_batch})",
                if self.retry_expired { "TRUE" } else { "FALSE" }
            ),
        ]
    }
}

/// How many VINs `rebuy` would send again now.
pub(crate) fn rebuy_counts(conn: &Conn, rebuy: &Rebuy) -> Result<RebuyCounts, CheckpointError> {
    if !rebuy.any() {
        return Ok(RebuyCounts::default());
    }
    let [refresh, failed, expired] = rebuy.conditions();
    let count =
        |c: &str| format!("CAST(coalesce(sum(CASE WHEN {c} THEN 1 ELSE 0 END), 0) AS BIGINT)");
    let sql = format!(
        "SELECT {}, {}, {} FROM vins v WHERE v.state IN ('done', 'failed', 'expired')",
        count(&refresh),
        count(&failed),
        count(&expired)
    );
    conn.query_row(&sql, p![rebuy.batch, rebuy.refresh_before], |r| {
        Ok(RebuyCounts {
            refresh: r.get(0)?,
            retry_failed: r.get(1)?,
            retry_expired: r.get(2)?,
        })
    })
}

/// A worker claiming the VINs it selects: its id and lease.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "pg"), allow(dead_code))]
pub(crate) struct Claim {
    pub worker: i64,
    pub lease_ms: i64,
}

/// `select` (a query on `vins v` returning `v.id` first, in id order, with `n` parameters) as
/// a claim: each row it finds that no live claim holds is claimed for the worker (parameter
/// `n + 1`, its lease `n + 2`), skipping rows another transaction holds, and the claimed rows'
/// `columns` (on `t`) returned.
#[cfg(feature = "pg")]
fn claiming(select: &str, columns: &str, n: usize) -> String {
    let now = workers::DB_NOW;
    let select = select.replacen(
        "WHERE ",
        &format!("WHERE (v.claimed_by IS NULL OR v.claim_until < {now}) AND "),
        1,
    );
    format!(
        "WITH c AS ({select} FOR UPDATE OF v SKIP LOCKED)
         UPDATE vins t SET claimed_by = ?{}, claim_until = {now} + ?{} FROM c WHERE t.id = c.id
         RETURNING {columns}",
        n + 1,
        n + 2
    )
}

/// Runs a page query, or its claiming form when `claim` is given (rows in id order).
fn page_query<T>(
    conn: &Conn,
    select: &str,
    columns: &str,
    params: &[&dyn db::Param],
    claim: Option<Claim>,
    row: impl Fn(&db::Row<'_>) -> Result<T, CheckpointError>,
    id: impl Fn(&T) -> i64,
) -> Result<Vec<T>, CheckpointError> {
    let Some(_claim) = claim else {
        return conn.query_map(select, params, row);
    };
    #[cfg(feature = "pg")]
    {
        let sql = claiming(select, columns, params.len());
        let mut all = params.to_vec();
        all.push(&_claim.worker);
        all.push(&_claim.lease_ms);
        let mut rows = conn.query_map(&sql, &all, row)?;
        rows.sort_by_key(|r| id(r));
        Ok(rows)
    }
    #[cfg(not(feature = "pg"))]
    {
        let _ = (columns, id);
        conn.query_map(select, params, row)
    }
}

/// Up to `limit` VINs with id greater than `after_id`, in id order, that a submit sends to
/// generate: those in `states`, and those `rebuy` buys again (paged so that a million queued
/// VINs never sit in memory at once). With `claim`, only VINs no live claim holds, claimed.
pub(crate) fn submit_page(
    conn: &Conn,
    states: &[State],
    rebuy: &Rebuy,
    after_id: i64,
    limit: usize,
    claim: Option<Claim>,
) -> Result<Vec<SubmitTodo>, CheckpointError> {
    let list = states
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(",");
    // Without a rebuy the conditions are false whatever the batch (?1) and instant (?2).
    let [refresh, failed, expired] = rebuy.conditions();
    let sql = format!(
        "SELECT v.id, v.vin, coalesce(v.license_img_url, ''), v.state FROM vins v
         WHERE v.id > ?3 AND (v.state IN ({list}) OR {refresh} OR {failed} OR {expired})
         ORDER BY v.id LIMIT ?4"
    );
    let limit = limit as i64;
    page_query(
        conn,
        &sql,
        "t.id, t.vin, coalesce(t.license_img_url, ''), t.state",
        p![rebuy.batch, rebuy.refresh_before, after_id, limit],
        claim,
        |r| {
            let state: String = r.get(3)?;
            Ok(SubmitTodo {
                vin_id: r.get(0)?,
                vin: r.get(1)?,
                license_img_url: r.get(2)?,
                state: state.parse().unwrap_or(State::Queued),
            })
        },
        |t| t.vin_id,
    )
}

/// Up to `limit` pending VINs due at `now` with id greater than `after_id`, in id order. With
/// `claim`, only VINs no live claim holds, claimed.
pub(crate) fn due_polls(
    conn: &Conn,
    now: i64,
    after_id: i64,
    limit: usize,
    claim: Option<Claim>,
) -> Result<Vec<PollTodo>, CheckpointError> {
    let limit = limit as i64;
    page_query(
        conn,
        "SELECT v.id, v.vin, coalesce(v.request_id, ''), coalesce(v.accepted_at, v.submitted_at, v.first_seen_at), v.poll_interval_ms
         FROM vins v WHERE v.state = 'pending' AND coalesce(v.next_poll_at, 0) <= ?1 AND v.id > ?2
         ORDER BY v.id LIMIT ?3",
        "t.id, t.vin, coalesce(t.request_id, ''), coalesce(t.accepted_at, t.submitted_at, t.first_seen_at), t.poll_interval_ms",
        p![now, after_id, limit],
        claim,
        |r| {
            Ok(PollTodo {
                vin_id: r.get(0)?,
                vin: r.get(1)?,
                request_id: r.get(2)?,
                accepted_at: r.get(3)?,
                poll_interval_ms: r.get(4)?,
            })
        },
        |t| t.vin_id,
    )
}

/// When the next pending VIN is due, if any is pending.
pub(crate) fn next_poll_due(conn: &Conn) -> Result<Option<i64>, CheckpointError> {
    conn.query_row(
        "SELECT min(coalesce(next_poll_at, 0)) FROM vins WHERE state = 'pending'",
        p![],
        |r| r.get::<Option<i64>>(0),
    )
}

/// When the next pending VIN is due that the worker `claim` could take: a VIN another worker's
/// live claim holds is due no sooner than that claim's end, so an idle worker waits for it
/// instead of asking again and again (PostgreSQL workers; otherwise [`next_poll_due`]).
pub(crate) fn next_claimable_poll(
    conn: &Conn,
    claim: Option<Claim>,
) -> Result<Option<i64>, CheckpointError> {
    let Some(_claim) = claim else {
        return next_poll_due(conn);
    };
    #[cfg(feature = "pg")]
    {
        let now = workers::DB_NOW;
        conn.query_row(
            &format!(
                "SELECT min(GREATEST(coalesce(next_poll_at, 0),
                    CASE WHEN claimed_by IS NOT NULL AND claimed_by <> ?1 AND claim_until >= {now}
                         THEN claim_until ELSE 0 END))
                 FROM vins WHERE state = 'pending'"
            ),
            p![_claim.worker],
            |r| r.get::<Option<i64>>(0),
        )
    }
    #[cfg(not(feature = "pg"))]
    next_poll_due(conn)
}

/// Number of VINs per state (every state present, zero included).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub(crate) struct StateCounts(BTreeMap<State, i64>);

impl StateCounts {
    pub fn get(&self, state: State) -> i64 {
        self.0.get(&state).copied().unwrap_or(0)
    }

    /// VINs in any of `states`.
    pub(crate) fn sum(&self, states: &[State]) -> i64 {
        states.iter().map(|s| self.get(*s)).sum()
    }

    /// VINs with work left (not in a final state).
    pub fn open(&self) -> i64 {
        self.0
            .iter()
            .filter(|(s, _)| !s.is_final())
            .map(|(_, n)| n)
            .sum()
    }

    pub(crate) fn total(&self) -> i64 {
        self.0.values().sum()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (State, i64)> + '_ {
        self.0.iter().map(|(s, n)| (*s, *n))
    }
}

pub(crate) fn state_counts(conn: &Conn) -> Result<StateCounts, CheckpointError> {
    let mut out: BTreeMap<State, i64> = state::ALL.iter().map(|s| (*s, 0)).collect();
    let rows = conn.query_map(
        "SELECT state, count(*) FROM vins GROUP BY state",
        p![],
        |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?)),
    )?;
    for (s, n) in rows {
        let s: State = s.parse().map_err(CheckpointError::Commit)?;
        out.insert(s, n);
    }
    Ok(StateCounts(out))
}

/// A live worker of a PostgreSQL checkpoint (`workers::live`), as `vmr status` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct WorkerRow {
    pub id: i64,
    pub host: String,
    pub pid: i64,
    pub command: String,
    pub run_id: Option<String>,
    pub rate: i64,
    pub started_at_ms: i64,
    pub heartbeat_age_ms: i64,
    /// VINs it holds claimed now.
    pub claimed: i64,
}

/// Calls made and billed, per endpoint.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub(crate) struct CallCounts {
    pub calls: i64,
    pub billed: i64,
    /// Sent, but no usable answer came back: may have been billed.
    pub unknown_outcome: i64,
    pub not_sent: i64,
}

pub(crate) fn call_counts(conn: &Conn) -> Result<BTreeMap<String, CallCounts>, CheckpointError> {
    let mut out = BTreeMap::new();
    for ep in ["generate", "get"] {
        out.insert(ep.to_owned(), CallCounts::default());
    }
    let rows = conn.query_map(
        "SELECT endpoint, count(*), CAST(sum(billed) AS BIGINT),
            CAST(sum(CASE WHEN delivery = 'unknown' THEN 1 ELSE 0 END) AS BIGINT),
            CAST(sum(CASE WHEN delivery = 'not_sent' THEN 1 ELSE 0 END) AS BIGINT)
         FROM calls GROUP BY endpoint",
        p![],
        |r| {
            Ok((
                r.get::<String>(0)?,
                CallCounts {
                    calls: r.get(1)?,
                    billed: r.get::<Option<i64>>(2)?.unwrap_or(0),
                    unknown_outcome: r.get::<Option<i64>>(3)?.unwrap_or(0),
                    not_sent: r.get::<Option<i64>>(4)?.unwrap_or(0),
                },
            ))
        },
    )?;
    for (ep, c) in rows {
        out.insert(ep, c);
    }
    Ok(out)
}

/// The vendor account the checkpoint belongs to, once bound.
pub(crate) fn account(conn: &Conn) -> Result<Option<String>, CheckpointError> {
    conn.query_opt("SELECT value FROM meta WHERE key = 'account'", p![], |r| {
        r.get(0)
    })
}

/// Whether any vendor call was ever recorded.
pub(crate) fn has_calls(conn: &Conn) -> Result<bool, CheckpointError> {
    conn.query_row("SELECT EXISTS (SELECT 1 FROM calls)", p![], |r| r.get(0))
}

impl Checkpoint {
    /// Binds the checkpoint to `account` (idempotent).
    pub(crate) fn bind_account(&self, account: &str) -> Result<(), CheckpointError> {
        let account = account.to_owned();
        self.writer.write_blocking(move |c| {
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('account', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                p![account],
            )?;
            Ok(())
        })
    }
}
