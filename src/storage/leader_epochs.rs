//! The leader-epoch cache of one partition: for each leader epoch that wrote
//! to the log, the offset its first batch got. Followers use it (through the
//! leader's OffsetForLeaderEpoch answer) to find where their log diverged from
//! the leader's and truncate there, instead of trusting a high watermark that
//! may be stale (Kafka's KIP-101 / KIP-279).
//!
//! Persisted in the `meta` column family under `epochs/<uid>`, written in the
//! same RocksDB batch as the log change that adds or drops an entry.

/// Epoch starts, oldest first; epochs and start offsets both increase.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochCache {
    entries: Vec<(i32, i64)>,
}

/// The key of a partition's cache in the `meta` column family.
pub fn epochs_key(uid: u64) -> Vec<u8> {
    let mut k = b"epochs/".to_vec();
    k.extend_from_slice(&uid.to_be_bytes());
    k
}

impl EpochCache {
    /// Decodes a stored cache; a damaged value reads as empty, which only
    /// makes the next truncation fall back to the high watermark.
    pub fn decode(v: &[u8]) -> Self {
        let entries = v
            .chunks_exact(12)
            .filter_map(|c| {
                let epoch = i32::from_be_bytes(c[0..4].try_into().ok()?);
                let start = i64::from_be_bytes(c[4..12].try_into().ok()?);
                Some((epoch, start))
            })
            .collect();
        EpochCache { entries }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 12);
        for (e, s) in &self.entries {
            out.extend_from_slice(&e.to_be_bytes());
            out.extend_from_slice(&s.to_be_bytes());
        }
        out
    }

    /// The latest epoch that wrote (or led), if any.
    pub fn latest(&self) -> Option<i32> {
        self.entries.last().map(|(e, _)| *e)
    }

    /// Records that `epoch` starts at `start`. Older or equal epochs are
    /// ignored; an entry starting at or after `start` is replaced (a new
    /// leader that wrote nothing before the next took over).
    /// True if the cache changed.
    pub fn assign(&mut self, epoch: i32, start: i64) -> bool {
        if epoch < 0 || self.latest().is_some_and(|l| l >= epoch) {
            return false;
        }
        while self.entries.last().is_some_and(|(_, s)| *s >= start) {
            self.entries.pop();
        }
        self.entries.push((epoch, start));
        true
    }

    /// Drops what starts at or after `offset` (the log was truncated there).
    /// True if the cache changed.
    pub fn truncate_from(&mut self, offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(_, s)| *s < offset);
        before != self.entries.len()
    }

    /// Drops epochs wholly before `offset` (the log start moved), keeping
    /// the one that covers it.
    pub fn truncate_before(&mut self, offset: i64) -> bool {
        let keep_from = self
            .entries
            .iter()
            .rposition(|(_, s)| *s <= offset)
            .unwrap_or(0);
        if keep_from == 0 {
            return false;
        }
        self.entries.drain(..keep_from);
        true
    }

    /// Kafka's OffsetForLeaderEpoch answer for `requested`, given the log end
    /// offset: the largest epoch not above `requested` and the offset where
    /// it ended (the start of the next epoch, or the log end for the latest);
    /// `(-1, -1)` when `requested` is above every epoch known.
    pub fn end_offset_for(&self, requested: i32, log_end: i64) -> (i32, i64) {
        match self.latest() {
            None => (-1, -1),
            Some(l) if l == requested => (l, log_end),
            Some(_) => {
                let Some(higher) = self.entries.iter().find(|(e, _)| *e > requested) else {
                    return (-1, -1);
                };
                match self.entries.iter().rev().find(|(e, _)| *e <= requested) {
                    Some((floor, _)) => (*floor, higher.1),
                    None => (requested, higher.1),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_as_kafka() {
        let mut c = EpochCache::default();
        assert_eq!(c.end_offset_for(0, 10), (-1, -1));
        assert!(c.assign(0, 0));
        assert!(c.assign(2, 50));
        assert!(!c.assign(1, 60), "older epochs are ignored");
        assert!(c.assign(5, 100));
        assert_eq!(c.end_offset_for(5, 120), (5, 120));
        assert_eq!(c.end_offset_for(0, 120), (0, 50));
        assert_eq!(c.end_offset_for(1, 120), (0, 50));
        assert_eq!(c.end_offset_for(3, 120), (2, 100));
        assert_eq!(c.end_offset_for(6, 120), (-1, -1));
        let mut d = EpochCache::default();
        d.assign(3, 10);
        assert_eq!(d.end_offset_for(1, 20), (1, 10));
    }

    #[test]
    fn truncation_and_encoding() {
        let mut c = EpochCache::default();
        c.assign(1, 0);
        c.assign(2, 10);
        c.assign(3, 10); // epoch 2 wrote nothing: replaced
        assert_eq!(c.entries, vec![(1, 0), (3, 10)]);
        c.assign(4, 20);
        assert_eq!(EpochCache::decode(&c.encode()), c);
        assert!(c.truncate_from(15));
        assert_eq!(c.latest(), Some(3));
        assert!(c.truncate_before(12));
        assert_eq!(c.entries, vec![(3, 10)]);
        assert!(!c.truncate_before(5));
    }
}
