//! The checkpoint and ingest as a user meets them: one process per state directory, duplicates
//! bought once across batches, file errors that leave the checkpoint untouched, a checkpoint
//! from a newer vmr refused, and status readable while another vmr works.

use crate::common::*;
use vmr::checkpoint::{Checkpoint, State, Update};
use vmr::sandbox::{DEFAULT_APP_SECRET, SandboxConfig};

#[test]
fn a_second_vmr_on_the_same_state_exits_75_at_once_naming_the_holder() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    write_csv(&dir.join("in.csv"), &vins(10, 31));
    let (held, _) = Checkpoint::open(&dir.join("state")).expect("open");
    // Held by another vmr: cron should simply try again later (75), not page anyone.
    let out = vmr(&dir, &sb)
        .args(["ingest", "--input", "in.csv"])
        .assert()
        .code(75);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        stderr.contains(&format!("pid {}", std::process::id())),
        "{stderr}"
    );
    // status still reads (read-only, no lock).
    vmr(&dir, &sb).arg("status").assert().code(0);
    drop(held);
    // Once released (or its holder dead), the state directory is free again.
    vmr(&dir, &sb)
        .args(["ingest", "--input", "in.csv"])
        .assert()
        .code(0);
}

/// `vmr ingest --input file`, which must exit 0: its summary.
fn ingest_summary(dir: &std::path::Path, sb: &vmr::sandbox::Sandbox, file: &str) -> String {
    let out = vmr(dir, sb)
        .args(["ingest", "--input", file])
        .assert()
        .code(0);
    String::from_utf8_lossy(&out.get_output().stdout).to_string()
}

#[test]
fn a_vin_in_two_files_is_queued_once() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    let all = vins(30, 32);
    write_csv(&dir.join("a.csv"), &all[..20]);
    write_csv(&dir.join("b.csv"), &all[10..]);
    vmr(&dir, &sb)
        .args(["ingest", "--input", "a.csv"])
        .assert()
        .code(0);
    let stdout = ingest_summary(&dir, &sb, "b.csv");
    assert!(stdout.contains("10 new VINs queued"), "{stdout}");
    assert!(stdout.contains("10 duplicates"), "{stdout}");
    assert_eq!(count(&dir, "SELECT count(*) FROM vins"), 30);
    // The duplicate keeps its first origin.
    assert_eq!(
        count(&dir, "SELECT count(*) FROM vins WHERE input_file = 'a.csv'"),
        20
    );
    // Re-ingesting the same file is recognised, not counted as duplicates.
    let stdout = ingest_summary(&dir, &sb, "a.csv");
    assert!(
        stdout.contains("0 new VINs queued, 20 already ingested, 0 duplicates"),
        "{stdout}"
    );
    vmr(&dir, &sb)
        .args(["run", "--input", "b.csv"])
        .assert()
        .code(0);
    assert!(sb.ledger().per_vin.values().all(|b| b.generate == 1));
}

