//! The RAM side: the tree programs see, its file data on tmpfs, and what differs from the
//! disk copy (design.md §2-4). Plain Rust: tests drive it without a mount, and the FUSE
//! adapter (`src/fuse/`) only translates requests into these calls.
//!
//! Locks, in the one order they may be taken:
//! 1. `disk_gate` (RwLock): shared by lazy fills that read the disk copy, exclusive while a
//!    flush changes the disk copy (design.md §6 steps 4-6).
//! 2. `inner` (Mutex): the tree, handles, dirty set and store log. Never held during disk I/O
//!    (except the flush commit, design.md §6 step 4).
//! 3. a file's `DataCell` lock: taken without `inner` for data I/O.

pub mod acl;
mod atime;
pub mod attrs;
pub(crate) mod data;
mod dirs;
mod evict;
mod fence;
mod fetch;
mod files;
pub(crate) mod flushing;
pub(crate) mod fsync;
pub(crate) mod inner;
mod links;
pub(crate) mod log;
pub mod namespace;
pub(crate) mod node;
mod pinned;
mod privs;
pub use privs::AttrsHook;
mod replay;
mod resync;
pub mod seen;
pub mod types;

use crate::backing::{Backing, Loc};
use crate::error::{Errno, FsResult};
use data::DataDir;
use inner::Inner;
pub use inner::{Counters, take_log_lost};
use node::{Content, Dir, Node, Origin};
use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;
use types::{FsStats, Kind, NodeId};

/// The store of one target.
pub struct Store {
    /// Held by whoever needs the disk copy unchanged for a long time (the hardlink backup);
    /// a flush takes it before the disk gate, so it waits here without stalling lazy fills.
    pub disk_writers: Mutex<()>,
    pub(crate) disk_gate: RwLock<()>,
    pub(crate) inner: Mutex<Inner>,
    /// Nodes whose data or directory listing is being read from disk; waiters sleep on `fetched`.
    pub(crate) busy: Mutex<HashSet<(NodeId, u8)>>,
    pub(crate) fetched: Condvar,
    pub(crate) backing: Arc<dyn Backing>,
    pub(crate) data: Arc<DataDir>,
    private: PathBuf,
    /// The generation of every node's file handle (node ids are never reused in a store).
    handle_gen: u32,
    /// Record access times (relatime); off: noatime.
    relatime: std::sync::atomic::AtomicBool,
    /// The mount is read-only (design.md §11): access times are not recorded.
    read_only: std::sync::atomic::AtomicBool,
    /// FUSE passthrough serves file data (design.md §4.1); for status.
    passthrough: std::sync::atomic::AtomicBool,
    /// A stop that could not wait for open files refuses every change (`fence.rs`).
    fenced: std::sync::atomic::AtomicBool,
    /// What the disk files read into RAM looked like then (conflict copies, design.md §6.2).
    pub seen: seen::DiskSeen,
    /// Ranges written since each file's disk copy matched it (fsync in sync mode).
    pub(crate) written: fsync::Written,
    /// The store log's `low` flag: changes check the log's room only when it is set.
    log_low: Arc<AtomicBool>,
    /// When the tmpfs's fill was last looked at (ms since `born`), and whether it is above
    /// the warning level.
    born: Instant,
    space_checked: AtomicU64,
    space_warned: AtomicBool,
    /// The most RAM the store may use, in bytes; 0: no limit but the tmpfs's (§2.1).
    ram_limit: AtomicU64,
    /// Back-pressure on writers (design.md §2.1): bytes written since the last look at the
    /// budget, and what starts a pressure flush (the daemon's timer; a leaf lock).
    unchecked: AtomicU64,
    /// Bytes of the files being read into RAM or waiting for room to be (`evict::Reading`):
    /// writers leave at least this much room free, up to half of it.
    reading: AtomicU64,
    on_pressure: Mutex<Option<evict::PressureHook>>,
    /// Told of a node whose attributes the store changed on its own, in a reply that
    /// carries none (`privs`): the FUSE adapter invalidates the kernel's copy (a leaf lock).
    on_attrs: Mutex<Option<privs::AttrsHook>>,
}

/// Above this much of the tmpfs used, a warning is logged and shown by status.
const WARN_PERCENT: u64 = 90;

/// The room on the store's tmpfs (status).
#[derive(Clone, Copy, Debug, Default)]
pub struct StoreSpace {
    /// The tmpfs's size, what is used of it (by anything: data, log and its reserve), and
    /// what is free.
    pub size: u64,
    pub used: u64,
    pub free: u64,
    pub log_bytes: u64,
    /// Space kept allocated ahead of the log's end (counted in `used`).
    pub log_reserve: u64,
}

