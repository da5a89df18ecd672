//! mount(8)'s call of a helper, as typed (`SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS] [-t TYPE]`),
//! and its translation into `asdfs mount` arguments. Pure: no I/O, so every rule is tested
//! here without mounting anything.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

/// The asdfs options `-o` accepts, with the `asdfs mount` flag each becomes.
pub const ASDFS_OPTIONS: [(&str, &str); 7] = [
    ("flush_interval", "--flush-interval"),
    ("fsync", "--fsync"),
    ("volatile", "--volatile"),
    ("backups", "--backups"),
    ("backup_limit", "--backup-limit"),
    ("mode", "--mode"),
    ("hardlink_check", "--hardlink-check"),
];

/// `noatime` and `relatime` choose how access times are kept (`asdfs mount --atime`).
const ATIME_OPTIONS: [&str; 2] = ["noatime", "relatime"];

/// mount(8)'s and systemd's generic options that mean nothing to asdfs (asdfs mounts are
/// read-write until remounted, and are started by the helper itself).
const IGNORED: [&str; 25] = [
    "defaults",
    "rw",
    "auto",
    "noauto",
    "nofail",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "_netdev",
    "async",
    "atime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "lazytime",
    "nolazytime",
    "diratime",
    "nodiratime",
    "dev",
    "suid",
    "exec",
    "silent",
    "loud",
];

/// Prefixes of options kept by mount(8) or systemd for themselves (`x-systemd.*`,
/// `comment=systemd.*`, `user=NAME` and `uhelper=` in utab).
const IGNORED_PREFIXES: [&str; 4] = ["x-", "comment=", "user=", "uhelper="];

/// How mount(8) called the helper.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Invocation {
    pub source: OsString,
    pub mount_point: PathBuf,
    /// `-s`: ignore unknown options instead of failing.
    pub sloppy: bool,
    /// `-f`: mount(8)'s "fake": check everything, mount nothing.
    pub fake: bool,
    /// `-v`: say what is run.
    pub verbose: bool,
    /// `-n`: do not write /etc/mtab (asdfs never does).
    pub no_mtab: bool,
    /// The `-o` lists, split into single options, in order.
    pub options: Vec<String>,
}

/// What to run for an invocation.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Options of `asdfs mount`, each one word `--flag=VALUE`: a value that starts with `-`
    /// stays a value.
    pub asdfs_args: Vec<String>,
    /// `-o foreground`: serve in this process until unmounted.
    pub foreground: bool,
    /// `-o volatile=` was given.
    pub has_volatile: bool,
    /// `nosuid`, `nodev`, `noexec` asked for, applied to the mount once it is live.
    pub restrict: Vec<&'static str>,
    /// Unknown options dropped because of `-s`.
    pub ignored: Vec<String>,
    /// `-o remount`: `Some(true)` to make the mount read-only, `Some(false)` writable.
    pub remount: Option<bool>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    Usage(String),
    Unknown(String),
    NeedsValue(&'static str),
    ReadOnly,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(m) => write!(
                f,
                "{m}\nusage: mount.fuse.asdfs DIR DIR [-sfnv] [-o OPTIONS] (normally run by mount -t fuse.asdfs)"
            ),
            Error::Unknown(o) => write!(
                f,
                "unknown option \"{o}\" (asdfs options: {}, foreground, force)",
                option_names()
            ),
            Error::NeedsValue(o) => write!(f, "option \"{o}\" needs a value: {o}=..."),
            Error::ReadOnly => write!(
                f,
                "read-only mounts are not supported: asdfs keeps a writable copy in RAM (remove \"ro\")"
            ),
        }
    }
}

fn option_names() -> String {
    ASDFS_OPTIONS.map(|(name, _)| name).join(", ")
}

/// Reads mount(8)'s arguments: two positionals, single-letter flags (alone or combined),
/// `-o LIST` or `-oLIST` (repeatable), `-t TYPE`.
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Invocation, Error> {
    let mut inv = Invocation::default();
    let mut positional = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let Some(s) = arg.to_str().filter(|s| s.starts_with('-') && s.len() > 1) else {
            positional.push(arg);
            continue;
        };
        match s {
            "--" => positional.extend(args.by_ref()),
            "-o" => inv.options.extend(split_options(&utf8(args.next(), "-o")?)),
            "-t" => check_type(&utf8(args.next(), "-t")?)?,
            _ if s.starts_with("-o") => inv.options.extend(split_options(&s[2..])),
            _ => flags(&mut inv, &s[1..])?,
        }
    }
    let [source, mount_point]: [OsString; 2] = positional.try_into().map_err(|p: Vec<_>| {
        Error::Usage(format!(
            "expected SOURCE and MOUNTPOINT, got {} arguments",
            p.len()
        ))
    })?;
    inv.source = source;
    inv.mount_point = PathBuf::from(mount_point);
    Ok(inv)
}

