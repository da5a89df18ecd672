//! Where everything of a target lives, and the checks made before touching anything:
//! the target, its side directory beside it, and its store on tmpfs (design.md §3, §5).

use super::mounting;
use crate::fsx::trusted::{TrustedOpen, TrustedPath};
use crate::fsx::{self, Dir};
use anyhow::{Context, bail};
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The source name of a store's own tmpfs (`limit_private`) in the mount table.
pub const STORE_FS_SOURCE: &str = "asdfs-store";
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// The places of one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetPaths {
    /// The target, absolute and without symlinks.
    pub target: PathBuf,
    /// `.NAME-asdfs/` beside the target.
    pub side: PathBuf,
    /// The store root (`<volatile>/asdfs`).
    pub store_root: PathBuf,
    /// `<store_root>/<key>/`.
    pub store: PathBuf,
}

impl TargetPaths {
    pub fn private(&self) -> PathBuf {
        self.store.join("private")
    }
    pub fn socket(&self) -> PathBuf {
        self.store.join("control.sock")
    }
    pub fn lock(&self) -> PathBuf {
        self.store.join("lock")
    }
}

/// The target as the user named it, checked: it exists, is a directory owned by the caller
/// (or the caller is root); made absolute with symlinks resolved. A target whose asdfs
/// daemon died (its mount answers "Transport endpoint is not connected") is accepted: the
/// dead mount is cleared once the store is locked, and the target checked again.
pub fn resolve_target(given: &Path) -> anyhow::Result<PathBuf> {
    match crate::fsx::trusted::metadata(given) {
        Ok(meta) if meta.is_dir() => check_owner(given, &meta)?,
        Ok(_) => bail!("{}: not a directory", given.display()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            bail!("{}: no such directory", given.display())
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED)) => {
            return dead_mount_target(given);
        }
        Err(e) => bail!("{}: {e}", given.display()),
    }
    let abs = crate::fsx::trusted::canonicalize(given)
        .with_context(|| format!("resolving {}", given.display()))?;
    if abs == Path::new("/") {
        bail!("/: the root directory cannot be a target");
    }
    Ok(abs)
}

/// Only root and the directory's owner may keep it in RAM: a user's mount over another
/// user's directory would put their daemon between that user and their files.
fn check_owner(given: &Path, meta: &std::fs::Metadata) -> anyhow::Result<()> {
    let me = nix::unistd::geteuid();
    if me.is_root() || meta.uid() == me.as_raw() {
        return Ok(());
    }
    bail!(
        "{}: owned by uid {}, not by you (uid {me}); only its owner or root may keep it in RAM",
        given.display(),
        meta.uid()
    )
}

fn dead_mount_target(given: &Path) -> anyhow::Result<PathBuf> {
    let abs = std::path::absolute(given)?;
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        bail!("{}: not a usable target", given.display());
    };
    let abs = crate::fsx::trusted::canonicalize(parent)
        .with_context(|| format!("resolving {}", parent.display()))?
        .join(name);
    match mounting::mount_at(&abs)? {
        Some(m) if m.fstype == mounting::FSTYPE => Ok(abs),
        _ => bail!(
            "{}: a FUSE mount whose daemon died is in the way; unmount it first",
            given.display()
        ),
    }
}

/// The side directory of a target: `/a/b` -> `/a/.b-asdfs`.
pub fn side_dir(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let mut side = OsString::from(".");
    side.push(&name);
    side.push("-asdfs");
    target.parent().unwrap_or(Path::new("/")).join(side)
}

/// The parent of store roots when none is configured: /run for root, $XDG_RUNTIME_DIR else.
pub fn default_volatile() -> anyhow::Result<PathBuf> {
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from("/run"));
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => Ok(PathBuf::from(d)),
        _ => bail!("XDG_RUNTIME_DIR is not set: give --volatile DIR (a tmpfs directory you own)"),
    }
}

