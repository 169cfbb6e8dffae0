//! The deployment files in `deploy/`: the systemd units pass `systemd-analyze verify` (when it is
//! installed), and the CronJob and crontab keep the settings docs/operations.md promises.

use std::path::Path;

fn deploy(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_systemd_units_verify() {
    let service = deploy("systemd/vmr.service");
    let timer = deploy("systemd/vmr.timer");
    for wanted in [
        "ExecStart=/usr/local/bin/vmr ",
        "SuccessExitStatus=75",
        "LoadCredential=app-secret:/etc/vmr/app-secret",
        "--app-secret-file %d/app-secret",
        "--state /var/lib/vmr/state",
    ] {
        assert!(service.contains(wanted), "vmr.service lacks {wanted}");
    }
    assert!(timer.contains("Persistent=true"));
    if std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("systemd-analyze not found: skipping the verification of deploy/systemd");
        return;
    }
    // verify needs ExecStart's binary to exist: the built vmr stands in for /usr/local/bin/vmr.
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = assert_cmd::cargo::cargo_bin("vmr");
    std::fs::write(
        dir.path().join("vmr.service"),
        service.replace("/usr/local/bin/vmr", bin.to_str().expect("UTF-8 path")),
    )
    .unwrap();
    std::fs::write(dir.path().join("vmr.timer"), timer).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("vmr.service"))
        .arg(dir.path().join("vmr.timer"))
        .output()
        .expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Unknown keys and bad values are only warnings: none may name the units.
    let about_ours: Vec<&str> = stderr.lines().filter(|l| l.contains("vmr")).collect();
    assert!(about_ours.is_empty(), "{stderr}");
}

#[test]
fn the_cronjob_never_overlaps_and_mounts_the_secret_owner_only() {
    let job = deploy("kubernetes/vmr-cronjob.yaml");
    for wanted in [
        "kind: CronJob",
        "concurrencyPolicy: Forbid",
        "kind: PersistentVolumeClaim",
        "claimName: vmr-state",
        "mountPath: /var/lib/vmr",
        "value: /var/lib/vmr/state",
        "defaultMode: 0400",
        "value: /etc/vmr/secret/app-secret",
        "if [ \"$rc\" -eq 75 ]; then exit 0; fi",
    ] {
        assert!(job.contains(wanted), "vmr-cronjob.yaml lacks {wanted}");
    }
    assert!(!job.contains('\t'), "YAML is indented with spaces");
    let cron = deploy("crontab");
    let line = cron
        .lines()
        .find(|l| l.contains("/usr/local/bin/vmr"))
        .expect("the crontab line");
    assert!(line.split_whitespace().count() > 5, "{line}");
    assert!(!line.contains('%'), "cron turns % into a newline");
    assert!(line.contains("--app-secret-file /etc/vmr/app-secret"));
}

#[test]
fn the_postgres_cronjob_keeps_no_local_state_and_no_password_in_its_url() {
    let job = deploy("kubernetes/vmr-cronjob-postgres.yaml");
    for wanted in [
        "kind: CronJob",
        "concurrencyPolicy: Forbid",
        "value: postgres://vmr@postgres.db.svc:5432/fleet?schema=team_a",
        "name: PGPASSWORD",
        "secretKeyRef:",
        "defaultMode: 0400",
        "if [ \"$rc\" -eq 75 ]; then exit 0; fi",
        "name: TMPDIR",
        // Billed answers kept through a database outage, on a volume that outlives the pod.
        "name: VMR_SPILL_DIR",
        "claimName: vmr-spill",
    ] {
        assert!(
            job.contains(wanted),
            "vmr-cronjob-postgres.yaml lacks {wanted}"
        );
    }
    assert!(
        !job.contains("claimName: vmr-state"),
        "state lives in PostgreSQL"
    );
    // The URL vmr gets parses as a PostgreSQL state without a password.
    let url = job
        .lines()
        .find_map(|l| l.trim().strip_prefix("value: postgres://"))
        .map(|rest| format!("postgres://{rest}"))
        .expect("the state URL");
    let place = vmr::checkpoint::Place::parse(&url, true).expect("a state URL");
    assert!(place.dir().is_none());
    assert!(!job.contains('\t'), "YAML is indented with spaces");
}

#[test]
fn the_workers_job_shares_one_postgres_state_rate_and_budget() {
    let job = deploy("kubernetes/vmr-workers-job.yaml");
    for wanted in [
        "kind: Job",
        "completionMode: Indexed",
        "name: VMR_RUN_ID",
        "name: VMR_MAX_BILLED",
        "name: VMR_RATE",
        "name: PGPASSWORD",
        "secretKeyRef:",
        "defaultMode: 0400",
        "step submit --input /data/inbox/fleet.csv",
        "step poll --wait",
        "[ \"$rc\" -eq 0 ] || [ \"$rc\" -eq 75 ]",
        "name: VMR_SPILL_DIR",
        "claimName: vmr-spill",
    ] {
        assert!(job.contains(wanted), "vmr-workers-job.yaml lacks {wanted}");
    }
    // N pods at once, each a worker; the pods never export (one export afterwards).
    let doc: Vec<&str> = job.lines().map(str::trim).collect();
    let field = |k: &str| {
        doc.iter()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("{k} missing"))
    };
    assert_eq!(field("completions:"), field("parallelism:"));
    assert!(field("completions:").parse::<u32>().expect("a number") > 1);
    assert!(!job.contains("vmr run") && !job.contains("vmr export"));
    let url = job
        .lines()
        .find_map(|l| l.trim().strip_prefix("value: postgres://"))
        .map(|rest| format!("postgres://{rest}"))
        .expect("the state URL");
    let place = vmr::checkpoint::Place::parse(&url, true).expect("a state URL without password");
    assert!(place.dir().is_none());
    assert!(!job.contains('\t'), "YAML is indented with spaces");
}
