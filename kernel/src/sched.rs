//! Kernel threads and a preemptive round-robin scheduler.
//!
//! * Threads: [`spawn`] / [`spawn_in`] (a closure on its own guarded stack,
//!   see `thread.rs`), [`exit`], [`JoinHandle::join`], [`yield_now`],
//!   [`sleep_ms`], [`WaitQueue`].  The boot flow becomes thread 0 ("boot")
//!   at [`init`]; each CPU has an idle thread that reaps detached dead
//!   threads and halts when nothing is runnable.
//! * Preemption: the timer's tick hook ([`on_tick`]) wakes sleepers and
//!   counts down the running thread's time slice; when it runs out it sets
//!   the CPU's `need_resched`.  The arch calls [`on_irq_exit`] at the end of
//!   the timer interrupt (after the EOI, interrupts still masked) on the
//!   interrupted thread's stack; if a reschedule is due and preemption is
//!   not disabled, it switches threads right there.  The interrupted thread
//!   returns from its interrupt when it is switched back in.
//! * Address spaces: each thread may carry a lower-half root
//!   ([`AddrSpace`]); the switch loads it (CR3 with PCID / TTBR0 with ASID)
//!   or goes back to the kernel's own root.
//!
//! # Locking
//! `SCHED` is the one scheduler lock (per-CPU run queues and `current`
//! inside it, indexed by CPU id; CPU 0 only today).  It is always taken
//! with interrupts masked, is innermost (nothing is locked, allocated or
//! printed while it is held), and is *handed over across a context switch*:
//! the thread that switches away forgets its guard and the thread switched
//! to releases it (`finish_switch`).  So state changes under the lock and
//! the switch they lead to are atomic for every other CPU: a thread seen
//! Ready under the lock is fully switched out, and so is one seen Dead.
//!
//! Lock order: `WaitQueue::waiters` → `SCHED`.  The thread table owns one
//! reference to each thread; it is dropped (freeing the stack) only in
//! thread context with interrupts enabled, never under `SCHED`.
use crate::arch;
use crate::thread::{self, KStack, MAX_THREADS};
use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering, compiler_fence};
use ktest::{check, check_eq, ktest};

/// CPUs the scheduler state is sized for (only CPU 0 runs today; with SMP
/// this becomes `mm::cpu::MAX_CPUS`, the one bound on CPU ids).
pub const NR_CPUS: usize = 1;
const _: () = assert!(NR_CPUS <= mm::cpu::MAX_CPUS);
/// Time slice in milliseconds.
pub const SLICE_MS: u64 = 5;

/// A thread's scheduling state (changed only under `SCHED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    /// Runnable, in a run queue (or about to be put back by `schedule`).
    Ready = 0,
    Running = 1,
    /// Waiting on a `WaitQueue`.
    Blocked = 2,
    /// In `sleep_ms`, woken by the tick.
    Sleeping = 3,
    /// Exited; its stack is freed once it is reaped.
    Dead = 4,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            0 => State::Ready,
            1 => State::Running,
            2 => State::Blocked,
            3 => State::Sleeping,
            _ => State::Dead,
        }
    }
}

/// A lower-half address space root for a thread: the root table's physical
/// address and its ASID/PCID (non-zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrSpace {
    pub root_pa: u64,
    pub asid: u16,
}

type Entry = Box<dyn FnOnce() + Send + 'static>;

/// One kernel thread.
pub struct Thread {
    /// Table slot; also the stack slot and the index of its saved context.
    pub id: usize,
    pub name: String,
    stack: Option<KStack>,
    state: AtomicU8,
    /// Deadline of `sleep_ms` (ns of `arch::now_ns`).
    wake_at: AtomicU64,
    /// `AddrSpace` packed: root pa (0 = none) and asid.
    space_root: AtomicU64,
    space_asid: AtomicU64,
    detached: AtomicBool,
    /// The CPU's preemption-disable count, saved while switched out (a
    /// thread that sleeps with preemption off gets it back when it runs).
    preempt: AtomicUsize,
    /// The user TLS register (x86 FS base, arm64 TPIDR_EL0), saved while
    /// switched out: each process (and, later, each user thread) has its
    /// own, and the register is per CPU.
    user_tls: AtomicU64,
    /// The user FP/SIMD registers, saved while switched out (x86: the
    /// kernel is soft-float, so the registers hold the last user context's
    /// state until the next switch; arm64 keeps them in exception frames
    /// and this is empty).
    fpu: spin::Mutex<arch::FpuState>,
    entry: spin::Mutex<Option<Entry>>,
    /// Woken when the thread exits (joiners wait here).
    exited: WaitQueue,
}

impl Thread {
    fn new(id: usize, name: &str, stack: Option<KStack>, entry: Option<Entry>) -> Thread {
        Thread {
            id,
            name: String::from(name),
            stack,
            state: AtomicU8::new(State::Ready as u8),
            wake_at: AtomicU64::new(0),
            space_root: AtomicU64::new(0),
            space_asid: AtomicU64::new(0),
            detached: AtomicBool::new(false),
            preempt: AtomicUsize::new(0),
            user_tls: AtomicU64::new(0),
            fpu: spin::Mutex::new(arch::FpuState::initial()),
            entry: spin::Mutex::new(entry),
            exited: WaitQueue::new(),
        }
    }

    pub fn state(&self) -> State {
        State::from_u8(self.state.load(Ordering::Acquire))
    }

    fn set_state(&self, s: State) {
        self.state.store(s as u8, Ordering::Release);
    }

    /// The guard page below this thread's stack (`None` for the boot thread,
    /// whose guard is `arch::kernel_layout().stack_guard`).
    pub fn stack_guard(&self) -> Option<core::ops::Range<u64>> {
        self.stack.as_ref().map(|s| s.guard())
    }

    /// `(bottom, top)` of the stack the thread runs on.
    pub fn stack_range(&self) -> (u64, u64) {
        match &self.stack {
            Some(s) => (s.bottom(), s.top()),
            None => {
                let l = arch::kernel_layout();
                (l.stack.start, l.stack.end)
            }
        }
    }

