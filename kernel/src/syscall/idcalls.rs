//! System calls about the process itself: user and group ids (everything
//! runs as root), process groups and sessions, `umask`, the time of day,
//! `sysinfo`, scheduling priority and CPU affinity (per thread).  Linux's
//! argument checks and errno values.
use crate::arch;
use crate::proc::process::{self, Process};
use crate::syscall::{R, efault, get_u64s, put_words};
use core::sync::atomic::Ordering::Relaxed;
use mm::abi::errno::Errno;

/// `getresuid`/`getresgid`: three 32-bit zeros (root).
pub fn getres_ids(r: u64, e: u64, s: u64, id: u32) -> R {
    for a in [r, e, s] {
        efault(arch::copy_to_user(a, &id.to_le_bytes()))?;
    }
    Ok(0)
}

pub fn umask(p: &Process, mask: u64) -> R {
    Ok(u64::from(p.umask.swap(mask as u32 & 0o777, Relaxed)))
}

/// The process `pid` names (0: the caller; a thread id names its
/// process).
fn target(p: &Process, pid: u64) -> Result<alloc::sync::Arc<Process>, Errno> {
    let pid = pid as i32;
    if pid < 0 {
        return Err(Errno::EINVAL);
    }
    let pid = if pid == 0 { p.pid } else { pid as u32 };
    process::find(pid)
        .or_else(|| process::find_thread(pid).map(|(_, q)| q))
        .ok_or(Errno::ESRCH)
}

pub fn getpgid(p: &Process, pid: u64) -> R {
    Ok(u64::from(target(p, pid)?.pgid.load(Relaxed)))
}

pub fn getsid(p: &Process, pid: u64) -> R {
    Ok(u64::from(target(p, pid)?.sid.load(Relaxed)))
}

/// `setpgid(pid, pgid)`: the caller or one of its children, into a group
/// of its session (0: the target's own pid).
pub fn setpgid(p: &Process, pid: u64, pgid: u64) -> R {
    if (pgid as i32) < 0 {
        return Err(Errno::EINVAL);
    }
    let t = target(p, pid)?;
    if t.pid != p.pid && t.ppid.load(Relaxed) != p.pid {
        return Err(Errno::ESRCH);
    }
    if t.sid.load(Relaxed) != p.sid.load(Relaxed) || t.sid.load(Relaxed) == t.pid {
        return Err(Errno::EPERM);
    }
    let g = if pgid == 0 { t.pid } else { pgid as u32 };
    t.pgid.store(g, Relaxed);
    Ok(0)
}

/// `setsid()`: a new session and group led by the caller; EPERM for a
/// process that already leads a group.
pub fn setsid(p: &Process) -> R {
    if p.pgid.load(Relaxed) == p.pid {
        return Err(Errno::EPERM);
    }
    p.sid.store(p.pid, Relaxed);
    p.pgid.store(p.pid, Relaxed);
    Ok(u64::from(p.pid))
}

/// `gettimeofday(tv, tz)`: the clock of `clock_gettime` in µs; the time
/// zone (if asked for) is UTC.
pub fn gettimeofday(tv: u64, tz: u64) -> R {
    let ns = arch::now_ns();
    if tv != 0 {
        put_words(tv, &[ns / 1_000_000_000, ns % 1_000_000_000 / 1000])?;
    }
    if tz != 0 {
        efault(arch::copy_to_user(tz, &[0u8; 8]))?;
    }
    Ok(0)
}

/// `time(tloc)` (x86): seconds, also stored at `tloc` when given.
pub fn time(tloc: u64) -> R {
    let s = arch::now_ns() / 1_000_000_000;
    if tloc != 0 {
        put_words(tloc, &[s])?;
    }
    Ok(s)
}

