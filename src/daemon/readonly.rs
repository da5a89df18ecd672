//! Read-only remounts (design.md §11): `mount -o remount,ro DIR` makes the kernel refuse
//! every change to the mount (EROFS); the daemon then writes what RAM holds to disk, so that
//! the disk copy equals what programs see for as long as the mount stays read-only.
//!
//! mount.fuse.asdfs remounts and then asks the daemon (control request `readonly`), waiting
//! for the flush. A remount that does not run the helper (`mount -i`, mount(2) itself,
//! overlay mode where mount(8) sees an overlayfs) is noticed by a watcher of the mount
//! table, which sends the daemon the same request.

use super::mounting;
use crate::control::{self, Request, Response};
use crate::flush::FlushReport;
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// The answer to `readonly`: read-only means "flush now"; writable needs nothing.
pub(super) fn answer(
    target: &Path,
    on: bool,
    flush: impl FnOnce() -> anyhow::Result<FlushReport>,
) -> Response {
    if !on {
        return Response::ok(format!("{}: writable", target.display()));
    }
    match flush() {
        Ok(r) => Response::ok(format!(
            "{}: read-only; the disk copy is up to date (generation {})",
            target.display(),
            r.generation
        )),
        Err(e) => Response::err(format!(
            "{}: read-only, but the flush failed: {e:#}; the changes stay in RAM",
            target.display()
        )),
    }
}

/// Whether the mount on `target` is read-only, for it or for its superblock.
pub(super) fn is_read_only(target: &Path) -> Option<bool> {
    let m = mounting::mount_at(target).ok()??;
    let first_ro = |opts: &str| opts.split(',').next() == Some("ro");
    Some(first_ro(&m.options) || first_ro(&m.super_options))
}

/// Watches the mount table for the rest of the daemon's life; when a target becomes
/// read-only or writable, tells its daemon (this one, over its control socket).
pub(super) fn watch(targets: Vec<(PathBuf, PathBuf)>) {
    let spawned = std::thread::Builder::new()
        .name("ro-watch".into())
        .spawn(move || {
            if let Err(e) = watch_loop(&targets) {
                tracing::warn!(error = %e, "cannot watch the mount table for read-only remounts");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the read-only remount watcher");
    }
}

fn watch_loop(targets: &[(PathBuf, PathBuf)]) -> std::io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let table = crate::fsx::trusted::open("/proc/self/mountinfo")?;
    let mut was: HashMap<&Path, bool> = HashMap::new();
    loop {
        for (target, socket) in targets {
            let ro = is_read_only(target).unwrap_or(false);
            let before = was.insert(target, ro).unwrap_or(false);
            if ro != before {
                tracing::info!(target = %target.display(), read_only = ro, "remounted");
                if let Err(e) = control::call(socket, &Request::Readonly { on: ro }) {
                    tracing::warn!(error = %format!("{e:#}"), "after a remount");
                }
            }
        }
        // The mount table's descriptor reports a change as POLLPRI.
        let mut fds = [PollFd::new(table.as_fd(), PollFlags::POLLPRI)];
        poll(&mut fds, PollTimeout::NONE).map_err(std::io::Error::from)?;
    }
}
