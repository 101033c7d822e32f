//! The storm's SMP variant: one kernel thread per CPU, all running in one
//! shared user address space, fault, munmap, mprotect, collapse, split
//! and zap at the same time.
//!
//! The single-CPU storm (`storm.rs`) checks every read against a model and
//! is exactly replayable; with several CPUs the interleaving is not, so
//! this one checks what stays true whatever the interleaving:
//!
//! * each thread owns a region nobody else touches and models it: every
//!   read there returns what that thread last wrote (or zero after its
//!   MADV_DONTNEED), while its own collapses and splits, and the other
//!   threads' page-table changes next to it, go on;
//! * all threads also hammer one shared region (munmap and MAP_FIXED
//!   remap, mprotect, MADV_DONTNEED / COLLAPSE, reads and writes that may
//!   fault): any outcome is allowed there except a panic or a hang;
//! * at the end the invariant checker (`mm::aspace::check_invariants`)
//!   passes over the space, and after teardown every frame is back.
//!
//! Checked to fail without its mechanism: with the x86 user TLB flushes
//! reduced to the local one (`kernel/src/mem/mmglue.rs`), all 5 boots tried
//! panicked in the buddy allocator's free-poison check ("use after free"):
//! a CPU kept writing through a translation of a shared-region frame the
//! other CPU had unmapped and freed.
use crate::arch;
use crate::mem::uspace::{self, UserMm, read_u64, write_u64};
use crate::selftest::testenv::*;
use crate::task::sched;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use ktest::{check, ktest};
use mm::abi::errno::Errno;
use mm::abi::uapi::*;
use mm::thp::{GlobalMode, OrderMode};

const PAGE: u64 = 4096;
/// Each thread's own region, and the shared one.
const OWN: u64 = 4 * MB;
const SHARED: u64 = 4 * MB;
/// Operations in all, split between the threads: 1-3 s under TCG with
/// -smp 2 on an idle host; up to about 8 s when other work starves a vCPU
/// that holds a lock (6000 took 2 to 17 s).
const OPS: u64 = 3000;

/// One thread's view: its region and the value each page's word should hold.
struct Worker {
    mm: Arc<UserMm>,
    rng: Rng,
    own: u64,
    shared: u64,
    model: Vec<u64>,
}

impl Worker {
    /// A random page-aligned piece of `[base, base + len)`: (start, bytes).
    fn piece(&mut self, base: u64, len: u64, max_pages: u64) -> (u64, u64) {
        let first = self.rng.below(len / PAGE);
        let n = 1 + self.rng.below(max_pages.min(len / PAGE - first));
        (base + first * PAGE, n * PAGE)
    }

    fn step(&mut self, op: u64) -> Result<(), String> {
        match self.rng.below(100) {
            0..=29 => {
                let (va, _) = self.piece(self.own, OWN, 1);
                let v = self.rng.next() | 1;
                write_u64(va + 8, v).map_err(|x| format!("write own {va:#x}: {}", x.name()))?;
                self.model[((va - self.own) / PAGE) as usize] = v;
            }
            30..=44 => self.verify(64)?,
            45..=49 => {
                let (va, len) = self.piece(self.own, OWN, 32);
                self.mm
                    .enter()
                    .madvise(va, len, MADV_DONTNEED)
                    .map_err(|x| format!("MADV_DONTNEED own {va:#x}: {}", x.name()))?;
                let i = ((va - self.own) / PAGE) as usize;
                self.model[i..i + (len / PAGE) as usize].fill(0);
            }
            50..=53 => {
                let va = self.own + 2 * MB * self.rng.below(OWN / (2 * MB));
                // EINVAL is Linux's answer for a window with nothing
                // mapped (never written, or all zapped), and only then.
                let i = ((va - self.own) / PAGE) as usize;
                let empty = self.model[i..i + (2 * MB / PAGE) as usize]
                    .iter()
                    .all(|&v| v == 0);
                match self.mm.enter().madvise(va, 2 * MB, MADV_COLLAPSE) {
                    Ok(()) | Err(Errno::ENOMEM | Errno::EBUSY | Errno::EAGAIN) => {}
                    Err(Errno::EINVAL) if empty => {}
                    Err(x) => return Err(format!("MADV_COLLAPSE own {va:#x}: {}", x.name())),
                }
            }
            54..=56 => {
                let (va, len) = self.piece(self.own, OWN, 512);
                let order = [0u32, 2, 4][self.rng.below(3) as usize];
                let np = sched::preempt_disable();
                self.mm.get(&np).split_huge_pages(va, va + len, order);
            }
            _ => self.shared_op(),
        }
        if op.is_multiple_of(500) {
            self.verify(OWN / PAGE)?;
        }
        Ok(())
    }

