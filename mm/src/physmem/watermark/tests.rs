//! The numbers below are worked out by hand from Linux 6.12's formulas
//! (mm/page_alloc.c, mm/khugepaged.c), not taken from this code.
use super::*;

#[test]
fn int_sqrt_is_floor() {
    for x in [
        0u64,
        1,
        2,
        3,
        4,
        15,
        16,
        17,
        99,
        100,
        101,
        u32::MAX as u64,
        u64::MAX,
    ] {
        let r = int_sqrt(x);
        assert!(r.checked_mul(r).unwrap() <= x, "{x}");
        assert!((r + 1).checked_mul(r + 1).is_none_or(|s| s > x), "{x}");
    }
}

#[test]
fn default_min_free_kbytes_formula() {
    // sqrt(131072 * 16) = 1448.15
    assert_eq!(default_min_free_kbytes(128 << 10), 1448);
    // sqrt(1048576 * 16) = 4096
    assert_eq!(default_min_free_kbytes(1 << 20), 4096);
    // sqrt(512 * 16) = 90 → floor 128
    assert_eq!(default_min_free_kbytes(512), 128);
    // 8 TiB: sqrt(2^33 * 16) = 370727 → ceiling 262144
    assert_eq!(default_min_free_kbytes(8 << 30), 262_144);
}

#[test]
fn zone_watermarks_formula() {
    // 128 MiB: min 1448/4 = 362; gap max(362/4 = 90, 32768*10/10000 = 32).
    let w = zone_watermarks(1448, 32_768, 10);
    assert_eq!(
        w,
        Watermarks {
            min: 362,
            low: 452,
            high: 542,
            promo: 632
        }
    );
    // 1 GiB: min 1024; gap max(256, 262144*10/10000 = 262).
    let w = zone_watermarks(4096, 262_144, 10);
    assert_eq!(
        w,
        Watermarks {
            min: 1024,
            low: 1286,
            high: 1548,
            promo: 1810
        }
    );
    // Largest scale factor: gap 262144*3000/10000 = 78643.
    let w = zone_watermarks(4096, 262_144, 3000);
    assert_eq!((w.low, w.high), (1024 + 78_643, 1024 + 2 * 78_643));
}

#[test]
fn thp_recommendation() {
    // 512 * 1 * (2 + 9) = 5632 pages = 22528 KiB, below 5% of 260596.
    assert_eq!(thp_recommended_min_free_kbytes(1, 262_144 - 1548), 22_528);
    // x86 with 2 GiB: DMA and DMA32 populated, 2 * 5632 pages = 45056 KiB
    // (what Linux 6.12 shows under the runner).
    assert_eq!(
        thp_recommended_min_free_kbytes(2, 501_300 + 3840 - 16_766 - 127),
        45_056
    );
    // Capped at 5% of 32226 pages = 1611 pages = 6444 KiB.
    assert_eq!(thp_recommended_min_free_kbytes(1, 32_768 - 542), 6444);
}

#[test]
fn thp_only_raises_and_disable_recalculates() {
    let s = VmSysctl::new();
    s.calculate(1 << 20);
    assert_eq!(s.min_free_kbytes(), 4096);
    assert_eq!(s.thp_recalculate(true, 1, 262_144 - 1548), 22_528);
    // PMD THP off again: back to the default.
    assert_eq!(s.thp_recalculate(false, 1, 262_144), 4096);
}

#[test]
fn written_value_is_pinned() {
    let s = VmSysctl::new();
    s.calculate(1 << 20);
    s.write(VmKnob::MinFreeKbytes, "100000\n").unwrap();
    assert_eq!(s.min_free_kbytes(), 100_000);
    // Neither the THP recommendation nor the default lowers it.
    assert_eq!(s.thp_recalculate(true, 1, 262_144), 100_000);
    assert_eq!(s.thp_recalculate(false, 1, 262_144), 100_000);
    // A written value below the default is replaced by a recalculation
    // (Linux applies the default when it exceeds the user's value).
    s.write(VmKnob::MinFreeKbytes, "1000").unwrap();
    s.calculate(1 << 20);
    assert_eq!(s.min_free_kbytes(), 4096);
    // The THP recommendation raises it.
    s.write(VmKnob::MinFreeKbytes, "1000").unwrap();
    assert_eq!(s.thp_recalculate(true, 1, 262_144), 22_528);
}

