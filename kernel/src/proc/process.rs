//! User processes: thread groups of kernel threads running in ring 3 / EL0
//! with their own address space (`mm::aspace::Mm`).
//!
//! * A process is created by [`start_init`] (the first program, from the
//!   initramfs) or by `fork` (`clone` without `CLONE_VM`); more threads of
//!   it by [`clone_thread`] (`CLONE_VM | CLONE_THREAD | ...`).  Every user
//!   thread is one kernel thread; the pid is the group's id, each thread
//!   has its own tid (the first thread's is the pid), TLS register,
//!   `clear_child_tid` and robust-list head ([`Slot`]).  Everything else
//!   (the address space, files, cwd, signal dispositions and mask) is the
//!   process's and so shared.  A thread's kernel thread is spawned with the space's root loaded (`sched::spawn_in`) and
//!   drops to user mode with `arch::enter_user`; system calls and user
//!   faults run on that thread's kernel stack.
//! * User page faults (and kernel faults on user addresses inside the
//!   user-copy routines) go to [`on_fault`] → `Mm::handle_fault`; each
//!   resolved fault counts one `ru_minflt`.  Faults nothing resolves kill the
//!   process with SIGSEGV semantics (one log line; the parent's `wait4` sees
//!   the signal status).  A user fault that runs out of memory (even for a
//!   4 KiB page or a page table, after the reclaim hook ran) kills the
//!   faulting process with SIGKILL instead, as Linux's OOM killer would
//!   (one log line).  Kernel accesses to user memory that run out of memory
//!   fail the system call with EFAULT.
//! * Exit: `exit` ends one thread (its `clear_child_tid` word is zeroed
//!   and futex-woken: how `pthread_join` waits); `exit_group`, a fatal
//!   signal or fault end them all: the others are marked killed, woken
//!   if asleep (futex, pipe and `wait4` waits give up when killed), and
//!   die where they next pass through the kernel (leaving a system call,
//!   or at the end of the interrupt that preempted their user code:
//!   [`on_resume`]).  The last thread out tears the process down:
//!   files closed, the root switched off, the `Mm` destroyed, the
//!   status kept until the parent reaps it.  When `init` (pid 1) exits the
//!   kernel reports `init exited with status N` and ends the run with that
//!   result.
//!
//! Locking: the process table and each process's fields are spin locks
//! taken briefly (`group_exit`, `files`, ... are leaves; `PROCS` is never
//! taken under a process's lock); nothing here holds one across an `Mm` call that could
//! fault or sleep (the mmap lock sleeps, see `mm::sync`).
use super::exec::load_elf;
use crate::arch;
use crate::fs::vfs::File;
use crate::mem::uspace::{self, UserMm};
use crate::task::sched;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use mm::abi::errno::Errno;
use mm::abi::uapi::{MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PROT_READ, PROT_WRITE};
use mm::sync::{Mutex, RwLock};

pub const SIGSEGV: i32 = 11;
pub const SIGILL: i32 = 4;
pub const SIGBUS: i32 = 7;
pub const SIGFPE: i32 = 8;
pub const SIGTRAP: i32 = 5;
pub const SIGKILL: i32 = 9;

pub(super) const PAGE: u64 = 4096;
const MAX_FDS: usize = 64;

/// One process: a thread group (its per-thread parts are [`Slot`]s).
pub struct Process {
    pub pid: u32,
    pub ppid: AtomicU32,
    pub name: Mutex<String>,
    /// The address space; `None` once the process has exited.
    mm: RwLock<Option<Arc<UserMm>>>,
    /// Resolved page faults (`ru_minflt`) once the address space is gone;
    /// while it lives, the space counts them (see [`Process::minflt`]).
    minflt: AtomicU64,
    /// Major faults (`ru_majflt`: read from the swap device), kept as
    /// `minflt` is.
    majflt: AtomicU64,
    /// Faults of reaped children (`RUSAGE_CHILDREN`).
    pub child_minflt: AtomicU64,
    /// Major faults of reaped children.
    pub child_majflt: AtomicU64,
    /// `[start, current)` of the heap.
    pub brk: Mutex<(u64, u64)>,
    /// The initial stack pointer (Linux's `mm->start_stack`): smaps and
    /// maps name the VMA holding it `[stack]`.
    pub start_stack: AtomicU64,
    /// Working directory (absolute, normalized); relative paths start here.
    pub cwd: Mutex<String>,
    /// The executable's path (`/proc/self/exe`).
    pub exe: Mutex<String>,
    /// File mode creation mask (`umask`; no file is ever created here, but
    /// programs read and set it).
    pub umask: AtomicU32,
    /// Process group and session (`getpgid`, `setsid`, ...).
    pub pgid: AtomicU32,
    pub sid: AtomicU32,
    /// Close-on-exec flag of each descriptor (bit `fd`; there is no
    /// execve yet, so it is only remembered for `fcntl(F_GETFD)`).
    pub cloexec: AtomicU64,
    /// `rt_sigaction` dispositions, Linux's kernel `struct sigaction`
    /// words (handler, flags, restorer, mask) per signal 1..=64.  Only
    /// SIG_DFL and SIG_IGN act (SIGPIPE); handlers are remembered and
    /// reported back but not yet called.
    pub sigactions: Mutex<[[u64; 4]; 64]>,
    pub files: Mutex<Vec<Option<Arc<File>>>>,
    /// The wait status once exited.
    exit_status: Mutex<Option<i32>>,
    /// Threads started and not yet exited (the last one out tears the
    /// process down).
    live: AtomicU32,
    /// The wait status `exit_group` (or a fatal signal) set: the group is
    /// dying.
    group_exit: Mutex<Option<i32>>,
    /// The kernel thread bound to it last (its first thread, or the newest).
    thread: AtomicU32,
    /// The user id (real, effective and saved alike: `setuid` as root sets
    /// all three).  0 is root, with every capability (`CAP_IPC_LOCK`,
    /// `CAP_SYS_RESOURCE`); any other uid has none, as Linux drops the
    /// capabilities when no uid is 0 any more.
    pub uid: AtomicU32,
    /// `RLIMIT_MEMLOCK` (soft, hard) in bytes; the soft limit is mirrored
    /// into the address space (`Mm::set_mlock_rights`), which applies it.
    pub rlimit_memlock: Mutex<(u64, u64)>,
}

