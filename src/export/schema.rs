//! The output tables as Arrow schemas: the one place that spells design.md's "Output
//! tables" contract (names, column order, types).
//!
//! Parquet and CSV are both written from these schemas, so the two formats cannot drift apart.
//! Times are millisecond timestamps in UTC (the checkpoint keeps milliseconds), which Parquet
//! stores as TIMESTAMP(MILLIS, isAdjustedToUTC = true).

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use std::sync::Arc;

/// The version of the exported tables' layout; bump it when a column changes.
pub const EXPORT_SCHEMA_VERSION: u32 = 1;

/// The tables, in the order they are listed.
pub const TABLES: [&str; 6] = [
    "requests",
    "reports",
    "records",
    "overview",
    "exceptions",
    "calls",
];

/// The tables flattened from the stored report bodies, in the order `flatten` hands out their
/// batches.
pub const REPORT_TABLES: [&str; 4] = ["reports", "records", "overview", "exceptions"];

/// `total_amount` precision and scale.
pub const AMOUNT_PRECISION: u8 = 18;
pub const AMOUNT_SCALE: i8 = 2;

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

fn schema(cols: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(
        cols.iter()
            .map(|(name, t)| Field::new(*name, t.clone(), true))
            .collect::<Vec<_>>(),
    ))
}

pub fn requests() -> SchemaRef {
    use DataType::*;
    schema(&[
        ("vin", Utf8),
        ("license_img_url", Utf8),
        ("status", Utf8),
        ("code", Int32),
        ("message", Utf8),
        ("request_id", Utf8),
        ("task_no", Utf8),
        ("submit_attempts", Int32),
        ("poll_attempts", Int32),
        ("billed_calls", Int32),
        ("first_seen_at", ts()),
        ("submitted_at", ts()),
        ("completed_at", ts()),
        ("input_file", Utf8),
        ("input_line", Int32),
    ])
}

pub fn reports() -> SchemaRef {
    use DataType::*;
    schema(&[
        ("vin", Utf8),
        ("request_id", Utf8),
        ("task_no", Utf8),
        ("brand_name", Utf8),
        ("brand_logo_url", Utf8),
        ("vin_masked", Utf8),
        ("first_visit_date", Date32),
        ("last_visit_date", Date32),
        ("first_visit_mileage_km", Int64),
        ("last_visit_mileage_km", Int64),
        ("total_mileage_km", Int64),
        ("avg_yearly_mileage_km", Float64),
        ("avg_yearly_services", Float64),
        ("record_count", Int32),
        ("accident_status", Int8),
        ("accident_grade", Utf8),
        ("accident_reason", Utf8),
        ("report_updated_date", Date32),
        ("fetched_at", ts()),
    ])
}

pub fn records() -> SchemaRef {
    use DataType::*;
    schema(&[
        ("vin", Utf8),
        ("request_id", Utf8),
        ("seq", Int32),
        ("visit_date", Date32),
        ("maintained_at", ts()),
        ("type_code", Int8),
        ("type_name", Utf8),
        ("type_label", Utf8),
        ("content", Utf8),
        ("materials", Utf8),
        ("remark", Utf8),
        ("mileage_km", Int64),
        ("pay_type", Utf8),
        ("total_amount", Decimal128(AMOUNT_PRECISION, AMOUNT_SCALE)),
    ])
}

pub fn overview() -> SchemaRef {
    use DataType::*;
    schema(&[
        ("vin", Utf8),
        ("request_id", Utf8),
        ("part", Utf8),
        ("label", Utf8),
        ("has_exception", Boolean),
        ("exception_count", Int32),
    ])
}

pub fn exceptions() -> SchemaRef {
    use DataType::*;
    schema(&[
        ("vin", Utf8),
        ("request_id", Utf8),
        ("part", Utf8),
        ("label", Utf8),
        ("seq", Int32),
        ("raw", Utf8),
        ("component", Utf8),
        ("finding", Utf8),
    ])
}

/// One row per vendor call in the checkpoint's call log, for reconciling with the vendor's
/// billing statement.
pub fn calls() -> SchemaRef {
    use DataType::*;
    schema(&[
        ("vin", Utf8),
        ("endpoint", Utf8),
        ("started_at", ts()),
        ("ended_at", ts()),
        ("http_status", Int32),
        ("code", Int32),
        ("class", Utf8),
        ("task_no", Utf8),
        ("request_id", Utf8),
        ("attempt", Int32),
    ])
}

/// The schema of table `name` (one of [`TABLES`]).
pub fn of(name: &str) -> Option<SchemaRef> {
    match name {
        "requests" => Some(requests()),
        "reports" => Some(reports()),
        "records" => Some(records()),
        "overview" => Some(overview()),
        "exceptions" => Some(exceptions()),
        "calls" => Some(calls()),
        _ => None,
    }
}