    /// Check `pages` pages of the own region (from a random one) against
    /// the model.
    fn verify(&mut self, pages: u64) -> Result<(), String> {
        let (va, len) = self.piece(self.own, OWN, pages);
        for pg in (va..va + len).step_by(PAGE as usize) {
            let got = read_u64(pg + 8).map_err(|x| format!("read own {pg:#x}: {}", x.name()))?;
            let want = self.model[((pg - self.own) / PAGE) as usize];
            if got != want {
                return Err(format!(
                    "own page {pg:#x} on CPU {}: read {got:#x}, expected {want:#x}",
                    arch::cpu_id()
                ));
            }
        }
        Ok(())
    }

    /// Something on the shared region; every result is allowed.
    fn shared_op(&mut self) {
        let (va, len) = self.piece(self.shared, SHARED, 600);
        let m = self.mm.enter();
        let _ = match self.rng.below(8) {
            0 => m
                .munmap(va, len)
                .and_then(|()| m.mmap(va, len, RW, ANON | MAP_FIXED).map(|_| ())),
            1 => m.mprotect(va, len, PROT_READ),
            2 => m.mprotect(va, len, RW),
            3 => m.madvise(va, len, MADV_DONTNEED),
            4 => m.madvise(va & !(2 * MB - 1), 2 * MB, MADV_COLLAPSE),
            _ => {
                for pg in (va..va + len).step_by(PAGE as usize * 3) {
                    if self.rng.below(2) == 0 {
                        let _ = write_u64(pg, pg);
                    } else {
                        let _ = read_u64(pg);
                    }
                }
                Ok(())
            }
        };
    }
}

/// One thread's run, pinned to `cpu`: `Err` names the first wrong outcome.
fn run_worker(mut w: Worker, cpu: usize, ops: u64) -> Result<(), String> {
    sched::set_affinity(sched::current_id(), 1 << cpu);
    sched::yield_now();
    if arch::cpu_id() != cpu {
        return Err(format!("thread for CPU {cpu} runs on {}", arch::cpu_id()));
    }
    for op in 1..=ops {
        w.step(op).map_err(|e| format!("CPU {cpu} op {op}: {e}"))?;
    }
    w.verify(OWN / PAGE)
}

