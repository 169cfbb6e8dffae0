//! `vmr ingest --input FILE`: validate the input and record new VINs; calls nothing, costs nothing.

use anyhow::Result;
use std::path::PathBuf;

use crate::app::{self, exit};
use crate::config::Settings;
use crate::ingest;
use crate::pipeline::input_options;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The input: a CSV (or semicolon, tab or pipe separated) file, a spreadsheet (xlsx, xls,
    /// xlsb, ods), `-` for stdin, or s3://bucket/key (VIN and licence image URL columns).
    #[arg(long, short)]
    pub input: PathBuf,
}

pub(crate) fn run(args: Args, settings: &Settings) -> Result<u8> {
    let reader = ingest::open_input(&args.input, &input_options(settings))?;
    let (ckpt, _) = app::open_checkpoint(settings)?;
    let run_id = ckpt.begin_run("ingest")?;
    for summary in ingest::ingest_input(&ckpt, reader)? {
        crate::app::print(&summary.render())?;
    }
    ckpt.end_run(run_id, exit::OK as i32, "ingested")?;
    Ok(exit::OK)
}