    pub fn addr_space(&self) -> Option<AddrSpace> {
        let root_pa = self.space_root.load(Ordering::Acquire);
        (root_pa != 0).then(|| AddrSpace {
            root_pa,
            asid: self.space_asid.load(Ordering::Relaxed) as u16,
        })
    }

    fn set_addr_space(&self, s: Option<AddrSpace>) {
        let (r, a) = s.map_or((0, 0), |s| (s.root_pa, u64::from(s.asid)));
        self.space_asid.store(a, Ordering::Relaxed);
        self.space_root.store(r, Ordering::Release);
    }
}

/// A fixed-capacity FIFO of thread ids (never allocates).
struct RunQueue {
    ring: [u8; MAX_THREADS],
    head: usize,
    len: usize,
}

impl RunQueue {
    const fn new() -> Self {
        Self {
            ring: [0; MAX_THREADS],
            head: 0,
            len: 0,
        }
    }

    fn push(&mut self, id: usize) {
        assert!(self.len < MAX_THREADS, "run queue overflow");
        self.ring[(self.head + self.len) % MAX_THREADS] = id as u8;
        self.len += 1;
    }

    fn pop(&mut self) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let id = self.ring[self.head] as usize;
        self.head = (self.head + 1) % MAX_THREADS;
        self.len -= 1;
        Some(id)
    }
}

struct Cpu {
    current: usize,
    idle: usize,
    rq: RunQueue,
    /// The lower-half root loaded on this CPU (root pa 0 = kernel's own).
    loaded: (u64, u16),
}

/// Everything the scheduler lock protects.
struct Sched {
    /// The thread table: one owning reference per live (unreaped) thread.
    threads: [Option<Arc<Thread>>; MAX_THREADS],
    /// Slots being filled by `spawn` (not yet in `threads`).
    reserved: u64,
    /// Threads that sit in some run queue.
    queued: u64,
    /// Dead detached threads waiting for the idle thread or `spawn` to reap them.
    zombies: u64,
    /// Threads in `sleep_ms`, and the earliest deadline among them.
    sleepers: u64,
    next_wake: u64,
    cpus: [Cpu; NR_CPUS],
}

/// The scheduler lock.  See the module documentation for what it protects
/// and the lock order (`WaitQueue::waiters` → `SCHED`; innermost; taken
/// with interrupts masked; handed over across context switches).
static SCHED: spin::Mutex<Sched> = spin::Mutex::new(Sched {
    threads: [const { None }; MAX_THREADS],
    reserved: 0,
    queued: 0,
    zombies: 0,
    sleepers: 0,
    next_wake: u64::MAX,
    cpus: [const {
        Cpu {
            current: 0,
            idle: 0,
            rq: RunQueue::new(),
            loaded: (0, 0),
        }
    }; NR_CPUS],
});

// Per-CPU fields read without the lock (only by their own CPU).
static CURRENT: [AtomicUsize; NR_CPUS] = [const { AtomicUsize::new(0) }; NR_CPUS];
static NEED_RESCHED: [AtomicBool; NR_CPUS] = [const { AtomicBool::new(false) }; NR_CPUS];
static PREEMPT_COUNT: [AtomicUsize; NR_CPUS] = [const { AtomicUsize::new(0) }; NR_CPUS];
static SLICE_LEFT: [AtomicU64; NR_CPUS] = [const { AtomicU64::new(0) }; NR_CPUS];
static SLICE_TICKS: AtomicU64 = AtomicU64::new(1);
static STARTED: AtomicBool = AtomicBool::new(false);
/// Context switches so far (all CPUs).
static SWITCHES: AtomicU64 = AtomicU64::new(0);

fn cpu_id() -> usize {
    0
}

/// Run `f` with interrupts masked and the scheduler lock held.
fn with_sched<R>(f: impl FnOnce(&mut Sched) -> R) -> R {
    let irq = arch::irq_save();
    let r = {
        let mut g = SCHED.lock();
        f(&mut g)
    };
    compiler_fence(Ordering::SeqCst);
    arch::irq_restore(irq);
    r
}

impl Sched {
    fn thread(&self, id: usize) -> &Arc<Thread> {
        self.threads[id].as_ref().expect("no such thread")
    }

    fn enqueue(&mut self, cpu: usize, id: usize) {
        if self.queued & (1 << id) == 0 && id != self.cpus[cpu].idle {
            self.queued |= 1 << id;
            self.cpus[cpu].rq.push(id);
        }
    }

    fn is_current(&self, id: usize) -> bool {
        self.cpus.iter().any(|c| c.current == id)
    }

    /// Make a Blocked (or, with `sleeping`, a Sleeping) thread Ready.
    fn wake(&mut self, id: usize, sleeping: bool) -> bool {
        let Some(t) = self.threads[id].as_ref() else {
            return false;
        };
        let s = t.state();
        if !(s == State::Blocked || (sleeping && s == State::Sleeping)) {
            return false;
        }
        t.set_state(State::Ready);
        self.sleepers &= !(1 << id);
        // A thread that marked itself Blocked but has not switched away yet
        // is still current: its own `schedule` sees Ready and keeps running.
        if !self.is_current(id) {
            let cpu = cpu_id();
            self.enqueue(cpu, id);
            if self.cpus[cpu].current == self.cpus[cpu].idle {
                NEED_RESCHED[cpu].store(true, Ordering::Relaxed);
            }
        }
        true
    }

    fn wake_sleepers(&mut self, now: u64) {
        let mut next = u64::MAX;
        let mut bits = self.sleepers;
        while bits != 0 {
            let id = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let at = self.thread(id).wake_at.load(Ordering::Relaxed);
            if at <= now {
                self.wake(id, true);
            } else {
                next = next.min(at);
            }
        }
        self.next_wake = next;
    }
}

