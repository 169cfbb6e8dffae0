//! Re-audits: buying VINs again (`--refresh-older-than`, `--retry-failed`, `--retry-expired`),
//! every purchase its own record, every report version kept; checked against the sandbox's
//! ledger of what it billed.

use crate::common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;
use vmr::sandbox::{Fate, ReadyAfter, SandboxConfig};

/// VIN → every report version's (version, body), in version order.
fn versions(dir: &Path) -> BTreeMap<String, Vec<(i64, Vec<u8>)>> {
    let conn = db(dir);
    let mut st = conn
        .prepare("SELECT vin, version, body FROM reports ORDER BY vin, version")
        .expect("query");
    let mut out: BTreeMap<String, Vec<(i64, Vec<u8>)>> = BTreeMap::new();
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("rows");
    for row in rows {
        let (vin, version, body): (String, i64, Vec<u8>) = row.expect("row");
        out.entry(vin).or_default().push((version, body));
    }
    out
}

/// VIN → billed generates, as the sandbox counted them.
fn generates(sb: &vmr::sandbox::Sandbox) -> BTreeMap<String, u64> {
    sb.ledger()
        .per_vin
        .iter()
        .map(|(v, l)| (v.clone(), l.generate))
        .collect()
}

fn stdout(out: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&out.get_output().stdout).into_owned()
}

#[test]
fn a_refresh_buys_again_exactly_the_old_reports_of_the_current_input_once_each() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        seed: 5,
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    let old = vins(30, 51);
    write_csv(&dir.join("old.csv"), &old);
    vmr(&dir, &sb)
        .args(["run", "--input", "old.csv"])
        .assert()
        .code(0);
    let first = versions(&dir);
    let done_old: BTreeSet<String> = old
        .iter()
        .filter(|v| cfg.truth(v).has_report())
        .cloned()
        .collect();
    assert_eq!(first.keys().cloned().collect::<BTreeSet<_>>(), done_old);
    assert!(done_old.len() > 15 && done_old.len() < old.len());

    // A month later (here: a second), the same fleet comes back with ten new vehicles.
    std::thread::sleep(Duration::from_millis(1200));
    let new = vins(10, 52);
    let mut fleet = old.clone();
    fleet.extend(new.iter().cloned());
    write_csv(&dir.join("fleet.csv"), &fleet);
    let before = generates(&sb);
    vmr(&dir, &sb)
        .args(["run", "--input", "fleet.csv", "--refresh-older-than", "1s"])
        .assert()
        .code(0);
    let after = generates(&sb);
    for v in &fleet {
        let was = before.get(v).copied().unwrap_or(0);
        let now = after.get(v).copied().unwrap_or(0);
        let want = if done_old.contains(v) {
            // Refreshed: billed once more, exactly once.
            was + 1
        } else if new.contains(v) {
            // Bought for the first time (703 VINs are never billed).
            u64::from(cfg.truth(v).fate != Fate::Unsupported703)
        } else {
            // Failed (702) or unsupported: never bought again without --retry-failed.
            was
        };
        assert_eq!(now, want, "{v}: billed generates");
    }
    // Both versions kept, the first byte for byte.
    let second = versions(&dir);
    for v in &done_old {
        let vs = &second[v];
        assert_eq!(
            vs.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![1, 2],
            "{v}"
        );
        assert_eq!(vs[0].1, first[v][0].1, "{v}: version 1 changed");
    }
    // The first purchase of each refreshed VIN is kept as it ended, with its report version.
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM purchases WHERE purchase = 1 AND state = 'done' AND report_version = 1"
        ),
        done_old.len() as i64
    );
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM vins WHERE purchase = 2 AND state = 'done'"
        ),
        done_old.len() as i64
    );
    // Every call of a refresh belongs to the second purchase.
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM calls c JOIN vins v ON v.id = c.vin_id
             WHERE c.purchase = 2 AND c.endpoint = 'generate' AND c.billed = 1"
        ),
        done_old.len() as i64
    );

    // The reports are fresh now: the same option buys nothing, nor does a run without it.
    let calls = sb.ledger().calls_total;
    vmr(&dir, &sb)
        .args(["run", "--input", "fleet.csv", "--refresh-older-than", "1h"])
        .assert()
        .code(0);
    vmr(&dir, &sb)
        .args(["run", "--input", "fleet.csv"])
        .assert()
        .code(0);
    assert_eq!(sb.ledger().calls_total, calls);

    // Only the VINs of the current input are refreshed: a file of five old VINs refreshes five.
    std::thread::sleep(Duration::from_millis(600));
    let part: Vec<String> = done_old.iter().take(5).cloned().collect();
    write_csv(&dir.join("part.csv"), &part);
    let before = generates(&sb);
    vmr(&dir, &sb)
        .args([
            "submit",
            "--input",
            "part.csv",
            "--refresh-older-than",
            "500ms",
        ])
        .assert()
        .code(75);
    let after = generates(&sb);
    for v in &fleet {
        let extra = after.get(v).copied().unwrap_or(0) - before.get(v).copied().unwrap_or(0);
        assert_eq!(extra, u64::from(part.contains(v)), "{v}");
    }
}

