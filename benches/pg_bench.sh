#!/usr/bin/env bash
# The checkpoint in PostgreSQL against the same in SQLite, on this machine (issue 14):
#   - ingest of ROWS rows (default 1,000,000) into a fresh checkpoint;
#   - the engine at --rate 0 against the sandbox on loopback (VINS VINs, default 20,000), calls/s:
#     one SQLite worker, one PostgreSQL worker, and three PostgreSQL workers on one schema;
#   - export to Parquet of N sandbox reports (default 100,000): from SQLite, and from PostgreSQL
#     (which reads a private snapshot first: `vmr state copy` time is part of it);
#   - `vmr state copy` of that checkpoint into PostgreSQL.
# Starts its own PostgreSQL server (Debian's postgresql package) in a temporary directory on a
# loopback port, as the postgres user when run as root.
#
# Usage: benches/pg_bench.sh            ROWS=100000 N=10000 VINS=5000 benches/pg_bench.sh
#   PARTS="ingest engine export" (the default) chooses the parts; VMR_BIN runs a vmr built
#   elsewhere (an A/B of two builds; the export part needs this tree's make_checkpoint).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
ROWS=${ROWS:-1000000}
N=${N:-100000}
VINS=${VINS:-20000}
PARTS=${PARTS:-ingest engine export}
part() { [[ " $PARTS " == *" $1 "* ]]; }
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [[ -z ${VMR_BIN:-} ]] || part export; then
  cargo build --release --quiet --features bench-tools --bin vmr --bin make_checkpoint
fi
vmr=${VMR_BIN:-$TARGET/release/vmr}
work=$(mktemp -d -t vmr-pg-bench.XXXXXX)
chmod 755 "$work"

PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
mkdir "$work/pg"
[ "$(id -u)" = 0 ] && chown postgres "$work/pg"
as_pg "$PGBIN/initdb" -D "$work/pg/data" -U vmr --auth=trust -E UTF8 --locale=C >/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$PGBIN/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
  -o "-p $PORT -k $work/pg -c listen_addresses=127.0.0.1 -c max_connections=100" start >/dev/null
trap 'as_pg "$PGBIN/pg_ctl" -D "$work/pg/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
PG="postgres://vmr@127.0.0.1:$PORT/postgres"
echo "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT (durable defaults: fsync on)"

measure() { # label, command...
  local label=$1; shift
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" >"$work/out" 2>"$work/err" || { cat "$work/out" "$work/err"; exit 1; }
  read -r secs kb <"$work/time"
  awk -v l="$label" -v s="$secs" -v k="$kb" 'BEGIN { printf "%-44s %8.2f s   peak RSS %6.1f MB\n", l, s, k / 1024 }'
}

cd "$work"
if part ingest; then
python3 "$ROOT/benches/gen_input.py" "$ROWS" in.csv
echo "== ingest of $ROWS rows"
measure "ingest into SQLite" "$vmr" --state st ingest --input in.csv
measure "ingest into PostgreSQL" "$vmr" --state "$PG?schema=ingest" ingest --input in.csv
measure "ingest into PostgreSQL again (all already)" "$vmr" --state "$PG?schema=ingest" ingest --input in.csv
measure "status, SQLite" "$vmr" --state st status
measure "status, PostgreSQL" "$vmr" --state "$PG?schema=ingest" status
fi

if part engine; then
echo "== engine, --rate 0 --concurrency 64, $VINS VINs, sandbox on loopback"
export VMR_APP_ID=vmr-sandbox VMR_APP_SECRET=vmr-sandbox-secret
"$vmr" sandbox --listen "127.0.0.1:$((PORT + 1))" >sandbox.log 2>&1 &
sbpid=$!
sleep 1
python3 "$ROOT/benches/gen_input.py" "$VINS" fleet.csv
for where in sqlite pg; do
  state=eng; [ $where = pg ] && state="$PG?schema=engine"
  start=$(date +%s.%N)
  "$vmr" --state "$state" --out "out-$where" --base-url "http://127.0.0.1:$((PORT + 1))" --rate 0 \
    --concurrency 64 --poll-interval 50ms submit --input fleet.csv >/dev/null 2>"eng-$where.err" || true
  end=$(date +%s.%N)
  calls=$("$vmr" --state "$state" status --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(c["calls"] for c in d["calls"].values()))')
  awk -v w=$where -v c="$calls" -v a="$start" -v b="$end" 'BEGIN { printf "submit, %-10s %8d calls in %6.2f s = %8.1f calls/s\n", w, c, b - a, c / (b - a) }'
done
echo "== three workers on one PostgreSQL schema, --rate 0 --concurrency 64 each, $VINS VINs"
state="$PG?schema=engine3"
"$vmr" --state "$state" ingest --input fleet.csv >/dev/null 2>&1
start=$(date +%s.%N)
pids=()
for i in 1 2 3; do
  "$vmr" --state "$state" --out "out-w$i" --base-url "http://127.0.0.1:$((PORT + 1))" --rate 0 \
    --concurrency 64 --poll-interval 50ms submit --input fleet.csv >/dev/null 2>"eng-w$i.err" &
  pids+=($!)
done
wait "${pids[@]}" || true  # not the sandbox, which runs on
end=$(date +%s.%N)
calls=$("$vmr" --state "$state" status --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(c["calls"] for c in d["calls"].values()))')
awk -v c="$calls" -v a="$start" -v b="$end" 'BEGIN { printf "submit, 3 workers %8d calls in %6.2f s = %8.1f calls/s in total\n", c, b - a, c / (b - a) }'
for i in 1 2 3; do
  n=$(grep -o 'this run: [0-9]* calls' "eng-w$i.err" | grep -o '[0-9]*' || echo 0)
  awk -v i=$i -v n="$n" -v a="$start" -v b="$end" 'BEGIN { printf "  worker %d: %8d calls = %8.1f calls/s\n", i, n, n / (b - a) }'
done
kill $sbpid
fi

part export || exit 0
echo "== export of $N sandbox reports to Parquet"
"$TARGET/release/make_checkpoint" exp "$N" >/dev/null
measure "state copy SQLite -> PostgreSQL" "$vmr" state copy --from exp --to "$PG?schema=export"
measure "export from SQLite" "$vmr" --state exp --out out-sqlite --format parquet export
measure "export from PostgreSQL (snapshot + export)" "$vmr" --state "$PG?schema=export" --out out-pg --format parquet export
cmp <(cd out-sqlite && find . -name '*.parquet' | sort) <(cd out-pg && find . -name '*.parquet' | sort) && echo "same tables written"
