//! `mlock`, `mlock2`, `munlock`, `mlockall` and `munlockall` on a
//! [`VmaSet`]: Linux's argument checks, `RLIMIT_MEMLOCK` rules, errno
//! values and VMA changes (`VM_LOCKED` / `VM_LOCKONFAULT`, split and
//! merged at the lock's edges), as Linux's `mm/mlock.c`.
//!
//! As the other system calls in [`super::ops`], these change only VMAs and
//! return what the caller must then do to pages: which ranges changed lock
//! state (their present folios are mlocked or munlocked, PMD leaves cut by
//! a new VMA edge split) and what to populate.
//!
//! `mm->locked_vm` is not a separate counter here: every locked page of
//! this kernel is a page of a `VM_LOCKED` VMA (no `io_uring`, no RDMA
//! pins), so [`VmaSet::locked_vm`] adds up the locked VMAs, which is what
//! Linux's counter holds in that world and cannot drift from it.

use alloc::vec::Vec;
use core::ops::Range;

use super::{VmFlags, VmaSet};
use crate::abi::errno::Errno;
use crate::addr::{PAGE_SHIFT, PAGE_SIZE, align_up};

/// `mlock2` flag: lock pages as they fault in (no populate).
pub const MLOCK_ONFAULT: u64 = 1;
/// `mlockall` flags.
pub const MCL_CURRENT: u64 = 1;
pub const MCL_FUTURE: u64 = 2;
pub const MCL_ONFAULT: u64 = 4;

/// Linux's `MLOCK_LIMIT`: the default `RLIMIT_MEMLOCK` (8 MiB since 5.16).
pub const MLOCK_LIMIT: u64 = 8 << 20;

/// The lock bits of a VMA's flags (Linux's `VM_LOCKED_MASK`).
pub const VM_LOCKED_MASK: VmFlags = VmFlags::LOCKED.union(VmFlags::LOCKONFAULT);

/// What the owner of an address space may lock: its `RLIMIT_MEMLOCK`
/// soft limit and whether it has `CAP_IPC_LOCK` (root has; such a caller
/// is never limited).  Rlimits belong to the process in Linux; here every
/// process has exactly one address space (threads share both), so the
/// kernel keeps this copy in the space up to date on `setrlimit` and on a
/// change of credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlockRights {
    /// `RLIMIT_MEMLOCK`'s soft limit in bytes (`u64::MAX`: unlimited).
    pub limit: u64,
    /// `CAP_IPC_LOCK`.
    pub cap_ipc_lock: bool,
}

impl Default for MlockRights {
    /// Linux's defaults for a root process: 8 MiB, but `CAP_IPC_LOCK`.
    fn default() -> Self {
        MlockRights {
            limit: MLOCK_LIMIT,
            cap_ipc_lock: true,
        }
    }
}

/// What an mlock-family call did and what the caller must do to pages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MlockOutcome {
    /// Ranges whose `VM_LOCKED` bit changed, with the new state (true:
    /// now locked), in address order: split PMD leaves at their edges,
    /// then mlock (or munlock) the folios mapped there.  A change of
    /// `VM_LOCKONFAULT` alone is not listed (Linux walks no pages then).
    pub changed: Vec<(Range<u64>, bool)>,
    /// Range to populate afterwards (VMAs with `VM_LOCKONFAULT` skipped):
    /// `mlock`/`mlock2` without `MLOCK_ONFAULT` and `mlockall(MCL_CURRENT)`.
    pub populate: Option<Range<u64>>,
    /// Populate errors are ignored (`mlockall`); otherwise a failure is
    /// the call's result, translated (EFAULT → ENOMEM, ENOMEM → EAGAIN).
    pub ignore_errors: bool,
    /// The result before populating.
    pub result: Result<(), Errno>,
}

impl Default for MlockOutcome {
    fn default() -> Self {
        MlockOutcome {
            changed: Vec::new(),
            populate: None,
            ignore_errors: false,
            result: Ok(()),
        }
    }
}

impl MlockOutcome {
    fn err(e: Errno) -> Self {
        MlockOutcome {
            result: Err(e),
            ..Default::default()
        }
    }
}

/// Linux's `PAGE_ALIGN` on an unsigned long: wraps to 0 on overflow.
fn page_align(len: u64) -> u64 {
    align_up(len, PAGE_SIZE).unwrap_or(0)
}

impl VmaSet {
    /// The owner's mlock rights.
    pub fn mlock_rights(&self) -> MlockRights {
        self.rights
    }

