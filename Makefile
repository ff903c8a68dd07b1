# Makefile: builds libfiberswap.a and the Lua module; runs tests, bench, demo.
# Edit the first block; `make help` lists the targets.

LUA     ?= lua5.4
CC      ?= cc
CFLAGS  ?= -O2 -g
BACKEND ?= auto
PREFIX  ?= /usr/local

# Warnings, one per line.  CI (CI=true) turns them into errors.
WARN  = -Wall
WARN += -Wextra
WARN += -Wpedantic
WARN += -Wshadow
WARN += -Wstrict-prototypes
WARN += -Wmissing-prototypes
WARN += -Wpointer-arith
WARN += -Wcast-align
WARN += -Wundef
ifeq ($(CI),true)
WARN += -Werror
endif

ARCH := $(shell uname -m)
ifeq ($(BACKEND),auto)
override BACKEND := $(if $(filter x86_64,$(ARCH)),asm,ucontext)
endif
ifeq ($(BACKEND),ucontext)
BACKEND_DEF = -DFSW_BACKEND_UCONTEXT
else ifneq ($(BACKEND),asm)
$(error BACKEND must be auto, asm or ucontext, not '$(BACKEND)')
endif

# The ret trick cannot live with CET shadow stacks: objects may claim IBT
# (indirect-branch tracking) but never SHSTK, whatever CFLAGS asks for.
ifeq ($(ARCH),x86_64)
CET = -fcf-protection=branch
endif

B        = build/$(BACKEND)
LIBDIR   = lib/fiberswap
LIB_SRC  = $(LIBDIR)/fiber.c $(LIBDIR)/stack.c $(LIBDIR)/overflow.c $(LIBDIR)/ctx_ucontext.c \
           $(LIBDIR)/ctx_x86_64_sysv.c $(LIBDIR)/switch_x86_64_sysv.S
