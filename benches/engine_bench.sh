#!/usr/bin/env bash
# Network engine benchmarks (issue 4), against the sandbox on loopback. Figures come from the
# checkpoint's call log (every call's start time), so they measure what vmr actually sent.
# Usage: benches/engine_bench.sh [rate|latency|raw|memory|scale|all]   (builds the release binary
# once). raw, memory and scale share one method: one `vmr sandbox` process on loopback, a copy of
# an ingested checkpoint (synced first, so the run does not pay for the copy's dirty pages),
# `submit --rate 0 --concurrency 64` for a fixed time, calls/s over the call log's span, CPU per
# call and peak RSS. scale interleaves 50,000 and 1,000,000 queued VINs RUNS times (default 3)
# and prints the ratio of the medians. rate takes HOG=N: N same-priority busy loops beside vmr.
set -euo pipefail
cd "$(dirname "$0")/.."
which=${1:-all}
# VMR_BIN: a vmr built elsewhere (an A/B of two builds); else this tree's release build.
if [[ -n ${VMR_BIN:-} ]]; then
  vmr=$VMR_BIN
else
  cargo build --release --quiet --bin vmr
  vmr=$PWD/target/release/vmr
fi
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
  # HOG=N runs N busy loops at vmr's priority beside it (a cron host is rarely idle).
  hog=${HOG:-0}
  echo "rate accuracy: --rate 200 --burst 10 for 20 s, $hog busy loops beside it"
  python3 benches/gen_input.py 4000 "$work/rate.csv"
  sandbox 18101 --inline-rate 1.0
  hogs=()
  for _ in $(seq "$hog"); do bash -c 'while :; do :; done' & hogs+=($!); done
  "$vmr" --state "$work/rate" --base-url http://127.0.0.1:18101 --rate 200 --burst 10 --concurrency 64 \
    submit --input "$work/rate.csv" >/dev/null 2>&1 || true
  if ((${#hogs[@]})); then kill "${hogs[@]}"; fi
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

# One fixed-time submit on a copy of an ingested checkpoint, against the shared sandbox: prints
# "calls calls/s cpu_us_per_call peak_rss_mb" for the run.
timed_submit() { # base checkpoint dir, seconds
  local run=$work/run
  rm -rf "$run"; cp -r "$1" "$run"; rm -f "$run/lock"; sync; sleep 1
  /usr/bin/time -o "$work/time" -f "%e %U %S %M" timeout -s TERM "$2" \
    "$vmr" --state "$run" --base-url http://127.0.0.1:18105 --rate 0 --concurrency 64 \
    submit >/dev/null 2>"$work/submit.err" || true
  python3 - "$run/checkpoint.sqlite" "$work/time" <<'PY'
import sqlite3, sys
t = sorted(r[0] for r in sqlite3.connect(sys.argv[1]).execute("SELECT started_at FROM calls"))
wall, user, sys_, rss = open(sys.argv[2]).read().split()[-4:]
span = (t[-1] - t[0]) / 1000 if len(t) > 1 else 0
cpu = float(user) + float(sys_)
print(len(t), round(len(t) / span) if span else 0, round(cpu / max(len(t), 1) * 1e6), int(rss) // 1024)
PY
}

ingested() { # VINs -> an ingested checkpoint directory, made once
  local dir=$work/base$1
  if [[ ! -d $dir ]]; then
    python3 benches/gen_input.py "$1" "$work/in$1.csv"
    "$vmr" --state "$dir" ingest --input "$work/in$1.csv" >/dev/null
  fi
  echo "$dir"
}

if [[ $which =~ ^(raw|memory|scale|all)$ ]]; then
  sandbox 18105
fi

if [[ $which == raw || $which == all ]]; then
  echo "raw engine: --rate 0, latency 0, 50,000 queued VINs, 30 s at most"
  read -r calls rate cpu rss <<<"$(timed_submit "$(ingested 50000)" 30)"
  echo "  $calls calls, $rate calls/s, $cpu CPU-us per call, peak RSS $rss MB"
fi

if [[ $which == memory || $which == all ]]; then
  echo "memory: 1,000,000 queued VINs, --rate 0, stopped after 60 s"
  read -r calls rate cpu rss <<<"$(timed_submit "$(ingested 1000000)" 60)"
  echo "  $calls calls, $rate calls/s, $cpu CPU-us per call, peak RSS $rss MB"
fi

if [[ $which == scale || $which == all ]]; then
  runs=${RUNS:-3}
  echo "scale: calls/s with 50,000 and with 1,000,000 queued, 20 s each, $runs interleaved pairs"
  small=$(ingested 50000); large=$(ingested 1000000)
  : >"$work/scale"
  for i in $(seq "$runs"); do
    read -r _ a cpu_a rss_a <<<"$(timed_submit "$small" 20)"
    read -r _ b cpu_b rss_b <<<"$(timed_submit "$large" 20)"
    echo "  pair $i: 50k $a calls/s ($cpu_a CPU-us/call, $rss_a MB), 1M $b calls/s ($cpu_b CPU-us/call, $rss_b MB)"
    echo "$a $b" >>"$work/scale"
  done
  python3 - "$work/scale" <<'PY'
import statistics, sys
pairs = [tuple(map(int, l.split())) for l in open(sys.argv[1]) if l.strip()]
a = statistics.median(p[0] for p in pairs); b = statistics.median(p[1] for p in pairs)
print(f"  medians: 50k {a:.0f} calls/s, 1M {b:.0f} calls/s: 1M at {b / a:.0%} of 50k (goal >= 90%)")
PY
fi
