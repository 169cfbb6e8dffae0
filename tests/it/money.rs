//! The money rules as a user meets them, against a sandbox that behaves like real vendors do:
//! late billing, wrong credentials, outages, gateway errors, late polls, billed answers without
//! a report, and a state that belongs to one account. Each test checks the sandbox's own ledger
//! of what it billed.

mod gateway;

use crate::common::*;
use crate::engine::uncertain;
use std::collections::BTreeSet;
use std::time::Duration;
use vmr::sandbox::{Fate, ReadyAfter, SandboxConfig};

fn stderr_of(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// VIN → (state, code, message).
fn detail(
    dir: &std::path::Path,
) -> std::collections::BTreeMap<String, (String, Option<i64>, Option<String>)> {
    let conn = db(dir);
    let mut st = conn
        .prepare("SELECT vin, state, code, message FROM vins WHERE state <> 'rejected'")
        .expect("query");
    st.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?, r.get(3)?))))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows read")
}

/// Every VIN ended as the sandbox's truth says.
fn assert_truth(dir: &std::path::Path, cfg: &SandboxConfig, vins: &[String]) {
    let states = states(dir);
    assert_eq!(states.len(), vins.len());
    for v in vins {
        let want = match cfg.truth(v).fate {
            Fate::Inline | Fate::Deferred => ("done", Some(200)),
            Fate::Unsupported703 => ("failed", Some(703)),
            Fate::Fails702 => ("failed", Some(702)),
        };
        let (s, c) = &states[v];
        assert_eq!((s.as_str(), *c), want, "{v}");
    }
}

#[test]
fn late_billing_parks_vins_as_uncertain_and_never_buys_twice_silently() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        late_bill_rate: 0.05,
        stall: Duration::from_millis(2500),
        seed: 41,
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    let vins = vins(800, 41);
    write_csv(&dir.join("in.csv"), &vins);
    let run = |extra: &[&str]| {
        vmr(&dir, &sb)
            .args(["run", "--input", "in.csv", "--timeout", "1s"])
            .args(extra)
            .output()
            .expect("vmr runs")
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(75), "{}", stderr_of(&out));
    let listed: BTreeSet<String> = uncertain(&dir, &sb).into_iter().collect();
    let ledger = sb.ledger();
    assert!(
        ledger.late_billed > 0,
        "the sandbox billed some generates late"
    );
    assert!(!listed.is_empty());
    // Only late-billed calls (plus at most the calls in flight) could leave a VIN uncertain.
    assert!(
        listed.len() as u64 <= ledger.late_billed + 16,
        "{} uncertain, {} late-billed",
        listed.len(),
        ledger.late_billed
    );
    // Nothing was sent twice: every VIN's generate is billed at most once so far.
    for (vin, l) in &ledger.per_vin {
        assert!(l.generate <= 1, "{vin} bought twice without being listed");
    }
    // Nothing failed for a fault that was not the VIN's.
    let d = detail(&dir);
    for (vin, (s, code, _)) in &d {
        if s == "failed" {
            assert!(matches!(code, Some(702 | 703)), "{vin}: {s} {code:?}");
        }
    }
    resubmit_until_settled(&dir, &sb, &cfg, &vins, listed, |extra| {
        run(extra);
    });
}

/// The user resubmits the uncertain VINs round after round (knowing some may be bought twice)
/// with `run`: in the end every VIN is as the sandbox's truth says, and only VINs `status` listed
/// uncertain at some point (`listed` already, or a later round) were bought twice.
fn resubmit_until_settled(
    dir: &std::path::Path,
    sb: &vmr::sandbox::Sandbox,
    cfg: &SandboxConfig,
    vins: &[String],
    listed: BTreeSet<String>,
    run: impl Fn(&[&str]),
) {
    let mut rounds = 0;
    let mut all_listed = listed;
    loop {
        let now = uncertain(dir, sb);
        if now.is_empty() {
            break;
        }
        all_listed.extend(now);
        rounds += 1;
        assert!(rounds <= 10, "uncertain VINs do not go away");
        run(&["--resubmit-uncertain"]);
    }
    assert_truth(dir, cfg, vins);
    for (vin, l) in &sb.ledger().per_vin {
        if l.generate > 1 {
            assert!(all_listed.contains(vin), "{vin} bought twice, never listed");
        }
    }
}

