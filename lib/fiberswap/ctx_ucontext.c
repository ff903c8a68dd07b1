/* ctx_ucontext.c: the portable context backend, on POSIX ucontext.
 * swapcontext does the work; a thread-local mailbox carries the value. */
#define _GNU_SOURCE
#include "switch.h"

#if FSW_UCONTEXT
#include <stdlib.h>

#include "tools.h"

/* The mailbox of one switch on this thread: set just before swapcontext by
 * the side that leaves, read right after by the side that continues (on
 * the same thread, since a switch never crosses threads). */
struct mailbox {
  void *value;
  fsw_ctx *to;
};
static __thread struct mailbox box;

/* Read through a call the compiler cannot see into, so that a context that
 * was suspended on one thread and continued on another never uses the old
 * thread's mailbox address kept in a register across swapcontext. */
__attribute__((noinline)) static struct mailbox *mb(void) {
  struct mailbox *m = &box;
  __asm__ volatile("" : "+r"(m));
  return m;
}

/* First code on a new context: collect the value and run start. */
static void entry(void) {
  struct mailbox *m = mb();
  fsw_ctx *c = m->to;
  c->start(c->data, m->value);
  abort(); /* start must never return */
}

void fsw__ctx_init(fsw_ctx *c, void *lo, void *hi, fsw_start_fn start,
                   void *data) {
  getcontext(&c->uc);
  c->uc.uc_stack.ss_sp = lo;
  c->uc.uc_stack.ss_size = (size_t)((char *)hi - (char *)lo);
  c->uc.uc_link = NULL;
  c->start = start;
  c->data = data;
  makecontext(&c->uc, entry, 0);
}

int fsw__switch(fsw_ctx *from, void *value, void **out, void *to_sp) {
  fsw_ctx *to = to_sp; /* FSW_CTX_TARGET: the context itself */
  struct mailbox *m = mb();
  m->value = value;
  m->to = to;
#if FSW_ASAN
  {
    /* ASan's swapcontext interceptor warns of false positives on every
     * run; the fiber layer already annotates each switch, so take the
     * equivalent getcontext + setcontext route around it. */
    volatile int resumed = 0;
    getcontext(&from->uc);
    if (!resumed) {
      resumed = 1;
      setcontext(&to->uc);
    }
  }
#else
  swapcontext(&from->uc, &to->uc);
#endif
  if (out) *out = mb()->value;
  return 0;
}
#endif