/// All places of a target whose store lives under `volatile`.
pub fn target_paths(target: &Path, volatile: Option<&Path>) -> anyhow::Result<TargetPaths> {
    let volatile = match volatile {
        Some(v) => v.to_path_buf(),
        None => default_volatile()?,
    };
    if !volatile.is_absolute() {
        bail!(
            "{}: the volatile directory must be an absolute path",
            volatile.display()
        );
    }
    // Without symlinks, as the chain rule checks it (prepare_store).
    let volatile = crate::fsx::trusted::canonicalize(&volatile).unwrap_or(volatile);
    let key = store_key(target);
    let store_root = store_root_in(&volatile, &key);
    let store = store_root.join(key);
    Ok(TargetPaths {
        target: target.to_path_buf(),
        side: side_dir(target),
        store_root,
        store,
    })
}

/// A readable, collision-free directory name for a target: `/var/lib/x` ->
/// `var-lib-x.1a2b3c4d`.
pub fn store_key(target: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let bytes = target.as_os_str().as_bytes();
    let mut readable: String = String::from_utf8_lossy(bytes)
        .trim_start_matches('/')
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(80)
        .collect();
    if readable.is_empty() {
        readable.push('-');
    }
    format!("{readable}.{:08x}", fnv1a(bytes) as u32)
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, x| {
        (h ^ u64::from(*x)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Refuses targets that overlap another asdfs target, or that would hold their own store.
pub fn check_overlaps(p: &TargetPaths) -> anyhow::Result<()> {
    for m in mounting::asdfs_mounts()? {
        if m.mount_point == p.target {
            continue;
        }
        if p.target.starts_with(&m.mount_point) {
            bail!(
                "{}: lies inside {}, which asdfs already keeps in RAM",
                p.target.display(),
                m.mount_point.display()
            );
        }
        if m.mount_point.starts_with(&p.target) {
            bail!(
                "{}: contains {}, which asdfs already keeps in RAM",
                p.target.display(),
                m.mount_point.display()
            );
        }
    }
    let root = p
        .store_root
        .trusted_canonicalize()
        .unwrap_or_else(|_| p.store_root.clone());
    if root.starts_with(&p.target) {
        bail!(
            "{}: would contain its own RAM store {}; choose another --volatile",
            p.target.display(),
            root.display()
        );
    }
    Ok(())
}

/// The store's directories, checked and held open while the target is served.
pub struct StoreDirs {
    /// `<volatile>/asdfs`.
    pub root: Dir,
    /// `<volatile>/asdfs/<key>`.
    pub store: Dir,
    /// Whether this start made `store` (a failed start then removes it).
    pub created: bool,
}

/// The uid that owns what asdfs makes: this process's.
pub fn me() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Creates the store root on tmpfs (mounting a private tmpfs there when root and the place
/// is on disk) and the target's store directory, with `private/` in it.
///
/// The chain rule (docs/security.md): every directory from `/` to the volatile directory is
/// owned by root or this user and writable by nobody else unless it is root's sticky
/// directory (`/tmp`, `/dev/shm`); the store root and the store are this user's, mode
/// 0711/0700, made here or accepted only when they already are. Then no other user can
/// rename or replace anything on the way to the store, and the store's paths reach what
/// was checked.
pub fn prepare_store(p: &TargetPaths) -> anyhow::Result<StoreDirs> {
    let volatile = p.store_root.parent().unwrap_or(Path::new("/"));
    if !volatile.trusted_is_dir() {
        bail!(
            "{}: the volatile directory does not exist",
            volatile.display()
        );
    }
    let uid = me();
    fsx::check_safe_chain(volatile, uid)?;
    let vol = Dir::open(volatile)?;
    let root_user = uid == 0;
    let mode = if root_user { 0o711 } else { 0o700 };
    let name = p.store_root.file_name().unwrap_or(OsStr::new(STORE_ROOT));
    if name != STORE_ROOT {
        let squatter = crate::fsx::trusted::symlink_metadata(volatile.join(STORE_ROOT))
            .map_or_else(|_| "gone now".to_string(), |m| format!("uid {}", m.uid()));
        tracing::warn!(
            "{}: not a store root of uid {uid} ({squatter}); using {} instead",
            volatile.join(STORE_ROOT).display(),
            p.store_root.display()
        );
    }
    let (mut root, _) = fsx::mkdir_private(&vol, name, mode, uid)?;
    if !is_ram_fs(&root.proc_path())? {
        if !root_user {
            bail!(
                "{}: not on tmpfs, ramfs or zram, so the \"RAM\" copy would be on disk; point --volatile at a tmpfs such as $XDG_RUNTIME_DIR",
                p.store_root.display()
            );
        }
        mount_private_tmpfs(&root)?;
        root = vol.open_in(name)?;
        fsx::check_private(&root, uid)?;
    }
    let key = store_key(&p.target);
    let (store, created) = fsx::mkdir_private(&root, OsStr::new(&key), mode, uid)?;
    let dirs = StoreDirs {
        root,
        store,
        created,
    };
    let mut undo = Undo::default();
    if created {
        undo.store = Some((dirs.root.try_clone()?, key.into()));
    }
    let filled = probe_writable(&dirs.store)
        .and_then(|()| fsx::mkdir_private(&dirs.store, OsStr::new("private"), 0o700, uid));
    if let Err(e) = filled {
        // An ending daemon removes its store while it still holds the lock: the directory
        // accepted above may be gone by now. The caller makes it again.
        if dirs.store.stat().is_ok_and(|st| st.st_nlink == 0) {
            return Err(StoreGone.into());
        }
        return Err(e);
    }
    undo.disarm();
    Ok(dirs)
}

/// The store directory was removed (by a daemon ending) while a start prepared it.
#[derive(Debug, thiserror::Error)]
#[error("the store directory was removed while this daemon started")]
pub struct StoreGone;

const STORE_ROOT: &str = "asdfs";

/// The store root in `volatile`: `asdfs`, unless another user (or a non-directory) holds
/// that name; a world-writable volatile directory (`/tmp`) lets anyone take it, and refusing
/// it would let anyone stop every mount there. Then a store root of this user named
/// `asdfs.XXXXXXXX` (`is_store_root_name`): the one that holds `key`'s store (a daemon that
/// died left it), else any, else a new unpredictable name that `prepare_store` creates
/// exclusively. Only this user can have made a directory of theirs there, and
/// `prepare_store` checks it again through a descriptor.
fn store_root_in(volatile: &Path, key: &str) -> PathBuf {
    let usual = volatile.join(STORE_ROOT);
    let me = me();
    let ours = |p: &Path| {
        crate::fsx::trusted::symlink_metadata(p)
            .is_ok_and(|m| m.is_dir() && m.uid() == me && m.mode() & 0o022 == 0)
    };
    if crate::fsx::trusted::symlink_metadata(&usual).is_err() || ours(&usual) {
        return usual;
    }
    let mut mine: Vec<PathBuf> = crate::fsx::trusted::read_dir(volatile)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| is_store_root_name(n))
        .map(|n| volatile.join(n))
        .filter(|p| ours(p))
        .collect();
    mine.sort();
    if let Some(p) = mine.iter().find(|p| p.join(key).trusted_is_dir()) {
        return p.clone();
    }
    mine.into_iter()
        .next()
        .unwrap_or_else(|| volatile.join(format!("{STORE_ROOT}.{}", random_suffix())))
}

/// `asdfs` or `asdfs.` and 8 of `[a-z0-9]`: a name `store_root_in` gives a store root.
pub fn is_store_root_name(name: &OsStr) -> bool {
    let b = name.as_encoded_bytes();
    b == STORE_ROOT.as_bytes()
        || b.strip_prefix(b"asdfs.").is_some_and(|s| {
            s.len() == 8
                && s.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

/// 8 characters of `[a-z0-9]` from the kernel's random source.
fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    // SAFETY: the buffer is valid for its length; getrandom fills it or fails.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // Still unique enough to be made with O_EXCL; only less unpredictable.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        bytes = (t.as_nanos() as u64 ^ u64::from(std::process::id())).to_le_bytes();
    }
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    bytes
        .iter()
        .map(|b| CHARS[usize::from(*b) % CHARS.len()] as char)
        .collect()
}

fn probe_writable(dir: &Dir) -> anyhow::Result<()> {
    let probe = OsStr::new(".asdfs-write-test");
    let _ = fsx::unlink(dir, probe);
    fsx::create_excl(dir, probe, 0o600).with_context(|| {
        format!(
            "{}: the store directory is not writable",
            dir.path().display()
        )
    })?;
    let _ = fsx::unlink(dir, probe);
    Ok(())
}

/// What a start made, removed again if the start fails: the store it
/// created, the side directory it created, the session file it wrote. Only these, through
/// the descriptors they were made with; never what an earlier session left.
#[derive(Default)]
pub struct Undo {
    /// The store root and the store's name in it.
    pub store: Option<(Dir, OsString)>,
    /// The side directory's parent, its name there, and the directory itself.
    pub side: Option<(Dir, OsString, Dir)>,
    /// The side directory, once the session file is written in it.
    pub session: Option<Dir>,
}

impl Undo {
    /// What `store` created.
    pub fn of(store: &StoreDirs) -> anyhow::Result<Undo> {
        let mut u = Undo::default();
        if store.created {
            let key = store.store.path().file_name().unwrap_or_default();
            u.store = Some((store.root.try_clone()?, key.to_os_string()));
        }
        Ok(u)
    }

    /// The side directory too, if this start created it.
    pub fn add_side(&mut self, side: &Side) -> anyhow::Result<()> {
        if side.created {
            let name = side
                .dir
                .path()
                .file_name()
                .unwrap_or_default()
                .to_os_string();
            self.side = Some((side.parent.try_clone()?, name, side.dir.try_clone()?));
        }
        Ok(())
    }

    /// The start succeeded: keep everything.
    pub fn disarm(&mut self) {
        self.store = None;
        self.side = None;
        self.session = None;
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let Some(side) = self.session.take() {
            let _ = fsx::unlink(&side, OsStr::new("session"));
        }
        if let Some((root, key)) = self.store.take() {
            if let Ok(store) = root.open_in(&key) {
                unmount_private(&store);
            }
            if let Err(e) = fsx::remove_tree(&root, &key) {
                tracing::warn!(error = %e, "could not remove the store of the failed start");
            }
        }
        if let Some((parent, name, dir)) = self.side.take() {
            if let Err(e) = fsx::remove_held(&parent, &name, &dir) {
                tracing::warn!(error = %e, "could not remove the side directory of the failed start");
            }
        }
    }
}

/// Shared BSD locks on the store root and the target's store, held while the daemon serves
/// the target: `systemd-tmpfiles --clean` skips a directory it cannot lock, so an aging rule
/// on the volatile directory (`/tmp` is aged after 10 days) never deletes the RAM copy of a
/// long-running mount. Not the store's exclusive `lock` file: any number of daemons share
/// the store root.
pub struct AgingGuard {
    _locks: Vec<nix::fcntl::Flock<std::fs::File>>,
}

/// Locks `p.store_root` and `p.store` against aging. A directory that cannot be locked is
/// only a warning: the mount works, unprotected from tmpfiles.
pub fn guard_from_aging(p: &TargetPaths) -> AgingGuard {
    use nix::fcntl::{Flock, FlockArg};
    use std::os::unix::fs::OpenOptionsExt;
    let mut locks = Vec::new();
    for dir in [&p.store_root, &p.store] {
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .trusted_open(dir);
        let mut f = match opened {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot open the store to guard it from tmpfiles aging");
                continue;
            }
        };
        // tmpfiles holds its exclusive lock only while it looks into the directory.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match Flock::lock(f, FlockArg::LockSharedNonblock) {
                Ok(l) => {
                    locks.push(l);
                    break;
                }
                Err((back, nix::errno::Errno::EWOULDBLOCK))
                    if std::time::Instant::now() < deadline =>
                {
                    f = back;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err((_, e)) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot lock the store to guard it from tmpfiles aging");
                    break;
                }
            }
        }
    }
    AgingGuard { _locks: locks }
}

/// tmpfs, ramfs, or a filesystem on a zram device.
pub fn is_ram_fs(dir: &Path) -> anyhow::Result<bool> {
    let st = nix::sys::statfs::statfs(dir).with_context(|| format!("statfs {}", dir.display()))?;
    let magic = st.filesystem_type().0 as i64;
    if magic == TMPFS_MAGIC || magic == RAMFS_MAGIC {
        return Ok(true);
    }
    let dev = crate::fsx::trusted::metadata(dir)?.dev();
    let zram = mounting::mounts()?.into_iter().any(|m| {
        m.source.starts_with("/dev/zram")
            && crate::fsx::trusted::metadata(&m.mount_point)
                .map(|x| x.dev() == dev)
                .unwrap_or(false)
    });
    Ok(zram)
}

/// Mounts a private tmpfs on `dir`: onto the directory held open, through its
/// `/proc/self/fd` link, never through a path someone could have replaced by a symlink.
fn mount_private_tmpfs(dir: &Dir) -> anyhow::Result<()> {
    use nix::mount::MsFlags;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let at = dir.proc_path();
    nix::mount::mount(Some("asdfs"), &at, Some("tmpfs"), flags, Some("mode=0711")).with_context(
        || {
            format!(
                "{}: is on disk and mounting a tmpfs there failed",
                dir.path().display()
            )
        },
    )?;
    tracing::info!(dir = %dir.path().display(), "mounted a tmpfs for the RAM store");
    Ok(())
}

/// Root: the store's `private/` on a tmpfs of its own, `size=` the RAM limit, so that one
/// target cannot fill the volatile directory or another target's store (design.md §2.1).
/// Mounted once the store's lock is won, onto the directory held open. A tmpfs a daemon
/// that died left there survives it and holds the store to take over: it is kept, resized.
/// A `private/` with files but no tmpfs of its own (a store of an older asdfs) is left as
/// it is rather than hidden under a mount. Users: the daemon's own accounting only.
/// Never larger than the volatile directory's own filesystem, which the user sized.
pub fn limit_private(store: &Dir, limit: u64) -> anyhow::Result<()> {
    use nix::mount::MsFlags;
    if me() != 0 {
        return Ok(());
    }
    let room = crate::store::StoreSpace::of_dir(&store.proc_path()).size;
    let bytes = if room > 0 { limit.min(room) } else { limit };
    let name = OsStr::new("private");
    let private = store.open_in(name)?;
    let flags = inherited_flags(store);
    let opts = format!("size={bytes},mode=0700");
    if fsx::is_mount_point(store, name)? {
        let again = flags | MsFlags::MS_REMOUNT;
        if let Err(e) = nix::mount::mount(
            None::<&str>,
            &private.proc_path(),
            None::<&str>,
            again,
            Some(opts.as_str()),
        ) {
            tracing::warn!(error = %e, size = bytes, "could not resize the store's tmpfs to the RAM limit");
        }
        return Ok(());
    }
    let at = private.proc_path();
    if crate::fsx::trusted::read_dir(&at)?.next().is_some() {
        tracing::info!(store = %store.path().display(), "the store to take over is not on a tmpfs of its own; the RAM limit is kept by the daemon alone");
        return Ok(());
    }
    // Where root may not mount (a container), the daemon's own count keeps the limit.
    let mounted = nix::mount::mount(
        Some(STORE_FS_SOURCE),
        &at,
        Some("tmpfs"),
        flags,
        Some(opts.as_str()),
    );
    if let Err(e) = mounted {
        tracing::warn!(error = %e, store = %store.path().display(), "could not give the store a tmpfs of its own; the RAM limit is kept by the daemon alone");
    }
    Ok(())
}

/// The nosuid, nodev and noexec flags of the filesystem the store is on: the store's own
/// tmpfs serves programs as the volatile directory would (device nodes and whiteouts in an
/// overlay's upper layer, programs run from the target through FUSE passthrough).
fn inherited_flags(store: &Dir) -> nix::mount::MsFlags {
    use nix::mount::MsFlags;
    use nix::sys::statvfs::FsFlags;
    let Ok(v) = nix::sys::statvfs::statvfs(&store.proc_path()) else {
        return MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    };
    let f = v.flags();
    let mut out = MsFlags::empty();
    out.set(MsFlags::MS_NOSUID, f.contains(FsFlags::ST_NOSUID));
    out.set(MsFlags::MS_NODEV, f.contains(FsFlags::ST_NODEV));
    out.set(MsFlags::MS_NOEXEC, f.contains(FsFlags::ST_NOEXEC));
    out
}

/// Unmounts the tmpfs of `limit_private` (its files go with it), if there is one.
pub fn unmount_private(store: &Dir) {
    let name = OsStr::new("private");
    if !fsx::is_mount_point(store, name).unwrap_or(false) {
        return;
    }
    let Ok(private) = store.open_in(name) else {
        return;
    };
    let at = private.proc_path();
    if let Err(e) = nix::mount::umount2(&at, nix::mount::MntFlags::MNT_DETACH) {
        tracing::warn!(error = %e, store = %store.path().display(), "could not unmount the store's tmpfs");
    }
}

/// The side directory beside the target, checked and held open.
pub struct Side {
    /// The directory that holds the target and the side directory.
    pub parent: Dir,
    /// `.NAME-asdfs/`.
    pub dir: Dir,
    /// Whether this start made it.
    pub created: bool,
}

/// Creates the side directory in `parent` (the directory holding the target, which its
/// user controls), or accepts the one there only if it is a real directory of this user
/// that nobody else can write; checks that it is on the same filesystem as the target,
/// whose device is `target_dev` (flushes rename between them). From here on everything in
/// it is reached through the returned descriptor.
pub fn prepare_side(p: &TargetPaths, parent: Dir, target_dev: u64) -> anyhow::Result<Side> {
    let name = p.side.file_name().unwrap_or_default();
    let (dir, created) = fsx::mkdir_private(&parent, name, 0o711, me())?;
    if dir.stat()?.st_dev != target_dev {
        if created {
            let _ = fsx::rmdir(&parent, name);
        }
        bail!(
            "{}: is a mount point of its own; asdfs needs {} on the same filesystem to replace files atomically",
            p.target.display(),
            parent.path().display()
        );
    }
    Ok(Side {
        parent,
        dir,
        created,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_root_names_are_asdfs_or_a_random_suffix() {
        for ok in ["asdfs", "asdfs.0a1b2c3d"] {
            assert!(is_store_root_name(OsStr::new(ok)), "{ok}");
        }
        for bad in [
            "asdfs.",
            "asdfs.ABCDEFGH",
            "asdfs.0a1b2c3",
            "asdfs.0a1b2c3d4",
            "xasdfs",
        ] {
            assert!(!is_store_root_name(OsStr::new(bad)), "{bad}");
        }
        let s = random_suffix();
        assert!(is_store_root_name(OsStr::new(&format!("asdfs.{s}"))), "{s}");
        assert_ne!(s, random_suffix());
    }

    #[test]
    fn keys_are_readable_and_distinct() {
        assert!(store_key(Path::new("/var/lib/monitorix")).starts_with("var-lib-monitorix."));
        assert_ne!(
            store_key(Path::new("/a/b-c")),
            store_key(Path::new("/a-b/c"))
        );
    }

    #[test]
    fn side_dir_is_beside_the_target() {
        assert_eq!(
            side_dir(Path::new("/var/log")),
            PathBuf::from("/var/.log-asdfs")
        );
        assert_eq!(side_dir(Path::new("/srv")), PathBuf::from("/.srv-asdfs"));
    }
}