ktest! {
    /// Every CPU storms one address space at once (own regions checked
    /// against a model, a shared region churned by all): right data,
    /// invariants hold, no frame leaked.
    fn smp_storm_shared_space() {
        let cpus: Vec<usize> = (0..arch::nr_cpus_possible()).filter(|&c| arch::cpu_online(c)).collect();
        if cpus.len() < 2 {
            ktest::skip!("one CPU online (boots with -smp 2 and more run this)");
        }
        let fx = Fixture::new(GlobalMode::Always, &[2, 4, 9], OrderMode::Always);
        let m = uspace::new_mm().map_err(err)?;
        let shared = aligned_mapping(&m, SHARED, 2 * MB)?;
        let owns: Vec<u64> = cpus
            .iter()
            .map(|_| aligned_mapping(&m, OWN, 2 * MB))
            .collect::<Result<_, _>>()?;
        let space = sched::AddrSpace { root_pa: m.root_pa(), asid: m.asid() };
        let results: Arc<mm::sync::Mutex<Vec<Result<(), String>>>> = Arc::new(mm::sync::Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        let n = cpus.len() as u64;
        let t0 = arch::now_ns();
        for (i, &cpu) in cpus.iter().enumerate() {
            let w = Worker {
                mm: m.clone(),
                rng: Rng(0x5eed_0000 + i as u64 * 0x1_0001),
                own: owns[i],
                shared,
                model: vec![0; (OWN / PAGE) as usize],
            };
            let out = results.clone();
            let h = sched::spawn_in("smp-storm", space, move || {
                let r = run_worker(w, cpu, OPS / n);
                out.lock().push(r);
            })
            .map_err(|e| format!("spawn: {e}"))?;
            handles.push(h);
        }
        for h in handles {
            h.join();
        }
        println!(
            "smp storm: {n} threads x {} ops in {} ms",
            OPS / n,
            (arch::now_ns() - t0) / 1_000_000
        );
        let results = core::mem::take(&mut *results.lock());
        check!(results.len() == cpus.len(), "{} of {} threads reported", results.len(), cpus.len());
        for r in results {
            r?;
        }
        {
            let np = sched::preempt_disable();
            mm::aspace::check_invariants(&[m.get(&np)])?;
        }
        fx.finish([m])
    }
}

ktest! {
    /// Split page-table locks: threads on every CPU first-touch the same
    /// pages of one space at once, in the same order, each writing its own
    /// word of every page, with 16K and 64K folios (so two CPUs' faults
    /// race for one block of one PTE table).  Every CPU's word survives in
    /// every page, each block is one folio of its order, RSS is exact and
    /// no frame leaks.  Checked to fail on x86 with `Mm::lock_pte_table`
    /// handing out unrelated locks ("RSS 520 pages": two faults both found
    /// a block empty and both mapped a folio over it).
    fn smp_first_touch_same_table() {
        let cpus: Vec<usize> = (0..arch::nr_cpus_possible()).filter(|&c| arch::cpu_online(c)).collect();
        if cpus.len() < 2 {
            ktest::skip!("one CPU online (boots with -smp 2 and more run this)");
        }
        const LEN: u64 = 2 * MB;
        const ROUNDS: u64 = 12;
        for order in [2u32, 4] {
            let fx = Fixture::new(GlobalMode::Never, &[order], OrderMode::Always);
            let m = uspace::new_mm().map_err(err)?;
            let space = sched::AddrSpace { root_pa: m.root_pa(), asid: m.asid() };
            for round in 0..ROUNDS {
                let va = aligned_mapping(&m, LEN, 2 * MB)?;
                let bad: Arc<mm::sync::Mutex<Vec<String>>> = Arc::new(mm::sync::Mutex::new(Vec::new()));
                let mut handles = Vec::new();
                for (i, &cpu) in cpus.iter().enumerate() {
                    let bad = bad.clone();
                    let h = sched::spawn_in("first-touch", space, move || {
                        sched::set_affinity(sched::current_id(), 1 << cpu);
                        sched::yield_now();
                        for pg in (va..va + LEN).step_by(PAGE as usize) {
                            if write_u64(pg + 8 * i as u64, pg ^ round).is_err() {
                                bad.lock().push(format!("CPU {cpu}: write to {pg:#x} failed"));
                                return;
                            }
                        }
                    })
                    .map_err(|e| format!("spawn: {e}"))?;
                    handles.push(h);
                }
                for h in handles {
                    h.join();
                }
                if let Some(e) = bad.lock().first() {
                    return Err(e.clone());
                }
                uspace::activate(&m);
                for pg in (va..va + LEN).step_by(PAGE as usize) {
                    for i in 0..cpus.len() as u64 {
                        let got = read_u64(pg + 8 * i).map_err(err)?;
                        check!(got == pg ^ round, "order {order} round {round}: CPU {i}'s word at {pg:#x} is {got:#x}");
                    }
                }
                check!(m.enter().anon_rss() == LEN / PAGE, "RSS {} pages", m.enter().anon_rss());
                {
                    let np = sched::preempt_disable();
                    mm::aspace::check_invariants(&[m.get(&np)])?;
                }
                m.enter().munmap(va, LEN).map_err(err)?;
            }
            fx.finish([m])?;
        }
        Ok(())
    }
}

ktest! {
    /// Zaps under split page-table locks (`mm::aspace` `zap.rs`): a thread
    /// on one CPU writes and `MADV_DONTNEED`s (and every fourth round
    /// munmaps and maps again) the first MiB of a PTE table, reading zeros
    /// after each zap, while a thread on another CPU keeps writing and
    /// reading back the rest of that table and a second table of the same
    /// space, with 4K and 64K folios.  Every read returns what its writer
    /// last wrote (or zero after the zap), RSS is exact, the invariants
    /// hold and no frame leaks.
    fn smp_zap_while_faulting() {
        let cpus: Vec<usize> = (0..arch::nr_cpus_possible()).filter(|&c| arch::cpu_online(c)).collect();
        if cpus.len() < 2 {
            ktest::skip!("one CPU online (boots with -smp 2 and more run this)");
        }
        const LEN: u64 = 4 * MB;
        const ZAP: u64 = MB;
        const ROUNDS: u64 = 24;
        for order in [0u32, 4] {
            let orders: &[u32] = if order == 0 { &[] } else { &[order] };
            let fx = Fixture::new(GlobalMode::Never, orders, OrderMode::Always);
            let m = uspace::new_mm().map_err(err)?;
            let space = sched::AddrSpace { root_pa: m.root_pa(), asid: m.asid() };
            let va = aligned_mapping(&m, LEN, 2 * MB)?;
            let bad: Arc<mm::sync::Mutex<Vec<String>>> = Arc::new(mm::sync::Mutex::new(Vec::new()));
            let mut handles = Vec::new();
            for (i, &cpu) in cpus.iter().take(2).enumerate() {
                let (bad, mm) = (bad.clone(), m.clone());
                let h = sched::spawn_in("zap-fault", space, move || {
                    sched::set_affinity(sched::current_id(), 1 << cpu);
                    sched::yield_now();
                    let r = if i == 0 {
                        zapper(&mm, va, ZAP, ROUNDS)
                    } else {
                        faulter(va + ZAP, LEN - ZAP, ROUNDS)
                    };
                    if let Err(e) = r {
                        bad.lock().push(format!("CPU {cpu}: {e}"));
                    }
                })
                .map_err(|e| format!("spawn: {e}"))?;
                handles.push(h);
            }
            for h in handles {
                h.join();
            }
            if let Some(e) = bad.lock().first() {
                return Err(format!("order {order}: {e}"));
            }
            let rss = m.enter().anon_rss();
            check!(rss == (LEN - ZAP) / PAGE, "order {order}: RSS {rss} pages, expected {}", (LEN - ZAP) / PAGE);
            {
                let np = sched::preempt_disable();
                mm::aspace::check_invariants(&[m.get(&np)])?;
            }
            m.enter().munmap(va, LEN).map_err(err)?;
            fx.finish([m])?;
        }
        Ok(())
    }
}

/// The zapping side of `smp_zap_while_faulting`: write every page of
/// `[va, va + len)`, zap it (`MADV_DONTNEED`, or munmap and map again every
/// fourth round) and check it reads zeros.  Ends zapped.
fn zapper(m: &UserMm, va: u64, len: u64, rounds: u64) -> Result<(), String> {
    for round in 0..rounds {
        for pg in (va..va + len).step_by(PAGE as usize) {
            write_u64(pg, pg ^ round ^ 1).map_err(|x| format!("write {pg:#x}: {}", x.name()))?;
        }
        if round % 4 == 3 {
            m.enter()
                .munmap(va, len)
                .map_err(|x| format!("munmap: {}", x.name()))?;
            m.enter()
                .mmap(va, len, RW, ANON | MAP_FIXED)
                .map_err(|x| format!("mmap: {}", x.name()))?;
        } else {
            m.enter()
                .madvise(va, len, MADV_DONTNEED)
                .map_err(|x| format!("MADV_DONTNEED: {}", x.name()))?;
        }
        for pg in (va..va + len).step_by(PAGE as usize) {
            let got = read_u64(pg).map_err(|x| format!("read {pg:#x}: {}", x.name()))?;
            if got != 0 {
                return Err(format!(
                    "round {round}: {pg:#x} reads {got:#x} after the zap"
                ));
            }
        }
        // The reads mapped the zero page: zap again so RSS counts only the
        // faulting side.
        m.enter()
            .madvise(va, len, MADV_DONTNEED)
            .map_err(|x| format!("MADV_DONTNEED: {}", x.name()))?;
    }
    Ok(())
}

/// The faulting side: each round writes a new word into every page of
/// `[va, va + len)` (first touches in the first round, in the zapped
/// table's second half and in another table) and reads them all back.
fn faulter(va: u64, len: u64, rounds: u64) -> Result<(), String> {
    for round in 0..rounds {
        for pg in (va..va + len).step_by(PAGE as usize) {
            write_u64(pg + 16, pg ^ round).map_err(|x| format!("write {pg:#x}: {}", x.name()))?;
        }
        for pg in (va..va + len).step_by(PAGE as usize) {
            let got = read_u64(pg + 16).map_err(|x| format!("read {pg:#x}: {}", x.name()))?;
            if got != pg ^ round {
                return Err(format!(
                    "round {round}: {pg:#x} reads {got:#x}, wrote {:#x}",
                    pg ^ round
                ));
            }
        }
    }
    Ok(())
}
