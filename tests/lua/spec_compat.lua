-- spec_compat.lua: the fiber behaviours every Lua version (5.1-5.4, LuaJIT) shares.
-- Written in the common subset of the languages, so one file runs on all five.
local H = require "harness"
local F = require "fiberswap"

local function pack(...) return {n = select("#", ...), ...} end

H.test("values go both ways, and yields cross sort, gsub and C frames", function()
  local co = F.create(function(a, b)
    local x = F.yield(a + b)
    local t = {3, 1, 2}
    table.sort(t, function(p, q) F.yield("cmp") return p < q end)
    local s = ("ab"):gsub(".", function(c) return F.yield(c) end)
    return x, table.concat(t, ","), s
  end)
  H.same(pack(F.resume(co, 1, 2)), pack(true, 3))
  H.same(pack(F.resume(co, "X")), pack(true, "cmp"))
  local r
  repeat r = pack(F.resume(co, "Y")) until F.status(co) == "dead"
  H.same(r, pack(true, "X", "1,2,3", "YY"))
end)

H.test("resuming a dead fiber or plain coroutine says so, as the built-in does", function()
  local co = F.create(function() end)
  F.resume(co)
  local p = coroutine.create(function() end)
  coroutine.resume(p)
  H.same(pack(F.resume(co)), pack(coroutine.resume(p)))
  H.same(pack(F.resume(p)), pack(coroutine.resume(p)))
end)

H.test("resuming a running or normal fiber fails with this version's words", function()
  -- What resuming itself, and then its resumer from inside, gives under lib.
  local function scenario(lib)
    local seen, outer = {}, nil
    outer = lib.create(function()
      seen.self = pack(lib.resume(outer))
      lib.resume(lib.create(function() seen.normal = pack(lib.resume(outer)) end))
    end)
    lib.resume(outer)
    return seen
  end
  local fiber, plain = scenario(F), scenario(coroutine)
  H.same(fiber.self, plain.self)
  H.same(fiber.normal, plain.normal)
end)

H.test("wrap raises with this version's position rule", function()
  local boom = function() error("boom") end
  local fw, pw = F.wrap(boom), coroutine.wrap(boom)
  local _, fe = pcall(fw)
  local _, pe = pcall(pw)
  H.eq(fe, pe)
  local n42 = function() error(42) end
  local fn, pn = F.wrap(n42), coroutine.wrap(n42)
  H.eq(select(2, pcall(fn)), select(2, pcall(pn)))
end)

H.test("the built-in library never runs a fiber", function()
  local ran = false
  local co = F.create(function() ran = true F.yield() end)
  H.eq(coroutine.resume(co), false)
  H.eq(ran, false)
  F.resume(co)
  H.eq(coroutine.resume(co), false)
  H.eq(F.status(co), "suspended")
  F.close(co)
  H.eq(F.status(co), "dead")
end)

H.test("errors come back as false and the same object", function()
  local e = {}
  H.same(pack(F.resume(F.create(function() error(e) end))), pack(false, e))
end)

H.test("yield outside any coroutine fails as the built-in yield does", function()
  H.same(pack(pcall(F.yield)), pack(pcall(coroutine.yield)))
end)

H.test("spawn, isfiber and the default stack size", function()
  H.same(pack(select(2, F.spawn(function(...) return select("#", ...) end, 1, nil, 3))),
         pack(true, 3))
  H.eq(F.isfiber(F.create(print)), true)
  H.eq(F.isfiber(coroutine.create(function() end)), false)
  -- README "Lua versions": 512 KiB on 5.4, 4 MiB on LuaJIT, 2 MiB elsewhere
  H.eq(F.stacksize(), _VERSION == "Lua 5.4" and 512 * 1024 or
                      rawget(_G, "jit") and 4 * 1024 * 1024 or 2 * 1024 * 1024)
end)

H.test("suspended fibers that become garbage give their stacks back", function()
  local base = F.stats().fibers
  local held = {}
  for i = 1, 50 do
    held[i] = F.create(function() table.sort({2, 1}, function(a, b) F.yield() return a < b end) end)
    F.resume(held[i])
  end
  H.eq(F.stats().fibers, base + 50)
  held = nil -- luacheck: ignore 311
  collectgarbage() collectgarbage() collectgarbage()
  H.eq(F.stats().fibers, base)
end)

