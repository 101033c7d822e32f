//! The block layer: whole-page reads and writes on a disk, for swap.
//!
//! Swap (issue 15) is what will use it: swap slots are page-sized runs of
//! sectors, and a large folio (16 KiB … 2 MiB) is written out and read back
//! whole, as one request on its physically contiguous pages, never split
//! into 4 KiB I/Os.  So the unit here is a [`PageRun`], a physical range of
//! whole pages (a folio or a part of one), and a request moves one run to
//! or from a run of sectors.
//!
//! The one disk today is the first virtio block device on a virtio-mmio
//! transport the firmware describes (`arch::virtio_mmio_devices`: the
//! device tree on arm64, the ACPI DSDT on x86 `microvm`), named `vda`;
//! `q35` (virtio-pci) has none yet.  Completion is by interrupt once
//! [`init`] has enabled the device's IRQ (IOAPIC GSI / GIC SPI); a request
//! before that, or if the IRQ cannot be routed, polls the used ring.
//! Counters are in `/sys/block/vda/stat` (Linux's format).
//!
//! # Plugging and merging
//! A caller about to queue many asynchronous writes (`MADV_PAGEOUT` over a
//! range) holds a [`Plug`] meanwhile, as Linux's `blk_start_plug`: while
//! any plug is held, [`Disk::submit_async`] does not start its request but
//! merges it into the one request being built when its sectors follow that
//! request's (the next folio in the next swap slots), up to
//! [`virtio::MAX_SEGS`] page runs (scatter-gather) and [`MAX_RUN_PAGES`]
//! pages.  The built request starts when the next one does not merge, when
//! any other request starts, and when a plug is dropped.  So 4K folios
//! in consecutive slots cost one request, one notification and one
//! interrupt per 32 instead of one each; each merged part keeps its own
//! end-of-I/O work.
//!
//! # Requests in flight
//! Up to [`virtio::MAX_INFLIGHT`] requests are in flight at once, each in
//! a request slot ([`Slot`]).  [`Disk::submit_async`] returns as soon as
//! its request is queued (it sleeps only for a free slot), which is what
//! lets swap-out (`MADV_PAGEOUT`) go on unmapping the next folio while
//! the device writes the last one, as Linux's `swap_writepage` does;
//! [`Disk::read`] and [`Disk::write`] submit and sleep for their own
//! completion.  A request that overlaps a write in flight (or a write that
//! overlaps any request in flight) waits for it first: the device may
//! complete requests in any order.
//!
//! The interrupt handler (interrupts masked, so it takes no mm lock) only
//! pops the finished requests off the used ring, records their status in
//! their slots and wakes the waiters.  It is the only one to pop them
//! while interrupts are on (a waiter that popped one itself would leave
//! the interrupt nothing to report, and `kblockd` asleep); without them
//! the waiters poll.  The end-of-I/O work of an
//! asynchronous request (its [`EndIo`] callback: for swap, the folio's
//! completion) runs in task context, in the `kblockd` thread ([`init`]
//! starts it; Linux runs `bio` completions in interrupt context, which
//! this kernel's mm locks do not allow).
//!
//! Locks, in order: the driver lock [`Disk::dev`] (a spin lock taken with
//! interrupts masked, also by the interrupt handler, never held across a
//! sleep, and taken inside a wait queue's condition) holds the slots and
//! the device; the wait queues' own locks are never held with it.
// Until swap uses it, only the self-tests call most of the API.
#![cfg_attr(not(feature = "selftest"), allow(dead_code))]

pub mod virtio;

#[cfg(feature = "selftest")]
mod tests;

use crate::arch;
use crate::task::sched::{self, WaitQueue};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use mm::sync::Mutex;
use spin::Once;
use virtio::VirtioBlk;
pub use virtio::{Dir, MAX_INFLIGHT};
use virtio::{MAX_SEGS, Seg};

pub const SECTOR_SIZE: u64 = 512;
pub const PAGE_SIZE: u64 = 4096;
/// Sectors per page.
pub const PAGE_SECTORS: u64 = PAGE_SIZE / SECTOR_SIZE;
/// Largest run one request moves: a 2 MiB folio (a PMD-sized one) and a
/// little more; swap never needs larger.
pub const MAX_RUN_PAGES: u64 = 1024;

/// Whole pages of RAM at `pa`, physically contiguous: a folio or part of
/// one.  The caller owns them for the request's duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageRun {
    pub pa: u64,
    pub pages: u64,
}

