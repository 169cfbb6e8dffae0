//! Export, end to end: vendor responses stored in a real checkpoint → the five tables, read back
//! from Parquet (parquet crate's Arrow reader) and from CSV, checked value by value and type by
//! type against design.md's "Output tables".
//!
//! The golden export's expected tables are `tests/it/fixtures/export/<table>.csv`, compared byte
//! for byte. After a deliberate change to the output, regenerate them and review the diff like
//! code: `VMR_UPDATE_FIXTURES=1 cargo test --test it export::golden`

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Float64Type, Int8Type, Int32Type, Int64Type,
    TimestampMillisecondType,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use chrono::{DateTime, NaiveDate, SecondsFormat};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, LogicalType};
use parquet::file::reader::FileReader;
use parquet::file::serialized_reader::SerializedFileReader;
use proptest::prelude::*;
use rusqlite::{Connection, params};
use serde::Deserialize;
use serde_json::{Value, json};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use vmr::api::Endpoint;
use vmr::api::outcome::parse_report;
use vmr::api::scalar::{Decimal, Field, Kind, Lenient, Text};
use vmr::api::view::{Conv, Finding, Held, NotThere, PartSlot, ReportView, Scalar, Slot};
use vmr::checkpoint::{self, Checkpoint};
use vmr::config::Format;
use vmr::export::flatten::{self, SourceReport, Want};
use vmr::export::{ExportOptions, export, schema};

pub(crate) mod reference_model;
use reference_model::{OverviewPart, RecordSlot, Records, Report, Shaped};

const T0: i64 = 1_714_550_400_000; // 2024-05-01T08:00:00Z

fn sample(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples/responses")
        .join(name);
    fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A fresh checkpoint (schema created by the real code) and a write connection to it.
fn new_checkpoint(dir: &Path) -> (PathBuf, Connection) {
    let state = dir.join("state");
    drop(Checkpoint::open(&state).expect("checkpoint opens"));
    let db = checkpoint::db_path(&state);
    let conn = Connection::open(&db).expect("sqlite opens");
    (db, conn)
}

/// One row of the checkpoint's `vins` table; `..Vin::default()` leaves the rest empty (a
/// `done` VIN first seen at `T0`, from `fleet.csv` line 0).
struct Vin<'a> {
    id: i64,
    vin: &'a str,
    url: Option<&'a str>,
    state: &'a str,
    code: Option<i64>,
    message: Option<&'a str>,
    request_id: Option<&'a str>,
    task_no: Option<&'a str>,
    submit_attempts: i64,
    poll_attempts: i64,
    billed_calls: i64,
    first_seen_at: i64,
    submitted_at: Option<i64>,
    completed_at: Option<i64>,
    line: i64,
    /// Why a failed VIN failed (the checkpoint's `failure` column).
    failure: Option<&'a str>,
}

impl Default for Vin<'_> {
    fn default() -> Self {
        Vin {
            id: 0,
            vin: "",
            url: None,
            state: "done",
            code: None,
            message: None,
            request_id: None,
            task_no: None,
            submit_attempts: 0,
            poll_attempts: 0,
            billed_calls: 0,
            first_seen_at: T0,
            submitted_at: None,
            completed_at: None,
            line: 0,
            failure: None,
        }
    }
}

fn add_vin(c: &Connection, v: Vin<'_>) {
    c.execute(
        "INSERT INTO vins (id, vin, license_img_url, state, code, message, request_id, task_no,
            submit_attempts, poll_attempts, billed_calls, first_seen_at, submitted_at, completed_at,
            input_file, input_line, batch_id, failure)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, 'fleet.csv', ?15, 'b1', ?16)",
        params![
            v.id,
            v.vin,
            v.url,
            v.state,
            v.code,
            v.message,
            v.request_id,
            v.task_no,
            v.submit_attempts,
            v.poll_attempts,
            v.billed_calls,
            v.first_seen_at,
            v.submitted_at,
            v.completed_at,
            v.line,
            v.failure
        ],
    )
    .expect("insert vin");
}

#[allow(clippy::too_many_arguments)]
fn add_report(
    c: &Connection,
    vin_id: i64,
    vin: &str,
    request_id: Option<&str>,
    task_no: Option<&str>,
    endpoint: &str,
    fetched_at: i64,
    body: &[u8],
) {
    c.execute(
        "INSERT INTO reports (vin_id, version, purchase, vin, request_id, task_no, endpoint, fetched_at, body)
         VALUES (?1, (SELECT coalesce(max(version), 0) + 1 FROM reports WHERE vin_id = ?1),
            (SELECT purchase FROM vins WHERE id = ?1), ?2, ?3, ?4, ?5, ?6, ?7)",
        params![vin_id, vin, request_id, task_no, endpoint, fetched_at, body],
    )
    .expect("insert report");
}

const V1: &str = "LSVAB12345C000001";
const V2: &str = "LFV3A23C4P3000002";

/// The golden checkpoint: an inline report, a polled report, a 703, a pending VIN and a
/// rejected input row.
fn golden(dir: &Path) -> PathBuf {
    let (db, c) = new_checkpoint(dir);
    add_vin(
        &c,
        Vin {
            id: 1,
            vin: V1,
            url: Some("https://img.example.cn/1.jpg"),
            state: "done",
            code: Some(200),
            message: Some("成功"),
            request_id: Some("req-inline-1"),
            task_no: Some("task-gen-1"),
            submit_attempts: 1,
            billed_calls: 1,
            submitted_at: Some(T0 + 1000),
            completed_at: Some(T0 + 2500),
            line: 2,
            ..Vin::default()
        },
    );
    add_report(
        &c,
        1,
        V1,
        Some("req-inline-1"),
        Some("task-gen-1"),
        "generate",
        T0 + 2500,
        &sample("generate_inline.json"),
    );
    add_vin(
        &c,
        Vin {
            id: 2,
            vin: V2,
            url: Some("https://img.example.cn/2.jpg"),
            state: "done",
            code: Some(200),
            message: Some("成功"),
            request_id: Some("req-deferred-2"),
            task_no: Some("task-get-2"),
            submit_attempts: 1,
            poll_attempts: 2,
            billed_calls: 2,
            submitted_at: Some(T0 + 1000),
            completed_at: Some(T0 + 300_000),
            line: 3,
            ..Vin::default()
        },
    );
    add_report(
        &c,
        2,
        V2,
        Some("req-deferred-2"),
        Some("task-get-2"),
        "get",
        T0 + 300_000,
        &sample("get_200.json"),
    );
    add_vin(
        &c,
        Vin {
            id: 3,
            vin: "LRWYS6EU5LX274170",
            url: Some("https://img.example.cn/3.jpg"),
            state: "failed",
            code: Some(703),
            message: Some("暂不支持该品牌"),
            task_no: Some("task-gen-3"),
            submit_attempts: 1,
            submitted_at: Some(T0 + 1000),
            completed_at: Some(T0 + 2000),
            line: 4,
            ..Vin::default()
        },
    );
    add_vin(
        &c,
        Vin {
            id: 4,
            vin: "LHGL0SC67P3945299",
            url: Some("https://img.example.cn/4.jpg"),
            state: "pending",
            code: Some(701),
            message: Some("报告还未生成，请稍后查询"),
            request_id: Some("req-deferred-4"),
            task_no: Some("task-get-4"),
            submit_attempts: 1,
            poll_attempts: 1,
            billed_calls: 1,
            submitted_at: Some(T0 + 1000),
            line: 5,
            ..Vin::default()
        },
    );
    add_vin(
        &c,
        Vin {
            id: 5,
            vin: "LSVAB1234",
            state: "rejected",
            message: Some(r#"VIN "LSVAB1234" has 9 characters, needs 17"#),
            line: 25,
            ..Vin::default()
        },
    );
    db
}

fn opts(out: &Path, formats: &[Format]) -> ExportOptions {
    ExportOptions {
        out: out.to_owned(),
        formats: formats.to_vec(),
        csv_bom: false,
        price: None,
        layout: vmr::config::Layout::Flat,
        full: false,
    }
}

fn run_export(db: &Path, o: &ExportOptions) -> vmr::export::ExportSummary {
    let snap = checkpoint::Snapshot::of(checkpoint::open_reader(db).expect("reader"))
        .expect("a read transaction");
    export(&snap, o).expect("export succeeds")
}

/// A cell as text, formatted here (not by the code under test): "" is null.
fn cell(a: &dyn Array, i: usize) -> String {
    if a.is_null(i) {
        return String::new();
    }
    match a.data_type() {
        DataType::Utf8 => {
            let v = a.as_string::<i32>().value(i);
            assert!(!v.is_empty(), "empty strings must be null");
            v.to_owned()
        }
        DataType::Int8 => a.as_primitive::<Int8Type>().value(i).to_string(),
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i).to_string(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i).to_string(),
        DataType::Float64 => a.as_primitive::<Float64Type>().value(i).to_string(),
        DataType::Boolean => a.as_boolean().value(i).to_string(),
        DataType::Date32 => {
            let days = a.as_primitive::<Date32Type>().value(i);
            (NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")
                + chrono::Duration::days(days.into()))
            .to_string()
        }
        DataType::Timestamp(TimeUnit::Millisecond, Some(tz)) if tz.as_ref() == "UTC" => {
            let ms = a.as_primitive::<TimestampMillisecondType>().value(i);
            DateTime::from_timestamp_millis(ms)
                .expect("in range")
                .to_rfc3339_opts(SecondsFormat::AutoSi, true)
        }
        DataType::Decimal128(18, 2) => {
            let v = a.as_primitive::<Decimal128Type>().value(i);
            let sign = if v < 0 { "-" } else { "" };
            format!("{sign}{}.{:02}", v.abs() / 100, v.abs() % 100)
        }
        other => panic!("unexpected column type {other}"),
    }
}

