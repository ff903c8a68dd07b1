/* fiberswap.c: the Lua module, a drop-in for the coroutine library.
 * Its coroutines are fibers: Lua threads that run on machine stacks of their
 * own, so they can yield across any C call. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua.h"
#include "lauxlib.h"

#include "compat.h"
#include "fiberswap.h"
#include "fiber_direct.h" /* the direct round trip: see l_resume */

/*
** A fiber is a Lua thread that runs on a machine stack of its own.  Its
** thread's Lua stack is empty before the first resume and after death, and
** holds frames in between, so the built-in coroutine functions see it as
** dead or non-suspended and never run it; and in every state but two, Lua's
** own view of the thread is already the right answer:
**
**   fresh      the weak-keyed table `fibers` maps the thread to its body
**              (or {body, stacksize}); it has no machine stack yet.
**   active     running, or normal (it resumed another).  Its record lives
**              at the top of its own machine stack (FS_DIRECT; else in
**              the frame of the resume that started it), then in its
**              userdata; `running` and each record's `outer` chain them.
**   suspended  its record is a userdata, armed when it first yielded: it
**              has the __gc that frees the machine stack of a fiber
**              abandoned while suspended, holds its thread, and is what
**              `fibers` maps the thread to.
**   dead       its machine stack went back to the pool; it is an ordinary
**              dead coroutine, no longer known here.
**
** So a fiber that runs to the end without yielding (spawn) costs a thread
** and a machine stack from the pool, nothing more.
**
** The body runs as lua_resume(co, NULL, ...) on the fiber's stack, of
** fiber_start, which lua_calls it: errors keep their frames for tracebacks as
** in a plain coroutine, each fiber gets a fresh C-call budget, and lua_yield
** is refused inside, so only a stack switch can suspend the thread.
**
** The round trip is direct (FS_DIRECT, on the x86-64 switch): resume and
** wrap's closures tail-call the switch, and yield does the resumer's part
** (moving the values) before it tail-calls the switch too.  So neither side
** keeps a frame of its own across a switch: each switch returns straight
** into the Lua VM's call of a C function, the same address on both sides
** (luaD_precall, then luaV_execute), which the CPU predicts.  xfer finds
** the fiber when the record cache does not (a fresh fiber, a cache miss,
** many arguments) and then resumes it the same way.  Without FS_DIRECT
** (5.1, LuaJIT, the sanitizers, ucontext) xfer calls the switch for every
** resume and yield, and finishes each resume itself after the switch.
**
** No error ever crosses stacks: the resumer raises its errors in its own
** state on its own stack, and errors in a fiber stop at the lua_resume at the
** bottom of that fiber's stack.  What a direct yield does on the resumer's
** thread (lua_pushboolean, lua_xmove into space Lua guaranteed) cannot
** raise; whatever can (a fiber's end, its error, many values) runs in land,
** on the resumer's stack.
*/

#define REG_STATE "fiberswap.state"   /* registry: the module state */
#define REG_FIBERS "fiberswap.fibers" /* registry: thread -> body or record */
#define REG_RECORD "fiberswap.fiber"  /* registry: armed records' metatable */
#define REG_COPY "fiberswap.copy"     /* registry: which copy of the code owns them */

/* Upvalues of the module's functions (the module state as a light
 * userdata); wrap's closures add the thread. */
#define UV_FIBERS lua_upvalueindex(1)
#define UV_STATE lua_upvalueindex(2)
#define UV_CO lua_upvalueindex(3)

/* OP_SPAWN resumes like OP_RESUME a fiber that was never in `fibers`. */
enum op { OP_RESUME, OP_WRAP, OP_SPAWN };

/* What a fiber hands its resumer, packed into the pointer: a count and
 * why.  For ST_YIELD and ST_RETURN the number of values on top of its
 * thread; for ST_ERROR the Lua status, with the error object on top.  (A
 * resumer hands a fiber just the number of values it left on the fiber's
 * thread; a direct yield hands its resumer just the count to return.) */
enum { ST_YIELD, ST_RETURN, ST_ERROR };
#define PACK(n, st) ((void *)(((intptr_t)(n) << 2) | (st)))
#define PACK_N(p) ((int)((intptr_t)(p) >> 2))
#define PACK_ST(p) ((int)((intptr_t)(p)&3))

struct fiber;

/* Per Lua state; kept in the registry, so it outlives every record.
 * `cache` maps a thread to its armed record without a table lookup.  An
 * armed record holds its thread, so the thread cannot be freed (and its
 * address reused) before the record's entry is evicted, at its death or by
 * its __gc. */
#define CACHE_SIZE 256
#define CACHE_SLOT(co) (((uintptr_t)(co) >> 6) % CACHE_SIZE)
typedef struct mstate {
  size_t stacksize; /* default for create, wrap and spawn */
  long live;        /* fibers that hold a machine stack */
  struct fiber *cache[CACHE_SIZE];
} mstate;

enum fstate { F_SUSPENDED, F_ACTIVE, F_DEAD };

typedef struct fiber {
  int (*land)(void *);  /* first: where a direct resumer continues (land) */
  lua_State *co;        /* its thread; not a reference, see the __gc */
  fsw_fiber *fsw;       /* its machine stack and context, or NULL */
  mstate *ms;
  struct fiber *outer;  /* while active: the fiber active around it */
  size_t stacksize;
  int state;            /* enum fstate */
  int armed;            /* a userdata with a __gc, in `fibers` */
  int op;               /* FS_DIRECT, while active: how it was resumed */
  lua_State *L;         /* and by which thread */
  void *pending;        /* for land: what the fiber handed over, packed */
} fiber;

/* Branch hints for the round trip's straight path: the common case falls
 * through, so a round trip takes no jump it could avoid. */
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

