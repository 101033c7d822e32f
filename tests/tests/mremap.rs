//! mremap over both entry formats: grow and shrink in place, moves of
//! 64K folios and PMD-mapped folios to aligned and misaligned places,
//! MREMAP_FIXED over a mapping, MREMAP_DONTUNMAP, COW after moving a
//! forked range, and the error cases.  Data goes through the emulated MMU,
//! the invariant checker runs after every operation, and every frame must
//! come back at the end (the harness checks).

mod mmtest;

use mm::abi::errno::Errno;
use mm::aspace::{Access, Fault};
use mm::paging::{PMD_LEVEL, PTE_LEVEL, PagingArch};
use mm::thp::VmEvent;
use mmtest::*;

const A0: u64 = 0x7000_0000_0000;
const B0: u64 = 0x7100_0000_0000;
const C0: u64 = 0x7200_0000_0000;
const MOVE: MremapFlags = MREMAP_MAYMOVE.union(MREMAP_FIXED);

fn segv<'a, A: PagingArch>(env: &Env<'a, A>, mm: &mm::aspace::Mm<'a, A>, va: u64) {
    assert_eq!(env.touch(mm, va, Access::Read), Err(Fault::Segv), "{va:#x}");
}

/// Check the words `fill_pages(old, len, tag)` wrote, now at `new`.
fn check_moved<'a, A: PagingArch>(
    env: &Env<'a, A>,
    mm: &mm::aspace::Mm<'a, A>,
    new: u64,
    old: u64,
    len: u64,
    tag: u64,
) {
    for p in (0..len).step_by(K4 as usize) {
        assert_eq!(
            env.read_u64(mm, new + p),
            tag ^ (old + p),
            "page {:#x}",
            new + p
        );
    }
}

/// Growing in place keeps the data and the frames; the new part reads zero
/// and is writable.  Shrinking zaps the tail, splitting a 64K folio it cuts
/// (which goes on the deferred-split queue).
fn grow_and_shrink_in_place<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        let va = mm.mmap(A0, 32 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, va, 32 * K4, 1);
        let pfn = env.leaf(&mm, va).unwrap().pfn;
        assert_eq!(
            mm.mremap(va, 32 * K4, 64 * K4, MremapFlags::empty(), 0),
            Ok(va)
        );
        env.check(&[&mm]);
        assert_eq!(env.leaf(&mm, va).unwrap().pfn, pfn);
        env.check_pages(&mm, va, 32 * K4, 1);
        env.check_zero(&mm, va + 32 * K4, 32 * K4);
        env.fill_pages(&mm, va + 32 * K4, 32 * K4, 2);
        env.check(&[&mm]);
        assert_eq!(mm.anon_rss(), 64);
        // Shrink to 20 pages: the second folio is cut after 4 pages.
        assert_eq!(
            mm.mremap(va, 64 * K4, 20 * K4, MremapFlags::empty(), 0),
            Ok(va)
        );
        env.check(&[&mm]);
        assert_eq!(mm.anon_rss(), 20);
        assert_eq!(env.ctx.deferred_split_len(), 1);
        env.check_pages(&mm, va, 20 * K4, 1);
        segv(env, &mm, va + 20 * K4);
        // Same size: nothing happens.
        assert_eq!(
            mm.mremap(va, 20 * K4, 20 * K4, MremapFlags::empty(), 0),
            Ok(va)
        );
        // Growing into a neighbour needs MAYMOVE.
        mm.mmap(va + 24 * K4, K4, RW, ANON | MAP_FIXED).unwrap();
        assert_eq!(
            mm.mremap(va, 20 * K4, 32 * K4, MremapFlags::empty(), 0),
            Err(Errno::ENOMEM)
        );
        assert_eq!(
            mm.mremap(va, 20 * K4, 24 * K4, MremapFlags::empty(), 0),
            Ok(va)
        );
        env.check(&[&mm]);
        env.check_pages(&mm, va, 20 * K4, 1);
        drop(mm);
    });
}

