/* host.c: an embedding host that links the Lua module statically (luaL_requiref).
 * Fibers work inside a host: they suspend in its C functions, and lua_close frees them. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"

#include "fiberswap.h"
#include "tap.h"

/* The module's entry point, linked in from binding/fiberswap.c. */
int luaopen_fiberswap(lua_State *L);

/* The most stacks a thread's pool keeps (README, "Stacks"). */
#define POOL_MAX 256

static int passed, failed;

/* Print one TAP line; `why` explains a failure. */
static void report(int ok, const char *name, const char *why) {
  if (ok) {
    passed++;
    printf("ok %d - %s\n", passed + failed, name);
  } else {
    failed++;
    printf("not ok %d - %s\n", passed + failed, name);
    diag(why ? why : "(no message)");
  }
  fflush(stdout);
}

/* ------------------------------------------------ the host's C functions */

#define CANARY_LEN 64

/* A byte of the canary pattern: depends on its own address, so a frame
 * restored anywhere else, or overwritten, fails the check. */
static unsigned char canary_byte(volatile unsigned char *c, int i) {
  return (unsigned char)(((uintptr_t)&c[i] >> 3) ^ (unsigned)(i * 29));
}

/* host.map(t, f): a new table of f(t[i]) for i = 1..#t, and the sum of the
 * results, kept in a C local.  f is called with lua_call, no continuation,
 * so a yield inside f suspends this C frame; its canary must survive that. */
static int host_map(lua_State *L) {
  volatile unsigned char canary[CANARY_LEN];
  lua_Integer n, i, sum = 0;
  int k;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  n = luaL_len(L, 1);
  for (k = 0; k < CANARY_LEN; k++) canary[k] = canary_byte(canary, k);
  lua_createtable(L, (int)n, 0);
  for (i = 1; i <= n; i++) {
    lua_pushvalue(L, 2);
    lua_geti(L, 1, i);
    lua_call(L, 1, 1); /* the whole fiber may be suspended in here */
    for (k = 0; k < CANARY_LEN; k++)
      if (canary[k] != canary_byte(canary, k))
        return luaL_error(L, "host.map: its C frame changed while suspended");
    sum += lua_tointeger(L, -1);
    lua_seti(L, 3, i);
  }
  lua_pushinteger(L, sum);
  return 2;
}

/* host.depth(n, f): n nested C calls of itself, then f() at the bottom.
 * Returns f's result plus n + (n-1) + ... + 1, each level adding the n it
 * kept in a C local across whatever f did. */
static int host_depth(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  volatile lua_Integer mine = n * 1000 + 7;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (n <= 0) {
    lua_pushvalue(L, 2);
    lua_call(L, 0, 1);
  } else {
    lua_pushcfunction(L, host_depth);
    lua_pushinteger(L, n - 1);
    lua_pushvalue(L, 2);
    lua_call(L, 2, 1);
  }
  if (mine != n * 1000 + 7)
    return luaL_error(L, "host.depth: level %d lost its local", (int)n);
  lua_pushinteger(L, lua_tointeger(L, -1) + n);
  return 1;
}

/* host.protect(f, ...): the host's own protected call.  Returns true and
 * f's results, or false and the error.  An error raised in f lands in this
 * lua_pcall, on the stack this frame lives on (a fiber's, when a fiber
 * called it). */
static int host_protect(lua_State *L) {
  int status;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  status = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
  lua_pushboolean(L, status == LUA_OK);
  lua_insert(L, 1);
  return lua_gettop(L);
}

static const luaL_Reg host_funcs[] = {{"map", host_map},
                                      {"depth", host_depth},
                                      {"protect", host_protect},
                                      {NULL, NULL}};

/* A state with the standard libraries, fiberswap opened the way a host
 * with a static module does, and the global table `host`. */
static lua_State *open_state(void) {
  lua_State *L = luaL_newstate();
  if (L == NULL) return NULL;
  luaL_openlibs(L);
  luaL_requiref(L, "fiberswap", luaopen_fiberswap, 1);
  lua_pop(L, 1);
  luaL_newlib(L, host_funcs);
  lua_setglobal(L, "host");
  return L;
}

