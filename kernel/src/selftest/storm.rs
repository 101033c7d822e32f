//! A seeded, reproducible random operation storm over several address
//! spaces on the real page tables (`storm=<seed>,<ops>` on the command line).
//!
//! Every page's expected contents and protection are tracked in a model; each
//! operation is applied to both, and reads are checked against the model.
//! Private mappings of shmem objects (`MAP_PRIVATE` of a file) read the
//! object's contents until a page is written (then it is the process's
//! own, kept by a hole punch, dropped by `MADV_DONTNEED`).
//! Shared anonymous mappings (`MAP_SHARED|MAP_ANONYMOUS`, inherited by
//! fork) keep their contents in a model per shmem object, not per page of
//! a process: a write through one mapping is what every other mapping of
//! the object reads, `MADV_DONTNEED` keeps it, a hole punch zeroes it.
//! Pages past the object's size (an mremap that grew the mapping) SIGBUS
//! when a fault reaches them, but may be mapped by a fault inside the size
//! whose large folio reaches past it (as Linux 6.12's `finish_fault` maps
//! a whole anonymous-shmem folio): then they hold cached data like any
//! other page.
//! Knob settings change randomly along the way, and the invariant checker runs
//! every `CHECK_EVERY` operations and at the end.  After the storm every
//! address space is torn down and free frames must be back at the baseline.
//!
//! A failure prints the seed, the operation number and the operation, so
//! `storm=<seed>,<n>` replays it exactly (the storm is deterministic: one CPU,
//! and nothing else allocates while it runs).
use crate::arch;
use crate::mem::memory::buddy;
use crate::mem::uspace::{self, UserMm, read_u64, write_u64};
use crate::selftest::testenv::Rng;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use mm::abi::errno::Errno;
use mm::abi::uapi::*;
use mm::addr::PMD_ORDER;
use mm::shmem::policy::{SHMEM_MIN_ORDER, ShmemHuge, ShmemOrderMode};
use mm::thp::{GlobalMode, OrderMode, THP};

const PAGE: u64 = 4096;
const MAX_PROCS: usize = 4;
/// Pages one process may have mapped (bounds memory use: 32 MiB).
const MAX_PAGES: usize = 8192;
const CHECK_EVERY: u64 = 2000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct PageModel {
    /// Expected value of the word at offset 16 (0 until written).
    val: u64,
    prot: Prot,
    /// `MADV_FREE`d and not written since: reads `val` or 0 (reclaim may
    /// have discarded it).
    lazy: bool,
    /// In an mlocked VMA (madvise that drops data gives EINVAL there).
    locked: bool,
    /// In a shared mapping: the shmem object's id and the page's index in
    /// it; the contents are then the object's ([`ObjModel`]), `val` unused.
    shared: Option<(u64, u64)>,
    /// In a private mapping of a shmem object (`MAP_PRIVATE` of a file):
    /// the object's id and the page's index; reads give the object's
    /// contents until the page is `copied` (written: `val` then), and
    /// `MADV_DONTNEED` makes them show again.
    file: Option<(u64, u64)>,
    copied: bool,
}

/// The contents of one shmem object, shared by every mapping of it.
#[derive(Default)]
struct ObjModel {
    /// Pages of the object (its size, fixed at mmap).
    size_pages: u64,
    /// Written words by page index (absent: reads 0).
    vals: BTreeMap<u64, u64>,
}

/// What a read of a page should give.
#[derive(PartialEq, Eq, Debug)]
enum Expect {
    Val(u64),
    /// Past the end of its shmem object: SIGBUS, or this value if a large
    /// folio reaching past the end is mapped there.
    PastEof(u64),
}

impl PageModel {
    fn new(prot: Prot) -> PageModel {
        PageModel {
            val: 0,
            prot,
            lazy: false,
            locked: false,
            shared: None,
            file: None,
            copied: false,
        }
    }

    fn file(prot: Prot, id: u64, index: u64) -> PageModel {
        PageModel {
            file: Some((id, index)),
            ..PageModel::new(prot)
        }
    }

    /// The object a read of this page sees, if any.
    fn object(&self) -> Option<(u64, u64)> {
        self.shared.or(self.file.filter(|_| !self.copied))
    }

    fn shared(prot: Prot, id: u64, index: u64) -> PageModel {
        PageModel {
            shared: Some((id, index)),
            ..PageModel::new(prot)
        }
    }

    /// The value a read expects, looked up in `objs` for a shared page.
    fn expect(&self, objs: &BTreeMap<u64, ObjModel>) -> Expect {
        match self.object() {
            None => Expect::Val(self.val),
            Some((id, idx)) => {
                let o = objs.get(&id);
                let v = o.and_then(|o| o.vals.get(&idx)).copied().unwrap_or(0);
                if o.is_some_and(|o| idx < o.size_pages) {
                    Expect::Val(v)
                } else {
                    Expect::PastEof(v)
                }
            }
        }
    }
}

