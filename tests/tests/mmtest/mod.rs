//! Shared harness for the address-space host tests: a machine (emulated RAM
//! with a buddy allocator over it, the TLB model, THP knobs, an `MmCtx`)
//! and user accesses that go through the emulated MMU, call the fault path
//! on a fault and retry once.
#![allow(dead_code)]

use std::cell::Cell;

pub mod swapdisk;

pub use mm::abi::uapi::*;
use mm::aspace::{Access, Fault, Mm, MmCtx, check_invariants};
use mm::cpu::SingleCpu;
use mm::emu::{self, EmuMem, EmuTlb};
use mm::paging::PagingArch;
use mm::physmem::buddy::BuddyAllocator;
use mm::physmem::memmap::{FrameDesc, Memmap};
use mm::physmem::phys::PhysMem;
use mm::thp::{GlobalMode, OrderMode, Thp};

pub const RAM_BASE: u64 = 0x4000_0000;
pub const K4: u64 = 4096;
pub const K64: u64 = 64 << 10;
pub const M2: u64 = 2 << 20;
pub const MIB: u64 = 1 << 20;

pub const RW: Prot = PROT_READ.union(PROT_WRITE);
pub const ANON: MapFlags = MAP_PRIVATE.union(MAP_ANONYMOUS);

/// One test machine.
pub struct Env<'a, A: PagingArch> {
    pub ctx: &'a MmCtx<'a>,
    pub mem: &'a EmuMem,
    pub tlb: &'a EmuTlb,
    pub buddy: &'a BuddyAllocator<'a>,
    pub thp: &'a Thp,
    /// Faults taken by `touch` (each one a call to `handle_fault`).
    pub faults: Cell<u64>,
    _a: core::marker::PhantomData<A>,
}

