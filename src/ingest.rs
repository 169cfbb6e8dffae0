//! Ingest: read an input file into the checkpoint, calling nothing and costing nothing.
//!
//! Rows stream from `input` and are written in chunks, each one group-committed transaction, so
//! a million-row file takes constant memory and a kill at any instant loses at most the chunk in
//! flight. A first ingest into a SQLite checkpoint is one transaction instead, with the VIN index
//! built after the rows (`Checkpoint::bulk_load`): twice as fast, and a kill leaves the
//! checkpoint as it was before. Re-reading a file is idempotent: a VIN already recorded from the
//! same file line is recognised as such (not counted as a duplicate), so an interrupted ingest
//! simply runs again.

use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

use crate::api::now_ms;
use crate::checkpoint::{BatchTotals, Checkpoint, CheckpointError, RowsRecorded};
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
        |rx: Option<tokio::sync::oneshot::Receiver<Result<RowsRecorded, CheckpointError>>>,
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
    // A first ingest into a SQLite checkpoint is one bulk load (its VIN index built after the
    // rows); any other is written chunk by chunk.
    let mut bulk = ckpt.bulk_load(file.clone(), batch.clone(), now)?;
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
            match &bulk {
                // A send fails only when the load has ended (with an error, answered below).
                Some(load) => {
                    if load.rows.send(rows).is_err() {
                        break;
                    }
                }
                None => {
                    let (file, batch) = (file.clone(), batch.clone());
                    let rx = ckpt.record_rows(rows, file, batch, now);
                    settle(in_flight.replace(rx), &mut s)?;
                }
            }
        }
        if end {
            break;
        }
    }
    settle(in_flight.take(), &mut s)?;
    if let Some(load) = bulk.take() {
        drop(load.rows);
        settle(Some(load.done), &mut s)?;
    }
    let complete = reader.read_error().is_none();
    ckpt.record_batch(BatchTotals {
        batch_id: s.batch_id.clone(),
        input_file: s.input_file.clone(),
        first_seen_at: now,
        rows_read: s.rows_read,
        accepted: s.queued + s.already_ingested,
        duplicates: s.duplicates,
        rejected: s.rejected,
        check_digit_warnings: s.check_digit_warnings,
        complete,
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
    pub(crate) fn render(&self) -> String {
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
