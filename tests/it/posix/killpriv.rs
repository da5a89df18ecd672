//! Set-user-ID, set-group-ID and file capabilities taken away by writes, truncates, O_TRUNC,
//! chown and the rest, in both FUSE data paths (issue 13). With `FUSE_HANDLE_KILLPRIV_V2`
//! the kernel leaves this to the daemon (design.md §4.1): these compare it with tmpfs.

use super::*;

/// The daemon data path and passthrough (where the kernel gives it), each against tmpfs.
fn data_paths() -> Vec<(&'static str, Pair)> {
    ["daemon", "passthrough"]
        .into_iter()
        .map(|path| {
            let mut m = Mount::prepare(|_| {});
            m.env.push(("ASDFS_DATA_PATH".into(), path.into()));
            m.mount();
            (path, Pair::with(m))
        })
        .collect()
}

/// Fails the test with every difference of every data path.
fn finish_all(pairs: Vec<(&'static str, Pair)>) {
    let diffs: Vec<String> = pairs.iter().flat_map(|(_, p)| p.diffs.take()).collect();
    assert!(
        diffs.is_empty(),
        "{} difference(s) between asdfs and tmpfs:\n  {}",
        diffs.len(),
        diffs.join("\n  ")
    );
}

/// `security.capability` granting cap_net_raw (effective), as setcap(8) writes it.
fn capability() -> Vec<u8> {
    let mut v = (0x0200_0000u32 | 1).to_le_bytes().to_vec();
    for word in [1u32 << 13, 0, 0, 0] {
        v.extend(word.to_le_bytes());
    }
    v
}

fn f(d: &Path, n: &str) -> PathBuf {
    d.join("pub").join(n)
}

/// Makes `pub/<name>` (data, owner and group root) with each mode of `files`.
fn make(p: &Pair, files: &[(&str, u32)]) {
    p.setup("make", |d| -> R<()> {
        if meta(&j(d, "pub")).is_err() {
            mkdir(&j(d, "pub"), 0o777)?;
            chmod(&j(d, "pub"), 0o777)?;
        }
        for &(n, m) in files {
            write(&f(d, n), &[7u8; 8192])?;
            chmod(&f(d, n), m)?;
        }
        Ok(())
    });
}

/// Two writes through one descriptor as `who`: the second finds whatever the first left.
fn write_twice(who: Option<Cred>, path: &Path) -> R<()> {
    let w = || {
        let fd = open(path, libc::O_WRONLY, 0)?;
        pwrite(&fd, b"a", 0)?;
        pwrite(&fd, b"b", 4096).map(drop)
    };
    match who {
        Some(who) => as_user(who, w),
        None => w(),
    }
}

#[test]
fn writes_and_truncates_by_other_users_clear_setuid_and_setgid_in_both_data_paths() {
    if !fuse_available() {
        return;
    }
    let pairs = data_paths();
    for (path, p) in &pairs {
        let path = *path;
        eprintln!("data path {path}");
        make(
            p,
            &[
                ("w6777", 0o6777),
                ("w4666", 0o4666),
                ("w2766", 0o2766),
                ("staff2766", 0o2766),
                ("root6777", 0o6777),
                ("t6777", 0o6777),
                ("ft6777", 0o6777),
                ("o6777", 0o6777),
                ("o2766", 0o2766),
                ("oroot6777", 0o6777),
                ("fa6777", 0o6777),
                ("cfr6777", 0o6777),
                ("src", 0o666),
            ],
        );
        p.setup("staff", |d| chown(&f(d, "staff2766"), 0, STAFF));
        for n in ["w6777", "w4666", "w2766"] {
            p.both(&format!("{path}: writes by another user to {n}"), |d| {
                write_twice(Some(NOBODY), &f(d, n))?;
                st(&f(d, n))
            });
        }
        p.both(&format!("{path}: writes by a member of the group"), |d| {
            write_twice(Some(NOBODY_IN_STAFF), &f(d, "staff2766"))?;
            st(&f(d, "staff2766"))
        });
        p.both(&format!("{path}: writes by root keep the bits"), |d| {
            write_twice(None, &f(d, "root6777"))?;
            st(&f(d, "root6777"))
        });
        p.both(&format!("{path}: truncate(2) by another user"), |d| {
            as_user(NOBODY, || truncate(&f(d, "t6777"), 1))?;
            st(&f(d, "t6777"))
        });
        p.both(&format!("{path}: ftruncate(2) by another user"), |d| {
            as_user(NOBODY, || {
                ftruncate(&open(&f(d, "ft6777"), libc::O_WRONLY, 0)?, 100)
            })?;
            st(&f(d, "ft6777"))
        });
        for n in ["o6777", "o2766"] {
            p.both(&format!("{path}: O_TRUNC by another user on {n}"), |d| {
                as_user(NOBODY, || {
                    open(&f(d, n), libc::O_WRONLY | libc::O_TRUNC, 0).map(drop)
                })?;
                st(&f(d, n))
            });
        }
        p.both(&format!("{path}: O_TRUNC by root keeps the bits"), |d| {
            open(&f(d, "oroot6777"), libc::O_WRONLY | libc::O_TRUNC, 0)?;
            st(&f(d, "oroot6777"))
        });
        p.both(&format!("{path}: fallocate by another user"), |d| {
            as_user(NOBODY, || {
                fallocate(&open(&f(d, "fa6777"), libc::O_WRONLY, 0)?, 0, 0, 16384)
            })?;
            st(&f(d, "fa6777"))
        });
        p.both(&format!("{path}: copy_file_range by another user"), |d| {
            as_user(NOBODY, || {
                let i = open(&f(d, "src"), libc::O_RDONLY, 0)?;
                let o = open(&f(d, "cfr6777"), libc::O_WRONLY, 0)?;
                copy_range(&i, Some(0), &o, Some(0), 100).map(drop)
            })?;
            st(&f(d, "cfr6777"))
        });
    }
    finish_all(pairs);
}

/// The attacker of `attack.rs`: no name, no groups.
const ATTACKER: Cred = Cred {
    uid: 64_123,
    gid: 64_123,
    groups: &[],
};

/// The mode as `stat -c %a` asks for it: statx with only STATX_MODE, which the kernel
/// answers from its cached attributes while they are valid.
fn mode_only(p: &Path) -> R<u32> {
    let c = cpath(p);
    // SAFETY: a zeroed statx is a valid buffer for the call to fill.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `stx` a buffer of the right type.
    let r = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), 0, libc::STATX_MODE, &mut stx) };
    if r < 0 {
        return Err(errno());
    }
    Ok(u32::from(stx.stx_mode))
}

