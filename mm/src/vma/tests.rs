//! Tests for the VMA set and the syscall argument rules.

// Expected values are lists of ranges; a one-element list is intended.
#![allow(clippy::single_range_in_vec_init)]

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use super::*;
use crate::abi::errno::Errno::{self, *};
use crate::abi::uapi::*;

const P: u64 = PAGE_SIZE;
const M: u64 = 1 << 20;
const RW: Prot = PROT_READ.union(PROT_WRITE);
const PA: MapFlags = MAP_PRIVATE.union(MAP_ANONYMOUS);
const TS: u64 = Layout::DEFAULT.task_size;

fn set() -> VmaSet {
    VmaSet::default()
}

fn map(s: &mut VmaSet, addr: u64, len: u64, prot: Prot, flags: MapFlags) -> Result<u64, Errno> {
    s.mmap(addr, len, prot, flags, -1, 0).map(|o| o.addr)
}

fn fixed(s: &mut VmaSet, addr: u64, len: u64, prot: Prot) -> u64 {
    map(s, addr, len, prot, PA | MAP_FIXED).unwrap()
}

fn ranges(s: &VmaSet) -> Vec<(u64, u64)> {
    s.iter().map(|v| (v.start, v.end)).collect()
}

#[test]
fn mmap_argument_errors() {
    let base = 0x1000_0000u64;
    let cases: &[(u64, u64, Prot, MapFlags, i64, u64, Errno)] = &[
        // (addr, len, prot, flags, fd, offset, errno)
        (0, 0, RW, PA, -1, 0, EINVAL),
        (0, P, RW, PA, -1, 1, EINVAL),
        (0, P, RW, MAP_PRIVATE, -1, 0, EBADF),
        (0, P, RW, MAP_PRIVATE, 3, 0, ENODEV),
        (0, P, RW, MAP_SHARED | MAP_ANONYMOUS, -1, 0, EINVAL),
        (0, P, RW, MAP_SHARED_VALIDATE | MAP_ANONYMOUS, -1, 0, EINVAL),
        (0, P, RW, MAP_DROPPABLE | MAP_ANONYMOUS, -1, 0, EINVAL),
        (0, P, RW, MAP_ANONYMOUS, -1, 0, EINVAL),
        (0, P, RW, PA | MAP_HUGETLB, -1, 0, ENOMEM),
        (0, u64::MAX, RW, PA, -1, 0, ENOMEM),
        (0, u64::MAX - P + 2, RW, PA, -1, 0, ENOMEM),
        (0, TS, RW, PA, -1, 0, ENOMEM),
        (0, 1 << 62, RW, PA, -1, 0, ENOMEM),
        (base + 1, P, RW, PA | MAP_FIXED, -1, 0, EINVAL),
        (base + 1, P, RW, PA | MAP_FIXED_NOREPLACE, -1, 0, EINVAL),
        (TS, P, RW, PA | MAP_FIXED, -1, 0, ENOMEM),
        (TS - P, 2 * P, RW, PA | MAP_FIXED, -1, 0, ENOMEM),
        (0xffff_8000_0000_0000, P, RW, PA | MAP_FIXED, -1, 0, ENOMEM),
        (0, P, RW, PA | MAP_FIXED, -1, 0, EPERM),
        (0x8000, P, RW, PA | MAP_FIXED, -1, 0, EPERM),
        (0, 2 * P, RW, MAP_PRIVATE, 0, P, ENODEV),
    ];
    for &(a, l, p, f, fd, off, e) in cases {
        let mut s = set();
        assert_eq!(
            s.mmap(a, l, p, f, fd, off).map(|o| o.addr),
            Err(e),
            "mmap({a:#x}, {l:#x}, {p:#x}, {f:#x}, {fd}, {off:#x})"
        );
        assert!(s.is_empty());
    }
}

#[test]
fn mmap_basics() {
    let mut s = set();
    // Unknown prot bits are ignored by mmap, as on Linux.
    let a = map(&mut s, 0, 3 * P + 1, PROT_READ | Prot::from_raw(0x1000), PA).unwrap();
    assert_eq!(a % P, 0);
    let v = *s.find(a).unwrap();
    assert_eq!(v.len(), 4 * P);
    assert_eq!(v.prot(), PROT_READ);
    assert!(
        v.flags
            .contains(VmFlags::MAYWRITE | VmFlags::MAYREAD | VmFlags::MAYEXEC)
    );
    assert!(!v.flags.contains(VmFlags::ACCOUNT));
    assert!(
        a + 4 * P <= Layout::DEFAULT.mmap_base,
        "top-down below mmap_base"
    );
    // Top-down: the next mapping sits directly below and merges.
    let b = map(&mut s, 0, P, PROT_READ, PA).unwrap();
    assert_eq!(b, a - P);
    assert_eq!(s.len(), 1);
    // Different prot: adjacent but separate.
    let c = map(&mut s, 0, P, RW, PA).unwrap();
    assert_eq!(c, b - P);
    assert_eq!(s.len(), 2);
    assert!(s.find(c).unwrap().flags.contains(VmFlags::ACCOUNT));
    s.check_invariants().unwrap();
}

