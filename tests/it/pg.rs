//! The checkpoint in PostgreSQL, against a real server (pgserver.rs): `vmr state copy` there and
//! back loses no row and no body byte; an occupied target, a password on the command line, a
//! wrong password and a newer schema are refused without showing the password.

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
fn vmr_pg(dir: &Path, sb: &vmr::sandbox::Sandbox, url: &str) -> std::process::Command {
    let mut c = vmr_std(dir, sb);
    c.env("PGPASSWORD", PASSWORD).args(["--state", url]);
    c
}

#[test]
fn one_vmr_writes_a_postgres_state_at_a_time_and_a_killed_one_leaves_it_to_the_next() {
    let Some(pg) = pgserver::server() else { return };
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig {
        latency: std::time::Duration::from_millis(30),
        ..SandboxConfig::default()
    });
    let fleet = vins(400, 63);
    write_csv(&dir.join("fleet.csv"), &fleet);
    let url = format!("{}?schema=team_b", pg.new_database("lock"));
    let mut first = vmr_pg(&dir, &sb, &url)
        .args(["run", "--input", "fleet.csv", "--concurrency", "4"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("vmr starts");
    // Once the first holds the schema (it has sent calls), a second exits 75 at once.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while sb.ledger().calls_total == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the first vmr never called"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = vmr_pg(&dir, &sb, &url)
        .args(["run", "--input", "fleet.csv"])
        .output()
        .expect("vmr runs");
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(75), "{err}");
    assert!(err.contains("in use by another vmr"), "{err}");
    assert!(err.contains("schema team_b"), "{err}");
    // status reads alongside, names the location without a password, sees the writer.
    let status = vmr_pg(&dir, &sb, &url)
        .args(["status", "--json"])
        .output()
        .expect("status runs");
    assert_eq!(status.status.code(), Some(0));
    let st: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    let shown = st["checkpoint"].as_str().expect("checkpoint").to_owned();
    assert!(shown.starts_with("postgres://vmr@127.0.0.1:"), "{shown}");
    assert!(!String::from_utf8_lossy(&status.stdout).contains(PASSWORD));

    // Killed mid-run: the lock goes with its connection; the next run turns what was in flight
    // into uncertain and finishes the rest, buying nothing twice but those.
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    let out = vmr_pg(&dir, &sb, &url)
        .args(["run", "--input", "fleet.csv"])
        .output()
        .expect("vmr runs");
    let code = out.status.code();
    assert!(matches!(code, Some(0 | 75)), "{code:?}");
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
        uncertain.len() <= 4,
        "at most --concurrency 4 in flight: {uncertain:?}"
    );
    // Every report paid for is kept.
    let mut c = pg.client_for(&url);
    let reports: i64 = c
        .query_one("SELECT count(*) FROM team_b.reports", &[])
        .expect("count")
        .get(0);
    let billed: i64 = c
        .query_one(
            "SELECT count(*) FROM team_b.vins WHERE state IN ('done', 'pending')",
            &[],
        )
        .expect("count")
        .get(0);
    assert!(
        reports > 0 && reports <= billed,
        "{reports} reports, {billed} done or pending"
    );
}

/// VINs the PostgreSQL checkpoint lists uncertain (or still submitting).
fn in_flight_pg(pg: &pgserver::PgServer, url: &str) -> std::collections::BTreeSet<String> {
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
