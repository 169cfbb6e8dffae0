//! vmr: buy Jumdata vehicle maintenance reports, checkpoint every call, flatten them into typed
//! tables.
//!
//! # Layout
//!
//! A batch flows through the crate in one direction, and the stages meet only in the checkpoint:
//!
//! ```text
//! input file ─► input ─► ingest ─► checkpoint ◄─► engine ◄─► api ◄─► vendor (or sandbox)
//!                                     │
//!                                     └─► export ─► tables ─► audit
//! ```
//!
//! - [`input`]: reads the user's table (CSV and other separators, spreadsheets, from a path,
//!   stdin or an object store; encodings, header names, VIN and URL checks) and judges each row; `ingest` records the accepted VINs (and the rejected rows, with their reason).
//! - [`checkpoint`]: the SQLite file (or PostgreSQL schema) that is the only source of truth and
//!   the only module that speaks SQL: the VIN state machine (`checkpoint::state`), the
//!   group-commit writer, the directory lock, every call and body.
//! - `engine`: spends the user's money: rate limit, retries, the streaks that stop a run,
//!   the budget, signals; submit (generate) and poll (get) for one VIN at a time.
//! - [`api`]: signing, the HTTP client, and the classification of every answer (what may have
//!   been billed) in `api::outcome`; the REPORT's scalar rules and borrowed view.
//! - [`export`]: the checkpoint → Parquet / CSV / jsonl tables and their manifest; [`audit`]:
//!   fleet risk flags and audit.html from the exported tables.
//! - [`sandbox`]: a simulator of the vendor API beside all this, with faults and a ledger of
//!   what it billed; tests, benchmarks and new users talk to it.
//! - `pipeline` runs the stages in a row for `run`, `submit` and `poll`; `status` and `resolve`
//!   read and settle the checkpoint; [`config`] resolves options ([`price`] turns billed calls
//!   into money); `app` holds what every command shares (logging, exit codes, the account
//!   check); `monitor` writes the metrics file and sends the pings around each run; [`cli`] and
//!   `cmd/` are the command line, one thin file per subcommand.
//!
//! # Public boundary
//!
//! What the binary, the integration tests, the benchmarks and the fuzz targets use is public:
//! [`cli`] (the binary's entry), [`api`] (the wire, for the fuzz targets and benchmarks),
//! [`input`], [`checkpoint`], [`export`], [`config`] and [`price`] (the option types export
//! takes), [`sandbox`] and [`audit`]. The stages that only commands drive (`engine`, `ingest`,
//! `status`, `resolve`, `pipeline`, `monitor`, `app`, `cmd`) are private; `unreachable_pub`
//! keeps an item inside the crate from being marked `pub` where nothing outside can reach it.
//!
//! A VIN may be bought more than once (a refresh, a retry): the checkpoint keeps each purchase
//! and every report version, and the tables and the audit carry the versions.
//!
//! The contract these modules keep (VIN states, money rules, tables, exit codes) is written in
//! `docs/design.md`; the README and `docs/user-guide.md` say how to use it. Which module may use
//! which (the layers, held by `tests/it/layers.rs`) is `docs/architecture.md`.

#![warn(missing_docs)]

pub mod api;
mod app;
#[cfg(feature = "audit")]
pub mod audit;
pub mod checkpoint;
pub mod cli;
mod cmd;
pub mod config;
mod engine;
pub mod export;
#[doc(hidden)]
pub mod fuzz;
mod ingest;
pub mod input;
mod monitor;
mod pipeline;
pub mod price;
mod resolve;
#[cfg(feature = "sandbox")]
pub mod sandbox;
mod status;
pub(crate) mod sys;
