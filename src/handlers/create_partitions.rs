//! CreatePartitions (37): grows a topic; shrinking or keeping the count is
//! INVALID_PARTITIONS; `validate_only`. On one node assignments must name
//! this node; in a cluster the new partitions get the topic's replication
//! factor, spread over the live brokers (or the assignments given, which
//! must name distinct live brokers).

use std::collections::BTreeSet;

use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use crate::cluster::election::assign_replicas;
use crate::cluster::PartitionState;
use crate::dispatch::RequestContext;
use crate::error::{BrokerError, BrokerResult};

pub async fn handle(
    ctx: &RequestContext,
    req: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let b = &ctx.broker;
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let result = grow(ctx, &t, req.validate_only).await;
        let r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        results.push(match result {
            Ok(()) => r,
            Err(e) => {
                b.metrics.error("CreatePartitions", e.code());
                tracing::info!(peer = %ctx.peer, topic = %t.name.0.as_str(), error = %e, "CreatePartitions rejected");
                r.with_error_code(e.code()).with_error_message(e.message())
            }
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}

async fn grow(
    ctx: &RequestContext,
    t: &CreatePartitionsTopic,
    validate_only: bool,
) -> BrokerResult<()> {
    let b = &ctx.broker;
    let name = t.name.0.as_str();
    let topic = super::topic_for(ctx, name, crate::security::acl::Operation::Alter)?;
    let shared = if b.cluster.is_standalone() {
        None
    } else {
        Some(
            b.cluster
                .topic(name)
                .ok_or(BrokerError::UnknownTopicOrPartition)?,
        )
    };
    let current = shared
        .as_ref()
        .map_or(topic.partitions.len(), |s| s.partitions.len()) as i32;
    if t.count <= current {
        return Err(BrokerError::InvalidPartitions(format!(
            "Topic currently has {current} partitions, which is higher than the requested {}.",
            t.count
        )));
    }
    let new = t.count - current;
    super::create_topics::check_new_partitions(new)?;
    let live: Vec<_> = b.cluster.live_brokers();
    let live_ids: BTreeSet<i32> = live.iter().map(|x| x.node_id).collect();
    let explicit: Option<Vec<Vec<i32>>> = match &t.assignments {
        None => None,
        Some(assignments) => {
            if assignments.len() as i32 != new {
                return Err(BrokerError::InvalidReplicaAssignment(format!(
                    "Increasing the number of partitions by {new} but {} assignments provided.",
                    assignments.len()
                )));
            }
            let lists: Vec<Vec<i32>> = assignments
                .iter()
                .map(|a| a.broker_ids.iter().map(|x| x.0).collect())
                .collect();
            for l in &lists {
                let distinct: BTreeSet<i32> = l.iter().copied().collect();
                let valid = if shared.is_none() {
                    l.as_slice() == [b.config.node_id]
                } else {
                    !l.is_empty() && distinct.len() == l.len() && distinct.is_subset(&live_ids)
                };
                if !valid {
                    return Err(BrokerError::InvalidReplicaAssignment(match shared {
                        None => format!(
                            "Each new partition must be assigned to exactly [{}] on this single-node cluster",
                            b.config.node_id
                        ),
                        Some(_) => format!(
                            "Assignment {l:?} must name distinct registered brokers"
                        ),
                    }));
                }
            }
            Some(lists)
        }
    };
    if validate_only {
        return Ok(());
    }
    let Some(shared) = shared else {
        return b.catalog.add_partitions(name, t.count);
    };
    let rf = shared.partitions.first().map_or(1, |p| p.replicas.len());
    if explicit.is_none() && rf > live.len() {
        return Err(BrokerError::InvalidReplicationFactor(format!(
            "Unable to replicate the new partitions {rf} time(s): only {} broker(s) are registered.",
            live.len()
        )));
    }
    let placed =
        explicit.unwrap_or_else(|| assign_replicas(&live, new as usize, rf, current as usize));
    let count = t.count as usize;
    let change = Box::new(move |s: &mut crate::cluster::TopicState| {
        if s.partitions.len() >= count {
            return Err(BrokerError::InvalidPartitions(format!(
                "Topic currently has {} partitions, which is higher than the requested {count}.",
                s.partitions.len()
            )));
        }
        s.partitions
            .extend(placed.iter().map(|replicas| PartitionState {
                leader: replicas[0],
                leader_epoch: 0,
                isr: replicas.clone(),
                replicas: replicas.clone(),
                partition_epoch: 0,
                adding: Vec::new(),
                removing: Vec::new(),
            }));
        Ok(true)
    });
    b.cluster.update_topic(name, change).await?;
    tracing::info!(
        topic = name,
        partitions = count,
        "partitions added in the cluster"
    );
    Ok(())
}