#[test]
fn max_billed_is_never_exceeded_even_with_late_billing() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        late_bill_rate: 0.1,
        stall: Duration::from_millis(1500),
        seed: 42,
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg);
    write_csv(&dir.join("in.csv"), &vins(400, 42));
    let out = vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--timeout", "1s"])
        .args(["--max-billed", "120"])
        .output()
        .expect("vmr runs");
    assert_eq!(out.status.code(), Some(75), "{}", stderr_of(&out));
    // Give the late answers time to be billed, then count.
    std::thread::sleep(Duration::from_millis(1600));
    let ledger = sb.ledger();
    assert!(ledger.billed_total <= 120, "{} billed", ledger.billed_total);
    assert!(
        ledger.billed_total >= 60,
        "the budget was used: {}",
        ledger.billed_total
    );
}

#[test]
fn a_wrong_secret_stops_the_run_with_exit_3_and_fails_nothing() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig::default();
    let sb = sandbox(cfg.clone());
    let vins = vins(300, 43);
    write_csv(&dir.join("in.csv"), &vins);
    let out = vmr(&dir, &sb)
        .env("VMR_APP_SECRET", "rotated-yesterday")
        .args(["run", "--input", "in.csv"])
        .output()
        .expect("vmr runs");
    let text = stderr_of(&out);
    assert_eq!(out.status.code(), Some(3), "{text}");
    for word in ["sign", "secret", "clock"] {
        assert!(text.contains(word), "the message names the {word}: {text}");
    }
    // At most the streak (5) plus the calls already in flight (16) were sent.
    let ledger = sb.ledger();
    assert!(ledger.calls_total <= 5 + 16, "{} calls", ledger.calls_total);
    assert_eq!(ledger.billed_total, 0);
    assert_eq!(
        count(&dir, "SELECT count(*) FROM vins WHERE state = 'failed'"),
        0
    );
    // With the right secret the same state finishes everything.
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(0);
    assert_truth(&dir, &cfg, &vins);
}

#[test]
fn a_lone_400_fails_its_vin_once_later_calls_succeed() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig::default();
    let sb = sandbox(cfg.clone());
    let vins = vins(120, 44);
    let mut csv = String::from("vin,licenseImgUrl\n");
    for (i, v) in vins.iter().enumerate() {
        // The sandbox answers 400 for an image it cannot read.
        let img = if i % 40 == 7 {
            format!("https://img.example-fleet.cn/unreadable-{i}.jpg")
        } else {
            format!("https://img.example-fleet.cn/license/{i}.jpg")
        };
        csv.push_str(&format!("{v},{img}\n"));
    }
    std::fs::write(dir.join("in.csv"), csv).expect("write");
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--concurrency", "4"])
        .assert()
        .code(0);
    let d = detail(&dir);
    for (i, v) in vins.iter().enumerate() {
        let (s, code, _) = &d[v];
        if i % 40 == 7 {
            assert_eq!((s.as_str(), *code), ("failed", Some(400)), "{v}");
        } else {
            assert_ne!(*code, Some(400), "{v}");
        }
    }
}

#[test]
fn an_outage_exits_75_fails_nothing_and_a_rerun_finishes() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig::default();
    let sb = sandbox(cfg.clone());
    let vins = vins(200, 45);
    write_csv(&dir.join("in.csv"), &vins);
    sb.set_outage(true);
    let out = vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--max-attempts", "3"])
        .output()
        .expect("vmr runs");
    let text = stderr_of(&out);
    assert_eq!(out.status.code(), Some(75), "{text}");
    assert!(text.contains("unavailable"), "{text}");
    assert_eq!(
        count(&dir, "SELECT count(*) FROM vins WHERE state = 'failed'"),
        0
    );
    // It stopped sending soon instead of grinding through every VIN's retries.
    assert!(sb.ledger().calls_total < 200, "{}", sb.ledger().calls_total);
    assert_eq!(sb.ledger().billed_total, 0);
    sb.set_outage(false);
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(0);
    assert_truth(&dir, &cfg, &vins);
}