/// Pick the next thread and switch to it.  Called with interrupts masked
/// and the lock held (`g`); returns (lock released) when the calling
/// thread runs again, at once if it is still the best choice.
fn schedule_locked(mut g: spin::MutexGuard<'_, Sched>) {
    let cpu = cpu_id();
    let prev = g.cpus[cpu].current;
    let idle = g.cpus[cpu].idle;
    match g.thread(prev).state() {
        State::Running | State::Ready => {
            g.thread(prev).set_state(State::Ready);
            g.enqueue(cpu, prev);
        }
        State::Blocked | State::Sleeping | State::Dead => {}
    }
    let next = match g.cpus[cpu].rq.pop() {
        Some(n) => {
            g.queued &= !(1 << n);
            n
        }
        None if g.thread(prev).state() == State::Ready => prev,
        None => idle,
    };
    g.thread(next).set_state(State::Running);
    NEED_RESCHED[cpu].store(false, Ordering::Relaxed);
    SLICE_LEFT[cpu].store(SLICE_TICKS.load(Ordering::Relaxed), Ordering::Relaxed);
    if next == prev {
        return;
    }
    SWITCHES.fetch_add(1, Ordering::Relaxed);
    g.cpus[cpu].current = next;
    CURRENT[cpu].store(next, Ordering::Relaxed);
    let want = g
        .thread(next)
        .addr_space()
        .map_or((0, 0), |s| (s.root_pa, s.asid));
    if want != g.cpus[cpu].loaded {
        if want.0 == 0 {
            arch::user_root_off();
        } else {
            arch::switch_user_root(want.0, want.1);
        }
        g.cpus[cpu].loaded = want;
    }
    let (bottom, top) = g.thread(next).stack_range();
    arch::set_thread_stack(bottom, top);
    g.thread(prev).preempt.store(
        PREEMPT_COUNT[cpu].load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    PREEMPT_COUNT[cpu].store(
        g.thread(next).preempt.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    let tls = arch::user_tls();
    g.thread(prev).user_tls.store(tls, Ordering::Relaxed);
    let next_tls = g.thread(next).user_tls.load(Ordering::Relaxed);
    if next_tls != tls {
        arch::set_user_tls(next_tls);
    }
    g.thread(prev).fpu.lock().save();
    g.thread(next).fpu.lock().restore();
    // Hand the lock over: the thread we switch to releases it.
    core::mem::forget(g);
    thread::switch(prev, next);
    finish_switch();
}

/// First thing after a switch (in the thread switched to): release the
/// scheduler lock handed over by the previous thread.
fn finish_switch() {
    compiler_fence(Ordering::SeqCst);
    thread::release_handed_over(&SCHED);
}

/// Reschedule (interrupts in any state; restored on return).
fn schedule() {
    let irq = arch::irq_save();
    schedule_locked(SCHED.lock());
    compiler_fence(Ordering::SeqCst);
    arch::irq_restore(irq);
}

/// Timer tick hook (interrupts masked): wake sleepers, count the slice down.
pub fn on_tick() {
    let cpu = cpu_id();
    let now = arch::now_ns();
    // Never spin here: the lock is only ever held with interrupts masked, so
    // on this CPU it cannot be held; if another CPU holds it, the work
    // simply waits for the next tick.
    let Some(mut g) = SCHED.try_lock() else {
        return;
    };
    if now >= g.next_wake {
        g.wake_sleepers(now);
    }
    let left = SLICE_LEFT[cpu].load(Ordering::Relaxed);
    if left <= 1 {
        SLICE_LEFT[cpu].store(0, Ordering::Relaxed);
        if g.cpus[cpu].rq.len > 0 {
            NEED_RESCHED[cpu].store(true, Ordering::Relaxed);
        }
    } else {
        SLICE_LEFT[cpu].store(left - 1, Ordering::Relaxed);
    }
    if g.cpus[cpu].current == g.cpus[cpu].idle && g.cpus[cpu].rq.len > 0 {
        NEED_RESCHED[cpu].store(true, Ordering::Relaxed);
    }
    if let Some(what) = crate::selftest::overdue(now) {
        // A self-test has hung with interrupts still arriving: say what
        // every thread is doing, then fail the run now rather than at the
        // runner's timeout (the panic reports the test as FAILED).
        g.dump(cpu, now);
        drop(g);
        panic!("self-test watchdog: {what}");
    }
}

impl Sched {
    /// Every thread's state, printed without allocating or taking the
    /// console lock (this runs in the timer interrupt).
    fn dump(&self, cpu: usize, now: u64) {
        crate::log::print_unlocked(format_args!(
            "watchdog: cpu {} current {} idle {}, run queue {} threads, preempt count {}, heap lock {}\n",
            cpu,
            self.cpus[cpu].current,
            self.cpus[cpu].idle,
            self.cpus[cpu].rq.len,
            PREEMPT_COUNT[cpu].load(Ordering::Relaxed),
            if crate::memory::heap_locked() {
                "held"
            } else {
                "free"
            },
        ));
        for t in self.threads.iter().flatten() {
            let wake = t.wake_at.load(Ordering::Relaxed);
            crate::log::print_unlocked(format_args!(
                "watchdog:   thread {} '{}' {:?}, saved preempt {}, wake in {} ms, user root {:#x}\n",
                t.id,
                t.name,
                t.state(),
                t.preempt.load(Ordering::Relaxed),
                wake.saturating_sub(now) / 1_000_000,
                t.space_root.load(Ordering::Relaxed),
            ));
        }
    }
}

/// IRQ-exit hook (interrupts masked, after the EOI): preempt if due.
pub fn on_irq_exit() {
    let cpu = cpu_id();
    if NEED_RESCHED[cpu].load(Ordering::Relaxed) && PREEMPT_COUNT[cpu].load(Ordering::Relaxed) == 0
    {
        schedule_locked(SCHED.lock());
    }
}

/// Disable preemption of the running thread until the guard is dropped
/// (nests).  Interrupts stay enabled; explicit `yield_now`/`sleep_ms`/waits
/// still switch, and the count is saved and restored with the thread.
pub fn preempt_disable() -> PreemptGuard {
    PREEMPT_COUNT[cpu_id()].fetch_add(1, Ordering::Relaxed);
    compiler_fence(Ordering::SeqCst);
    PreemptGuard(())
}

pub struct PreemptGuard(());

impl Drop for PreemptGuard {
    fn drop(&mut self) {
        compiler_fence(Ordering::SeqCst);
        PREEMPT_COUNT[cpu_id()].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Turn the running boot flow into thread 0, create this CPU's idle thread
/// and start preemption.  Call once, after the timer runs.
pub fn init() {
    assert!(!STARTED.load(Ordering::Relaxed), "sched::init twice");
    let boot = Arc::new(Thread::new(0, "boot", None, None));
    boot.set_state(State::Running);
    let idle_stack = KStack::new(1).expect("idle thread stack");
    thread::init_context(1, &idle_stack, idle_entry);
    let idle = Arc::new(Thread::new(1, "idle0", Some(idle_stack), None));
    let hz = u64::from(arch::timer_hz().max(1));
    SLICE_TICKS.store((hz * SLICE_MS / 1000).max(1), Ordering::Relaxed);
    with_sched(|s| {
        s.threads[0] = Some(boot);
        s.threads[1] = Some(idle);
        s.cpus[0].current = 0;
        s.cpus[0].idle = 1;
    });
    SLICE_LEFT[0].store(SLICE_TICKS.load(Ordering::Relaxed), Ordering::Relaxed);
    STARTED.store(true, Ordering::Release);
    arch::set_tick_hook(on_tick);
    arch::set_irq_exit_hook(on_irq_exit);
    crate::info!(
        "sched: boot thread + idle, {} ms slices, {} KiB stacks with guard pages",
        SLICE_MS,
        thread::STACK_PAGES * 4
    );
}

extern "C" fn idle_entry(_id: usize) -> ! {
    finish_switch();
    arch::irq_enable();
    loop {
        reap_zombies();
        let runnable = with_sched(|s| s.cpus[cpu_id()].rq.len > 0);
        if runnable {
            yield_now();
        } else {
            // A wake-up from an interrupt preempts us on its exit path, so
            // halting here cannot miss work.
            arch::halt();
        }
    }
}

extern "C" fn thread_entry(_id: usize) -> ! {
    finish_switch();
    arch::irq_enable();
    let f = current().entry.lock().take();
    if let Some(f) = f {
        f();
    }
    exit();
}

/// Id of the running thread.
pub fn current_id() -> usize {
    CURRENT[cpu_id()].load(Ordering::Relaxed)
}

/// The running thread.
pub fn current() -> Arc<Thread> {
    with_sched(|s| s.thread(s.cpus[cpu_id()].current).clone())
}

/// Whether `init` has run.
pub fn started() -> bool {
    STARTED.load(Ordering::Acquire)
}

/// Context switches so far.
pub fn switches() -> u64 {
    SWITCHES.load(Ordering::Relaxed)
}

/// Give the CPU to the next Ready thread (if any); returns when scheduled again.
pub fn yield_now() {
    schedule();
}

/// Sleep for at least `ms` milliseconds (woken by the timer tick).
pub fn sleep_ms(ms: u64) {
    let until = arch::now_ns().saturating_add(ms.saturating_mul(1_000_000));
    loop {
        if arch::now_ns() >= until {
            return;
        }
        let irq = arch::irq_save();
        let mut g = SCHED.lock();
        let me = g.cpus[cpu_id()].current;
        let t = g.thread(me);
        t.wake_at.store(until, Ordering::Relaxed);
        t.set_state(State::Sleeping);
        g.sleepers |= 1 << me;
        g.next_wake = g.next_wake.min(until);
        schedule_locked(g);
        compiler_fence(Ordering::SeqCst);
        arch::irq_restore(irq);
    }
}

/// Error from [`spawn`].
pub type SpawnError = &'static str;

/// Start `f` in a new kernel thread called `name`.
pub fn spawn<F: FnOnce() + Send + 'static>(name: &str, f: F) -> Result<JoinHandle, SpawnError> {
    spawn_inner(name, None, Box::new(f))
}

/// Start `f` in a new kernel thread that runs with `space` loaded as its
/// lower-half root.
pub fn spawn_in<F: FnOnce() + Send + 'static>(
    name: &str,
    space: AddrSpace,
    f: F,
) -> Result<JoinHandle, SpawnError> {
    if space.root_pa == 0 || !space.root_pa.is_multiple_of(4096) || space.asid == 0 {
        return Err("bad address space");
    }
    spawn_inner(name, Some(space), Box::new(f))
}

fn spawn_inner(name: &str, space: Option<AddrSpace>, f: Entry) -> Result<JoinHandle, SpawnError> {
    assert!(started(), "sched::spawn before sched::init");
    reap_zombies();
    let id = with_sched(|s| {
        let free =
            (0..MAX_THREADS).find(|&i| s.threads[i].is_none() && s.reserved & (1 << i) == 0)?;
        s.reserved |= 1 << free;
        Some(free)
    })
    .ok_or("too many threads")?;
    let stack = match KStack::new(id) {
        Ok(st) => st,
        Err(e) => {
            with_sched(|s| s.reserved &= !(1 << id));
            return Err(e);
        }
    };
    thread::init_context(id, &stack, thread_entry);
    let t = Arc::new(Thread::new(id, name, Some(stack), Some(f)));
    t.set_addr_space(space);
    let handle = JoinHandle { t: Some(t.clone()) };
    with_sched(move |s| {
        s.reserved &= !(1 << id);
        s.threads[id] = Some(t);
        s.enqueue(cpu_id(), id);
    });
    Ok(handle)
}

/// Set (or clear) the running thread's lower-half root and load it now.
pub fn set_addr_space(space: Option<AddrSpace>) {
    with_sched(|s| {
        let cpu = cpu_id();
        let me = s.cpus[cpu].current;
        s.thread(me).set_addr_space(space);
        let want = space.map_or((0, 0), |s| (s.root_pa, s.asid));
        if want != s.cpus[cpu].loaded {
            match space {
                Some(sp) => arch::switch_user_root(sp.root_pa, sp.asid),
                None => arch::user_root_off(),
            }
            s.cpus[cpu].loaded = want;
        }
    });
}

/// End the running thread.  Joiners are woken; the stack is freed by the
/// joiner (or, for a detached thread, by the idle thread or a later spawn).
pub fn exit() -> ! {
    let me = current_id();
    assert!(me != 0, "the boot thread cannot exit");
    let t = current();
    arch::irq_disable();
    let mut waiters = t.exited.waiters.lock();
    let mut g = SCHED.lock();
    t.set_state(State::Dead);
    if t.detached.load(Ordering::Relaxed) {
        g.zombies |= 1 << me;
    }
    let mut bits = core::mem::take(&mut *waiters);
    while bits != 0 {
        let id = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        g.wake(id, false);
    }
    drop(waiters);
    // The table keeps the thread alive; this reference must not outlive us.
    drop(t);
    schedule_locked(g);
    unreachable!("a dead thread was scheduled");
}

/// Take dead threads out of the table (interrupts enabled, no lock held
/// when they are dropped, which frees their stacks).
fn reap(ids: u64) {
    let mut taken: [Option<Arc<Thread>>; MAX_THREADS] = [const { None }; MAX_THREADS];
    with_sched(|s| {
        let mut bits = ids;
        while bits != 0 {
            let id = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let dead = s.threads[id]
                .as_ref()
                .is_some_and(|t| t.state() == State::Dead);
            // Dead is set under the lock that stays held until the switch
            // away completes, so a Dead thread seen here is off every CPU.
            if dead && !s.is_current(id) {
                taken[id] = s.threads[id].take();
                s.zombies &= !(1 << id);
            }
        }
    });
    drop(taken);
}

fn reap_zombies() {
    let z = with_sched(|s| s.zombies);
    if z != 0 {
        reap(z);
    }
}

/// Owner's handle of a spawned thread.  Dropping it without `join`
/// detaches the thread (it is reaped automatically after it exits).
pub struct JoinHandle {
    t: Option<Arc<Thread>>,
}

impl JoinHandle {
    pub fn thread(&self) -> &Arc<Thread> {
        self.t.as_ref().expect("joined")
    }

    /// Wait for the thread to exit and free its stack.
    pub fn join(mut self) {
        let t = self.t.take().expect("joined");
        t.exited.wait_until(|| t.state() == State::Dead);
        reap(1 << t.id);
        // `t` may be the last reference: the stack is freed here.
        drop(t);
    }
}

impl Drop for JoinHandle {
    fn drop(&mut self) {
        if let Some(t) = self.t.take() {
            let id = t.id;
            with_sched(|s| {
                t.detached.store(true, Ordering::Relaxed);
                if t.state() == State::Dead {
                    s.zombies |= 1 << id;
                }
            });
        }
    }
}

/// Threads waiting for a condition.  `wait_until(cond)` returns once `cond`
/// holds; whoever makes it true calls `wake_all` (or `wake_one`).  Wake-ups
/// may be spurious (the condition is re-checked), never lost.
pub struct WaitQueue {
    /// Waiting thread ids (bit per id).  Taken with interrupts masked,
    /// before `SCHED` when both are held.
    waiters: spin::Mutex<u64>,
}

impl Default for WaitQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl WaitQueue {
    pub const fn new() -> Self {
        Self {
            waiters: spin::Mutex::new(0),
        }
    }

    /// Block until `cond()` is true.  `cond` is also evaluated with
    /// interrupts masked, so it must be quick and must not block or allocate.
    pub fn wait_until(&self, mut cond: impl FnMut() -> bool) {
        loop {
            if cond() {
                return;
            }
            let irq = arch::irq_save();
            let me = {
                let mut w = self.waiters.lock();
                let g = SCHED.lock();
                let me = g.cpus[cpu_id()].current;
                *w |= 1 << me;
                g.thread(me).set_state(State::Blocked);
                me
            };
            // A wake-up from here on makes us Ready, and `schedule` then
            // keeps us running; so checking once more cannot lose one.
            if cond() {
                let g = SCHED.lock();
                let t = g.thread(me);
                if matches!(t.state(), State::Blocked | State::Ready) {
                    t.set_state(State::Running);
                }
                drop(g);
            } else {
                schedule_locked(SCHED.lock());
            }
            *self.waiters.lock() &= !(1 << me);
            compiler_fence(Ordering::SeqCst);
            arch::irq_restore(irq);
        }
    }

    /// Wake every waiter.  Returns how many were blocked here.
    pub fn wake_all(&self) -> usize {
        self.wake(u64::MAX)
    }

    /// Wake one waiter (the lowest thread id).  Returns whether one was.
    pub fn wake_one(&self) -> bool {
        self.wake(1) > 0
    }

    fn wake(&self, max: u64) -> usize {
        let irq = arch::irq_save();
        let mut n = 0;
        {
            let mut w = self.waiters.lock();
            let mut g = SCHED.lock();
            let mut bits = *w;
            while bits != 0 && (n as u64) < max {
                let id = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                *w &= !(1 << id);
                if g.wake(id, false) {
                    n += 1;
                }
            }
        }
        compiler_fence(Ordering::SeqCst);
        arch::irq_restore(irq);
        n
    }
}

// ---------------------------------------------------------------------------
// Self-tests.

fn ms_since(t0: u64) -> u64 {
    (arch::now_ns() - t0) / 1_000_000
}

/// How long a self-test waits for something that must happen "soon" (a
/// thread to run, block or be reaped).  Generous on purpose: under QEMU
/// TCG on a loaded host the timer interrupts that drive preemption can
/// come tens of milliseconds late, or be dropped (x86 LAPIC), so a test
/// waits for the event itself, bounded only to catch "never".
const PATIENCE_MS: u64 = 10_000;

/// Sleep in 1 ms steps until `done()` or [`PATIENCE_MS`]; whether it held.
fn wait_for(done: impl Fn() -> bool) -> bool {
    let t0 = arch::now_ns();
    while !done() {
        if ms_since(t0) >= PATIENCE_MS {
            return false;
        }
        sleep_ms(1);
    }
    true
}

/// One of two threads that never yield: spin counting in `mine`, and count
/// how often `theirs` moved while this thread was away, which only
/// preemption can cause.  Stop after seeing that twice, or once the other
/// thread stopped, or after [`PATIENCE_MS`].
fn busy_until_interleaved(
    mine: &AtomicU64,
    theirs: &AtomicU64,
    saw: &AtomicU64,
    i_stopped: &AtomicBool,
    they_stopped: &AtomicBool,
) {
    let deadline = arch::now_ns() + PATIENCE_MS * 1_000_000;
    let mut last = theirs.load(Ordering::Relaxed);
    while saw.load(Ordering::Relaxed) < 2
        && !they_stopped.load(Ordering::Relaxed)
        && arch::now_ns() < deadline
    {
        mine.fetch_add(1, Ordering::Relaxed);
        let t = theirs.load(Ordering::Relaxed);
        if t != last {
            saw.fetch_add(1, Ordering::Relaxed);
            last = t;
        }
    }
    i_stopped.store(true, Ordering::Relaxed);
}

ktest! {
    /// Two threads that never yield both make progress, each seeing the
    /// other's counter move while it was switched out: only the timer's
    /// preemption can do that (without it the first thread spins until
    /// the deadline and the second never sees it move).  The threads stop
    /// on what they observe, not after a fixed 50 ms: on a loaded host the
    /// ticks that drive preemption can come late or be dropped, which only
    /// makes the test take longer.  Checked once (2026-12-04, x86) with the
    /// tick's reschedule removed: "counters 572519651 / 0" after 10 s.
    /// Under two busy host loops, 10 of 10 boots of `selftest=sched::`
    /// passed on each arch (docs/testing-under-load.md).
    fn two_busy_threads_are_preempted_round_robin() {
        static A: AtomicU64 = AtomicU64::new(0);
        static B: AtomicU64 = AtomicU64::new(0);
        static A_SAW_B: AtomicU64 = AtomicU64::new(0);
        static B_SAW_A: AtomicU64 = AtomicU64::new(0);
        static A_STOP: AtomicBool = AtomicBool::new(false);
        static B_STOP: AtomicBool = AtomicBool::new(false);
        for c in [&A, &B, &A_SAW_B, &B_SAW_A] {
            c.store(0, Ordering::Relaxed);
        }
        A_STOP.store(false, Ordering::Relaxed);
        B_STOP.store(false, Ordering::Relaxed);
        let sw0 = switches();
        let ta = spawn("busy-a", || {
            busy_until_interleaved(&A, &B, &A_SAW_B, &A_STOP, &B_STOP)
        })
        .map_err(ktest::String::from)?;
        let tb = spawn("busy-b", || {
            busy_until_interleaved(&B, &A, &B_SAW_A, &B_STOP, &A_STOP)
        })
        .map_err(ktest::String::from)?;
        ta.join();
        tb.join();
        let (a, b) = (A.load(Ordering::Relaxed), B.load(Ordering::Relaxed));
        check!(a > 0 && b > 0, "counters {} / {}", a, b);
        let (ab, ba) = (A_SAW_B.load(Ordering::Relaxed), B_SAW_A.load(Ordering::Relaxed));
        check!(
            ab > 0 && ba > 0 && ab + ba >= 3,
            "no round robin within {} ms: a saw b move {} times, b saw a {} times",
            PATIENCE_MS,
            ab,
            ba
        );
        check!(switches() - sw0 >= 4, "only {} switches", switches() - sw0);
        Ok(())
    }
}

/// Sleep 20 ms `SLEEPS` times: (shortest, longest) in ms.
fn sleep_20ms_spread() -> (u64, u64) {
    let (mut lo, mut hi) = (u64::MAX, 0);
    for _ in 0..SLEEPS {
        let t0 = arch::now_ns();
        sleep_ms(20);
        let ms = ms_since(t0);
        lo = lo.min(ms);
        hi = hi.max(ms);
    }
    (lo, hi)
}
const SLEEPS: usize = 5;

ktest! {
    /// `sleep_ms(20)` never returns early (every sleep >= 20 ms) and wakes
    /// on time: the *shortest* of five sleeps is at most 60 ms.  A loaded
    /// host delays some wake-ups (the tick that ends the sleep comes late),
    /// never all five; a sleep that is really too long (wrong unit, a lost
    /// wake-up left to a later tick) is long every time.
    fn sleep_ms_sleeps_between_20_and_60_ms() {
        let (lo, hi) = sleep_20ms_spread();
        check!((20..=60).contains(&lo), "boot thread: shortest of {} sleeps {} ms", SLEEPS, lo);
        check!(hi < PATIENCE_MS, "boot thread: a sleep took {} ms", hi);
        static SLEPT: AtomicU64 = AtomicU64::new(0);
        static LONGEST: AtomicU64 = AtomicU64::new(0);
        let h = spawn("sleeper", || {
            let (lo, hi) = sleep_20ms_spread();
            SLEPT.store(lo, Ordering::Relaxed);
            LONGEST.store(hi, Ordering::Relaxed);
        })
        .map_err(ktest::String::from)?;
        h.join();
        let (lo, hi) = (SLEPT.load(Ordering::Relaxed), LONGEST.load(Ordering::Relaxed));
        check!((20..=60).contains(&lo), "thread: shortest of {} sleeps {} ms", SLEEPS, lo);
        check!(hi < PATIENCE_MS, "thread: a sleep took {} ms", hi);
        Ok(())
    }
}

ktest! {
    fn wait_queue_wakes_waiters() {
        static WQ: WaitQueue = WaitQueue::new();
        static FLAG: AtomicU64 = AtomicU64::new(0);
        static DONE: AtomicU64 = AtomicU64::new(0);
        FLAG.store(0, Ordering::Relaxed);
        DONE.store(0, Ordering::Relaxed);
        let mut hs = alloc::vec::Vec::new();
        for i in 0..3 {
            hs.push(
                spawn("waiter", move || {
                    WQ.wait_until(|| FLAG.load(Ordering::Acquire) > i);
                    DONE.fetch_add(1, Ordering::AcqRel);
                })
                .map_err(ktest::String::from)?,
            );
        }
        // Wait for the waiters to run and block (however late the host
        // lets them run), not for a fixed 5 ms.
        let all_blocked = |hs: &[JoinHandle]| hs.iter().all(|h| h.thread().state() == State::Blocked);
        check!(wait_for(|| all_blocked(&hs)), "the waiters did not block within {} ms", PATIENCE_MS);
        check_eq!(DONE.load(Ordering::Acquire), 0, "woke before the condition held");
        // One waiter's condition becomes true; wake_one may pick another,
        // which re-checks and blocks again: wake all to be sure of progress.
        FLAG.store(1, Ordering::Release);
        check!(WQ.wake_one(), "wake_one found nobody");
        WQ.wake_all();
        // The first waiter finishes; the other two re-check and block again.
        let settled = || {
            DONE.load(Ordering::Acquire) >= 1
                && hs[1].thread().state() == State::Blocked
                && hs[2].thread().state() == State::Blocked
        };
        check!(wait_for(settled), "after the first condition: done {}", DONE.load(Ordering::Acquire));
        check_eq!(DONE.load(Ordering::Acquire), 1, "after the first condition");
        FLAG.store(3, Ordering::Release);
        WQ.wake_all();
        for h in hs {
            h.join();
        }
        check_eq!(DONE.load(Ordering::Acquire), 3);
        Ok(())
    }
}

ktest! {
    fn join_reclaims_the_stack() {
        let pages0 = thread::live_stack_pages();
        let h = spawn("short", || {
            sleep_ms(2);
        })
        .map_err(ktest::String::from)?;
        let (bottom, top) = h.thread().stack_range();
        check!(arch::kernel_translate(bottom).is_some(), "stack not mapped");
        check_eq!(thread::live_stack_pages(), pages0 + thread::STACK_PAGES as usize);
        h.join();
        check_eq!(thread::live_stack_pages(), pages0, "stack pages after join");
        check!(arch::kernel_translate(bottom).is_none(), "stack bottom still mapped");
        check!(arch::kernel_translate(top - 8).is_none(), "stack top still mapped");
        // Detached threads are reaped too (by idle or the next spawn).
        let d = spawn("detached", || {}).map_err(ktest::String::from)?;
        drop(d);
        wait_for(|| thread::live_stack_pages() == pages0);
        check_eq!(thread::live_stack_pages(), pages0, "after a detached thread");
        Ok(())
    }
}

ktest! {
    fn thread_stack_has_unmapped_guard_page() {
        static GUARD_FAULT: AtomicU64 = AtomicU64::new(0);
        static BOTTOM_OK: AtomicU64 = AtomicU64::new(0);
        GUARD_FAULT.store(0, Ordering::Relaxed);
        BOTTOM_OK.store(0, Ordering::Relaxed);
        let h = spawn("guarded", || {
            let me = current();
            let g = me.stack_guard().expect("spawned threads have guards");
            let (bottom, _) = me.stack_range();
            // What an overflow would touch first: the page just below.
            if let Err(f) = arch::probe_write(g.end - 8, 0) {
                GUARD_FAULT.store(f.addr, Ordering::Relaxed);
            }
            if arch::probe_read(bottom).is_ok() {
                BOTTOM_OK.store(1, Ordering::Relaxed);
            }
        })
        .map_err(ktest::String::from)?;
        let g = h.thread().stack_guard().expect("guard");
        h.join();
        check_eq!(GUARD_FAULT.load(Ordering::Relaxed), g.end - 8, "guard page write not caught");
        check_eq!(BOTTOM_OK.load(Ordering::Relaxed), 1, "stack bottom not readable");
        Ok(())
    }
}

#[repr(C, align(4096))]
struct RootTable([u64; 512]);

ktest! {
    fn thread_runs_with_its_address_space_root() {
        let mut table = Box::new(RootTable([0; 512]));
        arch::user_root_init(&mut table.0);
        let va = &*table as *const RootTable as u64;
        let root_pa = arch::kernel_translate(va).map(|t| t.pa).ok_or("root table not mapped")?;
        check!(arch::current_user_root().is_none(), "a user root is loaded before the test");
        static SEEN: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
        static ASID: AtomicU64 = AtomicU64::new(0);
        for s in &SEEN {
            s.store(0, Ordering::Relaxed);
        }
        let space = AddrSpace { root_pa, asid: 7 };
        let h = spawn_in("in-space", space, || {
            let r = arch::current_user_root();
            SEEN[0].store(r.map_or(0, |r| r.0), Ordering::Relaxed);
            ASID.store(r.map_or(0, |r| u64::from(r.1)), Ordering::Relaxed);
            // Survives being switched out and back in.
            sleep_ms(3);
            yield_now();
            SEEN[1].store(arch::current_user_root().map_or(0, |r| r.0), Ordering::Relaxed);
        })
        .map_err(ktest::String::from)?;
        h.join();
        check_eq!(SEEN[0].load(Ordering::Relaxed), root_pa, "root inside the thread");
        check_eq!(SEEN[1].load(Ordering::Relaxed), root_pa, "root after sleeping");
        if arch::asid_bits() > 0 {
            check_eq!(ASID.load(Ordering::Relaxed), 7, "ASID/PCID loaded with the root");
        }
        check!(arch::current_user_root().is_none(), "root still loaded after the thread");
        // The running thread can enter and leave a space too.
        set_addr_space(Some(space));
        let inside = arch::current_user_root();
        set_addr_space(None);
        check_eq!(inside.map(|r| r.0), Some(root_pa), "set_addr_space");
        check!(arch::current_user_root().is_none(), "set_addr_space(None)");
        drop(table);
        Ok(())
    }
}

ktest! {
    fn preempt_disable_keeps_the_cpu() {
        static OTHER: AtomicU64 = AtomicU64::new(0);
        static STOP: AtomicBool = AtomicBool::new(false);
        OTHER.store(0, Ordering::Relaxed);
        STOP.store(false, Ordering::Relaxed);
        let h = spawn("spinner", || {
            check_name("spinner");
            while !STOP.load(Ordering::Relaxed) {
                OTHER.fetch_add(1, Ordering::Relaxed);
            }
        })
        .map_err(ktest::String::from)?;
        check_eq!(h.thread().name.as_str(), "spinner");
        // Let the spinner start first, so a preemption would show.
        check!(
            wait_for(|| OTHER.load(Ordering::Relaxed) > 0),
            "the spinner never started"
        );
        let (before, after, ticked) = {
            let _g = preempt_disable();
            let before = OTHER.load(Ordering::Relaxed);
            // Three slices' worth of timer *ticks* (each a chance to
            // preempt), however long a loaded host takes to deliver them.
            let k0 = arch::ticks();
            let want = 3 * SLICE_TICKS.load(Ordering::Relaxed);
            let t0 = arch::now_ns();
            while arch::ticks() - k0 < want && ms_since(t0) < PATIENCE_MS {
                core::hint::spin_loop();
            }
            (before, OTHER.load(Ordering::Relaxed), arch::ticks() - k0)
        };
        check!(ticked >= 3, "only {} ticks while preemption was off", ticked);
        // Preemptible again: the spinner gets the CPU at a coming tick.
        let t0 = arch::now_ns();
        while OTHER.load(Ordering::Relaxed) == after && ms_since(t0) < PATIENCE_MS {
            core::hint::spin_loop();
        }
        let later = OTHER.load(Ordering::Relaxed);
        STOP.store(true, Ordering::Relaxed);
        h.join();
        check_eq!(before, after, "the spinner ran while preemption was off");
        check!(later > after, "the spinner never ran afterwards");
        Ok(())
    }
}

fn check_name(want: &str) {
    assert_eq!(current().name, want, "current() inside a thread");
}

ktest! {
    fn wait_queue_ping_pong_under_preemption() {
        // Two threads hand a token back and forth through wait queues,
        // doing a little work between hand-offs so timer interrupts (and
        // preemptions) land all over them, while two other threads spin and
        // yield.  A lost wake-up would leave the token stuck.
        static TOKEN: AtomicU64 = AtomicU64::new(0);
        static WQ: [WaitQueue; 2] = [const { WaitQueue::new() }; 2];
        static STOP: AtomicBool = AtomicBool::new(false);
        const ROUNDS: u64 = 300;
        TOKEN.store(0, Ordering::Relaxed);
        STOP.store(false, Ordering::Relaxed);
        let mut hs = alloc::vec::Vec::new();
        for side in 0..2u64 {
            hs.push(
                spawn("pingpong", move || {
                    for r in 0..ROUNDS {
                        let mine = 2 * r + side;
                        WQ[side as usize].wait_until(|| TOKEN.load(Ordering::Acquire) == mine);
                        spin_us((r * 37 + side * 11) % 150);
                        TOKEN.store(mine + 1, Ordering::Release);
                        WQ[1 - side as usize].wake_all();
                    }
                })
                .map_err(ktest::String::from)?,
            );
        }
        let mut busy = alloc::vec::Vec::new();
        for _ in 0..2 {
            busy.push(
                spawn("busy", || {
                    while !STOP.load(Ordering::Relaxed) {
                        spin_us(100);
                        yield_now();
                    }
                })
                .map_err(ktest::String::from)?,
            );
        }
        let t0 = arch::now_ns();
        while TOKEN.load(Ordering::Acquire) != 2 * ROUNDS && ms_since(t0) < 5000 {
            sleep_ms(1);
        }
        let done = TOKEN.load(Ordering::Acquire);
        STOP.store(true, Ordering::Relaxed);
        for h in busy {
            h.join();
        }
        check_eq!(done, 2 * ROUNDS, "token stuck (lost wake-up?)");
        for h in hs {
            h.join();
        }
        Ok(())
    }
}

fn spin_us(us: u64) {
    let t0 = arch::now_ns();
    while arch::now_ns() - t0 < us * 1000 {
        core::hint::spin_loop();
    }
}

ktest! {
    /// Kernel threads keep a live f64 accumulator across many
    /// preemptions.  What holds it depends on the target: on arm64
    /// (`aarch64-unknown-none` has FP/NEON) a `d` register, so this checks
    /// the kernel's own FP registers survive a switch; on x86 the kernel is
    /// soft-float, so the value lives in general registers (or the stack)
    /// and this checks only those.  Hence the name: it was called
    /// `fp_state_survives_preemption`, which it is not on x86.  The FP/SIMD
    /// state that matters to programs (user xmm0-15/MXCSR, v0-v31/FPCR of
    /// two processes preempted by the timer, not yielding) is checked by the
    /// user test `fpu_state_survives_preemption` (tests/user).
    fn kernel_thread_registers_survive_preemption() {
        // A clobbered register would break the identity below.
        static BAD: AtomicU64 = AtomicU64::new(0);
        BAD.store(0, Ordering::Relaxed);
        let end = arch::now_ns() + 30_000_000;
        let mut hs = alloc::vec::Vec::new();
        for i in 0..3u64 {
            hs.push(
                spawn("fp", move || {
                    let mut x = core::hint::black_box(i as f64 + 0.5);
                    let mut n = 0u64;
                    while arch::now_ns() < end {
                        x = core::hint::black_box(x * 1.0 + 1.0);
                        n += 1;
                    }
                    if x != i as f64 + 0.5 + n as f64 {
                        BAD.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .map_err(ktest::String::from)?,
            );
        }
        for h in hs {
            h.join();
        }
        check_eq!(BAD.load(Ordering::Relaxed), 0, "threads with a corrupted FP accumulator");
        Ok(())
    }
}