impl Process {
    /// Resolved page faults (`ru_minflt`): the address space's count
    /// (`Mm::faults_resolved`), kept here after exit.
    /// Linux counts each fault once, as minor or major, so this is the
    /// resolved faults that did not read from the swap device.
    pub fn minflt(&self) -> u64 {
        match &*self.mm.read() {
            Some(mm) => mm.faults_resolved().saturating_sub(mm.faults_major()),
            None => self.minflt.load(Ordering::Relaxed),
        }
    }

    /// Major faults (`ru_majflt`): swap-ins that read the device.
    pub fn majflt(&self) -> u64 {
        match &*self.mm.read() {
            Some(mm) => mm.faults_major(),
            None => self.majflt.load(Ordering::Relaxed),
        }
    }

    /// Take the address space away (exit, failed fork), keeping its fault
    /// count.
    fn take_mm(&self) -> Option<Arc<UserMm>> {
        let mm = self.mm.write().take();
        if let Some(m) = &mm {
            let maj = m.faults_major();
            self.minflt
                .store(m.faults_resolved().saturating_sub(maj), Ordering::Relaxed);
            self.majflt.store(maj, Ordering::Relaxed);
        }
        mm
    }

    /// The address space's id (futex keys), `None` once it is gone.
    pub fn mm_id(&self) -> Option<u64> {
        self.mm.read().as_ref().map(|m| m.id())
    }

    /// Run `f` on the process's address space (see [`UserMm`]).
    /// The process's address space (ESRCH once it exited), for calls
    /// that work on another process's memory (`move_pages`).
    pub fn user_mm(&self) -> Result<Arc<UserMm>, Errno> {
        self.mm.read().clone().ok_or(Errno::ESRCH)
    }

    pub fn with_mm<R>(&self, f: impl FnOnce(&uspace::Space) -> R) -> Result<R, Errno> {
        let mm = self.mm.read().clone().ok_or(Errno::ESRCH)?;
        let r = f(&mm.enter());
        Ok(r)
    }

    /// The open file at `fd`.
    pub fn file(&self, fd: u64) -> Result<Arc<File>, Errno> {
        self.files
            .lock()
            .get(fd as usize)
            .and_then(|f| f.clone())
            .ok_or(Errno::EBADF)
    }

    /// Install `f` at the lowest free descriptor.
    pub fn add_file(&self, f: Arc<File>) -> Result<u64, Errno> {
        self.add_file_from(f, 0)
    }

    pub fn close(&self, fd: u64) -> Result<(), Errno> {
        let old = {
            let mut fs = self.files.lock();
            let old = match fs.get_mut(fd as usize) {
                Some(slot @ Some(_)) => slot.take(),
                _ => return Err(Errno::EBADF),
            };
            // Under the table lock, so a descriptor reused at once starts
            // without the flag.
            self.set_cloexec(fd, false);
            old
        };
        // Dropped outside the table lock: closing a pipe end wakes waiters.
        drop(old);
        Ok(())
    }

    /// Install `f` at the lowest free descriptor at or above `min`
    /// (`F_DUPFD`): EINVAL if `min` is beyond the table, EMFILE if full.
    pub fn add_file_from(&self, f: Arc<File>, min: u64) -> Result<u64, Errno> {
        if min >= MAX_FDS as u64 {
            return Err(Errno::EINVAL);
        }
        let mut fs = self.files.lock();
        let min = min as usize;
        if fs.len() < min {
            fs.resize(min, None);
        }
        if let Some(i) = (min..fs.len()).find(|&i| fs[i].is_none()) {
            fs[i] = Some(f);
            return Ok(i as u64);
        }
        if fs.len() >= MAX_FDS {
            return Err(Errno::EMFILE);
        }
        fs.push(Some(f));
        Ok(fs.len() as u64 - 1)
    }

