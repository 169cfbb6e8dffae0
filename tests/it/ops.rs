//! Running vmr unattended: `vmr status --json` as a versioned interface, the metrics file for
//! node_exporter, and the healthchecks-style pings.

use crate::common::*;
use std::collections::BTreeSet;
use vmr::sandbox::SandboxConfig;

/// `python3 -c <code> <args…>`, or `None` (with one line printed) when python3 or one of
/// `modules` is missing and `CI` is not `true` (CI installs them: .ci/run).
fn python(modules: &[&str], code: &str, args: &[&str]) -> Option<std::process::Output> {
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
         UPDATE vins SET state = 'failed', message = 'billed_unusable: no report' WHERE id IN (SELECT id FROM vins WHERE state = 'done' ORDER BY id LIMIT 105);",
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
