-- spec_cboundary.lua: fibers yielding across C frames, where coroutines cannot.
-- A yield inside any C call works in a fiber, values crossing both ways; a plain coroutine is refused at that spot.
-- Runs on Lua 5.1-5.4 and LuaJIT 2.1: where a version's own library differs
-- (raw table access before 5.3, no yield across pcall in 5.1, no `<close>`
-- before 5.4...) the test compares with that library or prints a line
-- "# skipped on <version>: <reason>".
local H = require "harness"
local fs = require "fiberswap"
local T = require "fiberswap_test"
local lxp = require "lxp"
local lpeg = require "lpeg"

local function pack(...) return {n = select("#", ...), ...} end
local unpack = table.unpack or rawget(_G, "unpack") -- 5.1 and LuaJIT: a global

local JIT = rawget(_G, "jit") -- LuaJIT only
local VERSION = JIT and JIT.version or _VERSION

-- Print why part of a test, or a whole test, does not run on this version.
local function skip(reason)
  print("# skipped on " .. VERSION .. ": " .. reason)
end

-- What Lua's own coroutine library says when a yield meets a C frame, asked
-- of it at run time: "attempt to yield across a C-call boundary" from 5.2
-- on, "... across metamethod/C-call boundary" in 5.1, "... across C-call
-- boundary" in LuaJIT.
local CBOUND = select(2, coroutine.resume(coroutine.create(function()
  return ("x"):gsub(".", coroutine.yield)
end)))
if _VERSION == "Lua 5.4" then
  assert(CBOUND == "attempt to yield across a C-call boundary", CBOUND)
end

-- The first resume of body(coroutine.yield, ...) in a plain coroutine of
-- the built-in library, packed.  The coroutine is closed afterwards (where
-- the library can).  LuaJIT puts the position of the Lua function that
-- called yield (unless by a tail call) in front of its refusal; that prefix
-- is dropped, so that the refusal compares with CBOUND on every version.
local function plain(body, ...)
  local co = coroutine.create(body)
  local r = pack(coroutine.resume(co, coroutine.yield, ...))
  if coroutine.close then coroutine.close(co) end
  for i = 1, JIT and r.n or 0 do
    if type(r[i]) == "string" and r[i]:match("^[^\n]-:%d+: (.*)$") == CBOUND then
      r[i] = CBOUND
    end
  end
  return r
end

