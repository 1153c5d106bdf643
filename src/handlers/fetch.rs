//! Fetch (1): whole batches from the one containing the fetch offset, limited
//! per partition and per response, with long-poll until `min_bytes` arrive or
//! `max_wait_ms` passes. Fetch sessions are declined (session id 0), which
//! every client handles by sending full fetches.
//!
//! read_committed (isolation level 1) reads stop at the last stable offset,
//! and the response lists the aborted transactions overlapping what it
//! returns, so clients drop those records (and never show control batches).
//!
//! Cluster mode: a fetch with a replica id is a follower's. It needs
//! CLUSTER_ACTION, reads up to the log end instead of the high watermark,
//! is not throttled by client quotas, and its fetch offset tells the leader
//! how far the follower has got (see `replication::leader`).
//!
//! KIP-392: consumers that send client metadata (v11+) may read from a
//! follower, up to its high watermark. With the rack-aware replica selector a
//! leader answers a consumer in another rack's partition with the in-sync
//! follower of the consumer's rack (`preferred_read_replica`, no records),
//! and the client goes there.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, ProducerId, TopicName};
use tokio::sync::futures::Notified;
use tokio::time::Instant;
use uuid::Uuid;

use crate::dispatch::RequestContext;
use crate::error::{BrokerError, BrokerResult};
use crate::quotas::limiter::QuotaType;
use crate::security::acl::{Operation, ResourceType};
use crate::storage::partition::Partition;

/// One requested partition, resolved.
struct Wanted {
    index: i32,
    offset: i64,
    max_bytes: usize,
    partition: BrokerResult<Arc<Partition>>,
    /// KIP-392: the replica the consumer should read this partition from.
    preferred: Option<i32>,
}

struct WantedTopic {
    name: TopicName,
    id: Uuid,
    partitions: Vec<Wanted>,
}

impl WantedTopic {
    /// The topic's name (v13+ requests carry only its id).
    fn label_or_name(&self) -> String {
        self.partitions
            .iter()
            .find_map(|w| w.partition.as_ref().ok().map(|p| p.topic.to_string()))
            .unwrap_or_else(|| self.name.0.to_string())
    }
}

/// Longest long-poll we honour, whatever the client asks.
const MAX_WAIT_CAP: Duration = Duration::from_secs(60);

