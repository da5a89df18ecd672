//! The FUSE adapter: converts fuser's requests into store calls and the results into
//! replies. No decisions are made here; everything it knows is in `Store`.

mod backing;
mod convert;

pub use crate::config::DataPath;

use crate::error::Errno;
use crate::store::Store;
use crate::store::namespace::NewKind;
use crate::store::types::{Ctx, HandleId, Kind, NodeId, SetAttr};
use convert::{attr, ctx, err, file_type, set_time};
use fuser::{
    BackingId, CopyFileRangeFlags, FileHandle, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How long the kernel may cache attributes and names: the daemon is the only writer and
/// every change passes through the kernel, so a long time is safe (design.md §9).
const TTL: Duration = Duration::from_secs(3600);
const MAX_WRITE: u32 = 1 << 20;

/// Called for fsync(2) of a file (its node) or a directory (`None`) when the fsync policy is
/// `sync`: returns once it is on disk (design.md §6.3).
pub type SyncHook = Arc<dyn Fn(Option<NodeId>) -> anyhow::Result<()> + Send + Sync>;

/// The store's hook for attributes it changed on its own (`Store::set_attrs_hook`): the
/// kernel's cached attributes of that inode are invalidated (attributes only: offset -1).
pub fn attrs_invalidator(notifier: fuser::Notifier) -> crate::store::AttrsHook {
    Box::new(move |id: NodeId| {
        if let Err(e) = notifier.inval_inode(INodeNo(id.0), -1, 0) {
            tracing::debug!(error = %e, "could not invalidate an inode's attributes");
        }
    })
}

/// The filesystem one FUSE session serves.
pub struct AsdFs {
    store: Arc<Store>,
    on_fsync: Option<SyncHook>,
    data_path: DataPath,
    backings: backing::Backings,
}

impl AsdFs {
    pub fn new(store: Arc<Store>, on_fsync: Option<SyncHook>, data_path: DataPath) -> AsdFs {
        AsdFs {
            store,
            on_fsync,
            data_path,
            backings: backing::Backings::default(),
        }
    }

    /// Asks the kernel for passthrough if wanted and sound here (design.md §4.1). `auto`
    /// leaves it to a daemon running as root (the kernel gives backing files to no one else);
    /// `passthrough` asks anyway and warns where it is refused.
    fn negotiate_passthrough(&self, config: &mut KernelConfig, killpriv: bool) -> bool {
        let asked = match self.data_path {
            DataPath::Daemon => return false,
            DataPath::Auto if !nix::unistd::geteuid().is_root() => {
                tracing::info!("not root: file data is served by the daemon (no FUSE passthrough)");
                return false;
            }
            DataPath::Auto => false,
            DataPath::Passthrough => true,
        };
        let refused = |why: &str| {
            if asked {
                tracing::warn!("{why}: file data is served by the daemon");
            } else {
                tracing::info!("{why}: file data is served by the daemon");
            }
            false
        };
        if !self.store.fine_ctime() {
            return refused("tmpfs ctimes are coarse here");
        }
        // Without `FUSE_HANDLE_KILLPRIV_V2` the kernel keeps set-group-ID without group
        // execute on a passthrough write by a caller outside the file's group (design.md
        // §4.1); every kernel with passthrough has it.
        if !killpriv
            || config
                .add_capabilities(InitFlags::FUSE_PASSTHROUGH)
                .is_err()
            || config.set_max_stack_depth(1).is_err()
        {
            return refused("the kernel has no FUSE passthrough");
        }
        true
    }

    /// Gives an open handle's data file to the kernel; `None` when the daemon serves it:
    /// passthrough is off or the store records access times (design.md §9.2). `Err` when the
    /// store could not pin the data file (no room for its log record): the handle is released.
    fn backing_for(
        &self,
        node: NodeId,
        fh: HandleId,
        open_backing: impl FnOnce(&std::fs::File) -> std::io::Result<BackingId>,
    ) -> Result<Option<Arc<BackingId>>, Errno> {
        if !self.backings.on() {
            return Ok(None);
        }
        // A node whose other handles have the kernel's data path keeps it for this one too.
        let daemon = !self.store.cache_across_opens();
        let mut pin_failed = None;
        let pin = |backed: Option<u64>| {
            let r = self.store.pin(fh).and_then(|f| {
                use std::os::unix::fs::MetadataExt;
                match backed {
                    Some(ino) if f.metadata().map(|m| m.ino()).ok() != Some(ino) => {
                        // Never happens while release keeps the table and the pins in step.
                        tracing::error!("an open file's data file changed under its backing id");
                        let _ = self.store.unpin_handle(fh);
                        Err(Errno::EIO)
                    }
                    _ => Ok(f),
                }
            });
            r.map_err(|e| {
                pin_failed = Some(e);
                std::io::Error::from(e)
            })
        };
        match self.backings.open(node, fh, daemon, pin, open_backing) {
            Ok(id) => Ok(id),
            Err(_) if pin_failed.is_some() => {
                let e = pin_failed.unwrap_or(Errno::EIO);
                let _ = self.store.release(fh);
                Err(e)
            }
            Err(e) => {
                tracing::warn!(error = %e, "the kernel refused a passthrough backing file; file data is served by the daemon from now on");
                self.backings.set_on(false);
                self.store.set_passthrough(false);
                let _ = self.store.unpin_handle(fh);
                Ok(None)
            }
        }
    }

    fn entry(&self, r: Result<crate::store::types::Stat, Errno>, reply: ReplyEntry) {
        match r {
            Ok(st) => reply.entry(&TTL, &attr(&st), Generation(self.store.handle_gen())),
            Err(e) if e == Errno::ENOENT => reply.entry(
                &TTL,
                &convert::negative(),
                Generation(self.store.handle_gen()),
            ),
            Err(e) => reply.error(err(e)),
        }
    }

    fn empty(&self, r: Result<(), Errno>, reply: ReplyEmpty) {
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    /// Runs a change: if its records could not be put in the store log (the log full beyond
    /// its reserve, and not rewritable), the program is told EIO, never that it succeeded
    /// (design.md §3).
    fn logged<T>(&self, change: impl FnOnce() -> Result<T, Errno>) -> Result<T, Errno> {
        crate::store::take_log_lost();
        let r = change();
        if r.is_ok() && crate::store::take_log_lost() {
            return Err(Errno::EIO);
        }
        r
    }

    /// fsync(2) and fsyncdir: with the `defer` policy there is nothing to do, and ENOSYS
    /// tells the kernel so once: it then answers every later fsync itself, with success,
    /// without a round trip (what a SQLite commit with synchronous=FULL pays).
    fn fsync_reply(&self, node: Option<NodeId>, reply: ReplyEmpty) {
        match self.on_fsync {
            None => reply.error(fuser::Errno::ENOSYS),
            Some(_) => self.empty(self.sync(node), reply),
        }
    }

    fn sync(&self, node: Option<NodeId>) -> Result<(), Errno> {
        match &self.on_fsync {
            Some(hook) => hook(node).map_err(|e| {
                tracing::warn!(error = %format!("{e:#}"), "fsync: flush failed");
                Errno::EIO
            }),
            None => Ok(()),
        }
    }

    #[allow(clippy::too_many_arguments)] // mirrors fuser's mknod
    fn make(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        kind: NewKind<'_>,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self.logged(|| {
            self.store
                .make(ctx(req), NodeId(parent.0), name, kind, mode, umask)
        });
        match r {
            Ok(st) => reply.entry(&TTL, &attr(&st), Generation(self.store.handle_gen())),
            Err(e) => reply.error(err(e)),
        }
    }

    /// Flags of a file the daemon serves. No FLUSH at close: nothing is buffered anywhere
    /// but in the data file (one round trip less per close).
    fn open_flags(&self) -> FopenFlags {
        match self.store.cache_across_opens() {
            true => FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH,
            false => FopenFlags::FOPEN_NOFLUSH,
        }
    }

    /// Flags of an open directory: the kernel keeps its listing across opens (every change
    /// of a directory passes through the kernel, which drops the cache then), except with
    /// relatime, where a listing must reach the store to record the access (design.md §9.2).
    fn opendir_flags(&self) -> FopenFlags {
        match self.store.cache_across_opens() {
            true => FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
            false => FopenFlags::empty(),
        }
    }

    fn xattr_reply(value: Result<Vec<u8>, Errno>, size: u32, reply: ReplyXattr) {
        match value {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(fuser::Errno::ERANGE),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(err(e)),
        }
    }
}

