//! Kernel threads and a preemptive round-robin scheduler on every CPU.
//!
//! * Threads: [`spawn`] / [`spawn_in`] (a closure on its own guarded stack,
//!   see `thread.rs`), [`exit`], [`JoinHandle::join`], [`yield_now`],
//!   [`sleep_ms`], [`WaitQueue`].  The boot flow becomes thread 0 ("boot")
//!   at [`init`]; each CPU has an idle thread that reaps detached dead
//!   threads and halts when nothing is runnable (a secondary's start-up
//!   flow becomes its idle thread at [`start_secondary`]).
//! * SMP: one run queue per CPU.  A thread made runnable (spawned, woken)
//!   goes to a CPU its affinity allows: the one it last ran on if that one
//!   is idle, else any idle one, else the allowed CPU with the shortest
//!   queue; an idle target is kicked with a reschedule IPI.  A CPU whose
//!   own queue is empty when it schedules steals the first thread it may
//!   run from another CPU's queue (so an idle CPU picks up work queued
//!   behind a busy one at its next tick at the latest).  A thread whose
//!   affinity no longer allows its CPU moves when it is next switched out.
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
//! inside it, indexed by CPU id).  One lock for all CPUs keeps the
//! hand-over below and stealing simple; with at most `MAX_CPUS` (8) CPUs
//! and 5 ms slices it is not contended enough to matter.  It is always taken
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
use crate::task::thread::{self, KStack, MAX_THREADS};
use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering, compiler_fence};

/// CPUs the scheduler state is sized for: `mm::cpu::MAX_CPUS`, the one
/// bound on CPU ids.
pub const NR_CPUS: usize = mm::cpu::MAX_CPUS;
const _: () = assert!(NR_CPUS <= 64);
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
    fpu: mm::sync::Mutex<arch::FpuState>,
    entry: mm::sync::Mutex<Option<Entry>>,
    /// Woken when the thread exits (joiners wait here).
    exited: WaitQueue,
    /// The CPU it last ran on or was queued for.
    cpu: AtomicUsize,
    /// CPUs it may run on (bit per CPU; `sched_setaffinity`).
    affinity: AtomicU64,
    /// When it last blocked on a wait queue (ns), for the hung-task report.
    blocked_at: AtomicU64,
    /// `(bottom, top)` of the stack of a thread that runs on a stack it did
    /// not get from `spawn` (the boot thread, the secondaries' idle threads).
    boot_stack: (u64, u64),
    /// Where the thread last blocked on a wait queue (its "wait channel",
    /// the caller of `wait_until`), for the hung-system report.  A leaf
    /// lock, set under `SCHED`; the report only try-locks it.
    wchan: mm::sync::Mutex<Option<&'static core::panic::Location<'static>>>,
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
            fpu: mm::sync::Mutex::new(arch::FpuState::initial()),
            entry: mm::sync::Mutex::new(entry),
            exited: WaitQueue::new(),
            wchan: mm::sync::Mutex::new(None),
            cpu: AtomicUsize::new(0),
            blocked_at: AtomicU64::new(0),
            affinity: AtomicU64::new(u64::MAX),
            boot_stack: {
                let l = arch::kernel_layout();
                (l.stack.start, l.stack.end)
            },
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
    #[cfg(feature = "selftest")]
    pub fn stack_guard(&self) -> Option<core::ops::Range<u64>> {
        self.stack.as_ref().map(|s| s.guard())
    }

    /// `(bottom, top)` of the stack the thread runs on.
    pub fn stack_range(&self) -> (u64, u64) {
        match &self.stack {
            Some(s) => (s.bottom(), s.top()),
            None => self.boot_stack,
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

    /// Take out the first queued thread `ok` accepts.
    fn take_first(&mut self, mut ok: impl FnMut(usize) -> bool) -> Option<usize> {
        let k = (0..self.len).find(|&k| ok(self.ring[(self.head + k) % MAX_THREADS] as usize))?;
        let id = self.ring[(self.head + k) % MAX_THREADS] as usize;
        for j in k..self.len - 1 {
            self.ring[(self.head + j) % MAX_THREADS] = self.ring[(self.head + j + 1) % MAX_THREADS];
        }
        self.len -= 1;
        Some(id)
    }

    fn push(&mut self, id: usize) {
        assert!(self.len < MAX_THREADS, "run queue overflow");
        self.ring[(self.head + self.len) % MAX_THREADS] = id as u8;
        self.len += 1;
    }

    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len).map(|k| self.ring[(self.head + k) % MAX_THREADS] as usize)
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
    /// CPUs that run the scheduler (bit per CPU).
    online: u64,
    cpus: [Cpu; NR_CPUS],
}

