-- spec_api.lua: fiberswap's Lua API against Lua's own coroutine library.
-- Most tests run one scenario twice, with the built-in library and with
-- fiberswap, and require the same values, statuses and messages.
--
-- Runs on Lua 5.1, 5.2, 5.3, 5.4 and LuaJIT 2.1: the file is written in
-- their common subset, and the code that needs 5.4's syntax (to-be-closed
-- variables) is compiled with load() only on 5.4 (see lua54 below).  Where
-- the README ("Lua versions") documents that a version differs, the
-- expectation follows the version; a check that a version cannot make at
-- all prints "# skipped on <version>: <reason>" and the test goes on.  On
-- 5.4 every check of the 5.4-only spec is still made, unchanged.
local H = require "harness"
local fs = require "fiberswap"

local builtin = coroutine
local unpack = table.unpack or rawget(_G, "unpack") -- a global before 5.2
local pack = table.pack or function(...) -- new in 5.2
  return {n = select("#", ...), ...}
end

-- Which Lua runs this file.  LuaJIT's _VERSION says "Lua 5.1".
local jit = rawget(_G, "jit")
local V54 = _VERSION == "Lua 5.4"
local V53 = _VERSION == "Lua 5.3"
local V51 = _VERSION == "Lua 5.1" and not jit -- PUC Lua 5.1 only
local VERSION = jit and jit.version or _VERSION

-- A check this version cannot make: say so on the TAP stream.
local function skip(reason)
  print("# skipped on " .. VERSION .. ": " .. reason)
end

-- The main thread.  coroutine.running() names it from 5.2 on; 5.1 and
-- LuaJIT return nil there, so it is taken from fiberswap, whose running()
-- has 5.4's results everywhere (README, "Lua versions"; checked by
-- "running in the main thread returns it and true").
local MAIN = builtin.running() or fs.running()

-- The built-in library the scenarios compare with: on 5.4, coroutine
-- itself.  Before 5.4 it lacks what the README says fiberswap offers every
-- version ("the full 5.4-style API"), so two functions are filled in with
-- the behaviour documented for that version:
--   running()       5.1 and LuaJIT return nil in the main thread; 5.4
--                   returns it and true, a coroutine and false.
--   isyieldable([co])  no thread argument before 5.4 (none at all before
--                   5.3).  For the running thread: the built-in answer, or
--                   on 5.1 and 5.2, which cannot tell, true for any thread
--                   but the main one (README).  For another thread, Lua's
--                   answer: on 5.1 and 5.2 the same rule; on 5.3 and
--                   LuaJIT lua_isyieldable(co), which holds only inside a
--                   resume, so of the threads that are not running only a
--                   normal one can yield.
-- Where no version-independent answer exists (close of a plain coroutine
-- before 5.4, which the README says raises), the tests say what they check.
local ref = builtin
if not V54 then
  ref = setmetatable({}, {__index = builtin})
  if builtin.running() == nil then
    ref.running = function()
      local co = builtin.running()
      if co ~= nil then return co, false end
      return MAIN, true
    end
  end
  ref.isyieldable = function(...)
    local me, ismain = ref.running()
    local co = ...
    if select("#", ...) == 0 or co == me then
      if builtin.isyieldable then return builtin.isyieldable() end
      return not ismain
    end
    if not builtin.isyieldable then return co ~= MAIN end
    return builtin.status(co) == "normal"
  end
end

-- The messages this version's coroutine library gives for a resume of a
-- running or normal coroutine (README, "Lua versions": 5.1 says "running"
-- and "normal", LuaJIT "running" for both, 5.2 on "non-suspended").
local NONSUSPENDED = "cannot resume non-suspended coroutine"
local RUNNING = _VERSION == "Lua 5.1" and "cannot resume running coroutine" or NONSUSPENDED
local NORMAL = V51 and "cannot resume normal coroutine" or RUNNING
-- 5.2 and 5.3 call a coroutine whose current frame is empty dead before
-- they ask lua_resume (README, "Where it differs"), as fiberswap does there.
local EMPTY = (_VERSION == "Lua 5.2" or V53) and "cannot resume dead coroutine"

-- Why the tests of to-be-closed variables are skipped before 5.4, and
-- checks of math.type before 5.3.
local NO_TBC = "to-be-closed variables are new in Lua 5.4 (README, \"Lua versions\")"
local NO_INTEGER = "math.type: numbers have no integer subtype before Lua 5.3; " ..
                   "checked that the number is whole"

