//! mount.fuse.asdfs: the helper mount(8) runs for `mount -t fuse.asdfs DIR DIR -o ...` and
//! for fstab lines of type fuse.asdfs. It checks the call, runs `asdfs mount` (which returns
//! once the mount is live or has failed) and, as root, applies nosuid/nodev/noexec to the
//! mount. Exit codes are mount(8)'s: 0 mounted, 1 bad call, 2 system error, 32 mount failed.
//! Called as umount.fuse.asdfs it is umount(8)'s helper (`umount.rs`).
// Path calls are allowed in the helper (docs/security.md R6): it only looks at paths to
// build `asdfs`'s command line (and the utab entry, see utab.rs); asdfs checks what it acts on.
#![allow(clippy::disallowed_methods)]

mod options;
mod umount;
mod utab;

use options::{Error, Invocation, Plan};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const BAD_CALL: u8 = 1;
const SYSTEM_ERROR: u8 = 2;
const MOUNT_FAILED: u8 = 32;

/// Overrides where asdfs is found (tests, unusual installs).
const ASDFS_BIN_ENV: &str = "ASDFS_BIN";

fn main() -> ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if umount::called_as_umount(&argv0) {
        return run_umount(args);
    }
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{}", Error::Usage("mount an asdfs directory".into()));
        return ExitCode::SUCCESS;
    }
    if args.iter().any(|a| a == "-V" || a == "--version") {
        println!("mount.fuse.asdfs {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("mount.fuse.asdfs: {msg}");
            ExitCode::from(code)
        }
    }
}

/// umount(8)'s helper: `asdfs unmount DIR`, which returns once the disk copy is complete
/// and the daemon has exited; its one-line reason is printed by asdfs itself.
fn run_umount(args: Vec<OsString>) -> ExitCode {
    let call = match umount::parse(args) {
        Ok(c) => c,
        Err(m) => {
            eprintln!("umount.fuse.asdfs: {m}");
            return ExitCode::from(BAD_CALL);
        }
    };
    let Some(bin) = find_asdfs() else {
        eprintln!("umount.fuse.asdfs: cannot find the asdfs program (set ASDFS_BIN)");
        return ExitCode::from(SYSTEM_ERROR);
    };
    let mut cmd = umount::command(bin, &call);
    if call.verbose {
        eprintln!("umount.fuse.asdfs: {}", shown(&cmd));
    } else {
        cmd.stdout(std::process::Stdio::null());
    }
    match cmd.status() {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(MOUNT_FAILED),
        Err(e) => {
            eprintln!("umount.fuse.asdfs: running {}: {e}", shown(&cmd));
            ExitCode::from(SYSTEM_ERROR)
        }
    }
}

fn run(args: Vec<OsString>) -> Result<(), (u8, String)> {
    let bad = |e: Error| (BAD_CALL, e.to_string());
    let inv = options::parse_args(args).map_err(bad)?;
    let plan = options::plan(&inv).map_err(bad)?;
    check_source(&inv).map_err(|m| (BAD_CALL, m))?;
    for o in &plan.ignored {
        eprintln!("mount.fuse.asdfs: ignoring unknown option \"{o}\" (-s)");
    }
    if let Some(ro) = plan.remount {
        return remount(&inv, ro);
    }
    let mut cmd = asdfs_command(&inv, &plan)?;
    if inv.verbose || inv.fake {
        eprintln!("mount.fuse.asdfs: {}", shown(&cmd));
    }
    if inv.fake {
        return Ok(());
    }
    if plan.foreground {
        let e = cmd.exec();
        return Err((SYSTEM_ERROR, format!("running {}: {e}", shown(&cmd))));
    }
    let status = cmd
        .status()
        .map_err(|e| (SYSTEM_ERROR, format!("running {}: {e}", shown(&cmd))))?;
    match status.code() {
        Some(0) => {
            restrict(&inv.mount_point, &plan)?;
            record_for_umount(&inv);
            Ok(())
        }
        // asdfs already printed its one-line reason.
        Some(2) => Err((BAD_CALL, "asdfs refused the options".into())),
        _ => Err((
            MOUNT_FAILED,
            format!("mounting {} failed", inv.mount_point.display()),
        )),
    }
}

