//! Progress for the caller's callback: (bytes done, bytes in all), paced so that it is
//! called at the start, at least every `PROGRESS_STEP` bytes, and at the end.

use std::io::{self, Read};

/// Progress is reported at least every this many bytes.
const PROGRESS_STEP: u64 = 4 << 20;

/// Reports progress to the caller's callback every `PROGRESS_STEP` bytes.
pub(super) struct Progress<'a> {
    report: &'a mut dyn FnMut(u64, u64),
    done: u64,
    total: u64,
    last: u64,
}

impl<'a> Progress<'a> {
    pub(super) fn new(report: &'a mut dyn FnMut(u64, u64), total: u64) -> Self {
        report(0, total);
        Progress {
            report,
            done: 0,
            total,
            last: 0,
        }
    }

    fn add(&mut self, n: u64) {
        self.done += n;
        self.total = self.total.max(self.done);
        if self.done - self.last >= PROGRESS_STEP {
            self.last = self.done;
            (self.report)(self.done, self.total);
        }
    }

    pub(super) fn finish(&mut self) {
        (self.report)(self.total, self.total);
    }
}

/// A reader that counts what passes through it into a `Progress`.
pub(super) struct Counting<'p, 'a, R> {
    inner: R,
    progress: &'p mut Progress<'a>,
    /// Bytes read so far.
    pub(super) read: u64,
}

impl<'p, 'a, R> Counting<'p, 'a, R> {
    pub(super) fn new(inner: R, progress: &'p mut Progress<'a>) -> Self {
        Counting {
            inner,
            progress,
            read: 0,
        }
    }
}

impl<R: Read> Read for Counting<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        self.progress.add(n as u64);
        Ok(n)
    }
}
