//! A software MMU: a table walker that reads entries through the format's
//! [`PagingArch::decode`] (so it follows the real bit layouts) and a TLB
//! model that caches what the walker returns until it is flushed.
//!
//! Hardware behaviour modelled:
//! * x86-64 (`HW_YOUNG`/`HW_DIRTY`): a walk sets A, and D on a write, with a
//!   compare-exchange in the entry; a write through a cached entry whose D
//!   was clear walks again to set D.
//! * arm64 without FEAT_HAFDBS: an access through an entry with AF = 0 is
//!   an access-flag fault; a write through a writable-but-clean entry is a
//!   permission fault (the entry is read-only in hardware).
//! * A contiguous block is cached as one 64 KiB TLB entry.  Two cached
//!   entries covering one address is a TLB conflict (what breaking
//!   break-before-make causes); the model reports it as a fault.
//! * A permission fault from a cached entry drops that entry and walks
//!   again before faulting (x86 does this; the arm64 fault path does the
//!   equivalent local flush for spurious faults).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use spin::Mutex;

use crate::addr::PAGE_SIZE;
use crate::cpu::{CpuSet, FlushTargets};
use crate::paging::{
    Entry, Leaf, PagingArch, Perms, ROOT_LEVEL, Space, TlbOps, level_index, level_size,
};
use crate::physmem::phys::PhysMem;

/// Kind of memory access (the fault path's type).
pub use crate::aspace::Access;

/// Why an access faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// No valid translation (absent entry or `PROT_NONE` leaf) at `level`.
    NotMapped { level: u8 },
    /// The leaf forbids this access (or it is a write to a clean entry on
    /// a format without hardware dirty tracking).
    Permission { level: u8 },
    /// arm64: the leaf's AF is clear.
    AccessFlag { level: u8 },
    /// Two TLB entries cover the address.
    TlbConflict,
}

/// A successful walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub pa: u64,
    /// The leaf as it was when the access was checked (after the MMU's own
    /// A/D update on x86).
    pub leaf: Leaf,
    /// Size of the TLB entry this translation forms: the leaf size, or the
    /// whole block for a contiguous PTE.
    pub size: u64,
    /// Physical address of the entry (the slot).
    pub slot: u64,
}

fn check<A: PagingArch>(leaf: &Leaf, access: Access, user: bool) -> Result<(), Fault> {
    let level = leaf.level;
    let p = leaf.attrs.perms;
    if !p.accessible() {
        return Err(Fault::NotMapped { level });
    }
    if !A::HW_YOUNG && !leaf.attrs.young {
        return Err(Fault::AccessFlag { level });
    }
    if user && !p.user {
        return Err(Fault::Permission { level });
    }
    let ok = match access {
        Access::Read => p.read,
        Access::Write => p.write && (A::HW_DIRTY || leaf.attrs.dirty),
        // Kernel execution of user pages is forbidden (x86 SMEP, arm64 PXN).
        Access::Exec => p.exec && (user || !p.user),
    };
    if ok {
        Ok(())
    } else {
        Err(Fault::Permission { level })
    }
}

/// Walk `root` for `va` and check `access`.  With `update` set, behave like
/// the hardware walker of a format with hardware A/D (set them in the
/// entry); without it the walk has no side effects (for checkers).
pub fn translate<A: PagingArch>(
    mem: &dyn PhysMem,
    root: u64,
    va: u64,
    access: Access,
    user: bool,
    update: bool,
) -> Result<Translation, Fault> {
    let (slot, mut leaf) = walk_leaf::<A>(mem, root, va)?;
    let level = leaf.level;
    if leaf.attrs.perms.accessible() && update && (A::HW_YOUNG || A::HW_DIRTY) {
        // Check rights first: the MMU only sets A/D for an access it allows.
        let mut hw = leaf;
        hw.attrs.young = true;
        hw.attrs.dirty = true;
        check::<A>(&hw, access, user)?;
        loop {
            let raw = mem.load(slot);
            let Entry::Leaf(cur) = A::decode(raw, level) else {
                return Err(Fault::NotMapped { level });
            };
            let mut new = cur;
            new.attrs.young |= A::HW_YOUNG;
            new.attrs.dirty |= A::HW_DIRTY && access == Access::Write;
            if new == cur || mem.cmpxchg(slot, raw, A::encode(Entry::Leaf(new), level)) == raw {
                leaf = new;
                break;
            }
        }
    }
    check::<A>(&leaf, access, user)?;
    let size = if leaf.cont {
        level_size(level) * A::CONT_PTES as u64
    } else {
        level_size(level)
    };
    let pa = (leaf.pfn << 12) + (va & (level_size(level) - 1));
    Ok(Translation {
        pa,
        leaf,
        size,
        slot,
    })
}

