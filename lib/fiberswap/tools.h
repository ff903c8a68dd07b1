/* tools.h: hooks that let ASan and valgrind follow execution across stacks.
 * Each hook compiles to nothing unless its tool is built in or available. */
#ifndef FSW_TOOLS_H
#define FSW_TOOLS_H

#include <stddef.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FSW_ASAN 1
#endif
#endif
#if !defined(FSW_ASAN) && defined(__SANITIZE_ADDRESS__)
#define FSW_ASAN 1
#endif
#ifndef FSW_ASAN
#define FSW_ASAN 0
#endif

#if FSW_ASAN
/* From the sanitizer runtime (sanitizer/common_interface_defs.h and
 * asan_interface.h); declared here so no sanitizer headers are needed. */
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom,
                                    size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save,
                                     const void **bottom_old,
                                     size_t *size_old);
void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
#endif

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FSW_TSAN 1
#endif
#endif
#if !defined(FSW_TSAN) && defined(__SANITIZE_THREAD__)
#define FSW_TSAN 1
#endif
#ifndef FSW_TSAN
#define FSW_TSAN 0
#endif

#if FSW_TSAN
/* From the TSan runtime (sanitizer/tsan_interface.h): each fiber gets a
 * context of its own, so TSan's per-thread shadow stack never sees frames
 * entered on one stack return on another. */
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
#endif

#if !defined(FSW_NO_VALGRIND) && defined(__has_include)
#if __has_include(<valgrind/valgrind.h>) && __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#include <valgrind/valgrind.h>
#define FSW_VALGRIND 1
#endif
#endif
#ifndef FSW_VALGRIND
#define FSW_VALGRIND 0
#endif

#endif