#[test]
fn mmap_flags_recorded() {
    let mut s = set();
    let o = s.mmap(0, P, RW, PA | MAP_POPULATE, -1, 0).unwrap();
    assert!(o.populate);
    let o = s
        .mmap(0, P, RW, PA | MAP_POPULATE | MAP_NONBLOCK, -1, 0)
        .unwrap();
    assert!(!o.populate);
    let o = s.mmap(0, P, RW, PA | MAP_LOCKED, -1, 0).unwrap();
    assert!(o.populate);
    assert!(s.find(o.addr).unwrap().flags.contains(VmFlags::LOCKED));
    let o = s.mmap(0, P, RW, PA | MAP_STACK, -1, 0).unwrap();
    let f = s.find(o.addr).unwrap().flags;
    assert!(f.contains(VmFlags::NOHUGEPAGE));
    assert!(f.thp_hints().nohugepage);
    let o = s.mmap(0, P, RW, PA | MAP_NORESERVE, -1, 0).unwrap();
    let f = s.find(o.addr).unwrap().flags;
    assert!(f.contains(VmFlags::NORESERVE) && !f.contains(VmFlags::ACCOUNT));
    let o = s.mmap(0, P, RW, PA | MAP_GROWSDOWN, -1, 0).unwrap();
    assert!(s.find(o.addr).unwrap().flags.contains(VmFlags::GROWSDOWN));
    s.check_invariants().unwrap();
}

#[test]
fn hint_handling() {
    let mut s = set();
    let h = 0x2000_0000;
    assert_eq!(map(&mut s, h, P, RW, PA), Ok(h));
    // Unaligned hint: rounded down.
    assert_eq!(map(&mut s, h + 0x10_0123, P, RW, PA), Ok(h + 0x10_0000));
    // Occupied hint: somewhere else.
    let a = map(&mut s, h, P, RW, PA).unwrap();
    assert_ne!(a, h);
    // Hint below mmap_min_addr: rounded up to it.
    assert_eq!(map(&mut s, 0x1000, P, RW, PA), Ok(0x1_0000));
    // Hint too high: ignored.
    let a = map(&mut s, TS, P, RW, PA).unwrap();
    assert!(a < TS);
    // Hint with a 2 MiB length is taken as is (no THP alignment).
    assert_eq!(map(&mut s, 0x3000_1000, 2 * M, RW, PA), Ok(0x3000_1000));
    s.check_invariants().unwrap();
}

#[test]
fn thp_alignment() {
    let mut s = set();
    // Disturb alignment first.
    map(&mut s, 0, 3 * P, RW, PA).unwrap();
    for len in [2 * M, 4 * M, 8 * M] {
        let a = map(&mut s, 0, len, PROT_READ, PA).unwrap();
        assert_eq!(a % (2 * M), 0, "len {len:#x}");
    }
    // Not a multiple of 2 MiB: no alignment guarantee, just page aligned.
    map(&mut s, 0, P, RW, PA).unwrap();
    let a = map(&mut s, 0, 3 * M, PROT_EXEC, PA).unwrap();
    assert_ne!(a % (2 * M), 0);
    // Successive 2 MiB mappings with the same flags abut and merge.
    let mut s = set();
    let a = map(&mut s, 0, 2 * M, RW, PA).unwrap();
    let b = map(&mut s, 0, 2 * M, RW, PA).unwrap();
    assert_eq!(b + 2 * M, a);
    assert_eq!(s.len(), 1);
    // A non-zero offset shifts the alignment accordingly, when the
    // mapping still covers a whole aligned 2 MiB block.
    let o = s.mmap(0, 4 * M, PROT_READ, PA, -1, 0x1000).unwrap();
    assert_eq!(o.addr % (2 * M), 0x1000);
    s.check_invariants().unwrap();
}

#[test]
fn map_fixed_replaces_and_noreplace_refuses() {
    let mut s = set();
    let a = 0x4000_0000;
    fixed(&mut s, a, 16 * P, RW);
    let o = s
        .mmap(a + 4 * P, 4 * P, PROT_READ, PA | MAP_FIXED, -1, 0)
        .unwrap();
    assert_eq!(o.addr, a + 4 * P);
    assert_eq!(o.unmapped, [a + 4 * P..a + 8 * P]);
    assert_eq!(
        ranges(&s),
        [
            (a, a + 4 * P),
            (a + 4 * P, a + 8 * P),
            (a + 8 * P, a + 16 * P)
        ]
    );
    // Replacing with identical flags merges everything back.
    fixed(&mut s, a + 4 * P, 4 * P, RW);
    assert_eq!(ranges(&s), [(a, a + 16 * P)]);
    for (addr, len) in [
        (a, P),
        (a - P, 2 * P),
        (a + 15 * P, 4 * P),
        (a - 4 * P, 32 * P),
    ] {
        assert_eq!(
            map(&mut s, addr, len, RW, PA | MAP_FIXED_NOREPLACE),
            Err(EEXIST),
            "{addr:#x}+{len:#x}"
        );
    }
    assert_eq!(
        map(&mut s, a + 16 * P, P, RW, PA | MAP_FIXED_NOREPLACE),
        Ok(a + 16 * P)
    );
    assert_eq!(ranges(&s), [(a, a + 17 * P)]);
    s.check_invariants().unwrap();
}

