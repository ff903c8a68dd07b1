/* test_fiber.c: the C test suite for fiberswap, run unchanged on every backend.
 * Each test pins one promise of fiberswap.h; anything that may crash runs in a child. */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fenv.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fiberswap.h"
#include "fiber_direct.h"
#include "harness.h"

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define FSW_TEST_VALGRIND 1
#endif
#endif
#ifndef FSW_TEST_VALGRIND
#define FSW_TEST_VALGRIND 0
#endif

#define KIB ((size_t)1024)
#define MIB (KIB * KIB)
#define SMALL_USE (16 * KIB) /* a fiber that does almost nothing stays below */
#define TRIMMED_USE (32 * KIB) /* a reused stack may keep its top pages hot */

/* Distinct addresses to pass around as opaque values. */
static char tok_arg, tok_in1, tok_in2, tok_in3, tok_out1, tok_out2, tok_ret,
    tok_sentinel;

static void *to_ptr(uintptr_t v) { return (void *)v; }
static uintptr_t to_num(const void *p) { return (uintptr_t)p; }

static size_t page_size(void) { return (size_t)sysconf(_SC_PAGESIZE); }

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

/* Body that returns its argument at once. */
static void *return_arg(void *arg, void *in) {
  (void)in;
  return arg;
}

/* Body that yields its argument once, then returns the value it was resumed with. */
static void *yield_arg_then_return_in(void *arg, void *in) {
  void *next = NULL;
  (void)in;
  if (fsw_yield(arg, &next) != FSW_OK) return &tok_sentinel;
  return next;
}

/* ---------------------------------------------------------------- create */

static int body_started;

static void *mark_started(void *arg, void *in) {
  (void)in;
  body_started = 1;
  return arg;
}

/* fsw_create gives a suspended fiber whose body has not run yet. */
static void create_gives_suspended_fiber_that_has_not_run(void) {
  fsw_fiber *f = NULL;
  body_started = 0;
  CHECK_EQ(fsw_create(&f, mark_started, &tok_arg, FSW_STACK_DEFAULT), FSW_OK);
  CHECK(f != NULL);
  if (f == NULL) return;
  CHECK_EQ(fsw_status_of(f), FSW_SUSPENDED);
  CHECK_EQ(body_started, 0);
  CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
  CHECK_EQ(body_started, 1);
  CHECK_EQ(fsw_destroy(f), FSW_OK);
}

/* Two fibers created back to back are distinct and independent. */
static void create_gives_distinct_independent_fibers(void) {
  fsw_fiber *a = NULL, *b = NULL;
  void *out = NULL;
  CHECK_EQ(fsw_create(&a, yield_arg_then_return_in, &tok_out1, FSW_STACK_DEFAULT), FSW_OK);
  CHECK_EQ(fsw_create(&b, yield_arg_then_return_in, &tok_out2, FSW_STACK_DEFAULT), FSW_OK);
  if (a == NULL || b == NULL) return;
  CHECK(a != b);
  CHECK_EQ(fsw_resume(b, NULL, &out), FSW_OK);
  CHECK(out == &tok_out2);
  CHECK_EQ(fsw_status_of(a), FSW_SUSPENDED);
  CHECK_EQ(fsw_resume(a, NULL, &out), FSW_OK);
  CHECK(out == &tok_out1);
  CHECK_EQ(fsw_resume(a, &tok_in1, &out), FSW_OK);
  CHECK(out == &tok_in1);
  CHECK_EQ(fsw_status_of(a), FSW_DEAD);
  CHECK_EQ(fsw_status_of(b), FSW_SUSPENDED);
  CHECK_EQ(fsw_resume(b, &tok_in2, &out), FSW_OK);
  CHECK(out == &tok_in2);
  CHECK_EQ(fsw_destroy(a), FSW_OK);
  CHECK_EQ(fsw_destroy(b), FSW_OK);
}

/* ------------------------------------------------------- values both ways */

static void *echo_body(void *arg, void *in) {
  void *next = &tok_sentinel;
  CHECK(arg == &tok_arg);
  CHECK(in == &tok_in1);
  CHECK_EQ(fsw_yield(&tok_out1, &next), FSW_OK);
  CHECK(next == &tok_in2);
  CHECK_EQ(fsw_yield(&tok_out2, NULL), FSW_OK); /* resume's value is dropped */
  next = &tok_sentinel;
  CHECK_EQ(fsw_yield(NULL, &next), FSW_OK);
  CHECK(next == NULL); /* a NULL resume value is stored, not skipped */
  return &tok_ret;
}

/* The entry gets arg and the first resume's value; yield's out becomes
 * resume's *out, the next resume's in becomes yield's *in, the return value
 * ends the last resume; NULL in/out pointers are accepted on both sides. */
static void values_round_trip_both_ways(void) {
  fsw_fiber *f = NULL;
  void *out = NULL;
  CHECK_EQ(fsw_create(&f, echo_body, &tok_arg, FSW_STACK_DEFAULT), FSW_OK);
  if (f == NULL) return;
  CHECK_EQ(fsw_resume(f, &tok_in1, &out), FSW_OK);
  CHECK(out == &tok_out1);
  CHECK_EQ(fsw_resume(f, &tok_in2, &out), FSW_OK);
  CHECK(out == &tok_out2);
  CHECK_EQ(fsw_resume(f, &tok_in3, NULL), FSW_OK); /* yielded NULL, not stored */
  CHECK_EQ(fsw_status_of(f), FSW_SUSPENDED);
  out = &tok_sentinel;
  CHECK_EQ(fsw_resume(f, NULL, &out), FSW_OK);
  CHECK(out == &tok_ret);
  CHECK_EQ(fsw_status_of(f), FSW_DEAD);
  CHECK_EQ(fsw_destroy(f), FSW_OK);
}

/* A yielded NULL is stored in *out (it overwrites what was there). */
static void yielded_null_is_stored_in_out(void) {
  fsw_fiber *f = NULL;
  void *out = &tok_sentinel;
  CHECK_EQ(fsw_create(&f, yield_arg_then_return_in, NULL, FSW_STACK_DEFAULT), FSW_OK);
  if (f == NULL) return;
  CHECK_EQ(fsw_resume(f, NULL, &out), FSW_OK);
  CHECK(out == NULL);
  out = &tok_sentinel;
  CHECK_EQ(fsw_resume(f, NULL, &out), FSW_OK);
  CHECK(out == NULL);
  CHECK_EQ(fsw_destroy(f), FSW_OK);
}

/* ----------------------------------------------------------------- status */

static fsw_status status_inside;

static void *status_probe_body(void *arg, void *in) {
  (void)arg;
  (void)in;
  status_inside = fsw_status_of(fsw_current());
  fsw_yield(NULL, NULL);
  status_inside = fsw_status_of(fsw_current());
  return NULL;
}

/* A fiber is suspended when new, running inside, suspended after a yield,
 * dead after its body returns; NULL reads as dead. */
static void status_follows_lifecycle(void) {
  fsw_fiber *f = NULL;
  CHECK_EQ(fsw_status_of(NULL), FSW_DEAD);
  CHECK_EQ(fsw_create(&f, status_probe_body, NULL, FSW_STACK_DEFAULT), FSW_OK);
  if (f == NULL) return;
  CHECK_EQ(fsw_status_of(f), FSW_SUSPENDED);
  status_inside = FSW_DEAD;
  CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
  CHECK_EQ(status_inside, FSW_RUNNING);
  CHECK_EQ(fsw_status_of(f), FSW_SUSPENDED);
  status_inside = FSW_DEAD;
  CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
  CHECK_EQ(status_inside, FSW_RUNNING);
  CHECK_EQ(fsw_status_of(f), FSW_DEAD);
  CHECK_EQ(fsw_destroy(f), FSW_OK);
}

static fsw_fiber *outer_fiber, *inner_fiber;
static fsw_status outer_seen_from_inner, inner_seen_from_inner;

static void *inner_status_body(void *arg, void *in) {
  (void)arg;
  (void)in;
  outer_seen_from_inner = fsw_status_of(outer_fiber);
  inner_seen_from_inner = fsw_status_of(inner_fiber);
  fsw_yield(NULL, NULL);
  return NULL;
}

static void *outer_status_body(void *arg, void *in) {
  (void)arg;
  (void)in;
  CHECK_EQ(fsw_resume(inner_fiber, NULL, NULL), FSW_OK);
  CHECK_EQ(fsw_status_of(inner_fiber), FSW_SUSPENDED);
  CHECK_EQ(fsw_status_of(outer_fiber), FSW_RUNNING);
  return NULL;
}

/* A fiber that resumed another is normal while the other runs, and running
 * again once the other yields back to it. */
static void resumer_is_normal_while_nested_fiber_runs(void) {
  outer_fiber = inner_fiber = NULL;
  CHECK_EQ(fsw_create(&outer_fiber, outer_status_body, NULL, FSW_STACK_DEFAULT), FSW_OK);
  CHECK_EQ(fsw_create(&inner_fiber, inner_status_body, NULL, FSW_STACK_DEFAULT), FSW_OK);
  if (outer_fiber == NULL || inner_fiber == NULL) return;
  outer_seen_from_inner = inner_seen_from_inner = FSW_DEAD;
  CHECK_EQ(fsw_resume(outer_fiber, NULL, NULL), FSW_OK);
  CHECK_EQ(outer_seen_from_inner, FSW_NORMAL);
  CHECK_EQ(inner_seen_from_inner, FSW_RUNNING);
  CHECK_EQ(fsw_status_of(outer_fiber), FSW_DEAD);
  CHECK_EQ(fsw_status_of(inner_fiber), FSW_SUSPENDED);
  CHECK_EQ(fsw_resume(inner_fiber, NULL, NULL), FSW_OK); /* main finishes it */
  CHECK_EQ(fsw_status_of(inner_fiber), FSW_DEAD);
  CHECK_EQ(fsw_destroy(outer_fiber), FSW_OK);
  CHECK_EQ(fsw_destroy(inner_fiber), FSW_OK);
}

/* ---------------------------------------------------------------- current */

static fsw_fiber *current_seen;

static void *record_current_body(void *arg, void *in) {
  (void)arg;
  (void)in;
  current_seen = fsw_current();
  fsw_yield(NULL, NULL);
  current_seen = fsw_current();
  return NULL;
}

/* fsw_current is NULL on the thread's own stack and the fiber inside it,
 * before and after a yield. */
static void current_names_running_fiber_or_null(void) {
  fsw_fiber *f = NULL;
  CHECK(fsw_current() == NULL);
  CHECK_EQ(fsw_create(&f, record_current_body, NULL, FSW_STACK_DEFAULT), FSW_OK);
  if (f == NULL) return;
  CHECK(fsw_current() == NULL);
  current_seen = NULL;
  CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
  CHECK(current_seen == f);
  CHECK(fsw_current() == NULL);
  current_seen = NULL;
  CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
  CHECK(current_seen == f);
  CHECK(fsw_current() == NULL);
  CHECK_EQ(fsw_destroy(f), FSW_OK);
}

/* ---------------------------------------------------------- three deep */

static fsw_fiber *level[3]; /* A, B, C */
static char tok[3]; /* what each level yields and returns */

/* Check every level's status against the expected pattern for `running`. */
static void check_levels(int running, fsw_status above, fsw_status below) {
  int i;
  for (i = 0; i < 3; i++) {
    if (i < running) CHECK_EQ(fsw_status_of(level[i]), above);
    else if (i == running) CHECK_EQ(fsw_status_of(level[i]), FSW_RUNNING);
    else CHECK_EQ(fsw_status_of(level[i]), below);
  }
  CHECK(fsw_current() == level[running]);
}