/// After an O_TRUNC open by a user without CAP_FSETID the kernel's cached attributes show
/// the bits gone at once, as on tmpfs: the OPEN reply carries no attributes, so the daemon
/// invalidates the inode's (QA F7). Each file's attributes are cached by a stat first.
#[test]
fn the_mode_right_after_an_o_trunc_open_shows_the_bits_gone_in_both_data_paths() {
    if !fuse_available() {
        return;
    }
    let pairs = data_paths();
    for (path, p) in &pairs {
        let path = *path;
        make(
            p,
            &[("o6777", 0o6777), ("o2777", 0o2777), ("o4777", 0o4777)],
        );
        for n in ["o6777", "o2777", "o4777"] {
            p.both(
                &format!("{path}: the mode right after O_TRUNC on {n}"),
                |d| {
                    mode_only(&f(d, n))?;
                    let seen = as_user_data(ATTACKER, || {
                        open(&f(d, n), libc::O_WRONLY | libc::O_TRUNC, 0)?;
                        Ok(format!("{:o}", mode_only(&f(d, n))?).into_bytes())
                    })?;
                    R::Ok((
                        String::from_utf8_lossy(&seen).into_owned(),
                        format!("{:o}", mode_only(&f(d, n))?),
                    ))
                },
            );
        }
    }
    finish_all(pairs);
}

