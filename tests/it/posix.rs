//! POSIX behaviour through the mount, compared with the same operations on tmpfs.
//!
//! Each test runs the same operations in the mount and in a fresh directory on /dev/shm
//! (tmpfs) and compares the results, errno values of failures included. Inode numbers,
//! devices and the times the kernel sets to "now" differ by nature: for those the tests
//! compare whether they changed, not their values. Operations as another user run in a
//! forked child with that user's credentials. Differences are collected, so that one test
//! reports every difference of its area, and fail the test at its end.

use crate::harness::{Mount, fuse_available};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr, OsString};
use std::fmt::Debug;
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

type R<T> = Result<T, i32>;
/// Seconds and nanoseconds.
type Time = (i64, i64);

const T1: Time = (1_234_567_890, 123_456_789);
const T2: Time = (1_500_000_000, 987_654_321);
const T3: Time = (1_600_000_000, 1);
const T4: Time = (1_700_000_000, 999_999_999);

const STAFF: u32 = 1234;

/// Who runs an operation in a child process.
#[derive(Clone, Copy)]
struct Cred {
    uid: u32,
    gid: u32,
    groups: &'static [u32],
}

const NOBODY: Cred = Cred {
    uid: 65534,
    gid: 65534,
    groups: &[],
};
const NOBODY_IN_STAFF: Cred = Cred {
    uid: 65534,
    gid: 65534,
    groups: &[STAFF],
};
const ALICE: Cred = Cred {
    uid: 1000,
    gid: 1000,
    groups: &[],
};

// ---------------------------------------------------------------------------------------
// System calls returning errno values.

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

fn ok(r: libc::c_int) -> R<()> {
    if r < 0 { Err(errno()) } else { Ok(()) }
}

fn ok_n(r: isize) -> R<usize> {
    if r < 0 { Err(errno()) } else { Ok(r as usize) }
}

trait Code<T> {
    fn code(self) -> R<T>;
}

impl<T> Code<T> for std::io::Result<T> {
    fn code(self) -> R<T> {
        self.map_err(|e| e.raw_os_error().unwrap_or(-1))
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("no NUL in a path")
}

fn cname(s: &str) -> CString {
    CString::new(s).expect("no NUL in a name")
}

fn open(p: &Path, flags: i32, mode: u32) -> R<File> {
    let c = cpath(p);
    // SAFETY: `c` is a valid C string; the new descriptor is owned by the File.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: `fd` is a descriptor we just opened and nobody else owns.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn mkdir(p: &Path, mode: u32) -> R<()> {
    let c = cpath(p);
    // SAFETY: valid C string.
    ok(unsafe { libc::mkdir(c.as_ptr(), mode) })
}

fn mknod(p: &Path, mode: u32, dev: u64) -> R<()> {
    let c = cpath(p);
    // SAFETY: valid C string.
    ok(unsafe { libc::mknod(c.as_ptr(), mode, dev) })
}

fn chmod(p: &Path, mode: u32) -> R<()> {
    let c = cpath(p);
    // SAFETY: valid C string.
    ok(unsafe { libc::chmod(c.as_ptr(), mode) })
}

/// chmod of the name itself (AT_SYMLINK_NOFOLLOW).
fn lchmod(p: &Path, mode: u32) -> R<()> {
    let c = cpath(p);
    // SAFETY: valid C string.
    ok(unsafe { libc::fchmodat(libc::AT_FDCWD, c.as_ptr(), mode, libc::AT_SYMLINK_NOFOLLOW) })
}

/// chown; `u32::MAX` leaves the id as it is.
fn chown(p: &Path, uid: u32, gid: u32) -> R<()> {
    let c = cpath(p);
    // SAFETY: valid C string.
    ok(unsafe { libc::chown(c.as_ptr(), uid, gid) })
}

fn lchown(p: &Path, uid: u32, gid: u32) -> R<()> {
    let c = cpath(p);
    // SAFETY: valid C string.
    ok(unsafe { libc::lchown(c.as_ptr(), uid, gid) })
}

fn truncate(p: &Path, len: i64) -> R<()> {
    let c = cpath(p);
    // SAFETY: valid C string.
    ok(unsafe { libc::truncate(c.as_ptr(), len) })
}

fn ftruncate(f: &File, len: i64) -> R<()> {
    // SAFETY: plain system call on an open descriptor.
    ok(unsafe { libc::ftruncate(f.as_raw_fd(), len) })
}

fn access(p: &Path, mode: i32) -> R<()> {
    let c = cpath(p);
    // SAFETY: valid C string.
    ok(unsafe { libc::access(c.as_ptr(), mode) })
}

fn rename(a: &Path, b: &Path) -> R<()> {
    fs::rename(a, b).code()
}

fn rename2(a: &Path, b: &Path, flags: u32) -> R<()> {
    let (ca, cb) = (cpath(a), cpath(b));
    // SAFETY: valid C strings.
    ok(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            flags,
        )
    })
}

fn link(a: &Path, b: &Path) -> R<()> {
    fs::hard_link(a, b).code()
}

fn symlink(target: impl AsRef<Path>, p: &Path) -> R<()> {
    std::os::unix::fs::symlink(target, p).code()
}

fn readlink(p: &Path) -> R<Vec<u8>> {
    fs::read_link(p)
        .code()
        .map(|t| t.into_os_string().into_vec())
}

fn unlink(p: &Path) -> R<()> {
    fs::remove_file(p).code()
}

fn rmdir(p: &Path) -> R<()> {
    fs::remove_dir(p).code()
}

fn write(p: &Path, data: &[u8]) -> R<()> {
    fs::write(p, data).code()
}

fn read(p: &Path) -> R<Vec<u8>> {
    fs::read(p).code()
}

fn read_fd(f: &File) -> R<Vec<u8>> {
    let mut out = Vec::new();
    let mut f = f;
    f.seek(SeekFrom::Start(0)).code()?;
    f.read_to_end(&mut out).code()?;
    Ok(out)
}

fn pwrite(f: &File, data: &[u8], off: u64) -> R<usize> {
    f.write_at(data, off).code()
}

fn fsync(f: &File) -> R<()> {
    // SAFETY: plain system call on an open descriptor.
    ok(unsafe { libc::fsync(f.as_raw_fd()) })
}

fn fdatasync(f: &File) -> R<()> {
    // SAFETY: plain system call on an open descriptor.
    ok(unsafe { libc::fdatasync(f.as_raw_fd()) })
}

/// close(2) with its result (the FUSE flush).
fn close(f: File) -> R<()> {
    let fd = f.into_raw_fd();
    // SAFETY: we own `fd` and close it once.
    ok(unsafe { libc::close(fd) })
}

fn lseek(f: &File, off: i64, whence: i32) -> R<i64> {
    // SAFETY: plain system call on an open descriptor.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off, whence) };
    if r < 0 { Err(errno()) } else { Ok(r) }
}

fn fallocate(f: &File, mode: i32, off: i64, len: i64) -> R<()> {
    // SAFETY: plain system call on an open descriptor.
    ok(unsafe { libc::fallocate(f.as_raw_fd(), mode, off, len) })
}

fn copy_range(
    i: &File,
    off_in: Option<i64>,
    o: &File,
    off_out: Option<i64>,
    len: usize,
) -> R<usize> {
    let (mut a, mut b) = (off_in.unwrap_or(0), off_out.unwrap_or(0));
    let pa: *mut i64 = if off_in.is_some() {
        &mut a
    } else {
        std::ptr::null_mut()
    };
    let pb: *mut i64 = if off_out.is_some() {
        &mut b
    } else {
        std::ptr::null_mut()
    };
    // SAFETY: the offsets point to locals or are null; descriptors are open.
    ok_n(unsafe { libc::copy_file_range(i.as_raw_fd(), pa, o.as_raw_fd(), pb, len, 0) })
}

#[derive(Clone, Copy)]
enum Set {
    At(Time),
    Now,
    Omit,
}

fn timespec(s: Set) -> libc::timespec {
    // SAFETY: timespec is plain data; all zero is valid.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    match s {
        Set::At((sec, nsec)) => {
            t.tv_sec = sec as libc::time_t;
            t.tv_nsec = nsec as libc::c_long;
        }
        Set::Now => t.tv_nsec = libc::UTIME_NOW,
        Set::Omit => t.tv_nsec = libc::UTIME_OMIT,
    }
    t
}

/// utimensat(2) on the name itself (AT_SYMLINK_NOFOLLOW).
fn utimens(p: &Path, atime: Set, mtime: Set) -> R<()> {
    let c = cpath(p);
    let ts = [timespec(atime), timespec(mtime)];
    // SAFETY: valid C string and two timespecs.
    ok(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// utimensat(2) with no times: both now.
fn touch(p: &Path) -> R<()> {
    let c = cpath(p);
    // SAFETY: valid C string; a null times pointer means "now".
    ok(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) })
}

fn drop_caches() {
    fs::write("/proc/sys/vm/drop_caches", "3").expect("drop caches");
}

// ---------------------------------------------------------------------------------------
// Attributes.

/// What stat(2) must agree on between asdfs and tmpfs. The size of directories is left out
/// (tmpfs counts 20 bytes per entry; POSIX leaves it open).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct St {
    mode: u32,
    nlink: u64,
    uid: u32,
    gid: u32,
    size: Option<u64>,
    rdev: u64,
}

fn st_of(m: &fs::Metadata) -> St {
    St {
        mode: m.mode(),
        nlink: m.nlink(),
        uid: m.uid(),
        gid: m.gid(),
        size: (!m.is_dir()).then_some(m.size()),
        rdev: m.rdev(),
    }
}

fn meta(p: &Path) -> R<fs::Metadata> {
    fs::symlink_metadata(p).code()
}

/// lstat(2).
fn st(p: &Path) -> R<St> {
    meta(p).map(|m| st_of(&m))
}

/// stat(2), following symlinks.
fn stat_follow(p: &Path) -> R<St> {
    fs::metadata(p).code().map(|m| st_of(&m))
}

fn fst(f: &File) -> R<St> {
    f.metadata().code().map(|m| st_of(&m))
}

fn atime(p: &Path) -> R<Time> {
    meta(p).map(|m| (m.atime(), m.atime_nsec()))
}

fn mtime(p: &Path) -> R<Time> {
    meta(p).map(|m| (m.mtime(), m.mtime_nsec()))
}

fn ctime(p: &Path) -> R<Time> {
    meta(p).map(|m| (m.ctime(), m.ctime_nsec()))
}

fn times(p: &Path) -> R<(Time, Time)> {
    Ok((atime(p)?, mtime(p)?))
}

fn ino(p: &Path) -> R<u64> {
    meta(p).map(|m| m.ino())
}

fn blocks(p: &Path) -> R<u64> {
    meta(p).map(|m| m.blocks())
}

fn fblocks(f: &File) -> R<u64> {
    f.metadata().code().map(|m| m.blocks())
}

// ---------------------------------------------------------------------------------------
// Extended attributes and ACLs.

fn setx(p: &Path, name: &str, value: &[u8], flags: i32) -> R<()> {
    let (c, n) = (cpath(p), cname(name));
    // SAFETY: valid C strings and a value buffer of the given length.
    ok(unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
}

/// lgetxattr(2) with a buffer of `size` bytes (0: only the size is asked).
fn getx_sized(p: &Path, name: &str, size: usize) -> R<(usize, Vec<u8>)> {
    let (c, n) = (cpath(p), cname(name));
    let mut buf = vec![0u8; size];
    // SAFETY: valid C strings and a buffer of `size` bytes.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), size) };
    let len = ok_n(r)?;
    buf.truncate(len.min(size));
    Ok((len, buf))
}

fn getx(p: &Path, name: &str) -> R<Vec<u8>> {
    let (len, _) = getx_sized(p, name, 0)?;
    getx_sized(p, name, len).map(|(_, v)| v)
}

fn listx_sized(p: &Path, size: usize) -> R<(usize, Vec<u8>)> {
    let c = cpath(p);
    let mut buf = vec![0u8; size];
    // SAFETY: valid C string and a buffer of `size` bytes.
    let r = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), size) };
    let len = ok_n(r)?;
    buf.truncate(len.min(size));
    Ok((len, buf))
}

/// The xattr names of a node, sorted.
fn listx(p: &Path) -> R<Vec<String>> {
    let (len, _) = listx_sized(p, 0)?;
    let (_, buf) = listx_sized(p, len)?;
    let mut names: Vec<String> = buf
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    Ok(names)
}

fn rmx(p: &Path, name: &str) -> R<()> {
    let (c, n) = (cpath(p), cname(name));
    // SAFETY: valid C strings.
    ok(unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) })
}

/// Every xattr of a node with its value.
fn xattrs(p: &Path) -> R<Vec<(String, Vec<u8>)>> {
    listx(p)?
        .into_iter()
        .map(|n| getx(p, &n).map(|v| (n, v)))
        .collect()
}

const ACL_ACCESS: &str = "system.posix_acl_access";
const ACL_DEFAULT: &str = "system.posix_acl_default";
const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_OTHER: u16 = 0x20;
const ACL_UNDEFINED: u32 = u32::MAX;

/// The xattr form of an ACL: (tag, perm, id) entries.
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut out = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

/// getfacl's text (numeric ids, no header), or its exit status.
fn getfacl(p: &Path) -> R<String> {
    let out = Command::new("getfacl")
        .args(["-c", "-n", "-p"])
        .arg(p)
        .output()
        .expect("running getfacl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(out.status.code().unwrap_or(-1))
    }
}

/// setfacl with arguments; the exit status on failure.
fn setfacl(p: &Path, args: &[&str]) -> R<()> {
    let out = Command::new("setfacl")
        .args(args)
        .arg(p)
        .output()
        .expect("running setfacl");
    if out.status.success() {
        Ok(())
    } else {
        Err(out.status.code().unwrap_or(-1))
    }
}

// ---------------------------------------------------------------------------------------
// Directory listings.

type Dirent = (u64, u8, OsString);

/// One getdents64(2) call with a buffer of `size` bytes.
fn getdents(f: &File, size: usize) -> R<Vec<Dirent>> {
    let mut buf = vec![0u8; size];
    // SAFETY: a buffer of `size` bytes for the kernel to fill.
    let n = unsafe {
        libc::syscall(
            libc::SYS_getdents64,
            f.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(errno());
    }
    let mut out = Vec::new();
    let mut off = 0usize;
    while off < n as usize {
        let ino = u64::from_ne_bytes(buf[off..off + 8].try_into().expect("8 bytes"));
        let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
        let dtype = buf[off + 18];
        let name = &buf[off + 19..off + reclen];
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        out.push((ino, dtype, OsString::from_vec(name[..end].to_vec())));
        off += reclen;
    }
    Ok(out)
}

/// Every entry of an open directory from its current position.
fn getdents_all(f: &File) -> R<Vec<Dirent>> {
    let mut all = Vec::new();
    loop {
        let chunk = getdents(f, 32 * 1024)?;
        if chunk.is_empty() {
            return Ok(all);
        }
        all.extend(chunk);
    }
}

fn open_dir(p: &Path) -> R<File> {
    open(p, libc::O_RDONLY | libc::O_DIRECTORY, 0)
}

/// Names and d_types of a directory, `.` and `..` included, sorted.
fn list(p: &Path) -> R<Vec<(OsString, u8)>> {
    let f = open_dir(p)?;
    let mut v: Vec<(OsString, u8)> = getdents_all(&f)?
        .into_iter()
        .map(|(_, t, n)| (n, t))
        .collect();
    v.sort();
    Ok(v)
}

// ---------------------------------------------------------------------------------------
// Running as another user.

/// Runs `f` in a child process with the credentials of `who`; returns what it returned.
fn as_user_data(who: Cred, f: impl FnOnce() -> R<Vec<u8>>) -> R<Vec<u8>> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let groups: Vec<libc::gid_t> = who.groups.to_vec();
    // SAFETY: the child only changes its credentials, runs `f`, writes to the pipe and
    // leaves with _exit, running no destructors of the parent's state.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: plain system calls in the child.
        let out = if unsafe {
            libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setgid(who.gid) != 0
                || libc::setuid(who.uid) != 0
        } {
            Err(-10_000 - errno())
        } else {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(Err(-20_000))
        };
        let (code, data) = match out {
            Ok(d) => (0i32, d),
            Err(e) => (e, Vec::new()),
        };
        let mut msg = code.to_ne_bytes().to_vec();
        msg.extend_from_slice(&(data.len() as u32).to_ne_bytes());
        msg.extend_from_slice(&data);
        // SAFETY: the write end belongs to this child.
        let mut w = unsafe { File::from_raw_fd(fds[1]) };
        let _ = w.write_all(&msg);
        // SAFETY: leaving the child without running the parent's destructors.
        unsafe { libc::_exit(0) }
    }
    // SAFETY: the write end is the child's; the read end is ours.
    unsafe { libc::close(fds[1]) };
    // SAFETY: we own the read end.
    let mut rd = unsafe { File::from_raw_fd(fds[0]) };
    let mut head = [0u8; 8];
    let got = rd.read_exact(&mut head);
    let mut data = vec![0u8; u32::from_ne_bytes(head[4..8].try_into().unwrap()) as usize];
    let got_data = rd.read_exact(&mut data);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    got.and(got_data)
        .expect("the child process reported nothing");
    match i32::from_ne_bytes(head[..4].try_into().unwrap()) {
        0 => Ok(data),
        e => Err(e),
    }
}

fn as_user(who: Cred, f: impl FnOnce() -> R<()>) -> R<()> {
    as_user_data(who, || f().map(|()| Vec::new())).map(drop)
}

