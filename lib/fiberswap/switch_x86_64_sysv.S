/* switch_x86_64_sysv.S: fiberswap's context switch for x86-64, System V ABI.
 * The ret trick: push callee-saved state, swap rsp, pop the other side's, ret.
 *
 * Saved frame, at the rsp stored in fsw_ctx.sp (offsets named in switch.h):
 *
 *   slot   offset  contents
 *   FPCW      0    MXCSR (4 bytes), x87 control word (2), 2 bytes unused
 *   OUT       8    void **: where this side wants the value it is handed
 *   R15      16    r15
 *   R14      24    r14
 *   R13      32    r13
 *   R12      40    r12          (new context: the start function's data)
 *   RBX      48    rbx          (new context: the start function)
 *   RBP      56    rbp          (new context: 0, ending frame-pointer chains)
 *   RET      64    return address: where `ret` continues
 *
 * ABI: System V AMD64.  Kept: rbx, rbp, r12-r15, rsp, and the control bits
 * of MXCSR and the x87 control word, which the ABI makes callee-saved.
 * Everything else is caller-saved, so the C caller has already given it up.
 * Alignment: a saved frame sits at rsp = 8 mod 16 (the caller's call left
 * rsp = 8 mod 16 and the frame below RET is 64 bytes), so after the ret
 * that pops it, rsp = 0 mod 16, as a new context's trampoline needs.
 *
 * Mechanism: fsw__switch(from, value, out, to_sp) pushes this side's state,
 * stores rsp in from->sp, loads to_sp into rsp, pops the other side's state,
 * stores `value` through that side's OUT pointer and returns 0 with `ret`.
 * A new context is a frame that fsw__ctx_init planted at the top of a fresh
 * stack, whose RET slot holds fsw__trampoline: the first switch to it
 * (fsw__switch_fresh, or fsw__switch) lands in the trampoline, which calls
 * start(data, value).  When start returns, the context is dead and the
 * trampoline continues the context start named, with the second half of
 * fsw__switch: its last `ret` pairs with the `call` into the first switch,
 * so the return-stack buffer stays balanced over a fiber's whole life.
 *
 * Speed: fsw_resume and fsw_yield tail-call this function, so each switch
 * runs exactly one `ret`, back into the code that called resume or yield.
 * The target rsp comes in a register, never loaded here, so that `ret`
 * resolves early when the return-stack buffer guessed the other side.
 * FP control: both words are saved on every switch.  MXCSR is reloaded on
 * every switch: reading back what stmxcsr just stored stalls (measured on
 * AMD Zen), and an unconditional ldmxcsr is cheaper than that compare.  Its
 * status flags come along, which the ABI allows (they are caller-saved).
 * The x87 control word is compared with the incoming one before the swap,
 * and fldcw runs only when they differ: fldcw is the costly one and x87
 * modes almost never change.
 * Placement: with all three right around the swap, stmxcsr, fnstcw and
 * ldmxcsr each cost about 1 ns per round trip on AMD Zen 4, and where they
 * sit turned out to matter as much as what they are.  The ldmxcsr goes
 * last, just before the closing `xorl`/`ret`, reading the popped frame
 * (still in this leaf's red zone).  Measured per round trip: right after
 * the swap, 0.3 ns slower; right after the pops or directly before `ret`,
 * 1.2 ns slower.
 * Layout: the switch starts a 64-byte line in .text.hot, which the linker
 * gathers into one place, next to fsw_resume and fsw_yield (hot and
 * 64-byte aligned in fiber.c).
 *
 * Not supported: CET shadow stacks (SHSTK).  A `ret` onto another stack can
 * never match a shadow stack, so this object never claims SHSTK; linked with
 * -fcf-protection objects, the result does not claim it either.  It does
 * carry endbr64 and claims IBT, which it honours.
 */

#include "switch.h"

#if !FSW_UCONTEXT   /* a ucontext build assembles this file to nothing */

#if defined(__CET__) && (__CET__ & 1)
#define ENDBR endbr64
#else
#define ENDBR
#endif

