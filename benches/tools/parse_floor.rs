//! Benchmark helper (not a user command): the serde_json floor for export. Reads every stored
//! body from a checkpoint into memory, then times parsing them all in parallel (rayon, as
//! export does) into `serde_json::Value`, and, as a lower floor, validating them only.
//!
//! Usage: parse_floor STATE_DIR

use rayon::prelude::*;
use std::path::PathBuf;
use std::time::Instant;
use vmr::checkpoint;

fn main() -> anyhow::Result<()> {
    let state = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "bench-state".into()),
    );
    let conn = checkpoint::open_reader(&checkpoint::db_path(&state))?;
    let t = Instant::now();
    let mut st = conn.prepare("SELECT body FROM reports ORDER BY vin_id")?;
    let bodies: Vec<Vec<u8>> = st.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    let read = t.elapsed().as_secs_f64();
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    let t = Instant::now();
    let ok = bodies
        .par_iter()
        .filter(|b| serde_json::from_slice::<serde_json::Value>(b).is_ok())
        .count();
    let value = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let valid = bodies
        .par_iter()
        .filter(|b| serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok())
        .count();
    let ignored = t.elapsed().as_secs_f64();
    let mb = bytes as f64 / 1e6;
    let n = bodies.len() as f64;
    println!(
        "parse_floor: {} bodies, {mb:.1} MB (read from SQLite in {read:.2}s)",
        bodies.len()
    );
    println!(
        "parse_floor: serde_json::Value   {value:.2}s  {:.0} MB/s  {:.0} reports/s  ({ok} ok)",
        mb / value,
        n / value
    );
    println!(
        "parse_floor: IgnoredAny (validate) {ignored:.2}s  {:.0} MB/s  {:.0} reports/s  ({valid} ok)",
        mb / ignored,
        n / ignored
    );
    println!("PARSE_FLOOR_SECONDS={value:.3}");
    Ok(())
}
