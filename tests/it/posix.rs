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

mod attrs;
mod dirs;
mod disk;
mod files;
mod handles;
mod killpriv;
mod links;
mod open_files;
mod permissions;
mod privs;
mod readdir;
mod times;
mod xattrs;
