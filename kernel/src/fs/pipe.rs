//! Pipes (`pipe2`): a 64 KiB byte queue between a read end and a write end,
//! each an open file that fork and `dup` share (the ends count open file
//! descriptions, as Linux's do).
//!
//! Reads block while the pipe is empty and some write end is open, and
//! return 0 (end of file) once none is; writes block while it is full and
//! fail with EPIPE once no read end is open (the caller raises SIGPIPE).
//! Writes of at most `PIPE_BUF` bytes are atomic: they wait for room for
//! all of them.  `O_NONBLOCK` turns every wait into EAGAIN.
//!
//! Locking: `buf` is a leaf lock, held only to move bytes; `len` mirrors
//! its length so the wait conditions (evaluated with interrupts masked)
//! need no lock.
use crate::proc::process::killed;
use crate::task::sched::WaitQueue;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use mm::abi::errno::Errno;

/// Bytes a pipe holds (Linux's default pipe size).
pub const CAPACITY: usize = 65536;
/// Writes up to this size are atomic (POSIX `PIPE_BUF`).
pub const PIPE_BUF: usize = 4096;

pub struct Pipe {
    buf: mm::sync::Mutex<VecDeque<u8>>,
    len: AtomicUsize,
    readers: AtomicUsize,
    writers: AtomicUsize,
    /// Readers waiting for data and writers waiting for room.
    wq: WaitQueue,
}

/// One end of a pipe; dropping the last reference closes it.
pub struct PipeEnd {
    pub pipe: Arc<Pipe>,
    pub write: bool,
}

impl core::fmt::Debug for PipeEnd {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "PipeEnd({})", if self.write { "write" } else { "read" })
    }
}

/// A new pipe: (read end, write end).
pub fn new() -> (PipeEnd, PipeEnd) {
    let p = Arc::new(Pipe {
        buf: mm::sync::Mutex::new(VecDeque::new()),
        len: AtomicUsize::new(0),
        readers: AtomicUsize::new(1),
        writers: AtomicUsize::new(1),
        wq: WaitQueue::new(),
    });
    (
        PipeEnd {
            pipe: p.clone(),
            write: false,
        },
        PipeEnd {
            pipe: p,
            write: true,
        },
    )
}

impl Drop for PipeEnd {
    fn drop(&mut self) {
        let count = if self.write {
            &self.pipe.writers
        } else {
            &self.pipe.readers
        };
        count.fetch_sub(1, SeqCst);
        self.pipe.wq.wake_all();
    }
}

impl Pipe {
    /// Read up to `out.len()` bytes.
    pub fn read(&self, out: &mut [u8], nonblock: bool) -> Result<usize, Errno> {
        if out.is_empty() {
            return Ok(0);
        }
        let ready = || self.len.load(SeqCst) > 0 || self.writers.load(SeqCst) == 0;
        if nonblock && !ready() {
            return Err(Errno::EAGAIN);
        }
        // A thread its group is ending gives up (`exit_group`).
        self.wq.wait_until(|| ready() || killed());
        if !ready() {
            return Err(Errno::EINTR);
        }
        let n = {
            let mut b = self.buf.lock();
            let n = out.len().min(b.len());
            for (o, c) in out.iter_mut().zip(b.drain(..n)) {
                *o = c;
            }
            self.len.store(b.len(), SeqCst);
            n
        };
        if n > 0 {
            self.wq.wake_all();
        }
        Ok(n)
    }

    /// Write `data`; EPIPE (nothing written) once no read end is open.
    pub fn write(&self, data: &[u8], nonblock: bool) -> Result<usize, Errno> {
        let mut done = 0;
        while done < data.len() {
            let want = if data.len() <= PIPE_BUF {
                data.len()
            } else {
                1
            };
            let room =
                || CAPACITY - self.len.load(SeqCst) >= want || self.readers.load(SeqCst) == 0;
            if nonblock && !room() {
                return if done > 0 {
                    Ok(done)
                } else {
                    Err(Errno::EAGAIN)
                };
            }
            self.wq.wait_until(|| room() || killed());
            if !room() {
                return if done > 0 {
                    Ok(done)
                } else {
                    Err(Errno::EINTR)
                };
            }
            if self.readers.load(SeqCst) == 0 {
                return if done > 0 {
                    Ok(done)
                } else {
                    Err(Errno::EPIPE)
                };
            }
            {
                let mut b = self.buf.lock();
                let n = (CAPACITY - b.len()).min(data.len() - done);
                b.extend(&data[done..done + n]);
                self.len.store(b.len(), SeqCst);
                done += n;
            }
            self.wq.wake_all();
        }
        Ok(done)
    }

    /// Bytes waiting to be read (`FIONREAD`).
    pub fn available(&self) -> usize {
        self.len.load(SeqCst)
    }
}
