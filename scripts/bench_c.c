/* bench_c.c: times resume+yield round trips of fiberswap, Boost fcontext
 * and glibc ucontext, all measured alike, interleaved, in one process. */

/* Each implementation is measured two ways: "api", through non-inlined
 * resume/yield functions shaped like fsw_resume/fsw_yield (for fiberswap,
 * those very functions), and "raw", its bare switch called in a loop (for
 * fiberswap, the internal fsw__switch of switch.h).  Run r of every case is
 * timed before run r+1 of any, so noise lands on all of them alike, and each
 * ratio compares two medians taken from the same runs.
 *
 * Usage:
 *   bench_c [RUNS [N [N_UCONTEXT]]]
 *     RUNS        timed runs per case (default 9, or env FSW_BENCH_RUNS)
 *     N           round trips per run for fiberswap and fcontext
 *                 (default 2000000, or env FSW_BENCH_N)
 *     N_UCONTEXT  round trips per run for ucontext, ~35x slower
 *                 (default 200000, or env FSW_BENCH_N_UC)
 *   bench_c --callgrind IMPL PATH N
 *     IMPL is fiberswap|fcontext|ucontext, PATH is api|raw.  Runs exactly N
 *     round trips of that one case, untimed, after the same setup.  Setup and
 *     teardown cost the same for any N, so instructions per round trip are
 *       (Ir(N2) - Ir(N1)) / (N2 - N1)
 *     with Ir the callgrind total of whole-program runs at N1 and N2, e.g.
 *     N1 = 1000 and N2 = 101000.  scripts/callgrind_per_rt.sh does this.
 *
 * Build from the repository root, with every .c and .S file of
 * lib/fiberswap on the command line (or libfiberswap.a), and run pinned to
 * one CPU:
 *   gcc -std=gnu99 -O2 -g -Wall -Wextra -Ilib/fiberswap scripts/bench_c.c \
 *       lib/fiberswap/fiber.c lib/fiberswap/stack.c ... \
 *       lib/fiberswap/switch_x86_64_sysv.S -o /tmp/bench_c \
 *       -lboost_context -pthread
 *   taskset -c 1 /tmp/bench_c
 * -DFSW_FPCW=0 on that line builds the switch without the control-word save.
 * -DFSW_BENCH_NO_RAW leaves out the raw fiberswap case (for a build against
 * a shared libfiberswap, whose internal symbols are hidden).
 * -lboost_context picks the shared library, whose jump_fcontext is reached
 * through the PLT; -Wl,-Bstatic -lboost_context -Wl,-Bdynamic makes its calls
 * direct, like fiberswap's.  The header line says which one was linked.
 *
 * stdout carries only '#' header lines, the table and the verdict; progress
 * and the checksum go to stderr.  Every value a fiber hands back is checked:
 * a fiber answers with the bitwise complement of what it was sent, so a
 * switch that lost the value, or returned the sender's own, aborts the run. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <link.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>

#include "fiberswap.h"

/* Whether FSW_FPCW came from the build, before switch.h supplies its
 * default; the library sources on the same command line see the same. */
#ifdef FSW_FPCW
#define BENCH_FPCW_FROM_BUILD 1
#else
#define BENCH_FPCW_FROM_BUILD 0
#endif

/* The raw fiberswap case drives the internal switch, so it needs the
 * internal header and the library linked in statically. */
#if !defined(FSW_BENCH_NO_RAW) && defined(__has_include)
#if __has_include("switch.h")
#include "switch.h"
#define BENCH_RAW_FSW 1
#endif
#endif
#ifndef BENCH_RAW_FSW
#define BENCH_RAW_FSW 0
#endif

/* Wrappers must stay real out-of-line calls, like the library's exported
 * fsw_resume/fsw_yield: gcc's noipa also stops it from cloning them or
 * specialising them for their only call site; clang has no noipa, and the
 * wrappers get external linkage so it cannot rewrite their signatures. */
#if defined(__GNUC__) && !defined(__clang__)
#define NOINLINE __attribute__((noipa))
#else
#define NOINLINE __attribute__((noinline))
#endif
#define NORETURN_COLD __attribute__((noreturn, cold, noinline))

