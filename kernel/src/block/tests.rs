//! The block layer's self-tests (`ktest!`), on the scratch disk the runner
//! attaches to the main `selftest` boot (`tests/src/suites.rs`); a boot
//! without a disk skips them.

use super::*;
use crate::mem::physmem::DIRECT_MAP;
use crate::selftest::testenv::free_frames;
use ktest::{check, check_eq, ktest};
use mm::physmem::buddy::AllocFlags;
use mm::physmem::phys::PhysMem;

/// The disk, or skip: only boots without one (q35, `make run`) lack it.
macro_rules! need_disk {
    () => {
        match disk() {
            Some(d) => d,
            None => ktest::skip!("no virtio block device (the main selftest boot has one)"),
        }
    };
}

/// A run of `1 << order` fresh pages, freed on drop.
struct Buf(PageRun, u32);

impl Buf {
    fn new(order: u32) -> Result<Buf, ktest::String> {
        let f = crate::mem::memory::buddy()
            .alloc(order, AllocFlags::KERNEL)
            .map_err(|e| ktest::format!("{e:?}"))?;
        Ok(Buf(
            PageRun {
                pa: f.pa(),
                pages: 1 << order,
            },
            order,
        ))
    }
    /// The run's contents as words, read through `mm`'s window onto RAM
    /// (the direct map), so the test needs no `unsafe`.
    fn words(&self) -> alloc::vec::Vec<u64> {
        let mut bytes = alloc::vec![0u8; self.0.bytes() as usize];
        DIRECT_MAP.read(self.0.pa, &mut bytes);
        bytes
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8])))
            .collect()
    }
    /// Fill with words that name `tag` and their disk position.
    fn fill(&mut self, tag: u64, sector: u64) {
        let bytes: alloc::vec::Vec<u8> = (0..self.0.bytes() / 8)
            .flat_map(|i| (tag << 48 ^ (sector * SECTOR_SIZE / 8 + i)).to_ne_bytes())
            .collect();
        DIRECT_MAP.write(self.0.pa, &bytes);
    }
    /// The first word that is not what `fill(tag, sector)` wrote.
    fn mismatch(&self, tag: u64, sector: u64) -> Option<usize> {
        self.words()
            .iter()
            .enumerate()
            .position(|(i, &w)| w != tag << 48 ^ (sector * SECTOR_SIZE / 8 + i as u64))
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        crate::mem::memory::buddy().free_pages(self.0.pa / PAGE_SIZE, self.1);
    }
}

/// Scattered page-aligned sectors, spread over the whole disk, distinct.
fn scattered(d: &Disk, n: u64) -> impl Iterator<Item = u64> {
    let pages = d.capacity() / PAGE_SECTORS;
    (0..n).map(move |i| (i * 7919 % pages) * PAGE_SECTORS)
}

ktest! {
    fn block_pages_at_scattered_sectors_read_back() {
        let d = need_disk!();
        let base = free_frames();
        {
            let mut b = Buf::new(0)?;
            for (i, s) in scattered(d, 64).enumerate() {
                b.fill(0x51 + i as u64, s);
                d.write(s, b.0).map_err(|e| ktest::format!("write {s}: {e:?}"))?;
            }
            for (i, s) in scattered(d, 64).enumerate() {
                b.fill(0, 0);
                d.read(s, b.0).map_err(|e| ktest::format!("read {s}: {e:?}"))?;
                check!(b.mismatch(0x51 + i as u64, s).is_none(), "sector {s}: data differs");
            }
        }
        check_eq!(free_frames(), base, "free frames after the I/O vs before");
        Ok(())
    }
}

ktest! {
    fn block_2m_run_in_one_request() {
        let d = need_disk!();
        let base = free_frames();
        {
            let mut b = Buf::new(9)?;
            let s = 2048; // 1 MiB in
            let before = d.stats();
            b.fill(0x2a, s);
            d.write(s, b.0).map_err(|e| ktest::format!("{e:?}"))?;
            b.fill(0, 0);
            d.read(s, b.0).map_err(|e| ktest::format!("{e:?}"))?;
            let after = d.stats();
            check!(b.mismatch(0x2a, s).is_none(), "2 MiB run: data differs");
            check_eq!(after.writes - before.writes, 1, "write requests for 2 MiB");
            check_eq!(after.reads - before.reads, 1, "read requests for 2 MiB");
            check_eq!(after.write_sectors - before.write_sectors, 4096, "sectors written");
            // `/sys/block/vda/stat` shows the same counts in Linux's fields.
            let stat = d.stat_text();
            let f: alloc::vec::Vec<u64> = stat
                .split_whitespace()
                .map(|w| w.parse().unwrap_or(u64::MAX))
                .collect();
            check_eq!(f.len(), 17, "stat fields: {stat}");
            check_eq!(
                (f[0], f[2], f[4], f[6]),
                (after.reads, after.read_sectors, after.writes, after.write_sectors),
                "stat: {stat}"
            );
        }
        check_eq!(free_frames(), base, "free frames after the I/O vs before");
        Ok(())
    }
}

