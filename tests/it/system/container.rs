//! A real systemd, booted with systemd-nspawn from an overlay of this machine's root
//! (no download; the overlay's upper layer on /dev/shm takes every change), with asdfs
//! installed by scripts/install. Two machines, booted side by side:
//! - three directories in RAM: a system unit, an fstab line and a user's unit (a lingering
//!   user);
//! - anything-sync-daemon's way: /etc/asd.conf with two targets and asd.service enabled,
//!   `asd-resync.service` run while up, a file kept open through the power-off.
//!
//! After `systemctl poweroff` the disk copies must hold what was written, and the journal
//! must show the final flush before the filesystem underneath was unmounted.

use super::{Bins, REPO, can_mount_in_namespaces, describe, has_tool, needs, open_dir, text};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Container {
    root: PathBuf,
    data: PathBuf,
    uid: u32,
    /// The user's primary group (not the uid's number: the machine's groups may have taken it).
    gid: u32,
    nspawn: Option<Child>,
    init: i32,
    _layers: tempfile::TempDir,
    _disk: tempfile::TempDir,
    /// Its namespace copies the machine's mounts (see `harness::NAMESPACES`).
    _copies_mounts: parking_lot::RwLockWriteGuard<'static, ()>,
}

fn available() -> bool {
    can_mount_in_namespaces()
        && needs(
            "systemd-nspawn (systemd-container)",
            has_tool("systemd-nspawn"),
        )
        && needs("nsenter, useradd, systemctl", {
            ["nsenter", "useradd", "systemctl"]
                .iter()
                .all(|t| has_tool(t))
        })
        && needs(
            "systemd on this machine's root filesystem",
            Path::new("/lib/systemd/systemd").exists(),
        )
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("running a command");
    assert!(out.status.success(), "{cmd:?}: {}", describe(&out));
    out
}

impl Container {
    fn prepare(bins: &Bins) -> Container {
        let layers = tempfile::Builder::new()
            .prefix("asdfs-it-ct-")
            .tempdir_in("/dev/shm")
            .unwrap();
        let disk = open_dir("asdfs-it-ctdisk-");
        let root = layers.path().join("root");
        for d in ["upper", "work", "root"] {
            fs::create_dir(layers.path().join(d)).unwrap();
        }
        let l = layers.path().display();
        run(Command::new("mount")
            .args([
                "-t",
                "overlay",
                "overlay",
                "-o",
                &format!("lowerdir=/,upperdir={l}/upper,workdir={l}/work"),
            ])
            .arg(&root));
        let mut c = Container {
            root,
            data: disk.path().join("data"),
            uid: 0,
            gid: 0,
            nspawn: None,
            init: 0,
            _layers: layers,
            _disk: disk,
            _copies_mounts: crate::harness::NAMESPACES.write(),
        };
        c.configure(bins);
        c
    }

