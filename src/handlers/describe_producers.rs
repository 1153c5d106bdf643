//! DescribeProducers (61): the producers each partition knows (idempotent
//! and transactional): id, epoch, last sequence, and where the producer's
//! open transaction on the partition began (-1 if none).

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use crate::coordinator::txn::COORDINATOR_EPOCH;
use crate::dispatch::RequestContext;

pub async fn handle(
    ctx: &RequestContext,
    req: DescribeProducersRequest,
) -> DescribeProducersResponse {
    let b = &ctx.broker;
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let topic = super::topic_for(
                ctx,
                t.name.0.as_str(),
                crate::security::acl::Operation::Read,
            );
            let partitions = t
                .partition_indexes
                .iter()
                .map(|&index| {
                    let r = PartitionResponse::default().with_partition_index(index);
                    let p = match super::partition_of(&topic, index) {
                        Ok(p) => p,
                        Err(e) => {
                            b.metrics.error("DescribeProducers", e.code());
                            return r.with_error_code(e.code()).with_error_message(e.message());
                        }
                    };
                    let producers = p
                        .producer_snapshot()
                        .into_iter()
                        .map(|(id, epoch, last_sequence, last_timestamp)| {
                            let txn_start = p.open_txn_start(id);
                            ProducerState::default()
                                .with_producer_id(ProducerId(id))
                                .with_producer_epoch(i32::from(epoch))
                                .with_last_sequence(last_sequence)
                                .with_last_timestamp(last_timestamp)
                                .with_coordinator_epoch(if txn_start.is_some() {
                                    COORDINATOR_EPOCH
                                } else {
                                    -1
                                })
                                .with_current_txn_start_offset(txn_start.unwrap_or(-1))
                        })
                        .collect();
                    r.with_active_producers(producers)
                })
                .collect();
            TopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    DescribeProducersResponse::default()
        .with_throttle_time_ms(0)
        .with_topics(topics)
}