static void *level_c(void *arg, void *in) {
  (void)arg;
  (void)in;
  check_levels(2, FSW_NORMAL, FSW_DEAD);
  CHECK_EQ(fsw_yield(&tok[2], NULL), FSW_OK);
  check_levels(2, FSW_NORMAL, FSW_DEAD);
  return &tok[2];
}

/* Levels A and B (arg 0 or 1): resume the level below twice around one
 * yield of their own, checking every level's status at each step. */
static void *level_ab(void *arg, void *in) {
  int i = (int)(intptr_t)arg;
  void *out = NULL;
  (void)in;
  check_levels(i, FSW_NORMAL, FSW_SUSPENDED);
  CHECK_EQ(fsw_resume(level[i + 1], NULL, &out), FSW_OK);
  CHECK(out == &tok[i + 1]);
  check_levels(i, FSW_NORMAL, FSW_SUSPENDED);
  CHECK_EQ(fsw_yield(&tok[i], NULL), FSW_OK);
  check_levels(i, FSW_NORMAL, FSW_SUSPENDED);
  CHECK_EQ(fsw_resume(level[i + 1], NULL, &out), FSW_OK);
  CHECK(out == &tok[i + 1]);
  CHECK_EQ(fsw_status_of(level[i + 1]), FSW_DEAD);
  CHECK(fsw_current() == level[i]);
  return &tok[i];
}

/* Main resumes A, A resumes B, B resumes C; each yield goes back exactly one
 * level; statuses and fsw_current are right at every level, and all finish. */
static void nesting_three_deep_yields_one_level_at_a_time(void) {
  static fsw_fn bodies[3] = {level_ab, level_ab, level_c};
  void *out = NULL;
  int i;
  for (i = 0; i < 3; i++) {
    level[i] = NULL;
    CHECK_EQ(fsw_create(&level[i], bodies[i], (void *)(intptr_t)i,
                        FSW_STACK_DEFAULT), FSW_OK);
    if (level[i] == NULL) return;
  }
  CHECK_EQ(fsw_resume(level[0], NULL, &out), FSW_OK);
  CHECK(out == &tok[0]);
  CHECK(fsw_current() == NULL);
  for (i = 0; i < 3; i++) CHECK_EQ(fsw_status_of(level[i]), FSW_SUSPENDED);
  CHECK_EQ(fsw_resume(level[0], NULL, &out), FSW_OK);
  CHECK(out == &tok[0]);
  CHECK(fsw_current() == NULL);
  for (i = 0; i < 3; i++) {
    CHECK_EQ(fsw_status_of(level[i]), FSW_DEAD);
    CHECK_EQ(fsw_destroy(level[i]), FSW_OK);
  }
}

/* --------------------------------------------------------------- destroy */

static int ran_past_yield;

static void *flag_after_yield(void *arg, void *in) {
  (void)arg;
  (void)in;
  fsw_yield(NULL, NULL);
  ran_past_yield = 1;
  return NULL;
}

/* Destroy accepts a never-started, a suspended (its pending frames are
 * abandoned without running) and a dead fiber, and ignores NULL. */
static void destroy_frees_unstarted_suspended_and_dead_fibers(void) {
  fsw_fiber *f = NULL;
  CHECK_EQ(fsw_destroy(NULL), FSW_OK);

  CHECK_EQ(fsw_create(&f, flag_after_yield, NULL, FSW_STACK_DEFAULT), FSW_OK);
  CHECK_EQ(fsw_destroy(f), FSW_OK);

  f = NULL;
  ran_past_yield = 0;
  CHECK_EQ(fsw_create(&f, flag_after_yield, NULL, FSW_STACK_DEFAULT), FSW_OK);
  CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
  CHECK_EQ(fsw_status_of(f), FSW_SUSPENDED);
  CHECK_EQ(fsw_destroy(f), FSW_OK);
  CHECK_EQ(ran_past_yield, 0);

  f = NULL;
  CHECK_EQ(fsw_create(&f, return_arg, NULL, FSW_STACK_DEFAULT), FSW_OK);
  CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
  CHECK_EQ(fsw_status_of(f), FSW_DEAD);
  CHECK_EQ(fsw_destroy(f), FSW_OK);
  CHECK(fsw_current() == NULL);
}

/* ---------------------------------------------------------------- misuse */

static fsw_err misuse_err;
static void *misuse_out;

static void *resume_self_body(void *arg, void *in) {
  (void)arg;
  (void)in;
  misuse_out = &tok_sentinel;
  misuse_err = fsw_resume(fsw_current(), &tok_in1, &misuse_out);
  CHECK_EQ(fsw_status_of(fsw_current()), FSW_RUNNING);
  CHECK_EQ(fsw_yield(&tok_out1, NULL), FSW_OK);
  return &tok_ret;
}

/* A fiber resuming itself gets FSW_ERUNNING, nothing is stored, and it keeps
 * running and can yield and finish normally. */
static void resume_of_running_fiber_fails_erunning(void) {
  fsw_fiber *f = NULL;
  void *out = NULL;
  misuse_err = FSW_OK;
  CHECK_EQ(fsw_create(&f, resume_self_body, NULL, FSW_STACK_DEFAULT), FSW_OK);
  if (f == NULL) return;
  CHECK_EQ(fsw_resume(f, NULL, &out), FSW_OK);
  CHECK_EQ(misuse_err, FSW_ERUNNING);
  CHECK(misuse_out == &tok_sentinel);
  CHECK(out == &tok_out1);
  CHECK_EQ(fsw_resume(f, NULL, &out), FSW_OK);
  CHECK(out == &tok_ret);
  CHECK_EQ(fsw_destroy(f), FSW_OK);
}

static fsw_fiber *pair_a, *pair_b;

static void *resume_resumer_body(void *arg, void *in) {
  (void)arg;
  (void)in;
  misuse_out = &tok_sentinel;
  misuse_err = fsw_resume(pair_a, &tok_in1, &misuse_out);
  CHECK_EQ(fsw_status_of(pair_a), FSW_NORMAL);
  CHECK(fsw_current() == pair_b);
  CHECK_EQ(fsw_yield(&tok_out2, NULL), FSW_OK);
  return &tok_ret;
}

static void *resume_pair_b_body(void *arg, void *in) {
  void *out = NULL;
  (void)arg;
  (void)in;
  CHECK_EQ(fsw_resume(pair_b, NULL, &out), FSW_OK);
  CHECK(out == &tok_out2);
  CHECK(fsw_current() == pair_a);
  CHECK_EQ(fsw_yield(&tok_out1, NULL), FSW_OK);
  CHECK_EQ(fsw_resume(pair_b, NULL, &out), FSW_OK);
  CHECK(out == &tok_ret);
  return &tok_ret;
}

/* B, resumed by A, resuming A gets FSW_ENORMAL; both carry on and finish. */
static void resume_of_normal_fiber_fails_enormal(void) {
  void *out = NULL;
  pair_a = pair_b = NULL;
  misuse_err = FSW_OK;
  CHECK_EQ(fsw_create(&pair_a, resume_pair_b_body, NULL, FSW_STACK_DEFAULT), FSW_OK);
  CHECK_EQ(fsw_create(&pair_b, resume_resumer_body, NULL, FSW_STACK_DEFAULT), FSW_OK);
  if (pair_a == NULL || pair_b == NULL) return;
  CHECK_EQ(fsw_resume(pair_a, NULL, &out), FSW_OK);
  CHECK(out == &tok_out1);
  CHECK_EQ(misuse_err, FSW_ENORMAL);
  CHECK(misuse_out == &tok_sentinel);
  CHECK_EQ(fsw_status_of(pair_a), FSW_SUSPENDED);
  CHECK_EQ(fsw_status_of(pair_b), FSW_SUSPENDED);
  CHECK_EQ(fsw_resume(pair_a, NULL, &out), FSW_OK);
  CHECK(out == &tok_ret);
  CHECK_EQ(fsw_status_of(pair_a), FSW_DEAD);
  CHECK_EQ(fsw_status_of(pair_b), FSW_DEAD);
  CHECK_EQ(fsw_destroy(pair_a), FSW_OK);
  CHECK_EQ(fsw_destroy(pair_b), FSW_OK);
}

/* Resuming a dead fiber gets FSW_EDEAD every time, leaves *out alone, and
 * the fiber can still be destroyed. */
static void resume_of_dead_fiber_fails_edead(void) {
  fsw_fiber *f = NULL;
  void *out = NULL;
  CHECK_EQ(fsw_create(&f, return_arg, &tok_ret, FSW_STACK_DEFAULT), FSW_OK);
  if (f == NULL) return;
  CHECK_EQ(fsw_resume(f, NULL, &out), FSW_OK);
  CHECK(out == &tok_ret);
  out = &tok_sentinel;
  CHECK_EQ(fsw_resume(f, &tok_in1, &out), FSW_EDEAD);
  CHECK(out == &tok_sentinel);
  CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_EDEAD);
  CHECK_EQ(fsw_status_of(f), FSW_DEAD);
  CHECK(fsw_current() == NULL);
  CHECK_EQ(fsw_destroy(f), FSW_OK);
}

/* Resuming NULL is FSW_EINVAL and leaves *out alone. */
static void resume_of_null_fails_einval(void) {
  void *out = &tok_sentinel;
  CHECK_EQ(fsw_resume(NULL, &tok_in1, &out), FSW_EINVAL);
  CHECK(out == &tok_sentinel);
  CHECK_EQ(fsw_resume(NULL, NULL, NULL), FSW_EINVAL);
}

/* Yield on the thread's own stack is FSW_EOUTSIDE and leaves *in alone, also
 * while some fiber is suspended; that fiber is unaffected. */
static void yield_outside_fiber_fails_eoutside(void) {
  fsw_fiber *f = NULL;
  void *in = &tok_sentinel, *out = NULL;
  CHECK_EQ(fsw_yield(&tok_out1, &in), FSW_EOUTSIDE);
  CHECK(in == &tok_sentinel);
  CHECK_EQ(fsw_yield(NULL, NULL), FSW_EOUTSIDE);
  CHECK_EQ(fsw_create(&f, yield_arg_then_return_in, &tok_out1, FSW_STACK_DEFAULT), FSW_OK);
  if (f == NULL) return;
  CHECK_EQ(fsw_resume(f, NULL, &out), FSW_OK);
  CHECK(out == &tok_out1);
  CHECK_EQ(fsw_yield(&tok_out2, &in), FSW_EOUTSIDE);
  CHECK(in == &tok_sentinel);
  CHECK_EQ(fsw_status_of(f), FSW_SUSPENDED);
  CHECK(fsw_current() == NULL);
  CHECK_EQ(fsw_resume(f, &tok_in2, &out), FSW_OK);
  CHECK(out == &tok_in2);
  CHECK_EQ(fsw_destroy(f), FSW_OK);
}

static void *destroy_self_body(void *arg, void *in) {
  (void)arg;
  (void)in;
  misuse_err = fsw_destroy(fsw_current());
  CHECK_EQ(fsw_status_of(fsw_current()), FSW_RUNNING);
  CHECK_EQ(fsw_yield(&tok_out1, NULL), FSW_OK);
  return &tok_ret;
}

/* A fiber destroying itself gets FSW_EBUSY and is kept: it yields, resumes
 * and finishes, and is destroyed afterwards. */
