//! A takeover with a descriptor of the previous session still open for writing through the
//! kernel (FUSE passthrough, design.md §3 and §4.1): the new session's file gets a new data
//! file, so the stale descriptor's writes never reach it. Without it, an attacker holding a
//! root file open across a stop wrote into the new session's file past root's later
//! `chmod 4755` (the dead connection's inode keeps the old mode: nothing clears set-user-ID),
//! and the daemon never flushed those writes (security.md, F9).

use super::stop::{daemon_gone, wait_for};
use crate::attack::ATTACKER;
use crate::harness::{Mount, asdfs_env, fuse_available};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStderr, ChildStdin, Command, Stdio};
use std::time::Duration;

/// A shell of the attacker's uid whose standard output is the held descriptor: each line
/// sent is written through it (write(2) by the attacker), and answered `ok` or `fail`.
struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    acks: BufReader<ChildStderr>,
}

impl Holder {
    fn start(held: fs::File) -> Holder {
        let script = "while read -r l; do if printf '%s\\n' \"$l\"; then echo ok >&2; else echo fail >&2; fi; done";
        let mut child = Command::new("sh")
            .args(["-c", script])
            .current_dir("/")
            .uid(ATTACKER)
            .gid(ATTACKER)
            .stdin(Stdio::piped())
            .stdout(Stdio::from(held))
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the attacker's shell");
        let stdin = child.stdin.take();
        let acks = BufReader::new(child.stderr.take().unwrap());
        Holder { child, stdin, acks }
    }

    /// Writes `line` and a newline through the held descriptor; whether it succeeded.
    fn write(&mut self, line: &str) -> bool {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let mut ack = String::new();
        loop {
            ack.clear();
            assert!(
                self.acks.read_line(&mut ack).unwrap() > 0,
                "the holder ended"
            );
            match ack.trim() {
                "ok" => return true,
                "fail" => return false,
                _ => {} // the shell's own complaint about the failed write
            }
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Stop {
    /// kill -9 of the daemon.
    Kill,
    /// SIGTERM past `stop_grace`: the store is fenced, then kept for the holder.
    Term,
}

fn stale_descriptor_after_takeover(stop: Stop) {
    if !fuse_available() {
        return;
    }
    let mut m = Mount::prepare(|_| {});
    m.env.push(("ASDFS_DATA_PATH".into(), "passthrough".into()));
    m.env.push(("ASDFS_STOP_GRACE".into(), "1".into()));
    m.mount();
    assert_eq!(m.status()["data_path"], "passthrough");
    let prog = m.path("prog");
    fs::write(&prog, "root-content\n").unwrap();
    fs::set_permissions(&prog, fs::Permissions::from_mode(0o666)).unwrap();
    let held = fs::OpenOptions::new().append(true).open(&prog).unwrap();
    let mut h = Holder::start(held);
    assert!(h.write("A0"), "the attacker's first write failed");
    let mut kept = String::from("root-content\nA0\n");
    let pid = m.daemon_pid().unwrap();
    match stop {
        Stop::Kill => m.kill_daemon(),
        Stop::Term => {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap();
            wait_for("the daemon to exit", Duration::from_secs(30), || {
                daemon_gone(pid)
            });
            assert!(
                m.store().join("private").exists(),
                "the store must stay for the holder:\n{}",
                m.log_tail()
            );
            // With no daemon the kernel lets the write through; the takeover keeps it.
            assert!(h.write("A1"), "a write after the daemon's end failed");
            kept += "A1\n";
        }
    }
    // The start refuses while the holder writes (design.md §4.1); --force takes over all
    // the same, and the fresh data files keep the holder out.
    let mut args = m.mount_args();
    args.push("--force".into());
    let out = asdfs_env(args, &m.env);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "the takeover failed: {said}");
    assert!(m.is_mounted());
    // Said in one line, naming the file.
    let line = said
        .lines()
        .find(|l| l.contains("writes through descriptors opened before the takeover are not kept"))
        .unwrap_or_else(|| panic!("the takeover did not say it: {said}"));
    assert!(line.contains("prog"), "{line}");
    assert_eq!(
        fs::read_to_string(&prog).unwrap(),
        kept,
        "the takeover lost the holder's writes\n{}",
        m.log_tail()
    );
    // Root makes the file a set-user-ID program, then the attacker writes through the
    // descriptor of the previous session (its inode still has mode 0666: nothing clears
    // set-user-ID, whatever the kernel answers it).
    fs::set_permissions(&prog, fs::Permissions::from_mode(0o4755)).unwrap();
    h.write("EVIL");
    assert_eq!(
        fs::read_to_string(&prog).unwrap(),
        kept,
        "a stale descriptor wrote the new session's file"
    );
    assert_eq!(fs::metadata(&prog).unwrap().mode() & 0o7777, 0o4755);
    m.unmount();
    let disk = m.disk_copy().join("prog");
    assert_eq!(fs::read_to_string(&disk).unwrap(), kept);
    assert_eq!(fs::metadata(&disk).unwrap().mode() & 0o7777, 0o4755);
    drop(h);
}

#[test]
fn a_stale_descriptor_does_not_write_after_a_kill_and_takeover() {
    stale_descriptor_after_takeover(Stop::Kill);
}

#[test]
fn a_stale_descriptor_does_not_write_after_a_kept_store_is_taken_over() {
    stale_descriptor_after_takeover(Stop::Term);
}