    /// Make `newfd` refer to `f` (`dup2`/`dup3`), closing what it held;
    /// EBADF if `newfd` is beyond the table.
    pub fn install_at(&self, f: Arc<File>, newfd: u64) -> Result<u64, Errno> {
        if newfd >= MAX_FDS as u64 {
            return Err(Errno::EBADF);
        }
        let old = {
            let mut fs = self.files.lock();
            let i = newfd as usize;
            if fs.len() <= i {
                fs.resize(i + 1, None);
            }
            self.set_cloexec(newfd, false);
            fs[i].replace(f)
        };
        drop(old);
        Ok(newfd)
    }

    pub fn cloexec_of(&self, fd: u64) -> bool {
        fd < 64 && self.cloexec.load(Ordering::Relaxed) & (1 << fd) != 0
    }

    pub fn set_cloexec(&self, fd: u64, on: bool) {
        if fd < 64 {
            if on {
                self.cloexec.fetch_or(1 << fd, Ordering::Relaxed);
            } else {
                self.cloexec.fetch_and(!(1 << fd), Ordering::Relaxed);
            }
        }
    }

    pub fn exited(&self) -> Option<i32> {
        *self.exit_status.lock()
    }

    /// For a single-threaded process, the CPU its thread last ran on (NUMA
    /// balancing skips its folios already on that CPU's node); `None` with
    /// several threads.
    pub fn single_thread_cpu(&self) -> Option<usize> {
        if self.live.load(Ordering::Relaxed) != 1 {
            return None;
        }
        let mut ids = THREAD_PID
            .iter()
            .enumerate()
            .filter(|(_, p)| p.load(Ordering::Relaxed) == self.pid)
            .map(|(i, _)| i);
        let id = ids.next()?;
        if ids.next().is_some() {
            return None;
        }
        crate::task::sched::last_cpu(id)
    }
}

static PROCS: Mutex<Vec<Arc<Process>>> = Mutex::new(Vec::new());
/// Pid of the process each kernel thread runs (0 = none).
static THREAD_PID: [AtomicU32; crate::task::thread::MAX_THREADS] =
    [const { AtomicU32::new(0) }; crate::task::thread::MAX_THREADS];
static NEXT_PID: AtomicU32 = AtomicU32::new(1);
/// Set by [`on_fault`] when a user fault on that kernel thread failed for
/// lack of memory; [`on_user_exception`] then kills with SIGKILL.
static OOM_FAULT: [core::sync::atomic::AtomicBool; crate::task::thread::MAX_THREADS] =
    [const { core::sync::atomic::AtomicBool::new(false) }; crate::task::thread::MAX_THREADS];
/// Set by [`on_fault`] when a user fault could not read its page back from
/// swap; [`on_user_exception`] then sends SIGBUS (Linux's
/// `VM_FAULT_SIGBUS`).
static SIGBUS_FAULT: [core::sync::atomic::AtomicBool; crate::task::thread::MAX_THREADS] =
    [const { core::sync::atomic::AtomicBool::new(false) }; crate::task::thread::MAX_THREADS];
/// Per user thread (indexed by kernel thread id, reset when it exits).
pub struct Slot {
    /// The thread id (`gettid`); 0 when the kernel thread runs no user
    /// thread.
    tid: AtomicU32,
    /// `set_tid_address` / `CLONE_CHILD_CLEARTID`: zeroed and futex-woken
    /// at exit.
    clear_tid: AtomicU64,
    /// `set_robust_list`'s head (kept, not walked at exit).
    robust: AtomicU64,
    /// Another thread ended the group: die at the next kernel exit.
    killed: AtomicBool,
    /// `rt_sigprocmask`'s blocked set (bit `sig - 1`), per thread as in
    /// Linux (glibc blocks every signal in a thread about to exit).
    sigmask: AtomicU64,
}

static SLOTS: [Slot; crate::task::thread::MAX_THREADS] = [const {
    Slot {
        tid: AtomicU32::new(0),
        clear_tid: AtomicU64::new(0),
        robust: AtomicU64::new(0),
        killed: AtomicBool::new(false),
        sigmask: AtomicU64::new(0),
    }
}; crate::task::thread::MAX_THREADS];

fn slot() -> &'static Slot {
    &SLOTS[sched::current_id()]
}

/// `gettid`.
pub fn gettid() -> u32 {
    slot().tid.load(Ordering::Relaxed)
}

/// `set_tid_address(addr)`: returns the caller's tid.
pub fn set_tid_address(addr: u64) -> u32 {
    slot().clear_tid.store(addr, Ordering::Relaxed);
    gettid()
}

/// `set_robust_list(head)`: remembered per thread.
pub fn set_robust_list(head: u64) {
    slot().robust.store(head, Ordering::Relaxed);
}

/// The running thread's blocked-signal set.
pub fn sigmask() -> &'static AtomicU64 {
    &slot().sigmask
}

