//! Set-user-ID and set-group-ID bits that ACLs and fallocate take away (issue 16), in FUSE
//! and overlay mode, as an unprivileged user against tmpfs.

use super::*;

/// A Pair in overlay mode (root only: overlay mode needs it).
pub(super) fn overlay_pair() -> Option<Pair> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping overlay mode: it needs root");
        return None;
    }
    let mut m = Mount::prepare(|_| {});
    m.no_namespaces = Some(crate::harness::NAMESPACES.read_recursive());
    m.extra.extend(["--mode", "overlay"].map(String::from));
    m.mount();
    Some(Pair::with(m))
}

/// Both modes, each compared with tmpfs.
pub(super) fn pairs() -> Vec<Pair> {
    let mut v = vec![Pair::new()];
    v.extend(overlay_pair());
    v
}

fn mode(p: &Path) -> R<u32> {
    meta(p).map(|m| m.mode())
}

#[test]
fn issue_16_setfacl_by_an_owner_outside_the_group_clears_setgid() {
    if !fuse_available() {
        return;
    }
    for p in pairs() {
        p.setup("make", |d| -> R<()> {
            mkdir(&j(d, "pub"), 0o777)?;
            chmod(&j(d, "pub"), 0o777)?;
            for (n, dir) in [("f", false), ("d", true), ("mine", false)] {
                let path = j(d, &format!("pub/{n}"));
                if dir {
                    mkdir(&path, 0o755)?;
                } else {
                    write(&path, b"x")?;
                }
                chown(&path, NOBODY.uid, STAFF)?;
                chmod(&path, 0o2755)?;
            }
            chown(&j(d, "pub/mine"), NOBODY.uid, NOBODY.gid)?;
            chmod(&j(d, "pub/mine"), 0o2755)
        });
        // What `setfacl -m u::rwx,g::rwx,o::rwx` writes.
        let bytes = acl(&[
            (1, 7, ACL_UNDEFINED),
            (4, 7, ACL_UNDEFINED),
            (0x20, 7, ACL_UNDEFINED),
        ]);
        let setfacl = |p: &Path, _: &[&str]| setx(p, "system.posix_acl_access", &bytes, 0);
        let acl: [&str; 0] = [];
        p.both("setfacl on a file by its owner outside its group", |d| {
            as_user(NOBODY, || setfacl(&j(d, "pub/f"), &acl))?;
            mode(&j(d, "pub/f"))
        });
        p.both(
            "setfacl on a directory by its owner outside its group",
            |d| {
                as_user(NOBODY, || setfacl(&j(d, "pub/d"), &acl))?;
                mode(&j(d, "pub/d"))
            },
        );
        p.both("setfacl by the owner in the file's group", |d| {
            as_user(NOBODY, || setfacl(&j(d, "pub/mine"), &acl))?;
            mode(&j(d, "pub/mine"))
        });
        p.both("setfacl by root keeps setgid", |d| {
            chmod(&j(d, "pub/f"), 0o2755)?;
            setfacl(&j(d, "pub/f"), &acl)?;
            mode(&j(d, "pub/f"))
        });
        p.finish();
    }
}

#[test]
fn issue_16_fallocate_and_punching_a_hole_clear_setuid_and_setgid() {
    if !fuse_available() {
        return;
    }
    const PUNCH: i32 = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    for p in pairs() {
        let names = [
            "a2666", "a2766", "a6777", "a4666", "p2666", "p2766", "p6777",
        ];
        p.setup("make", |d| -> R<()> {
            mkdir(&j(d, "pub"), 0o777)?;
            chmod(&j(d, "pub"), 0o777)?;
            for n in names.iter().chain(&["staff", "root"]) {
                write(&j(d, &format!("pub/{n}")), &[7u8; 8192])?;
            }
            chown(&j(d, "pub/staff"), 0, STAFF)?;
            for n in names.iter().chain(&["staff", "root"]) {
                let m = u32::from_str_radix(&n[1..], 8).unwrap_or(0o2666);
                chmod(&j(d, &format!("pub/{n}")), m)?;
            }
            Ok(())
        });
        for n in names {
            let how = if n.starts_with('a') { 0 } else { PUNCH };
            p.both(
                &format!("fallocate mode {how} on {n} by another user"),
                |d| {
                    let f = j(d, &format!("pub/{n}"));
                    as_user(NOBODY, || {
                        fallocate(&open(&f, libc::O_WRONLY, 0)?, how, 0, 16384)
                    })?;
                    mode(&f)
                },
            );
        }
        p.both("fallocate by a member of the file's group", |d| {
            let f = j(d, "pub/staff");
            as_user(NOBODY_IN_STAFF, || {
                fallocate(&open(&f, libc::O_WRONLY, 0)?, PUNCH, 0, 4096)
            })?;
            mode(&f)
        });
        p.both("fallocate by root", |d| {
            let f = j(d, "pub/root");
            fallocate(&open(&f, libc::O_WRONLY, 0)?, 0, 0, 16384)?;
            mode(&f)
        });
        p.finish();
    }
}
