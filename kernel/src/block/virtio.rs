//! The virtio block driver under [`super`]: the `virtio-drivers` crate
//! (rcore-os) on the virtio-mmio transport, with this kernel's DMA memory
//! and interrupt delivery.
//!
//! `unsafe` is allowed here because the crate's interface is: its `Hal`
//! trait (DMA memory, address translation) is an unsafe trait, building a
//! transport from a register window is unsafe, and so are the
//! non-blocking requests, whose buffers the device keeps using after the
//! call returns.  Each block says what makes it sound.
//!
//! * DMA memory ([`KernelHal`]): frames from the buddy allocator, reached
//!   through the direct map; the device is told their physical address.
//!   Data buffers passed to requests are physical page runs already
//!   ([`super::PageRun`]), shared by their direct-map address.
//! * Registers: mapped uncached through `kmap::map_device`.
//! * The queue is the crate's [`VirtQueue`] driven directly (its
//!   `VirtIOBlk` moves one buffer per request on a 16-entry queue): a
//!   request is a header, up to [`MAX_SEGS`] data buffers (scatter-gather,
//!   so the block layer can merge writes of folios in consecutive slots into
//!   one request) and a status, one descriptor each, on a queue of
//!   [`QUEUE_SIZE`] descriptors.  Each of the [`MAX_INFLIGHT`] request
//!   slots has its own header and status in the driver's DMA page; the
//!   block layer owns the slot from submit to finish.  Completions pop in
//!   the device's order ([`VirtioBlk::peek_used`] names the next one),
//!   which need not be the submission order.
#![allow(unsafe_code)]

use crate::arch::{self, PHYS_OFFSET};
use crate::mem::{kmap, memory::buddy};
use core::ptr::NonNull;
use mm::physmem::buddy::AllocFlags;
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

const PAGE: u64 = 4096;
/// Descriptors in the request queue: all that QEMU's virtio-blk offers
/// (256), so seven merged 32-segment writes fit at once (with 128 only
/// three did, and `MADV_PAGEOUT` of 4K folios slept for a free slot).
pub const QUEUE_SIZE: usize = 256;
/// Request slots: requests in flight at once, at most.
pub const MAX_INFLIGHT: usize = 16;
/// Data buffers (physically contiguous runs) per request, at most; the
/// device's `seg_max` may lower it ([`VirtioBlk::max_segs`]).
pub const MAX_SEGS: usize = 32;
/// Bytes of the DMA page per request slot: header at 0, status at 64.
const SLOT_BYTES: u64 = 128;
const _: () = assert!(MAX_INFLIGHT as u64 * SLOT_BYTES <= PAGE);
const _: () = assert!(MAX_SEGS + 2 <= QUEUE_SIZE);

/// `VIRTIO_BLK_T_IN`, `VIRTIO_BLK_T_OUT`.
const T_IN: u32 = 0;
const T_OUT: u32 = 1;

bitflags::bitflags! {
    /// The feature bits this driver negotiates.
    #[derive(Clone, Copy, Debug)]
    struct Features: u64 {
        /// `seg_max` in the configuration is valid.
        const SEG_MAX = 1 << 2;
        const VERSION_1 = 1 << 32;
    }
}

/// Configuration space offsets (`struct virtio_blk_config`).
const CFG_CAPACITY: usize = 0;
const CFG_SEG_MAX: usize = 12;

/// The request header (`struct virtio_blk_outhdr`).
#[repr(C)]
struct ReqHdr {
    type_: u32,
    reserved: u32,
    sector: u64,
}

/// A physically contiguous data buffer of a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seg {
    pub pa: u64,
    pub len: u64,
}

/// `virtio-drivers`' view of this kernel's memory.
pub struct KernelHal;

fn order_of(pages: usize) -> u32 {
    pages.next_power_of_two().trailing_zeros()
}

/// Physical address of kernel memory `[va, va + len)`: the direct map by
/// arithmetic, anything else (a thread stack in the kernel map region) by
/// walking the live tables; it must be physically contiguous.
fn virt_to_phys(va: u64, len: u64) -> u64 {
    let dm = DIRECT_MAP_RANGE.call_once(|| arch::kernel_layout().direct_map);
    if dm.contains(&va) && len <= dm.end - va {
        return va - PHYS_OFFSET;
    }
    let t = arch::kernel_translate(va).expect("virtio: buffer not mapped");
    let mut page = va & !(PAGE - 1);
    while page + PAGE < va + len {
        page += PAGE;
        let n = arch::kernel_translate(page).expect("virtio: buffer not mapped");
        assert_eq!(
            n.pa,
            t.pa + (page - va),
            "virtio: buffer not physically contiguous"
        );
    }
    t.pa
}

