#!/bin/sh
# run_c.sh FUZZER [RUNS] [SEED]: run the C API fuzzer (tests/fuzz/fuzz_c.c,
# built by `make fuzz-c`) for RUNS inputs (default 20000) from SEED (default
# 1, so a run is repeatable), under ASan+UBSan.  A failing input is saved in
# build/fuzz/ (crash-*) and named; replay it with `FUZZER FILE`.  Ends with
# "fuzz-c: N passed, N failed" (N passed = inputs run when all pass).
# FUZZ_C_RSS_MB caps the fuzzer's memory (default 2048): `make test` sets
# 128, which a leak of ASan fake stacks by destroyed fibers once exceeded
# within its 20,000 inputs (176 MiB against 40 MiB now).
set -u
fuzzer=$1 runs=${2:-20000} seed=${3:-1}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
mkdir -p build/fuzz
# libFuzzer's "pulse" lines (at every power of two of inputs run) go to
# the terminal as progress; everything goes to the log.
rcfile=$log.rc
{ ASAN_OPTIONS=${ASAN_OPTIONS:-detect_stack_use_after_return=1} \
    "$fuzzer" -runs="$runs" -seed="$seed" -max_len=256 -rss_limit_mb="${FUZZ_C_RSS_MB:-2048}" \
      -artifact_prefix=build/fuzz/ 2>&1
  echo $? >"$rcfile"; } | tee "$log" | grep -E '^#[0-9]+[[:space:]]+pulse'
rc=$(cat "$rcfile")
rm -f "$rcfile"
if [ "$rc" -eq 0 ]; then
  grep -E '^Done [0-9]+ runs' "$log"
  echo "fuzz-c: $runs passed, 0 failed"
else
  tail -n 40 "$log"
  echo "fuzz-c: 0 passed, 1 failed"
  exit 1
fi