#[test]
fn a_refresh_never_touches_a_purchase_under_way_and_the_dry_run_counts_it() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        seed: 6,
        inline_rate: 0.5,
        // Deferred reports are not ready for a long while: their VINs stay pending.
        ready_after: ReadyAfter::Duration(Duration::from_secs(3600)),
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    let fleet = vins(24, 53);
    write_csv(&dir.join("in.csv"), &fleet);
    vmr(&dir, &sb)
        .args(["submit", "--input", "in.csv"])
        .assert()
        .code(75);
    let inline: BTreeSet<String> = fleet
        .iter()
        .filter(|v| cfg.truth(v).fate == Fate::Inline)
        .cloned()
        .collect();
    assert_eq!(
        count(&dir, "SELECT count(*) FROM vins WHERE state = 'done'"),
        inline.len() as i64
    );
    let pending = count(&dir, "SELECT count(*) FROM vins WHERE state = 'pending'");
    assert!(pending > 0 && !inline.is_empty());
    std::thread::sleep(Duration::from_millis(300));

    // The dry run says how many would be bought again, and buys nothing.
    let calls = sb.ledger().calls_total;
    let out = vmr(&dir, &sb)
        .args([
            "submit",
            "--input",
            "in.csv",
            "--refresh-older-than",
            "200ms",
            "--dry-run",
        ])
        .assert()
        .code(0);
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "would call generate for {} VINs and get for {pending} pending reports",
            inline.len()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("{} refreshes", inline.len())),
        "{text}"
    );
    assert_eq!(sb.ledger().calls_total, calls);

    let before = generates(&sb);
    vmr(&dir, &sb)
        .args([
            "submit",
            "--input",
            "in.csv",
            "--refresh-older-than",
            "200ms",
        ])
        .assert()
        .code(75);
    let after = generates(&sb);
    for v in &fleet {
        let extra = after.get(v).copied().unwrap_or(0) - before.get(v).copied().unwrap_or(0);
        assert_eq!(extra, u64::from(inline.contains(v)), "{v}");
    }

    // Without an input there is nothing to refresh: a usage error, before any call.
    vmr(&dir, &sb)
        .args(["submit", "--refresh-older-than", "1ms"])
        .assert()
        .code(2);
}

