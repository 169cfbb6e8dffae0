//! `vmr poll`: call get for each pending requestId that is due (with `--retry-expired`, the
//! expired ones' too, by the requestId already paid for).

use anyhow::Result;

use crate::config::Settings;
use crate::pipeline::{self, Plan, PollMode};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Keep polling until nothing is pending or --max-wait has passed (default: one pass over
    /// what is due now).
    #[arg(long)]
    pub wait: bool,
    /// Ask again for the reports of the expired VINs, by the requestId already paid for (a
    /// 701 costs nothing and expires the VIN again; nothing is bought again).
    #[arg(long)]
    pub retry_expired: bool,
    /// Print what would be polled, call nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub(crate) fn run(args: Args, settings: &Settings) -> Result<u8> {
    pipeline::execute(
        settings,
        &Plan {
            command: "poll",
            input: None,
            submit: false,
            poll: if args.wait {
                PollMode::UntilDone
            } else {
                PollMode::Once
            },
            export: false,
            resubmit_uncertain: false,
            dry_run: args.dry_run,
            retry_failed: None,
            retry_expired: args.retry_expired,
        },
    )
}
