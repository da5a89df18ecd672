//! Attacks: misc (see attack.rs).

use super::*;