-- Regression: with the record cache full (256 slots), a thread the module
-- does not know (a dead plain coroutine) used to be answered with the cached
-- record of whatever fiber shared its slot.
H.test("threads the module does not know are never taken for a parked fiber", function()
  local parked = {}
  for i = 1, 300 do
    parked[i] = F.create(function() F.yield() return "fiber " .. i end)
    F.resume(parked[i])
  end
  for _ = 1, 600 do
    local co = coroutine.create(function() end)
    coroutine.resume(co)
    H.eq(F.status(co), "dead")
    H.same(pack(F.resume(co)), pack(false, "cannot resume dead coroutine"))
    H.eq(F.isfiber(co), false)
  end
  for i = 1, 300 do H.eq(F.status(parked[i]), "suspended") end
  for i = 1, 300 do H.same(pack(F.resume(parked[i])), pack(true, "fiber " .. i)) end
end)

-- LuaJIT keeps per-VM state (the running lua_State, cur_L) that a stack
-- switch inside a C function must not leave stale: hot loops compiled on both
-- sides take side exits on every switch.  Runs everywhere; matters on LuaJIT.
H.test("JIT-compiled loops with side exits on both sides of every switch", function()
  local function churn(seed, n)
    local acc = 0
    for i = 1, n do
      local k = (i + seed) % 3
      local v = k == 0 and tostring(i) or (k == 1 and {i} or i)
      if type(v) == "string" then acc = acc + #v
      elseif type(v) == "table" then acc = acc + v[1]
      else acc = acc + v end
    end
    return acc
  end
  local N = 20000
  local co = F.create(function()
    local total = 0
    for k = 1, N do
      total = total + churn(k, 7)
      local got = F.yield(total)
      if got ~= k then error("fiber got " .. tostring(got) .. ", want " .. k) end
    end
    return "done", total
  end)
  local ok, last = F.resume(co)
  for k = 1, N - 1 do
    ok, last = F.resume(co, k)
    if not ok then break end
    H.eq(churn(-k, 5), churn(-k, 5))
  end
  H.eq(ok, true)
  H.same(pack(F.resume(co, N)), pack(true, "done", last))
  local jit = rawget(_G, "jit") -- LuaJIT only
  if jit then -- the loops really ran as compiled traces, on both sides
    H.eq(jit.status(), true)
    H.ok(require("jit.util").traceinfo(1) ~= nil, "no trace was compiled")
  end
end)

H.test("an error raised in JIT-compiled fiber code comes back as false, err", function()
  local co = F.create(function()
    local s = 0
    for i = 1, 1000 do
      s = s + i
      if i % 100 == 0 then F.yield(s) end
    end
    error("after loop " .. s)
  end)
  local last
  repeat last = pack(F.resume(co)) until F.status(co) == "dead"
  H.eq(last[1], false)
  H.ok(tostring(last[2]):find("after loop 500500", 1, true), tostring(last[2]))
end)

-- Resume a fresh plain coroutine with `resume` from under `depth` nested
-- pcalls (each a C call), deeper each time until the resume is refused
-- (Lua's "C stack overflow"; LuaJIT has no such limit), then once more
-- from the top.  Returns what happened, as a list of strings.
local function refusal_transcript(resume)
  local unpack = table.unpack or rawget(_G, "unpack")
  local co, log = nil, {}
  local function nest(d)
    if d == 0 then return resume(co, "arg") end
    local r = pack(pcall(nest, d - 1))
    return unpack(r, 2, r.n)
  end
  for depth = 150, 260 do
    co = coroutine.create(function(...) return "ran", ... end)
    local r = pack(pcall(nest, depth))
    if r[1] and r[2] == false then
      log[#log + 1] = "refused at " .. depth .. ": " .. tostring(r[3])
      break
    end
  end
  log[#log + 1] = coroutine.status(co)
  log[#log + 1] = table.concat({tostring(select(1, resume(co, "again"))),
                                tostring(select(2, resume(co)))}, " ")
  return log
end

H.test("a resume refused for C stack overflow leaves the coroutine as the built-in does", function()
  -- A regression: the refused thread once kept a marker that its next
  -- resume called instead of its body.
  H.same(refusal_transcript(F.resume), refusal_transcript(coroutine.resume))
end)

H.test("close of a failed fiber returns false and its error once, nil errors too", function()
  for _, err in ipairs({"boom", 42}) do
    local co = F.create(function() error(err, 0) end)
    H.same(pack(F.resume(co)), pack(false, err))
    H.same(pack(F.close(co)), pack(false, err))
    H.same(pack(F.close(co)), pack(true))
  end
  local co = F.create(function() error(nil) end)
  H.same(pack(F.resume(co)), pack(false, nil))
  H.same(pack(F.close(co)), pack(false, nil))
  H.same(pack(F.close(co)), pack(true))
  -- and plain coroutines that failed under this module's resume
  local t = {}
  co = coroutine.create(function() error(t) end)
  F.resume(co)
  H.same(pack(F.close(co)), pack(false, t))
end)

H.done()
