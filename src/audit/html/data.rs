//! The columns of `vehicle_flags` and `fleet_summary` that `audit.html` shows, read once into
//! plain structs.
//!
//! The page's sections then work on slices of these instead of polars columns, so every lookup
//! by column name and type happens here, in one place, and fails as one `PolarsError`.

use arrow_array::temporal_conversions::date32_to_datetime;
use chrono::NaiveDate;
use polars::prelude::*;

/// One vehicle of `vehicle_flags`, as the page shows it.
pub(crate) struct Row {
    pub(crate) vin: String,
    pub(crate) brand: Option<String>,
    pub(crate) status: Option<i32>,
    pub(crate) grade: Option<String>,
    pub(crate) last_visit: Option<NaiveDate>,
    pub(crate) total_km: Option<i64>,
    pub(crate) yearly_km: Option<f64>,
    pub(crate) spent: Option<f64>,
    /// Report versions bought (2 or more: the vehicle was bought again).
    pub(crate) versions: i32,
    /// Since the previous report (vehicles bought again).
    pub(crate) km_since_previous: Option<i64>,
    pub(crate) new_records: Option<i32>,
    pub(crate) became_accident: bool,
    pub(crate) new_structural: bool,
    pub(crate) rollback_between: bool,
}

/// The rows of `vehicle_flags`, in its order (the order of `Audit::reasons`).
pub(crate) fn rows(df: &DataFrame) -> PolarsResult<Vec<Row>> {
    let v = df
        .clone()
        .lazy()
        .select([
            col("vin"),
            col("brand_name"),
            col("accident_status").cast(DataType::Int32),
            col("accident_grade"),
            col("last_visit_date").cast(DataType::Int32),
            col("total_mileage_km"),
            col("avg_yearly_mileage_km"),
            col("total_spent").cast(DataType::Float64),
            col("report_versions").cast(DataType::Int32),
            col("km_since_previous").cast(DataType::Int64),
            col("new_records").cast(DataType::Int32),
            col("became_accident"),
            col("new_structural"),
            col("rollback_between_reports"),
        ])
        .collect()?;
    let vin = v.column("vin")?.str()?;
    let brand = v.column("brand_name")?.str()?;
    let status = v.column("accident_status")?.i32()?;
    let grade = v.column("accident_grade")?.str()?;
    let last = v.column("last_visit_date")?.i32()?;
    let km = v.column("total_mileage_km")?.i64()?;
    let yearly = v.column("avg_yearly_mileage_km")?.f64()?;
    let spent = v.column("total_spent")?.f64()?;
    let versions = v.column("report_versions")?.i32()?;
    let since = v.column("km_since_previous")?.i64()?;
    let new_records = v.column("new_records")?.i32()?;
    let became = v.column("became_accident")?.bool()?;
    let structural = v.column("new_structural")?.bool()?;
    let between = v.column("rollback_between_reports")?.bool()?;
    Ok((0..v.height())
        .map(|i| Row {
            vin: vin.get(i).unwrap_or_default().to_owned(),
            brand: brand.get(i).map(str::to_owned),
            status: status.get(i),
            grade: grade.get(i).map(str::to_owned),
            last_visit: last.get(i).and_then(from_days),
            total_km: km.get(i),
            yearly_km: yearly.get(i),
            spent: spent.get(i),
            versions: versions.get(i).unwrap_or(1),
            km_since_previous: since.get(i),
            new_records: new_records.get(i),
            became_accident: became.get(i).unwrap_or(false),
            new_structural: structural.get(i).unwrap_or(false),
            rollback_between: between.get(i).unwrap_or(false),
        })
        .collect())
}

/// A date stored as days since 1970-01-01 (polars' Date, Arrow's Date32); `None` out of range.
fn from_days(days: i32) -> Option<NaiveDate> {
    date32_to_datetime(days).map(|t| t.date())
}

/// One row of `fleet_summary`, as the page uses it.
pub(crate) struct Fleet {
    pub(crate) brand: Option<String>,
    pub(crate) reports: i64,
    pub(crate) accident_rate: Option<f64>,
    pub(crate) structural_rate: Option<f64>,
    pub(crate) rollback_rate: Option<f64>,
    pub(crate) median_km: Option<f64>,
    pub(crate) median_spent: Option<f64>,
    /// High, medium, low.
    pub(crate) risk: [i64; 3],
}

/// The brand rows of `fleet_summary` (in its order) and its total row.
pub(crate) fn fleet(df: &DataFrame) -> PolarsResult<(Vec<Fleet>, Option<Fleet>)> {
    let scope = df.column("scope")?.str()?;
    let brand = df.column("brand_name")?.str()?;
    let i = |name: &str| -> PolarsResult<Int64Chunked> { Ok(df.column(name)?.i64()?.clone()) };
    let f = |name: &str| -> PolarsResult<Float64Chunked> { Ok(df.column(name)?.f64()?.clone()) };
    let (reports, high, medium, low) = (
        i("reports_bought")?,
        i("high_risk")?,
        i("medium_risk")?,
        i("low_risk")?,
    );
    let (acc, structural, rollback, km, spent) = (
        f("accident_rate")?,
        f("structural_damage_rate")?,
        f("rollback_rate")?,
        f("median_yearly_km")?,
        f("median_total_spent")?,
    );
    let mut brands = Vec::new();
    let mut total = None;
    for r in 0..df.height() {
        let row = Fleet {
            brand: brand.get(r).map(str::to_owned),
            reports: reports.get(r).unwrap_or(0),
            accident_rate: acc.get(r),
            structural_rate: structural.get(r),
            rollback_rate: rollback.get(r),
            median_km: km.get(r),
            median_spent: spent.get(r),
            risk: [
                high.get(r).unwrap_or(0),
                medium.get(r).unwrap_or(0),
                low.get(r).unwrap_or(0),
            ],
        };
        if scope.get(r) == Some("total") {
            total = Some(row);
        } else {
            brands.push(row);
        }
    }
    Ok((brands, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_counted_from_1970_and_out_of_range_is_none() {
        let d = |y, m, d| NaiveDate::from_ymd_opt(y, m, d);
        assert_eq!(from_days(0), d(1970, 1, 1));
        assert_eq!(from_days(-1), d(1969, 12, 31));
        assert_eq!(from_days(19_753), d(2024, 1, 31));
        assert_eq!(from_days(i32::MAX), None);
    }
}
