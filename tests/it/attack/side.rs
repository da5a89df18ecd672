//! Attacks: side (see attack.rs).

use super::*;
