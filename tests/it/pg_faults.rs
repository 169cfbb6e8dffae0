//! Workers under the faults a real PostgreSQL and a real cluster bring, each test on a server of
//! its own (pgserver.rs) that it stops, restarts and cuts sessions of: a worker that loses its
//! database keeps every billed answer on disk (the spill) and the next start replays it; three
//! workers outlive a paused worker, terminated sessions and a server restart, and nothing paid
//! for is lost or bought twice unless listed uncertain.

use crate::common::*;
use crate::pg::{ends_with_0_or_75, in_flight_pg, vmr_pg, wait_for};
use crate::pgserver::{self, PgServer};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use vmr::sandbox::{Fate, SandboxConfig};

/// A server of the test's own, or `None` (after a loud line) where none can be started
/// outside CI.
fn own_server(tag: &str) -> Option<PgServer> {
    match pgserver::start_own(tag, |_, _| Ok(Vec::new())) {
        Ok(s) => Some(s),
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("{e}"),
        Err(e) => {
            eprintln!("SKIPPED: no PostgreSQL server could be started ({e})");
            None
        }
    }
}

/// Spill files waiting under `root` (every checkpoint's), and those set aside.
fn spilled(root: &Path) -> (usize, usize) {
    let (mut waiting, mut aside) = (0, 0);
    let Ok(dirs) = std::fs::read_dir(root) else {
        return (0, 0);
    };
    for d in dirs.flatten() {
        for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
            let p = f.path();
            if p.extension().is_some_and(|x| x == "json") {
                waiting += 1;
            }
        }
        aside += std::fs::read_dir(d.path().join("unreplayable"))
            .map(|r| r.count())
            .unwrap_or(0);
    }
    (waiting, aside)
}

