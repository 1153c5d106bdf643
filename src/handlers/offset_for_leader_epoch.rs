//! OffsetForLeaderEpoch (23): where a leader epoch ended in the leader's log
//! (from its leader-epoch cache), which followers truncate to and clients
//! use to detect log truncation (KIP-320). Standalone, every batch has
//! epoch 0, which ends at the log end.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

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
                        super::check_leader(
                            ctx,
                            t.topic.0.as_str(),
                            p.partition,
                            p.current_leader_epoch,
                        )?;
                        Ok(part)
                    });
                    match result {
                        Ok(part) if part.is_replicated() => {
                            let (epoch, end) = part
                                .epochs()
                                .end_offset_for(p.leader_epoch, part.log_end_offset());
                            r.with_leader_epoch(epoch).with_end_offset(end)
                        }
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
