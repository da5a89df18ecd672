//! Crash snapshots: made, unpacked, restored, listed, cleaned, limited.