impl StoreSpace {
    /// The room on the filesystem of `dir` (no log).
    pub fn of_dir(dir: &Path) -> StoreSpace {
        let mut s = StoreSpace::default();
        if let Ok(v) = nix::sys::statvfs::statvfs(dir) {
            let unit = v.fragment_size();
            s.size = v.blocks() * unit;
            s.free = v.blocks_available() * unit;
            s.used = s.size.saturating_sub(v.blocks_free() * unit);
        }
        s
    }

    /// What status shows above `WARN_PERCENT`.
    pub fn warning(&self) -> Option<String> {
        let pct = self.percent();
        (pct >= WARN_PERCENT).then(|| {
            format!(
                "the RAM store's tmpfs is {pct}% full ({} KiB free): programs get ENOSPC when it is full; flush, delete files or give the volatile directory more room",
                self.free >> 10
            )
        })
    }

    pub fn percent(&self) -> u64 {
        (self.used.saturating_mul(100))
            .checked_div(self.size)
            .unwrap_or(0)
    }
}

/// Room one operation's records may need: most changes, and a removal (which gives room
/// back, so it is refused only when the log is really at its end).
pub(crate) const CHANGE: u64 = log::BATCH_ROOM;
const REMOVAL: u64 = 8 << 10;

/// What a new store needs.
pub struct StoreSetup<'a> {
    pub backing: Arc<dyn Backing>,
    /// `private/` in the store directory: `log` and `data/` live here.
    pub private_dir: &'a Path,
    /// The target path, recorded in the log header.
    pub target: &'a Path,
    /// The disk's generation.
    pub base_gen: u64,
}

impl Store {
    /// A new, empty store over the disk copy (nothing is read but the target's attributes).
    pub fn fresh(s: StoreSetup<'_>) -> std::io::Result<Store> {
        let data_path = s.private_dir.join("data");
        crate::fsx::trusted::create_dir_all(&data_path)?;
        for id in DataDir::open(&data_path)?.list()? {
            crate::fsx::trusted::remove_file(data_path.join(id.0.to_string()))?;
        }
        let log = log::StoreLog::create(s.private_dir, s.target, s.base_gen, &[])?;
        let store = Store::assemble(s.backing, s.private_dir, log)?;
        store.add_root()?;
        Ok(store)
    }

    /// Rebuilds the RAM tree a dead daemon left (design.md §3). `disk_gen` is the disk's
    /// generation after disk recovery.
    pub fn take_over(s: StoreSetup<'_>) -> anyhow::Result<Store> {
        let (header, records) = log::StoreLog::read_for(s.private_dir, s.base_gen)?;
        if header.base_gen != s.base_gen {
            anyhow::bail!(
                "the RAM store describes changes to disk generation {} but the disk copy is at generation {}; \
                 it is stale and was left untouched in {}",
                header.base_gen,
                s.base_gen,
                s.private_dir.display()
            );
        }
        let mut log = log::StoreLog::unopened(s.private_dir, s.target, s.base_gen)?;
        if header.handle_gen != 0 {
            log.handle_gen = header.handle_gen;
        }
        let store = Store::assemble(s.backing, s.private_dir, log)?;
        store.add_root()?;
        store.replay(records)?;
        store.rewrite_log()?;
        Ok(store)
    }

    fn assemble(
        backing: Arc<dyn Backing>,
        private: &Path,
        log: log::StoreLog,
    ) -> std::io::Result<Store> {
        let data = Arc::new(DataDir::open(&private.join("data"))?);
        let handle_gen = log.handle_gen;
        let log_low = log.low.clone();
        let inner = Inner {
            nodes: HashMap::new(),
            next_node: NodeId::ROOT.0 + 1,
            next_handle: 1,
            handles: HashMap::new(),
            disk_inos: HashMap::new(),
            seq: 0,
            dirty_nodes: BTreeSet::new(),
            dirty_dirs: BTreeSet::new(),
            log,
            pending_origins: HashMap::new(),
            counters: Counters::default(),
            replaying: false,
            unrenewed: Vec::new(),
            data: data.clone(),
            dirty_since: None,
            since_snapshot: None,
            in_flight: BTreeSet::new(),
            log_buf: Vec::new(),
            cache: Default::default(),
            freed_data: Vec::new(),
        };
        Ok(Store {
            disk_writers: Mutex::new(()),
            disk_gate: RwLock::new(()),
            inner: Mutex::new(inner),
            busy: Mutex::new(HashSet::new()),
            fetched: Condvar::new(),
            backing,
            data,
            private: private.to_path_buf(),
            handle_gen,
            relatime: std::sync::atomic::AtomicBool::new(false),
            read_only: std::sync::atomic::AtomicBool::new(false),
            passthrough: std::sync::atomic::AtomicBool::new(false),
            fenced: std::sync::atomic::AtomicBool::new(false),
            seen: seen::DiskSeen::default(),
            written: fsync::Written::default(),
            log_low,
            born: Instant::now(),
            space_checked: AtomicU64::new(0),
            space_warned: AtomicBool::new(false),
            ram_limit: AtomicU64::new(0),
            unchecked: AtomicU64::new(0),
            reading: AtomicU64::new(0),
            on_pressure: Mutex::new(None),
            on_attrs: Mutex::new(None),
        })
    }