/// 64K folios move with their frames and counts; the contiguous blocks are
/// rewritten folded at a 64K-aligned destination, unfolded at a misaligned
/// one, and folded again when moved back to alignment (also when the
/// misaligned source straddled a PTE-table boundary, so the runs were cut).
fn move_64k_folios<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        let len = 64 * K4;
        let va = mm.mmap(A0, len, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, va, len, 3);
        let f = env.folio_at(&mm, va).unwrap();
        let counts = (f.refcount(), f.large_mapcount());
        assert_eq!(counts, (16, 16));
        let cont = if has_cont::<A>() { len } else { 0 };
        assert_eq!(mm.thpmaps().total().cont_bytes, cont);

        assert_eq!(mm.mremap(va, len, len, MOVE, B0), Ok(B0));
        env.check(&[&mm]);
        segv(env, &mm, va);
        assert_eq!(env.folio_at(&mm, B0).unwrap(), f);
        assert_eq!((f.refcount(), f.large_mapcount()), counts);
        assert_eq!(f.anon_owner(), Some((mm.id(), B0 / K4)));
        assert_eq!(mm.thpmaps().total().cont_bytes, cont);
        assert_eq!(mm.anon_rss(), 64);
        check_moved(env, &mm, B0, va, len, 3);

        // Misaligned by one page, straddling a 2 MiB boundary.
        let c = C0 + M2 - 8 * K4 + K4;
        assert_eq!(mm.mremap(B0, len, len, MOVE, c), Ok(c));
        env.check(&[&mm]);
        assert_eq!(mm.thpmaps().total().cont_bytes, 0);
        check_moved(env, &mm, c, va, len, 3);
        // Writes need no COW: the pages are still exclusive.
        let faults = env.event(VmEvent::FaultCowCopy) + env.event(VmEvent::FaultCowReuse);
        env.fill_pages(&mm, c, len, 4);
        assert_eq!(
            env.event(VmEvent::FaultCowCopy) + env.event(VmEvent::FaultCowReuse),
            faults
        );

        assert_eq!(mm.mremap(c, len, len, MOVE, A0), Ok(A0));
        env.check(&[&mm]);
        assert_eq!(mm.thpmaps().total().cont_bytes, cont);
        check_moved(env, &mm, A0, c, len, 4);
        assert_eq!((f.refcount(), f.large_mapcount()), counts);
        mm.munmap(A0, len).unwrap();
        env.check(&[&mm]);
    });
}

