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
use crate::error::{Errno, FsResult};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Starts a flush at once; false if one is already due or flushes are held back.
pub type PressureHook = Box<dyn Fn() -> bool + Send + Sync>;

/// Changed data past this share of the room starts a flush at once (percent)...
const DIRTY_HIGH: u64 = 50;
/// ...and past this share of the room in use, writers wait for it (the rest is kept for
/// reading files into RAM, or more: `Store::kept_for_reads`).
const FULL: u64 = 90;
/// How long a writer, or a read into RAM, waits for a pressure flush to make room before
/// ENOSPC...
pub(super) const PATIENCE: Duration = Duration::from_secs(3);
/// ...looking at the room this often, and asking for a flush again this often (after one
/// that ended, or failed: then not at once, sparing the disk).
pub(super) const LOOK_AGAIN: Duration = Duration::from_millis(10);
const ASK_AGAIN: Duration = Duration::from_millis(500);
/// How long a read into RAM waits while changed data holds the room: a flush makes it clean,
/// and clean data can leave. With FUSE passthrough writers fill the tmpfs without asking, so
/// a read right after a burst of writes may have to wait for a whole flush (a read on tmpfs
/// never fails for room, so waiting is what a program expects).
pub(super) const READ_PATIENCE: Duration = Duration::from_secs(30);
/// How long an open for writing waits for a pressure flush while there is still room.
const OPEN_PATIENCE: Duration = Duration::from_millis(500);

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

    /// The store's own count of its RAM: files read into RAM or closed since (`cache`), the
    /// changed files not among them, the store log and its reserve.
    fn own_bytes(&self) -> u64 {
        let fresh: u64 = self
            .dirty_nodes
            .iter()
            .filter(|id| !self.cache.lru.contains(*id))
            .filter_map(|id| self.nodes.get(id))
            .filter(|n| n.kind == Kind::File)
            .map(|n| n.attr.size)
            .sum();
        self.cache.bytes() + fresh + self.log.len() + self.log.reserve_bytes()
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

    /// A file removed from every name, in RAM and on disk (no hidden links), that nobody
    /// holds, still waits for the flush that deletes it on disk: its data is of no use, so
    /// its RAM comes back now rather than after that flush. Logged: the node's record no
    /// longer names the data file.
    pub(crate) fn drop_removed_data(&mut self, id: NodeId) {
        if self.replaying {
            return;
        }
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        if n.hidden_links > 0 || n.writers > 0 {
            return;
        }
        let Some(cell) = n.cell() else {
            return;
        };
        if !cell.evictable(1) {
            return;
        }
        let data = cell.id();
        n.content = Content::File(None);
        n.data_seq = 0;
        self.cache.forget(id);
        self.data.remove(data);
        self.log_node(id);
    }

    /// Drops the data file of a clean file from disk that a takeover could not renew
    /// (`Store::finish_renewal`): reads fetch it from disk again. Whether it was dropped.
    pub(crate) fn drop_stale_data(&mut self, id: NodeId) -> bool {
        let Some(n) = self.nodes.get_mut(&id) else {
            return false;
        };
        let Some(cell) = n.cell() else {
            return true;
        };
        if n.data_seq != 0 || n.writers > 0 || n.opens > 0 || n.origin.is_none() {
            return false;
        }
        if !cell.evictable(1) {
            return false;
        }
        let data = cell.id();
        n.content = Content::File(None);
        let meta_dirty = n.meta_seq != 0;
        self.cache.forget(id);
        self.data.remove(data);
        if meta_dirty {
            self.log_node(id);
        }
        true
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
    /// The most RAM this target's store may use (0: the tmpfs's size alone limits it). The
    /// store log's reserve is sized from it (design.md §3). What is kept is the effective
    /// limit (design.md §2.1): no more than the store's tmpfs can hold — its size when the
    /// tmpfs is the store's own, else what is free on it now plus what the store holds — so
    /// that eviction and pressure flushes start before the tmpfs is full.
    pub fn set_ram_limit(&self, bytes: u64) {
        let space = super::StoreSpace::of_dir(&self.private);
        let holds = if self.on_own_tmpfs() {
            space.size
        } else {
            let own = self.inner.lock().own_bytes();
            space.free.saturating_add(own).min(space.size)
        };
        let bytes = effective_limit(bytes, holds);
        self.ram_limit.store(bytes, Ordering::Relaxed);
        self.inner.lock().log.set_limit(bytes);
    }

    pub fn ram_limit(&self) -> u64 {
        self.ram_limit.load(Ordering::Relaxed)
    }

    /// Whether `private/` is a mount of its own (root's tmpfs of the limit's size,
    /// `daemon::paths::limit_private`), not a directory on a tmpfs shared with others.
    fn on_own_tmpfs(&self) -> bool {
        let (Some(store), Some(name)) = (self.private.parent(), self.private.file_name()) else {
            return false;
        };
        crate::fsx::Dir::open(store)
            .and_then(|d| crate::fsx::is_mount_point(&d, name))
            .unwrap_or(false)
    }

    /// Makes room for `need` more bytes of data before a file is read into RAM: past the
    /// high-water mark of the tmpfs or of the RAM limit, clean files are evicted down to the
    /// low-water mark.
    pub(crate) fn make_room(&self, need: u64) {
        let space = super::StoreSpace::of_dir(&self.private);
        let mut want = over(space.used + need, space.size);
        let limit = own_limit(self.ram_limit(), space.size);
        let mut inner = self.inner.lock();
        if limit > 0 {
            want = want.max(over(inner.own_bytes() + need, limit));
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

/// The store's room: the tighter of its tmpfs and its RAM limit.
#[derive(Clone, Copy, Debug)]
struct Budget {
    /// The room (the smaller of the tmpfs and the limit kept by the daemon's own count),
    /// what is free of it by the tighter of the two counts, and the changed data in it.
    room: u64,
    free: u64,
    dirty: u64,
    /// Free on the tmpfs itself.
    tmpfs_free: u64,
}

impl Budget {
    /// Percent of the room in changed data.
    fn dirty_pct(&self) -> u64 {
        self.dirty
            .saturating_mul(100)
            .checked_div(self.room)
            .unwrap_or(0)
    }
}

/// A file being read into RAM, announced to writers (`Store::reading`) until dropped.
pub(crate) struct Reading<'a> {
    store: &'a Store,
    bytes: u64,
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        self.store.reading.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl Store {
    /// What a pressure flush calls (the daemon's flush timer).
    pub fn set_pressure_hook(&self, hook: PressureHook) {
        *self.on_pressure.lock() = Some(hook);
    }

    fn budget(&self) -> Budget {
        let space = super::StoreSpace::of_dir(&self.private);
        let limit = own_limit(self.ram_limit(), space.size);
        let (dirty, own) = {
            let inner = self.inner.lock();
            (inner.dirty_bytes(), inner.own_bytes())
        };
        let tmpfs_free = space.size.saturating_sub(space.used);
        let mut b = Budget {
            room: space.size,
            free: tmpfs_free,
            dirty,
            tmpfs_free,
        };
        if limit > 0 {
            b.room = b.room.min(limit);
            b.free = b.free.min(limit.saturating_sub(own));
        }
        b
    }

    /// The room writers leave free for reading files into RAM: a tenth of the room, or the
    /// files being read now if more, up to half of the room.
    fn kept_for_reads(&self, room: u64) -> u64 {
        self.reading
            .load(Ordering::Relaxed)
            .clamp(room / 100 * (100 - FULL), room / 2)
    }

    /// Room for a file of `need` bytes to be read into RAM (design.md §2.1): clean files
    /// are evicted; while changed data holds the room, a pressure flush is asked for and
    /// the read waits for it (until `READ_PATIENCE` after `since`; `PATIENCE` when nothing is
    /// changed, so no flush can help). ENOSPC when
    /// that did not make room, or at once for a file larger than the whole room, unless the
    /// tmpfs itself has room (a user's daemon, whose limit is its own count). The file
    /// stays announced to writers, who leave room for it, until the guard is dropped.
    pub(crate) fn room_to_read(&self, need: u64, since: Instant) -> FsResult<Reading<'_>> {
        self.reading.fetch_add(need, Ordering::Relaxed);
        let guard = Reading {
            store: self,
            bytes: need,
        };
        let mut asked: Option<Instant> = None;
        // Changed data seen at the last look: a flush that ends between the eviction and the
        // look at the budget made data evictable that this look has not evicted yet.
        let mut was_dirty = false;
        loop {
            self.make_room(need);
            let b = self.budget();
            if b.free >= need {
                return Ok(guard);
            }
            let flushable = b.dirty > 0 || std::mem::replace(&mut was_dirty, b.dirty > 0);
            let patience = if flushable { READ_PATIENCE } else { PATIENCE };
            if need > b.room || since.elapsed() >= patience {
                // A limit the daemon keeps by its own count (a user's store on a shared
                // tmpfs) gives way to reading a clean file, as long as the tmpfs has room.
                if b.tmpfs_free >= need {
                    return Ok(guard);
                }
                return Err(Errno::ENOSPC);
            }
            if b.dirty > 0 && asked.is_none_or(|a| a.elapsed() >= ASK_AGAIN) {
                self.pressure_flush();
                asked = Some(Instant::now());
            }
            std::thread::sleep(LOOK_AGAIN);
        }
    }

    /// Back-pressure before a write of `len` bytes (design.md §2.1): past the dirty
    /// high-water mark a flush starts at once; once the write would leave less free than
    /// the room kept for reads (`kept_for_reads`: at least the last `100 - FULL` percent),
    /// clean files are evicted and the writer waits for the flush to make room. ENOSPC only
    /// when even that did not: the disk is full or the changed data of open files alone
    /// fills the room. Looked at once per 1/64 of the room written, so a write costs
    /// nothing more most of the time.
    ///
    /// An open for writing (`opening`) also waits, briefly (`OPEN_PATIENCE`), while changed
    /// data is past the dirty high-water mark: with FUSE passthrough the kernel writes the
    /// data file itself, so the open is the daemon's only chance to hold a writer back.
    /// Every open is looked at, cheaply (one statvfs) between the counted steps: the writes
    /// of a passthrough writer are never counted.
    pub(crate) fn back_pressure(&self, len: u64, opening: bool) -> FsResult<()> {
        let limit = self.ram_limit();
        let step = (limit / 64).max(64 << 10);
        let counted = self.unchecked.fetch_add(len, Ordering::Relaxed) + len >= step;
        if counted {
            self.unchecked.store(0, Ordering::Relaxed);
        }
        if !opening && !counted {
            return Ok(());
        }
        // A passthrough writer may write any amount once open: a quarter of the room is
        // made free for it (clean files evicted) before the open is granted.
        let len = if opening {
            let space = super::StoreSpace::of_dir(&self.private);
            let room = if limit > 0 {
                limit.min(space.size)
            } else {
                space.size
            };
            let tmpfs_free = space.size.saturating_sub(space.used);
            if !counted && tmpfs_free >= room / 4 + self.kept_for_reads(room) {
                return Ok(());
            }
            room / 4
        } else {
            len
        };
        let mut b = self.budget();
        if b.dirty_pct() >= DIRTY_HIGH {
            self.pressure_flush();
        }
        let room = |b: &Budget| b.free >= len.saturating_add(self.kept_for_reads(b.room));
        let fits = |b: &Budget, waited: Duration| {
            room(b) && !(opening && b.dirty_pct() >= DIRTY_HIGH && waited < OPEN_PATIENCE)
        };
        if fits(&b, Duration::ZERO) {
            return Ok(());
        }
        let start = Instant::now();
        let mut asked = Instant::now();
        loop {
            self.make_room(len);
            b = self.budget();
            if fits(&b, start.elapsed()) {
                return Ok(());
            }
            if start.elapsed() >= PATIENCE {
                // What is left stays for reading files into RAM again.
                return Err(Errno::ENOSPC);
            }
            // Again after a flush that ended (or failed: then not at once, sparing the disk).
            if b.dirty > 0 && asked.elapsed() >= ASK_AGAIN {
                self.pressure_flush();
                asked = Instant::now();
            }
            std::thread::sleep(LOOK_AGAIN);
        }
    }

    /// The flush timer's poll, for writes the daemon does not see (FUSE passthrough): clean
    /// files leave RAM past the high-water mark (`make_room`, nothing to do below it), then
    /// whether changed data is past the dirty high-water mark (a pressure flush is due).
    pub fn pressed(&self) -> bool {
        self.make_room(0);
        self.budget().dirty_pct() >= DIRTY_HIGH
    }

    fn pressure_flush(&self) {
        if let Some(hook) = &*self.on_pressure.lock() {
            hook();
        }
    }
}

/// The limit the daemon must keep by its own count: none when the store's tmpfs is no
/// larger than the limit (root's tmpfs of its own enforces it, design.md §2.1).
fn own_limit(limit: u64, tmpfs: u64) -> u64 {
    if limit == 0 || tmpfs <= limit + limit / 16 {
        0
    } else {
        limit
    }
}

/// The limit a store counts against: the RAM limit (none: 0), but never more than what its
/// tmpfs `holds` (unknown: 0, the limit unchanged).
fn effective_limit(limit: u64, holds: u64) -> u64 {
    match (limit, holds) {
        (_, 0) => limit,
        (0, _) => holds,
        _ => limit.min(holds),
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
    fn effective_limits() {
        assert_eq!(effective_limit(40, 48), 40);
        assert_eq!(effective_limit(6000, 48), 48);
        assert_eq!(effective_limit(0, 48), 48);
        assert_eq!(effective_limit(20, 0), 20);
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