/* ------------------------------------------------------------ the runner */

/* Message handler: the error with a traceback. */
static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
  return 1;
}

/* Run the function on top of L in protected mode and report it under
 * `name`; returns whether it ran without error.  Leaves L's stack as it
 * found it, minus that function. */
static int run(lua_State *L, const char *name) {
  int base = lua_gettop(L), ok;
  lua_pushcfunction(L, traceback);
  lua_insert(L, base);
  ok = lua_pcall(L, 0, 0, base) == LUA_OK;
  report(ok, name, ok ? NULL : lua_tostring(L, -1));
  lua_settop(L, base - 1);
  return ok;
}

/* Run Lua source `code` as one test case. */
static int run_lua(lua_State *L, const char *name, const char *code) {
  if (luaL_loadbuffer(L, code, strlen(code), name) != LUA_OK) {
    report(0, name, lua_tostring(L, -1));
    lua_pop(L, 1);
    return 0;
  }
  return run(L, name);
}

/* Run C function `fn` as one test case; it fails by raising an error. */
static int run_c(lua_State *L, const char *name, lua_CFunction fn) {
  lua_pushcfunction(L, fn);
  return run(L, name);
}

/* ----------------------------------------------------------- Lua cases */

static const char *const opened_by_requiref =
    "assert(fiberswap == package.loaded.fiberswap, 'not in package.loaded')\n"
    "assert(require('fiberswap') == fiberswap, 'require gives another table')\n"
    "assert(type(fiberswap.spawn) == 'function' and fiberswap._VERSION)\n"
    "local me, ismain = fiberswap.running()\n"
    "assert(type(me) == 'thread' and ismain == true)\n"
    "assert(fiberswap.isyieldable() == false)\n"
    "assert(fiberswap.stats().fibers == 0)\n";

static const char *const yield_across_sort =
    "local fs = fiberswap\n"
    "local input = {}\n"
    "for i = 1, 40 do input[i] = (i * 37) % 41 end\n"
    "local co = fs.create(function(t)\n"
    "  table.sort(t, function(a, b) return fs.yield(a, b) end)\n"
    "  return t\n"
    "end)\n"
    "local ok, a, b = fs.resume(co, input)\n"
    "local asked = 0\n"
    "while fs.status(co) == 'suspended' do\n"
    "  assert(ok, a)\n"
    "  assert(type(a) == 'number' and type(b) == 'number')\n"
    "  asked = asked + 1\n"
    "  ok, a, b = fs.resume(co, a < b)\n"
    "end\n"
    "assert(ok, a)\n"
    "assert(a == input, 'sort returned another table')\n"
    "for i = 2, #a do assert(a[i - 1] < a[i], 'not sorted') end\n"
    "assert(asked >= 40, 'too few comparisons: ' .. asked)\n"
    "local plain = coroutine.create(function()\n"
    "  table.sort({2, 1}, function() return coroutine.yield() end)\n"
    "end)\n"
    "local pok, perr = coroutine.resume(plain)\n"
    "assert(not pok and perr:find('attempt to yield across a C%-call boundary'),\n"
    "       'a plain coroutine yielded across sort: ' .. tostring(perr))\n";

static const char *const spawn_runs_at_once =
    "local fs = fiberswap\n"
    "local co, ok, v = fs.spawn(function(x)\n"
    "  local y = fs.yield(x + 1)\n"
    "  return y * 2\n"
    "end, 41)\n"
    "assert(type(co) == 'thread' and ok == true and v == 42)\n"
    "assert(fs.status(co) == 'suspended' and fs.isfiber(co))\n"
    "assert(fs.stats().fibers == 1)\n"
    "local ok2, w = fs.resume(co, 50)\n"
    "assert(ok2 == true and w == 100)\n"
    "assert(fs.status(co) == 'dead' and not fs.isfiber(co))\n"
    "local co2, ok3, a, b = fs.spawn(function(...) return ... end, 'x', 'y')\n"
    "assert(ok3 and a == 'x' and b == 'y' and fs.status(co2) == 'dead')\n"
    "local _, ok4, err = fs.spawn(function() error('spawned failure', 0) end)\n"
    "assert(ok4 == false and err == 'spawned failure')\n"
    "local _, ok5, s = fs.spawn(function()\n"
    "  return (('abc'):gsub('.', function(c) return c:upper() end))\n"
    "end)\n"
    "assert(ok5 and s == 'ABC')\n"
    "assert(fs.stats().fibers == 0)\n";

