//! The anonymous fault path (Linux's `handle_mm_fault` for private
//! anonymous memory): order selection, zero pages, PMD faults, COW and the
//! arm64 access-flag / dirty fixups.
//!
//! # Zero pages
//! * A read (or exec) fault on an empty PTE maps the shared 4 KiB zero page
//!   read-only (a special entry: no references, no mapcount).  It never
//!   allocates an mTHP, as Linux.
//! * A read fault that qualifies for a PMD mapping maps the huge zero folio
//!   with a read-only PMD when `use_zero_page` is 1 (with it 0, the read
//!   fault allocates a PMD folio, as Linux).
//! * A write to the 4K zero page allocates a zeroed order-0 folio (Linux's
//!   `wp_page_copy` from the zero page).
//! * A write to the huge zero PMD splits it into 512 read-only PTEs of the
//!   huge zero folio's frames and is handled as a write to a 4K zero page
//!   (Linux 6.12, measured: `AnonHugePages` stays 0).  With the boot
//!   parameter `huge_zero_wp=alloc` it first tries to replace the PMD by a
//!   fresh PMD-sized folio if the order is still allowed (Linux 6.13's
//!   `do_huge_zero_wp_pmd`), and splits only if that fails.
//!
//! # COW
//! A write to a read-only anonymous page reuses it in place when the page
//! is anon-exclusive, or when the folio is exclusive to this address space
//! by Linux's rules (order 0: the only reference is our mapping; large:
//! more than one mapping, every reference a mapping, and every mapping in
//! this space).  Only the faulting PTE becomes writable.  Otherwise one
//! 4 KiB page is copied into a new order-0 folio; the old folio may become
//! partly mapped and go on the deferred-split queue.  A PMD-mapped folio is
//! reused whole when exclusive; otherwise the PMD is split first.
//!
//! Linux decides "every mapping is in this space" from the folio's mm-id
//! slots; this kernel has no such slots and counts this space's entries
//! that map frames of the folio instead, over the folio-sized window around
//! the faulting page and the window at the rmap owner's address (mremap
//! moves the owner along with the pages).  Only entries that really map the
//! folio are counted, each address once, so the count never exceeds the
//! truth and a reuse is never wrong; it is exact unless mremap scattered
//! the folio over more than those two windows (then the fault copies).

use crate::addr::{PAGE_SIZE, PMD_ORDER, PMD_SIZE, align_down};
use crate::paging::{
    Attrs, Entry, Leaf, PMD_LEVEL, PTE_LEVEL, PageTable, PagingArch, PtAlloc, Walk,
};
use crate::physmem::buddy::{AllocError, AllocFlags};
use crate::physmem::folio::{Folio, FolioRef};
use crate::thp::{MthpStat, THP_ORDERS_ALL_ANON, VmEvent, suitable_orders};
use crate::vma::mempolicy::Mempolicy;
use crate::vma::{Vma, VmaSet};

use super::{Access, Fault, Mm, access_allowed, vma_perms};

/// Attributes of a freshly written anonymous page in `vma`.
pub(super) fn anon_attrs(vma: &Vma) -> Attrs {
    Attrs::user(vma_perms(vma.flags))
}

/// Attributes of a zero-page mapping in `vma`: read-only, special.
fn zero_attrs(vma: &Vma) -> Attrs {
    zero_attrs_for(vma_perms(vma.flags))
}

/// Attributes of a zero-page mapping with at most the rights `p`.
pub(crate) fn zero_attrs_for(mut p: crate::paging::Perms) -> Attrs {
    p.write = false;
    Attrs {
        perms: p,
        young: true,
        dirty: false,
        special: true,
        ..Attrs::default()
    }
}

/// Whether reservation mode (`resv`, a bit mask) covers `order`.
#[inline]
fn ctx_reserves(resv: u32, order: u32) -> bool {
    resv & (1 << order) != 0
}

/// Folios of this order and above are zeroed with the page-table lock
/// dropped (and the range checked again after): below it (4K, 8K, 16K) the
/// zeroing costs less than dropping and retaking the lock (arm64 `-icount`,
/// one thread: 1885 instructions per 4 KiB fault with the lock dropped and
/// a second walk, 1480 zeroing under it).
const UNLOCKED_ZERO_MIN_ORDER: u32 = 3;

/// Folios of this order and above are zeroed with the *mmap* lock dropped
/// too (Linux zeroes under the per-VMA lock, which another thread's
/// `mmap`/`munmap` elsewhere in the space does not wait for; here those
/// take the mmap lock for writing and would wait out the zeroing).
/// The retried fault costs about a 4K fault's path again (arm64
/// `-icount`: a 64 KiB fault went from 5047 to 6019 instructions), so only
/// where the zeroing dwarfs that: PMD-size folios (67k instructions).
const UNLOCKED_MMAP_MIN_ORDER: u32 = crate::addr::PMD_ORDER;

/// A large anonymous folio allocated for a fault whose zeroing is done
/// with the mmap lock dropped ([`Mm::fault_once`]): allocated under the
/// lock, zeroed without it, then handed to the retried fault, which takes
/// it only if the VMA it was allocated for is still the one at the address
/// (same bounds and flags) and its block is still wanted; otherwise it is
/// freed when the `Prep` drops.
pub(crate) struct Prep<'a> {
    /// The fault may ask for the mmap lock to be dropped (`pending`).
    may_unlock: bool,
    /// Allocated, to be zeroed with the mmap lock dropped.
    pub(crate) pending: Option<Prepared<'a>>,
    /// Zeroed, for the retried fault.
    ready: Option<Prepared<'a>>,
}

pub(crate) struct Prepared<'a> {
    pub(crate) folio: FolioRef<'a>,
    pub(crate) base: u64,
    /// The VMA's start, end and flags when the folio was allocated.
    vma: (u64, u64, crate::vma::VmFlags),
}

impl<'a> Prep<'a> {
    /// For a fault that holds its mmap lock throughout.
    pub(crate) const fn locked() -> Self {
        Prep {
            may_unlock: false,
            pending: None,
            ready: None,
        }
    }

    /// For [`Mm::fault_once`], which can drop the lock for zeroing.
    pub(crate) const fn unlocking() -> Self {
        Prep {
            may_unlock: true,
            pending: None,
            ready: None,
        }
    }

    /// The pending folio is zeroed: the retried fault may take it, and
    /// does not ask again.
    pub(crate) fn zeroed(&mut self, p: Prepared<'a>) {
        self.ready = Some(p);
        self.may_unlock = false;
    }
}