/* The direct round trip (FSW_DIRECT: the x86-64 switch, no sanitizer).
 * resume tail-calls the switch, so the resumer's side of it returns
 * straight to Lua, and the fiber's yield does the resumer's part of the
 * round trip (the results onto its thread) before it switches; the switch
 * hands back the count of values to return.  What yield cannot finish
 * there (a first suspension, a fiber's end, an error, many values) it
 * hands over as LAND(f): the resumer then continues in land(f), on its own
 * stack.  A fiber's first record lives on its new stack (fsw__create_v),
 * so even its first resume keeps no frame across the switch. */
/* It finds a fiber through the cache, so it needs FS_CACHE (5.2 to 5.4:
 * 5.1 and LuaJIT take xfer every time).  Its yield relies on 5.2 to 5.4
 * too: there lua_pushboolean and lua_xmove into the space Lua guarantees
 * a C function neither allocate nor raise. */
#define FS_DIRECT (FSW_DIRECT && FS_CACHE)
#define LAND(f) ((void *)((uintptr_t)(f) | (UINTPTR_MAX ^ (UINTPTR_MAX >> 1))))

/* The innermost active fiber on this OS thread's current stack: set by the
 * resumer around each switch, read by yield. */
static FS_TLS fiber *running;

/* ---------------------------------------------------------------- helpers */

/* The module state of the one Lua state in the process that has the
 * module open, so that getms reads a global instead of an upvalue; MANY
 * once a second state has opened it (from then on each reads its upvalue,
 * for good); NULL before the first, and after it closed alone.  A state
 * is entered here before any of its functions can run and taken out by
 * its __gc, while its memory is still valid: a pointer here other than
 * MANY is always the live state of every caller of getms. */
static mstate *sole;
#define MANY ((mstate *)(uintptr_t)1) /* never a state: one test for both */

static mstate *getms(lua_State *L) {
  mstate *ms = __atomic_load_n(&sole, __ATOMIC_RELAXED);
  if (LIKELY((uintptr_t)ms > (uintptr_t)MANY)) return ms;
  return (mstate *)lua_touserdata(L, UV_STATE);
}

/* Enter ms as the sole state, or give up on having one. */
static void enter_sole(mstate *ms) {
  mstate *none = NULL;
  if (!__atomic_compare_exchange_n(&sole, &none, ms, 0, __ATOMIC_ACQ_REL,
                                   __ATOMIC_ACQUIRE))
    __atomic_store_n(&sole, MANY, __ATOMIC_RELEASE);
}

/* The module state's finalizer, when its Lua state closes. */
static int state_gc(lua_State *L) {
  mstate *ms = (mstate *)lua_touserdata(L, 1);
  __atomic_compare_exchange_n(&sole, &ms, NULL, 0, __ATOMIC_ACQ_REL,
                              __ATOMIC_ACQUIRE);
  return 0;
}

/* The thread argument #1, as lcorolib's getco. */
static lua_State *getco(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  fs_argexpected(L, co, 1, FS_THREAD_TNAME);
  return co;
}

/* What `fibers` holds for thread co (found at index idx), when the cache
 * has no record for it: an armed record is returned; for a fresh fiber
 * NULL is returned with its entry pushed; for anything else NULL with
 * nothing pushed. */
static fiber *lookup_table(lua_State *L, lua_State *co, int idx, int *fresh) {
  fiber *f = NULL;
  int t;
  *fresh = 0;
  lua_pushvalue(L, idx);
  t = fs_rawget(L, UV_FIBERS);
  if (t == LUA_TUSERDATA) {
    f = (fiber *)lua_touserdata(L, -1);
    if (FS_CACHE) getms(L)->cache[CACHE_SLOT(co)] = f;
  } else if (t != LUA_TNIL) {
    *fresh = 1;
    return NULL;
  }
  lua_pop(L, 1);
  return f;
}

/* As lookup_table, first asking the cache; small, so that resume inlines
 * the common case. */
static inline fiber *lookup(lua_State *L, lua_State *co, int idx, int *fresh) {
  fiber *f = getms(L)->cache[CACHE_SLOT(co)];
  if (LIKELY(f != NULL && f->co == co)) {
    *fresh = 0;
    return f;
  }
  return lookup_table(L, co, idx, fresh);
}

/* The record of an active fiber of thread co, through the `outer` chain. */
static fiber *active(lua_State *co) {
  fiber *f;
  for (f = running; f != NULL; f = f->outer)
    if (f->co == co) return f;
  return NULL;
}

/* Forget fiber co: no cache entry, no entry in `fibers`.  co is at idx. */
static void forget(lua_State *L, lua_State *co, int idx) {
  mstate *ms = getms(L);
  if (ms->cache[CACHE_SLOT(co)] && ms->cache[CACHE_SLOT(co)]->co == co)
    ms->cache[CACHE_SLOT(co)] = NULL;
  lua_pushvalue(L, idx);
  lua_pushnil(L);
  lua_rawset(L, UV_FIBERS);
}

/* Give back a fiber's machine stack: its C frames, if any, are abandoned as
 * a longjmp over them would abandon them.  Touches no Lua state, so the
 * __gc can use it after the thread itself is gone. */
static void release(fiber *f) {
  fsw_fiber *stack = f->fsw;
  f->state = F_DEAD;
  if (stack != NULL) { /* last: a first record lives on that stack */
    f->fsw = NULL;
    f->ms->live--;
    fsw_destroy(stack);
  }
}

/* Check an optional stack size at index arg. */
static size_t checksize(lua_State *L, int arg, size_t dflt) {
  lua_Integer n;
  if (lua_isnoneornil(L, arg)) return dflt;
  n = luaL_checkinteger(L, arg);
  luaL_argcheck(L, n >= (lua_Integer)FSW_STACK_MIN &&
                       n <= (lua_Integer)FSW_STACK_MAX,
                arg, "stack size out of range (16384 to 1073741824 bytes)");
  return (size_t)n;
}

/* ------------------------------------------------------- the fiber itself */

/* First function on a fiber's thread: runs the body.  lua_call without a
 * continuation makes lua_yield refuse inside, so only fiberswap's switch
 * can suspend this thread. */