#[test]
fn a_first_ingest_loads_in_bulk_and_keeps_the_guard_against_queuing_a_vin_twice() {
    if pg_backend() {
        // The bulk load is SQLite's; PostgreSQL ingests set by set (pg.rs).
        return;
    }
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    let all = vins(40, 33);
    // A first ingest (the bulk load) with duplicates within the file and a bad row.
    let mut text = String::from("vin,licenseImgUrl\n");
    for (i, v) in all.iter().enumerate() {
        text.push_str(&format!(
            "{v},https://img.example-fleet.cn/license/{i}.jpg\n"
        ));
    }
    for v in &all[..5] {
        text.push_str(&format!(
            "{v},https://img.example-fleet.cn/license/again.jpg\n"
        ));
    }
    text.push_str("NOT-A-VIN,https://img.example-fleet.cn/license/bad.jpg\n");
    std::fs::write(dir.join("first.csv"), text).expect("csv");
    let stdout = ingest_summary(&dir, &sb, "first.csv");
    assert!(
        stdout.contains(
            "46 rows read; 40 new VINs queued, 0 already ingested, 5 duplicates, 1 rejected"
        ),
        "{stdout}"
    );
    // The first of two lines with one VIN is the one queued.
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM vins WHERE state = 'queued' AND input_line <= 41"
        ),
        40
    );
    assert_eq!(count(&dir, "SELECT count(*) FROM batch_vins"), 40);
    // The unique index is there, as the schema declares it: a VIN cannot be queued twice.
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM pragma_index_list('vins') WHERE name = 'vins_vin' AND \"unique\" = 1"
        ),
        1
    );
    // So is the index the engine finds its work by, and the query planner uses it.
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM pragma_index_info('vins_state') WHERE name IN ('state', 'next_poll_at')"
        ),
        2
    );
    let conn = db(&dir);
    let mut explain = conn
        .prepare(
            "EXPLAIN QUERY PLAN SELECT id FROM vins WHERE state = 'pending' AND next_poll_at < 5",
        )
        .expect("explain");
    let plan: Vec<String> = explain
        .query_map([], |r| r.get::<_, String>(3))
        .expect("plan")
        .collect::<Result<_, _>>()
        .expect("plan rows");
    let plan = plan.join("; ");
    assert!(plan.contains("vins_state"), "{plan}");
    let dup = db(&dir).execute(
        "INSERT INTO vins (vin, state, first_seen_at) SELECT vin, 'queued', 0 FROM vins LIMIT 1",
        [],
    );
    assert!(dup.is_err(), "a second row for a VIN must be refused");
    // A second ingest is row by row, against that index.
    let stdout = ingest_summary(&dir, &sb, "first.csv");
    assert!(
        stdout.contains("0 new VINs queued, 40 already ingested, 5 duplicates, 1 rejected"),
        "{stdout}"
    );
}

#[test]
fn rejected_rows_are_recorded_with_line_and_reason_and_never_sent() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/fleet.csv"),
        dir.join("fleet.csv"),
    )
    .expect("copy sample");
    vmr(&dir, &sb)
        .args(["run", "--input", "fleet.csv"])
        .assert()
        .code(0);
    let conn = db(&dir);
    let rows: Vec<(i64, String, String)> = conn
        .prepare("SELECT input_line, vin, message FROM vins WHERE state = 'rejected' ORDER BY input_line")
        .expect("query")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows read");
    let lines: Vec<i64> = rows.iter().map(|r| r.0).collect();
    assert_eq!(lines, vec![25, 60, 98, 143]);
    assert_eq!(rows[0].1, "LSVAB1234");
    assert!(
        rows[0].2.contains("has 9 characters, needs 17"),
        "{}",
        rows[0].2
    );
    for (_, vin, _) in &rows {
        assert!(!sb.ledger().per_vin.contains_key(vin));
    }
    let out = vmr(&dir, &sb).arg("status").assert().code(0);
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(stdout.contains("fleet.csv line 60"), "{stdout}");
}

#[test]
fn file_level_errors_exit_2_and_leave_the_checkpoint_untouched() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    let out = vmr(&dir, &sb)
        .args(["ingest", "--input", "missing.csv"])
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("missing.csv"), "{stderr}");
    assert!(!dir.join("state").exists(), "no checkpoint was created");
    std::fs::write(dir.join("nocol.csv"), "plate,owner\nA1,x\n").expect("write");
    vmr(&dir, &sb)
        .args(["run", "--input", "nocol.csv"])
        .assert()
        .code(2);
    assert!(!dir.join("state").exists());
    assert_eq!(sb.ledger().calls_total, 0);
}

#[test]
fn a_checkpoint_from_a_newer_vmr_is_refused_and_not_altered() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    write_csv(&dir.join("in.csv"), &vins(3, 33));
    vmr(&dir, &sb)
        .args(["ingest", "--input", "in.csv"])
        .assert()
        .code(0);
    db(&dir)
        .pragma_update(None, "user_version", 99)
        .expect("set version");
    let before = std::fs::read(dir.join("state/checkpoint.sqlite")).expect("read");
    for args in [vec!["ingest", "--input", "in.csv"], vec!["status"]] {
        let out = vmr(&dir, &sb).args(&args).assert().failure();
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert!(stderr.contains("newer than this vmr"), "{stderr}");
    }
    assert_eq!(
        std::fs::read(dir.join("state/checkpoint.sqlite")).expect("read"),
        before
    );
}

