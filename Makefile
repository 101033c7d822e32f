# Top-level entry points.  See README.md.
ARCH    ?= x86_64
ACCEL   ?= tcg
CMDLINE ?= demo
FILTER  ?=

CARGO   ?= cargo
RUNNER  := $(CARGO) run --quiet --release -p mthp-tests --bin runner --
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all run run-user user test test-host test-kernel debug deps build bench bench-linux bench-swap bench-frag bench-migrate bench-cow bench-reserve bench-shmem bench-scale profile matrix bench-alloc bench-alloc-kernel pseudofs-diff fmt fmt-check clippy clean soak fuzz exhaust

all: build

## Install what building and testing need when it is missing (checked
## offline first): the pinned toolchain's bare-metal targets and llvm-tools,
## QEMU, and the C compilers for the `libc` suite.  See scripts/deps.sh.
deps:
	@scripts/deps.sh

build: deps
	$(CARGO) build -p kernel --target x86_64-unknown-none --release
	$(CARGO) build -p kernel --target aarch64-unknown-none --release

## The kernel's optional code (kernel/Cargo.toml): `selftest` (self-tests
## and the storm), `demo`, `bench` (bench=alloc).  `make build` and the
## user-program targets build without; targets that take any CMDLINE build
## with all of them (FEATURES= overrides).
ALL_FEATURES := selftest,demo,bench
FEATURES ?= $(ALL_FEATURES)

## CPUs of every `run`, `run-user` and `debug` boot (1 to 8).
SMP ?= 2

## Boot one kernel and run the demonstration (or whatever CMDLINE says).
run: deps
	$(RUNNER) run --arch $(ARCH) --accel $(ACCEL) --smp $(SMP) --release --features "$(FEATURES)" --cmdline "$(CMDLINE)"

## The user programs (tests/user) for ARCH; the runner packs them into
## target/<target>/initramfs.cpio.  The x86_64 ones also run on a Linux host:
## ./target/x86_64-unknown-none/release/mthp-tests
user: deps
	$(CARGO) build -p mthp-user --release --target $(ARCH)-unknown-none

## Boot ARCH with the initramfs and init=/mthp-tests (or INIT=/path).
INIT ?= /mthp-tests
CMDLINE_EXTRA ?=
run-user: deps
	$(RUNNER) run --arch $(ARCH) --accel $(ACCEL) --smp $(SMP) --initrd --cmdline "init=$(INIT) $(CMDLINE_EXTRA)"

## Host unit tests, both kernels' self-tests, then the user-space suite on
## both arches; last line "N passed, N failed, N skipped".
test: deps
	$(RUNNER) test --accel $(ACCEL) $(if $(FILTER),--filter $(FILTER))

test-host: deps
	$(CARGO) test --workspace --exclude kernel --exclude mthp-user
	$(CARGO) test --manifest-path tools/tlb-model/Cargo.toml

## SUITE=<name> runs only that kernel boot (tests/src/suites.rs), e.g.
## SUITE=panic-backtrace.
test-kernel: deps
	$(RUNNER) test --no-host --arch $(ARCH) --accel $(ACCEL) $(if $(FILTER),--filter $(FILTER)) $(if $(SUITE),--suite $(SUITE))

## QEMU waits for GDB on :1234 (see README).
debug: deps
	$(RUNNER) run --arch $(ARCH) --accel $(ACCEL) --smp $(SMP) --gdb --features "$(FEATURES)" --cmdline "$(CMDLINE)"

## A long random-operation storm with a fresh seed (printed; replay with SEED=).
SEED ?= $(shell date +%s)
OPS  ?= 1000000
soak: deps
	$(RUNNER) run --arch $(ARCH) --accel $(ACCEL) --features selftest --cmdline "storm=$(SEED),$(OPS)"

## The random-argument system call fuzzer (tests/user/src/bin/fuzz.rs) with a
## fresh seed (printed; replay with SEED=, add ,v to CALLS to trace calls).
CALLS ?= 200000
fuzz: deps
	$(RUNNER) run --arch $(ARCH) --accel $(ACCEL) --initrd --mem 256M --cmdline "init=/fuzz fuzz=$(SEED),$(CALLS)"

## Memory exhaustion (tests/user/src/bin/exhaust.rs) on a MEM machine.
MEM ?= 256M
exhaust: deps
	$(RUNNER) run --arch $(ARCH) --accel $(ACCEL) --initrd --mem $(MEM) --cmdline "init=/exhaust"

