/* fiber.c: create, resume, yield, status and destroy, over the switch.
 * Resume and yield do their bookkeeping, then tail-call the switch, so a
 * switch costs one `ret`, straight back into the caller's code. */
#define _GNU_SOURCE
#include "fiberswap.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "stack.h"
#include "switch.h"
#include "tools.h"
#include "fiber_direct.h"

/* A fiber's record lives at the top of its own stack, so creating one
 * from the pool allocates nothing.  Its status is not stored: `resumer` is
 * FRESH before its first resume, NULL while it is suspended after that,
 * DEAD once its body returned, and otherwise
 * the fiber (or thread root) that yield returns to; whether an active fiber
 * is running or normal is whether it is the current one.  Resume and yield
 * thus touch one field each. */
struct fsw_fiber {
  fsw_ctx ctx;         /* its own context while it is suspended */
  fsw_ctx back;        /* its resumer's context while it is active: yield
                          finds where to go one load away */
  fsw_fiber *resumer;  /* NULL, FRESH, DEAD, or whom yield returns to */
#if FSW_DIRECT
  int vexit;           /* made by fsw__create_v: its end continues the
                          resumer as fsw__vswitch would */
#endif
  fsw_fn fn;
  void *arg;
  fsw_stack stack;
#if FSW_TSAN
  void *tsan_fiber; /* TSan's context for it (for the root: the thread's) */
#endif
#if FSW_ASAN
  void *asan_fake;          /* ASan's fake stack while switched out */
  const void *asan_bottom;  /* the stack ASan should know it by */
  size_t asan_size;
#endif
};

/* The resumer of a fiber whose body has returned, and of one never
 * resumed; never dereferenced. */
#define DEAD ((fsw_fiber *)(uintptr_t)1)
#define FRESH ((fsw_fiber *)(uintptr_t)2)

/* Per-thread state: a record standing for the thread's own stack as a
 * resumer (its context is kept in the `back` of the fiber it resumed), and
 * the running fiber: &root on the thread's own stack, or NULL there before
 * the thread's first resume.  Storing &root rather than NULL lets yield
 * hand back its resumer as is; the root's `resumer` stays NULL, so yield
 * refuses it like a thread that never resumed. */
struct thread_state {
  fsw_fiber root; /* first, so its address is the state's own */
  fsw_fiber *current;
#if FSW_ASAN
  fsw_fiber *switching_from; /* the side that left, for the side that came */
#endif
};
static FSW_TLS struct thread_state ts;

/* The thread state, read through a call the compiler cannot see into.
 * Code that runs after a switch uses this: a fiber may be continued on
 * another OS thread, and a thread-local address computed before the switch
 * would still point at the old thread's state. */
__attribute__((noinline)) static struct thread_state *fresh_ts(void) {
  struct thread_state *t = &ts;
  __asm__ volatile("" : "+r"(t));
  return t;
}

#if FSW_ASAN
/* Tell ASan the stack is about to change to `to`'s; a dying `from` frees
 * its fake stack. */
static void asan_leave(fsw_fiber *from, fsw_fiber *to) {
  fresh_ts()->switching_from = from;
  __sanitizer_start_switch_fiber(
      from->resumer == DEAD ? NULL : &from->asan_fake, to->asan_bottom,
      to->asan_size);
}

/* Tell ASan we arrived; learn the thread stack's bounds when we came from
 * it, since only ASan knows them. */
static void asan_arrive(void *fake) {
  struct thread_state *t = fresh_ts();
  const void *bottom;
  size_t size;
  __sanitizer_finish_switch_fiber(fake, &bottom, &size);
  if (t->switching_from == &t->root) {
    t->root.asan_bottom = bottom;
    t->root.asan_size = size;
  }
}
#endif

#if FSW_ASAN
/* A suspended fiber being destroyed never runs again, so it never makes the
 * last switch that would free the fake stack ASan keeps for it (under
 * detect_stack_use_after_return): switch ASan's books into its context and
 * out for good, without switching stacks.  No instrumented code runs in
 * between. */
__attribute__((noinline, no_sanitize_address)) static void asan_forget(fsw_fiber *f) {
  fsw_fiber *cur = ts.current ? ts.current : &ts.root;
  void *mine = NULL;
  const void *bottom;
  size_t size;
  if (f->asan_fake == NULL || cur->asan_bottom == NULL) return;
  __sanitizer_start_switch_fiber(&mine, f->asan_bottom, f->asan_size);
  __sanitizer_finish_switch_fiber(f->asan_fake, &bottom, &size);
  __sanitizer_start_switch_fiber(NULL, cur->asan_bottom, cur->asan_size);
  __sanitizer_finish_switch_fiber(mine, &bottom, &size);
  f->asan_fake = NULL;
}
#endif

