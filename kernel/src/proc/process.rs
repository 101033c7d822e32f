//! User processes: one kernel thread each, running in ring 3 / EL0 with its
//! own address space (`mm::aspace::Mm`).
//!
//! * A process is created by [`start_init`] (the first program, from the
//!   initramfs) or by `fork` (`clone` without `CLONE_VM`).  Its kernel
//!   thread is spawned with the space's root loaded (`sched::spawn_in`) and
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
//! * Exit: files closed, the root switched off, the `Mm` destroyed, the
//!   status kept until the parent reaps it.  When `init` (pid 1) exits the
//!   kernel reports `init exited with status N` and ends the run with that
//!   result.
//!
//! Locking: the process table and each process's fields are spin locks
//! taken briefly; nothing here holds one across an `Mm` call that could
//! fault.  System calls that touch an `Mm` run with preemption disabled (a
//! fault handler with interrupts masked may need the same allocator locks).
use super::exec::load_elf;
use crate::arch;
use crate::fs::vfs::File;
use crate::mem::uspace::{self, UserMm};
use crate::task::sched;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use mm::abi::errno::Errno;
use mm::abi::uapi::{MAP_ANONYMOUS, MAP_FIXED, MAP_PRIVATE, PROT_READ, PROT_WRITE};
use spin::{Mutex, RwLock};

pub const SIGSEGV: i32 = 11;
pub const SIGILL: i32 = 4;
pub const SIGBUS: i32 = 7;
pub const SIGFPE: i32 = 8;
pub const SIGTRAP: i32 = 5;
pub const SIGKILL: i32 = 9;

pub(super) const PAGE: u64 = 4096;
const MAX_FDS: usize = 64;

/// One process.
pub struct Process {
    pub pid: u32,
    pub ppid: AtomicU32,
    pub name: Mutex<String>,
    /// The address space; `None` once the process has exited.
    mm: RwLock<Option<Arc<UserMm>>>,
    /// Resolved page faults (`ru_minflt`) once the address space is gone;
    /// while it lives, the space counts them (see [`Process::minflt`]).
    minflt: AtomicU64,
    /// Faults of reaped children (`RUSAGE_CHILDREN`).
    pub child_minflt: AtomicU64,
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
    /// `rt_sigprocmask`'s blocked set (bit `sig - 1`).
    pub sigmask: AtomicU64,
    pub files: Mutex<Vec<Option<Arc<File>>>>,
    /// User TLS register (FS base / TPIDR_EL0).
    pub tls: AtomicU64,
    /// The wait status once exited.
    exit_status: Mutex<Option<i32>>,
    /// Kernel thread running it.
    thread: AtomicU32,
}

impl Process {
    /// Resolved page faults (`ru_minflt`): the address space's count
    /// (`Mm::faults_resolved`), kept here after exit.
    pub fn minflt(&self) -> u64 {
        match &*self.mm.read() {
            Some(mm) => mm.faults_resolved(),
            None => self.minflt.load(Ordering::Relaxed),
        }
    }

    /// Take the address space away (exit, failed fork), keeping its fault
    /// count.
    fn take_mm(&self) -> Option<Arc<UserMm>> {
        let mm = self.mm.write().take();
        if let Some(m) = &mm {
            self.minflt.store(m.faults_resolved(), Ordering::Relaxed);
        }
        mm
    }

