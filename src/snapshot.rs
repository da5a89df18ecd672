//! Crash snapshots: zstd tarballs of the disk copy, with asd's names.
