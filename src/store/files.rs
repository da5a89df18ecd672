//! Open files: open, read, write, truncate, fallocate, lseek, copy_file_range, release.
//! Data I/O happens on the file's tmpfs data file without the store lock; the lock is taken
//! afterwards to update size, times and the dirty set.

use super::Store;
use super::data::DataCell;
use super::inner::Inner;
use super::node::Content;
use super::types::{Ctx, HandleId, Kind, NodeId, Ts};
use crate::error::{Errno, FsResult};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

impl Store {
    /// Opens a regular file for `ctx`; `truncate` is O_TRUNC (the data is then not read from
    /// disk), a change of data (`privs::after_data_change`: with `FUSE_HANDLE_KILLPRIV_V2`
    /// the kernel leaves it to the daemon, design.md §4.1).
    pub fn open(&self, ctx: Ctx, id: NodeId, write: bool, truncate: bool) -> FsResult<HandleId> {
        if truncate {
            self.check_room(super::CHANGE)?;
        }
        if write {
            self.check_fence()?;
            // With FUSE passthrough the writes themselves bypass the daemon (design.md §2.1).
            self.back_pressure(64 << 10, true)?;
        }
        {
            let inner = self.lock();
            match inner.node(id)?.kind {
                Kind::File => {}
                Kind::Dir => return Err(Errno::EISDIR),
                _ => return Err(Errno::ENXIO),
            }
        }
        if write || truncate {
            // The file's xattrs as they are before its data first changes are the ones the
            // flush gives its rewritten copy, logged with it: an xattr put on the disk copy
            // behind asdfs later (a capability root sets between a kill and the takeover)
            // is never combined with the store's newer content (design.md §3 "Takeover").
            self.ensure_xattrs(id)?;
        }
        if truncate {
            self.replace_with_empty(id)?;
            self.kill_privs(ctx, id)?;
            return self.lock().open_handle(id, write);
        }
        let mut inner = self.loaded(id)?;
        inner.open_handle(id, write)
    }

