//! `vmr audit --emit-sql DIALECT`: the audit's rules written out as SQL views, so a lake engine
//! (DuckDB, Spark, Trino) can compute `vehicle_flags` and `fleet_summary` itself from the
//! exported tables, flat or hive, wherever they live.
//!
//! The SQL restates [`super::flags`], [`super::changes`], [`super::risk`] and
//! [`super::summary`] rule for rule: same columns in the same order, same types, same null
//! handling, same row order. Whatever changes the results (`--as-of`, the rollback tolerance) is
//! baked in as a literal, so the views need no parameters. Two things differ on purpose:
//!
//! - each VIN's latest version is the highest `version` among its `reports` rows, taken with
//!   `row_number()`, never the `is_latest` column: hive files do not carry it;
//! - SQL has no row order of its own, so each view ends in the `ORDER BY` of `vmr audit`'s
//!   table (engines that drop it from a view, like Trino, need it on the query; the docs say so).
//!
//! The integration tests `audit_sql` run the DuckDB text over a sandbox fleet and compare
//! every cell with `vmr audit`'s own tables (an ignored one does the same with the Spark text in
//! a local Spark); the Spark and Trino texts differ from the DuckDB one only where [`Dialect`]
//! says.

use chrono::NaiveDate;

use super::risk::STALE_DAYS;

/// The SQL engines `--emit-sql` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dialect {
    Duckdb,
    Spark,
    Trino,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Duckdb => "duckdb",
            Dialect::Spark => "spark",
            Dialect::Trino => "trino",
        }
    }

    /// `CREATE OR REPLACE … VIEW name AS`. Spark's views over temporary views (how
    /// tables read from files are usually registered there) must be temporary themselves.
    fn create_view(self, name: &str) -> String {
        match self {
            Dialect::Duckdb | Dialect::Trino => format!("CREATE OR REPLACE VIEW {name} AS"),
            Dialect::Spark => format!("CREATE OR REPLACE TEMP VIEW {name} AS"),
        }
    }

    /// Whole days from `start` to `end` (positive when `end` is later).
    fn days_between(self, start: &str, end: &str) -> String {
        match self {
            Dialect::Duckdb | Dialect::Trino => format!("date_diff('day', {start}, {end})"),
            // Spark's `date_diff`/`datediff` take the end first.
            Dialect::Spark => format!("datediff({end}, {start})"),
        }
    }

    /// The unbounded text type (Spark's `VARCHAR` needs a length).
    fn text(self) -> &'static str {
        match self {
            Dialect::Duckdb | Dialect::Trino => "VARCHAR",
            Dialect::Spark => "STRING",
        }
    }

    /// A string of every character Rust's `str::trim` removes (Unicode `White_Space`), for
    /// `TRIM(BOTH … FROM …)`: SQL's plain `trim` removes spaces only, or an engine's own idea
    /// of whitespace.
    fn whitespace(self) -> String {
        // U+3000 (ideographic space) is the last White_Space character.
        let chars: Vec<char> = (0..=0x3000u32)
            .filter_map(char::from_u32)
            .filter(|c| c.is_whitespace())
            .collect();
        match self {
            // Both engines' `chr` takes a Unicode code point.
            Dialect::Duckdb | Dialect::Trino => {
                let parts: Vec<String> = chars
                    .iter()
                    .map(|c| format!("chr({})", u32::from(*c)))
                    .collect();
                format!("concat({})", parts.join(", "))
            }
            // Spark's `chr` is ASCII only, and whether a literal's `\u` escapes are read depends
            // on `spark.sql.parser.escapedStringLiterals`: the UTF-8 bytes in hex mean the same
            // under any setting.
            Dialect::Spark => {
                let hex: String = chars
                    .iter()
                    .flat_map(|c| c.to_string().into_bytes())
                    .map(|b| format!("{b:02X}"))
                    .collect();
                format!("decode(unhex('{hex}'), 'UTF-8')")
            }
        }
    }
}

/// What `vmr audit` would be run with: everything that changes its results.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SqlOptions {
    pub(crate) dialect: Dialect,
    pub(crate) as_of: NaiveDate,
    pub(crate) rollback_tolerance_km: i64,
}

