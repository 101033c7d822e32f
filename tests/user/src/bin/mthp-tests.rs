//! The user-space test suite: every test runs in this one process (forking
//! where a test needs isolation) and prints `test <name> ... ok`,
//! `... FAILED: <reason>` or `... skipped: <reason>`, then `N passed, N
//! failed, N skipped`; exit status 0 or 1.  A skip (a knob that cannot be
//! written, kpageflags that cannot be read) is a failure on the mthp kernel
//! and a skip on Linux (see `Harness` in the library).  Tests about large
//! folios first prove the mapping has the folios they are about.
//!
//! `mthp-tests [filter]` runs only the tests whose name contains `filter`.
//! The THP knobs the tests change are saved first and restored at the end,
//! so running this on a Linux host leaves its settings as they were.
#![no_std]
#![no_main]
// Failure messages live on the stack (no heap): a 240-byte `Msg`.
#![allow(clippy::result_large_err)]

use mthp_user::sys::{self, check};
use mthp_user::{
    Args, Harness, Mem, Outcome, TestResult, ensure, entry, fail, on_mthp, path, println,
    read_file, wexitstatus, wifexited, wifsignaled, write_file, wtermsig,
};

#[path = "mthp-tests/errnos.rs"]
mod errnos;
#[path = "mthp-tests/folios.rs"]
mod folios;
#[path = "mthp-tests/linux_answers.rs"]
mod linux_answers;
#[path = "mthp-tests/migrate.rs"]
mod migrate;
#[path = "mthp-tests/mlock.rs"]
mod mlock;
#[path = "mthp-tests/numa.rs"]
mod numa;
#[path = "mthp-tests/numa_balancing.rs"]
mod numa_balancing;
#[path = "mthp-tests/procfs.rs"]
mod procfs;
#[path = "mthp-tests/reserve.rs"]
mod reserve;
#[path = "mthp-tests/sharing.rs"]
mod sharing;
#[path = "mthp-tests/shmem.rs"]
mod shmem;
#[path = "mthp-tests/shmem_collapse.rs"]
mod shmem_collapse;
#[path = "mthp-tests/shmem_private.rs"]
mod shmem_private;
#[path = "mthp-tests/shmem_swap.rs"]
mod shmem_swap;
#[path = "mthp-tests/swap.rs"]
mod swap;
#[path = "mthp-tests/syscalls.rs"]
mod syscalls;
#[path = "mthp-tests/tmpfs_limits.rs"]
mod tmpfs_limits;
#[path = "mthp-tests/vm_sysctl.rs"]
mod vm_sysctl;

use mthp_user::thp::*;

fn main(args: &Args) -> i32 {
    let linux_init = mthp_user::mount_pseudo_fs_if_needed();
    println!(
        "mthp-tests: {} user-space tests, pid {}",
        TESTS.len(),
        sys::getpid()
    );
    let saved = Knobs::save();
    let mut h = Harness::new(args.arg(1));
    for (name, f) in TESTS {
        h.run(name, *f);
    }
    saved.restore();
    let code = h.finish();
    if linux_init {
        mthp_user::power_off();
    }
    code
}

entry!(main);

type Test = (&'static str, fn() -> TestResult);

/// Register tests by path (`module::function`): each is listed once, and
/// its name is the function's, so the two cannot disagree.
macro_rules! tests {
    ($($m:ident :: $f:ident),* $(,)?) => {
        &[$((stringify!($f), $m::$f as fn() -> TestResult)),*]
    };
}

/// Every test, in the order they run.
static TESTS: &[Test] = tests![
    syscalls::startup_stack_abi,
    syscalls::basic_syscalls,
    procfs::sysfs_knob_formats,
    procfs::proc_files,
    procfs::buddyinfo_tracks_free_memory,
    numa::numa_node_files,
    vm_sysctl::watermarks_follow_min_free_kbytes,
    vm_sysctl::compaction_sysctls_as_linux,
    folios::fault_order_4k,
    folios::fault_order_64k,
    folios::fault_order_2m,
    procfs::smaps_anon_huge_pages,
    procfs::smaps_layout_as_linux,
    procfs::prctl_thp_disable,
    procfs::pagemap_and_kpageflags,
    folios::fork_cow_integrity,
    folios::madv_dontneed_in_folio,
    folios::partial_munmap_in_folio,
    folios::mremap_large_folios,
    folios::split_huge_pages_debugfs,
    syscalls::mprotect_readonly_kills_writer,
    errnos::bad_syscall_args,
    syscalls::stray_access_kills_only_child,
    syscalls::brk_grows_heap,
    syscalls::tls_register_per_process,
    syscalls::fpu_state_per_process,
    syscalls::fpu_state_survives_preemption,
    syscalls::pipe_between_processes,
    syscalls::descriptors_and_directories,
    syscalls::signals_to_self,
    linux_answers::huge_zero_page_not_anon_huge,
    linux_answers::root_opens_pseudo_files_as_linux,
    migrate::numa_move_pages_reports_status,
    migrate::numa_move_pages_bad_input,
    migrate::numa_move_pages_keeps_folios_whole,
    migrate::numa_mempolicy_answers,
    migrate::numa_mempolicy_interleave_and_strict,
    migrate::numa_maps_counts,
    migrate::numa_migrate_pages_moves_folios_whole,
    numa_balancing::numa_balancing_moves_folios_home,
    mlock::mlock_errnos,
    mlock::mlock_counts_whole_folios,
    mlock::mlock_not_inherited_by_fork,
    mlock::mlock_limits_unprivileged,
    swap::swap_on_errnos_and_proc,
    swap::swap_pageout_4k_64k_2m,
    swap::swap_write_during_writeback,
    swap::swap_fork_cow,
    swap::swap_madv_free,
    swap::swap_mlock_not_swapped,
    shmem_swap::swap_shmem_out_and_back,
    shmem_swap::swap_shmem_unmapped_pressure,
    swap::swap_private_file_copies,
    swap::swap_in_from_disk,
    swap::swap_swapoff_brings_back,
    shmem::shmem_shared_anon_64k,
    shmem::shmem_shared_anon_2m,
    shmem::memfd_seals_and_io,
    shmem::memfd_truncate_in_large_folio,
    shmem::sysv_shm_share_and_errnos,
    shmem::sysv_shm_pmd,
    shmem::tmpfs_huge_always,
    shmem::tmpfs_huge_never,
    shmem::tmpfs_dev_shm,
    shmem::tmpfs_read_only_mappings,
    shmem::tmpfs_truncate_in_large_folio,
    shmem_private::shmem_private_cow,
    shmem_private::shmem_madv_remove,
    shmem_private::tmpfs_fallocate_prealloc,
    shmem_collapse::shmem_collapse_shared_anon,
    shmem_collapse::shmem_collapse_memfd,
    shmem_collapse::shmem_khugepaged_collapse,
    shmem_collapse::shmem_collapse_races_writer,
    tmpfs_limits::tmpfs_size_and_nr_inodes,
    tmpfs_limits::tmpfs_size_options,
    tmpfs_limits::proc_sysvipc_shm,
    sharing::fork_shared_exclusive_64k,
    sharing::fork_shared_exclusive_2m,
    sharing::large_cow_child_64k,
    sharing::large_cow_child_2m,
    reserve::reserve_fill_64k,
    reserve::reserve_fill_2m,
    reserve::reserve_pressure,
];
