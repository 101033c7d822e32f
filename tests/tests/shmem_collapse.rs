//! Collapse of shmem ranges (Linux's `collapse_file`): `MADV_COLLAPSE`
//! and khugepaged replace the 4K page-cache folios of a PMD-size index
//! range by one PMD-size folio, unmap the old ones from every space, and
//! free them; over both entry formats, every frame back at the end.

mod mmtest;

use std::sync::Arc;

use mm::abi::errno::Errno;
use mm::aspace::Mm;
use mm::paging::{PMD_LEVEL, PagingArch};
use mm::physmem::phys::PhysMem;
use mm::shmem::Shmem;
use mm::shmem::policy::{ShmemHuge, ShmemOrderMode};
use mm::shmem::quota::ShmemQuota;
use mm::thp::{GlobalMode, OrderMode, VmEvent};
use mmtest::*;

const SHARED: MapFlags = MAP_SHARED.union(MAP_ANONYMOUS);
const VA: u64 = 0x7000_0000_0000;

fn is_pmd<'a, A: PagingArch>(env: &Env<'a, A>, mm: &Mm<'a, A>, va: u64) -> bool {
    env.leaf(mm, va).is_some_and(|l| l.level == PMD_LEVEL)
}

fn gauge(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(std::sync::atomic::Ordering::Relaxed)
}

/// `MADV_COLLAPSE` over `mms` (every space that may map the range).
fn collapse<'a, A: PagingArch>(
    mm: &Mm<'a, A>,
    mms: &[&Mm<'a, A>],
    va: u64,
    len: u64,
) -> Result<(), Errno> {
    mm.madvise_each(
        va,
        len,
        MADV_COLLAPSE,
        Some(&mut |f| mms.iter().for_each(|m| f(m))),
    )
}

/// A partly written shared anonymous range, mapped by 4K pages in two
/// processes: `MADV_COLLAPSE` (shmem_enabled `never`) replaces its cached
/// pages by one PMD folio, maps it by a PMD in the caller, the other
/// refaults it by a PMD; holes read as zero, data intact, the old folios
/// freed.  A second call succeeds; an empty range is EINVAL; `deny` and a
/// per-size `never` refuse.
fn madvise_collapse_partial<A: PagingArch>() {
    run::<A>(64 * MIB, |env| {
        let a = env.mm();
        let va = a.mmap(VA, 4 * M2, RW, SHARED | MAP_FIXED).unwrap();
        for i in (0..512).filter(|i| i % 3 != 0) {
            env.write_u64(&a, va + i * K4, 0x5000 + i);
        }
        let b = a.fork().unwrap();
        assert_eq!(env.read_u64(&b, va + K4), 0x5001);
        let g = &env.thp.shmem;
        assert_eq!(gauge(&g.pages), 341);
        let free0 = env.buddy.stats().free;
        // Without a way to reach `b`, the page `b` maps keeps it busy.
        assert_eq!(a.madvise(va, M2, MADV_COLLAPSE), Err(Errno::EAGAIN));
        assert_eq!(gauge(&g.pmd_pages), 0);
        assert_eq!(env.read_u64(&a, va + 2 * K4), 0x5002);
        assert_eq!(collapse(&a, &[&a, &b], va, M2), Ok(()));
        assert!(is_pmd(env, &a, va));
        assert_eq!(env.folio_at(&a, va).unwrap().order(), 9);
        assert_eq!(gauge(&g.pmd_pages), 512);
        assert_eq!(gauge(&g.pages), 512);
        assert_eq!(gauge(&g.pmd_mapped), 512);
        assert_eq!(env.event(VmEvent::ThpCollapseAlloc), 2);
        assert_eq!(env.event(VmEvent::ThpFileAlloc), 0);
        // 341 small folios went, one PMD folio and its deposit came.
        assert_eq!(env.buddy.stats().free + 512 + 1, free0 + 341 + 2);
        for i in 0..512 {
            let want = if i % 3 == 0 { 0 } else { 0x5000 + i };
            assert_eq!(env.read_u64(&a, va + i * K4), want, "page {i}");
        }
        assert_eq!(env.read_u64(&b, va + 5 * K4), 0x5005);
        assert!(is_pmd(env, &b, va));
        env.write_u64(&b, va + 9 * K4, 77);
        assert_eq!(env.read_u64(&a, va + 9 * K4), 77);
        env.check(&[&a, &b]);
        // Already PMD-mapped: success, nothing allocated.
        assert_eq!(collapse(&a, &[&a, &b], va, M2), Ok(()));
        assert_eq!(env.event(VmEvent::ThpCollapseAlloc), 2);
        // Nothing cached in the next PMD range: EINVAL.
        assert_eq!(collapse(&a, &[&a, &b], va + M2, M2), Err(Errno::EINVAL));
        env.write_u64(&a, va + M2, 1);
        let sh = &env.thp.config.shmem;
        sh.set_huge(ShmemHuge::Deny).unwrap();
        assert_eq!(collapse(&a, &[&a, &b], va + M2, M2), Err(Errno::EINVAL));
        sh.set_huge(ShmemHuge::Never).unwrap();
        sh.set_order_mode(9, ShmemOrderMode::Never).unwrap();
        assert_eq!(collapse(&a, &[&a, &b], va + M2, M2), Err(Errno::EINVAL));
        sh.set_order_mode(9, ShmemOrderMode::Inherit).unwrap();
        a.madvise(va + M2, M2, MADV_NOHUGEPAGE).unwrap();
        assert_eq!(collapse(&a, &[&a, &b], va + M2, M2), Err(Errno::EINVAL));
        env.check(&[&a, &b]);
        drop(b);
        drop(a);
        assert_eq!(gauge(&g.pages), 0);
        assert_eq!(gauge(&g.pmd_pages), 0);
        assert_eq!(gauge(&g.pmd_mapped), 0);
    });
}