/* Tell TSan, just before a switch, which fiber's context runs next. */
#if FSW_TSAN
#define tsan_switch(to) __tsan_switch_to_fiber((to)->tsan_fiber, 0)
#else
#define tsan_switch(to) ((void)0)
#endif

/* Save the running context in `save` and continue the one at `to_sp`
 * (fiber `to`) with `value`; when `save` is continued, store what it was
 * handed in *out and return FSW_OK.  `from` is the fiber that leaves.  The
 * caller has done all the bookkeeping; nothing here touches thread-local
 * state after the switch.  Without ASan this is the switch itself, reached
 * by a tail call. */
#if FSW_ASAN
/* Not instrumented: `value` lives across the switch, so it must sit on the
 * real stack.  Under detect_stack_use_after_return ASan would put it on a
 * fake stack, which it frees when a dying fiber leaves. */
__attribute__((noinline, no_sanitize_address)) static fsw_err transfer(
    fsw_ctx *save, void *to_sp, void *value, void **out, fsw_fiber *from,
    fsw_fiber *to) {
  asan_leave(from, to);
  fsw__switch(save, value, &value, to_sp);
  asan_arrive(from->asan_fake);
  if (out) *out = value;
  return FSW_OK;
}
#define transfer_fresh transfer
#else
#define transfer(save, to_sp, value, out, from, to) \
  ((void)(from), (void)(to), \
   (fsw_err)fsw__switch((save), (value), (out), (to_sp)))
/* The first switch to a fiber (see fsw__switch_fresh). */
#define transfer_fresh(save, to_sp, value, out, from, to) \
  ((void)(from), (void)(to), \
   (fsw_err)fsw__switch_fresh((save), (value), (out), (to_sp)))
#endif

/* A dead fiber's last switch: by returning from fiber_main to the
 * trampoline, which continues the resumer, on the x86-64 backend; else by
 * a switch.  Not under the sanitizers: ASan's switch needs annotating
 * around it, and TSan must see no instrumented code (fiber_main's own
 * return included) between its switch annotation and the switch. */
#define EXIT_BY_RETURN (!FSW_UCONTEXT && !FSW_ASAN && !FSW_TSAN)

/* Everything a fiber runs, from its first resume to its last switch.
 * Returns (where EXIT_BY_RETURN) the resumer's context and the value for
 * it: the trampoline continues that context. */
static fsw__exit fiber_main(void *data, void *value) {
  fsw_fiber *f = data, *r;
  struct thread_state *t;
#if FSW_ASAN
  asan_arrive(NULL);
#endif
  value = f->fn(f->arg, value);
  /* The body returned: the fiber is dead; its value goes to the resumer. */
  t = fresh_ts();
  r = f->resumer;
  f->resumer = DEAD;
  t->current = r;
  tsan_switch(r);
#if EXIT_BY_RETURN
  {
    fsw__exit e;
    e.to_sp = FSW_CTX_TARGET(&f->back);
#if FSW_DIRECT
    if (f->vexit) e.to_sp = (char *)e.to_sp + 1; /* see fsw__trampoline */
#endif
    e.value = value;
    return e;
  }
#else
  transfer(&f->ctx, FSW_CTX_TARGET(&f->back), value, NULL, f, r);
  abort(); /* nothing ever switches back to a dead fiber */
#endif
}

/* fsw_create, with `extra` bytes (a multiple of 16) kept on the new stack
 * right below the record: their address goes to *room, and is the body's
 * argument if `arg` is NULL. */
static fsw_err create(fsw_fiber **out, fsw_fn fn, void *arg, size_t stacksize,
                      size_t extra, void **room) {
  fsw_stack s;
  fsw_fiber *f;
  size_t usable;
  uintptr_t top, hi;
  fsw_err err;

  if (out) *out = NULL;
  if (out == NULL || fn == NULL) return FSW_EINVAL;
  err = fsw__stack_size_check(stacksize, &usable);
  if (err != FSW_OK) return err;
  err = fsw__stack_acquire(&s, usable);
  if (err != FSW_OK) return err;
  fsw__overflow_thread();

  top = (uintptr_t)FSW_STACK_HI(&s);
  f = (fsw_fiber *)((top - sizeof *f) & ~(uintptr_t)63);
  hi = ((uintptr_t)f & ~(uintptr_t)15) - extra;
  if (room != NULL) *room = (void *)hi;
  f->resumer = FRESH;
#if FSW_DIRECT
  f->vexit = 0;
#endif
  f->fn = fn;
  f->arg = arg != NULL || room == NULL ? arg : (void *)hi;
  f->stack = s;
#if FSW_TSAN
  f->tsan_fiber = __tsan_create_fiber(0);
#endif
#if FSW_ASAN
  f->asan_fake = NULL;
  f->asan_bottom = FSW_STACK_LO(&s);
  f->asan_size = s.size;
#endif
  /* The first frames go just below the record (and the room), 16-byte
   * aligned. */
  fsw__ctx_init(&f->ctx, FSW_STACK_LO(&s), (void *)hi, fiber_main, f);
  *out = f;
  return FSW_OK;
}

