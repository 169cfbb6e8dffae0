//! The checkpoint in PostgreSQL, against a real server (pgserver.rs): `vmr state copy` there and
//! back loses no row and no body byte; an occupied target, a password on the command line, a
//! wrong password and a newer schema are refused without showing the password; several workers
//! share one schema, its rate and budget, and a lapsed claim fences a worker's writes.

use crate::common::*;
use crate::pgserver::{self, PASSWORD};
use rusqlite::types::Value;
use std::path::Path;
use vmr::sandbox::SandboxConfig;

/// Every table of the checkpoint, in key order, as SQLite holds it.
const TABLES: &[(&str, &str)] = &[
    ("meta", "key"),
    ("batches", "id"),
    ("vins", "id"),
    ("calls", "id"),
    ("runs", "id"),
    ("resolutions", "id"),
    ("reports", "vin_id, version"),
    ("purchases", "vin_id, purchase"),
    ("batch_vins", "batch_id, vin_id"),
];

fn dump(db: &Path) -> Vec<(String, Vec<Vec<Value>>)> {
    let conn = rusqlite::Connection::open(db).expect("open");
    TABLES
        .iter()
        .map(|(t, key)| {
            let mut st = conn
                .prepare(&format!("SELECT * FROM {t} ORDER BY {key}"))
                .expect("select");
            let n = st.column_count();
            let rows = st
                .query_map([], |r| (0..n).map(|i| r.get::<_, Value>(i)).collect())
                .expect("rows")
                .collect::<Result<Vec<Vec<Value>>, _>>()
                .expect("read");
            (t.to_string(), rows)
        })
        .collect()
}

/// `vmr state copy` with the password in the environment only.
fn copy_cmd(dir: &Path, from: &str, to: &str) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("vmr").expect("vmr");
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PGPASSWORD", PASSWORD)
        .current_dir(dir)
        .args(["state", "copy", "--from", from, "--to", to]);
    c
}

fn output(a: &assert_cmd::assert::Assert) -> String {
    let o = a.get_output();
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A checkpoint with the variety a real one has: reports in two versions, failures, rejected
/// rows, calls with and without bodies, several runs.
fn bought_fleet(dir: &Path, sb: &vmr::sandbox::Sandbox) {
    let mut fleet = vins(120, 61);
    // 703: a make the vendor does not cover (a failure with its code).
    fleet.push(with_check_digit("LRW61ABC000000777"));
    write_csv(&dir.join("fleet.csv"), &fleet);
    let mut csv = std::fs::read_to_string(dir.join("fleet.csv")).expect("csv");
    csv.push_str("NOTAVIN,https://img.example-fleet.cn/x.jpg\n");
    std::fs::write(dir.join("fleet.csv"), csv).expect("csv");
    vmr(dir, sb)
        .args(["run", "--input", "fleet.csv"])
        .assert()
        .code(0);
    std::thread::sleep(std::time::Duration::from_millis(20));
    vmr(dir, sb)
        .args(["run", "--input", "fleet.csv", "--refresh-older-than", "1ms"])
        .assert()
        .code(0);
    assert!(count(dir, "SELECT count(*) FROM reports WHERE version = 2") > 100);
    assert!(count(dir, "SELECT count(*) FROM vins WHERE state = 'rejected'") == 1);
    assert!(count(dir, "SELECT count(*) FROM calls WHERE body IS NOT NULL") > 100);
}

#[test]
fn state_copy_to_postgres_and_back_keeps_every_row_and_body_byte() {
    let Some(pg) = pgserver::server() else { return };
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    bought_fleet(&dir, &sb);
    let bought = sb.ledger().calls_total;
    let url = format!("{}?schema=fleet_a", pg.new_database("copy"));
    let a = copy_cmd(&dir, "state", &url).assert().code(0);
    let out = output(&a);
    assert!(out.contains("reports 2"), "{out}");
    assert!(!out.contains(PASSWORD));

    // In PostgreSQL: the same rows, the bodies byte for byte.
    let mut c = pg.client_for(&url);
    let sqlite = rusqlite::Connection::open(dir.join("state/checkpoint.sqlite")).expect("open");
    let mut want: Vec<(i64, i64, Vec<u8>)> = sqlite
        .prepare("SELECT vin_id, version, body FROM reports ORDER BY vin_id, version")
        .expect("q")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("read");
    let got: Vec<(i64, i64, Vec<u8>)> = c
        .query(
            "SELECT vin_id, version, body FROM fleet_a.reports ORDER BY vin_id, version",
            &[],
        )
        .expect("q")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "report bodies differ in PostgreSQL");
    want.clear();
    // The next id PostgreSQL hands out follows the copied ones.
    let max: i64 = sqlite
        .query_row("SELECT max(id) FROM calls", [], |r| r.get(0))
        .expect("max");
    let next: i64 = c
        .query_one(
            "SELECT nextval(pg_get_serial_sequence('fleet_a.calls', 'id'))",
            &[],
        )
        .expect("nextval")
        .get(0);
    assert_eq!(next, max + 1);

    // And back into a new state directory: every table equal, value for value.
    copy_cmd(&dir, &url, "back").assert().code(0);
    let original = dump(&dir.join("state/checkpoint.sqlite"));
    let back = dump(&dir.join("back/checkpoint.sqlite"));
    for ((t, a), (_, b)) in original.iter().zip(&back) {
        assert_eq!(a.len(), b.len(), "{t}: row count");
        assert!(a == b, "{t}: rows differ after the round trip");
    }
    // The copy is a checkpoint vmr works on: nothing left to buy, the same reports exported.
    let a = vmr(&dir, &sb)
        .args(["--state", "back", "--out", "out-back", "export"])
        .assert()
        .code(0);
    let out = output(&a);
    assert!(out.contains("export"), "{out}");
    let a = vmr(&dir, &sb)
        .args(["--state", "back", "run", "--input", "fleet.csv"])
        .assert()
        .code(0);
    assert_eq!(
        sb.ledger().calls_total,
        bought,
        "the copy bought again: {}",
        output(&a)
    );
}

