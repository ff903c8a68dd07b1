/* ctx_x86_64_sysv.c: lays out a new x86-64 context for switch_x86_64_sysv.S.
 * A new stack starts as a frame the switch can pop, whose `ret` lands in the
 * trampoline with the start function and its data in callee-saved slots. */
#include "switch.h"

#if !FSW_UCONTEXT
#include <stdint.h>
#include <string.h>

/* A saved frame sits at rsp = 8 mod 16 and ends in the return slot, so
 * popping it leaves rsp 16-byte aligned; the pops end with rbp. */
__extension__ _Static_assert(FSW_FRAME_SIZE % 16 == 8, "frame alignment");
__extension__ _Static_assert(FSW_FRAME_RET + 8 == FSW_FRAME_SIZE, "ret last");
__extension__ _Static_assert(FSW_FRAME_RBP + 8 == FSW_FRAME_RET, "rbp popped last");
__extension__ _Static_assert(FSW_FRAME_OUT == 8 && FSW_FRAME_R15 == 16,
                             "the .S pops OUT and FPCW with one lea");
__extension__ _Static_assert(sizeof(void *) == 8, "x86-64 pointers");

/* Write the first frame just below `hi`.  After the switch pops it and
 * lands in fsw__trampoline (fsw__switch by `ret`, fsw__switch_fresh by
 * `jmp`), rsp == hi, 16-byte aligned, so the trampoline's call enters
 * start() with rsp = 8 mod 16 as the ABI wants.
 * The OUT slot is NULL: the first value goes to start() instead.  The new
 * context starts with the creator's FP control words. */
void fsw__ctx_init(fsw_ctx *c, void *lo, void *hi, fsw_start_fn start,
                   void *data) {
  unsigned char *frame = (unsigned char *)hi - FSW_FRAME_SIZE;
  uint32_t mxcsr;
  uint16_t x87cw;
  void (*ret)(void) = fsw__trampoline;

  (void)lo;
  memset(frame, 0, FSW_FRAME_SIZE);
  __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
  __asm__ volatile("fnstcw %0" : "=m"(x87cw));
  memcpy(frame + FSW_FRAME_FPCW, &mxcsr, 4);
  memcpy(frame + FSW_FRAME_FPCW + 4, &x87cw, 2);
  memcpy(frame + FSW_FRAME_R12, &data, 8);
  memcpy(frame + FSW_FRAME_RBX, &start, 8);
  memcpy(frame + FSW_FRAME_RET, &ret, 8);
  c->sp = frame;
}
#endif
