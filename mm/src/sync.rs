//! The two locks of an address space, built on `spin` but fit for SMP
//! with a preemptive kernel:
//!
//! * [`SleepRwLock`] — the mmap lock (Linux's `mmap_lock`, an rw
//!   semaphore).  A contended taker *sleeps* through [`CpuOps::wait`]
//!   instead of spinning: its holder may be a system call that was
//!   preempted, or one that runs for milliseconds (`MAP_POPULATE` of a
//!   gigabyte, `MADV_COLLAPSE`), so spinning could last a time slice or
//!   forever (a holder preempted on the waiter's own CPU).  Holders stay
//!   preemptible.
//! * [`PtRwLock`] and [`PtLock`] — the page-table locks (Linux's
//!   `page_table_lock`, spin locks): the whole table shared or
//!   exclusive; [`lock_word`] is the per-PTE-table lock (split PTL), a
//!   word in the table page's frame descriptor.  Held with
//!   preemption disabled, and never
//!   across a sleep, so a holder is always running on some CPU and a
//!   spinner waits for a bounded critical section; every turn of the spin
//!   calls [`CpuOps::relax`], which answers the other CPUs' requests (TLB
//!   shootdowns, cross-CPU calls) — a holder may be waiting for exactly
//!   that, and the spinner may have interrupts masked (a fault handler).
//!
//! Neither lock is fair: a stream of readers can keep a writer waiting
//! (Linux's rwsem hands over to a queued writer); the writers here are
//! system calls of the same process, so a reader stream that never ends
//! is a process starving itself.

use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicI32, AtomicU32, Ordering, Ordering::SeqCst, fence};

use crate::cpu::CpuOps;

/// Spin-loop turns a contended [`SleepRwLock`] taker spends before it
/// sleeps: some tens of microseconds under QEMU TCG, about a short
/// `munmap` or `mprotect` of another thread.
const SPIN_TURNS: u32 = 2000;

/// A sleeping reader-writer lock (see the module doc).
///
/// No lost wake-up: a taker that fails counts itself in `sleepers`, then
/// waits with a condition that re-tests the lock after it is queued; a
/// releaser unlocks, then reads `sleepers`.  Both sides put a `SeqCst`
/// fence between their store and their load, so either the releaser sees
/// the sleeper (and wakes it) or the sleeper's condition sees the lock
/// free.
pub struct SleepRwLock<T> {
    lock: RwLock<T>,
    /// Takers counted before they wait (they may not be queued yet).
    sleepers: AtomicU32,
}

impl<T> SleepRwLock<T> {
    pub const fn new(value: T) -> Self {
        Self {
            lock: RwLock::new(value),
            sleepers: AtomicU32::new(0),
        }
    }

    /// The wait key: the lock's address (waiters of different locks may
    /// share a hashed queue; the condition tells them apart).
    fn key(&self) -> usize {
        self as *const Self as usize
    }

    /// Shared access, sleeping while a writer holds the lock.
    pub fn read<'l>(&'l self, ops: &'l dyn CpuOps) -> SleepReadGuard<'l, T> {
        if let Some(g) = self.spin(ops, |l| l.writer_count() == 0, |l| l.try_read(ops)) {
            return g;
        }
        loop {
            if let Some(g) = self.try_read(ops) {
                return g;
            }
            self.sleepers.fetch_add(1, SeqCst);
            fence(SeqCst);
            ops.wait(self.key(), &|| self.lock.writer_count() == 0);
            self.sleepers.fetch_sub(1, SeqCst);
        }
    }

    /// Exclusive access, sleeping while anyone holds the lock.
    pub fn write<'l>(&'l self, ops: &'l dyn CpuOps) -> SleepWriteGuard<'l, T> {
        let free = |l: &RwLock<T>| l.writer_count() == 0 && l.reader_count() == 0;
        if let Some(g) = self.spin(ops, free, |l| l.try_write(ops)) {
            return g;
        }
        loop {
            if let Some(g) = self.try_write(ops) {
                return g;
            }
            self.sleepers.fetch_add(1, SeqCst);
            fence(SeqCst);
            ops.wait(self.key(), &|| {
                self.lock.writer_count() == 0 && self.lock.reader_count() == 0
            });
            self.sleepers.fetch_sub(1, SeqCst);
        }
    }

