//! Swap areas on the block device: `swapon(2)` / `swapoff(2)` with
//! Linux's checks and errnos (notes §1.1), `/proc/swaps`, and the
//! [`SwapIo`] that moves folios between RAM and the disk.
//!
//! The one device is `/dev/vda` (the virtio disk, `block::disk`).  A slot
//! is a page: slot `s` is sectors `8s..8s+8`, and a folio of `2^order`
//! pages in `2^order` consecutive slots goes out and comes back as one
//! request.  The area is a block device, so `/proc/swaps` says
//! `partition`.  Only one swapon/swapoff runs at a time (`SWAPON_LOCK`, a
//! sleeping flag: swapoff sleeps for I/O).
//!
//! Writes from `MADV_PAGEOUT` are asynchronous ([`SwapIo::write_async`]:
//! `block::Disk::submit_async`); their completion runs in the block
//! layer's `kblockd` thread and hands the folio back to mm
//! (`MmCtx::end_swap_write`).  Swap readahead's reads are asynchronous
//! too ([`SwapIo::read_async`], under a plug so that consecutive slots
//! merge into one request), completed by `MmCtx::end_swap_read`.  swapoff retries while a write is in flight
//! (the folio is locked until it completes).
use crate::block::{self, PAGE_SECTORS, PageRun};
use crate::mem::uspace;
use crate::proc::process::Process;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};
use mm::abi::errno::Errno;
use mm::physmem::buddy::AllocFlags;
use mm::physmem::phys::PhysMem;
use mm::swap::{SwapArea, SwapIo, SwapIoError, SwapMap, header};

/// The path of the swap-capable device.
pub const DEVICE: &str = "/dev/vda";

/// `SWAP_FLAG_PREFER`: the low 15 bits are the priority.
const SWAP_FLAG_PREFER: u64 = 0x8000;
const SWAP_FLAG_PRIO_MASK: u64 = 0x7fff;
/// `SWAP_FLAG_DISCARD`, `_DISCARD_ONCE`, `_DISCARD_PAGES`: accepted, and
/// ignored (virtio-blk here has no discard).
const SWAP_FLAG_DISCARD_ALL: u64 = 0x10000 | 0x20000 | 0x40000;

/// Serialises swapon and swapoff.
static BUSY: AtomicBool = AtomicBool::new(false);
static IDLE: crate::task::sched::WaitQueue = crate::task::sched::WaitQueue::new();

struct Serial;
impl Serial {
    fn take() -> Serial {
        IDLE.wait_until(|| {
            BUSY.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        });
        Serial
    }
}
impl Drop for Serial {
    fn drop(&mut self) {
        BUSY.store(false, Ordering::Release);
        IDLE.wake_all();
    }
}