/// What the part of a fault under the page-table lock asks for.
pub(crate) enum Locked<'a> {
    /// Resolved (or failed): the access retries.
    Done(Result<(), Fault>),
    /// A new anonymous folio is needed: allocate and zero one of `orders`
    /// (bit mask; the highest that succeeds, order 0 last) with the lock
    /// dropped, then run the locked part again with it.  (First touches in
    /// an existing PTE table never get here: `fault_shared` serves them.)
    NeedFolio(u32),
    /// A swap entry: swap it in with the page-table lock dropped (the I/O
    /// sleeps).
    Swap(crate::paging::SwapEntry),
    /// A migration entry: sleep on the folio being migrated (referenced
    /// here under the lock, while the entry still holds it), then retry.
    Migration(FolioRef<'a>, crate::paging::SwapEntry),
    /// A NUMA hinting fault on a folio of another node: migrate it (the
    /// reference) to node `.1` with the page-table lock dropped, then
    /// restore the folio's entries (`numa.rs`).
    NumaMigrate(FolioRef<'a>, usize),
}

impl<'a, A: PagingArch> Mm<'a, A> {
    /// A fault under the mmap lock (read or write), taking the page-table
    /// lock itself.  A new anonymous folio is allocated and zeroed with the
    /// page-table lock dropped (as Linux's `alloc_anon_folio` runs before
    /// `pte_offset_map_lock`), so threads faulting one address space zero
    /// their folios in parallel; the locked part then checks again that
    /// the range is still empty and, if another thread filled it first,
    /// frees the folio and lets the access retry.
    pub(crate) fn fault_vmas(&self, vmas: &VmaSet, addr: u64, access: Access) -> Result<(), Fault> {
        self.fault_vmas_prep(vmas, addr, access, &mut Prep::locked())
    }

    /// [`Self::fault_vmas`] with a large folio's zeroing possibly left to
    /// the caller (see [`Prep`]).
    pub(crate) fn fault_vmas_prep(
        &self,
        vmas: &VmaSet,
        addr: u64,
        access: Access,
        prep: &mut Prep<'a>,
    ) -> Result<(), Fault> {
        let stats = &self.ctx.thp.stats;
        let Some(vma) = vmas.find(addr) else {
            stats.count(VmEvent::FaultSegv);
            return Err(Fault::Segv);
        };
        if !access_allowed(vma.flags, access) {
            stats.count(VmEvent::FaultSegv);
            return Err(Fault::Segv);
        }
        // Once per fault, not again when it is retried with a folio
        // zeroed meanwhile.
        if prep.ready.is_none() {
            stats.count(VmEvent::PgFault);
        }
        if vma.is_shmem() {
            return self.shmem_fault(vma, addr, access);
        }
        // Reservations (`reserve.rs`) look at the block under the
        // exclusive lock.
        if self.ctx.thp.config.reserve_orders() == 0
            && let Some(r) = self.fault_shared(vma, addr, access, prep)
        {
            return r;
        }
        let mut pre = None;
        let step = self.fault_locked(vma, &mut self.lock_pt(), addr, access, &mut pre);
        let orders = match step {
            Locked::Done(r) => return r,
            Locked::NeedFolio(orders) => orders,
            Locked::Swap(e) => return self.do_swap_page(vma, addr, access, e),
            Locked::Migration(f, e) => return self.migration_entry_wait(vma, addr, f, e),
            Locked::NumaMigrate(f, node) => return self.numa_migrate(vma, addr, f, node),
        };
        let Some(f) = self.large_anon_folio(vma, addr, orders, prep)? else {
            return Ok(());
        };
        let mut pt = self.lock_pt();
        pre = Some(f);
        match self.fault_locked(vma, &mut pt, addr, access, &mut pre) {
            Locked::Done(r) => r,
            // A folio in hand that the locked part did not take is freed
            // when `pre` drops; never loop asking for another.
            Locked::NeedFolio(..)
            | Locked::Swap(_)
            | Locked::Migration(..)
            | Locked::NumaMigrate(..) => Ok(()),
        }
    }

    /// The fault path under split page-table locks: a first touch inside
    /// an existing PTE table (the zero page, or a new folio whose block
    /// lies in that table) fills entries with the page-table lock *shared*
    /// and that table's own lock held, so threads faulting different
    /// tables of one space run in parallel (Linux's split PTL).  A write
    /// first touch under an empty PMD goes to [`Self::fault_shared_pmd`]
    /// (Linux's `pmd_lock`).  `None`: not such a fault, take the exclusive
    /// path.
    fn fault_shared(
        &self,
        vma: &Vma,
        addr: u64,
        access: Access,
        prep: &mut Prep<'a>,
    ) -> Option<Result<(), Fault>> {
        let ctx = self.ctx;
        let stats = &ctx.thp.stats;
        let va = align_down(addr, PAGE_SIZE);
        let orders = {
            let guard = self.lock_pt_shared();
            let pt = guard.as_ref()?;
            let w = pt.lookup(addr);
            if w.level == PMD_LEVEL && access == Access::Write && matches!(w.entry, Entry::Absent) {
                drop(guard);
                return Some(self.fault_shared_pmd(vma, addr, prep));
            }
            // A swap entry: a swap-cache hit is mapped here, under this
            // walk; anything else goes straight to the swap-in (which
            // takes the lock again itself), without the exclusive walk of
            // `fault_locked`.
            if let Entry::Swap(e) = w.entry
                && w.level == PTE_LEVEL
                && e.is_swap()
            {
                let hit = self.swap_hit_shared(vma, pt, &w, addr, access, e);
                drop(guard);
                return Some(match hit {
                    Some(Ok(true)) => self.swapin_wp(vma, addr),
                    Some(r) => r.map(|_| ()),
                    None => self.do_swap_page(vma, addr, access, e),
                });
            }
            if w.level != PTE_LEVEL || !matches!(w.entry, Entry::Absent) {
                return None;
            }
            let _ptl = self.lock_pte_table(w.table_pa());
            if access != Access::Write {
                return Some(
                    match pt.fill_ptes_shared(&w, addr, va, ctx.zero_pfn(), 1, zero_attrs(vma)) {
                        Ok(()) => {
                            stats.count(VmEvent::FaultZeroPage);
                            stats.count(VmEvent::ZeroPageMap);
                            Ok(())
                        }
                        // Filled by another fault meanwhile: the access retries.
                        Err(_) => Ok(()),
                    },
                );
            }
            let orders = self.empty_orders(vma, pt, Some(&w), addr);
            if orders >> UNLOCKED_ZERO_MIN_ORDER == 0 {
                let Some(f) = self.alloc_anon_folio(vma, addr, orders, false) else {
                    return Some(Err(Fault::Oom));
                };
                self.zero_folio(*f, align_down(addr, f.size()), addr);
                return Some(self.install_shared(vma, pt, &w, addr, f));
            }
            orders
        };
        // Large: zeroed with no page-table lock held, then both retaken and
        // the walk done again.
        let f = match self.large_anon_folio(vma, addr, orders, prep) {
            Ok(Some(f)) => f,
            Ok(None) => return Some(Ok(())),
            Err(e) => return Some(Err(e)),
        };
        let guard = self.lock_pt_shared();
        let pt = guard.as_ref()?;
        let w = pt.lookup(addr);
        if w.level != PTE_LEVEL {
            return Some(Ok(()));
        }
        let _ptl = self.lock_pte_table(w.table_pa());
        Some(self.install_shared(vma, pt, &w, addr, f))
    }

    /// [`Self::fault_shared`]'s write first touch under an empty PMD (no
    /// PTE table, no leaf): the folio (of the orders the VMA allows, PMD
    /// size included, none mapped yet) and one page-table page are
    /// allocated and zeroed with no lock held; then, with the page-table
    /// lock shared and the PMD table's split lock held (Linux's
    /// `pmd_lock`), a PMD-size folio is mapped by a PMD leaf (the page its
    /// deposit), or the page becomes the PTE table and the folio is mapped
    /// as [`Self::install_shared`] does.  If the PMD filled meanwhile, what
    /// was allocated is freed and the access retries.
    fn fault_shared_pmd(&self, vma: &Vma, addr: u64, prep: &mut Prep<'a>) -> Result<(), Fault> {
        let ctx = self.ctx;
        let orders = self.fault_orders(vma, addr);
        let Some(f) = self.large_anon_folio(vma, addr, orders, prep)? else {
            return Ok(());
        };
        let page = ctx.pt_alloc().alloc_pt().ok_or(Fault::Oom)?;
        let guard = self.lock_pt_shared();
        let Some(pt) = guard.as_ref() else {
            ctx.pt_alloc().free_pt(page);
            return Ok(());
        };
        let w = pt.lookup(addr);
        if w.level != PMD_LEVEL || !matches!(w.entry, Entry::Absent) {
            ctx.pt_alloc().free_pt(page);
            if w.level != PTE_LEVEL {
                return Ok(());
            }
        } else {
            let _pmdl = self.lock_pte_table(w.table_pa());
            if f.order() == PMD_ORDER {
                let base = align_down(addr, PMD_SIZE);
                if pt
                    .set_pmd_leaf_walked(&w, base, f.pfn(), anon_attrs(vma), page)
                    .is_err()
                {
                    ctx.pt_alloc().free_pt(page);
                    return Ok(());
                }
                self.account_new_pmd(vma, f, base);
                return Ok(());
            }
            if pt.populate_pmd_walked(&w, page).is_err() {
                ctx.pt_alloc().free_pt(page);
            }
        }
        let w = pt.lookup(addr);
        if w.level != PTE_LEVEL {
            return Ok(());
        }
        let _ptl = self.lock_pte_table(w.table_pa());
        self.install_shared(vma, pt, &w, addr, f)
    }

    /// Map the new, zeroed folio `f` over its block around `addr` with the
    /// page-table lock shared and the PTE table's lock held (`w` walked to
    /// that table).  If part of the block was filled meanwhile, `f` is
    /// freed and the access retries.
    fn install_shared(
        &self,
        vma: &Vma,
        pt: &PageTable<'a, A>,
        w: &Walk,
        addr: u64,
        f: FolioRef<'a>,
    ) -> Result<(), Fault> {
        let order = f.order();
        let base = align_down(addr, PAGE_SIZE << order);
        if pt
            .fill_ptes_shared(w, addr, base, f.pfn(), 1 << order, anon_attrs(vma))
            .is_ok()
        {
            self.mlock_new_folio(vma, *f);
            self.account_new_anon(f, base);
        }
        Ok(())
    }

    /// The rmap, RSS and counters of a new anonymous folio just mapped by
    /// PTEs at `base`.
    fn account_new_anon(&self, f: FolioRef<'a>, base: u64) {
        let ctx = self.ctx;
        let f = f.into_raw();
        let order = ctx.rmap_add_new(f, self.id, base, false);
        self.rss_add(1 << order);
        ctx.thp.stats.inc(order, MthpStat::AnonFaultAlloc);
        ctx.thp.stats.count(VmEvent::FaultAnonAlloc);
    }

    /// The folio for an anonymous fault: the highest of `orders` that the
    /// allocator gives, else order 0; `None` when not even that is left.
    /// Each failed order counts `anon_fault_fallback` (and a failed PMD
    /// order `thp_fault_fallback`), as before the lock was dropped.
    ///
    /// Under a memory policy, or for a PMD-order folio on a machine with
    /// several nodes, the folio comes from where the policy says
    /// (`Mm::alloc_policy`); otherwise from the local node's allocator
    /// fast path.  With `may_compact` (no page-table lock held) a failed
    /// order first gets what `/sys/kernel/mm/transparent_hugepage/defrag`
    /// allows for the VMA (direct compaction, or waking kswapd and
    /// kcompactd: see `DefragMode::fault_compaction` and
    /// `MmCtx::alloc_after_compaction`); without, small orders allocated
    /// under the lock just fall back.
    #[inline(always)]
    fn alloc_anon_folio(
        &self,
        vma: &Vma,
        addr: u64,
        mut orders: u32,
        may_compact: bool,
    ) -> Option<FolioRef<'a>> {
        let ctx = self.ctx;
        let stats = &ctx.thp.stats;
        let pol = self.policy_for(vma);
        let numa = pol.is_some() || ctx.buddy.nodes().nr_nodes() > 1;
        // The common 4K case: no policy, one node, no larger order asked.
        if !numa && orders <= 1 {
            return ctx
                .buddy
                .alloc(0, AllocFlags::USER)
                .ok()
                .map(FolioRef::from_raw);
        }
        let alloc = |o: u32| self.alloc_placed(vma, addr, pol, numa, o);
        orders &= !1;
        while orders != 0 {
            let o = 31 - orders.leading_zeros();
            let mut got = alloc(o);
            if got.is_err() && may_compact {
                // Linux's `vma_thp_gfp_mask`: "madvised" is MADV_HUGEPAGE.
                let madvised = vma.flags.contains(crate::vma::VmFlags::HUGEPAGE);
                if let Some(req) = ctx.thp.config.defrag().fault_compaction(madvised) {
                    got = ctx.alloc_after_compaction(o, req);
                }
            }
            match got {
                Ok(f) => return Some(FolioRef::from_raw(f)),
                Err(_) => {
                    stats.inc(o, MthpStat::AnonFaultFallback);
                    if o == PMD_ORDER {
                        stats.count(VmEvent::ThpFaultFallback);
                    }
                }
            }
            orders &= !(1 << o);
        }
        alloc(0).ok().map(FolioRef::from_raw)
    }

    /// One folio of `order` for `addr` in `vma`, placed by the memory
    /// policy `pol` (the VMA's or the task's) or, with more than one node
    /// (`numa`) and no policy, on the local node with PMD-size folios
    /// allowed elsewhere (Linux's `vma_alloc_folio`).
    #[inline(always)]
    pub(super) fn alloc_placed(
        &self,
        vma: &Vma,
        addr: u64,
        pol: Option<Mempolicy>,
        numa: bool,
        order: u32,
    ) -> Result<Folio<'a>, AllocError> {
        if numa && (pol.is_some() || order >= PMD_ORDER) {
            self.alloc_policy(vma, addr, pol, order)
        } else {
            self.ctx.buddy.alloc(order, AllocFlags::USER)
        }
    }

    /// A copy-on-write destination of `order` for `addr`, placed as a
    /// fault's folio is (Linux's COW allocates with `vma_alloc_folio`).
    pub(super) fn alloc_cow(
        &self,
        vma: &Vma,
        addr: u64,
        order: u32,
    ) -> Result<Folio<'a>, AllocError> {
        let pol = self.policy_for(vma);
        let numa = pol.is_some() || self.ctx.buddy.nodes().nr_nodes() > 1;
        self.alloc_placed(vma, addr, pol, numa, order)
    }

    /// The locked part of a fault in `vma` (checked to allow `access`),
    /// with `pre` the folio allocated by an earlier [`Locked::NeedFolio`]
    /// (taken when installed; left, to be freed, when the range filled up
    /// meanwhile).
    pub(super) fn fault_locked(
        &self,
        vma: &Vma,
        pt: &mut PageTable<'a, A>,
        addr: u64,
        access: Access,
        pre: &mut Option<FolioRef<'a>>,
    ) -> Locked<'a> {
        let w = pt.lookup(addr);
        match w.entry {
            // The VMA allows the access (checked by the caller) but the
            // entry allows none: a NUMA hinting entry.
            Entry::Leaf(l) if !l.attrs.perms.accessible() => self.do_numa_page(vma, pt, addr),
            Entry::Leaf(l) if w.level == PMD_LEVEL => {
                Locked::Done(self.huge_pmd_fault(vma, pt, addr, l, access))
            }
            Entry::Leaf(l) if w.level == PTE_LEVEL => {
                Locked::Done(self.pte_fault(vma, pt, addr, l, access))
            }
            Entry::Absent if w.level >= PMD_LEVEL => {
                match self.pmd_anon_fault(vma, pt, addr, access, pre) {
                    Ok(Some(step)) => step,
                    Ok(None) => self.anon_fault_walked(vma, pt, addr, access, None, pre),
                    Err(e) => Locked::Done(Err(e)),
                }
            }
            Entry::Absent => self.anon_fault_walked(vma, pt, addr, access, Some(&w), pre),
            Entry::Swap(e) if w.level == PTE_LEVEL && e.is_swap() => Locked::Swap(e),
            Entry::Swap(e) if w.level == PTE_LEVEL && e.is_migration() => {
                match self.ctx.folio(e.offset) {
                    Some(f) => Locked::Migration(f.get_ref(), e),
                    None => {
                        debug_assert!(false, "migration entry of a free frame at {addr:#x}");
                        Locked::Done(Err(Fault::Sigbus))
                    }
                }
            }
            // No PUD leaves in user space; tables are descended by lookup.
            _ => {
                debug_assert!(false, "unexpected entry {:?} at {addr:#x}", w.entry);
                Locked::Done(Err(Fault::Segv))
            }
        }
    }

    /// A zeroed folio of one of `orders` for a large fault at `addr`
    /// (no page-table lock held): the one [`Prep`] holds ready if it fits,
    /// else a new one, zeroed here, or — `Ok(None)` — left in
    /// `prep.pending` for the caller to zero with the mmap lock dropped
    /// (the fault then returns `Ok` and is retried).
    fn large_anon_folio(
        &self,
        vma: &Vma,
        addr: u64,
        orders: u32,
        prep: &mut Prep<'a>,
    ) -> Result<Option<FolioRef<'a>>, Fault> {
        let id = (vma.start, vma.end, vma.flags);
        if let Some(p) = prep.ready.take()
            && p.vma == id
            && orders & (1 << p.folio.order()) != 0
            && p.base == align_down(addr, p.folio.size())
        {
            return Ok(Some(p.folio));
        }
        let f = self
            .alloc_anon_folio(vma, addr, orders, true)
            .ok_or(Fault::Oom)?;
        let base = align_down(addr, f.size());
        if prep.may_unlock && f.order() >= UNLOCKED_MMAP_MIN_ORDER {
            prep.pending = Some(Prepared {
                folio: f,
                base,
                vma: id,
            });
            return Ok(None);
        }
        self.zero_folio(*f, base, addr);
        Ok(Some(f))
    }

    /// Zero a new folio, the page holding `addr` last so it stays cache-hot
    /// for the access about to retry.
    pub(crate) fn zero_folio(&self, f: Folio<'a>, base: u64, addr: u64) {
        let mem = self.ctx.mem;
        let (pa, n) = (f.pa(), f.nr_pages());
        if n == 1 {
            mem.zero(pa, PAGE_SIZE);
            return;
        }
        let hot = (addr - base) / PAGE_SIZE;
        // At most three calls: the pages below and above the hot one, then it.
        if hot > 0 {
            mem.zero(pa, hot * PAGE_SIZE);
        }
        if hot + 1 < n {
            mem.zero(pa + (hot + 1) * PAGE_SIZE, (n - hot - 1) * PAGE_SIZE);
        }
        mem.zero(pa + hot * PAGE_SIZE, PAGE_SIZE);
    }

    /// Orders (bit mask) THP may use for a fault at `addr` in `vma`.
    pub(super) fn fault_orders(&self, vma: &Vma, addr: u64) -> u32 {
        // The private copies in a file mapping are order 0, as Linux 6.12
        // (`do_cow_fault`, `wp_page_copy`; no anonymous mTHP for file VMAs,
        // so no large swap-in or large COW there either).
        if vma.is_shmem() {
            return 0;
        }
        let allowed =
            self.ctx.thp.config.allowable_orders(self.thp_hints(vma)) & THP_ORDERS_ALL_ANON;
        if allowed == 0 {
            // Base pages only (every fault of a space without mTHP).
            return 0;
        }
        self.register_khugepaged();
        suitable_orders(allowed, vma.start, vma.end, addr)
    }

    /// A fault where no PTE table exists yet: map a PMD if the PMD order is
    /// allowed and fits.  `Ok(None)` to take the PTE path.
    fn pmd_anon_fault(
        &self,
        vma: &Vma,
        pt: &mut PageTable<'a, A>,
        addr: u64,
        access: Access,
        pre: &mut Option<FolioRef<'a>>,
    ) -> Result<Option<Locked<'a>>, Fault> {
        let orders = self.fault_orders(vma, addr);
        if orders & (1 << PMD_ORDER) == 0 {
            return Ok(None);
        }
        // A write reserves the block instead (`reserve.rs`).
        if access == Access::Write
            && pre.is_none()
            && ctx_reserves(self.ctx.thp.config.reserve_orders(), PMD_ORDER)
        {
            return Ok(None);
        }
        let ctx = self.ctx;
        let stats = &ctx.thp.stats;
        let base = align_down(addr, PMD_SIZE);
        if access != Access::Write && ctx.thp.config.use_zero_page() {
            let Some(hz) = ctx.get_huge_zero() else {
                stats.count(VmEvent::ThpFaultFallback);
                return Ok(None);
            };
            let dep = ctx.pt_alloc().alloc_pt().ok_or(Fault::Oom)?;
            if pt.set_pmd_leaf(base, hz, zero_attrs(vma), dep).is_err() {
                ctx.pt_alloc().free_pt(dep);
                return Err(Fault::Oom);
            }
            stats.count(VmEvent::FaultHugeZeroPage);
            return Ok(Some(Locked::Done(Ok(()))));
        }
        match pre.as_ref().map(|f| f.order()) {
            // Every lower order fits too: no PTE table, so nothing mapped.
            None => Ok(Some(Locked::NeedFolio(orders))),
            Some(PMD_ORDER) => {
                let f = pre.take().expect("matched");
                self.map_new_pmd_folio(vma, pt, base, f)?;
                Ok(Some(Locked::Done(Ok(()))))
            }
            // The PMD order fell back: the PTE path maps what was given.
            Some(_) => Ok(None),
        }
    }

    /// PMD-map the new (zeroed) order-9 folio `f` at `base`.
    fn map_new_pmd_folio(
        &self,
        vma: &Vma,
        pt: &mut PageTable<'a, A>,
        base: u64,
        f: FolioRef<'a>,
    ) -> Result<(), Fault> {
        let ctx = self.ctx;
        // The deposit is allocated up front, so a later split never fails.
        let dep = ctx.pt_alloc().alloc_pt().ok_or(Fault::Oom)?;
        if pt
            .set_pmd_leaf(base, f.pfn(), anon_attrs(vma), dep)
            .is_err()
        {
            ctx.pt_alloc().free_pt(dep);
            return Err(Fault::Oom);
        }
        self.account_new_pmd(vma, f, base);
        Ok(())
    }

    /// The rmap, RSS, mlock and counters of a new anonymous PMD-size folio
    /// just mapped by a PMD leaf.
    fn account_new_pmd(&self, vma: &Vma, f: FolioRef<'a>, base: u64) {
        let stats = &self.ctx.thp.stats;
        let f = f.into_raw();
        self.ctx.rmap_add_new(f, self.id, base, true);
        self.mlock_new_folio(vma, f);
        self.rss_add(f.nr_pages());
        stats.inc(PMD_ORDER, MthpStat::AnonFaultAlloc);
        stats.count(VmEvent::ThpFaultAlloc);
        stats.count(VmEvent::FaultAnonAlloc);
        stats.count(VmEvent::FaultPmd);
    }

    /// The PTE orders (bit mask) a write fault at `addr` in `vma` may use:
    /// those the policy allows, cut to the highest whose aligned block is
    /// entirely empty (every lower order's block lies inside it, so is
    /// empty too).  `walk`, if any, reached `addr`'s PTE table under the
    /// caller's lock hold.
    #[inline]
    fn empty_orders(
        &self,
        vma: &Vma,
        pt: &PageTable<'a, A>,
        walk: Option<&Walk>,
        addr: u64,
    ) -> u32 {
        let mut orders = self.fault_orders(vma, addr) & ((1 << PMD_ORDER) - 1);
        while orders != 0 {
            let o = 31 - orders.leading_zeros();
            let base = align_down(addr, PAGE_SIZE << o);
            let empty = match walk {
                Some(w) => pt.ptes_none_walked(w, addr, base, 1 << o),
                None => pt.ptes_none(base, 1 << o),
            };
            if empty {
                break;
            }
            orders &= !(1 << o);
        }
        orders
    }

    /// An empty PTE (Linux's `do_anonymous_page` with `alloc_anon_folio`),
    /// given the walk to `addr` done under this lock hold, if any (saves the
    /// second walk when installing), and the folio allocated for it, if any.
    fn anon_fault_walked(
        &self,
        vma: &Vma,
        pt: &mut PageTable<'a, A>,
        addr: u64,
        access: Access,
        walk: Option<&Walk>,
        pre: &mut Option<FolioRef<'a>>,
    ) -> Locked<'a> {
        let ctx = self.ctx;
        let stats = &ctx.thp.stats;
        let va = align_down(addr, PAGE_SIZE);
        if pre.is_none()
            && ctx.thp.config.reserve_orders() != 0
            && let Some(step) = self.reserve_fault(vma, pt, addr, access, walk)
        {
            return step;
        }
        if access != Access::Write {
            if pt
                .set_pte(va, ctx.zero_pfn(), zero_attrs(vma), None)
                .is_err()
            {
                return Locked::Done(Err(Fault::Oom));
            }
            stats.count(VmEvent::FaultZeroPage);
            stats.count(VmEvent::ZeroPageMap);
            return Locked::Done(Ok(()));
        }
        let f = match pre.take() {
            Some(f) => f,
            None => {
                let orders = self.empty_orders(vma, pt, walk, addr);
                if orders >> UNLOCKED_ZERO_MIN_ORDER != 0 {
                    return Locked::NeedFolio(orders);
                }
                // Small: zeroed under the lock, which costs less than
                // dropping it and walking again.
                let Some(f) = self.alloc_anon_folio(vma, addr, orders, false) else {
                    return Locked::Done(Err(Fault::Oom));
                };
                self.zero_folio(*f, align_down(addr, f.size()), addr);
                return self.install_anon(vma, pt, addr, walk, f);
            }
        };
        // A PMD-order folio whose PMD got a PTE table meanwhile: retry
        // (the next fault picks the orders anew).
        if f.order() >= PMD_ORDER {
            *pre = Some(f);
            return Locked::Done(Ok(()));
        }
        let base = align_down(addr, f.size());
        let n = f.nr_pages() as usize;
        // Another thread of this space may have mapped part of the block
        // while the lock was dropped: then its mapping serves the access.
        if !pt.ptes_none(base, n) {
            *pre = Some(f);
            return Locked::Done(Ok(()));
        }
        self.install_anon(vma, pt, addr, walk, f)
    }

    /// Map the new, zeroed folio `f` over its empty block around `addr`.
    /// `walk`, if any, was done under this lock hold (`fault_locked`).
    fn install_anon(
        &self,
        vma: &Vma,
        pt: &mut PageTable<'a, A>,
        addr: u64,
        walk: Option<&Walk>,
        f: FolioRef<'a>,
    ) -> Locked<'a> {
        let base = align_down(addr, f.size());
        let n = f.nr_pages() as usize;
        let set = match walk {
            Some(w) => pt.set_ptes_walked(w, addr, base, f.pfn(), n, anon_attrs(vma)),
            None => pt.set_ptes(base, f.pfn(), n, anon_attrs(vma)),
        };
        if set.is_err() {
            return Locked::Done(Err(Fault::Oom));
        }
        self.mlock_new_folio(vma, *f);
        self.account_new_anon(f, base);
        Locked::Done(Ok(()))
    }

    /// A fault on a present (or PROT_NONE) 4 KiB entry.
    pub(super) fn pte_fault(
        &self,
        vma: &Vma,
        pt: &mut PageTable<'a, A>,
        addr: u64,
        l: Leaf,
        access: Access,
    ) -> Result<(), Fault> {
        let va = align_down(addr, PAGE_SIZE);
        if !l.attrs.perms.accessible() {
            // A NUMA hinting entry: `fault_locked` handles those before
            // getting here (this is reached from a PMD split).
            self.numa_rebuild(vma, pt, va);
            return Ok(());
        }
        if access == Access::Write && !l.attrs.perms.write {
            return self.do_wp_page(vma, pt, va, l);
        }
        // Access flag (arm64 AF = 0) or a write to a writable clean entry
        // (arm64 dirty tracking): set the bits; anything else is spurious.
        let want = touched(l.attrs, access);
        if want != l.attrs {
            let mut g = pt.gather();
            let r = pt.update_pte(va, want, &mut g);
            g.finish();
            debug_assert!(r.is_ok());
        }
        Ok(())
    }

    /// Write to a read-only private page (Linux's `do_wp_page`).
    fn do_wp_page(
        &self,
        vma: &Vma,
        pt: &mut PageTable<'a, A>,
        va: u64,
        l: Leaf,
    ) -> Result<(), Fault> {
        let ctx = self.ctx;
        if ctx.is_zero_pfn(l.pfn) {
            return self.wp_copy(vma, pt, va, None);
        }
        let Some(f) = ctx.folio(l.pfn) else {
            debug_assert!(false, "PTE at {va:#x} maps pfn {:#x}, no folio", l.pfn);
            return Err(Fault::Segv);
        };
        let idx = l.pfn - f.pfn();
        // A page-cache page of a private file mapping (`shmem.rs`): never
        // reused, copied into an order-0 anonymous folio (Linux's
        // `wp_page_copy` of a file page; no large copies of file folios).
        if f.is_shmem() {
            return self.wp_copy(vma, pt, va, Some((f, idx)));
        }
        let page = f.page(idx);
        if page.is_anon_exclusive() || self.can_reuse(f) {
            if !page.is_anon_exclusive() {
                page.set_anon_exclusive();
                if f.is_large() {
                    self.reuse_large(vma, pt, f, va - idx * PAGE_SIZE);
                }
            }
            // Take ownership if another space had it; an owner address
            // of our own stays (after mremap it may point at the part of
            // the folio that is not around this page).
            let start = va - idx * PAGE_SIZE;
            if f.anon_owner().is_none_or(|(id, _)| id != self.id) {
                f.set_anon_owner(self.id, start >> crate::addr::PAGE_SHIFT);
            }
            let mut attrs = l.attrs;
            attrs.perms.write = true;
            attrs.young = true;
            attrs.dirty = true;
            let mut g = pt.gather();
            let r = pt.update_pte(va, attrs, &mut g);
            g.finish();
            debug_assert!(r.is_ok());
            ctx.thp.stats.count(VmEvent::FaultCowReuse);
            return Ok(());
        }
        if f.is_large() && ctx.thp.config.large_cow() && self.wp_copy_large(vma, pt, va, f, idx) {
            return Ok(());
        }
        self.wp_copy(vma, pt, va, Some((f, idx)))
    }

    /// Large copy-on-write (`large_cow`): a write at `va` to page `idx` of
    /// the shared large folio `f` copies the largest block the policy
    /// allows (below the PMD order: a PMD-mapped folio is copied whole by
    /// [`Self::wp_copy_pmd`]) whose aligned block lies inside the VMA and
    /// is mapped in place by `f` wholly in this space, falling back order
    /// by order (`cow_fallback`) when an allocation fails.  The block's
    /// entries are replaced in one break-before-make by one `set_ptes` of
    /// the copy (contpte-folded where the format has it), so the space
    /// keeps its translation reach where Linux decays to 4K.  False when
    /// no large order applies: the caller copies 4K.
    fn wp_copy_large(
        &self,
        vma: &Vma,
        pt: &mut PageTable<'a, A>,
        va: u64,
        f: Folio<'a>,
        idx: u64,
    ) -> bool {
        let ctx = self.ctx;
        let stats = &ctx.thp.stats;
        let start = va - idx * PAGE_SIZE;
        let mut orders =
            self.fault_orders(vma, va) & ((1u32 << f.order()) | ((1u32 << f.order()) - 1));
        orders &= !1 & !(1u32 << PMD_ORDER);
        while orders != 0 {
            let o = 31 - orders.leading_zeros();
            orders &= !(1u32 << o);
            let size = PAGE_SIZE << o;
            let block = align_down(va, size);
            let n = 1u64 << o;
            let in_place = block >= start
                && block + size <= start + f.size()
                && (0..n).all(|i| {
                    pt.lookup(block + i * PAGE_SIZE)
                        .entry
                        .leaf()
                        .is_some_and(|l| l.pfn == f.pfn() + (block - start) / PAGE_SIZE + i)
                });
            if !in_place {
                continue;
            }
            let Ok(new) = self.alloc_cow(vma, block, o) else {
                stats.inc(o, MthpStat::CowFallback);
                continue;
            };
            let new = FolioRef::from_raw(new);
            let first = (block - start) / PAGE_SIZE;
            ctx.mem.copy(new.pa(), f.page(first).pa(), size);
            // Break before make for the whole block at once.
            let mut g = pt.gather();
            let old = pt.get_and_clear_ptes(block, n as usize, &mut g);
            g.finish();
            let mut attrs = anon_attrs(vma);
            attrs.young = true;
            attrs.dirty = true;
            let _ = old;
            pt.set_ptes(block, new.pfn(), n as usize, attrs)
                .expect("the entries were just cleared in an existing table");
            let new = new.into_raw();
            ctx.rmap_add_new(new, self.id, block, false);
            self.mlock_new_folio(vma, new);
            self.munlock_vma_folio(vma, f);
            ctx.rmap_remove_ptes(f, self.id, first, n);
            f.put_many(n as u32);
            stats.inc(o, MthpStat::CowAlloc);
            stats.count(VmEvent::FaultCowCopy);
            return true;
        }
        false
    }

    /// Large copy-on-write of a shared PMD-mapped folio `f` at `base`
    /// (`large_cow`, the PMD order allowed and fitting): the whole folio is
    /// copied into a new PMD folio mapped by a PMD leaf, as the huge zero
    /// PMD's `huge_zero_wp=alloc`.  False (after counting `cow_fallback`)
    /// when the copy cannot be allocated: the caller splits the PMD and
    /// the PTE path tries the lower orders.
    fn wp_copy_pmd(
        &self,
        vma: &Vma,
        pt: &mut PageTable<'a, A>,
        base: u64,
        f: Folio<'a>,
    ) -> Result<bool, Fault> {
        let ctx = self.ctx;
        let stats = &ctx.thp.stats;
        if !ctx.thp.config.large_cow() || self.fault_orders(vma, base) & (1 << PMD_ORDER) == 0 {
            return Ok(false);
        }
        let Ok(new) = self.alloc_cow(vma, base, PMD_ORDER) else {
            stats.inc(PMD_ORDER, MthpStat::CowFallback);
            return Ok(false);
        };
        let new = FolioRef::from_raw(new);
        let Some(dep) = ctx.pt_alloc().alloc_pt() else {
            return Ok(false);
        };
        ctx.mem.copy(new.pa(), f.pa(), PMD_SIZE);
        let mut g = pt.gather();
        pt.zap_pmd(base, &mut g)
            .expect("the PMD leaf is there under the lock");
        g.finish();
        self.munlock_vma_folio(vma, f);
        ctx.rmap_remove_pmd(f, self.id);
        f.put();
        let mut attrs = anon_attrs(vma);
        attrs.young = true;
        attrs.dirty = true;
        pt.set_pmd_leaf(base, new.pfn(), attrs, dep)
            .expect("the PMD was just cleared");
        let new = new.into_raw();
        ctx.rmap_add_new(new, self.id, base, true);
        self.mlock_new_folio(vma, new);
        stats.inc(PMD_ORDER, MthpStat::CowAlloc);
        stats.count(VmEvent::FaultCowCopy);
        Ok(true)
    }

    /// COW reuse of a whole large folio `f` exclusive to this space (its
    /// owner slots say so), mapped in place from `start`: every page it
    /// maps inside `vma` becomes anon-exclusive and writable, in one
    /// protection-change batch (one clear, one flush, one `set_ptes` per
    /// run, so contiguous blocks come back folded).  Linux 6.15 reuses the
    /// folio but makes only the faulting PTE writable; the other pages
    /// would each take a fault to learn what is already known.
    fn reuse_large(&self, vma: &Vma, pt: &mut PageTable<'a, A>, f: Folio<'a>, start: u64) {
        let lo = start.max(vma.start);
        let hi = start.saturating_add(f.size()).min(vma.end);
        let frames = f.pfn()..f.pfn() + f.nr_pages();
        for va in (lo..hi).step_by(PAGE_SIZE as usize) {
            if let Some(m) = pt.lookup(va).entry.leaf()
                && m.pfn == f.pfn() + (va - start) / PAGE_SIZE
            {
                f.page(m.pfn - f.pfn()).set_anon_exclusive();
            }
        }
        let flags = vma.flags;
        self.change_prot_range(pt, lo, hi, |l, excl| {
            let attrs = self.protected_attrs(l, flags, excl);
            (frames.contains(&l.pfn) && excl && attrs.fold_key() != l.attrs.fold_key())
                .then_some(attrs)
        });
    }

    /// Whether folio `f`, mapped in this space, is exclusive to this space
    /// (Linux 6.15's `wp_can_reuse_anon_folio`).
    fn can_reuse(&self, f: Folio<'a>) -> bool {
        if !f.is_large() {
            return f.refcount() == 1 && f.large_mapcount() == 1;
        }
        let maps = f.large_mapcount();
        // Linux: with a single mapping left, copying lets the large folio be
        // freed rather than keeping it alive for one page.
        if maps <= 1 || maps as i64 != f.refcount() as i64 {
            return false;
        }
        // Exact: the owner slots say whether this space holds every mapping.
        f.mapped_exclusively_by(self.id)
    }

    /// Copy one page (or zero-fill, from a zero page) into a new order-0
    /// folio and map it writable in place of the old entry.
    fn wp_copy(
        &self,
        vma: &Vma,
        pt: &mut PageTable<'a, A>,
        va: u64,
        src: Option<(Folio<'a>, u64)>,
    ) -> Result<(), Fault> {
        let ctx = self.ctx;
        let new = FolioRef::from_raw(self.alloc_cow(vma, va, 0).map_err(|_| Fault::Oom)?);
        match src {
            Some((f, idx)) => ctx.mem.copy(new.pa(), f.page(idx).pa(), PAGE_SIZE),
            None => ctx.mem.zero(new.pa(), PAGE_SIZE),
        }
        // Break before make: the old translation is gone from every TLB
        // before the new one is written.
        let mut g = pt.gather();
        pt.get_and_clear_ptes(va, 1, &mut g);
        g.finish();
        pt.set_pte(va, new.pfn(), anon_attrs(vma), None)
            .expect("the PTE table exists: an entry was just cleared in it");
        let new = new.into_raw();
        ctx.rmap_add_new(new, self.id, va, false);
        self.mlock_new_folio(vma, new);
        match src {
            Some((f, idx)) => {
                self.munlock_vma_folio(vma, f);
                ctx.rmap_remove_ptes(f, self.id, idx, 1);
                if f.is_shmem() {
                    // A file page became a private anonymous copy.
                    self.rss_sub_folio(f, 1);
                    self.rss_add(1);
                }
                f.put();
                ctx.thp.stats.count(VmEvent::FaultCowCopy);
            }
            None => {
                self.rss_add(1);
                ctx.thp.stats.inc(0, MthpStat::AnonFaultAlloc);
                ctx.thp.stats.count(VmEvent::FaultAnonAlloc);
            }
        }
        Ok(())
    }

    /// A fault on a PMD leaf.
    fn huge_pmd_fault(
        &self,
        vma: &Vma,
        pt: &mut PageTable<'a, A>,
        addr: u64,
        l: Leaf,
        access: Access,
    ) -> Result<(), Fault> {
        let ctx = self.ctx;
        let base = align_down(addr, PMD_SIZE);
        if access == Access::Write && !l.attrs.perms.write {
            if ctx.is_zero_pfn(l.pfn) {
                return self.huge_zero_wp(vma, pt, base, addr);
            }
            let f = ctx.folio(l.pfn).ok_or(Fault::Segv)?;
            let exclusive =
                f.page(0).is_anon_exclusive() || (f.refcount() == 1 && f.large_mapcount() == 1);
            if exclusive {
                for p in f.pages() {
                    p.set_anon_exclusive();
                }
                f.set_anon_owner(self.id, base >> crate::addr::PAGE_SHIFT);
                let mut attrs = l.attrs;
                attrs.perms.write = true;
                attrs.young = true;
                attrs.dirty = true;
                let mut g = pt.gather();
                let r = pt.update_pmd(base, attrs, &mut g);
                g.finish();
                debug_assert!(r.is_ok());
                ctx.thp.stats.count(VmEvent::FaultCowReuse);
                return Ok(());
            }
            if self.wp_copy_pmd(vma, pt, base, f)? {
                return Ok(());
            }
            self.split_pmd_locked(pt, base);
            let w = pt.lookup(addr);
            let l = w.entry.leaf().expect("split PMD maps every page");
            return self.pte_fault(vma, pt, addr, l, access);
        }
        let want = touched(l.attrs, access);
        if want != l.attrs {
            let mut g = pt.gather();
            let r = pt.update_pmd(base, want, &mut g);
            g.finish();
            debug_assert!(r.is_ok());
        }
        Ok(())
    }

    /// A write to the huge zero PMD: a new PMD folio if allowed and
    /// available, else split to PTEs and replace the one page.
    fn huge_zero_wp(
        &self,
        vma: &Vma,
        pt: &mut PageTable<'a, A>,
        base: u64,
        addr: u64,
    ) -> Result<(), Fault> {
        let ctx = self.ctx;
        if ctx.thp.config.huge_zero_wp_alloc()
            && self.fault_orders(vma, addr) & (1 << PMD_ORDER) != 0
        {
            let mut g = pt.gather();
            let old = pt.zap_pmd(base, &mut g);
            g.finish();
            debug_assert!(matches!(old, Ok(Some(_))));
            // Rare (`huge_zero_wp=alloc` only): allocated and zeroed under
            // the lock, which saves re-checking the PMD after dropping it.
            if let Ok(f) = ctx.buddy.alloc(PMD_ORDER, AllocFlags::USER) {
                let f = FolioRef::from_raw(f);
                self.zero_folio(*f, base, addr);
                self.map_new_pmd_folio(vma, pt, base, f)?;
                return Ok(());
            }
            ctx.thp.stats.inc(PMD_ORDER, MthpStat::AnonFaultFallback);
            ctx.thp.stats.count(VmEvent::ThpFaultFallback);
            // Put the huge zero page back and take the PTE route.
            let hz = ctx.huge_zero_pfn().expect("mapped above");
            let dep = ctx.pt_alloc().alloc_pt().ok_or(Fault::Oom)?;
            pt.set_pmd_leaf(base, hz, zero_attrs(vma), dep)
                .expect("the PMD was just cleared");
        }
        self.split_pmd_locked(pt, base);
        let w = pt.lookup(addr);
        let l = w.entry.leaf().expect("split PMD maps every page");
        self.do_wp_page(vma, pt, align_down(addr, PAGE_SIZE), l)
    }

    /// Split the PMD leaf at `base` into 512 PTEs (Linux's
    /// `__split_huge_pmd`): rmap first (references before mapcounts), then
    /// the table swap, which never allocates.
    pub(crate) fn split_pmd_locked(&self, pt: &mut PageTable<'a, A>, base: u64) {
        let ctx = self.ctx;
        let Some(l) = pt.lookup(base).entry.leaf() else {
            return;
        };
        if ctx.is_zero_pfn(l.pfn) {
            ctx.thp.stats.count_n(VmEvent::ZeroPageMap, 512);
        } else if let Some(f) = ctx.folio(l.pfn) {
            ctx.rmap_split_pmd(f, self.id);
        }
        pt.split_pmd(base)
            .expect("every PMD leaf has a deposited table");
        ctx.thp.stats.count(VmEvent::ThpSplitPmd);
    }

    /// Split a PMD leaf that `addr` cuts (not 2 MiB aligned), if any.
    pub(crate) fn split_pmd_at(&self, pt: &mut PageTable<'a, A>, addr: u64) {
        if addr.is_multiple_of(PMD_SIZE) {
            return;
        }
        let w = pt.lookup(addr);
        if w.level == PMD_LEVEL && w.entry.leaf().is_some() {
            self.split_pmd_locked(pt, align_down(addr, PMD_SIZE));
        }
    }

    /// As [`Self::split_pmd_at`], but only where a VMA boundary now lies
    /// (after madvise changed flags on part of a VMA).
    pub(crate) fn split_pmd_at_boundary(
        &self,
        vmas: &VmaSet,
        pt: &mut PageTable<'a, A>,
        addr: u64,
    ) {
        let boundary = vmas.find(addr).is_some_and(|v| v.start == addr)
            || addr
                .checked_sub(1)
                .and_then(|a| vmas.find(a))
                .is_some_and(|v| v.end == addr);
        if boundary {
            self.split_pmd_at(pt, addr);
        }
    }
}

/// The attributes an entry needs after `access` went through it: young,
/// and dirty for a write (what the hardware sets itself on x86 and the
/// fault path sets on arm64 without hardware access/dirty management).
#[inline]
fn touched(mut attrs: Attrs, access: Access) -> Attrs {
    attrs.young = true;
    if access == Access::Write {
        attrs.dirty = true;
    }
    attrs
}