/// The scheduler lock.  See the module documentation for what it protects
/// and the lock order (`WaitQueue::waiters` → `SCHED`; innermost; taken
/// with interrupts masked; handed over across context switches).
static SCHED: mm::sync::Mutex<Sched> = mm::sync::Mutex::new(Sched {
    threads: [const { None }; MAX_THREADS],
    reserved: 0,
    queued: 0,
    zombies: 0,
    sleepers: 0,
    next_wake: u64::MAX,
    online: 0,
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
/// CPUs that run threads (set once by `init` / `start_secondary`); the
/// tick and irq-exit hooks do nothing on the others.
static IN_SCHED: [AtomicBool; NR_CPUS] = [const { AtomicBool::new(false) }; NR_CPUS];
/// Context switches so far (all CPUs).
static SWITCHES: AtomicU64 = AtomicU64::new(0);

/// The running CPU.  Callers that need it to stay right mask interrupts
/// or hold the lock (a preemptible thread may move between the read and
/// the use).
fn cpu_id() -> usize {
    arch::cpu_id()
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
            self.thread(id).cpu.store(cpu, Ordering::Relaxed);
        }
    }

    /// CPUs thread `id` may run on now (never empty: a mask that allows no
    /// online CPU falls back to all of them).
    fn allowed(&self, id: usize) -> u64 {
        let a = self.thread(id).affinity.load(Ordering::Relaxed) & self.online;
        if a == 0 { self.online } else { a }
    }

    fn cpu_idle(&self, cpu: usize) -> bool {
        let c = &self.cpus[cpu];
        c.current == c.idle && c.rq.len == 0
    }

    /// Queue runnable thread `id` on a CPU (see the module documentation)
    /// and kick that CPU if it idles.
    fn place(&mut self, id: usize) {
        let allowed = self.allowed(id);
        let last = self.thread(id).cpu.load(Ordering::Relaxed);
        let ok = |c: usize| c < NR_CPUS && allowed & (1 << c) != 0;
        let cpu = if ok(last) && self.cpu_idle(last) {
            last
        } else if let Some(c) = (0..NR_CPUS).find(|&c| ok(c) && self.cpu_idle(c)) {
            c
        } else if ok(last) {
            // Every allowed CPU is busy: stay where the cache is, unless
            // another allowed one has a shorter queue.
            (0..NR_CPUS)
                .filter(|&c| ok(c))
                .min_by_key(|&c| (self.cpus[c].rq.len, c != last))
                .unwrap_or(last)
        } else {
            (0..NR_CPUS)
                .filter(|&c| ok(c))
                .min_by_key(|&c| self.cpus[c].rq.len)
                .unwrap_or(0)
        };
        self.enqueue(cpu, id);
        self.kick(cpu);
    }

    /// Make `cpu` look at its queue soon: at once if it idles (an IPI when
    /// it is another CPU); a busy CPU takes it at its next slice end.
    fn kick(&mut self, cpu: usize) {
        if self.cpus[cpu].current != self.cpus[cpu].idle {
            return;
        }
        NEED_RESCHED[cpu].store(true, Ordering::Relaxed);
        if cpu != cpu_id() {
            RESCHED_IPIS.fetch_add(1, Ordering::Relaxed);
            arch::send_ipi(cpu, IPI_RESCHED);
        }
    }

    /// A thread for `cpu` from another CPU's queue (one `cpu` may run).
    fn steal(&mut self, cpu: usize) -> Option<usize> {
        let online = self.online;
        let victim = (0..NR_CPUS)
            .filter(|&c| c != cpu && online & (1 << c) != 0 && self.cpus[c].rq.len > 0)
            .max_by_key(|&c| self.cpus[c].rq.len)?;
        let threads = &self.threads;
        let id = self.cpus[victim].rq.take_first(|id| {
            threads[id].as_ref().is_some_and(|t| {
                let a = t.affinity.load(Ordering::Relaxed) & online;
                a & (1 << cpu) != 0 || a == 0
            })
        })?;
        self.queued &= !(1 << id);
        self.thread(id).cpu.store(cpu, Ordering::Relaxed);
        STEALS.fetch_add(1, Ordering::Relaxed);
        Some(id)
    }

    /// Whether `cpu` has something to run (its queue, or one it may steal).
    fn has_work(&self, cpu: usize) -> bool {
        self.cpus[cpu].rq.len > 0
            || (0..NR_CPUS).any(|c| {
                c != cpu
                    && self.cpus[c].rq.len > 0
                    && self.cpus[c].rq.iter().any(|id| {
                        self.threads[id].as_ref().is_some_and(|t| {
                            let a = t.affinity.load(Ordering::Relaxed) & self.online;
                            a & (1 << cpu) != 0 || a == 0
                        })
                    })
            })
    }

    /// Whether thread `id` runs on some CPU (offline CPUs' slots say 0).
    fn is_current(&self, id: usize) -> bool {
        (0..NR_CPUS).any(|c| self.online & (1 << c) != 0 && self.cpus[c].current == id)
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
            self.place(id);
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
fn schedule_locked(mut g: mm::sync::MutexGuard<'_, Sched>) {
    let cpu = cpu_id();
    let prev = g.cpus[cpu].current;
    let idle = g.cpus[cpu].idle;
    match g.thread(prev).state() {
        State::Running | State::Ready if prev != idle => {
            g.thread(prev).set_state(State::Ready);
            if g.allowed(prev) & (1 << cpu) != 0 {
                g.enqueue(cpu, prev);
            } else {
                // Its affinity moved it away from this CPU.
                g.place(prev);
            }
        }
        State::Running | State::Ready => g.thread(prev).set_state(State::Ready),
        State::Blocked | State::Sleeping | State::Dead => {}
    }
    let next = match g.cpus[cpu].rq.pop() {
        Some(n) => {
            g.queued &= !(1 << n);
            n
        }
        None => match g.steal(cpu) {
            Some(n) => n,
            None => idle,
        },
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
        switch_mm(g.cpus[cpu].loaded, want, cpu);
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

/// Timer tick hook (interrupts masked, on every CPU): wake sleepers, count
/// the slice down.
pub fn on_tick() {
    let cpu = cpu_id();
    // The arch runs the hooks on every CPU, also those not (yet) running
    // threads (before `start_secondary`, or with `nosmp`).
    if !IN_SCHED[cpu].load(Ordering::Relaxed) {
        return;
    }
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
    if g.cpus[cpu].current == g.cpus[cpu].idle && g.has_work(cpu) {
        NEED_RESCHED[cpu].store(true, Ordering::Relaxed);
    }
    if cpu != 0 {
        return;
    }
    hung_check(&g, cpu, now);
    if let Some(what) = crate::selftest::overdue(now) {
        // A self-test has hung with interrupts still arriving: say what
        // every thread is doing, then fail the run now rather than at the
        // runner's timeout (the panic reports the test as FAILED).
        g.dump(cpu, now);
        drop(g);
        panic!("self-test watchdog: {what}");
    }
}

/// The hung-task report (`hung_task_timeout_secs=N` on the command line,
/// Linux's name; 0 or absent = off): a thread blocked on a wait queue
/// without a deadline for N seconds is waiting for something that may
/// never come (a lost wake-up, a deadlock, or just input).  The scheduler
/// state with each thread's wait channel is printed once; with
/// `hung_task_panic` the kernel then panics, so a test run fails at once
/// with the report instead of at its timeout.  As Linux's detector, it
/// looks at each task's own wait: any wait without a deadline except an
/// interruptible one (`WaitQueue::wait_interruptible`, Linux's
/// `TASK_INTERRUPTIBLE`: `wait4` for a child still at work).
static HUNG_NS: AtomicU64 = AtomicU64::new(0);
static HUNG_PANIC: AtomicBool = AtomicBool::new(false);
static HUNG_REPORTED: AtomicBool = AtomicBool::new(false);

fn hung_check(g: &Sched, cpu: usize, now: u64) {
    let limit = HUNG_NS.load(Ordering::Relaxed);
    if limit == 0 || cpu != 0 || HUNG_REPORTED.load(Ordering::Relaxed) {
        return;
    }
    let hung = g.threads.iter().flatten().find(|t| {
        t.state() == State::Blocked
            && g.sleepers & (1 << t.id) == 0
            && now.saturating_sub(t.blocked_at.load(Ordering::Relaxed)) >= limit
    });
    let Some(t) = hung else {
        return;
    };
    HUNG_REPORTED.store(true, Ordering::Relaxed);
    crate::log::print_unlocked(format_args!(
        "hung: thread {} '{}' blocked for more than {} s\n",
        t.id,
        t.name,
        limit / 1_000_000_000
    ));
    g.dump(cpu, now);
    if HUNG_PANIC.load(Ordering::Relaxed) {
        panic!("hung: a thread blocked too long (hung_task_panic)");
    }
}

impl Sched {
    /// Every thread's state, printed without allocating or taking the
    /// console lock (this runs in the timer interrupt).
    fn dump(&self, cpu: usize, now: u64) {
        crate::log::print_unlocked(format_args!(
            "watchdog: on cpu {}, heap lock {}\n",
            cpu,
            if crate::mem::memory::heap_locked() {
                "held"
            } else {
                "free"
            },
        ));
        for c in (0..NR_CPUS).filter(|&c| self.online & (1 << c) != 0) {
            crate::log::print_unlocked(format_args!(
                "watchdog: cpu {} current {} idle {}, run queue {} threads, preempt count {}\n",
                c,
                self.cpus[c].current,
                self.cpus[c].idle,
                self.cpus[c].rq.len,
                PREEMPT_COUNT[c].load(Ordering::Relaxed),
            ));
        }
        for t in self.threads.iter().flatten() {
            let wake = t.wake_at.load(Ordering::Relaxed);
            crate::log::print_unlocked(format_args!(
                "watchdog:   thread {} '{}' {:?} (cpu {}), saved preempt {}, wake in {} ms, user root {:#x}, last wait {}\n",
                t.id,
                t.name,
                t.state(),
                t.cpu.load(Ordering::Relaxed),
                t.preempt.load(Ordering::Relaxed),
                wake.saturating_sub(now) / 1_000_000,
                t.space_root.load(Ordering::Relaxed),
                WaitChan(t.wchan.try_lock().and_then(|w| *w)),
            ));
        }
    }
}

/// A wait channel for the report: `file:line` of the wait, or `-`.
struct WaitChan(Option<&'static core::panic::Location<'static>>);

impl core::fmt::Display for WaitChan {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(l) => write!(f, "{}:{}", l.file(), l.line()),
            None => f.write_str("-"),
        }
    }
}

/// IRQ-exit hook (interrupts masked, after the EOI): preempt if due.
pub fn on_irq_exit(from_user: bool) {
    let cpu = cpu_id();
    if !IN_SCHED[cpu].load(Ordering::Relaxed) {
        return;
    }
    if PREEMPT_COUNT[cpu].load(Ordering::Relaxed) != 0 {
        return;
    }
    if NEED_RESCHED[cpu].load(Ordering::Relaxed) {
        schedule_locked(SCHED.lock());
    }
    // Only an interrupt of user code: kernel code interrupted here may
    // hold references and locks that ending the thread would leak.
    if from_user && let Some(f) = RESUME_HOOK.get() {
        f();
    }
}

/// Run at the end of every preemptible interrupt, in the interrupted thread
/// (after it was switched back in, if it was switched out): the process
/// code ends there a user thread another thread of its group killed while
/// it ran user code (`exit_group`, a fatal signal).  Interrupts masked.
static RESUME_HOOK: spin::Once<fn()> = spin::Once::new();

/// Install the [`RESUME_HOOK`] (once; later calls keep the first).
pub fn set_resume_hook(f: fn()) {
    RESUME_HOOK.call_once(|| f);
}

/// Disable preemption of the running thread until the guard is dropped
/// (nests).  Interrupts stay enabled; explicit `yield_now`/`sleep_ms`/waits
/// still switch, and the count is saved and restored with the thread.
pub fn preempt_disable() -> PreemptGuard {
    // Masked, so the thread cannot move between reading its CPU and
    // counting there; once the count is up it cannot move at all (a thread
    // that blocks takes its count along, see `schedule_locked`).
    let irq = arch::irq_save();
    PREEMPT_COUNT[cpu_id()].fetch_add(1, Ordering::Relaxed);
    arch::irq_restore(irq);
    compiler_fence(Ordering::SeqCst);
    PreemptGuard(core::marker::PhantomData)
}

/// [`preempt_disable`] without a guard, for the memory manager's
/// page-table lock (`mm::sync::PtLock`, through `CpuOps`): each call must
/// be matched by one [`preempt_enable_raw`] on the same thread.
pub fn preempt_disable_raw() {
    core::mem::forget(preempt_disable());
}

/// Undoes one [`preempt_disable_raw`].
pub fn preempt_enable_raw() {
    drop(PreemptGuard(core::marker::PhantomData));
}

/// Preemption of the running thread is off while this lives.  Not `Send`:
/// it must be dropped by the thread (and on the CPU) that took it.
pub struct PreemptGuard(core::marker::PhantomData<*const ()>);

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
    // The boot flow stays on CPU 0 until `kernel_main` lets it go: the
    // rest of boot programs CPU 0's own registers (user-mode MSRs, PMU).
    boot.affinity.store(1, Ordering::Relaxed);
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
        s.online |= 1;
    });
    IN_SCHED[0].store(true, Ordering::Release);
    SLICE_LEFT[0].store(SLICE_TICKS.load(Ordering::Relaxed), Ordering::Relaxed);
    if let Some(secs) =
        crate::cmdline::value("hung_task_timeout_secs").and_then(|v| v.parse::<u64>().ok())
    {
        HUNG_NS.store(secs.saturating_mul(1_000_000_000), Ordering::Relaxed);
    }
    HUNG_PANIC.store(crate::cmdline::has("hung_task_panic"), Ordering::Relaxed);
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
    idle_loop()
}

