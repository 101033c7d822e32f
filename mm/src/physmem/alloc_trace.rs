//! Recorded allocator workloads: every decision of a workload (allocate or
//! free, which order, which live folio) made up front by a seeded RNG, so
//! that a timed replay costs the harness one sequential load and one
//! handle-table access per operation, and so that two allocators, or the
//! same allocator on the host and inside the kernel, replay the identical
//! sequence.  Used by `examples/bench_alloc.rs` (host, against
//! `buddy_system_allocator`) and by the kernel's `bench=alloc` mode
//! (instructions per operation under QEMU `-icount`).
use alloc::vec::Vec;

/// xorshift64: deterministic and identical for both sides.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in `0..n` by multiply-shift: a 64-bit `%` is a division
    /// costing tens of cycles, which would pad both sides' numbers alike.
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

/// One step of a recorded workload: allocate a folio of some order into a
/// slot of the handle table, or free the folio held in a slot (the order
/// rides along because `FrameAllocator::dealloc` needs it).  Packed into a
/// `u32` so the trace streams through the cache at 4 bytes a step.
#[derive(Clone, Copy)]
pub struct Op(pub u32);

impl Op {
    pub const FREE: u32 = 1 << 31;
    pub const ORDER_SHIFT: u32 = 24;
    pub const SLOT_MASK: u32 = (1 << Self::ORDER_SHIFT) - 1;

    pub fn alloc(order: u32, slot: usize) -> Self {
        Self(order << Self::ORDER_SHIFT | slot as u32)
    }
    pub fn free(order: u32, slot: usize) -> Self {
        Self(Self::FREE | order << Self::ORDER_SHIFT | slot as u32)
    }
    #[inline]
    pub fn is_free(self) -> bool {
        self.0 & Self::FREE != 0
    }
    #[inline]
    pub fn order(self) -> u32 {
        (self.0 & !Self::FREE) >> Self::ORDER_SHIFT
    }
    #[inline]
    pub fn slot(self) -> usize {
        (self.0 & Self::SLOT_MASK) as usize
    }
}

/// A workload recorded before timing: every decision (alloc or free, which
/// order, which live folio) is made here, with the RNG, so replaying it
/// costs the harness one sequential load and one handle-table access per
/// operation.  Both allocators and the do-nothing one replay the same trace.
pub struct Trace {
    pub ops: Vec<Op>,
    /// Size of the handle table (most folios live at once).
    pub slots: usize,
}

/// Records a trace while keeping the live set as slot numbers: `live` lists
/// the occupied slots (so a uniformly random victim is one `swap_remove`),
/// `spare` the free ones.
#[derive(Default)]
pub struct Recorder {
    pub ops: Vec<Op>,
    pub live: Vec<(usize, u32)>,
    spare: Vec<usize>,
    slots: usize,
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            ops: Vec::new(),
            live: Vec::new(),
            spare: Vec::new(),
            slots: 0,
        }
    }
    pub fn alloc(&mut self, order: u32) {
        let s = self.spare.pop().unwrap_or_else(|| {
            self.slots += 1;
            self.slots - 1
        });
        self.ops.push(Op::alloc(order, s));
        self.live.push((s, order));
    }
    /// Frees the `i`-th live folio (in `live` order, which `swap_remove`
    /// changes exactly as it changed the old loop's vector of handles).
    pub fn free(&mut self, i: usize) {
        let (s, o) = self.live.swap_remove(i);
        self.ops.push(Op::free(o, s));
        self.spare.push(s);
    }
    /// Frees every live folio, first to last.
    pub fn free_rest(&mut self) {
        for (s, o) in self.live.drain(..) {
            self.ops.push(Op::free(o, s));
            self.spare.push(s);
        }
    }
    /// The trace so far (which leaves folios allocated: a state to hold
    /// while a workload runs) and the trace that frees them afterwards.
    pub fn split(mut self) -> (Trace, Trace) {
        let slots = self.slots;
        let setup = core::mem::take(&mut self.ops);
        self.free_rest();
        (
            Trace { ops: setup, slots },
            Trace {
                ops: self.ops,
                slots,
            },
        )
    }
    pub fn finish(self) -> Trace {
        assert!(self.live.is_empty(), "trace leaves folios allocated");
        assert!(self.slots <= Op::SLOT_MASK as usize);
        Trace {
            ops: self.ops,
            slots: self.slots,
        }
    }
}

/// Orders 0, 2, 4 and 9, weighted 8:4:2:1.
pub const MIXED: [u32; 15] = [0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 9];
/// The same without order 9: shows what 2 MiB folios add.  (Their tail
/// descriptors are not written at allocation, so the difference is only
/// the zone traffic of large blocks; the other side keeps no per-frame
/// metadata at all.)
pub const MIXED_SMALL: [u32; 14] = [0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 4, 4];

