//! One connection to a checkpoint, in SQLite or in PostgreSQL, with the few calls the checkpoint
//! makes: execute, query (one row, some rows, each row in turn) and a batch of statements.
//!
//! The SQL is written once, in the dialect both understand, with `?1`-style parameters (turned
//! into PostgreSQL's `$1` here). Values are bound as `i64`, text, bytes or null, and sums are
//! cast to `BIGINT`, so each side reads the types it wrote. Statements are prepared once per
//! connection and reused.

#[cfg(feature = "pg")]
use std::cell::RefCell;
#[cfg(feature = "pg")]
use std::collections::HashMap;

use super::CheckpointError;

/// A value that can be bound on either side.
#[cfg(feature = "pg")]
pub trait Param: rusqlite::ToSql + postgres::types::ToSql + Sync {}
#[cfg(feature = "pg")]
impl<T: rusqlite::ToSql + postgres::types::ToSql + Sync + ?Sized> Param for T {}
/// A value that can be bound.
#[cfg(not(feature = "pg"))]
pub trait Param: rusqlite::ToSql {}
#[cfg(not(feature = "pg"))]
impl<T: rusqlite::ToSql + ?Sized> Param for T {}

/// The parameters of one statement: `p![a, b]`.
#[macro_export]
#[doc(hidden)]
macro_rules! p {
    () => { &[] as &[&dyn $crate::checkpoint::db::Param] };
    ($($x:expr),+ $(,)?) => { &[$(&$x as &dyn $crate::checkpoint::db::Param),+] as &[&dyn $crate::checkpoint::db::Param] };
}
pub use p;

/// A connection to the checkpoint.
pub enum Conn {
    /// A SQLite connection.
    Lite(rusqlite::Connection),
    #[cfg(feature = "pg")]
    /// A PostgreSQL connection, with its prepared statements.
    Pg(Box<PgConn>),
}

/// A PostgreSQL connection with its prepared statements.
#[cfg(feature = "pg")]
pub struct PgConn {
    client: std::mem::ManuallyDrop<RefCell<postgres::Client>>,
    statements: RefCell<HashMap<String, postgres::Statement>>,
}

/// Statements this process has sent to PostgreSQL, every connection together: what a poll loop
/// logs when it ends (`statements`), so an idle worker can be seen not to spin.
#[cfg(feature = "pg")]
static PG_STATEMENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// [`PG_STATEMENTS`] now (0 without PostgreSQL).
pub(crate) fn pg_statements() -> u64 {
    #[cfg(feature = "pg")]
    {
        PG_STATEMENTS.load(std::sync::atomic::Ordering::Relaxed)
    }
    #[cfg(not(feature = "pg"))]
    {
        0
    }
}

