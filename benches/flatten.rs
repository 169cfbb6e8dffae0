//! Per-report flatten cost: one stored body → rows of the four report tables, for a tidy report
//! (numbers as numbers, no blanks) and for the sandbox's untidy one (numbers as strings, `""`,
//! `null`, absent fields, unknown parts). `benches/export_bench.sh` measures the whole command.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Map, Value, json};
use std::hint::black_box;
use vmr::export::flatten::{self, SourceReport, Want};
use vmr::sandbox::synth;

/// The report with every numeric string made a number and every blank or null field dropped.
fn tidy(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !(v.is_null() || v.as_str().is_some_and(|s| s.is_empty())))
                .map(|(k, v)| (k, tidy(v)))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(tidy).collect()),
        Value::String(s) => match (s.parse::<i64>(), s.parse::<f64>()) {
            (Ok(i), _) => json!(i),
            (_, Ok(f)) if f.is_finite() => json!(f),
            _ => Value::String(s),
        },
        other => other,
    }
}

fn row(report: Value) -> SourceReport {
    let body = json!({"code": 200, "msg": "成功", "taskNo": "t-1", "data": report});
    SourceReport {
        vin: "LSVAB12345C000001".into(),
        request_id: Some("req-1".into()),
        task_no: Some("t-1".into()),
        endpoint: "get".into(),
        fetched_at: 1_714_550_400_000,
        body: serde_json::to_vec(&body).expect("serializes"),
    }
}

fn bench(c: &mut Criterion) {
    // A VIN whose synthetic report has a typical number of records.
    let untidy = synth::report("LSVAB12345C000001", 3);
    let cases = [
        ("untidy", row(untidy.clone())),
        ("clean", row(tidy(untidy))),
    ];
    let want = Want {
        tables: true,
        jsonl: false,
    };
    let mut g = c.benchmark_group("flatten_one_report");
    for (name, r) in &cases {
        g.throughput(Throughput::Bytes(r.body.len() as u64));
        let rows = std::slice::from_ref(r);
        g.bench_function(*name, |b| {
            b.iter(|| flatten::flatten(black_box(rows), want).expect("flattens"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
