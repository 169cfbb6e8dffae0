//! `vmr run --input FILE`: ingest, submit, poll until done or --max-wait, then export.

use anyhow::Result;
use std::path::PathBuf;

use crate::config::Settings;
use crate::pipeline::{self, Plan, PollMode};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The input CSV (VIN and licence image URL columns).
    #[arg(long, short)]
    pub input: PathBuf,
    /// Also send the VINs left uncertain by a crash (the vendor may already have billed them).
    #[arg(long)]
    pub resubmit_uncertain: bool,
    /// Print what would be sent, send nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(args: Args, settings: &Settings) -> Result<u8> {
    pipeline::execute(
        settings,
        &Plan {
            command: "run",
            input: Some(args.input),
            submit: true,
            poll: PollMode::UntilDone,
            export: true,
            resubmit_uncertain: args.resubmit_uncertain,
            dry_run: args.dry_run,
        },
    )
}
