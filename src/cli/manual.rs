//! `asdfs manpages DIR` (run by scripts/install): the manual. Synopsis and options come from
//! the clap definitions; what a person needs beyond them (asd.conf, crash recovery, exit
//! status, files) is written here. Every page named under SEE ALSO is one that is
//! installed: these, mount.fuse.asdfs(8) and asdfs.systemd(7).

use super::out::outln;
use clap::CommandFactory;
use std::path::Path;

/// The pages every page points to.
const SEE_ALSO_ALL: &str = "asdfs(1), asd(1), asdfs.toml(5), asdfs.systemd(7), mount.fuse.asdfs(8)";

pub fn write_all(dir: &Path) -> anyhow::Result<i32> {
    crate::fsx::trusted::create_dir_all(dir)?;
    let top = super::Cli::command();
    for (name, page) in asdfs_pages(&top, "asdfs")? {
        crate::fsx::trusted::write(dir.join(format!("{name}.1")), page)?;
    }
    for name in ["asd", "anything-sync-daemon"] {
        crate::fsx::trusted::write(dir.join(format!("{name}.1")), asd_page(name)?)?;
    }
    crate::fsx::trusted::write(dir.join("asdfs.toml.5"), TOML_PAGE)?;
    outln!("man pages written to {}", dir.display());
    Ok(0)
}

/// `cmd`'s page and, one per visible subcommand (recursively), `NAME-SUB`'s.
fn asdfs_pages(cmd: &clap::Command, name: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let cmd = cmd
        .clone()
        .name(name.to_string())
        .display_name(name.to_string());
    let mut pages = Vec::new();
    for sub in pages_of(&cmd) {
        pages.extend(asdfs_pages(sub, &format!("{name}-{}", sub.get_name()))?);
    }
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    if pages_of(&cmd).next().is_some() {
        out.extend_from_slice(b".SH SUBCOMMANDS\n");
        for sub in pages_of(&cmd) {
            let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            let line = format!(".TP\n{name}\\-{}(1)\n{}\n", sub.get_name(), roff(&about));
            out.extend_from_slice(line.as_bytes());
        }
    }
    if name == "asdfs" {
        out.extend_from_slice(ASDFS_SECTIONS.as_bytes());
    } else {
        out.extend_from_slice(b".SH \"EXIT STATUS\"\n0 done; 1 failed (the message says what and where); 2 bad usage.\n");
    }
    out.extend_from_slice(see_also(name).as_bytes());
    pages.push((name.to_string(), out));
    Ok(pages)
}

/// The subcommands with a page: not hidden, not clap's `help`.
fn pages_of(cmd: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

fn see_also(name: &str) -> String {
    let others: Vec<&str> = SEE_ALSO_ALL
        .split(", ")
        .filter(|p| p.strip_suffix("(1)") != Some(name))
        .collect();
    format!(".SH \"SEE ALSO\"\n{}\n", others.join(", "))
}

/// asd's page, under `name` (asd or anything-sync-daemon): the verbs, asd.conf, crash
/// recovery, exit status and files, so that a user of asd needs no other page.
fn asd_page(name: &str) -> anyhow::Result<Vec<u8>> {
    let cmd = super::asd::AsdCli::command()
        .name(name.to_string())
        .display_name(name.to_string());
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    out.extend_from_slice(b".SH COMMANDS\n");
    for sub in cmd.get_subcommands() {
        let mut names = vec![sub.get_name().to_string()];
        names.extend(sub.get_visible_aliases().map(str::to_string));
        out.extend_from_slice(format!(".TP\n.B {}\n", roff(&names.join(", "))).as_bytes());
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            out.extend_from_slice(format!("{}\n", roff(&about.to_string())).as_bytes());
        }
        for a in sub.get_arguments().filter(|a| a.get_long().is_some()) {
            if a.get_id() == "help" {
                continue;
            }
            let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
            let long = a.get_long().unwrap_or_default();
            out.extend_from_slice(
                format!(".RS\n.TP\n.B \\-\\-{long}\n{}\n.RE\n", roff(&help)).as_bytes(),
            );
        }
    }
    out.extend_from_slice(ASD_SECTIONS.as_bytes());
    out.extend_from_slice(see_also(name).as_bytes());
    Ok(out)
}

