//! Where share-partition state is kept (KIP-932's share coordinator).
//!
//! Standalone: in the local `meta` column family (`share::store`).
//!
//! Cluster mode: in the replicated internal topic `__share_group_state`, as
//! Kafka keeps it. The share coordinator of a share-partition is the leader
//! of partition `hash("group:topicId:partition") %
//! share.coordinator.state.topic.num.partitions`; the share-partition's
//! leader (the topic partition's leader, which serves ShareFetch) writes
//! every change there with WriteShareGroupState before it answers, and a
//! new leader of the topic partition reads it back with
//! ReadShareGroupState, so acknowledged records stay finished across a
//! failover. Locks are not kept: acquired records come back available.
//!
//! Record key: version 0 ++ the share key (`share::store::key`); value:
//! `share::store::encode` (its own version byte); deleted state is a tombstone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    delete_share_group_state_request, read_share_group_state_request,
    write_share_group_state_request, ApiKey, DeleteShareGroupStateRequest,
    DeleteShareGroupStateResponse, ReadShareGroupStateRequest, ReadShareGroupStateResponse,
    WriteShareGroupStateRequest, WriteShareGroupStateResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::internal_topic::{self, partition_for, InternalTopic, Spec};
use crate::broker::Broker;
use crate::config::ServerConfig;
use crate::error::{BrokerError, BrokerResult};
use crate::share::partition::{Limits, RecordState, SharePartition, StateRun};
use crate::share::sessions::SessionPartitions;
use crate::share::{store, ShareEntry, ShareKey};

pub const TOPIC: &str = "__share_group_state";
const KEY_VERSION: i16 = 0;
const APPEND_TIMEOUT: Duration = Duration::from_secs(15);
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

fn spec(c: &ServerConfig) -> Spec {
    let num = |k: &str, d: i64| {
        c.raw
            .get(k)
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(d)
    };
    Spec {
        partitions: i32::try_from(num("share.coordinator.state.topic.num.partitions", 50).max(1))
            .unwrap_or(50),
        replication_factor: i16::try_from(
            num("share.coordinator.state.topic.replication.factor", 3).max(1),
        )
        .unwrap_or(3),
        min_insync_replicas: i16::try_from(num("share.coordinator.state.topic.min.isr", 2).max(1))
            .unwrap_or(2),
    }
}

pub static SHARE_STATE: InternalTopic = InternalTopic { name: TOPIC, spec };

/// Kafka's share coordinator key.
fn coordinator_key(k: &ShareKey) -> String {
    format!("{}:{}:{}", k.group, k.topic_id, k.partition)
}

fn encode_key(k: &ShareKey) -> Bytes {
    let key = store::key(k);
    let mut b = BytesMut::with_capacity(2 + key.len());
    b.put_i16(KEY_VERSION);
    b.put_slice(&key);
    b.freeze()
}

fn decode_key(b: &[u8]) -> Option<ShareKey> {
    if b.len() < 2 || i16::from_be_bytes([b[0], b[1]]) != KEY_VERSION {
        return None;
    }
    store::parse_key(&b[2..])
}

fn cluster(b: &Broker) -> bool {
    !b.cluster.is_standalone()
}

// ---------------------------------------------------------------------------
// The share-partition leader's side
// ---------------------------------------------------------------------------

/// The share-partition of `key` (the topic partition `p` must be led here):
/// held in memory, else (cluster mode) read from its share coordinator,
/// else created at the start offset `init` chooses and written.
pub async fn open(
    b: &Broker,
    key: &ShareKey,
    leader_epoch: i32,
    init: impl FnOnce() -> BrokerResult<i64>,
) -> BrokerResult<Arc<ShareEntry>> {
    if let Some(e) = b.shares.get(key) {
        if !cluster(b) || e.leader_epoch == leader_epoch {
            return Ok(e);
        }
        // Leadership moved away and back: what others did meanwhile is with
        // the share coordinator.
        b.shares.forget(key);
    }
    if cluster(b) {
        if let Some(sp) = read(b, key).await? {
            tracing::info!(group = %key.group, topic_id = %key.topic_id, partition = key.partition, start = sp.start(), "share-partition state read from its share coordinator");
            return Ok(b.shares.insert(key, ShareEntry::new(sp, leader_epoch)));
        }
    }
    let start = init()?;
    let e = b.shares.insert(
        key,
        ShareEntry::new(SharePartition::new(start), leader_epoch),
    );
    save(b, key, &e).await?;
    tracing::info!(group = %key.group, topic_id = %key.topic_id, partition = key.partition, start, "share-partition initialised");
    Ok(e)
}

