//! Plain value types of the store: node ids, kinds, times and attributes. Nothing here
//! knows about FUSE; `src/fuse/` converts these to fuser's types.

use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// A node of the filesystem programs see; also its FUSE inode number. Never reused within
/// a mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl NodeId {
    /// The target directory itself.
    pub const ROOT: NodeId = NodeId(1);
}

/// An open file or directory handle (FUSE `fh`). Never reused within a mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HandleId(pub u64);

/// The name of a RAM data file under `private/data/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DataId(pub u64);

/// File types a node can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

impl Kind {
    /// The kind encoded in the `S_IFMT` bits of a mode.
    pub fn from_mode(mode: u32) -> Option<Kind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            libc::S_IFCHR => Kind::CharDev,
            libc::S_IFBLK => Kind::BlockDev,
            _ => return None,
        })
    }

    /// The `S_IFMT` bits of this kind.
    pub fn type_bits(self) -> u32 {
        match self {
            Kind::File => libc::S_IFREG,
            Kind::Dir => libc::S_IFDIR,
            Kind::Symlink => libc::S_IFLNK,
            Kind::Fifo => libc::S_IFIFO,
            Kind::Socket => libc::S_IFSOCK,
            Kind::CharDev => libc::S_IFCHR,
            Kind::BlockDev => libc::S_IFBLK,
        }
    }

    /// The kind from a `d_type` byte of readdir, if it says one.
    pub fn from_dtype(d: u8) -> Option<Kind> {
        Some(match d {
            libc::DT_REG => Kind::File,
            libc::DT_DIR => Kind::Dir,
            libc::DT_LNK => Kind::Symlink,
            libc::DT_FIFO => Kind::Fifo,
            libc::DT_SOCK => Kind::Socket,
            libc::DT_CHR => Kind::CharDev,
            libc::DT_BLK => Kind::BlockDev,
            _ => return None,
        })
    }
}

/// A point in time with nanoseconds, as stat(2) gives it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Ts {
    pub sec: i64,
    pub nsec: u32,
}

impl Ts {
    /// The time as the kernel stamps files: its coarse real-time clock (one tick's
    /// granularity), as tmpfs does for a file nobody has asked the times of. A finer clock
    /// put a new file's atime (the daemon's) after its mtime (the data file's, stamped by
    /// the kernel a moment later but rounded down to the tick) with passthrough.
    pub fn now() -> Ts {
        use nix::time::{ClockId, clock_gettime};
        match clock_gettime(ClockId::CLOCK_REALTIME_COARSE) {
            Ok(t) => Ts {
                sec: t.tv_sec(),
                nsec: t.tv_nsec() as u32,
            },
            Err(_) => Ts::from_system(SystemTime::now()),
        }
    }

    pub fn from_system(t: SystemTime) -> Ts {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Ts {
                sec: d.as_secs() as i64,
                nsec: d.subsec_nanos(),
            },
            Err(e) => {
                let d = e.duration();
                let (mut sec, mut nsec) = (-(d.as_secs() as i64), d.subsec_nanos());
                if nsec > 0 {
                    sec -= 1;
                    nsec = 1_000_000_000 - nsec;
                }
                Ts { sec, nsec }
            }
        }
    }

    pub fn to_system(self) -> SystemTime {
        if self.sec >= 0 {
            UNIX_EPOCH + std::time::Duration::new(self.sec as u64, self.nsec)
        } else {
            let back = std::time::Duration::new((-self.sec) as u64, 0);
            UNIX_EPOCH - back + std::time::Duration::new(0, self.nsec)
        }
    }

    pub fn to_timespec(self) -> libc::timespec {
        libc::timespec {
            tv_sec: self.sec as libc::time_t,
            tv_nsec: self.nsec as libc::c_long,
        }
    }
}

/// How a time is set by setattr/utimensat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    Now,
    At(Ts),
}

/// Attributes of a node, stored in RAM and in the store log. `mode` holds permission and
/// special bits only (no `S_IFMT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attr {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: Ts,
    pub mtime: Ts,
    pub ctime: Ts,
}

/// Attributes as reported to a caller (stat).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub ino: NodeId,
    pub kind: Kind,
    pub attr: Attr,
    pub nlink: u32,
}

/// Who is asking: the caller's credentials from the FUSE request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ctx {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

impl Ctx {
    /// The daemon itself (recovery, tests).
    pub const ROOT: Ctx = Ctx {
        uid: 0,
        gid: 0,
        pid: 0,
    };
}

/// A setattr request: each field set is to be changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    pub ctime: Option<Ts>,
}

/// An entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Position to continue after this entry.
    pub cookie: u64,
    pub name: std::ffi::OsString,
    pub ino: NodeId,
    pub kind: Kind,
}

/// What a file system reports to statfs(2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsStats {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

impl FsStats {
    /// What statvfs(2) says of a file system, with names of at most 255 bytes (the store's
    /// tmpfs's limit, which every name must also fit).
    #[allow(clippy::unnecessary_cast)] // the widths of statvfs's fields differ by target
    pub fn of(s: &nix::sys::statvfs::Statvfs) -> FsStats {
        FsStats {
            blocks: s.blocks() as u64,
            bfree: s.blocks_free() as u64,
            bavail: s.blocks_available() as u64,
            files: s.files() as u64,
            ffree: s.files_free() as u64,
            bsize: s.block_size() as u32,
            namelen: (s.name_max() as u32).min(255),
            frsize: s.fragment_size() as u32,
        }
    }
}