/// A PMD-mapped folio moves as a PMD to a 2 MiB-aligned place (no split,
/// deposit kept), and is split to PTEs for a misaligned one: folded on
/// arm64 when the offset keeps 64K alignment, unfolded otherwise.  Growing
/// a PMD range that cannot grow in place moves it.
fn move_pmd<A: PagingArch>() {
    run::<A>(64 * MIB, |env| {
        env.only_order(9);
        let mm = env.mm();
        let va = mm.mmap(0, 2 * M2, RW, ANON).unwrap();
        assert!(va.is_multiple_of(M2));
        env.fill_pages(&mm, va, 2 * M2, 5);
        let f = env.folio_at(&mm, va).unwrap();
        assert_eq!(mm.thpmaps().total().pmd_bytes, 2 * M2);

        assert_eq!(mm.mremap(va, 2 * M2, 2 * M2, MOVE, B0), Ok(B0));
        env.check(&[&mm]);
        assert_eq!(env.event(VmEvent::ThpSplitPmd), 0);
        assert_eq!(env.leaf(&mm, B0).unwrap().level, PMD_LEVEL);
        assert_eq!(mm.thpmaps().total().pmd_bytes, 2 * M2);
        assert_eq!(env.folio_at(&mm, B0).unwrap(), f);
        assert_eq!(
            (f.refcount(), f.large_mapcount(), f.entire_mapcount()),
            (1, 1, 1)
        );
        assert_eq!(f.anon_owner(), Some((mm.id(), B0 / K4)));
        check_moved(env, &mm, B0, va, 2 * M2, 5);
        segv(env, &mm, va);

        // 64K off 2 MiB alignment: PTEs, but 64K-aligned blocks.
        let c = C0 + K64;
        assert_eq!(mm.mremap(B0, 2 * M2, 2 * M2, MOVE, c), Ok(c));
        env.check(&[&mm]);
        assert_eq!(env.event(VmEvent::ThpSplitPmd), 2);
        assert_eq!(env.leaf(&mm, c).unwrap().level, PTE_LEVEL);
        assert_eq!(
            (f.refcount(), f.large_mapcount(), f.entire_mapcount()),
            (512, 512, 0)
        );
        let cont = if has_cont::<A>() { 2 * M2 } else { 0 };
        assert_eq!(mm.thpmaps().total().cont_bytes, cont);
        check_moved(env, &mm, c, va, 2 * M2, 5);

        // One page off: nothing can fold.
        let d = A0 + K4;
        assert_eq!(mm.mremap(c, 2 * M2, 2 * M2, MOVE, d), Ok(d));
        env.check(&[&mm]);
        assert_eq!(mm.thpmaps().total().cont_bytes, 0);
        check_moved(env, &mm, d, va, 2 * M2, 5);
        env.fill_pages(&mm, d, 2 * M2, 6);
        assert_eq!(env.event(VmEvent::FaultCowCopy), 0);
        mm.munmap(d, 2 * M2).unwrap();
        env.check(&[&mm]);

        // Growing with a neighbour in the way moves (PMDs kept: the new
        // place keeps the old one's offset in 2 MiB).
        let va = mm.mmap(0, M2, RW, ANON).unwrap();
        env.fill_pages(&mm, va, M2, 7);
        mm.mmap(va + M2, K4, RW, ANON | MAP_FIXED).unwrap();
        let n = mm.mremap(va, M2, 2 * M2, MREMAP_MAYMOVE, 0).unwrap();
        env.check(&[&mm]);
        assert_ne!(n, va);
        assert_eq!(env.leaf(&mm, n).unwrap().level, PMD_LEVEL);
        check_moved(env, &mm, n, va, M2, 7);
        env.check_zero(&mm, n + M2, 64 * K4);
        env.check(&[&mm]);
    });
}

/// A move of part of a range: the boundary cuts a PMD (split first, the
/// rest stays) and 64K folios (their two parts now live at different
/// addresses, counts unchanged).
fn partial_moves<A: PagingArch>() {
    run::<A>(64 * MIB, |env| {
        env.only_order(9);
        let mm = env.mm();
        let va = mm.mmap(0, M2, RW, ANON).unwrap();
        env.fill_pages(&mm, va, M2, 8);
        let f = env.folio_at(&mm, va).unwrap();
        let from = va + 100 * K4;
        assert_eq!(mm.mremap(from, 40 * K4, 40 * K4, MOVE, B0), Ok(B0));
        env.check(&[&mm]);
        assert_eq!((f.refcount(), f.large_mapcount()), (512, 512));
        env.check_pages(&mm, va, 100 * K4, 8);
        for p in 0..40 {
            assert_eq!(env.read_u64(&mm, B0 + p * K4), 8 ^ (from + p * K4));
        }
        env.check_pages(&mm, va + 140 * K4, M2 - 140 * K4, 8);
        segv(env, &mm, from);
        mm.munmap(va, M2).unwrap();
        env.check(&[&mm]);
        assert_eq!(env.ctx.deferred_split_len(), 1);
        mm.munmap(B0, 40 * K4).unwrap();
        env.check(&[&mm]);

        env.only_order(4);
        let va = mm.mmap(A0, 32 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, va, 32 * K4, 9);
        assert_eq!(mm.mremap(va + 8 * K4, 16 * K4, 16 * K4, MOVE, C0), Ok(C0));
        env.check(&[&mm]);
        for p in 0..16 {
            let want = 9 ^ (va + (8 + p) * K4);
            assert_eq!(env.read_u64(&mm, C0 + p * K4), want);
        }
        env.check_pages(&mm, va, 8 * K4, 9);
        env.check_pages(&mm, va + 24 * K4, 8 * K4, 9);
        // Writes to both parts of the cut folios, still exclusive.
        env.fill_pages(&mm, va, 8 * K4, 10);
        env.fill_pages(&mm, C0, 16 * K4, 11);
        env.fill_pages(&mm, va + 24 * K4, 8 * K4, 12);
        assert_eq!(env.event(VmEvent::FaultCowCopy), 0);
        env.check(&[&mm]);
        drop(mm);
    });
}