#[test]
fn retry_failed_buys_again_only_the_codes_named_and_retry_expired_the_expired() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        seed: 7,
        inline_rate: 0.0,
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    // Two VINs of an unsupported make (703) beside the fleet.
    let mut fleet = vins(60, 54);
    fleet.push(with_check_digit("LRW54ABC000000001"));
    fleet.push(with_check_digit("LNB54ABC000000002"));
    write_csv(&dir.join("in.csv"), &fleet);
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(0);
    let failed_702: BTreeSet<String> = fleet
        .iter()
        .filter(|v| cfg.truth(v).fate == Fate::Fails702)
        .cloned()
        .collect();
    assert!(!failed_702.is_empty());
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM vins WHERE state = 'failed' AND code = 703"
        ),
        2
    );

    let out = vmr(&dir, &sb)
        .args(["submit", "--retry-failed", "702", "--dry-run"])
        .assert()
        .code(0);
    let text = stdout(&out);
    assert!(
        text.contains(&format!("{} failed VINs retried", failed_702.len())),
        "{text}"
    );

    let before = generates(&sb);
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--retry-failed", "702"])
        .assert()
        .code(0);
    let after = generates(&sb);
    for v in &fleet {
        let extra = after.get(v).copied().unwrap_or(0) - before.get(v).copied().unwrap_or(0);
        assert_eq!(extra, u64::from(failed_702.contains(v)), "{v}");
    }
    // The 702s failed again (the sandbox's verdict does not change): two purchases each, both
    // failed, and still no report.
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM vins v JOIN purchases p ON p.vin_id = v.id
             WHERE v.purchase = 2 AND v.state = 'failed' AND p.state = 'failed' AND p.code = 702"
        ),
        failed_702.len() as i64
    );
    // Every failure, 703 included, when no code is named.
    let out = vmr(&dir, &sb)
        .args(["submit", "--retry-failed", "--dry-run"])
        .assert()
        .code(0);
    assert!(
        stdout(&out).contains(&format!("{} failed VINs retried", failed_702.len() + 2)),
        "{}",
        stdout(&out)
    );
    // A code that is not one is a usage error.
    vmr(&dir, &sb)
        .args(["submit", "--retry-failed", "7o2", "--dry-run"])
        .assert()
        .code(2);

    // Expired: reports never ready before a short poll timeout.
    let (_t2, dir2) = tempdir();
    let slow = sandbox(SandboxConfig {
        seed: 7,
        inline_rate: 0.0,
        ready_after: ReadyAfter::Duration(Duration::from_secs(3600)),
        ..SandboxConfig::default()
    });
    let few = vins(6, 55);
    write_csv(&dir2.join("in.csv"), &few);
    vmr(&dir2, &slow)
        .args(["run", "--input", "in.csv", "--poll-timeout", "200ms"])
        .assert()
        .code(0);
    let expired = count(&dir2, "SELECT count(*) FROM vins WHERE state = 'expired'");
    assert!(expired > 0);
    let before = slow.ledger().generate_billed;
    let out = vmr(&dir2, &slow)
        .args(["submit", "--retry-expired", "--dry-run"])
        .assert()
        .code(0);
    assert!(
        stdout(&out).contains(&format!("{expired} expired VINs retried")),
        "{}",
        stdout(&out)
    );
    vmr(&dir2, &slow)
        .args(["submit", "--retry-expired"])
        .assert()
        .code(75);
    assert_eq!(slow.ledger().generate_billed, before + expired as u64);
    assert_eq!(
        count(
            &dir2,
            "SELECT count(*) FROM vins WHERE state = 'pending' AND purchase = 2"
        ),
        expired
    );
}

