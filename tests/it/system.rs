//! System integration: the mount(8) helper driven by `mount -t fuse.asdfs` and by an fstab
//! line (in private mount namespaces, so nothing reaches the machine's mount table),
//! `systemd-analyze verify` of every unit, install/uninstall, the sleep hook, unprivileged
//! users, and a real systemd booted in a container (systemd-nspawn over an overlay of this
//! machine's root) that must write every kind of asdfs mount back when powered off
//! (`system/container.rs`).

use crate::harness::{BIN, Mount, fuse_available};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Whether this test can run here: without `what` it prints why and passes, or fails in CI.
fn needs(what: &str, ok: bool) -> bool {
    if ok {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("required in CI: {what}");
    }
    eprintln!("skipping: {what}");
    false
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn has_tool(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .any(|d| d.join(name).is_file())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// The mount helper, built once per test run in its own target directory (the outer cargo
/// builds only the asdfs package for its tests).
fn helper_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("mount-helper");
            let out = Command::new(option_env!("CARGO").unwrap_or("cargo"))
                .args(["build", "--quiet", "--locked", "--offline"])
                .args(["-p", "asdfs-mount-helper", "--target-dir"])
                .arg(&dir)
                .current_dir(REPO)
                .output()
                .expect("running cargo");
            assert!(
                out.status.success(),
                "building the mount helper: {}",
                describe(&out)
            );
            dir.join("debug/mount-fuse-asdfs")
        })
        .clone()
}

/// A directory on disk (/tmp) that every user may enter.
fn open_dir(prefix: &str) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("tempdir");
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// asdfs and the helper side by side (the install layout: the helper finds asdfs beside
/// itself), in a directory other users can execute from.
struct Bins {
    dir: tempfile::TempDir,
}

impl Bins {
    fn new() -> Bins {
        let dir = open_dir("asdfs-it-bin-");
        for (from, name) in [
            (PathBuf::from(BIN), "asdfs"),
            (helper_bin(), "mount-fuse-asdfs"),
        ] {
            let to = dir.path().join(name);
            if fs::hard_link(&from, &to).is_err() {
                fs::copy(&from, &to).expect("copying a binary");
            }
        }
        Bins { dir }
    }
    fn asdfs(&self) -> PathBuf {
        self.dir.path().join("asdfs")
    }
    fn helper(&self) -> PathBuf {
        self.dir.path().join("mount-fuse-asdfs")
    }
}

/// Kills, when dropped, every asdfs process whose command line names `marker` (a test's
/// unique directory): daemons left in a private mount namespace by a failed test, whose
/// mounts then vanish with the namespace.
struct Reaper {
    marker: String,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in pids_matching(&self.marker) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn pids_matching(marker: &str) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = text(&cmd);
            cmd.contains("asdfs") && cmd.contains(marker)
        })
        .collect()
}

/// Waits until no asdfs process names `marker` any more (zombies count as gone).
fn wait_daemons_gone(marker: &str) {
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let alive: Vec<i32> = pids_matching(marker)
            .into_iter()
            .filter(|pid| {
                let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let state = stat.rsplit(')').next().unwrap_or("").trim_start();
                !state.starts_with('Z')
            })
            .collect();
        if alive.is_empty() {
            return;
        }
        assert!(
            Instant::now() < end,
            "asdfs daemons still running: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a shell script in a private mount namespace: its mounts never reach the rest of
/// the machine and vanish with the last process in it. Variables come in the environment.
fn sh_private(script: &str, vars: &[(&str, &OsStr)]) -> Output {
    let _copies_mounts = crate::harness::NAMESPACES.write();
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script])
        .envs(vars.iter().copied())
        .env("ASDFS_LOG", "warn")
        .output()
        .expect("running unshare")
}

/// Script lines run first: `$WORK/peek` shows the disk copies underneath later mounts, and
/// the helper is put where mount(8) looks for it (/sbin) with an overlay seen only in the
/// namespace: the machine's /sbin is left alone; so is its utab (/run/mount).
const HELPER_IN_SBIN: &str = r#"
mkdir -p "$WORK/peek" && mount --bind "$WORK" "$WORK/peek" || exit 89
sbin=$(realpath /sbin)
mkdir -p "$WORK/ov/upper" "$WORK/ov/work"
ln -s "$HELPER" "$WORK/ov/upper/mount.fuse.asdfs"
mount -t overlay overlay -o "lowerdir=$sbin,upperdir=$WORK/ov/upper,workdir=$WORK/ov/work" "$sbin" || exit 90
mkdir -p /run/mount && mount -t tmpfs tmpfs /run/mount || exit 87
"#;

