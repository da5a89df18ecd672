//! Attacks: snapshots (see attack.rs). A crash snapshot lies beside its target, where the
//! target's owner may put any archive: restoring one as root must not reach outside the
//! restored tree, make device nodes or setuid files, nor take an archive someone else owns.

use super::*;
use crate::harness::asdfs;
use tar::EntryType;

/// One archive member: name, type, symlink target, mode, (major, minor).
type Member<'a> = (&'a str, EntryType, &'a str, u32, (u32, u32));

/// A crash snapshot of `t` in `dir` with these members (uid and gid 0), owned by `owner`.
fn archive(dir: &Path, members: &[Member<'_>], owner: u32) -> PathBuf {
    let mut b = tar::Builder::new(Vec::new());
    for (name, ty, link, mode, (major, minor)) in members {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        if !link.is_empty() {
            h.set_link_name(link).unwrap();
        }
        h.set_entry_type(*ty);
        h.set_mode(*mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_device_major(*major).unwrap();
        h.set_device_minor(*minor).unwrap();
        let data: &[u8] = if *ty == EntryType::Regular {
            b"#!/bin/sh\nid\n"
        } else {
            b""
        };
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let path = dir.join(".t-backup_asd-crashrecovery-20240101_000000.tar.zstd");
    std::fs::write(&path, zstd::encode_all(&tar[..], 0).unwrap()).unwrap();
    chown(&path, owner);
    path
}

fn restore(snap: &Path, to: &Path) -> std::process::Output {
    asdfs([
        "snapshots".as_ref(),
        "restore".as_ref(),
        snap.as_os_str(),
        "--to".as_ref(),
        to.as_os_str(),
    ])
}

/// Finding 1 (restore): `t/x -> /victim` then a directory member `t/x` with mode 04777 made
/// the restore chmod the victim when it gave directories their attributes.
#[test]
fn restore_never_chmods_through_a_symlink_the_archive_made() {
    let decoy = Decoy::new();
    let home = attacker_home();
    let victim = decoy.path.to_str().unwrap();
    let snap = archive(
        home.path(),
        &[
            ("t/", EntryType::Directory, "", 0o755, (0, 0)),
            ("t/x", EntryType::Symlink, victim, 0o777, (0, 0)),
            ("t/x/", EntryType::Directory, "", 0o4777, (0, 0)),
        ],
        ATTACKER,
    );
    let out = restore(&snap, &home.path().join("out"));
    decoy.assert_untouched();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the archive was restored: {err}");
    assert!(err.contains("t/x") && err.contains("symlink"), "{err}");
}

/// Finding 4: device nodes and setuid-root files were recreated as archived.
#[test]
fn restore_makes_no_devices_and_no_setuid_files() {
    let home = attacker_home();
    let snap = archive(
        home.path(),
        &[
            ("t/", EntryType::Directory, "", 0o755, (0, 0)),
            ("t/disk", EntryType::Block, "", 0o666, (8, 0)),
            ("t/mem", EntryType::Char, "", 0o666, (1, 1)),
            ("t/suid", EntryType::Regular, "", 0o4755, (0, 0)),
            ("t/sgid/", EntryType::Directory, "", 0o2777, (0, 0)),
        ],
        ATTACKER,
    );
    let to = home.path().join("out");
    let out = restore(&snap, &to);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    for dev in ["disk", "mem"] {
        assert!(
            std::fs::symlink_metadata(to.join(dev)).is_err(),
            "device node {dev} restored"
        );
    }
    for f in ["suid", "sgid"] {
        let m = std::fs::symlink_metadata(to.join(f)).unwrap();
        assert_eq!(
            m.mode() & 0o6000,
            0,
            "{f} keeps setuid/setgid: {:o}",
            m.mode()
        );
        assert_eq!(m.uid(), ATTACKER, "{f} is not the archive owner's");
    }
    assert!(err.contains("device") && err.contains("setuid"), "{err}");
}

/// Finding 4: an archive beside a target that neither root nor the target's owner owns is
/// refused by `list` and `restore`.
#[test]
fn archives_owned_by_another_user_are_refused() {
    let dir = tempfile::Builder::new()
        .prefix("asdfs-attack-root-")
        .tempdir_in("/tmp")
        .unwrap();
    let target = dir.path().join("t");
    std::fs::create_dir(&target).unwrap();
    let snap = archive(
        dir.path(),
        &[
            ("t/", EntryType::Directory, "", 0o755, (0, 0)),
            ("t/f", EntryType::Regular, "", 0o644, (0, 0)),
        ],
        ATTACKER,
    );
    let name = snap.file_name().unwrap().to_str().unwrap();
    let list = asdfs(["snapshots", "list", target.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&list.stderr);
    assert!(!list.status.success(), "listed: {err}");
    assert!(
        err.contains(name) && err.contains(&ATTACKER.to_string()),
        "{err}"
    );
    let to = dir.path().join("out");
    let out = restore(&snap, &to);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "restored: {err}");
    assert!(
        err.contains(name) && err.contains(&ATTACKER.to_string()),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!to.exists(), "restored into {}", to.display());
}

/// The crash snapshot is written beside the target, where its owner may put a symlink under
/// the very name it will get (the time is predictable): neither followed nor replaced.
#[test]
fn crash_snapshot_never_follows_a_symlink_in_its_name() {
    use crate::harness::Mount;
    if !crate::harness::fuse_available() {
        return;
    }
    let decoy = Decoy::new();
    let m = Mount::prepare(|t| std::fs::write(t.join("f"), b"mine\n").unwrap());
    chown(&m.target, ATTACKER);
    chown(m.disk.path(), ATTACKER);
    m.mount();
    std::fs::write(m.path("f"), b"flushed\n").unwrap();
    m.flush();
    // A reboot: the daemon dies, its mount and RAM store are gone.
    m.kill_daemon();
    let _ = std::process::Command::new("umount")
        .arg("-l")
        .arg(&m.target)
        .status();
    m.lose_store();
    let now = std::time::SystemTime::now();
    let names: Vec<PathBuf> = (0..30)
        .map(|s| asdfs::snapshot::snapshot_path(&m.target, now + std::time::Duration::from_secs(s)))
        .collect();
    let (planted, victim) = (names.clone(), decoy.path.clone());
    as_attacker(move || {
        for n in &planted {
            std::os::unix::fs::symlink(&victim, n).map_err(|e| e.to_string())?;
        }
        Ok(())
    })
    .unwrap();
    m.mount();
    decoy.assert_untouched();
    for n in &names {
        let st = std::fs::symlink_metadata(n).unwrap();
        assert!(st.file_type().is_symlink(), "{} was replaced", n.display());
    }
}

/// A PAX extended header (type `x`) with these records, for the member that follows.
fn pax_header(b: &mut tar::Builder<Vec<u8>>, records: &[(&str, &[u8])]) {
    let mut data = Vec::new();
    for (k, v) in records {
        let rest = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        data.extend_from_slice(format!("{len} {k}=").as_bytes());
        data.extend_from_slice(v);
        data.push(b'\n');
    }
    let mut h = tar::Header::new_ustar();
    h.set_path("PaxHeaders/x").unwrap();
    h.set_entry_type(EntryType::XHeader);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    b.append(&h, &data[..]).unwrap();
}

/// Finding F2: `SCHILY.xattr.security.capability` on a file and `trusted.overlay.opaque` on
/// a directory were set as archived: the file, chowned to the archive's owner first, kept a
/// capability (CAP_SETUID) that made its owner root.
#[test]
fn restore_sets_no_capabilities_and_no_trusted_xattrs() {
    let home = attacker_home();
    // vfs_cap_data revision 2, effective, permitted = CAP_SETUID.
    let mut cap = Vec::new();
    for w in [0x0200_0001u32, 1 << 7, 0, 0, 0] {
        cap.extend_from_slice(&w.to_le_bytes());
    }
    let mut b = tar::Builder::new(Vec::new());
    let member = |b: &mut tar::Builder<Vec<u8>>, name: &str, ty: EntryType, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_entry_type(ty);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    member(&mut b, "t/", EntryType::Directory, b"");
    pax_header(
        &mut b,
        &[
            ("SCHILY.xattr.security.capability", &cap),
            ("SCHILY.xattr.user.kept", b"yes"),
        ],
    );
    member(&mut b, "t/sh", EntryType::Regular, b"#!/bin/sh\nid\n");
    pax_header(&mut b, &[("SCHILY.xattr.trusted.overlay.opaque", b"y")]);
    member(&mut b, "t/d/", EntryType::Directory, b"");
    let tar = b.into_inner().unwrap();
    let snap = home
        .path()
        .join(".t-backup_asd-crashrecovery-20240101_000000.tar.zstd");
    std::fs::write(&snap, zstd::encode_all(&tar[..], 0).unwrap()).unwrap();
    chown(&snap, ATTACKER);
    let to = home.path().join("out");
    let out = restore(&snap, &to);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let get = |p: &Path, name: &str| -> Option<Vec<u8>> {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        let n = std::ffi::CString::new(name).unwrap();
        let mut v = vec![0u8; 256];
        // SAFETY: valid C strings and a buffer of the length given.
        let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        (r >= 0).then(|| v[..r as usize].to_vec())
    };
    assert_eq!(
        get(&to.join("sh"), "security.capability"),
        None,
        "the restored file has a capability"
    );
    assert_eq!(
        get(&to.join("d"), "trusted.overlay.opaque"),
        None,
        "the restored directory has a trusted.* xattr"
    );
    assert_eq!(
        get(&to.join("sh"), "user.kept").as_deref(),
        Some(&b"yes"[..])
    );
    assert!(
        err.contains("security.capability") && err.contains("trusted.overlay.opaque"),
        "no warning: {err}"
    );
}

/// Finding F3: the destination's directory was opened by path (following symlinks) and the
/// owner rule then read the destination's owner by path again; a symlink (swapped in
/// between the two, or just there) made root unpack the user's archive into a directory of
/// root's. The destination's path must have no symlink: refused, nothing made there.
#[test]
fn restore_refuses_a_destination_through_a_symlink() {
    let home = attacker_home();
    let rootdir = tempfile::Builder::new()
        .prefix("asdfs-attack-rootdir-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(rootdir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let snap = archive(
        home.path(),
        &[
            ("t/", EntryType::Directory, "", 0o755, (0, 0)),
            ("t/f", EntryType::Regular, "", 0o644, (0, 0)),
        ],
        ATTACKER,
    );
    let link = home.path().join("link");
    let root_path = rootdir.path().to_path_buf();
    let l = link.clone();
    as_attacker(move || std::os::unix::fs::symlink(&root_path, &l).map_err(|e| e.to_string()))
        .unwrap();
    let out = restore(&snap, &link.join("out"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "restored through the symlink: {err}");
    assert!(err.contains("symlink"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let left: Vec<_> = std::fs::read_dir(rootdir.path()).unwrap().collect();
    assert!(left.is_empty(), "made in root's directory: {left:?}");
    let tmp: Vec<_> = std::fs::read_dir(home.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".restore-"))
        .collect();
    assert!(tmp.is_empty(), "temporary directory left: {tmp:?}");
}

/// Finding F3: a failed restore (a member through a symlink an earlier one made) leaves no temporary directory.
#[test]
fn a_failed_restore_leaves_no_temporary_directory() {
    let home = attacker_home();
    let snap = archive(
        home.path(),
        &[
            ("t/", EntryType::Directory, "", 0o755, (0, 0)),
            ("t/x", EntryType::Symlink, "/", 0o777, (0, 0)),
            ("t/x/f", EntryType::Regular, "", 0o644, (0, 0)),
        ],
        ATTACKER,
    );
    let out = restore(&snap, &home.path().join("out"));
    assert!(!out.status.success(), "restored");
    let names: Vec<String> = std::fs::read_dir(home.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.contains(".restore-") || n == "out"),
        "left behind: {names:?}"
    );
}
