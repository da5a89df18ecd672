//! Crash snapshots: made, unpacked, restored, listed, cleaned, limited.
//!
//! A tree with every kind of object and attribute asdfs keeps is snapshotted from an `O_PATH`
//! descriptor, then unpacked by GNU tar (asd's recipe) and by `restore`, and both results are
//! compared with the original, attribute by attribute.

use crate::common;
use crate::harness;
use asdfs::cli::snapshots::{SnapshotsCmd, run};
use asdfs::snapshot::{self, SnapshotInfo};
use nix::fcntl::OFlag;
use nix::sys::stat::{Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const BIG: u64 = 20 << 20;
const LONG_DIR: &str =
    "a-directory-name-that-is-quite-long-to-push-member-names-past-the-ustar-limit";

// ---------------------------------------------------------------------------------------
// The tree

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("running a command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn chown(p: &Path, id: u32) {
    std::os::unix::fs::lchown(p, Some(id), Some(id)).unwrap();
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn setxattr(p: &Path, name: &str, value: &[u8]) {
    let (p, n) = (cstr(p.as_os_str()), cstr(OsStr::new(name)));
    // SAFETY: all pointers are valid for the lengths passed; strings are NUL-terminated.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr {name}: {}", std::io::Error::last_os_error());
}

fn cstr(s: &OsStr) -> CString {
    CString::new(s.as_bytes()).unwrap()
}

/// `<dir>/bar` with files (empty, small, large and sparse, long-named, not UTF-8), nested
/// directories, symlinks (one dangling, one with a long target), a hard-link pair, a fifo, a
/// device, a socket (not archivable), modes 0600/4755/2755/1777, owner 1000 on some, user
/// xattrs, access and default ACLs and nanosecond mtimes everywhere.
fn build_tree(dir: &Path) -> PathBuf {
    let bar = dir.join("bar");
    let long = bar.join(LONG_DIR).join(LONG_DIR);
    for d in [
        bar.join("sub/deeper"),
        bar.join("tmp"),
        bar.join("sgid"),
        long.clone(),
    ] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(bar.join("a.txt"), "hello\n").unwrap();
    std::fs::write(bar.join("empty"), "").unwrap();
    std::fs::write(bar.join("sub/deeper/empty2"), "").unwrap();
    std::fs::write(long.join("file-with-a-long-path"), "long").unwrap();
    std::fs::write(bar.join(OsStr::from_bytes(b"caf\xe9")), "latin-1 name").unwrap();
    let big = std::fs::File::create(bar.join("big")).unwrap();
    big.set_len(BIG).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&big, b"in the middle", 5 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&big, b"end", BIG - 3).unwrap();
    std::fs::write(bar.join("secret"), "only 1000").unwrap();
    chown(&bar.join("secret"), 1000);
    chmod(&bar.join("secret"), 0o600);
    std::fs::write(bar.join("suid"), "#!/bin/sh\n").unwrap();
    chmod(&bar.join("suid"), 0o4755);
    chmod(&bar.join("tmp"), 0o1777);
    chmod(&bar.join("sgid"), 0o2755);
    chown(&bar.join("sub"), 1000);
    symlink("a.txt", bar.join("link")).unwrap();
    chown(&bar.join("link"), 1000);
    symlink("/nonexistent/target", bar.join("dangling")).unwrap();
    symlink(
        format!("{LONG_DIR}/{LONG_DIR}/file-with-a-long-path"),
        bar.join("longlink"),
    )
    .unwrap();
    std::fs::write(bar.join("h1"), "linked twice").unwrap();
    std::fs::hard_link(bar.join("h1"), bar.join("sub/h2")).unwrap();
    nix::unistd::mkfifo(&bar.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
    let null = nix::sys::stat::makedev(1, 3);
    nix::sys::stat::mknod(
        &bar.join("null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        null,
    )
    .unwrap();
    std::os::unix::net::UnixListener::bind(bar.join("sock")).unwrap();
    setxattr(&bar.join("a.txt"), "user.colour", b"blue");
    setxattr(&bar.join("sub"), "user.binary", &[0, 1, 2, 255]);
    setxattr(&bar, "user.top", b"yes");
    run_ok(
        Command::new("setfacl")
            .arg("-m")
            .arg("u:1234:rw")
            .arg(bar.join("a.txt")),
    );
    run_ok(
        Command::new("setfacl")
            .args(["-d", "-m", "u:1234:rx"])
            .arg(bar.join("sub")),
    );
    set_times(&bar);
    bar
}

/// Every object under `root` (children before parents) gets a distinct mtime with nanoseconds.
fn set_times(root: &Path) {
    let mut all = all_paths(root);
    all.sort();
    all.reverse();
    for (i, p) in all.iter().enumerate() {
        let t = TimeSpec::new(1_600_000_000 + i as i64 * 1000, 123_456_789 + i as i64);
        let flags = UtimensatFlags::NoFollowSymlink;
        nix::sys::stat::utimensat(nix::fcntl::AT_FDCWD, p, &t, &t, flags).unwrap();
    }
}

fn all_paths(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        if p.symlink_metadata().unwrap().is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                out.push(e.unwrap().path());
            }
        }
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------
// Describing a tree

/// What must survive a snapshot, per object.
#[derive(Debug, PartialEq, Eq)]
struct Obj {
    kind: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    rdev: u64,
    content: Option<Vec<u8>>,
    link: Option<PathBuf>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Every object under `root` by relative path, and the groups of paths that share an inode.
fn describe(root: &Path) -> (BTreeMap<PathBuf, Obj>, Vec<Vec<PathBuf>>) {
    let mut objs = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    for p in all_paths(root) {
        let m = p.symlink_metadata().unwrap();
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        let kind = m.mode() & libc::S_IFMT;
        if kind == libc::S_IFSOCK {
            continue; // not archivable; checked separately
        }
        if !m.is_dir() && m.nlink() > 1 {
            inodes.entry(m.ino()).or_default().push(rel.clone());
        }
        let obj = Obj {
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            mtime: (m.mtime(), m.mtime_nsec()),
            rdev: m.rdev(),
            content: m.is_file().then(|| std::fs::read(&p).unwrap()),
            link: m.is_symlink().then(|| std::fs::read_link(&p).unwrap()),
            xattrs: xattrs(&p),
        };
        objs.insert(rel, obj);
    }
    let mut groups: Vec<Vec<PathBuf>> = inodes.into_values().collect();
    groups.iter_mut().for_each(|g| g.sort());
    groups.sort();
    (objs, groups)
}

fn xattrs(p: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let c = cstr(p.as_os_str());
    let mut buf = vec![0u8; 65536];
    // SAFETY: buf is valid for its length; c is NUL-terminated.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "listxattr {}", p.display());
    let mut out = BTreeMap::new();
    for name in buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
    {
        let cn = CString::new(name).unwrap();
        let mut v = vec![0u8; 65536];
        // SAFETY: v is valid for its length; both strings are NUL-terminated.
        let len =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        assert!(len >= 0, "getxattr {}", p.display());
        v.truncate(len as usize);
        out.insert(name.to_vec(), v);
    }
    out
}

/// Asserts that `got` holds the same tree as `want` (sockets aside).
fn assert_same_tree(want: &Path, got: &Path) {
    let (w, wl) = describe(want);
    let (g, gl) = describe(got);
    for (rel, obj) in &w {
        assert_eq!(g.get(rel), Some(obj), "{} differs", rel.display());
    }
    let extra: Vec<_> = g.keys().filter(|k| !w.contains_key(*k)).collect();
    assert!(extra.is_empty(), "unexpected: {extra:?}");
    assert_eq!(wl, gl, "hard links");
    assert_eq!(wl, vec![vec![PathBuf::from("h1"), PathBuf::from("sub/h2")]]);
    assert!(!got.join("sock").exists(), "a socket was restored");
}

// ---------------------------------------------------------------------------------------
// Helpers

fn open_path(p: &Path) -> OwnedFd {
    nix::fcntl::open(p, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty()).unwrap()
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Snapshots `bar` into its parent; returns the snapshot and every progress report.
fn snapshot_of(bar: &Path) -> (SnapshotInfo, Vec<(u64, u64)>) {
    let fd = open_path(bar);
    let dest = snapshot::snapshot_path(bar, at(1_700_000_000));
    let mut reports = Vec::new();
    let info = snapshot::create(fd.as_fd(), OsStr::new("bar"), &dest, &mut |d, t| {
        reports.push((d, t))
    })
    .unwrap();
    (info, reports)
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------
// Creating, and unpacking with GNU tar

#[test]
fn gnu_tar_unpacks_a_snapshot_into_the_target_name_with_everything_kept() {
    let tmp = common::scratch();
    let bar = build_tree(tmp.path());
    let (info, _) = snapshot_of(&bar);
    assert_eq!(info.target, bar);
    assert_eq!(std::fs::metadata(&info.path).unwrap().len(), info.size);
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    run_ok(
        Command::new("tar")
            .args(["--zstd", "--xattrs", "--xattrs-include=*", "-xpf"])
            .arg(&info.path)
            .arg("-C")
            .arg(&out),
    );
    assert_eq!(
        names_in(&out),
        vec!["bar"],
        "asd's recipe must recreate bar/"
    );
    assert_same_tree(&bar, &out.join("bar"));
}

#[test]
fn create_reports_progress_and_leaves_only_a_private_snapshot() {
    let tmp = common::scratch();
    let bar = build_tree(tmp.path());
    let (info, reports) = snapshot_of(&bar);
    let mut want_total = 0;
    let mut seen = std::collections::HashSet::new();
    for p in all_paths(&bar) {
        let m = p.symlink_metadata().unwrap();
        if m.is_file() && seen.insert(m.ino()) {
            want_total += m.len();
        }
    }
    assert_eq!(reports.first(), Some(&(0, want_total)));
    assert_eq!(reports.last(), Some(&(want_total, want_total)));
    assert!(
        reports.len() >= 4,
        "a 20 MiB file gives intermediate reports: {reports:?}"
    );
    assert!(reports.windows(2).all(|w| w[0].0 <= w[1].0));
    let mode = std::fs::metadata(&info.path).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let name = info
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(names_in(tmp.path()), vec![name, "bar".to_string()]);
}

// ---------------------------------------------------------------------------------------
// Restoring

/// A restore that keeps device nodes and setuid/setgid bits (the tree has both); the
/// snapshots here are root's.
fn restore_trusting(
    snapshot: &Path,
    to: &Path,
    force: bool,
) -> anyhow::Result<asdfs::snapshot::RestoreReport> {
    let opts = snapshot::RestoreOptions {
        force,
        keep_special: true,
    };
    snapshot::restore_with(snapshot, to, opts, &mut |_, _| {})
}

#[test]
fn restore_without_trust_drops_devices_and_setid_bits() {
    let tmp = common::scratch();
    let bar = build_tree(tmp.path());
    let (info, _) = snapshot_of(&bar);
    let to = tmp.path().join("plain");
    snapshot::restore(&info.path, &to, false, &mut |_, _| {}).unwrap();
    assert!(std::fs::symlink_metadata(to.join("null")).is_err());
    for f in ["suid", "sgid"] {
        let m = std::fs::symlink_metadata(to.join(f)).unwrap();
        assert_eq!(m.permissions().mode() & 0o6000, 0, "{f}");
    }
}

#[test]
fn restore_to_a_new_place_gives_the_same_tree() {
    let tmp = common::scratch();
    let bar = build_tree(tmp.path());
    let (info, _) = snapshot_of(&bar);
    let to = tmp.path().join("elsewhere/bar2");
    std::fs::create_dir(tmp.path().join("elsewhere")).unwrap();
    let r = restore_trusting(&info.path, &to, false).unwrap();
    assert_eq!(r.restored_to, to);
    assert_eq!(r.kept_old, None);
    assert_eq!(r.bytes, BIG + 6 + 4 + 12 + 9 + 10 + 12);
    assert_same_tree(&bar, &to);
    assert_eq!(names_in(&tmp.path().join("elsewhere")), vec!["bar2"]);
}

#[test]
fn restore_refuses_a_non_empty_place_and_force_keeps_it_aside() {
    let tmp = common::scratch();
    let bar = build_tree(tmp.path());
    let (info, _) = snapshot_of(&bar);
    let to = tmp.path().join("busy");
    std::fs::create_dir(&to).unwrap();
    std::fs::write(to.join("mine"), "user data").unwrap();
    let err = snapshot::restore(&info.path, &to, false, &mut |_, _| {}).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!("{} exists and is not empty", to.display())),
        "{msg}"
    );
    assert!(msg.contains("--force"), "{msg}");
    assert_eq!(names_in(&to), vec!["mine"]);
    let r = restore_trusting(&info.path, &to, true).unwrap();
    let kept = r.kept_old.expect("the old content is kept");
    let kept_name = kept.file_name().unwrap().to_string_lossy().into_owned();
    assert!(kept_name.starts_with("busy.before-restore-"), "{kept_name}");
    assert_eq!(
        std::fs::read_to_string(kept.join("mine")).unwrap(),
        "user data"
    );
    assert_same_tree(&bar, &to);
}

#[test]
fn restore_replaces_an_empty_directory() {
    let tmp = common::scratch();
    let bar = build_tree(tmp.path());
    let (info, _) = snapshot_of(&bar);
    let to = tmp.path().join("empty");
    std::fs::create_dir(&to).unwrap();
    let r = restore_trusting(&info.path, &to, false).unwrap();
    assert_eq!(r.kept_old, None);
    assert_same_tree(&bar, &to);
}

/// An archive built member by member, names written raw (the tar crate refuses `..`).
fn evil_archive(path: &Path, members: &[(&str, tar::EntryType, &str)]) {
    let mut b = tar::Builder::new(Vec::new());
    for (name, ty, link) in members {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(*ty);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        let data: &[u8] = if *ty == tar::EntryType::Regular {
            b"pwned"
        } else {
            b""
        };
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    let tar = b.into_inner().unwrap();
    std::fs::write(path, zstd::encode_all(&tar[..], 0).unwrap()).unwrap();
}

#[test]
fn restore_refuses_members_that_leave_the_tree() {
    use tar::EntryType::{Directory, Link, Regular, Symlink};
    let tmp = common::scratch();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("victim"), "safe").unwrap();
    let out = outside.to_str().unwrap();
    // (what, members, a part of the error that says why)
    type Case<'a> = (&'a str, Vec<(&'a str, tar::EntryType, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "dotdot",
            vec![
                ("bar/", Directory, ""),
                ("bar/ok", Regular, ""),
                ("bar/../evil", Regular, ""),
            ],
            "`..`",
        ),
        (
            "inner dotdot",
            vec![
                ("bar/", Directory, ""),
                ("bar/d/", Directory, ""),
                ("bar/d/../x", Regular, ""),
            ],
            "`..`",
        ),
        (
            "absolute",
            vec![
                ("bar/", Directory, ""),
                ("/tmp/asdfs-evil-abs", Regular, ""),
            ],
            "absolute",
        ),
        (
            "hardlink",
            vec![
                ("bar/", Directory, ""),
                ("bar/hl", Link, "bar/../outside/victim"),
            ],
            "`..`",
        ),
        (
            "abs hardlink",
            vec![("bar/", Directory, ""), ("bar/hl", Link, "/etc/passwd")],
            "absolute",
        ),
        (
            "symlink",
            vec![
                ("bar/", Directory, ""),
                ("bar/esc", Symlink, out),
                ("bar/esc/planted", Regular, ""),
            ],
            "member bar/esc/planted: Not a directory",
        ),
        (
            "two tops",
            vec![("bar/x", Regular, ""), ("other/y", Regular, "")],
            "more than one top-level",
        ),
    ];
    for (what, members, why) in cases {
        let snap = tmp
            .path()
            .join(".bar-backup_asd-crashrecovery-20240101_000000.tar.zstd");
        evil_archive(&snap, &members);
        let to = tmp.path().join("dest");
        let r = snapshot::restore(&snap, &to, false, &mut |_, _| {});
        let msg = format!("{:#}", r.expect_err(what));
        assert!(msg.contains(why), "{what}: {msg}");
        assert!(!to.exists(), "{what}: destination created");
        assert_eq!(names_in(&outside), vec!["victim"], "{what}");
        assert_eq!(
            std::fs::read_to_string(outside.join("victim")).unwrap(),
            "safe"
        );
        assert!(!tmp.path().join("evil").exists(), "{what}");
        assert!(!Path::new("/tmp/asdfs-evil-abs").exists(), "{what}");
        let left = names_in(tmp.path());
        assert!(
            left.iter().all(|n| !n.contains(".restore-")),
            "{what}: {left:?}"
        );
    }
}

#[test]
fn restore_takes_asds_own_tarball_with_its_backup_dir_name() {
    let tmp = common::scratch();
    let old = tmp.path().join(".bar-backup_asd-old");
    std::fs::create_dir_all(old.join("d")).unwrap();
    std::fs::write(old.join("d/f"), "from asd").unwrap();
    let snap = tmp
        .path()
        .join(".bar-backup_asd-crashrecovery-20240101_000000.tar.zstd");
    run_ok(
        Command::new("tar")
            .arg("--zstd")
            .arg("-cf")
            .arg(&snap)
            .arg("-C")
            .arg(tmp.path())
            .arg(".bar-backup_asd-old"),
    );
    let to = tmp.path().join("bar");
    snapshot::restore(&snap, &to, false, &mut |_, _| {}).unwrap();
    assert_eq!(std::fs::read_to_string(to.join("d/f")).unwrap(), "from asd");
}

#[test]
fn restore_refuses_a_mounted_target() {
    if !harness::fuse_available() {
        return;
    }
    let m = harness::Mount::with(|t| std::fs::write(t.join("f"), "live").unwrap());
    let src = common::scratch();
    let bar = src.path().join("bar");
    std::fs::create_dir(&bar).unwrap();
    let (info, _) = snapshot_of(&bar);
    for force in [false, true] {
        let err = snapshot::restore(&info.path, &m.target, force, &mut |_, _| {}).unwrap_err();
        assert!(format!("{err:#}").contains("mounted"), "{err:#}");
    }
    assert_eq!(std::fs::read_to_string(m.path("f")).unwrap(), "live");
}

// ---------------------------------------------------------------------------------------
// The commands, limits and cleaning

#[test]
fn restore_command_puts_the_target_back_in_place() {
    let tmp = common::scratch();
    let bar = build_tree(tmp.path());
    let (info, _) = snapshot_of(&bar);
    let lost = tmp.path().join("lost");
    std::fs::rename(&bar, &lost).unwrap();
    let cmd = SnapshotsCmd::Restore {
        snapshot: info.path.clone(),
        to: None,
        force: false,
        keep_special: true,
    };
    assert_eq!(run(cmd).unwrap(), 0);
    assert_same_tree(&lost, &bar);
    let again = SnapshotsCmd::Restore {
        snapshot: info.path,
        to: None,
        force: false,
        keep_special: false,
    };
    let err = run(again).unwrap_err();
    assert!(
        format!("{err:#}").contains("exists and is not empty"),
        "{err:#}"
    );
}

#[test]
fn limit_removes_exactly_the_oldest() {
    let tmp = common::scratch();
    let target = tmp.path().join("bar");
    let mut made = Vec::new();
    for i in 0..7u64 {
        let p = snapshot::snapshot_path(&target, at(1_700_000_000 + i * 3600));
        std::fs::write(&p, format!("snapshot {i}")).unwrap();
        made.push(p);
    }
    let listed: Vec<PathBuf> = snapshot::list(&target)
        .unwrap()
        .into_iter()
        .map(|i| i.path)
        .collect();
    let newest_first: Vec<PathBuf> = made.iter().rev().cloned().collect();
    assert_eq!(listed, newest_first);
    let mut deleted = snapshot::enforce_limit(&target, 5).unwrap();
    deleted.sort();
    assert_eq!(deleted, made[..2].to_vec());
    assert!(made[..2].iter().all(|p| !p.exists()));
    assert!(made[2..].iter().all(|p| p.exists()));
}

#[test]
fn clean_removes_only_that_targets_snapshots() {
    let tmp = common::scratch();
    let x = tmp.path();
    let when = at(1_700_000_000);
    let mine = [
        snapshot::snapshot_path(&x.join("bar"), when),
        snapshot::snapshot_path(&x.join("bar"), at(1)),
    ];
    for p in &mine {
        std::fs::write(p, "mine").unwrap();
    }
    let other = snapshot::snapshot_path(&x.join("barbaz"), when);
    std::fs::write(&other, "other").unwrap();
    std::fs::create_dir(x.join(".bar-backup_asd-old")).unwrap();
    std::fs::write(x.join(".bar-backup_asd-old/keep"), "hardlink backup").unwrap();
    std::fs::create_dir(x.join("bar")).unwrap();
    let list = SnapshotsCmd::List {
        target: Some(x.join("bar")),
        json: true,
    };
    assert_eq!(run(list).unwrap(), 0);
    assert_eq!(
        run(SnapshotsCmd::Clean {
            target: Some(x.join("bar"))
        })
        .unwrap(),
        0
    );
    assert!(mine.iter().all(|p| !p.exists()));
    assert!(other.exists());
    assert!(x.join(".bar-backup_asd-old/keep").exists());
    assert_eq!(
        run(SnapshotsCmd::Clean {
            target: Some(x.join("bar"))
        })
        .unwrap(),
        0
    );
}

// ---------------------------------------------------------------------------------------
// Failure

/// A tiny tmpfs, lazily unmounted when dropped.
struct TinyFs(PathBuf);

impl TinyFs {
    fn mount(at: &Path) -> TinyFs {
        std::fs::create_dir(at).unwrap();
        let flags = nix::mount::MsFlags::empty();
        nix::mount::mount(Some("tmpfs"), at, Some("tmpfs"), flags, Some("size=64k"))
            .expect("mounting a 64k tmpfs (the test runs as root)");
        TinyFs(at.to_path_buf())
    }
}

impl Drop for TinyFs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_snapshot_that_does_not_fit_fails_and_leaves_nothing() {
    let tmp = common::scratch();
    let bar = tmp.path().join("bar");
    std::fs::create_dir(&bar).unwrap();
    let mut noise = vec![0u8; 1 << 20];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").unwrap(),
        &mut noise,
    )
    .unwrap();
    std::fs::write(bar.join("noise"), &noise).unwrap();
    let full = TinyFs::mount(&tmp.path().join("full"));
    let dest = snapshot::snapshot_path(&full.0.join("bar"), at(1_700_000_000));
    let fd = open_path(&bar);
    let err = snapshot::create(fd.as_fd(), OsStr::new("bar"), &dest, &mut |_, _| {}).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(&dest.display().to_string()), "{msg}");
    assert!(
        names_in(&full.0).is_empty(),
        "left behind: {:?}",
        names_in(&full.0)
    );
}

#[test]
fn snapshots_command_line_parses() {
    use clap::{CommandFactory, Parser};
    #[derive(Parser, Debug)]
    struct W {
        #[command(subcommand)]
        cmd: SnapshotsCmd,
    }
    W::command().debug_assert();
    let w = W::try_parse_from(["x", "restore", "/s", "--to", "/d", "--force"]).unwrap();
    match w.cmd {
        SnapshotsCmd::Restore {
            snapshot,
            to,
            force,
            keep_special: false,
        } => {
            assert_eq!(
                (snapshot, to, force),
                ("/s".into(), Some("/d".into()), true)
            );
        }
        other => panic!("{other:?}"),
    }
    let w = W::try_parse_from(["x", "list", "--json"]).unwrap();
    assert!(matches!(
        w.cmd,
        SnapshotsCmd::List {
            target: None,
            json: true
        }
    ));
    let bad = SnapshotsCmd::Restore {
        snapshot: "/x/not-a-snapshot.tar".into(),
        to: None,
        force: false,
        keep_special: false,
    };
    let err = format!("{:#}", run(bad).unwrap_err());
    assert!(
        err.contains("/x/not-a-snapshot.tar") && err.contains("--to"),
        "{err}"
    );
}
