#!/bin/sh
# deps.sh: installs the Debian packages a make target needs, and nothing else.
# As root it runs apt-get update once, then apt-get install; otherwise it
# prints the exact command to run and fails.
# Usage: sh scripts/deps.sh test|demo|bench|valgrind
set -eu

base="gcc clang make libc6-dev binutils pkg-config"
lua="lua5.4 liblua5.4-dev lua-expat lua-lpeg"
# every Lua the module supports, and the Lua tools
luas="lua5.1 liblua5.1-0-dev lua5.2 liblua5.2-dev lua5.3 liblua5.3-dev luajit libluajit-5.1-dev lua-check luarocks"
# clang's libFuzzer and sanitizer runtimes (clang only recommends them)
fuzz="libclang-rt-dev"
case "${1:-}" in
  test)     want="$base $lua $luas $fuzz" ;;
  demo)     want="$base $lua" ;;
  bench)    want="$base $lua libboost-context-dev util-linux valgrind" ;;
  valgrind) want="$base $lua valgrind" ;;
  *) echo "deps.sh: unknown profile '${1:-}' (want test, demo, bench or valgrind)" >&2; exit 2 ;;
esac

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "deps.sh: not a Debian system; make sure these (Debian names) are installed: $want" >&2
  exit 0
fi

missing=""
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  echo "deps.sh: installing:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing
else
  echo "deps.sh: missing Debian packages:$missing" >&2
  echo "deps.sh: run: sudo apt-get update && sudo apt-get install -y$missing" >&2
  exit 1
fi
