//! `vmr state backup PATH` and `vmr state copy --from A --to B`: look after the checkpoint.
//!
//! `backup` writes a consistent copy of the checkpoint to PATH with SQLite's `VACUUM INTO`, from
//! a read connection: it takes no lock, so it works while another vmr holds the state. PATH must
//! not exist (exit 2 if it does); the copy is written `0600`. Calls nothing.
//!
//! `copy` moves a checkpoint between a state directory and PostgreSQL (either way), every row of
//! every table, into an empty target only (exit 2 otherwise). Calls nothing.

use anyhow::Result;
use std::path::PathBuf;

use crate::app::{Failure, exit};
use crate::checkpoint::{self, CheckpointError};
use crate::config::Settings;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: StateCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum StateCommand {
    /// Write a consistent copy of the checkpoint to PATH (a new file, 0600), even while another
    /// vmr is writing it.
    Backup(BackupArgs),
    /// Copy a checkpoint between a state directory and PostgreSQL (either way): every VIN, call
    /// record, run and body, byte for byte, into an empty target.
    #[cfg(feature = "pg")]
    Copy(CopyArgs),
}

#[cfg(feature = "pg")]
#[derive(clap::Args, Debug)]
pub struct CopyArgs {
    /// The checkpoint to copy: a state directory or postgres://user@host:port/db?schema=NAME
    /// (the password from PGPASSWORD or ~/.pgpass, never in this URL).
    #[arg(long, value_name = "STATE")]
    pub from: String,
    /// Where to copy it: an empty state directory, or a PostgreSQL schema holding no checkpoint.
    #[arg(long, value_name = "STATE")]
    pub to: String,
}

#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// Where to write the copy; must not exist.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
}

pub(crate) fn run(args: Args, settings: &Settings) -> Result<u8> {
    match args.command {
        StateCommand::Backup(a) => backup(a, settings),
        #[cfg(feature = "pg")]
        StateCommand::Copy(a) => copy(a),
    }
}

#[cfg(feature = "pg")]
fn copy(args: CopyArgs) -> Result<u8> {
    use crate::checkpoint::copy::{self, CopyError, Place};
    let usage = |e: &dyn std::fmt::Display| Failure::new(exit::USAGE, e.to_string());
    let from = Place::parse(&args.from, true).map_err(|e| usage(&e))?;
    let to = Place::parse(&args.to, true).map_err(|e| usage(&e))?;
    match copy::copy(&from, &to) {
        Ok(c) => {
            let mut out = format!("copied {from} to {to}:");
            for (table, n) in &c.rows {
                out.push_str(&format!(" {table} {n},"));
            }
            out.push_str(&format!(" body bytes {}\n", c.body_bytes));
            out.push_str(&format!(
                "buy through one of them only from now on: both hold the same VINs, and {from} is unchanged\n"
            ));
            crate::app::print(&out)?;
            Ok(exit::OK)
        }
        Err(e) if e.is_usage() => Err(usage(&e).into()),
        Err(CopyError::Checkpoint(e)) => Err(e.into()),
        Err(e) => Err(e.into()),
    }
}

fn backup(args: BackupArgs, settings: &Settings) -> Result<u8> {
    let Some(dir) = settings.place.dir() else {
        return Err(Failure::new(
            exit::USAGE,
            "`vmr state backup` copies a state directory's checkpoint; for one in PostgreSQL use the database's own backups (pg_dump --schema), or `vmr state copy --to DIR`",
        )
        .into());
    };
    let source = checkpoint::db_path(dir);
    match checkpoint::backup(dir, &args.path) {
        Ok(b) => {
            crate::app::print(&format!(
                "backed up {} to {}: {} bytes, {} VINs, {} reports\n",
                source.display(),
                args.path.display(),
                b.bytes,
                b.vins,
                b.reports
            ))?;
            Ok(exit::OK)
        }
        Err(e @ CheckpointError::BackupExists(_)) => {
            Err(Failure::new(exit::USAGE, e.to_string()).into())
        }
        Err(e) => Err(e.into()),
    }
}
