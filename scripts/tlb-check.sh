#!/usr/bin/env bash
# The TLB model's guest test (docs/tlb-model.md): every measured loop of
# `make bench-tlb` against walk counts computed by hand. Input: the joined
# CSV of scripts/bench-tlb.sh (kernel,arch,model,workload,mapping,mib,
# accesses,walks,...) and the chase's step count. Each phase starts with a
# cold modelled TLB, so:
#   entry size  E = 2M for a 2M mapping; 64K for a 64K mapping under
#               `neoverse-n1` (arm64 contpte, coalesced by the model); else 4K
#   entries     n = MiB / E
#   stream      walks = n (each entry missed once, in order)
#   chase       walks = n when n fits the L2 (1280 entries for neoverse-n1,
#               3072 for zen4): every entry missed once (the steps reach
#               every entry at the sizes used); else,
#               for 4K entries, = steps: the chase is one random cycle
#               through all pages, and a cycle longer than an LRU TLB misses
#               on every step (entries larger than a page are then revisited
#               at random: not computed, the row says "unchecked")
# plus up to SLACK (64) walks for the loop's own stack and data pages; and
# no access the plugin could not walk (unreadable) or walked to another
# physical address than QEMU's (pa_mismatch).
# Prints the table with the expectation; exits 1 if any row is outside.
set -eu
csv=${1:?usage: tlb-check.sh JOINED.csv STEPS}
steps=${2:?usage: tlb-check.sh JOINED.csv STEPS}
slack=${SLACK:-64}
awk -F, -v steps="$steps" -v slack="$slack" '
    FNR == 1 { print $0 ",expected_walks,check"; next }
    {
        model = $3; work = $4; map = $5; mib = $6; walks = $8
        unreadable = $12; mismatch = $13
        kib = 4
        if (map == "2M") kib = 2048
        else if (map == "64K" && model == "neoverse-n1") kib = 64
        n = mib * 1024 / kib
        cap = (model == "zen4") ? 3072 : 1280
        want = n
        ok = ""
        if (work == "chase" && n > cap) {
            if (kib == 4) want = steps
            else { want = "-"; ok = "unchecked" }
        }
        if (ok == "")
            ok = (walks >= want && walks <= want + slack && unreadable == 0 && mismatch == 0) ? "ok" : "FAIL"
        if (ok == "FAIL") bad++
        print $0 "," want "," ok
    }
    END { exit bad > 0 }
' "$csv"