fn utf8(v: Option<OsString>, flag: &str) -> Result<String, Error> {
    let v = v.ok_or_else(|| Error::Usage(format!("{flag} needs a value")))?;
    v.into_string()
        .map_err(|_| Error::Usage(format!("the value of {flag} is not UTF-8")))
}

fn check_type(t: &str) -> Result<(), Error> {
    match t {
        "fuse.asdfs" | "asdfs" => Ok(()),
        _ => Err(Error::Usage(format!(
            "this helper mounts fuse.asdfs, not {t}"
        ))),
    }
}

fn flags(inv: &mut Invocation, letters: &str) -> Result<(), Error> {
    for c in letters.chars() {
        match c {
            's' => inv.sloppy = true,
            'f' => inv.fake = true,
            'v' => inv.verbose = true,
            'n' => inv.no_mtab = true,
            _ => return Err(Error::Usage(format!("unknown flag -{c}"))),
        }
    }
    Ok(())
}

/// Splits a `-o` list at commas outside double quotes (`volatile="/a,b"`), dropping the
/// quotes, as libmount writes them.
pub fn split_options(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in list.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.extend((!cur.is_empty()).then(|| std::mem::take(&mut cur))),
            _ => cur.push(c),
        }
    }
    out.extend((!cur.is_empty()).then_some(cur));
    out
}

/// Turns the options into `asdfs mount` arguments; the values themselves are checked by
/// asdfs, which names the accepted ones.
pub fn plan(inv: &Invocation) -> Result<Plan, Error> {
    if let Some(p) = remount_plan(inv) {
        return Ok(p);
    }
    let mut plan = Plan::default();
    for opt in &inv.options {
        let (name, value) = match opt.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (opt.as_str(), None),
        };
        if let Some(&(key, flag)) = ASDFS_OPTIONS.iter().find(|(n, _)| *n == name) {
            let value = value
                .filter(|v| !v.is_empty())
                .ok_or(Error::NeedsValue(key))?;
            plan.asdfs_args.push(format!("{flag}={value}"));
            plan.has_volatile |= key == "volatile";
        } else if let Some(flag) = ["nosuid", "nodev", "noexec"]
            .into_iter()
            .find(|f| *f == opt)
        {
            plan.restrict.push(flag);
        } else if let Some(a) = ATIME_OPTIONS.into_iter().find(|a| *a == opt) {
            plan.asdfs_args
                .extend(["--atime".to_string(), a.to_string()]);
        } else if opt == "foreground" {
            plan.foreground = true;
        } else if opt == "force" {
            plan.asdfs_args.push("--force".into());
        } else if opt == "ro" {
            return Err(Error::ReadOnly);
        } else if IGNORED.contains(&opt.as_str())
            || IGNORED_PREFIXES.iter().any(|p| opt.starts_with(p))
        {
        } else if inv.sloppy {
            plan.ignored.push(opt.clone());
        } else {
            return Err(Error::Unknown(opt.clone()));
        }
    }
    Ok(plan)
}

