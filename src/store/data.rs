//! File data in RAM: one tmpfs file per loaded regular file (`private/data/<id>`), and the
//! copy-on-write freeze that lets a flush read a point-in-time copy (design.md §4).

use super::types::DataId;
use crate::backing::copy_sparse;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;
use parking_lot::RwLock;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The directory of data files.
pub(crate) struct DataDir {
    dir: OwnedFd,
    next: AtomicU64,
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

/// The data of one file, with the freeze used by flushes.
pub(crate) struct DataCell {
    state: RwLock<CellState>,
}

pub(crate) struct CellState {
    pub id: DataId,
    pub file: Arc<File>,
    /// A flush is reading `file`: the next change must copy it first.
    pub frozen: bool,
}

impl DataCell {
    pub fn new(id: DataId, file: File) -> Arc<DataCell> {
        Arc::new(DataCell {
            state: RwLock::new(CellState {
                id,
                file: Arc::new(file),
                frozen: false,
            }),
        })
    }

    pub fn id(&self) -> DataId {
        self.state.read().id
    }

    /// The current file, for reading.
    pub fn file(&self) -> Arc<File> {
        self.state.read().file.clone()
    }

    pub fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        let st = self.state.read();
        let mut done = 0;
        while done < buf.len() {
            let n = st.file.read_at(&mut buf[done..], off + done as u64)?;
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
        &self,
        dir: &DataDir,
        f: impl Fn(&File) -> io::Result<T>,
    ) -> io::Result<(T, Option<DataId>)> {
        {
            let st = self.state.read();
            if !st.frozen {
                return Ok((f(&st.file)?, None));
            }
        }
        let mut st = self.state.write();
        let mut new_id = None;
        if st.frozen {
            let id = dir.alloc();
            let copy = dir.create(id)?;
            if let Err(e) = copy_sparse(&st.file, &copy) {
                dir.remove(id);
                return Err(e);
            }
            st.file = Arc::new(copy);
            st.id = id;
            st.frozen = false;
            new_id = Some(id);
        }
        Ok((f(&st.file)?, new_id))
    }

    /// Freezes the data for a flush: waits for changes in progress, and returns the id and
    /// file that will not change until `thaw`.
    pub fn freeze(&self) -> (DataId, Arc<File>) {
        let mut st = self.state.write();
        st.frozen = true;
        (st.id, st.file.clone())
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
}
