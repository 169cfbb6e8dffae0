//! Ingest: read an input file into the checkpoint, calling nothing and costing nothing.
//!
//! Rows stream from `input` and are written in chunks, each one group-committed transaction, so
//! a million-row file takes constant memory and a kill at any instant loses at most the chunk in
//! flight. Re-reading a file is idempotent: a VIN already recorded from the same file line is
//! recognised as such (not counted as a duplicate), so an interrupted ingest simply runs again.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

use crate::api::now_ms;
use crate::checkpoint::{Checkpoint, CheckpointError, Conn, p};
use crate::input::{Input, InputError, InputOptions, InputReader, InputRow, Verdict};

/// Rows per transaction.
const CHUNK: usize = 20_000;
/// Rejected rows listed one by one in the summary.
pub(crate) const LIST_REJECTED: usize = 20;

#[derive(Debug, thiserror::Error)]
pub(crate) enum IngestError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{0}")]
    Incomplete(String),
}

/// What one ingest did.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct IngestSummary {
    pub input_file: String,
    pub batch_id: String,
    pub rows_read: u64,
    /// New VINs queued by this ingest.
    pub queued: u64,
    /// Rows already recorded by an earlier ingest of this same file.
    pub already_ingested: u64,
    /// Rows whose VIN was already seen at another line or in another batch.
    pub duplicates: u64,
    pub rejected: u64,
    /// Rejections by reason kind (the reason with the quoted VIN taken out).
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// The first rejected rows: (line, VIN as written, reason).
    pub rejected_rows: Vec<(u64, String, String)>,
    pub check_digit_warnings: u64,
    /// How the input was read: separator, header line, a column chosen over another.
    pub notes: Vec<String>,
}

#[derive(Default)]
struct ChunkResult {
    queued: u64,
    already: u64,
    duplicates: u64,
}

fn write_chunk(
    conn: &Conn,
    rows: &[InputRow],
    file: &str,
    batch: &str,
    now: i64,
) -> Result<ChunkResult, CheckpointError> {
    let mut res = ChunkResult::default();
    // A VIN already recorded (or a rejected row already recorded from this line) is skipped.
    let insert = "vins (vin, license_img_url, state, message, first_seen_at, input_file, input_line, batch_id, check_digit_ok)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
    let origin = "SELECT batch_id, input_line, id FROM vins WHERE vin = ?1 AND state <> 'rejected'";
    // Every VIN of this input, new or seen before: a refresh buys only the current input's.
    let member = "batch_vins (batch_id, vin_id) VALUES (?1, ?2)";
    for row in rows {
        match &row.verdict {
            Verdict::Accepted { check_digit_ok } => {
                let new: Option<i64> = conn.insert_ignore(
                    insert,
                    true,
                    p![
                        row.vin,
                        row.license_img_url,
                        "queued",
                        Option::<String>::None,
                        now,
                        file,
                        row.line as i64,
                        batch,
                        Some(i64::from(*check_digit_ok))
                    ],
                )?;
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
                conn.insert_ignore(
                    insert,
                    true,
                    p![
                        row.vin_raw,
                        row.license_img_url,
                        "rejected",
                        reason.to_string(),
                        now,
                        file,
                        row.line as i64,
                        batch,
                        Option::<i64>::None
                    ],
                )?;
            }
        }
    }
    Ok(res)
}

/// Opens an input (a file, `-`, or an object-store URL) and checks it as a whole (exists, is a
/// table, has the columns; every sheet with `--sheet '*'`), before the checkpoint is touched: a
/// file-level problem leaves the checkpoint as it was.
pub(crate) fn open_input(path: &Path, opts: &InputOptions) -> Result<Input, IngestError> {
    Ok(Input::open(path, opts)?)
}

/// Reads every table of an opened input into the checkpoint, one batch each.
pub(crate) fn ingest_input(
    ckpt: &Checkpoint,
    mut input: Input,
) -> Result<Vec<IngestSummary>, IngestError> {
    let mut summaries = Vec::new();
    let skipped = input.skipped_sheets().to_vec();
    while let Some(reader) = input.next_reader() {
        let mut s = ingest(ckpt, reader?)?;
        if summaries.is_empty() && !skipped.is_empty() {
            s.notes
                .push(format!("empty sheets skipped: {}", skipped.join(", ")));
        }
        summaries.push(s);
    }
    Ok(summaries)
}

