//! The CPU contract: what `mm` needs from the CPU layer, and the CPU
//! numbering every part of the kernel shares.
//!
//! * [`MAX_CPUS`]: the one bound on CPU ids.  The allocator's per-CPU
//!   caches are sized by it, and the kernel's scheduler checks its own
//!   `NR_CPUS` (the CPUs it runs today) against it.
//! * [`CpuOps`]: the running CPU's id, interrupt masking and a call on the
//!   other CPUs, implemented by the kernel (`KernelCpu`) and, trivially,
//!   by [`SingleCpu`] for host tests.  The allocator takes it as a hook
//!   rather than asking callers to mask interrupts, so every entry point is
//!   safe to call from anywhere (including `Folio::put` deep in other code).
//!
//! * [`AtomicCpuSet`] / [`CpuSet`]: which CPUs may hold TLB entries of
//!   an address space (Linux's `mm_cpumask`).  Every page table carries
//!   one, its [`crate::paging::TlbGather`]s read it when they flush, and
//!   [`crate::paging::TlbOps`] gets the snapshot: the CPUs a shootdown must
//!   reach.
//!
//!   It also carries what the address-space locks ([`crate::sync`]) need
//!   from the scheduler: preemption off, a spin-loop turn that answers
//!   other CPUs, and sleeping until a condition holds.
//!
//! Lock order: none here; [`IrqGuard`] only masks interrupts on the
//! current CPU.

/// The largest number of CPUs the kernel runs on; CPU ids are
/// `0..MAX_CPUS`.  Per-CPU allocator caches exist for each; an id beyond it
/// bypasses them (correct, just slower).
pub const MAX_CPUS: usize = 8;

const _: () = assert!(MAX_CPUS <= 64, "a CpuSet is one 64-bit word");

/// A snapshot of a set of CPU ids (`0..MAX_CPUS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuSet(u64);

impl CpuSet {
    pub const EMPTY: CpuSet = CpuSet(0);
    /// Every CPU id below [`MAX_CPUS`].
    pub const ALL: CpuSet = CpuSet(if MAX_CPUS == 64 {
        u64::MAX
    } else {
        (1 << MAX_CPUS) - 1
    });
    pub const fn from_bits(bits: u64) -> CpuSet {
        CpuSet(bits & CpuSet::ALL.0)
    }
    pub const fn bits(self) -> u64 {
        self.0
    }
    pub const fn contains(self, cpu: usize) -> bool {
        cpu < MAX_CPUS && self.0 & (1 << cpu) != 0
    }
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }
    /// The set without `cpu` (a shootdown's targets: all but the caller).
    pub const fn without(self, cpu: usize) -> CpuSet {
        if cpu < MAX_CPUS {
            CpuSet(self.0 & !(1 << cpu))
        } else {
            self
        }
    }
    /// The ids in the set, lowest first.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..MAX_CPUS).filter(move |&c| self.contains(c))
    }
}

/// An address space's CPU set (Linux's `mm_cpumask`): the CPUs that may
/// hold TLB entries tagged with its ASID/PCID, changed atomically, and its
/// TLB flush generation (Linux x86's `mm->context.tlb_gen`).
///
/// Ordering contract (what makes skipping CPUs outside the set safe): a
/// CPU [`insert`](Self::insert)s itself *before* it loads the root, and a
/// flusher takes its targets with [`begin_flush`](Self::begin_flush)
/// *after* it changed the entries: that bumps the generation, then reads
/// the set (all `SeqCst`).  So a CPU missing from the snapshot either
/// loaded the root after the change (and cannot have cached the old
/// entry), or left the set before: where the arch trims the set (x86: a
/// CPU [`remove`](Self::remove)s itself when it switches away, and its
/// PCID keeps the space's entries cached), the CPU compares the
/// generation it last flushed with [`tlb_gen`](Self::tlb_gen) when it
/// comes back and flushes if a flush went by meanwhile (the argument is
/// written at the kernel's `sched::switch_mm`).  Where TLBIs are broadcast
/// (arm64) the bits are never cleared while the space lives.  The set
/// empties when the ASID is freed ([`clear`](Self::clear), which also
/// starts a new generation, so a reused ASID is flushed where its
/// previous owner's entries may still sit).
///
/// The generation only grows, for the life of the kernel: a CPU's record
/// of the generation it flushed can never equal a later one by wrapping.
///
/// A user page table's set must be its ASID's (`MmCtx::cpus_of`): the
/// kernel matches a flush's generation against the per-PCID record of
/// that ASID.
#[derive(Debug, Default)]
pub struct AtomicCpuSet {
    bits: core::sync::atomic::AtomicU64,
    tlb_gen: core::sync::atomic::AtomicU64,
}

