#!/bin/sh
# callgrind_lua.sh: instructions per operation of the Lua module and of plain
# coroutines, by callgrind.  Two whole runs differ only in the number of
# operations: (Ir(N2) - Ir(N1)) / (N2 - N1), so setup and exit cancel out.
#
# Usage: scripts/callgrind_lua.sh CASE [N1 N2]
#   CASE   rt0 (resume+yield round trip, no values), rt3 (3 values each
#          way), spawn (fiberswap.spawn to finish; plain: create + resume)
#   N1 N2  operation counts of the two runs (default 20000 and 220000)
# Runs $LUA (default lua5.4) with the module on LUA_CPATH, as `make bench`
# sets it; prints fiber and plain counts and their ratio.  Needs valgrind.
set -eu

[ $# -eq 1 ] || [ $# -eq 3 ] || {
  echo "usage: $0 rt0|rt3|spawn [N1 N2]" >&2
  exit 2
}
case=$1 n1=${2:-20000} n2=${3:-220000} lua=${LUA:-lua5.4}
tmp=$(mktemp -d /tmp/callgrind_lua.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

cat >"$tmp/ops.lua" <<'LUA'
local case, which, n = arg[1], arg[2], tonumber(arg[3])
local lib = which == "plain" and coroutine or require "fiberswap"
local create, resume, yield = lib.create, lib.resume, lib.yield
if case == "rt0" then
  local co = create(function() while true do yield() end end)
  resume(co)
  for _ = 1, n do resume(co) end
elseif case == "rt3" then
  local co = create(function(a, b, c) while true do a, b, c = yield(c, b, a) end end)
  resume(co, 1, 2, 3)
  for i = 1, n do resume(co, i, "s", true) end
elseif case == "spawn" then
  local body = function(x) return x end
  if lib.spawn then
    local spawn = lib.spawn
    for i = 1, n do spawn(body, i) end
  else
    for i = 1, n do resume(create(body), i) end
  end
else
  error("unknown case " .. tostring(case))
end
LUA

# Total instructions of one run: `which` (fiber|plain) doing n operations.
ir() {
  valgrind --tool=callgrind --callgrind-out-file="$tmp/out" --log-file="$tmp/log" \
    "$lua" "$tmp/ops.lua" "$case" "$1" "$2" >"$tmp/stdout" 2>&1 || {
    cat "$tmp/log" "$tmp/stdout" >&2
    exit 1
  }
  awk '/^summary:/ { print $2; exit }' "$tmp/out"
}

per_op() { # which
  a=$(ir "$1" "$n1") b=$(ir "$1" "$n2")
  awk -v a="$a" -v b="$b" -v n1="$n1" -v n2="$n2" 'BEGIN { printf "%.0f", (b - a) / (n2 - n1) }'
}

f=$(per_op fiber) p=$(per_op plain)
awk -v f="$f" -v p="$p" -v c="$case" -v l="$lua" \
  'BEGIN { printf "%s %s: fiber %d, plain %d instructions per operation (%.2fx)\n", l, c, f, p, f / p }'