/// The disk as a swap area's I/O.
struct DiskSwap(&'static block::Disk);

impl SwapIo for DiskSwap {
    fn write(&self, _mem: &dyn PhysMem, slot: u64, pa: u64, pages: u64) -> Result<(), SwapIoError> {
        self.0
            .write(slot * PAGE_SECTORS, PageRun { pa, pages })
            .map_err(|_| SwapIoError)
    }
    fn read(&self, _mem: &dyn PhysMem, slot: u64, pa: u64, pages: u64) -> Result<(), SwapIoError> {
        self.0
            .read(slot * PAGE_SECTORS, PageRun { pa, pages })
            .map_err(|_| SwapIoError)
    }
    fn write_async(
        &self,
        _mem: &dyn PhysMem,
        slot: u64,
        pa: u64,
        pages: u64,
    ) -> Result<bool, SwapIoError> {
        self.0
            .submit_async(
                block::Dir::Write,
                slot * PAGE_SECTORS,
                PageRun { pa, pages },
                end_swap_write,
                pa,
            )
            .map_err(|_| SwapIoError)
    }
    fn read_async(
        &self,
        _mem: &dyn PhysMem,
        slot: u64,
        pa: u64,
        pages: u64,
    ) -> Result<bool, SwapIoError> {
        self.0
            .submit_async(
                block::Dir::Read,
                slot * PAGE_SECTORS,
                PageRun { pa, pages },
                end_swap_read,
                pa,
            )
            .map_err(|_| SwapIoError)
    }
    fn plug(&self) {
        self.0.plug_start();
    }
    fn unplug(&self) {
        self.0.plug_finish();
    }
}

/// The end of an asynchronous swap write (in `kblockd`): the folio at
/// physical `pa` finishes its writeback.
fn end_swap_write(pa: u64, r: Result<(), block::BlockError>) {
    uspace::ctx().end_swap_write(pa, r.is_ok());
}

/// The end of an asynchronous swap read (readahead, in `kblockd`): the
/// folio at physical `pa` is read (or not) and unlocked.
fn end_swap_read(pa: u64, r: Result<(), block::BlockError>) {
    uspace::ctx().end_swap_read(pa, r.is_ok());
}

/// Reads page 0 of the disk.
fn read_header(d: &'static block::Disk) -> Result<Vec<u8>, Errno> {
    let b = crate::mem::memory::buddy();
    let f = b.alloc(0, AllocFlags::KERNEL).map_err(|_| Errno::ENOMEM)?;
    let pa = f.pa();
    let r = d.read(0, PageRun { pa, pages: 1 });
    let mut page = alloc::vec![0u8; 4096];
    crate::mem::physmem::DIRECT_MAP.read(pa, &mut page);
    f.put();
    r.map_err(|_| Errno::EIO)?;
    Ok(page)
}

/// Whether `p` may administer swap (`CAP_SYS_ADMIN`: uid 0 here).
fn capable(p: &Process) -> bool {
    p.uid.load(Ordering::Relaxed) == 0
}

/// Resolves `path` as swapon/swapoff open it (`O_RDWR`): the open's errno
/// for what does not exist or cannot be opened for writing; `Ok(true)`
/// for the block device, `Ok(false)` for anything else that opens.
fn open_target(p: &Process, path: &str) -> Result<bool, Errno> {
    const O_RDWR: u64 = 2;
    let abs = crate::fs::vfs::absolute(p, path);
    crate::fs::vfs::open(p, &abs, O_RDWR)?;
    Ok(abs == DEVICE)
}

/// `swapon(path, flags)`.
pub fn swapon(p: &Process, path: &str, flags: u64) -> Result<(), Errno> {
    if flags & !(SWAP_FLAG_PREFER | SWAP_FLAG_PRIO_MASK | SWAP_FLAG_DISCARD_ALL) != 0 {
        return Err(Errno::EINVAL);
    }
    if !capable(p) {
        return Err(Errno::EPERM);
    }
    let _serial = Serial::take();
    let ctx = uspace::ctx();
    if ctx.swap.areas().len() >= mm::swap::MAX_SWAPFILES {
        return Err(Errno::EPERM);
    }
    if path.is_empty() {
        return Err(Errno::ENOENT);
    }
    let is_dev = open_target(p, path)?;
    if !is_dev {
        // A pseudo-file, a device without read_folio, an initramfs file
        // (tmpfs-like): no swap here, as Linux's EINVAL.
        return Err(Errno::EINVAL);
    }
    swapon_device(flags).map(|_| ())
}

/// Activates the disk as a swap area (swapon's work after the path and
/// permission checks; the self-tests call it directly).  Returns its type.
pub fn swapon_device(flags: u64) -> Result<u8, Errno> {
    let ctx = uspace::ctx();
    let disk = block::disk().ok_or(Errno::ENXIO)?;
    if ctx.swap.areas().iter().any(|(_, a)| a.name == DEVICE) {
        return Err(Errno::EBUSY);
    }
    let page = read_header(disk)?;
    let dev_pages = disk.capacity() / PAGE_SECTORS;
    let h = header::parse(&page, dev_pages).map_err(|_| Errno::EINVAL)?;
    let (prio, auto_prio) = if flags & SWAP_FLAG_PREFER != 0 {
        ((flags & SWAP_FLAG_PRIO_MASK) as i32, false)
    } else {
        (ctx.swap.take_auto_prio(), true)
    };
    let io: &'static DiskSwap = alloc::boxed::Box::leak(alloc::boxed::Box::new(DiskSwap(disk)));
    let area = SwapArea {
        name: String::from(DEVICE),
        prio,
        auto_prio,
        is_blockdev: true,
        map: SwapMap::new(h.pages, &h.bad),
        io,
        closing: AtomicBool::new(false),
    };
    let usable = area.map.usable();
    let ty = ctx.swap.activate(area).ok_or(Errno::EPERM)?;
    crate::info!(
        "Adding {}k swap on {}.  Priority:{} extents:1 across:{}k",
        usable * 4,
        DEVICE,
        prio,
        usable * 4
    );
    Ok(ty)
}

/// `swapoff(path)`: every page of the area comes back (large folios where
/// the swap-in rules allow), then it is gone.  A read error keeps it on
/// (EIO); out of memory, ENOMEM (Linux's errnos from `try_to_unuse`).
pub fn swapoff(p: &Process, path: &str) -> Result<(), Errno> {
    if !capable(p) {
        return Err(Errno::EPERM);
    }
    if path.is_empty() {
        return Err(Errno::ENOENT);
    }
    let _serial = Serial::take();
    open_target(p, path)?;
    let abs = crate::fs::vfs::absolute(p, path);
    let ctx = uspace::ctx();
    let Some((ty, _)) = ctx.swap.areas().into_iter().find(|(_, a)| a.name == abs) else {
        return Err(Errno::EINVAL);
    };
    swapoff_type(ty)
}

/// Takes area `ty` out of service (swapoff's work after the checks).
pub fn swapoff_type(ty: u8) -> Result<(), Errno> {
    let ctx = uspace::ctx();
    let area = ctx.swap.area(ty).ok_or(Errno::EINVAL)?;
    area.closing.store(true, Ordering::Release);
    if let Err(e) = unuse(ty) {
        area.closing.store(false, Ordering::Release);
        return Err(e);
    }
    ctx.swap.deactivate(ty);
    Ok(())
}

/// The shmem objects files and segments hold (memfds, tmpfs files,
/// System V segments), weakly: swapoff must reach the swapped pages of
/// objects no process maps (Linux's `shmem_swaplist`).  Objects of
/// `MAP_SHARED|MAP_ANONYMOUS` are reached through the spaces mapping them.
static SHMEM_OBJECTS: mm::sync::Mutex<Vec<alloc::sync::Weak<mm::shmem::Shmem<'static>>>> =
    mm::sync::Mutex::new(Vec::new());

/// Records a new file- or segment-held shmem object for swapoff.
pub fn shmem_register(obj: &alloc::sync::Arc<mm::shmem::Shmem<'static>>) {
    let mut l = SHMEM_OBJECTS.lock();
    l.retain(|w| w.strong_count() > 0);
    l.push(alloc::sync::Arc::downgrade(obj));
}

/// The live file- and segment-held shmem objects (for reclaim, which
/// reaches their unmapped folios through them, and swapoff).
pub fn file_shmem_objects() -> Vec<alloc::sync::Arc<mm::shmem::Shmem<'static>>> {
    SHMEM_OBJECTS
        .lock()
        .iter()
        .filter_map(|w| w.upgrade())
        .collect()
}

