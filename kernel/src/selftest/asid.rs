//! arm64's generation ASID allocator (`arch_aarch64::asid`) under a forced
//! rollover: more address spaces than hardware ASIDs, threads of each on
//! two CPUs, all mapping the same virtual address to their own frames.
use crate::arch;
use crate::mem::uspace::{self, read_u64, write_u64};
use crate::selftest::testenv::*;
use crate::task::sched;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use ktest::{check, check_eq, ktest, skip};
use mm::thp::{GlobalMode, OrderMode};

/// Address spaces (more than the ASIDs the test leaves, so that they keep
/// taking ASIDs from each other).
const SPACES: u64 = 10;
/// Hardware ASIDs the test allows (`1..=LIMIT`).
const LIMIT: u64 = 4;
/// Write / yield / read-back rounds per thread.
const ROUNDS: u64 = 150;
/// The same user address in every space.
const VA: u64 = 0x1000_0000;

/// What thread `t` of space `i` writes in round `r`.
fn word(i: u64, t: u64, r: u64) -> u64 {
    (i << 48) | (t << 40) | r
}

ktest! {
    /// Ten address spaces with four hardware ASIDs (so rollovers keep
    /// happening), two threads in each, pinned one per CPU: each writes
    /// its words, yields (another space runs on its CPU, often with an
    /// ASID just taken from a third), and reads them back, with a marker
    /// page per space and its sibling's page.  Checks: rollovers happened,
    /// no thread ever saw another space's data, no CPU loaded a user ASID
    /// of a generation its TLB was not flushed for, and every frame came
    /// back.  Commenting out the rollover's `flush_local` call in
    /// `arch_aarch64::asid::switch_in_slow` makes this test fail (tried
    /// once: "ASIDs loaded without the rollover's flush"); under QEMU the
    /// wrong translation itself cannot show, as QEMU empties a CPU's TLB
    /// whenever the loaded ASID changes (see `arch_aarch64::asid`).
    fn asid_rollover_keeps_spaces_apart() {
        if arch::nr_cpus_online() < 2 {
            skip!("needs two CPUs (one online)");
        }
        let fx = Fixture::new(GlobalMode::Never, &[], OrderMode::Never);
        static BAD: AtomicU64 = AtomicU64::new(0);
        static FIRST_BAD: AtomicU64 = AtomicU64::new(0);
        BAD.store(0, Relaxed);
        FIRST_BAD.store(0, Relaxed);
        let mut mms = Vec::new();
        for i in 0..SPACES {
            let m = uspace::new_mm().map_err(err)?;
            m.enter().mmap(VA, 3 * 4096, RW, ANON | mm::abi::uapi::MAP_FIXED).map_err(err)?;
            uspace::activate(&m);
            write_u64(VA + 2 * 4096, word(i, 9, 0)).map_err(err)?;
            mms.push(m);
        }
        uspace::deactivate();
        // Lowering the limit is a rollover itself: count the ones after.
        let old = arch::set_asid_limit(LIMIT);
        let (r0, u0) = (arch::asid_rollovers(), arch::unflushed_loads());
        let mut hs = Vec::new();
        for (i, m) in mms.iter().enumerate() {
            let i = i as u64;
            let space = sched::AddrSpace { root_pa: m.root_pa(), asid: m.asid() };
            for t in 0..2u64 {
                let h = sched::spawn_in("asid", space, move || {
                    sched::set_affinity(sched::current_id(), 1 << t);
                    sched::yield_now();
                    let bad = |what: u64| {
                        if BAD.fetch_add(1, Relaxed) == 0 {
                            FIRST_BAD.store(what, Relaxed);
                        }
                    };
                    let mine = VA + t * 4096;
                    let sibling = VA + (1 - t) * 4096;
                    for r in 1..=ROUNDS {
                        if write_u64(mine, word(i, t, r)).is_err() {
                            bad(u64::MAX);
                        }
                        sched::yield_now();
                        match read_u64(mine) {
                            Ok(v) if v == word(i, t, r) => {}
                            Ok(v) => bad(v),
                            Err(_) => bad(u64::MAX),
                        }
                        match read_u64(VA + 2 * 4096) {
                            Ok(v) if v == word(i, 9, 0) => {}
                            Ok(v) => bad(v),
                            Err(_) => bad(u64::MAX),
                        }
                        // The sibling's page: untouched yet, or its words.
                        match read_u64(sibling) {
                            Ok(v) if v == 0 || v >> 40 == (i << 8) | (1 - t) => {}
                            Ok(v) => bad(v),
                            Err(_) => bad(u64::MAX),
                        }
                    }
                });
                match h {
                    Ok(h) => hs.push(h),
                    Err(e) => {
                        for h in hs {
                            h.join();
                        }
                        arch::set_asid_limit(old);
                        return Err(ktest::format!("spawn: {e}"));
                    }
                }
            }
        }
        for h in hs {
            h.join();
        }
        arch::set_asid_limit(old);
        let rollovers = arch::asid_rollovers() - r0;
        check!(rollovers > 0, "no ASID rollover with {SPACES} spaces and {LIMIT} ASIDs");
        check_eq!(
            BAD.load(Relaxed),
            0,
            "words of another space seen (first: {:#x})",
            FIRST_BAD.load(Relaxed)
        );
        check_eq!(arch::unflushed_loads() - u0, 0, "ASIDs loaded without the rollover's flush");
        for (i, m) in mms.iter().enumerate() {
            uspace::activate(m);
            for t in 0..2 {
                check_eq!(read_u64(VA + t * 4096).map_err(err)?, word(i as u64, t, ROUNDS), "space {} page {}", i, t);
            }
        }
        crate::info!("asid rollover test: {rollovers} rollovers, {} ASIDs allocated", arch::asid_allocs());
        fx.finish(mms)
    }
}