#[test]
fn a_checkpoint_from_before_refreshes_migrates_its_reports_as_version_1() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig {
        seed: 8,
        ..SandboxConfig::default()
    });
    let fleet = vins(20, 56);
    write_csv(&dir.join("in.csv"), &fleet);
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(0);
    let bodies: BTreeMap<String, Vec<u8>> = versions(&dir)
        .into_iter()
        .map(|(v, mut vs)| (v, vs.remove(0).1))
        .collect();
    if pg_backend() {
        // A SQLite checkpoint's migration; PostgreSQL's tables start at this schema.
        return;
    }
    // Turn it into what the previous vmr (schema 2) left.
    db(&dir)
        .execute_batch(
            "CREATE TABLE reports_v2 (
                vin_id INTEGER PRIMARY KEY, vin TEXT NOT NULL, request_id TEXT, task_no TEXT,
                endpoint TEXT NOT NULL, fetched_at INTEGER NOT NULL, body BLOB NOT NULL);
             INSERT INTO reports_v2 SELECT vin_id, vin, request_id, task_no, endpoint, fetched_at, body FROM reports;
             DROP TABLE reports;
             ALTER TABLE reports_v2 RENAME TO reports;
             DROP TABLE purchases;
             DROP TABLE batch_vins;
             ALTER TABLE vins DROP COLUMN failure;
             ALTER TABLE vins DROP COLUMN purchase;
             ALTER TABLE calls DROP COLUMN purchase;
             DROP INDEX calls_uid;
             ALTER TABLE calls DROP COLUMN uid;
             PRAGMA user_version = 2;",
        )
        .expect("make a schema-2 checkpoint");
    // Readers upgrade it too: status and export work on it before any writer opened it.
    vmr(&dir, &sb).args(["status", "--json"]).assert().code(0);
    vmr(&dir, &sb).arg("export").assert().code(0);
    assert!(
        table(&dir, "reports")
            .iter()
            .all(|r| r["version"] == "1" && r["is_latest"] == "true")
    );
    std::thread::sleep(Duration::from_millis(300));
    let before = generates(&sb);
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--refresh-older-than", "200ms"])
        .assert()
        .code(0);
    assert_eq!(count(&dir, "PRAGMA user_version"), 5);
    let after = versions(&dir);
    assert_eq!(after.len(), bodies.len());
    for (vin, body) in &bodies {
        let vs = &after[vin];
        assert_eq!(vs.len(), 2, "{vin}");
        assert_eq!((vs[0].0, &vs[0].1), (1, body), "{vin}: version 1 kept");
        assert_eq!(vs[1].0, 2);
        assert_eq!(after_minus(&generates(&sb), &before, vin), 1, "{vin}");
    }
}

fn after_minus(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>, vin: &str) -> u64 {
    after.get(vin).copied().unwrap_or(0) - before.get(vin).copied().unwrap_or(0)
}

