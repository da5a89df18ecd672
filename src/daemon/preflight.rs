//! The checks before a target is mounted (design.md §8.1): processes that hold something
//! under the target (what they write through a file opened before the mount goes to the
//! disk copy, around asdfs, and the next flush replaces that file), and files with hard
//! links outside the target (a flush replaces a file by rename, so the outside name would
//! keep the old content; asd's `ENABLE_HARDLINK_SAFETY_CHECK`).
//!
//! Both need to know what is under the target: one walk of the disk copy through directory
//! descriptors (getdents, and fstatat of regular files only, for their link count), never
//! following a symlink or crossing into another filesystem. Processes are found first, so
//! the walk only compares inode numbers with the few objects they hold on the target's
//! filesystem.

use super::paths::TargetPaths;
use crate::backing::open_beneath;
use crate::backup::Backups;
use crate::config::TargetSettings;
use anyhow::bail;
use nix::fcntl::{AtFlags, OFlag};
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// At most this many findings are named in a refusal.
const NAMED: usize = 12;

/// One thing a process holds on the target's filesystem.
#[derive(Clone, Debug)]
struct Held {
    pid: u32,
    comm: String,
    /// "holds", "maps", "has its working directory in", "has its root in".
    how: &'static str,
}

/// A regular file with more than one link, as the walk met it.
struct Linked {
    nlink: u32,
    seen: u32,
    first: PathBuf,
}

/// What the walk found.
#[derive(Default)]
struct Found {
    /// (path, holder) for every object a process holds under the target.
    held: Vec<(PathBuf, Held)>,
    linked: HashMap<u64, Linked>,
    entries: u64,
}

/// Runs the checks `settings` asks for. `disk` is the target's directory (the disk copy),
/// `backups` the index of the hardlink backup's links (which are not outside links).
/// With `strict` false (a daemon taking over a store, whose session was accepted before)
/// findings are only logged.
pub fn check(
    p: &TargetPaths,
    settings: &TargetSettings,
    disk: BorrowedFd<'_>,
    backups: Option<&Backups>,
    strict: bool,
) -> anyhow::Result<()> {
    let dev = nix::sys::stat::fstat(disk)?.st_dev;
    let started = Instant::now();
    let holders = if settings.force {
        HashMap::new()
    } else {
        held_on(dev)
    };
    if holders.is_empty() && !settings.hardlink_check {
        return Ok(());
    }
    let scanned = started.elapsed();
    let found = walk(disk, dev, &holders, settings.hardlink_check)?;
    tracing::info!(
        target = %p.target.display(),
        entries = found.entries,
        proc_ms = scanned.as_millis() as u64,
        walk_ms = (started.elapsed() - scanned).as_millis() as u64,
        "checked the target for open files and hard links before mounting"
    );
    let target = &p.target;
    let refuse = |msg: String| -> anyhow::Result<()> {
        if strict {
            bail!("{msg}");
        }
        tracing::warn!("{msg}");
        Ok(())
    };
    if !found.held.is_empty() {
        refuse(holders_message(target, &found.held))?;
    }
    let outside = outside_links(&found.linked, backups);
    if !outside.is_empty() {
        refuse(links_message(target, &outside))?;
    }
    Ok(())
}

