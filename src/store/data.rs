//! File data in RAM: one tmpfs file per loaded regular file (`private/data/<id>`), and the
//! copy-on-write freeze that lets a flush read a point-in-time copy (design.md §4), and the
//! pins of FUSE passthrough, under which the kernel writes a data file itself (§4.1).

use super::types::DataId;
use crate::backing::copy_sparse;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;
use parking_lot::{Mutex, RwLock};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// The directory of data files.
pub(crate) struct DataDir {
    dir: OwnedFd,
    next: AtomicU64,
    open: Mutex<OpenFiles>,
    /// Files a flush left out because they kept changing during every copy (§4.1).
    busy: AtomicU64,
    /// Their paths at the last flush.
    busy_files: Mutex<Vec<String>>,
}

impl DataDir {
    pub fn open(path: &std::path::Path) -> io::Result<DataDir> {
        let dir = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let d = DataDir {
            dir,
            next: AtomicU64::new(1),
            open: Mutex::new(OpenFiles::new()),
            busy: AtomicU64::new(0),
            busy_files: Mutex::new(Vec::new()),
        };
        let max = d.list()?.into_iter().map(|i| i.0).max().unwrap_or(0);
        d.next.store(max + 1, Ordering::Relaxed);
        Ok(d)
    }

    pub fn alloc(&self) -> DataId {
        DataId(self.next.fetch_add(1, Ordering::Relaxed))
    }

    pub fn create(&self, id: DataId) -> io::Result<File> {
        let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_CLOEXEC;
        Ok(File::from(openat(
            &self.dir,
            id.0.to_string().as_str(),
            flags,
            Mode::from_bits_truncate(0o600),
        )?))
    }

    pub fn open_existing(&self, id: DataId) -> io::Result<File> {
        let flags = OFlag::O_RDWR | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        Ok(File::from(openat(
            &self.dir,
            id.0.to_string().as_str(),
            flags,
            Mode::empty(),
        )?))
    }

    /// Records that `cell` has its file open; closes the oldest idle ones past the budget.
    fn opened(&self, cell: &Arc<DataCell>) {
        let mut open = self.open.lock();
        open.lru
            .put(Arc::as_ptr(cell) as usize, Arc::downgrade(cell));
        let mut busy = Vec::new();
        while open.lru.len() > open.budget {
            let Some((key, weak)) = open.lru.pop_lru() else {
                break;
            };
            if let Some(c) = weak.upgrade() {
                if !c.try_close() {
                    busy.push((key, weak));
                }
            }
            if busy.len() > open.budget {
                break;
            }
        }
        for (key, weak) in busy {
            open.lru.put(key, weak);
        }
    }

    /// stat(2) of a data file by its id.
    pub fn metadata(&self, id: DataId) -> io::Result<std::fs::Metadata> {
        let f = File::from(openat(
            &self.dir,
            id.0.to_string().as_str(),
            OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )?);
        f.metadata()
    }

