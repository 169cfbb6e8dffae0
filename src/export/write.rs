//! Writing tables: the one place that turns record batches into `<table>.parquet` and
//! `<table>.csv`, and that makes every output file appear atomically.
//!
//! Each file is written aside as `<out>/.<name>.tmp-<pid>` (same directory, so the rename is
//! atomic), fsynced, and renamed into place only once every table is complete; a failed export
//! removes its temporary files and leaves the previous export untouched. The temporary names
//! carry the writer's PID so that [`clean_stale`] can remove what a killed export left behind
//! without touching the files of one still running; [`lock_out`] keeps two exports to the same
//! directory from interleaving.

use arrow_array::{
    Array, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int8Array, Int32Array,
    Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use arrow_schema::SchemaRef;
use chrono::DateTime;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowRowGroupWriterFactory, compute_leaves,
};
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;
use rayon::prelude::*;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::ExportError;
use super::flatten::from_date32;
use super::schema;

/// Rows per Parquet row group: large enough for readers to scan efficiently, small enough that
/// the writer's buffered row group stays a few MB.
pub(crate) const ROW_GROUP_ROWS: usize = 128 * 1024;

/// The Parquet writer properties every table shares.
///
/// Dictionary encoding only for the columns the tables mark `dictionary` (schema.rs): the few
/// labels with a handful of distinct values, which readers then load as categories. Everything
/// else is plain (zstd takes the repeats): hashing every value into a dictionary was a fifth of
/// the export's CPU time, for files about 10 % smaller (and dictionaries for the VIN and the
/// requestId of the record tables, measured again on 2026-12-07, cost as much as zstd saved).
///
/// zstd at level 1: on 100,000 sandbox reports the files come out within 1 % of level 3's size,
/// for a sixth less of the export's CPU time. Page statistics (min, max, nulls) for every column
/// but the free text (`free_text` in schema.rs): readers prune pages by VIN, date or amount,
/// never by the wording of a repair, and comparing every text value was 4 % of the export.
pub fn parquet_properties() -> Arc<WriterProperties> {
    let zstd = ZstdLevel::try_new(1).unwrap_or_default();
    let mut props = WriterProperties::builder();
    for col in schema::dictionary_columns() {
        props = props.set_column_dictionary_enabled(ColumnPath::from(col), true);
    }
    for col in schema::free_text_columns() {
        props = props.set_column_statistics_enabled(ColumnPath::from(col), EnabledStatistics::None);
    }
    Arc::new(
        props
            .set_compression(Compression::ZSTD(zstd))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_size(ROW_GROUP_ROWS)
            .set_dictionary_enabled(false)
            .set_created_by(format!("vmr {}", env!("CARGO_PKG_VERSION")))
            .build(),
    )
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A file being written aside; removed on drop unless committed.
#[derive(Debug)]
pub(crate) struct Staged {
    tmp: PathBuf,
    dest: PathBuf,
    committed: bool,
}

impl Staged {
    /// Creates `<dir>/.<name>.tmp-<pid>` for `<dir>/<name>`.
    pub(crate) fn create(dir: &Path, name: &str) -> Result<(Staged, File), ExportError> {
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let file = File::create(&tmp).map_err(io_err(&tmp))?;
        Ok((
            Staged {
                tmp,
                dest: dir.join(name),
                committed: false,
            },
            file,
        ))
    }

    /// Where the file is being written.
    pub(crate) fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// The file name it will have once committed (`reports.parquet`).
    pub(crate) fn name(&self) -> String {
        self.dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The size of the written file, in bytes.
    pub(crate) fn bytes(&self) -> Result<u64, ExportError> {
        fs::metadata(&self.tmp)
            .map(|m| m.len())
            .map_err(io_err(&self.tmp))
    }

    /// Renames the finished (already fsynced) file into place.
    pub(crate) fn commit(mut self) -> Result<PathBuf, ExportError> {
        fs::rename(&self.tmp, &self.dest).map_err(io_err(&self.dest))?;
        self.committed = true;
        Ok(self.dest.clone())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// The lock file in an output directory, held by the export writing to it.
pub(crate) const LOCK_FILE: &str = ".vmr-export.lock";

/// Takes the exclusive advisory lock on `<dir>/.vmr-export.lock`, waiting (and saying so in the
/// log) while another export holds it. The lock goes with the returned file.
pub(crate) fn lock_out(dir: &Path) -> Result<File, ExportError> {
    let path = dir.join(LOCK_FILE);
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err(&path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = io::Read::read_to_string(&mut file, &mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() {
                String::new()
            } else {
                format!(" (pid {holder})")
            };
            tracing::info!(
                "waiting for another export{holder} to finish writing to {}",
                dir.display()
            );
            file.lock().map_err(io_err(&path))?;
        }
        Err(fs::TryLockError::Error(e)) => return Err(io_err(&path)(e)),
    }
    // Who holds it, for the log line of the next export that has to wait.
    let _ = file
        .set_len(0)
        .and_then(|_| io::Seek::seek(&mut file, io::SeekFrom::Start(0)))
        .and_then(|_| writeln!(file, "{}", std::process::id()));
    Ok(file)
}

/// Temporary files older than this are taken for dead when there is no way to ask whether
/// their writer still runs (no `/proc`).
const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The PID in a temporary file name written by [`Staged::create`] (`.<name>.tmp-<pid>`).
pub(crate) fn temp_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (stem, pid) = rest.rsplit_once(".tmp-")?;
    if stem.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Removes the temporary files of exports (and audits) that died before they committed: any
/// `.<name>.tmp-<pid>` in `dir` whose process no longer runs. The files of this process and of
/// any live one are left alone. Returns the names removed.
pub(crate) fn clean_stale(dir: &Path) -> Result<Vec<String>, ExportError> {
    let own = std::process::id();
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = temp_pid(&name) else { continue };
        if pid == own || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let dead = match crate::sys::process_alive(pid) {
            Some(alive) => !alive,
            None => entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_AFTER),
        };
        if !dead {
            continue;
        }
        match fs::remove_file(entry.path()) {
            Ok(()) => {
                tracing::info!(
                    "removed {}, left by an export that stopped before it finished (pid {pid})",
                    entry.path().display()
                );
                removed.push(name);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot remove {}: {e}", entry.path().display()),
        }
    }
    Ok(removed)
}

/// Removes `<dir>/<name>` if it is there, durably: the commit marker of the previous export,
/// taken away before the new files replace the ones it describes.
pub(crate) fn remove_durably(dir: &Path, name: &str) -> Result<(), ExportError> {
    let path = dir.join(name);
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// Flushes a finished file to disk.
pub(crate) fn sync(file: &File, path: &Path) -> Result<(), ExportError> {
    file.sync_all().map_err(io_err(path))
}

/// Makes the renames in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), ExportError> {
    match File::open(dir) {
        Ok(d) => d.sync_all().map_err(io_err(dir)),
        Err(e) => Err(io_err(dir)(e)),
    }
}

/// A Parquet file whose columns are encoded in parallel.
///
/// `ArrowWriter` encodes a batch's columns one after another on the calling thread, so the
/// biggest table's writer was the export's bottleneck. This keeps one `ArrowColumnWriter` per
/// column of the open row group (arrow-rs's low-level API for exactly this) and feeds them
/// columns on the rayon pool. Batches arrive small (a flatten slice's rows), so they are held
/// until [`ENCODE_ROWS`] rows are waiting and then encoded in one parallel pass, each column
/// writer taking its column of every held batch: one hand-over to the pool per pass instead of
/// one per batch. Memory is the held batches and what `ArrowWriter` holds, the encoded row group.
struct ParquetFile {
    file: SerializedFileWriter<File>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    /// The open row group's column writers and its rows encoded so far.
    group: Option<(Vec<ArrowColumnWriter>, usize)>,
    groups: usize,
    /// Batches (or parts of one) of the open row group waiting to be encoded, and their rows.
    held: Vec<RecordBatch>,
    held_rows: usize,
}

/// Rows held before a parallel encoding pass.
const ENCODE_ROWS: usize = 16 * 1024;

impl ParquetFile {
    fn create(
        file: File,
        schema: SchemaRef,
        props: &WriterProperties,
    ) -> Result<ParquetFile, ParquetError> {
        // Through `ArrowWriter` so the file carries the Arrow schema, as readers expect.
        let (file, factory) = ArrowWriter::try_new(file, schema.clone(), Some(props.clone()))?
            .into_serialized_writer()?;
        Ok(ParquetFile {
            file,
            factory,
            schema,
            group: None,
            groups: 0,
            held: Vec::new(),
            held_rows: 0,
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), ParquetError> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let encoded = self.group.as_ref().map_or(0, |(_, rows)| *rows);
            let room = ROW_GROUP_ROWS - encoded - self.held_rows;
            let take = room.min(batch.num_rows() - offset);
            self.held.push(batch.slice(offset, take));
            self.held_rows += take;
            offset += take;
            if take == room {
                self.encode_held()?;
                self.close_group()?;
            } else if self.held_rows >= ENCODE_ROWS {
                self.encode_held()?;
            }
        }
        Ok(())
    }

    /// Encodes the held batches into the open row group (opening one if none is).
    fn encode_held(&mut self) -> Result<(), ParquetError> {
        if self.held.is_empty() {
            return Ok(());
        }
        let (writers, rows) = match &mut self.group {
            Some(g) => g,
            None => self
                .group
                .insert((self.factory.create_column_writers(self.groups)?, 0)),
        };
        let held = &self.held;
        writers
            .par_iter_mut()
            .zip(self.schema.fields().par_iter())
            .enumerate()
            .try_for_each(|(i, (w, field))| {
                for batch in held {
                    for leaf in compute_leaves(field, batch.column(i))? {
                        w.write(&leaf)?;
                    }
                }
                Ok::<(), ParquetError>(())
            })?;
        *rows += self.held_rows;
        self.held.clear();
        self.held_rows = 0;
        Ok(())
    }

    fn close_group(&mut self) -> Result<(), ParquetError> {
        let Some((writers, _)) = self.group.take() else {
            return Ok(());
        };
        let chunks: Vec<ArrowColumnChunk> = writers
            .into_par_iter()
            .map(ArrowColumnWriter::close)
            .collect::<Result<_, _>>()?;
        let mut group = self.file.next_row_group()?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut group)?;
        }
        group.close()?;
        self.groups += 1;
        Ok(())
    }

    /// Encodes what is held, closes the last row group, writes the footer and returns the file.
    fn finish(mut self) -> Result<File, ParquetError> {
        self.encode_held()?;
        self.close_group()?;
        self.file.into_inner()
    }
}

/// One table's outputs: Parquet and/or CSV, fed the same batches.
pub(crate) struct TableSink {
    parquet: Option<(Staged, ParquetFile)>,
    csv: Option<(Staged, csv::Writer<File>)>,
    cells: Vec<u8>,
    rows: u64,
}

impl TableSink {
    pub(crate) fn create(
        dir: &Path,
        table: &str,
        schema: SchemaRef,
        parquet: Option<&Arc<WriterProperties>>,
        csv: Option<bool>,
    ) -> Result<TableSink, ExportError> {
        let parquet = match parquet {
            Some(props) => {
                let (staged, file) = Staged::create(dir, &format!("{table}.parquet"))?;
                let w = ParquetFile::create(file, schema.clone(), props)?;
                Some((staged, w))
            }
            None => None,
        };
        let csv = match csv {
            Some(bom) => {
                let (staged, mut file) = Staged::create(dir, &format!("{table}.csv"))?;
                if bom {
                    file.write_all(b"\xEF\xBB\xBF")
                        .map_err(io_err(&staged.tmp))?;
                }
                let mut w = csv::WriterBuilder::new()
                    .buffer_capacity(1 << 16)
                    .from_writer(file);
                w.write_record(schema.fields().iter().map(|f| f.name().as_bytes()))?;
                Some((staged, w))
            }
            None => None,
        };
        Ok(TableSink {
            parquet,
            csv,
            cells: Vec::with_capacity(64),
            rows: 0,
        })
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<(), ExportError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.rows += batch.num_rows() as u64;
        if let Some((_, w)) = &mut self.parquet {
            w.write(batch)?;
        }
        if let Some((_, w)) = &mut self.csv {
            write_csv(w, batch, &mut self.cells)?;
        }
        Ok(())
    }

    /// Rows written so far.
    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// Closes and fsyncs the files; returns the row count and the files to commit.
    pub(crate) fn finish(self) -> Result<(u64, Vec<Staged>), ExportError> {
        let mut staged = Vec::new();
        if let Some((s, w)) = self.parquet {
            let file = w.finish()?;
            sync(&file, &s.tmp)?;
            staged.push(s);
        }
        if let Some((s, w)) = self.csv {
            let file = w
                .into_inner()
                .map_err(|e| io_err(&s.tmp)(io::Error::other(e.to_string())))?;
            sync(&file, &s.tmp)?;
            staged.push(s);
        }
        Ok((self.rows, staged))
    }
}

/// A column viewed with its concrete type, for formatting CSV cells.
enum Col<'a> {
    Str(&'a StringArray),
    I8(&'a Int8Array),
    I32(&'a Int32Array),
    I64(&'a Int64Array),
    F64(&'a Float64Array),
    Bool(&'a BooleanArray),
    Date(&'a Date32Array),
    Ts(&'a TimestampMillisecondArray),
    Dec(&'a Decimal128Array, u32),
}

fn view(a: &dyn Array) -> Option<Col<'_>> {
    let any = a.as_any();
    if let Some(x) = any.downcast_ref::<StringArray>() {
        return Some(Col::Str(x));
    }
    if let Some(x) = any.downcast_ref::<Int8Array>() {
        return Some(Col::I8(x));
    }
    if let Some(x) = any.downcast_ref::<Int32Array>() {
        return Some(Col::I32(x));
    }
    if let Some(x) = any.downcast_ref::<Int64Array>() {
        return Some(Col::I64(x));
    }
    if let Some(x) = any.downcast_ref::<Float64Array>() {
        return Some(Col::F64(x));
    }
    if let Some(x) = any.downcast_ref::<BooleanArray>() {
        return Some(Col::Bool(x));
    }
    if let Some(x) = any.downcast_ref::<Date32Array>() {
        return Some(Col::Date(x));
    }
    if let Some(x) = any.downcast_ref::<TimestampMillisecondArray>() {
        return Some(Col::Ts(x));
    }
    if let Some(x) = any.downcast_ref::<Decimal128Array>() {
        return Some(Col::Dec(x, u32::try_from(x.scale()).unwrap_or(0)));
    }
    None
}

/// A timestamp in RFC 3339, UTC, with a `Z` and milliseconds only when there are any.
#[cfg(test)]
pub(crate) fn rfc3339_ms(ms: i64) -> Option<String> {
    let mut buf = Vec::with_capacity(24);
    write_rfc3339_ms(&mut buf, ms).then(|| String::from_utf8_lossy(&buf).into_owned())
}

/// Appends `v` as exactly `width` decimal digits (zero-padded; `v` < 10^width).
fn push_digits(buf: &mut Vec<u8>, v: u32, width: usize) {
    let mut digits = [b'0'; 10];
    let mut v = v;
    for d in digits[..width].iter_mut().rev() {
        *d = b'0' + (v % 10) as u8;
        v /= 10;
    }
    buf.extend_from_slice(&digits[..width]);
}

/// Appends a year: four digits, or (outside 0–9999) as `{:04}` writes it.
fn push_year(buf: &mut Vec<u8>, year: i32) {
    use std::io::Write as _;
    match u32::try_from(year) {
        Ok(y) if y <= 9999 => push_digits(buf, y, 4),
        _ => {
            let _ = write!(buf, "{year:04}");
        }
    }
}

/// Writes what [`rfc3339_ms`] returns, without going through format strings (export writes
/// millions of these); `false` when the time is out of range.
fn write_rfc3339_ms(buf: &mut Vec<u8>, ms: i64) -> bool {
    use chrono::Timelike;
    let Some(t) = DateTime::from_timestamp_millis(ms) else {
        return false;
    };
    write_date(buf, t.date_naive());
    buf.push(b'T');
    push_digits(buf, t.hour(), 2);
    buf.push(b':');
    push_digits(buf, t.minute(), 2);
    buf.push(b':');
    push_digits(buf, t.second(), 2);
    let frac = ms.rem_euclid(1000);
    if frac != 0 {
        buf.push(b'.');
        push_digits(buf, frac as u32, 3);
    }
    buf.push(b'Z');
    true
}

/// Writes a date as `YYYY-MM-DD`.
fn write_date(buf: &mut Vec<u8>, d: chrono::NaiveDate) {
    use chrono::Datelike;
    push_year(buf, d.year());
    buf.push(b'-');
    push_digits(buf, d.month(), 2);
    buf.push(b'-');
    push_digits(buf, d.day(), 2);
}

/// A decimal in `scale` places, always written with exactly that many digits.
#[cfg(test)]
pub(crate) fn decimal_text(v: i128, scale: u32) -> String {
    let mut buf = Vec::with_capacity(24);
    write_decimal(&mut buf, v, scale);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Writes what [`decimal_text`] returns, without an allocation per value.
fn write_decimal(buf: &mut Vec<u8>, v: i128, scale: u32) {
    let div = 10u128.pow(scale);
    let a = v.unsigned_abs();
    if v < 0 {
        buf.push(b'-');
    }
    let mut num = itoa::Buffer::new();
    buf.extend_from_slice(num.format(a / div).as_bytes());
    if scale > 0 {
        let frac = num.format(a % div).as_bytes();
        buf.push(b'.');
        buf.resize(buf.len() + scale as usize - frac.len(), b'0');
        buf.extend_from_slice(frac);
    }
}

/// The text of cell `i` of `col`: borrowed for strings, else formatted into `buf`; empty for
/// null.
fn cell<'a>(col: &Col<'a>, i: usize, buf: &'a mut Vec<u8>, num: &'a mut itoa::Buffer) -> &'a [u8] {
    use std::io::Write as _;
    buf.clear();
    match col {
        Col::Str(a) if a.is_valid(i) => return a.value(i).as_bytes(),
        Col::I8(a) if a.is_valid(i) => return num.format(a.value(i)).as_bytes(),
        Col::I32(a) if a.is_valid(i) => return num.format(a.value(i)).as_bytes(),
        Col::I64(a) if a.is_valid(i) => return num.format(a.value(i)).as_bytes(),
        Col::F64(a) if a.is_valid(i) => {
            let _ = write!(buf, "{}", a.value(i));
        }
        Col::Bool(a) if a.is_valid(i) => {
            return if a.value(i) { b"true" } else { b"false" };
        }
        Col::Date(a) if a.is_valid(i) => {
            if let Some(d) = from_date32(a.value(i)) {
                write_date(buf, d);
            }
        }
        Col::Ts(a) if a.is_valid(i) => {
            write_rfc3339_ms(buf, a.value(i));
        }
        Col::Dec(a, scale) if a.is_valid(i) => {
            write_decimal(buf, a.value(i), *scale);
        }
        _ => {}
    }
    buf
}

fn write_csv(
    w: &mut csv::Writer<File>,
    batch: &RecordBatch,
    buf: &mut Vec<u8>,
) -> Result<(), ExportError> {
    let cols: Vec<Col> = batch
        .columns()
        .iter()
        .map(|c| {
            view(c.as_ref()).ok_or_else(|| {
                ExportError::Internal(format!("no CSV format for {}", c.data_type()))
            })
        })
        .collect::<Result<_, _>>()?;
    let mut num = itoa::Buffer::new();
    for i in 0..batch.num_rows() {
        for c in &cols {
            w.write_field(cell(c, i, buf, &mut num))?;
        }
        w.write_record(None::<&[u8]>)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_formatted_for_people_and_scripts() {
        assert_eq!(decimal_text(10051, 2), "100.51");
        assert_eq!(decimal_text(-5, 2), "-0.05");
        assert_eq!(decimal_text(0, 2), "0.00");
        assert_eq!(
            rfc3339_ms(1_714_550_400_000).as_deref(),
            Some("2024-05-01T08:00:00Z")
        );
        assert_eq!(
            rfc3339_ms(1_714_550_400_123).as_deref(),
            Some("2024-05-01T08:00:00.123Z")
        );
        assert_eq!(rfc3339_ms(-1).as_deref(), Some("1969-12-31T23:59:59.999Z"));
        assert_eq!(
            rfc3339_ms(-62_135_596_800_000).as_deref(),
            Some("0001-01-01T00:00:00Z")
        );
        assert_eq!(
            rfc3339_ms(253_402_300_799_999).as_deref(),
            Some("9999-12-31T23:59:59.999Z")
        );
        assert_eq!(rfc3339_ms(1_000).as_deref(), Some("1970-01-01T00:00:01Z"));
        let mut buf = Vec::new();
        write_date(
            &mut buf,
            chrono::NaiveDate::from_ymd_opt(-44, 3, 15).expect("valid"),
        );
        assert_eq!(buf, b"-044-03-15");
    }
}
