//! DeleteRecords (21): moves partitions' log start offsets forward on demand
//! (-1 means up to the high watermark) and removes the batches before them.

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use crate::dispatch::RequestContext;
use crate::error::BrokerError;

pub async fn handle(ctx: &RequestContext, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let b = &ctx.broker;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = super::topic_for(ctx, t.name.0.as_str(), crate::security::acl::Operation::Delete);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let r = DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
                    let result = super::partition_of(&topic, p.partition_index)
                        .and_then(|part| {
                            super::check_leader(ctx, t.name.0.as_str(), p.partition_index, -1)?;
                            let target = if p.offset == -1 { part.high_watermark() } else { p.offset };
                            if target < 0 || target > part.high_watermark() {
                                return Err(BrokerError::OffsetOutOfRange);
                            }
                            tokio::task::block_in_place(|| part.truncate_head(&b.store, target))?;
                            Ok(part.log_start_offset())
                        });
                    match result {
                        Ok(low) => r.with_low_watermark(low),
                        Err(e) => {
                            b.metrics.error("DeleteRecords", e.code());
                            tracing::info!(peer = %ctx.peer, topic = %t.name.0.as_str(), partition = p.partition_index, offset = p.offset, error = %e, "DeleteRecords rejected");
                            r.with_error_code(e.code()).with_low_watermark(-1)
                        }
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DeleteRecordsResponse::default().with_topics(topics)
}
