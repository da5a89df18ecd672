//! Operations on names: lookup, create, mkdir, mknod, symlink, link, unlink, rmdir, rename.
//! Each one first makes sure the names it touches are known (lazy fill, outside the lock),
//! then changes the tree under the store lock with one sequence number.

use super::acl;
use super::data::DataCell;
use super::inner::{Handle, Inner};
use super::node::{Content, Dir, Node, Target};
use super::types::{Ctx, HandleId, Kind, NodeId, Stat, Ts};
use super::{Store, check_name};
use crate::error::{Errno, FsResult};
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};

/// What kind of node to make, with its content.
pub enum NewKind<'a> {
    File,
    Dir,
    Symlink(&'a [u8]),
    Special(Kind, u64),
}

impl Store {
    /// `name` in `parent`; `.` and `..` name a node by its id (what the kernel asks to open
    /// a file handle, design.md §9.1).
    pub fn lookup(&self, parent: NodeId, name: &OsStr) -> FsResult<Stat> {
        if name.len() > 255 {
            return Err(Errno::ENAMETOOLONG);
        }
        if name == "." || name == ".." {
            return self.lookup_by_id(parent, name == "..");
        }
        self.ensure_child(parent, name)?;
        let mut inner = self.lock();
        match inner.entry(parent, name)? {
            Some(Target::Node(id)) => {
                inner.add_lookup(id);
                inner.stat(id)
            }
            _ => Err(Errno::ENOENT),
        }
    }

    /// A node by its id, or its directory's; ENOENT (ESTALE for the program) once freed.
    fn lookup_by_id(&self, id: NodeId, parent: bool) -> FsResult<Stat> {
        let mut inner = self.lock();
        let n = inner.node(id)?;
        let id = match n.names.first() {
            Some((dir, _)) if parent => *dir,
            None if parent && n.kind == Kind::Dir && id != NodeId::ROOT => {
                return Err(Errno::ENOENT);
            }
            _ => id,
        };
        inner.add_lookup(id);
        inner.stat(id)
    }

    /// The generation of file handles of this store's nodes.
    pub fn handle_gen(&self) -> u64 {
        u64::from(self.handle_gen)
    }

    pub fn forget(&self, id: NodeId, n: u64) {
        let mut inner = self.lock();
        if let Some(node) = inner.nodes.get_mut(&id) {
            node.lookups = node.lookups.saturating_sub(n);
        }
        inner.maybe_free(id);
    }

    /// Makes a node; `mode` holds the permission bits asked for, `umask` the caller's umask.
    pub fn make(
        &self,
        ctx: Ctx,
        parent: NodeId,
        name: &OsStr,
        kind: NewKind<'_>,
        mode: u32,
        umask: u32,
    ) -> FsResult<Stat> {
        check_name(name)?;
        self.check_room(super::CHANGE)?;
        self.ensure_child(parent, name)?;
        self.ensure_xattrs(parent)?;
        let cell = match kind {
            NewKind::File => {
                let id = self.data.alloc();
                Some(DataCell::new(&self.data, id, self.data.create(id)?))
            }
            _ => None,
        };
        let mut inner = self.lock();
        let r = inner.make(ctx, parent, name, kind, mode, umask, cell.clone());
        if r.is_err() {
            if let Some(c) = cell {
                self.data.remove(c.id());
            }
        }
        r
    }

    /// create(2) with O_CREAT: makes a regular file and opens it.
    pub fn create(
        &self,
        ctx: Ctx,
        parent: NodeId,
        name: &OsStr,
        mode: u32,
        umask: u32,
        write: bool,
    ) -> FsResult<(Stat, HandleId)> {
        if write {
            self.back_pressure(64 << 10, true)?;
        }
        let st = self.make(ctx, parent, name, NewKind::File, mode, umask)?;
        let mut inner = self.lock();
        let h = inner.open_handle(st.ino, write)?;
        Ok((st, h))
    }

    pub fn link(&self, id: NodeId, newparent: NodeId, newname: &OsStr) -> FsResult<Stat> {
        check_name(newname)?;
        self.check_room(super::CHANGE)?;
        self.ensure_child(newparent, newname)?;
        let mut inner = self.lock();
        let n = inner.node(id)?;
        if n.kind == Kind::Dir {
            return Err(Errno::EPERM);
        }
        if n.names.is_empty() {
            return Err(Errno::ENOENT);
        }
        inner.check_live_dir(newparent)?;
        if inner.entry(newparent, newname)?.is_some() {
            return Err(Errno::EEXIST);
        }
        let seq = inner.next_seq();
        let now = Ts::now();
        inner.node_mut(id)?.attr.ctime = now;
        inner.set_entry(newparent, newname, Some(id), seq)?;
        inner.touch_dir(newparent, now, seq);
        inner.add_lookup(id);
        inner.stat(id)
    }