struct Proc {
    mm: Arc<UserMm>,
    /// Every mapped page, by address.
    pages: BTreeMap<u64, PageModel>,
}

struct Storm {
    rng: Rng,
    procs: Vec<Proc>,
    /// The shmem objects the processes' shared pages name, by id.
    objs: BTreeMap<u64, ObjModel>,
    seed: u64,
    op: u64,
    trace: bool,
    /// The swap area on the boot's disk, if it has one.
    swap: Option<u8>,
}

fn e(x: Errno) -> String {
    String::from(x.name())
}

impl Storm {
    fn activate(&self, i: usize) {
        uspace::activate(&self.procs[i].mm);
    }

    fn random_range(&mut self, i: usize) -> Option<(u64, u64)> {
        let p = &self.procs[i];
        if p.pages.is_empty() {
            return None;
        }
        let k = self.rng.below(p.pages.len() as u64) as usize;
        let start = *p.pages.keys().nth(k)?;
        let span = if self.rng.chance(20) { 600 } else { 40 };
        let npages = 1 + self.rng.below(span);
        Some((start, npages * PAGE))
    }

    fn step(&mut self) -> Result<String, String> {
        if self.procs.is_empty() {
            return self.spawn();
        }
        let i = self.rng.below(self.procs.len() as u64) as usize;
        let r = self.rng.below(1000);
        if self.trace {
            println!("storm op {} begins: kind {} on p{}", self.op, r, i);
        }
        match r {
            0..=79 => self.mmap(i),
            80..=139 => self.munmap(i),
            140..=189 => self.mprotect(i),
            190..=229 => self.madvise(i),
            230..=244 => self.fork(i),
            245..=254 => self.exit(i),
            255..=269 => self.knobs(),
            270..=299 => self.mremap(i),
            300..=314 => self.split(i),
            315..=324 => self.collapse(i),
            325..=334 => self.scan(i),
            335..=344 => self.mlock(i),
            345..=349 => self.reclaim(),
            350..=351 => self.swap_cycle(),
            352..=353 => self.compact(),
            354..=357 => self.migrate(i),
            358..=359 => self.move_pages(i),
            360..=364 => self.numa_scan(i),
            365..=374 => self.punch(i),
            375..=629 => self.write(i),
            _ => self.verify(i),
        }
    }

    fn spawn(&mut self) -> Result<String, String> {
        let mm = uspace::new_mm().map_err(e)?;
        self.procs.push(Proc {
            mm,
            pages: BTreeMap::new(),
        });
        Ok(String::from("new process"))
    }

    fn mmap(&mut self, i: usize) -> Result<String, String> {
        if self.procs[i].pages.len() >= MAX_PAGES {
            return self.munmap(i);
        }
        let npages = match self.rng.below(4) {
            0 => 1 + self.rng.below(16),
            1 => 16 * (1 + self.rng.below(8)),
            2 => 512 * (1 + self.rng.below(2)),
            _ => 1 + self.rng.below(700),
        };
        let len = npages * PAGE;
        let prot = if self.rng.chance(85) {
            PROT_READ | PROT_WRITE
        } else {
            PROT_READ
        };
        if !self.objs.is_empty() && self.rng.chance(10) {
            return self.mmap_private_file(i, npages, prot);
        }
        let shared = self.rng.chance(25);
        let mut flags = MAP_ANONYMOUS | if shared { MAP_SHARED } else { MAP_PRIVATE };
        if self.rng.chance(10) {
            flags |= MAP_POPULATE;
        }
        let va = self.procs[i]
            .mm
            .enter()
            .mmap(0, len, prot, flags)
            .map_err(e)?;
        let p = &mut self.procs[i];
        let obj = if shared {
            let Some(id) = p.mm.enter().vmas().find(va).and_then(|v| v.shmem) else {
                return Err(format!(
                    "MAP_SHARED mmap {va:#x}: VMA without a shmem object"
                ));
            };
            self.objs.insert(
                id,
                ObjModel {
                    size_pages: npages,
                    vals: BTreeMap::new(),
                },
            );
            Some(id)
        } else {
            None
        };
        for pg in (va..va + len).step_by(PAGE as usize) {
            let m = match obj {
                Some(id) => PageModel::shared(prot, id, (pg - va) / PAGE),
                None => PageModel::new(prot),
            };
            if p.pages.insert(pg, m).is_some() {
                return Err(format!(
                    "mmap returned {va:#x}+{len:#x}, overlapping a live page {pg:#x}"
                ));
            }
        }
        Ok(format!(
            "p{i} mmap {va:#x} +{len:#x} prot {prot} shmem {obj:?}"
        ))
    }

