//! Between the exported Parquet files and polars: the audit reads and writes its tables with
//! the same arrow-rs Parquet code as `vmr export`, and hands polars only columns in memory.
//!
//! polars is the heaviest part of vmr's build, and it grows with what it is asked to know: its
//! own Parquet and CSV readers bring its streaming engine, and each data type it is built with
//! is compiled into every kernel (see docs/development.md, "Build profiles"). So polars is
//! built with integers, floats, strings, booleans and decimals only: a table is read once,
//! only the columns the audit looks at, each column copied into a polars `Series` by its type
//! (dates as days since 1970-01-01, instants as milliseconds, 8-bit codes as Int32); and the
//! audit's results go out through export's [`TableSink`], the dates and codes given their
//! types back ([`WIDEN`], [`NARROW`]), so `vehicle_flags` is typed and formatted like every
//! other table of the export (dates, decimals, booleans, the optional BOM).

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float64Type, Int8Type, Int32Type, Int64Type,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType,
};
use arrow_array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int8Array, Int32Array,
    Int64Array, RecordBatch, StringArray,
};
use arrow_schema::{DataType as A, Field, Schema, TimeUnit as Unit};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use polars::prelude::*;
use rayon::prelude::*;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use super::AuditError;
use crate::export::write::{Staged, TableSink, parquet_properties};

/// Every column of the exported tables that some step of the audit reads; the rest are not
/// read at all (the record tables' free text is most of their bytes).
const READ: &[&str] = &[
    // requests
    "status",
    // reports
    "vin",
    "version",
    "is_latest",
    "brand_name",
    "accident_status",
    "accident_grade",
    "structural_damage",
    "engine_exception",
    "total_mileage_km",
    "avg_yearly_mileage_km",
    "last_visit_date",
    // records
    "seq",
    "visit_date",
    "maintained_at",
    "type_code",
    "mileage_km",
    "total_amount",
    // overview
    "part",
    "has_exception",
];

/// The audit's output columns that are `Int8` in the tables, as the same column is in export's
/// `reports` (held as Int32 in polars, see [`series`]).
const NARROW: &[&str] = &["accident_status"];

/// The audit's output columns that are dates (held as days since 1970-01-01 in polars).
pub(super) const WIDEN: &[&str] = &["last_visit_date"];

fn failed(path: &Path, what: impl std::fmt::Display) -> AuditError {
    AuditError::Read {
        path: path.to_owned(),
        message: what.to_string(),
    }
}

/// The columns of `path` that the audit uses, as one polars frame.
pub(super) fn read(path: &Path) -> Result<DataFrame, AuditError> {
    read_columns(path, |name| READ.contains(&name))
}

