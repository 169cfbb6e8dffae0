//! `vmr audit --emit-sql`: the SQL it prints, run in DuckDB over the exported tables, must give
//! `vmr audit`'s own `vehicle_flags` and `fleet_summary`, every column, type and row.
//!
//! The fleet is 2,000 sandbox VINs bought once, half of them bought again and a fifth a third
//! time, from a sandbox whose reports move on 90 days per purchase: so it holds one, two and
//! three report versions per VIN and every change column (new records, new accidents, rollbacks
//! between reports) has rows. The same SQL is then run over the tables as a hive export lays
//! them out (no `is_latest`, partitioned, in no particular order), and over a copy of the tables
//! with the awkward values the sandbox does not sell (missing dates and mileages, same-day
//! visits, untrimmed and lower-case grades, missing brands), audited with another tolerance.
//!
//! DuckDB comes from python3's `duckdb` package: without it the tests skip with one line, except
//! in CI (`CI=true`), which installs it and requires it. The Spark text is run the same way by
//! an ignored test (`--ignored`), which needs python3's `pyspark` and Java 17.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use crate::common::{python, sandbox, vins, vmr, write_csv};
use vmr::sandbox::SandboxConfig;

const AS_OF: &str = "2026-06-30";

/// Whether DuckDB can be used here (and must be, in CI).
fn have_duckdb() -> bool {
    python(&["duckdb"], "", &[]).is_some()
}

/// The DuckDB side of the tests, one script: `hive SRC DST` and `edge SRC DST` write a copy of
/// the flat tables in `SRC`; `compare LAYOUT TABLES SQL EXPECTED` runs the SQL over the tables
/// and prints JSON: every difference from `vmr audit`'s Parquet in `EXPECTED`, and counts.
const DUCKDB: &str = r#"
import duckdb, json, math, os, sys

REPORT_TABLES = ["reports", "records", "overview", "exceptions"]
TABLES = ["requests"] + REPORT_TABLES

def hive(src, dst):
    # As `vmr export --layout hive` writes them: partitioned by fetched_month, no is_latest,
    # requests whole in its folder; rows shuffled so file order tells nothing. The sandbox sold
    # every version within seconds: each version goes a month further on, as in a lake filled
    # over months, so a VIN's versions sit in different partitions.
    con = duckdb.connect()
    con.execute(f"""CREATE TABLE months AS
        SELECT vin, version,
               coalesce(strftime(CAST(fetched_at AS DATE) + 31 * version, '%Y-%m'),
                        '__HIVE_DEFAULT_PARTITION__') AS fetched_month
        FROM read_parquet('{src}/reports.parquet')""")
    for t in REPORT_TABLES:
        cols = "t.* EXCLUDE (is_latest)" if t == "reports" else "t.*"
        con.execute(f"""COPY (
            SELECT {cols}, m.fetched_month
            FROM read_parquet('{src}/{t}.parquet') t
            JOIN months m ON m.vin = t.vin AND m.version = t.version
            ORDER BY md5(concat(t.vin, '/', CAST(t.version AS VARCHAR), '/', CAST(random() AS VARCHAR)))
        ) TO '{dst}/{t}' (FORMAT parquet, PARTITION_BY (fetched_month))""")
    os.makedirs(f"{dst}/requests", exist_ok=True)
    con.execute(f"COPY (SELECT * FROM read_parquet('{src}/requests.parquet')) TO '{dst}/requests/requests.parquet' (FORMAT parquet)")

