#!/usr/bin/env bash
# `make bench-tlb` (docs/tlb-model.md): /bench's stream and chase under the
# TLB-model plugin, our kernel and Linux 6.12 (nokaslr), per arch and model
# configuration. Writes target/bench-tlb.csv: one line per measured loop,
# the bench's `tlb-phase` lines joined with the plugin's per-phase counts,
# then checks each line against hand-computed walk counts
# (scripts/tlb-check.sh → target/bench-tlb-check.csv; fails if one is off).
# Environment: ARCHES (default "aarch64 x86_64"), KERNELS ("ours linux"),
# MIB (64), STEPS (200000), BIG_MIB (1024: stream and chase over that many
# MiB, the size published chase figures use, one boot per mapping; 0: none),
# CONFIGS (4K,16K,64K,2M: 16K folios are four 4K PTEs, no contiguous bit).
set -eu
cd "$(dirname "$0")/.."
# RUNNER: a runner binary to use instead of `cargo run` (a copy keeps a long
# run independent of edits to tests/src).
read -r -a runner <<<"${RUNNER:-cargo run -q --release -p mthp-tests --bin runner --}"
mib=${MIB:-64}
big=${BIG_MIB:-1024}
steps=${STEPS:-200000}
configs=${CONFIGS:-4K,16K,64K,2M}
out=target/bench-tlb.csv
echo "kernel,arch,model,workload,mapping,mib,accesses,walks,walk_refs,dtlb_miss_per_kaccess,unmapped,unreadable,pa_mismatch" >"$out"
failed=0

# run KERNEL ARCH MODEL CONFIGS MIB WORK [EXTRA]: one boot, its rows appended.
run() {
    local kernel=$1 arch=$2 model=$3 configs=$4 size=$5 work=$6 extra=${7:-}
    local words="bench.sizes=$size bench.configs=$configs bench.runs=1 bench.steps=$steps bench.work=$work $extra"
    local cmd
    if [ "$kernel" = linux ]; then
        cmd=("${runner[@]}" run --linux --arch "$arch" --no-disk --mem 2G --tlb-model "$model" --cmdline "init=/bench $words")
    else
        cmd=("${runner[@]}" run --arch "$arch" --initrd --no-disk --mem 2G --tlb-model "$model" --cmdline "init=/bench $words")
    fi
    local name=target/bench-tlb-$kernel-$arch-$model-$size-${configs//,/-}
    rm -f target/tlb-model.csv
    if ! "${cmd[@]}" >"$name.log" 2>&1; then
        echo "bench-tlb: $kernel $arch $model $configs $size MiB failed (see $name.log)" >&2
        failed=$((failed + 1))
    fi
    cp target/tlb-model.csv "$name.csv" 2>/dev/null || return 0
    # Join `bench tlb-phase <id> <workload> <config> <MiB>` with the CSV by id
    # (console lines may end in CR).
    awk -F'[ ,]' -v k="$kernel" -v a="$arch" -v m="$model" '
        { sub(/\r$/, "") }
        FNR == NR { if ($1 == "bench" && $2 == "tlb-phase") ph[$3] = $4 "," $5 "," $6; next }
        ($2 in ph) { print k "," a "," m "," ph[$2] "," $3 "," $6 "," $7 "," $8 "," $11 "," $12 "," $17 }
    ' "$name.log" "$name.csv" >>"$out"
}

for arch in ${ARCHES:-aarch64 x86_64}; do
    case $arch in
    aarch64) main=neoverse-n1 ;;
    *) main=zen4 ;;
    esac
    for kernel in ${KERNELS:-ours linux}; do
        run "$kernel" "$arch" "$main" "$configs" "$mib" stream,chase
        # arm64 contpte off: the model ignores the contiguous bit (and our
        # kernel sets none).
        if [ "$arch" = aarch64 ]; then
            run "$kernel" "$arch" neoverse-n1-nocont 64K "$mib" stream,chase contpte=off
        fi
        # One boot per mapping: a failure at one size loses only its rows.
        if [ "$big" -gt 0 ]; then
            for c in ${configs//,/ }; do
                run "$kernel" "$arch" "$main" "$c" "$big" stream,chase
            done
            if [ "$arch" = aarch64 ]; then
                run "$kernel" "$arch" neoverse-n1-nocont 64K "$big" stream,chase contpte=off
            fi
        fi
    done
done
# The guest test: each loop's walks against the hand-computed count.
scripts/tlb-check.sh "$out" "$steps" >target/bench-tlb-check.csv && ok=1 || ok=0
column -s, -t target/bench-tlb-check.csv
[ $ok = 1 ] || { echo "bench-tlb: walk counts off the hand-computed ones (see above)" >&2; exit 1; }
# A boot that failed after some of its loops still has their rows above.
[ $failed = 0 ] || { echo "bench-tlb: $failed boot(s) failed (see above)" >&2; exit 1; }
