//! TxnOffsetCommit (28): offsets a transactional producer commits for a
//! consumer group. They stay pending (invisible to OffsetFetch, which
//! answers UNSTABLE_OFFSET_COMMIT when asked for stable offsets) until the
//! transaction commits, and are dropped if it aborts. From v3 the group
//! membership (member id, generation, instance id) is checked as Kafka does.
//!
//! Standalone, the transaction coordinator holds them. In a cluster the
//! request goes to the group's coordinator, which writes them to the group's
//! `__consumer_offsets` partition as a transactional batch of the producer
//! (after the producer's coordinator confirms the partition is part of the
//! transaction) and applies them when the COMMIT marker arrives there.

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::offset_commit::check_offset;
use crate::coordinator::txn::PendingOffset;
use crate::dispatch::RequestContext;
use crate::error::{BrokerError, BrokerResult};
use crate::security::acl::Operation;
use crate::types::now_ms;

/// TxnOffsetCommit has no PRODUCER_FENCED version: fenced producers get
/// INVALID_PRODUCER_EPOCH, which clients treat the same way.
fn code(e: &BrokerError) -> i16 {
    match e {
        BrokerError::ProducerFenced => BrokerError::InvalidProducerEpoch(String::new()).code(),
        e => e.code(),
    }
}

pub async fn handle(ctx: &RequestContext, req: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let b = &ctx.broker;
    let id = req.transactional_id.0.as_str();
    let group = req.group_id.0.as_str();
    let max_meta = b.config.offset_metadata_max_bytes;
    let now = now_ms();
    // Per partition: the offset to hold, or the error to answer.
    let mut plan: Vec<(usize, i32, BrokerResult<PendingOffset>)> = Vec::new();
    // TRANSACTIONAL_ID WRITE and group READ first, then each topic's READ.
    let allowed = super::txn_id_allowed(ctx, Operation::Write, id)
        .and_then(|()| super::group_allowed(ctx, Operation::Read, group));
    for (ti, t) in req.topics.iter().enumerate() {
        let topic = allowed
            .clone()
            .and_then(|()| super::topic_for(ctx, t.name.0.as_str(), Operation::Read));
        for p in &t.partitions {
            let metadata = p
                .committed_metadata
                .as_ref()
                .map(|m| m.to_string())
                .unwrap_or_default();
            let checked = match &topic {
                Ok(t) => check_offset(Some(t), p.partition_index, &metadata, max_meta),
                Err(e) => Err(e.clone()),
            };
            let r = checked.map(|()| PendingOffset {
                group: group.to_string(),
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata,
                commit_ms: now,
            });
            plan.push((ti, p.partition_index, r));
        }
    }
    let offsets: Vec<PendingOffset> = plan
        .iter()
        .filter_map(|(_, _, r)| r.as_ref().ok().cloned())
        .collect();
    let served = crate::coordinator::offsets_log::check(b, group);
    let membership = if let Err(e) = served {
        Err(e)
    } else if ctx.api_version >= 3 {
        b.groups.validate_txn_commit(
            group,
            req.generation_id,
            req.member_id.as_str(),
            req.group_instance_id.as_deref(),
        )
    } else if group.is_empty() {
        Err(BrokerError::InvalidGroupId)
    } else {
        Ok(())
    };
    let result = match membership {
        Err(e) => Err(e),
        Ok(()) if offsets.is_empty() => Ok(()),
        Ok(()) if b.cluster.is_standalone() => {
            b.txns
                .commit_offsets(b, id, req.producer_id.0, req.producer_epoch, group, offsets)
                .await
        }
        Ok(()) => in_cluster(b, id, req.producer_id.0, req.producer_epoch, group, offsets).await,
    };
    if let Err(e) = &result {
        tracing::info!(peer = %ctx.peer, transactional_id = id, group, error = %e, "TxnOffsetCommit refused");
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
                    let c = match (r, &result) {
                        (Err(e), _) | (Ok(_), Err(e)) => code(e),
                        (Ok(_), Ok(())) => 0,
                    };
                    b.metrics.error("TxnOffsetCommit", c);
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(*p)
                        .with_error_code(c)
                })
                .collect();
            TxnOffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    TxnOffsetCommitResponse::default()
        .with_throttle_time_ms(0)
        .with_topics(topics)
}

/// Cluster mode: verified with the transaction coordinator, then logged on
/// the group's partition.
async fn in_cluster(
    b: &crate::broker::Broker,
    id: &str,
    producer_id: i64,
    epoch: i16,
    group: &str,
    offsets: Vec<PendingOffset>,
) -> BrokerResult<()> {
    use crate::coordinator::{offsets_log, txn_markers};
    let (p, uid) = offsets_log::partition_uid(b, group)?;
    if !b.txns.active().admits(producer_id, epoch, uid) {
        let target = [(offsets_log::TOPIC.to_string(), p, uid)];
        let verdict = txn_markers::verify(b, id, producer_id, epoch, &target).await;
        if let Some(Err(e)) = verdict.into_iter().next() {
            // The transaction coordinator could not be asked: clients retry this one.
            return Err(match e {
                BrokerError::NotEnoughReplicas => BrokerError::CoordinatorLoadInProgress,
                other => other,
            });
        }
    }
    let commits = offsets
        .iter()
        .map(|o| (o.topic.clone(), o.partition, o.committed()))
        .collect();
    offsets_log::append_txn(
        b,
        group,
        producer_id,
        epoch,
        commits,
        std::time::Duration::from_secs(15),
    )
    .await
}
