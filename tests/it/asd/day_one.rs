//! Issue 15, "what an asd user meets on day one": the manual, completions, `asd --version`,
//! `asd resync` with nothing running, `asd p`'s service lines, config messages, human
//! units, Prometheus metrics, the log in the journal, a user's `status` and `flush`.

use crate::harness::{BIN, Mount, asdfs, asdfs_env, fuse_available};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn both(o: &Output) -> String {
    format!("{}{}", text(&o.stdout), text(&o.stderr))
}

/// The binary run under another name (asd, anything-sync-daemon).
fn as_named(name: &str, args: &[&str], env: &[(&str, &Path)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(BIN, dir.path().join(name)).unwrap();
    Command::new(dir.path().join(name))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("ASDFS_LOG", "warn")
        .output()
        .unwrap()
}

/// Every `name(N)` a page names, with roff's `\-` read as `-`.
fn references(page: &str) -> BTreeSet<String> {
    let plain = page
        .replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fR", "");
    let mut refs = BTreeSet::new();
    let b = plain.as_bytes();
    for (i, _) in plain.match_indices('(') {
        let ok = b.get(i + 1).is_some_and(u8::is_ascii_digit) && b.get(i + 2) == Some(&b')');
        if !ok {
            continue;
        }
        let start = plain[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || "._-@".contains(c)))
            .map_or(0, |p| p + 1);
        if start < i {
            refs.insert(format!("{}.{}", &plain[start..i], b[i + 1] as char));
        }
    }
    refs
}