static void destroy_of_running_fiber_fails_ebusy(void) {
  fsw_fiber *f = NULL;
  void *out = NULL;
  misuse_err = FSW_OK;
  CHECK_EQ(fsw_create(&f, destroy_self_body, NULL, FSW_STACK_DEFAULT), FSW_OK);
  if (f == NULL) return;
  CHECK_EQ(fsw_resume(f, NULL, &out), FSW_OK);
  CHECK_EQ(misuse_err, FSW_EBUSY);
  CHECK(out == &tok_out1);
  CHECK_EQ(fsw_status_of(f), FSW_SUSPENDED);
  CHECK_EQ(fsw_resume(f, NULL, &out), FSW_OK);
  CHECK(out == &tok_ret);
  CHECK_EQ(fsw_destroy(f), FSW_OK);
}

static void *destroy_resumer_body(void *arg, void *in) {
  (void)arg;
  (void)in;
  misuse_err = fsw_destroy(pair_a);
  CHECK_EQ(fsw_status_of(pair_a), FSW_NORMAL);
  CHECK_EQ(fsw_yield(&tok_out2, NULL), FSW_OK);
  return &tok_ret;
}

/* B destroying its resumer A (which is normal) gets FSW_EBUSY; A is kept and
 * both finish normally. */
static void destroy_of_normal_fiber_fails_ebusy(void) {
  void *out = NULL;
  pair_a = pair_b = NULL;
  misuse_err = FSW_OK;
  CHECK_EQ(fsw_create(&pair_a, resume_pair_b_body, NULL, FSW_STACK_DEFAULT), FSW_OK);
  CHECK_EQ(fsw_create(&pair_b, destroy_resumer_body, NULL, FSW_STACK_DEFAULT), FSW_OK);
  if (pair_a == NULL || pair_b == NULL) return;
  CHECK_EQ(fsw_resume(pair_a, NULL, &out), FSW_OK);
  CHECK(out == &tok_out1);
  CHECK_EQ(misuse_err, FSW_EBUSY);
  CHECK_EQ(fsw_resume(pair_a, NULL, &out), FSW_OK);
  CHECK(out == &tok_ret);
  CHECK_EQ(fsw_status_of(pair_a), FSW_DEAD);
  CHECK_EQ(fsw_status_of(pair_b), FSW_DEAD);
  CHECK_EQ(fsw_destroy(pair_a), FSW_OK);
  CHECK_EQ(fsw_destroy(pair_b), FSW_OK);
}

/* Create with `size`, expect `want`, and on failure expect *out == NULL. */
static void check_create_size(size_t size, fsw_err want) {
  fsw_fiber *f = (fsw_fiber *)&tok_sentinel;
  fsw_err e = fsw_create(&f, return_arg, NULL, size);
  CHECK_EQ(e, want);
  if (e != FSW_OK) CHECK(f == NULL);
  else CHECK_EQ(fsw_destroy(f), FSW_OK);
}

/* Size 0, sizes below FSW_STACK_MIN and above FSW_STACK_MAX each get their
 * own code and *out = NULL; afterwards creation still works. */
static void create_rejects_bad_stack_sizes(void) {
  fsw_fiber *f = NULL;
  void *out = NULL;
  check_create_size(0, FSW_ESTACKZERO);
  check_create_size(1, FSW_ESTACKSMALL);
  check_create_size(4096, FSW_ESTACKSMALL);
  check_create_size(FSW_STACK_MIN - 1, FSW_ESTACKSMALL);
  check_create_size(FSW_STACK_MAX + 1, FSW_ESTACKLARGE);
  check_create_size(SIZE_MAX, FSW_ESTACKLARGE);
  check_create_size(SIZE_MAX - 4095, FSW_ESTACKLARGE); /* must not wrap when rounded */
  check_create_size(FSW_STACK_MIN, FSW_OK);
  CHECK_EQ(fsw_create(&f, return_arg, &tok_ret, FSW_STACK_DEFAULT), FSW_OK);
  if (f == NULL) return;
  CHECK_EQ(fsw_resume(f, NULL, &out), FSW_OK);
  CHECK(out == &tok_ret);
  CHECK_EQ(fsw_destroy(f), FSW_OK);
}

/* The largest legal size is not rejected as too large (it may still fail
 * for lack of memory, which is a different code). */
static void create_accepts_stack_max(void) {
  fsw_fiber *f = (fsw_fiber *)&tok_sentinel;
  fsw_err e = fsw_create(&f, return_arg, NULL, FSW_STACK_MAX);
  CHECK(e == FSW_OK || e == FSW_ENOMEM);
  if (e == FSW_OK) {
    CHECK_EQ(fsw_stack_size(f), FSW_STACK_MAX);
    CHECK_EQ(fsw_destroy(f), FSW_OK);
  } else {
    CHECK(f == NULL);
  }
  fsw_pool_drain(); /* do not keep a gigabyte of address space around */
}

/* A NULL out pointer or a NULL entry function is FSW_EINVAL; *out is NULL. */
static void create_rejects_null_arguments(void) {
  fsw_fiber *f = (fsw_fiber *)&tok_sentinel;
  size_t before;
  fsw_pool_drain();
  before = fsw_pool_count();
  CHECK_EQ(fsw_create(NULL, return_arg, NULL, FSW_STACK_DEFAULT), FSW_EINVAL);
  CHECK_EQ(fsw_create(&f, NULL, NULL, FSW_STACK_DEFAULT), FSW_EINVAL);
  CHECK(f == NULL);
  CHECK_EQ(fsw_pool_count(), before); /* nothing was taken or given */
  f = NULL;
  CHECK_EQ(fsw_create(&f, return_arg, NULL, FSW_STACK_DEFAULT), FSW_OK);
  CHECK_EQ(fsw_destroy(f), FSW_OK);
}

/* -------------------------------------------------------------- strerror */

/* Every code has its own non-empty lowercase message; codes out of range
 * still get a string. */
static void strerror_names_every_code_distinctly(void) {
  int i, j;
  for (i = 0; i < FSW_ERR_COUNT; i++) {
    const char *s = fsw_strerror((fsw_err)i);
    CHECK(s != NULL);
    if (s == NULL) continue;
    CHECK(s[0] != '\0');
    CHECK(!isupper((unsigned char)s[0]));
    for (j = 0; j < i; j++) {
      const char *t = fsw_strerror((fsw_err)j);
      if (t != NULL && strcmp(s, t) == 0) {
        fprintf(stderr, "  codes %d and %d share message \"%s\"\n", j, i, s);
        CHECK(strcmp(s, t) != 0);
      }
    }
  }
  CHECK(fsw_strerror(FSW_ERR_COUNT) != NULL);
  CHECK(fsw_strerror((fsw_err)(FSW_ERR_COUNT + 100)) != NULL);
  CHECK(fsw_strerror((fsw_err)-1) != NULL);
}

/* --------------------------------------------------------- backend, guard */

/* fsw_backend names one of the two backends; off x86-64 it is ucontext. */
static void backend_is_named(void) {
  const char *b = fsw_backend();
  CHECK(b != NULL);
  if (b == NULL) return;
  CHECK(strcmp(b, "x86_64-sysv") == 0 || strcmp(b, "ucontext") == 0);
#if !defined(__x86_64__)
  CHECK(strcmp(b, "ucontext") == 0);
#endif
  printf("# backend: %s\n", b);
}

/* fsw_guard_kind names one of the two guard mechanisms. */
static void guard_kind_is_named(void) {
  const char *g = fsw_guard_kind();
  CHECK(g != NULL);
  if (g == NULL) return;
  CHECK(strcmp(g, "madvise") == 0 || strcmp(g, "mprotect") == 0);
  printf("# guard kind: %s\n", g);
}

/* ------------------------------------------------------------ stack size */

/* The usable size is the request rounded up to whole pages, no more. */
static void stack_size_is_request_rounded_to_pages(void) {
  static const size_t asks[] = {FSW_STACK_MIN, FSW_STACK_MIN + 1, 100000,
                                FSW_STACK_DEFAULT, FSW_STACK_DEFAULT + 1};
  size_t pg = page_size(), i;
  for (i = 0; i < sizeof asks / sizeof asks[0]; i++) {
    fsw_fiber *f = NULL;
    CHECK_EQ(fsw_create(&f, return_arg, NULL, asks[i]), FSW_OK);
    if (f == NULL) continue;
    CHECK_EQ(fsw_stack_size(f), round_up(asks[i], pg));
    CHECK_EQ(fsw_stack_size(f) % pg, 0);
    CHECK(fsw_stack_size(f) >= asks[i]);
    CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
    CHECK_EQ(fsw_stack_size(f), round_up(asks[i], pg)); /* does not change */
    CHECK_EQ(fsw_destroy(f), FSW_OK);
  }
  fsw_pool_drain();
}

static uintptr_t frame_seen;

static void *record_frame_body(void *arg, void *in) {
  (void)arg;
  (void)in;
  frame_seen = (uintptr_t)__builtin_frame_address(0);
  fsw_yield(NULL, NULL);
  frame_seen = (uintptr_t)__builtin_frame_address(0);
  return NULL;
}

/* fsw_stack_guard names a page-aligned page right below the usable stack:
 * the fiber's frames lie in the stack_size bytes above it; NULL for NULL. */
static void stack_guard_is_page_below_usable_stack(void) {
  static const size_t asks[] = {FSW_STACK_MIN, 64 * KIB + 1, FSW_STACK_DEFAULT};
  size_t pg = page_size(), i;
  CHECK(fsw_stack_guard(NULL) == NULL);
  for (i = 0; i < sizeof asks / sizeof asks[0]; i++) {
    fsw_fiber *f = NULL;
    uintptr_t guard, lo, hi;
    CHECK_EQ(fsw_create(&f, record_frame_body, NULL, asks[i]), FSW_OK);
    if (f == NULL) continue;
    guard = to_num(fsw_stack_guard(f));
    CHECK(guard != 0);
    CHECK_EQ(guard % pg, 0);
    lo = guard + pg;
    hi = lo + fsw_stack_size(f);
    frame_seen = 0;
    CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
    CHECK(frame_seen >= lo && frame_seen < hi);
    CHECK(to_num(fsw_stack_guard(f)) == guard); /* stable while alive */
    frame_seen = 0;
    CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
    CHECK(frame_seen >= lo && frame_seen < hi);
    CHECK_EQ(fsw_destroy(f), FSW_OK);
  }
}

/* ------------------------------------------------------- high-water mark */

/* Write `n` (> 0) nonzero bytes onto the current stack; returns one of them. */
static unsigned fill_stack(size_t n) {
  volatile unsigned char buf[n];
  size_t i;
  for (i = 0; i < n; i++) buf[i] = 0x5a;
  return buf[0];
}

/* Body: fill `arg` bytes of stack, yield, yield again from shallow depth. */
static void *fill_then_yield(void *arg, void *in) {
  (void)in;
  if (to_num(arg) > 0 && fill_stack(to_num(arg)) != 0x5a) return NULL;
  fsw_yield(NULL, NULL);
  fsw_yield(NULL, NULL);
  return NULL;
}

/* A fiber that touched 100 KiB of a 256 KiB stack reports at least that much
 * and no more than the stack; the mark stays after it returns to shallow
 * depth; it counts whole words. */
