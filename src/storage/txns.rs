//! Transactions on the log side: what each partition knows about open and
//! aborted transactions, the gate the writer checks transactional batches
//! against, and the control batches (COMMIT/ABORT markers) that end them.
//!
//! Per partition (`PartitionTxns`, owned by the writer thread):
//! - open transactions: producer id → offset of its first transactional batch
//!   not yet followed by a marker. The last stable offset (LSO) is the
//!   smallest of those, or the high watermark when none is open;
//!   read_committed consumers never read at or past it.
//! - aborted transactions: (producer id, first offset, offset of the abort
//!   marker), in marker order, so a read_committed fetch can tell clients
//!   which batches to drop.
//!
//! Neither is persisted on its own: both are rebuilt at start-up from the
//! `idx` CF, whose entries keep the attributes and marker type of
//! transactional batches (see `db::IndexEntry`). A marker is written in the
//! same RocksDB write as its index entry, so the rebuilt state is exactly the
//! state before the restart. Batches removed by retention take their part of
//! a transaction with them; what remains is rebuilt from the first remaining
//! batch, which is all a reader can still fetch.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::EndTxnMarker;
use kafka_protocol::protocol::Encodable;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::batch::{read_header, ValidBatch};
use crate::error::{BrokerError, BrokerResult};

/// Control record types (the `type` in a control record's key).
pub const CONTROL_ABORT: i16 = 0;
pub const CONTROL_COMMIT: i16 = 1;

/// An aborted transaction on one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// Offset of the ABORT marker.
    pub last_offset: i64,
}

/// What a marker changed, so a failed write can be undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnChange {
    /// A producer's first transactional batch opened a transaction.
    Opened { producer_id: i64 },
    /// A marker closed the transaction that began at `first_offset`;
    /// `aborted` if it was an abort (an `AbortedTxn` was recorded).
    Closed {
        producer_id: i64,
        first_offset: i64,
        aborted: bool,
    },
}

/// Open and aborted transactions of one partition.
#[derive(Debug, Default)]
pub struct PartitionTxns {
    open: HashMap<i64, i64>,
    /// Ordered by `last_offset` (markers are appended in offset order).
    aborted: Vec<AbortedTxn>,
}

impl PartitionTxns {
    /// A transactional data batch of `producer_id` at `base`: opens its
    /// transaction here unless one is open already.
    pub fn on_data(&mut self, producer_id: i64, base: i64) -> Option<TxnChange> {
        if self.open.contains_key(&producer_id) {
            return None;
        }
        self.open.insert(producer_id, base);
        Some(TxnChange::Opened { producer_id })
    }

    /// A marker of `producer_id` at `offset`. A marker for a producer with
    /// no open transaction here changes nothing (markers may be written again
    /// after a restart, and to partitions the transaction never wrote to).
    pub fn on_marker(&mut self, producer_id: i64, offset: i64, commit: bool) -> Option<TxnChange> {
        let first_offset = self.open.remove(&producer_id)?;
        if !commit {
            self.aborted.push(AbortedTxn {
                producer_id,
                first_offset,
                last_offset: offset,
            });
        }
        Some(TxnChange::Closed {
            producer_id,
            first_offset,
            aborted: !commit,
        })
    }

    /// Reverts a change (the write that carried it failed). Changes must be
    /// undone newest first.
    pub fn undo(&mut self, change: TxnChange) {
        match change {
            TxnChange::Opened { producer_id } => {
                self.open.remove(&producer_id);
            }
            TxnChange::Closed {
                producer_id,
                first_offset,
                aborted,
            } => {
                if aborted {
                    self.aborted.pop();
                }
                self.open.insert(producer_id, first_offset);
            }
        }
    }

    /// The last stable offset for a high watermark.
    pub fn lso(&self, high_watermark: i64) -> i64 {
        self.open
            .values()
            .copied()
            .min()
            .map_or(high_watermark, |first| first.min(high_watermark))
    }

    /// Producers with a transaction open here.
    pub fn open_producers(&self) -> Vec<i64> {
        self.open.keys().copied().collect()
    }

