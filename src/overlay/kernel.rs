//! Kernel overlayfs through the new mount API: a layer set mounted detached, then attached
//! on top of the target or beneath the overlay already there (so that replacing one overlay
//! by another is atomic for path lookups), and the lower directory pinned by a private bind
//! mount in the store (so that a daemon taking over finds the disk copy under the overlay).

use anyhow::{Context, bail};
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags,
};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// The options every asdfs overlay uses. `redirect_dir=off`: renaming a directory that
/// comes from the disk fails with EXDEV (programs such as mv then copy), so no layer ever
/// refers to another by path. `index=off`, `metacopy=off`: every copied-up file is whole in
/// the upper layer, so the upper layer alone says what changed.
const FIXED_OPTIONS: [(&str, &str); 4] = [
    ("redirect_dir", "off"),
    ("index", "off"),
    ("metacopy", "off"),
    ("xino", "off"),
];

/// Why overlay mode cannot be used here, if it cannot.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("overlay mode needs root".into());
    }
    let listed = |fs: &str| {
        crate::fsx::trusted::read_to_string("/proc/filesystems")
            .map(|t| t.lines().any(|l| l.split_whitespace().last() == Some(fs)))
            .unwrap_or(false)
    };
    if !listed("overlay") {
        let _ = std::process::Command::new("modprobe")
            .arg("overlay")
            .stderr(std::process::Stdio::null())
            .status();
        if !listed("overlay") {
            return Some("this kernel has no overlayfs".into());
        }
    }
    None
}

/// Creates an overlay of the read-only `lowers` (topmost first) under `upper` (with its
/// `work` directory, on the same filesystem), not attached anywhere yet.
pub fn create(lowers: &[&Path], upper: &Path, work: &Path) -> anyhow::Result<OwnedFd> {
    let fs =
        rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).context("fsopen(overlay)")?;
    let set = |key: &str, value: &Path| {
        rustix::mount::fsconfig_set_string(fs.as_fd(), key, value)
            .map_err(|e| explain(&fs, e))
            .with_context(|| format!("overlay option {key}={}", value.display()))
    };
    rustix::mount::fsconfig_set_string(
        fs.as_fd(),
        "source",
        crate::daemon::mounting::OVERLAY_SOURCE,
    )
    .map_err(|e| explain(&fs, e))
    .context("overlay source")?;
    for lower in lowers {
        set("lowerdir+", lower)?;
    }
    set("upperdir", upper)?;
    set("workdir", work)?;
    for (k, v) in FIXED_OPTIONS {
        rustix::mount::fsconfig_set_string(fs.as_fd(), k, v)
            .map_err(|e| explain(&fs, e))
            .with_context(|| format!("overlay option {k}={v}"))?;
    }
    rustix::mount::fsconfig_create(fs.as_fd())
        .map_err(|e| explain(&fs, e))
        .context("creating the overlay")?;
    rustix::mount::fsmount(
        fs.as_fd(),
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::empty(),
    )
    .map_err(|e| explain(&fs, e))
    .context("mounting the overlay")
}

/// An errno with the messages the kernel left on the filesystem context, if any.
fn explain(fs: &OwnedFd, e: rustix::io::Errno) -> anyhow::Error {
    let mut lines = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = rustix::io::read(fs, &mut buf) {
        if n == 0 {
            break;
        }
        lines.push(String::from_utf8_lossy(&buf[..n]).trim().to_string());
    }
    match lines.is_empty() {
        true => anyhow::Error::new(std::io::Error::from(e)),
        false => anyhow::anyhow!("{} ({})", std::io::Error::from(e), lines.join("; ")),
    }
}

