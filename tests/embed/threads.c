/* threads.c: two OS threads, each with its own lua_State, drive fibers at the same time.
 * Fiber state is per OS thread and per Lua state, so threads sharing nothing need no locks. */
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

#define NTHREADS 2
#define C_FIBERS 50
#define C_ROUNDS 200 /* values each C fiber hands out: 10,000 per thread */
#define ABANDONED 10 /* C fibers destroyed while suspended */
#define LUA_FIBERS 100
#define LUA_ROUNDS 200 /* values each Lua fiber hands out: 20,000 per thread */
#define MAX_RESULTS 16

/* One test outcome, kept by its thread and printed by main after join. */
struct result {
  int ok;
  char name[96];
  char why[600];
};

struct worker {
  int id; /* 1-based; goes into every value, so threads never agree */
  pthread_t thread;
  struct result res[MAX_RESULTS];
  int nres;
};

static pthread_barrier_t line; /* both threads start each part together */

/* Keep an outcome; `why` explains a failure. */
static void record(struct worker *w, int ok, const char *name,
                   const char *why) {
  struct result *r;
  if (w->nres == MAX_RESULTS) return;
  r = &w->res[w->nres++];
  r->ok = ok;
  snprintf(r->name, sizeof r->name, "%s", name);
  snprintf(r->why, sizeof r->why, "%s", why ? why : "");
}

/* ------------------------------------------------- the C API, per thread */

/* One C fiber of the round-trip test. */
struct cfib {
  fsw_fiber *f;
  long id;
  long got; /* values received after the first */
  int bad;  /* checks that failed inside the fiber */
};

/* What a thread sends fiber `id` in round k: unique across both threads. */
static long value_of(int tid, long id, long k) {
  return (long)tid * 10000000L + id * 10000L + k;
}

static void *to_ptr(long v) { return (void *)(intptr_t)v; }
static long to_long(void *p) { return (long)(intptr_t)p; }

/* Yield v from `depth` calls further down, each frame keeping a local that
 * must come back intact; returns what the next resume brought. */
__attribute__((noinline)) static long deep_yield(struct cfib *c, int depth,
                                                 long v) {
  volatile long here = v ^ depth;
  long r;
  if (depth == 0) {
    void *in = NULL;
    if (fsw_yield(to_ptr(v), &in) != FSW_OK) c->bad++;
    r = to_long(in);
  } else {
    r = deep_yield(c, depth - 1, v);
  }
  if (here != (v ^ depth)) c->bad++;
  return r;
}

/* Hands out 3x + id for each x it is given, C_ROUNDS times: the last one
 * as its return value. */
static void *round_trip_body(void *arg, void *in) {
  struct cfib *c = arg;
  long x = to_long(in);
  int i;
  for (i = 1; i < C_ROUNDS; i++) {
    if (fsw_current() != c->f || fsw_status_of(c->f) != FSW_RUNNING) c->bad++;
    x = deep_yield(c, (int)(c->id % 8), x * 3 + c->id);
    c->got++;
  }
  return to_ptr(x * 3 + c->id);
}

