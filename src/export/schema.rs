//! The output tables: the one place that spells design.md's "Output tables" contract (names,
//! column order, types).
//!
//! Each table is declared once, as a column list in a `table!` block. From that list come the
//! table's Arrow builders (one struct field per column, named as the column), its Arrow schema
//! (so the Parquet schema and the CSV header), which columns Parquet dictionary-encodes, and
//! `finish()`, which pairs every builder with the schema field of the same name. Adding a column
//! is one line here and the line that fills it.
//!
//! Parquet and CSV are both written from these schemas, so the two formats cannot drift apart.
//! Times are millisecond timestamps in UTC (the checkpoint keeps milliseconds), which Parquet
//! stores as TIMESTAMP(MILLIS, isAdjustedToUTC = true).

use arrow_array::builder::ArrayBuilder;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::ArrowError;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use std::sync::Arc;

/// The version of the exported tables' layout; bump it when a column changes.
pub const EXPORT_SCHEMA_VERSION: u32 = 2;

/// The tables, in the order they are listed.
pub const TABLES: [&str; 6] = [
    RequestCols::TABLE,
    ReportCols::TABLE,
    RecordCols::TABLE,
    OverviewCols::TABLE,
    ExceptionCols::TABLE,
    CallCols::TABLE,
];

/// The tables flattened from the stored report bodies, in the order `flatten` hands out their
/// batches.
pub(crate) const REPORT_TABLES: [&str; 4] = [
    ReportCols::TABLE,
    RecordCols::TABLE,
    OverviewCols::TABLE,
    ExceptionCols::TABLE,
];

/// `total_amount` precision and scale.
pub const AMOUNT_PRECISION: u8 = 18;
/// `total_amount` scale: the digits after the decimal point.
pub const AMOUNT_SCALE: i8 = 2;

/// The column types a table may use: each names its Arrow type and the builder that fills it.
pub mod col {
    use arrow_array::builder::{
        ArrayBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder,
        Int8Builder, Int32Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
    };
    use arrow_schema::{DataType, TimeUnit};

    /// A column type of the output tables.
    pub(crate) trait Type {
        type Builder: ArrayBuilder;
        fn data_type() -> DataType;
        /// A builder with room for `rows` values (text grows as it is filled).
        fn builder(rows: usize) -> Self::Builder;
    }

    macro_rules! primitive {
        ($($name:ident: $builder:ident = $dt:ident),* $(,)?) => {$(
            #[doc = concat!("Arrow `", stringify!($dt), "`.")]
            pub(crate) struct $name;
            impl Type for $name {
                type Builder = $builder;
                fn data_type() -> DataType {
                    DataType::$dt
                }
                fn builder(rows: usize) -> $builder {
                    $builder::with_capacity(rows)
                }
            }
        )*};
    }

    primitive!(
        Int8: Int8Builder = Int8,
        Int32: Int32Builder = Int32,
        Int64: Int64Builder = Int64,
        Float64: Float64Builder = Float64,
        Boolean: BooleanBuilder = Boolean,
        Date32: Date32Builder = Date32,
    );

    /// Arrow `Utf8`.
    pub(crate) struct Utf8;
    impl Type for Utf8 {
        type Builder = StringBuilder;
        fn data_type() -> DataType {
            DataType::Utf8
        }
        fn builder(_rows: usize) -> StringBuilder {
            StringBuilder::new()
        }
    }

    /// A point in time: milliseconds since the epoch, UTC.
    pub(crate) struct Timestamp;
    impl Type for Timestamp {
        type Builder = TimestampMillisecondBuilder;
        fn data_type() -> DataType {
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
        }
        fn builder(rows: usize) -> TimestampMillisecondBuilder {
            TimestampMillisecondBuilder::with_capacity(rows).with_timezone("UTC")
        }
    }

    /// A money amount: `DECIMAL(AMOUNT_PRECISION, AMOUNT_SCALE)`.
    pub(crate) struct Amount;
    impl Type for Amount {
        type Builder = Decimal128Builder;
        fn data_type() -> DataType {
            DataType::Decimal128(super::AMOUNT_PRECISION, super::AMOUNT_SCALE)
        }
        fn builder(rows: usize) -> Decimal128Builder {
            Decimal128Builder::with_capacity(rows).with_data_type(Self::data_type())
        }
    }
}