fn can_mount_in_namespaces() -> bool {
    fuse_available()
        && needs("root (mount namespaces)", is_root())
        && needs("unshare (util-linux)", has_tool("unshare"))
        && needs(
            "overlayfs",
            fs::read_to_string("/proc/filesystems")
                .unwrap_or_default()
                .contains("overlay"),
        )
}

/// A disk directory with a target `t` holding `old` and `gone`, plus a volatile directory.
struct Scene {
    work: tempfile::TempDir,
    vol: tempfile::TempDir,
    bins: Bins,
    _reaper: Reaper,
}

impl Scene {
    fn new() -> Scene {
        let work = open_dir("asdfs-it-sys-");
        let t = work.path().join("t");
        fs::create_dir(&t).unwrap();
        fs::write(t.join("old"), b"from disk").unwrap();
        fs::write(t.join("gone"), b"delete me").unwrap();
        let vol = tempfile::Builder::new()
            .prefix("asdfs-it-vol-")
            .tempdir_in("/dev/shm")
            .unwrap();
        let marker = work.path().display().to_string();
        Scene {
            work,
            vol,
            bins: Bins::new(),
            _reaper: Reaper { marker },
        }
    }
    fn target(&self) -> PathBuf {
        self.work.path().join("t")
    }
    fn run(&self, script: &str) -> Output {
        let t = self.target();
        let helper = self.bins.helper();
        let asdfs = self.bins.asdfs();
        sh_private(
            &format!("{HELPER_IN_SBIN}\n{script}"),
            &[
                ("WORK", self.work.path().as_os_str()),
                ("T", t.as_os_str()),
                ("VOL", self.vol.path().as_os_str()),
                ("HELPER", helper.as_os_str()),
                ("ASDFS", asdfs.as_os_str()),
            ],
        )
    }
    /// After the script: the daemon has exited and the disk copy holds what was written.
    fn check_written_back(&self, out: &Output) {
        wait_daemons_gone(&self.work.path().display().to_string());
        let t = self.target();
        let read = |n: &str| fs::read_to_string(t.join(n)).ok();
        assert_eq!(
            read("new").as_deref(),
            Some("made in RAM\n"),
            "{}",
            describe(out)
        );
        assert_eq!(read("old").as_deref(), Some("changed\n"));
        assert_eq!(read("gone"), None);
    }
}

/// Writes into the mount, records its status, unmounts with umount(8).
const WRITE_AND_UMOUNT: &str = r#"
echo "made in RAM" > "$T/new" && echo changed > "$T/old" && rm "$T/gone" || exit 91
"$ASDFS" status --json "$T" > "$WORK/status.json"
test -e "$WORK/peek/t/new" && echo "on disk before umount"
umount "$T" || exit 92
echo umounted
"#;