    fn at(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    /// The machine's own services stay off; asdfs is installed, nothing of it enabled yet.
    fn configure(&mut self, bins: &Bins) {
        for wants in ["multi-user", "timers", "getty"] {
            let d = self.at(&format!("etc/systemd/system/{wants}.target.wants"));
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(&d).unwrap();
        }
        let id = fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap();
        fs::write(self.at("etc/machine-id"), id.trim().replace('-', "") + "\n").unwrap();
        fs::create_dir_all(self.at("var/log/journal")).unwrap();
        let out = Command::new(Path::new(REPO).join("scripts/install"))
            .env("DESTDIR", &self.root)
            .env("PREFIX", "/usr")
            .env("BUILD_DIR", bins.dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "install: {}", describe(&out));
        fs::create_dir(&self.data).unwrap();
    }

    fn systemctl_offline(&self, args: &[&str]) {
        run(Command::new("systemctl")
            .arg(format!("--root={}", self.root.display()))
            .args(args));
    }

    /// Writes a file under the container's root, making its directories.
    fn put(&self, path: &str, contents: &str) {
        let p = self.at(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, contents).unwrap();
    }

    fn add_user(&mut self) {
        run(Command::new("useradd")
            .arg("--root")
            .arg(&self.root)
            .args(["-m", "asdfsit"]));
        let passwd = fs::read_to_string(self.at("etc/passwd")).unwrap();
        let line = passwd.lines().find(|l| l.starts_with("asdfsit:")).unwrap();
        self.uid = line.split(':').nth(2).unwrap().parse().unwrap();
        self.gid = line.split(':').nth(3).unwrap().parse().unwrap();
        fs::create_dir_all(self.at("var/lib/systemd/linger")).unwrap();
        fs::write(self.at("var/lib/systemd/linger/asdfsit"), b"").unwrap();
        for d in ["sys", "tab", "u", "u/cache"] {
            fs::create_dir_all(self.data.join(d)).unwrap();
        }
        for d in ["u", "u/cache"] {
            let owner = Some(self.uid.into());
            nix::unistd::chown(&self.data.join(d), owner, Some(self.gid.into())).unwrap();
        }
    }

    /// A system unit, an fstab line and a lingering user's unit. Flush intervals of an
    /// hour: what reaches the disk at power-off was written by the final flush.
    fn enable_asdfs_units(&mut self) {
        self.add_user();
        self.systemctl_offline(&["enable", "asdfs@srv-data-sys.service"]);
        self.systemctl_offline(&["enable", "asdfs-sleep.service"]);
        self.systemctl_offline(&["--global", "enable", "asdfs@srv-data-u-cache.service"]);
        let opts = "[Service]\nEnvironment=\"ASDFS_OPTIONS=--flush-interval 1h\"\n";
        for d in [
            "etc/systemd/system/asdfs@srv-data-sys.service.d",
            "etc/systemd/user/asdfs@srv-data-u-cache.service.d",
        ] {
            self.put(&format!("{d}/test.conf"), opts);
        }
        let mut fstab = fs::read_to_string(self.at("etc/fstab")).unwrap_or_default();
        fstab += "/srv/data/tab /srv/data/tab fuse.asdfs defaults,flush_interval=1h 0 0\n";
        fs::write(self.at("etc/fstab"), fstab).unwrap();
    }

    fn boot(&mut self) {
        let node = self.data.parent().unwrap().join("fuse");
        nix::sys::stat::mknod(
            &node,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(10, 229),
        )
        .unwrap();
        fs::set_permissions(&node, fs::Permissions::from_mode(0o666)).unwrap();
        // nspawn removes its propagation directory only from a tmpfs; /run may be on disk.
        // Its /sys has no /sys/fs/fuse/connections, which systemd mounts on a machine and
        // the daemon uses to cut off files still open at a stop: it is bound in (fusectl
        // mounted first if this machine has not, in this private namespace only).
        let script = format!(
            "mkdir -p /run/systemd/nspawn && mount -t tmpfs tmpfs /run/systemd/nspawn && \
             {{ mountpoint -q {ctl} || mount -t fusectl fusectl {ctl}; }} && \
             exec systemd-nspawn -D '{root}' --register=no --keep-unit --link-journal=no \
             --private-network --console=read-only --bind='{node}:/dev/fuse' \
             --bind='{data}:/srv/data' --bind={ctl} --boot",
            ctl = "/sys/fs/fuse/connections",
            root = self.root.display(),
            node = node.display(),
            data = self.data.display()
        );
        let log = fs::File::create(self.data.parent().unwrap().join("console.log")).unwrap();
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting systemd-nspawn");
        let pid = child.id() as i32;
        self.nspawn = Some(child);
        self.init = self.wait_for(Duration::from_secs(30), || container_init(pid));
        let manager = PathBuf::from(format!("/proc/{}/root/run/systemd/private", self.init));
        self.wait_for(Duration::from_secs(30), || manager.exists().then_some(()));
    }

    fn console(&self) -> String {
        fs::read_to_string(self.data.parent().unwrap().join("console.log")).unwrap_or_default()
    }

    fn wait_for<T>(&self, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let end = Instant::now() + limit;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(
                Instant::now() < end,
                "timed out; console:\n{}",
                self.console()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn exec(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.init.to_string(), "-a", "--"])
            .args(args)
            .output()
            .expect("running nsenter")
    }

    /// The filesystem type at `path` inside the container.
    fn fstype(&self, path: &str) -> Option<String> {
        let info = fs::read_to_string(format!("/proc/{}/mountinfo", self.init)).ok()?;
        let escaped = path.replace(' ', "\\040");
        info.lines()
            .rfind(|l| l.split(' ').nth(4) == Some(escaped.as_str()))
            .and_then(|l| l.split(" - ").nth(1))
            .and_then(|rest| rest.split(' ').next())
            .map(str::to_string)
    }

    /// Powers the container off and waits until systemd-nspawn has exited.
    fn poweroff(&mut self) -> std::process::ExitStatus {
        let out = self.exec(&["systemctl", "poweroff"]);
        assert!(out.status.success(), "poweroff: {}", describe(&out));
        let mut child = self.nspawn.take().unwrap();
        let end = Instant::now() + Duration::from_secs(180);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > end {
                let _ = child.kill();
                panic!(
                    "the container did not power off; console:\n{}",
                    self.console()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Boots and waits until every start-up job is done; the system must be running.
    fn boot_until_running(&mut self) {
        self.boot();
        let out = self.exec(&["timeout", "90", "systemctl", "is-system-running", "--wait"]);
        let state = text(&out.stdout);
        assert!(
            state.starts_with("running") || state.starts_with("degraded"),
            "boot: {}\n{}",
            describe(&out),
            text(&self.exec(&["systemctl", "--failed", "--no-pager"]).stdout)
        );
    }

    /// `systemctl show -p PROP --value UNIT` inside the container.
    fn property(&self, unit: &str, prop: &str) -> String {
        let out = self.exec(&["systemctl", "show", "-p", prop, "--value", unit]);
        assert!(out.status.success(), "{}", describe(&out));
        text(&out.stdout).trim().to_string()
    }

    /// The container's journal (read after power-off), with journalctl's `args`.
    fn journal_with(&self, args: &[&str]) -> String {
        let out = Command::new("journalctl")
            .arg("-D")
            .arg(self.at("var/log/journal"))
            .args(["--no-pager", "-o", "short-monotonic"])
            .args(args)
            .output()
            .expect("running journalctl");
        text(&out.stdout)
    }

    fn journal(&self) -> String {
        self.journal_with(&[])
    }
}

/// The container's PID 1: the child of systemd-nspawn that is PID 1 in its namespace.
fn container_init(nspawn: i32) -> Option<i32> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
        };
        let child = field("PPid:")? == nspawn.to_string();
        let first = field("NSpid:")?.split_whitespace().last()? == "1";
        (child && first).then_some(pid)
    })
}