ktest! {
    fn block_neighbours_keep_their_data() {
        let d = need_disk!();
        // A 64 KiB run, then single pages written right before, after and
        // over its middle: the rest of the run must be unchanged.
        let mut big = Buf::new(4)?;
        let mut one = Buf::new(0)?;
        let s = 8192;
        big.fill(0x64, s);
        d.write(s, big.0).map_err(|e| ktest::format!("{e:?}"))?;
        for (tag, at) in [(1, s - PAGE_SECTORS), (2, s + 16 * PAGE_SECTORS), (3, s + 5 * PAGE_SECTORS)] {
            one.fill(tag, at);
            d.write(at, one.0).map_err(|e| ktest::format!("{e:?}"))?;
        }
        big.fill(0, 0);
        d.read(s, big.0).map_err(|e| ktest::format!("{e:?}"))?;
        let words = (PAGE_SIZE / 8) as usize;
        let bad = big.words().iter().enumerate().position(|(i, &w)| {
            let page = i / words;
            let (tag, sector) = if page == 5 { (3, s + 5 * PAGE_SECTORS) } else { (0x64, s) };
            let idx = if page == 5 { i - 5 * words } else { i };
            w != tag << 48 ^ (sector * SECTOR_SIZE / 8 + idx as u64)
        });
        check!(bad.is_none(), "word {:?} of the 64 KiB run is wrong", bad);
        for (tag, at) in [(1, s - PAGE_SECTORS), (2, s + 16 * PAGE_SECTORS)] {
            d.read(at, one.0).map_err(|e| ktest::format!("{e:?}"))?;
            check!(one.mismatch(tag, at).is_none(), "neighbour at {at} changed");
        }
        Ok(())
    }
}

ktest! {
    fn block_out_of_range_is_an_error() {
        let d = need_disk!();
        let b = Buf::new(0)?;
        let cap = d.capacity();
        let before = d.stats();
        check_eq!(d.read(cap, b.0), Err(BlockError::OutOfRange), "read at the end");
        check_eq!(d.write(cap - 1, b.0), Err(BlockError::OutOfRange), "write over the end");
        check_eq!(d.read(u64::MAX - 1, b.0), Err(BlockError::OutOfRange), "sector overflow");
        let empty = PageRun { pa: b.0.pa, pages: 0 };
        check_eq!(d.read(0, empty), Err(BlockError::BadRun), "empty run");
        check_eq!(d.stats(), before, "refused requests reached the device");
        // The last page still works.
        d.read(cap - PAGE_SECTORS, b.0).map_err(|e| ktest::format!("{e:?}"))?;
        Ok(())
    }
}

ktest! {
    /// Fails if the device's interrupt is not delivered: the request is made
    /// by a helper thread while this one waits a bounded time for it, so a
    /// lost interrupt is a failure here rather than a hang.  Checked once by
    /// not enabling the IRQ in `block::init` (the boot then says "polling"
    /// and this test fails on `irq_driven`) and once by dropping the hook's
    /// `wake_all` (the helper never finishes: "no completion within 10 s").
    fn block_completion_by_interrupt() {
        let d = need_disk!();
        check!(d.irq_driven(), "the disk's interrupt could not be enabled (polling)");
        let before = d.stats();
        let finished = alloc::sync::Arc::new(AtomicBool::new(false));
        let f2 = finished.clone();
        let h = sched::spawn("blk-irq", move || {
            if let Ok(b) = Buf::new(0) {
                let _ = d.read(0, b.0);
            }
            f2.store(true, Ordering::Release);
        })
        .map_err(|e| ktest::format!("spawn: {e}"))?;
        let t0 = arch::now_ns();
        while !finished.load(Ordering::Acquire) && arch::now_ns() - t0 < 10_000_000_000 {
            sched::sleep_ms(1);
        }
        check!(finished.load(Ordering::Acquire), "no completion within 10 s: interrupt lost");
        h.join();
        let after = d.stats();
        check!(after.interrupts > before.interrupts, "no interrupt counted");
        check_eq!(after.polled, before.polled, "a request was polled");
        check_eq!(after.reads - before.reads, 1, "reads");
        Ok(())
    }
}

/// Asynchronous requests finished (by `kblockd`), and how many failed.
static ASYNC_DONE: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
static ASYNC_ERR: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