/* C_FIBERS fibers, resumed round-robin, each value checked. */
static void c_round_trips(struct worker *w) {
  static const char name[] =
      "C API: 50 fibers round-trip 10000 values from nested frames";
  struct cfib fib[C_FIBERS];
  long checked = 0, bad = 0;
  int i, k;
  char why[200] = "";
  for (i = 0; i < C_FIBERS; i++) {
    fib[i].id = i;
    fib[i].got = 0;
    fib[i].bad = 0;
    if (fsw_create(&fib[i].f, round_trip_body, &fib[i], FSW_STACK_DEFAULT) !=
        FSW_OK) {
      while (i-- > 0) fsw_destroy(fib[i].f);
      record(w, 0, name, "fsw_create failed");
      return;
    }
  }
  for (k = 0; k < C_ROUNDS; k++) {
    for (i = 0; i < C_FIBERS; i++) {
      long x = value_of(w->id, i, k);
      void *out = NULL;
      if (fsw_status_of(fib[i].f) != FSW_SUSPENDED) bad++;
      if (fsw_resume(fib[i].f, to_ptr(x), &out) != FSW_OK) {
        bad++;
        continue;
      }
      if (to_long(out) != x * 3 + i) {
        if (bad++ == 0)
          snprintf(why, sizeof why, "fiber %d round %d: got %ld, want %ld", i,
                   k, to_long(out), x * 3 + i);
      } else {
        checked++;
      }
      if (fsw_current() != NULL) bad++;
    }
  }
  for (i = 0; i < C_FIBERS; i++) {
    if (fsw_status_of(fib[i].f) != FSW_DEAD) bad++;
    if (fib[i].got != C_ROUNDS - 1) bad++;
    bad += fib[i].bad;
    if (fsw_destroy(fib[i].f) != FSW_OK) bad++;
  }
  if (why[0] == '\0')
    snprintf(why, sizeof why, "%ld values checked, %ld checks failed",
             checked, bad);
  record(w, bad == 0 && checked == (long)C_FIBERS * C_ROUNDS, name, why);
}

/* A fiber that resumes another, as in the README's asymmetric model. */
struct nest {
  fsw_fiber *outer, *inner;
  int bad;
};

static void *inner_body(void *arg, void *in) {
  struct nest *n = arg;
  if (fsw_current() != n->inner) n->bad++;
  if (fsw_status_of(n->outer) != FSW_NORMAL) n->bad++;
  if (fsw_resume(n->outer, NULL, NULL) != FSW_ENORMAL) n->bad++;
  if (fsw_resume(n->inner, NULL, NULL) != FSW_ERUNNING) n->bad++;
  if (fsw_destroy(n->inner) != FSW_EBUSY) n->bad++;
  if (fsw_yield(to_ptr(to_long(in) + 1), &in) != FSW_OK) n->bad++;
  return to_ptr(to_long(in) + 1);
}

static void *outer_body(void *arg, void *in) {
  struct nest *n = arg;
  void *out = NULL;
  if (fsw_resume(n->inner, in, &out) != FSW_OK) n->bad++;
  if (fsw_current() != n->outer) n->bad++;
  if (fsw_yield(out, &in) != FSW_OK) n->bad++; /* inner stays suspended */
  if (fsw_resume(n->inner, in, &out) != FSW_OK) n->bad++;
  if (fsw_status_of(n->inner) != FSW_DEAD) n->bad++;
  return out;
}

/* Nested resumes, then fibers destroyed while suspended deep down. */
static void c_nested_and_abandoned(struct worker *w) {
  static const char name[] =
      "C API: nested resume, and fibers destroyed while suspended";
  struct nest n = {NULL, NULL, 0};
  struct cfib lost[ABANDONED];
  void *out = NULL;
  size_t pooled;
  int i, bad = 0;
  char why[120];
  if (fsw_create(&n.outer, outer_body, &n, FSW_STACK_MIN) != FSW_OK ||
      fsw_create(&n.inner, inner_body, &n, FSW_STACK_MIN) != FSW_OK) {
    fsw_destroy(n.outer);
    record(w, 0, name, "fsw_create failed");
    return;
  }
  if (fsw_resume(n.outer, to_ptr(10), &out) != FSW_OK || to_long(out) != 11)
    bad++;
  if (fsw_status_of(n.inner) != FSW_SUSPENDED) bad++;
  if (fsw_resume(n.outer, to_ptr(20), &out) != FSW_OK || to_long(out) != 21)
    bad++;
  if (fsw_status_of(n.outer) != FSW_DEAD) bad++;
  bad += n.bad;
  fsw_destroy(n.inner);
  fsw_destroy(n.outer);

  pooled = fsw_pool_count();
  for (i = 0; i < ABANDONED; i++) {
    lost[i].id = 7;
    lost[i].got = 0;
    lost[i].bad = 0;
    if (fsw_create(&lost[i].f, round_trip_body, &lost[i], FSW_STACK_DEFAULT) !=
            FSW_OK ||
        fsw_resume(lost[i].f, to_ptr(i), &out) != FSW_OK ||
        to_long(out) != i * 3 + 7) {
      bad++;
      break;
    }
  }
  if (fsw_pool_count() + (size_t)i != pooled) bad++; /* taken from the pool */
  while (i-- > 0)
    if (fsw_destroy(lost[i].f) != FSW_OK) bad++;
  if (fsw_pool_count() != pooled) bad++; /* and given back */
  snprintf(why, sizeof why, "%d checks failed", bad);
  record(w, bad == 0, name, bad == 0 ? "" : why);
}

