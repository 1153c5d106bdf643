//! The follower's side of the log, run on the writer thread: batches copied
//! from the leader are stored at the leader's offsets, with the producer,
//! transaction and leader-epoch state they imply (so a follower promoted to
//! leader deduplicates retries and keeps the LSO right); and the changes
//! leadership makes to a log: starting an epoch, truncating a divergent
//! tail, restarting behind the leader's log start.

use std::sync::Arc;

use rocksdb::{WriteBatch, WriteOptions};

use super::batch::leader_epoch_of;
use super::db::{
    log_key, log_start_key, IndexEntry, ProducerFields, Store, CF_IDX, CF_LOG, CF_META,
};
use super::leader_epochs::epochs_key;
use super::partition::Partition;
use super::producers::last_sequence;
use super::writer::{track_txn, LogChange, PartitionAppend};
use crate::error::{BrokerError, BrokerResult};

/// A partition staged in a replica write: where its offsets stood before,
/// and (base, batch, next offset) for each batch to publish after.
type Staged<'a> = (&'a Arc<Partition>, i64, Vec<(i64, bytes::Bytes, i64)>);

/// Stores each partition's batches from the leader, all in one RocksDB
/// write (a fetch answer's worth). Batches a replica already has are
/// skipped; a gap (the leader compacted or its log start moved) is
/// accepted, as offsets stay increasing. One outcome per entry.
pub fn replicate_all(
    store: &Store,
    opts: &WriteOptions,
    entries: &[PartitionAppend],
) -> Vec<BrokerResult<()>> {
    let cfs = store
        .check_free_space()
        .and_then(|()| Ok((store.cf(CF_LOG)?, store.cf(CF_IDX)?, store.cf(CF_META)?)));
    let (log, idx, meta) = match cfs {
        Ok(c) => c,
        Err(e) => return entries.iter().map(|_| Err(e.clone())).collect(),
    };
    let mut wb = super::writer::write_batch_for(entries.iter());
    let mut outcomes: Vec<BrokerResult<()>> = Vec::with_capacity(entries.len());
    // Per staged entry: where its offsets stood, what to publish after.
    let mut staged: Vec<Staged<'_>> = Vec::new();
    let mut txn_undo = Vec::new();
    for entry in entries {
        let p = &entry.partition;
        if p.is_deleted() {
            outcomes.push(Err(BrokerError::UnknownTopicOrPartition));
            continue;
        }
        let before = p.next_offset();
        let mut placed = Vec::new();
        let mut epochs_changed = false;
        for b in &entry.batches {
            let h = &b.header;
            if h.base_offset < p.next_offset() {
                continue;
            }
            let base = h.base_offset;
            let next = h.last_offset() + 1;
            epochs_changed |= p.epochs().assign(leader_epoch_of(&b.bytes), base);
            let producer = h.has_producer_id().then_some(ProducerFields {
                producer_id: h.producer_id,
                producer_epoch: h.producer_epoch,
                base_sequence: h.base_sequence,
            });
            if producer.is_some() {
                let mut states = p.producers();
                if h.is_control() {
                    states.fence(h.producer_id, h.producer_epoch, h.max_timestamp);
                } else {
                    states.record(
                        h.producer_id,
                        h.producer_epoch,
                        h.base_sequence,
                        last_sequence(h.base_sequence, h.last_offset_delta),
                        base,
                        h.max_timestamp,
                    );
                }
            }
            let txn = producer.and_then(|_| track_txn(p, b, base, &mut txn_undo));
            let summary = IndexEntry {
                max_timestamp: h.max_timestamp,
                last_offset_delta: h.last_offset_delta,
                size: u32::try_from(b.bytes.len()).unwrap_or(u32::MAX),
            };
            let key = log_key(p.uid, base);
            wb.put_cf(&log, key, &b.bytes);
            wb.put_cf(&idx, key, summary.encode_full(producer, txn));
            p.set_next_offset(next);
            placed.push((base, b.bytes.clone(), next));
        }
        if epochs_changed {
            wb.put_cf(&meta, epochs_key(p.uid), p.epochs().encode());
        }
        outcomes.push(Ok(()));
        if !placed.is_empty() {
            staged.push((p, before, placed));
        }
    }
    if staged.is_empty() {
        return outcomes;
    }
    if let Err(e) = store.db.write_opt(wb, opts) {
        let err = BrokerError::from(e);
        tracing::error!(error = %err, "replica write failed");
        // Put the state back as the store has it.
        for (q, change) in txn_undo.into_iter().rev() {
            q.txns().undo(change);
        }
        // Newest first: a partition staged twice ends where it began.
        for (p, before, _) in staged.iter().rev() {
            p.set_next_offset(*before);
            if let Err(e) = p.recover_producers(store) {
                tracing::error!(topic = %p.topic, partition = p.id.get(), error = %e, "cannot rebuild producer state");
            }
        }
        return entries.iter().map(|_| Err(err.clone())).collect();
    }
    for (p, _, placed) in staged {
        for (base, bytes, next) in placed {
            p.publish(base, bytes, next);
        }
    }
    outcomes
}