/// An `accident_grade` as `changes::grade_rank` ranks it: A 1 … D 4 in either case, as
/// written (not trimmed), else null.
fn grade_rank(grade: &str) -> String {
    let arms: Vec<String> = ["A", "B", "C", "D"]
        .iter()
        .enumerate()
        .map(|(i, g)| {
            format!(
                "WHEN {grade} IN ('{g}', '{}') THEN {}",
                g.to_lowercase(),
                i + 1
            )
        })
        .collect();
    format!("CASE {} END", arms.join(" "))
}

/// The `vehicle_flags` view.
fn vehicle_flags(o: &SqlOptions) -> String {
    let d = o.dialect;
    let as_of = format!("DATE '{}'", o.as_of.format("%Y-%m-%d"));
    let tolerance = o.rollback_tolerance_km;
    let create = d.create_view("vehicle_flags");
    let gap = d.days_between(
        "lag(visit_date) OVER (PARTITION BY vin ORDER BY visit_date NULLS FIRST)",
        "visit_date",
    );
    let days_since = d.days_between("f.last_visit_date", &as_of);
    let ws = d.whitespace();
    let grade = format!("TRIM(BOTH {ws} FROM f.accident_grade)");
    let rank_now = grade_rank("lr.accident_grade");
    let rank_before = grade_rank("pr.accident_grade");
    // Only a dated reading with a mileage can be placed in the odometer sequence.
    let placed = "visit_date IS NOT NULL AND mileage_km IS NOT NULL";
    format!(
        "{create}
WITH
-- The latest report of each VIN: its highest version (hive files have no is_latest column).
latest_report AS (
  SELECT vin, version, brand_name, accident_status, accident_grade, total_mileage_km,
         avg_yearly_mileage_km, last_visit_date
  FROM (
    SELECT vin, version, brand_name, accident_status, accident_grade, total_mileage_km,
           avg_yearly_mileage_km, last_visit_date,
           row_number() OVER (PARTITION BY vin ORDER BY version DESC) AS version_rank
    FROM reports
  ) ranked_reports
  WHERE version_rank = 1
),
latest_records AS (
  SELECT rec.vin AS vin, rec.seq AS seq, rec.visit_date AS visit_date,
         rec.maintained_at AS maintained_at, rec.type_code AS type_code,
         rec.mileage_km AS mileage_km, rec.total_amount AS total_amount
  FROM records rec
  JOIN latest_report lr ON rec.vin = lr.vin AND rec.version = lr.version
),
-- Each record with how far its reading falls below the highest earlier one (records ordered
-- by visit_date, maintained_at, seq, nulls first as vmr sorts them) and the days since the
-- dated visit before it.
record_steps AS (
  SELECT vin, visit_date, type_code, total_amount,
         CASE WHEN {placed} THEN
           max(CASE WHEN {placed} THEN mileage_km END) OVER (
             PARTITION BY vin
             ORDER BY visit_date NULLS FIRST, maintained_at NULLS FIRST, seq NULLS FIRST
             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
           ) - mileage_km
         END AS drop_km,
         {gap} AS gap_days
  FROM latest_records
),
record_facts AS (
  SELECT vin,
         max(drop_km) AS max_drop,
         max(gap_days) AS longest_gap_days,
         max(visit_date) AS last_record_date,
         count(*) AS record_count,
         sum(CASE WHEN type_code = 2 THEN 1 ELSE 0 END) AS repair_count,
         sum(total_amount) AS total_spent
  FROM record_steps
  GROUP BY vin
),
overview_facts AS (
  SELECT ov.vin AS vin,
         max(CASE WHEN ov.part IN ('frame', 'airbag') AND ov.has_exception THEN 1 ELSE 0 END) = 1
           AS structural_damage,
         max(CASE WHEN ov.part = 'engine' AND ov.has_exception THEN 1 ELSE 0 END) = 1
           AS engine_exception,
         sum(CASE WHEN ov.has_exception THEN 1 ELSE 0 END) AS exception_parts
  FROM overview ov
  JOIN latest_report lr ON ov.vin = lr.vin AND ov.version = lr.version
  GROUP BY ov.vin
),
-- Per report version: its records, repairs, highest reading, and any frame or airbag exception.
version_records AS (
  SELECT vin, version,
         count(*) AS n_records,
         sum(CASE WHEN type_code = 2 THEN 1 ELSE 0 END) AS n_repairs,
         max(mileage_km) AS top_km
  FROM records
  GROUP BY vin, version
),
version_structural AS (
  SELECT vin, version, max(CASE WHEN has_exception THEN 1 ELSE 0 END) = 1 AS structural
  FROM overview
  WHERE part IN ('frame', 'airbag')
  GROUP BY vin, version
),
-- A vehicle bought two or more times: its latest version against the one before.
version_changes AS (
  SELECT lr.vin AS vin,
         CAST(lr.version AS INTEGER) AS report_versions,
         CAST(nr.top_km - br.top_km AS BIGINT) AS km_since_previous,
         CAST(coalesce(nr.n_records, 0) - coalesce(br.n_records, 0) AS INTEGER) AS new_records,
         CAST(coalesce(nr.n_repairs, 0) - coalesce(br.n_repairs, 0) AS INTEGER) AS new_repairs,
         coalesce(
           (CAST(lr.accident_status AS INTEGER) = 1
              AND coalesce(CAST(pr.accident_status AS INTEGER) <> 1, TRUE))
           OR coalesce({rank_now} > {rank_before}, FALSE),
           FALSE
         ) AS became_accident,
         coalesce(ns.structural, FALSE) AND NOT coalesce(bs.structural, FALSE) AS new_structural,
         coalesce(br.top_km - nr.top_km > {tolerance}, FALSE) AS rollback_between_reports,
         CAST(CASE WHEN br.top_km - nr.top_km > 0 THEN br.top_km - nr.top_km ELSE 0 END AS BIGINT)
           AS rollback_between_km
  FROM latest_report lr
  LEFT JOIN reports pr ON pr.vin = lr.vin AND pr.version = lr.version - 1
  LEFT JOIN version_records nr ON nr.vin = lr.vin AND nr.version = lr.version
  LEFT JOIN version_records br ON br.vin = lr.vin AND br.version = lr.version - 1
  LEFT JOIN version_structural ns ON ns.vin = lr.vin AND ns.version = lr.version
  LEFT JOIN version_structural bs ON bs.vin = lr.vin AND bs.version = lr.version - 1
  WHERE lr.version >= 2
),
flags AS (
  SELECT lr.vin AS vin,
         lr.brand_name AS brand_name,
         CAST(lr.accident_status AS TINYINT) AS accident_status,
         lr.accident_grade AS accident_grade,
         coalesce(ofa.structural_damage, FALSE) AS structural_damage,
         coalesce(ofa.engine_exception, FALSE) AS engine_exception,
         coalesce(rf.max_drop > {tolerance}, FALSE) AS odometer_rollback,
         CAST(CASE WHEN rf.max_drop > 0 THEN rf.max_drop ELSE 0 END AS BIGINT) AS max_rollback_km,
         CAST(lr.total_mileage_km AS BIGINT) AS total_mileage_km,
         CAST(lr.avg_yearly_mileage_km AS DOUBLE) AS avg_yearly_mileage_km,
         CAST(coalesce(rf.last_record_date, lr.last_visit_date) AS DATE) AS last_visit_date,
         CAST(rf.longest_gap_days AS INTEGER) AS longest_gap_days,
         CAST(coalesce(rf.record_count, 0) AS INTEGER) AS record_count,
         CAST(coalesce(rf.repair_count, 0) AS INTEGER) AS repair_count,
         coalesce(CAST(rf.total_spent AS DECIMAL(18, 2)), CAST(0 AS DECIMAL(18, 2))) AS total_spent,
         CAST(coalesce(ofa.exception_parts, 0) AS INTEGER) AS exception_parts,
         coalesce(vc.report_versions, 1) AS report_versions,
         vc.km_since_previous AS km_since_previous,
         vc.new_records AS new_records,
         vc.new_repairs AS new_repairs,
         vc.became_accident AS became_accident,
         vc.new_structural AS new_structural,
         coalesce(vc.rollback_between_reports, FALSE) AS rollback_between_reports,
         vc.rollback_between_km AS rollback_between_km
  FROM latest_report lr
  LEFT JOIN record_facts rf ON rf.vin = lr.vin
  LEFT JOIN overview_facts ofa ON ofa.vin = lr.vin
  LEFT JOIN version_changes vc ON vc.vin = lr.vin
),
-- Which risk rules fire (the risk table in docs/audit.md, risk::assess in vmr).
graded AS (
  SELECT f.*,
         CAST({days_since} AS INTEGER) AS days_since_last_visit,
         coalesce(CAST(f.accident_status AS INTEGER) = 1, FALSE) AS r_accident,
         coalesce({grade} IN ('D', 'd'), FALSE) AS r_grade_d,
         coalesce({grade} IN ('C', 'c'), FALSE) AS r_grade_c,
         (f.accident_status IS NULL OR CAST(f.accident_status AS INTEGER) = 0)
           AND f.exception_parts > 0 AS r_unknown_with_exceptions
  FROM flags f
)
SELECT vin, brand_name, accident_status, accident_grade, structural_damage, engine_exception,
       odometer_rollback, max_rollback_km, total_mileage_km, avg_yearly_mileage_km,
       last_visit_date, days_since_last_visit, longest_gap_days, record_count, repair_count,
       total_spent, exception_parts, report_versions, km_since_previous, new_records, new_repairs,
       became_accident, new_structural, rollback_between_reports, rollback_between_km,
       CASE
         WHEN structural_damage OR odometer_rollback OR rollback_between_reports OR r_accident
           OR r_grade_d THEN 'high'
         WHEN engine_exception OR r_grade_c OR r_unknown_with_exceptions
           OR days_since_last_visit IS NULL OR days_since_last_visit > {STALE_DAYS} THEN 'medium'
         ELSE 'low'
       END AS risk_level,
       -- The reasons, high first, in the order of risk::assess, and empty when none fires.
       concat_ws(';',
         CASE WHEN structural_damage THEN 'structural_damage' END,
         CASE WHEN odometer_rollback THEN 'odometer_rollback' END,
         CASE WHEN rollback_between_reports THEN 'rollback_between_reports' END,
         CASE WHEN r_accident THEN 'accident' END,
         CASE WHEN r_grade_d THEN 'grade_d' END,
         CASE WHEN engine_exception THEN 'engine_exception' END,
         CASE WHEN r_grade_c THEN 'grade_c' END,
         CASE WHEN r_unknown_with_exceptions THEN 'accident_unknown_with_exceptions' END,
         CASE WHEN days_since_last_visit > {STALE_DAYS} THEN 'no_recent_visit' END,
         CASE WHEN days_since_last_visit IS NULL THEN 'no_visit_recorded' END
       ) AS risk_reasons
FROM graded
ORDER BY vin;
"
    )
}

