//! Recording input: the rows of an input file (a VIN queued, a duplicate noted, a rejected row
//! kept with its reason) and the input file itself as a batch.

use super::{Checkpoint, CheckpointError, Conn, p};
use crate::input::{InputRow, Verdict};

/// A bulk load under way: the chunks of input rows go to `rows`, and `done` answers with what
/// they did once `rows` is dropped and the load committed (see [`Checkpoint::bulk_load`]).
pub(crate) struct BulkLoad {
    pub rows: std::sync::mpsc::SyncSender<Vec<InputRow>>,
    pub done: tokio::sync::oneshot::Receiver<Result<RowsRecorded, CheckpointError>>,
}

impl Checkpoint {
    /// For a SQLite checkpoint that holds no row yet (a first ingest): one transaction for the
    /// whole input, with the VIN index built after the rows instead of updated row by row (in
    /// the file's random VIN order, the largest cost of a fresh ingest). Duplicates within the
    /// file are found in memory meanwhile; the index is dropped and built again inside the
    /// transaction, so no other connection ever sees the checkpoint without its guard against
    /// queuing a VIN twice, and a failure or a kill leaves the checkpoint as it was before.
    /// `None` for any other checkpoint, which is written chunk by chunk.
    pub(crate) fn bulk_load(
        &self,
        file: String,
        batch: String,
        now: i64,
    ) -> Result<Option<BulkLoad>, CheckpointError> {
        if self.place().dir().is_none() || has_rows(&self.reader()?)? {
            return Ok(None);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<InputRow>>(2);
        let done = self
            .writer()
            .submit(move |c| bulk_write(c, rx, &file, &batch, now));
        Ok(Some(BulkLoad { rows: tx, done }))
    }

    /// Records one chunk of input rows in one group-committed transaction, queued behind the
    /// writes before it; the answer comes when it is durable. Idempotent: a VIN already
    /// recorded from the same file line is counted as `already`.
    pub(crate) fn record_rows(
        &self,
        rows: Vec<InputRow>,
        file: String,
        batch: String,
        now: i64,
    ) -> tokio::sync::oneshot::Receiver<Result<RowsRecorded, CheckpointError>> {
        self.writer()
            .submit(move |c| write_chunk(c, &rows, &file, &batch, now))
    }

    /// Records (or updates) the input file as a batch, with its totals.
    pub(crate) fn record_batch(&self, b: BatchTotals) -> Result<(), CheckpointError> {
        self.writer().write_blocking(move |c| {
            c.execute(
                "INSERT INTO batches (id, input_file, first_seen_at, rows_read, accepted, duplicates, rejected, check_digit_warnings, complete)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (id) DO UPDATE SET rows_read = excluded.rows_read, accepted = excluded.accepted,
                    duplicates = excluded.duplicates, rejected = excluded.rejected,
                    check_digit_warnings = excluded.check_digit_warnings, complete = excluded.complete",
                p![
                    b.batch_id,
                    b.input_file,
                    b.first_seen_at,
                    b.rows_read as i64,
                    b.accepted as i64,
                    b.duplicates as i64,
                    b.rejected as i64,
                    b.check_digit_warnings as i64,
                    i64::from(b.complete)
                ],
            )?;
            Ok(())
        })
    }
}

/// One input file's totals, as its batch row keeps them.
#[derive(Debug, Clone)]
pub(crate) struct BatchTotals {
    /// The input's fingerprint.
    pub batch_id: String,
    pub input_file: String,
    pub first_seen_at: i64,
    pub rows_read: u64,
    /// VINs of this input in the checkpoint (new and recorded before).
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub check_digit_warnings: u64,
    /// Whether the whole file was read.
    pub complete: bool,
}

/// What recording one chunk of input rows did.
#[derive(Debug, Default)]
pub(crate) struct RowsRecorded {
    /// New VINs queued.
    pub queued: u64,
    /// Rows recorded already by an earlier ingest of this same file line.
    pub already: u64,
    /// Rows whose VIN was seen before at another line or in another input.
    pub duplicates: u64,
}

fn write_chunk(
    conn: &Conn,
    rows: &[InputRow],
    file: &str,
    batch: &str,
    now: i64,
) -> Result<RowsRecorded, CheckpointError> {
    #[cfg(feature = "pg")]
    if matches!(conn, Conn::Pg(_)) {
        return write_chunk_pg(conn, rows, file, batch, now);
    }
    write_chunk_rows(conn, rows, file, batch, now)
}

/// [`write_chunk`] in PostgreSQL, set by set rather than row by row (one round trip a row made
/// a million-row ingest take minutes): the chunk is copied (`COPY … FROM STDIN`, binary) into a
/// temporary staging table, then one `INSERT … SELECT … ON CONFLICT DO NOTHING` queues the new
/// VINs (members of the input at once) and records the rejected rows; only a chunk with VINs
/// seen before needs one more query, which tells each accepted row's fate (recorded before from
/// this same line, or a duplicate) and makes those VINs members too. The same rows, counts and
/// records as row by row.
#[cfg(feature = "pg")]
fn write_chunk_pg(
    conn: &Conn,
    rows: &[InputRow],
    file: &str,
    batch: &str,
    now: i64,
) -> Result<RowsRecorded, CheckpointError> {
    use postgres::types::Type;
    // The staging table lives as long as the connection (made again after a reconnect); the
    // server's notice that it exists already is not worth a log line per chunk.
    conn.batch(
        "SET client_min_messages TO warning;
         CREATE TEMPORARY TABLE IF NOT EXISTS ingest_rows (
            vin TEXT NOT NULL, license_img_url TEXT, state TEXT NOT NULL, message TEXT,
            input_line BIGINT NOT NULL, check_digit_ok BIGINT);
         RESET client_min_messages;
         TRUNCATE ingest_rows",
    )?;
    let copied = conn.copy_in(
        "COPY ingest_rows (vin, license_img_url, state, message, input_line, check_digit_ok) FROM STDIN (FORMAT binary)",
        &[Type::TEXT, Type::TEXT, Type::TEXT, Type::TEXT, Type::INT8, Type::INT8],
        |w| {
            for row in rows {
                let line = row.line as i64;
                match &row.verdict {
                    Verdict::Accepted { check_digit_ok } => {
                        let ok = Some(i64::from(*check_digit_ok));
                        w.write(&[
                            &row.vin,
                            &row.license_img_url,
                            &"queued",
                            &Option::<String>::None,
                            &line,
                            &ok,
                        ])?;
                    }
                    Verdict::Rejected { reason } => {
                        w.write(&[
                            &row.vin_raw,
                            &row.license_img_url,
                            &"rejected",
                            &Some(reason.to_string()),
                            &line,
                            &Option::<i64>::None,
                        ])?;
                    }
                }
            }
            Ok(())
        },
    )?;
    if copied != rows.len() as u64 {
        return Err(CheckpointError::Commit(format!(
            "ingest: copied {copied} of {} rows into the staging table",
            rows.len()
        )));
    }
    // In line order, so the first of two rows with one VIN is the one queued, as row by row;
    // each VIN queued is at once a member of this input.
    let queued: i64 = conn.query_row(
        "WITH ins AS (
            INSERT INTO vins (vin, license_img_url, state, message, first_seen_at, input_file, input_line, batch_id, check_digit_ok)
            SELECT vin, license_img_url, state, message, ?1, ?2, input_line, ?3, check_digit_ok
            FROM ingest_rows ORDER BY input_line
            ON CONFLICT DO NOTHING
            RETURNING id, state),
         member AS (
            INSERT INTO batch_vins (batch_id, vin_id)
            SELECT CAST(?3 AS TEXT), id FROM ins WHERE state = 'queued')
         SELECT count(*) FROM ins WHERE state = 'queued'",
        p![now, file, batch],
        |r| r.get(0),
    )?;
    let accepted = rows
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Accepted { .. }))
        .count() as i64;
    if queued == accepted {
        // Every accepted row was a new VIN: nothing recorded before, no duplicate.
        return Ok(RowsRecorded {
            queued: queued as u64,
            ..RowsRecorded::default()
        });
    }
    // Statistics for the staging table, so the join below goes through the VIN index rather
    // than reading every VIN of the checkpoint for each chunk.
    conn.batch("ANALYZE ingest_rows")?;
    // Else each accepted row against the VIN's row now: from this batch and line (queued just
    // now, or recorded by an earlier ingest of this file), or from elsewhere (a duplicate,
    // within this input or of another), which becomes a member of this input too. One join,
    // through the VIN index.
    let (mine, elsewhere): (i64, i64) = conn.query_row(
        "WITH fate AS (
            SELECT v.id, (v.batch_id = CAST(?1 AS TEXT) AND v.input_line = r.input_line) AS mine
            FROM ingest_rows r LEFT JOIN vins v ON v.vin = r.vin AND v.state <> 'rejected'
            WHERE r.state = 'queued'),
         member AS (
            INSERT INTO batch_vins (batch_id, vin_id)
            SELECT DISTINCT CAST(?1 AS TEXT), id FROM fate WHERE id IS NOT NULL
            ON CONFLICT DO NOTHING)
         SELECT count(*) FILTER (WHERE mine), count(*) FILTER (WHERE mine IS NOT TRUE) FROM fate",
        p![batch],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(RowsRecorded {
        queued: queued as u64,
        already: (mine - queued).max(0) as u64,
        duplicates: elsewhere as u64,
    })
}

