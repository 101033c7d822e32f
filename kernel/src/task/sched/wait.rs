//! Wait queues: threads blocked until a condition holds.

use super::*;

/// Threads waiting for a condition.  `wait_until(cond)` returns once `cond`
/// holds; whoever makes it true calls `wake_all` (or `wake_one`).  Wake-ups
/// may be spurious (the condition is re-checked), never lost.
pub struct WaitQueue {
    /// Waiting thread ids (bit per id).  Taken with interrupts masked,
    /// before `SCHED` when both are held.
    pub(super) waiters: mm::sync::Mutex<u64>,
}

impl Default for WaitQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl WaitQueue {
    pub const fn new() -> Self {
        Self {
            waiters: mm::sync::Mutex::new(0),
        }
    }

    /// Block until `cond()` is true.  `cond` is also evaluated with
    /// interrupts masked, so it must be quick and must not block or allocate.
    #[track_caller]
    pub fn wait_until(&self, cond: impl FnMut() -> bool) {
        self.wait_inner(cond, u64::MAX, false, core::panic::Location::caller());
    }

    /// [`Self::wait_until`] for a wait a signal ends (`cond` checks for a
    /// kill) and whose length has no bound, as `wait4` for a child that is
    /// still working: Linux's `TASK_INTERRUPTIBLE` sleep, which its
    /// hung-task detector never reports, and neither does ours.
    #[track_caller]
    pub fn wait_interruptible(&self, cond: impl FnMut() -> bool) {
        self.wait_inner(cond, u64::MAX, true, core::panic::Location::caller());
    }

    /// Block until `cond()` is true or the clock (`arch::now_ns`) reaches
    /// `deadline`; returns whether `cond` held.  For waits with a timeout
    /// (futex): the thread is both queued here and a sleeper, so whichever
    /// comes first, a wake-up or the tick past the deadline, readies it.
    #[track_caller]
    pub fn wait_until_deadline(&self, cond: impl FnMut() -> bool, deadline: u64) -> bool {
        self.wait_inner(cond, deadline, false, core::panic::Location::caller())
    }

    fn wait_inner(
        &self,
        mut cond: impl FnMut() -> bool,
        deadline: u64,
        interruptible: bool,
        at: &'static core::panic::Location<'static>,
    ) -> bool {
        loop {
            if cond() {
                return true;
            }
            if deadline != u64::MAX && arch::now_ns() >= deadline {
                return false;
            }
            let irq = arch::irq_save();
            let me = {
                let mut w = self.waiters.lock();
                let mut g = SCHED.lock();
                let me = g.cpus[cpu_id()].current;
                *w |= 1 << me;
                *g.thread(me).wchan.lock() = Some(at);
                // `u64::MAX`: an interruptible sleep, never reported hung.
                let since = if interruptible {
                    u64::MAX
                } else {
                    arch::now_ns()
                };
                g.thread(me).blocked_at.store(since, Ordering::Relaxed);
                g.thread(me).set_state(State::Blocked);
                if deadline != u64::MAX {
                    g.thread(me).wake_at.store(deadline, Ordering::Relaxed);
                    g.sleepers |= 1 << me;
                    g.next_wake = g.next_wake.min(deadline);
                }
                me
            };
            // A wake-up from here on makes us Ready, and `schedule` then
            // keeps us running; so checking once more cannot lose one.
            // A true answer here is final: `cond` may act (the block
            // layer's takes its request slot), so it must not be asked
            // again and answer false for what it just did.
            let ready = cond();
            if ready {
                let mut g = SCHED.lock();
                g.sleepers &= !(1 << me);
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
            if ready {
                return true;
            }
        }
    }

    /// Wake every waiter.  Returns how many were blocked here.
    pub fn wake_all(&self) -> usize {
        self.wake(u64::MAX)
    }

    /// Wake one waiter (the lowest thread id).  Returns whether one was.
    /// (No caller since the block layer's slots became several: a freed
    /// slot may unblock a waiter other than the lowest id.)
    #[allow(dead_code)]
    pub fn wake_one(&self) -> bool {
        self.wake(1) > 0
    }

    /// Wake the waiters among thread ids `mask` (bit per id).  Returns how
    /// many were blocked here.
    pub fn wake_ids(&self, mask: u64) -> usize {
        self.wake_masked(mask, u64::MAX)
    }

    fn wake(&self, max: u64) -> usize {
        self.wake_masked(u64::MAX, max)
    }

    fn wake_masked(&self, mask: u64, max: u64) -> usize {
        let irq = arch::irq_save();
        let mut n = 0;
        {
            let mut w = self.waiters.lock();
            let mut bits = *w & mask;
            // Nobody to wake (the usual case of a completion nobody waits
            // for): the scheduler lock is not needed.
            let mut g = if bits != 0 { Some(SCHED.lock()) } else { None };
            while let Some(g) = g.as_mut()
                && bits != 0
                && (n as u64) < max
            {
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