/// Whom one flush must reach: the snapshot of a space's CPU set taken
/// after the space's flush generation was bumped to `tlb_gen`
/// ([`AtomicCpuSet::begin_flush`]).  A CPU that performs the flush while
/// it runs the space may record `tlb_gen` as flushed if it had
/// everything before it (`tlb_gen - 1`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushTargets {
    pub cpus: CpuSet,
    pub tlb_gen: u64,
}

impl AtomicCpuSet {
    pub const fn new(set: CpuSet) -> Self {
        AtomicCpuSet {
            bits: core::sync::atomic::AtomicU64::new(set.0),
            tlb_gen: core::sync::atomic::AtomicU64::new(0),
        }
    }
    /// Add `cpu`; true if it was not in the set.
    pub fn insert(&self, cpu: usize) -> bool {
        if cpu >= MAX_CPUS {
            return false;
        }
        let bit = 1 << cpu;
        self.bits
            .fetch_or(bit, core::sync::atomic::Ordering::SeqCst)
            & bit
            == 0
    }
    pub fn remove(&self, cpu: usize) {
        if cpu < MAX_CPUS {
            self.bits
                .fetch_and(!(1 << cpu), core::sync::atomic::Ordering::SeqCst);
        }
    }
    pub fn load(&self) -> CpuSet {
        CpuSet(self.bits.load(core::sync::atomic::Ordering::SeqCst))
    }
    /// Empty the set (the ASID is being freed) and start a new generation.
    pub fn clear(&self) {
        self.bits.store(0, core::sync::atomic::Ordering::SeqCst);
        self.tlb_gen
            .fetch_add(1, core::sync::atomic::Ordering::SeqCst);
    }
    /// The flush generation now (read by a CPU switching the space in,
    /// after it [`insert`](Self::insert)ed itself and a full fence).
    pub fn tlb_gen(&self) -> u64 {
        self.tlb_gen.load(core::sync::atomic::Ordering::SeqCst)
    }
    /// Start a flush of entries already changed: bump the generation,
    /// *then* read the set (the order the contract above relies on).
    pub fn begin_flush(&self) -> FlushTargets {
        let tlb_gen = self
            .tlb_gen
            .fetch_add(1, core::sync::atomic::Ordering::SeqCst)
            + 1;
        FlushTargets {
            cpus: self.load(),
            tlb_gen,
        }
    }
}

/// The target of kernel-space flushes: every CPU (kernel mappings are
/// global, cached by any CPU whatever it runs).
pub static ALL_CPUS: AtomicCpuSet = AtomicCpuSet::new(CpuSet::ALL);

/// What the allocator needs from the CPU layer.
///
/// The allocator calls `irq_save` before taking any of its locks and
/// `irq_restore` after releasing them, and calls `cpu_id` with interrupts
/// masked (so, with no preemption in this kernel, the id stays valid).
/// Choosing a hook over "callers must mask interrupts" keeps every entry
/// point safe to call from anywhere, including `Folio::put` deep in other
/// code.
pub trait CpuOps: Sync {
    /// The id of the running CPU (0-based; ids ≥ [`MAX_CPUS`] bypass the caches).
    fn cpu_id(&self) -> usize;
    /// Masks interrupts on this CPU; returns the state to restore.  The
    /// state must be 0 exactly when there is nothing to restore (interrupts
    /// were already masked, or there are none): the allocator skips
    /// `irq_restore(0)`, which saves a dynamic call per operation in
    /// interrupt handlers, in code that runs masked, and on hosts.
    fn irq_save(&self) -> usize;
    /// Restores the state `irq_save` returned (never called with 0).
    fn irq_restore(&self, saved: usize);
    /// Masks interrupts and reports the CPU in one call: `(saved, cpu)`.
    /// The allocation and free fast paths use this, so a dynamic call is
    /// saved per operation; override it if both come cheaper together.
    #[inline]
    fn irq_save_cpu(&self) -> (usize, usize) {
        let saved = self.irq_save();
        (saved, self.cpu_id())
    }
    /// True for a CPU layer with nothing to do: one CPU (id 0) and no
    /// interrupts to mask.  The allocator reads this once, at
    /// construction, and then skips the hooks on its fast paths: a dynamic
    /// call that returns `(0, 0)` still cost ~1.5 ns per allocation or
    /// free on the host (the call, and the register saves it forces on
    /// paths that are otherwise leaf code).
    fn is_trivial(&self) -> bool {
        false
    }
    /// Runs `f` on every other online CPU (with interrupts masked there) and
    /// waits for all of them: how an allocation that found no memory drains
    /// the other CPUs' caches.  The default, for one CPU, does nothing.
    fn call_on_others(&self, f: &(dyn Fn() + Sync)) {
        let _ = f;
    }
    /// Disables preemption of the running thread until the matching
    /// [`Self::preempt_enable`] (calls nest).  The page-table lock is held
    /// this way ([`crate::sync::PtLock`]), so its holder always runs.
    fn preempt_disable(&self) {}
    /// Undoes one [`Self::preempt_disable`].
    fn preempt_enable(&self) {}
    /// One turn of a spin-wait loop.  The kernel answers the other CPUs'
    /// requests here (TLB shootdowns, cross-CPU calls): the CPU holding
    /// the lock may be waiting for this one, whose interrupts may be
    /// masked.
    fn relax(&self) {
        self.pause();
    }
    /// The CPU's spin-wait hint alone, with nothing answered: every turn
    /// of a plain spin lock's wait ([`crate::sync::Relax`]).  The kernel's
    /// is arm64 `yield`, which QEMU's single-threaded TCG (`-icount` with
    /// several CPUs) takes as "run another vCPU now": with `isb`, the
    /// default, a vCPU spinning on a lock another vCPU holds burned its whole
    /// round-robin slice (up to 0.1 s of guest time) per contention.
    fn pause(&self) {
        core::hint::spin_loop();
    }
    /// Blocks the running thread until `cond()` holds; whoever may make it
    /// true calls [`Self::wake`] with the same `key` afterwards.  `cond`
    /// must be re-tested after the thread is queued (no lost wake-ups),
    /// and must be quick (it may run with interrupts masked).  The default
    /// (host tests, and the kernel before its scheduler runs) spins.
    fn wait(&self, key: usize, cond: &dyn Fn() -> bool) {
        let _ = key;
        while !cond() {
            self.relax();
        }
    }
    /// Wakes the threads [`Self::wait`]ing on `key` (they re-test their
    /// conditions; spurious wake-ups are allowed).
    fn wake(&self, key: usize) {
        let _ = key;
    }
}