static int fiber_start(lua_State *co) {
  lua_call(co, lua_gettop(co) - 1, LUA_MULTRET);
  return lua_gettop(co);
}

/* The machine-level body of every fiber, on the fiber's own stack: a fresh
 * C-call budget (from = NULL) and a protected boundary that keeps every
 * error on this stack.  `in` is the number of values above fiber_start
 * (the body and its arguments).  Reads its first record only before it
 * first runs Lua code: the record moves when the fiber first suspends.
 * Its ending is the value it returns, which the trampoline hands to the
 * resumer: packed for xfer, LAND(f) for a direct resumer. */
static void *fiber_main(void *arg, void *in) {
  lua_State *co = ((fiber *)arg)->co;
  int nres = 0;
  int status = fs_resume(co, NULL, (int)(intptr_t)in, &nres);
  void *out = status == LUA_OK ? PACK(nres, ST_RETURN) : PACK(status, ST_ERROR);
#if FS_DIRECT
  {
    /* The resumer continues in land, which ends the fiber (releasing this
     * stack) on its own stack: the trampoline hands LAND(f) over as
     * fsw__vswitch would.  f is the record, wherever it lives by now. */
    fiber *f = running;
    if (f == NULL || f->co != co) {
      /* Never: only a switch this module did not make could get here. */
      fputs("fiberswap: internal error: a fiber ended while another ran\n",
            stderr);
      abort();
    }
    running = f->outer;
    f->pending = out;
    return LAND(f);
  }
#else
  return out;
#endif
}

enum { COS_RUN, COS_DEAD, COS_YIELD, COS_NORM };
static const char *const statname[] = {"running", "dead", "suspended",
                                       "normal"};

/* A plain coroutine's status, as lcorolib's auxstatus; right for fibers
 * that are active but never yielded, and for dead ones, too. */
static int plain_status(lua_State *L, lua_State *co) {
  if (L == co) return COS_RUN;
  switch (lua_status(co)) {
    case LUA_YIELD:
      return COS_YIELD;
    case LUA_OK: {
      lua_Debug ar;
      if (lua_getstack(co, 0, &ar)) return COS_NORM;
      return lua_gettop(co) == 0 ? COS_DEAD : COS_YIELD;
    }
    default:
      return COS_DEAD;
  }
}

/* Push the weak-keyed table registry[name], made on first use. */
static void weak_table(lua_State *L, const char *name) {
  if (fs_getfield(L, LUA_REGISTRYINDEX, name) == LUA_TTABLE) return;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, name);
}

#if !FS_HAS_CLOSE
#define REG_FAILED "fiberswap.failed" /* registry: dead thread -> its error */
static const char nilerror; /* its address stands for a nil error there */
#define failed_table(L) weak_table((L), REG_FAILED)
#endif

/* Move a failed coroutine's error object to L.  Before 5.4, which has no
 * lua_resetthread to find it, a thread that died of it is remembered with
 * it in a registry table, for close to return as 5.4's does.  (A refused
 * resume, "C stack overflow" say, leaves the thread alive: not that.) */
