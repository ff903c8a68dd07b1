/* migrate.c: one lua_State handed between two OS threads, one phase at a time.
 * A fiber suspended on one OS thread continues on another: nothing is cached per thread. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "lauxlib.h"
#include "lua.h"
#include "lualib.h"

#include "fiberswap.h"
#include "tap.h"

/* The module's entry point, linked in from binding/fiberswap.c. */
int luaopen_fiberswap(lua_State *L);

#define ROUNDS 4     /* each round: a phase on A, then one on B */
#define PHASES (2 * ROUNDS)
#define C_FIBERS 20  /* C fibers started on A and finished on B, per round */

/* Everything the two workers share.  `mu` is held for a whole phase, so
 * the Lua state and the C fibers are only ever touched by one thread. */
static struct {
  pthread_mutex_t mu;
  pthread_cond_t turn;
  int phase;    /* the next phase to run: even on A, odd on B */
  lua_State *L; /* created by A in phase 0, closed by B in the last */
  int passed, failed;
} sh = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, NULL, 0, 0};

static pthread_key_t who; /* "A" or "B": the name of the calling thread */

/* The calling OS thread's name.  A call, never cached across a switch,
 * unlike pthread_self(), which glibc declares const. */
static const char *thread_name(void) {
  const char *name = pthread_getspecific(who);
  return name ? name : "?";
}

/* Print one TAP line, naming the thread; `why` explains a failure.  Only
 * called with `mu` held. */
static void report(int ok, const char *name, const char *why) {
  if (ok)
    sh.passed++;
  else
    sh.failed++;
  printf("%s %d - [%s] %s\n", ok ? "ok" : "not ok", sh.passed + sh.failed,
         thread_name(), name);
  if (!ok) diag(why ? why : "(no message)");
  fflush(stdout);
}

/* ------------------------------------------------ the host's C functions */

/* host.thread(): the name of the OS thread running the caller. */
static int host_thread(lua_State *L) {
  lua_pushstring(L, thread_name());
  return 1;
}

/* host.map(t, f): a new table of f(t[i]) for i = 1..#t, the sum of the
 * results (kept in a C local), and the names of the threads this C frame
 * began and ended on.  f is called with lua_call, so a yield inside f
 * suspends this frame, and a later resume may continue it elsewhere. */
static int host_map(lua_State *L) {
  volatile lua_Integer sum = 0;
  const char *began = thread_name();
  lua_Integer n, i;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  n = luaL_len(L, 1);
  lua_createtable(L, (int)n, 0);
  for (i = 1; i <= n; i++) {
    lua_pushvalue(L, 2);
    lua_geti(L, 1, i);
    lua_call(L, 1, 1); /* the fiber may move to another thread in here */
    sum += lua_tointeger(L, -1);
    lua_seti(L, 3, i);
  }
  lua_pushinteger(L, sum);
  lua_pushstring(L, began);
  lua_pushstring(L, thread_name());
  return 4;
}

static const luaL_Reg host_funcs[] = {
    {"thread", host_thread}, {"map", host_map}, {NULL, NULL}};

/* ------------------------------------------------------------ Lua side */

/* Defines phase_a(r) and phase_b(r), run on A and B in turn.  Batch r's
 * fibers start on A and are left suspended in various places; B finishes
 * them.  "Marathon" fibers sit in one table.sort across many phases and
 * check, at every comparison, that they run on the thread they were told.
 * A nested pair is started on A with the inner one suspended in a sort,
 * and finished on B, where the outer resumes the inner. */
