//! One file per subcommand: parse options, call the library, return the exit code.

#[cfg(feature = "audit")]
pub(crate) mod audit;
pub(crate) mod export;
pub(crate) mod ingest;
pub(crate) mod poll;
pub(crate) mod resolve;
pub(crate) mod run;
#[cfg(feature = "sandbox")]
pub(crate) mod sandbox;
pub(crate) mod state;
pub(crate) mod status;
pub(crate) mod submit;
