//! Signing and REPORT parsing (into the borrowed view export reads), the per-call and per-report
//! costs of the API layer.
//! `cargo bench --bench api`

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use vmr::api::view::ReportView;
use vmr::api::{Endpoint, classify, sign};

mod common;

fn bench(c: &mut Criterion) {
    c.bench_function("sign", |b| {
        b.iter(|| {
            sign(
                black_box("xyzxy2121zxyz"),
                black_box("efcefcef1121cefcefc1212121"),
                black_box(1555378976238),
            )
        })
    });
    // A sandbox report: the vendor's untidiness (strings for numbers, "", null, absent fields).
    let untidy = vmr::sandbox::synth::report("LSVAB1234C0000001", 1).to_string();
    // The same report with every scalar a clean JSON value.
    let clean = common::tidy(serde_json::from_str(&untidy).expect("parses")).to_string();
    // What export parses each stored REPORT into.
    for (name, body) in [("report_untidy", &untidy), ("report_clean", &clean)] {
        c.bench_function(name, |b| {
            b.iter(|| serde_json::from_str::<ReportView<'_>>(black_box(body)).expect("parses"))
        });
    }
    let envelope = format!(r#"{{"code":200,"msg":"成功","taskNo":"1","data":{untidy}}}"#);
    c.bench_function("classify_get_200", |b| {
        b.iter(|| classify(Endpoint::Get, 200, black_box(envelope.as_bytes())))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
