//! `vehicle_flags`: one row per vehicle with a report, every flag computed from the exported
//! tables with polars' lazy API (so a million records are scanned column by column, never
//! walked row by row in Rust).
//!
//! Each flag is a plain aggregate a user could rewrite in SQL: records are ordered per VIN by
//! `visit_date`, then `maintained_at`, then `seq`; a rollback is a reading below the running
//! maximum of the earlier readings by more than the tolerance. [`with_risk`] then grades the
//! collected rows with [`super::risk`].

use polars::prelude::*;

use super::risk::{self, Facts};

/// The four exported tables the audit reads, as lazy scans (or in-memory frames in tests).
#[derive(Clone)]
pub(crate) struct Tables {
    pub(crate) requests: LazyFrame,
    pub(crate) reports: LazyFrame,
    pub(crate) records: LazyFrame,
    pub(crate) overview: LazyFrame,
}

/// Parameters of the flags.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FlagOptions {
    /// A drop below the running maximum must exceed this to count as a rollback.
    pub(crate) rollback_tolerance_km: i64,
    /// Days since 1970-01-01 of the audit date (`days_since_last_visit` is relative to it).
    pub(crate) as_of_days: i32,
}

/// `total_spent` keeps the export's amount type.
fn amount_type() -> DataType {
    DataType::Decimal(18, 2)
}

/// Per-VIN aggregates of `records`.
fn record_facts(records: LazyFrame) -> LazyFrame {
    // Only a dated reading with a mileage can be placed in the sequence.
    let placed = col("visit_date")
        .is_not_null()
        .and(col("mileage_km").is_not_null());
    let km = col("mileage_km").filter(placed);
    let day = col("visit_date").cast(DataType::Int32).drop_nulls();
    records
        .select([
            col("vin"),
            col("seq"),
            col("visit_date"),
            col("maintained_at"),
            col("type_code"),
            col("mileage_km"),
            col("total_amount"),
        ])
        .sort_by_exprs(
            [
                col("vin"),
                col("visit_date"),
                col("maintained_at"),
                col("seq"),
            ],
            SortMultipleOptions::default().with_maintain_order(true),
        )
        .group_by_stable([col("vin")])
        .agg([
            // How far each reading falls below the highest earlier one (negative: above it).
            (km.clone().cum_max(false).shift(lit(1)) - km)
                .max()
                .alias("max_drop"),
            (day.clone() - day.shift(lit(1)))
                .max()
                .alias("longest_gap_days"),
            col("visit_date").max().alias("last_record_date"),
            len().alias("record_count"),
            col("type_code")
                .eq(lit(2))
                .cast(DataType::Int32)
                .sum()
                .alias("repair_count"),
            col("total_amount").sum().alias("total_spent"),
        ])
}

/// Per-VIN aggregates of `overview`.
fn overview_facts(overview: LazyFrame) -> LazyFrame {
    let part = |p: &str| col("part").eq(lit(p));
    let flagged = |cond: Expr| {
        col("has_exception")
            .filter(cond)
            .fill_null(lit(false))
            .any(true)
    };
    overview.group_by([col("vin")]).agg([
        flagged(part("frame").or(part("airbag"))).alias("structural_damage"),
        flagged(part("engine")).alias("engine_exception"),
        col("has_exception")
            .cast(DataType::Int32)
            .sum()
            .alias("exception_parts"),
    ])
}

/// The lazy plan of `vehicle_flags` without the risk columns, sorted by VIN: each report
/// joined with the aggregates of its records and overview parts.
pub(crate) fn plan(t: &Tables, o: FlagOptions) -> LazyFrame {
    let left = || JoinArgs::new(JoinType::Left);
    t.reports
        .clone()
        .select([
            col("vin"),
            col("brand_name"),
            col("accident_status"),
            col("accident_grade"),
            col("total_mileage_km"),
            col("avg_yearly_mileage_km"),
            col("last_visit_date").alias("report_last_visit_date"),
        ])
        .join(
            record_facts(t.records.clone()),
            [col("vin")],
            [col("vin")],
            left(),
        )
        .join(
            overview_facts(t.overview.clone()),
            [col("vin")],
            [col("vin")],
            left(),
        )
        .select(columns(o))
        .sort(["vin"], SortMultipleOptions::default())
}