static void takeerror(lua_State *co, lua_State *L) {
  lua_xmove(co, L, 1);
#if !FS_HAS_CLOSE
  if (lua_status(co) != LUA_OK && lua_status(co) != LUA_YIELD &&
      lua_checkstack(L, 3)) {
    failed_table(L);        /* [err, failed] */
    lua_pushthread(co);     /* the slot the error left */
    lua_xmove(co, L, 1);    /* [err, failed, co] */
    if (lua_isnil(L, -3)) lua_pushlightuserdata(L, (void *)&nilerror);
    else lua_pushvalue(L, -3);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
#endif
}

/* A resume failed, its message or error object on top: `false, msg` for
 * resume, a raised error for wrap, with the position prefix Lua 5.4's wrap
 * adds to strings (not to memory errors).  For an error raised inside the
 * coroutine (`inside`) wrap first closes the thread's pending to-be-closed
 * variables, as Lua's wrap does. */
static int resume_failed(lua_State *L, int op, lua_State *co, int status,
                         int inside) {
  if (op != OP_WRAP) {
    lua_pushboolean(L, 0);
    lua_insert(L, -2);
    return 2;
  }
  if (inside && FS_HAS_CLOSE) {
    lua_pop(L, 1);
    status = fs_closethread(co, L);
    lua_xmove(co, L, 1);
  }
  (void)inside;
  if (fs_wrap_prefixes(L, status)) {
    luaL_where(L, 1);
    lua_insert(L, -2);
    lua_concat(L, 2);
  }
  return lua_error(L);
}

/* Too many values to move between the threads: `false, msg` (a raised
 * error for wrap), as lcorolib does from 5.2 on; Lua 5.1 raises it. */
static int too_many(lua_State *L, int op, lua_State *co, const char *what) {
#if FS_TOOMANY_RAISES
  (void)op;
  (void)co;
  return luaL_error(L, "too many %s to resume", what);
#else
  lua_pushfstring(L, "too many %s to resume", what);
  return resume_failed(L, op, co, LUA_OK, 0);
#endif
}

/* Resume a plain coroutine (or a dead fiber) as lcorolib does: for resume,
 * as auxresume and luaB_coresume; for a wrap, as auxwrap. */
static int plain_resume(lua_State *L, int op, lua_State *co, int narg) {
  int status, nres = 0;
#if LUA_VERSION_NUM < 504 /* lua_resume itself checks this only from 5.4 */
  static const char *const refusal[] = {FS_MSG_RUNNING, "cannot resume dead coroutine",
                                        NULL, FS_MSG_NORMAL};
  const char *refused = refusal[plain_status(L, co)];
  if (refused != NULL) {
    lua_pushstring(L, fs_refusal(co, refused));
    return resume_failed(L, op, co, LUA_OK, 0);
  }
#endif
  if (!lua_checkstack(co, narg)) return too_many(L, op, co, "arguments");
  lua_xmove(L, co, narg);
  status = fs_resume(co, L, narg, &nres);
  if (status == LUA_OK || status == LUA_YIELD) {
    if (lua_checkstack(L, nres + 1)) {
      if (op == OP_RESUME) lua_pushboolean(L, 1);
      lua_xmove(co, L, nres);
      return nres + (op == OP_RESUME);
    }
    lua_pop(co, nres);
    return too_many(L, op, co, "results");
  }
  takeerror(co, L);
  status = lua_status(co);
  return resume_failed(L, op, co, status,
                       status != LUA_OK && status != LUA_YIELD);
}

static int land(void *p);

/* Start fresh fiber co: take a machine stack, fill its first record *fp
 * (FS_DIRECT: one made on that stack, whose address goes to *fp) and lay out
 * [fiber_start, body, args] on the thread.  For OP_SPAWN the thread holds
 * all that already; otherwise the fiber's `fibers` entry is on top of L,
 * above the n arguments.  On failure pushes a message, leaves the fiber
 * fresh (a spawned one: dead) and returns the Lua status to report. */
static int start(lua_State *L, int op, lua_State *co, fiber **fp, int n) {
  mstate *ms = getms(L);
  size_t size = ms->stacksize;
  fiber *f = *fp;
  fsw_err err;
  if (op != OP_SPAWN) {
    if (lua_type(L, -1) == LUA_TTABLE) { /* {body, stacksize} */
      lua_rawgeti(L, -1, 2);
      size = (size_t)lua_tointeger(L, -1);
      lua_pop(L, 1);
      lua_rawgeti(L, -1, 1);
      lua_remove(L, -2);
    }
    if (!lua_checkstack(co, n + 2)) {
      lua_pop(L, 1);
#if FS_TOOMANY_RAISES
      luaL_error(L, "too many arguments to resume");
#endif
      lua_pushliteral(L, "too many arguments to resume");
      return LUA_ERRRUN;
    }
  }
#if FS_DIRECT
  {
    fsw_fiber *stack;
    void *room;
    err = fsw__create_v(&stack, fiber_main, size, sizeof(fiber), &room);
    if (err == FSW_OK) {
      *fp = f = (fiber *)room; /* the first record lives on the new stack */
      f->fsw = stack;
    }
  }
#else
  err = fsw_create(&f->fsw, fiber_main, f, size);
#endif
  if (err != FSW_OK) {
    if (op != OP_SPAWN) lua_pop(L, 1);
    else lua_settop(co, 0);
    lua_pushfstring(L, "not enough memory for a fiber stack of %d bytes (%s)",
                    (int)size, fsw_strerror(err));
    return LUA_ERRMEM;
  }
  if (op != OP_SPAWN) {
    forget(L, co, op == OP_WRAP ? UV_CO : 1);
    lua_pushcfunction(co, fiber_start);
    lua_xmove(L, co, 1); /* the body */
    lua_xmove(L, co, n); /* its arguments */
  }
  ms->live++;
  f->co = co;
  f->ms = ms;
  f->stacksize = fsw_stack_size(f->fsw);
  f->armed = 0;
  f->land = land;
  return LUA_OK;
}

#if FS_HAS_CLOSE
static int noop(lua_State *L) {
  (void)L;
  return 0;
}

/* After the frames of a closed fiber were abandoned, its thread still
 * counts their C calls (and the non-yieldable call at its bottom): lua_resume
 * sets the count afresh, so an empty resume leaves the thread as a plain
 * coroutine would be after coroutine.close. */
static void reset_ccalls(lua_State *co) {
  int nres;
  lua_pushcfunction(co, noop);
  fs_resume(co, NULL, 0, &nres);
  lua_settop(co, 0);
}
#endif

/* Arm a record (see the top of the file), in protected mode: allocates.
 * Stack: [record pointer, thread, fibers]. */
static int arm_p(lua_State *L) {
  fiber *f = (fiber *)fs_newuserdata(L, sizeof(fiber), 1);
  *f = *(fiber *)lua_touserdata(L, 1);
  /* No stack until anchored: if the rawset below runs out of memory, this
   * copy is garbage with a __gc, and arm gives the stack back itself. */
  f->fsw = NULL;
  f->armed = 1;
  luaL_setmetatable(L, REG_RECORD);
  if (FS_CACHE) { /* the record holds its thread (see mstate) */
    lua_pushvalue(L, 2);
    fs_setuservalue(L, -2);
  }
  lua_pushvalue(L, 2);
  lua_pushvalue(L, -2);
  lua_rawset(L, 3); /* fibers[thread] = record */
  f->fsw = ((fiber *)lua_touserdata(L, 1))->fsw;
  return 1;
}

/* A fiber suspended for the first time: move its record from the resume's
 * frame into an armed userdata.  Returns the new record, or NULL if memory
 * ran out, with the message pushed and the fiber closed. */
static fiber *arm(lua_State *L, int op, lua_State *co, fiber *f) {
  fiber *armed;
  lua_pushcfunction(L, arm_p);
  lua_pushlightuserdata(L, f);
  lua_pushvalue(L, op == OP_WRAP ? UV_CO : 1);
  lua_pushvalue(L, UV_FIBERS);
  if (lua_pcall(L, 3, 1, 0) != LUA_OK) { /* cannot anchor it: close it */
    release(f);
    fs_closethread(co, L);
#if FS_HAS_CLOSE
    reset_ccalls(co);
#endif
    lua_pop(L, 1);
    lua_pushliteral(L, "not enough memory to suspend a fiber");
    return NULL;
  }
  armed = (fiber *)lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (FS_CACHE) f->ms->cache[CACHE_SLOT(co)] = armed;
  return armed;
}

/* Refused resume of a fiber that is not suspended (f is its record). */
__attribute__((noinline)) static int refuse(lua_State *L, int op, lua_State *co,
                                            fiber *f) {
  if (f->state == F_DEAD) lua_pushliteral(L, "cannot resume dead coroutine");
  else lua_pushstring(L, fs_refusal(co, L == co ? FS_MSG_RUNNING : FS_MSG_NORMAL));
  return resume_failed(L, op, co, LUA_OK, 0);
}

/* The rest of a resume after the switch, when the fiber suspended for the
 * first time, returned, failed, or handed over many values. */
static int finish(lua_State *L, int op, fiber *f, void *out) {
  lua_State *co = f->co;
  int n = PACK_N(out);
  if (PACK_ST(out) == ST_YIELD) {
    f->state = F_SUSPENDED;
    if (!f->armed && (f = arm(L, op, co, f)) == NULL)
      return resume_failed(L, op, co, LUA_ERRMEM, 0);
  } else { /* returned or failed: an ordinary dead coroutine from now on */
    if (f->armed) forget(L, co, op == OP_WRAP ? UV_CO : 1);
    release(f);
  }
  if (PACK_ST(out) == ST_ERROR) {
    takeerror(co, L);
    return resume_failed(L, op, co, n, 1);
  }
  if (n >= LUA_MINSTACK && !lua_checkstack(L, n + 1)) {
    lua_pop(co, n);
    return too_many(L, op, co, "results");
  }
  if (op != OP_WRAP) lua_pushboolean(L, 1);
  if (n > 0) lua_xmove(co, L, n);
  return n + (op != OP_WRAP);
}

/* Where a direct resumer (see FS_DIRECT) continues when the fiber left it
 * the rest (its first suspension, its end, its error, many values):
 * entered by the switch in place of the return to Lua, on the resumer's
 * stack, as if called by resume, the wrap function or spawn (whose thread
 * is below the results). */
static int land(void *p) {
  fiber *f = (fiber *)p;
  int op = f->op;
  return finish(f->L, op, f, f->pending) + (op == OP_SPAWN);
}

#if FS_DIRECT
/* The armed record of thread co, if the cache has it. */
static inline fiber *cached(lua_State *L, lua_State *co) {
  fiber *f = getms(L)->cache[CACHE_SLOT(co)];
  return LIKELY(f != NULL && f->co == co) ? f : NULL;
}

/* Resume fiber f (suspended, or fresh with its first record) whose n
 * values are on its thread, directly: the switch returns what the fiber's
 * yield (or land) decides. */
static inline int go(lua_State *L, int op, fiber *f, int n) {
  f->state = F_ACTIVE;
  f->op = op;
  f->L = L;
  f->outer = running;
  running = f;
  return fsw__vtransfer(f->fsw, (void *)(intptr_t)n, NULL);
}

/* The direct resume of suspended fiber f (thread co) with the n values on
 * top of L, n <= LUA_MINSTACK. */
static inline int direct(lua_State *L, int op, lua_State *co, fiber *f, int n) {
  if (n > 0) lua_xmove(L, co, n);
  return go(L, op, f, n);
}

/* What fibers knows of thread co (at index idx): its armed record, FRESH_REC
 * for a fresh fiber (its entry pushed), or NULL.  Out of line, so that its
 * callers keep no local whose address escapes. */
static const char fresh_rec;
#define FRESH_REC ((fiber *)(void *)&fresh_rec)
__attribute__((noinline)) static fiber *find(lua_State *L, lua_State *co, int idx) {
  int fresh;
  fiber *f = lookup(L, co, idx, &fresh);
  return f == NULL && fresh ? FRESH_REC : f;
}

/* Start fresh fiber co (as start) and return its first record; or push
 * the failure as resume does, `false, msg` (wrap raises it), and return
 * NULL. */
__attribute__((noinline)) static fiber *start_v(lua_State *L, int op,
                                               lua_State *co, int n) {
  fiber *f = NULL;
  int status = start(L, op, co, &f, n);
  if (status != LUA_OK) {
    resume_failed(L, op, co, status, 0);
    return NULL;
  }
  return f;
}

/* resume (OP_RESUME) and the function wrap returns (OP_WRAP) when the
 * cache does not know the thread, for a fresh fiber, or with more than
 * LUA_MINSTACK arguments: the thread at argument 1 or upvalue UV_CO. */
__attribute__((noinline)) static int xfer(lua_State *L, int op) {
  int n = lua_gettop(L) - (op == OP_RESUME);
  lua_State *co = op == OP_WRAP ? lua_tothread(L, UV_CO) : getco(L);
  fiber *f = find(L, co, op == OP_WRAP ? UV_CO : 1);
  if (f == NULL) return plain_resume(L, op, co, n);
  if (f == FRESH_REC) {
    if ((f = start_v(L, op, co, n)) == NULL) return 2;
    return go(L, op, f, n + 1); /* the body and its arguments */
  }
  if (f->state != F_SUSPENDED) return refuse(L, op, co, f);
  if (n > LUA_MINSTACK && !lua_checkstack(co, n))
    return too_many(L, op, co, "arguments");
  return direct(L, op, co, f, n);
}
#else
/* resume (OP_RESUME) and the function wrap returns (OP_WRAP): the thread
 * at argument 1 or upvalue UV_CO, resumed with the arguments after it.
 * spawn (OP_SPAWN): fresh fiber co, its n arguments on top of L.  Returns
 * what the Lua function returns.
 *
 * Stack space: when Lua calls a C function it guarantees LUA_MINSTACK free
 * slots above the arguments.  A suspended fiber sits in yield's frame and
 * the resumer sits in resume's, whose arguments have left, so counts up to
 * LUA_MINSTACK need no lua_checkstack. */
__attribute__((noinline)) static int xfer_op(lua_State *L, int op, lua_State *co,
                                             fiber *f, int n) {
  fiber first; /* the record of a fiber's first run, until it first yields */
  void *out = NULL;
  if (LIKELY(op != OP_SPAWN)) {
    int fresh;
    n = lua_gettop(L) - (op == OP_RESUME);
    co = op == OP_WRAP ? lua_tothread(L, UV_CO) : getco(L);
    f = lookup(L, co, op == OP_WRAP ? UV_CO : 1, &fresh);
    if (UNLIKELY(f == NULL)) {
      if (!fresh) return plain_resume(L, op, co, n);
    }
  }
  if (f == NULL) {
    int status;
    f = &first;
    status = start(L, op, co, &f, n);
    if (status != LUA_OK) return resume_failed(L, op, co, status, 0);
    n++; /* the body */
  } else if (UNLIKELY(f->state != F_SUSPENDED)) {
    return refuse(L, op, co, f);
  } else if (n > 0) {
    if (n > LUA_MINSTACK && !lua_checkstack(co, n))
      return too_many(L, op, co, "arguments");
    lua_xmove(L, co, n);
  }
  f->state = F_ACTIVE;
  f->outer = running;
  running = f;
  fsw_transfer(f->fsw, (void *)(intptr_t)n, &out);
  running = f->outer;
  n = PACK_N(out);
  /* Only f, L and op live across the switch: the rest is read again. */
  if (UNLIKELY(PACK_ST(out) != ST_YIELD || !f->armed || n >= LUA_MINSTACK))
    return finish(L, op, f, out);
  f->state = F_SUSPENDED;
  if (LIKELY(op != OP_WRAP)) lua_pushboolean(L, 1);
  if (n > 0) lua_xmove(f->co, L, n);
  return n + (op != OP_WRAP);
}
#define xfer(L, op) xfer_op((L), (op), NULL, NULL, 0)
#endif

static int l_resume(lua_State *L) {
#if FS_DIRECT
  lua_State *co = lua_tothread(L, 1);
  fiber *f;
  int n;
  if (LIKELY(co != NULL && (f = cached(L, co)) != NULL &&
             f->state == F_SUSPENDED &&
             (n = lua_gettop(L) - 1) <= LUA_MINSTACK))
    return direct(L, OP_RESUME, co, f, n);
#endif
  return xfer(L, OP_RESUME);
}

/* Refused yield: in a finalizer. */
__attribute__((noinline, cold)) static int gc_yield(lua_State *L) {
  return luaL_error(L, "attempt to yield from inside a __gc metamethod "
                       "(it would leave the collector stopped)");
}

static int l_yield(lua_State *L) {
  fiber *f = running;
  int n;
  if (f == NULL || f->co != L) { /* not a fiber: Lua's own rules */
#if FS_LUAJIT /* its coroutine.yield puts the caller's position first */
    if (!lua_isyieldable(L))
      return luaL_error(L, "attempt to yield across C-call boundary");
#endif
    return lua_yield(L, lua_gettop(L));
  }
  n = lua_gettop(L);
  /* Not inside a finalizer on this fiber's stack: the collector would stay
   * stopped (plain coroutines refuse it too).  Every yield asks (lua_gc).
   * Session 3 skipped that for a yield called from the body's own frame,
   * which was unsound on Lua 5.4: a finalizer that is yield itself, and a
   * failed finalizer's pending __close handlers, run with the frame that
   * started the collection, the body's, as their caller. */
  if (UNLIKELY(fs_gc_refuses(L))) return gc_yield(L);
#if FS_DIRECT
  running = f->outer; /* the resumer's part, done here */
  if (LIKELY(n < LUA_MINSTACK && f->armed)) {
    lua_State *R = f->L;
    int op = f->op;
    f->state = F_SUSPENDED;
    if (op != OP_WRAP) lua_pushboolean(R, 1);
    if (n > 0) lua_xmove(L, R, n);
    return fsw__vtransfer(NULL, (void *)(intptr_t)(n + (op != OP_WRAP)), NULL);
  }
  f->pending = PACK(n, ST_YIELD);
  return fsw__vtransfer(NULL, LAND(f), NULL);
#else
  {
    void *in = NULL;
    fsw_transfer(NULL, PACK(n, ST_YIELD), &in);
    return (int)(intptr_t)in;
  }
#endif
}

/* The function wrap returns. */
static int l_wrapped(lua_State *L) {
#if FS_DIRECT
  lua_State *co = lua_tothread(L, UV_CO);
  fiber *f;
  int n;
  if (LIKELY((f = cached(L, co)) != NULL && f->state == F_SUSPENDED &&
             (n = lua_gettop(L)) <= LUA_MINSTACK))
    return direct(L, OP_WRAP, co, f, n);
#endif
  return xfer(L, OP_WRAP);
}

/* ------------------------------------------------------------ the library */

/* A fresh fiber for the function at index 1 (checked by the caller, before
 * the stack size at 2, so errors name the first bad argument): pushes its
 * thread. */
static void newfiber(lua_State *L, size_t size) {
  lua_newthread(L);
  lua_pushvalue(L, -1);
  if (size == getms(L)->stacksize) /* the common case: just the body */
    lua_pushvalue(L, 1);
  else {
    lua_createtable(L, 2, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
    lua_pushinteger(L, (lua_Integer)size);
    lua_rawseti(L, -2, 2);
  }
  lua_rawset(L, UV_FIBERS);
}

static int l_create(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  newfiber(L, checksize(L, 2, getms(L)->stacksize));
  return 1;
}

static int l_wrap(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  newfiber(L, checksize(L, 2, getms(L)->stacksize));
  lua_pushvalue(L, UV_FIBERS);
  lua_pushvalue(L, UV_STATE);
  lua_pushvalue(L, -3);
  lua_pushcclosure(L, l_wrapped, 3);
  return 1;
}

/* create + resume: returns the thread, then what the resume returned.  The
 * body goes straight to the new fiber, never through `fibers`. */
static int l_spawn(lua_State *L) {
  lua_State *co;
  int n = lua_gettop(L) - 1;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  co = lua_newthread(L);
  if (!lua_checkstack(co, n + 3)) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "too many arguments to resume");
    return 3;
  }
  lua_pushcfunction(co, fiber_start);
  lua_xmove(L, co, n + 2); /* body, arguments and the thread itself */
  lua_xmove(co, L, 1);     /* cheaper than a rotate: L holds just [co] */
#if FS_DIRECT
  {
    fiber *f = start_v(L, OP_SPAWN, co, n);
    if (f == NULL) return 3;
    return go(L, OP_SPAWN, f, n + 1); /* land counts the thread */
  }
#else
  return xfer_op(L, OP_SPAWN, co, NULL, n) + 1;
#endif
}

