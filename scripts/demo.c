/* demo.c: a first look at fiberswap from C, run by `make demo`.
 * A C function runs on its own stack, yields values, and is resumed. */
#include <stdint.h>
#include <stdio.h>
#include "fiberswap.h"

static uintptr_t fiber_local; /* where the fiber's locals live, for the tour */

/* A generator: yields Fibonacci numbers until it has given `arg` of them. */
static void *fib(void *arg, void *in) {
  long n = (long)arg, a = 0, b = 1;
  int here;
  (void)in;
  fiber_local = (uintptr_t)&here;
  for (long i = 0; i < n; i++) {
    long next = a + b;
    fsw_yield((void *)a, NULL);
    a = b;
    b = next;
  }
  return (void *)-1L;
}

int main(void) {
  fsw_fiber *f;
  void *v;
  int here;
  fsw_err err = fsw_create(&f, fib, (void *)12L, FSW_STACK_DEFAULT);
  if (err != FSW_OK) {
    fprintf(stderr, "demo: %s\n", fsw_strerror(err));
    return 1;
  }
  printf("fiberswap %s, backend %s, guard pages by %s\n", FSW_VERSION,
         fsw_backend(), fsw_guard_kind());
  printf("  main:  a local at %p; fiber stack of %zu bytes\n", (void *)&here,
         fsw_stack_size(f));
  printf("  fibonacci, one resume each:");
  while (fsw_resume(f, NULL, &v) == FSW_OK && fsw_status_of(f) != FSW_DEAD)
    printf(" %ld", (long)v);
  printf("\n  fiber: its locals were at %p, on its own stack\n",
         (void *)fiber_local);
  printf("  the fiber returned %ld and is dead; it used %zu bytes of stack\n",
         (long)v, fsw_stack_used(f));
  err = fsw_resume(f, NULL, NULL);
  printf("  resuming it again: %s\n", fsw_strerror(err));
  fsw_destroy(f);
  printf("  destroyed; its stack waits in the pool (%zu pooled)\n",
         fsw_pool_count());
  fsw_pool_drain();
  return 0;
}
