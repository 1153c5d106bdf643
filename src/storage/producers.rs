//! Idempotent producers: per partition, what each producer id last appended.
//!
//! For every producer id seen on a partition we keep its epoch and the
//! sequence ranges and base offsets of its last `BATCHES_KEPT` batches (as
//! Kafka does). The writer thread consults and updates this state for every
//! batch that carries a producer id, so a retried batch is acknowledged with
//! its original offset instead of being written twice, a gap in sequence
//! numbers is refused, and a producer with an older epoch is fenced.
//!
//! Semantics follow current Kafka (post KIP-360):
//! - a duplicate is a batch with the current epoch whose first and last
//!   sequence match one of the kept batches exactly;
//! - an older epoch gets INVALID_PRODUCER_EPOCH;
//! - a newer epoch must start at sequence 0, else OUT_OF_ORDER_SEQUENCE_NUMBER;
//! - within an epoch the first sequence must follow the last one (wrapping
//!   from `i32::MAX` to 0), else OUT_OF_ORDER_SEQUENCE_NUMBER;
//! - a producer the partition does not know is accepted at any sequence (its
//!   state may have expired or been removed with its data), so
//!   UNKNOWN_PRODUCER_ID is never answered.
//!
//! A producer idle on a partition for `producer.id.expiration.ms` (and with
//! no transaction open there) is forgotten, as in Kafka, so state does not
//! grow with every producer that ever wrote.

use std::collections::HashMap;

use crate::error::BrokerError;

/// How many recent batches per producer are remembered for duplicate detection.
pub const BATCHES_KEPT: usize = 5;

/// One appended batch of a producer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
}

/// A producer's state on one partition. Fixed size: no allocation per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// When it last appended here (ms): broker time for live appends, the
    /// batch's max timestamp for state rebuilt at start-up.
    pub last_timestamp: i64,
    /// Oldest first; only the first `len` are valid.
    batches: [BatchMeta; BATCHES_KEPT],
    len: u8,
}

impl ProducerEntry {
    fn new(epoch: i16, last_timestamp: i64) -> Self {
        ProducerEntry {
            epoch,
            last_timestamp,
            batches: [BatchMeta::default(); BATCHES_KEPT],
            len: 0,
        }
    }

    pub fn batches(&self) -> &[BatchMeta] {
        &self.batches[..usize::from(self.len)]
    }

    fn last_seq(&self) -> Option<i32> {
        self.batches().last().map(|b| b.last_seq)
    }

    /// Records an appended batch; a new epoch forgets the old epoch's batches.
    fn push(&mut self, epoch: i16, meta: BatchMeta, timestamp: i64) {
        self.last_timestamp = self.last_timestamp.max(timestamp);
        if epoch != self.epoch {
            self.epoch = epoch;
            self.len = 0;
        }
        if usize::from(self.len) == BATCHES_KEPT {
            self.batches.rotate_left(1);
            self.batches[BATCHES_KEPT - 1] = meta;
        } else {
            self.batches[usize::from(self.len)] = meta;
            self.len += 1;
        }
    }
}

/// The last sequence of a batch: `first + last_offset_delta`, wrapping past
/// `i32::MAX` to 0 as producers do.
pub fn last_sequence(first_seq: i32, last_offset_delta: i32) -> i32 {
    let sum = i64::from(first_seq) + i64::from(last_offset_delta);
    if sum > i64::from(i32::MAX) {
        // i32::MAX is followed by 0.
        (sum - i64::from(i32::MAX) - 1) as i32
    } else {
        sum as i32
    }
}

/// True if `next` directly follows `last`.
fn in_sequence(last: i32, next: i32) -> bool {
    i64::from(next) == i64::from(last) + 1 || (next == 0 && last == i32::MAX)
}

/// What to do with a batch that carries a producer id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Write it.
    Append,
    /// Already written at this base offset: acknowledge, do not write.
    Duplicate(i64),
}

