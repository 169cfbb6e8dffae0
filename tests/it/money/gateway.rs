//! The money rules against what real API gateways send: throttle windows with `Retry-After`,
//! 504s after the vendor billed, billed bodies that are not strict JSON, gets billed without a
//! report, reports that became ready after their VIN expired, redirects and oversized bodies.
//! Each test checks the sandbox's own ledger (or a loopback server's record) of what it billed.

use super::{assert_truth, detail, resubmit_until_settled, stderr_of};
use crate::common::*;
use crate::engine::uncertain;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::Duration;
use vmr::sandbox::{Fate, ReadyAfter, SandboxConfig};

/// Billed gets per VIN, from the call log (over every run).
fn billed_gets(dir: &std::path::Path) -> std::collections::BTreeMap<String, i64> {
    let conn = db(dir);
    let mut st = conn
        .prepare(
            "SELECT v.vin, count(*) FROM calls c JOIN vins v ON v.id = c.vin_id
             WHERE c.endpoint = 'get' AND c.billed = 1 GROUP BY v.vin",
        )
        .expect("query");
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows read")
}

#[test]
fn throttle_windows_pause_every_call_of_the_account_and_the_run_finishes() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        throttle_every: 250,
        throttle_secs: 2,
        seed: 61,
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    let vins = vins(400, 61);
    write_csv(&dir.join("in.csv"), &vins);
    let out = vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--concurrency", "16"])
        .output()
        .expect("vmr runs");
    let text = stderr_of(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_truth(&dir, &cfg, &vins);
    let ledger = sb.ledger();
    assert!(
        ledger.throttle_windows.len() >= 2,
        "{:?}",
        ledger.throttle_windows
    );
    // Counted by order: each window refused the calls already in flight when it opened (at
    // most --concurrency) and only a handful sent before the first 429 came back; then the
    // whole account waited for the Retry-After.
    for (i, refused) in ledger.throttle_windows.iter().enumerate() {
        assert!(*refused <= 16 + 10, "window {i} refused {refused} calls");
    }
    assert!(text.contains("asked to wait"), "{text}");
    for (vin, l) in &ledger.per_vin {
        assert!(l.generate <= 1, "{vin} bought twice");
    }
    // The throttled answers are in the call log, not billed, and failed nothing.
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM calls WHERE http_status = 429 AND billed = 0"
        ) as u64,
        ledger.throttled
    );
}

#[test]
fn a_wait_longer_than_max_wait_stops_the_run_with_75_and_says_how_long() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        throttle_every: 40,
        throttle_secs: 30,
        seed: 62,
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg);
    write_csv(&dir.join("in.csv"), &vins(120, 62));
    let out = vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--max-wait", "5s"])
        .output()
        .expect("vmr runs");
    let text = stderr_of(&out);
    assert_eq!(out.status.code(), Some(75), "{text}");
    assert!(text.contains("asked to wait 30s"), "{text}");
    // Nothing failed for it, and the unsent VINs wait in the queue.
    let d = detail(&dir);
    assert!(d.values().all(|(s, _, _)| s != "failed"), "{d:?}");
    assert!(d.values().any(|(s, _, _)| s == "queued"));
}

#[test]
fn a_gateway_504_after_billing_is_uncertain_and_never_resent_silently() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        gateway_504_rate: 0.05,
        seed: 63,
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    let vins = vins(400, 63);
    write_csv(&dir.join("in.csv"), &vins);
    let run = |extra: &[&str]| {
        vmr(&dir, &sb)
            .args(["run", "--input", "in.csv"])
            .args(extra)
            .output()
            .expect("vmr runs")
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(75), "{}", stderr_of(&out));
    let ledger = sb.ledger();
    let answered_504: BTreeSet<&String> = ledger
        .per_vin
        .iter()
        .filter(|(_, l)| l.gateway_504_generate > 0)
        .map(|(v, _)| v)
        .collect();
    assert!(!answered_504.is_empty());
    let listed: BTreeSet<String> = uncertain(&dir, &sb).into_iter().collect();
    // Every generate answered 504 left its VIN uncertain, and nothing was bought twice yet.
    for v in &answered_504 {
        assert!(listed.contains(*v), "{v} answered 504 but not listed");
    }
    for (vin, l) in &ledger.per_vin {
        assert!(l.generate <= 1, "{vin} bought twice without being listed");
    }
    resubmit_until_settled(&dir, &sb, &cfg, &vins, listed, |extra| {
        run(extra);
    });
}