    /// `MAP_PRIVATE` of a live shmem object (as of a memfd) at a random
    /// page offset; pages past its size SIGBUS.
    fn mmap_private_file(&mut self, i: usize, npages: u64, prot: Prot) -> Result<String, String> {
        let k = self.rng.below(self.objs.len() as u64) as usize;
        let (&id, o) = self.objs.iter().nth(k).expect("k < len");
        let first = self.rng.below(o.size_pages.max(1));
        let Some(obj) = self
            .procs
            .iter()
            .find_map(|p| p.mm.enter().shmem_object(id))
        else {
            return Ok(format!("p{i} mmap private: object {id} mapped nowhere"));
        };
        let va = self.procs[i]
            .mm
            .enter()
            .mmap_shmem(0, npages * PAGE, prot, MAP_PRIVATE, obj, first * PAGE, true)
            .map_err(e)?;
        let p = &mut self.procs[i];
        for k in 0..npages {
            let pg = va + k * PAGE;
            if p.pages
                .insert(pg, PageModel::file(prot, id, first + k))
                .is_some()
            {
                return Err(format!("private mmap {va:#x} overlaps a live page {pg:#x}"));
            }
        }
        Ok(format!(
            "p{i} mmap private {va:#x} +{:#x} prot {prot} of object {id} at page {first}",
            npages * PAGE
        ))
    }

    fn munmap(&mut self, i: usize) -> Result<String, String> {
        let Some((va, len)) = self.random_range(i) else {
            return self.mmap(i);
        };
        self.procs[i].mm.enter().munmap(va, len).map_err(e)?;
        let p = &mut self.procs[i];
        let gone: Vec<u64> = p.pages.range(va..va + len).map(|(k, _)| *k).collect();
        for k in gone {
            p.pages.remove(&k);
        }
        Ok(format!("p{i} munmap {va:#x} +{len:#x}"))
    }

    fn mprotect(&mut self, i: usize) -> Result<String, String> {
        let Some((va, len)) = self.random_range(i) else {
            return self.mmap(i);
        };
        let prots = [PROT_READ, PROT_READ | PROT_WRITE, PROT_NONE];
        let prot = prots[self.rng.below(3) as usize];
        let p = &mut self.procs[i];
        let full = (va..va + len)
            .step_by(PAGE as usize)
            .all(|pg| p.pages.contains_key(&pg));
        let r = p.mm.enter().mprotect(va, len, prot);
        // Linux changes the mapped parts, then reports ENOMEM for a hole.
        match (r, full) {
            (Ok(()), true) | (Err(Errno::ENOMEM), false) => {}
            (r, _) => {
                return Err(format!(
                    "mprotect {va:#x}+{len:#x} gave {r:?} (range fully mapped: {full})"
                ));
            }
        }
        // Linux stops at the first hole: pages after it keep their rights.
        let mut expect = va;
        for (pg, m) in p.pages.range_mut(va..va + len) {
            if *pg != expect {
                break;
            }
            m.prot = prot;
            expect += PAGE;
        }
        Ok(format!("p{i} mprotect {va:#x} +{len:#x} {prot}"))
    }

    fn madvise(&mut self, i: usize) -> Result<String, String> {
        let Some((va, len)) = self.random_range(i) else {
            return self.mmap(i);
        };
        let advices = [
            MADV_DONTNEED,
            MADV_HUGEPAGE,
            MADV_NOHUGEPAGE,
            MADV_PAGEOUT,
            MADV_COLD,
            MADV_FREE,
        ];
        let advice = advices[self.rng.below(advices.len() as u64) as usize];
        self.activate(i);
        let p = &mut self.procs[i];
        let full = (va..va + len)
            .step_by(PAGE as usize)
            .all(|pg| p.pages.contains_key(&pg));
        // Advice refused on mlocked VMAs (and MADV_FREE on shared ones)
        // stops there with EINVAL (after applying to the VMAs before, in
        // address order).
        let refused_on_locked =
            [MADV_DONTNEED, MADV_PAGEOUT, MADV_COLD, MADV_FREE].contains(&advice);
        let first_locked = p
            .pages
            .range(va..va + len)
            .find(|(_, m)| {
                m.locked || (advice == MADV_FREE && (m.shared.is_some() || m.file.is_some()))
            })
            .map(|(k, _)| *k);
        let r = p.mm.enter().madvise(va, len, advice);
        let ok = match (r, full, first_locked) {
            (Err(Errno::EINVAL), _, Some(_)) if refused_on_locked => true,
            (Ok(()), true, None) | (Err(Errno::ENOMEM), false, None) => true,
            (Ok(()), true, Some(_)) | (Err(Errno::ENOMEM), false, Some(_)) => !refused_on_locked,
            _ => false,
        };
        if !ok {
            return Err(format!(
                "madvise {va:#x}+{len:#x} {advice} gave {r:?} (fully mapped: {full}, first locked {first_locked:?})"
            ));
        }
        let applied_end = if refused_on_locked {
            first_locked.unwrap_or(va + len)
        } else {
            va + len
        };
        if advice == MADV_DONTNEED {
            // Shared pages keep their data in the object; private copies
            // of a file's pages go, the file's data shows again.
            for (_, m) in p.pages.range_mut(va..applied_end) {
                m.val = 0;
                m.lazy = false;
                m.copied = false;
            }
        } else if advice == MADV_FREE {
            for (_, m) in p.pages.range_mut(va..applied_end) {
                m.lazy = true;
            }
        }
        Ok(format!("p{i} madvise {va:#x} +{len:#x} {advice}"))
    }

