//! Where replicas live and who leads: ElectLeaders (43),
//! AlterPartitionReassignments (45), ListPartitionReassignments (46) and
//! AlterReplicaLogDirs (34).
//!
//! In a cluster they change the shared partition state (a compare-and-swap
//! in the metadata store); the controller finishes a reassignment once the
//! new replicas are in sync. On a single node every partition is led by its
//! only (preferred) replica in the one log dir: elections are not needed, a
//! reassignment onto that replica succeeds at once and any other is refused.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::alter_replica_log_dirs_response::{
    AlterReplicaLogDirPartitionResult, AlterReplicaLogDirTopicResult,
};
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
    AlterReplicaLogDirsRequest, AlterReplicaLogDirsResponse, BrokerId, ElectLeadersRequest,
    ElectLeadersResponse, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse,
    TopicName,
};

use super::sb;
use crate::cluster::election::{self, Eligibility};
use crate::dispatch::RequestContext;
use crate::error::{BrokerError, BrokerResult};
use crate::security::acl::Operation;

fn ids(v: &[i32]) -> Vec<BrokerId> {
    v.iter().map(|&r| BrokerId(r)).collect()
}

pub async fn list_reassignments(
    ctx: &RequestContext,
    req: ListPartitionReassignmentsRequest,
) -> ListPartitionReassignmentsResponse {
    let b = &ctx.broker;
    if let Err(e) = super::cluster_allowed(ctx, Operation::Describe) {
        b.metrics.error("ListPartitionReassignments", e.code());
        return ListPartitionReassignmentsResponse::default()
            .with_error_code(e.code())
            .with_error_message(e.message());
    }
    // Standalone: replicas never move, so nothing is ever in progress.
    let wanted: Option<BTreeMap<String, Vec<i32>>> = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes))
            .collect()
    });
    let topics = b
        .cluster
        .topics()
        .into_iter()
        .filter(|t| wanted.as_ref().is_none_or(|w| w.contains_key(&t.name)))
        .filter_map(|t| {
            let only = wanted.as_ref().and_then(|w| w.get(&t.name));
            let partitions: Vec<OngoingPartitionReassignment> = t
                .partitions
                .iter()
                .enumerate()
                .filter(|(i, p)| {
                    (!p.adding.is_empty() || !p.removing.is_empty())
                        && only.is_none_or(|o| o.contains(&(*i as i32)))
                })
                .map(|(i, p)| {
                    OngoingPartitionReassignment::default()
                        .with_partition_index(i as i32)
                        .with_replicas(ids(&p.replicas))
                        .with_adding_replicas(ids(&p.adding))
                        .with_removing_replicas(ids(&p.removing))
                })
                .collect();
            (!partitions.is_empty()).then(|| {
                OngoingTopicReassignment::default()
                    .with_name(TopicName(sb(t.name.clone())))
                    .with_partitions(partitions)
            })
        })
        .collect();
    ListPartitionReassignmentsResponse::default().with_topics(topics)
}