pub async fn handle(ctx: &RequestContext, req: FetchRequest) -> FetchResponse {
    let b = &ctx.broker;
    let v = ctx.api_version;
    if v >= 7 && (req.session_id != 0 || req.session_epoch > 0) {
        // We never hand out session ids, so an incremental fetch cannot refer to one.
        tracing::debug!(peer = %ctx.peer, session = req.session_id, epoch = req.session_epoch, "unknown fetch session");
        b.metrics
            .error("Fetch", BrokerError::FetchSessionIdNotFound.code());
        return FetchResponse::default()
            .with_error_code(BrokerError::FetchSessionIdNotFound.code())
            .with_session_id(0);
    }
    let replica_id = if v >= 15 {
        req.replica_state.replica_id.0
    } else {
        req.replica_id.0
    };
    let follower = (replica_id >= 0 && !b.replicas.is_standalone()).then_some(replica_id);
    // Client metadata (v11+) lets a consumer read from a follower.
    let client_metadata = follower.is_none() && v >= 11;
    let rack_readers = client_metadata
        .then(|| b.replicas.rack_readers(req.rack_id.as_str()))
        .flatten();
    if follower.is_some()
        && !ctx.authorize(
            Operation::ClusterAction,
            ResourceType::Cluster,
            crate::security::acl::CLUSTER_NAME,
        )
    {
        let e = BrokerError::ClusterAuthorizationFailed;
        b.metrics.error("Fetch", e.code());
        return FetchResponse::default().with_error_code(e.code());
    }
    let topics: Vec<WantedTopic> = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = if v >= 13 {
                b.catalog
                    .get_by_id(&t.topic_id)
                    .ok_or(BrokerError::UnknownTopicId)
            } else {
                b.catalog
                    .get(t.topic.0.as_str())
                    .ok_or(BrokerError::UnknownTopicOrPartition)
            };
            let read = |name: &str| {
                follower.is_some() || ctx.authorize(Operation::Read, ResourceType::Topic, name)
            };
            let topic = match topic {
                Ok(found) if !read(found.name.as_str()) => {
                    Err(BrokerError::TopicAuthorizationFailed)
                }
                // Whether a topic exists is itself protected by name.
                Err(_) if v < 13 && !read(t.topic.0.as_str()) => {
                    Err(BrokerError::TopicAuthorizationFailed)
                }
                other => other,
            };
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| Wanted {
                    index: p.partition,
                    offset: p.fetch_offset,
                    max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
                    preferred: match (&topic, &rack_readers) {
                        (Ok(topic), Some(readers)) => b.replicas.preferred_read_replica(
                            readers,
                            topic.name.as_str(),
                            p.partition,
                            p.fetch_offset,
                        ),
                        _ => None,
                    },
                    partition: topic.clone().and_then(|topic| {
                        if client_metadata {
                            b.replicas.check_readable(
                                topic.name.as_str(),
                                p.partition,
                                p.current_leader_epoch,
                            )?;
                        } else {
                            super::check_leader(
                                ctx,
                                topic.name.as_str(),
                                p.partition,
                                p.current_leader_epoch,
                            )?;
                        }
                        if let Some(id) = follower {
                            let r = b
                                .replicas
                                .replica(topic.name.as_str(), p.partition)
                                .ok_or(BrokerError::NotLeaderOrFollower)?;
                            b.replicas.follower_fetched(
                                &r,
                                id,
                                p.fetch_offset,
                                p.current_leader_epoch,
                            )?;
                        }
                        topic
                            .partition(p.partition)
                            .cloned()
                            .ok_or(BrokerError::UnknownTopicOrPartition)
                    }),
                })
                .collect();
            WantedTopic {
                name: t.topic,
                id: t.topic_id,
                partitions,
            }
        })
        .collect();

    let wait = Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0)).min(MAX_WAIT_CAP);
    let deadline = Instant::now() + wait;
    let min_bytes = usize::try_from(req.min_bytes).unwrap_or(0);
    // The broker's fetch.max.bytes caps what a client may ask for (as Kafka).
    let max_bytes = usize::try_from(req.max_bytes)
        .unwrap_or(0)
        .min(ctx.broker.config.fetch_max_bytes)
        .min(if follower.is_some() {
            usize::MAX
        } else {
            ctx.quota_cap(QuotaType::Fetch).unwrap_or(usize::MAX)
        });
    let read_committed = req.isolation_level == 1;
    let live: Vec<Arc<Partition>> = topics
        .iter()
        .flat_map(|t| t.partitions.iter())
        .filter_map(|w| w.partition.as_ref().ok().cloned())
        .collect();

    loop {
        // Register for wake-ups before reading so no append slips between.
        let mut waits: Vec<Pin<Box<Notified<'_>>>> = live
            .iter()
            .map(|p| Box::pin(p.appended.notified()))
            .collect();
        for w in waits.iter_mut() {
            w.as_mut().enable();
        }
        let (responses, bytes, answer_now) =
            collect(ctx, &topics, max_bytes, read_committed, follower);
        if bytes >= min_bytes || answer_now || Instant::now() >= deadline {
            if follower.is_some() {
                b.replicas
                    .stats
                    .bytes_out
                    .fetch_add(bytes as u64, std::sync::atomic::Ordering::Relaxed);
                return FetchResponse::default()
                    .with_session_id(0)
                    .with_responses(responses);
            }
            count_requests(ctx, &topics);
            let throttle = ctx.throttle(QuotaType::Fetch, bytes as f64);
            let resp = FetchResponse::default()
                .with_session_id(0)
                .with_throttle_time_ms(throttle);
            if throttle > 0 {
                // Over quota: Kafka answers empty (and does not count it), and
                // the client asks again after the throttle time.
                ctx.unrecord(QuotaType::Fetch, bytes);
                super::delay_for_old_clients(ctx, throttle, 8).await;
                return resp;
            }
            return resp
                .with_node_endpoints(hinted_endpoints(ctx, &responses))
                .with_responses(responses);
        }
        if waits.is_empty() {
            tokio::time::sleep_until(deadline).await;
        } else {
            tokio::select! {
                _ = futures::future::select_all(waits) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }
}

/// KIP-951 (Fetch v16+): the endpoints of the leaders named in the answers.
fn hinted_endpoints(
    ctx: &RequestContext,
    responses: &[FetchableTopicResponse],
) -> Vec<NodeEndpoint> {
    if ctx.api_version < 16 {
        return Vec::new();
    }
    let named: std::collections::BTreeSet<i32> = responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .map(|p| p.current_leader.leader_id.0)
        .filter(|id| *id >= 0)
        .collect();
    if named.is_empty() {
        return Vec::new();
    }
    ctx.broker_endpoints()
        .into_iter()
        .filter(|(id, ..)| named.contains(id))
        .map(|(id, host, port, rack)| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(id))
                .with_host(kafka_protocol::protocol::StrBytes::from_string(host))
                .with_port(i32::from(port))
                .with_rack(rack.map(kafka_protocol::protocol::StrBytes::from_string))
        })
        .collect()
}

