//! `/sys/kernel/debug/mthp/perf`: the kernel's counter API ([`crate::perf`])
//! for user programs, so a benchmark running in user space (natively under
//! KVM) can report hardware events per access without inventing numbers.
//!
//! Protocol (one command per `write`):
//! * `start user|kernel|both` — begin a [`Session`] over every event in
//!   [`Event::ALL`], counting the named privilege levels; a session still
//!   running is discarded first;
//! * `stop` — end it and keep its report.
//!
//! Reading the file returns the last report, one fact per line:
//! `source <text>`, `filter <user|kernel|both>`, `elapsed_ns <n>`,
//! `event <name> <count>` or `event <name> - <reason>`, `pgfault <n>`,
//! `faults_by_order <order>:<n> ...`; or `state none` / `state running`.
//! In every state it ends with the kernel's running TLB shootdown totals
//! since boot (read-only, not part of a session): `tlb_shootdowns <n>`
//! (requests sent to other CPUs) and `tlb_shootdown_ipis <n>` (IPIs those
//! sent; always 0 on arm64, whose `TLBI …IS` broadcasts), then arm64's
//! ASID allocator totals: `asid_rollovers <n>` (new generations; each
//! makes every CPU flush its TLB) and `asid_allocs <n>` (hardware ASIDs
//! handed out); both always 0 on x86, where PCIDs are per space.
//!
//! The counters are per CPU and not switched with tasks: the session
//! counts whatever runs on the CPU it started on, which is the benchmark
//! (and the interrupts and kernel threads it shares that CPU with) when
//! it is the only process.  A session whose writer ends it on another CPU
//! (it slept and woke elsewhere: a wait for swap I/O under `-smp 2`)
//! reports every hardware event as unavailable rather than a difference
//! of two CPUs' counters.
use crate::perf::{Event, Filter, Report, Session};
use alloc::string::String;
use core::fmt::Write;
use mm::abi::errno::Errno;
use mm::sync::Mutex;

pub const PATH: &str = "/sys/kernel/debug/mthp/perf";
pub const DIR: &str = "/sys/kernel/debug/mthp";

enum State {
    None,
    Running(Session),
    Done(Report),
}

static STATE: Mutex<State> = Mutex::new(State::None);

/// One command from a `write`.
pub fn write(data: &[u8]) -> Result<(), Errno> {
    let s = core::str::from_utf8(data).map_err(|_| Errno::EINVAL)?;
    let mut w = s.split_ascii_whitespace();
    match (w.next(), w.next(), w.next()) {
        (Some("start"), f, None) => {
            let filter = match f.unwrap_or("both") {
                "user" => Filter::USER,
                "kernel" => Filter::KERNEL,
                "both" => Filter::BOTH,
                _ => return Err(Errno::EINVAL),
            };
            // End (and drop) a previous session first: the PMU is owned by
            // one counter set at a time.
            let old = core::mem::replace(&mut *STATE.lock(), State::None);
            if let State::Running(s) = old {
                drop(s.end());
            }
            let s = Session::begin(&Event::ALL, filter);
            *STATE.lock() = State::Running(s);
            Ok(())
        }
        (Some("stop"), None, None) => {
            let old = core::mem::replace(&mut *STATE.lock(), State::None);
            match old {
                State::Running(s) => {
                    *STATE.lock() = State::Done(s.end());
                    Ok(())
                }
                other => {
                    *STATE.lock() = other;
                    Err(Errno::EINVAL)
                }
            }
        }
        _ => Err(Errno::EINVAL),
    }
}

/// The file's contents (a snapshot taken at `open`).
pub fn read_text() -> String {
    let mut s = String::new();
    match &*STATE.lock() {
        State::None => s.push_str("state none\n"),
        State::Running(_) => s.push_str("state running\n"),
        State::Done(r) => {
            let ring = match (r.filter.user, r.filter.kernel) {
                (true, true) => "both",
                (true, false) => "user",
                _ => "kernel",
            };
            let _ = writeln!(s, "state stopped");
            let _ = writeln!(s, "source {}", r.source);
            let _ = writeln!(s, "filter {}", ring);
            let _ = writeln!(s, "elapsed_ns {}", r.elapsed_ns);
            for (e, v) in &r.hw {
                match v {
                    Ok(n) => {
                        let _ = writeln!(s, "event {} {}", e.name(), n);
                    }
                    Err(why) => {
                        let _ = writeln!(s, "event {} - {}", e.name(), why);
                    }
                }
            }
            let _ = writeln!(s, "pgfault {}", r.soft.pgfault);
            let _ = write!(s, "faults_by_order");
            for (o, n) in r.soft.faults_by_order.iter().enumerate() {
                if *n > 0 {
                    let _ = write!(s, " {o}:{n}");
                }
            }
            s.push('\n');
        }
    }
    use core::sync::atomic::Ordering::Relaxed;
    let _ = writeln!(
        s,
        "tlb_shootdowns {}",
        crate::mem::shootdown::SHOOTDOWNS.load(Relaxed)
    );
    let _ = writeln!(
        s,
        "tlb_shootdown_ipis {}",
        crate::mem::shootdown::SHOOTDOWN_IPIS.load(Relaxed)
    );
    // arm64's generation ASID allocator (0 on x86: PCIDs are per space).
    let _ = writeln!(s, "asid_rollovers {}", crate::arch::asid_rollovers());
    let _ = writeln!(s, "asid_allocs {}", crate::arch::asid_allocs());
    s
}
