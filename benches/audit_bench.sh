#!/bin/sh
# Benchmark of `vmr audit` over 1,000,000 maintenance records (target: <= 5 s, <= 1 GB peak RSS).
#
#   benches/audit_bench.sh [DIR]
#
# Writes synthetic export tables (41,000 vehicles, 40,180 with a report, x 25 records over two report
# versions each, the export schema, zstd Parquet) with `benches/tools/audit_tables.rs` into DIR
# (default: target/audit-bench), then runs the release `vmr audit` on them under /usr/bin/time -v.
# Knobs: VEHICLES (41000), RECORDS (25 per vehicle, both versions together), VERSIONS (2; 1 for one
# report per vehicle), FORMAT (parquet,csv).
set -eu
cd "$(dirname "$0")/.."
DIR=${1:-target/audit-bench}
VEHICLES=${VEHICLES:-41000}
RECORDS=${RECORDS:-25}
VERSIONS=${VERSIONS:-2}
FORMAT=${FORMAT:-parquet,csv}
TARGET=${CARGO_TARGET_DIR:-target}

cargo build --release --features bench-tools --bin vmr --bin audit_tables
"$TARGET/release/audit_tables" "$DIR" "$VEHICLES" "$RECORDS" "$VERSIONS"
ls -l "$DIR"
/usr/bin/time -v "$TARGET/release/vmr" audit --out "$DIR" --format "$FORMAT" --as-of 2026-01-01 \
  2> "$DIR/time.txt"
grep -E "Elapsed \(wall clock\)|Maximum resident set size|User time|System time" "$DIR/time.txt"
