//! Access times (`atime = "relatime"`, design.md §9.2). FUSE inodes never record access
//! times, so the store does, by the kernel's relatime rule. Off by default: every recorded
//! access is a change the next flush writes.

use super::Store;
use super::types::{Attr, NodeId, Ts};
use std::sync::atomic::Ordering;

/// A day: relatime also records an access when the last one is this old.
const DAY_SECS: i64 = 24 * 3600;

impl Store {
    /// Records access times from now on (relatime), or not (noatime).
    pub fn set_relatime(&self, on: bool) {
        self.relatime.store(on, Ordering::Relaxed);
    }

    /// The mount was remounted read-only (or writable again): reads record nothing then,
    /// as on any read-only filesystem.
    pub fn set_read_only(&self, on: bool) {
        self.read_only.store(on, Ordering::Relaxed);
    }

    /// Whether the kernel may keep a file's pages from one open to the next. Not with
    /// relatime: the first read after an open must reach the store to record the access.
    pub fn cache_across_opens(&self) -> bool {
        !self.relatime.load(Ordering::Relaxed)
    }

    /// A program read `id` (a file's data or a directory's names).
    pub(crate) fn accessed(&self, id: NodeId) {
        if !self.relatime.load(Ordering::Relaxed) || self.read_only.load(Ordering::Relaxed) {
            return;
        }
        let now = Ts::now();
        let mut inner = self.lock();
        if !inner.node(id).is_ok_and(|n| relatime_due(&n.attr, now)) {
            return;
        }
        let seq = inner.next_seq();
        if let Ok(n) = inner.node_mut(id) {
            n.attr.atime = now;
        }
        inner.mark_meta(id, seq);
        inner.log_node(id);
    }
}

/// The kernel's relatime rule: record an access if the last one is not newer than the last
/// change, or is a day old.
fn relatime_due(a: &Attr, now: Ts) -> bool {
    a.atime <= a.mtime || a.atime <= a.ctime || now.sec - a.atime.sec >= DAY_SECS
}