#[test]
fn helper_refuses_unknown_options_and_fakes_with_f() {
    let bins = Bins::new();
    let run = |args: &[&str]| {
        Command::new(bins.helper())
            .args(args)
            .env("ASDFS_BIN", bins.asdfs())
            .output()
            .unwrap()
    };
    let out = run(&["/tmp", "/tmp", "-o", "flush_interval=1h,size=1G"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(
        text(&out.stderr).trim(),
        "mount.fuse.asdfs: unknown option \"size=1G\" (asdfs options: flush_interval, fsync, \
         volatile, backups, backup_limit, mode, hardlink_check, foreground, force)"
    );
    let out = run(&["/tmp", "/tmp", "-o", "ro"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("read-only"),
        "{}",
        describe(&out)
    );
    let out = run(&["/var", "/tmp"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("the source must be the mount point"));
    // -f is mount(8)'s "fake": the call is checked and shown, nothing is mounted.
    let out = run(&[
        "/tmp",
        "/tmp",
        "-f",
        "-o",
        "defaults,fsync=sync,x-systemd.after=a",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stderr).ends_with("asdfs mount --fsync=sync --quiet -- /tmp\n"),
        "{}",
        describe(&out)
    );
}

/// An option's value that starts with `-` reaches asdfs as that option's value (one
/// `--flag=VALUE` word), never as a flag of its own.
#[test]
fn helper_passes_option_values_that_start_with_a_dash_as_values() {
    let bins = Bins::new();
    let dir = open_dir("asdfs-it-dash-");
    let t = dir.path().to_str().unwrap();
    let run = |opts: &str| {
        Command::new(bins.helper())
            .args([t, t, "-o", opts])
            .env("ASDFS_BIN", bins.asdfs())
            .output()
            .unwrap()
    };
    let out = run("backup_limit=-1");
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("invalid value '-1' for '--backup-limit"),
        "{}",
        describe(&out)
    );
    let out = run("volatile=--help");
    // A usage error of asdfs (exit 2): mount(8)'s "bad call".
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("--help") && text(&out.stderr).contains("absolute path"),
        "{}",
        describe(&out)
    );
}

#[test]
fn mount_t_fuse_asdfs_with_options_then_umount_writes_back() {
    if !can_mount_in_namespaces() {
        return;
    }
    let s = Scene::new();
    let out = s.run(&format!(
        r#"
mount -t fuse.asdfs "$T" "$T" -o "flush_interval=15min,backups=no,volatile=$VOL,nosuid,nofail,_netdev" || exit 93
grep " $T " /proc/self/mountinfo
mount -t fuse.asdfs "$T" "$T" -o bogus=1 2>&1 && exit 94
{WRITE_AND_UMOUNT}"#
    ));
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = text(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains(" - fuse.asdfs "))
        .unwrap_or_default();
    assert!(line.contains(" - fuse.asdfs "), "{stdout}");
    assert!(line.contains("nosuid"), "nosuid not applied: {line}");
    assert!(stdout.contains("unknown option \"bogus=1\""), "{stdout}");
    assert!(stdout.contains("umounted"), "{stdout}");
    assert!(!stdout.contains("on disk before umount"), "{stdout}");
    let status: serde_json::Value =
        serde_json::from_slice(&fs::read(s.work.path().join("status.json")).unwrap()).unwrap();
    assert_eq!(status[0]["flush_interval_secs"], 900, "{status}");
    s.check_written_back(&out);
}

#[test]
fn fstab_entry_is_mounted_by_mount_and_written_back_at_umount() {
    if !can_mount_in_namespaces() {
        return;
    }
    let s = Scene::new();
    let fstab = s.work.path().join("fstab");
    fs::write(
        &fstab,
        format!(
            "# test fstab\n{t} {t} fuse.asdfs defaults,noauto,flush_interval=15min,volatile={v},x-systemd.requires-mounts-for=/tmp 0 0\n",
            t = s.target().display(),
            v = s.vol.path().display()
        ),
    )
    .unwrap();
    let out = s.run(&format!(
        r#"
mount --bind "$WORK/fstab" /etc/fstab || exit 95
mount "$T" || exit 96
findmnt -n -o FSTYPE,SOURCE "$T"
{WRITE_AND_UMOUNT}"#
    ));
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!("fuse.asdfs {}\n", s.target().display())),
        "{stdout}"
    );
    assert!(!stdout.contains("on disk before umount"), "{stdout}");
    s.check_written_back(&out);
}

/// An installation under `prefix` (inside `destdir` if given), from this build.
#[test]
fn sleep_hook_flushes_every_mount() {
    if !can_mount_in_namespaces() {
        return;
    }
    let s = Scene::new();
    fs::create_dir(s.work.path().join("t2")).unwrap();
    let hook = Path::new(REPO).join("systemd/flush-all");
    // Only this test's mounts are visible to the hook: the namespace's copies of other
    // tests' mounts (FUSE and overlay mode) are detached first (their daemons are not
    // affected). `peek` shows the
    // disk copies underneath.
    let out = s.run(&format!(
        r#"
for m in $(findmnt -rn -t fuse.asdfs -o TARGET) $(findmnt -rn -t overlay -S asdfs -o TARGET); do umount -l "$m"; done
"$ASDFS" mount "$T" --volatile "$VOL" --flush-interval 1h || exit 98
"$ASDFS" mount "$WORK/t2" --volatile "$VOL" --flush-interval 1h || exit 98
echo one > "$T/new"; echo two > "$WORK/t2/new"
test -e "$WORK/peek/t/new" && echo "on disk before the hook"
ASDFS="$ASDFS" sh {hook} || echo "hook failed"
cat "$WORK/peek/t/new" "$WORK/peek/t2/new"
"$ASDFS" unmount "$T"; "$ASDFS" unmount "$WORK/t2"
"#,
        hook = hook.display()
    ));
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("on disk before"), "{}", describe(&out));
    assert!(!stdout.contains("hook failed"), "{}", describe(&out));
    assert!(stdout.contains("one\ntwo\n"), "{}", describe(&out));
    assert_eq!(stdout.matches("flushed 1 file,").count(), 2, "{stdout}");
    wait_daemons_gone(&s.work.path().display().to_string());
}