/// The columns of `path` whose name `keep` accepts, as one polars frame.
pub(super) fn read_columns(
    path: &Path,
    keep: impl Fn(&str) -> bool,
) -> Result<DataFrame, AuditError> {
    let file = File::open(path).map_err(|e| failed(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| failed(path, e))?;
    let schema = builder.schema().clone();
    let wanted: Vec<usize> = (0..schema.fields().len())
        .filter(|i| keep(schema.field(*i).name()))
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), wanted.iter().copied());
    let reader = builder
        .with_projection(mask)
        .with_batch_size(64 * 1024)
        .build()
        .map_err(|e| failed(path, e))?;
    let batches: Vec<RecordBatch> = reader
        .collect::<Result<_, _>>()
        .map_err(|e| failed(path, e))?;
    // Columns side by side: the copy into polars is most of the read.
    let columns = wanted
        .par_iter()
        .enumerate()
        .map(|(at, i)| {
            let field = schema.field(*i);
            let parts: Vec<&ArrayRef> = batches.iter().map(|b| b.column(at)).collect();
            series(field.name(), field.data_type(), &parts)
                .map(Column::from)
                .map_err(|e| failed(path, format_args!("column {}: {e}", field.name())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let height = batches.iter().map(RecordBatch::num_rows).sum();
    DataFrame::new(height, columns).map_err(|e| failed(path, e))
}

/// One column, from its pieces in every batch.
fn series(name: &str, dt: &A, parts: &[&ArrayRef]) -> Result<Series, String> {
    let name = PlSmallStr::from_str(name);
    // The values of every piece as Arrow type `$ty`, each passed through `$map`, into `$ca`.
    macro_rules! prim {
        ($ty:ty, $ca:ty) => {
            prim!($ty, $ca, |v| v)
        };
        ($ty:ty, $ca:ty, $map:expr) => {
            <$ca>::from_iter_options(
                name,
                parts
                    .iter()
                    .flat_map(|a| a.as_primitive::<$ty>().iter().map(|v| v.map($map))),
            )
            .into_series()
        };
    }
    let s_to_ms = |s: i64| s.saturating_mul(1_000);
    let us_to_ms = |us: i64| us.div_euclid(1_000);
    let ns_to_ms = |ns: i64| ns.div_euclid(1_000_000);
    Ok(match dt {
        A::Utf8 => StringChunked::from_iter_options(
            name,
            parts.iter().flat_map(|a| a.as_string::<i32>().iter()),
        )
        .into_series(),
        A::Utf8View => StringChunked::from_iter_options(
            name,
            parts.iter().flat_map(|a| a.as_string_view().iter()),
        )
        .into_series(),
        A::Boolean => BooleanChunked::from_iter_options(
            name,
            parts.iter().flat_map(|a| a.as_boolean().iter()),
        )
        .into_series(),
        // polars is built without its 8-bit integers (each type it knows is compiled into
        // every kernel): the vendor's small codes are held as Int32 ([`NARROW`]).
        A::Int8 => prim!(Int8Type, Int32Chunked, i32::from),
        A::Int32 => prim!(Int32Type, Int32Chunked),
        A::Int64 => prim!(Int64Type, Int64Chunked),
        A::Float64 => prim!(Float64Type, Float64Chunked),
        // Dates as days since 1970-01-01 and instants as milliseconds, plain integers: polars is
        // built without its temporal types (see the module comment); the audit only subtracts,
        // compares and orders them. [`WIDEN`] makes them dates again on the way out.
        A::Date32 => prim!(Date32Type, Int32Chunked),
        A::Timestamp(Unit::Second, _) => prim!(TimestampSecondType, Int64Chunked, s_to_ms),
        A::Timestamp(Unit::Millisecond, _) => prim!(TimestampMillisecondType, Int64Chunked),
        A::Timestamp(Unit::Microsecond, _) => {
            prim!(TimestampMicrosecondType, Int64Chunked, us_to_ms)
        }
        A::Timestamp(Unit::Nanosecond, _) => prim!(TimestampNanosecondType, Int64Chunked, ns_to_ms),
        A::Decimal128(precision, scale) => {
            let scale = usize::try_from(*scale).map_err(|_| format!("negative scale {scale}"))?;
            prim!(Decimal128Type, Int128Chunked)
                .into_decimal(usize::from(*precision), scale)
                .map_err(|e| e.to_string())?
        }
        other => return Err(format!("type {other} is not one the audit reads")),
    })
}

/// `df` as one Arrow batch, in the types `vmr export` writes (strings as `Utf8`).
fn batch(df: &DataFrame) -> PolarsResult<RecordBatch> {
    let mut fields = Vec::with_capacity(df.width());
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(df.width());
    for c in df.columns() {
        let s = c.as_materialized_series();
        let (dt, array): (A, ArrayRef) = match s.dtype() {
            DataType::String => (A::Utf8, Arc::new(s.str()?.iter().collect::<StringArray>())),
            DataType::Boolean => (
                A::Boolean,
                Arc::new(s.bool()?.iter().collect::<BooleanArray>()),
            ),
            DataType::Int32 if NARROW.contains(&s.name().as_str()) => {
                let narrow = s
                    .i32()?
                    .iter()
                    .map(|v| v.map(i8::try_from).transpose())
                    .collect::<Result<Int8Array, _>>()
                    .map_err(|_| polars_err!(ComputeError: "{} out of the Int8 range", s.name()))?;
                (A::Int8, Arc::new(narrow))
            }
            DataType::Int32 if WIDEN.contains(&s.name().as_str()) => (
                A::Date32,
                Arc::new(s.i32()?.iter().collect::<Date32Array>()),
            ),
            DataType::Int32 => (A::Int32, Arc::new(s.i32()?.iter().collect::<Int32Array>())),
            DataType::Int64 => (A::Int64, Arc::new(s.i64()?.iter().collect::<Int64Array>())),
            DataType::Float64 => (
                A::Float64,
                Arc::new(s.f64()?.iter().collect::<Float64Array>()),
            ),
            DataType::Decimal(precision, scale) => {
                let (p, sc) = (u8::try_from(*precision).ok(), i8::try_from(*scale).ok());
                let (Some(p), Some(sc)) = (p, sc) else {
                    polars_bail!(ComputeError: "decimal({precision}, {scale}) of {} out of range", s.name());
                };
                let a = s
                    .decimal()?
                    .physical()
                    .iter()
                    .collect::<Decimal128Array>()
                    .with_precision_and_scale(p, sc)
                    .map_err(|e| polars_err!(ComputeError: "{e}"))?;
                (A::Decimal128(p, sc), Arc::new(a))
            }
            other => {
                polars_bail!(ComputeError: "column {} has type {other}, which the audit does not write", s.name())
            }
        };
        fields.push(Field::new(s.name().as_str(), dt, true));
        arrays.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| polars_err!(ComputeError: "{e}"))
}

/// Writes `df` as `<name>.parquet` and/or `<name>.csv` in `dir` (staged: committed by the
/// caller once every file of the audit is whole).
pub(super) fn write(
    dir: &Path,
    name: &str,
    df: &DataFrame,
    parquet: bool,
    csv: Option<bool>,
    staged: &mut Vec<Staged>,
) -> Result<(), AuditError> {
    let batch = batch(df).map_err(|source| AuditError::Polars {
        context: format!("writing {name}"),
        source,
    })?;
    let props = parquet.then(parquet_properties);
    let mut sink = TableSink::create(dir, name, batch.schema(), props.as_ref(), csv)?;
    sink.write(&batch)?;
    staged.extend(sink.finish()?.1);
    Ok(())
}
