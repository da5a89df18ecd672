//! getattr, setattr, readlink and xattrs.

use super::Store;
use super::acl;
use super::inner::Inner;
use super::node::Content;
use super::privs;
use super::types::{Ctx, Kind, NodeId, SetAttr, SetTime, Stat, Ts};
use crate::error::{Errno, FsResult};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

/// setxattr(2) flags.
pub const XATTR_CREATE: i32 = 1;
pub const XATTR_REPLACE: i32 = 2;
const XATTR_SIZE_MAX: usize = 65536;

impl Store {
    pub fn getattr(&self, id: NodeId) -> FsResult<Stat> {
        self.lock().stat(id)
    }

    /// setattr by `ctx`; a new size is a change of data (`privs::after_data_change`), a new
    /// owner or group without a mode a chown (`privs::after_chown`). With
    /// `FUSE_HANDLE_KILLPRIV_V2` the kernel leaves both to the daemon, and asks for what a
    /// write, fallocate or copy_file_range takes away (or a chown(2) that changes neither
    /// owner nor group) with a setattr that sets nothing (design.md §4.1).
    pub fn setattr(&self, ctx: Ctx, id: NodeId, sa: SetAttr) -> FsResult<Stat> {
        self.check_room(super::CHANGE)?;
        let (kind, before) = self.lock().node(id).map(|n| (n.kind, n.attr))?;
        if sa.size.is_some() && kind != Kind::File {
            return Err(Errno::EISDIR);
        }
        let chown = sa.mode.is_none()
            && kind != Kind::Dir
            && (sa.uid.is_some() || sa.gid.is_some() || sa == SetAttr::default());
        // The bits a chown keeps, from the mode before it (the group check reads /proc,
        // so it runs without the lock); bits only go, so a concurrent chmod is not undone.
        let keep = match chown {
            true => privs::after_chown(before.mode, ctx, || privs::in_group(ctx, before.gid)),
            false => before.mode,
        } | !(libc::S_ISUID | libc::S_ISGID);
        // A new size changes the data: the xattrs the file has now are the ones its
        // rewritten copy gets (`Store::open` says why).
        if sa.mode.is_some() || sa.size.is_some() {
            self.ensure_xattrs(id)?;
        }
        let mut inner = if sa.size.is_some() {
            self.loaded(id)?
        } else {
            self.lock()
        };
        inner.refresh_from_data(id);
        let seq = inner.next_seq();
        let now = Ts::now();
        if let Some(size) = sa.size {
            inner.truncate(id, size, seq)?;
        }
        let n = inner.node_mut(id)?;
        if let Some(uid) = sa.uid {
            n.attr.uid = uid;
        }
        if let Some(gid) = sa.gid {
            n.attr.gid = gid;
        }
        n.attr.mode &= keep;
        if let Some(mode) = sa.mode {
            n.attr.mode = mode & 0o7777;
            chmod_acl(n.xattrs.as_mut(), mode);
        }
        let pick = |t: SetTime| match t {
            SetTime::Now => now,
            SetTime::At(ts) => ts,
        };
        if let Some(t) = sa.atime {
            n.attr.atime = pick(t);
        }
        if let Some(t) = sa.mtime {
            n.attr.mtime = pick(t);
        }
        n.attr.ctime = sa.ctime.unwrap_or(now);
        if let Some(cell) = n.cell() {
            // What was set wins over the data file's own times (design.md §4.1).
            cell.mark_seen();
        }
        inner.mark_meta(id, seq);
        inner.log_node(id);
        drop(inner);
        if sa.size.is_some() {
            self.kill_privs(ctx, id)?;
        }
        self.getattr(id)
    }

    pub fn readlink(&self, id: NodeId) -> FsResult<Vec<u8>> {
        match &self.lock().node(id)?.content {
            Content::Symlink(t) => Ok(t.clone()),
            _ => Err(Errno::EINVAL),
        }
    }

    pub fn getxattr(&self, id: NodeId, name: &OsStr) -> FsResult<Vec<u8>> {
        check_xattr_name(name)?;
        if let Some(v) = self.fenced_xattr(id, name) {
            return Ok(v);
        }
        self.ensure_xattrs(id)?;
        let inner = self.lock();
        let x = inner.node(id)?.xattrs.as_ref().ok_or(Errno::EIO)?;
        x.get(name).cloned().ok_or(Errno::ENODATA)
    }

    /// The names of a node's xattrs; `trusted.*` only for root, as tmpfs does.
    pub fn listxattr(&self, ctx: Ctx, id: NodeId) -> FsResult<Vec<OsString>> {
        self.ensure_xattrs(id)?;
        let inner = self.lock();
        let x = inner.node(id)?.xattrs.as_ref().ok_or(Errno::EIO)?;
        Ok(x.keys()
            .filter(|k| ctx.uid == 0 || !k.as_bytes().starts_with(b"trusted."))
            .cloned()
            .collect())
    }