/// The unprivileged account used for user tests: `nobody`, present on every Debian system.
fn nobody() -> Option<(u32, u32)> {
    let u = nix::unistd::User::from_name("nobody").ok()??;
    Some((u.uid.as_raw(), u.gid.as_raw()))
}

#[test]
fn a_user_mounts_a_directory_they_own_and_is_refused_one_they_do_not() {
    if !can_mount_in_namespaces()
        || !needs("setpriv (util-linux)", has_tool("setpriv"))
        || !needs(
            "fusermount3 (fuse3)",
            Path::new("/usr/bin/fusermount3").exists(),
        )
        || !needs("a user named nobody", nobody().is_some())
    {
        return;
    }
    let (uid, gid) = nobody().unwrap();
    let s = Scene::new();
    let home = s.work.path().join("home");
    for d in ["home", "home/mine"] {
        fs::create_dir(s.work.path().join(d)).unwrap();
        nix::unistd::chown(&s.work.path().join(d), Some(uid.into()), Some(gid.into())).unwrap();
    }
    fs::create_dir(home.join("theirs")).unwrap();
    fs::set_permissions(home.join("theirs"), fs::Permissions::from_mode(0o777)).unwrap();
    nix::unistd::chown(s.vol.path(), Some(uid.into()), Some(gid.into())).unwrap();
    // Debian's udev rule makes /dev/fuse 0666; a machine without udev (like a bare VM) may
    // have 0600. The namespace gets a 0666 node, as udev would make.
    nix::sys::stat::mknod(
        &s.work.path().join("fuse"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(10, 229),
    )
    .unwrap();
    fs::set_permissions(
        s.work.path().join("fuse"),
        fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let out = s.run(&format!(
        r#"
mount --bind "$WORK/fuse" /dev/fuse || exit 99
u() {{ setpriv --reuid={uid} --regid={gid} --clear-groups -- "$@"; }}
H="$WORK/home"
u "$ASDFS" mount "$H/mine" --mode overlay --data-path auto --volatile "$VOL" --flush-interval 1h 2>"$WORK/said" && echo "mine mounted"
sed 's/^/said: /' "$WORK/said"
echo "mine is $(findmnt -n -o FSTYPE "$H/mine")"
u sh -c 'echo user-data > "$1/mine/new"' - "$H" || echo "write failed"
u "$ASDFS" status --json "$H/mine" | grep -o '"data_path": *"[a-z]*"' | sed 's/^/path: /'
u "$ASDFS" flush "$H/mine" >/dev/null && echo "mine flushed"
u "$ASDFS" mount "$H/theirs" --volatile "$VOL" 2>&1 && echo "theirs mounted"
echo "theirs is $(findmnt -n -o FSTYPE "$H/theirs")"
u "$ASDFS" unmount "$H/mine" >/dev/null && echo "mine unmounted"
"#
    ));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("mine mounted\n"), "{}", describe(&out));
    assert!(stdout.contains("mine flushed\n"), "{}", describe(&out));
    assert!(!stdout.contains("write failed"), "{}", describe(&out));
    assert!(!stdout.contains("theirs mounted"), "{}", describe(&out));
    assert!(stdout.contains("theirs is \n"), "{}", describe(&out));
    // Overlay mode needs root: the user is told so in one line and gets FUSE mode.
    let said: Vec<&str> = stdout.lines().filter(|l| l.starts_with("said: ")).collect();
    assert_eq!(said.len(), 1, "{}", describe(&out));
    assert!(
        said[0].contains("overlay mode needs root") && said[0].contains("FUSE mode"),
        "{}",
        describe(&out)
    );
    assert!(
        stdout.contains("mine is fuse.asdfs\n"),
        "{}",
        describe(&out)
    );
    assert!(
        stdout.contains(&format!("not by you (uid {uid})")),
        "{}",
        describe(&out)
    );
    assert!(stdout.contains("mine unmounted\n"), "{}", describe(&out));
    // No FUSE passthrough for a user: the kernel gives backing files to root only.
    let path: Vec<&str> = stdout.lines().filter(|l| l.starts_with("path: ")).collect();
    assert!(
        path.len() == 1 && path[0].ends_with("\"daemon\""),
        "{}",
        describe(&out)
    );
    wait_daemons_gone(&s.work.path().display().to_string());
    assert_eq!(
        fs::read_to_string(home.join("mine/new")).unwrap(),
        "user-data\n"
    );
}

#[test]
fn a_user_cannot_command_a_mount_of_a_directory_they_do_not_own() {
    if !fuse_available()
        || !needs("root", is_root())
        || !needs("setpriv (util-linux)", has_tool("setpriv"))
        || !needs("a user named nobody", nobody().is_some())
    {
        return;
    }
    let (uid, gid) = nobody().unwrap();
    let m = Mount::new();
    // Let the user reach the target and the store: the control socket's mode (or, were it
    // open, the daemon's own check) is what refuses.
    fs::set_permissions(m.disk.path(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(m.volatile.path(), fs::Permissions::from_mode(0o711)).unwrap();
    fs::write(m.path("new"), b"in RAM").unwrap();
    let bins = Bins::new();
    for verb in ["flush", "unmount"] {
        let out = Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
                "--clear-groups",
                "--",
            ])
            .arg(bins.asdfs())
            .arg(verb)
            .arg(&m.target)
            .output()
            .unwrap();
        // Refused by the daemon: the socket was reached, the command not carried out.
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{verb}: {}", describe(&out));
        assert!(
            !err.contains("not kept in RAM") && !err.contains("connecting to"),
            "{verb}: {}",
            describe(&out)
        );
    }
    assert!(m.is_mounted());
    assert!(!m.disk_copy().join("new").exists(), "the user's flush ran");
}

/// A user's `flush` or `unmount` of someone else's directory that is not in RAM says it is
/// not in RAM (it said "it is root's directory in RAM").
#[test]
fn a_user_commanding_someone_elses_directory_not_in_ram_is_not_told_it_is_in_ram() {
    if !needs("root", is_root())
        || !needs("setpriv (util-linux)", has_tool("setpriv"))
        || !needs("a user named nobody", nobody().is_some())
    {
        return;
    }
    let (uid, gid) = nobody().unwrap();
    let dir = open_dir("asdfs-notram-");
    let bins = Bins::new();
    for verb in ["flush", "unmount"] {
        let out = Command::new("setpriv")
            .args([
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
                "--clear-groups",
                "--",
            ])
            .arg(bins.asdfs())
            .arg(verb)
            .arg(dir.path())
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{verb}: {}", describe(&out));
        assert!(
            err.contains("not kept in RAM"),
            "{verb}: {}",
            describe(&out)
        );
        assert!(
            !err.contains("directory in RAM"),
            "{verb}: {}",
            describe(&out)
        );
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{verb}: {}",
            describe(&out)
        );
    }
}