/// `sysinfo(info)`: uptime, RAM and free RAM in bytes (`mem_unit` 1), no
/// swap, the number of processes.
pub fn sysinfo(info: u64) -> R {
    let st = crate::mem::memory::buddy().stats();
    let mut b = [0u8; 112];
    let put = |b: &mut [u8], off: usize, v: u64| b[off..off + 8].copy_from_slice(&v.to_le_bytes());
    put(&mut b, 0, arch::now_ns() / 1_000_000_000);
    put(&mut b, 32, crate::mem::memory::boot_ram_frames() * 4096);
    put(&mut b, 40, st.free * 4096);
    let procs = process::all().len().min(u16::MAX as usize) as u16;
    b[80..82].copy_from_slice(&procs.to_le_bytes());
    b[104..108].copy_from_slice(&1u32.to_le_bytes());
    efault(arch::copy_to_user(info, &b))?;
    Ok(0)
}

/// `getpriority(which, who)`: Linux's system call returns `20 - nice`;
/// every process has nice 0.
pub fn getpriority(p: &Process, which: u64, who: u64) -> R {
    priority_target(p, which, who)?;
    Ok(20)
}

/// `setpriority(which, who, prio)`: accepted (one CPU, one priority).
pub fn setpriority(p: &Process, which: u64, who: u64) -> R {
    priority_target(p, which, who)?;
    Ok(0)
}

fn priority_target(p: &Process, which: u64, who: u64) -> Result<(), Errno> {
    match which {
        // PRIO_PROCESS: a process (0: the caller).
        0 => target(p, who).map(|_| ()),
        // PRIO_PGRP, PRIO_USER: groups and users exist (root, sessions).
        1 | 2 => Ok(()),
        _ => Err(Errno::EINVAL),
    }
}

/// Bytes of Linux's `cpumask` that `sched_getaffinity` reports.
const CPUMASK_BYTES: u64 = 8;

/// The kernel thread of user thread `pid` (0: the caller), as the
/// affinity calls name threads (a tid; a process's pid is its first
/// thread's tid).
fn target_thread(p: &Process, pid: u64) -> Result<usize, Errno> {
    target(p, pid)?;
    if pid as u32 == 0 {
        return Ok(crate::task::sched::current_id());
    }
    process::find_thread(pid as u32)
        .map(|(k, _)| k)
        .ok_or(Errno::ESRCH)
}

/// `sched_getaffinity(pid, len, mask)`: the thread's mask among the CPUs
/// that run threads (Linux: its mask and the active CPUs).
pub fn sched_getaffinity(p: &Process, pid: u64, len: u64, mask: u64) -> R {
    // `unsigned int len`: too small for one CPU, or not whole longs.
    let len = u64::from(len as u32);
    if len == 0 || !len.is_multiple_of(8) {
        return Err(Errno::EINVAL);
    }
    let k = target_thread(p, pid)?;
    let online = crate::task::sched::online_mask();
    let m = crate::task::sched::affinity(k).ok_or(Errno::ESRCH)? & online;
    let m = if m == 0 { online } else { m };
    efault(arch::copy_to_user(mask, &m.to_le_bytes()))?;
    Ok(CPUMASK_BYTES)
}

/// `sched_setaffinity(pid, len, mask)`: EINVAL unless the mask allows a
/// CPU that runs threads; bits past the last CPU are ignored, as Linux
/// ignores those past `nr_cpu_ids`.
pub fn sched_setaffinity(p: &Process, pid: u64, len: u64, mask: u64) -> R {
    let k = target_thread(p, pid)?;
    let len = u64::from(len as u32);
    if len == 0 {
        return Err(Errno::EINVAL);
    }
    let mut bytes = [0u8; CPUMASK_BYTES as usize];
    let n = len.min(CPUMASK_BYTES) as usize;
    efault(arch::copy_from_user(&mut bytes[..n], mask))?;
    let m = u64::from_le_bytes(bytes) & ((1u64 << crate::task::sched::NR_CPUS) - 1);
    if !crate::task::sched::set_affinity(k, m) {
        return Err(Errno::EINVAL);
    }
    // Linux moves the caller off a CPU it may no longer use before the
    // call returns (`__set_cpus_allowed_ptr` migrates it); switching out
    // now does (`schedule` places it on an allowed CPU).  Without this it
    // ran on until the next tick, and faults in between allocated on the
    // old CPU's node.
    if k == crate::task::sched::current_id() && m & (1 << arch::cpu_id()) == 0 {
        crate::task::sched::yield_now();
    }
    Ok(0)
}

