//! Command-line entry: parses the subcommand and hands it to `cmd::*`, mapping errors to exit
//! codes (docs/design.md: 0 done, 75 work remains, 2 usage/input, 3 refused, 1 anything else).

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use std::process::ExitCode;

use crate::app;
use crate::cmd;
use crate::config::{Options, Settings};

/// The command line: the options every subcommand shares, and the subcommand.
#[derive(Parser, Debug)]
#[command(
    name = "vmr",
    version,
    // A flag given twice takes its last value, as in most tools (a wrapper script's default
    // can then be overridden by appending).
    args_override_self = true,
    about = "Vehicle maintenance reports: buy, checkpoint and flatten Jumdata reports",
    long_about = "Buys one maintenance-history report per vehicle from the Jumdata API, checkpoints every call, and writes typed Parquet and CSV tables.\n\nCredentials come from VMR_APP_ID and VMR_APP_SECRET (or --app-secret-file); --sandbox runs against the built-in simulator instead."
)]
pub struct Cli {
    /// The options, from flags and `VMR_*` variables.
    #[command(flatten)]
    pub options: Options,
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// vmr's subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Ingest, submit, poll until done or --max-wait, then export.
    Run(cmd::run::Args),
    /// Validate the CSV and record new VINs in the checkpoint; calls nothing.
    Ingest(cmd::ingest::Args),
    /// Ingest, then call generate for every VIN without a report.
    Submit(cmd::submit::Args),
    /// Call get for each pending requestId that is due.
    Poll(cmd::poll::Args),
    /// Counts per state, billed calls, what is due when.
    Status(cmd::status::Args),
    /// Settle an uncertain VIN after checking the vendor's statement; calls nothing.
    Resolve(cmd::resolve::Args),
    /// Write the tables (Parquet, CSV, raw JSON lines) from the checkpoint; calls nothing.
    Export(cmd::export::Args),
    /// Risk flags per vehicle, a fleet summary and audit.html, from the exported tables.
    #[cfg(feature = "audit")]
    Audit(cmd::audit::Args),
    /// Serve the simulated vendor API on a local address.
    #[cfg(feature = "sandbox")]
    Sandbox(cmd::sandbox::Args),
    /// Look after the checkpoint: `vmr state backup PATH` copies it, even while another vmr
    /// writes it; `vmr state copy` moves it to PostgreSQL and back.
    State(cmd::state::Args),
}

/// Runs vmr with the process's arguments, and returns its exit code.
pub fn main() -> ExitCode {
    // Cli::try_parse, with the defaults (config::defaults) shown in the options' help.
    let mut cmd = Options::show_defaults(Cli::command());
    let cli = match cmd
        .try_get_matches_from_mut(std::env::args_os())
        .and_then(|mut m| Cli::from_arg_matches_mut(&mut m).map_err(|e| e.format(&mut cmd)))
    {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { app::exit::USAGE } else { 0 });
        }
    };
    let mut log_format = crate::config::LogFormat::Text;
    let result = Settings::resolve(&cli.options)
        .map_err(|e| anyhow::Error::new(app::Failure::new(app::exit::USAGE, format!("{e:#}"))))
        .and_then(|settings| {
            log_format = settings.log_format;
            app::init_logging(settings.log_format);
            match cli.command {
                Command::Run(a) => cmd::run::run(a, &settings),
                Command::Ingest(a) => cmd::ingest::run(a, &settings),
                Command::Submit(a) => cmd::submit::run(a, &settings),
                Command::Poll(a) => cmd::poll::run(a, &settings),
                Command::Status(a) => cmd::status::run(a, &settings),
                Command::Resolve(a) => cmd::resolve::run(a, &settings),
                Command::Export(a) => cmd::export::run(a, &settings),
                #[cfg(feature = "audit")]
                Command::Audit(a) => cmd::audit::run(a, &settings),
                #[cfg(feature = "sandbox")]
                Command::Sandbox(a) => cmd::sandbox::run(a, settings.app_secret_file.as_deref()),
                Command::State(a) => cmd::state::run(a, &settings),
            }
        });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            match log_format {
                crate::config::LogFormat::Json => {
                    tracing::error!(error = %format!("{e:#}"), "vmr failed")
                }
                crate::config::LogFormat::Text => eprintln!("vmr: {e:#}"),
            }
            ExitCode::from(app::exit_code_of(&e))
        }
    }
}