/// Writes the share-partition's state if it changed since last written;
/// returns once it is durable (standalone: per the flush policy; cluster:
/// on the in-sync replicas of its `__share_group_state` partition).
pub async fn save(b: &Broker, key: &ShareKey, entry: &ShareEntry) -> BrokerResult<()> {
    let _order = entry.writer.lock().await;
    let snapshot = {
        let mut sp = entry.lock();
        if !sp.dirty {
            return Ok(());
        }
        sp.dirty = false;
        sp.clone()
    };
    let written = if cluster(b) {
        write(b, key, Some(&snapshot)).await
    } else {
        b.shares.write_local(key, Some(&store::encode(&snapshot)))
    };
    if written.is_err() {
        // Written by the next save.
        entry.lock().dirty = true;
    }
    written
}

/// Drops a share-partition's state, here and with its coordinator.
pub async fn remove(b: &Broker, key: &ShareKey) -> BrokerResult<()> {
    if cluster(b) {
        write(b, key, None).await?;
    } else {
        b.shares.write_local(key, None)?;
    }
    b.shares.forget(key);
    Ok(())
}

/// Gives back what `member` holds in `group` (it left, or its session
/// closed or expired), on the partitions given or on all held here.
pub async fn release_member(
    b: &Broker,
    group: &str,
    member: &str,
    only: Option<&SessionPartitions>,
    limits: &Limits,
) {
    for (k, e) in b.shares.of_group(group) {
        if only.is_some_and(|o| !o.contains(&(k.topic_id, k.partition))) {
            continue;
        }
        let freed = e.lock().release_member(member, limits);
        if freed {
            e.released.notify_waiters();
        }
        if let Err(err) = save(b, &k, &e).await {
            tracing::warn!(group, error = %err, "cannot write a share-partition's state");
        }
    }
}

/// Ends the locks that ran out and writes what changed; drops the state of
/// topics that no longer exist and of partitions no longer led here.
pub async fn tick(b: &Broker) {
    let layers = b.broker_configs.layers();
    let mut cache: HashMap<Arc<str>, Limits> = HashMap::new();
    let now = std::time::Instant::now();
    for (k, e) in b.shares.all() {
        let Some(topic) = b.catalog.get_by_id(&k.topic_id) else {
            tracing::info!(group = %k.group, topic_id = %k.topic_id, "dropping the share state of a deleted topic");
            if let Err(err) = remove(b, &k).await {
                tracing::debug!(error = %err, "cannot drop a share-partition");
                b.shares.forget(&k);
            }
            continue;
        };
        if cluster(b)
            && b.replicas
                .check_leader(topic.name.as_str(), k.partition, -1)
                .is_err()
        {
            // The new leader reads it from the share coordinator.
            b.shares.forget(&k);
            continue;
        }
        let l = *cache.entry(k.group.clone()).or_insert_with(|| {
            crate::share::limits(&layers.merged, &b.group_configs.get(&k.group))
        });
        let freed = {
            let mut sp = e.lock();
            sp.next_deadline().is_some_and(|d| d <= now) && sp.expire(now, &l)
        };
        if freed {
            e.released.notify_waiters();
        }
        if let Err(err) = save(b, &k, &e).await {
            tracing::debug!(group = %k.group, error = %err, "cannot write a share-partition's state");
        }
    }
}

/// A share-partition's start offset (`None`: never initialised): from the
/// state held here, else (cluster mode) from its share coordinator.
pub async fn start_offset(b: &Broker, key: &ShareKey) -> BrokerResult<Option<i64>> {
    if let Some(e) = b.shares.get(key) {
        return Ok(Some(e.lock().start()));
    }
    if !cluster(b) {
        return Ok(None);
    }
    // Only an existing state topic can hold it; asking must not create one.
    if b.cluster.topic(TOPIC).is_none() {
        return Ok(None);
    }
    Ok(read(b, key).await?.map(|sp| sp.start()))
}

