//! ConsumerGroupHeartbeat (68, v0–1): the KIP-848 consumer protocol. One
//! request joins (epoch 0), reports progress, or leaves (-1, or -2 for a
//! static member); the answer carries the member's epoch, the heartbeat
//! interval and, when it changed, its assignment. v1 members choose their
//! own member id (KIP-1082) and may subscribe by regex.
//!
//! The group's `consumer.session.timeout.ms` / `consumer.heartbeat.interval.ms`
//! (GROUP configs, else the broker's `group.consumer.*`) apply.

use std::collections::BTreeMap;

use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};

use super::sb;
use crate::coordinator::consumer_group::{self, Heartbeat, Limits, TopicsMeta};
use crate::coordinator::migration::MigrationPolicy;
use crate::dispatch::RequestContext;
use crate::error::{BrokerError, BrokerResult};
use crate::security::acl::{Operation, ResourceType};

pub async fn handle(
    ctx: &RequestContext,
    req: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let b = &ctx.broker;
    let group = req.group_id.0.to_string();
    let (limits, interval) = settings(ctx, &group);
    let answer = heartbeat(ctx, &group, req, &limits);
    if !b.cluster.is_standalone() {
        // The group's new state is on the in-sync replicas before the member
        // hears of it, so a new coordinator resumes from it.
        crate::coordinator::offsets_log::log_groups(b, Some(&group)).await;
    }
    match answer {
        Ok(a) => ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(sb(a.member_id)))
            .with_member_epoch(a.epoch)
            .with_heartbeat_interval_ms(interval)
            .with_assignment(a.assignment.map(|asg| {
                Assignment::default().with_topic_partitions(
                    asg.into_iter()
                        .map(|(id, ps)| {
                            TopicPartitions::default()
                                .with_topic_id(id)
                                .with_partitions(ps.into_iter().collect())
                        })
                        .collect(),
                )
            })),
        Err(e) => {
            b.metrics.error("ConsumerGroupHeartbeat", e.code());
            tracing::info!(peer = %ctx.peer, group = %group, error = %e, "ConsumerGroupHeartbeat refused");
            ConsumerGroupHeartbeatResponse::default()
                .with_error_code(e.code())
                .with_error_message(e.message())
                .with_heartbeat_interval_ms(interval)
        }
    }
}

