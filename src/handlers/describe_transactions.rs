//! DescribeTransactions (65): state, producer id and epoch, timeout, start
//! time and partitions of transactional ids.

use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};

use super::sb;
use crate::dispatch::RequestContext;
use crate::security::acl::{Operation, ResourceType};

pub async fn handle(
    ctx: &RequestContext,
    req: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    let b = &ctx.broker;
    let mut states = Vec::with_capacity(req.transactional_ids.len());
    for id in req.transactional_ids {
        let s = TransactionState::default().with_transactional_id(id.clone());
        let found = match super::txn_id_allowed(ctx, Operation::Describe, id.0.as_str()) {
            Ok(()) => b.txns.describe(b, id.0.as_str()).await,
            Err(e) => Err(e),
        };
        let s = match found {
            Ok(m) => {
                let mut topics: Vec<TopicData> = Vec::new();
                // Partitions of topics the principal may not describe are left out.
                for (topic, partition) in m.partitions.iter().filter(|(t, _)| {
                    ctx.authorize_quiet(Operation::Describe, ResourceType::Topic, t)
                }) {
                    match topics.iter_mut().find(|t| t.topic.0.as_str() == topic) {
                        Some(t) => t.partitions.push(*partition),
                        None => topics.push(
                            TopicData::default()
                                .with_topic(TopicName(sb(topic.clone())))
                                .with_partitions(vec![*partition]),
                        ),
                    }
                }
                s.with_transaction_state(sb(m.state.name()))
                    .with_transaction_timeout_ms(m.timeout_ms)
                    .with_transaction_start_time_ms(m.start_ms)
                    .with_producer_id(ProducerId(m.producer_id))
                    .with_producer_epoch(m.producer_epoch)
                    .with_topics(topics)
            }
            Err(e) => {
                b.metrics.error("DescribeTransactions", e.code());
                s.with_error_code(e.code())
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
                    .with_transaction_start_time_ms(-1)
            }
        };
        states.push(s);
    }
    DescribeTransactionsResponse::default()
        .with_throttle_time_ms(0)
        .with_transaction_states(states)
}