#[test]
fn issue_15_every_page_a_page_names_is_installed_and_asd_1_teaches() {
    let dir = tempfile::tempdir().unwrap();
    let out = asdfs(["manpages", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", both(&out));
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut pages: Vec<std::path::PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    pages.push(repo.join("mount-helper/mount.fuse.asdfs.8"));
    pages.push(repo.join("systemd/asdfs.systemd.7"));
    let installed: BTreeSet<String> = pages
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    // The system's own pages that asdfs's name in passing.
    let system = [
        "fstab.5",
        "systemd.mount.5",
        "systemd.unit.5",
        "fsync.2",
        "mount.8",
        "umount.8",
        "syslog.3",
        "journalctl.1",
        "systemctl.1",
    ];
    for p in &pages {
        let page = std::fs::read_to_string(p).unwrap();
        for r in references(&page) {
            assert!(
                installed.contains(&r) || system.contains(&r.as_str()),
                "{} names {r}, which is not installed ({installed:?})",
                p.display()
            );
        }
    }
    for name in [
        "asd.1",
        "anything-sync-daemon.1",
        "asdfs.toml.5",
        "asdfs-config-check.1",
    ] {
        assert!(installed.contains(name), "{name} missing: {installed:?}");
    }
    let asd = std::fs::read_to_string(dir.path().join("asd.1")).unwrap();
    for section in [
        "WHATTOSYNC",
        "VOLATILE",
        "BACKUP_LIMIT",
        "CRASH RECOVERY",
        "EXIT STATUS",
        "FILES",
    ] {
        assert!(asd.contains(section), "asd(1) lacks {section}");
    }
    for page in ["asdfs.1", "asdfs-flush.1"] {
        let t = std::fs::read_to_string(dir.path().join(page)).unwrap();
        assert!(t.contains("EXIT STATUS"), "{page} lacks EXIT STATUS");
    }
}

#[test]
fn issue_15_completions_offer_what_can_be_typed() {
    let bash = text(&asdfs(["completions", "bash"]).stdout);
    assert!(!bash.contains("manpages"), "the hidden command is offered");
    assert!(!bash.contains("readonly"), "the hidden command is offered");
    let backups = bash.split("--backups)").nth(1).unwrap_or_default();
    let first = backups.lines().nth(1).unwrap_or_default();
    assert!(first.contains("\"yes no\""), "--backups completes: {first}");
    assert!(
        bash.contains("findmnt -rn -t fuse.asdfs"),
        "targets are not completed to mounts"
    );
    let fish = text(&asdfs(["completions", "fish"]).stdout);
    assert!(fish.contains("__fish_seen_subcommand_from status flush unmount"));
    let out = asdfs(["completions", "bash", "--command", "anything-sync-daemon"]);
    assert!(out.status.success(), "{}", both(&out));
    assert!(text(&out.stdout).contains("-o default anything-sync-daemon\n"));
}

/// zsh completes the target of status, flush and unmount to the asdfs mounts, as bash and
/// fish do; other commands' paths stay files.
#[test]
fn issue_15_zsh_completes_mounted_targets() {
    let zsh = text(&asdfs(["completions", "zsh"]).stdout);
    let block = |verb: &str| {
        let start = zsh.find(&format!("({verb})\n")).expect(verb);
        zsh[start..]
            .split(";;")
            .next()
            .unwrap_or_default()
            .to_string()
    };
    for verb in ["status", "flush", "unmount"] {
        let b = block(verb);
        let target = b
            .lines()
            .find(|l| l.starts_with("'::target"))
            .unwrap_or_default();
        assert!(target.ends_with(":_asdfs_mounts' \\"), "{verb}: {target}");
    }
    assert!(
        block("mount").contains(":_files"),
        "mount's targets are files"
    );
    let defined = zsh.find("_asdfs_mounts() {").expect("no _asdfs_mounts");
    assert!(zsh[defined..].contains("findmnt -rn -t fuse.asdfs -o TARGET"));
    let registered = zsh.find("compdef _asdfs asdfs").unwrap();
    assert!(defined < registered, "defined after the script runs");
    if Command::new("zsh").arg("--version").output().is_ok() {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let f = dir.path().join("_asdfs");
        std::fs::write(&f, &zsh).unwrap();
        let out = Command::new("zsh").arg("-n").arg(&f).output().unwrap();
        assert!(out.status.success(), "{}", both(&out));
    }
}

#[test]
fn issue_15_asd_version_names_both_versions() {
    let out = as_named("asd", &["--version"], &[]);
    let v = text(&out.stdout);
    assert!(v.contains("6.0.0"), "{v}");
    assert!(
        v.contains(&format!("asdfs {}", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
}

/// An asd.conf naming `targets`, with a volatile directory on /dev/shm.
fn asd_conf(dir: &Path, lines: &str) -> std::path::PathBuf {
    let conf = dir.join("asd.conf");
    std::fs::write(&conf, lines).unwrap();
    conf
}

#[test]
fn issue_15_asd_resync_with_nothing_running_exits_0_and_p_shows_the_units() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let vol = tempfile::tempdir_in("/dev/shm").unwrap();
    std::fs::create_dir(dir.path().join("t")).unwrap();
    let conf = asd_conf(
        dir.path(),
        &format!(
            "WHATTOSYNC=('{}')\nVOLATILE=\"{}\"\n",
            dir.path().join("t").display(),
            vol.path().display()
        ),
    );
    let out = as_named("asd", &["resync"], &[("ASDCONF", &conf)]);
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    assert!(both(&out).contains("ASD is not running"), "{}", both(&out));
    let p = as_named("asd", &["p"], &[("ASDCONF", &conf)]);
    assert!(p.status.success(), "{}", both(&p));
    let p = text(&p.stdout);
    assert!(
        p.contains("asd.service") && p.contains("asd-resync.timer")
            || p.contains("Systemd is not running"),
        "{p}"
    );
}

#[test]
fn issue_15_config_messages_point_at_the_target_and_say_why() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let conf = asd_conf(
        dir.path(),
        "# asd's default VOLATILE is /tmp\nWHATTOSYNC=(\n  /tmp/some-dir\n)\n",
    );
    let out = asdfs(["config", "check", conf.to_str().unwrap()]);
    let e = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains("asd.conf:3:"), "not the target's line: {e}");
    assert!(!e.contains("already in RAM"), "{e}");
    assert!(e.contains("--volatile") || e.contains("VOLATILE"), "{e}");
    let conf = asd_conf(dir.path(), "WHATTOSYNC=(/srv/a)\nBACKUP_LIMIT=$((2+3))\n");
    let e = text(&asdfs(["config", "check", conf.to_str().unwrap()]).stderr);
    assert!(e.contains("arithmetic"), "{e}");
    assert!(!e.contains("command substitution"), "{e}");
}

/// Under systemd (NOTIFY_SOCKET), an ordinary flush tells its progress in STATUS= lines,
/// then that the target is in RAM again; not only the stop does.
#[test]
fn issue_15_a_flush_under_systemd_reports_progress_in_status_lines() {
    if !fuse_available() {
        return;
    }
    let (_dir, sock, notify) = datagram_socket("notify");
    let mut m = Mount::prepare(|_| {});
    m.env
        .push(("NOTIFY_SOCKET".into(), sock.display().to_string()));
    m.mount();
    std::fs::write(m.path("big"), vec![3u8; 32 << 20]).unwrap();
    m.flush();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        match notify.recv(&mut buf) {
            Ok(n) => got.push(text(&buf[..n]).trim_end().to_string()),
            Err(_) if !got.is_empty() => break,
            Err(_) => {}
        }
    }
    let t = m.target.display().to_string();
    let writing = format!("STATUS={t}: writing to disk: ");
    assert!(
        got.iter()
            .any(|d| d.starts_with(&writing) && d.contains(" of 32.00 MiB")),
        "{got:?}"
    );
    assert!(
        got.iter().any(|d| d == &format!("STATUS={t}: in RAM")),
        "{got:?}"
    );
}

/// QA: `asdfs status` without a target lists a mount whose daemon died as dead and exits 0;
/// asked about that target, it exits 1.
#[test]
fn issue_15_status_of_everything_lists_a_dead_daemon_and_succeeds() {
    if !fuse_available() || !nix::unistd::geteuid().is_root() {
        return;
    }
    let m = Mount::new();
    std::fs::write(m.path("f"), b"kept").unwrap();
    m.kill_daemon();
    let all = asdfs(["status"]);
    assert_eq!(all.status.code(), Some(0), "{}", both(&all));
    let line = format!("{}: dead\n", m.target.display());
    assert!(text(&all.stdout).contains(&line), "{}", both(&all));
    assert!(text(&all.stdout).contains("asdfs mount"), "{}", both(&all));
    let json = asdfs(["status", "--json"]);
    assert_eq!(json.status.code(), Some(0), "{}", both(&json));
    let list: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let me = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["target"] == m.target.to_str().unwrap());
    assert_eq!(
        me.map(|s| s["state"].clone()),
        Some("dead".into()),
        "{list}"
    );
    let one = asdfs(["status", m.target.to_str().unwrap()]);
    assert_eq!(one.status.code(), Some(1), "{}", both(&one));
    m.mount();
    assert_eq!(std::fs::read(m.path("f")).unwrap(), b"kept");
    m.unmount();
}

