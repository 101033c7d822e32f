//! Unit tests of `thp::policy`.

use super::*;

/// smaps's `THPeligible` size check: some naturally aligned block of an
/// allowed order lies inside the VMA.
#[test]
fn orders_fitting_needs_an_aligned_block() {
    const M2: u64 = 2 << 20;
    const K64: u64 = 64 << 10;
    let both = (1 << 4) | (1 << 9);
    assert_eq!(orders_fitting(both, 0, M2), both);
    assert_eq!(orders_fitting(both, 4096, M2 + 4096), 1 << 4);
    assert_eq!(orders_fitting(both, 4096, 2 * M2), both);
    assert_eq!(orders_fitting(both, K64 + 4096, 2 * K64 + 4096), 0);
    assert_eq!(orders_fitting(both, 0, 60 << 10), 0);
    assert_eq!(orders_fitting(0, 0, 4 * M2), 0);
    assert_eq!(orders_fitting(1 << 9, u64::MAX - M2 + 1, u64::MAX), 0);
}

#[test]
fn orders_with_and_high_to_low_match_naive_forms() {
    let modes = [
        OrderMode::Never,
        OrderMode::Always,
        OrderMode::Inherit,
        OrderMode::Madvise,
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..2000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let snap = PolicySnapshot(seed as u32);
        for m in modes {
            let naive = (THP_MIN_ORDER..=THP_MAX_ORDER)
                .filter(|&o| snap.order(o) == m)
                .fold(0, |acc, o| acc | (1 << o));
            assert_eq!(snap.orders_with(m), naive, "{snap:?} {m:?}");
        }
        let mask = (seed >> 32) as u32;
        let naive: alloc::vec::Vec<u32> =
            (0..32u32).rev().filter(|o| mask & (1 << o) != 0).collect();
        assert_eq!(
            orders_high_to_low(mask).collect::<alloc::vec::Vec<_>>(),
            naive
        );
    }
}

const NONE: VmaThpHints = VmaThpHints {
    hugepage: false,
    nohugepage: false,
};
const HUGE: VmaThpHints = VmaThpHints {
    hugepage: true,
    nohugepage: false,
};
const NOHUGE: VmaThpHints = VmaThpHints {
    hugepage: false,
    nohugepage: true,
};

fn bit(o: u32) -> u32 {
    1 << o
}

#[test]
fn order_helpers() {
    assert_eq!(THP_ORDERS_ALL_ANON, 0b11_1111_1100);
    assert_eq!(order_size_kb(2), 16);
    assert_eq!(order_size_kb(9), 2048);
    assert_eq!(order_from_size(16 << 10), Some(2));
    assert_eq!(order_from_size(64 << 10), Some(4));
    assert_eq!(order_from_size(2 << 20), Some(9));
    for bad in [0, 4096, 8192, 4 << 20, 48 << 10, u64::MAX] {
        assert_eq!(order_from_size(bad), None, "{bad}");
    }
    let v: alloc::vec::Vec<u32> = orders_high_to_low(bit(2) | bit(4) | bit(9)).collect();
    assert_eq!(v, [9, 4, 2]);
}

#[test]
fn defaults_match_linux() {
    let c = ThpConfig::new();
    assert_eq!(c.global_mode(), GlobalMode::Always);
    assert_eq!(c.order_mode(9), OrderMode::Inherit);
    for o in 2..9 {
        assert_eq!(c.order_mode(o), OrderMode::Never);
    }
    assert_eq!(c.order_mode(1), OrderMode::Never);
    assert_eq!(c.defrag(), DefragMode::Madvise);
    assert!(c.use_zero_page());
    assert!(c.shrink_underused());
    let k = &c.khugepaged;
    assert!(k.defrag.load(Ordering::Relaxed));
    assert_eq!(k.pages_to_scan.load(Ordering::Relaxed), 4096);
    assert_eq!(k.scan_sleep_millisecs.load(Ordering::Relaxed), 10000);
    assert_eq!(k.alloc_sleep_millisecs.load(Ordering::Relaxed), 60000);
    assert_eq!(k.max_ptes_none.load(Ordering::Relaxed), 511);
    assert_eq!(k.max_ptes_swap.load(Ordering::Relaxed), 64);
    assert_eq!(k.max_ptes_shared.load(Ordering::Relaxed), 256);
    // Default: only PMD, via inherit + global always, unless NOHUGEPAGE.
    assert_eq!(c.allowable_orders(NONE), bit(9));
    assert_eq!(c.allowable_orders(HUGE), bit(9));
    assert_eq!(c.allowable_orders(NOHUGE), 0);
}

