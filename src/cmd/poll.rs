//! `vmr poll`: call get for each pending requestId that is due.

use anyhow::Result;

use crate::config::Settings;
use crate::pipeline::{self, Plan, PollMode};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Keep polling until nothing is pending or --max-wait has passed (default: one pass over
    /// what is due now).
    #[arg(long)]
    pub wait: bool,
}

pub fn run(args: Args, settings: &Settings) -> Result<u8> {
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
            dry_run: false,
            retry_failed: None,
            retry_expired: false,
        },
    )
}
