#!/usr/bin/env bash
# Whole-command benchmark of `vmr export` (issue 5) against the DuckDB peer, on N sandbox reports.
#
#   benches/export_bench.sh            # N=100000, 2 DuckDB threads
#   N=10000 WORK=/tmp/vmr-bench benches/export_bench.sh
#
# Builds release once, makes a checkpoint of N synthetic reports (benches/tools/make_checkpoint.rs),
# then measures under /usr/bin/time -v (wall, peak RSS): export to parquet+csv, export to jsonl,
# the serde_json parse floor (benches/tools/parse_floor.rs), and the DuckDB peer
# (benches/duckdb_peer.py) on the jsonl export. Needs python3 with duckdb (`pip install duckdb`; installed when missing).
set -euo pipefail

N=${N:-100000}
THREADS=${THREADS:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEER=${PEER:-$ROOT/benches/duckdb_peer.py}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WORK=${WORK:-$(mktemp -d -t vmr-export-bench.XXXXXX)}
mkdir -p "$WORK"
BIN=$CARGO_TARGET_DIR/release

echo "== build (release)"
(cd "$ROOT" && cargo build --release --features bench-tools --bin vmr --bin make_checkpoint --bin parse_floor)

if [ ! -f "$WORK/state/checkpoint.sqlite" ]; then
    echo "== checkpoint of $N sandbox reports in $WORK/state"
    "$BIN/make_checkpoint" "$WORK/state" "$N"
fi

RAW_BYTES=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select sum(length(body)) from reports').fetchone()[0] or 0)" "$WORK/state/checkpoint.sqlite")
REPORTS=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from reports').fetchone()[0])" "$WORK/state/checkpoint.sqlite")
MB=$(python3 -c "print(f'{$RAW_BYTES/1e6:.1f}')")
echo "raw bodies: $REPORTS reports, $MB MB"

# measure NAME CMD...: runs CMD under /usr/bin/time -v, prints wall, RSS, MB/s, reports/s.
declare -A WALL RSS CPU
measure() {
    local name=$1; shift
    sync
    /usr/bin/time -v "$@" > "$WORK/$name.out" 2> "$WORK/$name.time" || { cat "$WORK/$name.out" "$WORK/$name.time"; exit 1; }
    local wall rss
    wall=$(python3 - "$WORK/$name.time" <<'PY'
import sys, re
t = open(sys.argv[1]).read()
m = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", t)
h, mi, s = (int(m.group(1) or 0), int(m.group(2)), float(m.group(3)))
print(f"{h*3600 + mi*60 + s:.2f}")
PY
)
    rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$WORK/$name.time")
    # CPU seconds (user + system): steadier than wall time on a machine shared with others.
    cpu=$(awk -F': ' '/User time|System time/ {s += $2} END {printf "%.2f", s}' "$WORK/$name.time")
    WALL[$name]=$wall; RSS[$name]=$rss; CPU[$name]=$cpu
    python3 -c "w=$wall; print(f'{\"$name\":<16} wall {w:7.2f}s  cpu {$cpu:7.2f}s  peak RSS {$rss:6d} MB  {$RAW_BYTES/1e6/w:7.1f} MB/s  {$REPORTS/w:9.0f} reports/s')"
}

echo "== runs"
measure export_tables "$BIN/vmr" export --state "$WORK/state" --out "$WORK/out" --format parquet,csv
measure export_parquet "$BIN/vmr" export --state "$WORK/state" --out "$WORK/out-parquet" --format parquet
measure export_jsonl "$BIN/vmr" export --state "$WORK/state" --out "$WORK/out-jsonl" --format jsonl
measure parse_floor "$BIN/parse_floor" "$WORK/state"
cat "$WORK/parse_floor.out"
FLOOR=$(sed -n 's/^PARSE_FLOOR_SECONDS=//p' "$WORK/parse_floor.out")

python3 -c "import duckdb" 2>/dev/null || pip install duckdb
measure duckdb python3 "$PEER" "$WORK/out-jsonl/reports.jsonl" "$WORK/out-duckdb" "$THREADS"
cat "$WORK/duckdb.out"
cat "$WORK/export_tables.out"

python3 - <<PY
dw, tw, pw = ${WALL[duckdb]}, ${WALL[export_tables]}, ${WALL[export_parquet]}
floor = $FLOOR
print(f"== summary ({$REPORTS} reports, $MB MB raw JSON, {$(nproc)} cores)")
print(f"speed-up vs DuckDB ({$THREADS} threads): parquet+csv {dw/tw:.1f}x, parquet only {dw/pw:.1f}x   (target >= 5x)")
dc, tc, pc = ${CPU[duckdb]}, ${CPU[export_tables]}, ${CPU[export_parquet]}
print(f"same in CPU seconds: DuckDB {dc:.1f}s, parquet+csv {tc:.1f}s ({dc/tc:.1f}x), parquet only {pc:.1f}s ({dc/pc:.1f}x)")
print(f"peak RSS: export parquet+csv ${RSS[export_tables]} MB, DuckDB ${RSS[duckdb]} MB   (target <= 250 MB)")
print(f"vs serde_json::Value parse floor {floor:.2f}s: parquet+csv {tw/floor:.1f}x, parquet only {pw/floor:.1f}x   (target <= 2x)")
PY
echo "outputs in $WORK"
