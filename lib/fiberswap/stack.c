/* stack.c: mapping, guarding, trimming and pooling fiber stacks.
 *
 * A released stack goes to one of three places:
 * - this thread's pool of up to POOL_MAX stacks, kept warm (their top
 *   KEEP_BYTES stay in memory), so reusing one costs no system call;
 * - past that, this thread's spill list, which gives SPILL_MAX stacks at a
 *   time to the reserve in one vectored madvise (until then they are
 *   reused like pooled ones, and trimmed alike);
 * - the process-wide reserve of regions.  A region is one mapping carved
 *   into slots (guard page + usable bytes), mapped and guarded with
 *   MADV_GUARD_INSTALL in one go for up to REGION_SLOTS stacks.  A slot
 *   given back has its memory dropped (MADV_DONTNEED) and waits for reuse;
 *   a region with no slot out is unmapped (a batch that leaves its region
 *   so skips the madvise: the unmap drops the memory).
 * Creating a million fibers thus pays a few system calls per region, not
 * one per stack, and the mapping count grows per region, not per stack. */
#define _GNU_SOURCE
#include "stack.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "switch.h"
#include "tools.h"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102 /* Linux >= 6.13; older kernels say EINVAL */
#endif

#define POOL_MAX 256          /* stacks a thread keeps warm for reuse */
#define KEEP_BYTES (16 * 1024) /* top of a pooled stack never trimmed */
#define SPILL_MAX 32          /* stacks given to the reserve in one batch */
#define REGION_SLOTS 64       /* most stacks in a region (bits of a mask) */
#define REGION_FIRST 4        /* slots of the first region; doubles after */
#define REGION_BYTES ((size_t)256 << 20) /* most address space per region */
#define PIDFD_SELF_ (-10000)  /* linux/pidfd.h's PIDFD_SELF, Linux >= 6.14 */

enum { GUARD_UNKNOWN, GUARD_MADVISE, GUARD_MPROTECT };
static int guard_kind = GUARD_UNKNOWN; /* process-wide, decided once */

/* A released stack, described by a record in its own top bytes. */
struct pooled {
  struct pooled *next;
  fsw_stack s;
};

struct pool {
  struct pooled *head;  /* warm stacks, at most POOL_MAX */
  size_t count;
  struct pooled *spill; /* on their way to the reserve, < SPILL_MAX */
  size_t spilled;
  int registered; /* the thread-exit drain is armed */
};
static FSW_TLS struct pool pool;

/* One mapping: this header's page, then `nslots` slots; slot i, at
 * base + i * slot, is a guard page and then the usable bytes.  The header
 * sits below slot 0's guard, where no stack can run into it, and in the
 * mapping, so nothing is allocated (or left for a leak checker to find
 * once a dlclosed module's globals are gone).  reserve_lock guards every
 * field. */
struct fsw_region {
  struct fsw_region *prev, *next; /* in open_regions while it has room */
  char *base;
  size_t slot;      /* page + usable bytes */
  unsigned nslots;  /* at most REGION_SLOTS */
  unsigned carved;  /* slots [0, carved) have been handed out before */
  unsigned out;     /* slots handed out and not back in the reserve */
  int listed;       /* in open_regions */
  uint64_t free;    /* carved slots back in the reserve, memory dropped */
  uint64_t guarded; /* slots whose guard page is in place */
};

static pthread_mutex_t reserve_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fsw_region *open_regions; /* regions with a free or new slot */
static size_t region_count;             /* regions mapped */
static pthread_once_t reserve_once = PTHREAD_ONCE_INIT;
/* process_madvise on PIDFD_SELF: works (1), does not (0), unknown (-1). */
static int vector_ok = -1;

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
    return 1; /* cannot tell; guard_region still falls back on EINVAL */
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

/* Give the same advice for every range in v[0..n): in one process_madvise
 * on PIDFD_SELF where the kernel takes it (Linux >= 6.14), else range by
 * range.  Returns 0, or -1 with errno from the madvise that failed. */
static int advise_all(struct iovec *v, size_t n, int advice) {
#ifdef SYS_process_madvise
  int ok = __atomic_load_n(&vector_ok, __ATOMIC_RELAXED);
  if (ok == -1) {
    ok = 1;
#if FSW_VALGRIND
    if (RUNNING_ON_VALGRIND) ok = 0; /* valgrind does not know the call */
#endif
    __atomic_store_n(&vector_ok, ok, __ATOMIC_RELAXED);
  }
  if (ok && n > 1) {
    size_t want = 0;
    long got;
    int saved = errno;
    for (size_t i = 0; i < n; i++) want += v[i].iov_len;
    got = syscall(SYS_process_madvise, PIDFD_SELF_, v, n, advice, 0u);
    if (got >= 0 && (size_t)got == want) return 0;
    if (got < 0 && (errno == ENOSYS || errno == EBADF || errno == EPERM))
      __atomic_store_n(&vector_ok, 0, __ATOMIC_RELAXED); /* never will */
    errno = saved; /* refused or short: range by range, which says why */
  }
#endif
  for (size_t i = 0; i < n; i++)
    if (madvise(v[i].iov_base, v[i].iov_len, advice) != 0) return -1;
  return 0;
}