fn idle_loop() -> ! {
    loop {
        reap_zombies();
        let runnable = with_sched(|s| s.has_work(cpu_id()));
        if runnable {
            yield_now();
        } else {
            // Work queued for this CPU from now on comes with a tick or a
            // reschedule IPI, which ends the halt (and, on the interrupt's
            // exit path, may switch to it right away); at worst the loop
            // sees it one tick later.
            arch::halt();
        }
    }
}

/// IPI reason: "look at your run queue" (`Sched::kick`).
pub const IPI_RESCHED: u32 = 1 << 3;
/// Reschedule IPIs sent, and threads taken from another CPU's queue.
pub static RESCHED_IPIS: AtomicU64 = AtomicU64::new(0);
pub static STEALS: AtomicU64 = AtomicU64::new(0);

/// The IPI hook's part for [`IPI_RESCHED`] (interrupts masked): the
/// interrupt's exit path (or the idle loop) switches.
pub fn on_resched_ipi() {
    NEED_RESCHED[cpu_id()].store(true, Ordering::Relaxed);
}

/// Make the running secondary CPU `cpu` a scheduler CPU: its start-up flow
/// becomes its idle thread (on the 32 KiB, 4K-aligned stack both arches
/// give a secondary; the bounds are found from the stack pointer), and it
/// runs threads from then on.  Interrupts may be in any state.
pub fn start_secondary(cpu: usize) -> ! {
    assert!(
        started() && cpu < NR_CPUS && cpu != 0,
        "start_secondary({cpu})"
    );
    let probe = 0u8;
    let sp = core::ptr::addr_of!(probe) as u64;
    let top = sp.next_multiple_of(4096);
    let stack = (top - 32 * 1024, top);
    let id = with_sched(|s| {
        let free =
            (0..MAX_THREADS).find(|&i| s.threads[i].is_none() && s.reserved & (1 << i) == 0)?;
        s.reserved |= 1 << free;
        Some(free)
    })
    .expect("smp: no thread slot for an idle thread");
    let mut idle = Thread::new(id, &alloc::format!("idle{cpu}"), None, None);
    idle.boot_stack = stack;
    idle.cpu.store(cpu, Ordering::Relaxed);
    idle.affinity.store(1 << cpu, Ordering::Relaxed);
    idle.set_state(State::Running);
    let idle = Arc::new(idle);
    arch::set_thread_stack(stack.0, stack.1);
    SLICE_LEFT[cpu].store(SLICE_TICKS.load(Ordering::Relaxed), Ordering::Relaxed);
    with_sched(|s| {
        s.reserved &= !(1 << id);
        s.threads[id] = Some(idle);
        s.cpus[cpu].current = id;
        s.cpus[cpu].idle = id;
        s.cpus[cpu].loaded = (0, 0);
        CURRENT[cpu].store(id, Ordering::Relaxed);
        s.online |= 1 << cpu;
    });
    IN_SCHED[cpu].store(true, Ordering::Release);
    arch::irq_enable();
    idle_loop()
}