fn read_parquet(path: &Path) -> (arrow_schema::SchemaRef, Vec<Vec<String>>) {
    let file = File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).expect("parquet footer");
    let schema = builder.schema().clone();
    let mut rows = Vec::new();
    for batch in builder.build().expect("reader") {
        let batch: RecordBatch = batch.expect("batch");
        for i in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .map(|c| cell(c.as_ref(), i))
                    .collect(),
            );
        }
    }
    (schema, rows)
}

fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut all: Vec<Vec<String>> = r
        .records()
        .map(|rec| rec.expect("csv record").iter().map(str::to_owned).collect())
        .collect();
    let header = all.remove(0);
    (header, all)
}

/// Where the golden export's expected `<table>.csv` is kept.
fn fixture(table: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/fixtures/export")
        .join(format!("{table}.csv"))
}

/// Checks one table of the golden export against its fixture: the CSV byte for byte, and the
/// Parquet file's schema (the contract's) and rows (formatted here, not by the code under test)
/// against the fixture's. With `VMR_UPDATE_FIXTURES=1` the fixture is first rewritten from the
/// export.
fn check_table(out: &Path, table: &str) {
    let path = fixture(table);
    let csv = fs::read_to_string(out.join(format!("{table}.csv"))).expect("CSV is UTF-8");
    if std::env::var_os("VMR_UPDATE_FIXTURES").is_some_and(|v| v == "1") {
        fs::write(&path, &csv).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let want = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(csv, want, "{table}.csv differs from {}", path.display());
    let want_schema = schema::of(table).expect("known table");
    let (got_schema, got) = read_parquet(&out.join(format!("{table}.parquet")));
    assert_eq!(got_schema.fields(), want_schema.fields(), "{table} types");
    let (header, want_rows) = read_csv(&path);
    let names: Vec<&String> = want_schema.fields().iter().map(|f| f.name()).collect();
    assert_eq!(header.iter().collect::<Vec<_>>(), names, "{table} header");
    assert_eq!(got, want_rows, "{table}.parquet rows");
}

/// A column type in short: what design.md's table of types says.
fn short_type(t: &DataType) -> &'static str {
    match t {
        DataType::Utf8 => "str",
        DataType::Int8 => "i8",
        DataType::Int32 => "i32",
        DataType::Int64 => "i64",
        DataType::Float64 => "f64",
        DataType::Boolean => "bool",
        DataType::Date32 => "date",
        DataType::Timestamp(TimeUnit::Millisecond, Some(tz)) if tz.as_ref() == "UTC" => "ts",
        DataType::Decimal128(18, 2) => "dec(18,2)",
        other => panic!("a type the contract does not use: {other}"),
    }
}

#[test]
fn schemas_are_the_contracts_names_and_types_in_order() {
    let want = [
        (
            "requests",
            "vin str, license_img_url str, status str, code i32, message str, request_id str, \
             task_no str, submit_attempts i32, poll_attempts i32, billed_calls i32, \
             first_seen_at ts, submitted_at ts, completed_at ts, input_file str, input_line i32, \
             purchases i32, report_version i32",
        ),
        (
            "reports",
            "vin str, version i32, is_latest bool, request_id str, task_no str, brand_name str, \
             brand_logo_url str, \
             vin_masked str, first_visit_date date, last_visit_date date, \
             first_visit_mileage_km i64, last_visit_mileage_km i64, total_mileage_km i64, \
             avg_yearly_mileage_km f64, avg_yearly_services f64, record_count i32, \
             accident_status i8, accident_grade str, accident_reason str, \
             report_updated_date date, fetched_at ts",
        ),
        (
            "records",
            "vin str, version i32, request_id str, seq i32, visit_date date, maintained_at ts, type_code i8, \
             type_name str, type_label str, content str, materials str, remark str, \
             mileage_km i64, pay_type str, total_amount dec(18,2)",
        ),
        (
            "overview",
            "vin str, version i32, request_id str, part str, label str, has_exception bool, \
             exception_count i32",
        ),
        (
            "exceptions",
            "vin str, version i32, request_id str, part str, label str, seq i32, raw str, \
             component str, \
             finding str",
        ),
        (
            "calls",
            "vin str, endpoint str, started_at ts, ended_at ts, http_status i32, code i32, \
             class str, task_no str, request_id str, attempt i32, purchase i32",
        ),
    ];
    let tables: Vec<&str> = want.iter().map(|(t, _)| *t).collect();
    assert_eq!(tables, schema::TABLES);
    for (table, columns) in want {
        let schema = schema::of(table).expect("a table");
        let got: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| format!("{} {}", f.name(), short_type(f.data_type())))
            .collect();
        assert_eq!(got.join(", "), columns, "{table}");
        // Every column may be null (a value the vendor did not send, or sent unusable).
        assert!(schema.fields().iter().all(|f| f.is_nullable()), "{table}");
    }
}