#[test]
fn a_crash_during_a_refresh_keeps_every_version_and_buys_nothing_twice_but_the_uncertain() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        seed: 9,
        latency: Duration::from_millis(20),
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    let fleet = vins(1000, 57);
    write_csv(&dir.join("in.csv"), &fleet);
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(0);
    let first = versions(&dir);
    std::thread::sleep(Duration::from_millis(2100));
    let bought_once = generates(&sb);

    // Killed partway through the refresh.
    let mut child: Child = {
        let mut c = vmr_std(&dir, &sb);
        c.args(["run", "--input", "in.csv", "--refresh-older-than", "2s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c.spawn().expect("vmr starts")
    };
    std::thread::sleep(Duration::from_millis(700));
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let refreshed_by_then = count(&dir, "SELECT count(*) FROM purchases");
    assert!(
        refreshed_by_then > 0 && refreshed_by_then < first.len() as i64,
        "the kill came at {refreshed_by_then} of {} refreshes",
        first.len()
    );

    // The next run (the same option) finishes the refresh; the uncertain are left to a person.
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--refresh-older-than", "2s"])
        .assert()
        .code(75);
    let uncertain: BTreeSet<String> = {
        let conn = db(&dir);
        let mut st = conn
            .prepare("SELECT vin FROM vins WHERE state = 'uncertain'")
            .expect("query");
        st.query_map([], |r| r.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows read")
    };
    assert!(uncertain.len() <= 16, "{} uncertain", uncertain.len());
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--resubmit-uncertain"])
        .assert()
        .code(0);
    let after = generates(&sb);
    let second = versions(&dir);
    for (vin, vs) in &first {
        let extra = after.get(vin).copied().unwrap_or(0) - bought_once[vin];
        if uncertain.contains(vin) {
            assert!((1..=2).contains(&extra), "{vin}: {extra} more generates");
        } else {
            assert_eq!(extra, 1, "{vin}: refreshed once");
        }
        // Every version kept, numbered without a gap, the first unchanged.
        let got = &second[vin];
        let numbers: Vec<i64> = got.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, (1..=got.len() as i64).collect::<Vec<_>>(), "{vin}");
        assert!(got.len() >= 2, "{vin}");
        assert_eq!(got[0].1, vs[0].1, "{vin}: version 1 changed");
    }
}

/// The rows of `<dir>/out/<table>.csv`, each as column name → value.
fn table(dir: &Path, name: &str) -> Vec<BTreeMap<String, String>> {
    let path = dir.join("out").join(format!("{name}.csv"));
    let mut r = csv::Reader::from_path(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header: Vec<String> = r
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    r.records()
        .map(|rec| {
            header
                .iter()
                .cloned()
                .zip(rec.expect("csv record").iter().map(str::to_owned))
                .collect()
        })
        .collect()
}

/// The VINs of `fleet` the sandbox sells a report for.
fn with_report(cfg: &SandboxConfig, fleet: &[String]) -> BTreeSet<String> {
    fleet
        .iter()
        .filter(|v| cfg.truth(v).has_report())
        .cloned()
        .collect()
}

#[test]
fn export_holds_every_version_and_requests_stays_one_row_per_vin() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        seed: 10,
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    let fleet = vins(24, 58);
    write_csv(&dir.join("in.csv"), &fleet);
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(0);
    let with_report = with_report(&cfg, &fleet);
    // Refresh half of them: those of a file holding the first half of the fleet.
    std::thread::sleep(Duration::from_millis(400));
    let half: Vec<String> = fleet[..12].to_vec();
    write_csv(&dir.join("half.csv"), &half);
    vmr(&dir, &sb)
        .args([
            "run",
            "--input",
            "half.csv",
            "--refresh-older-than",
            "300ms",
        ])
        .assert()
        .code(0);
    let refreshed: BTreeSet<String> = half
        .iter()
        .filter(|v| with_report.contains(*v))
        .cloned()
        .collect();
    assert!(!refreshed.is_empty() && refreshed.len() < with_report.len());

    // reports: one row per version, `is_latest` on the newest only.
    let reports = table(&dir, "reports");
    let mut got: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for r in &reports {
        got.entry(r["vin"].clone())
            .or_default()
            .push((r["version"].clone(), r["is_latest"].clone()));
    }
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), with_report);
    for (vin, vs) in &got {
        let want: Vec<(String, String)> = if refreshed.contains(vin) {
            vec![("1".into(), "false".into()), ("2".into(), "true".into())]
        } else {
            vec![("1".into(), "true".into())]
        };
        assert_eq!(vs, &want, "{vin}");
    }
    // records: each version's own rows, as many as the records in that version's body.
    let records = table(&dir, "records");
    let bodies = versions(&dir);
    for r in &reports {
        let n = records
            .iter()
            .filter(|x| x["vin"] == r["vin"] && x["version"] == r["version"])
            .count();
        let version: usize = r["version"].parse().expect("version");
        let body: serde_json::Value =
            serde_json::from_slice(&bodies[&r["vin"]][version - 1].1).expect("JSON body");
        let data = &body["data"];
        let report = if data["info"].is_object() {
            &data["info"]
        } else {
            data
        };
        let want = report["result_content"]
            .as_array()
            .map_or(0, |l| l.iter().filter(|x| x.is_object()).count());
        assert_eq!(n, want, "{} v{}", r["vin"], r["version"]);
    }
    for t in ["overview", "exceptions"] {
        for row in table(&dir, t) {
            let v = &got[&row["vin"]];
            assert!(v.iter().any(|(n, _)| *n == row["version"]), "{t}: {row:?}");
        }
    }
    // requests: one row per input VIN, the latest purchase's status, counts over all.
    let requests = table(&dir, "requests");
    assert_eq!(requests.len(), fleet.len());
    for r in &requests {
        let vin = &r["vin"];
        let (purchases, version) = if refreshed.contains(vin) {
            ("2", "2")
        } else if with_report.contains(vin) {
            ("1", "1")
        } else {
            ("1", "")
        };
        assert_eq!(
            (r["purchases"].as_str(), r["report_version"].as_str()),
            (purchases, version),
            "{vin}"
        );
        if refreshed.contains(vin) {
            assert_eq!(r["status"], "done");
            let billed: u64 = r["billed_calls"].parse().expect("billed_calls");
            let ledger = &sb.ledger().per_vin[vin];
            assert_eq!(
                billed,
                ledger.generate + ledger.get,
                "{vin}: billed over both"
            );
        }
    }

    // calls: each call names its purchase; attempts count within a purchase.
    let calls = table(&dir, "calls");
    for vin in &refreshed {
        let generates: Vec<(String, String)> = calls
            .iter()
            .filter(|c| &c["vin"] == vin && c["endpoint"] == "generate" && c["class"] == "billed")
            .map(|c| (c["purchase"].clone(), c["attempt"].clone()))
            .collect();
        assert_eq!(
            generates,
            vec![("1".into(), "1".into()), ("2".into(), "1".into())],
            "{vin}"
        );
    }
    // The audit grades each vehicle once, as its latest report shows it.
    vmr(&dir, &sb)
        .args(["audit", "--as-of", "2026-01-01"])
        .assert()
        .success();
    let flags = table(&dir, "vehicle_flags");
    assert_eq!(flags.len(), with_report.len());
    let vins: BTreeSet<String> = flags.iter().map(|f| f["vin"].clone()).collect();
    assert_eq!(vins, with_report);
}