static void stack_used_reports_deep_use(void) {
  fsw_fiber *f = NULL;
  size_t used;
  fsw_pool_drain();
  CHECK_EQ(fsw_create(&f, fill_then_yield, to_ptr(100 * KIB), 256 * KIB), FSW_OK);
  if (f == NULL) return;
  CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
  used = fsw_stack_used(f);
  CHECK(used >= 100 * KIB);
  CHECK(used <= fsw_stack_size(f));
  CHECK_EQ(used % sizeof(void *), 0);
  CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
  CHECK(fsw_stack_used(f) >= used); /* a high-water mark never drops */
  CHECK(fsw_stack_used(f) <= fsw_stack_size(f));
  CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
  CHECK_EQ(fsw_destroy(f), FSW_OK);
}

/* A fiber that does almost nothing reports a small, nonzero use. */
static void stack_used_is_small_for_idle_fiber(void) {
  fsw_fiber *f = NULL;
  size_t used;
  fsw_pool_drain(); /* a fresh mapping, not a reused stack */
  CHECK_EQ(fsw_create(&f, fill_then_yield, to_ptr(0), 256 * KIB), FSW_OK);
  if (f == NULL) return;
  CHECK(fsw_stack_used(f) < SMALL_USE); /* not started yet */
  CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
  used = fsw_stack_used(f);
  CHECK(used > 0); /* it is suspended with frames on its stack */
  CHECK(used < SMALL_USE);
  CHECK_EQ(used % sizeof(void *), 0);
  CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
  CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
  CHECK_EQ(fsw_destroy(f), FSW_OK);
}

/* A stack that reached 200 KiB goes back to the pool trimmed: the next fiber
 * that reuses it reports a small use again (its deep pages read as zero; the
 * top few pages may be kept as they were, hence the looser bound). */
static void pooled_stack_is_trimmed_before_reuse(void) {
  fsw_fiber *f = NULL, *g = NULL;
  size_t used;
  fsw_pool_drain();
  CHECK_EQ(fsw_create(&f, fill_then_yield, to_ptr(200 * KIB), 256 * KIB), FSW_OK);
  if (f == NULL) return;
  CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
  CHECK(fsw_stack_used(f) >= 200 * KIB);
  CHECK_EQ(fsw_destroy(f), FSW_OK); /* suspended mid-body: abandoned */
  CHECK_EQ(fsw_pool_count(), 1);
  CHECK_EQ(fsw_create(&g, fill_then_yield, to_ptr(0), 256 * KIB), FSW_OK);
  if (g == NULL) return;
  CHECK_EQ(fsw_pool_count(), 0); /* g took the trimmed stack */
  CHECK(fsw_stack_used(g) <= TRIMMED_USE);
  CHECK_EQ(fsw_resume(g, NULL, NULL), FSW_OK);
  used = fsw_stack_used(g);
  CHECK(used > 0);
  CHECK(used <= TRIMMED_USE);
  CHECK_EQ(fsw_destroy(g), FSW_OK);
  fsw_pool_drain();
}

/* ------------------------------------------------------------------- pool */

#define POOL_N 16

/* Destroyed fibers' stacks are pooled one by one, creation takes from the
 * pool, and drain gives them all back and reports how many. */
static void pool_keeps_destroyed_stacks_and_reuses_them(void) {
  fsw_fiber *f[POOL_N], *g = NULL;
  int i;
  fsw_pool_drain();
  CHECK_EQ(fsw_pool_count(), 0);
  for (i = 0; i < POOL_N; i++) {
    f[i] = NULL;
    CHECK_EQ(fsw_create(&f[i], return_arg, NULL, FSW_STACK_DEFAULT), FSW_OK);
    if (f[i] == NULL) return;
  }
  CHECK_EQ(fsw_pool_count(), 0);
  for (i = 0; i < POOL_N; i++) {
    if (i % 2 == 0) CHECK_EQ(fsw_resume(f[i], NULL, NULL), FSW_OK); /* some dead, some new */
    CHECK_EQ(fsw_destroy(f[i]), FSW_OK);
    CHECK_EQ(fsw_pool_count(), (size_t)i + 1);
  }
  CHECK_EQ(fsw_create(&g, return_arg, &tok_ret, FSW_STACK_DEFAULT), FSW_OK);
  CHECK_EQ(fsw_pool_count(), POOL_N - 1);
  if (g != NULL) {
    void *out = NULL;
    CHECK_EQ(fsw_resume(g, NULL, &out), FSW_OK); /* the reused stack works */
    CHECK(out == &tok_ret);
    CHECK_EQ(fsw_destroy(g), FSW_OK);
  }
  CHECK_EQ(fsw_pool_count(), POOL_N);
  CHECK_EQ(fsw_pool_drain(), POOL_N);
  CHECK_EQ(fsw_pool_count(), 0);
  CHECK_EQ(fsw_pool_drain(), 0);
}

/* ---------------------------------------------------------------- reserve */

#define RESERVE_N 3000 /* well past the pool, the spill and a few regions */

static long vm_size_kib(void); /* VmSize of /proc/self/status, below */

/* Sanitizers map memory of their own for each fiber (TSan's contexts,
 * ASan's fake stacks) and valgrind shows its own view of the mappings:
 * mapping counts and VmSize say something about fiberswap only in a
 * native run. */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define MAPS_MEANINGFUL 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define MAPS_MEANINGFUL 0
#endif
#endif
#ifndef MAPS_MEANINGFUL
#define MAPS_MEANINGFUL 1
#endif

/* Do this process's mappings and address space show fiberswap's own?  Not
 * under a sanitizer or valgrind. */
static int measured(void) {
#if FSW_TEST_VALGRIND
  if (RUNNING_ON_VALGRIND) return 0;
#endif
  return MAPS_MEANINGFUL;
}

/* Lines of /proc/self/maps: this process's mappings; -1 if unreadable,
 * 0 where not measured(). */
static long count_maps(void) {
  FILE *f;
  long n = 0;
  int c;
  if (!measured()) return 0;
  f = fopen("/proc/self/maps", "r");
  if (f == NULL) return -1;
  while ((c = getc(f)) != EOF) n += c == '\n';
  fclose(f);
  return n;
}

static void *reserve_body(void *arg, void *in) {
  void *next = NULL;
  (void)in;
  if (fsw_yield(arg, &next) != FSW_OK) return NULL;
  return to_ptr(to_num(next) + to_num(arg));
}

/* Start every `step`-th fiber of f[0..n) from `first` and leave them
 * suspended; count what went wrong. */
static size_t reserve_size = FSW_STACK_MIN; /* their stacks' size */

static int start_reserve_fibers(fsw_fiber **f, size_t n, size_t first, size_t step) {
  int bad = 0;
  for (size_t i = first; i < n; i += step) {
    void *out = NULL;
    f[i] = NULL;
    if (fsw_create(&f[i], reserve_body, to_ptr(i), reserve_size) != FSW_OK) return bad + 1;
    if (fsw_resume(f[i], NULL, &out) != FSW_OK || to_num(out) != i) bad++;
  }
  return bad;
}

/* Finish and destroy every `step`-th fiber of f[0..n) starting at `first`. */
static int finish_reserve_fibers(fsw_fiber **f, size_t n, size_t first, size_t step) {
  int bad = 0;
  for (size_t i = first; i < n; i += step) {
    void *out = NULL;
    if (fsw_resume(f[i], to_ptr(1000000), &out) != FSW_OK || to_num(out) != 1000000 + i) bad++;
    if (fsw_destroy(f[i]) != FSW_OK) bad++;
    f[i] = NULL;
  }
  return bad;
}

/* Stacks are carved from regions: fibers made one after another get
 * adjacent slots, guard page above stack above guard page; with
 * MADV_GUARD_INSTALL guards 3,000 suspended fibers add a few dozen
 * mappings at most, not one or two per stack (the mprotect fallback adds
 * two per stack).  Stacks given back in any order are reused before any
 * new region is mapped, and once all are back the regions are unmapped. */
static void stacks_come_from_regions_and_go_back(void) {
  fsw_fiber **f = calloc(RESERVE_N, sizeof *f);
  size_t slot = FSW_STACK_MIN + page_size();
  long m0, m1, m2, m3, vm0, vm1;
  int bad, adjacent = 0;
  CHECK(f != NULL);
  if (f == NULL) return;
  fsw_pool_drain();
  m0 = count_maps();
  vm0 = vm_size_kib();
  bad = start_reserve_fibers(f, RESERVE_N, 0, 1);
  CHECK_EQ(bad, 0);
  m1 = count_maps();
  vm1 = vm_size_kib();
  printf("# %d suspended fibers added %ld mappings (%s guards)\n", RESERVE_N, m1 - m0,
         fsw_guard_kind());
  CHECK(m1 >= m0);
  for (size_t i = 0; bad == 0 && i + 1 < RESERVE_N; i++)
    adjacent += (const char *)fsw_stack_guard(f[i + 1]) -
                    (const char *)fsw_stack_guard(f[i]) == (ptrdiff_t)slot;
  printf("# %d of %d fibers made in a row sit in the next slot up\n", adjacent,
         RESERVE_N - 1);
  CHECK(adjacent >= RESERVE_N * 9 / 10);
  if (strcmp(fsw_guard_kind(), "madvise") == 0)
    CHECK(m1 - m0 <= RESERVE_N / 64 + 16);
  else
    CHECK(m1 - m0 >= 2 * RESERVE_N);
  /* Give back every other one (pool, spill and reserve all take some),
   * then start as many again: they take the freed stacks first. */
  CHECK_EQ(finish_reserve_fibers(f, RESERVE_N, 1, 2), 0);
  CHECK_EQ(start_reserve_fibers(f, RESERVE_N, 1, 2), 0);
  m2 = count_maps();
  CHECK(m2 <= m1 + 2); /* the holes were refilled: no new region */
  CHECK(!measured() || vm_size_kib() <= vm1 + 1024);
  CHECK_EQ(finish_reserve_fibers(f, RESERVE_N, 0, 1), 0);
  CHECK_EQ(fsw_pool_drain(), 256);
  m3 = count_maps();
  printf("# mappings: %ld before, %ld with %d fibers, %ld refilled, %ld after\n", m0, m1,
         RESERVE_N, m2, m3);
  CHECK(m3 <= m0 + 2);
  /* Every region was unmapped: the address space went back too. */
  if (measured()) {
    CHECK(vm0 > 0 && vm1 - vm0 >= (long)(RESERVE_N * 20));
    CHECK(vm_size_kib() - vm0 < (vm1 - vm0) / 8);
  }
  free(f);
}

/* Another thread gives this thread's stacks back while this one takes and
 * gives its own: the reserve is shared, under a lock (TSan checks). */
struct giver {
  fsw_fiber **f;
  size_t n;
  int bad;
};

static void *give_back_thread(void *p) {
  struct giver *g = p;
  g->bad = finish_reserve_fibers(g->f, g->n, 0, 1);
  return NULL; /* thread exit drains this thread's pool */
}

