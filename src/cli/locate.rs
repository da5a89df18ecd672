//! Finding the daemon that serves a target: the session marker in the target's side
//! directory names its store, whose control socket answers.

use crate::daemon::{mounting, paths};
use anyhow::bail;
use std::path::{Path, PathBuf};

pub struct Running {
    pub socket: PathBuf,
}

/// The target's absolute path, even when its mount is dead (canonicalize would fail).
fn absolute(target: &Path) -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::fs::canonicalize(target) {
        return Ok(p);
    }
    let abs = std::path::absolute(target)?;
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => Ok(std::fs::canonicalize(parent)
            .unwrap_or(parent.to_path_buf())
            .join(name)),
        _ => Ok(abs),
    }
}

/// The control socket of the daemon serving `target`.
pub fn running(target: &Path) -> anyhow::Result<Running> {
    let t = absolute(target)?;
    let side = paths::side_dir(&t);
    let store = std::fs::read(side.join("session"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["store"].as_str().map(PathBuf::from));
    let socket = match store {
        Some(s) => s.join("control.sock"),
        None => paths::target_paths(&t, None)?.socket(),
    };
    if !socket.exists() {
        if mounting::is_dead_fuse_mount(&t) {
            bail!(
                "{}: its daemon died; `asdfs mount {}` recovers the RAM store and writes it to disk",
                t.display(),
                t.display()
            );
        }
        bail!("{}: not kept in RAM by asdfs", t.display());
    }
    Ok(Running { socket })
}

/// Every asdfs mount of this mount namespace.
pub fn all() -> anyhow::Result<Vec<PathBuf>> {
    Ok(mounting::asdfs_mounts()?
        .into_iter()
        .map(|m| m.mount_point)
        .collect())
}
