//! OffsetForLeaderEpoch (23): every batch on a single node has leader epoch
//! 0, so epoch 0 ends at the log end offset.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::check_leader_epoch;
use crate::dispatch::RequestContext;

pub async fn handle(
    ctx: &RequestContext,
    req: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let b = &ctx.broker;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = super::topic_for(
                ctx,
                t.topic.0.as_str(),
                crate::security::acl::Operation::Describe,
            );
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let r = EpochEndOffset::default().with_partition(p.partition);
                    let result = super::partition_of(&topic, p.partition).and_then(|part| {
                        super::check_leader(ctx, t.topic.0.as_str(), p.partition)?;
                        check_leader_epoch(p.current_leader_epoch)?;
                        Ok(part)
                    });
                    match result {
                        // Epochs above ours are unknown: Kafka answers undefined (-1, -1).
                        Ok(_) if p.leader_epoch > 0 => r.with_leader_epoch(-1).with_end_offset(-1),
                        Ok(part) => r
                            .with_leader_epoch(0)
                            .with_end_offset(part.high_watermark()),
                        Err(e) => {
                            b.metrics.error("OffsetForLeaderEpoch", e.code());
                            r.with_error_code(e.code())
                                .with_leader_epoch(-1)
                                .with_end_offset(-1)
                        }
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