-- Run scenario(lib) under pcall with the built-in library (ref, above),
-- then with fiberswap, and check both outcomes are equal value for value
-- (the first value is pcall's status).  `documented`, if given, first
-- adjusts the built-in outcome where the README says this version's
-- fiberswap answers otherwise; it is never given on 5.4.  Returns the two
-- outcomes, built-in first.
local function compare(line, scenario, documented)
  local want = pack(pcall(scenario, ref))
  local got = pack(pcall(scenario, fs))
  if documented then documented(want) end
  H.eq(got.n, want.n, "scenario at line " .. line .. ": number of values")
  H.same(got, want, "scenario at line " .. line)
  return want, got
end
local function agree(scenario, documented)
  return compare(debug.getinfo(2, "l").currentline, scenario, documented)
end

-- Run a scenario that closes a coroutine: as agree on 5.4.  Before 5.4
-- the built-in library has no close to compare with: the scenario runs
-- with fiberswap alone, and the caller checks its outcome (returned second)
-- against the behaviour the README documents, which is 5.4's.
local function closing(scenario)
  if V54 then
    return compare(debug.getinfo(2, "l").currentline, scenario)
  end
  return nil, pack(pcall(scenario, fs))
end

-- Flatten lists (packed, or sequences) into one list of values: each
-- list's count, then its values, so that a scenario can return several.
local function flat(...)
  local out, n = {}, 0
  for i = 1, select("#", ...) do
    local p = select(i, ...)
    local count = p.n or #p
    n = n + 1; out[n] = count
    for j = 1, count do n = n + 1; out[n] = p[j] end
  end
  if n > 7999 and _VERSION == "Lua 5.1" then -- more than 5.1's unpack takes
    local function from(i) if i <= n then return out[i], from(i + 1) end end
    return from(1)
  end
  return unpack(out, 1, n)
end

-- The error message fn raises, or "no error".  fn must call the function
-- under test by a local name and not as a tail call, so that Lua names it
-- the same way ('resume', not 'coroutine.resume' or 'fiberswap.resume').
local function message(fn)
  local ok, err = pcall(fn)
  if ok then return "no error" end
  return err
end

-- A message without the "file:line: " position Lua puts in front.
local function bare(msg)
  return (tostring(msg):gsub("^[^:]*:%d+: ", ""))
end

-- The message fn raises, without its position, for literal comparisons.
local function raised(fn)
  return bare(message(fn))
end

-- The message this version's coroutine library gives when function `name`
-- gets a non-thread argument #1 (the arguments, ...): the built-in status's
-- message for the same arguments, with `name` put in.  For the functions
-- the built-in library lacks before 5.4, and for literal checks: "thread
-- expected, got number" on 5.4, "thread expected" on 5.3, "coroutine
-- expected" on 5.1, 5.2 and LuaJIT (README, "Lua versions").
local function notthread(name, ...)
  local status, args = builtin.status, pack(...)
  local msg = raised(function() status(unpack(args, 1, args.n)) end)
  return (msg:gsub("'status'", "'" .. name .. "'"))
end

-- A to-be-closed value that appends `name` to the list `log` when closed.
local function closer(log, name)
  return setmetatable({}, {__close = function(_, err)
    log[#log + 1] = name
    if err ~= nil then log[#log + 1] = "err: " .. tostring(err) end
  end})
end

-- Close co, in a scenario that only cleans up, if lib can: the built-in
-- library has no close before 5.4, and its coroutines need none.
local function dispose(lib, co)
  if lib.close then lib.close(co) end
end

-- 1, 2, ..., n as a packed list.
local function range(n)
  local t = {n = n}
  for i = 1, n do t[i] = i end
  return t
end

-- The value of `src`, a chunk in Lua 5.4's syntax (to-be-closed variables)
-- that returns it, such as a scenario; used only on 5.4, so that this file
-- parses everywhere.  Write it as lua54[[ with the code from the next line
-- on: the chunk is padded so that its lines, and so the positions in its
-- messages, are this file's.  It sees the globals and the helpers above.
local lua54
do
  local source = debug.getinfo(1, "S").source
  local env = setmetatable({
    H = H, fs = fs, builtin = builtin, pack = pack, unpack = unpack,
    flat = flat, message = message, bare = bare, closer = closer,
  }, {__index = _G})
  lua54 = function(src)
    local line = debug.getinfo(2, "l").currentline
    return assert(load(("\n"):rep(line) .. src, source, "t", env))()
  end
end

-------------------------------------------------------------------- create

H.test("create returns a suspended thread and does not run the body", function()
  local ran = false
  local co = fs.create(function() ran = true end)
  H.eq(type(co), "thread")
  H.eq(fs.isfiber(co), true)
  H.eq(fs.status(co), "suspended")
  H.eq(ran, false)
  fs.close(co)
end)

H.test("create returns the same shape as the built-in create", function()
  agree(function(lib)
    local co = lib.create(function() end)
    local r = pack(type(co), lib.status(co))
    dispose(lib, co)
    return flat(r)
  end)
end)

H.test("create takes an optional stack size in bytes", function()
  local co = fs.create(function() end, 65536)
  H.eq(fs.info(co).stacksize, 65536)
  fs.close(co)
end)

H.test("create accepts the smallest and the largest stack size", function()
  local small = fs.create(function() return "small" end, 16384)
  local large = fs.create(function() return "large" end, 1073741824)
  H.eq(fs.info(small).stacksize, 16384)
  H.eq(fs.info(large).stacksize, 1073741824)
  H.same(pack(fs.resume(small)), pack(true, "small"))
  H.same(pack(fs.resume(large)), pack(true, "large"))
end)

H.test("create rejects a non-function as the built-in does", function()
  local function scenario(lib)
    local create = lib.create
    return message(function() create(nil) end),
           message(function() create({}) end),
           message(function() create() end)
  end
  if V51 then
    -- 5.1's create takes only Lua functions ("Lua function expected");
    -- fibers may run C functions (README, "Lua versions"), so fiberswap
    -- checks for any function with Lua's standard message.
    skip("comparison with coroutine.create's message: 5.1's create takes " ..
         "only Lua functions, fiberswap's any function")
    local none, tbl, missing = scenario(fs)
    H.same(pack(bare(none), bare(tbl), bare(missing)),
           pack("bad argument #1 to 'create' (function expected, got nil)",
                "bad argument #1 to 'create' (function expected, got table)",
                "bad argument #1 to 'create' (function expected, got no value)"))
  else
    agree(scenario)
  end
  local create, wrap = fs.create, fs.wrap
  H.eq(raised(function() create(nil) end),
       "bad argument #1 to 'create' (function expected, got nil)")
  -- the first bad argument is named, even with a bad stack size after it
  H.eq(raised(function() create(nil, 1.5) end),
       "bad argument #1 to 'create' (function expected, got nil)")
  H.eq(raised(function() wrap(nil, "big") end),
       "bad argument #1 to 'wrap' (function expected, got nil)")
end)

H.test("create rejects a stack size that is not an integer", function()
  local create = fs.create
  H.eq(raised(function() create(print, "big") end),
       "bad argument #2 to 'create' (number expected, got string)")
  H.eq(raised(function() create(print, {}) end),
       "bad argument #2 to 'create' (number expected, got table)")
  if math.type then
    H.eq(raised(function() create(print, 16384.5) end),
         "bad argument #2 to 'create' (number has no integer representation)")
  else
    -- Numbers have no integer subtype before 5.3: Lua's own functions take
    -- the integer part of a float where they want an integer
    -- (luaL_checkinteger), and "argument errors are Lua's standard ones"
    -- (README, "Functions"), so 16384.5 is 16384 bytes, as it is to
    -- string.rep.
    skip("rejecting 16384.5: numbers have no integer subtype before 5.3; " ..
         "checked that it is taken as 16384, as Lua's own functions do")
    H.eq(("x"):rep(2.5), "xx")
    H.eq(fs.info(create(print, 16384.5)).stacksize, 16384)
  end
end)

H.test("create rejects a stack size out of range", function()
  local create = fs.create
  local want = "bad argument #2 to 'create' " ..
               "(stack size out of range (16384 to 1073741824 bytes))"
  H.eq(raised(function() create(print, 1) end), want)
  H.eq(raised(function() create(print, 16383) end), want)
  H.eq(raised(function() create(print, 1073741825) end), want)
  H.eq(raised(function() create(print, 2^31) end), want)
  H.eq(raised(function() create(print, -1) end), want)
  -- -2^63, the smallest integer of 5.3 and 5.4, is a float before
  H.eq(raised(function() create(print, math.mininteger or -2^63) end), want)
end)

------------------------------------------------------------- resume, yield

H.test("resume passes 0, 1, 3, 19 to 22 and 200 values each way", function()
  -- 20 is LUA_MINSTACK, the free slots Lua promises a C function
  local counts = {pack(), pack("a"), pack(1, "two", 3.5), range(19), range(20),
                  range(21), range(22), range(200)}
  for _, args in ipairs(counts) do
    local _, got = agree(function(lib)
      local seen = {}
      local co = lib.create(function(...)
        seen.start = pack(...)
        seen.resumed = pack(lib.yield(unpack(args, 1, args.n)))
        return unpack(args, 1, args.n)
      end)
      local first = pack(lib.resume(co, unpack(args, 1, args.n)))
      local second = pack(lib.resume(co, unpack(args, 1, args.n)))
      return flat(seen.start, first, seen.resumed, second,
                  pack(lib.status(co)))
    end)
    H.eq(got[1], true)
    H.eq(got.n, 1 + 4 * (args.n + 1) + 2 + 2) -- four lists, counts, status
  end
end)

H.test("resume returns exactly true when the fiber yields nothing", function()
  local co = fs.create(function() fs.yield() end)
  local r = pack(fs.resume(co))
  H.eq(r.n, 1)
  H.eq(r[1], true)
  fs.close(co)
end)

H.test("resume and yield keep nil holes in their counts", function()
  local want, got = agree(function(lib)
    local seen = {}
    local co = lib.create(function(...)
      seen.start = pack(...)
      seen.resumed = pack(lib.yield(nil, 1, nil))
      return nil, nil
    end)
    local first = pack(lib.resume(co, nil, nil))
    local second = pack(lib.resume(co, nil, 2, nil, nil))
    return flat(seen.start, first, seen.resumed, second)
  end)
  H.same(got, pack(true, 2, nil, nil, 4, true, nil, 1, nil,
                   4, nil, 2, nil, nil, 3, true, nil, nil))
  H.eq(got.n, want.n)
end)

H.test("resume returns the body's results and the fiber is then dead", function()
  agree(function(lib)
    local co = lib.create(function(a, b) return b, a, "end" end)
    local r = pack(lib.resume(co, 1, 2))
    return flat(r, pack(lib.status(co)))
  end)
end)

H.test("resume of a dead fiber returns false and the message", function()
  local _, got = agree(function(lib)
    local co = lib.create(function() end)
    lib.resume(co)
    return lib.resume(co, "ignored")
  end)
  H.same(got, pack(true, false, "cannot resume dead coroutine"))
end)

H.test("resume of the running fiber returns false and the message", function()
  local _, got = agree(function(lib)
    local co
    co = lib.create(function() return lib.resume(co) end)
    return lib.resume(co)
  end)
  H.same(got, pack(true, true, false, RUNNING))
end)

H.test("resume of a normal fiber returns false and the message", function()
  local _, got = agree(function(lib)
    local outer
    outer = lib.create(function()
      local inner = lib.create(function() return lib.resume(outer) end)
      return lib.resume(inner)
    end)
    return lib.resume(outer)
  end)
  H.same(got, pack(true, true, true, false, NORMAL))
end)

H.test("resume of the main thread from a fiber returns false", function()
  local _, got = agree(function(lib)
    local main = lib.running()
    local co = lib.create(function() return lib.resume(main) end)
    return lib.resume(co)
  end)
  H.same(got, pack(true, true, false, NORMAL))
end)

H.test("resume rejects a non-coroutine as the built-in does", function()
  local _, got = agree(function(lib)
    local resume = lib.resume
    return message(function() resume(nil) end),
           message(function() resume(1) end),
           message(function() resume() end),
           message(function() resume(print) end)
  end)
  -- Lua 5.4's own wording (lcorolib's getco); other versions have theirs
  H.eq(bare(got[2]), V54 and "bad argument #1 to 'resume' (thread expected, got nil)"
                     or notthread("resume", nil))
end)

-- n nils, for the two tests below, which overflow a stack: a body holds
-- FULL values, and MANY more come.  5.2 to 5.4 refuse to grow a thread's
-- Lua stack past LUAI_MAXSTACK (1000000 slots): 990000 and 20000 overflow
-- it.  On 5.1 and LuaJIT lua_checkstack refuses more than LUAI_MAXCSTACK
-- (8000) slots to one C function, however full the stack: 9000 values are
-- too many there for a C library (LuaJIT's own coroutine library, part of
-- its VM, takes them), and as unpack refuses 8000, Lua calls make them.
local FULL, MANY = 990000, 20000
local function nils(n) return unpack({}, 1, n) end
if _VERSION == "Lua 5.1" then
  FULL, MANY = 9000, 9000
  nils = function(n, ...)
    if n == 0 then return ... end
    return nils(n - 1, nil, ...)
  end
end

-- How a refused resume ends, through pcall: Lua 5.1 raises the message
-- (with no position: pcall called resume), later versions and LuaJIT
-- return false and the message (README, "Lua versions").
local function refusal(msg)
  if V51 then return pack(false, msg) end
  return pack(true, false, msg)
end

-- Run a too-many-values scenario: as agree, but with fiberswap alone on
-- LuaJIT, whose own library takes 9000 values where fiberswap (a C
-- library) cannot, and for refused results on 5.1, whose own library
-- leaves them on the thread, which then refuses every resume (README,
-- "Lua versions").
local function toomany(scenario, results)
  if jit or (results and V51) then return pack(pcall(scenario, fs)) end
  local _, got = compare(debug.getinfo(2, "l").currentline, scenario)
  return got
end

H.test("resume refuses too many arguments and the fiber stays suspended", function()
  local got = toomany(function(lib)
    -- the body fills its Lua stack almost to the limit, then yields
    local co = lib.create(function()
      local function hold(...) return lib.yield() end -- luacheck: ignore 212
      return hold(nils(FULL))
    end)
    local first = pack(lib.resume(co))
    local refused = pack(pcall(lib.resume, co, nils(MANY)))
    local status = lib.status(co)
    local last = pack(lib.resume(co, "a", "b"))
    return flat(first, refused, pack(status), last)
  end)
  H.same(got, pack(true, flat(pack(true), refusal("too many arguments to resume"),
                              pack("suspended"), pack(true, "a", "b"))))
end)

H.test("resume refuses too many results and the fiber stays suspended", function()
  local got = toomany(function(lib)
    local co = lib.create(function()
      return lib.yield(nils(FULL))
    end)
    -- the resumer's own stack holds MANY values when the results come
    local function resume_full(...) return pcall(lib.resume, co) end -- luacheck: ignore 212
    local refused = pack(resume_full(nils(MANY)))
    local status = lib.status(co)
    local last = pack(lib.resume(co, "again"))
    return flat(refused, pack(status), last)
  end, true)
  H.same(got, pack(true, flat(refusal("too many results to resume"),
                              pack("suspended"), pack(true, "again"))))
end)

H.test("yield returns what the next resume passed", function()
  agree(function(lib)
    local co = lib.create(function()
      local a = lib.yield()
      local b, c = lib.yield(a)
      return b + c
    end)
    return flat(pack(lib.resume(co)), pack(lib.resume(co, "x")),
                pack(lib.resume(co, 2, 3)), pack(lib.status(co)))
  end)
end)

H.test("yield outside any coroutine raises the built-in message", function()
  local _, got = agree(function(lib)
    local yield = lib.yield
    return message(function() yield(1) end)
  end)
  -- 5.1 and LuaJIT word it their own way ("attempt to yield across
  -- [metamethod/]C-call boundary"): there the comparison is the check.
  if _VERSION ~= "Lua 5.1" then
    H.eq(got[2], "attempt to yield from outside a coroutine")
  end
end)

H.test("yield works from inside pcall, table.sort, gsub and metamethods", function()
  local co = fs.create(function()
    local ok, v = pcall(function() return fs.yield("pcall") end)
    local t = {3, 1, 2}
    table.sort(t, function(a, b) fs.yield("sort") return a < b end)
    local s = ("ab"):gsub(".", function(c) return fs.yield(c) end)
    local obj = setmetatable({}, {__index = function(_, k)
      return fs.yield("index " .. k)
    end})
    return ok, v, table.concat(t), s, obj.key
  end)
  local seen, r = {}, pack(fs.resume(co))
  while fs.status(co) == "suspended" do
    seen[#seen + 1] = r[2]
    if r[2] == "pcall" then r = pack(fs.resume(co, "P"))
    elseif r[2] == "a" or r[2] == "b" then r = pack(fs.resume(co, r[2]:upper()))
    elseif r[2] == "index key" then r = pack(fs.resume(co, "K"))
    else r = pack(fs.resume(co)) end
  end
  H.same(r, pack(true, true, "P", "123", "AB", "K"))
  H.eq(seen[1], "pcall")
  H.eq(seen[2], "sort")
  H.eq(seen[#seen], "index key")
end)

---------------------------------------------------- errors inside a fiber

H.test("an error in a fiber comes back from resume as false, message", function()
  local _, got = agree(function(lib)
    local co = lib.create(function() error("boom") end)
    return flat(pack(lib.resume(co)), pack(lib.status(co)))
  end)
  H.ok(tostring(got[4]):find("spec_api.lua:%d+: boom$"), tostring(got[4]))
end)

H.test("a non-string error value comes back as the same object", function()
  local values = {{}, 42, 1.5, true, false, print}
  for _, v in ipairs(values) do
    local _, got = agree(function(lib)
      local co = lib.create(function() error(v) end)
      local ok, err = lib.resume(co)
      return ok, err == v, type(err), lib.status(co)
    end)
    if type(v) == "number" and not (V53 or V54) then
      -- 5.1's and 5.2's error() (LuaJIT's too) puts the position in front
      -- of anything lua_isstring takes: a number is a message there
      H.same(got, pack(true, false, false, "string", "dead"))
    else
      H.same(got, pack(true, false, true, type(v), "dead"))
    end
  end
end)

H.test("an error with a nil value comes back as false, nil", function()
  local _, got = agree(function(lib)
    local co = lib.create(function() error(nil) end)
    return flat(pack(lib.resume(co)))
  end)
  H.same(got, pack(true, 2, false, nil))
end)

H.test("error with level 2 names the caller's line", function()
  local _, got = agree(function(lib)
    local function check(x) if not x then error("bad x", 2) end end
    local co = lib.create(function() check(false) end)
    return lib.resume(co)
  end)
  H.ok(tostring(got[3]):find("spec_api.lua:%d+: bad x$"), tostring(got[3]))
end)

H.test("error with level 2 in the body itself adds no position", function()
  agree(function(lib)
    local co = lib.create(function() error("top", 2) end)
    return lib.resume(co)
  end)
end)

H.test("a runtime error in a fiber reads as in a coroutine", function()
  agree(function(lib)
    local co = lib.create(function() local t = nil; return t.field end)
    return lib.resume(co)
  end)
end)

H.test("a fiber that failed is dead and cannot be resumed", function()
  local _, got = agree(function(lib)
    local co = lib.create(function() error("once") end)
    lib.resume(co)
    return flat(pack(lib.status(co)), pack(lib.resume(co)))
  end)
  H.same(got, pack(true, 1, "dead", 2, false, "cannot resume dead coroutine"))
end)

-------------------------------------------------------------------- status

H.test("status of a fresh fiber is suspended", function()
  agree(function(lib)
    local co = lib.create(function() end)
    local s = lib.status(co)
    dispose(lib, co)
    return s
  end)
end)

H.test("status of a yielded fiber is suspended", function()
  agree(function(lib)
    local co = lib.create(function() lib.yield() end)
    lib.resume(co)
    local s = lib.status(co)
    dispose(lib, co)
    return s
  end)
end)

H.test("status of a fiber seen from inside is running", function()
  local _, got = agree(function(lib)
    local co
    co = lib.create(function() return lib.status(co), lib.status(lib.running()) end)
    return lib.resume(co)
  end)
  H.same(got, pack(true, true, "running", "running"))
end)

H.test("status of a returned fiber is dead", function()
  agree(function(lib)
    local co = lib.create(function() end)
    lib.resume(co)
    return lib.status(co)
  end)
end)

H.test("status of a failed fiber is dead", function()
  agree(function(lib)
    local co = lib.create(function() error("x") end)
    lib.resume(co)
    return lib.status(co)
  end)
end)

-- A scenario: a coroutine made by outer_of(lib) resumes one made by
-- inner_of(lib), which returns the outer one's status.
local function nested_status(outer_of, inner_of)
  return function(lib)
    local outer
    outer = outer_of(lib)(function()
      local inner = inner_of(lib)(function() return lib.status(outer) end)
      return lib.resume(inner)
    end)
    return lib.resume(outer)
  end
end
local function fiber_of(lib) return lib.create end
local function plain_of() return builtin.create end

for _, case in ipairs({{"a fiber", fiber_of, "a fiber", fiber_of},
                       {"a plain coroutine", plain_of, "a fiber", fiber_of},
                       {"a fiber", fiber_of, "a plain coroutine", plain_of}}) do
  H.test("status of " .. case[1] .. " that resumed " .. case[3] .. " is normal", function()
    local _, got = agree(nested_status(case[2], case[4]))
    H.same(got, pack(true, true, true, "normal"))
  end)
end

H.test("status of the main thread seen from a fiber is normal", function()
  agree(function(lib)
    local main = lib.running()
    local co = lib.create(function() return lib.status(main) end)
    return flat(pack(lib.resume(co)), pack(lib.status(main)))
  end)
end)

H.test("status rejects a non-coroutine as the built-in does", function()
  agree(function(lib)
    local status = lib.status
    return message(function() status({}) end),
           message(function() status() end)
  end)
end)

------------------------------------------------------------------- running

H.test("running inside a fiber returns the fiber and false", function()
  local co
  co = fs.create(function()
    local me, ismain = fs.running()
    return me == co, ismain
  end)
  H.same(pack(fs.resume(co)), pack(true, true, false))
end)

H.test("running in the main thread returns it and true", function()
  local _, got = agree(function(lib)
    local me, ismain = lib.running()
    return type(me), ismain, me == builtin.running()
  end)
  if builtin.running() ~= nil then
    H.same(got, pack(true, "thread", true, true))
  else
    -- 5.1's and LuaJIT's running() returns nil in the main thread: the
    -- built-in status must take fiberswap's answer for the running thread
    skip("the main thread is compared with coroutine.status, as " ..
         "coroutine.running() returns nil in it")
    H.same(got, pack(true, "thread", true, false))
    H.eq(builtin.status((fs.running())), "running")
  end
end)

H.test("running inside a fiber returns the same shape as the built-in", function()
  agree(function(lib)
    local co = lib.create(function()
      local r = pack(lib.running())
      return r.n, type(r[1]), r[2]
    end)
    return lib.resume(co)
  end)
end)

--------------------------------------------------------------- isyieldable

H.test("isyieldable is true inside a fiber", function()
  agree(function(lib)
    local co = lib.create(function() return lib.isyieldable() end)
    return lib.resume(co)
  end)
end)

H.test("isyieldable is true inside a fiber under C calls", function()
  local co = fs.create(function()
    local in_pcall = select(2, pcall(fs.isyieldable))
    local in_sort
    table.sort({2, 1}, function(a, b) in_sort = fs.isyieldable(); return a < b end)
    local in_gsub
    ("x"):gsub(".", function() in_gsub = fs.isyieldable() end)
    return in_pcall, in_sort, in_gsub
  end)
  H.same(pack(fs.resume(co)), pack(true, true, true, true))
end)

H.test("isyieldable inside a plain coroutine is the built-in answer", function()
  local _, got = agree(function(lib)
    local co = builtin.create(function()
      local in_sort
      table.sort({2, 1}, function(a, b) in_sort = lib.isyieldable(); return a < b end)
      return lib.isyieldable(), in_sort
    end)
    return lib.resume(co)
  end)
  -- Lua cannot yield from a comparator; 5.1 and 5.2 cannot tell, and say
  -- true for any thread but the main one (README, "Lua versions")
  H.same(got, pack(true, true, true, builtin.isyieldable == nil))
end)

H.test("isyieldable in the main thread is false", function()
  local _, got = agree(function(lib) return lib.isyieldable() end)
  H.same(got, pack(true, false))
end)

H.test("isyieldable(co) of a fiber seen from outside is the built-in answer", function()
  agree(function(lib)
    local main = lib.running()
    local fresh = lib.create(function() end)
    local yielded = lib.create(function() lib.yield() end)
    lib.resume(yielded)
    local finished = lib.create(function() end)
    lib.resume(finished)
    local failed = lib.create(function() error("x") end)
    lib.resume(failed)
    local r = pack(lib.isyieldable(main), lib.isyieldable(fresh),
                   lib.isyieldable(yielded), lib.isyieldable(finished),
                   lib.isyieldable(failed))
    dispose(lib, fresh)
    dispose(lib, yielded)
    return flat(r)
  end, not V54 and function(want)
    -- true for any fiber that is not dead (README, "Functions"), as 5.4
    -- says of plain coroutines too; before 5.4 a fresh or suspended plain
    -- coroutine may not yield (5.3 and LuaJIT; 5.1 and 5.2 say true)
    want[4], want[5] = true, true
  end)
end)

H.test("isyieldable(co) of a fiber closed mid-body is the built-in answer", function()
  local function scenario(lib)
    local co = lib.create(function() lib.yield() end)
    lib.resume(co)
    lib.close(co)
    return lib.status(co), lib.isyieldable(co)
  end
  if V54 then
    local _, got = agree(scenario)
    H.same(got, pack(true, "dead", true))
  else
    -- No built-in close before 5.4.  The closed fiber is dead, and its
    -- thread keeps its frames (README, "Lua versions"), the body's under
    -- the C call that keeps the built-in yield from suspending a fiber
    -- (README, "Speed"): Lua's answer for it is false on 5.3 and LuaJIT;
    -- 5.1 and 5.2 say true for any thread but the main one.
    H.same(pack(pcall(scenario, fs)),
           pack(true, "dead", builtin.isyieldable == nil))
  end
end)

H.test("isyieldable(co) of the caller seen from inside a fiber", function()
  agree(function(lib)
    local outer
    outer = lib.create(function()
      local inner = lib.create(function() return lib.isyieldable(outer) end)
      return lib.resume(inner)
    end)
    return lib.resume(outer)
  end)
end)

H.test("isyieldable is false inside a __gc finalizer in a fiber", function()
  if V51 then
    skip("a finalizer is not detected on Lua 5.1 (README, \"Lua versions\")")
    return
  end
  local co = fs.create(function()
    local seen = {}
    local function garbage()
      local gc = function()
        seen.yieldable = fs.isyieldable()
        seen.yield = pack(pcall(fs.yield, "from gc"))
      end
      if jit then -- LuaJIT, as 5.1, finalizes only userdata
        getmetatable(rawget(_G, "newproxy")(true)).__gc = gc
      else
        setmetatable({}, {__gc = gc})
      end
    end
    garbage()
    collectgarbage()
    collectgarbage()
    return seen.yieldable, seen.yield[1], seen.yield[2]
  end)
  local ok, yieldable, yok, yerr = fs.resume(co)
  H.eq(ok, true)
  H.eq(yieldable, false)
  H.eq(yok, false)
  H.ok(tostring(yerr):find("attempt to yield", 1, true), tostring(yerr))
  H.eq(fs.status(co), "dead")
end)

H.test("isyieldable rejects a non-coroutine as the built-in does", function()
  local function scenario(lib)
    local isyieldable = lib.isyieldable
    return message(function() isyieldable(1) end)
  end
  if V54 then
    agree(scenario)
  else -- the built-in takes no thread: its status's words for a non-thread
    H.eq(bare(scenario(fs)), notthread("isyieldable", 1))
  end
end)

---------------------------------------------------------------------- wrap

H.test("wrap returns a function that runs the body in a fiber", function()
  local f = fs.wrap(function(a)
    local me = fs.running()
    local b = fs.yield(a + 1, fs.isfiber(me))
    return b * 2
  end)
  H.eq(type(f), "function")
  H.same(pack(f(1)), pack(2, true))
  H.same(pack(f(5)), pack(10))
end)

H.test("wrap passes values each way as the built-in does", function()
  agree(function(lib)
    local f = lib.wrap(function(...)
      local got = pack(lib.yield(...))
      return unpack(got, 1, got.n)
    end)
    return flat(pack(f(nil, 1, nil)), pack(f(unpack(range(200)))))
  end)
end)

H.test("wrap takes an optional stack size", function()
  local f = fs.wrap(function() return fs.info(fs.running()).stacksize end, 32768)
  H.eq(f(), 32768)
end)

H.test("wrap adds the position only to string errors, as the built-in", function()
  for _, v in ipairs{"text", 42, {}, false} do
    local _, got = agree(function(lib)
      local f = lib.wrap(function() error(v) end)
      local ok, err = pcall(function() local _ = f() end)
      return ok, err == v, type(err), type(err) == "string" and err or "-"
    end)
    -- 5.1, 5.2 and LuaJIT prefix numbers too (README, "Lua versions")
    local prefixed = type(v) == "string" or
                     type(v) == "number" and not (V53 or V54)
    H.eq(got[3], not prefixed)
  end
  local f = fs.wrap(function() error("text", 0) end)
  local err = message(function() local _ = f() end)
  H.ok(err:find("^.*spec_api.lua:%d+: text$"), err)
end)

H.test("wrap of an error with a nil value raises nil", function()
  agree(function(lib)
    local f = lib.wrap(function() error(nil) end)
    return pcall(function() local _ = f() end)
  end)
end)

H.test("wrap of a dead coroutine raises 'cannot resume dead coroutine'", function()
  local _, got = agree(function(lib)
    local f = lib.wrap(function() return 1 end)
    local first = f()
    return first, message(function() local _ = f() end)
  end)
  H.ok(tostring(got[3]):find("spec_api.lua:%d+: cannot resume dead coroutine$"),
       tostring(got[3]))
end)

H.test("wrap called from its own body raises non-suspended", function()
  local _, got = agree(function(lib)
    local f
    f = lib.wrap(function() return message(function() local _ = f() end) end)
    return f()
  end)
  H.eq(bare(got[2]), EMPTY or RUNNING) -- f() passes nothing: an empty frame
end)

H.test("wrap closes pending to-be-closed variables when the body fails", function()
  if not V54 then return skip(NO_TBC) end
  local _, got = agree(lua54[[
  return function(lib)
    local log = {}
    local f = lib.wrap(function()
      local _ <close> = closer(log, "a")
      local _ <close> = closer(log, "b")
      lib.yield()
      error("fail")
    end)
    f()
    local before = #log
    local err = message(function() local _ = f() end)
    return before, err, unpack(log)
  end]])
  H.eq(got[2], 0)
  H.eq(got[4], "b")
end)

H.test("wrap rejects a non-function as the built-in does", function()
  local function scenario(lib)
    local wrap = lib.wrap
    return message(function() wrap(nil) end)
  end
  local got
  if V51 then -- as create (see "create rejects a non-function ...")
    skip("comparison with coroutine.wrap's message: 5.1's wrap takes " ..
         "only Lua functions, fiberswap's any function")
    got = pack(pcall(scenario, fs))
  else
    got = select(2, agree(scenario))
  end
  H.eq(bare(got[2]), "bad argument #1 to 'wrap' (function expected, got nil)")
end)

H.test("wrap rejects a stack size out of range", function()
  local wrap = fs.wrap
  H.eq(raised(function() wrap(print, 1) end),
       "bad argument #2 to 'wrap' " ..
       "(stack size out of range (16384 to 1073741824 bytes))")
end)

--------------------------------------------------------------------- close

H.test("close of a suspended fiber closes its variables in reverse order", function()
  if not V54 then
    skip(NO_TBC .. "; checked that close returns true and the fiber is dead")
    local co = fs.create(function() fs.yield() end)
    fs.resume(co)
    H.same(pack(fs.close(co)), pack(true))
    H.eq(fs.status(co), "dead")
    -- its thread keeps its frames: "normal" to the built-in library (README)
    H.eq(builtin.status(co), "normal")
    return
  end
  local _, got = agree(lua54[[
  return function(lib)
    local log = {}
    local co = lib.create(function()
      local _ <close> = closer(log, "a")
      local _ <close> = closer(log, "b")
      lib.yield()
      log[#log + 1] = "not reached"
    end)
    lib.resume(co)
    local r = pack(lib.close(co))
    return flat(r, log, pack(lib.status(co)))
  end]])
  H.same(got, pack(true, 1, true, 2, "b", "a", 1, "dead"))
end)

H.test("close returns false and the error when a __close fails", function()
  if not V54 then return skip(NO_TBC) end
  local _, got = agree(lua54[[
  return function(lib)
    local log = {}
    local co = lib.create(function()
      local _ <close> = closer(log, "a")
      local _ <close> = setmetatable({}, {__close = function() error("in close") end})
      lib.yield()
    end)
    lib.resume(co)
    local r = pack(lib.close(co))
    return flat(r, log, pack(lib.status(co)))
  end]])
  H.eq(got[3], false)
  H.ok(tostring(got[4]):find("in close$"), tostring(got[4]))
  -- "a" is still closed, and gets the error
  H.same(got, pack(true, 2, false, got[4], 2, "a", "err: " .. tostring(got[4]),
                   1, "dead"))
end)

H.test("close of a fresh fiber returns true and never runs the body", function()
  local _, got = closing(function(lib)
    local ran = false
    local co = lib.create(function() ran = true end)
    local r = pack(lib.close(co))
    return flat(r, pack(ran, lib.status(co)))
  end)
  H.same(got, pack(true, 1, true, 2, false, "dead"))
end)

H.test("close of a returned fiber returns true", function()
  local _, got = closing(function(lib)
    local co = lib.create(function() return 1 end)
    lib.resume(co)
    return flat(pack(lib.close(co)), pack(lib.status(co)))
  end)
  H.same(got, pack(true, 1, true, 1, "dead"))
end)

H.test("close of a failed fiber returns false and the error", function()
  if not V54 then
    skip(NO_TBC .. "; checked that close returns false and the error")
    local _, got = closing(function(lib)
      local co = lib.create(function() error("failed") end)
      local r = pack(lib.resume(co))
      return flat(r, pack(lib.close(co)))
    end)
    H.eq(got[3], false)
    H.ok(tostring(got[4]):find("spec_api.lua:%d+: failed$"), tostring(got[4]))
    H.same(got, pack(true, 2, false, got[4], 2, false, got[4]),
           "resume's results, then close's")
    return
  end
  local _, got = agree(lua54[[
  return function(lib)
    local log = {}
    local co = lib.create(function()
      local _ <close> = closer(log, "a")
      error("failed")
    end)
    local r = pack(lib.resume(co))
    local before = #log
    return flat(r, pack(before), pack(lib.close(co)), log)
  end]])
  H.eq(got[3], false)
  H.eq(got[6], 0) -- resume leaves the variables to close
  H.eq(got[8], false)
  H.eq(got[10], 2) -- close closed "a" with the error
end)

H.test("close of a fiber that failed with a table returns that table", function()
  local _, got = closing(function(lib)
    local e = {}
    local co = lib.create(function() error(e) end)
    lib.resume(co)
    local ok, err = lib.close(co)
    return ok, err == e
  end)
  H.same(got, pack(true, false, true), "close's status, its error is e")
end)

H.test("after close a fiber is dead and resume says so", function()
  local _, got = closing(function(lib)
    local co = lib.create(function() lib.yield() end)
    lib.resume(co)
    lib.close(co)
    return flat(pack(lib.status(co)), pack(lib.resume(co)),
                pack(lib.close(co)))
  end)
  H.same(got, pack(true, 1, "dead", 2, false, "cannot resume dead coroutine",
                   1, true))
end)

H.test("close runs each __close on the closed fiber's own thread", function()
  if not V54 then return skip(NO_TBC) end
  local _, got = agree(lua54[[
  return function(lib)
    local co, seen
    co = lib.create(function()
      local _ <close> = setmetatable({}, {__close = function()
        local me = lib.running()
        seen = pack(me == co, lib.status(co), lib.isyieldable())
      end})
      lib.yield()
    end)
    lib.resume(co)
    return flat(pack(lib.close(co)), seen)
  end]])
  H.same(got, pack(true, 1, true, 3, true, "running", false))
end)

H.test("yield inside a __close run by close fails as in the built-in", function()
  if not V54 then return skip(NO_TBC) end
  local _, got = agree(lua54[[
  return function(lib)
    local co = lib.create(function()
      local _ <close> = setmetatable({}, {__close = function() lib.yield("no") end})
      lib.yield()
    end)
    lib.resume(co)
    return flat(pack(lib.close(co)), pack(lib.status(co)))
  end]])
  H.eq(bare(got[4]), "attempt to yield across a C-call boundary")
end)

H.test("close of a fiber suspended in nested pcalls closes every variable", function()
  if not V54 then return skip(NO_TBC) end
  local _, got = agree(lua54[[
  return function(lib)
    local log = {}
    local function nest(n)
      local _ <close> = closer(log, n)
      if n == 0 then return lib.yield("bottom") end
      assert(pcall(nest, n - 1))
    end
    local co = lib.create(function() nest(50) end)
    local r = pack(lib.resume(co))
    return flat(r, pack(lib.close(co)), log)
  end]])
  H.eq(got[7], 51)
end)

H.test("close of the running fiber raises", function()
  local _, got = closing(function(lib)
    local co
    co = lib.create(function()
      local close = lib.close
      return message(function() close(co) end), lib.status(co)
    end)
    return lib.resume(co)
  end)
  H.eq(bare(got[3]), "cannot close a running coroutine")
  H.eq(got[4], "running")
end)

H.test("close of a normal fiber raises", function()
  local _, got = closing(function(lib)
    local outer
    outer = lib.create(function()
      local inner = lib.create(function()
        local close = lib.close
        return message(function() close(outer) end)
      end)
      return lib.resume(inner)
    end)
    return flat(pack(lib.resume(outer)), pack(lib.status(outer)))
  end)
  H.eq(bare(got[5]), "cannot close a normal coroutine")
  H.eq(got[7], "dead")
end)

H.test("close of the main thread raises", function()
  local _, got = closing(function(lib)
    local close, main = lib.close, lib.running()
    return message(function() close(main) end)
  end)
  H.eq(got[1], true)
  H.eq(bare(got[2]), "cannot close a running coroutine")
end)

H.test("close rejects a non-coroutine as the built-in does", function()
  local function scenario(lib)
    local close = lib.close
    return message(function() close("x") end),
           message(function() close() end)
  end
  if V54 then
    agree(scenario)
  else -- no built-in close: its status's words for a non-thread
    local x, none = scenario(fs)
    H.same(pack(bare(x), bare(none)), pack(notthread("close", "x"), notthread("close")))
  end
end)

--------------------------------------------------------------------- spawn

H.test("spawn returns the fiber, then what the first resume returned", function()
  local co, ok, a, b = fs.spawn(function(x, y) fs.yield(y, x) end, 1, 2)
  H.eq(fs.isfiber(co), true)
  H.same(pack(ok, a, b), pack(true, 2, 1))
  H.eq(fs.status(co), "suspended")
  fs.close(co)
end)

H.test("spawn returns exactly the first resume's values, with nil holes", function()
  local r = pack(fs.spawn(function(...) fs.yield(...) end, nil, 1, nil))
  H.eq(r.n, 5)
  H.same(r, pack(r[1], true, nil, 1, nil))
  fs.close(r[1])
end)

H.test("spawn of a body that returns at once leaves a dead fiber", function()
  local r = pack(fs.spawn(function() return "done" end))
  H.eq(r.n, 3)
  H.same(r, pack(r[1], true, "done"))
  H.eq(fs.status(r[1]), "dead")
  local r0 = pack(fs.spawn(function() end))
  H.eq(r0.n, 2)
  H.eq(r0[2], true)
end)

H.test("spawn of a body that fails at once returns the fiber, false, err", function()
  local e = {}
  local r = pack(fs.spawn(function() error(e) end))
  H.eq(r.n, 3)
  H.eq(type(r[1]), "thread")
  H.eq(fs.isfiber(r[1]), false) -- dead already: an ordinary dead coroutine
  H.eq(r[2], false)
  H.eq(r[3], e)
  H.eq(fs.status(r[1]), "dead")
  local _, ok, err = fs.spawn(function() error("boom") end)
  H.eq(ok, false)
  H.ok(tostring(err):find("spec_api.lua:%d+: boom$"), tostring(err))
end)

H.test("spawn matches create then resume", function()
  agree(function(lib)
    local body = function(a) local b = lib.yield(a * 2) return b end
    local co, r
    if lib == fs then
      r = pack(fs.spawn(body, 21))
      co = r[1]
      r = pack(unpack(r, 2, r.n))
    else
      co = lib.create(body)
      r = pack(lib.resume(co, 21))
    end
    return flat(r, pack(lib.resume(co, "b")), pack(lib.status(co)))
  end)
end)

H.test("spawn rejects a non-function", function()
  local spawn = fs.spawn
  H.eq(raised(function() spawn(nil) end),
       "bad argument #1 to 'spawn' (function expected, got nil)")
  H.eq(raised(function() spawn() end),
       "bad argument #1 to 'spawn' (function expected, got no value)")
end)

----------------------------------------- plain coroutines through fiberswap

-- create is always the built-in one here: fiberswap's other functions must
-- then give exactly the built-in behaviour.
H.test("resume and yield of a plain coroutine behave as the built-in", function()
  agree(function(lib)
    local co = builtin.create(function(...)
      local r = pack(lib.yield(...))
      return unpack(r, 1, r.n)
    end)
    return flat(pack(lib.resume(co, nil, 1, nil)),
                pack(lib.resume(co, unpack(range(200)))),
                pack(lib.resume(co)))
  end)
end)

H.test("status of a plain coroutine behaves as the built-in", function()
  agree(function(lib)
    local co
    co = builtin.create(function() lib.yield(lib.status(co)) error("x") end)
    local r = pack(lib.status(co), select(2, lib.resume(co)), lib.status(co))
    lib.resume(co)
    return flat(r, pack(lib.status(co)))
  end)
end)

H.test("errors of a plain coroutine behave as the built-in", function()
  agree(function(lib)
    local co = builtin.create(function() error("plain") end)
    local e = {}
    local co2 = builtin.create(function() error(e) end)
    local ok2, err2 = lib.resume(co2)
    return flat(pack(lib.resume(co)), pack(lib.resume(co)), pack(ok2, err2 == e))
  end)
end)

H.test("close of a plain coroutine behaves as the built-in", function()
  if not V54 then
    -- No built-in close, and a plain coroutine has no machine stack to give
    -- back: close raises for a suspended one, says true for a dead one, and
    -- refuses a running one as 5.4 does (README, "Lua versions").
    skip(NO_TBC .. "; checked the documented close of plain coroutines")
    local close = fs.close
    local co = builtin.create(function() builtin.yield() end)
    local fresh = builtin.create(function() end)
    builtin.resume(co)
    local plain = "cannot close a plain coroutine before Lua 5.4 (close works on fibers)"
    H.eq(raised(function() close(co) end), plain)
    H.eq(raised(function() close(fresh) end), plain)
    H.eq(builtin.status(co), "suspended")
    H.same(pack(builtin.resume(co)), pack(true))
    H.same(pack(close(co)), pack(true))
    local running
    running = builtin.create(function()
      return raised(function() close(running) end)
    end)
    H.same(pack(builtin.resume(running)),
           pack(true, "cannot close a running coroutine"))
    return
  end
  agree(lua54[[
  return function(lib)
    local log = {}
    local co = builtin.create(function()
      local _ <close> = closer(log, "a")
      local _ <close> = closer(log, "b")
      lib.yield()
    end)
    lib.resume(co)
    local failing = builtin.create(function()
      local _ <close> = setmetatable({}, {__close = function() error("c") end})
      lib.yield()
    end)
    lib.resume(failing)
    local running
    running = builtin.create(function()
      local close = lib.close
      return message(function() close(running) end)
    end)
    return flat(pack(lib.close(co)), log, pack(lib.status(co)),
                pack(lib.close(failing)), pack(lib.resume(running)))
  end]])
end)

H.test("isyieldable of a plain coroutine behaves as the built-in", function()
  if not V54 then
    skip("closing a plain coroutine (no close before 5.4): it is run to " ..
         "its end instead")
  end
  agree(function(lib)
    local co = builtin.create(function() lib.yield(lib.isyieldable()) end)
    local r = pack(lib.isyieldable(co), lib.resume(co))
    r[#r + 1] = lib.isyieldable(co)
    if V54 then lib.close(co) else lib.resume(co) end
    return flat(r, pack(lib.isyieldable(co)))
  end)
end)

H.test("resume of the main thread from itself behaves as the built-in", function()
  local _, got = agree(function(lib)
    return lib.resume(lib.running(), "x")
  end)
  H.same(got, pack(true, false, RUNNING))
end)

H.test("resume of a dead or running plain coroutine behaves as the built-in", function()
  agree(function(lib)
    local co
    co = builtin.create(function() return lib.resume(co) end)
    return flat(pack(lib.resume(co)), pack(lib.resume(co)))
  end)
end)

---------------------------------------------------------------- mixed nesting

-- With the built-in library every level is a plain coroutine; with
-- fiberswap lib.create makes fibers and builtin.create plain coroutines.
H.test("fiber in plain coroutine in fiber: each yield reaches its resumer", function()
  local _, got = agree(function(lib)
    local log = {}
    local outer = lib.create(function()
      local middle = builtin.create(function()
        local inner = lib.create(function()
          log[#log + 1] = "inner " .. tostring(lib.yield("from inner"))
          return "inner done"
        end)
        log[#log + 1] = "middle got " .. select(2, lib.resume(inner))
        log[#log + 1] = "middle " .. tostring(lib.yield("from middle"))
        log[#log + 1] = "middle got " .. select(2, lib.resume(inner, "i"))
        return "middle done"
      end)
      log[#log + 1] = "outer got " .. select(2, lib.resume(middle))
      log[#log + 1] = "outer " .. tostring(lib.yield("from outer"))
      log[#log + 1] = "outer got " .. select(2, lib.resume(middle, "m"))
      return "outer done"
    end)
    local r1 = pack(lib.resume(outer))
    local r2 = pack(lib.resume(outer, "o"))
    return flat(r1, r2, log, pack(lib.status(outer)))
  end)
  H.eq(got[4], "from outer")
end)

H.test("a plain coroutine made in a fiber yields to the fiber", function()
  local _, got = agree(function(lib)
    local co = lib.create(function()
      local plain = builtin.create(function() lib.yield("p1"); return "p2" end)
      local a = select(2, lib.resume(plain))
      local b = select(2, lib.resume(plain))
      return a, b, lib.status(plain)
    end)
    return lib.resume(co)
  end)
  H.same(got, pack(true, true, "p1", "p2", "dead"))
end)

H.test("a fiber resumed from a plain coroutine yields to that coroutine", function()
  local _, got = agree(function(lib)
    local fiber = lib.create(function() lib.yield("f1"); return "f2" end)
    local plain = builtin.create(function()
      local a = select(2, lib.resume(fiber))
      lib.yield("plain yielded")
      local b = select(2, lib.resume(fiber))
      return a, b
    end)
    return flat(pack(lib.resume(plain)), pack(lib.resume(plain)),
                pack(lib.status(fiber)))
  end)
  H.same(got, pack(true, 2, true, "plain yielded", 3, true, "f1", "f2",
                   1, "dead"))
end)

H.test("a fiber yielded to one resumer can be resumed by another", function()
  agree(function(lib)
    local fiber = lib.create(function()
      local who = lib.yield("first")
      return "second " .. who
    end)
    local plain = builtin.create(function() return lib.resume(fiber) end)
    return flat(pack(lib.resume(plain)), pack(lib.resume(fiber, "main")))
  end)
end)

H.test("a fiber resumed from a fiber gets the right status words", function()
  agree(function(lib)
    local outer, inner
    outer = lib.create(function()
      inner = lib.create(function()
        lib.yield(lib.status(outer), lib.status(inner))
      end)
      local r = pack(lib.resume(inner))
      lib.yield(unpack(r, 1, r.n))
    end)
    local r = pack(lib.resume(outer))
    local s = pack(lib.status(outer), lib.status(inner))
    dispose(lib, inner)
    dispose(lib, outer)
    return flat(r, s)
  end)
end)

H.test("plain coroutines made after fibers were collected are not fibers", function()
  -- threads reuse the addresses of collected fibers' threads
  local mistaken = 0
  for _ = 1, 20 do
    local function garbage()
      for _ = 1, 50 do
        local co = fs.create(function() fs.yield() end)
        fs.resume(co)
        fs.resume(fs.create(function() end))
      end
    end
    garbage()
    collectgarbage()
    collectgarbage()
    for i = 1, 100 do
      local plain = builtin.create(function(x) builtin.yield(x) end)
      local ok, v = fs.resume(plain, i)
      if fs.isfiber(plain) or not ok or v ~= i or
         fs.status(plain) ~= "suspended" then
        mistaken = mistaken + 1
      end
    end
  end
  H.eq(mistaken, 0)
end)

-------------------------------------------- the built-in library on fibers

-- The built-in functions see a fiber's thread as dead or non-suspended;
-- they must fail cleanly and never run the fiber's code.

H.test("coroutine.resume of a fresh fiber returns false and does not run it", function()
  local ran = false
  local co = fs.create(function() ran = true; return "ran" end)
  local r = pack(builtin.resume(co))
  H.eq(r[1], false)
  H.eq(r[2], "cannot resume dead coroutine")
  H.eq(ran, false)
  H.eq(fs.status(co), "suspended")
  H.same(pack(fs.resume(co)), pack(true, "ran"))
end)

H.test("coroutine.resume of a suspended fiber returns false and does not run it", function()
  local steps = 0
  local co = fs.create(function(x)
    steps = 1
    local y = fs.yield(x)
    steps = 2
    return y
  end)
  fs.resume(co, "a")
  local r = pack(builtin.resume(co, "from builtin"))
  H.eq(r[1], false)
  -- "non-suspended" in this version's words; "dead" on 5.2 and 5.3, as
  -- the fiber yielded from a C function's frame that holds nothing
  H.eq(r[2], EMPTY or NORMAL)
  H.eq(steps, 1)
  H.eq(fs.status(co), "suspended")
  H.same(pack(fs.resume(co, "b")), pack(true, "b"))
  H.eq(steps, 2)
end)

H.test("coroutine.resume of a dead fiber returns false", function()
  local co = fs.create(function() end)
  fs.resume(co)
  H.same(pack(builtin.resume(co)), pack(false, "cannot resume dead coroutine"))
  H.eq(fs.status(co), "dead")
  local failed = fs.create(function() error("x") end)
  fs.resume(failed)
  H.same(pack(builtin.resume(failed)), pack(false, "cannot resume dead coroutine"))
  H.eq(fs.status(failed), "dead")
end)

H.test("coroutine.resume of the running fiber returns false", function()
  local co
  co = fs.create(function() return builtin.resume(co) end)
  H.same(pack(fs.resume(co)), pack(true, false, RUNNING))
end)

H.test("coroutine.close of a fresh fiber does not run it", function()
  local ran = false
  local co = fs.create(function() ran = true; return "ran" end)
  if builtin.close then
    pcall(builtin.close, co) -- the built-in sees an empty thread: any answer
  else
    skip("coroutine.close is new in Lua 5.4")
  end
  H.eq(ran, false)
  H.eq(fs.status(co), "suspended")
  H.same(pack(fs.resume(co)), pack(true, "ran"))
end)

H.test("coroutine.close of a suspended fiber runs neither it nor its __close", function()
  if not V54 then
    return skip("coroutine.close and to-be-closed variables are new in Lua 5.4")
  end
  local log = {}
  local co = fs.create(lua54[[
  return function(log) return function()
    local _ <close> = closer(log, "a")
    local v = fs.yield()
    log[#log + 1] = "resumed " .. v
  end end]](log))
  fs.resume(co)
  local r = pack(pcall(builtin.close, co))
  if r[1] then -- the built-in chose to return: then it must report failure
    H.eq(r[2], false)
  else
    H.eq(r[2], "cannot close a normal coroutine")
  end
  H.eq(#log, 0)
  H.eq(fs.status(co), "suspended")
  H.same(pack(fs.resume(co, "later")), pack(true))
  H.same(log, {"resumed later", "a"})
end)

H.test("coroutine.yield inside a fiber raises and the fiber goes on", function()
  local co = fs.create(function()
    local ok, err = pcall(builtin.yield, 1)
    return ok, err, fs.yield("still a fiber")
  end)
  H.same(pack(fs.resume(co)), pack(true, "still a fiber"))
  -- before 5.4, this version's words: the built-in yield's in a comparator
  -- of a plain coroutine (5.1 says "metamethod/C-call", LuaJIT no "a")
  local across = V54 and "attempt to yield across a C-call boundary" or
                 builtin.wrap(function()
                   local comp = function() return builtin.yield() end
                   return select(2, pcall(table.sort, {1, 2}, comp))
                 end)()
  H.same(pack(fs.resume(co, "x")), pack(true, false, across, "x"))
end)

------------------------------------------------------------------- isfiber

H.test("isfiber is true only for fibers", function()
  local co = fs.create(function() end)
  local in_wrap = fs.wrap(function() return fs.isfiber(fs.running()) end)
  H.eq(fs.isfiber(co), true)
  H.eq(in_wrap(), true)
  H.eq(fs.isfiber(builtin.create(function() end)), false)
  H.eq(fs.isfiber(builtin.running()), false)
  H.eq(fs.isfiber(in_wrap), false)
  H.eq(fs.isfiber(nil), false)
  H.eq(fs.isfiber({}), false)
  H.eq(fs.isfiber(), false)
  fs.close(co)
  H.eq(fs.isfiber(co), false) -- a dead fiber is an ordinary dead coroutine
end)

----------------------------------------------------------------- stacksize

H.test("stacksize() returns the default, as stats reports it", function()
  if math.type then
    H.eq(math.type(fs.stacksize()), "integer")
  else
    skip(NO_INTEGER)
    H.eq(fs.stacksize() % 1, 0)
  end
  -- 512 KiB on 5.4, 2 MiB on 5.1 to 5.3, 4 MiB on LuaJIT (README, "Lua versions")
  H.eq(fs.stacksize(), V54 and 524288 or jit and 4194304 or 2097152)
  H.eq(fs.stats().stacksize, fs.stacksize())
end)

H.test("stacksize(n) sets the default and returns the old one", function()
  local old = fs.stacksize()
  H.eq(fs.stacksize(65536), old)
  H.eq(fs.stacksize(), 65536)
  H.eq(fs.stats().stacksize, 65536)
  H.eq(fs.stacksize(old), 65536)
  H.eq(fs.stacksize(), old)
end)

H.test("create, wrap and spawn use the default stack size", function()
  local old = fs.stacksize(32768)
  local co = fs.create(function() end)
  local wrapped = fs.wrap(function() return fs.info(fs.running()).stacksize end)
  local spawned = fs.spawn(function() fs.yield() end)
  local explicit = fs.create(function() end, 65536)
  fs.stacksize(old)
  H.eq(fs.info(co).stacksize, 32768)
  H.eq(wrapped(), 32768)
  H.eq(fs.info(spawned).stacksize, 32768)
  H.eq(fs.info(explicit).stacksize, 65536)
  fs.close(co); fs.close(spawned); fs.close(explicit)
end)

H.test("stacksize rejects bad sizes and keeps the default", function()
  local stacksize = fs.stacksize
  local old = fs.stacksize()
  H.eq(raised(function() stacksize("x") end),
       "bad argument #1 to 'stacksize' (number expected, got string)")
  H.eq(raised(function() stacksize(1) end),
       "bad argument #1 to 'stacksize' " ..
       "(stack size out of range (16384 to 1073741824 bytes))")
  H.eq(raised(function() stacksize(2^31) end),
       "bad argument #1 to 'stacksize' " ..
       "(stack size out of range (16384 to 1073741824 bytes))")
  H.eq(fs.stacksize(), old)
end)

---------------------------------------------------------------------- info

H.test("info reports stacksize, stackused and status", function()
  local co = fs.create(function()
    local function deep(n) if n > 0 then return deep(n - 1) + 0 end fs.yield() return 0 end
    deep(50)
  end, 65536)
  local fresh = fs.info(co)
  H.eq(fresh.stacksize, 65536)
  H.eq(fresh.status, "suspended")
  fs.resume(co)
  local info = fs.info(co)
  H.eq(info.stacksize, 65536)
  H.eq(info.status, "suspended")
  if math.type then
    H.eq(math.type(info.stackused), "integer")
  else
    skip(NO_INTEGER)
    H.eq(info.stackused % 1, 0)
  end
  H.ok(info.stackused > 0, "stackused > 0")
  H.ok(info.stackused <= info.stacksize, "stackused <= stacksize")
  fs.resume(co)
  H.eq(fs.info(co).status, "dead")
end)

H.test("info reports running and normal statuses", function()
  local outer
  outer = fs.create(function()
    local inner = fs.create(function() return fs.info(outer).status end)
    return fs.info(outer).status, select(2, fs.resume(inner))
  end)
  H.same(pack(fs.resume(outer)), pack(true, "running", "normal"))
end)

H.test("info rejects anything but a thread", function()
  local info = fs.info
  H.eq(raised(function() info(1) end),
       V54 and "bad argument #1 to 'info' (thread expected, got number)"
       or notthread("info", 1))
  H.eq(raised(function() info() end),
       V54 and "bad argument #1 to 'info' (thread expected, got no value)"
       or notthread("info"))
end)

H.test("info of a plain coroutine or a dead fiber says fiber = false", function()
  local p = fs.info(builtin.create(function() end))
  H.same(pack(p.fiber, p.stacksize, p.stackused, p.status),
         pack(false, 0, 0, "suspended"))
  local co = fs.spawn(function() end)
  local d = fs.info(co)
  H.same(pack(d.fiber, d.stacksize, d.stackused, d.status),
         pack(false, 0, 0, "dead"))
  H.eq(fs.info(fs.create(print)).fiber, true)
end)

--------------------------------------------------------------------- stats

-- Live fibers after a full collection, so earlier garbage does not count.
local function live()
  collectgarbage()
  collectgarbage()
  return fs.stats().fibers
end

H.test("stats reports backend, guard, pool and default stack size", function()
  local s = fs.stats()
  H.ok(s.backend == "x86_64-sysv" or s.backend == "ucontext", tostring(s.backend))
  H.ok(s.guard == "madvise" or s.guard == "mprotect", tostring(s.guard))
  if math.type then
    H.eq(math.type(s.pooled), "integer")
    H.eq(math.type(s.fibers), "integer")
  else
    skip(NO_INTEGER)
    H.eq(s.pooled % 1, 0)
    H.eq(s.fibers % 1, 0)
  end
  H.eq(s.stacksize, fs.stacksize())
end)

H.test("stats counts fibers that hold a stack: not fresh ones", function()
  local base = live()
  local co = fs.create(function() fs.yield() end)
  H.eq(fs.stats().fibers, base) -- a fresh fiber takes its stack when started
  fs.resume(co)
  H.eq(fs.stats().fibers, base + 1)
  fs.close(co)
  H.eq(fs.stats().fibers, base)
end)

H.test("stats counts a started fiber until it returns", function()
  local base = live()
  local co = fs.create(function() fs.yield() end)
  fs.resume(co)
  H.eq(fs.stats().fibers, base + 1)
  fs.resume(co)
  H.eq(fs.stats().fibers, base)
end)

H.test("stats stops counting a fiber that failed", function()
  local base = live()
  local co = fs.create(function() fs.yield() error("x") end)
  fs.resume(co)
  H.eq(fs.stats().fibers, base + 1)
  fs.resume(co)
  H.eq(fs.stats().fibers, base)
  fs.spawn(function() error("at once") end)
  H.eq(fs.stats().fibers, base)
end)

H.test("stats stops counting a fiber that is closed", function()
  local base = live()
  local fresh = fs.create(function() end)
  local yielded = fs.create(function() fs.yield() end)
  fs.resume(yielded)
  fs.close(fresh)
  H.eq(fs.stats().fibers, base + 1)
  fs.close(yielded)
  H.eq(fs.stats().fibers, base)
end)

H.test("stats stops counting fibers that are collected", function()
  local base = live()
  local function make() -- leaves nothing behind on the caller's stack
    fs.create(function() end)
    fs.spawn(function() fs.yield() end)
    local f = fs.wrap(function() fs.yield() end)
    f()
  end
  make()
  H.ok(fs.stats().fibers >= base + 2, "the two started fibers count")
  H.eq(live(), base)
end)

H.done()