/* Stack size for the fcontext and ucontext fibers; fiberswap gets the same. */
#define BENCH_STACK FSW_STACK_DEFAULT

/* ---- Boost.Context fcontext, declared by hand (C linkage in the library) */

typedef void *fcontext_t;
typedef struct {
  fcontext_t fctx;
  void *data;
} transfer_t;

transfer_t jump_fcontext(fcontext_t to, void *vp);
fcontext_t make_fcontext(void *sp, size_t size, void (*fn)(transfer_t));

/* ---- common helpers */

/* Report a wrong value handed back by a fiber and abort: the numbers
 * measured so far would be for a switch that does not work. */
static NORETURN_COLD void badvalue(const char *what, uintptr_t sent,
                                   uintptr_t got) {
  fprintf(stderr,
          "bench_c: %s: sent %#jx, got %#jx back, expected %#jx\n", what,
          (uintmax_t)sent, (uintmax_t)got, (uintmax_t)~sent);
  abort();
}

/* Report a failed setup step and exit. */
static NORETURN_COLD void die(const char *what, const char *why) {
  fprintf(stderr, "bench_c: %s: %s\n", what, why);
  exit(1);
}

/* Map an unguarded stack of BENCH_STACK bytes for a foreign fiber; returns
 * its lowest address.  The caller unmaps it with munmap(p, BENCH_STACK). */
