//! Hardware ASIDs for user address spaces: a generation-based allocator in
//! the manner of Linux's arm64 one (same semantics, written afresh).
//!
//! # Keys and context ids
//! The kernel names an address space by a small stable *key* (the `Mm`'s
//! id from `mm`'s pool, below [`KEYS`]); `switch_user_root` and the flush
//! functions take that key.  The hardware ASID lives here: each key has a
//! 64-bit *context id* in [`CONTEXT`], `generation << 16 | asid` (0 = none
//! yet).  A context id is valid while its generation is the current one
//! ([`GENERATION`]).  Within one generation a hardware ASID belongs to at
//! most one address space (the bitmap), so it can stay in every CPU's TLB
//! across switches without flushing.
//!
//! # Rollover
//! When the bitmap is full (no free ASID in `1..=max`), the generation is
//! bumped and the bitmap rebuilt from the ASIDs still *active* on some CPU
//! ([`ACTIVE`], set at every switch-in) or, for a CPU that has not switched
//! since the previous rollover, its *reserved* one: an address space
//! running somewhere keeps its ASID in the new generation (its context id
//! is rewritten with the new generation when it is next switched in).
//! Every CPU is marked flush-pending ([`FLUSH_PENDING`]) and empties its
//! whole local TLB (`tlbi vmalle1`) in its next slow-path switch, before it
//! loads any user ASID: entries of an ASID freed by the rollover can only
//! survive in a TLB until then.  A rollover zeroes every `ACTIVE` slot, so
//! every CPU's next switch takes the slow path (which does that flush).
//!
//! # Fast path and its race with a rollover
//! A switch-in whose context id has the current generation only swaps the
//! CPU's `ACTIVE` slot with a compare-exchange from its previous non-zero
//! value.  A rollover `swap`s every slot to 0 under the lock.  By coherence
//! on that one location either the compare-exchange comes first (then the
//! rollover finds the context id there and reserves its ASID) or it fails
//! (0 ≠ the old value) and the switch takes the slow path.  The generation
//! read by the fast path may be stale; that only sends it to the slow path
//! or, as just argued, is covered by the reservation.
//!
//! # Flushes and their race with a switch-in / rollover
//! A flush of key `k` ([`flush_asid`]) TLBIs the hardware ASID of
//! `CONTEXT[k]`, *whatever its generation*: a stale generation does not
//! mean the space is not running, since a CPU that switched to it before a
//! rollover (and has not switched since) still translates with that ASID,
//! which the rollover reserved for it.  Skipping the TLBI when the
//! generation is stale would leave that CPU with the old translation; a
//! TLBI of an ASID that meanwhile went to another space is harmless.  The
//! remaining race: the flusher reads the old context id while another CPU
//! gives the key a new ASID in the slow path and starts walking the tables
//! with it.  Both sides have a full barrier between their store and their
//! load: the flusher `dsb ish` between its page-table stores and its load
//! of `CONTEXT[k]`; the switcher `dsb ish` between its store of
//! `CONTEXT[k]` and loading TTBR0 (its first table walk).  That is the
//! store-buffering pattern: at least one side sees the other's store, so
//! either the flusher TLBIs the new ASID or the walker reads the new
//! table entries (and caches nothing stale under the new ASID).  A
//! context id of 0 means the key never ran: nothing to flush.
//!
//! # Key reuse
//! `mm` recycles keys.  A key loaded with a different root than last time
//! ([`KEY_ROOT`]) belongs to a new address space and gets a new context id
//! (the old one's ASID stays taken until the next rollover, as Linux never
//! frees ASIDs early); a new space whose root page happens to equal the
//! old one's keeps the old ASID, whose entries the old space's teardown
//! flushed (as before this allocator).  An old space's key is never
//! reused while a thread still runs in it.
//!
//! # QEMU
//! QEMU's TCG flushes a CPU's whole software TLB whenever TTBR0's ASID
//! changes, and the reservation means one CPU never loads one ASID for two
//! spaces back to back; so a missing rollover flush cannot show as a
//! wrong translation there.  [`FLUSHED_GEN`] records, per CPU, the
//! generation its last full flush covered; a user ASID loaded from a later
//! generation counts in [`unflushed_loads`] (always 0 when correct), which
//! the kernel's rollover self-test checks.
use crate::regs::tlbi_vmalle1;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use mm::cpu::MAX_CPUS;
use spin::Mutex;

/// Keys (`mm`'s address-space ids) this table can name: `mm`'s default
/// pool hands out `1..=4095`.
pub const KEYS: usize = 4096;
const _: () = assert!((mm::aspace::ctx::DEFAULT_MAX_ASID as usize) < KEYS);

const ASID_MASK: u64 = 0xffff;
const GEN_SHIFT: u32 = 16;
/// The first generation (and the step between generations).
const GEN_ONE: u64 = 1 << GEN_SHIFT;
/// Bitmap words covering every 16-bit ASID.
const MAP_WORDS: usize = 1 << (16 - 6);

