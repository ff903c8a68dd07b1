/* fiberswap_test.c: a test-only Lua module of C frames for fibers to cross.
 * Every function here calls Lua back with plain lua_call (no continuation),
 * so a yield inside can only succeed by switching machine stacks.  Builds
 * for Lua 5.1 to 5.4 and LuaJIT 2.1: compat.h (binding/) supplies what 5.1
 * lacks of the 5.2 auxiliary API, and the few lines below the rest. */
#define _GNU_SOURCE /* qsort_r */
#include <limits.h>
#include <stdlib.h>

#include "compat.h"

/* The length without metamethods: lua_objlen before 5.2 (LuaJIT too). */
#if LUA_VERSION_NUM < 502
#define lua_rawlen(L, i) lua_objlen((L), (i))
#endif

/* lua_tointegerx with 5.3's meaning on every version: the value as an
 * integer, and whether it is a number with an integral value.  Before 5.3
 * (and on LuaJIT) numbers are doubles, and lua_tointegerx, where it exists,
 * accepts any number. */
static lua_Integer tointegerx(lua_State *L, int idx, int *isint) {
#if LUA_VERSION_NUM >= 503
  return lua_tointegerx(L, idx, isint);
#else
  /* Within +-2^53 every double converts exactly and no cast overflows. */
  const lua_Number limit = 9007199254740992.0;
  lua_Number n = lua_tonumber(L, idx);
  *isint = lua_isnumber(L, idx) && n >= -limit && n <= limit &&
           (lua_Number)(lua_Integer)n == n;
  return *isint ? (lua_Integer)n : 0;
#endif
}

/* Every function gets one upvalue: fiberswap.yield, fetched at luaopen. */
#define UV_YIELD lua_upvalueindex(1)

#define PAD 64 /* bytes of locals in each recurse frame */

/* One level of recurse: a frame with PAD volatile bytes, written before the
 * inner call and checked after it, so that no frame is elided or merged and
 * a corrupted frame is noticed.  At the bottom calls the function at index
 * 2, if any, leaving its results on the stack.  Returns the levels walked. */
static lua_Integer down(lua_State *L, lua_Integer depth) {
  volatile unsigned char pad[PAD];
  lua_Integer levels = 0;
  int i;
  for (i = 0; i < PAD; i++) pad[i] = (unsigned char)(depth + i);
  if (depth > 1)
    levels = down(L, depth - 1);
  else if (lua_isfunction(L, 2)) {
    lua_pushvalue(L, 2);
    lua_call(L, 0, LUA_MULTRET);
  }
  for (i = 0; i < PAD; i++)
    if (pad[i] != (unsigned char)(depth + i))
      luaL_error(L, "recurse: frame at depth %d was overwritten", (int)depth);
  return levels + 1;
}

/* recurse(depth [, fn]): recurse in C `depth` levels deep, call fn() at the
 * bottom, and return the levels walked followed by fn's results.  With a
 * huge depth it runs off the end of any stack. */
static int recurse(lua_State *L) {
  lua_Integer depth = luaL_checkinteger(L, 1);
  luaL_argcheck(L, depth >= 1, 1, "depth must be at least 1");
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  lua_pushinteger(L, down(L, depth));
  lua_insert(L, 3); /* before fn's results */
  return lua_gettop(L) - 2;
}

/* produce(n, cb): call cb(i) for i = 1..n from a C loop and return the sum
 * of its results, which must be integers.  The loop counter and the sum
 * live in this C frame across every yield cb makes. */
static int produce(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1), i, sum = 0;
  luaL_checktype(L, 2, LUA_TFUNCTION);
  for (i = 1; i <= n; i++) {
    int isint;
    lua_Integer v;
    lua_pushvalue(L, 2);
    lua_pushinteger(L, i);
    lua_call(L, 1, 1);
    v = tointegerx(L, -1, &isint);
    if (!isint)
      return luaL_error(L, "produce: callback returned %s for %d, not an "
                           "integer", luaL_typename(L, -1), (int)i);
    sum += v;
    lua_pop(L, 1);
  }
  lua_pushinteger(L, sum);
  return 1;
}

/* What the qsort comparator needs.  It lives in the C frame of its own
 * qsort call and reaches the comparator through qsort_r's argument, so
 * sorts suspended at once in different fibers never see each other's. */
typedef struct sortctx {
  lua_State *L; /* the state that called qsort */
  int cmp;      /* stack index of the Lua comparator in L */
} sortctx;

