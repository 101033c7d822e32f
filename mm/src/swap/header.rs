//! Linux's swap header (page 0 of a swap area, as `mkswap` writes it).
//! Parsing is not written yet; `swapon` is.