def edge(src, dst):
    # The sandbox's tables with the values it never sells, types kept, is_latest kept (vmr
    # audit reads this copy as a flat export).
    con = duckdb.connect()
    con.execute(f"""COPY (
        SELECT * REPLACE (
            CASE WHEN hash(vin) % 11 = 0 THEN NULL ELSE brand_name END AS brand_name,
            CAST(CASE WHEN hash(vin, version) % 7 = 1 THEN NULL ELSE accident_status END AS TINYINT)
              AS accident_status,
            CASE hash(vin, version) % 13
              WHEN 1 THEN ' d ' WHEN 2 THEN concat(chr(12288), 'C', chr(9)) WHEN 3 THEN 'b'
              WHEN 4 THEN 'a' WHEN 5 THEN NULL WHEN 6 THEN concat('D', chr(133)) WHEN 7 THEN 'c'
              WHEN 8 THEN 'D' WHEN 9 THEN 'C' ELSE accident_grade END AS accident_grade,
            CASE WHEN hash(vin) % 17 = 2 THEN NULL ELSE avg_yearly_mileage_km END
              AS avg_yearly_mileage_km,
            CASE WHEN hash(vin) % 19 = 3 THEN NULL ELSE last_visit_date END AS last_visit_date
        ) FROM read_parquet('{src}/reports.parquet')
    ) TO '{dst}/reports.parquet' (FORMAT parquet)""")
    con.execute(f"""COPY (
        SELECT * EXCLUDE (h, first_date) REPLACE (
            CASE WHEN h % 23 = 0 THEN NULL WHEN h % 9 = 0 THEN first_date ELSE visit_date END
              AS visit_date,
            CASE WHEN h % 29 = 0 THEN NULL ELSE mileage_km END AS mileage_km,
            CASE WHEN h % 5 = 0 THEN NULL ELSE maintained_at END AS maintained_at,
            CAST(CASE WHEN h % 31 = 0 THEN NULL ELSE type_code END AS TINYINT) AS type_code,
            CASE WHEN h % 37 = 0 THEN NULL ELSE total_amount END AS total_amount
        ) FROM (
            SELECT *, hash(vin, version, seq) AS h,
                   min(visit_date) OVER (PARTITION BY vin, version) AS first_date
            FROM read_parquet('{src}/records.parquet')
        )
        WHERE hash(vin, version) % 41 <> 0
    ) TO '{dst}/records.parquet' (FORMAT parquet)""")
    con.execute(f"""COPY (
        SELECT * REPLACE (
            CASE WHEN hash(vin, version, part) % 7 = 0 THEN NULL
                 WHEN version >= 2 AND part = 'airbag' AND hash(vin) % 10 = 0 THEN TRUE
                 ELSE has_exception END AS has_exception
        ) FROM read_parquet('{src}/overview.parquet')
        WHERE hash(vin, version) % 43 <> 0
    ) TO '{dst}/overview.parquet' (FORMAT parquet)""")
    for t in ["requests", "exceptions"]:
        con.execute(f"COPY (SELECT * FROM read_parquet('{src}/{t}.parquet')) TO '{dst}/{t}.parquet' (FORMAT parquet)")

def same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))
    return type(a) is type(b) and a == b

def compare(layout, tables, sql_path, expected):
    con = duckdb.connect()
    for t in TABLES:
        if layout == "hive" and t == "requests":
            src = f"read_parquet('{tables}/requests/requests.parquet')"
        elif layout == "hive":
            src = f"read_parquet('{tables}/{t}/*/*.parquet', hive_partitioning = true)"
        else:
            src = f"read_parquet('{tables}/{t}.parquet')"
        con.execute(f"CREATE VIEW {t} AS SELECT * FROM {src}")
    con.execute(open(sql_path, encoding="utf-8").read())
    problems, counts = [], {}
    for view in ["vehicle_flags", "fleet_summary"]:
        want_rel = f"read_parquet('{expected}/{view}.parquet')"
        got_cols = [tuple(r[:2]) for r in con.execute(f"DESCRIBE SELECT * FROM {view}").fetchall()]
        want_cols = [tuple(r[:2]) for r in con.execute(f"DESCRIBE SELECT * FROM {want_rel}").fetchall()]
        if got_cols != want_cols:
            problems.append(f"{view} columns: sql {got_cols}, vmr {want_cols}")
            continue
        got = con.execute(f"SELECT * FROM {view}").fetchall()
        want = con.execute(f"SELECT * FROM {want_rel}").fetchall()
        if len(got) != len(want):
            problems.append(f"{view}: sql {len(got)} rows, vmr {len(want)}")
        names = [c[0] for c in want_cols]
        for i, (g, w) in enumerate(zip(got, want)):
            for name, a, b in zip(names, g, w):
                if not same(a, b):
                    problems.append(f"{view} row {i} ({w[0]}, {w[1]}) {name}: sql {a!r}, vmr {b!r}")
        counts[view] = len(want)
    flags = f"read_parquet('{expected}/vehicle_flags.parquet')"
    for name, cond in [
        ("versions_1", "report_versions = 1"),
        ("versions_2", "report_versions = 2"),
        ("versions_3", "report_versions = 3"),
        ("rollback_between_reports", "rollback_between_reports"),
        ("became_accident", "became_accident"),
        ("new_structural", "new_structural"),
        ("new_records", "new_records > 0"),
        ("odometer_rollback", "odometer_rollback"),
        ("no_brand", "brand_name IS NULL"),
        ("no_visit", "days_since_last_visit IS NULL"),
        ("no_gap", "longest_gap_days IS NULL"),
        ("grade_d", "risk_reasons LIKE '%grade_d%'"),
        ("grade_c", "risk_reasons LIKE '%grade_c%'"),
        ("unknown_with_exceptions", "risk_reasons LIKE '%accident_unknown_with_exceptions%'"),
        ("low", "risk_level = 'low'"),
        ("medium", "risk_level = 'medium'"),
        ("high", "risk_level = 'high'"),
    ]:
        counts[name] = con.execute(f"SELECT count(*) FROM {flags} WHERE {cond}").fetchone()[0]
    print(json.dumps({"problems": problems[:40], "problem_count": len(problems), "counts": counts}))

