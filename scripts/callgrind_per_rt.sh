#!/bin/sh
# callgrind_per_rt.sh: instructions per resume+yield round trip, by callgrind.
# Two whole runs differ only in round trips: (Ir(N2) - Ir(N1)) / (N2 - N1).
#
# Usage: scripts/callgrind_per_rt.sh BINARY IMPL PATH [N1 N2]
#   BINARY  a bench_c build (it must accept --callgrind IMPL PATH N)
#   IMPL    fiberswap | fcontext | ucontext
#   PATH    api | raw
#   N1 N2   round-trip counts of the two runs (default 1000 and 101000)
# Prints "IMPL PATH: X.X instructions per round trip", or "IMPL PATH: n/a"
# when the binary lacks that case.  Needs valgrind.
set -eu

[ $# -eq 3 ] || [ $# -eq 5 ] || {
  echo "usage: $0 BINARY IMPL PATH [N1 N2]" >&2
  exit 2
}
bin=$1 impl=$2 path=$3 n1=${4:-1000} n2=${5:-101000}
tmp=$(mktemp -d /tmp/callgrind_per_rt.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# Total instructions (Ir) of one run of N round trips, from the "summary:"
# line of callgrind's output file ("totals:" in older formats).
ir() {
  if ! valgrind --tool=callgrind --callgrind-out-file="$tmp/out.$1" \
      --log-file="$tmp/log.$1" "$bin" --callgrind "$impl" "$path" "$1" \
      >"$tmp/stdout.$1" 2>"$tmp/stderr.$1"; then
    if grep -q 'n/a' "$tmp/stdout.$1"; then
      echo "$impl $path: n/a"
      exit 0
    fi
    cat "$tmp/log.$1" "$tmp/stderr.$1" >&2
    exit 1
  fi
  awk '/^summary:/ { print $2; found = 1; exit }
       /^totals:/  { t = $2 }
       END { if (!found && t != "") print t }' "$tmp/out.$1"
}

ir1=$(ir "$n1")
case $ir1 in *n/a*) echo "$ir1"; exit 0 ;; esac
ir2=$(ir "$n2")
awk -v a="$ir1" -v b="$ir2" -v n1="$n1" -v n2="$n2" -v what="$impl $path" \
  'BEGIN { printf "%s: %.1f instructions per round trip\n", what, (b - a) / (n2 - n1) }'