#[test]
fn state_copy_refuses_an_occupied_target_and_a_password_on_the_command_line() {
    let Some(pg) = pgserver::server() else { return };
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    write_csv(&dir.join("fleet.csv"), &vins(20, 62));
    vmr(&dir, &sb)
        .args(["run", "--input", "fleet.csv"])
        .assert()
        .code(0);
    let url = pg.new_database("refuse");

    // A password in the URL on the command line: refused before any connection, not shown.
    let with_pw = url.replacen("vmr@", &format!("vmr:{PASSWORD}@"), 1);
    let a = copy_cmd(&dir, "state", &with_pw).assert().code(2);
    let out = output(&a);
    assert!(out.contains("PGPASSWORD"), "{out}");
    assert!(!out.contains(PASSWORD), "{out}");
    let mut c = pg.client_for(&url);
    let schemas: i64 = c
        .query_one(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'vmr'",
            &[],
        )
        .expect("q")
        .get(0);
    assert_eq!(schemas, 0, "a refused copy created the schema");

    // A wrong password: the server's refusal, not the password.
    let a = copy_cmd(&dir, "state", &url)
        .env("PGPASSWORD", "wrong-pw-9f2")
        .assert()
        .code(1);
    let out = output(&a);
    assert!(out.contains("password authentication failed"), "{out}");
    assert!(!out.contains("wrong-pw-9f2"), "{out}");

    // A password file (0600) serves as well as PGPASSWORD; one readable by others is ignored.
    let pgpass = dir.join("pgpass");
    std::fs::write(&pgpass, format!("127.0.0.1:*:*:vmr:{PASSWORD}\n")).expect("pgpass");
    set_mode(&pgpass, 0o644);
    copy_cmd(&dir, "state", &format!("{url}?schema=via_file"))
        .env_remove("PGPASSWORD")
        .env("PGPASSFILE", &pgpass)
        .assert()
        .code(1);
    set_mode(&pgpass, 0o600);
    copy_cmd(&dir, "state", &format!("{url}?schema=via_file"))
        .env_remove("PGPASSWORD")
        .env("PGPASSFILE", &pgpass)
        .assert()
        .code(0);

    // Into the default schema, then again: the second copy is refused and changes nothing.
    copy_cmd(&dir, "state", &url).assert().code(0);
    let calls = |c: &mut postgres::Client| -> i64 {
        c.query_one("SELECT count(*) FROM vmr.calls", &[])
            .expect("q")
            .get(0)
    };
    let before = calls(&mut c);
    let a = copy_cmd(&dir, "state", &url).assert().code(2);
    assert!(output(&a).contains("already holds a checkpoint"));
    assert_eq!(calls(&mut c), before);

    // Back into a state directory that holds a checkpoint: refused, untouched.
    let before = dump(&dir.join("state/checkpoint.sqlite"));
    let a = copy_cmd(&dir, &url, "state").assert().code(2);
    assert!(output(&a).contains("already holds a checkpoint"));
    assert!(dump(&dir.join("state/checkpoint.sqlite")) == before);

    // Tables from a newer vmr: refused, and no state directory is left behind.
    c.batch_execute("INSERT INTO vmr.vmr_schema (version) VALUES (99)")
        .expect("bump");
    let a = copy_cmd(&dir, &url, "newer").assert().code(2);
    assert!(output(&a).contains("newer than this vmr"), "{}", output(&a));
    assert!(!dir.join("newer/checkpoint.sqlite").exists());

    // A schema without a checkpoint.
    let a = copy_cmd(&dir, &format!("{url}?schema=nothing_here"), "empty")
        .assert()
        .code(2);
    assert!(output(&a).contains("no checkpoint there"), "{}", output(&a));

    // `--state` with a password on the command line: refused, never echoed.
    let a = vmr(&dir, &sb)
        .args(["--state", &with_pw, "status"])
        .assert()
        .code(2);
    assert!(!output(&a).contains(PASSWORD));
    assert!(output(&a).contains("PGPASSWORD"), "{}", output(&a));
    assert!(!dir.join("postgres:").exists());
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `vmr` with its checkpoint in the PostgreSQL database `url` (password in the environment).
pub(crate) fn vmr_pg(dir: &Path, sb: &vmr::sandbox::Sandbox, url: &str) -> std::process::Command {
    let mut c = vmr_std(dir, sb);
    c.env("PGPASSWORD", PASSWORD).args(["--state", url]);
    c
}

/// Waits for a worker, which must end with 0 or 75 (work remains); its log is shown if not.
pub(crate) fn ends_with_0_or_75(worker: &mut std::process::Child, log: &Path) {
    let code = worker.wait().expect("worker ends").code();
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        matches!(code, Some(0 | 75)),
        "{}: {code:?}\n{text}",
        log.display()
    );
}

