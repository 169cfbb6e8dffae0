//! `vmr export`: write the tables from the checkpoint, without calling the vendor.
//!
//! Opens the checkpoint read-only (so it works while another vmr runs), exports to `--out` in
//! `--format`, prints the summary.

use anyhow::Result;

use crate::app::exit;
use crate::checkpoint;
use crate::config::Settings;
use crate::export::{self, ExportOptions};

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args, settings: &Settings) -> Result<u8> {
    let path = checkpoint::db_path(&settings.state);
    let conn = checkpoint::open_reader(&path)?;
    let summary = export::export(&conn, &ExportOptions::from_settings(settings))?;
    crate::app::print(&summary.render())?;
    Ok(exit::OK)
}