// ---------------------------------------------------------------------------------------
// Comparing the mount with tmpfs.

/// A mount and a tmpfs reference directory, both 0755 root:root and reachable by other
/// users, and the differences found so far.
struct Pair {
    m: Mount,
    rd: tempfile::TempDir,
    diffs: RefCell<Vec<String>>,
}

impl Pair {
    fn new() -> Pair {
        Pair::with(Mount::new())
    }

    fn with(m: Mount) -> Pair {
        fs::set_permissions(m.disk.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let rd = tempfile::Builder::new()
            .prefix("asdfs-posix-ref-")
            .tempdir_in("/dev/shm")
            .expect("reference directory on tmpfs");
        fs::set_permissions(rd.path(), fs::Permissions::from_mode(0o755)).unwrap();
        Pair {
            m,
            rd,
            diffs: RefCell::new(Vec::new()),
        }
    }

    fn r(&self) -> &Path {
        self.rd.path()
    }

    fn note(&self, msg: String) {
        eprintln!("DIFF {msg}");
        self.diffs.borrow_mut().push(msg);
    }

    /// Runs `op` on tmpfs and on the mount; notes a difference.
    #[track_caller]
    fn both<T: PartialEq + Debug>(&self, what: &str, op: impl Fn(&Path) -> T) {
        self.answer(what, op);
    }

    /// Prepares both trees with `op`, which must succeed on tmpfs.
    #[track_caller]
    fn setup<T: PartialEq + Debug>(&self, what: &str, op: impl Fn(&Path) -> R<T>) {
        if let Err(e) = self.answer(what, op) {
            panic!("{what}: the test's setup fails on tmpfs with errno {e}");
        }
    }

    /// Like `both`; returns tmpfs's answer.
    #[track_caller]
    fn answer<T: PartialEq + Debug>(&self, what: &str, op: impl Fn(&Path) -> T) -> T {
        let line = std::panic::Location::caller().line();
        let want = op(self.r());
        let got = op(&self.m.target);
        if got != want {
            self.note(format!(
                "line {line}: {what}:\n      tmpfs: {want:?}\n      asdfs: {got:?}"
            ));
        }
        want
    }

    /// Whether `observe` answers differently after `op` than before (after a pause, so that
    /// a new timestamp differs), on tmpfs; notes a difference if the mount does otherwise.
    #[track_caller]
    fn changes<T: PartialEq + Debug, U: PartialEq + Debug>(
        &self,
        what: &str,
        observe: impl Fn(&Path) -> T,
        op: impl Fn(&Path) -> U,
    ) -> bool {
        let line = std::panic::Location::caller().line();
        let (r, t) = (self.r(), self.m.target.as_path());
        let before = (observe(r), observe(t));
        std::thread::sleep(Duration::from_millis(25));
        let res = (op(r), op(t));
        if res.0 != res.1 {
            self.note(format!(
                "line {line}: {what} (the operation):\n      tmpfs: {:?}\n      asdfs: {:?}",
                res.0, res.1
            ));
        }
        let after = (observe(r), observe(t));
        let on_tmpfs = before.0 != after.0;
        let on_asdfs = before.1 != after.1;
        if on_tmpfs != on_asdfs {
            self.note(format!(
                "line {line}: {what}:\n      tmpfs: {:?} -> {:?} (changed: {on_tmpfs})\n      asdfs: {:?} -> {:?} (changed: {on_asdfs})",
                before.0, after.0, before.1, after.1
            ));
        }
        on_tmpfs
    }

    /// Fails the test with every difference noted.
    fn finish(self) {
        let diffs = self.diffs.take();
        assert!(
            diffs.is_empty(),
            "{} difference(s) between asdfs and tmpfs:\n  {}",
            diffs.len(),
            diffs.join("\n  ")
        );
    }
}

fn j(d: &Path, rel: &str) -> PathBuf {
    d.join(rel)
}

// ---------------------------------------------------------------------------------------
// lookup, getattr, setattr

#[test]
fn lookup_finds_names_and_reports_errors() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    let long = "l".repeat(255);
    let too_long = "t".repeat(256);
    let odd = OsStr::from_bytes(b"odd \xff\x01\n name");
    p.setup("make a file and a directory", |d| -> R<()> {
        write(&j(d, "f"), b"1")?;
        mkdir(&j(d, "dir"), 0o755)?;
        write(&j(d, "dir/inner"), b"2")
    });
    p.both("stat a missing name", |d| st(&j(d, "missing")));
    p.both("stat beneath a file", |d| st(&j(d, "f/x")));
    p.both("open beneath a file", |d| {
        open(&j(d, "f/x"), libc::O_RDONLY, 0).map(drop)
    });
    p.both("a file with a trailing slash", |d| st(&j(d, "f/")));
    p.both("names are case sensitive", |d| st(&j(d, "F")));
    p.both("a name of 255 bytes", |d| -> R<_> {
        write(&d.join(&long), b"long")?;
        Ok((read(&d.join(&long))?, st(&d.join(&long))?))
    });
    p.both("a name of 256 bytes: create", |d| {
        write(&d.join(&too_long), b"")
    });
    p.both("a name of 256 bytes: stat", |d| st(&d.join(&too_long)));
    p.both("odd bytes in a name", |d| -> R<_> {
        write(&d.join(odd), b"odd")?;
        read(&d.join(odd))
    });
    p.both("dot and dot-dot", |d| -> R<_> {
        Ok((
            ino(&j(d, "dir/."))? == ino(&j(d, "dir"))?,
            ino(&j(d, "dir/.."))? == ino(d)?,
            ino(&j(d, "dir/../dir/inner"))? == ino(&j(d, "dir/inner"))?,
        ))
    });
    p.both("a missing name, then created", |d| -> R<_> {
        let before = st(&j(d, "later"));
        write(&j(d, "later"), b"x")?;
        Ok((before, st(&j(d, "later"))?))
    });
    p.both("a name removed, then looked up", |d| -> R<_> {
        unlink(&j(d, "later"))?;
        Ok(st(&j(d, "later")))
    });
    p.both("a file replaced by a directory", |d| -> R<_> {
        write(&j(d, "swap"), b"file")?;
        let before = st(&j(d, "swap"))?;
        unlink(&j(d, "swap"))?;
        mkdir(&j(d, "swap"), 0o700)?;
        Ok((before, st(&j(d, "swap"))?))
    });
    p.both("the listing", list);
    p.finish();
}

#[test]
fn getattr_of_every_kind_of_node() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    p.setup("make one node of each kind", |d| -> R<()> {
        write(&j(d, "file"), b"hello")?;
        mkdir(&j(d, "dir"), 0o750)?;
        symlink("file", &j(d, "link"))?;
        mknod(&j(d, "fifo"), libc::S_IFIFO | 0o640, 0)?;
        mknod(&j(d, "sock"), libc::S_IFSOCK | 0o600, 0)?;
        mknod(&j(d, "chr"), libc::S_IFCHR | 0o620, libc::makedev(1, 3))?;
        mknod(&j(d, "blk"), libc::S_IFBLK | 0o600, libc::makedev(7, 0))
    });
    for name in ["file", "dir", "link", "fifo", "sock", "chr", "blk"] {
        p.both(&format!("lstat {name}"), |d| st(&j(d, name)));
    }
    p.both("stat through the symlink", |d| stat_follow(&j(d, "link")));
    p.both("the parent's link count", |d| st(d).map(|s| s.nlink));
    p.both("fstat equals lstat", |d| -> R<_> {
        let f = open(&j(d, "file"), libc::O_RDONLY, 0)?;
        Ok(fst(&f)? == st(&j(d, "file"))?)
    });
    p.both("blocks of a small file", |d| blocks(&j(d, "file")));
    p.both(
        "times of a new file: atime <= mtime == ctime",
        |d| -> R<_> {
            let m = meta(&j(d, "file"))?;
            let (a, mt, c) = (
                (m.atime(), m.atime_nsec()),
                (m.mtime(), m.mtime_nsec()),
                (m.ctime(), m.ctime_nsec()),
            );
            Ok((a <= mt, mt == c))
        },
    );
    p.both("times of a new directory are all equal", |d| -> R<_> {
        let m = meta(&j(d, "dir"))?;
        Ok((m.atime(), m.atime_nsec()) == (m.mtime(), m.mtime_nsec())
            && (m.mtime(), m.mtime_nsec()) == (m.ctime(), m.ctime_nsec()))
    });
    p.both("an empty file has no blocks", |d| -> R<_> {
        write(&j(d, "empty"), b"")?;
        blocks(&j(d, "empty"))
    });
    p.finish();
}

#[test]
fn chmod_and_chown() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    p.setup("make", |d| -> R<()> {
        write(&j(d, "f"), b"data")?;
        mkdir(&j(d, "dir"), 0o755)?;
        symlink("f", &j(d, "l"))
    });
    for mode in [0o4751, 0o2755, 0o1777, 0o0, 0o7777, 0o644] {
        p.both(&format!("chmod {mode:o}"), |d| -> R<_> {
            chmod(&j(d, "f"), mode)?;
            st(&j(d, "f"))
        });
    }
    p.both("chmod a directory to 3775", |d| -> R<_> {
        chmod(&j(d, "dir"), 0o3775)?;
        st(&j(d, "dir"))
    });
    p.both("chmod through a symlink changes its target", |d| -> R<_> {
        chmod(&j(d, "l"), 0o600)?;
        Ok((st(&j(d, "l"))?, st(&j(d, "f"))?))
    });
    p.both("chmod of a symlink itself", |d| lchmod(&j(d, "l"), 0o600));
    p.both("chmod of a missing name", |d| {
        chmod(&j(d, "missing"), 0o600)
    });
    p.both("chown", |d| -> R<_> {
        chown(&j(d, "f"), 1000, STAFF)?;
        st(&j(d, "f"))
    });
    p.both("chown of the group only", |d| -> R<_> {
        chown(&j(d, "f"), u32::MAX, 4321)?;
        st(&j(d, "f"))
    });
    p.both("chown of the owner only", |d| -> R<_> {
        chown(&j(d, "f"), 1001, u32::MAX)?;
        st(&j(d, "f"))
    });
    p.both("lchown of a symlink leaves its target", |d| -> R<_> {
        lchown(&j(d, "l"), 1002, 1003)?;
        Ok((st(&j(d, "l"))?, st(&j(d, "f"))?))
    });
    p.both("chown clears setuid and setgid", |d| -> R<_> {
        chmod(&j(d, "f"), 0o6755)?;
        chown(&j(d, "f"), 1004, 1004)?;
        st(&j(d, "f"))
    });
    p.both("chown keeps setgid without group execute", |d| -> R<_> {
        chmod(&j(d, "f"), 0o2745)?;
        chown(&j(d, "f"), 1005, 1005)?;
        st(&j(d, "f"))
    });
    p.both("chown of a directory keeps setgid", |d| -> R<_> {
        chmod(&j(d, "dir"), 0o2755)?;
        chown(&j(d, "dir"), 1000, 1000)?;
        st(&j(d, "dir"))
    });
    assert!(p.changes(
        "ctime after chmod",
        |d| ctime(&j(d, "f")),
        |d| chmod(&j(d, "f"), 0o600)
    ));
    assert!(!p.changes(
        "mtime after chmod",
        |d| mtime(&j(d, "f")),
        |d| chmod(&j(d, "f"), 0o640)
    ));
    assert!(p.changes(
        "ctime after chown",
        |d| ctime(&j(d, "f")),
        |d| chown(&j(d, "f"), 0, 0)
    ));
    assert!(p.changes(
        "ctime after chmod of a directory",
        |d| ctime(&j(d, "dir")),
        |d| chmod(&j(d, "dir"), 0o700)
    ));
    p.finish();
}

#[test]
fn truncate_and_ftruncate() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    let f = |d: &Path| d.join("f");
    p.setup("make", |d| -> R<()> {
        write(&f(d), b"0123456789")?;
        mkdir(&j(d, "dir"), 0o755)
    });
    p.both("truncate shorter", |d| -> R<_> {
        truncate(&f(d), 4)?;
        Ok((st(&f(d))?, read(&f(d))?))
    });
    p.both("truncate longer fills with zeros", |d| -> R<_> {
        truncate(&f(d), 10_000)?;
        Ok((st(&f(d))?, read(&f(d))?))
    });
    p.both("ftruncate", |d| -> R<_> {
        let file = open(&f(d), libc::O_RDWR, 0)?;
        ftruncate(&file, 3)?;
        pwrite(&file, b"!", 5)?;
        Ok((fst(&file)?, read(&f(d))?))
    });
    p.both("truncate to zero", |d| -> R<_> {
        truncate(&f(d), 0)?;
        Ok((st(&f(d))?, read(&f(d))?, blocks(&f(d))?))
    });
    p.both("truncate frees blocks", |d| -> R<_> {
        write(&f(d), &[7u8; 16384])?;
        truncate(&f(d), 4096)?;
        Ok((blocks(&f(d))?, read(&f(d))?.len()))
    });
    p.both("truncate a directory", |d| truncate(&j(d, "dir"), 0));
    p.both("truncate to a negative length", |d| truncate(&f(d), -1));
    p.both("ftruncate of a read-only descriptor", |d| -> R<_> {
        let file = open(&f(d), libc::O_RDONLY, 0)?;
        ftruncate(&file, 0)
    });
    p.both("truncate a missing name", |d| truncate(&j(d, "missing"), 0));
    p.both("truncate a 0444 file as root", |d| -> R<_> {
        write(&j(d, "ro"), b"read only")?;
        chmod(&j(d, "ro"), 0o444)?;
        truncate(&j(d, "ro"), 4)?;
        read(&j(d, "ro"))
    });
    assert!(p.changes(
        "mtime after truncate(2) to another size",
        |d| mtime(&f(d)),
        |d| truncate(&f(d), 5)
    ));
    assert!(p.changes(
        "ctime after truncate(2) to another size",
        |d| ctime(&f(d)),
        |d| truncate(&f(d), 6)
    ));
    p.both("truncate(2) to the same size", |d| -> R<_> {
        utimens(&f(d), Set::Omit, Set::At(T1))?;
        truncate(&f(d), 6)?;
        Ok(mtime(&f(d))? != T1)
    });
    p.both("ftruncate to the same size", |d| -> R<_> {
        utimens(&f(d), Set::Omit, Set::At(T1))?;
        let file = open(&f(d), libc::O_WRONLY, 0)?;
        ftruncate(&file, 6)?;
        Ok(mtime(&f(d))? != T1)
    });
    p.finish();
}

#[test]
fn utimens_with_now_omit_and_nanoseconds() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    let f = |d: &Path| d.join("f");
    p.setup("make", |d| -> R<()> {
        write(&f(d), b"x")?;
        mkdir(&j(d, "dir"), 0o755)?;
        symlink("f", &j(d, "l"))
    });
    p.both("explicit times with nanoseconds", |d| -> R<_> {
        utimens(&f(d), Set::At(T1), Set::At(T2))?;
        times(&f(d))
    });
    p.both("UTIME_OMIT for atime", |d| -> R<_> {
        utimens(&f(d), Set::Omit, Set::At(T3))?;
        times(&f(d))
    });
    p.both("UTIME_OMIT for mtime", |d| -> R<_> {
        utimens(&f(d), Set::At(T4), Set::Omit)?;
        times(&f(d))
    });
    p.both("UTIME_OMIT for both", |d| -> R<_> {
        utimens(&f(d), Set::Omit, Set::Omit)?;
        times(&f(d))
    });
    p.both("UTIME_NOW for atime only", |d| -> R<_> {
        utimens(&f(d), Set::Now, Set::Omit)?;
        let (a, m) = times(&f(d))?;
        Ok((a > T4, m))
    });
    p.both("UTIME_NOW for mtime only", |d| -> R<_> {
        utimens(&f(d), Set::At(T1), Set::Now)?;
        let (a, m) = times(&f(d))?;
        Ok((a, m > T4))
    });
    p.both("UTIME_NOW for both gives one time", |d| -> R<_> {
        utimens(&f(d), Set::Now, Set::Now)?;
        let (a, m) = times(&f(d))?;
        Ok((a == m, a > T4))
    });
    p.both("utimensat with no times", |d| -> R<_> {
        utimens(&f(d), Set::At(T1), Set::At(T1))?;
        touch(&f(d))?;
        let (a, m) = times(&f(d))?;
        Ok((a == m, a > T4))
    });
    p.both("times of a directory", |d| -> R<_> {
        utimens(&j(d, "dir"), Set::At(T2), Set::At(T1))?;
        times(&j(d, "dir"))
    });
    p.both("times of a symlink itself", |d| -> R<_> {
        utimens(&f(d), Set::At(T4), Set::At(T4))?;
        utimens(&j(d, "l"), Set::At(T1), Set::At(T3))?;
        Ok((times(&j(d, "l"))?, times(&f(d))?))
    });
    p.both("times before 1970", |d| -> R<_> {
        utimens(
            &f(d),
            Set::At((-1, 5)),
            Set::At((-1_000_000_000, 999_999_999)),
        )?;
        times(&f(d))
    });
    p.both("times after 2038", |d| -> R<_> {
        utimens(
            &f(d),
            Set::At((4_102_444_800, 7)),
            Set::At((8_589_934_592, 123)),
        )?;
        times(&f(d))
    });
    p.both("nanoseconds out of range", |d| {
        utimens(&f(d), Set::At((0, 1_000_000_000)), Set::Omit)
    });
    assert!(p.changes(
        "ctime after utimensat",
        |d| ctime(&f(d)),
        |d| utimens(&f(d), Set::At(T2), Set::At(T2))
    ));
    assert!(!p.changes(
        "ctime after utimensat omitting both",
        |d| ctime(&f(d)),
        |d| utimens(&f(d), Set::Omit, Set::Omit)
    ));
    p.finish();
}