#[test]
fn a_vendor_that_refuses_connections_exits_75_and_fails_nothing() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    write_csv(&dir.join("in.csv"), &vins(50, 46));
    // A loopback port nobody listens on: every connection is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let out = vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--max-attempts", "2"])
        .args(["--base-url", &format!("http://127.0.0.1:{port}")])
        .output()
        .expect("vmr runs");
    assert_eq!(out.status.code(), Some(75), "{}", stderr_of(&out));
    assert_eq!(
        count(&dir, "SELECT count(*) FROM vins WHERE state <> 'queued'"),
        0
    );
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM calls WHERE delivery <> 'not_sent'"
        ),
        0
    );
}

#[test]
fn gateway_errors_are_retried_after_retry_after_and_fail_nothing() {
    let (_t, dir) = tempdir();
    // Each 503/429 pauses the whole account for its Retry-After (1 s): a few dozen of them.
    let cfg = SandboxConfig {
        gateway_error_rate: 0.05,
        seed: 47,
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    let vins = vins(200, 47);
    write_csv(&dir.join("in.csv"), &vins);
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--concurrency", "32"])
        .assert()
        .code(0);
    assert!(sb.ledger().gateway_errors > 0);
    assert_truth(&dir, &cfg, &vins);
    // Every 503/429 was followed, for that VIN and endpoint, by a call at least the
    // Retry-After (1 s) later; the backoff alone would have waited 200–400 ms.
    let conn = db(&dir);
    let mut st = conn
        .prepare(
            "SELECT a.ended_at, (SELECT min(b.started_at) FROM calls b
                WHERE b.vin_id = a.vin_id AND b.endpoint = a.endpoint AND b.id > a.id)
             FROM calls a WHERE a.http_status IN (503, 429)",
        )
        .expect("query");
    let gaps: Vec<(i64, Option<i64>)> = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows read");
    assert!(!gaps.is_empty());
    for (ended, next) in gaps {
        let next = next.expect("every gateway error was retried");
        assert!(next - ended >= 950, "retried after {} ms", next - ended);
    }
    // The calls table tells them apart for reconciliation.
    let calls = std::fs::read_to_string(dir.join("out/calls.csv")).expect("calls.csv");
    assert!(
        calls
            .lines()
            .any(|l| l.contains(",503,") && l.contains("not_billed")),
        "{}",
        &calls[..calls.len().min(2000)]
    );
}

#[test]
fn a_late_poll_fetches_reports_that_became_ready_and_expires_only_701s_after_the_deadline() {
    // Ready 1 s after generate; the poll timeout (300 ms) passes before anyone polls.
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        ready_after: ReadyAfter::Duration(Duration::from_millis(1000)),
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    let vins = vins(100, 48);
    write_csv(&dir.join("in.csv"), &vins);
    vmr(&dir, &sb)
        .args(["submit", "--input", "in.csv", "--poll-timeout", "300ms"])
        .assert()
        .code(75);
    std::thread::sleep(Duration::from_millis(1200));
    vmr(&dir, &sb)
        .args(["poll", "--poll-timeout", "300ms"])
        .assert()
        .code(0);
    assert_truth(&dir, &cfg, &vins);
    assert_eq!(
        count(&dir, "SELECT count(*) FROM vins WHERE state = 'expired'"),
        0
    );

    // Never ready in time: a get after the deadline still answers 701, so those expire.
    let (_t2, dir) = tempdir();
    let cfg = SandboxConfig {
        ready_after: ReadyAfter::Polls(50),
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    write_csv(&dir.join("in.csv"), &vins);
    vmr(&dir, &sb)
        .args(["submit", "--input", "in.csv", "--poll-timeout", "300ms"])
        .assert()
        .code(75);
    let pending = count(&dir, "SELECT count(*) FROM vins WHERE state = 'pending'");
    assert!(pending > 0);
    std::thread::sleep(Duration::from_millis(400));
    let gets_before = sb.ledger().calls_total;
    vmr(&dir, &sb)
        .args(["poll", "--poll-timeout", "300ms"])
        .assert()
        .code(0);
    assert_eq!(
        count(&dir, "SELECT count(*) FROM vins WHERE state = 'expired'"),
        pending
    );
    // Each expired VIN was asked once more after its deadline.
    assert_eq!(sb.ledger().calls_total - gets_before, pending as u64);
}

#[test]
fn a_billed_answer_without_a_report_is_kept_listed_and_never_resent() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        unusable_rate: 0.1,
        seed: 49,
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg);
    write_csv(&dir.join("in.csv"), &vins(300, 49));
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(0);
    let ledger = sb.ledger();
    assert!(ledger.unusable > 0);
    let failed = count(
        &dir,
        "SELECT count(*) FROM vins WHERE state = 'failed' AND message LIKE 'billed_unusable%'",
    );
    assert_eq!(failed as u64, ledger.unusable);
    // The billed body is kept byte for byte.
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM calls c JOIN vins v ON v.id = c.vin_id
             WHERE c.billed = 1 AND c.body IS NOT NULL AND c.endpoint = 'generate'
               AND v.message LIKE 'billed_unusable%'"
        ),
        failed
    );
    // And so is every other billed answer: in the reports table, or in the call log.
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM calls c WHERE c.billed = 1 AND c.body IS NULL
               AND NOT EXISTS (SELECT 1 FROM reports r WHERE r.vin_id = c.vin_id)"
        ),
        0
    );
    let out = vmr(&dir, &sb).args(["status", "--json"]).assert().code(0);
    let st: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).expect("JSON");
    assert_eq!(
        st["billed_unusable"].as_array().map(Vec::len),
        Some(failed as usize)
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("out/manifest.json")).expect("manifest"))
            .expect("JSON");
    assert_eq!(manifest["billed_unusable"]["count"], failed, "{manifest}");
    // Never resent automatically.
    let before = sb.ledger().billed_total;
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(0);
    assert_eq!(sb.ledger().billed_total, before);
}

