//! Export: the checkpoint → the five typed tables of design.md ("Output tables") and the
//! `calls` table, as Parquet and/or CSV, plus the raw reports as JSON lines and a
//! `manifest.json`.
//!
//! Export only reads the checkpoint (in one read transaction, so it sees one consistent state
//! even while another vmr writes). Reports are read in chunks ordered by VIN id, each chunk is
//! flattened in parallel with rayon (`flatten`), and the batches go to one writer thread per
//! table (`write`), so memory stays bounded however many reports there are.
//!
//! The commit protocol: an export holds `<out>/.vmr-export.lock` from start to end (a second
//! export to the same directory waits), first removes the temporary files of exports that died,
//! writes every file aside, then removes the previous `manifest.json`, renames the new files
//! into place, and writes the new `manifest.json` last (temp, fsync, rename, fsync of the
//! directory). The manifest is the commit marker: a folder is complete when `manifest.json` is
//! present, and the manifest lists the files it covers with their rows and bytes.

pub mod flatten;
pub mod lake;
pub mod schema;
pub mod write;

use arrow::array::Int32Builder;
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use parquet::file::properties::WriterProperties;
use rayon::prelude::*;
use rusqlite::Connection;
use rusqlite::types::ValueRef;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Instant;

use crate::checkpoint::state::BILLED_UNUSABLE;
use crate::config::{Format, Layout, Settings};
use flatten::{BadBody, Quality, SourceReport, Want};
use schema::{CallCols, RequestCols};
use write::{Staged, TableSink};

pub use schema::EXPORT_SCHEMA_VERSION;

/// Reports read from the checkpoint at a time.
const CHUNK_ROWS: usize = 2_000;
/// Reports per parallel flatten task.
const SLICE_ROWS: usize = 100;
/// Bad bodies listed by name in the manifest (all are counted).
const LIST_BAD: usize = 100;
/// VINs billed without a usable report listed in the manifest (all are counted).
const LIST_BILLED_UNUSABLE: usize = 100;
/// The commit marker.
const MANIFEST: &str = "manifest.json";

/// Where and what to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub out: PathBuf,
    pub formats: Vec<Format>,
    pub csv_bom: bool,
    /// The price of a billed call (`--price`): the manifest then says what the checkpoint's
    /// billed calls cost.
    pub price: Option<crate::price::Price>,
    /// `--layout`: flat files, or hive partitions added to by each export.
    pub layout: Layout,
    /// `--full`: a hive export that starts a new history, refused where exports already are.
    pub full: bool,
}

impl ExportOptions {
    pub(crate) fn from_settings(s: &Settings) -> ExportOptions {
        ExportOptions {
            out: s.out.clone(),
            formats: s.formats.clone(),
            csv_bom: s.csv_bom,
            price: s.price.clone(),
            layout: s.layout,
            full: false,
        }
    }

