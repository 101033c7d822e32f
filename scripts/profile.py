#!/usr/bin/env python3
"""Symbolize a sampling profile (`profile <pc> <samples>` lines printed by
a kernel booted with `profile=<ns>`, see kernel/src/perf/profile.rs)
against the kernel ELF: samples per function (the nearest symbol at or
below each PC) and the hottest PCs with their inline chains.

usage: scripts/profile.py <kernel-elf> <console-log> [top]
"""
import bisect
import re
import shutil
import subprocess
import sys


def demangle(name):
    """Rust's legacy mangling as llvm-nm -C leaves it: $LT$ and friends
    spelled out, the hash dropped."""
    for a, b in (("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("$C$", ","),
                 ("$RF$", "&"), ("$BP$", "*"), ("$u7b$", "{"), ("$u7d$", "}"),
                 ("$u27$", "'"), ("$u5b$", "["), ("$u5d$", "]"), ("..", "::")):
        name = name.replace(a, b)
    name = re.sub(r"::h[0-9a-f]{16}$", "", name)
    return name.lstrip("_")


def main():
    if len(sys.argv) < 3:
        print(__doc__.strip())
        return 2
    elf, log = sys.argv[1], sys.argv[2]
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 40
    samples = {}
    lrs = {}
    for line in open(log, errors="replace"):
        w = line.split()
        if len(w) == 3 and w[0] == "profile":
            pc, n = int(w[1], 16), int(w[2])
            samples[pc] = samples.get(pc, 0) + n
        elif len(w) == 3 and w[0] == "profile_lr":
            lr, n = int(w[1], 16), int(w[2])
            lrs[lr] = lrs.get(lr, 0) + n
    dropped = samples.pop(0, 0)
    user = samples.pop(1, 0)
    total = sum(samples.values()) + user + dropped
    if total == 0:
        print("no profile lines in", log)
        return 1
    nm = shutil.which("llvm-nm") or "nm"
    syms = []
    out = subprocess.run([nm, "-n", "-C", "--defined-only", elf],
                         capture_output=True, text=True, check=True).stdout
    for l in out.splitlines():
        p = l.split(" ", 2)
        if len(p) == 3 and p[1] in "tTwW":
            syms.append((int(p[0], 16), demangle(p[2])))
    addrs = [a for a, _ in syms]
    by_fn = {}
    for pc, n in samples.items():
        i = bisect.bisect_right(addrs, pc) - 1
        name = syms[i][1] if i >= 0 else "?"
        by_fn[name] = by_fn.get(name, 0) + n
    print(f"{total} samples: user {user} ({100*user/total:.1f}%), "
          f"kernel {total-user-dropped}, dropped {dropped}")
    print(f"\n{'samples':>8} {'%':>6}  function")
    for name, n in sorted(by_fn.items(), key=lambda x: -x[1])[:top]:
        print(f"{n:>8} {100*n/total:>6.2f}  {name[:150]}")
    a2l = shutil.which("llvm-addr2line") or "addr2line"

    def chain(pc):
        r = subprocess.run([a2l, "-f", "-i", "-C", "-e", elf, hex(pc)],
                           capture_output=True, text=True).stdout.split("\n")
        return " < ".join(f"{demangle(r[k]).split('::')[-1]}@{r[k+1].rsplit('/', 1)[-1]}"
                          for k in range(0, len(r) - 1, 2))[:200]

    hot = sorted(samples.items(), key=lambda x: -x[1])[:top]
    print(f"\n{'samples':>8} {'%':>6}  pc: inline chain (innermost first)")
    for pc, n in hot:
        print(f"{n:>8} {100*n/total:>6.2f}  {pc:#x}: {chain(pc)}")
    if lrs:
        # Samples taken right after an IRQ unmask: the work ran with IRQs
        # masked and is charged to the unmask.  x30 there is the caller
        # of a small unmask function (irq_restore behind CpuOps); for an
        # inlined unmask it is only the last call's return address.
        print(f"\n{'samples':>8} {'%':>6}  IRQs were masked: caller of the unmask (x30 - 4)")
        for lr, n in sorted(lrs.items(), key=lambda x: -x[1])[:top]:
            print(f"{n:>8} {100*n/total:>6.2f}  {lr:#x}: {chain(lr - 4)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