static void stacks_given_back_on_another_thread(void) {
  fsw_fiber **f = calloc(2 * RESERVE_N, sizeof *f);
  struct giver g;
  pthread_t th;
  long m0, m1, vm0, vm1;
  CHECK(f != NULL);
  if (f == NULL) return;
  fsw_pool_drain();
  reserve_size = 256 * KIB; /* 3,000 take 780 MiB of address space */
  m0 = count_maps();
  vm0 = vm_size_kib();
  CHECK_EQ(start_reserve_fibers(f, RESERVE_N, 0, 1), 0);
  g.f = f;
  g.n = RESERVE_N;
  g.bad = 0;
  CHECK_EQ(pthread_create(&th, NULL, give_back_thread, &g), 0);
  for (int round = 0; round < 4; round++) { /* meanwhile, churn here */
    CHECK_EQ(start_reserve_fibers(f, 2 * RESERVE_N, RESERVE_N, 1), 0);
    CHECK_EQ(finish_reserve_fibers(f, 2 * RESERVE_N, RESERVE_N, 1), 0);
  }
  pthread_join(th, NULL);
  CHECK_EQ(g.bad, 0);
  fsw_pool_drain();
  m1 = count_maps();
  vm1 = vm_size_kib();
  printf("# mappings: %ld before, %ld after; VmSize %+ld KiB (glibc keeps the "
         "thread's stack)\n", m0, m1, vm1 - vm0);
  CHECK(m1 <= m0 + 8); /* + glibc's cached thread stack and arena */
  /* The giver's pool was drained at its exit: 256 stacks left there would
   * hold 65 MiB and their regions more. */
  CHECK(!measured() || (vm0 > 0 && vm1 - vm0 < 32 * 1024));
  reserve_size = FSW_STACK_MIN;
  free(f);
}

/* ----------------------------------------------------- 10,000 fibers alive */

#define MANY 10000

static void *many_body(void *arg, void *in) {
  void *next = NULL;
  uintptr_t id = to_num(arg);
  if (fsw_yield(to_ptr(to_num(in) + id), &next) != FSW_OK) return NULL;
  return to_ptr(to_num(next) + id);
}

/* 10,000 fibers can be suspended mid-body at once and each finishes with its
 * own values; the pool keeps only a bounded number of their stacks. */
static void ten_thousand_fibers_alive_at_once(void) {
  fsw_fiber **f = calloc(MANY, sizeof *f);
  int created = 0, bad = 0;
  uintptr_t i;
  CHECK(f != NULL);
  if (f == NULL) return;
  fsw_pool_drain();
  for (i = 0; i < MANY; i++) {
    void *out = NULL;
    fsw_err e = fsw_create(&f[i], many_body, to_ptr(i), FSW_STACK_MIN);
    if (e != FSW_OK) {
      fprintf(stderr, "  create #%lu: %s\n", (unsigned long)i, fsw_strerror(e));
      break;
    }
    created++;
    if (fsw_resume(f[i], to_ptr(2 * i + 1), &out) != FSW_OK) bad++;
    if (to_num(out) != 3 * i + 1) bad++;
    if (fsw_status_of(f[i]) != FSW_SUSPENDED) bad++;
  }
  CHECK_EQ(created, MANY);
  CHECK_EQ(bad, 0);
  for (i = (uintptr_t)created; i-- > 0;) { /* finish in reverse order */
    void *out = NULL;
    if (fsw_resume(f[i], to_ptr(7 * i), &out) != FSW_OK) bad++;
    if (to_num(out) != 8 * i) bad++;
    if (fsw_status_of(f[i]) != FSW_DEAD) bad++;
    if (fsw_destroy(f[i]) != FSW_OK) bad++;
  }
  CHECK_EQ(bad, 0);
  CHECK(fsw_pool_count() >= 16);
  CHECK(fsw_pool_count() < MANY); /* the pool is capped */
  CHECK(fsw_pool_drain() > 0);
  CHECK_EQ(fsw_pool_count(), 0);
  free(f);
}

/* ------------------------------------------------------------ deep yield */

#define DEPTH 100
#define BOTTOM_YIELDS 5

/* Recurse to DEPTH with a live frame at every level, yield BOTTOM_YIELDS
 * times at the bottom, and sum what comes back plus every level's byte. */
static uintptr_t descend(int depth, volatile unsigned char *above) {
  volatile unsigned char pad[48];
  uintptr_t sum = 0;
  pad[0] = (unsigned char)depth;
  pad[47] = (unsigned char)(depth + 1);
  if (depth == DEPTH) {
    int k;
    for (k = 0; k < BOTTOM_YIELDS; k++) {
      void *in = NULL;
      if (fsw_yield(to_ptr((uintptr_t)k), &in) != FSW_OK) return 0;
      sum += to_num(in);
    }
  } else {
    sum = descend(depth + 1, pad);
  }
  return sum + pad[0] + pad[47] + (above ? above[0] : 0);
}

static void *deep_body(void *arg, void *in) {
  (void)arg;
  (void)in;
  return to_ptr(descend(1, NULL));
}

/* A fiber 100 calls deep yields several times from the bottom and every
 * frame on the way down is intact when it unwinds. */
static void yield_from_deep_call_depth(void) {
  fsw_fiber *f = NULL;
  void *out = NULL;
  uintptr_t want = 0;
  int k, d;
  CHECK_EQ(fsw_create(&f, deep_body, NULL, FSW_STACK_DEFAULT), FSW_OK);
  if (f == NULL) return;
  CHECK_EQ(fsw_resume(f, NULL, &out), FSW_OK);
  for (k = 0; k < BOTTOM_YIELDS; k++) {
    CHECK_EQ(to_num(out), k);
    CHECK_EQ(fsw_status_of(f), FSW_SUSPENDED);
    CHECK_EQ(fsw_resume(f, to_ptr(1000u * (uintptr_t)(k + 1)), &out), FSW_OK);
    want += 1000u * (uintptr_t)(k + 1);
  }
  for (d = 1; d <= DEPTH; d++) want += (uintptr_t)d + (uintptr_t)(d + 1) + (d > 1 ? (uintptr_t)(d - 1) : 0);
  CHECK_EQ(fsw_status_of(f), FSW_DEAD);
  CHECK_EQ(to_num(out), want);
  CHECK_EQ(fsw_destroy(f), FSW_OK);
}

/* ------------------------------------------------- callee-saved registers */

#define CHURN_STEPS 1000

/* One step of a recurrence that keeps six values live at once. */
#define CHURN(a, b, c, d, e, g, v)                                         \
  do {                                                                     \
    a += (v);                                                              \
    b ^= a;                                                                \
    c += b * 3u;                                                           \
    d = d * 5u + c;                                                        \
    e += d ^ a;                                                            \
    g -= e;                                                                \
  } while (0)
#define CHURN_SEED(x, a, b, c, d, e, g)                                    \
  do {                                                                     \
    a = (x);                                                               \
    b = a * 3u + 1u;                                                       \
    c = a ^ 0x5555u;                                                       \
    d = a + 7u;                                                            \
    e = a * a;                                                             \
    g = ~a;                                                                \
  } while (0)

static void *churn_body(void *arg, void *in) {
  uintptr_t a, b, c, d, e, g, v = to_num(in);
  int i;
  CHURN_SEED(to_num(arg), a, b, c, d, e, g);
  for (i = 0; i < CHURN_STEPS; i++) {
    void *next = NULL;
    CHURN(a, b, c, d, e, g, v);
    if (fsw_yield(to_ptr(a ^ b ^ c ^ d ^ e ^ g), &next) != FSW_OK) return NULL;
    v = to_num(next);
  }
  return to_ptr(a + b + c + d + e + g);
}

/* The same recurrence with no switches, to check the interleaved copies. */
static uintptr_t churn_reference(uintptr_t seed, uintptr_t v0) {
  uintptr_t a, b, c, d, e, g, v = v0;
  int i;
  CHURN_SEED(seed, a, b, c, d, e, g);
  for (i = 0; i < CHURN_STEPS; i++) {
    CHURN(a, b, c, d, e, g, v);
    v = (uintptr_t)i * 7u + 11u;
  }
  return a + b + c + d + e + g;
}

/* Values the compiler keeps in callee-saved registers survive every switch,
 * on the fiber's side and on the resumer's. */
static void callee_saved_values_survive_switches(void) {
  const uintptr_t seed = 12345, v0 = 99;
  uintptr_t a, b, c, d, e, g, v = v0;
  fsw_fiber *f = NULL;
  void *out = NULL;
  int i, bad = 0;
  CHECK_EQ(fsw_create(&f, churn_body, to_ptr(seed), FSW_STACK_DEFAULT), FSW_OK);
  if (f == NULL) return;
  CHURN_SEED(seed, a, b, c, d, e, g);
  for (i = 0; i < CHURN_STEPS; i++) {
    CHURN(a, b, c, d, e, g, v);
    if (fsw_resume(f, to_ptr(v), &out) != FSW_OK) bad++;
    if (to_num(out) != (a ^ b ^ c ^ d ^ e ^ g)) bad++;
    v = (uintptr_t)i * 7u + 11u;
  }
  CHECK_EQ(bad, 0);
  CHECK_EQ(fsw_resume(f, to_ptr(v), &out), FSW_OK);
  CHECK_EQ(fsw_status_of(f), FSW_DEAD);
  CHECK(to_num(out) == churn_reference(seed, v0));
  CHECK(a + b + c + d + e + g == churn_reference(seed, v0));
  CHECK_EQ(fsw_destroy(f), FSW_OK);
}

/* -------------------------------------------------------- floating point */

/* Divisions computed at run time, so that the current rounding mode applies.
 * 1/3 rounds down to nearest and 1/10 up, so with -1/10 the four modes give
 * four different triples. */
struct quotients {
  double third, tenth, minus_tenth;
};

static struct quotients divide(void) {
  volatile double one = 1.0, three = 3.0, ten = 10.0;
  struct quotients q;
  q.third = one / three;
  q.tenth = one / ten;
  q.minus_tenth = -one / ten;
  return q;
}

static int same_quotients(struct quotients a, struct quotients b) {
  return a.third == b.third && a.tenth == b.tenth && a.minus_tenth == b.minus_tenth;
}

static struct quotients q_up, q_near, q_down, q_zero;
static int arith_rounds; /* arithmetic here honours the rounding mode */

/* Divide in each mode on the thread's own stack, with no switch. */
static void measure_quotients(void) {
  int saved = fegetround();
  fesetround(FE_UPWARD);
  q_up = divide();
  fesetround(FE_TONEAREST);
  q_near = divide();
  fesetround(FE_DOWNWARD);
  q_down = divide();
  fesetround(FE_TOWARDZERO);
  q_zero = divide();
  fesetround(saved);
  arith_rounds = !same_quotients(q_up, q_near) && !same_quotients(q_up, q_down) &&
                 !same_quotients(q_up, q_zero) && !same_quotients(q_near, q_down) &&
                 !same_quotients(q_near, q_zero) && !same_quotients(q_down, q_zero);
  if (!arith_rounds) /* valgrind, for one, rounds SSE to nearest always */
    printf("# arithmetic ignores the rounding mode here; checking the mode only\n");
}

#if defined(__x86_64__)
static unsigned x87_cw(void) {
  unsigned short cw;
  __asm__ volatile("fnstcw %0" : "=m"(cw));
  return cw;
}
static void set_x87_cw(unsigned cw) {
  unsigned short v = (unsigned short)cw;
  __asm__ volatile("fldcw %0" : : "m"(v));
}
static unsigned mxcsr(void) {
  unsigned v;
  __asm__ volatile("stmxcsr %0" : "=m"(v));
  return v;
}
static void set_mxcsr(unsigned v) { __asm__ volatile("ldmxcsr %0" : : "m"(v)); }

/* The rounding-control field of MXCSR and of the x87 control word agree
 * with `mode` (FE_* values are the x87 RC bits on x86-64). */
static void check_hw_rounding(int mode) {
  CHECK_EQ(x87_cw() & 0xc00u, (unsigned)mode);
  CHECK_EQ((mxcsr() >> 3) & 0xc00u, (unsigned)mode);
}
#else
static void check_hw_rounding(int mode) { (void)mode; }
#endif

/* The current rounding mode is `mode` by fegetround, by arithmetic (where
 * the machine honours it) and, on x86-64, in both MXCSR and the x87 control
 * word. */
