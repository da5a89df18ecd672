//! FUSE passthrough (design.md §4.1): which data path serves file data, and the backing ids
//! the kernel knows, one per node while any handle of it is open (the kernel refuses a second
//! backing file for an inode).

use crate::store::types::{HandleId, NodeId};
use fuser::BackingId;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The backing ids of open nodes, with how many handles use each.
#[derive(Default)]
pub(crate) struct Backings {
    /// Passthrough is wanted and the kernel agreed (cleared when it refuses a backing file).
    on: AtomicBool,
    /// Lock order: before the store lock.
    table: Mutex<Table>,
}

/// A backing id and the inode number of the data file it stands for.
type Backed = (Arc<BackingId>, u64);

#[derive(Default)]
struct Table {
    /// Per node with open handles: its backing id and the inode number of the data file
    /// behind it, or `None` while the daemon serves its data (the kernel refuses to mix the
    /// two on one inode), and the handle count.
    slots: HashMap<NodeId, (Option<Backed>, u32)>,
    /// The handles counted in `slots`.
    handles: HashMap<HandleId, NodeId>,
}

impl Backings {
    pub fn set_on(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    pub fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Decides the data path of a new handle: the node's backing id if it has one, the
    /// daemon if its other handles use the daemon or `daemon` asks for it, else a backing id
    /// made by `register` from the file `pin` gives. `pin` is told the inode number of the
    /// data file the node's backing id stands for, when it has one. `Err` when that failed.
    pub fn open(
        &self,
        node: NodeId,
        fh: HandleId,
        daemon: bool,
        pin: impl FnOnce(Option<u64>) -> std::io::Result<Arc<File>>,
        register: impl FnOnce(&File) -> std::io::Result<BackingId>,
    ) -> std::io::Result<Option<Arc<BackingId>>> {
        let mut t = self.table.lock();
        let id = match t.slots.get(&node) {
            Some((Some((id, ino)), _)) => {
                // The kernel goes on writing the file it has: `pin` must give the same.
                pin(Some(*ino))?;
                Some((id.clone(), *ino))
            }
            Some((None, _)) => None,
            None if daemon => None,
            None => {
                let f = pin(None)?;
                let ino = f.metadata()?.ino();
                Some((Arc::new(register(&f)?), ino))
            }
        };
        let slot = t.slots.entry(node).or_insert((id.clone(), 0));
        slot.1 += 1;
        t.handles.insert(fh, node);
        Ok(id.map(|(id, _)| id))
    }

    /// A handle was released; the node's last one closes its backing id. `unpin` (the
    /// store's release) runs under the table lock, after the slot is updated: a node with a
    /// backing id in the table always has its data cell pinned, so no flush can freeze the
    /// cell and a later open cannot get a copy while the kernel keeps writing the old file
    /// (the lost write the kill test found, design.md §4.1).
    pub fn release<T>(&self, fh: HandleId, unpin: impl FnOnce() -> T) -> T {
        let mut t = self.table.lock();
        let Some(node) = t.handles.remove(&fh) else {
            return unpin();
        };
        if let Some((_, n)) = t.slots.get_mut(&node) {
            *n -= 1;
            if *n == 0 {
                t.slots.remove(&node);
            }
        }
        unpin()
    }
}