/// The columns of `vehicle_flags` (before the risk columns), in order, from the joined report,
/// record and overview aggregates. A vehicle without records or parts gets zero counts and `false` flags.
fn columns(o: FlagOptions) -> Vec<Expr> {
    let last_visit = col("last_record_date").fill_null(col("report_last_visit_date"));
    vec![
        col("vin"),
        col("brand_name"),
        col("accident_status"),
        col("accident_grade"),
        col("structural_damage").fill_null(lit(false)),
        col("engine_exception").fill_null(lit(false)),
        col("max_drop")
            .gt(lit(o.rollback_tolerance_km))
            .fill_null(lit(false))
            .alias("odometer_rollback"),
        when(col("max_drop").gt(lit(0i64)))
            .then(col("max_drop"))
            .otherwise(lit(0i64))
            .cast(DataType::Int64)
            .alias("max_rollback_km"),
        col("total_mileage_km"),
        col("avg_yearly_mileage_km"),
        last_visit.clone().alias("last_visit_date"),
        (lit(o.as_of_days) - last_visit.cast(DataType::Int32))
            .cast(DataType::Int32)
            .alias("days_since_last_visit"),
        col("longest_gap_days").cast(DataType::Int32),
        col("record_count").fill_null(lit(0)).cast(DataType::Int32),
        col("repair_count").fill_null(lit(0)).cast(DataType::Int32),
        col("total_spent")
            .cast(amount_type())
            .fill_null(lit(0).cast(amount_type())),
        col("exception_parts")
            .fill_null(lit(0))
            .cast(DataType::Int32),
    ]
}

/// Reads the rule inputs of every row of a collected [`plan`].
fn facts(df: &DataFrame) -> PolarsResult<Vec<Facts>> {
    let status = df.column("accident_status")?.cast(&DataType::Int32)?;
    let status = status.i32()?;
    let grade = df.column("accident_grade")?.str()?;
    let structural = df.column("structural_damage")?.bool()?;
    let engine = df.column("engine_exception")?.bool()?;
    let rollback = df.column("odometer_rollback")?.bool()?;
    let drop = df.column("max_rollback_km")?.i64()?;
    let parts = df.column("exception_parts")?.i32()?;
    let days = df.column("days_since_last_visit")?.i32()?;
    let between = df.column("rollback_between_reports")?.bool()?;
    let between_km = df.column("rollback_between_km")?.i64()?;
    Ok((0..df.height())
        .map(|i| Facts {
            accident_status: status.get(i).and_then(|s| i8::try_from(s).ok()),
            accident_grade: grade.get(i).map(str::to_owned),
            structural_damage: structural.get(i).unwrap_or(false),
            engine_exception: engine.get(i).unwrap_or(false),
            odometer_rollback: rollback.get(i).unwrap_or(false),
            max_rollback_km: drop.get(i).unwrap_or(0),
            rollback_between_reports: between.get(i).unwrap_or(false),
            rollback_between_km: between_km.get(i).unwrap_or(0),
            exception_parts: parts.get(i).unwrap_or(0),
            days_since_last_visit: days.get(i).map(i64::from),
        })
        .collect())
}

/// Adds `risk_level` and `risk_reasons` (`;`-separated codes) to a collected [`plan`].
pub(crate) fn with_risk(mut df: DataFrame) -> PolarsResult<(DataFrame, Vec<Vec<risk::Reason>>)> {
    let reasons: Vec<Vec<risk::Reason>> = facts(&df)?.iter().map(risk::assess).collect();
    let levels: Vec<&str> = reasons.iter().map(|r| risk::level_of(r).as_str()).collect();
    let codes: Vec<String> = reasons
        .iter()
        .map(|r| r.iter().map(|x| x.code()).collect::<Vec<_>>().join(";"))
        .collect();
    df.with_column(Column::new("risk_level".into(), levels))?;
    df.with_column(Column::new("risk_reasons".into(), codes))?;
    Ok((df, reasons))
}
