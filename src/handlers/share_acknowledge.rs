//! ShareAcknowledge (79, v1): acknowledgements sent without fetching
//! (a share consumer's commit, or its close with epoch -1, which also ends
//! its share session and gives back what it still holds). Epoch 0 is not
//! allowed here: only a ShareFetch opens a session.

use std::collections::BTreeMap;

use kafka_protocol::messages::share_acknowledge_response::{
    PartitionData, ShareAcknowledgeTopicResponse,
};
use kafka_protocol::messages::{ShareAcknowledgeRequest, ShareAcknowledgeResponse};
use uuid::Uuid;

use super::share_fetch::{ack_batches, acknowledge, limits, merge_acks};
use crate::dispatch::RequestContext;
use crate::error::BrokerError;
use crate::security::acl::Operation;
use crate::share::sessions::SessionPartitions;

pub async fn handle(
    ctx: &RequestContext,
    req: ShareAcknowledgeRequest,
) -> ShareAcknowledgeResponse {
    let b = &ctx.broker;
    let group = req
        .group_id
        .as_ref()
        .map(|g| g.0.to_string())
        .unwrap_or_default();
    let member = req
        .member_id
        .as_ref()
        .map(|m| m.to_string())
        .unwrap_or_default();
    let fail = |e: BrokerError| {
        b.metrics.error("ShareAcknowledge", e.code());
        tracing::info!(peer = %ctx.peer, group = %group, member = %member, error = %e, "ShareAcknowledge refused");
        ShareAcknowledgeResponse::default()
            .with_error_code(e.code())
            .with_error_message(e.message())
    };
    if group.is_empty() || member.is_empty() {
        return fail(BrokerError::InvalidRequest(
            "GroupId and MemberId can't be empty".into(),
        ));
    }
    if let Err(e) = super::group_allowed(ctx, Operation::Read, &group) {
        return fail(e);
    }
    let epoch = req.share_session_epoch;
    let none = SessionPartitions::new();
    let session = match epoch {
        -1 => Ok(()),
        e if e > 0 => b
            .shares
            .sessions
            .advance(&group, &member, e, &none, &none)
            .map(|_| ()),
        e => Err(BrokerError::InvalidShareSessionEpoch(format!(
            "share session epoch {e} is invalid for ShareAcknowledge"
        ))),
    };
    if let Err(e) = session {
        return fail(e);
    }
    let limits = limits(ctx, &group);
    let wanted = merge_acks(req.topics.into_iter().flat_map(|t| {
        t.partitions.into_iter().map(move |p| {
            (
                (t.topic_id, p.partition_index),
                p.acknowledgement_batches
                    .into_iter()
                    .map(|a| (a.first_offset, a.last_offset, a.acknowledge_types))
                    .collect::<Vec<_>>(),
            )
        })
    }));
    let mut out: BTreeMap<Uuid, Vec<PartitionData>> = BTreeMap::new();
    for (tp, acks) in wanted {
        let mut pd = PartitionData::default().with_partition_index(tp.1);
        if let Err(e) = acknowledge(ctx, &group, &member, tp, ack_batches(acks), &limits).await {
            b.metrics.error("ShareAcknowledge", e.code());
            tracing::debug!(peer = %ctx.peer, group = %group, partition = tp.1, error = %e, "share acknowledgement refused");
            pd = pd.with_error_code(e.code()).with_error_message(e.message());
        }
        out.entry(tp.0).or_default().push(pd);
    }
    if epoch == -1 {
        let closed = b.shares.sessions.close(&group, &member);
        crate::coordinator::share_state::release_member(
            b,
            &group,
            &member,
            closed.as_ref(),
            &limits,
        )
        .await;
    }
    ShareAcknowledgeResponse::default().with_responses(
        out.into_iter()
            .map(|(id, ps)| {
                ShareAcknowledgeTopicResponse::default()
                    .with_topic_id(id)
                    .with_partitions(ps)
            })
            .collect(),
    )
}
