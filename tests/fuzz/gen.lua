-- gen.lua: a deterministic generator of random Lua 5.4 programs that
-- exercise a coroutine library through the global `lib`.
--
--   local gen = dofile "tests/fuzz/gen.lua"
--   local ast = gen.generate(seed)        -- a tree of statements
--   local src = gen.render(ast)           -- Lua source text
--
-- A generated program expects these globals (supplied by diff.lua):
--   lib          the coroutine library under test (coroutine or fiberswap)
--   plaincreate  the built-in coroutine.create (== lib.create for `coroutine`)
--   L(tag, ...)  appends one line to the trace: the tag and the values
--   print        also traced
-- Every loop is bounded, a function fi only creates, wraps or calls fj
-- with j > i, so every program terminates. Yields appear only where a
-- plain coroutine may yield too (never in __close handlers, xpcall
-- message handlers or C callbacks); yields reached from the main thread
-- fail the same way in both libraries.
--
-- The tree: a block is a list of statements; a statement is either
-- {text = "..."} or {head = "...", body = block, tail = "..."}.
-- diff.lua shrinks a program by deleting statements or splicing bodies.

local M = {}

-- splitmix64: independent of math.random, identical on every platform.
local function rng(seed)
  local s = seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019
  local r = {}
  function r.next()
    s = s + 0x9E3779B97F4A7C15
    local z = s
    z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
    z = (z ~ (z >> 27)) * 0x94D049BB133111EB
    return z ~ (z >> 31)
  end
  function r.int(lo, hi)            -- lo..hi inclusive
    return lo + ((r.next() >> 1) % (hi - lo + 1))
  end
  function r.chance(p) return r.int(1, 1000) <= p * 1000 end
  function r.pick(t) return t[r.int(1, #t)] end
  -- weighted choice: list of {weight, value}
  function r.weighted(t)
    local total = 0
    for _, e in ipairs(t) do total = total + e[1] end
    local x = r.int(1, total)
    for _, e in ipairs(t) do
      x = x - e[1]
      if x <= 0 then return e[2] end
    end
  end
  return r
end

local NH, NW = 4, 3                 -- handle slots C[1..NH], wrap slots W[1..NW]

local function S(text) return {text = text} end
local function B(head, body, tail) return {head = head, body = body, tail = tail} end

function M.generate(seed, opts)
  opts = opts or {}
  local R = rng(seed)
  local nf = R.int(2, 6)
  local tagn = 0
  local function tag(p) tagn = tagn + 1; return p .. tagn end

  -- value expressions
  local function scalar()
    return R.weighted{
      {3, function() return tostring(R.int(-5, 99)) end},
      {1, function() return "1.5" end},
      {3, function() return string.format("%q", "v" .. R.int(0, 20)) end},
      {2, function() return "nil" end},
      {1, function() return R.chance(0.5) and "true" or "false" end},
      {1, function() return "{}" end},
    }()
  end
  local function value(ctx)
    return R.weighted{
      {6, scalar},
      {2, function() return "lib.running()" end},
      {1, function() return "C[" .. R.int(1, NH) .. "]" end},
      {1, function() return ctx.fn > 0 and R.pick{"a", "b"} or scalar() end},
      {1, function() return "MAIN" end},
    }()
  end
  local function args(ctx, lead)
    local t = {}
    if lead then t[1] = lead end
    for _ = 1, R.int(0, 3) do t[#t + 1] = value(ctx) end
    return table.concat(t, ", ")
  end
  local function comma(a) return a == "" and "" or ", " .. a end
  local function errval()
    return R.weighted{
      {4, function() return string.format("%q", "e" .. R.int(0, 9)) end},
      {1, function() return string.format("%q, 0", "z" .. R.int(0, 9)) end},
      {1, function() return string.format("%q, 2", "l" .. R.int(0, 9)) end},
      {2, function() return "{code = " .. R.int(0, 9) .. "}" end},
      {2, function() return "nil" end},
      {2, function() return tostring(R.int(0, 99)) end},
      {1, function() return "false" end},
    }()
  end
  local function handle() return "C[" .. R.int(1, NH) .. "]" end
  local function callee(ctx)      -- a function fj with j > ctx.fn, or nil
    if ctx.fn >= nf then return nil end
    return "f" .. R.int(ctx.fn + 1, nf)
  end

  local block                       -- forward

  -- statements that end a block (nothing after them would run)
  local function terminator(ctx)
    return R.weighted{
      {3, function() return S("error(" .. errval() .. ")") end},
      {1, function() return S("local _ = nil + " .. R.int(1, 9)) end},
      {2, function() return S("do return " .. args(ctx) .. " end") end},
      {1, function() return S("lib.close(lib.running())") end},
    }()
  end

  local function stmt(ctx, depth)
    local deep = depth < (opts.maxdepth or 3)
    local kinds = {
      {ctx.main and 0 or 10, function()             -- yield
        return S(string.format('L(%q, lib.yield(%s))', tag("y"), args(ctx)))
      end},
      {ctx.fn > 0 and 8 or 14, function()              -- resume a handle
        local h = handle()
        if ctx.fn == 0 or R.chance(0.85) then
          return S(string.format('if %s then L(%q, lib.resume(%s)) end',
            h, tag("r"), args(ctx, h)))
        end
        return S(string.format('L(%q, lib.resume(%s))', tag("r"), args(ctx, h)))
      end},
      {4, function()              -- resume the resumer / a thread argument
        local v = ctx.fn > 0 and R.pick{"a", "b"} or "MAIN"
        return S(string.format('if type(%s) == "thread" then L(%q, lib.resume(%s)) end',
          v, tag("ra"), args(ctx, v)))
      end},
      {3, function()              -- resume / close / status of itself
        return R.weighted{
          {2, function() return S(string.format('L(%q, lib.resume(%s))', tag("rs"),
            args(ctx, "(lib.running())"))) end},
          {2, function() return S(string.format('L(%q, pcall(function() ' ..
            'local r = table.pack(lib.close((lib.running()))) return table.unpack(r, 1, r.n) end))',
            tag("cs"))) end},
          {1, function() return S(string.format('L(%q, lib.status((lib.running())))', tag("ss"))) end},
        }()
      end},
      {5, function()              -- status
        local h = handle()
        return S(string.format('if %s then L(%q, lib.status(%s)) end', h, tag("s"), h))
      end},
      {ctx.fn > 0 and 6 or 14, function()              -- create
        local f = callee(ctx)
        if not f then return S(string.format('L(%q, lib.isyieldable())', tag("iy"))) end
        local how = R.chance(opts.mixed or 0.25) and "plaincreate" or "lib.create"
        return S(string.format('%s = %s(%s) L(%q, %s)', handle(), how, f, tag("c"), "true"))
      end},
      {2, function()              -- create from an inline function
        if not deep then return S(string.format('L(%q, lib.running())', tag("run"))) end
        local how = R.chance(opts.mixed or 0.25) and "plaincreate" or "lib.create"
        local h = handle()
        local inner = {fn = ctx.fn, inline = true}
        return B(string.format('%s = %s(function(a, b)', h, how),
          block(inner, depth + 1, R.int(1, 4)), 'end)')
      end},
      {4, function()              -- wrap
        local f = callee(ctx)
        if not f then return S(string.format('L(%q, lib.isyieldable())', tag("iy"))) end
        return S(string.format('W[%d] = lib.wrap(%s)', R.int(1, NW), f))
      end},
      {5, function()              -- call a wrap
        local w = "W[" .. R.int(1, NW) .. "]"
        if R.chance(0.5) then
          return S(string.format('if %s then L(%q, pcall(%s)) end', w, tag("wp"), args(ctx, w)))
        end
        return S(string.format('if %s then L(%q, %s(%s)) end', w, tag("w"), w, args(ctx)))
      end},
      {5, function()              -- close
        local h = handle()
        if R.chance(0.8) then
          return S(string.format('if %s then L(%q, lib.close(%s)) end', h, tag("cl"), h))
        end
        return S(string.format('L(%q, pcall(function() ' ..
          'local r = table.pack(lib.close(%s)) return table.unpack(r, 1, r.n) end))', tag("clp"), h))
      end},
      {3, function()              -- running
        return S(string.format('L(%q, lib.running())', tag("run")))
      end},
      {3, function()              -- isyieldable
        if R.chance(0.5) then
          return S(string.format('L(%q, lib.isyieldable())', tag("iy")))
        end
        local h = handle()
        return S(string.format('if %s then L(%q, lib.isyieldable(%s)) end', h, tag("iy"), h))
      end},
      {3, function()              -- gc
        return S(R.pick{'collectgarbage("step")', 'collectgarbage("collect")',
                        'collectgarbage()', 'collectgarbage("step", 10)'})
      end},
      {2, function()              -- drop a handle
        return S(handle() .. " = nil")
      end},
      {2, function()              -- print
        return S(string.format('print(%q, %s)', tag("p"), value(ctx)))
      end},
      {3, function()              -- direct call of a later function
        local f = callee(ctx)
        if not f then return S(string.format('L(%q, lib.running())', tag("run"))) end
        if ctx.fn == 0 or R.chance(0.6) then
          return S(string.format('L(%q, pcall(%s))', tag("pc"), args(ctx, f)))
        end
        return S(string.format('L(%q, %s(%s))', tag("call"), f, args(ctx)))
      end},
    }
    local extra = {
      {ctx.main and 0 or 3, function()              -- a yield inside a metamethod called from Lua
        local e = R.pick{"MM + 1", "MM < MM", "MM.k" .. R.int(0, 9), 'MM .. "s"', "#MM",
                         "MM(" .. args(ctx) .. ")", "MM == MM2", "MM[1] + MM[2]"}
        return S(string.format('L(%q, %s)', tag("mm"), e))
      end},
      {ctx.main and 0 or 2, function()              -- a yield inside a generic-for iterator
        return S(string.format('for i, v in YIT, %d, 0 do L(%q, i, v) end', R.int(1, 3), tag("it")))
      end},
      {2, function()              -- a C function as the body
        -- (not lib.create or lib.wrap: fiberswap's take a stack size second,
        -- which the built-in ones ignore: an intended difference)
        local f = R.pick{"lib.yield", "lib.running", "lib.isyieldable", "lib.status",
                         "select", "pcall", "error", "lib.resume", "lib.close", "type",
                         "table.unpack"}
        if R.chance(0.3) then
          return S(string.format('W[%d] = lib.wrap(%s)', R.int(1, NW), f))
        end
        local how = R.chance(opts.mixed or 0.25) and "plaincreate" or "lib.create"
        return S(string.format('%s = %s(%s)', handle(), how, f))
      end},
      {2, function()              -- a bad argument
        local e = R.pick{"lib.resume(nil)", "lib.resume(42)", "lib.resume()", "lib.status({})",
                         "lib.status()", "lib.close(type)", "lib.close(nil)", "lib.create(nil)",
                         "lib.create({})", "lib.wrap(1)", "lib.wrap()", "lib.isyieldable(\"x\")",
                         "lib.isyieldable(false)", "lib.resume(W[1])", "lib.close(MM)"}
        return S(string.format('L(%q, pcall(function() local r = table.pack(%s) return table.unpack(r, 1, r.n) end))',
          tag("ae"), e))
      end},
      {ctx.main and 0 or 2, function()              -- many values each way
        local n = R.pick{0, 3, 250, 7999, 8001, 100000}
        if R.chance(0.5) then
          return S(string.format('L(%q, select("#", lib.yield(table.unpack(BIG, 1, %d))))', tag("my"), n))
        end
        local h = handle()
        return S(string.format('if %s then L(%q, lib.resume(%s, table.unpack(BIG, 1, %d))) end',
          h, tag("mr"), h, n))
      end},
      {1, function()              -- a deep chain of nested coroutines
        local how = R.pick{"lib.create", "plaincreate", '"MIXED"'}
        return S(string.format('L(%q, DEEP(%d, %d, %s))', tag("deep"),
          R.pick(opts.shallow and {3, 10, 60, 190} or {3, 10, 60, 190, 250, 400}), R.int(0, 3), how))
      end},
      {1, function()              -- a wrap as a generic-for iterator
        local f = callee(ctx)
        if not f then return S(string.format('L(%q, lib.running())', tag("run"))) end
        return S(string.format('for v, w in lib.wrap(%s) do L(%q, v, w) end', f, tag("wf")))
      end},
    }
    for _, k in ipairs(extra) do kinds[#kinds + 1] = k end
    if deep then
      local more = {
        {5, function()            -- pcall around a block
          return B('L("' .. tag("p") .. '", pcall(function(...)', block(ctx, depth + 1),
                   '\nend' .. comma(args(ctx)) .. '))')
        end},
        {4, function()            -- xpcall around a block
          return B('L("' .. tag("x") .. '", xpcall(function(...)', block(ctx, depth + 1),
                   '\nend, H' .. comma(args(ctx)) .. '))')
        end},
        {6, function()            -- to-be-closed variable
          local t = tag("t")
          local init
          local flags = (R.chance(opts.probe or 0.15) and "p" or "") ..
                        (R.chance(0.25) and "y" or "")
          if R.chance(0.1) then init = R.pick{"nil", "false"}; flags = ""
          elseif R.chance(0.2) then
            init = string.format("T(%q, %s, %q)", t, (errval():gsub(", %d$", "")), flags)
          else init = string.format("T(%q, nil, %q)", t, flags) end
          local body = block(ctx, depth + 1)
          if flags:find("y") then body[#body + 1] = S(t .. ".ok = true") end
          return B(string.format('do local %s <close> = %s', t, init), body, 'end')
        end},
        {4, function()            -- bounded loop
          return B(string.format('for _ = 1, %d do', R.int(1, 3)), block(ctx, depth + 1), 'end')
        end},
        {3, function()            -- drive a handle while suspended
          local h = handle()
          return B(string.format('for _ = 1, %d do if %s and lib.status(%s) == "suspended" then',
                     R.int(2, 4), h, h),
                   {S(string.format('L(%q, lib.resume(%s))', tag("d"), args(ctx, h)))},
                   'end end')
        end},
      }
      for _, k in ipairs(more) do kinds[#kinds + 1] = k end
    end
    return R.weighted(kinds)()
  end

  function block(ctx, depth, n)
    local b = {}
    n = n or R.int(1, depth == 0 and 7 or 4)
    for _ = 1, n do b[#b + 1] = stmt(ctx, depth) end
    if R.chance(ctx.fn > 0 and 0.2 or 0.05) then b[#b + 1] = terminator(ctx) end
    return b
  end

  local prog = {}
  local names = {}
  for i = 1, nf do names[i] = "f" .. i end
  prog[#prog + 1] = S("local " .. table.concat(names, ", "))
  for i = 1, nf do
    local body = {}
    if R.chance(0.3) then body[1] = S(string.format('L(%q, a, b)', tag("in"))) end
    for _, s in ipairs(block({fn = i}, 1, R.int(1, 6))) do body[#body + 1] = s end
    if R.chance(0.5) then body[#body + 1] = S("do return " .. args({fn = i}) .. " end") end
    prog[#prog + 1] = B(string.format("function f%d(a, b)", i), body, "end")
  end
  for k = 1, R.int(1, 3) do
    local how = R.chance(0.2) and "plaincreate" or "lib.create"
    prog[#prog + 1] = S(string.format("C[%d] = %s(f%d)", k, how, R.int(1, nf)))
  end
  for _, s in ipairs(block({fn = 0, main = true}, 0, R.int(3, 9))) do prog[#prog + 1] = s end
  prog[#prog + 1] = S("FINISH()")
  return prog
end

-- The prelude every program runs with (part of the rendered source).
M.prelude = [[
local lib, plaincreate, L = lib, plaincreate, L
local MAIN = lib.running()
local C, W = {}, {}
local function H(e) L("handler", e) return "handled" end
-- A to-be-closed value. flags: "p" logs running/isyieldable inside
-- __close; "y" yields inside __close when the block was left normally
-- (the block sets .ok as its last statement), where Lua 5.4 allows it.
local function T(name, err, flags)
  return setmetatable({}, {__close = function(o, e)
    L("__close " .. name, e)
    if flags and flags:find("p") then
      L("__close.probe " .. name, lib.running(), lib.isyieldable())
    end
    if o.ok and flags:find("y") then L("__close.y " .. name, lib.yield("close " .. name)) end
    if err ~= nil then error(err, 0) end
  end})
end
-- Metamethods that yield, called from Lua code (yieldable in 5.4).
local MMT = {
  __add = function(x, y) return (L("mm.add", lib.yield("add"))) end,
  __lt = function(x, y) return (L("mm.lt", lib.yield("lt"))) end,
  __index = function(t, k) return (L("mm.index", lib.yield("index", k))) end,
  __concat = function(x, y) return (L("mm.concat", lib.yield("concat"))) end,
  __len = function(x) return (L("mm.len", lib.yield("len"))) end,
  __call = function(self, ...) return L("mm.call", lib.yield("call", ...)) end,
  __eq = function(x, y) return (L("mm.eq", lib.yield("eq"))) end,
}
local MM, MM2 = setmetatable({}, MMT), setmetatable({}, MMT)
-- An iterator that yields.
local function YIT(n, i) if i < n then return i + 1, lib.yield("it", i) end end
-- A chain of n nested coroutines, each resuming the next; the innermost
-- returns (act 0), yields (1), fails (2) or closes itself (3).
local function DEEP(n, act, mk)
  if n == 0 then
    if act == 1 then return lib.yield("bottom")
    elseif act == 2 then error("bottom")
    elseif act == 3 then return lib.close((lib.running()))
    else return "bottom" end
  end
  local make = mk
  if mk == "MIXED" then make = n % 2 == 0 and lib.create or plaincreate end
  local co = make(DEEP)
  local r = table.pack(lib.resume(co, n - 1, act, mk))
  if not r[1] then return false, n, r[2] end
  return table.unpack(r, 2, r.n)
end
local function FINISH()
  for k = 1, 4 do
    local co = C[k]
    if co then
      for _ = 1, 3 do
        if lib.status(co) == "suspended" then L("fin.resume" .. k, lib.resume(co)) end
      end
      L("fin.status" .. k, lib.status(co))
      L("fin.close" .. k, pcall(function() local r = table.pack(lib.close(co)) return table.unpack(r, 1, r.n) end))
      L("fin.status" .. k, lib.status(co))
    end
  end
end
]]

local function render_block(b, indent, out)
  for _, s in ipairs(b) do
    if s.text then
      out[#out + 1] = indent .. s.text
    else
      out[#out + 1] = indent .. s.head
      render_block(s.body, indent .. "  ", out)
      out[#out + 1] = indent .. (s.tail:gsub("^\n", ""))
    end
  end
end

function M.render(prog, with_prelude)
  local out = {}
  if with_prelude ~= false then out[1] = M.prelude end
  render_block(prog, "", out)
  return table.concat(out, "\n") .. "\n"
end

return M