    /// Optimistic spinning before sleeping (as Linux's rwsem spins while
    /// the owner runs): most holders are short system calls of another
    /// thread on another CPU, and a sleep and wake-up (a context switch, a
    /// reschedule IPI) cost more than they last.  Up to [`SPIN_TURNS`]
    /// turns of [`CpuOps::relax`], taking the lock as soon as `free` says
    /// it may be; `None` to go to sleep.
    fn spin<'l, G>(
        &'l self,
        ops: &dyn CpuOps,
        free: impl Fn(&RwLock<T>) -> bool,
        take: impl Fn(&'l Self) -> Option<G>,
    ) -> Option<G> {
        for _ in 0..SPIN_TURNS {
            if free(&self.lock)
                && let Some(g) = take(self)
            {
                return Some(g);
            }
            ops.relax();
        }
        None
    }

    /// Shared access if no writer holds the lock now (khugepaged's scan,
    /// as Linux's `mmap_read_trylock`).
    pub fn try_read<'l>(&'l self, ops: &'l dyn CpuOps) -> Option<SleepReadGuard<'l, T>> {
        let g = self.lock.try_read()?;
        Some(SleepReadGuard {
            g: Some(g),
            owner: self,
            ops,
        })
    }

    /// Exclusive access if nobody holds the lock now.
    pub fn try_write<'l>(&'l self, ops: &'l dyn CpuOps) -> Option<SleepWriteGuard<'l, T>> {
        let g = self.lock.try_write()?;
        Some(SleepWriteGuard {
            g: Some(g),
            owner: self,
            ops,
        })
    }

    /// The value, through exclusive access to the lock (teardown).
    pub fn get_mut(&mut self) -> &mut T {
        self.lock.get_mut()
    }

    /// Wake the sleepers, if any, after a release.
    fn released(&self, ops: &dyn CpuOps) {
        fence(SeqCst);
        if self.sleepers.load(SeqCst) != 0 {
            ops.wake(self.key());
        }
    }

    /// Takers waiting now (for tests).
    pub fn sleepers(&self) -> u32 {
        self.sleepers.load(SeqCst)
    }
}

/// Shared access to a [`SleepRwLock`]'s value.
pub struct SleepReadGuard<'l, T> {
    g: Option<RwLockReadGuard<'l, T>>,
    owner: &'l SleepRwLock<T>,
    ops: &'l dyn CpuOps,
}

impl<T> Deref for SleepReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.g.as_ref().expect("held until drop")
    }
}

impl<T> Drop for SleepReadGuard<'_, T> {
    fn drop(&mut self) {
        self.g = None;
        self.owner.released(self.ops);
    }
}

/// Exclusive access to a [`SleepRwLock`]'s value.
pub struct SleepWriteGuard<'l, T> {
    g: Option<RwLockWriteGuard<'l, T>>,
    owner: &'l SleepRwLock<T>,
    ops: &'l dyn CpuOps,
}

impl<T> Deref for SleepWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.g.as_ref().expect("held until drop")
    }
}

impl<'l, T> SleepWriteGuard<'l, T> {
    /// Exclusive access becomes shared without a writer getting in between
    /// (Linux's `mmap_write_downgrade`): munmap detaches its VMAs
    /// exclusively, then zaps with readers (other threads' faults) let in.
    pub fn downgrade(mut self) -> SleepReadGuard<'l, T> {
        let g = self.g.take().expect("held until drop").downgrade();
        // Dropping `self` (now holding nothing) wakes the sleepers: readers
        // may enter, writers test again and wait on.
        SleepReadGuard {
            g: Some(g),
            owner: self.owner,
            ops: self.ops,
        }
    }
}

impl<T> DerefMut for SleepWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.g.as_mut().expect("held until drop")
    }
}

impl<T> Drop for SleepWriteGuard<'_, T> {
    fn drop(&mut self) {
        self.g = None;
        self.owner.released(self.ops);
    }
}

/// A spin lock held with preemption disabled whose word lives elsewhere:
/// the PTE-table lock sits in the table page's frame descriptor (its
/// `entire_mapcount`, unused for page-table pages), one lock per table as
/// Linux's split PTL keeps `ptl` in the table's `struct ptdesc`.  The word
/// is 0 when free, 1 when held.
pub fn lock_word<'l>(word: &'l AtomicI32, ops: &'l dyn CpuOps) -> WordLockGuard<'l> {
    ops.preempt_disable();
    spin_word(word, ops);
    WordLockGuard {
        word,
        ops,
        preempt: true,
    }
}