#[test]
fn billed_bodies_that_are_not_strict_json_are_read_leniently_and_never_bought_again() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        raw_body_rate: 0.05,
        seed: 64,
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    let vins = vins(500, 64);
    write_csv(&dir.join("in.csv"), &vins);
    let out = vmr(&dir, &sb)
        .args(["run", "--input", "in.csv", "--format", "csv"])
        .output()
        .expect("vmr runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_truth(&dir, &cfg, &vins);
    let raw: Vec<(&String, vmr::sandbox::RawBrand)> = vins
        .iter()
        .filter(|v| {
            cfg.truth(v).fate != Fate::Unsupported703 && cfg.truth(v).fate != Fate::Fails702
        })
        .filter_map(|v| cfg.raw_brand(v).map(|r| (v, r)))
        .collect();
    assert!(raw.iter().any(|(_, r)| r.gbk) && raw.iter().any(|(_, r)| !r.gbk));
    assert!(sb.ledger().raw_bodies >= raw.len() as u64);
    // Every such report's fields are exact: the text as sent, a GBK field read as U+FFFD.
    let mut r = csv::Reader::from_path(dir.join("out/reports.csv")).expect("reports.csv");
    let headers = r.headers().expect("header").clone();
    let col = |name: &str| headers.iter().position(|h| h == name).expect(name);
    let (vin_col, brand_col) = (col("vin"), col("brand_name"));
    let brands: std::collections::BTreeMap<String, String> = r
        .records()
        .map(|rec| {
            let rec = rec.expect("a row");
            (rec[vin_col].to_owned(), rec[brand_col].to_owned())
        })
        .collect();
    let d = detail(&dir);
    let conn = db(&dir);
    for (vin, rb) in &raw {
        assert_eq!(
            brands.get(*vin).map(String::as_str),
            Some(String::from_utf8_lossy(&rb.bytes).as_ref()),
            "{vin}"
        );
        let (state, _, message) = &d[*vin];
        assert_eq!(state, "done", "{vin}");
        assert!(
            message.as_deref().unwrap_or("").contains("read leniently"),
            "{vin}: {message:?}"
        );
        // The raw bytes are kept as they came.
        let body: Vec<u8> = conn
            .query_row(
                "SELECT r.body FROM reports r JOIN vins v ON v.id = r.vin_id WHERE v.vin = ?1",
                [vin.as_str()],
                |r| r.get(0),
            )
            .expect("a stored report");
        assert!(
            body.windows(rb.bytes.len())
                .any(|w| w == rb.bytes.as_slice()),
            "{vin}: raw bytes not kept"
        );
    }
    // No generate billed twice, no VIN with more than two billed gets.
    for (vin, l) in &sb.ledger().per_vin {
        assert!(l.generate <= 1, "{vin} bought twice");
    }
    for (vin, n) in billed_gets(&dir) {
        assert!(n <= 2, "{vin}: {n} billed gets");
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("out/manifest.json")).expect("manifest"))
            .expect("JSON");
    assert!(
        manifest["data_quality"]["read_leniently"]
            .as_u64()
            .is_some_and(|n| n >= raw.len() as u64),
        "{manifest}"
    );
}

#[test]
fn a_get_billed_without_a_report_is_asked_once_more_then_failed_never_a_third_time() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        unusable_get_rate: 0.1,
        inline_rate: 0.0,
        seed: 65,
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    let vins = vins(200, 65);
    write_csv(&dir.join("in.csv"), &vins);
    for _ in 0..3 {
        vmr(&dir, &sb)
            .args(["run", "--input", "in.csv"])
            .assert()
            .code(0);
    }
    let unusable: Vec<&String> = vins
        .iter()
        .filter(|v| cfg.unusable_get(v) && cfg.truth(v).has_report())
        .collect();
    assert!(!unusable.is_empty());
    let d = detail(&dir);
    let gets = billed_gets(&dir);
    let ledger = sb.ledger();
    for v in &unusable {
        let (state, _, message) = &d[*v];
        assert_eq!(state, "failed", "{v}");
        assert!(
            message
                .as_deref()
                .unwrap_or("")
                .starts_with("billed_unusable"),
            "{v}: {message:?}"
        );
        assert_eq!(gets.get(*v), Some(&2), "{v}");
        assert_eq!(
            ledger.per_vin[*v].get, 2,
            "{v}: the sandbox billed a third get"
        );
    }
    // Every billed body is kept in the call log.
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM calls WHERE billed = 1 AND endpoint = 'get' AND body IS NOT NULL"
        ),
        2 * unusable.len() as i64
    );
}

