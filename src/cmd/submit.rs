//! `vmr submit --input FILE`: ingest, then call generate for every VIN that has no report yet.

use anyhow::Result;
use std::path::PathBuf;

use crate::config::Settings;
use crate::pipeline::{self, Plan, PollMode};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The input CSV; without it, only VINs already queued in the checkpoint are sent.
    #[arg(long, short)]
    pub input: Option<PathBuf>,
    #[command(flatten)]
    pub send: SendArgs,
}

/// What `submit` and `run` share about sending.
#[derive(clap::Args, Debug)]
pub struct SendArgs {
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
            command: "submit",
            input: args.input,
            submit: true,
            poll: PollMode::Skip,
            export: false,
            resubmit_uncertain: args.send.resubmit_uncertain,
            dry_run: args.send.dry_run,
        },
    )
}
