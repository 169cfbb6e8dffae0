#!/usr/bin/env bash
# A/B benchmark of two vmr release builds on the same data, runs interleaved (this machine is
# noisy): export (100,000 sandbox reports to Parquet + CSV), the raw engine (50,000 VINs, --rate 0,
# in-process sandbox) and audit (1,004,500 records). Prints the median of RUNS wall times each.
#
#   benches/ab_bench.sh OLD_TARGET_DIR NEW_TARGET_DIR      # each holding release/vmr
#
# The data is made once with each side's bench tools (cargo build --release --features
# bench-tools --bins): the export checkpoint per side, since an older vmr refuses a checkpoint
# of a newer schema (and a newer one migrates an older one on its first read).
set -euo pipefail
OLD=$1/release/vmr
NEW=$2/release/vmr
TOOLS=$2/release
declare -A TOOLS_OF=([old]=$1/release [new]=$2/release)
RUNS=${RUNS:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$(mktemp -d -t vmr-ab.XXXXXX)}
export VMR_APP_ID=vmr-sandbox VMR_APP_SECRET=vmr-sandbox-secret

for side in old new; do
  [ -f "$WORK/export-$side/state/checkpoint.sqlite" ] ||
    "${TOOLS_OF[$side]}/make_checkpoint" "$WORK/export-$side/state" 100000 >/dev/null
done
# Any migration on first read happens here, not in a timed run.
"$NEW" status --state "$WORK/export-new/state" >/dev/null 2>&1 || true
[ -f "$WORK/raw.csv" ] || python3 "$ROOT/benches/gen_input.py" 50000 "$WORK/raw.csv"
[ -f "$WORK/audit/records.parquet" ] || "$TOOLS/audit_tables" "$WORK/audit" 41000 25 >/dev/null

wall() { # prints the wall seconds of "$@"
  local t0 t1
  t0=$(date +%s.%N); "$@" >/dev/null 2>&1 || true; t1=$(date +%s.%N)
  python3 -c "print(f'{$t1 - $t0:.3f}')"
}

declare -A T
for i in $(seq "$RUNS"); do
  for side in old new; do
    bin=$OLD; [ $side = new ] && bin=$NEW
    rm -rf "$WORK/out-$side"
    T[export-$side]+="$(wall "$bin" export --state "$WORK/export-$side/state" --out "$WORK/out-$side" --format parquet,csv) "
    rm -rf "$WORK/raw-$side"
    "$bin" --state "$WORK/raw-$side" --sandbox ingest --input "$WORK/raw.csv" >/dev/null 2>&1
    T[raw-$side]+="$(wall "$bin" --state "$WORK/raw-$side" --out "$WORK/raw-out-$side" --sandbox --rate 0 --concurrency 64 submit) "
    T[audit-$side]+="$(wall "$bin" audit --out "$WORK/audit" --format parquet,csv --as-of 2026-01-01) "
  done
  echo "run $i done"
done
python3 - "${T[export-old]}" "${T[export-new]}" "${T[raw-old]}" "${T[raw-new]}" "${T[audit-old]}" "${T[audit-new]}" <<'PY'
import statistics, sys
names = ["export parquet+csv (100,000 reports)", "raw engine submit (50,000 VINs)", "audit (1,004,500 records)"]
for k, name in enumerate(names):
    old = [float(x) for x in sys.argv[1 + 2 * k].split()]
    new = [float(x) for x in sys.argv[2 + 2 * k].split()]
    mo, mn = statistics.median(old), statistics.median(new)
    print(f"{name:<40} old median {mo:7.2f}s  new median {mn:7.2f}s  change {100 * (mn - mo) / mo:+.1f}%   old {old} new {new}")
PY
echo "data in $WORK"
