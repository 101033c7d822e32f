//! Placeholder.
#![no_std]
#![no_main]

use mthp_user::{Args, entry};

fn main(_args: &Args) -> i32 {
    0
}

entry!(main);