## User-space workloads (tests/user/src/bin/bench.rs) under QEMU: tables,
## CSV and SVG plots under target/bench/.  QUICK=1: 64 and 256 MiB only.
## ICOUNT=1 (ARCH=aarch64): exact instructions per fault under -icount.
## The TLB model's columns (model:dtlb_miss_per_kaccess ..., docs/tlb-model.md):
## stream and chase at 64 MiB and 1 GiB under QEMU 10 with the plugin, our
## kernel and Linux 6.12; `make deps-tlb` is tried first, and without QEMU 10
## the columns say `unavailable` (NO_TLB_MODEL=1: not run).
## Page-fault scaling and TLB shootdowns on 2 CPUs, against Linux: bench-scale.
## Swap out/in per folio size, swap-in from the disk (swap cache emptied
## by pressure first) and memory pressure, ours beside Linux 6.12 (each
## boot with a swap disk): bench-swap (ICOUNT=1: arm64 instructions).
QUICK  ?=
ICOUNT ?=
NO_TLB_MODEL ?=
bench: deps
	$(if $(NO_TLB_MODEL)$(ICOUNT),,-@$(MAKE) --no-print-directory deps-tlb || echo "make bench: no QEMU 10 or plugin: the model: columns say unavailable")
	$(RUNNER) bench --arch $(ARCH) --accel $(ACCEL) $(if $(QUICK),--quick) $(if $(ICOUNT),--icount) $(if $(NO_TLB_MODEL),--no-tlb-model)

## The large-folio feature matrix, this kernel against Linux 6.12, per
## arch (ARCH=x86_64 or aarch64; both when unset on the command line):
## target/matrix/matrix.{md,csv}; docs/feature-matrix.md holds the latest.
matrix: deps
	$(RUNNER) matrix $(if $(filter command line,$(origin ARCH)),--arch $(ARCH)) --accel $(ACCEL)

## /proc and /sys of this kernel against Linux 6.12 (docs/linux-differences.md).
pseudofs-diff: deps
	scripts/pseudofs-diff.sh $(ARCH)

## Fault-in on our kernel and on Debian's Linux 6.12 with one harness: the
## same /bench, the same QEMU set-up (-smp SMP, 2 by default), BOOTS boots
## each (tests/src/faultcmp.rs).
## ICOUNT=1 (ARCH=aarch64): exact instructions per fault.  Needs the kernel
## ../shared/tools/linux-baseline/run.sh ARCH downloads.
BOOTS ?= 3
bench-linux: deps
	$(RUNNER) bench --linux --arch $(ARCH) --smp $(SMP) --boots $(BOOTS) $(if $(ICOUNT),--icount)

## Page-fault scalability and TLB-shootdown cost (tests/user/src/bin/scale.rs)
## with -smp 2, on our kernel and on Debian's Linux 6.12, same /scale binary
## (tests/src/scale.rs): ARCH=x86_64 or aarch64 (both when unset on the
## command line), QUICK=1, BOOTS (default 1).  Needs the same Linux kernel
## as bench-linux.
bench-swap: deps
	$(RUNNER) bench --swap --arch $(ARCH) --accel $(ACCEL) $(if $(QUICK),--quick) $(if $(ICOUNT),--icount)

## Fault orders after a fragmenting churn, with and without compaction,
## ours vs Linux 6.12 (issue 16): target/bench/bench-frag-*.md.
bench-frag: deps
	$(RUNNER) bench --frag --arch $(ARCH) --accel $(ACCEL) $(if $(QUICK),--quick)

## move_pages of 4K/64K/2M folios between two NUMA nodes, ours vs Linux
## 6.12 (issue 16; ICOUNT=1: arm64 instructions): target/bench/bench-migrate-*.md.
bench-migrate: deps
	$(RUNNER) bench --migrate --arch $(ARCH) --accel $(ACCEL) $(if $(QUICK),--quick) $(if $(ICOUNT),--icount)

## Fault-in of MAP_SHARED|MAP_ANONYMOUS memory at 4K/64K/2M, ours vs Linux
## 6.12 (issue 18; ICOUNT=1: arm64 instructions): target/bench/bench-shmem-*.md.
bench-shmem: deps
	$(RUNNER) bench --shmem --arch $(ARCH) --accel $(ACCEL) $(if $(QUICK),--quick) $(if $(ICOUNT),--icount)

