//! Shared by the integration tests: VINs, input files, a sandbox on an ephemeral loopback port,
//! the real `vmr` binary pointed at it, and readers of the checkpoint.
//!
//! Two backends, one suite: with `VMR_TEST_BACKEND=pg` (as `.ci/run` runs the engine areas a
//! second time), `vmr` keeps each test's checkpoint in its own PostgreSQL database on the test
//! server (pgserver.rs) instead of `<dir>/state`, and the readers below read a fresh copy of it
//! (`vmr state copy` into a state directory), so the same assertions hold for both.
#![allow(dead_code)]

use assert_cmd::Command;
use rusqlite::Connection;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use vmr::sandbox::{DEFAULT_APP_ID, DEFAULT_APP_SECRET, Sandbox, SandboxConfig};

/// WMIs the sandbox supports (it answers 703 for LRW and LNB).
pub(crate) const WMIS: [&str; 8] = ["LSV", "LFV", "LHG", "LBV", "LE4", "LGB", "LVS", "LFM"];

/// `n` distinct valid VINs (correct check digit) spread over the supported makes.
pub(crate) fn vins(n: usize, salt: u32) -> Vec<String> {
    (0..n)
        .map(|i| {
            let wmi = WMIS[i % WMIS.len()];
            with_check_digit(&format!("{wmi}{salt:02}ABC0{i:08}"))
        })
        .collect()
}

/// `vin` with its check digit (position 9) set right.
pub(crate) fn with_check_digit(vin: &str) -> String {
    let mut chars: Vec<char> = vin.chars().collect();
    chars[8] = vmr::input::check_digit(vin).expect("valid VIN alphabet");
    chars.into_iter().collect()
}

/// Writes a `vin,licenseImgUrl` CSV.
pub(crate) fn write_csv(path: &Path, vins: &[String]) {
    let mut s = String::from("vin,licenseImgUrl\n");
    for (i, v) in vins.iter().enumerate() {
        s.push_str(&format!(
            "{v},https://img.example-fleet.cn/license/{i}.jpg\n"
        ));
    }
    std::fs::write(path, s).expect("write input CSV");
}

pub(crate) fn sandbox(cfg: SandboxConfig) -> Sandbox {
    Sandbox::start_in_thread(cfg, "127.0.0.1:0".parse().expect("address")).expect("sandbox starts")
}

/// The `vmr` binary with credentials in the environment, pointed at `sb`, state and out in
/// `dir`, fast settings for tests.
pub(crate) fn vmr(dir: &Path, sb: &Sandbox) -> Command {
    Command::from_std(vmr_std(dir, sb))
}

