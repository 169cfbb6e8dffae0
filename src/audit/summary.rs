//! `fleet_summary`: one row per brand and one `total` row, from `vehicle_flags` and `requests`.
//!
//! Rates are shares of the vehicles with a report (the only ones whose brand and flags are
//! known). Failed and expired requests have no report and so no brand: they are counted on the
//! total row only and are null on brand rows.

use polars::prelude::*;

/// What `requests` says about the batch as a whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RequestCounts {
    /// Input VINs that were not rejected.
    pub(crate) vehicles: i64,
    pub(crate) failed: i64,
    pub(crate) expired: i64,
    pub(crate) rejected: i64,
}

pub(crate) fn request_counts(requests: LazyFrame) -> PolarsResult<RequestCounts> {
    let status = |s: &str| {
        col("status")
            .eq(lit(s))
            .fill_null(lit(false))
            .cast(DataType::Int64)
            .sum()
            .alias(s)
    };
    let df = requests
        .select([
            len().cast(DataType::Int64).alias("all"),
            status("failed"),
            status("expired"),
            status("rejected"),
        ])
        .collect()?;
    let get = |name: &str| -> PolarsResult<i64> { Ok(df.column(name)?.i64()?.get(0).unwrap_or(0)) };
    let rejected = get("rejected")?;
    Ok(RequestCounts {
        vehicles: get("all")? - rejected,
        failed: get("failed")?,
        expired: get("expired")?,
        rejected,
    })
}

fn share(flag: Expr) -> Expr {
    flag.fill_null(lit(false)).cast(DataType::Float64).mean()
}

fn count_of(level: &str) -> Expr {
    col("risk_level")
        .eq(lit(level))
        .cast(DataType::Int64)
        .sum()
        .alias(format!("{level}_risk"))
}

/// The aggregates every row carries, in column order after `vehicles`.
fn measures() -> Vec<Expr> {
    vec![
        len().cast(DataType::Int64).alias("reports_bought"),
        share(col("accident_status").eq(lit(1))).alias("accident_rate"),
        share(col("structural_damage")).alias("structural_damage_rate"),
        share(col("odometer_rollback")).alias("rollback_rate"),
        col("avg_yearly_mileage_km")
            .median()
            .alias("median_yearly_km"),
        col("total_spent")
            .cast(DataType::Float64)
            .median()
            .alias("median_total_spent"),
        count_of("high"),
        count_of("medium"),
        count_of("low"),
    ]
}

pub(crate) const COLUMNS: [&str; 14] = [
    "scope",
    "brand_name",
    "vehicles",
    "reports_bought",
    "failed",
    "expired",
    "accident_rate",
    "structural_damage_rate",
    "rollback_rate",
    "median_yearly_km",
    "median_total_spent",
    "high_risk",
    "medium_risk",
    "low_risk",
];

/// Brand rows (most vehicles first), then the total row.
pub(crate) fn plan(vehicle_flags: &DataFrame, counts: RequestCounts) -> PolarsResult<LazyFrame> {
    let null_i64 = || lit(Null {}).cast(DataType::Int64);
    let order = || COLUMNS.iter().map(|c| col(*c)).collect::<Vec<_>>();
    let brands = vehicle_flags
        .clone()
        .lazy()
        .group_by([col("brand_name")])
        .agg(measures())
        .with_columns([
            lit("brand").alias("scope"),
            col("reports_bought").alias("vehicles"),
            null_i64().alias("failed"),
            null_i64().alias("expired"),
        ])
        .sort_by_exprs(
            [col("vehicles"), col("brand_name")],
            SortMultipleOptions::default()
                .with_order_descending_multi([true, false])
                .with_nulls_last(true),
        )
        .select(order());
    let total = vehicle_flags
        .clone()
        .lazy()
        .select(measures())
        .with_columns([
            lit("total").alias("scope"),
            lit(Null {}).cast(DataType::String).alias("brand_name"),
            lit(counts.vehicles).cast(DataType::Int64).alias("vehicles"),
            lit(counts.failed).cast(DataType::Int64).alias("failed"),
            lit(counts.expired).cast(DataType::Int64).alias("expired"),
        ])
        .select(order());
    concat([brands, total], UnionArgs::default())
}