/// A fleet of `n` VINs bought once, then refreshed, from a sandbox (seed `seed`) whose reports
/// move on 90 days per purchase.
fn bought_twice(
    seed: u64,
    n: usize,
    salt: u32,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    SandboxConfig,
    vmr::sandbox::Sandbox,
    Vec<String>,
) {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        seed,
        report_age: Duration::from_secs(90 * 86_400),
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    let fleet = vins(n, salt);
    write_csv(&dir.join("in.csv"), &fleet);
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(0);
    std::thread::sleep(Duration::from_millis(300));
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--refresh-older-than", "200ms"])
        .assert()
        .code(0);
    (_t, dir, cfg, sb, fleet)
}

#[test]
fn a_sandbox_with_a_report_age_sells_the_newer_history_to_a_refresh() {
    let (_t, dir, cfg, _sb, fleet) = bought_twice(12, 40, 59);
    let records = table(&dir, "records");
    let per_version = |vin: &str, v: &str| {
        records
            .iter()
            .filter(|r| r["vin"] == vin && r["version"] == v)
            .count()
    };
    let mut grew = 0;
    for vin in fleet.iter().filter(|v| cfg.truth(v).has_report()) {
        let t = vmr::sandbox::aging_truth(vin, cfg.seed, cfg.age_days(1), cfg.age_days(2));
        assert_eq!(
            per_version(vin, "2"),
            per_version(vin, "1") + t.new_records as usize,
            "{vin}"
        );
        grew += usize::from(t.new_records > 0);
    }
    assert!(grew > 10, "{grew} reports with newer records");
}

#[test]
fn the_audit_of_changes_equals_the_sandboxs_truth_including_rollbacks_between_reports() {
    let (_t, dir, cfg, sb, fleet) = bought_twice(13, 400, 62);
    vmr(&dir, &sb)
        .args(["audit", "--as-of", "2026-06-30"])
        .assert()
        .success();
    let flags: BTreeMap<String, BTreeMap<String, String>> = table(&dir, "vehicle_flags")
        .into_iter()
        .map(|r| (r["vin"].clone(), r))
        .collect();
    let (mut accidents, mut rollbacks) = (0, 0);
    for vin in fleet.iter().filter(|v| cfg.truth(v).has_report()) {
        let t = vmr::sandbox::aging_truth(vin, cfg.seed, cfg.age_days(1), cfg.age_days(2));
        let f = &flags[vin];
        let got = [
            "report_versions",
            "km_since_previous",
            "new_records",
            "new_repairs",
            "became_accident",
            "new_structural",
            "rollback_between_reports",
            "rollback_between_km",
        ]
        .map(|c| f[c].clone());
        let want = [
            "2".to_owned(),
            t.km_since_previous.map_or(String::new(), |k| k.to_string()),
            t.new_records.to_string(),
            t.new_repairs.to_string(),
            t.became_accident.to_string(),
            t.became_accident.to_string(),
            (t.rollback_between_km > 1_000).to_string(),
            t.rollback_between_km.to_string(),
        ];
        assert_eq!(got, want, "{vin}: {t:?}");
        if t.rollback_between_km > 0 {
            rollbacks += 1;
            assert_eq!(f["risk_level"], "high", "{vin}");
            assert!(
                f["risk_reasons"].contains("rollback_between_reports"),
                "{vin}"
            );
        }
        accidents += usize::from(t.became_accident);
    }
    assert!(
        accidents >= 3 && rollbacks >= 3,
        "{accidents} accidents, {rollbacks} rollbacks"
    );
    // The page has the section.
    let page = std::fs::read_to_string(dir.join("out").join("audit.html")).expect("audit.html");
    assert!(page.contains("Since the last audit"), "no section");
}