cmd = sys.argv[1]
if cmd == "hive":
    hive(sys.argv[2], sys.argv[3])
elif cmd == "edge":
    edge(sys.argv[2], sys.argv[3])
else:
    compare(*sys.argv[2:6])
"#;

/// The Spark side: `SPARK (TABLES SQL EXPECTED)…` registers the flat tables in `TABLES` as
/// temporary views, runs the SQL one statement at a time (as `spark.sql` must), and prints JSON:
/// every difference from `vmr audit`'s Parquet in `EXPECTED`, types and row order included.
const SPARK: &str = r#"
import json, sys
from pyspark.sql import SparkSession

spark = (SparkSession.builder.master("local[2]").appName("vmr-audit-sql")
         .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "4")
         .getOrCreate())
spark.sparkContext.setLogLevel("ERROR")

def same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))
    return type(a) is type(b) and a == b

problems, counts = [], {}
args = sys.argv[1:]
for tables, sql_path, expected in zip(args[0::3], args[1::3], args[2::3]):
    for t in ["requests", "reports", "records", "overview"]:
        spark.read.parquet(f"{tables}/{t}.parquet").createOrReplaceTempView(t)
    for statement in open(sql_path, encoding="utf-8").read().split(";\n"):
        if statement.strip():
            spark.sql(statement)
    for view in ["vehicle_flags", "fleet_summary"]:
        got = spark.table(view)
        # One Parquet file, read back in its row order.
        want = spark.read.parquet(f"{expected}/{view}.parquet")
        got_cols = [(f.name, f.dataType.simpleString()) for f in got.schema.fields]
        want_cols = [(f.name, f.dataType.simpleString()) for f in want.schema.fields]
        if got_cols != want_cols:
            problems.append(f"{expected} {view} columns: spark {got_cols}, vmr {want_cols}")
            continue
        g, w = got.collect(), want.collect()
        if len(g) != len(w):
            problems.append(f"{expected} {view}: spark {len(g)} rows, vmr {len(w)}")
        for i, (a, b) in enumerate(zip(g, w)):
            for name, x, y in zip(want.columns, a, b):
                if not same(x, y):
                    problems.append(f"{expected} {view} row {i} ({b[0]}, {b[1]}) {name}: spark {x!r}, vmr {y!r}")
        counts[f"{expected}/{view}"] = len(w)
print(json.dumps({"problems": problems[:40], "problem_count": len(problems), "counts": counts}))
"#;

/// A sandbox fleet bought, refreshed, exported and audited once for every test in this file.
struct Fleet {
    dir: PathBuf,
}

impl Fleet {
    fn out(&self) -> PathBuf {
        self.dir.join("out")
    }
}

/// The `vmr` binary alone: no sandbox, no credentials, in `dir`.
fn vmr_offline(dir: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin("vmr").expect("vmr binary");
    c.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .timeout(Duration::from_secs(300));
    c
}

fn fleet() -> &'static Fleet {
    static FLEET: OnceLock<Fleet> = OnceLock::new();
    FLEET.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("audit-sql-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("tempdir")
            .keep();
        let cfg = SandboxConfig {
            seed: 21,
            report_age: Duration::from_secs(90 * 86_400),
            ..SandboxConfig::default()
        };
        let sb = sandbox(cfg);
        let all = vins(2_000, 71);
        // Bought once, then the first half again, then the first fifth a third time.
        for (file, n, refresh) in [
            ("all.csv", all.len(), false),
            ("half.csv", 1_000, true),
            ("fifth.csv", 400, true),
        ] {
            write_csv(&dir.join(file), &all[..n]);
            let mut c = vmr(&dir, &sb);
            c.args(["--format", "parquet", "run", "--input", file]);
            if refresh {
                c.args(["--refresh-older-than", "200ms"]);
            }
            c.timeout(Duration::from_secs(600)).assert().code(0);
            std::thread::sleep(Duration::from_millis(300));
        }
        sb.shutdown();
        vmr_offline(&dir)
            .args([
                "--out", "out", "--format", "parquet", "audit", "--as-of", AS_OF,
            ])
            .assert()
            .success();
        Fleet { dir }
    })
}

