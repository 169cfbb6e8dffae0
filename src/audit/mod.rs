//! Audit: "which of these vehicles are not what the book says?", answered from the exported
//! tables.
//!
//! `vmr audit` reads the columns it needs of `<out>/{requests,reports,records,overview}.parquet`
//! (`frames`), computes per-vehicle flags with polars' lazy API (`flags`), grades them (`risk`),
//! summarises them per brand (`summary`) and writes `vehicle_flags` and `fleet_summary` beside
//! the inputs (Parquet and/or CSV, through export's writer) plus `audit.html` ([`html`]), each
//! file atomically. It never reads the checkpoint or the raw JSON, so every flag can be
//! reproduced with SQL on the tables: [`sql`] writes that SQL (`vmr audit --emit-sql DIALECT`).
//! Only [`run`] and its options, report and error are public; the steps are the crate's own.

mod changes;
mod flags;
mod fmt;
mod frames;
pub mod html;
mod risk;
pub(crate) mod sql;
mod summary;

use arrow_array::types::Date32Type;
use chrono::NaiveDate;
use polars::prelude::*;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::config::{Format, Settings};
use crate::export::write::{Staged, sync, sync_dir};
use flags::{FlagOptions, Tables};

/// The tables audit reads, all written by `vmr export`.
const INPUTS: [&str; 4] = ["requests", "reports", "records", "overview"];

/// Default `--rollback-tolerance-km`: odometer readings typed at the workshop are often off by
/// a few hundred km, a real rollback is thousands.
pub(crate) const DEFAULT_ROLLBACK_TOLERANCE_KM: i64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub(crate) enum AuditError {
    #[error(
        "{} not found: run `vmr export` first (with --format including parquet) so audit has the tables to read",
        .0.display()
    )]
    MissingTable(PathBuf),
    #[error("reading {}: {message}", path.display())]
    Read { path: PathBuf, message: String },
    #[error("{context}: {source}")]
    Polars {
        context: String,
        source: PolarsError,
    },
    #[error("writing {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
}

trait Context<T> {
    fn ctx(self, what: &str) -> Result<T, AuditError>;
}

impl<T> Context<T> for PolarsResult<T> {
    fn ctx(self, what: &str) -> Result<T, AuditError> {
        self.map_err(|source| AuditError::Polars {
            context: what.to_owned(),
            source,
        })
    }
}

/// Where to read and write, and the audit's parameters.
#[derive(Debug, Clone)]
pub(crate) struct AuditOptions {
    pub out: PathBuf,
    pub formats: Vec<Format>,
    pub csv_bom: bool,
    pub as_of: NaiveDate,
    pub rollback_tolerance_km: i64,
}

impl AuditOptions {
    pub(crate) fn from_settings(
        s: &Settings,
        as_of: NaiveDate,
        rollback_tolerance_km: i64,
    ) -> Self {
        AuditOptions {
            out: s.out.clone(),
            formats: s.formats.clone(),
            csv_bom: s.csv_bom,
            as_of,
            rollback_tolerance_km,
        }
    }
}

impl Tables {
    /// The exported Parquet tables in `dir`, the columns the audit uses, as lazy frames.
    pub(crate) fn scan(dir: &Path) -> Result<Tables, AuditError> {
        let [requests, reports, records, overview] =
            INPUTS.map(|name| dir.join(format!("{name}.parquet")));
        let scan = |path: PathBuf| -> Result<LazyFrame, AuditError> {
            if !path.is_file() {
                return Err(AuditError::MissingTable(path));
            }
            Ok(frames::read(&path)?.lazy())
        };
        // The four files side by side (records is most of the work).
        let ((requests, reports), (records, overview)) = rayon::join(
            || (scan(requests), scan(reports)),
            || (scan(records), scan(overview)),
        );
        let mut tables = Tables {
            requests: requests?,
            reports: reports?,
            records: records?,
            overview: overview?,
        };
        // Tables exported before versions hold one report per VIN: its first and latest.
        let what = format!("reading {}", dir.join("reports.parquet").display());
        let versioned = tables
            .reports
            .clone()
            .collect_schema()
            .ctx(&what)?
            .contains("is_latest");
        if !versioned {
            let first = |t: LazyFrame| t.with_column(lit(1i32).alias("version"));
            tables.reports = first(tables.reports).with_column(lit(true).alias("is_latest"));
            tables.records = first(tables.records);
            tables.overview = first(tables.overview);
        }
        Ok(tables)
    }

    /// The latest version of each VIN's report, and the rows of the other report tables that
    /// belong to it (joined on `(vin, version)`): the vehicle as it is today.
    pub(crate) fn latest(&self) -> Tables {
        let reports = self.reports.clone().filter(col("is_latest"));
        let keys = [col("vin"), col("version")];
        let latest = reports.clone().select(keys.clone());
        let join = |t: LazyFrame| {
            t.join(
                latest.clone(),
                keys.clone(),
                keys.clone(),
                JoinArgs::new(JoinType::Inner),
            )
        };
        Tables {
            requests: self.requests.clone(),
            records: join(self.records.clone()),
            overview: join(self.overview.clone()),
            reports,
        }
    }
}

