//! Money: `--price` turns billed calls into amounts (summary, status, dry run, manifest), and
//! `--max-spend` stops buying as `--max-billed` does; checked against the sandbox's ledger.

use crate::common::*;
use std::time::Duration;
use vmr::sandbox::SandboxConfig;

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_price_turns_every_count_of_billed_calls_into_money_and_no_price_says_nothing() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig {
        seed: 20,
        ..SandboxConfig::default()
    });
    write_csv(&dir.join("in.csv"), &vins(40, 60));

    // The dry run's estimate: 40 generates, and a get for 7 in 10 of them (no report bought
    // yet to tell the share): 68 calls at 2.50, 14 s at 5 calls a second.
    let out = vmr(&dir, &sb)
        .args(["submit", "--input", "in.csv", "--dry-run", "--rate", "5"])
        .args(["--price", "2.5"])
        .output()
        .expect("vmr runs");
    assert_eq!(out.status.code(), Some(0));
    let t = text(&out);
    assert!(
        t.contains(
            "would buy 40 reports: 40 generates + about 28 gets = about 170 CNY at 2.50 per call, 14 s at --rate 5"
        ),
        "{t}"
    );
    let out = vmr(&dir, &sb)
        .args(["submit", "--input", "in.csv", "--dry-run"])
        .output()
        .expect("vmr runs");
    assert!(!text(&out).contains("CNY"), "{}", text(&out));
    assert_eq!(sb.ledger().calls_total, 0);

    // The run's summary.
    let out = vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--price", "2.5"])
        .output()
        .expect("vmr runs");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let billed = sb.ledger().billed_total;
    let spent = format!("{:.2}", billed as f64 * 2.5);
    assert!(
        text(&out).contains(&format!(
            "this run spent {spent} CNY ({billed} billed calls at 2.50 per call)"
        )),
        "{}",
        text(&out)
    );
    // The manifest of that run's export.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("out").join("manifest.json")).expect("manifest"),
    )
    .expect("JSON");
    assert_eq!(manifest["money"]["billed_calls"], billed);
    assert_eq!(manifest["money"]["spent"], billed as f64 * 2.5);
    assert_eq!(manifest["money"]["currency"], "CNY");

    // status, JSON and text, with another currency label; nothing about money without a price.
    let out = vmr(&dir, &sb)
        .args(["status", "--json", "--price", "2.5", "--currency", "EUR"])
        .output()
        .expect("vmr runs");
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(st["money"]["billed_calls"], billed);
    assert_eq!(st["money"]["spent"], billed as f64 * 2.5);
    assert_eq!(st["money"]["price_per_call"], 2.5);
    assert_eq!(st["money"]["currency"], "EUR");
    let out = vmr(&dir, &sb)
        .args(["status", "--price", "2.5"])
        .output()
        .expect("vmr runs");
    assert!(
        text(&out).contains(&format!(
            "spent: {spent} CNY ({billed} billed calls at 2.50 per call)"
        )),
        "{}",
        text(&out)
    );
    let out = vmr(&dir, &sb)
        .args(["status", "--json"])
        .output()
        .expect("vmr runs");
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(st["money"].is_null());
    let out = vmr(&dir, &sb).arg("status").output().expect("vmr runs");
    assert!(!text(&out).contains("spent"), "{}", text(&out));

    // A price from the environment and a price that is not one.
    let out = vmr(&dir, &sb)
        .env("VMR_PRICE", "0.5")
        .args(["status", "--json"])
        .output()
        .expect("vmr runs");
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(st["money"]["spent"], billed as f64 * 0.5);
    vmr(&dir, &sb)
        .args(["status", "--price", "-1"])
        .assert()
        .code(2);
}

#[test]
fn max_spend_stops_buying_at_the_calls_it_pays_for_keeping_gets_for_what_is_owed() {
    let (_t, dir) = tempdir();
    let sb = sandbox(SandboxConfig {
        seed: 21,
        // Every report deferred: each purchase owes one get.
        inline_rate: 0.0,
        latency: Duration::from_millis(5),
        ..SandboxConfig::default()
    });
    write_csv(&dir.join("in.csv"), &vins(100, 61));
    // Without a price, a spend limit means nothing: refused before anything is sent.
    vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--max-spend", "25"])
        .assert()
        .code(2);
    assert_eq!(sb.ledger().calls_total, 0);

    // 26 CNY at 2.50 pays for 10 billed calls. One call at a time, a generate goes only while
    // a get is left for every report bought: 5 generates, then their 5 gets.
    let out = vmr(&dir, &sb)
        .args([
            "run",
            "--input",
            "in.csv",
            "--price",
            "2.5",
            "--max-spend",
            "26",
        ])
        .args(["--concurrency", "1"])
        .output()
        .expect("vmr runs");
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    let l = sb.ledger();
    assert_eq!((l.generate_billed, l.get_billed), (5, 5));
    assert!(
        text(&out).contains("this run spent 25.00 CNY"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("--max-spend 26.00 CNY (10 billed calls at 2.50 per call) reached"),
        "{}",
        text(&out)
    );
    // The dry run says where it would stop.
    let out = vmr(&dir, &sb)
        .args(["submit", "--dry-run", "--price", "2.5", "--max-spend", "26"])
        .output()
        .expect("vmr runs");
    assert!(
        text(&out).contains(
            "--max-spend 26.00 CNY: this run would stop buying at 10 billed calls (25.00 CNY)"
        ),
        "{}",
        text(&out)
    );
    // The tighter of the two limits holds.
    let before = sb.ledger().billed_total;
    vmr(&dir, &sb)
        .args([
            "run",
            "--input",
            "in.csv",
            "--price",
            "2.5",
            "--max-spend",
            "1000",
        ])
        .args(["--max-billed", "4"])
        .assert()
        .code(75);
    assert!(sb.ledger().billed_total - before <= 4);
}