#[test]
fn ranges_and_parsing_as_proc_dointvec_minmax() {
    let s = VmSysctl::new();
    assert_eq!(s.write(VmKnob::MinFreeKbytes, "-1"), Err(Errno::EINVAL));
    assert_eq!(
        s.write(VmKnob::WatermarkScaleFactor, "0"),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        s.write(VmKnob::WatermarkScaleFactor, "3001"),
        Err(Errno::EINVAL)
    );
    s.write(VmKnob::WatermarkScaleFactor, "3000").unwrap();
    assert_eq!(s.watermark_scale_factor(), 3000);
    assert_eq!(s.write(VmKnob::Swappiness, "201"), Err(Errno::EINVAL));
    s.write(VmKnob::Swappiness, "200").unwrap();
    assert_eq!(s.swappiness(), 200);
    assert_eq!(s.write(VmKnob::PageCluster, "32"), Err(Errno::EINVAL));
    s.write(VmKnob::PageCluster, "0x1f").unwrap();
    assert_eq!(s.page_cluster(), 31);
    s.write(VmKnob::PageCluster, "010").unwrap();
    assert_eq!(s.page_cluster(), 8);
    assert_eq!(s.read(VmKnob::PageCluster), "8\n");
    for bad in ["", "\n", "abc", "12abc", "+5", "08", "4294967296", "0x"] {
        assert_eq!(parse_dointvec(bad), Err(Errno::EINVAL), "{bad:?}");
    }
    assert_eq!(parse_dointvec("  42 junk"), Ok(42));
    assert_eq!(parse_dointvec("-7\n"), Ok(-7));
    assert_eq!(VmKnob::from_name("page-cluster"), Some(VmKnob::PageCluster));
    assert_eq!(VmKnob::from_name("nope"), None);
}

/// The compaction knobs: Linux's defaults and ranges; `compact_memory`
/// keeps any integer but only accepts 1, and is write-only.
#[test]
fn compaction_knobs() {
    let s = VmSysctl::new();
    assert_eq!(s.read(VmKnob::CompactionProactiveness), "20\n");
    assert_eq!(s.read(VmKnob::ExtfragThreshold), "500\n");
    assert_eq!(s.read(VmKnob::CompactUnevictableAllowed), "1\n");
    assert_eq!(
        s.write(VmKnob::CompactionProactiveness, "101"),
        Err(Errno::EINVAL)
    );
    s.write(VmKnob::CompactionProactiveness, "0").unwrap();
    assert_eq!(s.compaction_proactiveness(), 0);
    assert_eq!(
        s.write(VmKnob::ExtfragThreshold, "1001"),
        Err(Errno::EINVAL)
    );
    s.write(VmKnob::ExtfragThreshold, "1000").unwrap();
    assert_eq!(s.extfrag_threshold(), 1000);
    assert_eq!(
        s.write(VmKnob::CompactUnevictableAllowed, "2"),
        Err(Errno::EINVAL)
    );
    s.write(VmKnob::CompactUnevictableAllowed, "0").unwrap();
    assert!(!s.compact_unevictable_allowed());
    assert_eq!(s.write(VmKnob::CompactMemory, "2"), Err(Errno::EINVAL));
    assert_eq!(s.read(VmKnob::CompactMemory), "2\n");
    assert_eq!(s.write(VmKnob::CompactMemory, "x"), Err(Errno::EINVAL));
    s.write(VmKnob::CompactMemory, "1\n").unwrap();
    assert_eq!(VmKnob::CompactMemory.mode(), 0o200);
    assert_eq!(VmKnob::ExtfragThreshold.mode(), 0o644);
}