    fn has(&self, f: Format) -> bool {
        self.formats.contains(&f)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("reading the checkpoint: {0}")]
    Checkpoint(#[from] rusqlite::Error),
    #[error("{}: {source} (check that the output directory exists and is writable, and the disk is not full)", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("building Arrow arrays: {0}")]
    Arrow(#[from] ArrowError),
    #[error("writing CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("export failed: {0} (a bug in vmr; please report it)")]
    Internal(String),
    /// The object store (or a local hive destination) failed; `permanent` when retrying cannot
    /// help (no such bucket, refused credentials), which is a usage error.
    #[error("{url}: {reason}")]
    Store {
        url: String,
        reason: String,
        permanent: bool,
    },
    /// The destination is not one this export may write to (exit 2).
    #[error("{0}")]
    Refused(String),
}

impl ExportError {
    /// Whether the user must change something before trying again (exit 2).
    pub(crate) fn is_usage(&self) -> bool {
        matches!(
            self,
            ExportError::Store {
                permanent: true,
                ..
            } | ExportError::Refused(_)
        )
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportSummary {
    pub out: PathBuf,
    pub formats: Vec<String>,
    /// Rows per table, in design.md's order.
    pub rows: Vec<(String, u64)>,
    /// Lines of `reports.jsonl`, when written.
    pub jsonl_lines: Option<u64>,
    pub quality: Quality,
    pub bad_bodies: u64,
    pub bad_body_list: Vec<BadBody>,
    /// Failed VINs whose vendor answer was billed but held no usable report.
    pub billed_unusable: u64,
    /// The files written, `manifest.json` last.
    pub files: Vec<PathBuf>,
    pub elapsed_ms: u64,
}

impl ExportSummary {
    /// A few lines for people.
    pub fn render(&self) -> String {
        let mut out = format!(
            "exported to {} ({}) in {:.1}s\n",
            self.out.display(),
            self.formats.join(", "),
            self.elapsed_ms as f64 / 1000.0
        );
        for (table, n) in &self.rows {
            out.push_str(&format!("  {table:<11} {n:>10} rows\n"));
        }
        if let Some(n) = self.jsonl_lines {
            out.push_str(&format!("  {:<11} {n:>10} lines\n", "reports.jsonl"));
        }
        let coerced = self.quality.coerced_total();
        if coerced > 0 {
            let cols: Vec<String> = self
                .quality
                .coerced_to_null
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            out.push_str(&format!(
                "  {coerced} unreadable values written as null: {}\n",
                cols.join(", ")
            ));
        }
        if self.bad_bodies > 0 {
            out.push_str(&format!(
                "  {} stored bodies hold no readable report and were skipped (listed in the manifest; the raw bodies stay in the checkpoint)\n",
                self.bad_bodies
            ));
        }
        if self.billed_unusable > 0 {
            out.push_str(&format!(
                "  {} VINs were billed without a usable report (listed in the manifest under billed_unusable)\n",
                self.billed_unusable
            ));
        }
        out
    }
}

/// What every manifest holds: `manifest.json` of a flat export, and (flattened into it) each
/// hive export's `_vmr/exports/<id>.json`, whose files are [`lake::LakeFile`]s.
#[derive(Serialize)]
struct Manifest<'a, F: Serialize = FileEntry> {
    vmr_version: &'static str,
    schema_version: u32,
    generated_at: String,
    /// The checkpoint's account (`meta.account`), null when it has none.
    account: Option<String>,
    formats: &'a [String],
    /// Every file this export wrote (the manifest aside): what the folder's commit covers.
    files: &'a [F],
    /// In design.md's table order.
    row_counts: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jsonl_lines: Option<u64>,
    billed_unusable: BilledUnusable,
    data_quality: DataQuality<'a>,
    /// What the checkpoint's billed calls cost, every run and every purchase; present only
    /// with `--price`.
    #[serde(skip_serializing_if = "Option::is_none")]
    money: Option<crate::price::Spent>,
}

impl<'a, F: Serialize> Manifest<'a, F> {
    /// The manifest of an export of `conn` that wrote `files` (`rows` per table).
    fn new(
        conn: &Connection,
        opts: &ExportOptions,
        formats: &'a [String],
        files: &'a [F],
        rows: &[(String, u64)],
        jsonl_lines: Option<u64>,
        collected: &'a Collected,
    ) -> Result<Self, ExportError> {
        Ok(Manifest {
            vmr_version: env!("CARGO_PKG_VERSION"),
            schema_version: EXPORT_SCHEMA_VERSION,
            generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            account: account(conn)?,
            formats,
            files,
            row_counts: rows
                .iter()
                .map(|(t, n)| (t.clone(), serde_json::Value::from(*n)))
                .collect(),
            jsonl_lines,
            billed_unusable: billed_unusable(conn)?,
            data_quality: DataQuality {
                coerced_to_null: &collected.quality.coerced_to_null,
                unusable_containers: &collected.quality.unusable_containers,
                read_leniently: collected.quality.read_leniently,
                bad_bodies: collected.bad_bodies,
                bad_body_list: &collected.bad_body_list,
            },
            money: money(conn, opts)?,
        })
    }
}

/// One file an export wrote, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct FileEntry {
    /// Relative to the output directory.
    pub path: String,
    pub table: String,
    /// `parquet`, `csv` or `jsonl`.
    pub format: String,
    /// Data rows (without the CSV header), or lines of `reports.jsonl`.
    pub rows: u64,
    pub bytes: u64,
}

impl FileEntry {
    fn of(staged: &Staged, rows: u64) -> Result<FileEntry, ExportError> {
        let path = staged.name();
        let (table, format) = path
            .rsplit_once('.')
            .map(|(t, f)| (t.to_owned(), f.to_owned()))
            .unwrap_or_else(|| (path.clone(), String::new()));
        Ok(FileEntry {
            bytes: staged.bytes()?,
            path,
            table,
            format,
            rows,
        })
    }
}

/// Failed VINs whose vendor answer was billed but held no usable report.
#[derive(Debug, Clone, Serialize)]
struct BilledUnusable {
    count: u64,
    /// The first [`LIST_BILLED_UNUSABLE`], by VIN id.
    vins: Vec<String>,
}

#[derive(Serialize)]
struct DataQuality<'a> {
    coerced_to_null: &'a BTreeMap<&'static str, u64>,
    unusable_containers: &'a BTreeMap<&'static str, u64>,
    /// Bodies that were not strict JSON, read leniently (docs/design.md, "Money rules").
    read_leniently: u64,
    bad_bodies: u64,
    bad_body_list: &'a [BadBody],
}

fn format_names(formats: &[Format]) -> Vec<String> {
    formats.iter().map(|f| format_name(*f).to_owned()).collect()
}

/// What the checkpoint's billed calls cost, with `--price`.
fn money(
    conn: &Connection,
    opts: &ExportOptions,
) -> Result<Option<crate::price::Spent>, ExportError> {
    let Some(p) = &opts.price else {
        return Ok(None);
    };
    let (billed, unknown): (i64, i64) = conn.query_row(
        "SELECT coalesce(sum(billed), 0), coalesce(sum(delivery = 'unknown'), 0) FROM calls",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(Some(crate::price::Spent::of(
        p,
        billed as u64,
        unknown as u64,
    )))
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Parquet => "parquet",
        Format::Csv => "csv",
        Format::Jsonl => "jsonl",
    }
}

/// Exports the checkpoint at `place`. A PostgreSQL checkpoint is first copied, as of one
/// instant, into a private temporary state directory (removed after), which the export reads as
/// it reads any other: the export holds no transaction open on the shared database meanwhile.
pub fn export_at(
    place: &crate::checkpoint::Place,
    opts: &ExportOptions,
) -> anyhow::Result<ExportSummary> {
    match place {
        crate::checkpoint::Place::Dir(dir) => {
            let conn = crate::checkpoint::open_reader(&crate::checkpoint::db_path(dir))?;
            Ok(export(&conn, opts)?)
        }
        #[cfg(feature = "pg")]
        crate::checkpoint::Place::Pg(loc) => {
            let snap = crate::checkpoint::copy::snapshot(loc)?;
            tracing::info!(
                checkpoint = %loc,
                reports = snap.copied.rows_of("reports"),
                "read the checkpoint from PostgreSQL for export"
            );
            Ok(export(&snap.conn, opts)?)
        }
    }
}

/// Exports everything in the checkpoint behind `conn` to `opts.out`: flat files in a local
/// directory, or through [`lake`] to an object store or in the hive layout.
pub fn export(conn: &Connection, opts: &ExportOptions) -> Result<ExportSummary, ExportError> {
    let started = Instant::now();
    match lake::route(opts)? {
        (lake::Dest::Local(_), Layout::Flat) => export_local(conn, opts, started),
        (lake::Dest::Store(t), Layout::Flat) => lake::export_flat_to_store(conn, opts, t, started),
        (dest, Layout::Hive) => lake::export_hive(conn, opts, dest, started),
    }
}

/// The flat export to the local directory `opts.out`.
fn export_local(
    conn: &Connection,
    opts: &ExportOptions,
    started: Instant,
) -> Result<ExportSummary, ExportError> {
    fs::create_dir_all(&opts.out).map_err(|source| ExportError::Io {
        path: opts.out.clone(),
        source,
    })?;
    // Held until this function returns: a second export to the same directory waits here.
    let _lock = write::lock_out(&opts.out)?;
    write::clean_stale(&opts.out)?;
    // One read transaction: requests and reports come from the same state of the checkpoint.
    let own_tx = conn.is_autocommit();
    if own_tx {
        conn.execute_batch("BEGIN")?;
    }
    let result = export_in(conn, opts, started);
    if own_tx {
        let _ = conn.execute_batch("COMMIT");
    }
    result
}

/// The batches and data-quality counts flattened from the reports, as they come.
#[derive(Default)]
struct Collected {
    quality: Quality,
    bad_bodies: u64,
    bad_body_list: Vec<BadBody>,
}

/// What the options ask to write, and where.
struct Plan<'a> {
    out: &'a Path,
    /// Parquet's writer properties, when Parquet is asked for.
    props: Option<Arc<WriterProperties>>,
    /// Whether CSV starts with a byte-order mark, when CSV is asked for.
    csv: Option<bool>,
    want: Want,
}