static void check_rounding(int mode, const struct quotients *want) {
  CHECK_EQ(fegetround(), mode);
  if (arith_rounds) CHECK(same_quotients(divide(), *want));
  check_hw_rounding(mode);
}

static void *upward_body(void *arg, void *in) {
  (void)arg;
  (void)in;
  CHECK_EQ(fesetround(FE_UPWARD), 0);
  check_rounding(FE_UPWARD, &q_up);
  fsw_yield(NULL, NULL);
  check_rounding(FE_UPWARD, &q_up);
  fsw_yield(NULL, NULL);
  check_rounding(FE_UPWARD, &q_up);
  return NULL;
}

/* A fiber that switches to FE_UPWARD and yields leaves its resumer rounding
 * to nearest, and finds FE_UPWARD again when resumed. */
static void fiber_rounding_mode_does_not_leak_to_resumer(void) {
  fsw_fiber *f = NULL;
  measure_quotients();
  fesetround(FE_TONEAREST);
  CHECK_EQ(fsw_create(&f, upward_body, NULL, FSW_STACK_DEFAULT), FSW_OK);
  if (f == NULL) return;
  CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
  check_rounding(FE_TONEAREST, &q_near);
  CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
  check_rounding(FE_TONEAREST, &q_near);
  CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
  CHECK_EQ(fsw_status_of(f), FSW_DEAD);
  check_rounding(FE_TONEAREST, &q_near);
  CHECK_EQ(fsw_destroy(f), FSW_OK);
  fesetround(FE_TONEAREST);
}

static void *toward_zero_body(void *arg, void *in) {
  (void)arg;
  (void)in;
  CHECK_EQ(fesetround(FE_TOWARDZERO), 0);
  fsw_yield(NULL, NULL);
  check_rounding(FE_TOWARDZERO, &q_zero);
  fsw_yield(NULL, NULL);
  check_rounding(FE_TOWARDZERO, &q_zero);
  return NULL;
}

/* The resumer changing its rounding mode between resumes does not change the
 * fiber's, and the fiber does not undo the resumer's change. */
static void resumer_rounding_mode_does_not_leak_into_fiber(void) {
  fsw_fiber *f = NULL;
  measure_quotients();
  fesetround(FE_TONEAREST);
  CHECK_EQ(fsw_create(&f, toward_zero_body, NULL, FSW_STACK_DEFAULT), FSW_OK);
  if (f == NULL) return;
  CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
  check_rounding(FE_TONEAREST, &q_near);
  fesetround(FE_DOWNWARD);
  CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
  check_rounding(FE_DOWNWARD, &q_down);
  fesetround(FE_UPWARD);
  CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
  check_rounding(FE_UPWARD, &q_up);
  CHECK_EQ(fsw_destroy(f), FSW_OK);
  fesetround(FE_TONEAREST);
}

#if defined(__x86_64__)
#define MXCSR_FTZ_DAZ 0x8040u
#define X87_PC_MASK 0x300u
#define X87_PC_DOUBLE 0x200u

static unsigned fiber_mxcsr, fiber_x87;
static int cw_settable; /* the machine keeps what was set (valgrind does not) */

static void *control_word_body(void *arg, void *in) {
  unsigned want_mxcsr = (mxcsr() | MXCSR_FTZ_DAZ) & 0xffc0u; /* control bits, not flags */
  unsigned want_x87 = (x87_cw() & ~X87_PC_MASK) | X87_PC_DOUBLE;
  (void)arg;
  (void)in;
  set_mxcsr(want_mxcsr);
  set_x87_cw(want_x87);
  fiber_mxcsr = mxcsr() & 0xffc0u;
  fiber_x87 = x87_cw();
  cw_settable = fiber_mxcsr == want_mxcsr && fiber_x87 == want_x87;
  if (!cw_settable) return NULL;
  fsw_yield(NULL, NULL);
  CHECK_EQ(mxcsr() & 0xffc0u, fiber_mxcsr);
  CHECK_EQ(x87_cw(), fiber_x87);
  fsw_yield(NULL, NULL);
  CHECK_EQ(mxcsr() & 0xffc0u, fiber_mxcsr);
  CHECK_EQ(x87_cw(), fiber_x87);
  return NULL;
}

/* The other callee-saved control bits are per fiber too: MXCSR's FTZ/DAZ and
 * the x87 precision control set in a fiber stay in that fiber. */
static void fpu_control_words_are_per_fiber_x86_64(void) {
  fsw_fiber *f = NULL;
  unsigned main_mxcsr = mxcsr() & 0xffc0u, main_x87 = x87_cw();
  CHECK_EQ(fsw_create(&f, control_word_body, NULL, FSW_STACK_DEFAULT), FSW_OK);
  if (f == NULL) return;
  CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
  if (!cw_settable) {
    printf("# FTZ/DAZ or x87 precision cannot be set here; skipped\n");
    CHECK_EQ(fsw_destroy(f), FSW_OK);
    set_mxcsr(main_mxcsr);
    set_x87_cw(main_x87);
    return;
  }
  CHECK(fiber_mxcsr != main_mxcsr); /* the fiber really changed them */
  CHECK(fiber_x87 != main_x87);
  CHECK_EQ(mxcsr() & 0xffc0u, main_mxcsr);
  CHECK_EQ(x87_cw(), main_x87);
  CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
  CHECK_EQ(mxcsr() & 0xffc0u, main_mxcsr);
  CHECK_EQ(x87_cw(), main_x87);
  CHECK_EQ(fsw_resume(f, NULL, NULL), FSW_OK);
  CHECK_EQ(mxcsr() & 0xffc0u, main_mxcsr);
  CHECK_EQ(x87_cw(), main_x87);
  CHECK_EQ(fsw_destroy(f), FSW_OK);
}
#endif

/* ----------------------------------------------------- child processes */

/* Fork; the child runs `fn` and exits with what it returns.  Returns the
 * wait status, or -1 if fork failed.  If `err` is non-NULL the child's
 * stderr is captured into it (NUL-terminated, truncated to `cap`). */
static int run_in_child(int (*fn)(void), char *err, size_t cap) {
  int fds[2] = {-1, -1}, status = 0;
  pid_t pid;
  if (err != NULL) {
    err[0] = '\0';
    if (pipe(fds) != 0) return -1;
  }
  fflush(stdout);
  fflush(stderr);
  pid = fork();
  if (pid < 0) {
    if (err != NULL) {
      close(fds[0]);
      close(fds[1]);
    }
    return -1;
  }
  if (pid == 0) {
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core); /* a deliberate crash leaves no core */
    if (err != NULL) {
      close(fds[0]);
      dup2(fds[1], STDERR_FILENO);
      close(fds[1]);
    }
    _exit(fn());
  }
  if (err != NULL) {
    size_t len = 0;
    ssize_t n;
    close(fds[1]);
    while (len < cap - 1 && (n = read(fds[0], err + len, cap - 1 - len)) > 0)
      len += (size_t)n;
    err[len] = '\0';
    close(fds[0]);
  }
  if (waitpid(pid, &status, 0) != pid) return -1;
  return status;
}

#if FSW_DIRECT
/* fsw__vtransfer (the Lua binding's internal switch) has no error return:
 * a call fsw_transfer would refuse prints the reason and aborts.  Child
 * exit codes: 10 the call returned, 11-12 setup failed. */
static int vtransfer_outside_child(void) {
  fsw__vtransfer(NULL, NULL, NULL);
  return 10;
}

static int vtransfer_dead_child(void) {
  fsw_fiber *f;
  if (fsw_create(&f, return_arg, NULL, FSW_STACK_MIN) != FSW_OK) return 11;
  if (fsw_resume(f, NULL, NULL) != FSW_OK) return 12;
  fsw__vtransfer(f, NULL, NULL);
  return 10;
}

static void vtransfer_misuse_aborts_with_its_reason(void) {
  static const struct {
    int (*child)(void);
    const char *reason;
  } cases[] = {
      {vtransfer_outside_child, "fsw__vtransfer: cannot yield from outside a fiber"},
      {vtransfer_dead_child, "fsw__vtransfer: cannot resume a dead fiber"},
  };
  size_t i;
  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char err[512];
    int status = run_in_child(cases[i].child, err, sizeof err);
    CHECK(status != -1);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    if (WIFEXITED(status)) fprintf(stderr, "  child exited with %d\n", WEXITSTATUS(status));
    CHECK(strstr(err, cases[i].reason) != NULL);
    if (strstr(err, cases[i].reason) == NULL) fprintf(stderr, "  child stderr: %s\n", err);
  }
}
#endif

/* Virtual size of this process in KiB from /proc/self/status, or -1. */
static long vm_size_kib(void) {
  char line[256];
  long kib = -1;
  FILE *fp = fopen("/proc/self/status", "r");
  if (fp == NULL) return -1;
  while (fgets(line, sizeof line, fp) != NULL)
    if (sscanf(line, "VmSize: %ld kB", &kib) == 1) break;
  fclose(fp);
  return kib;
}

#define HEADROOM_KIB (16L * 1024) /* room left under RLIMIT_AS */

/* Child: with the address space capped a little above its current size, a
 * big stack fails with FSW_ENOMEM/ENOMEM and *out NULL, repeatedly, without
 * leaking address space or pool entries; a small fiber still works. */
static int enomem_child(void) {
  struct rlimit lim;
  fsw_fiber *f = (fsw_fiber *)&tok_sentinel;
  void *out = NULL;
  long vm, vm_after_one, vm_after_many;
  int i;
  fsw_pool_drain();
  vm = vm_size_kib();
  if (vm <= 0) return 10;
  if (getrlimit(RLIMIT_AS, &lim) != 0) return 11;
  lim.rlim_cur = (rlim_t)(vm + HEADROOM_KIB) * 1024;
  if (setrlimit(RLIMIT_AS, &lim) != 0) return 11;
  errno = 0;
  if (fsw_create(&f, return_arg, NULL, FSW_STACK_MAX) != FSW_ENOMEM) return 12;
  if (errno != ENOMEM) return 13;
  if (f != NULL) return 14;
  vm_after_one = vm_size_kib();
  for (i = 0; i < 100; i++) {
    f = (fsw_fiber *)&tok_sentinel;
    errno = 0;
    if (fsw_create(&f, return_arg, NULL, 64 * MIB) != FSW_ENOMEM || errno != ENOMEM || f != NULL)
      return 15;
  }
  vm_after_many = vm_size_kib();
  if (vm_after_one < 0 || vm_after_many < 0) return 10;
  if (vm_after_many - vm_after_one > 256) return 16; /* failures leaked mappings */
  if (fsw_pool_count() != 0) return 17;
  f = NULL;
  if (fsw_create(&f, return_arg, &tok_ret, FSW_STACK_MIN) != FSW_OK || f == NULL) return 18;
  if (fsw_resume(f, NULL, &out) != FSW_OK || out != &tok_ret) return 19;
  if (fsw_destroy(f) != FSW_OK) return 20;
  return 0;
}

/* When mmap fails for lack of address space, fsw_create reports FSW_ENOMEM
 * with errno ENOMEM and leaves the process able to create fibers. */
static void create_reports_enomem_when_mmap_fails(void) {
  int status = run_in_child(enomem_child, NULL, 0);
  CHECK(status != -1);
  CHECK(WIFEXITED(status));
  if (WIFEXITED(status)) CHECK_EQ(WEXITSTATUS(status), 0);
  if (WIFSIGNALED(status)) fprintf(stderr, "  child killed by signal %d\n", WTERMSIG(status));
}