#[test]
fn golden_samples_export_to_exactly_the_expected_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = golden(dir.path());
    let out = dir.path().join("out");
    let summary = run_export(&db, &opts(&out, &[Format::Parquet, Format::Csv]));

    // The column names are design.md's, in its order.
    let names = |t: &str| -> Vec<String> {
        schema::of(t)
            .expect("table")
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    };
    assert_eq!(
        names("requests").join(", "),
        "vin, license_img_url, status, code, message, request_id, task_no, submit_attempts, poll_attempts, billed_calls, first_seen_at, submitted_at, completed_at, input_file, input_line, purchases, report_version"
    );
    assert_eq!(
        names("reports").join(", "),
        "vin, version, is_latest, request_id, task_no, brand_name, brand_logo_url, vin_masked, first_visit_date, last_visit_date, first_visit_mileage_km, last_visit_mileage_km, total_mileage_km, avg_yearly_mileage_km, avg_yearly_services, record_count, accident_status, accident_grade, accident_reason, report_updated_date, fetched_at"
    );
    assert_eq!(
        names("records").join(", "),
        "vin, version, request_id, seq, visit_date, maintained_at, type_code, type_name, type_label, content, materials, remark, mileage_km, pay_type, total_amount"
    );
    assert_eq!(
        names("overview").join(", "),
        "vin, version, request_id, part, label, has_exception, exception_count"
    );
    assert_eq!(
        names("exceptions").join(", "),
        "vin, version, request_id, part, label, seq, raw, component, finding"
    );

    // The rows: tests/it/fixtures/export/<table>.csv.
    for table in ["requests", "reports", "records", "overview", "exceptions"] {
        check_table(&out, table);
    }

    // Data quality: every unreadable value counted where it landed.
    let manifest: Value =
        serde_json::from_slice(&fs::read(out.join("manifest.json")).expect("manifest"))
            .expect("manifest is JSON");
    assert_eq!(manifest["schema_version"], json!(2));
    assert_eq!(manifest["vmr_version"], json!(env!("CARGO_PKG_VERSION")));
    assert_eq!(
        manifest["row_counts"],
        json!({"requests": 5, "reports": 2, "records": 4, "overview": 8, "exceptions": 5, "calls": 0})
    );
    assert_eq!(
        manifest["data_quality"]["coerced_to_null"],
        json!({
            "overview.exception_count": 1, "overview.has_exception": 1, "overview.label": 1,
            "records.mileage_km": 1, "records.total_amount": 1, "records.visit_date": 1,
            "reports.accident_status": 1
        })
    );
    assert_eq!(manifest["data_quality"]["bad_bodies"], json!(0));
    assert_eq!(summary.quality.coerced_total(), 7);
    let text = summary.render();
    assert!(
        text.contains("records") && text.contains(&out.display().to_string()),
        "{text}"
    );

    // No temporary files are left behind (only the lock file exports share).
    let leftovers: Vec<_> = fs::read_dir(&out)
        .expect("out dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n != ".vmr-export.lock")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn parquet_is_zstd_with_statistics_except_for_free_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = golden(dir.path());
    let out = dir.path().join("out");
    run_export(&db, &opts(&out, &[Format::Parquet]));
    let reader = SerializedFileReader::new(File::open(out.join("records.parquet")).expect("file"))
        .expect("parquet");
    let meta = reader.metadata();
    assert_eq!(meta.num_row_groups(), 1);
    let rg = meta.row_group(0);
    for col in rg.columns() {
        assert!(matches!(col.compression(), Compression::ZSTD(_)));
        // Readers prune by VIN, date or amount: those keep min/max; the wording of a repair
        // has none (comparing every text value cost export time for nothing).
        let free_text =
            ["content", "materials", "remark"].contains(&col.column_path().string().as_str());
        assert_eq!(
            col.statistics().is_some(),
            !free_text,
            "{:?} statistics",
            col.column_path()
        );
    }
    let vin = rg
        .columns()
        .iter()
        .find(|c| c.column_path().string() == "vin")
        .expect("vin");
    let stats = vin.statistics().expect("vin statistics");
    assert!(stats.min_bytes_opt().is_some() && stats.max_bytes_opt().is_some());
    assert!(!out.join("records.csv").exists());

    // The Parquet logical types BI tools read.
    let schema = meta.file_metadata().schema_descr();
    let logical = |name: &str| {
        (0..schema.num_columns())
            .map(|i| schema.column(i))
            .find(|c| c.name() == name)
            .and_then(|c| c.logical_type_ref().cloned())
    };
    assert_eq!(
        logical("maintained_at"),
        Some(LogicalType::Timestamp {
            is_adjusted_to_u_t_c: true,
            unit: parquet::basic::TimeUnit::MILLIS,
        })
    );
    assert_eq!(
        logical("total_amount"),
        Some(LogicalType::Decimal {
            scale: 2,
            precision: 18
        })
    );
    assert_eq!(
        logical("type_code"),
        Some(LogicalType::Integer {
            bit_width: 8,
            is_signed: true
        })
    );
    assert_eq!(logical("visit_date"), Some(LogicalType::Date));
    assert_eq!(logical("content"), Some(LogicalType::String));
}

#[test]
fn empty_checkpoint_writes_every_table_with_its_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, _c) = new_checkpoint(dir.path());
    let out = dir.path().join("out");
    let summary = run_export(
        &db,
        &opts(&out, &[Format::Parquet, Format::Csv, Format::Jsonl]),
    );
    for table in schema::TABLES {
        let (got_schema, got) = read_parquet(&out.join(format!("{table}.parquet")));
        assert_eq!(
            got_schema.fields(),
            schema::of(table).expect("table").fields()
        );
        assert!(got.is_empty());
        let (header, got) = read_csv(&out.join(format!("{table}.csv")));
        assert_eq!(header.len(), got_schema.fields().len());
        assert!(got.is_empty());
    }
    assert_eq!(fs::read(out.join("reports.jsonl")).expect("jsonl"), b"");
    assert!(summary.rows.iter().all(|(_, n)| *n == 0));
}