static DIRECT_MAP_RANGE: spin::Once<core::ops::Range<u64>> = spin::Once::new();

// SAFETY: `dma_alloc` returns zeroed, page-aligned frames that belong to
// nobody else until `dma_dealloc` (the buddy allocator's allocation), at
// their direct-map address, which is valid for reads and writes; `share`
// returns the physical address of the very memory passed (see
// `virt_to_phys`), and no IOMMU or bounce buffer is involved.
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _dir: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        match buddy().alloc(order_of(pages), AllocFlags::KERNEL | AllocFlags::ZERO) {
            Ok(f) => (
                f.pa(),
                NonNull::new((f.pa() + PHYS_OFFSET) as *mut u8).expect("direct map"),
            ),
            Err(_) => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        buddy().free_pages(paddr / PAGE, order_of(pages));
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        // Only the PCI transport asks (for BARs); it is not used yet.
        let va = kmap::map_device(paddr, size as u64).expect("virtio: cannot map a BAR");
        NonNull::new(va as *mut u8).expect("kmap address")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _dir: BufferDirection) -> PhysAddr {
        virt_to_phys(buffer.as_ptr() as *mut u8 as u64, buffer.len() as u64)
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _dir: BufferDirection) {}
}

/// One virtio block device on a virtio-mmio transport.
pub struct VirtioBlk {
    transport: MmioTransport<'static>,
    queue: VirtQueue<KernelHal, QUEUE_SIZE>,
    capacity: u64,
    /// Data buffers per request, at most.
    max_segs: usize,
    /// The request headers and statuses, one pair per request slot, in a
    /// page of their own (physical address; never on a stack, which is not
    /// in the direct map).  Kept for the kernel's lifetime, as the device is.
    hdr_pa: u64,
}

// SAFETY: the raw pointers inside (register window, DMA memory) are only
// used under the block layer's device lock, from any CPU.
unsafe impl Send for VirtioBlk {}

/// A request: which way and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Read,
    Write,
}

impl VirtioBlk {
    /// Drive the virtio-mmio window at `[pa, pa + size)` if a block device
    /// sits there; `None` for an empty transport or another device type.
    pub fn probe(pa: u64, size: u64) -> Option<VirtioBlk> {
        let va = kmap::map_device(pa, size).ok()?;
        let header = NonNull::new(va as *mut VirtIOHeader)?;
        // SAFETY: `va` maps the whole `size`-byte register window uncached
        // for the kernel's lifetime (kmap never unmaps device windows), and
        // this is the only transport made for it (the caller probes each
        // firmware-described window once).
        let mut t = unsafe { MmioTransport::new(header, size as usize) }.ok()?;
        if t.device_type() != DeviceType::Block {
            return None;
        }
        let features = t.begin_init(Features::SEG_MAX | Features::VERSION_1);
        let cap = |i: usize| t.read_config_space::<u32>(CFG_CAPACITY + 4 * i);
        let capacity = t
            .read_consistent(|| Ok(u64::from(cap(0)?) | (u64::from(cap(1)?) << 32)))
            .ok()?;
        // Without `SEG_MAX` one buffer per request, as Linux's virtio_blk.
        let seg_max = if features.contains(Features::SEG_MAX) {
            t.read_config_space::<u32>(CFG_SEG_MAX).unwrap_or(1).max(1)
        } else {
            1
        };
        let max = t.max_queue_size(0);
        let queue = match VirtQueue::new(&mut t, 0, false, false) {
            Ok(q) => q,
            Err(e) => {
                crate::warn!(
                    "block: virtio-blk queue of {QUEUE_SIZE} descriptors refused \
                     (the device offers {max}): {e:?}; no disk"
                );
                return None;
            }
        };
        t.finish_init();
        let hdr_pa = buddy()
            .alloc(0, AllocFlags::KERNEL | AllocFlags::ZERO)
            .ok()?
            .pa();
        Some(VirtioBlk {
            transport: t,
            queue,
            capacity,
            max_segs: (seg_max as usize).min(MAX_SEGS),
            hdr_pa,
        })
    }

    /// Size in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Data buffers one request may carry.
    pub fn max_segs(&self) -> usize {
        self.max_segs
    }

    pub fn enable_interrupts(&mut self, on: bool) {
        self.queue.set_dev_notify(on);
    }

    /// Acknowledge the device's interrupt; whether it had one pending.
    pub fn ack_interrupt(&mut self) -> bool {
        !self.transport.ack_interrupt().is_empty()
    }

    /// The token of the next completed request, if any.
    pub fn peek_used(&mut self) -> Option<u16> {
        self.queue.peek_used()
    }

    /// Whether a request of `segs` data buffers fits in the queue now.
    pub fn has_room(&self, segs: usize) -> bool {
        self.queue.available_desc() >= segs + 2
    }