/// The top mount at `target` (a canonical path), opened with no symlink in any component:
/// a target's parent is often its owner's, who could rename it and leave a symlink.
fn open_top(target: &Path) -> std::io::Result<OwnedFd> {
    rustix::fs::openat2(
        rustix::fs::CWD,
        target,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
        rustix::fs::ResolveFlags::NO_SYMLINKS | rustix::fs::ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(std::io::Error::from)
}

/// The top mount at `target`, which must be the mount with id `expect` when given. If it is
/// not there (its owner renamed a directory above it), it is looked up by its id in the
/// mount table and opened where it now is, the same way; a mount that is not the expected
/// one is an error, never acted on (docs/security.md R1, R4).
fn open_expected(target: &Path, expect: Option<u64>) -> std::io::Result<OwnedFd> {
    let Some(id) = expect else {
        return open_top(target);
    };
    if let Ok(top) = open_top(target) {
        if mount_id(&top)? == id {
            return Ok(top);
        }
    }
    let moved = crate::daemon::mounting::mounts()
        .map_err(std::io::Error::other)?
        .into_iter()
        .find(|m| m.id == id);
    if let Some(m) = moved {
        let top = open_top(&m.mount_point)?;
        if mount_id(&top)? == id {
            tracing::warn!(target = %target.display(), now = %m.mount_point.display(), "the overlay was moved with a directory above it; acting on it where it is");
            return Ok(top);
        }
    }
    Err(std::io::Error::other(format!(
        "{}: the mount there is not asdfs's overlay any more (moved or covered); left alone",
        target.display()
    )))
}

/// Attaches a detached mount on `target`: on top, or beneath the mount already on top,
/// which must be the one with id `expect_top` when given (docs/security.md R1, R4).
pub fn attach(
    mnt: &OwnedFd,
    target: &Path,
    beneath: bool,
    expect_top: Option<u64>,
) -> anyhow::Result<()> {
    let mut flags =
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH;
    if beneath {
        flags |= MoveMountFlags::MOVE_MOUNT_BENEATH;
    }
    let attached = open_expected(target, expect_top).and_then(|top| {
        rustix::mount::move_mount(mnt.as_fd(), "", top.as_fd(), "", flags)
            .map_err(std::io::Error::from)
    });
    attached.with_context(|| format!("attaching the overlay at {}", target.display()))
}

/// Pins the directory `dir` (a descriptor opened before anything covered it) at `at` with a
/// private bind mount.
pub fn pin(dir: &OwnedFd, at: &Path) -> anyhow::Result<()> {
    let tree = rustix::mount::open_tree(
        dir.as_fd(),
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .map_err(std::io::Error::from)
    .context("cloning the disk directory's mount")?;
    rustix::mount::move_mount(
        tree.as_fd(),
        "",
        rustix::fs::CWD,
        at,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(std::io::Error::from)
    .with_context(|| format!("pinning the disk directory at {}", at.display()))?;
    let private = rustix::mount::MountPropagationFlags::PRIVATE;
    rustix::mount::mount_change(at, private).map_err(std::io::Error::from)?;
    Ok(())
}

/// Detaches the mount on top of `path` (a canonical path, resolved with no symlink), which
/// must be the one with id `expect` when given; with `lazy`, even while files in it are open.
pub fn detach(path: &Path, lazy: bool, expect: Option<u64>) -> std::io::Result<()> {
    let flags = if lazy {
        UnmountFlags::DETACH
    } else {
        UnmountFlags::empty()
    };
    let top = open_expected(path, expect)?;
    let at = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&top));
    rustix::mount::unmount(at.as_str(), flags).map_err(std::io::Error::from)
}

/// The mount id of the mount `fd` is on (statx's `stx_mnt_id`).
pub fn mount_id(fd: &impl AsFd) -> std::io::Result<u64> {
    let st = rustix::fs::statx(
        fd,
        "",
        rustix::fs::AtFlags::EMPTY_PATH,
        rustix::fs::StatxFlags::MNT_ID,
    )?;
    Ok(st.stx_mnt_id)
}

/// The mount id of what `path` names, following symlinks (for `/proc/PID/fd/N`).
pub fn mount_id_of(path: &Path) -> std::io::Result<(u64, libc::mode_t, u64, u64)> {
    let st = rustix::fs::statx(
        rustix::fs::CWD,
        path,
        rustix::fs::AtFlags::empty(),
        rustix::fs::StatxFlags::MNT_ID | rustix::fs::StatxFlags::BASIC_STATS,
    )?;
    let dev = libc::makedev(st.stx_dev_major, st.stx_dev_minor);
    Ok((st.stx_mnt_id, st.stx_mode as libc::mode_t, dev, st.stx_ino))
}

/// Fails unless `path` is a directory on the same filesystem as `other`.
pub fn same_fs(path: &Path, other: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let a = crate::fsx::trusted::metadata(path)?.dev();
    let b = crate::fsx::trusted::metadata(other)?.dev();
    if a != b {
        bail!(
            "{} and {} are on different filesystems",
            path.display(),
            other.display()
        );
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests set up files as a user would
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Unmounts what it names when dropped (lazily, top first).
    struct Unmount(Vec<std::path::PathBuf>);
    impl Drop for Unmount {
        fn drop(&mut self) {
            for p in &self.0 {
                while detach(p, true, None).is_ok() {}
            }
        }
    }

    #[test]
    fn overlay_swaps_beneath_and_keeps_what_the_kernel_promises() {
        if let Some(why) = unavailable() {
            assert!(std::env::var_os("CI").is_none(), "{why}");
            eprintln!("skipping: {why}");
            return;
        }
        let disk = tempfile::tempdir_in("/tmp").unwrap();
        let ram = tempfile::tempdir_in("/dev/shm").unwrap();
        let t = disk.path().join("t");
        std::fs::create_dir_all(t.join("d")).unwrap();
        std::fs::write(t.join("d/old"), b"old").unwrap();
        let dir = nix::fcntl::open(
            disk.path(),
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .unwrap();
        let pinned = ram.path().join("lower");
        std::fs::create_dir(&pinned).unwrap();
        let _g = Unmount(vec![t.clone(), pinned.clone()]);
        pin(&dir, &pinned).unwrap();
        for d in ["u1", "w1", "u2", "w2"] {
            std::fs::create_dir(ram.path().join(d)).unwrap();
        }
        let o1 = create(
            &[&pinned.join("t")],
            &ram.path().join("u1"),
            &ram.path().join("w1"),
        )
        .unwrap();
        attach(&o1, &t, false, None).unwrap();
        std::fs::write(t.join("d/new"), b"new").unwrap();
        // A directory from disk cannot be renamed (redirect_dir=off).
        let e = std::fs::rename(t.join("d"), t.join("e")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EXDEV));
        // A new upper file placed on the lower layer: deleting it through the overlay then
        // leaves a whiteout (the kernel looks at the lower layer again).
        std::fs::write(pinned.join("t/d/new"), b"new").unwrap();
        std::fs::remove_file(t.join("d/new")).unwrap();
        let wh = std::fs::symlink_metadata(ram.path().join("u1/d/new")).unwrap();
        assert_eq!((wh.mode() & libc::S_IFMT, wh.rdev()), (libc::S_IFCHR, 0));
        // Stat of an upper file through the overlay gives the upper file's inode number.
        std::fs::write(t.join("up"), b"x").unwrap();
        let via = std::fs::metadata(t.join("up")).unwrap();
        let real = std::fs::metadata(ram.path().join("u1/up")).unwrap();
        assert_eq!(via.ino(), real.ino());
        // A second overlay beneath, with the first upper layer as a middle layer, then the
        // top one detached: the path shows the second, with what the first upper held.
        let o2 = create(
            &[&ram.path().join("u1"), &pinned.join("t")],
            &ram.path().join("u2"),
            &ram.path().join("w2"),
        )
        .unwrap();
        attach(&o2, &t, true, None).unwrap();
        detach(&t, true, None).unwrap();
        assert_eq!(std::fs::read(t.join("up")).unwrap(), b"x");
        assert!(
            !t.join("d/new").exists(),
            "the whiteout of the middle layer hides the disk's"
        );
        assert!(
            std::fs::read_dir(ram.path().join("u2"))
                .unwrap()
                .next()
                .is_none()
        );
        assert_eq!(std::fs::read(t.join("d/old")).unwrap(), b"old");
        assert!(mount_id(&o2).unwrap() > 0);
    }
}
