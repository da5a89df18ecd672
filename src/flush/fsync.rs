//! fsync(2) of one file in sync mode (design.md §6.3): a file this session's flushes wrote
//! is brought up to date in place and made durable, as the disk itself would; anything
//! else is written by a flush.

use super::Flusher;
use crate::backing::InPlace;
use crate::store::fsync::{FsyncPlan, InPlaceJob};
use crate::store::types::NodeId;
use std::sync::Arc;

/// What one fsync did (tests and benches look at it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Synced {
    /// Nothing to write: the disk copy had the file.
    Clean,
    /// Written in place; the bytes written.
    InPlace(u64),
    /// Written by a flush.
    Flushed,
}

/// At most this many disk inodes are remembered as the flusher's own; past it the set starts
/// again (files then take one flush before an fsync writes them in place again).
const MAX_OWN: usize = 1 << 17;

impl Flusher {
    /// The objects a committed flush put on disk (new inodes, made by asdfs).
    pub(super) fn note_own(&self, inos: impl Iterator<Item = u64>) {
        let mut own = self.own.lock();
        if own.len() > MAX_OWN {
            own.clear();
        }
        own.extend(inos);
    }

    /// Makes file `node` and the names leading to it durable on disk. Waits for a flush
    /// under way (one disk writer at a time).
    pub fn fsync(&self, node: NodeId) -> anyhow::Result<Synced> {
        let _one = self.running.lock();
        if self.ledger.pending().is_none() {
            let own = |ino: u64| self.own.lock().contains(&ino);
            match self.store.fsync_begin(node, &own) {
                FsyncPlan::Clean => return Ok(Synced::Clean),
                FsyncPlan::Flush => {}
                FsyncPlan::InPlace(job) => {
                    let r = self.in_place(&job);
                    self.store.fsync_end(&job, matches!(r, Ok(Some(_))));
                    if !job.live
                        && let Some(old) = job.cell.thaw(job.frozen.id)
                    {
                        self.store.data.remove(old);
                    }
                    if let Some(n) = r? {
                        return Ok(Synced::InPlace(n));
                    }
                }
            }
        }
        self.flush_holding(&|_, _| {}).map(|_| Synced::Flushed)
    }

    /// Writes the frozen data into the disk file; `None` when it cannot be written in place
    /// (another object there, another link to it, or changed behind asdfs: a flush then
    /// keeps a conflict copy, design.md §6.2).
    fn in_place(&self, job: &InPlaceJob) -> anyhow::Result<Option<u64>> {
        let b = &self.store.backing;
        // Excludes the hardlink backup, which links disk files.
        let _writers = self.store.disk_writers.lock();
        let src = match &job.frozen.file {
            Some(f) => f.clone(),
            None => Arc::new(self.store.data.open_existing(job.frozen.id)?),
        };
        let size = src.metadata()?.len();
        let w = InPlace {
            loc: &job.loc,
            ino: job.ino,
            src: &src,
            ranges: job.ranges.as_deref(),
            atime: job.atime,
            mtime: job.mtime,
            unchanged: &|st| !self.store.seen.changed(st),
        };
        let Some(st) = b
            .write_in_place(&w)
            .map_err(|e| anyhow::anyhow!("fsync: writing {} in place: {e}", job.loc))?
        else {
            return Ok(None);
        };
        self.store.seen.record_written(&st);
        let written = match &job.ranges {
            Some(rs) => rs.iter().map(|r| r.1).sum::<u64>().min(size),
            None => size,
        };
        Ok(Some(written))
    }
}