    /// mremap with MREMAP_MAYMOVE of a piece of one VMA: pages move with
    /// their contents, a grown tail reads zero, a shrunk tail is gone.
    fn mremap(&mut self, i: usize) -> Result<String, String> {
        let Some((pg, _)) = self.random_range(i) else {
            return self.mmap(i);
        };
        let p = &mut self.procs[i];
        let Some((vs, ve)) = p.mm.enter().vmas().find(pg).map(|v| (v.start, v.end)) else {
            return Err(format!("page {pg:#x} in the model but in no VMA"));
        };
        let old = pg;
        let old_len = PAGE * (1 + self.rng.below((ve - old) / PAGE));
        let new_len = PAGE * (1 + self.rng.below(2 * old_len / PAGE + 16));
        if p.pages.len() + (new_len / PAGE) as usize > MAX_PAGES {
            return Ok(String::from("mremap skipped (size cap)"));
        }
        let (prot, shared, file) = p
            .pages
            .get(&old)
            .map_or((PROT_NONE, None, None), |m| (m.prot, m.shared, m.file));
        let r =
            p.mm.enter()
                .mremap(old, old_len, new_len, MREMAP_MAYMOVE, 0);
        let new = match r {
            Ok(a) => a,
            Err(Errno::ENOMEM) => {
                return Ok(format!(
                    "p{i} mremap {old:#x} +{old_len:#x} -> {new_len:#x}: ENOMEM"
                ));
            }
            Err(x) => {
                return Err(format!(
                    "mremap {old:#x} +{old_len:#x} -> {new_len:#x} in VMA {vs:#x}-{ve:#x}: {}",
                    x.name()
                ));
            }
        };
        let moved: Vec<(u64, PageModel)> = p
            .pages
            .range(old..old + old_len)
            .map(|(k, v)| (*k, *v))
            .collect();
        for (k, _) in &moved {
            p.pages.remove(k);
        }
        for (k, v) in moved {
            if k - old < new_len {
                p.pages.insert(new + (k - old), v);
            }
        }
        // Grown pages belong to the (moved) VMA: locked if it is (an
        // mlocked VMA that grows stays locked and populates); a grown
        // shared mapping goes on into the object (past its size).
        let entered = p.mm.enter();
        let vmas = entered.vmas();
        for off in (old_len..new_len).step_by(PAGE as usize) {
            let mut m = match (shared, file) {
                (Some((id, idx)), _) => PageModel::shared(prot, id, idx + off / PAGE),
                (None, Some((id, idx))) => PageModel::file(prot, id, idx + off / PAGE),
                (None, None) => PageModel::new(prot),
            };
            m.locked = vmas
                .find(new + off)
                .is_some_and(|v| v.flags.contains(mm::vma::VmFlags::LOCKED));
            p.pages.insert(new + off, m);
        }
        Ok(format!(
            "p{i} mremap {old:#x} +{old_len:#x} -> {new:#x} +{new_len:#x}"
        ))
    }

    /// Split the large folios of a range to a random order (data unchanged).
    fn split(&mut self, i: usize) -> Result<String, String> {
        let Some((va, len)) = self.random_range(i) else {
            return self.mmap(i);
        };
        let order = [0u32, 2, 3, 4, 5, 8][self.rng.below(6) as usize];
        let np = crate::task::sched::preempt_disable();
        let all: Vec<_> = self.procs.iter().map(|p| p.mm.get(&np)).collect();
        let n = self.procs[i]
            .mm
            .get(&np)
            .split_huge_pages_in(&all, va, va + len, order);
        Ok(format!(
            "p{i} split {va:#x} +{len:#x} to order {order}: {} of {}",
            n.split, n.found
        ))
    }

    /// MADV_COLLAPSE over a 2 MiB-aligned piece (data unchanged; any of
    /// Linux's errors is allowed).
    fn collapse(&mut self, i: usize) -> Result<String, String> {
        let Some((pg, _)) = self.random_range(i) else {
            return self.mmap(i);
        };
        let va = pg & !(2 * 1024 * 1024 - 1);
        let r = self.procs[i]
            .mm
            .enter()
            .madvise(va, 2 * 1024 * 1024, MADV_COLLAPSE);
        match r {
            Ok(()) | Err(Errno::ENOMEM | Errno::EBUSY | Errno::EAGAIN | Errno::EINVAL) => {}
            Err(x) => return Err(format!("MADV_COLLAPSE {va:#x}: unexpected {}", x.name())),
        }
        Ok(format!("p{i} collapse {va:#x}: {r:?}"))
    }