/// Waits until `done()` or `secs` pass, failing with `what`.
pub(crate) fn wait_for(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The instants (ms, the database's clock) at which the workers whose JSON logs are `logs`
/// were granted a token of the shared rate, per worker.
fn grants(logs: &[std::path::PathBuf]) -> Vec<Vec<i64>> {
    logs.iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .expect("worker log")
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter_map(|v| v["granted_at_ms"].as_i64())
                .collect()
        })
        .collect()
}

/// The most of `instants` (sorted) within any one second.
fn busiest_second(instants: &[i64]) -> usize {
    (0..instants.len())
        .map(|i| instants[i..].partition_point(|&t| t < instants[i] + 1000))
        .max()
        .unwrap_or(0)
}

#[test]
fn three_workers_share_a_schema_its_rate_and_budget_and_a_killed_one_buys_nothing_twice() {
    let Some(pg) = pgserver::server() else { return };
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig {
        latency: std::time::Duration::from_millis(20),
        ..SandboxConfig::default()
    });
    let fleet = vins(500, 63);
    write_csv(&dir.join("fleet.csv"), &fleet);
    let url = format!("{}?schema=team_b", pg.new_database("workers"));
    let (rate, burst, budget, concurrency): (u32, u32, u64, u64) = (60, 5, 600, 6);
    let logs: Vec<_> = (0..3).map(|i| dir.join(format!("worker{i}.log"))).collect();
    // Three workers on one schema, each ingesting the same file, as N pods of a Job would. The
    // third to start asks for a faster rate: the lowest rate of the account's workers wins.
    let start = |i: usize, rate: u32| {
        vmr_pg(&dir, &sb, &url)
            .env("RUST_LOG", "info,vmr::rate=trace")
            .args(["--log-format", "json", "--run-id", "audit-2026-12"])
            .args(["--rate", &rate.to_string(), "--burst", &burst.to_string()])
            .args(["--max-billed", &budget.to_string()])
            .args(["--concurrency", &concurrency.to_string()])
            .args(["--out", &format!("out{i}"), "run", "--input", "fleet.csv"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&logs[i]).expect("log file"))
            .spawn()
            .expect("vmr starts")
    };
    let first = start(0, rate);
    let third = start(2, rate);
    wait_for(60, "the first calls", || sb.ledger().calls_total >= 20);
    let mut workers = [first, start(1, 4 * rate), third];
    wait_for(60, "200 calls", || sb.ledger().calls_total >= 200);

    // status reads alongside: three live workers, the URL shown without a password.
    let status = vmr_pg(&dir, &sb, &url)
        .args(["status", "--json"])
        .output()
        .expect("status runs");
    assert_eq!(status.status.code(), Some(0));
    let st: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    let listed = st["workers"].as_array().expect("workers listed").clone();
    assert_eq!(listed.len(), 3, "{listed:?}");
    let mut rates: Vec<i64> = listed.iter().filter_map(|w| w["rate"].as_i64()).collect();
    rates.sort_unstable();
    assert_eq!(rates, [rate as i64, rate as i64, 4 * rate as i64]);
    for w in &listed {
        assert_eq!(w["command"], "run");
        assert_eq!(w["run_id"], "audit-2026-12");
        assert!(w["pid"].as_i64().is_some_and(|p| p > 0), "{w}");
        assert!(
            w["heartbeat_age_ms"].as_i64().is_some_and(|a| a < 10_000),
            "{w}"
        );
    }
    let shown = st["checkpoint"].as_str().expect("checkpoint").to_owned();
    assert!(shown.starts_with("postgres://vmr@127.0.0.1:"), "{shown}");
    assert!(!String::from_utf8_lossy(&status.stdout).contains(PASSWORD));

    // One worker is killed mid-run; the other two carry on until the shared budget is spent.
    workers[1].kill().expect("SIGKILL");
    workers[1].wait().expect("reaped");
    for i in [0, 2] {
        ends_with_0_or_75(&mut workers[i], &logs[i]);
    }
    let first = sb.ledger();
    assert!(
        first.billed_total <= budget,
        "{} calls billed under a shared --max-billed {budget}",
        first.billed_total
    );

    // The rate, measured where tokens are granted: at most rate + burst (the lowest rate's) in
    // any second across the three, and every worker got tokens.
    let per_worker = grants(&logs);
    for (i, g) in per_worker.iter().enumerate() {
        assert!(!g.is_empty(), "worker {i} was granted no token");
    }
    let mut all: Vec<i64> = per_worker.concat();
    all.sort_unstable();
    let busiest = busiest_second(&all);
    assert!(
        busiest <= (rate + burst) as usize,
        "{busiest} tokens granted within one second at --rate {rate} --burst {burst}"
    );
    assert!(all.len() as u64 >= first.calls_total.saturating_sub(3 * concurrency));

    // A final run finishes the rest. Nothing was bought twice but what is listed uncertain,
    // at most what the killed worker had in flight.
    let out = vmr_pg(&dir, &sb, &url)
        .args(["run", "--input", "fleet.csv"])
        .output()
        .expect("vmr runs");
    let code = out.status.code();
    assert!(
        matches!(code, Some(0 | 75)),
        "{code:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uncertain = in_flight_pg(pg, &url);
    let ledger = sb.ledger();
    for (vin, bought) in &ledger.per_vin {
        if bought.generate > 1 {
            assert!(
                uncertain.contains(vin),
                "{vin} bought twice without being uncertain"
            );
        }
    }
    assert!(
        uncertain.len() as u64 <= concurrency,
        "at most the killed worker's --concurrency {concurrency} in flight: {uncertain:?}"
    );
    // Every VIN is settled, and every report paid for is kept.
    let mut c = pg.client_for(&url);
    let open: i64 = c
        .query_one(
            "SELECT count(*) FROM team_b.vins WHERE state IN ('queued', 'submitting', 'pending')",
            &[],
        )
        .expect("count")
        .get(0);
    assert_eq!(open, 0);
    let (done, reports): (i64, i64) = {
        let r = c
            .query_one(
                "SELECT (SELECT count(*) FROM team_b.vins WHERE state = 'done'),
                        (SELECT count(DISTINCT vin_id) FROM team_b.reports)",
                &[],
            )
            .expect("count");
        (r.get(0), r.get(1))
    };
    assert!(
        done > 400 && reports == done,
        "{done} done, {reports} with a report"
    );
    let billed_logged: i64 = c
        .query_one("SELECT count(*) FROM team_b.calls WHERE billed = 1", &[])
        .expect("count")
        .get(0);
    // What the vendor billed and vmr never heard of is what the killed worker had in flight.
    assert!(
        ledger.billed_total - billed_logged as u64 <= concurrency,
        "{} billed, {billed_logged} in the call log",
        ledger.billed_total
    );
    // No worker is left registered, and no VIN claimed.
    let (live, claimed): (i64, i64) = {
        let r = c
            .query_one(
                "SELECT (SELECT count(*) FROM team_b.workers),
                        (SELECT count(*) FROM team_b.vins WHERE claimed_by IS NOT NULL)",
                &[],
            )
            .expect("count");
        (r.get(0), r.get(1))
    };
    assert_eq!((live, claimed), (0, 0));
}