#[test]
fn munmap_rules() {
    let a = 0x4000_0000;
    let cases: &[(u64, u64, Result<usize, Errno>)] = &[
        (a + 1, P, Err(EINVAL)),
        (a, 0, Err(EINVAL)),
        (TS + P, P, Err(EINVAL)),
        (TS - P, 2 * P, Err(EINVAL)),
        (a, u64::MAX, Err(EINVAL)),
        (0xffff_8000_0000_0000, P, Err(EINVAL)),
        (0x1000, P, Ok(0)),
        (TS - P, P, Ok(0)),
        (a, 1, Ok(1)),
        (a - 16 * P, 64 * P, Ok(1)),
    ];
    for &(addr, len, want) in cases {
        let mut s = set();
        fixed(&mut s, a, 16 * P, RW);
        assert_eq!(
            s.munmap(addr, len).map(|r| r.len()),
            want,
            "munmap({addr:#x}, {len:#x})"
        );
        s.check_invariants().unwrap();
    }
    // Partial unmaps split.
    let mut s = set();
    fixed(&mut s, a, 16 * P, RW);
    assert_eq!(s.munmap(a + 4 * P, 4 * P), Ok(vec![a + 4 * P..a + 8 * P]));
    assert_eq!(ranges(&s), [(a, a + 4 * P), (a + 8 * P, a + 16 * P)]);
    // The upper part keeps its page offset: remapping the hole merges all.
    fixed(&mut s, a + 4 * P, 4 * P, RW);
    assert_eq!(ranges(&s), [(a, a + 16 * P)]);
    // Unmap across several VMAs and holes reports each mapped piece.
    s.mprotect(a + 2 * P, P, PROT_READ).result.unwrap();
    s.munmap(a + 10 * P, P).unwrap();
    let r = s.munmap(a + P, 12 * P).unwrap();
    assert_eq!(
        r,
        [
            a + P..a + 2 * P,
            a + 2 * P..a + 3 * P,
            a + 3 * P..a + 10 * P,
            a + 11 * P..a + 13 * P
        ]
    );
    assert_eq!(ranges(&s), [(a, a + P), (a + 13 * P, a + 16 * P)]);
    s.check_invariants().unwrap();
}

#[test]
fn mprotect_rules() {
    let a = 0x4000_0000;
    let cases: &[(u64, u64, Prot, Result<(), Errno>)] = &[
        (a + 1, P, PROT_READ, Err(EINVAL)),
        (a + 1, 0, PROT_READ, Err(EINVAL)),
        (a, 0, PROT_READ, Ok(())),
        (a, 0, Prot::from_raw(0x1000), Ok(())),
        (a, P, Prot::from_raw(0x1000), Err(EINVAL)),
        (a, P, PROT_READ | PROT_SEM, Ok(())),
        (a, P, PROT_GROWSDOWN | PROT_GROWSUP, Err(EINVAL)),
        (a, P, PROT_READ | PROT_GROWSDOWN, Err(EINVAL)),
        (a, P, PROT_READ | PROT_GROWSUP, Err(EINVAL)),
        (a, u64::MAX, PROT_READ, Err(ENOMEM)),
        (a, u64::MAX - a, PROT_READ, Err(ENOMEM)),
        (a - P, 2 * P, PROT_READ, Err(ENOMEM)),
        (a + 16 * P, P, PROT_READ, Err(ENOMEM)),
        (0x1000, P, PROT_READ, Err(ENOMEM)),
        (a, 17 * P, PROT_READ, Err(ENOMEM)),
        (a, 16 * P, PROT_NONE, Ok(())),
        (a + P, 1, PROT_READ | PROT_EXEC, Ok(())),
    ];
    for &(addr, len, prot, want) in cases {
        let mut s = set();
        fixed(&mut s, a, 16 * P, RW);
        assert_eq!(
            s.mprotect(addr, len, prot).result,
            want,
            "mprotect({addr:#x}, {len:#x}, {prot:#x})"
        );
        s.check_invariants().unwrap();
    }
}

#[test]
fn mprotect_splits_merges_and_partial() {
    let a = 0x4000_0000;
    let mut s = set();
    fixed(&mut s, a, 16 * P, RW);
    let o = s.mprotect(a + 4 * P, 2 * P, PROT_READ);
    assert_eq!(o.result, Ok(()));
    assert_eq!(o.changed.len(), 1);
    assert_eq!(o.changed[0].0, a + 4 * P..a + 6 * P);
    assert_eq!(o.changed[0].1.prot(), PROT_READ);
    // Linux keeps VM_ACCOUNT after dropping write.
    assert!(o.changed[0].1.contains(VmFlags::ACCOUNT));
    assert_eq!(s.len(), 3);
    // Same prot again: nothing changes.
    let o = s.mprotect(a + 4 * P, 2 * P, PROT_READ);
    assert!(o.changed.is_empty());
    // Back to RW: merges into one.
    let o = s.mprotect(a + 4 * P, 2 * P, RW);
    assert_eq!(o.changed.len(), 1);
    assert_eq!(ranges(&s), [(a, a + 16 * P)]);
    // A hole in the middle: the part before is changed, then ENOMEM.
    s.munmap(a + 8 * P, P).unwrap();
    let o = s.mprotect(a + 2 * P, 12 * P, PROT_READ);
    assert_eq!(o.result, Err(ENOMEM));
    assert_eq!(o.changed, [(a + 2 * P..a + 8 * P, o.changed[0].1)]);
    assert_eq!(s.find(a + 7 * P).unwrap().prot(), PROT_READ);
    assert_eq!(s.find(a + 9 * P).unwrap().prot(), RW);
    // Read-only then writable gains VM_ACCOUNT, so it merges with RW.
    let mut s = set();
    fixed(&mut s, a, 4 * P, PROT_READ);
    fixed(&mut s, a + 4 * P, 4 * P, RW);
    assert_eq!(s.len(), 2);
    s.mprotect(a, 4 * P, RW).result.unwrap();
    assert_eq!(s.len(), 1);
    s.check_invariants().unwrap();
}

