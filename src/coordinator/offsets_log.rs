//! Cluster mode: committed offsets as records in the replicated internal
//! topic `__consumer_offsets`, as Kafka keeps them. A group's coordinator is
//! the leader of partition `hash(group) % offsets.topic.num.partitions`; an
//! OffsetCommit is acknowledged once its record is on every in-sync replica
//! of that partition, and a broker that becomes the partition's leader
//! replays it before answering for its groups (COORDINATOR_LOAD_IN_PROGRESS
//! meanwhile). The records use Kafka's offset-commit key (version 1) and
//! value (version 3) layouts; a deletion is a tombstone.
//!
//! Standalone keeps the local store of `offsets` alone.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

use super::offsets::Committed;
use crate::broker::Broker;
use crate::error::{BrokerError, BrokerResult};
use crate::records::layout::records_section;
use crate::records::walk::records;
use crate::replication::Role;
use crate::storage::batch::{read_header, split_and_validate};
use crate::storage::writer::PartitionAppend;

pub const TOPIC: &str = "__consumer_offsets";
const KEY_VERSION: i16 = 1;
const VALUE_VERSION: i16 = 3;

/// Kafka's placement of a key on the internal topic's partitions:
/// `Utils.abs(key.hashCode()) % partitions` with Java's String.hashCode.
pub fn partition_for(key: &str, partitions: i32) -> i32 {
    let hash = key
        .encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
    (hash & 0x7fff_ffff) % partitions.max(1)
}

fn put_str(b: &mut BytesMut, s: &str) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    b.put_i16(len as i16);
    b.put_slice(&s.as_bytes()[..usize::from(len)]);
}

fn get_str(b: &mut &[u8]) -> Option<String> {
    if b.len() < 2 {
        return None;
    }
    let len = usize::try_from(b.get_i16()).ok()?;
    if b.len() < len {
        return None;
    }
    let s = String::from_utf8(b[..len].to_vec()).ok()?;
    b.advance(len);
    Some(s)
}

pub fn encode_key(group: &str, topic: &str, partition: i32) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + group.len() + topic.len());
    b.put_i16(KEY_VERSION);
    put_str(&mut b, group);
    put_str(&mut b, topic);
    b.put_i32(partition);
    b.freeze()
}

pub fn decode_key(mut b: &[u8]) -> Option<(String, String, i32)> {
    if b.len() < 2 {
        return None;
    }
    // Versions 0 and 1 are offset commits; 2 is group metadata (skipped).
    if !matches!(b.get_i16(), 0 | 1) {
        return None;
    }
    let group = get_str(&mut b)?;
    let topic = get_str(&mut b)?;
    if b.len() < 4 {
        return None;
    }
    Some((group, topic, b.get_i32()))
}

pub fn encode_value(c: &Committed) -> Bytes {
    let mut b = BytesMut::with_capacity(24 + c.metadata.len());
    b.put_i16(VALUE_VERSION);
    b.put_i64(c.offset);
    b.put_i32(c.leader_epoch);
    put_str(&mut b, &c.metadata);
    b.put_i64(c.commit_ms);
    b.freeze()
}

pub fn decode_value(mut b: &[u8]) -> Option<Committed> {
    if b.len() < 2 || b.get_i16() != VALUE_VERSION || b.len() < 12 {
        return None;
    }
    let offset = b.get_i64();
    let leader_epoch = b.get_i32();
    let metadata = get_str(&mut b)?;
    if b.len() < 8 {
        return None;
    }
    Some(Committed {
        offset,
        leader_epoch,
        metadata,
        commit_ms: b.get_i64(),
    })
}

/// One batch of records: `value` None is a tombstone.
fn batch(entries: &[(Bytes, Option<Bytes>)], now: i64) -> BrokerResult<Bytes> {
    let recs: Vec<Record> = entries
        .iter()
        .enumerate()
        .map(|(i, (k, v))| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: now,
            key: Some(k.clone()),
            value: v.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &recs,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .map_err(|e| BrokerError::Storage(format!("cannot encode offset records: {e}")))?;
    Ok(buf.freeze())
}

/// Which internal partitions this broker has loaded (leads and replayed).
#[derive(Default)]
pub struct Loaded {
    partitions: Mutex<HashSet<i32>>,
}

impl Loaded {
    fn set(&self, partition: i32, loaded: bool) {
        let mut p = self
            .partitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if loaded {
            p.insert(partition);
        } else {
            p.remove(&partition);
        }
    }

    fn has(&self, partition: i32) -> bool {
        self.partitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&partition)
    }
}

