//! Clean data is a cache (design.md §2.1): the data files of files that are neither changed
//! nor open are dropped from RAM, least recently used first, when the store passes its
//! high-water mark, and read from disk again on their next open (`fetch.rs`).
//!
//! Nothing is logged: the store log never records the data file of a clean file from disk
//! (`Inner::node_record`), so a takeover already treats such a node as not read into RAM.

use super::Store;
use super::inner::Inner;
use super::node::Content;
use super::types::DataId;
use super::types::{Kind, NodeId};
use std::sync::atomic::Ordering;

/// Eviction starts when the store's use passes this share of its room (percent)...
const HIGH: u64 = 85;
/// ...and stops once it is down to this share.
const LOW: u64 = 70;

/// Loaded files by recency of use, with their sizes when last used.
pub(crate) struct Cache {
    lru: lru::LruCache<NodeId, u64>,
    /// Sum of the sizes in `lru`.
    bytes: u64,
    pub evictions: u64,
    pub evicted_bytes: u64,
}

impl Default for Cache {
    fn default() -> Cache {
        Cache {
            lru: lru::LruCache::unbounded(),
            bytes: 0,
            evictions: 0,
            evicted_bytes: 0,
        }
    }
}

impl Cache {
    /// A loaded file was used (read into RAM, or closed): the most recent now.
    pub fn touch(&mut self, id: NodeId, size: u64) {
        if let Some(old) = self.lru.put(id, size) {
            self.bytes -= old;
        }
        self.bytes += size;
    }

    fn forget(&mut self, id: NodeId) {
        if let Some(old) = self.lru.pop(&id) {
            self.bytes -= old;
        }
    }

    /// Bytes of loaded files this cache knows (changed ones too, until they are evicted).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

/// What one eviction pass dropped, removed after the store lock is released.
#[derive(Default)]
struct Dropped {
    files: Vec<DataId>,
    inos: Vec<u64>,
}

impl Inner {
    /// Bytes of changed file data not yet on disk.
    pub(crate) fn dirty_bytes(&self) -> u64 {
        self.dirty_nodes
            .iter()
            .filter_map(|id| self.nodes.get(id))
            .filter(|n| n.kind == Kind::File && (n.data_seq != 0 || n.origin.is_none()))
            .map(|n| n.attr.size)
            .sum()
    }

    /// Whether a node's data file may leave RAM: a clean file from disk, not open, not
    /// pinned or frozen (a flush reads only changed files, but checks cost nothing).
    fn evictable(&self, id: NodeId) -> Option<u64> {
        let n = self.nodes.get(&id)?;
        let cell = n.cell()?;
        let clean = n.meta_seq == 0 && n.data_seq == 0 && n.writers == 0;
        if !clean || n.opens > 0 || n.origin.is_none() || !cell.evictable(1) {
            return None;
        }
        self.disk_path(id)?;
        Some(n.attr.size)
    }

    /// Bytes of the files an eviction could drop now (status).
    pub(crate) fn evictable_bytes(&self) -> u64 {
        self.cache
            .lru
            .iter()
            .filter_map(|(&id, _)| self.evictable(id))
            .sum()
    }

    /// Drops clean files, least recently used first, until `want` bytes are freed.
    fn evict(&mut self, want: u64) -> Dropped {
        let mut out = Dropped::default();
        let mut freed = 0u64;
        let mut gone = Vec::new();
        let mut chosen = Vec::new();
        for (&id, _) in self.cache.lru.iter().rev() {
            if freed >= want {
                break;
            }
            match self.nodes.get(&id) {
                Some(n) if n.cell().is_some() => {}
                _ => {
                    gone.push(id);
                    continue;
                }
            }
            if let Some(size) = self.evictable(id) {
                freed += size;
                chosen.push(id);
            }
        }
        for id in gone {
            self.cache.forget(id);
        }
        for id in chosen {
            self.cache.forget(id);
            let Some(n) = self.nodes.get_mut(&id) else {
                continue;
            };
            let Content::File(cell) = std::mem::replace(&mut n.content, Content::File(None)) else {
                continue;
            };
            if let Some(c) = cell {
                out.files.push(c.id());
            }
            out.inos.extend(n.disk_ino);
            self.cache.evictions += 1;
            self.cache.evicted_bytes += n.attr.size;
        }
        out
    }
}

impl Store {
    /// The most RAM this target's store may use (0: the tmpfs's size alone limits it).
    pub fn set_ram_limit(&self, bytes: u64) {
        self.ram_limit.store(bytes, Ordering::Relaxed);
    }

    pub fn ram_limit(&self) -> u64 {
        self.ram_limit.load(Ordering::Relaxed)
    }

    /// Makes room for `need` more bytes of data before a file is read into RAM: past the
    /// high-water mark of the tmpfs or of the RAM limit, clean files are evicted down to the
    /// low-water mark.
    pub(crate) fn make_room(&self, need: u64) {
        let space = super::StoreSpace::of_dir(&self.private);
        let mut want = over(space.used + need, space.size);
        let limit = self.ram_limit();
        let mut inner = self.inner.lock();
        if limit > 0 {
            let used = inner.cache.bytes() + inner.dirty_bytes() + inner.log.len();
            want = want.max(over(used + need, limit));
        }
        if want == 0 {
            return;
        }
        let dropped = inner.evict(want);
        drop(inner);
        for id in dropped.files {
            self.data.remove(id);
        }
        for ino in dropped.inos {
            self.seen.forget(ino);
        }
    }
}

/// How much to free so that `used` of `room` falls to the low-water mark, once it is past
/// the high-water mark (0 before).
fn over(used: u64, room: u64) -> u64 {
    if room == 0 || used.saturating_mul(100) <= room.saturating_mul(HIGH) {
        return 0;
    }
    used.saturating_sub(room / 100 * LOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn water_marks() {
        assert_eq!(over(80, 100), 0);
        assert_eq!(over(85, 100), 0);
        assert_eq!(over(90, 100), 20);
        assert_eq!(over(10, 0), 0);
    }

    #[test]
    fn lru_sums_sizes() {
        let mut c = Cache::default();
        c.touch(NodeId(2), 10);
        c.touch(NodeId(3), 5);
        c.touch(NodeId(2), 7);
        assert_eq!(c.bytes(), 12);
        c.forget(NodeId(2));
        assert_eq!(c.bytes(), 5);
    }
}
