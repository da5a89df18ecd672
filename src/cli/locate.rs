//! Finding the daemon that serves a target: the session marker in the target's side
//! directory names its store, whose control socket answers.
//!
//! The side directory lies in a directory the target's user controls, so the marker is
//! only a hint: the store it names is used only if it is where asdfs would put this
//! target's store (`<volatile>/asdfs/<key>`, or `asdfs.XXXXXXXX` where another user holds
//! `asdfs`, see `paths::store_root_in`), the way to it is one only root or the caller
//! can change (`fsx::check_safe_chain`), and its socket belongs to root or the caller.
//! Otherwise the default volatile directory's store is used, under the same checks.

use crate::daemon::{mounting, paths};
use crate::fsx;
use anyhow::bail;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

pub struct Running {
    pub socket: PathBuf,
}

/// The target's absolute path, even when its mount is dead (canonicalize would fail).
fn absolute(target: &Path) -> anyhow::Result<PathBuf> {
    if let Ok(p) = crate::fsx::trusted::canonicalize(target) {
        return Ok(p);
    }
    let abs = std::path::absolute(target)?;
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => Ok(crate::fsx::trusted::canonicalize(parent)
            .unwrap_or(parent.to_path_buf())
            .join(name)),
        _ => Ok(abs),
    }
}

/// The store the session marker names, if the marker is root's or the caller's.
fn session_store(target: &Path, me: u32) -> Option<PathBuf> {
    let side = fsx::Dir::open(&paths::side_dir(target)).ok()?;
    let owner = side.stat().ok()?.st_uid;
    if owner != 0 && owner != me {
        return None;
    }
    let bytes = fsx::read_nofollow(&side, "session".as_ref(), 1 << 16).ok()?;
    let v = serde_json::from_slice::<serde_json::Value>(&bytes).ok()?;
    v["store"].as_str().map(PathBuf::from)
}

/// `store`'s control socket, if `store` is where asdfs keeps `target`'s store and nobody
/// but root and the caller can have put the socket there.
fn trusted_socket(target: &Path, store: &Path, me: u32) -> anyhow::Result<PathBuf> {
    let root = store.parent().unwrap_or(Path::new("/"));
    let named_right = store.file_name() == Some(paths::store_key(target).as_ref())
        && root.file_name().is_some_and(paths::is_store_root_name);
    if !named_right {
        bail!("{}: not a store of {}", store.display(), target.display());
    }
    fsx::check_safe_chain(store, me)?;
    let socket = store.join("control.sock");
    // The chain check above means only root or the caller could have put anything in the
    // store; the socket itself belongs to the target's owner (control::bind), who may
    // command the mount anyway.
    let meta = crate::fsx::trusted::symlink_metadata(&socket)?;
    if !meta.file_type().is_socket() {
        bail!("{}: not a socket", socket.display());
    }
    Ok(socket)
}

/// The control socket of the daemon serving `target`.
pub fn running(target: &Path) -> anyhow::Result<Running> {
    let t = absolute(target)?;
    let me = nix::unistd::geteuid().as_raw();
    let from_session = session_store(&t, me).and_then(|s| trusted_socket(&t, &s, me).ok());
    let socket = match from_session {
        Some(s) => Some(s),
        None => trusted_socket(&t, &paths::target_paths(&t, None)?.store, me).ok(),
    };
    let Some(socket) = socket else {
        if mounting::is_dead_fuse_mount(&t) {
            bail!(
                "{}: its daemon died; `asdfs mount {}` recovers the RAM store and writes it to disk",
                t.display(),
                t.display()
            );
        }
        bail!("{}: not kept in RAM by asdfs", t.display());
    };
    Ok(Running { socket })
}

/// Every asdfs mount of this mount namespace.
pub fn all() -> anyhow::Result<Vec<PathBuf>> {
    Ok(mounting::asdfs_mounts()?
        .into_iter()
        .map(|m| m.mount_point)
        .collect())
}
