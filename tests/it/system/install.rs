//! Install and uninstall (DESTDIR, PREFIX) and the systemd units: `systemd-analyze verify`
//! of every unit, and the ordering that keeps a mount visible until its final flush.

use super::*;

fn install(bins: &Bins, destdir: Option<&Path>, prefix: &Path, mode: &str) -> Output {
    let mut cmd = Command::new(Path::new(REPO).join(if mode == "install" {
        "scripts/install"
    } else {
        "scripts/uninstall"
    }));
    cmd.env("PREFIX", prefix).env("BUILD_DIR", bins.dir.path());
    match destdir {
        Some(d) => cmd.env("DESTDIR", d),
        // Not into the machine's /sbin.
        None => cmd
            .env_remove("DESTDIR")
            .env("SBINDIR", prefix.join("sbin")),
    };
    cmd.output().expect("running the install script")
}

fn files_under(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            match fs::symlink_metadata(&p).unwrap() {
                m if m.is_dir() => stack.push(p),
                m if m.file_type().is_symlink() => {
                    out.push(format!("{rel} -> {}", fs::read_link(&p).unwrap().display()))
                }
                m => out.push(format!("{rel} {:o}", m.mode() & 0o777)),
            }
        }
    }
    out.sort();
    out
}

#[test]
fn install_and_uninstall_honour_destdir_and_prefix() {
    let bins = Bins::new();
    let stage = tempfile::tempdir().unwrap();
    let out = install(
        &bins,
        Some(stage.path()),
        Path::new("/opt/asdfs"),
        "install",
    );
    assert!(out.status.success(), "{}", describe(&out));
    let mut expected = vec![
        "opt/asdfs/bin/anything-sync-daemon -> asdfs",
        "opt/asdfs/bin/asd -> asdfs",
        "opt/asdfs/bin/asdfs 755",
        "opt/asdfs/lib/asdfs/flush-all 755",
        "opt/asdfs/lib/systemd/system/asd-resync.service 644",
        "opt/asdfs/lib/systemd/system/asd-resync.timer 644",
        "opt/asdfs/lib/systemd/system/asd.service 644",
        "opt/asdfs/lib/systemd/system/asdfs-sleep.service 644",
        "opt/asdfs/lib/systemd/system/asdfs@.service 644",
        "opt/asdfs/lib/systemd/user/asdfs@.service 644",
        "opt/asdfs/sbin/mount.fuse.asdfs 755",
        "opt/asdfs/sbin/umount.fuse.asdfs -> mount.fuse.asdfs",
        "opt/asdfs/share/bash-completion/completions/anything-sync-daemon 644",
        "opt/asdfs/share/bash-completion/completions/asd 644",
        "opt/asdfs/share/bash-completion/completions/asdfs 644",
        "opt/asdfs/share/fish/vendor_completions.d/anything-sync-daemon.fish 644",
        "opt/asdfs/share/fish/vendor_completions.d/asd.fish 644",
        "opt/asdfs/share/fish/vendor_completions.d/asdfs.fish 644",
        "opt/asdfs/share/man/man5/asdfs.toml.5 644",
        "opt/asdfs/share/man/man7/asdfs.systemd.7 644",
        "opt/asdfs/share/man/man8/mount.fuse.asdfs.8 644",
        "opt/asdfs/share/zsh/site-functions/_anything-sync-daemon 644",
        "opt/asdfs/share/zsh/site-functions/_asd 644",
        "opt/asdfs/share/zsh/site-functions/_asdfs 644",
        "sbin/mount.fuse.asdfs -> /opt/asdfs/sbin/mount.fuse.asdfs",
        "sbin/umount.fuse.asdfs -> /opt/asdfs/sbin/umount.fuse.asdfs",
    ];
    let mut found = files_under(stage.path());
    // The man pages of the commands are generated from their definitions.
    let man1: Vec<String> = found
        .iter()
        .filter(|f| f.contains("/man1/"))
        .cloned()
        .collect();
    for page in [
        "asdfs.1",
        "asd.1",
        "anything-sync-daemon.1",
        "asdfs-mount.1",
        "asdfs-snapshots.1",
    ] {
        let want = format!("opt/asdfs/share/man/man1/{page} 644");
        assert!(man1.contains(&want), "{want} not in {man1:?}");
    }
    found.retain(|f| !f.contains("/man1/"));
    let bash = fs::read_to_string(
        stage
            .path()
            .join("opt/asdfs/share/bash-completion/completions/asd"),
    )
    .unwrap();
    assert!(bash.contains("resync") && bash.contains("unsync"), "{bash}");
    expected.sort();
    assert_eq!(found, expected);
    let unit = fs::read_to_string(
        stage
            .path()
            .join("opt/asdfs/lib/systemd/system/asdfs@.service"),
    )
    .unwrap();
    assert!(unit.contains("ExecStart=/opt/asdfs/bin/asdfs mount --foreground"));
    let hook = fs::read_to_string(stage.path().join("opt/asdfs/lib/asdfs/flush-all")).unwrap();
    assert!(hook.contains("/opt/asdfs/bin/asdfs"));
    let out = install(
        &bins,
        Some(stage.path()),
        Path::new("/opt/asdfs"),
        "uninstall",
    );
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(files_under(stage.path()), Vec::<String>::new());
}

