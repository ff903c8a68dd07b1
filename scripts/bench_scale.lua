-- bench_scale.lua: a million suspended fibers at once, against a million
-- plain coroutines, each in a fresh process, interleaved run by run.
--
-- Usage: lua bench_scale.lua [N [RUNS [BENCH_SCALE_C]]]
--   N              fibers (and plain coroutines) held at once; 1,000,000
--   RUNS           processes of each kind; medians are reported; 3
--   BENCH_SCALE_C  the C program scripts/bench_scale.c, built by make, for
--                  the C library's own figures and the kernel's page cost
-- `make bench-scale` runs it pinned to CPU 1.
--
-- Each fiber is created, resumed once (so it holds a frame on its own
-- guarded stack and a Lua thread) and left suspended; then all are resumed
-- to completion and collected.  Figures: CPU time per object (user + system,
-- so page faults count), RSS per object, /proc/self/maps lines added.

local N = tonumber(arg[1]) or 1000000
local RUNS = tonumber(arg[2]) or 3
local CBENCH = arg[3]

local function rss_kib()
  for line in io.lines("/proc/self/status") do
    local v = line:match("^VmRSS:%s+(%d+)")
    if v then return tonumber(v) end
  end
end

local function maps()
  local n = 0
  for _ in io.lines("/proc/self/maps") do n = n + 1 end
  return n
end

-- One child: hold n objects of `kind` ("fiber" or "plain"), print figures.
local function child(kind, n)
  local lib = kind == "plain" and coroutine or require "fiberswap"
  local create, resume, yield = lib.create, lib.resume, lib.yield
  local function body(x) return yield(x) + 1 end
  local held = {}
  for i = 1, n do held[i] = false end -- the table's own growth is not timed
  collectgarbage()
  collectgarbage()
  local r0, m0, t0 = rss_kib(), maps(), os.clock()
  for i = 1, n do
    local co = create(body)
    local ok, v = resume(co, i)
    if not ok or v ~= i then error("start " .. i .. ": " .. tostring(v)) end
    held[i] = co
  end
  local t1 = os.clock()
  collectgarbage()
  local r1, m1 = rss_kib(), maps()
  local t2 = os.clock()
  for i = 1, n do
    local ok, v = resume(held[i], i)
    if not ok or v ~= i + 1 then error("finish " .. i .. ": " .. tostring(v)) end
  end
  local t3 = os.clock()
  held = nil -- luacheck: ignore (the last reference goes)
  collectgarbage()
  collectgarbage()
  print(("create_ns %.1f"):format((t1 - t0) / n * 1e9))
  print(("finish_ns %.1f"):format((t3 - t2) / n * 1e9))
  print(("rss_kib %.3f"):format((r1 - r0) / n))
  print(("maps_added %d"):format(m1 - m0))
  print(("maps_after %d"):format(maps() - m0))
  if kind == "fiber" then
    print(("guard %s"):format(lib.stats().guard))
    print(("stacksize %d"):format(lib.stacksize()))
    print(("live_after %d"):format(lib.stats().fibers))
  end
end

if arg[1] == "--child" then
  child(arg[2], tonumber(arg[3]))
  os.exit(0)
end

-- ---------------------------------------------------------------- parent
local function run(cmd)
  local p = assert(io.popen(cmd .. " 2>&1"))
  local out = p:read("*a")
  local ok, how, code = p:close()
  if ok ~= true and code ~= 0 then
    error(("%s failed (%s %s):\n%s"):format(cmd, tostring(how), tostring(code), out))
  end
  local t = {}
  for k, v in out:gmatch("(%S+) (%S+)\n") do t[k] = tonumber(v) or v end
  return t
end

local function median(list)
  table.sort(list)
  return list[(#list + 1) // 2]
end

local interp = arg[-1] or "lua5.4"
local me = arg[0]
local results = {fiber = {}, plain = {}, c = {}}
io.stderr:write(("bench-scale: %d objects at once, %d runs of each (%s)\n"):format(N, RUNS, _VERSION))
for r = 1, RUNS do
  for _, kind in ipairs({"plain", "fiber"}) do
    io.stderr:write(("  run %d/%d: %s ...\n"):format(r, RUNS, kind))
    results[kind][r] = run(("%s %s --child %s %d"):format(interp, me, kind, N))
  end
  if CBENCH then
    io.stderr:write(("  run %d/%d: C library ...\n"):format(r, RUNS))
    results.c[r] = run(("%s %d %d"):format(CBENCH, N, results.fiber[r].stacksize))
  end
end

local function med(kind, key)
  local list = {}
  for r = 1, RUNS do list[r] = results[kind][r][key] end
  return median(list)
end

local f = results.fiber[1]
print(("%d suspended at once; %s guards; Lua fibers' stack %d KiB; medians of %d runs")
  :format(N, f.guard, f.stacksize // 1024, RUNS))
print(("%-34s %12s %12s %8s  %s"):format("", "plain", "fiber", "ratio", "goal"))
local function row(name, key, fmt, goal)
  local pv, fv = med("plain", key), med("fiber", key)
  print(("%-34s %12s %12s %7.2fx  %s"):format(name, fmt:format(pv), fmt:format(fv), fv / pv, goal))
end
row("create + first resume, ns each", "create_ns", "%.0f", "<= 2x")
row("resume to finish, ns each", "finish_ns", "%.0f", "")
row("RSS per suspended object, KiB", "rss_kib", "%.2f", "fiber <= 6 KiB")
print(("%-34s %12d %12d %8s  %s"):format("mappings added while held", med("plain", "maps_added"),
  med("fiber", "maps_added"), "", "no growth per fiber"))
print(("%-34s %12d %12d"):format("mappings left after collection", med("plain", "maps_after"),
  med("fiber", "maps_after")))
print(("%-34s %12s %12d"):format("fibers still live after collection", "", med("fiber", "live_after")))
if CBENCH then
  print(("C library, %d fibers of the same stack size:"):format(N))
  print(("  fsw_create + first resume      %8.0f ns each"):format(med("c", "c_create_ns")))
  print(("  resume to finish + destroy     %8.0f ns each"):format(med("c", "c_finish_ns")))
  print(("  mappings added while held      %8d"):format(med("c", "c_maps_added")))
  print(("  kernel: one fresh page         %8.0f ns (the floor: every fiber needs a page)")
    :format(med("c", "page_ns")))
end