/// The `vins` row an input row becomes, as `INSERT OR IGNORE` takes it.
const VINS_ROW: &str = "vins (vin, license_img_url, state, message, first_seen_at, input_file, input_line, batch_id, check_digit_ok)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// Queues an accepted row's VIN: its new id, or `None` when the VIN is recorded already.
fn insert_queued(
    conn: &Conn,
    row: &InputRow,
    check_digit_ok: bool,
    file: &str,
    batch: &str,
    now: i64,
) -> Result<Option<i64>, CheckpointError> {
    vins_row(row, Entry::Queued(check_digit_ok), file, batch, now, |p| {
        conn.insert_ignore(VINS_ROW, true, p)
    })
}

/// Records a rejected row with its reason (once per input line).
fn insert_rejected(
    conn: &Conn,
    row: &InputRow,
    reason: &str,
    file: &str,
    batch: &str,
    now: i64,
) -> Result<(), CheckpointError> {
    vins_row(row, Entry::Rejected(reason), file, batch, now, |p| {
        conn.insert_ignore(VINS_ROW, true, p)
    })?;
    Ok(())
}

/// What an input row becomes in `vins`.
#[derive(Clone, Copy)]
enum Entry<'a> {
    /// A queued VIN, with whether its check digit was right.
    Queued(bool),
    /// A rejected row, with the reason.
    Rejected(&'a str),
}