#[test]
fn malformed_bodies_are_counted_and_the_rest_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, c) = new_checkpoint(dir.path());
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("get", sample("html_error.html")),
        ("get", br#"{"code":200,"data":{"overview":{"appearance""#.to_vec()),
        ("get", br#"{"code":200,"msg":"ok","data":null}"#.to_vec()),
        ("generate", sample("generate_request_id_only.json")),
        ("get", Vec::new()),
        ("get", br#"{"code":200,"data":[1,2]}"#.to_vec()),
        ("get", br#"{"code":200,"data":"report"}"#.to_vec()),
        ("mystery", sample("get_200.json")),
        // Readable reports with odd shapes inside: rows with nulls, not bad bodies.
        (
            "get",
            br#"{"code":200,"data":{"overview":"none","result_content":{"a":1},"brand_name":"x"}}"#
                .to_vec(),
        ),
        (
            "get",
            br#"{"code":200,"data":{"overview":{"engine":{"exceptions":"broken"}},"result_content":[1,"two",null,{"mileage":[1]}]}}"#
                .to_vec(),
        ),
        ("get", sample("get_200.json")),
    ];
    for (i, (endpoint, body)) in bodies.iter().enumerate() {
        let id = i as i64 + 1;
        let vin = format!("LSVAB12345C{id:06}");
        add_vin(
            &c,
            Vin {
                id,
                vin: &vin,
                state: "done",
                code: Some(200),
                submit_attempts: 1,
                poll_attempts: 1,
                billed_calls: 1,
                line: id + 1,
                ..Vin::default()
            },
        );
        add_report(&c, id, &vin, Some("r"), None, endpoint, T0, body);
    }
    let out = dir.path().join("out");
    let s = run_export(
        &db,
        &opts(&out, &[Format::Parquet, Format::Csv, Format::Jsonl]),
    );
    assert_eq!(s.bad_bodies, 8, "{:#?}", s.bad_body_list);
    let rows: std::collections::HashMap<_, _> = s.rows.iter().cloned().collect();
    assert_eq!(rows["requests"], 11);
    assert_eq!(rows["reports"], 3);
    assert_eq!(rows["records"], 2);
    assert_eq!(s.jsonl_lines, Some(3));
    let manifest: Value =
        serde_json::from_slice(&fs::read(out.join("manifest.json")).expect("manifest"))
            .expect("JSON");
    let dq = &manifest["data_quality"];
    assert_eq!(dq["bad_bodies"], json!(8));
    let list = dq["bad_body_list"].as_array().expect("list");
    assert_eq!(list.len(), 8);
    assert_eq!(list[0]["vin"], json!("LSVAB12345C000001"));
    assert!(
        list[0]["reason"]
            .as_str()
            .expect("reason")
            .contains("not JSON"),
        "{list:?}"
    );
    assert_eq!(dq["unusable_containers"]["reports.overview"], json!(1));
    assert_eq!(
        dq["unusable_containers"]["reports.result_content"],
        json!(1)
    );
    assert_eq!(
        dq["unusable_containers"]["records.result_content[]"],
        json!(3)
    );
    assert_eq!(dq["unusable_containers"]["overview.exceptions"], json!(1));
    assert_eq!(dq["coerced_to_null"]["records.mileage_km"], json!(1));
}

#[test]
fn jsonl_holds_each_report_exactly_as_bought() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = golden(dir.path());
    let out = dir.path().join("out");
    let s = run_export(&db, &opts(&out, &[Format::Jsonl]));
    assert_eq!(s.jsonl_lines, Some(2));
    assert!(!out.join("reports.parquet").exists());
    let text = fs::read_to_string(out.join("reports.jsonl")).expect("jsonl");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    #[derive(serde::Deserialize)]
    struct Line<'a> {
        vin: String,
        request_id: Option<String>,
        #[serde(borrow)]
        body: &'a serde_json::value::RawValue,
    }
    let l: Line = serde_json::from_str(lines[1]).expect("line 2");
    assert_eq!(l.vin, V2);
    assert_eq!(l.request_id.as_deref(), Some("req-deferred-2"));
    let raw = String::from_utf8(sample("get_200.json")).expect("utf-8");
    assert!(raw.contains(l.body.get()), "byte for byte");
    let l: Line = serde_json::from_str(lines[0]).expect("line 1");
    let inline: Value =
        serde_json::from_slice(&sample("generate_inline.json")).expect("sample JSON");
    let body: Value = serde_json::from_str(l.body.get()).expect("body JSON");
    assert_eq!(body, inline["data"]["info"]);
}

#[test]
fn csv_bom_and_a_second_export_replaces_the_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = golden(dir.path());
    let out = dir.path().join("out");
    run_export(&db, &opts(&out, &[Format::Csv]));
    let first = fs::read(out.join("reports.csv")).expect("csv");
    assert!(first.starts_with(b"vin,"));
    let mut o = opts(&out, &[Format::Csv]);
    o.csv_bom = true;
    run_export(&db, &o);
    let second = fs::read(out.join("reports.csv")).expect("csv");
    assert!(second.starts_with(b"\xEF\xBB\xBFvin,"));
    assert_eq!(&second[3..], &first[..]);
}

#[test]
fn export_command_works_beside_a_running_vmr() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = golden(dir.path());
    // Another vmr holds the state directory.
    let (_held, _) = Checkpoint::open(db.parent().expect("state dir")).expect("open");
    let out = dir.path().join("out");
    let assert = assert_cmd::Command::cargo_bin("vmr")
        .expect("binary")
        .args(["export", "--format", "parquet,csv", "--state"])
        .arg(db.parent().expect("state dir"))
        .arg("--out")
        .arg(&out)
        .current_dir(dir.path())
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    assert!(stdout.contains("records"), "{stdout}");
    assert!(out.join("exceptions.parquet").exists());
    assert!(out.join("manifest.json").exists());
}

// ---- the commit protocol: manifest.json last, listing what it covers ----------------------

/// Checks that `manifest.json` lists exactly the table files in `out` it should, each with its
/// real rows and bytes, and returns it.
fn manifest_matches_the_files(out: &Path) -> Value {
    let manifest: Value =
        serde_json::from_slice(&fs::read(out.join("manifest.json")).expect("manifest"))
            .expect("manifest is JSON");
    let files = manifest["files"].as_array().expect("files");
    assert!(!files.is_empty());
    for f in files {
        let name = f["path"].as_str().expect("path");
        let path = out.join(name);
        let bytes = fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{name} listed but {e}"))
            .len();
        assert_eq!(f["bytes"], json!(bytes), "{name} bytes");
        let rows = match f["format"].as_str().expect("format") {
            "parquet" => read_parquet(&path).1.len(),
            "csv" => read_csv(&path).1.len(),
            "jsonl" => fs::read_to_string(&path).expect("jsonl").lines().count(),
            other => panic!("format {other}"),
        };
        assert_eq!(f["rows"], json!(rows), "{name} rows");
        let table = f["table"].as_str().expect("table");
        assert_eq!(
            name,
            format!("{table}.{}", f["format"].as_str().expect("format"))
        );
        if f["format"] != json!("jsonl") {
            assert_eq!(
                manifest["row_counts"][table],
                json!(rows),
                "{name} row count"
            );
        }
    }
    manifest
}

/// The names of the files a manifest lists, sorted.
fn listed(manifest: &Value) -> Vec<String> {
    let mut names: Vec<String> = manifest["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().expect("path").to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn manifest_lists_each_file_with_its_rows_and_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = golden(dir.path());
    let out = dir.path().join("out");
    let s = run_export(
        &db,
        &opts(&out, &[Format::Parquet, Format::Csv, Format::Jsonl]),
    );
    let manifest = manifest_matches_the_files(&out);
    let mut want: Vec<String> = schema::TABLES
        .iter()
        .flat_map(|t| [format!("{t}.parquet"), format!("{t}.csv")])
        .chain(["reports.jsonl".to_owned()])
        .collect();
    want.sort();
    assert_eq!(listed(&manifest), want);
    let records = manifest["files"]
        .as_array()
        .expect("files")
        .iter()
        .find(|f| f["path"] == json!("records.csv"))
        .expect("records.csv listed");
    assert_eq!(
        records,
        &json!({"path": "records.csv", "table": "records", "format": "csv", "rows": 4,
                "bytes": fs::metadata(out.join("records.csv")).expect("csv").len()})
    );
    // The summary lists the same files, the manifest last.
    assert_eq!(s.files.last(), Some(&out.join("manifest.json")));
    assert_eq!(s.files.len(), want.len() + 1);
}

#[test]
fn a_crash_between_renames_is_cleaned_up_by_the_next_export() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = golden(dir.path());
    let out = dir.path().join("out");
    run_export(&db, &opts(&out, &[Format::Parquet, Format::Csv]));

    // An export killed between its renames: it had taken the old manifest away, renamed
    // reports.csv into place (here: garbage, since its rows differ) and left the temporary
    // files it had not renamed yet. Its PID is a process that has exited.
    let mut dead = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let dead_pid = dead.id();
    dead.wait().expect("true exits");
    fs::remove_file(out.join("manifest.json")).expect("manifest");
    fs::write(out.join("reports.csv"), "vin\nhalf\n").expect("half state");
    let stale = [
        format!(".records.parquet.tmp-{dead_pid}"),
        format!(".manifest.json.tmp-{dead_pid}"),
        format!(".reports.jsonl.tmp-{dead_pid}"),
    ];
    for name in &stale {
        fs::write(out.join(name), b"partial").expect("stale temp");
    }
    // A temporary file of a process still running (an audit, say) is never touched.
    let mut live = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep");
    let live_temp = format!(".vehicle_flags.parquet.tmp-{}", live.id());
    fs::write(out.join(&live_temp), b"in progress").expect("live temp");
    // Something that only looks like a temporary file.
    fs::write(out.join(".notes.tmp-draft"), b"mine").expect("other file");

    // The next export (Parquet only this time) cleans up and commits a consistent folder.
    run_export(&db, &opts(&out, &[Format::Parquet]));
    let _ = live.kill();
    let _ = live.wait();
    for name in &stale {
        assert!(!out.join(name).exists(), "{name} was not cleaned up");
    }
    assert!(
        out.join(&live_temp).exists(),
        "a live process's temp was removed"
    );
    assert!(out.join(".notes.tmp-draft").exists());
    let manifest = manifest_matches_the_files(&out);
    let mut want: Vec<String> = schema::TABLES
        .iter()
        .map(|t| format!("{t}.parquet"))
        .collect();
    want.sort();
    // reports.csv is a leftover the manifest does not claim.
    assert_eq!(listed(&manifest), want);
    assert_eq!(manifest["formats"], json!(["parquet"]));
    assert_eq!(manifest["row_counts"]["reports"], json!(2));
}

