//! ListTransactions (66): transactional ids with their producer id and
//! state, filtered by state names and producer ids (v0) and by how long the
//! transaction has been running (v1). Unknown state names are reported back.

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};

use super::sb;
use crate::coordinator::txn::TxnState;
use crate::dispatch::RequestContext;
use crate::security::acl::{Operation, ResourceType};
use crate::types::now_ms;

pub async fn handle(
    ctx: &RequestContext,
    req: ListTransactionsRequest,
) -> ListTransactionsResponse {
    let b = &ctx.broker;
    let mut states: Vec<TxnState> = Vec::new();
    let mut unknown = Vec::new();
    for name in &req.state_filters {
        match TxnState::from_name(name.as_str()) {
            Some(s) => states.push(s),
            None => unknown.push(name.clone()),
        }
    }
    let now = now_ms();
    // v1+: only transactions running longer than this (negative: all).
    let min_duration = if ctx.api_version >= 1 {
        req.duration_filter
    } else {
        -1
    };
    let listed = b
        .txns
        .list()
        .await
        .into_iter()
        .filter(|m| {
            ctx.authorize_quiet(
                Operation::Describe,
                ResourceType::TransactionalId,
                &m.transactional_id,
            ) && (req.state_filters.is_empty() || states.contains(&m.state))
                && (req.producer_id_filters.is_empty()
                    || req.producer_id_filters.iter().any(|p| p.0 == m.producer_id))
                && (min_duration < 0
                    || (m.start_ms >= 0 && now.saturating_sub(m.start_ms) > min_duration))
        })
        .map(|m| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(sb(m.transactional_id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(sb(m.state.name()))
        })
        .collect();
    ListTransactionsResponse::default()
        .with_throttle_time_ms(0)
        .with_unknown_state_filters(unknown)
        .with_transaction_states(listed)
}
