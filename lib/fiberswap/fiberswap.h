/* fiberswap.h: the whole public C API of the fiberswap fiber library.
 * A fiber is a function running on its own guarded machine stack that can
 * yield from any call depth; semantics are asymmetric, like Lua coroutines. */
#ifndef FIBERSWAP_H
#define FIBERSWAP_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FSW_VERSION "0.1.0"

/* Stack sizes, in bytes, of usable stack (the guard page comes on top).
 * Sizes are rounded up to whole pages.  Stacks are mapped MAP_NORESERVE, so
 * a size costs address space; only the pages a fiber touches cost memory.
 * The default leaves room for glibc's deepest everyday calls (resolver,
 * iconv, stdio), which use tens of KiB.  A fiber that runs a Lua
 * interpreter needs more: see the Lua module's own default. */
#define FSW_STACK_DEFAULT ((size_t)256 * 1024)
#define FSW_STACK_MIN     ((size_t)16 * 1024)
#define FSW_STACK_MAX     ((size_t)1024 * 1024 * 1024)

/* Every failure has its own code; 0 is success.  fsw_strerror names each. */
typedef enum fsw_err {
  FSW_OK = 0,
  FSW_EINVAL,       /* a NULL fiber or entry function was passed */
  FSW_ESTACKZERO,   /* stack size 0 (use FSW_STACK_DEFAULT) */
  FSW_ESTACKSMALL,  /* stack size below FSW_STACK_MIN */
  FSW_ESTACKLARGE,  /* stack size above FSW_STACK_MAX */
  FSW_ENOMEM,       /* mmap of a stack failed (errno says why) */
  FSW_EMAPLIMIT,    /* vm.max_map_count reached: too many guarded stacks */
  FSW_EGUARD,       /* the guard page could not be installed (errno says why) */
  FSW_ERUNNING,     /* resume of the running fiber */
  FSW_ENORMAL,      /* resume of a fiber that is itself resuming another */
  FSW_EDEAD,        /* resume of a fiber whose entry function has returned */
  FSW_EOUTSIDE,     /* yield while not inside any fiber */
  FSW_EBUSY,        /* destroy of a running or normal fiber */
  FSW_ERR_COUNT     /* number of codes; not an error */
} fsw_err;

/* Lifecycle of a fiber, as Lua's coroutine.status words it. */
typedef enum fsw_status {
  FSW_SUSPENDED = 0, /* created and not started, or yielded */
  FSW_RUNNING,       /* the fiber the calling code runs on */
  FSW_NORMAL,        /* active, not running here: it resumed another fiber
                        (or, seen from another thread, runs there) */
  FSW_DEAD           /* its entry function returned */
} fsw_status;

typedef struct fsw_fiber fsw_fiber;

/* The body of a fiber.  `arg` is the value given to fsw_create; `in` is the
 * value passed by the first fsw_resume.  What it returns is handed to that
 * resumer as the last value out; the fiber is then dead. */
typedef void *(*fsw_fn)(void *arg, void *in);

/* Create a suspended fiber that will run fn(arg, in) on a fresh stack of
 * `stacksize` usable bytes (rounded up to pages).  On success stores the
 * fiber in *out and returns FSW_OK; the caller owns it until fsw_destroy.
 * On failure *out is set to NULL, nothing is held, and errno is left as the
 * failing system call set it. */
fsw_err fsw_create(fsw_fiber **out, fsw_fn fn, void *arg, size_t stacksize);

/* Run `f` until it yields or returns, passing `in` (to the entry function
 * on the first resume, or as fsw_yield's *in afterwards).  The value it
 * yields, or returns, is stored in *out unless out is NULL.  Only a
 * suspended fiber can be resumed; otherwise an error code is returned and
 * nothing happens.  A fiber may resume another: the resumer becomes normal. */
fsw_err fsw_resume(fsw_fiber *f, void *in, void **out);

/* Suspend the running fiber and return `out` to its resumer.  When the
 * fiber is resumed again, the resume's value is stored in *in unless in is
 * NULL, and FSW_OK is returned.  Outside any fiber returns FSW_EOUTSIDE. */
fsw_err fsw_yield(void *out, void **in);

/* fsw_resume(f, value, out) when f is not NULL, else fsw_yield(value, out).
 * Code that both resumes and yields (a language binding's one entry point,
 * say) can reach every switch from this single call site: both sides of a
 * switch then return through identical addresses, which the CPU's
 * return-stack buffer predicts. */
fsw_err fsw_transfer(fsw_fiber *f, void *value, void **out);

/* The status of `f` (FSW_DEAD for NULL). */
fsw_status fsw_status_of(const fsw_fiber *f);

/* The fiber the caller runs on, or NULL on the thread's own stack.
 * Each OS thread has its own notion of current fiber. */
fsw_fiber *fsw_current(void);

/* Free `f` and give its stack back to this thread's pool.  A suspended
 * fiber's pending frames are abandoned without running (no unwinding);
 * destroying a running or normal fiber returns FSW_EBUSY and keeps it.
 * NULL is accepted and ignored. */
fsw_err fsw_destroy(fsw_fiber *f);

/* The usable stack size of `f` in bytes (after rounding to pages). */
size_t fsw_stack_size(const fsw_fiber *f);

/* The address of `f`'s guard page, the page just below its usable stack
 * (NULL for NULL).  A SIGSEGV whose si_addr falls in that page is an
 * overflow of that fiber's stack. */
const void *fsw_stack_guard(const fsw_fiber *f);

/* High-water mark: the deepest stack use `f` reached since its stack was
 * last trimmed, in bytes.  Pages never touched read as zero, so this scans
 * up from the guard to the first non-zero word; it counts whole words. */
size_t fsw_stack_used(const fsw_fiber *f);

/* How many released stacks this thread's pool keeps warm for reuse. */
size_t fsw_pool_count(void);

/* Give every stack in this thread's pool back to the process-wide reserve,
 * which returns its memory to the system (and unmaps regions of stacks none
 * of which is in use); returns how many the pool held (fsw_pool_count).
 * Stacks released past the pool, waiting to go to the reserve in a batch,
 * go too, uncounted.  Thread exit does this too. */
size_t fsw_pool_drain(void);

/* Opt in (on != 0) or out of a report of fiber stack overflows: a SIGSEGV
 * handler that, when a fault hits the running fiber's guard page, writes
 * "fiberswap: fiber stack overflow: ..." to stderr, then hands the signal to
 * the handler that was installed before it (or lets the fault kill the
 * process, as it would have).  The handler runs on an alternate signal
 * stack, which each thread gets on its first fsw_create after this call
 * (or now, for the calling thread).  Returns whether it was on before. */
int fsw_catch_overflow(int on);

/* A short lowercase sentence naming `e`, for messages. */
const char *fsw_strerror(fsw_err e);

/* The name of the backend compiled in: "x86_64-sysv" or "ucontext". */
const char *fsw_backend(void);

/* How guard pages are installed on this system: "madvise" (MADV_GUARD_INSTALL,
 * no extra mapping per stack) or "mprotect" (one extra mapping per stack). */
const char *fsw_guard_kind(void);

#ifdef __cplusplus
}
#endif

#endif
