-- bench_lua.lua: fiberswap against plain Lua coroutines, side by side.
-- Every case runs against its plain counterpart in the same process,
-- interleaved run by run; medians of the runs are compared as ratios.
--
-- Usage: lua bench_lua.lua [RUNS [N]]   (defaults 9 runs of 1,000,000)
-- Run pinned (taskset -c 1) on a quiet machine; `make bench` does.

local F = require "fiberswap"
local runs = tonumber(arg and arg[1]) or 9
local N = tonumber(arg and arg[2]) or 1000000
local clock = os.clock

-- Each case: a function(lib, n) returning elapsed seconds for n operations.
local function roundtrip0(lib, n)
  local resume, yield = lib.resume, lib.yield
  local co = lib.create(function() while true do yield() end end)
  resume(co)
  local t0 = clock()
  for _ = 1, n do resume(co) end
  return clock() - t0
end

local function roundtrip3(lib, n)
  local resume, yield = lib.resume, lib.yield
  local co = lib.create(function(a, b, c)
    while true do a, b, c = yield(c, b, a) end
  end)
  resume(co, 1, 2, 3)
  local t0 = clock()
  for i = 1, n do
    local ok, x = resume(co, i, "s", true)
    if x ~= true or not ok then error("bad round trip") end
  end
  return clock() - t0
end

-- Fibers: spawn (create + resume in one call); plain: create, then resume.
local function spawn_finish(lib, n)
  local body = function(x) return x end
  local t0
  if lib.spawn then
    local spawn = lib.spawn
    t0 = clock()
    for i = 1, n do spawn(body, i) end
  else
    local create, resume = lib.create, lib.resume
    t0 = clock()
    for i = 1, n do resume(create(body), i) end
  end
  return clock() - t0
end

local function create_finish(lib, n)
  local create, resume = lib.create, lib.resume
  local body = function(x) return x end
  local t0 = clock()
  for i = 1, n do resume(create(body), i) end
  return clock() - t0
end

-- A whole life with one suspension: create, resume to the body's yield,
-- resume to its end.
local function create_yield_finish(lib, n)
  local create, resume, yield = lib.create, lib.resume, lib.yield
  local body = function(x) return yield(x) end
  local t0 = clock()
  for i = 1, n do
    local co = create(body)
    resume(co, i)
    resume(co, i)
  end
  return clock() - t0
end

local function wrap_roundtrip(lib, n)
  local f = lib.wrap(function() while true do lib.yield(1) end end)
  f()
  local t0 = clock()
  for _ = 1, n do f() end
  return clock() - t0
end

local cases = {
  {"round trip, no values", roundtrip0, 1, "<= 0.7 (goal 0.6)"},
  {"round trip, 3 values each way", roundtrip3, 1, "<= 0.7 (goal 0.6)"},
  {"wrap round trip", wrap_roundtrip, 1, ""},
  {"spawn to finish (plain: create+resume)", spawn_finish, 10, "<= 1.5"},
  {"create + resume to finish", create_finish, 10, ""},
  {"create, yield once, finish", create_yield_finish, 10, ""},
}

local function median(t)
  table.sort(t)
  return t[(#t + 1) // 2]
end

io.stderr:write(("fiberswap %s on %s, backend %s, guard %s: %d runs of %d\n"):format(
  F._VERSION, _VERSION, F.stats().backend, F.stats().guard, runs, N))
local results = {}
for r = 1, runs do
  io.stderr:write(("run %d/%d\r"):format(r, runs))
  for i, c in ipairs(cases) do
    local n = N // c[3]
    results[i] = results[i] or {plain = {}, fiber = {}}
    collectgarbage()
    results[i].plain[r] = c[2](coroutine, n) / n
    collectgarbage()
    results[i].fiber[r] = c[2](F, n) / n
  end
end
io.stderr:write("\n")
print(("%-40s %12s %12s %7s  %s"):format("case", "plain ns", "fiber ns", "ratio", "target"))
for i, c in ipairs(cases) do
  local p, f = median(results[i].plain) * 1e9, median(results[i].fiber) * 1e9
  print(("%-40s %12.1f %12.1f %6.2fx  %s"):format(c[1], p, f, f / p, c[4]))
end