static const char *const driver_parts[] = {
    "local fs = require 'fiberswap'\n"
    "local N = 12\n"
    "local batches, marathons, pairs_ = {}, {}, {}\n"
    "local function check(cond, msg) if not cond then error(msg, 2) end end\n"
    "local function self_ok(me)\n"
    "  local co, ismain = fs.running()\n"
    "  check(co == me and ismain == false, 'running() is wrong in a fiber')\n"
    "  check(fs.status(me) == 'running', 'status is ' .. fs.status(me))\n"
    "  check(fs.isyieldable(), 'a fiber is not yieldable')\n"
    "end\n"
    "local function body(r, i, kind)\n"
    "  local me = fs.running()\n"
    "  self_ok(me)\n"
    "  local t0, got, began, ended = host.thread()\n"
    "  local v = r * 1000 + i\n"
    "  if kind == 1 then\n"
    "    got = fs.yield(v)\n"
    "  elseif kind == 2 then\n"
    "    local t = {3, 1, 2}\n"
    "    table.sort(t, function(a, b)\n"
    "      if got == nil then got = fs.yield(v) end\n"
    "      return a < b\n"
    "    end)\n"
    "    check(table.concat(t) == '123', 'sort broke')\n"
    "  elseif kind == 3 then\n"
    "    local _, sum\n"
    "    _, sum, began, ended = host.map({1, 2, 3}, function(x)\n"
    "      if x == 2 then got = fs.yield(v) end\n"
    "      return x * 10\n"
    "    end)\n"
    "    check(sum == 60, 'host.map summed ' .. tostring(sum))\n"
    "  else\n"
    "    local s = ('ab'):gsub('.', function(c)\n"
    "      if c == 'b' then got = fs.yield(v) end\n"
    "      return c:upper()\n"
    "    end)\n"
    "    check(s == 'AB', 'gsub broke')\n"
    "  end\n"
    "  self_ok(me)\n"
    "  return t0, host.thread(), got, began, ended\n"
    "end\n"
    "local function marathon()\n"
    "  local t = {8, 7, 6, 5, 4, 3, 2, 1}\n"
    "  table.sort(t, function(a, b)\n"
    "    local side = fs.yield('compare')\n"
    "    check(side == host.thread(), 'told ' .. tostring(side) ..\n"
    "          ', running on ' .. host.thread())\n"
    "    return a < b\n"
    "  end)\n"
    "  return table.concat(t)\n"
    "end\n",
    "local function step_marathons(side)\n"
    "  for i = #marathons, 1, -1 do\n"
    "    local co = marathons[i]\n"
    "    check(fs.status(co) == 'suspended', 'marathon not suspended')\n"
    "    local ok, v = fs.resume(co, side)\n"
    "    check(ok, v)\n"
    "    if fs.status(co) == 'dead' then\n"
    "      check(v == '12345678', 'marathon sorted ' .. tostring(v))\n"
    "      table.remove(marathons, i)\n"
    "    else\n"
    "      check(v == 'compare', 'marathon yielded ' .. tostring(v))\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local function inner()\n"
    "  local t = {2, 1}\n"
    "  table.sort(t, function(a, b) fs.yield('inner') return a < b end)\n"
    "  return host.thread()\n"
    "end\n"
    "local function outer(co)\n"
    "  check(select(2, fs.resume(co)) == 'inner', 'inner did not yield')\n"
    "  fs.yield('outer')\n"
    "  local me = fs.running()\n"
    "  local ok, where = fs.resume(co)\n"
    "  check(ok and where == host.thread(), 'inner finished on ' ..\n"
    "        tostring(where))\n"
    "  check(fs.status(co) == 'dead', 'inner is ' .. fs.status(co))\n"
    "  return host.thread(), me\n"
    "end\n",
    "function phase_a(r)\n"
    "  check(host.thread() == 'A', 'phase_a on ' .. host.thread())\n"
    "  check(select(2, fs.running()) == true, 'not the main thread')\n"
    "  step_marathons('A')\n"
    "  local b = {}\n"
    "  for i = 1, N do\n"
    "    local co = fs.create(body)\n"
    "    local ok, v = fs.resume(co, r, i, i % 4 + 1)\n"
    "    check(ok and v == r * 1000 + i, 'first resume: ' .. tostring(v))\n"
    "    check(fs.status(co) == 'suspended', 'not suspended')\n"
    "    b[i] = co\n"
    "  end\n"
    "  batches[r] = b\n"
    "  local m = fs.create(marathon)\n"
    "  check(select(2, fs.resume(m, 'A')) == 'compare', 'marathon start')\n"
    "  marathons[#marathons + 1] = m\n"
    "  local ic, oc = fs.create(inner), fs.create(outer)\n"
    "  check(select(2, fs.resume(oc, ic)) == 'outer', 'outer did not yield')\n"
    "  check(fs.status(ic) == 'suspended', 'inner is ' .. fs.status(ic))\n"
    "  pairs_[r] = {ic, oc}\n"
    "  return fs.stats().fibers\n"
    "end\n"
    "function phase_b(r)\n"
    "  check(host.thread() == 'B', 'phase_b on ' .. host.thread())\n"
    "  check(select(2, fs.running()) == true, 'not the main thread')\n"
    "  step_marathons('B')\n"
    "  for i, co in ipairs(batches[r]) do\n"
    "    local kind = i % 4 + 1\n"
    "    check(fs.status(co) == 'suspended' and fs.isfiber(co), 'not parked')\n"
    "    check(fs.info(co).status == 'suspended', 'info disagrees')\n"
    "    local ok, t0, t1, got, began, ended = fs.resume(co, -i)\n"
    "    check(ok, t0)\n"
    "    check(t0 == 'A' and t1 == 'B', ('fiber %d ran on %s then %s'):format(\n"
    "          i, tostring(t0), tostring(t1)))\n"
    "    check(got == -i, 'fiber got ' .. tostring(got))\n"
    "    if kind == 3 then\n"
    "      check(began == 'A' and ended == 'B', ('host.map frame ran on %s then "
    "%s')\n"
    "            :format(tostring(began), tostring(ended)))\n"
    "    end\n"
    "    check(fs.status(co) == 'dead', 'fiber is ' .. fs.status(co))\n"
    "  end\n"
    "  batches[r] = nil\n"
    "  local ic, oc = pairs_[r][1], pairs_[r][2]\n"
    "  local ok, where, me = fs.resume(oc)\n"
    "  check(ok and where == 'B' and me == oc, 'outer: ' .. tostring(where))\n"
    "  pairs_[r] = nil\n"
    "  collectgarbage()\n"
    "  return fs.stats().fibers, #marathons\n"
    "end\n",
    NULL}; /* C99 compilers need not take string literals over 4095 bytes */

