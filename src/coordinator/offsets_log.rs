//! Cluster mode: committed offsets as records in the replicated internal
//! topic `__consumer_offsets`, as Kafka keeps them. A group's coordinator is
//! the leader of partition `hash(group) % offsets.topic.num.partitions`; an
//! OffsetCommit is acknowledged once its record is on every in-sync replica
//! of that partition, and a broker that becomes the partition's leader
//! replays it before answering for its groups (COORDINATOR_LOAD_IN_PROGRESS
//! meanwhile). The records use Kafka's offset-commit key (version 1) and
//! value (version 3) layouts; a deletion is a tombstone.
//!
//! Group state (generation, members, assignments) is logged too, under
//! Kafka's group-metadata key (version 2) with this broker's own value
//! layout (version `GROUP_VALUE_VERSION`, then JSON), each time a group
//! becomes stable or empty: the next coordinator resumes the group and its
//! members carry on without a rebalance.
//!
//! Offsets committed inside a transaction (TxnOffsetCommit) are a
//! transactional batch of the producer; they take effect when the
//! transaction's COMMIT marker reaches the partition, as in Kafka.
//!
//! Standalone keeps the local store of `offsets` alone.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::internal_topic::{self, InternalTopic, Spec};
use super::offsets::Committed;
use super::LoggedGroup;
use crate::broker::Broker;
use crate::config::ServerConfig;
use crate::error::{BrokerError, BrokerResult};
use crate::storage::txns::control_type;

pub const TOPIC: &str = "__consumer_offsets";
const KEY_VERSION: i16 = 1;
const VALUE_VERSION: i16 = 3;
const GROUP_KEY_VERSION: i16 = 2;
/// Kafka's group metadata values are versions 0–4; these layouts are not
/// theirs: a classic group's, and a consumer (KIP-848) group's.
const GROUP_VALUE_VERSION: i16 = 1000;
const CONSUMER_GROUP_VALUE_VERSION: i16 = 1001;

fn spec(c: &ServerConfig) -> Spec {
    Spec {
        partitions: c.offsets_topic_num_partitions,
        replication_factor: c.offsets_topic_replication_factor,
        min_insync_replicas: 1,
    }
}

pub static OFFSETS: InternalTopic = InternalTopic { name: TOPIC, spec };

pub use internal_topic::partition_for;

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

fn encode_group_key(group: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + group.len());
    b.put_i16(GROUP_KEY_VERSION);
    put_str(&mut b, group);
    b.freeze()
}

fn decode_group_key(mut b: &[u8]) -> Option<String> {
    if b.len() < 2 || b.get_i16() != GROUP_KEY_VERSION {
        return None;
    }
    get_str(&mut b)
}

fn encode_group_value(snap: &LoggedGroup) -> BrokerResult<Bytes> {
    let (version, json) = match snap {
        LoggedGroup::Classic(s) => (GROUP_VALUE_VERSION, serde_json::to_vec(s)),
        LoggedGroup::Consumer(s) => (CONSUMER_GROUP_VALUE_VERSION, serde_json::to_vec(s)),
    };
    let json = json.map_err(|e| BrokerError::Storage(format!("cannot encode group state: {e}")))?;
    let mut b = BytesMut::with_capacity(2 + json.len());
    b.put_i16(version);
    b.put_slice(&json);
    Ok(b.freeze())
}

fn decode_group_value(mut b: &[u8]) -> Option<LoggedGroup> {
    if b.len() < 2 {
        return None;
    }
    match b.get_i16() {
        GROUP_VALUE_VERSION => serde_json::from_slice(b).ok().map(LoggedGroup::Classic),
        CONSUMER_GROUP_VALUE_VERSION => serde_json::from_slice(b).ok().map(LoggedGroup::Consumer),
        _ => None,
    }
}

