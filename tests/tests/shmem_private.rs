//! Private mappings of shmem objects (`MAP_PRIVATE` of a tmpfs file or a
//! memfd) over both entry formats: reads map the object's folios
//! read-only, writes copy into order-0 anonymous folios that never reach
//! the object; fork, `MADV_DONTNEED`, mprotect, mremap, hole punch,
//! truncate and `MADV_REMOVE`'s checks; every frame back at the end.

mod mmtest;

use std::sync::Arc;

use mm::abi::errno::Errno;
use mm::aspace::{Access, Fault, Mm};
use mm::paging::PagingArch;
use mm::physmem::buddy::AllocFlags;
use mm::physmem::folio::FolioRef;
use mm::physmem::phys::PhysMem;
use mm::shmem::Shmem;
use mm::shmem::policy::ShmemOrderMode;
use mm::thp::VmEvent;
use mmtest::*;

const VA: u64 = 0x7000_0000_0000;
const PRIV: u64 = 0x7100_0000_0000;

/// An object of `size` bytes with the word `tag ^ page index` at the
/// start of each page, written through `pwrite` (`Shmem::write`).
fn object<'a, A: PagingArch>(env: &Env<'a, A>, size: u64, tag: u64) -> Arc<Shmem<'a>> {
    let obj = Arc::new(Shmem::with_gauges(size, 0, Some(&env.thp.shmem)));
    for i in 0..size / K4 {
        pwrite(env, &obj, i * K4, tag ^ i);
    }
    obj
}

fn pwrite<'a, A: PagingArch>(env: &Env<'a, A>, obj: &Shmem<'a>, off: u64, v: u64) {
    let mut alloc = || {
        let f = env.buddy.alloc(0, AllocFlags::USER).ok()?;
        env.mem.zero(f.pa(), K4);
        Some(FolioRef::from_raw(f))
    };
    assert_eq!(obj.write(off, &v.to_le_bytes(), env.mem, &mut alloc), 8);
}

fn pread<'a, A: PagingArch>(env: &Env<'a, A>, obj: &Shmem<'a>, off: u64) -> u64 {
    let mut b = [0u8; 8];
    assert_eq!(obj.read(off, &mut b, env.mem), 8);
    u64::from_le_bytes(b)
}

fn map_private<'a, A: PagingArch>(mm: &Mm<'a, A>, obj: &Arc<Shmem<'a>>, len: u64) -> u64 {
    mm.mmap_shmem(PRIV, len, RW, MAP_PRIVATE | MAP_FIXED, obj.clone(), 0, true)
        .unwrap()
}

/// Reads share the cache's folio read-only; the first write copies one
/// page into an anonymous order-0 folio.  The object and a shared mapping
/// never see the private writes; `pwrite` and shared writes show through
/// pages not yet copied, not through copied ones; `MADV_DONTNEED` drops
/// the copy and the file's data shows again.
fn cow_of_file_pages<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        // 64K folios in the cache: the copy is still one 4K page.
        env.thp
            .config
            .shmem
            .set_order_mode(4, ShmemOrderMode::Always)
            .unwrap();
        let obj = Arc::new(Shmem::with_gauges(MIB, 0, Some(&env.thp.shmem)));
        let mm = env.mm();
        let sh = mm
            .mmap_shmem(VA, MIB, RW, MAP_SHARED | MAP_FIXED, obj.clone(), 0, true)
            .unwrap();
        env.fill_pages(&mm, sh, MIB, 5);
        let pv = map_private(&mm, &obj, MIB);
        assert_eq!(env.read_u64(&mm, pv + 3 * K4), 5 ^ (sh + 3 * K4));
        let file = env.folio_at(&mm, pv + 3 * K4).unwrap();
        assert!(file.is_shmem());
        assert_eq!(file.order(), 4);
        let l = env.leaf(&mm, pv + 3 * K4).unwrap();
        assert!(!l.attrs.perms.write, "a file page is mapped read-only");
        assert_eq!(l.pfn, env.leaf(&mm, sh + 3 * K4).unwrap().pfn);
        env.check(&[&mm]);
        let cached = obj.cached_pages();
        // The write copies the page.
        env.write_u64(&mm, pv + 3 * K4, 0xc0);
        let copy = env.folio_at(&mm, pv + 3 * K4).unwrap();
        assert!(copy.is_anon() && !copy.is_shmem());
        assert_eq!(copy.order(), 0);
        assert!(env.leaf(&mm, pv + 3 * K4).unwrap().attrs.perms.write);
        assert_eq!(env.read_u64(&mm, sh + 3 * K4), 5 ^ (sh + 3 * K4));
        assert_eq!(pread(env, &obj, 3 * K4), 5 ^ (sh + 3 * K4));
        assert_eq!(obj.cached_pages(), cached);
        assert_eq!(mm.anon_rss(), 1);
        // The rest of the page was copied too.
        let b = env.read_bytes(&mm, pv + 3 * K4, 16).unwrap();
        assert_eq!(&b[..8], &0xc0u64.to_le_bytes());
        // A write to a page never read: `do_cow_fault` copies at once.
        env.write_u64(&mm, pv + 40 * K4, 0xc1);
        assert_eq!(mm.anon_rss(), 2);
        assert_eq!(pread(env, &obj, 40 * K4), 5 ^ (sh + 40 * K4));
        env.check(&[&mm]);
        // File writes show through pages not copied, not through copies.
        pwrite(env, &obj, 4 * K4, 0xf4);
        env.write_u64(&mm, sh + 5 * K4, 0xf5);
        pwrite(env, &obj, 3 * K4, 0xf3);
        assert_eq!(env.read_u64(&mm, pv + 4 * K4), 0xf4);
        assert_eq!(env.read_u64(&mm, pv + 5 * K4), 0xf5);
        assert_eq!(env.read_u64(&mm, pv + 3 * K4), 0xc0);
        // MADV_DONTNEED drops the copies: the file's data shows again.
        mm.madvise(pv, MIB, MADV_DONTNEED).unwrap();
        assert_eq!(mm.anon_rss(), 0);
        assert_eq!(env.read_u64(&mm, pv + 3 * K4), 0xf3);
        assert_eq!(env.read_u64(&mm, pv + 40 * K4), 5 ^ (sh + 40 * K4));
        // MADV_FREE is EINVAL (not anonymous), as Linux.
        assert_eq!(mm.madvise(pv, MIB, MADV_FREE), Err(Errno::EINVAL));
        env.check(&[&mm]);
        drop(obj);
        drop(mm);
        assert_eq!(
            env.thp
                .shmem
                .pages
                .load(core::sync::atomic::Ordering::Relaxed),
            0
        );
    });
}