impl Plan<'_> {
    fn of(opts: &ExportOptions) -> Plan<'_> {
        let props = opts.has(Format::Parquet).then(write::parquet_properties);
        let csv = opts.has(Format::Csv).then_some(opts.csv_bom);
        Plan {
            out: opts.out.as_path(),
            want: Want {
                tables: props.is_some() || csv.is_some(),
                jsonl: opts.has(Format::Jsonl),
            },
            props,
            csv,
        }
    }

    /// One sink for every format asked for.
    fn sink(&self, table: &str, schema: SchemaRef) -> Result<TableSink, ExportError> {
        TableSink::create(self.out, table, schema, self.props.as_ref(), self.csv)
    }

    /// One sink per format asked for, so that two writer threads encode them side by side.
    fn sink_per_format(
        &self,
        table: &str,
        schema: SchemaRef,
    ) -> Result<Vec<TableSink>, ExportError> {
        let out = self.out;
        let sinks = [
            self.props
                .as_ref()
                .map(|p| TableSink::create(out, table, schema.clone(), Some(p), None)),
            self.csv
                .map(|bom| TableSink::create(out, table, schema.clone(), None, Some(bom))),
        ];
        sinks.into_iter().flatten().collect()
    }
}

/// Everything written so far, waiting for the commit.
#[derive(Default)]
struct Written {
    /// Each finished file with its rows.
    staged: Vec<(Staged, u64)>,
    /// Rows per table, in the order the tables were finished.
    rows: Vec<(String, u64)>,
    jsonl_lines: Option<u64>,
    collected: Collected,
}