mod container;
mod install;
mod lifecycle;
mod remount;

/// Issue 15: `mount --all` twice succeeds as `asd sync` twice does; `flush --all` and
/// `unmount --all` act on every mount of the namespace, so the sleep hook needs no JSON.
#[test]
fn issue_15_mount_flush_and_unmount_all() {
    if !can_mount_in_namespaces() {
        return;
    }
    let s = Scene::new();
    fs::create_dir(s.work.path().join("t2")).unwrap();
    let out = s.run(
        r#"
for m in $(findmnt -rn -t fuse.asdfs -o TARGET) $(findmnt -rn -t overlay -S asdfs -o TARGET); do umount -l "$m"; done
printf '[defaults]\nvolatile = "%s"\nflush_interval = "1h"\n[[target]]\npath = "%s"\n[[target]]\npath = "%s"\n' \
    "$VOL" "$T" "$WORK/t2" > "$WORK/asdfs.toml"
"$ASDFS" mount --all --config "$WORK/asdfs.toml" || exit 98
"$ASDFS" mount --all --config "$WORK/asdfs.toml" || echo "second mount --all failed"
echo one > "$T/new"; echo two > "$WORK/t2/new"
"$ASDFS" flush --all || echo "flush --all failed"
cat "$WORK/peek/t/new" "$WORK/peek/t2/new"
"$ASDFS" unmount --all || echo "unmount --all failed"
echo "left: $(findmnt -rn -t fuse.asdfs -o TARGET | wc -l)"
"#,
    );
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("failed"), "{}", describe(&out));
    assert!(stdout.contains("is already in RAM"), "{}", describe(&out));
    assert!(stdout.contains("one\ntwo\n"), "{}", describe(&out));
    assert!(stdout.contains("left: 0"), "{}", describe(&out));
    wait_daemons_gone(&s.work.path().display().to_string());
}