/// A remount: mount(8) passes the mount's current options with its own (`ro,noatime,
/// remount,user_id=0,...`); only `ro`/`rw` change anything, the last one given winning.
fn remount_plan(inv: &Invocation) -> Option<Plan> {
    if !inv.options.iter().any(|o| o == "remount") {
        return None;
    }
    let ro = inv
        .options
        .iter()
        .rev()
        .find_map(|o| match o.as_str() {
            "ro" => Some(true),
            "rw" => Some(false),
            _ => None,
        })
        .unwrap_or(false);
    Some(Plan {
        remount: Some(ro),
        ..Plan::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<OsString> {
        s.iter().map(OsString::from).collect()
    }

    fn plan_of(s: &[&str]) -> Result<Plan, Error> {
        plan(&parse_args(args(s))?)
    }

    #[test]
    fn relatime_and_noatime_choose_access_times() {
        let p = plan_of(&["/a", "/a", "-o", "relatime"]).unwrap();
        assert_eq!(p.asdfs_args, ["--atime", "relatime"]);
    }

    #[test]
    fn a_remount_is_read_only_or_writable_and_ignores_the_rest() {
        let p = plan_of(&[
            "/a",
            "/a",
            "-o",
            "ro,noatime,remount,user_id=0,group_id=0,default_permissions,allow_other",
        ])
        .unwrap();
        assert_eq!(p.remount, Some(true));
        assert!(p.asdfs_args.is_empty());
        let p = plan_of(&["/a", "/a", "-o", "ro,remount", "-o", "rw"]).unwrap();
        assert_eq!(p.remount, Some(false));
        assert_eq!(plan_of(&["/a", "/a", "-o", "ro"]), Err(Error::ReadOnly));
    }

    #[test]
    fn mount8_call_is_read() {
        let inv = parse_args(args(&[
            "/var/log",
            "/var/log",
            "-nv",
            "-o",
            "rw,flush_interval=15min",
            "-obackups=no",
            "-t",
            "fuse.asdfs",
        ]))
        .unwrap();
        assert_eq!(inv.source, OsString::from("/var/log"));
        assert_eq!(inv.mount_point, PathBuf::from("/var/log"));
        assert!(inv.no_mtab && inv.verbose && !inv.fake && !inv.sloppy);
        assert_eq!(inv.options, ["rw", "flush_interval=15min", "backups=no"]);
    }

    #[test]
    fn asdfs_options_become_flags() {
        let p = plan_of(&[
            "/a",
            "/a",
            "-o",
            "flush_interval=15min,fsync=sync,volatile=\"/run/x,y\",backups=no,backup_limit=3,mode=fuse",
        ])
        .unwrap();
        assert_eq!(
            p.asdfs_args,
            [
                "--flush-interval=15min",
                "--fsync=sync",
                "--volatile=/run/x,y",
                "--backups=no",
                "--backup-limit=3",
                "--mode=fuse"
            ]
        );
        assert!(p.has_volatile && !p.foreground);
    }

    #[test]
    fn force_and_the_hardlink_check_become_flags() {
        let p = plan_of(&["/a", "/a", "-o", "hardlink_check=no,force"]).unwrap();
        assert_eq!(p.asdfs_args, ["--hardlink-check=no", "--force"]);
    }

    #[test]
    fn values_that_start_with_a_dash_stay_values() {
        let p = plan_of(&["/a", "/a", "-o", "volatile=--help,backup_limit=-1"]).unwrap();
        assert_eq!(p.asdfs_args, ["--volatile=--help", "--backup-limit=-1"]);
    }

    #[test]
    fn generic_options_are_ignored_and_restrictions_kept() {
        let p = plan_of(&[
            "/a",
            "/a",
            "-o",
            "defaults,rw,noatime,nofail,_netdev,user,users,x-systemd.requires=/srv,comment=systemd.automount,noexec,nosuid,nodev,foreground",
        ])
        .unwrap();
        assert_eq!(p.asdfs_args, ["--atime", "noatime"]);
        assert_eq!(p.restrict, ["noexec", "nosuid", "nodev"]);
        assert!(p.foreground);
    }

    #[test]
    fn unknown_options_are_refused_unless_sloppy() {
        let e = plan_of(&["/a", "/a", "-o", "flush_interval=1h,size=1G"]).unwrap_err();
        assert_eq!(e, Error::Unknown("size=1G".into()));
        assert_eq!(
            e.to_string(),
            "unknown option \"size=1G\" (asdfs options: flush_interval, fsync, volatile, backups, backup_limit, mode, hardlink_check, foreground, force)"
        );
        let p = plan_of(&["/a", "/a", "-s", "-o", "size=1G"]).unwrap();
        assert_eq!(p.ignored, ["size=1G"]);
    }

    #[test]
    fn bad_calls_are_usage_errors() {
        assert_eq!(plan_of(&["/a", "/a", "-o", "ro"]), Err(Error::ReadOnly));
        assert_eq!(
            plan_of(&["/a", "/a", "-o", "fsync"]),
            Err(Error::NeedsValue("fsync"))
        );
        assert!(matches!(parse_args(args(&["/a"])), Err(Error::Usage(_))));
        assert!(matches!(
            parse_args(args(&["/a", "/a", "-x"])),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            parse_args(args(&["/a", "/a", "-t", "ext4"])),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            parse_args(args(&["/a", "/a", "-o"])),
            Err(Error::Usage(_))
        ));
    }

    #[test]
    fn fake_and_double_dash() {
        let inv = parse_args(args(&["-f", "--", "-odd", "/b"])).unwrap();
        assert!(inv.fake);
        assert_eq!(inv.source, OsString::from("-odd"));
    }
}
