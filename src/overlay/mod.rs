//! Overlay mode: kernel overlayfs over the target, the disk copy as its lower layer and the
//! upper layer in the RAM store; flushes read only the upper layer (design.md §10).

pub mod flush;
pub mod holders;
pub mod kernel;
pub mod layers;
pub mod plan;
pub mod rotate;
pub mod saved;
pub mod upper;