    /// One khugepaged scan step over this space from a random address.
    fn scan(&mut self, i: usize) -> Result<String, String> {
        let Some((pg, _)) = self.random_range(i) else {
            return self.mmap(i);
        };
        let c0 = THP.stats.pages_collapsed();
        let _ = self.procs[i]
            .mm
            .enter()
            .khugepaged_scan_step(pg & !(2 * 1024 * 1024 - 1), 4096);
        Ok(format!(
            "p{i} khugepaged step at {pg:#x}: {} pages collapsed",
            THP.stats.pages_collapsed() - c0
        ))
    }

    /// mlock or munlock a range (mlock populates: PROT_NONE pages make it
    /// ENOMEM, a hole too, with the VMAs before locked; memory limits give
    /// EAGAIN).  The model marks pages in locked VMAs.
    fn mlock(&mut self, i: usize) -> Result<String, String> {
        let Some((va, len)) = self.random_range(i) else {
            return self.mmap(i);
        };
        self.activate(i);
        let lock = self.rng.chance(60);
        let p = &mut self.procs[i];
        // mlock populates a private writable file mapping by breaking COW
        // (Linux's too), which the model does not follow: never lock one.
        if lock && p.pages.range(va..va + len).any(|(_, m)| m.file.is_some()) {
            return Ok(format!("p{i} mlock {va:#x}: skipped (private file pages)"));
        }
        let r = if lock {
            p.mm.enter().mlock(va, len)
        } else {
            p.mm.enter().munlock(va, len)
        };
        match r {
            Ok(()) | Err(Errno::ENOMEM | Errno::EAGAIN) => {}
            Err(x) => return Err(format!("mlock({lock}) {va:#x}: unexpected {}", x.name())),
        }
        // Which VMAs changed is the kernel's to say: read the flags back.
        let entered = p.mm.enter();
        let vmas = entered.vmas();
        for (pg, m) in p.pages.range_mut(va..va + len) {
            m.locked = vmas
                .find(*pg)
                .is_some_and(|v| v.flags.contains(mm::vma::VmFlags::LOCKED));
        }
        Ok(format!("p{i} mlock({lock}) {va:#x} +{len:#x}: {r:?}"))
    }

    /// Direct reclaim over every space (swap-out, lazyfree discard).
    fn reclaim(&mut self) -> Result<String, String> {
        let st = crate::mem::kswapd::reclaim(256, mm::aspace::vmscan::Reclaimer::Direct);
        Ok(format!("reclaim: {st:?}"))
    }

    /// `compact_memory`: the whole zone, every movable folio isolated
    /// and (until the migration core is wired, see `mem::compact`) put
    /// back; the checks after each op catch a lost folio or LRU damage.
    fn compact(&mut self) -> Result<String, String> {
        let r = crate::mem::compact::compact_memory();
        Ok(format!("compact_memory: {r:?}"))
    }

    /// Migrates every folio of a random range of process `i` to new
    /// frames, in every space that maps them (after fork too).
    fn migrate(&mut self, i: usize) -> Result<String, String> {
        let Some((va, len)) = self.random_range(i) else {
            return Ok(String::from("migrate: nothing mapped"));
        };
        let mms = uspace::all_mms();
        let first = mms
            .iter()
            .position(|m| alloc::sync::Arc::ptr_eq(m, &self.procs[i].mm))
            .ok_or("process not registered")?;
        let mut order = alloc::vec![mms[first].clone()];
        order.extend(
            mms.iter()
                .enumerate()
                .filter(|&(k, _)| k != first)
                .map(|(_, m)| m.clone()),
        );
        let np = crate::task::sched::preempt_disable();
        let spaces = uspace::spaces(&order, &np);
        let (pages, failed) = mm::aspace::move_pages::migrate_range(&spaces, va, va + len, None);
        Ok(format!(
            "p{i} migrate {va:#x} +{len:#x}: {pages} pages moved, {failed} folios not"
        ))
    }

    /// `move_pages` on a few addresses of process `i` to node 0 (the
    /// storm's machine has one node: statuses and the no-move path).
    fn move_pages(&mut self, i: usize) -> Result<String, String> {
        let Some((va, len)) = self.random_range(i) else {
            return Ok(String::from("move_pages: nothing mapped"));
        };
        let addrs: Vec<u64> = (0..8).map(|k| (va + k * len / 8) & !(PAGE - 1)).collect();
        let nodes = [0i32; 8];
        let mut st = [0i32; 8];
        let np = crate::task::sched::preempt_disable();
        let mms = [self.procs[i].mm.clone()];
        let spaces = uspace::spaces(&mms, &np);
        let r =
            mm::aspace::move_pages::move_pages(&spaces, &addrs, &nodes, &mut st, false, |n| n == 0);
        Ok(format!("p{i} move_pages {va:#x} +{len:#x}: {r:?} {st:?}"))
    }