impl Filesystem for AsdFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        for flag in [
            InitFlags::FUSE_MAX_PAGES,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_POSIX_ACL,
            InitFlags::FUSE_DONT_MASK,
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_EXPORT_SUPPORT,
        ] {
            if config.add_capabilities(flag).is_err() {
                tracing::debug!(?flag, "kernel lacks a FUSE capability");
            }
        }
        let _ = config.set_max_write(MAX_WRITE);
        // The daemon takes away set-user-ID, set-group-ID (`Store::setattr`, `open`, writes)
        // and the kernel skips its `security.capability` check on later writes (design.md
        // §4.1): without it every write asks the daemon first.
        let killpriv = config
            .add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2)
            .is_ok();
        let pt = self.negotiate_passthrough(config, killpriv);
        self.backings.set_on(pt);
        self.store.set_passthrough(pt);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.entry(self.store.lookup(NodeId(parent.0), name), reply)
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.store.forget(NodeId(ino.0), nlookup)
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.store.getattr(NodeId(ino.0)) {
            Ok(st) => reply.attr(&TTL, &attr(&st)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let sa = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
            ctime: ctime.map(crate::store::types::Ts::from_system),
        };
        let r = self.logged(|| self.store.setattr(ctx(req), NodeId(ino.0), sa));
        match r {
            Ok(st) => reply.attr(&TTL, &attr(&st)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.store.readlink(NodeId(ino.0)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(err(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let kind = match Kind::from_mode(mode) {
            Some(Kind::File) => NewKind::File,
            Some(k @ (Kind::Fifo | Kind::Socket | Kind::CharDev | Kind::BlockDev)) => {
                NewKind::Special(k, u64::from(rdev))
            }
            _ => return reply.error(fuser::Errno::EINVAL),
        };
        self.make(req, parent, name, kind, mode, umask, reply)
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.make(req, parent, name, NewKind::Dir, mode, umask, reply)
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.empty(
            self.logged(|| self.store.unlink(NodeId(parent.0), name)),
            reply,
        )
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.empty(
            self.logged(|| self.store.rmdir(NodeId(parent.0), name)),
            reply,
        )
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.make(
            req,
            parent,
            link_name,
            NewKind::Symlink(target.as_os_str().as_bytes()),
            0o777,
            0,
            reply,
        )
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.empty(
            self.logged(|| {
                self.store.rename(
                    NodeId(parent.0),
                    name,
                    NodeId(newparent.0),
                    newname,
                    flags.bits(),
                )
            }),
            reply,
        )
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match self.logged(|| self.store.link(NodeId(ino.0), NodeId(newparent.0), newname)) {
            Ok(st) => reply.entry(&TTL, &attr(&st), Generation(self.store.handle_gen())),
            Err(e) => reply.error(err(e)),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let truncate = flags.0 & libc::O_TRUNC != 0;
        let fh = match self.logged(|| self.store.open(ctx(req), NodeId(ino.0), write, truncate)) {
            Ok(fh) => fh,
            Err(e) => return reply.error(err(e)),
        };
        let open_backing = |f: &std::fs::File| reply.open_backing(f);
        match self.backing_for(NodeId(ino.0), fh, open_backing) {
            Ok(Some(id)) => {
                reply.opened_passthrough(FileHandle(fh.0), FopenFlags::FOPEN_NOFLUSH, &id)
            }
            Ok(None) => reply.opened(FileHandle(fh.0), self.open_flags()),
            Err(e) => reply.error(err(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.store.read(HandleId(fh.0), offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(err(e)),
        }
    }

    fn write(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.logged(|| self.store.write(ctx(req), HandleId(fh.0), offset, data)) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(err(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok()
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let fh = HandleId(fh.0);
        let r = self.backings.release(fh, || self.store.release(fh));
        self.empty(r, reply)
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.fsync_reply(Some(NodeId(ino.0)), reply)
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.store.opendir(NodeId(ino.0)) {
            Ok(fh) => reply.opened(FileHandle(fh.0), self.opendir_flags()),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self
            .store
            .readdir(NodeId(ino.0), HandleId(fh.0), offset, false, |e, _| {
                reply.add(INodeNo(e.ino.0), e.cookie, file_type(e.kind), &e.name)
            });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let r = self.store.readdir(
            NodeId(ino.0),
            HandleId(fh.0),
            offset,
            true,
            |e, st| match st {
                Some(st) => reply.add(
                    INodeNo(e.ino.0),
                    e.cookie,
                    &e.name,
                    &TTL,
                    &attr(st),
                    Generation(self.store.handle_gen()),
                ),
                None => true,
            },
        );
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.empty(self.store.releasedir(HandleId(fh.0)), reply)
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.fsync_reply(None, reply)
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.store.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(err(e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.empty(
            self.logged(|| {
                self.store
                    .setxattr(ctx(req), NodeId(ino.0), name, value, flags)
            }),
            reply,
        )
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        Self::xattr_reply(self.store.getxattr(NodeId(ino.0), name), size, reply)
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let list = self.store.listxattr(ctx(req), NodeId(ino.0)).map(|names| {
            let mut out = Vec::new();
            for n in names {
                out.extend_from_slice(n.as_bytes());
                out.push(0);
            }
            out
        });
        Self::xattr_reply(list, size, reply)
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.empty(
            self.logged(|| self.store.removexattr(NodeId(ino.0), name)),
            reply,
        )
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let c: Ctx = ctx(req);
        let (st, fh) = match self.logged(|| {
            self.store
                .create(c, NodeId(parent.0), name, mode, umask, write)
        }) {
            Ok(r) => r,
            Err(e) => return reply.error(err(e)),
        };
        let generation = Generation(self.store.handle_gen());
        match self.backing_for(st.ino, fh, |f| reply.open_backing(f)) {
            Err(e) => reply.error(err(e)),
            Ok(Some(id)) => reply.created_passthrough(
                &TTL,
                &attr(&st),
                generation,
                FileHandle(fh.0),
                FopenFlags::FOPEN_NOFLUSH,
                &id,
            ),
            Ok(None) => reply.created(
                &TTL,
                &attr(&st),
                generation,
                FileHandle(fh.0),
                self.open_flags(),
            ),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.empty(
            self.logged(|| {
                self.store
                    .fallocate(ctx(req), HandleId(fh.0), offset, length, mode)
            }),
            reply,
        )
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.store.lseek(HandleId(fh.0), offset, whence) {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(err(e)),
        }
    }

    fn copy_file_range(
        &self,
        req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        match self.logged(|| {
            self.store.copy_file_range(
                ctx(req),
                HandleId(fh_in.0),
                offset_in,
                HandleId(fh_out.0),
                offset_out,
                len,
            )
        }) {
            Ok(n) => reply.written(n.min(u64::from(u32::MAX)) as u32),
            Err(e) => reply.error(err(e)),
        }
    }

    /// No ioctl is supported: ENOTTY, as for a regular file on most filesystems (isatty(3)
    /// asks this), without fuser's "not implemented" warning.
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        reply.error(fuser::Errno::ENOTTY);
    }
}