    fn add_root(&self) -> std::io::Result<()> {
        let st = self.backing.stat(&Loc::target(""))?;
        if st.kind != types::Kind::Dir {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the target is not a directory",
            ));
        }
        let mut root = Node::new(
            types::Kind::Dir,
            st.attr,
            Content::Dir(Dir::unpopulated(st.nlink)),
        );
        root.origin = Some(Origin {
            parent: NodeId::ROOT,
            name: Default::default(),
        });
        root.disk_ino = Some(st.ino);
        root.lookups = 1;
        self.lock().nodes.insert(NodeId::ROOT, root);
        Ok(())
    }

    /// Writes the current dirty state as a fresh store log (same base generation).
    pub fn rewrite_log(&self) -> std::io::Result<()> {
        let mut inner = self.lock();
        let base = inner.log.base_gen;
        inner.rewrite_log(base)
    }

    /// The private directory (store log and data files).
    pub fn private_dir(&self) -> &Path {
        &self.private
    }

    pub fn backing(&self) -> &Arc<dyn Backing> {
        &self.backing
    }

    /// What statfs(2) reports for the mount: the disk copy's filesystem, its free space less
    /// the changes still to be written there, so that a program filling "the filesystem"
    /// fills the disk, not RAM (design.md §2.1). The store's tmpfs when the disk's is unknown.
    pub fn statfs(&self) -> FsResult<FsStats> {
        if let Ok(mut s) = self.backing.space() {
            let dirty = self.inner.lock().dirty_bytes();
            let blocks = dirty.div_ceil(u64::from(s.frsize.max(1)));
            s.bfree = s.bfree.saturating_sub(blocks);
            s.bavail = s.bavail.saturating_sub(blocks);
            return Ok(s);
        }
        Ok(FsStats::of(&nix::sys::statvfs::statvfs(&self.private)?))
    }

    /// Refuses a change with ENOSPC when the store log could not take its records (`batch`
    /// bytes at most) and still be rewritten by the flush after it (design.md §3): a program
    /// is never told a change succeeded that the log does not hold.
    pub(crate) fn check_room(&self, batch: u64) -> FsResult<()> {
        self.check_fence()?;
        self.room(batch, false)
    }

    /// Like `check_room` for a removal, which needs room for its own records only.
    pub(crate) fn check_removal_room(&self) -> FsResult<()> {
        self.check_fence()?;
        self.room(REMOVAL, true)
    }

    fn room(&self, batch: u64, removal: bool) -> FsResult<()> {
        self.watch_space();
        if !self.log_low.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.inner.lock().ensure_log_room(batch, removal)
    }

    /// The room on the store's tmpfs.
    pub fn space(&self) -> StoreSpace {
        let (log_bytes, log_reserve) = {
            let inner = self.inner.lock();
            (inner.log.len(), inner.log.reserve_bytes())
        };
        let s = StoreSpace {
            log_bytes,
            log_reserve,
            ..StoreSpace::of_dir(&self.private)
        };
        self.note_space(&s);
        s
    }

    /// Lends the store log's reserve to `f`, which writes a small file of the daemon's on the
    /// store's tmpfs (`owner.json` at a takeover, when data fills the tmpfs); the reserve is
    /// topped up again after.
    pub fn lend_reserve<T>(&self, f: impl FnOnce() -> T) -> T {
        let mut inner = self.inner.lock();
        inner.log.release_reserve();
        let r = f();
        inner.log.reserve();
        r
    }

    /// Looks at the tmpfs's fill at most four times a second, from changes.
    fn watch_space(&self) {
        let now = self.born.elapsed().as_millis() as u64 + 1000;
        let last = self.space_checked.load(Ordering::Relaxed);
        if now < last + 250
            || self
                .space_checked
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        self.space();
    }

    /// Logs a warning when the tmpfs is above `WARN_PERCENT`, and when it has room again.
    fn note_space(&self, s: &StoreSpace) {
        if let Some(w) = s.warning() {
            if !self.space_warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(store = %self.private.display(), "{w}");
            }
        } else if s.percent() < WARN_PERCENT - 5 && self.space_warned.swap(false, Ordering::Relaxed)
        {
            tracing::info!(store = %self.private.display(), "the RAM store's tmpfs has room again ({}% full)", s.percent());
        }
    }

    /// A summary for status reports.
    pub fn summary(&self) -> StoreSummary {
        let inner = self.lock();
        let mut s = StoreSummary {
            nodes: inner.nodes.len() as u64,
            dirty_nodes: inner.dirty_nodes.len() as u64,
            dirty_dirs: inner.dirty_dirs.len() as u64,
            open_handles: inner.handles.len() as u64,
            counters: inner.counters,
            log_bytes: inner.log.len(),
            log_failures: inner.log.failures,
            base_gen: inner.log.base_gen,
            dirty_since: inner
                .dirty_since
                .filter(|_| !inner.dirty_nodes.is_empty() || !inner.dirty_dirs.is_empty()),
            ..Default::default()
        };
        s.evictions = inner.cache.evictions;
        s.evicted_bytes = inner.cache.evicted_bytes;
        s.evictable_bytes = inner.evictable_bytes();
        let mut dirs: HashSet<NodeId> = inner.dirty_dirs.iter().copied().collect();
        for id in &inner.dirty_nodes {
            let Some(n) = inner.nodes.get(id) else {
                continue;
            };
            if n.kind == Kind::Dir {
                dirs.insert(*id);
                continue;
            }
            s.dirty_files += 1;
            if n.data_seq != 0 || n.origin.is_none() {
                s.dirty_bytes += n.attr.size;
            }
        }
        s.dirty_dir_count = dirs.len() as u64;
        drop(inner);
        s.ram_bytes = dir_bytes(&self.private.join("data"));
        s.passthrough = self.passthrough();
        s.busy_copies = self.data.busy_copies();
        s.ram_limit = self.ram_limit();
        s.busy_files = self.data.busy_files();
        s
    }

    /// Records which data path FUSE mode uses (design.md §4.1).
    pub fn set_passthrough(&self, on: bool) {
        self.passthrough
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn passthrough(&self) -> bool {
        self.passthrough.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a data file's change signature sees every write (design.md §4.1).
    pub fn fine_ctime(&self) -> bool {
        self.data.fine_ctime().unwrap_or(false)
    }
}

/// The store lock; releasing it appends the records of what was done under it as one batch,
/// then, with the lock released, deletes the data files of the nodes freed under it (a
/// takeover frees the nodes of a batch whose files are still there: design.md §3).
pub(crate) struct Locked<'a>(Option<parking_lot::MutexGuard<'a, Inner>>);

