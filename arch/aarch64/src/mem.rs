//! Bulk zeroing and copying of physical memory through the direct map.
//!
//! The fault path zeroes every new folio and copies a page on each COW
//! break or collapse.  Both loops move 64 bytes per instruction with
//! `st1`/`ld1` of four vector registers.  Measured under QEMU 7.2 TCG
//! (`-cpu max`, 2 MiB, wall time and `-icount` instructions):
//!
//! | zero 2 MiB | µs | instructions |
//! |---|---|---|
//! | `dc zva` (64-byte blocks) | 383–468 | 81k |
//! | `stp xzr` ×4 per 64 B | 220–229 | 229k |
//! | `st1` ×4 registers | 222–224 | 49k |
//!
//! | copy 2 MiB | µs | instructions |
//! |---|---|---|
//! | `ldp`/`stp` x-registers | 1660–1745 | 393k |
//! | `ld1`/`st1` ×4 registers | 993–1024 | 98k |
//!
//! Zeroing whole KiBs unrolls sixteen `st1` per turn of the loop (2026-12-06:
//! a 2 MiB fault 67445 → 55121 instructions, a 4 KiB one 1589 → 1565; the
//! loop's compare and branch were a quarter of the instructions).
//!
//! `dc zva` is one helper call and host `memset` per block under TCG,
//! slower than inline stores; on hardware it avoids reading the line, so
//! [`zero_dc_zva`] stays for comparison and for such cores.
#![allow(unsafe_code)]

use core::arch::asm;

