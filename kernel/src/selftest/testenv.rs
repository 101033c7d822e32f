//! What the address-space self-tests share: the knob fixture that restores
//! every THP and khugepaged setting a test changes, the free-frame baseline
//! every test must return to, and a few mapping helpers.
use crate::mem::khugepaged;
use crate::mem::memory::buddy;
use crate::mem::uspace::{self, UserMm};
use alloc::sync::Arc;
use core::sync::atomic::Ordering::Relaxed;
use ktest::{TestResult, check, check_eq};
use mm::abi::errno::Errno;
use mm::abi::uapi::*;
use mm::thp::{GlobalMode, OrderMode, THP};

pub const KB: u64 = 1024;
pub const MB: u64 = 1024 * 1024;
pub const RW: Prot = PROT_READ.union(PROT_WRITE);
pub const ANON: MapFlags = MAP_PRIVATE.union(MAP_ANONYMOUS);

/// Knobs (orders, global mode, zero page, khugepaged's) restored on drop;
/// free frames checked by `finish`.  The khugepaged thread stays paused
/// unless the test calls `run_daemon`.
pub struct Fixture {
    modes: [OrderMode; 10],
    global: GlobalMode,
    zero: bool,
    kh: [u32; 5],
    free_base: u64,
    resumed: bool,
}

fn kh_knobs() -> [u32; 5] {
    let k = &THP.config.khugepaged;
    [
        k.pages_to_scan.load(Relaxed),
        k.scan_sleep_millisecs.load(Relaxed),
        k.alloc_sleep_millisecs.load(Relaxed),
        k.max_ptes_none.load(Relaxed),
        k.max_ptes_shared.load(Relaxed),
    ]
}

fn set_kh_knobs(v: [u32; 5]) {
    let k = &THP.config.khugepaged;
    k.pages_to_scan.store(v[0], Relaxed);
    k.scan_sleep_millisecs.store(v[1], Relaxed);
    k.alloc_sleep_millisecs.store(v[2], Relaxed);
    k.max_ptes_none.store(v[3], Relaxed);
    k.max_ptes_shared.store(v[4], Relaxed);
}

impl Fixture {
    /// Global `global`; `orders` get `mode`, every other size `never`.
    pub fn new(global: GlobalMode, orders: &[u32], mode: OrderMode) -> Fixture {
        let f = Fixture {
            modes: THP.config.order_modes(),
            global: THP.config.global_mode(),
            zero: THP.config.use_zero_page(),
            kh: kh_knobs(),
            free_base: free_frames(),
            resumed: false,
        };
        THP.config.set_global_mode(global);
        for o in 2..=9 {
            let m = if orders.contains(&o) {
                mode
            } else {
                OrderMode::Never
            };
            THP.config.set_order_mode(o, m);
        }
        f
    }

    /// Only the orders in `orders` are `always` (global `always`).
    pub fn always(orders: &[u32]) -> Fixture {
        Fixture::new(GlobalMode::Always, orders, OrderMode::Always)
    }

    /// Let the khugepaged thread run (fast knobs) for this test.
    pub fn run_daemon(&mut self, scan_sleep_ms: u32, pages_to_scan: u32) {
        let k = &THP.config.khugepaged;
        k.scan_sleep_millisecs.store(scan_sleep_ms, Relaxed);
        k.pages_to_scan.store(pages_to_scan, Relaxed);
        k.alloc_sleep_millisecs.store(10, Relaxed);
        khugepaged::resume();
        self.resumed = true;
    }

    /// Tear `mms` down and check every frame came back.
    pub fn finish(mut self, mms: impl IntoIterator<Item = Arc<UserMm>>) -> TestResult {
        if self.resumed {
            khugepaged::pause();
            self.resumed = false;
        }
        uspace::deactivate();
        for m in mms {
            // `pause` waited for khugepaged's pass; another short-lived
            // holder (the shrinker on another CPU) gets up to 10 s (a
            // busy host may starve a vCPU) to let go (ours + the registry's).
            let t0 = crate::arch::now_ns();
            while Arc::strong_count(&m) > 2 && crate::arch::now_ns() - t0 < 10_000_000_000 {
                crate::task::sched::sleep_ms(1);
            }
            check!(uspace::release(m), "address space still referenced");
        }
        let now = free_frames();
        check_eq!(
            now,
            self.free_base,
            "free frames after teardown vs baseline"
        );
        Ok(())
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if self.resumed {
            khugepaged::pause();
        }
        THP.config.set_all_order_modes(&self.modes);
        THP.config.set_global_mode(self.global);
        THP.config.set_use_zero_page(self.zero);
        set_kh_knobs(self.kh);
        uspace::deactivate();
    }
}

/// Free frames plus the frames the context keeps (zero pages), so the lazy
/// huge-zero allocation does not move the baseline.
pub fn free_frames() -> u64 {
    buddy().drain_all();
    buddy().stats().free + uspace::ctx().frames_held()
}

/// An errno as a test failure reason.
pub fn err(e: Errno) -> ktest::String {
    ktest::String::from(e.name())
}

/// A read-write mapping of `len` bytes at an `align`-aligned address.
pub fn aligned_mapping(m: &UserMm, len: u64, align: u64) -> Result<u64, ktest::String> {
    let probe = m
        .enter()
        .mmap(0, len + align, PROT_NONE, ANON)
        .map_err(err)?;
    m.enter().munmap(probe, len + align).map_err(err)?;
    let va = probe.div_ceil(align) * align;
    m.enter().mmap(va, len, RW, ANON | MAP_FIXED).map_err(err)
}

/// Write a distinct value (`page ^ seed`) into every 4K page of
/// `[va, va+len)` of the loaded address space, through the MMU.
pub fn fill(va: u64, len: u64, seed: u64) -> TestResult {
    for p in (va..va + len).step_by(4096) {
        uspace::write_u64(p + 8, p ^ seed)
            .map_err(|e| ktest::format!("write {p:#x}: {}", e.name()))?;
    }
    Ok(())
}

/// Check what [`fill`] wrote.
pub fn verify(va: u64, len: u64, seed: u64) -> TestResult {
    for p in (va..va + len).step_by(4096) {
        let v = uspace::read_u64(p + 8).map_err(|e| ktest::format!("read {p:#x}: {}", e.name()))?;
        check_eq!(v, p ^ seed, "data at {p:#x}");
    }
    Ok(())
}

/// xorshift64*: small, fast, and the same sequence on every arch (the
/// storms' random operations).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}
