/* harness.h: a minimal test harness for fiberswap's C tests.
 * Each TEST is a function; CHECK records a failure with its line and goes on. */
#ifndef FSW_HARNESS_H
#define FSW_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int h_failed_checks; /* failures inside the current test */
static int h_passed, h_failed;
static const char *h_suite = "c";

/* Record a failed expectation without stopping the test. */
#define CHECK(cond)                                                         \
  do {                                                                      \
    if (!(cond)) {                                                          \
      fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__, __LINE__,   \
              #cond);                                                       \
      h_failed_checks++;                                                    \
    }                                                                       \
  } while (0)

/* Compare two integers and print both on mismatch. */
#define CHECK_EQ(a, b)                                                      \
  do {                                                                      \
    long long h_a = (long long)(a), h_b = (long long)(b);                   \
    if (h_a != h_b) {                                                       \
      fprintf(stderr, "  %s:%d: %s == %s failed: %lld != %lld\n", __FILE__, \
              __LINE__, #a, #b, h_a, h_b);                                  \
      h_failed_checks++;                                                    \
    }                                                                       \
  } while (0)

/* Is `name` one of the comma-separated names in $TEST_ONLY?  Unset or
 * empty means every test runs. */
static int h_selected(const char *name) {
  const char *only = getenv("TEST_ONLY"), *p;
  size_t len = strlen(name);
  if (only == NULL || *only == '\0') return 1;
  for (p = only; (p = strstr(p, name)) != NULL; p += len)
    if ((p == only || p[-1] == ',') && (p[len] == ',' || p[len] == '\0')) return 1;
  return 0;
}

/* How many tests TEST_ONLY names (one per comma-separated name), or the
 * number that ran when it is unset: each named test must exist. */
static int h_wanted(void) {
  const char *only = getenv("TEST_ONLY");
  int n = 1;
  if (only == NULL || *only == '\0') return h_passed + h_failed;
  for (; *only; only++) n += *only == ',';
  return n;
}

/* Run one test function, if selected, and report it TAP-style on stdout. */
#define RUN(fn)                                                             \
  do {                                                                      \
    if (h_selected(#fn)) {                                                  \
      h_failed_checks = 0;                                                  \
      fn();                                                                 \
      if (h_failed_checks == 0) {                                           \
        h_passed++;                                                         \
        printf("ok %d - %s\n", h_passed + h_failed, #fn);                   \
      } else {                                                              \
        h_failed++;                                                         \
        printf("not ok %d - %s\n", h_passed + h_failed, #fn);               \
      }                                                                     \
      fflush(stdout);                                                       \
    }                                                                       \
  } while (0)

/* Print the suite's closing line (summed by the test runner) and exit. */
#define DONE()                                                              \
  do {                                                                      \
    if (h_passed + h_failed != h_wanted()) { /* TEST_ONLY names a test */ \
      fprintf(stderr, "%d tests ran of the %d TEST_ONLY names: %s\n",      \
              h_passed + h_failed, h_wanted(), getenv("TEST_ONLY"));        \
      h_failed++;                                                           \
    }                                                                       \
    printf("%s: %d passed, %d failed\n", h_suite, h_passed, h_failed);      \
    return h_failed != 0;                                                   \
  } while (0)

#endif