    pub fn exists(&self, id: DataId) -> bool {
        nix::sys::stat::fstatat(
            &self.dir,
            id.0.to_string().as_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .is_ok()
    }

    pub fn remove(&self, id: DataId) {
        let r = nix::unistd::unlinkat(
            &self.dir,
            id.0.to_string().as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        if let Err(e) = r {
            if e != nix::errno::Errno::ENOENT {
                tracing::warn!(id = id.0, error = %e, "could not remove a RAM data file");
            }
        }
    }

    /// Gives data file `id` a fresh inode with the same content and times, renamed over the
    /// old name, so that descriptors of a dead session that the kernel still writes through
    /// (FUSE passthrough backing files) write the orphaned old inode, which nothing reads
    /// (takeover, design.md §3). The name always holds a complete file: a daemon killed
    /// meanwhile leaves at most an unused copy, which the next takeover removes.
    pub fn renew(&self, id: DataId) -> io::Result<()> {
        let old = File::from(openat(
            &self.dir,
            id.0.to_string().as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )?);
        let tmp = self.alloc();
        let r = (|| -> io::Result<()> {
            let copy = self.create(tmp)?;
            copy_sparse(&old, &copy)?;
            let m = old.metadata()?;
            let mut times = std::fs::FileTimes::new().set_modified(m.modified()?);
            if let Ok(a) = m.accessed() {
                times = times.set_accessed(a);
            }
            copy.set_times(times)?;
            nix::fcntl::renameat(
                &self.dir,
                tmp.0.to_string().as_str(),
                &self.dir,
                id.0.to_string().as_str(),
            )?;
            Ok(())
        })();
        if r.is_err() {
            self.remove(tmp);
        }
        r
    }

    /// How many times a flush left out a file that programs kept changing (§4.1).
    pub fn busy_copies(&self) -> u64 {
        self.busy.load(Ordering::Relaxed)
    }

    /// The files the last flush left out because they kept changing (paths in the target).
    pub fn busy_files(&self) -> Vec<String> {
        self.busy_files.lock().clone()
    }

    /// Records the files a flush left out (and counts them).
    pub(crate) fn set_busy_files(&self, files: Vec<String>) {
        self.busy.fetch_add(files.len() as u64, Ordering::Relaxed);
        *self.busy_files.lock() = files;
    }

    /// Whether a data file's ctime changes with every write once it has been queried, so that
    /// a change signature sees every write (design.md §4.1). Probed on a scratch data file.
    pub fn fine_ctime(&self) -> io::Result<bool> {
        let id = self.alloc();
        let f = self.create(id)?;
        let probe = || -> io::Result<bool> {
            let mut last = Sig::of(&f)?;
            for i in 0..3u8 {
                f.write_at(&[i], 0)?;
                let now = Sig::of(&f)?;
                if now == last {
                    return Ok(false);
                }
                last = now;
            }
            Ok(true)
        };
        let r = probe();
        self.remove(id);
        r
    }

    pub fn list(&self) -> io::Result<Vec<DataId>> {
        let mut d = nix::dir::Dir::from_fd(nix::unistd::dup(&self.dir)?)?;
        Ok(d.iter()
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().ok().and_then(|s| s.parse().ok()))
            .map(DataId)
            .collect())
    }
}

/// The data of one file, with the freeze used by flushes. Its descriptor may be closed to
/// stay within the descriptor budget (`OpenFiles`) and is opened again when needed.
pub(crate) struct DataCell {
    dir: Arc<DataDir>,
    state: RwLock<CellState>,
}

pub(crate) struct CellState {
    pub id: DataId,
    /// `None` while closed to save descriptors.
    pub file: Option<Arc<File>>,
    /// A flush is reading the data file `id`: the next change must copy it first.
    pub frozen: bool,
    /// Open passthrough handles: the kernel writes `id` itself, so it is never replaced.
    pub pins: u32,
    /// The data file's signature when the node's attributes last took it in (§4.1).
    pub seen: Option<Sig>,
}

/// What a flush reads: the frozen data file, open if it could be opened at the freeze.
pub(crate) struct FrozenData {
    pub id: DataId,
    pub file: Option<Arc<File>>,
}

/// A data file's change signature: size, mtime and ctime (design.md §4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Sig {
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
}

impl Sig {
    pub fn of(f: &File) -> io::Result<Sig> {
        Ok(Sig::from_meta(&f.metadata()?))
    }

