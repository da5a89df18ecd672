//! The one integration test binary: store tests without a mount, mount tests through
//! /dev/fuse, model tests and crash tests.
// Tests and benchmarks act as users do, by path (docs/security.md R6 is for the daemon).
#![allow(clippy::disallowed_methods)]

mod asd;
mod attack;
mod churn;
mod common;
mod concurrent;
mod deep;
mod faults;
mod fsync;
mod harness;
mod kill;
mod model;
mod mount;
mod overlay;
mod passthrough;
mod posix;
mod powercut;
mod ram;
mod ram_room;
mod recovery;
mod safety;
mod salvage;
mod simdisk;
mod snapshots;
mod store;
mod system;
mod uppers;
mod writeback;
