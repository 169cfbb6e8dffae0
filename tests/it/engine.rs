//! The network engine end to end: the real `vmr` binary against the sandbox on a loopback
//! port, checked against the sandbox's own ledger of what it billed.

use crate::common::*;
use std::collections::BTreeMap;
use std::time::Duration;
use vmr::sandbox::{Fate, Ledger, SandboxConfig};

/// Every VIN ended as the sandbox's truth says, and nothing was bought twice.
fn assert_complete_and_billed_once(
    dir: &std::path::Path,
    cfg: &SandboxConfig,
    vins: &[String],
    ledger: &Ledger,
) {
    let states = states(dir);
    assert_eq!(states.len(), vins.len());
    let cut_twice = cut_short_twice(dir);
    for v in vins {
        let (state, code) = &states[v];
        let truth = cfg.truth(v);
        let want = match truth.fate {
            // Two get answers cut short (which might have been billed): failed, never a
            // third get. A VIN the vendor fails with 702 is polled too, so it can meet this
            // before its 702 arrives.
            Fate::Deferred | Fate::Fails702 if cut_twice.contains(v) => ("failed", None),
            Fate::Inline | Fate::Deferred => ("done", Some(200)),
            Fate::Unsupported703 => ("failed", Some(703)),
            Fate::Fails702 => ("failed", Some(702)),
        };
        assert_eq!((state.as_str(), *code), want, "{v}: {truth:?}");
        let billed = ledger.per_vin.get(v).cloned().unwrap_or_default();
        match truth.fate {
            Fate::Deferred | Fate::Fails702 if cut_twice.contains(v) => {
                assert_eq!((billed.generate, billed.get), (1, 0), "{v}")
            }
            Fate::Inline => assert_eq!((billed.generate, billed.get), (1, 0), "{v}"),
            Fate::Deferred => assert_eq!((billed.generate, billed.get), (1, 1), "{v}"),
            Fate::Fails702 => assert_eq!((billed.generate, billed.get), (1, 0), "{v}"),
            Fate::Unsupported703 => assert_eq!((billed.generate, billed.get), (0, 0), "{v}"),
        }
    }
    let done = states.values().filter(|(s, _)| s == "done").count() as i64;
    assert_eq!(count(dir, "SELECT count(*) FROM reports"), done);
    // The checkpoint's count of billed calls agrees with the vendor's.
    assert_eq!(
        count(dir, "SELECT count(*) FROM calls WHERE billed = 1") as u64,
        ledger.billed_total
    );
}

#[test]
fn clean_batch_every_vin_final_each_report_bought_once() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig::default();
    let sb = sandbox(cfg.clone());
    let mut vins = vins(2000, 1);
    vins.push(with_check_digit("LRWAB000000000001")); // 703: unsupported make
    write_csv(&dir.join("in.csv"), &vins);
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(0);
    assert_complete_and_billed_once(&dir, &cfg, &vins, &sb.ledger());
    // run ends with the export: every input VIN in requests, every report bought in reports.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("out/manifest.json")).expect("manifest written"),
    )
    .expect("manifest is JSON");
    let done = count(&dir, "SELECT count(*) FROM vins WHERE state = 'done'");
    assert_eq!(manifest["row_counts"]["requests"], vins.len(), "{manifest}");
    assert_eq!(manifest["row_counts"]["reports"], done, "{manifest}");
    for t in ["requests", "reports", "records", "overview", "exceptions"] {
        assert!(dir.join(format!("out/{t}.parquet")).exists(), "{t}.parquet");
        assert!(dir.join(format!("out/{t}.csv")).exists(), "{t}.csv");
    }

    // Running again buys nothing more.
    let before = sb.ledger();
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(0);
    assert_eq!(sb.ledger().billed_total, before.billed_total);
}

/// The VINs `vmr status --json` lists as uncertain.
pub(crate) fn uncertain(dir: &std::path::Path, sb: &vmr::sandbox::Sandbox) -> Vec<String> {
    let out = vmr(dir, sb).args(["status", "--json"]).assert().code(0);
    let st: serde_json::Value =
        serde_json::from_slice(&out.get_output().stdout).expect("status is JSON");
    st["uncertain"]
        .as_array()
        .expect("uncertain is a list")
        .iter()
        .map(|v| v.as_str().expect("a VIN").to_owned())
        .collect()
}

