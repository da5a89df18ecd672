//! The real mount: in place over the target, lazy fill, write-back, killed daemons, open
//! files across unmount, and bad input.

use crate::harness::{Mount, asdfs, fuse_available};
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

fn tree_files(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                out.push((rel + "/", Vec::new()));
                stack.push(p);
            } else if m.file_type().is_symlink() {
                out.push((
                    rel,
                    fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                ));
            } else {
                out.push((rel, fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn mounted_in_place_and_written_back_at_unmount() {
    if !fuse_available() {
        return;
    }
    let m = Mount::with(|t| {
        fs::create_dir(t.join("sub")).unwrap();
        fs::write(t.join("sub/old"), b"from disk").unwrap();
        fs::write(t.join("gone"), b"delete me").unwrap();
    });
    assert_eq!(fs::read(m.path("sub/old")).unwrap(), b"from disk");
    fs::write(m.path("sub/new"), b"made in RAM").unwrap();
    fs::rename(m.path("sub"), m.path("renamed")).unwrap();
    fs::remove_file(m.path("gone")).unwrap();
    std::os::unix::fs::symlink("renamed/new", m.path("link")).unwrap();
    let seen = tree_files(&m.target);
    // Nothing was written to the disk copy yet, and nothing appeared beside the user's files.
    assert!(!m.side().join("../t/renamed").exists() || m.is_mounted());
    m.unmount();
    assert_eq!(tree_files(&m.target), seen);
    // The side directory goes with a clean end: nothing stays beside the target.
    assert!(
        !m.side().exists(),
        "the side directory stays after a clean unmount"
    );
}

#[test]
fn nothing_reaches_disk_before_a_flush_and_everything_after() {
    if !fuse_available() {
        return;
    }
    let m = Mount::new();
    fs::write(m.path("f"), b"1").unwrap();
    // Look underneath the mount through another path: the side directory's parent holds t.
    let under = fs::File::open(&m.target).unwrap();
    drop(under);
    m.flush();
    m.unmount();
    assert_eq!(fs::read(m.path("f")).unwrap(), b"1");
}

#[test]
fn a_killed_daemon_loses_nothing() {
    if !fuse_available() {
        return;
    }
    let m = Mount::with(|t| fs::write(t.join("keep"), b"disk").unwrap());
    fs::write(m.path("a"), b"written before the kill").unwrap();
    fs::create_dir(m.path("d")).unwrap();
    fs::rename(m.path("keep"), m.path("d/kept")).unwrap();
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(m.path("a"))
        .unwrap();
    f.write_all(b", and more").unwrap();
    drop(f);
    m.kill_daemon();
    assert!(m.is_mounted(), "the dead mount stays until the next mount");
    m.mount();
    assert_eq!(
        fs::read(m.path("a")).unwrap(),
        b"written before the kill, and more"
    );
    assert_eq!(fs::read(m.path("d/kept")).unwrap(), b"disk");
    m.unmount();
    assert_eq!(
        fs::read(m.path("a")).unwrap(),
        b"written before the kill, and more"
    );
    assert_eq!(fs::read(m.path("d/kept")).unwrap(), b"disk");
    assert!(!m.path("keep").exists());
}

#[test]
fn files_open_at_unmount_keep_working_and_reach_disk() {
    if !fuse_available() {
        return;
    }
    let m = Mount::new();
    let mut f = fs::File::create(m.path("log")).unwrap();
    f.write_all(b"before\n").unwrap();
    let out = asdfs(["unmount", m.target.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 open file is still served"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    f.write_all(b"after unmount\n").unwrap();
    drop(f);
    let end = Instant::now() + Duration::from_secs(10);
    while fs::read(m.path("log"))
        .map(|d| d != b"before\nafter unmount\n")
        .unwrap_or(true)
        && Instant::now() < end
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(fs::read(m.path("log")).unwrap(), b"before\nafter unmount\n");
}

#[test]
fn mounting_is_lazy_for_large_targets() {
    if !fuse_available() {
        return;
    }
    let time_mount = |m: &Mount| {
        let t = Instant::now();
        m.mount();
        t.elapsed()
    };
    let empty = Mount::prepare(|_| {});
    let big = Mount::prepare(|t| {
        for d in 0..100 {
            let dir = t.join(format!("d{d}"));
            fs::create_dir(&dir).unwrap();
            for f in 0..200 {
                fs::write(dir.join(format!("f{f}")), vec![b'x'; 512]).unwrap();
            }
        }
    });
    let (a, b) = (time_mount(&empty), time_mount(&big));
    // Not measurably slower: a full copy of 20,000 files would take far longer than this.
    assert!(
        b < a * 3 + Duration::from_millis(300),
        "empty {a:?}, 20,000 files {b:?}"
    );
    let data = big.store().join("private/data");
    let used: u64 = fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().blocks() * 512)
        .sum();
    assert_eq!(used, 0, "no file data in RAM right after the mount");
    // Reading one file loads only that file.
    assert_eq!(fs::read(big.path("d7/f3")).unwrap().len(), 512);
    assert_eq!(fs::read_dir(&data).unwrap().count(), 1);
}

fn fails_with(args: &[&str], needle: &str) {
    let out = asdfs(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(
        err.contains(needle),
        "{args:?}: expected {needle:?} in {err:?}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err:?}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A target or volatile dir on the command line that is not an absolute path in normal form
/// is bad usage: exit 2 (README's table), one line, before anything is looked at.
#[test]
fn a_relative_target_is_a_usage_error() {
    for args in [
        &["mount", "relative/dir", "--volatile", "/run"][..],
        &["mount", "/tmp/", "--volatile", "/run"],
        &["mount", "/tmp", "--volatile", "run"],
    ] {
        let out = asdfs(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("absolute path") || err.contains("normal form"),
            "{args:?}: {err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err:?}");
    }
}

/// A usage error clap writes on two lines ("not provided:" and the argument) is one line
/// that reads as one sentence, not joined by "; " after the colon (QA).
#[test]
fn a_missing_target_is_named_in_one_sentence() {
    let out = asdfs(["mount"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not provided: <TARGETS>"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err:?}");
}

/// A user without XDG_RUNTIME_DIR who asks `unmount` or `flush` about a directory that is
/// not in RAM is told so, not asked for `--volatile`, which those commands do not take (QA).
#[test]
fn a_user_without_a_runtime_dir_is_told_a_target_is_not_in_ram() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let t = dir.path().join("t");
    fs::create_dir(&t).unwrap();
    let uid = "64124";
    std::os::unix::fs::chown(&t, Some(64124), Some(64124)).unwrap();
    fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    for verb in ["unmount", "flush", "status"] {
        let out = std::process::Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "--",
            ])
            .arg(crate::harness::BIN)
            .arg(verb)
            .arg(&t)
            .env_remove("XDG_RUNTIME_DIR")
            .output()
            .expect("setpriv");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("--volatile"), "{verb}: {err}");
        if verb != "status" {
            assert_eq!(out.status.code(), Some(1), "{verb}: {err}");
            assert!(err.contains("not kept in RAM by asdfs"), "{verb}: {err}");
        }
    }
}

#[test]
fn bad_input_gets_one_clear_line_and_touches_nothing() {
    if !fuse_available() {
        return;
    }
    let m = Mount::prepare(|t| {
        fs::write(t.join("file"), b"x").unwrap();
        fs::create_dir(t.join("inner")).unwrap();
    });
    let before = tree_files(&m.target);
    let vol = m.volatile.path().to_str().unwrap().to_string();
    let t = m.target.to_str().unwrap().to_string();
    fails_with(
        &["mount", "/nonexistent/dir", "--volatile", &vol],
        "no such directory",
    );
    fails_with(
        &["mount", &format!("{t}/file"), "--volatile", &vol],
        "not a directory",
    );
    fails_with(
        &["mount", &t, "--volatile", &vol, "--flush-interval", "soon"],
        "not a duration",
    );
    fails_with(
        &["mount", &t, "--volatile", &vol, "--fsync", "maybe"],
        "maybe",
    );
    fails_with(
        &["mount", &t, "--volatile", &format!("{t}/inner")],
        "contains the volatile dir",
    );
    fails_with(&["mount", &t, "--volatile", "relative/dir"], "absolute");
    fails_with(&["flush", &t], "not kept in RAM");
    assert_eq!(tree_files(&m.target), before);
    m.mount();
    fails_with(&["mount", &t, "--volatile", &vol], "already kept in RAM");
    fails_with(
        &["mount", &format!("{t}/inner"), "--volatile", &vol],
        "lies inside",
    );
    let parent = m.disk.path().to_str().unwrap();
    fails_with(&["mount", parent, "--volatile", &vol], "contains");
    m.unmount();
    assert_eq!(tree_files(&m.target), before);
}

/// Whether another process could take `dir`'s BSD lock now (as `systemd-tmpfiles --clean`
/// tries before it looks into a directory).
fn exclusive_lock_free(dir: &Path) -> bool {
    use nix::fcntl::{Flock, FlockArg};
    let f = fs::File::open(dir).unwrap();
    match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(_) => true,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => false,
        Err((_, e)) => panic!("flock {}: {e}", dir.display()),
    }
}

/// Every path under `dir` on its filesystem, sorted.
fn store_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let dev = fs::metadata(dir).unwrap().dev();
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() && meta.dev() == dev {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// asd users often set VOLATILE=/tmp, which tmpfiles ages: the daemon holds shared BSD locks
/// on its store and the store root, which `systemd-tmpfiles --clean` skips, so a rule that
/// ages everything in the volatile directory leaves the running store alone. After the
/// unmount nothing stays locked.
fn running_store_survives_tmpfiles_aging(m: Mount) {
    fs::write(m.path("kept"), b"only in RAM").unwrap();
    let store = m.store();
    let root = m.volatile.path().join("asdfs");
    assert_ne!(store, root, "the target's store exists");
    for dir in [&root, &store] {
        assert!(!exclusive_lock_free(dir), "{} is not locked", dir.display());
    }
    let tmpfiles = std::process::Command::new("sh")
        .args(["-c", "command -v systemd-tmpfiles"])
        .output()
        .is_ok_and(|o| o.status.success());
    if tmpfiles {
        let before = store_files(&store);
        std::thread::sleep(Duration::from_millis(50));
        let conf = m.disk.path().join("age-everything.conf");
        fs::write(
            &conf,
            format!("d {} - - - 0\n", m.volatile.path().display()),
        )
        .unwrap();
        let out = std::process::Command::new("systemd-tmpfiles")
            .arg("--clean")
            .arg(&conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(store_files(&store), before, "tmpfiles deleted store files");
        assert_eq!(fs::read(m.path("kept")).unwrap(), b"only in RAM");
        m.flush();
    } else {
        eprintln!("systemd-tmpfiles is not installed: checked the locks only");
    }
    let pid = m.daemon_pid().unwrap();
    m.unmount();
    assert_eq!(fs::read(m.path("kept")).unwrap(), b"only in RAM");
    // The locks go with the daemon (the store with the final flush).
    let end = Instant::now() + Duration::from_secs(10);
    let released =
        || (!store.exists() || exclusive_lock_free(&store)) && exclusive_lock_free(&root);
    while !released() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(released(), "the daemon {pid} left its store locked");
}

#[test]
fn a_running_fuse_store_survives_tmpfiles_aging() {
    if !fuse_available() {
        return;
    }
    running_store_survives_tmpfiles_aging(Mount::new());
}

#[test]
fn a_running_overlay_store_survives_tmpfiles_aging() {
    if !fuse_available() || !nix::unistd::geteuid().is_root() {
        return;
    }
    let mut m = Mount::prepare(|_| {});
    m.extra.extend(["--mode", "overlay"].map(String::from));
    m.mount();
    let out = asdfs(["status", "--json", m.target.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["mode"], "overlay", "overlay mode fell back");
    running_store_survives_tmpfiles_aging(m);
}

/// isatty(3) on a file in the mount is answered ENOTTY, without a warning in the log.
#[test]
fn issue_11_isatty_is_enotty_quietly() {
    if !crate::harness::fuse_available() {
        return;
    }
    let m = Mount::new();
    fs::write(m.path("f"), b"x").unwrap();
    let f = fs::File::open(m.path("f")).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: isatty on a descriptor this test owns.
    assert_eq!(unsafe { libc::isatty(f.as_raw_fd()) }, 0);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOTTY)
    );
    drop(f);
    m.unmount();
    assert!(
        !m.log_tail().contains("Not Implemented"),
        "{}",
        m.log_tail()
    );
}

/// Issue 12 (item 5): the settings are checked once the command line's options are applied
/// over the file's; `--backup-limit 5000` was accepted although the limit is 1000.
#[test]
fn issue_12_a_command_line_option_is_checked_like_the_file() {
    let tmp = tempfile::tempdir_in("/tmp").unwrap();
    let t = tmp.path().join("t");
    std::fs::create_dir(&t).unwrap();
    let out = crate::harness::asdfs([
        "mount",
        t.to_str().unwrap(),
        "--volatile",
        "/dev/shm",
        "--backup-limit",
        "5000",
    ]);
    if out.status.success() {
        crate::harness::asdfs(["unmount", t.to_str().unwrap()]);
        panic!("a backup limit of 5000 was accepted");
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("backup limit 5000 is too large"), "{err}");
}

/// Issue 12 (item 5): the daemon serves the settings `asdfs mount` resolved and checked, and
/// does not resolve them again: the file's `fsync` and the command line's `--flush-interval`
/// (over the file's) reach it as the command saw them. The file is a FIFO that gives other
/// settings to a second reader.
#[test]
fn issue_12_the_daemon_serves_the_settings_the_command_resolved() {
    use std::os::unix::fs::OpenOptionsExt;
    if !fuse_available() {
        return;
    }
    let mut m = Mount::prepare(|_| {});
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let conf = dir.path().join("asdfs.toml");
    nix::unistd::mkfifo(&conf, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let target = m.target.display().to_string();
    let writer = {
        let conf = conf.clone();
        std::thread::spawn(move || {
            for fsync in ["sync", "defer"] {
                let text = format!(
                    "[[target]]\npath = \"{target}\"\nfsync = \"{fsync}\"\nflush_interval = \"7min\"\n"
                );
                // Blocks until a reader opens the FIFO.
                let Ok(mut f) = fs::OpenOptions::new().write(true).open(&conf) else {
                    return;
                };
                let _ = f.write_all(text.as_bytes());
                drop(f);
                // The next reader is another one: wait until this one has closed.
                let nonblock = || {
                    fs::OpenOptions::new()
                        .write(true)
                        .custom_flags(libc::O_NONBLOCK)
                        .open(&conf)
                };
                while nonblock().is_ok() {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        })
    };
    m.extra
        .extend(["--config".to_string(), conf.display().to_string()]);
    m.mount();
    let st = m.status();
    // Lets the writer go if no second reader came (it writes into a closed pipe).
    drop(
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&conf)
            .unwrap(),
    );
    writer.join().unwrap();
    m.unmount();
    assert_eq!(st["fsync"], "sync", "the file's value: {st}");
    assert_eq!(
        st["flush_interval_secs"], 3600,
        "the command line's value: {st}"
    );
}
