//! The frame-pointer stack walk of the panic report.
//!
//! Every kernel function keeps a frame record (`-C force-frame-pointers=yes`,
//! `.cargo/config.toml`), and both architectures lay it out alike: the frame
//! pointer (x86 RBP, arm64 X29) holds the address of a 16-byte record whose
//! first word is the caller's frame pointer and whose second is the return
//! address into the caller (x86: pushed by `call`, then `push rbp`; arm64:
//! `stp x29, x30, [sp, #-N]!`).  Following the first words from record to
//! record names every caller in turn, as Linux's frame-pointer unwinder.
//!
//! The walk runs in the panic handler, where a fault would hide the panic,
//! so it reads only inside one stack the caller knows to be mapped and stops
//! at the first record that does not look like one: null, misaligned, not
//! above the previous record (stacks grow down, so callers' records lie
//! higher; this also ends any cycle), or not wholly inside the stack.  A
//! chain that crosses an exception or interrupt entry goes on into the
//! interrupted code when its frame pointer still names a record on the same
//! stack, and stops at a user-mode or foreign value.
#![allow(unsafe_code)]

use core::ops::Range;

/// Frames a walk reports at most (a deeper chain is cut there).
pub const MAX_FRAMES: usize = 32;

/// Calls `f(return_address)` for each frame record of the chain that starts
/// at `fp`, innermost first, at most `max` times; returns how many it
/// reported.
///
/// # Safety
///
/// Every byte of `stack` must be mapped and readable for the whole walk (the
/// running CPU's own kernel stack is: it holds the walker's own frame).
pub unsafe fn walk_frames(
    mut fp: u64,
    stack: Range<u64>,
    max: usize,
    f: &mut dyn FnMut(u64),
) -> usize {
    let mut n = 0;
    while n < max
        && fp != 0
        && fp.is_multiple_of(8)
        && fp >= stack.start
        && fp <= stack.end.saturating_sub(16)
    {
        // SAFETY: `fp..fp + 16` lies inside `stack` (checked just above),
        // which the caller guarantees is mapped and readable; the address
        // is 8-aligned.  Volatile: another CPU's writes to this stack are
        // not ours to reason about, only to print.
        let (next, ret) = unsafe {
            (
                core::ptr::read_volatile(fp as *const u64),
                core::ptr::read_volatile((fp + 8) as *const u64),
            )
        };
        if ret == 0 {
            break;
        }
        f(ret);
        n += 1;
        if next <= fp {
            break;
        }
        fp = next;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// A fake stack of `words` u64s; `rec(i, next_i, ret)` writes a frame
    /// record at word `i` pointing at word `next_i` (or at address 0).
    struct Fake(Vec<u64>);

    impl Fake {
        fn addr(&self, i: usize) -> u64 {
            self.0.as_ptr() as u64 + 8 * i as u64
        }
        fn rec(&mut self, i: usize, next: Option<usize>, ret: u64) {
            let n = next.map_or(0, |j| self.addr(j));
            self.0[i] = n;
            self.0[i + 1] = ret;
        }
        fn range(&self) -> Range<u64> {
            self.addr(0)..self.addr(self.0.len())
        }
        fn walk(&self, start: usize, max: usize) -> Vec<u64> {
            let mut v = Vec::new();
            // SAFETY: the range is the vector's own storage.
            unsafe { walk_frames(self.addr(start), self.range(), max, &mut |r| v.push(r)) };
            v
        }
    }

    #[test]
    fn follows_the_chain_to_a_null_frame_pointer() {
        let mut s = Fake(vec![0; 32]);
        s.rec(2, Some(8), 0x100);
        s.rec(8, Some(20), 0x200);
        s.rec(20, None, 0x300);
        assert_eq!(s.walk(2, MAX_FRAMES), [0x100, 0x200, 0x300]);
        assert_eq!(s.walk(2, 2), [0x100, 0x200]);
    }

    #[test]
    fn stops_at_records_that_go_down_leave_the_stack_or_are_misaligned() {
        let mut s = Fake(vec![0; 32]);
        // A cycle (back down to word 2) ends after the record that points down.
        s.rec(2, Some(8), 0x100);
        s.rec(8, Some(2), 0x200);
        assert_eq!(s.walk(2, MAX_FRAMES), [0x100, 0x200]);
        // Past the end of the stack: the record there is never read.
        let end = s.range().end;
        s.0[8] = end;
        assert_eq!(s.walk(2, MAX_FRAMES), [0x100, 0x200]);
        // The last record would straddle the end.
        s.0[8] = s.addr(31);
        assert_eq!(s.walk(2, MAX_FRAMES), [0x100, 0x200]);
        // Misaligned.
        s.0[8] = s.addr(12) + 4;
        assert_eq!(s.walk(2, MAX_FRAMES), [0x100, 0x200]);
        // A start below the stack reads nothing.
        let mut v = Vec::new();
        let r = s.addr(4)..s.range().end;
        // SAFETY: a sub-range of the vector's storage.
        unsafe { walk_frames(s.addr(2), r, MAX_FRAMES, &mut |x| v.push(x)) };
        assert!(v.is_empty());
    }

    #[test]
    fn a_zero_return_address_ends_the_walk() {
        let mut s = Fake(vec![0; 16]);
        s.rec(2, Some(6), 0x100);
        s.rec(6, Some(10), 0);
        assert_eq!(s.walk(2, MAX_FRAMES), [0x100]);
    }
}
