//! Command-line entry: parses the subcommand and hands it to `cmd::*`, mapping errors to exit codes.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

use crate::cmd;

#[derive(Parser, Debug)]
#[command(
    name = "vmr",
    version,
    about = "Vehicle maintenance reports: buy, checkpoint, flatten"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the simulated vendor API on a local address.
    Sandbox(cmd::sandbox::Args),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Sandbox(args) => cmd::sandbox::run(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("vmr: {e:#}");
            ExitCode::from(1)
        }
    }
}
