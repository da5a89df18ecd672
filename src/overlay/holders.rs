//! Who still uses an overlay: processes whose working directory, root, open descriptors or
//! memory mappings are in it. Found through /proc (root sees every process, in every mount
//! namespace: objects are matched by device, not by mount).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// What programs hold in one overlay.
#[derive(Debug, Default)]
pub struct Holders {
    /// Directories held (working directories, roots, directory descriptors): a program
    /// holding one can still look names up in the overlay.
    pub dirs: Vec<(u32, PathBuf)>,
    /// Inode numbers of non-directories held open or mapped (the upper layer's numbers
    /// for copied-up files).
    pub files: HashSet<u64>,
    /// (process, inode) of the non-directories held: a program's descriptors, their dups
    /// and its mappings of one file are one open file (as in FUSE mode, one handle).
    pub opened: HashSet<(u32, u64)>,
}

impl Holders {
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.files.is_empty()
    }
}

/// Scans every process but this one for what it holds of an overlay: directories (which
/// report the overlay's device `ovl_dev`), files of its upper layer (which report the
/// overlay's device number for that layer, `upper_pseudo`), and mappings of upper files
/// (which name the real file: `upper_inos` on `upper_dev`). Files of the lower layer do not
/// count: the overlay cannot change them.
pub fn scan(ovl_dev: u64, upper_pseudo: u64, upper_dev: u64, upper_inos: &HashSet<u64>) -> Holders {
    let mut h = Holders::default();
    // Mount namespaces already looked at; ours has the overlay on the target.
    let mut namespaces: HashSet<PathBuf> = crate::fsx::trusted::read_link("/proc/self/ns/mnt")
        .into_iter()
        .collect();
    let wanted = format!("{}:{}", libc::major(ovl_dev), libc::minor(ovl_dev));
    for (pid, base) in processes() {
        // A mount of the overlay in another mount namespace (a copy made by unshare or a
        // container, not following our unmounts): programs there can use all of it.
        if let Ok(ns) = crate::fsx::trusted::read_link(base.join("ns/mnt")) {
            if namespaces.insert(ns) && mounted_in(&base.join("mountinfo"), &wanted) {
                h.dirs.push((pid, base.join("mountinfo")));
            }
        }
        for link in ["cwd", "root"] {
            let path = base.join(link);
            if let Some((dev, mode, _)) = stat(&path) {
                if dev == ovl_dev && mode & libc::S_IFMT == libc::S_IFDIR {
                    h.dirs.push((pid, path));
                }
            }
        }
        for entry in list(&base.join("fd")) {
            let Some((dev, mode, ino)) = stat(&entry) else {
                continue;
            };
            let dir = mode & libc::S_IFMT == libc::S_IFDIR;
            if dev == ovl_dev && dir {
                h.dirs.push((pid, entry));
            } else if !dir && (dev == upper_pseudo || dev == ovl_dev) {
                h.opened.insert((pid, ino));
                h.files.insert(ino);
            }
        }
        // A mapping names the overlay's file (recent kernels: the layer's device number) or
        // the real file on the store's tmpfs, which other files share: there only the upper
        // layer's inodes count.
        for entry in list(&base.join("map_files")) {
            if let Some((dev, _, ino)) = stat(&entry) {
                let ours = dev == upper_pseudo
                    || dev == ovl_dev
                    || (dev == upper_dev && upper_inos.contains(&ino));
                if ours {
                    h.opened.insert((pid, ino));
                    h.files.insert(ino);
                }
            }
        }
    }
    h
}

/// The ids of every mount of the device `dev` ("major:minor") that some process's mount
/// namespace has, ours included: read from /proc/PID/mountinfo (text: no filesystem is
/// asked), one process per namespace. Mount ids are unique system-wide, so the copy of a
/// mount in another namespace (unshare -m, a container) has an id of its own. A namespace
/// that no process is in (kept only by a bind mount of its nsfs file) is not seen.
pub fn mount_ids_of(dev: &str) -> HashSet<u64> {
    mounts_of(dev)
        .into_iter()
        .flat_map(|(_, ids)| ids)
        .collect()
}

/// A process in another mount namespace than ours whose namespace has a mount of `dev`
/// (a copy made by `unshare -m` or a container), as `mount_ids_of` finds them.
pub fn other_namespace_mounting(dev: &str) -> Option<u32> {
    mounts_of(dev)
        .into_iter()
        .skip(1)
        .find(|(_, ids)| !ids.is_empty())
        .and_then(|(pid, _)| pid)
}

