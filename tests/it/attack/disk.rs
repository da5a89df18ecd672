//! Attacks: disk (see attack.rs).

use super::*;
