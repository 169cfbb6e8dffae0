//! Where a checkpoint lives and how it is opened: for writing (with the recovery of what a
//! dead process left in flight) and for reading.

use super::files::{DirLock, db_path, tighten_db_files, writer_running};
use super::schema::{SCHEMA_VERSION, configure, migrate};
use super::{CheckpointError, Conn, p};
#[cfg(feature = "pg")]
use super::{pg, reaping, workers};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};

/// Where a checkpoint lives: a state directory (SQLite), or a schema in PostgreSQL.
#[derive(Debug, Clone)]
pub enum Place {
    /// A state directory, which holds the SQLite checkpoint file.
    Dir(PathBuf),
    #[cfg(feature = "pg")]
    /// A schema in PostgreSQL.
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

    /// The place with `root` as its spill root (`--spill-dir`): where a PostgreSQL
    /// checkpoint's writer keeps billed answers while the database is out of reach. A state
    /// directory has none (its writer and its file share one disk).
    pub fn with_spill_root(self, root: PathBuf) -> Place {
        match self {
            Place::Dir(d) => {
                let _ = root;
                Place::Dir(d)
            }
            #[cfg(feature = "pg")]
            Place::Pg(loc) => Place::Pg(Box::new(loc.with_spill_root(root))),
        }
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

/// What opening found and repaired.
#[derive(Debug, Default, Clone)]
pub struct Recovery {
    /// VINs that were `submitting` when the last process died, now `uncertain`.
    pub uncertain: Vec<String>,
}

/// Turns every `submitting` VIN into `uncertain` (the process that sent its generate is gone)
/// and lists them. In PostgreSQL only those whose claim has lapsed (or that no worker claims):
/// a live worker may have its call in flight.
pub(super) fn recover(conn: &Conn) -> Result<Vec<String>, CheckpointError> {
    #[cfg(feature = "pg")]
    if matches!(conn, Conn::Pg(_)) {
        reaping::reap_dead_here(conn)?;
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