    /// Where `producer_id`'s open transaction began, if it has one here.
    pub fn open_start(&self, producer_id: i64) -> Option<i64> {
        self.open.get(&producer_id).copied()
    }

    /// Aborted transactions a fetch of `[from, to)` must report: those whose
    /// marker is at or after `from` and whose data begins before `to`.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted[start..]
            .iter()
            .filter(|a| a.first_offset < to)
            .copied()
            .collect()
    }

    /// Forgets aborted transactions wholly before the log start.
    pub fn drop_before(&mut self, log_start: i64) {
        let n = self.aborted.partition_point(|a| a.last_offset < log_start);
        self.aborted.drain(..n);
    }

    #[cfg(test)]
    pub fn aborted(&self) -> &[AbortedTxn] {
        &self.aborted
    }
}

/// What the writer knows about a transactional producer: its current epoch
/// and, while a transaction is ongoing, the partitions (uids) it may write to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxnGate {
    pub epoch: i16,
    pub ongoing: bool,
    pub partitions: HashSet<u64>,
}

/// The transaction coordinator's view shared with the writer thread, so a
/// transactional batch is appended only into an ongoing transaction that
/// includes its partition, checked in append order: a batch checked after
/// the coordinator ended the transaction is refused, one checked before is
/// written before the markers (which are queued after the gate closed).
#[derive(Debug, Default)]
pub struct ActiveTxns {
    gates: Mutex<HashMap<i64, TxnGate>>,
    /// Cluster mode, on a partition leader: the highest coordinator epoch
    /// a marker of (producer, partition uid) came with, so a deposed
    /// coordinator's late marker is refused (in memory: a new leader starts
    /// afresh, as the window it guards is a coordinator change).
    marker_epochs: Mutex<HashMap<(i64, u64), i32>>,
}

impl ActiveTxns {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, TxnGate>> {
        // Every update is a single map operation: a poisoned lock is consistent.
        self.gates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets a producer's gate.
    pub fn set(&self, producer_id: i64, gate: TxnGate) {
        self.lock().insert(producer_id, gate);
    }

    /// Forgets a producer id (rotated or expired).
    pub fn remove(&self, producer_id: i64) {
        self.lock().remove(&producer_id);
    }

    /// Cluster mode, on a partition leader: the transaction coordinator
    /// (elsewhere) confirmed that partition `uid` is part of the producer's
    /// ongoing transaction at `epoch` (KIP-890 verification).
    pub fn admit(&self, producer_id: i64, epoch: i16, uid: u64) {
        let mut gates = self.lock();
        let g = gates.entry(producer_id).or_default();
        if g.epoch != epoch || !g.ongoing {
            g.epoch = epoch;
            g.ongoing = true;
            g.partitions.clear();
        }
        g.partitions.insert(uid);
    }

    /// True if a transactional batch of the producer at `epoch` may go to `uid`.
    pub fn admits(&self, producer_id: i64, epoch: i16, uid: u64) -> bool {
        self.verify(producer_id, epoch, uid).is_ok()
    }

    /// A marker from a coordinator at `coordinator_epoch`: refused when a
    /// newer coordinator already wrote one for this producer here.
    pub fn check_marker_epoch(
        &self,
        producer_id: i64,
        uid: u64,
        coordinator_epoch: i32,
    ) -> BrokerResult<()> {
        let mut epochs = self
            .marker_epochs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let seen = epochs
            .entry((producer_id, uid))
            .or_insert(coordinator_epoch);
        if coordinator_epoch < *seen {
            return Err(BrokerError::TransactionCoordinatorFenced(format!(
                "A marker of producer {producer_id} from coordinator epoch {coordinator_epoch}; \
                 epoch {} already wrote here",
                *seen
            )));
        }
        *seen = coordinator_epoch;
        Ok(())
    }

    /// A marker is about to be written to partition `uid`: no batch of the
    /// producer's ended transaction may follow it there.
    pub fn close(&self, producer_id: i64, uid: u64) {
        if let Some(g) = self.lock().get_mut(&producer_id) {
            g.partitions.remove(&uid);
        }
    }

