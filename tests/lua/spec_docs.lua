-- spec_docs.lua: what README.md promises about the Lua module, checked.
-- Each test runs a README example or checks a behaviour the README states.
-- Runs on Lua 5.1-5.4 and LuaJIT 2.1: where the README's "Lua versions"
-- section documents a difference, the test compares with that version's
-- built-in library, checks what that section says instead, or prints a line
-- "# skipped on <version>: <reason>".
local H = require "harness"
local fiberswap = require "fiberswap"
local builtin = coroutine

local function pack(...) return {n = select("#", ...), ...} end

local JIT = rawget(_G, "jit") -- LuaJIT only
local VERSION = JIT and JIT.version or _VERSION
local LUA51 = _VERSION == "Lua 5.1" and not JIT -- PUC-Rio Lua 5.1
local LUA54 = _VERSION == "Lua 5.4"

-- Print why part of a test does not run on this version.
local function skip(reason)
  print("# skipped on " .. VERSION .. ": " .. reason)
end

-- A message split into whether it carries a "chunk:line: " position and the
-- text after it.  LuaJIT puts the position of the Lua function that called
-- yield in front of its refusal; 5.1-5.4 do not.
local function split(msg)
  local text = type(msg) == "string" and msg:match("^[^\n]-:%d+: (.*)$")
  if text then return true, text end
  return false, msg
end

-- The opening example of "The Lua module", verbatim but for its print.
H.test("the README's opening example sorts by asking the resumer", function()
  local coroutine = require "fiberswap" -- luacheck: ignore 431
  local co = coroutine.create(function(t)
    table.sort(t, function(a, b) return coroutine.yield(a, b) end)
    return t
  end)
  local _, a, b = coroutine.resume(co, {3, 1, 2})
  while coroutine.status(co) == "suspended" do
    _, a, b = coroutine.resume(co, a < b)
  end
  H.eq(table.concat(a, " "), "1 2 3")
end)