pub async fn alter_reassignments(
    ctx: &RequestContext,
    req: AlterPartitionReassignmentsRequest,
) -> AlterPartitionReassignmentsResponse {
    let b = &ctx.broker;
    if let Err(e) = super::cluster_allowed(ctx, Operation::Alter) {
        b.metrics.error("AlterPartitionReassignments", e.code());
        return AlterPartitionReassignmentsResponse::default()
            .with_error_code(e.code())
            .with_error_message(e.message());
    }
    let live: BTreeSet<i32> = b.cluster.live_brokers().iter().map(|x| x.node_id).collect();
    let allow_rf_change = ctx.api_version < 1 || req.allow_replication_factor_change;
    let mut responses = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let targets: Vec<(i32, Option<Vec<i32>>)> = t
            .partitions
            .iter()
            .map(|p| {
                (
                    p.partition_index,
                    p.replicas.as_ref().map(|r| r.iter().map(|x| x.0).collect()),
                )
            })
            .collect();
        let results = if b.cluster.is_standalone() {
            targets
                .iter()
                .map(|(i, target)| standalone_reassign(ctx, &name, *i, target.as_deref()))
                .collect()
        } else {
            shared_reassign(ctx, &name, &targets, &live, allow_rf_change).await
        };
        let partitions = targets
            .iter()
            .zip(results)
            .map(|((i, target), r)| {
                // Kafka answers a null message on success.
                let r2 = ReassignablePartitionResponse::default()
                    .with_partition_index(*i)
                    .with_error_message(None);
                match r {
                    Ok(()) => {
                        tracing::info!(topic = %name, partition = i, target = ?target, "reassignment accepted");
                        r2
                    }
                    Err(e) => {
                        b.metrics.error("AlterPartitionReassignments", e.code());
                        tracing::info!(topic = %name, partition = i, error = %e, "reassignment refused");
                        r2.with_error_code(e.code()).with_error_message(e.message())
                    }
                }
            })
            .collect();
        responses.push(
            ReassignableTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    AlterPartitionReassignmentsResponse::default().with_responses(responses)
}

fn standalone_reassign(
    ctx: &RequestContext,
    topic: &str,
    index: i32,
    target: Option<&[i32]>,
) -> BrokerResult<()> {
    let me = ctx.broker.config.node_id;
    ctx.broker
        .catalog
        .get(topic)
        .and_then(|t| t.partition(index).cloned())
        .ok_or(BrokerError::UnknownTopicOrPartition)?;
    match target {
        None => Err(BrokerError::NoReassignmentInProgress),
        Some([only]) if *only == me => Ok(()),
        Some(other) => Err(BrokerError::InvalidReplicaAssignment(format!(
            "Replica assignment {other:?} cannot be applied: broker {me} is the only broker"
        ))),
    }
}

async fn shared_reassign(
    ctx: &RequestContext,
    topic: &str,
    targets: &[(i32, Option<Vec<i32>>)],
    live: &BTreeSet<i32>,
    allow_rf_change: bool,
) -> Vec<BrokerResult<()>> {
    // Checked before the shared state is touched; one outcome per partition.
    let mut outcomes: Vec<BrokerResult<()>> = targets
        .iter()
        .map(|(_, target)| match target {
            None => Ok(()),
            Some(t) if t.is_empty() => Err(BrokerError::InvalidReplicaAssignment(
                "The target replica list is empty".into(),
            )),
            Some(t) if t.iter().collect::<BTreeSet<_>>().len() != t.len() => {
                Err(BrokerError::InvalidReplicaAssignment(
                    "The target replica list has duplicates".into(),
                ))
            }
            Some(t) => match t.iter().find(|r| !live.contains(r)) {
                Some(r) => Err(BrokerError::InvalidReplicaAssignment(format!(
                    "Broker {r} is not registered"
                ))),
                None => Ok(()),
            },
        })
        .collect();
    let mut per_partition: Vec<BrokerResult<()>> = Vec::new();
    let change = Box::new(|t: &mut crate::cluster::TopicState| {
        per_partition = outcomes.clone();
        let mut changed = false;
        for ((index, target), out) in targets.iter().zip(per_partition.iter_mut()) {
            if out.is_err() {
                continue;
            }
            let Some(p) = usize::try_from(*index)
                .ok()
                .and_then(|i| t.partitions.get_mut(i))
            else {
                *out = Err(BrokerError::UnknownTopicOrPartition);
                continue;
            };
            match target {
                None => match election::cancel(p) {
                    Some(n) => {
                        *p = n;
                        changed = true;
                    }
                    None => *out = Err(BrokerError::NoReassignmentInProgress),
                },
                Some(target) => {
                    let current: Vec<i32> = p
                        .replicas
                        .iter()
                        .copied()
                        .filter(|r| !p.adding.contains(r))
                        .collect();
                    if !allow_rf_change && target.len() != current.len() {
                        *out = Err(BrokerError::InvalidReplicationFactor(
                            "The reassignment would change the replication factor".into(),
                        ));
                        continue;
                    }
                    let n = election::reassign(p, target);
                    if n.replicas != p.replicas || n.adding != p.adding {
                        *p = n;
                        changed = true;
                    }
                }
            }
        }
        Ok(changed)
    });
    match ctx.broker.cluster.update_topic(topic, change).await {
        Ok(_) => per_partition,
        Err(e) => {
            for o in outcomes.iter_mut() {
                if o.is_ok() {
                    *o = Err(e.clone());
                }
            }
            outcomes
        }
    }
}

pub async fn elect_leaders(ctx: &RequestContext, req: ElectLeadersRequest) -> ElectLeadersResponse {
    let b = &ctx.broker;
    if let Err(e) = super::cluster_allowed(ctx, Operation::Alter) {
        b.metrics.error("ElectLeaders", e.code());
        return ElectLeadersResponse::default().with_error_code(e.code());
    }
    let unclean = ctx.api_version >= 1 && req.election_type == 1;
    // All partitions when none are named (v0-2: a null list).
    let wanted: Vec<(String, Vec<i32>)> = match req.topic_partitions {
        Some(list) => list
            .into_iter()
            .map(|t| (t.topic.0.to_string(), t.partitions))
            .collect(),
        None if b.cluster.is_standalone() => return ElectLeadersResponse::default(),
        None => b
            .cluster
            .topics()
            .into_iter()
            .map(|t| {
                let n = t.partitions.len() as i32;
                (t.name, (0..n).collect())
            })
            .collect(),
    };
    let mut results = Vec::with_capacity(wanted.len());
    for (topic, partitions) in wanted {
        let outcomes = if b.cluster.is_standalone() {
            let local = b.catalog.get(&topic);
            partitions
                .iter()
                .map(|p| match local.as_ref().and_then(|t| t.partition(*p)) {
                    Some(_) => Err(BrokerError::ElectionNotNeeded),
                    None => Err(BrokerError::UnknownTopicOrPartition),
                })
                .collect()
        } else {
            shared_elect(ctx, &topic, &partitions, unclean).await
        };
        let partition_result = partitions
            .iter()
            .zip(outcomes)
            .map(|(p, r)| {
                let pr = PartitionResult::default().with_partition_id(*p);
                match r {
                    Ok(()) => pr,
                    Err(e) => {
                        if !matches!(e, BrokerError::ElectionNotNeeded) {
                            b.metrics.error("ElectLeaders", e.code());
                        }
                        pr.with_error_code(e.code()).with_error_message(e.message())
                    }
                }
            })
            .collect();
        results.push(
            ReplicaElectionResult::default()
                .with_topic(TopicName(sb(topic)))
                .with_partition_result(partition_result),
        );
    }
    ElectLeadersResponse::default().with_replica_election_results(results)
}

async fn shared_elect(
    ctx: &RequestContext,
    topic: &str,
    partitions: &[i32],
    unclean: bool,
) -> Vec<BrokerResult<()>> {
    let live: BTreeSet<i32> = ctx
        .broker
        .cluster
        .live_brokers()
        .iter()
        .map(|x| x.node_id)
        .collect();
    let none = BTreeSet::new();
    let mut outcomes: Vec<BrokerResult<()>> = Vec::new();
    let change = Box::new(|t: &mut crate::cluster::TopicState| {
        let who = Eligibility {
            live: &live,
            draining: &none,
        };
        outcomes.clear();
        let mut changed = false;
        for index in partitions {
            let Some(p) = usize::try_from(*index)
                .ok()
                .and_then(|i| t.partitions.get_mut(i))
            else {
                outcomes.push(Err(BrokerError::UnknownTopicOrPartition));
                continue;
            };
            let decided = if unclean {
                election::unclean(p, &who)
                    .map_err(|why| BrokerError::EligibleLeadersNotAvailable(why.into()))
            } else {
                election::preferred(p, &who)
                    .map_err(|why| BrokerError::PreferredLeaderNotAvailable(why.into()))
            };
            outcomes.push(match decided {
                Ok(Some(n)) => {
                    tracing::info!(topic = %t.name, partition = index, leader = n.leader, epoch = n.leader_epoch, unclean, "leader elected on request");
                    *p = n;
                    changed = true;
                    Ok(())
                }
                Ok(None) => Err(BrokerError::ElectionNotNeeded),
                Err(e) => Err(e),
            });
        }
        Ok(changed)
    });
    match ctx.broker.cluster.update_topic(topic, change).await {
        Ok(_) => outcomes,
        Err(e) => partitions.iter().map(|_| Err(e.clone())).collect(),
    }
}

/// On this broker's one log dir a replica is always where it is asked to
/// be; any other dir does not exist here.
pub async fn alter_replica_log_dirs(
    ctx: &RequestContext,
    req: AlterReplicaLogDirsRequest,
) -> AlterReplicaLogDirsResponse {
    let b = &ctx.broker;
    let denied = super::cluster_allowed(ctx, Operation::Alter).err();
    let ours = b.config.log_dir.to_string_lossy().to_string();
    let canonical = std::fs::canonicalize(&b.config.log_dir).ok();
    let mut by_topic: BTreeMap<String, Vec<AlterReplicaLogDirPartitionResult>> = BTreeMap::new();
    for dir in req.dirs {
        let path = dir.path.to_string();
        let here = path == ours
            || canonical.is_some()
                && std::fs::canonicalize(&path).ok().as_ref() == canonical.as_ref();
        for t in dir.topics {
            let topic = b.catalog.get(t.name.0.as_str());
            for p in t.partitions {
                let outcome = if let Some(e) = &denied {
                    Err(e.clone())
                } else if !here {
                    Err(BrokerError::LogDirNotFound(format!(
                        "The log directory {path} is not one of this broker's (log.dirs={ours})"
                    )))
                } else if topic.as_ref().and_then(|x| x.partition(p)).is_none() {
                    Err(BrokerError::UnknownTopicOrPartition)
                } else if !b.replicas.is_standalone()
                    && b.replicas
                        .replica(t.name.0.as_str(), p)
                        .is_none_or(|r| matches!(&*r.role(), crate::replication::Role::Idle))
                {
                    Err(BrokerError::ReplicaNotAvailable)
                } else {
                    Ok(())
                };
                let code = match outcome {
                    Ok(()) => 0,
                    Err(e) => {
                        b.metrics.error("AlterReplicaLogDirs", e.code());
                        e.code()
                    }
                };
                by_topic.entry(t.name.0.to_string()).or_default().push(
                    AlterReplicaLogDirPartitionResult::default()
                        .with_partition_index(p)
                        .with_error_code(code),
                );
            }
        }
    }
    AlterReplicaLogDirsResponse::default().with_results(
        by_topic
            .into_iter()
            .map(|(name, partitions)| {
                AlterReplicaLogDirTopicResult::default()
                    .with_topic_name(TopicName(sb(name)))
                    .with_partitions(partitions)
            })
            .collect(),
    )
}
