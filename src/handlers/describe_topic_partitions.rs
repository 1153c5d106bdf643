//! DescribeTopicPartitions (75): topics and partitions like Metadata, paged
//! with a cursor and `response_partition_limit`, in topic-name order.

use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};

use super::{sb, AUTHORIZED_OPERATIONS_OMITTED};
use crate::dispatch::RequestContext;
use crate::error::BrokerError;
use crate::security::acl::{Operation, ResourceType};

/// Kafka's cap on partitions in one response.
const MAX_PARTITIONS: usize = 2000;

pub async fn handle(
    ctx: &RequestContext,
    req: DescribeTopicPartitionsRequest,
) -> DescribeTopicPartitionsResponse {
    let b = &ctx.broker;
    let node = BrokerId(b.config.node_id);
    let limit = usize::try_from(req.response_partition_limit)
        .unwrap_or(MAX_PARTITIONS)
        .clamp(1, MAX_PARTITIONS);
    // Names to describe, sorted: all topics when the request lists none.
    let mut names: Vec<String> = if req.topics.is_empty() {
        b.catalog
            .all()
            .iter()
            .map(|t| t.name.to_string())
            .filter(|n| ctx.authorize_quiet(Operation::Describe, ResourceType::Topic, n))
            .collect()
    } else {
        req.topics.iter().map(|t| t.name.0.to_string()).collect()
    };
    names.sort();
    names.dedup();
    let (cursor_topic, cursor_partition) = match &req.cursor {
        Some(c) => (Some(c.topic_name.0.to_string()), c.partition_index.max(0)),
        None => (None, 0),
    };
    let mut remaining = limit;
    let mut topics = Vec::new();
    let mut next_cursor = None;
    for name in names {
        if cursor_topic.as_ref().is_some_and(|c| name < *c) {
            continue;
        }
        let first = if cursor_topic.as_deref() == Some(name.as_str()) {
            cursor_partition
        } else {
            0
        };
        let authorized = ctx.authorize(Operation::Describe, ResourceType::Topic, &name);
        let found = b.catalog.get(&name).filter(|_| authorized);
        let Some(topic) = found else {
            let e = if authorized {
                BrokerError::UnknownTopicOrPartition
            } else {
                BrokerError::TopicAuthorizationFailed
            };
            b.metrics.error("DescribeTopicPartitions", e.code());
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_error_code(e.code())
                    .with_name(Some(TopicName(sb(name))))
                    .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED),
            );
            continue;
        };
        // Kafka always reports these here.
        let ops = ctx.authorized_operations(true, ResourceType::Topic, &name);
        if remaining == 0 {
            next_cursor = Some(
                Cursor::default()
                    .with_topic_name(TopicName(sb(name)))
                    .with_partition_index(first),
            );
            break;
        }
        let mut partitions = Vec::new();
        for p in topic
            .partitions
            .iter()
            .skip(usize::try_from(first).unwrap_or(0))
        {
            if remaining == 0 {
                next_cursor = Some(
                    Cursor::default()
                        .with_topic_name(TopicName(sb(name.clone())))
                        .with_partition_index(p.id.get()),
                );
                break;
            }
            remaining -= 1;
            partitions.push(
                DescribeTopicPartitionsResponsePartition::default()
                    .with_partition_index(p.id.get())
                    .with_leader_id(node)
                    .with_leader_epoch(0)
                    .with_replica_nodes(vec![node])
                    .with_isr_nodes(vec![node])
                    .with_eligible_leader_replicas(Some(Vec::new()))
                    .with_last_known_elr(Some(Vec::new())),
            );
        }
        topics.push(
            DescribeTopicPartitionsResponseTopic::default()
                .with_name(Some(TopicName(sb(name))))
                .with_topic_id(topic.id)
                .with_partitions(partitions)
                .with_topic_authorized_operations(ops),
        );
        if next_cursor.is_some() {
            break;
        }
    }
    DescribeTopicPartitionsResponse::default()
        .with_topics(topics)
        .with_next_cursor(next_cursor)
}
