//! `vmr run --input FILE`: ingest, submit, poll until done or --max-wait, then export.

use anyhow::Result;
use std::path::PathBuf;

use crate::cmd::submit::SendArgs;
use crate::config::Settings;
use crate::pipeline::{self, Plan, PollMode};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The input: a CSV (or semicolon, tab or pipe separated) file, a spreadsheet (xlsx, xls,
    /// xlsb, ods), `-` for stdin, or s3://bucket/key (VIN and licence image URL columns).
    #[arg(long, short)]
    pub input: PathBuf,
    #[command(flatten)]
    pub send: SendArgs,
}

pub(crate) fn run(args: Args, settings: &Settings) -> Result<u8> {
    pipeline::execute(
        settings,
        &Plan {
            command: "run",
            input: Some(args.input),
            submit: true,
            poll: PollMode::UntilDone,
            export: true,
            resubmit_uncertain: args.send.resubmit_uncertain,
            dry_run: args.send.dry_run,
            retry_failed: args.send.retry_failed()?,
            retry_expired: args.send.retry_expired,
        },
    )
}
