//! DeleteGroups (42): removes groups that have no members, with their offsets.

use crate::security::acl::Operation;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse};

use crate::dispatch::RequestContext;

pub async fn handle(ctx: &RequestContext, req: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let b = &ctx.broker;
    let results = req
        .groups_names
        .into_iter()
        .map(|g| {
            let r = DeletableGroupResult::default().with_group_id(g.clone());
            let allowed = super::group_allowed(ctx, Operation::Delete, g.0.as_str());
            match allowed.and_then(|()| b.groups.delete_group(g.0.as_str())) {
                Ok(()) => r,
                Err(e) => {
                    b.metrics.error("DeleteGroups", e.code());
                    tracing::info!(peer = %ctx.peer, group = %g.0.as_str(), error = %e, "DeleteGroups rejected");
                    r.with_error_code(e.code())
                }
            }
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}
