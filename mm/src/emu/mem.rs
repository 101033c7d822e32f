//! Host physical memory and a page-table page allocator over it.

use alloc::collections::BTreeSet;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;

use crate::addr::PAGE_SIZE;
use crate::physmem::phys::PhysMem;

/// "Physical" memory `[base, base + size)` backed by host words.  Entry
/// accesses are real atomics, so the emulated MMU's A/D updates and the
/// page-table code's compare-exchange loops interact as on hardware.  An
/// access outside the range panics: on the host that is a bug to catch.
pub struct EmuMem {
    base: u64,
    words: Vec<AtomicU64>,
}

impl EmuMem {
    pub fn new(base: u64, size: u64) -> Self {
        assert!(base.is_multiple_of(PAGE_SIZE) && size.is_multiple_of(PAGE_SIZE));
        let words = (0..size / 8).map(|_| AtomicU64::new(0)).collect();
        EmuMem { base, words }
    }
    pub fn base(&self) -> u64 {
        self.base
    }
    pub fn end(&self) -> u64 {
        self.base + 8 * self.words.len() as u64
    }
    fn get_byte(&self, pa: u64) -> u8 {
        (self.word(pa & !7).load(Ordering::Relaxed) >> (8 * (pa & 7))) as u8
    }
    fn set_byte(&self, pa: u64, b: u8) {
        let sh = 8 * (pa & 7);
        let w = self.word(pa & !7);
        let mut old = w.load(Ordering::Relaxed);
        loop {
            let new = (old & !(0xff << sh)) | ((b as u64) << sh);
            match w.compare_exchange(old, new, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return,
                Err(cur) => old = cur,
            }
        }
    }
}

impl PhysMem for EmuMem {
    fn word(&self, pa: u64) -> &AtomicU64 {
        assert!(
            pa >= self.base && pa < self.end(),
            "physical access {pa:#x} outside emulated RAM"
        );
        &self.words[((pa - self.base) / 8) as usize]
    }
    fn zero(&self, pa: u64, len: u64) {
        self.fill(pa, len, 0)
    }
    fn copy(&self, dst: u64, src: u64, len: u64) {
        for i in 0..len {
            self.set_byte(dst + i, self.get_byte(src + i));
        }
    }
    fn fill(&self, pa: u64, len: u64, byte: u8) {
        if pa.is_multiple_of(8) && len.is_multiple_of(8) {
            let w = u64::from_ne_bytes([byte; 8]);
            for i in (0..len).step_by(8) {
                self.word(pa + i).store(w, Ordering::Relaxed);
            }
        } else {
            for i in 0..len {
                self.set_byte(pa + i, byte);
            }
        }
    }
    fn read(&self, pa: u64, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.get_byte(pa + i as u64);
        }
    }
    fn write(&self, pa: u64, buf: &[u8]) {
        for (i, b) in buf.iter().enumerate() {
            self.set_byte(pa + i as u64, *b);
        }
    }
    fn is_zero(&self, pa: u64, len: u64) -> bool {
        (0..len).all(|i| self.get_byte(pa + i) == 0)
    }
}

struct PoolState {
    next: u64,
    free: Vec<u64>,
    live: BTreeSet<u64>,
    limit: Option<usize>,
}

/// Bookkeeping of a page-table page pool `[start, end)`.  It tracks every
/// live page, so a double free or a foreign free panics, and tests compare
/// [`PtPool::in_use`] with a baseline to find leaks.  It holds no memory
/// reference (the owner passes it), so it can live next to the memory.
pub struct PtPool {
    end: u64,
    st: Mutex<PoolState>,
}

impl PtPool {
    pub fn new(start: u64, end: u64) -> Self {
        PtPool {
            end,
            st: Mutex::new(PoolState {
                next: start,
                free: Vec::new(),
                live: BTreeSet::new(),
                limit: None,
            }),
        }
    }
    /// Pages currently allocated.
    pub fn in_use(&self) -> usize {
        self.st.lock().live.len()
    }
    /// True if `pa` is a live page-table page.
    pub fn is_live(&self, pa: u64) -> bool {
        self.st.lock().live.contains(&pa)
    }
    /// Fail allocations once `n` pages are in use (`None`: no limit).
    pub fn set_limit(&self, n: Option<usize>) {
        self.st.lock().limit = n;
    }
    /// A zeroed page.
    pub fn alloc(&self, mem: &dyn PhysMem) -> Option<u64> {
        let mut st = self.st.lock();
        if st.limit.is_some_and(|l| st.live.len() >= l) {
            return None;
        }
        let pa = match st.free.pop() {
            Some(pa) => pa,
            None if st.next < self.end => {
                st.next += PAGE_SIZE;
                st.next - PAGE_SIZE
            }
            None => return None,
        };
        st.live.insert(pa);
        drop(st);
        mem.zero(pa, PAGE_SIZE);
        Some(pa)
    }
    /// Give back a page; it is poisoned so that a walker still using it
    /// would read garbage rather than the old entries.
    pub fn free(&self, mem: &dyn PhysMem, pa: u64) {
        let mut st = self.st.lock();
        assert!(
            st.live.remove(&pa),
            "free_pt({pa:#x}): not a live page-table page"
        );
        mem.fill(pa, PAGE_SIZE, 0xa5);
        st.free.push(pa);
    }
}