impl PageRun {
    pub fn bytes(&self) -> u64 {
        self.pages * PAGE_SIZE
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockError {
    /// The run reaches past the end of the disk.
    OutOfRange,
    /// Empty, unaligned or larger than [`MAX_RUN_PAGES`].
    BadRun,
    /// The device refused the request or reported an error.
    Io,
}

/// Linux's `/sys/block/<dev>/stat` fields this layer counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub reads: u64,
    pub read_sectors: u64,
    pub writes: u64,
    pub write_sectors: u64,
    /// Interrupts taken for the device.
    pub interrupts: u64,
    /// Requests completed by polling (before interrupts were enabled).
    pub polled: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Writes merged into another write while plugged (Linux's `wrqm`).
    pub write_merges: u64,
    /// Reads merged likewise (swap readahead; Linux's `rrqm`).
    pub read_merges: u64,
}

#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    read_sectors: AtomicU64,
    writes: AtomicU64,
    write_sectors: AtomicU64,
    interrupts: AtomicU64,
    polled: AtomicU64,
    errors: AtomicU64,
    write_merges: AtomicU64,
    read_merges: AtomicU64,
}

/// The end-of-I/O work of an asynchronous request, run in task context
/// (the `kblockd` thread) with the request's cookie and status.
pub type EndIo = fn(cookie: u64, r: Result<(), BlockError>);

/// The end-of-I/O work of one merged part of an asynchronous request.
type End = Option<(EndIo, u64)>;

/// One request in flight (or finished, not yet collected): its page runs
/// and their end-of-I/O work are in [`Queue::segs`] and [`Queue::ends`]
/// under the same index.
#[derive(Clone, Copy)]
struct Slot {
    dir: Dir,
    sector: u64,
    sectors: u64,
    /// Page runs (merged parts), in sector order.
    nsegs: usize,
    /// The device's token while in flight; `None` once popped.
    token: Option<u16>,
    /// The status, once popped off the used ring.
    status: Option<Result<(), ()>>,
    /// Asynchronous: `kblockd` completes it (its parts' [`End`]s).
    is_async: bool,
}

impl Slot {
    /// Whether `self` must finish before a request for `dir` on
    /// `[sector, sector + sectors)` starts: they overlap and one writes.
    fn conflicts(&self, dir: Dir, sector: u64, sectors: u64) -> bool {
        self.status.is_none()
            && (self.dir == Dir::Write || dir == Dir::Write)
            && sector < self.sector + self.sectors
            && self.sector < sector + sectors
    }
}

/// A request being built under a plug (or about to start): its slot
/// fields, page runs and their end-of-I/O work.
#[derive(Clone, Copy)]
struct Req {
    slot: Slot,
    segs: [Seg; MAX_SEGS],
    ends: [End; MAX_SEGS],
}

impl Req {
    fn new(dir: Dir, sector: u64, buf: PageRun, end: End) -> Req {
        let mut r = Req {
            slot: Slot {
                dir,
                sector,
                sectors: buf.pages * PAGE_SECTORS,
                nsegs: 1,
                token: None,
                status: None,
                is_async: end.is_some(),
            },
            segs: [Seg::default(); MAX_SEGS],
            ends: [None; MAX_SEGS],
        };
        r.segs[0] = Seg {
            pa: buf.pa,
            len: buf.bytes(),
        };
        r.ends[0] = end;
        r
    }

