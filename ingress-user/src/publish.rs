//! The one writer of the served configuration: carries the selection and health state of the
//! current snapshot over to the next one, swaps the whole `Arc<Snapshot>` in one atomic store and
//! tells watchers the new generation.
//!
//! Workers hold a `SnapshotReader` and call `load()` once per request: every request sees one
//! complete snapshot, never parts of two. The generation counter is what `/readyz` and the
//! metrics report.
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::model::Snapshot;

/// Owned by the control loop; the only place snapshots are replaced.
#[derive(Debug)]
pub struct Publisher {
    current: Arc<ArcSwap<Snapshot>>,
    generation: watch::Sender<u64>,
}

/// A cheap, cloneable read handle for workers.
#[derive(Clone, Debug)]
pub struct SnapshotReader {
    current: Arc<ArcSwap<Snapshot>>,
    generation: watch::Receiver<u64>,
}

impl Publisher {
    /// Starts with the empty snapshot (generation 0: nothing is served yet).
    pub fn new() -> (Self, SnapshotReader) {
        let current = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
        let (tx, rx) = watch::channel(0);
        (
            Self {
                current: current.clone(),
                generation: tx,
            },
            SnapshotReader {
                current,
                generation: rx,
            },
        )
    }

    /// Publishes `snapshot` as the next generation and returns that generation. The selection and
    /// health state of the backends it shares with the current snapshot is carried over first
    /// (`Snapshot::inherit`).
    pub fn publish(&mut self, mut snapshot: Snapshot) -> u64 {
        let generation = *self.generation.borrow() + 1;
        snapshot.generation = generation;
        snapshot.inherit(&self.current.load());
        self.current.store(Arc::new(snapshot));
        self.generation.send_replace(generation);
        generation
    }
}

impl SnapshotReader {
    /// The current snapshot.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The generation last published (0 before the first).
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_each_published_generation_whole() {
        let (mut publisher, reader) = Publisher::new();
        assert_eq!(reader.generation(), 0);
        let held = reader.load();
        assert_eq!(publisher.publish(Snapshot::default()), 1);
        assert_eq!(publisher.publish(Snapshot::default()), 2);
        assert_eq!(reader.load().generation, 2);
        assert_eq!(reader.generation(), 2);
        // A snapshot loaded earlier stays intact for the request that holds it.
        assert_eq!(held.generation, 0);
    }
}
