//! The checks of a target against this machine, made before anything is created for it: it
//! exists, is a directory, and is not part of a kernel's pseudo filesystem (`/proc`, `/sys`,
//! cgroups, ...), whose directories hold no files to keep and whose parents are no place
//! for asdfs's directory beside the target (`/proc` would get `/.proc-asdfs`). `validate`
//! stays pure; `asdfs config check` and `asdfs mount` call `check_usable` for each target.

use std::path::Path;

/// Kernel filesystems that are views of the kernel's state, not stored files (statfs(2)
/// magic numbers, linux/magic.h), with their names for messages.
const PSEUDO_FILESYSTEMS: [(i64, &str); 19] = [
    (0x9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x1cd1, "devpts"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7363_6673, "securityfs"),
    (0x0027_e0eb, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0xcafe_4a11, "bpf"),
    (0x6265_6570, "configfs"),
    (0x6573_5543, "fusectl"),
    (0x6165_676c, "pstore"),
    (0xde5e_81e4, "efivarfs"),
    (0xf97c_ff8c, "selinuxfs"),
    (0x4341_5d53, "smackfs"),
    (0x4249_4e4d, "binfmt_misc"),
    (0x6e73_6673, "nsfs"),
    (0x1980_0202, "mqueue"),
    (0x0187, "autofs"),
];

/// Whether `target` can be kept in RAM here: an existing directory on a filesystem that
/// stores files. A target whose asdfs daemon died (its mount answers ENOTCONN) passes: the
/// daemon clears the dead mount and checks again.
pub fn check_usable(target: &Path) -> Result<(), String> {
    let shown = target.display();
    match crate::fsx::trusted::metadata(target) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(format!("{shown}: not a directory")),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            return Err(format!("{shown}: no such directory"));
        }
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED)) => {
            return Ok(());
        }
        Err(e) => return Err(format!("{shown}: {e}")),
    }
    check_stores_files(target)
}

/// The kernel's own places: whatever is mounted below them (a tmpfs holding cgroup
/// mounts) is the kernel's too.
const KERNEL_PLACES: [&str; 2] = ["/proc", "/sys"];

/// Refuses a target on a kernel pseudo filesystem or below `/proc` or `/sys` (a target that
/// cannot be resolved or statfs'ed passes: the mount's own checks report it).
pub fn check_stores_files(target: &Path) -> Result<(), String> {
    let real = crate::fsx::trusted::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
    if let Some(place) = KERNEL_PLACES.iter().find(|p| real.starts_with(p)) {
        return Err(format!(
            "{}: is in {place}, the kernel's, with no files to keep in RAM",
            target.display()
        ));
    }
    let Ok(st) = nix::sys::statfs::statfs(target) else {
        return Ok(());
    };
    #[allow(clippy::unnecessary_cast)] // statfs's type is 32 bits wide on some targets
    let magic = st.filesystem_type().0 as i64;
    match PSEUDO_FILESYSTEMS.iter().find(|(m, _)| *m == magic) {
        Some((_, name)) => Err(format!(
            "{}: is on {name}, a kernel filesystem (the kernel's), with no files to keep in RAM",
            target.display()
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests set up files as a user would
mod tests {
    use super::*;

    #[test]
    fn only_existing_directories_that_store_files_are_usable() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(check_usable(dir.path()), Ok(()));
        let file = dir.path().join("f");
        std::fs::write(&file, b"").unwrap();
        let shown = file.display();
        assert_eq!(
            check_usable(&file),
            Err(format!("{shown}: not a directory"))
        );
        let gone = dir.path().join("gone");
        let shown = gone.display();
        assert_eq!(
            check_usable(&gone),
            Err(format!("{shown}: no such directory"))
        );
        for pseudo in ["/proc", "/sys", "/proc/self", "/sys/fs/cgroup"] {
            let e = check_usable(Path::new(pseudo)).unwrap_err();
            assert!(e.contains("the kernel's"), "{e}");
        }
        let e = check_usable(Path::new("/dev/pts")).unwrap_err();
        assert!(e.contains("is on devpts, a kernel filesystem"), "{e}");
    }
}