// ---------------------------------------------------------------------------------------
// Files: create, open, read, write, flush, release, fsync; open flags

#[test]
fn create_open_read_write_fsync_close() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    let f = |d: &Path| d.join("f");
    p.both("create with O_CREAT and a mode", |d| -> R<_> {
        let file = open(&f(d), libc::O_CREAT | libc::O_WRONLY | libc::O_EXCL, 0o640)?;
        fst(&file)
    });
    p.both("write, then read through another descriptor", |d| -> R<_> {
        let w = open(&f(d), libc::O_WRONLY, 0)?;
        let n = pwrite(&w, b"hello", 0)?;
        let r = open(&f(d), libc::O_RDONLY, 0)?;
        Ok((n, read_fd(&r)?, fst(&r)?.size))
    });
    p.both("a write past the end leaves zeros", |d| -> R<_> {
        let w = open(&f(d), libc::O_WRONLY, 0)?;
        pwrite(&w, b"x", 10)?;
        read(&f(d))
    });
    p.both("reads at and past the end", |d| -> R<_> {
        let r = open(&f(d), libc::O_RDONLY, 0)?;
        let mut b = [0u8; 8];
        Ok((
            r.read_at(&mut b, 10).code()?,
            r.read_at(&mut b, 11).code()?,
            r.read_at(&mut b, 1000).code()?,
        ))
    });
    p.both("reads and writes at the file position", |d| -> R<_> {
        let mut file = open(&j(d, "seq"), libc::O_CREAT | libc::O_RDWR, 0o600)?;
        file.write_all(b"abc").code()?;
        file.write_all(b"def").code()?;
        file.seek(SeekFrom::Start(2)).code()?;
        let mut s = String::new();
        file.read_to_string(&mut s).code()?;
        Ok(s)
    });
    p.both("a large write over several requests", |d| -> R<_> {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        write(&j(d, "big"), &data)?;
        Ok((read(&j(d, "big"))? == data, st(&j(d, "big"))?))
    });
    p.both("fsync, fdatasync and close", |d| -> R<_> {
        let file = open(&f(d), libc::O_RDWR, 0)?;
        pwrite(&file, b"H", 0)?;
        fsync(&file)?;
        fdatasync(&file)?;
        close(file)?;
        read(&f(d))
    });
    p.both("fsync of a directory", |d| fsync(&open_dir(d)?));
    p.both("read from a write-only descriptor", |d| -> R<_> {
        let file = open(&f(d), libc::O_WRONLY, 0)?;
        let mut b = [0u8; 4];
        (&file).read(&mut b).code()
    });
    p.both("write to a read-only descriptor", |d| -> R<_> {
        let file = open(&f(d), libc::O_RDONLY, 0)?;
        (&file).write(b"no").code()
    });
    p.both("open a directory for writing", |d| {
        open(&j(d, "."), libc::O_WRONLY, 0).map(drop)
    });
    p.both("O_DIRECTORY on a file", |d| open_dir(&f(d)).map(drop));
    p.both("O_CREAT on an existing file keeps its mode", |d| -> R<_> {
        open(&f(d), libc::O_CREAT | libc::O_WRONLY, 0o777)?;
        st(&f(d))
    });
    p.both("create in a missing directory", |d| {
        open(&j(d, "missing/f"), libc::O_CREAT | libc::O_WRONLY, 0o644).map(drop)
    });
    p.both("contents after the last close", |d| read(&f(d)));
    assert!(p.changes(
        "mtime after a write",
        |d| mtime(&f(d)),
        |d| pwrite(&open(&f(d), libc::O_WRONLY, 0)?, b"q", 2)
    ));
    assert!(p.changes(
        "ctime after a write",
        |d| ctime(&f(d)),
        |d| pwrite(&open(&f(d), libc::O_WRONLY, 0)?, b"r", 2)
    ));
    assert!(!p.changes("mtime after a read", |d| mtime(&f(d)), |d| read(&f(d))));
    assert!(
        p.changes("directory mtime after a create", mtime, |d| write(
            &j(d, "new"),
            b""
        ))
    );
    assert!(
        p.changes("directory ctime after a create", ctime, |d| write(
            &j(d, "new2"),
            b""
        ))
    );
    p.finish();
}

#[test]
fn o_append_o_trunc_and_o_excl() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    let f = |d: &Path| d.join("f");
    p.setup("make", |d| write(&f(d), b"start"));
    p.both(
        "two O_APPEND descriptors write at the end in turn",
        |d| -> R<_> {
            let a = open(&f(d), libc::O_WRONLY | libc::O_APPEND, 0)?;
            let b = open(&f(d), libc::O_WRONLY | libc::O_APPEND, 0)?;
            (&a).write_all(b"-a1").code()?;
            (&b).write_all(b"-b1").code()?;
            (&a).write_all(b"-a2").code()?;
            read(&f(d))
        },
    );
    p.both("pwrite on an O_APPEND descriptor appends", |d| -> R<_> {
        let a = open(&f(d), libc::O_WRONLY | libc::O_APPEND, 0)?;
        pwrite(&a, b"-p", 0)?;
        read(&f(d))
    });
    p.both(
        "O_APPEND after another descriptor grew the file",
        |d| -> R<_> {
            let a = open(&f(d), libc::O_WRONLY | libc::O_APPEND, 0)?;
            let w = open(&f(d), libc::O_WRONLY, 0)?;
            pwrite(&w, b"XYZ", 100)?;
            (&a).write_all(b"end").code()?;
            Ok((st(&f(d))?, read(&f(d))?, lseek(&a, 0, libc::SEEK_CUR)?))
        },
    );
    p.both("O_TRUNC empties the file", |d| -> R<_> {
        let t = open(&f(d), libc::O_WRONLY | libc::O_TRUNC, 0)?;
        Ok((fst(&t)?, read(&f(d))?))
    });
    p.both("O_TRUNC, then a write", |d| -> R<_> {
        write(&j(d, "g"), b"long old content")?;
        let t = open(&j(d, "g"), libc::O_WRONLY | libc::O_TRUNC, 0)?;
        (&t).write_all(b"new").code()?;
        drop(t);
        Ok((st(&j(d, "g"))?, read(&j(d, "g"))?))
    });
    assert!(p.changes(
        "mtime after O_TRUNC",
        |d| mtime(&j(d, "g")),
        |d| open(&j(d, "g"), libc::O_WRONLY | libc::O_TRUNC, 0).map(drop)
    ));
    p.changes(
        "mtime after O_TRUNC of an empty file",
        |d| mtime(&j(d, "g")),
        |d| open(&j(d, "g"), libc::O_WRONLY | libc::O_TRUNC, 0).map(drop),
    );
    p.both("O_RDONLY|O_TRUNC truncates too", |d| -> R<_> {
        write(&j(d, "h"), b"content")?;
        drop(open(&j(d, "h"), libc::O_RDONLY | libc::O_TRUNC, 0)?);
        Ok((st(&j(d, "h"))?, read(&j(d, "h"))?))
    });
    p.both(
        "O_RDONLY|O_TRUNC, after the kernel forgot the file",
        |d| -> R<_> {
            drop_caches();
            Ok((st(&j(d, "h"))?, read(&j(d, "h"))?))
        },
    );
    p.both("O_TRUNC without write permission", |d| -> R<_> {
        write(&j(d, "rootfile"), b"root")?;
        let r = as_user(NOBODY, || {
            open(&j(d, "rootfile"), libc::O_RDONLY | libc::O_TRUNC, 0).map(drop)
        });
        Ok((r, read(&j(d, "rootfile"))?))
    });
    p.both("O_CREAT|O_EXCL on an existing file", |d| {
        open(&f(d), libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY, 0o644).map(drop)
    });
    p.both("O_CREAT|O_EXCL on a dangling symlink", |d| -> R<_> {
        symlink("nowhere", &j(d, "dl"))?;
        let r = open(
            &j(d, "dl"),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
            0o644,
        )
        .map(drop);
        Ok((r, st(&j(d, "nowhere"))))
    });
    p.both("O_CREAT follows a dangling symlink", |d| -> R<_> {
        open(&j(d, "dl"), libc::O_CREAT | libc::O_WRONLY, 0o600)?;
        st(&j(d, "nowhere"))
    });
    p.both("O_CREAT|O_EXCL on a new name", |d| -> R<_> {
        open(
            &j(d, "n"),
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
            0o600,
        )?;
        st(&j(d, "n"))
    });
    p.both("O_EXCL without O_CREAT", |d| {
        open(&f(d), libc::O_EXCL | libc::O_RDONLY, 0).map(drop)
    });
    p.both("O_CREAT|O_EXCL on a directory", |d| -> R<_> {
        mkdir(&j(d, "dir"), 0o755)?;
        open(
            &j(d, "dir"),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
            0o644,
        )
        .map(drop)
    });
    p.both("O_CREAT on a directory", |d| {
        open(&j(d, "dir"), libc::O_CREAT | libc::O_WRONLY, 0o644).map(drop)
    });
    p.finish();
}

// ---------------------------------------------------------------------------------------
// Names: mkdir, rmdir, unlink, rename, link, symlink, mknod

#[test]
fn mkdir_and_rmdir() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    p.both("mkdir 0777 under the umask", |d| -> R<_> {
        mkdir(&j(d, "a"), 0o777)?;
        Ok((st(&j(d, "a"))?, st(d)?.nlink))
    });
    p.both("mkdir keeps the sticky bit only", |d| -> R<_> {
        mkdir(&j(d, "s"), 0o7777)?;
        st(&j(d, "s"))
    });
    p.both("mkdir over a directory", |d| mkdir(&j(d, "a"), 0o755));
    p.both("mkdir over a file", |d| -> R<_> {
        write(&j(d, "f"), b"")?;
        mkdir(&j(d, "f"), 0o755)
    });
    p.both("mkdir in a missing directory", |d| {
        mkdir(&j(d, "no/x"), 0o755)
    });
    p.both("mkdir beneath a file", |d| mkdir(&j(d, "f/x"), 0o755));
    p.both("nested directories", |d| -> R<_> {
        mkdir(&j(d, "a/b"), 0o755)?;
        mkdir(&j(d, "a/b/c"), 0o700)?;
        Ok((st(&j(d, "a"))?, st(&j(d, "a/b"))?, st(&j(d, "a/b/c"))?))
    });
    p.both("rmdir of a non-empty directory", |d| rmdir(&j(d, "a")));
    p.both("rmdir of a file", |d| rmdir(&j(d, "f")));
    p.both("rmdir of dot", |d| rmdir(&j(d, "a/b/c/.")));
    p.both("rmdir of a missing name", |d| rmdir(&j(d, "missing")));
    p.both("rmdir from the bottom", |d| -> R<_> {
        rmdir(&j(d, "a/b/c"))?;
        let mid = st(&j(d, "a/b"))?;
        rmdir(&j(d, "a/b"))?;
        Ok((mid, st(&j(d, "a"))?, st(&j(d, "a/b"))))
    });
    p.both("rmdir and the parent's link count", |d| -> R<_> {
        rmdir(&j(d, "a"))?;
        Ok((st(d)?.nlink, st(&j(d, "a"))))
    });
    p.both("a directory with 100 subdirectories", |d| -> R<_> {
        mkdir(&j(d, "many"), 0o755)?;
        for i in 0..100 {
            mkdir(&j(d, &format!("many/{i}")), 0o755)?;
        }
        st(&j(d, "many"))
    });
    assert!(p.changes("parent mtime after mkdir", mtime, |d| mkdir(
        &j(d, "x"),
        0o755
    )));
    assert!(p.changes("parent mtime after rmdir", mtime, |d| rmdir(&j(d, "x"))));
    assert!(p.changes(
        "parent ctime after rmdir",
        |d| ctime(&j(d, "many")),
        |d| rmdir(&j(d, "many/7"))
    ));
    p.finish();
}

#[test]
fn unlink_of_files_links_and_special_files() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    p.setup("make", |d| -> R<()> {
        write(&j(d, "f"), b"data")?;
        link(&j(d, "f"), &j(d, "g"))?;
        symlink("g", &j(d, "l"))?;
        mknod(&j(d, "fifo"), libc::S_IFIFO | 0o600, 0)?;
        mkdir(&j(d, "dir"), 0o755)?;
        write(&j(d, "dir/inner"), b"in")
    });
    p.both("unlink one of two names", |d| -> R<_> {
        unlink(&j(d, "f"))?;
        Ok((st(&j(d, "f")), st(&j(d, "g"))?, read(&j(d, "g"))?))
    });
    p.both("unlink a symlink leaves its target", |d| -> R<_> {
        unlink(&j(d, "l"))?;
        Ok((st(&j(d, "l")), st(&j(d, "g"))?))
    });
    p.both("unlink a fifo", |d| -> R<_> {
        unlink(&j(d, "fifo"))?;
        Ok(st(&j(d, "fifo")))
    });
    p.both("unlink a directory", |d| unlink(&j(d, "dir")));
    p.both("unlink a missing name", |d| unlink(&j(d, "missing")));
    p.both("unlink beneath a file", |d| unlink(&j(d, "g/x")));
    p.both("unlink in a subdirectory", |d| -> R<_> {
        unlink(&j(d, "dir/inner"))?;
        Ok((list(&j(d, "dir"))?, rmdir(&j(d, "dir"))))
    });
    p.both("the listing after", list);
    p.setup("make a pair of links", |d| -> R<()> {
        write(&j(d, "h"), b"h")?;
        link(&j(d, "h"), &j(d, "h2"))
    });
    assert!(p.changes(
        "ctime of the remaining name after unlink",
        |d| ctime(&j(d, "h2")),
        |d| unlink(&j(d, "h"))
    ));
    assert!(
        p.changes("directory mtime after unlink", mtime, |d| unlink(&j(
            d, "h2"
        )))
    );
    p.finish();
}

#[test]
fn rename_over_files_and_empty_directories_and_across_directories() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    p.setup("make", |d| -> R<()> {
        write(&j(d, "a"), b"A")?;
        write(&j(d, "b"), b"B")?;
        mkdir(&j(d, "d1"), 0o755)?;
        mkdir(&j(d, "d2"), 0o755)?;
        mkdir(&j(d, "e"), 0o755)?;
        mkdir(&j(d, "full"), 0o755)?;
        write(&j(d, "full/x"), b"x")?;
        write(&j(d, "d1/f"), b"F")
    });
    p.both("rename to a new name", |d| -> R<_> {
        rename(&j(d, "a"), &j(d, "a2"))?;
        Ok((st(&j(d, "a")), read(&j(d, "a2"))?))
    });
    p.both("rename over a file", |d| -> R<_> {
        rename(&j(d, "a2"), &j(d, "b"))?;
        Ok((st(&j(d, "a2")), read(&j(d, "b"))?, st(&j(d, "b"))?))
    });
    p.both("rename a directory over an empty directory", |d| -> R<_> {
        rename(&j(d, "d2"), &j(d, "e"))?;
        Ok((st(&j(d, "d2")), st(&j(d, "e"))?, st(d)?.nlink))
    });
    p.both("rename a directory over a non-empty one", |d| {
        rename(&j(d, "e"), &j(d, "full"))
    });
    p.both("rename a file over a directory", |d| {
        rename(&j(d, "b"), &j(d, "e"))
    });
    p.both("rename a directory over a file", |d| {
        rename(&j(d, "e"), &j(d, "b"))
    });
    p.both("rename a directory beneath itself", |d| -> R<_> {
        mkdir(&j(d, "e/sub"), 0o755)?;
        rename(&j(d, "e"), &j(d, "e/sub/x"))
    });
    p.both("rename a missing name", |d| {
        rename(&j(d, "missing"), &j(d, "z"))
    });
    p.both("rename into a missing directory", |d| {
        rename(&j(d, "b"), &j(d, "missing/b"))
    });
    p.both("rename a file across directories", |d| -> R<_> {
        rename(&j(d, "d1/f"), &j(d, "e/f"))?;
        Ok((read(&j(d, "e/f"))?, st(&j(d, "d1/f")), list(&j(d, "e"))?))
    });
    p.both("rename a directory across directories", |d| -> R<_> {
        mkdir(&j(d, "d1/m"), 0o755)?;
        write(&j(d, "d1/m/in"), b"in")?;
        let before = (st(&j(d, "d1"))?.nlink, st(&j(d, "e"))?.nlink);
        rename(&j(d, "d1/m"), &j(d, "e/m"))?;
        Ok((
            before,
            st(&j(d, "d1"))?.nlink,
            st(&j(d, "e"))?.nlink,
            ino(&j(d, "e/m/.."))? == ino(&j(d, "e"))?,
            read(&j(d, "e/m/in"))?,
        ))
    });
    p.both("rename onto itself", |d| -> R<_> {
        rename(&j(d, "b"), &j(d, "b"))?;
        read(&j(d, "b"))
    });
    p.both("rename a hard link onto its other name", |d| -> R<_> {
        link(&j(d, "b"), &j(d, "b2"))?;
        rename(&j(d, "b"), &j(d, "b2"))?;
        Ok((st(&j(d, "b"))?, st(&j(d, "b2"))?))
    });
    p.both("an open descriptor follows the rename", |d| -> R<_> {
        let file = open(&j(d, "b2"), libc::O_RDONLY, 0)?;
        rename(&j(d, "b2"), &j(d, "b3"))?;
        read_fd(&file)
    });
    p.setup("make linked files", |d| -> R<()> {
        mkdir(&j(d, "keep"), 0o755)?;
        write(&j(d, "x"), b"x")?;
        link(&j(d, "x"), &j(d, "keep/x"))?;
        write(&j(d, "v"), b"v")?;
        link(&j(d, "v"), &j(d, "keep/v"))?;
        write(&j(d, "w"), b"w")
    });
    assert!(p.changes(
        "ctime of a renamed file",
        |d| ctime(&j(d, "keep/x")),
        |d| rename(&j(d, "x"), &j(d, "y"))
    ));
    assert!(p.changes(
        "ctime of a renamed directory",
        |d| ctime(&j(d, "e/m/in/..")),
        |d| rename(&j(d, "e/m"), &j(d, "e/m2"))
    ));
    assert!(p.changes(
        "ctime of a file replaced by a rename",
        |d| ctime(&j(d, "keep/v")),
        |d| rename(&j(d, "w"), &j(d, "v"))
    ));
    assert!(p.changes(
        "mtime of the source directory",
        |d| mtime(&j(d, "e")),
        |d| rename(&j(d, "e/f"), &j(d, "d1/f"))
    ));
    assert!(p.changes(
        "mtime of the target directory",
        |d| mtime(&j(d, "e")),
        |d| rename(&j(d, "d1/f"), &j(d, "e/f"))
    ));
    p.both("the listings after", |d| -> R<_> {
        Ok((
            list(d)?,
            list(&j(d, "e"))?,
            list(&j(d, "d1"))?,
            list(&j(d, "keep"))?,
        ))
    });
    p.finish();
}