/// Steady-state churn: 1024 folios of random orders, then every step frees
/// a uniformly random live folio and allocates one of a random order, so
/// the working set keeps its size while its contents and order mix turn
/// over (a machine whose memory use is flat while processes come and go).
/// Alloc and free alternate, so the harness's dispatch on them predicts.
pub fn churn(steps: usize, orders: &[u32]) -> Trace {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut r = Recorder::new();
    for _ in 0..1024 {
        r.alloc(orders[rng.below(orders.len())]);
    }
    while r.ops.len() < steps {
        r.free(rng.below(r.live.len()));
        r.alloc(orders[rng.below(orders.len())]);
    }
    r.free_rest();
    r.finish()
}

/// Random walk: `steps` random steps: allocate while fewer than 64 folios
/// live, free while 2048 do, otherwise a coin flip; a free picks its
/// victim uniformly among the live folios.  Then everything still live is
/// freed.  The working set grows and shrinks, which exercises the per-CPU
/// lists' refill and drain more than `churn`; but whether the next step
/// allocates or frees is itself random, and the harness's branch on it
/// mispredicts about every other step (most of its "loop alone" time).
pub fn walk(steps: usize, orders: &[u32]) -> Trace {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut r = Recorder::new();
    for _ in 0..steps {
        let n = r.live.len();
        if n < 64 || (n < 2048 && rng.below(2) == 0) {
            r.alloc(orders[rng.below(orders.len())]);
        } else {
            r.free(rng.below(n));
        }
    }
    r.free_rest();
    r.finish()
}

/// The machine a workload runs on: folios held, untimed, while it runs.
#[derive(Clone, Copy, PartialEq)]
pub enum State {
    /// Nothing else allocated: every free merges back to order-10 blocks.
    /// For `buddy_system_allocator` this is its worst case on order-0 pairs
    /// (each allocation splits a 4 MiB block ten levels, each free merges it
    /// back).
    Fresh,
    /// One order-0 frame held: the order-0 pairs then split and merge one
    /// level on the other side.
    HoldOne,
    /// After a storm: random orders 0..=9 up to 60% of memory, 300k random
    /// frees and allocations at that level, then random frees down to 30%,
    /// so the held folios are scattered over all of memory.
    Fragmented,
    /// 95% of memory held in folios of orders 0, 2 and 4, after 200k random
    /// frees and allocations at that level: the 5% left is scattered holes.
    NearlyFull,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fresh => "fresh",
            Self::HoldOne => "hold-1",
            Self::Fragmented => "fragmented",
            Self::NearlyFull => "nearly-full",
        }
    }

    /// The trace that sets the state up and the one that undoes it.
    /// `frames`: the memory the allocator manages (the fill levels are
    /// fractions of it).
    pub fn traces(self, frames: u64) -> Option<(Trace, Trace)> {
        const STORM: [u32; 12] = [0, 0, 0, 0, 0, 1, 2, 2, 3, 4, 6, 9];
        let mut r = Recorder::new();
        let mut used = 0u64;
        let (orders, seed, fill, steps, keep): (&[u32], u64, u64, usize, u64) = match self {
            Self::Fresh => return None,
            Self::HoldOne => {
                r.alloc(0);
                return Some(r.split());
            }
            Self::Fragmented => (
                &STORM,
                0x5eed_f4a9_0000_0001,
                frames * 6 / 10,
                300_000,
                frames * 3 / 10,
            ),
            Self::NearlyFull => (
                &MIXED_SMALL,
                0x5eed_f4a9_0000_0002,
                frames - frames / 20,
                200_000,
                frames,
            ),
        };
        let mut rng = Rng(seed);
        loop {
            let o = orders[rng.below(orders.len())];
            if used + (1 << o) > fill {
                break;
            }
            r.alloc(o);
            used += 1 << o;
        }
        for _ in 0..steps {
            let i = rng.below(r.live.len());
            used -= 1 << r.live[i].1;
            r.free(i);
            let o = orders[rng.below(orders.len())];
            if used + (1 << o) <= fill {
                r.alloc(o);
                used += 1 << o;
            }
        }
        while used > keep {
            let i = rng.below(r.live.len());
            used -= 1 << r.live[i].1;
            r.free(i);
        }
        Some(r.split())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every held state's teardown frees exactly what its setup left
    /// allocated, and the fill levels hold.
    #[test]
    fn held_states_balance() {
        let frames = 1u64 << 14;
        for st in [State::HoldOne, State::Fragmented, State::NearlyFull] {
            let (up, down) = st.traces(frames).expect("a held state");
            let mut held = 0i64;
            for op in up.ops.iter().chain(&down.ops) {
                let n = 1i64 << op.order();
                held += if op.is_free() { -n } else { n };
            }
            assert_eq!(held, 0, "{}", st.name());
            let after_up: i64 = up
                .ops
                .iter()
                .map(|op| {
                    if op.is_free() {
                        -(1i64 << op.order())
                    } else {
                        1 << op.order()
                    }
                })
                .sum();
            assert!(after_up > 0 && after_up as u64 <= frames, "{}", st.name());
        }
        assert!(State::Fresh.traces(frames).is_none());
        assert_eq!(churn(1000, &MIXED).ops.len() % 2, 0);
    }
}
