//! Sleeping calls: nanosleep and clock_nanosleep (Linux's clock rules).

use super::*;

pub(super) fn sys_nanosleep(req: u64, _rem: u64) -> R {
    let ns = get_timespec(req)?;
    sleep_until(arch::now_ns().saturating_add(ns));
    Ok(0)
}

/// A user `struct timespec` as nanoseconds (EINVAL if negative or with
/// 10^9 or more nanoseconds, as Linux).
pub(super) fn get_timespec(addr: u64) -> Result<u64, Errno> {
    let [sec, nsec] = get_u64s::<2>(addr)?;
    if (sec as i64) < 0 || nsec >= 1_000_000_000 {
        return Err(Errno::EINVAL);
    }
    Ok(sec.saturating_mul(1_000_000_000).saturating_add(nsec))
}

/// `clock_nanosleep(clock, flags, req, rem)`: what glibc's `usleep` and
/// `nanosleep` call.  Every clock here reads the same time since boot
/// (see `clock_gettime`); the clocks Linux cannot sleep on are refused as
/// Linux refuses them.
pub(super) fn sys_clock_nanosleep(clock: u64, flags: u64, req: u64) -> R {
    const TIMER_ABSTIME: u64 = 1;
    match clock as i32 {
        // REALTIME, MONOTONIC, PROCESS_CPUTIME_ID, BOOTTIME, the alarm
        // clocks and TAI.
        0 | 1 | 2 | 7 | 8 | 9 | 11 => {}
        // THREAD_CPUTIME_ID, MONOTONIC_RAW and the coarse clocks have no
        // sleep.
        3..=6 => return Err(Errno::EOPNOTSUPP),
        _ => return Err(Errno::EINVAL),
    }
    let ns = get_timespec(req)?;
    let deadline = if flags & TIMER_ABSTIME != 0 {
        ns
    } else {
        arch::now_ns().saturating_add(ns)
    };
    sleep_until(deadline);
    Ok(0)
}

/// Sleep until the clock reads `deadline` (ns of `arch::now_ns`).
pub(super) fn sleep_until(deadline: u64) {
    loop {
        // One clock read per round: a second read could already be past
        // the deadline (an interrupt in between) and underflow `left`.
        let now = arch::now_ns();
        // A thread its group is ending stops sleeping (`exit_group`).
        if now >= deadline || crate::proc::process::killed() {
            break;
        }
        let left = deadline - now;
        // At most a second per nap: `sleep_ms` adds to the clock.
        sched::sleep_ms(left.div_ceil(1_000_000).clamp(1, 1000));
    }
}
