//! Futexes: user-space locks sleep here (`futex(2)`: WAIT, WAKE and their
//! BITSET forms, with timeouts).
//!
//! A waiter is keyed by (address space id, user address): private and
//! shared futexes alike, since no memory is shared between address spaces
//! here.  Each kernel thread waits on at most one futex, so the table is a
//! slot per kernel thread id; the sleeping itself is one [`WaitQueue`],
//! woken precisely by thread id ([`WaitQueue::wake_ids`]).
//!
//! No lost wake-up: a waiter enters the table *before* it reads the futex
//! word, and a waker changes the word before it calls WAKE; so either the
//! waiter reads the new value (EAGAIN) or the waker finds it in the table.
//!
//! Lock order: `TABLE` is a leaf (taken briefly, never across a user
//! access or a wake-up; the wake-up happens after it is released).
use crate::arch;
use crate::task::sched::{self, WaitQueue};
use crate::task::thread::MAX_THREADS;
use core::sync::atomic::{AtomicBool, Ordering::Relaxed};
use mm::abi::errno::Errno;
use mm::sync::Mutex;

#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    space: u64,
    addr: u64,
}

#[derive(Clone, Copy)]
struct Waiter {
    key: Key,
    bitset: u32,
}

/// The futex each kernel thread waits on, if any.
static TABLE: Mutex<[Option<Waiter>; MAX_THREADS]> = Mutex::new([None; MAX_THREADS]);
/// Set by a waker (after taking the waiter out of `TABLE`).
static WOKEN: [AtomicBool; MAX_THREADS] = [const { AtomicBool::new(false) }; MAX_THREADS];
static QUEUE: WaitQueue = WaitQueue::new();

const FUTEX_WAIT: u32 = 0;
const FUTEX_WAKE: u32 = 1;
const FUTEX_WAIT_BITSET: u32 = 9;
const FUTEX_WAKE_BITSET: u32 = 10;
const FUTEX_PRIVATE_FLAG: u32 = 128;
const FUTEX_CLOCK_REALTIME: u32 = 256;

/// `futex(uaddr, op, val, timeout, uaddr2, val3)` for the process whose
/// address space has id `space`; Linux's checks in Linux's order (the
/// timeout first, then the op, the bitset, the address).  `killed` tells
/// whether the waiting thread must give up (its group is exiting).
pub fn sys_futex(
    space: u64,
    uaddr: u64,
    op: u64,
    val: u64,
    timeout: u64,
    val3: u64,
    killed: impl Fn() -> bool,
) -> Result<u64, Errno> {
    let op = op as u32;
    let cmd = op & !(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
    let waits = matches!(cmd, FUTEX_WAIT | FUTEX_WAIT_BITSET);
    let mut deadline = u64::MAX;
    if waits && timeout != 0 {
        let [sec, nsec] = crate::syscall::get_u64s::<2>(timeout)?;
        if (sec as i64) < 0 || nsec >= 1_000_000_000 {
            return Err(Errno::EINVAL);
        }
        let ns = sec.saturating_mul(1_000_000_000).saturating_add(nsec);
        // WAIT's timeout is relative; WAIT_BITSET's absolute, on
        // CLOCK_MONOTONIC or CLOCK_REALTIME (one clock here).
        deadline = if cmd == FUTEX_WAIT {
            arch::now_ns().saturating_add(ns)
        } else {
            ns
        };
    }
    if op & FUTEX_CLOCK_REALTIME != 0 && cmd != FUTEX_WAIT_BITSET {
        return Err(Errno::ENOSYS);
    }
    let (bitset, wait) = match cmd {
        FUTEX_WAIT => (u32::MAX, true),
        FUTEX_WAKE => (u32::MAX, false),
        FUTEX_WAIT_BITSET | FUTEX_WAKE_BITSET => (val3 as u32, cmd == FUTEX_WAIT_BITSET),
        _ => return Err(Errno::ENOSYS),
    };
    if bitset == 0 || !uaddr.is_multiple_of(4) {
        return Err(Errno::EINVAL);
    }
    if !crate::syscall::access_ok(uaddr, 4) {
        return Err(Errno::EFAULT);
    }
    let key = Key { space, addr: uaddr };
    if wait {
        self::wait(Waiter { key, bitset }, val as u32, deadline, killed)
    } else {
        // A shared futex is looked up through its page (EFAULT when
        // unmapped); a private one only by address.
        if op & FUTEX_PRIVATE_FLAG == 0 {
            read_word(uaddr)?;
        }
        Ok(wake_key(key, val as u32 as i32, bitset) as u64)
    }
}

fn read_word(uaddr: u64) -> Result<u32, Errno> {
    let mut b = [0u8; 4];
    crate::syscall::efault(arch::copy_from_user(&mut b, uaddr))?;
    Ok(u32::from_le_bytes(b))
}

/// Sleep on `w` while the word holds `val`, until woken, `deadline` or
/// `killed()`.
fn wait(w: Waiter, val: u32, deadline: u64, killed: impl Fn() -> bool) -> Result<u64, Errno> {
    let me = sched::current_id();
    let key = w.key;
    WOKEN[me].store(false, Relaxed);
    TABLE.lock()[me] = Some(w);
    let leave = || TABLE.lock()[me] = None;
    match read_word(key.addr) {
        Ok(v) if v == val => {}
        Ok(_) => {
            leave();
            return Err(Errno::EAGAIN);
        }
        Err(e) => {
            leave();
            return Err(e);
        }
    }
    QUEUE.wait_until_deadline(|| WOKEN[me].load(Relaxed) || killed(), deadline);
    leave();
    if WOKEN[me].load(Relaxed) {
        Ok(0)
    } else if killed() {
        Err(Errno::EINTR)
    } else {
        Err(Errno::ETIMEDOUT)
    }
}

/// Wake up to `n` waiters on `addr` of address space `space` (at least
/// one, as Linux does for `n <= 0`); returns how many.
pub fn wake(space: u64, addr: u64, n: i32) -> usize {
    wake_key(Key { space, addr }, n, u32::MAX)
}

fn wake_key(key: Key, n: i32, bitset: u32) -> usize {
    let max = n.max(1) as usize;
    let mut ids = 0u64;
    let mut count = 0;
    {
        let mut t = TABLE.lock();
        for (id, slot) in t.iter_mut().enumerate() {
            if count == max {
                break;
            }
            if let Some(w) = slot
                && w.key == key
                && w.bitset & bitset != 0
            {
                *slot = None;
                WOKEN[id].store(true, Relaxed);
                ids |= 1 << id;
                count += 1;
            }
        }
    }
    QUEUE.wake_ids(ids);
    count
}
