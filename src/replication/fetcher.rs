//! Follower fetchers: one loop per leader broker, fetching every partition
//! this broker follows there with Fetch (replica id set, so the leader
//! counts the fetch offset as this replica's log end) and writing what comes
//! back at the leader's offsets. Before a partition's first fetch in a new
//! leader epoch, the loop asks the leader where the log diverged
//! (OffsetForLeaderEpoch with this replica's latest epoch) and truncates
//! there, so a tail written under a deposed leader never survives.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::client::BrokerConn;
use super::{Replica, ReplicaManager, ReplicationConfig};
use crate::error::BrokerError;
use crate::storage::batch::split_and_validate;
use crate::storage::writer::{LogChange, PartitionAppend};

const FETCH_VERSION: i16 = 12;
const EPOCH_VERSION: i16 = 4;
/// Most bytes one fetch answer may carry (Kafka's replica.fetch.response.max.bytes).
const RESPONSE_MAX_BYTES: i32 = 10 << 20;

pub fn spawn(mgr: Arc<ReplicaManager>, leader: i32) {
    tokio::spawn(async move { run(mgr, leader).await });
}

async fn run(mgr: Arc<ReplicaManager>, leader: i32) {
    let Some(cfg) = mgr.cfg.clone() else { return };
    let mut conn: Option<BrokerConn> = None;
    let mut failures = 0u32;
    loop {
        let parts = mgr.following(leader);
        if parts.is_empty() {
            conn = None;
            let changed = mgr.changed.notified();
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match super::peers::connect(&mgr, leader).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    failures += 1;
                    if failures % 20 == 1 {
                        tracing::warn!(leader, error = %e, "cannot reach the leader to replicate");
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            },
        };
        let result = async {
            let needing: Vec<&(Arc<Replica>, i32)> = parts
                .iter()
                .filter(|(r, _)| r.needs_truncation.load(Ordering::Acquire))
                .collect();
            if !needing.is_empty() {
                truncate(&mgr, c, &needing).await?;
            }
            let ready: Vec<(Arc<Replica>, i32)> = parts
                .iter()
                .filter(|(r, _)| !r.needs_truncation.load(Ordering::Acquire))
                .cloned()
                .collect();
            if ready.is_empty() {
                return Ok(true);
            }
            fetch_once(&mgr, c, &ready, &cfg).await
        }
        .await;
        match result {
            Ok(false) => failures = 0,
            Ok(true) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => {
                failures += 1;
                if failures % 20 == 1 {
                    tracing::warn!(leader, error = %e, "replica fetch failed; reconnecting");
                }
                conn = None;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Asks the leader where each partition's log diverged and cuts it there.
async fn truncate(
    mgr: &ReplicaManager,
    c: &mut BrokerConn,
    parts: &[&(Arc<Replica>, i32)],
) -> Result<(), String> {
    let mut by_topic: BTreeMap<&str, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
    for (r, epoch) in parts {
        let p = &r.partition;
        let Some(latest) = p.epochs().latest() else {
            // Nothing written under any epoch: nothing can diverge, except
            // data from before epochs were kept, cut to the high watermark.
            let hw = p.high_watermark();
            if p.log_end_offset() > hw {
                mgr.writer
                    .change_log(p.clone(), LogChange::TruncateTo { offset: hw })
                    .await
                    .map_err(|e| e.to_string())?;
            }
            r.needs_truncation.store(false, Ordering::Release);
            continue;
        };
        by_topic.entry(&r.topic).or_default().push(
            OffsetForLeaderPartition::default()
                .with_partition(r.index)
                .with_current_leader_epoch(*epoch)
                .with_leader_epoch(latest),
        );
    }
    if by_topic.is_empty() {
        return Ok(());
    }
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(mgr.node_id))
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    OffsetForLeaderTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let resp: OffsetForLeaderEpochResponse = c
        .call(
            ApiKey::OffsetForLeaderEpoch,
            EPOCH_VERSION,
            &req,
            Duration::from_secs(10),
        )
        .await?;
    for t in resp.topics {
        for pr in t.partitions {
            let Some((r, _)) = parts
                .iter()
                .find(|(r, _)| r.topic == t.topic.0.as_str() && r.index == pr.partition)
            else {
                continue;
            };
            if pr.error_code != 0 {
                tracing::debug!(topic = %r.topic, partition = r.index, code = pr.error_code, "leader cannot answer for its epochs yet");
                continue;
            }
            let p = &r.partition;
            let end = p.log_end_offset();
            let cut = if pr.leader_epoch < 0 {
                p.high_watermark()
            } else {
                let ours = p.epochs().end_offset_for(pr.leader_epoch, end).1;
                let ours = if ours < 0 { end } else { ours };
                pr.end_offset.min(ours)
            };
            if cut < end {
                mgr.writer
                    .change_log(p.clone(), LogChange::TruncateTo { offset: cut })
                    .await
                    .map_err(|e| e.to_string())?;
            }
            r.needs_truncation.store(false, Ordering::Release);
        }
    }
    Ok(())
}

/// One fetch round; true when the loop should back off a little.
async fn fetch_once(
    mgr: &ReplicaManager,
    c: &mut BrokerConn,
    parts: &[(Arc<Replica>, i32)],
    cfg: &ReplicationConfig,
) -> Result<bool, String> {
    let mut by_topic: BTreeMap<&str, Vec<FetchPartition>> = BTreeMap::new();
    for (r, epoch) in parts {
        let p = &r.partition;
        by_topic.entry(&r.topic).or_default().push(
            FetchPartition::default()
                .with_partition(r.index)
                .with_current_leader_epoch(*epoch)
                .with_fetch_offset(p.log_end_offset())
                .with_last_fetched_epoch(p.epochs().latest().unwrap_or(-1))
                .with_log_start_offset(p.log_start_offset())
                .with_partition_max_bytes(cfg.fetch_max_bytes),
        );
    }
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(mgr.node_id))
        .with_max_wait_ms(i32::try_from(cfg.fetch_wait_max.as_millis()).unwrap_or(500))
        .with_min_bytes(1)
        .with_max_bytes(RESPONSE_MAX_BYTES)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(
            by_topic
                .into_iter()
                .map(|(t, ps)| {
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let timeout = cfg.fetch_wait_max + Duration::from_secs(10);
    let resp: FetchResponse = c.call(ApiKey::Fetch, FETCH_VERSION, &req, timeout).await?;
    if resp.error_code != 0 {
        return Err(format!("fetch refused with error {}", resp.error_code));
    }
    let mut appends = Vec::new();
    let mut hws = Vec::new();
    let mut backoff = false;
    for t in resp.responses {
        for pd in t.partitions {
            let Some((r, _)) = parts
                .iter()
                .find(|(r, _)| r.topic == t.topic.0.as_str() && r.index == pd.partition_index)
            else {
                continue;
            };
            match pd.error_code {
                0 => {}
                // OFFSET_OUT_OF_RANGE: behind the leader's log start, or
                // ahead of its end (look for the divergence again).
                1 => {
                    let p = &r.partition;
                    if pd.log_start_offset > p.log_end_offset() {
                        mgr.writer
                            .change_log(
                                p.clone(),
                                LogChange::RestartAt {
                                    start: pd.log_start_offset,
                                },
                            )
                            .await
                            .map_err(|e| e.to_string())?;
                    } else {
                        r.needs_truncation.store(true, Ordering::Release);
                    }
                    continue;
                }
                code => {
                    tracing::debug!(topic = %r.topic, partition = r.index, code, "leader refused the replica fetch");
                    backoff = true;
                    continue;
                }
            }
            let records: Bytes = pd.records.unwrap_or_default();
            if !records.is_empty() {
                mgr.stats
                    .bytes_in
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                match split_and_validate(&records, usize::MAX) {
                    Ok(batches) => appends.push(PartitionAppend {
                        partition: r.partition.clone(),
                        batches,
                    }),
                    Err(e) => {
                        return Err(format!(
                            "the leader sent invalid batches for {}-{}: {e}",
                            r.topic, r.index
                        ))
                    }
                }
            }
            hws.push((r.partition.clone(), pd.high_watermark, pd.log_start_offset));
        }
    }
    if !appends.is_empty() {
        for outcome in mgr.writer.replicate(appends).await {
            if let Err(e) = outcome {
                if !matches!(e, BrokerError::UnknownTopicOrPartition) {
                    return Err(format!("replica write failed: {e}"));
                }
            }
        }
    }
    for (p, hw, leader_start) in hws {
        p.follow_high_watermark(hw);
        // Records the leader deleted (DeleteRecords, retention) go here too,
        // so a later leader never serves them again.
        if leader_start.min(p.high_watermark()) > p.log_start_offset() {
            mgr.writer
                .change_log(
                    p.clone(),
                    LogChange::AdvanceStart {
                        start: leader_start,
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(backoff)
}
