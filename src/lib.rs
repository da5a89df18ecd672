//! asdfs: keep chosen directories in RAM and write them back to disk safely.
//!
//! See `docs/ARCHITECTURE.md` for the map of this crate and `docs/design.md` for the formats
//! and protocols it implements.

pub mod backing;
pub mod backup;
pub mod bytes;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod error;
pub mod flush;
pub mod fsx;
pub mod fuse;
pub mod hang;
pub mod human;
pub mod journal;
pub mod overlay;
pub mod snapshot;
pub mod status;
pub mod store;
pub mod usage;