/// `mount -o remount,ro|rw`. Read-only: the kernel first refuses changes (a remount fails
/// with EBUSY while files are open for writing), then the daemon writes RAM to disk and
/// answers; writable: the daemon is told, then the kernel allows changes again.
fn remount(inv: &Invocation, ro: bool) -> Result<(), (u8, String)> {
    let bin = find_asdfs().ok_or_else(|| (SYSTEM_ERROR, "cannot find the asdfs program".into()))?;
    let mut tell = Command::new(bin);
    tell.arg("readonly")
        .arg(if ro { "yes" } else { "no" })
        .arg(&inv.mount_point);
    let kernel = |ro: bool| {
        remount_super(&inv.mount_point, ro).map_err(|e| {
            let held = match e.raw_os_error() {
                Some(libc::EBUSY) if ro => writers(&inv.mount_point),
                _ => Vec::new(),
            };
            let who = match held.len() {
                0 => String::new(),
                _ => format!(" (open for writing: {}; close them first)", held.join(", ")),
            };
            (
                MOUNT_FAILED,
                format!("remounting {}: {e}{who}", inv.mount_point.display()),
            )
        })
    };
    if inv.verbose || inv.fake {
        eprintln!(
            "mount.fuse.asdfs: remount {} and {}",
            if ro { "read-only" } else { "writable" },
            shown(&tell)
        );
    }
    if inv.fake {
        return Ok(());
    }
    if ro {
        kernel(true)?;
    }
    let status = tell
        .status()
        .map_err(|e| (SYSTEM_ERROR, format!("running {}: {e}", shown(&tell))))?;
    if !status.success() {
        return Err((
            MOUNT_FAILED,
            format!("the daemon of {} did not answer", inv.mount_point.display()),
        ));
    }
    if !ro {
        kernel(false)?;
    }
    Ok(())
}

/// The processes that hold files under `target` open for writing (what makes a read-only
/// remount busy), as `PID (NAME) PATH`, one file each, at most eight.
fn writers(target: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let writing = fds.flatten().find_map(|fd| {
            let path = std::fs::read_link(fd.path()).ok()?;
            let info = p.path().join("fdinfo").join(fd.file_name());
            let flags = std::fs::read_to_string(info).ok()?;
            let flags = flags.lines().find_map(|l| l.strip_prefix("flags:"))?;
            let flags = u32::from_str_radix(flags.trim(), 8).ok()?;
            let write = (libc::O_WRONLY | libc::O_RDWR) as u32;
            (path.starts_with(target) && flags & write != 0).then_some(path)
        });
        if let Some(path) = writing {
            let name = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            out.push(format!("{pid} ({}) {}", name.trim(), path.display()));
            if out.len() == 8 {
                break;
            }
        }
    }
    out
}

/// Remounts the filesystem on `target` read-only or writable, keeping the mount's other
/// flags (nosuid, nodev, noexec, noatime).
fn remount_super(target: &Path, ro: bool) -> std::io::Result<()> {
    let mut flags = libc::MS_REMOUNT | (current_flags(target)? & !libc::MS_RDONLY);
    if ro {
        flags |= libc::MS_RDONLY;
    }
    mount_flags(target, flags)
}

/// As root (and without `-n`), the utab entry through which umount(8) finds
/// umount.fuse.asdfs; without it umount(8) would unmount at once, before the final flush.
fn record_for_umount(inv: &Invocation) {
    // SAFETY: geteuid cannot fail and has no preconditions.
    if inv.no_mtab || unsafe { libc::geteuid() } != 0 {
        return;
    }
    let target = escape(&inv.mount_point.to_string_lossy());
    if let Err(e) = utab::record(&target) {
        eprintln!(
            "mount.fuse.asdfs: {}: cannot record the mount in utab ({e}); unmount it with `asdfs unmount`, which writes it to disk first",
            inv.mount_point.display()
        );
    }
}

/// asdfs keeps a directory in RAM in place: the source is the mount point itself (or a
/// placeholder name, as for other FUSE filesystems).
fn check_source(inv: &Invocation) -> Result<(), String> {
    if inv.source == "asdfs" || inv.source == "none" {
        return Ok(());
    }
    // Both named alike: nothing to look up (a path in a directory a user controls can sit
    // under her FUSE mount, which may never answer).
    let same = Path::new(&inv.source) == inv.mount_point
        || match (
            canonical_in_time(Path::new(&inv.source)),
            canonical_in_time(&inv.mount_point),
        ) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
    if same {
        return Ok(());
    }
    Err(format!(
        "the source must be the mount point itself (asdfs keeps that directory in RAM): got {} for {}",
        Path::new(&inv.source).display(),
        inv.mount_point.display()
    ))
}

/// `canonicalize`, given up after 10 s (then the thread stays blocked until the process
/// ends): a path may lie on a FUSE mount whose daemon does not answer.
fn canonical_in_time(p: &Path) -> Option<std::path::PathBuf> {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = p.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::canonicalize(p).ok());
    });
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .ok()
        .flatten()
}

