//! CreateTopics (19): name rules, partition count, replication factor (1 on
//! a single node; up to the live brokers in a cluster, or an explicit
//! assignment), configs validated and stored, `validate_only`.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::sb;
use crate::cluster::Placement;
use crate::config::topic::{resolve_all, validate_topic_config};
use crate::dispatch::RequestContext;
use crate::error::{BrokerError, BrokerResult};
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::types::TopicName;

pub async fn handle(ctx: &RequestContext, req: CreateTopicsRequest) -> CreateTopicsResponse {
    let b = &ctx.broker;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for t in &req.topics {
        *seen.entry(t.name.0.to_string()).or_default() += 1;
    }
    // CREATE on the cluster covers every topic; otherwise each needs its own.
    let cluster_create =
        ctx.authorize_quiet(Operation::Create, ResourceType::Cluster, CLUSTER_NAME);
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let r = {
            let name = t.name.clone();
            let outcome = if !cluster_create
                && !ctx.authorize(Operation::Create, ResourceType::Topic, name.0.as_str())
            {
                Err(BrokerError::TopicAuthorizationFailed)
            } else if seen.get(name.0.as_str()).copied().unwrap_or(0) > 1 {
                Err(BrokerError::InvalidRequest(format!(
                    "Create topics request from client `{}` contains multiple entries for the following topics: {}",
                    ctx.client(),
                    name.0.as_str()
                )))
            } else {
                match create_one(ctx, t, req.validate_only) {
                    // Cluster mode: the topic is created in the shared state
                    // (partitions spread over the brokers); each broker then
                    // creates its local storage.
                    Ok(c) if c.shared => b
                        .cluster
                        .create_topic(
                            name.0.as_str(),
                            c.partitions,
                            c.placement.clone(),
                            c.configs.clone(),
                        )
                        .await
                        .map(|s| Created { id: s.id, ..c }),
                    other => other,
                }
            };
            let r = CreatableTopicResult::default().with_name(name.clone());
            match outcome {
                // Configs are shown only to who may describe them (Kafka).
                Ok(created)
                    if !ctx.authorize(
                        Operation::DescribeConfigs,
                        ResourceType::Topic,
                        name.0.as_str(),
                    ) =>
                {
                    r.with_topic_id(created.id)
                        .with_num_partitions(created.partitions)
                        .with_replication_factor(created.placement.factor())
                        .with_topic_config_error_code(BrokerError::TopicAuthorizationFailed.code())
                }
                Ok(created) => {
                    let configs = resolve_all(&created.configs, &b.broker_configs.layers())
                        .into_iter()
                        .map(|c| {
                            CreatableTopicConfigs::default()
                                .with_name(sb(c.def.name))
                                .with_value(Some(sb(c.value)))
                                .with_config_source(c.source as i8)
                        })
                        .collect();
                    r.with_topic_id(created.id)
                        .with_num_partitions(created.partitions)
                        .with_replication_factor(created.placement.factor())
                        .with_configs(Some(configs))
                }
                Err(e) => {
                    b.metrics.error("CreateTopics", e.code());
                    tracing::info!(peer = %ctx.peer, topic = %name.0.as_str(), error = %e, "CreateTopics rejected");
                    r.with_error_code(e.code())
                        .with_error_message(e.message())
                        .with_num_partitions(-1)
                        .with_replication_factor(-1)
                        .with_topic_config_error_code(0)
                }
            }
        };
        results.push(r);
    }
    CreateTopicsResponse::default().with_topics(results)
}

/// What was (or, with validate_only, would be) created.
struct Created {
    id: uuid::Uuid,
    partitions: i32,
    configs: BTreeMap<String, String>,
    placement: Placement,
    /// Cluster mode: still to be created in the shared state.
    shared: bool,
}

