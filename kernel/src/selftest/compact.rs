//! Self-tests of compaction's kernel side: `compact_memory` runs the
//! scanners over the real zone and moves the `compact_*` counters (with
//! the stub migrator nothing moves yet, but every isolated folio goes back
//! with its data and every frame returns), the sysctl's Linux semantics,
//! the debugfs `extfrag` files' format, and kcompactd answering a wake.
use crate::mem::compact;
use crate::mem::uspace;
use crate::mem::watermark::{ZONE_NAME, sysctl_write};
use crate::selftest::testenv::*;
use crate::task::sched;
use ktest::{TestResult, check, check_eq, ktest};
use mm::abi::errno::Errno;
use mm::abi::uapi::*;
use mm::physmem::watermark::{VM_SYSCTL, VmKnob};
use mm::thp::{GlobalMode, OrderMode, THP, VmEvent};

fn invariants(mms: &[&uspace::UserMm]) -> TestResult {
    let np = sched::preempt_disable();
    let spaces: alloc::vec::Vec<_> = mms.iter().map(|m| m.get(&np)).collect();
    mm::aspace::check_invariants(&spaces).map_err(|e| ktest::format!("invariants: {e}"))
}

fn ev(e: VmEvent) -> u64 {
    THP.stats.event(e)
}

ktest! {
    /// `echo 1 > compact_memory` over a zone fragmented by a process's
    /// 4K and 16K folios: both scanners scan, folios and free blocks are
    /// isolated, the data survives and free frames return to the
    /// baseline.  Any value but 1 is EINVAL (stored anyway).
    fn compact_memory_scans_and_counts() {
        let fx = Fixture::new(GlobalMode::Always, &[2], OrderMode::Always);
        let m = uspace::new_mm().map_err(err)?;
        let len = 16 * MB;
        let va = aligned_mapping(&m, len, 2 * MB)?;
        uspace::activate(&m);
        fill(va, len, 0x5a)?;
        // Free every other 16K block: holes all over the zone's top.
        for i in (0..len / (16 * KB)).step_by(2) {
            m.enter()
                .madvise(va + i * 16 * KB, 16 * KB, MADV_DONTNEED)
                .map_err(err)?;
        }
        let (ms, fs, iso) = (
            ev(VmEvent::CompactMigrateScanned),
            ev(VmEvent::CompactFreeScanned),
            ev(VmEvent::CompactIsolated),
        );
        check_eq!(sysctl_write(VmKnob::CompactMemory, "2"), Err(Errno::EINVAL));
        let stored = VM_SYSCTL.read(VmKnob::CompactMemory);
        check_eq!(stored.as_str(), "2\n");
        check_eq!(ev(VmEvent::CompactMigrateScanned), ms, "EINVAL must not compact");
        check_eq!(sysctl_write(VmKnob::CompactMemory, "1\n"), Ok(()));
        check!(ev(VmEvent::CompactMigrateScanned) > ms, "migrate scanner did not scan");
        check!(ev(VmEvent::CompactFreeScanned) > fs, "free scanner did not scan");
        check!(ev(VmEvent::CompactIsolated) > iso, "nothing isolated");
        for i in (1..len / (16 * KB)).step_by(2) {
            let p = va + i * 16 * KB;
            verify(p, 16 * KB, 0x5a)?;
        }
        invariants(&[&m])?;
        fx.finish([m])
    }
}

ktest! {
    /// `/sys/kernel/debug/extfrag/{unusable_index,extfrag_index}`: one
    /// line for the zone, `Node 0, zone <name>` then eleven values, each
    /// `d.ddd` in 0..=1 (unusable) or -1.000 / 0..=1 (extfrag).
    fn extfrag_files_format() {
        for (text, extfrag) in [(compact::unusable_index(), false), (compact::extfrag_index(), true)] {
            let head = ktest::format!("Node 0, zone {ZONE_NAME:>8} ");
            check!(text.starts_with(head.as_str()), "{text:?}");
            check!(text.ends_with(" \n"), "{text:?}");
            check_eq!(text.lines().count(), 1);
            let vals: alloc::vec::Vec<&str> = text[head.len()..].split_whitespace().collect();
            check_eq!(vals.len(), 11, "{text:?}");
            for v in vals {
                let ok = if extfrag {
                    v == "-1.000" || (v.len() == 5 && v <= "1.000" && v.as_bytes()[1] == b'.')
                } else {
                    v.len() == 5 && v <= "1.000" && v.as_bytes()[1] == b'.'
                };
                check!(ok, "value {v:?} in {text:?}");
            }
        }
        Ok(())
    }
}

ktest! {
    /// kcompactd answers a wake for an order: `compact_daemon_wake` counts
    /// it within two seconds.
    fn kcompactd_wakes() {
        let w0 = ev(VmEvent::CompactDaemonWake);
        compact::resume();
        compact::wakeup(9);
        let t0 = crate::arch::now_ns();
        while ev(VmEvent::CompactDaemonWake) == w0 && crate::arch::now_ns() - t0 < 2_000_000_000 {
            sched::sleep_ms(5);
        }
        compact::pause();
        check!(ev(VmEvent::CompactDaemonWake) > w0, "kcompactd did not run");
        Ok(())
    }
}