#[test]
fn rename_noreplace_and_exchange() {
    if !fuse_available() {
        return;
    }
    let noreplace = libc::RENAME_NOREPLACE;
    let exchange = libc::RENAME_EXCHANGE;
    let p = Pair::new();
    p.setup("make", |d| -> R<()> {
        write(&j(d, "a"), b"A")?;
        write(&j(d, "b"), b"B")?;
        mkdir(&j(d, "d1"), 0o755)?;
        write(&j(d, "d1/c"), b"C")?;
        mkdir(&j(d, "dir"), 0o755)?;
        mkdir(&j(d, "dir/sub"), 0o755)
    });
    p.both("NOREPLACE onto an existing name", |d| {
        rename2(&j(d, "a"), &j(d, "b"), noreplace)
    });
    p.both("NOREPLACE onto a new name", |d| -> R<_> {
        rename2(&j(d, "a"), &j(d, "a2"), noreplace)?;
        Ok((st(&j(d, "a")), read(&j(d, "a2"))?))
    });
    p.both("EXCHANGE two files", |d| -> R<_> {
        rename2(&j(d, "a2"), &j(d, "b"), exchange)?;
        Ok((read(&j(d, "a2"))?, read(&j(d, "b"))?))
    });
    p.both("EXCHANGE a file and a directory", |d| -> R<_> {
        rename2(&j(d, "b"), &j(d, "dir"), exchange)?;
        Ok((
            st(&j(d, "b"))?,
            st(&j(d, "dir"))?,
            st(&j(d, "b/sub"))?,
            st(d)?.nlink,
        ))
    });
    p.both(
        "EXCHANGE a file and a directory across directories",
        |d| -> R<_> {
            let before = (st(d)?.nlink, st(&j(d, "d1"))?.nlink);
            rename2(&j(d, "d1/c"), &j(d, "b"), exchange)?;
            Ok((
                before,
                st(d)?.nlink,
                st(&j(d, "d1"))?.nlink,
                st(&j(d, "d1/c"))?,
                read(&j(d, "b"))?,
                ino(&j(d, "d1/c/.."))? == ino(&j(d, "d1"))?,
            ))
        },
    );
    p.both("EXCHANGE with a missing name", |d| {
        rename2(&j(d, "a2"), &j(d, "missing"), exchange)
    });
    p.both("NOREPLACE and EXCHANGE together", |d| {
        rename2(&j(d, "a2"), &j(d, "b"), noreplace | exchange)
    });
    p.both("an unknown flag", |d| {
        rename2(&j(d, "a2"), &j(d, "zz"), 1 << 10)
    });
    p.both("EXCHANGE a directory with its descendant", |d| {
        rename2(&j(d, "d1"), &j(d, "d1/c/sub"), exchange)
    });
    p.both("EXCHANGE a name with itself", |d| {
        rename2(&j(d, "a2"), &j(d, "a2"), exchange)
    });
    p.setup("make linked files", |d| -> R<()> {
        mkdir(&j(d, "keep"), 0o755)?;
        write(&j(d, "p"), b"P")?;
        link(&j(d, "p"), &j(d, "keep/p"))?;
        write(&j(d, "q"), b"Q")?;
        link(&j(d, "q"), &j(d, "keep/q"))
    });
    assert!(p.changes(
        "ctime of the first file after EXCHANGE",
        |d| ctime(&j(d, "keep/p")),
        |d| rename2(&j(d, "p"), &j(d, "q"), exchange)
    ));
    assert!(p.changes(
        "ctime of the second file after EXCHANGE",
        |d| ctime(&j(d, "keep/p")),
        |d| rename2(&j(d, "p"), &j(d, "q"), exchange)
    ));
    p.both("the listings after", |d| -> R<_> {
        Ok((list(d)?, list(&j(d, "d1"))?, read(&j(d, "p"))?))
    });
    p.finish();
}

#[test]
fn hard_links_share_data_and_count_right() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    p.setup("make", |d| -> R<()> {
        write(&j(d, "a"), b"one")?;
        mkdir(&j(d, "sub"), 0o755)
    });
    p.both("link", |d| -> R<_> {
        link(&j(d, "a"), &j(d, "b"))?;
        Ok((
            st(&j(d, "a"))?,
            st(&j(d, "b"))?,
            ino(&j(d, "a"))? == ino(&j(d, "b"))?,
        ))
    });
    p.both("link into another directory", |d| -> R<_> {
        link(&j(d, "a"), &j(d, "sub/c"))?;
        Ok((st(&j(d, "a"))?, st(&j(d, "sub/c"))?))
    });
    p.both(
        "a write through one name shows through the others",
        |d| -> R<_> {
            let file = open(&j(d, "b"), libc::O_WRONLY | libc::O_APPEND, 0)?;
            (&file).write_all(b" two").code()?;
            Ok((read(&j(d, "a"))?, read(&j(d, "sub/c"))?, st(&j(d, "a"))?))
        },
    );
    p.both(
        "an open descriptor sees writes through another name",
        |d| -> R<_> {
            let r = open(&j(d, "a"), libc::O_RDONLY, 0)?;
            let w = open(&j(d, "sub/c"), libc::O_WRONLY, 0)?;
            pwrite(&w, b"ONE", 0)?;
            read_fd(&r)
        },
    );
    p.both("chmod through one name", |d| -> R<_> {
        chmod(&j(d, "sub/c"), 0o600)?;
        st(&j(d, "a"))
    });
    p.both("truncate through one name", |d| -> R<_> {
        truncate(&j(d, "a"), 2)?;
        Ok((read(&j(d, "b"))?, st(&j(d, "sub/c"))?))
    });
    p.both("link to a directory", |d| link(&j(d, "sub"), &j(d, "sub2")));
    p.both("link onto an existing name", |d| {
        link(&j(d, "a"), &j(d, "b"))
    });
    p.both("link a missing name", |d| {
        link(&j(d, "missing"), &j(d, "m2"))
    });
    p.both("link a symlink itself", |d| -> R<_> {
        symlink("a", &j(d, "s"))?;
        link(&j(d, "s"), &j(d, "s2"))?;
        Ok((st(&j(d, "s2"))?, readlink(&j(d, "s2"))?))
    });
    p.both("link a fifo", |d| -> R<_> {
        mknod(&j(d, "p"), libc::S_IFIFO | 0o600, 0)?;
        link(&j(d, "p"), &j(d, "p2"))?;
        st(&j(d, "p2"))
    });
    p.both("unlink the names one by one", |d| -> R<_> {
        unlink(&j(d, "a"))?;
        let two = st(&j(d, "b"))?;
        unlink(&j(d, "b"))?;
        Ok((two, st(&j(d, "sub/c"))?, read(&j(d, "sub/c"))?))
    });
    p.both("link an open file whose last name is gone", |d| -> R<_> {
        let file = open(&j(d, "sub/c"), libc::O_RDONLY, 0)?;
        unlink(&j(d, "sub/c"))?;
        let (e, n) = (CString::new("").unwrap(), cpath(&j(d, "again")));
        // SAFETY: valid C strings and an open descriptor.
        let r = ok(unsafe {
            libc::linkat(
                file.as_raw_fd(),
                e.as_ptr(),
                libc::AT_FDCWD,
                n.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        });
        Ok((r, fst(&file)?))
    });
    p.setup("make", |d| write(&j(d, "x"), b"x"));
    assert!(p.changes(
        "ctime after link",
        |d| ctime(&j(d, "x")),
        |d| link(&j(d, "x"), &j(d, "x2"))
    ));
    assert!(p.changes(
        "directory mtime after link",
        |d| mtime(&j(d, "sub")),
        |d| link(&j(d, "x"), &j(d, "sub/x3"))
    ));
    p.finish();
}

#[test]
fn hard_links_from_disk_keep_every_name() {
    if !fuse_available() {
        return;
    }
    let m = Mount::with(|t| {
        fs::write(t.join("a"), b"one").unwrap();
        fs::create_dir(t.join("x")).unwrap();
        fs::hard_link(t.join("a"), t.join("x/b")).unwrap();
        fs::write(t.join("c"), b"three names").unwrap();
        fs::create_dir(t.join("y")).unwrap();
        fs::hard_link(t.join("c"), t.join("y/d")).unwrap();
        fs::hard_link(t.join("c"), t.join("y/e")).unwrap();
    });
    let p = |n: &str| m.path(n);
    let mut diffs = Vec::new();
    let mut check = |what: &str, got: String, want: String| {
        if got != want {
            diffs.push(format!("{what}: {got} (want {want})"));
        }
    };
    check(
        "link counts before the other names are met",
        format!(
            "{:?}",
            (st(&p("a")).map(|s| s.nlink), st(&p("c")).map(|s| s.nlink))
        ),
        "(Ok(2), Ok(3))".into(),
    );
    let a = open(&p("a"), libc::O_WRONLY | libc::O_APPEND, 0).unwrap();
    (&a).write_all(b"+").unwrap();
    drop(a);
    check(
        "a write through one name, read through the other",
        format!(
            "{:?}",
            read(&p("x/b")).map(|v| String::from_utf8_lossy(&v).into_owned())
        ),
        "Ok(\"one+\")".into(),
    );
    check(
        "one inode number",
        format!("{}", ino(&p("a")) == ino(&p("x/b"))),
        "true".into(),
    );
    // The other names are not met before the flush.
    unlink(&p("c")).unwrap();
    m.flush();
    check(
        "the other names after unlinking one and a flush",
        format!(
            "{:?}",
            (
                list(&p("y")).map(|l| l.len()),
                st(&p("y/d")).map(|s| s.nlink)
            )
        ),
        "(Ok(4), Ok(2))".into(),
    );
    m.unmount();
    check(
        "on disk after unmount",
        format!(
            "{:?}",
            (
                read(&p("x/b")),
                ino(&p("a")) == ino(&p("x/b")),
                st(&p("y/d")).map(|s| s.nlink),
                ino(&p("y/d")) == ino(&p("y/e")),
                st(&p("c")),
            )
        ),
        format!(
            "{:?}",
            (
                Ok::<_, i32>(b"one+".to_vec()),
                true,
                Ok::<_, i32>(2),
                true,
                Err::<St, _>(libc::ENOENT)
            )
        ),
    );
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn symlinks_and_readlink() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    p.setup("make and read a symlink", |d| -> R<_> {
        symlink("target/path", &j(d, "l"))?;
        Ok((readlink(&j(d, "l"))?, st(&j(d, "l"))?))
    });
    p.both("a dangling symlink", |d| stat_follow(&j(d, "l")));
    p.both("followed once its target exists", |d| -> R<_> {
        write(&j(d, "t"), b"T")?;
        symlink("t", &j(d, "l2"))?;
        Ok((stat_follow(&j(d, "l2"))?, read(&j(d, "l2"))?))
    });
    p.both("through a symlink to a directory", |d| -> R<_> {
        mkdir(&j(d, "dir"), 0o755)?;
        write(&j(d, "dir/f"), b"F")?;
        symlink("dir", &j(d, "dl"))?;
        Ok((read(&j(d, "dl/f"))?, list(&j(d, "dl/"))?))
    });
    p.both("an absolute target", |d| -> R<_> {
        symlink("/absolute/target", &j(d, "abs"))?;
        readlink(&j(d, "abs"))
    });
    p.both("a target of 4095 bytes", |d| -> R<_> {
        symlink("x".repeat(4095), &j(d, "long"))?;
        Ok((
            readlink(&j(d, "long"))? == "x".repeat(4095).into_bytes(),
            st(&j(d, "long"))?,
        ))
    });
    p.both("a target of 4096 bytes", |d| {
        symlink("y".repeat(4096), &j(d, "toolong"))
    });
    p.both("odd bytes in the target", |d| -> R<_> {
        symlink(OsStr::from_bytes(b"\xff\x01odd"), &j(d, "odd"))?;
        readlink(&j(d, "odd"))
    });
    p.both("an empty target", |d| symlink("", &j(d, "empty")));
    p.both("over an existing name", |d| symlink("t", &j(d, "t")));
    p.both("readlink of a file", |d| readlink(&j(d, "t")));
    p.both("readlink of a missing name", |d| readlink(&j(d, "missing")));
    p.both("a loop", |d| -> R<_> {
        symlink("loop2", &j(d, "loop1"))?;
        symlink("loop1", &j(d, "loop2"))?;
        read(&j(d, "loop1"))
    });
    p.both("O_NOFOLLOW on a symlink", |d| {
        open(&j(d, "l2"), libc::O_RDONLY | libc::O_NOFOLLOW, 0).map(drop)
    });
    p.both("a symlink made by another user", |d| -> R<_> {
        mkdir(&j(d, "pub"), 0o755)?;
        chmod(&j(d, "pub"), 0o777)?;
        as_user(NOBODY, || symlink("x", &j(d, "pub/ns")))?;
        st(&j(d, "pub/ns"))
    });
    p.both("the listing", list);
    p.finish();
}

#[test]
fn mknod_fifos_sockets_and_devices() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    p.both("a fifo", |d| -> R<_> {
        mknod(&j(d, "p"), libc::S_IFIFO | 0o640, 0)?;
        st(&j(d, "p"))
    });
    p.both("a socket by mknod", |d| -> R<_> {
        mknod(&j(d, "s"), libc::S_IFSOCK | 0o600, 0)?;
        st(&j(d, "s"))
    });
    p.both("a socket by bind, and a connection to it", |d| -> R<_> {
        let l = std::os::unix::net::UnixListener::bind(j(d, "bound")).code()?;
        let c = std::os::unix::net::UnixStream::connect(j(d, "bound")).code()?;
        let (mut s, _) = l.accept().code()?;
        (&c).write_all(b"hi").code()?;
        let mut b = [0u8; 2];
        s.read_exact(&mut b).code()?;
        Ok((st(&j(d, "bound"))?, b))
    });
    p.both("a character device", |d| -> R<_> {
        mknod(&j(d, "c"), libc::S_IFCHR | 0o620, libc::makedev(1, 3))?;
        st(&j(d, "c"))
    });
    p.both("a block device with a large minor", |d| -> R<_> {
        mknod(
            &j(d, "b"),
            libc::S_IFBLK | 0o600,
            libc::makedev(259, 70_000),
        )?;
        st(&j(d, "b"))
    });
    p.both("a regular file by mknod", |d| -> R<_> {
        mknod(&j(d, "f"), libc::S_IFREG | 0o644, 0)?;
        Ok((st(&j(d, "f"))?, read(&j(d, "f"))?))
    });
    p.both("mknod with no type makes a regular file", |d| -> R<_> {
        mknod(&j(d, "f0"), 0o600, 0)?;
        st(&j(d, "f0"))
    });
    p.both("mknod of a directory type", |d| {
        mknod(&j(d, "x"), libc::S_IFDIR | 0o755, 0)
    });
    p.both("mknod over an existing name", |d| {
        mknod(&j(d, "p"), libc::S_IFIFO | 0o600, 0)
    });
    p.both("data through the fifo", |d| -> R<_> {
        let f = open(&j(d, "p"), libc::O_RDWR | libc::O_NONBLOCK, 0)?;
        (&f).write_all(b"through").code()?;
        let mut b = [0u8; 7];
        (&f).read_exact(&mut b).code()?;
        Ok(b)
    });
    p.setup("make a public directory", |d| -> R<()> {
        mkdir(&j(d, "pub"), 0o755)?;
        chmod(&j(d, "pub"), 0o777)
    });
    p.both("a device as another user", |d| {
        as_user(NOBODY, || {
            mknod(&j(d, "pub/dev"), libc::S_IFCHR | 0o600, libc::makedev(1, 3))
        })
    });
    p.both("a fifo as another user", |d| -> R<_> {
        as_user(NOBODY, || {
            mknod(&j(d, "pub/fifo"), libc::S_IFIFO | 0o666, 0)
        })?;
        st(&j(d, "pub/fifo"))
    });
    p.both("the listing with types", list);
    p.finish();
}