fn create_one(
    ctx: &RequestContext,
    t: CreatableTopic,
    validate_only: bool,
) -> BrokerResult<Created> {
    let b = &ctx.broker;
    let name = TopicName::parse(t.name.0.as_str())?;
    let clustered = !b.cluster.is_standalone();
    let live: Vec<i32> = b.cluster.live_brokers().iter().map(|x| x.node_id).collect();
    let mut explicit = None;
    let (partitions, replication) = if t.assignments.is_empty() {
        let p = if t.num_partitions == -1 {
            b.config.num_partitions
        } else {
            t.num_partitions
        };
        let r = if t.replication_factor == -1 {
            b.config.default_replication_factor
        } else {
            t.replication_factor
        };
        (p, r)
    } else {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err(BrokerError::InvalidRequest(
                "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time."
                    .into(),
            ));
        }
        for (i, a) in t.assignments.iter().enumerate() {
            if a.partition_index != i as i32 {
                return Err(BrokerError::InvalidReplicaAssignment(
                    "Partitions should be a consecutive 0-based integer sequence".into(),
                ));
            }
            if clustered {
                let ids: Vec<i32> = a.broker_ids.iter().map(|x| x.0).collect();
                let distinct: std::collections::BTreeSet<i32> = ids.iter().copied().collect();
                if ids.is_empty() || distinct.len() != ids.len() {
                    return Err(BrokerError::InvalidReplicaAssignment(format!(
                        "Replica assignment for partition {} must name distinct brokers",
                        a.partition_index
                    )));
                }
                if let Some(unknown) = ids.iter().find(|x| !live.contains(x)) {
                    return Err(BrokerError::InvalidReplicaAssignment(format!(
                        "Replica assignment for partition {} names broker {unknown}, which is not registered",
                        a.partition_index
                    )));
                }
                continue;
            }
            if a.broker_ids.len() != 1 || a.broker_ids[0].0 != b.config.node_id {
                return Err(BrokerError::InvalidReplicaAssignment(format!(
                    "Replica assignment for partition {} must be exactly [{}] on this single-node cluster",
                    a.partition_index, b.config.node_id
                )));
            }
        }
        if clustered {
            explicit = Some(
                t.assignments
                    .iter()
                    .map(|a| a.broker_ids.iter().map(|x| x.0).collect::<Vec<i32>>())
                    .collect::<Vec<_>>(),
            );
        }
        let rf = t.assignments.first().map_or(1, |a| a.broker_ids.len());
        (
            t.assignments.len() as i32,
            i16::try_from(rf).unwrap_or(i16::MAX),
        )
    };
    if partitions <= 0 {
        return Err(BrokerError::InvalidPartitions(
            "Number of partitions must be larger than 0.".into(),
        ));
    }
    check_new_partitions(partitions)?;
    if replication <= 0 {
        return Err(BrokerError::InvalidReplicationFactor(
            "Replication factor must be larger than 0.".into(),
        ));
    }
    if clustered && explicit.is_none() && usize::try_from(replication).unwrap_or(0) > live.len() {
        return Err(BrokerError::InvalidReplicationFactor(format!(
            "Unable to replicate the partition {replication} time(s): The target replication factor of {replication} cannot be reached because only {} broker(s) are registered.",
            live.len()
        )));
    }
    let placement = match explicit {
        Some(a) => Placement::Explicit(a),
        None => Placement::Factor(replication),
    };
    if !clustered && replication != 1 {
        return Err(BrokerError::InvalidReplicationFactor(format!(
            "Unable to replicate the partition {replication} time(s): The target replication factor of {replication} cannot be reached because only 1 broker(s) are registered."
        )));
    }
    let mut configs = BTreeMap::new();
    for c in &t.configs {
        validate_topic_config(c.name.as_str(), c.value.as_deref())?;
        if let Some(v) = &c.value {
            configs.insert(c.name.to_string(), v.to_string());
        }
    }
    if validate_only {
        b.catalog.check_creatable(&name)?;
        return Ok(Created {
            id: uuid::Uuid::nil(),
            partitions,
            configs,
            placement,
            shared: false,
        });
    }
    if clustered {
        if b.cluster.topic(name.as_str()).is_some() {
            return Err(BrokerError::TopicAlreadyExists(name.to_string()));
        }
        return Ok(Created {
            id: uuid::Uuid::nil(),
            partitions,
            configs,
            placement,
            shared: true,
        });
    }
    let topic = b.catalog.create_topic(&name, partitions, configs)?;
    Ok(Created {
        id: topic.id,
        partitions,
        configs: topic.configs.clone(),
        placement,
        shared: false,
    })
}

/// Kafka's controller refuses to create more than this many partitions in
/// one request (`max.records.per.user.op`); without a bound, one 40-byte
/// request could ask for two billion partitions.
pub const MAX_NEW_PARTITIONS_PER_REQUEST: i32 = 10_000;

pub fn check_new_partitions(n: i32) -> BrokerResult<()> {
    if n > MAX_NEW_PARTITIONS_PER_REQUEST {
        return Err(BrokerError::InvalidPartitions(format!(
            "Excessively large number of partitions per request: {n} (at most {MAX_NEW_PARTITIONS_PER_REQUEST})"
        )));
    }
    Ok(())
}