static volatile uintptr_t guard_lo, guard_hi; /* the guard page's bounds */
static volatile unsigned long overflow_limit = (unsigned long)-1;
static char alt_stack[64 * 1024];

/* Write `v` in hex to fd 2, async-signal-safely. */
static void put_hex(uintptr_t v) {
  char buf[2 + 2 * sizeof v];
  int i;
  ssize_t r;
  buf[0] = '0';
  buf[1] = 'x';
  for (i = 0; i < (int)(2 * sizeof v); i++)
    buf[2 + i] = "0123456789abcdef"[(v >> (4 * (2 * sizeof v - 1 - (size_t)i))) & 15];
  r = write(STDERR_FILENO, buf, sizeof buf);
  (void)r;
}

/* SIGSEGV handler (on the alternate stack): say whether the fault hit the
 * guard page, then fall back to the default action so the retried access
 * kills the process with SIGSEGV. */
static void on_segv(int sig, siginfo_t *si, void *uc) {
  static const char hit[] = "fsw-guard-hit\n", miss[] = "fsw-fault-elsewhere at ";
  uintptr_t a = (uintptr_t)si->si_addr;
  ssize_t r;
  (void)uc;
  if (a >= guard_lo && a < guard_hi) {
    r = write(STDERR_FILENO, hit, sizeof hit - 1);
  } else {
    r = write(STDERR_FILENO, miss, sizeof miss - 1);
    put_hex(a);
    r = write(STDERR_FILENO, "\n", 1);
  }
  (void)r;
  signal(sig, SIG_DFL);
}

/* Just before a child's deliberate fault: valgrind would report the access
 * itself as an error, which it is not here. */
static void fault_expected(void) {
#if FSW_TEST_VALGRIND
  VALGRIND_DISABLE_ERROR_REPORTING;
#endif
}

/* Install the test's own SIGSEGV handler on the alternate stack (in the
 * overflow-report tests, it is the handler fsw_catch_overflow chains to). */
static int install_test_handler(void) {
  stack_t ss;
  struct sigaction sa;
  ss.ss_sp = alt_stack;
  ss.ss_size = sizeof alt_stack;
  ss.ss_flags = 0;
  if (sigaltstack(&ss, NULL) != 0) return 0;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_segv;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  return sigaction(SIGSEGV, &sa, NULL) == 0;
}

/* Recurse without a useful bound, keeping every frame alive. */
static unsigned long overflow(unsigned long depth, volatile unsigned char *above) {
  volatile unsigned char pad[200];
  pad[0] = (unsigned char)depth;
  if (depth >= overflow_limit) return pad[0];
  return overflow(depth + 1, pad) + pad[0] + (above ? above[0] : 0);
}

/* Whether the byte at `addr` lies in a writable mapping of this process. */
static int writable_at(uintptr_t addr) {
  char line[512];
  int found = 0;
  FILE *fp = fopen("/proc/self/maps", "r");
  if (fp == NULL) return 0;
  while (!found && fgets(line, sizeof line, fp) != NULL) {
    unsigned long lo, hi;
    char perms[8];
    if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3 && addr >= lo && addr < hi)
      found = perms[1] == 'w' ? 1 : -1;
  }
  fclose(fp);
  return found == 1;
}

/* Make sure writable memory ends at `end`: either some is mapped there
 * already, or map 2 to 16 pages there if the kernel takes the hint (it does
 * only where nothing is mapped).  Returns 1 if writable memory is there. */
