//! Every flag on small hand-made tables, written as Parquet with the export schema so the audit
//! reads exactly what `vmr export` produces.
//!
//! A test builds a `Fleet` of a few vehicles, writes it to a temporary directory and runs the
//! same steps `vmr audit` does (`Tables::scan`, `compute`, `run`), then reads `vehicle_flags`
//! back as text cells. The end-to-end run against the sandbox and a browser is in
//! `tests/it/audit.rs`.

use ::arrow_array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int8Array, Int32Array,
    Int64Array, RecordBatch, StringArray, TimestampMillisecondArray,
};
use ::arrow_schema::{DataType as A, Field, SchemaRef, TimeUnit};
use ::parquet::arrow::ArrowWriter;
use chrono::NaiveDate;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::export::flatten::date32;
use crate::export::schema;

#[derive(Clone, Copy, Debug)]
enum Cell {
    S(&'static str),
    I(i64),
    F(f64),
    B(bool),
    /// A date, `YYYY-MM-DD`.
    D(&'static str),
}
use Cell::*;

type Row = Vec<(&'static str, Cell)>;

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("test date")
}

impl Cell {
    fn text(self, column: &str) -> &'static str {
        match self {
            S(s) => s,
            other => panic!("{column}: {other:?} is not text"),
        }
    }

    fn int(self, column: &str) -> i64 {
        match self {
            I(v) => v,
            other => panic!("{column}: {other:?} is not an integer"),
        }
    }

    fn float(self, column: &str) -> f64 {
        match self {
            F(v) => v,
            other => panic!("{column}: {other:?} is not a float"),
        }
    }

    fn bool(self, column: &str) -> bool {
        match self {
            B(v) => v,
            other => panic!("{column}: {other:?} is not a bool"),
        }
    }

    fn date32(self, column: &str) -> i32 {
        match self {
            D(s) => date32(day(s)),
            other => panic!("{column}: {other:?} is not a date"),
        }
    }

    /// An amount with two decimals, as the unscaled value of a `Decimal128(_, 2)`.
    fn cents(self, column: &str) -> i128 {
        match self {
            F(v) => (v * 100.0).round() as i128,
            other => panic!("{column}: {other:?} is not an amount"),
        }
    }
}

/// `get` of each cell of a column, null where the row does not name the column.
fn each<T>(cells: &[Option<Cell>], get: impl Fn(Cell) -> T) -> Vec<Option<T>> {
    cells.iter().map(|c| c.map(&get)).collect()
}

/// The column `f` of `rows`, built from the cells the rows name.
fn array(f: &Field, rows: &[Row]) -> ArrayRef {
    let name = f.name().as_str();
    let cells: Vec<Option<Cell>> = rows
        .iter()
        .map(|r| r.iter().find(|(n, _)| *n == name).map(|(_, c)| *c))
        .collect();
    let cells = &cells;
    match f.data_type() {
        A::Utf8 => Arc::new(StringArray::from(each(cells, |c| c.text(name)))),
        A::Int8 => Arc::new(Int8Array::from(each(cells, |c| c.int(name) as i8))),
        A::Int32 => Arc::new(Int32Array::from(each(cells, |c| c.int(name) as i32))),
        A::Int64 => Arc::new(Int64Array::from(each(cells, |c| c.int(name)))),
        A::Timestamp(TimeUnit::Millisecond, _) => Arc::new(
            TimestampMillisecondArray::from(each(cells, |c| c.int(name))).with_timezone("UTC"),
        ),
        A::Float64 => Arc::new(Float64Array::from(each(cells, |c| c.float(name)))),
        A::Boolean => Arc::new(BooleanArray::from(each(cells, |c| c.bool(name)))),
        A::Date32 => Arc::new(Date32Array::from(each(cells, |c| c.date32(name)))),
        A::Decimal128(p, s) => Arc::new(
            Decimal128Array::from(each(cells, |c| c.cents(name)))
                .with_precision_and_scale(*p, *s)
                .expect("amount type"),
        ),
        other => panic!("no test builder for {other}"),
    }
}

/// A batch with `schema`'s columns; columns a row does not name are null.
fn batch(schema: SchemaRef, rows: &[Row]) -> RecordBatch {
    let cols: Vec<ArrayRef> = schema.fields().iter().map(|f| array(f, rows)).collect();
    RecordBatch::try_new(schema, cols).expect("batch matches schema")
}

fn write(dir: &Path, table: &str, rows: &[Row]) {
    let schema = schema::of(table).expect("an export table");
    let batch = batch(schema.clone(), rows);
    write_parquet(
        &dir.join(format!("{table}.parquet")),
        schema,
        &[batch],
        None,
    );
}

/// `batches` as the Parquet file `path` (default writer properties unless `props`).
fn write_parquet(
    path: &Path,
    schema: SchemaRef,
    batches: &[RecordBatch],
    props: Option<::parquet::file::properties::WriterProperties>,
) {
    let file = std::fs::File::create(path).expect("create");
    let mut w = ArrowWriter::try_new(file, schema, props).expect("writer");
    for b in batches {
        w.write(b).expect("write");
    }
    w.close().expect("close");
}

/// A small fleet: its reports (one row per vehicle), records, overview parts, requests.
#[derive(Default)]
struct Fleet {
    reports: Vec<Row>,
    records: Vec<Row>,
    overview: Vec<Row>,
    requests: Vec<Row>,
}

impl Fleet {
    /// A vehicle with a clean report (no accident, grade A).
    fn vehicle(&mut self, vin: &'static str, brand: &'static str) -> &mut Self {
        self.report(
            vin,
            vec![
                ("brand_name", S(brand)),
                ("accident_status", I(0)),
                ("accident_grade", S("A")),
                ("total_mileage_km", I(50_000)),
                ("avg_yearly_mileage_km", F(12_000.0)),
            ],
        )
    }

