//! The lake output against a real S3-compatible server: moto's `moto_server`, started here on a
//! loopback port (`.ci/run` installs it from PyPI), read back with pyarrow's S3 file system as
//! a hive dataset. Also the hive layout in a local directory.

use crate::common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};
use vmr::sandbox::SandboxConfig;

const KEY_ID: &str = "AKIAVMRLAKETEST00001";
const SECRET: &str = "vmr-lake-test-secret-Zq8wN3pX";
const BUCKET: &str = "vmr-lake";

/// A moto S3 server on a free loopback port, stopped on drop.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts `moto_server` with one bucket, or `None` (saying so) when it is not installed and this
/// is not CI.
fn moto() -> Option<Moto> {
    let have = Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI needs moto_server (pip install 'moto[server]')"
        );
        println!("skipped: moto_server is not installed (pip install 'moto[server]')");
        return None;
    }
    let port = free_port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server starts");
    let m = Moto { child, port };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    let created = python(&m, "s3.create_bucket(Bucket=sys.argv[1])", &[BUCKET]);
    assert!(created.status.success(), "{}", stderr_of(&created));
    Some(m)
}

/// Runs python3 with `s3` (a boto3 client) and `fs` (pyarrow's S3 file system) pointed at moto.
fn python(m: &Moto, code: &str, args: &[&str]) -> std::process::Output {
    let prelude = format!(
        "import sys, json, boto3, pyarrow.fs as pafs\n\
         s3 = boto3.client('s3', endpoint_url='http://127.0.0.1:{p}', region_name='us-east-1', \
         aws_access_key_id='{KEY_ID}', aws_secret_access_key='{SECRET}')\n\
         fs = pafs.S3FileSystem(endpoint_override='127.0.0.1:{p}', scheme='http', \
         region='us-east-1', access_key='{KEY_ID}', secret_key='{SECRET}')\n",
        p = m.port
    );
    Command::new("python3")
        .arg("-c")
        .arg(format!("{prelude}{code}"))
        .args(args)
        .output()
        .expect("python3 runs")
}

fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every object in the bucket: key → (size, etag).
fn objects(m: &Moto) -> BTreeMap<String, (u64, String)> {
    let o = python(
        m,
        "out = {}\n\
         for page in s3.get_paginator('list_objects_v2').paginate(Bucket=sys.argv[1]):\n\
         \x20   for x in page.get('Contents', []): out[x['Key']] = [x['Size'], x['ETag']]\n\
         print(json.dumps(out))",
        &[BUCKET],
    );
    assert!(o.status.success(), "{}", stderr_of(&o));
    let v: BTreeMap<String, (u64, String)> =
        serde_json::from_slice(&o.stdout).expect("listing is JSON");
    v
}

fn get_object(m: &Moto, key: &str) -> Vec<u8> {
    let o = python(
        m,
        "sys.stdout.buffer.write(s3.get_object(Bucket=sys.argv[1], Key=sys.argv[2])['Body'].read())",
        &[BUCKET, key],
    );
    assert!(o.status.success(), "{}", stderr_of(&o));
    o.stdout
}

/// `vmr` with the S3 environment of a store at `endpoint` (and nothing else of the host's).
fn vmr_s3_std(dir: &Path, sb: &vmr::sandbox::Sandbox, endpoint: &str) -> Command {
    let mut c = vmr_std(dir, sb);
    c.env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", endpoint);
    c
}

fn vmr_s3(dir: &Path, sb: &vmr::sandbox::Sandbox, endpoint: &str) -> assert_cmd::Command {
    assert_cmd::Command::from_std(vmr_s3_std(dir, sb, endpoint))
}

/// A sandbox (seed `seed`) and a checkpoint that bought `n` VINs (salt `salt`) from it.
fn bought(
    seed: u64,
    n: usize,
    salt: u32,
) -> (tempfile::TempDir, std::path::PathBuf, vmr::sandbox::Sandbox) {
    let (t, dir) = tempdir();
    let sb = sandbox(SandboxConfig {
        seed,
        ..SandboxConfig::default()
    });
    write_csv(&dir.join("a.csv"), &vins(n, salt));
    vmr(&dir, &sb)
        .args(["run", "--input", "a.csv"])
        .assert()
        .code(0);
    (t, dir, sb)
}

fn endpoint(m: &Moto) -> String {
    format!("http://127.0.0.1:{}", m.port)
}

/// Fails if any output shows the credentials.
fn assert_no_credentials(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    assert!(
        !text.contains(SECRET) && !text.contains(KEY_ID),
        "{what} shows a credential:\n{text}"
    );
}

