//! User address spaces in the kernel: the one `MmCtx`, the registry of live
//! `Mm`s, and the MMU fault handler that hands lower-half faults to `mm`.
//!
//! Faults come from the MMU for real: a user access (ring 3 / EL0), or a
//! kernel access through `copy_to_user`/`copy_from_user`, to a lower-half
//! address of the address space loaded in CR3 / TTBR0 raises #PF / a data
//! abort; the arch crate calls [`on_fault`], which finds the `Mm` owning the
//! loaded root and resolves the fault with `Mm::handle_fault`.
//!
//! Lock order: the registry lock (`SPACES`) is taken for reading in the
//! fault path and otherwise only with interrupts masked, never while a
//! `Mm` lock is held; a fault handler therefore never waits for a writer
//! that waits for it.  Nothing allocates or frees heap memory while it is
//! held with interrupts masked: the heap's lock is not interrupt-safe, so
//! a thread preempted inside the heap would make that spin forever (the
//! khugepaged thread's `all_mms` did, under the storm).
use crate::arch::{self, Paging};
use crate::mem::memory::buddy;
use crate::mem::mmglue::KERNEL_TLB;
use crate::task::sched;
use crate::task::thread::MAX_THREADS;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicPtr, Ordering};
use mm::abi::errno::Errno;
use mm::aspace::{Access, Fault, Mm, MmCtx};
use mm::sync::RwLock;
use spin::Once;

/// The memory manager's address space on this CPU's page-table format.
pub type Space = Mm<'static, Paging>;

/// A user address space as the kernel holds it.
///
/// `Mm`'s locks fit a preemptive SMP kernel (`mm::sync`): the mmap lock
/// sleeps, the page-table lock is a spin lock held with preemption off.
/// So an `Mm` may be used from any thread context, preemptible or not;
/// [`UserMm::enter`] and [`UserMm::get`] remain as the one way in (the
/// latter for callers that keep preemption off for reasons of their own).
pub struct UserMm(Space);

/// A [`UserMm`]'s `Mm`.
pub struct Entered<'m> {
    mm: &'m Space,
}

impl core::ops::Deref for Entered<'_> {
    type Target = Space;
    fn deref(&self) -> &Space {
        self.mm
    }
}

impl UserMm {
    /// Reach the `Mm`.
    pub fn enter(&self) -> Entered<'_> {
        Entered { mm: &self.0 }
    }
    /// The `Mm`, borrowed for as long as the caller's guard lives.
    pub fn get<'g>(&'g self, _np: &'g sched::PreemptGuard) -> &'g Space {
        &self.0
    }
    pub fn root_pa(&self) -> u64 {
        self.0.root_pa()
    }
    pub fn asid(&self) -> u16 {
        self.0.asid()
    }
    pub fn id(&self) -> u64 {
        self.0.id()
    }
    pub fn faults_resolved(&self) -> u64 {
        self.0.faults_resolved()
    }
    pub fn faults_major(&self) -> u64 {
        self.0.faults_major()
    }
}

static CTX: Once<MmCtx<'static>> = Once::new();

/// Live address spaces with their root-table physical addresses: a short
/// list (a linear scan beats a tree at this size), grown by swapping in a
/// bigger one allocated beforehand (see the module comment).
static SPACES: RwLock<Vec<(u64, Arc<UserMm>)>> = RwLock::new(Vec::new());

/// Run `f` on the registry, write-locked with interrupts masked.
fn with_spaces_mut<R>(f: impl FnOnce(&mut Vec<(u64, Arc<UserMm>)>) -> R) -> R {
    let irq = arch::irq_save();
    let r = f(&mut SPACES.write());
    arch::irq_restore(irq);
    r
}

/// Run `f` on the registry, read-locked with interrupts masked.
fn with_spaces<R>(f: impl FnOnce(&[(u64, Arc<UserMm>)]) -> R) -> R {
    let irq = arch::irq_save();
    let r = f(&SPACES.read());
    arch::irq_restore(irq);
    r
}

/// Add `mm` under `root`, allocating only with interrupts enabled.
fn insert(root: u64, mm: Arc<UserMm>) {
    let mut entry = Some((root, mm));
    let mut spare: Vec<(u64, Arc<UserMm>)> = Vec::new();
    loop {
        let full = with_spaces_mut(|v| {
            let e = entry.take().expect("inserted once");
            if v.len() < v.capacity() {
                v.push(e);
            } else if spare.capacity() > v.len() {
                // Within capacity: neither call allocates.
                spare.append(v);
                spare.push(e);
                core::mem::swap(v, &mut spare);
            } else {
                entry = Some(e);
                return Some(v.len());
            }
            None
        });
        match full {
            None => break,
            Some(len) => spare = Vec::with_capacity((len + 1).max(8) * 2),
        }
    }
    // The old, empty list (or the unused spare) is freed here.
    drop(spare);
}