    /// The store lock, with `id`'s data in RAM (read again if it was evicted meanwhile).
    pub(crate) fn loaded(&self, id: NodeId) -> FsResult<super::Locked<'_>> {
        loop {
            self.ensure_loaded(id)?;
            let inner = self.lock();
            if inner.node(id)?.cell().is_some() {
                return Ok(inner);
            }
        }
    }

    /// O_TRUNC on a file: its data becomes an empty data file, without reading the old.
    fn replace_with_empty(&self, id: NodeId) -> FsResult<()> {
        let loaded = matches!(self.lock().node(id)?.content, Content::File(Some(_)));
        if loaded {
            let mut inner = self.lock();
            let seq = inner.next_seq();
            return inner.truncate(id, 0, seq);
        }
        let data_id = self.data.alloc();
        let cell = DataCell::new(&self.data, data_id, self.data.create(data_id)?);
        let mut inner = self.lock();
        let seq = inner.next_seq();
        let n = inner.node_mut(id)?;
        if !matches!(n.content, Content::File(None)) {
            drop(inner);
            self.data.remove(data_id);
            let mut inner = self.lock();
            let seq = inner.next_seq();
            return inner.truncate(id, 0, seq);
        }
        n.content = Content::File(Some(cell));
        let now = Ts::now();
        n.attr.size = 0;
        n.attr.mtime = now;
        n.attr.ctime = now;
        inner.mark_data(id, seq);
        inner.log_node(id);
        Ok(())
    }

    fn cell_of(&self, fh: HandleId) -> FsResult<(NodeId, Arc<DataCell>)> {
        let inner = self.lock();
        let h = inner.handles.get(&fh.0).ok_or(Errno::EBADF)?;
        let cell = inner.node(h.node)?.cell().cloned().ok_or(Errno::EBADF)?;
        Ok((h.node, cell))
    }

    pub fn read(&self, fh: HandleId, off: u64, size: u32) -> FsResult<Vec<u8>> {
        let (id, cell) = self.cell_of(fh)?;
        let mut buf = vec![0u8; size as usize];
        let n = cell.read_at(&mut buf, off)?;
        buf.truncate(n);
        self.accessed(id);
        Ok(buf)
    }

    /// A write by `ctx`; takes set-user-ID and set-group-ID bits as `privs` says.
    pub fn write(&self, ctx: Ctx, fh: HandleId, off: u64, data: &[u8]) -> FsResult<usize> {
        self.check_room(super::CHANGE)?;
        self.back_pressure(data.len() as u64, false)?;
        let (id, cell) = self.cell_of(fh)?;
        let (n, new_id) = cell.modify(|f| write_some(f, data, off))?;
        let mut inner = self.lock();
        let prev = inner.node(id)?.data_seq;
        inner.data_changed(id, Some(off + n as u64), new_id.is_some())?;
        let now = inner.node(id)?.data_seq;
        self.written.note(id, prev, now, off, n as u64);
        inner.counters.bytes_written += n as u64;
        drop(inner);
        self.kill_privs(ctx, id)?;
        Ok(n)
    }

    /// Gives an open handle's data file to the kernel (FUSE passthrough, design.md §4.1):
    /// the cell is pinned until release, and a handle that may write marks the data dirty
    /// until a flush after its last writer closed.
    pub fn pin(&self, fh: HandleId) -> FsResult<Arc<File>> {
        // Not fenced: a handle that may write was refused at its open.
        self.room(super::CHANGE, false)?;
        let mut inner = self.lock();
        let h = inner.handles.get(&fh.0).ok_or(Errno::EBADF)?;
        let (id, write) = (h.node, h.write);
        let cell = inner.node(id)?.cell().cloned().ok_or(Errno::EBADF)?;
        // The store lock is held: no flush can freeze the cell meanwhile.
        let (file, new_id) = cell.pin()?;
        if let Some(h) = inner.handles.get_mut(&fh.0) {
            h.pinned = Some(super::data::Sig::of(&file).ok());
        }
        if write {
            inner.node_mut(id)?.writers += 1;
            let first = inner.node(id)?.data_seq == 0;
            let seq = inner.next_seq();
            inner.mark_data(id, seq);
            if first || new_id.is_some() {
                inner.log_node(id);
            }
        } else if new_id.is_some() {
            inner.log_node(id);
        }
        Ok(file)
    }

    /// Undoes `pin` when the kernel would not take the data file: the daemon serves it.
    pub fn unpin_handle(&self, fh: HandleId) -> FsResult<()> {
        let mut inner = self.lock();
        let h = inner.handles.get_mut(&fh.0).ok_or(Errno::EBADF)?;
        let Some(began) = h.pinned.take() else {
            return Ok(());
        };
        let (id, write) = (h.node, h.write);
        inner.unpin(id, write, began)
    }

    pub fn release(&self, fh: HandleId) -> FsResult<()> {
        let mut inner = self.lock();
        let h = inner.handles.remove(&fh.0).ok_or(Errno::EBADF)?;
        if let Some(began) = h.pinned {
            inner.unpin(h.node, h.write, began)?;
        }
        if let Some(n) = inner.nodes.get_mut(&h.node) {
            n.opens = n.opens.saturating_sub(1);
            let size = n.attr.size;
            if n.cell().is_some() {
                inner.cache.touch(h.node, size);
            }
        }
        inner.maybe_free(h.node);
        Ok(())
    }

    /// fallocate(2) by `ctx`, a change of data like a write.
    pub fn fallocate(&self, ctx: Ctx, fh: HandleId, off: u64, len: u64, mode: i32) -> FsResult<()> {
        self.check_room(super::CHANGE)?;
        self.back_pressure(len, false)?;
        let (id, cell) = self.cell_of(fh)?;
        let (_, new_id) = cell.modify(|f| {
            // SAFETY: fallocate on a descriptor the cell owns.
            let r = unsafe {
                libc::fallocate(f.as_raw_fd(), mode, off as libc::off_t, len as libc::off_t)
            };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        })?;
        let size = cell.metadata()?.len();
        let mut inner = self.lock();
        inner.node_mut(id)?.attr.size = size;
        inner.data_changed(id, None, new_id.is_some())?;
        drop(inner);
        self.kill_privs(ctx, id)
    }

    /// SEEK_DATA / SEEK_HOLE.
    pub fn lseek(&self, fh: HandleId, off: i64, whence: i32) -> FsResult<i64> {
        let (_, cell) = self.cell_of(fh)?;
        let f = cell.file()?;
        // SAFETY: lseek on a descriptor the cell owns; reads and writes use explicit offsets.
        let r = unsafe { libc::lseek(f.as_raw_fd(), off as libc::off_t, whence) };
        if r < 0 {
            Err(io::Error::last_os_error().into())
        } else {
            Ok(r)
        }
    }

    /// copy_file_range(2) by `ctx`, a write to `fh_out`.
    pub fn copy_file_range(
        &self,
        ctx: Ctx,
        fh_in: HandleId,
        off_in: u64,
        fh_out: HandleId,
        off_out: u64,
        len: u64,
    ) -> FsResult<u64> {
        self.check_room(super::CHANGE)?;
        self.back_pressure(len, false)?;
        let (_, cin) = self.cell_of(fh_in)?;
        let (id, cout) = self.cell_of(fh_out)?;
        let src = cin.file()?;
        let (n, new_id) = cout.modify(|dst| copy_range(&src, off_in, dst, off_out, len))?;
        let mut inner = self.lock();
        inner.data_changed(id, Some(off_out + n), new_id.is_some())?;
        inner.counters.bytes_written += n;
        drop(inner);
        self.kill_privs(ctx, id)?;
        Ok(n)
    }

    /// The node an open handle refers to.
    pub fn handle_node(&self, fh: HandleId) -> FsResult<NodeId> {
        self.inner
            .lock()
            .handles
            .get(&fh.0)
            .map(|h| h.node)
            .ok_or(Errno::EBADF)
    }
}