    /// Appends the asynchronous run `buf` for `sector` on (checked) if it
    /// continues this request on the disk within the limits (`max_segs`
    /// runs); whether it did.
    fn try_merge(
        &mut self,
        dir: Dir,
        sector: u64,
        buf: PageRun,
        end: End,
        max_segs: usize,
    ) -> bool {
        let s = &mut self.slot;
        let n = s.nsegs;
        if dir != s.dir
            || !s.is_async
            || sector != s.sector + s.sectors
            || n >= max_segs
            || s.sectors / PAGE_SECTORS + buf.pages > MAX_RUN_PAGES
        {
            return false;
        }
        self.segs[n] = Seg {
            pa: buf.pa,
            len: buf.bytes(),
        };
        self.ends[n] = end;
        s.nsegs += 1;
        s.sectors += buf.pages * PAGE_SECTORS;
        true
    }
}

/// The plugs held and the request being built under them.
struct PlugState {
    /// Plugs held now (by any thread).
    held: usize,
    pending: Option<Req>,
}

/// Held by a thread about to queue many asynchronous requests: see the
/// module docs ("Plugging and merging").  Dropping it starts the request
/// being built.
pub struct Plug(Option<&'static Disk>);

impl Plug {
    /// Plugs the disk, if there is one.
    pub fn new() -> Plug {
        let d = disk();
        if let Some(d) = d {
            d.plug_start();
        }
        Plug(d)
    }
}

impl Drop for Plug {
    fn drop(&mut self) {
        if let Some(d) = self.0 {
            d.plug_finish();
        }
    }
}

/// The device and its request slots, under [`Disk::dev`].
struct Queue {
    v: VirtioBlk,
    slots: [Option<Slot>; MAX_INFLIGHT],
    /// Each slot's page runs ...
    segs: alloc::boxed::Box<[[Seg; MAX_SEGS]]>,
    /// ... and their end-of-I/O work.
    ends: alloc::boxed::Box<[[End; MAX_SEGS]]>,
}

impl Queue {
    /// Pops every finished request off the used ring into its slot;
    /// whether any was.
    fn reap(&mut self) -> bool {
        let mut any = false;
        while let Some(t) = self.v.peek_used() {
            let Some(i) = self
                .slots
                .iter()
                .position(|s| s.is_some_and(|s| s.token == Some(t)))
            else {
                // Not ours: cannot happen; stop rather than spin.
                break;
            };
            let s = self.slots[i].as_mut().expect("found above");
            let st = self.v.finish(i, t, s.dir, &self.segs[i][..s.nsegs]);
            s.token = None;
            s.status = Some(st);
            any = true;
        }
        any
    }

    /// Starts `req` in a free slot unless a conflicting request is in
    /// flight or no slot (or not enough queue room) is free: `None` to
    /// wait, else the slot (or the device's refusal).
    fn try_start(&mut self, req: &Req) -> Option<Result<usize, ()>> {
        let mut s = req.slot;
        if self
            .slots
            .iter()
            .flatten()
            .any(|o| o.conflicts(s.dir, s.sector, s.sectors))
        {
            return None;
        }
        let i = self.slots.iter().position(|s| s.is_none())?;
        if !self.v.has_room(s.nsegs) {
            return None;
        }
        let n = s.nsegs;
        self.segs[i][..n].copy_from_slice(&req.segs[..n]);
        self.ends[i][..n].copy_from_slice(&req.ends[..n]);
        match self.v.submit(i, s.dir, s.sector, &req.segs[..n]) {
            Ok(t) => {
                s.token = Some(t);
                self.slots[i] = Some(s);
                Some(Ok(i))
            }
            Err(()) => Some(Err(())),
        }
    }

    /// Requests in flight (`/sys/block/vda/stat`).
    fn in_flight(&self) -> u64 {
        self.slots
            .iter()
            .flatten()
            .filter(|s| s.status.is_none())
            .count() as u64
    }
}

pub struct Disk {
    name: &'static str,
    /// Size in sectors.
    capacity: u64,
    /// Page runs one request may carry (the device's `seg_max`, at most
    /// [`virtio::MAX_SEGS`]).
    max_segs: usize,
    /// The interrupt completions arrive on, once enabled.
    irq: Once<u32>,
    /// Threads waiting for a free slot or for a conflicting request.
    idle: WaitQueue,
    dev: Mutex<Queue>,
    /// The plugs and the request being built (module docs); never taken
    /// with `dev`.
    plug: Mutex<PlugState>,
    /// Owners of synchronous requests and `kblockd` wait here for
    /// statuses the interrupt handler recorded.
    completion: WaitQueue,
    counters: Counters,
    /// `/sys/block/vda/queue/rotational`: 1 at boot, as Linux's virtio-blk
    /// declares itself.  Root may write it (user tests set 0 before
    /// `swapon`, which on Linux 6.12 decides whether large folios get
    /// contiguous slots, notes §0.1); here it changes nothing else.
    rotational: AtomicBool,
}

static DISK: Once<Disk> = Once::new();

/// The disk, if the machine has one.
pub fn disk() -> Option<&'static Disk> {
    DISK.get()
}

/// Find the disk and enable its interrupt.  Called once at boot, after the
/// scheduler and interrupts are up.
pub fn init() {
    for d in arch::virtio_mmio_devices() {
        let Some(dev) = VirtioBlk::probe(d.base, d.size) else {
            continue;
        };
        let disk = DISK.call_once(|| Disk {
            name: "vda",
            capacity: dev.capacity(),
            max_segs: dev.max_segs(),
            irq: Once::new(),
            idle: WaitQueue::new(),
            dev: Mutex::new(Queue {
                v: dev,
                slots: [None; MAX_INFLIGHT],
                segs: alloc::vec![[Seg::default(); MAX_SEGS]; MAX_INFLIGHT].into_boxed_slice(),
                ends: alloc::vec![[None; MAX_SEGS]; MAX_INFLIGHT].into_boxed_slice(),
            }),
            plug: Mutex::new(PlugState {
                held: 0,
                pending: None,
            }),
            completion: WaitQueue::new(),
            counters: Counters::default(),
            rotational: AtomicBool::new(true),
        });
        arch::set_device_irq_hook(on_irq);
        let irq_on = arch::enable_device_irq(d.irq);
        if irq_on {
            disk.irq.call_once(|| d.irq);
        }
        disk.with_dev(|q| q.v.enable_interrupts(irq_on));
        if irq_on && let Err(e) = sched::spawn("kblockd", kblockd) {
            crate::warn!("block: kblockd not started: {}", e);
        }
        info!(
            "block: {} virtio-mmio at {:#x} irq {}: {} MiB, completion by {}",
            disk.name(),
            d.base,
            d.irq,
            (disk.capacity * SECTOR_SIZE) >> 20,
            if irq_on { "interrupt" } else { "polling" }
        );
        return;
    }
}

/// Device interrupt hook (interrupts masked): acknowledge, pop the
/// finished requests into their slots, wake their owners and `kblockd`.
fn on_irq(irq: u32) {
    let Some(d) = DISK.get() else { return };
    if d.irq.get() != Some(&irq) {
        return;
    }
    d.counters.interrupts.fetch_add(1, Ordering::Relaxed);
    let finished = {
        let mut q = d.dev.lock();
        q.v.ack_interrupt();
        q.reap()
    };
    if finished {
        d.completion.wake_all();
    }
}

/// The `kblockd` thread: runs the end-of-I/O work of finished
/// asynchronous requests in task context (see the module docs), each
/// merged part's in turn, one request at a time: its slot freed under the
/// driver lock, threads waiting for a slot woken, then its parts'
/// completions; it sleeps once no finished request is left.
fn kblockd() {
    let Some(d) = DISK.get() else { return };
    let mut done: Option<(Slot, [End; MAX_SEGS])> = None;
    loop {
        // Interruptible: an idle kblockd waits for work without bound, as
        // Linux's kernel threads, and the hung-task report ignores it.
        d.completion.wait_interruptible(|| {
            done = d.with_dev(|q| q.take_finished_async());
            done.is_some()
        });
        while let Some((s, ends)) = done.take() {
            d.idle.wake_all();
            let r = d.account(s.dir, s.sectors, s.status.unwrap_or(Err(())));
            for (end, cookie) in ends[..s.nsegs].iter().flatten() {
                end(*cookie, r);
            }
            done = d.with_dev(|q| q.take_finished_async());
        }
    }
}

impl Queue {
    /// Frees the slot of a finished asynchronous request, if any: the
    /// request and its parts' end-of-I/O work.
    fn take_finished_async(&mut self) -> Option<(Slot, [End; MAX_SEGS])> {
        let i = self
            .slots
            .iter()
            .position(|s| s.is_some_and(|s| s.is_async && s.status.is_some()))?;
        let s = self.slots[i].take().expect("found above");
        Some((s, self.ends[i]))
    }
}

impl Disk {
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Size in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether completions come by interrupt.
    pub fn irq_driven(&self) -> bool {
        self.irq.get().is_some()
    }

