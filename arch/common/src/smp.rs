//! The CPU bookkeeping both arch crates' `smp.rs` share: which CPUs exist
//! and run, each one's hardware id (x86 LAPIC id, arm64 MPIDR affinity),
//! its tick and IPI counts, its pending IPI reasons and the IPI hook.  The
//! arch code does the hardware part (start-up, timers, raising and
//! acknowledging the interrupt) and keeps its state in one [`CpuTable`].
//!
//! Logical ids are `0..possible()`, the boot CPU is 0 whatever its place
//! in the firmware's list.
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use mm::cpu::{AtomicCpuSet, CpuSet, MAX_CPUS};

/// One CPU's counters and mailbox.
struct Slot {
    hw_id: AtomicU64,
    ticks: AtomicU64,
    ipis: AtomicU64,
    /// Reasons sent and not yet handled (taken whole by the receiver).
    pending: AtomicU32,
}

/// The CPUs of the machine (see the module doc).
pub struct CpuTable {
    possible: AtomicUsize,
    online: AtomicCpuSet,
    slots: [Slot; MAX_CPUS],
    hook: AtomicUsize,
}

/// The logical id [`CpuTable::set_possible`] gives the CPU with hardware
/// id `hw` when the firmware lists `listed` and `boot` is the boot CPU's
/// (for tables read before the CPUs are numbered, such as NUMA affinity);
/// `None` if it is not listed or does not fit in `MAX_CPUS`.
pub fn logical_id(boot: u64, listed: &[u64], hw: u64) -> Option<usize> {
    if hw == boot {
        return Some(0);
    }
    let mut n = 1;
    for (i, &id) in listed.iter().enumerate() {
        if id == boot || listed[..i].contains(&id) {
            continue;
        }
        if id == hw {
            return (n < MAX_CPUS).then_some(n);
        }
        n += 1;
    }
    None
}

impl Default for CpuTable {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuTable {
    /// CPU 0 only, online (the boot CPU runs before anything is known).
    pub const fn new() -> Self {
        CpuTable {
            possible: AtomicUsize::new(1),
            online: AtomicCpuSet::new(CpuSet::from_bits(1)),
            slots: [const {
                Slot {
                    hw_id: AtomicU64::new(0),
                    ticks: AtomicU64::new(0),
                    ipis: AtomicU64::new(0),
                    pending: AtomicU32::new(0),
                }
            }; MAX_CPUS],
            hook: AtomicUsize::new(0),
        }
    }

    /// Number the CPUs the firmware lists (`listed`, hardware ids in its
    /// order): `boot` becomes 0, the others follow, duplicates dropped, at
    /// most `MAX_CPUS`.  Returns how many listed CPUs did not fit.
    pub fn set_possible(&self, boot: u64, listed: &[u64]) -> usize {
        self.slots[0].hw_id.store(boot, Ordering::Relaxed);
        let (mut n, mut dropped) = (1, 0);
        for (i, &id) in listed.iter().enumerate() {
            if id == boot || listed[..i].contains(&id) {
                continue;
            }
            if n < MAX_CPUS {
                self.slots[n].hw_id.store(id, Ordering::Relaxed);
                n += 1;
            } else {
                dropped += 1;
            }
        }
        self.possible.store(n, Ordering::Release);
        dropped
    }

    /// CPUs the firmware describes (at most `MAX_CPUS`; 1 until known).
    pub fn possible(&self) -> usize {
        self.possible.load(Ordering::Acquire)
    }

    /// Hardware id of CPU `cpu`.
    pub fn hw_id(&self, cpu: usize) -> u64 {
        self.slots
            .get(cpu)
            .map_or(u64::MAX, |s| s.hw_id.load(Ordering::Relaxed))
    }

    /// The CPUs running now.
    pub fn online(&self) -> CpuSet {
        self.online.load()
    }

    pub fn is_online(&self, cpu: usize) -> bool {
        self.online().contains(cpu)
    }

    /// A secondary is set up and may take interrupts: from now on
    /// [`current`](Self::current) looks ids up.
    pub fn set_online(&self, cpu: usize) {
        self.online.insert(cpu);
    }

    /// The running CPU's logical id: 0 while only CPU 0 runs (without
    /// asking the hardware), else the CPU whose hardware id `hw()` is.
    pub fn current(&self, hw: impl FnOnce() -> u64) -> usize {
        if self.online().len() <= 1 {
            return 0;
        }
        let me = hw();
        (0..self.possible())
            .find(|&c| self.slots[c].hw_id.load(Ordering::Relaxed) == me)
            .unwrap_or(0)
    }

