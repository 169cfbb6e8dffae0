//! Per-report flatten cost: one stored body → rows of the four report tables, for a tidy report
//! (numbers as numbers, no blanks) and for the sandbox's untidy one (numbers as strings, `""`,
//! `null`, absent fields, unknown parts). `benches/export_bench.sh` measures the whole command.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use std::hint::black_box;
use vmr::export::flatten::{self, SourceReport, Want};
use vmr::sandbox::synth;

mod common;
use common::tidy;

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
