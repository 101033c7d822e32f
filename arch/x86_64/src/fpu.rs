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
use crate::cpu;

/// An FXSAVE image: x87 control/status, MXCSR, st0-7 and xmm0-15.
#[repr(C, align(16))]
#[derive(Clone)]
pub struct FpuState([u8; 512]);

/// FCW after FNINIT: every x87 exception masked, 64-bit precision.
const FCW_INIT: u16 = 0x037f;
/// MXCSR at reset: every SIMD exception masked, round to nearest.
const MXCSR_INIT: u32 = 0x1f80;

const CR0_MP: u64 = 1 << 1;
const CR0_EM: u64 = 1 << 2;
const CR0_TS: u64 = 1 << 3;
const CR0_NE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;

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
        cpu::write_cr0((cpu::read_cr0() | CR0_MP | CR0_NE) & !(CR0_EM | CR0_TS));
        cpu::write_cr4(cpu::read_cr4() | CR4_OSFXSR | CR4_OSXMMEXCPT);
        core::arch::asm!("fninit", options(nomem, nostack));
    }
    FpuState::initial().restore();
}