/// A checkpoint holding one queued VIN (ingested by the real binary), opened for writing, and a
/// runtime to apply updates with.
fn one_vin_ingested(
    salt: u32,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    Checkpoint,
    tokio::runtime::Runtime,
) {
    let (t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    write_csv(&dir.join("in.csv"), &vins(1, salt));
    vmr(&dir, &sb)
        .args(["ingest", "--input", "in.csv"])
        .assert()
        .code(0);
    let (ckpt, _) = Checkpoint::open(&dir.join("state")).expect("open");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    (t, dir, ckpt, rt)
}

#[test]
fn illegal_transitions_are_refused_not_written() {
    let (_t, dir, ckpt, rt) = one_vin_ingested(34);
    // queued -> done skips the purchase: refused.
    let err = rt
        .block_on(ckpt.apply(Update {
            vin_id: 1,
            to: Some(State::Done),
            ..Update::default()
        }))
        .expect_err("illegal");
    assert!(err.to_string().contains("queued -> done"), "{err}");
    drop(ckpt);
    assert_eq!(
        count(&dir, "SELECT count(*) FROM vins WHERE state = 'queued'"),
        1
    );
}

#[test]
fn many_concurrent_writers_share_commits() {
    // Thousands of transitions from concurrent tasks complete and are all on disk.
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    write_csv(&dir.join("in.csv"), &vins(3000, 35));
    vmr(&dir, &sb)
        .args(["ingest", "--input", "in.csv"])
        .assert()
        .code(0);
    let (ckpt, _) = Checkpoint::open(&dir.join("state")).expect("open");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for id in 1..=3000i64 {
            let c = ckpt.clone();
            set.spawn(async move {
                c.apply(Update {
                    vin_id: id,
                    to: Some(State::Submitting),
                    ..Update::default()
                })
                .await
            });
        }
        while let Some(r) = set.join_next().await {
            r.expect("task").expect("durable write");
        }
    });
    drop(ckpt);
    assert_eq!(
        count(&dir, "SELECT count(*) FROM vins WHERE state = 'submitting'"),
        3000
    );
    // Reopening turns them uncertain: they were "in flight" when this process let go.
    let (_c, rec) = Checkpoint::open(&dir.join("state")).expect("reopen");
    assert_eq!(rec.uncertain.len(), 3000);
}

#[test]
fn configuration_errors_exit_2_with_a_message_saying_what_to_do() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    write_csv(&dir.join("in.csv"), &vins(2, 36));
    // No credentials: nothing is sent.
    let out = vmr(&dir, &sb)
        .env_remove("VMR_APP_SECRET")
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("VMR_APP_SECRET"), "{stderr}");
    assert_eq!(sb.ledger().calls_total, 0);
    // Status before any checkpoint exists.
    let (_t2, empty) = tempdir();
    vmr(&empty, &sb).arg("status").assert().code(2);
    // A bad duration.
    vmr(&dir, &sb)
        .args(["poll", "--max-wait", "soon"])
        .assert()
        .code(2);
}

#[test]
fn a_secret_file_others_can_read_is_refused_like_an_ssh_key() {
    use std::os::unix::fs::PermissionsExt;
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    write_csv(&dir.join("in.csv"), &vins(4, 38));
    let loose = dir.join("loose-secret");
    std::fs::write(&loose, format!("{DEFAULT_APP_SECRET}\n")).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = vmr(&dir, &sb)
        .env_remove("VMR_APP_SECRET")
        .args(["--app-secret-file", loose.to_str().unwrap()])
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains(loose.to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("chmod 600"), "{stderr}");
    assert!(stderr.contains("0644"), "{stderr}");
    assert!(!stderr.contains(DEFAULT_APP_SECRET), "{stderr}");
    assert_eq!(sb.ledger().calls_total, 0);

    // As Kubernetes mounts a secret: a 0400 file reached through symlinks (whose own mode is
    // 0777). The target's mode is what counts.
    let data = dir.join("..2026_12_02");
    std::fs::create_dir(&data).unwrap();
    let target = data.join("app-secret");
    std::fs::write(&target, format!("{DEFAULT_APP_SECRET}\n")).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o400)).unwrap();
    std::os::unix::fs::symlink("..2026_12_02", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/app-secret", dir.join("app-secret")).unwrap();
    vmr(&dir, &sb)
        .env_remove("VMR_APP_SECRET")
        .args(["--app-secret-file", "app-secret"])
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(0);
    assert_eq!(
        count(&dir, "SELECT count(*) FROM vins WHERE state = 'done'"),
        4
    );
}