/// The current generation (high bits of a context id; the low 16 are 0).
/// Written only under [`ALLOC`]; read locklessly by the fast path.
static GENERATION: AtomicU64 = AtomicU64::new(GEN_ONE);
/// Each key's context id (0 = none yet).  Written only under [`ALLOC`].
static CONTEXT: [AtomicU64; KEYS] = [const { AtomicU64::new(0) }; KEYS];
/// The root each key was last loaded with (written under [`ALLOC`] after
/// `CONTEXT`, with release; the fast path reads it with acquire).
static KEY_ROOT: [AtomicU64; KEYS] = [const { AtomicU64::new(0) }; KEYS];
/// Each CPU's context id in use (0 after a rollover until the CPU's next
/// switch).  Set by its own CPU; swapped to 0 by a rollover (any CPU).
static ACTIVE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Set by a rollover for every CPU; cleared (with the flush) by the CPU
/// itself under [`ALLOC`].
static FLUSH_PENDING: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// The generation each CPU's last full TLB flush covered (boot flushes
/// every CPU's TLB in the first generation).  Only for the check above.
static FLUSHED_GEN: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(GEN_ONE) }; MAX_CPUS];

static ROLLOVERS: AtomicU64 = AtomicU64::new(0);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static UNFLUSHED_LOADS: AtomicU64 = AtomicU64::new(0);

/// The allocator's state.
struct Alloc {
    /// ASIDs taken in the current generation (bit 0, ASID 0, is the empty
    /// table's and never handed out).
    map: [u64; MAP_WORDS],
    /// Where the next search starts.
    next: u64,
    /// Largest ASID handed out (0 = not yet known: the hardware's).
    max: u64,
    /// Limit set by `asid_bits=` or a test (0 = none).
    limit: u64,
    /// Each CPU's ASID kept across rollovers (see the module doc).
    reserved: [u64; MAX_CPUS],
}

/// The lock of the allocator: protects [`Alloc`] and is the only writer
/// side of [`GENERATION`], [`CONTEXT`], [`KEY_ROOT`] and the clearing of
/// [`FLUSH_PENDING`]; held only with IRQs masked, and a leaf (nothing is
/// taken under it).  The fast path and flushes never take it.
static ALLOC: Mutex<Alloc> = Mutex::new(Alloc {
    map: [0; MAP_WORDS],
    next: 1,
    max: 0,
    limit: 0,
    reserved: [0; MAX_CPUS],
});

impl Alloc {
    fn max(&mut self) -> u64 {
        if self.max == 0 {
            let hw = (1u64 << crate::context::asid_bits()) - 1;
            // Room for every CPU's reserved ASID plus one to hand out
            // (counted here, not when the limit is set: `asid_bits=` may
            // be parsed before the secondary CPUs are known).
            let floor = crate::smp::nr_cpus_possible() as u64 + 1;
            self.max = if self.limit == 0 {
                hw
            } else {
                self.limit.clamp(floor.min(hw), hw)
            };
        }
        self.max
    }

    fn test(&self, asid: u64) -> bool {
        self.map[(asid / 64) as usize] & (1 << (asid % 64)) != 0
    }

    fn set(&mut self, asid: u64) {
        self.map[(asid / 64) as usize] |= 1 << (asid % 64);
    }

    fn find_free(&mut self, from: u64) -> Option<u64> {
        let max = self.max();
        (from.max(1)..=max)
            .chain(1..from.min(max + 1))
            .find(|&a| !self.test(a))
    }

    /// Start a new generation: keep the ASIDs running somewhere, mark
    /// every CPU flush-pending.
    fn rollover(&mut self) {
        GENERATION.fetch_add(GEN_ONE, Ordering::Relaxed);
        self.map = [0; MAP_WORDS];
        self.set(0);
        for (active, cpu) in ACTIVE.iter().zip(0..MAX_CPUS) {
            let mut id = active.swap(0, Ordering::Relaxed);
            if id == 0 {
                // No switch since the last rollover: still running that.
                id = self.reserved[cpu];
            }
            if id != 0 {
                self.set(id & ASID_MASK);
            }
            self.reserved[cpu] = id;
        }
        for p in &FLUSH_PENDING {
            p.store(true, Ordering::Relaxed);
        }
        self.next = 1;
        ROLLOVERS.fetch_add(1, Ordering::Relaxed);
    }

    /// A context id of the current generation for a space whose context
    /// id was `old` (0 = none).
    fn new_context(&mut self, old: u64) -> u64 {
        let generation = GENERATION.load(Ordering::Relaxed);
        if old != 0 {
            let asid = old & ASID_MASK;
            let new = generation | asid;
            // Reserved on some CPU at a rollover: keep it (every CPU
            // holding that reservation holds this space).
            let mut kept = false;
            for r in self.reserved.iter_mut() {
                if *r == old {
                    *r = new;
                    kept = true;
                }
            }
            if kept {
                return new;
            }
            // Not taken in this generation: take it again.
            if asid <= self.max() && !self.test(asid) {
                self.set(asid);
                return new;
            }
        }
        let asid = match self.find_free(self.next) {
            Some(a) => a,
            None => {
                self.rollover();
                self.find_free(1)
                    .expect("every ASID reserved after a rollover: more CPUs than ASIDs")
            }
        };
        self.set(asid);
        self.next = asid + 1;
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        GENERATION.load(Ordering::Relaxed) | asid
    }
}