/// The internal topic's partition count (its own, once it exists).
fn partitions(b: &Broker) -> i32 {
    b.cluster
        .topic(TOPIC)
        .map(|t| t.partitions.len() as i32)
        .unwrap_or(b.config.offsets_topic_num_partitions)
}

/// Cluster mode: this broker must coordinate `group` and have loaded its
/// state. Standalone: always.
pub fn check(b: &Broker, group: &str) -> BrokerResult<()> {
    if b.cluster.is_standalone() {
        return Ok(());
    }
    if b.cluster.topic(TOPIC).is_none() {
        return Err(BrokerError::CoordinatorNotAvailable);
    }
    let p = partition_for(group, partitions(b));
    match b.replicas.replica(TOPIC, p).map(|r| r.leader_epoch()) {
        Some(Some(_)) if b.groups.loaded.has(p) => Ok(()),
        Some(Some(_)) => Err(BrokerError::CoordinatorLoadInProgress),
        _ => Err(BrokerError::NotCoordinator),
    }
}

/// Cluster mode: the node leading the partition `key` maps to, creating the
/// internal topic on first need.
pub async fn coordinator_node(b: &Broker, key: &str) -> BrokerResult<i32> {
    let topic = match b.cluster.topic(TOPIC) {
        Some(t) => t,
        None => {
            let live = b.cluster.live_brokers().len();
            let rf = b
                .config
                .offsets_topic_replication_factor
                .min(live as i16)
                .max(1);
            let configs = [("cleanup.policy".to_string(), "compact".to_string())]
                .into_iter()
                .collect();
            match b
                .cluster
                .create_topic(
                    TOPIC,
                    b.config.offsets_topic_num_partitions,
                    crate::cluster::Placement::Factor(rf),
                    configs,
                )
                .await
            {
                Ok(t) => t,
                Err(BrokerError::TopicAlreadyExists(_)) => b
                    .cluster
                    .topic(TOPIC)
                    .ok_or(BrokerError::CoordinatorNotAvailable)?,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create {TOPIC}");
                    return Err(BrokerError::CoordinatorNotAvailable);
                }
            }
        }
    };
    let p = partition_for(key, topic.partitions.len() as i32);
    let leader = topic.partitions.get(p as usize).map_or(-1, |s| s.leader);
    let live = b.cluster.live_brokers().iter().any(|x| x.node_id == leader);
    if leader < 0 || !live {
        return Err(BrokerError::CoordinatorNotAvailable);
    }
    Ok(leader)
}

/// Appends offset records (or tombstones) for `group` to its internal
/// partition and waits until every in-sync replica has them.
pub async fn append(
    b: &Broker,
    group: &str,
    entries: Vec<(Bytes, Option<Bytes>)>,
    timeout: std::time::Duration,
) -> BrokerResult<()> {
    if b.cluster.is_standalone() || entries.is_empty() {
        return Ok(());
    }
    check(b, group)?;
    let p = partition_for(group, partitions(b));
    let partition = b
        .catalog
        .get(TOPIC)
        .and_then(|t| t.partition(p).cloned())
        .ok_or(BrokerError::NotCoordinator)?;
    let n = entries.len() as i64;
    let bytes = batch(&entries, crate::types::now_ms())?;
    let batches = split_and_validate(&bytes, usize::MAX)?;
    let outcome = b
        .writer
        .submit(vec![PartitionAppend { partition, batches }])
        .await
        .await;
    let base = outcome
        .into_iter()
        .next()
        .unwrap_or(Err(BrokerError::ShuttingDown))?;
    let deadline = tokio::time::Instant::now() + timeout;
    b.replicas
        .await_replicated(TOPIC, p, base + n, 1, deadline)
        .await
        .map_err(|e| match e {
            BrokerError::NotLeaderOrFollower => BrokerError::NotCoordinator,
            other => other,
        })
}