/// Reads one table of an input into the checkpoint.
///
/// Long on purpose: reading one chunk while the writer commits the last is one loop, and the
/// batch's bookkeeping around it must stay in one place to make an interrupted ingest idempotent.
pub(crate) fn ingest(
    ckpt: &Checkpoint,
    mut reader: InputReader,
) -> Result<IngestSummary, IngestError> {
    // The `input_file` column holds the file's name; messages keep the path as given.
    let file = reader.recorded_name().to_owned();
    let batch = reader.fingerprint().to_owned();
    let mut s = IngestSummary {
        input_file: file.clone(),
        batch_id: batch.clone(),
        notes: reader.notes().to_vec(),
        ..IngestSummary::default()
    };
    let now = now_ms();
    // One chunk is written while the next is read: the reader never waits for the disk unless
    // it gets a whole chunk ahead.
    let mut in_flight: Option<tokio::sync::oneshot::Receiver<_>> = None;
    let settle =
        |rx: Option<tokio::sync::oneshot::Receiver<Result<ChunkResult, CheckpointError>>>,
         s: &mut IngestSummary|
         -> Result<(), IngestError> {
            if let Some(rx) = rx {
                let r = rx
                    .blocking_recv()
                    .map_err(|_| CheckpointError::WriterGone)??;
                s.queued += r.queued;
                s.already_ingested += r.already;
                s.duplicates += r.duplicates;
            }
            Ok(())
        };
    let mut chunk: Vec<InputRow> = Vec::with_capacity(CHUNK);
    loop {
        let row = reader.next_row();
        let end = row.is_none();
        if let Some(row) = row {
            s.rows_read += 1;
            match &row.verdict {
                Verdict::Accepted { check_digit_ok } => {
                    if !check_digit_ok {
                        s.check_digit_warnings += 1;
                    }
                }
                Verdict::Rejected { reason } => {
                    s.rejected += 1;
                    *s.rejected_by_reason.entry(reason.kind()).or_default() += 1;
                    if s.rejected_rows.len() < LIST_REJECTED {
                        s.rejected_rows
                            .push((row.line, row.vin_raw.clone(), reason.to_string()));
                    }
                }
            }
            chunk.push(row);
        }
        if chunk.len() >= CHUNK || (end && !chunk.is_empty()) {
            let rows = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
            let (file, batch) = (file.clone(), batch.clone());
            let rx = ckpt
                .writer()
                .submit(move |c| write_chunk(c, &rows, &file, &batch, now));
            settle(in_flight.replace(rx), &mut s)?;
        }
        if end {
            break;
        }
    }
    settle(in_flight.take(), &mut s)?;
    let complete = reader.read_error().is_none();
    let stats = s.clone();
    ckpt.writer().write_blocking(move |c| {
        c.execute(
            "INSERT INTO batches (id, input_file, first_seen_at, rows_read, accepted, duplicates, rejected, check_digit_warnings, complete)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (id) DO UPDATE SET rows_read = excluded.rows_read, accepted = excluded.accepted,
                duplicates = excluded.duplicates, rejected = excluded.rejected,
                check_digit_warnings = excluded.check_digit_warnings, complete = excluded.complete",
            p![
                stats.batch_id,
                stats.input_file,
                now,
                stats.rows_read as i64,
                (stats.queued + stats.already_ingested) as i64,
                stats.duplicates as i64,
                stats.rejected as i64,
                stats.check_digit_warnings as i64,
                i64::from(complete)
            ],
        )?;
        Ok(())
    })?;
    if let Some(e) = reader.read_error() {
        return Err(IngestError::Incomplete(format!(
            "{}: reading stopped partway ({e}); the rows before were recorded, run again once the file is readable",
            s.input_file
        )));
    }
    Ok(s)
}

impl IngestSummary {
    /// One screen for people.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{}: {} rows read; {} new VINs queued, {} already ingested, {} duplicates, {} rejected, {} check-digit warnings\n",
            self.input_file,
            self.rows_read,
            self.queued,
            self.already_ingested,
            self.duplicates,
            self.rejected,
            self.check_digit_warnings
        );
        for note in &self.notes {
            out.push_str(&format!("  {note}\n"));
        }
        for (kind, n) in &self.rejected_by_reason {
            out.push_str(&format!("  rejected {n:>6} × {kind}\n"));
        }
        for (line, _vin, reason) in &self.rejected_rows {
            out.push_str(&format!(
                "  {} line {line}: {reason} (row rejected, not sent)\n",
                self.input_file
            ));
        }
        if self.rejected as usize > self.rejected_rows.len() {
            out.push_str(&format!(
                "  … and {} more rejected rows (vmr status lists them)\n",
                self.rejected as usize - self.rejected_rows.len()
            ));
        }
        out
    }
}
