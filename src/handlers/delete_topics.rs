//! DeleteTopics (20): by name (v0–5) or by name or ID (v6); the data is
//! removed with the catalog record in one write.

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use uuid::Uuid;

use super::sb;
use crate::dispatch::RequestContext;
use crate::error::BrokerError;
use crate::security::acl::{Operation, ResourceType};

pub async fn handle(ctx: &RequestContext, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let b = &ctx.broker;
    let wanted: Vec<(Option<TopicName>, Uuid)> = if ctx.api_version >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n), Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(wanted.len());
    for (name, id) in wanted {
        let result = if !b.cluster.is_standalone() {
            // Cluster mode: deleted from the shared state; every broker then
            // drops its local storage (metrics and offsets go with it there).
            shared_delete(ctx, name.as_ref(), id).await
        } else {
            let topic = match &name {
                Some(n) => super::topic_for(ctx, n.0.as_str(), Operation::Delete),
                None => b
                    .catalog
                    .get_by_id(&id)
                    .ok_or(BrokerError::UnknownTopicId)
                    .and_then(|t| {
                        if ctx.authorize(Operation::Delete, ResourceType::Topic, t.name.as_str()) {
                            Ok(t)
                        } else {
                            Err(BrokerError::TopicAuthorizationFailed)
                        }
                    }),
            };
            match topic {
                Ok(t) => b.catalog.delete_topic(&b.writer, &t).await.map(|()| {
                    (
                        Some(TopicName(sb(t.name.as_str()))),
                        t.id,
                        t.partitions.len(),
                    )
                }),
                Err(e) => Err(e),
            }
        };
        let r = DeletableTopicResult::default();
        responses.push(match result {
            Ok((n, tid, partitions)) => {
                if let Some(name) = &n {
                    b.metrics.remove_topic(name.0.as_str(), partitions);
                    if let Err(e) = b.groups.offsets.delete_topic(name.0.as_str()) {
                        tracing::warn!(topic = %name.0.as_str(), error = %e, "could not drop committed offsets of the deleted topic");
                    }
                }
                tracing::info!(peer = %ctx.peer, client_id = ctx.client(), topic = ?n.as_ref().map(|n| n.0.to_string()), "topic deleted on request");
                r.with_name(n).with_topic_id(tid)
            }
            Err(e) => {
                b.metrics.error("DeleteTopics", e.code());
                tracing::info!(peer = %ctx.peer, topic = ?name.as_ref().map(|n| n.0.to_string()), %id, error = %e, "DeleteTopics failed");
                r.with_name(name)
                    .with_topic_id(id)
                    .with_error_code(e.code())
                    .with_error_message(e.message())
            }
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

/// Cluster mode: the topic (by name, or by id from the shared state) is
/// deleted from the cluster's state, DELETE permitting.
async fn shared_delete(
    ctx: &RequestContext,
    name: Option<&TopicName>,
    id: Uuid,
) -> crate::error::BrokerResult<(Option<TopicName>, Uuid, usize)> {
    let c = &ctx.broker.cluster;
    let state = match name {
        Some(n) => c.topic(n.0.as_str()),
        None => c.topics().into_iter().find(|t| t.id == id),
    };
    let Some(state) = state else {
        return Err(if name.is_some() {
            BrokerError::UnknownTopicOrPartition
        } else {
            BrokerError::UnknownTopicId
        });
    };
    if !ctx.authorize(Operation::Delete, ResourceType::Topic, &state.name) {
        return Err(BrokerError::TopicAuthorizationFailed);
    }
    c.delete_topic(&state.name).await?;
    // Partitions are counted 0 here: the metrics go when the local storage does.
    Ok((Some(TopicName(sb(state.name.clone()))), state.id, 0))
}