#[test]
fn a_sandbox_state_is_refused_by_a_real_run_and_sandbox_runs_have_their_own_directories() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    write_csv(&dir.join("in.csv"), &vins(20, 50));
    // --sandbox with the defaults: its own state and out directories.
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("vmr"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(&dir)
        .args(["--sandbox", "run", "--input", "in.csv"]);
    let out = c.output().expect("vmr runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(dir.join("vmr-sandbox-state/checkpoint.sqlite").exists());
    assert!(dir.join("vmr-sandbox-out/manifest.json").exists());
    assert!(!dir.join("vmr-state").exists());
    // A real run pointed at that state is refused before any call.
    let out = vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--state", "vmr-sandbox-state"])
        .output()
        .expect("vmr runs");
    let text = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("sandbox"), "{text}");
    assert_eq!(sb.ledger().calls_total, 0);
    // And the account is in the manifest.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("vmr-sandbox-out/manifest.json")).expect("manifest"),
    )
    .expect("JSON");
    assert_eq!(manifest["account"], "sandbox");
}

#[test]
fn a_state_bound_to_one_base_url_refuses_another_and_an_old_state_needs_adopting() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    let other = sandbox(SandboxConfig::default());
    write_csv(&dir.join("in.csv"), &vins(20, 51));
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(0);
    let out = vmr(&dir, &other)
        .args(["run", "--input", "in.csv"])
        .output()
        .expect("vmr runs");
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert_eq!(other.ledger().calls_total, 0);
    // A checkpoint from before account binding, with calls: refused until adopted once.
    exec_sql(&dir, "DELETE FROM meta WHERE key = 'account'");
    vmr(&dir, &sb).args(["poll"]).assert().code(2);
    vmr(&dir, &sb)
        .args(["poll", "--adopt-account"])
        .assert()
        .code(0);
    vmr(&dir, &sb).args(["poll"]).assert().code(0);
}

