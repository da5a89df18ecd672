//! The fence of a stop that cannot wait for open files (design.md §4.1 "A stop with files
//! open"): from then on the store refuses every change, and a write through a file the
//! kernel writes itself (FUSE passthrough) fails too. The kernel asks the daemon before each
//! such write whether the file has a `security.capability` to drop; under the fence the
//! answer is yes, and the removal the kernel then asks for fails with EROFS, which fails
//! the write before it touches the data file. (Aborting the FUSE connection would not stop
//! such a write: the kernel ignores a failed question and writes the data file.) With
//! `FUSE_HANDLE_KILLPRIV_V2` the kernel asks again only after fresh attributes: the daemon
//! forces a GETATTR through each held descriptor at the cut-off (`daemon/target.rs`).

use super::Store;
use super::types::{Kind, NodeId};
use crate::error::Errno;
use std::ffi::OsStr;
use std::sync::atomic::Ordering;

/// What the kernel asks for before a write: `cap_inode_need_killpriv`.
const CAPABILITY: &str = "security.capability";

impl Store {
    /// Refuses every change from now on (EROFS), passthrough writes included.
    pub fn fence(&self) {
        self.fenced.store(true, Ordering::SeqCst);
    }

    pub fn fenced(&self) -> bool {
        self.fenced.load(Ordering::SeqCst)
    }

    /// EROFS once fenced.
    pub(crate) fn check_fence(&self) -> Result<(), Errno> {
        if self.fenced() {
            return Err(Errno::EROFS);
        }
        Ok(())
    }

    /// Under the fence, the kernel's question before a passthrough write of a regular file:
    /// a capability is there (so the kernel asks to remove it, and that fails).
    pub(crate) fn fenced_xattr(&self, id: NodeId, name: &OsStr) -> Option<Vec<u8>> {
        if !self.fenced() || name != CAPABILITY {
            return None;
        }
        let inner = self.lock();
        let file = inner.node(id).is_ok_and(|n| n.kind == Kind::File);
        file.then(|| vec![0])
    }

    /// Handles through which the kernel writes the data file itself (passthrough).
    pub fn kernel_writers(&self) -> u64 {
        let inner = self.lock();
        inner
            .handles
            .values()
            .filter(|h| h.write && h.pinned.is_some())
            .count() as u64
    }
}