#[test]
fn a_worker_whose_claim_lapsed_keeps_its_late_answer_in_the_call_log_and_leaves_the_vin() {
    let Some(pg) = pgserver::server() else { return };
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig {
        latency: std::time::Duration::from_millis(400),
        ..SandboxConfig::default()
    });
    write_csv(&dir.join("fleet.csv"), &vins(12, 64));
    let url = format!("{}?schema=fence", pg.new_database("fence"));
    // --timeout 2s (vmr_std): a lease of 12 s.
    let mut worker = vmr_pg(&dir, &sb, &url)
        .args(["--concurrency", "4", "submit", "--input", "fleet.csv"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("vmr starts");
    wait_for(30, "a generate in flight", || sb.ledger().calls_total >= 1);
    // Hold the VINs whose generate is in flight: the worker's writes for them wait, its
    // heartbeat cannot renew their claims, and the claims lapse while the answers are in hand.
    let mut c = pg.client_for(&url);
    let mut tx = c.transaction().expect("begin");
    let held: Vec<String> = tx
        .query(
            "SELECT vin FROM fence.vins WHERE state = 'submitting' FOR UPDATE",
            &[],
        )
        .expect("lock")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!held.is_empty(), "generates in flight");
    std::thread::sleep(std::time::Duration::from_secs(13));
    tx.commit().expect("commit");
    let code = worker.wait().expect("worker ends").code();
    assert!(matches!(code, Some(0 | 75)), "{code:?}");

    let ledger = sb.ledger();
    for vin in &held {
        // Billed by the vendor, its answer kept in the call log (body and all), and the VIN
        // left to a person: uncertain, never done or pending on a lapsed claim.
        assert_eq!(ledger.per_vin[vin].generate, 1, "{vin}");
        let r = c
            .query_one(
                "SELECT v.state, (SELECT count(*) FROM fence.calls k WHERE k.vin_id = v.id
                        AND k.endpoint = 'generate' AND k.billed = 1 AND k.body IS NOT NULL),
                    (SELECT count(*) FROM fence.reports r WHERE r.vin_id = v.id)
                 FROM fence.vins v WHERE v.vin = $1",
                &[vin],
            )
            .expect("row");
        let (state, kept, reports): (String, i64, i64) = (r.get(0), r.get(1), r.get(2));
        assert_eq!(state, "uncertain", "{vin}");
        assert_eq!(
            (kept, reports),
            (1, 0),
            "{vin}: the late answer is in the call log"
        );
    }
    // The other VINs were bought normally, once each.
    let others: i64 = c
        .query_one(
            "SELECT count(*) FROM fence.vins WHERE state IN ('done', 'pending')",
            &[],
        )
        .expect("count")
        .get(0);
    assert_eq!(others as usize, 12 - held.len());
    assert!(ledger.per_vin.values().all(|v| v.generate <= 1));
}

