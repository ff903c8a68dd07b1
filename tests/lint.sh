#!/bin/sh
# lint.sh: luacheck over every Lua file of the repository, with its
# .luacheckrc.  A file passes when luacheck reports nothing for it (no
# warning, no error) and exits 0.  Ends with "luacheck: N passed, N failed"
# and exits 1 on any failure, or when luacheck is missing or finds no file.
# Usage: sh tests/lint.sh [FILE...]   (default: every *.lua outside build/)
# luacheck is Debian's lua-check package.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 1
LUACHECK=${LUACHECK:-luacheck}
list=$(mktemp) out=$(mktemp)
trap 'rm -f "$list" "$out"' EXIT

if [ $# -gt 0 ]; then
  printf '%s\n' "$@" >"$list"
else # what `luacheck .` checks: .luacheckrc excludes build/ too
  find . -path ./build -prune -o -path ./.git -prune -o \
       -type f -name '*.lua' -print | sed 's|^\./||' | LC_ALL=C sort >"$list"
fi

if ! command -v "$LUACHECK" >/dev/null 2>&1; then
  echo "lint.sh: $LUACHECK not found (Debian: apt-get install lua-check)" >&2
  echo "luacheck: 0 passed, $(($(wc -l <"$list") + 0)) failed"
  exit 1
fi
if [ ! -s "$list" ]; then
  echo "lint.sh: no Lua file to check" >&2
  echo "luacheck: 0 passed, 1 failed"
  exit 1
fi

passed=0 failed=0
while IFS= read -r f; do
  # One run per file: its exit status and output are this file's alone, and
  # a broken config or an unreadable file fails the file instead of passing
  # unnoticed.
  "$LUACHECK" --config .luacheckrc --formatter plain --codes --no-color \
    -- "$f" >"$out" 2>&1
  rc=$?
  if [ "$rc" -eq 0 ] && [ ! -s "$out" ]; then
    passed=$((passed + 1))
    echo "ok - $f"
  else
    failed=$((failed + 1))
    n=$(grep -c . "$out")
    echo "not ok - $f ($n reported, luacheck exit status $rc)"
    sed 's/^/    /' "$out"
  fi
done <"$list"

echo "luacheck: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