fn output(a: &assert_cmd::assert::Assert) -> Vec<u8> {
    let o = a.get_output();
    [o.stdout.as_slice(), o.stderr.as_slice()].concat()
}

/// A fleet bought once, then partly again after the sandbox's reports moved on (so the tables
/// hold versions 1 and 2), with some reports moved back into earlier months, as a checkpoint
/// kept for a year would hold them.
fn fleet_of_two_versions(
    n: usize,
) -> (tempfile::TempDir, std::path::PathBuf, vmr::sandbox::Sandbox) {
    let (t, dir) = tempdir();
    let cfg = SandboxConfig {
        seed: 21,
        report_age: Duration::from_secs(90 * 86_400),
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg);
    write_csv(&dir.join("in.csv"), &vins(n, 71));
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--format", "parquet,csv"])
        .assert()
        .code(0);
    std::thread::sleep(Duration::from_millis(300));
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--refresh-older-than", "200ms"])
        .assert()
        .code(0);
    spread_over_months(&dir);
    (t, dir, sb)
}

/// Moves the version-1 reports of every third VIN to 2025-11 and of every fifth to 2026-01
/// (UTC), so the hive layout has several partitions.
fn spread_over_months(dir: &Path) {
    let c = db(dir);
    c.execute(
        "UPDATE reports SET fetched_at = 1763251200000 WHERE version = 1 AND vin_id % 3 = 0",
        [],
    )
    .expect("update");
    c.execute(
        "UPDATE reports SET fetched_at = 1768478400000 WHERE version = 1 AND vin_id % 5 = 0",
        [],
    )
    .expect("update");
}

/// Reads a flat export (local) and a hive dataset (on moto) and says, per report table, the
/// rows of each and whether they are equal as multisets (flat without `is_latest`, hive without
/// `fetched_month`), and whether every hive row sits in the partition of its `fetched_at`.
const COMPARE: &str = r#"
import pyarrow.parquet as pq, pyarrow.dataset as ds, pyarrow.compute as pc
flat_dir, root = sys.argv[1], sys.argv[2]
out = {}
def rows(t):
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in t.to_pylist())
for name in ['reports', 'records', 'overview', 'exceptions']:
    flat = pq.read_table(f'{flat_dir}/{name}.parquet')
    if 'is_latest' in flat.column_names:
        flat = flat.drop_columns(['is_latest'])
    d = ds.dataset(f'{root}/{name}', filesystem=fs, format='parquet', partitioning='hive')
    hive = d.to_table()
    months = hive.column('fetched_month').to_pylist()
    ok_month = True
    if 'fetched_at' in hive.column_names:
        at = hive.column('fetched_at').to_pylist()
        ok_month = all(a.strftime('%Y-%m') == m for a, m in zip(at, months))
    hive = hive.drop_columns(['fetched_month']).select(flat.column_names)
    out[name] = {'flat': flat.num_rows, 'hive': hive.num_rows,
                 'equal': rows(flat) == rows(hive), 'months': sorted(set(months)),
                 'partition_of_fetched_at': ok_month}
req = pq.read_table(fs.open_input_file(f'{root}/requests/requests.parquet'))
out['requests'] = {'hive': req.num_rows, 'flat': pq.read_table(f'{flat_dir}/requests.parquet').num_rows}
print(json.dumps(out))
"#;

