/* fuzz_c.c: a libFuzzer harness for the C library's API sequences.
 *
 * The input is a program for up to NSLOT fibers: create (random stack
 * sizes, invalid ones included), resume with a command, destroy, status,
 * pool drain, and from inside a running fiber: yield, return, recurse, and
 * resume another fiber (nesting up to MAXNEST deep) or misuse the API
 * (resume itself or its resumer, destroy an active fiber).  A model of
 * every fiber's status is kept beside the library's, and every call's
 * result is checked against it: a mismatch aborts, which libFuzzer reports
 * as a crash with the input that caused it.  Built with ASan and UBSan
 * (make fuzz-c), so memory errors across switches are caught too. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fiberswap.h"

#define NSLOT 6
#define MAXNEST 4

/* Check a condition; on failure say which and abort (libFuzzer saves the
 * input). */
#define CHECK(c)                                                          \
  do {                                                                    \
    if (!(c)) {                                                           \
      fprintf(stderr, "fuzz_c: check failed at line %d: %s\n", __LINE__, \
              #c);                                                        \
      abort();                                                            \
    }                                                                     \
  } while (0)

/* What the model expects of a slot. */
enum { M_EMPTY, M_SUSPENDED, M_ACTIVE, M_DEAD };

static struct {
  fsw_fiber *f;
  int model;
  unsigned long yields; /* how many times it yielded */
} slot[NSLOT];

/* The input, read by the driver and by fiber bodies alike. */
static const uint8_t *in_data;
static size_t in_size, in_pos;
static int next_byte(void) { return in_pos < in_size ? in_data[in_pos++] : -1; }

/* The chain of active slots, outermost first: active[depth - 1] runs. */
static int active[MAXNEST + 1];
static int depth;

static fsw_status expected_status(int i) {
  switch (slot[i].model) {
    case M_SUSPENDED: return FSW_SUSPENDED;
    case M_DEAD: return FSW_DEAD;
    default: return active[depth - 1] == i ? FSW_RUNNING : FSW_NORMAL;
  }
}

static void check_all_statuses(void) {
  int i;
  for (i = 0; i < NSLOT; i++)
    if (slot[i].model != M_EMPTY) CHECK(fsw_status_of(slot[i].f) == expected_status(i));
  CHECK(fsw_current() == (depth ? slot[active[depth - 1]].f : NULL));
}

/* Recurse n levels, touching stack on the way, then come back.  Each level
 * takes well under 1 KiB, even with ASan's redzones. */
static __attribute__((noinline)) unsigned recurse(unsigned n) {
  volatile char pad[256];
  memset((char *)pad, (int)n, sizeof pad);
  return n == 0 ? pad[0] : recurse(n - 1) + pad[n % sizeof pad];
}

static void resume_slot(int i, uintptr_t token);

/* The body of every fiber: `arg` is its slot; it obeys bytes of the input
 * until told to return (or the input runs out). */
static void *body(void *arg, void *in) {
  int me = (int)(uintptr_t)arg;
  uintptr_t token = (uintptr_t)in;
  for (;;) {
    int op = next_byte();
    CHECK(fsw_current() == slot[me].f);
    CHECK(fsw_status_of(slot[me].f) == FSW_RUNNING);
    if (op < 0 || op % 8 == 0) return (void *)(token + 1); /* return */
    switch (op % 8) {
      case 1: case 2: { /* yield; the resume gives a new token */
        void *back = NULL;
        slot[me].yields++;
        CHECK(fsw_yield((void *)token, &back) == FSW_OK);
        token = (uintptr_t)back;
        break;
      }
      case 3: { /* touch some stack, staying clear of the guard */
        size_t levels = fsw_stack_size(slot[me].f) / 1024 - 8;
        unsigned n = (unsigned)(next_byte() & 63);
        (void)recurse(n < levels ? n : (unsigned)levels);
        break;
      }
      case 4: { /* resume another slot from here */
        int j = next_byte();
        if (j >= 0) resume_slot(j % NSLOT, token);
        break;
      }
      case 5: /* misuse: resume myself */
        CHECK(fsw_resume(slot[me].f, NULL, NULL) == FSW_ERUNNING);
        break;
      case 6: /* misuse: resume or destroy my resumer, or destroy myself */
        if (depth >= 2) {
          fsw_fiber *outer = slot[active[depth - 2]].f;
          CHECK(fsw_resume(outer, NULL, NULL) == FSW_ENORMAL);
          CHECK(fsw_destroy(outer) == FSW_EBUSY);
        }
        CHECK(fsw_destroy(slot[me].f) == FSW_EBUSY);
        break;
      default: /* 7: check everything */
        check_all_statuses();
        CHECK(fsw_stack_used(slot[me].f) <= fsw_stack_size(slot[me].f));
        break;
    }
  }
}

/* Resume slot i (from the driver or from a fiber) and check the outcome. */
static void resume_slot(int i, uintptr_t token) {
  void *out = NULL;
  fsw_err e;
  unsigned long yields;
  if (slot[i].model == M_EMPTY) return;
  if (slot[i].model == M_ACTIVE) {
    e = fsw_resume(slot[i].f, NULL, NULL);
    CHECK(e == (active[depth - 1] == i ? FSW_ERUNNING : FSW_ENORMAL));
    return;
  }
  if (slot[i].model == M_DEAD) {
    CHECK(fsw_resume(slot[i].f, NULL, NULL) == FSW_EDEAD);
    return;
  }
  if (depth == MAXNEST) return;
  slot[i].model = M_ACTIVE;
  active[depth++] = i;
  yields = slot[i].yields;
  e = fsw_resume(slot[i].f, (void *)((token & 0xffff) * 2 + 1), &out);
  depth--;
  CHECK(e == FSW_OK);
  if (slot[i].yields == yields + 1) { /* it yielded its token */
    slot[i].model = M_SUSPENDED;
    CHECK(fsw_status_of(slot[i].f) == FSW_SUSPENDED);
  } else { /* it returned its token + 1 */
    CHECK(slot[i].yields == yields);
    slot[i].model = M_DEAD;
    CHECK(fsw_status_of(slot[i].f) == FSW_DEAD);
  }
  CHECK(out != NULL);
  check_all_statuses();
}

/* Stack sizes to try, invalid ones with their expected errors. */
static size_t pick_size(int b, fsw_err *want) {
  /* (not FSW_STACK_MAX itself: ASan clears the shadow of a whole stack on
   * each release, 128 MiB for 1 GiB, which makes runs crawl) */
  static const size_t sizes[] = {0, 1, FSW_STACK_MIN - 1, FSW_STACK_MIN, 20000, 65536,
                                 FSW_STACK_DEFAULT, 1u << 20, 8u << 20,
                                 FSW_STACK_MAX + 1};
  size_t s = sizes[(unsigned)b % (sizeof sizes / sizeof sizes[0])];
  *want = s == 0 ? FSW_ESTACKZERO
        : s < FSW_STACK_MIN ? FSW_ESTACKSMALL
        : s > FSW_STACK_MAX ? FSW_ESTACKLARGE : FSW_OK;
  return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int i, op;
  in_data = data;
  in_size = size;
  in_pos = 0;
  depth = 0;
  memset(slot, 0, sizeof slot);
  CHECK(fsw_yield(NULL, NULL) == FSW_EOUTSIDE);
  while ((op = next_byte()) >= 0) {
    int s = next_byte();
    if (s < 0) break;
    i = s % NSLOT;
    switch (op % 6) {
      case 0: { /* create */
        fsw_err want, got;
        fsw_fiber *f = NULL;
        size_t sz = pick_size(next_byte(), &want);
        if (slot[i].model != M_EMPTY) break;
        got = fsw_create(&f, body, (void *)(uintptr_t)i, sz);
        if (got == FSW_ENOMEM || got == FSW_EMAPLIMIT) { /* the system said no */
          CHECK(f == NULL);
          break;
        }
        CHECK(got == want);
        if (got != FSW_OK) {
          CHECK(f == NULL);
          break;
        }
        CHECK(fsw_stack_size(f) >= sz && fsw_stack_guard(f) != NULL);
        CHECK(fsw_status_of(f) == FSW_SUSPENDED);
        slot[i].f = f;
        slot[i].model = M_SUSPENDED;
        slot[i].yields = 0;
        break;
      }
      case 1: case 2: /* resume */
        resume_slot(i, (uintptr_t)s);
        break;
      case 3: /* destroy: suspended (frames abandoned) or dead */
        if (slot[i].model == M_EMPTY) break;
        CHECK(fsw_destroy(slot[i].f) == FSW_OK);
        slot[i].model = M_EMPTY;
        slot[i].f = NULL;
        break;
      case 4: /* statuses, and the errors for bad arguments */
        check_all_statuses();
        CHECK(fsw_resume(NULL, NULL, NULL) == FSW_EINVAL);
        CHECK(fsw_create(NULL, body, NULL, 0) == FSW_EINVAL);
        CHECK(fsw_destroy(NULL) == FSW_OK);
        CHECK(fsw_status_of(NULL) == FSW_DEAD);
        break;
      default: /* 5: give the pool back */
        (void)fsw_pool_drain();
        CHECK(fsw_pool_count() == 0);
        break;
    }
  }
  for (i = 0; i < NSLOT; i++)
    if (slot[i].model != M_EMPTY) CHECK(fsw_destroy(slot[i].f) == FSW_OK);
  (void)fsw_pool_drain();
  return 0;
}