    /// Count `n` timer periods on CPU `cpu`.
    pub fn count_ticks(&self, cpu: usize, n: u64) {
        if let Some(s) = self.slots.get(cpu) {
            s.ticks.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn ticks(&self, cpu: usize) -> u64 {
        self.slots
            .get(cpu)
            .map_or(0, |s| s.ticks.load(Ordering::Relaxed))
    }

    pub fn ipis(&self, cpu: usize) -> u64 {
        self.slots
            .get(cpu)
            .map_or(0, |s| s.ipis.load(Ordering::Relaxed))
    }

    /// Leave `reasons` for CPU `cpu`; false (nothing left) if it is not
    /// online.  The caller then raises the interrupt.
    pub fn post(&self, cpu: usize, reasons: u32) -> bool {
        if !self.is_online(cpu) {
            return false;
        }
        self.slots[cpu].pending.fetch_or(reasons, Ordering::Release);
        true
    }

    /// The IPI arrived on CPU `cpu` (interrupts masked, acknowledged): take
    /// the reasons, count it, run the hook with them.
    pub fn receive(&self, cpu: usize) {
        let Some(s) = self.slots.get(cpu) else {
            return;
        };
        let reasons = s.pending.swap(0, Ordering::Acquire);
        s.ipis.fetch_add(1, Ordering::Relaxed);
        let p = self.hook.load(Ordering::Acquire);
        if p != 0 {
            // SAFETY: only `set_hook` stores non-zero values, all `fn(u32)`.
            let f = unsafe { core::mem::transmute::<usize, fn(u32)>(p) };
            f(reasons);
        }
    }

    /// The function [`receive`](Self::receive) calls.
    pub fn set_hook(&self, f: fn(u32)) {
        self.hook.store(f as usize, Ordering::Release);
    }
}

/// The arch API's CPU queries (`arch/API.md`) over the crate's
/// [`CpuTable`] `$table`, the same on both arches; `$ticks0` is CPU 0's
/// tick count (the scheduler's `ticks()`).  `nr_cpus_possible`, `cpu_id`,
/// `send_ipi` and `start_secondaries` are the arch crate's own.
#[macro_export]
macro_rules! cpu_table_api {
    ($table:path, $ticks0:path) => {
        /// CPUs running now.
        pub fn nr_cpus_online() -> usize {
            $table.online().len()
        }

        /// Whether CPU `cpu` is running.
        pub fn cpu_online(cpu: usize) -> bool {
            $table.is_online(cpu)
        }

        /// Timer interrupts CPU `cpu` took: CPU 0 its scheduler ticks, a
        /// secondary those of its own timer.
        pub fn cpu_ticks(cpu: usize) -> u64 {
            if cpu == 0 {
                $ticks0()
            } else {
                $table.ticks(cpu)
            }
        }

        /// IPIs CPU `cpu` took.
        pub fn ipi_count(cpu: usize) -> u64 {
            $table.ipis(cpu)
        }

        /// Install the function every IPI calls on the receiving CPU
        /// (interrupts masked, after the EOI) with the OR of the reasons
        /// sent since the last.
        pub fn set_ipi_hook(f: fn(u32)) {
            $table.set_hook(f);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicU32;

    #[test]
    fn boot_cpu_is_zero_and_ids_follow_the_list() {
        let t = CpuTable::new();
        assert_eq!((t.possible(), t.online().len()), (1, 1));
        // The boot CPU third in the list, a duplicate, then too many CPUs.
        let listed = [5, 7, 2, 7, 9, 10, 11, 12, 13, 14, 15];
        assert_eq!(t.set_possible(2, &listed), 2);
        assert_eq!(t.possible(), MAX_CPUS);
        let ids: [u64; MAX_CPUS] = core::array::from_fn(|c| t.hw_id(c));
        assert_eq!(ids, [2, 5, 7, 9, 10, 11, 12, 13]);
        // One CPU online: id 0 without asking the hardware.
        assert_eq!(t.current(|| unreachable!()), 0);
        t.set_online(2);
        assert_eq!(t.current(|| 7), 2);
        assert_eq!(t.current(|| 99), 0, "unknown hardware ids read as CPU 0");
        // `logical_id` agrees with the numbering, without the table.
        for (c, &hw) in ids.iter().enumerate() {
            assert_eq!(logical_id(2, &listed, hw), Some(c));
        }
        assert_eq!(logical_id(2, &listed, 14), None, "beyond MAX_CPUS");
        assert_eq!(logical_id(2, &listed, 99), None, "not listed");
    }

    static GOT: AtomicU32 = AtomicU32::new(0);

    #[test]
    fn reasons_merge_until_received() {
        let t = CpuTable::new();
        t.set_possible(0, &[0, 1]);
        assert!(!t.post(1, 1), "CPU 1 is not online");
        t.set_online(1);
        t.set_hook(|r| {
            GOT.fetch_or(r, Ordering::Relaxed);
        });
        assert!(t.post(1, 1) && t.post(1, 4));
        t.receive(1);
        assert_eq!((GOT.load(Ordering::Relaxed), t.ipis(1)), (5, 1));
        t.receive(1);
        assert_eq!(t.ipis(1), 2, "a second interrupt carries no reasons");
        assert!(!t.post(MAX_CPUS, 1));
    }
}
