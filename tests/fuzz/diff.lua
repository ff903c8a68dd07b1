-- diff.lua: differential fuzzer, built-in `coroutine` against fiberswap.
--
--   lua5.4 tests/fuzz/diff.lua [first_seed] [count]
--
-- Each seed's program (tests/fuzz/gen.lua) runs twice in one process, once
-- with lib = coroutine and once with lib = require "fiberswap", recording a
-- trace: every value the program logs (results of create/resume/yield/
-- status/wrap/close/isyieldable/running, pcall results, error values,
-- __close calls, print output), with threads, tables and functions replaced
-- by ids in order of first appearance. Differing traces are a divergence:
-- it is shrunk (statements deleted, bodies spliced) while the first
-- difference keeps its shape, and printed with both traces.
--
-- Seeds run in batches in child processes (`--child first count`), so a
-- crash or a hang costs one seed, which is then reported as a divergence.
-- Other modes: `--show seed` prints a program; `--run file` runs a program
-- file under both libraries and prints both traces (exit 1 if they differ).
-- Environment: FUZZ_BATCH (seeds per child, default 250), FUZZ_JOBS (parallel
-- children, default 2), FUZZ_TIMEOUT (seconds per child, default 120),
-- FUZZ_PROBE / FUZZ_MIXED (probabilities of __close probes / of plain
-- coroutines among created ones), FUZZ_STRICT=1 (also report the README's
-- intended differences, which are otherwise looked past: messages that
-- differ only in 'coroutine.f' vs 'fiberswap.f', and "C stack overflow"
-- at another depth, as programs then nest coroutines past Lua's C-call
-- limit instead of at most 190 deep).

local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
package.path = here .. "/?.lua;" .. package.path
if not os.getenv("LUA_CPATH") then -- the Makefile's build, unless told
  package.cpath = here .. "/../../build/asm/lua5.4/?.so;" .. package.cpath
end
local gen = dofile(here .. "/gen.lua")

local MAXTRACE = 5000
local STRICT = os.getenv("FUZZ_STRICT") == "1"
local NAMES = not STRICT -- look past 'coroutine.f' vs 'fiberswap.f'
local OPTS = {probe = tonumber(os.getenv("FUZZ_PROBE")), mixed = tonumber(os.getenv("FUZZ_MIXED")),
              shallow = not STRICT}
local PRELUDE = gen.prelude:gsub("%-%-[^\n]*", ""):gsub("\n%s*", " ")

---------------------------------------------------------------------------
-- Running one program with one library.

local BIG = {}
for i = 1, 100000 do BIG[i] = i end