/// The hardware ASID to load for `key` with root `root_pa` on `cpu` (IRQs
/// masked by the caller).  Flushes this CPU's TLB first when a rollover
/// asked for it.
pub(crate) fn switch_in(key: u16, root_pa: u64, cpu: usize) -> u64 {
    let k = usize::from(key);
    assert!(
        k < KEYS && cpu < MAX_CPUS,
        "ASID key {key} or CPU {cpu} out of range"
    );
    let ctx = CONTEXT[k].load(Ordering::Relaxed);
    let old_active = ACTIVE[cpu].load(Ordering::Relaxed);
    let fast = old_active != 0
        && KEY_ROOT[k].load(Ordering::Acquire) == root_pa
        && ctx & !ASID_MASK == GENERATION.load(Ordering::Relaxed)
        && ACTIVE[cpu]
            .compare_exchange(old_active, ctx, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
    let ctx = if fast {
        ctx
    } else {
        switch_in_slow(k, root_pa, cpu)
    };
    if ctx & !ASID_MASK > FLUSHED_GEN[cpu].load(Ordering::Relaxed) {
        UNFLUSHED_LOADS.fetch_add(1, Ordering::Relaxed);
    }
    ctx & ASID_MASK
}

fn switch_in_slow(k: usize, root_pa: u64, cpu: usize) -> u64 {
    let mut a = ALLOC.lock();
    let mut ctx = CONTEXT[k].load(Ordering::Relaxed);
    if KEY_ROOT[k].load(Ordering::Relaxed) != root_pa {
        ctx = 0;
    }
    if ctx == 0 || ctx & !ASID_MASK != GENERATION.load(Ordering::Relaxed) {
        ctx = a.new_context(ctx);
        CONTEXT[k].store(ctx, Ordering::Relaxed);
    }
    KEY_ROOT[k].store(root_pa, Ordering::Release);
    if FLUSH_PENDING[cpu].swap(false, Ordering::Relaxed) {
        // The rollover's flush.  Removing this call makes the rollover
        // self-test (`asid_rollover_keeps_spaces_apart`) fail.
        flush_local(cpu);
    }
    ACTIVE[cpu].store(ctx, Ordering::Relaxed);
    drop(a);
    // Pairs with the barrier in `flush_asid` (module doc): the new context
    // id is visible before this CPU's first walk with it.
    crate::regs::dsb_ish();
    ctx
}

/// Empty this CPU's TLB (a rollover happened since its last one).
fn flush_local(cpu: usize) {
    tlbi_vmalle1();
    FLUSHED_GEN[cpu].store(GENERATION.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// The hardware ASID to TLBI for a flush of `key`'s space, or `None` when
/// it never ran.  Issues the `dsb ish` that orders the caller's page-table
/// stores before the read of the context id (module doc).
pub(crate) fn flush_asid(key: u16) -> Option<u64> {
    crate::regs::dsb_ish();
    let ctx = CONTEXT.get(usize::from(key))?.load(Ordering::Relaxed);
    (ctx != 0).then_some(ctx & ASID_MASK)
}

/// Limit the hardware ASIDs handed out to `1..=max` (at most what the
/// hardware has, at least one more than there are CPUs; 0 = no limit).  Used by the `asid_bits=N` boot parameter
/// (`max` = 2^N - 1) and by the rollover self-test.  Starts a new
/// generation (a rollover, counted), so the limit applies at every space's
/// next switch-in; ASIDs above it that are running now stay reserved for
/// their CPUs until those switch.  Returns the previous limit.
pub fn set_asid_limit(max: u64) -> u64 {
    let irq = crate::cpu::irq_save();
    let mut a = ALLOC.lock();
    let old = a.limit;
    a.limit = max.min(ASID_MASK);
    a.max = 0;
    // A new generation, so that every space not running now takes an
    // ASID within the new limit at its next switch-in.
    a.rollover();
    drop(a);
    crate::cpu::irq_restore(irq);
    old
}

/// Rollovers since boot.
pub fn asid_rollovers() -> u64 {
    ROLLOVERS.load(Ordering::Relaxed)
}

/// Hardware ASIDs handed out from the bitmap since boot (reuses of an
/// ASID kept across a rollover not counted).
pub fn asid_allocs() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

/// User ASIDs loaded on a CPU whose TLB was not flushed since the
/// ASID's generation began (a missing rollover flush; 0 when correct).
pub fn unflushed_loads() -> u64 {
    UNFLUSHED_LOADS.load(Ordering::Relaxed)
}
