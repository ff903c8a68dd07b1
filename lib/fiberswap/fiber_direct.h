/* fiber_direct.h: the switch the Lua binding's round trip uses where it
 * can (binding/fiberswap.c).  Internal: not installed, and not part of the
 * library's API. */
#ifndef FSW_FIBER_DIRECT_H
#define FSW_FIBER_DIRECT_H

#include "fiberswap.h"
#include "switch.h"
#include "tools.h"

/* With the x86-64 switch and no sanitizer, a switch can hand its value
 * back as its return value, straight to whoever called the code that
 * tail-called fsw__vtransfer.  ASan and TSan need the switch wrapped, and
 * ucontext returns through C: there, fsw_transfer. */
#define FSW_DIRECT (!FSW_UCONTEXT && !FSW_ASAN && !FSW_TSAN)

#if FSW_DIRECT
/* fsw_transfer(f, value, out), except for what the side that continues
 * later gets.  With `out`, as fsw_transfer: the value is stored there and
 * 0 is returned.  Without (NULL), the value it is handed comes back as the
 * return value; a value handed with its sign bit set instead names, with
 * that bit clear, a pointer to a pointer to a function `int fn(void *p)`:
 * that function runs in its place, called with p, and what it returns is
 * returned.  So code that tail-calls this with `out` NULL returns to its
 * own caller with whatever the other side decides.  The caller must know
 * the switch is valid (f suspended or fresh; a yield inside a fiber): where
 * fsw_transfer would return an error, this prints it and aborts. */
int fsw__vtransfer(fsw_fiber *f, void *value, void **out)
    __attribute__((visibility("hidden")));

/* fsw_create for a fiber resumed only through fsw__vtransfer with `out`
 * NULL: `extra` bytes are kept for the caller on the new stack itself
 * (their address in *room, which is also fn's argument), and when fn
 * returns, its value goes to the resumer as fsw__vtransfer hands values
 * (returned, or a function to continue in).  fsw_destroy gives the stack,
 * room included, back. */
fsw_err fsw__create_v(fsw_fiber **out, fsw_fn fn, size_t stacksize,
                      size_t extra, void **room)
    __attribute__((visibility("hidden")));
#endif

#endif
