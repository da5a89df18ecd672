//! Files: create, open, read, write, flush, release, fsync; open flags; fallocate,
//! SEEK_DATA/SEEK_HOLE, copy_file_range.

use super::*;

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
