//! Attacks: misc (see attack.rs). Targets that are no directories to keep (kernel
//! filesystems, files, missing paths) are refused before anything is created beside them;
//! many targets are checked in O(n log n); a reader that closes standard output cannot make
//! a command panic.

use super::*;
use crate::harness::{BIN, asdfs, fuse_available};
use std::os::fd::OwnedFd;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A config file naming `targets`, in a fresh directory.
fn config_with(targets: &[&Path]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("asdfs-attack-conf-")
        .tempdir_in("/tmp")
        .unwrap();
    let mut toml = String::new();
    for t in targets {
        toml += &format!("[[target]]\npath = \"{}\"\n\n", t.display());
    }
    let file = dir.path().join("asdfs.toml");
    std::fs::write(&file, toml).unwrap();
    (dir, file)
}

#[test]
fn config_check_refuses_kernel_filesystems_files_and_missing_paths() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let missing = dir.path().join("missing");
    let cases: [(&Path, &str); 5] = [
        (Path::new("/proc"), "the kernel's"),
        (Path::new("/sys"), "the kernel's"),
        (Path::new("/sys/fs/cgroup"), "the kernel's"),
        (&file, "not a directory"),
        (&missing, "no such directory"),
    ];
    for (target, why) in cases {
        let (_conf_dir, conf) = config_with(&[target]);
        let out = asdfs(["config", "check", conf.to_str().unwrap()]);
        let err = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{}: config check said ok: {}",
            target.display(),
            text(&out.stdout)
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&target.display().to_string()) && err.contains(why),
            "{}: {err}",
            target.display()
        );
    }
}

/// A private procfs mounted on a directory of its own, unmounted (with whatever asdfs put
/// over it) when dropped.
struct ProcAt {
    dir: tempfile::TempDir,
}

impl ProcAt {
    fn new() -> ProcAt {
        let dir = tempfile::Builder::new()
            .prefix("asdfs-attack-proc-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::create_dir(dir.path().join("p")).unwrap();
        let st = Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(dir.path().join("p"))
            .status()
            .unwrap();
        assert!(st.success(), "mounting a procfs");
        ProcAt { dir }
    }
    fn path(&self) -> PathBuf {
        self.dir.path().join("p")
    }
}

impl Drop for ProcAt {
    fn drop(&mut self) {
        let p = self.path();
        let _ = asdfs(["unmount", p.to_str().unwrap()]);
        for _ in 0..4 {
            let _ = Command::new("umount").arg("-l").arg(&p).status();
        }
    }
}

#[test]
fn mounting_a_kernel_filesystem_creates_nothing_beside_it() {
    if !fuse_available() {
        return;
    }
    let proc = ProcAt::new();
    let vol = tempfile::Builder::new()
        .prefix("asdfs-attack-vol-")
        .tempdir_in("/dev/shm")
        .unwrap();
    let target = proc.path();
    let out = asdfs([
        "mount",
        target.to_str().unwrap(),
        "--volatile",
        vol.path().to_str().unwrap(),
    ]);
    let side = proc.dir.path().join(".p-asdfs");
    let created = side.exists();
    assert!(!out.status.success(), "asdfs mounted over a procfs");
    assert!(!created, "{} was created", side.display());
    let err = text(&out.stderr);
    assert!(err.contains("kernel filesystem"), "{err}");
}

#[test]
fn ten_thousand_targets_are_checked_in_n_log_n() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let n = 10_000;
    let mut toml = String::new();
    for i in 0..n {
        let t = dir.path().join(format!("t{i}"));
        std::fs::create_dir(&t).unwrap();
        toml += &format!("[[target]]\npath = \"{}\"\n\n", t.display());
    }
    let conf = dir.path().join("asdfs.toml");
    std::fs::write(&conf, toml).unwrap();
    let start = Instant::now();
    let out = asdfs(["config", "check", conf.to_str().unwrap()]);
    let took = start.elapsed();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Quadratic checking took half a minute in a debug build; n log n takes well under one
    // second, so the bound is generous for a loaded machine.
    assert!(took < Duration::from_secs(8), "{n} targets took {took:?}");
}

/// Runs `cmd` with standard output a pipe whose reader has already gone.
fn with_closed_stdout(cmd: &mut Command) -> Output {
    let (read, write): (OwnedFd, OwnedFd) = nix::unistd::pipe().unwrap();
    drop(read);
    cmd.stdout(Stdio::from(write))
        .stderr(Stdio::piped())
        .env("ASDFS_LOG", "warn")
        .output()
        .expect("running asdfs")
}

#[track_caller]
fn quiet(what: &str, out: &Output) {
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(101), "{what}: {err}");
    assert!(!err.contains("panicked"), "{what}: {err}");
    assert!(
        out.status.code().is_some(),
        "{what}: killed: {}",
        out.status
    );
}

