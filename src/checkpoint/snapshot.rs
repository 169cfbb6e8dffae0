//! The checkpoint as of one instant, read whole: what export reads, row by row, without knowing
//! a table or a column of the checkpoint.
//!
//! A [`Snapshot`] is a SQLite read transaction held open while it lives, so every table it
//! streams comes from the same state even while another vmr writes. A PostgreSQL checkpoint is
//! first copied as of one instant into a private temporary state directory (removed when the
//! snapshot is dropped), which is then read the same way: the export holds no transaction open
//! on the shared database meanwhile.

use super::{CheckpointError, Place, db_path, open_reader};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Statement};
use std::borrow::Cow;

/// A read transaction on a checkpoint (see the module's documentation).
pub struct Snapshot {
    conn: Connection,
    /// Whether the snapshot began the read transaction (and ends it when dropped).
    own_tx: bool,
    /// Reports copied out of PostgreSQL, for a snapshot of a PostgreSQL checkpoint.
    copied_reports: Option<u64>,
    /// The temporary copy of a PostgreSQL checkpoint, removed when dropped (after `conn`).
    #[cfg(feature = "pg")]
    _copy: Option<super::copy::TempCopy>,
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if self.own_tx {
            let _ = self.conn.execute_batch("COMMIT");
        }
    }
}

impl Snapshot {
    /// The checkpoint at `place` as of now.
    pub fn open(place: &Place) -> Result<Snapshot, CheckpointError> {
        match place {
            Place::Dir(dir) => Snapshot::of(open_reader(&db_path(dir))?),
            #[cfg(feature = "pg")]
            Place::Pg(loc) => {
                let copy = super::copy::snapshot(loc).map_err(|e| match e {
                    super::copy::CopyError::Checkpoint(e) => e,
                    super::copy::CopyError::Pg(e) => CheckpointError::Pg(e),
                    other => CheckpointError::Db(other.to_string()),
                })?;
                let mut snap = Snapshot::of(open_reader(&db_path(copy.dir()))?)?;
                snap.copied_reports = Some(copy.reports());
                snap._copy = Some(copy);
                Ok(snap)
            }
        }
    }

    /// The checkpoint behind a read connection, in a read transaction begun here unless one is
    /// open on it already.
    pub fn of(conn: Connection) -> Result<Snapshot, CheckpointError> {
        let own_tx = conn.is_autocommit();
        if own_tx {
            conn.execute_batch("BEGIN")?;
        }
        Ok(Snapshot {
            conn,
            own_tx,
            copied_reports: None,
            #[cfg(feature = "pg")]
            _copy: None,
        })
    }

    /// For a snapshot of a PostgreSQL checkpoint, how many reports were copied out of it.
    pub fn copied_reports(&self) -> Option<u64> {
        self.copied_reports
    }