-- The README's close example: to-be-closed variables are Lua 5.4 syntax, so
-- it is compiled only where load accepts it (5.1's load takes no string).
local CLOSE_EXAMPLE = (rawget(_G, "loadstring") or load)([[
  local fiberswap, log = ...
  return fiberswap.create(function()
    local _ <close> = setmetatable({}, {__close = function() log[#log + 1] = "closed" end})
    fiberswap.yield()
  end)
]], "=close example")

H.test("the per-function examples give what the README shows", function()
  local co = fiberswap.create(function(x) return x * 2 end, 64 * 1024)
  H.same(pack(fiberswap.resume(co, 21)), pack(true, 42))
  H.same(pack(fiberswap.resume(co)),
         pack(false, "cannot resume dead coroutine"))
  H.eq(fiberswap.status(co), "dead")
  local _, ok, v = fiberswap.spawn(function(x) fiberswap.yield(x + 1) end, 41)
  H.eq(ok, true)
  H.eq(v, 42)
  local seen
  fiberswap.spawn(function()
    table.sort({2, 1}, function(p, q) seen = fiberswap.isyieldable() return p < q end)
  end)
  H.eq(seen, true)
  local gen = fiberswap.wrap(function() for i = 1, 3 do fiberswap.yield(i) end end)
  H.same(pack(gen(), gen(), gen()), pack(1, 2, 3))
  H.eq(fiberswap.isfiber(fiberswap.create(print)), true)
  -- README ("Lua versions"): 5.1's own coroutine.create refuses C functions
  -- such as print, so there the plain coroutine runs a Lua function.
  H.eq(fiberswap.isfiber(builtin.create(LUA51 and function() end or print)), false)
  if CLOSE_EXAMPLE then
    local log = {}
    local c = CLOSE_EXAMPLE(fiberswap, log)
    fiberswap.resume(c)
    H.eq(fiberswap.close(c), true)
    H.eq(log[1], "closed")
  else
    -- What "Lua versions" says of close before 5.4 instead: the fiber's
    -- stack goes back and it is dead, its thread keeps its frames (so the
    -- built-in library calls it normal), and a suspended plain coroutine
    -- cannot be closed.
    skip("the close example: to-be-closed variables need Lua 5.4; " ..
         "close is checked as 'Lua versions' describes it before 5.4")
    local before = fiberswap.stats().fibers
    local c = fiberswap.create(function() fiberswap.yield() end)
    fiberswap.resume(c)
    H.eq(fiberswap.stats().fibers, before + 1, "live fibers while suspended")
    H.eq(fiberswap.close(c), true)
    H.eq(fiberswap.stats().fibers, before, "live fibers after close")
    H.eq(fiberswap.status(c), "dead")
    H.eq(builtin.status(c), "normal")
    local p = builtin.create(function() builtin.yield() end)
    builtin.resume(p)
    H.raises("cannot close a plain coroutine before Lua 5.4 (close works on fibers)",
             fiberswap.close, p)
  end
end)

-- How this version's built-in library refuses to resume a normal
-- coroutine (one that resumed another): README "Lua versions", "Messages
-- follow each version".
local function normal_refusal()
  local msg, outer
  outer = builtin.create(function()
    builtin.resume(builtin.create(function() msg = select(2, builtin.resume(outer)) end))
  end)
  builtin.resume(outer)
  return msg
end

H.test("the built-in library never runs a fiber, as the README says", function()
  local ran = false
  local co = fiberswap.create(function() ran = true fiberswap.yield() end)
  H.same(pack(builtin.resume(co)),
         pack(false, "cannot resume dead coroutine"))
  H.eq(builtin.status(co), "dead")
  H.eq(ran, false)
  fiberswap.resume(co)
  -- A started fiber is a normal coroutine to the built-in library, which
  -- refuses it in this version's words for a normal coroutine; 5.2 and 5.3
  -- say "dead", as they look at the thread's stack first (README).
  local refusal = normal_refusal()
  if LUA54 then
    H.eq(refusal, "cannot resume non-suspended coroutine")
  elseif not LUA51 and not JIT then
    refusal = "cannot resume dead coroutine"
  end
  H.same(pack(builtin.resume(co)), pack(false, refusal))
  H.eq(builtin.status(co), "normal")
  H.eq(fiberswap.status(co), "suspended")
  fiberswap.close(co)
end)

H.test("a fiber's own code cannot yield with the built-in yield", function()
  -- What the built-in library says when a yield from Lua code called by C
  -- is refused: the README's words from 5.2 on, 5.1's "attempt to yield
  -- across metamethod/C-call boundary", LuaJIT's "attempt to yield across
  -- C-call boundary" with a position in front.
  local plain = builtin.create(function()
    return ("x"):gsub(".", function() builtin.yield() end)
  end)
  local want = pack(builtin.resume(plain))
  if not LUA51 and not JIT then
    H.same(want, pack(false, "attempt to yield across a C-call boundary"))
  end
  local got = pack(fiberswap.resume(fiberswap.create(function() builtin.yield() end)))
  H.eq(got.n, 2)
  H.eq(got[1], false)
  H.same(pack(split(got[2])), pack(split(want[2])))
  if LUA54 then
    H.same(got, pack(false, "attempt to yield across a C-call boundary"))
  end
end)

if LUA51 then
  skip("yield inside a __gc finalizer: README (\"Lua versions\") says Lua 5.1 " ..
       "cannot tell a finalizer is running, so the refusal is not made there")
else
  H.test("yield inside a __gc finalizer: refused, with the README's message", function()
    local err
    local function finalizer() err = select(2, pcall(fiberswap.yield)) end
    local co = fiberswap.create(function()
      local newproxy = rawget(_G, "newproxy")
      if newproxy then -- LuaJIT: __gc is for userdata only
        local u = newproxy(true)
        getmetatable(u).__gc = finalizer
        u = nil -- luacheck: ignore 311 (garbage on purpose)
      else
        setmetatable({}, {__gc = finalizer})
      end
      collectgarbage()
    end)
    fiberswap.resume(co)
    H.eq(err, "attempt to yield from inside a __gc metamethod " ..
              "(it would leave the collector stopped)")
    -- Had the yield been let through, the fiber would wait inside the
    -- finalizer with the collector stopped: let it finish.
    H.eq(fiberswap.status(co), "dead")
    while fiberswap.status(co) == "suspended" do fiberswap.resume(co) end
  end)
end

-- How this version's debug.traceback shows a C function without a name:
-- "[C]: in ?" (the README's words) from 5.2 on, "[C]: ?" in 5.1, and its
-- address, "[C]: at 0x...", in LuaJIT.
local UNNAMED_C = LUA51 and "%[C%]: %?" or JIT and "%[C%]: at 0x%x+" or "%[C%]: in %?"

H.test("a failed fiber's traceback names the failing line, then [C]: in ?", function()
  local line = debug.getinfo(1, "l").currentline + 1
  local co = fiberswap.create(function() error("boom") end)
  fiberswap.resume(co)
  local tb = debug.traceback(co)
  if JIT then
    -- README: on LuaJIT the traceback holds the [C] line alone.
    H.ok(tb:find("^stack traceback:\n\t" .. UNNAMED_C .. "\n?$"), tb)
  else
    H.ok(tb:find(":" .. line .. ":", 1, true), tb)
    H.ok(tb:find(UNNAMED_C .. "\n?$"), tb)
  end
end)

H.test("xpcall with debug.traceback inside a fiber keeps the failing line", function()
  -- README: the way to keep the frames on LuaJIT; it works everywhere.
  local line = debug.getinfo(1, "l").currentline + 2
  local co = fiberswap.create(function()
    local ok, tb = xpcall(function() error("boom") end, debug.traceback)
    return ok, tb
  end)
  local _, ok, tb = fiberswap.resume(co)
  H.eq(ok, false)
  H.ok(tb:find(":" .. line .. ": boom", 1, true), tb)
  H.ok(tb:find("stack traceback:", 1, true), tb)
  H.ok(tb:find(":" .. line .. ":", tb:find("stack traceback:", 1, true), true), tb)
end)

H.test("the README's default stack size and range are the module's", function()
  -- README "Lua versions": 512 KiB on 5.4; 2 MiB on 5.1-5.3; 4 MiB on LuaJIT.
  H.eq(fiberswap.stacksize(), LUA54 and 512 * 1024 or JIT and 4 * 1024 * 1024
                              or 2 * 1024 * 1024)
  H.raises("stack size out of range (16384 to 1073741824 bytes)",
           fiberswap.create, print, 16383)
end)

H.test("each fiber has its own C-call budget: a chain of fibers goes deeper", function()
  -- README "Where it differs": a chain of plain coroutines stops with "C
  -- stack overflow" about 200 resumes down; a chain of fibers does not.
  local function chain(lib, n)
    return lib.create(function()
      if n == 0 then return "bottom" end
      local ok, v = lib.resume(chain(lib, n - 1))
      if not ok then error(v, 0) end
      return v
    end)
  end
  H.same(pack(fiberswap.resume(chain(fiberswap, 300))), pack(true, "bottom"))
  if not JIT then -- LuaJIT limits no C calls (README, "Lua versions")
    local ok, msg = builtin.resume(chain(builtin, 300))
    H.eq(ok, false)
    H.ok(tostring(msg):find("C stack overflow", 1, true), msg)
  end
end)

H.test("argument errors name the function as Lua finds it: fiberswap.resume", function()
  -- README "Where it differs": called through pcall, Lua names the function
  -- from package.loaded (5.3+), from the globals (5.2), or not at all.
  local global = _VERSION == "Lua 5.2" and not JIT
  if global then rawset(_G, "fiberswap", fiberswap) end
  local _, mine = pcall(fiberswap.resume, 1)
  local _, theirs = pcall(builtin.resume, 1)
  if global then rawset(_G, "fiberswap", nil) end
  H.eq(mine, (theirs:gsub("'coroutine%.", "'fiberswap.")))
end)

H.done()
