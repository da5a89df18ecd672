//! Finding the daemon that serves a target: the session marker in the target's side
//! directory names its store, whose control socket answers.
//!
//! The side directory lies in a directory the target's user controls, so the marker is
//! only a hint: the store it names is used only if it is where asdfs would put this
//! target's store (`<volatile>/asdfs/<key>`, or `asdfs.XXXXXXXX` where another user holds
//! `asdfs`, see `paths::store_root_in`), the way to it is one only root or the caller
//! can change (`fsx::check_safe_chain`), and its socket belongs to root or the caller.
//! Otherwise the default volatile directory's store is used, under the same checks.
//!
//! A socket file outlives a daemon that was killed: only a listener makes a daemon
//! running. A target whose daemon died (a socket nobody listens on, or a dead FUSE mount)
//! is `Found::Dead`, with the volatile directory of the store it left, so that a command
//! can take the store over or name the command that does.

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

/// The store of `target` that the mount table shows (`<store>/private`, the store's own
/// tmpfs, `paths::limit_private`), found without looking at the target's path: only a
/// hint, checked like the session marker's (`trusted_socket`).
fn store_from_mounts(target: &Path) -> Option<PathBuf> {
    let key = paths::store_key(target);
    mounting::mounts()
        .ok()?
        .into_iter()
        .rev()
        .filter(|m| m.source == paths::STORE_FS_SOURCE && m.mount_point.ends_with("private"))
        .filter_map(|m| m.mount_point.parent().map(Path::to_path_buf))
        .find(|store| store.file_name() == Some(key.as_ref()))
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

/// What serves a target.
pub enum Found {
    Running(Running),
    /// Its daemon died: the mount is dead, or the store it left has no daemon.
    Dead(Dead),
    Idle,
}

/// A target whose daemon died, and the store it left (if known).
pub struct Dead {
    pub target: PathBuf,
    /// The volatile directory of the store the daemon left.
    pub volatile: Option<PathBuf>,
    /// The target is still mounted (a dead mount): the daemon was killed. Otherwise the
    /// daemon unmounted and left its store because the final flush failed.
    pub mounted: bool,
}

impl Dead {
    /// The `asdfs mount` command that takes the store over.
    pub fn mount_command(&self) -> String {
        let mut cmd = format!("asdfs mount {}", quoted(&self.target));
        if let Some(v) = &self.volatile {
            if paths::default_volatile().ok().as_ref() != Some(v) {
                cmd += &format!(" --volatile {}", quoted(v));
            }
        }
        cmd
    }

    /// One line: what happened, and `run` (a command) to recover.
    pub fn message(&self, run: &str) -> String {
        if !self.mounted {
            return format!(
                "{}: not in RAM, but its last session could not write all its changes to disk and kept them in its RAM store; `{run}` takes the store over and writes it to disk",
                self.target.display()
            );
        }
        format!(
            "{}: its daemon died; `{run}` takes its RAM store over and writes it to disk",
            self.target.display()
        )
    }

    /// Starts a daemon that takes the store over (and writes it to disk); returns once it
    /// serves the target.
    pub fn take_over(&self) -> anyhow::Result<()> {
        let mut args: Vec<std::ffi::OsString> = vec!["mount".into(), "--quiet".into()];
        if let Some(v) = &self.volatile {
            args.push("--volatile".into());
            args.push(v.into());
        }
        args.push("--".into());
        args.push(self.target.clone().into());
        match super::mount::spawn_daemon(args, true)? {
            0 => Ok(()),
            _ => bail!(
                "{}: taking over the RAM store of its dead daemon failed",
                self.target.display()
            ),
        }
    }
}

/// A path as a shell word.
fn quoted(p: &Path) -> String {
    let s = p.display().to_string();
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+,:@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        return s;
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The volatile directory of a store path `<volatile>/asdfs/<key>`.
fn volatile_of(store: &Path) -> Option<PathBuf> {
    store.parent()?.parent().map(Path::to_path_buf)
}

/// Finds what serves `target`: a daemon that answers on its control socket, a daemon that
/// died (a socket nobody listens on, or a dead mount), or nothing.
///
/// A FUSE mount another user controls on the target's way (`mounting::foreign_fuse_on`)
/// could leave this waiting for ever: then nothing on that way is looked at, and the store
/// is found by the target's name alone: in the mount table (a store's own tmpfs) or in the
/// default volatile directory. Otherwise the
/// path steps are given up after `hang::limit()` (docs/security.md R7).
pub fn find(target: &Path) -> anyhow::Result<Found> {
    let abs = mounting::lexical_absolute(target)?;
    // The session marker is read in the side directory beside the target, whose parent's
    // owner may have put a FUSE mount there too (QA M2).
    if mounting::foreign_fuse_on(target)?.is_some()
        || mounting::foreign_fuse_on(&paths::side_dir(&abs))?.is_some()
    {
        return find_at(abs, false);
    }
    let given = target.to_path_buf();
    crate::hang::bounded(&target.display().to_string(), move || {
        find_at(absolute(&given)?, true)
    })
}

/// `find` for the absolute target `t`; `look`: whether its path may be looked at.
fn find_at(t: PathBuf, look: bool) -> anyhow::Result<Found> {
    let me = nix::unistd::geteuid().as_raw();
    let session = match look {
        // The side directory's parent is the target's owner's: she may have renamed the
        // marker away (QA M2); root's store is also named in the mount table.
        true => session_store(&t, me).or_else(|| store_from_mounts(&t)),
        // The store's own tmpfs (root's stores) names it in the mount table.
        false => store_from_mounts(&t),
    };
    let from_session = session
        .as_ref()
        .and_then(|s| trusted_socket(&t, s, me).ok());
    let socket = match from_session {
        Some(s) => Some(s),
        // No default volatile directory (a user without XDG_RUNTIME_DIR): no store there.
        None => paths::target_paths(&t, None)
            .ok()
            .and_then(|p| trusted_socket(&t, &p.store, me).ok()),
    };
    if let Some(socket) = socket {
        // A socket file outlives a killed daemon: only a listener makes it a running one.
        let refused = matches!(
            std::os::unix::net::UnixStream::connect(&socket),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ECONNREFUSED | libc::ENOENT))
        );
        if !refused {
            return Ok(Found::Running(Running { socket }));
        }
        let mounted = mounting::mount_at(&t)
            .ok()
            .flatten()
            .is_some_and(|m| m.is_asdfs());
        return Ok(Found::Dead(Dead {
            target: t,
            volatile: socket.parent().and_then(volatile_of),
            mounted,
        }));
    }
    if look && mounting::is_dead_fuse_mount(&t) {
        let named_right = |s: &PathBuf| s.file_name() == Some(paths::store_key(&t).as_ref());
        let volatile = session.filter(named_right).and_then(|s| volatile_of(&s));
        return Ok(Found::Dead(Dead {
            target: t,
            volatile,
            mounted: true,
        }));
    }
    Ok(Found::Idle)
}