    /// One NUMA-balancing scan period over process `i` with a random
    /// budget: its mappings become hinting entries, which the next
    /// accesses fault on (one node: every folio is local, so the faults
    /// only restore the entries) and every other operation meets.
    fn numa_scan(&mut self, i: usize) -> Result<String, String> {
        let pages = 1 + self.rng.below(4096);
        let s = self.procs[i].mm.enter().task_numa_work(pages, None);
        Ok(format!(
            "p{i} numa scan of {pages} pages: {} PTEs, {} PMDs",
            s.pte_updates, s.huge_pte_updates
        ))
    }

    /// swapoff (everything comes back) and swapon again.
    fn swap_cycle(&mut self) -> Result<String, String> {
        let Some(ty) = self.swap else {
            return Ok(String::from("swap cycle: no swap"));
        };
        crate::mem::swap::swapoff_type(ty).map_err(|x| format!("swapoff: {}", x.name()))?;
        let ty = crate::mem::swap::swapon_device(0).map_err(|x| format!("swapon: {}", x.name()))?;
        self.swap = Some(ty);
        Ok(String::from("swapoff + swapon"))
    }

    fn fork(&mut self, i: usize) -> Result<String, String> {
        if self.procs.len() >= MAX_PROCS {
            return self.exit(i);
        }
        let child = self.procs[i].mm.enter().fork().map_err(e)?;
        let mm = uspace::register(child).map_err(e)?;
        // Locks are not inherited (the child's VMAs lose VM_LOCKED).
        let mut pages = self.procs[i].pages.clone();
        for m in pages.values_mut() {
            m.locked = false;
        }
        self.procs.push(Proc { mm, pages });
        Ok(format!("p{i} fork -> p{}", self.procs.len() - 1))
    }

    fn exit(&mut self, i: usize) -> Result<String, String> {
        let p = self.procs.swap_remove(i);
        if !uspace::release(p.mm) {
            return Err(String::from("exit: address space still referenced"));
        }
        Ok(format!("p{i} exit"))
    }

    fn knobs(&mut self) -> Result<String, String> {
        let order = 2 + self.rng.below(8) as u32;
        let modes = [
            OrderMode::Always,
            OrderMode::Never,
            OrderMode::Madvise,
            OrderMode::Inherit,
        ];
        let mode = modes[self.rng.below(4) as usize];
        THP.config.set_order_mode(order, mode);
        if self.rng.chance(10) {
            let gs = [GlobalMode::Always, GlobalMode::Madvise, GlobalMode::Never];
            let g = gs[self.rng.below(3) as usize];
            THP.config.set_global_mode(g);
        }
        if self.rng.chance(10) {
            let on = self.rng.chance(50);
            THP.config.set_use_zero_page(on);
        }
        // The shmem knobs: a per-size one, sometimes the top level (the
        // refused combinations around `force` are EINVAL and change
        // nothing).
        let shmem = &THP.config.shmem;
        let sorder =
            SHMEM_MIN_ORDER + self.rng.below((PMD_ORDER + 1 - SHMEM_MIN_ORDER) as u64) as u32;
        let smodes = [
            ShmemOrderMode::Always,
            ShmemOrderMode::Inherit,
            ShmemOrderMode::WithinSize,
            ShmemOrderMode::Advise,
            ShmemOrderMode::Never,
        ];
        let smode = smodes[self.rng.below(smodes.len() as u64) as usize];
        let _ = shmem.set_order_mode(sorder, smode);
        if self.rng.chance(20) {
            let tops = [
                ShmemHuge::Always,
                ShmemHuge::WithinSize,
                ShmemHuge::Advise,
                ShmemHuge::Never,
                ShmemHuge::Deny,
                ShmemHuge::Force,
            ];
            let _ = shmem.set_huge(tops[self.rng.below(tops.len() as u64) as usize]);
        }
        let shmem_knobs = format!("shmem order {sorder} -> {smode:?} (top {:?})", shmem.huge());
        // Reservation mode (issue 17) for this size: new faults reserve;
        // reservations already made go on filling or break.
        if self.rng.chance(30) {
            let on = self.rng.chance(60);
            THP.config.set_reserve(order, on);
            return Ok(format!(
                "knob order {order} -> {mode:?}, reserve {on}, {shmem_knobs}"
            ));
        }
        Ok(format!("knob order {order} -> {mode:?}, {shmem_knobs}"))
    }