/* --------------------------------------------- the Lua module, per thread */

/* Runs with (thread id, fibers, rounds).  Each fiber hands out 3x + id for
 * every x it is given, yielding from a table.sort comparator, a
 * string.gsub callback or its body; the driver checks every value.
 * Returns the number of values checked and of yields from each place. */
static const char round_trip_chunk[] =
    "local tid, NF, PER = ...\n"
    "local fs = require 'fiberswap'\n"
    "local places = {body = 0, sort = 0, gsub = 0}\n"
    "local function value(id, k) return tid * 10000000 + id * 10000 + k end\n"
    "local function self_check(id, when)\n"
    "  local me, ismain = fs.running()\n"
    "  if ismain or fs.status(me) ~= 'running' then\n"
    "    error(('fiber %d %s: status(running()) is %s'):format(id, when,\n"
    "          fs.status(me)))\n"
    "  end\n"
    "end\n"
    "local function body(id, x)\n"
    "  local n = 0\n"
    "  self_check(id, 'on its first run')\n"
    "  local function rt(where)\n"
    "    n = n + 1\n"
    "    places[where] = places[where] + 1\n"
    "    x = fs.yield(x * 3 + id)\n"
    "  end\n"
    "  while n < PER - 1 do\n"
    "    local m = n % 3\n"
    "    if m == 0 then\n"
    "      rt('body')\n"
    "    elseif m == 1 then\n"
    "      local t = {5, 3, 4, 1, 2}\n"
    "      table.sort(t, function(a, b)\n"
    "        if n < PER - 1 then rt('sort') end\n"
    "        return a < b\n"
    "      end)\n"
    "      assert(table.concat(t, ',') == '1,2,3,4,5')\n"
    "    else\n"
    "      local s = ('abcd'):gsub('.', function(c)\n"
    "        if n < PER - 1 then rt('gsub') end\n"
    "        return c:upper()\n"
    "      end)\n"
    "      assert(s == 'ABCD')\n"
    "    end\n"
    "  end\n"
    "  self_check(id, 'after its last yield')\n"
    "  return x * 3 + id\n"
    "end\n"
    "local fibers = {}\n"
    "for id = 1, NF do fibers[id] = fs.create(body) end\n"
    "local checked = 0\n"
    "for k = 0, PER - 1 do\n"
    "  for id = 1, NF do\n"
    "    local co, x = fibers[id], value(id, k)\n"
    "    local ok, y\n"
    "    if k == 0 then ok, y = fs.resume(co, id, x)\n"
    "    else ok, y = fs.resume(co, x) end\n"
    "    if not ok then error(('fiber %d round %d failed: %s'):format(id, k, "
    "tostring(y))) end\n"
    "    if y ~= x * 3 + id then\n"
    "      error(('fiber %d round %d: got %s, want %d'):format(id, k,\n"
    "            tostring(y), x * 3 + id))\n"
    "    end\n"
    "    checked = checked + 1\n"
    "    local st, want = fs.status(co), k < PER - 1 and 'suspended' or 'dead'\n"
    "    if st ~= want then error(('fiber %d round %d is %s'):format(id, k, "
    "st)) end\n"
    "  end\n"
    "  if k == 0 then\n"
    "    local live = fs.stats().fibers\n"
    "    if live ~= NF then error(live .. ' fibers live, want ' .. NF) end\n"
    "  end\n"
    "end\n"
    "assert(fs.stats().fibers == 0, 'fibers left holding stacks')\n"
    "assert(select(2, fs.running()) == true and not fs.isyieldable())\n"
    "return checked, places.body, places.sort, places.gsub\n";