static const char *const suspended_in_host_map =
    "local fs = fiberswap\n"
    "local co = fs.create(function(t)\n"
    "  return host.map(t, function(x)\n"
    "    local me, ismain = fs.running()\n"
    "    assert(not ismain and fs.status(me) == 'running')\n"
    "    assert(fs.isyieldable())\n"
    "    return fs.yield(x)\n"
    "  end)\n"
    "end)\n"
    "local ok, x, sum = fs.resume(co, {1, 2, 3, 4, 5})\n"
    "local seen = {}\n"
    "while fs.status(co) == 'suspended' do\n"
    "  assert(ok, x)\n"
    "  seen[#seen + 1] = x\n"
    "  local info = fs.info(co)\n"
    "  assert(info.fiber and info.status == 'suspended' and info.stackused > 0)\n"
    "  ok, x, sum = fs.resume(co, x * 10)\n"
    "end\n"
    "assert(ok, x)\n"
    "assert(table.concat(seen, ',') == '1,2,3,4,5', table.concat(seen, ','))\n"
    "assert(table.concat(x, ',') == '10,20,30,40,50', table.concat(x, ','))\n"
    "assert(sum == 150, 'the C frame summed ' .. tostring(sum))\n";

static const char *const suspended_deep_in_host =
    "local fs = fiberswap\n"
    "local co = fs.create(function()\n"
    "  return host.depth(20, function()\n"
    "    local a = fs.yield('bottom')\n"
    "    local b = fs.yield('again')\n"
    "    return a + b\n"
    "  end)\n"
    "end)\n"
    "local ok, v = fs.resume(co)\n"
    "assert(ok and v == 'bottom', tostring(v))\n"
    "ok, v = fs.resume(co, 1000)\n"
    "assert(ok and v == 'again', tostring(v))\n"
    "ok, v = fs.resume(co, 2000)\n"
    "assert(ok, v)\n"
    "assert(v == 3000 + 210, 'levels gave ' .. tostring(v))\n"
    "assert(fs.status(co) == 'dead')\n";

static const char *const host_pcall_on_fiber_stack =
    "local fs = fiberswap\n"
    "local co = fs.create(function()\n"
    "  local ok, err = host.protect(function()\n"
    "    local v = fs.yield('inside the host pcall')\n"
    "    error('after resume: ' .. v, 0)\n"
    "  end)\n"
    "  fs.yield(ok, err)\n"
    "  return 'finished'\n"
    "end)\n"
    "local ok, v = fs.resume(co)\n"
    "assert(ok and v == 'inside the host pcall', tostring(v))\n"
    "local ok2, pok, perr = fs.resume(co, 'boom')\n"
    "assert(ok2 and pok == false and perr == 'after resume: boom', tostring(perr))\n"
    "local ok3, fin = fs.resume(co)\n"
    "assert(ok3 and fin == 'finished' and fs.status(co) == 'dead')\n"
    "local bad = fs.create(function()\n"
    "  return host.map({1, 2}, function(x)\n"
    "    fs.yield(x)\n"
    "    error('callback failed at ' .. x, 0)\n"
    "  end)\n"
    "end)\n"
    "assert(select(2, fs.resume(bad)) == 1)\n"
    "local bok, berr = fs.resume(bad)\n"
    "assert(bok == false and berr == 'callback failed at 1', tostring(berr))\n"
    "assert(fs.status(bad) == 'dead' and fs.stats().fibers == 0)\n";

/* Leaves fibers suspended in every kind of place, in the global `parked`,
 * for lua_close to free; drops as many more for the collector; sets the
 * global `live_at_close` to the number of fibers holding a stack. */
