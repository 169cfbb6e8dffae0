//! `vmr export`: write the tables from the checkpoint, without calling the vendor.
//!
//! Opens the checkpoint read-only (so it works while another vmr runs), exports to `--out` in
//! `--format`, prints the summary.

use anyhow::Result;

use crate::app::exit;
use crate::config::Settings;
use crate::export::{self, ExportOptions};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// With --layout hive: start a new history in an empty destination (refused where exports
    /// already are).
    #[arg(long)]
    full: bool,
}

pub(crate) fn run(args: Args, settings: &Settings) -> Result<u8> {
    let opts = ExportOptions {
        full: args.full,
        ..ExportOptions::from_settings(settings)
    };
    let summary = export::export_at(&settings.place, &opts)?;
    crate::app::print(&summary.render())?;
    Ok(exit::OK)
}