#[test]
fn a_closed_standard_output_never_makes_a_command_panic() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let target = dir.path().join("t");
    std::fs::create_dir(&target).unwrap();
    let (_conf_dir, conf) = config_with(&[&target]);
    let conf = conf.to_str().unwrap();
    let asd = dir.path().join("asd");
    std::os::unix::fs::symlink(BIN, &asd).unwrap();
    let asd_conf = dir.path().join("asd.conf");
    std::fs::write(&asd_conf, format!("WHATTOSYNC=('{}')\n", target.display())).unwrap();
    let t = target.to_str().unwrap();
    for args in [
        vec!["--help"],
        vec!["--version"],
        vec!["status"],
        vec!["status", "--json"],
        vec!["completions", "bash"],
        vec!["config", "check", conf],
        vec!["config", "import", asd_conf.to_str().unwrap()],
        vec!["snapshots", "list", t],
    ] {
        let out = with_closed_stdout(Command::new(BIN).args(&args));
        quiet(&args.join(" "), &out);
    }
    for verb in ["p", "--help"] {
        let out = with_closed_stdout(Command::new(&asd).arg(verb).env("ASDCONF", &asd_conf));
        quiet(&format!("asd {verb}"), &out);
    }
}

/// Finding (RAM-budget round): with FUSE passthrough, a file another process already held
/// open had its backing file in the kernel, so an open for writing by a user outside the
/// file's group went to the kernel too, which keeps set-group-ID without group execute
/// where a local filesystem drops it (design.md §4.1). The attacker's write must take the bit
/// away, as on ext4.
#[test]
fn a_write_through_a_shared_passthrough_file_drops_set_group_id() {
    if !fuse_available() {
        return;
    }
    const OTHER: u32 = ATTACKER + 1;
    let mut m = crate::harness::Mount::prepare(|t| {
        std::fs::write(t.join("sg"), b"bob's\n").unwrap();
        std::os::unix::fs::chown(t.join("sg"), Some(OTHER), Some(OTHER)).unwrap();
        std::fs::set_permissions(t.join("sg"), std::fs::Permissions::from_mode(0o2646)).unwrap();
        std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o755)).unwrap();
    });
    std::fs::set_permissions(m.disk.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    m.extra.extend(["--data-path".into(), "passthrough".into()]);
    m.mount();
    assert_eq!(m.status()["data_path"], "passthrough");
    // Any process holding the file open: the node gets its backing file.
    let held = std::fs::File::open(m.path("sg")).unwrap();
    let p = m.path("sg");
    as_attacker(move || {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .map_err(|e| e.to_string())?;
        f.write_all(b"attacker's\n").map_err(|e| e.to_string())
    })
    .unwrap();
    drop(held);
    m.unmount();
    let st = std::fs::metadata(m.disk_copy().join("sg")).unwrap();
    assert_eq!(
        std::fs::read(m.disk_copy().join("sg")).unwrap(),
        b"bob's\nattacker's\n"
    );
    assert_eq!(
        st.mode() & 0o7777,
        0o646,
        "set-group-ID kept after a write by a user outside the group"
    );
}

/// QA: a program in another mount namespace (`unshare -Urm` needs no privilege) keeps a copy
/// of the FUSE mount and with it the session; root's `asdfs unmount` waited for it as long
/// as it lived. It answers at once now, names the process, and the daemon writes the disk
/// copy once the copy is gone.
#[test]
fn a_mount_namespace_copy_does_not_hold_asdfs_unmount() {
    if !fuse_available() {
        return;
    }
    use std::io::{BufRead, Write};
    let m = crate::harness::Mount::new();
    std::fs::write(m.path("f"), b"data").unwrap();
    let _copies_mounts = crate::harness::NAMESPACES.write();
    let mut other = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            "echo ready; read x",
        ])
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(other.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    let pid = m.daemon_pid().unwrap();
    let started = Instant::now();
    let mut unmount = Command::new(BIN)
        .args(["unmount", m.target.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let answered = loop {
        if let Some(status) = unmount.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(15) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Let the namespace go in any case, so that nothing stays behind.
    let _ = writeln!(other.stdin.as_mut().unwrap());
    let _ = other.wait();
    let status = answered.expect("asdfs unmount waited for the other namespace");
    let out = unmount.wait_with_output().unwrap();
    assert!(status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("another mount namespace"), "{said}");
    assert!(said.contains(&other.id().to_string()), "{said}");
    let end = Instant::now() + Duration::from_secs(20);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!m.is_mounted());
    assert_eq!(std::fs::read(m.disk_copy().join("f")).unwrap(), b"data");
}