/// MREMAP_FIXED onto an existing mapping replaces it (its frames are
/// freed); MREMAP_DONTUNMAP leaves the old range mapped but empty.
fn fixed_over_mapping_and_dontunmap<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let mm = env.mm();
        let a = mm.mmap(A0, 32 * K4, RW, ANON | MAP_FIXED).unwrap();
        let b = mm.mmap(B0, 48 * K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, a, 32 * K4, 1);
        env.fill_pages(&mm, b, 48 * K4, 2);
        assert_eq!(mm.anon_rss(), 80);
        assert_eq!(
            mm.mremap(a, 32 * K4, 32 * K4, MOVE, b + 8 * K4),
            Ok(b + 8 * K4)
        );
        env.check(&[&mm]);
        assert_eq!(mm.anon_rss(), 48);
        env.check_pages(&mm, b, 8 * K4, 2);
        for p in 0..32 {
            assert_eq!(env.read_u64(&mm, b + (8 + p) * K4), 1 ^ (a + p * K4));
        }
        env.check_pages(&mm, b + 40 * K4, 8 * K4, 2);
        segv(env, &mm, a);

        // DONTUNMAP: the old range stays, empty (reads zero).  (A range
        // over [b, b + 16 pages) would cross the VMA end at b + 8 pages:
        // EFAULT.)
        let flags = MREMAP_MAYMOVE | MREMAP_DONTUNMAP;
        assert_eq!(mm.mremap(b, 16 * K4, 16 * K4, flags, 0), Err(Errno::EFAULT));
        let src = b + 8 * K4;
        let n = mm.mremap(src, 16 * K4, 16 * K4, flags, 0).unwrap();
        env.check(&[&mm]);
        assert_ne!(n, src);
        assert_eq!(mm.anon_rss(), 48);
        check_moved(env, &mm, n, a, 16 * K4, 1);
        env.check_zero(&mm, src, 16 * K4);
        env.check(&[&mm]);

        // FIXED with a smaller new length: the tail is unmapped first.
        assert_eq!(mm.mremap(n, 16 * K4, 4 * K4, MOVE, C0), Ok(C0));
        env.check(&[&mm]);
        check_moved(env, &mm, C0, a, 4 * K4, 1);
        segv(env, &mm, n);
        drop(mm);
    });
}