// ---------------------------------------------------------------------------------------
// readdir

#[test]
fn readdir_lists_names_types_and_attributes() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    let names = ["file", "dir", "link", "fifo", "sock", "chr"];
    p.setup("make one of each kind", |d| -> R<()> {
        write(&j(d, "file"), b"x")?;
        mkdir(&j(d, "dir"), 0o755)?;
        symlink("file", &j(d, "link"))?;
        mknod(&j(d, "fifo"), libc::S_IFIFO | 0o600, 0)?;
        mknod(&j(d, "sock"), libc::S_IFSOCK | 0o600, 0)?;
        mknod(&j(d, "chr"), libc::S_IFCHR | 0o600, libc::makedev(1, 3))
    });
    p.both("names and types", list);
    p.both("d_ino is st_ino", |d| -> R<_> {
        // `..` of the top directory is left out: the mount's root is a file system's root,
        // the tmpfs directory is not.
        let f = open_dir(d)?;
        let mut bad = Vec::new();
        for (i, _, name) in getdents_all(&f)? {
            if name != ".." && i != ino(&d.join(&name))? {
                bad.push(name);
            }
        }
        let f = open_dir(&j(d, "dir"))?;
        for (i, _, name) in getdents_all(&f)? {
            if i != ino(&j(d, "dir").join(&name))? {
                bad.push(name);
            }
        }
        Ok(bad)
    });
    p.both("attributes of every entry after a listing", |d| -> R<_> {
        list(d)?;
        names.iter().map(|n| st(&j(d, n))).collect::<R<Vec<_>>>()
    });
    p.both("attributes after a change behind a listing", |d| -> R<_> {
        list(d)?;
        chmod(&j(d, "file"), 0o600)?;
        write(&j(d, "file"), b"longer")?;
        list(d)?;
        st(&j(d, "file"))
    });
    p.both("an empty directory lists . and ..", |d| list(&j(d, "dir")));
    p.both("readdir of a file", |d| -> R<_> {
        let f = open(&j(d, "file"), libc::O_RDONLY, 0)?;
        getdents(&f, 4096)
    });
    p.both("seek back to a remembered position", |d| -> R<_> {
        mkdir(&j(d, "many"), 0o755)?;
        for i in 0..50 {
            write(&j(d, &format!("many/entry-{i:03}")), b"")?;
        }
        let f = open_dir(&j(d, "many"))?;
        let first = getdents(&f, 300)?;
        let pos = lseek(&f, 0, libc::SEEK_CUR)?;
        let a = getdents(&f, 300)?;
        lseek(&f, pos, libc::SEEK_SET)?;
        let b = getdents(&f, 300)?;
        lseek(&f, 0, libc::SEEK_SET)?;
        let all = getdents_all(&f)?;
        Ok((!first.is_empty(), !a.is_empty(), a == b, all.len()))
    });
    p.both("the listing after changes", |d| -> R<_> {
        unlink(&j(d, "file"))?;
        write(&j(d, "new"), b"")?;
        rename(&j(d, "fifo"), &j(d, "fifo2"))?;
        list(d)
    });
    p.finish();
}

#[test]
fn readdir_stays_correct_while_the_directory_changes() {
    if !fuse_available() {
        return;
    }
    let original: BTreeSet<OsString> = (0..500)
        .map(|i| OsString::from(format!("entry-{i:04}")))
        .collect();
    // One directory made through the mount, one that comes from disk.
    let fill = |dir: &Path| {
        fs::create_dir(dir).unwrap();
        for n in &original {
            fs::write(dir.join(n), b"").unwrap();
        }
    };
    let p = Pair::with(Mount::with(|t| fill(&t.join("from-disk"))));
    fill(&p.r().join("from-disk"));
    p.setup("make", |d| -> R<()> {
        mkdir(&j(d, "new"), 0o755)?;
        for n in &original {
            write(&j(d, "new").join(n), b"")?;
        }
        Ok(())
    });
    let added: BTreeSet<OsString> = (0..200)
        .map(|i| OsString::from(format!("added-{i:04}")))
        .collect();
    let removed: BTreeSet<OsString> = original.iter().step_by(3).cloned().collect();
    for dir in ["new", "from-disk"] {
        let problems = p.answer(
            &format!("listing {dir} while entries come and go"),
            |d| -> R<_> {
                let f = open_dir(&j(d, dir))?;
                let mut seen = Vec::new();
                while seen.len() < 150 {
                    let chunk = getdents(&f, 1024)?;
                    assert!(!chunk.is_empty(), "listing ended early");
                    seen.extend(chunk.into_iter().map(|(_, _, n)| n));
                }
                for n in &added {
                    write(&j(d, dir).join(n), b"")?;
                }
                for n in &removed {
                    unlink(&j(d, dir).join(n))?;
                }
                seen.extend(getdents_all(&f)?.into_iter().map(|(_, _, n)| n));
                let mut count: BTreeMap<OsString, usize> = BTreeMap::new();
                for n in seen {
                    *count.entry(n).or_default() += 1;
                }
                let dups: Vec<_> = count.iter().filter(|(_, c)| **c > 1).collect();
                let missing: Vec<_> = original
                    .difference(&removed)
                    .filter(|n| !count.contains_key(*n))
                    .collect();
                let unknown: Vec<_> = count
                    .keys()
                    .filter(|n| {
                        !original.contains(*n) && !added.contains(*n) && *n != "." && *n != ".."
                    })
                    .collect();
                let dots = (count.get(OsStr::new(".")), count.get(OsStr::new("..")));
                Ok(format!(
                    "duplicates {dups:?}, missing {missing:?}, unknown {unknown:?}, dots {dots:?}"
                ))
            },
        );
        assert_eq!(
            problems,
            Ok("duplicates [], missing [], unknown [], dots (Some(1), Some(1))".to_string()),
            "tmpfs itself"
        );
        p.both(&format!("the final listing of {dir}"), |d| list(&j(d, dir)));
    }
    p.finish();
}

// ---------------------------------------------------------------------------------------
// statfs

#[test]
fn statfs_answers_sensibly() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    let statvfs = |path: &Path| -> R<libc::statvfs> {
        let c = cpath(path);
        // SAFETY: statvfs is plain data; the kernel fills it.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid C string and output buffer.
        ok(unsafe { libc::statvfs(c.as_ptr(), &mut s) })?;
        Ok(s)
    };
    let s = statvfs(&p.m.target).expect("statvfs of the mount");
    assert!(s.f_bsize > 0, "f_bsize {}", s.f_bsize);
    assert!(s.f_frsize > 0, "f_frsize {}", s.f_frsize);
    assert!(s.f_blocks > 0, "f_blocks {}", s.f_blocks);
    assert!(s.f_bfree <= s.f_blocks, "f_bfree {} > f_blocks", s.f_bfree);
    assert!(s.f_bavail <= s.f_bfree, "f_bavail {} > f_bfree", s.f_bavail);
    assert!(s.f_ffree <= s.f_files, "f_ffree {} > f_files", s.f_ffree);
    assert_eq!(s.f_namemax, 255);
    p.both("the longest name", |d| statvfs(d).map(|s| s.f_namemax));
    p.both("statfs of a file and of a subdirectory", |d| -> R<_> {
        write(&j(d, "f"), b"x")?;
        mkdir(&j(d, "sub"), 0o755)?;
        Ok((
            statvfs(&j(d, "f"))?.f_namemax,
            statvfs(&j(d, "sub"))?.f_namemax,
        ))
    });
    p.both("fstatfs agrees with statfs", |d| -> R<_> {
        let f = open(&j(d, "f"), libc::O_RDONLY, 0)?;
        // SAFETY: statfs is plain data; the kernel fills it.
        let mut a: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: open descriptor and output buffer.
        ok(unsafe { libc::fstatfs(f.as_raw_fd(), &mut a) })?;
        let s = statvfs(d)?;
        Ok((
            a.f_bsize as u64 == s.f_bsize,
            a.f_namelen as u64 == s.f_namemax,
        ))
    });
    p.finish();
}

// ---------------------------------------------------------------------------------------
// xattrs and ACLs

#[test]
fn xattrs_in_user_security_and_trusted_namespaces() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    let f = |d: &Path| d.join("f");
    p.setup("make", |d| -> R<()> {
        write(&f(d), b"x")?;
        mkdir(&j(d, "dir"), 0o755)?;
        symlink("f", &j(d, "l"))?;
        mknod(&j(d, "fifo"), libc::S_IFIFO | 0o644, 0)
    });
    p.both("a new file has no xattrs", |d| listx(&f(d)));
    p.both("set and get user.*", |d| -> R<_> {
        setx(&f(d), "user.a", b"1", 0)?;
        getx(&f(d), "user.a")
    });
    p.both("an empty value", |d| -> R<_> {
        setx(&f(d), "user.empty", b"", 0)?;
        getx(&f(d), "user.empty")
    });
    p.both("a binary value", |d| -> R<_> {
        setx(&f(d), "user.bin", &[0, 1, 255, 0], 0)?;
        getx(&f(d), "user.bin")
    });
    p.both("XATTR_CREATE on an existing name", |d| {
        setx(&f(d), "user.a", b"2", libc::XATTR_CREATE)
    });
    p.both("XATTR_REPLACE on a missing name", |d| {
        setx(&f(d), "user.none", b"2", libc::XATTR_REPLACE)
    });
    p.both("XATTR_REPLACE on an existing name", |d| -> R<_> {
        setx(&f(d), "user.a", b"22", libc::XATTR_REPLACE)?;
        getx(&f(d), "user.a")
    });
    p.both("get a missing name", |d| getx(&f(d), "user.none"));
    p.both("remove a missing name", |d| rmx(&f(d), "user.none"));
    p.both("the size, and a buffer too small", |d| -> R<_> {
        Ok((
            getx_sized(&f(d), "user.a", 0)?.0,
            getx_sized(&f(d), "user.bin", 2),
        ))
    });
    p.both("a value of 65536 bytes", |d| -> R<_> {
        setx(&f(d), "user.big", &vec![7u8; 65536], 0)?;
        Ok(getx(&f(d), "user.big")? == vec![7u8; 65536])
    });
    p.both("a value of 65537 bytes", |d| {
        setx(&f(d), "user.big2", &vec![7u8; 65537], 0)
    });
    p.both("a name of 255 bytes", |d| -> R<_> {
        let n = format!("user.{}", "n".repeat(250));
        setx(&f(d), &n, b"x", 0)?;
        Ok((getx(&f(d), &n)?, rmx(&f(d), &n)))
    });
    p.both("a name of 256 bytes", |d| {
        setx(&f(d), &format!("user.{}", "n".repeat(251)), b"x", 0)
    });
    p.both("security.*", |d| -> R<_> {
        setx(&f(d), "security.test", b"s", 0)?;
        getx(&f(d), "security.test")
    });
    p.both("trusted.* as root", |d| -> R<_> {
        setx(&f(d), "trusted.t", b"t", 0)?;
        getx(&f(d), "trusted.t")
    });
    p.both("the list", |d| listx(&f(d)));
    p.both("the list's size, and a buffer too small", |d| -> R<_> {
        Ok((listx_sized(&f(d), 0)?.0, listx_sized(&f(d), 3)))
    });
    p.both("remove", |d| -> R<_> {
        rmx(&f(d), "user.empty")?;
        Ok((getx(&f(d), "user.empty"), listx(&f(d))?))
    });
    p.both("user.* on a directory", |d| -> R<_> {
        setx(&j(d, "dir"), "user.d", b"dir", 0)?;
        Ok((getx(&j(d, "dir"), "user.d")?, listx(&j(d, "dir"))?))
    });
    p.both("user.* on a symlink", |d| {
        setx(&j(d, "l"), "user.s", b"s", 0)
    });
    p.both("user.* on a fifo", |d| {
        setx(&j(d, "fifo"), "user.p", b"p", 0)
    });
    p.both("get user.* of a fifo", |d| getx(&j(d, "fifo"), "user.p"));
    p.both("trusted.* on a symlink", |d| -> R<_> {
        setx(&j(d, "l"), "trusted.s", b"s", 0)?;
        Ok((
            getx(&j(d, "l"), "trusted.s")?,
            listx(&j(d, "l"))?,
            listx(&f(d))?,
        ))
    });
    assert!(p.changes(
        "ctime after setxattr",
        |d| ctime(&f(d)),
        |d| setx(&f(d), "user.c", b"c", 0)
    ));
    assert!(!p.changes(
        "mtime after setxattr",
        |d| mtime(&f(d)),
        |d| setx(&f(d), "user.c2", b"c", 0)
    ));
    assert!(p.changes(
        "ctime after removexattr",
        |d| ctime(&f(d)),
        |d| rmx(&f(d), "user.c")
    ));
    // Names outside the namespaces Linux knows: tmpfs refuses them, and a disk file
    // system could not take them at write-back either.
    p.both("set a name in an unknown namespace", |d| {
        setx(&f(d), "nonsense.x", b"x", 0)
    });
    p.both("get a name in an unknown namespace", |d| {
        getx(&f(d), "nonsense.x")
    });
    p.both("a prefix with no name", |d| setx(&f(d), "user.", b"x", 0));
    p.both("the list at the end", |d| listx(&f(d)));
    p.finish();
}

#[test]
fn xattr_permissions_for_other_users() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    p.setup("make", |d| -> R<()> {
        write(&j(d, "f"), b"x")?;
        setx(&j(d, "f"), "user.a", b"1", 0)?;
        setx(&j(d, "f"), "trusted.t", b"t", 0)?;
        setx(&j(d, "f"), "security.s", b"s", 0)?;
        write(&j(d, "secret"), b"s")?;
        chmod(&j(d, "secret"), 0o600)?;
        setx(&j(d, "secret"), "user.a", b"1", 0)?;
        mkdir(&j(d, "sticky"), 0o755)?;
        chmod(&j(d, "sticky"), 0o1777)?;
        mkdir(&j(d, "pub"), 0o755)?;
        chmod(&j(d, "pub"), 0o777)
    });
    p.both("read user.* of a readable file", |d| {
        as_user_data(NOBODY, || getx(&j(d, "f"), "user.a"))
    });
    p.both("write user.* without write permission", |d| {
        as_user(NOBODY, || setx(&j(d, "f"), "user.b", b"2", 0))
    });
    p.both("read user.* without read permission", |d| {
        as_user_data(NOBODY, || getx(&j(d, "secret"), "user.a"))
    });
    p.both("read trusted.* as another user", |d| {
        as_user_data(NOBODY, || getx(&j(d, "f"), "trusted.t"))
    });
    p.both("write trusted.* as another user", |d| {
        as_user(NOBODY, || {
            write(&j(d, "pub/mine"), b"")?;
            setx(&j(d, "pub/mine"), "trusted.u", b"u", 0)
        })
    });
    p.both("write security.* as another user", |d| {
        as_user(NOBODY, || setx(&j(d, "pub/mine"), "security.x", b"x", 0))
    });
    p.both("write user.* of one's own file", |d| -> R<_> {
        as_user(NOBODY, || setx(&j(d, "pub/mine"), "user.m", b"m", 0))?;
        getx(&j(d, "pub/mine"), "user.m")
    });
    p.both("the list as another user hides trusted.*", |d| {
        as_user_data(NOBODY, || Ok(listx(&j(d, "f"))?.join(",").into_bytes()))
    });
    p.both("the list as root", |d| listx(&j(d, "f")));
    p.both("user.* of a sticky directory one does not own", |d| {
        as_user(NOBODY, || setx(&j(d, "sticky"), "user.x", b"x", 0))
    });
    p.finish();
}