/* The two halves of a switch, shared by its three ways in and out.
 * SAVE_AND_SWAP: push this side's state and control words, take the
 * incoming x87 word (from the frame at to_sp, rcx) if it differs, store
 * rsp in *rdi and load rcx as rsp.  RESTORE: the incoming frame's
 * registers, the value (rsi) stored through its OUT pointer, its MXCSR,
 * eax = 0; what remains on the stack is RET. */
        .macro  SAVE_AND_SWAP tag
        ENDBR
        /* Keep the callee-saved registers and OUT on the outgoing stack. */
        pushq   %rbp
        .cfi_adjust_cfa_offset 8
        pushq   %rbx
        .cfi_adjust_cfa_offset 8
        pushq   %r12
        .cfi_adjust_cfa_offset 8
        pushq   %r13
        .cfi_adjust_cfa_offset 8
        pushq   %r14
        .cfi_adjust_cfa_offset 8
        pushq   %r15
        .cfi_adjust_cfa_offset 8
        pushq   %rdx
        .cfi_adjust_cfa_offset 8
        leaq    -8(%rsp), %rsp
        .cfi_adjust_cfa_offset 8
#if FSW_FPCW
        /* Save our control words; take the incoming x87 word, from its
         * frame at to_sp, only if it differs from ours. */
        stmxcsr FSW_FRAME_FPCW(%rsp)
        fnstcw  FSW_FRAME_FPCW+4(%rsp)
        movzwl  FSW_FRAME_FPCW+4(%rsp), %r8d
        xorw    FSW_FRAME_FPCW+4(%rcx), %r8w
        jnz     .Lload_x87cw_\tag
.Lx87cw_done_\tag:
#endif
        /* Swap stacks: from here on rsp is the incoming context's frame,
         * which has the same layout, so the CFI above still describes it. */
        movq    %rsp, (%rdi)
        movq    %rcx, %rsp
        .endm

        .macro  POP_FRAME
        /* The incoming side's OUT into rcx, and its registers. */
        movq    FSW_FRAME_OUT(%rsp), %rcx
        leaq    16(%rsp), %rsp
        .cfi_adjust_cfa_offset -16
        popq    %r15
        .cfi_adjust_cfa_offset -8
        popq    %r14
        .cfi_adjust_cfa_offset -8
        popq    %r13
        .cfi_adjust_cfa_offset -8
        popq    %r12
        .cfi_adjust_cfa_offset -8
        popq    %rbx
        .cfi_adjust_cfa_offset -8
        popq    %rbp
        .cfi_adjust_cfa_offset -8
        .endm

        .macro  RESTORE
        /* Restore the incoming side's registers and hand it the value. */
        POP_FRAME
        testq   %rcx, %rcx
        jz      2f
        movq    %rsi, (%rcx)
2:
#if FSW_FPCW
        /* Take the incoming MXCSR, from the frame just popped. */
        ldmxcsr FSW_FRAME_FPCW-FSW_FRAME_RET(%rsp)
#endif
        xorl    %eax, %eax
        .endm

/* Placed after the instruction that leaves, for SAVE_AND_SWAP of the same
 * tag: the rare case where the two sides' x87 modes differ, out of line.
 * cfa: the bytes popped between that jump and the leaving instruction. */
        .macro  LOAD_X87 tag, cfa
#if FSW_FPCW
        .cfi_adjust_cfa_offset \cfa
.Lload_x87cw_\tag:
        fldcw   FSW_FRAME_FPCW+4(%rcx)
        jmp     .Lx87cw_done_\tag
#endif
        .endm

        .section .text.hot, "ax", @progbits

/* int fsw__switch(fsw_ctx *from [rdi], void *value [rsi], void **out [rdx],
 *                 void *to_sp [rcx]) */
        .globl  fsw__switch
        .hidden fsw__switch
        .type   fsw__switch, @function
        .p2align 6
fsw__switch:
        .cfi_startproc
        SAVE_AND_SWAP switch
.Lrestore:      /* the trampoline continues a dead context's resumer here */
        RESTORE
        ret
        LOAD_X87 switch, 64
        .cfi_endproc
        .size   fsw__switch, .-fsw__switch

/* int fsw__vswitch(fsw_ctx *from [rdi], void *value [rsi], void **out [rdx],
 *                  void *to_sp [rcx]): fsw__switch, for a context whose OUT
 * may be NULL because it wants the value returned instead.  Saving is the
 * same.  Restoring: with an OUT pointer, as fsw__switch (the value stored,
 * 0 returned); with none, the value is returned in rax, and a value with
 * its sign bit set is not a value but, with that bit clear, a pointer to a
 * pointer to the function to run instead: the restored context continues
 * in that function, entered by `jmp` as if its caller had called it there,
 * with the pointer as its argument, so that what it returns is what the
 * switch returns.  The Lua binding's round trip returns through it straight
 * into Lua's call of its C functions (binding/fiberswap.c, `l_yield`); its
 * rare endings run in such a function, on the stack they belong to. */
        .globl  fsw__vswitch
        .hidden fsw__vswitch
        .type   fsw__vswitch, @function
        .p2align 6
