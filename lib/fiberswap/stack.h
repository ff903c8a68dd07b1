/* stack.h: guarded fiber stacks, the per-thread pool that recycles them and
 * the process-wide reserve they are carved from.  A stack is a slot of a
 * region (one anonymous mapping): a guard page at the low end, then the
 * usable bytes; released stacks wait in the pool, trimmed, for reuse. */
#ifndef FSW_STACK_H
#define FSW_STACK_H

#include <stddef.h>
#include "fiberswap.h"

struct fsw_region;

typedef struct fsw_stack {
  struct fsw_region *region; /* the mapping it is a slot of */
  char *base;        /* start of the slot: the guard page */
  char *lo;          /* the usable bytes, just above the guard page... */
  size_t size;       /* ...and how many */
  unsigned vg_id;    /* valgrind's id for the registered stack, or 0 */
} fsw_stack;

/* The usable range of a stack. */
#define FSW_STACK_LO(s) ((s)->lo)
#define FSW_STACK_HI(s) ((s)->lo + (s)->size)

/* The system page size, cached. */
size_t fsw__page_size(void);

/* Check a requested size and round it up to pages into *usable. */
fsw_err fsw__stack_size_check(size_t request, size_t *usable);

/* Get a stack of exactly `usable` bytes (already page-rounded), from this
 * thread's pool or spill list when one fits, else from the reserve, which
 * maps and guards a new region when it has no slot of that size.  On
 * failure returns the error and holds nothing. */
fsw_err fsw__stack_acquire(fsw_stack *s, size_t usable);

/* Give a stack back: into this thread's pool (trimmed if it ran deep) or,
 * when the pool is full, to the reserve (its memory dropped), in batches.
 * `s` is not usable afterwards. */
void fsw__stack_release(fsw_stack *s);

/* Give this thread an alternate signal stack if overflow reports are on
 * (overflow.c). */
void fsw__overflow_thread(void);

/* Bytes from the top of `s` down to its deepest non-zero word. */
size_t fsw__stack_used(const fsw_stack *s);

#endif
