//! A real systemd, booted with systemd-nspawn from an overlay of this machine's root
//! (no download; the overlay's upper layer on /dev/shm takes every change), with asdfs
//! installed by scripts/install and three directories in RAM: a system unit, an fstab
//! line and a user's unit (a lingering user). After `systemctl poweroff` the disk copies
//! must hold what was written, and the journal must show the final flush before the
//! filesystem underneath was unmounted.

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
    nspawn: Option<Child>,
    init: i32,
    _layers: tempfile::TempDir,
    _disk: tempfile::TempDir,
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
            nspawn: None,
            init: 0,
            _layers: layers,
            _disk: disk,
        };
        c.configure(bins);
        c
    }

    fn at(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    /// The machine's own services stay off; asdfs is installed and enabled.
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
        self.add_user();
        self.enable();
    }

    fn add_user(&mut self) {
        run(Command::new("useradd")
            .arg("--root")
            .arg(&self.root)
            .args(["-m", "asdfsit"]));
        let passwd = fs::read_to_string(self.at("etc/passwd")).unwrap();
        let line = passwd.lines().find(|l| l.starts_with("asdfsit:")).unwrap();
        self.uid = line.split(':').nth(2).unwrap().parse().unwrap();
        fs::create_dir_all(self.at("var/lib/systemd/linger")).unwrap();
        fs::write(self.at("var/lib/systemd/linger/asdfsit"), b"").unwrap();
        for d in ["sys", "tab", "u", "u/cache"] {
            fs::create_dir_all(self.data.join(d)).unwrap();
        }
        for d in ["u", "u/cache"] {
            let owner = Some(self.uid.into());
            nix::unistd::chown(&self.data.join(d), owner, Some(self.uid.into())).unwrap();
        }
    }

    /// Flush intervals of an hour: what reaches the disk at power-off was written by
    /// the final flush.
    fn enable(&self) {
        let root = format!("--root={}", self.root.display());
        run(Command::new("systemctl").args([&root, "enable", "asdfs@srv-data-sys.service"]));
        run(Command::new("systemctl").args([&root, "enable", "asdfs-sleep.service"]));
        run(Command::new("systemctl").args([
            &root,
            "--global",
            "enable",
            "asdfs@srv-data-u-cache.service",
        ]));
        let opts = "[Service]\nEnvironment=\"ASDFS_OPTIONS=--flush-interval 1h\"\n";
        for d in [
            "etc/systemd/system/asdfs@srv-data-sys.service.d",
            "etc/systemd/user/asdfs@srv-data-u-cache.service.d",
        ] {
            fs::create_dir_all(self.at(d)).unwrap();
            fs::write(self.at(d).join("test.conf"), opts).unwrap();
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
        let script = format!(
            "mkdir -p /run/systemd/nspawn && mount -t tmpfs tmpfs /run/systemd/nspawn && \
             exec systemd-nspawn -D '{root}' --register=no --keep-unit --link-journal=no \
             --private-network --console=read-only --bind='{node}:/dev/fuse' \
             --bind='{data}:/srv/data' --boot",
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
        info.lines()
            .rfind(|l| l.split(' ').nth(4) == Some(path))
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

    fn journal(&self) -> String {
        let out = Command::new("journalctl")
            .arg("-D")
            .arg(self.at("var/log/journal"))
            .args(["--no-pager", "-o", "short-monotonic"])
            .output()
            .expect("running journalctl");
        text(&out.stdout)
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
    c.boot();
    let out = c.exec(&["timeout", "90", "systemctl", "is-system-running", "--wait"]);
    let state = text(&out.stdout);
    assert!(
        state.starts_with("running") || state.starts_with("degraded"),
        "boot: {}\n{}",
        describe(&out),
        text(&c.exec(&["systemctl", "--failed", "--no-pager"]).stdout)
    );
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
    check_shutdown_order(&journal);
}

fn write_into(c: &Container) {
    let out = c.exec(&[
        "sh",
        "-c",
        "echo sys-data > /srv/data/sys/new && mkdir /srv/data/sys/dir && \
         echo deep > /srv/data/sys/dir/f && echo tab-data > /srv/data/tab/new",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let uid = c.uid.to_string();
    let out = c.exec(&[
        "setpriv",
        &format!("--reuid={uid}"),
        &format!("--regid={uid}"),
        "--init-groups",
        "sh",
        "-c",
        "echo user-data > /srv/data/u/cache/new",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
}

/// The system unit's final flush finished ("Stopped") before systemd began unmounting the
/// filesystem holding the directory.
fn check_shutdown_order(journal: &str) {
    let pos = |needle: &str| journal.lines().position(|l| l.contains(needle));
    let flushed = pos("/srv/data/sys: unmounted; the disk copy is up to date");
    let stopped = pos("Stopped asdfs@srv-data-sys.service");
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