/// Whether user thread `tid` of `p` blocks `sig`.
pub fn blocks(p: &Process, tid: u32, sig: i32) -> bool {
    SLOTS.iter().enumerate().any(|(k, s)| {
        s.tid.load(Ordering::Relaxed) == tid
            && THREAD_PID[k].load(Ordering::Relaxed) == p.pid
            && s.sigmask.load(Ordering::Relaxed) & (1 << (sig - 1)) != 0
    })
}

/// Whether the running thread's group is ending it.
pub fn killed() -> bool {
    slot().killed.load(Ordering::Relaxed)
}

/// End the running thread if its group is being ended (called on the way
/// back to user mode from a system call).
pub fn die_if_killed() {
    if killed() {
        exit_thread(0);
    }
}

/// The scheduler's resume hook (end of a preemptible interrupt, interrupts
/// masked): a user thread killed while its user code was preempted dies
/// here, with interrupts enabled for the teardown as the fault-kill path
/// has them.
fn on_resume() {
    if killed() {
        arch::irq_enable();
        exit_thread(0);
    }
}

/// The kernel thread id and the process of user thread `tid`.
pub fn find_thread(tid: u32) -> Option<(usize, Arc<Process>)> {
    if tid == 0 {
        return None;
    }
    let k = SLOTS
        .iter()
        .position(|s| s.tid.load(Ordering::Relaxed) == tid)?;
    Some((k, find(THREAD_PID[k].load(Ordering::Relaxed))?))
}

/// Woken whenever a process exits (parents in `wait4` wait here).
pub static CHILD_EXIT: sched::WaitQueue = sched::WaitQueue::new();

/// Set up user mode: the arch entry, the fault and exception hooks.
pub fn init() {
    arch::apply_cmdline(crate::cmdline::raw());
    #[cfg(target_arch = "x86_64")]
    info!(
        "tlb: range flushes of up to {} pages use INVLPG, larger ones reload CR3{}",
        arch::tlb::flush_ceiling(),
        if arch::tlb::under_tcg() {
            " (QEMU TCG: a CR3 reload empties QEMU's whole TLB)"
        } else {
            ""
        }
    );
    arch::user_init();
    // Replaces `uspace`'s handler with one that also counts each process's
    // resolved faults (`ru_minflt`); both resolve through `uspace::current`.
    arch::set_fault_handler(on_fault);
    arch::set_syscall_handler(crate::syscall::dispatch);
    arch::set_user_exception_handler(on_user_exception);
    sched::set_resume_hook(on_resume);
    info!(
        "user mode ready (SMEP {}, {} {})",
        if arch::smep_enabled() { "on" } else { "off" },
        if cfg!(target_arch = "x86_64") {
            "SMAP"
        } else {
            "PAN"
        },
        if arch::smap_enabled() { "on" } else { "off" }
    );
}

/// The process the running thread belongs to.
pub fn current() -> Option<Arc<Process>> {
    let pid = THREAD_PID.get(sched::current_id())?.load(Ordering::Relaxed);
    if pid == 0 {
        return None;
    }
    find(pid)
}

pub fn find(pid: u32) -> Option<Arc<Process>> {
    PROCS.lock().iter().find(|p| p.pid == pid).cloned()
}

/// Every live (not reaped) process.
pub fn all() -> Vec<Arc<Process>> {
    PROCS.lock().clone()
}

fn new_process(pid: u32, ppid: u32, name: &str, mm: Arc<UserMm>) -> Arc<Process> {
    Arc::new(Process {
        pid,
        ppid: AtomicU32::new(ppid),
        name: Mutex::new(String::from(name)),
        mm: RwLock::new(Some(mm)),
        minflt: AtomicU64::new(0),
        majflt: AtomicU64::new(0),
        child_minflt: AtomicU64::new(0),
        child_majflt: AtomicU64::new(0),
        brk: Mutex::new((0, 0)),
        start_stack: AtomicU64::new(0),
        cwd: Mutex::new(String::from("/")),
        exe: Mutex::new(String::new()),
        umask: AtomicU32::new(0o022),
        pgid: AtomicU32::new(pid),
        sid: AtomicU32::new(pid),
        cloexec: AtomicU64::new(0),
        sigactions: Mutex::new([[0; 4]; 64]),
        files: Mutex::new(Vec::new()),
        exit_status: Mutex::new(None),
        live: AtomicU32::new(1),
        group_exit: Mutex::new(None),
        thread: AtomicU32::new(0),
        uid: AtomicU32::new(0),
        rlimit_memlock: Mutex::new((mm::vma::mlock::MLOCK_LIMIT, mm::vma::mlock::MLOCK_LIMIT)),
    })
}

fn space_of(mm: &Arc<UserMm>) -> sched::AddrSpace {
    sched::AddrSpace {
        root_pa: mm.root_pa(),
        asid: mm.asid(),
    }
}