    /// setxattr by `ctx`; an access ACL sets the mode as chmod does (`privs::after_acl`).
    pub fn setxattr(
        &self,
        ctx: Ctx,
        id: NodeId,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> FsResult<()> {
        check_xattr_name(name)?;
        if value.len() > XATTR_SIZE_MAX {
            return Err(Errno::E2BIG);
        }
        // Encoded as JSON numbers: up to four bytes each.
        self.check_room(super::CHANGE + 4 * value.len() as u64)?;
        self.ensure_xattrs(id)?;
        let gid = self.lock().node(id)?.attr.gid;
        let member = name.to_str() == Some(acl::ACCESS) && privs::in_group(ctx, gid);
        let mut inner = self.lock();
        let exists = inner
            .node(id)?
            .xattrs
            .as_ref()
            .is_some_and(|x| x.contains_key(name));
        if flags & XATTR_CREATE != 0 && exists {
            return Err(Errno::EEXIST);
        }
        if flags & XATTR_REPLACE != 0 && !exists {
            return Err(Errno::ENODATA);
        }
        let n = inner.node_mut(id)?;
        let value = match name.to_str() {
            Some(acl::ACCESS) => set_access_acl(n, value, ctx, member)?,
            Some(acl::DEFAULT) => check_default_acl(n.kind, value)?,
            _ => Some(value.to_vec()),
        };
        let x = n.xattrs.get_or_insert_with(Default::default);
        match value {
            Some(v) => {
                x.insert(name.to_os_string(), v);
            }
            None => {
                x.remove(name);
            }
        }
        inner.xattr_changed(id);
        Ok(())
    }

    pub fn removexattr(&self, id: NodeId, name: &OsStr) -> FsResult<()> {
        check_xattr_name(name)?;
        self.check_room(super::CHANGE)?;
        self.ensure_xattrs(id)?;
        let mut inner = self.lock();
        let n = inner.node_mut(id)?;
        let x = n.xattrs.as_mut().ok_or(Errno::EIO)?;
        if x.remove(name).is_none() {
            return Err(Errno::ENODATA);
        }
        inner.xattr_changed(id);
        Ok(())
    }
}

impl Inner {
    fn xattr_changed(&mut self, id: NodeId) {
        let seq = self.next_seq();
        if let Some(n) = self.nodes.get_mut(&id) {
            n.attr.ctime = Ts::now();
        }
        self.mark_meta(id, seq);
        self.log_node(id);
    }
}

/// The namespaces tmpfs keeps (user, trusted, security, and POSIX ACLs in system); other
/// names are refused as tmpfs refuses them, so that a flush can always write what it holds.
fn check_xattr_name(name: &OsStr) -> FsResult<()> {
    let b = name.as_bytes();
    if b.len() > 255 {
        return Err(Errno::ERANGE);
    }
    let rest = ["user.", "trusted.", "security.", "system."]
        .iter()
        .find_map(|p| b.strip_prefix(p.as_bytes()));
    match rest {
        None => Err(Errno::EOPNOTSUPP),
        Some([]) => Err(Errno::EINVAL),
        Some(_)
            if b.starts_with(b"system.")
                && ![acl::ACCESS, acl::DEFAULT].contains(&name.to_str().unwrap_or("")) =>
        {
            Err(Errno::EOPNOTSUPP)
        }
        Some(_) => Ok(()),
    }
}

/// chmod also rewrites the access ACL's owner, group/mask and other entries.
fn chmod_acl(xattrs: Option<&mut std::collections::BTreeMap<OsString, Vec<u8>>>, mode: u32) {
    let Some(x) = xattrs else { return };
    let Some(bytes) = x.get_mut(OsStr::new(acl::ACCESS)) else {
        return;
    };
    if let Ok(mut a) = acl::parse(bytes) {
        acl::chmod(&mut a, mode);
        *bytes = acl::encode(&a);
    }
}

/// Setting an access ACL sets the mode bits it implies; an ACL the mode says in full is not
/// stored (posix_acl_update_mode). Returns the value to store, if any.
fn set_access_acl(
    n: &mut super::node::Node,
    value: &[u8],
    ctx: Ctx,
    member: bool,
) -> FsResult<Option<Vec<u8>>> {
    if n.kind == Kind::Symlink {
        return Err(Errno::EOPNOTSUPP);
    }
    let a = acl::parse(value)?;
    if a.is_empty() {
        return Ok(None);
    }
    let (mode, not_equiv) = acl::equiv_mode(&a, n.attr.mode);
    n.attr.mode = privs::after_acl(mode, ctx, || member);
    Ok(not_equiv.then(|| value.to_vec()))
}

fn check_default_acl(kind: Kind, value: &[u8]) -> FsResult<Option<Vec<u8>>> {
    if kind != Kind::Dir {
        return Err(Errno::EACCES);
    }
    let a = acl::parse(value)?;
    Ok((!a.is_empty()).then(|| value.to_vec()))
}
