#!/usr/bin/env bash
# Ingest benchmark (issue 3): a generated 1,000,000-row CSV into a fresh checkpoint, the same file
# again (all rows already ingested), and `vmr status` on the result; then the same rows as an xlsx
# (issue 26: written by benches/csv_to_xlsx.py as Excel saves text, shared strings; needs
# `pip install XlsxWriter`) into another fresh checkpoint. Prints wall time and peak RSS.
# Usage: benches/ingest_bench.sh [ROWS]   (builds the release binary once)
set -euo pipefail
cd "$(dirname "$0")/.."
rows=${1:-1000000}
# VMR_BIN: a vmr built elsewhere; else this tree's release build.
if [[ -n ${VMR_BIN:-} ]]; then
  vmr=$VMR_BIN
else
  cargo build --release --quiet --bin vmr
  vmr=$PWD/target/release/vmr
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 benches/gen_input.py "$rows" "$work/in.csv"
echo "input: $rows rows, $(du -h "$work/in.csv" | cut -f1)"
python3 benches/csv_to_xlsx.py "$work/in.csv" "$work/in.xlsx"
echo "xlsx:  $rows rows, $(du -h "$work/in.xlsx" | cut -f1)"

measure() { # label, command...
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >/dev/null 2>"$work/err" || { cat "$work/err"; exit 1; }
  read -r secs kb <"$work/time"
  awk -v l="$label" -v s="$secs" -v k="$kb" 'BEGIN { printf "%-28s %7.2f s   peak RSS %6.1f MB\n", l, s, k / 1024 }'
}
cd "$work"
measure "ingest (fresh checkpoint)" "$vmr" --state st ingest --input in.csv
measure "ingest again (all known)" "$vmr" --state st ingest --input in.csv
measure "status" "$vmr" --state st status
measure "status --json" "$vmr" --state st status --json
measure "ingest xlsx (fresh)" "$vmr" --state st-xlsx ingest --input in.xlsx
