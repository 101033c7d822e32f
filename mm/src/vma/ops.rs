//! `mmap`, `munmap`, `mprotect`, `madvise` and `mremap` on a [`VmaSet`],
//! with Linux's argument checks, errno values and order of checks.
//!
//! Each function changes only the VMA set and returns what the caller must
//! do to page tables.  Where Linux applies an operation partially and then
//! reports an error (`mprotect` and `madvise` across a hole), the outcome
//! carries both the work done and the final result.
//!
//! Deliberate differences from Linux (the only files are shmem objects):
//! * `MAP_SHARED` anonymous mappings need a shmem object, which the
//!   address space creates (`Mm::mmap`); here they go through
//!   [`VmaSet::mmap_shmem`] and plain [`VmaSet::mmap`] refuses them
//!   (EINVAL), as it does `MAP_DROPPABLE` (Linux supports it);
//! * a non-anonymous mapping fails with EBADF for a negative fd (as Linux)
//!   and ENODEV otherwise when it is not a shmem object's (memfd, tmpfs
//!   file: [`VmaSet::mmap_shmem`], shared or private);
//! * `MAP_HUGETLB` fails with ENOMEM (as Linux with no hugetlb pages);
//! * `MADV_MERGEABLE`/`UNMERGEABLE` (KSM), `MADV_GUARD_*` and
//!   `MADV_HWPOISON`/`SOFT_OFFLINE` are EINVAL, as on a Linux built without
//!   those features;
//! * no `RLIMIT_AS` and no overcommit refusal (`RLIMIT_MEMLOCK` is
//!   applied: see [`super::mlock`]).

use alloc::vec::Vec;
use core::ops::Range;

use super::{VmFlags, Vma, VmaSet};
use crate::abi::errno::Errno;
use crate::abi::uapi::*;
use crate::addr::{PAGE_SHIFT, PAGE_SIZE, align_up};

/// Linux's `PAGE_ALIGN` on an unsigned long: wraps to 0 on overflow.
fn page_align(len: u64) -> u64 {
    align_up(len, PAGE_SIZE).unwrap_or(0)
}

/// What a successful `mmap` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MmapOutcome {
    /// The mapping's address (the syscall's return value).
    pub addr: u64,
    /// Its page-aligned length.
    pub len: u64,
    /// The caller should prefault the range (`MAP_POPULATE` without
    /// `MAP_NONBLOCK`, or `MAP_LOCKED`); a failure there is not reported.
    pub populate: bool,
    /// Ranges of older mappings replaced by `MAP_FIXED`: zap their pages.
    pub unmapped: Vec<Range<u64>>,
}

/// What `mprotect` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MprotectOutcome {
    /// Ranges whose flags changed and their new flags, in address order:
    /// change the PTEs (unfold/split as needed) before returning.
    pub changed: Vec<(Range<u64>, VmFlags)>,
    /// The syscall's result, to return after applying `changed`.
    pub result: Result<(), Errno>,
}

impl MprotectOutcome {
    fn err(e: Errno) -> Self {
        MprotectOutcome {
            changed: Vec::new(),
            result: Err(e),
        }
    }
}

/// What the caller must do for an `madvise`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MadviseAction {
    /// Only VMA flags changed; nothing to do to pages.
    Flags,
    /// `MADV_HUGEPAGE`: flags changed; register the mm with khugepaged.
    Hugepage,
    /// `MADV_DONTNEED`/`MADV_DONTNEED_LOCKED`: zap the ranges (private
    /// anonymous memory then reads back as zeroes).
    Zap,
    /// `MADV_FREE`: the pages may be freed lazily (zapping is a valid
    /// implementation).
    Free,
    /// `MADV_WILLNEED`: a hint; nothing required.
    WillNeed,
    /// `MADV_COLD`: a hint; nothing required.
    Cold,
    /// `MADV_PAGEOUT`: a hint; nothing required without swap.
    Pageout,
    /// `MADV_POPULATE_READ`: fault the ranges in readable; a fault that
    /// fails makes the syscall return EFAULT.
    PopulateRead,
    /// `MADV_POPULATE_WRITE`: fault the ranges in writable.
    PopulateWrite,
    /// `MADV_COLLAPSE`: collapse each range's PMD-aligned parts; the first
    /// failure is the syscall's result (ENOMEM, EBUSY, EAGAIN, EINVAL).
    Collapse,
    /// `MADV_REMOVE`: punch each range out of the shmem object behind it
    /// (`fallocate(PUNCH_HOLE|KEEP_SIZE)` of the matching file range:
    /// every mapping of it goes, shared or private; private copies stay).
    Remove,
}