/// Applies a leadership change to the log.
pub fn change(
    store: &Store,
    opts: &WriteOptions,
    p: &Arc<Partition>,
    change: LogChange,
) -> BrokerResult<()> {
    let meta = store.cf(CF_META)?;
    match change {
        LogChange::Lead { epoch } => {
            p.set_leader_epoch(epoch);
            if p.epochs().assign(epoch, p.next_offset()) {
                store
                    .db
                    .put_cf_opt(&meta, epochs_key(p.uid), p.epochs().encode(), opts)?;
            }
            Ok(())
        }
        LogChange::TruncateTo { offset } => {
            if offset >= p.next_offset() {
                return Ok(());
            }
            // Cut at the start of the batch holding `offset`.
            let cut = batch_start(store, p, offset)?.max(p.log_start_offset());
            let (log, idx) = (store.cf(CF_LOG)?, store.cf(CF_IDX)?);
            let mut wb = WriteBatch::default();
            let (from, to) = (log_key(p.uid, cut), log_key(p.uid + 1, 0));
            wb.delete_range_cf(&log, from, to);
            wb.delete_range_cf(&idx, from, to);
            p.epochs().truncate_from(cut);
            wb.put_cf(&meta, epochs_key(p.uid), p.epochs().encode());
            store.db.write_opt(wb, opts)?;
            p.truncated(store, cut)?;
            tracing::info!(topic = %p.topic, partition = p.id.get(), offset = cut, "log truncated to the leader's");
            Ok(())
        }
        LogChange::RestartAt { start } => {
            let (log, idx) = (store.cf(CF_LOG)?, store.cf(CF_IDX)?);
            let mut wb = WriteBatch::default();
            let (from, to) = (log_key(p.uid, 0), log_key(p.uid + 1, 0));
            wb.delete_range_cf(&log, from, to);
            wb.delete_range_cf(&idx, from, to);
            p.epochs().truncate_from(i64::MIN);
            wb.put_cf(&meta, epochs_key(p.uid), p.epochs().encode());
            wb.put_cf(&meta, log_start_key(p.uid), start.to_be_bytes());
            store.db.write_opt(wb, opts)?;
            p.restarted_at(store, start)?;
            tracing::info!(topic = %p.topic, partition = p.id.get(), log_start = start, "log restarted at the leader's log start");
            Ok(())
        }
        LogChange::AdvanceStart { start } => {
            p.truncate_head(store, start.min(p.high_watermark()))?;
            Ok(())
        }
    }
}

/// The base offset of the batch holding `offset` (or `offset` if none does).
fn batch_start(store: &Store, p: &Partition, offset: i64) -> BrokerResult<i64> {
    let idx = store.cf(CF_IDX)?;
    let mut it = store.db.raw_iterator_cf(&idx);
    it.seek_for_prev(log_key(p.uid, offset));
    let found = match (it.key(), it.value()) {
        (Some(k), Some(v)) => super::db::parse_log_key(k)
            .filter(|(uid, _)| *uid == p.uid)
            .and_then(|(_, base)| {
                let e = IndexEntry::decode(v)?;
                (base + i64::from(e.last_offset_delta) >= offset).then_some(base)
            }),
        _ => None,
    };
    it.status()?;
    Ok(found.unwrap_or(offset))
}
