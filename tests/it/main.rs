//! The integration tests, in one binary so the tree (polars, arrow, tokio…) is linked once, not
//! once per file. Each module is one area; `cargo test --test it engine::` runs one area.

mod api_samples;
mod audit;
mod audit_sql;
mod checkpoint;
mod common;
mod crash;
mod deploy;
mod engine;
mod export;
mod fuzz_corpus;
mod input;
mod input_formats;
mod lake;
mod layers;
mod money;
mod ops;
mod pg;
mod pg_faults;
mod pgserver;
mod price;
mod properties;
mod refresh;
mod sandbox;