    /// Punch a hole in the shmem object behind a shared page of process
    /// `i` (`fallocate(PUNCH_HOLE|KEEP_SIZE)`, Linux's `MADV_REMOVE`): whole
    /// pages leave the cache and every mapping, or one word of a page is
    /// zeroed in place (inside a large folio too); both read zero after,
    /// in every process.
    fn punch(&mut self, i: usize) -> Result<String, String> {
        let Some((va, len)) = self.random_range(i) else {
            return self.mmap(i);
        };
        let p = &self.procs[i];
        let Some((id, idx)) = p
            .pages
            .range(va..va + len)
            .find_map(|(_, m)| m.shared.or(m.file))
        else {
            return Ok(format!("p{i} punch {va:#x}: no shared page"));
        };
        let obj =
            p.mm.enter()
                .shmem_object(id)
                .ok_or_else(|| format!("shmem object {id} in the model but not mapped by p{i}"))?;
        let Some(o) = self.objs.get_mut(&id) else {
            return Err(format!("shmem object {id} not in the model"));
        };
        let (off, bytes, pages) = if self.rng.chance(25) {
            (idx * PAGE + 16, 8, idx..idx + 1)
        } else {
            let span = if self.rng.chance(20) { 600 } else { 40 };
            let n = 1 + self.rng.below(span);
            (idx * PAGE, n * PAGE, idx..idx + n)
        };
        crate::fs::memfd::fallocate(&obj, 3, off as i64, bytes as i64)
            .map_err(|x| format!("punch {off:#x}+{bytes:#x} of object {id}: {}", x.name()))?;
        let gone: Vec<u64> = o.vals.range(pages).map(|(k, _)| *k).collect();
        for k in gone {
            o.vals.remove(&k);
        }
        Ok(format!("p{i} punch object {id} {off:#x} +{bytes:#x}"))
    }

    /// Forget the objects no process maps any more.
    fn prune_objs(&mut self) {
        let live: alloc::collections::BTreeSet<u64> = self
            .procs
            .iter()
            .flat_map(|p| {
                p.pages
                    .values()
                    .filter_map(|m| m.shared.or(m.file).map(|(id, _)| id))
            })
            .collect();
        self.objs.retain(|id, _| live.contains(id));
    }

    fn write(&mut self, i: usize) -> Result<String, String> {
        let Some((va, len)) = self.random_range(i) else {
            return self.mmap(i);
        };
        self.activate(i);
        let p = &mut self.procs[i];
        let mut n = 0;
        for pg in (va..va + len).step_by(PAGE as usize) {
            let Some(m) = p.pages.get_mut(&pg) else {
                continue;
            };
            let v = self.rng.next() | 1;
            let r = write_u64(pg + 16, v);
            let past_eof = matches!(m.expect(&self.objs), Expect::PastEof(_));
            if m.prot.contains(PROT_WRITE) && past_eof && r.is_err() {
                // SIGBUS: nothing cached there is mapped.
            } else if m.prot.contains(PROT_WRITE) {
                r.map_err(|x| format!("write {pg:#x} (prot {}) failed: {}", m.prot, x.name()))?;
                match m.shared {
                    Some((id, idx)) => {
                        if let Some(o) = self.objs.get_mut(&id) {
                            o.vals.insert(idx, v);
                        }
                    }
                    None => {
                        m.val = v;
                        m.copied = m.file.is_some();
                    }
                }
                m.lazy = false;
                n += 1;
            } else if r.is_ok() {
                let t = arch::kernel_translate(pg);
                let vma =
                    p.mm.enter()
                        .vmas()
                        .find(pg)
                        .map(|v| format!("{:#x}-{:#x} {:?}", v.start, v.end, v.flags));
                return Err(format!(
                    "write to {pg:#x} with prot {} succeeded (live PTE {:?}, VMA {:?})",
                    m.prot, t, vma
                ));
            }
        }
        Ok(format!("p{i} write {va:#x} +{len:#x} ({n} pages)"))
    }

    fn verify(&mut self, i: usize) -> Result<String, String> {
        let Some((va, len)) = self.random_range(i) else {
            return self.mmap(i);
        };
        self.activate(i);
        let p = &mut self.procs[i];
        for (pg, m) in p.pages.range_mut(va..va + len) {
            let r = read_u64(pg + 16);
            if m.prot.contains(PROT_READ) {
                let want = match m.expect(&self.objs) {
                    Expect::PastEof(_) if r.is_err() => continue,
                    Expect::PastEof(v) | Expect::Val(v) => v,
                };
                let got = r.map_err(|x| format!("read {pg:#x} failed: {}", x.name()))?;
                if m.lazy && got == 0 {
                    // Discarded by reclaim: zero from now on.
                    m.val = 0;
                    continue;
                }
                if got != want {
                    return Err(format!(
                        "p{i} page {pg:#x} (shmem {:?}): read {got:#x}, expected {want:#x}",
                        m.shared
                    ));
                }
            } else if r.is_ok() {
                return Err(format!("read of PROT_NONE page {pg:#x} succeeded"));
            }
        }
        Ok(format!("p{i} verify {va:#x} +{len:#x}"))
    }

    fn check(&self) -> Result<(), String> {
        let np = crate::task::sched::preempt_disable();
        let mms: Vec<_> = self.procs.iter().map(|p| p.mm.get(&np)).collect();
        mm::aspace::check_invariants(&mms)
    }
}

