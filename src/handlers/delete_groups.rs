//! DeleteGroups (42): removes groups that have no members, with their offsets.

use crate::security::acl::Operation;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use crate::dispatch::RequestContext;

pub async fn handle(ctx: &RequestContext, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let b = &ctx.broker;
    let mut results = Vec::with_capacity(req.groups_names.len());
    for g in req.groups_names {
        let r = DeletableGroupResult::default().with_group_id(g.clone());
        let outcome = match super::group_served(ctx, Operation::Delete, g.0.as_str()) {
            Ok(()) => delete(ctx, g.0.as_str()).await,
            Err(e) => Err(e),
        };
        results.push(match outcome {
            Ok(()) => r,
            Err(e) => {
                b.metrics.error("DeleteGroups", e.code());
                tracing::info!(peer = %ctx.peer, group = %g.0.as_str(), error = %e, "DeleteGroups rejected");
                r.with_error_code(e.code())
            }
        });
    }
    DeleteGroupsResponse::default().with_results(results)
}

/// Cluster mode: the group's offsets are deleted in its replicated log
/// first (tombstones), so a later coordinator does not bring them back.
async fn delete(ctx: &RequestContext, group: &str) -> crate::error::BrokerResult<()> {
    let b = &ctx.broker;
    let share_state = b.shares.of_group(group);
    if b.groups.is_share_group(group) || !share_state.is_empty() {
        // A share group: without members, its share-partition state goes.
        b.groups.share_check_empty(group)?;
        for (k, _) in share_state {
            crate::coordinator::share_state::remove(b, &k).await?;
        }
        tracing::info!(group, "share group deleted");
        return Ok(());
    }
    b.groups.check_deletable(group)?;
    let keys: Vec<(String, i32)> = b
        .groups
        .offsets
        .all(group)
        .into_iter()
        .map(|(t, p, _)| (t, p))
        .collect();
    crate::coordinator::offsets_log::append(
        b,
        group,
        crate::coordinator::offsets_log::delete_records(group, &keys),
        std::time::Duration::from_secs(5),
    )
    .await?;
    b.groups.delete_group(group)
}
