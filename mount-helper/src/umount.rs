//! umount.fuse.asdfs: the helper umount(8) runs for a mount of type fuse.asdfs (the same
//! program as mount.fuse.asdfs, called by its other name). umount(8) then leaves the unmount
//! to the helper; this one runs `asdfs unmount DIR`, which asks the daemon for the final
//! flush and returns once the disk copy is complete and the daemon has exited, or fails if
//! the flush could not be written. Called as `umount.fuse.asdfs DIR [-flnrv] [-N NS]
//! [-t TYPE]`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

/// umount(8)'s call of a helper, as typed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Call {
    pub target: PathBuf,
    /// `-v`: say what is run.
    pub verbose: bool,
}

/// Whether this program was called as the umount helper.
pub fn called_as_umount(argv0: &std::ffi::OsStr) -> bool {
    std::path::Path::new(argv0)
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("umount."))
}

/// Parses umount(8)'s arguments. `-f`, `-l`, `-n`, `-r` and `-t` change nothing for asdfs:
/// its unmount always writes everything first, and files still open keep being served
/// until closed (as a lazy unmount would). Another mount namespace (`-N`) is refused.
pub fn parse(args: Vec<OsString>) -> Result<Call, String> {
    let mut call = Call::default();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy().into_owned();
        match s.as_str() {
            "-t" => {
                it.next();
            }
            "-N" => return Err("-N: unmounting in another mount namespace is not supported".into()),
            s if s.starts_with('-') && s.len() > 1 => {
                for c in s[1..].chars() {
                    match c {
                        'v' => call.verbose = true,
                        'f' | 'l' | 'n' | 'r' | 'i' => {}
                        c => return Err(format!("unknown flag -{c}")),
                    }
                }
            }
            _ if call.target.as_os_str().is_empty() => call.target = PathBuf::from(a),
            _ => return Err(format!("unexpected argument {s}")),
        }
    }
    if call.target.as_os_str().is_empty() {
        return Err("usage: umount.fuse.asdfs DIR [-flnrv] [-t TYPE]".into());
    }
    Ok(call)
}

/// The `asdfs unmount DIR` command for a call; `asdfs` is the program found.
pub fn command(asdfs: PathBuf, call: &Call) -> Command {
    let mut cmd = Command::new(asdfs);
    cmd.arg("unmount").arg(&call.target);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn umount_calls_parse() {
        let c = parse(args(&["/var/log", "-v", "-t", "fuse.asdfs"])).unwrap();
        assert_eq!(c.target, PathBuf::from("/var/log"));
        assert!(c.verbose);
        let c = parse(args(&["-lf", "/d"])).unwrap();
        assert_eq!(c.target, PathBuf::from("/d"));
        assert!(!c.verbose);
        assert!(parse(args(&["/d", "-N", "/proc/1/ns/mnt"])).is_err());
        assert!(parse(args(&["-v"])).is_err());
        assert!(parse(args(&["/a", "/b"])).is_err());
    }

    #[test]
    fn called_by_either_name() {
        assert!(called_as_umount("/sbin/umount.fuse.asdfs".as_ref()));
        assert!(!called_as_umount("/sbin/mount.fuse.asdfs".as_ref()));
        assert!(!called_as_umount("mount-fuse-asdfs".as_ref()));
    }
}