/// Commits as records (key, value).
pub fn commit_records(
    group: &str,
    commits: &[(String, i32, Committed)],
) -> Vec<(Bytes, Option<Bytes>)> {
    commits
        .iter()
        .map(|(t, p, c)| (encode_key(group, t, *p), Some(encode_value(c))))
        .collect()
}

/// Tombstones for these offsets.
pub fn delete_records(group: &str, which: &[(String, i32)]) -> Vec<(Bytes, Option<Bytes>)> {
    which
        .iter()
        .map(|(t, p)| (encode_key(group, t, *p), None))
        .collect()
}

/// A leadership change of an internal partition: on gaining it, replay
/// the partition into the local offset store, then answer for its groups;
/// on losing it, stop answering and forget its groups' live state.
pub async fn on_role_change(b: &Arc<Broker>, partition: i32) {
    let leads = b
        .replicas
        .replica(TOPIC, partition)
        .is_some_and(|r| matches!(&*r.role(), Role::Leader(_)));
    if !leads {
        if b.groups.loaded.has(partition) {
            b.groups.loaded.set(partition, false);
            let n = partitions(b);
            b.groups.unload(|g| partition_for(g, n) == partition);
            tracing::info!(
                partition,
                "offsets partition unloaded (no longer its leader)"
            );
        }
        return;
    }
    if b.groups.loaded.has(partition) {
        return;
    }
    match replay(b, partition) {
        Ok(n) => {
            b.groups.loaded.set(partition, true);
            tracing::info!(partition, records = n, "offsets partition loaded");
        }
        Err(e) => tracing::warn!(partition, error = %e, "cannot load the offsets partition"),
    }
}

/// Replaces the local offsets of the partition's groups with what its log says.
fn replay(b: &Broker, partition: i32) -> BrokerResult<usize> {
    let p = b
        .catalog
        .get(TOPIC)
        .and_then(|t| t.partition(partition).cloned())
        .ok_or(BrokerError::UnknownTopicOrPartition)?;
    let n = partitions(b);
    let mut state: std::collections::BTreeMap<(String, String, i32), Option<Committed>> =
        Default::default();
    let mut offset = p.log_start_offset();
    let end = p.log_end_offset();
    let mut count = 0;
    while offset < end {
        let r = p.read_for_replica(&b.store, offset, 4 << 20)?;
        let Some(next) = r.end_offset() else { break };
        let mut all = r.into_bytes();
        while all.len() >= crate::storage::batch::HEADER_LEN {
            let Some(h) = read_header(&all) else { break };
            let size = usize::try_from(i32::from_be_bytes([all[8], all[9], all[10], all[11]]))
                .unwrap_or(0)
                + crate::storage::batch::LOG_OVERHEAD;
            if size > all.len() {
                break;
            }
            let one = all.split_to(size);
            if h.is_control() {
                continue;
            }
            let section = records_section(&one, 64 << 20)
                .map_err(|e| BrokerError::Storage(format!("{TOPIC}-{partition}: {e}")))?;
            for rec in records(&section, h.records_count) {
                let rec =
                    rec.map_err(|e| BrokerError::Storage(format!("{TOPIC}-{partition}: {e}")))?;
                let Some(key) = rec.key.and_then(decode_key) else {
                    continue;
                };
                state.insert(key, rec.value.and_then(decode_value));
                count += 1;
            }
        }
        offset = next;
    }
    b.groups
        .offsets
        .replace_groups(|g| partition_for(g, n) == partition, state)?;
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_placement() {
        let c = Committed {
            offset: 42,
            leader_epoch: 3,
            metadata: "m".into(),
            commit_ms: 7,
        };
        assert_eq!(decode_value(&encode_value(&c)), Some(c));
        assert_eq!(
            decode_key(&encode_key("g", "t", 5)),
            Some(("g".into(), "t".into(), 5))
        );
        assert_eq!(decode_key(&[0, 2, 0, 0]), None);
        assert_eq!(decode_value(&[0, 3, 1]), None);
        // Java: "my-group".hashCode() = 1253924891... placement as Kafka's Utils.abs.
        let h = "my-group"
            .encode_utf16()
            .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)));
        assert_eq!(partition_for("my-group", 50), (h & 0x7fff_ffff) % 50);
        assert!((0..50).contains(&partition_for("x", 50)));
    }
}