    pub fn unlink(&self, parent: NodeId, name: &OsStr) -> FsResult<()> {
        self.check_removal_room()?;
        self.ensure_child(parent, name)?;
        let mut inner = self.lock();
        let Some(Target::Node(id)) = inner.entry(parent, name)? else {
            return Err(Errno::ENOENT);
        };
        if inner.node(id)?.kind == Kind::Dir {
            return Err(Errno::EISDIR);
        }
        inner.remove_name(parent, name, id)
    }

    pub fn rmdir(&self, parent: NodeId, name: &OsStr) -> FsResult<()> {
        self.check_removal_room()?;
        self.ensure_child(parent, name)?;
        let id = match self.lock().entry(parent, name)? {
            Some(Target::Node(id)) => id,
            _ => return Err(Errno::ENOENT),
        };
        if self.lock().node(id)?.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        self.ensure_populated(id)?;
        let mut inner = self.lock();
        if inner.entry(parent, name)? != Some(Target::Node(id)) {
            return Err(Errno::ENOENT);
        }
        if !inner.dir(id)?.entries.is_empty() {
            return Err(Errno::ENOTEMPTY);
        }
        inner.remove_name(parent, name, id)
    }

    /// rename(2) and renameat2(2) with RENAME_NOREPLACE / RENAME_EXCHANGE.
    pub fn rename(
        &self,
        parent: NodeId,
        name: &OsStr,
        newparent: NodeId,
        newname: &OsStr,
        flags: u32,
    ) -> FsResult<()> {
        check_name(newname)?;
        self.check_room(super::CHANGE)?;
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0
            || flags == libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE
        {
            return Err(Errno::EINVAL);
        }
        self.ensure_child(parent, name)?;
        self.ensure_child(newparent, newname)?;
        // A directory that would be replaced must be known to be empty.
        let dst = self.lock().entry(newparent, newname)?;
        if let Some(Target::Node(d)) = dst {
            if self.lock().node(d)?.kind == Kind::Dir {
                self.ensure_populated(d)?;
            }
        }
        let mut inner = self.lock();
        let Some(Target::Node(src)) = inner.entry(parent, name)? else {
            return Err(Errno::ENOENT);
        };
        let dst = match inner.entry(newparent, newname)? {
            Some(Target::Node(d)) => Some(d),
            Some(Target::Disk(_)) => return Err(Errno::EIO),
            None => None,
        };
        inner.check_live_dir(newparent)?;
        if inner.node(src)?.kind == Kind::Dir && inner.is_ancestor(src, newparent) {
            return Err(Errno::EINVAL);
        }
        if flags & libc::RENAME_EXCHANGE != 0 {
            let Some(d) = dst else {
                return Err(Errno::ENOENT);
            };
            if inner.node(d)?.kind == Kind::Dir && inner.is_ancestor(d, parent) {
                return Err(Errno::EINVAL);
            }
            return inner.exchange(parent, name, src, newparent, newname, d);
        }
        if let Some(d) = dst {
            if flags & libc::RENAME_NOREPLACE != 0 {
                return Err(Errno::EEXIST);
            }
            if d == src {
                return Ok(());
            }
            check_replace(&inner, src, d)?;
        }
        inner.move_name(parent, name, src, newparent, newname, dst)
    }
}

/// May `src` replace `dst` in a rename?
fn check_replace(inner: &Inner, src: NodeId, dst: NodeId) -> FsResult<()> {
    let s = inner.node(src)?;
    let d = inner.node(dst)?;
    match (s.kind == Kind::Dir, d.kind == Kind::Dir) {
        (true, false) => Err(Errno::ENOTDIR),
        (false, true) => Err(Errno::EISDIR),
        (true, true) if !d.dir().map(|x| x.entries.is_empty()).unwrap_or(false) => {
            Err(Errno::ENOTEMPTY)
        }
        _ => Ok(()),
    }
}