/* The status of the thread at index 1; *f gets its armed record, *fresh
 * says whether it is a fresh fiber (its entry is then popped). */
static int auxstatus(lua_State *L, lua_State *co, fiber **f, int *fresh) {
  *f = lookup(L, co, 1, fresh);
  if (*fresh) {
    lua_pop(L, 1);
    return COS_YIELD;
  }
  if (*f == NULL) return plain_status(L, co);
  if ((*f)->state == F_SUSPENDED) return COS_YIELD;
  if ((*f)->state == F_DEAD) return COS_DEAD; /* closed, before Lua 5.4 */
  return L == co ? COS_RUN : COS_NORM;
}

static int l_status(lua_State *L) {
  lua_State *co = getco(L);
  fiber *f;
  int fresh;
  lua_pushstring(L, statname[auxstatus(L, co, &f, &fresh)]);
  return 1;
}

static int l_running(lua_State *L) {
  int ismain = lua_pushthread(L);
  lua_pushboolean(L, ismain);
  return 2;
}

/* True anywhere inside a fiber but in a finalizer on its own stack, and
 * for any fiber that is not dead; Lua's answer otherwise. */
static int l_isyieldable(lua_State *L) {
  lua_State *co;
  int yes;
  if (lua_isnone(L, 1)) {
    co = L;
    yes = running != NULL && running->co == L;
    if (yes) yes = !fs_gc_refuses(L);
    else yes = fs_isyieldable(L);
  } else {
    fiber *f;
    int fresh;
    co = getco(L);
    f = lookup(L, co, 1, &fresh);
    if (fresh) lua_pop(L, 1);
    if ((f != NULL && f->state != F_DEAD) || fresh || active(co) != NULL)
      yes = co != L || !fs_gc_refuses(L);
    else
      yes = fs_isyieldable(co);
  }
  lua_pushboolean(L, yes);
  return 1;
}

