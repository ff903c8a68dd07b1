/* bench_scale.c: the C side of `make bench-scale`.
 *
 *   bench_scale N STACKSIZE
 *
 * Creates N fibers of STACKSIZE bytes, resumes each once (so each holds a
 * touched stack page) and leaves them suspended; then finishes and destroys
 * them all.  For scale, it also times the kernel alone giving N fresh pages,
 * one per STACKSIZE stride, in one plain mapping: no fiber can be created
 * for less, since each needs one page of its own.  Prints "key value" lines
 * (ns per fiber or page; mappings added) for bench_scale.lua to collect. */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "fiberswap.h"

static double cpu_seconds(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static long count_maps(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  long n = 0;
  int c;
  if (f == NULL) return -1;
  while ((c = getc(f)) != EOF) n += c == '\n';
  fclose(f);
  return n;
}

static void *body(void *arg, void *in) {
  void *next = NULL;
  (void)in;
  if (fsw_yield(arg, &next) != FSW_OK) return NULL;
  return next;
}

int main(int argc, char **argv) {
  size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
  size_t stack = argc > 2 ? strtoul(argv[2], NULL, 10) : FSW_STACK_DEFAULT;
  size_t page = (size_t)sysconf(_SC_PAGESIZE), stride = stack + page, bad = 0;
  fsw_fiber **f = calloc(n, sizeof *f);
  double t0, t1, t2;
  long m0 = count_maps(), m1;
  volatile char *mem;

  if (f == NULL || n == 0) {
    fprintf(stderr, "bench_scale: usage: bench_scale N STACKSIZE (N > 0)\n");
    return 2;
  }
  t0 = cpu_seconds();
  for (size_t i = 0; i < n; i++) {
    void *out = NULL;
    fsw_err err = fsw_create(&f[i], body, (void *)(uintptr_t)i, stack);
    if (err != FSW_OK) {
      fprintf(stderr, "bench_scale: fiber %zu: %s\n", i, fsw_strerror(err));
      return 1;
    }
    if (fsw_resume(f[i], NULL, &out) != FSW_OK || out != (void *)(uintptr_t)i) bad++;
  }
  t1 = cpu_seconds();
  m1 = count_maps();
  for (size_t i = 0; i < n; i++) {
    void *out = NULL;
    if (fsw_resume(f[i], (void *)(uintptr_t)(i + 1), &out) != FSW_OK ||
        out != (void *)(uintptr_t)(i + 1))
      bad++;
    if (fsw_destroy(f[i]) != FSW_OK) bad++;
  }
  t2 = cpu_seconds();
  fsw_pool_drain();
  printf("c_create_ns %.0f\nc_finish_ns %.0f\nc_maps_added %ld\nc_maps_after %ld\n",
         (t1 - t0) / (double)n * 1e9, (t2 - t1) / (double)n * 1e9, m1 - m0, count_maps() - m0);
  free(f);

  mem = mmap(NULL, n * stride, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) {
    perror("bench_scale: mmap");
    return 1;
  }
  t0 = cpu_seconds();
  for (size_t i = 0; i < n; i++) mem[(i + 1) * stride - 64] = 1;
  t1 = cpu_seconds();
  printf("page_ns %.0f\n", (t1 - t0) / (double)n * 1e9);
  munmap((void *)mem, n * stride);
  if (bad) fprintf(stderr, "bench_scale: %zu wrong values\n", bad);
  return bad != 0;
}