/// The share coordinator of `key`: its node, creating the topic on first need.
async fn coordinator(b: &Broker, key: &ShareKey) -> BrokerResult<i32> {
    SHARE_STATE.coordinator_node(b, &coordinator_key(key)).await
}

fn runs_of(sp: &SharePartition) -> Vec<write_share_group_state_request::StateBatch> {
    sp.runs()
        .into_iter()
        .map(|r| {
            write_share_group_state_request::StateBatch::default()
                .with_first_offset(r.first)
                .with_last_offset(r.last)
                .with_delivery_state(r.state.code() as i8)
                .with_delivery_count(r.deliveries)
        })
        .collect()
}

/// Cluster mode: writes (or, with `None`, deletes) a state at its coordinator.
async fn write(b: &Broker, key: &ShareKey, sp: Option<&SharePartition>) -> BrokerResult<()> {
    let node = coordinator(b, key).await?;
    if node == b.config.node_id {
        return apply(b, key, sp.map(store::encode)).await;
    }
    let code = match sp {
        Some(sp) => {
            let req = WriteShareGroupStateRequest::default()
                .with_group_id(StrBytes::from_string(key.group.to_string()))
                .with_topics(vec![
                    write_share_group_state_request::WriteStateData::default()
                        .with_topic_id(key.topic_id)
                        .with_partitions(vec![
                            write_share_group_state_request::PartitionData::default()
                                .with_partition(key.partition)
                                .with_state_epoch(0)
                                .with_leader_epoch(-1)
                                .with_start_offset(sp.start())
                                .with_state_batches(runs_of(sp)),
                        ]),
                ]);
            let resp: WriteShareGroupStateResponse =
                call(b, node, ApiKey::WriteShareGroupState, &req).await?;
            resp.results
                .iter()
                .flat_map(|r| r.partitions.iter())
                .map(|p| p.error_code)
                .next()
        }
        None => {
            let req = DeleteShareGroupStateRequest::default()
                .with_group_id(StrBytes::from_string(key.group.to_string()))
                .with_topics(vec![
                    delete_share_group_state_request::DeleteStateData::default()
                        .with_topic_id(key.topic_id)
                        .with_partitions(vec![
                            delete_share_group_state_request::PartitionData::default()
                                .with_partition(key.partition),
                        ]),
                ]);
            let resp: DeleteShareGroupStateResponse =
                call(b, node, ApiKey::DeleteShareGroupState, &req).await?;
            resp.results
                .iter()
                .flat_map(|r| r.partitions.iter())
                .map(|p| p.error_code)
                .next()
        }
    };
    match code {
        Some(0) => Ok(()),
        Some(c) => Err(BrokerError::Peer(
            c,
            format!("the share coordinator refused the state (error {c})"),
        )),
        None => Err(BrokerError::CoordinatorNotAvailable),
    }
}

/// Cluster mode: the state its coordinator has for `key`, if any.
async fn read(b: &Broker, key: &ShareKey) -> BrokerResult<Option<SharePartition>> {
    let node = coordinator(b, key).await?;
    if node == b.config.node_id {
        return Ok(read_local(b, key)?.and_then(|v| store::decode(&v)));
    }
    let req = ReadShareGroupStateRequest::default()
        .with_group_id(StrBytes::from_string(key.group.to_string()))
        .with_topics(vec![
            read_share_group_state_request::ReadStateData::default()
                .with_topic_id(key.topic_id)
                .with_partitions(vec![
                    read_share_group_state_request::PartitionData::default()
                        .with_partition(key.partition)
                        .with_leader_epoch(-1),
                ]),
        ]);
    let resp: ReadShareGroupStateResponse =
        call(b, node, ApiKey::ReadShareGroupState, &req).await?;
    let Some(p) = resp.results.iter().flat_map(|r| r.partitions.iter()).next() else {
        return Err(BrokerError::CoordinatorNotAvailable);
    };
    if p.error_code != 0 {
        return Err(BrokerError::Peer(
            p.error_code,
            format!(
                "the share coordinator could not read the state (error {})",
                p.error_code
            ),
        ));
    }
    if p.start_offset < 0 {
        return Ok(None);
    }
    let runs: Vec<StateRun> = p
        .state_batches
        .iter()
        .filter_map(|s| {
            Some(StateRun {
                first: s.first_offset,
                last: s.last_offset,
                state: RecordState::from_code(u8::try_from(s.delivery_state).ok()?)?,
                deliveries: s.delivery_count,
            })
        })
        .collect();
    let end = runs
        .last()
        .map_or(p.start_offset, |r| r.last.saturating_add(1));
    SharePartition::restore(p.start_offset, end, &runs)
        .map(Some)
        .ok_or_else(|| BrokerError::Storage("the share coordinator sent an unusable state".into()))
}