/* Call the Lua comparator on two ints: whether it says a < b. */
static int lessthan(sortctx *c, int a, int b) {
  int lt;
  lua_pushvalue(c->L, c->cmp);
  lua_pushinteger(c->L, a);
  lua_pushinteger(c->L, b);
  lua_call(c->L, 2, 1);
  lt = lua_toboolean(c->L, -1);
  lua_pop(c->L, 1);
  return lt;
}

/* qsort_r's three-way comparator from the Lua "less than": cmp(a, b), and
 * cmp(b, a) only when the first says no. */
static int compare(const void *pa, const void *pb, void *ud) {
  sortctx *c = (sortctx *)ud;
  int a = *(const int *)pa, b = *(const int *)pb;
  if (lessthan(c, a, b)) return -1;
  return lessthan(c, b, a) ? 1 : 0;
}

/* qsort(t, cmp): sort the integers t[1..#t] (raw, each fitting a C int)
 * with libc's qsort_r, cmp(a, b) saying whether a < b; write them back and
 * return t.  The C copy is a userdata, so an error in cmp leaks nothing of
 * ours. */
static int l_qsort(lua_State *L) {
  sortctx ctx;
  lua_Integer n, i;
  int *v;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  n = (lua_Integer)lua_rawlen(L, 1);
  v = (int *)lua_newuserdata(L, (size_t)n * sizeof(int));
  for (i = 0; i < n; i++) {
    int isint;
    lua_Integer x;
    lua_rawgeti(L, 1, i + 1);
    x = tointegerx(L, -1, &isint);
    if (!isint || x < INT_MIN || x > INT_MAX)
      return luaL_error(L, "qsort: element %d is not a C int", (int)(i + 1));
    v[i] = (int)x;
    lua_pop(L, 1);
  }
  ctx.L = L;
  ctx.cmp = 2;
  qsort_r(v, (size_t)n, sizeof(int), compare, &ctx);
  for (i = 0; i < n; i++) {
    lua_pushinteger(L, v[i]);
    lua_rawseti(L, 1, i + 1);
  }
  lua_pushvalue(L, 1);
  return 1;
}

/* cyield(...): fiberswap.yield(...) called from C with lua_call; returns
 * what the yield returned, i.e. the values of the next resume. */
static int cyield(lua_State *L) {
  lua_pushvalue(L, UV_YIELD);
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
}

/* cbody(...): a fiber body written in C.  Yields the sum of its integer
 * arguments (through a lua_call of fiberswap.yield), then returns
 * "cbody done" followed by the values it was resumed with. */
static int cbody(lua_State *L) {
  lua_Integer sum = 0;
  int i, n = lua_gettop(L);
  for (i = 1; i <= n; i++) sum += luaL_checkinteger(L, i);
  lua_settop(L, 0);
  lua_pushliteral(L, "cbody done");
  lua_pushvalue(L, UV_YIELD);
  lua_pushinteger(L, sum);
  lua_call(L, 1, LUA_MULTRET);
  return lua_gettop(L);
}

/* cpcall(fn, ...): fn(...) under a lua_pcall made from C without a
 * continuation.  Returns true and fn's results, or false and the error
 * object, like pcall; but unlike pcall nothing inside can yield in a plain
 * coroutine. */
static int cpcall(lua_State *L) {
  int status;
  luaL_checktype(L, 1, LUA_TFUNCTION);
  status = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
  lua_pushboolean(L, status == LUA_OK);
  lua_insert(L, 1);
  return lua_gettop(L);
}

static const luaL_Reg funcs[] = {
    {"recurse", recurse}, {"produce", produce}, {"qsort", l_qsort},
    {"cyield", cyield},   {"cbody", cbody},     {"cpcall", cpcall},
    {NULL, NULL},
};

LUAMOD_API int luaopen_fiberswap_test(lua_State *L);

/* The module table; fiberswap itself is required here for its yield. */
LUAMOD_API int luaopen_fiberswap_test(lua_State *L) {
  luaL_checkversion(L);
  lua_createtable(L, 0, (int)(sizeof(funcs) / sizeof(funcs[0]) - 1));
  lua_getglobal(L, "require");
  lua_pushliteral(L, "fiberswap");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "yield");
  lua_remove(L, -2);
  luaL_setfuncs(L, funcs, 1);
  return 1;
}