    /// `/sys/block/vda/stat`: Linux's 17 fields (read and write I/Os,
    /// merges, sectors, ticks; in flight, busy time, queue time; discards;
    /// flushes).  Merges, times and discards are not kept here: 0.
    pub fn stat_text(&self) -> alloc::string::String {
        let s = self.stats();
        let in_flight = self.with_dev(|q| q.in_flight());
        let f = [
            s.reads,
            s.read_merges,
            s.read_sectors,
            0,
            s.writes,
            s.write_merges,
            s.write_sectors,
            0,
            in_flight,
        ];
        let mut out = alloc::string::String::new();
        for v in f.iter().chain([0u64; 8].iter()) {
            out += &alloc::format!("{v:>8} ");
        }
        out.pop();
        out.push('\n');
        out
    }

    /// `queue/rotational` as Linux prints it.
    pub fn rotational_text(&self) -> alloc::string::String {
        alloc::format!("{}\n", u8::from(self.rotational.load(Ordering::Relaxed)))
    }

    /// A write to `queue/rotational`: an unsigned decimal (a trailing
    /// newline allowed, as `kstrtoul`), any non-zero value meaning
    /// rotational; anything else is EINVAL.
    pub fn write_rotational(&self, data: &[u8]) -> Result<(), mm::abi::errno::Errno> {
        let s = core::str::from_utf8(data).map_err(|_| mm::abi::errno::Errno::EINVAL)?;
        let s = s.strip_suffix('\n').unwrap_or(s);
        if s.is_empty() || s.starts_with('+') {
            return Err(mm::abi::errno::Errno::EINVAL);
        }
        let v: u64 = s.parse().map_err(|_| mm::abi::errno::Errno::EINVAL)?;
        self.rotational.store(v != 0, Ordering::Relaxed);
        Ok(())
    }

    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            reads: l(&c.reads),
            read_sectors: l(&c.read_sectors),
            writes: l(&c.writes),
            write_sectors: l(&c.write_sectors),
            interrupts: l(&c.interrupts),
            polled: l(&c.polled),
            errors: l(&c.errors),
            write_merges: l(&c.write_merges),
            read_merges: l(&c.read_merges),
        }
    }

    /// Read `buf.pages` pages from `sector` on into `buf`, as one request,
    /// and wait for it.
    pub fn read(&self, sector: u64, buf: PageRun) -> Result<(), BlockError> {
        let i = self.start(&self.check(Dir::Read, sector, buf, None)?)?;
        self.wait(i)
    }

    /// Write `buf` to the disk from `sector` on, as one request, and wait
    /// for it.
    pub fn write(&self, sector: u64, buf: PageRun) -> Result<(), BlockError> {
        let i = self.start(&self.check(Dir::Write, sector, buf, None)?)?;
        self.wait(i)
    }

    /// Queue a request moving `buf` from/to `sector` on and return without
    /// waiting for it: `Ok(true)` once queued, and then `end(cookie,
    /// status)` runs later in task context (the `kblockd` thread);
    /// `Ok(false)` if it already completed (a disk without interrupts
    /// polls), and then `end` is never called.  Sleeps only for a free
    /// request slot (or a conflicting request in flight).  Under a
    /// [`Plug`] it may merge into the request being built instead (module
    /// docs).
    pub fn submit_async(
        &self,
        dir: Dir,
        sector: u64,
        buf: PageRun,
        end: EndIo,
        cookie: u64,
    ) -> Result<bool, BlockError> {
        if !self.can_sleep() {
            let i = self.start(&self.check(dir, sector, buf, None)?)?;
            return self.wait(i).map(|()| false);
        }
        self.check_run(sector, buf)?;
        let end = Some((end, cookie));
        let flush = {
            let mut p = self.plug.lock();
            if p.held == 0 {
                None
            } else {
                let max = self.max_segs;
                if p.pending
                    .as_mut()
                    .is_some_and(|b| b.try_merge(dir, sector, buf, end, max))
                {
                    let merges = match dir {
                        Dir::Write => &self.counters.write_merges,
                        Dir::Read => &self.counters.read_merges,
                    };
                    merges.fetch_add(1, Ordering::Relaxed);
                    return Ok(true);
                }
                // The built request starts, this one is built on.
                Some(p.pending.replace(Req::new(dir, sector, buf, end)))
            }
        };
        match flush {
            Some(prev) => {
                if let Some(prev) = prev {
                    self.start_async(&prev);
                }
            }
            None => {
                self.flush_plug();
                self.start(&Req::new(dir, sector, buf, end))?;
            }
        }
        Ok(true)
    }

    /// Takes a plug ([`Plug`]; for callers that cannot hold the guard,
    /// such as swap readahead through `SwapIo`): pair with
    /// [`Self::plug_finish`].
    pub fn plug_start(&self) {
        self.plug.lock().held += 1;
    }

    /// Drops a plug taken by [`Self::plug_start`] and starts the request
    /// being built.
    pub fn plug_finish(&self) {
        self.plug.lock().held -= 1;
        self.flush_plug();
    }

    /// Starts the request being built under the plugs, if any.
    fn flush_plug(&self) {
        let pending = self.plug.lock().pending.take();
        if let Some(r) = pending {
            self.start_async(&r);
        }
    }

    /// Starts the asynchronous request `r` whose submission already
    /// returned (merged under a plug): if the device refuses it, its
    /// parts' end-of-I/O work runs now with the error.
    fn start_async(&self, r: &Req) {
        if self.start(r).is_err() {
            for (end, cookie) in r.ends[..r.slot.nsegs].iter().flatten() {
                end(*cookie, Err(BlockError::Io));
            }
        }
    }

    fn with_dev<R>(&self, f: impl FnOnce(&mut Queue) -> R) -> R {
        let irq = arch::irq_save();
        let r = f(&mut self.dev.lock());
        arch::irq_restore(irq);
        r
    }

    /// Whether this thread may sleep for the device (else it polls).
    fn can_sleep(&self) -> bool {
        self.irq_driven() && sched::started()
    }

    /// Checks the run: its one-part request.
    fn check(&self, dir: Dir, sector: u64, buf: PageRun, end: End) -> Result<Req, BlockError> {
        self.check_run(sector, buf)?;
        Ok(Req::new(dir, sector, buf, end))
    }

    /// Checks a run of pages for the sectors from `sector` on.
    fn check_run(&self, sector: u64, buf: PageRun) -> Result<(), BlockError> {
        if buf.pages == 0 || buf.pages > MAX_RUN_PAGES || !buf.pa.is_multiple_of(PAGE_SIZE) {
            return Err(BlockError::BadRun);
        }
        let sectors = buf.pages * PAGE_SECTORS;
        if sector
            .checked_add(sectors)
            .is_none_or(|end| end > self.capacity)
        {
            return Err(BlockError::OutOfRange);
        }
        Ok(())
    }

    /// Queues `req` in a free slot, sleeping (or spinning, before the
    /// scheduler) until one is free and no conflicting request is in
    /// flight.  Returns the slot.  A request being built under a plug
    /// starts first (a synchronous request may need it finished).
    fn start(&self, req: &Req) -> Result<usize, BlockError> {
        if !req.slot.is_async {
            self.flush_plug();
        }
        let mut got = None;
        let sleep = self.can_sleep();
        let take = || {
            got = self.with_dev(|q| {
                if !sleep {
                    q.reap();
                }
                q.try_start(req)
            });
            got.is_some()
        };
        Self::wait_on(sleep, &self.idle, take);
        match got {
            Some(Ok(i)) => Ok(i),
            _ => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                Err(BlockError::Io)
            }
        }
    }

    /// Until `cond` holds: sleeping on `q` (`sleep`) or spinning, for
    /// callers that may not sleep (the device is polled inside `cond`).
    #[track_caller]
    fn wait_on(sleep: bool, q: &WaitQueue, mut cond: impl FnMut() -> bool) {
        if sleep {
            q.wait_until(cond);
        } else {
            while !cond() {
                arch::cpu_relax();
            }
        }
    }

    /// Waits for the synchronous request in slot `i`, frees the slot and
    /// counts it.
    fn wait(&self, i: usize) -> Result<(), BlockError> {
        let mut s = None;
        let sleep = self.can_sleep();
        let done = || {
            s = self.with_dev(|q| {
                if !sleep {
                    q.reap();
                }
                if q.slots[i].is_some_and(|s| s.status.is_some()) {
                    q.slots[i].take()
                } else {
                    None
                }
            });
            s.is_some()
        };
        Self::wait_on(sleep, &self.completion, done);
        if !sleep {
            self.counters.polled.fetch_add(1, Ordering::Relaxed);
        }
        self.idle.wake_all();
        let s = s.expect("the wait ends with the slot");
        self.account(s.dir, s.sectors, s.status.unwrap_or(Err(())))
    }

    /// Counts a finished request.
    fn account(&self, dir: Dir, sectors: u64, st: Result<(), ()>) -> Result<(), BlockError> {
        let c = &self.counters;
        if st.is_err() {
            c.errors.fetch_add(1, Ordering::Relaxed);
            return Err(BlockError::Io);
        }
        let (n, s) = match dir {
            Dir::Read => (&c.reads, &c.read_sectors),
            Dir::Write => (&c.writes, &c.write_sectors),
        };
        n.fetch_add(1, Ordering::Relaxed);
        s.fetch_add(sectors, Ordering::Relaxed);
        Ok(())
    }
}
