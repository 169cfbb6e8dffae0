//! `vmr state copy`: moves a checkpoint between a state directory (SQLite) and PostgreSQL, in
//! either direction, every row of every table, bodies byte for byte.
//!
//! The source is read as of one instant (one read transaction) and the target is written in one
//! transaction: a copy that fails leaves the target as it was. A target that already holds a
//! checkpoint is refused. The SQLite side is held under its directory lock for the copy, so no
//! vmr buys through it meanwhile.

use std::path::Path;

use postgres::binary_copy::BinaryCopyInWriter;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{ToSql, Type};
use rusqlite::types::ValueRef;

pub use super::Place;
use super::pg::{IDENTITY_TABLES, PgError, PgLocation};
use super::{CheckpointError, DirLock, db_path};

use super::columns::Kind::{self, Blob, Int, Text};
use super::columns::TABLE_COLUMNS as TABLES;

/// Why `vmr state copy` failed; the target is left as it was.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The PostgreSQL side failed: its URL, its connection, or a statement.
    #[error(transparent)]
    Pg(#[from] PgError),
    /// The SQLite side could not be opened, locked, read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The target (named) already holds a checkpoint.
    #[error(
        "{0} already holds a checkpoint; a copy only goes into an empty state (nothing was changed)"
    )]
    NotEmpty(String),
    /// The two ends cannot be copied between (both directories, or both PostgreSQL).
    #[error("{0}")]
    Usage(String),
    /// A value in the source that the target's column cannot take as it is.
    #[error("{table} row {row}, column {column}: {detail}")]
    Value {
        /// The table.
        table: &'static str,
        /// The row's key.
        row: String,
        /// The column.
        column: &'static str,
        /// What is wrong with the value.
        detail: String,
    },
    /// The target's row counts or body bytes differ from what was copied.
    #[error("the copy does not match its source: {0}")]
    Mismatch(String),
}

impl CopyError {
    /// Whether the user can fix it by changing the command (exit 2).
    pub fn is_usage(&self) -> bool {
        match self {
            CopyError::Pg(e) => e.is_usage(),
            CopyError::Checkpoint(CheckpointError::Missing(_) | CheckpointError::TooNew { .. }) => {
                true
            }
            CopyError::NotEmpty(_) | CopyError::Usage(_) => true,
            _ => false,
        }
    }
}

/// What a copy moved, per table (the counts are checked on the target before it commits).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Copied {
    /// Each table copied, in copy order, with its number of rows.
    pub rows: Vec<(&'static str, u64)>,
    /// Bytes of report and call bodies.
    pub body_bytes: u64,
}

impl Copied {
    /// The rows copied into `table` (0 for a table not copied).
    pub fn rows_of(&self, table: &str) -> u64 {
        self.rows
            .iter()
            .find(|(t, _)| *t == table)
            .map_or(0, |(_, n)| *n)
    }
}

/// Copies the checkpoint at `from` into `to`.
pub fn copy(from: &Place, to: &Place) -> Result<Copied, CopyError> {
    match (from, to) {
        (Place::Dir(dir), Place::Pg(pg)) => sqlite_to_pg(dir, pg),
        (Place::Pg(pg), Place::Dir(dir)) => pg_to_sqlite(pg, dir),
        (Place::Dir(_), Place::Dir(_)) => Err(CopyError::Usage(
            "both ends are directories; `vmr state backup PATH` copies a state directory's checkpoint"
                .into(),
        )),
        (Place::Pg(_), Place::Pg(_)) => Err(CopyError::Usage(
            "both ends are PostgreSQL; copy through a state directory, or with pg_dump --schema"
                .into(),
        )),
    }
}

/// A column value, typed as the schema says.
#[derive(Debug)]
enum Val {
    Int(Option<i64>),
    Text(Option<String>),
    Blob(Option<Vec<u8>>),
}

impl Val {
    fn as_sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Val::Int(v) => v,
            Val::Text(v) => v,
            Val::Blob(v) => v,
        }
    }

    fn body_len(&self) -> u64 {
        match self {
            Val::Blob(Some(b)) => b.len() as u64,
            _ => 0,
        }
    }
}

fn pg_type(k: Kind) -> Type {
    match k {
        Int => Type::INT8,
        Text => Type::TEXT,
        Blob => Type::BYTEA,
    }
}

fn column_list(cols: &[(&str, Kind)]) -> String {
    cols.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ")
}