/// Start the first program: `path` from the initramfs with `argv`/`envp`.
pub fn start_init(path: &str, argv: Vec<String>, envp: Vec<String>) -> Result<u32, Errno> {
    let entry = crate::fs::cpio::lookup(path)
        .filter(|e| e.is_file())
        .ok_or(Errno::ENOENT)?;
    let mm = uspace::new_mm()?;
    let space = space_of(&mm);
    let pid = NEXT_PID.fetch_add(1, Ordering::Relaxed);
    let p = new_process(pid, 0, path.rsplit('/').next().unwrap_or(path), mm);
    *p.exe.lock() = crate::fs::vfs::normalize(path);
    for _ in 0..3 {
        p.add_file(Arc::new(File::console()))?;
    }
    PROCS.lock().push(p.clone());
    let data = entry.data;
    let path = String::from(path);
    sched::spawn_in(&path.clone(), space, move || {
        bind_thread(&p, p.pid, 0, 0);
        // Without preemption, as a system call runs (`syscall::dispatch`):
        // the copies into user memory fault, and the fault path may need
        // the heap or allocator locks this thread holds.
        let frame = {
            let _np = sched::preempt_disable();
            load_elf(&p, data, &argv, &envp)
        };
        match frame {
            Ok(f) => arch::enter_user(&f),
            Err(e) => {
                warn!("init: cannot load {}: {}", path, e.name());
                exit_current(127 << 8);
            }
        }
    })
    .map_err(|_| Errno::EAGAIN)?;
    Ok(pid)
}

/// Make the running kernel thread user thread `tid` of `p`, with TLS
/// register value `tls` and blocked signals `sigmask`.
fn bind_thread(p: &Process, tid: u32, tls: u64, sigmask: u64) {
    let k = sched::current_id();
    THREAD_PID[k].store(p.pid, Ordering::Relaxed);
    SLOTS[k].tid.store(tid, Ordering::Relaxed);
    SLOTS[k].sigmask.store(sigmask, Ordering::Relaxed);
    SLOTS[k].killed.store(false, Ordering::Relaxed);
    p.thread.store(k as u32, Ordering::Relaxed);
    uspace::bind_current(p.mm.read().as_ref());
    arch::set_user_tls(tls);
}

/// What `clone` asked for besides the address space: the new thread's
/// stack and TLS, and where to publish its tid.
#[derive(Clone, Copy)]
pub struct CloneArgs {
    pub flags: u64,
    pub stack: u64,
    pub parent_tid: u64,
    pub child_tid: u64,
    pub tls: u64,
}

/// What a thread shares with its creator (Linux's `clone` flag bits).
pub const CLONE_VM: u64 = 0x100;
pub const CLONE_FS: u64 = 0x200;
pub const CLONE_FILES: u64 = 0x400;
pub const CLONE_SIGHAND: u64 = 0x800;
pub const CLONE_THREAD: u64 = 0x1_0000;
/// All of them: a thread (what `pthread_create` passes besides the
/// options below).
pub const CLONE_THREAD_SET: u64 = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD;
/// The TLS and TID options (see [`CloneArgs`]).
pub const CLONE_SETTLS: u64 = 0x8_0000;
pub const CLONE_PARENT_SETTID: u64 = 0x10_0000;
pub const CLONE_CHILD_CLEARTID: u64 = 0x20_0000;
pub const CLONE_CHILD_SETTID: u64 = 0x100_0000;

impl CloneArgs {
    /// The new thread's TLS register: `tls` with `CLONE_SETTLS`, else the
    /// caller's.
    fn new_tls(&self) -> u64 {
        if self.flags & CLONE_SETTLS != 0 {
            self.tls
        } else {
            arch::user_tls()
        }
    }

    /// The child's `clear_child_tid`.
    fn clear_tid(&self) -> u64 {
        if self.flags & CLONE_CHILD_CLEARTID != 0 {
            self.child_tid
        } else {
            0
        }
    }

    /// `CLONE_PARENT_SETTID`: `tid` stored for the caller (a failed store
    /// is ignored, as Linux ignores it).
    fn publish_parent(&self, tid: u32) {
        if self.flags & CLONE_PARENT_SETTID != 0 {
            let _ = arch::copy_to_user(self.parent_tid, &tid.to_le_bytes());
        }
    }

    /// `CLONE_CHILD_SETTID`, in the child's address space (loaded now).
    fn publish_child(&self, tid: u32) {
        if self.flags & CLONE_CHILD_SETTID != 0 {
            let _np = sched::preempt_disable();
            let _ = arch::copy_to_user(self.child_tid, &tid.to_le_bytes());
        }
    }

    /// The frame the new thread enters user mode with: the caller's, 0
    /// returned, on the new stack if one was given.
    fn child_frame(&self, frame: &arch::UserFrame) -> arch::UserFrame {
        let mut f = frame.duplicate();
        f.set_return(0);
        if self.stack != 0 {
            f.set_sp(self.stack);
        }
        f
    }
}