/// What `madvise` did and what remains for the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MadviseOutcome {
    /// The work to do on `ranges`.
    pub action: MadviseAction,
    /// Mapped sub-ranges the advice applies to, in order.
    pub ranges: Vec<Range<u64>>,
    /// The result to return once `ranges` are processed (unless processing
    /// fails first, for `Collapse` and `Populate*`).
    pub result: Result<(), Errno>,
}

impl MadviseOutcome {
    fn err(action: MadviseAction, e: Errno) -> Self {
        MadviseOutcome {
            action,
            ranges: Vec::new(),
            result: Err(e),
        }
    }
}

/// A page-table move for `mremap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MremapMove {
    /// Old start.
    pub from: u64,
    /// New start.
    pub to: u64,
    /// Bytes whose page tables move (the old length, after any shrink).
    pub len: u64,
}

/// What a successful `mremap` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MremapPlan {
    /// The syscall's return value.
    pub new_addr: u64,
    /// Ranges unmapped (a shrunk tail, a `MREMAP_FIXED` target): zap them
    /// first.
    pub unmapped: Vec<Range<u64>>,
    /// Page tables to move, if the mapping moved.
    pub moved: Option<MremapMove>,
    /// `MREMAP_DONTUNMAP`: the old range stays mapped, now empty.
    pub dontunmap: bool,
    /// Range added in place by growing (nothing to do; faults fill it).
    pub grown: Option<Range<u64>>,
}

/// How an `madvise` advice is handled.
enum AdviceKind {
    /// Change VMA flags: (flags to clear, flags to set).
    Flags(VmFlags, VmFlags, MadviseAction),
    /// A per-range action; the flag allows it on `VM_LOCKED` VMAs
    /// (`MADV_DONTNEED_LOCKED`).
    Act(MadviseAction, bool),
}

fn classify(advice: Advice) -> Option<AdviceKind> {
    use MadviseAction as A;
    use VmFlags as F;
    let e = F::empty();
    Some(match advice {
        MADV_NORMAL => AdviceKind::Flags(F::SEQ_READ | F::RAND_READ, e, A::Flags),
        MADV_RANDOM => AdviceKind::Flags(F::SEQ_READ, F::RAND_READ, A::Flags),
        MADV_SEQUENTIAL => AdviceKind::Flags(F::RAND_READ, F::SEQ_READ, A::Flags),
        MADV_DONTFORK => AdviceKind::Flags(e, F::DONTCOPY, A::Flags),
        MADV_DOFORK => AdviceKind::Flags(F::DONTCOPY, e, A::Flags),
        MADV_WIPEONFORK => AdviceKind::Flags(e, F::WIPEONFORK, A::Flags),
        MADV_KEEPONFORK => AdviceKind::Flags(F::WIPEONFORK, e, A::Flags),
        MADV_DONTDUMP => AdviceKind::Flags(e, F::DONTDUMP, A::Flags),
        MADV_DODUMP => AdviceKind::Flags(F::DONTDUMP, e, A::Flags),
        MADV_HUGEPAGE => AdviceKind::Flags(F::NOHUGEPAGE, F::HUGEPAGE, A::Hugepage),
        MADV_NOHUGEPAGE => AdviceKind::Flags(F::HUGEPAGE, F::NOHUGEPAGE, A::Flags),
        MADV_DONTNEED => AdviceKind::Act(A::Zap, false),
        MADV_DONTNEED_LOCKED => AdviceKind::Act(A::Zap, true),
        MADV_FREE => AdviceKind::Act(A::Free, false),
        MADV_WILLNEED => AdviceKind::Act(A::WillNeed, false),
        MADV_COLD => AdviceKind::Act(A::Cold, false),
        MADV_PAGEOUT => AdviceKind::Act(A::Pageout, false),
        MADV_POPULATE_READ => AdviceKind::Act(A::PopulateRead, false),
        MADV_POPULATE_WRITE => AdviceKind::Act(A::PopulateWrite, false),
        MADV_COLLAPSE => AdviceKind::Act(A::Collapse, false),
        MADV_REMOVE => AdviceKind::Act(A::Remove, false),
        _ => return None,
    })
}