/// Brings every page of area `ty` back into memory (Linux's
/// `try_to_unuse`): each live address space's entries and the shmem
/// objects it maps, the objects files hold, then the folios still cached
/// for it.
pub fn unuse(ty: u8) -> Result<(), Errno> {
    let ctx = uspace::ctx();
    let errno = |e| match e {
        mm::aspace::Fault::Oom => Errno::ENOMEM,
        _ => Errno::EIO,
    };
    for _round in 0..16 {
        for m in uspace::all_mms() {
            m.enter().swapoff_unuse(ty).map_err(errno)?;
        }
        for o in file_shmem_objects() {
            ctx.shmem_unuse(&o, ty).map_err(errno)?;
        }
        if ctx.swapoff_drain_cache(ty) {
            return Ok(());
        }
        crate::task::sched::sleep_ms(1);
    }
    Err(Errno::EBUSY)
}

/// `/proc/swaps` in Linux's format.
pub fn proc_swaps() -> String {
    use core::fmt::Write;
    let mut s = String::from("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n");
    for (_, a) in uspace::ctx().swap.areas() {
        let size = a.map.usable() * 4;
        let used = a.map.in_use() * 4;
        let _ = write!(s, "{}", a.name);
        let pad = 40usize.saturating_sub(a.name.len()).max(1);
        for _ in 0..pad {
            s.push(' ');
        }
        let kind = if a.is_blockdev { "partition" } else { "file\t" };
        let tab = |v: u64| if v < 10_000_000 { "\t" } else { "" };
        let _ = writeln!(
            s,
            "{}\t{}\t{}{}\t{}{}",
            kind,
            size,
            tab(size),
            used,
            tab(used),
            a.prio
        );
    }
    s
}

#[cfg(feature = "selftest")]
/// Writes a fresh swap header over the whole scratch disk and turns it
/// on; `None` (skip) in boots without a disk.
pub fn format_and_swapon() -> Result<Option<u8>, ktest::String> {
    let Some(d) = block::disk() else {
        return Ok(None);
    };
    let b = crate::mem::memory::buddy();
    let f = b
        .alloc(0, AllocFlags::KERNEL)
        .map_err(|e| ktest::format!("{e:?}"))?;
    let mut page = alloc::vec![0u8; 4096];
    header::write(&mut page, d.capacity() / PAGE_SECTORS, [0x5a; 16]);
    crate::mem::physmem::DIRECT_MAP.write(f.pa(), &page);
    let r = d.write(
        0,
        PageRun {
            pa: f.pa(),
            pages: 1,
        },
    );
    f.put();
    r.map_err(|e| ktest::format!("header write: {e:?}"))?;
    swapon_device(0)
        .map(Some)
        .map_err(crate::selftest::testenv::err)
}