fn count_end(_cookie: u64, r: Result<(), BlockError>) {
    if r.is_err() {
        ASYNC_ERR.fetch_add(1, Ordering::Relaxed);
    }
    ASYNC_DONE.fetch_add(1, Ordering::Release);
}

ktest! {
    fn block_async_writes_then_overlapping_reads() {
        let d = need_disk!();
        if !d.irq_driven() {
            ktest::skip!("completion by polling: submit_async completes at once");
        }
        let base = free_frames();
        {
            const N: u64 = 12;
            let mut bufs = alloc::vec::Vec::new();
            for _ in 0..N {
                bufs.push(Buf::new(0)?);
            }
            let sectors: alloc::vec::Vec<u64> = scattered(d, N).collect();
            let (done0, err0) = (
                ASYNC_DONE.load(Ordering::Acquire),
                ASYNC_ERR.load(Ordering::Relaxed),
            );
            let mut max_in_flight = 0;
            for (i, (b, &s)) in bufs.iter_mut().zip(&sectors).enumerate() {
                b.fill(0xa5 + i as u64, s);
                let q = d.submit_async(Dir::Write, s, b.0, count_end, i as u64);
                check_eq!(q, Ok(true), "submit_async {s}");
                max_in_flight = max_in_flight.max(d.with_dev(|q| q.in_flight()));
            }
            check!(max_in_flight >= 1, "no request in flight after submitting");
            // Each read overlaps a write that may still be in flight: it
            // waits for it and sees the new data.
            let r = Buf::new(0)?;
            for (i, &s) in sectors.iter().enumerate() {
                d.read(s, r.0).map_err(|e| ktest::format!("read {s}: {e:?}"))?;
                check!(r.mismatch(0xa5 + i as u64, s).is_none(), "sector {s}: data differs");
            }
            let t0 = crate::arch::now_ns();
            while ASYNC_DONE.load(Ordering::Acquire) - done0 < N {
                check!(crate::arch::now_ns() - t0 < 5_000_000_000, "completions missing");
                crate::task::sched::sleep_ms(1);
            }
            check_eq!(ASYNC_ERR.load(Ordering::Relaxed), err0, "failed writes");
            check_eq!(d.with_dev(|q| q.in_flight()), 0, "in flight at the end");
        }
        check_eq!(free_frames(), base, "free frames after the I/O vs before");
        Ok(())
    }
}

ktest! {
    fn block_plugged_writes_merge() {
        let d = need_disk!();
        if !d.irq_driven() {
            ktest::skip!("completion by polling: submit_async completes at once");
        }
        let base = free_frames();
        {
            // 40 pages in consecutive sectors, each its own frame: under a
            // plug they go out as requests of up to `max_segs` runs.
            const N: u64 = 40;
            let mut bufs = alloc::vec::Vec::new();
            for _ in 0..N {
                bufs.push(Buf::new(0)?);
            }
            let first = scattered(d, 1).next().ok_or("no sector")?;
            let (done0, err0, s0) = (
                ASYNC_DONE.load(Ordering::Acquire),
                ASYNC_ERR.load(Ordering::Relaxed),
                d.stats(),
            );
            {
                let _plug = Plug::new();
                for (i, b) in bufs.iter_mut().enumerate() {
                    let s = first + i as u64 * PAGE_SECTORS;
                    b.fill(0x5a + i as u64, s);
                    let q = d.submit_async(Dir::Write, s, b.0, count_end, i as u64);
                    check_eq!(q, Ok(true), "submit_async {s}");
                }
            }
            let t0 = crate::arch::now_ns();
            while ASYNC_DONE.load(Ordering::Acquire) - done0 < N {
                check!(crate::arch::now_ns() - t0 < 5_000_000_000, "completions missing");
                crate::task::sched::sleep_ms(1);
            }
            check_eq!(ASYNC_ERR.load(Ordering::Relaxed), err0, "failed writes");
            let s1 = d.stats();
            let reqs = N.div_ceil(d.max_segs as u64);
            check_eq!(s1.writes - s0.writes, reqs, "write requests");
            check_eq!(s1.write_merges - s0.write_merges, N - reqs, "merges");
            check_eq!(s1.write_sectors - s0.write_sectors, N * PAGE_SECTORS);
            let r = Buf::new(0)?;
            for i in 0..N {
                let s = first + i * PAGE_SECTORS;
                d.read(s, r.0).map_err(|e| ktest::format!("read {s}: {e:?}"))?;
                check!(r.mismatch(0x5a + i, s).is_none(), "sector {s}: data differs");
            }
        }
        check_eq!(free_frames(), base, "free frames after the I/O vs before");
        Ok(())
    }
}