/// Bytes `dc zva` zeroes, or 0 if the instruction is prohibited
/// (DCZID_EL0.DZP).
#[inline]
pub fn dc_zva_block() -> usize {
    let v: u64;
    // SAFETY: DCZID_EL0 is readable at every EL; no side effects.
    unsafe { asm!("mrs {}, dczid_el0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    if v & (1 << 4) != 0 { 0 } else { 4 << (v & 0xf) }
}

/// Zero `len` bytes at `dst`.
///
/// # Safety
/// `[dst, dst + len)` must be writable Normal memory the caller owns, with
/// no live Rust reference into it.
#[inline]
pub unsafe fn zero_bytes(dst: *mut u8, len: usize) {
    if (dst as usize | len) & 63 == 0 {
        // SAFETY: forwarded from the caller; 64-byte aligned and sized.
        unsafe { zero_blocks(dst, len) }
    } else {
        // SAFETY: forwarded from the caller.
        unsafe { core::ptr::write_bytes(dst, 0, len) }
    }
}

/// Zero `len` bytes at `dst`, both multiples of 64: one `st1` of four
/// zeroed vector registers per 64 bytes (see the module doc for why not
/// `dc zva`).
///
/// # Safety
/// As for [`zero_bytes`], with `dst` and `len` 64-byte aligned.
pub unsafe fn zero_blocks(dst: *mut u8, len: usize) {
    debug_assert!((dst as usize | len) & 63 == 0);
    if len == 0 {
        return;
    }
    if len & 1023 == 0 {
        // SAFETY: len is a multiple of 16 × 64 bytes.  Sixteen stores per
        // turn: a 4 KiB page in four turns, so the loop's compare and
        // branch cost 8 instructions, not 32.
        unsafe { zero_st1::<16>(dst, len) }
    } else if len & 255 == 0 {
        // SAFETY: len is a multiple of 4 × 64 bytes.
        unsafe { zero_st1::<4>(dst, len) }
    } else {
        // SAFETY: stores exactly `[dst, dst + len)` in 64-byte steps.
        unsafe { zero_stp(dst, len) }
    }
}

/// Zeroes `[dst, dst + len)` with `N` 64-byte `st1` stores per loop turn.
///
/// # Safety
/// As for [`zero_bytes`], with `len` a non-zero multiple of `N * 64`.
#[inline(always)]
unsafe fn zero_st1<const N: usize>(dst: *mut u8, len: usize) {
    let end = dst as usize + len;
    // SAFETY: each `st1` stores the 64 bytes at `p` and advances it by 64,
    // `N` per iteration, until `p` reaches `end`: exactly the caller's
    // range.  v0-v3 are declared clobbered (the kernel saves every vector
    // register on exception entry, so using them here touches no one
    // else's state).
    unsafe {
        asm!(
            "movi v0.2d, #0",
            "movi v1.2d, #0",
            "movi v2.2d, #0",
            "movi v3.2d, #0",
            "2:",
            ".rept {n}",
            "st1 {{v0.2d, v1.2d, v2.2d, v3.2d}}, [{p}], #64",
            ".endr",
            "cmp {p}, {end}",
            "b.ne 2b",
            n = const N,
            p = inout(reg) dst => _,
            end = in(reg) end,
            out("v0") _,
            out("v1") _,
            out("v2") _,
            out("v3") _,
            options(nostack),
        );
    }
}

/// Zero with `dc zva` (kept for comparison and for cores where it wins):
/// falls back to [`zero_stp`] when the block size does not fit.
///
/// # Safety
/// As for [`zero_blocks`].
pub unsafe fn zero_dc_zva(dst: *mut u8, len: usize) {
    debug_assert!((dst as usize | len) & 63 == 0);
    if len == 0 {
        return;
    }
    let bs = dc_zva_block();
    let end = dst as usize + len;
    if bs != 0 && bs <= 64 && (dst as usize | len) & (4 * bs - 1) == 0 {
        // SAFETY: each `dc zva` zeroes the `bs`-byte block at `p`, and `p`
        // walks `[dst, end)` in steps of `bs`, 4 per iteration (len is a
        // multiple of 4 * bs): exactly the caller's range.  Normal memory
        // (the direct map), so `dc zva` is permitted.
        unsafe {
            asm!(
                "2:",
                "dc zva, {p}",
                "add {p}, {p}, {bs}",
                "dc zva, {p}",
                "add {p}, {p}, {bs}",
                "dc zva, {p}",
                "add {p}, {p}, {bs}",
                "dc zva, {p}",
                "add {p}, {p}, {bs}",
                "cmp {p}, {end}",
                "b.ne 2b",
                p = inout(reg) dst => _,
                bs = in(reg) bs,
                end = in(reg) end,
                options(nostack),
            );
        }
    } else {
        // SAFETY: stores exactly `[dst, dst + len)` in 64-byte steps.
        unsafe { zero_stp(dst, len) }
    }
}

/// Zero with `stp xzr, xzr` (for comparison benchmarks and DZP cores).
///
/// # Safety
/// As for [`zero_blocks`].
pub unsafe fn zero_stp(dst: *mut u8, len: usize) {
    debug_assert!((dst as usize | len) & 63 == 0);
    if len == 0 {
        return;
    }
    // SAFETY: stores exactly `[dst, dst + len)` in 64-byte steps.
    unsafe {
        asm!(
            "2:",
            "stp xzr, xzr, [{p}]",
            "stp xzr, xzr, [{p}, #16]",
            "stp xzr, xzr, [{p}, #32]",
            "stp xzr, xzr, [{p}, #48]",
            "add {p}, {p}, #64",
            "cmp {p}, {end}",
            "b.ne 2b",
            p = inout(reg) dst => _,
            end = in(reg) dst as usize + len,
            options(nostack),
        );
    }
}

/// Copy `len` bytes from `src` to `dst`.
///
/// # Safety
/// `[src, src + len)` readable, `[dst, dst + len)` writable and owned by
/// the caller, the two not overlapping.
#[inline]
pub unsafe fn copy_bytes(dst: *mut u8, src: *const u8, len: usize) {
    if (dst as usize | src as usize | len) & 63 == 0 {
        // SAFETY: forwarded; aligned and sized for the block loop.
        unsafe { copy_blocks(dst, src, len) }
    } else {
        // SAFETY: forwarded from the caller.
        unsafe { core::ptr::copy_nonoverlapping(src, dst, len) }
    }
}

/// Copy `len` bytes (a multiple of 64, both pointers 64-byte aligned):
/// one `ld1`/`st1` pair of four vector registers per 64 bytes.
///
/// # Safety
/// As for [`copy_bytes`], with the alignment above.
pub unsafe fn copy_blocks(dst: *mut u8, src: *const u8, len: usize) {
    debug_assert!((dst as usize | src as usize | len) & 63 == 0);
    if len == 0 {
        return;
    }
    // SAFETY: reads `[src, src + len)` and writes `[dst, dst + len)`, both
    // owned by the caller and disjoint, 64 bytes per `ld1`/`st1`; v0-v3
    // are declared clobbered (see `zero_blocks`).
    unsafe {
        asm!(
            // An odd 64-byte block first, then two per iteration.
            "tbz {n}, #6, 2f",
            "ld1 {{v0.2d, v1.2d, v2.2d, v3.2d}}, [{s}], #64",
            "st1 {{v0.2d, v1.2d, v2.2d, v3.2d}}, [{d}], #64",
            "cmp {s}, {end}",
            "b.eq 3f",
            "2:",
            "ld1 {{v0.2d, v1.2d, v2.2d, v3.2d}}, [{s}], #64",
            "st1 {{v0.2d, v1.2d, v2.2d, v3.2d}}, [{d}], #64",
            "ld1 {{v0.2d, v1.2d, v2.2d, v3.2d}}, [{s}], #64",
            "st1 {{v0.2d, v1.2d, v2.2d, v3.2d}}, [{d}], #64",
            "cmp {s}, {end}",
            "b.ne 2b",
            "3:",
            s = inout(reg) src => _,
            d = inout(reg) dst => _,
            n = in(reg) len,
            end = in(reg) src as usize + len,
            out("v0") _,
            out("v1") _,
            out("v2") _,
            out("v3") _,
            options(nostack),
        );
    }
}

// `memcpy` for the whole kernel, replacing compiler-builtins' weak one.
//
// Why: the `aarch64-unknown-none` target is built with `+strict-align`
// (it must run with the MMU off), so LLVM lowers every move of a
// mid-sized value (a 47-byte enum, a 56-byte result) to a `memcpy` call,
// and compiler-builtins' portable `memcpy` then copies unaligned pairs a
// word at a time with shifts.  Profiled under `-icount`, that was 9% of
// the instructions of a 4K `move_pages` (`make profile`, 2026-12-05).
// Every Rust instruction here runs with the MMU on (the boot code enables
// it before the first call into Rust, on every CPU) and SCTLR_EL1.A clear
// (boot/aarch64/entry.S), where unaligned accesses to Normal memory are
// allowed, so this one uses unaligned `ldp`/`ldr`: 16 bytes per pair, the
// last (or only) bytes by overlapping accesses from the end.  Rust never
// copies to device memory with `memcpy` (MMIO is volatile).
//
// memcpy(dst: x0, src: x1, n: x2) -> x0; clobbers x2-x7 and the flags
// only (caller-saved).
core::arch::global_asm!(
    ".section .text.memcpy, \"ax\"",
    ".global memcpy",
    ".type memcpy, %function",
    ".balign 64",
    "memcpy:",
    "    add     x4, x1, x2", // source end
    "    add     x5, x0, x2", // destination end
    "    cmp     x2, #16",
    "    b.lo    5f",
    "    mov     x3, x0",
    // Whole 16-byte pairs while at least 16 bytes remain past them ...
    "    cmp     x2, #32",
    "    b.lo    2f",
    "1:  ldp     x6, x7, [x1], #16",
    "    stp     x6, x7, [x3], #16",
    "    sub     x2, x2, #16",
    "    cmp     x2, #32",
    "    b.hs    1b",
    // ... then the last 16..31 bytes: one pair from the current position
    // and one ending at the end (they may overlap).
    "2:  ldp     x6, x7, [x1]",
    "    stp     x6, x7, [x3]",
    "    ldp     x6, x7, [x4, #-16]",
    "    stp     x6, x7, [x5, #-16]",
    "    ret",
    // Fewer than 16 bytes: two overlapping accesses of 8, 4, 2 or 1.
    "5:  tbz     x2, #3, 6f",
    "    ldr     x6, [x1]",
    "    ldur    x7, [x4, #-8]",
    "    str     x6, [x0]",
    "    stur    x7, [x5, #-8]",
    "    ret",
    "6:  tbz     x2, #2, 7f",
    "    ldr     w6, [x1]",
    "    ldur    w7, [x4, #-4]",
    "    str     w6, [x0]",
    "    stur    w7, [x5, #-4]",
    "    ret",
    "7:  cbz     x2, 9f",
    "    tbz     x2, #1, 8f",
    "    ldrh    w6, [x1]",
    "    ldurh   w7, [x4, #-2]",
    "    strh    w6, [x0]",
    "    sturh   w7, [x5, #-2]",
    "    ret",
    "8:  ldrb    w6, [x1]",
    "    strb    w6, [x0]",
    "9:  ret",
    ".size memcpy, . - memcpy",
    ".text",
);