#[cfg(feature = "pg")]
fn count_statement() {
    PG_STATEMENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Runs `f`, which blocks on the PostgreSQL client's own runtime: inside vmr's runtime (the
/// engine's tasks), as a blocking section of it.
#[cfg(feature = "pg")]
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Without PostgreSQL nothing blocks on another runtime: `f` runs as it is.
#[cfg(not(feature = "pg"))]
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(feature = "pg")]
impl Drop for PgConn {
    fn drop(&mut self) {
        // Closing the connection blocks on the client's runtime too.
        // SAFETY: `client` is taken once, here, and never used after.
        let client = unsafe { std::mem::ManuallyDrop::take(&mut self.client) };
        blocking(move || drop(client));
    }
}

#[cfg(feature = "pg")]
impl PgConn {
    /// Wraps a connected client, with no statement prepared yet.
    pub fn new(client: postgres::Client) -> PgConn {
        PgConn {
            client: std::mem::ManuallyDrop::new(RefCell::new(client)),
            statements: RefCell::new(HashMap::new()),
        }
    }

    fn statement(&self, sql: &str) -> Result<postgres::Statement, CheckpointError> {
        count_statement();
        if let Some(st) = self.statements.borrow().get(sql) {
            return Ok(st.clone());
        }
        let st = blocking(|| self.client.borrow_mut().prepare(&pg_sql(sql))).map_err(pg_err)?;
        self.statements
            .borrow_mut()
            .insert(sql.to_owned(), st.clone());
        Ok(st)
    }
}

/// A PostgreSQL error with the server's code and message (the driver's own text is terse).
#[cfg(feature = "pg")]
pub(crate) fn pg_err(e: postgres::Error) -> CheckpointError {
    if super::pg::is_lost(&e) {
        return CheckpointError::Lost(super::pg::message(&e));
    }
    CheckpointError::Db(super::pg::message(&e))
}

/// `sql` in PostgreSQL's words: `?N` parameters become `$N` (outside string literals), and
/// SQLite's `BEGIN IMMEDIATE` a plain `BEGIN`.
#[cfg(feature = "pg")]
pub(crate) fn pg_sql(sql: &str) -> String {
    if sql.trim() == "BEGIN IMMEDIATE" {
        return "BEGIN".into();
    }
    let mut out = String::with_capacity(sql.len());
    let mut in_str = false;
    for c in sql.chars() {
        match c {
            '\'' => {
                in_str = !in_str;
                out.push(c);
            }
            '?' if !in_str => out.push('$'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(feature = "pg")]
fn pg_params<'a>(params: &'a [&'a dyn Param]) -> Vec<&'a (dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| *p as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

fn lite_params<'a>(params: &'a [&'a dyn Param]) -> Vec<&'a dyn rusqlite::ToSql> {
    params.iter().map(|p| *p as &dyn rusqlite::ToSql).collect()
}

/// A SQLite insert prepared once ([`Conn::lite_inserter`]).
pub(crate) struct Inserter<'c>(rusqlite::Statement<'c>);

impl Inserter<'_> {
    /// Inserts one row; whether it was inserted (not ignored).
    pub(crate) fn insert(&mut self, params: &[&dyn Param]) -> Result<bool, CheckpointError> {
        Ok(self.0.execute(lite_params(params).as_slice())? == 1)
    }
}

/// One row of a result.
pub enum Row<'a> {
    /// A SQLite row.
    Lite(&'a rusqlite::Row<'a>),
    #[cfg(feature = "pg")]
    /// A PostgreSQL row.
    Pg(&'a postgres::Row),
}

/// A column type both sides read.
pub trait FromCol: Sized {
    /// Reads column `i` of a SQLite row.
    fn lite(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self>;
    #[cfg(feature = "pg")]
    /// Reads column `i` of a PostgreSQL row.
    fn pg(r: &postgres::Row, i: usize) -> Result<Self, postgres::Error>;
}

macro_rules! from_col {
    ($($t:ty),*) => {$(
        impl FromCol for $t {
            fn lite(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self> {
                r.get(i)
            }
            #[cfg(feature = "pg")]
            fn pg(r: &postgres::Row, i: usize) -> Result<Self, postgres::Error> {
                r.try_get(i)
            }
        }
    )*};
}
from_col!(String, Option<String>, Vec<u8>, Option<Vec<u8>>);

impl FromCol for Option<i64> {
    fn lite(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self> {
        r.get(i)
    }
    #[cfg(feature = "pg")]
    fn pg(r: &postgres::Row, i: usize) -> Result<Self, postgres::Error> {
        use postgres::types::Type;
        match *r.columns()[i].type_() {
            Type::INT4 => Ok(r.try_get::<_, Option<i32>>(i)?.map(i64::from)),
            Type::INT2 => Ok(r.try_get::<_, Option<i16>>(i)?.map(i64::from)),
            Type::BOOL => Ok(r.try_get::<_, Option<bool>>(i)?.map(i64::from)),
            _ => r.try_get(i),
        }
    }
}

impl FromCol for i64 {
    fn lite(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self> {
        r.get(i)
    }
    #[cfg(feature = "pg")]
    fn pg(r: &postgres::Row, i: usize) -> Result<Self, postgres::Error> {
        match <Option<i64>>::pg(r, i)? {
            Some(v) => Ok(v),
            // Decoding as non-null reports the null as the driver does.
            None => r.try_get::<_, i64>(i),
        }
    }
}

impl FromCol for bool {
    fn lite(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self> {
        r.get(i)
    }
    #[cfg(feature = "pg")]
    fn pg(r: &postgres::Row, i: usize) -> Result<Self, postgres::Error> {
        Ok(i64::pg(r, i)? != 0)
    }
}

impl FromCol for Option<bool> {
    fn lite(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<Self> {
        r.get(i)
    }
    #[cfg(feature = "pg")]
    fn pg(r: &postgres::Row, i: usize) -> Result<Self, postgres::Error> {
        Ok(<Option<i64>>::pg(r, i)?.map(|v| v != 0))
    }
}

impl Row<'_> {
    /// Reads column `i` (from 0) as `T`.
    pub fn get<T: FromCol>(&self, i: usize) -> Result<T, CheckpointError> {
        match self {
            Row::Lite(r) => Ok(T::lite(r, i)?),
            #[cfg(feature = "pg")]
            Row::Pg(r) => T::pg(r, i).map_err(pg_err),
        }
    }
}

impl Conn {
    /// Runs one statement; the number of rows it changed.
    pub fn execute(&self, sql: &str, params: &[&dyn Param]) -> Result<u64, CheckpointError> {
        match self {
            Conn::Lite(c) => Ok(c
                .prepare_cached(sql)?
                .execute(lite_params(params).as_slice())? as u64),
            #[cfg(feature = "pg")]
            Conn::Pg(c) => {
                let st = c.statement(sql)?;
                blocking(|| c.client.borrow_mut().execute(&st, &pg_params(params))).map_err(pg_err)
            }
        }
    }

    /// `INSERT INTO {into}` that skips a row breaking a unique index: whether it was inserted,
    /// with its `id` column (`Some(0)` for a table without one) or `None` when it was skipped. SQLite's `INSERT OR IGNORE` (an upsert or `RETURNING` there
    /// would open a statement journal per row, quadratic within the writer's long savepoints);
    /// PostgreSQL's `ON CONFLICT DO NOTHING RETURNING id`.
    pub fn insert_ignore(
        &self,
        into: &str,
        has_id: bool,
        params: &[&dyn Param],
    ) -> Result<Option<i64>, CheckpointError> {
        match self {
            Conn::Lite(c) => {
                let n = c
                    .prepare_cached(&format!("INSERT OR IGNORE INTO {into}"))?
                    .execute(lite_params(params).as_slice())?;
                Ok((n == 1).then(|| if has_id { c.last_insert_rowid() } else { 0 }))
            }
            #[cfg(feature = "pg")]
            Conn::Pg(_) => self.query_opt(
                &format!(
                    "INSERT INTO {into} ON CONFLICT DO NOTHING RETURNING {}",
                    if has_id { "id" } else { "CAST(0 AS BIGINT)" }
                ),
                params,
                |r| r.get(0),
            ),
        }
    }

    /// `INSERT OR IGNORE INTO {into}` prepared once, for a SQLite bulk load's many rows (no
    /// statement-cache lookup per row). PostgreSQL loads through COPY instead.
    pub(crate) fn lite_inserter(&self, into: &str) -> Result<Inserter<'_>, CheckpointError> {
        match self {
            Conn::Lite(c) => Ok(Inserter(
                c.prepare(&format!("INSERT OR IGNORE INTO {into}"))?,
            )),
            #[cfg(feature = "pg")]
            Conn::Pg(_) => Err(CheckpointError::Commit(
                "a bulk load is for a SQLite checkpoint".into(),
            )),
        }
    }

    /// PostgreSQL's `COPY … FROM STDIN (FORMAT binary)` of the rows `write` writes, with
    /// columns of `types`; returns how many rows the server took.
    #[cfg(feature = "pg")]
    pub(crate) fn copy_in(
        &self,
        sql: &str,
        types: &[postgres::types::Type],
        write: impl FnOnce(
            &mut postgres::binary_copy::BinaryCopyInWriter<'_>,
        ) -> Result<(), postgres::Error>,
    ) -> Result<u64, CheckpointError> {
        let Conn::Pg(c) = self else {
            return Err(CheckpointError::Commit("COPY needs PostgreSQL".into()));
        };
        count_statement();
        blocking(|| {
            let mut client = c.client.borrow_mut();
            let sink = client.copy_in(sql)?;
            let mut writer = postgres::binary_copy::BinaryCopyInWriter::new(sink, types);
            write(&mut writer)?;
            writer.finish()
        })
        .map_err(pg_err)
    }

    /// Statements without parameters, separated by `;`.
    pub fn batch(&self, sql: &str) -> Result<(), CheckpointError> {
        match self {
            Conn::Lite(c) => Ok(c.execute_batch(sql)?),
            #[cfg(feature = "pg")]
            Conn::Pg(c) => {
                count_statement();
                blocking(|| c.client.borrow_mut().batch_execute(&pg_sql(sql))).map_err(pg_err)
            }
        }
    }

    /// Every row of `sql`, each through `f`, in turn (streamed: the rows are never all in
    /// memory). `f` must not use this connection.
    pub fn each<E: From<CheckpointError>>(
        &self,
        sql: &str,
        params: &[&dyn Param],
        mut f: impl FnMut(&Row<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        match self {
            Conn::Lite(c) => {
                let mut st = c.prepare_cached(sql).map_err(CheckpointError::from)?;
                let mut rows = st
                    .query(lite_params(params).as_slice())
                    .map_err(CheckpointError::from)?;
                while let Some(r) = rows.next().map_err(CheckpointError::from)? {
                    f(&Row::Lite(r))?;
                }
                Ok(())
            }
            #[cfg(feature = "pg")]
            Conn::Pg(c) => {
                use postgres::fallible_iterator::FallibleIterator;
                let st = c.statement(sql)?;
                blocking(|| {
                    let mut client = c.client.borrow_mut();
                    let mut rows = client.query_raw(&st, pg_params(params)).map_err(pg_err)?;
                    while let Some(r) = rows.next().map_err(pg_err)? {
                        f(&Row::Pg(&r))?;
                    }
                    Ok(())
                })
            }
        }
    }

    /// Every row of `sql`, mapped by `f`.
    pub fn query_map<T>(
        &self,
        sql: &str,
        params: &[&dyn Param],
        mut f: impl FnMut(&Row<'_>) -> Result<T, CheckpointError>,
    ) -> Result<Vec<T>, CheckpointError> {
        let mut out = Vec::new();
        self.each(sql, params, |r| {
            out.push(f(r)?);
            Ok::<(), CheckpointError>(())
        })?;
        Ok(out)
    }

    /// The first row of `sql`, if any, mapped by `f`.
    pub fn query_opt<T>(
        &self,
        sql: &str,
        params: &[&dyn Param],
        f: impl FnOnce(&Row<'_>) -> Result<T, CheckpointError>,
    ) -> Result<Option<T>, CheckpointError> {
        match self {
            Conn::Lite(c) => {
                let mut st = c.prepare_cached(sql)?;
                let mut rows = st.query(lite_params(params).as_slice())?;
                match rows.next()? {
                    Some(r) => Ok(Some(f(&Row::Lite(r))?)),
                    None => Ok(None),
                }
            }
            #[cfg(feature = "pg")]
            Conn::Pg(c) => {
                let st = c.statement(sql)?;
                let row = blocking(|| c.client.borrow_mut().query_opt(&st, &pg_params(params)))
                    .map_err(pg_err)?;
                match row {
                    Some(r) => Ok(Some(f(&Row::Pg(&r))?)),
                    None => Ok(None),
                }
            }
        }
    }

    /// The one row of `sql`, mapped by `f`; no row is an error.
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: &[&dyn Param],
        f: impl FnOnce(&Row<'_>) -> Result<T, CheckpointError>,
    ) -> Result<T, CheckpointError> {
        self.query_opt(sql, params, f)?
            .ok_or(CheckpointError::Sql(rusqlite::Error::QueryReturnedNoRows))
    }
}

#[cfg(all(test, feature = "pg"))]
mod tests {
    #[test]
    fn parameters_become_dollar_signs_outside_literals() {
        assert_eq!(
            super::pg_sql("SELECT '?1', x FROM t WHERE a = ?1 AND b LIKE 'a?' || ?2"),
            "SELECT '?1', x FROM t WHERE a = $1 AND b LIKE 'a?' || $2"
        );
        assert_eq!(super::pg_sql("BEGIN IMMEDIATE"), "BEGIN");
    }
}