#[test]
fn a_checkpoint_from_before_the_money_rules_is_migrated_and_adopted_once() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig::default();
    let sb = sandbox(cfg.clone());
    write_csv(&dir.join("in.csv"), &vins(40, 36));
    vmr(&dir, &sb)
        .args(["submit", "--input", "in.csv"])
        .assert()
        .code(75);
    let pending = count(&dir, "SELECT count(*) FROM vins WHERE state = 'pending'");
    assert!(pending > 0);
    // Turn it into what the previous vmr (schema 1) left: no accepted_at, no call bodies, no
    // resolutions, no account; and nothing of schema 3 (purchases, report versions).
    db(&dir)
        .execute_batch(
            "CREATE TABLE reports_v1 (
                vin_id INTEGER PRIMARY KEY, vin TEXT NOT NULL, request_id TEXT, task_no TEXT,
                endpoint TEXT NOT NULL, fetched_at INTEGER NOT NULL, body BLOB NOT NULL);
             INSERT INTO reports_v1 SELECT vin_id, vin, request_id, task_no, endpoint, fetched_at, body FROM reports;
             DROP TABLE reports;
             ALTER TABLE reports_v1 RENAME TO reports;
             DROP TABLE purchases;
             DROP TABLE batch_vins;
             ALTER TABLE vins DROP COLUMN failure;
             ALTER TABLE vins DROP COLUMN purchase;
             ALTER TABLE calls DROP COLUMN purchase;
             ALTER TABLE vins DROP COLUMN accepted_at;
             ALTER TABLE calls DROP COLUMN body;
             DROP INDEX calls_uid;
             ALTER TABLE calls DROP COLUMN uid;
             DROP TABLE resolutions;
             DELETE FROM meta WHERE key = 'account';
             PRAGMA user_version = 1;",
        )
        .expect("make a schema-1 checkpoint");
    // It holds calls but names no account: refused until adopted, before any call.
    let before = sb.ledger().calls_total;
    vmr(&dir, &sb).args(["poll", "--wait"]).assert().code(2);
    assert_eq!(sb.ledger().calls_total, before);
    vmr(&dir, &sb)
        .args(["poll", "--wait", "--adopt-account"])
        .assert()
        .code(0);
    // Migrated: the poll deadline's start was recovered from the call log.
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM vins WHERE request_id IS NOT NULL AND accepted_at IS NULL"
        ),
        0
    );
    assert_eq!(
        count(&dir, "SELECT count(*) FROM vins WHERE state = 'pending'"),
        0
    );
    for (vin, l) in &sb.ledger().per_vin {
        assert!(l.generate <= 1 && l.get <= 1, "{vin} bought twice");
    }
    // Migrated from version 1, it is a new checkpoint's equal, table for table and column for
    // column.
    let (_t2, fresh) = tempdir();
    drop(Checkpoint::open(&fresh.join("state")).expect("a new checkpoint"));
    let new = rusqlite::Connection::open(fresh.join("state/checkpoint.sqlite")).expect("opens");
    assert_eq!(columns(&db(&dir)), columns(&new));
    assert_eq!(count(&dir, "PRAGMA user_version"), 5);
}

/// A column as `PRAGMA table_info` gives it: name, type, not null, place in the key.
type Column = (String, String, bool, i64);

/// Every table of a SQLite checkpoint with its columns, in order.
fn columns(c: &rusqlite::Connection) -> Vec<(String, Vec<Column>)> {
    let tables: Vec<String> = c
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .expect("q")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("names");
    tables
        .into_iter()
        .map(|t| {
            let cols = c
                .prepare(&format!("PRAGMA table_info({t})"))
                .expect("q")
                .query_map([], |r| Ok((r.get(1)?, r.get(2)?, r.get(3)?, r.get(5)?)))
                .expect("rows")
                .collect::<Result<_, _>>()
                .expect("columns");
            (t, cols)
        })
        .collect()
}