    /// Run `f` on the address space (EFAULT-like `ESRCH` if it is gone).
    /// Run `f` on the process's address space, preemption disabled
    /// meanwhile (see [`UserMm`]).
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
        child_minflt: AtomicU64::new(0),
        brk: Mutex::new((0, 0)),
        start_stack: AtomicU64::new(0),
        cwd: Mutex::new(String::from("/")),
        exe: Mutex::new(String::new()),
        umask: AtomicU32::new(0o022),
        pgid: AtomicU32::new(pid),
        sid: AtomicU32::new(pid),
        cloexec: AtomicU64::new(0),
        sigactions: Mutex::new([[0; 4]; 64]),
        sigmask: AtomicU64::new(0),
        files: Mutex::new(Vec::new()),
        tls: AtomicU64::new(0),
        exit_status: Mutex::new(None),
        thread: AtomicU32::new(0),
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
        bind_thread(&p);
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

fn bind_thread(p: &Process) {
    let tid = sched::current_id();
    THREAD_PID[tid].store(p.pid, Ordering::Relaxed);
    p.thread.store(tid as u32, Ordering::Relaxed);
    arch::set_user_tls(p.tls.load(Ordering::Relaxed));
}

/// `clone` with fork semantics: a copy-on-write child that returns 0 from
/// the same system call.
pub fn fork(parent: &Arc<Process>, frame: &arch::UserFrame) -> Result<u32, Errno> {
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
    child
        .sigmask
        .store(parent.sigmask.load(Ordering::Relaxed), Ordering::Relaxed);
    for (a, b) in [
        (&child.umask, &parent.umask),
        (&child.pgid, &parent.pgid),
        (&child.sid, &parent.sid),
    ] {
        a.store(b.load(Ordering::Relaxed), Ordering::Relaxed);
    }
    child
        .cloexec
        .store(parent.cloexec.load(Ordering::Relaxed), Ordering::Relaxed);
    child.tls.store(arch::user_tls(), Ordering::Relaxed);
    PROCS.lock().push(child.clone());
    let mut f = frame.duplicate();
    f.set_return(0);
    // The parent's FP/SIMD registers (x86: live in the CPU, not in `frame`).
    let fpu = arch::FpuState::capture();
    let c2 = child.clone();
    if sched::spawn_in(&name, space, move || {
        bind_thread(&c2);
        drop(c2);
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
    Ok(pid)
}

/// End the running process with wait status `status` (exit code << 8, or
/// the signal number).  Never returns.
pub fn exit_current(status: i32) -> ! {
    // No preemption from here on (see `syscall::dispatch`); the count dies
    // with the thread.
    core::mem::forget(sched::preempt_disable());
    let Some(p) = current() else {
        sched::exit();
    };
    p.files.lock().clear();
    sched::set_addr_space(None);
    {
        let mm = p.take_mm();
        if let Some(mm) = mm
            && !uspace::release(mm)
        {
            warn!("pid {}: address space still referenced at exit", p.pid);
        }
    }
    *p.exit_status.lock() = Some(status);
    THREAD_PID[sched::current_id()].store(0, Ordering::Relaxed);
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
        arch::exit(code == 0);
    }
    drop(p);
    CHILD_EXIT.wake_all();
    sched::exit();
}

/// `wait4`: reap a child (`pid` > 0: that one; -1: any).  Returns
/// `(pid, status, child's minflt)`; blocks unless `nohang`.
pub fn wait_child(me: &Process, pid: i64, nohang: bool) -> Result<Option<(u32, i32)>, Errno> {
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
                reaped = Some((q.pid, q.exited().unwrap_or(0), q.minflt()));
            }
        }
        if let Some((cpid, st, flt)) = reaped {
            me.child_minflt.fetch_add(flt, Ordering::Relaxed);
            return Ok(Some((cpid, st)));
        }
        if !found_child {
            return Err(Errno::ECHILD);
        }
        if nohang {
            return Ok(None);
        }
        CHILD_EXIT.wait_until(|| {
            PROCS.lock().iter().any(|q| {
                q.ppid.load(Ordering::Relaxed) == me.pid
                    && (pid == -1 || q.pid as i64 == pid)
                    && q.exited().is_some()
            })
        });
    }
}

/// The MMU fault hook (replaces `uspace`'s, doing the same plus the
/// per-process `ru_minflt` count): user faults, and kernel accesses to user
/// memory in the copy routines, resolved by the address space loaded now
/// (a process's, or a kernel thread's in the `uspace` self-tests).
fn on_fault(info: &arch::FaultInfo) -> bool {
    use core::sync::atomic::Ordering::Relaxed;
    if info.addr >= arch::USER_TOP || (!info.user && info.access == arch::Access::Exec) {
        return false;
    }
    let Some(mm) = uspace::current() else {
        return false;
    };
    let acc = info.access;
    // The process's `ru_minflt` is the space's own count (one space per
    // process), so no process lookup here.
    match uspace::resolve_fault(&mm, info.addr, acc) {
        Ok(()) => {
            uspace::FAULTS_RESOLVED.fetch_add(1, Relaxed);
            true
        }
        Err(e) => {
            uspace::FAULTS_REFUSED.fetch_add(1, Relaxed);
            if info.user
                && e == mm::aspace::Fault::Oom
                && let Some(f) = OOM_FAULT.get(sched::current_id())
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
    let sig = match fault {
        Some(_) if oom => SIGKILL,
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
/// be started (its exit ends the run with its status).
pub fn run_init(path: &str) -> bool {
    let argv = alloc::vec![String::from(path)];
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