/// Text as roff: a leading `.` or `'` and every `-` and `\` escaped.
fn roff(text: &str) -> String {
    let s = text.replace('\\', "\\e").replace('-', "\\-");
    s.lines()
        .map(|l| {
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

const ASDFS_SECTIONS: &str = r#".SH "QUICK START"
.nf
asdfs mount /var/log          # /var/log is now served from RAM
asdfs status                  # what is in RAM and not yet on disk
asdfs flush \-\-all             # write every mount back now
asdfs unmount /var/log        # final write, then unmount
.fi
.SH "EXIT STATUS"
.TP
.B 0
done.
.TP
.B 1
failed: the message says what and where. A flush that failed leaves the changes in RAM.
.TP
.B 2
bad usage (an unknown option, a missing argument).
.SH FILES
.TP
.B /etc/asdfs.toml, ~/.config/asdfs/asdfs.toml
the configuration of root and of users: see asdfs.toml(5).
.TP
.B /etc/asd.conf
anything\-sync\-daemon's configuration, read by asd(1) and by \-\-config.
.TP
.B /run/asdfs/KEY/, $XDG_RUNTIME_DIR/asdfs/KEY/
the RAM store of a target (on tmpfs) and its control socket.
.TP
.B /PARENT/.NAME\-asdfs/
beside each target: the flush journal and staging area; removed by a clean unmount.
.TP
.B /PARENT/.NAME\-backup_asd\-old, /PARENT/.NAME\-backup_asd\-crashrecovery\-DATE.tar.zstd
asd's safety nets (\-\-backups yes): the hardlink copy of the session start, and crash snapshots.
.SH LOGGING
The daemon logs to the journal when there is one (SYSLOG_IDENTIFIER=asdfs, with the fields
ASDFS_TARGET, ASDFS_GENERATION and ASDFS_PHASE; \fBjournalctl \-t asdfs\fR), else to syslog.
A daemon started with ASDFS_LOG_FILE=1 also keeps VOLATILE/asdfs/daemon.log (mode 0600, on
tmpfs: gone after a reboot). ASDFS_LOG sets the level (error, warn, info, debug).
"#;

const ASD_SECTIONS: &str = r#".SH "SWITCHING FROM ANYTHING-SYNC-DAEMON"
Install asdfs, stop asd (\fBsystemctl stop asd asd\-resync.timer\fR), and start it again:
asdfs's asd.service, asd\-resync.service and asd\-resync.timer have the same names and read
the same /etc/asd.conf. Nothing in the targets has to change. Differences: the directory is
not copied to RAM at start (files are read when first opened), there is no bind mount and no
\&.flagged file, a resync writes only what changed, files held open across \fBunsync\fR are not
lost, and every verb exits non\-zero when it did not do its job.
.SH "CONFIGURATION (asd.conf)"
/etc/asd.conf (or the file named by $ASDCONF) is read, never run: it may only set these
variables, one per line; anything else is an error naming the file and line, and nothing is
mounted. Without /etc/asd.conf and $ASDCONF, /etc/asdfs.toml is read (asdfs.toml(5)).
.TP
.B WHATTOSYNC=('/var/log' '/srv/http' ...)
the directories to keep in RAM: absolute paths, one or more per line, quoted when they hold
spaces. Required.
.TP
.B VOLATILE="/tmp"
where the RAM stores live (VOLATILE/asdfs/). It must be tmpfs, ramfs or zram; if it is not
(a /tmp on disk), asdfs mounts a private tmpfs there for its stores, so the RAM copy is never
on disk. A target may not lie inside it: with asd's default /tmp, set VOLATILE=/run for
targets under /tmp.
.TP
.B USE_OVERLAYFS="no"
yes: the kernel's overlayfs serves the targets, with only the changed files in RAM (asdfs
\-\-mode overlay). Truthy values, as asd: y, yes, true, t, on, 1, enabled, enable, use.
.TP
.B USE_BACKUPS="yes"
keep asd's safety nets: .NAME\-backup_asd\-old, a hardlink copy of the disk copy at session
start, and crash snapshots.
.TP
.B BACKUP_LIMIT=5
how many crash snapshots to keep per target (a number).
.TP
.B ENABLE_HARDLINK_SAFETY_CHECK=1
1: refuse to mount a target holding a file with hard links outside it, which a flush would
split (asdfs \-\-hardlink\-check); 0: mount anyway.
.TP
.B DEBUG
accepted and ignored; set ASDFS_LOG=debug for details.
.SH "CRASH RECOVERY"
What asd does after a crash, and what asdfs does instead:
.IP 1. 4
asd: the next \fBasd sync\fR sees the ungraceful state ("Ungraceful state detected for DIR
so fixing"), packs .NAME\-backup_asd\-old (the state at session start) into
\&.NAME\-backup_asd\-crashrecovery\-DATE.tar.zstd and starts a new session from the disk copy,
which holds the state of the last hourly resync.
.IP 2. 4
asdfs, daemon killed: the RAM store survives on tmpfs. \fBasd sync\fR (or systemd restarting
asd.service) takes it over and writes it to disk; \fBasd unsync\fR does the same and stops.
Nothing written before the kill is lost.
.IP 3. 4
asdfs, power loss or reboot: the disk holds the state of the last complete flush, never a
torn file; a crash snapshot .NAME\-backup_asd\-crashrecovery\-DATE.tar.zstd is made of the
last flushed state (USE_BACKUPS=yes).
.IP 4. 4
To look at or restore a snapshot: \fBasdfs snapshots list\fR, then \fBasdfs snapshots restore
FILE\fR (into the target, which must not be in RAM; \fB\-\-to DIR\fR restores elsewhere,
\fB\-\-force\fR keeps the replaced content as DIR.before\-restore\-DATE). \fBasd c\fR deletes all
snapshots of every target.
.SH "EXIT STATUS"
.TP
.B 0
done; also \fBsync\fR when everything is already in RAM, and \fBresync\fR and \fBunsync\fR when
nothing is in RAM (asd's "ASD is not running"), so that cron jobs and asd\-resync.timer do not fail.
.TP
.B 1
failed: a target could not be mounted, written to disk or unmounted (the message names it;
the others are still done), or the configuration is wrong (the message names file and line).
asd exits 1, or rsync's own status (11, 24), in these cases.
.TP
.B 2
bad usage.
.SH FILES
.TP
.B /etc/asd.conf
the configuration ($ASDCONF names another).
.TP
.B /usr/lib/systemd/system/asd.service, asd\-resync.service, asd\-resync.timer
the units: asd.service serves the targets (asd sync \-\-foreground), the timer resyncs hourly.
.TP
.B /run/asdfs/
the RAM stores, the lock that serializes verbs, and the list of synced targets.
.TP
.B /PARENT/.NAME\-backup_asd\-old, /PARENT/.NAME\-backup_asd\-crashrecovery\-DATE.tar.zstd
the hardlink copy of the session start and the crash snapshots, as asd names them.
.SH ENVIRONMENT
.TP
.B ASDCONF
the configuration file (default /etc/asd.conf).
.TP
.B ASDFS_LOG
log level: error, warn, info (default), debug.
"#;

const TOML_PAGE: &str = r#".TH ASDFS.TOML 5 "" "asdfs" "asdfs"
.SH NAME
asdfs.toml \- asdfs's configuration: the directories to keep in RAM and how
.SH SYNOPSIS
/etc/asdfs.toml (root), ~/.config/asdfs/asdfs.toml (users; $XDG_CONFIG_HOME is respected)
.SH DESCRIPTION
A TOML file with an optional \fB[defaults]\fR table and one \fB[[target]]\fR table per
directory. Every key but a target's \fBpath\fR is optional; a target's key overrides the
default, and a command\-line option of \fBasdfs mount\fR overrides both. Unknown keys and bad
values are errors at FILE:LINE:COLUMN; \fBasdfs config check\fR prints what the file resolves
to, \fBasdfs config import /etc/asd.conf \-o FILE\fR writes one from asd.conf.
.SH KEYS
.TP
.B path = "/var/log"
(target only) the directory: absolute, no trailing slash.
.TP
.B flush_interval = "5min"
how often changes are written to disk: "30s", "5min", "1h", or a number of seconds.
Default 5min.
.TP
.B fsync = "defer"
defer: fsync(2) returns at once (asd's behaviour); sync: it writes everything first.
.TP
.B atime = "noatime"
noatime or relatime (for programs that read access times, such as mail readers).
.TP
.B mode = "fuse"
fuse (the write\-back filesystem) or overlay (the kernel's overlayfs; root only).
.TP
.B data_path = "auto"
FUSE mode: who serves file data. auto (the default): the kernel reads and writes the RAM copy
itself (FUSE passthrough) where it allows that (root, Linux 6.9 or later), else the daemon;
passthrough: the same, warning where the kernel refuses; daemon: every read and write goes
through the daemon. A stop that cannot wait for a program holding a file open for writing
makes its writes fail; if it still holds the file when the daemon ends, the RAM store stays
and the next mount writes what it wrote. $ASDFS_DATA_PATH overrides it.
.TP
.B backups = true
keep .NAME\-backup_asd\-old and crash snapshots, as asd does.
.TP
.B backup_limit = 5
crash snapshots kept per target.
.TP
.B volatile = "/run"
where the RAM store lives (VOLATILE/asdfs/); default /run for root, $XDG_RUNTIME_DIR for users.
.TP
.B ram_limit = "512M"
the most RAM the target's store uses: a size ("512M", "2G") or a share of the machine's
memory ("25%"). Past it, clean files leave RAM (read from disk again when used) and
changes are flushed early; root gives each store a tmpfs of this size. Default 25%.
.SH EXAMPLE
.nf
[defaults]
flush_interval = "15min"
backups = true

[[target]]
path = "/var/log"
fsync = "sync"

[[target]]
path = "/srv/http"
mode = "overlay"
.fi
.SH FILES
.TP
.B /etc/asdfs.toml
root's configuration, read by \fBasdfs mount \-\-all\fR, asdfs@.service and, without
/etc/asd.conf, by asd(1).
.TP
.B ~/.config/asdfs/asdfs.toml
a user's.
.SH "SEE ALSO"
asdfs(1), asdfs\-mount(1), asdfs\-config(1), asd(1), asdfs.systemd(7)
"#;