/* Close a fiber as coroutine.close closes a coroutine: its pending
 * to-be-closed variables are closed, here on the caller's stack, and its
 * machine stack goes back to the pool.  C frames on that stack are
 * abandoned, as a Lua error's longjmp would abandon them. */
static int l_close(lua_State *L) {
  lua_State *co = getco(L);
  fiber *f;
  int fresh;
  int status = auxstatus(L, co, &f, &fresh);
  if (status != COS_DEAD && status != COS_YIELD)
    return luaL_error(L, "cannot close a %s coroutine", statname[status]);
#if FS_HAS_CLOSE
  if (f != NULL || fresh) {
    forget(L, co, 1);
    if (f != NULL) release(f);
  }
  status = fs_closethread(co, L);
  if (status == LUA_OK) lua_pushboolean(L, 1);
  else {
    lua_pushboolean(L, 0);
    lua_xmove(co, L, 1);
  }
  if (f != NULL) reset_ccalls(co);
  return status == LUA_OK ? 1 : 2;
#else
  /* No lua_resetthread: a suspended fiber's thread keeps its frames, so
   * its record stays, marked dead; a plain coroutine cannot be closed. */
  if (fresh) forget(L, co, 1);
  else if (f != NULL) release(f);
  else if (status != COS_DEAD)
    return luaL_error(L, "cannot close a plain coroutine before Lua 5.4 "
                         "(close works on fibers)");
  failed_table(L);
  lua_pushvalue(L, 1);
  lua_rawget(L, -2);
  if (lua_isnil(L, -1)) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushvalue(L, 1); /* it failed: false, err this once */
  lua_pushnil(L);
  lua_rawset(L, -4);
  if (lua_touserdata(L, -1) == (void *)&nilerror) {
    lua_pop(L, 1);
    lua_pushnil(L);
  }
  lua_pushboolean(L, 0);
  lua_insert(L, -2);
  return 2;
#endif
}