#[test]
fn faults_are_retried_unknown_generates_wait_as_uncertain_and_nothing_is_bought_twice() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        fault_rate: 0.2,
        stall: Duration::from_secs(3),
        seed: 7,
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    let vins = vins(600, 2);
    write_csv(&dir.join("in.csv"), &vins);
    let run = |extra: &[&str]| {
        vmr(&dir, &sb)
            .args(["run", "--input", "in.csv", "--timeout", "1s"])
            .args(["--max-attempts", "10", "--concurrency", "32"])
            .args(extra)
            .output()
            .expect("vmr runs")
            .status
            .code()
    };
    // Truncated bodies, dropped connections and stalls on generate may have been billed: those
    // VINs wait as uncertain (exit 75) until the user resubmits them, round after round.
    let mut code = run(&[]);
    let mut rounds = 0;
    let mut ever_uncertain = 0;
    loop {
        let listed = uncertain(&dir, &sb);
        if listed.is_empty() {
            break;
        }
        assert_eq!(code, Some(75), "uncertain VINs keep the run at 75");
        ever_uncertain += listed.len();
        rounds += 1;
        assert!(rounds <= 10, "uncertain VINs do not go away");
        code = run(&["--resubmit-uncertain"]);
    }
    assert_eq!(code, Some(0));
    assert!(ever_uncertain > 0, "some generates had an unknown outcome");
    let ledger = sb.ledger();
    assert!(ledger.faults > 0, "the sandbox injected faults");
    // The sandbox never bills a fault, so even the resubmitted VINs were bought exactly once.
    assert_complete_and_billed_once(&dir, &cfg, &vins, &ledger);
    assert!(
        count(
            &dir,
            "SELECT count(*) FROM calls WHERE billed = 0 AND code IS NULL"
        ) > 0
    );
}

#[test]
fn balance_exhausted_stops_the_run_and_a_rerun_finishes_without_double_buying() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        balance: Some(300),
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    let vins = vins(1000, 3);
    write_csv(&dir.join("in.csv"), &vins);
    let out = vmr(&dir, &sb)
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(3);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("603"), "{stderr}");
    assert!(stderr.contains("top up"), "{stderr}");
    assert_eq!(sb.ledger().billed_total, 300);
    // After the first 603 landed, only calls already in flight may have been sent.
    let first_603: i64 = count(&dir, "SELECT min(ended_at) FROM calls WHERE code = 603");
    let later = count(
        &dir,
        &format!("SELECT count(*) FROM calls WHERE started_at > {first_603}"),
    );
    assert!(later <= 16, "{later} calls started after the first 603");
    // Unsent VINs stay queued.
    assert!(count(&dir, "SELECT count(*) FROM vins WHERE state = 'queued'") > 0);

    sb.set_balance(None);
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(0);
    assert_complete_and_billed_once(&dir, &cfg, &vins, &sb.ledger());
}

#[test]
fn max_billed_caps_spending_and_exits_75() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    let vins = vins(200, 4);
    write_csv(&dir.join("in.csv"), &vins);
    vmr(&dir, &sb)
        .args(["submit", "--input", "in.csv", "--max-billed", "50"])
        .assert()
        .code(75);
    // Never exceeded. A generate is admitted only while a get is left for every pending
    // report, so beyond N only the generates already in flight (≤ concurrency) can have added
    // a pending report each.
    let billed = sb.ledger().billed_total as i64;
    let pending = count(&dir, "SELECT count(*) FROM vins WHERE state = 'pending'");
    assert!(billed <= 50, "{billed}");
    assert!(
        billed + pending <= 50 + 16,
        "{billed} billed, {pending} pending"
    );
    assert!(
        billed + pending >= 50 - 16,
        "the budget was used: {billed} + {pending}"
    );
    // A poll with a budget of exactly one get per pending report fetches them all.
    let before = sb.ledger().billed_total;
    vmr(&dir, &sb)
        .args(["poll", "--wait", "--max-billed", &pending.to_string()])
        .assert()
        .code(75);
    assert!(sb.ledger().billed_total - before <= pending as u64);
    assert_eq!(
        count(&dir, "SELECT count(*) FROM vins WHERE state = 'pending'"),
        0
    );
}

#[test]
fn dry_run_sends_nothing() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    let vins = vins(30, 5);
    write_csv(&dir.join("in.csv"), &vins);
    let out = vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--dry-run", "--rate", "10"])
        .assert()
        .code(0);
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(stdout.contains("30 VINs"), "{stdout}");
    assert_eq!(sb.ledger().calls_total, 0);
}