#[test]
fn mprotect_growsdown() {
    let mut s = set();
    let o = s
        .mmap(
            0x5000_0000,
            8 * P,
            RW,
            PA | MAP_GROWSDOWN | MAP_FIXED,
            -1,
            0,
        )
        .unwrap();
    let r = s.mprotect(o.addr + 4 * P, P, PROT_READ | PROT_GROWSDOWN);
    assert_eq!(r.result, Ok(()));
    assert_eq!(r.changed[0].0, o.addr..o.addr + 5 * P);
}

#[test]
fn madvise_rules() {
    let a = 0x4000_0000;
    let cases: &[(u64, u64, u64, Result<(), Errno>)] = &[
        (a, P, 999, Err(EINVAL)),
        (a, 0, 999, Err(EINVAL)),
        (a + 1, P, MADV_DONTNEED.bits(), Err(EINVAL)),
        (a + 1, 0, MADV_DONTNEED.bits(), Err(EINVAL)),
        (a, u64::MAX, MADV_DONTNEED.bits(), Err(EINVAL)),
        (a, u64::MAX - a + 1 + P, MADV_DONTNEED.bits(), Err(EINVAL)),
        (a, u64::MAX - a - 2 * P, MADV_DONTNEED.bits(), Err(ENOMEM)),
        (a, 0, MADV_DONTNEED.bits(), Ok(())),
        (a, 1, MADV_DONTNEED.bits(), Ok(())),
        (a, 16 * P, MADV_HUGEPAGE.bits(), Ok(())),
        (a, 17 * P, MADV_HUGEPAGE.bits(), Err(ENOMEM)),
        (a - P, 2 * P, MADV_NOHUGEPAGE.bits(), Err(ENOMEM)),
        (a + 16 * P, P, MADV_DONTNEED.bits(), Err(ENOMEM)),
        (0x1000, P, MADV_DONTNEED.bits(), Err(ENOMEM)),
        (a, P, MADV_COLLAPSE.bits(), Ok(())),
        (a, P, MADV_REMOVE.bits(), Err(EINVAL)),
        (a, P, MADV_MERGEABLE.bits(), Err(EINVAL)),
        (a, P, MADV_UNMERGEABLE.bits(), Err(EINVAL)),
        (a, P, MADV_GUARD_INSTALL.bits(), Err(EINVAL)),
        (a, P, MADV_HWPOISON.bits(), Err(EINVAL)),
        (a, P, MADV_POPULATE_READ.bits(), Ok(())),
        (a, P, MADV_POPULATE_WRITE.bits(), Ok(())),
        (a, 17 * P, MADV_POPULATE_WRITE.bits(), Err(ENOMEM)),
    ];
    for &(addr, len, adv, want) in cases {
        let mut s = set();
        fixed(&mut s, a, 16 * P, RW);
        assert_eq!(
            Advice::from_raw(adv).map_or_else(Err, |adv| s.madvise(addr, len, adv).result),
            want,
            "madvise({addr:#x}, {len:#x}, {adv})"
        );
        s.check_invariants().unwrap();
    }
    // Every valid Linux advice value is accepted by the validity checks
    // (the parser's and madvise's).
    for adv in [
        0, 1, 2, 3, 4, 8, 10, 11, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    ] {
        let mut s = set();
        fixed(&mut s, a, 16 * P, RW);
        let adv = Advice::from_raw(adv).unwrap();
        assert_eq!(s.madvise(a, P, adv).result, Ok(()), "advice {adv:#x}");
    }
    for adv in [5, 6, 7, 26, 99, 104, u64::MAX] {
        let mut s = set();
        fixed(&mut s, a, 16 * P, RW);
        assert_eq!(Advice::from_raw(adv), Err(EINVAL), "advice {adv}");
    }
}

#[test]
fn madvise_hugepage_splits_and_merges() {
    let a = 0x4000_0000;
    let mut s = set();
    fixed(&mut s, a, 16 * P, RW);
    let o = s.madvise(a + 4 * P, 4 * P, MADV_HUGEPAGE);
    assert_eq!(o.action, MadviseAction::Hugepage);
    assert_eq!(o.ranges, [a + 4 * P..a + 8 * P]);
    assert_eq!(s.len(), 3);
    assert!(s.find(a + 4 * P).unwrap().thp_hints().hugepage);
    assert!(!s.find(a).unwrap().thp_hints().hugepage);
    // NOHUGEPAGE replaces HUGEPAGE.
    s.madvise(a + 4 * P, 2 * P, MADV_NOHUGEPAGE).result.unwrap();
    let h = s.find(a + 4 * P).unwrap().thp_hints();
    assert!(h.nohugepage && !h.hugepage);
    assert_eq!(s.len(), 4);
    // HUGEPAGE over the whole thing merges to one VMA.
    s.madvise(a, 16 * P, MADV_HUGEPAGE).result.unwrap();
    assert_eq!(ranges(&s), [(a, a + 16 * P)]);
    // Holes: applied to mapped parts, then ENOMEM.
    s.munmap(a + 8 * P, 2 * P).unwrap();
    let o = s.madvise(a, 16 * P, MADV_NOHUGEPAGE);
    assert_eq!(o.result, Err(ENOMEM));
    assert_eq!(o.ranges, [a..a + 8 * P, a + 10 * P..a + 16 * P]);
    assert!(s.iter().all(|v| v.thp_hints().nohugepage));
    s.check_invariants().unwrap();
}

