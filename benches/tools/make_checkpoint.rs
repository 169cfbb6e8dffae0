//! Benchmark helper (not a user command): makes a checkpoint of N sandbox reports, as `vmr run
//! --sandbox` would leave it, without the network: every VIN `done`, 30 % of reports stored as
//! inline generate bodies and the rest as get bodies.
//!
//! Usage: make_checkpoint STATE_DIR [N=100000] [SEED=1]

use rayon::prelude::*;
use rusqlite::{Connection, params};
use serde_json::json;
use std::path::PathBuf;
use vmr::checkpoint::{self, Checkpoint};
use vmr::sandbox::synth;

const WMIS: [&str; 8] = ["LSV", "LFV", "LHG", "LVH", "LBV", "LGB", "LFM", "LC0"];
const T0: i64 = 1_714_550_400_000;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let state = PathBuf::from(args.next().unwrap_or_else(|| "bench-state".into()));
    let n: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(100_000);
    let seed: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1);
    drop(Checkpoint::open(&state)?);
    let mut conn = Connection::open(checkpoint::db_path(&state))?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    let mut total_bytes = 0usize;
    for start in (0..n).step_by(5_000) {
        let end = (start + 5_000).min(n);
        let rows: Vec<(String, &str, Vec<u8>)> = (start..end)
            .into_par_iter()
            .map(|i| {
                let vin = format!("{}{:014}", WMIS[i % WMIS.len()], i);
                let report = synth::report(&vin, seed);
                let rid = format!("req-{i}");
                let (endpoint, body) = if i % 10 < 3 {
                    let b = json!({"msg": "成功", "code": 200, "taskNo": format!("task-{i}"),
                        "data": {"requestId": rid, "info": report}});
                    ("generate", b)
                } else {
                    let b = json!({"code": 200, "msg": "成功", "taskNo": format!("task-{i}"), "data": report});
                    ("get", b)
                };
                (vin, endpoint, serde_json::to_vec(&body).expect("a Value serializes"))
            })
            .collect();
        let tx = conn.transaction()?;
        {
            let mut vins = tx.prepare(
                "INSERT INTO vins (vin, license_img_url, state, code, message, request_id, task_no,
                    submit_attempts, poll_attempts, billed_calls, first_seen_at, submitted_at,
                    completed_at, input_file, input_line, batch_id)
                 VALUES (?1, ?2, 'done', 200, '成功', ?3, ?4, 1, ?5, ?6, ?7, ?8, ?9, 'bench.csv', ?10, 'bench')",
            )?;
            let mut reports = tx.prepare(
                "INSERT INTO reports (vin_id, version, purchase, vin, request_id, task_no, endpoint, fetched_at, body)
                 VALUES (?1, 1, 1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for (k, (vin, endpoint, body)) in rows.iter().enumerate() {
                let i = start + k;
                let polls = i64::from(*endpoint == "get");
                let t = T0 + i as i64;
                vins.execute(params![
                    vin,
                    format!("https://img.example.cn/{i}.jpg"),
                    format!("req-{i}"),
                    format!("task-{i}"),
                    polls,
                    1 + polls,
                    t,
                    t + 1_000,
                    t + 60_000,
                    i as i64 + 2
                ])?;
                let id = tx.last_insert_rowid();
                reports.execute(params![
                    id,
                    vin,
                    format!("req-{i}"),
                    format!("task-{i}"),
                    endpoint,
                    t + 60_000,
                    body
                ])?;
                total_bytes += body.len();
            }
        }
        tx.commit()?;
    }
    println!(
        "{n} reports, {:.1} MB of raw bodies, in {}",
        total_bytes as f64 / 1e6,
        checkpoint::db_path(&state).display()
    );
    Ok(())
}
