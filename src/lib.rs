//! vmr: buy Jumdata vehicle maintenance reports, checkpoint every call, flatten to typed tables.
//!
//! The library holds the work; `cmd/` holds one thin file per subcommand. See docs/design.md for the
//! contract (commands, VIN states, tables, exit codes).

pub mod api;
pub mod app;
pub mod audit;
pub mod checkpoint;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod engine;
pub mod export;
pub mod ingest;
pub mod input;
pub mod pipeline;
pub mod resolve;
pub mod sandbox;
pub mod status;