fn asdfs_command(inv: &Invocation, plan: &Plan) -> Result<Command, (u8, String)> {
    let bin = find_asdfs().ok_or_else(|| {
        (
            SYSTEM_ERROR,
            "cannot find the asdfs program (looked beside this helper, in /usr/local/bin, /usr/bin and PATH; set ASDFS_BIN)".to_string(),
        )
    })?;
    // `asdfs mount OPTIONS -- MOUNTPOINT`: options are single `--flag=VALUE` words and the
    // mount point comes after `--`, so no value or path is ever read as a flag.
    let mut cmd = Command::new(bin);
    cmd.arg("mount").args(&plan.asdfs_args);
    if plan.foreground {
        cmd.arg("--foreground");
    } else if !inv.verbose {
        // mount(8) helpers are silent on success.
        cmd.arg("--quiet");
    }
    // mount(8) clears the environment of users' mounts; their RAM store goes where their
    // login session keeps runtime files.
    // SAFETY: getuid cannot fail and has no preconditions.
    let uid = unsafe { libc::getuid() };
    if uid != 0 && !plan.has_volatile && std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        let run = PathBuf::from(format!("/run/user/{uid}"));
        if run.is_dir() {
            let mut v = OsString::from("--volatile=");
            v.push(run);
            cmd.arg(v);
        }
    }
    cmd.arg("--").arg(&inv.mount_point);
    if std::env::var_os("PATH").is_none() {
        cmd.env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    }
    Ok(cmd)
}

/// `$ASDFS_BIN`, then asdfs beside this program or in `../bin` (the install layout), then the
/// usual places, then PATH.
fn find_asdfs() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(ASDFS_BIN_ENV) {
        return Some(PathBuf::from(p));
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    let near = exe_dir
        .iter()
        .flat_map(|d| [d.join("asdfs"), d.join("../bin/asdfs")]);
    let usual = ["/usr/local/bin/asdfs", "/usr/bin/asdfs", "/bin/asdfs"].map(PathBuf::from);
    let path = std::env::var_os("PATH").unwrap_or_default();
    let in_path = std::env::split_paths(&path).map(|d| d.join("asdfs"));
    near.chain(usual).chain(in_path).find(|p| p.is_file())
}

fn shown(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Applies nosuid/nodev/noexec to the new mount (root only: a user's mount made by
/// fusermount3 is always nosuid,nodev, and users cannot change mount flags). If that fails,
/// the mount is undone: mount(8) must not report a mount weaker than the fstab line asked.
fn restrict(target: &Path, plan: &Plan) -> Result<(), (u8, String)> {
    // SAFETY: geteuid cannot fail and has no preconditions.
    if plan.restrict.is_empty() || unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let Err(e) = remount_with(target, &plan.restrict) else {
        return Ok(());
    };
    let undo = find_asdfs().map(|b| Command::new(b).arg("unmount").arg(target).status());
    let undone = matches!(undo, Some(Ok(s)) if s.success());
    Err((
        MOUNT_FAILED,
        format!(
            "cannot apply {} to {}: {e}{}",
            plan.restrict.join(","),
            target.display(),
            if undone { "; unmounted again" } else { "" }
        ),
    ))
}

/// A bind remount sets the flags of this one mount; flags it does not name are cleared, so
/// the mount's current ones are passed along.
fn remount_with(target: &Path, extra: &[&str]) -> std::io::Result<()> {
    let mut flags = libc::MS_REMOUNT | libc::MS_BIND | current_flags(target)?;
    for f in extra {
        flags |= flag_bit(f);
    }
    mount_flags(target, flags)
}

/// mount(2) on `target` with only `flags` (a remount of its superblock or of this mount).
fn mount_flags(target: &Path, flags: libc::c_ulong) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(target.as_os_str().as_bytes())?;
    // SAFETY: a valid C string for the target; null source, type and data are allowed for a
    // remount.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            c.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn flag_bit(name: &str) -> libc::c_ulong {
    match name {
        "ro" => libc::MS_RDONLY,
        "nosuid" => libc::MS_NOSUID,
        "nodev" => libc::MS_NODEV,
        "noexec" => libc::MS_NOEXEC,
        "noatime" => libc::MS_NOATIME,
        "nodiratime" => libc::MS_NODIRATIME,
        "relatime" => libc::MS_RELATIME,
        _ => 0,
    }
}

/// The per-mount flags of the top mount on `target`, from /proc/self/mountinfo.
fn current_flags(target: &Path) -> std::io::Result<libc::c_ulong> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let want = escape(&target.to_string_lossy());
    let opts = info
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .rfind(|f| f.len() > 5 && f[4] == want)
        .map(|f| f[5].to_string())
        .ok_or_else(|| std::io::Error::other("the mount is not in /proc/self/mountinfo"))?;
    Ok(opts.split(',').map(flag_bit).fold(0, |a, b| a | b))
}

/// mountinfo's escaping of space, tab, newline and backslash.
fn escape(p: &str) -> String {
    p.chars()
        .map(|c| match c {
            ' ' | '\t' | '\n' | '\\' => format!("\\{:03o}", c as u32),
            c => c.to_string(),
        })
        .collect()
}