    /// Slot `slot`'s request header (16 bytes at 0) and status byte (at
    /// 64) in the driver's own DMA page: direct-map address.
    fn hdr_va(&self, slot: usize) -> u64 {
        assert!(slot < MAX_INFLIGHT);
        self.hdr_pa + PHYS_OFFSET + slot as u64 * SLOT_BYTES
    }

    /// The data buffer of a request, at its direct-map address.
    fn data(s: Seg) -> &'static mut [u8] {
        // SAFETY: the block layer passes whole RAM pages the caller owns for
        // the request's duration (`PageRun`), covered by the direct map.
        unsafe { core::slice::from_raw_parts_mut((s.pa + PHYS_OFFSET) as *mut u8, s.len as usize) }
    }

    /// Adds (with `add`) or pops the chain of slot `slot`'s request: the
    /// header, the data buffers `segs` (device-readable for a write,
    /// device-writable for a read) and the status.
    fn with_chain<R>(
        &mut self,
        slot: usize,
        dir: Dir,
        segs: &[Seg],
        f: impl for<'x> FnOnce(
            &mut VirtQueue<KernelHal, QUEUE_SIZE>,
            &'x [&'x [u8]],
            &'x mut [&'x mut [u8]],
        ) -> R,
    ) -> R {
        let p = self.hdr_va(slot);
        // SAFETY: each slot's 128 bytes of the driver's own page are used
        // only for that slot's request (header at 0, status at 64, not
        // overlapping), by the one request the block layer has in the slot.
        let (hdr, status) = unsafe {
            (
                core::slice::from_raw_parts(p as *const u8, size_of::<ReqHdr>()),
                core::slice::from_raw_parts_mut((p + 64) as *mut u8, 1),
            )
        };
        let mut ins: [&[u8]; MAX_SEGS + 1] = [&[]; MAX_SEGS + 1];
        let mut outs: [&mut [u8]; MAX_SEGS + 1] = core::array::from_fn(|_| Default::default());
        ins[0] = hdr;
        let (ni, no) = match dir {
            Dir::Write => {
                for (i, s) in segs.iter().enumerate() {
                    ins[1 + i] = Self::data(*s);
                }
                outs[0] = status;
                (1 + segs.len(), 1)
            }
            Dir::Read => {
                for (i, s) in segs.iter().enumerate() {
                    outs[i] = Self::data(*s);
                }
                outs[segs.len()] = status;
                (1, segs.len() + 1)
            }
        };
        f(&mut self.queue, &ins[..ni], &mut outs[..no])
    }

    /// Queue one request in request slot `slot` (free: the block layer's
    /// bookkeeping) moving the data buffers `segs`, in order, from/to the
    /// sectors from `sector` on, and notify the device; its token.  The
    /// caller checked [`Self::has_room`].
    pub fn submit(&mut self, slot: usize, dir: Dir, sector: u64, segs: &[Seg]) -> Result<u16, ()> {
        if segs.is_empty() || segs.len() > self.max_segs {
            return Err(());
        }
        let p = self.hdr_va(slot);
        let h = ReqHdr {
            type_: if dir == Dir::Write { T_OUT } else { T_IN },
            reserved: 0,
            sector,
        };
        // SAFETY: this slot's header and status bytes (see `hdr_va`), the
        // header 8-byte aligned; the device does not own them before `add`.
        unsafe {
            (p as *mut ReqHdr).write_volatile(h);
            ((p + 64) as *mut u8).write_volatile(0xff);
        }
        // SAFETY: the header, status and data buffers stay untouched by
        // anyone but the device until `finish` pops the request (the block
        // layer owns the slot, the caller the pages).
        let token = self
            .with_chain(slot, dir, segs, |q, ins, outs| unsafe { q.add(ins, outs) })
            .map_err(|_| ())?;
        if self.queue.should_notify() {
            self.transport.notify(0);
        }
        Ok(token)
    }

    /// Pop the completed request `token` of slot `slot` (`peek_used` named
    /// it, `segs` as submitted); its status.
    pub fn finish(&mut self, slot: usize, token: u16, dir: Dir, segs: &[Seg]) -> Result<(), ()> {
        // SAFETY: the same header, status and data buffers as `submit` gave
        // for this token; the device is done with them (it returned the token).
        self.with_chain(slot, dir, segs, |q, ins, outs| unsafe {
            q.pop_used(token, ins, outs)
        })
        .map_err(|_| ())?;
        // SAFETY: the status byte the device wrote before returning the token.
        match unsafe { ((self.hdr_va(slot) + 64) as *const u8).read_volatile() } {
            0 => Ok(()),
            _ => Err(()),
        }
    }
}
