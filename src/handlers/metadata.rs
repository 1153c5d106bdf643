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
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};
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
    let ops = req.include_topic_authorized_operations;
    let topics: Vec<MetadataResponseTopic> = if !b.cluster.is_standalone() {
        shared::topics(ctx, wanted, client_allows, ops).await
    } else {
        match wanted {
            // Topics the principal may not describe are left out, not refused.
            None => b
                .catalog
                .all()
                .iter()
                .filter(|t| {
                    ctx.authorize_quiet(Operation::Describe, ResourceType::Topic, t.name.as_str())
                })
                .map(|t| describe(ctx, t, node, ops))
                .collect(),
            Some(list) => list
                .into_iter()
                .map(|t| match t.name {
                    Some(name) => by_name(ctx, name.0.as_str(), client_allows, node, ops),
                    None => by_id(ctx, t.topic_id, node, ops),
                })
                .collect(),
        }
    };
    for t in &topics {
        b.metrics.error("Metadata", t.error_code);
    }
    let brokers = ctx
        .broker_endpoints()
        .into_iter()
        .map(|(id, host, port, rack)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(sb(host))
                .with_port(i32::from(port))
                .with_rack(rack.map(sb))
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(sb(b.cluster_id())))
        .with_controller_id(BrokerId(ctx.controller_id()))
        .with_topics(topics)
        .with_cluster_authorized_operations(ctx.authorized_operations(
            req.include_cluster_authorized_operations,
            ResourceType::Cluster,
            CLUSTER_NAME,
        ))
}

fn failed(e: BrokerError) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_error_code(e.code())
        .with_topic_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED)
}

fn by_name(
    ctx: &RequestContext,
    name: &str,
    client_allows: bool,
    node: BrokerId,
    ops: bool,
) -> MetadataResponseTopic {
    let b = &ctx.broker;
    let found = if !ctx.authorize(Operation::Describe, ResourceType::Topic, name) {
        Err(BrokerError::TopicAuthorizationFailed)
    } else {
        match b.catalog.get(name) {
            Some(t) => Ok(t),
            // Creating needs CREATE on the cluster or on the topic (as Kafka,
            // refused with TOPIC_AUTHORIZATION_FAILED).
            None if client_allows && b.config.auto_create_topics_enable => {
                if may_create(ctx, name) {
                    auto_create(b, name)
                } else {
                    Err(BrokerError::TopicAuthorizationFailed)
                }
            }
            None => Err(crate::types::TopicName::parse(name)
                .err()
                .unwrap_or(BrokerError::UnknownTopicOrPartition)),
        }
    };
    match found {
        Ok(t) => describe(ctx, &t, node, ops),
        Err(e) => {
            tracing::debug!(peer = %ctx.peer, topic = name, error = %e, "Metadata: topic not available");
            failed(e).with_name(Some(TopicName(sb(name))))
        }
    }
}

fn by_id(ctx: &RequestContext, id: Uuid, node: BrokerId, ops: bool) -> MetadataResponseTopic {
    match ctx.broker.catalog.get_by_id(&id) {
        Some(t) if ctx.authorize(Operation::Describe, ResourceType::Topic, t.name.as_str()) => {
            describe(ctx, &t, node, ops)
        }
        Some(_) => failed(BrokerError::TopicAuthorizationFailed).with_topic_id(id),
        None => failed(BrokerError::UnknownTopicId).with_topic_id(id),
    }
}

fn describe(
    ctx: &RequestContext,
    t: &Arc<Topic>,
    node: BrokerId,
    ops: bool,
) -> MetadataResponseTopic {
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
    topic_entry(ctx, t.name.as_str(), t.id, partitions, ops)
}

/// A described topic, standalone or shared alike.
fn topic_entry(
    ctx: &RequestContext,
    name: &str,
    id: Uuid,
    partitions: Vec<MetadataResponsePartition>,
    ops: bool,
) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(sb(name))))
        .with_topic_id(id)
        .with_is_internal(
            name == crate::coordinator::offsets_log::TOPIC
                || name == crate::coordinator::txn_log::TOPIC,
        )
        .with_partitions(partitions)
        .with_topic_authorized_operations(ctx.authorized_operations(ops, ResourceType::Topic, name))
}

/// Auto-creation needs CREATE on the cluster or on the topic (as Kafka).
fn may_create(ctx: &RequestContext, name: &str) -> bool {
    ctx.authorize_quiet(Operation::Create, ResourceType::Cluster, CLUSTER_NAME)
        || ctx.authorize(Operation::Create, ResourceType::Topic, name)
}

