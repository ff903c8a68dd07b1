/* test_maplimit.c: fiberswap at vm.max_map_count.
 * map_limit_is_named runs with FIBERSWAP_GUARD=mprotect: each stack then
 * costs two mappings, and running out must say so (FSW_EMAPLIMIT), not fail
 * as a mystery ENOMEM.  idle_region_kept_at_map_limit runs with the default
 * guards: a region that cannot be unmapped at the limit stays usable. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fiberswap.h"
#include "harness.h"

static void *idle(void *arg, void *in) {
  (void)in;
  return arg;
}

/* Creating guarded stacks until failure stops at the map limit with
 * FSW_EMAPLIMIT and errno ENOMEM, and everything works again once the
 * stacks are given back. */
static void map_limit_is_named(void) {
  size_t cap = 70000, n = 0;
  fsw_fiber **all = calloc(cap, sizeof *all);
  fsw_err err = FSW_OK;
  void *out = NULL;

  CHECK(all != NULL);
  if (all == NULL) return;
  CHECK(strcmp(fsw_guard_kind(), "mprotect") == 0);
  while (n < cap) {
    err = fsw_create(&all[n], idle, NULL, FSW_STACK_MIN);
    if (err != FSW_OK) break;
    n++;
  }
  printf("# created %zu guarded stacks before: %s\n", n, fsw_strerror(err));
  CHECK_EQ(err, FSW_EMAPLIMIT);
  CHECK_EQ(errno, ENOMEM);
  CHECK(n > 1000);
  CHECK(n < cap);
  CHECK(strstr(fsw_strerror(err), "vm.max_map_count") != NULL);
  for (size_t i = 0; i < n; i++) CHECK_EQ(fsw_destroy(all[i]), FSW_OK);
  fsw_pool_drain();
  free(all);
  /* Nothing is lost: a fiber can be made and run again. */
  fsw_fiber *f = NULL;
  CHECK_EQ(fsw_create(&f, idle, (void *)7, FSW_STACK_MIN), FSW_OK);
  if (f) {
    CHECK_EQ(fsw_resume(f, NULL, &out), FSW_OK);
    CHECK(out == (void *)7);
    fsw_destroy(f);
  }
}

/* Fill the map count to its limit with one-page mappings; returns the
 * block to unmap afterwards, of *len bytes. */
static char *fill_map_count(size_t *len) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE), n = 70000, i;
  char *big = mmap(NULL, n * page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  *len = n * page;
  if (big == MAP_FAILED) return NULL;
  for (i = 1; i < n; i += 2) /* each protected page splits off two maps */
    if (mprotect(big + i * page, page, PROT_READ) != 0) break;
  return big;
}

/* Is the page at p mapped? */
static int mapped(const void *p) {
  unsigned char vec;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  return mincore((void *)((uintptr_t)p & ~(uintptr_t)(page - 1)), page, &vec) == 0;
}

/* Is the page at p mapped and in memory? */
static int resident(const void *p) {
  unsigned char vec = 0;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  if (mincore((void *)((uintptr_t)p & ~(uintptr_t)(page - 1)), page, &vec) != 0) return 0;
  return vec & 1;
}

#define IDLE_N 28 /* regions of 4, 8 and 16 stacks */

/* Regions merge into one mapping; unmapping the middle one splits it,
 * which at the map limit fails.  The region is then kept, idle, and
 * reused: no address space is lost, and once the limit is lifted and the
 * region is idle again it is unmapped. */
static void idle_region_kept_at_map_limit(void) {
  fsw_fiber *f[IDLE_N], *again[8];
  const char *g4, *top4;
  size_t len;
  char *big;
  int k, reused = 0;
  CHECK(strcmp(fsw_guard_kind(), "madvise") == 0);
  fsw_pool_drain();
  for (k = 0; k < IDLE_N; k++) CHECK_EQ(fsw_create(&f[k], idle, NULL, FSW_STACK_MIN), FSW_OK);
  g4 = fsw_stack_guard(f[4]); /* the second region's first stack */
  /* Its top page holds the fiber's first frame (and its record). */
  top4 = (const char *)g4 + fsw_stack_size(f[4]);
  CHECK(resident(top4));
  big = fill_map_count(&len);
  CHECK(big != NULL);
  for (k = 4; k < 12; k++) fsw_destroy(f[k]); /* all of the second region */
  fsw_pool_drain(); /* its munmap fails: too many mappings */
  CHECK(mapped(g4));
  CHECK(!resident(top4)); /* kept, but its memory given back */
  for (k = 0; k < 8; k++) { /* reused, not lost */
    CHECK_EQ(fsw_create(&again[k], idle, NULL, FSW_STACK_MIN), FSW_OK);
    reused += fsw_stack_guard(again[k]) == g4;
  }
  CHECK_EQ(reused, 1);
  if (big) munmap(big, len);
  for (k = 0; k < 8; k++) fsw_destroy(again[k]);
  for (k = 0; k < 4; k++) fsw_destroy(f[k]);
  for (k = 12; k < IDLE_N; k++) fsw_destroy(f[k]);
  fsw_pool_drain();
  CHECK(!mapped(g4)); /* idle again, below the limit: unmapped */
}

int main(void) {
  h_suite = "c-maplimit";
  RUN(map_limit_is_named);
  RUN(idle_region_kept_at_map_limit);
  DONE();
}