fn holders_message(target: &Path, held: &[(PathBuf, Held)]) -> String {
    let mut pids: Vec<u32> = held.iter().map(|(_, h)| h.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    let list = held
        .iter()
        .take(NAMED)
        .map(|(path, h)| {
            let path = target.join(path);
            format!("pid {} ({}) {} {}", h.pid, h.comm, h.how, path.display())
        })
        .collect::<Vec<_>>()
        .join("; ");
    let more = more(held.len());
    let unit = format!("asdfs@{}.service", escape_path(target));
    format!(
        "{}: refusing to mount: {} process(es) hold files under it, and what they write \
         through files opened before the mount would go around asdfs to the disk copy, where \
         the next flush replaces them: {list}{more}. Stop them and mount again, or have \
         systemd mount it at boot before they start (systemctl enable {unit}), or give \
         --force (mount -o force) to mount anyway: a flush then keeps a file changed on disk \
         as a conflict copy beside the target",
        target.display(),
        pids.len(),
    )
}

fn links_message(target: &Path, outside: &[(PathBuf, u32, u32)]) -> String {
    let list = outside
        .iter()
        .take(NAMED)
        .map(|(path, nlink, out)| {
            format!(
                "{} ({nlink} links, {out} outside)",
                target.join(path).display()
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    format!(
        "{}: refusing to mount: files inside have hard links outside it, which flushes would \
         split (a flush replaces a file by rename; the outside name would keep the old \
         content): {list}{}. Remove the outside links, or turn the check off to accept \
         that: --hardlink-check no (hardlink_check = false in asdfs.toml, \
         ENABLE_HARDLINK_SAFETY_CHECK=0 in asd.conf, -o hardlink_check=no)",
        target.display(),
        more(outside.len())
    )
}

fn more(n: usize) -> String {
    match n.saturating_sub(NAMED) {
        0 => String::new(),
        rest => format!(" and {rest} more"),
    }
}

/// The files (path, link count, links outside) whose links are not all inside the target
/// or in its hardlink backup.
fn outside_links(
    linked: &HashMap<u64, Linked>,
    backups: Option<&Backups>,
) -> Vec<(PathBuf, u32, u32)> {
    let mut out: Vec<(PathBuf, u32, u32)> = linked
        .iter()
        .filter_map(|(ino, l)| {
            let backup = backups.map_or(0, |b| b.index.count(*ino));
            let outside = l.nlink.saturating_sub(l.seen + backup);
            (outside > 0).then(|| (l.first.clone(), l.nlink, outside))
        })
        .collect();
    out.sort();
    out
}

/// systemd's escaping of a path (`systemd-escape --path`), for naming the unit.
fn escape_path(p: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let trimmed = p.as_os_str().as_bytes();
    let trimmed = trimmed.strip_prefix(b"/").unwrap_or(trimmed);
    let trimmed = trimmed.strip_suffix(b"/").unwrap_or(trimmed);
    if trimmed.is_empty() {
        return "-".into();
    }
    let mut out = String::new();
    for (i, &b) in trimmed.iter().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b':' | b'_' | b'.' => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// Every object on device `dev` that another process holds: open descriptors and mappings
/// of non-directories, working directories and roots. This daemon and the `asdfs mount`
/// that started it (its parent) do not count.
fn held_on(dev: u64) -> HashMap<u64, Vec<Held>> {
    let mut out: HashMap<u64, Vec<Held>> = HashMap::new();
    let me = std::process::id();
    let parent = std::os::unix::process::parent_id();
    // /proc: only the kernel writes there (docs/security.md R6).
    use crate::fsx::trusted;
    let Ok(procs) = trusted::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || pid == parent {
            continue;
        }
        let base = p.path();
        let comm = trusted::read_to_string(base.join("comm"))
            .map(|c| c.trim_end().to_string())
            .unwrap_or_default();
        let mut add = |ino: u64, how: &'static str| {
            let list = out.entry(ino).or_default();
            if !list.iter().any(|h| h.pid == pid && h.how == how) {
                list.push(Held {
                    pid,
                    comm: comm.clone(),
                    how,
                });
            }
        };
        for (link, how) in [
            ("cwd", "has its working directory in"),
            ("root", "has its root in"),
        ] {
            // Cached attributes: a process's file on a FUSE mount whose daemon does not
            // answer would hold the start (docs/security.md R7).
            if let Ok((d, mode, ino)) = trusted::stat_cached(base.join(link)) {
                if d == dev && is_dir(mode) {
                    add(ino, how);
                }
            }
        }
        for (dir, how) in [("fd", "holds"), ("map_files", "maps")] {
            for entry in trusted::read_dir(base.join(dir)).into_iter().flatten() {
                let Ok((d, mode, ino)) = entry.and_then(|e| trusted::stat_cached(e.path())) else {
                    continue;
                };
                if d == dev && !is_dir(mode) {
                    add(ino, how);
                }
            }
        }
    }
    out
}

fn is_dir(mode: u32) -> bool {
    mode & libc::S_IFMT == libc::S_IFDIR
}

/// Walks the disk copy: every entry's inode number is compared with `holders`; regular
/// files are counted by inode when they have more than one link (if `links`).
fn walk(
    root: BorrowedFd<'_>,
    dev: u64,
    holders: &HashMap<u64, Vec<Held>>,
    links: bool,
) -> anyhow::Result<Found> {
    let mut found = Found::default();
    let note_held = |found: &mut Found, ino: u64, rel: &Path| {
        for h in holders.get(&ino).into_iter().flatten() {
            found.held.push((rel.to_path_buf(), h.clone()));
        }
    };
    let top = open_dir(root, Path::new(""))?;
    note_held(
        &mut found,
        nix::sys::stat::fstat(&top)?.st_ino,
        Path::new(""),
    );
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let fd = match open_dir(root, &rel) {
            Ok(fd) => fd,
            // Gone meanwhile: nothing under it to check.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            // A user's daemon in a directory another user made unreadable: the mount can
            // serve nothing from there either.
            Err(e) if e.raw_os_error() == Some(libc::EACCES) && !rel.as_os_str().is_empty() => {
                tracing::warn!(dir = %rel.display(), "cannot read a directory to check it before mounting");
                continue;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("reading {}", rel.display())));
            }
        };
        // Another filesystem mounted inside: not part of the disk copy asdfs serves.
        if !rel.as_os_str().is_empty() && nix::sys::stat::fstat(&fd)?.st_dev != dev {
            continue;
        }
        let mut listing = nix::dir::Dir::from_fd(nix::unistd::dup(&fd)?)?;
        let mut to_stat = Vec::new();
        for e in listing.iter() {
            let e = e?;
            let name = e.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            found.entries += 1;
            let name = OsString::from_vec(name.to_vec());
            let path = rel.join(&name);
            note_held(&mut found, e.ino(), &path);
            match e.file_type() {
                Some(nix::dir::Type::Directory) => stack.push(path),
                Some(nix::dir::Type::File) if links => to_stat.push((e.ino(), name, path)),
                None => to_stat.push((e.ino(), name, path)),
                _ => {}
            }
        }
        // In inode order: on a cold cache the inode table is read in order, not seeked.
        to_stat.sort_unstable_by_key(|(ino, _, _)| *ino);
        for (_, name, path) in to_stat {
            look_at(fd.as_fd(), &name, path, links, &mut found, &mut stack)?;
        }
    }
    Ok(found)
}

