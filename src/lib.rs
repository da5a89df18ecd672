//! asdfs: keep chosen directories in RAM and write them back to disk safely.
//!
//! See `docs/ARCHITECTURE.md` for the map of this crate and `docs/design.md` for the formats
//! and protocols it implements.

pub mod backing;
pub mod bytes;
pub mod config;
pub mod error;
pub mod flush;
pub mod fuse;
pub mod store;
