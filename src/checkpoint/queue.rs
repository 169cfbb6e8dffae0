//! What is to be sent next: the VINs to submit, the pending VINs due a poll, and the queries
//! that choose the VINs to buy again (`--refresh-older-than`, `--retry-failed`, ...).

#[cfg(feature = "pg")]
use super::workers;
use super::{CheckpointError, Conn, State, db, p, state};
use serde::Serialize;

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
        let unusable = state::Failure::BilledUnusable.as_str();
        let failed = match &self.retry_failed {
            None => "FALSE".to_owned(),
            Some(kinds) if kinds.is_empty() => "TRUE".to_owned(),
            Some(kinds) => {
                let mut any: Vec<String> = kinds
                    .iter()
                    .map(|k| match k {
                        FailedKind::Code(c) => {
                            format!("(v.code = {c} AND coalesce(v.failure, '') <> '{unusable}')")
                        }
                        FailedKind::BilledUnusable => {
                            format!("v.failure = '{unusable}'")
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

/// `vins v` as a page query reads it: by id from the page's `after_id`. SQLite, which keeps no
/// statistics, would answer `v.state IN (…) OR <rebuy terms>` with a MULTI-INDEX OR over
/// `vins_state`: every VIN in those states read and sorted for every page, so each page of a
/// million-VIN queue cost as much as the whole queue (docs/performance.md). NOT INDEXED makes
/// the rowid range `v.id > ?` drive the scan, which stops at the page's `limit`-th row; a pass
/// costs at most one read of the table, however many pages it takes. PostgreSQL plans from its
/// statistics.
fn vins_by_id(conn: &Conn) -> &'static str {
    #[cfg(feature = "pg")]
    if matches!(conn, Conn::Pg(_)) {
        return "vins v";
    }
    let _ = conn;
    "vins v NOT INDEXED"
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
        "SELECT v.id, v.vin, coalesce(v.license_img_url, ''), v.state FROM {}
         WHERE v.id > ?3 AND (v.state IN ({list}) OR {refresh} OR {failed} OR {expired})
         ORDER BY v.id LIMIT ?4",
        vins_by_id(conn)
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
    let sql = format!(
        "SELECT v.id, v.vin, coalesce(v.request_id, ''), coalesce(v.accepted_at, v.submitted_at, v.first_seen_at), v.poll_interval_ms
         FROM {} WHERE v.state = 'pending' AND coalesce(v.next_poll_at, 0) <= ?1 AND v.id > ?2
         ORDER BY v.id LIMIT ?3",
        vins_by_id(conn)
    );
    page_query(
        conn,
        &sql,
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
    // Two index lookups on (state, next_poll_at) rather than a read of every pending VIN.
    conn.query_row(
        "SELECT CASE WHEN EXISTS (SELECT 1 FROM vins WHERE state = 'pending' AND next_poll_at IS NULL)
                     THEN 0
                     ELSE (SELECT min(next_poll_at) FROM vins WHERE state = 'pending') END",
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

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's plan for `sql`, one line per step.
    fn plan(conn: &rusqlite::Connection, sql: &str, params: &[&dyn rusqlite::ToSql]) -> String {
        let mut st = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("plan");
        let rows = st
            .query_map(params, |r| r.get::<_, String>(3))
            .expect("rows");
        rows.map(|r| r.expect("row")).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn page_queries_walk_the_ids_and_never_sort_the_whole_queue() {
        let t = tempfile::tempdir().expect("tempdir");
        let (ckpt, _) = crate::checkpoint::Checkpoint::open(t.path()).expect("open");
        drop(ckpt);
        let lite = rusqlite::Connection::open(crate::checkpoint::db_path(t.path())).expect("db");
        let conn = Conn::Lite(lite);
        let Conn::Lite(lite) = &conn else {
            unreachable!()
        };
        let rebuys = [
            Rebuy::default(),
            Rebuy {
                batch: Some("b".into()),
                refresh_before: Some(5),
                retry_failed: Some(vec![FailedKind::Code(702), FailedKind::BilledUnusable]),
                retry_expired: true,
            },
        ];
        for rebuy in &rebuys {
            let [refresh, failed, expired] = rebuy.conditions();
            let sql = format!(
                "SELECT v.id FROM {} WHERE v.id > ?3 AND (v.state IN ('queued','uncertain') OR {refresh} OR {failed} OR {expired}) ORDER BY v.id LIMIT ?4",
                vins_by_id(&conn)
            );
            let p = plan(
                lite,
                &sql,
                &[&rebuy.batch, &rebuy.refresh_before, &0i64, &10i64],
            );
            assert!(p.contains("INTEGER PRIMARY KEY (rowid>?)"), "{p}");
            assert!(
                !p.contains("MULTI-INDEX OR") && !p.contains("TEMP B-TREE"),
                "{p}"
            );
        }
        let sql = format!(
            "SELECT v.id FROM {} WHERE v.state = 'pending' AND coalesce(v.next_poll_at, 0) <= ?1 AND v.id > ?2 ORDER BY v.id LIMIT ?3",
            vins_by_id(&conn)
        );
        let p = plan(lite, &sql, &[&0i64, &0i64, &10i64]);
        assert!(
            p.contains("INTEGER PRIMARY KEY (rowid>?)") && !p.contains("TEMP B-TREE"),
            "{p}"
        );
        // The next due time is found through the index, and is right.
        assert_eq!(next_poll_due(&conn).expect("due"), None);
        lite.execute_batch(
            "INSERT INTO vins (vin, state, next_poll_at, first_seen_at) VALUES ('A', 'pending', 50, 1), ('B', 'pending', 20, 1), ('C', 'queued', 1, 1);",
        )
        .expect("rows");
        assert_eq!(next_poll_due(&conn).expect("due"), Some(20));
        lite.execute_batch("INSERT INTO vins (vin, state, next_poll_at, first_seen_at) VALUES ('D', 'pending', NULL, 1);")
            .expect("row");
        assert_eq!(next_poll_due(&conn).expect("due"), Some(0));
    }
}
