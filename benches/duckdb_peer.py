"""The export benchmark's peer: DuckDB doing the work of `vmr export --format parquet` on the same reports.

It reads `vmr export --format jsonl` output (one {"vin", "request_id", "body"} per line, body being
the REPORT as bought) and writes the four report tables with the same columns and types as vmr
(dates as DATE, amounts as DECIMAL(18,2), codes and counts as integers), Parquet with zstd. It is
what a data engineer would write instead of vmr, so benches/export_bench.sh times both on one set
of reports.

    python3 benches/duckdb_peer.py REPORTS.jsonl OUTDIR [THREADS]      # pip install duckdb
"""
import os
import sys

import duckdb


def lenient(expr, sql_type):
    """The vendor writes numbers as numbers, strings or "": blank and unparseable become NULL."""
    return f"TRY_CAST(NULLIF({expr}, '') AS {sql_type})"


def text(expr):
    return f"NULLIF({expr}, '')"


REPORT_COLUMNS = [
    ("brand_name", "body->>'brand_name'"),
    ("brand_logo_url", text("body->>'brand_pic'")),
    ("vin_masked", "body->>'vinNO'"),
    ("first_visit_date", lenient("body->>'first_time_to_shop'", "DATE")),
    ("last_visit_date", lenient("body->>'last_time_to_shop'", "DATE")),
    ("first_visit_mileage_km", lenient("body->>'first_mileage'", "BIGINT")),
    ("last_visit_mileage_km", lenient("body->>'last_mileage'", "BIGINT")),
    ("total_mileage_km", lenient("body->>'total_mileage'", "BIGINT")),
    ("avg_yearly_mileage_km", lenient("body->>'avg_mileage_year'", "DOUBLE")),
    ("avg_yearly_services", lenient("body->>'avg_upkeep_year'", "DOUBLE")),
    ("record_count", lenient("body->>'content_numbers'", "INTEGER")),
    ("accident_status", lenient("body->>'is_accident'", "TINYINT")),
    ("accident_grade", "body->>'accident_grade'"),
    ("accident_reason", "body->>'is_accident_reason'"),
    ("report_updated_date", lenient("body->>'updatetime'", "DATE")),
]

RECORD_COLUMNS = [
    ("seq", "i - 1"),
    ("visit_date", lenient("rec->>'date'", "DATE")),
    # Unix seconds, or milliseconds when larger than 1e11 (as vmr reads them).
    ("maintained_at", "to_timestamp(CASE WHEN m > 1e11 THEN m / 1000 ELSE m END)"),
    ("type_code", lenient("rec->>'type_code'", "TINYINT")),
    ("type_label", "rec->>'type'"),
    ("content", "rec->>'content'"),
    ("materials", text("rec->>'materal'")),
    ("remark", "rec->>'remark'"),
    ("mileage_km", lenient("rec->>'mileage'", "BIGINT")),
    ("pay_type", "rec->>'payType'"),
    ("total_amount", lenient("rec->>'totalMoney'", "DECIMAL(18,2)")),
]


def select(columns):
    return ", ".join(f"{expr} AS {name}" for name, expr in columns)


def main():
    src, out = sys.argv[1], sys.argv[2]
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    os.makedirs(out, exist_ok=True)
    db = duckdb.connect()
    db.execute(f"SET threads = {threads}")
    db.execute(
        f"""CREATE TEMP TABLE bought AS SELECT vin, request_id, body
            FROM read_json('{src}', format = 'newline_delimited',
                           columns = {{vin: 'VARCHAR', request_id: 'VARCHAR', body: 'JSON'}})"""
    )
    parquet = "(FORMAT parquet, COMPRESSION zstd)"

    def write(table, query):
        db.execute(f"COPY ({query}) TO '{out}/{table}.parquet' {parquet}")

    write("reports", f"SELECT vin, request_id, {select(REPORT_COLUMNS)} FROM bought")
    records = "CAST(body->'result_content' AS JSON[])"
    write(
        "records",
        f"""SELECT vin, request_id, {select(RECORD_COLUMNS)} FROM (
              SELECT *, {lenient("rec->>'mainTainDate'", "BIGINT")} AS m FROM (
                SELECT vin, request_id, unnest({records}) AS rec,
                       generate_subscripts({records}, 1) AS i
                FROM bought))""",
    )
    db.execute(
        """CREATE TEMP TABLE parts AS
           SELECT vin, request_id, unnest(json_keys(body->'overview')) AS part, body->'overview' AS overview
           FROM bought"""
    )
    write(
        "overview",
        f"""SELECT vin, request_id, part, overview->part->>'label' AS label,
                   {lenient("overview->part->>'is_exception'", "INTEGER")} = 1 AS has_exception,
                   json_array_length(overview->part->'exceptions') AS exception_count
            FROM parts""",
    )
    findings = "CAST(overview->part->'exceptions' AS VARCHAR[])"
    write(
        "exceptions",
        f"""SELECT vin, request_id, part, label, i - 1 AS seq, finding_text AS raw,
                   regexp_extract(finding_text, '^([^:：]*)', 1) AS component,
                   NULLIF(regexp_extract(finding_text, '[:：](.*)$', 1), '') AS finding
            FROM (SELECT vin, request_id, part, overview->part->>'label' AS label,
                         unnest({findings}) AS finding_text, generate_subscripts({findings}, 1) AS i
                  FROM parts)""",
    )
    for table in ["reports", "records", "overview", "exceptions"]:
        rows = db.execute(f"SELECT count(*) FROM '{out}/{table}.parquet'").fetchone()[0]
        print(f"{table} {rows}")


if __name__ == "__main__":
    main()
