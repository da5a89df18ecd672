//! Attacks: control (see attack.rs).

use super::*;
