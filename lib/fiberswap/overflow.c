/* overflow.c: the opt-in report of a fiber running off its stack.
 * A SIGSEGV handler on an alternate signal stack names the fiber whose
 * guard page was hit, then lets the fault take its course. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fiberswap.h"
#include "stack.h"
#include "switch.h"

#define ALTSTACK_SIZE (64 * 1024)
#define BELOW_GUARD (64 * 1024) /* a big frame may land past the guard */

static struct sigaction previous; /* what SIGSEGV did before us */
static int installed;             /* our handler is in place */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_key_t altstack_key;
static pthread_once_t altstack_once = PTHREAD_ONCE_INIT;
static int altstack_key_ok;
static FSW_TLS void *altstack; /* this thread's, when we made it */

/* Append decimal or hexadecimal digits of v to p; async-signal-safe. */
static char *put_num(char *p, uintptr_t v, unsigned base) {
  char digits[2 * sizeof v + 1];
  int n = 0;
  do {
    digits[n++] = "0123456789abcdef"[v % base];
    v /= base;
  } while (v != 0);
  if (base == 16) {
    *p++ = '0';
    *p++ = 'x';
  }
  while (n > 0) *p++ = digits[--n];
  return p;
}

static char *put_str(char *p, const char *s) {
  size_t n = strlen(s);
  memcpy(p, s, n);
  return p + n;
}

/* Hand the signal to whatever handled it before.  For the default action,
 * restore it and return: the faulting instruction runs again and the
 * process dies of SIGSEGV exactly as it would have without us. */
static void chain(int sig, siginfo_t *si, void *uc) {
  if (previous.sa_flags & SA_SIGINFO) {
    if (previous.sa_sigaction != NULL) previous.sa_sigaction(sig, si, uc);
    return;
  }
  if (previous.sa_handler == SIG_DFL || previous.sa_handler == SIG_IGN) {
    signal(sig, SIG_DFL); /* ignoring a fault would only loop */
    return;
  }
  previous.sa_handler(sig);
}

static void on_segv(int sig, siginfo_t *si, void *uc) {
  fsw_fiber *f = fsw_current();
  const char *guard = f ? (const char *)fsw_stack_guard(f) : NULL;
  const char *addr = (const char *)si->si_addr;
  size_t page = fsw__page_size();
  if (guard != NULL && addr < guard + page && addr + BELOW_GUARD >= guard) {
    char msg[320], *p = msg;
    p = put_str(p, "fiberswap: fiber stack overflow: fiber ");
    p = put_num(p, (uintptr_t)f, 16);
    p = put_str(p, " ran off its ");
    p = put_num(p, (uintptr_t)fsw_stack_size(f), 10);
    p = put_str(p, "-byte stack (fault at ");
    p = put_num(p, (uintptr_t)addr, 16);
    p = put_str(p, "); give it a larger stack\n");
    if (write(STDERR_FILENO, msg, (size_t)(p - msg)) < 0) { /* nothing to do */
    }
  }
  chain(sig, si, uc);
}

static void free_altstack(void *p) {
  stack_t off;
  memset(&off, 0, sizeof off);
  off.ss_flags = SS_DISABLE;
  sigaltstack(&off, NULL);
  munmap(p, ALTSTACK_SIZE);
}

static void make_key(void) {
  altstack_key_ok = pthread_key_create(&altstack_key, free_altstack) == 0;
}

/* Give this thread an alternate signal stack unless it has one: a handler
 * for an overflow cannot run on the stack that overflowed. */
static void ensure_altstack(void) {
  stack_t cur, ss;
  void *p;
  if (altstack != NULL) return;
  if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE)) return;
  p = mmap(NULL, ALTSTACK_SIZE, PROT_READ | PROT_WRITE,
           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return; /* no report on this thread; still safe */
  memset(&ss, 0, sizeof ss);
  ss.ss_sp = p;
  ss.ss_size = ALTSTACK_SIZE;
  if (sigaltstack(&ss, NULL) != 0) {
    munmap(p, ALTSTACK_SIZE);
    return;
  }
  altstack = p;
  pthread_once(&altstack_once, make_key);
  if (altstack_key_ok) pthread_setspecific(altstack_key, p);
}

void fsw__overflow_thread(void) {
  if (__atomic_load_n(&installed, __ATOMIC_RELAXED)) ensure_altstack();
}

int fsw_catch_overflow(int on) {
  int was;
  pthread_mutex_lock(&lock);
  was = installed;
  if (on && !was) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &previous) == 0) {
      __atomic_store_n(&installed, 1, __ATOMIC_RELAXED);
      ensure_altstack();
    }
  } else if (!on && was) {
    sigaction(SIGSEGV, &previous, NULL);
    __atomic_store_n(&installed, 0, __ATOMIC_RELAXED);
  }
  pthread_mutex_unlock(&lock);
  return was;
}
