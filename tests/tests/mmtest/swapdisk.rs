//! The in-memory swap device of the swap host tests: slots kept as page
//! copies, an area over them activated as type 0, and two switches: `fail`
//! turns every request (and every completion) into an I/O error, and
//! `deferred` leaves asynchronous writes in flight until [`MemDisk::complete`]
//! (the data is copied then, as a device's DMA would read it while the
//! request is in flight: the folio must stay stable meanwhile).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use mm::paging::PagingArch;
use mm::physmem::phys::PhysMem;
use mm::swap::{SwapArea, SwapIo, SwapIoError, SwapMap};

use super::Env;

pub struct MemDisk {
    pages: Mutex<Vec<Option<Box<[u8]>>>>,
    /// Asynchronous writes in flight: (slot, pa, pages).
    pending: Mutex<Vec<(u64, u64, u64)>>,
    pub fail: AtomicBool,
    pub deferred: AtomicBool,
}

impl MemDisk {
    fn copy_in(&self, mem: &dyn PhysMem, slot: u64, pa: u64, pages: u64) {
        let mut d = self.pages.lock().unwrap();
        for i in 0..pages {
            let mut b = vec![0u8; 4096].into_boxed_slice();
            mem.read(pa + i * 4096, &mut b);
            d[(slot + i) as usize] = Some(b);
        }
    }

    /// Writes in flight.
    pub fn in_flight(&self) -> usize {
        self.pending.lock().unwrap().len()
    }

    /// Completes every write in flight (with an error while `fail` is
    /// set); how many.
    pub fn complete<A: PagingArch>(&self, env: &Env<'_, A>) -> usize {
        let pending: Vec<_> = std::mem::take(&mut *self.pending.lock().unwrap());
        let ok = !self.fail.load(Ordering::Relaxed);
        for &(slot, pa, pages) in &pending {
            if ok {
                self.copy_in(env.mem, slot, pa, pages);
            }
            env.ctx.end_swap_write(pa, ok);
        }
        pending.len()
    }
}

impl SwapIo for MemDisk {
    fn write(&self, mem: &dyn PhysMem, slot: u64, pa: u64, pages: u64) -> Result<(), SwapIoError> {
        if self.fail.load(Ordering::Relaxed) {
            return Err(SwapIoError);
        }
        self.copy_in(mem, slot, pa, pages);
        Ok(())
    }
    fn read(&self, mem: &dyn PhysMem, slot: u64, pa: u64, pages: u64) -> Result<(), SwapIoError> {
        if self.fail.load(Ordering::Relaxed) {
            return Err(SwapIoError);
        }
        let d = self.pages.lock().unwrap();
        for i in 0..pages {
            let b = d[(slot + i) as usize].as_ref().expect("slot never written");
            mem.write(pa + i * 4096, b);
        }
        Ok(())
    }
    fn write_async(
        &self,
        mem: &dyn PhysMem,
        slot: u64,
        pa: u64,
        pages: u64,
    ) -> Result<bool, SwapIoError> {
        if !self.deferred.load(Ordering::Relaxed) {
            return self.write(mem, slot, pa, pages).map(|()| false);
        }
        self.pending.lock().unwrap().push((slot, pa, pages));
        Ok(true)
    }
}

/// Activates a `slots`-slot area on a new disk (writes complete at once
/// unless `deferred`) and returns the disk.
pub fn swapon<A: PagingArch>(env: &Env<'_, A>, slots: u64, deferred: bool) -> &'static MemDisk {
    let disk: &'static MemDisk = Box::leak(Box::new(MemDisk {
        pages: Mutex::new(vec![None; slots as usize]),
        pending: Mutex::new(Vec::new()),
        fail: AtomicBool::new(false),
        deferred: AtomicBool::new(deferred),
    }));
    let area = SwapArea {
        name: "/dev/test".into(),
        prio: -2,
        auto_prio: true,
        is_blockdev: true,
        map: SwapMap::new(slots, &[]),
        io: disk,
        closing: AtomicBool::new(false),
    };
    assert_eq!(env.ctx.swap.activate(area), Some(0));
    disk
}

/// Swap slots in use, all areas.
pub fn swap_used<A: PagingArch>(env: &Env<'_, A>) -> u64 {
    let (total, free) = env.ctx.swap.totals();
    total - free
}
