//! Export: the checkpoint → the five typed tables of design.md ("Output tables") and the
//! `calls` table, as Parquet and/or CSV, plus the raw reports as JSON lines and a
//! `manifest.json`.
//!
//! Export only reads the checkpoint (in one read transaction, so it sees one consistent state
//! even while another vmr writes). Reports are read in slices ordered by VIN id, a few slices
//! are flattened on the rayon pool at once while the next ones are read (`flatten`), and the
//! batches go, in read order, to one writer thread per table and format (`write`); `requests`
//! is read between the slices and `calls` at the end. Memory stays bounded however many
//! reports there are.
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

use arrow_array::RecordBatch;
use arrow_array::builder::Int32Builder;
use arrow_schema::ArrowError;
use arrow_schema::SchemaRef;
use parquet::file::properties::WriterProperties;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};
use std::time::Instant;

use crate::checkpoint::{
    CallRow, CheckpointError, RequestPages, RequestRow, Snapshot, StoredReport,
};
use crate::config::{Format, Layout, Settings};
use flatten::{BadBody, Quality, SourceReport, Want};
use schema::{CallCols, RequestCols};
use write::{Staged, TableSink};

pub use schema::EXPORT_SCHEMA_VERSION;

/// Reports read from the checkpoint and flattened on the pool at a time. Each slice's batches go
/// to the writers as they are, and fewer, larger batches are cheaper to hand over and to
/// encode (100 took 8 % more CPU time than 400; 500 held 7 % more memory). Measured in
/// docs/performance.md ("Export, in the evening").
const SLICE_ROWS: usize = 400;
/// `requests` rows read between two slices of reports: small pages, so that the `requests`
/// writer holds little while the reports are written beside it.
const REQUEST_PAGE_ROWS: usize = 2_048;
/// Bad bodies listed by name in the manifest (all are counted).
const LIST_BAD: usize = 100;
/// VINs billed without a usable report listed in the manifest (all are counted).
const LIST_BILLED_UNUSABLE: usize = 100;
/// The commit marker.
const MANIFEST: &str = "manifest.json";

