//! `private/overlay.json`: the record of a target's layers in overlay mode (design.md
//! §10.4), read by a daemon taking the store over and made to agree with the overlay that
//! is mounted.

use super::layers::{Old, layer_numbers};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// `private/overlay.json`: the layers, for a daemon taking over.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Saved {
    pub layer: u64,
    pub pseudo: u64,
    /// Middle layers, newest first, and whether each is on disk.
    pub middles: Vec<(u64, bool)>,
    pub old: Vec<Old>,
}

impl Saved {
    pub fn read(private: &Path) -> Option<Saved> {
        let bytes = crate::fsx::trusted::read(private.join("overlay.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every layer number it names.
    pub fn all_layers(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.middles.iter().map(|m| m.0).collect();
        v.push(self.layer);
        v.extend(self.old.iter().flat_map(|o| o.layers.iter().copied()));
        v
    }

    /// The layers to write to disk when no overlay is on the target any more: unflushed
    /// middle layers, oldest first, then the upper layer, then any newer layer in the store
    /// (a daemon killed between swapping overlays and recording it made them).
    pub fn unwritten(&self, private: &Path) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .middles
            .iter()
            .rev()
            .filter(|m| !m.1)
            .map(|m| m.0)
            .collect();
        v.push(self.layer);
        let max = self.all_layers().into_iter().max().unwrap_or(0);
        let mut newer: Vec<u64> = layer_numbers(private)
            .into_iter()
            .filter(|n| *n > max)
            .collect();
        newer.sort_unstable();
        newer.dedup();
        v.extend(newer);
        v
    }

    /// Makes the record agree with the overlay on the target, whose layers its options
    /// name (`super_options` from mountinfo): a daemon killed between swapping overlays and
    /// recording it left the previous ones. Returns whether the upper layer differed.
    pub fn reconcile(&mut self, super_options: &str) -> bool {
        let Some((top, lowers)) = mounted_layers(super_options) else {
            return false;
        };
        let known: HashMap<u64, bool> = self.middles.iter().copied().collect();
        let middles: Vec<(u64, bool)> = lowers
            .iter()
            .map(|n| (*n, known.get(n).copied().unwrap_or(false)))
            .collect();
        let changed = top != self.layer;
        if changed || middles != self.middles {
            tracing::warn!(
                recorded = self.layer,
                mounted = top,
                "the overlay's recorded layers were out of date; using the mounted ones"
            );
            self.layer = top;
            self.middles = middles;
        }
        changed
    }
}

/// The store's layers an overlay's options name: its upper layer and its lower layers
/// that are upper layers of the store, topmost first.
fn mounted_layers(super_options: &str) -> Option<(u64, Vec<u64>)> {
    let number = |path: &str| -> Option<u64> {
        path.rsplit('/')
            .next()?
            .strip_prefix("upper.")?
            .parse()
            .ok()
    };
    let mut top = None;
    let mut lowers = Vec::new();
    for o in super_options.split(',') {
        if let Some(p) = o.strip_prefix("upperdir=") {
            top = number(p);
        } else if let Some(n) = o.strip_prefix("lowerdir+=").and_then(number) {
            lowers.push(n);
        }
    }
    Some((top?, lowers))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTED: &str = "rw,lowerdir+=/run/asdfs/t.1/private/upper.7,\
        lowerdir+=/run/asdfs/t.1/private/upper.5,lowerdir+=/run/asdfs/t.1/disk/t,\
        upperdir=/run/asdfs/t.1/private/upper.8,workdir=/run/asdfs/t.1/private/work.8,uuid=on";

    #[test]
    fn the_record_follows_the_mounted_layers() {
        assert_eq!(mounted_layers(MOUNTED), Some((8, vec![7, 5])));
        assert_eq!(mounted_layers("rw,lowerdir=/a:/b"), None);
        // Killed after the swap, before recording it: layer 8 was not known yet.
        let mut s = Saved {
            layer: 7,
            pseudo: 42,
            middles: vec![(5, true)],
            old: Vec::new(),
        };
        assert!(s.reconcile(MOUNTED));
        assert_eq!(
            (s.layer, s.middles.clone()),
            (8, vec![(7, false), (5, true)])
        );
        // In step: nothing changes.
        assert!(!s.reconcile(MOUNTED));
        assert_eq!(s.middles, vec![(7, false), (5, true)]);
    }
}
