//! asd.conf table tests: the syntax bash would accept and asd relies on, asd's values and
//! defaults (asd.md §1.3, the man page, the shipped asd.conf), and every construct that would
//! need a shell, each with the line it must be reported on.

use std::path::{Path, PathBuf};

use super::{Want, asd, run_table, with};
use crate::config::{Mode, parse_asd_conf};

const FILE: &str = "/etc/asd.conf";

fn parse(text: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
    parse_asd_conf(text, Path::new(FILE))
}

fn ok(paths: &[&str]) -> Want {
    Want::Targets(paths.iter().map(|p| asd(p)).collect())
}

/// The asd.conf asd ships, with one target filled in.
const SHIPPED: &str = "#\n# /etc/asd.conf\n#\n# For documentation, refer to the asd man page\n\n\
    # Below is an example to whet your appetite\n\
    #WHATTOSYNC=('/srv/http' '/var/lib/monitorix' '/foo/bar')\n\
    WHATTOSYNC=('/srv/http')\n\n\
    # Use NO trailing backslash!\n#VOLATILE=\"/dev/shm\"\n\n\
    #USE_OVERLAYFS=\"no\"\n\n#USE_BACKUPS=\"yes\"\n";

#[test]
fn syntax_asd_accepts() {
    run_table(
        FILE,
        parse,
        &[
            ("shipped file", SHIPPED, ok(&["/srv/http"])),
            (
                "man page example",
                "WHATTOSYNC=('/var/lib/monitorix' '/srv/http' '/foo/bar')\n",
                ok(&["/var/lib/monitorix", "/srv/http", "/foo/bar"]),
            ),
            (
                "both quotes and bare words",
                "WHATTOSYNC=('/a' \"/b\" /c)",
                ok(&["/a", "/b", "/c"]),
            ),
            (
                "many lines, comments between",
                "# top\n\nWHATTOSYNC=(   # the list\n  '/srv/http'   # web\n  # '/not/this'\n\n\t\"/var/log\"\n)  # end\n",
                ok(&["/srv/http", "/var/log"]),
            ),
            (
                "closing paren on an element line",
                "WHATTOSYNC=(\n/a\n/b)\n",
                ok(&["/a", "/b"]),
            ),
            (
                "trailing slashes stripped",
                "WHATTOSYNC=('/srv/http/' /var/log//)",
                ok(&["/srv/http", "/var/log"]),
            ),
            (
                "# inside a word is not a comment",
                "WHATTOSYNC=(/srv/a#b)",
                ok(&["/srv/a#b"]),
            ),
            (
                "$ inside single quotes is literal",
                "WHATTOSYNC=('/srv/$HOME')",
                ok(&["/srv/$HOME"]),
            ),
            (
                "quotes joined to words",
                "WHATTOSYNC=('/my dir'/sub \"/a b\")",
                ok(&["/my dir/sub", "/a b"]),
            ),
            (
                "backslash escape",
                "WHATTOSYNC=(/my\\ dir)",
                ok(&["/my dir"]),
            ),
            (
                "escaped quote in double quotes",
                "WHATTOSYNC=(\"/a\\\"b\")",
                ok(&["/a\"b"]),
            ),
            (
                "a later WHATTOSYNC replaces",
                "WHATTOSYNC=(/a)\nWHATTOSYNC=(/b)\n",
                ok(&["/b"]),
            ),
            (
                "+= appends",
                "WHATTOSYNC=(/a)\nWHATTOSYNC+=('/b')\n",
                ok(&["/a", "/b"]),
            ),
            (
                "a plain value is a one-entry list",
                "WHATTOSYNC=/srv/http\n",
                ok(&["/srv/http"]),
            ),
            (
                "export is accepted",
                "export WHATTOSYNC=(/a)\n",
                ok(&["/a"]),
            ),
            ("no newline at the end", "WHATTOSYNC=(/a)", ok(&["/a"])),
            ("unicode path", "WHATTOSYNC=(/srv/café)", ok(&["/srv/café"])),
        ],
    );
}