/// An export that stops between its renames (here: one rename fails) has already taken the old
/// manifest away, so no manifest claims the mix of old and new tables left in the folder.
#[test]
fn an_export_stopped_between_renames_leaves_no_manifest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = golden(dir.path());
    let out = dir.path().join("out");
    run_export(&db, &opts(&out, &[Format::Parquet]));
    assert!(out.join("manifest.json").exists());
    let old_requests = fs::read(out.join("requests.parquet")).expect("requests");

    // A non-empty directory where records.parquet goes: its rename fails after requests' and
    // reports' succeeded.
    fs::remove_file(out.join("records.parquet")).expect("records");
    fs::create_dir_all(out.join("records.parquet").join("x")).expect("blocker");
    let c = Connection::open(&db).expect("sqlite");
    add_vin(
        &c,
        Vin {
            id: 50,
            vin: "LSVAB12345C000050",
            state: "rejected",
            message: Some("no image"),
            line: 50,
            ..Vin::default()
        },
    );
    drop(c);
    let snap = checkpoint::Snapshot::of(checkpoint::open_reader(&db).expect("reader"))
        .expect("a read transaction");
    let err = export(&snap, &opts(&out, &[Format::Parquet])).expect_err("the rename fails");
    assert!(err.to_string().contains("records.parquet"), "{err}");
    assert!(
        !out.join("manifest.json").exists(),
        "a manifest claims a half-renamed folder"
    );
    assert_ne!(
        fs::read(out.join("requests.parquet")).expect("requests"),
        old_requests,
        "the new requests table was renamed in before the failure"
    );
    // Nothing of the failed export is left aside.
    let temps: Vec<String> = fs::read_dir(&out)
        .expect("out")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");

    fs::remove_dir_all(out.join("records.parquet")).expect("unblock");
    run_export(&db, &opts(&out, &[Format::Parquet]));
    let manifest = manifest_matches_the_files(&out);
    assert_eq!(manifest["row_counts"]["requests"], json!(6));
}

#[test]
fn a_second_export_to_the_same_directory_waits_for_the_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = golden(dir.path());
    let out = dir.path().join("out");
    fs::create_dir_all(&out).expect("out");
    // Another export holds the directory.
    let held = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(out.join(".vmr-export.lock"))
        .expect("lock file");
    held.lock().expect("lock");
    let o = opts(&out, &[Format::Parquet]);
    let waiting = std::thread::spawn(move || run_export(&db, &o));
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert!(!waiting.is_finished(), "the second export did not wait");
    assert!(!out.join("manifest.json").exists());
    assert!(
        fs::read_dir(&out)
            .expect("out")
            .filter_map(|e| e.ok())
            .all(|e| !e.file_name().to_string_lossy().contains(".tmp-")),
        "the waiting export wrote before it had the lock"
    );
    held.unlock().expect("unlock");
    drop(held);
    let s = waiting.join().expect("export thread");
    assert_eq!(s.rows[0], ("requests".to_owned(), 5));
    manifest_matches_the_files(&out);

    // `vmr export` says in its log that it is waiting.
    let held = fs::File::options()
        .write(true)
        .open(out.join(".vmr-export.lock"))
        .expect("lock file");
    held.lock().expect("lock");
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("vmr"))
        .args(["export", "--format", "csv", "--state"])
        .arg(dir.path().join("state"))
        .arg("--out")
        .arg(&out)
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("vmr export starts");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    drop(held);
    let o = child.wait_with_output().expect("vmr export ends");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("waiting for another export"), "{stderr}");
    assert_eq!(manifest_matches_the_files(&out)["formats"], json!(["csv"]));
}

// ---- calls: one row per vendor call, for the billing statement -------------------------

#[allow(clippy::too_many_arguments)]
fn add_call(
    c: &Connection,
    id: i64,
    vin_id: i64,
    endpoint: &str,
    http_status: Option<i64>,
    code: Option<i64>,
    billed: bool,
    delivery: &str,
    task_no: Option<&str>,
    request_id: Option<&str>,
    started_at: i64,
) {
    c.execute(
        "INSERT INTO calls (id, vin_id, endpoint, request_id, http_status, code, msg, task_no,
            billed, delivery, started_at, ended_at, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL, ?7, ?8, ?9, ?10, ?11, NULL)",
        params![
            id,
            vin_id,
            endpoint,
            request_id,
            http_status,
            code,
            task_no,
            billed,
            delivery,
            started_at,
            started_at + 250
        ],
    )
    .expect("insert call");
}