/* Make the page at `base` inaccessible with mprotect (the fallback). */
static fsw_err protect_guard(char *base, size_t page) {
  if (mprotect(base, page, PROT_NONE) == 0) return FSW_OK;
  return errno == ENOMEM ? classify_enomem(FSW_EGUARD) : FSW_EGUARD;
}

/* Guard every slot of a new region with MADV_GUARD_INSTALL, in one call
 * where the kernel allows.  If the kernel does not know the advice, switch
 * to the mprotect fallback for good: slots are then guarded one by one as
 * they are handed out. */
static fsw_err guard_region(struct fsw_region *r, size_t page) {
  struct iovec v[REGION_SLOTS];
  if (guard_method() != GUARD_MADVISE) return FSW_OK;
  for (unsigned i = 0; i < r->nslots; i++) {
    v[i].iov_base = r->base + (size_t)i * r->slot;
    v[i].iov_len = page;
  }
  if (advise_all(v, r->nslots, MADV_GUARD_INSTALL) == 0) {
    r->guarded = ~(uint64_t)0 >> (REGION_SLOTS - r->nslots);
    return FSW_OK;
  }
  if (errno != EINVAL) return FSW_EGUARD; /* adds no mapping: not the limit */
  __atomic_store_n(&guard_kind, GUARD_MPROTECT, __ATOMIC_RELAXED);
  return FSW_OK;
}

/* The forking thread holds the reserve's lock across fork, so the child
 * finds it free whatever other threads were doing. */
static void reserve_lock_take(void) { pthread_mutex_lock(&reserve_lock); }
static void reserve_lock_give(void) { pthread_mutex_unlock(&reserve_lock); }
static void reserve_init(void) {
  pthread_atfork(reserve_lock_take, reserve_lock_give, reserve_lock_give);
}

static void region_link(struct fsw_region *r) {
  r->prev = NULL;
  r->next = open_regions;
  if (open_regions) open_regions->prev = r;
  open_regions = r;
  r->listed = 1;
}

static void region_unlink(struct fsw_region *r) {
  if (r->prev)
    r->prev->next = r->next;
  else
    open_regions = r->next;
  if (r->next) r->next->prev = r->prev;
  r->listed = 0;
}

/* A new region joins open_regions, counted. */
static void region_add(struct fsw_region *r) {
  region_link(r);
  __atomic_fetch_add(&region_count, 1, __ATOMIC_RELAXED);
}

/* A region leaves the books, to be unmapped: push it on `dead`. */
static struct fsw_region *region_remove(struct fsw_region *r, struct fsw_region *dead) {
  if (r->listed) region_unlink(r);
  __atomic_fetch_sub(&region_count, 1, __ATOMIC_RELAXED);
  r->next = dead;
  return r;
}

/* Map a region for stacks of `usable` bytes: REGION_FIRST slots while the
 * process has no region, twice as many per region it has, at most
 * REGION_SLOTS and REGION_BYTES.  region_count is atomic and read here
 * without the lock: it only sizes the region. */