/// Table over (global, per-size, hints) → allowed?
#[test]
fn order_resolution_table() {
    use GlobalMode as G;
    use OrderMode as O;
    let cases: &[(G, O, VmaThpHints, bool)] = &[
        (G::Always, O::Always, NONE, true),
        (G::Always, O::Always, HUGE, true),
        (G::Always, O::Always, NOHUGE, false),
        (G::Always, O::Inherit, NONE, true),
        (G::Always, O::Inherit, HUGE, true),
        (G::Always, O::Inherit, NOHUGE, false),
        (G::Always, O::Madvise, NONE, false),
        (G::Always, O::Madvise, HUGE, true),
        (G::Always, O::Never, NONE, false),
        (G::Always, O::Never, HUGE, false),
        (G::Madvise, O::Always, NONE, true),
        (G::Madvise, O::Inherit, NONE, false),
        (G::Madvise, O::Inherit, HUGE, true),
        (G::Madvise, O::Inherit, NOHUGE, false),
        (G::Madvise, O::Madvise, NONE, false),
        (G::Madvise, O::Madvise, HUGE, true),
        (G::Madvise, O::Never, HUGE, false),
        (G::Never, O::Always, NONE, true),
        (G::Never, O::Always, HUGE, true),
        (G::Never, O::Inherit, NONE, false),
        (G::Never, O::Inherit, HUGE, false),
        (G::Never, O::Madvise, HUGE, true),
        (G::Never, O::Madvise, NONE, false),
        (G::Never, O::Never, HUGE, false),
    ];
    for &(g, o, hints, allowed) in cases {
        for order in THP_MIN_ORDER..=THP_MAX_ORDER {
            let c = ThpConfig::new();
            c.set_global_mode(g);
            c.set_all_order_modes(&[O::Never; 10]);
            assert!(c.set_order_mode(order, o));
            let want = if allowed { bit(order) } else { 0 };
            assert_eq!(
                c.allowable_orders(hints),
                want,
                "{g:?} {o:?} {hints:?} order {order}"
            );
        }
    }
}

#[test]
fn mixed_sizes() {
    let c = ThpConfig::new();
    c.set_global_mode(GlobalMode::Madvise);
    c.set_order_mode(2, OrderMode::Always);
    c.set_order_mode(4, OrderMode::Madvise);
    c.set_order_mode(5, OrderMode::Inherit);
    // 9 stays inherit.
    assert_eq!(c.allowable_orders(NONE), bit(2));
    assert_eq!(c.allowable_orders(HUGE), bit(2) | bit(4) | bit(5) | bit(9));
    assert_eq!(c.allowable_orders(NOHUGE), 0);
    assert!(!c.set_order_mode(1, OrderMode::Always));
    assert!(!c.set_order_mode(10, OrderMode::Always));
    assert_eq!(c.allowable_orders(HUGE) & 0b11, 0);
}

#[test]
fn khugepaged_should_run_rule() {
    let mut p = PolicySnapshot::linux_default();
    assert!(p.khugepaged_should_run());
    p = p.with_global(GlobalMode::Never);
    assert!(!p.khugepaged_should_run());
    p = p.with_order(4, OrderMode::Madvise);
    assert!(p.khugepaged_should_run());
    p = p
        .with_order(4, OrderMode::Never)
        .with_order(9, OrderMode::Never);
    p = p.with_global(GlobalMode::Always);
    assert!(!p.khugepaged_should_run());
}