/// Installs under a real prefix (so that ExecStart= paths exist) and verifies `units`.
fn verify_units(user: bool, units: &[&str]) {
    let bins = Bins::new();
    let prefix = tempfile::tempdir().unwrap();
    let out = install(&bins, None, prefix.path(), "install");
    assert!(out.status.success(), "{}", describe(&out));
    let dir = prefix.path().join(if user {
        "lib/systemd/user"
    } else {
        "lib/systemd/system"
    });
    let runtime = tempfile::tempdir().unwrap();
    for unit in units {
        let mut cmd = Command::new("systemd-analyze");
        if user {
            cmd.arg("--user").env("XDG_RUNTIME_DIR", runtime.path());
        }
        // --man=no: the asdfs(1) and asd(1) pages are not installed on this machine.
        let out = cmd
            .args(["verify", "--man=no"])
            .arg(dir.join(unit))
            .output()
            .expect("running systemd-analyze");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "systemd-analyze verify {unit}: {}",
            describe(&out)
        );
    }
    let _ = install(&bins, None, prefix.path(), "uninstall");
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    if !needs("systemd-analyze", has_tool("systemd-analyze")) {
        return;
    }
    verify_units(
        false,
        &[
            "asdfs@.service",
            "asdfs@var-log.service",
            "asdfs-sleep.service",
            "asd.service",
            "asd-resync.service",
            "asd-resync.timer",
        ],
    );
    verify_units(true, &["asdfs@.service", "asdfs@home-me-.cache.service"]);
}

#[test]
fn units_keep_the_mount_visible_and_ordered_before_unmounting() {
    for unit in ["asdfs@.service", "user/asdfs@.service"] {
        let text = fs::read_to_string(Path::new(REPO).join("systemd").join(unit)).unwrap();
        let keys: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split('=').next())
            .collect();
        for private in [
            "PrivateTmp",
            "ProtectSystem",
            "ProtectHome",
            "PrivateDevices",
            "PrivateMounts",
            "TemporaryFileSystem",
            "ReadOnlyPaths",
            "InaccessiblePaths",
            "BindPaths",
        ] {
            assert!(!keys.contains(&private), "{unit} sets {private}=");
        }
        for line in ["Type=notify", "RequiresMountsFor=%f", "KillMode=mixed"] {
            assert!(text.lines().any(|l| l == line), "{unit} lacks {line}");
        }
    }
    let sys = fs::read_to_string(Path::new(REPO).join("systemd/asdfs@.service")).unwrap();
    assert!(sys.contains("\nBefore=umount.target shutdown.target\n"));
    let sleep = fs::read_to_string(Path::new(REPO).join("systemd/asdfs-sleep.service")).unwrap();
    assert!(
        sleep.contains("\nBefore=sleep.target\n") && sleep.contains("\nWantedBy=sleep.target\n")
    );
}
