//! Killing vmr at any instant: SIGKILL mid-run (the checkpoint must let the next run continue
//! and tell which VINs may have been billed), SIGTERM (a clean stop), and SIGKILL during ingest.

use crate::common::*;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Stdio};
use std::time::Duration;
use vmr::sandbox::{Fate, SandboxConfig};

fn spawn(mut c: std::process::Command) -> Child {
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("vmr starts")
}

#[test]
fn sigkill_three_times_then_finish_buys_nothing_twice_but_the_uncertain() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        latency: Duration::from_millis(15),
        seed: 11,
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    let vins = vins(2000, 21);
    write_csv(&dir.join("in.csv"), &vins);
    let mut rng = rand::rng();
    let mut uncertain = BTreeSet::new();
    for _ in 0..3 {
        let mut child = spawn({
            let mut c = vmr_std(&dir, &sb);
            c.args(["run", "--input", "in.csv"]);
            c
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(300..2500)));
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        let now = in_flight(&dir);
        let new: BTreeSet<_> = now.difference(&uncertain).cloned().collect();
        assert!(new.len() <= 16, "{} VINs in flight at one crash", new.len());
        uncertain.extend(now);
    }
    // `status` lists the uncertain VINs once a process has opened the checkpoint again.
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(75);
    let out = vmr(&dir, &sb).args(["status", "--json"]).assert().code(0);
    let status: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).expect("JSON");
    let listed: BTreeSet<String> =
        serde_json::from_value(status["uncertain"].clone()).expect("uncertain list");
    assert_eq!(listed, uncertain);

    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--resubmit-uncertain"])
        .assert()
        .code(0);
    let ledger = sb.ledger();
    for (vin, billed) in &ledger.per_vin {
        if billed.generate > 1 {
            assert!(
                uncertain.contains(vin),
                "{vin} bought twice without being uncertain"
            );
        }
    }
    // A get in flight at a kill may be billed and lost; at most the in-flight calls per crash.
    let double_gets = ledger.per_vin.values().filter(|b| b.get > 1).count();
    assert!(double_gets <= 3 * 16, "{double_gets} reports fetched twice");
    // The final checkpoint is complete and right.
    let st = states(&dir);
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for v in &vins {
        let (s, code) = &st[v];
        *by_state.entry(s.as_str()).or_default() += 1;
        let want = match cfg.truth(v).fate {
            Fate::Inline | Fate::Deferred => ("done", Some(200)),
            Fate::Unsupported703 => ("failed", Some(703)),
            Fate::Fails702 => ("failed", Some(702)),
        };
        assert_eq!((s.as_str(), *code), want, "{v}");
    }
    assert_eq!(
        count(&dir, "SELECT count(*) FROM reports") as usize,
        by_state.get("done").copied().unwrap_or(0)
    );
}

#[test]
fn sigterm_stops_cleanly_with_143_and_a_rerun_finishes() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        latency: Duration::from_millis(20),
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    let vins = vins(1500, 22);
    write_csv(&dir.join("in.csv"), &vins);
    let mut child = spawn({
        let mut c = vmr_std(&dir, &sb);
        c.args(["run", "--input", "in.csv", "--metrics-file", "vmr.prom"]);
        c
    });
    std::thread::sleep(Duration::from_millis(1200));
    // SAFETY: sending a signal to our own child process.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let status = child.wait().expect("reaped");
    assert_eq!(status.code(), Some(143));
    // In-flight calls were let finish and recorded: nothing is left in flight.
    assert_eq!(
        count(&dir, "SELECT count(*) FROM vins WHERE state = 'submitting'"),
        0
    );
    assert_eq!(
        count(&dir, "SELECT count(*) FROM runs WHERE exit_code = 143"),
        1,
        "the run log records the stop"
    );
    // So does the metrics file, without a success time: none yet.
    let metrics = std::fs::read_to_string(dir.join("vmr.prom")).expect("metrics file written");
    assert!(
        metrics.contains("\nvmr_last_run_exit_code 143\n"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("vmr_last_success_timestamp_seconds"),
        "{metrics}"
    );
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(0);
    let ledger = sb.ledger();
    assert!(
        ledger
            .per_vin
            .values()
            .all(|b| b.generate <= 1 && b.get <= 1)
    );
    assert_eq!(states(&dir).len(), vins.len());
}