#[test]
fn madvise_actions() {
    let a = 0x4000_0000;
    let mut s = set();
    fixed(&mut s, a, 8 * P, RW);
    fixed(&mut s, a + 8 * P, 8 * P, PROT_READ);
    s.munmap(a + 12 * P, P).unwrap();
    let o = s.madvise(a + P, 14 * P, MADV_DONTNEED);
    assert_eq!(o.action, MadviseAction::Zap);
    assert_eq!(
        o.ranges,
        [
            a + P..a + 8 * P,
            a + 8 * P..a + 12 * P,
            a + 13 * P..a + 15 * P
        ]
    );
    assert_eq!(o.result, Err(ENOMEM));
    assert_eq!(s.len(), 3, "DONTNEED does not split");
    let o = s.madvise(a, 8 * P, MADV_COLLAPSE);
    assert_eq!((o.action, o.result), (MadviseAction::Collapse, Ok(())));
    assert_eq!(o.ranges, [a..a + 8 * P]);
    // Populate: write needs PROT_WRITE (EINVAL), holes stop it (ENOMEM).
    let o = s.madvise(a, 10 * P, MADV_POPULATE_WRITE);
    assert_eq!(o.result, Err(EINVAL));
    assert_eq!(o.ranges, [a..a + 8 * P]);
    let o = s.madvise(a, 14 * P, MADV_POPULATE_READ);
    assert_eq!(o.result, Err(ENOMEM));
    assert_eq!(o.ranges, [a..a + 8 * P, a + 8 * P..a + 12 * P]);
    // Locked VMAs refuse DONTNEED but accept DONTNEED_LOCKED.
    let mut s = set();
    s.mmap(a, 4 * P, RW, PA | MAP_FIXED | MAP_LOCKED, -1, 0)
        .unwrap();
    assert_eq!(s.madvise(a, P, MADV_DONTNEED).result, Err(EINVAL));
    assert_eq!(s.madvise(a, P, MADV_FREE).result, Err(EINVAL));
    assert_eq!(s.madvise(a, P, MADV_DONTNEED_LOCKED).result, Ok(()));
    // Collapse refused on NOHUGEPAGE.
    s.madvise(a, P, MADV_NOHUGEPAGE).result.unwrap();
    assert_eq!(s.madvise(a, 2 * P, MADV_COLLAPSE).result, Err(EINVAL));
}

#[test]
fn find_and_intersect() {
    let a = 0x4000_0000;
    let mut s = set();
    fixed(&mut s, a, 4 * P, RW);
    fixed(&mut s, a + 8 * P, 4 * P, PROT_READ);
    assert_eq!(s.find(a).map(|v| v.start), Some(a));
    assert_eq!(s.find(a + 4 * P - 1).map(|v| v.start), Some(a));
    assert!(s.find(a + 4 * P).is_none());
    assert!(s.find(a - 1).is_none());
    assert_eq!(s.find_vma(a + 5 * P).map(|v| v.start), Some(a + 8 * P));
    assert!(s.find_vma(a + 12 * P).is_none());
    let starts = |b, e| -> Vec<u64> { s.find_intersecting(b, e).map(|v| v.start).collect() };
    assert_eq!(starts(a, a + 12 * P), [a, a + 8 * P]);
    assert_eq!(starts(a + 4 * P, a + 8 * P), Vec::<u64>::new());
    assert_eq!(starts(a + 3 * P, a + 9 * P), [a, a + 8 * P]);
    assert_eq!(starts(0, u64::MAX), [a, a + 8 * P]);
    assert_eq!(starts(a + 12 * P, u64::MAX), Vec::<u64>::new());
    assert_eq!(starts(a + P, a + P), Vec::<u64>::new());
    assert_eq!(starts(a + 2 * P, a + P), Vec::<u64>::new());
}