/// One column as a table declares it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Column {
    pub name: &'static str,
    pub data_type: DataType,
    pub nullable: bool,
    /// Parquet writes it with dictionary encoding (a label with a handful of distinct values).
    pub dictionary: bool,
    /// Free text (a repair's wording, a URL): Parquet keeps no min/max statistics for it.
    pub free_text: bool,
}

impl Column {
    pub(crate) fn new<T: col::Type>(name: &'static str) -> Column {
        Column {
            name,
            data_type: T::data_type(),
            nullable: true,
            dictionary: false,
            free_text: false,
        }
    }

    /// Never null (only the tests need a required column so far).
    #[cfg(test)]
    fn required(self) -> Column {
        Column {
            nullable: false,
            ..self
        }
    }

    /// Dictionary-encoded in Parquet.
    pub(crate) fn dictionary(self) -> Column {
        Column {
            dictionary: true,
            ..self
        }
    }

    /// Free text: no statistics in Parquet.
    pub(crate) fn free_text(self) -> Column {
        Column {
            free_text: true,
            ..self
        }
    }
}

fn schema_of(columns: &[Column]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(c.name, c.data_type.clone(), c.nullable))
            .collect::<Vec<_>>(),
    ))
}

fn finish_builder<B: ArrayBuilder>(mut b: B) -> ArrayRef {
    b.finish()
}