/// One entry per mount namespace a process is in, ours first (pid `None`: /proc/self):
/// a process in it and the ids of the mounts of `dev` it lists.
fn mounts_of(dev: &str) -> Vec<(Option<u32>, Vec<u64>)> {
    let mut out = Vec::new();
    let mut namespaces: HashSet<PathBuf> = HashSet::new();
    let others = processes().into_iter().map(|(pid, base)| (Some(pid), base));
    for (pid, base) in std::iter::once((None, PathBuf::from("/proc/self"))).chain(others) {
        if let Ok(ns) = crate::fsx::trusted::read_link(base.join("ns/mnt")) {
            if !namespaces.insert(ns) {
                continue;
            }
        }
        let Ok(text) = crate::fsx::trusted::read_to_string(base.join("mountinfo")) else {
            continue;
        };
        let mut ids = Vec::new();
        for l in text.lines() {
            let mut f = l.split(' ');
            if let (Some(id), Some(d)) = (f.next(), f.nth(1)) {
                if d == dev {
                    ids.extend(id.parse::<u64>().ok());
                }
            }
        }
        out.push((pid, ids));
    }
    out
}

/// Other processes' descriptors open on one of the mounts `mount_ids` that may write (their
/// /proc links). Read from /proc/PID/fdinfo only: nothing reaches any filesystem (a stat of
/// a descriptor on someone's stalled FUSE mount could hang the caller).
pub fn writable_fds_on(mount_ids: &HashSet<u64>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for (_, base) in processes() {
        for info in list(&base.join("fdinfo")) {
            let Ok(text) = crate::fsx::trusted::read_to_string(&info) else {
                continue;
            };
            let field = |name: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_string())
            };
            let on_mount = field("mnt_id:")
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|id| mount_ids.contains(&id));
            let writable = field("flags:")
                .and_then(|v| u32::from_str_radix(&v, 8).ok())
                .is_some_and(|f| f & libc::O_ACCMODE as u32 != libc::O_RDONLY as u32);
            if on_mount && writable {
                if let Some(n) = info.file_name() {
                    out.push(base.join("fd").join(n));
                }
            }
        }
    }
    out
}

/// Processes with a shared writable mapping of a file on one of the devices `devs`
/// ("major:minor", as mountinfo writes them): "pid N (comm) maps FILE", from
/// /proc/PID/maps (text only; a FUSE passthrough mapping shows the mount's file and device).
pub fn shared_writable_maps_on(devs: &[String]) -> Vec<String> {
    let wanted: HashSet<String> = devs
        .iter()
        .filter_map(|d| {
            let (ma, mi) = d.split_once(':')?;
            let (ma, mi) = (ma.parse::<u32>().ok()?, mi.parse::<u32>().ok()?);
            Some(format!("{ma:02x}:{mi:02x}"))
        })
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for (pid, base) in processes() {
        let Ok(maps) = crate::fsx::trusted::read_to_string(base.join("maps")) else {
            continue;
        };
        let hit = maps.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let shared_writable = f
                .get(1)
                .is_some_and(|m| m.contains('w') && m.ends_with('s'));
            let ours = f.get(3).is_some_and(|d| wanted.contains(*d));
            (shared_writable && ours).then(|| f.get(5).copied().unwrap_or("a file").to_string())
        });
        if let Some(file) = hit {
            let comm = crate::fsx::trusted::read_to_string(base.join("comm")).unwrap_or_default();
            out.push(format!("pid {pid} ({}) maps {file}", comm.trim()));
        }
    }
    out
}

/// Every process but this one: its number and its /proc directory.
fn processes() -> Vec<(u32, PathBuf)> {
    let me = own_pid();
    crate::fsx::trusted::read_dir("/proc")
        .map(|it| {
            it.flatten()
                .filter_map(|e| {
                    let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
                    (pid != me).then(|| (pid, e.path()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// This process's number as /proc names it: in a child PID namespace under the host's
/// /proc, `getpid` gives another number, and the daemon's own holds (the roots of replaced
/// overlays it keeps) would count as a program's.
fn own_pid() -> u32 {
    crate::fsx::trusted::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(std::process::id)
}

/// Whether a mountinfo lists a mount of the device `dev` ("major:minor").
fn mounted_in(mountinfo: &Path, dev: &str) -> bool {
    crate::fsx::trusted::read_to_string(mountinfo)
        .map(|t| t.lines().any(|l| l.split(' ').nth(2) == Some(dev)))
        .unwrap_or(false)
}

fn list(dir: &Path) -> Vec<PathBuf> {
    crate::fsx::trusted::read_dir(dir)
        .map(|it| it.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Device, mode and inode of what a /proc link names.
fn stat(path: &Path) -> Option<(u64, u32, u64)> {
    crate::fsx::trusted::stat_cached(path).ok()
}