/// `vmr audit --emit-sql DIALECT <args>` run in `dir`: the SQL it printed.
fn emit_sql(dir: &Path, dialect: &str, args: &[&str]) -> String {
    let out = vmr_offline(dir)
        .args(["audit", "--emit-sql", dialect])
        .args(args)
        .assert()
        .code(0);
    String::from_utf8(out.get_output().stdout.clone()).expect("UTF-8 SQL")
}

/// Runs the DuckDB `compare` over `tables` (laid out as `layout`) against `expected`'s audit;
/// returns the counts of the fleet's vehicle_flags, or `None` when DuckDB is not installed.
fn compare(layout: &str, tables: &Path, sql: &str, expected: &Path) -> Option<serde_json::Value> {
    let sql_path = tables.with_extension(format!("{layout}.sql"));
    std::fs::write(&sql_path, sql).expect("write the SQL");
    let p = |p: &Path| p.to_str().expect("UTF-8 path").to_owned();
    let out = python(
        &["duckdb"],
        DUCKDB,
        &["compare", layout, &p(tables), &p(&sql_path), &p(expected)],
    )?;
    assert!(
        out.status.success(),
        "DuckDB failed on the emitted SQL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    });
    assert_eq!(
        report["problem_count"],
        0,
        "the SQL disagrees with vmr audit:\n{}",
        serde_json::to_string_pretty(&report["problems"]).expect("JSON")
    );
    Some(report["counts"].clone())
}

fn count(counts: &serde_json::Value, name: &str) -> i64 {
    counts[name]
        .as_i64()
        .unwrap_or_else(|| panic!("no count {name}: {counts}"))
}

/// Writes a copy of the fleet's flat tables with `python DUCKDB <how>` into `dst`.
fn copy_tables(how: &str, src: &Path, dst: &Path) -> Option<()> {
    let _ = std::fs::remove_dir_all(dst);
    std::fs::create_dir_all(dst).expect("mkdir");
    let p = |p: &Path| p.to_str().expect("UTF-8 path").to_owned();
    let out = python(&["duckdb"], DUCKDB, &[how, &p(src), &p(dst)])?;
    assert!(
        out.status.success(),
        "{how} copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(())
}

#[test]
fn duckdb_runs_the_emitted_sql_to_vmr_audits_tables_over_a_refreshed_fleet() {
    if !have_duckdb() {
        return;
    }
    let f = fleet();
    let sql = emit_sql(&f.dir, "duckdb", &["--as-of", AS_OF]);
    let Some(counts) = compare("flat", &f.out(), &sql, &f.out()) else {
        return;
    };
    // The fleet holds what the comparison must cover.
    assert!(count(&counts, "vehicle_flags") > 1_500, "{counts}");
    assert!(count(&counts, "fleet_summary") >= 3, "{counts}");
    for name in [
        "versions_1",
        "versions_2",
        "versions_3",
        "rollback_between_reports",
        "became_accident",
        "new_records",
        "odometer_rollback",
        "low",
        "medium",
        "high",
    ] {
        assert!(count(&counts, name) > 0, "no {name} in the fleet: {counts}");
    }
}

#[test]
fn the_emitted_sql_reads_a_hive_layout_without_is_latest() {
    if !have_duckdb() {
        return;
    }
    let f = fleet();
    let hive = f.dir.join("hive");
    copy_tables("hive", &f.out(), &hive);
    assert!(
        hive.join("reports").read_dir().expect("reports/").count() >= 3,
        "a fetched_month partition per version"
    );
    let sql = emit_sql(&f.dir, "duckdb", &["--as-of", AS_OF]);
    compare("hive", &hive, &sql, &f.out());
}

#[test]
fn the_emitted_sql_reads_vmrs_own_hive_export() {
    if !have_duckdb() {
        return;
    }
    let f = fleet();
    vmr_offline(&f.dir)
        .args(["--state", "state", "--out", "lake", "--format", "parquet"])
        .args(["export", "--layout", "hive"])
        .assert()
        .code(0);
    let sql = emit_sql(&f.dir, "duckdb", &["--as-of", AS_OF]);
    compare("hive", &f.dir.join("lake"), &sql, &f.out());
}

#[test]
fn the_emitted_sql_agrees_on_missing_values_ties_and_untidy_grades() {
    if !have_duckdb() {
        return;
    }
    let f = fleet();
    let edge = f.dir.join("edge");
    copy_tables("edge", &f.out(), &edge);
    // Another tolerance and date, to show both are baked into the SQL.
    let opts = ["--as-of", "2025-12-31", "--rollback-tolerance-km", "300"];
    vmr_offline(&f.dir)
        .args(["--out", "edge", "--format", "parquet", "audit"])
        .args(opts)
        .assert()
        .success();
    let sql = emit_sql(&f.dir, "duckdb", &opts);
    let Some(counts) = compare("flat", &edge, &sql, &edge) else {
        return;
    };
    for name in [
        "no_brand",
        "no_visit",
        "no_gap",
        "grade_d",
        "grade_c",
        "unknown_with_exceptions",
        "new_structural",
        "became_accident",
    ] {
        assert!(
            count(&counts, name) > 0,
            "no {name} in the edge copy: {counts}"
        );
    }
}

#[test]
fn emit_sql_reads_no_export_and_prints_every_dialect() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut texts = Vec::new();
    for dialect in ["duckdb", "spark", "trino"] {
        let sql = emit_sql(
            dir.path(),
            dialect,
            &["--as-of", "2026-01-15", "--rollback-tolerance-km", "2500"],
        );
        assert!(
            sql.starts_with(&format!("-- vmr audit --emit-sql {dialect}")),
            "{sql}"
        );
        assert!(
            sql.contains("DATE '2026-01-15'") && sql.contains("> 2500"),
            "{sql}"
        );
        assert_eq!(sql.matches("VIEW vehicle_flags AS").count(), 1);
        assert_eq!(sql.matches("VIEW fleet_summary AS").count(), 1);
        texts.push(sql);
    }
    assert!(texts[1].contains("CREATE OR REPLACE TEMP VIEW"));
    assert!(!texts[0].contains("TEMP VIEW") && !texts[2].contains("TEMP VIEW"));
    // Nothing read, nothing written: no export folder, no state.
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
    assert!(left.is_empty(), "{left:?}");
    // Without --as-of, today.
    let today = chrono::Local::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string();
    let sql = emit_sql(dir.path(), "trino", &[]);
    assert!(sql.contains(&format!("DATE '{today}'")), "{today}");
    // A dialect it does not know is a usage error.
    vmr_offline(dir.path())
        .args(["audit", "--emit-sql", "oracle"])
        .assert()
        .code(2);
}

#[test]
#[ignore = "needs python3 with pyspark (pip install pyspark) and Java 17; about 3 minutes"]
fn spark_runs_the_emitted_spark_sql_to_vmr_audits_tables() {
    if !have_duckdb() {
        return;
    }
    let f = fleet();
    let edge = f.dir.join("edge-spark");
    copy_tables("edge", &f.out(), &edge);
    let opts = ["--as-of", "2025-12-31", "--rollback-tolerance-km", "300"];
    vmr_offline(&f.dir)
        .args(["--out", "edge-spark", "--format", "parquet", "audit"])
        .args(opts)
        .assert()
        .success();
    let p = |p: &Path| p.to_str().expect("UTF-8 path").to_owned();
    let mut args = Vec::new();
    for (tables, sql) in [
        (f.out(), emit_sql(&f.dir, "spark", &["--as-of", AS_OF])),
        (edge.clone(), emit_sql(&f.dir, "spark", &opts)),
    ] {
        let sql_path = tables.with_extension("spark.sql");
        std::fs::write(&sql_path, sql).expect("write the SQL");
        args.extend([p(&tables), p(&sql_path), p(&tables)]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let Some(out) = python(&["pyspark"], SPARK, &args) else {
        return;
    };
    assert!(
        out.status.success(),
        "Spark failed on the emitted SQL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = stdout.lines().last().unwrap_or_default();
    let report: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(
        report["problem_count"],
        0,
        "the Spark SQL disagrees with vmr audit:\n{}",
        serde_json::to_string_pretty(&report["problems"]).expect("JSON")
    );
    assert_eq!(
        report["counts"].as_object().map(|c| c.len()),
        Some(4),
        "{report}"
    );
}
