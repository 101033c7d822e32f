//! Bulk zeroing and copying of physical memory through the direct map.
//!
//! The fault path zeroes every new folio and copies a page on each COW
//! break.  `dc zva` zeroes one whole block (64 bytes on QEMU `max` and
//! most cores, from DCZID_EL0) per instruction, on hardware and under
//! QEMU TCG alike (where it is one host `memset` per block); the fallback
//! and the copy loop move 64 bytes per iteration with paired stores.
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

/// Zero `len` bytes at `dst`, both multiples of 64: `dc zva` when its
/// block size divides 64-byte-aligned ranges, else paired stores.
///
/// # Safety
/// As for [`zero_bytes`], with `dst` and `len` 64-byte aligned.
pub unsafe fn zero_blocks(dst: *mut u8, len: usize) {
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
        // SAFETY: stores exactly `[dst, end)` in 64-byte steps.
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

/// Copy `len` bytes (a multiple of 64, both pointers 64-byte aligned),
/// four `ldp`/`stp` pairs per iteration.
///
/// # Safety
/// As for [`copy_bytes`], with the alignment above.
pub unsafe fn copy_blocks(dst: *mut u8, src: *const u8, len: usize) {
    debug_assert!((dst as usize | src as usize | len) & 63 == 0);
    if len == 0 {
        return;
    }
    // SAFETY: reads `[src, src + len)` and writes `[dst, dst + len)`, both
    // owned by the caller and disjoint.
    unsafe {
        asm!(
            "2:",
            "ldp {a}, {b}, [{s}]",
            "ldp {c}, {e}, [{s}, #16]",
            "stp {a}, {b}, [{d}]",
            "stp {c}, {e}, [{d}, #16]",
            "ldp {a}, {b}, [{s}, #32]",
            "ldp {c}, {e}, [{s}, #48]",
            "stp {a}, {b}, [{d}, #32]",
            "stp {c}, {e}, [{d}, #48]",
            "add {s}, {s}, #64",
            "add {d}, {d}, #64",
            "cmp {s}, {end}",
            "b.ne 2b",
            s = inout(reg) src => _,
            d = inout(reg) dst => _,
            end = in(reg) src as usize + len,
            a = out(reg) _,
            b = out(reg) _,
            c = out(reg) _,
            e = out(reg) _,
            options(nostack),
        );
    }
}

#[cfg(target_os = "none")]
mod tests {
    use super::*;
    use alloc::alloc::{Layout, alloc, dealloc};
    use ktest::{check, ktest};

    /// Run `f` on a 32 KiB, page-aligned scratch buffer.
    fn with_buf(f: impl FnOnce(*mut u8) -> ktest::TestResult) -> ktest::TestResult {
        let layout = Layout::from_size_align(32768, 4096).unwrap();
        // SAFETY: a non-zero-sized layout.
        let p = unsafe { alloc(layout) };
        check!(!p.is_null(), "no memory for the scratch buffer");
        let r = f(p);
        // SAFETY: allocated above with the same layout.
        unsafe { dealloc(p, layout) };
        r
    }

    ktest! {
        fn arch_mem_zero_and_copy_exact_ranges() {
            // Aligned block sizes take the fast loops, the odd ones the fallback;
            // bytes outside the range must never change.
            for (off, len) in [(0, 4096), (4096, 8192), (64, 128), (0, 64), (3, 100), (128, 0)] {
                with_buf(|p| {
                    // SAFETY: every access below stays inside the 32 KiB buffer.
                    unsafe {
                        for i in 0..32768 {
                            *p.add(i) = (i % 251) as u8 | 1;
                        }
                        zero_bytes(p.add(off), len);
                        for i in 0..32768 {
                            let want = if (off..off + len).contains(&i) { 0 } else { (i % 251) as u8 | 1 };
                            check!(*p.add(i) == want, "zero {off}+{len}: byte {i} is {}", *p.add(i));
                        }
                        copy_bytes(p.add(off + 16384), p.add(off ^ 64), len);
                        for i in 0..len {
                            check!(*p.add(off + 16384 + i) == *p.add((off ^ 64) + i), "copy {off}+{len}: byte {i}");
                        }
                        let after = off + 16384 + len;
                        if after < 32768 {
                            check!(*p.add(after) == (after % 251) as u8 | 1, "copy {off}+{len} overran");
                        }
                    }
                    Ok(())
                })?;
            }
            Ok(())
        }
    }
}
