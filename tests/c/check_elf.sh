#!/bin/sh
# check_elf.sh: what the built objects promise the loader and the kernel.
# No executable stack (GNU_STACK RW) anywhere, and never a CET SHSTK claim,
# since the ret trick cannot run under shadow stacks.
set -u
CC=${CC:-cc}
top=$(cd "$(dirname "$0")/../.." && pwd)
lib="$top/lib/fiberswap"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0 failed=0

ok() { passed=$((passed + 1)); echo "ok - $1"; }
bad() { failed=$((failed + 1)); echo "not ok - $1"; }
# check NAME COMMAND...: the command's success is the test.
check() { name=$1; shift; if "$@"; then ok "$name"; else bad "$name"; fi; }

stack_rw() { readelf -lW "$1" | grep GNU_STACK | grep -qv 'RWE'; }
no_shstk() { ! readelf -nW "$1" 2>/dev/null | grep -q SHSTK; }
has_ibt() { readelf -nW "$1" 2>/dev/null | grep -q IBT; }
has_note_stack() { readelf -SW "$1" | grep -q '\.note\.GNU-stack'; }

srcs="$lib/fiber.c $lib/stack.c $lib/overflow.c $lib/ctx_ucontext.c $lib/ctx_x86_64_sysv.c $lib/switch_x86_64_sysv.S"
prog="$top/tests/c/test_fiber.c"

# The switch object carries .note.GNU-stack, so it asks for no exec stack.
"$CC" -c -I"$lib" "$lib/switch_x86_64_sysv.S" -o "$tmp/switch.o"
check "switch object has a .note.GNU-stack section" has_note_stack "$tmp/switch.o"

# A plain build: executable and shared object both get a non-executable stack.
"$CC" -std=gnu99 -O2 -I"$lib" $prog $srcs -o "$tmp/plain" -pthread -lm
check "executable: GNU_STACK is RW, not RWE" stack_rw "$tmp/plain"
"$CC" -std=gnu99 -O2 -fPIC -shared -I"$lib" $srcs -o "$tmp/libfsw.so" -pthread
check "shared object: GNU_STACK is RW, not RWE" stack_rw "$tmp/libfsw.so"

if [ "$(uname -m)" = x86_64 ]; then
  # Everything built with full CET (IBT + SHSTK) by a user's own flags: the
  # switch object claims IBT only, so the linked result never claims SHSTK.
  "$CC" -c -fcf-protection=full -I"$lib" "$lib/switch_x86_64_sysv.S" -o "$tmp/switch_cet.o"
  check "switch object under -fcf-protection: no SHSTK claim" no_shstk "$tmp/switch_cet.o"
  check "switch object under -fcf-protection: claims IBT" has_ibt "$tmp/switch_cet.o"
  # Our objects alone, combined with ld -r: the property is the AND of them.
  # The C objects by themselves claim SHSTK (so this check can fail); with
  # the switch object among them the claim is gone and IBT stays.
  for src in $srcs; do
    "$CC" -std=gnu99 -O2 -fcf-protection=full -I"$lib" -c "$src" -o "$tmp/cet_$(basename "$src").o"
  done
  "$CC" -r -nostdlib "$tmp"/cet_fiber.c.o "$tmp"/cet_stack.c.o -o "$tmp/cet_c_only.o"
  check "C objects alone under -fcf-protection=full do claim SHSTK" \
    sh -c "readelf -nW '$tmp/cet_c_only.o' | grep -q SHSTK"
  "$CC" -r -nostdlib "$tmp"/cet_*.[cS].o -o "$tmp/cet_lib.o"
  check "library under -fcf-protection=full: no SHSTK claim" no_shstk "$tmp/cet_lib.o"
  check "library under -fcf-protection=full: claims IBT" has_ibt "$tmp/cet_lib.o"
  "$CC" -std=gnu99 -O2 -fcf-protection=full -I"$lib" $prog $srcs -o "$tmp/cet" -pthread -lm
  check "executable under -fcf-protection=full: no SHSTK claim" no_shstk "$tmp/cet"
  check "executable under -fcf-protection=full: GNU_STACK RW" stack_rw "$tmp/cet"
  check "executable under -fcf-protection=full: passes its tests" sh -c "'$tmp/cet' >/dev/null 2>&1"
  # The Makefile's own objects.
  for o in "$top"/build/asm/lib/*.o; do
    [ -f "$o" ] || continue
    check "make-built $(basename "$o"): no SHSTK claim" no_shstk "$o"
  done
fi
echo "elf: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