    fn report(&mut self, vin: &'static str, mut cols: Row) -> &mut Self {
        cols.push(("vin", S(vin)));
        // The fleet's first and only report per vehicle.
        cols.push(("version", I(1)));
        cols.push(("is_latest", B(true)));
        self.reports.push(cols);
        self.requests
            .push(vec![("vin", S(vin)), ("status", S("done"))]);
        self
    }

    /// Records `(visit_date, mileage)` in the given (file) order, `seq` = position.
    fn visits(
        &mut self,
        vin: &'static str,
        visits: &[(Option<&'static str>, Option<i64>)],
    ) -> &mut Self {
        for (seq, (date, km)) in visits.iter().enumerate() {
            let mut r: Row = vec![
                ("vin", S(vin)),
                ("version", I(1)),
                ("seq", I(seq as i64)),
                ("type_code", I(1)),
            ];
            if let Some(d) = date {
                r.push(("visit_date", D(d)));
            }
            if let Some(km) = km {
                r.push(("mileage_km", I(*km)));
            }
            self.records.push(r);
        }
        self
    }

    fn part(
        &mut self,
        vin: &'static str,
        part: &'static str,
        exception: Option<bool>,
    ) -> &mut Self {
        let mut r: Row = vec![("vin", S(vin)), ("version", I(1)), ("part", S(part))];
        if let Some(e) = exception {
            r.push(("has_exception", B(e)));
        }
        self.overview.push(r);
        self
    }

    fn request(&mut self, vin: &'static str, status: &'static str) -> &mut Self {
        self.requests
            .push(vec![("vin", S(vin)), ("status", S(status))]);
        self
    }

    fn write(&self, dir: &Path) {
        write(dir, "reports", &self.reports);
        write(dir, "records", &self.records);
        write(dir, "overview", &self.overview);
        write(dir, "requests", &self.requests);
    }

    fn audit_with(&self, tolerance: i64) -> Flags {
        let dir = tempfile::tempdir().expect("tempdir");
        self.write(dir.path());
        let tables = Tables::scan(dir.path()).expect("scan");
        let audit = compute(&tables, day(AS_OF), tolerance).expect("audit");
        Flags::of(audit)
    }

    fn audit(&self) -> Flags {
        self.audit_with(DEFAULT_ROLLBACK_TOLERANCE_KM)
    }
}

const AS_OF: &str = "2024-01-31";

/// A cell as text: strings without quotes, null as `null`, dates (days in polars, see
/// `frames::WIDEN`) as `YYYY-MM-DD`.
fn text(c: &Column, i: usize) -> String {
    match c.get(i).expect("row in range") {
        AnyValue::Null => "null".to_owned(),
        AnyValue::String(s) => s.to_owned(),
        AnyValue::StringOwned(s) => s.to_string(),
        AnyValue::Int32(days) if frames::WIDEN.contains(&c.name().as_str()) => {
            crate::export::flatten::from_date32(days)
                .expect("a date in range")
                .to_string()
        }
        other => other.to_string(),
    }
}

/// `vehicle_flags` as text cells by VIN and column, to assert on.
struct Flags {
    audit: Audit,
    cells: BTreeMap<String, BTreeMap<String, String>>,
}

impl Flags {
    fn of(audit: Audit) -> Flags {
        let df = &audit.vehicle_flags;
        let mut cells = BTreeMap::new();
        for i in 0..df.height() {
            let m: BTreeMap<String, String> = df
                .columns()
                .iter()
                .map(|c| (c.name().to_string(), text(c, i)))
                .collect();
            cells.insert(m["vin"].clone(), m);
        }
        Flags { audit, cells }
    }

    fn get(&self, vin: &str, column: &str) -> &str {
        let row = self
            .cells
            .get(vin)
            .unwrap_or_else(|| panic!("{vin} not in vehicle_flags: {:?}", self.cells.keys()));
        row.get(column)
            .unwrap_or_else(|| panic!("no column {column}: {row:?}"))
    }

    fn rollback(&self, vin: &str) -> (bool, i64) {
        (
            self.get(vin, "odometer_rollback") == "true",
            self.get(vin, "max_rollback_km").parse().expect("km"),
        )
    }
}

const V1: &str = "LSVAA2000000000A1";
const V2: &str = "LSVAA2000000000A2";
const V3: &str = "LSVAA2000000000A3";

#[test]
fn a_drop_beyond_the_tolerance_is_a_rollback() {
    let f = Fleet::default()
        .vehicle(V1, "大众")
        .visits(
            V1,
            &[
                (Some("2020-01-01"), Some(10_000)),
                (Some("2020-06-01"), Some(30_000)),
                (Some("2021-01-01"), Some(18_000)),
            ],
        )
        .vehicle(V2, "大众")
        .visits(
            V2,
            &[
                (Some("2020-01-01"), Some(10_000)),
                (Some("2020-06-01"), Some(9_500)),
            ],
        )
        .audit();
    assert_eq!(f.rollback(V1), (true, 12_000));
    // 500 km below: a typing slip, within the 1,000 km tolerance, but still reported.
    assert_eq!(f.rollback(V2), (false, 500));
    assert_eq!(f.get(V1, "risk_level"), "high");
    assert!(f.get(V1, "risk_reasons").contains("odometer_rollback"));
}

#[test]
fn exactly_the_tolerance_is_not_a_rollback_and_the_tolerance_is_an_option() {
    let mut fleet = Fleet::default();
    fleet.vehicle(V1, "BMW").visits(
        V1,
        &[
            (Some("2020-01-01"), Some(10_000)),
            (Some("2020-06-01"), Some(9_000)),
        ],
    );
    assert_eq!(fleet.audit().rollback(V1), (false, 1_000));
    assert_eq!(fleet.audit_with(999).rollback(V1), (true, 1_000));
}

#[test]
fn equal_mileages_are_not_a_rollback() {
    let f = Fleet::default()
        .vehicle(V1, "BMW")
        .visits(
            V1,
            &[
                (Some("2020-01-01"), Some(10_000)),
                (Some("2020-02-01"), Some(10_000)),
                (Some("2020-03-01"), Some(10_000)),
            ],
        )
        .audit();
    assert_eq!(f.rollback(V1), (false, 0));
}

#[test]
fn the_drop_is_measured_from_the_highest_earlier_reading() {
    let f = Fleet::default()
        .vehicle(V1, "BMW")
        // 30,000 then 26,000 then 27,000: the later 27,000 is still 3,000 below the peak.
        .visits(
            V1,
            &[
                (Some("2020-01-01"), Some(30_000)),
                (Some("2020-02-01"), Some(26_000)),
                (Some("2020-03-01"), Some(27_000)),
            ],
        )
        .vehicle(V2, "BMW")
        // A slow creep down, each step within tolerance, adds up to a rollback from the peak.
        .visits(
            V2,
            &[
                (Some("2020-01-01"), Some(30_000)),
                (Some("2020-02-01"), Some(29_400)),
                (Some("2020-03-01"), Some(28_800)),
            ],
        )
        .audit();
    assert_eq!(f.rollback(V1), (true, 4_000));
    assert_eq!(f.rollback(V2), (true, 1_200));
}

#[test]
fn records_out_of_date_order_are_sorted_by_date_first() {
    let f = Fleet::default()
        .vehicle(V1, "BMW")
        // In the file newest first, but increasing in date order: no rollback.
        .visits(
            V1,
            &[
                (Some("2021-01-01"), Some(30_000)),
                (Some("2020-01-01"), Some(10_000)),
                (Some("2020-06-01"), Some(20_000)),
            ],
        )
        .vehicle(V2, "BMW")
        // Increasing in the file, decreasing in date order: a rollback.
        .visits(
            V2,
            &[
                (Some("2021-01-01"), Some(10_000)),
                (Some("2020-01-01"), Some(20_000)),
            ],
        )
        .audit();
    assert_eq!(f.rollback(V1), (false, 0));
    assert_eq!(f.rollback(V2), (true, 10_000));
    assert_eq!(f.get(V1, "last_visit_date"), "2021-01-01");
    assert_eq!(f.get(V1, "longest_gap_days"), "214");
}

#[test]
fn same_day_visits_are_ordered_by_maintained_at_then_seq() {
    let mut fleet = Fleet::default();
    fleet.vehicle(V1, "BMW");
    // seq 0 was maintained later in the day than seq 1: 20,000 (08:00) then 5,000 (17:00).
    let base = 1_577_836_800_000i64; // 2020-01-01T00:00:00Z
    fleet.records.push(vec![
        ("version", I(1)),
        ("vin", S(V1)),
        ("seq", I(0)),
        ("visit_date", D("2020-01-01")),
        ("maintained_at", I(base + 17 * 3_600_000)),
        ("mileage_km", I(5_000)),
    ]);
    fleet.records.push(vec![
        ("version", I(1)),
        ("vin", S(V1)),
        ("seq", I(1)),
        ("visit_date", D("2020-01-01")),
        ("maintained_at", I(base + 8 * 3_600_000)),
        ("mileage_km", I(20_000)),
    ]);
    fleet.vehicle(V2, "BMW");
    // No time of day: seq decides (10,000 then 3,000).
    fleet.visits(
        V2,
        &[
            (Some("2020-01-01"), Some(10_000)),
            (Some("2020-01-01"), Some(3_000)),
        ],
    );
    let f = fleet.audit();
    assert_eq!(f.rollback(V1), (true, 15_000));
    assert_eq!(f.rollback(V2), (true, 7_000));
    assert_eq!(f.get(V1, "longest_gap_days"), "0");
}

#[test]
fn missing_mileage_is_skipped_not_taken_as_zero() {
    let f = Fleet::default()
        .vehicle(V1, "BMW")
        .visits(
            V1,
            &[
                (Some("2020-01-01"), Some(10_000)),
                (Some("2020-02-01"), None),
                (Some("2020-03-01"), Some(11_000)),
            ],
        )
        .vehicle(V2, "BMW")
        // The peak before the missing reading still counts.
        .visits(
            V2,
            &[
                (Some("2020-01-01"), Some(20_000)),
                (Some("2020-02-01"), None),
                (Some("2020-03-01"), Some(12_000)),
            ],
        )
        .vehicle(V3, "BMW")
        // An undated reading cannot be placed in the sequence.
        .visits(
            V3,
            &[(Some("2020-01-01"), Some(20_000)), (None, Some(1_000))],
        )
        .audit();
    assert_eq!(f.rollback(V1), (false, 0));
    assert_eq!(f.rollback(V2), (true, 8_000));
    assert_eq!(f.rollback(V3), (false, 0));
    assert_eq!(f.get(V1, "record_count"), "3");
    assert_eq!(f.get(V3, "record_count"), "2");
}

#[test]
fn one_record_and_no_records() {
    let f = Fleet::default()
        .vehicle(V1, "BMW")
        .visits(V1, &[(Some("2024-01-01"), Some(10_000))])
        .report(
            V2,
            vec![
                ("brand_name", S("BMW")),
                ("last_visit_date", D("2021-01-31")),
            ],
        )
        .report(V3, vec![("brand_name", S("BMW"))])
        .audit();
    assert_eq!(f.rollback(V1), (false, 0));
    assert_eq!(f.get(V1, "record_count"), "1");
    assert_eq!(f.get(V1, "longest_gap_days"), "null");
    assert_eq!(f.get(V1, "days_since_last_visit"), "30");
    assert_eq!(f.get(V1, "risk_level"), "low");

    // No records: counts are 0, the report's own last visit date is used.
    assert_eq!(f.rollback(V2), (false, 0));
    assert_eq!(f.get(V2, "record_count"), "0");
    assert_eq!(f.get(V2, "repair_count"), "0");
    assert_eq!(f.get(V2, "total_spent"), "0.00");
    assert_eq!(f.get(V2, "last_visit_date"), "2021-01-31");
    assert_eq!(f.get(V2, "days_since_last_visit"), "1095");
    assert_eq!(f.get(V2, "risk_level"), "medium");
    assert_eq!(f.get(V2, "risk_reasons"), "no_recent_visit");

    // Nothing at all: no visit recorded, accident status unknown.
    assert_eq!(f.get(V3, "last_visit_date"), "null");
    assert_eq!(f.get(V3, "days_since_last_visit"), "null");
    assert_eq!(f.get(V3, "risk_reasons"), "no_visit_recorded");
    assert_eq!(f.get(V3, "structural_damage"), "false");
}

#[test]
fn counts_amounts_and_gaps() {
    let mut fleet = Fleet::default();
    fleet.vehicle(V1, "BMW");
    for (seq, date, code, amount) in [
        (0, "2020-01-01", 1, 100.5),
        (1, "2020-03-01", 2, 200.25),
        (2, "2021-03-01", 2, 1_000.0),
        (3, "2021-03-02", 3, 0.0),
    ] {
        fleet.records.push(vec![
            ("version", I(1)),
            ("vin", S(V1)),
            ("seq", I(seq)),
            ("visit_date", D(date)),
            ("type_code", I(code)),
            ("total_amount", F(amount)),
            ("mileage_km", I(1_000 * (seq + 1))),
        ]);
    }
    // A record without an amount adds nothing.
    fleet.records.push(vec![
        ("version", I(1)),
        ("vin", S(V1)),
        ("seq", I(4)),
        ("visit_date", D("2021-03-03")),
        ("type_code", I(2)),
    ]);
    let f = fleet.audit();
    assert_eq!(f.get(V1, "record_count"), "5");
    assert_eq!(f.get(V1, "repair_count"), "3");
    assert_eq!(f.get(V1, "total_spent"), "1300.75");
    assert_eq!(f.get(V1, "longest_gap_days"), "365");
    assert_eq!(f.get(V1, "last_visit_date"), "2021-03-03");
    assert_eq!(f.get(V1, "days_since_last_visit"), "1064");
}

#[test]
fn overview_parts_make_structural_damage_and_engine_exception() {
    let f = Fleet::default()
        .vehicle(V1, "BMW")
        .part(V1, "frame", Some(true))
        .part(V1, "engine", Some(false))
        .vehicle(V2, "BMW")
        .part(V2, "airbag", Some(true))
        .part(V2, "appearance", Some(true))
        .vehicle(V3, "BMW")
        .part(V3, "engine", Some(true))
        .part(V3, "frame", None)
        .part(V3, "appearance", Some(true))
        .audit();
    assert_eq!(f.get(V1, "structural_damage"), "true");
    assert_eq!(f.get(V1, "engine_exception"), "false");
    assert_eq!(f.get(V2, "structural_damage"), "true");
    assert_eq!(f.get(V2, "exception_parts"), "2");
    assert_eq!(f.get(V3, "structural_damage"), "false");
    assert_eq!(f.get(V3, "engine_exception"), "true");
    assert_eq!(f.get(V1, "risk_level"), "high");
    assert_eq!(f.get(V3, "risk_level"), "medium");
}

#[test]
fn fleet_summary_has_brand_rows_and_a_total() {
    let mut fleet = Fleet::default();
    fleet
        .vehicle(V1, "宝马")
        .visits(
            V1,
            &[
                (Some("2023-01-01"), Some(20_000)),
                (Some("2023-06-01"), Some(5_000)),
            ],
        )
        .vehicle(V2, "宝马")
        .visits(V2, &[(Some("2023-12-01"), Some(5_000))])
        .report(
            V3,
            vec![
                ("brand_name", S("大众")),
                ("accident_status", I(1)),
                ("avg_yearly_mileage_km", F(8_000.0)),
            ],
        )
        .request("LSVAA2000000000B1", "failed")
        .request("LSVAA2000000000B2", "expired")
        .request("LSVAA2000000000B3", "rejected");
    let f = fleet.audit();
    let df = &f.audit.fleet_summary;
    assert_eq!(df.height(), 3, "{df}");
    let text = |col: &str, row: usize| text(df.column(col).expect(col), row);
    // Most vehicles first.
    assert_eq!(text("brand_name", 0), "宝马");
    assert_eq!(text("reports_bought", 0), "2");
    assert_eq!(text("rollback_rate", 0), "0.5");
    assert_eq!(text("median_yearly_km", 0), "12000.0");
    assert_eq!(text("failed", 0), "null");
    assert_eq!(text("brand_name", 1), "大众");
    assert_eq!(text("accident_rate", 1), "1.0");
    assert_eq!(text("high_risk", 1), "1");
    assert_eq!(text("scope", 2), "total");
    assert_eq!(text("brand_name", 2), "null");
    assert_eq!(text("vehicles", 2), "5");
    assert_eq!(text("reports_bought", 2), "3");
    assert_eq!(text("failed", 2), "1");
    assert_eq!(text("expired", 2), "1");
    assert_eq!(text("high_risk", 2), "2");
}

#[test]
fn a_missing_table_says_to_run_export() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut fleet = Fleet::default();
    fleet.vehicle(V1, "BMW");
    fleet.write(dir.path());
    std::fs::remove_file(dir.path().join("records.parquet")).expect("rm");
    let err = Tables::scan(dir.path()).err().expect("an error");
    assert!(matches!(err, AuditError::MissingTable(_)));
    let msg = err.to_string();
    assert!(
        msg.contains("records.parquet") && msg.contains("vmr export"),
        "{msg}"
    );
}

#[test]
fn a_damaged_table_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut fleet = Fleet::default();
    fleet.vehicle(V1, "BMW");
    fleet.write(dir.path());
    // Cut short, as a copy interrupted half-way leaves it.
    let path = dir.path().join("overview.parquet");
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("cut");
    let o = AuditOptions {
        out: dir.path().to_owned(),
        formats: vec![Format::Parquet, Format::Csv],
        csv_bom: false,
        as_of: day("2024-06-01"),
        rollback_tolerance_km: DEFAULT_ROLLBACK_TOLERANCE_KM,
    };
    let err = run(&o).err().expect("an error");
    let msg = err.to_string();
    assert!(
        matches!(err, AuditError::Read { .. }) && msg.contains("overview.parquet"),
        "{msg}"
    );
    assert!(!dir.path().join("vehicle_flags.parquet").exists());
    assert!(!dir.path().join("audit.html").exists());
}

/// Rewrites the Parquet file at `path` with `compression`, as another tool would.
fn recompress(path: &Path, compression: ::parquet::basic::Compression) {
    let file = std::fs::File::open(path).expect("open");
    let reader = ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader");
    let schema = ::arrow_array::RecordBatchReader::schema(&reader);
    let batches: Vec<RecordBatch> = reader.map(|b| b.expect("batch")).collect();
    let props = ::parquet::file::properties::WriterProperties::builder()
        .set_compression(compression)
        .build();
    write_parquet(path, schema, &batches, Some(props));
}

#[test]
fn tables_rewritten_by_other_tools_read_in_any_common_compression() {
    // DuckDB, Spark and pyarrow write Snappy by default; gzip and LZ4 are the other usual ones.
    use ::parquet::basic::{Compression, GzipLevel};
    let mut fleet = Fleet::default();
    fleet
        .vehicle(V1, "BMW")
        .visits(
            V1,
            &[
                (Some("2020-01-01"), Some(30_000)),
                (Some("2021-01-01"), Some(12_000)),
            ],
        )
        .vehicle(V2, "大众")
        .part(V2, "frame", Some(true));
    let expected = fleet.audit().cells;
    assert_eq!(expected[V1]["odometer_rollback"], "true");
    for compression in [
        Compression::SNAPPY,
        Compression::GZIP(GzipLevel::default()),
        Compression::LZ4_RAW,
        Compression::LZ4,
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        fleet.write(dir.path());
        for table in INPUTS {
            recompress(&dir.path().join(format!("{table}.parquet")), compression);
        }
        let tables = Tables::scan(dir.path()).unwrap_or_else(|e| panic!("{compression}: {e}"));
        let audit = compute(&tables, day(AS_OF), DEFAULT_ROLLBACK_TOLERANCE_KM).expect("audit");
        assert_eq!(Flags::of(audit).cells, expected, "{compression}");
    }
}

#[test]
fn a_column_of_a_type_the_audit_does_not_read_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("reports.parquet");
    let schema = Arc::new(::arrow_schema::Schema::new(vec![Field::new(
        "vin",
        A::Binary,
        true,
    )]));
    let col: ArrayRef = Arc::new(::arrow_array::BinaryArray::from(vec![b"LSV".as_slice()]));
    let batch = RecordBatch::try_new(schema.clone(), vec![col]).expect("batch");
    write_parquet(&path, schema, &[batch], None);
    let msg = frames::read(&path).expect_err("an error").to_string();
    assert!(
        msg.contains("reports.parquet") && msg.contains("column vin") && msg.contains("Binary"),
        "{msg}"
    );
}

