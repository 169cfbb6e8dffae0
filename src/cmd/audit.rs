//! `vmr audit`: per-vehicle risk flags, a fleet summary and an HTML report, from the tables
//! `vmr export` wrote to `--out`.
//!
//! Reads `<out>/{requests,reports,records,overview}.parquet`, writes `vehicle_flags` and
//! `fleet_summary` in `--format` (Parquet and/or CSV) and `audit.html` beside them. A missing
//! table is a usage error (exit 2): run `vmr export` first.
//!
//! With `--emit-sql DIALECT` it reads nothing: it prints the same rules as SQL views over the
//! exported tables (options baked in) for a lake engine to run, and exits 0.

use anyhow::Result;
use chrono::NaiveDate;

use crate::app::{Failure, exit};
use crate::audit::sql::{self, Dialect, SqlOptions};
use crate::audit::{self, AuditError, AuditOptions};
use crate::config::Settings;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A later reading this many km below an earlier one is an odometer rollback.
    #[arg(long, value_name = "KM", default_value_t = audit::DEFAULT_ROLLBACK_TOLERANCE_KM)]
    pub rollback_tolerance_km: i64,
    /// The audit date `days_since_last_visit` counts to, as YYYY-MM-DD [default: today].
    #[arg(long, value_name = "DATE")]
    pub as_of: Option<NaiveDate>,
    /// Print the audit as SQL views (vehicle_flags, fleet_summary) over the exported tables,
    /// for DIALECT, with the options above filled in, and exit; reads no export.
    #[arg(long, value_name = "DIALECT", value_enum)]
    pub emit_sql: Option<Dialect>,
}

pub(crate) fn run(args: Args, settings: &Settings) -> Result<u8> {
    if args.rollback_tolerance_km < 0 {
        return Err(Failure::new(exit::USAGE, "--rollback-tolerance-km must be 0 or more").into());
    }
    let as_of = args
        .as_of
        .unwrap_or_else(|| chrono::Local::now().date_naive());
    if let Some(dialect) = args.emit_sql {
        crate::app::print(&sql::emit(&SqlOptions {
            dialect,
            as_of,
            rollback_tolerance_km: args.rollback_tolerance_km,
        }))?;
        return Ok(exit::OK);
    }
    // The audit itself reads a local flat export; a lake is audited by its own engine.
    let remote = !matches!(
        crate::export::lake::Dest::parse(&settings.out),
        Ok(crate::export::lake::Dest::Local(_))
    );
    if remote || settings.layout == crate::config::Layout::Hive {
        return Err(Failure::new(
            exit::USAGE,
            format!(
                "vmr audit reads a local flat export (--layout flat in a directory), not {}; export one with `vmr export --out DIR`, or run the audit's rules on your lake's engine: vmr audit --emit-sql duckdb|spark|trino (docs/audit-sql.md)",
                if remote { "an object store" } else { "a hive layout" }
            ),
        )
        .into());
    }
    let opts = AuditOptions::from_settings(settings, as_of, args.rollback_tolerance_km);
    match audit::run(&opts) {
        Ok(report) => {
            crate::app::print(&report.render())?;
            Ok(exit::OK)
        }
        Err(e @ AuditError::MissingTable(_)) => {
            Err(Failure::new(exit::USAGE, e.to_string()).into())
        }
        Err(e) => Err(e.into()),
    }
}
