//! asd.service in a container: sync, resync, unsync, a killed daemon restarted by systemd
//! with its data kept, and the journal of it all.

use super::*;

/// asd's targets (one with a space) under /srv/data/asd: the directory `asd` on the host.
const ASD_TARGETS: [&str; 2] = ["/srv/data/asd/web root", "/srv/data/asd/cache"];

/// anything-sync-daemon's way: /etc/asd.conf, `systemctl enable asd.service` (which pulls in
/// asd-resync.service and its timer), boot. Both targets must be asdfs mounts of one daemon,
/// asd.service's main process; killed, it is restarted with every change kept (issue 11);
/// `asd-resync.service` must put what was written on the disk copy
/// underneath while it stays mounted; at power-off `asd unsync` (and, for a file a program
/// keeps open, the daemon's stop on systemd's SIGTERM) must write the rest before the
/// filesystem underneath is unmounted, and leave the directories holding exactly what
/// programs saw. The daemon's log lines reach the journal with their own priorities.
#[test]
fn asd_service_syncs_resyncs_and_unsyncs_in_a_container() {
    if !available() {
        return;
    }
    let bins = Bins::new();
    let mut c = Container::prepare(&bins);
    let disk = c.data.join("asd");
    let (web, cache) = (disk.join("web root"), disk.join("cache"));
    fs::create_dir_all(web.join("sub")).unwrap();
    fs::create_dir_all(&cache).unwrap();
    fs::write(web.join("old.txt"), "from disk\n").unwrap();
    fs::write(web.join("sub/keep"), "keep\n").unwrap();
    fs::write(cache.join("gone"), "delete me\n").unwrap();
    let web_before = tree(&web);
    let cache_before = tree(&cache);
    c.put(
        "etc/asd.conf",
        "# /etc/asd.conf as anything-sync-daemon's users write it (VOLATILE: asd's /tmp)\n\
         WHATTOSYNC=(\n  '/srv/data/asd/web root'   # quoted: a space\n  /srv/data/asd/cache\n)\n\
         USE_BACKUPS=\"yes\"\nBACKUP_LIMIT=5\n",
    );
    // The flush plan is logged at debug level: lines of priority 7 in the journal.
    c.put(
        "etc/systemd/system/asd.service.d/test.conf",
        "[Service]\nEnvironment=ASDFS_LOG=info,fuser::reply=off,asdfs::flush=debug\n\
         Environment=ASDFS_STOP_GRACE=1\n",
    );
    c.systemctl_offline(&["enable", "asd.service"]);
    c.boot_until_running();

    // `asd sync` succeeded; asd-resync.service ran once at boot and armed its timer.
    let show = |unit: &str, props: &[&str]| -> Vec<String> {
        props.iter().map(|p| c.property(unit, p)).collect()
    };
    assert_eq!(
        show("asd.service", &["ActiveState", "Result", "ExecMainStatus"]),
        ["active", "success", "0"]
    );
    assert_eq!(
        show("asd-resync.service", &["Result", "ExecMainStatus"]),
        ["success", "0"]
    );
    assert_eq!(
        show("asd-resync.timer", &["ActiveState", "SubState"]),
        ["active", "waiting"]
    );
    for t in ASD_TARGETS {
        assert_eq!(c.fstype(t).as_deref(), Some("fuse.asdfs"), "{t}");
    }
    // One daemon serves both, and it is asd.service's main process (`asd sync --foreground`
    // became it), so systemd notices when it dies.
    let out = c.exec(&["asdfs", "status", "--json"]);
    assert!(out.status.success(), "{}", describe(&out));
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pid_of = |t: &str| {
        let r = reports
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["target"] == t);
        let r = r.unwrap_or_else(|| panic!("{t} not in {reports:#}"));
        assert_eq!(r["state"], "mounted", "{r:#}");
        // The default data path: the kernel writes the data files itself.
        assert_eq!(r["data_path"], "passthrough", "{r:#}");
        r["pid"].as_i64().unwrap() as i32
    };
    let pid = pid_of(ASD_TARGETS[0]);
    assert_eq!(pid_of(ASD_TARGETS[1]), pid, "{reports:#}");
    let daemons = container_processes(&c, "asdfs");
    assert_eq!(daemons.len(), 1, "{daemons:?}");
    assert_eq!(daemons[0].0, pid, "{daemons:?}");
    assert!(
        daemons[0].1.contains("/system.slice/asd.service\n"),
        "{}",
        daemons[0].1
    );
    assert!(container_processes(&c, "asd").is_empty());

    // Programs write; nothing reaches the disk copy yet.
    let out = c.exec(&[
        "sh",
        "-c",
        "cd '/srv/data/asd/web root' && echo '<h1>hi</h1>' > index.html && \
         echo changed > old.txt && echo spaced > 'a b.txt' && \
         cd ../cache && rm gone && mkdir dir && echo deep > dir/f",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(tree(&web), web_before, "written to disk before a resync");
    assert_eq!(
        tree(&cache),
        cache_before,
        "written to disk before a resync"
    );

    // asd's timed resync, started by hand: on the disk copy, still mounted.
    let out = c.exec(&["systemctl", "start", "asd-resync.service"]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        show("asd-resync.service", &["Result", "ExecMainStatus"]),
        ["success", "0"]
    );
    let web_resynced = expect(&[
        ("index.html", "<h1>hi</h1>\n"),
        ("old.txt", "changed\n"),
        ("a b.txt", "spaced\n"),
        ("sub", "/"),
        ("sub/keep", "keep\n"),
    ]);
    assert_eq!(tree(&web), web_resynced);
    assert_eq!(tree(&cache), expect(&[("dir", "/"), ("dir/f", "deep\n")]));
    for t in ASD_TARGETS {
        assert_eq!(c.fstype(t).as_deref(), Some("fuse.asdfs"), "{t}");
    }
    // The hardlink backup of the session start sits beside each target while it runs.
    assert!(disk.join(".web root-backup_asd-old/old.txt").exists());

    // More changes, left for the final flush at power-off.
    let out = c.exec(&[
        "sh",
        "-c",
        "cd /srv/data/asd && mv 'web root/sub' 'web root/moved' && rm 'web root/old.txt' && \
         echo late > cache/late",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(tree(&web), web_resynced, "written to disk before power-off");
    let restarted = kill_and_restart(&c, pid);
    // A program that keeps a file open and appends to it through the power-off, outside
    // every unit (systemd kills it only at the very end). `asd unsync` cannot wait for it;
    // systemd's SIGTERM to asd.service's cgroup then makes the daemon cut it off (after
    // ASDFS_STOP_GRACE) and write everything it was told was written.
    let mut holder = Holder::start(&c, "/srv/data/asd/cache/held");
    c.wait_for(Duration::from_secs(10), || {
        let out = c.exec(&["cat", "/srv/data/asd/cache/held"]);
        text(&out.stdout).contains("line2\n").then_some(())
    });

    let st = c.poweroff();
    assert!(st.success(), "nspawn: {st}; console:\n{}", c.console());
    let journal = c.journal();
    let acknowledged = holder.finish();
    let mut cache_now = tree(&cache);
    let held = cache_now.remove("held").unwrap_or_default();
    let lines: Vec<&str> = held.lines().collect();
    assert!(
        lines
            .iter()
            .enumerate()
            .all(|(i, l)| *l == format!("line{i}")),
        "{held}"
    );
    // Every write the program was told succeeded is on disk (one more may have been
    // written before the holder was killed between the write and its report).
    assert!(
        acknowledged >= 3 && lines.len() >= acknowledged,
        "{acknowledged} acknowledged, on disk:\n{held}\n{journal}"
    );
    assert_eq!(
        tree(&web),
        expect(&[
            ("index.html", "<h1>hi</h1>\n"),
            ("a b.txt", "spaced\n"),
            ("moved", "/"),
            ("moved/keep", "keep\n"),
        ]),
        "{journal}"
    );
    assert_eq!(
        cache_now,
        expect(&[("dir", "/"), ("dir/f", "deep\n"), ("late", "late\n")]),
        "{journal}"
    );
    // Beside the targets nothing of asdfs stays: the side directories and the hardlink
    // backups are removed at a clean stop, and the RAM stores outlived the kill, so no
    // crash snapshot was written.
    let mut beside: Vec<String> = fs::read_dir(&disk)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    beside.sort();
    assert_eq!(beside, ["cache", "web root"], "{journal}");
    check_asd_journal(&c, &journal, pid, restarted);
}

/// The daemon is asd.service's main process: killed, systemd restarts it, the new daemon
/// takes the RAM stores over (and writes them to disk), and every change stays. Returns the
/// new daemon's PID.
fn kill_and_restart(c: &Container, pid: i32) -> i32 {
    assert_eq!(c.property("asd.service", "MainPID"), pid.to_string());
    let out = c.exec(&["kill", "-9", &pid.to_string()]);
    assert!(out.status.success(), "{}", describe(&out));
    let restarted = c.wait_for(Duration::from_secs(60), || {
        let main: i32 = c.property("asd.service", "MainPID").parse().ok()?;
        let active = c.property("asd.service", "ActiveState") == "active";
        (active && main != 0 && main != pid).then_some(main)
    });
    for t in ASD_TARGETS {
        assert_eq!(c.fstype(t).as_deref(), Some("fuse.asdfs"), "{t}");
    }
    let out = c.exec(&[
        "sh",
        "-c",
        "cd /srv/data/asd && cat cache/late 'web root/moved/keep' && ! test -e 'web root/old.txt'",
    ]);
    assert_eq!(text(&out.stdout), "late\nkeep\n", "{}", describe(&out));
    assert!(out.status.success(), "{}", describe(&out));
    restarted
}

/// `asd sync`, both resyncs and `asd unsync` succeeded, unsync before /srv/data was
/// unmounted; the lines of the daemon (PID `daemon` in the container) carry their
/// priorities.
fn check_asd_journal(c: &Container, journal: &str, daemon: i32, restarted: i32) {
    let asd = c.journal_with(&["-u", "asd.service", "-u", "asd-resync.service"]);
    for (needle, least, most) in [
        // The resync at boot, ours, and one after the restart.
        ("]: Sync successful", 2, 3),
        // At power-off (and after the kill where systemd runs ExecStop= before a restart).
        ("]: Unsync successful", 1, 2),
        ("Started asd.service", 2, 2),
        ("Finished asd-resync.service", 2, 3),
        ("asd-resync.service: Deactivated successfully.", 2, 3),
        // A resync started while asd.service waited to restart finds the daemon dead.
        ("Failed to start asd-resync.service", 0, 1),
        // Only after a stop whose ExecStop= exited 0 and whose main process exited 0.
        ("asd.service: Deactivated successfully.", 1, 1),
        ("Stopped asd.service", 2, 2),
        (
            "asd.service: Main process exited, code=killed, status=9/KILL",
            1,
            1,
        ),
        ("asd.service: Failed with result 'signal'", 1, 1),
        ("asd.service: Scheduled restart job", 1, 1),
    ] {
        let n = asd.matches(needle).count();
        assert!(least <= n && n <= most, "{needle} {n} times:\n{asd}");
    }
    let expected = |l: &str| {
        l.contains("status=9/KILL")
            || l.contains("asd.service: Failed with result 'signal'")
            || l.contains("Failed to start asd-resync.service")
            || l.contains("asd-resync.service: Main process exited, code=exited, status=1/FAILURE")
            || l.contains("asd-resync.service: Failed with result 'exit-code'")
    };
    for bad in ["Failed", "status=", "code=", "Killing", "timed out"] {
        let found = asd.lines().any(|l| l.contains(bad) && !expected(l));
        assert!(!found, "{bad}:\n{asd}");
    }
    let [web, cache] = ASD_TARGETS;
    for line in [
        format!("asd: {web}: unmounted; the disk copy is up to date"),
        format!("asd: {cache}: unmounted, but 1 file was still open"),
        format!("unmounted; the disk copy is up to date target={cache}"),
    ] {
        assert!(asd.contains(&line), "{line}:\n{asd}");
    }
    check_shutdown_order(journal, "]: Unsync successful", "Stopped asd.service");
    // The open file was cut off and the cache written before the unit stopped.
    check_shutdown_order(
        journal,
        &format!("unmounted; the disk copy is up to date target={cache}"),
        "Stopped asd.service",
    );
    // systemd may still try to unmount the asdfs mounts (its stop jobs are queued at
    // power-off, before `asd unsync` removed the mounts), but only after asd.service has
    // stopped: they are ordered before local-fs.target, asd.service after it.
    let pos = |needle: &str| journal.lines().position(|l| l.contains(needle));
    if let Some(u) = pos("Unmounting srv-data-asd") {
        assert!(pos("Stopped asd.service") < Some(u), "{journal}");
    }

    // The daemon writes to the journal natively (SYSLOG_IDENTIFIER=asdfs, PRIORITY=N).
    // systemd logs nothing at debug level for the unit here, so every line of priority 7
    // is the daemon's (its flush plan); -p info leaves them out and keeps its info lines (6).
    let at = |p: &str| c.journal_with(&["-u", "asd.service", "-p", p]);
    let lines = |s: String| -> Vec<String> {
        s.lines()
            .filter(|l| !l.starts_with("-- "))
            .map(str::to_string)
            .collect()
    };
    let daemon = format!(" asdfs[{daemon}]: ");
    let debug = lines(at("debug..debug"));
    assert!(!debug.is_empty(), "no debug line:\n{asd}");
    assert!(debug.iter().all(|l| l.contains(" asdfs[")), "{debug:#?}");
    let up_to_info = lines(at("info"));
    assert!(
        !up_to_info.iter().any(|l| debug.contains(l)),
        "{up_to_info:#?}"
    );
    let in_ram = format!("{daemon}in RAM target=/srv/data/asd/web root");
    assert!(at("info..info").contains(&in_ram), "{asd}");
    assert!(!at("notice").contains(&in_ram), "{asd}");
    // Its warning (4) about the open file: kept by -p warning, not an info line. With
    // passthrough its writes are refused rather than the connection cut (design.md §4.1).
    let cut = format!(
        " asdfs[{restarted}]: files still open at the stop: their writes fail from now on (EROFS)"
    );
    assert!(at("warning..warning").contains(&cut), "{asd}");
    assert!(!at("info..notice").contains(&cut), "{asd}");
    assert!(
        !asd.lines().any(|l| l.contains("]: <")),
        "a priority prefix was not read:\n{asd}"
    );
}