#[test]
fn posix_acls_inherit_mask_and_grant() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    p.setup("make", |d| mkdir(&j(d, "acl"), 0o755));
    p.both("set a default ACL", |d| -> R<_> {
        setfacl(
            &j(d, "acl"),
            &["-d", "-m", "u::rwx,u:1000:rwx,g::r-x,m::rwx,o::---"],
        )?;
        Ok((getfacl(&j(d, "acl"))?, st(&j(d, "acl"))?))
    });
    p.both("a new file inherits it, masked by its mode", |d| -> R<_> {
        write(&j(d, "acl/f"), b"")?;
        Ok((st(&j(d, "acl/f"))?, getfacl(&j(d, "acl/f"))?))
    });
    p.both("a new file created with 0600", |d| -> R<_> {
        open(&j(d, "acl/f6"), libc::O_CREAT | libc::O_WRONLY, 0o600)?;
        Ok((st(&j(d, "acl/f6"))?, getfacl(&j(d, "acl/f6"))?))
    });
    p.both("a new directory inherits both ACLs", |d| -> R<_> {
        mkdir(&j(d, "acl/sub"), 0o777)?;
        Ok((st(&j(d, "acl/sub"))?, getfacl(&j(d, "acl/sub"))?))
    });
    p.both("and hands them on", |d| -> R<_> {
        write(&j(d, "acl/sub/g"), b"")?;
        Ok((st(&j(d, "acl/sub/g"))?, getfacl(&j(d, "acl/sub/g"))?))
    });
    p.both("a fifo inherits it", |d| -> R<_> {
        mknod(&j(d, "acl/p"), libc::S_IFIFO | 0o640, 0)?;
        Ok((st(&j(d, "acl/p"))?, getfacl(&j(d, "acl/p"))?))
    });
    p.both("a symlink does not", |d| -> R<_> {
        symlink("f", &j(d, "acl/l"))?;
        Ok((st(&j(d, "acl/l"))?, listx(&j(d, "acl/l"))?))
    });
    p.both("the raw access ACL", |d| getx(&j(d, "acl/f"), ACL_ACCESS));
    p.both("chmod updates the mask", |d| -> R<_> {
        chmod(&j(d, "acl/f"), 0o640)?;
        Ok((st(&j(d, "acl/f"))?, getfacl(&j(d, "acl/f"))?))
    });
    p.both("setting an access ACL sets the mode", |d| -> R<_> {
        write(&j(d, "plain"), b"")?;
        setfacl(&j(d, "plain"), &["-m", "u:1000:rw-"])?;
        Ok((st(&j(d, "plain"))?, getfacl(&j(d, "plain"))?))
    });
    p.both("an ACL the mode says in full is not stored", |d| -> R<_> {
        write(&j(d, "plain2"), b"")?;
        let bytes = acl(&[
            (ACL_USER_OBJ, 6, ACL_UNDEFINED),
            (ACL_GROUP_OBJ, 0, ACL_UNDEFINED),
            (ACL_OTHER, 4, ACL_UNDEFINED),
        ]);
        setx(&j(d, "plain2"), ACL_ACCESS, &bytes, 0)?;
        Ok((st(&j(d, "plain2"))?, listx(&j(d, "plain2"))?))
    });
    p.both("removing the ACL", |d| -> R<_> {
        setfacl(&j(d, "plain"), &["-b"])?;
        Ok((
            st(&j(d, "plain"))?,
            getfacl(&j(d, "plain"))?,
            listx(&j(d, "plain"))?,
        ))
    });
    p.both("removing the default ACL", |d| -> R<_> {
        setfacl(&j(d, "acl/sub"), &["-k"])?;
        Ok((getfacl(&j(d, "acl/sub"))?, listx(&j(d, "acl/sub"))?))
    });
    p.both("a default ACL on a file", |d| {
        let bytes = acl(&[
            (ACL_USER_OBJ, 7, ACL_UNDEFINED),
            (ACL_GROUP_OBJ, 5, ACL_UNDEFINED),
            (ACL_OTHER, 5, ACL_UNDEFINED),
        ]);
        setx(&j(d, "plain"), ACL_DEFAULT, &bytes, 0)
    });
    p.both("a malformed ACL", |d| {
        setx(&j(d, "plain"), ACL_ACCESS, &[1, 2, 3], 0)
    });
    p.both("a named user without a mask", |d| {
        let bytes = acl(&[
            (ACL_USER_OBJ, 7, ACL_UNDEFINED),
            (ACL_USER, 7, 1000),
            (ACL_GROUP_OBJ, 5, ACL_UNDEFINED),
            (ACL_OTHER, 5, ACL_UNDEFINED),
        ]);
        setx(&j(d, "plain"), ACL_ACCESS, &bytes, 0)
    });
    p.both("an ACL grants another user read access", |d| -> R<_> {
        write(&j(d, "secret"), b"s")?;
        chmod(&j(d, "secret"), 0o600)?;
        setfacl(&j(d, "secret"), &["-m", "u:65534:r--"])?;
        as_user(NOBODY, || read(&j(d, "secret")).map(drop))
    });
    p.both("but not write access", |d| {
        as_user(NOBODY, || {
            open(&j(d, "secret"), libc::O_WRONLY, 0).map(drop)
        })
    });
    p.both("the mask limits the grant after chmod", |d| -> R<_> {
        chmod(&j(d, "secret"), 0o600)?;
        let r = as_user(NOBODY, || read(&j(d, "secret")).map(drop));
        Ok((r, getfacl(&j(d, "secret"))?))
    });
    p.both("a named group entry", |d| -> R<_> {
        write(&j(d, "grp"), b"g")?;
        chmod(&j(d, "grp"), 0o600)?;
        setfacl(&j(d, "grp"), &["-m", &format!("g:{STAFF}:rw-")])?;
        Ok((
            as_user(NOBODY_IN_STAFF, || write(&j(d, "grp"), b"staff")),
            as_user(NOBODY, || write(&j(d, "grp"), b"nobody")),
            read(&j(d, "grp"))?,
        ))
    });
    p.finish();
}

// ---------------------------------------------------------------------------------------
// fallocate, SEEK_DATA/SEEK_HOLE, copy_file_range

#[test]
fn fallocate_modes() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    let f = |d: &Path| d.join("f");
    let rw = |d: &Path| open(&f(d), libc::O_CREAT | libc::O_RDWR, 0o644);
    p.both("allocate past the end", |d| -> R<_> {
        let file = rw(d)?;
        fallocate(&file, 0, 0, 8192)?;
        Ok((fst(&file)?, fblocks(&file)?, read(&f(d))?.len()))
    });
    p.both("allocate beyond the end, keeping the size", |d| -> R<_> {
        let file = rw(d)?;
        fallocate(&file, libc::FALLOC_FL_KEEP_SIZE, 8192, 8192)?;
        Ok((fst(&file)?, fblocks(&file)?))
    });
    p.both("write, then punch a hole", |d| -> R<_> {
        let file = rw(d)?;
        pwrite(&file, &[1u8; 8192], 0)?;
        fallocate(
            &file,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            4096,
        )?;
        let data = read(&f(d))?;
        Ok((
            fst(&file)?,
            fblocks(&file)?,
            data[..4096] == [0u8; 4096],
            data[4096..] == [1u8; 4096],
        ))
    });
    p.both("punch a hole without KEEP_SIZE", |d| {
        fallocate(&rw(d)?, libc::FALLOC_FL_PUNCH_HOLE, 0, 10)
    });
    p.both("zero a range", |d| {
        fallocate(&rw(d)?, libc::FALLOC_FL_ZERO_RANGE, 0, 10)
    });
    p.both("collapse a range", |d| {
        fallocate(&rw(d)?, libc::FALLOC_FL_COLLAPSE_RANGE, 0, 4096)
    });
    p.both("a length of zero", |d| fallocate(&rw(d)?, 0, 0, 0));
    p.both("a negative offset", |d| fallocate(&rw(d)?, 0, -1, 10));
    p.both("a read-only descriptor", |d| -> R<_> {
        let file = open(&f(d), libc::O_RDONLY, 0)?;
        fallocate(&file, 0, 0, 100)
    });
    p.both("posix_fallocate", |d| -> R<_> {
        let file = rw(d)?;
        // SAFETY: plain library call on an open descriptor.
        let e = unsafe { libc::posix_fallocate(file.as_raw_fd(), 100, 20_000) };
        Ok((e, fst(&file)?, fblocks(&file)?))
    });
    p.both("after close, as stat and read see it", |d| -> R<_> {
        let data = read(&f(d))?;
        Ok((
            st(&f(d))?,
            blocks(&f(d))?,
            data.iter().filter(|b| **b != 0).count(),
        ))
    });
    p.finish();
}

#[test]
fn seek_data_and_seek_hole() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    let mib: i64 = 1 << 20;
    p.setup("make a sparse file", |d| -> R<_> {
        let f = open(&j(d, "s"), libc::O_CREAT | libc::O_RDWR, 0o644)?;
        pwrite(&f, b"a", 0)?;
        pwrite(&f, b"b", mib as u64)?;
        pwrite(&f, b"c", 3 * mib as u64)?;
        Ok((fst(&f)?, fblocks(&f)?))
    });
    let probes = [
        (0, libc::SEEK_DATA),
        (0, libc::SEEK_HOLE),
        (1, libc::SEEK_DATA),
        (4096, libc::SEEK_DATA),
        (mib, libc::SEEK_HOLE),
        (mib + 1, libc::SEEK_DATA),
        (2 * mib, libc::SEEK_DATA),
        (3 * mib, libc::SEEK_HOLE),
        (3 * mib + 1, libc::SEEK_HOLE),
        (3 * mib + 1, libc::SEEK_DATA),
        (1 << 30, libc::SEEK_DATA),
        (1 << 30, libc::SEEK_HOLE),
        (-1, libc::SEEK_DATA),
        (5, libc::SEEK_END),
        (-5, libc::SEEK_END),
    ];
    for (off, whence) in probes {
        p.both(&format!("lseek({off}, whence {whence})"), |d| -> R<_> {
            let f = open(&j(d, "s"), libc::O_RDONLY, 0)?;
            lseek(&f, off, whence)
        });
    }
    p.both("an empty file", |d| -> R<_> {
        let f = open(&j(d, "e"), libc::O_CREAT | libc::O_RDWR, 0o644)?;
        Ok((lseek(&f, 0, libc::SEEK_DATA), lseek(&f, 0, libc::SEEK_HOLE)))
    });
    p.both("a file without holes", |d| -> R<_> {
        write(&j(d, "full"), &[9u8; 10_000])?;
        let f = open(&j(d, "full"), libc::O_RDONLY, 0)?;
        Ok((
            lseek(&f, 0, libc::SEEK_HOLE)?,
            lseek(&f, 5000, libc::SEEK_DATA)?,
        ))
    });
    p.both("after punching a hole", |d| -> R<_> {
        let f = open(&j(d, "full"), libc::O_RDWR, 0)?;
        fallocate(
            &f,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            4096,
        )?;
        Ok((
            lseek(&f, 0, libc::SEEK_DATA)?,
            lseek(&f, 0, libc::SEEK_HOLE)?,
        ))
    });
    p.finish();
}

#[test]
fn copy_file_range_copies_data() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    let data: Vec<u8> = (0..20_000u32).map(|i| (i % 253) as u8).collect();
    let rd = |d: &Path, n: &str| open(&j(d, n), libc::O_RDONLY, 0);
    let wr = |d: &Path, n: &str| open(&j(d, n), libc::O_CREAT | libc::O_WRONLY, 0o644);
    p.setup("make", |d| -> R<()> {
        write(&j(d, "src"), &data)?;
        write(&j(d, "dst"), b"")
    });
    p.both("a range at explicit offsets", |d| -> R<_> {
        let n = copy_range(&rd(d, "src")?, Some(5), &wr(d, "dst")?, Some(0), 100)?;
        Ok((n, read(&j(d, "dst"))?))
    });
    p.both("to an offset past the end leaves zeros", |d| -> R<_> {
        let n = copy_range(&rd(d, "src")?, Some(0), &wr(d, "dst")?, Some(30_000), 1000)?;
        let got = read(&j(d, "dst"))?;
        Ok((
            n,
            st(&j(d, "dst"))?,
            got[100..30_000].iter().all(|b| *b == 0),
            got[30_000..] == data[..1000],
        ))
    });
    p.both("more than the source holds", |d| {
        copy_range(&rd(d, "src")?, Some(19_990), &wr(d, "dst")?, Some(0), 100)
    });
    p.both("from the end of the source", |d| {
        copy_range(&rd(d, "src")?, Some(20_000), &wr(d, "dst")?, Some(0), 100)
    });
    p.both("at the file positions", |d| -> R<_> {
        let i = rd(d, "src")?;
        let o = wr(d, "dst2")?;
        lseek(&i, 1000, libc::SEEK_SET)?;
        let n = copy_range(&i, None, &o, None, 500)?;
        Ok((
            n,
            lseek(&i, 0, libc::SEEK_CUR)?,
            lseek(&o, 0, libc::SEEK_CUR)?,
            read(&j(d, "dst2"))? == data[1000..1500],
        ))
    });
    p.both("overlapping ranges of one file", |d| -> R<_> {
        let f = open(&j(d, "src"), libc::O_RDWR, 0)?;
        copy_range(&f, Some(0), &f, Some(10), 100)
    });
    p.both("separate ranges of one file", |d| -> R<_> {
        let f = open(&j(d, "src"), libc::O_RDWR, 0)?;
        let n = copy_range(&f, Some(0), &f, Some(15_000), 100)?;
        Ok((n, read(&j(d, "src"))?))
    });
    p.both("to a read-only descriptor", |d| {
        copy_range(&rd(d, "src")?, Some(0), &rd(d, "dst")?, Some(0), 10)
    });
    p.both("from a write-only descriptor", |d| {
        copy_range(&wr(d, "src")?, Some(0), &wr(d, "dst")?, Some(0), 10)
    });
    p.both("to an O_APPEND descriptor", |d| -> R<_> {
        let o = open(&j(d, "dst"), libc::O_WRONLY | libc::O_APPEND, 0)?;
        copy_range(&rd(d, "src")?, Some(0), &o, Some(0), 10)
    });
    p.both("a large copy", |d| -> R<_> {
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
        write(&j(d, "big"), &big)?;
        let (i, o) = (rd(d, "big")?, wr(d, "big2")?);
        let mut done = 0usize;
        while done < big.len() {
            let n = copy_range(
                &i,
                Some(done as i64),
                &o,
                Some(done as i64),
                big.len() - done,
            )?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok((done, read(&j(d, "big2"))? == big))
    });
    assert!(p.changes(
        "mtime of the destination",
        |d| mtime(&j(d, "dst")),
        |d| copy_range(&rd(d, "src")?, Some(0), &wr(d, "dst")?, Some(0), 10)
    ));
    p.finish();
}

// ---------------------------------------------------------------------------------------
// Permissions: other users, sticky and setgid directories, setuid bits

#[test]
fn permission_checks_for_other_users() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    p.setup("make", |d| -> R<()> {
        write(&j(d, "ro"), b"ro")?;
        chmod(&j(d, "ro"), 0o444)?;
        write(&j(d, "rw"), b"rw")?;
        chmod(&j(d, "rw"), 0o666)?;
        write(&j(d, "secret"), b"s")?;
        chmod(&j(d, "secret"), 0o600)?;
        write(&j(d, "grp"), b"g")?;
        chown(&j(d, "grp"), 0, STAFF)?;
        chmod(&j(d, "grp"), 0o640)?;
        write(&j(d, "noexec"), b"#!/bin/sh\n")?;
        mkdir(&j(d, "rodir"), 0o755)?;
        write(&j(d, "rodir/in"), b"")?;
        chmod(&j(d, "rodir"), 0o555)?;
        mkdir(&j(d, "closed"), 0o700)?;
        write(&j(d, "closed/inner"), b"i")?;
        mkdir(&j(d, "pub"), 0o755)?;
        chmod(&j(d, "pub"), 0o777)?;
        write(&j(d, "pub/roots"), b"r")?;
        mkdir(&j(d, "pub/rootsdir"), 0o755)?;
        mkdir(&j(d, "pub/dest"), 0o755)?;
        chmod(&j(d, "pub/dest"), 0o777)
    });
    let nobody = |op: &dyn Fn() -> R<()>| as_user(NOBODY, op);
    p.both("open a 0444 file for writing", |d| {
        nobody(&|| open(&j(d, "ro"), libc::O_WRONLY, 0).map(drop))
    });
    p.both("open a 0444 file for writing as root", |d| {
        open(&j(d, "ro"), libc::O_WRONLY, 0).map(drop)
    });
    p.both("write a 0666 file of root", |d| {
        nobody(&|| write(&j(d, "rw"), b"nobody"))
    });
    p.both("read a 0600 file of root", |d| {
        nobody(&|| read(&j(d, "secret")).map(drop))
    });
    p.both("read a 0640 file as a member of its group", |d| {
        as_user(NOBODY_IN_STAFF, || read(&j(d, "grp")).map(drop))
    });
    p.both("read a 0640 file as a non-member", |d| {
        nobody(&|| read(&j(d, "grp")).map(drop))
    });
    p.both("create in a 0555 directory", |d| {
        nobody(&|| write(&j(d, "rodir/x"), b""))
    });
    p.both("create in a 0555 directory as root", |d| {
        write(&j(d, "rodir/y"), b"")
    });
    p.both("unlink in a 0555 directory", |d| {
        nobody(&|| unlink(&j(d, "rodir/in")))
    });
    p.both("look into a 0700 directory", |d| {
        nobody(&|| st(&j(d, "closed/inner")).map(drop))
    });
    p.both("list a 0700 directory", |d| {
        nobody(&|| list(&j(d, "closed")).map(drop))
    });
    p.both("delete root's file in a world-writable directory", |d| {
        nobody(&|| unlink(&j(d, "pub/roots")))
    });
    p.both("move root's directory to another directory", |d| {
        nobody(&|| rename(&j(d, "pub/rootsdir"), &j(d, "pub/dest/x")))
    });
    p.both("chmod of someone else's file", |d| {
        nobody(&|| chmod(&j(d, "rw"), 0o777))
    });
    p.both("chown of someone else's file", |d| {
        nobody(&|| chown(&j(d, "rw"), 65534, 65534))
    });
    p.both("chown of one's own file to another user", |d| {
        nobody(&|| {
            write(&j(d, "pub/mine"), b"")?;
            chown(&j(d, "pub/mine"), 1000, u32::MAX)
        })
    });
    p.both(
        "chgrp of one's own file to a group one is in",
        |d| -> R<_> {
            as_user(NOBODY_IN_STAFF, || {
                chown(&j(d, "pub/mine"), u32::MAX, STAFF)
            })?;
            st(&j(d, "pub/mine"))
        },
    );
    p.both("chgrp of one's own file to a group one is not in", |d| {
        as_user(NOBODY_IN_STAFF, || chown(&j(d, "pub/mine"), u32::MAX, 4321))
    });
    p.both("set the times of someone else's file", |d| {
        nobody(&|| utimens(&j(d, "rw"), Set::At(T1), Set::At(T1)))
    });
    p.both("touch someone else's writable file", |d| {
        nobody(&|| utimens(&j(d, "rw"), Set::Now, Set::Now))
    });
    p.both("touch someone else's read-only file", |d| {
        nobody(&|| utimens(&j(d, "ro"), Set::Now, Set::Now))
    });
    p.both("truncate someone else's read-only file", |d| {
        nobody(&|| truncate(&j(d, "ro"), 0))
    });
    p.both("an owner without write permission", |d| {
        nobody(&|| {
            write(&j(d, "pub/own"), b"x")?;
            chmod(&j(d, "pub/own"), 0o444)?;
            open(&j(d, "pub/own"), libc::O_WRONLY, 0).map(drop)
        })
    });
    p.both("the owner may chmod it back", |d| {
        nobody(&|| {
            chmod(&j(d, "pub/own"), 0o644)?;
            open(&j(d, "pub/own"), libc::O_WRONLY, 0).map(drop)
        })
    });
    p.both("access() by another user", |d| -> R<_> {
        Ok((
            nobody(&|| access(&j(d, "ro"), libc::R_OK)),
            nobody(&|| access(&j(d, "ro"), libc::W_OK)),
            nobody(&|| access(&j(d, "secret"), libc::R_OK)),
            nobody(&|| access(&j(d, "rw"), libc::X_OK)),
        ))
    });
    p.both("execute permission for root needs an x bit", |d| -> R<_> {
        let before = access(&j(d, "noexec"), libc::X_OK);
        chmod(&j(d, "noexec"), 0o744)?;
        Ok((before, access(&j(d, "noexec"), libc::X_OK)))
    });
    p.both("the state at the end", |d| -> R<_> {
        Ok((
            list(d)?,
            list(&j(d, "pub"))?,
            read(&j(d, "rw"))?,
            st(&j(d, "rw"))?,
        ))
    });
    p.finish();
}