    pub fn from_meta(m: &std::fs::Metadata) -> Sig {
        use std::os::unix::fs::MetadataExt;
        Sig {
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Rounds of copies of the pinned files a flush writes (design.md §4.1).
pub(crate) const SNAPSHOT_TRIES: u32 = 16;

impl DataCell {
    /// A cell for a data file just opened or created.
    pub fn new(dir: &Arc<DataDir>, id: DataId, file: File) -> Arc<DataCell> {
        let c = Arc::new(DataCell {
            dir: dir.clone(),
            state: RwLock::new(CellState {
                id,
                file: Some(Arc::new(file)),
                frozen: false,
                pins: 0,
                seen: None,
            }),
        });
        dir.opened(&c);
        c
    }

    /// A cell for an existing data file, not opened until it is used.
    pub fn closed(dir: &Arc<DataDir>, id: DataId) -> Arc<DataCell> {
        Arc::new(DataCell {
            dir: dir.clone(),
            state: RwLock::new(CellState {
                id,
                file: None,
                frozen: false,
                pins: 0,
                seen: None,
            }),
        })
    }

    pub fn id(&self) -> DataId {
        self.state.read().id
    }

    /// The current file, opened again if it was closed.
    pub fn file(self: &Arc<Self>) -> io::Result<Arc<File>> {
        if let Some(f) = &self.state.read().file {
            return Ok(f.clone());
        }
        let f = {
            let mut st = self.state.write();
            if let Some(f) = &st.file {
                return Ok(f.clone());
            }
            let f = Arc::new(self.dir.open_existing(st.id)?);
            st.file = Some(f.clone());
            f
        };
        self.dir.opened(self);
        Ok(f)
    }

    /// stat(2) of the current data file, without opening it.
    pub fn metadata(&self) -> io::Result<std::fs::Metadata> {
        let st = self.state.read();
        match &st.file {
            Some(f) => f.metadata(),
            None => self.dir.metadata(st.id),
        }
    }

    pub fn read_at(self: &Arc<Self>, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let file = self.file()?;
        let mut done = 0;
        while done < buf.len() {
            let n = file.read_at(&mut buf[done..], off + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(done)
    }

    /// Runs `f` on the file for a change. If a flush froze the file, it is first copied to a
    /// new data file, whose id is returned so that the store can record it.
    pub fn modify<T>(
        self: &Arc<Self>,
        f: impl Fn(&File) -> io::Result<T>,
    ) -> io::Result<(T, Option<DataId>)> {
        // Holding the file keeps it from being closed until the change is done.
        let held = self.file()?;
        {
            let st = self.state.read();
            if !st.frozen {
                let cur = st.file.as_ref().unwrap_or(&held);
                return Ok((f(cur)?, None));
            }
        }
        let mut st = self.state.write();
        let mut new_id = None;
        if st.frozen {
            let id = self.dir.alloc();
            let copy = self.dir.create(id)?;
            let src = st.file.clone().unwrap_or(held);
            if let Err(e) = copy_sparse(&src, &copy) {
                self.dir.remove(id);
                return Err(e);
            }
            st.file = Some(Arc::new(copy));
            st.id = id;
            st.frozen = false;
            new_id = Some(id);
        }
        let cur = st
            .file
            .clone()
            .ok_or_else(|| io::Error::other("data file closed"))?;
        drop(st);
        Ok((f(&cur)?, new_id))
    }

    /// Pins the data file for a passthrough handle: it stays this cell's file until `unpin`.
    /// A frozen file is copied first, as for a write; the new id is returned to be logged.
    pub fn pin(self: &Arc<Self>) -> io::Result<(Arc<File>, Option<DataId>)> {
        let (_, new_id) = self.modify(|_| Ok(()))?;
        let mut st = self.state.write();
        if st.frozen {
            // Frozen again between the copy and this lock: not possible, freezes happen under
            // the store lock, which the caller holds.
            return Err(io::Error::other("data file frozen while pinning"));
        }
        let file = match &st.file {
            Some(f) => f.clone(),
            None => {
                let f = Arc::new(self.dir.open_existing(st.id)?);
                st.file = Some(f.clone());
                f
            }
        };
        if st.pins == 0 {
            st.seen = Sig::of(&file).ok();
        }
        st.pins += 1;
        Ok((file, new_id))
    }

    pub fn unpin(&self) {
        let mut st = self.state.write();
        st.pins = st.pins.saturating_sub(1);
    }

    /// The data file's signature if the kernel changed it since `seen` (pinned cells only).
    pub fn observed(&self) -> Option<Sig> {
        let st = self.state.read();
        if st.pins == 0 {
            return None;
        }
        let sig = Sig::of(st.file.as_ref()?).ok()?;
        (Some(sig) != st.seen).then_some(sig)
    }

    /// The data file's signature now, if it is open.
    pub fn sig(&self) -> Option<Sig> {
        Sig::of(self.state.read().file.as_ref()?).ok()
    }

    /// Records the data file's current signature as taken in by the node's attributes.
    pub fn mark_seen(&self) {
        let mut st = self.state.write();
        if let Some(f) = &st.file {
            st.seen = Sig::of(f).ok();
        }
    }

    /// Whether the kernel writes the data file itself (an open passthrough handle).
    pub fn is_pinned(&self) -> bool {
        self.state.read().pins > 0
    }

    /// Freezes the data for a flush: waits for changes in progress; the data file `id` does
    /// not change until `thaw`. Not for a pinned file, which the kernel writes: see
    /// `copy_pinned`.
    pub fn freeze(&self) -> FrozenData {
        let mut st = self.state.write();
        st.frozen = true;
        if st.file.is_none() {
            // Open it now if descriptors allow; else the flush opens it by its id.
            st.file = self.dir.open_existing(st.id).ok().map(Arc::new);
        }
        FrozenData {
            id: st.id,
            file: st.file.clone(),
        }
    }

    /// One copy of a pinned data file for a flush (design.md §4.1), with the data file's
    /// signature before it: `Ok(None)` if the file changed during the copy (or is not
    /// pinned). The copy begins with SEEK_DATA, which on tmpfs waits for a write(2) under
    /// way (it holds the inode lock), so a write begun before the first signature is whole in
    /// the copy, and one begun after it changes the signature.
    pub fn copy_pinned(&self) -> io::Result<Option<(FrozenData, Sig)>> {
        let src = {
            let st = self.state.read();
            match (&st.file, st.pins) {
                (Some(f), 1..) => f.clone(),
                _ => return Ok(None),
            }
        };
        let id = self.dir.alloc();
        let copy = self.dir.create(id)?;
        let stable = (|| -> io::Result<Option<Sig>> {
            let before = Sig::of(&src)?;
            copy_sparse(&src, &copy)?;
            Ok((Sig::of(&src)? == before).then_some(before))
        })();
        match stable {
            Ok(Some(before)) => Ok(Some((
                FrozenData {
                    id,
                    file: Some(Arc::new(copy)),
                },
                before,
            ))),
            Ok(None) => {
                self.dir.remove(id);
                Ok(None)
            }
            Err(e) => {
                self.dir.remove(id);
                Err(e)
            }
        }
    }

    /// Ends a freeze. Returns the frozen id if the file was copied meanwhile (or was a
    /// snapshot of a pinned file), so the caller removes that data file.
    pub fn thaw(&self, frozen: DataId) -> Option<DataId> {
        let mut st = self.state.write();
        if st.id == frozen {
            st.frozen = false;
            None
        } else {
            Some(frozen)
        }
    }

    /// Whether the data file may be dropped from RAM (design.md §2.1): no passthrough pin,
    /// no flush freeze, and its descriptor not in use by a read or a copy right now.
    /// `holders` is how many `Arc`s of this cell the caller knows of (the node's).
    pub fn evictable(self: &Arc<Self>, holders: usize) -> bool {
        if Arc::strong_count(self) > holders {
            return false;
        }
        let Some(st) = self.state.try_read() else {
            return false;
        };
        st.pins == 0 && !st.frozen && st.file.as_ref().is_none_or(|f| Arc::strong_count(f) <= 1)
    }

    /// Closes the descriptor if nothing is using it; false if it is busy.
    fn try_close(&self) -> bool {
        let Some(mut st) = self.state.try_write() else {
            return false;
        };
        match &st.file {
            Some(f) if st.frozen || st.pins > 0 || Arc::strong_count(f) > 1 => false,
            _ => {
                st.file = None;
                true
            }
        }
    }
}

/// Open data files, least recently opened first: past the budget, the oldest idle ones are
/// closed, so that a store with more files than the process may hold open keeps working.
pub(crate) struct OpenFiles {
    lru: lru::LruCache<usize, Weak<DataCell>>,
    budget: usize,
}

impl DataDir {
    /// Sets how many data files may stay open (the `open_files` setting).
    pub(crate) fn set_open_files(&self, n: usize) {
        self.open.lock().budget = n.max(16);
    }
}

impl OpenFiles {
    /// The budget: `$ASDFS_OPEN_FILES`, else half the soft limit on descriptors (the rest
    /// is for FUSE, the disk side and the control socket).
    fn new() -> OpenFiles {
        let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft as usize)
            .unwrap_or(1024);
        let env = std::env::var("ASDFS_OPEN_FILES")
            .ok()
            .and_then(|v| v.parse().ok());
        OpenFiles {
            lru: lru::LruCache::unbounded(),
            budget: env.unwrap_or(limit / 2).max(16),
        }
    }
}
