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
//! Locks, in order: the request slot [`Disk::busy`] (a sleeping flag:
//! whoever sets it owns the device's one in-flight request) before the
//! driver lock [`Disk::dev`] (a spin lock taken with interrupts masked,
//! also by the interrupt handler, never held across a sleep).
// Until swap uses it, only the self-tests call most of the API.
#![cfg_attr(not(feature = "selftest"), allow(dead_code))]

pub mod virtio;

#[cfg(feature = "selftest")]
mod tests;

use crate::arch;
use crate::task::sched::{self, WaitQueue};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use spin::{Mutex, Once};
use virtio::{Dir, VirtioBlk};

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
}

pub struct Disk {
    name: &'static str,
    /// Size in sectors.
    capacity: u64,
    /// The interrupt completions arrive on, once enabled.
    irq: Once<u32>,
    busy: AtomicBool,
    /// Threads waiting for `busy` to clear.
    idle: WaitQueue,
    dev: Mutex<VirtioBlk>,
    /// Set by the interrupt handler when the request in flight completed.
    done: AtomicBool,
    /// The request's owner waits here for `done`.
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
            irq: Once::new(),
            busy: AtomicBool::new(false),
            idle: WaitQueue::new(),
            dev: Mutex::new(dev),
            done: AtomicBool::new(false),
            completion: WaitQueue::new(),
            counters: Counters::default(),
            rotational: AtomicBool::new(true),
        });
        arch::set_device_irq_hook(on_irq);
        let irq_on = arch::enable_device_irq(d.irq);
        if irq_on {
            disk.irq.call_once(|| d.irq);
        }
        disk.with_dev(|v| v.enable_interrupts(irq_on));
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

/// Device interrupt hook (interrupts masked): acknowledge, note a finished
/// request, wake its owner.
fn on_irq(irq: u32) {
    let Some(d) = DISK.get() else { return };
    if d.irq.get() != Some(&irq) {
        return;
    }
    d.counters.interrupts.fetch_add(1, Ordering::Relaxed);
    let finished = {
        let mut v = d.dev.lock();
        v.ack_interrupt();
        v.done()
    };
    if finished {
        d.done.store(true, Ordering::Release);
        d.completion.wake_all();
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
        let in_flight = u64::from(self.busy.load(Ordering::Relaxed));
        let f = [
            s.reads,
            0,
            s.read_sectors,
            0,
            s.writes,
            0,
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
        }
    }

    /// Read `buf.pages` pages from `sector` on into `buf`, as one request.
    pub fn read(&self, sector: u64, buf: PageRun) -> Result<(), BlockError> {
        self.request(Dir::Read, sector, buf)
    }

    /// Write `buf` to the disk from `sector` on, as one request.
    pub fn write(&self, sector: u64, buf: PageRun) -> Result<(), BlockError> {
        self.request(Dir::Write, sector, buf)
    }

    fn with_dev<R>(&self, f: impl FnOnce(&mut VirtioBlk) -> R) -> R {
        let irq = arch::irq_save();
        let r = f(&mut self.dev.lock());
        arch::irq_restore(irq);
        r
    }

    /// Whether this thread may sleep for the device (else it polls).
    fn can_sleep(&self) -> bool {
        self.irq_driven() && sched::started()
    }

    fn request(&self, dir: Dir, sector: u64, buf: PageRun) -> Result<(), BlockError> {
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
        let sleep = self.can_sleep();
        let take = || {
            self.busy
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        };
        if sleep {
            self.idle.wait_until(take);
        } else {
            while !take() {
                arch::cpu_relax();
            }
        }
        self.done.store(false, Ordering::Relaxed);
        let mut r = self.with_dev(|v| v.submit(dir, sector, buf.pa, buf.bytes()));
        if r.is_ok() {
            if sleep {
                self.completion
                    .wait_until(|| self.done.load(Ordering::Acquire));
            } else {
                while !self.with_dev(|v| v.done()) {
                    arch::cpu_relax();
                }
                self.counters.polled.fetch_add(1, Ordering::Relaxed);
            }
            r = self.with_dev(|v| v.finish(dir, buf.pa, buf.bytes()));
        }
        self.busy.store(false, Ordering::Release);
        self.idle.wake_one();
        let c = &self.counters;
        if r.is_err() {
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
