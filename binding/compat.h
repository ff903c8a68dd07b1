/* compat.h: every Lua-version difference the fiberswap module needs.
 * Lua 5.1 through 5.4 and LuaJIT 2.1 are reduced here to the 5.4 API. */
#ifndef FIBERSWAP_COMPAT_H
#define FIBERSWAP_COMPAT_H

#include <string.h>

#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"

/* LuaJIT speaks the 5.1 API with some 5.2 additions; its lualib.h names
 * its jit library. */
#ifdef LUA_JITLIBNAME
#define FS_LUAJIT 1
#else
#define FS_LUAJIT 0
#endif

/* Thread-local, initial-exec: one %fs-relative load even in a module.  It
 * draws on glibc's small static-TLS surplus for dlopen'd modules; the
 * ucontext backend's own thread-local state (a whole ucontext_t) is too big
 * for it, so with that backend the module keeps the default model. */
#if defined(FSW_BACKEND_UCONTEXT) || !defined(__x86_64__)
#define FS_TLS __thread
#else
#define FS_TLS __thread __attribute__((tls_model("initial-exec")))
#endif

#ifndef LUA_OK
#define LUA_OK 0
#endif
#ifndef LUAMOD_API
#define LUAMOD_API LUALIB_API
#endif

#if LUA_VERSION_NUM >= 504
/* ---- Lua 5.4: the reference API -------------------------------------- */
#define fs_resume(co, from, n, nres) lua_resume((co), (from), (n), (nres))
#define fs_newuserdata(L, sz, nuv) lua_newuserdatauv((L), (sz), (nuv))
#define fs_rawget(L, i) lua_rawget((L), (i))
#define fs_getfield(L, i, k) lua_getfield((L), (i), (k))
#define fs_argexpected(L, c, arg, tname) luaL_argexpected((L), (c), (arg), (tname))
#define fs_isyieldable(co) lua_isyieldable(co)
/* Inside a __gc finalizer 5.4 stops the collector internally, and every
 * lua_gc option then answers -1: some finalizer is running, in any thread. */
#define fs_in_finalizer(L) (lua_gc((L), LUA_GCISRUNNING, 0) < 0)
/* Is that finalizer on thread L itself?  Lua names a function called as a
 * finalizer metamethod "__gc" (its caller's frame is marked).  A tail call
 * erases the name of the function it replaced, so one on the stack counts
 * as a finalizer: refusing there is what every version did before.  Asked
 * only while a finalizer runs, so its cost is off the hot path; out of
 * line, so that its lua_Debug is not a local of yield, whose calls of the
 * switch must stay tail calls. */
__attribute__((noinline, unused)) static int fs_finalizer_on(lua_State *L) {
  lua_Debug ar;
  int level;
  for (level = 0; lua_getstack(L, level, &ar); level++) {
    if (!lua_getinfo(L, "nt", &ar) || ar.istailcall) return 1;
    if (ar.namewhat != NULL && strcmp(ar.namewhat, "metamethod") == 0 &&
        ar.name != NULL && strcmp(ar.name, "__gc") == 0)
      return 1;
    /* A finalizer started inside a hook is named "hook", like the hook. */
    if (ar.namewhat != NULL && strcmp(ar.namewhat, "hook") == 0) return 1;
  }
  return 0;
}
/* May a fiber running on L not yield, for a finalizer on its own stack?  A
 * fiber resumed by a finalizer elsewhere may yield, as a plain coroutine
 * may. */
#define fs_gc_refuses(L) (fs_in_finalizer(L) && fs_finalizer_on(L))
#if LUA_VERSION_RELEASE_NUM >= 50406
#define fs_closethread(co, L) lua_closethread((co), (L))
#else
#define fs_closethread(co, L) ((void)(L), lua_resetthread(co))
#endif
#define FS_HAS_CLOSE 1 /* threads can be reset: close makes them dead */
/* Default fiber stack: Lua lets C frames nest 200 deep, and at that limit
 * nested string.gsub needed 418 KiB here (5.4's string buffers are 1 KiB). */
#define FS_DEFAULT_STACK ((size_t)512 * 1024)
#define FS_THREAD_TNAME "thread"

