//! The set-user-ID and set-group-ID rules of local filesystems, in one place: which bits a
//! change of data (write, truncate, fallocate, copy_file_range) and a new access ACL take
//! away, for a caller without CAP_FSETID (`fsetid`: uid 0 with the capability in its
//! effective set).

use super::Store;
use super::types::{Ctx, NodeId};
use crate::error::FsResult;

/// The mode after the data of a regular file changed (`setattr_should_drop_suidgid`):
/// set-user-ID always goes, set-group-ID when the group may execute or the caller is not in
/// the file's group.
pub(crate) fn after_data_change(mode: u32, ctx: Ctx, in_group: impl FnOnce() -> bool) -> u32 {
    if mode & (libc::S_ISUID | libc::S_ISGID) == 0 || fsetid(ctx) {
        return mode;
    }
    let mut mode = mode & !libc::S_ISUID;
    if mode & libc::S_ISGID != 0 && (mode & libc::S_IXGRP != 0 || !in_group()) {
        mode &= !libc::S_ISGID;
    }
    mode
}

/// The mode after a change of owner or group, or a chown(2) that changes neither
/// (`chown_common`): set-user-ID always goes (root's chown too), set-group-ID when the group
/// may execute or a caller other than root is not in the file's (old) group. For a caller
/// other than root this is `after_data_change`.
pub(crate) fn after_chown(mode: u32, ctx: Ctx, in_group: impl FnOnce() -> bool) -> u32 {
    let mut mode = mode & !libc::S_ISUID;
    if mode & libc::S_ISGID != 0 && (mode & libc::S_IXGRP != 0 || (!fsetid(ctx) && !in_group())) {
        mode &= !libc::S_ISGID;
    }
    mode
}

/// The mode an access ACL sets (`posix_acl_update_mode`): set-group-ID goes unless the
/// caller is in the file's group.
pub(crate) fn after_acl(mode: u32, ctx: Ctx, in_group: impl FnOnce() -> bool) -> u32 {
    if mode & libc::S_ISGID == 0 || fsetid(ctx) || in_group() {
        mode
    } else {
        mode & !libc::S_ISGID
    }
}

/// CAP_FSETID, the capability by which the kernel lets a caller keep the bits: FUSE passes
/// no capabilities, so uid 0 with it in the effective set of /proc/PID/status (a root
/// process without it, e.g. under `setpriv --bounding-set=-all`, loses the bits as on the
/// kernel's own filesystems; another uid's capability is not looked at, as a process in a
/// user namespace has its capabilities there, not over this filesystem). The daemon's own
/// changes (pid 0) keep them.
pub(crate) fn fsetid(ctx: Ctx) -> bool {
    const CAP_FSETID: u32 = 4;
    if ctx.uid != 0 {
        return false;
    }
    if ctx.pid == 0 {
        return true;
    }
    crate::fsx::trusted::read_to_string(format!("/proc/{}/status", ctx.pid))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_FSETID) != 0)
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

/// What is told of a node whose mode the store changed on its own (`Store::set_attrs_hook`).
pub type AttrsHook = Box<dyn Fn(NodeId) + Send + Sync>;

impl Store {
    /// Sets what is told of a node whose attributes the store changed on its own: the
    /// kernel caches attributes, and the reply to an open (O_TRUNC), a write, fallocate or
    /// copy_file_range carries none, so the FUSE adapter invalidates them (QA F7).
    pub fn set_attrs_hook(&self, hook: Option<AttrsHook>) {
        *self.on_attrs.lock() = hook;
    }

    /// Applies `after_data_change` to a file whose data `ctx` just changed. The group check
    /// reads /proc, so it runs without the store lock. The kernel's cached attributes of a
    /// file that lost bits are invalidated (`set_attrs_hook`) before the reply.
    pub(crate) fn kill_privs(&self, ctx: Ctx, id: NodeId) -> FsResult<()> {
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
        drop(inner);
        if let Some(hook) = &*self.on_attrs.lock() {
            hook(id);
        }
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
    fn chown_takes_setuid_from_everyone_and_setgid_as_a_write_does() {
        assert_eq!(after_chown(0o6777, Ctx::ROOT, || false), 0o0777);
        assert_eq!(after_chown(0o2767, Ctx::ROOT, || false), 0o2767);
        assert_eq!(after_chown(0o2767, NOBODY, || false), 0o0767);
        assert_eq!(after_chown(0o2767, NOBODY, || true), 0o2767);
        for m in [0o6777, 0o2767, 0o4644, 0o0755] {
            for member in [false, true] {
                assert_eq!(
                    after_chown(m, NOBODY, || member),
                    after_data_change(m, NOBODY, || member)
                );
            }
        }
    }

    #[test]
    fn an_acl_takes_setgid_from_a_caller_outside_the_group() {
        assert_eq!(after_acl(0o2777, NOBODY, || false), 0o0777);
        assert_eq!(after_acl(0o2777, NOBODY, || true), 0o2777);
        assert_eq!(after_acl(0o2777, Ctx::ROOT, || false), 0o2777);
    }
}
