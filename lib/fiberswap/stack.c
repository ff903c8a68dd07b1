/* stack.c: mapping, guarding, trimming and pooling fiber stacks.
 * Mapping a stack costs microseconds; the per-thread pool makes reuse free. */
#define _GNU_SOURCE
#include "stack.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "switch.h"
#include "tools.h"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102 /* Linux >= 6.13; older kernels say EINVAL */
#endif

#define POOL_MAX 256          /* stacks a thread keeps for reuse */
#define KEEP_BYTES (16 * 1024) /* top of a pooled stack never trimmed */

enum { GUARD_UNKNOWN, GUARD_MADVISE, GUARD_MPROTECT };
static int guard_kind = GUARD_UNKNOWN; /* process-wide, decided once */

/* A released stack, described by a record in its own top bytes. */
struct pooled {
  struct pooled *next;
  fsw_stack s;
};

struct pool {
  struct pooled *head;
  size_t count;
  int registered; /* the thread-exit drain is armed */
};
static FSW_TLS struct pool pool;

static pthread_key_t pool_key;
static int pool_key_ok; /* pthread_key_create succeeded */
static pthread_once_t pool_key_once = PTHREAD_ONCE_INIT;

/* The system page size, asked once.  Threads may race to fill the cache:
 * they all store the same value, atomically. */
size_t fsw__page_size(void) {
  static size_t page;
  size_t p = __atomic_load_n(&page, __ATOMIC_RELAXED);
  if (p == 0) {
    p = (size_t)sysconf(_SC_PAGESIZE);
    __atomic_store_n(&page, p, __ATOMIC_RELAXED);
  }
  return p;
}

fsw_err fsw__stack_size_check(size_t request, size_t *usable) {
  size_t page = fsw__page_size();
  if (request == 0) return FSW_ESTACKZERO;
  if (request < FSW_STACK_MIN) return FSW_ESTACKSMALL;
  if (request > FSW_STACK_MAX) return FSW_ESTACKLARGE;
  *usable = (request + page - 1) & ~(page - 1);
  return FSW_OK;
}

/* Count the lines of /proc/self/maps, i.e. this process's mappings.
 * Returns 0 if it cannot be read. */
static long count_maps(void) {
  char buf[8192];
  long n = 0;
  ssize_t got;
  int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  while ((got = read(fd, buf, sizeof buf)) > 0)
    for (ssize_t i = 0; i < got; i++) n += buf[i] == '\n';
  close(fd);
  return n;
}

/* Read a small integer file such as /proc/sys/vm/max_map_count; -1 if not. */
static long read_long(const char *path) {
  char buf[64];
  ssize_t got;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  got = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (got <= 0) return -1;
  buf[got] = '\0';
  return strtol(buf, NULL, 10);
}

/* After an ENOMEM from mmap or mprotect: was it the mapping-count limit
 * rather than memory?  Leaves errno as it found it. */
static fsw_err classify_enomem(fsw_err otherwise) {
  int saved = errno;
  long max = read_long("/proc/sys/vm/max_map_count");
  long now = count_maps();
  errno = saved;
  if (max > 0 && now > 0 && now + 4 >= max) return FSW_EMAPLIMIT;
  return otherwise;
}

/* Does this kernel know MADV_GUARD_INSTALL?  Asks it once, on a scratch
 * page, so the answer is known before the first stack needs it. */
static int kernel_has_guard_install(void) {
  size_t page = fsw__page_size();
  int saved = errno, ok;
  void *p = mmap(NULL, page, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) {
    errno = saved;
    return 1; /* cannot tell; install_guard still falls back on EINVAL */
  }
  ok = madvise(p, page, MADV_GUARD_INSTALL) == 0 || errno != EINVAL;
  munmap(p, page);
  errno = saved;
  return ok;
}

/* Pick the guard method once per process: the FIBERSWAP_GUARD=mprotect
 * environment variable forces the fallback, as on kernels before 6.13. */
static int guard_method(void) {
  int kind = __atomic_load_n(&guard_kind, __ATOMIC_RELAXED);
  if (kind == GUARD_UNKNOWN) {
    const char *env = getenv("FIBERSWAP_GUARD");
    if (env && strcmp(env, "mprotect") == 0)
      kind = GUARD_MPROTECT;
    else
      kind = kernel_has_guard_install() ? GUARD_MADVISE : GUARD_MPROTECT;
    __atomic_store_n(&guard_kind, kind, __ATOMIC_RELAXED);
  }
  return kind;
}

const char *fsw_guard_kind(void) {
  return guard_method() == GUARD_MADVISE ? "madvise" : "mprotect";
}

/* Make the page at `base` inaccessible.  Falls back from MADV_GUARD_INSTALL
 * to mprotect for good the first time the kernel does not know it. */
static fsw_err install_guard(char *base, size_t page) {
  if (guard_method() == GUARD_MADVISE) {
    if (madvise(base, page, MADV_GUARD_INSTALL) == 0) return FSW_OK;
    if (errno != EINVAL) return FSW_EGUARD;
    __atomic_store_n(&guard_kind, GUARD_MPROTECT, __ATOMIC_RELAXED);
  }
  if (mprotect(base, page, PROT_NONE) == 0) return FSW_OK;
  return errno == ENOMEM ? classify_enomem(FSW_EGUARD) : FSW_EGUARD;
}