/// A batch of `schema` from arrays named by their column, matched to the fields by name: an
/// array can only land under the field of its own name.
fn batch_by_name(
    schema: SchemaRef,
    columns: Vec<(&'static str, ArrayRef)>,
) -> Result<RecordBatch, ArrowError> {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let given: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
    if names != given {
        return Err(ArrowError::SchemaError(format!(
            "columns {given:?} do not match the schema's {names:?}"
        )));
    }
    RecordBatch::try_new(schema, columns.into_iter().map(|(_, a)| a).collect())
}

/// Declares one output table, once: `Cols = "table" { column: Type [+ option]*, ... }`, where
/// `Type` is one of [`col`] and the options are `dictionary` (Parquet dictionary-encodes it),
/// `free_text` (Parquet keeps no statistics for it) and `required` (never null; columns are
/// nullable unless so marked).
///
/// It generates `Cols`, a struct of one Arrow builder per column (the field named as the
/// column), with `TABLE`, `columns()`, `schema()`, `with_capacity(rows)` and `finish()`, which
/// builds the batch pairing each builder with the field of its name.
macro_rules! table {
    ($(#[$doc:meta])* $cols:ident = $table:literal {
        $($col:ident: $ty:ident $(+ $opt:ident)*),* $(,)?
    }) => {
        $(#[$doc])*
        pub(crate) struct $cols {
            $(pub $col: <col::$ty as col::Type>::Builder,)*
        }

        impl $cols {
            pub(crate) const TABLE: &'static str = $table;

            /// The columns, in order.
            pub(crate) fn columns() -> Vec<Column> {
                vec![$(Column::new::<col::$ty>(stringify!($col))$(.$opt())*),*]
            }

            pub(crate) fn schema() -> SchemaRef {
                schema_of(&Self::columns())
            }

            /// Empty builders with room for `rows` rows.
            pub(crate) fn with_capacity(rows: usize) -> Self {
                $cols {
                    $($col: <col::$ty as col::Type>::builder(rows),)*
                }
            }

            /// The rows built so far as one batch of [`Self::schema`].
            pub(crate) fn finish(self) -> Result<RecordBatch, ArrowError> {
                batch_by_name(
                    Self::schema(),
                    vec![$((stringify!($col), finish_builder(self.$col))),*],
                )
            }
        }
    };
}

table!(
    /// `requests`: one row per VIN the checkpoint knows, rejected input rows included.
    RequestCols = "requests" {
        vin: Utf8,
        license_img_url: Utf8 + free_text,
        status: Utf8 + dictionary,
        code: Int32,
        message: Utf8 + free_text,
        request_id: Utf8,
        task_no: Utf8,
        submit_attempts: Int32,
        poll_attempts: Int32,
        billed_calls: Int32,
        first_seen_at: Timestamp,
        submitted_at: Timestamp,
        completed_at: Timestamp,
        input_file: Utf8,
        input_line: Int32,
        purchases: Int32,
        report_version: Int32,
    }
);

table!(
    /// `reports`: one row per report bought, every version of a VIN's report.
    ReportCols = "reports" {
        vin: Utf8,
        version: Int32,
        is_latest: Boolean,
        request_id: Utf8,
        task_no: Utf8,
        brand_name: Utf8 + dictionary,
        brand_logo_url: Utf8 + free_text,
        vin_masked: Utf8,
        first_visit_date: Date32,
        last_visit_date: Date32,
        first_visit_mileage_km: Int64,
        last_visit_mileage_km: Int64,
        total_mileage_km: Int64,
        avg_yearly_mileage_km: Float64,
        avg_yearly_services: Float64,
        record_count: Int32,
        accident_status: Int8,
        accident_grade: Utf8 + dictionary,
        accident_reason: Utf8 + free_text,
        report_updated_date: Date32,
        fetched_at: Timestamp,
    }
);

table!(
    /// `records`: one row per maintenance record of a report.
    RecordCols = "records" {
        vin: Utf8,
        version: Int32,
        request_id: Utf8,
        seq: Int32,
        visit_date: Date32,
        maintained_at: Timestamp,
        type_code: Int8,
        type_name: Utf8 + dictionary,
        type_label: Utf8 + dictionary,
        content: Utf8 + free_text,
        materials: Utf8 + free_text,
        remark: Utf8 + free_text,
        mileage_km: Int64,
        pay_type: Utf8 + dictionary,
        total_amount: Amount,
    }
);

table!(
    /// `overview`: one row per part of a report's body overview.
    OverviewCols = "overview" {
        vin: Utf8,
        version: Int32,
        request_id: Utf8,
        part: Utf8 + dictionary,
        label: Utf8 + dictionary,
        has_exception: Boolean,
        exception_count: Int32,
    }
);

table!(
    /// `exceptions`: one row per finding listed under an overview part.
    ExceptionCols = "exceptions" {
        vin: Utf8,
        version: Int32,
        request_id: Utf8,
        part: Utf8 + dictionary,
        label: Utf8 + dictionary,
        seq: Int32,
        raw: Utf8 + free_text,
        component: Utf8 + dictionary,
        finding: Utf8 + free_text,
    }
);

table!(
    /// `calls`: one row per vendor call in the checkpoint's call log, for reconciling with the
    /// vendor's billing statement.
    CallCols = "calls" {
        vin: Utf8,
        endpoint: Utf8 + dictionary,
        started_at: Timestamp,
        ended_at: Timestamp,
        http_status: Int32,
        code: Int32,
        class: Utf8 + dictionary,
        task_no: Utf8,
        request_id: Utf8,
        attempt: Int32,
        purchase: Int32,
    }
);

#[cfg(test)]
fn records() -> SchemaRef {
    RecordCols::schema()
}

#[cfg(test)]
fn overview() -> SchemaRef {
    OverviewCols::schema()
}

/// The Arrow schema of the `exceptions` table.
pub fn exceptions() -> SchemaRef {
    ExceptionCols::schema()
}

/// The Arrow schema of the `calls` table.
pub fn calls() -> SchemaRef {
    CallCols::schema()
}

/// The columns of table `name` (one of [`TABLES`]).
pub(crate) fn columns_of(name: &str) -> Option<Vec<Column>> {
    match name {
        RequestCols::TABLE => Some(RequestCols::columns()),
        ReportCols::TABLE => Some(ReportCols::columns()),
        RecordCols::TABLE => Some(RecordCols::columns()),
        OverviewCols::TABLE => Some(OverviewCols::columns()),
        ExceptionCols::TABLE => Some(ExceptionCols::columns()),
        CallCols::TABLE => Some(CallCols::columns()),
        _ => None,
    }
}

/// The schema of table `name` (one of [`TABLES`]).
pub fn of(name: &str) -> Option<SchemaRef> {
    columns_of(name).map(|c| schema_of(&c))
}

/// The names of the columns Parquet dictionary-encodes, in any table, in table order. The
/// writer properties select columns by name, so a name is dictionary-encoded in every table
/// that has it (a test holds the declarations to that).
pub(crate) fn dictionary_columns() -> Vec<&'static str> {
    columns_where(|c| c.dictionary)
}

/// The names of the free-text columns (no Parquet statistics), selected by name as
/// [`dictionary_columns`] are.
pub(crate) fn free_text_columns() -> Vec<&'static str> {
    columns_where(|c| c.free_text)
}