    /// The vendor account the checkpoint is bound to, if any.
    pub(crate) fn account(&self) -> Result<Option<String>, CheckpointError> {
        use rusqlite::OptionalExtension;
        let v = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'account'", [], |r| {
                Ok(text_col(r.get_ref(0)?))
            })
            .optional()?;
        Ok(v.flatten())
    }

    /// Billed calls, and calls that may have been billed (no answer came), over the whole log.
    pub(crate) fn billed_and_unknown(&self) -> Result<(u64, u64), CheckpointError> {
        let (billed, unknown): (i64, i64) = self.conn.query_row(
            "SELECT coalesce(sum(billed), 0), coalesce(sum(delivery = 'unknown'), 0) FROM calls",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((billed.max(0) as u64, unknown.max(0) as u64))
    }

    /// How many failed VINs were billed without a usable report, and the first `limit` of them
    /// by VIN id.
    pub(crate) fn billed_unusable(
        &self,
        limit: usize,
    ) -> Result<(u64, Vec<String>), CheckpointError> {
        let filter = super::state::billed_unusable_sql();
        let count: i64 = self.conn.query_row(
            &format!("SELECT count(*) FROM vins WHERE {filter}"),
            [],
            |r| r.get(0),
        )?;
        let mut st = self.conn.prepare(&format!(
            "SELECT vin FROM vins WHERE {filter} ORDER BY id LIMIT ?1"
        ))?;
        let vins = st
            .query_map([limit as i64], |r| {
                Ok(text_col(r.get_ref(0)?).unwrap_or_default())
            })?
            .collect::<Result<_, _>>()?;
        Ok((u64::try_from(count).unwrap_or(0), vins))
    }

    /// Every version of every report, in (VIN, version) order, chunk by chunk.
    pub(crate) fn reports(&self) -> Result<Reports<'_>, CheckpointError> {
        Ok(Reports {
            st: self.conn.prepare(REPORTS_AFTER)?,
            newer: self.conn.prepare(NEWER_VERSION)?,
            after: (i64::MIN, i64::MIN),
        })
    }

    /// Every VIN the checkpoint knows (rejected input rows included), in VIN-id order, `page`
    /// rows at a time, read when asked for (so that a reader can read them between other
    /// reads of the same snapshot).
    pub(crate) fn request_pages(&self, page: usize) -> Result<RequestPages<'_>, CheckpointError> {
        Ok(RequestPages {
            st: self.conn.prepare(REQUESTS_AFTER)?,
            versions: self.conn.prepare(NEWEST_VERSIONS_AFTER)?,
            after: i64::MIN,
            page,
            done: false,
        })
    }

    /// Every vendor call of the call log, in call order, with its attempt number (per VIN,
    /// purchase and endpoint), handed to `f` `page` rows at a time. One query, not paged: the
    /// attempt number is a window over the whole log.
    pub(crate) fn each_call_page<E: From<CheckpointError>>(
        &self,
        page: usize,
        mut f: impl FnMut(&[CallRow]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut st = self.conn.prepare(CALLS).map_err(sql)?;
        let mut q = st.query([]).map_err(sql)?;
        loop {
            let mut rows = Vec::with_capacity(page);
            while rows.len() < page {
                let Some(r) = q.next().map_err(sql)? else {
                    break;
                };
                rows.push(call_row(r).map_err(sql)?);
            }
            if rows.is_empty() {
                return Ok(());
            }
            f(&rows)?;
            if rows.len() < page {
                return Ok(());
            }
        }
    }
}

fn sql(e: rusqlite::Error) -> CheckpointError {
    CheckpointError::Sql(e)
}

/// The `requests` rows of a [`Snapshot`], read page by page.
pub(crate) struct RequestPages<'s> {
    st: Statement<'s>,
    /// The newest report version of the VINs after a given one ([`NEWEST_VERSIONS_AFTER`]).
    versions: Statement<'s>,
    /// The last VIN id read.
    after: i64,
    page: usize,
    done: bool,
}

impl RequestPages<'_> {
    /// Rows per page.
    pub(crate) fn page_rows(&self) -> usize {
        self.page
    }

    /// Reads the next page, handing each row to `f` in VIN-id order; the number of rows read
    /// (0 once every row has been read).
    pub(crate) fn next_page(
        &mut self,
        mut f: impl FnMut(&RequestRow<'_>),
    ) -> Result<usize, CheckpointError> {
        if self.done {
            return Ok(0);
        }
        let limit = i64::try_from(self.page).unwrap_or(i64::MAX);
        // The newest version of the first `page` VINs with a report after the last one read:
        // every VIN of this page that has a report is among them (the page holds at most
        // `page` VINs). One walk of the (VIN id, version) index instead of a lookup per VIN.
        let mut newest = Vec::with_capacity(self.page);
        let mut q = self.versions.query(rusqlite::params![self.after, limit])?;
        while let Some(r) = q.next()? {
            newest.push((r.get::<_, i64>(0)?, int_col(r.get_ref(1)?)));
        }
        drop(q);
        let mut newest = newest.into_iter().peekable();
        let mut read = 0;
        let mut q = self.st.query(rusqlite::params![self.after, limit])?;
        while let Some(r) = q.next()? {
            let id: i64 = r.get(0)?;
            self.after = id;
            read += 1;
            while newest.next_if(|(v, _)| *v < id).is_some() {}
            let report_version = newest.next_if(|(v, _)| *v == id).and_then(|(_, v)| v);
            let t = |i| r.get_ref(i).map(text_ref);
            let n = |i| r.get_ref(i).map(int_col);
            f(&RequestRow {
                vin: t(1)?,
                license_img_url: t(2)?,
                state: t(3)?,
                code: n(4)?,
                message: t(5)?,
                request_id: t(6)?,
                task_no: t(7)?,
                submit_attempts: n(8)?,
                poll_attempts: n(9)?,
                billed_calls: n(10)?,
                first_seen_at: n(11)?,
                submitted_at: n(12)?,
                completed_at: n(13)?,
                input_file: t(14)?,
                input_line: n(15)?,
                purchases: n(16)?,
                report_version,
            });
        }
        self.done = read < self.page;
        Ok(read)
    }
}

