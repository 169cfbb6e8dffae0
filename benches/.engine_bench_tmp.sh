#!/usr/bin/env bash
# Network engine benchmarks (issue 4), against the sandbox on loopback. Figures come from the
# checkpoint's call log (every call's start time), so they measure what vmr actually sent.
# Usage: benches/engine_bench.sh [rate|latency|raw|memory|all]   (builds the release binary once)
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-all}
: # built by the caller
vmr=${VMR:?}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
export VMR_APP_ID=vmr-sandbox VMR_APP_SECRET=vmr-sandbox-secret

# Calls/s over the busy span and the most calls started in any 1-second window.
call_stats() { # state dir, rate+burst bound or 0
  python3 - "$1/checkpoint.sqlite" "$2" <<'PY'
import sqlite3, sys, bisect
db, bound = sys.argv[1], int(sys.argv[2])
t = sorted(r[0] for r in sqlite3.connect(db).execute("SELECT started_at FROM calls"))
span = (t[-1] - t[0]) / 1000 if len(t) > 1 else 0
worst = max(bisect.bisect_left(t, x + 1000) - i for i, x in enumerate(t))
print(f"  {len(t)} calls in {span:.1f} s = {len(t) / span if span else 0:.1f} calls/s; most in any 1 s window: {worst}"
      + (f" (bound rate+burst = {bound})" if bound else ""))
PY
}

sandbox() { # port, extra args...
  local port=$1; shift
  "$vmr" sandbox --listen "127.0.0.1:$port" "$@" >"$work/sandbox-$port.log" 2>&1 &
  for _ in $(seq 50); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return; sleep 0.1; done
  echo "sandbox did not start"; exit 1
}

if [[ $which == rate || $which == all ]]; then
  echo "rate accuracy: --rate 200 --burst 10 for 20 s"
  python3 benches/gen_input.py 4000 "$work/rate.csv"
  sandbox 18101 --inline-rate 1.0
  "$vmr" --state "$work/rate" --base-url http://127.0.0.1:18101 --rate 200 --burst 10 --concurrency 64 \
    submit --input "$work/rate.csv" >/dev/null 2>&1 || true
  call_stats "$work/rate" 210
fi

if [[ $which == latency || $which == all ]]; then
  echo "latency hiding: sandbox latency 300ms, --rate 100 --concurrency 64"
  python3 benches/gen_input.py 2000 "$work/lat.csv"
  sandbox 18102 --latency 300ms --inline-rate 1.0
  "$vmr" --state "$work/lat" --base-url http://127.0.0.1:18102 --rate 100 --burst 10 --concurrency 64 \
    submit --input "$work/lat.csv" >/dev/null 2>&1 || true
  call_stats "$work/lat" 110
fi

if [[ $which == raw || $which == all ]]; then
  echo "raw engine: --rate 0, latency 0, 50,000 VINs, in-process sandbox"
  python3 benches/gen_input.py 50000 "$work/raw.csv"
  "$vmr" --state "$work/raw" --sandbox --rate 0 --concurrency 64 ingest --input "$work/raw.csv" >/dev/null
  /usr/bin/time -f "  wall %e s, peak RSS %M KB" \
    "$vmr" --state "$work/raw" --sandbox --rate 0 --concurrency 64 submit >/dev/null 2>"$work/raw.err" || true
  tail -1 "$work/raw.err"
  call_stats "$work/raw" 0
fi

if [[ $which == memory || $which == all ]]; then
  echo "memory: 1,000,000 queued VINs, --rate 0, stopped after 60 s"
  python3 benches/gen_input.py 1000000 "$work/mem.csv"
  "$vmr" --state "$work/mem" ingest --input "$work/mem.csv" >/dev/null
  sandbox 18104
  /usr/bin/time -f "  peak RSS %M KB (wall %e s)" timeout -s TERM 60 \
    "$vmr" --state "$work/mem" --base-url http://127.0.0.1:18104 --rate 0 --concurrency 64 \
    submit >/dev/null 2>"$work/mem.err" || true
  grep -E "peak RSS|this run" "$work/mem.err" || tail -3 "$work/mem.err"
fi
