//! Reclaim racing the unmapping of what it reclaims.  Reclaim reaches a
//! folio through the LRU, with no mmap lock of the spaces mapping it, so
//! an exit or a `munmap` on another CPU may take the folio's mappings
//! away between reclaim's first look at the folio and its reverse-map
//! walk.  Whoever removes the last mapping uncounts the folio
//! (`nr_anon`, the deferred-split queue) once.

mod mmtest;

use std::sync::Barrier;

use mm::aspace::swap::{Pageout, pageout_folio};
use mm::paging::PagingArch;
use mm::thp::MthpStat;
use mmtest::*;

/// Rounds of the race; one in a few dozen lands in the window.
const ROUNDS: usize = 400;

/// A 64K folio paged out by reclaim (`pageout_folio`, as kswapd or a
/// direct reclaimer calls it) while another CPU unmaps it: every round
/// ends with `nr_anon` back at 0, the folio, its slots and its swap-cache
/// entry freed (at once, or by the next pass when the write ended while
/// the unmap still held the folio).  Checked once: with the pageout accounting the unmap
/// whenever its walk succeeded (the code before), the `nr_anon` gauge
/// went below zero (its debug assertion fired) within the first rounds
/// when the walk came after the unmap and found nothing mapped.
fn pageout_races_munmap<A: PagingArch + Sync>() {
    run::<A>(32 * MIB, |env| {
        env.only_order(4);
        let _disk = mmtest::swapdisk::swapon(env, 4096, false);
        let mm = env.mm();
        let va = 0x7000_0000_0000;
        let free0 = env.buddy.stats().free;
        for round in 0..ROUNDS {
            mm.mmap(va, K64, RW, ANON | MAP_FIXED).unwrap();
            env.fill_pages(&mm, va, K64, 0x5a);
            let f = env.folio_at(&mm, va).unwrap();
            assert_eq!(f.order(), 4);
            let held = f.get_ref();
            let go = Barrier::new(2);
            let out = std::thread::scope(|s| {
                s.spawn(|| {
                    on_cpu(1);
                    go.wait();
                    // Skew the start a little so that both orders occur.
                    for _ in 0..(round % 64) * 16 {
                        std::hint::spin_loop();
                    }
                    mm.munmap(va, K64).unwrap();
                });
                go.wait();
                pageout_folio(&[&mm], &held)
            });
            if matches!(out, Pageout::Cached) {
                // Written while the unmap still held its references: the
                // clean, unmapped folio stays in the swap cache until
                // reclaim's next look at it (as Linux, whose reclaimer
                // then finds the references too many to free it).
                assert!(
                    matches!(pageout_folio(&[&mm], &held), Pageout::Freed(_)),
                    "round {round}: the next pass frees it"
                );
            }
            drop(held);
            assert_eq!(env.mthp(4, MthpStat::NrAnon), 0, "round {round}");
            assert_eq!(env.ctx.swap.cache.pages(), 0, "round {round}");
            assert_eq!(env.ctx.swap.totals().1, env.ctx.swap.totals().0);
        }
        env.ctx.lru_drain();
        assert_eq!(env.buddy.stats().free, free0, "frames back to baseline");
    });
}

both_formats!(pageout_races_munmap);