/// One stored report, as export reads it.
#[derive(Debug, Clone)]
pub(crate) struct StoredReport {
    pub vin: String,
    pub version: i64,
    /// The report's requestId; for one stored without it, the one of the purchase that bought
    /// it.
    pub request_id: Option<String>,
    pub task_no: Option<String>,
    pub endpoint: String,
    pub fetched_at: i64,
    /// Empty when the reader did not ask for it.
    pub body: Vec<u8>,
    /// Whether this is its VIN's newest version.
    pub is_latest: bool,
}

/// The reports of a [`Snapshot`], read chunk by chunk.
pub(crate) struct Reports<'s> {
    st: Statement<'s>,
    /// Whether a VIN has a version after a given one ([`NEWER_VERSION`]).
    newer: Statement<'s>,
    /// The last (VIN id, version) read.
    after: (i64, i64),
}

impl Reports<'_> {
    /// The next `n` reports (fewer at the end, none past it). `wanted(vin, version)` says which
    /// of them to return: the body of one not wanted is not even read.
    pub(crate) fn next_chunk(
        &mut self,
        n: usize,
        mut wanted: impl FnMut(&str, i64) -> bool,
    ) -> Result<ChunkRead, CheckpointError> {
        let mut out = ChunkRead {
            read: 0,
            reports: Vec::with_capacity(n),
        };
        let mut q = self
            .st
            .query(rusqlite::params![self.after.0, self.after.1, n as i64])?;
        // Whether the last report returned is its VIN's newest is known once the next row is
        // read (rows come in (VIN id, version) order): the next row belongs to another VIN.
        let mut last_returned = false;
        while let Some(r) = q.next()? {
            out.read += 1;
            let vin_id = r.get(0)?;
            if last_returned && let Some(prev) = out.reports.last_mut() {
                prev.is_latest = vin_id != self.after.0;
            }
            self.after = (vin_id, r.get(1)?);
            let vin: String = r.get(2)?;
            last_returned = wanted(&vin, self.after.1);
            if !last_returned {
                continue;
            }
            let body = match r.get_ref(7)? {
                ValueRef::Blob(b) | ValueRef::Text(b) => b.to_vec(),
                _ => Vec::new(),
            };
            out.reports.push(StoredReport {
                vin,
                version: self.after.1,
                request_id: r.get(3)?,
                task_no: r.get(4)?,
                endpoint: r.get(5)?,
                fetched_at: r.get(6)?,
                body,
                is_latest: false,
            });
        }
        drop(q);
        if last_returned && let Some(prev) = out.reports.last_mut() {
            let newer: bool = self
                .newer
                .query_row(rusqlite::params![self.after.0, self.after.1], |r| r.get(0))?;
            prev.is_latest = !newer;
        }
        Ok(out)
    }
}

/// What [`Reports::next_chunk`] read: how many rows, and the reports wanted among them.
pub(crate) struct ChunkRead {
    pub read: usize,
    pub reports: Vec<StoredReport>,
}

/// Every version of every report after (VIN id, version) `?1, ?2`, at most `?3`, in (VIN,
/// version) order: VIN id, version, VIN, request id, task number, endpoint, fetched at and
/// body. A report stored without its requestId takes the one of the purchase that bought it.
/// Whether each is its VIN's newest is read from the order (`Reports::next_chunk`): a
/// subquery per row for it was a fifth of the query's time.
const REPORTS_AFTER: &str = "SELECT r.vin_id, r.version, r.vin,
        coalesce(r.request_id,
            CASE WHEN r.purchase = v.purchase THEN v.request_id END,
            (SELECT p.request_id FROM purchases p
             WHERE p.vin_id = r.vin_id AND p.purchase = r.purchase)),
        r.task_no, r.endpoint, r.fetched_at, r.body
 FROM reports r LEFT JOIN vins v ON v.id = r.vin_id
 WHERE (r.vin_id, r.version) > (?1, ?2) ORDER BY r.vin_id, r.version LIMIT ?3";

/// Whether VIN id `?1` has a report version after `?2`.
const NEWER_VERSION: &str =
    "SELECT EXISTS (SELECT 1 FROM reports WHERE vin_id = ?1 AND version > ?2)";

