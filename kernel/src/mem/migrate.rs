//! `move_pages(2)`: the system call's side (Linux's `kernel_move_pages`):
//! flags, the target process and its permission, the user arrays copied
//! in and out a chunk at a time with nothing held (the copies may fault),
//! and `mm::aspace::move_pages` for each chunk.  Which folios move, the
//! per-page statuses and the batching live there.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::Ordering::Relaxed;

use mm::abi::errno::Errno;

use crate::arch;
use crate::mem::memory::buddy;
use crate::mem::uspace::{self, UserMm};
use crate::proc::process::{self, Process};
use crate::task::sched;

const MPOL_MF_MOVE: u64 = 1 << 1;
const MPOL_MF_MOVE_ALL: u64 = 1 << 2;
/// Entries copied in per chunk (Linux's stat path uses 16; moves are
/// batched per node, and a chunk's end flushes the batch).
const CHUNK: usize = 512;

fn efault<T, E>(r: Result<T, E>) -> Result<T, Errno> {
    r.map_err(|_| Errno::EFAULT)
}

/// The address space `pid` names for a memory-policy call (0: the
/// caller's), checked as Linux's `find_mm_struct`: an unknown pid is
/// ESRCH, another user's process EPERM unless the caller is root (the
/// ptrace read check, reduced to uids).
pub fn target_mm(p: &Arc<Process>, pid: u64) -> Result<Arc<UserMm>, Errno> {
    let pid = pid as i32;
    let t = if pid == 0 || pid as u32 == p.pid {
        p.clone()
    } else if pid < 0 {
        return Err(Errno::ESRCH);
    } else {
        process::find(pid as u32).ok_or(Errno::ESRCH)?
    };
    let (me, them) = (p.uid.load(Relaxed), t.uid.load(Relaxed));
    if me != 0 && me != them {
        return Err(Errno::EPERM);
    }
    t.user_mm()
}

/// The address spaces a move of `target`'s folios works in: the target
/// alone (its folios that may be shared are left alone), or with `all`
/// (`MPOL_MF_MOVE_ALL`) every live one after it, so a shared folio moves
/// in all of them.
pub fn movers(target: &Arc<UserMm>, all: bool) -> Vec<Arc<UserMm>> {
    let mut mms = alloc::vec![target.clone()];
    if all {
        mms.extend(
            uspace::all_mms()
                .into_iter()
                .filter(|m| !Arc::ptr_eq(m, target)),
        );
    }
    mms
}

/// Whether `node` names a node with memory (Linux's `N_MEMORY`).
pub fn has_memory(node: i32) -> bool {
    node >= 0 && buddy().node_has_memory(node as usize)
}

/// `move_pages(pid, count, pages, nodes, status, flags)`.
pub fn move_pages(
    p: &Arc<Process>,
    pid: u64,
    count: u64,
    pages: u64,
    nodes: u64,
    status: u64,
    flags: u64,
) -> Result<u64, Errno> {
    if flags & !(MPOL_MF_MOVE | MPOL_MF_MOVE_ALL) != 0 {
        return Err(Errno::EINVAL);
    }
    if flags & MPOL_MF_MOVE_ALL != 0 && p.uid.load(Relaxed) != 0 {
        return Err(Errno::EPERM);
    }
    let target = target_mm(p, pid)?;
    let count = count as usize;
    let ptr = core::mem::size_of::<u64>() as u64;
    let mut done = 0usize;
    while done < count {
        let n = (count - done).min(CHUNK);
        let mut bytes = alloc::vec![0u8; n * 8];
        efault(arch::copy_from_user(&mut bytes, pages + done as u64 * ptr))?;
        let addrs = words::<8, _>(&bytes, u64::from_le_bytes);
        // Start from the caller's array: entries the call does not answer
        // (a batch left unmoved) keep what they held, as on Linux.
        let sb = &mut bytes[..n * 4];
        efault(arch::copy_from_user(sb, status + done as u64 * 4))?;
        let mut st = words::<4, _>(sb, i32::from_le_bytes);
        let r = if nodes == 0 {
            target.enter().pages_node(&addrs, &mut st);
            Ok(0)
        } else {
            let nb = &mut bytes[..n * 4];
            efault(arch::copy_from_user(nb, nodes + done as u64 * 4))?;
            let ns = words::<4, _>(nb, i32::from_le_bytes);
            chunk_move(&target, &addrs, &ns, &mut st, flags & MPOL_MF_MOVE_ALL != 0)
        };
        // Statuses are written even when the chunk ends in an error: the
        // batch before an invalid node was flushed and reports its node.
        let out = &mut bytes[..n * 4];
        for (o, s) in out.chunks_exact_mut(4).zip(&st) {
            o.copy_from_slice(&s.to_le_bytes());
        }
        let wrote = efault(arch::copy_to_user(status + done as u64 * 4, out));
        match r {
            Err(e) => return Err(e),
            Ok(0) => wrote?,
            // Folios left behind: the call stops, and the entries after
            // this chunk count as not processed too.
            Ok(left) => return Ok(left + (count - done - n) as u64),
        }
        done += n;
    }
    Ok(0)
}

/// The little-endian `N`-byte words of `bytes` (a user array copied in),
/// converted by `from`: a plain indexed loop (an iterator chain of
/// `chunks_exact`/`try_into`/`collect`, and `flat_map` on the way out, cost
/// a 4K `move_pages` about 190 instructions per address).
fn words<const N: usize, T>(bytes: &[u8], from: fn([u8; N]) -> T) -> Vec<T> {
    let n = bytes.len() / N;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut w = [0u8; N];
        w.copy_from_slice(&bytes[i * N..i * N + N]);
        out.push(from(w));
    }
    out
}

/// One chunk of a move: the target alone, or with `MOVE_ALL` every live
/// address space (target first), so a shared folio moves in all of them.
fn chunk_move(
    target: &Arc<UserMm>,
    addrs: &[u64],
    nodes: &[i32],
    st: &mut [i32],
    move_all: bool,
) -> Result<u64, Errno> {
    let mms = movers(target, move_all);
    let np = sched::preempt_disable();
    let spaces = uspace::spaces(&mms, &np);
    mm::aspace::move_pages::move_pages(&spaces, addrs, nodes, st, move_all, has_memory)
}