/// Where and what to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Where the tables go (`--out`).
    pub out: PathBuf,
    /// The formats to write (`--format`).
    pub formats: Vec<Format>,
    /// Whether CSV files start with a UTF-8 byte-order mark (`--csv-bom`).
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

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The checkpoint could not be read.
    #[error("reading the checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// A file or directory under the output could not be written.
    #[error("{}: {source} (check that the output directory exists and is writable, and the disk is not full)", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The Parquet writer failed.
    #[error("writing Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// An Arrow batch could not be built.
    #[error("building Arrow arrays: {0}")]
    Arrow(#[from] ArrowError),
    /// The CSV writer failed.
    #[error("writing CSV: {0}")]
    Csv(#[from] csv::Error),
    /// Something that should not happen did (a writer thread stopped, say): a bug in vmr.
    #[error("export failed: {0} (a bug in vmr; please report it)")]
    Internal(String),
    /// The object store (or a local hive destination) failed; `permanent` when retrying cannot
    /// help (no such bucket, refused credentials), which is a usage error.
    #[error("{url}: {reason}")]
    Store {
        /// The destination, as messages show it.
        url: String,
        /// What failed, in words.
        reason: String,
        /// Whether retrying cannot help.
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
    /// Where the tables went.
    pub out: PathBuf,
    /// The names of the formats written (`parquet`, `csv`, `jsonl`).
    pub formats: Vec<String>,
    /// Rows per table, in design.md's order.
    pub rows: Vec<(String, u64)>,
    /// Lines of `reports.jsonl`, when written.
    pub jsonl_lines: Option<u64>,
    /// Values coerced to null and containers of the wrong shape.
    pub quality: Quality,
    /// Stored bodies that hold no readable report, and were skipped.
    pub bad_bodies: u64,
    /// The first of those bodies (up to 100), each with its VIN and why it was skipped.
    pub bad_body_list: Vec<BadBody>,
    /// Failed VINs whose vendor answer was billed but held no usable report.
    pub billed_unusable: u64,
    /// The files written, `manifest.json` last.
    pub files: Vec<PathBuf>,
    /// How long the export took, in milliseconds.
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
    /// The manifest of an export of `snap` that wrote `files` (`rows` per table).
    fn new(
        snap: &Snapshot,
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
            account: snap.account()?,
            formats,
            files,
            row_counts: rows
                .iter()
                .map(|(t, n)| (t.clone(), serde_json::Value::from(*n)))
                .collect(),
            jsonl_lines,
            billed_unusable: billed_unusable(snap)?,
            data_quality: DataQuality {
                coerced_to_null: &collected.quality.coerced_to_null,
                unusable_containers: &collected.quality.unusable_containers,
                read_leniently: collected.quality.read_leniently,
                bad_bodies: collected.bad_bodies,
                bad_body_list: &collected.bad_body_list,
            },
            money: money(snap, opts)?,
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
    snap: &Snapshot,
    opts: &ExportOptions,
) -> Result<Option<crate::price::Spent>, ExportError> {
    let Some(p) = &opts.price else {
        return Ok(None);
    };
    let (billed, unknown) = snap.billed_and_unknown()?;
    Ok(Some(crate::price::Spent::of(p, billed, unknown)))
}

fn format_name(f: Format) -> &'static str {
    match f {
        Format::Parquet => "parquet",
        Format::Csv => "csv",
        Format::Jsonl => "jsonl",
    }
}

/// Exports the checkpoint at `place`, as of one instant (see [`Snapshot`]).
pub fn export_at(
    place: &crate::checkpoint::Place,
    opts: &ExportOptions,
) -> anyhow::Result<ExportSummary> {
    let snap = Snapshot::open(place)?;
    if let Some(reports) = snap.copied_reports() {
        tracing::info!(
            checkpoint = %place,
            reports,
            "read the checkpoint from PostgreSQL for export"
        );
    }
    Ok(export(&snap, opts)?)
}

/// Exports everything in the checkpoint snapshot `snap` to `opts.out`: flat files in a local
/// directory, or through [`lake`] to an object store or in the hive layout.
pub fn export(snap: &Snapshot, opts: &ExportOptions) -> Result<ExportSummary, ExportError> {
    let started = Instant::now();
    match lake::route(opts)? {
        (lake::Dest::Local(_), Layout::Flat) => export_local(snap, opts, started),
        (lake::Dest::Store(t), Layout::Flat) => lake::export_flat_to_store(snap, opts, t, started),
        (dest, Layout::Hive) => lake::export_hive(snap, opts, dest, started),
    }
}

/// The flat export to the local directory `opts.out`.
fn export_local(
    snap: &Snapshot,
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
    // The snapshot is one read transaction: requests and reports come from the same state of
    // the checkpoint.
    export_in(snap, opts, started)
}

/// The batches and data-quality counts flattened from the reports, as they come.
#[derive(Default)]
struct Collected {
    quality: Quality,
    bad_bodies: u64,
    bad_body_list: Vec<BadBody>,
}

impl Collected {
    /// Adds a flattened slice's data-quality counts and bad bodies (the first [`LIST_BAD`]
    /// listed by name).
    fn add(&mut self, quality: &Quality, bad: Vec<BadBody>) {
        self.quality.merge(quality);
        self.bad_bodies += bad.len() as u64;
        let room = LIST_BAD.saturating_sub(self.bad_body_list.len());
        self.bad_body_list.extend(bad.into_iter().take(room));
    }
}

/// The error of handing a batch to a writer that has stopped.
fn writer_stopped() -> ExportError {
    ExportError::Internal("a table writer stopped".into())
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
    snap: &Snapshot,
    opts: &ExportOptions,
    started: Instant,
) -> Result<ExportSummary, ExportError> {
    let plan = Plan::of(opts);
    let mut done = Written::default();
    write_all(snap, &plan, &mut done)?;
    commit(snap, opts, done, started)
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

/// The writer threads of one export: one per table and format, and one for `reports.jsonl`,
/// each fed through a bounded channel.
struct Writers<'scope> {
    /// Per report table, the channel of each of its writers (each gets every batch, an `Arc`
    /// clone).
    tables: Vec<Vec<SyncSender<RecordBatch>>>,
    /// The channels of the writers of `requests` and of `calls`.
    requests: Vec<SyncSender<RecordBatch>>,
    calls: Vec<SyncSender<RecordBatch>>,
    /// Every table writer, in the order the manifest lists the tables.
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

/// Writes every table and `reports.jsonl`, each through its writer threads.
///
/// This thread reads the checkpoint; the pool flattens. The reports are read and flattened
/// slice by slice (`produce`); `requests` is read a page at a time between the slices, so that
/// its reading overlaps the flattening instead of leaving a core idle before the first report,
/// and `calls` is read while the report writers encode their last row groups.
fn write_all(snap: &Snapshot, plan: &Plan<'_>, done: &mut Written) -> Result<(), ExportError> {
    std::thread::scope(|scope| {
        let writers = spawn_writers(scope, plan)?;
        let produced = (|| {
            let jsonl = writers.jsonl.as_ref().map(|j| &j.tx);
            let mut requests = plan
                .want
                .tables
                .then(|| snap.request_pages(REQUEST_PAGE_ROWS))
                .transpose()?
                .map(|pages| RequestFeed {
                    pages,
                    txs: &writers.requests,
                });
            let collected = &mut done.collected;
            produce(
                snap,
                plan.want,
                &writers.tables,
                jsonl,
                requests.as_mut(),
                collected,
            )?;
            if plan.want.tables {
                snap.each_call_page(BATCH_ROWS, |rows| {
                    send_all(&writers.calls, call_batch(rows, &mut collected.quality)?)
                })?;
            }
            Ok(())
        })();
        join_writers(writers, produced.err(), done)
    })
}

/// Hands `batch` to each of a table's writers.
fn send_all(txs: &[SyncSender<RecordBatch>], batch: RecordBatch) -> Result<(), ExportError> {
    for tx in txs {
        tx.send(batch.clone()).map_err(|_| writer_stopped())?;
    }
    Ok(())
}

/// `requests`, read a page at a time between the reports' slices.
struct RequestFeed<'s, 'w> {
    pages: RequestPages<'s>,
    txs: &'w [SyncSender<RecordBatch>],
}

impl RequestFeed<'_, '_> {
    /// Reads the next page and hands its batch on; `false` once every row has been read.
    fn next(&mut self, quality: &mut Quality) -> Result<bool, ExportError> {
        let Some(batch) = request_batch(&mut self.pages, quality)? else {
            return Ok(false);
        };
        send_all(self.txs, batch)?;
        Ok(true)
    }
}

/// Starts the writer threads the plan asks for.
fn spawn_writers<'scope>(
    scope: &'scope Scope<'scope, '_>,
    plan: &Plan<'_>,
) -> Result<Writers<'scope>, ExportError> {
    let mut w = Writers {
        tables: Vec::new(),
        requests: Vec::new(),
        calls: Vec::new(),
        table_threads: Vec::new(),
        jsonl: None,
    };
    if plan.want.tables {
        let mut spawn = |table: &'static str| -> Result<Vec<SyncSender<RecordBatch>>, ExportError> {
            let schema = schema::of(table).ok_or_else(|| ExportError::Internal(table.into()))?;
            let mut txs = Vec::new();
            for sink in plan.sink_per_format(table, schema)? {
                let (tx, rx) = sync_channel::<RecordBatch>(4);
                txs.push(tx);
                w.table_threads
                    .push((table, scope.spawn(move || drain(sink, rx))));
            }
            Ok(txs)
        };
        let requests = spawn(RequestCols::TABLE)?;
        let tables = schema::REPORT_TABLES
            .into_iter()
            .map(&mut spawn)
            .collect::<Result<Vec<_>, _>>()?;
        let calls = spawn(CallCols::TABLE)?;
        (w.requests, w.tables, w.calls) = (requests, tables, calls);
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
        requests,
        calls,
        table_threads,
        jsonl,
    } = w;
    drop((tables, requests, calls));
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
    snap: &Snapshot,
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
        snap,
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

/// Reads the reports slice by slice and flattens each slice on the pool while this thread
/// reads the next ones, handing the batches on in the order the reports were read.
///
/// Up to [`IN_FLIGHT`] slices are out at once: the pool always has one to start when it
/// finishes another (reading a whole chunk and waiting for all of it to be flattened left a
/// core idle at the end of every chunk, a sixth of the time).
fn produce(
    snap: &Snapshot,
    want: Want,
    senders: &[Vec<SyncSender<RecordBatch>>],
    jsonl: Option<&SyncSender<(u64, Vec<u8>)>>,
    mut requests: Option<&mut RequestFeed<'_, '_>>,
    collected: &mut Collected,
) -> Result<(), ExportError> {
    // Every version of every report, in (VIN, version) order.
    let mut reports = snap.reports()?;
    let (done_tx, done_rx) = std::sync::mpsc::channel::<(usize, Flattened)>();
    let mut order = InOrder {
        next: 0,
        waiting: BTreeMap::new(),
        senders,
        jsonl,
    };
    let mut read = 0;
    rayon::in_place_scope(|s| {
        loop {
            // Hand on what is flattened; wait while too many slices are out.
            loop {
                let got = if read - order.next >= IN_FLIGHT {
                    done_rx.recv().ok()
                } else {
                    done_rx.try_recv().ok()
                };
                let Some((k, flat)) = got else { break };
                order.arrived(k, flat, collected)?;
            }
            let (rows, versions) = read_slice(&mut reports)?;
            if rows.is_empty() {
                break;
            }
            let (k, tx) = (read, done_tx.clone());
            read += 1;
            s.spawn(move |_| {
                // Flatten never panics on any input; should it, the export fails with an
                // internal error instead of waiting for this slice for ever.
                let flat =
                    std::panic::catch_unwind(|| flatten::flatten_versions(&rows, &versions, want))
                        .unwrap_or_else(|_| {
                            Err(ArrowError::ComputeError("flatten panicked".into()))
                        });
                let _ = tx.send((k, flat));
            });
            if let Some(r) = requests.as_deref_mut() {
                r.next(&mut collected.quality)?;
            }
        }
        while order.next < read {
            let (k, flat) = done_rx
                .recv()
                .map_err(|_| ExportError::Internal("a flatten task stopped".into()))?;
            order.arrived(k, flat, collected)?;
        }
        Ok::<(), ExportError>(())
    })?;
    if let Some(r) = requests {
        while r.next(&mut collected.quality)? {}
    }
    Ok(())
}

/// Slices of reports read but not yet handed on, at most.
const IN_FLIGHT: usize = 6;

type Flattened = Result<flatten::Flat, ArrowError>;

/// Puts the flattened slices back in the order they were read and hands each on.
struct InOrder<'a> {
    /// The slice to hand on next.
    next: usize,
    /// Slices flattened before one read earlier than them.
    waiting: BTreeMap<usize, Flattened>,
    senders: &'a [Vec<SyncSender<RecordBatch>>],
    jsonl: Option<&'a SyncSender<(u64, Vec<u8>)>>,
}

