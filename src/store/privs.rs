//! The set-user-ID and set-group-ID rules of local filesystems, in one place: which bits a
//! change of data (write, truncate, fallocate, copy_file_range) and a new access ACL take
//! away, for a caller without CAP_FSETID (taken to be uid 0).

use super::Store;
use super::types::{Ctx, NodeId};
use crate::error::FsResult;

/// The mode after the data of a regular file changed (`setattr_should_drop_suidgid`):
/// set-user-ID always goes, set-group-ID when the group may execute or the caller is not in
/// the file's group.
pub(crate) fn after_data_change(mode: u32, ctx: Ctx, in_group: impl FnOnce() -> bool) -> u32 {
    if ctx.uid == 0 || mode & (libc::S_ISUID | libc::S_ISGID) == 0 {
        return mode;
    }
    let mut mode = mode & !libc::S_ISUID;
    if mode & libc::S_ISGID != 0 && (mode & libc::S_IXGRP != 0 || !in_group()) {
        mode &= !libc::S_ISGID;
    }
    mode
}

/// The mode an access ACL sets (`posix_acl_update_mode`): set-group-ID goes unless the
/// caller is in the file's group.
pub(crate) fn after_acl(mode: u32, ctx: Ctx, in_group: impl FnOnce() -> bool) -> u32 {
    if ctx.uid == 0 || mode & libc::S_ISGID == 0 || in_group() {
        mode
    } else {
        mode & !libc::S_ISGID
    }
}

/// Whether the caller is in group `gid`: its own or a supplementary group (read from
/// /proc, as FUSE does not pass them).
pub(crate) fn in_group(ctx: Ctx, gid: u32) -> bool {
    if ctx.gid == gid {
        return true;
    }
    let status = crate::fsx::trusted::read_to_string(format!("/proc/{}/status", ctx.pid))
        .unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .is_some_and(|g| g.split_whitespace().any(|x| x.parse() == Ok(gid)))
}

impl Store {
    /// Whether a write by `ctx` must reach the daemon to take a set-group-ID bit away: the
    /// kernel's FUSE write path clears it only when the group may execute (design.md §4.1).
    pub fn write_needs_daemon(&self, ctx: Ctx, id: NodeId) -> bool {
        let Ok(a) = self.lock().node(id).map(|n| n.attr) else {
            return false;
        };
        ctx.uid != 0
            && a.mode & libc::S_ISGID != 0
            && a.mode & libc::S_IXGRP == 0
            && !in_group(ctx, a.gid)
    }

    /// An open for writing, with passthrough on, by a caller `write_needs_daemon` names: the
    /// kernel may serve it all the same (the node's other handles already have its backing
    /// file, and the kernel cannot mix the two paths, design.md §4.1), and would keep the
    /// set-group-ID bit. The bits a write by `ctx` takes away go at the open instead (a
    /// little earlier than on a local filesystem, never later). Returns `write_needs_daemon`.
    pub fn open_for_kernel_writes(&self, ctx: Ctx, id: NodeId) -> FsResult<bool> {
        let needs = self.write_needs_daemon(ctx, id);
        if needs {
            self.kill_privs(ctx, id)?;
        }
        Ok(needs)
    }

    /// Applies `after_data_change` to a file whose data `ctx` just changed. The group check
    /// reads /proc, so it runs without the store lock.
    pub(crate) fn kill_privs(&self, ctx: Ctx, id: NodeId) -> FsResult<()> {
        if ctx.uid == 0 {
            return Ok(());
        }
        let (mode, gid) = {
            let a = self.lock().node(id)?.attr;
            (a.mode, a.gid)
        };
        let new = after_data_change(mode, ctx, || in_group(ctx, gid));
        if new == mode {
            return Ok(());
        }
        let mut inner = self.lock();
        let seq = inner.next_seq();
        let n = inner.node_mut(id)?;
        // Bits only go, so a concurrent chmod is not undone.
        n.attr.mode &= new | !(libc::S_ISUID | libc::S_ISGID);
        inner.mark_meta(id, seq);
        inner.log_node(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOBODY: Ctx = Ctx {
        uid: 65534,
        gid: 65534,
        pid: 0,
    };

    #[test]
    fn data_changes_take_setuid_and_setgid_as_local_filesystems_do() {
        assert_eq!(after_data_change(0o6777, Ctx::ROOT, || false), 0o6777);
        assert_eq!(after_data_change(0o6777, NOBODY, || true), 0o0777);
        assert_eq!(after_data_change(0o2766, NOBODY, || true), 0o2766);
        assert_eq!(after_data_change(0o2766, NOBODY, || false), 0o0766);
        assert_eq!(after_data_change(0o4644, NOBODY, || true), 0o0644);
    }

    #[test]
    fn an_acl_takes_setgid_from_a_caller_outside_the_group() {
        assert_eq!(after_acl(0o2777, NOBODY, || false), 0o0777);
        assert_eq!(after_acl(0o2777, NOBODY, || true), 0o2777);
        assert_eq!(after_acl(0o2777, Ctx::ROOT, || false), 0o2777);
    }
}
