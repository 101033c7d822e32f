//! TLB shootdown: making a flush reach the TLBs of other CPUs where the
//! hardware does not broadcast it (x86; arm64's `TLBI …IS` reaches every
//! CPU of the inner-shareable domain by itself, so there this is unused).
//!
//! Protocol (the shape of Linux's `flush_tlb_mm_range` / `flush_tlb_others`):
//! the flushing CPU flushes its own TLB, then publishes one request (what
//! to flush) in [`REQ`] with the set of target CPUs still to answer,
//! sends each an IPI ([`IPI_TLB`]), and waits until every target has done
//! the same flush locally and removed itself from the set.  Only then does
//! `TlbOps::flush_*` return, so `TlbGather::finish` frees page tables and
//! folios only after every CPU that could hold their translations let go.
//! Targets: every other online CPU for kernel (global) mappings, the
//! address space's CPU set (`mm::cpu::AtomicCpuSet`) for user ones: the
//! CPUs running it now, since a CPU leaves the set when it switches away
//! (`sched::switch_mm`, where the argument that no flush is missed lives).
//! A target that switched away between the sender's read of the set and
//! the IPI finds the space's PCID not loaded and does nothing: it will
//! flush at switch-in, having missed this generation.
//!
//! Lock: [`SENDER`] lets one request be in flight at a time; it is held
//! with preemption disabled.  A CPU waiting
//! for it, or for the answers to its own request, keeps answering requests
//! aimed at itself ([`answer`]), so two CPUs flushing at once with
//! interrupts masked cannot wait for each other.  A target that has not
//! answered within [`WATCHDOG_NS`] is named on the console (and sent the
//! IPI again) instead of hanging silently.
use crate::arch;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::SeqCst};
use mm::cpu::{AtomicCpuSet, CpuSet};

/// IPI reason: a TLB shootdown request is waiting for this CPU.
pub const IPI_TLB: u32 = 1 << 1;

/// How long a target may take before the watchdog names it.
const WATCHDOG_NS: u64 = 100_000_000;

/// What to flush.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    KernelRange {
        start: u64,
        end: u64,
        stride: u64,
    },
    KernelAll,
    /// `tlb_gen`: the space's flush generation this flush carries
    /// (`mm::cpu::FlushTargets`), recorded by a CPU that runs the space.
    UserRange {
        asid: u16,
        start: u64,
        end: u64,
        stride: u64,
        tlb_gen: u64,
    },
    UserAll {
        asid: u16,
        tlb_gen: u64,
    },
}

/// Do `f` on this CPU only (enough where the arch broadcasts).
pub fn local(f: Flush) {
    f.local();
}

impl Flush {
    /// Do it on this CPU.
    fn local(self) {
        match self {
            Flush::KernelRange { start, end, stride } => {
                arch::tlb::flush_kernel_range(start, end, stride)
            }
            Flush::KernelAll => arch::tlb::flush_kernel_all(),
            Flush::UserRange {
                asid,
                start,
                end,
                stride,
                tlb_gen,
            } => arch::tlb::flush_user_range(asid, start, end, stride, tlb_gen),
            Flush::UserAll { asid, tlb_gen } => arch::tlb::flush_user_all(asid, tlb_gen),
        }
    }
}

/// The request in flight: written by the sender before it names the
/// targets in `pending`, read by a target after it finds itself there.
struct Request {
    kind: AtomicU8,
    asid: AtomicU64,
    start: AtomicU64,
    end: AtomicU64,
    stride: AtomicU64,
    tlb_gen: AtomicU64,
    pending: AtomicCpuSet,
}

static REQ: Request = Request {
    kind: AtomicU8::new(0),
    asid: AtomicU64::new(0),
    start: AtomicU64::new(0),
    end: AtomicU64::new(0),
    stride: AtomicU64::new(0),
    tlb_gen: AtomicU64::new(0),
    pending: AtomicCpuSet::new(CpuSet::EMPTY),
};

static SENDER: AtomicBool = AtomicBool::new(false);