/// Run `ops` operations from `seed`.  Prints progress; returns Err with the
/// failing operation (and the seed) on the first problem.
pub fn run(seed: u64, ops: u64) -> Result<(), String> {
    let saved = (
        THP.config.order_modes(),
        THP.config.global_mode(),
        THP.config.use_zero_page(),
        THP.config.reserve_orders(),
    );
    let saved_shmem = (THP.config.shmem.huge(), THP.config.shmem.order_modes());
    // Keep the khugepaged thread out of the way (the storm runs its scans
    // itself), so a seed replays exactly.
    let kh = &THP.config.khugepaged;
    let sleep = kh
        .scan_sleep_millisecs
        .load(core::sync::atomic::Ordering::Relaxed);
    kh.scan_sleep_millisecs
        .store(u32::MAX as _, core::sync::atomic::Ordering::Relaxed);
    buddy().drain_all();
    let base = buddy().stats().free + uspace::ctx().frames_held();
    println!("storm: seed {seed}, {ops} operations, invariants every {CHECK_EVERY}");
    let mut s = Storm {
        rng: Rng(seed | 1),
        procs: Vec::new(),
        objs: BTreeMap::new(),
        seed,
        op: 0,
        trace: crate::cmdline::has("storm_trace"),
        swap: crate::mem::swap::format_and_swapon().ok().flatten(),
    };
    if s.swap.is_some() {
        println!("storm: swap on {}", crate::mem::swap::DEVICE);
    }
    let t0 = arch::now_ns();
    let mut last = String::new();
    let trace = crate::cmdline::has("storm_trace");
    let mut result = Ok(());
    while s.op < ops {
        s.op += 1;
        match s.step() {
            Ok(d) => {
                if trace {
                    println!("storm op {}: {}", s.op, d);
                }
                last = d
            }
            Err(why) => {
                result = Err(format!(
                    "storm seed {} op {}: {} (previous op: {})",
                    s.seed, s.op, why, last
                ));
                break;
            }
        }
        if s.op.is_multiple_of(CHECK_EVERY) {
            s.prune_objs();
        }
        if s.op.is_multiple_of(CHECK_EVERY)
            && let Err(why) = s.check()
        {
            result = Err(format!(
                "storm seed {} op {}: invariant broken after '{}': {}",
                s.seed, s.op, last, why
            ));
            break;
        }
        if s.op.is_multiple_of((ops / 10).max(1)) {
            println!(
                "storm: {} / {} ops, {} processes, {} ms",
                s.op,
                ops,
                s.procs.len(),
                (arch::now_ns() - t0) / 1_000_000
            );
        }
    }
    let ms = ((arch::now_ns() - t0) / 1_000_000).max(1);
    println!(
        "storm: {} ops in {} ms ({} ops/s), {} shmem objects live",
        s.op,
        ms,
        s.op * 1000 / ms,
        s.objs.len()
    );
    if result.is_ok() {
        result = s
            .check()
            .map_err(|why| format!("storm seed {} final invariant check: {}", s.seed, why));
    }
    for p in s.procs.drain(..) {
        uspace::release(p.mm);
    }
    if let Some(ty) = s.swap
        && let Err(x) = crate::mem::swap::swapoff_type(ty)
        && result.is_ok()
    {
        result = Err(format!("storm seed {seed}: final swapoff: {}", x.name()));
    }
    uspace::deactivate();
    THP.config.set_all_order_modes(&saved.0);
    THP.config.set_global_mode(saved.1);
    THP.config.set_use_zero_page(saved.2);
    // Per size first under a top level that refuses nothing.
    let _ = THP.config.shmem.set_huge(ShmemHuge::Never);
    for o in SHMEM_MIN_ORDER..=PMD_ORDER {
        let _ = THP
            .config
            .shmem
            .set_order_mode(o, saved_shmem.1[o as usize]);
    }
    let _ = THP.config.shmem.set_huge(saved_shmem.0);
    for o in 2..=9 {
        THP.config.set_reserve(o, saved.3 & (1 << o) != 0);
    }
    kh.scan_sleep_millisecs
        .store(sleep, core::sync::atomic::Ordering::Relaxed);
    buddy().drain_all();
    let now = buddy().stats().free + uspace::ctx().frames_held();
    if result.is_ok() && now != base {
        result = Err(format!(
            "storm seed {seed}: {} frames leaked ({} free vs {} before)",
            base as i64 - now as i64,
            now,
            base
        ));
    }
    result
}

/// Parse `storm=<seed>,<ops>`.
pub fn parse(v: &str) -> Option<(u64, u64)> {
    let (a, b) = v.split_once(',')?;
    let seed = if let Some(h) = a.strip_prefix("0x") {
        u64::from_str_radix(h, 16).ok()?
    } else {
        a.parse().ok()?
    };
    Some((seed, b.parse().ok()?))
}

ktest::ktest! {
    /// A short storm (the long ones run as their own boot: `storm=<seed>,<ops>`).
    fn short_storm() {
        run(0x5eed, 3000)
    }
}