impl Written {
    /// A table's finished files (one sink's); every format of a table holds the same rows.
    fn table(&mut self, table: &str, (n, files): Finished) {
        if self.rows.last().is_none_or(|(t, _)| t != table) {
            self.rows.push((table.to_owned(), n));
        }
        self.staged.extend(files.into_iter().map(|s| (s, n)));
    }
}

fn export_in(
    conn: &Connection,
    opts: &ExportOptions,
    started: Instant,
) -> Result<ExportSummary, ExportError> {
    let plan = Plan::of(opts);
    let mut done = Written::default();
    if plan.want.tables {
        write_table(&plan, RequestCols::TABLE, &mut done, |sink, q| {
            write_requests(conn, sink, q)
        })?;
    }
    write_reports(conn, &plan, &mut done)?;
    if plan.want.tables {
        write_table(&plan, CallCols::TABLE, &mut done, |sink, q| {
            write_calls(conn, sink, q)
        })?;
    }
    commit(conn, opts, done, started)
}

/// Writes one table read straight from the checkpoint (`requests`, `calls`) with `fill`.
fn write_table(
    plan: &Plan<'_>,
    table: &'static str,
    done: &mut Written,
    fill: impl FnOnce(&mut TableSink, &mut Quality) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let schema = schema::of(table).ok_or_else(|| ExportError::Internal(table.to_owned()))?;
    let mut sink = plan.sink(table, schema)?;
    fill(&mut sink, &mut done.collected.quality)?;
    done.table(table, sink.finish()?);
    Ok(())
}

/// The writer threads of one export: one per report table and format, and one for
/// `reports.jsonl`, each fed through a bounded channel.
struct Writers<'scope> {
    /// Per report table, the channel of each of its writers (each gets every batch, an `Arc`
    /// clone).
    tables: Vec<Vec<SyncSender<RecordBatch>>>,
    table_threads: Vec<(&'static str, WriterThread<'scope, Finished>)>,
    jsonl: Option<JsonlWriter<'scope>>,
}

/// The writer of `reports.jsonl`, fed chunks of lines with their count.
struct JsonlWriter<'scope> {
    tx: SyncSender<(u64, Vec<u8>)>,
    thread: WriterThread<'scope, (u64, Staged)>,
}

type WriterThread<'scope, T> = ScopedJoinHandle<'scope, Result<T, ExportError>>;
/// A table's rows and its finished files (what [`TableSink::finish`] returns).
type Finished = (u64, Vec<Staged>);

/// Flattens the stored reports into the report tables and `reports.jsonl`.
fn write_reports(
    conn: &Connection,
    plan: &Plan<'_>,
    done: &mut Written,
) -> Result<(), ExportError> {
    std::thread::scope(|scope| {
        let writers = spawn_writers(scope, plan)?;
        let jsonl = writers.jsonl.as_ref().map(|j| &j.tx);
        let produced = produce(conn, plan.want, &writers.tables, jsonl, &mut done.collected);
        join_writers(writers, produced.err(), done)
    })
}