static int writable_below(uintptr_t end, size_t pg) {
  size_t pages;
  if (writable_at(end - 1)) return 1;
  for (pages = 16; pages >= 2; pages /= 2) {
    void *want = to_ptr(end - pages * pg);
    void *got = mmap(want, pages * pg, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (got == want) return 1;
    if (got != MAP_FAILED) munmap(got, pages * pg);
  }
  return 0;
}

/* Body: make sure writable memory lies just below this fiber's guard page,
 * so that without a guard the overflow would run on silently and fault far
 * lower.  Yields whether it does; when resumed, overflows. */
static void *overflow_body(void *arg, void *in) {
  uintptr_t pg = page_size();
  uintptr_t guard = to_num(fsw_stack_guard(fsw_current()));
  int room = guard != 0 && writable_below(guard, pg);
  (void)arg;
  (void)in;
  if (fsw_yield(to_ptr((uintptr_t)room), NULL) != FSW_OK) return NULL;
  guard_lo = guard;
  guard_hi = guard + pg;
  return to_ptr(overflow(0, NULL));
}

#define GUARD_TRIES 16

/* Child: overflow a fiber's stack; returning at all is a failure.  A fiber
 * without writable memory below its guard is kept alive, so that the next
 * one is mapped elsewhere, until one has it. */
static int guard_child(void) {
  int i;
  if (!install_test_handler()) return 10;
  fsw_pool_drain(); /* every stack below is a fresh mapping */
  for (i = 0; i < GUARD_TRIES; i++) {
    fsw_fiber *f = NULL;
    void *room = NULL;
    if (fsw_create(&f, overflow_body, NULL, 64 * KIB) != FSW_OK) return 12;
    if (fsw_resume(f, NULL, &room) != FSW_OK) return 12;
    if (room != NULL) {
      fsw_resume(f, NULL, NULL);
      return 13;
    }
  }
  return 14;
}

/* Child: touch one byte of a suspended fiber's guard page from the
 * thread's own stack; surviving the write is a failure. */
static int guard_write_child(void) {
  fsw_fiber *f = NULL;
  if (!install_test_handler()) return 10;
  if (fsw_create(&f, yield_arg_then_return_in, NULL, FSW_STACK_MIN) != FSW_OK) return 12;
  if (fsw_resume(f, NULL, NULL) != FSW_OK) return 12;
  guard_lo = to_num(fsw_stack_guard(f));
  guard_hi = guard_lo + page_size();
  if (guard_lo == 0) return 12;
  fault_expected();
  ((volatile char *)to_ptr(guard_lo))[page_size() / 2] = 1;
  return 13;
}

/* The page fsw_stack_guard names cannot be written: the write dies by
 * SIGSEGV with si_addr in that page.  Child exit codes: 10-12 setup failed,
 * 13 the write went through. */
static void guard_page_cannot_be_written(void) {
  char err[512];
  int status = run_in_child(guard_write_child, err, sizeof err);
  CHECK(status != -1);
  CHECK(WIFSIGNALED(status));
  if (WIFSIGNALED(status)) CHECK_EQ(WTERMSIG(status), SIGSEGV);
  if (WIFEXITED(status)) fprintf(stderr, "  child exited with %d\n", WEXITSTATUS(status));
  CHECK(strstr(err, "fsw-guard-hit") != NULL);
  if (strstr(err, "fsw-guard-hit") == NULL) fprintf(stderr, "  child stderr: %s\n", err);
}

/* A fiber that overflows its stack dies by SIGSEGV at the guard page just
 * below its stack, instead of running on into the memory mapped below it.
 * Child exit codes: 10-12 setup failed, 13 the overflow returned, 14 no
 * stack had writable memory below it. */
static void stack_overflow_hits_guard_page(void) {
  char err[512];
  int status = run_in_child(guard_child, err, sizeof err);
  CHECK(status != -1);
  CHECK(WIFSIGNALED(status));
  if (WIFSIGNALED(status)) CHECK_EQ(WTERMSIG(status), SIGSEGV);
  if (WIFEXITED(status)) fprintf(stderr, "  child exited with %d\n", WEXITSTATUS(status));
  CHECK(strstr(err, "fsw-guard-hit") != NULL);
  if (strstr(err, "fsw-guard-hit") == NULL) fprintf(stderr, "  child stderr: %s\n", err);
}

/* --------------------------------------------------- overflow reports */

static void *overflow_now(void *arg, void *in) {
  uintptr_t guard = to_num(fsw_stack_guard(fsw_current()));
  (void)arg;
  (void)in;
  guard_lo = guard;
  guard_hi = guard + page_size();
  return to_ptr(overflow(0, NULL));
}

/* Child: with `chained`, a handler of the test's own is installed first;
 * without, none is (SIG_DFL, even where a sanitizer had installed one). */
static int report_child(int chained) {
  fsw_fiber *f = NULL;
  if (chained && !install_test_handler()) return 10;
  if (!chained && signal(SIGSEGV, SIG_DFL) == SIG_ERR) return 10;
  if (fsw_catch_overflow(1) != 0) return 11;
  if (fsw_create(&f, overflow_now, NULL, 64 * KIB) != FSW_OK) return 12;
  fsw_resume(f, NULL, NULL);
  return 13;
}
static int report_child_alone(void) { return report_child(0); }
static int report_child_chained(void) { return report_child(1); }

/* With overflow reports on, a fiber running off its stack makes the
 * process say so on stderr, naming the fiber, and still die by SIGSEGV.
 * Child exit codes: 11-12 setup failed, 13 the overflow returned. */
static void overflow_report_names_the_fiber(void) {
  char err[1024];
  int status = run_in_child(report_child_alone, err, sizeof err);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
  if (WIFEXITED(status)) fprintf(stderr, "  child exited with %d\n", WEXITSTATUS(status));
  CHECK(strstr(err, "fiberswap: fiber stack overflow: fiber 0x") != NULL);
  CHECK(strstr(err, "65536-byte stack") != NULL);
  if (strstr(err, "fiberswap: fiber stack overflow") == NULL)
    fprintf(stderr, "  child stderr: %s\n", err);
}

/* The report hands the signal on to the handler installed before it: the
 * test's handler still sees the guard hit, after the report. */
static void overflow_report_chains_to_previous_handler(void) {
  char err[1024];
  const char *report, *hit;
  int status = run_in_child(report_child_chained, err, sizeof err);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
  report = strstr(err, "fiberswap: fiber stack overflow");
  hit = strstr(err, "fsw-guard-hit");
  CHECK(report != NULL);
  CHECK(hit != NULL);
  CHECK(report == NULL || hit == NULL || report < hit);
  if (report == NULL || hit == NULL) fprintf(stderr, "  child stderr: %s\n", err);
}

/* Child: a fault that is no fiber's overflow, under overflow reports. */
static int unrelated_fault_child(void) {
  volatile char *p;
  if (!install_test_handler()) return 10;
  if (fsw_catch_overflow(1) != 0) return 11;
  p = mmap(NULL, page_size(), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return 12;
  guard_lo = guard_hi = 0;
  fault_expected();
  p[0] = 1;
  return 13;
}

/* A fault that is not a fiber's overflow gets no report, only the handler
 * that was there before. */
static void unrelated_fault_is_passed_on_unreported(void) {
  char err[1024];
  int status = run_in_child(unrelated_fault_child, err, sizeof err);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
  CHECK(strstr(err, "fsw-fault-elsewhere") != NULL);
  CHECK(strstr(err, "fiberswap:") == NULL);
}

/* Child: turning reports off puts the previous handler back. */
static int report_off_child(void) {
  struct sigaction now;
  if (!install_test_handler()) return 10;
  if (fsw_catch_overflow(1) != 0) return 11;
  if (fsw_catch_overflow(1) != 1) return 12; /* already on */
  if (fsw_catch_overflow(0) != 1) return 13;
  if (sigaction(SIGSEGV, NULL, &now) != 0) return 14;
  if (now.sa_sigaction != on_segv) return 15;
  return fsw_catch_overflow(0) == 0 ? 0 : 16;
}

/* fsw_catch_overflow says whether reports were on, and turning them off
 * restores the handler that was there before. */
static void overflow_report_can_be_turned_off(void) {
  int status = run_in_child(report_off_child, NULL, 0);
  CHECK(WIFEXITED(status));
  if (WIFEXITED(status)) CHECK_EQ(WEXITSTATUS(status), 0);
}

/* --------------------------------------------------------------- threads */

#define THREAD_FIBERS 3
#define ROUND_TRIPS 10000
#define FINISH ((uintptr_t)-1)

struct thread_job;

struct fiber_slot {
  struct thread_job *job;
  fsw_fiber *self;
  uintptr_t salt;
};

struct thread_job {
  pthread_barrier_t *barrier;
  struct fiber_slot slot[THREAD_FIBERS + 1]; /* the last runs the barrier phase */
  unsigned id;
  int bad;                 /* count of wrong values, statuses or currents */
  size_t pooled, drained;  /* this thread's pool at the end */
};

/* Inside a fiber: meet the other thread while both are inside fibers, and
 * check fsw_current still names this thread's fiber on both sides. */
static void *barrier_body(void *arg, void *in) {
  struct fiber_slot *s = arg;
  (void)in;
  if (fsw_current() != s->self) s->job->bad++;
  pthread_barrier_wait(s->job->barrier);
  if (fsw_current() != s->self) s->job->bad++;
  pthread_barrier_wait(s->job->barrier);
  if (fsw_current() != s->self) s->job->bad++;
  return NULL;
}

/* Echo each value doubled plus the salt until FINISH. */
static void *salted_echo_body(void *arg, void *in) {
  struct fiber_slot *s = arg;
  uintptr_t v = to_num(in);
  while (v != FINISH) {
    void *next = NULL;
    if (fsw_current() != s->self) s->job->bad++;
    if (fsw_yield(to_ptr(v * 2 + s->salt), &next) != FSW_OK) s->job->bad++;
    v = to_num(next);
  }
  return to_ptr(s->salt);
}

static void *thread_main(void *p) {
  struct thread_job *job = p;
  struct fiber_slot *bs = &job->slot[THREAD_FIBERS];
  uintptr_t i;
  int k;
  if (fsw_current() != NULL) job->bad++;
  if (fsw_pool_count() != 0) job->bad++; /* a new thread's pool is empty */
  bs->job = job;
  bs->self = NULL;
  if (fsw_create(&bs->self, barrier_body, bs, FSW_STACK_DEFAULT) != FSW_OK) {
    job->bad++;
    pthread_barrier_wait(job->barrier); /* keep the other thread from hanging */
    pthread_barrier_wait(job->barrier);
  } else {
    if (fsw_resume(bs->self, NULL, NULL) != FSW_OK) job->bad++;
    if (fsw_status_of(bs->self) != FSW_DEAD) job->bad++;
    if (fsw_destroy(bs->self) != FSW_OK) job->bad++;
  }
  for (k = 0; k < THREAD_FIBERS; k++) {
    struct fiber_slot *s = &job->slot[k];
    s->job = job;
    s->salt = job->id * 100u + (uintptr_t)k;
    s->self = NULL;
    if (fsw_create(&s->self, salted_echo_body, s, FSW_STACK_DEFAULT) != FSW_OK) {
      job->bad++;
      return NULL;
    }
  }
  for (i = 0; i < ROUND_TRIPS; i++) {
    struct fiber_slot *s = &job->slot[i % THREAD_FIBERS];
    void *out = NULL;
    if (fsw_resume(s->self, to_ptr(i), &out) != FSW_OK) job->bad++;
    if (to_num(out) != i * 2 + s->salt) job->bad++;
    if (fsw_current() != NULL) job->bad++;
    if (fsw_status_of(s->self) != FSW_SUSPENDED) job->bad++;
  }
  for (k = 0; k < THREAD_FIBERS; k++) {
    struct fiber_slot *s = &job->slot[k];
    void *out = NULL;
    if (fsw_resume(s->self, to_ptr(FINISH), &out) != FSW_OK) job->bad++;
    if (to_num(out) != s->salt) job->bad++;
    if (fsw_destroy(s->self) != FSW_OK) job->bad++;
  }
  job->pooled = fsw_pool_count();
  job->drained = fsw_pool_drain();
  return NULL;
}

/* Two threads run their own fibers at the same time: each sees only its own
 * current fiber, gets its own values back, and pools its own stacks. */
static void two_threads_run_their_own_fibers(void) {
  pthread_barrier_t barrier;
  pthread_t th[2];
  struct thread_job job[2];
  int t, started = 0;
  fsw_pool_drain();
  CHECK_EQ(pthread_barrier_init(&barrier, NULL, 2), 0);
  memset(job, 0, sizeof job);
  for (t = 0; t < 2; t++) {
    job[t].barrier = &barrier;
    job[t].id = (unsigned)t + 1;
    if (pthread_create(&th[t], NULL, thread_main, &job[t]) != 0) break;
    started++;
  }
  CHECK_EQ(started, 2);
  if (started == 1) { /* release the lone thread from the barrier */
    pthread_barrier_wait(&barrier);
    pthread_barrier_wait(&barrier);
  }
  for (t = 0; t < started; t++) {
    pthread_join(th[t], NULL);
    CHECK_EQ(job[t].bad, 0);
    CHECK_EQ(job[t].pooled, THREAD_FIBERS); /* the barrier fiber's stack was reused */
    CHECK_EQ(job[t].drained, THREAD_FIBERS);
  }
  CHECK_EQ(fsw_pool_count(), 0); /* none of their stacks came here */
  CHECK(fsw_current() == NULL);
  pthread_barrier_destroy(&barrier);
}

struct migration {
  fsw_fiber *f;
  pthread_t first, second;
  int on_first, on_second;      /* pthread_self inside matched */
  int current_first, current_second; /* fsw_current inside matched */
  int bad;                      /* failures seen by the second thread */
  size_t pooled, drained;       /* the second thread's pool at the end */
};

/* pthread_self is declared const, so calls on either side of a switch may be
 * merged; calling through a volatile pointer keeps each one real. */
static pthread_t (*volatile self_fn)(void) = pthread_self;

static void *migrating_body(void *arg, void *in) {
  struct migration *m = arg;
  void *next = NULL;
  m->on_first = pthread_equal(self_fn(), m->first) != 0;
  m->current_first = fsw_current() == m->f;
  if (fsw_yield(to_ptr(to_num(in) + 1), &next) != FSW_OK) return NULL;
  m->on_second = pthread_equal(self_fn(), m->second) != 0;
  m->current_second = fsw_current() == m->f;
  if (fsw_yield(to_ptr(to_num(next) + 1), &next) != FSW_OK) return NULL;
  if (fsw_current() != m->f) return NULL;
  return to_ptr(to_num(next) + 1);
}

static void *second_thread(void *p) {
  struct migration *m = p;
  void *out = NULL;
  m->second = pthread_self();
  if (fsw_current() != NULL) m->bad++;
  if (fsw_resume(m->f, to_ptr(10), &out) != FSW_OK || to_num(out) != 11) m->bad++;
  if (fsw_current() != NULL) m->bad++;
  if (fsw_resume(m->f, to_ptr(20), &out) != FSW_OK || to_num(out) != 21) m->bad++;
  if (fsw_status_of(m->f) != FSW_DEAD) m->bad++;
  if (fsw_current() != NULL) m->bad++;
  if (fsw_destroy(m->f) != FSW_OK) m->bad++;
  m->pooled = fsw_pool_count();
  m->drained = fsw_pool_drain();
  return NULL;
}

/* A fiber suspended on one thread can be resumed to completion on another:
 * its values arrive, it sees the new thread and itself as current, and its
 * stack goes to the destroying thread's pool. */
static void fiber_migrates_to_another_thread(void) {
  struct migration m;
  pthread_t th;
  void *out = NULL;
  memset(&m, 0, sizeof m);
  fsw_pool_drain();
  m.first = pthread_self();
  CHECK_EQ(fsw_create(&m.f, migrating_body, &m, FSW_STACK_DEFAULT), FSW_OK);
  if (m.f == NULL) return;
  CHECK_EQ(fsw_resume(m.f, to_ptr(1), &out), FSW_OK);
  CHECK_EQ(to_num(out), 2);
  CHECK(fsw_current() == NULL);
  CHECK_EQ(pthread_create(&th, NULL, second_thread, &m), 0);
  pthread_join(th, NULL);
  CHECK_EQ(m.on_first, 1);
  CHECK_EQ(m.current_first, 1);
  CHECK_EQ(m.on_second, 1);
  CHECK_EQ(m.current_second, 1);
  CHECK_EQ(m.bad, 0);
  CHECK_EQ(m.pooled, 1);
  CHECK_EQ(m.drained, 1);
  CHECK_EQ(fsw_pool_count(), 0);
  CHECK(fsw_current() == NULL);
}

int main(void) {
  RUN(backend_is_named);
  RUN(guard_kind_is_named);
  RUN(create_gives_suspended_fiber_that_has_not_run);
  RUN(create_gives_distinct_independent_fibers);
  RUN(values_round_trip_both_ways);
  RUN(yielded_null_is_stored_in_out);
  RUN(status_follows_lifecycle);
  RUN(resumer_is_normal_while_nested_fiber_runs);
  RUN(current_names_running_fiber_or_null);
  RUN(nesting_three_deep_yields_one_level_at_a_time);
  RUN(destroy_frees_unstarted_suspended_and_dead_fibers);
  RUN(resume_of_running_fiber_fails_erunning);
  RUN(resume_of_normal_fiber_fails_enormal);
  RUN(resume_of_dead_fiber_fails_edead);
  RUN(resume_of_null_fails_einval);
  RUN(yield_outside_fiber_fails_eoutside);
#if FSW_DIRECT
  RUN(vtransfer_misuse_aborts_with_its_reason);
#endif
  RUN(destroy_of_running_fiber_fails_ebusy);
  RUN(destroy_of_normal_fiber_fails_ebusy);
  RUN(create_rejects_bad_stack_sizes);
  RUN(create_accepts_stack_max);
  RUN(create_rejects_null_arguments);
  RUN(strerror_names_every_code_distinctly);
  RUN(stack_size_is_request_rounded_to_pages);
  RUN(stack_guard_is_page_below_usable_stack);
  RUN(stack_used_reports_deep_use);
  RUN(stack_used_is_small_for_idle_fiber);
  RUN(pooled_stack_is_trimmed_before_reuse);
  RUN(pool_keeps_destroyed_stacks_and_reuses_them);
  RUN(ten_thousand_fibers_alive_at_once);
  RUN(stacks_come_from_regions_and_go_back);
  RUN(stacks_given_back_on_another_thread);
  RUN(yield_from_deep_call_depth);
  RUN(callee_saved_values_survive_switches);
  RUN(fiber_rounding_mode_does_not_leak_to_resumer);
  RUN(resumer_rounding_mode_does_not_leak_into_fiber);
#if defined(__x86_64__)
  RUN(fpu_control_words_are_per_fiber_x86_64);
#endif
  RUN(create_reports_enomem_when_mmap_fails);
  RUN(guard_page_cannot_be_written);
  RUN(stack_overflow_hits_guard_page);
  RUN(overflow_report_names_the_fiber);
  RUN(overflow_report_chains_to_previous_handler);
  RUN(unrelated_fault_is_passed_on_unreported);
  RUN(overflow_report_can_be_turned_off);
  RUN(two_threads_run_their_own_fibers);
  RUN(fiber_migrates_to_another_thread);
  DONE();
}
