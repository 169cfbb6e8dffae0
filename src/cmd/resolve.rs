//! `vmr resolve --vin V (--not-billed | --billed --request-id R | --abandon) [--note TEXT]`:
//! settle an uncertain VIN after checking the vendor's statement, without buying it again.
//!
//! `--not-billed` queues it to be sent again, `--billed --request-id R` makes it pending so the
//! next `vmr poll` fetches the report already paid for, `--abandon` ends it as failed with the
//! note as its reason. Every resolution is recorded in the checkpoint. Calls nothing.

use anyhow::Result;

use crate::app::{self, Failure, exit};
use crate::config::Settings;
use crate::resolve::{Resolution, ResolveError, resolve};

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["not_billed", "billed", "abandon"])))]
pub struct Args {
    /// The uncertain VIN (repeat for several).
    #[arg(long, required = true)]
    pub vin: Vec<String>,
    /// The vendor's statement shows no charge for it: send it again with the next submit.
    #[arg(long)]
    pub not_billed: bool,
    /// The vendor's statement shows it billed, under --request-id: fetch that report.
    #[arg(long, requires = "request_id")]
    pub billed: bool,
    /// The requestId the vendor's statement gives for the billed call.
    #[arg(long, value_name = "ID")]
    pub request_id: Option<String>,
    /// Give it up for good (kept in the requests table as failed, with the note as reason).
    #[arg(long)]
    pub abandon: bool,
    /// Why, for the record.
    #[arg(long, value_name = "TEXT")]
    pub note: Option<String>,
}

pub(crate) fn run(args: Args, settings: &Settings) -> Result<u8> {
    if args.billed && args.vin.len() > 1 {
        return Err(Failure::new(
            exit::USAGE,
            "--billed --request-id settles one VIN at a time",
        )
        .into());
    }
    let resolution = match (args.not_billed, args.billed, args.request_id) {
        (true, _, _) => Resolution::NotBilled,
        (_, true, Some(request_id)) if !request_id.trim().is_empty() => Resolution::Billed {
            request_id: request_id.trim().to_owned(),
        },
        (_, true, _) => {
            return Err(Failure::new(exit::USAGE, "--billed needs --request-id ID").into());
        }
        _ => Resolution::Abandon,
    };
    let (ckpt, _) = app::open_checkpoint(settings)?;
    for vin in &args.vin {
        match resolve(&ckpt, vin, resolution.clone(), args.note.clone()) {
            Ok(state) => app::print(&format!(
                "{}: uncertain -> {state}\n",
                vin.trim().to_uppercase()
            ))?,
            Err(e @ (ResolveError::NoSuchVin(_) | ResolveError::NotUncertain { .. })) => {
                return Err(Failure::new(exit::USAGE, e.to_string()).into());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(exit::OK)
}