/// QA: `config check --config F` names the file as `mount --config F` does.
#[test]
fn issue_15_config_check_takes_the_file_as_mount_names_it() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    std::fs::create_dir(dir.path().join("t")).unwrap();
    let conf = dir.path().join("asdfs.toml");
    let t = dir.path().join("t");
    std::fs::write(
        &conf,
        format!("[[target]]\npath = {:?}\n", t.display().to_string()),
    )
    .unwrap();
    let out = asdfs(["config", "check", "--config", conf.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", both(&out));
    assert!(
        text(&out.stdout).contains(&format!("{}: ok", conf.display())),
        "{}",
        both(&out)
    );
    let two = asdfs([
        "config",
        "check",
        "--config",
        conf.to_str().unwrap(),
        conf.to_str().unwrap(),
    ]);
    assert_eq!(two.status.code(), Some(2), "{}", both(&two));
}

#[test]
fn issue_15_flush_and_status_in_human_units_and_prometheus() {
    if !fuse_available() {
        return;
    }
    let m = Mount::new();
    std::fs::write(m.path("one"), vec![7u8; 3 << 20]).unwrap();
    let p = asdfs([
        "status",
        "--format",
        "prometheus",
        m.target.to_str().unwrap(),
    ]);
    assert!(p.status.success(), "{}", both(&p));
    let p = text(&p.stdout);
    let series = format!(
        "asdfs_dirty_bytes{{target=\"{}\"}} {}",
        m.target.display(),
        3 << 20
    );
    assert!(p.contains(&series), "{p}");
    assert!(
        p.contains("# TYPE asdfs_written_bytes_total counter"),
        "{p}"
    );
    let out = asdfs(["flush", m.target.to_str().unwrap()]);
    let said = text(&out.stdout);
    assert!(said.contains("flushed 1 file, 3.00 MiB in "), "{said}");
    let s = text(&asdfs(["status", m.target.to_str().unwrap()]).stdout);
    assert!(s.contains("ok: 1 file, 3.00 MiB in"), "{s}");
    assert!(
        !s.contains(" 1 files") && !s.contains(" 1 directories"),
        "{s}"
    );
}

#[test]
fn issue_15_a_daemon_from_a_shell_logs_to_the_journal_and_keeps_no_file() {
    if !fuse_available() {
        return;
    }
    let (_dir, sock, journal) = datagram_socket("journal");
    let mut m = Mount::prepare(|_| {});
    m.env.retain(|(k, _)| k != "ASDFS_LOG_FILE");
    m.env
        .push(("ASDFS_JOURNAL_SOCKET".into(), sock.display().to_string()));
    m.env.push(("ASDFS_LOG".into(), "info".into()));
    m.mount();
    let out = asdfs_env(["unmount", m.target.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", both(&out));
    let mut got = Vec::new();
    let until = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 1 << 16];
    while Instant::now() < until {
        match journal.recv(&mut buf) {
            Ok(n) => got.push(text(&buf[..n])),
            Err(_) if !got.is_empty() => break,
            Err(_) => {}
        }
    }
    let target = format!("ASDFS_TARGET={}\n", m.target.display());
    assert!(
        got.iter()
            .any(|d| d.contains("SYSLOG_IDENTIFIER=asdfs\n") && d.contains(&target)),
        "{got:?}"
    );
    assert!(got.iter().all(|d| d.contains("PRIORITY=")), "{got:?}");
    assert!(
        got.iter().any(|d| d.contains("ASDFS_PHASE=mounted\n")),
        "{got:?}"
    );
    let log = m.volatile.path().join("asdfs/daemon.log");
    assert!(
        !log.exists(),
        "a log file nobody asked for: {}",
        log.display()
    );
}

/// The unprivileged account of the user tests.
fn nobody() -> Option<u32> {
    let u = nix::unistd::User::from_name("nobody").ok()??;
    Some(u.uid.as_raw())
}

#[test]
fn issue_15_a_user_sees_their_own_targets_and_is_told_a_directory_is_not_theirs() {
    let has_setpriv = Command::new("setpriv").arg("--version").output().is_ok();
    if !fuse_available() || !nix::unistd::geteuid().is_root() || !has_setpriv {
        return;
    }
    let Some(uid) = nobody() else { return };
    let m = Mount::new();
    let as_user = |args: &[&str]| {
        Command::new("setpriv")
            .args([
                "--reuid",
                &uid.to_string(),
                "--regid",
                &uid.to_string(),
                "--clear-groups",
            ])
            .arg(BIN)
            .args(args)
            .env_remove("XDG_RUNTIME_DIR")
            .output()
            .unwrap()
    };
    let s = as_user(&["status"]);
    assert_eq!(s.status.code(), Some(0), "{}", both(&s));
    assert!(!both(&s).contains("ermission denied"), "{}", both(&s));
    assert!(!both(&s).contains("not kept in RAM"), "{}", both(&s));
    for verb in ["flush", "unmount"] {
        let f = as_user(&[verb, m.target.to_str().unwrap()]);
        assert_eq!(f.status.code(), Some(1), "{}", both(&f));
        assert!(text(&f.stderr).contains("not yours"), "{}", both(&f));
        assert!(!text(&f.stderr).contains("XDG_RUNTIME_DIR"), "{}", both(&f));
    }
}

#[test]
fn issue_15_a_flush_on_a_terminal_shows_a_bar_then_human_units() {
    let has_script = Command::new("script").arg("--version").output().is_ok();
    if !fuse_available() || !has_script {
        return;
    }
    let m = Mount::new();
    std::fs::write(m.path("big"), vec![1u8; 64 << 20]).unwrap();
    let cmd = format!("{BIN} flush '{}'", m.target.display());
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("ASDFS_LOG", "warn")
        .output()
        .unwrap();
    let tty = text(&out.stdout);
    assert!(out.status.success(), "{tty}");
    assert!(
        tty.contains("writing to disk ["),
        "no progress bar: {tty:?}"
    );
    assert!(tty.contains("MiB/64.00 MiB"), "no progress bar: {tty:?}");
    assert!(tty.contains("flushed 1 file, 64.00 MiB in "), "{tty:?}");
}

#[test]
fn issue_15_status_shows_the_flush_under_way() {
    if !fuse_available() {
        return;
    }
    status_shows_the_flush_under_way(Mount::new());
}

/// Overlay mode too: status answers while the flush holds the layers, and shows it.
#[test]
fn issue_15_status_shows_an_overlay_flush_under_way() {
    if !fuse_available() || !nix::unistd::geteuid().is_root() {
        return;
    }
    let mut m = Mount::prepare(|_| {});
    m.no_namespaces = Some(crate::harness::NAMESPACES.read_recursive());
    m.extra.extend(["--mode", "overlay"].map(String::from));
    m.mount();
    status_shows_the_flush_under_way(m);
}

fn status_shows_the_flush_under_way(m: Mount) {
    for i in 0..4 {
        std::fs::write(m.path(&format!("f{i}")), vec![i as u8; 64 << 20]).unwrap();
    }
    let mut flush = Command::new(BIN)
        .args(["flush", m.target.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = None;
    while flush.try_wait().unwrap().is_none() && seen.is_none() {
        let out = asdfs(["status", m.target.to_str().unwrap()]);
        let s = text(&out.stdout);
        if s.contains(" of 256.00 MiB written") {
            seen = Some(s);
        }
    }
    let _ = flush.wait();
    let s = seen.expect("status never showed the flush under way");
    assert!(s.contains(" of 256.00 MiB written"), "{s}");
}

#[test]
fn issue_15_an_unmount_on_a_terminal_shows_its_final_flush() {
    let has_script = Command::new("script").arg("--version").output().is_ok();
    if !fuse_available() || !has_script {
        return;
    }
    unmount_bar_advances(Mount::new());
}

/// Overlay mode: the bar advances too (status answers while the flush holds the layers).
#[test]
fn issue_15_an_overlay_unmount_on_a_terminal_shows_its_final_flush() {
    let has_script = Command::new("script").arg("--version").output().is_ok();
    if !fuse_available() || !has_script || !nix::unistd::geteuid().is_root() {
        return;
    }
    let mut m = Mount::prepare(|_| {});
    m.no_namespaces = Some(crate::harness::NAMESPACES.read_recursive());
    m.extra.extend(["--mode", "overlay"].map(String::from));
    m.mount();
    unmount_bar_advances(m);
}

/// 48 files of 4 MiB written, then `asdfs unmount` on a pseudo-terminal: its bar shows a
/// flush part done (the files are written one by one; whether the live flush or the final
/// one is sampled depends on timing), then the answer.
fn unmount_bar_advances(m: Mount) {
    for i in 0..48 {
        std::fs::write(m.path(&format!("f{i}")), vec![i as u8; 4 << 20]).unwrap();
    }
    let cmd = format!("{BIN} unmount '{}'", m.target.display());
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("ASDFS_LOG", "warn")
        .output()
        .unwrap();
    let tty = text(&out.stdout);
    assert!(out.status.success(), "{tty}");
    assert!(
        tty.contains("writing to disk ["),
        "no progress bar: {tty:?}"
    );
    // "] DONE/TOTAL" with 0 < DONE < TOTAL somewhere.
    let partial = tty.split("] ").skip(1).any(|rest| {
        let pair = rest
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ");
        match pair.split_once('/') {
            Some((done, total)) => {
                let total = total
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                done != "0 B" && done != total
            }
            None => false,
        }
    });
    assert!(partial, "the bar does not advance: {tty:?}");
    assert!(
        tty.contains("unmounted; the disk copy is up to date"),
        "{tty:?}"
    );
}

/// A datagram socket `NAME.sock` in a temporary directory (kept while the first value
/// lives) that stands in for systemd's notify socket or the journal, reads waiting 200 ms.
fn datagram_socket(
    name: &str,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::os::unix::net::UnixDatagram,
) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join(format!("{name}.sock"));
    let s = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    (dir, sock, s)
}
