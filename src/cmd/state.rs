//! `vmr state backup PATH`: look after the state directory.
//!
//! `backup` writes a consistent copy of the checkpoint to PATH with SQLite's `VACUUM INTO`, from
//! a read connection: it takes no lock, so it works while another vmr holds the state. PATH must
//! not exist (exit 2 if it does); the copy is written `0600`. Calls nothing.

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
}

#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    /// Where to write the copy; must not exist.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
}

pub fn run(args: Args, settings: &Settings) -> Result<u8> {
    match args.command {
        StateCommand::Backup(a) => backup(a, settings),
    }
}

fn backup(args: BackupArgs, settings: &Settings) -> Result<u8> {
    let source = checkpoint::db_path(&settings.state);
    match checkpoint::backup(&settings.state, &args.path) {
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
