//! The emitted SQL as text: what each dialect must say and where the dialects must differ.
//! Whether the DuckDB text computes what `vmr audit` computes is the integration test
//! `audit_sql` (it needs DuckDB).

use super::*;

fn options(dialect: Dialect) -> SqlOptions {
    SqlOptions {
        dialect,
        as_of: NaiveDate::from_ymd_opt(2026, 6, 30).expect("date"),
        rollback_tolerance_km: 1_000,
    }
}

const ALL: [Dialect; 3] = [Dialect::Duckdb, Dialect::Spark, Dialect::Trino];

/// The SQL without its `--` comments, which may name things the code must not use.
fn code(sql: &str) -> String {
    sql.lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The output names of the last top-level `SELECT … FROM` of `view` (its columns, in order).
fn columns(sql: &str, view: &str) -> Vec<String> {
    let code = code(sql);
    let start = code
        .find(&format!("VIEW {view} AS"))
        .unwrap_or_else(|| panic!("{view} not created"));
    let body = &code[start..];
    let body = &body[..body.find(";\n").expect("statement ends")];
    // The final SELECT is the last one at depth 0.
    let (mut depth, mut last) = (0i32, None);
    let bytes = body.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'(' => depth += 1,
            b')' => depth -= 1,
            _ if depth == 0 && body[i..].starts_with("SELECT ") => last = Some(i),
            _ => {}
        }
    }
    let select = &body[last.expect("a final SELECT") + "SELECT ".len()..];
    let mut items = Vec::new();
    let (mut depth, mut item) = (0i32, String::new());
    for c in select.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if depth == 0 && c == ',' {
            items.push(std::mem::take(&mut item));
            continue;
        }
        item.push(c);
        if depth == 0 && item.trim_end().ends_with("\nFROM") {
            let kept = item.trim_end().trim_end_matches("FROM").to_owned();
            items.push(kept);
            break;
        }
    }
    items
        .iter()
        .map(|i| i.split_whitespace().last().expect("an item").to_owned())
        .collect()
}

#[test]
fn every_dialect_creates_both_views_with_the_audits_columns() {
    let flags: Vec<&str> = vec![
        "vin",
        "brand_name",
        "accident_status",
        "accident_grade",
        "structural_damage",
        "engine_exception",
        "odometer_rollback",
        "max_rollback_km",
        "total_mileage_km",
        "avg_yearly_mileage_km",
        "last_visit_date",
        "days_since_last_visit",
        "longest_gap_days",
        "record_count",
        "repair_count",
        "total_spent",
        "exception_parts",
    ]
    .into_iter()
    .chain(super::super::changes::COLUMNS)
    .chain(["risk_level", "risk_reasons"])
    .collect();
    for d in ALL {
        let sql = emit(&options(d));
        assert_eq!(columns(&sql, "vehicle_flags"), flags, "{d:?}");
        assert_eq!(
            columns(&sql, "fleet_summary"),
            super::super::summary::COLUMNS,
            "{d:?}"
        );
        assert!(code(&sql).contains("ORDER BY vin;"), "{d:?}");
        assert!(
            code(&sql).contains("ORDER BY part, vehicles DESC, brand_name NULLS LAST;"),
            "{d:?}"
        );
    }
}

#[test]
fn the_latest_version_is_taken_from_version_never_from_is_latest() {
    for d in ALL {
        let sql = code(&emit(&options(d)));
        assert!(!sql.contains("is_latest"), "{d:?} reads is_latest");
        assert!(
            sql.contains("row_number() OVER (PARTITION BY vin ORDER BY version DESC)"),
            "{d:?}"
        );
        // Only the tables the rules read: exceptions and calls are not needed.
        for table in ["requests", "reports", "records", "overview"] {
            assert!(sql.contains(&format!("FROM {table}")), "{d:?}: {table}");
        }
        assert!(!sql.contains("FROM exceptions") && !sql.contains("FROM calls"));
    }
}