/// VINs the PostgreSQL checkpoint lists uncertain (or still submitting).
pub(crate) fn in_flight_pg(
    pg: &pgserver::PgServer,
    url: &str,
) -> std::collections::BTreeSet<String> {
    let schema = url.rsplit("schema=").next().expect("schema");
    pg.client_for(url)
        .query(
            &format!("SELECT vin FROM {schema}.vins WHERE state IN ('uncertain', 'submitting')"),
            &[],
        )
        .expect("query")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[test]
fn a_throttle_pauses_every_worker_of_the_account_through_the_shared_bucket() {
    let Some(pg) = pgserver::server() else { return };
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        throttle_every: 250,
        throttle_secs: 2,
        seed: 71,
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    let fleet = vins(400, 71);
    write_csv(&dir.join("fleet.csv"), &fleet);
    let url = format!("{}?schema=throttled", pg.new_database("throttle"));
    let logs: Vec<_> = (0..2).map(|i| dir.join(format!("worker{i}.log"))).collect();
    let start = |i: usize| {
        vmr_pg(&dir, &sb, &url)
            .args(["--log-format", "json", "--rate", "400", "--burst", "20"])
            .args(["--concurrency", "8", "--out", &format!("out{i}")])
            .args(["run", "--input", "fleet.csv"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&logs[i]).expect("log file"))
            .spawn()
            .expect("vmr starts")
    };
    let mut workers = [start(0), start(1)];
    for w in &mut workers {
        let code = w.wait().expect("worker ends").code();
        assert!(matches!(code, Some(0 | 75)), "exit {code:?}");
    }
    // A last run settles what the other worker held when one finished.
    let out = vmr_pg(&dir, &sb, &url)
        .args(["run", "--input", "fleet.csv"])
        .output()
        .expect("vmr runs");
    assert_eq!(out.status.code(), Some(0));
    let ledger = sb.ledger();
    assert!(
        ledger.throttle_windows.len() >= 2,
        "{:?}",
        ledger.throttle_windows
    );
    // Counted by order: a window refuses what both workers had in flight when it opened, and a
    // handful more; then every worker waits (the shared bucket is in debt for the wait).
    for (i, refused) in ledger.throttle_windows.iter().enumerate() {
        assert!(*refused <= 2 * 8 + 10, "window {i} refused {refused} calls");
    }
    for (vin, l) in &ledger.per_vin {
        assert!(l.generate <= 1, "{vin} bought twice");
    }
    for log in &logs {
        let text = std::fs::read_to_string(log).expect("log");
        assert!(
            !text.contains("cannot pause the shared rate limit"),
            "{text}"
        );
    }
    let copy = dir.join("copy");
    copy_cmd(&dir, &url, copy.to_str().expect("path"))
        .assert()
        .code(0);
    let conn = rusqlite::Connection::open(copy.join("checkpoint.sqlite")).expect("copy opens");
    let not_done: i64 = conn
        .query_row(
            "SELECT count(*) FROM vins WHERE state NOT IN ('done', 'failed')",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(not_done, 0);
}

/// The JSON log line a poll loop writes when it ends.
fn poll_loop_end(log: &Path) -> serde_json::Value {
    std::fs::read_to_string(log)
        .expect("worker log")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "poll loop ended")
        .unwrap_or_else(|| panic!("no end of the poll loop in {}", log.display()))
}

#[test]
fn an_idle_poll_worker_beside_one_holding_every_due_vin_waits_instead_of_spinning() {
    let Some(pg) = pgserver::server() else { return };
    let (_t, dir) = tempdir();
    // Every get takes 4 s and answers 701: the busy worker holds every due VIN.
    let sb = sandbox(SandboxConfig {
        latency: std::time::Duration::from_secs(4),
        inline_rate: 0.0,
        ready_after: vmr::sandbox::ReadyAfter::Polls(1_000_000),
        ..SandboxConfig::default()
    });
    write_csv(&dir.join("fleet.csv"), &vins(12, 72));
    let url = format!("{}?schema=idle", pg.new_database("idle"));
    let submitted = vmr_pg(&dir, &sb, &url)
        .args(["--timeout", "20s", "submit", "--input", "fleet.csv"])
        .output()
        .expect("submit runs");
    assert_eq!(submitted.status.code(), Some(75));
    let poller = |log: &str, concurrency: &str| {
        vmr_pg(&dir, &sb, &url)
            .args([
                "--log-format",
                "json",
                "--timeout",
                "20s",
                "--concurrency",
                concurrency,
            ])
            .args([
                "--poll-timeout",
                "1h",
                "--max-wait",
                "60s",
                "poll",
                "--wait",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join(log)).expect("log file"))
            .spawn()
            .expect("vmr starts")
    };
    let mut busy = poller("busy.log", "16");
    let mut client = pg.client_for(&url);
    wait_for(30, "every VIN claimed", || {
        client
            .query_one(
                "SELECT count(*) FROM idle.vins WHERE claimed_by IS NOT NULL",
                &[],
            )
            .map(|r| r.get::<_, i64>(0))
            .is_ok_and(|n| n == 12)
    });
    let mut idle = poller("idle.log", "4");
    std::thread::sleep(std::time::Duration::from_secs(10));
    for child in [&mut idle, &mut busy] {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().expect("worker ends");
    }
    let end = poll_loop_end(&dir.join("idle.log"));
    let statements = end["statements"].as_u64().expect("statements");
    let secs = end["secs"].as_f64().expect("secs");
    assert!(secs >= 9.0, "{end}");
    assert!(
        statements as f64 <= 5.0 * secs,
        "the idle worker sent {statements} statements in {secs:.1} s"
    );
}

#[test]
fn a_worker_paused_past_its_lease_sends_nothing_for_the_vins_another_worker_took_meanwhile() {
    let Some(pg) = pgserver::server() else { return };
    let (_t, dir) = tempdir();
    // Every call is refused with Retry-After 20 s: the first worker's tasks all wait.
    let sb = sandbox(SandboxConfig {
        gateway_error_rate: 1.0,
        retry_after_secs: 20,
        ..SandboxConfig::default()
    });
    let fleet = vins(8, 73);
    write_csv(&dir.join("fleet.csv"), &fleet);
    let url = format!("{}?schema=paused", pg.new_database("paused"));
    let mut first = vmr_pg(&dir, &sb, &url)
        .args(["--timeout", "1s", "--concurrency", "8", "--out", "out1"])
        .args(["submit", "--input", "fleet.csv"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("first.log")).expect("log"))
        .spawn()
        .expect("vmr starts");
    // The first refusal pauses the whole account; every task has written its VIN `submitting`
    // and waits.
    wait_for(30, "a refusal", || sb.ledger().gateway_errors >= 1);
    let mut client = pg.client_for(&url);
    wait_for(30, "every VIN submitting", || {
        client
            .query_one(
                "SELECT count(*) FROM paused.vins WHERE state = 'submitting'",
                &[],
            )
            .map(|r| r.get::<_, i64>(0))
            .is_ok_and(|n| n == 8)
    });
    // At a quiet instant (every refusal recorded, no transaction open), the worker is paused
    // (SIGSTOP: a long GC, a partition) past its lease of 11 s.
    std::thread::sleep(std::time::Duration::from_secs(2));
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(first.id() as i32, libc::SIGSTOP) };
    std::thread::sleep(std::time::Duration::from_secs(13));
    // Meanwhile the vendor serves again, and a second worker finds the lapsed claims: the VINs
    // whose generate was under way become uncertain, and the user resubmits them.
    sb.set_faults(vmr::sandbox::Faults::default());
    let second = vmr_pg(&dir, &sb, &url)
        .args([
            "--out",
            "out2",
            "submit",
            "--input",
            "fleet.csv",
            "--resubmit-uncertain",
        ])
        .output()
        .expect("vmr runs");
    assert!(matches!(second.status.code(), Some(0 | 75)), "{second:?}");
    let bought = sb.ledger().generate_billed;
    assert_eq!(bought, 8, "the second worker bought every VIN");
    // The first worker wakes: its heartbeat renews, its Retry-After ends, and it must send
    // nothing for VINs it no longer holds.
    // SAFETY: as above.
    unsafe { libc::kill(first.id() as i32, libc::SIGCONT) };
    let status = first.wait().expect("first worker ends");
    assert!(matches!(status.code(), Some(0 | 75)), "{status:?}");
    let ledger = sb.ledger();
    for (vin, l) in &ledger.per_vin {
        assert_eq!(l.generate, 1, "{vin} bought twice");
    }
    assert_eq!(ledger.generate_billed, 8);
}