/* Message handler: the error with a traceback. */
static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
  return 1;
}

/* A state of this thread's own, fiberswap opened as a static module. */
static void lua_round_trips(struct worker *w) {
  static const char name[] =
      "Lua: 100 fibers round-trip 20000 values across sort and gsub";
  lua_State *L = luaL_newstate();
  char why[600];
  int ok;
  if (L == NULL) {
    record(w, 0, name, "luaL_newstate failed");
    return;
  }
  luaL_openlibs(L);
  luaL_requiref(L, "fiberswap", luaopen_fiberswap, 1);
  lua_pop(L, 1);
  lua_pushcfunction(L, traceback);
  if (luaL_loadbuffer(L, round_trip_chunk, sizeof round_trip_chunk - 1,
                      "=round_trip") != LUA_OK) {
    snprintf(why, sizeof why, "%s", lua_tostring(L, -1));
    record(w, 0, name, why);
    lua_close(L);
    return;
  }
  lua_pushinteger(L, w->id);
  lua_pushinteger(L, LUA_FIBERS);
  lua_pushinteger(L, LUA_ROUNDS);
  if (lua_pcall(L, 3, 4, 1) != LUA_OK) {
    snprintf(why, sizeof why, "%s", lua_tostring(L, -1));
    record(w, 0, name, why);
  } else {
    lua_Integer checked = lua_tointeger(L, -4);
    lua_Integer body = lua_tointeger(L, -3), sort = lua_tointeger(L, -2),
                gsub = lua_tointeger(L, -1);
    ok = checked == (lua_Integer)LUA_FIBERS * LUA_ROUNDS && body > 0 &&
         sort > 0 && gsub > 0 &&
         body + sort + gsub == (lua_Integer)LUA_FIBERS * (LUA_ROUNDS - 1);
    snprintf(why, sizeof why,
             "%ld values checked; yields: %ld in bodies, %ld in sort, "
             "%ld in gsub",
             (long)checked, (long)body, (long)sort, (long)gsub);
    record(w, ok, name, why);
  }
  lua_close(L);
}

/* ------------------------------------------------------------------ main */

static void *work(void *arg) {
  struct worker *w = arg;
  int ok;
  pthread_barrier_wait(&line);
  ok = fsw_pool_count() == 0 && fsw_current() == NULL;
  record(w, ok, "a new thread has no current fiber and an empty pool",
         ok ? "" : "the pool or fsw_current leaks across threads");
  c_round_trips(w);
  c_nested_and_abandoned(w);
  pthread_barrier_wait(&line);
  lua_round_trips(w);
  return NULL;
}

int main(void) {
  struct worker w[NTHREADS];
  int i, j, started = 0, passed = 0, failed = 0;
  pthread_barrier_init(&line, NULL, NTHREADS);
  for (i = 0; i < NTHREADS; i++) {
    w[i].id = i + 1;
    w[i].nres = 0;
    if (pthread_create(&w[i].thread, NULL, work, &w[i]) != 0) break;
    started++;
  }
  if (started < NTHREADS) { /* the others wait at the barrier for good */
    printf("not ok 1 - pthread_create\n");
    printf("threads: 0 passed, 1 failed\n");
    return 1;
  }
  for (i = 0; i < NTHREADS; i++) pthread_join(w[i].thread, NULL);
  for (i = 0; i < NTHREADS; i++) {
    for (j = 0; j < w[i].nres; j++) {
      const struct result *r = &w[i].res[j];
      if (r->ok)
        passed++;
      else
        failed++;
      printf("%s %d - thread %d: %s\n", r->ok ? "ok" : "not ok",
             passed + failed, w[i].id, r->name);
      diag(r->why);
    }
  }
  pthread_barrier_destroy(&line);
  printf("threads: %d passed, %d failed\n", passed, failed);
  return failed != 0;
}