#[test]
fn poll_retry_expired_fetches_a_report_that_became_ready_later_without_a_new_generate() {
    let (_t, dir) = tempdir();
    let cfg = SandboxConfig {
        ready_after: ReadyAfter::Duration(Duration::from_millis(1500)),
        seed: 66,
        ..SandboxConfig::default()
    };
    let sb = sandbox(cfg.clone());
    let vins = vins(60, 66);
    write_csv(&dir.join("in.csv"), &vins);
    vmr(&dir, &sb)
        .args(["submit", "--input", "in.csv", "--poll-timeout", "200ms"])
        .assert()
        .code(75);
    std::thread::sleep(Duration::from_millis(300));
    vmr(&dir, &sb)
        .args(["poll", "--poll-timeout", "200ms"])
        .assert()
        .code(0);
    let expired = count(&dir, "SELECT count(*) FROM vins WHERE state = 'expired'");
    assert!(expired > 0);
    // A dry run says what it would ask, and that nothing is bought again.
    let out = vmr(&dir, &sb)
        .args(["poll", "--retry-expired", "--dry-run"])
        .output()
        .expect("vmr runs");
    let text = stderr_of(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!("{expired} ask again")) && text.contains("nothing is bought again"),
        "{text}"
    );
    let out = vmr(&dir, &sb)
        .args(["submit", "--retry-expired", "--dry-run"])
        .output()
        .expect("vmr runs");
    assert!(
        stderr_of(&out).contains("poll --retry-expired"),
        "{}",
        stderr_of(&out)
    );
    std::thread::sleep(Duration::from_millis(1300));
    let generates = sb.ledger().generate_billed;
    vmr(&dir, &sb)
        .args(["poll", "--retry-expired", "--poll-timeout", "200ms"])
        .assert()
        .code(0);
    assert_truth(&dir, &cfg, &vins);
    assert_eq!(
        sb.ledger().generate_billed,
        generates,
        "nothing bought again"
    );
    for (vin, l) in &sb.ledger().per_vin {
        assert!(l.generate <= 1, "{vin} bought twice");
    }
}

/// A loopback server that answers every request with `response` (raw HTTP), and counts them.
fn fixed_server(response: Vec<u8>) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let response = response.clone();
            std::thread::spawn(move || {
                // Read the request head and its form body before answering.
                let mut buf = vec![0u8; 8192];
                let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
                let _ = s.read(&mut buf);
                let _ = s.write_all(&response);
            });
        }
    });
    (format!("http://{addr}"), hits)
}

/// `vmr submit` of `dir`'s `in.csv` against `url` (a server of the test's own), with `extra`.
fn submit_to(dir: &std::path::Path, url: &str, extra: &[&str]) -> std::process::Output {
    // The sandbox only gives the command its settings; the calls go to `url`.
    let sb = sandbox(SandboxConfig::default());
    vmr(dir, &sb)
        .args(["submit", "--input", "in.csv", "--base-url", url])
        .args(extra)
        .output()
        .expect("vmr runs")
}

#[test]
fn a_redirect_is_never_followed_and_stops_the_run_naming_its_target() {
    // 307 and 308 would re-send the signed POST as it is; 301-303 would turn it into a GET.
    for status in [
        "307 Temporary Redirect",
        "308 Permanent Redirect",
        "302 Found",
    ] {
        let (_t, dir) = tempdir();
        let (url, hits) = fixed_server(
            format!("HTTP/1.1 {status}\r\nLocation: http://elsewhere.invalid/vehicle/maintenance-report/generate\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .into_bytes(),
        );
        write_csv(&dir.join("in.csv"), &vins(5, 67));
        let out = submit_to(&dir, &url, &["--concurrency", "1"]);
        let text = stderr_of(&out);
        assert_eq!(out.status.code(), Some(3), "{status}: {text}");
        assert!(text.contains("elsewhere.invalid"), "{status}: {text}");
        assert_eq!(
            hits.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "{status}"
        );
        let d = detail(&dir);
        assert!(d.values().all(|(s, _, _)| s == "queued"), "{status}: {d:?}");
    }
}

#[test]
fn a_body_over_max_body_is_unknown_and_its_first_bytes_are_kept() {
    let (_t, dir) = tempdir();
    let mut body =
        br#"{"code":200,"msg":"ok","data":{"requestId":"r1","info":{"remark":""#.to_vec();
    body.extend(std::iter::repeat_n(b'x', 2 * 1024 * 1024));
    body.extend_from_slice(br#""}}}"#);
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    let (url, _hits) = fixed_server(response);
    write_csv(&dir.join("in.csv"), &vins(1, 68));
    let out = submit_to(&dir, &url, &["--max-body", "1"]);
    assert_eq!(out.status.code(), Some(75), "{}", stderr_of(&out));
    let d = detail(&dir);
    assert!(d.values().all(|(s, _, _)| s == "uncertain"), "{d:?}");
    let kept = count(
        &dir,
        "SELECT length(body) FROM calls WHERE delivery = 'unknown' AND body IS NOT NULL",
    );
    assert_eq!(kept, 1024 * 1024);
}