#[test]
fn insert_split_merge_primitives() {
    let a = 0x4000_0000;
    let mut s = set();
    let v = Vma {
        start: a,
        end: a + 8 * P,
        flags: VmFlags::READ,
        pgoff: a >> PAGE_SHIFT,
        anon_vma: None,
        policy: None,
        shmem: None,
    };
    s.insert(v).unwrap();
    assert_eq!(s.insert(v), Err(EEXIST));
    assert_eq!(s.insert(Vma { start: a + 1, ..v }), Err(EINVAL));
    assert!(s.split_at(a + 2 * P));
    assert!(!s.split_at(a + 2 * P));
    assert!(!s.split_at(a + 100 * P));
    assert_eq!(s.find(a + 2 * P).unwrap().pgoff, (a >> PAGE_SHIFT) + 2);
    // anon_vma assigned on one side is shared by later splits and does not
    // stop the merge with a side that has none.
    let id = s.anon_vma_prepare(a).unwrap();
    assert_eq!(s.anon_vma_prepare(a + P), Some(id));
    assert!(s.try_merge_at(a + 2 * P));
    assert_eq!(s.find(a + 5 * P).unwrap().anon_vma, Some(id));
    assert!(s.split_at(a + 4 * P));
    assert_eq!(s.find(a + 5 * P).unwrap().anon_vma, Some(id));
    assert!(s.anon_vma_prepare(a + 100 * P).is_none());
    // Two VMAs with different anon_vmas never merge.
    let mut s = set();
    fixed(&mut s, a, 4 * P, RW);
    s.anon_vma_prepare(a);
    s.munmap(a + 2 * P, 2 * P).unwrap();
    fixed(&mut s, a + 4 * P, 4 * P, RW);
    s.anon_vma_prepare(a + 4 * P);
    fixed(&mut s, a + 2 * P, 2 * P, RW);
    // The middle (no anon_vma) merged with the lower one only.
    assert_eq!(ranges(&s), [(a, a + 4 * P), (a + 4 * P, a + 8 * P)]);
    s.check_invariants().unwrap();
}

#[test]
fn unmapped_area_exhaustion_and_bottom_up() {
    let layout = Layout {
        task_size: 0x100_0000,
        mmap_base: 0x100_0000,
        mmap_min_addr: 0x1_0000,
        topdown: true,
        ..Layout::DEFAULT
    };
    let mut s = VmaSet::new(layout);
    let free = 0x100_0000 - 0x1_0000;
    assert_eq!(map(&mut s, 0, free + P, RW, PA), Err(ENOMEM));
    let a = map(&mut s, 0, free, RW, PA).unwrap();
    assert_eq!(a, 0x1_0000);
    assert_eq!(map(&mut s, 0, P, RW, PA), Err(ENOMEM));
    let mut s = VmaSet::new(Layout {
        topdown: false,
        ..Layout::DEFAULT
    });
    let a = map(&mut s, 0, P, RW, PA).unwrap();
    assert_eq!(a, Layout::DEFAULT.unmapped_base());
    assert_eq!(map(&mut s, 0, P, RW, PA), Ok(a + P));
}

#[test]
fn stack_guard_gap_respected() {
    let mut s = set();
    let stack = 0x6000_0000;
    s.mmap(stack, 16 * P, RW, PA | MAP_FIXED | MAP_GROWSDOWN, -1, 0)
        .unwrap();
    // A hint right below the stack is refused because of the guard gap.
    let a = map(&mut s, stack - P, P, RW, PA).unwrap();
    assert_ne!(a, stack - P);
    let gap = Layout::DEFAULT.stack_guard_gap;
    assert_eq!(map(&mut s, stack - gap - P, P, RW, PA), Ok(stack - gap - P));
}

#[test]
fn max_map_count() {
    let mut s = VmaSet::new(Layout {
        max_map_count: 3,
        ..Layout::DEFAULT
    });
    let a = 0x4000_0000;
    fixed(&mut s, a, 16 * P, RW);
    fixed(&mut s, a + 32 * P, 16 * P, RW);
    fixed(&mut s, a + 64 * P, 16 * P, RW);
    assert_eq!(s.munmap(a + 4 * P, P), Err(ENOMEM));
    assert_eq!(s.munmap(a, P).map(|r| r.len()), Ok(1));
    fixed(&mut s, a + 96 * P, P, RW);
    assert_eq!(map(&mut s, 0, P, RW, PA), Err(ENOMEM));
}

#[test]
fn mremap_errors() {
    let a = 0x4000_0000;
    let b = 0x5000_0000;
    let cases: &[(u64, u64, u64, u64, u64, Errno)] = &[
        (a, P, P, 8, 0, EINVAL),
        (a + 1, P, P, 0, 0, EINVAL),
        (a, P, 0, 0, 0, EINVAL),
        (a, P, u64::MAX, (MREMAP_MAYMOVE).bits(), 0, EINVAL),
        (a, P, TS + P, (MREMAP_MAYMOVE).bits(), 0, EINVAL),
        (a, P, P, (MREMAP_FIXED).bits(), b, EINVAL),
        (a, P, P, (MREMAP_DONTUNMAP).bits(), b, EINVAL),
        (
            a,
            P,
            2 * P,
            (MREMAP_MAYMOVE | MREMAP_DONTUNMAP).bits(),
            b,
            EINVAL,
        ),
        (
            a,
            P,
            P,
            (MREMAP_MAYMOVE | MREMAP_FIXED).bits(),
            b + 1,
            EINVAL,
        ),
        (a, P, P, (MREMAP_MAYMOVE | MREMAP_FIXED).bits(), TS, EINVAL),
        (
            a,
            4 * P,
            4 * P,
            (MREMAP_MAYMOVE | MREMAP_FIXED).bits(),
            a + 2 * P,
            EINVAL,
        ),
        (
            a,
            4 * P,
            4 * P,
            (MREMAP_MAYMOVE | MREMAP_FIXED).bits(),
            a - 2 * P,
            EINVAL,
        ),
        (a - P, P, P, 0, 0, EFAULT),
        (a - P, 2 * P, P, 0, 0, EFAULT),
        (a, 17 * P, 18 * P, (MREMAP_MAYMOVE).bits(), 0, EFAULT),
        (
            a,
            17 * P,
            17 * P,
            (MREMAP_MAYMOVE | MREMAP_FIXED).bits(),
            b,
            EFAULT,
        ),
        (a, 0, P, (MREMAP_MAYMOVE).bits(), 0, EINVAL),
        (a, 16 * P, 32 * P, 0, 0, ENOMEM),
        (a, 4 * P, 8 * P, 0, 0, ENOMEM),
    ];
    for &(addr, ol, nl, f, na, e) in cases {
        let mut s = set();
        fixed(&mut s, a, 16 * P, RW);
        fixed(&mut s, a + 16 * P, P, PROT_READ);
        let before = ranges(&s);
        assert_eq!(
            MremapFlags::from_raw(f)
                .and_then(|f| s.mremap(addr, ol, nl, f, na))
                .map(|p| p.new_addr),
            Err(e),
            "mremap({addr:#x}, {ol:#x}, {nl:#x}, {f}, {na:#x})"
        );
        assert_eq!(ranges(&s), before);
    }
}