impl Inner {
    /// Takes a pinned data file's size and times into the node if the kernel changed it
    /// since they were last taken in (design.md §4.1).
    pub(crate) fn refresh_from_data(&mut self, id: NodeId) {
        let Some(n) = self.nodes.get_mut(&id) else {
            return;
        };
        let Some(cell) = n.cell().cloned() else {
            return;
        };
        if let Some(sig) = cell.observed() {
            super::inner::sig_into(&mut n.attr, sig);
            cell.mark_seen();
        }
    }

    /// A passthrough handle closed. The last writer's release marks the data dirty again, so
    /// that a flush after it copies the final state. Status counts the file's size as
    /// written if it changed while the handle was open (the daemon does not see the writes).
    fn unpin(&mut self, id: NodeId, write: bool, began: Option<super::data::Sig>) -> FsResult<()> {
        self.refresh_from_data(id);
        let n = self.node_mut(id)?;
        let now = n.cell().and_then(|c| c.sig());
        if let Some(cell) = n.cell() {
            cell.unpin();
        }
        if !write {
            return Ok(());
        }
        if let Some(now) = now.filter(|s| Some(*s) != began) {
            self.counters.bytes_written += now.size;
        }
        let n = self.node_mut(id)?;
        n.writers = n.writers.saturating_sub(1);
        if n.writers == 0 {
            let seq = self.next_seq();
            self.mark_data(id, seq);
            self.log_node(id);
        }
        Ok(())
    }

    /// After a change of a file's data: size (grown to `end` if given), times, dirty set, and
    /// a log record the first time (or when copy-on-write gave it a new data file).
    pub(crate) fn data_changed(
        &mut self,
        id: NodeId,
        end: Option<u64>,
        new_file: bool,
    ) -> FsResult<()> {
        let seq = self.next_seq();
        let now = Ts::now();
        let n = self.node_mut(id)?;
        if let Some(end) = end {
            n.attr.size = n.attr.size.max(end);
        }
        n.attr.mtime = now;
        n.attr.ctime = now;
        let first = n.data_seq == 0;
        self.mark_data(id, seq);
        if first || new_file {
            self.log_node(id);
        }
        Ok(())
    }

    /// Sets a loaded file's size.
    pub(crate) fn truncate(&mut self, id: NodeId, size: u64, seq: u64) -> FsResult<()> {
        let cell = self.node(id)?.cell().cloned().ok_or(Errno::EIO)?;
        let (_, new_id) = cell.modify(|f| f.set_len(size))?;
        let now = Ts::now();
        let n = self.node_mut(id)?;
        n.attr.size = size;
        n.attr.mtime = now;
        n.attr.ctime = now;
        let first = n.data_seq == 0;
        self.mark_data(id, seq);
        if first || new_id.is_some() {
            self.log_node(id);
        }
        Ok(())
    }
}

/// pwrite(2) until done or an error; a partial write is reported as such.
fn write_some(f: &File, data: &[u8], off: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        match f.write_at(&data[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if done > 0 => {
                tracing::trace!(error = %e, "short write");
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn copy_range(
    src: &File,
    mut off_in: u64,
    dst: &File,
    mut off_out: u64,
    len: u64,
) -> io::Result<u64> {
    let mut done = 0u64;
    while done < len {
        let mut i = off_in as libc::loff_t;
        let mut o = off_out as libc::loff_t;
        let chunk = (len - done).min(1 << 30) as usize;
        // SAFETY: offsets point to locals; descriptors are owned by the data cells.
        let r = unsafe {
            libc::copy_file_range(src.as_raw_fd(), &mut i, dst.as_raw_fd(), &mut o, chunk, 0)
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if done > 0 {
                break;
            }
            return Err(e);
        }
        if r == 0 {
            break;
        }
        done += r as u64;
        off_in += r as u64;
        off_out += r as u64;
    }
    Ok(done)
}