#[cfg(feature = "selftest")]
mod tests {
    use super::*;
    use crate::mem::uspace::{activate, new_mm};
    use crate::selftest::testenv::{Fixture, aligned_mapping, err, fill, verify};
    use ktest::{check, check_eq, ktest};
    use mm::abi::uapi::MADV_PAGEOUT;
    use mm::thp::{MthpStat, THP, VmEvent};

    const MB: u64 = 1 << 20;

    fn event(e: VmEvent) -> u64 {
        THP.stats.event(e)
    }

    /// Pages 4 MiB of 4K, 64K and 2M folios out to the virtio disk with
    /// MADV_PAGEOUT and reads them back by touching: the data survives,
    /// large folios go out whole (`swpout` per size, no fallback), a 2M
    /// folio comes back as 4K pages, and every frame and slot returns.
    fn swap_roundtrip_on_disk_impl() -> ktest::TestResult {
        let Some(ty) = format_and_swapon()? else {
            ktest::skip!("no virtio block device");
        };
        let r = (|| -> ktest::TestResult {
            for (order, seed) in [(0u32, 0x11u64), (4, 0x22), (9, 0x33)] {
                let one = [order];
                let fx = Fixture::always(if order == 0 { &[] } else { &one[..] });
                let m = new_mm().map_err(err)?;
                let va = aligned_mapping(&m, 4 * MB, 2 * MB)?;
                activate(&m);
                fill(va, 4 * MB, seed)?;
                let (out0, fb0, pout0, pin0) = (
                    THP.stats.get(order, MthpStat::Swpout),
                    THP.stats.get(order, MthpStat::SwpoutFallback),
                    event(VmEvent::PswpOut),
                    event(VmEvent::PswpIn),
                );
                m.enter().madvise(va, 4 * MB, MADV_PAGEOUT).map_err(err)?;
                check_eq!(
                    m.enter().swapents(),
                    1024,
                    "swap entries after MADV_PAGEOUT"
                );
                check_eq!(event(VmEvent::PswpOut) - pout0, 1024, "pswpout");
                if order > 0 {
                    check_eq!(
                        THP.stats.get(order, MthpStat::Swpout) - out0,
                        1024 >> order,
                        "swpout of the size"
                    );
                    check_eq!(THP.stats.get(order, MthpStat::SwpoutFallback) - fb0, 0);
                }
                // The written folios stay, clean, in the swap cache (as
                // Linux) until reclaim frees them without another write:
                // reclaim until the cache is empty (a folio whose write
                // is still in flight is locked and skipped), so that every
                // page comes back from the disk.
                let cache = &uspace::ctx().swap.cache;
                for _ in 0..200 {
                    if cache.pages() == 0 {
                        break;
                    }
                    crate::mem::kswapd::reclaim(1024, mm::aspace::vmscan::Reclaimer::Direct);
                    crate::task::sched::sleep_ms(5);
                }
                check_eq!(cache.pages(), 0, "swap cache after reclaim");
                check_eq!(event(VmEvent::PswpOut) - pout0, 1024, "not written again");
                verify(va, 4 * MB, seed)?;
                check_eq!(event(VmEvent::PswpIn) - pin0, 1024, "pswpin");
                check_eq!(m.enter().swapents(), 0);
                fx.finish([m])?;
            }
            let a = uspace::ctx().swap.area(ty).ok_or("area gone")?;
            check_eq!(a.map.in_use(), 0, "slots in use after the round trips");
            Ok(())
        })();
        swapoff_type(ty).map_err(err)?;
        r
    }

    /// swapoff with 4 MiB of 64K folios swapped out brings everything back
    /// (as 64K folios) and the area goes away.
    fn swapoff_brings_back_impl() -> ktest::TestResult {
        let Some(ty) = format_and_swapon()? else {
            ktest::skip!("no virtio block device");
        };
        let fx = Fixture::always(&[4]);
        let m = new_mm().map_err(err)?;
        let va = aligned_mapping(&m, 4 * MB, 2 * MB)?;
        activate(&m);
        fill(va, 4 * MB, 0x44)?;
        m.enter().madvise(va, 4 * MB, MADV_PAGEOUT).map_err(err)?;
        check_eq!(m.enter().swapents(), 1024);
        swapoff_type(ty).map_err(err)?;
        check_eq!(m.enter().swapents(), 0, "entries left after swapoff");
        check_eq!(uspace::ctx().swap.totals(), (0, 0), "SwapTotal/SwapFree");
        let f0 = event(VmEvent::PswpIn);
        verify(va, 4 * MB, 0x44)?;
        check_eq!(event(VmEvent::PswpIn), f0, "no reads after swapoff");
        fx.finish([m])
    }

