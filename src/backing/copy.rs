//! Copying file content between descriptors in the kernel, keeping holes as holes.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Copies all of `src` into `dst`, keeping holes, and sets `dst`'s size to `src`'s.
pub fn copy_sparse(src: &File, dst: &File) -> io::Result<u64> {
    let size = src.metadata()?.len();
    dst.set_len(0)?;
    copy_sparse_range(src, dst, size)?;
    dst.set_len(size)?;
    Ok(size)
}

/// Copies the data regions of `src` below `size` to the same offsets in `dst`.
pub fn copy_sparse_range(src: &File, dst: &File, size: u64) -> io::Result<()> {
    let mut pos = 0u64;
    while pos < size {
        let Some(start) = seek(src, pos, libc::SEEK_DATA)? else {
            break;
        };
        if start >= size {
            break;
        }
        let end = seek(src, start, libc::SEEK_HOLE)?.unwrap_or(size).min(size);
        copy_range(src, dst, start, end - start)?;
        pos = end;
    }
    Ok(())
}

/// lseek(2) with SEEK_DATA/SEEK_HOLE; `None` when there is no more data.
fn seek(f: &File, pos: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    // SAFETY: plain syscall on a descriptor we own; no memory is passed.
    let r = unsafe { libc::lseek(f.as_raw_fd(), pos as libc::off_t, whence) };
    if r >= 0 {
        return Ok(Some(r as u64));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENXIO) => Ok(None),
        // A filesystem without SEEK_DATA: treat the whole file as data.
        Some(libc::EINVAL) if whence == libc::SEEK_DATA => Ok(Some(pos)),
        Some(libc::EINVAL) => Ok(None),
        _ => Err(e),
    }
}

/// Copies `len` bytes at offset `off` from `src` to `dst`, in the kernel when it can.
fn copy_range(src: &File, dst: &File, off: u64, len: u64) -> io::Result<()> {
    let mut done = 0u64;
    while done < len {
        let mut off_in = (off + done) as libc::loff_t;
        let mut off_out = (off + done) as libc::loff_t;
        let chunk = (len - done).min(1 << 30) as usize;
        // SAFETY: the offsets point to live locals; descriptors are owned by the callers.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                chunk,
                0,
            )
        };
        if n > 0 {
            done += n as u64;
            continue;
        }
        if n == 0 {
            // The source shrank under us; what is left reads as zeros.
            break;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {
                return copy_by_buffer(src, dst, off + done, len - done);
            }
            Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
    Ok(())
}

fn copy_by_buffer(src: &File, dst: &File, off: u64, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let want = ((len - done) as usize).min(buf.len());
        let n = src.read_at(&mut buf[..want], off + done)?;
        if n == 0 {
            break;
        }
        dst.write_all_at(&buf[..n], off + done)?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests set up files as a user would
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn holes_stay_holes_and_data_is_equal() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let src = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.path().join("s"))
            .unwrap();
        let dst = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.path().join("d"))
            .unwrap();
        src.write_all_at(b"head", 0).unwrap();
        src.write_all_at(b"tail", 10 << 20).unwrap();
        src.set_len(12 << 20).unwrap();
        assert_eq!(copy_sparse(&src, &dst).unwrap(), 12 << 20);
        assert_eq!(dst.metadata().unwrap().len(), 12 << 20);
        let mut b = [0u8; 4];
        dst.read_exact_at(&mut b, 10 << 20).unwrap();
        assert_eq!(&b, b"tail");
        use std::os::unix::fs::MetadataExt;
        // Two pages of data, not 12 MiB.
        assert!(dst.metadata().unwrap().blocks() * 512 < 1 << 20);
    }
}