/// Build a machine with `ram` bytes of RAM, run `f`, then check that every
/// frame went back (free + the context's own frames = the baseline) and no
/// page-table page is left.
pub fn run<A: PagingArch>(ram: u64, f: impl FnOnce(&Env<'_, A>)) {
    run_with(ram, mm::aspace::ctx::DEFAULT_MAX_ASID, f)
}

/// As [`run`], with ASIDs limited to `1..=max_asid`.
pub fn run_with<A: PagingArch>(ram: u64, max_asid: u16, f: impl FnOnce(&Env<'_, A>)) {
    run_machine(ram, max_asid, None, f)
}

std::thread_local! {
    static CPU: Cell<usize> = const { Cell::new(0) };
}

/// CPU ids from a thread-local, so a test "runs on" the CPU it names with
/// [`on_cpu`] (CPU `n` is on node `n` in [`run_numa`] machines).
pub struct ThreadCpu;

impl mm::cpu::CpuOps for ThreadCpu {
    fn cpu_id(&self) -> usize {
        CPU.with(|c| c.get())
    }
    fn irq_save(&self) -> usize {
        0
    }
    fn irq_restore(&self, _: usize) {}
}

/// The CPU the calling test thread runs on from now on.
pub fn on_cpu(cpu: usize) {
    CPU.with(|c| c.set(cpu));
}

/// As [`run`] on a machine of `nodes` NUMA nodes of `per_node` bytes each
/// (node `n` from `RAM_BASE + n * per_node`), CPU `n` on node `n`; the test
/// starts on CPU 0.
pub fn run_numa<A: PagingArch>(per_node: u64, nodes: usize, f: impl FnOnce(&Env<'_, A>)) {
    run_machine(
        per_node * nodes as u64,
        mm::aspace::ctx::DEFAULT_MAX_ASID,
        Some((per_node, nodes)),
        f,
    )
}

fn run_machine<A: PagingArch>(
    ram: u64,
    max_asid: u16,
    numa: Option<(u64, usize)>,
    f: impl FnOnce(&Env<'_, A>),
) {
    let mem = EmuMem::new(RAM_BASE, ram);
    let descs: Vec<FrameDesc> = (0..ram / K4).map(|_| FrameDesc::new()).collect();
    let memmap = Memmap::new(&descs, RAM_BASE / K4);
    let buddy = match numa {
        None => BuddyAllocator::new(memmap, &mem, &SingleCpu),
        Some((per_node, nr)) => {
            let mut map = mm::physmem::node::NodeMap::new(nr).unwrap();
            for n in 0..nr {
                let base = RAM_BASE + n as u64 * per_node;
                map.add_mem(base, base + per_node, n).unwrap();
                map.set_cpu_node(n, n).unwrap();
            }
            on_cpu(0);
            BuddyAllocator::with_nodes(memmap, &mem, &ThreadCpu, map)
        }
    };
    buddy.add_free_range(RAM_BASE, RAM_BASE + ram);
    let tlb = EmuTlb::new();
    let thp = Thp::new();
    let ctx = MmCtx::with_max_asid(&buddy, &tlb, &thp, max_asid).unwrap();
    let baseline = buddy.stats().free + ctx.frames_held();
    let env = Env {
        ctx: &ctx,
        mem: &mem,
        tlb: &tlb,
        buddy: &buddy,
        thp: &thp,
        faults: Cell::new(0),
        _a: core::marker::PhantomData,
    };
    f(&env);
    assert_eq!(ctx.pt_pages_in_use(), 0, "page-table pages leaked");
    assert_eq!(
        ctx.deferred_split_len(),
        0,
        "deferred-split queue not empty"
    );
    assert_eq!(
        buddy.stats().free + ctx.frames_held(),
        baseline,
        "frames leaked"
    );
    buddy.check_invariants().unwrap();
}

impl<'a, A: PagingArch> Env<'a, A> {
    /// A new, empty address space.
    pub fn mm(&self) -> Mm<'a, A> {
        Mm::new(self.ctx).unwrap()
    }

    /// Set the global mode and every size's mode (orders 2..=9 from
    /// `modes`, `None` = leave it).
    pub fn knobs(&self, global: GlobalMode, sizes: &[(u32, OrderMode)]) {
        self.thp.config.set_global_mode(global);
        for &(o, m) in sizes {
            assert!(self.thp.config.set_order_mode(o, m));
        }
    }

    /// Only `order` enabled (always), everything else never.
    pub fn only_order(&self, order: u32) {
        self.thp.config.set_global_mode(GlobalMode::Never);
        for o in 2..=9 {
            let m = if o == order {
                OrderMode::Always
            } else {
                OrderMode::Never
            };
            self.thp.config.set_order_mode(o, m);
        }
    }

    /// No THP at all.
    pub fn no_thp(&self) {
        self.only_order(0);
    }

    /// Access `va` as user code: MMU (TLB model) first; on a fault, call the
    /// fault path and retry once (a second fault for the same access is a
    /// bug).  Returns the physical address, or the fault path's error.
    pub fn touch(&self, mm: &Mm<'a, A>, va: u64, acc: Access) -> Result<u64, Fault> {
        let go = || {
            self.tlb
                .access::<A>(self.mem, mm.root_pa(), mm.space(), va, acc, true)
        };
        match go() {
            Ok(pa) => Ok(pa),
            Err(emu::Fault::TlbConflict) => panic!("TLB conflict at {va:#x}"),
            Err(_) => {
                self.faults.set(self.faults.get() + 1);
                mm.handle_fault(va, acc)?;
                match go() {
                    Ok(pa) => Ok(pa),
                    Err(e) => panic!("second fault {e:?} for {acc:?} at {va:#x}"),
                }
            }
        }
    }

    pub fn write_bytes(&self, mm: &Mm<'a, A>, va: u64, data: &[u8]) -> Result<(), Fault> {
        let mut off = 0usize;
        while off < data.len() {
            let a = va + off as u64;
            let n = ((K4 - a % K4) as usize).min(data.len() - off);
            let pa = self.touch(mm, a, Access::Write)?;
            self.mem.write(pa, &data[off..off + n]);
            off += n;
        }
        Ok(())
    }

    pub fn read_bytes(&self, mm: &Mm<'a, A>, va: u64, len: usize) -> Result<Vec<u8>, Fault> {
        let mut out = vec![0u8; len];
        let mut off = 0usize;
        while off < len {
            let a = va + off as u64;
            let n = ((K4 - a % K4) as usize).min(len - off);
            let pa = self.touch(mm, a, Access::Read)?;
            self.mem.read(pa, &mut out[off..off + n]);
            off += n;
        }
        Ok(out)
    }

    pub fn write_u64(&self, mm: &Mm<'a, A>, va: u64, v: u64) {
        self.write_bytes(mm, va, &v.to_le_bytes())
            .unwrap_or_else(|e| panic!("write at {va:#x}: {e:?}"));
    }

    pub fn read_u64(&self, mm: &Mm<'a, A>, va: u64) -> u64 {
        let b = self
            .read_bytes(mm, va, 8)
            .unwrap_or_else(|e| panic!("read at {va:#x}: {e:?}"));
        u64::from_le_bytes(b.try_into().unwrap())
    }

    /// Store a word at a physical address (after `touch`).
    pub fn mem_write_u64(&self, pa: u64, v: u64) {
        self.mem.write(pa, &v.to_le_bytes());
    }

    /// Load a word from a physical address (after `touch`).
    pub fn mem_read_u64(&self, pa: u64) -> u64 {
        let mut b = [0u8; 8];
        self.mem.read(pa, &mut b);
        u64::from_le_bytes(b)
    }

    /// Write a distinct word at the start of every page of `[va, va+len)`.
    pub fn fill_pages(&self, mm: &Mm<'a, A>, va: u64, len: u64, tag: u64) {
        for p in (va..va + len).step_by(K4 as usize) {
            self.write_u64(mm, p, tag ^ p);
        }
    }

    /// Check the words written by `fill_pages`.
    pub fn check_pages(&self, mm: &Mm<'a, A>, va: u64, len: u64, tag: u64) {
        for p in (va..va + len).step_by(K4 as usize) {
            assert_eq!(self.read_u64(mm, p), tag ^ p, "page {p:#x}");
        }
    }

    /// Check that the first word of every page of `[va, va+len)` reads 0.
    pub fn check_zero(&self, mm: &Mm<'a, A>, va: u64, len: u64) {
        for p in (va..va + len).step_by(K4 as usize) {
            assert_eq!(self.read_u64(mm, p), 0, "page {p:#x}");
        }
    }

    /// Invariants over `mms` and TLB coherence of each.
    pub fn check(&self, mms: &[&Mm<'a, A>]) {
        check_invariants(mms).unwrap_or_else(|e| panic!("invariants:\n{e}"));
        for mm in mms {
            self.tlb
                .check_coherent::<A>(self.mem, mm.root_pa(), mm.space())
                .unwrap();
        }
        assert_eq!(self.tlb.conflicts(), 0);
    }

    /// Read a per-order stat.
    pub fn mthp(&self, order: u32, s: mm::thp::MthpStat) -> u64 {
        self.thp.stats.get(order, s)
    }

    pub fn event(&self, e: mm::thp::VmEvent) -> u64 {
        self.thp.stats.event(e)
    }

    /// The leaf mapping `va` in `mm` (level, leaf).
    pub fn leaf(&self, mm: &Mm<'a, A>, va: u64) -> Option<mm::paging::Leaf> {
        mm.with_page_table(|pt| pt.lookup(va).entry.leaf())
    }

    /// The folio mapped at `va`.
    pub fn folio_at(&self, mm: &Mm<'a, A>, va: u64) -> Option<mm::physmem::folio::Folio<'a>> {
        let l = self.leaf(mm, va)?;
        let off = (va / K4) & ((1u64 << (9 * l.level as u32)) - 1);
        self.buddy.folio_from_pfn(l.pfn + off)
    }
}

/// One full khugepaged scan over `mms` (each of them also reachable as
/// "every space", for shmem collapses).
pub fn full_scan<'a, A: PagingArch>(env: &Env<'a, A>, mms: &[&Mm<'a, A>]) -> mm::aspace::PassStats {
    mm::aspace::khugepaged_full_scan(
        env.ctx,
        &mut |id, f| match mms.iter().find(|m| m.id() == id) {
            Some(m) => {
                f(m);
                true
            }
            None => false,
        },
        Some(&mut |f| mms.iter().for_each(|m| f(m))),
        64,
    )
}

/// Run the generic test functions for both formats.
#[macro_export]
macro_rules! both_formats {
    ($($f:ident),* $(,)?) => {
        mod x86_64 {
            $( #[test] fn $f() { super::$f::<arch_x86_64::pte::X86_64>() } )*
        }
        mod aarch64 {
            $( #[test] fn $f() { super::$f::<arch_aarch64::pte::Aarch64>() } )*
        }
    };
}

/// True for the format with contiguous hints.
pub fn has_cont<A: PagingArch>() -> bool {
    A::CONT_PTES > 1
}