#[test]
fn a_version_2_postgres_checkpoint_reaches_the_shared_schema_version_with_typed_failures() {
    let Some(pg) = pgserver::server() else { return };
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    let url = format!("{}?schema=older", pg.new_database("migrate"));
    let mut fleet = vins(20, 63);
    let unsupported = with_check_digit("LRW63ABC000000777");
    fleet.push(unsupported.clone());
    write_csv(&dir.join("in.csv"), &fleet);
    let ran = vmr_pg(&dir, &sb, &url)
        .args(["run", "--input", "in.csv"])
        .status()
        .expect("vmr runs");
    assert_eq!(ran.code(), Some(0));
    let mut c = pg.client_for(&url);
    let done: Vec<String> = c
        .query(
            "SELECT vin FROM older.vins WHERE state = 'done' ORDER BY id LIMIT 2",
            &[],
        )
        .expect("q")
        .iter()
        .map(|r| r.get(0))
        .collect();
    // What a vmr of PostgreSQL schema 2 left: failures told apart by their message only.
    c.batch_execute(&format!(
        "UPDATE older.vins SET state = 'failed', code = 200,
            message = 'billed_unusable: a get answer held no report object' WHERE vin = '{}';
         UPDATE older.vins SET state = 'failed', message = 'abandoned: reconciled by hand'
            WHERE vin = '{}';
         ALTER TABLE older.vins DROP COLUMN failure;
         ALTER TABLE older.purchases DROP COLUMN failure;
         ALTER TABLE older.calls DROP COLUMN uid;
         DELETE FROM older.vmr_schema;
         INSERT INTO older.vmr_schema (version) VALUES (1), (2);",
        done[0], done[1]
    ))
    .expect("make a schema-2 checkpoint");
    // A reader migrates it first, as a writer would.
    let out = vmr_pg(&dir, &sb, &url)
        .args(["status", "--json"])
        .output()
        .expect("status runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(st["billed_unusable_total"], 1, "{st}");
    assert_eq!(st["billed_unusable"][0], done[0].as_str());
    let version: i64 = c
        .query_one("SELECT max(version) FROM older.vmr_schema", &[])
        .expect("q")
        .get(0);
    assert_eq!(version, 5);
    let kinds: std::collections::BTreeMap<String, String> = c
        .query(
            "SELECT vin, failure FROM older.vins WHERE state = 'failed'",
            &[],
        )
        .expect("q")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_failure_kinds(&kinds, &done[0], &done[1], &unsupported);
    // A writer opens it at the shared version: nothing more to migrate, the run goes on.
    let ran = vmr_pg(&dir, &sb, &url)
        .args([
            "run",
            "--input",
            "in.csv",
            "--retry-failed",
            "billed_unusable",
        ])
        .status()
        .expect("vmr runs");
    assert_eq!(ran.code(), Some(0));
    let state: String = c
        .query_one("SELECT state FROM older.vins WHERE vin = $1", &[&done[0]])
        .expect("q")
        .get(0);
    assert_eq!(state, "done");
}

/// A certificate authority made for one test, and a server certificate it signed for `names`.
struct TestPki {
    ca_pem: String,
    server_pem: String,
    server_key_pem: String,
}

fn test_pki(names: &[&str]) -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "vmr test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("server key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let server = CertificateParams::new(names)
        .expect("server params")
        .signed_by(&key, &issuer)
        .expect("server certificate");
    TestPki {
        ca_pem: ca_cert.pem(),
        server_pem: server.pem(),
        server_key_pem: key.serialize_pem(),
    }
}