#[test]
fn run_writes_every_output_atomically_and_escapes_data_in_the_page() {
    // Long: one run of the audit, then every file it wrote checked against that same run.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut fleet = Fleet::default();
    fleet
        .vehicle(V1, "<script>alert(1)</script>")
        .visits(
            V1,
            &[
                (Some("2023-01-01"), Some(20_000)),
                (Some("2023-06-01"), Some(5_000)),
            ],
        )
        .vehicle(V2, "大众");
    fleet.write(dir.path());
    let opts = AuditOptions {
        out: dir.path().to_owned(),
        formats: vec![Format::Parquet, Format::Csv, Format::Jsonl],
        csv_bom: true,
        as_of: day(AS_OF),
        rollback_tolerance_km: DEFAULT_ROLLBACK_TOLERANCE_KM,
    };
    let report = run(&opts).expect("audit");
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "audit.html",
            "fleet_summary.csv",
            "fleet_summary.parquet",
            "overview.parquet",
            "records.parquet",
            "reports.parquet",
            "requests.parquet",
            "vehicle_flags.csv",
            "vehicle_flags.parquet",
        ]
    );
    assert_eq!(report.files.len(), 5);
    let csv = std::fs::read(dir.path().join("vehicle_flags.csv")).expect("csv");
    assert!(
        csv.starts_with(b"\xEF\xBB\xBFvin,brand_name,"),
        "{:?}",
        &csv[..40]
    );
    let page = std::fs::read_to_string(dir.path().join("audit.html")).expect("html");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(
        !page.contains("<script"),
        "no script of any kind in the page"
    );
    assert!(page.contains(r#"<meta charset="utf-8">"#));
    assert!(page.contains("大众"));
    assert!(page.contains("Odometer rollback of 15,000 km"), "{page}");
    assert!(
        !page.contains("<link") && !page.contains("src="),
        "self-contained"
    );
    // The Parquet output reads back with its types.
    let back =
        frames::read_columns(&dir.path().join("vehicle_flags.parquet"), |_| true).expect("read");
    assert_eq!(back.height(), 2);
    let file = std::fs::File::open(dir.path().join("vehicle_flags.parquet")).expect("open");
    let schema = ::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .schema()
        .clone();
    let typed = |name: &str| {
        schema
            .field_with_name(name)
            .expect(name)
            .data_type()
            .clone()
    };
    assert_eq!(typed("last_visit_date"), A::Date32);
    assert_eq!(typed("accident_status"), A::Int8);
    assert_eq!(typed("total_spent"), A::Decimal128(18, 2));
    assert_eq!(typed("vin"), A::Utf8);
    // Every column, value and type, as the audit computed it; fleet_summary too.
    assert!(back.equals_missing(&report.audit.vehicle_flags), "{back}");
    let summary =
        frames::read_columns(&dir.path().join("fleet_summary.parquet"), |_| true).expect("read");
    assert!(
        summary.equals_missing(&report.audit.fleet_summary),
        "{summary}"
    );
}

/// A second report of `vin` (version 2, the latest) beside the first the fleet already holds:
/// the first loses `is_latest`.
fn second_report(f: &mut Fleet, vin: &'static str, report: Row) {
    for r in f.reports.iter_mut() {
        if r.iter()
            .any(|(n, c)| *n == "vin" && matches!(c, S(v) if *v == vin))
        {
            r.retain(|(n, _)| *n != "is_latest");
            r.push(("is_latest", B(false)));
        }
    }
    let mut r = report;
    r.push(("vin", S(vin)));
    r.push(("version", I(2)));
    r.push(("is_latest", B(true)));
    f.reports.push(r);
}

/// Records of version 2 of `vin`: `(visit_date, mileage, type_code)`.
fn second_visits(f: &mut Fleet, vin: &'static str, visits: &[(&'static str, i64, i64)]) {
    for (seq, (d, km, code)) in visits.iter().enumerate() {
        f.records.push(vec![
            ("vin", S(vin)),
            ("version", I(2)),
            ("seq", I(seq as i64)),
            ("visit_date", D(d)),
            ("mileage_km", I(*km)),
            ("type_code", I(*code)),
        ]);
    }
}

