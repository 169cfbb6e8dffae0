#!/usr/bin/env bash
# Whole-command benchmark of `vmr export` against the DuckDB peer and the parse floor, on N
# sandbox reports (issue 25's goal 1).
#
#   benches/export_bench.sh            # N=100000, RUNS=3, 2 DuckDB threads
#   N=10000 RUNS=1 WORK=/tmp/vmr-bench benches/export_bench.sh
#
# Builds release once, makes a checkpoint of N synthetic reports (benches/tools/make_checkpoint.rs),
# exports it once to jsonl (DuckDB's input), then runs RUNS interleaved rounds of: export to
# Parquet, export to Parquet + CSV, the floor (benches/tools/parse_floor.rs: the same bodies read
# from the checkpoint and parsed with serde_json into IgnoredAny, nothing written) and the DuckDB
# peer (benches/duckdb_peer.py), each under /usr/bin/time -v (wall, CPU, peak RSS). The summary
# gives the medians and the ratios. Needs python3 with duckdb (`pip install duckdb`; installed
# when missing).
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

python3 -c "import duckdb" 2>/dev/null || pip install duckdb
RUNS=${RUNS:-3}
rm -rf "$WORK/out-jsonl"
"$BIN/vmr" export --state "$WORK/state" --out "$WORK/out-jsonl" --format jsonl > /dev/null

# measure NAME CMD...: one run of CMD under /usr/bin/time -v; appends "NAME wall cpu rss" to
# $WORK/runs and prints the run.
measure() {
    local name=$1; shift
    sync
    /usr/bin/time -v "$@" > "$WORK/$name.out" 2> "$WORK/$name.time" || { cat "$WORK/$name.out" "$WORK/$name.time"; exit 1; }
    python3 - "$name" "$WORK/$name.time" >> "$WORK/runs" <<'PY'
import sys, re
name, t = sys.argv[1], open(sys.argv[2]).read()
m = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", t)
wall = int(m.group(1) or 0) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
cpu = sum(float(x) for x in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", t))
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1)) / 1024
print(f"{name} {wall:.2f} {cpu:.2f} {rss:.0f}")
PY
    tail -n 1 "$WORK/runs"
}

echo "== $RUNS interleaved rounds (name wall-s cpu-s peak-MB)"
: > "$WORK/runs"
for round in $(seq "$RUNS"); do
    rm -rf "$WORK/out" "$WORK/out-parquet" "$WORK/out-duckdb"
    measure export_parquet "$BIN/vmr" export --state "$WORK/state" --out "$WORK/out-parquet" --format parquet
    measure export_tables "$BIN/vmr" export --state "$WORK/state" --out "$WORK/out" --format parquet,csv
    # The floor's figures are its own timing of the pass (the process goes on to time the
    # parts alone, for reference).
    "$BIN/parse_floor" "$WORK/state" > "$WORK/floor.out"
    sed -n 's/^PARSE_FLOOR_SECONDS=//p; s/^PARSE_FLOOR_CPU_SECONDS=//p' "$WORK/floor.out" \
        | paste -sd' ' | awk '{print "floor", $1, $2, "-"}' >> "$WORK/runs"
    tail -n 1 "$WORK/runs"
    measure duckdb python3 "$PEER" "$WORK/out-jsonl/reports.jsonl" "$WORK/out-duckdb" "$THREADS"
done
cat "$WORK/floor.out" "$WORK/duckdb.out" "$WORK/export_tables.out"

python3 - "$WORK/runs" <<PY
import sys, statistics, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, wall, cpu, rss = line.split()
    runs[name].append((float(wall), float(cpu), float("nan") if rss == "-" else float(rss)))
med = {k: tuple(statistics.median(r[i] for r in v) for i in range(2)) + (max(r[2] for r in v),) for k, v in runs.items()}
print(f"== summary: medians of {len(runs['duckdb'])} interleaved runs, $REPORTS reports, $MB MB raw JSON, $(nproc) cores")
for k in ("export_parquet", "export_tables", "floor", "duckdb"):
    w, c, r = med[k]
    rss = "      -" if r != r else f"{r:4.0f} MB"
    print(f"{k:<15} wall {w:6.2f}s  cpu {c:6.2f}s  peak RSS {rss}  {$RAW_BYTES/1e6/w:6.1f} MB/s")
d, p, t, f = med["duckdb"], med["export_parquet"], med["export_tables"], med["floor"]
print(f"Parquet vs DuckDB ($THREADS threads): {d[0]/p[0]:.1f}x by wall time (target >= 10x), {d[1]/p[1]:.1f}x by CPU time; Parquet + CSV {d[0]/t[0]:.1f}x")
print(f"Parquet vs the floor (read + IgnoredAny): {p[0]/f[0]:.2f}x by wall time (target <= 1.1x), {p[1]/f[1]:.2f}x by CPU time")
print(f"peak RSS: Parquet {p[2]:.0f} MB, Parquet + CSV {t[2]:.0f} MB (target <= 120 MiB = 126 MB), DuckDB {d[2]:.0f} MB")
PY
echo "outputs in $WORK"