#[test]
fn sticky_directories_protect_other_users_files() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    let s = |d: &Path, n: &str| d.join("s").join(n);
    p.setup("make", |d| -> R<()> {
        mkdir(&j(d, "s"), 0o755)?;
        chmod(&j(d, "s"), 0o1777)?;
        write(&s(d, "roots"), b"r")?;
        write(&s(d, "alices"), b"a")?;
        chown(&s(d, "alices"), ALICE.uid, ALICE.gid)?;
        mkdir(&s(d, "rootdir"), 0o777)
    });
    p.both("create one's own file", |d| -> R<_> {
        as_user(NOBODY, || write(&s(d, "mine"), b"m"))?;
        st(&s(d, "mine"))
    });
    p.both("unlink root's file", |d| {
        as_user(NOBODY, || unlink(&s(d, "roots")))
    });
    p.both("unlink another user's file", |d| {
        as_user(NOBODY, || unlink(&s(d, "alices")))
    });
    p.both("rename another user's file", |d| {
        as_user(NOBODY, || rename(&s(d, "alices"), &s(d, "x")))
    });
    p.both("rename one's own file over another's", |d| {
        as_user(NOBODY, || rename(&s(d, "mine"), &s(d, "roots")))
    });
    p.both("rmdir another user's directory", |d| {
        as_user(NOBODY, || rmdir(&s(d, "rootdir")))
    });
    p.both("the owner of a file may delete it", |d| -> R<_> {
        as_user(ALICE, || unlink(&s(d, "alices")))?;
        Ok(st(&s(d, "alices")))
    });
    p.both("rename and unlink one's own file", |d| {
        as_user(NOBODY, || {
            rename(&s(d, "mine"), &s(d, "mine2"))?;
            unlink(&s(d, "mine2"))
        })
    });
    p.both(
        "the owner of the directory may delete anything",
        |d| -> R<_> {
            chown(&j(d, "s"), ALICE.uid, ALICE.gid)?;
            as_user(ALICE, || unlink(&s(d, "roots")))?;
            list(&j(d, "s"))
        },
    );
    p.finish();
}

#[test]
fn setgid_directories_hand_on_their_group() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    let g = |d: &Path, n: &str| d.join("g").join(n);
    p.setup("make", |d| -> R<_> {
        mkdir(&j(d, "g"), 0o755)?;
        chown(&j(d, "g"), 0, STAFF)?;
        chmod(&j(d, "g"), 0o2777)?;
        st(&j(d, "g"))
    });
    p.both("a new file gets the directory's group", |d| -> R<_> {
        write(&g(d, "f"), b"")?;
        st(&g(d, "f"))
    });
    p.both(
        "a new directory gets the group and the setgid bit",
        |d| -> R<_> {
            mkdir(&g(d, "sub"), 0o755)?;
            st(&g(d, "sub"))
        },
    );
    p.both("and hands them on", |d| -> R<_> {
        write(&g(d, "sub/f2"), b"")?;
        mkdir(&g(d, "sub/s2"), 0o700)?;
        Ok((st(&g(d, "sub/f2"))?, st(&g(d, "sub/s2"))?))
    });
    p.both("a fifo and a symlink", |d| -> R<_> {
        mknod(&g(d, "p"), libc::S_IFIFO | 0o644, 0)?;
        symlink("f", &g(d, "l"))?;
        Ok((st(&g(d, "p"))?, st(&g(d, "l"))?))
    });
    p.both("nodes made by a user outside the group", |d| -> R<_> {
        as_user(NOBODY, || {
            write(&g(d, "nf"), b"")?;
            mkdir(&g(d, "nd"), 0o777)
        })?;
        Ok((st(&g(d, "nf"))?, st(&g(d, "nd"))?))
    });
    p.both("a non-member cannot create a setgid file", |d| -> R<_> {
        as_user(NOBODY, || {
            open(&g(d, "sgid"), libc::O_CREAT | libc::O_WRONLY, 0o2755).map(drop)
        })?;
        st(&g(d, "sgid"))
    });
    p.both("root may", |d| -> R<_> {
        open(&g(d, "rsgid"), libc::O_CREAT | libc::O_WRONLY, 0o2755)?;
        st(&g(d, "rsgid"))
    });
    p.both("chmod g+s by a non-member is dropped", |d| -> R<_> {
        as_user(NOBODY, || chmod(&g(d, "nf"), 0o2755))?;
        st(&g(d, "nf"))
    });
    p.both("chmod g+s by a member is kept", |d| -> R<_> {
        as_user(NOBODY_IN_STAFF, || chmod(&g(d, "nf"), 0o2755))?;
        st(&g(d, "nf"))
    });
    p.both("a file moved in keeps its group", |d| -> R<_> {
        write(&j(d, "outside"), b"")?;
        rename(&j(d, "outside"), &g(d, "moved"))?;
        st(&g(d, "moved"))
    });
    p.finish();
}

#[test]
fn writes_truncates_and_chown_clear_setuid_bits() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    let f = |d: &Path, n: &str| d.join("pub").join(n);
    p.setup("make", |d| -> R<()> {
        mkdir(&j(d, "pub"), 0o755)?;
        chmod(&j(d, "pub"), 0o777)?;
        for n in ["w", "t", "root", "nox", "own"] {
            write(&f(d, n), b"data")?;
        }
        for n in ["w", "t", "root"] {
            chmod(&f(d, n), 0o6777)?;
        }
        chmod(&f(d, "nox"), 0o2766)
    });
    p.both("a write by another user", |d| -> R<_> {
        as_user(NOBODY, || {
            pwrite(&open(&f(d, "w"), libc::O_WRONLY, 0)?, b"x", 0).map(drop)
        })?;
        st(&f(d, "w"))
    });
    p.both("a truncate by another user", |d| -> R<_> {
        as_user(NOBODY, || truncate(&f(d, "t"), 1))?;
        st(&f(d, "t"))
    });
    p.both("a write by root", |d| -> R<_> {
        pwrite(&open(&f(d, "root"), libc::O_WRONLY, 0)?, b"x", 0)?;
        st(&f(d, "root"))
    });
    p.both(
        "setgid without group execute survives a write",
        |d| -> R<_> {
            as_user(NOBODY, || {
                pwrite(&open(&f(d, "nox"), libc::O_WRONLY, 0)?, b"x", 0).map(drop)
            })?;
            st(&f(d, "nox"))
        },
    );
    p.both("the owner writes to its own setuid file", |d| -> R<_> {
        chown(&f(d, "own"), 65534, 65534)?;
        chmod(&f(d, "own"), 0o4755)?;
        as_user(NOBODY, || {
            pwrite(&open(&f(d, "own"), libc::O_WRONLY, 0)?, b"x", 0).map(drop)
        })?;
        st(&f(d, "own"))
    });
    p.finish();
}

// ---------------------------------------------------------------------------------------
// mmap, unlinked open files, inode numbers

/// Writes `data` at `off` through a shared mapping of the whole file, optionally msyncs,
/// and unmaps.
fn write_through_mapping(f: &File, off: usize, data: &[u8], sync: bool) -> R<()> {
    let len = f.metadata().code()?.len() as usize;
    assert!(off + data.len() <= len);
    // SAFETY: a shared mapping of an open file, written within its size, unmapped below.
    unsafe {
        let ptr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        if ptr == libc::MAP_FAILED {
            return Err(errno());
        }
        std::ptr::copy_nonoverlapping(data.as_ptr(), (ptr as *mut u8).add(off), data.len());
        let r = if sync {
            ok(libc::msync(ptr, len, libc::MS_SYNC))
        } else {
            Ok(())
        };
        libc::munmap(ptr, len);
        r
    }
}

#[test]
fn shared_mmap_writes_reach_the_file_and_the_disk() {
    if !fuse_available() {
        return;
    }
    let p = Pair::with(Mount::with(|t| {
        fs::write(t.join("disk"), [b'd'; 10_000]).unwrap()
    }));
    write(&p.r().join("disk"), &[b'd'; 10_000]).unwrap();
    p.setup("make", |d| write(&j(d, "f"), &[b'a'; 10_000]));
    p.both(
        "writes through a mapping of a file from disk",
        |d| -> R<_> {
            let f = open(&j(d, "disk"), libc::O_RDWR, 0)?;
            write_through_mapping(&f, 4000, b"DISK", false)?;
            Ok((read(&j(d, "disk"))?, fst(&f)?))
        },
    );
    p.both("writes through a mapping show in read(2)", |d| -> R<_> {
        let f = open(&j(d, "f"), libc::O_RDWR, 0)?;
        write_through_mapping(&f, 100, b"MAPPED", true)?;
        write_through_mapping(&f, 9000, b"END", true)?;
        Ok((read(&j(d, "f"))?, fst(&f)?))
    });
    p.both("without msync, after munmap and close", |d| -> R<_> {
        let f = open(&j(d, "f"), libc::O_RDWR, 0)?;
        write_through_mapping(&f, 5000, b"NOSYNC", false)?;
        drop(f);
        read(&j(d, "f"))
    });
    p.both("the mapping of a file grown by ftruncate", |d| -> R<_> {
        let f = open(&j(d, "g"), libc::O_CREAT | libc::O_RDWR, 0o644)?;
        ftruncate(&f, 8192)?;
        write_through_mapping(&f, 8000, b"grown", true)?;
        Ok((read(&j(d, "g"))?, fst(&f)?))
    });
    assert!(p.changes(
        "mtime after writes through a mapping",
        |d| mtime(&j(d, "f")),
        |d| write_through_mapping(&open(&j(d, "f"), libc::O_RDWR, 0)?, 0, b"M", false)
    ));
    let seen: Vec<_> = ["f", "g", "disk"]
        .iter()
        .map(|n| read(&p.m.path(n)).unwrap())
        .collect();
    p.m.unmount();
    for (n, seen) in ["f", "g", "disk"].iter().zip(seen) {
        if read(&p.m.path(n)).unwrap() != seen {
            p.note(format!(
                "{n} on disk after unmount differs from what the mount showed"
            ));
        }
    }
    p.finish();
}

#[test]
fn files_stay_usable_after_unlink_until_closed() {
    if !fuse_available() {
        return;
    }
    let p = Pair::new();
    p.both("write, unlink, keep using", |d| -> R<_> {
        let f = open(&j(d, "f"), libc::O_CREAT | libc::O_RDWR, 0o644)?;
        pwrite(&f, b"before", 0)?;
        unlink(&j(d, "f"))?;
        let gone = st(&j(d, "f"));
        pwrite(&f, b" after", 6)?;
        let mut buf = vec![0u8; 12];
        f.read_exact_at(&mut buf, 0).code()?;
        let unlinked = fst(&f)?;
        write(&j(d, "f"), b"a new file")?;
        pwrite(&f, b"!", 12)?;
        Ok((
            gone,
            buf,
            unlinked,
            read(&j(d, "f"))?,
            fst(&f)?,
            read_fd(&f)?,
        ))
    });
    p.both("ftruncate and fchmod of an unlinked file", |d| -> R<_> {
        let f = open(&j(d, "g"), libc::O_CREAT | libc::O_RDWR, 0o644)?;
        unlink(&j(d, "g"))?;
        ftruncate(&f, 100)?;
        // SAFETY: plain system call on an open descriptor.
        ok(unsafe { libc::fchmod(f.as_raw_fd(), 0o600) })?;
        Ok((fst(&f)?, read_fd(&f)?.len()))
    });
    p.both("an open directory after rmdir", |d| -> R<_> {
        mkdir(&j(d, "dd"), 0o755)?;
        let f = open_dir(&j(d, "dd"))?;
        rmdir(&j(d, "dd"))?;
        let x = cname("x");
        // SAFETY: valid C string and an open directory descriptor.
        let made = unsafe {
            libc::openat(
                f.as_raw_fd(),
                x.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY,
                0o644,
            )
        };
        let made = if made < 0 { Err(errno()) } else { Ok(()) };
        Ok((fst(&f)?, getdents(&f, 4096), made))
    });
    p.both("the listing", list);
    p.m.unmount();
    if list(&p.m.target).unwrap() != list(p.r()).unwrap() {
        p.note("after unmount, the disk copy lists other names than tmpfs".into());
    }
    if read(&p.m.path("f")).unwrap() != b"a new file" {
        p.note("after unmount, f on disk is not the new file".into());
    }
    p.finish();
}

#[test]
fn a_file_from_disk_stays_readable_after_unlink_and_flush() {
    if !fuse_available() {
        return;
    }
    let m = Mount::with(|t| {
        fs::write(t.join("old"), b"from disk").unwrap();
        fs::write(t.join("never-opened"), b"cold").unwrap();
    });
    let f = open(&m.path("old"), libc::O_RDONLY, 0).unwrap();
    unlink(&m.path("old")).unwrap();
    assert_eq!(fst(&f).unwrap().nlink, 0, "nlink of an unlinked open file");
    assert_eq!(read_fd(&f).unwrap(), b"from disk");
    m.flush();
    assert_eq!(
        read_fd(&f).unwrap(),
        b"from disk",
        "after a flush removed it"
    );
    drop(f);
    assert_eq!(st(&m.path("old")), Err(libc::ENOENT));
    m.unmount();
    assert_eq!(
        st(&m.path("old")),
        Err(libc::ENOENT),
        "on disk after unmount"
    );
    assert_eq!(read(&m.path("never-opened")).unwrap(), b"cold");
}

#[test]
fn inode_numbers_stay_the_same_for_the_life_of_the_mount() {
    if !fuse_available() {
        return;
    }
    let m = Mount::with(|t| {
        fs::write(t.join("disk_file"), b"d").unwrap();
        fs::create_dir(t.join("disk_dir")).unwrap();
        fs::write(t.join("disk_dir/inner"), b"i").unwrap();
        fs::hard_link(t.join("disk_file"), t.join("disk_dir/hl")).unwrap();
    });
    let path = |n: &str| m.path(n);
    write(&path("f"), b"f").unwrap();
    mkdir(&path("dir"), 0o755).unwrap();
    write(&path("dir/g"), b"g").unwrap();
    symlink("f", &path("l")).unwrap();
    mknod(&path("p"), libc::S_IFIFO | 0o600, 0).unwrap();
    link(&path("f"), &path("dir/fl")).unwrap();
    let names = [
        "f",
        "dir",
        "dir/g",
        "l",
        "p",
        "dir/fl",
        "disk_file",
        "disk_dir",
        "disk_dir/inner",
        "disk_dir/hl",
    ];
    let inos =
        |names: &[&str]| -> Vec<u64> { names.iter().map(|n| ino(&path(n)).unwrap()).collect() };
    let first = inos(&names);
    assert_eq!(first[0], first[5], "hard links share an inode number");
    assert_eq!(
        first[6], first[9],
        "hard links from disk share an inode number"
    );
    let distinct: BTreeSet<u64> = first.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        names.len() - 2,
        "inode numbers are unique: {first:?}"
    );
    assert_eq!(inos(&names), first, "a second lookup");
    let listed: BTreeMap<OsString, u64> = getdents_all(&open_dir(&m.target).unwrap())
        .unwrap()
        .into_iter()
        .map(|(i, _, n)| (n, i))
        .collect();
    for n in ["f", "dir", "l", "p", "disk_file", "disk_dir"] {
        assert_eq!(
            listed[OsStr::new(n)],
            ino(&path(n)).unwrap(),
            "d_ino of {n}"
        );
    }
    drop_caches();
    assert_eq!(inos(&names), first, "after the kernel dropped its caches");
    rename(&path("f"), &path("dir/f2")).unwrap();
    rename(&path("disk_dir"), &path("dir/moved")).unwrap();
    let renamed = [
        "dir/f2",
        "dir",
        "dir/g",
        "l",
        "p",
        "dir/fl",
        "disk_file",
        "dir/moved",
        "dir/moved/inner",
        "dir/moved/hl",
    ];
    assert_eq!(inos(&renamed), first, "after renames");
    m.flush();
    drop_caches();
    assert_eq!(inos(&renamed), first, "after a flush and dropped caches");
    let open_file = open(&path("dir/g"), libc::O_RDONLY, 0).unwrap();
    unlink(&path("dir/g")).unwrap();
    drop_caches();
    let fino = open_file.metadata().unwrap().ino();
    assert_eq!(fino, first[2], "an unlinked open file");
    write(&path("new"), b"").unwrap();
    let new = ino(&path("new")).unwrap();
    assert!(
        !first.contains(&new),
        "a new file got a number in use: {new}"
    );
}