/// The [`VINS_ROW`] parameters of an input row, handed to `f`.
fn vins_row<R>(
    row: &InputRow,
    entry: Entry<'_>,
    file: &str,
    batch: &str,
    now: i64,
    f: impl FnOnce(&[&dyn super::db::Param]) -> R,
) -> R {
    let (vin, state, message, check_digit_ok) = match entry {
        Entry::Queued(ok) => (&row.vin, "queued", None, Some(i64::from(ok))),
        Entry::Rejected(reason) => (&row.vin_raw, "rejected", Some(reason), None),
    };
    f(p![
        vin,
        row.license_img_url,
        state,
        message,
        now,
        file,
        row.line as i64,
        batch,
        check_digit_ok
    ])
}

/// Whether the checkpoint holds any VIN or rejected row.
fn has_rows(conn: &Conn) -> Result<bool, CheckpointError> {
    conn.query_row("SELECT EXISTS (SELECT 1 FROM vins)", p![], |r| {
        r.get::<i64>(0)
    })
    .map(|n| n == 1)
}

/// The writer's side of [`Checkpoint::bulk_load`]: every chunk that arrives on `rows`, in one
/// transaction (the writer's), then the indexes over them. A checkpoint found not empty after
/// all is written chunk by chunk as usual.
fn bulk_write(
    conn: &Conn,
    rows: std::sync::mpsc::Receiver<Vec<InputRow>>,
    file: &str,
    batch: &str,
    now: i64,
) -> Result<RowsRecorded, CheckpointError> {
    let mut res = RowsRecorded::default();
    if has_rows(conn)? {
        while let Ok(chunk) = rows.recv() {
            let r = write_chunk_rows(conn, &chunk, file, batch, now)?;
            res.queued += r.queued;
            res.already += r.already;
            res.duplicates += r.duplicates;
        }
        return Ok(res);
    }
    // The rows go in first and the indexes over them are built after, inside this transaction:
    // no other connection sees the checkpoint without its guard against queuing a VIN twice,
    // and a failure or a kill rolls the whole load back.
    conn.batch("DROP INDEX vins_vin; DROP INDEX vins_state")?;
    let mut insert = conn.lite_inserter(VINS_ROW)?;
    // The VINs queued so far: a VIN is 17 ASCII characters, kept in 17 bytes (20 MB a million).
    let mut seen: std::collections::HashSet<[u8; 17]> = std::collections::HashSet::new();
    let mut seen_other: std::collections::HashSet<String> = std::collections::HashSet::new();
    while let Ok(chunk) = rows.recv() {
        seen.reserve(chunk.len());
        for row in &chunk {
            match &row.verdict {
                Verdict::Accepted { check_digit_ok } => {
                    let first = match <[u8; 17]>::try_from(row.vin.as_bytes()) {
                        Ok(key) => seen.insert(key),
                        Err(_) => seen_other.insert(row.vin.clone()),
                    };
                    if !first {
                        // Seen at an earlier line of this input: a duplicate, already a member.
                        res.duplicates += 1;
                        continue;
                    }
                    if !vins_row(row, Entry::Queued(*check_digit_ok), file, batch, now, |p| {
                        insert.insert(p)
                    })? {
                        return Err(CheckpointError::Commit(format!(
                            "ingest: line {} of {file} was not recorded",
                            row.line
                        )));
                    }
                    res.queued += 1;
                }
                Verdict::Rejected { reason } => {
                    let reason = reason.to_string();
                    let entry = Entry::Rejected(&reason);
                    vins_row(row, entry, file, batch, now, |p| insert.insert(p))?;
                }
            }
        }
    }
    drop((insert, seen, seen_other));
    // Every VIN queued is this input's (the checkpoint had none before): one statement makes
    // them its members, in id order, instead of one per row.
    conn.execute(
        "INSERT INTO batch_vins (batch_id, vin_id)
         SELECT ?1, id FROM vins WHERE state <> 'rejected' ORDER BY id",
        p![batch],
    )?;
    // The indexes' sorts spill to a temporary file past 8 MiB rather than keeping a million
    // VINs in memory; then temporary storage and the cache are as they were.
    let pragma = |name: &str| conn.query_row(&format!("PRAGMA {name}"), p![], |r| r.get::<i64>(0));
    let (temp_store, cache_size) = (pragma("temp_store")?, pragma("cache_size")?);
    conn.batch("PRAGMA temp_store = FILE; PRAGMA cache_size = -8192")?;
    let sqlite = super::schema::Dialect::Sqlite;
    let built = conn.batch(&format!(
        "{}\n{}",
        sqlite.render(super::schema::VINS_VIN_INDEX),
        sqlite.render(super::schema::VINS_STATE_INDEX)
    ));
    conn.batch(&format!(
        "PRAGMA temp_store = {temp_store}; PRAGMA cache_size = {cache_size}"
    ))?;
    built?;
    Ok(res)
}

