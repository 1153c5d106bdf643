//! One partition's live state: offsets, the in-memory tail of recent batches,
//! waiters for new data, and reads of batch ranges.
//!
//! Only the writer thread changes `next_offset`, the producer state and the
//! transaction state; it publishes the high watermark and the last stable
//! offset after each durable write, so readers never see unacknowledged data
//! and never take a lock shared with other partitions.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};
use tokio::sync::Notify;

use super::batch::read_header;
use super::db::{
    log_key, log_start_key, parse_log_key, IndexEntry, Store, CF_IDX, CF_LOG, CF_META,
};
use super::leader_epochs::{epochs_key, EpochCache};
use super::producers::{last_sequence, ProducerStates};
use super::txns::{AbortedTxn, PartitionTxns, CONTROL_COMMIT};
use crate::error::{BrokerError, BrokerResult};
use crate::types::PartitionId;

/// How far past its limit a leader's tail cache may grow to keep batches its
/// in-sync followers have not fetched yet.
const TAIL_FOLLOWER_FACTOR: usize = 16;

/// A batch held in memory for readers at the tail of the log.
struct CachedBatch {
    base: i64,
    bytes: Bytes,
}

/// The most recent batches of a partition, a contiguous suffix of the log.
#[derive(Default)]
struct TailCache {
    batches: VecDeque<CachedBatch>,
    bytes: usize,
}

pub struct Partition {
    pub topic: Arc<str>,
    pub id: PartitionId,
    /// Storage identity, never reused (see `db`).
    pub uid: u64,
    next_offset: AtomicI64,
    /// The offset after the last durable batch (the log end offset readers
    /// and followers see; `next_offset` runs ahead of it while a write is in
    /// flight).
    log_end: AtomicI64,
    high_watermark: AtomicI64,
    /// Cluster mode: the high watermark follows the in-sync replicas instead
    /// of the log end (see `set_follower_floor`).
    replicated: AtomicBool,
    /// Leader: the smallest log end offset among the other in-sync replicas
    /// (`i64::MAX` when there are none). Follower: `i64::MIN`, so appends
    /// never move the high watermark; the leader's answers do.
    follower_floor: AtomicI64,
    /// The leader epoch stamped into the batches this broker appends as leader.
    leader_epoch: AtomicI32,
    /// Where each leader epoch began (persisted; see `leader_epochs`).
    epochs: Mutex<EpochCache>,
    /// The last stable offset: read_committed readers stop here.
    last_stable: AtomicI64,
    log_start: AtomicI64,
    /// Bytes of stored batches (for metrics and DescribeLogDirs).
    size: AtomicU64,
    deleted: AtomicBool,
    tail: Mutex<TailCache>,
    tail_limit: usize,
    /// Idempotent producers' sequence state. Only the writer thread (and
    /// recovery, before it starts) touches it, so the lock is never contended.
    producers: Mutex<ProducerStates>,
    /// Open and aborted transactions. Changed by the writer thread only;
    /// fetches read the aborted ones.
    txns: Mutex<PartitionTxns>,
    /// Woken whenever the high watermark or the last stable offset moves
    /// (long-poll fetches wait here).
    pub appended: Notify,
}

/// What a read returns: whole batches in offset order, as one buffer.
///
/// A single cached batch is handed out without copying; several batches, or
/// batches read from RocksDB, are copied once into one contiguous buffer.
#[derive(Default)]
pub struct ReadResult {
    single: Option<Bytes>,
    joined: BytesMut,
    pub batches: usize,
    /// The offset after the last batch returned (0 when none was).
    end: i64,
}

impl ReadResult {
    pub fn len(&self) -> usize {
        self.single.as_ref().map_or(0, Bytes::len) + self.joined.len()
    }

    /// The offset after the last batch returned, if any was.
    pub fn end_offset(&self) -> Option<i64> {
        (self.batches > 0).then_some(self.end)
    }

    fn note_end(&mut self, batch: &[u8]) {
        if let Some(h) = read_header(batch) {
            self.end = h.last_offset() + 1;
        }
    }

    fn push_shared(&mut self, batch: &Bytes) {
        self.note_end(batch);
        match (self.batches, self.single.take()) {
            (0, _) => self.single = Some(batch.clone()),
            (_, Some(first)) => {
                self.joined.extend_from_slice(&first);
                self.joined.extend_from_slice(batch);
            }
            (_, None) => self.joined.extend_from_slice(batch),
        }
        self.batches += 1;
    }

