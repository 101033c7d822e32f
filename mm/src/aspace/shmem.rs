//! Mappings of shmem objects (`crate::shmem`): Linux's `shmem_fault` /
//! `finish_fault` for `MAP_SHARED` anonymous memory, memfds and tmpfs
//! files, and `do_read_fault` / `do_cow_fault` for their `MAP_PRIVATE`
//! mappings.
//!
//! * The address space keeps an `Arc` of every object one of its VMAs maps
//!   (`Mm::shmem`), dropped once no VMA names it ([`Mm::shmem_prune`]
//!   after munmap, mremap, `MAP_FIXED` and exit), so an object lives while
//!   any process maps it or any file holds it.
//! * A fault finds the folio at the VMA's object index, or allocates one
//!   of the orders the shmem policy allows (`shmem::policy`), whose block
//!   is aligned both in the object and in the address space, fits in the
//!   VMA and holds no cached page yet (`shmem_suitable_orders`), highest
//!   first; then maps every page of the folio that lies in the VMA and in
//!   the faulting page's PMD in one go if their entries are all empty (a
//!   contiguous block on arm64), or a PMD-size folio aligned on both sides
//!   with one PMD leaf (`do_set_pmd`, `thp_file_mapped`).  Write faults on
//!   present entries just make them writable and dirty: shared pages are
//!   never copied.
//! * Access at or beyond the object's size: SIGBUS, as Linux; so is a
//!   fault that needs a page a full tmpfs (`size=`) cannot cache.
//! * fork copies no shmem entries (Linux's `vma_needs_copy` is false for
//!   shared VMAs): the child faults the same folios in from the cache.
//! * mprotect works as for anonymous memory; an mremap that moves a shmem
//!   VMA zaps the old entries instead of moving them (the new range
//!   faults the same folios back).
//! * Private mappings (`MAP_PRIVATE` of a file: a VMA naming the object
//!   without `VM_SHARED`) hold two kinds of entries: the object's pages,
//!   read-only (never a PMD leaf), and private copies, anonymous order-0
//!   folios made by the first write to a page (`shmem_private_fault`;
//!   Linux 6.12 makes no large anonymous folios in file VMAs either).  The
//!   copies are ordinary anonymous memory: the anonymous fault path
//!   handles their COW after fork (fork copies private file VMAs), swap,
//!   migration and NUMA faults; zap, mremap (which moves a private VMA's
//!   entries) and `MADV_DONTNEED` (the file's data shows again) treat the
//!   two kinds alike.  A hole punch or a collapse unmaps only the
//!   object's pages from them; a truncate drops the copies past the new
//!   end too ([`Mm::shmem_unmap_truncated`]).  `MADV_COLLAPSE` is EINVAL
//!   and khugepaged skips them (`shmem_collapse.rs`).
//! * `MADV_REMOVE` on a shared mapping punches the range out of the
//!   object ([`Mm::madvise_remove_ranges`] gives the ranges, the caller
//!   punches them in every space).
//! * `MADV_DONTNEED` zaps (the cache keeps the data, as Linux);
//!   `MADV_FREE` is EINVAL on shmem, as Linux; khugepaged and
//!   `MADV_COLLAPSE` collapse shmem ranges through the page cache
//!   (`shmem_collapse.rs`); NUMA balancing and `move_pages` leave shmem
//!   folios alone (they are not anonymous; private copies are).
//! * `MADV_COLD` and `MADV_PAGEOUT` take shmem folios the range covers
//!   whole and only this space maps; reclaim and `MADV_PAGEOUT` write them
//!   to swap, and a fault on a page out on swap brings it back first (a
//!   major fault): `shmem_swap.rs`.

use alloc::sync::Arc;

