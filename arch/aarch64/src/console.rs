//! PL011 UART console, polled.  QEMU needs no UART initialisation.
//!
//! Before the kernel tables are live the UART is reached through the early
//! direct map (`PHYS_OFFSET + pa`, a Device block); afterwards through its
//! fixed device VA.  `set_base` switches between the two.
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

/// Physical address of the PL011 on QEMU `virt`.
pub const UART_PA: u64 = 0x0900_0000;
const DR: u64 = 0x00;
const FR: u64 = 0x18;
const FR_TXFF: u32 = 1 << 5;

static BASE: AtomicU64 = AtomicU64::new(crate::PHYS_OFFSET + UART_PA);

pub fn set_base(va: u64) {
    BASE.store(va, Ordering::Release);
}

fn put(base: u64, b: u8) {
    // SAFETY: `base` is the PL011's MMIO page, mapped Device-nGnRnE in every
    // table this code runs under; FR and DR are 32-bit registers.
    unsafe {
        while core::ptr::read_volatile((base + FR) as *const u32) & FR_TXFF != 0 {
            core::hint::spin_loop();
        }
        core::ptr::write_volatile((base + DR) as *mut u32, b as u32);
    }
}

/// Write `s`, translating `\n` into `\r\n`.
pub fn write_str(s: &str) {
    let base = BASE.load(Ordering::Acquire);
    for b in s.bytes() {
        if b == b'\n' {
            put(base, b'\r');
        }
        put(base, b);
    }
}

/// `fmt::Write` sink for reports printed from exception context.
pub struct Console;

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_str(s);
        Ok(())
    }
}

macro_rules! kprint {
    ($($arg:tt)*) => {{
        let _ = core::fmt::Write::write_fmt(&mut $crate::console::Console, format_args!($($arg)*));
    }};
}
macro_rules! kprintln {
    ($($arg:tt)*) => {{
        $crate::console::kprint!($($arg)*);
        $crate::console::write_str("\n");
    }};
}
pub(crate) use {kprint, kprintln};
