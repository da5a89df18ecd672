//! Attacks: snapshots (see attack.rs).

use super::*;