/// Reads one SQLite value as `kind`, refusing a value of another type (SQLite stores what it is
/// given; a copy must not reinterpret it).
fn sqlite_val(
    table: &'static str,
    key: &str,
    column: &'static str,
    kind: Kind,
    v: ValueRef<'_>,
) -> Result<Val, CopyError> {
    let bad = |detail: String| CopyError::Value {
        table,
        row: key.to_owned(),
        column,
        detail,
    };
    Ok(match (kind, v) {
        (Int, ValueRef::Null) => Val::Int(None),
        (Text, ValueRef::Null) => Val::Text(None),
        (Blob, ValueRef::Null) => Val::Blob(None),
        (Int, ValueRef::Integer(i)) => Val::Int(Some(i)),
        (Text, ValueRef::Text(t)) => {
            let s =
                std::str::from_utf8(t).map_err(|e| bad(format!("text that is not UTF-8 ({e})")))?;
            if s.contains('\0') {
                return Err(bad(
                    "text holding a NUL character, which PostgreSQL text cannot store".into(),
                ));
            }
            Val::Text(Some(s.to_owned()))
        }
        (Blob, ValueRef::Blob(b)) => Val::Blob(Some(b.to_vec())),
        (kind, other) => {
            return Err(bad(format!(
                "a {:?} value where the schema has {kind:?}",
                other.data_type()
            )));
        }
    })
}

/// Whether any table of the SQLite checkpoint holds a row.
fn sqlite_has_rows(conn: &rusqlite::Connection) -> Result<bool, CheckpointError> {
    for (table, _, _) in TABLES {
        let any: bool =
            conn.query_row(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), [], |r| {
                r.get(0)
            })?;
        if any {
            return Ok(true);
        }
    }
    Ok(false)
}

fn sqlite_to_pg(dir: &Path, pg: &PgLocation) -> Result<Copied, CopyError> {
    let db = db_path(dir);
    if !db.exists() {
        return Err(CheckpointError::Missing(db).into());
    }
    // No vmr buys through the source while it is copied.
    let _lock = DirLock::acquire(dir)?;
    let src = super::open_reader(&db)?;
    src.execute_batch("BEGIN").map_err(CheckpointError::from)?;
    let err = |e| pg.db_error(e);
    let mut client = pg.connect()?;
    let mut tx = client.transaction().map_err(err)?;
    pg.migrate(&mut tx)?;
    let s = pg.quoted();
    for (table, _, _) in TABLES {
        let any: bool = tx
            .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {s}.{table})"), &[])
            .map_err(err)?
            .get(0);
        if any {
            return Err(CopyError::NotEmpty(pg.to_string()));
        }
    }
    let mut copied = Copied::default();
    for (table, cols, order) in TABLES {
        let types: Vec<Type> = cols.iter().map(|(_, k)| pg_type(*k)).collect();
        let list = column_list(cols);
        let sink = tx
            .copy_in(&format!(
                "COPY {s}.{table} ({list}) FROM STDIN (FORMAT binary)"
            ))
            .map_err(err)?;
        let mut writer = BinaryCopyInWriter::new(sink, &types);
        let mut st = src
            .prepare(&format!("SELECT {list} FROM {table} ORDER BY {order}"))
            .map_err(CheckpointError::from)?;
        let mut rows = st.query([]).map_err(CheckpointError::from)?;
        let mut n = 0u64;
        let mut vals: Vec<Val> = Vec::with_capacity(cols.len());
        while let Some(row) = rows.next().map_err(CheckpointError::from)? {
            vals.clear();
            let key = match row.get_ref(0).map_err(CheckpointError::from)? {
                ValueRef::Integer(i) => i.to_string(),
                ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                _ => String::new(),
            };
            for (i, (column, kind)) in cols.iter().enumerate() {
                let v = row.get_ref(i).map_err(CheckpointError::from)?;
                let v = sqlite_val(table, &key, column, *kind, v)?;
                copied.body_bytes += v.body_len();
                vals.push(v);
            }
            let refs: Vec<&(dyn ToSql + Sync)> = vals.iter().map(Val::as_sql).collect();
            writer.write(&refs).map_err(err)?;
            n += 1;
        }
        let written = writer.finish().map_err(err)?;
        if written != n {
            return Err(CopyError::Mismatch(format!(
                "{table}: read {n} rows, PostgreSQL took {written}"
            )));
        }
        copied.rows.push((table, n));
    }
    for table in IDENTITY_TABLES {
        // The next id a vmr writing to PostgreSQL takes follows the copied ones.
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence($1, 'id'), coalesce((SELECT max(id) FROM {s}.{table}), 0) + 1, false)"
            ),
            &[&format!("{s}.{table}")],
        )
        .map_err(err)?;
    }
    verify_pg(&mut tx, pg, &copied)?;
    tx.commit().map_err(err)?;
    src.execute_batch("COMMIT").map_err(CheckpointError::from)?;
    Ok(copied)
}