/// [`vmr`] as a plain `std::process::Command`, for children a test kills.
pub(crate) fn vmr_std(dir: &Path, sb: &Sandbox) -> std::process::Command {
    let mut c = std::process::Command::new(assert_cmd::cargo::cargo_bin("vmr"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("VMR_APP_ID", DEFAULT_APP_ID)
        .env("VMR_APP_SECRET", DEFAULT_APP_SECRET)
        .current_dir(dir)
        .args(["--base-url", &sb.base_url()])
        .env("PGPASSWORD", crate::pgserver::PASSWORD)
        .args(["--state", &state_arg(dir), "--out", "out"])
        .args(["--rate", "0", "--concurrency", "16"])
        .args(["--poll-interval", "20ms", "--timeout", "2s"]);
    c
}

/// Whether this run keeps the checkpoints in PostgreSQL (`VMR_TEST_BACKEND=pg`).
pub(crate) fn pg_backend() -> bool {
    std::env::var("VMR_TEST_BACKEND").is_ok_and(|v| v == "pg")
}

/// The test directory's PostgreSQL state URL (a database of its own, made on first use), or
/// `None` with the SQLite backend.
pub(crate) fn pg_state(dir: &Path) -> Option<String> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static URLS: OnceLock<Mutex<HashMap<PathBuf, String>>> = OnceLock::new();
    if !pg_backend() {
        return None;
    }
    let server = crate::pgserver::server().expect("VMR_TEST_BACKEND=pg needs a PostgreSQL server");
    let mut urls = URLS.get_or_init(Default::default).lock().expect("lock");
    Some(
        urls.entry(dir.to_owned())
            .or_insert_with(|| server.new_database("st"))
            .clone(),
    )
}

/// Waits (at most 5 s) until no other session on the test directory's database is in the middle
/// of a statement or transaction: a vmr killed a moment ago may have sent a COMMIT the server is
/// still finishing, which a copy taken at once would not see yet.
fn pg_quiesce(url: &str) {
    let mut c = crate::pgserver::server().expect("server").client_for(url);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let busy: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                   AND pid <> pg_backend_pid() AND state IN ('active', 'idle in transaction')",
                &[],
            )
            .map(|r| r.get(0))
            .unwrap_or(0);
        if busy == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Runs `sql` (a change made behind vmr's back) on the test directory's checkpoint.
pub(crate) fn exec_sql(dir: &Path, sql: &str) {
    match pg_state(dir) {
        None => {
            Connection::open(dir.join("state").join("checkpoint.sqlite"))
                .expect("checkpoint opens")
                .execute_batch(sql)
                .expect("SQL runs");
        }
        Some(url) => {
            let mut c = crate::pgserver::server().expect("server").client_for(&url);
            c.batch_execute(&format!("SET search_path TO vmr; {sql}"))
                .expect("SQL runs");
        }
    }
}

/// What `--state` is for the test directory: `state`, or its PostgreSQL URL.
pub(crate) fn state_arg(dir: &Path) -> String {
    pg_state(dir).unwrap_or_else(|| "state".to_owned())
}

/// The checkpoint of the test directory, to read: the SQLite file, or a fresh copy of the
/// PostgreSQL one.
pub(crate) fn db(dir: &Path) -> Connection {
    match pg_state(dir) {
        None => {
            Connection::open(dir.join("state").join("checkpoint.sqlite")).expect("checkpoint opens")
        }
        Some(url) => {
            pg_quiesce(&url);
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let copy = dir.join(format!(
                "pg-copy-{}",
                NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            ));
            let with_pw = url.replacen(
                &format!("{}@", crate::pgserver::USER),
                &format!("{}:{}@", crate::pgserver::USER, crate::pgserver::PASSWORD),
                1,
            );
            let from = vmr::checkpoint::Place::parse(&with_pw, false).expect("URL");
            let to = vmr::checkpoint::Place::Dir(copy.clone());
            vmr::checkpoint::copy::copy(&from, &to).expect("copy the PostgreSQL checkpoint");
            Connection::open(copy.join("checkpoint.sqlite")).expect("copy opens")
        }
    }
}

/// VIN → (state, code).
pub(crate) fn states(dir: &Path) -> BTreeMap<String, (String, Option<i64>)> {
    let conn = db(dir);
    let mut st = conn
        .prepare("SELECT vin, state, code FROM vins WHERE state <> 'rejected'")
        .expect("query");
    st.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows read")
}

pub(crate) fn count(dir: &Path, sql: &str) -> i64 {
    db(dir).query_row(sql, [], |r| r.get(0)).expect("count")
}

pub(crate) fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().to_owned();
    (d, p)
}

/// Whether a run got as far as creating the checkpoint (a kill can come before). Opened
/// read-only: the test must not create the file itself.
pub(crate) fn has_checkpoint(dir: &Path) -> bool {
    if let Some(url) = pg_state(dir) {
        let mut c = crate::pgserver::server().expect("server").client_for(&url);
        return c
            .query_one(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'vmr' AND table_name = 'vins'",
                &[],
            )
            .is_ok_and(|r| r.get::<_, i64>(0) == 1);
    }
    let path = dir.join("state").join("checkpoint.sqlite");
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    rusqlite::Connection::open_with_flags(path, flags).is_ok_and(|c| {
        c.query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'vins'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .is_ok_and(|n| n == 1)
    })
}

/// VINs the checkpoint says were in flight (`submitting`, left by a kill) or left uncertain:
/// possibly billed without an answer. Empty before any checkpoint exists.
pub(crate) fn in_flight(dir: &Path) -> BTreeSet<String> {
    if !has_checkpoint(dir) {
        return BTreeSet::new();
    }
    let conn = db(dir);
    let mut st = conn
        .prepare("SELECT vin FROM vins WHERE state IN ('submitting', 'uncertain')")
        .expect("query");
    st.query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows read")
}

/// `python3 -c <code> <args…>`, or `None` (with one line printed) when python3 or one of
/// `modules` is missing and `CI` is not `true` (CI installs them: .ci/run).
pub(crate) fn python(modules: &[&str], code: &str, args: &[&str]) -> Option<std::process::Output> {
    let import = format!("import {}", modules.join(", "));
    let have = std::process::Command::new("python3")
        .args(["-c", &import])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI needs python3 with {modules:?}"
        );
        println!("skipped: python3 with {modules:?} is not installed");
        return None;
    }
    Some(
        std::process::Command::new("python3")
            .args(["-c", code])
            .args(args)
            .output()
            .expect("python3 runs"),
    )
}

/// The VINs whose get answers came twice (or more) as 2xx bodies that could not be read (cut
/// short, say): those fail as `billed_unusable`, never a third charge (docs/design.md, "Money
/// rules", rule 6), whatever the sandbox's truth for them.
pub(crate) fn cut_short_twice(dir: &Path) -> BTreeSet<String> {
    let conn = db(dir);
    let mut st = conn
        .prepare(
            "SELECT v.vin FROM calls c JOIN vins v ON v.id = c.vin_id
             WHERE c.endpoint = 'get' AND c.delivery = 'unknown' AND c.body IS NOT NULL
             GROUP BY v.vin HAVING count(*) >= 2",
        )
        .expect("query");
    st.query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows read")
}

/// The failure kinds of a migrated checkpoint (VIN → kind of every failed VIN): the one marked
/// billed without a report, the one abandoned, and every other (the unsupported make's 703, any
/// 702 the vendor gave) the vendor's.
pub(crate) fn assert_failure_kinds(
    kinds: &BTreeMap<String, String>,
    unusable: &str,
    abandoned: &str,
    unsupported: &str,
) {
    assert_eq!(kinds[unusable], "billed_unusable", "{kinds:?}");
    assert_eq!(kinds[abandoned], "abandoned", "{kinds:?}");
    assert_eq!(kinds[unsupported], "vendor", "{kinds:?}");
    let vendor = kinds.values().filter(|k| *k == "vendor").count();
    assert_eq!(vendor, kinds.len() - 2, "{kinds:?}");
}