/// Fails three VINs of a finished run the three ways a VIN fails, by message only, and turns
/// the checkpoint into what a vmr of schema version 3 left: no `failure` column. Returns the
/// VINs failed as billed without a report and as abandoned.
fn as_version_3(c: &rusqlite::Connection) -> (String, String) {
    let done: Vec<String> = c
        .prepare("SELECT vin FROM vins WHERE state = 'done' ORDER BY id LIMIT 2")
        .expect("q")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("vins");
    c.execute(
        "UPDATE vins SET state = 'failed', code = 200,
            message = 'billed_unusable: a get answer held no report object' WHERE vin = ?1",
        [&done[0]],
    )
    .expect("unusable");
    c.execute(
        "UPDATE vins SET state = 'failed', message = 'abandoned: reconciled by hand'
         WHERE vin = ?1",
        [&done[1]],
    )
    .expect("abandoned");
    // A `_` in a message must not pass for any character (the old `LIKE 'billed_unusable%'`).
    c.execute_batch(
        "UPDATE vins SET message = 'billedXunusable ' || coalesce(message, '') WHERE state = 'failed' AND code = 703;
         ALTER TABLE vins DROP COLUMN failure;
         ALTER TABLE purchases DROP COLUMN failure;
         DROP INDEX calls_uid;
         ALTER TABLE calls DROP COLUMN uid;
         PRAGMA user_version = 3;",
    )
    .expect("make a schema-3 checkpoint");
    (done[0].clone(), done[1].clone())
}

#[test]
fn a_version_3_checkpoint_gets_typed_failures_and_retry_failed_buys_only_their_kind() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    let mut fleet = vins(30, 37);
    let unsupported = with_check_digit("LRW37ABC000000777");
    fleet.push(unsupported.clone());
    write_csv(&dir.join("in.csv"), &fleet);
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(0);
    let (unusable, abandoned) = as_version_3(&db(&dir));
    // A reader (status) migrates it first, as a writer would.
    let out = vmr(&dir, &sb).args(["status", "--json"]).assert().code(0);
    let st: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).expect("JSON");
    assert_eq!(st["billed_unusable_total"], 1, "{st}");
    assert_eq!(st["billed_unusable"][0], unusable.as_str());
    assert_eq!(count(&dir, "PRAGMA user_version"), 5);
    let kinds: std::collections::BTreeMap<String, String> = db(&dir)
        .prepare("SELECT vin, failure FROM vins WHERE state = 'failed'")
        .expect("q")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("kinds");
    assert_failure_kinds(&kinds, &unusable, &abandoned, &unsupported);
    // `--retry-failed billed_unusable` buys that VIN again, and nothing else; `703` the other.
    let before = sb.ledger();
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
    let after = sb.ledger();
    let generates = |l: &vmr::sandbox::Ledger, v: &str| l.per_vin.get(v).map_or(0, |x| x.generate);
    for v in &fleet {
        let more = generates(&after, v) - generates(&before, v);
        assert_eq!(more, u64::from(*v == unusable), "{v}");
    }
    assert_eq!(states(&dir)[&unusable], ("done".to_owned(), Some(200)));
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM vins WHERE failure IS NOT NULL AND state <> 'failed'"
        ),
        0
    );
}

/// The permission bits of `path`.
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn the_state_directory_is_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let (_t, dir) = tempdir();
    let state = dir.join("state");
    // The usual umask leaves new files world-readable (0644) and directories 0755.
    let old = unsafe { libc::umask(0o022) };
    let opened = Checkpoint::open(&state);
    unsafe { libc::umask(old) };
    let (ckpt, _) = opened.expect("open");
    let files = [
        "checkpoint.sqlite",
        "checkpoint.sqlite-wal",
        "checkpoint.sqlite-shm",
        "lock",
    ];
    assert_eq!(mode(&state), 0o700);
    for f in files {
        assert_eq!(mode(&state.join(f)), 0o600, "{f}");
    }
    drop(ckpt);

    // A state directory left world-readable (by an older vmr) is tightened by the next writer.
    for f in files {
        let p = state.join(f);
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let sb = sandbox(SandboxConfig::default());
    write_csv(&dir.join("in.csv"), &vins(3, 39));
    vmr(&dir, &sb)
        .args(["ingest", "--input", "in.csv"])
        .assert()
        .code(0);
    for f in files {
        let p = state.join(f);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{f}");
        }
    }
}

/// VIN → report body, from a checkpoint file.
fn report_bodies(path: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("checkpoint opens");
    let mut st = conn
        .prepare("SELECT vin, body FROM reports")
        .expect("query");
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows read")
}

