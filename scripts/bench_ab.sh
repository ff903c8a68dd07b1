#!/bin/sh
# bench_ab.sh: compare the Lua module of two revisions, in alternating
# processes, for changes too small for one `make bench` to show.
#
# Usage: sh scripts/bench_ab.sh REV_A REV_B [ROUNDS]
#   REV_A, REV_B  git revisions of this repository, or "." for the working
#                 tree as it is (tracked files)
#   ROUNDS        rounds (default 8); each runs scripts/bench_lua.lua once
#                 per revision, A then B, pinned with taskset -c 1
#
# Each revision is built (BACKEND=asm, LUA=lua5.4) in a temporary copy.
# Prints each round's ratios to plain coroutines, to 3 decimals, then the
# median of each case per revision.  A small change to the round trip can
# move gcc's code layout, and layout alone moves a ratio by about 0.015 on
# the machine in BENCHMARKS.md: judge a hot-path change by callgrind first
# (scripts/callgrind_lua.sh), and by this over several rounds.
set -eu

[ $# -ge 2 ] || {
  echo "usage: $0 REV_A REV_B [ROUNDS]" >&2
  exit 2
}
a=$1 b=$2 rounds=${3:-8}
top=$(git rev-parse --show-toplevel)
tmp=$(mktemp -d /tmp/bench_ab.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# build NAME REV: the module of REV in $tmp/NAME
build() {
  mkdir -p "$tmp/$1"
  if [ "$2" = "." ]; then
    (cd "$top" && git ls-files -z | xargs -0 tar -cf -) | tar -xf - -C "$tmp/$1"
  else
    git -C "$top" archive "$2" | tar -xf - -C "$tmp/$1"
  fi
  echo "building $2" >&2
  make -s -C "$tmp/$1" BACKEND=asm LUA=lua5.4 module >/dev/null
}
build A "$a"
build B "$b"

# run NAME: one bench_lua.lua process; prints "case=ratio" per case
run() {
  (cd "$tmp/$1" && LUA_CPATH='build/asm/lua5.4/?.so;;' taskset -c 1 lua5.4 scripts/bench_lua.lua 2>/dev/null) |
    awk -v who="$1" '
      # The two numbers before the "0.61x" field are plain ns and fiber ns.
      function ratio(c,   i) {
        for (i = 3; i <= NF; i++)
          if ($i ~ /^[0-9.]+x$/) { printf "%s %s %.3f\n", who, c, $(i - 1) / $(i - 2); return }
      }
      /^round trip, no values/          { ratio("rt0") }
      /^round trip, 3 values each way/  { ratio("rt3") }
      /^wrap round trip/                { ratio("wrap") }
      /^spawn to finish/                { ratio("spawn") }
      /^create, yield once/             { ratio("life") }'
}

results=$tmp/results
: >"$results"
i=1
while [ "$i" -le "$rounds" ]; do
  echo "round $i/$rounds" >&2
  run A | tee -a "$results"
  run B | tee -a "$results"
  i=$((i + 1))
done

echo "medians over $rounds rounds (A = $a, B = $b):"
for who in A B; do
  for c in rt0 rt3 wrap spawn life; do
    awk -v w="$who" -v c="$c" '$1 == w && $2 == c { print $3 }' "$results" | sort -n |
      awk -v w="$who" -v c="$c" '{ v[NR] = $1 }
        END { if (NR) printf "%s %-6s %.3f  (%.3f to %.3f)\n", w, c,
                (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), v[1], v[NR] }'
  done
done