/// CPUs that run threads (bit per CPU).
pub fn online_mask() -> u64 {
    with_sched(|s| s.online)
}

/// The CPU thread `id` last ran on or was queued for (`None`: no such
/// thread).
pub fn last_cpu(id: usize) -> Option<usize> {
    with_sched(|s| {
        s.threads
            .get(id)?
            .as_ref()
            .map(|t| t.cpu.load(Ordering::Relaxed))
    })
}

/// Thread `id`'s CPU affinity mask (`None`: no such thread).
pub fn affinity(id: usize) -> Option<u64> {
    with_sched(|s| {
        s.threads
            .get(id)?
            .as_ref()
            .map(|t| t.affinity.load(Ordering::Relaxed))
    })
}

/// Set thread `id`'s CPU affinity (bit per CPU).  Refused (false) when the
/// mask allows no CPU that runs threads, as Linux's EINVAL.  A thread
/// queued on a CPU it may no longer use moves at once; one running there
/// moves when it is next switched out (the CPU is asked to reschedule).
pub fn set_affinity(id: usize, mask: u64) -> bool {
    with_sched(|s| {
        if mask & s.online == 0 {
            return false;
        }
        let Some(t) = s.threads.get(id).and_then(|t| t.clone()) else {
            return false;
        };
        t.affinity.store(mask, Ordering::Relaxed);
        let cpu = t.cpu.load(Ordering::Relaxed);
        if mask & (1 << cpu) != 0 {
            return true;
        }
        if s.queued & (1 << id) != 0 {
            if s.cpus[cpu].rq.take_first(|q| q == id).is_some() {
                s.queued &= !(1 << id);
                s.place(id);
            }
        } else if s.cpus[cpu].current == id {
            NEED_RESCHED[cpu].store(true, Ordering::Relaxed);
            if cpu != cpu_id() {
                arch::send_ipi(cpu, IPI_RESCHED);
            }
        }
        true
    })
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
    // Masked: a thread moved between reading the CPU and its `current`
    // would read another thread's id.
    let irq = arch::irq_save();
    let id = CURRENT[cpu_id()].load(Ordering::Relaxed);
    arch::irq_restore(irq);
    id
}

