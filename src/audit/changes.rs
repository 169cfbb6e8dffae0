//! What changed since the previous report: for a vehicle bought two or more times, its latest
//! report version against the one before it (`version - 1`), from the same exported tables.
//!
//! Each column is a plain aggregate a user could rewrite in SQL over `(vin, version)`:
//! the highest `records.mileage_km`, the count of `records` and of repairs (`type_code` 2), the
//! report's `accident_status` and `accident_grade`, and whether a `frame` or `airbag` part of
//! `overview` has an exception. Vehicles with one version get nulls.

use polars::prelude::*;

use super::flags::Tables;

/// The change columns `vehicle_flags` gains, in order (the tests hold [`plan`] to them).
#[cfg(test)]
pub(crate) const COLUMNS: [&str; 8] = [
    "report_versions",
    "km_since_previous",
    "new_records",
    "new_repairs",
    "became_accident",
    "new_structural",
    "rollback_between_reports",
    "rollback_between_km",
];

/// Per (vin, version): the record aggregates.
fn record_facts(records: LazyFrame) -> LazyFrame {
    records.group_by([col("vin"), col("version")]).agg([
        len().cast(DataType::Int32).alias("n_records"),
        col("type_code")
            .eq(lit(2))
            .cast(DataType::Int32)
            .sum()
            .alias("n_repairs"),
        col("mileage_km").max().alias("top_km"),
    ])
}

/// Per (vin, version): a frame or airbag exception.
fn structural_facts(overview: LazyFrame) -> LazyFrame {
    let part = |p: &str| col("part").eq(lit(p));
    overview
        .filter(part("frame").or(part("airbag")))
        .group_by([col("vin"), col("version")])
        .agg([col("has_exception")
            .fill_null(lit(false))
            .any(true)
            .alias("structural")])
}

/// How bad an accident grade is: A 1 … D 4 (either case); null when it is not one of those.
fn grade_rank(grade: Expr) -> Expr {
    let is = |g: &str| {
        grade
            .clone()
            .eq(lit(g.to_owned()))
            .or(grade.clone().eq(lit(g.to_lowercase())))
    };
    when(is("A"))
        .then(lit(1i32))
        .when(is("B"))
        .then(lit(2i32))
        .when(is("C"))
        .then(lit(3i32))
        .when(is("D"))
        .then(lit(4i32))
        .otherwise(lit(NULL).cast(DataType::Int32))
}

/// One row per (vin, version) of `keys`, with what the report, its records and its overview
/// say.
fn version_facts(t: &Tables, keys: LazyFrame) -> LazyFrame {
    let left = || JoinArgs::new(JoinType::Left);
    let on = || [col("vin"), col("version")];
    keys.join(
        t.reports.clone().select([
            col("vin"),
            col("version"),
            col("accident_status").cast(DataType::Int32),
            grade_rank(col("accident_grade")).alias("grade_rank"),
        ]),
        on(),
        on(),
        left(),
    )
    .join(record_facts(t.records.clone()), on(), on(), left())
    .join(structural_facts(t.overview.clone()), on(), on(), left())
    .with_columns([
        col("n_records").fill_null(lit(0i32)),
        col("n_repairs").fill_null(lit(0i32)),
        col("structural").fill_null(lit(false)),
    ])
}

/// The change columns per VIN of every vehicle with two or more report versions; `t` holds
/// every version (`reports.is_latest` marks the newest).
pub(crate) fn plan(t: &Tables, tolerance_km: i64) -> LazyFrame {
    let latest = t
        .reports
        .clone()
        .filter(col("is_latest"))
        .select([col("vin"), col("version")])
        .filter(col("version").gt_eq(lit(2)));
    let previous = latest
        .clone()
        .select([col("vin"), (col("version") - lit(1)).alias("version")]);
    let now = version_facts(t, latest);
    let before = version_facts(t, previous).select([
        col("vin"),
        col("accident_status").alias("status_before"),
        col("grade_rank").alias("grade_before"),
        col("n_records").alias("records_before"),
        col("n_repairs").alias("repairs_before"),
        col("top_km").alias("top_km_before"),
        col("structural").alias("structural_before"),
    ]);
    let drop = col("top_km_before") - col("top_km");
    now.join(
        before,
        [col("vin")],
        [col("vin")],
        JoinArgs::new(JoinType::Inner),
    )
    .select([
        col("vin"),
        col("version")
            .cast(DataType::Int32)
            .alias("report_versions"),
        (col("top_km") - col("top_km_before")).alias("km_since_previous"),
        (col("n_records") - col("records_before")).alias("new_records"),
        (col("n_repairs") - col("repairs_before")).alias("new_repairs"),
        (col("accident_status")
            .eq(lit(1i32))
            .and(col("status_before").neq(lit(1i32)).fill_null(lit(true))))
        .or(col("grade_rank")
            .gt(col("grade_before"))
            .fill_null(lit(false)))
        .fill_null(lit(false))
        .alias("became_accident"),
        col("structural")
            .and(col("structural_before").not())
            .alias("new_structural"),
        drop.clone()
            .gt(lit(tolerance_km))
            .fill_null(lit(false))
            .alias("rollback_between_reports"),
        when(drop.clone().gt(lit(0i64)))
            .then(drop)
            .otherwise(lit(0i64))
            .cast(DataType::Int64)
            .alias("rollback_between_km"),
    ])
}
