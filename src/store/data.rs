//! File data in RAM: one tmpfs file per loaded regular file (`private/data/<id>`), and the
//! copy-on-write freeze that lets a flush read a point-in-time copy (design.md §4).

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
}

/// What a flush reads: the frozen data file, open if it could be opened at the freeze.
pub(crate) struct FrozenData {
    pub id: DataId,
    pub file: Option<Arc<File>>,
}

impl DataCell {
    /// A cell for a data file just opened or created.
    pub fn new(dir: &Arc<DataDir>, id: DataId, file: File) -> Arc<DataCell> {
        let c = Arc::new(DataCell {
            dir: dir.clone(),
            state: RwLock::new(CellState {
                id,
                file: Some(Arc::new(file)),
                frozen: false,
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

    /// Freezes the data for a flush: waits for changes in progress; the data file `id` does
    /// not change until `thaw`.
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

    /// Ends a freeze. Returns the frozen id if the file was copied meanwhile, so the caller
    /// removes the old data file.
    pub fn thaw(&self, frozen: DataId) -> Option<DataId> {
        let mut st = self.state.write();
        if st.id == frozen {
            st.frozen = false;
            None
        } else {
            Some(frozen)
        }
    }

    /// Closes the descriptor if nothing is using it; false if it is busy.
    fn try_close(&self) -> bool {
        let Some(mut st) = self.state.try_write() else {
            return false;
        };
        match &st.file {
            Some(f) if st.frozen || Arc::strong_count(f) > 1 => false,
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