#[test]
fn mremap_shrink_grow_move() {
    let a = 0x4000_0000;
    let mut s = set();
    fixed(&mut s, a, 16 * P, RW);
    // Same size: nothing.
    let p = s
        .mremap(a, 16 * P, 16 * P, MremapFlags::empty(), 0)
        .unwrap();
    assert_eq!((p.new_addr, p.unmapped.len(), p.moved), (a, 0, None));
    // Shrink in place.
    let p = s.mremap(a, 16 * P, 8 * P, MremapFlags::empty(), 0).unwrap();
    assert_eq!(p.new_addr, a);
    assert_eq!(p.unmapped, [a + 8 * P..a + 16 * P]);
    assert_eq!(ranges(&s), [(a, a + 8 * P)]);
    // Grow in place.
    let p = s.mremap(a, 8 * P, 12 * P, MremapFlags::empty(), 0).unwrap();
    assert_eq!(p.new_addr, a);
    assert_eq!(p.grown, Some(a + 8 * P..a + 12 * P));
    assert_eq!(ranges(&s), [(a, a + 12 * P)]);
    // Blocked above: without MAYMOVE ENOMEM, with it a move.
    fixed(&mut s, a + 12 * P, P, PROT_READ);
    assert_eq!(
        s.mremap(a, 12 * P, 16 * P, MremapFlags::empty(), 0)
            .map(|p| p.new_addr),
        Err(ENOMEM)
    );
    s.anon_vma_prepare(a);
    let p = s.mremap(a, 12 * P, 16 * P, MREMAP_MAYMOVE, 0).unwrap();
    assert_ne!(p.new_addr, a);
    assert_eq!(
        p.moved,
        Some(MremapMove {
            from: a,
            to: p.new_addr,
            len: 12 * P
        })
    );
    assert!(s.find(a).is_none());
    let v = *s.find(p.new_addr).unwrap();
    assert_eq!(v.len(), 16 * P);
    assert_eq!(v.pgoff, a >> PAGE_SHIFT, "page offset travels with the VMA");
    assert!(v.anon_vma.is_some());
    s.check_invariants().unwrap();
}

#[test]
fn mremap_fixed_and_dontunmap() {
    let a = 0x4000_0000;
    let b = 0x5000_0000;
    let mut s = set();
    fixed(&mut s, a, 16 * P, RW);
    fixed(&mut s, b, 4 * P, PROT_READ);
    let p = s
        .mremap(a, 8 * P, 8 * P, MREMAP_MAYMOVE | MREMAP_FIXED, b)
        .unwrap();
    assert_eq!(p.new_addr, b);
    assert_eq!(p.unmapped, [b..b + 4 * P]);
    assert_eq!(p.moved.unwrap().len, 8 * P);
    assert_eq!(ranges(&s), [(a + 8 * P, a + 16 * P), (b, b + 8 * P)]);
    assert_eq!(s.find(b).unwrap().prot(), RW);
    // FIXED with shrink: tail unmapped first, then the move.
    let c = 0x6000_0000;
    let p = s
        .mremap(b, 8 * P, 2 * P, MREMAP_MAYMOVE | MREMAP_FIXED, c)
        .unwrap();
    assert_eq!(p.unmapped, [b + 2 * P..b + 8 * P]);
    assert_eq!(p.moved.unwrap().len, 2 * P);
    assert!(s.find(b).is_none());
    // DONTUNMAP keeps the source VMA.
    let p = s
        .mremap(c, 2 * P, 2 * P, MREMAP_MAYMOVE | MREMAP_DONTUNMAP, 0)
        .unwrap();
    assert!(p.dontunmap);
    assert!(s.find(c).is_some());
    assert!(s.find(p.new_addr).is_some());
    assert_ne!(p.new_addr, c);
    s.check_invariants().unwrap();
}

#[test]
fn mremap_keeps_thp_congruence() {
    let mut s = set();
    // A 4 MiB mapping at 2 MiB-aligned address + 0: moved with growth, the
    // new address stays congruent modulo 2 MiB.
    let a = map(&mut s, 0, 4 * M, RW, PA).unwrap();
    assert_eq!(a % (2 * M), 0);
    fixed(&mut s, a + 4 * M, P, PROT_READ);
    map(&mut s, 0, 3 * P, PROT_EXEC, PA).unwrap();
    let p = s.mremap(a, 4 * M, 8 * M, MREMAP_MAYMOVE, 0).unwrap();
    assert_eq!(p.new_addr % (2 * M), 0);
}