/// Every VIN's state and code, read from the schema.
fn states_pg(pg: &PgServer, url: &str, schema: &str) -> Vec<(String, String, Option<i64>)> {
    pg.client_for(url)
        .query(
            &format!("SELECT vin, state, code FROM {schema}.vins ORDER BY vin"),
            &[],
        )
        .expect("query")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// Every VIN ends as the sandbox's truth says.
fn assert_truth_pg(pg: &PgServer, url: &str, schema: &str, cfg: &SandboxConfig, fleet: &[String]) {
    let states = states_pg(pg, url, schema);
    assert_eq!(states.len(), fleet.len());
    for (vin, state, code) in states {
        let want = match cfg.truth(&vin).fate {
            Fate::Inline | Fate::Deferred => ("done", Some(200)),
            Fate::Unsupported703 => ("failed", Some(703)),
            Fate::Fails702 => ("failed", Some(702)),
        };
        assert_eq!((state.as_str(), code), want, "{vin}");
    }
}

/// Whether every worker has exited (its status is kept for the `wait` that follows).
fn all_ended(workers: &mut [std::process::Child]) -> bool {
    workers
        .iter_mut()
        .all(|w| w.try_wait().ok().flatten().is_some())
}

fn one_number(pg: &PgServer, url: &str, sql: &str) -> i64 {
    pg.client_for(url)
        .query_one(sql, &[])
        .expect("query")
        .get(0)
}

#[test]
fn a_worker_that_loses_its_database_keeps_billed_answers_on_disk_and_the_next_start_replays_them() {
    let Some(pg) = own_server("spill") else {
        return;
    };
    let (_t, dir) = tempdir();
    // Calls that take a while, so several are in flight when the database goes.
    let cfg = SandboxConfig {
        latency: Duration::from_millis(1500),
        seed: 71,
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    let fleet = vins(40, 71);
    write_csv(&dir.join("fleet.csv"), &fleet);
    let url = format!("{}?schema=spill_a", pg.new_database("spill"));
    let run = |extra: &[&str]| {
        vmr_pg(&dir, &sb, &url)
            .env("VMR_PG_RECONNECT_WINDOW", "2s")
            .args(["--spill-dir", "spill", "--rate", "0", "--concurrency", "8"])
            .args(["--timeout", "5s", "--poll-interval", "200ms"])
            .args(["run", "--input", "fleet.csv"])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("vmr starts")
    };
    let worker = run(&[]);
    // Generates in flight (written `submitting` before they left): the database goes now.
    wait_for(60, "generates in flight", || {
        // The schema is made by the worker: until then, none.
        pg.client_for(&url)
            .query_one(
                "SELECT count(*) FROM spill_a.vins WHERE state = 'submitting'",
                &[],
            )
            .is_ok_and(|r| r.get::<_, i64>(0) >= 6)
    });
    pg.stop();
    let out = worker.wait_with_output().expect("worker ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(75), "{stderr}");
    assert!(
        stderr.contains("out of reach") && stderr.contains("spill"),
        "the run says why it stopped and where the answers are: {stderr}"
    );
    let (waiting, aside) = spilled(&dir.join("spill"));
    let billed = sb.ledger().billed_total;
    assert!(waiting >= 1, "answers that landed meanwhile are on disk");
    assert!(
        waiting as u64 <= billed,
        "{waiting} spilled, {billed} billed"
    );
    assert_eq!(aside, 0);

    // The database is back: the next start replays the spill before anything else, and
    // finishes the batch without buying anything twice.
    pg.start();
    let out = run(&[]).wait_with_output().expect("vmr runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("replayed"), "{stderr}");
    assert_eq!(spilled(&dir.join("spill")), (0, 0));
    assert_truth_pg(&pg, &url, "spill_a", &cfg, &fleet);
    let ledger = sb.ledger();
    for (vin, l) in &ledger.per_vin {
        assert!(l.generate <= 1, "{vin} bought twice");
    }
    // Every billed call is in the call log, once (the spill's replay wrote each once).
    let logged = one_number(
        &pg,
        &url,
        "SELECT count(*) FROM spill_a.calls WHERE billed = 1",
    );
    assert_eq!(logged as u64, ledger.billed_total);
    let reports = one_number(
        &pg,
        &url,
        "SELECT count(DISTINCT vin_id) FROM spill_a.reports",
    );
    let done = one_number(
        &pg,
        &url,
        "SELECT count(*) FROM spill_a.vins WHERE state = 'done'",
    );
    assert_eq!(reports, done);
}

#[test]
fn three_workers_outlive_a_paused_worker_terminated_sessions_and_a_server_restart() {
    let Some(pg) = own_server("faults") else {
        return;
    };
    let started = std::time::Instant::now();
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        latency: Duration::from_millis(20),
        late_bill_rate: 0.04,
        stall: Duration::from_millis(2500),
        seed: 72,
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    let fleet = vins(300, 72);
    write_csv(&dir.join("fleet.csv"), &fleet);
    let db = pg.new_database("faults");
    let url = format!("{db}?schema=fleet");
    let db_name = db.rsplit('/').next().expect("name").to_owned();
    let budget: u64 = 900;
    let logs: Vec<_> = (0..3).map(|i| dir.join(format!("worker{i}.log"))).collect();
    // A lease of a few seconds (--timeout 2s + a 2 s margin), renewed every 300 ms.
    let worker = |i: usize| {
        vmr_pg(&dir, &sb, &url)
            .env("VMR_LEASE_MARGIN", "2s")
            .env("VMR_HEARTBEAT", "300ms")
            .env("VMR_PG_RECONNECT_WINDOW", "30s")
            .args(["--spill-dir", "spill", "--run-id", "faults-1"])
            .args(["--max-billed", &budget.to_string()])
            .args(["--rate", "60", "--burst", "5", "--concurrency", "4"])
            .args([
                "--timeout",
                "2s",
                "--poll-interval",
                "300ms",
                "--max-wait",
                "90s",
            ])
            .args(["--out", &format!("out{i}"), "run", "--input", "fleet.csv"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&logs[i]).expect("log file"))
            .spawn()
            .expect("vmr starts")
    };
    let mut workers: Vec<_> = (0..3).map(worker).collect();
    wait_for(60, "the first calls", || sb.ledger().calls_total >= 60);

    // One worker is paused past its lease (4 s): the others take its VINs. Then it goes on.
    let paused = workers[1].id() as i32;
    unsafe { libc::kill(paused, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_secs(6));
    unsafe { libc::kill(paused, libc::SIGCONT) };
    // Each fault comes while the workers still call (or once they have all ended).
    let seen = sb.ledger().calls_total;
    wait_for(60, "calls after the pause", || {
        sb.ledger().calls_total >= seen + 40 || all_ended(&mut workers)
    });

    // Every vmr session is ended once.
    let live = !all_ended(&mut workers);
    let ended = pg.terminate_sessions(&db_name);
    assert!(!live || ended >= 3, "{ended} sessions ended");
    let seen = sb.ledger().calls_total;
    wait_for(60, "calls after the sessions ended", || {
        sb.ledger().calls_total >= seen + 40 || all_ended(&mut workers)
    });

    // The server restarts (fast shutdown, start again).
    let down = pg.restart();
    let faults_over = started.elapsed();
    for (w, log) in workers.iter_mut().zip(&logs) {
        ends_with_0_or_75(w, log);
    }
    let after_faults = sb.ledger();
    assert!(
        after_faults.billed_total <= budget,
        "{} billed under a shared --max-billed {budget}",
        after_faults.billed_total
    );
    let mut listed = in_flight_pg(&pg, &url);
    let workers_ended = started.elapsed();

    // A final run, then --resubmit-uncertain rounds (a person's decision), settle every VIN.
    let final_run = |extra: &[&str]| {
        let out = vmr_pg(&dir, &sb, &url)
            .args([
                "--spill-dir",
                "spill",
                "--timeout",
                "2s",
                "--poll-interval",
                "300ms",
            ])
            .args(["run", "--input", "fleet.csv"])
            .args(extra)
            .output()
            .expect("vmr runs");
        let code = out.status.code();
        assert!(
            matches!(code, Some(0 | 75)),
            "{code:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    final_run(&[]);
    let mut rounds = 0;
    loop {
        let now = in_flight_pg(&pg, &url);
        if now.is_empty() {
            break;
        }
        listed.extend(now);
        rounds += 1;
        assert!(rounds <= 10, "uncertain VINs do not go away");
        final_run(&["--resubmit-uncertain"]);
    }
    assert_truth_pg(&pg, &url, "fleet", &cfg, &fleet);
    let ledger = sb.ledger();
    // No generate billed twice unless the VIN was listed uncertain.
    let twice: BTreeSet<&String> = ledger
        .per_vin
        .iter()
        .filter(|(_, l)| l.generate > 1)
        .map(|(v, _)| v)
        .collect();
    for vin in &twice {
        assert!(listed.contains(*vin), "{vin} bought twice, never listed");
    }
    // Every call the vendor billed is in the checkpoint, VIN by VIN: as a billed answer, or as
    // one whose answer never came (unknown: billed late, or cut off while its worker was
    // paused), which made its VIN uncertain or asked again. Nothing paid is missing.
    let logged: std::collections::BTreeMap<String, i64> = pg
        .client_for(&url)
        .query(
            "SELECT v.vin, count(*) FROM fleet.calls c JOIN fleet.vins v ON v.id = c.vin_id
             WHERE c.billed = 1 OR c.delivery = 'unknown' GROUP BY v.vin",
            &[],
        )
        .expect("query")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (vin, l) in &ledger.per_vin {
        let kept = logged.get(vin).copied().unwrap_or(0) as u64;
        assert!(
            l.generate + l.get <= kept,
            "{vin}: the vendor billed {} generates and {} gets, the checkpoint holds {kept}",
            l.generate,
            l.get
        );
    }
    assert_eq!(spilled(&dir.join("spill")), (0, 0), "the spill is replayed");
    // No worker left, no claim.
    let left = one_number(
        &pg,
        &url,
        "SELECT (SELECT count(*) FROM fleet.workers) + (SELECT count(*) FROM fleet.vins WHERE claimed_by IS NOT NULL)",
    );
    assert_eq!(left, 0);
    eprintln!(
        "fault test: {} s in all (faults over at {} s, workers ended at {} s), the server down {} ms, {} sessions ended, {} uncertain listed, {} bought twice, {} resubmit rounds",
        started.elapsed().as_secs(),
        faults_over.as_secs(),
        workers_ended.as_secs(),
        down.as_millis(),
        ended,
        listed.len(),
        twice.len(),
        rounds
    );
}
