//! One file per subcommand: parse options, call the library, return the exit code.

pub mod audit;
pub mod export;
pub mod ingest;
pub mod poll;
pub mod resolve;
pub mod run;
pub mod sandbox;
pub mod state;
pub mod status;
pub mod submit;