impl Inner {
    #[allow(clippy::too_many_arguments)]
    fn make(
        &mut self,
        ctx: Ctx,
        parent: NodeId,
        name: &OsStr,
        kind: NewKind<'_>,
        mode: u32,
        umask: u32,
        cell: Option<std::sync::Arc<DataCell>>,
    ) -> FsResult<Stat> {
        self.check_live_dir(parent)?;
        if self.entry(parent, name)?.is_some() {
            return Err(Errno::EEXIST);
        }
        let p = self.node(parent)?;
        let setgid_dir = p.attr.mode & libc::S_ISGID != 0;
        let gid = if setgid_dir { p.attr.gid } else { ctx.gid };
        let default = p
            .xattrs
            .as_ref()
            .and_then(|x| x.get(OsStr::new(acl::DEFAULT)))
            .cloned();
        let is_dir = matches!(kind, NewKind::Dir);
        let inherited = match kind {
            NewKind::Symlink(_) => acl::Inherited {
                mode: 0o777,
                access: None,
                default: None,
            },
            _ => acl::inherit(default.as_deref(), mode & 0o7777, umask, is_dir),
        };
        let mut mode = inherited.mode;
        if is_dir && setgid_dir {
            mode |= libc::S_ISGID;
        }
        let (k, rdev, content, size) = match kind {
            NewKind::File => (Kind::File, 0, Content::File(cell), 0),
            NewKind::Dir => (Kind::Dir, 0, Content::Dir(Dir::new_populated()), 0),
            NewKind::Symlink(t) => (
                Kind::Symlink,
                0,
                Content::Symlink(t.to_vec()),
                t.len() as u64,
            ),
            NewKind::Special(k, rdev) => (k, rdev, Content::Special, 0),
        };
        let mut attr = Inner::new_attr(mode, ctx.uid, gid, rdev);
        attr.size = size;
        let mut node = Node::new(k, attr, content);
        let mut xattrs = BTreeMap::new();
        if let Some(a) = inherited.access {
            xattrs.insert(OsString::from(acl::ACCESS), a);
        }
        if let Some(d) = inherited.default {
            xattrs.insert(OsString::from(acl::DEFAULT), d);
        }
        node.xattrs = Some(xattrs);
        let id = self.alloc_node(node);
        let seq = self.next_seq();
        self.dirty_nodes.insert(id);
        self.set_entry(parent, name, Some(id), seq)?;
        self.touch_dir(parent, attr.mtime, seq);
        self.add_lookup(id);
        self.stat(id)
    }

    pub(crate) fn open_handle(&mut self, id: NodeId, write: bool) -> FsResult<HandleId> {
        let h = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(
            h,
            Handle {
                node: id,
                write,
                pinned: None,
                list_end: 0,
            },
        );
        self.node_mut(id)?.opens += 1;
        Ok(HandleId(h))
    }

    /// A directory that can get new entries: it exists and has not been removed.
    fn check_live_dir(&self, dir: NodeId) -> FsResult<()> {
        let d = self.node(dir)?;
        if d.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        if dir != NodeId::ROOT && d.names.is_empty() {
            return Err(Errno::ENOENT);
        }
        Ok(())
    }

    /// Is `a` the directory `b` or one of its ancestors?
    fn is_ancestor(&self, a: NodeId, b: NodeId) -> bool {
        let mut cur = b;
        for _ in 0..100_000 {
            if cur == a {
                return true;
            }
            match self.nodes.get(&cur).and_then(|n| n.names.first()) {
                Some((p, _)) => cur = *p,
                None => return false,
            }
        }
        false
    }

    fn remove_name(&mut self, parent: NodeId, name: &OsStr, id: NodeId) -> FsResult<()> {
        let seq = self.next_seq();
        let now = Ts::now();
        self.set_entry(parent, name, None, seq)?;
        self.touch_dir(parent, now, seq);
        self.node_mut(id)?.attr.ctime = now;
        if !self.node(id)?.names.is_empty() {
            self.log_node(id);
        }
        self.maybe_free(id);
        Ok(())
    }

    fn move_name(
        &mut self,
        parent: NodeId,
        name: &OsStr,
        src: NodeId,
        newparent: NodeId,
        newname: &OsStr,
        dst: Option<NodeId>,
    ) -> FsResult<()> {
        let seq = self.next_seq();
        let now = Ts::now();
        self.set_entry(parent, name, None, seq)?;
        self.set_entry(newparent, newname, Some(src), seq)?;
        self.node_mut(src)?.attr.ctime = now;
        self.log_node(src);
        self.touch_dir(parent, now, seq);
        if newparent != parent {
            self.touch_dir(newparent, now, seq);
        }
        if let Some(d) = dst {
            self.node_mut(d)?.attr.ctime = now;
            self.maybe_free(d);
        }
        Ok(())
    }

    fn exchange(
        &mut self,
        parent: NodeId,
        name: &OsStr,
        src: NodeId,
        newparent: NodeId,
        newname: &OsStr,
        dst: NodeId,
    ) -> FsResult<()> {
        if src == dst {
            return Ok(());
        }
        let seq = self.next_seq();
        let now = Ts::now();
        self.set_entry(parent, name, Some(dst), seq)?;
        self.set_entry(newparent, newname, Some(src), seq)?;
        for id in [src, dst] {
            self.node_mut(id)?.attr.ctime = now;
            self.log_node(id);
        }
        self.touch_dir(parent, now, seq);
        if newparent != parent {
            self.touch_dir(newparent, now, seq);
        }
        Ok(())
    }
}
