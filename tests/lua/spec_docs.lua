-- spec_docs.lua: what README.md promises about the Lua module, checked.
-- Each test runs a README example or checks a behaviour the README states.
local H = require "harness"
local fiberswap = require "fiberswap"
local builtin = coroutine

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

H.test("the per-function examples give what the README shows", function()
  local co = fiberswap.create(function(x) return x * 2 end, 64 * 1024)
  H.same(table.pack(fiberswap.resume(co, 21)), table.pack(true, 42))
  H.same(table.pack(fiberswap.resume(co)),
         table.pack(false, "cannot resume dead coroutine"))
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
  H.same(table.pack(gen(), gen(), gen()), table.pack(1, 2, 3))
  H.eq(fiberswap.isfiber(fiberswap.create(print)), true)
  H.eq(fiberswap.isfiber(builtin.create(print)), false)
  local log = {}
  local c = fiberswap.create(function()
    local _ <close> = setmetatable({}, {__close = function() log[#log + 1] = "closed" end})
    fiberswap.yield()
  end)
  fiberswap.resume(c)
  H.eq(fiberswap.close(c), true)
  H.eq(log[1], "closed")
end)

H.test("the built-in library never runs a fiber, as the README says", function()
  local ran = false
  local co = fiberswap.create(function() ran = true fiberswap.yield() end)
  H.same(table.pack(builtin.resume(co)),
         table.pack(false, "cannot resume dead coroutine"))
  H.eq(builtin.status(co), "dead")
  H.eq(ran, false)
  fiberswap.resume(co)
  H.same(table.pack(builtin.resume(co)),
         table.pack(false, "cannot resume non-suspended coroutine"))
  H.eq(builtin.status(co), "normal")
  H.eq(fiberswap.status(co), "suspended")
  fiberswap.close(co)
end)

H.test("a fiber's own code cannot yield with the built-in yield", function()
  H.same(table.pack(fiberswap.resume(fiberswap.create(function() builtin.yield() end))),
         table.pack(false, "attempt to yield across a C-call boundary"))
end)

H.test("yield inside a __gc finalizer: refused, with the README's message", function()
  local err
  fiberswap.resume(fiberswap.create(function()
    setmetatable({}, {__gc = function() err = select(2, pcall(fiberswap.yield)) end})
    collectgarbage()
  end))
  H.eq(err, "attempt to yield from inside a __gc metamethod " ..
            "(it would leave the collector stopped)")
end)

H.test("a failed fiber's traceback names the failing line, then [C]: in ?", function()
  local line = debug.getinfo(1, "l").currentline + 1
  local co = fiberswap.create(function() error("boom") end)
  fiberswap.resume(co)
  local tb = debug.traceback(co)
  H.ok(tb:find(":" .. line .. ":", 1, true), tb)
  H.ok(tb:find("%[C%]: in %?\n?$"), tb)
end)

H.test("the README's default stack size and range are the module's", function()
  H.eq(fiberswap.stacksize(), 512 * 1024)
  H.raises("stack size out of range (16384 to 1073741824 bytes)",
           fiberswap.create, print, 16383)
end)

H.done()