fn compare(m: &Moto, flat: &Path, root: &str) -> serde_json::Value {
    let o = python(m, COMPARE, &[flat.to_str().expect("utf-8 path"), root]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    serde_json::from_slice(&o.stdout).expect("comparison is JSON")
}

fn manifests(objs: &BTreeMap<String, (u64, String)>, root: &str) -> Vec<String> {
    objs.keys()
        .filter(|k| k.starts_with(&format!("{root}/_vmr/exports/")) && k.ends_with(".json"))
        .cloned()
        .collect()
}

fn part_files(objs: &BTreeMap<String, (u64, String)>) -> BTreeSet<String> {
    objs.keys()
        .filter(|k| k.rsplit('/').next().is_some_and(|n| n.starts_with("part-")))
        .cloned()
        .collect()
}

#[test]
fn a_hive_export_to_s3_reads_back_as_a_dataset_equal_to_the_flat_export() {
    let Some(m) = moto() else { return };
    let (_t, dir, sb) = fleet_of_two_versions(150);
    let ep = endpoint(&m);
    vmr(&dir, &sb)
        .args(["export", "--out", "flat"])
        .assert()
        .code(0);
    let a = vmr_s3(&dir, &sb, &ep)
        .args(["export", "--layout", "hive", "--format", "parquet,csv"])
        .args(["--out", &format!("s3://{BUCKET}/fleet")])
        .assert()
        .code(0);
    assert_no_credentials("export", &output(&a));

    let cmp = compare(&m, &dir.join("flat"), &format!("{BUCKET}/fleet"));
    for t in ["reports", "records", "overview", "exceptions"] {
        let c = &cmp[t];
        assert!(c["flat"].as_u64().unwrap() > 0, "{t}: {c}");
        assert_eq!(c["flat"], c["hive"], "{t}: {c}");
        assert_eq!(c["equal"], true, "{t}: rows differ from the flat export");
    }
    assert_eq!(cmp["reports"]["partition_of_fetched_at"], true);
    let months: Vec<String> = serde_json::from_value(cmp["records"]["months"].clone()).unwrap();
    assert!(
        months.len() >= 3 && months.contains(&"2025-11".to_owned()),
        "{months:?}"
    );
    assert_eq!(cmp["requests"]["flat"], cmp["requests"]["hive"]);

    // One manifest listing every object it wrote, rows and all; `_SUCCESS` names it.
    let objs = objects(&m);
    let ms = manifests(&objs, "fleet");
    assert_eq!(ms.len(), 1, "{ms:?}");
    let manifest: serde_json::Value =
        serde_json::from_slice(&get_object(&m, &ms[0])).expect("manifest is JSON");
    assert_no_credentials("the manifest", &get_object(&m, &ms[0]));
    let id = manifest["export_id"].as_str().unwrap().to_owned();
    assert!(ms[0].ends_with(&format!("{id}.json")));
    let listed: BTreeSet<String> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| format!("fleet/{}", f["path"].as_str().unwrap()))
        .collect();
    assert_eq!(
        part_files(&objs),
        listed
            .iter()
            .filter(|p| p.contains("/part-"))
            .cloned()
            .collect()
    );
    for f in manifest["files"].as_array().unwrap() {
        let key = format!("fleet/{}", f["path"].as_str().unwrap());
        assert_eq!(objs[&key].0, f["bytes"].as_u64().unwrap(), "{key}");
        if f["format"] == "csv" {
            assert!(
                key.starts_with("fleet/csv/") && key.ends_with(".csv"),
                "{key}"
            );
        }
    }
    assert!(listed.contains(&format!(
        "fleet/records/fetched_month=2025-11/part-{id}-0.parquet"
    )));
    assert!(listed.contains(&format!(
        "fleet/csv/records/fetched_month=2025-11/part-{id}-0.csv"
    )));
    assert!(listed.contains("fleet/csv/requests/requests.csv"));
    let covers = manifest["covers"].as_array().unwrap();
    assert_eq!(
        covers.len() as u64,
        cmp["reports"]["flat"].as_u64().unwrap()
    );
    assert!(covers.iter().any(|c| c[1] == 2), "version 2 covered");
    assert_eq!(
        String::from_utf8(get_object(&m, "fleet/_SUCCESS"))
            .unwrap()
            .trim(),
        id
    );
    // Hive files carry no is_latest.
    let o = python(
        &m,
        "import pyarrow.parquet as pq\n\
         print(json.dumps(pq.read_schema(fs.open_input_file(sys.argv[1])).names))",
        &[&format!(
            "{BUCKET}/{}",
            listed
                .iter()
                .find(|p| p.contains("fleet/reports/") && p.ends_with(".parquet"))
                .unwrap()
        )],
    );
    let names: Vec<String> = serde_json::from_slice(&o.stdout).expect("names");
    assert!(!names.contains(&"is_latest".to_owned()) && names.contains(&"version".to_owned()));

    // status shows nothing of the credentials either.
    let st = vmr_s3(&dir, &sb, &ep)
        .args(["status", "--json", "--out", &format!("s3://{BUCKET}/fleet")])
        .assert()
        .code(0);
    assert_no_credentials("status", &output(&st));
}