/// A tmpfs-like file (`huge=never`) written through `write` and mapped at
/// an offset of 2 MiB: the collapse keeps the written bytes, `read` sees
/// them in the new folio, and a later `write` lands in it.  A mapping
/// whose offset is not PMD-aligned against its address is EINVAL.  A
/// truncate drops the collapsed folio whole.
fn file_collapse_keeps_writes<A: PagingArch>() {
    run::<A>(64 * MIB, |env| {
        // A mount's `size=`: the collapse charges the holes it fills.
        let quota = Arc::new(ShmemQuota::new(4096, 16));
        // The file's inode, as tmpfs's create takes it (the root's is
        // charged at mount).
        let inodes0 = quota.used_inodes();
        assert!(quota.try_get_inode());
        let obj = Arc::new(Shmem::on_mount(
            Some(&env.thp.shmem),
            ShmemHuge::Never,
            Some(quota.clone()),
        ));
        let mut alloc = || {
            let f = env
                .buddy
                .alloc(0, mm::physmem::buddy::AllocFlags::USER)
                .ok()?;
            env.mem.zero(f.pa(), K4);
            Some(mm::physmem::folio::FolioRef::from_raw(f))
        };
        let data: Vec<u8> = (0..3 * K4).map(|i| (i % 251) as u8).collect();
        assert_eq!(
            obj.write(M2 + 100 * K4, &data, env.mem, &mut alloc),
            data.len()
        );
        obj.set_size(4 * M2);
        let a = env.mm();
        let va = a
            .mmap_shmem(VA, M2, RW, MAP_SHARED | MAP_FIXED, obj.clone(), M2, true)
            .unwrap();
        env.write_u64(&a, va + 7 * K4, 9);
        let skew = a
            .mmap_shmem(
                VA + 16 * M2,
                2 * M2,
                RW,
                MAP_SHARED | MAP_FIXED,
                obj.clone(),
                K4,
                true,
            )
            .unwrap();
        assert_eq!(collapse(&a, &[&a], skew, 2 * M2), Err(Errno::EINVAL));
        assert_eq!(collapse(&a, &[&a], va, M2), Ok(()));
        assert!(is_pmd(env, &a, va));
        assert_eq!(obj.cached_pages(), 512);
        assert_eq!(quota.used_blocks(), 512);
        let mut back = vec![0u8; data.len()];
        obj.read(M2 + 100 * K4, &mut back, env.mem);
        assert_eq!(back, data);
        assert_eq!(env.read_u64(&a, va + 7 * K4), 9);
        assert_eq!(obj.write(M2 + 8 * K4, &[1, 2, 3], env.mem, &mut alloc), 3);
        assert_eq!(env.read_bytes(&a, va + 8 * K4, 3).unwrap(), vec![1, 2, 3]);
        env.check(&[&a]);
        // Truncate below the folio: it goes whole.
        obj.set_size(M2);
        a.shmem_unmap_range(obj.id(), 512, 1024);
        let (t, gone) = obj.truncate_range(512, 1024, env.mem);
        drop(gone);
        assert_eq!(t.removed, 1);
        assert_eq!(obj.cached_pages(), 0);
        env.check(&[&a]);
        drop(a);
        drop(obj);
        assert_eq!(gauge(&env.thp.shmem.pages), 0);
        assert_eq!((quota.used_blocks(), quota.used_inodes()), (0, inodes0));
    });
}