    /// Checks a transactional batch of `producer_id` at `epoch` for the partition `uid`.
    pub fn verify(&self, producer_id: i64, epoch: i16, uid: u64) -> BrokerResult<()> {
        let gates = self.lock();
        let Some(g) = gates.get(&producer_id) else {
            return Err(BrokerError::InvalidTxnState(format!(
                "Transactional batch from producer {producer_id}, which has no transaction"
            )));
        };
        if epoch != g.epoch {
            return Err(BrokerError::InvalidProducerEpoch(format!(
                "Transactional batch from producer {producer_id} with epoch {epoch}; \
                 the current epoch is {}",
                g.epoch
            )));
        }
        if !g.ongoing || !g.partitions.contains(&uid) {
            return Err(BrokerError::InvalidTxnState(format!(
                "Transactional batch from producer {producer_id} for a partition that is not \
                 part of an ongoing transaction"
            )));
        }
        Ok(())
    }
}

/// A COMMIT or ABORT marker: a magic-2 control batch (attributes
/// transactional | control) of the producer, base sequence -1, with one
/// record whose key is version 0 + the control type and whose value is an
/// `EndTxnMarker` (version 0, the coordinator epoch).
pub fn control_batch(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp: i64,
) -> BrokerResult<ValidBatch> {
    let encode_err = |e: &dyn std::fmt::Display| {
        BrokerError::Storage(format!("cannot encode a transaction marker: {e}"))
    };
    let mut key = BytesMut::with_capacity(4);
    key.put_i16(0);
    key.put_i16(if commit {
        CONTROL_COMMIT
    } else {
        CONTROL_ABORT
    });
    let mut value = BytesMut::with_capacity(6);
    value.put_i16(0);
    EndTxnMarker::default()
        .with_coordinator_epoch(coordinator_epoch)
        .encode(&mut value, 0)
        .map_err(|e| encode_err(&e))?;
    let record = Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp,
        key: Some(key.freeze()),
        value: Some(value.freeze()),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [&record],
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| encode_err(&e))?;
    let bytes = buf.freeze();
    let header = read_header(&bytes)
        .ok_or_else(|| BrokerError::Storage("encoded transaction marker is truncated".into()))?;
    Ok(ValidBatch { bytes, header })
}

