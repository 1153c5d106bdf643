//! Transaction markers and the checks around them, on both sides:
//! - the coordinator writes a transaction's COMMIT or ABORT marker to every
//!   partition it touched, itself where it leads the partition, else by
//!   WriteTxnMarkers to the partition's leader (`write`);
//! - a partition leader appends the markers it is sent (`apply_local`) and,
//!   before the first transactional batch of a producer reaches one of its
//!   partitions, asks the producer's coordinator whether the partition is
//!   part of the ongoing transaction (KIP-890, `verify`).
//!
//! A marker closes the writer's gate of its partition for the producer
//! before it is queued, so no batch of the ended transaction lands after it,
//! and is refused (TRANSACTION_COORDINATOR_FENCED) when a coordinator of a
//! newer epoch already wrote one for the producer there.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kafka_protocol::messages::add_partitions_to_txn_request::{
    AddPartitionsToTxnTopic, AddPartitionsToTxnTransaction,
};
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, ProducerId, TopicName,
    TransactionalId, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::txn_log;
use crate::broker::Broker;
use crate::error::{BrokerError, BrokerResult};
use crate::storage::txns::control_batch;
use crate::storage::writer::PartitionAppend;
use crate::types::now_ms;

/// How long one request to another broker may take.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a marker may wait for the partition's in-sync replicas.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TXN_MARKERS_VERSION: i16 = 1;
const ADD_PARTITIONS_VERSION: i16 = 4;

/// One transaction's end as its markers carry it.
#[derive(Debug, Clone, Copy)]
pub struct Marker {
    pub producer_id: i64,
    pub epoch: i16,
    pub commit: bool,
    pub coordinator_epoch: i32,
}

/// Leader side: appends `m` to each of `partitions` this broker leads and
/// waits for their in-sync replicas; per partition, in order, the outcome.
/// Markers reaching `__consumer_offsets` apply or drop the transaction's
/// pending offsets there.
pub async fn apply_local(
    b: &Broker,
    m: Marker,
    partitions: &[(String, i32)],
) -> Vec<BrokerResult<()>> {
    let now = now_ms();
    let mut entries = Vec::with_capacity(partitions.len());
    let mut slots: Vec<BrokerResult<usize>> = Vec::with_capacity(partitions.len());
    for (topic, index) in partitions {
        let target = b
            .catalog
            .get(topic)
            .and_then(|t| t.partition(*index).cloned())
            .ok_or(BrokerError::UnknownTopicOrPartition)
            .and_then(|p| b.replicas.check_leader(topic, *index, -1).map(|()| p))
            .and_then(|p| {
                b.txns
                    .active()
                    .check_marker_epoch(m.producer_id, p.uid, m.coordinator_epoch)
                    .map(|()| p)
            })
            .and_then(|p| {
                control_batch(m.producer_id, m.epoch, m.commit, m.coordinator_epoch, now)
                    .map(|marker| (p, marker))
            });
        slots.push(target.map(|(p, marker)| {
            b.txns.active().close(m.producer_id, p.uid);
            entries.push(PartitionAppend {
                partition: p,
                batches: vec![marker],
            });
            entries.len() - 1
        }));
    }
    let outcomes = if entries.is_empty() {
        Vec::new()
    } else {
        b.writer.submit(entries).await.await
    };
    let deadline = tokio::time::Instant::now() + REPLICATION_TIMEOUT;
    let mut results = Vec::with_capacity(slots.len());
    for ((topic, index), slot) in partitions.iter().zip(slots) {
        let appended = slot.and_then(|i| {
            outcomes
                .get(i)
                .cloned()
                .unwrap_or(Err(BrokerError::ShuttingDown))
        });
        let result = match appended {
            Ok(base) => {
                b.replicas
                    .await_replicated(topic, *index, base + 1, 1, deadline)
                    .await
            }
            Err(e) => Err(e),
        }
        .and_then(|()| {
            if topic == super::offsets_log::TOPIC {
                super::offsets_log::complete_txn(b, *index, m.producer_id, m.commit)
            } else {
                Ok(())
            }
        });
        if let Err(e) = &result {
            tracing::info!(topic = %topic, partition = index, producer_id = m.producer_id, error = %e, "transaction marker not written");
        }
        results.push(result);
    }
    results
}

