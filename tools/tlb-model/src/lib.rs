//! A data-TLB model for guest memory traces (issue 19, part 1).
//!
//! [`model`] is a pure model of a two-level data TLB fed with (virtual
//! address, leaf translation size) pairs; [`walk`] decodes the leaf size of a
//! translation from the guest's page tables through a memory-read callback.
//! Both are plain Rust, unit-tested on the host, so the QEMU plugin that
//! feeds them only has to glue QEMU's callbacks to these functions.
//! See docs/tlb-model.md.

#![forbid(unsafe_code)]

pub mod model;
pub mod phase;
pub mod walk;