-- Resume fiber co with the given values, then keep resuming it with
-- answer(...) of what it yielded until it stops.  Returns the list of its
-- yields (each packed) and the last resume's results (packed).
local function drive(co, answer, ...)
  local yields = {}
  local r = pack(fs.resume(co, ...))
  while r[1] and fs.status(co) == "suspended" do
    local y = pack(unpack(r, 2, r.n))
    yields[#yields + 1] = y
    r = pack(fs.resume(co, answer(unpack(y, 1, y.n))))
  end
  return yields, r
end

-- The first value of each packed yield, as a list.
local function firsts(yields)
  local t = {}
  for i, y in ipairs(yields) do t[i] = y[1] end
  return t
end

-- A packed list of values as one string, for comparing transcripts.
local function show(r)
  local t = {}
  for i = 1, r.n do t[i] = tostring(r[i]) end
  return table.concat(t, " ")
end

-- ------------------------------------------------------ standard library

local function sortbody(yield, list)
  table.sort(list, function(a, b) return yield(a, b) end)
  return "sorted"
end

H.test("table.sort comparator yields each pair in order and sorts by the answers", function()
  local input = {9, 4, 7, 1, 8, 2, 6, 3, 5, 0, 14, 11, 13, 10, 12}
  -- Up to 100 elements Lua's sort picks no random pivot, so a direct sort
  -- of the same list asks the same questions in the same order.
  local direct, asked = {unpack(input)}, {}
  table.sort(direct, function(a, b)
    asked[#asked + 1] = a .. "<" .. b
    return a < b
  end)
  local list = {unpack(input)}
  local yields, r = drive(fs.create(sortbody), function(a, b) return a < b end,
                          fs.yield, list)
  local seen = {}
  for i, y in ipairs(yields) do seen[i] = y[1] .. "<" .. y[2] end
  H.same(r, {true, "sorted", n = 2})
  H.eq(#seen, #asked, "comparisons")
  H.same(seen, asked, "comparisons")
  H.same(list, direct)
  H.same(plain(sortbody, {2, 1}), {false, CBOUND, n = 2})
end)

local function gsubbody(yield, s)
  return s:gsub("%a+", function(word) return yield(word) end)
end

H.test("string.gsub replacement function yields each match and uses the resumed value", function()
  local yields, r = drive(fs.create(gsubbody), string.upper, fs.yield,
                          "hello, fiber world")
  H.same(firsts(yields), {"hello", "fiber", "world"})
  H.same(r, {true, "HELLO, FIBER WORLD", 3, n = 3})
  H.same(plain(gsubbody, "hi"), {false, CBOUND, n = 2})
end)

local function loadbody(yield)
  local f, err = load(function() return yield("more") end, "=pieces")
  if not f then return nil, err end
  return f(40)
end

H.test("load reader yields and the resumes pass the chunk in pieces", function()
  local pieces = {"local n = ...; retu", "rn n ", "+ 2, 'done'"}
  local reads = 0 -- how often load reads without fibers
  assert(load(function() reads = reads + 1; return pieces[reads] end))
  local i = 0
  local yields, r = drive(fs.create(loadbody), function(what)
    H.eq(what, "more")
    i = i + 1
    return pieces[i]
  end, fs.yield)
  H.eq(#yields, reads, "reader calls")
  H.same(r, {true, 42, "done", n = 3})
  -- load catches the refusal and returns it as its error message.
  H.same(plain(loadbody), {true, nil, CBOUND, n = 3})
end)

-- ----------------------------------------- metamethods called from C code

local function indexbody(yield)
  local proxy = setmetatable({}, {
    __index = function(_, k) return yield(k) end,
    __len = function() return 3 end,
  })
  return table.concat(proxy, ",")
end

-- Whether this version's library reaches a metamethod from C where the
-- tests below expect it: from 5.3 on table.concat, table.unpack and
-- table.insert go through lua_geti/lua_seti and luaL_len; before, they read
-- and write tables raw (5.2's luaL_len alone honours __len).
local function reaches(use)
  local hit = false
  pcall(use, function() hit = true end)
  return hit
end
local CONCAT_INDEX = reaches(function(mark)
  table.concat(setmetatable({}, {__index = function() mark() return "x" end}), ",", 1, 1)
end)
local UNPACK_LEN = reaches(function(mark)
  unpack(setmetatable({}, {__len = function() mark() return 0 end}))
end)
local UNPACK_INDEX = reaches(function(mark)
  unpack(setmetatable({}, {__index = function() mark() end}), 1, 1)
end)
local INSERT_NEWINDEX = reaches(function(mark)
  table.insert(setmetatable({}, {__newindex = function() mark() end}), "x")
end)
if _VERSION == "Lua 5.4" then -- nothing of these tests is skipped on 5.4
  assert(CONCAT_INDEX and UNPACK_LEN and UNPACK_INDEX and INSERT_NEWINDEX)
end

if CONCAT_INDEX then
  H.test("__index reached by table.concat (lua_geti) yields each key", function()
    local yields, r = drive(fs.create(indexbody), function(k) return "v" .. k end,
                            fs.yield)
    H.same(firsts(yields), {1, 2, 3})
    H.same(r, {true, "v1,v2,v3", n = 2})
    H.same(plain(indexbody), {false, CBOUND, n = 2})
  end)
else
  skip("__index reached by table.concat: this version's table.concat reads raw " ..
       "(the string.gsub test below reaches __index from C instead)")
end

local function gsubindexbody(yield)
  local proxy = setmetatable({}, {__index = function(_, k) return yield(k) end})
  return (("a-b-c"):gsub("%a", proxy))
end

H.test("__index reached by string.gsub's table replacement (lua_gettable) yields each match", function()
  local yields, r = drive(fs.create(gsubindexbody), string.upper, fs.yield)
  H.same(firsts(yields), {"a", "b", "c"})
  H.same(r, {true, "A-B-C", n = 2})
  H.same(plain(gsubindexbody), {false, CBOUND, n = 2})
end)

local function lenbody(yield)
  local proxy = setmetatable({}, {
    __index = function(_, k) return k * 10 end,
    __len = function() return yield("length?") end,
  })
  return unpack(proxy)
end

if UNPACK_LEN then
  H.test("__len reached by table.unpack (luaL_len) yields and the answer is the length", function()
    local yields, r = drive(fs.create(lenbody), function() return 4 end, fs.yield)
    H.same(firsts(yields), {"length?"})
    -- What the same call gives outside any coroutine: 5.2's unpack reads
    -- the elements raw (nil here), 5.3's and 5.4's through __index.
    H.same(r, pack(true, lenbody(function() return 4 end)), "as a direct call")
    if UNPACK_INDEX then H.same(r, {true, 10, 20, 30, 40, n = 5}) end
    H.same(plain(lenbody), {false, CBOUND, n = 2})
  end)
else
  skip("__len reached by table.unpack: this version's table.unpack (and #) " ..
       "ignore __len on tables")
end

local function newindexbody(yield)
  local proxy = setmetatable({}, {
    __newindex = function(t, k, v) rawset(t, k, yield(k, v)) end,
    __len = function() return 2 end,
  })
  table.insert(proxy, "x")
  return rawget(proxy, 3)
end

if INSERT_NEWINDEX then
  H.test("__newindex reached by table.insert (lua_seti) yields key and value", function()
    local yields, r = drive(fs.create(newindexbody),
                            function(_, v) return v:upper() end, fs.yield)
    H.eq(#yields, 1)
    H.same(yields[1], {3, "x", n = 2})
    H.same(r, {true, "X", n = 2})
    H.same(plain(newindexbody), {false, CBOUND, n = 2})
  end)
else
  skip("__newindex reached by table.insert: this version's table.insert writes raw")
end

local function ltbody(yield)
  local mt = {__lt = function(a, b) return yield(a.v, b.v) end}
  local items = {}
  for i, v in ipairs({30, 10, 20, 50, 40}) do items[i] = setmetatable({v = v}, mt) end
  table.sort(items)
  local out = {}
  for i, item in ipairs(items) do out[i] = item.v end
  return table.concat(out, " ")
end

H.test("__lt reached by table.sort without comparator (lua_lessthan) yields each pair", function()
  local yields, r = drive(fs.create(ltbody), function(a, b) return a < b end,
                          fs.yield)
  H.ok(#yields >= 4, "at least n - 1 comparisons")
  for _, y in ipairs(yields) do H.eq(y.n, 2, "values per comparison") end
  H.same(r, {true, "10 20 30 40 50", n = 2})
  H.same(plain(ltbody), {false, CBOUND, n = 2})
end)

local function tostringbody(yield)
  return tostring(setmetatable({}, {
    __tostring = function() return yield("name?") end,
  }))
end

H.test("__tostring reached by tostring (luaL_tolstring) yields and returns the answer", function()
  local yields, r = drive(fs.create(tostringbody), function() return "proxy#1" end,
                          fs.yield)
  H.same(firsts(yields), {"name?"})
  H.same(r, {true, "proxy#1", n = 2})
  if JIT then
    -- LuaJIT's tostring is a VM fast function that calls __tostring from the
    -- VM: a plain coroutine may yield there too, just as the fiber did.
    skip("__tostring refusal in a plain coroutine: LuaJIT lets it yield there")
    H.same(plain(tostringbody), {true, "name?", n = 2})
  else
    H.same(plain(tostringbody), {false, CBOUND, n = 2})
  end
end)

-- ------------------------------------------------------------ pcall, xpcall

-- Whether a plain coroutine may yield across pcall and xpcall: from 5.2 on
-- and in LuaJIT; Lua 5.1 refuses it with CBOUND.
local PCALL_YIELDS = select(2, coroutine.resume(coroutine.create(function()
  return pcall(coroutine.yield, "through")
end))) == "through"
assert(PCALL_YIELDS or _VERSION == "Lua 5.1")

-- xpcall(f, msgh, ...): 5.1's xpcall passes f no arguments, so there they
-- go through a closure; elsewhere it is the built-in xpcall itself.
local xpcallv = xpcall
if select(2, xpcall(function(...) return select("#", ...) end, print, 1)) ~= 1 then
  xpcallv = function(f, msgh, ...)
    local args = pack(...)
    return xpcall(function() return f(unpack(args, 1, args.n)) end, msgh)
  end
end

-- Resume a new `lib` coroutine of body with lib.yield, then with each list
-- of inputs; the results of every resume as strings, and the final status.
local function transcript(lib, body, inputs)
  local co = lib.create(body)
  local out = {show(pack(lib.resume(co, lib.yield)))}
  for _, input in ipairs(inputs) do
    out[#out + 1] = show(pack(lib.resume(co, unpack(input, 1, input.n))))
  end
  return out, lib.status(co)
end

local function pcallbody(yield)
  local ok1, v1 = pcall(function(x) return yield("inside", x) * 2 end, 5)
  local ok2, e2 = pcall(function()
    local r = yield("again")
    error("failed with " .. r, 0)
  end)
  return ok1, v1, ok2, e2
end

-- Check that a fiber running body gives the transcript `want`, and so
-- does a plain coroutine where (x)pcall lets it yield (`what` names it).
local function sametranscript(what, body, inputs, want)
  local got, status = transcript(fs, body, inputs)
  if PCALL_YIELDS then
    local ref, refstatus = transcript(coroutine, body, inputs)
    H.same(ref, want, "plain coroutine")
    H.eq(status, refstatus)
  else
    skip(what .. " transcript of a plain coroutine: Lua 5.1 refuses yields across " .. what)
  end
  H.same(got, want, "fiber")
  H.eq(status, "dead")
end

H.test("pcall around a yield: a fiber gives what a plain coroutine gives", function()
  sametranscript("pcall", pcallbody, {pack(21), pack("boom")},
                 {"true inside 5", "true again", "true true 42 false failed with boom"})
end)

local function xpcallbody(yield)
  return xpcallv(function(a)
    local b = yield(a)
    error({code = a + b})
  end, function(e) return "handled " .. e.code end, 1)
end

H.test("xpcall around a yield: a fiber gives what a plain coroutine gives", function()
  sametranscript("xpcall", xpcallbody, {pack(2)}, {"true 1", "true false handled 3"})
end)

local function cpcallbody(yield)
  return T.cpcall(function(x)
    local y = yield(x)
    error("after the yield: " .. y, 0)
  end, "in")
end

H.test("an error after a yield inside a C lua_pcall lands at that lua_pcall", function()
  local yields, r = drive(fs.create(cpcallbody), function() return "boom" end,
                          fs.yield)
  H.same(firsts(yields), {"in"})
  H.same(r, {true, false, "after the yield: boom", n = 3})
  -- The refusal is itself an error, caught by the same lua_pcall.
  H.same(plain(cpcallbody), {true, false, CBOUND, n = 3})
end)

-- ---------------------------------------------------------------- lua-expat

-- A fiber body that parses doc, yielding every expat event from inside the
-- parser's callbacks; each callback keeps what it was resumed with.  Returns
-- "eof" and the acknowledgements, or "error" and what parse returned.
local function xmlbody(yield, doc)
  local acks = {}
  local function emit(...) acks[#acks + 1] = yield(...) end
  local p = lxp.new{
    StartElement = function(_, name, attrs)
      local s = name
      for _, k in ipairs(attrs) do s = s .. " " .. k .. "=" .. attrs[k] end
      emit("start", s)
    end,
    EndElement = function(_, name) emit("end", name) end,
    CharacterData = function(_, text) emit("text", text) end,
  }
  local ok, msg, line, col, pos = p:parse(doc)
  if ok then ok, msg, line, col, pos = p:parse() end
  if not ok then return "error", msg, line, col, pos end
  p:close()
  return "eof", table.concat(acks, ",")
end

-- A pull iterator over the events of doc: each call resumes the parser
-- until its next event.  Returns the events as strings and the fiber's
-- final results (packed, without the leading true).
local function xmlevents(doc)
  local co, events = fs.create(xmlbody), {}
  local r = pack(fs.resume(co, fs.yield, doc))
  while fs.status(co) == "suspended" do
    events[#events + 1] = show(pack(unpack(r, 2, r.n)))
    r = pack(fs.resume(co, #events))
  end
  H.eq(r[1], true, "the parsing fiber failed: " .. tostring(r[2]))
  return events, pack(unpack(r, 2, r.n))
end

H.test("lua-expat callbacks yield each event, making the push parser a pull iterator", function()
  local events, final = xmlevents('<list n="2" m="x"><item>one</item><item/></list>')
  H.same(events, {"start list n=2 m=x", "start item", "text one", "end item",
                  "start item", "end item", "end list"})
  H.same(final, {"eof", "1,2,3,4,5,6,7", n = 2})
  H.same(plain(xmlbody, "<a/>"), {false, CBOUND, n = 2})
end)

H.test("lua-expat parse error after yielded events comes back from parse", function()
  local doc = "<a><b>x</a>"
  local want = pack(lxp.new{}:parse(doc)) -- nil, "mismatched tag", 1, 10, 10
  H.eq(want[2], "mismatched tag")
  local events, final = xmlevents(doc)
  H.same(events, {"start a", "start b", "text x"})
  H.same(final, {"error", want[2], want[3], want[4], want[5], n = 5})
end)

-- -------------------------------------------------------------------- LPeg

local function lpegbody(yield, subject)
  local num = lpeg.Cmt(lpeg.C(lpeg.R("09") ^ 1),
                       function(_, _, digits) return yield(digits) end)
  return lpeg.match(lpeg.Ct((num + 1) ^ 0), subject)
end

H.test("lpeg.Cmt function yields each candidate and the resume decides the match", function()
  -- Even numbers match and capture ten times themselves; odd ones fail.
  local yields, r = drive(fs.create(lpegbody), function(digits)
    local n = tonumber(digits)
    if n % 2 == 0 then return true, n * 10 end
    return false
  end, fs.yield, "x12y7z30")
  H.same(firsts(yields), {"12", "7", "30"})
  H.eq(r[1], true)
  H.eq(type(r[2]), "table")
  H.same(r[2], {120, 300})
  H.same(plain(lpegbody, "1"), {false, CBOUND, n = 2})
end)

-- ------------------------------------------------- the test module's C frames

local function qsortbody(yield, list)
  return T.qsort(list, function(a, b) return yield(a, b) end)
end

H.test("libc qsort_r comparator yields each pair and sorts by the answers", function()
  local list = {8, 3, 5, 1, 9, 2, 7}
  local yields, r = drive(fs.create(qsortbody), function(a, b) return a < b end,
                          fs.yield, list)
  H.ok(#yields >= 6, "at least n - 1 comparisons")
  local inlist = {}
  for _, v in ipairs(list) do inlist[v] = true end
  for _, y in ipairs(yields) do
    H.eq(y.n, 2, "values per comparison")
    H.ok(inlist[y[1]] and inlist[y[2]], "elements of the list compared")
  end
  H.eq(r[2], list, "qsort returns its table")
  H.same(list, {1, 2, 3, 5, 7, 8, 9})
  H.same(plain(qsortbody, {2, 1}), {false, CBOUND, n = 2})
end)

H.test("two fibers suspended inside their own qsort at once both sort correctly", function()
  local a, b = {5, 3, 9, 1, 7}, {50, 30, 90, 10, 70, 20}
  local inA, inB = {}, {}
  for _, v in ipairs(a) do inA[v] = true end
  for _, v in ipairs(b) do inB[v] = true end
  local ca, cb = fs.create(qsortbody), fs.create(qsortbody)
  local ra = pack(fs.resume(ca, fs.yield, a))
  local rb = pack(fs.resume(cb, fs.yield, b))
  local together = 0 -- steps at which both were suspended in qsort
  while fs.status(ca) == "suspended" or fs.status(cb) == "suspended" do
    if fs.status(ca) == "suspended" and fs.status(cb) == "suspended" then
      together = together + 1
    end
    if fs.status(ca) == "suspended" then
      H.ok(inA[ra[2]] and inA[ra[3]], "fiber A compares its own elements")
      ra = pack(fs.resume(ca, ra[2] < ra[3]))        -- ascending
    end
    if fs.status(cb) == "suspended" then
      H.ok(inB[rb[2]] and inB[rb[3]], "fiber B compares its own elements")
      rb = pack(fs.resume(cb, rb[2] > rb[3]))        -- descending
    end
  end
  H.ok(together >= 4, "the sorts overlapped")
  H.same(ra, {true, a, n = 2})
  H.same(rb, {true, b, n = 2})
  H.same(a, {1, 3, 5, 7, 9})
  H.same(b, {90, 70, 50, 30, 20, 10})
end)

local function producebody(yield, n)
  return T.produce(n, function(i) return yield(i) end)
end

H.test("a C loop calling a yielding callback 1000 times keeps its state", function()
  local n, next_i, inorder = 1000, 1, true
  local yields, r = drive(fs.create(producebody), function(i)
    if i ~= next_i then inorder = false end
    next_i = next_i + 1
    return i * 2
  end, fs.yield, n)
  H.eq(#yields, n, "yields")
  H.ok(inorder, "the loop yields 1, 2, ..., n")
  H.same(r, {true, n * (n + 1), n = 2}) -- the sum of 2i
  H.same(plain(producebody, 1), {false, CBOUND, n = 2})
end)

local function cyieldbody(_, ...)
  return "returned", T.cyield(...)
end

H.test("a C function yields by lua_call of fiberswap.yield and returns the resume's values", function()
  local co = fs.create(cyieldbody)
  H.same(pack(fs.resume(co, fs.yield, 1, nil, "three")), {true, 1, nil, "three", n = 4})
  H.eq(fs.status(co), "suspended")
  H.same(pack(fs.resume(co, "a", "b")), {true, "returned", "a", "b", n = 4})
  H.eq(fs.status(co), "dead")
  H.same(plain(cyieldbody, 1), {false, CBOUND, n = 2})
end)

H.test("a C function as fiber body: create and resume", function()
  local co = fs.create(T.cbody)
  H.same(pack(fs.resume(co, 1, 2, 3)), {true, 6, n = 2})
  H.eq(fs.status(co), "suspended")
  H.same(pack(fs.resume(co, "x", "y")), {true, "cbody done", "x", "y", n = 4})
  H.eq(fs.status(co), "dead")
  H.same(pack(fs.resume(co)), {false, "cannot resume dead coroutine", n = 2})
  if _VERSION == "Lua 5.1" and not JIT then
    -- README ("Lua versions"): 5.1's own coroutine.create refuses C functions.
    H.raises("Lua function expected", coroutine.create, T.cbody)
  else
    local plainco = coroutine.create(T.cbody)
    H.same(pack(coroutine.resume(plainco, 1, 2)), {false, CBOUND, n = 2})
  end
end)

H.test("a C function as fiber body: wrap", function()
  local w = fs.wrap(T.cbody)
  H.eq(w(10, 20), 30)
  H.same(pack(w("z")), {"cbody done", "z", n = 2})
  H.raises("cannot resume dead coroutine", w)
end)

local function recursebody(yield, depth)
  return T.recurse(depth, function() return yield("at the bottom") end)
end

H.test("a yield from 150 C frames deep resumes back down and returns up through them", function()
  local co = fs.create(recursebody)
  H.same(pack(fs.resume(co, fs.yield, 150)), {true, "at the bottom", n = 2})
  -- The frames are on the fiber's stack, each with its 64 bytes of locals.
  H.ok(fs.info(co).stackused >= 150 * 64, "stack used: " .. fs.info(co).stackused)
  H.same(pack(fs.resume(co, "back up", 2)), {true, 150, "back up", 2, n = 4})
  H.eq(fs.status(co), "dead")
  H.same(plain(recursebody, 3), {false, CBOUND, n = 2})
end)

H.test("a fiber resumed inside another fiber's gsub callback yields back to it from C", function()
  -- inner yields from a C frame (cyield) to outer, which is itself inside
  -- gsub when it resumes inner and when it yields on to us.
  local inner = fs.create(function(w)
    while true do w = T.cyield(w:upper()) end
  end)
  local outer = fs.create(function(s)
    return s:gsub("%a+", function(w)
      local ok, up = fs.resume(inner, w)
      return fs.yield(ok and up)
    end)
  end)
  local yields, r = drive(outer, function(up)
    H.eq(fs.status(inner), "suspended", "inner while outer waits")
    return up .. "!"
  end, "hi there")
  H.same(firsts(yields), {"HI", "THERE"})
  H.same(r, {true, "HI! THERE!", 2, n = 3})
  H.same(pack(fs.close(inner)), {true, n = 1})
end)

-- The body of the next test, with a to-be-closed variable: Lua 5.4 syntax,
-- so it is compiled only where load accepts it (5.1's load takes no string).
local CLOSING_BODY = (rawget(_G, "loadstring") or load)([[
  local fs, onclose = ...
  return function(list)
    local guard <close> = setmetatable({}, {__close = onclose})
    table.sort(list, function(a, b) return fs.yield(a, b) end)
    return guard
  end
]], "=closing body")

H.test("closing a fiber suspended inside table.sort runs its to-be-closed variables", function()
  local before, closed = fs.stats().fibers, 0
  local body
  if CLOSING_BODY then
    body = CLOSING_BODY(fs, function() closed = closed + 1 end)
  else
    skip("__close on closing a fiber: no to-be-closed variables before Lua 5.4 " ..
         "(the close itself is checked)")
    body = function(list)
      table.sort(list, function(a, b) return fs.yield(a, b) end)
      return list
    end
  end
  local co = fs.create(body)
  H.same(pack(fs.resume(co, {2, 1})), {true, 1, 2, n = 3})
  H.eq(fs.stats().fibers, before + 1, "live fibers while suspended")
  H.same(pack(fs.close(co)), {true, n = 1})
  if CLOSING_BODY then H.eq(closed, 1, "__close calls") end
  H.eq(fs.status(co), "dead")
  H.eq(fs.stats().fibers, before, "live fibers after close")
  H.same(pack(fs.resume(co)), {false, "cannot resume dead coroutine", n = 2})
end)

-- ------------------------------------------------------------- many at once

-- Start `count` fibers each running sorter(list, cmp) on a list of its own
-- (values 10i+1..10i+3), until every one is suspended in its comparator;
-- then finish them round-robin.  Checks each sorts its own list.
local function manysuspended(sorter, count)
  local before = fs.stats().fibers
  local fibers, lists, last = {}, {}, {}
  for i = 1, count do
    lists[i] = {10 * i + 3, 10 * i + 1, 10 * i + 2}
    fibers[i] = fs.create(function(list)
      sorter(list, function(a, b) return fs.yield(a, b) end)
      return "done"
    end)
    last[i] = pack(fs.resume(fibers[i], lists[i]))
  end
  local suspended = 0
  for i = 1, count do
    if fs.status(fibers[i]) == "suspended" then suspended = suspended + 1 end
  end
  H.eq(suspended, count, "fibers suspended inside a comparator")
  H.eq(fs.stats().fibers, before + count, "live fibers")
  local left, strays = count, 0
  while left > 0 do
    for i = 1, count do
      local r = last[i]
      if fs.status(fibers[i]) == "suspended" then
        if math.floor(r[2] / 10) ~= i or math.floor(r[3] / 10) ~= i then
          strays = strays + 1
        end
        last[i] = pack(fs.resume(fibers[i], r[2] < r[3]))
        if fs.status(fibers[i]) == "dead" then left = left - 1 end
      end
    end
  end
  H.eq(strays, 0, "comparisons of another fiber's elements")
  local wrong = 0
  for i = 1, count do
    local l = lists[i]
    if last[i][2] ~= "done" or l[1] ~= 10 * i + 1 or l[2] ~= 10 * i + 2
       or l[3] ~= 10 * i + 3 then
      wrong = wrong + 1
    end
  end
  H.eq(wrong, 0, "fibers that sorted wrongly")
  H.eq(fs.stats().fibers, before, "live fibers after")
end

H.test("1000 fibers suspended at once inside table.sort comparators all finish", function()
  manysuspended(table.sort, 1000)
end)

H.test("1000 fibers suspended at once inside qsort comparators all finish", function()
  manysuspended(T.qsort, 1000)
end)

-- -------------------------------------------------- C stack overflow, in a child

local child = H.child

-- A child's program: a fiber recursing `depth` levels in C, then a marker.
local function overflowing(depth, catch)
  return ([[
    local fs = require "fiberswap"
    local T = require "fiberswap_test"
    %s
    local co = fs.create(function() return T.recurse(%d) end)
    print(fs.resume(co))
    print("FINISHED")
  ]]):format(catch and "fs.catchoverflow(true)" or "", depth)
end

-- These run under valgrind too: its children run natively unless traced,
-- and traced ones (--trace-children=yes) die of the same SIGSEGV after the
-- same message, so FSW_UNDER_VALGRIND needs no skip here.
H.test("a child recursing 1000 C levels in a fiber finishes normally", function()
  local how, n, out = child(overflowing(1000, true))
  H.eq(how, "exit")
  H.eq(n, 0)
  H.ok(out:find("true\t1000\nFINISHED\n", 1, true), "output: " .. out)
end)

H.test("C stack overflow in a fiber with catchoverflow: message, then death by SIGSEGV", function()
  local how, n, out = child(overflowing(10000000, true))
  H.eq(how, "signal")
  H.eq(n, 11)
  H.ok(("\n" .. out):find("\nfiberswap: fiber stack overflow", 1, true),
       "a line starting with the message: " .. out)
  H.ok(not out:find("FINISHED", 1, true), "the child went on after the overflow")
end)

H.test("C stack overflow in a fiber without catchoverflow: silent death by SIGSEGV", function()
  local how, n, out = child(overflowing(10000000, false))
  H.eq(how, "signal")
  H.eq(n, 11)
  H.ok(not out:find("fiberswap: fiber stack overflow", 1, true), "output: " .. out)
  H.ok(not out:find("FINISHED", 1, true), "the child went on after the overflow")
end)

H.done()