/// khugepaged collapses a 4K-written shmem range when `shmem_enabled`
/// allows the PMD size (`advise` + `MADV_HUGEPAGE`), honouring
/// `max_ptes_none`: with 0, a range with holes stays; once full it is
/// collapsed and the scanning space refaults it by a PMD.
fn khugepaged_collapses_shmem<A: PagingArch>() {
    run::<A>(64 * MIB, |env| {
        env.knobs(GlobalMode::Madvise, &[(9, OrderMode::Inherit)]);
        let a = env.mm();
        let va = a.mmap(VA, 2 * M2, RW, SHARED | MAP_FIXED).unwrap();
        // shmem_enabled `never`: mmap does not register the space.
        assert!(!a.khugepaged_registered());
        for i in 0..500 {
            env.write_u64(&a, va + i * K4, i + 1);
        }
        let b = a.fork().unwrap();
        assert_eq!(env.read_u64(&b, va + 3 * K4), 4);
        a.madvise(va, 2 * M2, MADV_HUGEPAGE).unwrap();
        // shmem_enabled `never`: nothing collapses.
        full_scan(env, &[&a, &b]);
        assert_eq!(env.thp.stats.pages_collapsed(), 0);
        env.thp.config.shmem.set_huge(ShmemHuge::Advise).unwrap();
        let k = &env.thp.config.khugepaged;
        k.max_ptes_none
            .store(0, std::sync::atomic::Ordering::Relaxed);
        let exceed = env.event(VmEvent::ThpScanExceedNonePte);
        full_scan(env, &[&a, &b]);
        assert_eq!(env.thp.stats.pages_collapsed(), 0);
        assert!(env.event(VmEvent::ThpScanExceedNonePte) > exceed);
        for i in 500..512 {
            env.write_u64(&a, va + i * K4, i + 1);
        }
        full_scan(env, &[&a, &b]);
        assert_eq!(env.thp.stats.pages_collapsed(), 1);
        assert_eq!(gauge(&env.thp.shmem.pmd_pages), 512);
        // Under `always`, mmap registers a space (Linux's
        // `khugepaged_enter_vma`).
        env.thp.config.shmem.set_huge(ShmemHuge::Always).unwrap();
        let c = env.mm();
        c.mmap(VA, M2, RW, SHARED | MAP_FIXED).unwrap();
        assert!(c.khugepaged_registered());
        drop(c);
        // Unmapped everywhere: the next access maps a PMD.
        assert_eq!(env.read_u64(&a, va + 511 * K4), 512);
        assert!(is_pmd(env, &a, va));
        assert_eq!(env.read_u64(&b, va + 17 * K4), 18);
        assert!(is_pmd(env, &b, va));
        env.check(&[&a, &b]);
        drop(b);
        drop(a);
        assert_eq!(gauge(&env.thp.shmem.pages), 0);
    });
}

both_formats!(
    madvise_collapse_partial,
    file_collapse_keeps_writes,
    khugepaged_collapses_shmem,
);