/// Everything the audit computed, for the HTML page and the console summary.
pub struct Audit {
    pub(crate) as_of: NaiveDate,
    pub(crate) tolerance_km: i64,
    pub(crate) vehicle_flags: DataFrame,
    /// Why each row of `vehicle_flags` has its risk level, in the same order.
    pub(crate) reasons: Vec<Vec<risk::Reason>>,
    pub(crate) fleet_summary: DataFrame,
    pub(crate) requests: summary::RequestCounts,
}

impl Audit {
    pub(crate) fn count(&self, level: risk::RiskLevel) -> usize {
        self.reasons
            .iter()
            .filter(|r| risk::level_of(r) == level)
            .count()
    }

    /// VINs flagged with an odometer rollback.
    pub(crate) fn rollback_vins(&self) -> Result<Vec<String>, AuditError> {
        let df = &self.vehicle_flags;
        let vin = df.column("vin").and_then(|c| c.str()).ctx("vin")?;
        let flag = df
            .column("odometer_rollback")
            .and_then(|c| c.bool())
            .ctx("odometer_rollback")?;
        Ok((0..df.height())
            .filter(|i| flag.get(*i).unwrap_or(false))
            .filter_map(|i| vin.get(i).map(str::to_owned))
            .collect())
    }
}

/// Computes the audit from `tables` (no files written).
pub(crate) fn compute(
    tables: &Tables,
    as_of: NaiveDate,
    rollback_tolerance_km: i64,
) -> Result<Audit, AuditError> {
    let opts = FlagOptions {
        rollback_tolerance_km,
        as_of_days: Date32Type::from_naive_date(as_of),
    };
    // Each vehicle as its latest report shows it, and what changed since the one before.
    let plain = flags::plan(&tables.latest(), opts)
        .join(
            changes::plan(tables, rollback_tolerance_km),
            [col("vin")],
            [col("vin")],
            JoinArgs::new(JoinType::Left),
        )
        .with_columns([
            col("report_versions").fill_null(lit(1i32)),
            col("rollback_between_reports").fill_null(lit(false)),
        ])
        .sort(["vin"], SortMultipleOptions::default())
        .collect()
        .ctx("computing vehicle_flags")?;
    let (vehicle_flags, reasons) = flags::with_risk(plain).ctx("grading vehicle_flags")?;
    let requests = summary::request_counts(tables.requests.clone()).ctx("counting requests")?;
    let fleet_summary = summary::plan(&vehicle_flags, requests)
        .and_then(LazyFrame::collect)
        .ctx("computing fleet_summary")?;
    Ok(Audit {
        as_of,
        tolerance_km: rollback_tolerance_km,
        vehicle_flags,
        reasons,
        fleet_summary,
        requests,
    })
}

/// What `vmr audit` wrote.
pub(crate) struct AuditReport {
    pub(crate) audit: Audit,
    /// The files written, in the order they were committed.
    pub(crate) files: Vec<PathBuf>,
}

impl AuditReport {
    pub(crate) fn render(&self) -> String {
        use risk::RiskLevel::*;
        let a = &self.audit;
        let mut s = format!(
            "audit as of {}: {} vehicles with a report; risk high {}, medium {}, low {}; {} odometer rollback(s) over {} km\n",
            a.as_of,
            a.vehicle_flags.height(),
            a.count(High),
            a.count(Medium),
            a.count(Low),
            a.rollback_vins().map(|v| v.len()).unwrap_or(0),
            a.tolerance_km,
        );
        for f in &self.files {
            s.push_str(&format!("  wrote {}\n", f.display()));
        }
        s
    }
}

fn write_file(
    dir: &Path,
    name: &str,
    staged: &mut Vec<Staged>,
    body: impl FnOnce(&mut BufWriter<&File>) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    let (stage, file) = Staged::create(dir, name)?;
    let path = stage.tmp_path().to_owned();
    {
        let mut w = BufWriter::new(&file);
        body(&mut w)?;
        w.flush().map_err(|source| AuditError::Io {
            path: path.clone(),
            source,
        })?;
    }
    sync(&file, &path)?;
    staged.push(stage);
    Ok(())
}

fn write_table(
    o: &AuditOptions,
    name: &str,
    df: &DataFrame,
    staged: &mut Vec<Staged>,
) -> Result<(), AuditError> {
    let parquet = o.formats.contains(&Format::Parquet);
    let csv = o.formats.contains(&Format::Csv).then_some(o.csv_bom);
    frames::write(&o.out, name, df, parquet, csv, staged)
}

/// `vmr audit`: reads the tables in `o.out`, writes the audit beside them.
pub(crate) fn run(o: &AuditOptions) -> Result<AuditReport, AuditError> {
    let tables = Tables::scan(&o.out)?;
    let audit = compute(&tables, o.as_of, o.rollback_tolerance_km)?;
    let page = html::render(&audit).ctx("rendering audit.html")?;
    let mut staged = Vec::new();
    write_table(o, "vehicle_flags", &audit.vehicle_flags, &mut staged)?;
    write_table(o, "fleet_summary", &audit.fleet_summary, &mut staged)?;
    write_file(&o.out, "audit.html", &mut staged, |w| {
        w.write_all(page.as_bytes())
            .map_err(|source| AuditError::Io {
                path: o.out.join("audit.html"),
                source,
            })
    })?;
    // Renamed only once every file is complete, so a failed audit leaves the last one whole.
    let mut files = Vec::new();
    for s in staged {
        files.push(s.commit()?);
    }
    sync_dir(&o.out)?;
    Ok(AuditReport { audit, files })
}

#[cfg(test)]
mod tests;