/// Counts one link of a regular file with more than one (if `links`); a directory (an entry
/// whose type getdents did not give) goes on the stack.
fn look_at(
    dir: BorrowedFd<'_>,
    name: &OsString,
    path: PathBuf,
    links: bool,
    found: &mut Found,
    stack: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    let st = match nix::sys::stat::fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("{}", path.display()))),
    };
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => stack.push(path),
        libc::S_IFREG if links && st.st_nlink > 1 => {
            let l = found.linked.entry(st.st_ino).or_insert(Linked {
                nlink: st.st_nlink as u32,
                seen: 0,
                first: path,
            });
            l.seen += 1;
        }
        _ => {}
    }
    Ok(())
}

/// A directory under `root` opened for listing, without following a symlink and (where
/// allowed: owner or root) without touching its access time.
fn open_dir(root: BorrowedFd<'_>, rel: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
    match open_beneath(root, rel, flags | OFlag::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open_beneath(root, rel, flags),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_are_systemds() {
        for (path, want) in [
            ("/var/log", "var-log"),
            ("/home/me/.mozilla", "home-me-.mozilla"),
            ("/srv/web root", "srv-web\\x20root"),
            ("/a-b", "a\\x2db"),
            ("/.x", "\\x2ex"),
        ] {
            assert_eq!(escape_path(Path::new(path)), want, "{path}");
        }
    }
}
