//! `set_mempolicy(2)`, `get_mempolicy(2)` and `mbind(2)`: the system-call
//! side (Linux's `kernel_*` functions in mm/mempolicy.c, notes §6.2 and
//! §5.4): node masks copied from and to user memory with Linux's
//! `maxnode` rules, the order of the argument checks, and the
//! permission for `MPOL_MF_MOVE_ALL`.  The policies themselves are
//! `mm::vma::mempolicy`; applying them is `mm::aspace::mempolicy`.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::Ordering::Relaxed;

use mm::abi::errno::Errno;
use mm::aspace::mempolicy::{MPOL_MF_MOVE, MPOL_MF_MOVE_ALL, MPOL_MF_STRICT, mbind_migrate};
use mm::physmem::node::MAX_NUMNODES;
use mm::vma::mempolicy::{Mempolicy, NodeMask};

use crate::arch;
use crate::mem::memory::buddy;
use crate::mem::uspace;
use crate::proc::process::Process;
use crate::task::sched;

const MPOL_F_NODE: u64 = 1;
const MPOL_F_ADDR: u64 = 2;
const MPOL_F_MEMS_ALLOWED: u64 = 4;
const PAGE_BITS: u64 = 4096 * 8;

fn efault<T, E>(r: Result<T, E>) -> Result<T, Errno> {
    r.map_err(|_| Errno::EFAULT)
}

/// Nodes with memory (Linux's `N_MEMORY`; there are no cpusets here, so
/// also every task's `mems_allowed`).
pub fn memory_nodes() -> NodeMask {
    let n = buddy().nodes().nr_nodes();
    NodeMask(
        (0..n)
            .filter(|&i| crate::mem::migrate::has_memory(i as i32))
            .fold(0, |m, i| m | 1 << i),
    )
}

/// Linux's `nr_node_ids`: one past the highest possible node.
fn nr_node_ids() -> u64 {
    buddy().nodes().nr_nodes() as u64
}

/// One user word of a node mask.
fn word_at(nmask: u64, i: u64) -> Result<u64, Errno> {
    let mut b = [0u8; 8];
    efault(arch::copy_from_user(&mut b, nmask + i * 8))?;
    Ok(u64::from_le_bytes(b))
}

/// Linux's `get_nodes`: `maxnode - 1` bits from `nmask` (none for a NULL
/// mask or `maxnode` 1); more than a page of bits is EINVAL, as is any bit
/// set at or above `MAX_NUMNODES`.
fn get_nodes(nmask: u64, maxnode: u64) -> Result<NodeMask, Errno> {
    let bits = maxnode.wrapping_sub(1);
    if bits == 0 || nmask == 0 {
        return Ok(NodeMask(0));
    }
    if bits > PAGE_BITS {
        return Err(Errno::EINVAL);
    }
    let mut mask = 0u32;
    for i in 0..bits.div_ceil(64) {
        let mut w = word_at(nmask, i)?;
        let left = bits - i * 64;
        if left < 64 {
            w &= (1u64 << left) - 1;
        }
        let lo = i * 64;
        for b in 0..64 {
            if w & (1 << b) == 0 {
                continue;
            }
            if lo + b >= MAX_NUMNODES as u64 {
                return Err(Errno::EINVAL);
            }
            mask |= 1 << (lo + b);
        }
    }
    Ok(NodeMask(mask))
}

/// Linux's `copy_nodes_to_user`: `maxnode - 1` bits rounded up to whole
/// longs, the part beyond `nr_node_ids` zeroed (at most a page).
fn put_nodes(nmask: u64, maxnode: u64, nodes: NodeMask) -> Result<(), Errno> {
    let copy = maxnode.wrapping_sub(1).div_ceil(64) * 8;
    let have = nr_node_ids().div_ceil(64) * 8;
    if copy > have && copy > 4096 {
        return Err(Errno::EINVAL);
    }
    let mut out: Vec<u8> = alloc::vec![0; copy as usize];
    let m = (nodes.0 as u64).to_le_bytes();
    let n = out.len().min(8);
    out[..n].copy_from_slice(&m[..n]);
    efault(arch::copy_to_user(nmask, &out))
}

/// `set_mempolicy(mode, nmask, maxnode)`.
pub fn set_mempolicy(p: &Arc<Process>, mode: u64, nmask: u64, maxnode: u64) -> Result<u64, Errno> {
    let mode = u32::try_from(mode).map_err(|_| Errno::EINVAL)?;
    Mempolicy::check_mode(mode)?;
    let nodes = get_nodes(nmask, maxnode)?;
    let pol = Mempolicy::new(mode, nodes, memory_nodes())?;
    p.with_mm(|mm| mm.set_task_policy(pol))?;
    Ok(0)
}

