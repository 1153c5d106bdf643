//! Log compaction (`cleanup.policy=compact`): keeps the latest record per key,
//! drops tombstones older than `delete.retention.ms`, preserves offsets (gaps
//! are allowed), and runs in the background without blocking appends.
//!
//! A pass over a partition covers the log from its start up to the cleanable
//! point (the high watermark, held back by `min.compaction.lag.ms` and open
//! transactions). It first maps each key written since the previous pass
//! (the dirty part) to its latest offset, then streams through the whole
//! range rewriting each batch with only its surviving records, a chunk
//! (`log.cleaner.io.buffer.size`) per RocksDB write so producers never wait
//! behind one huge write. Appends only ever add keys at or above the high
//! watermark, so they never touch what a pass rewrites.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::records::{Record, RecordBatchDecoder};
use rocksdb::WriteBatch;

use super::batch::{
    decompressed_limit, empty_batch, encode_records, read_header, with_last_offset,
};
use super::catalog::Catalog;
use super::db::{log_key, IndexEntry, ProducerFields, Store, TxnFields, CF_IDX, CF_LOG, CF_META};
use super::partition::Partition;
use crate::config::topic::effective_i64;
use crate::error::{BrokerError, BrokerResult};
use crate::records::{layout, Codec};
use crate::types::now_ms;

/// Where each partition's previous pass ended: its "clean" prefix.
fn cleaned_key(uid: u64) -> Vec<u8> {
    let mut k = b"cleaned/".to_vec();
    k.extend_from_slice(&uid.to_be_bytes());
    k
}

/// The cleaned prefix's end and the time its oldest kept tombstone expires.
fn encode_cleaned(clean_point: i64, tombstone_deadline: i64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&clean_point.to_be_bytes());
    v[8..].copy_from_slice(&tombstone_deadline.to_be_bytes());
    v
}