/// Starts the writer threads the plan asks for.
fn spawn_writers<'scope>(
    scope: &'scope Scope<'scope, '_>,
    plan: &Plan<'_>,
) -> Result<Writers<'scope>, ExportError> {
    let mut w = Writers {
        tables: Vec::new(),
        table_threads: Vec::new(),
        jsonl: None,
    };
    if plan.want.tables {
        for table in schema::REPORT_TABLES {
            let schema = schema::of(table).ok_or_else(|| ExportError::Internal(table.into()))?;
            let mut txs = Vec::new();
            for sink in plan.sink_per_format(table, schema)? {
                let (tx, rx) = sync_channel::<RecordBatch>(4);
                txs.push(tx);
                w.table_threads
                    .push((table, scope.spawn(move || drain(sink, rx))));
            }
            w.tables.push(txs);
        }
    }
    if plan.want.jsonl {
        let (s, file) = Staged::create(plan.out, "reports.jsonl")?;
        let (tx, rx) = sync_channel::<(u64, Vec<u8>)>(4);
        let thread = scope.spawn(move || drain_jsonl(s, file, rx));
        w.jsonl = Some(JsonlWriter { tx, thread });
    }
    Ok(w)
}

/// Closes the writers' channels and waits for each; the first error (`first_err` included)
/// is the result.
fn join_writers(
    w: Writers<'_>,
    mut first_err: Option<ExportError>,
    done: &mut Written,
) -> Result<(), ExportError> {
    let Writers {
        tables,
        table_threads,
        jsonl,
    } = w;
    drop(tables);
    let jsonl_thread = jsonl.map(|JsonlWriter { tx, thread }| {
        drop(tx);
        thread
    });
    for (table, h) in table_threads {
        if let Some(finished) = join(h, table, &mut first_err) {
            done.table(table, finished);
        }
    }
    if let Some((n, s)) = jsonl_thread.and_then(|h| join(h, "jsonl", &mut first_err)) {
        done.jsonl_lines = Some(n);
        done.staged.push((s, n));
    }
    first_err.map_or(Ok(()), Err)
}

/// Waits for the writer of `what`: its result, or `None` with its error (or its panic, as an
/// internal error) kept in `first_err` unless one is there already.
fn join<T>(h: WriterThread<'_, T>, what: &str, first_err: &mut Option<ExportError>) -> Option<T> {
    let err = match h.join() {
        Ok(Ok(v)) => return Some(v),
        Ok(Err(e)) => e,
        Err(_) => ExportError::Internal(format!("the {what} writer stopped unexpectedly")),
    };
    first_err.get_or_insert(err);
    None
}

