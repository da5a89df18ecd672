//! Issue 11: what goes around the mount. Programs holding files under the target from
//! before the mount (refused, or with --force their writes kept as conflict copies), hard
//! links that leave the target (refused unless the check is off), and asd's names for the
//! backups and snapshots of dot-directories.

use crate::harness::{Mount, asdfs, asdfs_env, fuse_available};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A `sleep` that holds `file` open for appending, started before the mount; killed at the
/// end of the test.
struct Holder(Child);

impl Holder {
    fn start(file: &Path) -> Holder {
        let child = Command::new("sh")
            .arg("-c")
            .arg("exec 8>>\"$1\"; exec sleep 120")
            .arg("sh")
            .arg(file)
            .spawn()
            .unwrap();
        let h = Holder(child);
        let end = Instant::now() + Duration::from_secs(10);
        while !h.is_sleeping() {
            assert!(Instant::now() < end, "the holder did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        h
    }

    fn is_sleeping(&self) -> bool {
        let pid = self.0.id();
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        comm.trim() == "sleep" && Path::new(&format!("/proc/{pid}/fd/8")).exists()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mount_output(m: &Mount) -> (bool, String) {
    let out = asdfs_env(m.mount_args(), &m.env);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), text)
}

#[test]
fn issue11_a_holder_from_before_the_mount_refuses_it_and_force_mounts() {
    if !fuse_available() {
        return;
    }
    let mut m = Mount::prepare(|t| {
        fs::create_dir(t.join("logs")).unwrap();
        fs::write(t.join("logs/x"), b"start\n").unwrap();
    });
    let holder = Holder::start(&m.path("logs/x"));
    let (ok, err) = mount_output(&m);
    assert!(!ok && !m.is_mounted(), "mounted despite a holder: {err}");
    let want = format!(
        "pid {} (sleep) holds {}",
        holder.0.id(),
        m.path("logs/x").display()
    );
    assert!(err.contains(&want), "{want:?} not in: {err}");
    assert!(err.contains("--force"), "the way out is not named: {err}");
    // Nothing was left behind by the refused start.
    assert!(!m.side().join("session").exists());
    m.extra.push("--force".into());
    m.mount();
    assert_eq!(fs::read(m.path("logs/x")).unwrap(), b"start\n");
}

#[test]
fn issue11_a_file_appended_behind_the_mount_is_kept_as_a_conflict_copy() {
    if !fuse_available() {
        return;
    }
    let mut m = Mount::prepare(|t| {
        fs::create_dir(t.join("logs")).unwrap();
        fs::write(t.join("logs/x"), b"start\n").unwrap();
    });
    // Opened before the mount: writes through it reach the disk file.
    let mut behind = fs::OpenOptions::new()
        .append(true)
        .custom_flags(0)
        .open(m.path("logs/x"))
        .unwrap();
    m.extra.push("--force".into());
    m.mount();
    m.wait_backup();
    let mut through = fs::OpenOptions::new()
        .append(true)
        .open(m.path("logs/x"))
        .unwrap();
    through.write_all(b"ram\n").unwrap();
    drop(through);
    behind.write_all(b"disk\n").unwrap();
    behind.sync_all().unwrap();
    m.flush();
    // The RAM version is at the name, in the mount and on disk.
    assert_eq!(fs::read(m.path("logs/x")).unwrap(), b"start\nram\n");
    assert_eq!(
        fs::read(m.disk_copy().join("logs/x")).unwrap(),
        b"start\nram\n"
    );
    // The disk version is beside the target, where the crash snapshots go.
    let copies: Vec<PathBuf> = fs::read_dir(m.disk.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".t-backup_asd-conflict-")
        })
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(fs::read(&copies[0]).unwrap(), b"start\ndisk\n");
    let copy = copies[0].display().to_string();
    let status = m.status();
    assert!(status["conflicts"].to_string().contains(&copy), "{status}");
    let text =
        String::from_utf8_lossy(&asdfs(["status", m.target.to_str().unwrap()]).stdout).into_owned();
    assert!(text.contains(&copy), "{text}");
    assert!(m.log_tail().contains("conflict"), "{}", m.log_tail());
    // A later flush of an unchanged disk file keeps no copy.
    fs::write(m.path("logs/x"), b"again\n").unwrap();
    m.flush();
    assert_eq!(m.status()["conflicts"].as_array().unwrap().len(), 1);
}

#[test]
fn issue11_files_whose_times_a_flush_set_are_not_conflicts() {
    if !fuse_available() {
        return;
    }
    let m = Mount::with(|t| fs::write(t.join("f"), b"disk\n").unwrap());
    m.wait_backup();
    assert_eq!(fs::read(m.path("f")).unwrap(), b"disk\n");
    let f = fs::OpenOptions::new()
        .write(true)
        .open(m.path("f"))
        .unwrap();
    let then = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    f.set_modified(then).unwrap();
    drop(f);
    m.flush();
    fs::write(m.path("f"), b"ram\n").unwrap();
    m.flush();
    assert_eq!(fs::read(m.disk_copy().join("f")).unwrap(), b"ram\n");
    assert_eq!(m.status()["conflicts"], serde_json::json!([]));
}

