//! Metadata (3): brokers, cluster id, controller, topics with IDs and
//! partitions; creates missing topics when the broker and the client allow it.

use std::sync::Arc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use uuid::Uuid;

use super::{auto_create, sb, AUTHORIZED_OPERATIONS_OMITTED};
use crate::dispatch::RequestContext;
use crate::error::BrokerError;
use crate::storage::catalog::Topic;

pub async fn handle(ctx: &RequestContext, req: MetadataRequest) -> MetadataResponse {
    let b = &ctx.broker;
    let v = ctx.api_version;
    let node = BrokerId(b.config.node_id);
    // v0: an empty list means all topics; v1+: null means all.
    let wanted = match req.topics {
        None => None,
        Some(t) if t.is_empty() && v == 0 => None,
        Some(t) => Some(t),
    };
    // Before v4 the request has no flag and creation depends on the broker alone.
    let client_allows = v < 4 || req.allow_auto_topic_creation;
    let topics: Vec<MetadataResponseTopic> = match wanted {
        None => b
            .catalog
            .all()
            .iter()
            .map(|t| describe(t, node, v))
            .collect(),
        Some(list) => list
            .into_iter()
            .map(|t| match t.name {
                Some(name) => by_name(ctx, name.0.as_str(), client_allows, node),
                None => by_id(ctx, t.topic_id, node),
            })
            .collect(),
    };
    for t in &topics {
        b.metrics.error("Metadata", t.error_code);
    }
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(node)
            .with_host(sb(ctx.advertised().0.to_string()))
            .with_port(i32::from(ctx.advertised().1))])
        .with_cluster_id(Some(sb(b.cluster_id())))
        .with_controller_id(node)
        .with_topics(topics)
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}

fn by_name(
    ctx: &RequestContext,
    name: &str,
    client_allows: bool,
    node: BrokerId,
) -> MetadataResponseTopic {
    let b = &ctx.broker;
    let found = match b.catalog.get(name) {
        Some(t) => Ok(t),
        None if client_allows && b.config.auto_create_topics_enable => auto_create(b, name),
        None => Err(crate::types::TopicName::parse(name)
            .err()
            .unwrap_or(BrokerError::UnknownTopicOrPartition)),
    };
    match found {
        Ok(t) => describe(&t, node, ctx.api_version),
        Err(e) => {
            tracing::debug!(peer = %ctx.peer, topic = name, error = %e, "Metadata: topic not available");
            MetadataResponseTopic::default()
                .with_error_code(e.code())
                .with_name(Some(TopicName(sb(name))))
                .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
        }
    }
}

fn by_id(ctx: &RequestContext, id: Uuid, node: BrokerId) -> MetadataResponseTopic {
    match ctx.broker.catalog.get_by_id(&id) {
        Some(t) => describe(&t, node, ctx.api_version),
        None => MetadataResponseTopic::default()
            .with_error_code(BrokerError::UnknownTopicId.code())
            .with_topic_id(id)
            .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
    }
}

fn describe(t: &Arc<Topic>, node: BrokerId, _version: i16) -> MetadataResponseTopic {
    let partitions = t
        .partitions
        .iter()
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p.id.get())
                .with_leader_id(node)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(sb(t.name.as_str()))))
        .with_topic_id(t.id)
        .with_is_internal(false)
        .with_partitions(partitions)
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}