async fn call<Req, Resp>(b: &Broker, node: i32, api: ApiKey, req: &Req) -> BrokerResult<Resp>
where
    Req: kafka_protocol::protocol::Encodable,
    Resp: kafka_protocol::protocol::Decodable,
{
    b.replicas
        .peers
        .call(&b.replicas, node, api, 0, req, PEER_TIMEOUT)
        .await
        .map_err(|e| {
            tracing::info!(coordinator = node, api = ?api, error = %e, "cannot reach the share coordinator");
            BrokerError::CoordinatorNotAvailable
        })
}

// ---------------------------------------------------------------------------
// The share coordinator's side
// ---------------------------------------------------------------------------

/// Appends a state (or a tombstone) for `key` to its `__share_group_state`
/// partition, which this broker must lead and have loaded, then keeps it.
pub async fn apply(b: &Broker, key: &ShareKey, value: Option<Vec<u8>>) -> BrokerResult<()> {
    let p = SHARE_STATE.check(b, &b.shares.coordinated_loaded, &coordinator_key(key))?;
    let bytes = internal_topic::batch(
        &[(encode_key(key), value.clone().map(Bytes::from))],
        crate::types::now_ms(),
        None,
    )?;
    SHARE_STATE.append(b, p, bytes, APPEND_TIMEOUT).await?;
    let mut states = b
        .shares
        .coordinated
        .lock()
        .map_err(|_| BrokerError::Storage("share coordinator lock poisoned".into()))?;
    match value {
        Some(v) => {
            states.insert(key.clone(), v);
        }
        None => {
            states.remove(key);
        }
    }
    Ok(())
}

/// The state this broker coordinates for `key`.
pub fn read_local(b: &Broker, key: &ShareKey) -> BrokerResult<Option<Vec<u8>>> {
    SHARE_STATE.check(b, &b.shares.coordinated_loaded, &coordinator_key(key))?;
    Ok(b.shares
        .coordinated
        .lock()
        .map_err(|_| BrokerError::Storage("share coordinator lock poisoned".into()))?
        .get(key)
        .cloned())
}

/// A leadership change of a `__share_group_state` partition: on gaining
/// it, load its states; on losing it, forget them.
pub async fn on_role_change(b: &Arc<Broker>, partition: i32) {
    let loaded = &b.shares.coordinated_loaded;
    let n = SHARE_STATE.partitions(b);
    let mine = |k: &ShareKey| partition_for(&coordinator_key(k), n) == partition;
    if !SHARE_STATE.leads(b, partition) {
        if loaded.has(partition) {
            loaded.set(partition, false);
            if let Ok(mut states) = b.shares.coordinated.lock() {
                states.retain(|k, _| !mine(k));
            }
            tracing::info!(
                partition,
                "share state partition unloaded (no longer its leader)"
            );
        }
        return;
    }
    if loaded.has(partition) {
        return;
    }
    let mut found: HashMap<ShareKey, Option<Vec<u8>>> = HashMap::new();
    let replayed = SHARE_STATE.for_each_batch(b, partition, |h, batch| {
        if h.is_control() {
            return Ok(());
        }
        SHARE_STATE.for_each_record(partition, h, batch, |key, value| {
            if let Some(k) = key.and_then(decode_key) {
                found.insert(k, value.map(<[u8]>::to_vec));
            }
        })
    });
    match (replayed, b.shares.coordinated.lock()) {
        (Ok(()), Ok(mut states)) => {
            states.retain(|k, _| !mine(k));
            let count = found.values().filter(|v| v.is_some()).count();
            states.extend(found.into_iter().filter_map(|(k, v)| Some((k, v?))));
            loaded.set(partition, true);
            tracing::info!(
                partition,
                share_partitions = count,
                "share state partition loaded"
            );
        }
        (Err(e), _) => {
            tracing::warn!(partition, error = %e, "cannot load the share state partition")
        }
        (_, Err(_)) => tracing::warn!(partition, "share coordinator lock poisoned"),
    }
}