static void *mapstack(void) {
  void *p = mmap(NULL, BENCH_STACK, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (p == MAP_FAILED) die("mmap", strerror(errno));
  return p;
}

/* Monotonic time in nanoseconds. */
static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* ---- fiberswap through its public API */

static fsw_fiber *fsw_f;

/* Fiber body: answer every value with its complement, forever.  The fiber
 * is destroyed while suspended, so this never returns. */
static void *fsw_body(void *arg, void *in) {
  (void)arg;
  for (;;) fsw_yield((void *)~(uintptr_t)in, &in);
  return NULL;
}

static void fsw_api_setup(void) {
  fsw_err e = fsw_create(&fsw_f, fsw_body, NULL, BENCH_STACK);
  if (e != FSW_OK) die("fsw_create", fsw_strerror(e));
}

/* n round trips sending base, base+1, ...; returns the sum of the answers. */
static uintptr_t fsw_api_run(size_t n, uintptr_t base) {
  uintptr_t sum = 0;
  for (size_t i = 0; i < n; i++) {
    uintptr_t v = base + i;
    void *out;
    if (fsw_resume(fsw_f, (void *)v, &out) != FSW_OK)
      die("fsw_resume", "failed");
    if ((uintptr_t)out != ~v) badvalue("fiberswap api", v, (uintptr_t)out);
    sum += (uintptr_t)out;
  }
  return sum;
}

static void fsw_api_teardown(void) {
  fsw_destroy(fsw_f);
  fsw_pool_drain();
}

/* ---- fcontext behind wrappers shaped like fsw_resume / fsw_yield */

/* A fiber: where to jump to resume it, and where it returns to on yield. */
typedef struct fc_fiber {
  fcontext_t ctx;    /* the fiber's suspended context */
  fcontext_t caller; /* its resumer's context while it runs */
  void *stack;       /* lowest address of its mapping */
} fc_fiber;

static __thread fc_fiber *fc_current;
static fc_fiber fc_f;

int fc_resume(fc_fiber *f, void *in, void **out);
int fc_yield(void *out, void **in);

/* Run f until it yields, passing `in`; stores the yielded value in *out
 * unless out is NULL.  Returns 0, or -1 for a NULL fiber. */
NOINLINE int fc_resume(fc_fiber *f, void *in, void **out) {
  if (f == NULL) return -1;
  fc_fiber *prev = fc_current;
  fc_current = f;
  transfer_t t = jump_fcontext(f->ctx, in);
  f->ctx = t.fctx;
  fc_current = prev;
  if (out) *out = t.data;
  return 0;
}

/* Suspend the running fiber handing `out` to its resumer; stores the next
 * resume's value in *in unless in is NULL.  Returns 0, or -1 outside any
 * fiber. */
NOINLINE int fc_yield(void *out, void **in) {
  fc_fiber *f = fc_current;
  if (f == NULL) return -1;
  transfer_t t = jump_fcontext(f->caller, out);
  f->caller = t.fctx;
  if (in) *in = t.data;
  return 0;
}

/* Entry of a new fcontext fiber: record the resumer, then run the same
 * complement-forever body as fsw_body. */
static void fc_entry(transfer_t t) {
  void *in = t.data;
  fc_current->caller = t.fctx;
  for (;;) fc_yield((void *)~(uintptr_t)in, &in);
}

static void fc_api_setup(void) {
  fc_f.stack = mapstack();
  fc_f.ctx = make_fcontext((char *)fc_f.stack + BENCH_STACK, BENCH_STACK,
                           fc_entry);
}

static uintptr_t fc_api_run(size_t n, uintptr_t base) {
  uintptr_t sum = 0;
  for (size_t i = 0; i < n; i++) {
    uintptr_t v = base + i;
    void *out;
    if (fc_resume(&fc_f, (void *)v, &out) != 0) die("fc_resume", "failed");
    if ((uintptr_t)out != ~v) badvalue("fcontext api", v, (uintptr_t)out);
    sum += (uintptr_t)out;
  }
  return sum;
}

static void fc_api_teardown(void) { munmap(fc_f.stack, BENCH_STACK); }

/* ---- ucontext behind wrappers shaped like fsw_resume / fsw_yield */

/* A fiber: both contexts, and the slot values cross in (swapcontext carries
 * no value of its own). */
typedef struct uc_fiber {
  ucontext_t ctx;    /* the fiber's suspended context */
  ucontext_t caller; /* its resumer's context while it runs */
  void *value;       /* the value in flight */
  void *stack;       /* lowest address of its mapping */
} uc_fiber;

static __thread uc_fiber *uc_current;
static uc_fiber uc_f;

int uc_resume(uc_fiber *f, void *in, void **out);
int uc_yield(void *out, void **in);

/* Same contract as fc_resume. */
NOINLINE int uc_resume(uc_fiber *f, void *in, void **out) {
  if (f == NULL) return -1;
  uc_fiber *prev = uc_current;
  uc_current = f;
  f->value = in;
  swapcontext(&f->caller, &f->ctx);
  uc_current = prev;
  if (out) *out = f->value;
  return 0;
}

/* Same contract as fc_yield. */
NOINLINE int uc_yield(void *out, void **in) {
  uc_fiber *f = uc_current;
  if (f == NULL) return -1;
  f->value = out;
  swapcontext(&f->ctx, &f->caller);
  if (in) *in = f->value;
  return 0;
}

/* Entry of the ucontext fiber: the complement-forever body. */
static void uc_entry(void) {
  void *in = uc_current->value;
  for (;;) uc_yield((void *)~(uintptr_t)in, &in);
}

static void uc_api_setup(void) {
  uc_f.stack = mapstack();
  if (getcontext(&uc_f.ctx) != 0) die("getcontext", strerror(errno));
  uc_f.ctx.uc_stack.ss_sp = uc_f.stack;
  uc_f.ctx.uc_stack.ss_size = BENCH_STACK;
  uc_f.ctx.uc_link = NULL;
  makecontext(&uc_f.ctx, uc_entry, 0);
}

static uintptr_t uc_api_run(size_t n, uintptr_t base) {
  uintptr_t sum = 0;
  for (size_t i = 0; i < n; i++) {
    uintptr_t v = base + i;
    void *out;
    if (uc_resume(&uc_f, (void *)v, &out) != 0) die("uc_resume", "failed");
    if ((uintptr_t)out != ~v) badvalue("ucontext api", v, (uintptr_t)out);
    sum += (uintptr_t)out;
  }
  return sum;
}

static void uc_api_teardown(void) { munmap(uc_f.stack, BENCH_STACK); }

/* ---- raw fcontext: jump_fcontext back and forth, no wrapper */

static fcontext_t rawfc_ctx;
static void *rawfc_stack;

/* Answer every jump with the complement of its value, forever. */
static void rawfc_entry(transfer_t t) {
  for (;;) t = jump_fcontext(t.fctx, (void *)~(uintptr_t)t.data);
}

static void fc_raw_setup(void) {
  rawfc_stack = mapstack();
  rawfc_ctx = make_fcontext((char *)rawfc_stack + BENCH_STACK, BENCH_STACK,
                            rawfc_entry);
}

static uintptr_t fc_raw_run(size_t n, uintptr_t base) {
  uintptr_t sum = 0;
  fcontext_t c = rawfc_ctx;
  for (size_t i = 0; i < n; i++) {
    uintptr_t v = base + i;
    transfer_t t = jump_fcontext(c, (void *)v);
    c = t.fctx;
    if ((uintptr_t)t.data != ~v) badvalue("fcontext raw", v, (uintptr_t)t.data);
    sum += (uintptr_t)t.data;
  }
  rawfc_ctx = c;
  return sum;
}

static void fc_raw_teardown(void) { munmap(rawfc_stack, BENCH_STACK); }

/* ---- raw ucontext: swapcontext back and forth, value in a global */

static ucontext_t rawuc_main, rawuc_fib;
static uintptr_t rawuc_val; /* swapcontext is an opaque call: re-read */
static void *rawuc_stack;

static void rawuc_entry(void) {
  for (;;) {
    rawuc_val = ~rawuc_val;
    swapcontext(&rawuc_fib, &rawuc_main);
  }
}

static void uc_raw_setup(void) {
  rawuc_stack = mapstack();
  if (getcontext(&rawuc_fib) != 0) die("getcontext", strerror(errno));
  rawuc_fib.uc_stack.ss_sp = rawuc_stack;
  rawuc_fib.uc_stack.ss_size = BENCH_STACK;
  rawuc_fib.uc_link = NULL;
  makecontext(&rawuc_fib, rawuc_entry, 0);
}

static uintptr_t uc_raw_run(size_t n, uintptr_t base) {
  uintptr_t sum = 0;
  for (size_t i = 0; i < n; i++) {
    uintptr_t v = base + i;
    rawuc_val = v;
    swapcontext(&rawuc_main, &rawuc_fib);
    if (rawuc_val != ~v) badvalue("ucontext raw", v, rawuc_val);
    sum += rawuc_val;
  }
  return sum;
}

static void uc_raw_teardown(void) { munmap(rawuc_stack, BENCH_STACK); }

/* ---- raw fiberswap: fsw__switch back and forth, no fiber layer */

#if BENCH_RAW_FSW
static fsw_ctx rawfsw_main, rawfsw_fib;
static void *rawfsw_stack;

/* Start function of the raw context: answer every switch with the
 * complement of its value, forever. */
static fsw__exit rawfsw_start(void *data, void *value) {
  (void)data;
  for (;;)
    fsw__switch(&rawfsw_fib, (void *)~(uintptr_t)value, &value,
                FSW_CTX_TARGET(&rawfsw_main));
  __builtin_unreachable();
}

static void fsw_raw_setup(void) {
  rawfsw_stack = mapstack();
  fsw__ctx_init(&rawfsw_fib, rawfsw_stack,
                (char *)rawfsw_stack + BENCH_STACK, rawfsw_start, NULL);
}

static uintptr_t fsw_raw_run(size_t n, uintptr_t base) {
  uintptr_t sum = 0;
  for (size_t i = 0; i < n; i++) {
    uintptr_t v = base + i;
    void *got;
    fsw__switch(&rawfsw_main, (void *)v, &got, FSW_CTX_TARGET(&rawfsw_fib));
    uintptr_t out = (uintptr_t)got;
    if (out != ~v) badvalue("fiberswap raw", v, out);
    sum += out;
  }
  return sum;
}

static void fsw_raw_teardown(void) { munmap(rawfsw_stack, BENCH_STACK); }
#endif

/* ---- the cases */

enum { IMPL_FSW, IMPL_FC, IMPL_UC };

typedef struct bench_case {
  const char *impl;  /* "fiberswap", "fcontext" or "ucontext" */
  const char *path;  /* "api" or "raw" */
  int kind;          /* IMPL_* */
  void (*setup)(void);
  uintptr_t (*run)(size_t n, uintptr_t base);
  void (*teardown)(void);
} bench_case;

static const bench_case cases[] = {
    {"fiberswap", "api", IMPL_FSW, fsw_api_setup, fsw_api_run,
     fsw_api_teardown},
    {"fcontext", "api", IMPL_FC, fc_api_setup, fc_api_run, fc_api_teardown},
    {"ucontext", "api", IMPL_UC, uc_api_setup, uc_api_run, uc_api_teardown},
#if BENCH_RAW_FSW
    {"fiberswap", "raw", IMPL_FSW, fsw_raw_setup, fsw_raw_run,
     fsw_raw_teardown},
#endif
    {"fcontext", "raw", IMPL_FC, fc_raw_setup, fc_raw_run, fc_raw_teardown},
    {"ucontext", "raw", IMPL_UC, uc_raw_setup, uc_raw_run, uc_raw_teardown},
};
#define NCASES (sizeof cases / sizeof cases[0])

/* The case for impl/path, or NULL. */
static const bench_case *findcase(const char *impl, const char *path) {
  for (size_t i = 0; i < NCASES; i++)
    if (strcmp(cases[i].impl, impl) == 0 && strcmp(cases[i].path, path) == 0)
      return &cases[i];
  return NULL;
}

/* Parse a positive count, or exit naming `what`. */
static size_t parsecount(const char *s, const char *what) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || end == s || *end != '\0' || v == 0 || v > SIZE_MAX)
    die(what, "expected a positive integer");
  return (size_t)v;
}

