//! Entry points for the fuzz targets in `fuzz/` and for the replay of their corpus in the test
//! suite (`tests/it/fuzz_corpus.rs`): each takes any bytes, runs one parser of what strangers
//! send vmr exactly as vmr runs it, and asserts what must hold on every input. A panic here is
//! a finding; none of these parsers may panic, hang or allocate without bound on any input.
//!
//! - [`response`]: a vendor answer (status + body) through the money rules' classification;
//! - [`report`]: a stored body through export's flatten into the four report tables;
//! - [`input_csv`]: a user's CSV file through the input reader, every row judged;
//! - [`config_file`]: a `vmr.toml` through the config parser.

use std::path::{Path, PathBuf};

use crate::api::Endpoint;
use crate::api::outcome::{Delivery, Outcome, classify, excerpt, report_json};
use crate::export::flatten::{SourceReport, Want, flatten};
use crate::input::{InputOptions, InputReader, Verdict, vin_problem};

/// The HTTP statuses a response input picks from (its first byte): the vendor's 200, the
/// other 2xx, and the gateway and proxy answers vmr meets.
const STATUSES: [u16; 8] = [200, 200, 200, 204, 404, 429, 502, 503];

/// A vendor answer: byte 0 picks the endpoint (low bit) and the HTTP status, the rest is the
/// body.
pub fn response(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let endpoint = if pick & 1 == 0 {
        Endpoint::Generate
    } else {
        Endpoint::Get
    };
    let status = STATUSES[usize::from(pick >> 1) % STATUSES.len()];
    let (outcome, answer) = classify(endpoint, status, body);
    let two_xx = (200..300).contains(&status);
    // Only code 200 in a 2xx answer is billed, and a billed answer is never thrown away: it is
    // a report, a requestId to poll, or kept as billed-unusable.
    if answer.billed() {
        assert!(two_xx, "a {status} answer counted as billed");
        assert!(
            matches!(
                outcome,
                Outcome::Report { .. } | Outcome::Accepted { .. } | Outcome::BilledUnusable { .. }
            ),
            "billed answer classed {outcome:?}"
        );
    }
    if matches!(
        outcome,
        Outcome::Report { .. } | Outcome::BilledUnusable { .. }
    ) {
        assert!(answer.billed(), "{outcome:?} without code 200");
    }
    // A non-2xx answer never bills, whatever its body says.
    if !two_xx {
        let not_billed = matches!(
            outcome,
            Outcome::Transient {
                delivery: Delivery::NotBilled,
                ..
            }
        );
        let wrong_address = matches!(outcome, Outcome::Stop { code: 404, .. });
        assert!(
            not_billed || wrong_address,
            "HTTP {status} classed {outcome:?}"
        );
    }
    // What the engine stores as a report, export finds the REPORT in.
    if matches!(outcome, Outcome::Report { .. }) {
        let repaired = crate::api::lenient::repair(body);
        let stored = repaired.as_ref().map_or(body, |r| r.text.as_bytes());
        assert!(
            report_json(endpoint, stored).is_some(),
            "classified as a report, but export finds no REPORT"
        );
    }
    // Messages that reach logs and the call log are one bounded line.
    let line = excerpt(body);
    assert!(!line.contains(['\n', '\r']), "excerpt spans lines");
    assert!(line.chars().count() <= 161, "excerpt too long");
}

/// A stored body: byte 0 picks where the REPORT sits (generate's `data.info` or get's
/// `data`), the rest is the body as the checkpoint holds it.
pub fn report(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let endpoint = if pick & 1 == 0 { "generate" } else { "get" };
    report_body(endpoint, body);
}