/// Cluster mode: topics and partition leaders from the cluster's shared
/// state (a partition whose leader is not live has none).
mod shared {
    use std::collections::HashSet;

    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::{BrokerId, TopicName};

    use super::{failed, sb};
    use crate::cluster::TopicState;
    use crate::dispatch::RequestContext;
    use crate::error::BrokerError;
    use crate::security::acl::{Operation, ResourceType};

    pub async fn topics(
        ctx: &RequestContext,
        wanted: Option<Vec<MetadataRequestTopic>>,
        client_allows: bool,
        ops: bool,
    ) -> Vec<MetadataResponseTopic> {
        let c = &ctx.broker.cluster;
        let live: HashSet<i32> = c.live_brokers().iter().map(|b| b.node_id).collect();
        match wanted {
            None => c
                .topics()
                .iter()
                .filter(|t| ctx.authorize_quiet(Operation::Describe, ResourceType::Topic, &t.name))
                .map(|t| describe(ctx, t, &live, ops))
                .collect(),
            Some(list) => {
                let mut out = Vec::with_capacity(list.len());
                for t in list {
                    out.push(match t.name {
                        Some(name) => {
                            by_name(ctx, name.0.as_str(), client_allows, &live, ops).await
                        }
                        None => match c.topics().into_iter().find(|s| s.id == t.topic_id) {
                            Some(s)
                                if ctx.authorize(
                                    Operation::Describe,
                                    ResourceType::Topic,
                                    &s.name,
                                ) =>
                            {
                                describe(ctx, &s, &live, ops)
                            }
                            Some(_) => failed(BrokerError::TopicAuthorizationFailed)
                                .with_topic_id(t.topic_id),
                            None => failed(BrokerError::UnknownTopicId).with_topic_id(t.topic_id),
                        },
                    });
                }
                out
            }
        }
    }

    async fn by_name(
        ctx: &RequestContext,
        name: &str,
        client_allows: bool,
        live: &HashSet<i32>,
        ops: bool,
    ) -> MetadataResponseTopic {
        let b = &ctx.broker;
        let found = if !ctx.authorize(Operation::Describe, ResourceType::Topic, name) {
            Err(BrokerError::TopicAuthorizationFailed)
        } else {
            match b.cluster.topic(name) {
                Some(t) => Ok(t),
                None if client_allows && b.config.auto_create_topics_enable => {
                    if super::may_create(ctx, name) {
                        match crate::types::TopicName::parse(name) {
                            Ok(_) => match b
                                .cluster
                                .create_topic(
                                    name,
                                    b.config.num_partitions,
                                    crate::cluster::Placement::Factor(
                                        b.config.default_replication_factor.min(
                                            i16::try_from(b.cluster.live_brokers().len())
                                                .unwrap_or(1),
                                        ),
                                    ),
                                    Default::default(),
                                )
                                .await
                            {
                                Ok(t) => Ok(t),
                                // Created meanwhile by another client.
                                Err(BrokerError::TopicAlreadyExists(_)) => {
                                    b.cluster.topic(name).ok_or(BrokerError::LeaderNotAvailable)
                                }
                                Err(e) => Err(e),
                            },
                            Err(e) => Err(e),
                        }
                    } else {
                        Err(BrokerError::TopicAuthorizationFailed)
                    }
                }
                None => Err(crate::types::TopicName::parse(name)
                    .err()
                    .unwrap_or(BrokerError::UnknownTopicOrPartition)),
            }
        };
        match found {
            Ok(t) => describe(ctx, &t, live, ops),
            Err(e) => failed(e).with_name(Some(TopicName(sb(name)))),
        }
    }

    fn describe(
        ctx: &RequestContext,
        t: &TopicState,
        live: &HashSet<i32>,
        ops: bool,
    ) -> MetadataResponseTopic {
        let partitions = t
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let up = live.contains(&p.leader);
                let r = MetadataResponsePartition::default()
                    .with_partition_index(i as i32)
                    .with_leader_id(BrokerId(if up { p.leader } else { -1 }))
                    .with_leader_epoch(p.leader_epoch)
                    .with_replica_nodes(p.replicas.iter().map(|&r| BrokerId(r)).collect())
                    .with_isr_nodes(p.isr.iter().map(|&r| BrokerId(r)).collect())
                    .with_offline_replicas(
                        p.replicas
                            .iter()
                            .filter(|r| !live.contains(r))
                            .map(|&r| BrokerId(r))
                            .collect(),
                    );
                if up {
                    r
                } else {
                    r.with_error_code(BrokerError::LeaderNotAvailable.code())
                }
            })
            .collect();
        super::topic_entry(ctx, &t.name, t.id, partitions, ops)
    }
}
