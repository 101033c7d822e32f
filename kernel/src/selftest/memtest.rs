//! Self-tests of the frame allocator as wired into the kernel: the
//! accounting matches the boot memory map, every order can be exhausted and
//! recovered, the per-CPU caches drain completely, zeroing works.
use crate::mem::memory::{boot_ram_frames, buddy};
use alloc::vec::Vec;
use ktest::{check, check_eq, ktest};
use mm::physmem::buddy::{AllocError, AllocFlags, MAX_ORDER};
use mm::physmem::folio::FolioList;

ktest! {
    /// free + used frames == RAM frames from the boot memory map.
    fn frames_add_up_to_boot_memory_map() {
        let s = buddy().stats();
        check_eq!(s.free + s.used, boot_ram_frames(), "free {} + used {} vs boot RAM", s.free, s.used);
        check!(s.free > 0);
        Ok(())
    }
}

ktest! {
    /// For each order: allocate until the allocator says no (an error, not a
    /// panic), free everything, and find the free count back at the baseline.
    fn exhaust_each_order_and_recover() {
        let b = buddy();
        b.drain_all();
        let base = b.stats().free;
        // Poisoning writes (and verifies) every byte of every frame; without
        // it the test runs in well under a second on TCG.
        let poison = b.poison_enabled();
        b.set_poison(false);
        let mut result = Ok(());
        for order in [0, 2, 4, 9, MAX_ORDER] {
            let mut held = FolioList::new();
            let mut n: u64 = 0;
            let err = loop {
                match b.alloc(order, AllocFlags::USER) {
                    Ok(f) => {
                        held.push_back(f);
                        n += 1;
                    }
                    Err(e) => break e,
                }
            };
            let left = b.stats().free;
            while let Some(f) = held.pop_front(b) {
                f.put();
            }
            b.drain_all();
            let after = b.stats().free;
            // User allocations stop at the zone's `min` watermark (the
            // kernel's reserve, set at boot from `min_free_kbytes`).
            let reserve = b.watermark(mm::physmem::buddy::Wmark::Min);
            if err != AllocError::NoMemory
                || after != base
                || n == 0
                || left >= (1 << order) * 64 + reserve
            {
                result = Err(ktest::format!(
                    "order {order}: {n} folios then {err:?}, {left} frames left, free {after} vs baseline {base}"
                ));
                break;
            }
        }
        b.set_poison(poison);
        result
    }
}

ktest! {
    /// Frees land in the per-CPU caches; draining returns every frame.
    fn pcp_drain_returns_everything() {
        let b = buddy();
        b.drain_all();
        let base = b.stats();
        let mut v = Vec::new();
        for i in 0..64 {
            let order = [0, 4, 9][i % 3];
            v.push(b.alloc(order, AllocFlags::USER).map_err(|e| ktest::format!("{e:?}"))?);
        }
        for f in v {
            f.put();
        }
        let cached = b.stats();
        check!(cached.free_pcp > 0, "nothing was cached per CPU");
        check_eq!(cached.free, base.free);
        b.drain_all();
        let s = b.stats();
        check_eq!(s.free_pcp, 0);
        check_eq!(s.free, base.free);
        check_eq!(b.buddyinfo(), base_info_after_drain(), "free lists differ after drain");
        Ok(())
    }
}

fn base_info_after_drain() -> mm::physmem::buddy::BuddyInfo {
    buddy().buddyinfo()
}

ktest! {
    /// A zeroed allocation is zero even when the frame held data before.
    fn zeroed_allocation_is_zero() {
        let b = buddy();
        let f = b.alloc(4, AllocFlags::USER).map_err(|e| ktest::format!("{e:?}"))?;
        let pa = f.pa();
        b.phys().fill(pa, f.size(), 0xa5);
        f.put();
        // The same frames come back first from the per-CPU cache.
        let g = b.alloc(4, AllocFlags::USER | AllocFlags::ZERO).map_err(|e| ktest::format!("{e:?}"))?;
        let ok = b.phys().is_zero(g.pa(), g.size());
        let same = g.pa() == pa;
        g.put();
        check!(ok, "zeroed order-4 folio at {:#x} is not zero (same frames: {same})", pa);
        Ok(())
    }
}

ktest! {
    /// Page-table pages and kernel data come from unmovable pageblocks, user
    /// folios from movable ones.
    fn mobility_grouping() {
        let b = buddy();
        let k = b.alloc(0, AllocFlags::KERNEL).map_err(|e| ktest::format!("{e:?}"))?;
        let u = b.alloc(0, AllocFlags::USER).map_err(|e| ktest::format!("{e:?}"))?;
        let (kpb, upb) = (k.pfn() >> 9, u.pfn() >> 9);
        k.put();
        u.put();
        check!(kpb != upb, "kernel and user frames share pageblock {kpb}");
        Ok(())
    }
}