/// Counts every table and the body bytes on the PostgreSQL side, before the commit.
fn verify_pg(
    tx: &mut postgres::Transaction<'_>,
    pg: &PgLocation,
    copied: &Copied,
) -> Result<(), CopyError> {
    let s = pg.quoted();
    let err = |e| pg.db_error(e);
    for (table, n) in &copied.rows {
        let found: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {s}.{table}"), &[])
            .map_err(err)?
            .get(0);
        if found as u64 != *n {
            return Err(CopyError::Mismatch(format!(
                "{table}: {n} rows copied, {found} in PostgreSQL"
            )));
        }
    }
    let bytes: i64 = tx
        .query_one(
            &format!(
                "SELECT (SELECT coalesce(sum(length(body)), 0) FROM {s}.reports)::bigint
                      + (SELECT coalesce(sum(length(body)), 0) FROM {s}.calls)::bigint"
            ),
            &[],
        )
        .map_err(err)?
        .get(0);
    if bytes as u64 != copied.body_bytes {
        return Err(CopyError::Mismatch(format!(
            "{} body bytes copied, {bytes} in PostgreSQL",
            copied.body_bytes
        )));
    }
    Ok(())
}

fn pg_to_sqlite(pg: &PgLocation, dir: &Path) -> Result<Copied, CopyError> {
    let err = |e| pg.db_error(e);
    let mut client = pg.connect()?;
    // Tables an older vmr wrote are brought to this build's schema first, as any reader does.
    pg.bring_current(&mut client)?;
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(err)?;
    pg.check_readable(&mut tx)?;
    // The target: a new (or empty) checkpoint, created at the current schema and held locked.
    let db = db_path(dir);
    let existed = db.exists();
    let (_lock, mut dst) = super::create_locked(dir)?;
    if sqlite_has_rows(&dst)? {
        return Err(CopyError::NotEmpty(dir.display().to_string()));
    }
    let copied = pg_into_sqlite(pg, &mut tx, &mut dst);
    if copied.is_err() && !existed {
        // A failed copy leaves no checkpoint behind where there was none.
        drop(dst);
        for f in super::db_files(&db) {
            let _ = std::fs::remove_file(f);
        }
    }
    let copied = copied?;
    tx.commit().map_err(err)?;
    Ok(copied)
}

/// Writes every table of `pg` (read in `tx`) into the empty checkpoint `dst`, in one transaction.
fn pg_into_sqlite(
    pg: &PgLocation,
    tx: &mut postgres::Transaction<'_>,
    dst: &mut rusqlite::Connection,
) -> Result<Copied, CopyError> {
    let err = |e| pg.db_error(e);
    let s = pg.quoted();
    let mut copied = Copied::default();
    let dtx = dst.transaction().map_err(CheckpointError::from)?;
    for (table, cols, order) in TABLES {
        let list = column_list(cols);
        let marks = (1..=cols.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut ins = dtx
            .prepare(&format!("INSERT INTO {table} ({list}) VALUES ({marks})"))
            .map_err(CheckpointError::from)?;
        let mut rows = tx
            .query_raw(
                &format!("SELECT {list} FROM {s}.{table} ORDER BY {order}"),
                std::iter::empty::<i64>(),
            )
            .map_err(err)?;
        let mut n = 0u64;
        while let Some(row) = rows.next().map_err(err)? {
            let mut vals: Vec<rusqlite::types::Value> = Vec::with_capacity(cols.len());
            for (i, (_, kind)) in cols.iter().enumerate() {
                use rusqlite::types::Value as V;
                let v = match kind {
                    Int => row
                        .try_get::<_, Option<i64>>(i)
                        .map_err(err)?
                        .map_or(V::Null, V::Integer),
                    Text => row
                        .try_get::<_, Option<String>>(i)
                        .map_err(err)?
                        .map_or(V::Null, V::Text),
                    Blob => {
                        row.try_get::<_, Option<Vec<u8>>>(i)
                            .map_err(err)?
                            .map_or(V::Null, |b| {
                                copied.body_bytes += b.len() as u64;
                                V::Blob(b)
                            })
                    }
                };
                vals.push(v);
            }
            ins.execute(rusqlite::params_from_iter(vals))
                .map_err(CheckpointError::from)?;
            n += 1;
        }
        drop(ins);
        copied.rows.push((table, n));
    }
    for (table, n) in &copied.rows {
        let found: i64 = dtx
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .map_err(CheckpointError::from)?;
        if found as u64 != *n {
            return Err(CopyError::Mismatch(format!(
                "{table}: {n} rows copied, {found} in the state directory"
            )));
        }
    }
    dtx.commit().map_err(CheckpointError::from)?;
    Ok(copied)
}

/// A private copy of a PostgreSQL checkpoint in a temporary state directory, removed when
/// dropped; [`super::Snapshot`] reads it.
pub(crate) struct TempCopy {
    dir: std::path::PathBuf,
    copied: Copied,
}

impl TempCopy {
    /// The temporary state directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reports copied.
    pub(crate) fn reports(&self) -> u64 {
        self.copied.rows_of("reports")
    }
}

impl Drop for TempCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Copies the checkpoint in `pg`, as of one instant, into a new private (0700) directory under
/// the temporary directory.
pub(crate) fn snapshot(pg: &PgLocation) -> Result<TempCopy, CopyError> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "vmr-snapshot-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    match pg_to_sqlite(pg, &dir) {
        Ok(copied) => Ok(TempCopy { dir, copied }),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}