/// The running thread.
pub fn current() -> Arc<Thread> {
    with_sched(|s| s.thread(s.cpus[cpu_id()].current).clone())
}

/// The panic report's part (interrupts masked): which CPU and thread
/// panicked, then the call chain (`thread::print_backtrace`).  The panic may
/// have come with `SCHED` held, by this CPU or for a moment by another: the
/// thread's name and stack are read only if the lock comes free within a
/// bounded number of tries, and the report goes on without them otherwise.
pub fn panic_report() {
    let cpu = cpu_id();
    let mut stack = None;
    if !IN_SCHED[cpu].load(Ordering::Relaxed) {
        crate::log::print_unlocked(format_args!("on CPU {cpu}, outside the scheduler\n"));
    } else {
        let id = CURRENT[cpu].load(Ordering::Relaxed);
        let g = (0..10_000).find_map(|_| {
            let g = SCHED.try_lock();
            if g.is_none() {
                arch::cpu_relax();
            }
            g
        });
        match g.as_ref().and_then(|g| g.threads[id].as_ref()) {
            Some(t) => {
                crate::log::print_unlocked(format_args!(
                    "on CPU {cpu}, thread {id} '{}'\n",
                    t.name
                ));
                let (bottom, top) = t.stack_range();
                stack = Some(bottom..top);
            }
            None => crate::log::print_unlocked(format_args!(
                "on CPU {cpu}, thread {id} (scheduler lock busy: no name)\n"
            )),
        }
    }
    thread::print_backtrace(stack);
}