/* Any fiber that is not dead: fresh, active or suspended. */
static int l_isfiber(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  int yes = 0;
  if (co != NULL) {
    int fresh;
    fiber *f = lookup(L, co, 1, &fresh);
    if (fresh) lua_pop(L, 1);
    yes = f != NULL || fresh || active(co) != NULL;
  }
  lua_pushboolean(L, yes);
  return 1;
}

/* stacksize([n]): the default stack size, and a new one.  Fresh fibers
 * created with the old default keep it. */
static int l_stacksize(lua_State *L) {
  mstate *ms = getms(L);
  size_t old = ms->stacksize;
  if (!lua_isnone(L, 1)) {
    size_t n = checksize(L, 1, old);
    if (n != old) { /* pin the old size on fresh fibers that relied on it */
      lua_pushnil(L);
      while (lua_next(L, UV_FIBERS)) {
        if (lua_type(L, -1) == LUA_TFUNCTION) {
          lua_createtable(L, 2, 0);
          lua_insert(L, -2);
          lua_rawseti(L, -2, 1);
          lua_pushinteger(L, (lua_Integer)old);
          lua_rawseti(L, -2, 2);
          lua_pushvalue(L, -2);
          lua_insert(L, -2);
          lua_rawset(L, UV_FIBERS); /* an existing key: next stays valid */
        } else
          lua_pop(L, 1);
      }
    }
    ms->stacksize = n;
  }
  lua_pushinteger(L, (lua_Integer)old);
  return 1;
}

/* info(co): what is known of thread co's fiber.  Any thread is accepted:
 * plain coroutines and dead fibers report fiber = false and sizes of 0. */