static fsw_err region_new(struct fsw_region **out, size_t usable) {
  size_t page = fsw__page_size(), slot = usable + page;
  size_t have = __atomic_load_n(&region_count, __ATOMIC_RELAXED);
  size_t n = (size_t)REGION_FIRST << (have < 4 ? have : 4);
  struct fsw_region *r;
  char *map;
  fsw_err err;
  if (n > REGION_SLOTS) n = REGION_SLOTS;
  if (n > REGION_BYTES / slot) n = REGION_BYTES / slot;
  if (n == 0) n = 1;
  map = mmap(NULL, page + n * slot, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (map == MAP_FAILED)
    return errno == ENOMEM ? classify_enomem(FSW_ENOMEM) : FSW_ENOMEM;
  r = (struct fsw_region *)(void *)map; /* zero-filled */
  r->base = map + page;
  r->slot = slot;
  r->nslots = (unsigned)n;
  err = guard_region(r, page);
  if (err != FSW_OK) {
    int saved = errno;
    munmap(map, page + n * slot);
    errno = saved;
    return err;
  }
  *out = r;
  return FSW_OK;
}

/* Unmap a chain of regions (linked by `next`) that nothing uses, headers
 * and all; called without the lock. */
static void regions_unmap(struct fsw_region *dead) {
  size_t page = fsw__page_size();
  while (dead) {
    struct fsw_region *r = dead;
    dead = r->next;
    if (munmap(r, page + (size_t)r->nslots * r->slot) != 0) {
      /* At vm.max_map_count, unmapping part of merged mappings can fail
       * (the split needs one more): keep the region, idle, for reuse, and
       * try again when it is next idle.  Its stacks may still hold memory
       * (reserve_put leaves that to the unmap): drop it.  MADV_GUARD_INSTALL
       * guards survive MADV_DONTNEED (checked on Linux 6.18). */
      (void)madvise(r->base, (size_t)r->nslots * r->slot, MADV_DONTNEED);
      pthread_mutex_lock(&reserve_lock);
      /* The mprotect fallback's guards split a region into many mappings,
       * and then its munmap does not need one more; but should it fail
       * anyway, an idle region keeps no guards (they cost mappings). */
      if (guard_method() == GUARD_MPROTECT && r->guarded != 0 &&
          mprotect(r->base, (size_t)r->nslots * r->slot, PROT_READ | PROT_WRITE) == 0)
        r->guarded = 0;
      region_add(r);
      pthread_mutex_unlock(&reserve_lock);
    }
  }
}

/* Make slot `i` of `r` the stack `s`, guarding it first if the mprotect
 * fallback left it bare.  Called with the lock held. */
static fsw_err slot_take(struct fsw_region *r, unsigned i, fsw_stack *s) {
  size_t page = fsw__page_size();
  uint64_t bit = (uint64_t)1 << i;
  char *base = r->base + (size_t)i * r->slot;
  if (!(r->guarded & bit)) {
    fsw_err err = protect_guard(base, page);
    if (err != FSW_OK) return err;
    r->guarded |= bit;
  }
  s->base = base;
  s->lo = base + page;
  s->size = r->slot - page;
  s->region = r;
  s->vg_id = 0;
#if FSW_VALGRIND
  s->vg_id = VALGRIND_STACK_REGISTER(s->lo, s->lo + s->size);
#endif
  return FSW_OK;
}

/* Take a stack of `usable` bytes from the reserve, mapping a new region
 * when no region of that size has room. */
static fsw_err reserve_take(fsw_stack *s, size_t usable) {
  size_t slot = usable + fsw__page_size();
  struct fsw_region *r, *fresh = NULL, *dead = NULL;
  unsigned i;
  fsw_err err;
  int saved, is_new = 0;
  pthread_once(&reserve_once, reserve_init);
  for (;;) {
    pthread_mutex_lock(&reserve_lock);
    for (r = open_regions; r; r = r->next)
      if (r->slot == slot) break;
    if (r || fresh) break;
    pthread_mutex_unlock(&reserve_lock);
    err = region_new(&fresh, usable); /* map outside the lock */
    if (err != FSW_OK) return err;
  }
  if (r == NULL) {
    r = fresh;
    fresh = NULL;
    region_add(r);
  }
  if (r->free) {
    i = (unsigned)__builtin_ctzll(r->free);
    r->free &= ~((uint64_t)1 << i);
  } else {
    i = r->carved++;
    is_new = 1;
  }
  err = slot_take(r, i, s);
  saved = errno;
  if (err == FSW_OK) {
    r->out++;
    if (r->free == 0 && r->carved == r->nslots) region_unlink(r);
  } else if (is_new) {
    r->carved--; /* never handed out: still new */
  } else {
    r->free |= (uint64_t)1 << i;
  }
  if (err != FSW_OK && r->out == 0) dead = region_remove(r, NULL); /* unused */
  pthread_mutex_unlock(&reserve_lock);
  if (fresh) { /* another thread mapped a region meanwhile */
    fresh->next = dead;
    dead = fresh;
  }
  regions_unmap(dead);
  errno = saved;
  return err;
}

/* Give stacks s[0..n) back to the reserve.  A region that this batch
 * leaves with no stack out is unmapped whole, its stacks with it.  The
 * others' memory is dropped in one vectored madvise, and the mprotect
 * fallback's guards come off them (a stack in the reserve costs no
 * mapping); a region they leave idle is unmapped too. */
static void reserve_put(fsw_stack *s, size_t n) {
  struct iovec v[SPILL_MAX];
  unsigned char whole[SPILL_MAX] = {0}; /* its region goes with this batch */
  struct fsw_region *dead = NULL;
  size_t page = fsw__page_size(), nv = 0;
  int saved = errno;
#if FSW_VALGRIND
  for (size_t k = 0; k < n; k++) VALGRIND_STACK_DEREGISTER(s[k].vg_id);
#endif
  pthread_mutex_lock(&reserve_lock);
  for (size_t k = 0; k < n; k++) {
    struct fsw_region *r = s[k].region;
    unsigned c = 0;
    if (whole[k]) continue;
    for (size_t j = k; j < n; j++) c += s[j].region == r;
    if (c == r->out) { /* counted from r's first stack in the batch */
      for (size_t j = k; j < n; j++) {
        if (s[j].region != r) continue;
        whole[j] = 1; /* free, should the unmap fail and r be kept */
        r->free |= (uint64_t)1 << ((size_t)(s[j].base - r->base) / r->slot);
      }
      r->out = 0;
      dead = region_remove(r, dead);
    }
  }
  pthread_mutex_unlock(&reserve_lock);
  for (size_t k = 0; k < n; k++) {
    if (whole[k]) continue;
    v[nv].iov_base = FSW_STACK_LO(&s[k]);
    v[nv++].iov_len = s[k].size;
  }
  if (nv > 0) {
    /* Cannot fail on whole private anonymous ranges of our own. */
    (void)advise_all(v, nv, MADV_DONTNEED);
    pthread_mutex_lock(&reserve_lock);
    for (size_t k = 0; k < n; k++) {
      struct fsw_region *r = s[k].region;
      unsigned i;
      uint64_t bit;
      if (whole[k]) continue;
      i = (unsigned)((size_t)(s[k].base - r->base) / r->slot);
      bit = (uint64_t)1 << i;
      if (guard_method() == GUARD_MPROTECT && (r->guarded & bit) &&
          mprotect(s[k].base, page, PROT_READ | PROT_WRITE) == 0)
        r->guarded &= ~bit;
      r->free |= bit;
      if (--r->out == 0) /* the whole region is idle */
        dead = region_remove(r, dead);
      else if (!r->listed)
        region_link(r);
    }
    pthread_mutex_unlock(&reserve_lock);
  }
  regions_unmap(dead);
  errno = saved;
}

/* Give every stack on a list to the reserve, SPILL_MAX at a time. */
static void give_all(struct pooled *head) {
  fsw_stack batch[SPILL_MAX];
  size_t n = 0;
  while (head) {
    batch[n++] = head->s;
    head = head->next; /* read before the madvise drops the memory */
    if (n == SPILL_MAX || head == NULL) {
      reserve_put(batch, n);
      n = 0;
    }
  }
}

/* Unlink and return the first stack of `usable` bytes on a list. */
static struct pooled *take(struct pooled **head, size_t *count, size_t usable) {
  for (struct pooled **link = head; *link; link = &(*link)->next) {
    struct pooled *p = *link;
    if (p->s.size == usable) {
      *link = p->next;
      --*count;
      return p;
    }
  }
  return NULL;
}

fsw_err fsw__stack_acquire(fsw_stack *s, size_t usable) {
  struct pooled *p = take(&pool.head, &pool.count, usable);
  if (p == NULL) p = take(&pool.spill, &pool.spilled, usable);
  if (p == NULL) return reserve_take(s, usable);
  *s = p->s;
  return FSW_OK;
}

/* Drain a pool: its stacks and its spill list go to the reserve.  Returns
 * how many stacks the pool held. */
static size_t drain(struct pool *p) {
  size_t n = p->count;
  give_all(p->head);
  give_all(p->spill);
  p->head = p->spill = NULL;
  p->count = p->spilled = 0;
  return n;
}

/* Thread exit: drain, and re-arm, so that a stack released by a later
 * key destructor of this thread is drained in the next round. */
static void drain_at_exit(void *p) {
  drain(p);
  ((struct pool *)p)->registered = 0;
}

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
  if (!pool.registered) {
    pthread_once(&pool_key_once, make_key);
    if (pool_key_ok) pthread_setspecific(pool_key, &pool);
    pool.registered = 1;
  }
  if (s->size > keep + 4096 && ran_deep(s, keep))
    madvise(FSW_STACK_LO(s), s->size - keep, MADV_DONTNEED);
  p = (struct pooled *)(void *)(FSW_STACK_HI(s) - sizeof *p); /* aligned */
  p->s = *s;
  if (pool.count >= POOL_MAX) { /* to the reserve, SPILL_MAX at a time */
    p->next = pool.spill;
    pool.spill = p;
    if (++pool.spilled == SPILL_MAX) {
      give_all(pool.spill);
      pool.spill = NULL;
      pool.spilled = 0;
    }
    return;
  }
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