/// `get_mempolicy(policy, nmask, maxnode, addr, flags)`.
pub fn get_mempolicy(
    p: &Arc<Process>,
    policy: u64,
    nmask: u64,
    maxnode: u64,
    addr: u64,
    flags: u64,
) -> Result<u64, Errno> {
    if flags & !(MPOL_F_NODE | MPOL_F_ADDR | MPOL_F_MEMS_ALLOWED) != 0 {
        return Err(Errno::EINVAL);
    }
    if nmask != 0 && maxnode < nr_node_ids() {
        return Err(Errno::EINVAL);
    }
    let (val, nodes): (u32, NodeMask) = if flags & MPOL_F_MEMS_ALLOWED != 0 {
        if flags & (MPOL_F_NODE | MPOL_F_ADDR) != 0 {
            return Err(Errno::EINVAL);
        }
        (0, memory_nodes())
    } else {
        let pol = if flags & MPOL_F_ADDR != 0 {
            p.with_mm(|mm| mm.policy_at(addr))??
        } else if addr != 0 {
            return Err(Errno::EINVAL);
        } else {
            p.with_mm(|mm| mm.task_policy())?
        };
        let val = if flags & MPOL_F_NODE != 0 {
            if flags & MPOL_F_ADDR != 0 {
                // Faults the page in: the fault path may sleep, so not
                // under `with_mm`'s preemption guard for long.
                p.with_mm(|mm| mm.node_of_addr(addr))?? as u32
            } else {
                match pol {
                    // The next interleave node: interleave is per address
                    // here, so the task has no round-robin position; its
                    // first node is where Linux's starts.
                    Some(pl) if pl.mode.interleaves() => pl.nodes.first().unwrap_or(0) as u32,
                    _ => return Err(Errno::EINVAL),
                }
            }
        } else {
            Mempolicy::user_mode(pol)
        };
        (val, pol.map_or(NodeMask(0), |p| p.nodes))
    };
    if policy != 0 {
        efault(arch::copy_to_user(policy, &val.to_le_bytes()))?;
    }
    if nmask != 0 {
        put_nodes(nmask, maxnode, nodes)?;
    }
    Ok(0)
}

/// `mbind(start, len, mode, nmask, maxnode, flags)`.
pub fn mbind(
    p: &Arc<Process>,
    start: u64,
    len: u64,
    mode: u64,
    nmask: u64,
    maxnode: u64,
    flags: u64,
) -> Result<u64, Errno> {
    let mode = u32::try_from(mode).map_err(|_| Errno::EINVAL)?;
    Mempolicy::check_mode(mode)?;
    let nodes = get_nodes(nmask, maxnode)?;
    let valid = (MPOL_MF_STRICT | MPOL_MF_MOVE | MPOL_MF_MOVE_ALL) as u64;
    if flags & !valid != 0 {
        return Err(Errno::EINVAL);
    }
    let flags = flags as u32;
    if flags & MPOL_MF_MOVE_ALL != 0 && p.uid.load(Relaxed) != 0 {
        return Err(Errno::EPERM);
    }
    if !start.is_multiple_of(4096) {
        return Err(Errno::EINVAL);
    }
    let pol = Mempolicy::new(mode, nodes, memory_nodes())?;
    let target = p.user_mm()?;
    let moves = target.enter().mbind(start, len, pol, flags)?;
    let mms = crate::mem::migrate::movers(&target, flags & MPOL_MF_MOVE_ALL != 0);
    let np = sched::preempt_disable();
    let spaces = uspace::spaces(&mms, &np);
    mbind_migrate(&spaces, moves)?;
    Ok(0)
}

/// `migrate_pages(pid, maxnode, old_nodes, new_nodes)` (Linux's
/// `kernel_migrate_pages`): both masks parsed first, then the target
/// (ESRCH, EPERM as `move_pages`); `new` outside the nodes with memory is
/// EPERM without privilege, and EINVAL when nothing of it has memory.
/// Root moves shared folios too (`MPOL_MF_MOVE_ALL`, Linux's
/// `CAP_SYS_NICE`).  Returns the folios left behind.
pub fn migrate_pages(
    p: &Arc<Process>,
    pid: u64,
    maxnode: u64,
    old: u64,
    new: u64,
) -> Result<u64, Errno> {
    let old = get_nodes(old, maxnode)?;
    let new = get_nodes(new, maxnode)?;
    let target = crate::mem::migrate::target_mm(p, pid)?;
    let memory = memory_nodes();
    let root = p.uid.load(Relaxed) == 0;
    if new.and(memory) != new && !root {
        return Err(Errno::EPERM);
    }
    let new = new.and(memory);
    if new.is_empty() {
        return Err(Errno::EINVAL);
    }
    let mms = crate::mem::migrate::movers(&target, root);
    let np = sched::preempt_disable();
    let spaces = uspace::spaces(&mms, &np);
    Ok(mm::aspace::move_pages::migrate_node_pages(
        &spaces, old, new, root,
    ))
}