/* Load the driver's parts as one chunk; returns the load status, with the
 * chunk or the message on top. */
static int load_driver(lua_State *L) {
  luaL_Buffer b;
  const char *const *part;
  luaL_buffinit(L, &b);
  for (part = driver_parts; *part != NULL; part++) luaL_addstring(&b, *part);
  luaL_pushresult(&b);
  if (luaL_loadbuffer(L, lua_tostring(L, -1), lua_rawlen(L, -1), "=driver") !=
      LUA_OK) {
    lua_remove(L, -2);
    return LUA_ERRSYNTAX;
  }
  lua_remove(L, -2);
  return LUA_OK;
}

/* Message handler: the error with a traceback. */
static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
  return 1;
}

/* Call global function `fn`(r) in protected mode with `nres` results left
 * on the stack; on error reports it under `name` and returns 0. */
static int call_phase(lua_State *L, const char *fn, int r, int nres,
                      const char *name) {
  int base = lua_gettop(L);
  lua_pushcfunction(L, traceback);
  lua_getglobal(L, fn);
  lua_pushinteger(L, r);
  if (lua_pcall(L, 1, nres, base + 1) != LUA_OK) {
    report(0, name, lua_tostring(L, -1));
    lua_settop(L, base);
    return 0;
  }
  lua_remove(L, base + 1);
  return 1;
}