#[test]
fn tls_to_postgresql_checks_the_server_as_sslmode_says_and_a_tls_only_server_refuses_plain() {
    let pki = test_pki(&["db.internal.example"]);
    let other = test_pki(&["db.internal.example"]);
    let server = pgserver::start_own("pgtls", |base, ids| {
        let write = |name: &str, text: &str| -> Result<String, String> {
            let path = base.join(name);
            std::fs::write(&path, text).map_err(|e| e.to_string())?;
            set_mode(&path, 0o600);
            pgserver::chown(&path, ids);
            Ok(path.display().to_string())
        };
        let cert = write("server.crt", &pki.server_pem)?;
        let key = write("server.key", &pki.server_key_pem)?;
        // Only TLS connections from outside; the socket stays open for the test's own setup.
        let hba = write(
            "hba.conf",
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        )?;
        Ok(vec![
            "ssl=on".into(),
            format!("ssl_cert_file={cert}"),
            format!("ssl_key_file={key}"),
            format!("hba_file={hba}"),
        ])
    });
    let server = match server {
        Ok(s) => s,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("{e}"),
        Err(e) => {
            eprintln!("SKIPPED: no PostgreSQL server with TLS could be started ({e})");
            return;
        }
    };
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    write_csv(&dir.join("in.csv"), &vins(20, 64));
    std::fs::write(dir.join("ca.pem"), &pki.ca_pem).expect("ca");
    std::fs::write(dir.join("other-ca.pem"), &other.ca_pem).expect("other ca");
    let url = |schema: &str, tls: &str| {
        format!(
            "postgres://{}@127.0.0.1:{}/postgres?schema={schema}&{tls}",
            pgserver::USER,
            server.port
        )
    };
    let ingest = |schema: &str, tls: &str| {
        let out = vmr_pg(&dir, &sb, &url(schema, tls))
            .args(["ingest", "--input", "in.csv"])
            .output()
            .expect("vmr runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let ca = dir.join("ca.pem").display().to_string();
    let other_ca = dir.join("other-ca.pem").display().to_string();

    // The chain checked against the right root: connected (and only TLS gets in).
    let (code, err) = ingest("chain", &format!("sslmode=verify-ca&sslrootcert={ca}"));
    assert_eq!(code, Some(0), "{err}");
    // Encrypted without a check, as libpq's require.
    let (code, err) = ingest("plain_require", "sslmode=require");
    assert_eq!(code, Some(0), "{err}");
    // A run over TLS, end to end.
    let run = vmr_pg(
        &dir,
        &sb,
        &url("chain", &format!("sslmode=verify-ca&sslrootcert={ca}")),
    )
    .args(["run", "--input", "in.csv"])
    .status()
    .expect("vmr runs");
    assert_eq!(run.code(), Some(0));
    // Another authority's certificate: refused, naming why.
    let (code, err) = ingest(
        "wrong_ca",
        &format!("sslmode=verify-ca&sslrootcert={other_ca}"),
    );
    assert_ne!(code, Some(0));
    assert!(
        err.contains("UnknownIssuer") || err.contains("certificate"),
        "{err}"
    );
    // verify-full checks the name too: the certificate is for db.internal.example, not the
    // address connected to.
    let (code, err) = ingest("full", &format!("sslmode=verify-full&sslrootcert={ca}"));
    assert_ne!(code, Some(0));
    assert!(
        err.contains("NotValidForName") || err.contains("certificate"),
        "{err}"
    );
    // verify-full without roots: a usage error before any connection.
    let (code, err) = ingest("no_roots", "sslmode=verify-full");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("sslrootcert"), "{err}");
    // Plain text to a server that takes only TLS: refused by the server.
    let (code, err) = ingest("disabled", "sslmode=disable");
    assert_ne!(code, Some(0));
    assert!(
        err.contains("pg_hba.conf") || err.contains("no encryption"),
        "{err}"
    );
}

/// The rows of a checkpoint's `vins` and `batch_vins` that ingest writes, ids and times aside,
/// sorted: from SQLite (`dir`'s state) or from a PostgreSQL schema.
fn ingested_rows(lite: Option<&Path>, pg: Option<(&pgserver::PgServer, &str)>) -> Vec<String> {
    let vins = "SELECT vin, state, coalesce(message, ''), coalesce(license_img_url, ''),
                       coalesce(input_file, ''), coalesce(input_line, -1), coalesce(batch_id, ''),
                       coalesce(check_digit_ok, -1) FROM {s}vins";
    let members = "SELECT b.batch_id, v.vin FROM {s}batch_vins b JOIN {s}vins v ON v.id = b.vin_id";
    let mut out = Vec::new();
    if let Some(dir) = lite {
        let c = rusqlite::Connection::open(dir.join("state/checkpoint.sqlite")).expect("db");
        for (sql, n) in [(vins, 8), (members, 2)] {
            let mut st = c.prepare(&sql.replace("{s}", "")).expect("q");
            let rows = st
                .query_map([], |r| {
                    (0..n)
                        .map(|i| {
                            r.get::<_, rusqlite::types::Value>(i)
                                .map(|v| format!("{v:?}"))
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .expect("rows");
            for r in rows {
                out.push(format!("{n}|{}", r.expect("row").join("|")));
            }
        }
    }
    if let Some((pg, url)) = pg {
        let mut c = pg.client_for(url);
        for (sql, n) in [(vins, 8), (members, 2)] {
            for r in c.query(&sql.replace("{s}", "ing."), &[]).expect("q") {
                let cols: Vec<String> = (0..n)
                    .map(|i| match r.columns()[i].type_().name() {
                        "int8" => format!("{:?}", rusqlite::types::Value::Integer(r.get(i))),
                        _ => format!("{:?}", rusqlite::types::Value::Text(r.get(i))),
                    })
                    .collect();
                out.push(format!("{n}|{}", cols.join("|")));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn ingest_into_postgres_records_the_same_rows_counts_and_rejections_as_sqlite() {
    let Some(pg) = pgserver::server() else { return };
    let (_t, dir) = tempdir();
    // Duplicates within the file and across files, a bad VIN, a row without an image, a check
    // digit that does not hold: every fate a row can have.
    let fleet = vins(2500, 65);
    let mut first = String::from("vin,licenseImgUrl\n");
    for (i, v) in fleet.iter().enumerate() {
        first.push_str(&format!(
            "{v},https://img.example-fleet.cn/license/{i}.jpg\n"
        ));
        if i % 97 == 0 {
            first.push_str(&format!(
                "{v},https://img.example-fleet.cn/license/dup{i}.jpg\n"
            ));
        }
        if i % 101 == 0 {
            first.push_str("NOT-A-VIN,https://img.example-fleet.cn/license/bad.jpg\n");
        }
    }
    first.push_str(&format!("{},\n", fleet[3]));
    std::fs::write(dir.join("first.csv"), &first).expect("csv");
    let mut second = String::from("vin,licenseImgUrl\n");
    for (i, v) in fleet.iter().enumerate().skip(2000) {
        second.push_str(&format!(
            "{v},https://img.example-fleet.cn/license/{i}.jpg\n"
        ));
    }
    for v in vins(300, 66) {
        second.push_str(&format!(
            "{v},https://img.example-fleet.cn/license/new.jpg\n"
        ));
    }
    std::fs::write(dir.join("second.csv"), &second).expect("csv");
    let url = format!("{}?schema=ing", pg.new_database("ingest"));
    let sb = sandbox(SandboxConfig::default());
    let ingest = |state: &str, file: &str| {
        let out = vmr_std(&dir, &sb)
            .env("PGPASSWORD", PASSWORD)
            .args(["--state", state, "ingest", "--input", file])
            .output()
            .expect("vmr ingest");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The summary (log lines aside: PostgreSQL's notices differ).
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        text.lines()
            .filter(|l| !(l.len() > 20 && l.as_bytes()[4] == b'-' && l.as_bytes()[10] == b'T'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    // The same files, in the same order, twice each (the second time: already ingested).
    for file in ["first.csv", "first.csv", "second.csv", "second.csv"] {
        let lite = ingest("state", file);
        let post = ingest(&url, file);
        assert_eq!(lite, post, "the summaries of {file} differ");
        assert!(lite.contains("rows read"), "{lite}");
    }
    let lite = ingested_rows(Some(&dir), None);
    let post = ingested_rows(None, Some((pg, &url)));
    assert!(lite.len() > 2800, "{}", lite.len());
    assert_eq!(lite, post);
}