#[test]
fn the_options_are_baked_in_as_literals() {
    for d in ALL {
        let o = SqlOptions {
            as_of: NaiveDate::from_ymd_opt(2025, 2, 3).expect("date"),
            rollback_tolerance_km: 4_321,
            ..options(d)
        };
        let sql = code(&emit(&o));
        assert!(sql.contains("DATE '2025-02-03'"), "{d:?}");
        assert!(sql.contains("max_drop > 4321"), "{d:?}");
        assert!(sql.contains("br.top_km - nr.top_km > 4321"), "{d:?}");
        assert!(sql.contains(&format!("> {STALE_DAYS}")), "{d:?}");
        assert!(
            !sql.contains("1000"),
            "{d:?}: the default tolerance left in"
        );
    }
}

#[test]
fn the_dialects_differ_where_the_engines_do() {
    let [duckdb, spark, trino] = ALL.map(|d| code(&emit(&options(d))));
    // Views: Spark's over temporary views must be temporary.
    for (sql, temp) in [(&duckdb, false), (&spark, true), (&trino, false)] {
        assert_eq!(
            sql.matches("CREATE OR REPLACE TEMP VIEW").count(),
            if temp { 2 } else { 0 }
        );
        assert_eq!(sql.matches("CREATE OR REPLACE ").count(), 2);
    }
    // Days between dates: date_diff(unit, start, end) in DuckDB and Trino, Spark's datediff
    // takes the end first.
    for sql in [&duckdb, &trino] {
        assert!(sql.contains("date_diff('day', f.last_visit_date, DATE '2026-06-30')"));
        assert!(!sql.contains("datediff("));
    }
    assert!(spark.contains("datediff(DATE '2026-06-30', f.last_visit_date)"));
    assert!(spark.contains("datediff(visit_date, lag(visit_date) OVER"));
    assert!(!spark.contains("date_diff("));
    // Text: Spark's VARCHAR needs a length.
    assert!(spark.contains("CAST(NULL AS STRING)") && !spark.contains("VARCHAR"));
    for sql in [&duckdb, &trino] {
        assert!(sql.contains("CAST(NULL AS VARCHAR)") && !sql.contains("STRING"));
    }
    // Trimming: Spark's chr is ASCII only.
    assert!(spark.contains("TRIM(BOTH decode(unhex('"));
    assert!(!spark.contains("chr("));
    assert!(duckdb.contains("TRIM(BOTH concat(chr(9), chr(10)"));
    // Every function the views use means the same in DuckDB and Trino, so past the header the
    // two texts are one.
    assert_eq!(duckdb, trino);
}

#[test]
fn the_trimmed_characters_are_those_rust_trims() {
    // The Spark form is the UTF-8 bytes in hex; decoded, they are every character str::trim
    // removes, so ' d ', "\u{3000}D\t" and "d\u{85}" all grade D in SQL as in vmr audit.
    let spark = Dialect::Spark.whitespace();
    let hex = spark
        .trim_start_matches("decode(unhex('")
        .trim_end_matches("'), 'UTF-8')");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    let chars = String::from_utf8(bytes).expect("UTF-8");
    for probe in [" d ", "\u{3000}D\t", "d\u{85}", "\u{a0}C\u{2029}"] {
        assert_eq!(probe.trim(), probe.trim_matches(|c| chars.contains(c)));
    }
    assert_eq!(chars.chars().count(), 25, "{chars:?}");
    assert!(chars.chars().all(char::is_whitespace));
    let duckdb = Dialect::Duckdb.whitespace();
    assert_eq!(duckdb.matches("chr(").count(), 25);
    assert!(duckdb.contains("chr(12288)") && duckdb.contains("chr(133)"));
}

#[test]
fn the_script_splits_into_its_two_statements_at_line_ends() {
    // Spark's `spark.sql` takes one statement at a time, and statement splitters (spark-sql's
    // among them) have tripped on quotes and semicolons in comments: comments hold neither, and
    // every statement ends with `;` at the end of a line, the only place one is.
    for d in ALL {
        let sql = emit(&options(d));
        for line in sql.lines() {
            if let Some((_, comment)) = line.split_once("--") {
                assert!(!comment.contains(['\'', ';']), "{d:?}: {line}");
            }
        }
        let statements: Vec<&str> = sql.split(";\n").filter(|s| !s.trim().is_empty()).collect();
        assert_eq!(statements.len(), 2, "{d:?}");
        assert!(statements[0].contains("VIEW vehicle_flags AS"));
        assert!(statements[1].contains("VIEW fleet_summary AS"));
        assert!(sql.ends_with(";\n"));
    }
}
