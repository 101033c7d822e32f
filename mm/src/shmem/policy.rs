//! The shmem huge-page policy: `/sys/kernel/mm/transparent_hugepage/
//! shmem_enabled` and the per-size `hugepages-<size>kB/shmem_enabled`
//! (Linux 6.12's `shmem_huge` and `huge_shmem_orders_*`), and the rule
//! that turns them into folio orders for a fault in anonymous shmem
//! (`shmem_allowable_huge_orders`).
//!
//! Both are packed into one atomic word, so a fault reads a consistent
//! snapshot with one load: bits 0..3 the top-level mode, then 3 bits per
//! order.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::abi::errno::Errno;
use crate::abi::sysfs_choice;
use crate::addr::PMD_ORDER;

sysfs_choice! {
    /// The top-level `shmem_enabled` mode.
    pub enum ShmemHuge {
        Always => "always",
        WithinSize => "within_size",
        Advise => "advise",
        Never => "never",
        /// Off everywhere, per-size settings included.
        Deny => "deny",
        /// PMD size for every mount; for anonymous shmem only the per-size
        /// `inherit` orders count.
        Force => "force",
    }
}

sysfs_choice! {
    /// A per-size `shmem_enabled` setting.
    pub enum ShmemOrderMode {
        Always => "always",
        Inherit => "inherit",
        WithinSize => "within_size",
        Advise => "advise",
        Never => "never",
    }
}

/// Lowest order with a per-size shmem knob (`hugepages-8kB`, as Linux
/// 6.12: shmem may use order 1, anonymous memory never).
pub const SHMEM_MIN_ORDER: u32 = 1;

const TOP_BITS: u32 = 3;
const FIELD: u32 = 3;

const fn default_word() -> u64 {
    let mut w = ShmemHuge::Never as u64;
    let mut o = 0;
    while o <= PMD_ORDER {
        let m = if o == PMD_ORDER {
            ShmemOrderMode::Inherit
        } else {
            ShmemOrderMode::Never
        };
        w |= (m as u64) << (TOP_BITS + FIELD * o);
        o += 1;
    }
    w
}

/// The shmem knobs (see the module doc).
#[derive(Debug)]
pub struct ShmemPolicy {
    word: AtomicU64,
    /// A `thp_shmem=` boot parameter was applied (later ones add to it).
    boot_configured: core::sync::atomic::AtomicBool,
}