/// Per-topic fetch request counts (a topic with an unknown partition counts as failed).
fn count_requests(ctx: &RequestContext, topics: &[WantedTopic]) {
    let m = &ctx.broker.metrics;
    for t in topics {
        let Some(name) = t
            .partitions
            .iter()
            .find_map(|w| w.partition.as_ref().ok().map(|p| p.topic.clone()))
        else {
            continue;
        };
        m.fetch_requests.with_label_values(&[&*name]).inc();
        if t.partitions.iter().any(|w| w.partition.is_err()) {
            m.failed_fetch_requests.with_label_values(&[&*name]).inc();
        }
    }
}

/// Reads every partition once: the responses, total record bytes, and whether
/// any partition has an error or is to be read elsewhere (either answers at
/// once, as Kafka does).
fn collect(
    ctx: &RequestContext,
    topics: &[WantedTopic],
    max_bytes: usize,
    read_committed: bool,
    follower: Option<i32>,
) -> (Vec<FetchableTopicResponse>, usize, bool) {
    let b = &ctx.broker;
    let mut total = 0usize;
    let mut answer_now = false;
    let responses = topics
        .iter()
        .map(|t| {
            let mut topic_bytes = 0u64;
            // From v13 the request names topics by ID only; label metrics by name.
            let label = t
                .partitions
                .iter()
                .find_map(|w| w.partition.as_ref().ok().map(|p| p.topic.clone()));
            let partitions = t
                .partitions
                .iter()
                .map(|w| {
                    let mut pd = PartitionData::default()
                        .with_partition_index(w.index)
                        .with_aborted_transactions(read_committed.then(Vec::new));
                    let p = match &w.partition {
                        Ok(p) => p,
                        Err(e) => {
                            answer_now = true;
                            b.metrics.error("Fetch", e.code());
                            let hint = matches!(
                                e,
                                BrokerError::NotLeaderOrFollower | BrokerError::FencedLeaderEpoch
                            )
                            .then(|| super::current_leader(ctx, &t.label_or_name(), w.index))
                            .flatten();
                            if let (Some((leader, epoch)), true) = (hint, ctx.api_version >= 12) {
                                pd = pd.with_current_leader(
                                    LeaderIdAndEpoch::default()
                                        .with_leader_id(BrokerId(leader))
                                        .with_leader_epoch(epoch),
                                );
                            }
                            return pd.with_error_code(e.code()).with_high_watermark(-1);
                        }
                    };
                    // The LSO first: it never passes the high watermark read after it.
                    let lso = p.last_stable_offset();
                    let hw = p.high_watermark();
                    pd = pd
                        .with_high_watermark(hw)
                        .with_last_stable_offset(lso.min(hw))
                        .with_log_start_offset(p.log_start_offset());
                    if let Some(id) = w.preferred {
                        // Nothing read here: the client asks that replica.
                        answer_now = true;
                        return pd
                            .with_preferred_read_replica(BrokerId(id))
                            .with_records(Some(Bytes::new()));
                    }
                    // The first batch is always returned whole; after that the response limit applies.
                    let room = if total == 0 {
                        w.max_bytes.max(1)
                    } else {
                        w.max_bytes.min(max_bytes.saturating_sub(total))
                    };
                    if room == 0 {
                        return pd.with_records(Some(Bytes::new()));
                    }
                    let read = if follower.is_some() {
                        p.read_for_replica(&b.store, w.offset, room)
                    } else {
                        p.read_upto(&b.store, w.offset, room, read_committed)
                    };
                    match read {
                        Ok(r) => {
                            total += r.len();
                            topic_bytes += r.len() as u64;
                            if let (true, Some(end)) = (read_committed, r.end_offset()) {
                                let aborted = p
                                    .aborted_between(w.offset, end)
                                    .into_iter()
                                    .map(|a| {
                                        AbortedTransaction::default()
                                            .with_producer_id(ProducerId(a.producer_id))
                                            .with_first_offset(a.first_offset)
                                    })
                                    .collect();
                                pd = pd.with_aborted_transactions(Some(aborted));
                            }
                            pd.with_records(Some(r.into_bytes()))
                        }
                        Err(e) => {
                            answer_now = true;
                            b.metrics.error("Fetch", e.code());
                            tracing::debug!(
                                peer = %ctx.peer,
                                topic = %p.topic,
                                partition = w.index,
                                offset = w.offset,
                                error = %e,
                                "fetch error"
                            );
                            pd.with_error_code(e.code())
                        }
                    }
                })
                .collect();
            if let (true, Some(label)) = (topic_bytes > 0, label) {
                b.metrics
                    .bytes_out
                    .with_label_values(&[&*label])
                    .inc_by(topic_bytes);
            }
            FetchableTopicResponse::default()
                .with_topic(t.name.clone())
                .with_topic_id(t.id)
                .with_partitions(partitions)
        })
        .collect();
    (responses, total, answer_now)
}