/// The `fleet_summary` view: brand rows (most vehicles first), then the total row.
fn fleet_summary(o: &SqlOptions) -> String {
    let d = o.dialect;
    let create = d.create_view("fleet_summary");
    let text = d.text();
    // An exact median (the engines' own differ: Trino has only an approximate one): the mean
    // of the middle one or two non-null values, ranked within `scope` (nulls rank last).
    let median = |value: &str, rank: &str, n: &str| {
        format!("avg(CASE WHEN 2 * {rank} BETWEEN {n} AND {n} + 2 THEN {value} END)")
    };
    let share = |flag: &str| format!("avg(CASE WHEN {flag} THEN 1.0E0 ELSE 0.0E0 END)");
    let measures = |scope: &str| {
        format!(
            "count(*) AS reports_bought,
         {accident} AS accident_rate,
         {structural} AS structural_damage_rate,
         {rollback} AS rollback_rate,
         {yearly} AS median_yearly_km,
         {spent} AS median_total_spent,
         count(CASE WHEN risk_level = 'high' THEN 1 END) AS high_risk,
         count(CASE WHEN risk_level = 'medium' THEN 1 END) AS medium_risk,
         count(CASE WHEN risk_level = 'low' THEN 1 END) AS low_risk",
            accident = share("CAST(accident_status AS INTEGER) = 1"),
            structural = share("structural_damage"),
            rollback = share("odometer_rollback"),
            yearly = median(
                "yearly_km",
                &format!("yearly_rank_{scope}"),
                &format!("yearly_n_{scope}")
            ),
            spent = median(
                "spent",
                &format!("spent_rank_{scope}"),
                &format!("spent_n_{scope}")
            ),
        )
    };
    let brand_measures = measures("brand");
    let total_measures = measures("all");
    format!(
        "{create}
WITH
-- What requests says about the batch: input VINs that were not rejected, failed, expired.
request_counts AS (
  SELECT count(*) - count(CASE WHEN status = 'rejected' THEN 1 END) AS vehicles,
         count(CASE WHEN status = 'failed' THEN 1 END) AS failed,
         count(CASE WHEN status = 'expired' THEN 1 END) AS expired
  FROM requests
),
ranked AS (
  SELECT brand_name, accident_status, structural_damage, odometer_rollback, risk_level,
         avg_yearly_mileage_km AS yearly_km,
         CAST(total_spent AS DOUBLE) AS spent,
         row_number() OVER (PARTITION BY brand_name ORDER BY avg_yearly_mileage_km NULLS LAST)
           AS yearly_rank_brand,
         count(avg_yearly_mileage_km) OVER (PARTITION BY brand_name) AS yearly_n_brand,
         row_number() OVER (ORDER BY avg_yearly_mileage_km NULLS LAST) AS yearly_rank_all,
         count(avg_yearly_mileage_km) OVER () AS yearly_n_all,
         row_number() OVER (PARTITION BY brand_name ORDER BY total_spent NULLS LAST)
           AS spent_rank_brand,
         count(total_spent) OVER (PARTITION BY brand_name) AS spent_n_brand,
         row_number() OVER (ORDER BY total_spent NULLS LAST) AS spent_rank_all,
         count(total_spent) OVER () AS spent_n_all
  FROM vehicle_flags
),
brands AS (
  SELECT CAST('brand' AS {text}) AS scope,
         brand_name,
         count(*) AS vehicles,
         CAST(NULL AS BIGINT) AS failed,
         CAST(NULL AS BIGINT) AS expired,
         {brand_measures}
  FROM ranked
  GROUP BY brand_name
),
fleet AS (
  SELECT {total_measures}
  FROM ranked
),
summary_rows AS (
  SELECT 0 AS part, scope, brand_name, vehicles, reports_bought, failed, expired, accident_rate,
         structural_damage_rate, rollback_rate, median_yearly_km, median_total_spent, high_risk,
         medium_risk, low_risk
  FROM brands
  UNION ALL
  SELECT 1 AS part, CAST('total' AS {text}) AS scope, CAST(NULL AS {text}) AS brand_name,
         rc.vehicles, fl.reports_bought, rc.failed, rc.expired, fl.accident_rate,
         fl.structural_damage_rate, fl.rollback_rate, fl.median_yearly_km,
         fl.median_total_spent, fl.high_risk, fl.medium_risk, fl.low_risk
  FROM fleet fl
  CROSS JOIN request_counts rc
)
SELECT scope, brand_name, vehicles, reports_bought, failed, expired, accident_rate,
       structural_damage_rate, rollback_rate, median_yearly_km, median_total_spent, high_risk,
       medium_risk, low_risk
FROM summary_rows
ORDER BY part, vehicles DESC, brand_name NULLS LAST;
"
    )
}

/// The whole script: a header saying what it is, then both views.
pub(crate) fn emit(o: &SqlOptions) -> String {
    format!(
        "-- vmr audit --emit-sql {dialect} --as-of {as_of} --rollback-tolerance-km {tolerance}
-- (vmr {version}). Reads the relations requests, reports, records and overview, exported
-- tables flat or hive, any mix of report versions (the highest version of a VIN is its
-- latest), and creates the views vehicle_flags and fleet_summary, as `vmr audit` computes them.

{flags}
{summary}",
        dialect = o.dialect.name(),
        as_of = o.as_of.format("%Y-%m-%d"),
        tolerance = o.rollback_tolerance_km,
        version = env!("CARGO_PKG_VERSION"),
        flags = vehicle_flags(o),
        summary = fleet_summary(o),
    )
}

#[cfg(test)]
mod tests;