#[test]
fn a_second_export_adds_only_the_new_reports_and_touches_no_earlier_file() {
    let Some(m) = moto() else { return };
    let (_t, dir, sb) = bought(22, 80, 72);
    let out = format!("s3://{BUCKET}/inc");
    let ep = endpoint(&m);
    vmr_s3(&dir, &sb, &ep)
        .args(["export", "--layout", "hive", "--out", &out])
        .assert()
        .code(0);
    let first = objects(&m);

    write_csv(&dir.join("b.csv"), &vins(40, 73));
    vmr(&dir, &sb)
        .args(["run", "--input", "b.csv"])
        .assert()
        .code(0);
    vmr_s3(&dir, &sb, &ep)
        .args(["export", "--layout", "hive", "--out", &out])
        .assert()
        .code(0);
    let second = objects(&m);
    // Every part file of the first export is still there, byte for byte.
    for k in part_files(&first) {
        assert_eq!(second.get(&k), first.get(&k), "{k} changed");
    }
    let ms = manifests(&second, "inc");
    assert_eq!(ms.len(), 2);
    let m2: serde_json::Value = serde_json::from_slice(&get_object(&m, &ms[1])).unwrap();
    let id2 = m2["export_id"].as_str().unwrap();
    let new_parts: BTreeSet<String> = part_files(&second)
        .difference(&part_files(&first))
        .cloned()
        .collect();
    assert!(!new_parts.is_empty());
    assert!(
        new_parts
            .iter()
            .all(|p| p.contains(&format!("part-{id2}-"))),
        "{new_parts:?}"
    );
    // It covers exactly the reports of the second input.
    let b: BTreeSet<String> = vins(40, 73).into_iter().collect();
    let covered: BTreeSet<String> = m2["covers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[0].as_str().unwrap().to_owned())
        .collect();
    let with_report = count(&dir, "SELECT count(DISTINCT vin_id) FROM reports");
    assert!(covered.is_subset(&b) && !covered.is_empty());
    // The dataset holds every report once.
    vmr(&dir, &sb)
        .args(["export", "--out", "flat"])
        .assert()
        .code(0);
    let cmp = compare(&m, &dir.join("flat"), &format!("{BUCKET}/inc"));
    assert_eq!(cmp["reports"]["hive"].as_i64().unwrap(), with_report);
    for t in ["reports", "records", "overview", "exceptions"] {
        assert_eq!(cmp[t]["equal"], true, "{t}: {}", cmp[t]);
    }

    // Nothing new: a third export adds a manifest and no part file.
    vmr_s3(&dir, &sb, &ep)
        .args(["export", "--layout", "hive", "--out", &out])
        .assert()
        .code(0);
    let third = objects(&m);
    assert_eq!(part_files(&third), part_files(&second));
    assert_eq!(manifests(&third, "inc").len(), 3);

    // --full refuses a destination that holds exports, and writes nothing.
    let a = vmr_s3(&dir, &sb, &ep)
        .args(["export", "--layout", "hive", "--full", "--out", &out])
        .assert()
        .code(2);
    assert!(String::from_utf8_lossy(&a.get_output().stderr).contains("--full"));
    assert_eq!(objects(&m), third);
}

/// A TCP proxy in front of moto that holds back the first request whose head contains
/// `pattern` (never forwarding it) and tells the test.
fn holding_proxy(upstream: u16, pattern: &'static [u8]) -> (u16, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::channel();
    let held = Arc::new(AtomicBool::new(false));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                return;
            };
            let (mut c_read, mut s_write) = (
                client.try_clone().expect("clone"),
                server.try_clone().expect("clone"),
            );
            let (mut s_read, mut c_write) = (server, client);
            let tx = tx.clone();
            let held = held.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                let mut tail: Vec<u8> = Vec::new();
                loop {
                    let n = match c_read.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    tail.extend_from_slice(&buf[..n]);
                    if tail.windows(pattern.len()).any(|w| w == pattern)
                        && !held.swap(true, Ordering::SeqCst)
                    {
                        let _ = tx.send(());
                        // Hold the connection open, forwarding nothing more.
                        std::thread::sleep(Duration::from_secs(120));
                        return;
                    }
                    let keep = tail.len().saturating_sub(pattern.len());
                    tail.drain(..keep);
                    if s_write.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_read, &mut c_write);
            });
        }
    });
    (port, rx)
}