/// Remove the entry for `root`; the caller drops it (interrupts enabled).
fn remove(root: u64) -> Option<Arc<UserMm>> {
    with_spaces_mut(|v| {
        let i = v.iter().position(|(r, _)| *r == root)?;
        Some(v.swap_remove(i).1)
    })
}

/// The shared context (zero page, ASIDs, deferred-split queue, knobs).
pub fn ctx() -> &'static MmCtx<'static> {
    CTX.get().expect("uspace::init not called")
}

/// Creates the context and installs the fault handler.
pub fn init() {
    CTX.call_once(|| {
        MmCtx::new(buddy(), &KERNEL_TLB, &mm::thp::THP).expect("no memory for the zero page")
    });
    arch::set_fault_handler(on_fault);
}

/// A new, empty address space, registered so its faults can be resolved.
pub fn new_mm() -> Result<Arc<UserMm>, Errno> {
    register(Mm::new(ctx())?)
}

/// Register an address space made elsewhere (e.g. by `Mm::fork`).
pub fn register(mm: Space) -> Result<Arc<UserMm>, Errno> {
    // The kernel half of the root: linked from the kernel's root on x86 (one
    // CR3 covers both halves) through the page-table engine; none on arm64
    // (TTBR1 maps the kernel).  The user page table owns only the lower
    // half, so it never frees the kernel's tables.
    if let Some(k) = arch::kernel_half_root() {
        let _np = sched::preempt_disable();
        mm.link_kernel_half(k);
    }
    let root = mm.root_pa();
    let mm = Arc::new(UserMm(mm));
    insert(root, mm.clone());
    Ok(mm)
}

/// Load `mm` as the running thread's lower half (kept across preemption).
#[cfg(any(feature = "selftest", feature = "demo"))]
pub fn activate(mm: &UserMm) {
    sched::set_addr_space(Some(sched::AddrSpace {
        root_pa: mm.root_pa(),
        asid: mm.asid(),
    }));
}

/// Back to an empty lower half.
pub fn deactivate() {
    sched::set_addr_space(None);
}

/// Unregister and tear down `mm` (every folio and table returns to the
/// allocator).  Returns false if someone else still holds a reference:
/// then the memory is unmapped and freed now, and the tables and ids go
/// when that holder drops it.
pub fn release(mm: Arc<UserMm>) -> bool {
    if arch::current_user_root().is_some_and(|(root, _)| root == mm.root_pa()) {
        deactivate();
    }
    drop(remove(mm.root_pa()));
    match Arc::try_unwrap(mm) {
        Ok(mm) => {
            let _np = sched::preempt_disable();
            mm.0.destroy();
            true
        }
        Err(mm) => {
            // Someone else holds it for a moment (khugepaged's pass, a
            // debugfs walk): no process uses it any more (address spaces
            // are never shared between processes), so its memory comes
            // back now; whoever drops the last reference frees the rest.
            mm.enter().exit_mmap();
            false
        }
    }
}

/// The address space whose root is loaded now, if any.  Waits while
/// another CPU changes the registry (its writers hold it briefly, with
/// interrupts masked, and wait for nothing); this CPU never holds it for
/// writing when it gets here (no user access or fault under the write
/// lock).  A `try_read` here made a fault on one CPU fail (a spurious
/// SIGSEGV) while a fork or an exit on another CPU updated the registry.
pub fn current() -> Option<Arc<UserMm>> {
    let (root, _) = arch::current_user_root()?;
    let spaces = SPACES.read();
    spaces
        .iter()
        .find(|(r, _)| *r == root)
        .map(|(_, m)| m.clone())
}

/// Every registered address space (for the invariant checker, which must
/// see all of them).
pub fn all_mms() -> Vec<Arc<UserMm>> {
    let mut out = Vec::new();
    loop {
        // Reserve with interrupts enabled, copy without allocating.
        out.reserve(with_spaces(|v| v.len()));
        let copied = with_spaces(|v| {
            if v.len() > out.capacity() {
                return false;
            }
            out.extend(v.iter().map(|(_, m)| m.clone()));
            true
        });
        if copied {
            return out;
        }
    }
}

/// Run `f` on every live address space, one at a time with no lock held
/// between them (`mm::aspace::EachMm`: a shmem collapse unmaps a range of
/// an object from every space).
pub fn each_mm(f: &mut dyn FnMut(&Space)) {
    for m in all_mms() {
        f(&m.enter());
    }
}