/// [`lock_word`] for a caller that already runs with preemption off (it
/// holds a page-table lock, as every taker of a PTE table's lock does):
/// no second count taken and dropped around it.
pub fn lock_word_nested<'l>(word: &'l AtomicI32, ops: &'l dyn CpuOps) -> WordLockGuard<'l> {
    spin_word(word, ops);
    WordLockGuard {
        word,
        ops,
        preempt: false,
    }
}

fn spin_word(word: &AtomicI32, ops: &dyn CpuOps) {
    while word
        .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        while word.load(Ordering::Relaxed) != 0 {
            ops.relax();
        }
    }
}

/// A held [`lock_word`] lock; released (and preemption back on, if the
/// lock turned it off) on drop.
pub struct WordLockGuard<'l> {
    word: &'l AtomicI32,
    ops: &'l dyn CpuOps,
    preempt: bool,
}

impl Drop for WordLockGuard<'_> {
    fn drop(&mut self) {
        self.word.store(0, Ordering::Release);
        if self.preempt {
            self.ops.preempt_enable();
        }
    }
}

/// The running kernel's CPU hooks, for [`SpinLock`]s, whose users reach
/// them without an `MmCtx` (the swap map and swap cache).  Unset in host
/// tests, where preemption does not exist.
static CPU_OPS: spin::Once<&'static dyn CpuOps> = spin::Once::new();

/// The spin-wait turn of the plain spin locks below: the registered
/// CPU hooks' [`CpuOps::pause`] (arm64 `yield`), `spin_loop` before they
/// are registered and in host tests.
pub struct Relax;

impl spin::RelaxStrategy for Relax {
    #[inline]
    fn relax() {
        pause();
    }
}

/// One turn of a spin-wait loop on a flag or bit lock (see [`Relax`]).
#[inline]
pub fn pause() {
    match CPU_OPS.get() {
        Some(o) => o.pause(),
        None => core::hint::spin_loop(),
    }
}

/// `spin`'s lock types with [`Relax`]: the one way to spin in `mm` and the
/// kernel, so every contended wait yields to the holder where the CPU (or
/// QEMU) can act on that.
pub type Mutex<T> = spin::mutex::Mutex<T, Relax>;
pub type MutexGuard<'a, T> = spin::mutex::MutexGuard<'a, T, Relax>;
pub type RwLock<T> = spin::rwlock::RwLock<T, Relax>;
pub type RwLockReadGuard<'a, T> = spin::rwlock::RwLockReadGuard<'a, T, Relax>;
pub type RwLockWriteGuard<'a, T> = spin::rwlock::RwLockWriteGuard<'a, T, Relax>;

/// Registers the kernel's CPU hooks for [`SpinLock`] (once, at boot).
pub fn set_cpu_ops(ops: &'static dyn CpuOps) {
    CPU_OPS.call_once(|| ops);
}

/// A [`PtLock`] for data reached without an `MmCtx`, taken with the CPU
/// hooks [`set_cpu_ops`] registered: the swap map and the swap cache.
/// Their locks are taken both from preemptible code and under the
/// page-table lock; a holder preempted while another CPU spun on its lock
/// under a page-table lock that a third spinner wanted deadlocked both
/// CPUs (seen in the `exhaust-swap` suite: khugepaged's swap-in waiting
/// for the swap map under the page-table lock, a direct reclaimer waiting
/// for that lock).
pub struct SpinLock<T>(PtLock<T>);

impl<T> SpinLock<T> {
    pub const fn new(value: T) -> Self {
        Self(PtLock::new(value))
    }

