-- demo.lua: a first tour of fiberswap from Lua, run by `make demo`.
-- A fiber is a coroutine on a machine stack of its own, so it can yield from
-- anywhere, even from inside C functions that call back into Lua.

local F = require "fiberswap" -- a drop-in for the coroutine library
local plain = coroutine        -- Lua's own, for comparison

local function title(s)
  print("\n== " .. s)
end

-- Run f(...) as a coroutine of library `lib`, answering each yield with
-- reply(yielded values).  Returns the list of first yielded values and the
-- packed results of the last resume: {true, results...} or {false, message}.
local function drive(lib, reply, f, ...)
  local co, yielded = lib.create(f), {}
  local res = table.pack(lib.resume(co, ...))
  while res[1] and lib.status(co) == "suspended" do
    yielded[#yielded + 1] = res[2]
    res = table.pack(lib.resume(co, reply(table.unpack(res, 2, res.n))))
  end
  return yielded, res
end

------------------------------------------------------------------------------
title "1. What this is"
local st = F.stats()
print(("  fiberswap %s on %s: backend %s, guard pages by %s, %d KiB stacks")
  :format(F._VERSION, _VERSION, st.backend, st.guard, st.stacksize // 1024))

------------------------------------------------------------------------------
title "2. C functions as fiber bodies"
-- print is a C function; resumed with arguments, it runs on the fiber's stack.
F.resume(F.create(print), "  print, run by a fiber:", "hello", 42)

-- table.sort as the body and F.yield itself as the comparator: C calling C,
-- and still the fiber suspends mid-sort, handing each question to its
-- resumer, whose answer (shortest first) is the comparator's result.
local fruit = { "banana", "fig", "cherry", "kiwi" }
local asked = drive(F, function(a, b) return #a < #b end,
  table.sort, fruit, F.yield)
print(("  table.sort asked its resumer %d times which is shorter: %s")
  :format(#asked, table.concat(fruit, " ")))

------------------------------------------------------------------------------
title "3. Yielding across a C boundary: plain coroutine vs fiber"
-- Each body gets the library's yield and calls it from inside a C function.
-- Both libraries run the very same code; messages are Lua's own.
local cases = {
  { name = "table.sort, the comparator yields",
    reply = function(a, b) return #a < #b end, -- the resumer decides
    body = function(yield)
      local t = { "pear", "fig", "banana" }
      table.sort(t, function(a, b) return (yield(a, b)) end)
      return table.concat(t, " ")
    end },
  { name = "string.gsub, the replacement function yields",
    reply = string.upper,
    body = function(yield)
      return (string.gsub("hello fibers", "%a+",
        function(w) return (yield(w)) end))
    end },
  { name = "load, the reader yields for each piece of source",
    reply = function(i) -- piece i of the source; nil means the end
      return ({ "return ", "6 ", "* 7" })[i]
    end,
    body = function(yield)
      local i = 0
      local chunk = assert(load(function() i = i + 1; return (yield(i)) end))
      return chunk()
    end },
}
for _, c in ipairs(cases) do
  print("  " .. c.name)
  local _, res = drive(plain, c.reply, c.body, plain.yield)
  -- drop the "chunk:line: " position some paths add, so the lines align
  local msg = res[1] and "(no error)" or res[2]:gsub("^[^:]+:%d+: ", "")
  print("    plain coroutine: " .. msg)
  local yielded, fres = drive(F, c.reply, c.body, F.yield)
  print(("    fiber:           yielded %d times, then returned %s")
    :format(#yielded, tostring(fres[2])))
end

------------------------------------------------------------------------------
title "4. A pull parser from a push parser (lua-expat)"
-- expat pushes events into callbacks; each callback yields its event, so
-- the loop below pulls them one at a time, as if from an iterator.
local ok, lxp = pcall(require, "lxp")
if not ok then
  print("  lxp not found: to see this part, install the Debian package"
    .. " lua-expat")
else
  local doc = '<order id="7"><item>tea</item><item qty="2">milk</item></order>'
  local events = F.wrap(function()
    local p = lxp.new {
      StartElement = function(_, name, attrs) F.yield("start", name, attrs) end,
      CharacterData = function(_, text) F.yield("text", text) end,
      EndElement = function(_, name) F.yield("end", name) end,
    }
    assert(p:parse(doc))
    assert(p:parse()) -- end of document
    p:close()
  end)
  for kind, what, attrs in events do
    if kind == "text" then what = ("%q"):format(what) end
    local line = ("  %-5s %s"):format(kind, what)
    for _, k in ipairs(attrs or {}) do -- attributes in document order
      line = line .. (" %s=%q"):format(k, attrs[k])
    end
    print(line)
  end
end

------------------------------------------------------------------------------
title "5. Speed, roughly"
-- One resume+yield round trip, plain coroutine vs fiber: best of 3 runs of
-- N each, run alternately.  os.clock on a busy machine is only a hint.
local N = 300000
local function roundtrip(lib)
  local resume, yield = lib.resume, lib.yield
  local co = lib.create(function() while true do yield() end end)
  resume(co)
  local t0 = os.clock()
  for _ = 1, N do resume(co) end
  return os.clock() - t0
end
local tplain, tfiber = math.huge, math.huge
for _ = 1, 3 do
  tplain = math.min(tplain, roundtrip(plain))
  tfiber = math.min(tfiber, roundtrip(F))
end
print(("  round trip: fiber %.0f ns, plain coroutine %.0f ns"
  .. " (fiber/plain %.2f)")
  :format(tfiber / N * 1e9, tplain / N * 1e9, tfiber / tplain))
print("  a rough figure from os.clock; see `make bench` for the real one")
