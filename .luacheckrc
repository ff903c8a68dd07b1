-- .luacheckrc: luacheck settings for fiberswap's Lua files.
-- `luacheck .` from the repository root, or `sh tests/lint.sh`, checks
-- tests/lua/*.lua, scripts/*.lua and types/*.lua with them.
--
-- Everything else is luacheck's default on purpose: unused variables,
-- values and arguments, shadowing, and reads or writes of undefined globals
-- are all reported.  Two idioms of the specs need no setting:
--   * a to-be-closed variable that is never read is named `_`
--     (`local _ <close> = closer(log, "a")`): luacheck 1.1 does not count
--     the implicit close as a use, and `_` is its "unused on purpose" name;
--   * running one scenario with the built-in library and with fiberswap
--     (`local builtin = coroutine`, `lib.resume`, and a local `coroutine`
--     that shadows the global in spec_docs.lua's copy of the README's
--     opening example) is only reads of the standard global and ordinary
--     locals, so `coroutine` is neither redefined nor ignored here.
-- The few intentional patterns left (a vararg that only holds values on
-- the stack, a table filled to make garbage or to keep fibers reachable,
-- lines run only so that a hook could see them) carry an inline
-- `-- luacheck: ignore NNN` on the very line, next to the comment that says
-- why, rather than a setting here that would cover a whole file.

-- Lua 5.4: the specs use `<close>`, `warn` and `coroutine.close`, and the
-- module is built for lua5.4 (the Makefile's LUA).
std = "lua54"

-- luacheck's default limit, written down so that it is a decision.
max_line_length = 120

-- Build output: compiled modules and test binaries, no Lua sources of ours.
exclude_files = {"build/**"}

-- LuaLS definition files are stubs: every function has an empty body, and
-- its parameters exist only to carry the `---@param` annotations, so they
-- are never used.  Unused arguments only; every other warning still holds.
files["types/**/*.lua"] = {
  unused_args = false,
}