#else
/* ---- Lua 5.1, 5.2, 5.3 and LuaJIT 2.1 --------------------------------- */
#define FS_HAS_CLOSE 0 /* no lua_resetthread: a closed fiber is marked dead */
#if FS_LUAJIT
/* LuaJIT has no limit on nested C calls: its own "stack overflow" (65,500
 * Lua stack slots) is what stops string.format("%s") recursing through
 * __tostring, at 16,369 levels that take 3.75 MiB of C stack (measured). */
#define FS_DEFAULT_STACK ((size_t)4 * 1024 * 1024)
#else
/* Their string buffers are 8 KiB, so 200 nested C levels need about 1.8 MiB
 * (measured with nested string.gsub on 5.2 and 5.3). */
#define FS_DEFAULT_STACK ((size_t)2 * 1024 * 1024)
#endif

/* lua_resume leaves every result on the thread's stack before 5.4. */
static inline int fs_resume(lua_State *co, lua_State *from, int n, int *nres) {
#if LUA_VERSION_NUM >= 502
  int status = lua_resume(co, from, n);
#else
  int status = lua_resume(co, n);
  (void)from;
#endif
  *nres = lua_gettop(co);
  return status;
}

#define fs_newuserdata(L, sz, nuv) ((void)(nuv), lua_newuserdata((L), (sz)))
#if LUA_VERSION_NUM >= 503
#define fs_rawget(L, i) lua_rawget((L), (i))
#define fs_getfield(L, i, k) lua_getfield((L), (i), (k))
#define FS_THREAD_TNAME "thread"
#else
#define fs_rawget(L, i) (lua_rawget((L), (i)), lua_type((L), -1))
#define fs_getfield(L, i, k) (lua_getfield((L), (i), (k)), lua_type((L), -1))
#define FS_THREAD_TNAME "coroutine"
#endif
#define fs_argexpected(L, c, arg, tname) \
  luaL_argcheck((L), (c), (arg), tname " expected")

#if LUA_VERSION_NUM < 502 && !FS_LUAJIT
/* Lua 5.1 lacks these 5.2 auxiliary functions (LuaJIT has them). */
static inline void luaL_setfuncs(lua_State *L, const luaL_Reg *l, int nup) {
  for (; l->name != NULL; l++) {
    int i;
    for (i = 0; i < nup; i++) lua_pushvalue(L, -nup);
    lua_pushcclosure(L, l->func, nup);
    lua_setfield(L, -(nup + 2), l->name);
  }
  lua_pop(L, nup);
}
static inline void luaL_setmetatable(lua_State *L, const char *tname) {
  luaL_getmetatable(L, tname);
  lua_setmetatable(L, -2);
}
#endif
#if LUA_VERSION_NUM < 502
#define luaL_checkversion(L) ((void)(L))
#endif

/* Before 5.3 (and on LuaJIT) a thread cannot say whether it may yield:
 * any thread but the main one is taken to be able to. */
#if LUA_VERSION_NUM >= 503 || FS_LUAJIT
#define fs_isyieldable(co) lua_isyieldable(co)
#else
static inline int fs_isyieldable(lua_State *co) {
  int ismain = lua_pushthread(co);
  lua_pop(co, 1);
  return !ismain;
}
#endif

/* Inside a __gc finalizer Lua stops the collector and turns hooks off for
 * the thread.  The collector may also be stopped by the user, so when it is
 * stopped a call hook decides: it does not fire while a finalizer runs
 * (nor while a hook runs, where a yield is refused too).  Lua 5.1 cannot
 * tell whether its collector runs, so there the check is not made (see the
 * README). */
