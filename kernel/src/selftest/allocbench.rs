//! `bench=alloc`: the frame allocator's self-benchmark inside the kernel,
//! on the kernel's own allocator (`memory::buddy()`, with `KernelCpu`
//! masking interrupts on every fast path) and with the workloads the host
//! benchmark replays (`mm::physmem::alloc_trace`, `make bench-alloc`).
//!
//! Each figure is the guest clock (`arch::now_ns`) around the replay
//! divided by the operations (an allocation or a free).  Booted with QEMU
//! `-icount shift=0` (the runner does: `make bench-alloc-kernel`), the
//! clock advances one nanosecond per instruction, so the figures are
//! instructions per operation, exact and independent of the host's load:
//! everything the CPU ran meanwhile (timer ticks included).  Without
//! `-icount` they are TCG emulation times and mean little.
//!
//! Lines: `allocbench <workload>@<state> <metric> <median> <min> <max>`
//! over [`REPS`] replays, then `allocbench done`.  The harness alone (the
//! same replay loop with no allocator behind it) is reported as its own
//! line, as the host benchmark's "loop alone".
//!
//! It also times zeroing one 4 KiB page and one 2 MiB folio through the
//! kernel's `PhysMem::zero` (arm64: `st1` of four vector registers), and,
//! on arm64, through `dc zva`: the instruction counts behind the fault-in
//! figures, and what a fault costs in instructions with the zeroing a real
//! core would use (see docs/performance.md).
#![allow(unsafe_code)]

use crate::arch;
use crate::mem::memory;
use alloc::vec::Vec;
use mm::physmem::alloc_trace::{MIXED, MIXED_SMALL, Rng, State, Trace, churn, walk};
use mm::physmem::buddy::AllocFlags;
use mm::physmem::folio::Folio;
use mm::physmem::phys::PhysMem;

/// Replays per workload.
const REPS: usize = 5;

/// Random-order frees as a trace: 65536 folios of orders 0..=3 (weighted
/// towards 0), then all freed in a shuffled order, `rounds` times.
fn random_frees(rounds: usize) -> Trace {
    const ORDERS: [u32; 8] = [0, 0, 0, 0, 1, 1, 2, 3];
    let mut rng = Rng(0x0bad_cafe_f00d_1234);
    let mut r = mm::physmem::alloc_trace::Recorder::new();
    for _ in 0..rounds {
        for _ in 0..65536 {
            r.alloc(ORDERS[rng.below(ORDERS.len())]);
        }
        // Freeing a uniformly random live folio each time frees them in a
        // uniformly random order.
        while !r.live.is_empty() {
            let i = rng.below(r.live.len());
            r.free(i);
        }
    }
    r.finish()
}

/// Order-0 alloc+free pairs as a trace.
fn pairs(n: usize) -> Trace {
    let mut r = mm::physmem::alloc_trace::Recorder::new();
    for _ in 0..n {
        r.alloc(0);
        r.free(0);
    }
    r.finish()
}

/// Replays `t` on the kernel's allocator; returns the operations.
fn replay(t: &Trace, table: &mut Vec<Option<Folio<'static>>>) -> usize {
    let b = memory::buddy();
    if table.len() < t.slots {
        table.resize_with(t.slots, || None);
    }
    for &op in &t.ops {
        let s = &mut table[op.slot()];
        if op.is_free() {
            if let Some(f) = s.take() {
                f.put();
            }
        } else {
            match b.alloc(op.order(), AllocFlags::USER) {
                Ok(f) => *s = Some(f),
                Err(_) => panic!("allocbench: out of memory at order {}", op.order()),
            }
        }
    }
    t.ops.len()
}