/// Whether `init` has run.
pub fn started() -> bool {
    STARTED.load(Ordering::Acquire)
}

/// Context switches so far.
#[cfg_attr(not(feature = "selftest"), allow(dead_code))]
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

/// Make the threads in `ids` (bit per id) runnable if they are blocked on a
/// wait queue or asleep: their waits re-check their condition, which for a
/// killed user thread includes being killed (`exit_group`).  A thread
/// woken this way stays registered with its queue until it runs.
pub fn interrupt(ids: u64) {
    let me = cpu_id();
    let running = with_sched(|s| {
        let mut running = 0u64;
        let mut bits = ids;
        while bits != 0 {
            let id = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            s.wake(id, true);
            for c in 0..NR_CPUS {
                if c != me && s.online & (1 << c) != 0 && s.cpus[c].current == id {
                    running |= 1 << c;
                }
            }
        }
        running
    });
    // Those running on another CPU (in user mode, say) take an interrupt
    // now rather than at their next tick: the interrupt's exit path sees
    // what the caller set (a kill) — Linux's `kick_process`.
    for c in (0..NR_CPUS).filter(|c| running & (1 << c) != 0) {
        RESCHED_IPIS.fetch_add(1, Ordering::Relaxed);
        arch::send_ipi(c, IPI_RESCHED);
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
    if space.is_some() {
        // A user thread inherits its creator's CPU affinity (fork, clone).
        let mine = with_sched(|s| {
            s.thread(s.cpus[cpu_id()].current)
                .affinity
                .load(Ordering::Relaxed)
        });
        t.affinity.store(mine, Ordering::Relaxed);
    }
    let handle = JoinHandle { t: Some(t.clone()) };
    with_sched(move |s| {
        s.reserved &= !(1 << id);
        t.cpu.store(cpu_id(), Ordering::Relaxed);
        s.threads[id] = Some(t);
        s.place(id);
    });
    Ok(handle)
}

/// Switch CPU `cpu` (the running one, interrupts masked) from the
/// lower-half root `prev` to `next` (`(root_pa, asid)`, `(0, 0)` for the
/// kernel's own): Linux's `switch_mm_irqs_off`.
///
/// The CPU joins `next`'s CPU set before it loads the root, and, where
/// flushes are IPIs (x86), leaves `prev`'s set after it loaded another
/// root, so later flushes of `prev` skip it.  Its TLB may still hold
/// `prev`'s entries under `prev`'s PCID; what keeps them from being used
/// stale is the flush generation (`mm::cpu::AtomicCpuSet::tlb_gen`):
///
/// * a flusher changes the entries, bumps the generation, *then* reads
///   the set (`AtomicCpuSet::begin_flush`), and IPIs the CPUs in it;
/// * a CPU switching in adds itself to the set, a full fence, *then*
///   reads the generation, and loads the root flushing the PCID unless
///   its own record for the PCID equals what it read
///   (`arch::switch_user_root`); the record becomes what it read.
///
/// All four are `SeqCst`, so they fall in one total order.  For a flush F
/// (generation `g`) and a switch-in S: if F's read of the set comes
/// before S's insert, then F's bump comes before S's read of the
/// generation, so S reads at least `g` and sees F's changed entries
/// (made before the bump); S's record for the PCID is older than `g`
/// (records only take generations whose flushes this CPU has, and it
/// has not had F), so S flushes the PCID.  Otherwise F's read of the set
/// comes after S's insert and includes the CPU, which gets F's IPI (a
/// CPU that has since switched away answers it by doing nothing, its
/// record now behind `g`).  Either way no flush is missed.  The CPU
/// leaves `prev`'s set only after CR3 no longer holds `prev`'s root, so
/// while the root is loaded (and the walker may use it) the CPU is in
/// the set; a page-table page a flusher frees after an IPI round that
/// skipped this CPU is therefore no longer reachable from its CR3.
///
/// arm64's TLBIs are broadcast: its CPUs stay in every set they join
/// (until the ASID is freed), and the generation is not needed there.
fn switch_mm(prev: (u64, u16), next: (u64, u16), cpu: usize) {
    let ctx = crate::mem::uspace::ctx();
    if next.0 == 0 {
        arch::user_root_off();
    } else {
        let set = ctx.cpus_of(next.1);
        set.insert(cpu);
        core::sync::atomic::fence(Ordering::SeqCst);
        let tlb_gen = set.tlb_gen();
        arch::switch_user_root(next.0, next.1, tlb_gen);
    }
    // Same ASID with another root: the old space's ASID was freed (its set
    // cleared) and handed to `next`, whose set this CPU just joined.
    if prev.0 != 0 && prev.1 != next.1 && !arch::tlb::BROADCAST {
        ctx.cpus_of(prev.1).remove(cpu);
    }
}

/// Set (or clear) the running thread's lower-half root and load it now.
pub fn set_addr_space(space: Option<AddrSpace>) {
    with_sched(|s| {
        let cpu = cpu_id();
        let me = s.cpus[cpu].current;
        s.thread(me).set_addr_space(space);
        let want = space.map_or((0, 0), |s| (s.root_pa, s.asid));
        if want != s.cpus[cpu].loaded {
            switch_mm(s.cpus[cpu].loaded, want, cpu);
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
/// when they are dropped, which frees their stacks).  `extra` is the
/// caller's own reference to one of them (a joiner's), dropped with them.
/// The slots stay reserved until the stacks are freed, so a `spawn` on
/// another CPU meanwhile cannot pick a slot whose stack is still mapped.
fn reap(ids: u64, extra: Option<Arc<Thread>>) {
    let mut taken: [Option<Arc<Thread>>; MAX_THREADS] = [const { None }; MAX_THREADS];
    let mut freed = 0u64;
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
                s.reserved |= 1 << id;
                freed |= 1 << id;
            }
        }
    });
    drop(taken);
    drop(extra);
    if freed != 0 {
        with_sched(|s| s.reserved &= !freed);
    }
}

fn reap_zombies() {
    let z = with_sched(|s| s.zombies);
    if z != 0 {
        reap(z, None);
    }
}

/// Owner's handle of a spawned thread.  Dropping it without `join`
/// detaches the thread (it is reaped automatically after it exits).
pub struct JoinHandle {
    t: Option<Arc<Thread>>,
}

impl JoinHandle {
    #[cfg_attr(not(feature = "selftest"), allow(dead_code))]
    pub fn thread(&self) -> &Arc<Thread> {
        self.t.as_ref().expect("joined")
    }

    /// Wait for the thread to exit and free its stack.
    #[cfg_attr(not(feature = "selftest"), allow(dead_code))]
    pub fn join(mut self) {
        let t = self.t.take().expect("joined");
        t.exited.wait_until(|| t.state() == State::Dead);
        // `t` may be the last reference: the stack is freed in there.
        reap(1 << t.id, Some(t));
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

#[cfg(feature = "selftest")]
mod tests;
mod wait;

pub use wait::WaitQueue;