use crate::addr::{PAGE_SHIFT, PAGE_SIZE, PMD_ORDER, PMD_SIZE, align_down};
use crate::paging::{Attrs, Entry, PMD_LEVEL, PagingArch, PtAlloc};
use crate::physmem::buddy::AllocFlags;
use crate::physmem::folio::FolioRef;
use crate::shmem::Shmem;
use crate::thp::{MthpStat, VmEvent};
use crate::vma::{VmFlags, Vma, VmaSet};

use super::fault::Locked;
use super::shmem_swap::ShmemRange;
use super::{Access, Fault, Mm, vma_perms};

impl<'a, A: PagingArch> Mm<'a, A> {
    /// The object with id `id` this space maps.
    pub fn shmem_object(&self, id: u64) -> Option<Arc<Shmem<'a>>> {
        self.shmem.lock().get(&id).cloned()
    }

    /// Keep `obj` while a VMA of this space maps it.
    pub(crate) fn shmem_attach(&self, obj: Arc<Shmem<'a>>) {
        self.shmem.lock().insert(obj.id(), obj);
    }

    /// Drop the objects no VMA of `vmas` maps any more (their last
    /// mapping in this space went; the cache's folios go with the last
    /// reference anywhere).  Call once the zaps' references are released.
    pub(crate) fn shmem_prune(&self, vmas: &VmaSet) {
        let gone: alloc::vec::Vec<Arc<Shmem<'a>>> = {
            let mut t = self.shmem.lock();
            if t.is_empty() {
                return;
            }
            let live: alloc::collections::BTreeSet<u64> =
                vmas.iter().filter_map(|v| v.shmem).collect();
            let dead: alloc::vec::Vec<u64> =
                t.keys().copied().filter(|id| !live.contains(id)).collect();
            dead.iter().filter_map(|id| t.remove(id)).collect()
        };
        // Dropped outside the table's lock: the last reference frees folios.
        drop(gone);
    }

    /// `mmap` of the shmem object `obj` at byte `offset` (a memfd, or the
    /// object `Mm::mmap` made for `MAP_SHARED|MAP_ANONYMOUS`);
    /// `may_write` as [`crate::vma::VmaSet::mmap_shmem`]'s.
    #[allow(clippy::too_many_arguments)]
    pub fn mmap_shmem(
        &self,
        addr: u64,
        len: u64,
        prot: crate::abi::uapi::Prot,
        flags: crate::abi::uapi::MapFlags,
        obj: Arc<Shmem<'a>>,
        offset: u64,
        may_write: bool,
    ) -> Result<u64, crate::abi::errno::Errno> {
        let mut vmas = self.mmap_write();
        let locked = super::MAP_FIXED_ANY
            .intersects(flags)
            .then(|| self.locked_in(&vmas, addr, len));
        let out = vmas.mmap_shmem(addr, len, prot, flags, obj.id(), offset, may_write)?;
        // Linux's `khugepaged_enter_vma` at mmap: khugepaged will look at
        // the mapping if the shmem policy lets it collapse there.
        if vmas
            .find(out.addr)
            .is_some_and(|v| self.shmem_collapse_allowed(v, &obj, false))
        {
            self.register_khugepaged();
        }
        self.shmem_attach(obj);
        let mut pt = self.lock_pt();
        for r in locked.iter().flatten() {
            self.mlock_walk(&mut pt, r.clone(), false);
        }
        for r in &out.unmapped {
            self.zap_range(&mut pt, r.start, r.end, true);
        }
        drop(pt);
        self.shmem_prune(&vmas);
        if out.populate {
            self.populate(&vmas, out.addr, out.addr + out.len, None);
        }
        Ok(out.addr)
    }

    /// Unmap the object pages `[first, end)` of the object `id` from this
    /// space (Linux's `unmap_mapping_range`, per space): before a
    /// truncate or hole punch drops them from the cache.  VMAs stay; a
    /// later access past the new size gets SIGBUS, one inside refaults.
    pub fn shmem_unmap_range(&self, id: u64, first: u64, end: u64) {
        self.shmem_unmap_pages(id, first, end, false);
    }

    /// [`Self::shmem_unmap_range`], also freeing the page-table pages
    /// the unmap empties with `free_tables` (a collapse: the next fault
    /// of an aligned mapping then maps a PMD).
    ///
    /// In a private mapping only the entries of the object's own folios
    /// go (Linux's `unmap_mapping_range` with `even_cows` false, as a hole
    /// punch and a collapse use it): the private copies stay, and their
    /// page tables with them.
    pub(crate) fn shmem_unmap_pages(&self, id: u64, first: u64, end: u64, free_tables: bool) {
        self.shmem_unmap_each(id, first, end, |pt, r| self.shmem_zap(pt, r, free_tables));
    }

    /// [`Self::shmem_unmap_range`] for a truncate (Linux's
    /// `truncate_pagecache`, `even_cows` true): private copies of the
    /// pages go too, so an access beyond the new size gets SIGBUS.
    pub fn shmem_unmap_truncated(&self, id: u64, first: u64, end: u64) {
        self.shmem_unmap_each(id, first, end, |pt, r| {
            self.zap_range(pt, r.start, r.end, false);
        });
    }

    /// Call `zap(pt, range)` for every range of this space mapping object
    /// pages `[first, end)` of `id` ([`Self::shmem_ranges`]).
    fn shmem_unmap_each(
        &self,
        id: u64,
        first: u64,
        end: u64,
        mut zap: impl FnMut(&mut crate::paging::PageTable<'a, A>, &ShmemRange),
    ) {
        let vmas = self.mmap_read();
        let mut pt = self.lock_pt();
        for r in Self::shmem_ranges(&vmas, id, first, end) {
            zap(&mut pt, &r);
        }
    }

    /// Zap the entries of `[a, b)` (in a private file VMA) that map
    /// page-cache folios, run by run, leaving the private copies (and
    /// their swap entries) alone.
    pub(crate) fn zap_file_pages(&self, pt: &mut crate::paging::PageTable<'a, A>, a: u64, b: u64) {
        let ctx = self.ctx;
        let mut run: Option<u64> = None;
        let mut va = a;
        while va < b {
            let file = match pt.lookup(va).entry {
                Entry::Leaf(l) => ctx.folio(l.pfn).is_some_and(|f| f.is_shmem()),
                _ => false,
            };
            match (file, run) {
                (true, None) => run = Some(va),
                (false, Some(s)) => {
                    self.zap_range(pt, s, va, false);
                    run = None;
                }
                _ => {}
            }
            va += PAGE_SIZE;
        }
        if let Some(s) = run {
            self.zap_range(pt, s, b, false);
        }
    }

    /// Whether a shared writable VMA of this space maps the object `id`
    /// (Linux's `mapping_writably_mapped`, per space: `F_SEAL_WRITE` is
    /// then EBUSY).  Private mappings do not count: their writes never
    /// reach the object.
    pub fn shmem_writably_mapped(&self, id: u64) -> bool {
        self.mmap_read()
            .iter()
            .any(|v| v.shmem == Some(id) && v.flags.contains(VmFlags::SHARED | VmFlags::WRITE))
    }

    /// The object ranges `MADV_REMOVE` of `[addr, addr + len)` punches:
    /// `(object, byte offset, bytes)` for each shared writable-capable
    /// shmem VMA the range covers, in order, and the syscall's result
    /// (Linux 6.12's `madvise_remove` per VMA: EINVAL for a locked VMA or
    /// one without a file, EACCES unless shared with `VM_MAYWRITE`; ENOMEM
    /// for holes; a failing VMA stops the walk, the ranges before it are
    /// still punched).  The caller punches them as
    /// `fallocate(PUNCH_HOLE|KEEP_SIZE)` does, which unmaps them from every
    /// space and frees the folios.
    #[allow(clippy::type_complexity)]
    pub fn madvise_remove_ranges(
        &self,
        addr: u64,
        len: u64,
    ) -> (
        alloc::vec::Vec<(Arc<Shmem<'a>>, u64, u64)>,
        Result<(), crate::abi::errno::Errno>,
    ) {
        let vmas = self.mmap_read();
        let Some(out) = vmas.madvise_shared(addr, len, crate::abi::uapi::MADV_REMOVE) else {
            return (
                alloc::vec::Vec::new(),
                Err(crate::abi::errno::Errno::EINVAL),
            );
        };
        let mut punch = alloc::vec::Vec::new();
        for r in &out.ranges {
            let Some(v) = vmas.find(r.start) else {
                continue;
            };
            if let Some(obj) = v.shmem.and_then(|id| self.shmem_object(id)) {
                punch.push((obj, v.pgoff_of(r.start) << PAGE_SHIFT, r.end - r.start));
            }
        }
        (punch, out.result)
    }

    /// A fault in the shmem VMA `vma` (already checked to allow `access`).
    #[cold]
    #[inline(never)]
    pub(crate) fn shmem_fault(&self, vma: &Vma, addr: u64, access: Access) -> Result<(), Fault> {
        let va = align_down(addr, PAGE_SIZE);
        let Some(obj) = vma.shmem.and_then(|id| self.shmem_object(id)) else {
            debug_assert!(false, "shmem VMA at {addr:#x} without its object");
            return Err(Fault::Sigbus);
        };
        if !vma.flags.contains(VmFlags::SHARED) {
            return self.shmem_private_fault(vma, &obj, addr, access);
        }
        {
            let mut pt = self.lock_pt();
            let w = pt.lookup(addr);
            match w.entry {
                Entry::Leaf(l) => {
                    // Present: only the access and dirty bits (and write,
                    // which a shared page always gets when the VMA allows).
                    let mut want = l.attrs;
                    want.young = true;
                    if access == Access::Write {
                        want.dirty = true;
                        want.perms.write = true;
                    }
                    if want != l.attrs {
                        let mut g = pt.gather();
                        let r = if w.level == PMD_LEVEL {
                            pt.update_pmd(va, want, &mut g)
                        } else {
                            pt.update_pte(va, want, &mut g)
                        };
                        g.finish();
                        debug_assert!(r.is_ok());
                    }
                    return Ok(());
                }
                Entry::Absent => {}
                _ => {
                    debug_assert!(false, "non-present entry in a shmem VMA at {addr:#x}");
                    return Err(Fault::Sigbus);
                }
            }
        }
        let index = vma.pgoff_of(va);
        let size_pages = obj.size_pages();
        if index >= size_pages {
            return Err(Fault::Sigbus);
        }
        let seen = obj.generation();
        let Some((first, f)) = self.shmem_get_folio(vma, &obj, va, index, size_pages)? else {
            return Ok(());
        };
        let mut pt = self.lock_pt();
        // A truncate or hole punch may have run since the lookup: it
        // changes the size or the cache first and unmaps after (twice, as
        // Linux's `truncate_pagecache`), so checking both again under the
        // page-table lock leaves no mapping of a dropped page behind (the
        // cache only when a removal ran since the lookup).
        if index >= obj.size_pages() {
            return Err(Fault::Sigbus);
        }
        if obj.generation() != seen && obj.find(index).is_none_or(|(_, g)| g.pfn() != f.pfn()) {
            return Ok(());
        }
        // A collapse locked it after the lookup: it unmaps the folio from
        // this space after this lock is dropped, or finds it mapped and
        // gives up; mapping it now would only make it give up.
        if f.folio()
            .test(crate::physmem::frame_flags::PageFlags::LOCKED)
        {
            return Ok(());
        }
        self.shmem_map(vma, &mut pt, va, first, &f, access, u64::MAX)
    }

    /// A fault in a private mapping of a shmem object (`MAP_PRIVATE` of a
    /// tmpfs file or a memfd), as Linux 6.12's `do_fault`:
    /// * an empty entry, read: the page-cache folio (found, or allocated
    ///   and cached as for a shared fault) is mapped read-only
    ///   (`do_read_fault`): its pages inside the VMA and the PMD of `va`
    ///   whose entries are all empty, in one go, else the one page —
    ///   where Linux maps one PTE and fault-around maps the cached pages
    ///   of the 64 KiB around it.  Never a PMD leaf: a write must be able
    ///   to copy one page;
    /// * an empty entry, write: the page is copied into a new order-0
    ///   anonymous folio mapped writable (`do_cow_fault`; the cache still
    ///   gets the page, as Linux's `shmem_fault`);
    /// * a present entry or a swap or migration entry: the anonymous
    ///   fault path, under the same page-table lock hold (a write to a
    ///   file page copies it, `do_wp_page`; private copies follow the
    ///   anonymous rules for COW after fork, swap and migration).
    fn shmem_private_fault(
        &self,
        vma: &Vma,
        obj: &Arc<Shmem<'a>>,
        addr: u64,
        access: Access,
    ) -> Result<(), Fault> {
        let va = align_down(addr, PAGE_SIZE);
        {
            let mut pt = self.lock_pt();
            if !pt.lookup(addr).entry.is_absent() {
                let step = self.fault_locked(vma, &mut pt, addr, access, &mut None);
                drop(pt);
                return match step {
                    Locked::Done(r) => r,
                    Locked::Swap(e) => self.do_swap_page(vma, addr, access, e),
                    Locked::Migration(f, e) => self.migration_entry_wait(vma, addr, f, e),
                    Locked::NumaMigrate(f, node) => self.numa_migrate(vma, addr, f, node),
                    // Only an empty entry asks for a folio.
                    Locked::NeedFolio(_) => Ok(()),
                };
            }
        }
        let index = vma.pgoff_of(va);
        let size_pages = obj.size_pages();
        if index >= size_pages {
            return Err(Fault::Sigbus);
        }
        let seen = obj.generation();
        let Some((first, f)) = self.shmem_get_folio(vma, obj, va, index, size_pages)? else {
            return Ok(());
        };
        // The copy is made before the lock, as Linux's `do_cow_fault`
        // copies before `finish_fault`.
        let copy = if access == Access::Write {
            let new = self.alloc_cow(vma, va, 0).map_err(|_| Fault::Oom)?;
            let new = FolioRef::from_raw(new);
            self.ctx
                .mem
                .copy(new.pa(), f.page(index - first).pa(), PAGE_SIZE);
            Some(new)
        } else {
            None
        };
        let mut pt = self.lock_pt();
        // Truncate, hole punch and collapse: as in `shmem_fault`.
        if index >= obj.size_pages() {
            return Err(Fault::Sigbus);
        }
        if obj.generation() != seen && obj.find(index).is_none_or(|(_, g)| g.pfn() != f.pfn()) {
            return Ok(());
        }
        let Some(new) = copy else {
            if f.folio()
                .test(crate::physmem::frame_flags::PageFlags::LOCKED)
            {
                return Ok(());
            }
            return self.shmem_map(vma, &mut pt, va, first, &f, access, obj.size_pages());
        };
        if !pt.ptes_none(va, 1) {
            // Filled meanwhile: the access retries (the copy is freed).
            return Ok(());
        }
        let mut attrs = super::fault::anon_attrs(vma);
        attrs.young = true;
        attrs.dirty = true;
        pt.set_ptes(va, new.pfn(), 1, attrs)
            .map_err(|_| Fault::Oom)?;
        let new = new.into_raw();
        self.ctx.rmap_add_new(new, self.id, va, false);
        self.mlock_new_folio(vma, new);
        self.rss_add(1);
        Ok(())
    }

    /// The cached folio holding object page `index` (its first index and a
    /// reference) for a fault at `va` of `vma`, shared or private (Linux's
    /// `shmem_get_folio_gfp`): swapped back in first when it is out on
    /// swap (a major fault, as Linux's `shmem_swapin_folio`), allocated
    /// and cached when the page is a hole.  `None`: the access retries
    /// (the folio is being collapsed, or went again meanwhile).
    fn shmem_get_folio(
        &self,
        vma: &Vma,
        obj: &Shmem<'a>,
        va: u64,
        index: u64,
        size_pages: u64,
    ) -> Result<Option<(u64, FolioRef<'a>)>, Fault> {
        Ok(match obj.find_unlocked(index) {
            Ok(Some(hit)) => Some(hit),
            Ok(None) if obj.find_swap(index).is_some() => {
                self.ctx.shmem_swapin(obj, index)?;
                self.ctx.thp.stats.count(VmEvent::PgMajFault);
                self.majfaults
                    .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
                obj.find_unlocked(index).ok().flatten()
            }
            Ok(None) => Some(self.shmem_alloc(vma, obj, va, index, size_pages)?),
            // Being collapsed (`shmem_collapse.rs`): retry the access.
            Err(crate::shmem::Locked) => None,
        })
    }

    /// Allocate and cache the folio for page `index` (mapped at `va`).
    fn shmem_alloc(
        &self,
        vma: &Vma,
        obj: &Shmem<'a>,
        va: u64,
        index: u64,
        size_pages: u64,
    ) -> Result<(u64, FolioRef<'a>), Fault> {
        let ctx = self.ctx;
        let stats = &ctx.thp.stats;
        let hints = self.thp_hints(vma);
        let policy = &ctx.thp.config.shmem;
        let mut orders = match obj.mount_huge() {
            None => policy.allowable_orders(hints.hugepage, hints.nohugepage, index, size_pages),
            Some(m) => policy.mount_orders(m, hints.hugepage, hints.nohugepage, index, size_pages),
        };
        // Aligned in the object as in the address space, inside the VMA.
        orders &= crate::thp::suitable_orders(orders, vma.start, vma.end, va);
        orders = (0..=PMD_ORDER)
            .filter(|&o| {
                orders & (1 << o) != 0 && (va >> PAGE_SHIFT) % (1 << o) == index % (1 << o)
            })
            .fold(0, |m, o| m | 1 << o);
        orders = obj.empty_orders(index, orders);
        let mut got = None;
        for o in crate::thp::policy::orders_high_to_low(orders) {
            // A large folio that does not fit in the tmpfs `size=` falls
            // back to a smaller one (Linux 6.12 goes to order 0).
            if !obj.quota_allows(1 << o) {
                continue;
            }
            match ctx.buddy.alloc(o, AllocFlags::USER) {
                Ok(f) => {
                    got = Some(FolioRef::from_raw(f));
                    break;
                }
                Err(_) => {
                    stats.inc(o, MthpStat::ShmemFallback);
                    if o == PMD_ORDER {
                        stats.count(VmEvent::ThpFileFallback);
                    }
                }
            }
        }
        let f = match got {
            Some(f) => f,
            // The mount is full: SIGBUS (Linux's ENOSPC from the fault).
            None if !obj.quota_allows(1) => return Err(Fault::Sigbus),
            None => FolioRef::from_raw(
                ctx.buddy
                    .alloc(0, AllocFlags::USER)
                    .map_err(|_| Fault::Oom)?,
            ),
        };
        ctx.mem.zero(f.pa(), f.size());
        let order = f.order();
        let ours = f.get_ref();
        // On Err another fault cached this index meanwhile: its folio
        // serves (ours is freed here).
        match obj.insert(index, f) {
            Ok(first) => {
                if order > 0 {
                    stats.inc(order, MthpStat::ShmemAlloc);
                }
                if order == PMD_ORDER {
                    stats.count(VmEvent::ThpFileAlloc);
                }
                Ok((first, ours))
            }
            Err(_) => {
                drop(ours);
                // Swapped out meanwhile (a racing swap-out of that page).
                if obj.find(index).is_none() && obj.find_swap(index).is_some() {
                    self.ctx.shmem_swapin(obj, index)?;
                }
                obj.find(index).ok_or(Fault::Sigbus)
            }
        }
    }

    /// Map folio `f` (first object index `first`) around `va` in `vma`,
    /// no page at or past object index `eof` (a private mapping's batch
    /// stops at the size, as Linux's fault-around does: a write there
    /// must get SIGBUS, not a copy; a shared mapping maps the whole folio
    /// as Linux's `finish_fault` does for anonymous shmem).
    #[allow(clippy::too_many_arguments)]
    fn shmem_map(
        &self,
        vma: &Vma,
        pt: &mut crate::paging::PageTable<'a, A>,
        va: u64,
        first: u64,
        f: &FolioRef<'a>,
        access: Access,
        eof: u64,
    ) -> Result<(), Fault> {
        let ctx = self.ctx;
        let shared = vma.flags.contains(VmFlags::SHARED);
        let mut attrs = Attrs::user(vma_perms(vma.flags));
        attrs.young = true;
        attrs.dirty = access == Access::Write;
        if !shared {
            // A private mapping maps the cache read-only: writes copy.
            attrs.perms.write = false;
            attrs.dirty = false;
        }
        let index = vma.pgoff_of(va);
        let nr = f.nr_pages();
        // Where the folio's first page would be mapped (may lie outside).
        let fva = va as i128 - (((index - first) << PAGE_SHIFT) as i128);
        let w = pt.lookup(va);
        if shared
            && f.order() == PMD_ORDER
            && fva >= vma.start as i128
            && fva + PMD_SIZE as i128 <= vma.end as i128
            && (fva as u64).is_multiple_of(PMD_SIZE)
            && w.level >= PMD_LEVEL
            && w.entry.is_absent()
        {
            let base = fva as u64;
            let dep = ctx.pt_alloc().alloc_pt().ok_or(Fault::Oom)?;
            if pt.set_pmd_leaf(base, f.pfn(), attrs, dep).is_err() {
                ctx.pt_alloc().free_pt(dep);
                return Err(Fault::Oom);
            }
            ctx.rmap_add_shmem_pmd(f.folio(), self.id);
            self.shmem_rss_add(nr);
            ctx.thp.stats.count(VmEvent::ThpFileMapped);
            return Ok(());
        }
        // PTEs: the folio's pages inside the VMA and the PMD of `va`.
        let pmd_lo = align_down(va, PMD_SIZE) as i128;
        let lo = fva.max(vma.start as i128).max(pmd_lo) as u64;
        let eof_va = fva + (eof.saturating_sub(first).min(nr) << PAGE_SHIFT) as i128;
        let hi = (fva + (nr << PAGE_SHIFT) as i128)
            .min(vma.end as i128)
            .min(pmd_lo + PMD_SIZE as i128)
            .min(eof_va) as u64;
        let (start, n) = if pt.ptes_none(lo, ((hi - lo) >> PAGE_SHIFT) as usize) {
            (lo, (hi - lo) >> PAGE_SHIFT)
        } else if pt.ptes_none(va, 1) {
            (va, 1)
        } else {
            // Filled meanwhile: the access retries.
            return Ok(());
        };
        let pfn = f.pfn() + ((start as i128 - fva) >> PAGE_SHIFT) as u64;
        if pt.set_ptes(start, pfn, n as usize, attrs).is_err() {
            return Err(Fault::Oom);
        }
        ctx.rmap_add_shmem_ptes(f.folio(), self.id, n);
        self.shmem_rss_add(n);
        Ok(())
    }
}
