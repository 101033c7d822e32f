//! Polled COM1 (16550 UART at I/O port 0x3F8).
//!
//! Output only, no locking: usable from exception handlers and the panic
//! path.  The kernel's logger serialises normal output itself.
//!
//! Not the `uart_16550` crate: its `send` (and `fmt::Write`) spins on the
//! line status without bound, its `init` enables the receive interrupt and
//! OUT2 (which nothing here services) at a fixed 38400 baud, and it pulls
//! in the `x86` crate next to `x86_64` (see docs/crates.md).  Port I/O goes
//! through `x86_64::instructions::port`.
use x86_64::instructions::port::{Port, PortWriteOnly};

const COM1: u16 = 0x3F8;
const THR: u16 = 0; // transmit holding register (DLAB = 0)
const IER: u16 = 1; // interrupt enable (DLAB = 0) / divisor high (DLAB = 1)
const FCR: u16 = 2; // FIFO control
const LCR: u16 = 3; // line control
const MCR: u16 = 4; // modem control
const LSR: u16 = 5; // line status
const LSR_THR_EMPTY: u8 = 1 << 5;

/// Program 115200 baud, 8N1, FIFOs on, interrupts off.
pub fn init() {
    let out = |reg: u16, val: u8| {
        // SAFETY: COM1 is the kernel's console; these writes only configure it.
        unsafe { PortWriteOnly::<u8>::new(COM1 + reg).write(val) }
    };
    out(IER, 0x00);
    out(LCR, 0x80); // DLAB: the next two registers are the divisor
    out(THR, 0x01); // divisor 1 = 115200 baud
    out(IER, 0x00);
    out(LCR, 0x03); // 8 data bits, no parity, 1 stop bit
    out(FCR, 0xC7); // enable + clear FIFOs
    out(MCR, 0x03); // DTR + RTS
}

fn put(b: u8) {
    // Bounded wait: a missing UART reads 0xFF (THR empty) anyway, but never
    // hang the panic path on a stuck one.
    for _ in 0..100_000 {
        // SAFETY: reading the line status register has no side effects.
        if unsafe { Port::<u8>::new(COM1 + LSR).read() } & LSR_THR_EMPTY != 0 {
            break;
        }
        core::hint::spin_loop();
    }
    // SAFETY: writing THR transmits one byte on the console.
    unsafe { PortWriteOnly::<u8>::new(COM1 + THR).write(b) };
}

/// Write a string, turning `\n` into `\r\n`.
pub fn write(s: &str) {
    for b in s.bytes() {
        if b == b'\n' {
            put(b'\r');
        }
        put(b);
    }
}

/// A `core::fmt::Write` sink for the console (no locking).
pub struct Serial;

impl core::fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        write(s);
        Ok(())
    }
}

/// `print!` for arch-internal messages (boot log, exception reports).
macro_rules! kprint {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = write!($crate::console::Serial, $($arg)*);
    }};
}
pub(crate) use kprint;