/// The same loop with no allocator: a counter for handles.
fn replay_nothing(t: &Trace, table: &mut Vec<Option<u64>>) -> usize {
    if table.len() < t.slots {
        table.resize(t.slots, None);
    }
    let mut n = 0u64;
    for &op in &t.ops {
        let s = &mut table[op.slot()];
        if op.is_free() {
            core::hint::black_box(s.take());
        } else {
            n += 1;
            *s = Some(core::hint::black_box(n));
        }
    }
    t.ops.len()
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn emit(name: &str, metric: &str, v: Vec<f64>) {
    let (m, a, b) = stats(v);
    println!("allocbench {name} {metric} {m:.1} {a:.1} {b:.1}");
}

/// Time `f` on the guest clock (instructions under `-icount shift=0`).
fn clocked(f: impl FnOnce()) -> u64 {
    let t0 = arch::now_ns();
    f();
    arch::now_ns() - t0
}

fn zeroing() {
    let b = memory::buddy();
    let phys = &crate::mem::physmem::DIRECT_MAP;
    for (order, label) in [(0u32, "4K"), (2, "16K"), (4, "64K"), (9, "2M")] {
        let f = b
            .alloc(order, AllocFlags::USER)
            .expect("allocbench: zeroing");
        let pa = f.pfn() << 12;
        let len = 4096u64 << order;
        let mut v = Vec::new();
        for _ in 0..REPS {
            v.push(clocked(|| phys.zero(pa, len)) as f64);
        }
        emit(&alloc::format!("zero-{label}"), "physmem_zero", v);
        #[cfg(target_arch = "aarch64")]
        {
            let mut v = Vec::new();
            for _ in 0..REPS {
                v.push(clocked(|| {
                    // SAFETY: `[pa, pa+len)` is the folio just allocated
                    // (owned here, nothing else maps it), reached through
                    // the direct map (Normal memory: `dc zva` is allowed);
                    // `len` is a multiple of any `dc zva` block size.
                    unsafe {
                        arch::mem::zero_dc_zva((pa + arch::PHYS_OFFSET) as *mut u8, len as usize)
                    }
                }) as f64);
            }
            emit(&alloc::format!("zero-{label}"), "dc_zva", v);
        }
        f.put();
    }
}

/// Runs every workload and prints its lines; true if all ran.
pub fn run() -> bool {
    let free = memory::buddy().stats().free;
    println!(
        "allocbench start: {} MiB free; guest-clock units per operation (instructions under -icount shift=0); median min max of {REPS}",
        free >> 8
    );
    // Fill levels of the held states are fractions of the memory free now.
    type Make = fn() -> Trace;
    let works: [(&str, State, Make); 12] = [
        ("order0-pairs", State::Fresh, || pairs(200_000)),
        ("mixed-0/2/4/9", State::Fresh, || churn(200_000, &MIXED)),
        ("mixed-0/2/4", State::Fresh, || churn(200_000, &MIXED_SMALL)),
        ("mixed-0/2/4/9-walk", State::Fresh, || walk(200_000, &MIXED)),
        ("mixed-0/2/4-walk", State::Fresh, || {
            walk(200_000, &MIXED_SMALL)
        }),
        ("random-order-frees", State::Fresh, || random_frees(1)),
        ("order0-pairs", State::HoldOne, || pairs(200_000)),
        ("order0-pairs", State::Fragmented, || pairs(200_000)),
        ("mixed-0/2/4/9", State::Fragmented, || {
            churn(200_000, &MIXED)
        }),
        ("random-order-frees", State::Fragmented, || random_frees(1)),
        ("order0-pairs", State::NearlyFull, || pairs(200_000)),
        ("mixed-0/2/4", State::NearlyFull, || {
            churn(200_000, &MIXED_SMALL)
        }),
    ];
    for (name, state, make) in works {
        let t = make();
        let label = alloc::format!("{name}@{}", state.name());
        let mut held: Vec<Option<Folio<'static>>> = Vec::new();
        let traces = state.traces(free);
        if let Some((up, _)) = &traces {
            replay(up, &mut held);
        }
        let mut table = Vec::new();
        replay(&t, &mut table); // warm-up: per-CPU caches
        let mut v = Vec::new();
        for _ in 0..REPS {
            let mut n = 0;
            let d = clocked(|| n = replay(&t, &mut table));
            v.push(d as f64 / n as f64);
        }
        emit(&label, "per_op", v);
        let mut nt = Vec::new();
        let mut v = Vec::new();
        for _ in 0..REPS {
            let mut n = 0;
            let d = clocked(|| n = replay_nothing(&t, &mut nt));
            v.push(d as f64 / n as f64);
        }
        emit(&label, "loop_alone_per_op", v);
        if let Some((_, down)) = &traces {
            replay(down, &mut held);
        }
    }
    zeroing();
    println!("allocbench done");
    true
}