local function run(src, lib)
  local trace = {}
  local ids, next_id = setmetatable({}, {__mode = "k"}), {}
  local main = coroutine.running()
  local function ser(v)
    local t = type(v)
    if t == "string" then return string.format("%q", v)
    elseif t == "number" then
      return math.type(v) == "integer" and tostring(v) or string.format("%.17g", v)
    elseif t == "nil" or t == "boolean" then return tostring(v)
    elseif v == main then return "thread:main"
    end
    local id = ids[v]
    if not id then
      next_id[t] = (next_id[t] or 0) + 1
      id = t .. ":" .. next_id[t]
      ids[v] = id
    end
    return id
  end
  local function L(tag, ...)
    if #trace >= MAXTRACE then error("trace budget exhausted", 0) end
    local parts = {tag}
    local n = select("#", ...)
    if n > 20 then   -- long lists: the count, the first and the last values
      local t = table.pack(...)
      parts[2] = "<" .. n .. " values>"
      for i = 1, 5 do parts[#parts + 1] = ser(t[i]) end
      parts[#parts + 1] = "..."
      for i = n - 4, n do parts[#parts + 1] = ser(t[i]) end
      trace[#trace + 1] = table.concat(parts, " ")
      return ...
    end
    for i = 1, n do parts[#parts + 1] = ser((select(i, ...))) end
    trace[#trace + 1] = table.concat(parts, " ")
    return ...
  end
  local env = setmetatable({
    lib = lib, plaincreate = coroutine.create, L = L, BIG = BIG,
    print = function(...) L("print", ...) end,
  }, {__index = _G})
  -- the prelude shares line 1 with the program, so line numbers match it
  local chunk, err = load(PRELUDE .. " " .. src, "=prog", "t", env)
  if not chunk then return {"LOAD " .. err} end
  local ok, e = pcall(chunk)
  if #trace < MAXTRACE + 1 then trace[#trace + 1] = "END " .. tostring(ok) .. " " .. ser(e) end
  chunk, env = nil, nil -- luacheck: ignore 311 (dropped so the collections below free them)
  collectgarbage(); collectgarbage()
  return trace
end

local fiberswap = require "fiberswap"

local function norm(line)
  if not line then return "<end of trace>" end
  return (line:gsub("prog:%d+:", "prog:N:"):gsub("%d+", "#"))
end

-- Returns nil when the traces agree, DOCUMENTED when they part at a
-- difference the README documents, else (signature, i, trace_a, trace_b).
local DOCUMENTED = "documented difference"
local function compare(src)
  local a = run(src, coroutine)
  local b = run(src, fiberswap)
  for i = 1, math.max(#a, #b) do
    local renamed = a[i] and b[i] and a[i] ~= b[i] and a[i]:gsub("'coroutine%.", "'fiberswap.") == b[i]
    if renamed and NAMES then -- luacheck: ignore 542
      -- not FUZZ_STRICT: only the module name in a message differs
    elseif renamed then
      return "function name in a message: 'coroutine.*' <> 'fiberswap.*'", i, a, b
    elseif a[i] ~= b[i] and not STRICT and (a[i] or ""):find("C stack overflow", 1, true)
           and not (b[i] or ""):find("C stack overflow", 1, true) then
      -- README: each fiber has its own C-call budget, so where a plain
      -- chain overflows a fiber chain may go on; the traces part here.
      return DOCUMENTED
    elseif a[i] ~= b[i] and ((a[i] or ""):find("C stack overflow", 1, true)
                             or (b[i] or ""):find("C stack overflow", 1, true)) then
      return "nested resumes: \"C stack overflow\" at a different depth", i, a, b
    elseif a[i] ~= b[i] then
      local function untag(l) return (l:gsub("^%S+ ", "", 1)) end
      return untag(norm(a[i])) .. "  <>  " .. untag(norm(b[i])), i, a, b
    end
  end
end

---------------------------------------------------------------------------
-- Shrinking: delete statements, splice compound statements into their
-- parent, as long as `still(prog)` holds.

local function copy(b)
  local r = {}
  for i, s in ipairs(b) do
    r[i] = s.text and {text = s.text} or {head = s.head, body = copy(s.body), tail = s.tail}
  end
  return r
end

-- Every statement position: {block, index}, outermost first.
local function positions(b, out)
  out = out or {}
  for i, s in ipairs(b) do
    out[#out + 1] = {b, i}
    if s.body then positions(s.body, out) end
  end
  return out
end

local function shrink(prog, still)
  local changed = true
  local budget = 3000
  while changed and budget > 0 do
    changed = false
    local pos = positions(prog)
    for k = #pos, 1, -1 do
      local b, i = pos[k][1], pos[k][2]
      local s = b[i]
      if s and budget > 0 then
        -- try deleting
        table.remove(b, i)
        budget = budget - 1
        if still(prog) then changed = true
        else
          table.insert(b, i, s)
          -- try splicing a compound statement's body in its place
          if s.body and not s.head:match("^function f%d") then
            table.remove(b, i)
            for j = #s.body, 1, -1 do table.insert(b, i, s.body[j]) end
            budget = budget - 1
            if still(prog) then changed = true
            else
              for _ = 1, #s.body do table.remove(b, i) end
              table.insert(b, i, s)
            end
          end
        end
      end
      if changed then break end
    end
  end
  return prog
end

---------------------------------------------------------------------------
-- Reporting.

local function show_traces(i, a, b, out)
  local n = math.max(#a, #b)
  out[#out + 1] = "  --- trace (coroutine | fiberswap), first difference at line " .. i
  for k = 1, n do
    if a[k] == b[k] then
      out[#out + 1] = string.format("    %3d   %s", k, a[k])
    else
      out[#out + 1] = string.format("    %3d < %s", k, a[k] or "<none>")
      out[#out + 1] = string.format("    %3d > %s", k, b[k] or "<none>")
    end
  end
end

local function report(seed, prog, sig, i, a, b)
  local out = {"DIVERGENCE seed " .. seed, "  signature: " .. sig}
  local small = shrink(copy(prog), function(p)
    local ok, s = pcall(compare, gen.render(p, false))
    return ok and s == sig
  end)
  local ssrc = gen.render(small, false)
  local _, i2, a2, b2 = compare(ssrc)
  out[#out + 1] = "  --- minimal program (run after gen.lua's prelude):"
  for line in ssrc:gmatch("[^\n]+") do out[#out + 1] = "    | " .. line end
  show_traces(i2 or i, a2 or a, b2 or b, out)
  return table.concat(out, "\n"), sig
end

---------------------------------------------------------------------------
-- Modes.

local mode = arg[1]

if mode == "--show" then
  io.write(gen.render(gen.generate(tonumber(arg[2]), OPTS), false))
  return
end

if mode == "--run" then
  local f = assert(io.open(arg[2]))
  local src = f:read("a"); f:close()
  local a, b = run(src, coroutine), run(src, fiberswap)
  local out, differ = {}, false
  for k = 1, math.max(#a, #b) do if a[k] ~= b[k] then differ = true end end
  show_traces(0, a, b, out)
  print(table.concat(out, "\n"))
  os.exit(differ and 1 or 0)
end

if mode == "--child" then
  local first, count = tonumber(arg[2]), tonumber(arg[3])
  io.stdout:setvbuf("line")
  for seed = first, first + count - 1 do
    print("BEGIN " .. seed)
    local prog = gen.generate(seed, OPTS)
    local src = gen.render(prog, false)
    local ok, sig, i, a, b = pcall(compare, src)
    if not ok then
      print("ERROR " .. seed .. " harness error: " .. tostring(sig))
    elseif sig == DOCUMENTED then
      print("DOC " .. seed)
    elseif sig then
      -- run it again: a divergence that comes and goes is flaky
      local ok2, sig2 = pcall(compare, src)
      if not (ok2 and sig2 == sig) then sig = "flaky: " .. sig end
      local text, s = report(seed, prog, sig, i, a, b)
      print("SIG " .. s)
      print(text)
      print("FAIL " .. seed)
    else
      print("PASS " .. seed)
    end
  end
  print("DONE")
  return
end

-- Parent: batches of seeds in child processes, FUZZ_JOBS at a time.
local first = tonumber(arg[1]) or 1
local count = tonumber(arg[2]) or 2000
local batch = tonumber(os.getenv("FUZZ_BATCH")) or 250
local jobs = tonumber(os.getenv("FUZZ_JOBS")) or 2
local tmo = tonumber(os.getenv("FUZZ_TIMEOUT")) or 120
local lua = "lua5.4"
do  -- the interpreter running us
  local i = -1
  while arg[i - 1] do i = i - 1 end
  lua = arg[i] or lua
end
local self = arg[0]
local tmp = os.tmpname()

local passed, failed, documented = 0, 0, 0
local sigs, sig_order = {}, {}
local t0 = os.time()

local function note_failure(seed, sig, text)
  failed = failed + 1
  if not sigs[sig] then
    sigs[sig] = {seeds = {}, text = text}
    sig_order[#sig_order + 1] = sig
    io.write(text, "\n\n")
    io.flush()
  end
  table.insert(sigs[sig].seeds, seed)
end

-- Run the seeds [a, b] (possibly across several children after crashes),
-- with `nj` children in flight over disjoint ranges.
local pending = {}
do
  local s = first
  while s <= first + count - 1 do
    local n = math.min(batch, first + count - s)
    pending[#pending + 1] = {s, n}
    s = s + n
  end
end

local function start(range, idx)
  local out = tmp .. "." .. idx
  local cmd = string.format("timeout %d %s %s --child %d %d > %s 2>&1; echo \"RC $?\" >> %s",
    tmo, lua, self, range[1], range[2], out, out)
  return {range = range, out = out, cmd = cmd}
end

local function collect(job)
  local f = io.open(job.out)
  local lines = {}
  if f then for l in f:lines() do lines[#lines + 1] = l end f:close() end
  os.remove(job.out)
  local last_begin, buf, sig = nil, {}, nil
  local rc
  for _, l in ipairs(lines) do
    local k, v = l:match("^(%u+) (.*)$")
    if k == "BEGIN" then last_begin = tonumber(v); buf = {}; sig = nil
    elseif k == "PASS" then passed = passed + 1; last_begin = nil
    elseif k == "DOC" then passed, documented = passed + 1, documented + 1; last_begin = nil
    elseif k == "FAIL" then
      note_failure(tonumber(v), sig, table.concat(buf, "\n"))
      last_begin = nil
    elseif k == "SIG" then sig = v
    elseif k == "ERROR" then
      local seed = tonumber(v:match("^%d+"))
      note_failure(seed, "harness error", l)
      last_begin = nil
    elseif k == "RC" then rc = tonumber(v)
    elseif l ~= "DONE" then buf[#buf + 1] = l
    end
  end
  if not last_begin and rc ~= 0 then
    -- every seed ran, but the child then failed (a leak report at exit, say)
    note_failure(job.range[1], "child exit status " .. tostring(rc) .. " after its last seed",
      string.format("DIVERGENCE seeds %d-%d\n  signature: child exit status %s\n  output:\n    %s",
        job.range[1], job.range[1] + job.range[2] - 1, tostring(rc), table.concat(buf, "\n    ")))
  end
  if last_begin then
    -- the child died (crash or timeout) while running this seed
    local text = string.format("DIVERGENCE seed %d\n  signature: child died (exit status %s)" ..
      "\n  reproduce: %s %s --show %d > /tmp/p.lua; %s %s --run /tmp/p.lua\n  output:\n    %s",
      last_begin, tostring(rc), lua, self, last_begin, lua, self, last_begin,
      table.concat(buf, "\n    "))
    note_failure(last_begin, "child died (exit " .. tostring(rc) .. ")", text)
    local a, n = job.range[1], job.range[2]
    if last_begin < a + n - 1 then
      table.insert(pending, 1, {last_begin + 1, a + n - 1 - last_begin})
    end
  end
end

local nextidx = 0
while #pending > 0 do
  local running = {}
  local cmds = {}
  for _ = 1, jobs do
    local r = table.remove(pending, 1)
    if not r then break end
    nextidx = nextidx + 1
    local j = start(r, nextidx)
    running[#running + 1] = j
    cmds[#cmds + 1] = "( " .. j.cmd .. " ) &"
  end
  os.execute(table.concat(cmds, "\n") .. "\nwait")
  for _, j in ipairs(running) do collect(j) end
end

local secs = math.max(os.time() - t0, 1)
if #sig_order > 0 then
  print("distinct divergences:")
  for _, s in ipairs(sig_order) do
    local seeds = sigs[s].seeds
    local list = {}
    for k = 1, math.min(#seeds, 10) do list[k] = seeds[k] end
    print(string.format("  %5d x  %s\n          seeds %s%s", #seeds, s,
      table.concat(list, " "), #seeds > 10 and " ..." or ""))
  end
end
io.stderr:write(string.format("%d seeds in %d s (%.1f seeds/s wall)\n",
  passed + failed, secs, (passed + failed) / secs))
print(string.format("# %d of the passed programs agreed up to where a chain of plain coroutines " ..
  "ran out of C calls and fibers went on (README: each fiber has its own C-call budget)", documented))
print(string.format("fuzz: %d passed, %d failed", passed, failed))
os.exit(failed == 0 and 0 or 1)
