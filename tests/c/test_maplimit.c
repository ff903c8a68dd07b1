/* test_maplimit.c: the mprotect guard fallback at vm.max_map_count.
 * Run with FIBERSWAP_GUARD=mprotect: each stack then costs two mappings, and
 * running out must say so (FSW_EMAPLIMIT), not fail as a mystery ENOMEM. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>

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

int main(void) {
  h_suite = "c-maplimit";
  RUN(map_limit_is_named);
  DONE();
}
