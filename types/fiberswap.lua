---@meta fiberswap
-- LuaLS (lua-language-server) definitions for the fiberswap Lua module,
-- binding/fiberswap.c, as README.md ("The Lua module") documents it.  Stubs
-- only: nothing here runs.  Add this folder to `workspace.library` (or
-- `Lua.workspace.library`) to get completion and checks for `require "fiberswap"`.

---A coroutine's status, as `status(co)` and `info(co).status` report it.
---@alias fiberswap.status
---| "suspended" # fresh, or suspended in a yield
---| "running"   # the thread that asks
---| "normal"    # active but not running: it resumed another
---| "dead"      # returned, failed or closed

---The context switch the module was built with (`BACKEND=asm|ucontext`).
---@alias fiberswap.backend
---| "x86_64-sysv" # the x86-64 "ret trick" switch
---| "ucontext"    # glibc swapcontext

---How fiber stacks' guard pages are installed.
---@alias fiberswap.guard
---| "madvise"  # MADV_GUARD_INSTALL (Linux 6.13 and later): no extra mapping
---| "mprotect" # PROT_NONE: two mappings per stack

---A fiber's body: a Lua or C function; it may call `fiberswap.yield` at any depth.
---@alias fiberswap.body async fun(...): ...

---The function `wrap` returns: it resumes the fiber with its arguments and returns what it yields.
---@alias fiberswap.wrapped fun(...): ...

---What `info(co)` returns.  Plain coroutines and dead fibers report
---`fiber = false` and sizes of 0.
---@class fiberswap.info
---@field fiber boolean true for a fiber that is not dead
---@field stacksize integer the fiber's usable stack, in bytes
---@field stackused integer the stack's high-water mark, in bytes
---@field status fiberswap.status as `status(co)` says

---What `stats()` returns.
---@class fiberswap.stats
---@field fibers integer fibers of this Lua state that hold a machine stack (started and not dead)
---@field pooled integer released stacks this OS thread keeps for reuse
---@field stacksize integer the default stack size, in bytes
---@field backend fiberswap.backend the context switch in use
---@field guard fiberswap.guard how guard pages are installed

---A drop-in for the `coroutine` library whose coroutines are fibers, each on
---a machine stack of its own.  Every function also accepts plain coroutines.
---@class fiberswaplib
local fiberswap = {}

---The module's version.
---@type string
fiberswap._VERSION = "0.1.0"

---Returns a new suspended fiber (a thread) that will run `f`, a Lua or C function.
---@param f fiberswap.body
---@param stacksize? integer in bytes, 16384 to 1073741824, rounded up to pages; the default is `stacksize()`
---@return thread co
---@nodiscard
---@overload fun(f: fiberswap.body): thread
function fiberswap.create(f, stacksize) end

---Creates a fiber with the default stack size and resumes it at once with `...`.
---@param f fiberswap.body
---@param ... any passed to `f`
---@return thread co the new fiber
---@return boolean ok what that resume returned: `true, ...` or `false, err`
---@return any ... the values yielded or returned, or the error
function fiberswap.spawn(f, ...) end

---Runs `co` until it yields or returns.
---@param co thread
---@param ... any passed to the body (first resume) or returned by its `yield`
---@return boolean ok false if the body failed or `co` could not be resumed
---@return any ... the values yielded or returned, or the error message
function fiberswap.resume(co, ...) end

---Suspends the running fiber from any depth, C frames included, and returns what the next resume passes.
---@async
---@param ... any returned by the `resume` that resumed this fiber
---@return any ... what the next `resume` passes
function fiberswap.yield(...) end

---Returns `"suspended"`, `"running"`, `"normal"` or `"dead"`.
---@param co thread
---@return fiberswap.status status
---@nodiscard
function fiberswap.status(co) end

---Returns the running thread and whether it is the main one.
---@return thread running
---@return boolean ismain
---@nodiscard
function fiberswap.running() end

---True inside a fiber (C frames included) but in a finalizer on its own stack, and for any fiber not
---dead; else Lua's answer.
---@param co thread the thread to ask about; without it, the running one
---@return boolean yieldable
---@nodiscard
---@overload fun(): boolean
function fiberswap.isyieldable(co) end

---`coroutine.wrap` for fibers: its function resumes the fiber, returns what it yields, raises its errors.
---@param f fiberswap.body
---@param stacksize? integer in bytes, 16384 to 1073741824, rounded up to pages; the default is `stacksize()`
---@return fiberswap.wrapped resume resumes the fiber with its arguments
---@nodiscard
---@overload fun(f: fiberswap.body): fiberswap.wrapped
function fiberswap.wrap(f, stacksize) end

---`coroutine.close`: closes the fiber's pending to-be-closed variables, gives its stack back to the pool.
---@param co thread a suspended or dead fiber or coroutine
---@return boolean ok false if a `__close` or the fiber failed
---@return any err the error, when `ok` is false
function fiberswap.close(co) end

---True for a fiber that is not dead: fresh, running, normal or suspended.
---@param v any
---@return boolean isfiber
---@nodiscard
function fiberswap.isfiber(v) end

---Returns the default stack size; given `n`, sets a new default (for new fibers) and returns the old one.
---@param n? integer the new default, in bytes, 16384 to 1073741824
---@return integer stacksize the default before this call
---@overload fun(): integer
function fiberswap.stacksize(n) end

---Returns `{fiber, stacksize, stackused, status}` for `co`; `stackused` is the stack's high-water mark.
---@param co thread
---@return fiberswap.info info
---@nodiscard
function fiberswap.info(co) end

---Returns `{fibers, pooled, stacksize, backend, guard}` for this Lua state and OS thread.
---@return fiberswap.stats stats
---@nodiscard
function fiberswap.stats() end

---Opts in (`on` defaults to true) or out of a report of fiber stack overflows; returns whether it was on.
---@param on boolean true to report, false to stop (any false value, nil included, stops it)
---@return boolean wason whether the report was on before this call
---@overload fun(): boolean
function fiberswap.catchoverflow(on) end

return fiberswap
