//! The archive format, both ways: ustar headers with the PAX records they cannot hold (long
//! names, nanosecond or negative times, large ids and sizes, xattrs as `SCHILY.xattr.*`), and
//! reading a member's attributes back from them.

use anyhow::Context;
use nix::sys::stat::FileStat;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use tar::{EntryType, Header};

/// The PAX key prefix of an xattr, as GNU tar `--xattrs` writes it.
const XATTR_KEY: &[u8] = b"SCHILY.xattr.";

/// Attributes of a restored object.
pub(super) struct Meta {
    pub(super) mode: u32,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) mtime: (i64, i64),
    pub(super) atime: Option<(i64, i64)>,
    pub(super) xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A ustar header with the object's attributes, and the PAX records that the header cannot
/// hold (nanosecond or negative mtime, ids and sizes too large for octal fields).
pub(super) fn header(st: &FileStat, ty: EntryType, size: u64) -> io::Result<(Header, Vec<u8>)> {
    let mut h = Header::new_ustar();
    let mut pax = Vec::new();
    h.set_entry_type(ty);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(st.st_uid.into());
    h.set_gid(st.st_gid.into());
    h.set_size(size);
    h.set_mtime(st.st_mtime.max(0) as u64);
    if st.st_mtime_nsec != 0 || st.st_mtime < 0 {
        let t = pax_time(st.st_mtime, st.st_mtime_nsec);
        pax_record(&mut pax, b"mtime", t.as_bytes());
    }
    for (key, v, max) in [
        (&b"uid"[..], st.st_uid as u64, 0o7777777),
        (b"gid", st.st_gid as u64, 0o7777777),
        (b"size", size, 0o77777777777),
    ] {
        if v > max {
            pax_record(&mut pax, key, v.to_string().as_bytes());
        }
    }
    if ty == EntryType::Char || ty == EntryType::Block {
        let rdev = st.st_rdev;
        h.set_device_major(nix::sys::stat::major(rdev) as u32)?;
        h.set_device_minor(nix::sys::stat::minor(rdev) as u32)?;
    }
    Ok((h, pax))
}

/// Puts the member name (and link target) in the header, or in PAX records when too long.
pub(super) fn set_name(
    h: &mut Header,
    member: &[u8],
    link: Option<&[u8]>,
    pax: &mut Vec<u8>,
) -> io::Result<()> {
    if h.set_path(OsStr::from_bytes(member)).is_err() {
        pax_record(pax, b"path", member);
        if let Some(u) = h.as_ustar_mut() {
            u.prefix = [0; 155];
        }
        raw_field(&mut h.as_old_mut().name, member);
    }
    if let Some(link) = link {
        if h.set_link_name(OsStr::from_bytes(link)).is_err() {
            pax_record(pax, b"linkpath", link);
            raw_field(&mut h.as_old_mut().linkname, link);
        }
    }
    Ok(())
}

/// The start of `value` in a fixed header field (readers use the PAX record instead).
fn raw_field(field: &mut [u8; 100], value: &[u8]) {
    let n = value.len().min(field.len());
    *field = [0; 100];
    field[..n].copy_from_slice(&value[..n]);
}

/// Appends one PAX record per xattr.
pub(super) fn xattr_records(pax: &mut Vec<u8>, xattrs: &[(OsString, Vec<u8>)]) {
    for (k, v) in xattrs {
        let key = [XATTR_KEY, k.as_bytes()].concat();
        pax_record(pax, &key, v);
    }
}

/// The header of the PAX extension member that carries `len` bytes of records.
pub(super) fn pax_header(len: usize) -> io::Result<Header> {
    let mut x = Header::new_ustar();
    x.set_path("PaxHeader")?;
    x.set_entry_type(EntryType::XHeader);
    x.set_size(len as u64);
    x.set_cksum();
    Ok(x)
}

/// Appends `"<len> <key>=<value>\n"`, where len counts the whole record.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3;
    let digits = |n: usize| n.to_string().len();
    let mut len = rest + digits(rest);
    while digits(len) + rest != len {
        len = digits(len) + rest;
    }
    out.extend_from_slice(format!("{len} ").as_bytes());
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Seconds and nanoseconds as a PAX time ("-1.5" is half a second before -1).
fn pax_time(sec: i64, nsec: i64) -> String {
    if sec < 0 && nsec > 0 {
        format!("-{}.{:09}", -(sec + 1), 1_000_000_000 - nsec)
    } else {
        format!("{sec}.{nsec:09}")
    }
}

fn parse_pax_time(v: &[u8]) -> Option<(i64, i64)> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = whole.parse().ok()?;
    let digits: String = frac.chars().chain("000000000".chars()).take(9).collect();
    let nsec: i64 = digits.parse().ok()?;
    Some(match (neg, nsec) {
        (false, _) => (sec, nsec),
        (true, 0) => (-sec, 0),
        (true, n) => (-sec - 1, 1_000_000_000 - n),
    })
}

/// A member's attributes: the header, with PAX mtime, atime and xattrs when present.
pub(super) fn meta_of<R: Read>(entry: &mut tar::Entry<'_, R>) -> anyhow::Result<Meta> {
    let h = entry.header();
    let mut meta = Meta {
        mode: h.mode()? & 0o7777,
        uid: u32::try_from(h.uid()?).context("uid out of range")?,
        gid: u32::try_from(h.gid()?).context("gid out of range")?,
        mtime: (h.mtime()? as i64, 0),
        atime: None,
        xattrs: Vec::new(),
    };
    for rec in entry.pax_extensions()?.into_iter().flatten() {
        let rec = rec?;
        let (key, value) = (rec.key_bytes(), rec.value_bytes());
        match key {
            b"mtime" => meta.mtime = parse_pax_time(value).context("bad PAX mtime")?,
            b"atime" => meta.atime = parse_pax_time(value),
            _ => {
                if let Some(x) = key.strip_prefix(XATTR_KEY) {
                    meta.xattrs.push((x.to_vec(), value.to_vec()));
                }
            }
        }
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_count_their_own_length() {
        for vlen in [
            0, 1, 2, 5, 6, 7, 85, 86, 87, 88, 990, 991, 992, 993, 994, 995,
        ] {
            let mut out = Vec::new();
            pax_record(&mut out, b"k", &vec![b'v'; vlen]);
            let (len, _) = std::str::from_utf8(&out).unwrap().split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), out.len(), "value of {vlen}");
            assert!(out.ends_with(b"\n"));
        }
    }

    #[test]
    fn pax_times_round_trip() {
        for (s, ns) in [
            (0, 0),
            (1, 5),
            (1_700_000_000, 123_456_789),
            (-1, 0),
            (-2, 500_000_000),
        ] {
            assert_eq!(parse_pax_time(pax_time(s, ns).as_bytes()), Some((s, ns)));
        }
        assert_eq!(parse_pax_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(parse_pax_time(b"12.25"), Some((12, 250_000_000)));
        assert_eq!(parse_pax_time(b"x"), None);
    }
}