/// Shootdowns sent, and IPIs they needed (for tests and reports).
pub static SHOOTDOWNS: AtomicU64 = AtomicU64::new(0);
pub static SHOOTDOWN_IPIS: AtomicU64 = AtomicU64::new(0);

impl Request {
    fn publish(&self, f: Flush) {
        let (kind, asid, start, end, stride, tlb_gen) = match f {
            Flush::KernelRange { start, end, stride } => (0, 0, start, end, stride, 0),
            Flush::KernelAll => (1, 0, 0, 0, 0, 0),
            Flush::UserRange {
                asid,
                start,
                end,
                stride,
                tlb_gen,
            } => (2, asid, start, end, stride, tlb_gen),
            Flush::UserAll { asid, tlb_gen } => (3, asid, 0, 0, 0, tlb_gen),
        };
        self.tlb_gen.store(tlb_gen, SeqCst);
        self.kind.store(kind, SeqCst);
        self.asid.store(u64::from(asid), SeqCst);
        self.start.store(start, SeqCst);
        self.end.store(end, SeqCst);
        self.stride.store(stride, SeqCst);
    }

    fn read(&self) -> Flush {
        let (asid, start, end, stride, tlb_gen) = (
            self.asid.load(SeqCst) as u16,
            self.start.load(SeqCst),
            self.end.load(SeqCst),
            self.stride.load(SeqCst),
            self.tlb_gen.load(SeqCst),
        );
        match self.kind.load(SeqCst) {
            0 => Flush::KernelRange { start, end, stride },
            1 => Flush::KernelAll,
            2 => Flush::UserRange {
                asid,
                start,
                end,
                stride,
                tlb_gen,
            },
            _ => Flush::UserAll { asid, tlb_gen },
        }
    }
}

/// Answer the request in flight if it names this CPU (from the IPI hook,
/// and from every wait loop here).
pub fn answer() {
    let me = arch::cpu_id();
    if REQ.pending.load().contains(me) {
        REQ.read().local();
        REQ.pending.remove(me);
    }
}

/// Flush on this CPU, then on every CPU of `targets` that is online, and
/// return once all have.  Interrupts may be masked.
pub fn flush(f: Flush, targets: CpuSet) {
    // No preemption while `SENDER` may be held: a sender switched out
    // would leave every other CPU's flush spinning (seen: a kernel-stack
    // unmap preempted mid-shootdown, munmap on the other CPU waiting).
    let _np = crate::task::sched::preempt_disable();
    f.local();
    let me = arch::cpu_id();
    let targets = targets.without(me);
    if targets.is_empty() {
        return;
    }
    let targets = CpuSet::from_bits(targets.bits() & online().bits());
    if targets.is_empty() {
        return;
    }
    while SENDER
        .compare_exchange(false, true, SeqCst, SeqCst)
        .is_err()
    {
        answer();
        crate::mem::xcall::answer();
        arch::cpu_relax();
    }
    REQ.publish(f);
    for c in targets.iter() {
        REQ.pending.insert(c);
    }
    SHOOTDOWNS.fetch_add(1, SeqCst);
    for c in targets.iter() {
        arch::send_ipi(c, IPI_TLB);
        SHOOTDOWN_IPIS.fetch_add(1, SeqCst);
    }
    let mut t0 = arch::now_ns();
    loop {
        let left = REQ.pending.load();
        if left.is_empty() {
            break;
        }
        answer();
        crate::mem::xcall::answer();
        if arch::now_ns() - t0 > WATCHDOG_NS {
            warn!(
                "smp: CPU set {:#x} has not answered a TLB shootdown ({:?}) for {} ms; sending again",
                left.bits(),
                f,
                WATCHDOG_NS / 1_000_000
            );
            for c in left.iter() {
                arch::send_ipi(c, IPI_TLB);
            }
            t0 = arch::now_ns();
        }
        arch::cpu_relax();
    }
    SENDER.store(false, SeqCst);
}

fn online() -> CpuSet {
    let mut bits = 0;
    for c in 0..mm::cpu::MAX_CPUS {
        if arch::cpu_online(c) {
            bits |= 1 << c;
        }
    }
    CpuSet::from_bits(bits)
}
