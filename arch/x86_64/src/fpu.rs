//! User x87/SSE state.
//!
//! The kernel is built soft-float and never touches the x87, MMX or XMM
//! registers, so whatever they hold belongs to the user context that last
//! ran.  [`fpu_init`] turns the unit on for ring 3 (CR0.EM clear, CR0.MP
//! and NE set, CR4.OSFXSR and OSXMMEXCPT set: without them every SSE
//! instruction, which any x86_64 libc uses from `memcpy` onwards, raises
//! #UD).  XSAVE is left off, so CPUID reports no OSXSAVE and user code
//! sticks to SSE (no AVX state to switch).  The scheduler saves the
//! registers of the thread it switches away from and loads those of the
//! next one ([`FpuState::save`] / [`FpuState::restore`], `fxsave64` /
//! `fxrstor64`), and fork copies the parent's live registers
//! ([`FpuState::capture`]).
use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};

/// An FXSAVE image: x87 control/status, MXCSR, st0-7 and xmm0-15.
#[repr(C, align(16))]
#[derive(Clone)]
pub struct FpuState([u8; 512]);

/// FCW after FNINIT: every x87 exception masked, 64-bit precision.
const FCW_INIT: u16 = 0x037f;
/// MXCSR at reset: every SIMD exception masked, round to nearest.
const MXCSR_INIT: u32 = 0x1f80;

impl FpuState {
    /// The state a new program starts with (as after FNINIT and a reset
    /// MXCSR; registers zero).
    pub const fn initial() -> FpuState {
        let mut b = [0u8; 512];
        let fcw = FCW_INIT.to_le_bytes();
        b[0] = fcw[0];
        b[1] = fcw[1];
        let mxcsr = MXCSR_INIT.to_le_bytes();
        let mut i = 0;
        while i < 4 {
            b[24 + i] = mxcsr[i];
            i += 1;
        }
        FpuState(b)
    }

    /// The live registers.
    pub fn capture() -> FpuState {
        let mut s = FpuState::initial();
        s.save();
        s
    }

    /// Store the live registers here.
    pub fn save(&mut self) {
        // SAFETY: FXSAVE64 writes exactly 512 bytes at a 16-byte aligned
        // address (the struct's alignment); CR4.OSFXSR is set by
        // `fpu_init` before any thread runs.
        unsafe { core::arch::asm!("fxsave64 [{}]", in(reg) self.0.as_mut_ptr(), options(nostack)) };
    }

    /// Load the registers from here.
    pub fn restore(&self) {
        // SAFETY: as `save`; the image is either `initial()` or one FXSAVE
        // wrote, so MXCSR has no reserved bit set (which would #GP).
        unsafe {
            core::arch::asm!("fxrstor64 [{}]", in(reg) self.0.as_ptr(), options(nostack, readonly))
        };
    }
}

/// Enable the x87/SSE unit for user mode and load the initial state.
pub fn fpu_init() {
    // SAFETY: setting MP/NE and clearing EM/TS in CR0 and setting OSFXSR
    // and OSXMMEXCPT in CR4 only enables the FPU/SSE for both rings; the
    // kernel itself does not use it (soft-float target).
    unsafe {
        Cr0::update(|f| {
            f.insert(Cr0Flags::MONITOR_COPROCESSOR | Cr0Flags::NUMERIC_ERROR);
            f.remove(Cr0Flags::EMULATE_COPROCESSOR | Cr0Flags::TASK_SWITCHED);
        });
        Cr4::update(|f| f.insert(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE));
        core::arch::asm!("fninit", options(nomem, nostack));
    }
    FpuState::initial().restore();
}