#[test]
fn status_says_per_input_how_many_reports_are_current_due_and_how_old() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        seed: 14,
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    let old = vins(20, 63);
    write_csv(&dir.join("old.csv"), &old);
    vmr(&dir, &sb)
        .args(["run", "--input", "old.csv"])
        .assert()
        .code(0);
    std::thread::sleep(Duration::from_millis(1500));
    let mut new = vins(10, 64);
    new.extend(old[..5].iter().cloned());
    write_csv(&dir.join("new.csv"), &new);
    vmr(&dir, &sb)
        .args(["run", "--input", "new.csv"])
        .assert()
        .code(0);
    let reported = |vs: &[String]| vs.iter().filter(|v| cfg.truth(v).has_report()).count() as i64;

    let out = vmr(&dir, &sb)
        .args(["status", "--json", "--refresh-older-than", "1s"])
        .assert()
        .code(0);
    let st: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).expect("JSON");
    assert_eq!(st["refresh_older_than"], "1s");
    assert_eq!(st["batches_total"], 2);
    let (b_new, b_old) = (&st["batches"][0], &st["batches"][1]);
    assert_eq!(b_new["input_file"], "new.csv");
    assert_eq!(b_new["vins"], 15);
    assert_eq!(b_new["with_report"], reported(&new));
    // Only the five old VINs' reports are over a second old.
    let due_new = reported(&old[..5]);
    assert_eq!(b_new["due_for_refresh"], due_new);
    assert_eq!(b_new["reports_current"], reported(&new) - due_new);
    assert_eq!(b_old["input_file"], "old.csv");
    assert_eq!(
        (
            &b_old["vins"],
            &b_old["due_for_refresh"],
            &b_old["reports_current"]
        ),
        (&20.into(), &reported(&old).into(), &0.into())
    );
    for b in [b_new, b_old] {
        assert!(
            b["oldest_report_age_secs"].as_i64().expect("age") >= 1,
            "{b}"
        );
        assert!(b["oldest_report_at"].is_string());
    }
    // The dry run of that refresh agrees; without the option nothing is due.
    let out = vmr(&dir, &sb)
        .args([
            "submit",
            "--input",
            "new.csv",
            "--refresh-older-than",
            "1s",
            "--dry-run",
        ])
        .assert()
        .code(0);
    let text = stdout(&out);
    assert!(text.contains(&format!("{due_new} refreshes")), "{text}");
    let out = vmr(&dir, &sb).args(["status", "--json"]).assert().code(0);
    let st: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).expect("JSON");
    assert!(st["batches"][0]["due_for_refresh"].is_null());
    assert_eq!(st["batches"][0]["reports_current"], reported(&new));
    let out = vmr(&dir, &sb)
        .args(["status", "--refresh-older-than", "1s"])
        .assert()
        .code(0);
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "input new.csv (first read {}): 15 VINs, {} with a report, {} current, {due_new} due for refresh (older than 1s); oldest report ",
            b_new["first_seen_at"].as_str().expect("time"),
            reported(&new),
            reported(&new) - due_new
        )),
        "{text}"
    );
}