/// Coordinator side: writes `m` to every partition of `partitions` that
/// still exists, here or at its leader. Any failure leaves the transaction
/// to be completed by a later attempt (markers written twice are harmless:
/// the second finds no open transaction).
pub async fn write(
    b: &Broker,
    m: Marker,
    partitions: &BTreeSet<(String, i32)>,
) -> BrokerResult<()> {
    let mut by_leader: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
    let mut first_error: Option<BrokerError> = None;
    for (topic, index) in partitions {
        let Some(leader) = b
            .cluster
            .topic(topic)
            .and_then(|t| t.partitions.get(*index as usize).map(|p| p.leader))
        else {
            tracing::debug!(topic = %topic, partition = index, "no marker for a partition that no longer exists");
            continue;
        };
        if leader < 0 {
            first_error.get_or_insert(BrokerError::LeaderNotAvailable);
            continue;
        }
        by_leader
            .entry(leader)
            .or_default()
            .push((topic.clone(), *index));
    }
    let me = b.config.node_id;
    let sends = by_leader.into_iter().map(|(leader, parts)| async move {
        if leader == me {
            apply_local(b, m, &parts)
                .await
                .into_iter()
                .find_map(|r| match r {
                    Ok(()) | Err(BrokerError::UnknownTopicOrPartition) => None,
                    Err(e) => Some(e),
                })
                .map_or(Ok(()), Err)
        } else {
            send(b, leader, m, &parts).await
        }
    });
    for r in futures::future::join_all(sends).await {
        if let Err(e) = r {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// WriteTxnMarkers to `leader` for `parts`.
async fn send(b: &Broker, leader: i32, m: Marker, parts: &[(String, i32)]) -> BrokerResult<()> {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, i) in parts {
        topics.entry(t.as_str()).or_default().push(*i);
    }
    let req = WriteTxnMarkersRequest::default().with_markers(vec![WritableTxnMarker::default()
        .with_producer_id(ProducerId(m.producer_id))
        .with_producer_epoch(m.epoch)
        .with_transaction_result(m.commit)
        .with_coordinator_epoch(m.coordinator_epoch)
        .with_topics(
            topics
                .into_iter()
                .map(|(t, idx)| {
                    WritableTxnMarkerTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partition_indexes(idx)
                })
                .collect(),
        )]);
    let resp: WriteTxnMarkersResponse = b
        .replicas
        .peers
        .call(
            &b.replicas,
            leader,
            ApiKey::WriteTxnMarkers,
            WRITE_TXN_MARKERS_VERSION,
            &req,
            PEER_TIMEOUT + REPLICATION_TIMEOUT,
        )
        .await
        .map_err(|e| {
            tracing::info!(leader, producer_id = m.producer_id, error = %e, "cannot send transaction markers");
            BrokerError::CoordinatorNotAvailable
        })?;
    let failed = resp
        .markers
        .iter()
        .flat_map(|r| r.topics.iter())
        .flat_map(|t| t.partitions.iter().map(move |p| (t, p)))
        .find(|(_, p)| {
            p.error_code != 0 && p.error_code != BrokerError::UnknownTopicOrPartition.code()
        });
    match failed {
        Some((t, p)) => Err(BrokerError::Peer(
            p.error_code,
            format!(
                "broker {leader} could not write the marker to {}-{} (error {})",
                t.name.0, p.partition_index, p.error_code
            ),
        )),
        None => Ok(()),
    }
}

/// Leader side, before appending transactional batches of `producer_id` at
/// `epoch` to partitions (topic, index, uid) its gate does not admit yet:
/// asks the transactional id's coordinator whether each is part of the
/// ongoing transaction and admits those that are. Per partition, in order,
/// the verdict; a coordinator that cannot be reached is NOT_ENOUGH_REPLICAS,
/// which producers retry.
pub async fn verify(
    b: &Broker,
    txn_id: &str,
    producer_id: i64,
    epoch: i16,
    parts: &[(String, i32, u64)],
) -> Vec<BrokerResult<()>> {
    let names: Vec<(String, i32)> = parts.iter().map(|(t, i, _)| (t.clone(), *i)).collect();
    let verdicts = match txn_log::check(b, txn_id) {
        Ok(_) => match b
            .txns
            .verify_partitions(b, txn_id, producer_id, epoch, &names)
            .await
        {
            Ok(each) => each,
            Err(e) => vec![Err(e); parts.len()],
        },
        Err(BrokerError::NotCoordinator) => {
            match ask_coordinator(b, txn_id, producer_id, epoch, &names).await {
                Ok(each) => each,
                Err(e) => vec![Err(e); parts.len()],
            }
        }
        Err(e) => vec![Err(e); parts.len()],
    };
    verdicts
        .into_iter()
        .zip(parts)
        .map(|(v, (topic, index, uid))| {
            let v = v.map_err(|e| match e {
                BrokerError::NotCoordinator
                | BrokerError::CoordinatorNotAvailable
                | BrokerError::CoordinatorLoadInProgress => BrokerError::NotEnoughReplicas,
                other => other,
            });
            match &v {
                Ok(()) => b.txns.active().admit(producer_id, epoch, *uid),
                Err(e) => {
                    tracing::info!(transactional_id = txn_id, topic = %topic, partition = index, producer_id, epoch, error = %e, "transactional batch not verified")
                }
            }
            v
        })
        .collect()
}

/// AddPartitionsToTxn v4 `verify_only` to the coordinator of `txn_id`.
async fn ask_coordinator(
    b: &Broker,
    txn_id: &str,
    producer_id: i64,
    epoch: i16,
    parts: &[(String, i32)],
) -> BrokerResult<Vec<BrokerResult<()>>> {
    let state = b
        .cluster
        .topic(txn_log::TOPIC)
        .ok_or(BrokerError::CoordinatorNotAvailable)?;
    let p = super::internal_topic::partition_for(txn_id, state.partitions.len() as i32);
    let coordinator = state.partitions.get(p as usize).map_or(-1, |s| s.leader);
    if coordinator < 0 {
        return Err(BrokerError::CoordinatorNotAvailable);
    }
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, i) in parts {
        topics.entry(t.as_str()).or_default().push(*i);
    }
    let req = AddPartitionsToTxnRequest::default().with_transactions(vec![
        AddPartitionsToTxnTransaction::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(txn_id.to_string())))
            .with_producer_id(ProducerId(producer_id))
            .with_producer_epoch(epoch)
            .with_verify_only(true)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(t, idx)| {
                        AddPartitionsToTxnTopic::default()
                            .with_name(TopicName(StrBytes::from_string(t.to_string())))
                            .with_partitions(idx)
                    })
                    .collect(),
            ),
    ]);
    let resp: AddPartitionsToTxnResponse = b
        .replicas
        .peers
        .call(
            &b.replicas,
            coordinator,
            ApiKey::AddPartitionsToTxn,
            ADD_PARTITIONS_VERSION,
            &req,
            PEER_TIMEOUT,
        )
        .await
        .map_err(|e| {
            tracing::info!(coordinator, transactional_id = txn_id, error = %e, "cannot reach the transaction coordinator");
            BrokerError::CoordinatorNotAvailable
        })?;
    if resp.error_code != 0 {
        return Err(BrokerError::Peer(
            resp.error_code,
            format!(
                "the transaction coordinator answered error {}",
                resp.error_code
            ),
        ));
    }
    let code_of = |topic: &str, index: i32| {
        resp.results_by_transaction
            .iter()
            .flat_map(|r| r.topic_results.iter())
            .filter(|t| t.name.0.as_str() == topic)
            .flat_map(|t| t.results_by_partition.iter())
            .find(|r| r.partition_index == index)
            .map(|r| r.partition_error_code)
    };
    Ok(parts
        .iter()
        .map(|(t, i)| match code_of(t, *i) {
            Some(0) => Ok(()),
            Some(c) if c == BrokerError::NotCoordinator.code() => Err(BrokerError::NotCoordinator),
            Some(c) => Err(BrokerError::Peer(
                c,
                format!("the transaction coordinator refused {t}-{i} (error {c})"),
            )),
            None => Err(BrokerError::CoordinatorNotAvailable),
        })
        .collect())
}