#[test]
fn values_and_defaults() {
    let dir = |v: &str| with(asd("/a"), |t| t.volatile = Some(PathBuf::from(v)));
    let limit = |n: u32| with(asd("/a"), |t| t.backup_limit = n);
    run_table(
        FILE,
        parse,
        &[
            (
                "asd defaults",
                "WHATTOSYNC=(/a)",
                Want::Targets(vec![asd("/a")]),
            ),
            (
                "VOLATILE",
                "WHATTOSYNC=(/a)\nVOLATILE=/dev/shm",
                Want::Targets(vec![dir("/dev/shm")]),
            ),
            (
                "VOLATILE quoted, trailing slash",
                "WHATTOSYNC=(/a)\nVOLATILE=\"/dev/shm/\"",
                Want::Targets(vec![dir("/dev/shm")]),
            ),
            (
                "VOLATILE empty means /tmp",
                "WHATTOSYNC=(/a)\nVOLATILE=",
                Want::Targets(vec![asd("/a")]),
            ),
            (
                "BACKUP_LIMIT",
                "WHATTOSYNC=(/a)\nBACKUP_LIMIT=12",
                Want::Targets(vec![limit(12)]),
            ),
            (
                "BACKUP_LIMIT 0",
                "WHATTOSYNC=(/a)\nBACKUP_LIMIT=0",
                Want::Targets(vec![limit(0)]),
            ),
            (
                "BACKUP_LIMIT leading zeros",
                "WHATTOSYNC=(/a)\nBACKUP_LIMIT='007'",
                Want::Targets(vec![limit(7)]),
            ),
            (
                "BACKUP_LIMIT empty means 5",
                "WHATTOSYNC=(/a)\nBACKUP_LIMIT=",
                Want::Targets(vec![limit(5)]),
            ),
            (
                "USE_BACKUPS empty means yes",
                "WHATTOSYNC=(/a)\nUSE_BACKUPS=\"\"",
                Want::Targets(vec![asd("/a")]),
            ),
            (
                "USE_OVERLAYFS empty means off",
                "WHATTOSYNC=(/a)\nUSE_OVERLAYFS=",
                Want::Targets(vec![asd("/a")]),
            ),
            (
                "settings before the list",
                "USE_BACKUPS=no\nWHATTOSYNC=(/a /b)",
                Want::Targets(vec![
                    with(asd("/a"), |t| t.backups = false),
                    with(asd("/b"), |t| t.backups = false),
                ]),
            ),
            (
                "hardlink check off",
                "WHATTOSYNC=(/a)\nENABLE_HARDLINK_SAFETY_CHECK=0",
                Want::Targets(vec![with(asd("/a"), |t| t.hardlink_check = false)]),
            ),
            (
                "hardlink check on",
                "WHATTOSYNC=(/a)\nENABLE_HARDLINK_SAFETY_CHECK=1",
                Want::Targets(vec![asd("/a")]),
            ),
            (
                "hardlink check not a number",
                "WHATTOSYNC=(/a)\nENABLE_HARDLINK_SAFETY_CHECK=yes",
                Want::Error(2, "ENABLE_HARDLINK_SAFETY_CHECK=\"yes\" is not 0 or 1"),
            ),
            (
                "DEBUG accepted",
                "WHATTOSYNC=(/a)\nDEBUG=1",
                Want::Targets(vec![asd("/a")]),
            ),
        ],
    );
}

