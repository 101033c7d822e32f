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
//! * Up to [`MAX_INFLIGHT`] requests in flight: the queue has 16
//!   descriptors and a request uses three (header, data, status).  Each
//!   request slot has its own header and status in the driver's DMA page;
//!   the block layer owns the slot from submit to finish.  The crate pops
//!   completions in the device's order ([`VirtioBlk::peek_used`] names the
//!   next one), which need not be the submission order.
#![allow(unsafe_code)]

use crate::arch::{self, PHYS_OFFSET};
use crate::mem::{kmap, memory::buddy};
use core::ptr::NonNull;
use mm::physmem::buddy::AllocFlags;
use virtio_drivers::device::blk::{BlkReq, BlkResp, VirtIOBlk};
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

const PAGE: u64 = 4096;
/// Requests in flight at once: 16 descriptors, 3 per request.
pub const MAX_INFLIGHT: usize = 5;
/// Bytes of the DMA page per request slot: header at 0, status at 64.
const SLOT_BYTES: u64 = 128;
const _: () = assert!(MAX_INFLIGHT as u64 * SLOT_BYTES <= PAGE);

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
    dev: VirtIOBlk<KernelHal, MmioTransport<'static>>,
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
        let t = unsafe { MmioTransport::new(header, size as usize) }.ok()?;
        if t.device_type() != DeviceType::Block {
            return None;
        }
        let dev = VirtIOBlk::<KernelHal, _>::new(t).ok()?;
        let hdr_pa = buddy()
            .alloc(0, AllocFlags::KERNEL | AllocFlags::ZERO)
            .ok()?
            .pa();
        Some(VirtioBlk { dev, hdr_pa })
    }

    /// Size in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.dev.capacity()
    }

    pub fn enable_interrupts(&mut self, on: bool) {
        if on {
            self.dev.enable_interrupts();
        } else {
            self.dev.disable_interrupts();
        }
    }

    /// Acknowledge the device's interrupt; whether it had one pending.
    pub fn ack_interrupt(&mut self) -> bool {
        !self.dev.ack_interrupt().is_empty()
    }

    /// The token of the next completed request, if any.
    pub fn peek_used(&mut self) -> Option<u16> {
        self.dev.peek_used()
    }

    /// Slot `slot`'s request header (16 bytes) and status in the driver's
    /// own DMA page.
    fn hdr_ptrs(&self, slot: usize) -> (*mut BlkReq, *mut BlkResp) {
        assert!(slot < MAX_INFLIGHT);
        let p = self.hdr_pa + PHYS_OFFSET + slot as u64 * SLOT_BYTES;
        (p as *mut BlkReq, (p + 64) as *mut BlkResp)
    }

    /// The data buffer of a request, at its direct-map address.
    fn data(pa: u64, len: u64) -> &'static mut [u8] {
        // SAFETY: the block layer passes whole RAM pages the caller owns for
        // the request's duration (`PageRun`), covered by the direct map.
        unsafe { core::slice::from_raw_parts_mut((pa + PHYS_OFFSET) as *mut u8, len as usize) }
    }

    /// Queue one request in request slot `slot` (free: the block layer's
    /// bookkeeping) for `len` bytes at physical `pa` from/to `sector`;
    /// its token.
    pub fn submit(
        &mut self,
        slot: usize,
        dir: Dir,
        sector: u64,
        pa: u64,
        len: u64,
    ) -> Result<u16, ()> {
        let buf = Self::data(pa, len);
        let (req, resp) = self.hdr_ptrs(slot);
        // SAFETY: the header page is this driver's own zeroed page (valid
        // for both plain-data types; each slot's pair is its own and the
        // two do not overlap); the device uses the header, status and data
        // until `finish` pops the request, and nothing touches them before
        // (the block layer owns the slot and the caller the pages).
        let token = unsafe {
            let (req, resp) = (&mut *req, &mut *resp);
            match dir {
                Dir::Read => self.dev.read_blocks_nb(sector as usize, req, buf, resp),
                Dir::Write => self.dev.write_blocks_nb(sector as usize, req, buf, resp),
            }
        }
        .map_err(|_| ())?;
        Ok(token)
    }

    /// Pop the completed request `token` of slot `slot` (`peek_used` named
    /// it); its status.
    pub fn finish(
        &mut self,
        slot: usize,
        token: u16,
        dir: Dir,
        pa: u64,
        len: u64,
    ) -> Result<(), ()> {
        let buf = Self::data(pa, len);
        let (req, resp) = self.hdr_ptrs(slot);
        // SAFETY: the same header, status and data buffer as `submit` gave
        // for this token; the device is done with them (it returned the token).
        let r = unsafe {
            let (req, resp) = (&*req, &mut *resp);
            match dir {
                Dir::Read => self.dev.complete_read_blocks(token, req, buf, resp),
                Dir::Write => self.dev.complete_write_blocks(token, req, buf, resp),
            }
        };
        match r {
            Ok(()) => Ok(()),
            Err(_) => Err(()),
        }
    }
}