/// [`write_chunk`] row by row (SQLite, where a statement is a function call, not a round trip).
fn write_chunk_rows(
    conn: &Conn,
    rows: &[InputRow],
    file: &str,
    batch: &str,
    now: i64,
) -> Result<RowsRecorded, CheckpointError> {
    let mut res = RowsRecorded::default();
    // A VIN already recorded (or a rejected row already recorded from this line) is skipped.
    let origin = "SELECT batch_id, input_line, id FROM vins WHERE vin = ?1 AND state <> 'rejected'";
    // Every VIN of this input, new or seen before: a refresh buys only the current input's.
    let member = "batch_vins (batch_id, vin_id) VALUES (?1, ?2)";
    for row in rows {
        match &row.verdict {
            Verdict::Accepted { check_digit_ok } => {
                let new = insert_queued(conn, row, *check_digit_ok, file, batch, now)?;
                if let Some(id) = new {
                    res.queued += 1;
                    conn.insert_ignore(member, false, p![batch, id])?;
                } else {
                    let seen: Option<(Option<String>, Option<i64>, i64)> =
                        conn.query_opt(origin, p![row.vin], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        })?;
                    match &seen {
                        // Recorded, with its membership, by an earlier ingest of this file.
                        Some((Some(b), Some(l), _)) if b == batch && *l == row.line as i64 => {
                            res.already += 1
                        }
                        Some((_, _, id)) => {
                            res.duplicates += 1;
                            conn.insert_ignore(member, false, p![batch, *id])?;
                        }
                        None => res.duplicates += 1,
                    }
                }
            }
            Verdict::Rejected { reason } => {
                insert_rejected(conn, row, &reason.to_string(), file, batch, now)?;
            }
        }
    }
    Ok(res)
}