/// One VIN as `requests` shows it, its text borrowed from the row being read. Text is `None`
/// when blank; a whole number stored as text is read as a number.
#[derive(Debug)]
pub(crate) struct RequestRow<'r> {
    pub vin: Option<Cow<'r, str>>,
    pub license_img_url: Option<Cow<'r, str>>,
    pub state: Option<Cow<'r, str>>,
    pub code: Option<i64>,
    pub message: Option<Cow<'r, str>>,
    pub request_id: Option<Cow<'r, str>>,
    pub task_no: Option<Cow<'r, str>>,
    pub submit_attempts: Option<i64>,
    pub poll_attempts: Option<i64>,
    pub billed_calls: Option<i64>,
    pub first_seen_at: Option<i64>,
    pub submitted_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub input_file: Option<Cow<'r, str>>,
    pub input_line: Option<i64>,
    /// Purchases of the VIN so far (0 for a rejected row).
    pub purchases: Option<i64>,
    /// Its newest report's version, when it has one.
    pub report_version: Option<i64>,
}

const REQUESTS_AFTER: &str = "SELECT id, vin, license_img_url, state, code, message, request_id,
        task_no, submit_attempts, poll_attempts, billed_calls, first_seen_at, submitted_at,
        completed_at, input_file, input_line,
        CASE WHEN state = 'rejected' THEN 0 ELSE purchase END
 FROM vins WHERE id > ?1 ORDER BY id LIMIT ?2";

/// The newest report version of each of the first `?2` VINs with a report after VIN id `?1`,
/// in VIN-id order: a walk of the (VIN id, version) key, no sort.
const NEWEST_VERSIONS_AFTER: &str = "SELECT vin_id, max(version) FROM reports
 WHERE vin_id > ?1 GROUP BY vin_id ORDER BY vin_id LIMIT ?2";

/// One vendor call as `calls` shows it.
#[derive(Debug, Clone, Default)]
pub(crate) struct CallRow {
    pub vin: Option<String>,
    pub endpoint: Option<String>,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub http_status: Option<i64>,
    pub code: Option<i64>,
    /// `billed`, `not_billed`, `not_sent` or `unknown`.
    pub class: Option<String>,
    pub task_no: Option<String>,
    pub request_id: Option<String>,
    /// 1 for the VIN's first call to this endpoint in this purchase, and so on.
    pub attempt: Option<i64>,
    pub purchase: Option<i64>,
}

const CALLS: &str = "SELECT v.vin, c.endpoint, c.started_at, c.ended_at, c.http_status, c.code,
        CASE WHEN c.billed = 1 THEN 'billed'
             WHEN c.delivery = 'not_sent' THEN 'not_sent'
             WHEN c.delivery = 'unknown' THEN 'unknown'
             ELSE 'not_billed' END,
        c.task_no, c.request_id, c.attempt, c.purchase
 FROM (SELECT *,
          row_number() OVER (PARTITION BY vin_id, purchase, endpoint ORDER BY id) AS attempt
       FROM calls) c
 LEFT JOIN vins v ON v.id = c.vin_id
 ORDER BY c.id";

fn call_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CallRow> {
    let t = |i| r.get_ref(i).map(text_col);
    let n = |i| r.get_ref(i).map(int_col);
    Ok(CallRow {
        vin: t(0)?,
        endpoint: t(1)?,
        started_at: n(2)?,
        ended_at: n(3)?,
        http_status: n(4)?,
        code: n(5)?,
        class: t(6)?,
        task_no: t(7)?,
        request_id: t(8)?,
        attempt: n(9)?,
        purchase: n(10)?,
    })
}

/// A text column, with `""` (and blanks) as null like every other text value.
fn text_col(v: ValueRef<'_>) -> Option<String> {
    text_ref(v).map(Cow::into_owned)
}

/// [`text_col`], borrowed from the row where it is UTF-8 text.
fn text_ref(v: ValueRef<'_>) -> Option<Cow<'_, str>> {
    let s = match v {
        ValueRef::Text(b) | ValueRef::Blob(b) => String::from_utf8_lossy(b),
        ValueRef::Integer(i) => Cow::Owned(i.to_string()),
        ValueRef::Real(f) => Cow::Owned(f.to_string()),
        ValueRef::Null => return None,
    };
    (!s.trim().is_empty()).then_some(s)
}

/// An integer column; text that holds an integer is read too, anything else is null.
fn int_col(v: ValueRef<'_>) -> Option<i64> {
    match v {
        ValueRef::Integer(i) => Some(i),
        ValueRef::Text(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
        _ => None,
    }
}