    fn push_slice(&mut self, batch: &[u8]) {
        self.note_end(batch);
        if let Some(first) = self.single.take() {
            self.joined.extend_from_slice(&first);
        }
        self.joined.extend_from_slice(batch);
        self.batches += 1;
    }

    pub fn into_bytes(self) -> Bytes {
        match self.single {
            Some(b) => b,
            None => self.joined.freeze(),
        }
    }
}

impl Partition {
    pub fn new(topic: Arc<str>, id: PartitionId, uid: u64, tail_limit: usize) -> Self {
        Partition {
            topic,
            id,
            uid,
            next_offset: AtomicI64::new(0),
            log_end: AtomicI64::new(0),
            high_watermark: AtomicI64::new(0),
            replicated: AtomicBool::new(false),
            follower_floor: AtomicI64::new(i64::MIN),
            leader_epoch: AtomicI32::new(0),
            epochs: Mutex::new(EpochCache::default()),
            last_stable: AtomicI64::new(0),
            log_start: AtomicI64::new(0),
            size: AtomicU64::new(0),
            deleted: AtomicBool::new(false),
            tail: Mutex::new(TailCache::default()),
            tail_limit,
            producers: Mutex::new(ProducerStates::default()),
            txns: Mutex::new(PartitionTxns::default()),
            appended: Notify::new(),
        }
    }

    /// Rebuilds offsets from what RocksDB holds.
    pub fn recover(&self, store: &Store) -> BrokerResult<()> {
        let idx = store.cf(CF_IDX)?;
        let mut it = store.db.raw_iterator_cf(&idx);
        it.seek_for_prev(log_key(self.uid, i64::MAX));
        let mut next = 0;
        if let (Some(k), Some(v)) = (it.key(), it.value()) {
            if let (Some((uid, base)), Some(e)) = (parse_log_key(k), IndexEntry::decode(v)) {
                if uid == self.uid {
                    next = base + i64::from(e.last_offset_delta) + 1;
                }
            }
        }
        it.status()?;
        let mut start = next;
        it.seek(log_key(self.uid, 0));
        if let Some(k) = it.key() {
            if let Some((uid, base)) = parse_log_key(k) {
                if uid == self.uid {
                    start = base;
                }
            }
        }
        it.status()?;
        // DeleteRecords and retention may have moved the start past the first
        // stored batch (or past everything): that position is kept in `meta`.
        let meta = store.cf(CF_META)?;
        if let Some(v) = store.db.get_cf(meta, log_start_key(self.uid))? {
            if let Ok(b) = <[u8; 8]>::try_from(v.as_slice()) {
                let stored = i64::from_be_bytes(b);
                start = start.max(stored);
                next = next.max(stored);
            }
        }
        self.next_offset.store(next, Ordering::SeqCst);
        self.log_end.store(next, Ordering::SeqCst);
        self.high_watermark.store(next, Ordering::SeqCst);
        self.log_start.store(start, Ordering::SeqCst);
        if let Some(v) = store.db.get_cf(meta, epochs_key(self.uid))? {
            *self.epochs() = EpochCache::decode(&v);
        }
        // One pass over the index at start-up; kept current by appends and truncation after.
        let size = self
            .index_entries(store)?
            .iter()
            .map(|(_, e)| u64::from(e.size))
            .sum();
        self.size.store(size, Ordering::Relaxed);
        self.recover_producers(store)?;
        let lso = self.txns().lso(next);
        self.last_stable.store(lso, Ordering::SeqCst);
        Ok(())
    }

