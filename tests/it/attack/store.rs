//! Attacks: store (see attack.rs).

use super::*;
