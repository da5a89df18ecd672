//! fsync(2) in sync mode at the disk's price (design.md §6.3): what the store decides for
//! one file — nothing to do, its disk file written in place, or a flush — and the byte
//! ranges written since its disk file was last brought up to date.

use super::Store;
use super::data::{DataCell, FrozenData};
use super::node::Content;
use super::types::{Kind, NodeId, Ts};
use crate::backing::Loc;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// More separate ranges than this and a file's disk copy is compared instead.
const MAX_RANGES: usize = 64;

/// The ranges written through the daemon since a file's disk copy last matched it, per
/// node. A file's entry is valid only while its `data_seq` is the one the entry last saw:
/// any other data change (truncate, fallocate, a passthrough open) moves `data_seq` without
/// a note, and the entry is then unknown (the whole file is compared).
#[derive(Default)]
pub(crate) struct Written {
    on: AtomicBool,
    map: Mutex<HashMap<NodeId, Ranges>>,
}

struct Ranges {
    /// The node's `data_seq` as of the last note or sync.
    last: u64,
    list: Vec<(u64, u64)>,
}

impl Written {
    /// A write of `len` bytes at `off` moved the node's `data_seq` from `prev` to `now`.
    /// Called under the store lock.
    pub(crate) fn note(&self, id: NodeId, prev: u64, now: u64, off: u64, len: u64) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        let mut map = self.map.lock();
        let Some(r) = map.get_mut(&id) else { return };
        if r.last != prev || r.list.len() >= MAX_RANGES {
            map.remove(&id);
            return;
        }
        r.last = now;
        match r.list.last_mut() {
            Some((o, l)) if *o + *l == off => *l += len,
            _ => r.list.push((off, len)),
        }
    }

    /// The ranges to write for a file at `data_seq`, if known; from now on, writes after
    /// `data_seq` are collected anew.
    fn take(&self, id: NodeId, data_seq: u64) -> Option<Vec<(u64, u64)>> {
        let mut map = self.map.lock();
        let old = map.insert(
            id,
            Ranges {
                last: data_seq,
                list: Vec::new(),
            },
        );
        old.filter(|r| r.last == data_seq).map(|r| r.list)
    }
}

/// What an fsync of one file needs.
pub(crate) enum FsyncPlan {
    /// The disk copy already has the file, at the name it has in RAM.
    Clean,
    /// Write its disk file in place.
    InPlace(InPlaceJob),
    /// Anything else: a flush.
    Flush,
}

/// A file whose disk file an fsync writes in place; its data is frozen until `fsync_end`.
pub(crate) struct InPlaceJob {
    pub node: NodeId,
    pub loc: Loc,
    pub ino: u64,
    pub cell: Arc<DataCell>,
    pub frozen: FrozenData,
    /// The data file is read live, not frozen (nothing to thaw).
    pub live: bool,
    /// The file's `data_seq` when frozen.
    seq: u64,
    pub ranges: Option<Vec<(u64, u64)>>,
    pub atime: Ts,
    pub mtime: Ts,
}

impl Store {
    /// Whether fsync in sync mode is on: writes then note their ranges.
    pub fn track_writes(&self, on: bool) {
        self.written.on.store(on, Ordering::Relaxed);
    }

    /// Decides what an fsync of `id` needs; `own` says whether a disk inode is a file this
    /// session's flushes wrote (design.md §6.3). An `InPlace` plan freezes the data.
    pub(crate) fn fsync_begin(&self, id: NodeId, own: &dyn Fn(u64) -> bool) -> FsyncPlan {
        let mut inner = self.lock();
        let Some(path) = inner.clean_path(id) else {
            return FsyncPlan::Flush;
        };
        inner.refresh_from_data(id);
        let Some(n) = inner.nodes.get(&id) else {
            return FsyncPlan::Flush;
        };
        if n.data_seq == 0 && n.meta_seq == 0 {
            return FsyncPlan::Clean;
        }
        let (Content::File(Some(cell)), Some(ino)) = (&n.content, n.disk_ino) else {
            return FsyncPlan::Flush;
        };
        if n.kind != Kind::File || n.meta_seq != 0 || n.hidden_links != 0 || !own(ino) {
            return FsyncPlan::Flush;
        }
        let (cell, seq, atime, mtime) = (cell.clone(), n.data_seq, n.attr.atime, n.attr.mtime);
        // A file the kernel writes (passthrough, design.md §4.1) tells the daemon nothing of
        // its writes: compared. It stays dirty whatever is written (its writer may go on),
        // so its live data file is read, as the disk would write what reached it by the
        // time of the fsync, not a snapshot: no copy of the whole file per fsync.
        let live = n.writers > 0;
        let frozen = if live {
            match cell.file() {
                Ok(f) => FrozenData {
                    id: cell.id(),
                    file: Some(f),
                },
                Err(_) => return FsyncPlan::Flush,
            }
        } else {
            cell.freeze()
        };
        let ranges = self.written.take(id, seq).filter(|_| !live);
        FsyncPlan::InPlace(InPlaceJob {
            node: id,
            loc: Loc::Target(path),
            ino,
            cell,
            frozen,
            live,
            seq,
            ranges,
            atime,
            mtime,
        })
    }

    /// After an in-place write: with `done`, the file is clean unless it changed since it
    /// was frozen (or a writer has it open); without, its ranges are unknown again.
    pub(crate) fn fsync_end(&self, job: &InPlaceJob, done: bool) {
        let mut inner = self.lock();
        if !done {
            self.written.map.lock().remove(&job.node);
            return;
        }
        let Some(n) = inner.nodes.get_mut(&job.node) else {
            return;
        };
        if n.data_seq == job.seq && n.writers == 0 {
            n.data_seq = 0;
            if let Some(r) = self.written.map.lock().get_mut(&job.node) {
                r.last = 0;
            }
            if !n.is_dirty() {
                inner.dirty_nodes.remove(&job.node);
            }
            // The log says so too: what is on disk is the file (a takeover, or anything
            // that drops clean data, need not keep this data file).
            inner.log_node(job.node);
        }
    }
}

impl super::inner::Inner {
    /// The disk path of `id` when every name leading to it is on disk as in RAM: each node
    /// on the way has one name, its origin, and that name is not dirty in its directory.
    fn clean_path(&self, id: NodeId) -> Option<PathBuf> {
        let mut parts = Vec::new();
        let mut cur = id;
        while cur != NodeId::ROOT {
            let n = self.nodes.get(&cur)?;
            let o = n.origin.as_ref()?;
            if n.names.len() != 1 || n.names[0].0 != o.parent || n.names[0].1 != o.name {
                return None;
            }
            let dir = self.nodes.get(&o.parent)?.dir()?;
            if dir.dirty.contains_key(&o.name) {
                return None;
            }
            parts.push(o.name.clone());
            cur = o.parent;
        }
        Some(parts.iter().rev().collect())
    }
}