/// Flattens one stored body (`endpoint` is `generate` or `get`) into the four tables and the
/// JSON lines, and checks the result: every body is either one `reports` row or one bad body,
/// and every row of the other tables belongs to the VIN.
pub fn report_body(endpoint: &str, body: &[u8]) {
    const VIN: &str = "LSVAB12345C000001";
    let row = SourceReport {
        vin: VIN.to_owned(),
        request_id: Some("req-1".to_owned()),
        task_no: Some("t-1".to_owned()),
        endpoint: endpoint.to_owned(),
        fetched_at: 1_714_550_400_000,
        body: body.to_vec(),
    };
    let want = Want {
        tables: true,
        jsonl: true,
    };
    let flat = match flatten(std::slice::from_ref(&row), want) {
        Ok(flat) => flat,
        Err(e) => panic!("flatten failed on a body instead of listing it as bad: {e}"),
    };
    let reports = flat.batches.first().map_or(0, |b| b.num_rows());
    assert_eq!(
        reports + flat.bad.len(),
        1,
        "a body is either a report row or a bad body"
    );
    assert!(flat.jsonl_lines <= 1);
    if flat.jsonl_lines == 1 {
        let line = flat
            .jsonl
            .strip_suffix(b"\n")
            .expect("a JSON line ends with \\n");
        assert!(!line.contains(&b'\n'), "one report, one line");
        // Valid JSON, however deep: a REPORT may nest an unknown field deeper than a
        // `Value`'s recursion limit, and the line keeps it as the vendor sent it.
        serde_json::from_slice::<serde::de::IgnoredAny>(line).expect("each JSON line is JSON");
    }
    for batch in &flat.batches {
        if batch.num_rows() == 0 {
            continue;
        }
        let vins = batch
            .column_by_name("vin")
            .expect("every table has vin")
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .expect("vin is a string column");
        assert!(vins.iter().all(|v| v == Some(VIN)), "a row of another VIN");
    }
}

/// A user's input file: byte 0 picks the encoding option (detected, `utf-8`, `gbk`,
/// `gb18030`), the rest is the file. Written to a scratch file and read as `vmr ingest` reads
/// it.
pub fn input_csv(data: &[u8]) {
    let Some((&pick, file)) = data.split_first() else {
        return;
    };
    let encoding = match pick % 4 {
        0 => None,
        1 => Some("utf-8".to_owned()),
        2 => Some("gbk".to_owned()),
        _ => Some("gb18030".to_owned()),
    };
    let path = scratch("csv");
    std::fs::write(&path, file).expect("scratch file writes");
    let opts = InputOptions {
        encoding,
        ..InputOptions::default()
    };
    read_all(&path, &opts);
}

/// Reads every row of `path`: lines rise (the header is line 1), an accepted row has a valid
/// VIN and a URL, and a rejected row carries a reason that names what is wrong.
fn read_all(path: &Path, opts: &InputOptions) {
    let Ok(mut reader) = InputReader::open(path, opts) else {
        return;
    };
    let mut last_line = 1;
    while let Some(row) = reader.next_row() {
        assert!(
            row.line > last_line || reader.read_error().is_some(),
            "line {} after line {last_line}",
            row.line
        );
        last_line = last_line.max(row.line);
        match &row.verdict {
            Verdict::Accepted { .. } => {
                assert!(vin_problem(&row.vin).is_none(), "accepted a bad VIN");
                assert!(!row.license_img_url.is_empty(), "accepted without a URL");
            }
            Verdict::Rejected { reason } => {
                assert!(
                    !reason.to_string().is_empty(),
                    "a rejection without a reason"
                );
            }
        }
    }
}

/// A `vmr.toml`: parsed as vmr parses it. No error may quote the value of a key that looks
/// like a secret (the file must not hold one, and saying so must not print it).
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Err(e) = crate::config::parse_config_text(Path::new("vmr.toml"), text) else {
        return;
    };
    let message = format!("{e:#}");
    for value in secret_values(text) {
        assert!(
            !message.contains(value),
            "the error shows the value of a secret key: {message}"
        );
    }
}

/// Values of `key = "value"` lines whose key names a secret, long enough to be one.
fn secret_values(text: &str) -> Vec<&str> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.to_ascii_lowercase().contains("secret"))
        .map(|(_, v)| v.trim().trim_matches(['"', '\'']))
        .filter(|v| v.len() >= 8 && v.bytes().all(|b| b.is_ascii_alphanumeric()))
        .collect()
}

/// A scratch file per process and kind, rewritten by every input.
fn scratch(ext: &str) -> PathBuf {
    std::env::temp_dir().join(format!("vmr-fuzz-{}.{ext}", std::process::id()))
}
