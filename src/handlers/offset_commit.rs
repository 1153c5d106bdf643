//! OffsetCommit (8): stores a group's consumed positions (offset, leader
//! epoch, metadata) after checking membership and generation.

use crate::security::acl::Operation;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use crate::coordinator::offsets::Committed;
use crate::dispatch::RequestContext;
use crate::error::BrokerError;
use crate::types::now_ms;

/// What OffsetCommit and TxnOffsetCommit both check per partition: it
/// exists, and its metadata fits `offset.metadata.max.bytes`.
pub fn check_offset(
    topic: Option<&crate::storage::catalog::Topic>,
    partition: i32,
    metadata: &str,
    max_meta: usize,
) -> Result<(), BrokerError> {
    if topic.and_then(|t| t.partition(partition)).is_none() {
        return Err(BrokerError::UnknownTopicOrPartition);
    }
    if metadata.len() > max_meta {
        return Err(BrokerError::OffsetMetadataTooLarge(format!(
            "Offset metadata is {} bytes; offset.metadata.max.bytes is {max_meta}",
            metadata.len()
        )));
    }
    Ok(())
}

/// Kafka's `offsets.commit.timeout.ms`.
const OFFSETS_COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn handle(ctx: &RequestContext, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let b = &ctx.broker;
    let group = req.group_id.0.to_string();
    let max_meta = b.config.offset_metadata_max_bytes;
    // Per partition: Ok(commit) to store, or the error to answer.
    let mut plan: Vec<(usize, i32, Result<Committed, BrokerError>)> = Vec::new();
    let group_ok = super::group_served(ctx, Operation::Read, &group);
    for (ti, t) in req.topics.iter().enumerate() {
        let topic = group_ok
            .clone()
            .and_then(|()| super::topic_for(ctx, t.name.0.as_str(), Operation::Read));
        for p in &t.partitions {
            let meta = p
                .committed_metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            let checked = match &topic {
                Ok(t) => check_offset(Some(t), p.partition_index, &meta, max_meta),
                Err(e) => Err(e.clone()),
            };
            let r = checked.map(|()| Committed {
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: meta,
                commit_ms: now_ms(),
            });
            plan.push((ti, p.partition_index, r));
        }
    }
    let commits: Vec<(String, i32, Committed)> = plan
        .iter()
        .filter_map(|(ti, p, r)| {
            r.as_ref()
                .ok()
                .map(|c| (req.topics[*ti].name.0.to_string(), *p, c.clone()))
        })
        .collect();
    let group_result = if commits.is_empty() {
        Ok(())
    } else {
        match b.groups.validate_commit(
            &group,
            req.generation_id_or_member_epoch,
            req.member_id.as_str(),
            req.group_instance_id.as_deref(),
        ) {
            // Cluster mode: on every in-sync replica of the group's
            // `__consumer_offsets` partition before it is acknowledged.
            Ok(()) => crate::coordinator::offsets_log::append(
                b,
                &group,
                crate::coordinator::offsets_log::commit_records(&group, &commits),
                OFFSETS_COMMIT_TIMEOUT,
            )
            .await
            .and_then(|()| b.groups.offsets.commit(&group, commits)),
            Err(e) => Err(e),
        }
    };
    if let Err(e) = &group_result {
        tracing::info!(peer = %ctx.peer, group = %group, member = %req.member_id.as_str(), generation = req.generation_id_or_member_epoch, error = %e, "OffsetCommit rejected");
    }
    let topics = req
        .topics
        .iter()
        .enumerate()
        .map(|(ti, t)| {
            let partitions = plan
                .iter()
                .filter(|(i, ..)| *i == ti)
                .map(|(_, p, r)| {
                    let code = match (r, &group_result) {
                        (Err(e), _) | (Ok(_), Err(e)) => e.code(),
                        (Ok(_), Ok(())) => 0,
                    };
                    b.metrics.error("OffsetCommit", code);
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(*p)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