/// The control socket of the daemon serving `target`; an error in one line if none does.
pub fn running(target: &Path) -> anyhow::Result<Running> {
    match find(target)? {
        Found::Running(r) => Ok(r),
        Found::Dead(d) => bail!("{}", d.message(&d.mount_command())),
        Found::Idle => bail!(
            "{}: not kept in RAM by asdfs",
            mounting::lexical_absolute(target)?.display()
        ),
    }
}

/// Every asdfs mount of this mount namespace.
pub fn all() -> anyhow::Result<Vec<PathBuf>> {
    Ok(mounting::asdfs_mounts()?
        .into_iter()
        .map(|m| m.mount_point)
        .collect())
}

/// Who a mount of asdfs serves: the user who mounted it (FUSE's `user_id=`), or for root's
/// mounts the owner of the directory; `None` when the caller cannot even look at it.
fn owner_of(m: &mounting::MountEntry) -> Option<u32> {
    let mounter = m
        .super_options
        .split(',')
        .find_map(|o| o.strip_prefix("user_id="))
        .and_then(|u| u.parse::<u32>().ok());
    match mounter {
        Some(u) if u != 0 => Some(u),
        _ => {
            use std::os::unix::fs::MetadataExt;
            crate::fsx::trusted::symlink_metadata(&m.mount_point)
                .ok()
                .map(|meta| meta.uid())
        }
    }
}

/// The asdfs mounts of this mount namespace that the caller may command: all for root,
/// else those they mounted or whose directory they own.
pub fn mine() -> anyhow::Result<Vec<PathBuf>> {
    let me = nix::unistd::geteuid().as_raw();
    let mut out = Vec::new();
    for m in mounting::asdfs_mounts()? {
        if (me == 0 || owner_of(&m) == Some(me)) && !out.contains(&m.mount_point) {
            out.push(m.mount_point);
        }
    }
    Ok(out)
}

/// A user's command on an asdfs mount that is someone else's fails with a message that
/// says so (root may command every mount).
pub fn check_mine(target: &Path) -> anyhow::Result<()> {
    let me = nix::unistd::geteuid().as_raw();
    if me == 0 {
        return Ok(());
    }
    let t = absolute(target)?;
    let mount = mounting::asdfs_mounts()?
        .into_iter()
        .rev()
        .find(|m| m.mount_point == t);
    let mounted = mount.is_some();
    let owner = match mount {
        Some(m) => owner_of(&m),
        None => {
            use std::os::unix::fs::MetadataExt;
            match crate::fsx::trusted::symlink_metadata(&t) {
                Ok(meta) => Some(meta.uid()),
                Err(_) => return Ok(()),
            }
        }
    };
    match owner {
        Some(u) if u == me => Ok(()),
        owner => {
            let whose = owner
                .and_then(|u| nix::unistd::User::from_uid(u.into()).ok().flatten())
                .map(|u| format!("{}'s", u.name))
                .unwrap_or_else(|| "another user's".into());
            if !mounted {
                bail!(
                    "{}: not kept in RAM by asdfs (and not yours: it is {whose} directory)",
                    t.display()
                )
            }
            bail!(
                "{}: not yours: it is {whose} directory in RAM; only its owner or root can flush or unmount it",
                t.display()
            )
        }
    }
}
