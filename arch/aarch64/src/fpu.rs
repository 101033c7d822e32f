//! User FP/SIMD state.
//!
//! Every exception entry saves all of q0-q31, FPCR and FPSR in the
//! exception frame on the thread's own kernel stack, and every return
//! restores them, so a user context's FP/SIMD registers already travel
//! with its frame (fork copies the frame).  The scheduler's hooks are
//! therefore empty here; they exist so the kernel can treat both
//! architectures alike.

/// Nothing to keep outside the exception frame.
#[derive(Clone)]
pub struct FpuState;

impl FpuState {
    pub const fn initial() -> FpuState {
        FpuState
    }
    pub fn capture() -> FpuState {
        FpuState
    }
    pub fn save(&mut self) {}
    pub fn restore(&self) {}
}
