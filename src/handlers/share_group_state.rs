//! ReadShareGroupState (84), WriteShareGroupState (85) and
//! DeleteShareGroupState (86), v0, between brokers: a share-partition's
//! leader reads and writes its state at the share coordinator (cluster
//! mode; CLUSTER_ACTION). See `coordinator::share_state`.

use kafka_protocol::messages::{
    delete_share_group_state_response, read_share_group_state_response,
    write_share_group_state_response, DeleteShareGroupStateRequest, DeleteShareGroupStateResponse,
    ReadShareGroupStateRequest, ReadShareGroupStateResponse, WriteShareGroupStateRequest,
    WriteShareGroupStateResponse,
};

use crate::coordinator::share_state;
use crate::dispatch::RequestContext;
use crate::error::{BrokerError, BrokerResult};
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::share::partition::{RecordState, SharePartition, StateRun};
use crate::share::{store, ShareKey};

fn allowed(ctx: &RequestContext) -> BrokerResult<()> {
    // Standalone has no share coordinators to talk to.
    if ctx.broker.cluster.is_standalone() {
        return Err(BrokerError::NotCoordinator);
    }
    if ctx.authorize(
        Operation::ClusterAction,
        ResourceType::Cluster,
        CLUSTER_NAME,
    ) {
        Ok(())
    } else {
        Err(BrokerError::ClusterAuthorizationFailed)
    }
}

fn key(group: &str, topic_id: uuid::Uuid, partition: i32) -> ShareKey {
    ShareKey {
        group: group.into(),
        topic_id,
        partition,
    }
}

fn refused(ctx: &RequestContext, api: &str, e: &BrokerError) {
    ctx.broker.metrics.error(api, e.code());
    tracing::debug!(peer = %ctx.peer, api, error = %e, "share state request refused");
}

pub async fn read(
    ctx: &RequestContext,
    req: ReadShareGroupStateRequest,
) -> ReadShareGroupStateResponse {
    let b = &ctx.broker;
    let group = req.group_id.to_string();
    let auth = allowed(ctx);
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let r = read_share_group_state_response::PartitionResult::default()
                        .with_partition(p.partition);
                    let found = auth.clone().and_then(|()| {
                        share_state::read_local(b, &key(&group, t.topic_id, p.partition))
                    });
                    match found {
                        Ok(Some(v)) => match store::decode(&v) {
                            Some(sp) => r.with_start_offset(sp.start()).with_state_batches(
                                sp.runs()
                                    .into_iter()
                                    .map(|run| {
                                        read_share_group_state_response::StateBatch::default()
                                            .with_first_offset(run.first)
                                            .with_last_offset(run.last)
                                            .with_delivery_state(run.state.code() as i8)
                                            .with_delivery_count(run.deliveries)
                                    })
                                    .collect(),
                            ),
                            None => {
                                let e = BrokerError::Storage("unreadable share state".into());
                                refused(ctx, "ReadShareGroupState", &e);
                                r.with_error_code(e.code()).with_start_offset(-1)
                            }
                        },
                        // Never initialised.
                        Ok(None) => r.with_start_offset(-1),
                        Err(e) => {
                            refused(ctx, "ReadShareGroupState", &e);
                            r.with_error_code(e.code())
                                .with_error_message(e.message())
                                .with_start_offset(-1)
                        }
                    }
                })
                .collect();
            read_share_group_state_response::ReadStateResult::default()
                .with_topic_id(t.topic_id)
                .with_partitions(partitions)
        })
        .collect();
    ReadShareGroupStateResponse::default().with_results(results)
}

pub async fn write(
    ctx: &RequestContext,
    req: WriteShareGroupStateRequest,
) -> WriteShareGroupStateResponse {
    let b = &ctx.broker;
    let group = req.group_id.to_string();
    let auth = allowed(ctx);
    let mut results = Vec::new();
    for t in req.topics {
        let mut partitions = Vec::new();
        for p in t.partitions {
            let runs: Option<Vec<StateRun>> = p
                .state_batches
                .iter()
                .map(|s| {
                    Some(StateRun {
                        first: s.first_offset,
                        last: s.last_offset,
                        state: RecordState::from_code(u8::try_from(s.delivery_state).ok()?)?,
                        deliveries: s.delivery_count,
                    })
                })
                .collect();
            let done = match (auth.clone(), runs) {
                (Err(e), _) => Err(e),
                (Ok(()), None) => Err(BrokerError::InvalidRequest(
                    "unknown delivery state in a state batch".into(),
                )),
                (Ok(()), Some(_)) if p.start_offset < 0 => {
                    Err(BrokerError::InvalidRequest("negative start offset".into()))
                }
                (Ok(()), Some(runs)) => {
                    let end = runs
                        .last()
                        .map_or(p.start_offset, |r| r.last.saturating_add(1));
                    match SharePartition::restore(p.start_offset, end, &runs) {
                        Some(sp) => {
                            share_state::apply(
                                b,
                                &key(&group, t.topic_id, p.partition),
                                Some(store::encode(&sp)),
                            )
                            .await
                        }
                        None => Err(BrokerError::InvalidRequest(format!(
                            "a share state from {} to {end} is not a window this broker keeps",
                            p.start_offset
                        ))),
                    }
                }
            };
            let r = write_share_group_state_response::PartitionResult::default()
                .with_partition(p.partition);
            partitions.push(match done {
                Ok(()) => r,
                Err(e) => {
                    refused(ctx, "WriteShareGroupState", &e);
                    r.with_error_code(e.code()).with_error_message(e.message())
                }
            });
        }
        results.push(
            write_share_group_state_response::WriteStateResult::default()
                .with_topic_id(t.topic_id)
                .with_partitions(partitions),
        );
    }
    WriteShareGroupStateResponse::default().with_results(results)
}

pub async fn delete(
    ctx: &RequestContext,
    req: DeleteShareGroupStateRequest,
) -> DeleteShareGroupStateResponse {
    let b = &ctx.broker;
    let group = req.group_id.to_string();
    let auth = allowed(ctx);
    let mut results = Vec::new();
    for t in req.topics {
        let mut partitions = Vec::new();
        for p in t.partitions {
            let done = match auth.clone() {
                Ok(()) => share_state::apply(b, &key(&group, t.topic_id, p.partition), None).await,
                Err(e) => Err(e),
            };
            let r = delete_share_group_state_response::PartitionResult::default()
                .with_partition(p.partition);
            partitions.push(match done {
                Ok(()) => r,
                Err(e) => {
                    refused(ctx, "DeleteShareGroupState", &e);
                    r.with_error_code(e.code()).with_error_message(e.message())
                }
            });
        }
        results.push(
            delete_share_group_state_response::DeleteStateResult::default()
                .with_topic_id(t.topic_id)
                .with_partitions(partitions),
        );
    }
    DeleteShareGroupStateResponse::default().with_results(results)
}