fn heartbeat(
    ctx: &RequestContext,
    group: &str,
    req: ConsumerGroupHeartbeatRequest,
    limits: &Limits,
) -> BrokerResult<consumer_group::HeartbeatAnswer> {
    let b = &ctx.broker;
    if group.is_empty() {
        return Err(BrokerError::InvalidRequest("GroupId can't be empty".into()));
    }
    super::group_served(ctx, Operation::Read, group)?;
    // v1: the member names itself; v0: the coordinator does on joining.
    if ctx.api_version >= 1 && req.member_id.is_empty() {
        return Err(BrokerError::InvalidRequest(
            "MemberId can't be empty".into(),
        ));
    }
    if req.member_epoch < -2 {
        return Err(BrokerError::InvalidRequest(format!(
            "MemberEpoch {} is invalid",
            req.member_epoch
        )));
    }
    if req.member_epoch == 0 && req.rebalance_timeout_ms < 0 {
        return Err(BrokerError::InvalidRequest(
            "RebalanceTimeoutMs must be provided in the first request".into(),
        ));
    }
    let topics: Option<Vec<String>> = req
        .subscribed_topic_names
        .map(|ts| ts.into_iter().map(|t| t.0.to_string()).collect());
    // Subscribing needs DESCRIBE on the topics named (regexes see only
    // topics the principal may describe).
    if let Some(ts) = &topics {
        if let Some(t) = ts
            .iter()
            .find(|t| !ctx.authorize(Operation::Describe, ResourceType::Topic, t))
        {
            tracing::info!(peer = %ctx.peer, group, topic = %t, "subscription to a topic the principal may not describe");
            return Err(BrokerError::TopicAuthorizationFailed);
        }
    }
    let owned = req.topic_partitions.map(|tps| {
        let mut a = consumer_group::Assignment::new();
        for tp in tps {
            a.entry(tp.topic_id).or_default().extend(tp.partitions);
        }
        a.retain(|_, ps| !ps.is_empty());
        a
    });
    let hb = Heartbeat {
        member_id: req.member_id.to_string(),
        epoch: req.member_epoch,
        instance_id: req.instance_id.map(|s| s.to_string()),
        rack_id: req.rack_id.map(|s| s.to_string()),
        client_id: ctx.client().to_string(),
        client_host: format!("/{}", ctx.peer.ip()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        topics,
        regex: req.subscribed_topic_regex.map(|s| s.to_string()),
        assignor: req.server_assignor.map(|s| s.to_string()),
        owned,
    };
    let meta = topics_meta(ctx);
    let racks = partition_racks(ctx, &meta);
    b.groups.consumer_heartbeat(group, hb, limits, &meta, racks)
}

/// Every topic a member could be assigned: name → (id, partitions). Internal
/// topics and topics the principal may not describe are left out.
pub(crate) fn topics_meta(ctx: &RequestContext) -> TopicsMeta {
    ctx.broker
        .catalog
        .all()
        .iter()
        .filter(|t| !t.name.as_str().starts_with("__"))
        .filter(|t| ctx.authorize_quiet(Operation::Describe, ResourceType::Topic, t.name.as_str()))
        .map(|t| (t.name.to_string(), (t.id, t.partitions.len() as i32)))
        .collect::<BTreeMap<_, _>>()
}

/// The racks holding each partition's replicas, when brokers have racks
/// (standalone: this broker's `broker.rack` for every partition).
fn partition_racks(ctx: &RequestContext, topics: &TopicsMeta) -> consumer_group::PartitionRacks {
    let b = &ctx.broker;
    let racks: std::collections::HashMap<i32, String> = b
        .cluster
        .live_brokers()
        .into_iter()
        .filter_map(|i| Some((i.node_id, i.rack?)))
        .collect();
    let mut out = consumer_group::PartitionRacks::new();
    if racks.is_empty() {
        return out;
    }
    for (name, (id, n)) in topics {
        match b.cluster.topic(name) {
            Some(state) => {
                for (i, p) in state.partitions.iter().enumerate() {
                    let on: std::collections::BTreeSet<String> = p
                        .replicas
                        .iter()
                        .filter_map(|r| racks.get(r).cloned())
                        .collect();
                    out.insert((*id, i as i32), on);
                }
            }
            None => {
                let all: std::collections::BTreeSet<String> = racks.values().cloned().collect();
                for i in 0..*n {
                    out.insert((*id, i), all.clone());
                }
            }
        }
    }
    out
}

/// The group's session timeout and heartbeat interval, and the broker's
/// `group.consumer.max.size`.
pub(crate) fn settings(ctx: &RequestContext, group: &str) -> (Limits, i32) {
    let b = &ctx.broker;
    let overrides = b.group_configs.get(group);
    let layers = b.broker_configs.layers();
    let broker = &layers.merged;
    let ms = |k: &str, d: i64| {
        crate::config::group::effective_i64(k, &overrides, broker)
            .unwrap_or(d)
            .max(1)
    };
    let session = ms("consumer.session.timeout.ms", 45_000);
    let interval = ms("consumer.heartbeat.interval.ms", 5_000);
    let max_size = broker
        .get("group.consumer.max.size")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(usize::MAX);
    (
        Limits {
            session_timeout: std::time::Duration::from_millis(session as u64),
            max_size,
            migration: broker
                .get("group.consumer.migration.policy")
                .and_then(|p| MigrationPolicy::parse(p))
                .unwrap_or_default(),
        },
        i32::try_from(interval).unwrap_or(i32::MAX),
    )
}