/// `clone` with `CLONE_VM | CLONE_THREAD` (the flags checked by the
/// caller): a new thread of `p` sharing everything but its stack, TLS and
/// tid; it returns 0 from the same system call.
pub fn clone_thread(
    p: &Arc<Process>,
    frame: &arch::UserFrame,
    args: &CloneArgs,
) -> Result<u32, Errno> {
    let space = space_of(p.mm.read().as_ref().ok_or(Errno::ESRCH)?);
    let tid = NEXT_PID.fetch_add(1, Ordering::Relaxed);
    let f = args.child_frame(frame);
    let tls = args.new_tls();
    let clear = args.clear_tid();
    args.publish_parent(tid);
    args.publish_child(tid);
    let fpu = arch::FpuState::capture();
    // Counted before it runs, so that an exit meanwhile does not think
    // itself the last thread.
    p.live.fetch_add(1, Ordering::Relaxed);
    let p2 = p.clone();
    let name = p.name.lock().clone();
    let mask = sigmask().load(Ordering::Relaxed);
    if sched::spawn_in(&name, space, move || {
        bind_thread(&p2, tid, tls, mask);
        slot().clear_tid.store(clear, Ordering::Relaxed);
        let dying = p2.group_exit.lock().is_some();
        drop(p2);
        if dying {
            exit_thread(0);
        }
        fpu.restore();
        arch::enter_user(&f)
    })
    .is_err()
    {
        p.live.fetch_sub(1, Ordering::Relaxed);
        return Err(Errno::EAGAIN);
    }
    Ok(tid)
}

