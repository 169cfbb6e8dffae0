//! Running vmr unattended: `vmr status --json` as a versioned interface, the metrics file for
//! node_exporter, and the healthchecks-style pings.

use crate::common::*;
use std::collections::{BTreeMap, BTreeSet};
use vmr::sandbox::SandboxConfig;

fn status_json(dir: &std::path::Path, sb: &vmr::sandbox::Sandbox) -> serde_json::Value {
    let out = vmr(dir, sb).args(["status", "--json"]).assert().code(0);
    serde_json::from_slice(&out.get_output().stdout).expect("status is JSON")
}

fn schema() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/status.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("schema file")).expect("JSON")
}

/// A state directory where a run bought `ok` VINs in the sandbox and rejected `bad` input rows.
fn checkpoint_with_lists(dir: &std::path::Path, sb: &vmr::sandbox::Sandbox, ok: usize, bad: usize) {
    let mut rows = vins(ok, 40);
    for i in 0..bad {
        rows.push(format!("NOT-A-VIN-{i}"));
    }
    write_csv(&dir.join("in.csv"), &rows);
    vmr(dir, sb)
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(0);
}

#[test]
fn status_json_is_versioned_described_by_its_schema_and_bounded() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    checkpoint_with_lists(&dir, &sb, 260, 150);
    let db = db(&dir);
    db.execute_batch(
        "UPDATE vins SET state = 'uncertain' WHERE id IN (SELECT id FROM vins WHERE state = 'done' ORDER BY id LIMIT 120);
         UPDATE vins SET state = 'failed', message = 'billed_unusable: no report', failure = 'billed_unusable' WHERE id IN (SELECT id FROM vins WHERE state = 'done' ORDER BY id LIMIT 105);",
    )
    .expect("lists made long");
    drop(db);
    let st = status_json(&dir, &sb);
    assert_eq!(st["schema_version"], 1);

    // Every top-level key is declared in the schema and every declared key is printed.
    let schema = schema();
    let declared: BTreeSet<&str> = schema["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .map(String::as_str)
        .collect();
    let printed: BTreeSet<&str> = st
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(printed, declared);
    let required: BTreeSet<&str> = schema["required"]
        .as_array()
        .expect("required")
        .iter()
        .map(|v| v.as_str().expect("a key"))
        .collect();
    assert_eq!(required, declared);
    for (key, p) in schema["properties"].as_object().expect("properties") {
        assert!(p["description"].is_string(), "{key} is described");
    }

    // Every list stops at the limit, beside the count of them all.
    assert_eq!(st["list_limit"], 100);
    for (list, total) in [
        ("uncertain", 120),
        ("billed_unusable", 105),
        ("rejected", 150),
    ] {
        assert_eq!(st[list].as_array().map(Vec::len), Some(100), "{list}");
        assert_eq!(st[format!("{list}_total")], total, "{list}");
        assert!(st["full_lists"][list].is_string(), "{list}");
    }
    assert_eq!(st["states"]["rejected"], 150);
    assert!(st["uncertain"][0].is_string() && st["rejected"][0]["reason"].is_string());
    // The text view says how many more there are and where.
    let text = vmr(&dir, &sb).arg("status").assert().code(0);
    let text = String::from_utf8_lossy(&text.get_output().stdout).to_string();
    assert!(
        text.contains("… and 20 more (all of them: vmr export"),
        "{text}"
    );
    assert!(
        text.contains("… and 130 more (all of them: vmr export"),
        "{text}"
    );

    // And the document validates against the schema.
    let path = dir.join("status.json");
    std::fs::write(&path, st.to_string()).expect("written");
    let check = "import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
jsonschema.Draft202012Validator(schema).validate(json.load(open(sys.argv[2])))
print('valid')";
    let schema_path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/status.schema.json");
    if let Some(out) = python(
        &["jsonschema"],
        check,
        &[schema_path, path.to_str().expect("utf-8 path")],
    ) {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The samples of a Prometheus text file, `name{labels}` → value, read line by line.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').expect("name and value");
            (key.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

/// Parses the metrics file with prometheus_client and returns, per family, its type and the
/// number of samples; `None` when python3 or prometheus_client is missing (outside CI).
fn parsed_by_prometheus_client(path: &std::path::Path) -> Option<serde_json::Value> {
    let code = "import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(open(sys.argv[1]).read()):
    assert f.documentation, f.name
    out[f.name] = {'type': f.type, 'samples': {s.name + json.dumps(s.labels, sort_keys=True): s.value for s in f.samples}}
print(json.dumps(out))";
    let out = python(
        &["prometheus_client"],
        code,
        &[path.to_str().expect("utf-8 path")],
    )?;
    assert!(
        out.status.success(),
        "prometheus_client cannot parse it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("JSON"))
}

/// The metrics file agrees with `vmr status --json`.
fn assert_metrics_match_status(dir: &std::path::Path, sb: &vmr::sandbox::Sandbox, exit: u8) {
    let text = std::fs::read_to_string(dir.join("vmr.prom")).expect("metrics file written");
    let m = samples(&text);
    let st = status_json(dir, sb);
    for (state, n) in st["states"].as_object().expect("states") {
        assert_eq!(
            m[&format!("vmr_vins{{state=\"{state}\"}}")],
            n.as_f64().expect("a count"),
            "{state}"
        );
    }
    for (ep, c) in st["calls"].as_object().expect("calls") {
        assert_eq!(
            m[&format!("vmr_billed_calls_total{{endpoint=\"{ep}\"}}")],
            c["billed"].as_f64().expect("a count"),
            "{ep}"
        );
    }
    let count = |k: &str| st[k].as_f64().expect("a count");
    assert_eq!(
        m["vmr_unknown_outcome_calls_total"],
        count("unknown_outcome_total")
    );
    assert_eq!(m["vmr_uncertain_vins"], count("uncertain_total"));
    assert_eq!(
        m["vmr_pending_reports"],
        st["states"]["pending"].as_f64().expect("a count")
    );
    assert_eq!(m["vmr_last_run_exit_code"], f64::from(exit));
    let (start, end) = (
        m["vmr_last_run_start_timestamp_seconds"],
        m["vmr_last_run_end_timestamp_seconds"],
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    assert!(start <= end && end <= now && now - start < 600.0, "{text}");
    if m["vmr_pending_reports"] == 0.0 {
        assert_eq!(m["vmr_oldest_pending_report_age_seconds"], 0.0);
    }
    if let Some(families) = parsed_by_prometheus_client(&dir.join("vmr.prom")) {
        assert_eq!(families["vmr_vins"]["type"], "gauge");
        assert_eq!(families["vmr_billed_calls"]["type"], "counter");
        assert_eq!(families["vmr_last_run_exit_code"]["type"], "gauge");
        let parsed: usize = families
            .as_object()
            .expect("families")
            .values()
            .map(|f| f["samples"].as_object().expect("samples").len())
            .sum();
        assert_eq!(parsed, m.len(), "every sample parsed: {families}");
    }
}

#[test]
fn metrics_file_for_the_textfile_collector_agrees_with_status() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    write_csv(&dir.join("in.csv"), &vins(200, 41));
    // A submit with a budget leaves VINs queued and reports pending: exit 75, a success.
    vmr(&dir, &sb)
        .args(["submit", "--input", "in.csv", "--max-billed", "60"])
        .args(["--metrics-file", "vmr.prom"])
        .assert()
        .code(75);
    assert_metrics_match_status(&dir, &sb, 75);
    let text = std::fs::read_to_string(dir.join("vmr.prom")).expect("metrics");
    let m = samples(&text);
    let success = m["vmr_last_success_timestamp_seconds"];
    assert_eq!(success, m["vmr_last_run_end_timestamp_seconds"]);
    assert!(m["vmr_pending_reports"] > 0.0);
    assert!(m["vmr_oldest_pending_report_age_seconds"] >= 0.0);
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let name = l.split([' ', '{']).next().expect("a name");
        assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
    }

    // The wrong secret: a run of 400s, exit 3. The last success is kept from the old file.
    std::thread::sleep(std::time::Duration::from_millis(20));
    vmr(&dir, &sb)
        .env("VMR_APP_SECRET", "not-the-sandbox-secret")
        .env("VMR_METRICS_FILE", "vmr.prom")
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(3);
    assert_metrics_match_status(&dir, &sb, 3);
    let m = samples(&std::fs::read_to_string(dir.join("vmr.prom")).expect("metrics"));
    assert_eq!(m["vmr_last_success_timestamp_seconds"], success);
    assert!(m["vmr_last_run_end_timestamp_seconds"] > success);

    // From vmr.toml too; a finished batch ends 0.
    std::fs::write(dir.join("vmr.toml"), "metrics-file = \"vmr.prom\"\n").expect("config");
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv"])
        .assert()
        .code(0);
    assert_metrics_match_status(&dir, &sb, 0);
    let m = samples(&std::fs::read_to_string(dir.join("vmr.prom")).expect("metrics"));
    assert!(m["vmr_last_success_timestamp_seconds"] > success);
    assert_eq!(m["vmr_pending_reports"], 0.0);
    // Written atomically: nothing but the file itself is left beside it.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().to_string())
        .filter(|n| n.contains("prom"))
        .collect();
    assert_eq!(left, ["vmr.prom"]);
}

/// A check endpoint on a loopback port that records each request's method, path and body.
struct PingServer {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>,
}

impl PingServer {
    fn start() -> PingServer {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!(
            "http://{}/ping/tok-5f3e9a77",
            listener.local_addr().expect("address")
        );
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                reader.read_line(&mut line).expect("request line");
                let mut parts = line.split_whitespace();
                let (method, path) = (
                    parts.next().unwrap_or("").to_owned(),
                    parts.next().unwrap_or("").to_owned(),
                );
                let mut length = 0;
                loop {
                    let mut h = String::new();
                    reader.read_line(&mut h).expect("header");
                    if h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        length = v.trim().parse().expect("a length");
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).expect("body");
                record.lock().expect("lock").push((
                    method,
                    path,
                    String::from_utf8_lossy(&body).to_string(),
                ));
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK",
                );
            }
        });
        PingServer { url, seen }
    }

    /// The paths pinged since the last call, and their bodies.
    fn take(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.seen.lock().expect("lock"))
            .into_iter()
            .map(|(method, path, body)| {
                assert_eq!(method, "POST");
                (path, body)
            })
            .collect()
    }
}