## Fork + one write per 64K in the child (issue 17): the child's translation
## entries, rewrite time and extra memory with large COW, 4K COW and Linux
## 6.12: target/bench/bench-cow-*.md.
bench-cow: deps
	$(RUNNER) bench --cow --arch $(ARCH) --accel $(ACCEL) $(if $(QUICK),--quick)

## Reservations with in-place promotion against eager THP and 4K pages,
## ours vs Linux 6.12 (issue 17; ICOUNT=1: arm64 instructions):
## target/bench/bench-reserve-*.md.
bench-reserve: deps
	$(RUNNER) bench --reserve --arch $(ARCH) --accel $(ACCEL) $(if $(QUICK),--quick) $(if $(ICOUNT),--icount)

## Where the instructions go: arm64 under -icount with `profile=<ns>`, the
## interrupted PCs sampled every PROFILE_NS instructions and symbolized
## (scripts/profile.py; console in target/profile/console.log).
## PROFILE_SMP: CPUs (2).
PROFILE_CMDLINE ?= profile_phases init=/bench bench.work=fault bench.configs=4K bench.sizes=256 bench.runs=3
PROFILE_NS ?= 20000
PROFILE_SMP ?= 2
PROFILE_ARGS ?= --no-disk
profile: deps
	mkdir -p target/profile
	$(RUNNER) run --arch aarch64 --release --initrd --smp $(PROFILE_SMP) --icount $(PROFILE_ARGS) --cmdline "profile=$(PROFILE_NS) $(PROFILE_CMDLINE)" > target/profile/console.log 2>&1 || true
	python3 scripts/profile.py target/aarch64-unknown-none/release/kernel target/profile/console.log

bench-scale: deps
	$(RUNNER) bench --scale $(if $(filter command line,$(origin ARCH)),--arch $(ARCH)) --accel $(ACCEL) $(if $(QUICK),--quick) $(if $(filter command line,$(origin BOOTS)),--boots $(BOOTS))

## Functions 64-byte aligned on both sides (see bench_alloc.rs), in a
## target dir of its own so the flag does not rebuild everything else.
BENCH_ALLOC_ENV = RUSTFLAGS="-C llvm-args=-align-all-functions=6" CARGO_TARGET_DIR=target/bench-alloc

bench-alloc: deps
	$(BENCH_ALLOC_ENV) $(CARGO) run --release -p mm --example bench_alloc -- $(ARGS)
	$(MAKE) --no-print-directory bench-alloc-kernel

## The same allocator workloads inside the arm64 kernel (kernel/src/selftest/allocbench.rs)
## under -icount shift=0: exact instructions per alloc or free, KernelCpu's
## interrupt masking included.
bench-alloc-kernel: deps
	$(RUNNER) run --arch aarch64 --release --icount --mem 2G --features bench --cmdline "loglevel=warn bench=alloc"

fmt:
	$(CARGO) fmt --all
	$(CARGO) fmt --manifest-path tools/tlb-model/Cargo.toml

clippy: deps
	$(CARGO) clippy --workspace --exclude kernel --exclude mthp-user --all-targets -- -D warnings
	$(CARGO) clippy --manifest-path tools/tlb-model/Cargo.toml --all-targets -- -D warnings
	for f in "" selftest demo bench $(ALL_FEATURES); do \
	  for t in x86_64 aarch64; do \
	    echo "clippy kernel $$t features '$$f'"; \
	    $(CARGO) clippy -q -p kernel --target $$t-unknown-none --features "$$f" -- -D warnings || exit 1; \
	  done; \
	done
	$(CARGO) clippy -p mthp-user --release --target x86_64-unknown-none -- -D warnings
	$(CARGO) clippy -p mthp-user --release --target aarch64-unknown-none -- -D warnings

## Formatting check (CI): fails on any file `cargo fmt` would change.
fmt-check:
	$(CARGO) fmt --all --check
	$(CARGO) fmt --manifest-path tools/tlb-model/Cargo.toml --check

clean:
	$(CARGO) clean

## TLB model (docs/tlb-model.md): QEMU 10 into target/qemu10 and the plugin.
.PHONY: deps-tlb bench-tlb
deps-tlb:
	@scripts/qemu10.sh >/dev/null
	$(CARGO) build --release --manifest-path tools/tlb-model/Cargo.toml -p tlb-plugin

## Chase and stream under the TLB model, ours and Linux 6.12, per arch.
bench-tlb: deps deps-tlb
	scripts/bench-tlb.sh
