//! Randomized: valid configs mangled (characters inserted or deleted, truncation, lines
//! inserted, repeated or swapped) and arbitrary text, fed to both parsers. Each must return,
//! never panic; an error's one-line message starts with the file name and a line number; a
//! config that is accepted passes `validate`.

use std::path::Path;

use proptest::prelude::*;

use crate::config::{Config, ConfigError, parse_asd_conf, parse_toml, validate};

const SEEDS: [&str; 4] = [
    "# asd.conf\nWHATTOSYNC=(   # list\n  '/srv/http'   # web\n  \"/var/log\"\n  /var/lib/x/\n)\n\
     VOLATILE=\"/dev/shm\"\nUSE_OVERLAYFS=yes\nUSE_BACKUPS='no'\nBACKUP_LIMIT=7\n\
     ENABLE_HARDLINK_SAFETY_CHECK=0\n",
    "WHATTOSYNC=('/a' \"/b\" /c)\nexport VOLATILE=/run\n",
    "# asdfs\n[defaults]\nflush_interval = \"5min\"\nfsync = \"defer\"\nmode = \"fuse\"\nbackups = true\n\
     backup_limit = 5\nvolatile = \"/run\"\n\n[[target]]\npath = \"/var/log\"\n\n[[target]]\n\
     path = '/srv/http'\nflush_interval = 60\nmode = \"overlay\"\n",
    "target = [{ path = \"/a\" }, { path = \"/b\", fsync = \"sync\" }]\n",
];

/// Characters likely to change the meaning of a config.
const ALPHABET: &[char] = &[
    '\'', '"', '$', '(', ')', '#', '\n', '=', '[', ']', '{', '}', '`', '\\', ';', '&', '|', ' ',
    '\t', '/', '.', '*', '~', 'a', 'Z', '_', '0', '9', '-', ',', 'é', '\r', '\0', '\u{7f}', '+',
];

/// Whole lines worth inserting.
const LINES: &[&str] = &[
    "WHATTOSYNC=(",
    ")",
    "WHATTOSYNC=()",
    "WHATTOSYNC+=(/a/b)",
    "VOLATILE=$(mktemp)",
    "echo hi",
    "USE_OVERLAYFS=maybe",
    "BACKUP_LIMIT=-1",
    "[[target]]",
    "[defaults]",
    "[target]",
    "path = \"/var/log/sub\"",
    "path = '/'",
    "mode = 'fuse'",
    "backup_limit = 99999999999",
    "flush_interval = '0s'",
    "volatile = \"/var\"",
    "x = 1",
    "'",
    "\"",
    "# comment",
    "",
];

#[derive(Clone, Debug)]
enum Mangle {
    Insert(usize, char),
    Delete(usize, usize),
    Truncate(usize),
    InsertLine(usize, &'static str),
    RepeatLine(usize),
    SwapLines(usize, usize),
}

fn mangle() -> impl Strategy<Value = Mangle> {
    prop_oneof![
        3 => (any::<usize>(), proptest::sample::select(ALPHABET)).prop_map(|(at, c)| Mangle::Insert(at, c)),
        2 => (any::<usize>(), 1usize..8).prop_map(|(at, n)| Mangle::Delete(at, n)),
        1 => any::<usize>().prop_map(Mangle::Truncate),
        2 => (any::<usize>(), proptest::sample::select(LINES)).prop_map(|(at, l)| Mangle::InsertLine(at, l)),
        1 => any::<usize>().prop_map(Mangle::RepeatLine),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mangle::SwapLines(a, b)),
    ]
}

fn apply(text: &str, mangle: &Mangle) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let mut lines: Vec<String> = text.split('\n').map(String::from).collect();
    let n = lines.len();
    match *mangle {
        Mangle::Insert(at, c) => chars.insert(at % (chars.len() + 1), c),
        Mangle::Delete(at, len) => {
            let start = at % (chars.len() + 1);
            chars.drain(start..(start + len).min(chars.len()));
        }
        Mangle::Truncate(at) => chars.truncate(at % (chars.len() + 1)),
        Mangle::InsertLine(at, line) => lines.insert(at % (n + 1), line.to_owned()),
        Mangle::RepeatLine(at) => lines.insert(at % n, lines[at % n].clone()),
        Mangle::SwapLines(a, b) => lines.swap(a % n, b % n),
    }
    match mangle {
        Mangle::Insert(..) | Mangle::Delete(..) | Mangle::Truncate(_) => {
            chars.into_iter().collect()
        }
        _ => lines.join("\n"),
    }
}

/// The properties every parse result must have.
fn check(result: Result<Config, ConfigError>, file: &str, text: &str) -> Result<(), TestCaseError> {
    match result {
        Ok(cfg) => prop_assert!(
            validate(&cfg, Path::new(file)).is_ok(),
            "accepted but invalid: {text:?}"
        ),
        Err(e) => {
            let msg = e.to_string();
            let rest = msg.strip_prefix(&format!("{file}:"));
            let line: String = rest
                .unwrap_or("")
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            prop_assert!(
                rest.is_some() && !line.is_empty(),
                "no file:line in {msg:?} for {text:?}"
            );
            prop_assert!(
                line.parse::<usize>()
                    .is_ok_and(|l| l >= 1 && l <= text.split('\n').count()),
                "line {line} out of range in {msg:?} for {text:?}"
            );
            prop_assert!(!msg.contains('\n'), "message on many lines: {msg:?}");
        }
    }
    Ok(())
}

fn check_both(text: &str) -> Result<(), TestCaseError> {
    check(
        parse_asd_conf(text, Path::new("mangled.conf")),
        "mangled.conf",
        text,
    )?;
    check(
        parse_toml(text, Path::new("mangled.toml")),
        "mangled.toml",
        text,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn mangled_configs_give_errors_not_panics(
        seed in proptest::sample::select(&SEEDS[..]),
        mangles in proptest::collection::vec(mangle(), 1..6),
    ) {
        let text = mangles.iter().fold(seed.to_owned(), |text, m| apply(&text, m));
        check_both(&text)?;
    }

    #[test]
    fn arbitrary_text_gives_errors_not_panics(text in "\\PC{0,200}|[\\x00-\\x7f]{0,200}") {
        check_both(&text)?;
    }
}

#[test]
fn seeds_are_valid() {
    for seed in &SEEDS[..2] {
        assert!(parse_asd_conf(seed, Path::new("seed")).is_ok(), "{seed}");
    }
    for seed in &SEEDS[2..] {
        assert!(parse_toml(seed, Path::new("seed")).is_ok(), "{seed}");
    }
}