// ---------------------------------------------------------------------
// Property test against a page-granular model.

mod model {
    use super::*;
    use proptest::prelude::*;

    /// Page number → flags.
    type Model = BTreeMap<u64, VmFlags>;

    const BASE: u64 = 0x4000_0000;
    const PAGES: u64 = 64;

    #[derive(Clone, Debug)]
    enum Op {
        MapFixed(u64, u64, Prot),
        MapAny(u64, Prot),
        Unmap(u64, u64),
        Protect(u64, u64, Prot),
        Huge(u64, u64, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        let pg = 0..PAGES;
        let n = 1..16u64;
        let prot = prop::sample::select(vec![PROT_NONE, PROT_READ, RW, PROT_READ | PROT_EXEC]);
        prop_oneof![
            (pg.clone(), n.clone(), prot.clone()).prop_map(|(p, n, r)| Op::MapFixed(p, n, r)),
            (n.clone(), prot.clone()).prop_map(|(n, r)| Op::MapAny(n, r)),
            (pg.clone(), n.clone()).prop_map(|(p, n)| Op::Unmap(p, n)),
            (pg.clone(), n.clone(), prot).prop_map(|(p, n, r)| Op::Protect(p, n, r)),
            (pg, n, any::<bool>()).prop_map(|(p, n, h)| Op::Huge(p, n, h)),
        ]
    }

    fn page(addr: u64) -> u64 {
        addr >> PAGE_SHIFT
    }

    fn check(s: &VmaSet, m: &Model) {
        s.check_invariants().unwrap();
        let mut got = Model::new();
        for v in s.iter() {
            for p in page(v.start)..page(v.end) {
                got.insert(p, v.flags);
            }
        }
        assert_eq!(&got, m);
    }

    fn mmap_flags(prot: Prot) -> VmFlags {
        let mut f =
            VmFlags::from_prot(prot) | VmFlags::MAYREAD | VmFlags::MAYWRITE | VmFlags::MAYEXEC;
        if f.contains(VmFlags::WRITE) {
            f |= VmFlags::ACCOUNT;
        }
        f
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn vma_set_matches_page_model(ops in prop::collection::vec(op(), 1..40)) {
            let mut s = set();
            let mut m = Model::new();
            for op in ops {
                match op {
                    Op::MapFixed(p, n, prot) => {
                        let a = BASE + p * P;
                        let o = s.mmap(a, n * P, prot, PA | MAP_FIXED, -1, 0).unwrap();
                        let was: u64 = (page(a)..page(a) + n).filter(|q| m.contains_key(q)).count() as u64;
                        let reported: u64 = o.unmapped.iter().map(|r| (r.end - r.start) / P).sum();
                        prop_assert_eq!(was, reported);
                        for q in page(a)..page(a) + n {
                            m.insert(q, mmap_flags(prot));
                        }
                    }
                    Op::MapAny(n, prot) => {
                        let o = s.mmap(0, n * P, prot, PA, -1, 0).unwrap();
                        for q in page(o.addr)..page(o.addr) + n {
                            prop_assert!(m.insert(q, mmap_flags(prot)).is_none(), "reused mapped page");
                        }
                    }
                    Op::Unmap(p, n) => {
                        let a = BASE + p * P;
                        let r = s.munmap(a, n * P).unwrap();
                        let removed: u64 = r.iter().map(|r| (r.end - r.start) / P).sum();
                        let mut want = 0;
                        for q in page(a)..page(a) + n {
                            want += u64::from(m.remove(&q).is_some());
                        }
                        prop_assert_eq!(removed, want);
                    }
                    Op::Protect(p, n, prot) => {
                        let a = BASE + p * P;
                        let o = s.mprotect(a, n * P, prot);
                        // Model: apply from the start until the first hole.
                        let mut hole = false;
                        for q in page(a)..page(a) + n {
                            match m.get_mut(&q) {
                                Some(f) if !hole => {
                                    let mut nf = VmFlags::from_prot(prot) | (*f - VmFlags::ACCESS);
                                    if nf != *f && nf.contains(VmFlags::WRITE)
                                        && !f.intersects(VmFlags::ACCOUNT | VmFlags::WRITE) {
                                        nf |= VmFlags::ACCOUNT;
                                    }
                                    *f = nf;
                                }
                                _ => hole = true,
                            }
                        }
                        prop_assert_eq!(o.result, if hole { Err(ENOMEM) } else { Ok(()) });
                    }
                    Op::Huge(p, n, on) => {
                        let a = BASE + p * P;
                        let adv = if on { MADV_HUGEPAGE } else { MADV_NOHUGEPAGE };
                        let o = s.madvise(a, n * P, adv);
                        let mut hole = false;
                        for q in page(a)..page(a) + n {
                            match m.get_mut(&q) {
                                Some(f) => {
                                    if on {
                                        *f = (*f - VmFlags::NOHUGEPAGE) | VmFlags::HUGEPAGE;
                                    } else {
                                        *f = (*f - VmFlags::HUGEPAGE) | VmFlags::NOHUGEPAGE;
                                    }
                                }
                                None => hole = true,
                            }
                        }
                        prop_assert_eq!(o.result, if hole { Err(ENOMEM) } else { Ok(()) });
                    }
                }
                check(&s, &m);
            }
        }
    }
}