#[test]
fn resolve_settles_uncertain_vins_without_buying_them_again() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        late_bill_rate: 0.1,
        stall: Duration::from_millis(1500),
        seed: 52,
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    let vins = vins(200, 52);
    write_csv(&dir.join("in.csv"), &vins);
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--timeout", "1s"])
        .assert()
        .code(75);
    std::thread::sleep(Duration::from_millis(1600));
    let listed = uncertain(&dir, &sb);
    assert!(listed.len() >= 2, "{listed:?}");
    // Reconcile with the vendor's statement (here: the sandbox's ledger).
    let ledger = sb.ledger();
    let (abandon, rest) = listed.split_first().expect("one at least");
    vmr(&dir, &sb)
        .args([
            "resolve",
            "--vin",
            abandon,
            "--abandon",
            "--note",
            "written off",
        ])
        .assert()
        .code(0);
    for vin in rest {
        let billed = ledger.per_vin.get(vin).map(|l| l.generate).unwrap_or(0);
        if billed > 0 {
            let rid = ledger.per_vin[vin]
                .late_request_ids
                .last()
                .expect("the sandbox knows the requestId")
                .clone();
            vmr(&dir, &sb)
                .args(["resolve", "--vin", vin, "--billed", "--request-id", &rid])
                .assert()
                .code(0);
        } else {
            vmr(&dir, &sb)
                .args(["resolve", "--vin", vin, "--not-billed"])
                .assert()
                .code(0);
        }
    }
    // A VIN that is not uncertain is refused.
    let done = vins
        .iter()
        .find(|v| !listed.contains(v))
        .expect("a settled VIN");
    vmr(&dir, &sb)
        .args(["resolve", "--vin", done, "--not-billed"])
        .assert()
        .code(2);
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--timeout", "1s"])
        .assert()
        .code(0);
    // Nothing was bought twice, and every VIN but the abandoned one is as the truth says.
    for (vin, l) in &sb.ledger().per_vin {
        assert!(l.generate <= 1, "{vin} bought twice");
    }
    let d = detail(&dir);
    assert_eq!(d[abandon].0, "failed");
    assert!(
        d[abandon]
            .2
            .as_deref()
            .unwrap_or("")
            .contains("written off")
    );
    assert_eq!(
        count(&dir, "SELECT count(*) FROM resolutions") as usize,
        listed.len()
    );
}

#[test]
fn the_secret_under_any_config_key_never_appears() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    write_csv(&dir.join("in.csv"), &vins(5, 53));
    let secret = "s3cr3t-do-not-print-9911";
    for line in [
        format!("appSecret = \"{secret}\""),
        format!("secret = \"{secret}\""),
        format!("app_secret = \"{secret}\""),
        format!("app-secret = \"{secret}\""),
        format!("secret = {secret}"),
        format!("rate = \"{secret}\""),
    ] {
        std::fs::write(dir.join("vmr.toml"), format!("{line}\n")).expect("write");
        for format in ["text", "json"] {
            let out = vmr(&dir, &sb)
                .args(["--config", "vmr.toml", "--log-format", format])
                .args(["run", "--input", "in.csv"])
                .output()
                .expect("vmr runs");
            let text = stderr_of(&out);
            assert_eq!(out.status.code(), Some(2), "{line}: {text}");
            assert!(!text.contains(secret), "{line}: {text}");
        }
    }
    assert_eq!(sb.ledger().calls_total, 0);
}

#[test]
fn missing_credentials_and_an_unwritable_out_exit_2_before_anything_is_written() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    write_csv(&dir.join("in.csv"), &vins(5, 54));
    let out = vmr(&dir, &sb)
        .env_remove("VMR_APP_SECRET")
        .args(["run", "--input", "in.csv"])
        .output()
        .expect("vmr runs");
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(!dir.join("state/checkpoint.sqlite").exists());
    // --out is a file: nothing can be written there, so nothing is bought.
    std::fs::write(dir.join("not-a-dir"), b"x").expect("write");
    let out = vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--out", "not-a-dir"])
        .output()
        .expect("vmr runs");
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert_eq!(sb.ledger().calls_total, 0);
}

#[test]
fn status_readers_never_make_a_writer_fail() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    write_csv(&dir.join("in.csv"), &vins(50, 55));
    vmr(&dir, &sb)
        .args(["ingest", "--input", "in.csv"])
        .assert()
        .code(0);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let dir = dir.clone();
        let base = sb.base_url();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = std::process::Command::new(assert_cmd::cargo::cargo_bin("vmr"))
                    .current_dir(&dir)
                    .args(["--base-url", &base, "--state", "state", "status"])
                    .output();
            }
        })
    };
    for _ in 0..15 {
        vmr(&dir, &sb)
            .args(["ingest", "--input", "in.csv"])
            .assert()
            .code(0);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    reader.join().expect("reader thread");
}