impl Default for ShmemPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl ShmemPolicy {
    /// Linux's defaults: top level `never`, PMD size `inherit`, every
    /// other size `never`.
    pub const fn new() -> Self {
        ShmemPolicy {
            word: AtomicU64::new(default_word()),
            boot_configured: core::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Back to the defaults.
    pub fn reset(&self) {
        self.word.store(default_word(), Ordering::Release);
        self.boot_configured.store(false, Ordering::Release);
    }

    /// Whether a `thp_shmem=` boot parameter was applied.
    pub fn boot_configured(&self) -> bool {
        self.boot_configured.load(Ordering::Acquire)
    }

    /// Every order's setting (index = order).
    pub fn order_modes(&self) -> [ShmemOrderMode; 10] {
        let w = self.word.load(Ordering::Acquire);
        core::array::from_fn(|o| order_of(w, o as u32))
    }

    /// Set every order's setting at once (`thp_shmem=`; no `force` check,
    /// as Linux's boot parameter).
    pub fn set_boot_order_modes(&self, modes: &[ShmemOrderMode; 10]) {
        let _ = self.update(|w| {
            let mut w = w;
            for (o, m) in modes.iter().enumerate() {
                let shift = TOP_BITS + FIELD * o as u32;
                w = (w & !(0b111 << shift)) | (*m as u64) << shift;
            }
            Ok(w)
        });
        self.boot_configured.store(true, Ordering::Release);
    }

    /// The top-level mode.
    pub fn huge(&self) -> ShmemHuge {
        top_of(self.word.load(Ordering::Acquire))
    }

    /// The per-size setting of `order`.
    pub fn order_mode(&self, order: u32) -> ShmemOrderMode {
        order_of(self.word.load(Ordering::Acquire), order)
    }

    /// Write the top level (Linux's `shmem_enabled_store`): `force` is
    /// EINVAL unless the per-size `inherit` set is exactly the PMD size.
    pub fn set_huge(&self, m: ShmemHuge) -> Result<(), Errno> {
        self.update(|w| {
            if m == ShmemHuge::Force && orders_with(w, ShmemOrderMode::Inherit) != 1 << PMD_ORDER {
                return Err(Errno::EINVAL);
            }
            Ok((w & !((1 << TOP_BITS) - 1)) | m as u64)
        })
    }

    /// Write a per-size setting (Linux's `thpsize_shmem_enabled_store`):
    /// `inherit` for a non-PMD size while the top level is `force` is
    /// EINVAL.
    pub fn set_order_mode(&self, order: u32, m: ShmemOrderMode) -> Result<(), Errno> {
        if order > PMD_ORDER {
            return Err(Errno::EINVAL);
        }
        self.update(|w| {
            if m == ShmemOrderMode::Inherit && order != PMD_ORDER && top_of(w) == ShmemHuge::Force {
                return Err(Errno::EINVAL);
            }
            let shift = TOP_BITS + FIELD * order;
            Ok((w & !(0b111 << shift)) | (m as u64) << shift)
        })
    }

    fn update(&self, f: impl Fn(u64) -> Result<u64, Errno>) -> Result<(), Errno> {
        let mut cur = self.word.load(Ordering::Acquire);
        loop {
            let new = f(cur)?;
            match self
                .word
                .compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(w) => cur = w,
            }
        }
    }

    /// Orders a fault at page `index` of an anonymous shmem object of
    /// `size_pages` pages may use in a VMA with `hugepage`/`nohugepage`
    /// hints (Linux 6.12's `shmem_allowable_huge_orders` for anonymous
    /// shmem, with the stable fix's per-order `within_size` rounding): the
    /// union of the `always` orders, the `within_size` orders whose
    /// aligned block ending past `index` lies within the size, the
    /// `advise` orders under `MADV_HUGEPAGE`, and the `inherit` orders if
    /// the top level says yes (its `within_size` checked at PMD size).
    /// `deny` or `VM_NOHUGEPAGE` allow nothing; `force` only `inherit`.
    pub fn allowable_orders(
        &self,
        hugepage: bool,
        nohugepage: bool,
        index: u64,
        size_pages: u64,
    ) -> u32 {
        self.anon_orders(hugepage, nohugepage, index, size_pages, false)
    }

    /// The orders a collapse in a shmem VMA may produce (Linux 6.12's
    /// `shmem_allowable_huge_orders` as a collapse calls it, at the VMA's
    /// first page offset `index`): khugepaged follows the knobs as a fault
    /// does; `MADV_COLLAPSE` (`force`) treats the top level as on unless it
    /// is `deny`, so a tmpfs file gets the PMD size and anonymous shmem
    /// its per-size `inherit` orders besides the `always`, fitting
    /// `within_size` and (with `MADV_HUGEPAGE`) `advise` ones.
    /// `VM_NOHUGEPAGE` (or the prctl) allows nothing.
    pub fn collapse_orders(
        &self,
        mount: Option<ShmemHuge>,
        hugepage: bool,
        nohugepage: bool,
        index: u64,
        size_pages: u64,
        force: bool,
    ) -> u32 {
        match mount {
            None => self.anon_orders(hugepage, nohugepage, index, size_pages, force),
            Some(_) if nohugepage || self.huge() == ShmemHuge::Deny => 0,
            Some(_) if force => 1 << PMD_ORDER,
            Some(m) => self.mount_orders(m, hugepage, nohugepage, index, size_pages),
        }
    }

    fn anon_orders(
        &self,
        hugepage: bool,
        nohugepage: bool,
        index: u64,
        size_pages: u64,
        force: bool,
    ) -> u32 {
        let w = self.word.load(Ordering::Acquire);
        let top = top_of(w);
        if nohugepage || top == ShmemHuge::Deny {
            return 0;
        }
        // One pass over the word (this runs on every shmem fault).
        let masks = order_masks(w);
        let inherit = masks[ShmemOrderMode::Inherit as usize];
        if top == ShmemHuge::Force {
            return inherit;
        }
        let within = |o: u32| (index + 1).next_multiple_of(1 << o) <= size_pages;
        let mut mask = masks[ShmemOrderMode::Always as usize];
        let ws = masks[ShmemOrderMode::WithinSize as usize];
        for o in 0..=PMD_ORDER {
            if ws & (1 << o) != 0 && within(o) {
                mask |= 1 << o;
            }
        }
        if hugepage {
            mask |= masks[ShmemOrderMode::Advise as usize];
        }
        let inherit_on = force
            || match top {
                ShmemHuge::Always => true,
                ShmemHuge::WithinSize => within(PMD_ORDER),
                ShmemHuge::Advise => hugepage,
                _ => false,
            };
        if inherit_on {
            mask |= inherit;
        }
        mask
    }

    /// Orders a fault at page `index` of a file of `size_pages` pages on
    /// a tmpfs mounted with `huge=mount` may use (Linux 6.12's
    /// `shmem_huge_global_enabled` for a file that is not anonymous
    /// shmem: PMD size or nothing).  The top level's `deny` and `force`
    /// override every mount; `VM_NOHUGEPAGE` allows nothing.
    pub fn mount_orders(
        &self,
        mount: ShmemHuge,
        hugepage: bool,
        nohugepage: bool,
        index: u64,
        size_pages: u64,
    ) -> u32 {
        let pmd = 1u32 << PMD_ORDER;
        match self.huge() {
            ShmemHuge::Deny => return 0,
            ShmemHuge::Force => return pmd,
            _ => {}
        }
        if nohugepage {
            return 0;
        }
        let on = match mount {
            ShmemHuge::Always => true,
            ShmemHuge::WithinSize => (index + 1).next_multiple_of(1 << PMD_ORDER) <= size_pages,
            ShmemHuge::Advise => hugepage,
            _ => false,
        };
        if on { pmd } else { 0 }
    }
}

fn top_of(w: u64) -> ShmemHuge {
    ShmemHuge::ALL
        .get((w & ((1 << TOP_BITS) - 1)) as usize)
        .copied()
        .unwrap_or(ShmemHuge::Never)
}

fn order_of(w: u64, order: u32) -> ShmemOrderMode {
    if !(SHMEM_MIN_ORDER..=PMD_ORDER).contains(&order) {
        return ShmemOrderMode::Never;
    }
    let c = (w >> (TOP_BITS + FIELD * order)) & 0b111;
    ShmemOrderMode::ALL
        .get(c as usize)
        .copied()
        .unwrap_or(ShmemOrderMode::Never)
}

fn orders_with(w: u64, m: ShmemOrderMode) -> u32 {
    order_masks(w)[m as usize]
}

/// The orders of each per-size setting, indexed by `ShmemOrderMode as
/// usize`.
fn order_masks(w: u64) -> [u32; ShmemOrderMode::WORDS.len()] {
    let mut m = [0u32; ShmemOrderMode::WORDS.len()];
    for o in SHMEM_MIN_ORDER..=PMD_ORDER {
        m[order_of(w, o) as usize] |= 1 << o;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_linux() {
        let p = ShmemPolicy::new();
        assert_eq!(p.huge(), ShmemHuge::Never);
        assert_eq!(p.order_mode(PMD_ORDER), ShmemOrderMode::Inherit);
        assert_eq!(p.order_mode(4), ShmemOrderMode::Never);
        assert_eq!(p.allowable_orders(true, false, 0, 1 << 20), 0);
    }

    #[test]
    fn modes_combine_as_linux() {
        let p = ShmemPolicy::new();
        p.set_order_mode(4, ShmemOrderMode::Always).unwrap();
        assert_eq!(p.allowable_orders(false, false, 0, 16), 1 << 4);
        assert_eq!(p.allowable_orders(false, true, 0, 16), 0);
        p.set_huge(ShmemHuge::Advise).unwrap();
        assert_eq!(p.allowable_orders(false, false, 0, 1024), 1 << 4);
        assert_eq!(p.allowable_orders(true, false, 0, 1024), 1 << 4 | 1 << 9);
        p.set_order_mode(3, ShmemOrderMode::WithinSize).unwrap();
        // Index 9 of a 16-page object: the 8-page block 8..16 fits.
        assert_eq!(p.allowable_orders(false, false, 9, 16), 1 << 4 | 1 << 3);
        assert_eq!(p.allowable_orders(false, false, 9, 15), 1 << 4);
        p.set_huge(ShmemHuge::Deny).unwrap();
        assert_eq!(p.allowable_orders(true, false, 0, 1024), 0);
    }

    #[test]
    fn force_rules() {
        let p = ShmemPolicy::new();
        p.set_order_mode(4, ShmemOrderMode::Inherit).unwrap();
        assert_eq!(p.set_huge(ShmemHuge::Force), Err(Errno::EINVAL));
        p.set_order_mode(4, ShmemOrderMode::Always).unwrap();
        p.set_huge(ShmemHuge::Force).unwrap();
        assert_eq!(
            p.set_order_mode(5, ShmemOrderMode::Inherit),
            Err(Errno::EINVAL)
        );
        assert_eq!(p.allowable_orders(false, false, 0, 1024), 1 << 9);
    }
}
