//! NUMA balancing on a two-node boot (`numa_` self-tests run in the runner's
//! `--numa 2` boots): a 64K and a 2M folio first touched from a CPU of
//! node 0, scanned (`mem::numab::scan_mm`, what the `numa_scand` thread
//! runs each period), then read by a thread pinned to a CPU of node 1,
//! end up on node 1 whole, each after one hinting fault; and the sysctl's
//! range.
use crate::arch;
use crate::mem::memory::buddy;
use crate::mem::numab;
use crate::mem::uspace::{self, UserMm, read_u64};
use crate::selftest::testenv::*;
use crate::task::sched;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use ktest::{check, check_eq, ktest};
use mm::abi::errno::Errno;
use mm::thp::{THP, VmEvent};

const PAGE: u64 = 4096;

/// The head frame and order of the folio mapped at `va`.
fn folio_at(m: &UserMm, va: u64) -> Option<(u64, u32)> {
    m.enter().with_page_table(|pt| {
        let w = pt.lookup(va);
        let l = w.entry.leaf()?;
        let off = (va >> 12) & ((1u64 << (9 * w.level as u32)) - 1);
        let f = buddy().folio_from_pfn(l.pfn + off)?;
        Some((f.pfn(), f.order()))
    })
}

/// Every page of `[va, va + len)` maps the one folio of `order`, on node
/// `node`: the folio was moved whole.
fn whole_on(m: &UserMm, va: u64, len: u64, order: u32, node: usize) -> Result<(), String> {
    let (head, o) = folio_at(m, va).ok_or("not mapped")?;
    if o != order {
        return Err(format!("{va:#x}: order {o}, expected {order}"));
    }
    let n = buddy().node_of_pfn(head);
    if n != node {
        return Err(format!("{va:#x}: on node {n}, expected {node}"));
    }
    for p in (va..va + len).step_by(PAGE as usize) {
        if folio_at(m, p).map(|f| f.0) != Some(head) {
            return Err(format!("{p:#x}: not the folio at {va:#x}"));
        }
    }
    Ok(())
}

/// An online CPU of node `node`.
fn cpu_of(node: usize) -> Option<usize> {
    (0..arch::nr_cpus_possible())
        .find(|&c| arch::cpu_online(c) && buddy().nodes().cpu_node(c) == node)
}

ktest! {
    /// A 64K and a 2M folio first faulted from node 0, scanned, then read
    /// by a thread pinned to node 1's CPU: both move to node 1 whole
    /// (orders kept, data intact), with one hinting fault each.
    fn numa_balancing_moves_folios_whole() {
        let (Some(c0), Some(c1)) = (cpu_of(0), cpu_of(1)) else {
            ktest::skip!("needs a CPU on each of two nodes (--numa 2 boots)");
        };
        let fx = Fixture::always(&[4, 9]);
        let m = uspace::new_mm().map_err(err)?;
        let small = aligned_mapping(&m, 64 * KB, 64 * KB)?;
        let big = aligned_mapping(&m, 2 * MB, 2 * MB)?;
        let regions = [(small, 64 * KB, 4u32), (big, 2 * MB, 9u32)];
        let me = sched::current_id();
        let aff = sched::affinity(me).unwrap_or(u64::MAX);
        sched::set_affinity(me, 1 << c0);
        sched::yield_now();
        uspace::activate(&m);
        for &(va, len, _) in &regions {
            fill(va, len, 0x5eed)?;
        }
        uspace::deactivate();
        sched::set_affinity(me, aff);
        for &(va, len, order) in &regions {
            whole_on(&m, va, len, order, 0)?;
        }
        let ev = |e| THP.stats.event(e);
        let (faults0, migrated0) = (ev(VmEvent::NumaHintFaults), ev(VmEvent::NumaPagesMigrated));
        let s = numab::scan_mm(&m.enter(), None);
        check_eq!((s.pte_updates, s.huge_pte_updates), (16 + 512, 1), "entries hinted");
        let space = sched::AddrSpace { root_pa: m.root_pa(), asid: m.asid() };
        let out: Arc<mm::sync::Mutex<Option<Result<(), String>>>> = Arc::new(mm::sync::Mutex::new(None));
        let o = out.clone();
        let h = sched::spawn_in("numa-reader", space, move || {
            sched::set_affinity(sched::current_id(), 1 << c1);
            sched::yield_now();
            let mut r = Ok(());
            'all: for &(va, len, _) in &regions {
                for p in (va..va + len).step_by(PAGE as usize) {
                    match read_u64(p + 8) {
                        Ok(v) if v == p ^ 0x5eed => {}
                        Ok(v) => {
                            r = Err(format!("{p:#x}: read {v:#x}"));
                            break 'all;
                        }
                        Err(e) => {
                            r = Err(format!("{p:#x}: {}", e.name()));
                            break 'all;
                        }
                    }
                }
            }
            *o.lock() = Some(r);
        })
        .map_err(|e| format!("spawn: {e}"))?;
        h.join();
        out.lock().take().ok_or("reader did not report")??;
        for &(va, len, order) in &regions {
            whole_on(&m, va, len, order, 1)?;
        }
        check_eq!(ev(VmEvent::NumaHintFaults) - faults0, 2, "one hinting fault per folio");
        check_eq!(ev(VmEvent::NumaPagesMigrated) - migrated0, 16 + 512);
        {
            let np = sched::preempt_disable();
            mm::aspace::check_invariants(&[m.get(&np)])?;
        }
        fx.finish([m])
    }
}

ktest! {
    /// `/proc/sys/kernel/numa_balancing` takes 0..=3 (EINVAL otherwise) and
    /// defaults to on exactly when two nodes have memory.
    fn numa_balancing_sysctl() {
        let two = (0..buddy().nodes().nr_nodes())
            .filter(|&n| buddy().node_managed(n).0 > 0)
            .count()
            > 1;
        let old = numab::sysctl_read();
        check_eq!(old.as_str(), if two { "1\n" } else { "0\n" }, "boot default");
        for v in ["0", "1", "2", "3\n"] {
            numab::sysctl_write(v).map_err(err)?;
            let now = numab::sysctl_read();
            check_eq!(now.trim(), v.trim());
        }
        check_eq!(numab::sysctl_write("4"), Err(Errno::EINVAL));
        check_eq!(numab::sysctl_write("-1"), Err(Errno::EINVAL));
        check_eq!(numab::sysctl_write("x"), Err(Errno::EINVAL));
        numab::sysctl_write(&old).map_err(err)?;
        check!(numab::enabled() == two);
        Ok(())
    }
}
