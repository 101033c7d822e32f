//! System V IPC: shared memory only ([`shm`]).
pub mod shm;