#[test]
fn max_billed_counts_refreshes_and_their_gets_and_an_unsent_refresh_is_not_started() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        seed: 15,
        inline_rate: 0.0,
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    let fleet = vins(30, 65);
    write_csv(&dir.join("in.csv"), &fleet);
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(0);
    let done = count(&dir, "SELECT count(*) FROM vins WHERE state = 'done'");
    assert!(done > 10);
    std::thread::sleep(Duration::from_millis(300));
    let before = sb.ledger();
    // One call at a time, 10 billed calls: 5 refreshes (each leaving room for its get), 5 gets.
    let out = vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--refresh-older-than", "200ms"])
        .args(["--max-billed", "10", "--concurrency", "1"])
        .assert()
        .code(75);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        err.contains(&format!(
            "{} VINs due to be bought again (refresh or retry) were not",
            done - 5
        )),
        "{err}"
    );
    let after = sb.ledger();
    assert_eq!(
        (
            after.generate_billed - before.generate_billed,
            after.get_billed - before.get_billed
        ),
        (5, 5)
    );
    assert_eq!(count(&dir, "SELECT count(*) FROM purchases"), 5);
    // The refreshes the budget did not reach were never started: still done, one report each,
    // nothing queued. So a run without the option buys nothing.
    assert_eq!(
        count(&dir, "SELECT count(*) FROM vins WHERE state = 'done'"),
        done
    );
    assert_eq!(
        count(&dir, "SELECT count(*) FROM vins WHERE state = 'queued'"),
        0
    );
    assert_eq!(count(&dir, "SELECT count(*) FROM reports"), done + 5);
    let calls = sb.ledger().calls_total;
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(0);
    assert_eq!(sb.ledger().calls_total, calls);
}

#[test]
fn a_refresh_that_fails_leaves_the_previous_report_the_latest_and_can_be_retried() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        seed: 16,
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    let fleet = vins(12, 66);
    write_csv(&dir.join("in.csv"), &fleet);
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(0);
    let with_report = with_report(&cfg, &fleet);
    let first = versions(&dir);
    std::thread::sleep(Duration::from_millis(300));
    // Every refresh is billed but answered without a report: failed as billed_unusable.
    sb.set_faults(vmr::sandbox::Faults {
        unusable_rate: 1.0,
        ..vmr::sandbox::Faults::default()
    });
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--refresh-older-than", "200ms"])
        .assert()
        .code(0);
    assert_eq!(versions(&dir), first, "no report changed or was added");
    let requests = table(&dir, "requests");
    for r in requests.iter().filter(|r| with_report.contains(&r["vin"])) {
        assert_eq!(r["status"], "failed", "{r:?}");
        assert!(r["message"].starts_with("billed_unusable"), "{r:?}");
        assert_eq!(
            (r["purchases"].as_str(), r["report_version"].as_str()),
            ("2", "1")
        );
    }
    assert!(
        table(&dir, "reports")
            .iter()
            .all(|r| r["version"] == "1" && r["is_latest"] == "true")
    );
    // The audit still grades them by that report.
    vmr(&dir, &sb)
        .args(["audit", "--as-of", "2026-01-01"])
        .assert()
        .success();
    assert_eq!(table(&dir, "vehicle_flags").len(), with_report.len());
    // A failed refresh is not refreshed again by the option, only by --retry-failed.
    sb.set_faults(vmr::sandbox::Faults::default());
    let calls = sb.ledger().calls_total;
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--refresh-older-than", "1ms"])
        .assert()
        .code(0);
    assert_eq!(sb.ledger().calls_total, calls);
    vmr(&dir, &sb)
        .args([
            "run",
            "--input",
            "in.csv",
            "--retry-failed",
            "billed_unusable",
        ])
        .assert()
        .code(0);
    let now = versions(&dir);
    for v in &with_report {
        assert_eq!(now[v].len(), 2, "{v}");
        assert_eq!(now[v][0], first[v][0], "{v}");
    }
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM vins WHERE purchase = 3 AND state = 'done'"
        ),
        with_report.len() as i64
    );
}