impl Drop for Container {
    fn drop(&mut self) {
        if let Some(mut child) = self.nspawn.take() {
            if self.init > 0 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.init),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("umount").arg("-l").arg(&self.root).status();
    }
}

#[test]
fn systemd_in_a_container_writes_every_mount_back_at_poweroff() {
    if !available() {
        return;
    }
    let bins = Bins::new();
    let mut c = Container::prepare(&bins);
    c.enable_asdfs_units();
    c.boot_until_running();
    let out = c.exec(&["systemctl", "is-active", "asdfs@srv-data-sys.service"]);
    assert_eq!(text(&out.stdout).trim(), "active", "{}", describe(&out));
    for dir in ["/srv/data/sys", "/srv/data/tab", "/srv/data/u/cache"] {
        let ty = c.wait_for(Duration::from_secs(30), || {
            c.fstype(dir).filter(|t| t == "fuse.asdfs")
        });
        assert_eq!(ty, "fuse.asdfs");
    }
    // The unit is ordered after the filesystem holding its directory.
    let after = c.exec(&[
        "systemctl",
        "show",
        "-p",
        "After",
        "asdfs@srv-data-sys.service",
    ]);
    let after_units = text(&after.stdout);
    assert!(
        after_units
            .split(['=', ' ', '\n'])
            .any(|u| u == "srv-data.mount"),
        "{}",
        describe(&after)
    );
    write_into(&c);
    for f in ["sys/new", "tab/new", "u/cache/new"] {
        assert!(
            !c.data.join(f).exists(),
            "{f} reached the disk before power-off"
        );
    }
    let st = c.poweroff();
    assert!(st.success(), "nspawn: {st}; console:\n{}", c.console());
    let read = |f: &str| fs::read_to_string(c.data.join(f)).ok();
    let journal = c.journal();
    assert_eq!(read("sys/new").as_deref(), Some("sys-data\n"), "{journal}");
    assert_eq!(read("sys/dir/f").as_deref(), Some("deep\n"), "{journal}");
    assert_eq!(read("tab/new").as_deref(), Some("tab-data\n"), "{journal}");
    assert_eq!(
        read("u/cache/new").as_deref(),
        Some("user-data\n"),
        "{journal}"
    );
    check_shutdown_order(
        &journal,
        "/srv/data/sys: unmounted; the disk copy is up to date",
        "Stopped asdfs@srv-data-sys.service",
    );
}