/// One CPU and no interrupts to mask: the host tests, and the kernel before
/// it brings up interrupts.
pub struct SingleCpu;

impl CpuOps for SingleCpu {
    fn cpu_id(&self) -> usize {
        0
    }
    fn irq_save(&self) -> usize {
        0
    }
    fn irq_restore(&self, _saved: usize) {}
    fn irq_save_cpu(&self) -> (usize, usize) {
        (0, 0)
    }
    fn is_trivial(&self) -> bool {
        true
    }
}

/// The allocator's handle on its [`CpuOps`], with [`CpuOps::is_trivial`]
/// cached so the fast paths test a field instead of making a call.
#[derive(Clone, Copy)]
pub(crate) struct CpuHook<'a> {
    pub(crate) ops: &'a dyn CpuOps,
    trivial: bool,
}

impl<'a> CpuHook<'a> {
    pub(crate) fn new(ops: &'a dyn CpuOps) -> Self {
        Self {
            ops,
            trivial: ops.is_trivial(),
        }
    }

    /// [`CpuOps::is_trivial`], as read at construction.
    #[inline]
    pub(crate) fn trivial(&self) -> bool {
        self.trivial
    }

    /// Masks interrupts for the guard's lifetime.
    #[inline]
    pub(crate) fn irq_guard(&self) -> IrqGuard<'a> {
        if self.trivial {
            IrqGuard {
                ops: self.ops,
                saved: 0,
            }
        } else {
            IrqGuard::new(self.ops)
        }
    }

    /// Masks interrupts and returns the running CPU's id with the guard.
    #[inline]
    pub(crate) fn irq_guard_on_cpu(&self) -> (IrqGuard<'a>, usize) {
        if self.trivial {
            (
                IrqGuard {
                    ops: self.ops,
                    saved: 0,
                },
                0,
            )
        } else {
            IrqGuard::new_on_cpu(self.ops)
        }
    }
}

/// Interrupts masked for the guard's lifetime.
pub(crate) struct IrqGuard<'a> {
    ops: &'a dyn CpuOps,
    saved: usize,
}

impl<'a> IrqGuard<'a> {
    #[inline]
    pub(crate) fn new(ops: &'a dyn CpuOps) -> Self {
        let saved = ops.irq_save();
        Self { ops, saved }
    }

    /// Masks interrupts and returns the running CPU's id with the guard.
    #[inline]
    pub(crate) fn new_on_cpu(ops: &'a dyn CpuOps) -> (Self, usize) {
        let (saved, cpu) = ops.irq_save_cpu();
        (Self { ops, saved }, cpu)
    }
}

impl Drop for IrqGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // 0: interrupts were masked before `irq_save` and still are.
        if self.saved != 0 {
            self.ops.irq_restore(self.saved);
        }
    }
}