LIB_HDR  = $(wildcard $(LIBDIR)/*.h)
LIB_OBJ  = $(patsubst $(LIBDIR)/%,$(B)/lib/%.o,$(LIB_SRC))
LIB_A    = $(B)/libfiberswap.a

ALL_CFLAGS = -std=c99 $(CFLAGS) $(WARN) $(CET) $(BACKEND_DEF) -fPIC -I$(LIBDIR)
LDLIBS     = -pthread -lm

# The Lua module, built for $(LUA); Debian names each Lua's pkg-config file
# after its interpreter (lua5.1 ... lua5.4, luajit).
LUA_INC  = $(shell pkg-config --cflags $(LUA) 2>/dev/null)
LB       = $(B)/$(LUA)
MOD      = $(LB)/fiberswap.so
TESTMOD  = $(LB)/fiberswap_test.so
LUA_ENV  = LUA_CPATH='$(LB)/?.so;;' LUA_PATH='tests/lua/?.lua;;'
# Every Lua the module supports; `make test` runs them all.
LUAS     = lua5.4 lua5.3 lua5.2 lua5.1 luajit
# Every spec runs on every version; what a version lacks (to-be-closed
# variables, say) is skipped with a "# skipped on ..." line.
LUA_SPECS = $(sort $(wildcard tests/lua/spec_*.lua))

SAN_FLAGS = -fsanitize=address,undefined -fno-omit-frame-pointer \
            -fno-sanitize-recover=undefined
ASAN_ENV  = ASAN_OPTIONS=detect_stack_use_after_return=1:detect_leaks=1:abort_on_error=0 \
            UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
VALGRIND  = valgrind -q --error-exitcode=99 --leak-check=full \
            --errors-for-leak-kinds=definite --show-leak-kinds=definite

.PHONY: FORCE fuzz all lib module module-test help test test-c test-lua test-elf bench bench-scale demo demo-c asan tsan valgrind install \
        clean deps-test deps-bench deps-demo deps-valgrind

all: lib module

lib: $(LIB_A)

module: $(MOD)

help:
	@echo "make [all]        build $(LIB_A) and $(MOD)"
	@echo "make test         install missing packages, run every suite (both backends)"
	@echo "make bench        fibers vs plain coroutines; the C switch vs Boost fcontext and ucontext"
	@echo "make bench-scale  1,000,000 suspended fibers at once: time, RSS and mappings per fiber"
	@echo "make demo         a tour of fiberswap from Lua (make demo-c: from C)"
	@echo "make asan         the C tests and Lua specs under ASan+UBSan"
	@echo "make valgrind     the C tests and Lua specs under valgrind memcheck"
	@echo "make fuzz         differential fuzzing against plain coroutines (FUZZ_SEEDS=20000),"
	@echo "                  then the C API under libFuzzer (FUZZ_C_RUNS=500000)"
	@echo "make tsan         the two-thread and thread-migration hosts under ThreadSanitizer"
	@echo "make install      header, library and pkg-config file into PREFIX=$(PREFIX)"
	@echo "variables: LUA=$(LUA) CC=$(CC) BACKEND=$(BACKEND) PREFIX=$(PREFIX) CFLAGS='$(CFLAGS)'"

# ---- the library -----------------------------------------------------------
# Each compile command is kept in a file that changes only when the command
# does, and what it built depends on that file: a build left in the same
# folder with other flags, or for another Lua (LUA_INC), is rebuilt, never
# reused (luarocks builds every Lua version in one folder, build/rock).
# `make -q` therefore always answers "not up to date".
stamp = @mkdir -p $(@D); echo '$(1)' | cmp -s - $@ || echo '$(1)' >$@
FORCE:
$(B)/lib/command: FORCE
	$(call stamp,$(CC) $(ALL_CFLAGS))

$(B)/lib/%.c.o: $(LIBDIR)/%.c $(LIB_HDR) $(B)/lib/command
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(B)/lib/%.S.o: $(LIBDIR)/%.S $(LIB_HDR) $(B)/lib/command
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(LIB_A): $(LIB_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

# ---- the Lua module ----------------------------------------------------------
# The library's symbols stay inside the module (--exclude-libs): calls into
# it are direct, and two modules embedding it never clash.  -fno-plt calls
# the Lua API through the GOT, one jump fewer on the resume/yield path.
$(LB)/command: FORCE
	$(call stamp,$(CC) $(ALL_CFLAGS) $(LUA_INC))

$(MOD): binding/fiberswap.c binding/compat.h $(LIB_HDR) $(LIB_A) $(LB)/command
	@[ -n "$(LUA_INC)" ] || { echo "no Lua headers for LUA=$(LUA): run 'sh scripts/deps.sh test'" >&2; exit 1; }
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -fno-plt $(LUA_INC) -shared $< $(LIB_A) -o $@ -pthread -Wl,--exclude-libs,ALL

$(TESTMOD): tests/fiberswap_test.c binding/compat.h $(LB)/command
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) $(LUA_INC) -Ibinding -shared $< -o $@

# ---- tests -----------------------------------------------------------------
TEST_C = $(B)/test_fiber $(B)/test_maplimit

$(B)/test_%: tests/c/test_%.c tests/c/harness.h $(LIB_A)
	$(CC) $(ALL_CFLAGS) $< $(LIB_A) -o $@ $(LDLIBS)

# The suites of one backend, as run_suites.sh arguments.
c_suites = "c-$(1)=build/$(1)/test_fiber" \
           "c-mprotect-$(1)=FIBERSWAP_GUARD=mprotect build/$(1)/test_fiber" \
           "c-maplimit-$(1)=TEST_ONLY=map_limit_is_named FIBERSWAP_GUARD=mprotect \
              build/$(1)/test_maplimit" \
           "c-unmaplimit-$(1)=TEST_ONLY=idle_region_kept_at_map_limit build/$(1)/test_maplimit"

# Every suite prints "name: N passed, N failed"; the runner sums them.
test: deps-test
	@echo "== C suites: both backends, gcc and clang; ELF checks"
	$(MAKE) --no-print-directory BACKEND=asm build/asm/test_fiber build/asm/test_maplimit
	$(MAKE) --no-print-directory BACKEND=ucontext build/ucontext/test_fiber build/ucontext/test_maplimit
	$(MAKE) --no-print-directory BACKEND=asm CC=clang B=build/clang-asm build/clang-asm/test_fiber
	$(MAKE) --no-print-directory BACKEND=ucontext CC=clang B=build/clang-ucontext build/clang-ucontext/test_fiber
	$(MAKE) --no-print-directory BACKEND=asm module-test build/asm/embed_host \
	  build/asm/embed_threads build/asm/embed_migrate
	$(MAKE) --no-print-directory BACKEND=ucontext module-test
	$(MAKE) --no-print-directory BACKEND=asm build/fuzz/fuzz_c
	@for v in $(filter-out $(LUA),$(LUAS)); do \
	  $(MAKE) --no-print-directory BACKEND=asm LUA=$$v module-test || exit 1; done
	sh scripts/run_suites.sh $(call c_suites,asm) $(call c_suites,ucontext) \
	  "c-clang-asm=build/clang-asm/test_fiber" \
	  "c-clang-ucontext=build/clang-ucontext/test_fiber" \
	  "elf=sh tests/c/check_elf.sh" \
	  $(call lua_suites,asm) $(call lua_suites,ucontext) \
	  $(foreach v,$(filter-out $(LUA),$(LUAS)),$(call lua_run,asm,build/asm,,$(v))) \
	  $(call embed_suites,build/asm,,) \
	  "luacheck=sh tests/lint.sh" \
	  "fuzz-lua5.4=lua5.4 tests/fuzz/diff.lua 1 $(FUZZ_CI_SEEDS)" \
	  "fuzz-c=FUZZ_C_RSS_MB=128 sh tests/fuzz/run_c.sh build/fuzz/fuzz_c $(FUZZ_C_CI_RUNS)" \
	  $(foreach v,5.4 5.3 5.2 5.1 luajit,"rock-$(v)=LUAV=$(v) sh tests/install/test_rock.sh")

module-test: $(MOD) $(TESTMOD)

# Differential fuzzing (tests/fuzz): random coroutine programs, each run with
# the built-in library and with fiberswap, traces compared.  `make test` runs
# a fixed set of seeds; `make fuzz` as many as FUZZ_SEEDS, from FUZZ_FIRST.
FUZZ_CI_SEEDS = 2000
FUZZ_ASAN_SEEDS = 1000
FUZZ_FIRST   ?= 1
FUZZ_SEEDS   ?= 20000
fuzz: deps-test build/fuzz/fuzz_c
	$(MAKE) --no-print-directory BACKEND=asm LUA=lua5.4 module
	lua5.4 tests/fuzz/diff.lua $(FUZZ_FIRST) $(FUZZ_SEEDS)
	sh tests/fuzz/run_c.sh build/fuzz/fuzz_c $(FUZZ_C_RUNS) $(FUZZ_FIRST)

# The C API under libFuzzer (clang), ASan and UBSan: tests/fuzz/fuzz_c.c.
# `make test` runs FUZZ_C_CI_RUNS inputs from seed 1, `make fuzz` FUZZ_C_RUNS.
FUZZ_C_CI_RUNS = 20000
FUZZ_C_RUNS   ?= 500000
build/fuzz/fuzz_c: tests/fuzz/fuzz_c.c $(LIB_SRC) $(LIB_HDR)
	@mkdir -p $(@D)
	clang -std=c99 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	  $(WARN) $(CET) $(BACKEND_DEF) -I$(LIBDIR) tests/fuzz/fuzz_c.c $(LIB_SRC) -o $@ -pthread

# C hosts that link the module statically (luaL_requiref), on Lua 5.4.
EMBED_LUA = lua5.4
EMBED     = $(B)/embed_host $(B)/embed_threads $(B)/embed_migrate
$(B)/embed_%: tests/embed/%.c tests/embed/tap.h binding/fiberswap.c binding/compat.h $(LIB_A)
	$(CC) $(ALL_CFLAGS) $(shell pkg-config --cflags $(EMBED_LUA)) -Ibinding $< \
	  binding/fiberswap.c $(LIB_A) -o $@ $(shell pkg-config --libs $(EMBED_LUA)) $(LDLIBS)
embed_suites = "embed-host$(2)=$(3) $(1)/embed_host" \
               "embed-threads$(2)=$(3) $(1)/embed_threads" \
               "embed-migrate$(2)=$(3) $(1)/embed_migrate"

# The Lua specs as run_suites.sh arguments: $(1) names the suites, $(2) is
# the build directory whose modules they load, $(3) what runs the interpreter,
# $(4) the interpreter ($(LUA) if empty).
lua_run = $(foreach s,$(LUA_SPECS),"$(or $(4),$(LUA))-$(1)-$(basename $(notdir $(s)))=\
  LUA_CPATH='$(2)/$(or $(4),$(LUA))/?.so;;' LUA_PATH='tests/lua/?.lua;;' $(3) $(or $(4),$(LUA)) $(s)")
lua_suites = $(call lua_run,$(1),build/$(1),)

test-lua: $(MOD) $(TESTMOD)
	sh scripts/run_suites.sh $(call lua_suites,$(BACKEND))

test-c: $(TEST_C)
	sh scripts/run_suites.sh $(call c_suites,$(BACKEND))

test-elf:
	sh scripts/run_suites.sh "elf=sh tests/c/check_elf.sh"

# test_maplimit runs natively only: at the map limit ASan's own mmap fails,
# and 65,000 mappings overflow valgrind's segment table (VG_N_SEGMENTS).
# The interpreter is not instrumented, so the Lua specs preload the runtimes.
SAN_PRELOAD = LD_PRELOAD='$(shell $(CC) -print-file-name=libasan.so) $(shell $(CC) -print-file-name=libubsan.so)'
ASAN_B = build/asan-$(BACKEND)

asan: deps-test
	@echo "== C tests and Lua specs under ASan+UBSan ($(BACKEND))"
	$(MAKE) --no-print-directory B=$(ASAN_B) CFLAGS="-O1 -g $(SAN_FLAGS)" \
	  $(ASAN_B)/test_fiber $(ASAN_B)/$(LUA)/fiberswap.so $(ASAN_B)/$(LUA)/fiberswap_test.so \
	  $(ASAN_B)/embed_host $(ASAN_B)/embed_threads $(ASAN_B)/embed_migrate
	$(ASAN_ENV) sh scripts/run_suites.sh "c-asan-$(BACKEND)=$(ASAN_B)/test_fiber" \
	  $(call lua_run,asan-$(BACKEND),$(ASAN_B),$(SAN_PRELOAD)) \
	  $(if $(filter lua5.4,$(LUA)),"fuzz-asan-$(BACKEND)=LUA_CPATH='$(ASAN_B)/lua5.4/?.so;;' \
	    $(SAN_PRELOAD) lua5.4 tests/fuzz/diff.lua 1 $(FUZZ_ASAN_SEEDS)") \
	  $(call embed_suites,$(ASAN_B),-asan-$(BACKEND),)

# Two OS threads with a Lua state each, one state moved between two
# threads, and the C tests that share stacks between threads:
# ThreadSanitizer, which the library tells about every switch.  (TSan counts
# each fiber as a thread, up to 8,128, so not the 10,000-fiber tests.)
TSAN_B = build/tsan-$(BACKEND)
TSAN_C_TESTS = two_threads_run_their_own_fibers,fiber_migrates_to_another_thread,$\
               stacks_given_back_on_another_thread,stacks_come_from_regions_and_go_back
tsan: deps-test
	@echo "== threads under ThreadSanitizer ($(BACKEND))"
	$(MAKE) --no-print-directory B=$(TSAN_B) CFLAGS="-O1 -g -fsanitize=thread" \
	  $(TSAN_B)/test_fiber $(TSAN_B)/embed_threads $(TSAN_B)/embed_migrate
	TSAN_OPTIONS=halt_on_error=1:exitcode=66 sh scripts/run_suites.sh \
	  "c-tsan-$(BACKEND)=TEST_ONLY=$(TSAN_C_TESTS) $(TSAN_B)/test_fiber" \
	  "embed-threads-tsan-$(BACKEND)=$(TSAN_B)/embed_threads" \
	  "embed-migrate-tsan-$(BACKEND)=$(TSAN_B)/embed_migrate"

valgrind: deps-valgrind $(B)/test_fiber $(MOD) $(TESTMOD) $(EMBED)
	@echo "== C tests and Lua specs under valgrind ($(BACKEND)); the two guard-page"
	@echo "   tests' children die of SIGSEGV on purpose, and valgrind announces each"
	sh scripts/run_suites.sh "c-valgrind-$(BACKEND)=$(VALGRIND) $(B)/test_fiber" \
	  $(call lua_run,valgrind-$(BACKEND),$(B),$(VALGRIND)) \
	  $(call embed_suites,$(B),-valgrind-$(BACKEND),$(VALGRIND))

# ---- bench and demo ----------------------------------------------------------
# Boost.Context is linked statically, so its calls are direct like ours; the
# shared library would add a PLT jump (about 3 ns) to every fcontext switch.
BOOST_CTX = -Wl,-Bstatic -lboost_context -Wl,-Bdynamic

$(B)/bench_c: scripts/bench_c.c $(LIB_A)
	$(CC) $(ALL_CFLAGS) -std=gnu99 $< $(LIB_A) -o $@ $(BOOST_CTX) $(LDLIBS)

$(B)/bench_c_nofpcw: scripts/bench_c.c $(LIB_SRC) $(LIB_HDR)
	$(CC) $(ALL_CFLAGS) -std=gnu99 -DFSW_FPCW=0 $< $(LIB_SRC) -o $@ $(BOOST_CTX) $(LDLIBS)

$(B)/bench_scale: scripts/bench_scale.c $(LIB_A)
	$(CC) $(ALL_CFLAGS) $< $(LIB_A) -o $@ $(LDLIBS)

# A million suspended fibers at once against a million plain coroutines;
# SCALE_N and SCALE_RUNS change the count and the runs (medians reported).
SCALE_N    ?= 1000000
SCALE_RUNS ?= 3
bench-scale: deps-bench $(B)/bench_scale $(MOD)
	@echo "== $(SCALE_N) fibers held at once vs plain coroutines ($(LUA), pinned to CPU 1)"
	$(LUA_ENV) taskset -c 1 $(LUA) scripts/bench_scale.lua $(SCALE_N) $(SCALE_RUNS) $(B)/bench_scale

bench: deps-bench $(B)/bench_c $(B)/bench_c_nofpcw $(MOD)
	@echo "== Lua ($(LUA)): fibers vs plain coroutines (pinned to CPU 1)"
	$(LUA_ENV) taskset -c 1 $(LUA) scripts/bench_lua.lua
	@echo "== C switch: fiberswap vs Boost fcontext vs glibc ucontext (pinned to CPU 1)"
	taskset -c 1 $(B)/bench_c
	@echo "== the same, fiberswap built without the MXCSR/x87 save (FSW_FPCW=0)"
	taskset -c 1 $(B)/bench_c_nofpcw

$(B)/demo_c: scripts/demo.c $(LIB_A)
	$(CC) $(ALL_CFLAGS) $< $(LIB_A) -o $@ $(LDLIBS)

demo: deps-demo $(MOD)
	@echo "== demo: a tour of fiberswap from Lua ($(LUA))"
	$(LUA_ENV) $(LUA) scripts/demo.lua

demo-c: deps-demo $(B)/demo_c
	@echo "== demo: a fiber running C code on its own stack, from C"
	$(B)/demo_c

# ---- packages ----------------------------------------------------------------
deps-test deps-demo deps-bench deps-valgrind:
	@sh scripts/deps.sh $(@:deps-%=%)

# ---- install -----------------------------------------------------------------
install: $(LIB_A)
	@echo "== installing into $(DESTDIR)$(PREFIX)"
	install -d $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 $(LIBDIR)/fiberswap.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 $(LIB_A) $(DESTDIR)$(PREFIX)/lib/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(shell sed -n 's/^#define FSW_VERSION "\(.*\)"/\1/p' $(LIBDIR)/fiberswap.h)|' \
	  $(LIBDIR)/fiberswap.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/fiberswap.pc

clean:
	rm -rf build