/// `rt_sigaction(sig, act, oldact, size)`: dispositions are stored and
/// reported back; only SIG_DFL and SIG_IGN have an effect (SIGPIPE).
pub fn rt_sigaction(p: &Process, sig: u64, act: u64, old: u64, size: u64) -> R {
    // Linux's order: the set size, the new action (read, so a bad
    // pointer is EFAULT), the signal (SIGKILL and SIGSTOP cannot be
    // caught or ignored), then the old action.
    if size != 8 {
        return Err(Errno::EINVAL);
    }
    let new = if act != 0 {
        Some(get_u64s::<4>(act)?)
    } else {
        None
    };
    let sig = sig as i32;
    if !(1..=64).contains(&sig) || (new.is_some() && (sig == 9 || sig == 19)) {
        return Err(Errno::EINVAL);
    }
    let prev = {
        let mut t = p.sigactions.lock();
        let prev = t[sig as usize - 1];
        if let Some(n) = new {
            t[sig as usize - 1] = n;
        }
        prev
    };
    if old != 0 {
        put_words(old, &prev)?;
    }
    Ok(0)
}

/// `rt_sigprocmask(how, set, oldset, size)`: the blocked set is stored
/// (SIGKILL and SIGSTOP never blocked) and reported back.
pub fn rt_sigprocmask(_p: &Process, how: u64, set: u64, old: u64, size: u64) -> R {
    const UNBLOCKABLE: u64 = (1 << 8) | (1 << 18);
    if size != 8 {
        return Err(Errno::EINVAL);
    }
    let mask = process::sigmask();
    let prev = mask.load(Relaxed);
    if set != 0 {
        let [s] = get_u64s::<1>(set)?;
        let new = match how as i32 {
            0 => prev | s,
            1 => prev & !s,
            2 => s,
            _ => return Err(Errno::EINVAL),
        };
        mask.store(new & !UNBLOCKABLE, Relaxed);
    }
    if old != 0 {
        put_words(old, &[prev])?;
    }
    Ok(0)
}

/// A signal the process sends itself (`kill`, `tkill`, `tgkill`: what
/// `raise` and `abort` do).  Handlers are not called yet, so: SIGKILL, and
/// any signal whose action is the default and whose default is to
/// terminate, end the process with that signal (as Linux, no core dump:
/// the core size limit is 0); signals ignored by default (SIGCHLD,
/// SIGCONT, SIGURG, SIGWINCH) or by SIG_IGN, blocked ones, the stop
/// signals (no job control) and caught ones do nothing, the last with one
/// log line.  `blocked`: whether the receiving thread blocks `sig`.
pub fn signal_self(p: &Process, sig: i32, blocked: bool) -> R {
    const IGNORED: [i32; 4] = [17, 18, 23, 28];
    const STOP: [i32; 4] = [19, 20, 21, 22];
    let handler = p.sigactions.lock()[sig as usize - 1][0];
    if sig == 9 || (handler == 0 && !blocked && !IGNORED.contains(&sig) && !STOP.contains(&sig)) {
        process::exit_current(sig);
    }
    if handler > 1 && !blocked {
        crate::info!(
            "pid {}: signal {} has a handler; handlers are not supported, dropped",
            p.pid,
            sig
        );
    }
    Ok(0)
}

/// Whether `sig` is left at its default action (SIG_DFL).
pub fn is_default(p: &Process, sig: i32) -> bool {
    p.sigactions.lock()[sig as usize - 1][0] == 0
}
