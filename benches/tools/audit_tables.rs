//! Writes synthetic export tables (requests, reports, records, overview) with the export
//! schema, for benchmarking `vmr audit` without buying a million records from the sandbox.
//!
//!     cargo run --release --features bench-tools --bin audit_tables -- OUT_DIR [VEHICLES] [RECORDS_PER_VEHICLE] [VERSIONS]
//!
//! Defaults: 41,000 vehicles (every 50th failed, without a report) × 25 records = 1,004,500
//! records, over two report versions per vehicle (VERSIONS 1 or 2): the first report holds 45 %
//! of a vehicle's visits, the second the same visits and the rest, so the records of both
//! versions add up to RECORDS_PER_VEHICLE. About 5% of vehicles get an odometer rollback inside
//! a report, 5% a history read lower in the second report (a rollback between reports), records
//! come slightly out of date order, some mileages are missing.

use arrow_array::builder::{
    ArrayBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder, Int8Builder,
    Int32Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use parquet::arrow::ArrowWriter;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;
use vmr::export::{schema, write::parquet_properties};

const BRANDS: [&str; 6] = ["大众", "丰田", "本田", "宝马", "奔驰", "别克"];
const CHUNK: usize = 2_000;

fn writer(dir: &Path, table: &str) -> anyhow::Result<ArrowWriter<File>> {
    let schema = schema::of(table).expect("an export table");
    let file = File::create(dir.join(format!("{table}.parquet")))?;
    Ok(ArrowWriter::try_new(
        file,
        schema,
        Some((*parquet_properties()).clone()),
    )?)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = args.next().ok_or_else(|| {
        anyhow::anyhow!("usage: audit_tables OUT_DIR [VEHICLES] [RECORDS_PER_VEHICLE]")
    })?;
    let vehicles: usize = args
        .next()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(41_000);
    let per: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(25);
    let versions: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(2);
    anyhow::ensure!((1..=2).contains(&versions), "VERSIONS is 1 or 2");
    // Visits in each version's report: the first holds a prefix of the second's.
    let shown: Vec<usize> = if versions == 2 {
        vec![per * 9 / 20, per - per * 9 / 20]
    } else {
        vec![per]
    };
    let dir = Path::new(&out);
    std::fs::create_dir_all(dir)?;
    let mut rng = StdRng::seed_from_u64(42);
    let mut w_req = writer(dir, "requests")?;
    let mut w_rep = writer(dir, "reports")?;
    let mut w_rec = writer(dir, "records")?;
    let mut w_ov = writer(dir, "overview")?;
    let mut records = 0usize;
    for start in (0..vehicles).step_by(CHUNK) {
        let end = (start + CHUNK).min(vehicles);
        let mut q_vin = StringBuilder::new();
        let mut q_status = StringBuilder::new();
        let mut r_vin = StringBuilder::new();
        let mut r_version = Int32Builder::new();
        let mut r_latest = BooleanBuilder::new();
        let mut r_brand = StringBuilder::new();
        let mut r_yearly = Float64Builder::new();
        let mut r_total = Int64Builder::new();
        let mut r_acc = Int8Builder::new();
        let mut r_grade = StringBuilder::new();
        let mut c_vin = StringBuilder::new();
        let mut c_version = Int32Builder::new();
        let mut c_seq = Int32Builder::new();
        let mut c_date = Date32Builder::new();
        let mut c_at = TimestampMillisecondBuilder::new().with_timezone("UTC");
        let mut c_type = Int8Builder::new();
        let mut c_km = Int64Builder::new();
        let mut c_amount = Decimal128Builder::new()
            .with_precision_and_scale(schema::AMOUNT_PRECISION, schema::AMOUNT_SCALE)?;
        let mut o_vin = StringBuilder::new();
        let mut o_version = Int32Builder::new();
        let mut o_part = StringBuilder::new();
        let mut o_exc = BooleanBuilder::new();
        for i in start..end {
            let vin = format!("LSVBENCH{i:09}");
            q_vin.append_value(&vin);
            q_status.append_value(if i % 50 == 49 { "failed" } else { "done" });
            if i % 50 == 49 {
                continue;
            }
            let rollback = rng.random_bool(0.05);
            let between = rng.random_bool(0.05);
            let n = *shown.last().unwrap_or(&per);
            let mut day: i32 = 15_000 + rng.random_range(0..2_000);
            let mut km: i64 = rng.random_range(5..3_000);
            let mut visits: Vec<(i32, i64)> = Vec::with_capacity(n);
            for v in 0..n {
                if v > 0 {
                    day += rng.random_range(20..200);
                    km += rng.random_range(300..12_000);
                }
                visits.push((day, km));
            }
            if rollback && n >= 2 {
                let at = rng.random_range(1..n);
                visits[at].1 = visits[at - 1].1 - rng.random_range(2_000..30_000);
            }
            if n >= 2 && rng.random_bool(0.15) {
                visits.swap(0, 1);
            }
            let damaged = rng.random_bool(0.08);
            let engine = rng.random_bool(0.06);
            let yearly = f64::from(rng.random_range(20u32..400)) * 100.0;
            let appearance = rng.random_bool(0.3);
            for (k, count) in shown.iter().enumerate() {
                let version = k as i32 + 1;
                let latest = k + 1 == shown.len();
                // The second report of a rolled-back vehicle reads 40 % lower throughout.
                let scale = |m: i64| {
                    if latest && k > 0 && between {
                        m * 6 / 10
                    } else {
                        m
                    }
                };
                let these = &visits[..*count];
                for (seq, (d, m)) in these.iter().enumerate() {
                    c_vin.append_value(&vin);
                    c_version.append_value(version);
                    c_seq.append_value(seq as i32);
                    c_date.append_value(*d);
                    c_at.append_value(i64::from(*d) * 86_400_000 + 36_000_000);
                    c_type.append_value(rng.random_range(1..=4));
                    if rng.random_bool(0.02) {
                        c_km.append_null();
                    } else {
                        c_km.append_value(scale(*m));
                    }
                    c_amount.append_value(rng.random_range(0..800_000));
                }
                records += these.len();
                r_vin.append_value(&vin);
                r_version.append_value(version);
                r_latest.append_value(latest);
                r_brand.append_value(BRANDS[i % BRANDS.len()]);
                r_yearly.append_value(yearly);
                r_total.append_value(these.iter().map(|v| scale(v.1)).max().unwrap_or(0));
                r_acc.append_value(if damaged { 1 } else { -1 });
                r_grade.append_value(if damaged {
                    "D"
                } else if engine {
                    "C"
                } else {
                    "A"
                });
                for (part, exc) in [
                    ("appearance", appearance),
                    ("engine", engine),
                    ("airbag", false),
                    ("frame", damaged),
                ] {
                    o_vin.append_value(&vin);
                    o_version.append_value(version);
                    o_part.append_value(part);
                    o_exc.append_value(exc);
                }
            }
        }
        let n_req = q_vin.len();
        let n_rep = r_vin.len();
        let n_rec = c_vin.len();
        let n_ov = o_vin.len();
        w_req.write(&batch(
            "requests",
            n_req,
            vec![
                ("vin", Arc::new(q_vin.finish())),
                ("status", Arc::new(q_status.finish())),
            ],
        )?)?;
        w_rep.write(&batch(
            "reports",
            n_rep,
            vec![
                ("vin", Arc::new(r_vin.finish())),
                ("version", Arc::new(r_version.finish())),
                ("is_latest", Arc::new(r_latest.finish())),
                ("brand_name", Arc::new(r_brand.finish())),
                ("avg_yearly_mileage_km", Arc::new(r_yearly.finish())),
                ("total_mileage_km", Arc::new(r_total.finish())),
                ("accident_status", Arc::new(r_acc.finish())),
                ("accident_grade", Arc::new(r_grade.finish())),
            ],
        )?)?;
        w_rec.write(&batch(
            "records",
            n_rec,
            vec![
                ("vin", Arc::new(c_vin.finish())),
                ("version", Arc::new(c_version.finish())),
                ("seq", Arc::new(c_seq.finish())),
                ("visit_date", Arc::new(c_date.finish())),
                ("maintained_at", Arc::new(c_at.finish())),
                ("type_code", Arc::new(c_type.finish())),
                ("mileage_km", Arc::new(c_km.finish())),
                ("total_amount", Arc::new(c_amount.finish())),
            ],
        )?)?;
        w_ov.write(&batch(
            "overview",
            n_ov,
            vec![
                ("vin", Arc::new(o_vin.finish())),
                ("version", Arc::new(o_version.finish())),
                ("part", Arc::new(o_part.finish())),
                ("has_exception", Arc::new(o_exc.finish())),
            ],
        )?)?;
    }
    for w in [w_req, w_rep, w_rec, w_ov] {
        w.close()?;
    }
    println!(
        "{vehicles} vehicles, {records} records over {versions} report version(s) in {}",
        dir.display()
    );
    Ok(())
}

/// A batch of `table` with the given columns filled and every other column null.
fn batch(table: &str, rows: usize, given: Vec<(&str, ArrayRef)>) -> anyhow::Result<RecordBatch> {
    let schema = schema::of(table).expect("an export table");
    let cols = schema
        .fields()
        .iter()
        .map(|f| {
            given
                .iter()
                .find(|(n, _)| n == f.name())
                .map(|(_, a)| a.clone())
                .unwrap_or_else(|| arrow_array::new_null_array(f.data_type(), rows))
        })
        .collect();
    Ok(RecordBatch::try_new(schema, cols)?)
}
