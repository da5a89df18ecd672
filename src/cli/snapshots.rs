//! `asdfs snapshots`: list, restore and clean crash snapshots.