static const char *const park_fibers =
    "local fs = fiberswap\n"
    "parked = {}\n"
    "local function park(f, ...)\n"
    "  local co = fs.create(f)\n"
    "  local ok, err = fs.resume(co, ...)\n"
    "  assert(ok, err)\n"
    "  assert(fs.status(co) == 'suspended')\n"
    "  parked[#parked + 1] = co\n"
    "  return co\n"
    "end\n"
    "local function places()\n"
    "  park(function() table.sort({3, 2, 1}, function(a, b)\n"
    "    return fs.yield() end) end)\n"
    "  park(function() return host.map({1}, fs.yield) end)\n"
    "  park(function() return host.depth(10, fs.yield) end)\n"
    "  park(function() return host.protect(fs.yield, 'in pcall') end)\n"
    "  park(function() return ('xyz'):gsub('.', fs.yield) end)\n"
    "  park(function()\n"
    "    local inner = park(function() host.map({1}, fs.yield) end)\n"
    "    fs.yield(inner)\n"
    "  end)\n"
    "  park(function()\n"
    "    local g = fs.wrap(function() host.depth(3, fs.yield) end)\n"
    "    g()\n"
    "    fs.yield()\n"
    "  end)\n"
    "end\n"
    "for _ = 1, 4 do places() end\n"
    "local keep, live = #parked, fs.stats().fibers\n"
    "assert(live == 4 * 9, live .. ' live fibers, want 36')\n"
    "for _ = 1, 4 do places() end\n"
    "assert(fs.stats().fibers == 2 * live)\n"
    "for i = keep + 1, #parked do parked[i] = nil end\n"
    "collectgarbage()\n"
    "collectgarbage()\n"
    "assert(fs.stats().fibers == live, 'after collection: ' ..\n"
    "       fs.stats().fibers .. ' live, want ' .. live)\n"
    "for _ = 1, 5 do parked[#parked + 1] = fs.create(print) end\n"
    "live_at_close = live\n";

/* ------------------------------------------------------------ C cases */

/* The host drives a fiber itself: it calls fiberswap.resume from C, and
 * the fiber yields from inside a string.gsub callback each time; the host
 * answers each letter with its capital. */
static int host_resumes_from_c(lua_State *L) {
  static const char body[] =
      "return fiberswap.create(function(s)\n"
      "  return (s:gsub('%a', function(c) return fiberswap.yield(c) end))\n"
      "end)";
  char seen[32];
  size_t n = 0;
  int co, fs, answer = 0;
  if (luaL_loadstring(L, body) != LUA_OK) return lua_error(L);
  lua_call(L, 0, 1);
  co = lua_gettop(L);
  lua_getglobal(L, "fiberswap");
  fs = co + 1;
  for (;;) {
    const char *s;
    lua_getfield(L, fs, "resume");
    lua_pushvalue(L, co);
    if (n == 0)
      lua_pushliteral(L, "hello, world");
    else
      lua_pushfstring(L, "%c", answer);
    lua_call(L, 2, 2); /* [co, fs, ok, value] */
    if (!lua_toboolean(L, -2))
      return luaL_error(L, "resume failed: %s", lua_tostring(L, -1));
    lua_getfield(L, fs, "status");
    lua_pushvalue(L, co);
    lua_call(L, 1, 1);
    if (strcmp(lua_tostring(L, -1), "dead") == 0) break;
    s = lua_tostring(L, -2);
    if (s == NULL || strlen(s) != 1 || n + 1 >= sizeof seen)
      return luaL_error(L, "unexpected yield");
    seen[n++] = s[0];
    answer = s[0] - 'a' + 'A';
    lua_settop(L, fs);
  }
  seen[n] = '\0';
  if (strcmp(seen, "helloworld") != 0)
    return luaL_error(L, "yields were '%s'", seen);
  if (strcmp(lua_tostring(L, -2), "HELLO, WORLD") != 0)
    return luaL_error(L, "gsub gave '%s'", lua_tostring(L, -2));
  return 0;
}

/* The parked fibers hold machine stacks; the C library's pool is where
 * those will go. */