impl InOrder<'_> {
    /// Slice `k` is flattened: hands on every slice now next in order.
    fn arrived(
        &mut self,
        k: usize,
        flat: Flattened,
        collected: &mut Collected,
    ) -> Result<(), ExportError> {
        self.waiting.insert(k, flat);
        while let Some(flat) = self.waiting.remove(&self.next) {
            self.next += 1;
            self.hand_on(flat?, collected)?;
        }
        Ok(())
    }

    fn hand_on(&self, flat: flatten::Flat, collected: &mut Collected) -> Result<(), ExportError> {
        collected.add(&flat.quality, flat.bad);
        for (txs, batch) in self.senders.iter().zip(flat.batches) {
            send_all(txs, batch)?;
        }
        if let Some(tx) = self.jsonl {
            tx.send((flat.jsonl_lines, flat.jsonl))
                .map_err(|_| writer_stopped())?;
        }
        Ok(())
    }
}

/// The next `SLICE_ROWS` reports, with which version of its VIN's report each one is.
fn read_slice(
    reports: &mut crate::checkpoint::Reports<'_>,
) -> Result<(Vec<SourceReport>, Vec<flatten::ReportVersion>), ExportError> {
    let read = reports.next_chunk(SLICE_ROWS, |_, _| true)?;
    let mut versions = Vec::with_capacity(read.reports.len());
    let chunk = read
        .reports
        .into_iter()
        .map(|r| {
            versions.push(flatten::ReportVersion {
                version: i32::try_from(r.version).unwrap_or(i32::MAX),
                is_latest: r.is_latest,
            });
            source_report(r)
        })
        .collect();
    Ok((chunk, versions))
}