fn write_into(c: &Container) {
    let out = c.exec(&[
        "sh",
        "-c",
        "echo sys-data > /srv/data/sys/new && mkdir /srv/data/sys/dir && \
         echo deep > /srv/data/sys/dir/f && echo tab-data > /srv/data/tab/new",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let (uid, gid) = (c.uid.to_string(), c.gid.to_string());
    let out = c.exec(&[
        "setpriv",
        &format!("--reuid={uid}"),
        &format!("--regid={gid}"),
        "--init-groups",
        "sh",
        "-c",
        "echo user-data > /srv/data/u/cache/new",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
}

/// A unit's final flush (the line `flushed`) finished, and the unit stopped (`stopped`),
/// before systemd began unmounting the filesystem holding the directories.
fn check_shutdown_order(journal: &str, flushed: &str, stopped: &str) {
    // The last of each: the stop at power-off.
    let pos = |needle: &str| {
        let found = journal
            .lines()
            .enumerate()
            .filter(|(_, l)| l.contains(needle));
        found.last().map(|(i, _)| i)
    };
    let flushed = pos(flushed);
    let stopped = pos(stopped);
    let unmounting = journal
        .lines()
        .position(|l| l.contains("srv-data.mount") && l.contains("nmount"));
    assert!(
        flushed.is_some() && stopped.is_some() && flushed < stopped,
        "{journal}"
    );
    if let Some(u) = unmounting {
        assert!(
            stopped < Some(u),
            "unmounting began before the flush: {journal}"
        );
    }
}

/// The processes of the container named `comm`: (PID inside the container, its cgroups).
fn container_processes(c: &Container, comm: &str) -> Vec<(i32, String)> {
    let ns = |pid: &str| fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let ours = ns(&c.init.to_string());
    assert!(ours.is_some(), "the container's PID 1 is gone");
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.to_string();
            pid.parse::<i32>().ok()?;
            let name = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            if name.trim_end() != comm || ns(&pid) != ours {
                return None;
            }
            let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let inner = status
                .lines()
                .find_map(|l| l.strip_prefix("NSpid:"))?
                .split_whitespace()
                .last()?
                .parse()
                .ok()?;
            Some((
                inner,
                fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?,
            ))
        })
        .collect()
}

/// Every file and directory under `dir`: relative path → contents ("/" for a directory).
fn tree(dir: &Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if e.file_type().unwrap().is_dir() {
                out.insert(rel, "/".to_string());
                stack.push(p);
            } else {
                out.insert(rel, fs::read_to_string(&p).unwrap());
            }
        }
    }
    out
}

fn expect(entries: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A shell in the container appending `lineN` to a file every 50 ms while it can, and
/// printing N to us once each write has succeeded. Killed when dropped. Its parent is the
/// container's init, as a program's would be: a child of nsenter (which stays outside the
/// container's PID namespace) is stopped by systemd-shutdown's SIGSTOP to every process,
/// nsenter then stops itself too (it follows its child's stops) and, out of reach of the
/// SIGCONT that follows, never reaps the killed holder: the power-off waits for the zombie.
struct Holder {
    child: Option<Child>,
}

impl Holder {
    fn start(c: &Container, file: &str) -> Holder {
        let script = "exec 3>>\"$1\" || exit 1; i=0; \
                      while echo \"line$i\" >&3; do echo $i; i=$((i+1)); sleep 0.05; done";
        let child = Command::new("nsenter")
            .args(["-t", &c.init.to_string(), "-a", "--"])
            .args([
                "sh",
                "-c",
                "setsid sh -c \"$0\" holder \"$1\" &",
                script,
                file,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("running nsenter");
        Holder { child: Some(child) }
    }

    /// After the container is gone: how many writes were acknowledged (its output ends
    /// when the holder does).
    fn finish(&mut self) -> usize {
        let out = self.child.take().unwrap().wait_with_output().unwrap();
        text(&out.stdout).lines().count()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

mod asd;
