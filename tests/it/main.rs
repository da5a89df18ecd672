//! The one integration test binary: store tests without a mount, mount tests through
//! /dev/fuse, model tests and crash tests.

mod common;
mod harness;
mod model;
mod mount;
mod posix;
mod store;
mod writeback;
mod faults;
mod snapshots;