/// A stored report as the flattener reads it.
fn source_report(r: StoredReport) -> SourceReport {
    SourceReport {
        vin: r.vin,
        request_id: r.request_id,
        task_no: r.task_no,
        endpoint: r.endpoint,
        fetched_at: r.fetched_at,
        body: r.body,
    }
}

/// Rows of `requests` and `calls` per batch.
const BATCH_ROWS: usize = 8192;

/// Writes `requests`: one row per VIN the checkpoint knows, rejected input rows included.
fn write_requests(
    snap: &Snapshot,
    sink: &mut TableSink,
    quality: &mut Quality,
) -> Result<(), ExportError> {
    let mut pages = snap.request_pages(BATCH_ROWS)?;
    while let Some(batch) = request_batch(&mut pages, quality)? {
        sink.write(&batch)?;
    }
    Ok(())
}

/// The next page of `requests` as a batch, each row pushed into the columns as it is read;
/// `None` once every row has been read.
fn request_batch(
    pages: &mut RequestPages<'_>,
    quality: &mut Quality,
) -> Result<Option<RecordBatch>, ExportError> {
    let mut c = RequestCols::with_capacity(pages.page_rows());
    if pages.next_page(|r| push_request(&mut c, r, quality))? == 0 {
        return Ok(None);
    }
    Ok(Some(c.finish()?))
}