/* A count from argv[i] if present, else from env `var`, else `dflt`. */
static size_t getcount(int argc, char **argv, int i, const char *var,
                       size_t dflt) {
  if (i < argc) return parsecount(argv[i], var);
  const char *s = getenv(var);
  if (s != NULL && *s != '\0') return parsecount(s, var);
  return dflt;
}

static int cmpdouble(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Median of v[0..n); sorts v in place. */
static double median(double *v, size_t n) {
  qsort(v, n, sizeof *v, cmpdouble);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* dl_iterate_phdr callback: if the object holds the address in *data (a
 * struct where), record its name and stop. */
struct where {
  uintptr_t addr;
  const char *name; /* "" for the main program; NULL until found */
};

static int findobject(struct dl_phdr_info *info, size_t size, void *data) {
  struct where *w = data;
  (void)size;
  for (ElfW(Half) i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
    uintptr_t lo = (uintptr_t)info->dlpi_addr + ph->p_vaddr;
    if (ph->p_type == PT_LOAD && w->addr - lo < ph->p_memsz) {
      w->name = info->dlpi_name;
      return 1;
    }
  }
  return 0;
}

/* Where jump_fcontext lives, for the header: a call into a shared library
 * goes through the PLT, an indirect jump that costs fcontext about 3 ns
 * per api round trip here, while fiberswap's calls are direct. */
static void boostlinkage(void) {
  struct where w = {(uintptr_t)jump_fcontext, NULL};
  dl_iterate_phdr(findobject, &w);
  if (w.name == NULL)
    printf("# Boost.Context: jump_fcontext not found in any loaded object\n");
  else if (w.name[0] == '\0')
    printf("# Boost.Context: linked statically (direct calls)\n");
  else
    printf("# Boost.Context: from %s (calls go through the PLT)\n", w.name);
}

/* --callgrind IMPL PATH N: N untimed round trips of one case. */
static int callgrind_mode(int argc, char **argv) {
  if (argc != 5) die("usage", "bench_c --callgrind IMPL PATH N");
  const char *impl = argv[2], *path = argv[3];
  size_t n = parsecount(argv[4], "N");
  const bench_case *c = findcase(impl, path);
  if (c == NULL) {
    if (findcase(impl, "api") == NULL || strcmp(path, "raw") != 0)
      die("usage", "IMPL is fiberswap|fcontext|ucontext, PATH is api|raw");
    printf("%s %s: n/a\n", path, impl);
    return 2;
  }
  c->setup();
  uintptr_t sum = c->run(n, 1);
  c->teardown();
  fprintf(stderr, "checksum: %#jx\n", (uintmax_t)sum);
  return 0;
}

/* Print what was built and how it will be measured, as '#' lines. */
static void header(size_t runs, size_t n, size_t nuc) {
  printf("# fiberswap %s, backend %s, guard %s\n", FSW_VERSION, fsw_backend(),
         fsw_guard_kind());
  boostlinkage();
#if BENCH_FPCW_FROM_BUILD
  printf("# FSW_FPCW set by the build: FP control-word save %s\n",
         (FSW_FPCW + 0) ? "on" : "off");
#elif defined(FSW_FPCW)
  printf("# FSW_FPCW not set by the build: FP control-word save %s "
         "(switch.h default)\n", FSW_FPCW ? "on" : "off");
#else
  printf("# FSW_FPCW not set by the build\n");
#endif
#if !BENCH_RAW_FSW
  printf("# raw fiberswap: n/a (switch.h not used)\n");
#endif
  printf("# %zu runs of %zu round trips (ucontext %zu), interleaved; "
         "ns per resume+yield round trip\n",
         runs, n, nuc);
}

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "--callgrind") == 0)
    return callgrind_mode(argc, argv);

  size_t runs = getcount(argc, argv, 1, "FSW_BENCH_RUNS", 9);
  size_t n = getcount(argc, argv, 2, "FSW_BENCH_N", 2000000);
  size_t nuc = getcount(argc, argv, 3, "FSW_BENCH_N_UC", 200000);

  cpu_set_t cpus;
  if (sched_getaffinity(0, sizeof cpus, &cpus) == 0 && CPU_COUNT(&cpus) > 1)
    fprintf(stderr, "bench_c: not pinned to one CPU; try taskset -c 1\n");

  double *ns = calloc(NCASES * runs, sizeof *ns);
  if (ns == NULL) die("calloc", strerror(errno));
  size_t count[NCASES];
  for (size_t c = 0; c < NCASES; c++) {
    count[c] = cases[c].kind == IMPL_UC ? nuc : n;
    cases[c].setup();
  }

  /* Warm up every case (caches, branch predictors, first touch of stacks),
   * then time run r of every case before run r+1 of any, rotating which
   * case goes first so that no case always follows the same one. */
  uintptr_t sum = 0, base = 1;
  for (size_t c = 0; c < NCASES; c++) {
    sum += cases[c].run(count[c] / 4 + 1, base);
    base += count[c];
  }
  for (size_t r = 0; r < runs; r++) {
    fprintf(stderr, "run %zu/%zu\n", r + 1, runs);
    for (size_t k = 0; k < NCASES; k++) {
      size_t c = (r + k) % NCASES;
      double t0 = now_ns();
      sum += cases[c].run(count[c], base);
      double t1 = now_ns();
      base += count[c];
      ns[c * runs + r] = (t1 - t0) / (double)count[c];
    }
  }
  for (size_t c = 0; c < NCASES; c++) cases[c].teardown();

  double med[NCASES], min[NCASES];
  for (size_t c = 0; c < NCASES; c++) {
    med[c] = median(&ns[c * runs], runs);
    min[c] = ns[c * runs]; /* sorted by median() */
  }

  header(runs, n, nuc);
  printf("%-16s %-5s %10s %8s  %s\n", "implementation", "path", "median ns",
         "min ns", "ratio to fcontext (same path)");
  const char *paths[] = {"api", "raw"};
  const char *impls[] = {"fiberswap", "fcontext", "ucontext"};
  for (size_t p = 0; p < 2; p++) {
    const bench_case *fc = findcase("fcontext", paths[p]);
    double ref = med[fc - cases];
    for (size_t i = 0; i < 3; i++) {
      const bench_case *c = findcase(impls[i], paths[p]);
      if (c == NULL) {
        printf("%-16s %-5s %10s %8s  %s\n", impls[i], paths[p], "n/a", "n/a",
               "n/a");
        continue;
      }
      size_t k = (size_t)(c - cases);
      printf("%-16s %-5s %10.2f %8.2f  %.2fx\n", c->impl, c->path, med[k],
             min[k], med[k] / ref);
    }
  }

  double api = med[findcase("fiberswap", "api") - cases] /
               med[findcase("fcontext", "api") - cases];
  printf("fiberswap api = %.2fx fcontext api: target <= 1.0x %s, "
         "goal <= 0.9x %s\n",
         api, api <= 1.0 ? "met" : "NOT met", api <= 0.9 ? "met" : "NOT met");
  fprintf(stderr, "checksum: %#jx\n", (uintmax_t)sum);
  free(ns);
  return 0;
}