static int count_parked(lua_State *L) {
  lua_Integer live, parked;
  lua_getglobal(L, "fiberswap");
  lua_getfield(L, -1, "stats");
  lua_call(L, 0, 1);
  lua_getfield(L, -1, "fibers");
  live = lua_tointeger(L, -1);
  lua_getglobal(L, "parked");
  parked = luaL_len(L, -1);
  if (live != 36 || parked != 4 * 8 + 5)
    return luaL_error(L, "%d fibers live, %d parked", (int)live, (int)parked);
  return 0;
}

/* Several Lua states, one after another and side by side: each keeps its
 * own module state (default stack size, fibers). */
static const char *const first_state =
    "local fs = require 'fiberswap'\n"
    "fs.stacksize(65536)\n"
    "co = fs.create(function() fs.yield(fs.info(fs.running()).stacksize)\n"
    "  return 'first' end)\n"
    "local ok, size = fs.resume(co)\n"
    "assert(ok and size == 65536, tostring(size))\n";
static const char *const second_state =
    "local fs = require 'fiberswap'\n"
    "assert(fs.stacksize() ~= 65536, 'the first state set this default')\n"
    "fs.stacksize(32768)\n"
    "co = fs.create(function() fs.yield(fs.info(fs.running()).stacksize)\n"
    "  return 'second' end)\n"
    "local ok, size = fs.resume(co)\n"
    "assert(ok and size == 32768, tostring(size))\n";
static const char *const first_again =
    "local fs = require 'fiberswap'\n"
    "assert(fs.stacksize() == 65536, tostring(fs.stacksize()))\n"
    "assert(select(2, fs.resume(co)) == 'first')\n";
static const char *const second_again =
    "local fs = require 'fiberswap'\n"
    "assert(fs.stacksize() == 32768, tostring(fs.stacksize()))\n"
    "assert(select(2, fs.resume(co)) == 'second')\n"
    "local _, ok, v = fs.spawn(function(x) return x end, 'alone')\n"
    "assert(ok and v == 'alone')\n";
static const char *const third_state =
    "local fs = require 'fiberswap'\n"
    "assert(fs.stacksize() ~= 65536 and fs.stacksize() ~= 32768)\n"
    "local _, ok, v = fs.spawn(function(x) return fs.stacksize() + x end, 1)\n"
    "assert(ok and v == fs.stacksize() + 1)\n";

static void several_states(void) {
  lua_State *a = open_state(), *b;
  if (a == NULL) {
    report(0, "several states", "cannot create a Lua state");
    return;
  }
  run_lua(a, "a state sets its own default stack size", first_state);
  b = open_state();
  if (b == NULL) {
    report(0, "several states", "cannot create a Lua state");
    lua_close(a);
    return;
  }
  run_lua(b, "a second state side by side has its own default",
          second_state);
  run_lua(a, "the first state keeps its default and its fiber", first_again);
  lua_close(a);
  run_lua(b, "the second state works on after the first closed",
          second_again);
  lua_close(b);
  b = open_state();
  if (b == NULL) {
    report(0, "several states", "cannot create a Lua state");
    return;
  }
  run_lua(b, "a state opened after both closed starts afresh", third_state);
  lua_close(b);
}

/* ------------------------------------------------------- out of memory */

/* An allocator that refuses the n-th request for more memory from now on
 * (`failafter(n)` in Lua; `failafter()`: never). */
static long fail_countdown = -1;

static void *failing_alloc(void *ud, void *p, size_t os, size_t ns) {
  (void)ud;
  if (ns == 0) {
    free(p);
    return NULL;
  }
  if (p == NULL) os = 0;
  if (ns > os && fail_countdown >= 0) {
    if (fail_countdown == 0) return NULL;
    fail_countdown--;
  }
  return realloc(p, ns);
}

static int host_failafter(lua_State *L) {
  fail_countdown = lua_isnoneornil(L, 1) ? -1 : (long)luaL_checkinteger(L, 1);
  return 0;
}

