//! POSIX ACLs as the kernel stores them in `system.posix_acl_*` xattrs, and the rules tmpfs
//! follows for them: inheritance of a directory's default ACL on create, keeping the access
//! ACL and the mode bits in step on chmod and on setting an ACL (design.md §9).

use crate::error::{Errno, FsResult};

pub const ACCESS: &str = "system.posix_acl_access";
pub const DEFAULT: &str = "system.posix_acl_default";

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// One ACL entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AclEntry {
    pub tag: u16,
    pub perm: u16,
    pub id: u32,
}

/// Parses the xattr form of an ACL.
pub fn parse(bytes: &[u8]) -> FsResult<Vec<AclEntry>> {
    if bytes.len() < 4 || (bytes.len() - 4) % 8 != 0 {
        return Err(Errno::EINVAL);
    }
    if u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) != VERSION {
        return Err(Errno::EOPNOTSUPP);
    }
    let entries: Vec<AclEntry> = bytes[4..]
        .chunks_exact(8)
        .map(|c| AclEntry {
            tag: u16::from_le_bytes([c[0], c[1]]),
            perm: u16::from_le_bytes([c[2], c[3]]),
            id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    validate(&entries)?;
    Ok(entries)
}

/// The xattr form of an ACL.
pub fn encode(acl: &[AclEntry]) -> Vec<u8> {
    let mut out = VERSION.to_le_bytes().to_vec();
    for e in acl {
        out.extend_from_slice(&e.tag.to_le_bytes());
        out.extend_from_slice(&e.perm.to_le_bytes());
        out.extend_from_slice(&e.id.to_le_bytes());
    }
    out
}

fn validate(acl: &[AclEntry]) -> FsResult<()> {
    let count = |t| acl.iter().filter(|e| e.tag == t).count();
    if acl.is_empty() {
        return Ok(());
    }
    let named = count(USER) + count(GROUP);
    let ok = count(USER_OBJ) == 1
        && count(GROUP_OBJ) == 1
        && count(OTHER) == 1
        && count(MASK) <= 1
        && (named == 0 || count(MASK) == 1)
        && acl.iter().all(|e| {
            e.perm & !7 == 0 && matches!(e.tag, USER_OBJ | USER | GROUP_OBJ | GROUP | MASK | OTHER)
        });
    if ok { Ok(()) } else { Err(Errno::EINVAL) }
}

/// The mode bits an ACL implies, and whether the ACL says more than the mode can
/// (posix_acl_equiv_mode).
pub fn equiv_mode(acl: &[AclEntry], mode: u32) -> (u32, bool) {
    let mut bits = 0u32;
    let mut not_equiv = false;
    let mut mask = None;
    for e in acl {
        let p = u32::from(e.perm & 7);
        match e.tag {
            USER_OBJ => bits |= p << 6,
            GROUP_OBJ => bits |= p << 3,
            OTHER => bits |= p,
            MASK => {
                mask = Some(p);
                not_equiv = true;
            }
            _ => not_equiv = true,
        }
    }
    if let Some(m) = mask {
        bits = (bits & !0o070) | (m << 3);
    }
    ((mode & !0o777) | bits, not_equiv)
}

/// The access ACL after chmod to `mode` (posix_acl_chmod).
pub fn chmod(acl: &mut [AclEntry], mode: u32) {
    let has_mask = acl.iter().any(|e| e.tag == MASK);
    for e in acl.iter_mut() {
        match e.tag {
            USER_OBJ => e.perm = ((mode >> 6) & 7) as u16,
            OTHER => e.perm = (mode & 7) as u16,
            MASK => e.perm = ((mode >> 3) & 7) as u16,
            GROUP_OBJ if !has_mask => e.perm = ((mode >> 3) & 7) as u16,
            _ => {}
        }
    }
}

/// What a new node gets from its directory's default ACL (posix_acl_create).
#[derive(Debug, PartialEq, Eq)]
pub struct Inherited {
    pub mode: u32,
    /// `system.posix_acl_access` of the new node, when it says more than the mode.
    pub access: Option<Vec<u8>>,
    /// `system.posix_acl_default` of a new directory.
    pub default: Option<Vec<u8>>,
}

/// Mode and ACLs of a new node, given the directory's default ACL (if any), the mode the
/// program asked for and its umask.
pub fn inherit(dir_default: Option<&[u8]>, mode: u32, umask: u32, is_dir: bool) -> Inherited {
    let parsed = dir_default
        .and_then(|b| parse(b).ok())
        .filter(|a| !a.is_empty());
    let Some(default) = parsed else {
        return Inherited {
            mode: mode & !(umask & 0o777),
            access: None,
            default: None,
        };
    };
    let mut acl = default.clone();
    let mut m = mode & 0o777;
    let mut not_equiv = false;
    for e in acl.iter_mut() {
        match e.tag {
            USER_OBJ => {
                e.perm &= ((m >> 6) & 7) as u16;
                m &= (u32::from(e.perm) << 6) | !0o700;
            }
            USER | GROUP => not_equiv = true,
            OTHER => {
                e.perm &= (m & 7) as u16;
                m &= u32::from(e.perm) | !0o007;
            }
            MASK => not_equiv = true,
            _ => {}
        }
    }
    let group_tag = if acl.iter().any(|e| e.tag == MASK) {
        MASK
    } else {
        GROUP_OBJ
    };
    if let Some(g) = acl.iter_mut().find(|e| e.tag == group_tag) {
        g.perm &= ((m >> 3) & 7) as u16;
        m &= (u32::from(g.perm) << 3) | !0o070;
    }
    Inherited {
        mode: (mode & !0o777) | m,
        access: not_equiv.then(|| encode(&acl)),
        default: is_dir.then(|| encode(&default)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(tag: u16, perm: u16, id: u32) -> AclEntry {
        AclEntry { tag, perm, id }
    }

    const U: u32 = u32::MAX;

    #[test]
    fn no_default_acl_applies_umask() {
        let got = inherit(None, 0o666, 0o022, false);
        assert_eq!(
            got,
            Inherited {
                mode: 0o644,
                access: None,
                default: None
            }
        );
    }

    #[test]
    fn default_acl_replaces_umask_and_masks_with_mode() {
        // setfacl -d -m u:1000:rwx on a 0755 directory.
        let d = encode(&[
            e(USER_OBJ, 7, U),
            e(USER, 7, 1000),
            e(GROUP_OBJ, 5, U),
            e(MASK, 7, U),
            e(OTHER, 5, U),
        ]);
        let got = inherit(Some(&d), 0o666, 0o077, false);
        // umask ignored; mask limited by the group bits of the requested mode (rw-).
        assert_eq!(got.mode, 0o666 & 0o664);
        let acl = parse(got.access.as_ref().unwrap()).unwrap();
        assert_eq!(acl.iter().find(|x| x.tag == MASK).unwrap().perm, 6);
        assert_eq!(acl.iter().find(|x| x.tag == USER).unwrap().perm, 7);
        assert!(got.default.is_none());
        let dir = inherit(Some(&d), 0o777, 0o077, true);
        assert_eq!(dir.default.as_deref(), Some(d.as_slice()));
        assert_eq!(dir.mode, 0o775);
    }

    #[test]
    fn minimal_default_acl_gives_no_access_acl() {
        let d = encode(&[e(USER_OBJ, 7, U), e(GROUP_OBJ, 0, U), e(OTHER, 0, U)]);
        let got = inherit(Some(&d), 0o666, 0o022, false);
        assert_eq!(
            got,
            Inherited {
                mode: 0o600,
                access: None,
                default: None
            }
        );
    }

    #[test]
    fn chmod_and_equiv_mode_agree() {
        let mut acl = vec![
            e(USER_OBJ, 7, U),
            e(USER, 5, 7),
            e(GROUP_OBJ, 5, U),
            e(MASK, 7, U),
            e(OTHER, 0, U),
        ];
        chmod(&mut acl, 0o640);
        assert_eq!(equiv_mode(&acl, 0o100000), (0o100640, true));
        assert_eq!(acl[2].perm, 5, "group_obj untouched when a mask exists");
        let minimal = [e(USER_OBJ, 6, U), e(GROUP_OBJ, 4, U), e(OTHER, 4, U)];
        assert_eq!(equiv_mode(&minimal, 0o4000), (0o4644, false));
    }

    #[test]
    fn malformed_acls_are_rejected() {
        assert_eq!(parse(&[1, 2, 3]), Err(Errno::EINVAL));
        let named_without_mask = encode(&[
            e(USER_OBJ, 7, U),
            e(USER, 5, 7),
            e(GROUP_OBJ, 5, U),
            e(OTHER, 0, U),
        ]);
        assert_eq!(parse(&named_without_mask), Err(Errno::EINVAL));
        let bad_perm = encode(&[e(USER_OBJ, 9, U), e(GROUP_OBJ, 5, U), e(OTHER, 0, U)]);
        assert_eq!(parse(&bad_perm), Err(Errno::EINVAL));
    }
}