/* Thread A's part of round r: the state is made in round 0. */
static void lua_phase_a(int r) {
  lua_State *L = sh.L;
  char name[96];
  if (r == 0) {
    L = sh.L = luaL_newstate();
    if (L == NULL) {
      report(0, "luaL_newstate", "out of memory");
      return;
    }
    luaL_openlibs(L);
    luaL_requiref(L, "fiberswap", luaopen_fiberswap, 1);
    lua_pop(L, 1);
    luaL_newlib(L, host_funcs);
    lua_setglobal(L, "host");
    if (load_driver(L) != LUA_OK || lua_pcall(L, 0, 0, 0) != LUA_OK) {
      report(0, "load the driver", lua_tostring(L, -1));
      lua_pop(L, 1);
      return;
    }
  }
  if (L == NULL) return;
  snprintf(name, sizeof name,
           "round %d: Lua fibers start and suspend in sort, gsub, host.map",
           r);
  if (call_phase(L, "phase_a", r, 1, name)) {
    lua_Integer live = lua_tointeger(L, -1);
    char why[96];
    lua_pop(L, 1);
    /* this round's batch, its nested pair, and the marathons so far */
    snprintf(why, sizeof why, "%d fibers live", (int)live);
    report(live >= 12 + 2 + 1, name, why);
  }
}

/* Thread B's part of round r: the state is closed in the last round,
 * with the marathon fibers still suspended. */
static void lua_phase_b(int r) {
  lua_State *L = sh.L;
  char name[96];
  if (L == NULL) return;
  snprintf(name, sizeof name,
           "round %d: Lua fibers started on A finish on B", r);
  if (call_phase(L, "phase_b", r, 2, name)) {
    lua_Integer live = lua_tointeger(L, -2), marathons = lua_tointeger(L, -1);
    char why[96];
    lua_pop(L, 2);
    snprintf(why, sizeof why, "%d fibers live, %d marathons", (int)live,
             (int)marathons);
    report(live == marathons && marathons > 0, name, why);
  }
  if (r == ROUNDS - 1) {
    size_t pooled = fsw_pool_count();
    lua_close(L); /* the marathons' stacks come from A's pool, go to B's */
    sh.L = NULL;
    report(fsw_pool_count() > pooled,
           "lua_close on B frees fibers suspended since A",
           "B's pool did not grow");
  }
}

/* ------------------------------------------------------------- C side */

/* A C fiber that records where it ran: started on A, finished on B. */
struct cfib {
  fsw_fiber *f;
  long id;
  const char *began, *ended;
  int bad; /* checks that failed inside the fiber */
};

static struct cfib cfibs[C_FIBERS];

/* Yield v from `depth` frames down; returns what the next resume brought. */
__attribute__((noinline)) static long deep_yield(struct cfib *c, int depth,
                                                 long v) {
  volatile long here = v + depth;
  long r;
  if (depth == 0) {
    void *in = NULL;
    if (fsw_yield((void *)(intptr_t)v, &in) != FSW_OK) c->bad++;
    r = (long)(intptr_t)in;
  } else {
    r = deep_yield(c, depth - 1, v);
  }
  if (here != v + depth) c->bad++;
  return r;
}

/* Yields id + in, then returns 2 * what it was resumed with.  Checks that
 * fsw_current() is itself on whichever thread runs it. */
static void *c_body(void *arg, void *in) {
  struct cfib *c = arg;
  long got;
  c->began = thread_name();
  if (fsw_current() != c->f || fsw_status_of(c->f) != FSW_RUNNING) c->bad++;
  got = deep_yield(c, (int)(c->id % 5), c->id + (long)(intptr_t)in);
  if (fsw_current() != c->f || fsw_status_of(c->f) != FSW_RUNNING) c->bad++;
  c->ended = thread_name();
  return (void *)(intptr_t)(2 * got);
}

