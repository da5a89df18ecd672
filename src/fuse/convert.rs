//! Conversions between the store's types and fuser's.

use crate::error::Errno;
use crate::store::types::{Ctx, Kind, SetTime, Stat, Ts};
use fuser::{FileAttr, FileType, INodeNo, Request, TimeOrNow};
use std::time::UNIX_EPOCH;

pub(super) fn err(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e.0)
}

pub(super) fn ctx(req: &Request) -> Ctx {
    Ctx {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

pub(super) fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
        Kind::Fifo => FileType::NamedPipe,
        Kind::Socket => FileType::Socket,
        Kind::CharDev => FileType::CharDevice,
        Kind::BlockDev => FileType::BlockDevice,
    }
}

pub(super) fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(request_time(t)),
    }
}

/// A time from a request. fuser 0.18 turns (seconds < 0, nanoseconds) into
/// epoch - (|seconds| + nanoseconds) instead of epoch - |seconds| + nanoseconds; undo that.
fn request_time(t: std::time::SystemTime) -> Ts {
    match UNIX_EPOCH.duration_since(t) {
        Ok(d) if !d.is_zero() => Ts {
            sec: -(d.as_secs() as i64),
            nsec: d.subsec_nanos(),
        },
        _ => Ts::from_system(t),
    }
}

pub(super) fn attr(st: &Stat) -> FileAttr {
    let a = &st.attr;
    FileAttr {
        ino: INodeNo(st.ino.0),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime.to_system(),
        mtime: a.mtime.to_system(),
        ctime: a.ctime.to_system(),
        crtime: a.ctime.to_system(),
        kind: file_type(st.kind),
        perm: (a.mode & 0o7777) as u16,
        nlink: st.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev as u32,
        blksize: 4096,
        flags: 0,
    }
}

/// A lookup answer that lets the kernel cache "no such name" (node id 0).
pub(super) fn negative() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}
