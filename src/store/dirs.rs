//! Directory handles and listings. Positions are per-directory cookies that only grow, so a
//! listing stays correct while the directory changes: every entry present from the first to
//! the last call is returned exactly once. A name made (or renamed) during a listing gets a
//! cookie beyond the end the listing took at its start and is not listed, as on tmpfs; so
//! a listing always ends.

use super::Store;
use super::inner::Inner;
use super::node::Target;
use super::types::{DirEntry, HandleId, Kind, NodeId, Stat};
use crate::error::{Errno, FsResult};
use std::ffi::OsString;

impl Store {
    pub fn opendir(&self, id: NodeId) -> FsResult<HandleId> {
        let mut inner = self.lock();
        if inner.node(id)?.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        inner.open_handle(id, false)
    }

    pub fn releasedir(&self, fh: HandleId) -> FsResult<()> {
        self.release(fh)
    }

    /// Lists `dir`, open as `fh`, after position `offset`. `add` gets each entry (and its
    /// attributes when `plus`) and returns true when the reply is full; entries it took
    /// count as lookups when `plus` (except `.` and `..`).
    pub fn readdir(
        &self,
        dir: NodeId,
        fh: HandleId,
        offset: u64,
        plus: bool,
        mut add: impl FnMut(&DirEntry, Option<&Stat>) -> bool,
    ) -> FsResult<()> {
        self.ensure_all_instantiated(dir)?;
        if offset == 0 {
            self.accessed(dir);
        }
        let mut inner = self.lock();
        let end = list_end(&mut inner, dir, fh, offset)?;
        let node = inner.node(dir)?;
        let parent = node.names.first().map(|(p, _)| *p).unwrap_or(dir);
        let mut list: Vec<DirEntry> = Vec::new();
        if offset < 1 {
            list.push(DirEntry {
                cookie: 1,
                name: OsString::from("."),
                ino: dir,
                kind: Kind::Dir,
            });
        }
        if offset < 2 {
            list.push(DirEntry {
                cookie: 2,
                name: OsString::from(".."),
                ino: parent,
                kind: Kind::Dir,
            });
        }
        let d = inner.dir(dir)?;
        for (cookie, name) in d.by_cookie.range(offset.max(2) + 1..end) {
            let Some(e) = d.entries.get(name) else {
                continue;
            };
            let Target::Node(id) = e.target else { continue };
            let kind = inner.nodes.get(&id).map(|n| n.kind).unwrap_or(Kind::File);
            list.push(DirEntry {
                cookie: *cookie,
                name: name.clone(),
                ino: id,
                kind,
            });
            if list.len() >= 1024 {
                break;
            }
        }
        for entry in &list {
            let stat = if plus {
                Some(inner.stat(entry.ino)?)
            } else {
                None
            };
            if add(entry, stat.as_ref()) {
                break;
            }
            if plus && entry.cookie > 2 {
                inner.add_lookup(entry.ino);
            }
        }
        Ok(())
    }
}

/// Where the listing through `fh` ends: the directory's next cookie when it starts (offset
/// 0, also after rewinddir).
fn list_end(inner: &mut Inner, dir: NodeId, fh: HandleId, offset: u64) -> FsResult<u64> {
    let next = inner.dir(dir)?.next_cookie;
    let h = inner.handles.get_mut(&fh.0).ok_or(Errno::EBADF)?;
    if h.node != dir {
        return Err(Errno::EBADF);
    }
    if offset == 0 || h.list_end == 0 {
        h.list_end = next;
    }
    Ok(h.list_end)
}
