#!/bin/sh
# test_rock.sh: the luarocks package, built and loaded the way a user would.
# Installs rockspec/fiberswap-scm-1.rockspec into a temporary tree (never the
# system tree, never the network), then checks from a new lua$LUAV process,
# on that tree's paths, that the installed module runs fibers.
# LUAV picks the Lua version (default 5.4), or `luajit`: luarocks then
# builds for 5.1 against LuaJIT's headers, as the README's install section
# says.  Ends with "rock: N passed, N failed"; exits 1 on any failure.
set -u
LUAV=${LUAV:-5.4}
if [ "$LUAV" = luajit ]; then
  lv=5.1 interp=luajit
  set -- LUA_INCDIR=/usr/include/luajit-2.1
else
  lv=$LUAV interp=lua$LUAV
  set --
fi
top=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM
passed=0 failed=0

ok() { passed=$((passed + 1)); echo "ok - $1"; }
bad() { failed=$((failed + 1)); echo "not ok - $1"; }
# diag FILE: show a log as TAP comments.
diag() { sed 's/^/# /' "$1"; }
finish() { echo "rock: $passed passed, $failed failed"; [ "$failed" -eq 0 ]; exit; }

# The build runs in a copy of the checkout: the builtin backend writes its
# objects beside the sources, and those stay out of the working tree.
src="$tmp/src" tree="$tmp/tree"
mkdir "$src"
(cd "$top" && tar cf - --exclude=./build --exclude=./.git .) | (cd "$src" && tar xf -)

# A user who built the rock for another Lua in the same checkout leaves
# that build in build/rock: luarocks must rebuild it for this version, not
# install it (a stale 5.1 build once reached every other version).
case $LUAV in 5.4) other=lua5.1 ;; *) other=lua5.4 ;; esac
[ "$LUAV" = luajit ] && other=lua5.1
if make -C "$src" --no-print-directory B=build/rock LUA=lua \
     LUA_INC="$(pkg-config --cflags $other)" module >"$tmp/other.log" 2>&1; then
  ok "a build for $other is left in the checkout first"
else
  bad "a build for $other is left in the checkout first"
  diag "$tmp/other.log"
fi

if (cd "$src" && luarocks --lua-version "$lv" --tree "$tree" \
      make rockspec/fiberswap-scm-1.rockspec "$@") >"$tmp/make.log" 2>&1; then
  ok "luarocks --lua-version $lv make${*:+ $*} installs the rock into a temporary tree"
else
  bad "luarocks --lua-version $lv make${*:+ $*} installs the rock into a temporary tree"
  diag "$tmp/make.log"
  finish
fi

# The checks run in a new interpreter, with only the paths `luarocks path`
# gives for that tree, from a directory holding no stray fiberswap.so.
cat >"$tmp/check.lua" <<'EOF'
local tree = assert(arg[1])
local function check(name, cond, detail)
  print((cond and "ok - " or "not ok - ") .. name)
  if not cond and detail then print("# " .. tostring(detail)) end
end

local okreq, fs = pcall(require, "fiberswap")
check("require 'fiberswap' succeeds", okreq and type(fs) == "table", fs)
if not okreq then return end

-- Which file require found: the first cpath entry that exists.
local found
for template in package.cpath:gmatch("[^;]+") do
  local file = template:gsub("%?", "fiberswap")
  local f = io.open(file)
  if f then f:close(); found = file; break end
end
check("the module comes from the temporary tree",
      found and found:sub(1, #tree + 1) == tree .. "/", found)
check("_VERSION is a release number",
      type(fs._VERSION) == "string" and fs._VERSION:match("^%d+%.%d+%.%d+$"), fs._VERSION)

-- spawn runs the body at once; resume carries values both ways.
local co, ok1, a, b = fs.spawn(function(x, y)
  local z = fs.yield(x + y, x * y)
  return z * 2, "done"
end, 3, 4)
check("spawn returns the fiber and its first yield",
      type(co) == "thread" and ok1 == true and a == 7 and b == 12,
      table.concat({tostring(ok1), tostring(a), tostring(b)}, " "))
check("a spawned fiber that yielded is suspended and a fiber",
      fs.status(co) == "suspended" and fs.isfiber(co) == true, fs.status(co))
local ok2, r, s = fs.resume(co, 21)
check("resume returns what the body returns",
      ok2 == true and r == 42 and s == "done",
      table.concat({tostring(ok2), tostring(r), tostring(s)}, " "))
check("a returned fiber is dead", fs.status(co) == "dead", fs.status(co))
local ok3, msg = fs.resume(co)
check("resuming it again fails with Lua's message",
      ok3 == false and msg == "cannot resume dead coroutine", msg)

-- A table.sort comparator yields to the resumer, which answers it.
local sorter = fs.create(function(t)
  table.sort(t, function(x, y) return fs.yield(x, y) end)
  return t
end)
local asked = 0
local res = {fs.resume(sorter, {5, 3, 1, 4, 2})}
while res[1] and fs.status(sorter) == "suspended" do
  asked = asked + 1
  res = {fs.resume(sorter, res[2] < res[3])}
end
local sorted = res[1] and type(res[2]) == "table" and table.concat(res[2], " ")
check("a fiber yields from inside table.sort's comparator",
      res[1] == true and asked > 0 and sorted == "1 2 3 4 5",
      res[1] and sorted or res[2])

if rawget(_G, "jit") then -- LuaJIT's own default tells its headers were used
  check("the module was built against LuaJIT's headers (4 MiB default stack)",
        fs.stacksize() == 4 * 1024 * 1024, fs.stacksize())
end

local st = fs.stats()
print("# backend " .. tostring(st and st.backend) .. ", " ..
      (rawget(_G, "jit") and jit.version or _VERSION))
EOF

out="$tmp/check.out"
(cd "$tmp" && eval "$(luarocks --lua-version "$lv" --tree "$tree" path)" &&
   exec "$interp" "$tmp/check.lua" "$tree") >"$out" 2>&1
rc=$?
cat "$out"
p=$(grep -c '^ok - ' "$out") f=$(grep -c '^not ok - ' "$out")
passed=$((passed + p)) failed=$((failed + f))
if [ "$rc" -ne 0 ]; then
  bad "$interp ran the checks to the end (exit status $rc)"
elif [ "$p" -eq 0 ]; then
  bad "$interp ran any check"
fi
finish