#[test]
fn pings_say_how_each_run_ended_and_never_change_it() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig::default());
    let hc = PingServer::start();
    let paths = |pings: Vec<(String, String)>| -> Vec<String> {
        pings.into_iter().map(|(p, _)| p).collect()
    };
    let base = "/ping/tok-5f3e9a77";

    // 75 without uncertain VINs (reports not ready yet after a submit): a success.
    write_csv(&dir.join("in.csv"), &vins(60, 42));
    vmr(&dir, &sb)
        .args(["submit", "--input", "in.csv", "--ping-url", &hc.url])
        .assert()
        .code(75);
    assert_eq!(paths(hc.take()), [format!("{base}/start"), base.to_owned()]);

    // 75 with uncertain VINs: a person is needed, so it is a failure, with the count.
    db(&dir)
        .execute_batch("UPDATE vins SET state = 'uncertain' WHERE id IN (SELECT id FROM vins WHERE state = 'done' ORDER BY id LIMIT 2)")
        .expect("two uncertain");
    vmr(&dir, &sb)
        .env("VMR_PING_URL", &hc.url)
        .args(["poll", "--wait"])
        .assert()
        .code(75);
    let pings = hc.take();
    assert_eq!(
        paths(pings.clone()),
        [format!("{base}/start"), format!("{base}/fail")]
    );
    assert!(pings[1].1.starts_with("2 uncertain VINs"), "{pings:?}");

    // 0: every VIN final.
    let (_t2, dir2) = tempdir();
    write_csv(&dir2.join("in.csv"), &vins(30, 43));
    vmr(&dir2, &sb)
        .args(["run", "--input", "in.csv", "--ping-url", &hc.url])
        .assert()
        .code(0);
    assert_eq!(paths(hc.take()), [format!("{base}/start"), base.to_owned()]);

    // 3: the wrong secret, a run of 400s.
    let (_t3, dir3) = tempdir();
    write_csv(&dir3.join("in.csv"), &vins(30, 44));
    let out = vmr(&dir3, &sb)
        .env("VMR_APP_SECRET", "not-the-sandbox-secret")
        .env("RUST_LOG", "debug")
        .args(["run", "--input", "in.csv", "--ping-url", &hc.url])
        .assert()
        .code(3);
    assert_eq!(
        paths(hc.take()),
        [format!("{base}/start"), format!("{base}/3")]
    );
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        !stderr.contains("tok-5f3e9a77"),
        "the token leaked: {stderr}"
    );

    // A check endpoint that is not there: logged by scheme and host, the outcome unchanged.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("address")
    };
    let (_t4, dir4) = tempdir();
    write_csv(&dir4.join("in.csv"), &vins(10, 45));
    let out = vmr(&dir4, &sb)
        .args(["run", "--input", "in.csv"])
        .args(["--ping-url", &format!("http://{closed}/ping/tok-5f3e9a77")])
        .assert()
        .code(0);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("the ping failed"), "{stderr}");
    assert!(stderr.contains("http://127.0.0.1"), "{stderr}");
    assert!(
        !stderr.contains("tok-5f3e9a77"),
        "the token leaked: {stderr}"
    );
    assert!(hc.take().is_empty());

    // `--help` names the variable but never shows its value.
    let help = std::process::Command::new(assert_cmd::cargo::cargo_bin("vmr"))
        .env("VMR_PING_URL", &hc.url)
        .args(["run", "--help"])
        .output()
        .expect("vmr runs");
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    assert!(help.contains("VMR_PING_URL"), "{help}");
    assert!(!help.contains("tok-5f3e9a77"), "the token leaked: {help}");
}