impl VmaSet {
    /// `mmap(addr, len, prot, flags, fd, offset)` for anonymous private
    /// memory.
    ///
    /// Order of checks as Linux: offset alignment (EINVAL); not anonymous
    /// (EBADF/ENODEV); `MAP_HUGETLB` (ENOMEM); `len == 0` (EINVAL); hint
    /// rounded down to a page and up to `mmap_min_addr`; length overflow
    /// on page alignment (ENOMEM); offset overflow (EOVERFLOW); too many
    /// VMAs (ENOMEM); address selection: too long or beyond the user range
    /// (ENOMEM), unaligned `MAP_FIXED` address (EINVAL), below
    /// `mmap_min_addr` (EPERM); `MAP_FIXED_NOREPLACE` overlap (EEXIST);
    /// mapping type not `MAP_PRIVATE` (EINVAL).  Unknown `prot` bits are
    /// ignored, as Linux's mmap does (only mprotect validates them).
    pub fn mmap(
        &mut self,
        addr: u64,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        fd: i64,
        offset: u64,
    ) -> Result<MmapOutcome, Errno> {
        self.mmap_backed(addr, len, prot, flags, fd, offset, None, true)
    }

    /// [`Self::mmap`] of the shmem object `shmem` (its id; `offset` is
    /// the byte offset into it), with or without `MAP_ANONYMOUS`.
    ///
    /// `MAP_SHARED`: the VMA gets `VM_SHARED | VM_MAYSHARE` and no
    /// `VM_ACCOUNT` (shmem accounts by object, as Linux).  Without
    /// `may_write` (a file not open for writing, a write-sealed memfd,
    /// `SHM_RDONLY`) the VMA lacks `VM_MAYWRITE`, so `PROT_WRITE` (now or
    /// by `mprotect`) is EACCES as in Linux.
    ///
    /// `MAP_PRIVATE`: a private file mapping (Linux's for a tmpfs file or
    /// memfd), any `prot`, always `VM_MAYWRITE` (the caller passes
    /// `may_write`: Linux needs only read access for it, and memfd seals
    /// do not apply), `VM_ACCOUNT` when writable; `pgoff` is the object's
    /// page offset, as for a shared one.  Reads map the object's folios
    /// read-only, writes copy them (`aspace::shmem`).
    #[allow(clippy::too_many_arguments)]
    pub fn mmap_shmem(
        &mut self,
        addr: u64,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        shmem: u64,
        offset: u64,
        may_write: bool,
    ) -> Result<MmapOutcome, Errno> {
        self.mmap_backed(addr, len, prot, flags, -1, offset, Some(shmem), may_write)
    }