fsw_err fsw_create(fsw_fiber **out, fsw_fn fn, void *arg, size_t stacksize) {
  return create(out, fn, arg, stacksize, 0, NULL);
}

#if FSW_DIRECT
fsw_err fsw__create_v(fsw_fiber **out, fsw_fn fn, size_t stacksize,
                      size_t extra, void **room) {
  fsw_err err = create(out, fn, NULL, stacksize, (extra + 15) & ~(size_t)15,
                       room);
  if (err == FSW_OK) (*out)->vexit = 1;
  return err;
}
#endif

/* Why a fiber that is not suspended cannot be resumed; off the hot path. */
__attribute__((noinline, cold)) static fsw_err refusal(const fsw_fiber *f) {
  if (f->resumer == DEAD) return FSW_EDEAD;
  return f == ts.current ? FSW_ERUNNING : FSW_ENORMAL;
}

/* Resume's bookkeeping: f becomes the current fiber, resumed by cur, the
 * one that was (the root on the thread's own stack). */
static inline void enter(fsw_fiber *f, fsw_fiber *cur) {
  f->resumer = cur;
  ts.current = f;
#if FSW_TSAN
  if (cur == &ts.root) ts.root.tsan_fiber = __tsan_get_current_fiber();
#endif
  tsan_switch(f);
}

/* The first resume on this thread, whose current fiber is still NULL: make
 * the thread's own stack current, then resume as usual.  Off the hot path,
 * so that fsw_resume finds its resumer in one load. */
__attribute__((noinline, cold)) static fsw_err resume_first(fsw_fiber *f,
                                                            void *in,
                                                            void **out) {
  ts.current = &ts.root;
  return fsw_resume(f, in, out);
}

/* fsw_resume of a fiber that is not suspended: its first resume, or a
 * refusal.  Off the hot path, and reached by a tail call. */
__attribute__((noinline)) static fsw_err resume_other(fsw_fiber *f, void *in,
                                                      void **out) {
  fsw_fiber *cur;
  if (f->resumer != FRESH) return refusal(f);
  cur = ts.current;
  if (cur == NULL) return resume_first(f, in, out);
  enter(f, cur);
  return transfer_fresh(&f->back, FSW_CTX_TARGET(&f->ctx), in, out, cur, f);
}

/* Resume and yield go to .text.hot, next to the switch, each at the start
 * of a 64-byte line: the round trip's code then sits in a few adjacent
 * lines, and measured faster than wherever the linker put it otherwise
 * (see switch_x86_64_sysv.S). */
#define HOT __attribute__((hot, aligned(64)))

/* The bodies of resume and yield, for the three entry points below: each
 * ends in a tail call of the switch, so fsw_transfer reaches it with no
 * extra jump. */
static inline fsw_err resume_hot(fsw_fiber *f, void *in, void **out) {
  fsw_fiber *cur;
  if (f->resumer != NULL) return resume_other(f, in, out);
  cur = ts.current;
  if (cur == NULL) return resume_first(f, in, out);
  enter(f, cur);
  return transfer(&f->back, FSW_CTX_TARGET(&f->ctx), in, out, cur, f);
}

static inline fsw_err yield_hot(void *out, void **in) {
  fsw_fiber *cur = ts.current, *r;
  if (cur == NULL || (r = cur->resumer) == NULL) return FSW_EOUTSIDE;
  cur->resumer = NULL;
  ts.current = r;
  tsan_switch(r);
  return transfer(&cur->ctx, FSW_CTX_TARGET(&cur->back), out, in, cur, r);
}

HOT fsw_err fsw_resume(fsw_fiber *f, void *in, void **out) {
  if (f == NULL) return FSW_EINVAL;
  return resume_hot(f, in, out);
}

HOT fsw_err fsw_yield(void *out, void **in) { return yield_hot(out, in); }

