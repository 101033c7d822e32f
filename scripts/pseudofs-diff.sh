#!/usr/bin/env bash
# Boot `pseudofs-survey` (tests/user/src/bin/pseudofs-survey.rs) on this
# kernel and on Debian's Linux 6.12 under the same QEMU and print how the
# /proc and /sys files differ: files only one kernel has, and files whose
# mode, open/read/write results or text format differ (digits masked).
# Needs the linux-baseline cache (../shared/tools/linux-baseline/run.sh ARCH
# once).  Usage: scripts/pseudofs-diff.sh [x86_64|aarch64]
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${1:-x86_64}
out=target/pseudofs-diff/$arch
mkdir -p "$out"
runner=(cargo run --quiet --release -p mthp-tests --bin runner --)
"${runner[@]}" run --arch "$arch" --initrd --cmdline "init=/pseudofs-survey" >"$out/ours.log" 2>&1 || true
"${runner[@]}" run --linux --arch "$arch" --cmdline "init=/pseudofs-survey" >"$out/linux.log" 2>&1 || true
for k in ours linux; do
    if ! grep -q "SURVEY done" "$out/$k.log"; then
        echo "pseudofs-diff: the $k run did not finish; see $out/$k.log" >&2
        tail -5 "$out/$k.log" >&2
        exit 1
    fi
done
python3 scripts/pseudofs-compare.py "$out/linux.log" "$out/ours.log"