    /// Rebuilds idempotent producers' state by replaying the index in offset
    /// order: each producer ends up with its latest epoch and last batches.
    /// Transactional batches and markers rebuild the open and aborted
    /// transactions the same way.
    ///
    /// Cost: this reads every index entry of the partition (about 40 bytes per
    /// batch, without touching the batches), so start-up time grows with the
    /// number of batches retained. It could share one pass with the other
    /// start-up scans of the index; a persisted producer-state snapshot would
    /// bound it to the batches written since the snapshot.
    pub(super) fn recover_producers(&self, store: &Store) -> BrokerResult<()> {
        let idx = store.cf(CF_IDX)?;
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(log_key(self.uid.saturating_add(1), 0).to_vec());
        let mut it = store.db.raw_iterator_cf_opt(&idx, opts);
        it.seek(log_key(self.uid, 0));
        let mut states = ProducerStates::default();
        let mut txns = PartitionTxns::default();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let Some((uid, base)) = parse_log_key(k) else {
                break;
            };
            if uid != self.uid {
                break;
            }
            let producer = IndexEntry::decode_producer(v).filter(|p| p.producer_id >= 0);
            let txn = IndexEntry::decode_txn(v);
            if let (Some(e), Some(p)) = (IndexEntry::decode(v), producer) {
                match txn {
                    Some(t) if t.is_control() => {
                        states.fence(p.producer_id, p.producer_epoch, e.max_timestamp);
                        let commit = i16::from(t.control_type) == CONTROL_COMMIT;
                        txns.on_marker(p.producer_id, base, commit);
                    }
                    _ => {
                        let last = last_sequence(p.base_sequence, e.last_offset_delta);
                        states.record(
                            p.producer_id,
                            p.producer_epoch,
                            p.base_sequence,
                            last,
                            base,
                            e.max_timestamp,
                        );
                        if txn.is_some_and(|t| t.is_transactional()) {
                            txns.on_data(p.producer_id, base);
                        }
                    }
                }
            }
            it.next();
        }
        it.status()?;
        txns.drop_before(self.log_start_offset());
        *self.producers() = states;
        *self.txns() = txns;
        Ok(())
    }

    /// Writer thread only: the idempotent producers' state.
    pub(super) fn producers(&self) -> MutexGuard<'_, ProducerStates> {
        // Updates are single copies, so a panic while holding the lock cannot
        // leave the state half-updated: a poisoned lock is still usable.
        self.producers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writer thread (and readers of the aborted list): the transaction state.
    pub(crate) fn txns(&self) -> MutexGuard<'_, PartitionTxns> {
        // Every change is a single map or vector operation: a poisoned lock
        // still holds a consistent state.
        self.txns
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// The offset after the last durable batch.
    pub fn log_end_offset(&self) -> i64 {
        self.log_end.load(Ordering::Acquire)
    }

    /// The leader-epoch cache.
    pub fn epochs(&self) -> MutexGuard<'_, EpochCache> {
        // Each change is one vector operation: a poisoned lock is consistent.
        self.epochs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The epoch this broker stamps into batches it appends as leader.
    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    pub(super) fn set_leader_epoch(&self, epoch: i32) {
        self.leader_epoch.store(epoch, Ordering::Release);
    }

    /// Whether the high watermark follows replication (cluster mode).
    pub fn is_replicated(&self) -> bool {
        self.replicated.load(Ordering::Acquire)
    }

    /// Hands the high watermark to replication: from now on it moves only
    /// with `set_follower_floor` (leader) or `follow_high_watermark` (follower).
    pub fn set_replicated(&self) {
        self.replicated.store(true, Ordering::Release);
    }

    /// Leader: the other in-sync replicas have all reached `floor`
    /// (`i64::MAX` when there are none); the high watermark moves up to it.
    /// Follower: `i64::MIN`.
    pub fn set_follower_floor(&self, floor: i64) {
        self.follower_floor.store(floor, Ordering::Release);
        if floor != i64::MIN {
            self.advance_high_watermark(self.log_end_offset().min(floor));
        }
    }

    /// Follower: the leader's high watermark, bounded by what this replica has.
    pub fn follow_high_watermark(&self, leader_hw: i64) {
        self.advance_high_watermark(leader_hw.min(self.log_end_offset()));
    }

    /// Moves the high watermark forward to `hw` (never back), then the LSO.
    fn advance_high_watermark(&self, hw: i64) {
        let before = self.high_watermark.fetch_max(hw, Ordering::AcqRel);
        if hw > before {
            let lso = self.txns().lso(hw);
            self.last_stable.store(lso, Ordering::Release);
            self.appended.notify_waiters();
        }
    }

    /// The last stable offset: the first offset of the oldest open
    /// transaction, or the high watermark when none is open.
    pub fn last_stable_offset(&self) -> i64 {
        self.last_stable.load(Ordering::Acquire)
    }

    /// Aborted transactions a read_committed fetch of `[from, to)` reports.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.txns().aborted_between(from, to)
    }

    /// Where this producer's open transaction began here, if it has one.
    pub fn open_txn_start(&self, producer_id: i64) -> Option<i64> {
        self.txns().open_start(producer_id)
    }

    /// Forgets producers idle here since before `cutoff` (ms) that have no
    /// open transaction here; returns how many went.
    pub fn expire_producers(&self, cutoff: i64) -> usize {
        // Read the open transactions first: the writer takes the producer
        // lock before the transaction lock, so never hold both here.
        let open: Vec<i64> = self.txns().open_producers();
        self.producers().expire(cutoff, |id| open.contains(&id))
    }

    /// Every producer this partition knows: (id, epoch, last sequence, last append time).
    pub fn producer_snapshot(&self) -> Vec<(i64, i16, i32, i64)> {
        self.producers().snapshot()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start.load(Ordering::Acquire)
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    pub fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
        if let Ok(mut t) = self.tail.lock() {
            *t = TailCache::default();
        }
        self.appended.notify_waiters();
    }

    /// Writer thread only: the offset the next batch gets.
    pub(super) fn next_offset(&self) -> i64 {
        self.next_offset.load(Ordering::Relaxed)
    }

    /// Writer thread only: reserve offsets for a batch being written.
    pub(super) fn set_next_offset(&self, next: i64) {
        self.next_offset.store(next, Ordering::Relaxed)
    }

    /// Writer thread only: the batch with this base offset is durable.
    pub(super) fn publish(&self, base: i64, batch: Bytes, new_end: i64) {
        self.size.fetch_add(batch.len() as u64, Ordering::Relaxed);
        if let Ok(mut t) = self.tail.lock() {
            // Keep the cache a contiguous suffix: drop it if this batch does not follow.
            let contiguous = t
                .batches
                .back()
                .and_then(|b| read_header(&b.bytes))
                .is_none_or(|h| h.last_offset() + 1 == base);
            if !contiguous {
                *t = TailCache::default();
            }
            t.bytes += batch.len();
            t.batches.push_back(CachedBatch { base, bytes: batch });
            // A leader keeps what an in-sync follower has yet to fetch (up to
            // a bound), so followers read from memory rather than the store.
            let floor = self.follower_floor.load(Ordering::Acquire);
            let hard_limit = self.tail_limit.saturating_mul(TAIL_FOLLOWER_FACTOR);
            while t.bytes > self.tail_limit && t.batches.len() > 1 {
                let unfetched =
                    floor != i64::MIN && t.batches.get(1).is_some_and(|next| next.base > floor);
                if unfetched && t.bytes <= hard_limit {
                    break;
                }
                if let Some(old) = t.batches.pop_front() {
                    t.bytes -= old.bytes.len();
                }
            }
        }
        self.log_end.store(new_end, Ordering::Release);
        if self.is_replicated() {
            // Followers long-poll here too, for the new log end.
            let floor = self.follower_floor.load(Ordering::Acquire);
            if floor != i64::MIN {
                self.advance_high_watermark(new_end.min(floor));
            }
            self.appended.notify_waiters();
            return;
        }
        self.high_watermark.store(new_end, Ordering::Release);
        // The transaction state already reflects the whole durable group.
        let lso = self.txns().lso(new_end);
        self.last_stable.store(lso, Ordering::Release);
        self.appended.notify_waiters();
    }

    /// Writer thread only: the log was cut at `end` (a follower dropping a
    /// tail its leader does not have). Offsets, the cache, the producer and
    /// transaction state and the size are made to match what is stored.
    pub(super) fn truncated(&self, store: &Store, end: i64) -> BrokerResult<()> {
        self.next_offset.store(end, Ordering::SeqCst);
        self.log_end.store(end, Ordering::SeqCst);
        let _ = self.high_watermark.fetch_min(end, Ordering::AcqRel);
        if let Ok(mut t) = self.tail.lock() {
            *t = TailCache::default();
        }
        let size = self
            .index_entries_below(store, end)?
            .iter()
            .map(|(_, e)| u64::from(e.size))
            .sum();
        self.size.store(size, Ordering::Relaxed);
        self.recover_producers(store)?;
        let lso = self.txns().lso(self.high_watermark());
        self.last_stable.store(lso, Ordering::Release);
        Ok(())
    }

    /// Writer thread only: the log now starts (and, empty, ends) at `start`.
    pub(super) fn restarted_at(&self, store: &Store, start: i64) -> BrokerResult<()> {
        self.log_start.store(start, Ordering::SeqCst);
        self.high_watermark.store(start, Ordering::SeqCst);
        self.truncated(store, start)
    }

    /// Reads whole batches from the one containing `offset` up to the log
    /// end (a follower's fetch: it replicates what is not committed yet).
    pub fn read_for_replica(
        &self,
        store: &Store,
        offset: i64,
        max_bytes: usize,
    ) -> BrokerResult<ReadResult> {
        let end = self.log_end_offset();
        if offset < self.log_start_offset() || offset > end {
            return Err(BrokerError::OffsetOutOfRange);
        }
        let mut out = ReadResult::default();
        if offset >= end {
            return Ok(out);
        }
        if !self.read_from_tail(offset, end, max_bytes, &mut out) {
            self.read_from_store(store, offset, end, max_bytes, &mut out)?;
        }
        Ok(out)
    }

    /// Reads whole batches from the one containing `offset` up to the high
    /// watermark, stopping once `max_bytes` is reached; the first batch is
    /// returned even if it alone is larger.
    ///
    /// With `committed` (read_committed) the read stops at the last stable
    /// offset instead: an offset between it and the high watermark reads
    /// nothing yet.
    pub fn read_upto(
        &self,
        store: &Store,
        offset: i64,
        max_bytes: usize,
        committed: bool,
    ) -> BrokerResult<ReadResult> {
        let hw = self.high_watermark();
        // Between the high watermark and the log end a replicated partition
        // has data not yet committed: nothing to read yet, not out of range.
        if offset < self.log_start_offset() || offset > hw.max(self.log_end_offset()) {
            return Err(BrokerError::OffsetOutOfRange);
        }
        let mut out = ReadResult::default();
        // A transaction's batches start at the LSO, so it is a batch boundary.
        let hw = if committed {
            self.last_stable_offset().min(hw)
        } else {
            hw
        };
        if offset >= hw {
            return Ok(out);
        }
        if self.read_from_tail(offset, hw, max_bytes, &mut out) {
            return Ok(out);
        }
        self.read_from_store(store, offset, hw, max_bytes, &mut out)?;
        Ok(out)
    }

    /// Serves the read from memory if the tail cache reaches back to `offset`.
    fn read_from_tail(&self, offset: i64, hw: i64, max_bytes: usize, out: &mut ReadResult) -> bool {
        let Ok(t) = self.tail.lock() else {
            return false;
        };
        match t.batches.front() {
            Some(first) if first.base <= offset => {}
            _ => return false,
        }
        // The batch containing `offset` is the last one whose base is <= offset.
        let start = t
            .batches
            .partition_point(|b| b.base <= offset)
            .saturating_sub(1);
        for b in t.batches.iter().skip(start) {
            if b.base >= hw || (out.batches > 0 && out.len() + b.bytes.len() > max_bytes) {
                break;
            }
            out.push_shared(&b.bytes);
        }
        true
    }

    fn read_from_store(
        &self,
        store: &Store,
        offset: i64,
        hw: i64,
        max_bytes: usize,
        out: &mut ReadResult,
    ) -> BrokerResult<()> {
        let log = store.cf(CF_LOG)?;
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(log_key(self.uid, hw).to_vec());
        let mut it = store.db.raw_iterator_cf_opt(&log, opts);
        it.seek_for_prev(log_key(self.uid, offset));
        // Nothing of this partition at or before `offset` (a gap at the start):
        // begin with the first batch after it.
        let ours = it
            .key()
            .and_then(parse_log_key)
            .is_some_and(|(uid, _)| uid == self.uid);
        if !ours {
            it.seek(log_key(self.uid, offset));
        }
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            let Some((uid, base)) = parse_log_key(k) else {
                break;
            };
            if uid != self.uid || base >= hw {
                break;
            }
            let Some(h) = read_header(v) else {
                return Err(BrokerError::Storage(format!(
                    "corrupt batch at {}-{} offset {base}",
                    self.topic,
                    self.id.get()
                )));
            };
            if h.last_offset() >= offset {
                if out.batches > 0 && out.len() + v.len() > max_bytes {
                    break;
                }
                out.push_slice(v);
                if out.len() >= max_bytes {
                    break;
                }
            }
            it.next();
        }
        it.status()?;
        Ok(())
    }

    /// Index entries in offset order: (base offset, entry).
    pub fn index_entries(&self, store: &Store) -> BrokerResult<Vec<(i64, IndexEntry)>> {
        self.index_entries_below(store, self.high_watermark())
    }

    /// Index entries of batches starting below `bound`, in offset order.
    fn index_entries_below(
        &self,
        store: &Store,
        bound: i64,
    ) -> BrokerResult<Vec<(i64, IndexEntry)>> {
        let idx = store.cf(CF_IDX)?;
        let mut out = Vec::new();
        let start = log_key(self.uid, 0);
        for item in store
            .db
            .iterator_cf(&idx, IteratorMode::From(&start, Direction::Forward))
        {
            let (k, v) = item?;
            let Some((uid, base)) = parse_log_key(&k) else {
                break;
            };
            if uid != self.uid || base >= bound {
                break;
            }
            if let Some(e) = IndexEntry::decode(&v) {
                out.push((base, e));
            }
        }
        Ok(out)
    }

    /// Moves the log start offset forward to `new_start` (never back, never past
    /// the high watermark) and removes every batch that lies wholly before it.
    /// Returns the bytes removed.
    pub fn truncate_head(&self, store: &Store, new_start: i64) -> BrokerResult<u64> {
        if new_start > self.high_watermark() {
            return Err(BrokerError::OffsetOutOfRange);
        }
        if new_start <= self.log_start_offset() {
            return Ok(0);
        }
        let mut end = new_start;
        let mut removed = 0u64;
        for (base, e) in self.index_entries(store)? {
            if base >= new_start {
                break;
            }
            if base + i64::from(e.last_offset_delta) >= new_start {
                // This batch holds `new_start`: it stays, and fetches skip into it.
                end = base;
                break;
            }
            removed += u64::from(e.size);
        }
        let (log, idx, meta) = (store.cf(CF_LOG)?, store.cf(CF_IDX)?, store.cf(CF_META)?);
        let mut wb = WriteBatch::default();
        let from = log_key(self.uid, 0);
        let to = log_key(self.uid, end);
        wb.delete_range_cf(log, from, to);
        wb.delete_range_cf(idx, from, to);
        wb.put_cf(meta, log_start_key(self.uid), new_start.to_be_bytes());
        {
            let mut epochs = self.epochs();
            if epochs.truncate_before(new_start) {
                wb.put_cf(meta, epochs_key(self.uid), epochs.encode());
            }
        }
        store.db.write(wb)?;
        self.log_start.fetch_max(new_start, Ordering::AcqRel);
        self.txns().drop_before(new_start);
        let _ = self
            .size
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some(s.saturating_sub(removed))
            });
        tracing::info!(topic = %self.topic, partition = self.id.get(), log_start = new_start, bytes = removed, "log start offset advanced");
        Ok(removed)
    }

    /// Forgets cached batches below `offset` after compaction rewrote them, so
    /// readers see the compacted log. What stays is still a contiguous suffix.
    pub fn drop_cached_below(&self, offset: i64) {
        if let Ok(mut t) = self.tail.lock() {
            while t.batches.front().is_some_and(|b| b.base < offset) {
                if let Some(old) = t.batches.pop_front() {
                    t.bytes -= old.bytes.len();
                }
            }
        }
    }

    /// Compaction replaced `before` bytes of batches with `after` bytes.
    pub fn adjust_size(&self, before: u64, after: u64) {
        let _ = self
            .size
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some(s.saturating_sub(before).saturating_add(after))
            });
    }

    /// Bytes of the batches stored for this partition.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Relaxed)
    }

    /// The stored batch with this base offset.
    pub fn batch_at(&self, store: &Store, base: i64) -> BrokerResult<Option<Bytes>> {
        let log = store.cf(CF_LOG)?;
        Ok(store
            .db
            .get_pinned_cf(&log, log_key(self.uid, base))?
            .map(|v| Bytes::copy_from_slice(&v)))
    }
}