HOT fsw_err fsw_transfer(fsw_fiber *f, void *value, void **out) {
  return f ? resume_hot(f, value, out) : yield_hot(value, out);
}

#if FSW_DIRECT
/* A call of fsw__vtransfer that fsw_transfer would refuse: its caller
 * broke the rule that makes it safe (fiber_direct.h).  Returning an error
 * would hand a Lua VM a negative count of results: stop here instead. */
__attribute__((noinline, cold, noreturn)) static void vtransfer_misused(
    fsw_err e) {
  fprintf(stderr, "fiberswap: internal error: fsw__vtransfer: %s\n",
          fsw_strerror(e));
  abort();
}

/* fsw__vtransfer's rare resumes: a fiber's first, or the thread's first. */
__attribute__((noinline)) static int vresume_other(fsw_fiber *f, void *in,
                                                   void **out) {
  fsw_fiber *was = f->resumer, *cur;
  if (was != NULL && was != FRESH) vtransfer_misused(refusal(f));
  cur = ts.current;
  if (cur == NULL) cur = ts.current = &ts.root;
  enter(f, cur);
  if (was == FRESH)
    return fsw__switch_fresh(&f->back, in, out, FSW_CTX_TARGET(&f->ctx));
  return fsw__vswitch(&f->back, in, out, FSW_CTX_TARGET(&f->ctx));
}

HOT int fsw__vtransfer(fsw_fiber *f, void *value, void **out) {
  fsw_fiber *cur = ts.current, *r;
  if (f != NULL) {
    if (f->resumer != NULL || cur == NULL) return vresume_other(f, value, out);
    enter(f, cur);
    return fsw__vswitch(&f->back, value, out, FSW_CTX_TARGET(&f->ctx));
  }
  if (cur == NULL || (r = cur->resumer) == NULL) vtransfer_misused(FSW_EOUTSIDE);
  cur->resumer = NULL;
  ts.current = r;
  return fsw__vswitch(&cur->ctx, value, out, FSW_CTX_TARGET(&cur->back));
}
#endif

fsw_status fsw_status_of(const fsw_fiber *f) {
  if (f == NULL || f->resumer == DEAD) return FSW_DEAD;
  if (f->resumer == NULL || f->resumer == FRESH) return FSW_SUSPENDED;
  return f == ts.current ? FSW_RUNNING : FSW_NORMAL;
}

fsw_fiber *fsw_current(void) {
  return ts.current == &ts.root ? NULL : ts.current;
}

fsw_err fsw_destroy(fsw_fiber *f) {
  fsw_stack s;
  if (f == NULL) return FSW_OK;
  if (f->resumer != NULL && f->resumer != DEAD && f->resumer != FRESH)
    return FSW_EBUSY;
#if FSW_ASAN
  if (f->resumer == NULL) asan_forget(f); /* suspended */
#endif
  s = f->stack; /* the record goes with the stack */
#if FSW_TSAN
  __tsan_destroy_fiber(f->tsan_fiber);
#endif
  fsw__stack_release(&s);
  return FSW_OK;
}

size_t fsw_stack_size(const fsw_fiber *f) { return f ? f->stack.size : 0; }

const void *fsw_stack_guard(const fsw_fiber *f) {
  return f ? f->stack.base : NULL;
}

size_t fsw_stack_used(const fsw_fiber *f) {
  return f ? fsw__stack_used(&f->stack) : 0;
}

const char *fsw_strerror(fsw_err e) {
  static const char *const names[FSW_ERR_COUNT] = {
      "success",
      "invalid argument: NULL fiber or entry function",
      "stack size is zero (pass FSW_STACK_DEFAULT for the default)",
      "stack size is below FSW_STACK_MIN",
      "stack size is above FSW_STACK_MAX",
      "cannot map a fiber stack: out of memory or address space",
      "cannot map a fiber stack: vm.max_map_count reached (each mprotect "
      "guard page costs 2 mappings; raise it with sysctl vm.max_map_count "
      "or use Linux >= 6.13 for MADV_GUARD_INSTALL guards)",
      "cannot install the stack guard page",
      "cannot resume the running fiber",
      "cannot resume a normal fiber (it is resuming another)",
      "cannot resume a dead fiber",
      "cannot yield from outside a fiber",
      "cannot destroy a running or normal fiber",
  };
  if ((unsigned)e >= FSW_ERR_COUNT) return "unknown fiberswap error";
  return names[e];
}

const char *fsw_backend(void) {
  return FSW_UCONTEXT ? "ucontext" : "x86_64-sysv";
}