/// fork copies a private file VMA: the copies become COW-shared (a write
/// on either side copies again), the file pages stay shared and
/// read-only, and neither side's writes reach the other or the file.
fn fork_after_cow<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        let obj = object(env, 64 * K4, 0x100);
        let parent = env.mm();
        let pv = map_private(&parent, &obj, 64 * K4);
        env.write_u64(&parent, pv, 0xa0);
        assert_eq!(env.read_u64(&parent, pv + K4), 0x101);
        let child = parent.fork().unwrap();
        env.check(&[&parent, &child]);
        assert_eq!(env.read_u64(&child, pv), 0xa0);
        assert_eq!(env.read_u64(&child, pv + K4), 0x101);
        assert_eq!(
            env.leaf(&child, pv).unwrap().pfn,
            env.leaf(&parent, pv).unwrap().pfn
        );
        let copies = env.event(VmEvent::FaultCowCopy);
        env.write_u64(&child, pv, 0xb0);
        assert_eq!(env.event(VmEvent::FaultCowCopy), copies + 1);
        assert_eq!(env.read_u64(&parent, pv), 0xa0);
        env.write_u64(&child, pv + K4, 0xb1);
        assert_eq!(env.read_u64(&parent, pv + K4), 0x101);
        assert_eq!(pread(env, &obj, K4), 0x101);
        assert_eq!(pread(env, &obj, 0), 0x100);
        // The parent's copy is its own again: reused, not copied.
        env.write_u64(&parent, pv, 0xa1);
        assert_eq!(env.event(VmEvent::FaultCowCopy), copies + 2);
        assert_eq!(env.read_u64(&child, pv), 0xb0);
        env.check(&[&parent, &child]);
        drop(child);
        env.check(&[&parent]);
        drop(obj);
    });
}

/// A read-only private mapping becomes writable by mprotect (Linux allows
/// it whatever the open mode) and copies on write; a moving mremap takes
/// the copies along; a hole punch keeps them, a truncate drops them
/// (SIGBUS past the end).
fn mprotect_mremap_punch_truncate<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        let obj = object(env, 16 * K4, 0x300);
        let mm = env.mm();
        let pv = mm
            .mmap_shmem(
                PRIV,
                16 * K4,
                PROT_READ,
                MAP_PRIVATE | MAP_FIXED,
                obj.clone(),
                0,
                true,
            )
            .unwrap();
        assert_eq!(env.read_u64(&mm, pv + 2 * K4), 0x302);
        assert_eq!(env.touch(&mm, pv, Access::Write), Err(Fault::Segv));
        mm.mprotect(pv, 16 * K4, RW).unwrap();
        env.write_u64(&mm, pv + 2 * K4, 0xd2);
        env.write_u64(&mm, pv + 3 * K4, 0xd3);
        assert_eq!(pread(env, &obj, 2 * K4), 0x302);
        env.check(&[&mm]);
        let to = mm
            .mremap(
                pv,
                16 * K4,
                16 * K4,
                MREMAP_MAYMOVE | MREMAP_FIXED,
                PRIV + 64 * MIB,
            )
            .unwrap();
        assert_eq!(env.read_u64(&mm, to + 2 * K4), 0xd2);
        assert_eq!(env.read_u64(&mm, to + 4 * K4), 0x304);
        env.check(&[&mm]);
        // Punch pages 0..8: the copies stay, the file pages read zero.
        let (s, e) = obj.folio_span(0, 8);
        mm.shmem_unmap_range(obj.id(), s, e);
        let (_, gone) = obj.truncate_range(0, 8, env.mem);
        mm.shmem_unmap_range(obj.id(), 0, 8);
        drop(gone);
        assert_eq!(env.read_u64(&mm, to + 2 * K4), 0xd2);
        assert_eq!(env.read_u64(&mm, to + 3 * K4), 0xd3);
        assert_eq!(env.read_u64(&mm, to + 4 * K4), 0);
        assert_eq!(env.read_u64(&mm, to + 9 * K4), 0x309);
        env.check(&[&mm]);
        // Truncate to 0: everything past the end goes, copies too.
        obj.set_size(0);
        let (_, gone) = obj.truncate_range(0, 16, env.mem);
        mm.shmem_unmap_truncated(obj.id(), 0, 16);
        drop(gone);
        assert_eq!(mm.anon_rss(), 0);
        assert_eq!(
            env.touch(&mm, to + 2 * K4, Access::Read),
            Err(Fault::Sigbus)
        );
        assert_eq!(env.touch(&mm, to, Access::Write), Err(Fault::Sigbus));
        env.check(&[&mm]);
    });
}