/// COW after moving a forked range: each side keeps its data; once the
/// other side is gone the mover's writes reuse in place.  With 4K COW
/// (`large_cow` off), so each side's first write copies.
fn cow_after_moving_forked_range<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        env.thp.config.set_large_cow(false);
        let len = 32 * K4;
        for mover_is_parent in [true, false] {
            let parent = env.mm();
            let va = parent.mmap(A0, len, RW, ANON | MAP_FIXED).unwrap();
            env.fill_pages(&parent, va, len, 0x55);
            let child = parent.fork().unwrap();
            let (mover, other) = if mover_is_parent {
                (parent, child)
            } else {
                (child, parent)
            };
            assert_eq!(mover.mremap(va, len, len, MOVE, B0), Ok(B0));
            env.check(&[&mover, &other]);
            check_moved(env, &mover, B0, va, len, 0x55);
            env.check_pages(&other, va, len, 0x55);
            let copies = env.event(VmEvent::FaultCowCopy);
            env.write_u64(&mover, B0 + 3 * K4, 1);
            env.write_u64(&other, va + 5 * K4, 2);
            assert_eq!(env.event(VmEvent::FaultCowCopy), copies + 2);
            assert_eq!(env.read_u64(&mover, B0 + 5 * K4), 0x55 ^ (va + 5 * K4));
            assert_eq!(env.read_u64(&other, va + 3 * K4), 0x55 ^ (va + 3 * K4));
            assert_eq!(env.read_u64(&mover, B0 + 3 * K4), 1);
            assert_eq!(env.read_u64(&other, va + 5 * K4), 2);
            env.check(&[&mover, &other]);
            // The other side goes away: the mover reuses (exact count at the
            // new address).
            drop(other);
            let mover = &mover;
            let reuse = env.event(VmEvent::FaultCowReuse);
            let pfn = env.leaf(mover, B0 + 7 * K4).unwrap().pfn;
            env.write_u64(mover, B0 + 7 * K4, 3);
            assert_eq!(env.event(VmEvent::FaultCowReuse), reuse + 1);
            assert_eq!(env.event(VmEvent::FaultCowCopy), copies + 2);
            assert_eq!(env.leaf(mover, B0 + 7 * K4).unwrap().pfn, pfn);
            env.check(&[mover]);
            check_moved(env, mover, B0 + 8 * K4, va + 8 * K4, 24 * K4, 0x55);
            assert_eq!(env.read_u64(mover, B0 + 7 * K4), 3);
        }
    });
}

/// Errors as the VMA module defines them, with nothing changed.
fn errors<A: PagingArch>() {
    run::<A>(16 * MIB, |env| {
        env.no_thp();
        let mm = env.mm();
        let a = mm.mmap(A0, 16 * K4, RW, ANON | MAP_FIXED).unwrap();
        mm.mmap(a + 16 * K4, K4, RW, ANON | MAP_FIXED).unwrap();
        env.fill_pages(&mm, a, 16 * K4, 1);
        let cases = [
            (a + 1, K4, K4, 0, 0, Errno::EINVAL),
            (a, K4, 0, 0, 0, Errno::EINVAL),
            (a, K4, K4, 8, 0, Errno::EINVAL),
            (a, K4, K4, (MREMAP_FIXED).bits(), B0, Errno::EINVAL),
            (a, K4, K4, (MOVE).bits(), B0 + 1, Errno::EINVAL),
            (a, 4 * K4, 4 * K4, (MOVE).bits(), a + K4, Errno::EINVAL),
            (
                a,
                K4,
                2 * K4,
                (MREMAP_MAYMOVE | MREMAP_DONTUNMAP).bits(),
                0,
                Errno::EINVAL,
            ),
            (B0, K4, 2 * K4, (MREMAP_MAYMOVE).bits(), 0, Errno::EFAULT),
            (
                a,
                20 * K4,
                24 * K4,
                (MREMAP_MAYMOVE).bits(),
                0,
                Errno::EFAULT,
            ),
            (a, 16 * K4, 20 * K4, 0, 0, Errno::ENOMEM),
            (a, 0, K4, (MREMAP_MAYMOVE).bits(), 0, Errno::EINVAL),
        ];
        for (addr, ol, nl, fl, na, e) in cases {
            assert_eq!(
                MremapFlags::from_raw(fl).and_then(|fl| mm.mremap(addr, ol, nl, fl, na)),
                Err(e),
                "mremap({addr:#x}, {ol:#x}, {nl:#x}, {fl}, {na:#x})"
            );
            env.check(&[&mm]);
        }
        env.check_pages(&mm, a, 16 * K4, 1);
        assert_eq!(mm.vmas().iter().count(), 1);
    });
}

both_formats!(
    grow_and_shrink_in_place,
    move_64k_folios,
    move_pmd,
    partial_moves,
    fixed_over_mapping_and_dontunmap,
    cow_after_moving_forked_range,
    errors,
);