/* Memory runs out at each allocation in turn of a fiber's first
 * suspension (its record moves into a userdata then).  Whatever fails,
 * each stack is given back once: a record copy orphaned by the failure
 * must not free the stack again when it is collected (that put one stack
 * in the pool twice, and two later fibers ran on it). */
static const char *const oom_first_suspension =
    "local fs = fiberswap\n"
    "for k = 0, 300 do\n"
    "  pcall(function()\n"
    "    failafter(k)\n"
    "    local ok, err = pcall(fs.spawn, function() fs.yield() end)\n"
    "    failafter()\n"
    "  end)\n"
    "  failafter()\n"
    "  collectgarbage(); collectgarbage()\n"
    "  assert(fs.stats().fibers >= 0, 'live fibers below 0 after failure ' .. k)\n"
    "end\n"
    "local a = fs.create(function() local v = 'a'; fs.yield(); return v end)\n"
    "local b = fs.create(function() local v = 'b'; fs.yield(); return v end)\n"
    "assert(fs.resume(a)); assert(fs.resume(b))\n"
    "local oka, va = fs.resume(a)\n"
    "local okb, vb = fs.resume(b)\n"
    "assert(oka and va == 'a' and okb and vb == 'b',\n"
    "       'two fibers shared a stack: ' .. tostring(va) .. ', ' .. tostring(vb))\n"
    "assert(fs.stats().fibers == 0, 'live fibers: ' .. fs.stats().fibers)\n";

static void out_of_memory(void) {
  lua_State *L = lua_newstate(failing_alloc, NULL);
  if (L == NULL) {
    report(0, "out of memory", "cannot create a Lua state");
    return;
  }
  luaL_openlibs(L);
  luaL_requiref(L, "fiberswap", luaopen_fiberswap, 1);
  lua_pop(L, 1);
  lua_register(L, "failafter", host_failafter);
  run_lua(L, "out of memory anywhere in a first suspension frees each stack once",
          oom_first_suspension);
  fail_countdown = -1;
  lua_close(L);
}

/* ------------------------------------------------------------------ main */

int main(void) {
  lua_State *L = open_state();
  lua_Integer live;
  size_t pooled, want;
  char why[160];
  if (L == NULL) {
    report(0, "luaL_newstate", "cannot create a Lua state");
    printf("host: %d passed, %d failed\n", passed, failed);
    return 1;
  }
  run_lua(L, "luaL_requiref opens the module as require would",
          opened_by_requiref);
  run_lua(L, "a fiber yields across table.sort comparators",
          yield_across_sort);
  run_lua(L, "spawn runs a fiber at once and hands back its first yield",
          spawn_runs_at_once);
  run_lua(L, "a fiber suspends inside the host's C function (lua_call)",
          suspended_in_host_map);
  run_lua(L, "a fiber suspends under 20 nested host C frames",
          suspended_deep_in_host);
  run_lua(L, "a host lua_pcall suspended on the fiber's stack still catches",
          host_pcall_on_fiber_stack);
  run_c(L, "the host resumes a fiber from C through fiberswap.resume",
        host_resumes_from_c);
  run_lua(L, "fibers park in sort, host frames, pcall, gsub, nested, wrap",
          park_fibers);
  run_c(L, "the parked fibers hold machine stacks before lua_close",
        count_parked);

  lua_getglobal(L, "live_at_close");
  live = lua_tointeger(L, -1);
  lua_pop(L, 1);
  pooled = fsw_pool_count();
  lua_close(L); /* finalizers free the suspended fibers' stacks */
  want = pooled + (size_t)live;
  if (want > POOL_MAX) want = POOL_MAX;
  snprintf(why, sizeof why, "pool holds %zu stacks, want %zu (%zu + %d)",
           fsw_pool_count(), want, pooled, (int)live);
  report(live > 0 && fsw_pool_count() == want,
         "lua_close gives every suspended fiber's stack back to the pool", why);
  fsw_pool_drain();
  report(fsw_pool_count() == 0, "the pool drains after lua_close",
         "stacks left in the pool");
  several_states();
  out_of_memory();

  printf("host: %d passed, %d failed\n", passed, failed);
  return failed != 0;
}