/// The leaf mapping `va` and its slot, without any permission check.
pub fn walk_leaf<A: PagingArch>(
    mem: &dyn PhysMem,
    root: u64,
    va: u64,
) -> Result<(u64, Leaf), Fault> {
    let mut table = root;
    let mut level = ROOT_LEVEL;
    loop {
        let slot = table + 8 * level_index(va, level) as u64;
        match A::decode(mem.load(slot), level) {
            Entry::Table { pa } if level > 0 => {
                table = pa;
                level -= 1;
            }
            Entry::Leaf(l) => return Ok((slot, l)),
            _ => return Err(Fault::NotMapped { level }),
        }
    }
}

/// One recorded flush.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    Range {
        space: Space,
        start: u64,
        end: u64,
        stride: u64,
    },
    All {
        space: Space,
    },
}

/// A cached translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlbEntry {
    pub space: Space,
    pub va: u64,
    pub size: u64,
    pub pa: u64,
    pub perms: Perms,
    pub dirty: bool,
    pub global: bool,
}

impl TlbEntry {
    fn covers(&self, space: Space, va: u64) -> bool {
        (self.global || self.space == space) && va >= self.va && va - self.va < self.size
    }
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.va < end && start < self.va + self.size
    }
}

#[derive(Default)]
struct TlbState {
    entries: Vec<TlbEntry>,
    log: Vec<Flush>,
    /// The CPU set each logged flush was sent to, in the same order.
    targets: Vec<CpuSet>,
    conflicts: usize,
    syncs: usize,
}

/// The TLB model; also the host's [`TlbOps`], so every flush the page-table
/// code issues is both recorded and applied to the cached entries.
#[derive(Default)]
pub struct EmuTlb {
    st: Mutex<TlbState>,
}

impl EmuTlb {
    pub fn new() -> Self {
        Self::default()
    }