/// The control type of a control batch's first record (0 abort, 1 commit),
/// or `None` if it cannot be read.
pub fn control_type(batch: &Bytes) -> Option<i16> {
    let h = read_header(batch)?;
    // A marker is one tiny uncompressed record; anything bigger is not one.
    let section = crate::records::layout::records_section(batch, 4096).ok()?;
    let first = crate::records::walk::records(&section, h.records_count)
        .next()?
        .ok()?;
    let key = first.key?;
    (key.len() >= 4).then(|| i16::from_be_bytes([key[2], key[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lso_follows_the_first_open_transaction() {
        let mut t = PartitionTxns::default();
        assert_eq!(t.lso(10), 10);
        assert_eq!(t.on_data(1, 10), Some(TxnChange::Opened { producer_id: 1 }));
        // Later batches of the same transaction do not move its start.
        assert_eq!(t.on_data(1, 12), None);
        t.on_data(2, 11);
        assert_eq!(t.lso(15), 10);
        assert_eq!(t.open_start(1), Some(10));
        t.on_marker(1, 15, true);
        assert_eq!(t.lso(16), 11);
        t.on_marker(2, 16, false);
        assert_eq!(t.lso(17), 17);
        assert_eq!(
            t.aborted(),
            &[AbortedTxn {
                producer_id: 2,
                first_offset: 11,
                last_offset: 16
            }]
        );
    }

    #[test]
    fn markers_without_an_open_transaction_are_harmless() {
        let mut t = PartitionTxns::default();
        assert_eq!(t.on_marker(7, 3, false), None);
        assert_eq!(t.on_marker(7, 4, true), None);
        assert!(t.aborted().is_empty());
        assert_eq!(t.lso(5), 5);
    }

    #[test]
    fn aborted_ranges_overlapping_a_fetch() {
        let mut t = PartitionTxns::default();
        t.on_data(1, 0);
        t.on_marker(1, 5, false); // aborted 0..=5
        t.on_data(2, 6);
        t.on_data(3, 7);
        t.on_marker(2, 9, true); // committed
        t.on_marker(3, 10, false); // aborted 7..=10
        let pids = |v: Vec<AbortedTxn>| v.iter().map(|a| a.producer_id).collect::<Vec<_>>();
        assert_eq!(pids(t.aborted_between(0, 11)), vec![1, 3]);
        assert_eq!(pids(t.aborted_between(6, 11)), vec![3]);
        // The second abort's data starts at 7: a fetch ending before it skips it.
        assert_eq!(pids(t.aborted_between(0, 7)), vec![1]);
        assert_eq!(pids(t.aborted_between(11, 20)), Vec::<i64>::new());
        t.drop_before(6);
        assert_eq!(pids(t.aborted_between(0, 11)), vec![3]);
    }

    #[test]
    fn undo_restores_the_previous_state() {
        let mut t = PartitionTxns::default();
        let opened = t.on_data(1, 4).unwrap();
        let closed = t.on_marker(1, 6, false).unwrap();
        t.undo(closed);
        assert_eq!(t.open_start(1), Some(4));
        assert!(t.aborted().is_empty());
        t.undo(opened);
        assert_eq!(t.lso(9), 9);
    }

    #[test]
    fn markers_from_a_deposed_coordinator_are_fenced() {
        let a = ActiveTxns::default();
        a.check_marker_epoch(7, 1, 3).unwrap();
        a.check_marker_epoch(7, 1, 3).unwrap();
        a.check_marker_epoch(7, 1, 5).unwrap();
        assert!(matches!(
            a.check_marker_epoch(7, 1, 4),
            Err(BrokerError::TransactionCoordinatorFenced(_))
        ));
        // Other partitions and producers are tracked apart.
        a.check_marker_epoch(7, 2, 0).unwrap();
        a.check_marker_epoch(8, 1, 0).unwrap();
    }

    #[test]
    fn gate_checks_epoch_state_and_partition() {
        let a = ActiveTxns::default();
        assert!(matches!(
            a.verify(5, 0, 1),
            Err(BrokerError::InvalidTxnState(_))
        ));
        a.set(
            5,
            TxnGate {
                epoch: 2,
                ongoing: true,
                partitions: [1u64].into_iter().collect(),
            },
        );
        assert!(a.verify(5, 2, 1).is_ok());
        assert!(matches!(
            a.verify(5, 1, 1),
            Err(BrokerError::InvalidProducerEpoch(_))
        ));
        assert!(matches!(
            a.verify(5, 2, 2),
            Err(BrokerError::InvalidTxnState(_))
        ));
        a.set(
            5,
            TxnGate {
                epoch: 3,
                ..Default::default()
            },
        );
        assert!(matches!(
            a.verify(5, 3, 1),
            Err(BrokerError::InvalidTxnState(_))
        ));
    }

    #[test]
    fn markers_are_control_batches() {
        let b = control_batch(77, 3, true, 0, 1234).unwrap();
        let h = b.header;
        assert!(h.is_control());
        assert_eq!(h.attributes & 0x30, 0x30);
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (77, 3, -1)
        );
        assert_eq!(h.records_count, 1);
        assert_eq!(control_type(&b.bytes), Some(CONTROL_COMMIT));
        let abort = control_batch(77, 3, false, 0, 1234).unwrap();
        assert_eq!(control_type(&abort.bytes), Some(CONTROL_ABORT));
        // Key: version 0 + type; value: version 0 + coordinator epoch (6 bytes).
        let mut bytes = abort.bytes.clone();
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).unwrap();
        let r = &set.records[0];
        assert!(r.control && r.transactional);
        assert_eq!(r.key.as_deref(), Some(&[0u8, 0, 0, 0][..]));
        assert_eq!(r.value.as_deref(), Some(&[0u8, 0, 0, 0, 0, 0][..]));
        // The CRC covers attributes to the end.
        let b = &abort.bytes;
        let stored = u32::from_be_bytes([b[17], b[18], b[19], b[20]]);
        assert_eq!(stored, crc32c::crc32c(&b[21..]));
    }
}