    /// Pages 4 MiB of 4K folios out, reclaims until the swap cache is
    /// empty, and reads the region back in order: with swap readahead
    /// (page-cluster 3, Linux's default) far fewer major faults than pages,
    /// `swap_ra` / `swap_ra_hit` move and the reads merge; with
    /// page-cluster 0, or `vma_ra_enabled` off, one major fault per page
    /// and no readahead.  The data survives every way.
    fn swap_readahead_sequential_impl() -> ktest::TestResult {
        use crate::mem::watermark::sysctl_write;
        use mm::physmem::watermark::VmKnob;
        let Some(ty) = format_and_swapon()? else {
            ktest::skip!("no virtio block device");
        };
        let ctx = uspace::ctx();
        let round = |seed: u64| -> Result<(u64, u64, u64, u64), ktest::String> {
            let fx = Fixture::always(&[]);
            let m = new_mm().map_err(err)?;
            let va = aligned_mapping(&m, 4 * MB, 2 * MB)?;
            activate(&m);
            fill(va, 4 * MB, seed)?;
            m.enter().madvise(va, 4 * MB, MADV_PAGEOUT).map_err(err)?;
            check_eq!(m.enter().swapents(), 1024);
            for _ in 0..200 {
                if ctx.swap.cache.pages() == 0 {
                    break;
                }
                crate::mem::kswapd::reclaim(1024, mm::aspace::vmscan::Reclaimer::Direct);
                crate::task::sched::sleep_ms(5);
            }
            check_eq!(ctx.swap.cache.pages(), 0, "swap cache after reclaim");
            let (maj0, ra0, hit0, pin0) = (
                m.enter().faults_major(),
                event(VmEvent::SwapRa),
                event(VmEvent::SwapRaHit),
                event(VmEvent::PswpIn),
            );
            let rm0 = block::disk().map_or(0, |d| d.stats().read_merges);
            verify(va, 4 * MB, seed)?;
            check_eq!(event(VmEvent::PswpIn) - pin0, 1024, "pswpin");
            check_eq!(m.enter().swapents(), 0);
            let r = (
                m.enter().faults_major() - maj0,
                event(VmEvent::SwapRa) - ra0,
                event(VmEvent::SwapRaHit) - hit0,
                block::disk().map_or(0, |d| d.stats().read_merges) - rm0,
            );
            fx.finish([m])?;
            Ok(r)
        };
        let r = (|| -> ktest::TestResult {
            let (maj, ra, hit, merges) = round(0x55)?;
            // Linux: 514 major faults for 4096 pages (1 + 2 + 4, then 8).
            check!(maj <= 1024 / 6, "major faults with readahead: {maj}");
            check!(ra >= 1024 - maj - 8, "swap_ra {ra} for {maj} faults");
            check!(
                hit + 8 >= ra && hit <= ra,
                "swap_ra_hit {hit}, swap_ra {ra}"
            );
            check!(merges >= ra / 2, "merged reads: {merges}");
            sysctl_write(VmKnob::PageCluster, "0").map_err(err)?;
            let off = round(0x66);
            sysctl_write(VmKnob::PageCluster, "3").map_err(err)?;
            let (maj, ra, hit, _) = off?;
            check_eq!((maj, ra, hit), (1024, 0, 0), "page-cluster 0");
            ctx.swap.vma_ra_enabled.store(false, Ordering::Relaxed);
            let off = round(0x77);
            ctx.swap.vma_ra_enabled.store(true, Ordering::Relaxed);
            let (maj, ra, hit, _) = off?;
            check_eq!((maj, ra, hit), (1024, 0, 0), "vma_ra_enabled 0");
            let a = ctx.swap.area(ty).ok_or("area gone")?;
            check_eq!(a.map.in_use(), 0, "slots in use after the round trips");
            Ok(())
        })();
        swapoff_type(ty).map_err(err)?;
        r
    }

    ktest! {
        fn swap_readahead_sequential() {
            swap_readahead_sequential_impl()
        }
    }

    ktest! {
        fn swap_roundtrip_on_disk() {
            swap_roundtrip_on_disk_impl()
        }
    }

    ktest! {
        fn swapoff_brings_back_everything() {
            swapoff_brings_back_impl()
        }
    }
}
