//! Host micro-benchmark: the folio buddy allocator against
//! `buddy_system_allocator::FrameAllocator` on the same workloads, in one run.
//!
//! Run with `cargo run --release -p mm --example bench_alloc` (`make
//! bench-alloc`).  Prints one line per workload ending in
//! `ratio=<our speed / their speed>`.  Each line also shows the workload's
//! loop run against an allocator that does nothing ("loop alone"): that
//! time is in both sides' numbers, so `their ns / loop-alone ns` bounds the
//! ratio any allocator could reach on the workload.  Neither side touches frame contents:
//! poisoning is switched off (release builds have no debug checks) and no
//! allocation asks for zeroing, so the numbers compare bookkeeping only.
//! Both manage the same 1 GiB of frames with the same largest block
//! (order 10, i.e. `FrameAllocator<11>`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use buddy_system_allocator::FrameAllocator;
use mm::buddy::{AllocFlags, BuddyAllocator};
use mm::folio::Folio;
use mm::memmap::{FrameDesc, Memmap};
use mm::pcp::SingleCpu;
use mm::phys::PhysMem;

/// Frames managed by both allocators (1 GiB).
const FRAMES: u64 = 1 << 18;
/// First PFN (4 GiB), so neither side gets an easy zero base.
const BASE_PFN: u64 = 1 << 20;

/// Physical memory that is never touched (poisoning and zeroing are off).
struct NoMem;

impl PhysMem for NoMem {
    fn load(&self, _: u64) -> u64 {
        0
    }
    fn store(&self, _: u64, _: u64) {}
    fn cmpxchg(&self, _: u64, old: u64, _: u64) -> u64 {
        old
    }
    fn zero(&self, _: u64, _: u64) {}
    fn copy(&self, _: u64, _: u64, _: u64) {}
    fn fill(&self, _: u64, _: u64, _: u8) {}
    fn read(&self, _: u64, buf: &mut [u8]) {
        buf.fill(0)
    }
    fn write(&self, _: u64, _: &[u8]) {}
    fn is_zero(&self, _: u64, _: u64) -> bool {
        true
    }
}

/// xorshift64: deterministic and identical for both sides.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in `0..n` by multiply-shift: a 64-bit `%` is a division
    /// costing tens of cycles, which would pad both sides' numbers alike.
    fn below(&mut self, n: usize) -> usize {
        ((self.next() as u128 * n as u128) >> 64) as usize
    }
}

/// The operations a workload needs, implemented by both allocators.
trait Frames {
    type H: Copy;
    fn alloc(&mut self, order: u32) -> Self::H;
    fn free(&mut self, h: Self::H, order: u32);
}

struct Ours<'a>(&'a BuddyAllocator<'a>);

impl<'a> Frames for Ours<'a> {
    type H = Folio<'a>;
    #[inline]
    fn alloc(&mut self, order: u32) -> Folio<'a> {
        self.0
            .alloc(order, AllocFlags::USER)
            .expect("ours: out of memory")
    }
    #[inline]
    fn free(&mut self, h: Folio<'a>, _order: u32) {
        h.put();
    }
}

struct Theirs(FrameAllocator<11>);

impl Frames for Theirs {
    type H = usize;
    #[inline]
    fn alloc(&mut self, order: u32) -> usize {
        self.0.alloc(1 << order).expect("theirs: out of memory")
    }
    #[inline]
    fn free(&mut self, h: usize, order: u32) {
        self.0.dealloc(h, 1 << order);
    }
}

/// The workload loops with no allocator behind them: a counter for
/// addresses, nothing on free.
struct Nothing(usize);

impl Frames for Nothing {
    type H = usize;
    #[inline]
    fn alloc(&mut self, _order: u32) -> usize {
        self.0 += 1;
        black_box(self.0)
    }
    #[inline]
    fn free(&mut self, h: usize, _order: u32) {
        black_box(h);
    }
}

/// Allocate and immediately free one order-0 frame, `n` times.
fn order0_pairs<F: Frames>(a: &mut F, n: usize) -> usize {
    for _ in 0..n {
        let h = a.alloc(0);
        a.free(black_box(h), 0);
    }
    2 * n
}

/// Allocate 64 order-0 frames, then free them, `rounds` times.
fn order0_batch<F: Frames>(a: &mut F, rounds: usize) -> usize {
    let mut live = Vec::with_capacity(64);
    for _ in 0..rounds {
        for _ in 0..64 {
            live.push(a.alloc(0));
        }
        for h in live.drain(..) {
            a.free(h, 0);
        }
    }
    rounds * 128
}

/// A working set of up to 2048 folios of orders 0, 2, 4 and 9 (weighted
/// 8:4:2:1), allocating and freeing at random.  Counts allocs + frees.
fn mixed<F: Frames>(a: &mut F, steps: usize) -> usize {
    const ORDERS: [u32; 15] = [0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 9];
    mixed_of(a, steps, &ORDERS)
}

/// The same without order 9: shows what 2 MiB folios add.  (Their tail
/// descriptors are not written at allocation, so the difference is only
/// the zone traffic of large blocks; the other side keeps no per-frame
/// metadata at all.)
fn mixed_small<F: Frames>(a: &mut F, steps: usize) -> usize {
    const ORDERS: [u32; 14] = [0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 4, 4];
    mixed_of(a, steps, &ORDERS)
}