// ---------------------------------------------------------------------------------------
// Files that come from disk, and the disk copy after unmount

/// What programs see of one node, for comparing a mount with its disk copy.
#[derive(Debug, PartialEq)]
struct Seen {
    st: St,
    atime: Time,
    mtime: Time,
    xattrs: Vec<(String, Vec<u8>)>,
    link: Option<Vec<u8>>,
    data: Option<Vec<u8>>,
    /// Data and hole boundaries (SEEK_DATA/SEEK_HOLE from 0 onwards).
    extents: Option<Vec<i64>>,
}

/// Everything below `root` (relative paths, "" for root), and which paths share an inode.
/// Reads with O_NOATIME and stats before reading, so that looking does not change atimes.
/// On a disk (not a noatime mount), readlink(2) sets the atime of a symlink: `disk` puts
/// it back.
fn view(root: &Path, disk: bool) -> (BTreeMap<String, Seen>, BTreeSet<Vec<String>>) {
    let mut out = BTreeMap::new();
    let mut inos: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut stack = vec![String::new()];
    let mut files = Vec::new();
    let seen_of = |p: &Path| -> Seen {
        let m = meta(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        let atime = (m.atime(), m.atime_nsec());
        let link = m.file_type().is_symlink().then(|| readlink(p).unwrap());
        if disk && link.is_some() {
            utimens(p, Set::At(atime), Set::Omit).unwrap();
        }
        Seen {
            st: st_of(&m),
            atime,
            mtime: (m.mtime(), m.mtime_nsec()),
            xattrs: xattrs(p).unwrap_or_else(|e| panic!("xattrs of {}: {e}", p.display())),
            link,
            data: None,
            extents: None,
        }
    };
    out.insert(String::new(), seen_of(root));
    while let Some(dir) = stack.pop() {
        let dpath = root.join(&dir);
        let f = open(
            &dpath,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOATIME,
            0,
        )
        .unwrap_or_else(|e| panic!("open {}: {e}", dpath.display()));
        for (_, _, name) in getdents_all(&f).unwrap() {
            if name == "." || name == ".." {
                continue;
            }
            let rel = if dir.is_empty() {
                name.to_string_lossy().into_owned()
            } else {
                format!("{dir}/{}", name.to_string_lossy())
            };
            let p = root.join(&rel);
            let s = seen_of(&p);
            let m = meta(&p).unwrap();
            if m.is_dir() {
                stack.push(rel.clone());
            } else {
                if m.nlink() > 1 {
                    inos.entry(m.ino()).or_default().push(rel.clone());
                }
                if m.is_file() {
                    files.push(rel.clone());
                }
            }
            out.insert(rel, s);
        }
    }
    for rel in files {
        let p = root.join(&rel);
        let f = open(&p, libc::O_RDONLY | libc::O_NOATIME, 0).unwrap();
        let mut extents = Vec::new();
        let mut pos = 0i64;
        for i in 0..64 {
            let whence = if i % 2 == 0 {
                libc::SEEK_DATA
            } else {
                libc::SEEK_HOLE
            };
            match lseek(&f, pos, whence) {
                Ok(o) => {
                    extents.push(o);
                    pos = o;
                }
                Err(_) => break,
            }
        }
        let s = out.get_mut(&rel).unwrap();
        s.data = Some(read_fd(&f).unwrap());
        s.extents = Some(extents);
    }
    let groups = inos
        .into_values()
        .map(|mut v| {
            v.sort();
            v
        })
        .collect();
    (out, groups)
}

/// The differences between two views, one line each.
fn view_diff(
    a_name: &str,
    a: &(BTreeMap<String, Seen>, BTreeSet<Vec<String>>),
    b_name: &str,
    b: &(BTreeMap<String, Seen>, BTreeSet<Vec<String>>),
) -> Vec<String> {
    let mut out = Vec::new();
    let keys: BTreeSet<&String> = a.0.keys().chain(b.0.keys()).collect();
    for k in keys {
        match (a.0.get(k), b.0.get(k)) {
            (Some(x), Some(y)) if x == y => {}
            (Some(x), Some(y)) => {
                let mut parts = Vec::new();
                if x.st != y.st {
                    parts.push(format!("stat {:?} vs {:?}", x.st, y.st));
                }
                if x.atime != y.atime {
                    parts.push(format!("atime {:?} vs {:?}", x.atime, y.atime));
                }
                if x.mtime != y.mtime {
                    parts.push(format!("mtime {:?} vs {:?}", x.mtime, y.mtime));
                }
                if x.xattrs != y.xattrs {
                    parts.push(format!("xattrs {:?} vs {:?}", x.xattrs, y.xattrs));
                }
                if x.link != y.link {
                    parts.push(format!("symlink {:?} vs {:?}", x.link, y.link));
                }
                if x.data != y.data {
                    let show = |d: &Option<Vec<u8>>| {
                        d.as_ref().map(|v| {
                            format!(
                                "{} bytes {:?}",
                                v.len(),
                                String::from_utf8_lossy(&v[..v.len().min(40)])
                            )
                        })
                    };
                    parts.push(format!("data {:?} vs {:?}", show(&x.data), show(&y.data)));
                }
                if x.extents != y.extents {
                    parts.push(format!("extents {:?} vs {:?}", x.extents, y.extents));
                }
                out.push(format!("/{k}: {} ({a_name} vs {b_name})", parts.join("; ")));
            }
            (Some(_), None) => out.push(format!("/{k}: only in {a_name}")),
            (None, Some(_)) => out.push(format!("/{k}: only in {b_name}")),
            (None, None) => unreachable!(),
        }
    }
    if a.1 != b.1 {
        out.push(format!(
            "hard-link groups {:?} ({a_name}) vs {:?} ({b_name})",
            a.1, b.1
        ));
    }
    out
}

/// A disk tree with everything a file system keeps: modes with special bits, owners,
/// nanosecond times, xattrs in several namespaces, ACLs, a symlink, hard links, special
/// files and a sparse file.
fn disk_tree(t: &Path) {
    let u = |r: R<()>, what: &str| r.unwrap_or_else(|e| panic!("preparing {what}: errno {e}"));
    let p = |n: &str| t.join(n);
    u(write(&p("plain"), b"plain data"), "plain");
    u(chown(&p("plain"), 1000, STAFF), "chown plain");
    u(chmod(&p("plain"), 0o640), "chmod plain");
    u(setx(&p("plain"), "user.a", b"1", 0), "user.a");
    u(
        setx(&p("plain"), "user.bin", &[0, 1, 2, 255], 0),
        "user.bin",
    );
    u(setx(&p("plain"), "trusted.t", b"t", 0), "trusted.t");
    u(setx(&p("plain"), "security.s", b"s", 0), "security.s");
    u(write(&p("suid"), b"#!/bin/sh\n"), "suid");
    u(chmod(&p("suid"), 0o4755), "chmod suid");
    u(write(&p("empty"), b""), "empty");
    u(chmod(&p("empty"), 0o600), "chmod empty");
    let sparse = File::create(p("sparse")).unwrap();
    sparse.write_all_at(&[b'x'; 4096], 0).unwrap();
    sparse.write_all_at(b"y", 1 << 20).unwrap();
    drop(sparse);
    u(write(&p("acl"), b"acl"), "acl");
    u(setfacl(&p("acl"), &["-m", "u:1000:rw-"]), "setfacl acl");
    u(mknod(&p("fifo"), libc::S_IFIFO | 0o604, 0), "fifo");
    u(chown(&p("fifo"), 1000, 1000), "chown fifo");
    u(mknod(&p("sock"), libc::S_IFSOCK | 0o755, 0), "sock");
    u(
        mknod(&p("chr"), libc::S_IFCHR | 0o600, libc::makedev(1, 3)),
        "chr",
    );
    u(symlink("plain", &p("sl")), "sl");
    u(lchown(&p("sl"), 1001, 1001), "lchown sl");
    u(setx(&p("sl"), "trusted.l", b"on a symlink", 0), "trusted.l");
    u(symlink("nowhere/at/all", &p("dangling")), "dangling");
    u(mkdir(&p("d"), 0o755), "d");
    u(write(&p("h1"), b"shared"), "h1");
    u(link(&p("h1"), &p("d/h2")), "h2");
    u(chown(&p("h1"), 1005, 1005), "chown h1");
    u(write(&p("d/inner"), b"inner"), "inner");
    u(mkdir(&p("d/sub"), 0o700), "sub");
    u(write(&p("d/sub/deep"), b"deep"), "deep");
    u(mkdir(&p("e"), 0o755), "e");
    u(write(&p("k1"), b"pair"), "k1");
    u(link(&p("k1"), &p("e/k2")), "e/k2");
    u(write(&p("trunc_me"), b"long content from disk"), "trunc_me");
    u(write(&p("victim"), b"victim"), "victim");
    u(write(&p("replacer"), b"replacer"), "replacer");
    u(mkdir(&p("ro_dir"), 0o755), "ro_dir");
    u(write(&p("ro_dir/file"), b"only looked at"), "ro_dir/file");
    u(chown(&p("d"), 1001, 1235), "chown d");
    u(chmod(&p("d"), 0o2750), "chmod d");
    u(setx(&p("d"), "user.dir", b"yes", 0), "user.dir");
    u(setfacl(&p("d"), &["-d", "-m", "u:1000:rwx"]), "default acl");
    let timed = [
        ("plain", T1, T2),
        ("suid", T2, T3),
        ("empty", T3, T4),
        ("sparse", T4, T1),
        ("acl", T1, T1),
        ("fifo", T2, T2),
        ("sock", T3, T3),
        ("chr", T4, T4),
        ("sl", T1, T2),
        ("dangling", T2, T1),
        ("h1", T3, T1),
        ("d/inner", T4, T2),
        ("d/sub/deep", T1, T3),
        ("d/sub", T2, T4),
        ("d", T3, T2),
        ("k1", T2, T3),
        ("trunc_me", T1, T2),
        ("victim", T3, T3),
        ("replacer", T4, T1),
        ("ro_dir/file", T2, T2),
        ("ro_dir", T1, T3),
        ("e", T4, T3),
        ("", T1, T4),
    ];
    for (n, a, m) in timed {
        u(utimens(&p(n), Set::At(a), Set::At(m)), n);
    }
}

#[test]
fn files_from_disk_are_exactly_as_on_disk() {
    if !fuse_available() {
        return;
    }
    let m = Mount::prepare(disk_tree);
    let disk = view(&m.target, true);
    let facls: Vec<(&str, String)> = ["acl", "d", "plain"]
        .into_iter()
        .map(|n| (n, getfacl(&m.path(n)).unwrap()))
        .collect();
    m.mount();
    let mut diffs = Vec::new();
    // Lookups before any listing, then the whole tree.
    for n in ["d/sub/deep", "d/h2", "h1", "plain", "sl", "fifo"] {
        let want = &disk.0[n];
        let p = m.path(n);
        let got = (st(&p), times(&p), xattrs(&p));
        let expect = (
            Ok(want.st),
            Ok((want.atime, want.mtime)),
            Ok(want.xattrs.clone()),
        );
        if got != expect {
            diffs.push(format!("/{n} looked up first: {got:?} vs disk {expect:?}"));
        }
    }
    if ino(&m.path("h1")) != ino(&m.path("d/h2")) {
        diffs.push("h1 and d/h2 have different inode numbers in the mount".into());
    }
    let mounted = view(&m.target, false);
    diffs.extend(view_diff("mount", &mounted, "disk", &disk));
    for (n, want) in &facls {
        let got = getfacl(&m.path(n));
        if got.as_ref() != Ok(want) {
            diffs.push(format!("getfacl /{n}: mount {got:?} vs disk {want:?}"));
        }
    }
    // Only looked at: after unmount the disk copy is what it was.
    m.unmount();
    let after = view(&m.target, true);
    diffs.extend(view_diff("disk after unmount", &after, "mount", &mounted));
    assert!(
        diffs.is_empty(),
        "{} difference(s) between the mount and the disk it came from:\n  {}",
        diffs.len(),
        diffs.join("\n  ")
    );
}

#[test]
fn the_disk_copy_after_unmount_is_what_the_mount_showed() {
    if !fuse_available() {
        return;
    }
    let m = Mount::prepare(disk_tree);
    m.mount();
    let p = |n: &str| m.path(n);
    let u = |r: R<()>, what: &str| r.unwrap_or_else(|e| panic!("{what}: errno {e}"));
    // Changes to what came from disk.
    u(chown(&p("plain"), 1003, 1236), "chown plain");
    u(chmod(&p("plain"), 0o600), "chmod plain");
    u(rmx(&p("plain"), "user.a"), "remove user.a");
    u(setx(&p("plain"), "user.new", b"new", 0), "set user.new");
    u(
        utimens(&p("plain"), Set::At(T3), Set::At(T4)),
        "utimens plain",
    );
    let h1 = open(&p("h1"), libc::O_WRONLY | libc::O_APPEND, 0).unwrap();
    (&h1).write_all(b"+more").unwrap();
    drop(h1);
    u(
        rename(&p("d/inner"), &p("e/moved")),
        "rename across directories",
    );
    let t = open(&p("trunc_me"), libc::O_WRONLY | libc::O_TRUNC, 0).unwrap();
    (&t).write_all(b"short").unwrap();
    drop(t);
    u(
        rename(&p("replacer"), &p("victim")),
        "rename over a file from disk",
    );
    u(
        link(&p("plain"), &p("plain_link")),
        "link to a file from disk",
    );
    u(unlink(&p("k1")), "unlink one name of a pair from disk");
    m.flush();
    u(truncate(&p("sparse"), 10), "truncate sparse");
    let suid = open(&p("suid"), libc::O_WRONLY, 0).unwrap();
    suid.write_all_at(b"#", 0).unwrap();
    drop(suid);
    u(unlink(&p("fifo")), "unlink fifo");
    u(unlink(&p("d/sub/deep")), "unlink deep");
    u(rmdir(&p("d/sub")), "rmdir sub");
    u(setfacl(&p("acl"), &["-m", "u:1001:r--"]), "setfacl acl");
    u(setx(&p("d"), "user.dir", b"changed", 0), "change user.dir");
    // New nodes.
    u(write(&p("new"), b"new content"), "new");
    u(chown(&p("new"), 1007, 1007), "chown new");
    u(chmod(&p("new"), 0o751), "chmod new");
    u(setx(&p("new"), "user.n", b"n", 0), "user.n");
    u(link(&p("new"), &p("d/new2")), "link new");
    u(symlink("new", &p("nsl")), "symlink nsl");
    u(lchown(&p("nsl"), 1008, 1008), "lchown nsl");
    u(utimens(&p("nsl"), Set::At(T2), Set::At(T3)), "utimens nsl");
    u(mkdir(&p("nd"), 0o700), "mkdir nd");
    u(write(&p("nd/f"), b"in nd"), "nd/f");
    u(mknod(&p("nfifo"), libc::S_IFIFO | 0o640, 0), "nfifo");
    u(
        mknod(&p("nchr"), libc::S_IFCHR | 0o600, libc::makedev(1, 5)),
        "nchr",
    );
    u(write(&p("d/inherits"), b"acl"), "d/inherits");
    u(utimens(&p("new"), Set::At(T1), Set::At(T4)), "utimens new");
    u(utimens(&p("nd"), Set::At(T2), Set::At(T2)), "utimens nd");
    u(utimens(&p("e"), Set::At(T1), Set::At(T1)), "utimens e");
    // A directory from disk with hard-linked members moves; a file and a directory
    // from disk trade places.
    u(rename(&p("d"), &p("dd")), "rename d");
    u(
        rename2(&p("sparse"), &p("e"), libc::RENAME_EXCHANGE),
        "exchange sparse and e",
    );
    let seen = view(&m.target, false);
    assert_eq!(
        seen.0["dd/new2"].data.as_deref(),
        Some(&b"new content"[..]),
        "the mount's own view"
    );
    m.unmount();
    let disk = view(&m.target, true);
    let mut diffs = view_diff("disk after unmount", &disk, "mount", &seen);
    // Hard links on disk are still one file: a write through one name shows in the other.
    if ino(&p("h1")) != ino(&p("dd/h2")) || ino(&p("new")) != ino(&p("dd/new2")) {
        diffs.push("hard links were split on disk".into());
    } else {
        fs::OpenOptions::new()
            .append(true)
            .open(p("h1"))
            .unwrap()
            .write_all(b"!")
            .unwrap();
        if read(&p("dd/h2")).unwrap() != b"shared+more!" {
            diffs.push(format!("dd/h2 on disk: {:?}", read(&p("dd/h2"))));
        }
    }
    // Mounted again, the tree is what the disk holds.
    let disk = view(&m.target, true);
    m.mount();
    let again = view(&m.target, false);
    diffs.extend(view_diff("mounted again", &again, "disk", &disk));
    assert!(
        diffs.is_empty(),
        "{} difference(s):\n  {}",
        diffs.len(),
        diffs.join("\n  ")
    );
}