#[test]
fn chown_clears_setuid_and_setgid_in_both_data_paths() {
    if !fuse_available() {
        return;
    }
    let pairs = data_paths();
    for (path, p) in &pairs {
        let path = *path;
        eprintln!("data path {path}");
        make(
            p,
            &[
                ("root", 0o6777),
                ("rootnox", 0o2767),
                ("same", 0o6777),
                ("grp", 0o6777),
                ("grpnox", 0o2767),
                ("none", 0o6777),
                ("rootnone", 0o6777),
            ],
        );
        p.setup("owners", |d| -> R<()> {
            for n in ["grp", "grpnox", "none"] {
                chown(&f(d, n), NOBODY.uid, 0)?;
                chmod(&f(d, n), if n == "grpnox" { 0o2767 } else { 0o6777 })?;
            }
            Ok(())
        });
        p.both(&format!("{path}: chown by root"), |d| {
            chown(&f(d, "root"), NOBODY.uid, NOBODY.gid)?;
            st(&f(d, "root"))
        });
        p.both(
            &format!("{path}: chown by root of set-group-ID without group execute"),
            |d| {
                chown(&f(d, "rootnox"), NOBODY.uid, NOBODY.gid)?;
                st(&f(d, "rootnox"))
            },
        );
        p.both(&format!("{path}: chown by root to the same owner"), |d| {
            chown(&f(d, "same"), 0, 0)?;
            st(&f(d, "same"))
        });
        p.both(&format!("{path}: chgrp by the owner"), |d| {
            as_user(NOBODY, || chown(&f(d, "grp"), u32::MAX, NOBODY.gid))?;
            st(&f(d, "grp"))
        });
        p.both(
            &format!("{path}: chgrp by the owner of set-group-ID without group execute"),
            |d| {
                as_user(NOBODY, || chown(&f(d, "grpnox"), u32::MAX, NOBODY.gid))?;
                st(&f(d, "grpnox"))
            },
        );
        p.both(&format!("{path}: chown(-1, -1) by the owner"), |d| {
            as_user(NOBODY, || chown(&f(d, "none"), u32::MAX, u32::MAX))?;
            st(&f(d, "none"))
        });
        p.both(&format!("{path}: chown(-1, -1) by root"), |d| {
            chown(&f(d, "rootnone"), u32::MAX, u32::MAX)?;
            st(&f(d, "rootnone"))
        });
    }
    finish_all(pairs);
}

#[test]
fn writes_truncates_and_chown_remove_file_capabilities_in_both_data_paths() {
    if !fuse_available() {
        return;
    }
    let cap = capability();
    let pairs = data_paths();
    for (path, p) in &pairs {
        let path = *path;
        eprintln!("data path {path}");
        let names = ["w", "root", "t", "o", "chown", "kept"];
        make(p, &names.map(|n| (n, 0o777)));
        p.setup("setcap", |d| -> R<()> {
            for n in names {
                setx(&f(d, n), "security.capability", &cap, 0)?;
            }
            Ok(())
        });
        let has_cap = |d: &Path, n: &str| getx(&f(d, n), "security.capability");
        p.both(&format!("{path}: writes by another user"), |d| {
            write_twice(Some(NOBODY), &f(d, "w"))?;
            has_cap(d, "w")
        });
        p.both(&format!("{path}: writes by root"), |d| {
            write_twice(None, &f(d, "root"))?;
            has_cap(d, "root")
        });
        p.both(&format!("{path}: truncate by another user"), |d| {
            as_user(NOBODY, || truncate(&f(d, "t"), 1))?;
            has_cap(d, "t")
        });
        p.both(&format!("{path}: O_TRUNC by another user"), |d| {
            as_user(NOBODY, || {
                open(&f(d, "o"), libc::O_WRONLY | libc::O_TRUNC, 0).map(drop)
            })?;
            has_cap(d, "o")
        });
        p.both(&format!("{path}: chown by root"), |d| {
            chown(&f(d, "chown"), NOBODY.uid, 0)?;
            has_cap(d, "chown")
        });
        p.both(&format!("{path}: a read keeps it"), |d| {
            as_user(NOBODY, || read(&f(d, "kept")).map(drop))?;
            has_cap(d, "kept")
        });
    }
    finish_all(pairs);
}