#[test]
fn issue11_hard_links_outside_the_target_refuse_the_mount_unless_the_check_is_off() {
    if !fuse_available() {
        return;
    }
    let mut m = Mount::prepare(|t| {
        fs::write(t.join("shared"), b"one").unwrap();
        fs::write(t.join("inside"), b"two").unwrap();
        fs::hard_link(t.join("inside"), t.join("inside-too")).unwrap();
    });
    fs::hard_link(m.path("shared"), m.disk.path().join("outside")).unwrap();
    let (ok, err) = mount_output(&m);
    assert!(
        !ok && !m.is_mounted(),
        "mounted despite an outside link: {err}"
    );
    assert!(
        err.contains(&m.path("shared").display().to_string()),
        "the file is not named: {err}"
    );
    assert!(
        !err.contains(&m.path("inside").display().to_string()),
        "links inside the target are not outside: {err}"
    );
    assert!(err.contains("--hardlink-check no"), "{err}");
    m.extra.extend(["--hardlink-check".into(), "no".into()]);
    m.mount();
    // The hardlink backup's links are not outside links: after a reboot (the backup is
    // still there) the target mounts with the check on once the outside link is gone.
    m.wait_backup();
    assert!(m.disk.path().join(".t-backup_asd-old/shared").exists());
    m.kill_daemon();
    let _ = Command::new("umount").arg("-l").arg(&m.target).status();
    m.lose_store();
    m.extra.truncate(m.extra.len() - 2);
    fs::remove_file(m.disk.path().join("outside")).unwrap();
    m.mount();
}

#[test]
fn issue11_asd_conf_hardlink_check_off_mounts() {
    if !fuse_available() {
        return;
    }
    let m = Mount::prepare(|t| fs::write(t.join("shared"), b"one").unwrap());
    fs::hard_link(m.path("shared"), m.disk.path().join("outside")).unwrap();
    let conf = m.disk.path().join("asd.conf");
    let text = |check: u8| {
        format!(
            "WHATTOSYNC=({})\nVOLATILE={}\nENABLE_HARDLINK_SAFETY_CHECK={check}\n",
            m.target.display(),
            m.volatile.path().display()
        )
    };
    fs::write(&conf, text(1)).unwrap();
    let args = |conf: &Path| {
        vec![
            "mount".to_string(),
            m.target.display().to_string(),
            "--config".into(),
            conf.display().to_string(),
        ]
    };
    let out = asdfs(args(&conf));
    assert!(!out.status.success() && !m.is_mounted());
    fs::write(&conf, text(0)).unwrap();
    let out = asdfs(args(&conf));
    assert!(
        out.status.success() && m.is_mounted(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A target named `.t` (a dot-directory, like `~/.mozilla`).
fn dot_target() -> Mount {
    let mut m = Mount::prepare(|t| fs::write(t.join("f"), b"1").unwrap());
    let dotted = m.disk.path().join(".t");
    fs::rename(&m.target, &dotted).unwrap();
    m.target = dotted;
    m
}

#[test]
fn issue11_dot_directories_get_asds_names() {
    if !fuse_available() {
        return;
    }
    let m = dot_target();
    let disk = m.disk.path();
    // A backup and a snapshot under the double-dot names asdfs used to write.
    fs::create_dir(disk.join("..t-backup_asd-old")).unwrap();
    fs::write(disk.join("..t-backup_asd-old/f"), b"0").unwrap();
    let legacy = disk.join("..t-backup_asd-crashrecovery-20000101_000000.tar.zstd");
    fs::write(&legacy, b"not really zstd").unwrap();
    m.mount();
    m.wait_backup();
    assert!(disk.join(".t-backup_asd-old/f").exists());
    assert!(!disk.join("..t-backup_asd-old").exists());
    // A reboot: the crash snapshot gets asd's name.
    m.kill_daemon();
    let _ = Command::new("umount").arg("-l").arg(&m.target).status();
    m.lose_store();
    m.mount();
    m.wait_crash_snapshot();
    let names: Vec<String> = fs::read_dir(disk)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("crashrecovery"))
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with(".t-backup_asd-crashrecovery-")),
        "{names:?}"
    );
    // Both are listed and cleaned, as asd's `c` would.
    let list = asdfs(["snapshots", "list", m.target.to_str().unwrap()]);
    let list = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(list.contains(".t-backup_asd-crashrecovery-"), "{list}");
    assert!(list.contains(legacy.to_str().unwrap()), "{list}");
    let clean = asdfs(["snapshots", "clean", m.target.to_str().unwrap()]);
    assert!(clean.status.success());
    assert!(!legacy.exists());
    assert!(!fs::read_dir(disk).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .contains("crashrecovery")
    }));
}
