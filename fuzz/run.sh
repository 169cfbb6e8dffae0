#!/usr/bin/env bash
# Builds and runs vmr's fuzz targets (cargo-fuzz on the nightly toolchain). CI does not run
# this: it would build the tree a second time, with sanitizers.
#
#   fuzz/run.sh                      # every target, 10 million executions each
#   fuzz/run.sh report 1000000       # one target, a million executions
#   fuzz/run.sh --build              # only build the targets
#   FUZZ_SANITIZER=none fuzz/run.sh report   # without AddressSanitizer: 5-10x the executions
#
# Each run starts from fuzz/corpus/<target>/, the working corpus, which git ignores: run.sh
# first copies into it the committed seeds (fuzz/seeds/<target>/, the named findings among
# them), so a fresh clone regrows the full corpus by running. New inputs that reach new
# coverage land there; a crash is written to fuzz/artifacts/<target>/ and the run stops.
# `fuzz/run.sh --minimize` shrinks every working corpus to the inputs that keep its coverage.
set -euo pipefail
cd "$(dirname "$0")"
TARGETS=(response report report_shaped input_csv config)
# AddressSanitizer by default. The parsers the targets drive are safe Rust, so `none` (coverage
# only) finds the same panics, hangs and allocation blow-ups far faster; it misses only memory
# errors inside dependencies' unsafe code.
SAN=${FUZZ_SANITIZER:-address}

# Copies the committed seeds of target $1 into its working corpus, keeping what is there.
seed() {
  mkdir -p "corpus/$1"
  for f in "seeds/$1"/*; do
    if [ -e "$f" ] && [ ! -e "corpus/$1/${f##*/}" ]; then cp "$f" "corpus/$1/"; fi
  done
}

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi

case "${1:-}" in
  --build)
    cargo +nightly fuzz build --release -s "$SAN"
    exit 0
    ;;
  --minimize)
    # Only the working corpus shrinks; the seeds and the findings among them stay in seeds/.
    for t in "${TARGETS[@]}"; do
      seed "$t"
      cargo +nightly fuzz cmin -s "$SAN" "$t" "corpus/$t"
    done
    exit 0
    ;;
esac

targets=("${1:-}")
[ -z "${1:-}" ] && targets=("${TARGETS[@]}")
runs="${2:-10000000}"
for t in "${targets[@]}"; do
  seed "$t"
  # -rss_limit_mb and -malloc_limit_mb make unbounded allocation a finding; -timeout a hang.
  cargo +nightly fuzz run -s "$SAN" "$t" "corpus/$t" -- \
    -runs="$runs" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10 \
    -print_final_stats=1
done