static FS_TLS int fs_hook_fired;
static inline void fs_probe_hook(lua_State *L, lua_Debug *ar) {
  (void)L;
  (void)ar;
  fs_hook_fired = 1;
}
static inline int fs_probe_noop(lua_State *L) {
  (void)L;
  return 0;
}
static inline int fs_in_finalizer(lua_State *L) {
#ifndef LUA_GCISRUNNING /* Lua 5.1 (LuaJIT has it) */
  (void)L;
  return 0;
#else
  lua_Hook hook;
  int mask, count;
  if (lua_gc(L, LUA_GCISRUNNING, 0)) return 0;
  hook = lua_gethook(L);
  mask = lua_gethookmask(L);
  count = lua_gethookcount(L);
  fs_hook_fired = 0;
  lua_sethook(L, fs_probe_hook, LUA_MASKCALL, 0);
  lua_pushcfunction(L, fs_probe_noop);
  lua_call(L, 0, 0);
  lua_sethook(L, hook, mask, count);
  return !fs_hook_fired;
#endif
}
/* Before 5.4 a finalizer's frame is not named: a yield is refused while
 * any finalizer runs, on whichever thread (see the README). */
#define fs_finalizer_on(L) ((void)(L), 1)
#define fs_gc_refuses(L) fs_in_finalizer(L)

/* Nothing to close before 5.4: no to-be-closed variables, no reset. */
static inline int fs_closethread(lua_State *co, lua_State *L) {
  (void)co;
  (void)L;
  return LUA_OK;
}
#endif

/* How this version's coroutine library refuses to resume a coroutine that
 * is running (the caller itself) or normal. */
#if LUA_VERSION_NUM >= 502
#define FS_MSG_RUNNING "cannot resume non-suspended coroutine"
#define FS_MSG_NORMAL "cannot resume non-suspended coroutine"
#elif FS_LUAJIT
#define FS_MSG_RUNNING "cannot resume running coroutine"
#define FS_MSG_NORMAL "cannot resume running coroutine"
#else
#define FS_MSG_RUNNING "cannot resume running coroutine"
#define FS_MSG_NORMAL "cannot resume normal coroutine"
#endif

/* 5.2 and 5.3 call a coroutine whose current frame is empty dead before
 * lua_resume can call it non-suspended (lcorolib's auxresume). */
#if LUA_VERSION_NUM == 502 || LUA_VERSION_NUM == 503
#define fs_refusal(co, msg) \
  (lua_status(co) == LUA_OK && lua_gettop(co) == 0 ? "cannot resume dead coroutine" : (msg))
#else
#define fs_refusal(co, msg) (msg)
#endif
/* Lua 5.1 raises "too many arguments/results to resume"; later versions
 * and LuaJIT's C API path return it as `false, msg`. */
#define FS_TOOMANY_RAISES (LUA_VERSION_NUM < 502 && !FS_LUAJIT)

/* Whether wrap puts the position in front of an error: 5.4 does for
 * strings but not memory errors, 5.3 for strings, 5.1 and 5.2 for anything
 * lua_isstring accepts (numbers too). */
#if LUA_VERSION_NUM >= 504
#define fs_wrap_prefixes(L, status) \
  ((status) != LUA_ERRMEM && lua_type((L), -1) == LUA_TSTRING)
#elif LUA_VERSION_NUM == 503
#define fs_wrap_prefixes(L, status) ((void)(status), lua_type((L), -1) == LUA_TSTRING)
#else
#define fs_wrap_prefixes(L, status) ((void)(status), lua_isstring((L), -1))
#endif

/* Whether an armed record may hold its thread and sit in the cache: that
 * needs ephemeron tables (5.2 on), or the record->thread reference would
 * keep every suspended fiber alive through the weak-keyed table. */
#if LUA_VERSION_NUM >= 502 && !FS_LUAJIT
#define FS_CACHE 1
#else
#define FS_CACHE 0
#endif

/* Store the value on top as the single user value of the userdata at idx
 * (5.2 and 5.1 take only tables there: the value goes in one). */
static inline void fs_setuservalue(lua_State *L, int idx) {
#if LUA_VERSION_NUM >= 504
  lua_setiuservalue(L, idx, 1);
#elif LUA_VERSION_NUM >= 503
  lua_setuservalue(L, idx);
#else
  if (idx < 0 && idx > LUA_REGISTRYINDEX) idx = lua_gettop(L) + idx + 1;
  lua_createtable(L, 1, 0);
  lua_insert(L, -2);
  lua_rawseti(L, -2, 1);
#if LUA_VERSION_NUM == 502
  lua_setuservalue(L, idx);
#else
  lua_setfenv(L, idx);
#endif
#endif
}

#endif