/// Every file is complete and on disk. The commit: take the old manifest away first, so that no
/// reader takes the files about to be replaced for the ones it describes, move the new files
/// into place, and write the manifest that lists them last.
fn commit(
    conn: &Connection,
    opts: &ExportOptions,
    done: Written,
    started: Instant,
) -> Result<ExportSummary, ExportError> {
    let out = opts.out.as_path();
    let Written {
        staged,
        rows,
        jsonl_lines,
        collected,
    } = done;
    let (entries, mut files) = commit_files(out, staged)?;
    let formats = format_names(&opts.formats);
    let manifest = Manifest::new(
        conn,
        opts,
        &formats,
        &entries,
        &rows,
        jsonl_lines,
        &collected,
    )?;
    let billed_unusable = manifest.billed_unusable.count;
    files.push(write_manifest(out, &manifest)?);
    Ok(ExportSummary {
        out: out.to_owned(),
        formats,
        rows,
        jsonl_lines,
        quality: collected.quality,
        bad_bodies: collected.bad_bodies,
        bad_body_list: collected.bad_body_list,
        billed_unusable,
        files,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// Lists the finished files for the manifest, takes the old manifest away, and renames the
/// files into place.
fn commit_files(
    out: &Path,
    staged: Vec<(Staged, u64)>,
) -> Result<(Vec<FileEntry>, Vec<PathBuf>), ExportError> {
    let entries: Vec<FileEntry> = staged
        .iter()
        .map(|(s, n)| FileEntry::of(s, *n))
        .collect::<Result<_, _>>()?;
    write::remove_durably(out, MANIFEST)?;
    let mut files = Vec::new();
    for (s, _) in staged {
        files.push(s.commit()?);
    }
    write::sync_dir(out)?;
    Ok((entries, files))
}

/// Writes `manifest.json` aside, fsyncs it and renames it into place: the commit marker.
fn write_manifest(out: &Path, manifest: &Manifest<'_>) -> Result<PathBuf, ExportError> {
    let (s, mut file) = Staged::create(out, MANIFEST)?;
    let text = serde_json::to_vec_pretty(manifest)
        .map_err(|e| ExportError::Internal(format!("manifest: {e}")))?;
    file.write_all(&text)
        .and_then(|_| file.write_all(b"\n"))
        .map_err(|source| ExportError::Io {
            path: s.tmp_path().to_owned(),
            source,
        })?;
    write::sync(&file, s.tmp_path())?;
    drop(file);
    let path = s.commit()?;
    write::sync_dir(out)?;
    Ok(path)
}

fn drain(mut sink: TableSink, rx: Receiver<RecordBatch>) -> Result<Finished, ExportError> {
    for batch in rx {
        sink.write(&batch)?;
    }
    sink.finish()
}

fn drain_jsonl(
    staged: Staged,
    file: fs::File,
    rx: Receiver<(u64, Vec<u8>)>,
) -> Result<(u64, Staged), ExportError> {
    let path = staged.tmp_path().to_owned();
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut lines = 0;
    let io = |source| ExportError::Io {
        path: path.clone(),
        source,
    };
    for (n, bytes) in rx {
        w.write_all(&bytes).map_err(io)?;
        lines += n;
    }
    let file = w.into_inner().map_err(|e| io(e.into_error()))?;
    write::sync(&file, &path)?;
    Ok((lines, staged))
}

/// Reads the reports chunk by chunk, flattens each in parallel, and hands the batches on.
fn produce(
    conn: &Connection,
    want: Want,
    senders: &[Vec<SyncSender<RecordBatch>>],
    jsonl: Option<&SyncSender<(u64, Vec<u8>)>>,
    collected: &mut Collected,
) -> Result<(), ExportError> {
    // Every version of every report, in (VIN, version) order. A report stored without its
    // requestId takes the one of the purchase that bought it.
    let mut st = conn.prepare(REPORTS_AFTER)?;
    let stopped = || ExportError::Internal("a table writer stopped".into());
    let mut after = (i64::MIN, i64::MIN);
    let mut chunk = read_chunk(&mut st, &mut after)?;
    while !chunk.0.is_empty() {
        // Flatten this chunk on the pool while this thread reads the next one from SQLite.
        let mut flats: Vec<Result<flatten::Flat, ArrowError>> = Vec::new();
        let mut next = Ok((Vec::new(), Vec::new()));
        rayon::in_place_scope(|s| {
            let (flats, (rows, versions)) = (&mut flats, &chunk);
            s.spawn(move |_| {
                *flats = rows
                    .par_chunks(SLICE_ROWS)
                    .zip(versions.par_chunks(SLICE_ROWS))
                    .map(|(slice, v)| flatten::flatten_versions(slice, v, want))
                    .collect();
            });
            next = read_chunk(&mut st, &mut after);
        });
        for flat in flats {
            let flat = flat?;
            collected.quality.merge(&flat.quality);
            collected.bad_bodies += flat.bad.len() as u64;
            for b in flat.bad {
                if collected.bad_body_list.len() < LIST_BAD {
                    collected.bad_body_list.push(b);
                }
            }
            for (txs, batch) in senders.iter().zip(flat.batches) {
                for tx in txs {
                    tx.send(batch.clone()).map_err(|_| stopped())?;
                }
            }
            if let Some(tx) = jsonl {
                tx.send((flat.jsonl_lines, flat.jsonl))
                    .map_err(|_| stopped())?;
            }
        }
        chunk = next?;
    }
    Ok(())
}

/// The next `CHUNK_ROWS` reports after (VIN id, version) `after` (which it advances), with
/// which version of its VIN's report each one is.
fn read_chunk(
    st: &mut rusqlite::Statement<'_>,
    after: &mut (i64, i64),
) -> Result<(Vec<SourceReport>, Vec<flatten::ReportVersion>), ExportError> {
    let mut chunk: Vec<SourceReport> = Vec::with_capacity(CHUNK_ROWS);
    let mut versions = Vec::with_capacity(CHUNK_ROWS);
    let mut q = st.query(rusqlite::params![after.0, after.1, CHUNK_ROWS as i64])?;
    while let Some(r) = q.next()? {
        *after = (r.get(0)?, r.get(1)?);
        let body = match r.get_ref(7)? {
            ValueRef::Blob(b) | ValueRef::Text(b) => b.to_vec(),
            _ => Vec::new(),
        };
        chunk.push(SourceReport {
            vin: r.get(2)?,
            request_id: r.get(3)?,
            task_no: r.get(4)?,
            endpoint: r.get(5)?,
            fetched_at: r.get(6)?,
            body,
        });
        let version: i64 = r.get(1)?;
        versions.push(flatten::ReportVersion {
            version: i32::try_from(version).unwrap_or(i32::MAX),
            is_latest: r.get(8)?,
        });
    }
    Ok((chunk, versions))
}

/// Every version of every report after (VIN id, version) `?1, ?2`, at most `?3`, in (VIN,
/// version) order: VIN id, version, VIN, request id, task number, endpoint, fetched at, body,
/// and whether it is its VIN's newest. A report stored without its requestId takes the one of
/// the purchase that bought it. The body is read only when asked for.
pub(crate) const REPORTS_AFTER: &str = "SELECT r.vin_id, r.version, r.vin,
        coalesce(r.request_id,
            CASE WHEN r.purchase = v.purchase THEN v.request_id END,
            (SELECT p.request_id FROM purchases p
             WHERE p.vin_id = r.vin_id AND p.purchase = r.purchase)),
        r.task_no, r.endpoint, r.fetched_at, r.body,
        r.version = (SELECT max(m.version) FROM reports m WHERE m.vin_id = r.vin_id)
 FROM reports r LEFT JOIN vins v ON v.id = r.vin_id
 WHERE (r.vin_id, r.version) > (?1, ?2) ORDER BY r.vin_id, r.version LIMIT ?3";

/// Rows of `requests` and `calls` per batch.
const BATCH_ROWS: usize = 8192;

/// Writes `requests`: one row per VIN the checkpoint knows, rejected input rows included.
fn write_requests(
    conn: &Connection,
    sink: &mut TableSink,
    quality: &mut Quality,
) -> Result<(), ExportError> {
    let mut st = conn.prepare(
        "SELECT id, vin, license_img_url, state, code, message, request_id, task_no,
                submit_attempts, poll_attempts, billed_calls, first_seen_at, submitted_at,
                completed_at, input_file, input_line,
                CASE WHEN state = 'rejected' THEN 0 ELSE purchase END,
                (SELECT max(r.version) FROM reports r WHERE r.vin_id = vins.id)
         FROM vins WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let mut after = i64::MIN;
    loop {
        let mut c = RequestCols::with_capacity(BATCH_ROWS);
        let mut count = 0;
        let mut q = st.query(rusqlite::params![after, BATCH_ROWS as i64])?;
        while let Some(r) = q.next()? {
            count += 1;
            after = r.get(0)?;
            push_request(&mut c, r, quality)?;
        }
        if count == 0 {
            return Ok(());
        }
        sink.write(&c.finish()?)?;
        if count < BATCH_ROWS {
            return Ok(());
        }
    }
}

/// One `requests` row from a row of [`write_requests`]'s query.
fn push_request(
    c: &mut RequestCols,
    r: &rusqlite::Row<'_>,
    q: &mut Quality,
) -> Result<(), rusqlite::Error> {
    c.vin.append_option(text_col(r.get_ref(1)?));
    c.license_img_url.append_option(text_col(r.get_ref(2)?));
    c.status.append_option(text_col(r.get_ref(3)?));
    small(int_col(r.get_ref(4)?), "requests.code", &mut c.code, q);
    c.message.append_option(text_col(r.get_ref(5)?));
    c.request_id.append_option(text_col(r.get_ref(6)?));
    c.task_no.append_option(text_col(r.get_ref(7)?));
    let submit = int_col(r.get_ref(8)?);
    small(
        submit,
        "requests.submit_attempts",
        &mut c.submit_attempts,
        q,
    );
    let poll = int_col(r.get_ref(9)?);
    small(poll, "requests.poll_attempts", &mut c.poll_attempts, q);
    let billed = int_col(r.get_ref(10)?);
    small(billed, "requests.billed_calls", &mut c.billed_calls, q);
    c.first_seen_at.append_option(int_col(r.get_ref(11)?));
    c.submitted_at.append_option(int_col(r.get_ref(12)?));
    c.completed_at.append_option(int_col(r.get_ref(13)?));
    c.input_file.append_option(text_col(r.get_ref(14)?));
    let line = int_col(r.get_ref(15)?);
    small(line, "requests.input_line", &mut c.input_line, q);
    let purchases = int_col(r.get_ref(16)?);
    small(purchases, "requests.purchases", &mut c.purchases, q);
    let version = int_col(r.get_ref(17)?);
    small(version, "requests.report_version", &mut c.report_version, q);
    Ok(())
}

/// An Int32 cell from a whole number of the checkpoint; one that does not fit is written as
/// null and counted against `col`.
fn small(v: Option<i64>, col: &'static str, b: &mut Int32Builder, quality: &mut Quality) {
    let x = v.and_then(|v| i32::try_from(v).ok());
    if v.is_some() && x.is_none() {
        quality.coerced(col);
    }
    b.append_option(x);
}

/// The checkpoint's account (`meta.account`), if it names one.
fn account(conn: &Connection) -> Result<Option<String>, ExportError> {
    use rusqlite::OptionalExtension;
    let v = conn
        .query_row("SELECT value FROM meta WHERE key = 'account'", [], |r| {
            Ok(text_col(r.get_ref(0)?))
        })
        .optional()?;
    Ok(v.flatten())
}

/// The failed VINs whose vendor answer was billed but held no usable report: the engine marks
/// them with a message starting `billed_unusable` (matched exactly, case and all).
fn billed_unusable(conn: &Connection) -> Result<BilledUnusable, ExportError> {
    let filter = "state = 'failed' AND substr(message, 1, length(?1)) = ?1";
    let count: i64 = conn.query_row(
        &format!("SELECT count(*) FROM vins WHERE {filter}"),
        [BILLED_UNUSABLE],
        |r| r.get(0),
    )?;
    let mut st = conn.prepare(&format!(
        "SELECT vin FROM vins WHERE {filter} ORDER BY id LIMIT ?2"
    ))?;
    let vins = st
        .query_map(
            rusqlite::params![BILLED_UNUSABLE, LIST_BILLED_UNUSABLE as i64],
            |r| Ok(text_col(r.get_ref(0)?).unwrap_or_default()),
        )?
        .collect::<Result<_, _>>()?;
    Ok(BilledUnusable {
        count: u64::try_from(count).unwrap_or(0),
        vins,
    })
}

/// Writes `calls`: one row per vendor call in the checkpoint's call log, in call order, streamed
/// in batches of [`BATCH_ROWS`] from one query (the attempt number is SQLite's window function
/// over the whole log, so the query is not paged).
fn write_calls(
    conn: &Connection,
    sink: &mut TableSink,
    quality: &mut Quality,
) -> Result<(), ExportError> {
    let mut st = conn.prepare(
        "SELECT v.vin, c.endpoint, c.started_at, c.ended_at, c.http_status, c.code,
                CASE WHEN c.billed = 1 THEN 'billed'
                     WHEN c.delivery = 'not_sent' THEN 'not_sent'
                     WHEN c.delivery = 'unknown' THEN 'unknown'
                     ELSE 'not_billed' END,
                c.task_no, c.request_id, c.attempt, c.purchase
         FROM (SELECT *,
                  row_number() OVER (PARTITION BY vin_id, purchase, endpoint ORDER BY id) AS attempt
               FROM calls) c
         LEFT JOIN vins v ON v.id = c.vin_id
         ORDER BY c.id",
    )?;
    let mut q = st.query([])?;
    loop {
        let mut c = CallCols::with_capacity(BATCH_ROWS);
        let mut count = 0;
        while count < BATCH_ROWS {
            let Some(r) = q.next()? else { break };
            count += 1;
            push_call(&mut c, r, quality)?;
        }
        if count == 0 {
            return Ok(());
        }
        sink.write(&c.finish()?)?;
        if count < BATCH_ROWS {
            return Ok(());
        }
    }
}

/// One `calls` row from a row of [`write_calls`]'s query.
fn push_call(
    c: &mut CallCols,
    r: &rusqlite::Row<'_>,
    q: &mut Quality,
) -> Result<(), rusqlite::Error> {
    c.vin.append_option(text_col(r.get_ref(0)?));
    c.endpoint.append_option(text_col(r.get_ref(1)?));
    c.started_at.append_option(int_col(r.get_ref(2)?));
    c.ended_at.append_option(int_col(r.get_ref(3)?));
    small(
        int_col(r.get_ref(4)?),
        "calls.http_status",
        &mut c.http_status,
        q,
    );
    small(int_col(r.get_ref(5)?), "calls.code", &mut c.code, q);
    c.class.append_option(text_col(r.get_ref(6)?));
    c.task_no.append_option(text_col(r.get_ref(7)?));
    c.request_id.append_option(text_col(r.get_ref(8)?));
    small(int_col(r.get_ref(9)?), "calls.attempt", &mut c.attempt, q);
    small(
        int_col(r.get_ref(10)?),
        "calls.purchase",
        &mut c.purchase,
        q,
    );
    Ok(())
}

/// A text column, with `""` (and blanks) as null like every other text value.
fn text_col(v: ValueRef<'_>) -> Option<String> {
    let s = match v {
        ValueRef::Text(b) => String::from_utf8_lossy(b).into_owned(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
        ValueRef::Blob(b) => String::from_utf8_lossy(b).into_owned(),
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