fsw__vswitch:
        .cfi_startproc
        SAVE_AND_SWAP vswitch
.Lvrestore:     /* the trampoline continues a dead fsw__create_v fiber's resumer here */
        POP_FRAME
#if FSW_FPCW
        ldmxcsr FSW_FRAME_FPCW-FSW_FRAME_RET(%rsp)
#endif
        testq   %rcx, %rcx
        jnz     3f
        movq    %rsi, %rax
        testq   %rsi, %rsi
        js      4f
        ret
3:      movq    %rsi, (%rcx)            /* an OUT pointer: as fsw__switch */
        xorl    %eax, %eax
        ret
4:      btrq    $63, %rsi               /* continue in the function named */
        movq    %rsi, %rdi
        jmp     *(%rsi)
        LOAD_X87 vswitch, 64
        .cfi_endproc
        .size   fsw__vswitch, .-fsw__vswitch

        .text

/* int fsw__switch_fresh(fsw_ctx *from, void *value, void **out,
 *                       void *to_sp): fsw__switch for the first switch to a
 * new context.  It leaves by `jmp` to the trampoline, not `ret`: a `ret`
 * would pop the return-stack buffer's entry for the caller, which the new
 * context's last switch (a `ret` from the trampoline, after start returns)
 * then finds in place, as do the returns after it.  Once per fiber, so it
 * stays out of .text.hot. */
        .globl  fsw__switch_fresh
        .hidden fsw__switch_fresh
        .type   fsw__switch_fresh, @function
        .p2align 4
fsw__switch_fresh:
        .cfi_startproc
        SAVE_AND_SWAP fresh
        RESTORE
        popq    %rcx
        .cfi_adjust_cfa_offset -8
        jmp     *%rcx
        LOAD_X87 fresh, 72
        .cfi_endproc
        .size   fsw__switch_fresh, .-fsw__switch_fresh

/* Entered by the first switch to a new context, with rsp 16-byte aligned,
 * r12 = data, rbx = start and rsi = the switched-in value (its OUT slot was
 * NULL, so nothing was stored), already start's second argument.  It calls
 * start(data, value).  If start returns, its context is dead: start
 * returned the context to continue (rax = to_sp) and the value for it
 * (rdx), and the trampoline continues it as the second half of a switch
 * would, saving nothing: of fsw__vswitch if bit 0 of rax is set, else of
 * fsw__switch. */
        .globl  fsw__trampoline
        .hidden fsw__trampoline
        .type   fsw__trampoline, @function
        .p2align 4
fsw__trampoline:
        .cfi_startproc
        /* The outermost frame of a fiber: unwinders and debuggers stop here. */
        .cfi_undefined rip
        ENDBR                           /* fsw__switch_fresh jumps here */
        movq    %r12, %rdi
        call    *%rbx
        /* The context to continue, with bit 0 set if it is to be continued
         * as fsw__vswitch would (a fiber made by fsw__create_v). */
        movq    %rax, %rcx
        andq    $-2, %rax
#if FSW_FPCW
        /* The incoming x87 word, only if it differs from the one in force
         * (read through the dead stack's red zone); its MXCSR comes in the
         * second half of the switch. */
        fnstcw  -8(%rsp)
        movzwl  -8(%rsp), %r8d
        xorw    FSW_FRAME_FPCW+4(%rax), %r8w
        jz      1f
        fldcw   FSW_FRAME_FPCW+4(%rax)
1:
#endif
        movq    %rax, %rsp
        movq    %rdx, %rsi              /* the value, where RESTORE wants it */
        testb   $1, %cl
        jnz     .Lvrestore
        jmp     .Lrestore
        .cfi_endproc
        .size   fsw__trampoline, .-fsw__trampoline

#if defined(__CET__) && (__CET__ & 1)
/* Claim IBT (we have endbr64) and, deliberately, never SHSTK. */
        .section .note.gnu.property, "a"
        .p2align 3
        .long   4                       /* name size: "GNU\0" */
        .long   16                      /* descriptor size */
        .long   5                       /* NT_GNU_PROPERTY_TYPE_0 */
        .asciz  "GNU"
        .long   0xc0000002              /* GNU_PROPERTY_X86_FEATURE_1_AND */
        .long   4                       /* data size */
        .long   1                       /* GNU_PROPERTY_X86_FEATURE_1_IBT */
        .long   0                       /* pad to 8 */
#endif

#endif /* !FSW_UCONTEXT */

/* Non-executable stack: this object asks for nothing more than C does. */
        .section .note.GNU-stack, "", @progbits