    /// Takes the lock, preemption off until the guard is dropped.
    pub fn lock(&self) -> PtLockGuard<'_, T> {
        let ops: &'static dyn CpuOps = match CPU_OPS.get() {
            Some(o) => *o,
            None => &crate::cpu::SingleCpu,
        };
        self.0.lock(ops)
    }

    /// [`Self::lock`] for a caller that already runs with preemption off
    /// (it holds a page-table lock): no second preemption count taken and
    /// dropped around it, as [`lock_word_nested`].
    pub fn lock_nested(&self) -> PtLockGuard<'_, T> {
        let ops: &'static dyn CpuOps = match CPU_OPS.get() {
            Some(o) => *o,
            None => &crate::cpu::SingleCpu,
        };
        self.0.lock_nested(ops)
    }

    /// The value, through exclusive access to the lock (teardown).
    pub fn get_mut(&mut self) -> &mut T {
        self.0.get_mut()
    }
}

impl<T: Default> Default for SpinLock<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

/// A spin lock held with preemption disabled (see the module doc).
pub struct PtLock<T> {
    lock: Mutex<T>,
}

impl<T> PtLock<T> {
    pub const fn new(value: T) -> Self {
        Self {
            lock: Mutex::new(value),
        }
    }

    /// The value, through exclusive access to the lock (teardown).
    pub fn get_mut(&mut self) -> &mut T {
        self.lock.get_mut()
    }

    /// Lock, spinning (and answering other CPUs) while another CPU holds it.
    pub fn lock<'l>(&'l self, ops: &'l dyn CpuOps) -> PtLockGuard<'l, T> {
        ops.preempt_disable();
        let mut g = self.lock_nested(ops);
        g.preempt = true;
        g
    }

    /// [`Self::lock`] with preemption already off (the caller holds a
    /// page-table lock): the guard leaves it off.
    pub fn lock_nested<'l>(&'l self, ops: &'l dyn CpuOps) -> PtLockGuard<'l, T> {
        loop {
            if let Some(g) = self.lock.try_lock() {
                return PtLockGuard {
                    g: Some(g),
                    ops,
                    preempt: false,
                };
            }
            while self.lock.is_locked() {
                ops.relax();
            }
        }
    }
}

/// A held [`PtLock`]; preemption comes back on when it is dropped.
pub struct PtLockGuard<'l, T> {
    g: Option<MutexGuard<'l, T>>,
    ops: &'l dyn CpuOps,
    /// Taken by [`PtLock::lock`], which disabled preemption: enabled again
    /// on drop.
    preempt: bool,
}

impl<T> Deref for PtLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.g.as_ref().expect("held until drop")
    }
}

impl<T> DerefMut for PtLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.g.as_mut().expect("held until drop")
    }
}

impl<T> Drop for PtLockGuard<'_, T> {
    fn drop(&mut self) {
        self.g = None;
        if self.preempt {
            self.ops.preempt_enable();
        }
    }
}

/// A reader-writer spin lock held with preemption disabled: the table
/// lock of split page-table locking.  Shared by first-touch faults that
/// only fill empty entries (of a PTE table, or an empty PMD) and by zaps,
/// each also holding the lock of the table it changes ([`lock_word`]);
/// exclusive for everything else.  Like [`PtLock`],
/// never held across a sleep, and spinners answer other CPUs.  Readers
/// are preferred (a writer waits for a moment with no reader); the
/// readers are page faults of the same process, which come and go.
pub struct PtRwLock<T> {
    lock: RwLock<T>,
}

impl<T> PtRwLock<T> {
    pub const fn new(value: T) -> Self {
        Self {
            lock: RwLock::new(value),
        }
    }

    /// The value, through exclusive access to the lock (teardown).
    pub fn get_mut(&mut self) -> &mut T {
        self.lock.get_mut()
    }

    /// Shared access, spinning while a writer holds the lock.
    pub fn read<'l>(&'l self, ops: &'l dyn CpuOps) -> PtReadGuard<'l, T> {
        ops.preempt_disable();
        loop {
            if let Some(g) = self.lock.try_read() {
                return PtReadGuard { g: Some(g), ops };
            }
            while self.lock.writer_count() != 0 {
                ops.relax();
            }
        }
    }

    /// Exclusive access, spinning while anyone holds the lock.
    pub fn write<'l>(&'l self, ops: &'l dyn CpuOps) -> PtWriteGuard<'l, T> {
        ops.preempt_disable();
        loop {
            if let Some(g) = self.lock.try_write() {
                return PtWriteGuard { g: Some(g), ops };
            }
            while self.lock.writer_count() != 0 || self.lock.reader_count() != 0 {
                ops.relax();
            }
        }
    }
}