#[test]
fn suitable_orders_table() {
    let all = THP_ORDERS_ALL_ANON;
    let m = 1u64 << 20;
    // (vma_start, vma_end, addr, expected)
    let cases: &[(u64, u64, u64, u32)] = &[
        // 4 MiB aligned VMA: everything fits.
        (0x4000_0000, 0x4040_0000, 0x4012_3456, all),
        // 64 KiB VMA aligned at 64 KiB: orders 2..=4.
        (0x10_0000, 0x11_0000, 0x10_5000, bit(2) | bit(3) | bit(4)),
        // Misaligned start by one page: 16K block around 0x10_1000 is
        // 0x10_0000..0x10_4000, starting before the VMA.
        (0x10_1000, 0x20_0000, 0x10_1000, 0),
        (0x10_1000, 0x20_0000, 0x10_4000, bit(2)),
        // End boundary.
        (0x0, 0x10_3000, 0x10_2000, 0),
        // 2 MiB VMA not 2 MiB aligned: no PMD.
        (m, 3 * m, 2 * m - 0x1000, all & !bit(9)),
        // 1M block around 2M+4K would be 2M..3M: fits; 2M block would
        // be 2M..4M: does not.
        (m, 3 * m, 2 * m + 0x1000, all & !bit(9)),
        (m, 3 * m, 3 * m - 0x1000, all & !bit(9)),
    ];
    for &(s, e, a, want) in cases {
        assert_eq!(
            suitable_orders(all, s, e, a),
            want,
            "{s:#x}..{e:#x} @ {a:#x}"
        );
    }
    // The mask filters.
    assert_eq!(
        suitable_orders(bit(4), 0x4000_0000, 0x4040_0000, 0x4000_0000),
        bit(4)
    );
    // No overflow at the top of the address space.
    assert_eq!(
        suitable_orders(all, u64::MAX - 0xfff, u64::MAX, u64::MAX - 1),
        0
    );
}

#[test]
fn reset_restores_defaults() {
    let c = ThpConfig::new();
    c.set_global_mode(GlobalMode::Never);
    c.set_order_mode(3, OrderMode::Always);
    c.set_defrag(DefragMode::Never);
    c.set_use_zero_page(false);
    c.khugepaged.max_ptes_none.store(0, Ordering::Relaxed);
    let g = c.generation();
    c.reset();
    assert!(c.generation() > g);
    assert_eq!(c.snapshot(), PolicySnapshot::linux_default());
    assert_eq!(c.defrag(), DefragMode::Madvise);
    assert!(c.use_zero_page());
    assert_eq!(c.khugepaged.max_ptes_none.load(Ordering::Relaxed), 511);
}

/// The orders the configuration keeps ready beside its policy word are
/// those the snapshot works out, for every hint set, after each kind of
/// change (one knob, all sizes at once, the global mode, reset).
#[test]
fn ready_orders_follow_every_change() {
    let c = ThpConfig::new();
    let modes = [
        OrderMode::Never,
        OrderMode::Always,
        OrderMode::Inherit,
        OrderMode::Madvise,
    ];
    let globals = [GlobalMode::Always, GlobalMode::Madvise, GlobalMode::Never];
    let check = |c: &ThpConfig| {
        for h in [NONE, HUGE, NOHUGE] {
            assert_eq!(
                c.allowable_orders(h),
                c.snapshot().allowable_orders(h),
                "{h:?}"
            );
        }
    };
    check(&c);
    // A simple generator: every size walks through the modes at its own pace.
    let mut x: u32 = 0x9e37_79b9;
    for round in 0..200 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let order = THP_MIN_ORDER + x % (THP_MAX_ORDER - THP_MIN_ORDER + 1);
        c.set_order_mode(order, modes[(x >> 8) as usize % 4]);
        check(&c);
        c.set_global_mode(globals[(x >> 12) as usize % 3]);
        check(&c);
        if round % 17 == 0 {
            let all: [OrderMode; 10] = core::array::from_fn(|o| modes[(x as usize >> o) % 4]);
            c.set_all_order_modes(&all);
            check(&c);
        }
    }
    assert_ne!(c.snapshot(), PolicySnapshot::linux_default());
    c.reset();
    check(&c);
    assert_eq!(c.allowable_orders(NONE), bit(9));
}