/* Map and guard a fresh stack. */
static fsw_err map_stack(fsw_stack *s, size_t usable) {
  size_t page = fsw__page_size();
  size_t len = usable + page;
  fsw_err err;
  char *base = mmap(NULL, len, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED)
    return errno == ENOMEM ? classify_enomem(FSW_ENOMEM) : FSW_ENOMEM;
  err = install_guard(base, page);
  if (err != FSW_OK) {
    int saved = errno;
    munmap(base, len);
    errno = saved;
    return err;
  }
  s->base = base;
  s->lo = base + page;
  s->size = usable;
  s->vg_id = 0;
#if FSW_VALGRIND
  s->vg_id = VALGRIND_STACK_REGISTER(base + page, base + len);
#endif
  return FSW_OK;
}

static void unmap_stack(fsw_stack *s) {
#if FSW_VALGRIND
  VALGRIND_STACK_DEREGISTER(s->vg_id);
#endif
  munmap(s->base, (size_t)(s->lo - s->base) + s->size);
}

fsw_err fsw__stack_acquire(fsw_stack *s, size_t usable) {
  struct pooled **link;
  for (link = &pool.head; *link; link = &(*link)->next) {
    struct pooled *p = *link;
    if (p->s.size == usable) {
      *link = p->next;
      pool.count--;
      *s = p->s;
      return FSW_OK;
    }
  }
  return map_stack(s, usable);
}

/* Drain a pool: unmap every stack in it.  Returns how many. */
static size_t drain(struct pool *p) {
  size_t n = 0;
  while (p->head) {
    struct pooled *q = p->head;
    fsw_stack s = q->s;
    p->head = q->next;
    unmap_stack(&s);
    n++;
  }
  p->count = 0;
  return n;
}

static void drain_at_exit(void *p) { drain(p); }

static void make_key(void) {
  pool_key_ok = pthread_key_create(&pool_key, drain_at_exit) == 0;
}

/* Reading a suspended or dead fiber's stack is deliberate here: ASan would
 * see frame redzones and valgrind popped (undefined) stack words. */
#if FSW_ASAN
#define RAW_READ __attribute__((no_sanitize_address))
#else
#define RAW_READ
#endif
#if FSW_VALGRIND
#define QUIET_BEGIN VALGRIND_DISABLE_ERROR_REPORTING
#define QUIET_END(result)                                                \
  do {                                                                   \
    VALGRIND_MAKE_MEM_DEFINED(&(result), sizeof(result));                \
    VALGRIND_ENABLE_ERROR_REPORTING;                                     \
  } while (0)
#else
#define QUIET_BEGIN ((void)0)
#define QUIET_END(result) ((void)0)
#endif

/* Did the stack's user go below the kept top?  Samples the 4 KiB just
 * below it: a call chain that crossed them left return addresses there,
 * while memory never touched still reads as zero.  Eight words, 512 bytes
 * apart, keep this cheap enough for every release. */
RAW_READ static int ran_deep(const fsw_stack *s, size_t keep) {
  const uintptr_t *probe = /* 4 KiB-aligned */
      (const uintptr_t *)(const void *)(FSW_STACK_HI(s) - keep - 4096);
  uintptr_t any;
  QUIET_BEGIN;
  any = probe[0] | probe[64] | probe[128] | probe[192] | probe[256] |
        probe[320] | probe[384] | probe[511];
  QUIET_END(any);
  return any != 0;
}

void fsw__stack_release(fsw_stack *s) {
  struct pooled *p;
  size_t keep = KEEP_BYTES;
#if FSW_ASAN
  /* Frames abandoned on this stack must not poison its next user. */
  __asan_unpoison_memory_region(FSW_STACK_LO(s), s->size);
#endif
  if (pool.count >= POOL_MAX) {
    unmap_stack(s);
    return;
  }
  if (!pool.registered) {
    pthread_once(&pool_key_once, make_key);
    if (pool_key_ok) pthread_setspecific(pool_key, &pool);
    pool.registered = 1;
  }
  if (s->size > keep + 4096 && ran_deep(s, keep))
    madvise(FSW_STACK_LO(s), s->size - keep, MADV_DONTNEED);
  p = (struct pooled *)(void *)(FSW_STACK_HI(s) - sizeof *p); /* aligned */
  p->s = *s;
  p->next = pool.head;
  pool.head = p;
  pool.count++;
}

RAW_READ size_t fsw__stack_used(const fsw_stack *s) {
  const uintptr_t *w = (const uintptr_t *)(const void *)FSW_STACK_LO(s);
  const uintptr_t *end = (const uintptr_t *)(const void *)FSW_STACK_HI(s);
  QUIET_BEGIN;
  while (w < end && *w == 0) w++;
  QUIET_END(w);
  return (size_t)((const char *)end - (const char *)w);
}

size_t fsw_pool_count(void) { return pool.count; }

size_t fsw_pool_drain(void) { return drain(&pool); }
