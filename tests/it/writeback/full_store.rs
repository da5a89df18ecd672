//! A full RAM store (issue 11): the store log's reserve is counted and shown, programs get
//! ENOSPC while room remains for the log and a final flush, a full store still flushes, is
//! taken over after a kill, and the daemon neither dies nor outlives its mount.

use super::{SmallDisk, SmallFs};
use crate::harness::{Mount, asdfs, fuse_available};
use std::fs;
use std::io::Write;
use std::time::{Duration, Instant};

/// A mounted target whose store root is a 16 MiB tmpfs of its own.
fn on_small_store() -> (Mount, SmallFs) {
    let m = Mount::prepare(|_| {});
    let small = SmallFs::new(&m.volatile.path().join("asdfs"), "16m");
    m.mount();
    (m, small)
}

/// Writes `name` in 256 KiB chunks until the store is full; returns the bytes written.
fn fill(m: &Mount, name: &str) -> u64 {
    let mut f = fs::File::create(m.path(name)).unwrap();
    let chunk = vec![7u8; 256 << 10];
    let mut n = 0u64;
    for _ in 0..200 {
        match f.write(&chunk) {
            Ok(w) => n += w as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                return n;
            }
        }
    }
    panic!("50 MiB went into a 16 MiB store");
}

/// Waits until process `pid` is gone (or a zombie); false after `secs`.
fn gone_within(pid: i32, secs: u64) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        if stat.is_empty() || state == Some("Z") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn a_full_store_still_takes_changes_flushes_and_unmounts_with_everything() {
    if !fuse_available() {
        return;
    }
    let (m, small) = on_small_store();
    let pid = m.daemon_pid().unwrap();
    let n = fill(&m, "big");
    // The log's reserve is small beside the tmpfs: programs get nearly all of it.
    assert!(n >= 12 << 20, "ENOSPC after only {n} bytes of 16 MiB");
    let st = m.status();
    let size = st["store_size_bytes"]
        .as_u64()
        .expect("store size in status");
    let used = st["store_used_bytes"].as_u64().unwrap();
    let free = st["store_free_bytes"].as_u64().unwrap();
    let reserve = st["log_reserve_bytes"].as_u64().unwrap();
    assert_eq!(size, 16 << 20, "{st}");
    assert!(used + free <= size && used > size * 9 / 10, "{st}");
    assert!(reserve > 0 && reserve <= 1 << 20, "{st}");
    let warning = st["store_warning"].as_str().unwrap_or_default();
    assert!(warning.contains("full"), "no warning above 90%: {st}");
    let text = asdfs(["status", m.target.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("reserved for the store log") && text.contains("free"),
        "{text}"
    );
    assert!(
        m.log_tail().contains("full"),
        "nothing logged: {}",
        m.log_tail()
    );
    // Changes without data still go into the log's reserve.
    for i in 0..50 {
        fs::write(m.path(&format!("empty{i}")), b"").unwrap();
    }
    fs::create_dir(m.path("d")).unwrap();
    fs::rename(m.path("empty0"), m.path("d/moved")).unwrap();
    // A flush rewrites the log on the full tmpfs.
    m.flush();
    fs::rename(m.path("empty1"), m.path("d/moved1")).unwrap();
    assert_eq!(m.status()["log_failures"], 0);
    m.unmount();
    assert!(gone_within(pid, 10), "the daemon outlived its mount");
    assert_eq!(fs::metadata(m.path("big")).unwrap().len(), n);
    assert!(fs::read(m.path("big")).unwrap().iter().all(|b| *b == 7));
    assert!(m.path("d/moved").exists() && m.path("d/moved1").exists());
    assert!(m.path("empty49").exists());
    drop(small);
}

#[test]
fn a_daemon_killed_on_a_full_store_is_taken_over() {
    if !fuse_available() {
        return;
    }
    let (m, small) = on_small_store();
    let n = fill(&m, "big");
    fs::write(m.path("small"), b"x").unwrap_or(());
    fs::create_dir(m.path("dir")).unwrap();
    m.kill_daemon();
    let out = asdfs(m.mount_args());
    assert!(
        out.status.success(),
        "takeover on a full tmpfs failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        m.log_tail()
    );
    m.unmount();
    assert_eq!(fs::metadata(m.path("big")).unwrap().len(), n);
    assert!(m.path("dir").is_dir());
    drop(small);
}

#[test]
fn filling_the_store_from_several_writers_keeps_the_daemon_alive() {
    if !fuse_available() {
        return;
    }
    let (m, small) = on_small_store();
    let pid = m.daemon_pid().unwrap();
    let deadline = Instant::now() + Duration::from_secs(6);
    let errors: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|w| {
                let m = &m;
                s.spawn(move || {
                    let mut bad = Vec::new();
                    let mut round = 0;
                    let chunk = vec![w as u8; 64 << 10];
                    while Instant::now() < deadline {
                        round += 1;
                        let name = m.path(&format!("w{w}-{}", round % 3));
                        let r = (|| -> std::io::Result<()> {
                            let mut f = fs::File::create(&name)?;
                            for _ in 0..40 {
                                f.write_all(&chunk)?;
                            }
                            fs::create_dir_all(m.path(&format!("dir{w}/{round}")))?;
                            Ok(())
                        })();
                        match r {
                            Err(e) if e.raw_os_error() != Some(libc::ENOSPC) => {
                                bad.push(format!("writer {w}: {e}"));
                                break;
                            }
                            _ => {}
                        }
                    }
                    bad
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(errors.is_empty(), "{errors:?}\n{}", m.log_tail());
    assert!(m.is_mounted());
    assert_eq!(m.status()["log_failures"], 0);
    let out = asdfs(["unmount", m.target.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}\n{}\ndaemon: {:?}",
        String::from_utf8_lossy(&out.stderr),
        m.log_tail(),
        fs::read_dir(format!("/proc/{pid}/task")).map(|d| d
            .map(|t| {
                let t = t.unwrap().path();
                format!(
                    "{} {} {}",
                    fs::read_to_string(t.join("comm")).unwrap_or_default(),
                    fs::read_to_string(t.join("wchan")).unwrap_or_default(),
                    fs::read_to_string(t.join("stack")).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>())
    );
    assert!(gone_within(pid, 10), "the daemon outlived its mount");
    assert!(!m.is_mounted());
    assert!(m.path("dir0").is_dir());
    drop(small);
}

#[test]
fn a_final_flush_that_fails_keeps_the_mount_and_says_how_to_recover() {
    if !fuse_available() {
        return;
    }
    // The disk copy lives on a small filesystem of its own.
    let small = SmallDisk::new("asdfs-full-", "2m");
    let (target, vol) = (small.target.clone(), &small.vol);
    let t = target.to_str().unwrap();
    let out = asdfs([
        "mount",
        t,
        "--volatile",
        vol.path().to_str().unwrap(),
        "--flush-interval",
        "1h",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let guard = super::scopeguard(t);
    fs::write(target.join("huge"), vec![3u8; 3 << 20]).unwrap();
    let out = asdfs(["unmount", t]);
    assert!(
        !out.status.success(),
        "an unmount whose flush failed said it worked"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("still mounted") && err.contains("asdfs unmount"),
        "the message does not say how to recover: {err}"
    );
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        mounts.lines().any(|l| l.split(' ').nth(1) == Some(t)),
        "the mount is gone though its changes are only in RAM"
    );
    assert_eq!(fs::read(target.join("huge")).unwrap().len(), 3 << 20);
    // Room again: the unmount works and everything is on disk.
    std::process::Command::new("mount")
        .args(["-o", "remount,size=16m"])
        .arg(&small.fs.0)
        .status()
        .unwrap();
    let out = asdfs(["unmount", t]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::mem::forget(guard);
    assert_eq!(fs::read(target.join("huge")).unwrap().len(), 3 << 20);
}

/// A takeover with no room in the store for a fresh data file (design.md §3 "Descriptors of
/// the dead session"): the file held open for writing across the kill is written to disk by
/// the takeover's flush and leaves RAM, so a write through the dead session's descriptor
/// reaches nothing the new session reads; said in one line.
#[test]
fn a_full_store_takeover_leaves_a_stale_descriptor_nothing_to_write() {
    if !fuse_available() {
        return;
    }
    use std::os::unix::fs::FileExt;
    let mut m = Mount::prepare(|_| {});
    m.env.push(("ASDFS_DATA_PATH".into(), "passthrough".into()));
    let small = SmallFs::new(&m.volatile.path().join("asdfs"), "16m");
    m.mount();
    assert_eq!(m.status()["data_path"], "passthrough");
    let n = fill(&m, "big");
    let held = fs::OpenOptions::new()
        .write(true)
        .open(m.path("big"))
        .unwrap();
    m.kill_daemon();
    // --force: the start refuses while the holder writes (design.md §4.1).
    let mut args = m.mount_args();
    args.push("--force".into());
    let out = crate::harness::asdfs_env(args, &m.env);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "takeover failed: {said}");
    assert!(
        said.lines()
            .any(|l| l.contains("no room in the store for new data files") && l.contains("big")),
        "{said}"
    );
    held.write_at(b"EVIL", 0).unwrap();
    drop(held);
    let mut head = [0u8; 4];
    fs::File::open(m.path("big"))
        .unwrap()
        .read_exact_at(&mut head, 0)
        .unwrap();
    assert_eq!(
        head, [7u8; 4],
        "a stale descriptor wrote the new session's file"
    );
    m.unmount();
    let disk = m.disk_copy().join("big");
    assert_eq!(fs::metadata(&disk).unwrap().len(), n);
    fs::File::open(&disk)
        .unwrap()
        .read_exact_at(&mut head, 0)
        .unwrap();
    assert_eq!(head, [7u8; 4]);
    drop(small);
}