fn columns_where(pick: impl Fn(&Column) -> bool) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for table in TABLES {
        for c in columns_of(table).unwrap_or_default() {
            if pick(&c) && !names.contains(&c.name) {
                names.push(c.name);
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_is_listed_once_with_its_columns() {
        for (i, table) in TABLES.iter().enumerate() {
            assert!(!TABLES[..i].contains(table), "{table} twice");
            let cols = columns_of(table).expect("declared");
            let schema = of(table).expect("declared");
            assert_eq!(schema.fields().len(), cols.len());
            for (f, c) in schema.fields().iter().zip(&cols) {
                assert_eq!(
                    (f.name().as_str(), f.data_type(), f.is_nullable()),
                    (c.name, &c.data_type, c.nullable)
                );
            }
        }
        for table in REPORT_TABLES {
            assert!(TABLES.contains(&table));
        }
    }

    #[test]
    fn a_free_text_column_is_one_in_every_table_that_has_it() {
        let free = free_text_columns();
        for table in TABLES {
            for c in columns_of(table).expect("declared") {
                assert_eq!(c.free_text, free.contains(&c.name), "{table}.{}", c.name);
                assert!(!(c.free_text && c.dictionary), "{table}.{}", c.name);
                if c.free_text {
                    assert_eq!(c.data_type, DataType::Utf8, "{table}.{}", c.name);
                }
            }
        }
        // Nothing a reader filters or joins on.
        for key in [
            "vin",
            "request_id",
            "task_no",
            "status",
            "visit_date",
            "total_amount",
        ] {
            assert!(!free.contains(&key), "{key}");
        }
    }

    #[test]
    fn a_dictionary_column_is_one_in_every_table_that_has_it() {
        let dict = dictionary_columns();
        for table in TABLES {
            for c in columns_of(table).expect("declared") {
                assert_eq!(
                    c.dictionary,
                    dict.contains(&c.name),
                    "{table}.{} is dictionary-encoded by name in another table",
                    c.name
                );
            }
        }
        // The choice as it was made (write.rs's list before the tables declared it).
        let mut got = dict.clone();
        got.sort_unstable();
        let mut want = vec![
            "status",
            "brand_name",
            "accident_grade",
            "type_name",
            "type_label",
            "pay_type",
            "part",
            "label",
            "component",
            "endpoint",
            "class",
        ];
        want.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn finish_builds_a_batch_of_the_tables_schema() {
        let mut c = OverviewCols::with_capacity(1);
        c.vin.append_value("V");
        c.version.append_value(1);
        c.request_id.append_null();
        c.part.append_value("engine");
        c.label.append_value("发动机");
        c.has_exception.append_value(true);
        c.exception_count.append_value(2);
        let batch = c.finish().expect("one row");
        assert_eq!(batch.schema(), overview());
        assert_eq!(batch.num_rows(), 1);
        let empty = RecordCols::with_capacity(0).finish().expect("no rows");
        assert_eq!((empty.schema(), empty.num_rows()), (records(), 0));
    }

    #[test]
    fn columns_are_paired_with_fields_by_name() {
        let a: ArrayRef = Arc::new(arrow_array::Int32Array::from(vec![1]));
        let b: ArrayRef = Arc::new(arrow_array::Int32Array::from(vec![2]));
        let schema = schema_of(&[
            Column::new::<col::Int32>("a"),
            Column::new::<col::Int32>("b").required(),
        ]);
        let ok = batch_by_name(schema.clone(), vec![("a", a.clone()), ("b", b.clone())]);
        assert!(ok.is_ok());
        assert!(!schema.field(1).is_nullable());
        let swapped = batch_by_name(schema, vec![("b", b), ("a", a)]);
        assert!(swapped.is_err(), "two columns of one type swapped");
    }
}