#[test]
fn calls_table_has_a_row_per_call_with_its_class_and_attempt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = golden(dir.path());
    let c = Connection::open(&db).expect("sqlite");
    // V1: a generate never sent, one sent without an answer, one billed with the report.
    add_call(
        &c, 1, 1, "generate", None, None, false, "not_sent", None, None, T0,
    );
    add_call(
        &c,
        2,
        1,
        "generate",
        None,
        None,
        false,
        "unknown",
        None,
        None,
        T0 + 1000,
    );
    // V2: generate answered "pending" and billed, a 500, then gets: not ready, then the report.
    add_call(
        &c,
        3,
        2,
        "generate",
        Some(200),
        Some(200),
        true,
        "answered",
        Some("task-get-2"),
        Some("req-deferred-2"),
        T0 + 1500,
    );
    add_call(
        &c,
        4,
        1,
        "generate",
        Some(200),
        Some(200),
        true,
        "answered",
        Some("task-gen-1"),
        Some("req-inline-1"),
        T0 + 2000,
    );
    add_call(
        &c,
        5,
        2,
        "get",
        Some(500),
        None,
        false,
        "answered",
        None,
        Some("req-deferred-2"),
        T0 + 60_000,
    );
    add_call(
        &c,
        6,
        2,
        "get",
        Some(200),
        Some(701),
        false,
        "answered",
        Some("task-get-2"),
        Some("req-deferred-2"),
        T0 + 120_000,
    );
    add_call(
        &c,
        7,
        2,
        "get",
        Some(200),
        Some(200),
        true,
        "answered",
        Some("task-get-2"),
        Some("req-deferred-2"),
        T0 + 300_000,
    );
    // The 703: answered, not billed.
    add_call(
        &c,
        8,
        3,
        "generate",
        Some(200),
        Some(703),
        false,
        "answered",
        Some("task-gen-3"),
        None,
        T0 + 1000,
    );
    // A call whose VIN row is gone: kept, with no VIN.
    add_call(
        &c,
        9,
        99,
        "get",
        Some(200),
        Some(200),
        true,
        "answered",
        None,
        Some("req-x"),
        T0 + 400_000,
    );
    drop(c);

    let out = dir.path().join("out");
    let s = run_export(&db, &opts(&out, &[Format::Parquet, Format::Csv]));
    assert_eq!(s.rows.last(), Some(&("calls".to_owned(), 9)));
    let names: Vec<String> = schema::calls()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names.join(", "),
        "vin, endpoint, started_at, ended_at, http_status, code, class, task_no, request_id, attempt, purchase"
    );
    let ts = |ms: i64| {
        DateTime::from_timestamp_millis(T0 + ms)
            .expect("time")
            .to_rfc3339_opts(SecondsFormat::AutoSi, true)
    };
    let t: Vec<[String; 2]> = [0, 1000, 1500, 2000, 60_000, 120_000, 300_000, 1000, 400_000]
        .iter()
        .map(|ms| [ts(*ms), ts(ms + 250)])
        .collect();
    // Every call here is for the VIN's first purchase.
    let r = |i: usize, rest: [&'static str; 10]| -> Vec<String> {
        let mut row: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
        row[2] = t[i][0].clone();
        row[3] = t[i][1].clone();
        row.push("1".to_owned());
        row
    };
    let want = vec![
        r(0, [V1, "generate", "", "", "", "", "not_sent", "", "", "1"]),
        r(1, [V1, "generate", "", "", "", "", "unknown", "", "", "2"]),
        r(
            2,
            [
                V2,
                "generate",
                "",
                "",
                "200",
                "200",
                "billed",
                "task-get-2",
                "req-deferred-2",
                "1",
            ],
        ),
        r(
            3,
            [
                V1,
                "generate",
                "",
                "",
                "200",
                "200",
                "billed",
                "task-gen-1",
                "req-inline-1",
                "3",
            ],
        ),
        r(
            4,
            [
                V2,
                "get",
                "",
                "",
                "500",
                "",
                "not_billed",
                "",
                "req-deferred-2",
                "1",
            ],
        ),
        r(
            5,
            [
                V2,
                "get",
                "",
                "",
                "200",
                "701",
                "not_billed",
                "task-get-2",
                "req-deferred-2",
                "2",
            ],
        ),
        r(
            6,
            [
                V2,
                "get",
                "",
                "",
                "200",
                "200",
                "billed",
                "task-get-2",
                "req-deferred-2",
                "3",
            ],
        ),
        r(
            7,
            [
                "LRWYS6EU5LX274170",
                "generate",
                "",
                "",
                "200",
                "703",
                "not_billed",
                "task-gen-3",
                "",
                "1",
            ],
        ),
        r(
            8,
            ["", "get", "", "", "200", "200", "billed", "", "req-x", "1"],
        ),
    ];
    let (got_schema, got) = read_parquet(&out.join("calls.parquet"));
    assert_eq!(got_schema.fields(), schema::calls().fields());
    assert_eq!(got, want, "calls.parquet");
    let (header, got) = read_csv(&out.join("calls.csv"));
    assert_eq!(header, names);
    assert_eq!(got, want, "calls.csv");
    let manifest = manifest_matches_the_files(&out);
    assert_eq!(manifest["row_counts"]["calls"], json!(9));
}

#[test]
fn calls_table_streams_past_one_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = golden(dir.path());
    let mut c = Connection::open(&db).expect("sqlite");
    let tx = c.transaction().expect("tx");
    let n = 20_000;
    for i in 0..n {
        // Alternate two VINs and the two endpoints.
        let endpoint = if i % 4 < 2 { "generate" } else { "get" };
        add_call(
            &tx,
            i + 1,
            1 + i % 2,
            endpoint,
            Some(500),
            None,
            false,
            "answered",
            None,
            None,
            T0 + i,
        );
    }
    tx.commit().expect("commit");
    drop(c);
    let out = dir.path().join("out");
    run_export(&db, &opts(&out, &[Format::Parquet]));
    let (_, got) = read_parquet(&out.join("calls.parquet"));
    assert_eq!(got.len(), n as usize);
    // Each (VIN, endpoint) pair gets every fourth call: attempts 1, 2, 3, ... in call order.
    for (i, row) in got.iter().enumerate() {
        assert_eq!(row[9], (i / 4 + 1).to_string(), "row {i}");
    }
}

#[test]
fn manifest_names_the_account_and_the_vins_billed_without_a_usable_report() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = golden(dir.path());
    let out = dir.path().join("out");
    run_export(&db, &opts(&out, &[Format::Csv]));
    let manifest = manifest_matches_the_files(&out);
    assert_eq!(manifest["account"], Value::Null);
    assert_eq!(manifest["billed_unusable"], json!({"count": 0, "vins": []}));

    let c = Connection::open(&db).expect("sqlite");
    c.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('account', 'fleet-leasing')",
        [],
    )
    .expect("meta");
    for i in 0..105i64 {
        let state = if i == 3 { "done" } else { "failed" };
        // The engine's mark is the failure kind; the message only says it in words.
        let (message, failure) = match i {
            // A done VIN is never counted, whatever its message.
            3 => ("billed_unusable: the answer held no REPORT", None),
            4 => ("timeout", Some("vendor")),
            5 => ("not billed_unusable", Some("vendor")),
            6 => ("billedXunusable", Some("vendor")),
            // Says it, but the kind says otherwise: the kind decides.
            7 => (
                "billed_unusable: the answer held no REPORT",
                Some("abandoned"),
            ),
            _ => (
                "billed_unusable: the answer held no REPORT",
                Some("billed_unusable"),
            ),
        };
        add_vin(
            &c,
            Vin {
                id: 100 + i,
                vin: &format!("LSVAB12345C{:06}", 100 + i),
                url: Some("https://img.example.cn/x.jpg"),
                state,
                code: Some(200),
                message: Some(message),
                failure,
                submit_attempts: 1,
                billed_calls: 1,
                submitted_at: Some(T0),
                completed_at: Some(T0),
                line: 100 + i,
                ..Vin::default()
            },
        );
    }
    drop(c);
    let s = run_export(&db, &opts(&out, &[Format::Csv]));
    assert_eq!(s.billed_unusable, 100);
    assert!(
        s.render()
            .contains("100 VINs were billed without a usable report")
    );
    let manifest = manifest_matches_the_files(&out);
    assert_eq!(manifest["account"], json!("fleet-leasing"));
    assert_eq!(manifest["billed_unusable"]["count"], json!(100));
    let vins = manifest["billed_unusable"]["vins"]
        .as_array()
        .expect("vins");
    assert_eq!(vins.len(), 100);
    assert_eq!(vins[0], json!("LSVAB12345C000100"));
    assert_eq!(vins[3], json!("LSVAB12345C000108"));
}

/// Needs python3 with polars (`pip install polars`), so it runs on request:
/// `cargo test --test it export:: -- --ignored`.
#[test]
#[ignore = "needs python3 with polars"]
fn parquet_opens_in_polars_with_the_intended_dtypes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = golden(dir.path());
    let out = dir.path().join("out");
    run_export(&db, &opts(&out, &[Format::Parquet]));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/polars/check_dtypes.py");
    let o = std::process::Command::new("python3")
        .arg(&script)
        .arg(&out)
        .output()
        .expect("python3 runs");
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