#[test]
fn changes_since_the_previous_report_compare_the_latest_version_with_the_one_before() {
    let mut f = Fleet::default();
    let first = [
        (Some("2020-01-01"), Some(10_000)),
        (Some("2021-01-01"), Some(30_000)),
    ];
    // V1 driven on: two more visits, one a repair, a new frame exception and grade D.
    f.vehicle(V1, "大众")
        .visits(V1, &first)
        .part(V1, "frame", Some(false));
    second_report(
        &mut f,
        V1,
        vec![
            ("brand_name", S("大众")),
            ("accident_status", I(1)),
            ("accident_grade", S("D")),
        ],
    );
    second_visits(
        &mut f,
        V1,
        &[
            ("2020-01-01", 10_000, 1),
            ("2021-01-01", 30_000, 1),
            ("2022-01-01", 41_000, 2),
            ("2023-01-01", 52_500, 1),
        ],
    );
    f.overview.push(vec![
        ("vin", S(V1)),
        ("version", I(2)),
        ("part", S("frame")),
        ("has_exception", B(true)),
    ]);
    // V2 rolled back between the reports: the latest history tops out 9,000 km lower.
    f.vehicle(V2, "大众").visits(V2, &first);
    second_report(
        &mut f,
        V2,
        vec![
            ("brand_name", S("大众")),
            ("accident_status", I(0)),
            ("accident_grade", S("A")),
        ],
    );
    second_visits(
        &mut f,
        V2,
        &[("2020-01-01", 7_000, 1), ("2021-01-01", 21_000, 1)],
    );
    // V3 bought once.
    f.vehicle(V3, "大众").visits(V3, &first);

    let flags = f.audit();
    for c in changes::COLUMNS {
        assert!(flags.cells[V1].contains_key(c), "{c}");
    }
    let row = |vin: &str| {
        changes::COLUMNS
            .iter()
            .map(|c| flags.get(vin, c).to_owned())
            .collect::<Vec<_>>()
            .join(",")
    };
    // report_versions, km_since_previous, new_records, new_repairs, became_accident,
    // new_structural, rollback_between_reports, rollback_between_km
    assert_eq!(row(V1), "2,22500,2,1,true,true,false,0");
    assert_eq!(row(V2), "2,-9000,0,0,false,false,true,9000");
    assert_eq!(row(V3), "1,null,null,null,null,null,false,null");
    // The vehicle is graded by its latest report, and a rollback between reports is high risk.
    assert_eq!(flags.get(V1, "accident_grade"), "D");
    assert_eq!(flags.get(V1, "record_count"), "4");
    assert_eq!(flags.get(V2, "risk_level"), "high");
    assert!(
        flags
            .get(V2, "risk_reasons")
            .contains("rollback_between_reports"),
        "{}",
        flags.get(V2, "risk_reasons")
    );
    assert_eq!(flags.audit.vehicle_flags.height(), 3);
    // Within the tolerance it is not one.
    assert_eq!(
        f.audit_with(9_000).get(V2, "rollback_between_reports"),
        "false"
    );
}