#[test]
fn an_export_killed_before_its_manifest_leaves_orphans_the_next_export_removes() {
    let Some(m) = moto() else { return };
    let (_t, dir, sb) = bought(23, 120, 74);
    spread_over_months(&dir);
    let out = format!("s3://{BUCKET}/killed");
    // The manifest's put is held back at the proxy; the export is killed while it waits.
    let (proxy, held) = holding_proxy(m.port, b"PUT /vmr-lake/killed/_vmr/exports/");
    let mut c = vmr_s3_std(&dir, &sb, &format!("http://127.0.0.1:{proxy}"));
    c.args(["export", "--layout", "hive", "--out", &out])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().expect("export starts");
    held.recv_timeout(Duration::from_secs(60))
        .expect("the export reached its manifest");
    child.kill().expect("kill");
    child.wait().expect("wait");

    let objs = objects(&m);
    let orphans = part_files(&objs);
    assert!(
        !orphans.is_empty(),
        "the killed export had uploaded its parts"
    );
    assert!(
        manifests(&objs, "killed").is_empty(),
        "no manifest for the killed export"
    );
    assert!(!objs.contains_key("killed/_SUCCESS"));

    let a = vmr_s3(&dir, &sb, &endpoint(&m))
        .args(["export", "--layout", "hive", "--out", &out])
        .assert()
        .code(0);
    let log = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
    let after = objects(&m);
    for o in &orphans {
        assert!(!after.contains_key(o), "{o} is still there");
        assert!(log.contains(o.trim_start_matches("killed/")), "{log}");
    }
    assert_eq!(manifests(&after, "killed").len(), 1);
    vmr(&dir, &sb)
        .args(["export", "--out", "flat"])
        .assert()
        .code(0);
    let cmp = compare(&m, &dir.join("flat"), &format!("{BUCKET}/killed"));
    for t in ["reports", "records", "overview", "exceptions"] {
        assert_eq!(cmp[t]["equal"], true, "{t}: {}", cmp[t]);
    }
}

#[test]
fn a_missing_bucket_exits_2_before_anything_is_written_or_bought() {
    let Some(m) = moto() else { return };
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    write_csv(&dir.join("a.csv"), &vins(10, 75));
    let before = objects(&m);
    let a = vmr_s3(&dir, &sb, &endpoint(&m))
        .args(["run", "--input", "a.csv", "--out", "s3://no-such-bucket/x"])
        .assert()
        .code(2);
    let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
    assert!(err.contains("s3://no-such-bucket/x"), "{err}");
    assert!(
        err.contains("NoSuchBucket") || err.contains("not found") || err.contains("does not exist"),
        "{err}"
    );
    assert_no_credentials("run", &output(&a));
    assert_eq!(sb.ledger().calls_total, 0, "nothing bought");

    vmr(&dir, &sb)
        .args(["run", "--input", "a.csv"])
        .assert()
        .code(0);
    for layout in ["flat", "hive"] {
        let a = vmr_s3(&dir, &sb, &endpoint(&m))
            .args([
                "export",
                "--layout",
                layout,
                "--out",
                "s3://no-such-bucket/x",
            ])
            .assert()
            .code(2);
        let err = String::from_utf8_lossy(&a.get_output().stderr).into_owned();
        assert!(err.contains("no-such-bucket"), "{err}");
        assert_no_credentials("export", &output(&a));
    }
    // Wrong credentials are refused the same way (moto checks none by default, so a refused
    // URL credential stands for it here): exit 2, the secret not repeated.
    let a = vmr_s3(&dir, &sb, &endpoint(&m))
        .args([
            "export",
            "--out",
            &format!("s3://{KEY_ID}:{SECRET}@{BUCKET}/x"),
        ])
        .assert()
        .code(2);
    assert_no_credentials("export", &output(&a));
    assert_eq!(objects(&m), before, "nothing written");
}

#[test]
fn a_flat_export_to_s3_uploads_the_files_and_the_manifest_last() {
    let Some(m) = moto() else { return };
    let (_t, dir, sb) = bought(24, 40, 76);
    let a = vmr_s3(&dir, &sb, &endpoint(&m))
        .args(["export", "--out", &format!("s3://{BUCKET}/flat")])
        .assert()
        .code(0);
    assert_no_credentials("export", &output(&a));
    let objs = objects(&m);
    let manifest: serde_json::Value =
        serde_json::from_slice(&get_object(&m, "flat/manifest.json")).unwrap();
    for f in manifest["files"].as_array().unwrap() {
        let key = format!("flat/{}", f["path"].as_str().unwrap());
        assert_eq!(objs[&key].0, f["bytes"].as_u64().unwrap(), "{key}");
    }
    assert!(objs.contains_key("flat/records.parquet"));
}

