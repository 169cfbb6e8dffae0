//! What `vmr status`, the metrics and the run's cost estimate read: lists of VINs that need a
//! person, the input files and their freshness, the last run, and small totals.

use super::{CheckpointError, Conn, p};
use serde::Serialize;

/// The first `limit` VINs matching `condition`, in the order they were read, and how many
/// match.
fn vins_where(
    conn: &Conn,
    condition: &str,
    limit: usize,
) -> Result<(Vec<String>, i64), CheckpointError> {
    let vins = conn.query_map(
        &format!("SELECT vin FROM vins WHERE {condition} ORDER BY id LIMIT {limit}"),
        p![],
        |r| r.get(0),
    )?;
    let total = conn.query_row(
        &format!("SELECT count(*) FROM vins WHERE {condition}"),
        p![],
        |r| r.get(0),
    )?;
    Ok((vins, total))
}

/// The uncertain VINs (the first `limit`, and how many): those whose generate may have been
/// billed without an answer. When no vmr writes the checkpoint (`writer_running` false), a VIN
/// still `submitting` was in flight when its process died and counts as uncertain too; in
/// PostgreSQL, a `submitting` VIN counts once no live worker's claim holds it.
pub(crate) fn uncertain_vins(
    conn: &Conn,
    writer_running: bool,
    limit: usize,
) -> Result<(Vec<String>, i64), CheckpointError> {
    #[cfg(feature = "pg")]
    if matches!(conn, Conn::Pg(_)) {
        let cond = format!(
            "(state = 'uncertain' OR (state = 'submitting' AND {}))",
            super::reaping::unheld_sql(conn)?
        );
        return vins_where(conn, &cond, limit);
    }
    let cond = if writer_running {
        "state = 'uncertain'"
    } else {
        "state IN ('uncertain', 'submitting')"
    };
    vins_where(conn, cond, limit)
}

/// The VINs failed because a billed answer held no usable report (the first `limit`, and how
/// many).
pub(crate) fn billed_unusable_vins(
    conn: &Conn,
    limit: usize,
) -> Result<(Vec<String>, i64), CheckpointError> {
    vins_where(conn, &super::state::billed_unusable_sql(), limit)
}

/// A rejected input row, with its reason.
#[derive(Debug, Serialize)]
pub(crate) struct RejectedRow {
    pub input_file: Option<String>,
    pub line: Option<i64>,
    pub vin: String,
    pub reason: Option<String>,
}

/// The first `limit` rejected rows, in the order they were read.
pub(crate) fn rejected_rows(
    conn: &Conn,
    limit: usize,
) -> Result<Vec<RejectedRow>, CheckpointError> {
    conn.query_map(
        &format!(
            "SELECT input_file, input_line, vin, message FROM vins WHERE state = 'rejected' ORDER BY id LIMIT {limit}"
        ),
        p![],
        |r| {
            Ok(RejectedRow {
                input_file: r.get(0)?,
                line: r.get(1)?,
                vin: r.get(2)?,
                reason: r.get(3)?,
            })
        },
    )
}

/// One run as the checkpoint's `runs` table records it (times in ms since the epoch).
#[derive(Debug, Clone)]
pub(crate) struct RunRow {
    pub command: String,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub exit_code: Option<i64>,
    pub outcome: Option<String>,
}

/// The newest run, ended or not.
pub(crate) fn last_run(conn: &Conn) -> Result<Option<RunRow>, CheckpointError> {
    conn.query_opt(
        "SELECT command, started_at, ended_at, exit_code, outcome FROM runs ORDER BY id DESC LIMIT 1",
        p![],
        |r| {
            Ok(RunRow {
                command: r.get(0)?,
                started_at: r.get(1)?,
                ended_at: r.get(2)?,
                exit_code: r.get(3)?,
                outcome: r.get(4)?,
            })
        },
    )
}

/// Totals of every ingest: duplicate rows, check-digit warnings, and input files.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct InputTotals {
    pub duplicates: i64,
    pub check_digit_warnings: i64,
    pub batches: i64,
}

pub(crate) fn input_totals(conn: &Conn) -> Result<InputTotals, CheckpointError> {
    conn.query_row(
        "SELECT CAST(coalesce(sum(duplicates), 0) AS BIGINT),
            CAST(coalesce(sum(check_digit_warnings), 0) AS BIGINT), count(*)
         FROM batches",
        p![],
        |r| {
            Ok(InputTotals {
                duplicates: r.get(0)?,
                check_digit_warnings: r.get(1)?,
                batches: r.get(2)?,
            })
        },
    )
}

/// One input file (batch): its id, its file name, and when it was first read (ms).
#[derive(Debug, Clone)]
pub(crate) struct BatchRow {
    pub id: String,
    pub input_file: String,
    pub first_seen_at: i64,
}

/// The first `limit` input files, newest first.
pub(crate) fn batches(conn: &Conn, limit: usize) -> Result<Vec<BatchRow>, CheckpointError> {
    conn.query_map(
        &format!(
            "SELECT id, input_file, first_seen_at FROM batches ORDER BY first_seen_at DESC, id LIMIT {limit}"
        ),
        p![],
        |r| {
            Ok(BatchRow {
                id: r.get(0)?,
                input_file: r.get(1)?,
                first_seen_at: r.get(2)?,
            })
        },
    )
}

/// How fresh one input file's reports are.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Freshness {
    /// The input's VINs.
    pub vins: i64,
    /// Those with a report.
    pub with_report: i64,
    /// When the oldest of their latest reports was fetched (ms).
    pub oldest: Option<i64>,
}

pub(crate) fn batch_freshness(conn: &Conn, batch: &str) -> Result<Freshness, CheckpointError> {
    conn.query_row(
        "SELECT count(*), count(latest), min(latest)
         FROM (SELECT (SELECT max(r.fetched_at) FROM reports r WHERE r.vin_id = b.vin_id) AS latest
               FROM batch_vins b WHERE b.batch_id = ?1) AS members",
        p![batch],
        |r| {
            Ok(Freshness {
                vins: r.get(0)?,
                with_report: r.get(1)?,
                oldest: r.get(2)?,
            })
        },
    )
}

/// Reports stored, and how many of them came by get (the rest came inline with generate).
pub(crate) fn reports_stored(conn: &Conn) -> Result<(i64, i64), CheckpointError> {
    conn.query_row(
        "SELECT count(*), CAST(coalesce(sum(CASE WHEN endpoint = 'get' THEN 1 ELSE 0 END), 0) AS BIGINT) FROM reports",
        p![],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// When the longest-pending VIN's billed generate answered (ms), if any VIN is pending.
pub(crate) fn oldest_pending(conn: &Conn) -> Result<Option<i64>, CheckpointError> {
    conn.query_row(
        "SELECT min(accepted_at) FROM vins WHERE state = 'pending'",
        p![],
        |r| r.get(0),
    )
}

/// The live workers of a PostgreSQL checkpoint; `None` for a state directory, which has none.
pub(crate) fn live_workers(conn: &Conn) -> Result<Option<Vec<super::WorkerRow>>, CheckpointError> {
    #[cfg(feature = "pg")]
    if matches!(conn, Conn::Pg(_)) {
        return super::reaping::live(conn).map(Some);
    }
    let _ = conn;
    Ok(None)
}
