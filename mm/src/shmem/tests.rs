//! Host tests of the shmem page cache.

use std::vec::Vec;

use super::*;
use crate::cpu::SingleCpu;
use crate::emu::EmuMem;
use crate::physmem::buddy::{AllocFlags, BuddyAllocator};
use crate::physmem::memmap::{FrameDesc, Memmap};
use crate::physmem::phys::PhysMem;

const BASE: u64 = 0x100_0000;
const LEN: u64 = 16 << 20;

fn with_alloc(f: impl FnOnce(&BuddyAllocator<'_>, &EmuMem)) {
    let d: Vec<FrameDesc> = (0..LEN >> PAGE_SHIFT).map(|_| FrameDesc::new()).collect();
    let mem = EmuMem::new(BASE, LEN);
    let a = BuddyAllocator::new(Memmap::new(&d, BASE >> PAGE_SHIFT), &mem, &SingleCpu);
    a.add_free_range(BASE, BASE + LEN);
    f(&a, &mem);
}

/// Free pages, per-CPU caches drained first.
fn free(a: &BuddyAllocator<'_>) -> u64 {
    a.drain_all();
    a.zone_free()
}

fn alloc<'a>(a: &'a BuddyAllocator<'a>, order: u32) -> FolioRef<'a> {
    FolioRef::from_raw(a.alloc(order, AllocFlags::USER).unwrap())
}

#[test]
fn large_folio_is_one_entry_found_from_every_index() {
    with_alloc(|a, _| {
        let free0 = free(a);
        {
            let s = Shmem::new(1 << 20, 0);
            let f = alloc(a, 4);
            let pfn = f.pfn();
            assert_eq!(s.insert(21, f).unwrap(), 16);
            for i in 16..32 {
                let (first, g) = s.find(i).unwrap();
                assert_eq!((first, g.pfn()), (16, pfn));
                assert!(g.is_shmem());
            }
            assert!(s.find(15).is_none() && s.find(32).is_none());
            assert_eq!(s.cached_pages(), 16);
            // Overlapping inserts are refused.
            let f2 = alloc(a, 0);
            assert!(s.insert(20, f2).is_err());
            let f3 = alloc(a, 5);
            assert!(s.insert(0, f3).is_err());
            // Orders whose block is free.
            assert_eq!(s.empty_orders(3, 0b11_1111), 0b01_1111);
            assert_eq!(s.empty_orders(40, 0b110_0000), 0b010_0000);
        }
        // The last reference gone, every frame is back.
        assert_eq!(free(a), free0);
    });
}

#[test]
fn remove_range_drops_whole_folios_and_zeroes_cut_ones() {
    with_alloc(|a, mem| {
        let free0 = free(a);
        {
            let s = Shmem::new(1 << 20, 0);
            let big = alloc(a, 4);
            mem.fill(big.pa(), big.size(), 0xab);
            s.insert(0, big).unwrap();
            let small = alloc(a, 0);
            mem.fill(small.pa(), PAGE_SIZE, 0xcd);
            s.insert(20, small).unwrap();
            let (t, gone) = s.remove_range(8, 24, mem);
            assert_eq!(
                t,
                Truncated {
                    removed: 1,
                    zeroed: 1,
                    split: 0
                }
            );
            assert_eq!(gone.len(), 1);
            drop(gone);
            assert_eq!(s.cached_pages(), 16);
            let mut buf = [0u8; 8];
            s.read(7 * PAGE_SIZE, &mut buf, mem);
            assert_eq!(buf, [0xab; 8]);
            s.read(8 * PAGE_SIZE, &mut buf, mem);
            assert_eq!(buf, [0; 8]);
            s.read(20 * PAGE_SIZE, &mut buf, mem);
            assert_eq!(buf, [0; 8]);
        }
        assert_eq!(free(a), free0);
    });
}

#[test]
fn write_fills_holes_grows_size_and_read_clamps() {
    with_alloc(|a, mem| {
        let free0 = free(a);
        {
            let s = Shmem::new(0, 0);
            let data: Vec<u8> = (0..6000u32).map(|i| i as u8).collect();
            let mut get = || {
                let f = alloc(a, 0);
                mem.zero(f.pa(), PAGE_SIZE);
                Some(f)
            };
            assert_eq!(s.write(100, &data, mem, &mut get), 6000);
            assert_eq!(s.size(), 6100);
            assert_eq!(s.cached_pages(), 2);
            let mut back = std::vec![0u8; 8000];
            assert_eq!(s.read(0, &mut back, mem), 6100);
            assert_eq!(&back[..100], &[0u8; 100]);
            assert_eq!(&back[100..6100], &data[..]);
            assert_eq!(s.read(6100, &mut back, mem), 0);
        }
        assert_eq!(free(a), free0);
    });
}

#[test]
fn seals_follow_linux_errnos() {
    use crate::abi::errno::Errno;
    let s = Shmem::new(0, 0);
    assert_eq!(s.add_seals(0x40), Err(Errno::EINVAL));
    s.add_seals(F_SEAL_GROW | F_SEAL_SHRINK).unwrap();
    assert_eq!(s.seals(), F_SEAL_GROW | F_SEAL_SHRINK);
    s.add_seals(F_SEAL_SEAL).unwrap();
    assert_eq!(s.add_seals(F_SEAL_WRITE), Err(Errno::EPERM));
    let sealed = Shmem::new(0, F_SEAL_SEAL);
    assert_eq!(sealed.add_seals(F_SEAL_WRITE), Err(Errno::EPERM));
}

#[test]
fn truncate_inside_a_large_folio_splits_it() {
    with_alloc(|a, mem| {
        let free0 = free(a);
        {
            let s = Shmem::new(1 << 20, 0);
            let big = alloc(a, 4);
            mem.fill(big.pa(), big.size(), 0xab);
            s.insert(16, big).unwrap();
            assert_eq!(s.folio_span(20, 24), (16, 32));
            let (t, gone) = s.truncate_range(20, 24, mem);
            assert_eq!(
                t,
                Truncated {
                    removed: 0,
                    zeroed: 0,
                    split: 1
                }
            );
            assert_eq!(gone.len(), 4);
            drop(gone);
            assert_eq!(s.cached_pages(), 12);
            assert!(s.find(21).is_none());
            let (first, f) = s.find(25).unwrap();
            assert_eq!((first, f.order()), (25, 0));
            assert!(f.is_shmem());
            drop(f);
            let mut buf = [0u8; 8];
            s.read(19 * PAGE_SIZE, &mut buf, mem);
            assert_eq!(buf, [0xab; 8]);
            // A folio someone holds stays whole, its range zeroed.
            let big = alloc(a, 4);
            mem.fill(big.pa(), big.size(), 0xcd);
            s.insert(32, big).unwrap();
            let held = s.find(40).unwrap();
            let (t, gone) = s.truncate_range(36, 40, mem);
            assert_eq!(
                t,
                Truncated {
                    removed: 0,
                    zeroed: 1,
                    split: 0
                }
            );
            assert!(gone.is_empty());
            drop(held);
            s.read(37 * PAGE_SIZE, &mut buf, mem);
            assert_eq!(buf, [0; 8]);
            s.read(40 * PAGE_SIZE, &mut buf, mem);
            assert_eq!(buf, [0xcd; 8]);
        }
        assert_eq!(free(a), free0);
    });
}

/// A tmpfs file's orders (Linux 6.12: PMD size or nothing) follow its
/// mount's `huge=`, except that the top-level `deny` and `force` win.
#[test]
fn mount_huge_decides_pmd_or_nothing() {
    use super::policy::{ShmemHuge, ShmemPolicy};
    let pmd = 1u32 << crate::addr::PMD_ORDER;
    let p = ShmemPolicy::new();
    let o = |m: ShmemHuge, advised: bool, index: u64, size: u64| {
        p.mount_orders(m, advised, false, index, size)
    };
    assert_eq!(o(ShmemHuge::Always, false, 0, 1), pmd);
    assert_eq!(o(ShmemHuge::Never, true, 0, 1024), 0);
    assert_eq!(o(ShmemHuge::Advise, false, 0, 1024), 0);
    assert_eq!(o(ShmemHuge::Advise, true, 0, 1024), pmd);
    assert_eq!(o(ShmemHuge::WithinSize, false, 0, 511), 0);
    assert_eq!(o(ShmemHuge::WithinSize, false, 0, 512), pmd);
    assert_eq!(p.mount_orders(ShmemHuge::Always, false, true, 0, 512), 0);
    p.set_huge(ShmemHuge::Deny).unwrap();
    assert_eq!(o(ShmemHuge::Always, false, 0, 512), 0);
    p.set_huge(ShmemHuge::Force).unwrap();
    assert_eq!(o(ShmemHuge::Never, false, 0, 1), pmd);
}

#[test]
fn mount_quota_charges_cached_pages_and_the_inode() {
    with_alloc(|a, mem| {
        let free0 = free(a);
        let q = alloc::sync::Arc::new(quota::ShmemQuota::new(20, 2));
        assert_eq!((q.used_inodes(), q.used_blocks()), (1, 0));
        assert!(q.try_get_inode());
        assert!(!q.try_get_inode(), "nr_inodes=2 with the root and one file");
        {
            let s = Shmem::on_mount(None, policy::ShmemHuge::Never, Some(q.clone()));
            s.insert(0, alloc(a, 4)).unwrap();
            assert_eq!(q.used_blocks(), 16);
            assert!(s.quota_allows(4) && !s.quota_allows(5));
            // 16 more pages do not fit: refused, nothing charged.
            assert!(s.insert(16, alloc(a, 4)).is_err());
            assert!(s.find(16).is_none());
            assert_eq!(q.used_blocks(), 16);
            s.insert(16, alloc(a, 2)).unwrap();
            assert_eq!(q.used_blocks(), 20);
            // A punch inside the large folio splits it and uncharges the
            // pages it drops; removing the small one uncharges it whole.
            let (_, gone) = s.truncate_range(4, 8, mem);
            drop(gone);
            assert_eq!(q.used_blocks(), 16);
            let (_, gone) = s.remove_range(16, 20, mem);
            drop(gone);
            assert_eq!(q.used_blocks(), 12);
        }
        // The object gone: its pages and its inode come back.
        assert_eq!((q.used_blocks(), q.used_inodes()), (0, 1));
        assert_eq!(free(a), free0);
    });
}