#[test]
fn a_backup_taken_while_a_run_writes_is_consistent_and_complete() {
    use std::os::unix::fs::PermissionsExt;
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig {
        latency: std::time::Duration::from_millis(40),
        ..SandboxConfig::default()
    });
    write_csv(&dir.join("in.csv"), &vins(400, 37));
    let mut run = vmr_std(&dir, &sb)
        .args(["run", "--input", "in.csv"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("vmr run starts");
    let source = dir.join("state").join("checkpoint.sqlite");
    // Wait until the run has stored some reports.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let before = loop {
        // Until the run has created its tables, there is nothing to read.
        let has_reports = source.exists()
            && rusqlite::Connection::open_with_flags(
                &source,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .and_then(|c| {
                c.query_row(
                    "SELECT count(*) FROM sqlite_master WHERE name = 'reports'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
            })
            .is_ok_and(|n| n == 1);
        let held = if has_reports {
            report_bodies(&source)
        } else {
            Default::default()
        };
        if held.len() >= 20 {
            break held;
        }
        assert!(std::time::Instant::now() < deadline, "no reports stored");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // The run holds the state directory's lock: a backup that took it would exit 75.
    let out = vmr(&dir, &sb)
        .args(["state", "backup", "copy.sqlite"])
        .assert()
        .code(0);
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(stdout.contains("copy.sqlite"), "{stdout}");
    assert!(
        run.try_wait().expect("wait").is_none(),
        "the run should still be writing when the backup ends"
    );
    let copy = dir.join("copy.sqlite");
    assert_eq!(
        std::fs::metadata(&copy).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let check: String = rusqlite::Connection::open(&copy)
        .expect("the copy opens")
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check");
    assert_eq!(check, "ok");
    let copied = report_bodies(&copy);
    assert!(
        copied.len() >= before.len(),
        "{} < {}",
        copied.len(),
        before.len()
    );
    for (vin, body) in &before {
        assert_eq!(
            copied.get(vin),
            Some(body),
            "{vin} is missing from the backup"
        );
    }
    assert_eq!(run.wait().expect("run ends").code(), Some(0));
    // Every report in the copy is one the source holds, byte for byte.
    let after = report_bodies(&source);
    assert!(
        after.len() > copied.len(),
        "the run went on after the backup"
    );
    for (vin, body) in &copied {
        assert_eq!(after.get(vin), Some(body), "{vin}");
    }

    // An existing path is never overwritten.
    let len = std::fs::metadata(&copy).unwrap().len();
    let out = vmr(&dir, &sb)
        .args(["state", "backup", "copy.sqlite"])
        .assert()
        .code(2);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("copy.sqlite already exists"), "{stderr}");
    assert_eq!(std::fs::metadata(&copy).unwrap().len(), len);
}

#[test]
fn a_failure_meant_for_a_queued_vin_leaves_a_vin_bought_meanwhile_alone_and_keeps_the_call() {
    let (_t, dir, ckpt, rt) = one_vin_ingested(35);
    // Another worker bought the VIN: it is pending with its requestId.
    for (to, request_id) in [(State::Submitting, None), (State::Pending, Some("r-1"))] {
        rt.block_on(ckpt.apply(Update {
            vin_id: 1,
            to: Some(to),
            request_id: request_id.map(str::to_owned),
            ..Update::default()
        }))
        .expect("a legal move");
    }
    // The late verdict on a lone 400 was meant for the VIN while it was queued.
    let call = vmr::checkpoint::CallLog {
        uid: None,
        endpoint: vmr::api::Endpoint::Generate,
        request_id: None,
        http_status: Some(200),
        code: Some(400),
        msg: Some("参数错误".into()),
        task_no: None,
        class: vmr::api::Delivery::NotBilled,
        started_at: 1,
        ended_at: 2,
        error: None,
        body: None,
    };
    let err = rt
        .block_on(ckpt.apply(Update {
            vin_id: 1,
            to: Some(State::Failed),
            expect: Some(State::Queued),
            call: Some(call),
            ..Update::default()
        }))
        .expect_err("fenced");
    assert!(
        matches!(err, vmr::checkpoint::CheckpointError::Fenced(_)),
        "{err}"
    );
    drop(ckpt);
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM vins WHERE state = 'pending' AND request_id = 'r-1'"
        ),
        1,
        "the paid report is still fetched"
    );
    assert_eq!(
        count(&dir, "SELECT count(*) FROM calls WHERE code = 400"),
        1
    );
}
