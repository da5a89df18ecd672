//! `asdfs completions SHELL`: shell completion scripts from the clap definitions, for
//! asdfs and for asd's two names. Hidden commands (run by mount.fuse.asdfs and the
//! installer) are left out; for bash, zsh and fish, the targets of `status`, `flush` and
//! `unmount` complete to the asdfs mounts (findmnt), not to any file.

use clap::CommandFactory;
use clap_complete::Shell;

/// The completion script of `name` (asdfs, asd or anything-sync-daemon) for `shell`.
pub fn script(shell: Shell, name: &str) -> Vec<u8> {
    let mut cmd = if name == "asdfs" {
        without_hidden(super::Cli::command())
    } else {
        super::asd::AsdCli::command()
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    if name == "asdfs" && shell == Shell::Zsh {
        return zsh_with_mounts(&String::from_utf8_lossy(&out)).into_bytes();
    }
    if name == "asdfs" {
        out.extend_from_slice(mounted_targets(shell).as_bytes());
    }
    out
}

/// clap's zsh script with the target of status, flush and unmount completed to the asdfs
/// mounts: in those commands' blocks the target's `_files -/` becomes `_asdfs_mounts`,
/// defined before the script's last lines (which run or register `_asdfs`).
fn zsh_with_mounts(script: &str) -> String {
    let mut out = String::with_capacity(script.len() + ZSH_MOUNTS.len());
    let mut in_verb = false;
    for line in script.split_inclusive('\n') {
        let l = line.trim();
        if l.starts_with('(') && l.ends_with(')') {
            in_verb = matches!(l, "(status)" | "(flush)" | "(unmount)");
        } else if l == ";;" {
            in_verb = false;
        }
        if line.starts_with("if [ \"$funcstack[1]\" = \"_asdfs\" ]") {
            out.push_str(ZSH_MOUNTS);
        }
        if in_verb && l.starts_with("'::target") {
            out.push_str(&line.replace(":_files -/'", ":_asdfs_mounts'"));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// `cmd` without its hidden subcommands (clap_complete lists them).
fn without_hidden(cmd: clap::Command) -> clap::Command {
    let subs: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let mut bare = clap::Command::new(cmd.get_name().to_string())
        .about(cmd.get_about().cloned().unwrap_or_default())
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true);
    for a in cmd.get_arguments().filter(|a| !is_builtin(a)) {
        bare = bare.arg(a.clone());
    }
    bare.subcommands(subs)
}

fn is_builtin(a: &clap::Arg) -> bool {
    matches!(a.get_id().as_str(), "help" | "version")
}

/// Shell code that completes the targets of status, flush and unmount to the mounts.
fn mounted_targets(shell: Shell) -> &'static str {
    match shell {
        Shell::Bash => BASH_MOUNTS,
        Shell::Fish => FISH_MOUNTS,
        _ => "",
    }
}

const BASH_MOUNTS: &str = r#"
# The asdfs mounts, for the targets of status, flush and unmount.
_asdfs_mounts() {
    { findmnt -rn -t fuse.asdfs -o TARGET; findmnt -rn -t overlay -S asdfs -o TARGET; } 2>/dev/null |
        sed 's/\\x20/ /g'
}
_asdfs_with_mounts() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    case ${COMP_WORDS[1]:-} in
        status|flush|unmount)
            if [[ $COMP_CWORD -ge 2 && $cur != -* ]]; then
                local IFS=$'\n'
                COMPREPLY=($(compgen -W "$(_asdfs_mounts)" -- "$cur"))
                return 0
            fi
            ;;
    esac
    _asdfs "$@"
}
complete -F _asdfs_with_mounts -o nosort -o bashdefault -o default asdfs
"#;

const ZSH_MOUNTS: &str = r#"# The asdfs mounts, for the targets of status, flush and unmount.
(( $+functions[_asdfs_mounts] )) ||
_asdfs_mounts() {
    local -a mounts expl
    mounts=(${(f)"$( { findmnt -rn -t fuse.asdfs -o TARGET; findmnt -rn -t overlay -S asdfs -o TARGET; } 2>/dev/null | sed 's/\\x20/ /g')"})
    _wanted mounts expl 'asdfs mount' compadd -a mounts
}

"#;

const FISH_MOUNTS: &str = r#"
# The asdfs mounts, for the targets of status, flush and unmount.
complete -c asdfs -n "__fish_seen_subcommand_from status flush unmount" -f -a "(findmnt -rn -t fuse.asdfs -o TARGET; findmnt -rn -t overlay -S asdfs -o TARGET)"
"#;
