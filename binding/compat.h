/* compat.h: every Lua-version difference the fiberswap module needs.
 * Lua 5.1 through 5.4 and LuaJIT 2.1 are reduced here to the 5.4 API. */
#ifndef FIBERSWAP_COMPAT_H
#define FIBERSWAP_COMPAT_H

#include "lua.h"
#include "lauxlib.h"

/* Thread-local, initial-exec: one %fs-relative load even in a module.  It
 * draws on glibc's small static-TLS surplus for dlopen'd modules; the
 * ucontext backend's own thread-local state (a whole ucontext_t) is too big
 * for it, so with that backend the module keeps the default model. */
#if defined(FSW_BACKEND_UCONTEXT) || !defined(__x86_64__)
#define FS_TLS __thread
#else
#define FS_TLS __thread __attribute__((tls_model("initial-exec")))
#endif

#if LUA_VERSION_NUM >= 504
/* Native: lua_resume with a result count, two user values, argexpected. */
#define fs_resume(co, from, n, nres) lua_resume((co), (from), (n), (nres))
#define fs_newuserdata(L, sz, nuv) lua_newuserdatauv((L), (sz), (nuv))
#define fs_getuservalue(L, i, n) ((void)lua_getiuservalue((L), (i), (n)))
#define fs_setuservalue(L, i, n) ((void)lua_setiuservalue((L), (i), (n)))
#define fs_argexpected(L, c, arg, tname) luaL_argexpected((L), (c), (arg), (tname))
/* What lcorolib calls its argument in "bad argument" messages. */
#define FS_THREAD_TNAME "thread"
/* Inside a __gc finalizer 5.4 stops the collector internally, and every
 * lua_gc option then answers -1. */
#define fs_in_finalizer(L) (lua_gc((L), LUA_GCISRUNNING, 0) < 0)
#if LUA_VERSION_RELEASE_NUM >= 50406
#define fs_closethread(co, L) lua_closethread((co), (L))
#else
#define fs_closethread(co, L) ((void)(L), lua_resetthread(co))
#endif
/* Default fiber stack: Lua lets C frames nest 200 deep, and at that limit
 * nested string.gsub needed 418 KiB here (5.4's string buffers are 1 KiB). */
#define FS_DEFAULT_STACK ((size_t)512 * 1024)
#else
#error "fiberswap: this Lua version is not supported yet (see binding/compat.h)"
#endif

#endif
