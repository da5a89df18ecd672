//! `asdfs config`: check a configuration file and show what it resolves to; write the asdfs
//! TOML equivalent of asd's asd.conf.

use super::mount::config_file;
use super::out::{out, outln};
use crate::config;
use crate::fsx::trusted::TrustedOpen;
use anyhow::Context;
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Check a configuration file (default: /etc/asdfs.toml, or the user's) and print the
    /// settings of each target.
    Check {
        #[arg(conflicts_with = "config")]
        file: Option<PathBuf>,
        /// The file to check, as `asdfs mount --config` names it.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Write the asdfs TOML equivalent of asd's asd.conf (default: $ASDCONF or /etc/asd.conf).
    Import {
        file: Option<PathBuf>,
        /// Write to this file instead of standard output (never over an existing file).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

pub fn run(cmd: ConfigCmd) -> anyhow::Result<i32> {
    match cmd {
        ConfigCmd::Check { file, config } => {
            let path = config_file(file.or(config).as_deref())
                .context("no configuration file (give one)")?;
            let cfg = config::load(&path)?;
            // Not through a FUSE mount another user controls, and never for ever
            // (docs/security.md R7). One look at the mount table and one watched thread for
            // all targets: a config may name thousands.
            let mounts = crate::daemon::mounting::mounts()?;
            for t in &cfg.targets {
                crate::daemon::mounting::refuse_foreign_fuse_among(&mounts, &t.target)?;
            }
            let targets: Vec<PathBuf> = cfg.targets.iter().map(|t| t.target.clone()).collect();
            crate::hang::bounded_each(targets, |t| {
                config::check_usable(t).map_err(anyhow::Error::msg)
            })?;
            outln!("{}: ok", path.display());
            for n in &cfg.notes {
                outln!("note: {n}");
            }
            out!("{}", config::describe(&cfg));
            Ok(0)
        }
        ConfigCmd::Import { file, output } => {
            let path = file
                .unwrap_or_else(|| config::asd_conf_path(std::env::var_os("ASDCONF").as_deref()));
            let cfg = config::load(&path)?;
            let text = config::to_toml(&cfg);
            match output {
                None => out!("{text}"),
                Some(out) => {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .trusted_open(&out)
                        .with_context(|| format!("{}: cannot create it", out.display()))?;
                    std::io::Write::write_all(&mut f, text.as_bytes())?;
                    outln!("wrote {}", out.display());
                }
            }
            Ok(0)
        }
    }
}
