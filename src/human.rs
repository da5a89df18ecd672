//! Numbers as people read them, the same in every message and in `asdfs status`: counts
//! with their noun in the right number, sizes in binary units, durations in ms or seconds.

/// `1 file`, `2 files`, `1 directory`, `3 directories`.
pub fn count(n: u64, what: &str) -> String {
    match (n, what.strip_suffix('y')) {
        (1, _) => format!("1 {what}"),
        (_, Some(stem)) => format!("{n} {stem}ies"),
        (_, None) => format!("{n} {what}s"),
    }
}

/// A size in binary units: `512 B`, `410.00 MiB`, `1.46 GiB`.
pub fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// A duration in milliseconds: `850 ms`, `6.7 s`, `2m 5s`.
pub fn took(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{}m {}s", ms / 60_000, ms % 60_000 / 1000),
    }
}

/// A path for a message: one that fits in [`PATH_SHOWN`] bytes as it is, a longer one (a
/// tree deeper than PATH_MAX, say) with its middle left out and its length said, so that
/// a log line or a status line stays readable and still names both ends.
pub fn path(p: &std::path::Path) -> String {
    let full = p.display().to_string();
    if full.len() <= PATH_SHOWN {
        return full;
    }
    let head = floor_char(&full, PATH_SHOWN / 3);
    let tail = ceil_char(&full, full.len() - PATH_SHOWN * 2 / 3);
    format!(
        "{}/…({} bytes in all)…/{}",
        full[..head].trim_end_matches('/'),
        p.as_os_str().len(),
        full[tail..].trim_start_matches('/')
    )
}

/// Names for one message line: the first [`NAMES_SHOWN`] joined by ", ", then how many
/// more there are (a takeover may concern thousands of files).
pub fn names(all: &[String]) -> String {
    let shown = all[..all.len().min(NAMES_SHOWN)].join(", ");
    match all.len().saturating_sub(NAMES_SHOWN) {
        0 => shown,
        more => format!("{shown} and {more} more"),
    }
}

/// How many names a message line shows.
pub const NAMES_SHOWN: usize = 10;

/// How much of a path a message shows.
pub const PATH_SHOWN: usize = 240;

fn floor_char(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {

    #[test]
    fn names_are_shown_ten_at_most() {
        let few: Vec<String> = (0..3).map(|i| format!("f{i}")).collect();
        assert_eq!(names(&few), "f0, f1, f2");
        let many: Vec<String> = (0..1000).map(|i| format!("f{i}")).collect();
        let line = names(&many);
        assert!(line.starts_with("f0, f1,"), "{line}");
        assert!(line.ends_with("f9 and 990 more"), "{line}");
    }

    use super::*;

    #[test]
    fn one_file_one_directory_and_human_units() {
        assert_eq!(count(1, "file"), "1 file");
        assert_eq!(count(0, "file"), "0 files");
        assert_eq!(count(1, "directory"), "1 directory");
        assert_eq!(count(3, "directory"), "3 directories");
        assert_eq!(bytes(1_572_877_893), "1.46 GiB");
        assert_eq!(took(6700), "6.7 s");
        assert_eq!(took(12), "12 ms");
    }

    #[test]
    fn a_deep_path_is_shown_with_its_middle_left_out() {
        use std::path::Path;
        assert_eq!(path(Path::new("a/b/c")), "a/b/c");
        let deep = format!("{}é/victim.txt", "d/".repeat(4100));
        let shown = path(Path::new(&deep));
        assert!(shown.len() < PATH_SHOWN + 40, "{shown}");
        assert!(shown.starts_with("d/d/d/"), "{shown}");
        assert!(shown.ends_with("d/d/é/victim.txt"), "{shown}");
        assert!(
            shown.contains(&format!("…({} bytes in all)…", deep.len())),
            "{shown}"
        );
    }
}
