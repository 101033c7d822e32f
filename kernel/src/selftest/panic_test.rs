//! `panic_test`: a deliberate kernel panic, so the runner can check the
//! panic report end to end (tests/src/suites.rs, `backtrace_suite`): the
//! frame-pointer backtrace the panic handler prints, symbolized against the
//! kernel ELF, must name the functions below.  The panic happens in a
//! kernel thread two calls deep, on a thread stack slot (where nearly every
//! panic happens), and the boot ends there with QEMU's failure status.

/// The `panic_test` word: never returns normally (the panic ends the run);
/// false if the thread could not even be started.
pub fn run() -> bool {
    match crate::task::sched::spawn("panic_test", panic_test_thread) {
        Ok(h) => {
            h.join();
            crate::println!("panic_test: the thread returned without panicking");
            false
        }
        Err(e) => {
            crate::println!("panic_test: cannot start the thread: {e}");
            false
        }
    }
}

/// Not inlined, so it keeps a frame of its own that the backtrace names.
#[inline(never)]
fn panic_test_thread() {
    deliberate_panic(core::hint::black_box(7));
}

/// Not inlined: the function the symbolized backtrace must name.
#[inline(never)]
fn deliberate_panic(n: u64) {
    if core::hint::black_box(n) != 0 {
        panic!("panic_test: deliberate panic (n = {n})");
    }
}