/// One `requests` row.
fn push_request(c: &mut RequestCols, r: &RequestRow<'_>, q: &mut Quality) {
    c.vin.append_option(r.vin.as_deref());
    c.license_img_url
        .append_option(r.license_img_url.as_deref());
    c.status.append_option(r.state.as_deref());
    small(r.code, "requests.code", &mut c.code, q);
    c.message.append_option(r.message.as_deref());
    c.request_id.append_option(r.request_id.as_deref());
    c.task_no.append_option(r.task_no.as_deref());
    small(
        r.submit_attempts,
        "requests.submit_attempts",
        &mut c.submit_attempts,
        q,
    );
    small(
        r.poll_attempts,
        "requests.poll_attempts",
        &mut c.poll_attempts,
        q,
    );
    small(
        r.billed_calls,
        "requests.billed_calls",
        &mut c.billed_calls,
        q,
    );
    c.first_seen_at.append_option(r.first_seen_at);
    c.submitted_at.append_option(r.submitted_at);
    c.completed_at.append_option(r.completed_at);
    c.input_file.append_option(r.input_file.as_deref());
    small(r.input_line, "requests.input_line", &mut c.input_line, q);
    small(r.purchases, "requests.purchases", &mut c.purchases, q);
    small(
        r.report_version,
        "requests.report_version",
        &mut c.report_version,
        q,
    );
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

/// The failed VINs whose vendor answer was billed but held no usable report.
fn billed_unusable(snap: &Snapshot) -> Result<BilledUnusable, ExportError> {
    let (count, vins) = snap.billed_unusable(LIST_BILLED_UNUSABLE)?;
    Ok(BilledUnusable { count, vins })
}

/// Writes `calls`: one row per vendor call in the checkpoint's call log, in call order, in
/// batches of [`BATCH_ROWS`].
fn write_calls(
    snap: &Snapshot,
    sink: &mut TableSink,
    quality: &mut Quality,
) -> Result<(), ExportError> {
    snap.each_call_page(BATCH_ROWS, |rows| sink.write(&call_batch(rows, quality)?))
}

/// A batch of `calls` rows.
fn call_batch(rows: &[CallRow], quality: &mut Quality) -> Result<RecordBatch, ArrowError> {
    let mut c = CallCols::with_capacity(rows.len());
    for r in rows {
        push_call(&mut c, r, quality);
    }
    c.finish()
}

/// One `calls` row.
fn push_call(c: &mut CallCols, r: &CallRow, q: &mut Quality) {
    c.vin.append_option(r.vin.as_deref());
    c.endpoint.append_option(r.endpoint.as_deref());
    c.started_at.append_option(r.started_at);
    c.ended_at.append_option(r.ended_at);
    small(r.http_status, "calls.http_status", &mut c.http_status, q);
    small(r.code, "calls.code", &mut c.code, q);
    c.class.append_option(r.class.as_deref());
    c.task_no.append_option(r.task_no.as_deref());
    c.request_id.append_option(r.request_id.as_deref());
    small(r.attempt, "calls.attempt", &mut c.attempt, q);
    small(r.purchase, "calls.purchase", &mut c.purchase, q);
}
