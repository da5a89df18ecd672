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
    copy_sparse_range_from(src, dst, 0, size)
}

/// Brings `dst` to `src`'s content by writing only what may differ: the byte ranges
/// `ranges` (offset, length) when given (every other byte of `src` below the old size of
/// `dst` must equal `dst`'s), else every 4 KiB block that differs, read and compared; what
/// lies beyond `dst`'s old size is copied with holes kept. Then `dst` gets `src`'s size.
/// Returns the bytes written.
pub fn write_changed(src: &File, dst: &File, ranges: Option<&[(u64, u64)]>) -> io::Result<u64> {
    let size = src.metadata()?.len();
    let old = dst.metadata()?.len();
    let mut written = 0u64;
    match ranges {
        Some(rs) => {
            // Small ranges through one buffer: from tmpfs to a disk filesystem
            // copy_file_range fails with EXDEV anyway.
            use std::os::unix::fs::FileExt;
            let most = rs.iter().map(|r| r.1).max().unwrap_or(0).min(1 << 20) as usize;
            let mut buf = vec![0u8; most];
            for &(off, len) in rs {
                let end = off.saturating_add(len).min(size);
                let mut pos = off;
                while pos < end {
                    let n = ((end - pos) as usize).min(buf.len());
                    let got = src.read_at(&mut buf[..n], pos)?;
                    if got == 0 {
                        break;
                    }
                    dst.write_all_at(&buf[..got], pos)?;
                    pos += got as u64;
                }
                written += end.saturating_sub(off);
            }
        }
        None => {
            written += write_differing(src, dst, old.min(size))?;
            if size > old {
                copy_sparse_range_from(src, dst, old, size)?;
                written += size - old;
            }
        }
    }
    if dst.metadata()?.len() != size {
        dst.set_len(size)?;
    }
    Ok(written)
}

/// Writes the 4 KiB blocks of `src` below `len` that differ from `dst`'s.
fn write_differing(src: &File, dst: &File, len: u64) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    const CHUNK: usize = 256 << 10;
    const BLOCK: usize = 4096;
    let (mut a, mut b) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut written = 0u64;
    let mut pos = 0u64;
    while pos < len {
        let want = ((len - pos) as usize).min(CHUNK);
        src.read_exact_at(&mut a[..want], pos)?;
        dst.read_exact_at(&mut b[..want], pos)?;
        let mut i = 0;
        while i < want {
            let end = (i + BLOCK).min(want);
            if a[i..end] == b[i..end] {
                i = end;
                continue;
            }
            // A run of differing blocks, written at once.
            let mut j = end;
            while j < want {
                let e = (j + BLOCK).min(want);
                if a[j..e] == b[j..e] {
                    break;
                }
                j = e;
            }
            dst.write_all_at(&a[i..j], pos + i as u64)?;
            written += (j - i) as u64;
            i = j;
        }
        pos += want as u64;
    }
    Ok(written)
}

/// `copy_sparse_range` of the part of `src` between `from` and `size`.
fn copy_sparse_range_from(src: &File, dst: &File, from: u64, size: u64) -> io::Result<()> {
    let mut pos = from;
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

    #[test]
    fn write_changed_writes_only_what_differs() {
        let dir = tempfile::tempdir_in("/dev/shm").unwrap();
        let open = |n: &str| {
            File::options()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(dir.path().join(n))
                .unwrap()
        };
        let (src, dst) = (open("s"), open("d"));
        let base: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        src.write_all_at(&base, 0).unwrap();
        dst.write_all_at(&base, 0).unwrap();
        src.write_all_at(b"changed", 50_000).unwrap();
        src.write_all_at(b"grown", 120_000).unwrap();
        // Compared: one block changed, and what lies beyond the old end.
        let n = write_changed(&src, &dst, None).unwrap();
        assert_eq!(n, 4096 + 20_005);
        let read = |f: &File| {
            let mut v = vec![0u8; f.metadata().unwrap().len() as usize];
            f.read_exact_at(&mut v, 0).unwrap();
            v
        };
        assert_eq!(read(&src), read(&dst));
        // Given ranges: only those; then a shrink.
        src.write_all_at(b"again", 10).unwrap();
        assert_eq!(write_changed(&src, &dst, Some(&[(10, 5)])).unwrap(), 5);
        assert_eq!(read(&src), read(&dst));
        src.set_len(30_000).unwrap();
        write_changed(&src, &dst, None).unwrap();
        assert_eq!(read(&src), read(&dst));
    }
}