/// The `Mm`s of `mms`, for as long as `np` keeps preemption off: for the
/// calls that work on several spaces at once (split, the shrinker, the
/// invariant checker).
pub fn spaces<'g>(mms: &'g [Arc<UserMm>], np: &'g sched::PreemptGuard) -> Vec<&'g Space> {
    mms.iter().map(|m| m.get(np)).collect()
}

/// Faults refused since boot.  (Resolved faults are counted per space,
/// `Mm::faults_resolved`: no line shared by every CPU's faults.)
pub static FAULTS_REFUSED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Each thread's own address space, by thread slot (Linux's
/// `current->mm`), so a fault finds its `Mm` without the registry's lock,
/// its scan and a reference count taken and dropped on every fault.
///
/// Slot `k` holds a strong reference (`Arc::into_raw`) or null, and only
/// thread `k` itself writes it ([`bind_current`], [`unbind_current`]); so
/// while thread `k` runs, the `UserMm` its slot points to stays alive.
static THREAD_MM: [AtomicPtr<UserMm>; MAX_THREADS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_THREADS];

/// Make `mm` the running thread's own address space (a user thread's, at
/// its start), replacing any earlier one.
pub fn bind_current(mm: Option<&Arc<UserMm>>) {
    let new = mm.map_or(core::ptr::null_mut(), |m| {
        Arc::into_raw(m.clone()).cast_mut()
    });
    let old = THREAD_MM[sched::current_id()].swap(new, Ordering::AcqRel);
    drop_bound(old);
}

/// The running thread has no address space of its own any more (its
/// exit, before the last thread releases the space).
pub fn unbind_current() {
    bind_current(None);
}

#[allow(unsafe_code)]
fn drop_bound(old: *mut UserMm) {
    if !old.is_null() {
        // SAFETY: a non-null slot value came from `Arc::into_raw` in
        // `bind_current` and was swapped out of the slot, so this drops
        // that one reference once.
        drop(unsafe { Arc::from_raw(old) });
    }
}

/// Run `f` on the address space loaded now: the running thread's own
/// ([`THREAD_MM`]) when that is the one loaded, else the registry's
/// ([`current`]; a kernel thread in a self-test, or none).
#[allow(unsafe_code)]
fn with_loaded<R>(f: impl FnOnce(&UserMm) -> R) -> Option<R> {
    let root = arch::current_user_root_pa();
    let p = THREAD_MM[sched::current_id()].load(Ordering::Acquire);
    // SAFETY: only this thread changes its own slot (see `THREAD_MM`), and
    // not while it runs `f`: the strong reference the slot holds keeps the
    // `UserMm` alive for the whole borrow.
    if let Some(m) = unsafe { p.as_ref() }
        && m.root_pa() == root
    {
        return Some(f(m));
    }
    let m = current()?;
    Some(f(&m))
}

/// Resolve a fault in `mm` from an exception handler.  The fault sleeps
/// while a system call of the process holds the mmap lock for writing, and
/// spins (answering shootdowns) only for the page-table lock, whose holder
/// is running on another CPU with preemption off.
pub fn resolve_fault(mm: &UserMm, addr: u64, access: Access) -> Result<(), Fault> {
    mm.enter().handle_fault(addr, access)
}

/// The MMU fault hook: `true` if `mm` resolved the fault (retry the access).
fn on_fault(fi: &arch::FaultInfo) -> bool {
    use core::sync::atomic::Ordering::Relaxed;
    if fi.addr >= arch::USER_TOP {
        return false;
    }
    match with_loaded(|mm| resolve_fault(mm, fi.addr, fi.access)) {
        None => false,
        Some(Ok(())) => true,
        Some(Err(Fault::Segv | Fault::Oom | Fault::Sigbus)) => {
            FAULTS_REFUSED.fetch_add(1, Relaxed);
            false
        }
    }
}

/// Resolve a fault at `addr` in the address space loaded now (the fault
/// hooks' common part): `None` if none is loaded.
pub fn resolve_loaded(addr: u64, access: Access) -> Option<Result<(), Fault>> {
    with_loaded(|mm| resolve_fault(mm, addr, access))
}

/// Read a u64 at user address `va` of the loaded address space (faulting
/// it in through the real MMU).
#[cfg(any(feature = "selftest", feature = "demo"))]
pub fn read_u64(va: u64) -> Result<u64, Errno> {
    let mut b = [0u8; 8];
    arch::copy_from_user(&mut b, va).map_err(|_| Errno::EFAULT)?;
    Ok(u64::from_ne_bytes(b))
}

/// Write a u64 at user address `va` of the loaded address space.
#[cfg(any(feature = "selftest", feature = "demo"))]
pub fn write_u64(va: u64, v: u64) -> Result<(), Errno> {
    arch::copy_to_user(va, &v.to_ne_bytes()).map_err(|_| Errno::EFAULT)
}