/// A file held open for writing (through passthrough: the kernel writes it) that its owner
/// makes set-user-ID or set-group-ID meanwhile: the next write takes the bit away again,
/// as on tmpfs, although earlier writes had found nothing to take.
#[test]
fn a_chmod_while_a_writer_holds_the_file_is_undone_by_its_next_write_in_both_data_paths() {
    if !fuse_available() {
        return;
    }
    let pairs = data_paths();
    for (path, p) in &pairs {
        let path = *path;
        eprintln!("data path {path}");
        make(p, &[("u", 0o666), ("g", 0o666), ("x", 0o666)]);
        p.setup("owner", |d| -> R<()> {
            for n in ["u", "g", "x"] {
                chown(&f(d, n), NOBODY.uid, NOBODY.gid)?;
            }
            Ok(())
        });
        for (n, mode) in [("u", 0o4766), ("g", 0o2776), ("x", 0o6777)] {
            p.both(&format!("{path}: chmod {mode:o} between two writes"), |d| {
                as_user(NOBODY, || {
                    let fd = open(&f(d, n), libc::O_WRONLY, 0)?;
                    pwrite(&fd, b"a", 0)?;
                    pwrite(&fd, b"b", 1)?;
                    chmod(&f(d, n), mode)?;
                    let before = st(&f(d, n))?.mode;
                    pwrite(&fd, b"c", 2)?;
                    (before & 0o7777 == mode).then_some(()).ok_or(-1)
                })?;
                st(&f(d, n))
            });
        }
        // Root's file, held open for writing by another user who has written to it already:
        // root makes it set-user-ID, or gives it a capability, while that writer waits.
        let cap = capability();
        p.setup("held", |d| -> R<()> {
            for n in ["held", "heldcap"] {
                write(&f(d, n), b"data")?;
                chmod(&f(d, n), 0o666)?;
            }
            Ok(())
        });
        p.both(
            &format!("{path}: root's chmod while another user holds it"),
            |d| {
                let r = root_changes_a_held_file(&f(d, "held"), |file| chmod(file, 0o4777));
                (r, st(&f(d, "held")))
            },
        );
        p.both(
            &format!("{path}: root's setcap while another user holds it"),
            |d| {
                let cap = cap.clone();
                let r = root_changes_a_held_file(&f(d, "heldcap"), move |file| {
                    setx(file, "security.capability", &cap, 0)
                });
                (r, getx(&f(d, "heldcap"), "security.capability"))
            },
        );
    }
    finish_all(pairs);
}

/// `change` made by root while another user holds `file` open for writing, between two of
/// its writes. Returns the writer's result and the change's.
fn root_changes_a_held_file(
    file: &Path,
    change: impl FnOnce(&Path) -> R<()> + Send + 'static,
) -> (R<()>, R<()>) {
    let dir = file.parent().unwrap();
    let (go, ready) = (dir.join("go"), dir.join("ready"));
    let _ = unlink(&go);
    let _ = unlink(&ready);
    let changer = std::thread::spawn({
        let (file, go, ready) = (file.to_owned(), go.clone(), ready.clone());
        move || {
            while meta(&ready).is_err() {
                std::thread::sleep(Duration::from_millis(5));
            }
            let r = change(&file);
            write(&go, b"").unwrap();
            r
        }
    });
    let wrote = as_user(NOBODY, || {
        let fd = open(file, libc::O_WRONLY, 0)?;
        pwrite(&fd, b"a", 0)?;
        File::create(&ready).map_err(|_| -2)?;
        while meta(&go).is_err() {
            std::thread::sleep(Duration::from_millis(5));
        }
        pwrite(&fd, b"b", 1).map(drop)
    });
    let changed = changer.join().unwrap();
    let _ = unlink(&go);
    let _ = unlink(&ready);
    (wrote, changed)
}

/// Runs `argv` as root without CAP_FSETID: setpriv drops it from the bounding set before the
/// exec, so the program's effective set lacks it (QA: such a root kept the bits on asdfs,
/// which took uid 0 for the capability, where tmpfs cleared them).
fn root_without_fsetid(argv: &[&str]) -> R<()> {
    let out = std::process::Command::new("setpriv")
        .args(["--bounding-set=-fsetid", "--"])
        .args(argv)
        .output()
        .map_err(|_| -3)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(out.status.code().unwrap_or(-4))
    }
}

#[test]
fn root_without_cap_fsetid_loses_the_bits_as_on_tmpfs_in_both_data_paths() {
    if !fuse_available() {
        return;
    }
    let pairs = data_paths();
    for (path, p) in &pairs {
        let path = *path;
        make(
            p,
            &[
                ("nc-t6777", 0o6777),
                ("nc-o6777", 0o6777),
                ("nc-w6777", 0o6777),
            ],
        );
        p.both(
            &format!("{path}: truncate(1) by root without CAP_FSETID"),
            |d| {
                let file = f(d, "nc-t6777");
                root_without_fsetid(&["truncate", "-s", "1", file.to_str().unwrap()])?;
                st(&file)
            },
        );
        p.both(
            &format!("{path}: O_TRUNC by root without CAP_FSETID"),
            |d| {
                let file = f(d, "nc-o6777");
                let cmd = format!(": > '{}'", file.display());
                root_without_fsetid(&["sh", "-c", &cmd])?;
                st(&file)
            },
        );
        p.both(
            &format!("{path}: a write by root without CAP_FSETID"),
            |d| {
                let file = f(d, "nc-w6777");
                let cmd = format!(
                    "printf x | dd of='{}' conv=notrunc status=none",
                    file.display()
                );
                root_without_fsetid(&["sh", "-c", &cmd])?;
                st(&file)
            },
        );
    }
    finish_all(pairs);
}