static void c_phase_a(int r) {
  char name[96], why[120] = "";
  int i, bad = 0;
  snprintf(name, sizeof name, "round %d: C fibers start on A and yield", r);
  for (i = 0; i < C_FIBERS; i++) {
    struct cfib *c = &cfibs[i];
    void *out = NULL;
    c->id = i;
    c->began = c->ended = NULL;
    c->bad = 0;
    if (fsw_create(&c->f, c_body, c, FSW_STACK_MIN) != FSW_OK) {
      c->f = NULL;
      bad++;
      continue;
    }
    if (fsw_resume(c->f, (void *)(intptr_t)(r * 100), &out) != FSW_OK ||
        (long)(intptr_t)out != i + r * 100)
      bad++;
    if (fsw_status_of(c->f) != FSW_SUSPENDED || fsw_current() != NULL) bad++;
  }
  snprintf(why, sizeof why, "%d checks failed", bad);
  report(bad == 0, name, why);
}

static void c_phase_b(int r) {
  char name[96], why[120] = "";
  int i, bad = 0;
  snprintf(name, sizeof name,
           "round %d: C fibers suspended on A finish on B", r);
  for (i = 0; i < C_FIBERS; i++) {
    struct cfib *c = &cfibs[i];
    void *out = NULL;
    if (c->f == NULL) {
      bad++;
      continue;
    }
    if (fsw_current() != NULL || fsw_status_of(c->f) != FSW_SUSPENDED) bad++;
    if (fsw_resume(c->f, (void *)(intptr_t)(i + 1), &out) != FSW_OK ||
        (long)(intptr_t)out != 2 * (i + 1))
      bad++;
    if (fsw_status_of(c->f) != FSW_DEAD || fsw_current() != NULL) bad++;
    if (c->began == NULL || strcmp(c->began, "A") != 0 || c->ended == NULL ||
        strcmp(c->ended, "B") != 0) {
      if (bad++ == 0)
        snprintf(why, sizeof why, "fiber %d ran on %s then %s", i,
                 c->began ? c->began : "nothing",
                 c->ended ? c->ended : "nothing");
    }
    bad += c->bad;
    if (fsw_destroy(c->f) != FSW_OK) bad++;
    c->f = NULL;
  }
  if (why[0] == '\0') snprintf(why, sizeof why, "%d checks failed", bad);
  report(bad == 0, name, why);
}

/* ------------------------------------------------------------------ main */

/* A worker: runs every phase of its parity, one at a time, holding `mu`
 * for the whole phase. */
static void *work(void *arg) {
  const char *name = arg;
  int mine = name[0] == 'B';
  pthread_setspecific(who, name);
  pthread_mutex_lock(&sh.mu);
  for (;;) {
    int phase;
    while (sh.phase < PHASES && sh.phase % 2 != mine)
      pthread_cond_wait(&sh.turn, &sh.mu);
    if (sh.phase >= PHASES) break;
    phase = sh.phase;
    if (mine == 0) {
      lua_phase_a(phase / 2);
      c_phase_a(phase / 2);
    } else {
      lua_phase_b(phase / 2);
      c_phase_b(phase / 2);
    }
    sh.phase++;
    pthread_cond_broadcast(&sh.turn);
  }
  pthread_mutex_unlock(&sh.mu);
  fsw_pool_drain();
  return NULL;
}

int main(void) {
  static char a[] = "A", b[] = "B";
  pthread_t ta, tb;
  if (pthread_key_create(&who, NULL) != 0 ||
      pthread_create(&ta, NULL, work, a) != 0) {
    printf("not ok 1 - start thread A\nmigrate: 0 passed, 1 failed\n");
    return 1;
  }
  if (pthread_create(&tb, NULL, work, b) != 0) {
    pthread_mutex_lock(&sh.mu);
    sh.phase = PHASES; /* let A stop */
    pthread_cond_broadcast(&sh.turn);
    pthread_mutex_unlock(&sh.mu);
    pthread_join(ta, NULL);
    printf("not ok 1 - start thread B\nmigrate: 0 passed, 1 failed\n");
    return 1;
  }
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  if (sh.L != NULL) lua_close(sh.L); /* only if B never reached its end */
  printf("migrate: %d passed, %d failed\n", sh.passed, sh.failed);
  return sh.failed != 0;
}
