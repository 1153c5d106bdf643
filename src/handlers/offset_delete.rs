//! OffsetDelete (47): removes a group's committed offsets for partitions of
//! topics its members are not subscribed to.

use crate::security::acl::Operation;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use crate::dispatch::RequestContext;
use crate::error::BrokerError;

pub async fn handle(ctx: &RequestContext, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let b = &ctx.broker;
    let group = req.group_id.0.to_string();
    if let Err(e) = super::group_served(ctx, Operation::Delete, &group) {
        b.metrics.error("OffsetDelete", e.code());
        return OffsetDeleteResponse::default().with_error_code(e.code());
    }
    match b.groups.describe(&group) {
        Ok(Some(_)) => {}
        Ok(None) => {
            let e = BrokerError::GroupIdNotFound;
            b.metrics.error("OffsetDelete", e.code());
            return OffsetDeleteResponse::default().with_error_code(e.code());
        }
        Err(e) => return OffsetDeleteResponse::default().with_error_code(e.code()),
    }
    let subscribed = b.groups.subscribed_topics(&group).unwrap_or_default();
    let mut to_delete = Vec::new();
    let topics: Vec<OffsetDeleteResponseTopic> = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let exists = super::topic_for(ctx, &name, Operation::Read);
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let r = OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index);
                    let err = if let Err(e) = super::partition_of(&exists, p.partition_index) {
                        Some(e)
                    } else if subscribed.contains(&name) {
                        Some(BrokerError::GroupSubscribedToTopic)
                    } else {
                        to_delete.push((name.clone(), p.partition_index));
                        None
                    };
                    match err {
                        Some(e) => {
                            b.metrics.error("OffsetDelete", e.code());
                            r.with_error_code(e.code())
                        }
                        None => r,
                    }
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    let logged = crate::coordinator::offsets_log::append(
        b,
        &group,
        crate::coordinator::offsets_log::delete_records(&group, &to_delete),
        std::time::Duration::from_secs(5),
    )
    .await;
    if let Err(e) = logged.and_then(|()| b.groups.offsets.delete(&group, Some(&to_delete))) {
        tracing::error!(group = %group, error = %e, "OffsetDelete failed");
        return OffsetDeleteResponse::default().with_error_code(e.code());
    }
    OffsetDeleteResponse::default().with_topics(topics)
}