#[test]
fn truthy_and_falsy_words() {
    let truthy = [
        "y", "YES", "True", "t", "On", "1", "enabled", "Enable", "use", "'yes'", "\"ON\"",
    ];
    let falsy = [
        "n", "No", "FALSE", "f", "off", "0", "disabled", "DISABLE", "'no'",
    ];
    let overlay = with(asd("/a"), |t| t.mode = Mode::Overlay);
    let no_backups = with(asd("/a"), |t| t.backups = false);
    let mut texts = Vec::new();
    for word in truthy {
        texts.push((
            format!("WHATTOSYNC=(/a)\nUSE_OVERLAYFS={word}"),
            Want::Targets(vec![overlay.clone()]),
        ));
        texts.push((
            format!("WHATTOSYNC=(/a)\nUSE_BACKUPS={word}"),
            Want::Targets(vec![asd("/a")]),
        ));
    }
    for word in falsy {
        texts.push((
            format!("WHATTOSYNC=(/a)\nUSE_OVERLAYFS={word}"),
            Want::Targets(vec![asd("/a")]),
        ));
        texts.push((
            format!("WHATTOSYNC=(/a)\nUSE_BACKUPS={word}"),
            Want::Targets(vec![no_backups.clone()]),
        ));
    }
    let cases: Vec<(&str, &str, Want)> = texts
        .iter()
        .map(|(text, want)| (text.as_str(), text.as_str(), clone_want(want)))
        .collect();
    run_table(FILE, parse, &cases);
}

fn clone_want(want: &Want) -> Want {
    match want {
        Want::Targets(t) => Want::Targets(t.clone()),
        Want::Error(line, text) => Want::Error(*line, text),
    }
}

#[test]
fn values_asd_would_misread_are_errors() {
    run_table(
        FILE,
        parse,
        &[
            (
                "USE_OVERLAYFS=maybe",
                "WHATTOSYNC=(/a)\nUSE_OVERLAYFS=maybe",
                Want::Error(2, "neither yes nor no"),
            ),
            (
                "USE_BACKUPS=2",
                "WHATTOSYNC=(/a)\n\nUSE_BACKUPS=2",
                Want::Error(3, "USE_BACKUPS=\"2\""),
            ),
            (
                "BACKUP_LIMIT=five",
                "WHATTOSYNC=(/a)\nBACKUP_LIMIT=five",
                Want::Error(2, "not a whole number"),
            ),
            (
                "BACKUP_LIMIT=-1",
                "BACKUP_LIMIT=-1\nWHATTOSYNC=(/a)",
                Want::Error(1, "not a whole number"),
            ),
            (
                "BACKUP_LIMIT with a space",
                "WHATTOSYNC=(/a)\nBACKUP_LIMIT=' 5'",
                Want::Error(2, "not a whole number"),
            ),
            (
                "BACKUP_LIMIT=1.5",
                "WHATTOSYNC=(/a)\nBACKUP_LIMIT=1.5",
                Want::Error(2, "not a whole number"),
            ),
            (
                "BACKUP_LIMIT too large for u32",
                "WHATTOSYNC=(/a)\nBACKUP_LIMIT=99999999999",
                Want::Error(2, "too large"),
            ),
            (
                "BACKUP_LIMIT above 1000",
                "WHATTOSYNC=(/a)\nBACKUP_LIMIT=1001",
                Want::Error(2, "at most 1000"),
            ),
            (
                "VOLATILE as a list",
                "WHATTOSYNC=(/a)\nVOLATILE=(/tmp)",
                Want::Error(2, "not a list"),
            ),
            (
                "+= on a scalar",
                "WHATTOSYNC=(/a)\nVOLATILE+=/x",
                Want::Error(2, "+= is not supported"),
            ),
            (
                "element assignment",
                "WHATTOSYNC[0]=/a",
                Want::Error(1, "write WHATTOSYNC=(...)"),
            ),
            (
                "unknown name (typo)",
                "WHATOSYNC=('/var/log')",
                Want::Error(1, "did you mean WHATTOSYNC?"),
            ),
            (
                "unknown name (case)",
                "# c\nwhattosync=(/a)",
                Want::Error(2, "unknown setting whattosync"),
            ),
            (
                "unknown name",
                "WHATTOSYNC=(/a)\nCOLOR=red",
                Want::Error(2, "unknown setting COLOR"),
            ),
            (
                "no WHATTOSYNC",
                "# nothing\nVOLATILE=/tmp\n",
                Want::Error(1, "WHATTOSYNC is not set"),
            ),
            ("empty file", "", Want::Error(1, "WHATTOSYNC is not set")),
            (
                "empty WHATTOSYNC",
                "#\nWHATTOSYNC=()\n",
                Want::Error(2, "WHATTOSYNC is empty"),
            ),
            (
                "empty WHATTOSYNC over lines",
                "WHATTOSYNC=(\n # none\n)",
                Want::Error(1, "WHATTOSYNC is empty"),
            ),
            (
                "WHATTOSYNC= (empty)",
                "WHATTOSYNC=",
                Want::Error(1, "WHATTOSYNC is empty"),
            ),
            (
                "empty entry",
                "WHATTOSYNC=(\n/a\n''\n)",
                Want::Error(3, "empty entry"),
            ),
        ],
    );
}