/// `clone` with fork semantics: a copy-on-write child that returns 0 from
/// the same system call.
pub fn fork(
    parent: &Arc<Process>,
    frame: &arch::UserFrame,
    args: &CloneArgs,
) -> Result<u32, Errno> {
    let child_mm = uspace::register(parent.with_mm(|mm| mm.fork())??)?;
    let space = space_of(&child_mm);
    let pid = NEXT_PID.fetch_add(1, Ordering::Relaxed);
    let name = parent.name.lock().clone();
    let child = new_process(pid, parent.pid, &name, child_mm);
    *child.files.lock() = parent.files.lock().clone();
    *child.brk.lock() = *parent.brk.lock();
    child.start_stack.store(
        parent.start_stack.load(Ordering::Relaxed),
        Ordering::Relaxed,
    );
    *child.cwd.lock() = parent.cwd.lock().clone();
    *child.exe.lock() = parent.exe.lock().clone();
    *child.sigactions.lock() = *parent.sigactions.lock();
    *child.rlimit_memlock.lock() = *parent.rlimit_memlock.lock();
    for (a, b) in [
        (&child.umask, &parent.umask),
        (&child.pgid, &parent.pgid),
        (&child.sid, &parent.sid),
        (&child.uid, &parent.uid),
    ] {
        a.store(b.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    child
        .cloexec
        .store(parent.cloexec.load(Ordering::Relaxed), Ordering::Relaxed);
    let tls = args.new_tls();
    let clear = args.clear_tid();
    PROCS.lock().push(child.clone());
    let f = args.child_frame(frame);
    // The parent's FP/SIMD registers (x86: live in the CPU, not in `frame`).
    let fpu = arch::FpuState::capture();
    let c2 = child.clone();
    let child_args = CloneArgs { ..*args };
    let mask = sigmask().load(Ordering::Relaxed);
    if sched::spawn_in(&name, space, move || {
        bind_thread(&c2, pid, tls, mask);
        drop(c2);
        slot().clear_tid.store(clear, Ordering::Relaxed);
        child_args.publish_child(pid);
        fpu.restore();
        arch::enter_user(&f)
    })
    .is_err()
    {
        PROCS.lock().retain(|p| p.pid != pid);
        if let Some(mm) = child.take_mm() {
            uspace::release(mm);
        }
        return Err(Errno::EAGAIN);
    }
    args.publish_parent(pid);
    Ok(pid)
}

/// End the running process, every thread of it, with wait status `status`
/// (exit code << 8, or the signal number) unless an earlier `exit_group`
/// set one (`exit_group`, fatal signals and faults).  Never returns.
pub fn exit_current(status: i32) -> ! {
    // No preemption from here on (see `syscall::dispatch`); the count dies
    // with the thread.
    core::mem::forget(sched::preempt_disable());
    let Some(p) = current() else {
        sched::exit();
    };
    let status = *p.group_exit.lock().get_or_insert(status);
    let me = sched::current_id();
    let mut others = 0u64;
    for (k, owner) in THREAD_PID.iter().enumerate() {
        if k != me && owner.load(Ordering::Relaxed) == p.pid {
            SLOTS[k].killed.store(true, Ordering::Relaxed);
            others |= 1 << k;
        }
    }
    // Those asleep in the kernel (a futex, a pipe, `wait4`, a sleep) wake
    // up to see it; the others die when they next leave the kernel or are
    // next switched to.
    sched::interrupt(others);
    end_thread(p, status)
}

/// `exit`: end the running thread; the process ends with `status` if it
/// was the last one.  Never returns.
pub fn exit_thread(status: i32) -> ! {
    core::mem::forget(sched::preempt_disable());
    let Some(p) = current() else {
        sched::exit();
    };
    end_thread(p, status)
}

/// The running thread's exit (preemption already off for good).
fn end_thread(p: Arc<Process>, status: i32) -> ! {
    let me = sched::current_id();
    let ctid = SLOTS[me].clear_tid.swap(0, Ordering::Relaxed);
    if ctid != 0
        && arch::copy_to_user(ctid, &0u32.to_le_bytes()).is_ok()
        && let Some(space) = p.mm_id()
    {
        super::futex::wake(space, ctid, 1);
    }
    SLOTS[me].tid.store(0, Ordering::Relaxed);
    SLOTS[me].robust.store(0, Ordering::Relaxed);
    SLOTS[me].killed.store(false, Ordering::Relaxed);
    SLOTS[me].sigmask.store(0, Ordering::Relaxed);
    THREAD_PID[me].store(0, Ordering::Relaxed);
    // Before the last thread releases the space: its reference goes too.
    uspace::unbind_current();
    if p.live.fetch_sub(1, Ordering::Relaxed) != 1 {
        drop(p);
        sched::exit();
    }
    let status = p.group_exit.lock().unwrap_or(status);
    p.files.lock().clear();
    sched::set_addr_space(None);
    {
        // Still referenced by khugepaged or a debugfs walk, the memory is
        // freed all the same (`uspace::release`).
        if let Some(mm) = p.take_mm() {
            uspace::release(mm);
        }
    }
    *p.exit_status.lock() = Some(status);
    // Orphans go to init; a process whose parent is gone is reaped now.
    let parent_alive = {
        let mut t = PROCS.lock();
        for c in t.iter().filter(|c| c.ppid.load(Ordering::Relaxed) == p.pid) {
            c.ppid.store(1, Ordering::Relaxed);
        }
        let pp = p.ppid.load(Ordering::Relaxed);
        let alive = t.iter().any(|q| q.pid == pp && q.exited().is_none());
        if !alive {
            t.retain(|q| q.pid != p.pid);
        }
        alive
    };
    let _ = parent_alive;
    if p.pid == 1 {
        let code = if status & 0x7f == 0 {
            (status >> 8) & 0xff
        } else {
            128 + (status & 0x7f)
        };
        println!("init exited with status {}", code);
        crate::perf::profile::dump();
        arch::exit(code == 0);
    }
    drop(p);
    CHILD_EXIT.wake_all();
    sched::exit();
}

/// A reaped child: pid, wait status, and its (and its reaped children's)
/// (minor, major) fault counts.
pub type Reaped = (u32, i32, (u64, u64));

/// `wait4`: reap a child (`pid` > 0: that one; -1: any).  Returns
/// `(pid, status, child's (minflt, majflt))`; blocks unless `nohang`.
pub fn wait_child(me: &Process, pid: i64, nohang: bool) -> Result<Option<Reaped>, Errno> {
    loop {
        let mut found_child = false;
        let mut reaped = None;
        {
            let mut t = PROCS.lock();
            let mine = |q: &Arc<Process>| {
                q.ppid.load(Ordering::Relaxed) == me.pid && (pid == -1 || q.pid as i64 == pid)
            };
            found_child = found_child || t.iter().any(mine);
            if let Some(i) = t.iter().position(|q| mine(q) && q.exited().is_some()) {
                let q = t.remove(i);
                // As Linux's `wait_task_zombie`: the child's own faults and
                // those of the children it reaped.
                let flt = (
                    q.minflt() + q.child_minflt.load(Ordering::Relaxed),
                    q.majflt() + q.child_majflt.load(Ordering::Relaxed),
                );
                reaped = Some((q.pid, q.exited().unwrap_or(0), flt));
            }
        }
        if let Some((cpid, st, flt)) = reaped {
            me.child_minflt.fetch_add(flt.0, Ordering::Relaxed);
            me.child_majflt.fetch_add(flt.1, Ordering::Relaxed);
            return Ok(Some((cpid, st, flt)));
        }
        if !found_child {
            return Err(Errno::ECHILD);
        }
        if nohang {
            return Ok(None);
        }
        // Interruptible, as Linux's: a child may work for long (the
        // exhaustion hog fills swap), which is not a hang.
        CHILD_EXIT.wait_interruptible(|| {
            killed()
                || PROCS.lock().iter().any(|q| {
                    q.ppid.load(Ordering::Relaxed) == me.pid
                        && (pid == -1 || q.pid as i64 == pid)
                        && q.exited().is_some()
                })
        });
        if killed() {
            return Err(Errno::EINTR);
        }
    }
}

/// The MMU fault hook (replaces `uspace`'s, doing the same plus the
/// flags that make a failed fault SIGKILL or SIGBUS): user faults, and kernel accesses to user
/// memory in the copy routines, resolved by the address space loaded now
/// (a process's, or a kernel thread's in the `uspace` self-tests).
fn on_fault(info: &arch::FaultInfo) -> bool {
    use core::sync::atomic::Ordering::Relaxed;
    if info.addr >= arch::USER_TOP || (!info.user && info.access == arch::Access::Exec) {
        return false;
    }
    // The process's `ru_minflt` is the space's own count (one space per
    // process), so no process lookup here.
    match uspace::resolve_loaded(info.addr, info.access) {
        None => false,
        Some(Ok(())) => true,
        Some(Err(e)) => {
            uspace::FAULTS_REFUSED.fetch_add(1, Relaxed);
            let flag = match e {
                mm::aspace::Fault::Oom => OOM_FAULT.get(sched::current_id()),
                mm::aspace::Fault::Sigbus => SIGBUS_FAULT.get(sched::current_id()),
                mm::aspace::Fault::Segv => None,
            };
            if info.user
                && let Some(f) = flag
            {
                f.store(true, Relaxed);
            }
            false
        }
    }
}

/// An exception from user mode nothing resolved: kill the process.
fn on_user_exception(frame: &mut arch::UserFrame, fault: Option<&arch::FaultInfo>) {
    let oom = OOM_FAULT
        .get(sched::current_id())
        .is_some_and(|f| f.swap(false, Ordering::Relaxed));
    let bus = SIGBUS_FAULT
        .get(sched::current_id())
        .is_some_and(|f| f.swap(false, Ordering::Relaxed));
    let sig = match fault {
        Some(_) if oom => SIGKILL,
        Some(_) if bus => SIGBUS,
        Some(_) => SIGSEGV,
        None => exception_signal(frame),
    };
    let (pid, name) = current()
        .map(|p| (p.pid, p.name.lock().clone()))
        .unwrap_or_default();
    match fault {
        Some(f) if oom => warn!(
            "pid {} ({}): out of memory: {:?} fault at {:#x}, pc {:#x}; killed (signal {})",
            pid, name, f.access, f.addr, f.pc, sig
        ),
        Some(f) if bus => warn!(
            "pid {} ({}): bus error (past a shmem object's size, or a swap read error): {:?} fault at {:#x}, pc {:#x}; killed (signal {})",
            pid, name, f.access, f.addr, f.pc, sig
        ),
        Some(f) => warn!(
            "pid {} ({}): segmentation fault: {:?} at {:#x}, pc {:#x}; killed (signal {})",
            pid, name, f.access, f.addr, f.pc, sig
        ),
        None => {
            let (a, b) = frame.exception_name();
            warn!(
                "pid {} ({}): exception {:#x}/{:#x} at pc {:#x}; killed (signal {})",
                pid,
                name,
                a,
                b,
                frame.pc(),
                sig
            );
        }
    }
    arch::irq_enable();
    exit_current(sig);
}

#[cfg(target_arch = "x86_64")]
fn exception_signal(f: &arch::UserFrame) -> i32 {
    match f.exception_name().0 {
        0 => SIGFPE,
        1 | 3 => SIGTRAP,
        6 => SIGILL,
        16 | 19 => SIGFPE,
        17 => SIGBUS,
        _ => SIGSEGV,
    }
}

#[cfg(target_arch = "aarch64")]
fn exception_signal(f: &arch::UserFrame) -> i32 {
    match f.exception_name().0 {
        0x00 | 0x0e => SIGILL,
        0x22 | 0x26 => SIGBUS,
        0x2c => SIGFPE,
        0x30..=0x3c => SIGTRAP,
        _ => SIGSEGV,
    }
}

/// `brk(addr)`: grow or shrink the heap; returns the (new) break.
pub fn brk(p: &Process, addr: u64) -> u64 {
    let (start, cur) = *p.brk.lock();
    // Beyond user space (or so close to the top that rounding up to a page
    // would wrap): refused, the break stays.
    if addr < start || addr == cur || addr > arch::USER_TOP {
        return cur;
    }
    let old_end = cur.next_multiple_of(PAGE);
    let new_end = addr.next_multiple_of(PAGE);
    let ok = if new_end > old_end {
        let len = new_end - old_end;
        let free = p
            .with_mm(|mm| !mm.vmas().intersects(old_end, new_end))
            .unwrap_or(false);
        free && p
            .with_mm(|mm| {
                mm.mmap(
                    old_end,
                    len,
                    PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                )
            })
            .is_ok_and(|r| r.is_ok())
    } else if new_end < old_end {
        p.with_mm(|mm| mm.munmap(new_end, old_end - new_end))
            .is_ok_and(|r| r.is_ok())
    } else {
        true
    };
    if ok {
        p.brk.lock().1 = addr;
        addr
    } else {
        cur
    }
}

/// Start `init=<path>` and wait for it; returns false only if it could not
/// be started (its exit ends the run with its status).  The words of the
/// command line after `--` are init's arguments, as Linux passes them
/// (`init=/mthp-tests -- move_pages` runs the tests matching
/// `move_pages`).
pub fn run_init(path: &str) -> bool {
    let mut argv = alloc::vec![String::from(path)];
    argv.extend(
        crate::cmdline::raw()
            .split_ascii_whitespace()
            .skip_while(|w| *w != "--")
            .skip(1)
            .map(String::from),
    );
    let envp = alloc::vec![String::from("HOME=/"), String::from("TERM=linux")];
    match start_init(path, argv, envp) {
        Ok(_) => loop {
            sched::sleep_ms(1000);
        },
        Err(e) => {
            println!("init: cannot start {}: {}", path, e.name());
            false
        }
    }
}