impl std::ops::Deref for Locked<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        self.0.as_ref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        self.0.as_mut().expect("held until dropped")
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        let Some(mut inner) = self.0.take() else {
            return;
        };
        inner.flush_log();
        let freed = std::mem::take(&mut inner.freed_data);
        let data = inner.data.clone();
        drop(inner);
        for id in freed {
            data.remove(id);
        }
    }
}

impl Store {
    /// Takes the store lock (see the lock order at the top of this file).
    /// The most RAM data files kept open at once (`TargetSettings::open_files`).
    pub fn set_open_files(&self, n: usize) {
        self.data.set_open_files(n);
    }

    pub(crate) fn lock(&self) -> Locked<'_> {
        Locked(Some(self.inner.lock()))
    }
}

/// Numbers about a store, for status.
#[derive(Clone, Debug, Default)]
pub struct StoreSummary {
    pub nodes: u64,
    pub dirty_nodes: u64,
    pub dirty_dirs: u64,
    /// Changed nodes that are not directories, and directories with changed entries or
    /// attributes.
    pub dirty_files: u64,
    pub dirty_dir_count: u64,
    pub dirty_bytes: u64,
    pub open_handles: u64,
    pub ram_bytes: u64,
    pub log_bytes: u64,
    pub log_failures: u64,
    pub base_gen: u64,
    pub counters: Counters,
    /// When the oldest change not yet on disk was made.
    pub dirty_since: Option<std::time::SystemTime>,
    /// FUSE passthrough serves file data (else the daemon does).
    pub passthrough: bool,
    /// Flush copies of files that kept changing while copied (design.md §4.1).
    pub busy_copies: u64,
    /// Clean files dropped from RAM so far, and their bytes (design.md §2.1).
    pub evictions: u64,
    pub evicted_bytes: u64,
    pub evictable_bytes: u64,
    /// The RAM limit (0: none but the tmpfs's size).
    pub ram_limit: u64,
    pub busy_files: Vec<String>,
}

/// Bytes allocated by the files of a directory (not recursive).
fn dir_bytes(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    crate::fsx::trusted::read_dir(p)
        .map(|it| {
            it.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.blocks() * 512)
                .sum()
        })
        .unwrap_or(0)
}

/// Checks a name given by a program.
pub(crate) fn check_name(name: &std::ffi::OsStr) -> FsResult<()> {
    use std::os::unix::ffi::OsStrExt;
    let b = name.as_bytes();
    if b.len() > 255 {
        return Err(Errno::ENAMETOOLONG);
    }
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(Errno::EINVAL);
    }
    Ok(())
}