/// Every producer's state on one partition.
#[derive(Debug, Default)]
pub struct ProducerStates {
    entries: HashMap<i64, ProducerEntry>,
}

impl ProducerStates {
    #[cfg(test)]
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.entries.get(&producer_id)
    }

    /// Puts back a previous state (undoing a failed write).
    pub fn restore(&mut self, producer_id: i64, previous: Option<ProducerEntry>) {
        match previous {
            Some(e) => {
                self.entries.insert(producer_id, e);
            }
            None => {
                self.entries.remove(&producer_id);
            }
        }
    }

    /// Decides whether a batch is new, a duplicate, or refused. Changes nothing.
    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
    ) -> Result<Decision, BrokerError> {
        let Some(entry) = self.entries.get(&producer_id) else {
            return Ok(Decision::Append);
        };
        if epoch == entry.epoch {
            if let Some(dup) = entry
                .batches()
                .iter()
                .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
            {
                return Ok(Decision::Duplicate(dup.base_offset));
            }
        }
        if epoch < entry.epoch {
            return Err(BrokerError::InvalidProducerEpoch(format!(
                "Epoch of producer {producer_id} is {epoch}, which is smaller than the last seen epoch {}",
                entry.epoch
            )));
        }
        if epoch > entry.epoch {
            if first_seq != 0 {
                return Err(BrokerError::OutOfOrderSequence(format!(
                    "Invalid sequence number for new epoch of producer {producer_id}: \
                     {epoch} (request epoch), {first_seq} (seq. number), {} (current producer epoch)",
                    entry.epoch
                )));
            }
            return Ok(Decision::Append);
        }
        match entry.last_seq() {
            Some(last) if !in_sequence(last, first_seq) => {
                Err(BrokerError::OutOfOrderSequence(format!(
                    "Out of order sequence number for producer {producer_id}: \
                     {first_seq} (incoming seq. number), {last} (current end sequence number)"
                )))
            }
            _ => Ok(Decision::Append),
        }
    }

    /// Records a batch that was appended at `base_offset`; returns the state
    /// it replaced so the caller can undo it.
    pub fn record(
        &mut self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
        base_offset: i64,
        timestamp: i64,
    ) -> Option<ProducerEntry> {
        let meta = BatchMeta {
            first_seq,
            last_seq,
            base_offset,
        };
        match self.entries.get_mut(&producer_id) {
            Some(e) => {
                let previous = *e;
                e.push(epoch, meta, timestamp);
                Some(previous)
            }
            None => {
                let mut e = ProducerEntry::new(epoch, timestamp);
                e.push(epoch, meta, timestamp);
                self.entries.insert(producer_id, e);
                None
            }
        }
    }

    /// A transaction marker of `producer_id` at `epoch` was appended: the
    /// partition now knows that epoch (a marker written after the coordinator
    /// bumped it fences older epochs here too). Markers carry no sequence,
    /// so a newer epoch starts with no batches. Returns the replaced state.
    pub fn fence(&mut self, producer_id: i64, epoch: i16, timestamp: i64) -> Option<ProducerEntry> {
        match self.entries.get_mut(&producer_id) {
            Some(e) => {
                let previous = *e;
                e.last_timestamp = e.last_timestamp.max(timestamp);
                if epoch > e.epoch {
                    e.epoch = epoch;
                    e.len = 0;
                }
                Some(previous)
            }
            None => {
                self.entries
                    .insert(producer_id, ProducerEntry::new(epoch, timestamp));
                None
            }
        }
    }

    /// Forgets producers idle since before `cutoff` (ms) unless `keep` says
    /// otherwise (an open transaction); returns how many went.
    pub fn expire(&mut self, cutoff: i64, keep: impl Fn(i64) -> bool) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|id, e| e.last_timestamp >= cutoff || keep(*id));
        before - self.entries.len()
    }

    /// Every producer: (producer id, epoch, last sequence or -1, last append time).
    pub fn snapshot(&self) -> Vec<(i64, i16, i32, i64)> {
        let mut out: Vec<(i64, i16, i32, i64)> = self
            .entries
            .iter()
            .map(|(id, e)| (*id, e.epoch, e.last_seq().unwrap_or(-1), e.last_timestamp))
            .collect();
        out.sort_unstable();
        out
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PID: i64 = 1000;

    /// Checks and, if accepted, records a batch of `n` records like the writer does.
    fn append(
        s: &mut ProducerStates,
        next: &mut i64,
        epoch: i16,
        seq: i32,
        n: i32,
    ) -> Result<i64, BrokerError> {
        let last = last_sequence(seq, n - 1);
        match s.check(PID, epoch, seq, last)? {
            Decision::Duplicate(base) => Ok(base),
            Decision::Append => {
                let base = *next;
                s.record(PID, epoch, seq, last, base, 0);
                *next += i64::from(n);
                Ok(base)
            }
        }
    }

    #[test]
    fn in_order_batches_are_appended() {
        let (mut s, mut next) = (ProducerStates::default(), 0);
        assert_eq!(append(&mut s, &mut next, 0, 0, 3).unwrap(), 0);
        assert_eq!(append(&mut s, &mut next, 0, 3, 2).unwrap(), 3);
        assert_eq!(append(&mut s, &mut next, 0, 5, 1).unwrap(), 5);
        assert_eq!(next, 6);
    }

    #[test]
    fn duplicates_get_their_original_offset() {
        let (mut s, mut next) = (ProducerStates::default(), 0);
        for i in 0..5 {
            append(&mut s, &mut next, 0, i * 10, 10).unwrap();
        }
        // Each of the last five is recognised, and nothing is appended.
        for i in 0..5 {
            assert_eq!(
                append(&mut s, &mut next, 0, i * 10, 10).unwrap(),
                i64::from(i) * 10
            );
        }
        assert_eq!(next, 50);
        // A sixth batch pushes the first out of the window: it is no longer a
        // duplicate, and being behind it is out of order.
        append(&mut s, &mut next, 0, 50, 10).unwrap();
        assert!(matches!(
            append(&mut s, &mut next, 0, 0, 10),
            Err(BrokerError::OutOfOrderSequence(_))
        ));
        assert_eq!(append(&mut s, &mut next, 0, 10, 10).unwrap(), 10);
        // Same first sequence but a different length is not a duplicate.
        assert!(matches!(
            append(&mut s, &mut next, 0, 50, 5),
            Err(BrokerError::OutOfOrderSequence(_))
        ));
    }

    #[test]
    fn gaps_are_out_of_order() {
        let (mut s, mut next) = (ProducerStates::default(), 0);
        append(&mut s, &mut next, 0, 0, 5).unwrap();
        assert!(matches!(
            append(&mut s, &mut next, 0, 6, 1),
            Err(BrokerError::OutOfOrderSequence(_))
        ));
        assert_eq!(next, 5);
        // The expected sequence is still accepted afterwards.
        assert_eq!(append(&mut s, &mut next, 0, 5, 1).unwrap(), 5);
    }

    #[test]
    fn unknown_producer_may_start_anywhere() {
        let (mut s, mut next) = (ProducerStates::default(), 0);
        assert_eq!(append(&mut s, &mut next, 3, 77, 2).unwrap(), 0);
        assert_eq!(append(&mut s, &mut next, 3, 79, 1).unwrap(), 2);
    }

    #[test]
    fn epochs_fence_and_reset() {
        let (mut s, mut next) = (ProducerStates::default(), 0);
        append(&mut s, &mut next, 1, 0, 5).unwrap();
        // Older epoch: fenced.
        assert!(matches!(
            append(&mut s, &mut next, 0, 5, 1),
            Err(BrokerError::InvalidProducerEpoch(_))
        ));
        // Newer epoch must start at 0.
        assert!(matches!(
            append(&mut s, &mut next, 2, 5, 1),
            Err(BrokerError::OutOfOrderSequence(_))
        ));
        assert_eq!(append(&mut s, &mut next, 2, 0, 1).unwrap(), 5);
        // The old epoch's batches are forgotten, and the old epoch is now fenced.
        assert_eq!(s.get(PID).unwrap().batches().len(), 1);
        assert!(matches!(
            append(&mut s, &mut next, 1, 0, 5),
            Err(BrokerError::InvalidProducerEpoch(_))
        ));
        assert_eq!(next, 6);
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(last_sequence(i32::MAX, 0), i32::MAX);
        assert_eq!(last_sequence(i32::MAX, 1), 0);
        assert_eq!(last_sequence(i32::MAX - 1, 3), 1);
        let (mut s, mut next) = (ProducerStates::default(), 0);
        append(&mut s, &mut next, 0, i32::MAX - 2, 2).unwrap(); // MAX-2 ..= MAX-1
        append(&mut s, &mut next, 0, i32::MAX, 3).unwrap(); // MAX, 0, 1
        assert_eq!(s.get(PID).unwrap().batches()[1].last_seq, 1);
        // The wrapped batch is recognised as a duplicate.
        assert_eq!(append(&mut s, &mut next, 0, i32::MAX, 3).unwrap(), 2);
        assert_eq!(append(&mut s, &mut next, 0, 2, 1).unwrap(), 5);
        assert!(matches!(
            append(&mut s, &mut next, 0, 0, 1),
            Err(BrokerError::OutOfOrderSequence(_))
        ));
    }

    #[test]
    fn markers_fence_older_epochs() {
        let (mut s, mut next) = (ProducerStates::default(), 0);
        append(&mut s, &mut next, 0, 0, 3).unwrap();
        // Same epoch: the transaction's sequence continues after the marker.
        s.fence(PID, 0, 0);
        assert_eq!(append(&mut s, &mut next, 0, 3, 1).unwrap(), 3);
        // A marker with a bumped epoch fences the old one.
        let before = s.fence(PID, 1, 0);
        assert!(matches!(
            append(&mut s, &mut next, 0, 4, 1),
            Err(BrokerError::InvalidProducerEpoch(_))
        ));
        assert_eq!(append(&mut s, &mut next, 1, 0, 1).unwrap(), 4);
        assert_eq!(s.snapshot(), vec![(PID, 1, 0, 0)]);
        s.restore(PID, before);
        assert_eq!(s.get(PID).unwrap().epoch, 0);
        // A marker for an unknown producer creates its state.
        assert!(s.fence(PID + 1, 4, 0).is_none());
        assert!(matches!(
            s.check(PID + 1, 3, 0, 0),
            Err(BrokerError::InvalidProducerEpoch(_))
        ));
    }

    #[test]
    fn restore_undoes_record() {
        let mut s = ProducerStates::default();
        let prev = s.record(PID, 0, 0, 4, 0, 0);
        assert!(prev.is_none());
        let prev2 = s.record(PID, 0, 5, 5, 5, 0);
        s.restore(PID, prev2);
        assert_eq!(s.get(PID).unwrap().batches().len(), 1);
        s.restore(PID, prev);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn idle_producers_expire_unless_kept() {
        let mut s = ProducerStates::default();
        s.record(PID, 0, 0, 0, 0, 1_000);
        s.record(PID + 1, 0, 0, 0, 1, 5_000);
        s.record(PID + 2, 0, 0, 0, 2, 1_000);
        // A later append refreshes the producer's time.
        s.record(PID, 0, 1, 1, 3, 6_000);
        assert_eq!(s.expire(4_000, |id| id == PID + 2), 0);
        assert_eq!(s.expire(5_500, |_| false), 2);
        assert_eq!(s.snapshot(), vec![(PID, 0, 1, 6_000)]);
        // Forgotten producers are accepted again at any sequence.
        assert_eq!(s.check(PID + 1, 0, 7, 7).unwrap(), Decision::Append);
    }
}
