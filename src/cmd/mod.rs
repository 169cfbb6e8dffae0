//! One file per subcommand: parse options, call the library, return the exit code.

#[cfg(feature = "audit")]
pub mod audit;
pub mod export;
pub mod ingest;
pub mod poll;
pub mod resolve;
pub mod run;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod state;
pub mod status;
pub mod submit;