// ---- property: any JSON value in any REPORT field converts or becomes null ----------------

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        ".{0,12}".prop_map(Value::String),
        "[-+]?[0-9]{0,25}(\\.[0-9]{0,25})?([eE][-+]?[0-9]{1,4})?".prop_map(Value::String),
        "[0-9]{4}[-/][0-9]{1,2}[-/][0-9]{1,2}( [0-9:]{0,8})?".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((".{0,6}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

const REPORT_FIELDS: &[&str] = &[
    "overview",
    "first_time_to_shop",
    "last_time_to_shop",
    "content_numbers",
    "brand_pic",
    "brand_name",
    "vinNO",
    "avg_upkeep_year",
    "avg_mileage_year",
    "total_mileage",
    "first_mileage",
    "last_mileage",
    "accident_grade",
    "is_accident",
    "is_accident_reason",
    "updatetime",
    "result_content",
    "unknown_field",
];
const RECORD_FIELDS: &[&str] = &[
    "date",
    "mainTainDate",
    "materal",
    "remark",
    "type",
    "content",
    "mileage",
    "type_code",
    "payType",
    "totalMoney",
];
const PART_FIELDS: &[&str] = &["is_exception", "label", "exceptions", "other"];

fn flatten_body(body: Vec<u8>) -> flatten::Flat {
    let row = SourceReport {
        vin: "LSVAB12345C000001".into(),
        request_id: Some("r".into()),
        task_no: None,
        endpoint: "get".into(),
        fetched_at: T0,
        body,
    };
    flatten::flatten(
        &[row],
        Want {
            tables: true,
            jsonl: true,
        },
    )
    .expect("flatten never fails on data")
}

/// The model's scalar and the view's, converted by the same kind, agree.
fn agree<K: Kind>(f: &Field<K>, s: &Scalar<'_>) -> bool
where
    K::Out: PartialEq,
{
    match (&f.value, s.to::<K>()) {
        (Lenient::Missing, Conv::Missing) | (Lenient::Invalid(_), Conv::Invalid) => true,
        (Lenient::Value(a), Conv::Value(b)) => *a == b,
        _ => false,
    }
}

fn agree_text(f: &Field<Text>, c: Conv<std::borrow::Cow<'_, str>>) -> bool {
    match (&f.value, c) {
        (Lenient::Missing, Conv::Missing) | (Lenient::Invalid(_), Conv::Invalid) => true,
        (Lenient::Value(a), Conv::Value(b)) => *a == b,
        _ => false,
    }
}

fn agree_decimal(f: &Field<Decimal>, s: &Scalar<'_>) -> bool {
    match (&f.value, s.decimal()) {
        (Lenient::Missing, Conv::Missing) | (Lenient::Invalid(_), Conv::Invalid) => true,
        (Lenient::Value(a), Conv::Value(b)) => *a == b,
        _ => false,
    }
}

/// Export reads the borrowed view; the owned reference model is the plain reading of the same
/// body. Both must see the same report in every body.
fn view_agrees_with_model(body: &[u8]) -> Result<(), String> {
    let model = parse_report::<Report>(Endpoint::Get, body);
    let view = parse_report::<ReportView<'_>>(Endpoint::Get, body);
    let (m, v) = match (model, view) {
        (Ok(Some(m)), Ok(Some(v))) => (m, v),
        (Ok(None), Ok(None)) | (Err(_), Err(_)) => return Ok(()),
        (m, v) => return Err(format!("model {:?} but view {:?}", m.is_ok(), v.is_ok())),
    };
    let checks = [
        (
            "first_time_to_shop",
            agree(&m.first_time_to_shop, &v.first_time_to_shop),
        ),
        (
            "last_time_to_shop",
            agree(&m.last_time_to_shop, &v.last_time_to_shop),
        ),
        (
            "content_numbers",
            agree(&m.content_numbers, &v.content_numbers),
        ),
        ("brand_pic", agree_text(&m.brand_pic, v.brand_pic.text())),
        ("brand_name", agree_text(&m.brand_name, v.brand_name.text())),
        ("vinNO", agree_text(&m.vin_no, v.vin_no.text())),
        (
            "avg_upkeep_year",
            agree(&m.avg_upkeep_year, &v.avg_upkeep_year),
        ),
        (
            "avg_mileage_year",
            agree(&m.avg_mileage_year, &v.avg_mileage_year),
        ),
        ("total_mileage", agree(&m.total_mileage, &v.total_mileage)),
        ("first_mileage", agree(&m.first_mileage, &v.first_mileage)),
        ("last_mileage", agree(&m.last_mileage, &v.last_mileage)),
        (
            "accident_grade",
            agree_text(&m.accident_grade, v.accident_grade.text()),
        ),
        ("is_accident", agree(&m.is_accident, &v.is_accident)),
        (
            "is_accident_reason",
            agree_text(&m.is_accident_reason, v.is_accident_reason.text()),
        ),
        ("updatetime", agree(&m.updatetime, &v.updatetime)),
    ];
    if let Some((name, _)) = checks.iter().find(|(_, ok)| !ok) {
        return Err(format!("{name} differs"));
    }
    // result_content: same shape, same slots, same values.
    match (&m.result_content, &v.result_content.0) {
        (Records::Absent, Held::Not(NotThere::Empty)) => {}
        (Records::Malformed(x), Held::Not(n)) => {
            let empty = x.is_null() || x.as_str().is_some_and(|s| s.trim().is_empty());
            if empty != (*n == NotThere::Empty) {
                return Err(format!("result_content {x} read as {n:?}"));
            }
        }
        (Records::List(ms), Held::Is(vs)) if ms.len() == vs.len() => {
            for (ms, vs) in ms.iter().zip(vs) {
                match (ms, vs) {
                    (RecordSlot::NotARecord(_), Slot::NotARecord) => {}
                    (RecordSlot::Record(a), Slot::Record(b)) => {
                        let ok = agree(&a.date, &b.date)
                            && agree(&a.maintain_date, &b.maintain_date)
                            && agree_text(&a.materal, b.materal.text())
                            && agree_text(&a.remark, b.remark.text())
                            && agree_text(&a.type_label, b.type_label.text())
                            && agree_text(&a.content, b.content.text())
                            && agree(&a.mileage, &b.mileage)
                            && agree(&a.type_code, &b.type_code)
                            && agree_text(&a.pay_type, b.pay_type.text())
                            && agree_decimal(&a.total_money, &b.total_money);
                        if !ok {
                            return Err(format!("record {a:?} read as {b:?}"));
                        }
                    }
                    (a, b) => return Err(format!("slot {a:?} read as {b:?}")),
                }
            }
        }
        (a, b) => return Err(format!("result_content {a:?} read as {b:?}")),
    }
    // overview: same parts in the same order, each read the same way.
    match (&m.overview, &v.overview.0) {
        (Shaped::Absent, Held::Not(NotThere::Empty)) => {}
        (Shaped::Malformed(x), Held::Not(n)) => {
            let empty = x.is_null() || x.as_str().is_some_and(|s| s.trim().is_empty());
            if empty != (*n == NotThere::Empty) {
                return Err(format!("overview {x} read as {n:?}"));
            }
        }
        (Shaped::Ok(map), Held::Is(parts)) if map.len() == parts.len() => {
            for ((key, value), (vkey, slot)) in map.iter().zip(parts) {
                if key != vkey {
                    return Err(format!("part {key} read as {vkey}"));
                }
                let ok = match (value, slot) {
                    (Value::Null, PartSlot::Null) => true,
                    (Value::Object(_), PartSlot::Part(p)) => {
                        let mp = OverviewPart::deserialize(value).map_err(|e| e.to_string())?;
                        let findings: Vec<String> = match &p.exceptions.0 {
                            Held::Is(list) => list
                                .iter()
                                .filter_map(|f| match f {
                                    Finding::Blank => None,
                                    Finding::Str(s) => Some(s.to_string()),
                                    Finding::Other(s) => Some(s.clone()),
                                })
                                .collect(),
                            Held::Not(_) => Vec::new(),
                        };
                        let same_shape = match (&mp.exceptions, &p.exceptions.0) {
                            (Shaped::Ok(a), Held::Is(b)) => a.len() == b.len(),
                            (Shaped::Absent, Held::Not(NotThere::Empty)) => true,
                            (Shaped::Malformed(x), Held::Not(n)) => {
                                let empty =
                                    x.is_null() || x.as_str().is_some_and(|s| s.trim().is_empty());
                                empty == (*n == NotThere::Empty)
                            }
                            _ => false,
                        };
                        agree(&mp.is_exception, &p.is_exception)
                            && agree_text(&mp.label, p.label.text())
                            && same_shape
                            && mp.findings() == findings
                    }
                    (Value::Null | Value::Object(_), _) => false,
                    (_, PartSlot::NotAPart) => true,
                    _ => false,
                };
                if !ok {
                    return Err(format!("part {key}: {value} read as {slot:?}"));
                }
            }
        }
        (a, b) => return Err(format!("overview {a:?} read as {b:?}")),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn any_value_in_any_field_converts_or_becomes_null(
        where_ in 0usize..3,
        field in 0usize..64,
        value in any_json(),
    ) {
        let mut report = vmr::sandbox::synth::report("LSVAB12345C000001", 7);
        let obj = report.as_object_mut().expect("synthetic report is an object");
        match where_ {
            0 => {
                obj.insert(REPORT_FIELDS[field % REPORT_FIELDS.len()].into(), value);
            }
            1 => {
                obj.insert(
                    "result_content".into(),
                    json!([{ RECORD_FIELDS[field % RECORD_FIELDS.len()]: value }]),
                );
            }
            _ => {
                obj.insert(
                    "overview".into(),
                    json!({ "appearance": { PART_FIELDS[field % PART_FIELDS.len()]: value } }),
                );
            }
        }
        let body = serde_json::to_vec(&json!({"code": 200, "data": report})).expect("serializes");
        let flat = flatten_body(body);
        prop_assert!(flat.bad.is_empty(), "{:?}", flat.bad);
        prop_assert_eq!(flat.batches[0].num_rows(), 1);
        prop_assert_eq!(flat.jsonl.iter().filter(|b| **b == b'\n').count(), 1);
    }

    #[test]
    fn export_view_reads_every_field_as_the_model_does(
        where_ in 0usize..4,
        field in 0usize..64,
        value in any_json(),
        dup in any_json(),
    ) {
        let mut report = vmr::sandbox::synth::report("LSVAB12345C000001", 7);
        let obj = report.as_object_mut().expect("synthetic report is an object");
        match where_ {
            0 => {
                obj.insert(REPORT_FIELDS[field % REPORT_FIELDS.len()].into(), value);
            }
            1 => {
                obj.insert(
                    "result_content".into(),
                    json!([{ RECORD_FIELDS[field % RECORD_FIELDS.len()]: value }, dup, {}]),
                );
            }
            2 => {
                obj.insert(
                    "overview".into(),
                    json!({ "appearance": { PART_FIELDS[field % PART_FIELDS.len()]: value },
                            "frame": dup }),
                );
            }
            _ => {
                obj.insert(
                    "overview".into(),
                    json!({ "engine": { "exceptions": [value, dup, "发动机：异响", ""] } }),
                );
            }
        }
        let body = serde_json::to_vec(&json!({"code": 200, "data": report})).expect("serializes");
        prop_assert!(view_agrees_with_model(&body).is_ok(), "{:?}", view_agrees_with_model(&body));
    }

    #[test]
    fn the_view_agrees_on_any_whole_report(value in any_json()) {
        let body = serde_json::to_vec(&json!({"code": 200, "data": value})).expect("serializes");
        prop_assert!(view_agrees_with_model(&body).is_ok(), "{:?}", view_agrees_with_model(&body));
    }

    #[test]
    fn any_value_as_the_whole_report_never_panics(value in any_json()) {
        let is_object = value.is_object();
        let body = serde_json::to_vec(&json!({"code": 200, "data": value})).expect("serializes");
        let flat = flatten_body(body);
        prop_assert_eq!(flat.batches[0].num_rows() + flat.bad.len(), 1);
        prop_assert_eq!(flat.batches[0].num_rows() == 1, is_object);
    }

    #[test]
    fn any_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..200)) {
        let flat = flatten_body(body);
        prop_assert_eq!(flat.batches[0].num_rows() + flat.bad.len(), 1);
    }
}

/// Export reads the reports a slice at a time with several slices being flattened at once, and
/// `requests` a page at a time between them: with more reports than fit in flight and more VINs
/// than one page, every table still holds each row once, in (VIN, version) order, and each
/// VIN's `report_version` is its newest report's (null for one with none), across pages.
#[test]
fn many_slices_and_pages_keep_every_row_once_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (db, mut c) = new_checkpoint(dir.path());
    let n: i64 = 3_000;
    let bad = 1_502;
    let vin = |i: i64| format!("LSVAB12345C{i:06}");
    let mut expected = Vec::new();
    let mut newest = Vec::new();
    let mut records = 0;
    let tx = c.transaction().expect("tx");
    for i in 1..=n {
        let v = vin(i);
        let rid = format!("r{i}");
        add_vin(
            &tx,
            Vin {
                id: i,
                vin: &v,
                request_id: Some(&rid),
                line: i,
                ..Vin::default()
            },
        );
        // Every sixth VIN has two versions; with slices of 400 reports, the two versions of
        // VIN 2,058 are the last report of one slice and the first of the next. Every seventh
        // (from the third) has none yet, VIN 2,048 among them, the last of the first page of
        // `requests`.
        let versions = match i {
            _ if i % 7 == 3 || i == 2_048 => 0,
            _ if i % 6 == 0 => 2,
            _ => 1,
        };
        newest.push(if versions == 0 {
            String::new()
        } else {
            versions.to_string()
        });
        for version in 1..=versions {
            if i == bad {
                add_report(&tx, i, &v, Some(&rid), None, "get", T0, b"{not json");
                continue;
            }
            let report = vmr::sandbox::synth::report(&v, (i * 10 + version) as u64);
            records += report["result_content"].as_array().map_or(0, Vec::len);
            let body = json!({"code": 200, "msg": "ok", "data": report}).to_string();
            add_report(&tx, i, &v, Some(&rid), None, "get", T0, body.as_bytes());
            expected.push((
                v.clone(),
                version.to_string(),
                (version == versions).to_string(),
            ));
        }
    }
    tx.commit().expect("commit");
    drop(c);
    let out = dir.path().join("out");
    let summary = run_export(&db, &opts(&out, &[Format::Parquet]));
    assert_eq!(summary.bad_bodies, 1);

    let (req_schema, requests) = read_parquet(&out.join("requests.parquet"));
    let want: Vec<String> = (1..=n).map(vin).collect();
    let got: Vec<String> = requests.iter().map(|r| r[0].clone()).collect();
    assert_eq!(got, want, "requests: every VIN once, in VIN-id order");
    let at = req_schema
        .index_of("report_version")
        .expect("report_version");
    let got: Vec<String> = requests.iter().map(|r| r[at].clone()).collect();
    assert!(got == newest, "requests: each VIN's newest report version");

    let (_, reports) = read_parquet(&out.join("reports.parquet"));
    let got: Vec<(String, String, String)> = reports
        .iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
        .collect();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "reports: each version once, in order");

    let (_, rec) = read_parquet(&out.join("records.parquet"));
    assert_eq!(rec.len(), records);
    let mut keys: Vec<(String, String)> =
        rec.iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    keys.dedup();
    let sorted = {
        let mut k = keys.clone();
        k.sort_by_key(|(v, version)| (v.clone(), version.parse::<i32>().unwrap_or(0)));
        k
    };
    assert_eq!(
        keys, sorted,
        "records: grouped by report, in (VIN, version) order"
    );
}