    #[allow(clippy::too_many_arguments)]
    fn mmap_backed(
        &mut self,
        addr: u64,
        len: u64,
        prot: Prot,
        flags: MapFlags,
        fd: i64,
        offset: u64,
        shmem: Option<u64>,
        may_write: bool,
    ) -> Result<MmapOutcome, Errno> {
        if !offset.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::EINVAL);
        }
        if !flags.contains(MAP_ANONYMOUS) && shmem.is_none() {
            return Err(if fd < 0 { Errno::EBADF } else { Errno::ENODEV });
        }
        if flags.contains(MAP_HUGETLB) {
            return Err(Errno::ENOMEM);
        }
        if len == 0 {
            return Err(Errno::EINVAL);
        }
        let noreplace = flags.contains(MAP_FIXED_NOREPLACE);
        let fixed = noreplace || flags.contains(MAP_FIXED);
        let mut addr = addr;
        if !fixed {
            // Linux's round_hint_to_min.
            addr &= !(PAGE_SIZE - 1);
            if addr != 0 && addr < self.layout.mmap_min_addr {
                addr = page_align(self.layout.mmap_min_addr);
            }
        }
        let len = page_align(len);
        if len == 0 {
            return Err(Errno::ENOMEM);
        }
        let pgoff = offset >> PAGE_SHIFT;
        if pgoff.checked_add(len >> PAGE_SHIFT).is_none() {
            return Err(Errno::EOVERFLOW);
        }
        if self.len() > self.layout.max_map_count {
            return Err(Errno::ENOMEM);
        }
        let addr = self.get_unmapped_area(addr, len, offset, fixed)?;
        let end = addr + len;
        if noreplace && self.intersects(addr, end) {
            return Err(Errno::EEXIST);
        }
        // Lock bits: `MAP_LOCKED` and `mlockall(MCL_FUTURE)`'s def_flags,
        // refused (EPERM) or over `RLIMIT_MEMLOCK` (EAGAIN) before the
        // mapping type is looked at, as Linux's do_mmap.
        let mut lock = self.def_flags;
        if flags.contains(MAP_LOCKED) {
            lock |= VmFlags::LOCKED;
            if !self.can_do_mlock() {
                return Err(Errno::EPERM);
            }
        }
        if !self.mlock_future_ok(lock, len) {
            return Err(Errno::EAGAIN);
        }
        let shared = flags & MAP_TYPE == MAP_SHARED || flags & MAP_TYPE == MAP_SHARED_VALIDATE;
        if (shmem.is_none() && shared) || (!shared && flags & MAP_TYPE != MAP_PRIVATE) {
            return Err(Errno::EINVAL);
        }
        let mut vf = VmFlags::from_prot(prot)
            | VmFlags::MAYREAD
            | VmFlags::MAYWRITE
            | VmFlags::MAYEXEC
            | lock;
        if shared {
            vf |= VmFlags::SHARED | VmFlags::MAYSHARE;
        }
        if !may_write {
            if vf.contains(VmFlags::WRITE) {
                return Err(Errno::EACCES);
            }
            vf -= VmFlags::MAYWRITE;
        }
        if flags.contains(MAP_GROWSDOWN) {
            vf |= VmFlags::GROWSDOWN;
        }
        if flags.contains(MAP_NORESERVE) {
            vf |= VmFlags::NORESERVE;
        }
        if flags.contains(MAP_STACK) {
            // Linux ≥ 6.7: stacks are not worth THPs.
            vf |= VmFlags::NOHUGEPAGE;
        }
        if vf.contains(VmFlags::WRITE) && !vf.contains(VmFlags::NORESERVE) && !shared {
            vf |= VmFlags::ACCOUNT;
        }
        let unmapped = if fixed {
            self.unmap_range(addr, end)
        } else {
            Vec::new()
        };
        self.map.insert(
            addr,
            Vma {
                start: addr,
                end,
                flags: vf,
                // Linux's anonymous VMAs take the address as their offset;
                // file VMAs, shared or private, the file's.
                pgoff: if shmem.is_some() {
                    pgoff
                } else {
                    addr >> PAGE_SHIFT
                },
                anon_vma: None,
                policy: None,
                shmem,
            },
        );
        self.merge_range(addr, end);
        // A `VM_LOCKONFAULT` mapping is never populated (Linux's
        // populate_vma_page_range skips it, even for `MAP_POPULATE`).
        let populate = (vf.contains(VmFlags::LOCKED)
            || flags & (MAP_POPULATE | MAP_NONBLOCK) == MAP_POPULATE)
            && !vf.contains(VmFlags::LOCKONFAULT);
        Ok(MmapOutcome {
            addr,
            len,
            populate,
            unmapped,
        })
    }

    /// `munmap(addr, len)`: EINVAL for an unaligned address, a zero length
    /// or a range outside the user address space; unmapping holes is fine.
    /// Returns the removed (previously mapped) sub-ranges, to zap.
    pub fn munmap(&mut self, addr: u64, len: u64) -> Result<Vec<Range<u64>>, Errno> {
        let ts = self.layout.task_size;
        if !addr.is_multiple_of(PAGE_SIZE) || addr > ts || len > ts - addr {
            return Err(Errno::EINVAL);
        }
        let len = page_align(len);
        if len == 0 {
            return Err(Errno::EINVAL);
        }
        let end = addr + len;
        let Some(first) = self.find_intersecting(addr, end).next().copied() else {
            return Ok(Vec::new());
        };
        // Punching a hole in one VMA needs one more VMA.
        if first.start < addr && end < first.end && self.len() >= self.layout.max_map_count {
            return Err(Errno::ENOMEM);
        }
        Ok(self.unmap_range(addr, end))
    }

    /// `mprotect(addr, len, prot)`.
    ///
    /// EINVAL for both `PROT_GROWSDOWN` and `PROT_GROWSUP`, an unaligned
    /// address, or unknown `prot` bits; success for `len == 0`; ENOMEM for a
    /// wrapping range or an unmapped start; EACCES beyond `VM_MAY*`.  A hole
    /// later in the range gives ENOMEM after the VMAs before it were
    /// changed (as Linux).
    pub fn mprotect(&mut self, start: u64, len: u64, prot: Prot) -> MprotectOutcome {
        let grows = prot & (PROT_GROWSDOWN | PROT_GROWSUP);
        let prot = prot & !grows;
        if grows == PROT_GROWSDOWN | PROT_GROWSUP {
            return MprotectOutcome::err(Errno::EINVAL);
        }
        if !start.is_multiple_of(PAGE_SIZE) {
            return MprotectOutcome::err(Errno::EINVAL);
        }
        if len == 0 {
            return MprotectOutcome {
                changed: Vec::new(),
                result: Ok(()),
            };
        }
        let len = page_align(len);
        let end = start.wrapping_add(len);
        if end <= start {
            return MprotectOutcome::err(Errno::ENOMEM);
        }
        if !(prot & !(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM)).is_empty() {
            return MprotectOutcome::err(Errno::EINVAL);
        }
        let Some(first) = self.find_vma(start).copied().filter(|v| v.start < end) else {
            return MprotectOutcome::err(Errno::ENOMEM);
        };
        let mut start = start;
        if grows.contains(PROT_GROWSDOWN) {
            start = first.start;
            if !first.flags.contains(VmFlags::GROWSDOWN) {
                return MprotectOutcome::err(Errno::EINVAL);
            }
        } else {
            if first.start > start {
                return MprotectOutcome::err(Errno::ENOMEM);
            }
            if grows.contains(PROT_GROWSUP) {
                // No grows-up VMAs exist on x86_64 or arm64.
                return MprotectOutcome::err(Errno::EINVAL);
            }
        }
        let access = VmFlags::from_prot(prot);
        let vmas: Vec<Vma> = self.find_intersecting(start, end).copied().collect();
        let mut changed = Vec::new();
        let mut result = Ok(());
        let mut tmp = first.start;
        let mut nstart = start;
        for v in vmas {
            if v.start != tmp {
                result = Err(Errno::ENOMEM);
                break;
            }
            let mut nf = access | (v.flags - VmFlags::ACCESS);
            let may = VmFlags::from_bits_retain(nf.bits() >> 4);
            if !(nf & VmFlags::ACCESS).difference(may).is_empty() {
                result = Err(Errno::EACCES);
                break;
            }
            let seg_end = v.end.min(end);
            if nf != v.flags {
                if nf.contains(VmFlags::WRITE)
                    && !v.flags.intersects(
                        VmFlags::ACCOUNT | VmFlags::WRITE | VmFlags::SHARED | VmFlags::NORESERVE,
                    )
                {
                    nf |= VmFlags::ACCOUNT;
                }
                self.set_flags(nstart, seg_end, nf);
                changed.push((nstart..seg_end, nf));
            }
            tmp = seg_end;
            nstart = tmp;
        }
        if result.is_ok() && tmp < end {
            result = Err(Errno::ENOMEM);
        }
        self.merge_range(start, tmp.max(start));
        MprotectOutcome { changed, result }
    }

    /// Give `[start, end)`, which lies inside one VMA, the flags `nf`,
    /// splitting that VMA as needed (merging is left to the caller).
    pub(super) fn set_flags(&mut self, start: u64, end: u64, nf: VmFlags) {
        self.split_at(start);
        self.split_at(end);
        if let Some(v) = self.map.get_mut(&start) {
            debug_assert_eq!(v.end, end);
            v.flags = nf;
        }
    }

    /// `madvise(addr, len, advice)`.
    ///
    /// EINVAL for an unknown advice (checked first), an unaligned address,
    /// a length that wraps when page-aligned, or a wrapping range; success
    /// for an empty range.  The advice is applied to every mapped part of
    /// the range; holes then give ENOMEM (as Linux).  A per-VMA refusal
    /// (e.g. `MADV_DONTNEED` on a `MAP_LOCKED` VMA) stops the walk there
    /// with that error.  `MADV_POPULATE_*` stop at the first hole (ENOMEM)
    /// or at a VMA lacking the needed permission (EINVAL).
    pub fn madvise(&mut self, start: u64, len: u64, advice: Advice) -> MadviseOutcome {
        let mut changes = Vec::new();
        let (out, merge) = self.madvise_scan(start, len, advice, &mut changes);
        for (s, e, nf) in changes {
            self.set_flags(s, e, nf);
        }
        if let Some((s, e)) = merge {
            self.merge_range(s, e);
        }
        out
    }

    /// [`Self::madvise`] for advice that changes no VMA (Linux's
    /// `madvise_need_mmap_write` is false: `MADV_DONTNEED`, `MADV_FREE`,
    /// `MADV_WILLNEED`, `MADV_COLD`, `MADV_PAGEOUT`, `MADV_POPULATE_*`), so
    /// the mmap lock held for reading is enough; `None` for any other.
    pub fn madvise_shared(&self, start: u64, len: u64, advice: Advice) -> Option<MadviseOutcome> {
        let Some(AdviceKind::Act(a, _)) = classify(advice) else {
            return None;
        };
        use MadviseAction::*;
        if !matches!(
            a,
            Zap | Free | WillNeed | Cold | Pageout | PopulateRead | PopulateWrite | Remove
        ) {
            return None;
        }
        let mut changes = Vec::new();
        let (out, _) = self.madvise_scan(start, len, advice, &mut changes);
        debug_assert!(changes.is_empty());
        Some(out)
    }

    /// The walk of [`Self::madvise`]: the outcome, the flag changes to
    /// make (`(start, end, flags)`, each inside one VMA) and the range to
    /// merge after them (flag advice only).
    #[allow(clippy::type_complexity)]
    fn madvise_scan(
        &self,
        start: u64,
        len: u64,
        advice: Advice,
        changes: &mut Vec<(u64, u64, VmFlags)>,
    ) -> (MadviseOutcome, Option<(u64, u64)>) {
        let Some(kind) = classify(advice) else {
            return (
                MadviseOutcome::err(MadviseAction::Flags, Errno::EINVAL),
                None,
            );
        };
        let action = match kind {
            AdviceKind::Flags(_, _, a) | AdviceKind::Act(a, _) => a,
        };
        if !start.is_multiple_of(PAGE_SIZE) {
            return (MadviseOutcome::err(action, Errno::EINVAL), None);
        }
        let alen = page_align(len);
        if len != 0 && alen == 0 {
            return (MadviseOutcome::err(action, Errno::EINVAL), None);
        }
        let end = start.wrapping_add(alen);
        if end < start {
            return (MadviseOutcome::err(action, Errno::EINVAL), None);
        }
        let mut out = MadviseOutcome {
            action,
            ranges: Vec::new(),
            result: Ok(()),
        };
        if end == start {
            return (out, None);
        }
        if matches!(
            action,
            MadviseAction::PopulateRead | MadviseAction::PopulateWrite
        ) {
            self.madvise_populate(start, end, &mut out);
            return (out, None);
        }
        let mut unmapped = false;
        let mut cur = start;
        loop {
            let Some(v) = self.find_vma(cur).copied() else {
                out.result = Err(Errno::ENOMEM);
                break;
            };
            if cur < v.start {
                unmapped = true;
                cur = v.start;
                if cur >= end {
                    break;
                }
            }
            let seg_end = v.end.min(end);
            if let Err(e) = self.madvise_visit(&kind, &v, cur, seg_end, changes) {
                out.result = Err(e);
                break;
            }
            out.ranges.push(cur..seg_end);
            cur = seg_end;
            if cur >= end {
                break;
            }
        }
        if out.result.is_ok() && unmapped {
            out.result = Err(Errno::ENOMEM);
        }
        let merge = matches!(kind, AdviceKind::Flags(..)).then(|| (start, cur.max(start)));
        (out, merge)
    }

    /// Apply one advice to `[start, end)` inside VMA `v`.
    fn madvise_visit(
        &self,
        kind: &AdviceKind,
        v: &Vma,
        start: u64,
        end: u64,
        changes: &mut Vec<(u64, u64, VmFlags)>,
    ) -> Result<(), Errno> {
        match *kind {
            AdviceKind::Flags(clear, set, _) => {
                // Linux: anonymous private VMAs only (not a file's).
                if set.contains(VmFlags::WIPEONFORK)
                    && (v.flags.contains(VmFlags::SHARED) || v.shmem.is_some())
                {
                    return Err(Errno::EINVAL);
                }
                let nf = (v.flags - clear) | set;
                if nf != v.flags {
                    changes.push((start, end, nf));
                }
                Ok(())
            }
            AdviceKind::Act(a, zap_locked) => {
                let locked = v.flags.contains(VmFlags::LOCKED);
                match a {
                    MadviseAction::Zap if locked && !zap_locked => Err(Errno::EINVAL),
                    MadviseAction::Free if locked => Err(Errno::EINVAL),
                    MadviseAction::Cold | MadviseAction::Pageout if locked => Err(Errno::EINVAL),
                    MadviseAction::Collapse if v.flags.contains(VmFlags::NOHUGEPAGE) => {
                        Err(Errno::EINVAL)
                    }
                    // Linux 6.12's `madvise_remove`: locked or without a
                    // file (private anonymous) EINVAL, then EACCES unless
                    // shared and `VM_MAYWRITE` (`vma_is_shared_maywrite`:
                    // a shared read-only mapping of a file open for
                    // writing may punch).
                    MadviseAction::Remove if locked || v.shmem.is_none() => Err(Errno::EINVAL),
                    MadviseAction::Remove
                        if !v.flags.contains(VmFlags::SHARED | VmFlags::MAYWRITE) =>
                    {
                        Err(Errno::EACCES)
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    fn madvise_populate(&self, start: u64, end: u64, out: &mut MadviseOutcome) {
        let need = if out.action == MadviseAction::PopulateWrite {
            VmFlags::WRITE
        } else {
            VmFlags::READ
        };
        let mut cur = start;
        while cur < end {
            let Some(v) = self.find(cur) else {
                out.result = Err(Errno::ENOMEM);
                return;
            };
            if !v.flags.contains(need) {
                out.result = Err(Errno::EINVAL);
                return;
            }
            let seg_end = v.end.min(end);
            out.ranges.push(cur..seg_end);
            cur = seg_end;
        }
    }

    /// `mremap(addr, old_len, new_len, flags, new_addr)`.
    ///
    /// Checks in Linux's (≥ 6.16) order: unknown flags, unaligned `addr`,
    /// zero or too large `new_len` (EINVAL); with `MREMAP_FIXED` or
    /// `MREMAP_DONTUNMAP`: unaligned `new_addr`, missing `MREMAP_MAYMOVE`,
    /// `DONTUNMAP` with a size change, a target beyond the user range or
    /// overlapping the source (EINVAL), too many VMAs (ENOMEM).  Then: no
    /// VMA at `addr` (EFAULT); growing or moving a zero `old_len` of a
    /// private mapping (EINVAL); a source crossing its VMA's end (EFAULT).
    /// Shrinking unmaps the tail in place; growing extends in place when the
    /// source reaches its VMA's end and the space above is free, else moves
    /// with `MREMAP_MAYMOVE` or fails with ENOMEM.
    pub fn mremap(
        &mut self,
        addr: u64,
        old_len: u64,
        new_len: u64,
        flags: MremapFlags,
        new_addr: u64,
    ) -> Result<MremapPlan, Errno> {
        let l = self.layout;
        if !(flags & !(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP)).is_empty() {
            return Err(Errno::EINVAL);
        }
        if !addr.is_multiple_of(PAGE_SIZE) {
            return Err(Errno::EINVAL);
        }
        let old_len = page_align(old_len);
        let new_len = page_align(new_len);
        if new_len == 0 || new_len > l.task_size {
            return Err(Errno::EINVAL);
        }
        let fixed = flags.contains(MREMAP_FIXED);
        let dontunmap = flags.contains(MREMAP_DONTUNMAP);
        let maymove = flags.contains(MREMAP_MAYMOVE);
        let implies_new = fixed || dontunmap;
        if implies_new {
            if !new_addr.is_multiple_of(PAGE_SIZE) || !maymove {
                return Err(Errno::EINVAL);
            }
            if dontunmap && old_len != new_len {
                return Err(Errno::EINVAL);
            }
            if new_addr > l.task_size - new_len {
                return Err(Errno::EINVAL);
            }
            let old_end = addr.saturating_add(old_len);
            if old_end > new_addr && new_addr + new_len > addr {
                return Err(Errno::EINVAL);
            }
            if self.len() + 2 >= l.max_map_count.saturating_sub(3) {
                return Err(Errno::ENOMEM);
            }
        }
        let vma = *self.find(addr).ok_or(Errno::EFAULT)?;
        let expand = new_len > old_len;
        if expand || implies_new {
            if old_len == 0 {
                return Err(Errno::EINVAL);
            }
            if dontunmap && vma.flags.contains(VmFlags::DONTEXPAND) {
                return Err(Errno::EINVAL);
            }
            if old_len > vma.end - addr {
                return Err(Errno::EFAULT);
            }
            if new_len != old_len && vma.flags.contains(VmFlags::DONTEXPAND) {
                return Err(Errno::EFAULT);
            }
            if new_len > old_len && !self.mlock_future_ok(vma.flags, new_len - old_len) {
                return Err(Errno::EAGAIN);
            }
        }
        let mut plan = MremapPlan {
            new_addr: addr,
            unmapped: Vec::new(),
            moved: None,
            dontunmap,
            grown: None,
        };
        if implies_new {
            if fixed {
                plan.unmapped = self.munmap(new_addr, new_len)?;
                self.find(addr).ok_or(Errno::EFAULT)?;
            }
            let mut old_len = old_len;
            if old_len > new_len {
                plan.unmapped
                    .extend(self.munmap(addr + new_len, old_len - new_len)?);
                old_len = new_len;
            }
            let target = self.mremap_target(addr, new_len, new_addr, fixed)?;
            self.move_vma(addr, old_len, new_len, target, dontunmap, &mut plan);
            return Ok(plan);
        }
        if new_len == old_len {
            return Ok(plan);
        }
        if old_len > new_len {
            plan.unmapped = self.munmap(addr + new_len, old_len - new_len)?;
            return Ok(plan);
        }
        // Grow.
        let delta = new_len - old_len;
        if old_len == vma.end - addr
            && let Some(new_end) = vma.end.checked_add(delta)
            && !self.intersects(vma.end, new_end)
            && self
                .get_unmapped_area(vma.start, new_end - vma.start, 0, true)
                .is_ok()
        {
            if let Some(v) = self.map.get_mut(&vma.start) {
                v.end = new_end;
            }
            self.try_merge_at(new_end);
            plan.grown = Some(vma.end..new_end);
            return Ok(plan);
        }
        if !maymove {
            return Err(Errno::ENOMEM);
        }
        let target = self.mremap_target(addr, new_len, 0, false)?;
        self.move_vma(addr, old_len, new_len, target, false, &mut plan);
        Ok(plan)
    }

    /// Where a moving mremap goes: Linux passes the source's offset so the
    /// new address keeps the old one's position modulo 2 MiB.
    fn mremap_target(&self, addr: u64, new_len: u64, hint: u64, fixed: bool) -> Result<u64, Errno> {
        let v = self.find(addr).ok_or(Errno::EFAULT)?;
        let pgoff = v.pgoff + ((addr - v.start) >> PAGE_SHIFT);
        self.get_unmapped_area(hint, new_len, pgoff << PAGE_SHIFT, fixed)
    }

    /// Create the destination VMA and (unless `dontunmap`) remove the
    /// source range.
    fn move_vma(
        &mut self,
        addr: u64,
        old_len: u64,
        new_len: u64,
        target: u64,
        dontunmap: bool,
        plan: &mut MremapPlan,
    ) {
        let src = *self.find(addr).expect("source checked");
        let new = Vma {
            start: target,
            end: target + new_len,
            flags: src.flags,
            pgoff: src.pgoff + ((addr - src.start) >> PAGE_SHIFT),
            anon_vma: src.anon_vma,
            policy: src.policy,
            shmem: src.shmem,
        };
        if dontunmap {
            // The old range stays mapped; Linux drops its lock bits.
            if src.flags.contains(VmFlags::LOCKED) {
                let nf = src.flags - super::mlock::VM_LOCKED_MASK;
                self.set_flags(addr, addr + old_len, nf);
                self.merge_range(addr, addr + old_len);
            }
        } else {
            self.unmap_range(addr, addr + old_len);
        }
        self.map.insert(target, new);
        self.merge_range(target, target + new_len);
        plan.new_addr = target;
        plan.moved = Some(MremapMove {
            from: addr,
            to: target,
            len: old_len,
        });
    }
}