    /// Perform an access as the CPU would: TLB first, walk on a miss (and
    /// cache the result).  Returns the physical address.
    pub fn access<A: PagingArch>(
        &self,
        mem: &dyn PhysMem,
        root: u64,
        space: Space,
        va: u64,
        access: Access,
        user: bool,
    ) -> Result<u64, Fault> {
        {
            let mut st = self.st.lock();
            let hits: Vec<usize> = st
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.covers(space, va))
                .map(|(i, _)| i)
                .collect();
            if hits.len() > 1 {
                st.conflicts += 1;
                return Err(Fault::TlbConflict);
            }
            if let Some(&i) = hits.first() {
                let e = st.entries[i];
                let leaf_like = Leaf {
                    pfn: 0,
                    level: 0,
                    attrs: crate::paging::Attrs {
                        perms: e.perms,
                        young: true,
                        dirty: e.dirty,
                        ..Default::default()
                    },
                    cont: false,
                };
                let needs_d = A::HW_DIRTY && access == Access::Write && !e.dirty;
                if check::<A>(&leaf_like, access, user).is_ok() && !needs_d {
                    return Ok(e.pa + (va - e.va));
                }
                // Spurious-fault retry / D-bit update: drop and walk.
                st.entries.swap_remove(i);
            }
        }
        let t = translate::<A>(mem, root, va, access, user, true)?;
        let base = va & !(t.size - 1);
        let e = TlbEntry {
            space,
            va: base,
            size: t.size,
            pa: t.pa - (va - base),
            perms: t.leaf.attrs.perms,
            dirty: t.leaf.attrs.dirty,
            global: t.leaf.attrs.global,
        };
        self.st.lock().entries.push(e);
        Ok(t.pa)
    }

    /// Every flush since the last [`EmuTlb::take_log`].
    pub fn take_log(&self) -> Vec<Flush> {
        let mut st = self.st.lock();
        st.targets.clear();
        core::mem::take(&mut st.log)
    }
    /// The CPU sets the flushes since the last `take_log` were sent to.
    pub fn targets(&self) -> Vec<CpuSet> {
        self.st.lock().targets.clone()
    }
    /// Number of flushes since the last `take_log`.
    pub fn flush_count(&self) -> usize {
        self.st.lock().log.len()
    }
    /// Cached entries.
    pub fn entries(&self) -> Vec<TlbEntry> {
        self.st.lock().entries.clone()
    }
    /// TLB conflicts seen by `access`.
    pub fn conflicts(&self) -> usize {
        self.st.lock().conflicts
    }
    /// Calls to `sync_tables`.
    pub fn syncs(&self) -> usize {
        self.st.lock().syncs
    }
    /// Drop all cached entries without logging (a context switch in a test).
    pub fn reset(&self) {
        self.st.lock().entries.clear();
    }

    /// Check every cached entry of `space` against the tables at `root`:
    /// the current translation must map the same physical address with the
    /// same entry size, be young, and allow at least what the cached entry
    /// allows (and, where the MMU tracks dirty itself, not be clean while
    /// the cache says dirty).  A failure means a flush was missed.
    pub fn check_coherent<A: PagingArch>(
        &self,
        mem: &dyn PhysMem,
        root: u64,
        space: Space,
    ) -> Result<(), String> {
        let entries = self.entries();
        for e in entries.iter().filter(|e| e.space == space) {
            let step = if e.size > level_size(1) {
                level_size(1)
            } else {
                PAGE_SIZE
            };
            let mut off = 0;
            while off < e.size {
                let va = e.va + off;
                let stale = |why: &str| Err(format!("stale TLB entry {e:x?} at va {va:#x}: {why}"));
                let (_, leaf) = match walk_leaf::<A>(mem, root, va) {
                    Ok(x) => x,
                    Err(_) => return stale("no longer mapped"),
                };
                let size = if leaf.cont {
                    level_size(leaf.level) * A::CONT_PTES as u64
                } else {
                    level_size(leaf.level)
                };
                let pa = (leaf.pfn << 12) + (va & (level_size(leaf.level) - 1));
                let p = leaf.attrs.perms;
                let hw_write = p.write && (A::HW_DIRTY || leaf.attrs.dirty);
                if pa != e.pa + off {
                    return stale(&format!("now maps pa {pa:#x}"));
                }
                if size != e.size {
                    return stale(&format!("entry size is now {size:#x}"));
                }
                if !p.accessible() {
                    return stale("now PROT_NONE");
                }
                // What the cached entry lets the hardware do: on formats
                // without hardware dirty tracking a writable-but-clean
                // entry is read-only to the MMU (arm64 AP[2]), and caching
                // it grants no write.
                let cached_write = e.perms.write && (A::HW_DIRTY || e.dirty);
                if (cached_write && !hw_write)
                    || (e.perms.exec && !p.exec)
                    || (e.perms.user && !p.user)
                {
                    return stale(&format!("rights reduced to {p:?}"));
                }
                // Where the MMU sets young itself (x86), reclaim clears it
                // without a flush, as Linux: an access through the cached
                // entry goes unrecorded until it is evicted, which aging
                // tolerates.  Without hardware young it would never be
                // seen, so there it is a bug.
                if !leaf.attrs.young && !A::HW_YOUNG {
                    return stale("entry is old but cached (an access would go unrecorded)");
                }
                if A::HW_DIRTY && e.dirty && !leaf.attrs.dirty {
                    return stale("entry is clean but cached dirty (a write would go unrecorded)");
                }
                off += step;
            }
        }
        Ok(())
    }
}

impl TlbOps for EmuTlb {
    fn flush_range(&self, space: Space, to: FlushTargets, start: u64, end: u64, stride: u64) {
        let mut st = self.st.lock();
        st.targets.push(to.cpus);
        st.log.push(Flush::Range {
            space,
            start,
            end,
            stride,
        });
        // Kernel (global) invalidations hit every ASID, as TLBI VAAE1IS and
        // invlpg of a global page do.
        st.entries.retain(|e| {
            !((space == Space::Kernel || e.space == space || e.global) && e.overlaps(start, end))
        });
    }
    fn flush_all(&self, space: Space, to: FlushTargets) {
        let mut st = self.st.lock();
        st.targets.push(to.cpus);
        st.log.push(Flush::All { space });
        st.entries
            .retain(|e| !(space == Space::Kernel || (e.space == space && !e.global)));
    }
    fn sync_tables(&self) {
        self.st.lock().syncs += 1;
    }
}