/// `MADV_REMOVE`'s checks (Linux 6.12's `madvise_remove`): EINVAL on
/// private anonymous memory, EACCES on a private file mapping and on a
/// shared one without `VM_MAYWRITE`; a shared read-only mapping of a
/// writable file may punch; the ranges name the object's offsets.
fn madvise_remove_checks<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        let obj = object(env, 64 * K4, 0x500);
        let mm = env.mm();
        let anon = mm.mmap(0, 4 * K4, RW, ANON).unwrap();
        assert_eq!(mm.madvise(anon, 4 * K4, MADV_REMOVE), Err(Errno::EINVAL));
        let pv = map_private(&mm, &obj, 16 * K4);
        assert_eq!(mm.madvise(pv, 4 * K4, MADV_REMOVE), Err(Errno::EACCES));
        // Linux: `MADV_WIPEONFORK` is for private anonymous memory only.
        assert_eq!(mm.madvise(pv, 4 * K4, MADV_WIPEONFORK), Err(Errno::EINVAL));
        let ro = mm
            .mmap_shmem(0, 16 * K4, PROT_READ, MAP_SHARED, obj.clone(), 0, false)
            .unwrap();
        assert_eq!(mm.madvise(ro, 4 * K4, MADV_REMOVE), Err(Errno::EACCES));
        let rw = mm
            .mmap_shmem(
                VA + 64 * MIB,
                16 * K4,
                PROT_READ,
                MAP_SHARED | MAP_FIXED,
                obj.clone(),
                32 * K4,
                true,
            )
            .unwrap();
        let (punch, r) = mm.madvise_remove_ranges(rw + 2 * K4, 3 * K4);
        assert_eq!(r, Ok(()));
        assert_eq!(punch.len(), 1);
        assert_eq!(
            (punch[0].0.id(), punch[0].1, punch[0].2),
            (obj.id(), 34 * K4, 3 * K4)
        );
        drop(punch);
        // A hole after the VMA: ENOMEM, the VMA's part still listed.
        let (punch, r) = mm.madvise_remove_ranges(rw + 15 * K4, 4 * K4);
        assert_eq!(r, Err(Errno::ENOMEM));
        assert_eq!(punch.len(), 1);
        drop(punch);
        env.check(&[&mm]);
    });
}

/// A read maps the cached folio's pages in one go, but not past the
/// object's size: there a read or a write is SIGBUS, never a copy.
fn private_batch_stops_at_eof<A: PagingArch>() {
    run::<A>(32 * MIB, |env| {
        env.thp
            .config
            .shmem
            .set_order_mode(4, ShmemOrderMode::Always)
            .unwrap();
        let obj = Arc::new(Shmem::with_gauges(5 * K4, 0, Some(&env.thp.shmem)));
        let mm = env.mm();
        let pv = map_private(&mm, &obj, 16 * K4);
        assert_eq!(env.read_u64(&mm, pv + K4), 0);
        assert_eq!(env.folio_at(&mm, pv).unwrap().order(), 4);
        assert!(env.leaf(&mm, pv + 4 * K4).is_some());
        assert!(env.leaf(&mm, pv + 5 * K4).is_none());
        assert_eq!(
            env.touch(&mm, pv + 5 * K4, Access::Write),
            Err(Fault::Sigbus)
        );
        assert_eq!(
            env.touch(&mm, pv + 9 * K4, Access::Read),
            Err(Fault::Sigbus)
        );
        assert_eq!(mm.anon_rss(), 0);
        env.write_u64(&mm, pv + 4 * K4, 4);
        assert_eq!(mm.anon_rss(), 1);
        env.check(&[&mm]);
    });
}

both_formats!(
    private_batch_stops_at_eof,
    cow_of_file_pages,
    fork_after_cow,
    mprotect_mremap_punch_truncate,
    madvise_remove_checks,
);