#[test]
fn a_second_sigint_stops_at_once_and_the_checkpoint_stays_consistent() {
    let (_t, dir) = tempdir();
    // Every call takes 8 s, so after one SIGINT vmr would wait out its 5 s grace.
    let cfg = SandboxConfig {
        latency: Duration::from_secs(8),
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    let vins = vins(64, 23);
    write_csv(&dir.join("in.csv"), &vins);
    let mut child = spawn({
        let mut c = vmr_std(&dir, &sb);
        c.args(["run", "--input", "in.csv", "--timeout", "10s"]);
        c
    });
    std::thread::sleep(Duration::from_millis(1000));
    let started = std::time::Instant::now();
    for _ in 0..2 {
        // SAFETY: sending a signal to our own child process.
        let rc = unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        assert_eq!(rc, 0);
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = child.wait().expect("reaped");
    assert_eq!(status.code(), Some(130));
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "the second SIGINT did not stop vmr at once"
    );
    // The calls cut off in flight are found at the next start and made uncertain; nothing is
    // lost or half-written.
    let out = vmr(&dir, &sb).args(["status", "--json"]).assert().code(0);
    let st: serde_json::Value =
        serde_json::from_slice(&out.get_output().stdout).expect("status is JSON");
    let uncertain = st["uncertain"].as_array().map(Vec::len).unwrap_or(0);
    assert!(uncertain > 0 && uncertain <= 16, "{uncertain} uncertain");
    let total: i64 = st["states"]
        .as_object()
        .expect("states")
        .values()
        .map(|v| v.as_i64().unwrap_or(0))
        .sum();
    assert_eq!(total, vins.len() as i64);
}

/// Every column of every VIN row but the time it was read.
fn vin_rows(dir: &std::path::Path) -> Vec<Vec<String>> {
    let conn = db(dir);
    let mut st = conn
        .prepare(
            "SELECT id, vin, coalesce(license_img_url,''), state, coalesce(message,''), input_file,
                    input_line, batch_id, coalesce(check_digit_ok, -1) FROM vins ORDER BY id",
        )
        .expect("query");
    // PostgreSQL's ids have gaps (a sequence value is spent by a row not inserted); the order
    // they give is what must match there.
    let first = if pg_backend() { 1 } else { 0 };
    st.query_map([], |r| {
        (first..9)
            .map(|i| {
                r.get::<_, rusqlite::types::Value>(i)
                    .map(|v| format!("{v:?}"))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .expect("rows")
    .collect::<Result<_, _>>()
    .expect("rows read")
}

#[test]
fn sigkill_during_ingest_then_rerun_equals_one_clean_ingest() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    let mut all = vins(150_000, 23);
    // Some bad rows and duplicates among them.
    all[10] = "SHORTVIN".into();
    all[70_000] = all[69_999].clone();
    write_csv(&dir.join("in.csv"), &all);
    let clean = dir.join("clean");
    std::fs::create_dir_all(&clean).expect("mkdir");
    std::fs::copy(dir.join("in.csv"), clean.join("in.csv")).expect("copy");
    vmr(&clean, &sb)
        .args(["ingest", "--input", "in.csv"])
        .assert()
        .code(0);

    let mut rng = rand::rng();
    for _ in 0..3 {
        let mut child = spawn({
            let mut c = vmr_std(&dir, &sb);
            c.args(["ingest", "--input", "in.csv"]);
            c
        });
        std::thread::sleep(Duration::from_millis(rng.random_range(50..1500)));
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }
    vmr(&dir, &sb)
        .args(["ingest", "--input", "in.csv"])
        .assert()
        .code(0);
    let (a, b) = (vin_rows(&dir), vin_rows(&clean));
    assert_eq!(a.len(), b.len());
    assert!(a == b, "the resumed checkpoint differs from a clean ingest");
    assert_eq!(sb.ledger().calls_total, 0, "ingest calls nothing");
}