#[test]
fn submit_then_poll_as_separate_cron_stages() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig::default();
    let sb = sandbox(cfg.clone());
    let vins = vins(100, 6);
    write_csv(&dir.join("in.csv"), &vins);
    // Deferred reports remain after submit: work remains.
    vmr(&dir, &sb)
        .args(["submit", "--input", "in.csv"])
        .assert()
        .code(75);
    assert_eq!(sb.ledger().get_billed, 0);
    // Each poll pass gets what is due; keep polling until everything is final.
    let mut code = 75;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(50));
        code = vmr(&dir, &sb)
            .arg("poll")
            .output()
            .expect("poll runs")
            .status
            .code()
            .unwrap_or(-1);
        if code == 0 {
            break;
        }
        assert_eq!(code, 75);
    }
    assert_eq!(code, 0);
    assert_complete_and_billed_once(&dir, &cfg, &vins, &sb.ledger());
}

#[test]
fn vendor_404_and_unreachable_address() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    write_csv(&dir.join("in.csv"), &vins(5, 7));
    // A base URL whose paths do not exist answers 404: stop at once, exit 3.
    let out = vmr(&dir, &sb)
        .args([
            "run",
            "--input",
            "in.csv",
            "--base-url",
            &format!("{}/wrong", sb.base_url()),
        ])
        .assert()
        .code(3);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("404"), "{stderr}");
    assert_eq!(
        count(&dir, "SELECT count(*) FROM vins WHERE state = 'queued'"),
        5
    );
}

#[test]
fn the_secret_and_signs_never_reach_logs_or_errors() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    write_csv(&dir.join("in.csv"), &vins(20, 8));
    let wrong = "not-the-sandbox-secret-4711";
    for format in ["text", "json"] {
        let out = vmr(&dir, &sb)
            .env("VMR_APP_SECRET", wrong)
            .env("RUST_LOG", "debug")
            .args(["run", "--input", "in.csv", "--log-format", format])
            .output()
            .expect("vmr runs");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains(wrong), "secret leaked: {all}");
        // No 64-hex-digit sign appears either.
        assert!(
            !all.split(|c: char| !c.is_ascii_hexdigit())
                .any(|w| w.len() == 64),
            "a sign leaked: {all}"
        );
    }
    // The vendor rejected the sign (400) again and again: the run stopped, and no VIN was
    // failed for it (each stays queued, with the vendor's 400 as its last code).
    let st = states(&dir);
    assert!(
        st.values()
            .all(|(s, c)| s == "queued" && (c.is_none() || *c == Some(400))),
        "{st:?}"
    );
    assert_eq!(sb.ledger().billed_total, 0);
}

#[test]
fn status_reports_counts_and_billing_as_json() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    let vins = vins(50, 9);
    write_csv(&dir.join("in.csv"), &vins);
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(0);
    let out = vmr(&dir, &sb).args(["status", "--json"]).assert().code(0);
    let v: serde_json::Value =
        serde_json::from_slice(&out.get_output().stdout).expect("JSON status");
    assert_eq!(v["total_vins"], 50);
    assert_eq!(v["billed_total"].as_u64(), Some(sb.ledger().billed_total));
    let states: BTreeMap<String, i64> =
        serde_json::from_value(v["states"].clone()).expect("states");
    assert_eq!(states["done"] + states["failed"], 50);
    assert_eq!(v["last_run"]["exit_code"], 0);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    write_csv(&dir.join("in.csv"), &vins(40, 10));
    let out = vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--log-format", "json"])
        .assert()
        .code(0);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v.get("level").is_some(), "{l}");
    }
    assert!(
        stderr.contains("this run:"),
        "the run summary is logged: {stderr}"
    );
}

#[test]
fn text_logs_carry_no_colour_codes_off_a_terminal() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    write_csv(&dir.join("in.csv"), &vins(40, 11));
    // stderr is a pipe here, as under cron; NO_COLOR is not set.
    let out = vmr(&dir, &sb)
        .env("RUST_LOG", "info")
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(0);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("INFO"), "info lines are logged: {stderr}");
    assert!(!stderr.contains("\x1b["), "ANSI codes in {stderr:?}");
}

#[test]
fn a_closed_stdout_is_not_an_error() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    write_csv(&dir.join("in.csv"), &vins(300, 9));
    vmr(&dir, &sb)
        .args(["ingest", "--input", "in.csv"])
        .assert()
        .code(0);
    // `vmr status --json | head -1`: the reader goes away after one line.
    let mut child = vmr_std(&dir, &sb)
        .args(["status", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("vmr starts");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("vmr ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