fn mixed_of<F: Frames>(a: &mut F, steps: usize, orders: &[u32]) -> usize {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut live: Vec<(F::H, u32)> = Vec::with_capacity(4096);
    let mut ops = 0;
    for _ in 0..steps {
        if live.len() < 64 || (live.len() < 2048 && rng.below(2) == 0) {
            let o = orders[rng.below(orders.len())];
            live.push((a.alloc(o), o));
        } else {
            let (h, o) = live.swap_remove(rng.below(live.len()));
            a.free(h, o);
        }
        ops += 1;
    }
    for (h, o) in live.drain(..) {
        a.free(h, o);
        ops += 1;
    }
    ops
}

/// Allocate 65536 frames of random orders 0..=3 (weighted towards 0), then
/// free them in a random order, `rounds` times.  Counts allocs + frees.
fn random_frees<F: Frames>(a: &mut F, rounds: usize) -> usize {
    const ORDERS: [u32; 8] = [0, 0, 0, 0, 1, 1, 2, 3];
    let mut rng = Rng(0x0bad_cafe_f00d_1234);
    let mut live: Vec<(F::H, u32)> = Vec::with_capacity(65536);
    let mut ops = 0;
    for _ in 0..rounds {
        for _ in 0..65536 {
            let o = ORDERS[rng.below(ORDERS.len())];
            live.push((a.alloc(o), o));
        }
        // Fisher-Yates shuffle, then free in that order.
        for i in (1..live.len()).rev() {
            live.swap(i, rng.below(i + 1));
        }
        ops += 2 * live.len();
        for (h, o) in live.drain(..) {
            a.free(h, o);
        }
    }
    ops
}

fn time(mut f: impl FnMut() -> usize) -> (Duration, usize) {
    let t = Instant::now();
    let n = f();
    (t.elapsed(), n)
}

fn main() {
    let descs: Vec<FrameDesc> = (0..FRAMES).map(|_| FrameDesc::new()).collect();
    let mem = NoMem;
    let ours = BuddyAllocator::new(Memmap::new(&descs, BASE_PFN), &mem, &SingleCpu);
    ours.set_poison(false);
    ours.add_free_range(BASE_PFN << 12, (BASE_PFN + FRAMES) << 12);
    let mut theirs = Theirs(FrameAllocator::<11>::new());
    theirs
        .0
        .add_frame(BASE_PFN as usize, (BASE_PFN + FRAMES) as usize);
    let mut ours = Ours(&ours);

    type Workload = (
        &'static str,
        fn(&mut Ours<'_>) -> usize,
        fn(&mut Theirs) -> usize,
        fn(&mut Nothing) -> usize,
    );
    let workloads: [Workload; 5] = [
        (
            "order0-pairs      ",
            |a| order0_pairs(a, 2_000_000),
            |a| order0_pairs(a, 2_000_000),
            |a| order0_pairs(a, 2_000_000),
        ),
        (
            "order0-batch64    ",
            |a| order0_batch(a, 20_000),
            |a| order0_batch(a, 20_000),
            |a| order0_batch(a, 20_000),
        ),
        (
            "mixed-0/2/4/9     ",
            |a| mixed(a, 1_000_000),
            |a| mixed(a, 1_000_000),
            |a| mixed(a, 1_000_000),
        ),
        (
            "mixed-0/2/4       ",
            |a| mixed_small(a, 1_000_000),
            |a| mixed_small(a, 1_000_000),
            |a| mixed_small(a, 1_000_000),
        ),
        (
            "random-order-frees",
            |a| random_frees(a, 8),
            |a| random_frees(a, 8),
            |a| random_frees(a, 8),
        ),
    ];
    let mut nothing = Nothing(0);
    println!(
        "bench-alloc: {} MiB of frames, max order 10, ns per operation (alloc or free)",
        FRAMES >> 8
    );
    // An optional argument selects workloads by name (for profiling).
    let filter = std::env::args().nth(1).unwrap_or_default();
    for (name, o, t, z) in workloads {
        if !name.contains(filter.as_str()) {
            continue;
        }
        // Warm up once (fills our per-CPU caches, faults in both sides' memory).
        o(&mut ours);
        t(&mut theirs);
        let (to, no) = time(|| o(&mut ours));
        let (tt, nt) = time(|| t(&mut theirs));
        z(&mut nothing);
        let (tz, nz) = time(|| z(&mut nothing));
        let ns_o = to.as_nanos() as f64 / no as f64;
        let ns_t = tt.as_nanos() as f64 / nt as f64;
        let ns_z = tz.as_nanos() as f64 / nz as f64;
        println!(
            "{name}: ours {ns_o:8.1} ns/op  buddy_system_allocator {ns_t:8.1} ns/op  (loop alone {ns_z:4.1})  ratio={:.1}",
            ns_t / ns_o
        );
    }
    let s = ours.0.stats();
    assert_eq!(s.allocated, 0, "benchmark leaked frames");
}