#[test]
fn constructs_that_need_a_shell() {
    run_table(
        FILE,
        parse,
        &[
            (
                "$(...)",
                "WHATTOSYNC=(/a)\nVOLATILE=$(mktemp -d)",
                Want::Error(2, "command substitution `$(...)`"),
            ),
            (
                "$(...) in a list",
                "WHATTOSYNC=(\n/a\n$(ls /srv)\n)",
                Want::Error(3, "found \"$(ls /srv)\""),
            ),
            (
                "backticks",
                "WHATTOSYNC=(`hostname`)",
                Want::Error(1, "command substitution `...`"),
            ),
            (
                "$VAR",
                "WHATTOSYNC=(\"$HOME/cache\")",
                Want::Error(1, "variable expansion"),
            ),
            (
                "${VAR}",
                "WHATTOSYNC=(/srv/${USER})",
                Want::Error(1, "variable expansion"),
            ),
            (
                "$'...'",
                "WHATTOSYNC=(/a)\nVOLATILE=$'/tmp'",
                Want::Error(2, "`$` is special"),
            ),
            (
                ";",
                "WHATTOSYNC=(/a); rm -rf /",
                Want::Error(1, "`;` starts another command"),
            ),
            (
                "&&",
                "WHATTOSYNC=(/a) && echo",
                Want::Error(1, "`&` runs commands"),
            ),
            (
                "|",
                "WHATTOSYNC=(/a)\nVOLATILE=/tmp|cat",
                Want::Error(2, "`|` runs commands"),
            ),
            (
                "redirection",
                "WHATTOSYNC=(/a) >/dev/null",
                Want::Error(1, "redirection"),
            ),
            (
                "brace expansion",
                "WHATTOSYNC=(/srv/{a,b})",
                Want::Error(1, "braces"),
            ),
            ("glob", "WHATTOSYNC=(/home/*/cache)", Want::Error(1, "glob")),
            ("glob ?", "WHATTOSYNC=(/srv/a?)", Want::Error(1, "glob")),
            ("tilde", "WHATTOSYNC=(~/cache)", Want::Error(1, "`~`")),
            (
                "a command",
                "WHATTOSYNC=(/a)\nsource /etc/other.conf",
                Want::Error(2, "`source` is a command"),
            ),
            (
                "if",
                "if [ -d /a ]; then\nWHATTOSYNC=(/a)\nfi",
                Want::Error(1, "`if` is a command"),
            ),
            (
                "dot command",
                "WHATTOSYNC=(/a)\n. /etc/x",
                Want::Error(2, "unexpected `.`"),
            ),
            (
                "spaces around =",
                "WHATTOSYNC=(/a)\nVOLATILE = /tmp",
                Want::Error(2, "spaces around `=`"),
            ),
            (
                "space after =",
                "WHATTOSYNC=(/a)\nVOLATILE= /tmp",
                Want::Error(2, "space after `=`"),
            ),
            (
                "two words",
                "WHATTOSYNC=(/a)\nVOLATILE=/tmp /run",
                Want::Error(2, "unexpected \"/run\""),
            ),
            (
                "word after the list",
                "WHATTOSYNC=(/a) extra",
                Want::Error(1, "unexpected \"extra\""),
            ),
            (
                "export alone",
                "WHATTOSYNC=(/a)\nexport   # nothing\n",
                Want::Error(2, "`export` without NAME=value"),
            ),
            (
                "nested list",
                "WHATTOSYNC=((/a))",
                Want::Error(1, "unexpected `(`"),
            ),
            (
                "list not closed",
                "WHATTOSYNC=(\n/a\n/b\n",
                Want::Error(1, "no closing `)`"),
            ),
            (
                "quote not closed",
                "WHATTOSYNC=(/a)\nVOLATILE='/tmp",
                Want::Error(2, "' is not closed"),
            ),
            (
                "quote across lines",
                "WHATTOSYNC=('/a\n/b')",
                Want::Error(1, "not closed on this line"),
            ),
            (
                "$ in double quotes",
                "WHATTOSYNC=(\"/a$\")",
                Want::Error(1, "`$`"),
            ),
            (
                "line continuation",
                "WHATTOSYNC=(/a)\nVOLATILE=/tmp\\\n/x",
                Want::Error(2, "line continuation"),
            ),
            (
                "CRLF",
                "WHATTOSYNC=(/a)\r\n",
                Want::Error(1, "carriage return"),
            ),
            (
                "control character",
                "WHATTOSYNC=(/a\u{1}b)",
                Want::Error(1, "control character"),
            ),
        ],
    );
}

