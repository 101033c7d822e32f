//! Bulk zeroing and copying of physical memory through the direct map.
//!
//! The fault path zeroes every new folio and copies a page on each COW
//! break, so these loops set the cost of large folios.  Under QEMU TCG,
//! `rep stos`/`rep movs` run one element per translated-block iteration
//! (QEMU 7.2: 3x slower for `rep stosq`, 10x for `rep stosb`), while a plain unrolled loop of 8-byte
//! moves becomes straight-line host stores; on hardware both are close to
//! memory bandwidth for page-sized blocks.
#![allow(unsafe_code)]

use core::arch::asm;

/// Zero `len` bytes at `dst`.
///
/// # Safety
/// `[dst, dst + len)` must be writable memory the caller owns, with no
/// live Rust reference into it.
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

/// Zero `len` bytes at `dst`, both multiples of 64: eight 8-byte stores
/// per iteration.
///
/// # Safety
/// As for [`zero_bytes`], with `dst` and `len` 64-byte aligned.
pub unsafe fn zero_blocks(dst: *mut u8, len: usize) {
    debug_assert!((dst as usize | len) & 63 == 0);
    if len == 0 {
        return;
    }
    // SAFETY: the loop writes exactly `[dst, dst + len)`, which the caller
    // owns; no stack use, flags clobbered (default).
    unsafe {
        asm!(
            "2:",
            "mov qword ptr [{p}], {z}",
            "mov qword ptr [{p} + 8], {z}",
            "mov qword ptr [{p} + 16], {z}",
            "mov qword ptr [{p} + 24], {z}",
            "mov qword ptr [{p} + 32], {z}",
            "mov qword ptr [{p} + 40], {z}",
            "mov qword ptr [{p} + 48], {z}",
            "mov qword ptr [{p} + 56], {z}",
            "add {p}, 64",
            "cmp {p}, {end}",
            "jne 2b",
            p = inout(reg) dst => _,
            end = in(reg) dst.add(len),
            z = in(reg) 0u64,
            options(nostack),
        );
    }
}

/// `rep stosq` (for comparison benchmarks).
///
/// # Safety
/// As for [`zero_blocks`].
pub unsafe fn zero_rep_stosq(dst: *mut u8, len: usize) {
    // SAFETY: writes exactly `len / 8` quadwords from `dst`; DF is clear
    // (the ABI guarantees it on entry to Rust code).
    unsafe {
        asm!("rep stosq", inout("rdi") dst => _, inout("rcx") len / 8 => _, in("rax") 0u64,
             options(nostack));
    }
}

/// `rep stosb` (for comparison benchmarks).
///
/// # Safety
/// As for [`zero_blocks`].
pub unsafe fn zero_rep_stosb(dst: *mut u8, len: usize) {
    // SAFETY: writes exactly `len` bytes from `dst`; DF is clear.
    unsafe {
        asm!("rep stosb", inout("rdi") dst => _, inout("rcx") len => _, in("al") 0u8,
             options(nostack));
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
/// eight 8-byte loads and stores per iteration.
///
/// # Safety
/// As for [`copy_bytes`], with the alignment above.
pub unsafe fn copy_blocks(dst: *mut u8, src: *const u8, len: usize) {
    debug_assert!((dst as usize | src as usize | len) & 63 == 0);
    if len == 0 {
        return;
    }
    // SAFETY: reads `[src, src + len)` and writes `[dst, dst + len)`, both
    // owned by the caller and disjoint; no stack use.
    unsafe {
        asm!(
            "2:",
            "mov {a}, qword ptr [{s}]",
            "mov {b}, qword ptr [{s} + 8]",
            "mov {c}, qword ptr [{s} + 16]",
            "mov {e}, qword ptr [{s} + 24]",
            "mov qword ptr [{d}], {a}",
            "mov qword ptr [{d} + 8], {b}",
            "mov qword ptr [{d} + 16], {c}",
            "mov qword ptr [{d} + 24], {e}",
            "mov {a}, qword ptr [{s} + 32]",
            "mov {b}, qword ptr [{s} + 40]",
            "mov {c}, qword ptr [{s} + 48]",
            "mov {e}, qword ptr [{s} + 56]",
            "mov qword ptr [{d} + 32], {a}",
            "mov qword ptr [{d} + 40], {b}",
            "mov qword ptr [{d} + 48], {c}",
            "mov qword ptr [{d} + 56], {e}",
            "add {s}, 64",
            "add {d}, 64",
            "cmp {s}, {end}",
            "jne 2b",
            s = inout(reg) src => _,
            d = inout(reg) dst => _,
            end = in(reg) src.add(len),
            a = out(reg) _,
            b = out(reg) _,
            c = out(reg) _,
            e = out(reg) _,
            options(nostack),
        );
    }
}

#[cfg(all(target_os = "none", feature = "selftest"))]
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