    /// Set the owner's mlock rights (`setrlimit(RLIMIT_MEMLOCK)`, a change
    /// of credentials).
    pub fn set_mlock_rights(&mut self, r: MlockRights) {
        self.rights = r;
    }

    /// The lock bits every new mapping gets (`mlockall(MCL_FUTURE)`).
    pub fn def_flags(&self) -> VmFlags {
        self.def_flags
    }

    /// Pages in `VM_LOCKED` VMAs (Linux's `mm->locked_vm`; `VmLck:`).
    pub fn locked_vm(&self) -> u64 {
        self.iter()
            .filter(|v| v.flags.contains(VmFlags::LOCKED))
            .map(|v| v.len() >> PAGE_SHIFT)
            .sum()
    }

    /// Pages mapped at all (Linux's `mm->total_vm`).
    pub fn total_vm(&self) -> u64 {
        self.iter().map(|v| v.len() >> PAGE_SHIFT).sum()
    }

    /// Linux's `can_do_mlock`: a non-zero limit or `CAP_IPC_LOCK`.
    pub fn can_do_mlock(&self) -> bool {
        self.rights.limit != 0 || self.rights.cap_ipc_lock
    }

    /// Linux's `mlock_future_ok`: may a mapping with `flags` grow the
    /// locked memory by `bytes` (mmap, brk, mremap growth)?
    pub fn mlock_future_ok(&self, flags: VmFlags, bytes: u64) -> bool {
        if !flags.contains(VmFlags::LOCKED) || self.rights.cap_ipc_lock {
            return true;
        }
        let pages = (bytes >> PAGE_SHIFT).saturating_add(self.locked_vm());
        pages <= self.rights.limit >> PAGE_SHIFT
    }

    /// Pages of locked VMAs inside `[start, start + len)` (Linux's
    /// `count_mm_mlocked_page_nr`).
    fn locked_pages_in(&self, start: u64, len: u64) -> u64 {
        let end = start.saturating_add(len);
        self.find_intersecting(start, end)
            .filter(|v| v.flags.contains(VmFlags::LOCKED))
            .map(|v| (v.end.min(end) - v.start.max(start)) >> PAGE_SHIFT)
            .sum()
    }

    /// `mlock(start, len)` (`onfault` false) or `mlock2(start, len,
    /// MLOCK_ONFAULT)` (true): Linux's `do_mlock`.
    ///
    /// EPERM without the right to lock at all; the range is widened to
    /// pages; over the limit (pages already locked in the range not
    /// counted twice) ENOMEM; then as [`Self::munlock`]'s walk: a wrapping
    /// range EINVAL, a hole ENOMEM after the VMAs before it were locked.
    /// On success the range is to be populated unless `onfault`.
    pub fn mlock(&mut self, start: u64, len: u64, onfault: bool) -> MlockOutcome {
        if !self.can_do_mlock() {
            return MlockOutcome::err(Errno::EPERM);
        }
        let len = page_align(len.wrapping_add(start & (PAGE_SIZE - 1)));
        let start = start & !(PAGE_SIZE - 1);
        let limit = self.rights.limit >> PAGE_SHIFT;
        let mut locked = (len >> PAGE_SHIFT).saturating_add(self.locked_vm());
        if locked > limit && !self.rights.cap_ipc_lock {
            locked -= self.locked_pages_in(start, len);
        }
        if locked > limit && !self.rights.cap_ipc_lock {
            return MlockOutcome::err(Errno::ENOMEM);
        }
        let flags = if onfault {
            VM_LOCKED_MASK
        } else {
            VmFlags::LOCKED
        };
        let mut out = MlockOutcome::default();
        out.result = self.apply_lock_flags(start, len, flags, &mut out.changed);
        if out.result.is_ok() && !onfault && len != 0 {
            out.populate = Some(start..start + len);
        }
        out
    }

    /// `mlock2(start, len, flags)`: flags other than `MLOCK_ONFAULT` are
    /// EINVAL (checked first), then [`Self::mlock`].
    pub fn mlock2(&mut self, start: u64, len: u64, flags: u64) -> MlockOutcome {
        if flags & !MLOCK_ONFAULT != 0 {
            return MlockOutcome::err(Errno::EINVAL);
        }
        self.mlock(start, len, flags & MLOCK_ONFAULT != 0)
    }