#[test]
fn shared_rules_point_at_lines() {
    run_table(
        FILE,
        parse,
        &[
            (
                "relative",
                "WHATTOSYNC=(\n/a\nvar/log\n)",
                Want::Error(3, "not an absolute path"),
            ),
            (
                "root",
                "WHATTOSYNC=(/)",
                Want::Error(1, "/ cannot be a target"),
            ),
            (
                "root with slashes",
                "WHATTOSYNC=(///)",
                Want::Error(1, "/ cannot be a target"),
            ),
            (
                "..",
                "WHATTOSYNC=(/var/../etc)",
                Want::Error(1, "contains `..`"),
            ),
            (
                "//",
                "WHATTOSYNC=(/var//log)",
                Want::Error(1, "write \"/var/log\""),
            ),
            (
                "duplicate after stripping /",
                "WHATTOSYNC=(/a /a/)",
                Want::Error(1, "listed twice"),
            ),
            (
                "duplicate",
                "WHATTOSYNC=(\n/srv\n/srv\n)",
                Want::Error(3, "also at line 2"),
            ),
            (
                "nested",
                "WHATTOSYNC=(\n/a\n/a/b\n)",
                Want::Error(3, "inside target /a (line 2)"),
            ),
            (
                "nested, outer second",
                "WHATTOSYNC=(\n/a/b\n/a\n)",
                Want::Error(3, "contains target /a/b (line 2)"),
            ),
            (
                "inside default VOLATILE",
                "WHATTOSYNC=(/srv\n/tmp/cache)",
                Want::Error(2, "inside the volatile dir /tmp"),
            ),
            (
                "contains VOLATILE",
                "WHATTOSYNC=(/srv)\nVOLATILE=/srv/ram",
                Want::Error(2, "contains the volatile dir"),
            ),
            (
                "relative VOLATILE",
                "WHATTOSYNC=(/a)\n\nVOLATILE=run",
                Want::Error(3, "volatile dir \"run\""),
            ),
        ],
    );
}

#[test]
fn notes_say_what_was_ignored_or_assumed() {
    let text = "WHATTOSYNC=(/a)\nENABLE_HARDLINK_SAFETY_CHECK=0\nDEBUG=1\nWHATTOSYNC=(/b)\n";
    let cfg = parse(text).expect("valid");
    let notes = cfg.notes.join("\n");
    for wanted in [
        "read from /etc/asd.conf",
        "line 3: DEBUG is ignored",
        "line 4: WHATTOSYNC replaces the list set on line 1",
        "VOLATILE is not set: using asd's default, /tmp",
    ] {
        assert!(notes.contains(wanted), "{wanted:?} missing from {notes}");
    }
    let with_volatile = parse("WHATTOSYNC=(/a)\nVOLATILE=/run").expect("valid");
    assert!(
        !with_volatile
            .notes
            .join("\n")
            .contains("VOLATILE is not set")
    );
}
