/* switch.h: the internal machine-context interface under the fiber layer.
 * A context is what a suspended stack needs to continue; one switch saves the
 * running one and continues another, handing it a pointer-sized value. */
#ifndef FSW_SWITCH_H
#define FSW_SWITCH_H

#if defined(FSW_BACKEND_UCONTEXT) || !defined(__x86_64__) || defined(_WIN32)
#define FSW_UCONTEXT 1
#else
#define FSW_UCONTEXT 0
#endif

/* Thread-local state uses the initial-exec model: one %fs-relative access,
 * where PIC code would otherwise call __tls_get_addr on every use.  Inside
 * a dlopen'd module it draws on the small static-TLS surplus glibc keeps
 * for that; the asm backend needs about 100 bytes of it.  The ucontext
 * backend's state holds a whole ucontext_t, too big for the surplus, so it
 * keeps the default model. */
#if FSW_UCONTEXT
#define FSW_TLS __thread
#else
#define FSW_TLS __thread __attribute__((tls_model("initial-exec")))
#endif

/* FSW_FPCW=0 builds the switch without the MXCSR/x87 control-word save,
 * for measuring what that save costs.  The ABI makes those bits
 * callee-saved, so a library build always keeps it on. */
#ifndef FSW_FPCW
#define FSW_FPCW 1
#endif

#if !FSW_UCONTEXT
/* The frame fsw__switch leaves at a suspended context's saved rsp.  The .S
 * file uses these offsets by name; fiber setup writes them for new stacks. */
#define FSW_FRAME_FPCW 0  /* MXCSR (4 bytes) then x87 control word (2) */
#define FSW_FRAME_OUT 8   /* where to store the value when continued */
#define FSW_FRAME_R15 16
#define FSW_FRAME_R14 24
#define FSW_FRAME_R13 32
#define FSW_FRAME_R12 40
#define FSW_FRAME_RBX 48
#define FSW_FRAME_RBP 56
#define FSW_FRAME_RET 64  /* where the closing `ret` jumps */
#define FSW_FRAME_SIZE 72 /* bytes the switch pops, the return address too */
#endif

#ifndef __ASSEMBLER__
#include <stddef.h>

/* What a start function returns, if it returns: its context is then dead,
 * and the context at to_sp (an fsw__switch target) is continued with
 * value, as by a switch that saves nothing. */
typedef struct fsw__exit {
  void *to_sp;
  void *value;
} fsw__exit;

/* What runs first on a new context.  The x86-64 backend continues what it
 * returns; the ucontext backend aborts if it returns. */
typedef fsw__exit (*fsw_start_fn)(void *data, void *value);

#if FSW_UCONTEXT
#include <ucontext.h>
typedef struct fsw_ctx {
  ucontext_t uc;
  fsw_start_fn start; /* only for a context made by fsw__ctx_init */
  void *data;
} fsw_ctx;
#else
typedef struct fsw_ctx {
  void *sp; /* saved rsp: points at the frame described above */
} fsw_ctx;

/* Landing pad for a new context: calls start(data, value) with r12 = data,
 * rbx = start and the switched-in value in rsi, then continues what start
 * returns.  Never called directly. */
void fsw__trampoline(void);
#endif

/* Save the running context in `from` and continue the one whose saved
 * stack pointer is `to_sp` (a context's `sp`; for ucontext, the fsw_ctx
 * itself), handing it `value`.  When `from` is continued in turn, the value
 * handed to it is stored in *out (unless out is NULL) and 0 is returned.
 * The fiber layer tail-calls this, so its `ret` lands in the caller of
 * fsw_resume or fsw_yield; `value` and `out` come in the registers of
 * those functions' own `in`/`out` arguments, so resume passes them on
 * unmoved.  x86-64: the .S file; else ctx_ucontext.c. */
int fsw__switch(fsw_ctx *from, void *value, void **out, void *to_sp);

/* x86-64: fsw__switch, whose restore returns the value instead where the
 * restored context's `out` was NULL (see the .S file); for the Lua
 * binding's round trip, through fsw__vtransfer (fiber_direct.h). */
#if !FSW_UCONTEXT
int fsw__vswitch(fsw_ctx *from, void *value, void **out, void *to_sp);
#endif

/* fsw__switch for the first switch to a context made by fsw__ctx_init
 * (fsw__switch works there too).  x86-64: it enters the trampoline by
 * `jmp`, leaving the caller's return address on the return-stack buffer
 * for the context's last switch, when start returns, to pair with. */
#if FSW_UCONTEXT
#define fsw__switch_fresh fsw__switch
#else
int fsw__switch_fresh(fsw_ctx *from, void *value, void **out, void *to_sp);
#endif

/* The `to_sp` argument of fsw__switch for context `c`. */
#if FSW_UCONTEXT
#define FSW_CTX_TARGET(c) ((void *)(c))
#else
#define FSW_CTX_TARGET(c) ((c)->sp)
#endif

/* Prepare `c` so the first switch to it runs start(data, value) on the
 * stack [lo, hi).  `hi` must be 16-byte aligned. */
void fsw__ctx_init(fsw_ctx *c, void *lo, void *hi, fsw_start_fn start,
                   void *data);
#endif

#endif