static int l_info(lua_State *L) {
  lua_State *co = getco(L);
  int fresh, status;
  fiber *f = lookup(L, co, 1, &fresh);
  size_t size = 0, used = 0;
  if (f == NULL && !fresh) f = active(co);
  if (fresh) { /* its entry is on top: body or {body, stacksize} */
    size = getms(L)->stacksize;
    if (lua_type(L, -1) == LUA_TTABLE) {
      lua_rawgeti(L, -1, 2);
      size = (size_t)lua_tointeger(L, -1);
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    status = COS_YIELD;
  } else if (f != NULL) {
    size = f->stacksize;
    used = f->fsw ? fsw_stack_used(f->fsw) : 0;
    status = f->state == F_SUSPENDED ? COS_YIELD : L == co ? COS_RUN : COS_NORM;
  } else
    status = plain_status(L, co);
  lua_createtable(L, 0, 4);
  lua_pushboolean(L, f != NULL || fresh);
  lua_setfield(L, -2, "fiber");
  lua_pushinteger(L, (lua_Integer)size);
  lua_setfield(L, -2, "stacksize");
  lua_pushinteger(L, (lua_Integer)used);
  lua_setfield(L, -2, "stackused");
  lua_pushstring(L, statname[status]);
  lua_setfield(L, -2, "status");
  return 1;
}

static int l_stats(lua_State *L) {
  mstate *ms = getms(L);
  lua_createtable(L, 0, 5);
  lua_pushinteger(L, (lua_Integer)ms->live);
  lua_setfield(L, -2, "fibers");
  lua_pushinteger(L, (lua_Integer)fsw_pool_count());
  lua_setfield(L, -2, "pooled");
  lua_pushinteger(L, (lua_Integer)ms->stacksize);
  lua_setfield(L, -2, "stacksize");
  lua_pushstring(L, fsw_backend());
  lua_setfield(L, -2, "backend");
  lua_pushstring(L, fsw_guard_kind());
  lua_setfield(L, -2, "guard");
  return 1;
}

/* catchoverflow([on]): opt in (default) or out of the stack-overflow
 * report (fsw_catch_overflow); returns whether it was on. */
static int l_catchoverflow(lua_State *L) {
  int on = lua_isnone(L, 1) ? 1 : lua_toboolean(L, 1);
  lua_pushboolean(L, fsw_catch_overflow(on));
  return 1;
}

/* An armed record's finalizer: frees the machine stack of a fiber abandoned
 * while suspended.  Its thread is still alive (the record holds it), but it
 * is garbage, so nothing here touches it.  A second call finds nothing. */
static int record_gc(lua_State *L) {
  fiber *f = (fiber *)lua_touserdata(L, 1);
  fiber **slot = &f->ms->cache[CACHE_SLOT(f->co)];
  if (*slot == f) *slot = NULL;
  release(f);
  return 0;
}

static const luaL_Reg funcs[] = {
    {"create", l_create},       {"resume", l_resume},
    {"yield", l_yield},         {"status", l_status},
    {"running", l_running},     {"isyieldable", l_isyieldable},
    {"wrap", l_wrap},           {"close", l_close},
    {"spawn", l_spawn},         {"isfiber", l_isfiber},
    {"stacksize", l_stacksize}, {"info", l_info},
    {"stats", l_stats},         {"catchoverflow", l_catchoverflow},
    {NULL, NULL}};

/* This copy of the module's code.  A Lua state's fibers belong to one copy:
 * its records' finalizer, its stack pools and its `running` go together. */
static const char copy_tag;

/* The per-state values every function shares, created on first require:
 * pushes `fibers` and the module state.  A second copy of the module
 * (another file, or one linked into the host) would take over the first
 * one's state and hand its stacks to the wrong pool: it is refused. */
static void openstate(lua_State *L) {
  int owner = fs_getfield(L, LUA_REGISTRYINDEX, REG_COPY);
  int state = fs_getfield(L, LUA_REGISTRYINDEX, REG_STATE);
  /* Another copy's tag (even if its open failed halfway), or a state made
   * by a copy from before tags: not ours. */
  if ((owner != LUA_TNIL || state != LUA_TNIL) &&
      lua_touserdata(L, -2) != (void *)&copy_tag)
    luaL_error(L, "fiberswap: another copy of the module is already open in "
                  "this Lua state (loaded from another file, or linked into "
                  "the host program); a state can use only one");
  lua_pop(L, 2);
  if (owner == LUA_TNIL) {
    lua_pushlightuserdata(L, (void *)&copy_tag);
    lua_setfield(L, LUA_REGISTRYINDEX, REG_COPY);
  }
  if (luaL_newmetatable(L, REG_RECORD)) {
    lua_pushcfunction(L, record_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  weak_table(L, REG_FIBERS);
  if (fs_getfield(L, LUA_REGISTRYINDEX, REG_STATE) != LUA_TUSERDATA) {
    mstate *ms;
    lua_pop(L, 1);
    ms = (mstate *)fs_newuserdata(L, sizeof(mstate), 0);
    memset(ms, 0, sizeof *ms);
    ms->stacksize = FS_DEFAULT_STACK;
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, state_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, REG_STATE);
    enter_sole(ms);
  }
  /* The functions hold it as a light userdata (the registry anchors it),
   * which lua_touserdata returns a little faster. */
  lua_pushlightuserdata(L, lua_touserdata(L, -1));
  lua_replace(L, -2);
}

LUAMOD_API int luaopen_fiberswap(lua_State *L);

LUAMOD_API int luaopen_fiberswap(lua_State *L) {
  luaL_checkversion(L);
  lua_createtable(L, 0, (int)(sizeof funcs / sizeof funcs[0]));
  openstate(L); /* [lib, fibers, state] */
  luaL_setfuncs(L, funcs, 2);
  lua_pushliteral(L, FSW_VERSION);
  lua_setfield(L, -2, "_VERSION");
  return 1;
}
