-- harness.lua: a minimal test harness for fiberswap's Lua specs.
-- Each test is a named function; a failed check records where and goes on.
local H = {}

local passed, failed, current_failures = 0, 0, 0
local suite = (arg and arg[0] or "lua"):match("([^/]+)%.lua$") or "lua"

local function where(level)
  local info = debug.getinfo(level + 1, "Sl")
  return info and (info.short_src .. ":" .. (info.currentline or 0)) or "?"
end

local function fail(msg, level)
  current_failures = current_failures + 1
  io.stderr:write("  ", where(level + 1), ": ", msg, "\n")
end

-- Check that a value is truthy.
function H.ok(v, msg)
  if not v then fail(msg or "expected a true value", 2) end
  return v
end

-- Check that two values are equal (==), printing both otherwise.
function H.eq(got, want, msg)
  if got ~= want then
    fail((msg and msg .. ": " or "") .. "got " .. tostring(got) ..
         ", want " .. tostring(want), 2)
  end
end

-- Check that two lists of values (from table.pack) are equal.
function H.same(got, want, msg)
  local n = math.max(got.n or #got, want.n or #want)
  for i = 1, n do
    if got[i] ~= want[i] then
      fail((msg and msg .. ": " or "") .. "value " .. i .. " is " ..
           tostring(got[i]) .. ", want " .. tostring(want[i]), 2)
      return
    end
  end
end

-- Check that fn(...) raises an error whose message contains `text`
-- (plain substring) and return the message.
function H.raises(text, fn, ...)
  local ok, err = pcall(fn, ...)
  if ok then
    fail("expected an error containing '" .. text .. "'", 2)
  elseif not tostring(err):find(text, 1, true) then
    fail("error '" .. tostring(err) .. "' lacks '" .. text .. "'", 2)
  end
  return err
end

-- Run one named test; errors inside count as a failure.
function H.test(name, fn)
  current_failures = 0
  local ok, err = xpcall(fn, debug.traceback)
  if not ok then fail("error: " .. tostring(err), 1) end
  if current_failures == 0 then
    passed = passed + 1
    print("ok " .. (passed + failed) .. " - " .. name)
  else
    failed = failed + 1
    print("not ok " .. (passed + failed) .. " - " .. name)
  end
end

-- Quote s for sh.
local function shq(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- The interpreter running this file.
local function interpreter()
  local i = -1
  while arg[i - 1] do i = i - 1 end
  return arg[i]
end

-- Whether this run is under ASan (make asan): its runtimes are preloaded.
H.asan = os.getenv("ASAN_OPTIONS") ~= nil

-- Run Lua `code` in a fresh interpreter with this one's module paths,
-- without core dumps, stdout and stderr together; `env` (NAME=value words)
-- and `wrapper` (a command such as valgrind) are optional.  The child runs
-- in a subshell that execs it, and sh appends "exit:$?" to the output, so
-- every version learns how it ended (the close of a pipe reports it only
-- from 5.2 on, and 5.1/LuaJIT return true alone): a status above 128 is
-- death by signal $? - 128.  The shell's own "Segmentation fault" notice
-- goes to /dev/null.  Under ASan the child keeps the kernel's action for
-- SIGSEGV, as a normal run has: ASan would turn a deliberate fault into its
-- own exit(1).  Returns how the child ended ("exit" or "signal"), the code,
-- and its output.
function H.child(code, env, wrapper)
  local asan = os.getenv("ASAN_OPTIONS")
  local cmd = "exec 2>/dev/null; ulimit -c 0; (exec 2>&1; exec env " ..
              (asan and "ASAN_OPTIONS=" .. shq(asan .. ":handle_segv=0") .. " " or "") ..
              "LUA_CPATH=" .. shq(package.cpath) ..
              " LUA_PATH=" .. shq(package.path) .. " " .. (env or "") .. " " ..
              (wrapper or "") .. " " .. shq(interpreter()) ..
              " -e " .. shq(code) .. '); echo "exit:$?"'
  local p = assert(io.popen(cmd, "r"))
  local all = p:read("*a") -- "*a": 5.1 and 5.2 know no other spelling
  p:close()
  local out, status = all:match("^(.*)exit:(%d+)\n$")
  if not out then return nil, nil, all end
  status = tonumber(status)
  if status > 128 then return "signal", status - 128, out end
  return "exit", status, out
end

-- Print the closing line that the suite runner sums; exit non-zero on failure.
function H.done()
  print(suite .. ": " .. passed .. " passed, " .. failed .. " failed")
  os.exit(failed == 0 and 0 or 1, true) -- close the state: frees every fiber
end

return H