#[test]
fn a_local_hive_export_is_incremental_too() {
    let (_t, dir, sb) = bought(25, 30, 77);
    spread_over_months(&dir);
    vmr(&dir, &sb)
        .args(["export", "--layout", "hive", "--out", "lake"])
        .assert()
        .code(0);
    let lake = dir.join("lake");
    assert!(lake.join("_SUCCESS").is_file());
    assert!(lake.join("records/fetched_month=2025-11").is_dir());
    let parts = |d: &Path| -> BTreeSet<String> {
        walk(d)
            .into_iter()
            .filter(|p| p.contains("/part-"))
            .collect()
    };
    let first = parts(&lake);
    // A killed export's leftover (a part no manifest lists) is removed by the next one.
    let orphan = lake.join("records/fetched_month=2025-11/part-20250101T000000Z-dead00-0.parquet");
    std::fs::write(&orphan, b"half a file").unwrap();
    write_csv(&dir.join("b.csv"), &vins(10, 78));
    vmr(&dir, &sb)
        .args(["run", "--input", "b.csv"])
        .assert()
        .code(0);
    vmr(&dir, &sb)
        .args(["export", "--layout", "hive", "--out", "lake"])
        .assert()
        .code(0);
    assert!(!orphan.exists());
    let second = parts(&lake);
    assert!(first.is_subset(&second) && second.len() > first.len());
    let manifests = std::fs::read_dir(lake.join("_vmr/exports"))
        .unwrap()
        .count();
    assert_eq!(manifests, 2);
    // `vmr audit` reads flat exports only, and says what to do instead.
    let a = vmr(&dir, &sb)
        .args(["audit", "--layout", "hive", "--out", "lake"])
        .assert()
        .code(2);
    assert!(String::from_utf8_lossy(&a.get_output().stderr).contains("--emit-sql"));
}

fn walk(d: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.to_string_lossy().into_owned());
        }
    }
    out
}

/// `requests.csv` of `dir/out` as (vin, status, input_file, input_line), sorted.
fn requests_rows(dir: &Path) -> Vec<(String, String, String, String)> {
    let mut r = csv::Reader::from_path(dir.join("out/requests.csv")).expect("requests.csv");
    let h = r.headers().expect("header").clone();
    let col = |n: &str| h.iter().position(|x| x == n).expect(n);
    let mut rows: Vec<_> = r
        .records()
        .map(|rec| {
            let rec = rec.expect("row");
            (
                rec[col("vin")].to_owned(),
                rec[col("status")].to_owned(),
                rec[col("input_file")].to_owned(),
                rec[col("input_line")].to_owned(),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// `--input s3://bucket/key` reads the object where the upstream job left it, through the
/// lake's client and credentials: the same requests as the local file, recorded under the
/// key's last part. A missing object exits 2 before anything is recorded.
#[test]
fn an_input_in_the_lake_is_read_like_the_local_file() {
    let Some(m) = moto() else { return };
    let sb = sandbox(SandboxConfig::default());
    let (_t, local) = tempdir();
    let mut fleet = vins(6, 83);
    fleet.push("LSVAB1234".into());
    write_csv(&local.join("2026-12.csv"), &fleet);
    vmr(&local, &sb)
        .args(["run", "--input", "2026-12.csv", "--format", "csv"])
        .assert()
        .code(0);
    let put = python(
        &m,
        "s3.put_object(Bucket=sys.argv[1], Key='fleets/2026-12.csv', Body=open(sys.argv[2], 'rb').read())",
        &[BUCKET, local.join("2026-12.csv").to_str().expect("utf-8")],
    );
    assert!(put.status.success(), "{}", stderr_of(&put));

    let (_t2, remote) = tempdir();
    let url = format!("s3://{BUCKET}/fleets/2026-12.csv");
    let a = vmr_s3(&remote, &sb, &endpoint(&m))
        .args(["run", "--input", &url, "--format", "csv"])
        .assert()
        .code(0);
    assert_no_credentials("run", &output(&a));
    assert_eq!(requests_rows(&remote), requests_rows(&local));
    assert!(
        requests_rows(&remote)
            .iter()
            .any(|(_, status, file, _)| status == "rejected" && file == "2026-12.csv")
    );

    let (_t3, missing) = tempdir();
    let a = vmr_s3(&missing, &sb, &endpoint(&m))
        .args([
            "ingest",
            "--input",
            &format!("s3://{BUCKET}/fleets/nope.csv"),
        ])
        .assert()
        .code(2);
    let text = String::from_utf8_lossy(&output(&a)).into_owned();
    assert!(
        text.contains(&format!("s3://{BUCKET}/fleets/nope.csv: cannot be read")),
        "{text}"
    );
    assert!(!has_checkpoint(&missing), "nothing recorded");
}