/// Shared access to a [`PtRwLock`]'s value; preemption comes back on when
/// it is dropped.
pub struct PtReadGuard<'l, T> {
    g: Option<RwLockReadGuard<'l, T>>,
    ops: &'l dyn CpuOps,
}

impl<T> Deref for PtReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.g.as_ref().expect("held until drop")
    }
}

impl<T> Drop for PtReadGuard<'_, T> {
    fn drop(&mut self) {
        self.g = None;
        self.ops.preempt_enable();
    }
}

/// Exclusive access to a [`PtRwLock`]'s value; preemption comes back on
/// when it is dropped.
pub struct PtWriteGuard<'l, T> {
    g: Option<RwLockWriteGuard<'l, T>>,
    ops: &'l dyn CpuOps,
}

impl<T> Deref for PtWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.g.as_ref().expect("held until drop")
    }
}

impl<T> DerefMut for PtWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.g.as_mut().expect("held until drop")
    }
}

impl<T> Drop for PtWriteGuard<'_, T> {
    fn drop(&mut self) {
        self.g = None;
        self.ops.preempt_enable();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::SingleCpu;
    use core::sync::atomic::{AtomicBool, AtomicU64};
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    /// A `CpuOps` whose `wait` blocks on a std condition variable and
    /// whose `wake` notifies it: a lost wake-up hangs the tests below
    /// (they fail by timeout) instead of being papered over by polling.
    struct CondOps {
        m: std::sync::Mutex<u64>,
        cv: std::sync::Condvar,
        waits: AtomicU64,
    }

    impl CpuOps for CondOps {
        fn cpu_id(&self) -> usize {
            0
        }
        fn irq_save(&self) -> usize {
            0
        }
        fn irq_restore(&self, _saved: usize) {}
        fn wait(&self, _key: usize, cond: &dyn Fn() -> bool) {
            let mut g = self.m.lock().unwrap();
            while !cond() {
                self.waits.fetch_add(1, SeqCst);
                g = self.cv.wait(g).unwrap();
            }
        }
        fn wake(&self, _key: usize) {
            let mut g = self.m.lock().unwrap();
            *g += 1;
            self.cv.notify_all();
        }
    }

    fn ops() -> &'static CondOps {
        std::boxed::Box::leak(std::boxed::Box::new(CondOps {
            m: std::sync::Mutex::new(0),
            cv: std::sync::Condvar::new(),
            waits: AtomicU64::new(0),
        }))
    }

    #[test]
    fn reader_sleeps_until_the_writer_releases() {
        let ops = ops();
        let l = Arc::new(SleepRwLock::new(0u64));
        let w = l.write(ops);
        let started = Arc::new(AtomicBool::new(false));
        let (l2, s2) = (l.clone(), started.clone());
        let t = thread::spawn(move || {
            s2.store(true, SeqCst);
            *l2.read(ops)
        });
        while !started.load(SeqCst) || l.sleepers() == 0 {
            thread::yield_now();
        }
        // The reader is counted and waiting: it did not get in.
        thread::sleep(Duration::from_millis(20));
        assert!(!t.is_finished());
        let mut w = w;
        *w = 7;
        drop(w);
        assert_eq!(t.join().unwrap(), 7);
        assert!(ops.waits.load(SeqCst) > 0, "the reader slept");
    }

    #[test]
    fn writers_and_readers_never_overlap_and_never_hang() {
        let ops = ops();
        let l = Arc::new(SleepRwLock::new((0u64, 0u64)));
        let mut ts = std::vec::Vec::new();
        for i in 0..4 {
            let l = l.clone();
            ts.push(thread::spawn(move || {
                for _ in 0..2000 {
                    if i % 2 == 0 {
                        let mut g = l.write(ops);
                        g.0 += 1;
                        g.1 += 1;
                    } else {
                        let g = l.read(ops);
                        assert_eq!(g.0, g.1, "a reader saw a half-done write");
                    }
                }
            }));
        }
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(*l.read(ops), (4000, 4000));
        assert_eq!(l.sleepers(), 0);
    }

    #[test]
    fn pt_lock_excludes_and_counts_preemption() {
        struct Count(AtomicU64);
        impl CpuOps for Count {
            fn cpu_id(&self) -> usize {
                0
            }
            fn irq_save(&self) -> usize {
                0
            }
            fn irq_restore(&self, _saved: usize) {}
            fn preempt_disable(&self) {
                self.0.fetch_add(1, SeqCst);
            }
            fn preempt_enable(&self) {
                self.0.fetch_sub(1, SeqCst);
            }
        }
        let c: &'static Count =
            std::boxed::Box::leak(std::boxed::Box::new(Count(AtomicU64::new(0))));
        let l = Arc::new(PtLock::new(0u64));
        let mut ts = std::vec::Vec::new();
        for _ in 0..4 {
            let l = l.clone();
            ts.push(thread::spawn(move || {
                for _ in 0..10_000 {
                    *l.lock(c) += 1;
                }
            }));
        }
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(*l.lock(&SingleCpu), 40_000);
        assert_eq!(c.0.load(SeqCst), 0, "every lock re-enabled preemption");
    }

    #[test]
    fn downgrade_lets_readers_in_and_keeps_writers_out() {
        let l = SleepRwLock::new(5u32);
        let w = l.write(&SingleCpu);
        assert!(l.try_read(&SingleCpu).is_none());
        let r = w.downgrade();
        assert_eq!(*r, 5);
        assert!(l.try_read(&SingleCpu).is_some(), "a reader gets in");
        assert!(l.try_write(&SingleCpu).is_none(), "a writer does not");
        drop(r);
        assert!(l.try_write(&SingleCpu).is_some());
    }

    #[test]
    fn word_lock_excludes() {
        let w = AtomicI32::new(0);
        let g = lock_word(&w, &SingleCpu);
        assert_eq!(w.load(SeqCst), 1);
        drop(g);
        assert_eq!(w.load(SeqCst), 0);
    }

    /// Three threads take one folio's lock with `lock_sleeping` in turn.
    /// An unlock clears `WAITERS` and wakes everyone; a sleeper that
    /// then finds another thread already holding the lock goes back to
    /// sleep inside `wait`.  Without the condition setting `WAITERS`
    /// again (`Folio::lock_sleeping`), the next unlock wakes nobody and
    /// the last thread sleeps forever: this test then fails by its
    /// deadline (checked by reverting the fix: three runs out of three
    /// hung with two threads asleep; with it, 0.15 s).
    #[test]
    fn folio_lock_sleepers_never_lose_a_wake_up() {
        use crate::emu::EmuMem;
        use crate::physmem::buddy::{AllocFlags, BuddyAllocator};
        use crate::physmem::memmap::{FrameDesc, Memmap};
        const BASE: u64 = 0x10_0000;
        const LEN: u64 = 0x4_0000;
        let ops = ops();
        let descs: &'static [FrameDesc] = std::boxed::Box::leak(
            (0..LEN >> crate::addr::PAGE_SHIFT)
                .map(|_| FrameDesc::new())
                .collect::<std::vec::Vec<_>>()
                .into_boxed_slice(),
        );
        let mem: &'static EmuMem =
            std::boxed::Box::leak(std::boxed::Box::new(EmuMem::new(BASE, LEN)));
        let a: &'static BuddyAllocator<'static> =
            std::boxed::Box::leak(std::boxed::Box::new(BuddyAllocator::new(
                Memmap::new(descs, BASE >> crate::addr::PAGE_SHIFT),
                mem,
                ops,
            )));
        a.add_free_range(BASE, BASE + LEN);
        let pfn = a.alloc(0, AllocFlags::USER).expect("a free frame").pfn();
        let done = Arc::new(AtomicU64::new(0));
        let inside = Arc::new(AtomicU64::new(0));
        for _ in 0..3 {
            let (done, inside) = (done.clone(), inside.clone());
            thread::spawn(move || {
                let f = a.folio_from_pfn(pfn).expect("allocated");
                for _ in 0..3000 {
                    let g = f.lock_sleeping();
                    assert_eq!(inside.fetch_add(1, SeqCst), 0, "two holders at once");
                    thread::yield_now();
                    inside.fetch_sub(1, SeqCst);
                    drop(g);
                }
                done.fetch_add(1, SeqCst);
            });
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while done.load(SeqCst) < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "a folio-lock sleeper was never woken ({} of 3 threads finished)",
                done.load(SeqCst)
            );
            thread::sleep(Duration::from_millis(10));
        }
    }
}
