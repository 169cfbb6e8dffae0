//! `vmr submit --input FILE`: ingest, then call generate for every VIN that has no report yet.

use anyhow::Result;
use std::path::PathBuf;

use crate::config::Settings;
use crate::pipeline::{self, Plan, PollMode};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The input (a CSV or similar, a spreadsheet, `-` for stdin, or s3://bucket/key);
    /// without it, only VINs already queued in the checkpoint are sent.
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
    /// Buy the failed VINs again (a new purchase each): all of them, or those whose last code
    /// or kind is listed (`702,billed_unusable`). With --input, only that input's VINs.
    #[arg(long, value_name = "CODES", num_args = 0..=1, value_delimiter = ',', default_missing_value = "")]
    pub retry_failed: Option<Vec<String>>,
    /// Buy the expired VINs again (a new purchase each). With --input, only that input's VINs.
    #[arg(long)]
    pub retry_expired: bool,
}

impl SendArgs {
    /// `--retry-failed`'s list, read: `None` when not given, an empty list for all failures.
    pub(crate) fn retry_failed(
        &self,
    ) -> anyhow::Result<Option<Vec<crate::checkpoint::FailedKind>>> {
        let Some(list) = &self.retry_failed else {
            return Ok(None);
        };
        let mut kinds = Vec::new();
        for item in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            let kind = item.parse().map_err(|e| {
                crate::app::Failure::new(crate::app::exit::USAGE, format!("--retry-failed: {e}"))
            })?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        Ok(Some(kinds))
    }
}

pub(crate) fn run(args: Args, settings: &Settings) -> Result<u8> {
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
            retry_failed: args.send.retry_failed()?,
            retry_expired: args.send.retry_expired,
        },
    )
}