    /// `munlock(start, len)`: no permission or limit applies; a wrapping
    /// range is EINVAL, a hole ENOMEM (after unlocking what precedes it).
    pub fn munlock(&mut self, start: u64, len: u64) -> MlockOutcome {
        let len = page_align(len.wrapping_add(start & (PAGE_SIZE - 1)));
        let start = start & !(PAGE_SIZE - 1);
        let mut out = MlockOutcome::default();
        out.result = self.apply_lock_flags(start, len, VmFlags::empty(), &mut out.changed);
        out
    }

    /// `mlockall(flags)`: EINVAL for no flags, unknown bits or
    /// `MCL_ONFAULT` alone; EPERM without the right to lock; ENOMEM with
    /// `MCL_CURRENT` when the whole space exceeds the limit.  `MCL_FUTURE`
    /// sets the lock bits later mappings get (and without it they are
    /// cleared); `MCL_CURRENT` locks every VMA and populates them all,
    /// ignoring failures.
    pub fn mlockall(&mut self, flags: u64) -> MlockOutcome {
        if flags == 0
            || flags & !(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0
            || flags == MCL_ONFAULT
        {
            return MlockOutcome::err(Errno::EINVAL);
        }
        if !self.can_do_mlock() {
            return MlockOutcome::err(Errno::EPERM);
        }
        if flags & MCL_CURRENT != 0
            && self.total_vm() > self.rights.limit >> PAGE_SHIFT
            && !self.rights.cap_ipc_lock
        {
            return MlockOutcome::err(Errno::ENOMEM);
        }
        let mut out = self.apply_mlockall_flags(flags);
        if flags & MCL_CURRENT != 0 {
            out.populate = Some(0..self.layout.task_size);
            out.ignore_errors = true;
        }
        out
    }

    /// `munlockall()`: unlock every VMA and forget `MCL_FUTURE`.
    pub fn munlockall(&mut self) -> MlockOutcome {
        self.apply_mlockall_flags(0)
    }

    /// Linux's `apply_mlockall_flags`.
    fn apply_mlockall_flags(&mut self, flags: u64) -> MlockOutcome {
        let mut out = MlockOutcome::default();
        self.def_flags = VmFlags::empty();
        if flags & MCL_FUTURE != 0 {
            self.def_flags |= VmFlags::LOCKED;
            if flags & MCL_ONFAULT != 0 {
                self.def_flags |= VmFlags::LOCKONFAULT;
            }
            if flags & MCL_CURRENT == 0 {
                return out;
            }
        }
        let mut to_add = VmFlags::empty();
        if flags & MCL_CURRENT != 0 {
            to_add |= VmFlags::LOCKED;
            if flags & MCL_ONFAULT != 0 {
                to_add |= VmFlags::LOCKONFAULT;
            }
        }
        let vmas: Vec<(u64, u64, VmFlags)> =
            self.iter().map(|v| (v.start, v.end, v.flags)).collect();
        for (s, e, f) in vmas {
            self.lock_fixup(s, e, f, (f - VM_LOCKED_MASK) | to_add, &mut out.changed);
        }
        let ts = self.layout.task_size;
        self.merge_range(0, ts);
        out
    }

    /// Linux's `apply_vma_lock_flags`: give every VMA in `[start, start +
    /// len)` the lock bits `flags` (page aligned by the caller).
    fn apply_lock_flags(
        &mut self,
        start: u64,
        len: u64,
        flags: VmFlags,
        changed: &mut Vec<(Range<u64>, bool)>,
    ) -> Result<(), Errno> {
        let end = start.wrapping_add(len);
        if end < start {
            return Err(Errno::EINVAL);
        }
        if end == start {
            return Ok(());
        }
        let Some(first) = self.find(start).copied() else {
            return Err(Errno::ENOMEM);
        };
        let vmas: Vec<(u64, u64, VmFlags)> = self
            .find_intersecting(start, end)
            .map(|v| (v.start, v.end, v.flags))
            .collect();
        let mut result = Ok(());
        let mut tmp = first.start;
        let mut nstart = start;
        for (vs, ve, vf) in vmas {
            if vs != tmp {
                result = Err(Errno::ENOMEM);
                break;
            }
            let seg_end = ve.min(end);
            self.lock_fixup(nstart, seg_end, vf, (vf - VM_LOCKED_MASK) | flags, changed);
            tmp = seg_end;
            nstart = tmp;
        }
        if result.is_ok() && tmp < end {
            result = Err(Errno::ENOMEM);
        }
        self.merge_range(start, tmp.max(start));
        result
    }

    /// Linux's `mlock_fixup` for `[start, end)` inside one VMA whose flags
    /// are `old`: split it and set `new`, recording a change of `LOCKED`.
    fn lock_fixup(
        &mut self,
        start: u64,
        end: u64,
        old: VmFlags,
        new: VmFlags,
        changed: &mut Vec<(Range<u64>, bool)>,
    ) {
        if new == old {
            return;
        }
        self.set_flags(start, end, new);
        let locked = new.contains(VmFlags::LOCKED);
        if locked != old.contains(VmFlags::LOCKED) {
            changed.push((start..end, locked));
        }
    }

    /// fork: the child's VMAs lose their lock bits and its `def_flags`
    /// keep none (Linux's `dup_mmap` and `mm_init`); VMAs that differed
    /// only in those bits merge, so no mergeable neighbours are left.
    pub fn clear_mlock_for_fork(&mut self) {
        self.def_flags = VmFlags::empty();
        for v in self.map.values_mut() {
            v.flags -= VM_LOCKED_MASK;
        }
        let ts = self.layout.task_size;
        self.merge_range(0, ts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::uapi::*;
    use alloc::vec;

    const P: u64 = PAGE_SIZE;
    const A: u64 = 0x1000_0000;
    const RW: Prot = PROT_READ.union(PROT_WRITE);
    const PA: MapFlags = MAP_PRIVATE.union(MAP_ANONYMOUS);

    fn set_with(pages: &[(u64, u64)]) -> VmaSet {
        let mut s = VmaSet::default();
        for &(at, n) in pages {
            s.mmap(A + at * P, n * P, RW, PA | MAP_FIXED, -1, 0)
                .unwrap();
        }
        s
    }

    fn locked(s: &VmaSet) -> Vec<(u64, u64, bool, bool)> {
        s.iter()
            .map(|v| {
                (
                    (v.start - A) / P,
                    (v.end - A) / P,
                    v.flags.contains(VmFlags::LOCKED),
                    v.flags.contains(VmFlags::LOCKONFAULT),
                )
            })
            .collect()
    }

    fn user(limit: u64) -> MlockRights {
        MlockRights {
            limit,
            cap_ipc_lock: false,
        }
    }

    #[test]
    fn splits_merges_and_reports_changes() {
        let mut s = set_with(&[(0, 16)]);
        // Unaligned start: the page holding it is locked.
        let out = s.mlock(A + 4 * P + 100, 4 * P - 100, false);
        assert_eq!(out.result, Ok(()));
        assert_eq!(out.changed, vec![(A + 4 * P..A + 8 * P, true)]);
        assert_eq!(out.populate, Some(A + 4 * P..A + 8 * P));
        assert_eq!(
            locked(&s),
            vec![
                (0, 4, false, false),
                (4, 8, true, false),
                (8, 16, false, false)
            ]
        );
        assert_eq!(s.locked_vm(), 4);
        // Only ONFAULT changes: no pages to walk, nothing to populate.
        let out = s.mlock2(A + 4 * P, 4 * P, MLOCK_ONFAULT);
        assert!(out.changed.is_empty());
        assert_eq!(out.populate, None);
        assert_eq!(locked(&s)[1], (4, 8, true, true));
        let out = s.munlock(A, 16 * P);
        assert_eq!(out.changed, vec![(A + 4 * P..A + 8 * P, false)]);
        assert_eq!(locked(&s), vec![(0, 16, false, false)]);
        s.check_invariants().unwrap();
    }

    #[test]
    fn holes_and_wrapping() {
        let mut s = set_with(&[(0, 4), (8, 4)]);
        // A hole: ENOMEM after locking the VMA before it; no populate.
        let out = s.mlock(A, 12 * P, false);
        assert_eq!(out.result, Err(Errno::ENOMEM));
        assert_eq!(out.populate, None);
        assert_eq!(locked(&s), vec![(0, 4, true, false), (8, 12, false, false)]);
        // Starting in the hole: nothing changes.
        let out = s.mlock(A + 5 * P, 4 * P, false);
        assert_eq!(out.result, Err(Errno::ENOMEM));
        assert!(out.changed.is_empty());
        assert_eq!(s.munlock(A, 12 * P).result, Err(Errno::ENOMEM));
        assert_eq!(s.locked_vm(), 0);
        // Wrapping: EINVAL (root); a zero length is fine.
        assert_eq!(
            s.munlock(u64::MAX - P + 1, 2 * P).result,
            Err(Errno::EINVAL)
        );
        assert_eq!(
            s.mlock(u64::MAX - P + 1, 2 * P, false).result,
            Err(Errno::EINVAL)
        );
        assert_eq!(s.mlock(A + 5 * P, 0, false).result, Ok(()));
        // Without CAP_IPC_LOCK the limit is checked first: ENOMEM.
        s.set_mlock_rights(user(MLOCK_LIMIT));
        assert_eq!(
            s.mlock(u64::MAX - P + 1, 2 * P, false).result,
            Err(Errno::EINVAL)
        );
        assert_eq!(
            s.mlock(A, u64::MAX - 2 * P, false).result,
            Err(Errno::ENOMEM)
        );
    }

    #[test]
    fn permission_and_limit_errors() {
        let mut s = set_with(&[(0, 32)]);
        s.set_mlock_rights(user(0));
        // mlock2's flags are checked before the permission.
        assert_eq!(s.mlock2(A, P, 2).result, Err(Errno::EINVAL));
        assert_eq!(s.mlock(A, P, false).result, Err(Errno::EPERM));
        assert_eq!(s.mlockall(MCL_CURRENT).result, Err(Errno::EPERM));
        assert_eq!(s.mlockall(0).result, Err(Errno::EINVAL));
        assert_eq!(s.munlock(A, P).result, Ok(()));
        assert_eq!(
            s.mmap(0, P, RW, PA | MAP_LOCKED, -1, 0).map(|o| o.addr),
            Err(Errno::EPERM)
        );
        s.set_mlock_rights(user(8 * P));
        assert_eq!(s.mlock(A, 9 * P, false).result, Err(Errno::ENOMEM));
        assert_eq!(s.mlock(A, 8 * P, false).result, Ok(()));
        assert_eq!(s.mlock(A, 8 * P, false).result, Ok(()));
        assert_eq!(s.mlock(A + 4 * P, 5 * P, false).result, Err(Errno::ENOMEM));
        assert_eq!(
            s.mmap(0, P, RW, PA | MAP_LOCKED, -1, 0).map(|o| o.addr),
            Err(Errno::EAGAIN)
        );
        // mremap growth of a locked VMA is limited too.
        assert_eq!(
            s.mremap(A, 8 * P, 9 * P, MremapFlags::from_raw(1).unwrap(), 0)
                .map(|p| p.new_addr),
            Err(Errno::EAGAIN)
        );
        // MCL_CURRENT compares the whole space with the limit.
        assert_eq!(s.mlockall(MCL_CURRENT).result, Err(Errno::ENOMEM));
        assert_eq!(s.mlockall(MCL_FUTURE).result, Ok(()));
        assert_eq!(
            s.mmap(0, P, RW, PA, -1, 0).map(|o| o.addr),
            Err(Errno::EAGAIN)
        );
        s.check_invariants().unwrap();
    }

    #[test]
    fn mlockall_and_def_flags() {
        let mut s = set_with(&[(0, 4), (8, 4)]);
        for bad in [0, MCL_ONFAULT, 8, MCL_CURRENT | 16] {
            assert_eq!(s.mlockall(bad).result, Err(Errno::EINVAL), "{bad}");
        }
        let out = s.mlockall(MCL_CURRENT | MCL_ONFAULT);
        assert_eq!(out.result, Ok(()));
        assert!(out.ignore_errors);
        assert_eq!(out.changed.len(), 2);
        assert!(s.def_flags().is_empty());
        assert_eq!(locked(&s), vec![(0, 4, true, true), (8, 12, true, true)]);
        s.mlockall(MCL_FUTURE | MCL_ONFAULT);
        assert_eq!(s.def_flags(), VM_LOCKED_MASK);
        let out = s.mmap(A + 4 * P, 4 * P, RW, PA | MAP_FIXED, -1, 0).unwrap();
        assert!(!out.populate, "on-fault mappings are not populated");
        assert_eq!(locked(&s), vec![(0, 12, true, true)]);
        // MCL_CURRENT alone forgets MCL_FUTURE.
        s.mlockall(MCL_CURRENT);
        assert!(s.def_flags().is_empty());
        assert_eq!(locked(&s), vec![(0, 12, true, false)]);
        s.mlockall(MCL_FUTURE);
        let out = s.mmap(0, P, RW, PA, -1, 0).unwrap();
        assert!(out.populate);
        // fork: the child keeps no lock bits.
        let mut child = s.clone();
        child.clear_mlock_for_fork();
        assert!(child.def_flags().is_empty());
        assert_eq!(child.locked_vm(), 0);
        child.check_invariants().unwrap();
        let out = s.munlockall();
        assert_eq!(out.result, Ok(()));
        assert!(s.def_flags().is_empty());
        assert_eq!(s.locked_vm(), 0);
        s.check_invariants().unwrap();
    }
}
