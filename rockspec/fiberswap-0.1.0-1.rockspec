-- fiberswap-0.1.0-1.rockspec: the Lua module fiberswap, release 0.1.0
-- (FSW_VERSION in lib/fiberswap/fiberswap.h), from its git tag.
-- It builds the sources the Makefile builds: the library and the binding.
rockspec_format = "3.0"
package = "fiberswap"
version = "0.1.0-1"

source = {
   url = "git+https://github.com/fiberswap/fiberswap.git",
   tag = "v0.1.0",
}

description = {
   summary = "True C coroutines for Lua: the coroutine library, on fibers",
   detailed = [[
A drop-in for Lua's coroutine library (same names, statuses and messages)
whose coroutines are fibers: each runs on a machine stack of its own, so it
can yield from anywhere, C frames included (table.sort comparators,
string.gsub callbacks, metamethods called from C, C library callbacks).
Built on a small C fiber library: an x86-64 ret-trick switch, guarded and
pooled stacks, and a ucontext fallback for every other architecture.
]],
   homepage = "https://github.com/fiberswap/fiberswap",
   license = "MIT",   -- Lua's; the checkout has no LICENSE file yet: confirm
   labels = { "coroutine", "fiber", "c" },
}

-- The Lua range: 5.1 to 5.4, and LuaJIT (which reports itself as 5.1).
dependencies = {
   "lua >= 5.1, < 5.5",
}

-- Built by the Makefile itself, so the rock gets exactly what `make` builds
-- (same sources, flags, and only luaopen_fiberswap exported), into
-- build/rock.  LUA=lua only names the output folder; LUA_INC comes from
-- luarocks.  The LuaLS definitions (---@meta) go into the rock's own folder,
-- <tree>/lib/luarocks/rocks-5.x/fiberswap/<version>/types, for LuaLS's
-- workspace.library: never on package.path, where they would shadow the
-- C module.
build = {
   type = "make",
   build_target = "module",
   build_variables = {
      CFLAGS = "$(CFLAGS)",
      LUA_INC = "-I$(LUA_INCDIR)",
      LUA = "lua",
      B = "build/rock",
   },
   install_pass = false,
   install = { lib = { fiberswap = "build/rock/lua/fiberswap.so" } },
   copy_directories = { "types" },
}

-- `luarocks test`, from the top of the checkout: the Lua specs (which need
-- the test-only C module the Makefile builds) against the Makefile's build,
-- then tests/install/test_rock.sh, which installs this rockspec into a
-- temporary tree and runs fibers from it.  Both name the Lua version; when
-- the range widens, `make test-lua LUA=lua5.X` and `LUAV=5.X` run the others.
test = {
   type = "command",
   command = "make test-lua LUA=lua5.4 && LUAV=5.4 sh tests/install/test_rock.sh",
}