/// Logs the groups whose state changed (all of them, or only `only`).
pub async fn log_groups(b: &Broker, only: Option<&str>) {
    for (group, snap) in b.groups.take_changed(only) {
        let logged = match encode_group_value(&snap) {
            Ok(v) => {
                append(
                    b,
                    &group,
                    vec![(encode_group_key(&group), Some(v))],
                    std::time::Duration::from_secs(15),
                )
                .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = logged {
            tracing::debug!(group = %group, error = %e, "group state not logged");
            // Still the group's coordinator: try again on the next pass.
            if check(b, &group).is_ok() {
                b.groups.mark_changed(&group);
            }
        }
    }
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

/// Cluster mode: this broker must coordinate `group` and have loaded its
/// state. Standalone: always.
pub fn check(b: &Broker, group: &str) -> BrokerResult<()> {
    OFFSETS.check(b, &b.groups.loaded, group).map(|_| ())
}

/// Cluster mode: the node coordinating `group`, creating the topic on first need.
pub async fn coordinator_node(b: &Broker, group: &str) -> BrokerResult<i32> {
    OFFSETS.coordinator_node(b, group).await
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
    let p = OFFSETS.check(b, &b.groups.loaded, group)?;
    let bytes = internal_topic::batch(&entries, crate::types::now_ms(), None)?;
    OFFSETS.append(b, p, bytes, timeout).await.map(|_| ())
}

/// The uid of `group`'s internal partition (the transactional gate's key).
pub fn partition_uid(b: &Broker, group: &str) -> BrokerResult<(i32, u64)> {
    let p = OFFSETS.partition_of(b, group);
    let uid = b
        .catalog
        .get(TOPIC)
        .and_then(|t| t.partition(p).map(|x| x.uid))
        .ok_or(BrokerError::NotCoordinator)?;
    Ok((p, uid))
}

/// TxnOffsetCommit (cluster mode): the offsets as a transactional batch of
/// the producer on the group's partition, held pending until the
/// transaction's marker reaches the partition. The producer's membership of
/// the transaction has been verified (the writer's gate checks it again).
pub async fn append_txn(
    b: &Broker,
    group: &str,
    producer_id: i64,
    epoch: i16,
    commits: Vec<(String, i32, Committed)>,
    timeout: std::time::Duration,
) -> BrokerResult<()> {
    let p = OFFSETS.check(b, &b.groups.loaded, group)?;
    let entries = commit_records(group, &commits);
    // One appender at a time: each batch's first sequence follows the last.
    let _turn = b.groups.txn_offsets.append_turn.lock().await;
    let first_seq = b
        .catalog
        .get(TOPIC)
        .and_then(|t| t.partition(p).cloned())
        .and_then(|part| {
            part.producer_snapshot()
                .into_iter()
                .find(|(pid, e, ..)| *pid == producer_id && *e == epoch)
                .map(|(_, _, last, _)| last.wrapping_add(1))
        })
        .unwrap_or(0)
        .max(0);
    let bytes = internal_topic::batch(
        &entries,
        crate::types::now_ms(),
        Some((producer_id, epoch, first_seq)),
    )?;
    OFFSETS.append(b, p, bytes, timeout).await?;
    b.groups.txn_offsets.add(
        producer_id,
        commits
            .into_iter()
            .map(|(t, i, c)| (group.to_string(), t, i, c)),
    );
    Ok(())
}

/// A transaction's marker reached partition `partition` (led here): its
/// pending offsets there are applied (commit) or dropped (abort).
pub fn complete_txn(
    b: &Broker,
    partition: i32,
    producer_id: i64,
    commit: bool,
) -> BrokerResult<()> {
    let n = OFFSETS.partitions(b);
    let taken = b
        .groups
        .txn_offsets
        .take(producer_id, |g| partition_for(g, n) == partition);
    if !commit || taken.is_empty() {
        return Ok(());
    }
    let mut by_group: BTreeMap<String, Vec<(String, i32, Committed)>> = BTreeMap::new();
    for (g, t, i, c) in taken {
        by_group.entry(g).or_default().push((t, i, c));
    }
    for (group, commits) in by_group {
        b.groups.offsets.commit(&group, commits)?;
    }
    Ok(())
}

/// (group, topic, partition, offset) held by a transaction.
type HeldOffset = (String, String, i32, Committed);

/// Cluster mode, every `EXPIRY_CHECK`: the expired offsets of the groups
/// coordinated here go as tombstones through the log, then locally, so a
/// later coordinator does not bring them back.
pub async fn expire(b: &Broker) {
    let due = match b.groups.expired_offsets() {
        Ok(due) => due,
        Err(e) => {
            tracing::warn!(error = %e, "offset expiry failed");
            return;
        }
    };
    let mut removed = 0;
    for (group, keys) in due {
        if check(b, &group).is_err() {
            continue;
        }
        let logged = append(
            b,
            &group,
            delete_records(&group, &keys),
            std::time::Duration::from_secs(15),
        )
        .await;
        match logged.and_then(|()| b.groups.offsets.delete(&group, Some(&keys))) {
            Ok(()) => removed += keys.len(),
            Err(e) => {
                tracing::warn!(group = %group, error = %e, "cannot expire the group's offsets")
            }
        }
    }
    if removed > 0 {
        tracing::info!(removed, "expired committed offsets of empty groups");
    }
}

/// Offsets committed inside transactions that have not ended yet, by
/// producer id (cluster mode; standalone keeps them with the transaction).
#[derive(Default)]
pub struct TxnOffsets {
    by_producer: Mutex<HashMap<i64, Vec<HeldOffset>>>,
    append_turn: tokio::sync::Mutex<()>,
}

impl TxnOffsets {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Vec<HeldOffset>>> {
        // Every change is one map operation: a poisoned lock is consistent.
        self.by_producer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add(&self, producer_id: i64, offsets: impl Iterator<Item = HeldOffset>) {
        let mut map = self.map();
        let pending = map.entry(producer_id).or_default();
        for o in offsets {
            match pending
                .iter_mut()
                .find(|p| p.0 == o.0 && p.1 == o.1 && p.2 == o.2)
            {
                Some(p) => *p = o,
                None => pending.push(o),
            }
        }
    }

    /// Removes and returns the producer's pending offsets of the groups `which` selects.
    fn take(&self, producer_id: i64, which: impl Fn(&str) -> bool) -> Vec<HeldOffset> {
        let mut map = self.map();
        let Some(pending) = map.get_mut(&producer_id) else {
            return Vec::new();
        };
        let (taken, kept): (Vec<_>, Vec<_>) = pending.drain(..).partition(|o| which(&o.0));
        if kept.is_empty() {
            map.remove(&producer_id);
        } else {
            *pending = kept;
        }
        taken
    }

    /// Forgets the pending offsets of the groups `which` selects.
    fn forget(&self, which: impl Fn(&str) -> bool) {
        self.map().retain(|_, pending| {
            pending.retain(|o| !which(&o.0));
            !pending.is_empty()
        });
    }

    /// True if an unfinished transaction holds an offset for this partition
    /// of the group (OffsetFetch with require_stable).
    pub fn has(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.map()
            .values()
            .flatten()
            .any(|o| o.0 == group && o.1 == topic && o.2 == partition)
    }
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
    let loaded = &b.groups.loaded;
    if !OFFSETS.leads(b, partition) {
        if loaded.has(partition) {
            loaded.set(partition, false);
            let n = OFFSETS.partitions(b);
            b.groups.unload(|g| partition_for(g, n) == partition);
            b.groups
                .txn_offsets
                .forget(|g| partition_for(g, n) == partition);
            tracing::info!(
                partition,
                "offsets partition unloaded (no longer its leader)"
            );
        }
        return;
    }
    if loaded.has(partition) {
        return;
    }
    match replay(b, partition) {
        Ok(n) => {
            loaded.set(partition, true);
            tracing::info!(partition, records = n, "offsets partition loaded");
        }
        Err(e) => tracing::warn!(partition, error = %e, "cannot load the offsets partition"),
    }
}

type Key = (String, String, i32);

/// Replaces the local offsets of the partition's groups with what its log
/// says: plain records apply at once; a producer's transactional records
/// apply at its commit marker, vanish at its abort marker, and stay pending
/// while neither has come.
fn replay(b: &Broker, partition: i32) -> BrokerResult<usize> {
    let n = OFFSETS.partitions(b);
    let mut state: BTreeMap<Key, Option<Committed>> = BTreeMap::new();
    let mut open: HashMap<i64, Vec<(Key, Option<Committed>)>> = HashMap::new();
    let mut groups: BTreeMap<String, Option<LoggedGroup>> = BTreeMap::new();
    let mut count = 0;
    OFFSETS.for_each_batch(b, partition, |h, batch| {
        if h.is_control() {
            let pending = open.remove(&h.producer_id).unwrap_or_default();
            if control_type(batch) == Some(1) {
                // A COMMIT marker (0 is ABORT).
                state.extend(pending);
            }
            return Ok(());
        }
        let transactional = h.attributes & 0x10 != 0 && h.has_producer_id();
        OFFSETS.for_each_record(partition, h, batch, |key, value| {
            if let Some(group) = key.and_then(decode_group_key) {
                groups.insert(group, value.and_then(decode_group_value));
                return;
            }
            let Some(key) = key.and_then(decode_key) else {
                return;
            };
            let value = value.and_then(decode_value);
            count += 1;
            if transactional {
                open.entry(h.producer_id).or_default().push((key, value));
            } else {
                state.insert(key, value);
            }
        })
    })?;
    b.groups
        .offsets
        .replace_groups(|g| partition_for(g, n) == partition, state)?;
    let broker = b.broker_configs.layers().merged.clone();
    b.groups.restore(
        groups
            .into_iter()
            .filter_map(|(g, snap)| snap.map(|s| (g, s)))
            .collect(),
        |g| {
            let ms = crate::config::group::effective_i64(
                "consumer.session.timeout.ms",
                &b.group_configs.get(g),
                &broker,
            )
            .unwrap_or(45_000);
            std::time::Duration::from_millis(ms.max(1) as u64)
        },
    );
    for (pid, pending) in open {
        b.groups.txn_offsets.add(
            pid,
            pending
                .into_iter()
                .filter_map(|((g, t, i), c)| c.map(|c| (g, t, i, c))),
        );
    }
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
    }
}