fn decode_cleaned(v: &[u8]) -> (i64, i64) {
    let at = |i: usize| {
        v.get(i..i + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(i64::from_be_bytes)
    };
    (at(0).unwrap_or(0), at(8).unwrap_or(i64::MAX))
}

/// Settings for one partition's pass, from topic configs and broker defaults.
pub struct Policy {
    pub min_dirty_ratio: f64,
    pub min_lag_ms: i64,
    pub max_lag_ms: i64,
    pub delete_retention_ms: i64,
    /// Batches read per RocksDB write of a pass (`log.cleaner.io.buffer.size`).
    pub chunk_bytes: usize,
}

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PassStats {
    pub batches_rewritten: usize,
    pub records_removed: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Decodes a stored batch. A batch stored before its topic became compacted
/// was never inflated by the broker, so it is inflated here under the same cap
/// as incoming batches (a compression bomb fails the pass, not the broker).
fn decode(bytes: &Bytes) -> BrokerResult<kafka_protocol::records::RecordSet> {
    let fail = |e: String| BrokerError::Storage(format!("cannot decode a stored batch: {e}"));
    let mut plain = layout::recompress(bytes, Codec::None, decompressed_limit(bytes.len()))
        .map_err(|e| fail(e.to_string()))?;
    RecordBatchDecoder::decode(&mut plain).map_err(|e| fail(e.to_string()))
}

fn is_control(bytes: &[u8]) -> bool {
    read_header(bytes).is_some_and(|h| h.is_control())
}

/// Compacts one partition if it is dirty enough; `Ok(None)` when skipped.
pub fn compact_partition(
    store: &Store,
    p: &Partition,
    policy: &Policy,
    now: i64,
) -> BrokerResult<Option<PassStats>> {
    let meta = store.cf(CF_META)?;
    let (cleaned_to, tombstone_deadline) = store
        .db
        .get_cf(meta, cleaned_key(p.uid))?
        .map_or((0, i64::MAX), |v| decode_cleaned(&v));
    let entries = p.index_entries(store)?;
    // Only batches old enough (min.compaction.lag.ms) may be cleaned, and
    // only below the last stable offset (open transactions are undecided).
    let lag_cutoff = now.saturating_sub(policy.min_lag_ms);
    let stable = p.last_stable_offset();
    let log_end_base = entries.last().map(|(b, _)| *b);
    let cleanable: Vec<(i64, IndexEntry)> = entries
        .iter()
        .take_while(|(b, e)| {
            e.max_timestamp <= lag_cutoff && b + i64::from(e.last_offset_delta) < stable
        })
        .copied()
        .collect();
    let Some((last_base, last)) = cleanable.last().copied() else {
        return Ok(None);
    };
    let clean_point = last_base + i64::from(last.last_offset_delta) + 1;
    let total: u64 = cleanable.iter().map(|(_, e)| u64::from(e.size)).sum();
    let dirty: u64 = cleanable
        .iter()
        .filter(|(b, _)| *b >= cleaned_to)
        .map(|(_, e)| u64::from(e.size))
        .sum();
    let overdue = cleanable
        .iter()
        .find(|(b, _)| *b >= cleaned_to)
        .is_some_and(|(_, e)| now.saturating_sub(e.max_timestamp) > policy.max_lag_ms);
    // Tombstones kept by an earlier pass are due for removal now.
    let tombstones_due = now >= tombstone_deadline;
    let ratio = if total == 0 {
        0.0
    } else {
        dirty as f64 / total as f64
    };
    if !tombstones_due && (dirty == 0 || (ratio < policy.min_dirty_ratio && !overdue)) {
        return Ok(None);
    }

    // Records of aborted transactions are never read committed and must not
    // shadow the committed values of their keys: they go, as in Kafka.
    let aborted_txns = p.aborted_between(0, clean_point);
    let aborted = |bytes: &[u8]| {
        read_header(bytes).is_some_and(|h| {
            h.attributes & 0x10 != 0
                && !h.is_control()
                && aborted_txns.iter().any(|a| {
                    a.producer_id == h.producer_id
                        && a.first_offset <= h.base_offset
                        && h.base_offset < a.last_offset
                })
        })
    };

    // Pass 1: the latest offset of every key written since the previous
    // pass. The clean prefix already holds one record per key, so it only
    // needs reading when nothing was cleaned before.
    let mut latest: HashMap<Bytes, i64> = HashMap::new();
    for (base, _) in cleanable.iter().filter(|(b, _)| *b >= cleaned_to) {
        let Some(bytes) = p.batch_at(store, *base)? else {
            continue;
        };
        if !is_control(&bytes) && !aborted(&bytes) {
            for r in decode(&bytes)?.records {
                if let Some(k) = r.key {
                    latest.insert(k, r.offset);
                }
            }
        }
    }

    // Pass 2: rewrite each batch with its survivors, a chunk at a time so
    // that appends and fetches (which share RocksDB's write path and the
    // two cores) never wait behind one huge write. Each batch's delete and
    // rewrite land in the same write, so a reader sees either the old batch
    // or the new one; a crash mid-pass leaves a partly cleaned log that the
    // next pass finishes (the clean point is recorded last).
    let tombstone_cutoff = now.saturating_sub(policy.delete_retention_ms);
    let (log, idx) = (store.cf(CF_LOG)?, store.cf(CF_IDX)?);
    let mut wb = WriteBatch::default();
    let mut chunk = Chunk::default();
    let mut stats = PassStats::default();
    // When the youngest tombstone kept by this pass may go.
    let mut next_deadline = i64::MAX;
    for (base, _) in &cleanable {
        let base = *base;
        let Some(bytes) = p.batch_at(store, base)? else {
            continue;
        };
        stats.bytes_before += bytes.len() as u64;
        chunk.read += bytes.len();
        if is_control(&bytes) {
            stats.bytes_after += bytes.len() as u64;
            continue;
        }
        let set = decode(&bytes)?;
        let before = set.records.len();
        let dropped = aborted(&bytes);
        // A record survives unless a later record has its key; records of
        // the clean prefix are absent from the map unless superseded since.
        let survivors: Vec<Record> = set
            .records
            .into_iter()
            .filter(|_| !dropped)
            .filter(|r| match &r.key {
                Some(k) => latest.get(k).is_none_or(|o| *o == r.offset),
                None => false,
            })
            .filter(|r| r.value.is_some() || r.timestamp >= tombstone_cutoff)
            .collect();
        for r in survivors.iter().filter(|r| r.value.is_none()) {
            next_deadline =
                next_deadline.min(r.timestamp.saturating_add(policy.delete_retention_ms));
        }
        if survivors.len() == before {
            stats.bytes_after += bytes.len() as u64;
            continue;
        }
        stats.records_removed += before - survivors.len();
        stats.batches_rewritten += 1;
        chunk.before += bytes.len() as u64;
        wb.delete_cf(log, log_key(p.uid, base));
        wb.delete_cf(idx, log_key(p.uid, base));
        let original_last = read_header(&bytes).map_or(base, |h| h.last_offset());
        let rebuilt = if !survivors.is_empty() {
            let b = rebuild(survivors, set.compression)?;
            with_last_offset(&b, original_last).map_err(BrokerError::Storage)?
        } else if Some(base) == log_end_base {
            // The log's last batch keeps its header with no records, so
            // consumers still see where the log ends and reach the high
            // watermark (Kafka keeps its active segment for the same reason).
            empty_batch(&bytes).map_err(BrokerError::Storage)?
        } else {
            if chunk.read >= policy.chunk_bytes {
                chunk.flush(store, p, &mut wb)?;
            }
            continue;
        };
        let Some(h) = read_header(&rebuilt) else {
            return Err(BrokerError::Storage("rebuilt batch has no header".into()));
        };
        let key = log_key(p.uid, h.base_offset);
        wb.put_cf(log, key, &rebuilt);
        // Keep the producer and transaction fields, which recovery rebuilds
        // producer and transaction state from.
        let producer = h.has_producer_id().then_some(ProducerFields {
            producer_id: h.producer_id,
            producer_epoch: h.producer_epoch,
            base_sequence: h.base_sequence,
        });
        let txn = TxnFields {
            attributes: h.attributes,
            control_type: -1,
        };
        wb.put_cf(
            idx,
            key,
            IndexEntry {
                max_timestamp: h.max_timestamp,
                last_offset_delta: h.last_offset_delta,
                size: u32::try_from(rebuilt.len()).unwrap_or(u32::MAX),
            }
            .encode_full(producer, Some(txn)),
        );
        stats.bytes_after += rebuilt.len() as u64;
        chunk.after += rebuilt.len() as u64;
        if chunk.read >= policy.chunk_bytes {
            chunk.flush(store, p, &mut wb)?;
        }
    }
    wb.put_cf(
        meta,
        cleaned_key(p.uid),
        encode_cleaned(clean_point, next_deadline),
    );
    chunk.flush(store, p, &mut wb)?;
    p.drop_cached_below(clean_point);
    if stats.batches_rewritten > 0 {
        store.reclaim(
            Some(&log_key(p.uid, 0)[..]),
            Some(&log_key(p.uid, clean_point)[..]),
        )?;
    }
    Ok(Some(stats))
}

/// The part of pass 2 not yet written.
#[derive(Default)]
struct Chunk {
    read: usize,
    before: u64,
    after: u64,
}

impl Chunk {
    fn flush(&mut self, store: &Store, p: &Partition, wb: &mut WriteBatch) -> BrokerResult<()> {
        if !wb.is_empty() {
            store.db.write(std::mem::take(wb))?;
        }
        p.adjust_size(self.before, self.after);
        *self = Chunk::default();
        Ok(())
    }
}

/// Encodes surviving records as one batch, keeping their offsets. The
/// encoder keeps records together while `offset - sequence` is constant, so
/// non-idempotent records get sequences that satisfy that (base sequence -1).
fn rebuild(
    mut records: Vec<Record>,
    compression: kafka_protocol::records::Compression,
) -> BrokerResult<Bytes> {
    let first = records
        .first()
        .map(|r| (r.offset, r.producer_id, r.sequence))
        .unwrap_or((0, -1, -1));
    for r in records.iter_mut() {
        if first.1 < 0 {
            r.sequence = i32::try_from(r.offset - first.0)
                .unwrap_or(i32::MAX)
                .wrapping_sub(1);
        } else {
            r.sequence = first
                .2
                .wrapping_add(i32::try_from(r.offset - first.0).unwrap_or(0));
        }
    }
    encode_records(&records, compression)
        .map_err(|e| BrokerError::Storage(format!("cannot encode a compacted batch: {e}")))
}

fn policy_for(
    configs: &BTreeMap<String, String>,
    raw: &BTreeMap<String, String>,
    chunk_bytes: usize,
) -> Policy {
    let ratio = configs
        .get("min.cleanable.dirty.ratio")
        .or_else(|| raw.get("log.cleaner.min.cleanable.ratio"))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.5);
    Policy {
        min_dirty_ratio: ratio,
        min_lag_ms: effective_i64("min.compaction.lag.ms", configs, raw).unwrap_or(0),
        max_lag_ms: effective_i64("max.compaction.lag.ms", configs, raw).unwrap_or(i64::MAX),
        delete_retention_ms: effective_i64("delete.retention.ms", configs, raw)
            .unwrap_or(86_400_000),
        chunk_bytes,
    }
}

/// One partition's finished pass, for metrics.
pub struct PassReport {
    pub topic: String,
    pub partition: i32,
    pub stats: PassStats,
    pub took: std::time::Duration,
}

/// One pass over every partition of every compacted topic; reports the
/// partitions that were dirty enough to be cleaned.
pub fn run_once(
    store: &Arc<Store>,
    catalog: &Catalog,
    raw: &BTreeMap<String, String>,
    chunk_bytes: usize,
) -> Vec<PassReport> {
    let mut reports = Vec::new();
    for topic in catalog.all() {
        let policy_name = topic
            .configs
            .get("cleanup.policy")
            .or_else(|| raw.get("log.cleanup.policy"))
            .cloned()
            .unwrap_or_default();
        if !policy_name.split(',').any(|p| p.trim() == "compact") {
            continue;
        }
        let policy = policy_for(&topic.configs, raw, chunk_bytes);
        for p in &topic.partitions {
            let started = std::time::Instant::now();
            match compact_partition(store, p, &policy, now_ms()) {
                Ok(Some(stats)) => {
                    if stats.batches_rewritten > 0 {
                        tracing::info!(
                            topic = %topic.name,
                            partition = p.id.get(),
                            removed = stats.records_removed,
                            bytes_before = stats.bytes_before,
                            bytes_after = stats.bytes_after,
                            seconds = started.elapsed().as_secs_f64(),
                            "compacted"
                        );
                    }
                    reports.push(PassReport {
                        topic: topic.name.to_string(),
                        partition: p.id.get(),
                        stats,
                        took: started.elapsed(),
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(topic = %topic.name, partition = p.id.get(), error = %e, "compaction failed")
                }
            }
        }
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::batch::split_and_validate;
    use crate::storage::batch::tests::plain_record;
    use crate::storage::writer::{PartitionAppend, Writer};
    use crate::types::PartitionId;
    use kafka_protocol::records::Compression;

    fn batch(records: &[(&str, Option<&str>)], ts: i64) -> Bytes {
        let recs: Vec<Record> = records
            .iter()
            .enumerate()
            .map(|(i, (k, v))| {
                let key = Some(Bytes::from(k.to_string()));
                plain_record(i, key, v.map(|v| Bytes::from(v.to_string())), ts)
            })
            .collect();
        encode_records(&recs, Compression::Lz4).unwrap()
    }

    #[tokio::test]
    async fn keeps_latest_per_key_and_drops_old_tombstones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (writer, _t) = Writer::start(store.clone(), false).unwrap();
        let p = Arc::new(Partition::new(
            Arc::from("t"),
            PartitionId::new(0).unwrap(),
            1,
            1 << 20,
        ));
        let b1 = batch(
            &[("a", Some("1")), ("b", Some("1")), ("c", Some("1"))],
            1000,
        );
        let b2 = batch(&[("a", Some("2")), ("c", None)], 2000);
        // A later batch that survives as is.
        let b3 = batch(&[("z", Some("1"))], 3000);
        for b in [b1, b2, b3] {
            let batches = split_and_validate(&b, 1 << 20).unwrap();
            let done = writer
                .submit(vec![PartitionAppend {
                    partition: p.clone(),
                    batches,
                }])
                .await;
            assert!(done.await[0].is_ok());
        }
        let policy = Policy {
            min_dirty_ratio: 0.0,
            min_lag_ms: 0,
            max_lag_ms: i64::MAX,
            delete_retention_ms: 500,
            // One batch per RocksDB write: the chunked path end to end.
            chunk_bytes: 1,
        };
        let stats = compact_partition(&store, &p, &policy, 10_000)
            .unwrap()
            .unwrap();
        assert_eq!(stats.records_removed, 3);
        let mut survivors = Vec::new();
        for (base, _) in p.index_entries(&store).unwrap() {
            let bytes = p.batch_at(&store, base).unwrap().unwrap();
            for r in decode(&bytes).unwrap().records {
                survivors.push((
                    r.offset,
                    String::from_utf8_lossy(&r.key.unwrap()).into_owned(),
                ));
            }
        }
        assert_eq!(
            survivors,
            vec![
                (1, "b".to_string()),
                (3, "a".to_string()),
                (5, "z".to_string())
            ]
        );
        // Nothing more to do the second time.
        assert!(compact_partition(&store, &p, &policy, 10_000)
            .unwrap()
            .is_none());
    }
}
